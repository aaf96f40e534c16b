//! Raw core mode: `p2p_core`, the sans-IO [`Node`] itself, for engines that
//! own their socket and clock. The caller feeds datagrams and time (a
//! monotonic microsecond count of its own) and sends what the core asks.

use crate::config::{Built, build, p2p_config};
use crate::event::{p2p_event, to_c};
use crate::log::{Logger, p2p_log_fn};
use crate::node::reliability_of;
use crate::query::{
    self, p2p_link_info, p2p_master_info, p2p_path_info, p2p_peer_info, p2p_server_info, p2p_stats,
};
use crate::result::{Error, P2P_DONE, P2P_ERR_BUFFER_TOO_SMALL, P2P_OK, call, call_void, p2p_result};
use crate::types::{arg, arg_mut, bytes_arg, p2p_addr, p2p_node_id};
use bytes::{Bytes, BytesMut};
use p2pcore::{Ecn, LookupKey, Node};
use p2pcore_mio::DataDir;
use std::ffi::{c_char, c_void};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// What `p2p_core_poll_transmit` says about a datagram to send.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct p2p_transmit {
    /// Where to send it.
    pub destination: p2p_addr,
    /// The local IP to send from (`IP_PKTINFO` / `IPV6_PKTINFO`), when it
    /// matters on a multi-homed host; family `P2P_AF_NONE`: let the system
    /// choose.
    pub source: p2p_addr,
    /// Bytes of the datagram (also when they did not fit: the room needed).
    pub size: u32,
    /// ECN codepoint for the IP header's two low TOS bits (0: not ECN-capable).
    pub ecn: u8,
    /// Padding; zero.
    pub reserved: [u8; 3],
}

/// A node in raw core mode. Opaque; created by `p2p_core_create`, released
/// by `p2p_core_free`.
pub struct p2p_core {
    state: Mutex<CoreState>,
    logger: Logger,
    /// Held for its lock on the directory until the core is freed.
    _data_dir: Option<DataDir>,
}

struct CoreState {
    node: Node,
    /// The instant the caller's `base_us` stands for.
    epoch: Instant,
    base_us: u64,
    /// The latest time the caller gave: time never goes back for the core.
    last: Instant,
    buf: Vec<u8>,
    /// A transmit the caller had no room for, handed out again first.
    pending: Option<p2p_transmit>,
}

impl CoreState {
    /// The caller's microseconds as the core's `Instant`.
    fn at(&mut self, now_us: u64) -> Instant {
        let t = self.epoch + Duration::from_micros(now_us.saturating_sub(self.base_us));
        self.last = self.last.max(t);
        self.last
    }

    fn us(&self, t: Instant) -> u64 {
        let since = t.saturating_duration_since(self.epoch);
        self.base_us.saturating_add(u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
    }
}

impl query::Source for p2p_core {
    fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Node, Option<p2pcore_mio::HostStats>) -> R + Send + 'static,
    ) -> Result<R, Error> {
        Ok(f(&self.lock()?.node, None))
    }
}

impl p2p_core {
    fn lock(&self) -> Result<MutexGuard<'_, CoreState>, Error> {
        self.state.lock().map_err(|_| {
            Error::new(crate::result::P2P_ERR_PANIC, "the core is unusable after an internal error; free it")
        })
    }
}

/// # Safety
/// `core` is NULL or a live pointer from `p2p_core_create`.
unsafe fn core_arg<'a>(core: *const p2p_core) -> Result<&'a p2p_core, Error> {
    // SAFETY: the caller's promise.
    unsafe { arg(core, "core") }
}

