//! Hosted mode: `p2p_node`, a [`Host`] (the mio driver: socket, clock, OS
//! randomness) driven from the caller's frame loop, or from a network
//! thread of its own after `p2p_node_start_thread`.
//!
//! Locking: the host sits behind a mutex (so overlapping calls from two
//! threads are serialised, never undefined behaviour); a call that finds
//! it held by a thread waiting in `p2p_node_service` wakes that thread
//! first, so it returns and lets the call through. In thread mode the host
//! belongs to the network thread: commands go through its `Handle`, and
//! events wait in a queue behind a lock of their own, so a thread that
//! waits for events never holds up one that sends.

use crate::config::{Built, build, p2p_config};
use crate::event::{p2p_event, to_c};
use crate::log::{Logger, p2p_log_fn};
use crate::query::{
    self, p2p_link_info, p2p_master_info, p2p_path_info, p2p_peer_info, p2p_server_info, p2p_stats,
};
use crate::result::{Error, P2P_DONE, P2P_ERR_WRONG_MODE, P2P_OK, call, call_void, p2p_result};
use crate::types::{arg, arg_mut, bytes_arg, fill_bytes, p2p_addr, p2p_node_id};
use bytes::Bytes;
use p2pcore::{Event, Node, NodeId, Reliability};
use p2pcore_mio::{DataDir, EventReceiver, Handle, Host, HostStats, SpawnOptions, Wakeup};
use std::ffi::c_void;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::{Duration, Instant};

/// A descriptor an engine can wait on in its own loop (`poll`, `select`,
/// `epoll`, `kqueue`): a file descriptor on Unix. `P2P_NO_WAITABLE` where
/// the platform has none to offer (Windows).
pub type p2p_waitable = i64;
/// No waitable descriptor.
pub const P2P_NO_WAITABLE: p2p_waitable = -1;

/// `p2p_send` flag: reliable delivery (the default, 0): exactly once and in
/// order within the channel, or reported in `P2P_EVENT_SEND_FAILED`.
pub const P2P_SEND_RELIABLE: u32 = 0;
/// `p2p_send` flag: unreliable delivery (a QUIC datagram): at most once, in
/// no particular order; must fit one packet.
pub const P2P_SEND_UNRELIABLE: u32 = 1;

/// A node in hosted mode: one UDP socket, driven by `p2p_node_service` or
/// by its own network thread. Opaque; created by `p2p_node_create`,
/// released by `p2p_node_free`.
pub struct p2p_node {
    /// The host while the caller drives it (hosted mode); `None` once it
    /// moved to its network thread.
    host: Mutex<Option<Host>>,
    /// Thread mode, once started.
    threaded: OnceLock<Threaded>,
    /// Ends a hosted `p2p_node_service` wait early (lock-free).
    wakeup: Wakeup,
    logger: Arc<Logger>,
    id: NodeId,
    identity: Vec<u8>,
    local_addr: SocketAddr,
    /// Held for its lock on the directory until the node is freed.
    _data_dir: Option<DataDir>,
}

/// Thread mode: the network thread's handle, and the event side.
struct Threaded {
    handle: Handle,
    events: Mutex<EventSide>,
    /// Wakes waiters on the event side (the network thread pokes it when it
    /// queues events; `p2p_node_wake` too).
    waker: Arc<mio::Waker>,
    #[cfg(unix)]
    fd: i64,
}

struct EventSide {
    rx: EventReceiver,
    /// An event taken while waiting, handed out first.
    peeked: Option<Event>,
    poll: mio::Poll,
    scratch: mio::Events,
}

const WAKER: mio::Token = mio::Token(0);

impl EventSide {
    /// The next event, if one waits.
    fn next(&mut self) -> Option<Event> {
        self.peeked.take().or_else(|| self.rx.try_recv().ok())
    }

    fn has_next(&mut self) -> bool {
        if self.peeked.is_none() {
            self.peeked = self.rx.try_recv().ok();
        }
        self.peeked.is_some()
    }
}

