//! [`Endpoint`], its configuration, errors and the values its methods
//! return; the state every handle shares with the driver task.

use crate::coord::CoordSlot;
use crate::driver::{self, Setup};
use crate::inbox::Inbox;
use crate::kv::{AnswerSlot, WatchSlot};
use crate::peer::{PathView, Peer};
use bytes::Bytes;
use p2pcore::{
    Config, ConfigError, ConnectError, Event, LinkInfo, LinkRow, LookupError, LookupKey, MasterBasis, Node,
    NodeId, NodeStats, PeerInfo, Reliability, Role, SendError, ServerInfo,
};
use p2pcore_mio::net::{self, UdpBatch, UdpSockRef};
use p2pcore_mio::{DataDir, HostConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use std::{fmt, io};
use tokio::sync::{Notify, broadcast, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

/// How an [`Endpoint`] uses its socket and holds what it received. Build it
/// with [`EndpointConfig::new`] and adjust the fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EndpointConfig {
    /// The socket and the loop's pacing, as for the mio host: the bind
    /// address, GSO, the bounds of one turn, the interface re-read interval,
    /// the close timeout ([`Endpoint::close`] and dropping every handle
    /// keep driving the node at most that long) and the socket buffers.
    pub host: HostConfig,
    /// Bytes of received messages held for the application per sender.
    /// Over it, the endpoint stops reading that sender's messages (they
    /// wait in QUIC, whose flow control stops the sender, whose
    /// [`Endpoint::send_wait`] then waits) and drops its unreliable ones,
    /// until the application took half of it. Default 1 MiB.
    pub inbox_per_peer: usize,
    /// The same bound for all senders together. Default 64 MiB.
    pub inbox_total: usize,
    /// Events [`Endpoint::events`] holds for its slowest reader before that
    /// reader gets [`Lagged`]. Each may be a received message, so this
    /// times the largest message bounds the stream's memory. Default 1024.
    pub event_capacity: usize,
}

impl EndpointConfig {
    /// Defaults for an endpoint bound to `bind`.
    pub fn new(bind: SocketAddr) -> Self {
        Self {
            host: HostConfig::new(bind),
            inbox_per_peer: 1 << 20,
            inbox_total: 64 << 20,
            event_capacity: 1024,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |setting: &'static str, problem: &'static str| Err(Error::Endpoint { setting, problem });
        if self.host.max_turn_datagrams == 0 {
            return bad("host.max_turn_datagrams", "must be at least 1");
        }
        if self.event_capacity == 0 || self.event_capacity > usize::MAX / 2 {
            return bad("event_capacity", "must be at least 1 (and at most usize::MAX / 2)");
        }
        if self.inbox_per_peer == 0 || self.inbox_total == 0 {
            return bad("inbox_per_peer / inbox_total", "must be at least 1 byte");
        }
        if self.host.close_timeout > Duration::from_secs(3600) {
            return bad("host.close_timeout", "must be at most an hour");
        }
        Ok(())
    }
}

/// Why an endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Called outside a tokio runtime: the driver needs one to run on.
    #[error(
        "p2pcore-tokio needs a tokio runtime: call it from within one (#[tokio::main], Runtime::block_on or a spawned task) with IO and time enabled"
    )]
    NoRuntime,
    /// The socket could not be set up.
    #[error("could not bind a UDP socket to {addr}: {source}")]
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
    /// The endpoint's own configuration is invalid.
    #[error("invalid endpoint configuration: {setting} {problem}")]
    Endpoint {
        /// The [`EndpointConfig`] field.
        setting: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The data directory could not give an identity.
    #[error(transparent)]
    DataDir(#[from] p2pcore_mio::DataDirError),
    /// The socket failed while being set up for batched I/O.
    #[error("the UDP socket failed: {0}")]
    Socket(#[source] io::Error),
}

/// A message received from another node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// Who sent it.
    pub from: NodeId,
    /// The channel it was sent on.
    pub channel: u8,
    /// Its bytes.
    pub bytes: Bytes,
    /// How it was sent.
    pub reliability: Reliability,
}

/// The Master as this endpoint sees it (see [`p2pcore::MasterInfo`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MasterView {
    /// The Master, if there is one.
    pub master: Option<NodeId>,
    /// Its name, when the server list has it.
    pub name: Option<String>,
    /// Why it is Master (only `Raft` is partition-safe).
    pub basis: Option<MasterBasis>,
    /// The Raft term (basis `Raft`; 0 otherwise).
    pub term: u64,
    /// The Raft group (basis `Raft`; 0 otherwise); `(epoch, term)` is a
    /// fencing token.
    pub epoch: u64,
}

