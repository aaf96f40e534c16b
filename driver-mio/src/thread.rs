//! The thread mode: a [`Host`] on a network thread of its own, commanded
//! through a [`Handle`] and reporting through an [`EventReceiver`].
//!
//! Commands cross to the network thread through a channel and a
//! `mio::Waker` (the thread sleeps in its poll; the waker ends the sleep), so
//! a command is handled within one turn of the loop. Commands that answer
//! (`send`, queries) wait for the answer: a few microseconds on an idle
//! thread, one bounded turn on a busy one. Events come back through a
//! channel the caller polls or blocks on; nothing ever runs on the network
//! thread but the host and the closures passed to [`Handle::with`].

use crate::host::{Host, HostError, HostStats};
use bytes::Bytes;
use mio::Waker;
use p2pcore::{
    ConnectError, Event, LinkInfo, MasterInfo, NodeId, NodeStats, PeerInfo, Reliability, SendError,
    ServerInfo,
};
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use std::sync::mpsc::RecvTimeoutError;

/// Most commands handled in one turn, so a caller flooding commands cannot
/// starve the socket and timers either.
const MAX_TURN_COMMANDS: usize = 1024;

type Call = Box<dyn FnOnce(&mut Host) + Send>;

enum Command {
    Call(Call),
    Close,
}

/// Why a [`Handle`] command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// The network thread has ended (closed, or failed: [`Handle::close`]
    /// says why).
    #[error("the p2pcore network thread has stopped")]
    Stopped,
    /// The node refused the message (see [`SendError`]).
    #[error(transparent)]
    Send(#[from] SendError),
    /// The node refused the dial (see [`ConnectError`]).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The network thread ended with an error.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The network thread panicked (a bug: please report it).
    #[error("the p2pcore network thread panicked")]
    Panicked,
}

struct Inner {
    commands: Sender<Command>,
    waker: Arc<Waker>,
    thread: Mutex<Option<JoinHandle<Result<(), HostError>>>>,
    id: NodeId,
    local_addr: SocketAddr,
}

impl Inner {
    fn post(&self, command: Command) -> Result<(), HandleError> {
        self.commands.send(command).map_err(|_| HandleError::Stopped)?;
        // A failed wake leaves the command for the next turn, which the
        // node's own deadlines bring soon enough: not worth failing for.
        if let Err(e) = self.waker.wake() {
            tracing::warn!(error = %e, "waking the network thread failed");
        }
        Ok(())
    }

    /// Asks the thread to close and waits for it to end.
    fn close(&self) -> Result<(), HandleError> {
        let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) else {
            return Ok(()); // closed already
        };
        // Closing from a command closure (on the network thread itself):
        // ask, but joining would wait for ourselves.
        let _ = self.post(Command::Close);
        if thread.thread().id() == std::thread::current().id() {
            return Ok(());
        }
        match thread.join() {
            Ok(result) => result.map_err(HandleError::Host),
            Err(_) => Err(HandleError::Panicked),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: close, within the host's close timeout.
        if let Err(e) = self.close() {
            tracing::warn!(error = %e, "the network thread ended with an error");
        }
    }
}

/// Commands a [`Host`] running on its own thread ([`Host::spawn`]).
///
/// `Send + Sync + Clone`: every clone commands the same host. Dropping the
/// last one closes the host (as [`Handle::close`] does).
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("id", &self.inner.id)
            .field("local_addr", &self.inner.local_addr)
            .finish()
    }
}

/// Events from a [`Host`] running on its own thread, in the order the node
/// produced them. The channel is unbounded, as the node's own event queue
/// is: take events regularly, and use [`Node::pause_receiving`](p2pcore::Node::pause_receiving) (through
/// [`Handle::with`]) to hold fast senders back instead of letting messages
/// pile up.
#[derive(Debug)]
pub struct EventReceiver {
    rx: Receiver<Event>,
}