/// Which side of the node a call reaches.
enum Side<'a> {
    Hosted(MutexGuard<'a, Option<Host>>),
    Thread(&'a Threaded),
}

impl p2p_node {
    /// The host (hosted mode) or the network thread's side (thread mode).
    /// A hosted host held by a thread waiting in `service` is woken first.
    fn side(&self) -> Result<Side<'_>, Error> {
        self.side_waking(true)
    }

    /// [`p2p_node::side`]; `wake_holder: false` for `service` itself, whose
    /// wake-up would otherwise end its own wait.
    fn side_waking(&self, wake_holder: bool) -> Result<Side<'_>, Error> {
        if let Some(t) = self.threaded.get() {
            return Ok(Side::Thread(t));
        }
        let guard = match self.host.try_lock() {
            Ok(g) => g,
            Err(TryLockError::WouldBlock) => {
                if wake_holder {
                    let _ = self.wakeup.wake();
                }
                self.host.lock().map_err(|_| poisoned())?
            }
            Err(TryLockError::Poisoned(_)) => return Err(poisoned()),
        };
        if guard.is_some() {
            return Ok(Side::Hosted(guard));
        }
        drop(guard);
        // Moved to its thread while we waited for the lock.
        self.threaded.get().map(Side::Thread).ok_or_else(|| {
            Error::new(
                crate::result::P2P_ERR_CLOSED,
                "the network thread could not be started; free the node",
            )
        })
    }
}

impl p2p_node {
    /// Runs a command on the node itself (hosted mode: here, under the
    /// lock, going out at the next `p2p_node_service`; thread mode: on the
    /// network thread, going out within its turn). `P2P_ERR_CLOSED` once
    /// the node is closed.
    pub(crate) fn command<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Node, Instant) -> R + Send + 'static,
    ) -> Result<R, Error> {
        match self.side()? {
            Side::Hosted(mut g) => {
                let host = g.as_mut().ok_or_else(Error::closed)?;
                if host.is_closed() {
                    return Err(Error::closed());
                }
                Ok(f(host.node_mut(), Instant::now()))
            }
            Side::Thread(t) => Ok(t.handle.with(move |h| {
                if h.is_closed() { Err(Error::closed()) } else { Ok(f(h.node_mut(), Instant::now())) }
            })??),
        }
    }
}

impl query::Source for p2p_node {
    fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Node, Option<HostStats>) -> R + Send + 'static,
    ) -> Result<R, Error> {
        match self.side()? {
            Side::Hosted(mut g) => {
                let host = g.as_mut().ok_or_else(Error::closed)?;
                Ok(f(host.node(), Some(host.host_stats())))
            }
            Side::Thread(t) => Ok(t.handle.with(move |h| f(h.node(), Some(h.host_stats())))?),
        }
    }
}

fn poisoned() -> Error {
    Error::new(
        crate::result::P2P_ERR_PANIC,
        "the node is unusable after an internal error in another call; free it",
    )
}

/// The node behind a caller's pointer.
///
/// # Safety
/// `node` is NULL or a live pointer from `p2p_node_create`.
pub(crate) unsafe fn node_arg<'a>(node: *const p2p_node) -> Result<&'a p2p_node, Error> {
    // SAFETY: the caller's promise.
    unsafe { arg(node, "node") }
}