impl MasterView {
    pub(crate) fn of(node: &Node) -> Self {
        let m = node.master();
        let name = m.master.and_then(|id| node.servers().into_iter().find(|s| s.id == id).map(|s| s.name));
        Self { master: m.master, name, basis: m.basis, term: m.term, epoch: m.epoch }
    }
}

/// Why an endpoint ended.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CloseReason {
    /// [`Endpoint::close`] was called.
    Closed,
    /// Every handle was dropped without closing.
    Dropped,
    /// The runtime the driver task ran on shut down.
    RuntimeShutdown,
    /// The socket failed (it was closed under the endpoint, say).
    Failed(Arc<io::Error>),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Closed => f.write_str("closed"),
            CloseReason::Dropped => f.write_str("every handle was dropped"),
            CloseReason::RuntimeShutdown => f.write_str("the tokio runtime shut down"),
            CloseReason::Failed(e) => write!(f, "the UDP socket failed: {e}"),
        }
    }
}

impl std::error::Error for CloseReason {}

/// What the driver task did, beside the node's own [`NodeStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverStats {
    /// Turns of the driver's loop.
    pub turns: u64,
    /// Turns that stopped reading at their bound with datagrams waiting.
    pub bounded_turns: u64,
    /// Receive system calls that returned data.
    pub recv_calls: u64,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Send system calls the kernel accepted.
    pub send_calls: u64,
    /// Sends that found the socket buffer full and waited for writability.
    pub send_blocked: u64,
    /// Transmits the kernel refused (dropped, as UDP may).
    pub send_errors: u64,
    /// Receive errors about one datagram, skipped.
    pub recv_errors: u64,
    /// Times the interface addresses changed.
    pub local_addr_changes: u64,
    /// Unreliable messages dropped because their sender was over
    /// [`EndpointConfig::inbox_per_peer`].
    pub messages_dropped: u64,
    /// Times a sender was paused because the application fell behind.
    pub receive_pauses: u64,
}

/// A reader of [`Endpoint::events`] fell behind by `missed` events, which
/// it will not see; the next ones follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the event stream lagged: {missed} events were missed")]
pub struct Lagged {
    /// Events dropped for this reader.
    pub missed: u64,
}

/// Every core event in order ([`Endpoint::events`]); a `Stream` of
/// `Result<Event, Lagged>` that ends when the endpoint does.
#[derive(Debug)]
pub struct Events {
    inner: BroadcastStream<Event>,
}

impl Events {
    fn new(rx: broadcast::Receiver<Event>) -> Self {
        Self { inner: BroadcastStream::new(rx) }
    }

    /// The next event, [`Lagged`] when events were missed, `None` once the
    /// endpoint ended. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Result<Event, Lagged>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for Events {
    type Item = Result<Event, Lagged>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner)
            .poll_next(cx)
            .map(|item| item.map(|r| r.map_err(|BroadcastStreamRecvError::Lagged(missed)| Lagged { missed })))
    }
}

/// The senders of the watchers and of the event stream: dropped when the
/// endpoint ends, which ends every watcher and stream.
pub(crate) struct Watchers {
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) master: watch::Sender<MasterView>,
    pub(crate) servers: watch::Sender<Vec<ServerInfo>>,
    pub(crate) network: watch::Sender<bool>,
    pub(crate) online: watch::Sender<bool>,
}

