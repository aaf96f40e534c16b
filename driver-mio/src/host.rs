//! [`Host`]: one [`Node`], one UDP socket, one mio `Poll`, and the loop that
//! joins them.
//!
//! One *turn* of the loop, in this order (the order the core's contract
//! asks for):
//!
//! 1. **receive a batch**: read the socket (recvmmsg, GRO) and feed every
//!    datagram to the node, until the socket is empty or the turn's bound
//!    ([`HostConfig::max_turn_datagrams`], [`HostConfig::max_turn_time`]) is
//!    reached — a flood then waits for the next turn instead of starving
//!    timers and the caller's frame;
//! 2. **timers**: `handle_timeout` when the node's deadline passed, and the
//!    periodic re-read of the interface addresses;
//! 3. **store Raft state** (servers with a store, see [`Host::bind_in`]):
//!    `poll_raft_write` until it is empty, the batches applied in one
//!    transaction of `raft.redb` and confirmed with `raft_written` — before
//!    any transmit, because the votes and acknowledgements the core then
//!    releases claim that state is on disk;
//! 4. **drain transmits**: `poll_transmit` until it is empty, sending each
//!    (GSO batches as one call); a full socket buffer (`WouldBlock`) keeps
//!    the transmit and stops the drain until the socket is writable;
//! 5. **drain events** into the host's queue, and read the next deadline;
//! 6. **sleep** (only when the caller allows waiting) until the earlier of
//!    the deadline, readiness of the socket and a wake-up.

use crate::DataDir;
use crate::local_addrs;
use crate::net::{Datagram, Out, RecvOutcome, SendOutcome, Socket};
use crate::raft_store::{RaftStore, RaftStoreError};
use bytes::Bytes;
use mio::{Events, Interest, Poll, Token, Waker};
use p2pcore::{
    Config, ConfigError, ConnectError, Event, Node, NodeId, RaftWrite, Reliability, Role, SendError,
};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);

/// How a [`Host`] uses its socket and paces its loop. Build it with
/// [`HostConfig::new`] and adjust the fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HostConfig {
    /// Address to bind: a specific IP, `0.0.0.0` (every IPv4 interface) or
    /// `[::]` (dual-stack: IPv6 and IPv4). Port 0 picks a free port.
    pub bind: SocketAddr,
    /// Send several datagrams per system call with UDP segmentation offload
    /// when the platform has it (quinn-udp finds out, and falls back by
    /// itself when the kernel refuses a batch). Turn it off for network
    /// cards or kernels whose GSO misbehaves. Default on.
    pub gso: bool,
    /// Most datagrams one turn reads before it runs timers and sends.
    /// Default 1024.
    pub max_turn_datagrams: usize,
    /// Most time one turn spends reading before it runs timers and sends.
    /// Default 2 ms.
    pub max_turn_time: Duration,
    /// How often the interface addresses are listed again, to notice a new
    /// Wi-Fi network or a cable plugged in (`None`: only at start). Listing
    /// costs one `getifaddrs`. Default 5 s.
    pub local_addrs_interval: Option<Duration>,
    /// How long [`Host::close`] (and the thread mode's close) drives the
    /// node after telling connected nodes, before giving up on the rest.
    /// Default 2 s.
    pub close_timeout: Duration,
    /// Socket receive buffer (`SO_RCVBUF`) to ask for; the operating system
    /// may grant less (Linux caps it at `net.core.rmem_max`). `None` keeps
    /// its default. Default 4 MiB, room for bursts between two turns.
    pub recv_buffer: Option<usize>,
    /// Socket send buffer (`SO_SNDBUF`), likewise. Default 4 MiB.
    pub send_buffer: Option<usize>,
    /// A server's Raft store ([`Host::bind_in`]) syncs every write to the
    /// disk before confirming it (redb's `Durability::Immediate`). Default
    /// on: a crash or power loss then never loses what the server told its
    /// group it stored. Off (`Durability::None`, plus a synced commit every
    /// 256 writes and at close) a write costs no fsync, but a crash of the
    /// process or the machine loses the writes since the last sync although
    /// the server had confirmed them — Raft's guarantees then hold only if
    /// fewer than a majority of servers crash at once and a server that
    /// crashed is wiped (its `raft.redb` removed) before it comes back. For
    /// tests, benchmarks and throwaway clusters.
    pub raft_fsync: bool,
}