/// Creates a node in hosted mode: binds its UDP socket (`cfg->bind`) and
/// starts contacting `cfg->bootstrap`. Drive it with `p2p_node_service`
/// every frame, or hand it to a thread of its own with
/// `p2p_node_start_thread`.
///
/// On success `*out` holds the node (free it with `p2p_node_free`) and
/// `P2P_OK` is returned; otherwise `*out` is NULL and the code says why:
/// `P2P_ERR_CONFIG` (a setting; the last error names it), `P2P_ERR_IO`
/// (the address is in use, say), `P2P_ERR_DATA_DIR` (the directory is
/// locked by another process, or its identity file is corrupt),
/// `P2P_ERR_INVALID_ARGUMENT`.
///
/// Ownership: `cfg` and its strings stay the caller's (read during the call
/// only). Thread safety: any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_node_create(cfg: *const p2p_config, out: *mut *mut p2p_node) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a writable pointer (or NULL).
        let out = unsafe { arg_mut(out, "out") }?;
        *out = std::ptr::null_mut();
        // SAFETY: the caller passes a valid config (or NULL).
        let Built { config, host, data_dir } = unsafe { build(cfg) }?;
        let identity = config.identity.to_bytes().to_vec();
        let logger = Arc::new(Logger::new());
        let host = Host::bind(host, config)?;
        let node = p2p_node {
            wakeup: host.wakeup(),
            id: host.id(),
            local_addr: host.local_addr(),
            host: Mutex::new(Some(host)),
            threaded: OnceLock::new(),
            logger,
            identity,
            _data_dir: data_dir,
        };
        *out = Box::into_raw(Box::new(node));
        Ok(P2P_OK)
    })
}

/// For the frame loop (hosted mode): handles everything that arrived and
/// is due, sends what is queued, and waits for more for at most
/// `max_wait_ms` in total, returning as soon as events wait, or when
/// `p2p_node_wake` is called. 0 never blocks: one turn and back. Then take
/// the events with `p2p_poll_events`.
///
/// In thread mode the network thread does the work: this only waits (at
/// most `max_wait_ms`) until events wait, or `p2p_node_wake`.
///
/// Queued log records go to the log callback before it returns, on this
/// thread. Returns `P2P_OK`, or `P2P_ERR_IO` if the socket or the event
/// loop failed (the node cannot go on: free it).
///
/// Thread safety: hosted mode: one thread drives the node; a call from
/// another thread while this one waits makes it return first. Thread mode:
/// any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_node_service(node: *mut p2p_node, max_wait_ms: u32) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live node (or NULL).
        let node = unsafe { node_arg(node) }?;
        let wait = Duration::from_millis(u64::from(max_wait_ms));
        let result = match node.side_waking(false)? {
            Side::Hosted(mut g) => {
                let host = g.as_mut().ok_or_else(Error::closed)?;
                node.logger.scope(|| host.service(wait)).map_err(Error::from)
            }
            Side::Thread(t) => {
                let mut ev = t.events.lock().map_err(|_| poisoned())?;
                let end = Instant::now().checked_add(wait);
                loop {
                    if ev.has_next() {
                        break Ok(());
                    }
                    let left = end.map(|e| e.saturating_duration_since(Instant::now()));
                    if left == Some(Duration::ZERO) {
                        break Ok(());
                    }
                    let EventSide { poll, scratch, .. } = &mut *ev;
                    match poll.poll(scratch, left) {
                        Ok(()) if scratch.iter().any(|e| e.token() == WAKER) => {
                            // An event was queued, or p2p_node_wake: either
                            // way, back to the caller.
                            ev.has_next();
                            break Ok(());
                        }
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(Error::new(crate::result::P2P_ERR_IO, e.to_string())),
                    }
                }
            }
        };
        node.logger.deliver();
        result.map(|()| P2P_OK)
    })
}

