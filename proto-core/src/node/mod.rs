//! The sans-IO [`Node`]: one per UDP socket.
//!
//! See [`Node`] for the driving contract.

mod conn;
mod drive;
#[cfg(feature = "fuzzing")]
mod fuzzing;
mod handshake;
#[cfg(feature = "fuzzing")]
mod hostile;
mod io;
mod recv;
mod role;
mod session;

use io::OutDatagram;
pub use io::{Ecn, Transmit};

use crate::close_code;
use crate::config::Config;
use crate::error::CertError;
use crate::error::{
    ConfigError, ConnectError, DisconnectReason, LookupError, SendError, SendFailure, Violation,
};
use crate::event::{Event, Reliability};
use crate::identity::{Identity, NodeId, Role};
use crate::info::{DirectoryRow, LinkRow, LookupKey, NatBehaviour, ObservedAddr, PeerInfo};
use crate::peer::{Next, Peer, paths::is_mapped};
use crate::proto::{self, Control, Hello, PROTOCOL_VERSION, PathKind, RefuseReason, Welcome};
use crate::quic::{self, Expect, NodeClock, QuicSetup, TransportParams, with_tls_rng};
use crate::rng::{NodeRng, derive_seed};
use crate::roster::Backoff;
use crate::server::election::MasterInfo;
use crate::server::{Action, DialOutcome, LinkAddr, Server, ServerInfo};
use crate::stats::NodeStats;
use crate::store::{KvError, KvOptions, KvRequest};
use crate::wire::{self, FrameType, ProbeFrame, RelayFrame};
use bytes::{Bytes, BytesMut};
use conn::{Acceptor, Conn, Dialer, Phase, Received, Side, StreamViolation};
use handshake::Close;
use quinn_proto::{ConnectionError, ConnectionHandle, DatagramEvent, Dir, StreamEvent, VarInt};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use role::RoleState;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Unidirectional streams a remote may have open at once: one per channel
/// (256) plus headroom for streams that are finishing.
const MAX_CHANNEL_STREAMS: u32 = 256 + 8;

const ACK_BYTES: usize = 256 << 10;

/// A connection as seen from [`Node::links`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkInfo {
    /// The remote node.
    pub id: NodeId,
    /// Its human-readable name.
    pub name: String,
    /// The address the connection's packets go to: the remote's own address
    /// for servers and direct paths, the relaying server's for relayed ones.
    pub addr: SocketAddr,
    /// How a peer-to-peer connection is carried (`None` on links to and
    /// between servers, which are always direct).
    pub path: Option<PathKind>,
    /// Whether this node dialed.
    pub dialed: bool,
    /// Current smoothed round-trip time estimate.
    pub rtt: Duration,
    /// Congestion window in bytes: how much may be in flight now.
    pub cwnd: u64,
    /// QUIC packets sent on the connection.
    pub sent_packets: u64,
    /// QUIC packets declared lost (and their data retransmitted).
    pub lost_packets: u64,
    /// Times the congestion controller backed off.
    pub congestion_events: u64,
}

/// Tracks the documented drain order so debug builds can assert it.
#[derive(Debug, Default)]
struct DrainCheck {
    /// A `handle_*` input happened and transmits were not drained since.
    input: bool,
    /// A command or input happened and transmits were not drained since.
    any: bool,
}