impl HostConfig {
    /// Defaults for a host bound to `bind`.
    pub fn new(bind: SocketAddr) -> Self {
        Self {
            bind,
            gso: true,
            max_turn_datagrams: 1024,
            max_turn_time: Duration::from_millis(2),
            local_addrs_interval: Some(Duration::from_secs(5)),
            close_timeout: Duration::from_secs(2),
            recv_buffer: Some(4 << 20),
            send_buffer: Some(4 << 20),
            raft_fsync: true,
        }
    }
}

/// What went wrong in a host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The socket could not be set up.
    #[error("could not bind a UDP socket to {addr}: {source}{}", bind_hint(source))]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The node's configuration is invalid (the error names the setting).
    #[error("invalid node configuration: {0}")]
    Config(#[from] ConfigError),
    /// The operating system's event notification (epoll, kqueue, IOCP)
    /// failed.
    #[error("the event loop failed: {0}")]
    Poll(#[source] io::Error),
    /// The socket failed in a way that is not about one datagram (it was
    /// closed under the host, say).
    #[error("the UDP socket failed: {0}")]
    Socket(#[source] io::Error),
    /// The network thread could not be started.
    #[error("could not start the network thread: {0}")]
    Thread(#[source] io::Error),
    /// A server's Raft store (`raft.redb` in the data directory) could not
    /// be opened or read (the error says what to do).
    #[error(transparent)]
    RaftStore(#[from] RaftStoreError),
}

fn bind_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::AddrInUse => " (another process uses this port: stop it or choose another port)",
        io::ErrorKind::AddrNotAvailable => {
            " (no interface of this machine has that IP: bind 0.0.0.0 or [::] instead)"
        }
        io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges: choose a higher port)",
        _ => "",
    }
}

/// What the host itself did, beside the node's own [`p2pcore::NodeStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostStats {
    /// Turns of the loop.
    pub turns: u64,
    /// Turns that stopped reading at their bound with datagrams still
    /// waiting (a flood, or a very busy link).
    pub bounded_turns: u64,
    /// Receive system calls that returned data.
    pub recv_calls: u64,
    /// Datagrams received (after GRO batches were split).
    pub datagrams_received: u64,
    /// Send system calls that the kernel accepted.
    pub send_calls: u64,
    /// Sends that found the socket buffer full and waited for writability.
    pub send_blocked: u64,
    /// Transmits the kernel refused (unreachable, too large, ...): dropped,
    /// as UDP may; QUIC recovers.
    pub send_errors: u64,
    /// Receive errors that concern one datagram and were skipped (an ICMP
    /// "port unreachable" reported as a reset, on some platforms).
    pub recv_errors: u64,
    /// Times the interface addresses were found changed and handed to the
    /// node.
    pub local_addr_changes: u64,
    /// Times the loop slept (waited for the socket, a deadline or a wake-up
    /// with a non-zero timeout). `service(Duration::ZERO)` never adds one.
    pub sleeps: u64,
    /// Raft state batches stored and confirmed (servers with a store).
    pub raft_writes: u64,
    /// Transactions committed to the Raft store (one per drain: all the
    /// batches waiting go into one).
    pub raft_commits: u64,
    /// Raft store writes that failed. After the first the host confirms
    /// nothing more and the server's Raft stalls (it votes and acknowledges
    /// nothing) rather than claim state it did not store; see
    /// [`Host::raft_store_error`]. Restart the server once the cause (a full
    /// or failing disk) is fixed.
    pub raft_write_errors: u64,
}

/// Closes a [`Host`] from another thread (a signal handler's, say): the
/// loop starts closing at its next turn. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Closer {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

/// Ends a [`Host`]'s wait early, from any thread: a [`Host::service`] or
/// [`Host::run`] sleeping in its poll returns to its loop at once (and the
/// host's descriptor, see `Host::waitable`, turns readable). Cheap to clone; waking a host that is not waiting makes its
/// next wait return at once.
#[derive(Debug, Clone)]
pub struct Wakeup {
    waker: Arc<Waker>,
}