/// Moves the node to a network thread of its own: from now on it runs by
/// itself, every function may be called from any thread, and
/// `p2p_node_service` only waits for events. Returns `P2P_OK`,
/// `P2P_ERR_WRONG_MODE` (already started) or `P2P_ERR_IO`.
///
/// In thread mode commands that answer (`p2p_send`, queries) cross to the
/// network thread and wait for its answer: a few microseconds when it is
/// idle, one bounded turn of its loop when it is busy.
///
/// Thread safety: call it before other threads use the node.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_node_start_thread(node: *mut p2p_node) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live node (or NULL).
        let node = unsafe { node_arg(node) }?;
        let mut guard = node.host.lock().map_err(|_| poisoned())?;
        if node.threaded.get().is_some() {
            return Err(Error::new(P2P_ERR_WRONG_MODE, "the node already runs on its own thread"));
        }
        let host = guard.take().ok_or_else(Error::closed)?;
        let io = |e: std::io::Error| Error::new(crate::result::P2P_ERR_IO, e.to_string());
        let poll = mio::Poll::new().map_err(io)?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).map_err(io)?);
        #[cfg(unix)]
        let fd = i64::from(std::os::fd::AsRawFd::as_raw_fd(&poll));
        let mut options = SpawnOptions::default();
        let notify = waker.clone();
        options.on_events = Some(Box::new(move || {
            let _ = notify.wake();
        }));
        options.dispatch = Some(node.logger.dispatch());
        let (handle, rx) = host.spawn_with(options)?;
        let events = Mutex::new(EventSide { rx, peeked: None, poll, scratch: mio::Events::with_capacity(8) });
        let threaded = Threaded {
            handle,
            events,
            waker,
            #[cfg(unix)]
            fd,
        };
        // Cannot fail: set only here, under the host lock, after the check.
        let _ = node.threaded.set(threaded);
        Ok(P2P_OK)
    })
}

/// Ends a wait early, from any thread: a `p2p_node_service` blocked in
/// another thread returns, and the waitable descriptor turns readable.
///
/// Thread safety: any thread, any time (also from a signal-safe context's
/// worker thread; not from a signal handler).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_node_wake(node: *mut p2p_node) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live node (or NULL).
        let node = unsafe { node_arg(node) }?;
        let r = match node.threaded.get() {
            Some(t) => t.waker.wake(),
            None => node.wakeup.wake(),
        };
        r.map_err(|e| Error::new(crate::result::P2P_ERR_IO, e.to_string()))?;
        Ok(P2P_OK)
    })
}

/// A descriptor that turns readable when the node needs attention, for
/// engines that wait in their own loop: in hosted mode, when datagrams
/// arrived or `p2p_node_wake` was called: then call `p2p_node_service(node,
/// 0)`, and never wait longer than `p2p_node_timeout` says; in thread mode,
/// when events wait for `p2p_poll_events` (or `p2p_node_wake`). A wake-up
/// may find nothing to do (an event already taken by an earlier poll can
/// leave one behind): poll, and wait again.
///
/// Unix: an epoll/kqueue file descriptor owned by the node; only wait for
/// it to be readable; never read, close or register anything on it.
/// Windows: `P2P_NO_WAITABLE` (wait in `p2p_node_service` instead). Valid
/// until `p2p_node_free`; it changes once, when `p2p_node_start_thread` is
/// called.
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_node_waitable(node: *mut p2p_node) -> p2p_waitable {
    call(|| {
        // SAFETY: the caller passes a live node (or NULL).
        let node = unsafe { node_arg(node) }?;
        waitable(node)
    })
}

#[cfg(unix)]
fn waitable(node: &p2p_node) -> Result<p2p_waitable, Error> {
    if let Some(t) = node.threaded.get() {
        return Ok(t.fd);
    }
    match node.side()? {
        Side::Hosted(mut g) => {
            let host = g.as_mut().ok_or_else(Error::closed)?;
            Ok(i64::from(host.waitable()))
        }
        Side::Thread(t) => Ok(t.fd),
    }
}

#[cfg(not(unix))]
fn waitable(_: &p2p_node) -> Result<p2p_waitable, Error> {
    Err(Error::new(
        crate::result::P2P_ERR_UNSUPPORTED,
        "this platform has no waitable descriptor; wait in p2p_node_service",
    ))
}