/// Creates a node in raw core mode from `cfg` (its `bind`, `gso` and
/// `close_timeout_ms` do not apply: the caller owns the socket), at the
/// caller's time `now_us` (any monotonic microsecond count; later calls
/// pass later values of the same clock). A server must set `advertise`.
///
/// Drive it in this order after every input (`p2p_core_handle_*`,
/// `p2p_core_send`, ...): `p2p_core_poll_transmit` until `P2P_DONE`, then
/// `p2p_core_poll_events` until it returns 0, then `p2p_core_poll_timeout`;
/// call `p2p_core_handle_timeout` when that time comes.
///
/// Returns `P2P_OK` (`*out` holds the core), or `P2P_ERR_CONFIG`,
/// `P2P_ERR_DATA_DIR`, `P2P_ERR_INVALID_ARGUMENT` (`*out` is NULL).
///
/// Thread safety: any thread; then one thread at a time per core (calls
/// from several threads are serialised, never undefined).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_core_create(
    cfg: *const p2p_config,
    now_us: u64,
    out: *mut *mut p2p_core,
) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a writable pointer and a config (or NULL).
        let out = unsafe { arg_mut(out, "out") }?;
        *out = std::ptr::null_mut();
        let Built { mut config, data_dir, .. } = unsafe { build(cfg) }?;
        if config.unix_time.is_none() {
            config.unix_time =
                SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).ok().map(|d| d.as_secs());
        }
        // The one clock read: the instant the caller's `now_us` stands for.
        let epoch = Instant::now();
        let logger = Logger::new();
        let node = Node::new(config, epoch)?;
        let state = CoreState { node, epoch, base_us: now_us, last: epoch, buf: Vec::new(), pending: None };
        *out = Box::into_raw(Box::new(p2p_core { state: Mutex::new(state), logger, _data_dir: data_dir }));
        Ok(P2P_OK)
    })
}

/// Releases a core (without telling anyone: call `p2p_core_close` and
/// drive it until `p2p_core_is_closed` first for a clean goodbye). NULL is
/// fine.
///
/// Thread safety: once, when no other thread uses the core any more.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_core_free(core: *mut p2p_core) {
    call_void(|| {
        if !core.is_null() {
            // SAFETY: a pointer from p2p_core_create, freed once.
            drop(unsafe { Box::from_raw(core) });
        }
    })
}

/// Hands the core a datagram the caller's socket received from `remote`,
/// at `now_us`. `local`: the local IP it arrived on (from `IP_PKTINFO`), or
/// NULL; `ecn`: the two ECN bits of its IP header (0 if unknown). The bytes
/// are copied.
///
/// Thread safety: one thread at a time per core.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_core_handle_datagram(
    core: *mut p2p_core,
    now_us: u64,
    remote: *const p2p_addr,
    local: *const p2p_addr,
    ecn: u8,
    data: *const u8,
    len: u32,
) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live core, addresses and `len` bytes (or NULL).
        let core = unsafe { core_arg(core) }?;
        let remote = unsafe { arg(remote, "remote") }?.to_socket_addr()?;
        let local = match unsafe { local.as_ref() } {
            Some(l) if l.family != crate::types::P2P_AF_NONE => Some(l.to_socket_addr()?.ip()),
            _ => None,
        };
        let data = BytesMut::from(unsafe { bytes_arg(data, len, "data") }?);
        let mut s = core.lock()?;
        let now = s.at(now_us);
        core.logger.scope(|| s.node.handle_datagram(now, remote, local, Ecn::from_bits(ecn), data));
        Ok(P2P_OK)
    })
}

/// Tells the core that the time `p2p_core_poll_timeout` gave has come (an
/// early or repeated call does nothing).
///
/// Thread safety: one thread at a time per core.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_core_handle_timeout(core: *mut p2p_core, now_us: u64) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live core (or NULL).
        let core = unsafe { core_arg(core) }?;
        let mut s = core.lock()?;
        let now = s.at(now_us);
        core.logger.scope(|| s.node.handle_timeout(now));
        Ok(P2P_OK)
    })
}