impl Wakeup {
    /// Wakes the host. Fails only if the operating system's wake-up
    /// primitive (an eventfd, a pipe) does.
    pub fn wake(&self) -> io::Result<()> {
        self.waker.wake()
    }
}

impl Closer {
    /// Asks the host to close and wakes its loop.
    pub fn close(&self) {
        self.flag.store(true, Ordering::Release);
        if let Err(e) = self.waker.wake() {
            tracing::warn!(error = %e, "waking the host to close failed");
        }
    }
}

/// One [`Node`] on one UDP socket, with the loop that drives it.
///
/// Drive it in one of three ways:
///
/// * [`Host::run`]: blocks until the node is closed (daemons);
/// * [`Host::service`]: one call per frame of a game loop, waiting at most
///   the time given; events are then taken with [`Host::poll_event`] or
///   [`Host::drain_events`];
/// * [`Host::spawn`]: on a thread of its own, commanded through a
///   [`Handle`](crate::Handle).
///
/// Commands ([`Host::send`], [`Host::connect`], ...) queue work for the next
/// turn; [`Host::flush`] sends it at once.
pub struct Host {
    node: Node,
    socket: Socket,
    poll: Poll,
    mio_events: Events,
    waker: Arc<Waker>,
    cfg: HostConfig,
    /// The buffer `poll_transmit` writes into; holds `pending`'s bytes.
    tx: Vec<u8>,
    /// A transmit the kernel had no room for, sent first when writable.
    pending: Option<Out>,
    /// The previous turn stopped reading at its bound: do not sleep.
    backlog: bool,
    /// The node's next deadline, as last read.
    deadline: Option<Instant>,
    events: VecDeque<Event>,
    rx: Vec<Datagram>,
    next_addr_check: Option<Instant>,
    local_addrs: Vec<SocketAddr>,
    stats: HostStats,
    close_flag: Arc<AtomicBool>,
    closing_since: Option<Instant>,
    /// The poll's descriptor was handed out ([`Host::waitable`]): `service`
    /// must consume the readiness it handles, or the descriptor would stay
    /// readable (mio is edge-triggered; only a poll clears the ready list).
    waitable: bool,
    /// A server's Raft store ([`Host::bind_in`]).
    raft: Option<RaftStore>,
    /// Batches taken from the node, reused between drains.
    raft_batches: Vec<RaftWrite>,
    /// The store's first write failure: nothing is confirmed after it.
    raft_error: Option<RaftStoreError>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("node", &self.node)
            .field("local_addr", &self.socket.local_addr())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// Binds the socket and creates the node.
    ///
    /// The host completes the configuration with what only it knows: the
    /// wall-clock time at start (`unix_time`, when unset), and for a server
    /// without `advertise` addresses, the address it is bound to (or, bound
    /// to a wildcard, its interface addresses). Set `advertise` yourself
    /// when the server is reached through a port forward or a public IP
    /// its interfaces do not have. Use [`crate::DataDir::config`] (or
    /// [`crate::os_seed`]) for the identity and seed.
    pub fn bind(host: HostConfig, config: Config) -> Result<Self, HostError> {
        Self::bind_with_store(host, config, None)
    }

    /// [`Host::bind`] for a node whose data directory is `dir` (take
    /// `config` from [`DataDir::config`]): a server keeps its Raft state,
    /// and with it the replicated store, in `raft.redb` there, and resumes
    /// from it after a restart. The file is opened and read whole into
    /// [`ClusterConfig::raft_disk`](p2pcore::ClusterConfig::raft_disk), and
    /// every turn stores what the node hands out before anything is sent
    /// (durability: [`HostConfig::raft_fsync`]). Keep `dir` open as long
    /// as the host lives: its lock keeps other processes out.
    ///
    /// A peer opens nothing (this is [`Host::bind`]). A server whose
    /// `raft_disk` the caller already set opens nothing either: the caller
    /// keeps the state, draining [`Node::poll_raft_write`] and confirming
    /// with [`Node::raft_written`] through [`Host::node_mut`].
    ///
    /// # Errors
    ///
    /// Besides [`Host::bind`]'s, [`HostError::RaftStore`] when the file is
    /// in use, damaged or unreadable; the message says what to do.
    pub fn bind_in(host: HostConfig, dir: &DataDir, mut config: Config) -> Result<Self, HostError> {
        let store = if config.identity.role() == Role::Server && config.cluster.raft_disk.is_none() {
            let (store, table) = RaftStore::open(dir.path(), host.raft_fsync)?;
            tracing::info!(path = %store.path().display(), keys = table.len(), "Raft store opened");
            config.cluster.raft_disk = Some(table);
            Some(store)
        } else {
            None
        };
        Self::bind_with_store(host, config, store)
    }