/// How long an engine waiting on `p2p_node_waitable` may wait before it
/// must call `p2p_node_service` again even if the descriptor stays quiet,
/// in ms (0: call it now), in `*ms`. Returns `P2P_OK`, or `P2P_DONE` when
/// nothing is scheduled (wait for the descriptor alone; always the case in
/// thread mode unless events wait).
///
/// Thread safety: as `p2p_node_service`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_node_timeout(node: *mut p2p_node, ms: *mut u32) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live node and a writable count (or NULL).
        let node = unsafe { node_arg(node) }?;
        let ms = unsafe { arg_mut(ms, "ms") }?;
        let next = match node.side()? {
            Side::Hosted(g) => g.as_ref().ok_or_else(Error::closed)?.next_turn(),
            Side::Thread(t) => t.events.lock().map_err(|_| poisoned())?.has_next().then(Instant::now),
        };
        let Some(next) = next else { return Ok(P2P_DONE) };
        let left = next.saturating_duration_since(Instant::now());
        // Round up: waking a little late is harmless, early means a turn
        // with nothing to do.
        *ms = u32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u32::MAX);
        Ok(P2P_OK)
    })
}

/// Takes up to `max` waiting events into `out[0..n]` and returns `n` (0:
/// none), or a negative error. Events of kind `P2P_EVENT_MESSAGE` carry a
/// `p2p_message *` the caller now owns (release it with
/// `p2p_message_release`, from any thread, whenever it is done with it).
/// Queued log records go to the log callback before it returns.
///
/// Thread safety: hosted mode: the driving thread (other threads are
/// serialised). Thread mode: any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_poll_events(node: *mut p2p_node, out: *mut p2p_event, max: u32) -> i32 {
    call(|| {
        // SAFETY: the caller passes a live node (or NULL).
        let node = unsafe { node_arg(node) }?;
        if max > 0 && out.is_null() {
            return Err(Error::invalid("`out` is NULL"));
        }
        let max = max.min(i32::MAX as u32) as usize;
        let mut n = 0;
        let put = |n: &mut usize, e: Event| {
            // SAFETY: n < max, and `out` has room for `max` events.
            unsafe { out.add(*n).write(to_c(e)) };
            *n += 1;
        };
        match node.side()? {
            Side::Hosted(mut g) => {
                let host = g.as_mut().ok_or_else(Error::closed)?;
                while n < max {
                    let Some(e) = host.poll_event() else { break };
                    put(&mut n, e);
                }
            }
            Side::Thread(t) => {
                let mut ev = t.events.lock().map_err(|_| poisoned())?;
                // Consume the readiness first, then the queue: an event
                // queued after this point wakes the descriptor again.
                let EventSide { poll, scratch, .. } = &mut *ev;
                let _ = poll.poll(scratch, Some(Duration::ZERO));
                while n < max {
                    let Some(e) = ev.next() else { break };
                    put(&mut n, e);
                }
                if ev.has_next() {
                    // More than `max` waited: keep the descriptor readable.
                    let _ = t.waker.wake();
                }
            }
        }
        node.logger.deliver();
        Ok(n as i32)
    })
}

/// Sends `len` bytes at `data` to node `to` on `channel` (0 to 255;
/// channels are independent ordered streams). `flags`: `P2P_SEND_RELIABLE`
/// (0) or `P2P_SEND_UNRELIABLE`.
///
/// The bytes are copied: the buffer is the caller's again when the call
/// returns, whatever it returns. A reliable message is delivered exactly
/// once and in order on its channel, or reported once in a
/// `P2P_EVENT_SEND_FAILED` event; the node connects to `to` by itself
/// (directly, punched or relayed).
///
/// Returns the message's sequence number (reliable; 0 or more, counting per
/// destination and channel; `P2P_EVENT_SEND_FAILED` names these) or 0
/// (unreliable), or a negative error: `P2P_ERR_BUFFER_FULL` (retry after
/// `P2P_EVENT_SEND_READY`), `P2P_ERR_NETWORK_DOWN`, `P2P_ERR_UNKNOWN_PEER`,
/// `P2P_ERR_TOO_LARGE`, `P2P_ERR_NOT_CONNECTED`, `P2P_ERR_SELF_SEND`,
/// `P2P_ERR_CLOSED`, `P2P_ERR_INVALID_ARGUMENT`.
///
/// Hosted mode: it leaves at the next `p2p_node_service`. Thread safety:
/// as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_send(
    node: *mut p2p_node,
    to: *const p2p_node_id,
    channel: u8,
    data: *const u8,
    len: u32,
    flags: u32,
) -> i64 {
    call(|| {
        // SAFETY: the caller passes a live node, an ID and `len` bytes (or NULL).
        let node = unsafe { node_arg(node) }?;
        let to = unsafe { arg(to, "to") }?.to_id()?;
        let bytes = Bytes::copy_from_slice(unsafe { bytes_arg(data, len, "data") }?);
        let reliability = reliability_of(flags)?;
        let seq = match node.side()? {
            Side::Hosted(mut g) => {
                g.as_mut().ok_or_else(Error::closed)?.send(to, channel, bytes, reliability)?
            }
            Side::Thread(t) => t.handle.send(to, channel, bytes, reliability)?,
        };
        Ok(seq.map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX)))
    })
}