/// What the handles and the driver share, under one lock.
pub(crate) struct State {
    pub(crate) node: Node,
    pub(crate) inbox: Inbox,
    /// Path watchers per peer; removed when the peer goes offline.
    pub(crate) paths: BTreeMap<NodeId, watch::Sender<Option<PathView>>>,
    /// Store requests a future waits for, by the core's request id.
    pub(crate) kv: BTreeMap<u64, AnswerSlot>,
    /// Live [`crate::KvWatch`] handles, by the core's watch id.
    pub(crate) kv_watches: BTreeMap<u64, WatchSlot>,
    /// Running coordination requests a future or handle follows, by the
    /// core's request id.
    pub(crate) coord: BTreeMap<u64, CoordSlot>,
    /// Directory lookups a future waits for, by the core's query number.
    pub(crate) lookups: BTreeMap<u64, tokio::sync::oneshot::Sender<Vec<PeerInfo>>>,
    pub(crate) watchers: Option<Watchers>,
    pub(crate) ended: Option<CloseReason>,
    pub(crate) close_requested: bool,
    /// Every handle is gone.
    pub(crate) dropped: bool,
    pub(crate) stats: DriverStats,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the driver: a handle queued work. `notify_one` keeps a permit
    /// when the driver is busy, so no wake-up is lost.
    pub(crate) wake: Notify,
    /// Some destination's send buffer has room again.
    pub(crate) send_ready: Notify,
    /// The merged queue got messages.
    pub(crate) merged_ready: Notify,
    pub(crate) closed: watch::Sender<Option<CloseReason>>,
    id: NodeId,
    name: String,
    local_addr: SocketAddr,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while locked is a bug elsewhere; the state itself stays
        // consistent between the node's calls, so keep serving.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Held by every handle that keeps the endpoint alive; the last one's drop
/// starts the close in the background.
struct Alive(Arc<Shared>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.lock().dropped = true;
        self.0.wake.notify_one();
    }
}