/// The next datagram to send: writes it to `out` (room for `cap` bytes;
/// 1500 is always enough) and its destination and details to `*meta`, and
/// returns its size; `P2P_DONE` when nothing is left to send. If it does
/// not fit, returns `P2P_ERR_BUFFER_TOO_SMALL` with `meta->size` the room
/// needed, and keeps it for the next call.
///
/// Thread safety: one thread at a time per core.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_core_poll_transmit(
    core: *mut p2p_core,
    out: *mut u8,
    cap: u32,
    meta: *mut p2p_transmit,
) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live core, a buffer and a writable struct (or NULL).
        let core = unsafe { core_arg(core) }?;
        let meta = unsafe { arg_mut(meta, "meta") }?;
        let mut guard = core.lock()?;
        let s = &mut *guard;
        let t = match s.pending.take() {
            Some(t) => t,
            None => {
                let Some(t) = s.node.poll_transmit(1, &mut s.buf) else { return Ok(P2P_DONE) };
                p2p_transmit {
                    destination: t.destination.into(),
                    source: t.source.map(p2p_addr::from_ip).unwrap_or_default(),
                    size: u32::try_from(t.size).unwrap_or(u32::MAX),
                    ecn: t.ecn.map_or(0, |e| e.bits()),
                    reserved: [0; 3],
                }
            }
        };
        *meta = t;
        if t.size > cap {
            s.pending = Some(t);
            return Err(Error::new(
                P2P_ERR_BUFFER_TOO_SMALL,
                format!("the datagram has {} bytes; the buffer holds {cap}", t.size),
            ));
        }
        if t.size > 0 {
            if out.is_null() {
                s.pending = Some(t);
                return Err(Error::invalid("`out` is NULL"));
            }
            // SAFETY: `out` has room for cap >= size bytes; `buf` holds them.
            unsafe { std::ptr::copy_nonoverlapping(s.buf.as_ptr(), out, t.size as usize) };
        }
        Ok(t.size as p2p_result)
    })
}

/// When the core next needs `p2p_core_handle_timeout`, in the caller's
/// microseconds, in `*deadline_us`. Returns `P2P_OK`, or `P2P_DONE` when
/// nothing is scheduled.
///
/// Thread safety: one thread at a time per core.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_core_poll_timeout(core: *mut p2p_core, deadline_us: *mut u64) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live core and a writable count (or NULL).
        let core = unsafe { core_arg(core) }?;
        let deadline_us = unsafe { arg_mut(deadline_us, "deadline_us") }?;
        let mut s = core.lock()?;
        let Some(t) = s.node.poll_timeout() else { return Ok(P2P_DONE) };
        *deadline_us = s.us(t);
        Ok(P2P_OK)
    })
}

/// Takes up to `max` events into `out[0..n]` and returns `n`, as
/// `p2p_poll_events` does (messages are the caller's to release). Queued log
/// records go to the log callback before it returns.
///
/// Thread safety: one thread at a time per core.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_core_poll_events(core: *mut p2p_core, out: *mut p2p_event, max: u32) -> i32 {
    call(|| {
        // SAFETY: the caller passes a live core and an array of `max` (or NULL).
        let core = unsafe { core_arg(core) }?;
        if max > 0 && out.is_null() {
            return Err(Error::invalid("`out` is NULL"));
        }
        let max = max.min(i32::MAX as u32) as usize;
        let mut n = 0;
        {
            let mut s = core.lock()?;
            while n < max {
                let Some(e) = s.node.poll_event() else { break };
                // SAFETY: n < max, and `out` has room for `max` events.
                unsafe { out.add(n).write(to_c(e)) };
                n += 1;
            }
        }
        core.logger.deliver();
        Ok(n as i32)
    })
}