pub(crate) fn reliability_of(flags: u32) -> Result<Reliability, Error> {
    match flags {
        P2P_SEND_RELIABLE => Ok(Reliability::Reliable),
        P2P_SEND_UNRELIABLE => Ok(Reliability::Unreliable),
        f => Err(Error::invalid(format!(
            "send flags {f:#x}: use P2P_SEND_RELIABLE (0) or P2P_SEND_UNRELIABLE (1)"
        ))),
    }
}

/// Dials node `id` at `addr` (a server or a peer whose address is known out
/// of band). Peers in the directory need no dial: `p2p_send` connects.
/// Returns `P2P_OK` (the outcome comes as `P2P_EVENT_CONNECTED` or
/// `P2P_EVENT_CONNECT_FAILED`), `P2P_ERR_CONNECT` or `P2P_ERR_CLOSED`.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_connect(
    node: *mut p2p_node,
    id: *const p2p_node_id,
    addr: *const p2p_addr,
) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live node, an ID and an address (or NULL).
        let node = unsafe { node_arg(node) }?;
        let id = unsafe { arg(id, "id") }?.to_id()?;
        let addr = unsafe { arg(addr, "addr") }?.to_socket_addr()?;
        match node.side()? {
            Side::Hosted(mut g) => g.as_mut().ok_or_else(Error::closed)?.connect(id, addr)?,
            Side::Thread(t) => t.handle.connect(id, addr)?,
        }
        Ok(P2P_OK)
    })
}

/// Closes the connection to `id` (reliable messages to it that are not yet
/// acknowledged are reported in `P2P_EVENT_SEND_FAILED`).
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_disconnect(node: *mut p2p_node, id: *const p2p_node_id) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live node and an ID (or NULL).
        let node = unsafe { node_arg(node) }?;
        let id = unsafe { arg(id, "id") }?.to_id()?;
        match node.side()? {
            Side::Hosted(mut g) => g.as_mut().ok_or_else(Error::closed)?.disconnect(id),
            Side::Thread(t) => t.handle.disconnect(id)?,
        }
        Ok(P2P_OK)
    })
}

/// Servers: sets the load this server reports (by default its number of
/// connected peers), used to pick the least loaded one.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_node_set_load(node: *mut p2p_node, load: u32) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live node (or NULL).
        let node = unsafe { node_arg(node) }?;
        match node.side()? {
            Side::Hosted(mut g) => g.as_mut().ok_or_else(Error::closed)?.set_load(load),
            Side::Thread(t) => t.handle.set_load(load)?,
        }
        Ok(P2P_OK)
    })
}