/// The protocol state machine of one node: one per UDP socket.
///
/// # Contract
///
/// A `Node` never performs I/O, reads a clock or draws from a global RNG.
/// Everything that happens to it is an *input*, everything it wants done is an
/// *output*:
///
/// * inputs: [`Node::handle_datagram`], [`Node::handle_timeout`] and the
///   commands ([`Node::connect`], [`Node::send`], [`Node::close`], ...), each
///   taking `now`;
/// * outputs: [`Node::poll_transmit`] (datagrams to send),
///   [`Node::poll_event`] (what the user should know) and
///   [`Node::poll_timeout`] (when to call `handle_timeout` next).
///
/// **Drain order.** After every input, call `poll_transmit` until it returns
/// `None`, then `poll_event` until it returns `None`, then read
/// `poll_timeout`. Commands issued while handling events (a reply sent from an
/// event handler, say) are fine, but transmits must be drained again before
/// `poll_timeout`. Debug builds assert this order, because a driver that reads
/// the timeout before draining transmits sleeps through work it was given.
///
/// **Batches.** Several inputs may come before one drain: a driver that
/// reads a batch of datagrams (`recvmmsg`, GRO) feeds them all, then drains.
/// The order above is only asserted between outputs.
///
/// **I/O metadata.** Pass the local IP and ECN codepoint of each datagram
/// when the socket layer reports them, and honour [`Transmit::source`],
/// [`Transmit::ecn`] and [`Transmit::segment_size`] (GSO) when sending; see
/// [`Ecn`] for why the ECN bits matter.
///
/// `now` must not go backwards; an earlier `now` than one already seen is
/// treated as the later one. A spurious `handle_timeout` (before the deadline)
/// does nothing harmful.
pub struct Node {
    identity: Identity,
    cfg: Config,
    started: Instant,
    now: Instant,
    incarnation: u64,
    rng: NodeRng,
    /// Handed to rustls for the duration of every call into quinn-proto.
    tls_rng: Option<Box<ChaCha20Rng>>,
    quic: QuicSetup,
    endpoint: quinn_proto::Endpoint,
    /// Boxed: a `Conn` is several KB (quinn-proto's connection inline), and
    /// a B-tree node holds eleven values, so unboxed a node with a few
    /// connections would cost as much as eleven.
    conns: BTreeMap<usize, Box<Conn>>,
    /// Connections not yet established (a superset: ones that closed
    /// before establishing stay until forgotten). What `in_progress` and
    /// duplicate checks scan, so they cost O(handshakes), not O(connections).
    unestablished: BTreeSet<usize>,
    /// Established connection per remote node.
    links: BTreeMap<NodeId, usize>,
    /// Reliable delivery per remote node, across its connections.
    sessions: session::Sessions,
    /// `(deadline, connection)` for every connection with a timer.
    timers: BTreeSet<(Instant, usize)>,
    /// Connections that may have something to transmit.
    dirty: BTreeSet<usize>,
    /// Round-robin position among dirty connections.
    cursor: usize,
    out: VecDeque<OutDatagram>,
    events: VecDeque<Event>,
    stats: NodeStats,
    drain: DrainCheck,
    scratch: Vec<u8>,
    closing: bool,
    /// The role's state machine.
    role: RoleState,
    /// Acceptor configuration for peer-to-peer connections (longer timeouts).
    peer_server_config: Arc<quinn_proto::ServerConfig>,
    /// quinn-proto's view of time (Retry token expiry), kept at `now`.
    clock: Arc<NodeClock>,
    /// Incoming connections accepted and not yet established or drained.
    handshakes: usize,
    /// The same, per source IP (real addresses only).
    handshakes_by_ip: BTreeMap<IpAddr, usize>,
    /// The latest dial failure per node, reported with the messages that
    /// waited for that dial ([`Event::SendFailed`]).
    dial_errors: BTreeMap<NodeId, ConnectError>,
    /// Destinations whose `send` hit `BufferFull`, awaiting `SendReady`.
    send_blocked: BTreeSet<NodeId>,
    /// Remotes owed an acknowledgement of delivered messages, and the bytes
    /// it covers ([`ACK_BYTES`]).
    acks_owed: BTreeMap<NodeId, usize>,
    /// Remotes the application paused receiving from.
    recv_paused: BTreeSet<NodeId>,
    /// While the role answers a probe: the prober and the local IP the
    /// probe arrived on, the source for datagrams back to it.
    reply_from: Option<(SocketAddr, IpAddr)>,
    /// This node's interface addresses, as the driver last set them
    /// (until then, the ones it advertises).
    local_addrs: Vec<SocketAddr>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.identity.id())
            .field("name", &self.cfg.name)
            .field("connections", &self.conns.len())
            .field("links", &self.links.len())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Creates a node. `now` is its start time (uptime is measured from it).
    pub fn new(config: Config, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut rng = NodeRng::from_seed(derive_seed(&config.seed, "node"));
        let tls_rng = Some(Box::new(ChaCha20Rng::from_seed(derive_seed(&config.seed, "tls"))));
        let params = TransportParams {
            idle_timeout: config.idle_timeout - config.keep_alive_interval,
            keep_alive: config.keep_alive_interval,
            datagram_buffer: config.datagram_buffer,
            stream_receive_window: config.limits.stream_receive_window,
        };
        let peer_params = TransportParams {
            idle_timeout: config.peer.idle_timeout - config.peer.keep_alive_interval,
            keep_alive: config.peer.keep_alive_interval,
            ..params.clone()
        };
        let quic = QuicSetup::new(&config.identity, &params, &peer_params)?;
        let clock = Arc::new(NodeClock::default());
        let server_config = Arc::new(quic.server_config(&config.seed, false, clock.clone())?);
        let peer_server_config = Arc::new(quic.server_config(&config.seed, true, clock.clone())?);
        let endpoint = quinn_proto::Endpoint::new(
            Arc::new(quic.endpoint_config(&config.seed)),
            Some(server_config),
            false,
            None,
        );
        let incarnation = rng.next_u64();
        let role_rng = NodeRng::from_seed(derive_seed(&config.seed, "role"));
        let c = &config.cluster;
        let backoff = Backoff { min: c.reconnect_min, max: c.reconnect_max, forget_after: c.forget_after };
        let role = match config.identity.role() {
            Role::Server => RoleState::Server(Box::new(Server::new(
                config.identity.id(),
                config.name.clone(),
                incarnation,
                config.advertise.clone(),
                &config.bootstrap,
                config.cluster.clone(),
                role_rng,
                now,
            ))),
            Role::Peer => RoleState::Peer(Box::new(Peer::new(
                config.identity.id(),
                config.advertise.clone(),
                &config.bootstrap,
                config.peer.clone(),
                backoff,
                role_rng,
                now,
            ))),
        };
        let local_addrs = config.advertise.clone();
        let sessions = session::Sessions::new(config.resume_window);
        let mut node = Self {
            identity: config.identity.clone(),
            cfg: config,
            started: now,
            now,
            incarnation,
            rng,
            tls_rng,
            quic,
            endpoint,
            conns: BTreeMap::new(),
            unestablished: BTreeSet::new(),
            links: BTreeMap::new(),
            sessions,
            timers: BTreeSet::new(),
            dirty: BTreeSet::new(),
            cursor: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: NodeStats::default(),
            drain: DrainCheck::default(),
            scratch: Vec::new(),
            closing: false,
            role,
            peer_server_config,
            clock,
            handshakes: 0,
            handshakes_by_ip: BTreeMap::new(),
            dial_errors: BTreeMap::new(),
            send_blocked: BTreeSet::new(),
            acks_owed: BTreeMap::new(),
            recv_paused: BTreeSet::new(),
            reply_from: None,
            local_addrs,
        };
        node.scoped(|n| n.run_role_actions());
        Ok(node)
    }

    // ----- getters -------------------------------------------------------

    /// This node's ID.
    pub fn id(&self) -> NodeId {
        self.identity.id()
    }

    /// This node's role.
    pub fn role(&self) -> Role {
        self.identity.role()
    }

    /// This node's human-readable name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Time since the node was created, as of the latest input.
    pub fn uptime(&self) -> Duration {
        self.now.saturating_duration_since(self.started)
    }

    /// Traffic and drop counters.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// Whether an established connection to `id` exists.
    pub fn is_connected(&self, id: &NodeId) -> bool {
        self.links.contains_key(id)
    }

    /// The established connections, ordered by remote ID.
    pub fn links(&self) -> impl Iterator<Item = LinkInfo> + '_ {
        self.links.iter().filter_map(|(id, handle)| {
            let c = self.conns.get(handle)?;
            let stats = c.quic.stats().path;
            let path = self.role.peer().and_then(|p| p.link_path(id));
            Some(LinkInfo {
                id: *id,
                name: c.remote_name.clone(),
                addr: self.real_addr(Some(*id), c.addr),
                path,
                dialed: c.dialed(),
                rtt: stats.rtt,
                cwnd: stats.cwnd,
                sent_packets: stats.sent_packets,
                lost_packets: stats.lost_packets,
                congestion_events: stats.congestion_events,
            })
        })
    }

    /// Largest unreliable message that can be sent to `to` right now, if connected.
    pub fn max_unreliable_size(&mut self, to: &NodeId) -> Option<usize> {
        let handle = *self.links.get(to)?;
        self.conns.get_mut(&handle)?.max_unreliable()
    }

    /// Bytes of reliable messages to `to` that it has not acknowledged yet:
    /// waiting for a connection, queued, in flight, or delivered and not yet
    /// acknowledged. This is what [`Config::send_buffer_limit`] bounds.
    pub fn buffered(&self, to: &NodeId) -> usize {
        self.sessions.outstanding(to)
    }

    /// Bytes of reliable messages to `to` queued on its connection and not
    /// yet taken by QUIC (a part of [`Node::buffered`]).
    pub fn queued(&self, to: &NodeId) -> usize {
        self.links.get(to).and_then(|handle| self.conns.get(handle)).map_or(0, |c| c.buffered())
    }

    /// Reliable messages to `to` not acknowledged yet.
    pub fn unacknowledged(&self, to: &NodeId) -> usize {
        self.sessions.outstanding_messages(to)
    }

    /// Incoming connections accepted but not yet established (TLS, Hello,
    /// admission in progress), bounded by `limits.max_handshakes`.
    pub fn incoming_handshakes(&self) -> usize {
        self.handshakes
    }

    /// Bytes of partly received reliable messages from `id` that this node
    /// holds (at most `limits.receive_buffer` plus one message).
    pub fn receive_buffered(&self, id: &NodeId) -> usize {
        self.links.get(id).and_then(|handle| self.conns.get(handle)).map_or(0, |c| c.rx_held())
    }

    /// The Master as this node sees it. Peers learn it from their servers
    /// (the Raft report with the highest term, else the most common one); a
    /// peer that knows no server reports [`MasterInfo::NONE`].
    pub fn master(&self) -> MasterInfo {
        self.role.master()
    }

    /// The server list as this node knows it: itself
    /// first if it is a server, then every known server.
    ///
    /// Peers report the servers they know, with `live` telling which they are
    /// connected to.
    pub fn servers(&self) -> Vec<ServerInfo> {
        self.role.servers()
    }

    /// A server's standing in the Raft groups, for diagnostics; `None` on peers.
    pub fn raft_view(&self) -> Option<crate::server::RaftView> {
        self.role.server().map(Server::raft_view)
    }

    /// Sets the load a server reports in the server list (by default the
    /// number of peers connected to it). Used by the optional
    /// least-loaded leader preference. No effect on peers.
    pub fn set_load(&mut self, now: Instant, load: u32) {
        self.command(now);
        if let Some(s) = self.role.server_mut() {
            s.set_load(load);
        }
        self.scoped(|n| n.run_role_actions());
    }

    /// Sends a request to the cluster's replicated store (peers only) with
    /// the default options: linearizable, 5 s to find a server, a leader
    /// and a quorum. Returns the request id; the answer comes as
    /// [`Event::KvDone`](crate::Event::KvDone) with that id. Retries go
    /// through any server, and a write is applied at most once.
    ///
    /// ```
    /// # use p2pcore::{Config, Identity, KvRequest, Node, Role};
    /// # let now = std::time::Instant::now();
    /// # let mut node = Node::new(Config::new(Identity::from_seed(Role::Peer, [7; 32]), "a", [1; 32]), now).unwrap();
    /// let id = node.kv(now, KvRequest::put("rooms/42", "alice")).unwrap();
    /// # let _ = id;
    /// ```
    pub fn kv(&mut self, now: Instant, req: KvRequest) -> Result<u64, KvError> {
        self.kv_with(now, req, KvOptions::default())
    }

    /// [`Node::kv`] with options: a timeout, or a read served by the
    /// nearest server at a revision ([`KvOptions::at_least`]).
    pub fn kv_with(&mut self, now: Instant, req: KvRequest, opts: KvOptions) -> Result<u64, KvError> {
        self.command(now);
        let Some(p) = self.role.peer_mut() else { return Err(KvError::NotAPeer) };
        let id = p.kv_request(now, req.0, opts)?;
        self.scoped(|n| n.run_role_actions());
        Ok(id)
    }

    /// Watches the keys under `prefix` (empty: every key) from revision
    /// `from_revision` on (0: from the next change), peers only. Changes
    /// come as [`Event::KvWatch`](crate::Event::KvWatch) with the returned
    /// id: in order, each once, without gaps even when the server serving
    /// the watch is lost (it resumes at another). A start older than the
    /// store keeps ends the watch with [`KvError::Compacted`].
    pub fn watch(
        &mut self,
        now: Instant,
        prefix: impl Into<Vec<u8>>,
        from_revision: u64,
    ) -> Result<u64, KvError> {
        self.command(now);
        let Some(p) = self.role.peer_mut() else { return Err(KvError::NotAPeer) };
        let id = p.watch(prefix.into(), from_revision)?;
        self.scoped(|n| n.run_role_actions());
        Ok(id)
    }

    /// Stops a watch; false if `id` is not a live watch.
    pub fn unwatch(&mut self, now: Instant, id: u64) -> bool {
        self.command(now);
        let Some(p) = self.role.peer_mut() else { return false };
        let found = p.unwatch(id);
        self.scoped(|n| n.run_role_actions());
        found
    }

    /// A peer's store epoch (fuzzing builds only: the harness addresses
    /// store replies with it).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn kv_epoch(&self) -> Option<u64> {
        self.role.peer().map(|p| p.kv_epoch())
    }

    /// Starts a coordination request (peers only): a lock, a campaign, a
    /// queue push or pop, a registration, or a query or watch of one of
    /// them ([`CoordRequest`](crate::CoordRequest)). Returns its id; what
    /// it does comes as [`Event::Coord`](crate::Event::Coord) events with
    /// that id, and every request that does not finish by itself runs
    /// until [`Node::coord_release`] or an
    /// [`CoordEvent::Ended`](crate::CoordEvent::Ended).
    ///
    /// ```
    /// # use p2pcore::{Config, CoordRequest, Identity, Node, Role};
    /// # let now = std::time::Instant::now();
    /// # let mut node = Node::new(Config::new(Identity::from_seed(Role::Peer, [7; 32]), "a", [1; 32]), now).unwrap();
    /// # let session = 1;
    /// let id = node.coord(now, CoordRequest::lock("rooms", session)).unwrap();
    /// # let _ = id;
    /// ```
    pub fn coord(&mut self, now: Instant, req: crate::CoordRequest) -> Result<u64, crate::CoordError> {
        self.command(now);
        let Some(p) = self.role.peer_mut() else { return Err(crate::CoordError::NotAPeer) };
        let id = p.coord_start(now, req)?;
        self.scoped(|n| n.run_role_actions());
        Ok(id)
    }

    /// Changes a running campaign (its value, proclaimed to followers if it
    /// leads, and its load) or registration (its load, tags or data),
    /// without re-registering: watchers see one update. Answered by
    /// [`CoordEvent::Updated`](crate::CoordEvent::Updated).
    pub fn coord_update(
        &mut self,
        now: Instant,
        id: u64,
        update: crate::CoordUpdate,
    ) -> Result<(), crate::CoordError> {
        self.command(now);
        let Some(p) = self.role.peer_mut() else { return Err(crate::CoordError::NotAPeer) };
        p.coord_update(now, id, update)?;
        self.scoped(|n| n.run_role_actions());
        Ok(())
    }

    /// Releases a running coordination request: unlocks a lock (or leaves
    /// its line), resigns a campaign, deregisters an instance, stops a
    /// watch or a waiting pop. [`CoordEvent::Released`](crate::CoordEvent::Released)
    /// follows once the store applied it. False if `id` is not running.
    pub fn coord_release(&mut self, now: Instant, id: u64) -> bool {
        self.command(now);
        let Some(p) = self.role.peer_mut() else { return false };
        let found = p.coord_release(now, id);
        self.scoped(|n| n.run_role_actions());
        found
    }

    /// Servers with [`ClusterConfig::raft_disk`](crate::ClusterConfig::raft_disk)
    /// set: the next batch of Raft state to store. Apply each batch
    /// atomically and in order, make it durable, then call
    /// [`Node::raft_written`] with its `seq`; Raft holds back what depends
    /// on it until then. Drain this with the transmits after every input.
    /// Always `None` on peers and on servers without a disk.
    pub fn poll_raft_write(&mut self) -> Option<crate::RaftWrite> {
        self.role.server_mut().and_then(Server::poll_raft_write)
    }

    /// Confirms that batch `seq` from [`Node::poll_raft_write`] (and every
    /// batch before it) is durable.
    pub fn raft_written(&mut self, now: Instant, seq: u64) {
        self.command(now);
        if let Some(s) = self.role.server_mut() {
            s.raft_written(now, seq);
        }
        self.scoped(|n| n.run_role_actions());
    }

    /// Looks peers up by ID or by name (peers only). The answer comes as
    /// [`Event::LookupDone`](crate::Event::LookupDone) with the returned
    /// number; every peer it names is then in the directory ([`Node::peers`]).
    ///
    /// With [`DirectoryMode::Lookup`](crate::DirectoryMode::Lookup) the
    /// linked servers are asked, and they keep this peer told of the peers
    /// found (joins, address changes, departures) for as long as its link to
    /// them lasts. In full mode the directory already holds everyone and the
    /// answer is immediate. A `send` to an ID not in the directory looks it
    /// up by itself; this is for finding peers by name, or before sending.
    pub fn lookup(&mut self, now: Instant, key: LookupKey) -> Result<u64, LookupError> {
        self.command(now);
        if let LookupKey::Name(name) = &key
            && name.len() > crate::identity::MAX_NAME_LEN
        {
            return Err(LookupError::NameTooLong(name.len()));
        }
        let Some(p) = self.role.peer_mut() else { return Err(LookupError::NotAPeer) };
        let query = p.lookup(key).ok_or(LookupError::NetworkDown)?;
        self.scoped(|n| n.run_role_actions());
        Ok(query)
    }

    /// Peers online in the merged directory (every server's list of its
    /// peers, combined); empty on servers. In lookup mode, only the peers
    /// looked up (and found) so far.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.role.peer().map_or_else(Vec::new, Peer::peers)
    }

    /// The link table: how this node reaches the
    /// servers and peers it is linked to. Empty on servers.
    pub fn link_table(&self) -> Vec<LinkRow> {
        let mut rows = self.role.peer().map_or_else(Vec::new, Peer::link_table);
        for row in rows.iter_mut().filter(|r| r.id.role() == Role::Peer) {
            row.rtt = self.links.get(&row.id).and_then(|h| self.conns.get(h)).map(|c| c.quic.rtt());
        }
        rows
    }

    /// For peers: whether at least one server is connected (a peer configured
    /// with no server at all is never down). Servers: always true.
    pub fn network_up(&self) -> bool {
        self.role.peer().is_none_or(|p| p.network_up() || !p.uses_servers())
    }

    /// For peers: whether a connected server's directory has arrived (its
    /// snapshot, not yet contradicted by a gap in its deltas), so
    /// [`Node::peers`] lists the network and not just what trickled in. A
    /// peer configured with no server, and every server: always true.
    /// Drivers use it, with [`Node::network_up`], for "online".
    pub fn directory_synced(&self) -> bool {
        self.role.peer().is_none_or(|p| p.directory_synced() || !p.uses_servers())
    }

    /// The peers connected to this server (its directory) and the links
    /// they reported. Empty on peers.
    pub fn directory(&self) -> Vec<DirectoryRow> {
        self.role.server().map_or_else(Vec::new, Server::directory)
    }

    /// Tells the node which addresses its interfaces have (with the port
    /// its socket is bound to); the driver calls it when they change. Peers
    /// publish them as candidates for direct paths on their LAN; both roles
    /// use them to tell whether a NAT is in the way ([`Node::nat_behaviour`]).
    pub fn set_local_addrs(&mut self, now: Instant, addrs: Vec<SocketAddr>) {
        self.command(now);
        self.local_addrs.clone_from(&addrs);
        if let Some(p) = self.role.peer_mut() {
            p.set_local_addrs(addrs);
        }
        self.scoped(|n| n.run_role_actions());
    }

    /// This node's address as each connected server sees it (servers
    /// report it to the peers they accept; a server learns its own from the
    /// servers it dialed). Sorted by server.
    pub fn observed_addrs(&self) -> Vec<ObservedAddr> {
        let mut seen = match &self.role {
            RoleState::Peer(p) => p.observed_addrs(),
            RoleState::Server(_) => self
                .links
                .iter()
                .filter(|(id, _)| id.role() == Role::Server)
                .filter_map(|(id, handle)| {
                    Some(ObservedAddr { server: *id, addr: self.conns.get(handle)?.observed()? })
                })
                .collect(),
        };
        seen.sort();
        seen
    }

    /// What the servers' observations say about the NAT in front of this
    /// node (see [`NatBehaviour`]).
    pub fn nat_behaviour(&self) -> NatBehaviour {
        NatBehaviour::classify(&self.observed_addrs(), &self.local_addrs)
    }

    /// Stops (`paused = true`) or resumes reading reliable messages and
    /// datagrams from `id`. While paused, nothing from `id` is delivered; its
    /// bytes wait in QUIC, whose flow control then holds the sender back
    /// (its `send` eventually reports `BufferFull`), and datagrams beyond
    /// `datagram_buffer` are dropped oldest first, as unreliable ones may be.
    /// The setting outlives reconnections until resumed. Use it to take
    /// messages at the application's pace instead of all at once.
    pub fn pause_receiving(&mut self, now: Instant, id: NodeId, paused: bool) {
        self.command(now);
        let changed = if paused { self.recv_paused.insert(id) } else { self.recv_paused.remove(&id) };
        if !changed {
            return;
        }
        let Some(&handle) = self.links.get(&id) else { return };
        self.scoped(|n| {
            let mut got = Vec::new();
            let res = match n.conns.get_mut(&handle) {
                Some(c) => {
                    c.set_paused(paused);
                    if paused { Ok(()) } else { c.read_starved(&mut got) }
                }
                None => return,
            };
            n.on_received(handle, got, res);
            if !paused {
                n.on_datagrams(handle);
            }
            n.touch(handle);
        });
    }

    /// Whether receiving from `id` is paused ([`Node::pause_receiving`]).
    pub fn is_receiving_paused(&self, id: &NodeId) -> bool {
        self.recv_paused.contains(id)
    }

    /// True after [`Node::close`] once every connection has finished closing.
    pub fn is_closed(&self) -> bool {
        self.closing && self.conns.is_empty()
    }

    // ----- inputs --------------------------------------------------------

    /// Feeds one received UDP datagram. `remote` is its source, `local` the
    /// local IP it arrived on and `ecn` the ECN codepoint of its IP header,
    /// when the driver knows them (quinn-udp's `RecvMeta` has both).
    ///
    /// The buffer is taken by value so that nothing is copied on the way in:
    /// a driver that reads a GRO batch splits it into datagrams with
    /// [`BytesMut::split_to`] (no copy) and feeds each. A driver may feed a
    /// whole receive batch before draining (see [`Node`]).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local: Option<IpAddr>,
        ecn: Option<Ecn>,
        data: BytesMut,
    ) {
        self.input(now);
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += data.len() as u64;
        if is_mapped(&remote) {
            // Mapped addresses only exist inside this node; a socket never
            // receives from one unless someone spoofs it.
            self.stats.dropped.unexpected += 1;
            return;
        }
        if wire::is_quic(&data) {
            // A peer's direct path: QUIC knows that peer by its mapped address.
            let from = self.role.peer_mut().and_then(|p| p.demux(now, &remote)).unwrap_or(remote);
            self.scoped(|n| n.handle_quic(from, local, ecn, data));
            return;
        }
        match wire::decode(&data) {
            Ok(frame) if frame.kind == FrameType::Relay => match RelayFrame::decode(frame.payload) {
                Ok(RelayFrame { token, node, .. }) => {
                    self.scoped(|n| n.on_relay(remote, ecn, token, node, data));
                }
                Err(e) => self.stats.dropped.record(&e),
            },
            Ok(frame) => match (ProbeFrame::decode(frame.kind, frame.payload), self.role.peer_mut()) {
                (Ok(probe), Some(peer)) => {
                    // Addresses of servers and of connections dialed by
                    // address are never remapped to a peer (QUIC packets from
                    // them would be handed to the wrong connection).
                    let conns = &self.conns;
                    let in_use = |a: &SocketAddr| {
                        conns.values().any(|c| !is_mapped(&c.addr) && c.quic.remote_address() == *a)
                    };
                    peer.on_probe(now, frame.kind, remote, &probe, in_use);
                    // Answers leave from the address the probe came in on.
                    self.reply_from = local.map(|ip| (remote, ip));
                    self.scoped(|n| n.run_role_actions());
                    self.reply_from = None;
                }
                (Ok(_), None) => self.stats.dropped.unexpected += 1,
                (Err(e), _) => self.stats.dropped.record(&e),
            },
            Err(e) => self.stats.dropped.record(&e),
        }
    }

    /// Tells the node that time has passed. Call it at the deadline from
    /// [`Node::poll_timeout`]; calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.input(now);
        self.scoped(|n| {
            let due: Vec<usize> =
                n.timers.iter().take_while(|(t, _)| *t <= n.now).map(|(_, handle)| *handle).collect();
            for handle in due {
                n.on_conn_timeout(handle);
            }
            let acks: Vec<NodeId> = n.acks_owed.keys().copied().collect();
            for to in acks {
                n.send_owed_acks(to);
            }
            if !n.closing && n.role.poll_timeout().is_some_and(|t| t <= n.now) {
                n.role.handle_timeout(n.now);
                n.run_role_actions();
            }
            if !n.closing && n.sessions.poll_timeout().is_some_and(|t| t <= n.now) {
                for (to, failed) in n.sessions.handle_timeout(n.now) {
                    n.report_failed(to, failed, SendFailure::ResumeTimeout);
                }
                n.reconnect_waiting();
            }
        });
    }

    // ----- commands ------------------------------------------------------

    /// Dials `id` at `addr`. The connection is authenticated: if the node at
    /// `addr` cannot prove it is `id`, the attempt fails with
    /// [`ConnectError::WrongNode`] in an [`Event::ConnectFailed`].
    ///
    /// Connecting to a node that is already connected or being dialed does nothing.
    pub fn connect(&mut self, now: Instant, id: NodeId, addr: SocketAddr) -> Result<(), ConnectError> {
        self.command(now);
        if id == self.id() {
            return Err(ConnectError::SelfConnect);
        }
        if self.links.contains_key(&id) || self.in_progress(&id) {
            return Ok(());
        }
        self.dial(Expect::Node(id), addr, false, false)
    }

    /// Sends `bytes` to `to` on `channel`; returns the message's sequence
    /// number for a reliable message (numbered per destination and channel,
    /// from 0; numbering towards a node starts again only after it was
    /// unreachable for twice [`Config::resume_window`] with nothing held for
    /// it, and then under a new session the receiver tells apart), and `None`
    /// for an unreliable one.
    ///
    /// A peer reaches any peer in the directory by ID alone: if there is no
    /// connection yet, one is set up through a relay server.
    ///
    /// **Reliable messages** are delivered to the application at the other
    /// end exactly once and in order per channel, or reported: this node
    /// keeps each one until the receiver acknowledges it, resends what is
    /// unacknowledged when a connection to the same node comes back (after an
    /// outage, a relay or path change, a NAT rebinding), and reports in
    /// [`Event::SendFailed`] — once, with the sequence range — what could not
    /// be delivered: the connection a message waited for could not be set
    /// up, no connection came back within [`Config::resume_window`], the
    /// receiver restarted, or this node disconnected it or closed. At most
    /// [`Config::send_buffer_limit`] bytes per destination are held (a single
    /// larger message is accepted when nothing else is held); beyond that
    /// `send` fails with [`SendError::BufferFull`] until
    /// [`Event::SendReady`].
    ///
    /// **Unreliable messages** are best effort: they need an established
    /// connection (without one they fail with [`SendError::NotConnected`]),
    /// may be lost or reordered, and are never reported.
    pub fn send(
        &mut self,
        now: Instant,
        to: NodeId,
        channel: u8,
        bytes: impl Into<Bytes>,
        reliability: Reliability,
    ) -> Result<Option<u64>, SendError> {
        self.command(now);
        let bytes = bytes.into();
        if to == self.id() {
            return Err(SendError::SelfSend);
        }
        if self.closing {
            return Err(SendError::ShuttingDown);
        }
        if reliability == Reliability::Reliable && bytes.len() > self.cfg.max_message_size {
            return Err(SendError::TooLarge { size: bytes.len(), max: self.cfg.max_message_size });
        }
        // A peer reaches other peers only through servers: none, no sends.
        if to.role() == Role::Peer && self.role.peer().is_some_and(|p| p.uses_servers() && !p.network_up()) {
            return Err(SendError::NetworkDown);
        }
        if reliability == Reliability::Reliable {
            let limit = self.cfg.send_buffer_limit;
            let buffered = self.sessions.outstanding(&to);
            if buffered > 0 && buffered + bytes.len() > limit {
                self.send_blocked.insert(to);
                return Err(SendError::BufferFull { to, buffered, limit });
            }
        }
        if let Some(&handle) = self.links.get(&to) {
            // An acknowledgement owed to `to` rides in the same packet.
            self.send_owed_acks(to);
            let Some(conn) = self.conns.get_mut(&handle) else {
                return Err(SendError::NotConnected(to));
            };
            let seq = match reliability {
                Reliability::Reliable => {
                    let (session, seq) =
                        self.sessions.accept(self.now, to, channel, bytes.clone(), &mut self.rng);
                    if conn.send_reliable(channel, session, seq, bytes).is_err() {
                        // The remote stopped a stream we own: it broke the
                        // protocol. The message stays held for a new connection.
                        self.scoped(|n| n.close_conn(handle, Close::Violation(Violation::StreamStopped)));
                    }
                    Some(seq)
                }
                Reliability::Unreliable => {
                    let max = conn.max_unreliable().ok_or(SendError::DatagramsUnsupported)?;
                    if bytes.len() > max {
                        return Err(SendError::TooLarge { size: bytes.len(), max });
                    }
                    if let Err(e) = conn.send_unreliable(channel, &bytes) {
                        return Err(match e {
                            quinn_proto::SendDatagramError::TooLarge => {
                                SendError::TooLarge { size: bytes.len(), max }
                            }
                            _ => SendError::DatagramsUnsupported,
                        });
                    }
                    None
                }
            };
            self.touch(handle);
            return Ok(seq);
        }
        if reliability == Reliability::Unreliable {
            return Err(SendError::NotConnected(to));
        }
        // Held for a connection: one coming back (the resume window runs),
        // one being set up, or one set up now.
        let resuming = self.sessions.was_connected(&to);
        if !resuming && !self.in_progress(&to) {
            // A peer connects to peers by ID, through the directory.
            let wanted = match to.role() {
                Role::Peer => self.role.peer_mut().map(|p| p.want(to)),
                // Servers are dialed by address, never looked up.
                Role::Server => None,
            };
            self.scoped(|n| n.run_role_actions());
            match wanted {
                Some(true) if self.on_the_way(&to) => {}
                Some(false) => return Err(SendError::UnknownPeer(to)),
                _ => return Err(SendError::NotConnected(to)),
            }
        }
        let (_, seq) = self.sessions.accept(self.now, to, channel, bytes, &mut self.rng);
        Ok(Some(seq))
    }

    /// Closes the connection to `id`, if any.
    pub fn disconnect(&mut self, now: Instant, id: NodeId) {
        self.command(now);
        let chs: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.remote == Some(id) || c.expect() == Some(Expect::Node(id)))
            .map(|(handle, _)| *handle)
            .collect();
        self.scoped(|n| {
            for handle in chs {
                n.close_conn(handle, Close::User);
            }
        });
        let failed = self.sessions.fail(&id, self.now);
        self.report_failed(id, failed, SendFailure::Disconnected);
    }

    /// Shuts the node down: closes every connection gracefully. Keep driving
    /// the node until [`Node::is_closed`] so the close packets go out.
    pub fn close(&mut self, now: Instant) {
        self.command(now);
        self.closing = true;
        let chs: Vec<usize> = self.conns.keys().copied().collect();
        self.scoped(|n| {
            for handle in chs {
                n.close_conn(handle, Close::Shutdown);
            }
        });
        for to in self.sessions.with_outstanding() {
            let failed = self.sessions.fail(&to, self.now);
            self.report_failed(to, failed, SendFailure::Closed);
        }
    }

    // ----- outputs -------------------------------------------------------

    /// The next datagram to send, written into `buf` (which is cleared first).
    /// `max_datagrams` > 1 allows several equal-size datagrams in one transmit
    /// for UDP segmentation offload.
    pub fn poll_transmit(&mut self, max_datagrams: usize, buf: &mut Vec<u8>) -> Option<Transmit> {
        buf.clear();
        let t = self.scoped(|n| n.next_transmit(max_datagrams.max(1), buf));
        match t {
            Some(t) => {
                let count = match t.segment_size {
                    Some(s) if s > 0 => t.size.div_ceil(s),
                    _ => 1,
                };
                self.stats.datagrams_out += count as u64;
                self.stats.bytes_out += t.size as u64;
                Some(t)
            }
            None => {
                self.announce_send_ready();
                self.drain = DrainCheck::default();
                None
            }
        }
    }

    /// The next event for the user.
    pub fn poll_event(&mut self) -> Option<Event> {
        debug_assert!(
            !self.drain.input,
            "p2pcore drain order: call poll_transmit until it returns None before poll_event"
        );
        self.events.pop_front()
    }

    /// When [`Node::handle_timeout`] should next be called, if ever.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        debug_assert!(
            !self.drain.any,
            "p2pcore drain order: call poll_transmit until it returns None before poll_timeout"
        );
        debug_assert!(
            self.events.is_empty(),
            "p2pcore drain order: call poll_event until it returns None before poll_timeout"
        );
        let conn = self.timers.first().map(|(t, _)| *t);
        let role = if self.closing { None } else { self.role.poll_timeout() };
        // A closing node has reported every held message; what is left of
        // its sessions (what it delivered) no longer matters.
        let sessions = if self.closing { None } else { self.sessions.poll_timeout() };
        // Owed acknowledgements go at once (see [`ACK_BYTES`]).
        let acks = (!self.acks_owed.is_empty()).then_some(self.now);
        [conn, role, sessions, acks].into_iter().flatten().min()
    }

    // ----- internals -----------------------------------------------------

    /// Tells the application which full send buffers have drained to half
    /// (checked once transmits are drained: that is when QUIC has taken bytes).
    fn announce_send_ready(&mut self) {
        if self.send_blocked.is_empty() {
            return;
        }
        let half = self.cfg.send_buffer_limit / 2;
        let ready: Vec<NodeId> =
            self.send_blocked.iter().copied().filter(|to| self.buffered(to) <= half).collect();
        for to in ready {
            self.send_blocked.remove(&to);
            self.events.push_back(Event::SendReady { to });
        }
    }

    /// The real address behind a connection address: for a peer-to-peer
    /// connection (known to QUIC by its internal mapped address), the
    /// direct address in use or else the relaying server's; the unspecified
    /// address `[::]:0` if it has no path right now. Other addresses are real.
    fn real_addr(&self, id: Option<NodeId>, addr: SocketAddr) -> SocketAddr {
        if !is_mapped(&addr) {
            return addr;
        }
        let Some(peer) = self.role.peer() else { return addr };
        let Some(id) = id.or_else(|| peer.peer_of(&addr)) else {
            return SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0));
        };
        let via_relay = || {
            let server = peer.relay_of(&id)?;
            Some(self.conns.get(self.links.get(&server)?)?.quic.remote_address())
        };
        peer.direct_addr(&id).or_else(via_relay).unwrap_or(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))
    }

    fn advance(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
            self.clock.set(now.saturating_duration_since(self.started));
        }
    }

    fn input(&mut self, now: Instant) {
        self.advance(now);
        self.drain.input = true;
        self.drain.any = true;
    }

    fn command(&mut self, now: Instant) {
        self.advance(now);
        self.drain.any = true;
    }

    /// Runs `f` with this node's generator installed as the TLS randomness source.
    fn scoped<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        if self.tls_rng.is_none() {
            // Already inside a scope: the generator is installed.
            return f(self);
        }
        let mut rng = self.tls_rng.take();
        let out = with_tls_rng(&mut rng, || f(self));
        self.tls_rng = rng;
        out
    }
}