    fn bind_with_store(
        host: HostConfig,
        mut config: Config,
        raft: Option<RaftStore>,
    ) -> Result<Self, HostError> {
        let socket = Socket::bind(host.bind, host.gso, host.recv_buffer, host.send_buffer)
            .map_err(|source| HostError::Bind { addr: host.bind, source })?;
        let local = socket.local_addr();
        let local_addrs = local_addrs::discover(local, socket.dual_stack());
        crate::net::complete_config(&mut config, &local_addrs);
        let now = Instant::now();
        let mut node = Node::new(config, now)?;
        node.set_local_addrs(now, local_addrs.clone());
        Self::with_node(host, socket, node, local_addrs, now, raft)
    }

    fn with_node(
        cfg: HostConfig,
        mut socket: Socket,
        node: Node,
        local_addrs: Vec<SocketAddr>,
        now: Instant,
        raft: Option<RaftStore>,
    ) -> Result<Self, HostError> {
        let poll = Poll::new().map_err(HostError::Poll)?;
        poll.registry()
            .register(socket.mio(), SOCKET, Interest::READABLE | Interest::WRITABLE)
            .map_err(HostError::Poll)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(HostError::Poll)?);
        let mut host = Self {
            node,
            socket,
            poll,
            mio_events: Events::with_capacity(64),
            waker,
            next_addr_check: cfg.local_addrs_interval.and_then(|d| now.checked_add(d)),
            cfg,
            tx: Vec::with_capacity(64 * 1024),
            pending: None,
            backlog: false,
            deadline: None,
            events: VecDeque::with_capacity(256),
            rx: Vec::with_capacity(quinn_udp::BATCH_SIZE * 4),
            local_addrs,
            stats: HostStats::default(),
            close_flag: Arc::new(AtomicBool::new(false)),
            closing_since: None,
            waitable: false,
            raft,
            raft_batches: Vec::new(),
            raft_error: None,
        };
        // The node has work from its start (dials to bootstrap servers).
        host.drain();
        Ok(host)
    }

    // ----- queries -------------------------------------------------------

    /// The node, for queries (`peers`, `links`, `master`, `stats`, ...).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The node, for commands the host has no shortcut for. Pass
    /// `Instant::now()` as `now`; what they queue goes out at the next turn
    /// or [`Host::flush`].
    pub fn node_mut(&mut self) -> &mut Node {
        &mut self.node
    }

    /// This node's ID.
    pub fn id(&self) -> NodeId {
        self.node.id()
    }

    /// The address the socket is bound to (with the port picked, when 0 was
    /// asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr()
    }

    /// The interface addresses last handed to the node.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Datagrams one transmit may carry now (1 without GSO).
    pub fn gso_segments(&self) -> usize {
        self.socket.max_segments()
    }

    /// Datagrams one receive buffer may carry (1 without GRO).
    pub fn gro_segments(&self) -> usize {
        self.socket.gro_segments()
    }

    /// The host's own counters.
    pub fn host_stats(&self) -> HostStats {
        self.stats
    }

    /// The Raft store's first write failure, if one happened (see
    /// [`HostStats::raft_write_errors`]): the server's Raft stalls from then
    /// on; restart it once the cause is fixed.
    pub fn raft_store_error(&self) -> Option<&RaftStoreError> {
        self.raft_error.as_ref()
    }

    /// The Raft store's file, for a server bound with [`Host::bind_in`].
    pub fn raft_store_path(&self) -> Option<&std::path::Path> {
        self.raft.as_ref().map(RaftStore::path)
    }

    /// True once the node finished closing (or the close timed out).
    pub fn is_closed(&self) -> bool {
        self.node.is_closed() || self.close_expired(Instant::now())
    }

    /// A handle that closes this host from another thread.
    pub fn closer(&self) -> Closer {
        Closer { flag: self.close_flag.clone(), waker: self.waker.clone() }
    }

    /// The host's event-loop descriptor (epoll on Linux, kqueue on the BSDs
    /// and Apple platforms), for a caller that waits in its own loop (`poll`,
    /// `select`, an engine's reactor) rather than in [`Host::service`]: it
    /// turns readable when the host has work (a datagram arrived, a
    /// [`Wakeup`] fired). Wait on it for at most the time to
    /// [`Host::next_turn`], then call `service(Duration::ZERO)`, which from
    /// now on also clears the readiness it handled. Only wait for
    /// readability: never read from, close or register anything on it.
    #[cfg(unix)]
    pub fn waitable(&mut self) -> std::os::fd::RawFd {
        self.waitable = true;
        std::os::fd::AsRawFd::as_raw_fd(&self.poll)
    }

    /// A handle that ends this host's waits early, from any thread.
    pub fn wakeup(&self) -> Wakeup {
        Wakeup { waker: self.waker.clone() }
    }

    /// When the host next needs a turn if nothing arrives on its socket:
    /// now when it has queued events or a backlog (a turn stopped at its
    /// bound, or a transmit waits for room), else the earlier of the node's
    /// deadline, the next interface re-read and, while closing, the close
    /// timeout; `None` when nothing is scheduled. For callers that wait in
    /// their own loop (on [`Host::waitable`]) rather than in
    /// [`Host::service`].
    pub fn next_turn(&self) -> Option<Instant> {
        if self.backlog || !self.events.is_empty() {
            return Some(Instant::now());
        }
        let deadline = if self.pending.is_some() { None } else { self.deadline };
        let closing = self.closing_since.map(|t| t + self.cfg.close_timeout);
        [deadline, self.next_addr_check, closing].into_iter().flatten().min()
    }

    pub(crate) fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// The last turn stopped reading at its bound: the next must not wait.
    pub(crate) fn has_backlog(&self) -> bool {
        self.backlog
    }

    pub(crate) fn close_timeout(&self) -> Duration {
        self.cfg.close_timeout
    }

    // ----- commands ------------------------------------------------------

    /// Sends `bytes` to `to` (see [`Node::send`]): queued for the next turn
    /// or [`Host::flush`].
    pub fn send(
        &mut self,
        to: NodeId,
        channel: u8,
        bytes: impl Into<Bytes>,
        reliability: Reliability,
    ) -> Result<Option<u64>, SendError> {
        self.node.send(Instant::now(), to, channel, bytes, reliability)
    }

    /// Dials `id` at `addr` (see [`Node::connect`]).
    pub fn connect(&mut self, id: NodeId, addr: SocketAddr) -> Result<(), ConnectError> {
        self.node.connect(Instant::now(), id, addr)
    }

    /// Closes the connection to `id` (see [`Node::disconnect`]).
    pub fn disconnect(&mut self, id: NodeId) {
        self.node.disconnect(Instant::now(), id);
    }

    /// Sets the load a server reports (see [`Node::set_load`]).
    pub fn set_load(&mut self, load: u32) {
        self.node.set_load(Instant::now(), load);
    }

    /// Starts closing without waiting: tells connected nodes; keep driving
    /// ([`Host::service`]) until [`Host::is_closed`]. [`Host::close`] does
    /// both.
    pub fn start_close(&mut self) {
        if self.closing_since.is_none() {
            let now = Instant::now();
            self.closing_since = Some(now);
            self.node.close(now);
        }
    }

    /// Closes the node: tells every connected node and drives the loop
    /// until they are told, for at most [`HostConfig::close_timeout`].
    /// Events that arrive meanwhile stay queued for [`Host::poll_event`].
    pub fn close(&mut self) -> Result<(), HostError> {
        self.start_close();
        while !self.is_closed() {
            let limit = self.closing_since.map(|t| t + self.cfg.close_timeout);
            self.turn()?;
            if !self.is_closed() {
                self.wait(limit)?;
            }
        }
        Ok(())
    }

    // ----- events --------------------------------------------------------

    /// The next event, if one waits.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Moves every waiting event to the end of `out` (no allocation when
    /// `out` has room).
    pub fn drain_events(&mut self, out: &mut Vec<Event>) {
        out.extend(self.events.drain(..));
    }

    /// Events waiting.
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    // ----- driving -------------------------------------------------------

    /// For a game loop: handles everything ready now, then waits for more
    /// for at most `max_wait` in total (the whole call, not per event) and
    /// returns as soon as events wait, or a [`Wakeup`] (or [`Closer`]) fires.
    /// `Duration::ZERO` never blocks: one turn and back. In steady state a call allocates nothing (received
    /// datagrams are copied into a reused arena; events go to a reused
    /// queue).
    pub fn service(&mut self, max_wait: Duration) -> Result<(), HostError> {
        let end = Instant::now().checked_add(max_wait);
        if self.waitable {
            // Clear the readiness the turn below handles (one epoll_wait).
            if let Err(e) = self.poll.poll(&mut self.mio_events, Some(Duration::ZERO))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(HostError::Poll(e));
            }
        }
        loop {
            self.turn()?;
            if !self.events.is_empty() || self.is_closed() {
                return Ok(());
            }
            if end.is_none_or(|end| Instant::now() < end) {
                if !self.backlog && self.wait(end)? {
                    // A Wakeup (or a Closer): the caller wants control back.
                    self.turn()?;
                    return Ok(());
                }
            } else {
                return Ok(());
            }
        }
    }

    /// For daemons: drives the node until it is closed — by
    /// [`Host::start_close`] from `on_event`, or by a [`Closer`] from another
    /// thread — handing every event to `on_event` as it comes.
    pub fn run(&mut self, mut on_event: impl FnMut(&mut Host, Event)) -> Result<(), HostError> {
        loop {
            self.turn()?;
            while let Some(e) = self.events.pop_front() {
                on_event(self, e);
            }
            if self.is_closed() {
                return Ok(());
            }
            let limit = self.closing_since.map(|t| t + self.cfg.close_timeout);
            if !self.backlog {
                self.wait(limit)?;
            }
        }
    }

    /// Sends what the node has queued now, without reading or waiting (after
    /// commands, when the next turn is too far away).
    pub fn flush(&mut self) {
        self.drain();
    }

    /// One turn: receive a bounded batch, timers, drain transmits and
    /// events (see the module docs).
    pub(crate) fn turn(&mut self) -> Result<(), HostError> {
        self.stats.turns += 1;
        if self.close_flag.swap(false, Ordering::AcqRel) {
            self.start_close();
        }
        self.receive()?;
        let now = Instant::now();
        if self.deadline.is_some_and(|d| d <= now) {
            self.node.handle_timeout(now);
        }
        if self.next_addr_check.is_some_and(|t| t <= now) {
            self.check_local_addrs(now);
        }
        self.drain();
        Ok(())
    }

    /// Reads until the socket is empty or the turn's bound is reached.
    fn receive(&mut self) -> Result<(), HostError> {
        let start = Instant::now();
        let mut count = 0;
        self.backlog = false;
        loop {
            if count >= self.cfg.max_turn_datagrams || start.elapsed() >= self.cfg.max_turn_time {
                self.backlog = true;
                self.stats.bounded_turns += 1;
                return Ok(());
            }
            self.rx.clear();
            match self.socket.recv(&mut self.rx) {
                RecvOutcome::Received(n) => {
                    self.stats.recv_calls += 1;
                    self.stats.datagrams_received += n as u64;
                    count += n;
                    let now = Instant::now();
                    for d in self.rx.drain(..) {
                        self.node.handle_datagram(now, d.remote, d.local, d.ecn, d.data);
                    }
                }
                RecvOutcome::Drained => return Ok(()),
                RecvOutcome::Retry => {}
                RecvOutcome::Skipped(_) => self.stats.recv_errors += 1,
                RecvOutcome::Failed(e) => return Err(HostError::Socket(e)),
            }
        }
    }

    /// Stores Raft state, drains transmits, then (if none is left waiting
    /// for the socket) events, and reads the next deadline.
    fn drain(&mut self) {
        self.store_raft();
        if let Some(out) = self.pending {
            match self.socket.send(&out, &self.tx) {
                SendOutcome::WouldBlock => return,
                outcome => {
                    self.count(outcome);
                    self.pending = None;
                }
            }
        }
        loop {
            let max = self.socket.max_segments();
            let Some(t) = self.node.poll_transmit(max, &mut self.tx) else { break };
            let out = Out::from(t);
            match self.socket.send(&out, &self.tx) {
                SendOutcome::WouldBlock => {
                    // The core's drain order: no events or deadline until
                    // this transmit is out; the socket's writability (or the
                    // next turn) resumes the drain.
                    self.stats.send_blocked += 1;
                    self.pending = Some(out);
                    return;
                }
                outcome => self.count(outcome),
            }
        }
        while let Some(e) = self.node.poll_event() {
            self.events.push_back(e);
        }
        self.deadline = self.node.poll_timeout();
    }

    /// Stores what the node hands out for its Raft state and confirms it,
    /// until it hands out nothing more (a confirmation may release work that
    /// writes again). Every batch waiting goes into one transaction.
    fn store_raft(&mut self) {
        let Some(store) = &mut self.raft else { return };
        loop {
            self.raft_batches.clear();
            while let Some(w) = self.node.poll_raft_write() {
                self.raft_batches.push(w);
            }
            let Some(last) = self.raft_batches.last().map(|w| w.seq) else { return };
            if self.raft_error.is_some() {
                // Stalled: later batches cannot be stored before the failed
                // one, and none may be confirmed. Dropped, not kept.
                return;
            }
            match store.write(&self.raft_batches) {
                Ok(()) => {
                    self.stats.raft_commits += 1;
                    self.stats.raft_writes += self.raft_batches.len() as u64;
                    self.node.raft_written(Instant::now(), last);
                }
                Err(e) => {
                    self.stats.raft_write_errors += 1;
                    tracing::error!(
                        error = %e,
                        "could not store Raft state: this server stops voting and acknowledging until it \
                         is restarted; the cluster carries on without it if a majority is healthy"
                    );
                    self.raft_error = Some(e);
                    return;
                }
            }
        }
    }

    fn count(&mut self, outcome: SendOutcome) {
        match outcome {
            SendOutcome::Sent => self.stats.send_calls += 1,
            SendOutcome::WouldBlock => self.stats.send_blocked += 1,
            SendOutcome::Dropped(e) => {
                self.stats.send_errors += 1;
                tracing::debug!(error = %e, "a datagram was refused by the kernel and dropped");
            }
        }
    }

    fn check_local_addrs(&mut self, now: Instant) {
        self.next_addr_check = self.cfg.local_addrs_interval.and_then(|d| now.checked_add(d));
        let addrs = local_addrs::discover(self.socket.local_addr(), self.socket.dual_stack());
        if addrs != self.local_addrs {
            tracing::info!(?addrs, "interface addresses changed");
            self.stats.local_addr_changes += 1;
            self.local_addrs.clone_from(&addrs);
            self.node.set_local_addrs(now, addrs);
        }
    }

    fn close_expired(&self, now: Instant) -> bool {
        self.closing_since.is_some_and(|t| now.saturating_duration_since(t) >= self.cfg.close_timeout)
    }

    /// Sleeps until the node's deadline, `limit`, the next address check,
    /// the socket becoming ready or a wake-up, whichever is first. True when
    /// a wake-up ended it.
    pub(crate) fn wait(&mut self, limit: Option<Instant>) -> Result<bool, HostError> {
        let now = Instant::now();
        let mut until = limit;
        // With a transmit waiting for room, the deadline read before it is
        // stale (and nothing could be sent at it anyway): the socket's
        // writability ends the wait.
        let deadline = if self.pending.is_some() { None } else { self.deadline };
        for t in [deadline, self.next_addr_check].into_iter().flatten() {
            until = Some(until.map_or(t, |u| u.min(t)));
        }
        let timeout = until.map(|t| t.saturating_duration_since(now));
        if timeout != Some(Duration::ZERO) {
            self.stats.sleeps += 1;
        }
        match self.poll.poll(&mut self.mio_events, timeout) {
            Ok(()) => Ok(self.mio_events.iter().any(|e| e.token() == WAKER)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(HostError::Poll(e)),
        }
    }
}