/// Sends a message, as `p2p_send` (same flags, result and ownership), at
/// `now_us`: it leaves through `p2p_core_poll_transmit`.
///
/// Thread safety: one thread at a time per core.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_core_send(
    core: *mut p2p_core,
    now_us: u64,
    to: *const p2p_node_id,
    channel: u8,
    data: *const u8,
    len: u32,
    flags: u32,
) -> i64 {
    call(|| {
        // SAFETY: the caller passes a live core, an ID and `len` bytes (or NULL).
        let core = unsafe { core_arg(core) }?;
        let to = unsafe { arg(to, "to") }?.to_id()?;
        let bytes = Bytes::copy_from_slice(unsafe { bytes_arg(data, len, "data") }?);
        let reliability = reliability_of(flags)?;
        let mut s = core.lock()?;
        let now = s.at(now_us);
        let seq = core.logger.scope(|| s.node.send(now, to, channel, bytes, reliability))?;
        Ok(seq.map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX)))
    })
}

/// Dials node `id` at `addr`, as `p2p_connect`.
///
/// Thread safety: one thread at a time per core.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_core_connect(
    core: *mut p2p_core,
    now_us: u64,
    id: *const p2p_node_id,
    addr: *const p2p_addr,
) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live core, an ID and an address (or NULL).
        let core = unsafe { core_arg(core) }?;
        let id = unsafe { arg(id, "id") }?.to_id()?;
        let addr = unsafe { arg(addr, "addr") }?.to_socket_addr()?;
        let mut s = core.lock()?;
        let now = s.at(now_us);
        s.node.connect(now, id, addr)?;
        Ok(P2P_OK)
    })
}

/// Looks peer `id` up at `now_us`, as `p2p_lookup_id` (same result and
/// answer): the question leaves through `p2p_core_poll_transmit`.
///
/// Thread safety: one thread at a time per core.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_core_lookup_id(core: *mut p2p_core, now_us: u64, id: *const p2p_node_id) -> i64 {
    // SAFETY: the caller passes a live core and an ID (or NULL).
    unsafe { lookup(core, now_us, crate::lookup::id_key(id)) }
}

/// Looks up every peer named `name` at `now_us`, as `p2p_lookup_name`.
///
/// Thread safety: one thread at a time per core.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_core_lookup_name(core: *mut p2p_core, now_us: u64, name: *const c_char) -> i64 {
    // SAFETY: the caller passes a live core and a string (or NULL).
    unsafe { lookup(core, now_us, crate::lookup::name_key(name)) }
}

/// # Safety
/// `core` is NULL or a live pointer from `p2p_core_create`.
unsafe fn lookup(core: *mut p2p_core, now_us: u64, key: Result<LookupKey, Error>) -> i64 {
    call(|| {
        // SAFETY: the caller's promise.
        let core = unsafe { core_arg(core) }?;
        let key = key?;
        let mut s = core.lock()?;
        let now = s.at(now_us);
        let query = core.logger.scope(|| s.node.lookup(now, key))?;
        Ok(crate::lookup::lookup_id(query))
    })
}

/// The addresses of the caller's socket on the machine's interfaces (its
/// LAN addresses, with the socket's port), which the core cannot discover:
/// peers advertise them for direct paths on the same LAN. Call it at start
/// and when they change.
///
/// Thread safety: one thread at a time per core.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_core_set_local_addrs(
    core: *mut p2p_core,
    now_us: u64,
    addrs: *const p2p_addr,
    count: u32,
) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live core and `count` addresses (or NULL).
        let core = unsafe { core_arg(core) }?;
        let list = if count == 0 {
            Vec::new()
        } else if addrs.is_null() {
            return Err(Error::invalid("`addrs` is NULL"));
        } else {
            // SAFETY: `count` readable addresses.
            let slice = unsafe { std::slice::from_raw_parts(addrs, count as usize) };
            slice.iter().map(|a| a.to_socket_addr()).collect::<Result<Vec<_>, _>>()?
        };
        let mut s = core.lock()?;
        let now = s.at(now_us);
        s.node.set_local_addrs(now, list);
        Ok(P2P_OK)
    })
}