/// One p2pcore node on one UDP socket, driven by one tokio task.
///
/// Cheap to clone: clones are handles to the same node. The endpoint lives
/// while a clone or a [`Peer`] handle does (the watchers and the event
/// stream do not keep it alive); when the last goes without
/// [`Endpoint::close`], it is closed best-effort in the background.
#[derive(Clone)]
pub struct Endpoint {
    shared: Arc<Shared>,
    _alive: Arc<Alive>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.shared.id)
            .field("name", &self.shared.name)
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Binds the socket, creates the node and spawns its driver task on the
    /// current runtime (which needs IO and time enabled).
    ///
    /// As the mio host does, it completes the configuration with the
    /// wall-clock time at start and, for a server without `advertise`
    /// addresses, the bound or interface addresses. Outside a runtime it
    /// returns [`Error::NoRuntime`]. Cancel-safe (it does not wait on
    /// anything).
    pub async fn bind(endpoint: EndpointConfig, config: Config) -> Result<Self, Error> {
        Self::start(endpoint, config, None)
    }

    /// Like [`Endpoint::bind`], with the identity kept in `dir` (see
    /// [`DataDir`]): the node is named `name`, `adjust` sets the rest of its
    /// configuration (bootstrap servers, say), and the directory stays
    /// locked until the endpoint ends.
    pub async fn from_data_dir(
        endpoint: EndpointConfig,
        dir: DataDir,
        name: impl Into<String>,
        adjust: impl FnOnce(&mut Config),
    ) -> Result<Self, Error> {
        let mut config = dir.config(name)?;
        adjust(&mut config);
        Self::start(endpoint, config, Some(dir))
    }

    fn start(cfg: EndpointConfig, mut config: Config, dir: Option<DataDir>) -> Result<Self, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        cfg.validate()?;
        let host = &cfg.host;
        let std_socket = net::bind(host.bind, host.recv_buffer, host.send_buffer)
            .map_err(|source| Error::Bind { addr: host.bind, source })?;
        let dual_stack = net::is_dual_stack(&std_socket);
        let local = std_socket.local_addr().map_err(Error::Socket)?;
        let socket = tokio::net::UdpSocket::from_std(std_socket).map_err(Error::Socket)?;
        let batch =
            UdpBatch::new(UdpSockRef::from(&socket), local.is_ipv6(), host.gso).map_err(Error::Socket)?;
        let local_addrs = net::local_addrs(local, dual_stack);
        net::complete_config(&mut config, &local_addrs);
        let inbox = Inbox::new(cfg.inbox_per_peer, cfg.inbox_total);
        let now = Instant::now();
        let mut node = Node::new(config, now)?;
        node.set_local_addrs(now, local_addrs.clone());
        let watchers = Watchers {
            events: broadcast::channel(cfg.event_capacity).0,
            master: watch::channel(MasterView::of(&node)).0,
            servers: watch::channel(node.servers()).0,
            network: watch::channel(node.network_up()).0,
            online: watch::channel(node.network_up() && node.directory_synced()).0,
        };
        let shared = Arc::new(Shared {
            id: node.id(),
            name: node.name().to_owned(),
            local_addr: local,
            state: Mutex::new(State {
                node,
                inbox,
                paths: BTreeMap::new(),
                kv: BTreeMap::new(),
                kv_watches: BTreeMap::new(),
                coord: BTreeMap::new(),
                lookups: BTreeMap::new(),
                watchers: Some(watchers),
                ended: None,
                close_requested: false,
                dropped: false,
                stats: DriverStats::default(),
            }),
            wake: Notify::new(),
            send_ready: Notify::new(),
            merged_ready: Notify::new(),
            closed: watch::channel(None).0,
        });
        let setup = Setup { socket, batch, cfg, local, dual_stack, local_addrs, dir };
        runtime.spawn(driver::run(shared.clone(), setup));
        Ok(Self { _alive: Arc::new(Alive(shared.clone())), shared })
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The shared state, for handles that must not keep the endpoint
    /// alive ([`crate::KvWatch`]).
    pub(crate) fn shared_arc(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    // ----- identity ------------------------------------------------------

    /// This node's ID.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Server or peer.
    pub fn role(&self) -> Role {
        self.shared.id.role()
    }

    /// The address the socket is bound to (with the port picked).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    // ----- sending -------------------------------------------------------

    /// Sends `bytes` to `to` on `channel` (see [`Node::send`] for the
    /// delivery guarantees); fails at once with the core's error, for
    /// example [`SendError::BufferFull`] when `to`'s send buffer is full.
    /// Returns the sequence number of a reliable message. After the endpoint
    /// ended: [`SendError::ShuttingDown`].
    pub fn send(
        &self,
        to: NodeId,
        channel: u8,
        bytes: impl Into<Bytes>,
        reliability: Reliability,
    ) -> Result<Option<u64>, SendError> {
        self.command(|node, now| {
            node.map_or(Err(SendError::ShuttingDown), |n| n.send(now, to, channel, bytes, reliability))
        })
    }

    /// Runs a command on the node (`None` once the endpoint ended: nothing
    /// would send what it queues) and wakes the driver to send what it
    /// queued.
    fn command<R>(&self, f: impl FnOnce(Option<&mut Node>, Instant) -> R) -> R {
        let result = {
            let mut st = self.shared.lock();
            let st = &mut *st;
            f(st.ended.is_none().then_some(&mut st.node), Instant::now())
        };
        self.shared.wake.notify_one();
        result
    }

    /// Like [`Endpoint::send`], but waits while `to`'s send buffer is full
    /// (back-pressure) instead of failing; every other error comes back at
    /// once.
    ///
    /// Cancel-safe: the message is handed to the node in one step, so a
    /// dropped future has sent all of it or nothing.
    pub async fn send_wait(
        &self,
        to: NodeId,
        channel: u8,
        bytes: impl Into<Bytes>,
        reliability: Reliability,
    ) -> Result<Option<u64>, SendError> {
        let bytes = bytes.into();
        loop {
            // Registered before trying, so a SendReady between the failed
            // try and the wait is not missed.
            let mut ready = pin!(self.shared.send_ready.notified());
            ready.as_mut().enable();
            match self.send(to, channel, bytes.clone(), reliability) {
                Err(SendError::BufferFull { .. }) => ready.await,
                result => return result,
            }
        }
    }

    // ----- receiving -----------------------------------------------------

    /// The next message from anyone (except the channels a [`Peer`] handle
    /// receives itself), or `None` once the endpoint ended and nothing is
    /// left. Cancel-safe.
    pub async fn recv(&self) -> Option<Message> {
        loop {
            let mut ready = pin!(self.shared.merged_ready.notified());
            ready.as_mut().enable();
            if let Some(got) = self.take(Inbox::pop_merged) {
                return got;
            }
            ready.await;
        }
    }

    /// The next message from anyone, if one waits.
    pub fn try_recv(&self) -> Option<Message> {
        self.take(Inbox::pop_merged).flatten()
    }

    /// Takes a message with `pop`: `Some(Some(m))` got one, `Some(None)` the
    /// endpoint ended with nothing left, `None` nothing yet. Resumes the
    /// senders the inbox has room for again.
    pub(crate) fn take(
        &self,
        pop: impl FnOnce(&mut Inbox, &mut Vec<NodeId>) -> Option<Message>,
    ) -> Option<Option<Message>> {
        let mut resume = Vec::new();
        let got = {
            let mut guard = self.shared.lock();
            let st = &mut *guard;
            let m = pop(&mut st.inbox, &mut resume);
            let now = Instant::now();
            for id in &resume {
                st.node.pause_receiving(now, *id, false);
            }
            match m {
                Some(m) => Some(Some(m)),
                None if st.ended.is_some() => Some(None),
                None => None,
            }
        };
        if !resume.is_empty() {
            self.shared.wake.notify_one();
        }
        got
    }

    /// A handle on one peer (or server): its own receive queue per channel,
    /// its path, sends. Keeps the endpoint alive.
    pub fn peer(&self, id: NodeId) -> Peer {
        Peer::new(self.clone(), id)
    }

    // ----- state ---------------------------------------------------------

    /// Resolves once this node is part of the network: for a peer, a server
    /// is connected and its directory arrived (servers and peers without
    /// servers: at once). Resolves again at once while that holds; after
    /// [`Event::NetworkDown`] it waits for the next server. `Err` if the
    /// endpoint ended first. Cancel-safe.
    pub async fn online(&self) -> Result<(), CloseReason> {
        let rx = self.shared.lock().watchers.as_ref().map(|w| w.online.subscribe());
        if let Some(mut rx) = rx
            && rx.wait_for(|up| *up).await.is_ok()
        {
            return Ok(());
        }
        Err(self.closed().await)
    }

    /// The Master as this node sees it now.
    pub fn master(&self) -> MasterView {
        MasterView::of(&self.shared.lock().node)
    }

    /// Watches the Master: the receiver sees every change (the latest, if
    /// several happened since it last looked) and ends with the endpoint.
    pub fn master_watch(&self) -> watch::Receiver<MasterView> {
        self.subscribe(|w| &w.master, MasterView::of)
    }

    /// The servers this node knows (see [`Node::servers`]).
    pub fn servers(&self) -> Vec<ServerInfo> {
        self.shared.lock().node.servers()
    }

    /// Watches the server list (it changes when a server comes or goes, or
    /// the Master changes).
    pub fn servers_watch(&self) -> watch::Receiver<Vec<ServerInfo>> {
        self.subscribe(|w| &w.servers, Node::servers)
    }

    /// Whether a server is connected (see [`Node::network_up`]).
    pub fn network_up(&self) -> bool {
        self.shared.lock().node.network_up()
    }

    /// Watches [`Endpoint::network_up`].
    pub fn network_watch(&self) -> watch::Receiver<bool> {
        self.subscribe(|w| &w.network, Node::network_up)
    }

    fn subscribe<T: Clone>(
        &self,
        sender: impl FnOnce(&Watchers) -> &watch::Sender<T>,
        now: impl FnOnce(&Node) -> T,
    ) -> watch::Receiver<T> {
        let st = self.shared.lock();
        match &st.watchers {
            Some(w) => sender(w).subscribe(),
            // Ended: a receiver whose sender is gone, holding the last value.
            None => watch::channel(now(&st.node)).1,
        }
    }

    /// Every core event in order, from now on (messages included; they are
    /// also queued for [`Endpoint::recv`]). A reader that falls more than
    /// [`EndpointConfig::event_capacity`] behind gets [`Lagged`]. Ends with
    /// the endpoint.
    pub fn events(&self) -> Events {
        let st = self.shared.lock();
        match &st.watchers {
            Some(w) => Events::new(w.events.subscribe()),
            None => Events::new(broadcast::channel(1).0.subscribe()),
        }
    }

    /// Peers online in the directory (in lookup mode: the ones looked up
    /// and found so far).
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.shared.lock().node.peers()
    }

    /// Finds peers by ID or name ([`Node::lookup`]): in lookup mode
    /// ([`p2pcore::DirectoryMode::Lookup`]) the servers are asked and keep
    /// this node told of the peers found; in full mode the directory
    /// answers at once. Resolves to the peers found (empty: none).
    ///
    /// Fails at once with [`LookupError::NotAPeer`] on a server,
    /// [`LookupError::NetworkDown`] with no server linked (or when the
    /// endpoint ends before the answer), [`LookupError::NameTooLong`] for a
    /// name no node can have. Dropping the future loses nothing.
    pub async fn lookup(&self, key: LookupKey) -> Result<Vec<PeerInfo>, LookupError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut st = self.shared.lock();
            if st.ended.is_some() {
                return Err(LookupError::NetworkDown);
            }
            let query = st.node.lookup(Instant::now(), key)?;
            st.lookups.insert(query, tx);
        }
        self.shared.wake.notify_one();
        // Every lookup is answered (a dropped future's slot goes with the
        // answer); the endpoint's end drops the slots.
        rx.await.map_err(|_| LookupError::NetworkDown)
    }

    /// The established connections.
    pub fn links(&self) -> Vec<LinkInfo> {
        self.shared.lock().node.links().collect()
    }

    /// How this node reaches each linked peer (peers only).
    pub fn link_table(&self) -> Vec<LinkRow> {
        self.shared.lock().node.link_table()
    }

    /// The node's traffic and drop counters.
    pub fn stats(&self) -> NodeStats {
        *self.shared.lock().node.stats()
    }

    /// The driver's counters.
    pub fn driver_stats(&self) -> DriverStats {
        self.shared.lock().stats
    }

    /// Messages waiting to be received, in every queue.
    pub fn pending_messages(&self) -> usize {
        self.shared.lock().inbox.len()
    }

    /// Bytes of messages waiting to be received, in every queue (bounded
    /// by [`EndpointConfig::inbox_total`] plus the messages in flight when
    /// it was reached).
    pub fn pending_bytes(&self) -> usize {
        self.shared.lock().inbox.bytes()
    }

    /// Runs `f` on the node, for queries this type has no shortcut for.
    /// Keep it short: the driver waits for the lock meanwhile.
    pub fn with_node<R>(&self, f: impl FnOnce(&Node) -> R) -> R {
        f(&self.shared.lock().node)
    }

    // ----- commands ------------------------------------------------------

    /// Dials `id` at `addr` (see [`Node::connect`]).
    pub fn connect(&self, id: NodeId, addr: SocketAddr) -> Result<(), ConnectError> {
        self.command(|node, now| node.map_or(Err(ConnectError::ShuttingDown), |n| n.connect(now, id, addr)))
    }

    /// Closes the connection to `id` (see [`Node::disconnect`]).
    pub fn disconnect(&self, id: NodeId) {
        self.command(|node, now| node.map(|n| n.disconnect(now, id)));
    }

    /// Sets the load a server reports (see [`Node::set_load`]).
    pub fn set_load(&self, load: u32) {
        self.command(|node, now| node.map(|n| n.set_load(now, load)));
    }

    // ----- shutdown ------------------------------------------------------

    /// Closes the endpoint: tells every connected node and returns once they
    /// are told or [`HostConfig::close_timeout`] passed, with why the
    /// endpoint ended (`Closed`, or an earlier reason if it had already
    /// ended). Sends fail with [`SendError::ShuttingDown`] from now on.
    /// Cancel-safe: the close goes on without the future.
    pub async fn close(&self) -> CloseReason {
        self.shared.lock().close_requested = true;
        self.shared.wake.notify_one();
        self.closed().await
    }

    /// Resolves when the endpoint ended, for any reason. Cancel-safe.
    pub async fn closed(&self) -> CloseReason {
        let mut rx = self.shared.closed.subscribe();
        let reason = rx.wait_for(Option::is_some).await.ok().and_then(|r| r.clone());
        // The sender lives in `Shared`, which this handle keeps: `wait_for`
        // ends only with a reason.
        reason.unwrap_or(CloseReason::Closed)
    }

    /// Why the endpoint ended, if it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.lock().ended.clone()
    }
}