impl EventReceiver {
    /// The next event, blocking until one comes; `None` once the network
    /// thread has ended and every event was taken.
    pub fn recv(&self) -> Option<Event> {
        self.rx.recv().ok()
    }

    /// The next event if one waits, without blocking. `Err(Empty)`: none
    /// yet; `Err(Disconnected)`: none will come (the thread ended).
    pub fn try_recv(&self) -> Result<Event, TryRecvError> {
        self.rx.try_recv()
    }

    /// The next event, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Event, RecvTimeoutError> {
        self.rx.recv_timeout(timeout)
    }

    /// Every event waiting now, without blocking.
    pub fn try_iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.rx.try_iter()
    }
}

/// Extras for [`Host::spawn_with`].
#[derive(Default)]
#[non_exhaustive]
pub struct SpawnOptions {
    /// Called on the network thread after each turn that queued events for
    /// the [`EventReceiver`] (once per turn, not per event): to signal a
    /// descriptor or a condition variable another loop waits on. Keep it
    /// short; it must not call the [`Handle`].
    pub on_events: Option<Box<dyn FnMut() + Send>>,
    /// The `tracing` dispatcher the network thread logs to, instead of the
    /// process's global one (a per-node log sink, say).
    pub dispatch: Option<tracing::Dispatch>,
}

impl std::fmt::Debug for SpawnOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpawnOptions")
            .field("on_events", &self.on_events.is_some())
            .field("dispatch", &self.dispatch.is_some())
            .finish()
    }
}

impl Host {
    /// Moves the host to a network thread of its own. The socket is already
    /// bound (bind errors came from [`Host::bind`]); the thread runs until
    /// [`Handle::close`] or until every handle is dropped.
    pub fn spawn(self) -> Result<(Handle, EventReceiver), HostError> {
        self.spawn_with(SpawnOptions::default())
    }

    /// [`Host::spawn`] with a notification of queued events and a log
    /// dispatcher of the caller's (see [`SpawnOptions`]).
    pub fn spawn_with(self, options: SpawnOptions) -> Result<(Handle, EventReceiver), HostError> {
        let (commands, command_rx) = mpsc::channel();
        let (event_tx, rx) = mpsc::channel();
        let waker = self.waker();
        let id = self.id();
        let local_addr = self.local_addr();
        let SpawnOptions { on_events, dispatch } = options;
        let thread = std::thread::Builder::new()
            .name(format!("p2pcore {}", id.short()))
            .spawn(move || match dispatch {
                Some(d) => tracing::dispatcher::with_default(&d, || {
                    network_thread(self, command_rx, event_tx, on_events)
                }),
                None => network_thread(self, command_rx, event_tx, on_events),
            })
            .map_err(HostError::Thread)?;
        let inner = Inner { commands, waker, thread: Mutex::new(Some(thread)), id, local_addr };
        Ok((Handle { inner: Arc::new(inner) }, EventReceiver { rx }))
    }
}

fn network_thread(
    mut host: Host,
    commands: Receiver<Command>,
    events: Sender<Event>,
    mut on_events: Option<Box<dyn FnMut() + Send>>,
) -> Result<(), HostError> {
    let close_timeout = host.close_timeout();
    let mut closing: Option<Instant> = None;
    loop {
        let mut more_commands = true;
        for _ in 0..MAX_TURN_COMMANDS {
            match commands.try_recv() {
                Ok(Command::Call(call)) => call(&mut host),
                Ok(Command::Close) => start_close(&mut host, &mut closing),
                Err(TryRecvError::Empty) => {
                    more_commands = false;
                    break;
                }
                // Every handle is gone: nobody can command or close it.
                Err(TryRecvError::Disconnected) => {
                    start_close(&mut host, &mut closing);
                    more_commands = false;
                    break;
                }
            }
        }
        host.turn()?;
        let mut queued = false;
        while let Some(e) = host.poll_event() {
            // Nobody listening any more: the events have no one to go to.
            queued |= events.send(e).is_ok();
        }
        if queued && let Some(notify) = on_events.as_mut() {
            notify();
        }
        if host.is_closed() {
            return Ok(());
        }
        if !more_commands && !host.has_backlog() {
            host.wait(closing.map(|t| t + close_timeout))?;
        }
    }
}