/// Starts closing: tells connected nodes. Keep driving the core until
/// `p2p_core_is_closed` returns 1 (or your own time limit), then free it.
///
/// Thread safety: one thread at a time per core.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_core_close(core: *mut p2p_core, now_us: u64) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live core (or NULL).
        let core = unsafe { core_arg(core) }?;
        let mut s = core.lock()?;
        let now = s.at(now_us);
        s.node.close(now);
        Ok(P2P_OK)
    })
}

/// 1 once a closing core has told everyone (or given up), 0 before; a
/// negative error for a NULL core.
///
/// Thread safety: one thread at a time per core.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_core_is_closed(core: *mut p2p_core) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live core (or NULL).
        let core = unsafe { core_arg(core) }?;
        Ok(i32::from(core.lock()?.node.is_closed()))
    })
}

/// This node's ID, in `*out`.
///
/// Thread safety: one thread at a time per core.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_core_id(core: *mut p2p_core, out: *mut p2p_node_id) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live core and a writable ID (or NULL).
        let core = unsafe { core_arg(core) }?;
        *unsafe { arg_mut(out, "out") }? = core.lock()?.node.id().into();
        Ok(P2P_OK)
    })
}

/// Sets the log callback, as `p2p_node_set_log`; records reach it inside
/// `p2p_core_poll_events`.
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_core_set_log(
    core: *mut p2p_core,
    log: p2p_log_fn,
    user: *mut c_void,
    level: u32,
) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live core (or NULL).
        let core = unsafe { core_arg(core) }?;
        core.logger.set(log, user, level);
        Ok(P2P_OK)
    })
}

/// The peers in the directory, as `p2p_node_peers`.
///
/// Thread safety: one thread at a time per core.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_core_peers(
    core: *mut p2p_core,
    out: *mut p2p_peer_info,
    count: *mut u32,
) -> p2p_result {
    // SAFETY: the caller passes a live core and valid pointers (or NULL).
    call(|| unsafe { query::peers_into(core_arg(core)?, out, count) })
}

/// The path to `peer`, as `p2p_node_path`.
///
/// Thread safety: one thread at a time per core.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_core_path(
    core: *mut p2p_core,
    peer: *const p2p_node_id,
    out: *mut p2p_path_info,
) -> p2p_result {
    // SAFETY: the caller passes a live core and valid pointers (or NULL).
    call(|| unsafe { query::path_into(core_arg(core)?, peer, out) })
}

/// The established connections, as `p2p_node_links`.
///
/// Thread safety: one thread at a time per core.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_core_links(
    core: *mut p2p_core,
    out: *mut p2p_link_info,
    count: *mut u32,
) -> p2p_result {
    // SAFETY: the caller passes a live core and valid pointers (or NULL).
    call(|| unsafe { query::links_into(core_arg(core)?, out, count) })
}

/// The Master, as `p2p_node_master`.
///
/// Thread safety: one thread at a time per core.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_core_master(core: *mut p2p_core, out: *mut p2p_master_info) -> p2p_result {
    // SAFETY: the caller passes a live core and valid pointers (or NULL).
    call(|| unsafe { query::master_into(core_arg(core)?, out) })
}

/// The servers, as `p2p_node_servers`.
///
/// Thread safety: one thread at a time per core.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_core_servers(
    core: *mut p2p_core,
    out: *mut p2p_server_info,
    count: *mut u32,
) -> p2p_result {
    // SAFETY: the caller passes a live core and valid pointers (or NULL).
    call(|| unsafe { query::servers_into(core_arg(core)?, out, count) })
}

/// The counters, as `p2p_node_stats` (the hosted-mode ones stay 0).
///
/// Thread safety: one thread at a time per core.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_core_stats(core: *mut p2p_core, out: *mut p2p_stats) -> p2p_result {
    // SAFETY: the caller passes a live core and valid pointers (or NULL).
    call(|| unsafe { query::stats_into(core_arg(core)?, out) })
}