/// Closes the node: tells every connected node, and waits until they are
/// told or `p2p_config.close_timeout_ms` (2 s by default) passed. Events
/// that arrive meanwhile can still be polled. Later sends fail with
/// `P2P_ERR_CLOSED`. Closing twice is fine.
///
/// Thread safety: any thread (in hosted mode it waits for a running
/// `p2p_node_service` to return first).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_node_close(node: *mut p2p_node) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live node (or NULL).
        let node = unsafe { node_arg(node) }?;
        close(node)?;
        Ok(P2P_OK)
    })
}

fn close(node: &p2p_node) -> Result<(), Error> {
    match node.side()? {
        Side::Hosted(mut g) => {
            let host = g.as_mut().ok_or_else(Error::closed)?;
            node.logger.scope(|| host.close())?;
        }
        Side::Thread(t) => t.handle.close()?,
    }
    Ok(())
}

/// Closes the node if it is not closed (bounded as `p2p_node_close`) and
/// releases it. NULL is fine. Messages taken from its events stay valid.
///
/// Thread safety: once, when no other thread uses the node any more.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_node_free(node: *mut p2p_node) {
    call_void(|| {
        if node.is_null() {
            return;
        }
        // SAFETY: a pointer from p2p_node_create, freed once (the caller's
        // promise), no longer used by other threads.
        let node = unsafe { Box::from_raw(node) };
        if let Err(e) = close(&node) {
            tracing::debug!(error = %e.message, "closing a node being freed");
        }
        drop(node);
    })
}

/// Sets the log callback (NULL: none) and the most verbose level it gets
/// (`P2P_LOG_ERROR` to `P2P_LOG_TRACE`; `P2P_LOG_OFF`: none). `user` is
/// passed back to every call. The callback runs only inside
/// `p2p_node_service` and `p2p_poll_events`, on the thread that called
/// them; records that pile up between calls are kept up to a bound, then
/// counted and dropped.
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_node_set_log(
    node: *mut p2p_node,
    log: p2p_log_fn,
    user: *mut c_void,
    level: u32,
) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live node (or NULL).
        let node = unsafe { node_arg(node) }?;
        node.logger.set(log, user, level);
        Ok(P2P_OK)
    })
}

/// This node's ID, in `*out`.
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_node_get_id(node: *const p2p_node, out: *mut p2p_node_id) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live node and a writable ID (or NULL).
        let node = unsafe { node_arg(node) }?;
        *unsafe { arg_mut(out, "out") }? = node.id.into();
        Ok(P2P_OK)
    })
}

/// The address the node's socket is bound to (with the port chosen when 0
/// was asked for), in `*out`.
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_node_local_addr(node: *const p2p_node, out: *mut p2p_addr) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live node and a writable address (or NULL).
        let node = unsafe { node_arg(node) }?;
        *unsafe { arg_mut(out, "out") }? = node.local_addr.into();
        Ok(P2P_OK)
    })
}

/// This node's identity blob (`P2P_IDENTITY_LEN` bytes: its secret key),
/// to save and pass as `p2p_config.identity` next time to keep the node
/// ID. `*len`: the buffer's size in, bytes written (or needed) out.
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_node_identity(node: *const p2p_node, out: *mut u8, len: *mut u32) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live node, a buffer and its size (or NULL).
        let node = unsafe { node_arg(node) }?;
        unsafe { fill_bytes(&node.identity, out, len) }
    })
}

/// The peers in the directory (online peers), each with its current path:
/// `*count` holds `out`'s capacity on entry and the number of peers on
/// return; `P2P_ERR_BUFFER_TOO_SMALL` if they do not fit (then `*count`
/// says how many there are; nothing was written).
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_node_peers(
    node: *mut p2p_node,
    out: *mut p2p_peer_info,
    count: *mut u32,
) -> p2p_result {
    // SAFETY: the caller passes a live node and valid pointers (or NULL).
    call(|| unsafe { query::peers_into(node_arg(node)?, out, count) })
}