fn start_close(host: &mut Host, closing: &mut Option<Instant>) {
    if closing.is_none() {
        *closing = Some(Instant::now());
        host.start_close();
    }
}

impl Handle {
    /// Runs `f` on the network thread with the host, and returns its result.
    /// The general form of every other command: anything [`Host`] and
    /// [`Node`](p2pcore::Node) offer is reachable through it.
    ///
    /// `f` runs on the network thread, between turns: keep it short, and do
    /// not call this handle's methods inside it (they would wait for the
    /// thread that is running `f`).
    pub fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Host) -> R + Send + 'static,
    ) -> Result<R, HandleError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.inner.post(Command::Call(Box::new(move |host| {
            let _ = tx.send(f(host));
        })))?;
        rx.recv().map_err(|_| HandleError::Stopped)
    }

    /// The node's ID (no round trip).
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The socket's address (no round trip).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Sends a message (see [`Node::send`](p2pcore::Node::send)); it leaves within one turn.
    pub fn send(
        &self,
        to: NodeId,
        channel: u8,
        bytes: impl Into<Bytes>,
        reliability: Reliability,
    ) -> Result<Option<u64>, HandleError> {
        let bytes = bytes.into();
        Ok(self.with(move |h| h.send(to, channel, bytes, reliability))??)
    }

    /// Dials `id` at `addr` (see [`Node::connect`](p2pcore::Node::connect)).
    pub fn connect(&self, id: NodeId, addr: SocketAddr) -> Result<(), HandleError> {
        Ok(self.with(move |h| h.connect(id, addr))??)
    }

    /// Closes the connection to `id` (see [`Node::disconnect`](p2pcore::Node::disconnect)).
    pub fn disconnect(&self, id: NodeId) -> Result<(), HandleError> {
        self.with(move |h| h.disconnect(id))
    }

    /// Sets the load a server reports (see [`Node::set_load`](p2pcore::Node::set_load)).
    pub fn set_load(&self, load: u32) -> Result<(), HandleError> {
        self.with(move |h| h.set_load(load))
    }

    /// Known peers (see [`Node::peers`](p2pcore::Node::peers)).
    pub fn peers(&self) -> Result<Vec<PeerInfo>, HandleError> {
        self.with(|h| h.node().peers())
    }

    /// Established connections (see [`Node::links`](p2pcore::Node::links)).
    pub fn links(&self) -> Result<Vec<LinkInfo>, HandleError> {
        self.with(|h| h.node().links().collect())
    }

    /// The Master as this node sees it (see [`Node::master`](p2pcore::Node::master)).
    pub fn master(&self) -> Result<MasterInfo, HandleError> {
        self.with(|h| h.node().master())
    }

    /// Known servers (see [`Node::servers`](p2pcore::Node::servers)).
    pub fn servers(&self) -> Result<Vec<ServerInfo>, HandleError> {
        self.with(|h| h.node().servers())
    }

    /// The node's counters.
    pub fn stats(&self) -> Result<NodeStats, HandleError> {
        self.with(|h| *h.node().stats())
    }

    /// The host's counters.
    pub fn host_stats(&self) -> Result<HostStats, HandleError> {
        self.with(|h| h.host_stats())
    }

    /// Whether `id` is connected now.
    pub fn is_connected(&self, id: NodeId) -> Result<bool, HandleError> {
        self.with(move |h| h.node().is_connected(&id))
    }

    /// Closes the node: tells connected nodes, waits for them to be told
    /// (at most [`HostConfig::close_timeout`](crate::HostConfig::close_timeout)),
    /// and ends the network thread. Later commands fail with
    /// [`HandleError::Stopped`]. Returns the thread's error if it failed
    /// before.
    pub fn close(&self) -> Result<(), HandleError> {
        self.inner.close()
    }
}