/// How this node reaches `peer` now (kind, relaying server, RTT), in
/// `*out`. Returns `P2P_OK` or `P2P_ERR_NOT_FOUND` (no link to it).
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_node_path(
    node: *mut p2p_node,
    peer: *const p2p_node_id,
    out: *mut p2p_path_info,
) -> p2p_result {
    // SAFETY: the caller passes a live node and valid pointers (or NULL).
    call(|| unsafe { query::path_into(node_arg(node)?, peer, out) })
}

/// The established connections (servers and peers), length-in/length-out
/// as `p2p_node_peers`.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_node_links(
    node: *mut p2p_node,
    out: *mut p2p_link_info,
    count: *mut u32,
) -> p2p_result {
    // SAFETY: the caller passes a live node and valid pointers (or NULL).
    call(|| unsafe { query::links_into(node_arg(node)?, out, count) })
}

/// The Master as this node sees it (ID, name, basis, Raft term and group),
/// in `*out`.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_node_master(node: *mut p2p_node, out: *mut p2p_master_info) -> p2p_result {
    // SAFETY: the caller passes a live node and valid pointers (or NULL).
    call(|| unsafe { query::master_into(node_arg(node)?, out) })
}

/// The servers this node knows, length-in/length-out as `p2p_node_peers`.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_node_servers(
    node: *mut p2p_node,
    out: *mut p2p_server_info,
    count: *mut u32,
) -> p2p_result {
    // SAFETY: the caller passes a live node and valid pointers (or NULL).
    call(|| unsafe { query::servers_into(node_arg(node)?, out, count) })
}

/// The node's counters, into `*out` (set `out->size = sizeof(p2p_stats)`
/// first).
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_node_stats(node: *mut p2p_node, out: *mut p2p_stats) -> p2p_result {
    // SAFETY: the caller passes a live node and valid pointers (or NULL).
    call(|| unsafe { query::stats_into(node_arg(node)?, out) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::P2P_ROLE_SERVER;
    use std::ffi::CString;

    #[test]
    fn a_call_from_another_thread_wakes_a_waiting_service_and_goes_through() {
        let name = CString::new("s").unwrap();
        let bind = CString::new("127.0.0.1:0").unwrap();
        let mut cfg = std::mem::MaybeUninit::<p2p_config>::uninit();
        let mut node = std::ptr::null_mut();
        // SAFETY: a writable config; strings outlive the create call.
        unsafe {
            crate::config::p2p_config_default(cfg.as_mut_ptr());
            let mut cfg = cfg.assume_init();
            cfg.role = P2P_ROLE_SERVER;
            cfg.name = name.as_ptr();
            cfg.bind = bind.as_ptr();
            assert_eq!(p2p_node_create(&cfg, &mut node), P2P_OK);
            // Settle, and take every event: a waiting one ends `service` at once.
            let mut events: Vec<p2p_event> = Vec::with_capacity(16);
            for _ in 0..10 {
                p2p_node_service(node, 0);
                while p2p_poll_events(node, events.as_mut_ptr(), 16) > 0 {}
            }
        }
        let ptr = node as usize;
        let waiter = std::thread::spawn(move || {
            let t = Instant::now();
            // SAFETY: the node outlives the thread (joined below).
            assert_eq!(unsafe { p2p_node_service(ptr as *mut p2p_node, 60_000) }, P2P_OK);
            t.elapsed()
        });
        // SAFETY: a live node.
        let n = unsafe { &*node };
        // Wait (without a clock) until the other thread holds the host: it
        // is inside p2p_node_service.
        while n.host.try_lock().is_ok() {
            assert!(!waiter.is_finished(), "the service returned before anything woke it");
            std::thread::yield_now();
        }
        let mut stats = p2p_stats { size: std::mem::size_of::<p2p_stats>() as u32, ..Default::default() };
        // SAFETY: a live node and a sized struct.
        assert_eq!(unsafe { p2p_node_stats(node, &mut stats) }, P2P_OK);
        assert!(waiter.join().unwrap() < Duration::from_secs(30), "the service was woken, not timed out");
        // SAFETY: freed once.
        unsafe { p2p_node_free(node) };
    }
}
