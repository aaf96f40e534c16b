//! A deterministic, seeded, virtual-time network that runs real [`Node`]s.
//!
//! One seed drives everything: node keys and seeds, NAT port choices, link
//! jitter, loss, duplication and reordering. Time is virtual: the simulator
//! jumps from one scheduled happening (a packet arrival, a node's timer, a
//! scripted action) to the next, so a minute of network life takes
//! milliseconds and every run with the same seed is identical — the trace
//! [`Sim::digest`] and the digest of all bytes on the wire
//! ([`Sim::wire_digest`]) prove it.
//!
//! # Topology
//!
//! Every node is a *host* with one UDP socket. A host is either public (its
//! own internet-facing address) or sits in a [`Lan`]. A LAN is either open
//! (hosts get public addresses, nothing is filtered) or behind a [`Nat`].
//! Hosts in the same LAN talk directly over the LAN. Everything else crosses
//! the "internet": a link between the two *sites* (a public host, or a LAN)
//! with latency, jitter, loss, duplication, reordering and an MTU
//! ([`LinkParams`]). Partitions cut links between groups of sites.

use crate::nat::{Nat, NatConfig};
use bytes::{Bytes, BytesMut};
use p2pcore::{self as p, Config, Ecn, Event, Identity, Node, NodeId, Reliability, Role};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Index of a host in the simulator.
pub type HostId = usize;
/// Index of a LAN in the simulator.
pub type LanId = usize;

/// UDP port every simulated node listens on.
pub const NODE_PORT: u16 = 4433;

/// Properties of a link between two sites, one way.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LinkParams {
    /// One-way base latency.
    pub latency: Duration,
    /// Uniform jitter added to the latency, in `[-jitter, +jitter]`. The link
    /// stays FIFO like a router queue: a datagram never arrives before one
    /// sent earlier in the same direction (only `reorder` does that).
    pub jitter: Duration,
    /// Probability of losing a datagram.
    pub loss: f64,
    /// Probability of delivering a datagram twice.
    pub duplicate: f64,
    /// Probability of holding a datagram back so later ones overtake it.
    pub reorder: f64,
    /// Largest IP packet in bytes; larger datagrams (payload plus 28 bytes of
    /// IPv4/UDP header, 48 for IPv6) are dropped.
    pub mtu: usize,
    /// Probability that a router on the link marks an ECN-capable datagram
    /// "congestion experienced" instead of dropping it (RFC 3168). Every
    /// datagram carries its ECN codepoint; NATs and links keep it.
    pub ce_mark: f64,
}

impl Default for LinkParams {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(20),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            mtu: 1500,
            ce_mark: 0.0,
        }
    }
}

/// A partial change of [`LinkParams`]: `None` fields keep their value.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkPatch {
    /// New one-way latency.
    pub latency: Option<Duration>,
    /// New jitter.
    pub jitter: Option<Duration>,
    /// New loss probability.
    pub loss: Option<f64>,
    /// New duplication probability.
    pub duplicate: Option<f64>,
    /// New reordering probability.
    pub reorder: Option<f64>,
    /// New MTU.
    pub mtu: Option<usize>,
    /// New congestion-marking probability.
    pub ce_mark: Option<f64>,
}

impl LinkPatch {
    /// `base` with this patch applied.
    pub fn apply(&self, base: LinkParams) -> LinkParams {
        LinkParams {
            latency: self.latency.unwrap_or(base.latency),
            jitter: self.jitter.unwrap_or(base.jitter),
            loss: self.loss.unwrap_or(base.loss),
            duplicate: self.duplicate.unwrap_or(base.duplicate),
            reorder: self.reorder.unwrap_or(base.reorder),
            mtu: self.mtu.unwrap_or(base.mtu),
            ce_mark: self.ce_mark.unwrap_or(base.ce_mark),
        }
    }
}

/// Simulator-wide settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The one seed everything derives from.
    pub seed: u64,
    /// Defaults for every internet link.
    pub link: LinkParams,
    /// One-way latency inside a LAN.
    pub lan_latency: Duration,
    /// Most happenings allowed at one virtual instant before the run is
    /// declared a livelock.
    pub livelock_limit: usize,
    /// Servers keep their Raft state on a simulated disk that survives
    /// crashes (`ClusterConfig::raft_disk`).
    pub raft_disk: bool,
    /// How long a disk write takes before it is durable and confirmed. A
    /// crash in between loses it — the unsynced tail. Zero: confirmed at once.
    pub disk_latency: Duration,
    /// Keep the event trace ([`Sim::trace`], hashed into [`Sim::digest`]) and
    /// each host's event list ([`Sim::take_events`]). Off for scale runs: a
    /// network of N peers emits about N² `PeerOnline` events, and keeping
    /// them (names formatted, strings held) would cost the simulator more
    /// than the nodes it runs. Deliveries, failures, Masters and paths are
    /// still tracked.
    pub trace: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            link: LinkParams::default(),
            lan_latency: Duration::from_millis(1),
            livelock_limit: 200_000,
            raft_disk: false,
            disk_latency: Duration::ZERO,
            trace: true,
        }
    }
}

/// A LAN: a private subnet, open or behind a NAT.
#[derive(Debug)]
pub struct Lan {
    /// Its name.
    pub name: String,
    /// The NAT in front of it; `None` for an open LAN.
    pub nat: Option<Nat>,
    subnet: [u8; 3],
    next_host: u8,
}

/// What kind of node to add.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Unique name.
    pub name: String,
    /// Server or peer.
    pub role: Role,
    /// The LAN it sits in; `None` for a public host.
    pub lan: Option<LanId>,
    /// Give a public host an IPv6 address instead of IPv4.
    pub ipv6: bool,
    /// Hosts whose addresses go into `Config::bootstrap` (introducers for a
    /// server, bootstrap servers for a peer).
    pub bootstrap: Vec<HostId>,
    /// Start the node this long after it is added, during the run (`None`:
    /// at once, while adding).
    pub start_after: Option<Duration>,
    /// Present a faulty credential, to test refusals.
    pub credential: CredentialFault,
}

/// Deliberately broken credentials for admission tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CredentialFault {
    /// The network's own credential.
    #[default]
    None,
    /// Open mode in a network that requires credentials.
    Missing,
    /// The shared secret of another network.
    WrongSecret,
    /// A join token that expired before the run started.
    ExpiredToken,
    /// A token signed by an issuer the network does not trust.
    UntrustedToken,
}

impl NodeSpec {
    /// A public server.
    pub fn server(name: &str) -> Self {
        Self {
            name: name.into(),
            role: Role::Server,
            lan: None,
            ipv6: false,
            bootstrap: Vec::new(),
            start_after: None,
            credential: CredentialFault::None,
        }
    }
    /// A peer, public or in `lan`.
    pub fn peer(name: &str, lan: Option<LanId>) -> Self {
        Self { role: Role::Peer, lan, ..Self::server(name) }
    }
    /// With bootstrap (introducer) hosts.
    pub fn via(mut self, bootstrap: &[HostId]) -> Self {
        self.bootstrap = bootstrap.to_vec();
        self
    }
}

/// How the simulated network admits its members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetworkAdmission {
    /// Development mode.
    #[default]
    Open,
    /// A shared secret derived from this passphrase.
    Secret(String),
    /// Join tokens signed by one issuer key (derived from the seed).
    Token,
}

/// Wall-clock time the simulation pretends to start at (for token expiry).
pub const SIM_UNIX_START: u64 = 1_800_000_000;

/// Per-host traffic counters kept by the simulator (wire view).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HostBytes {
    /// Datagrams the host sent.
    pub datagrams_sent: u64,
    /// Bytes the host sent.
    pub sent: u64,
    /// Datagrams delivered to the host.
    pub datagrams_received: u64,
    /// Bytes delivered to the host.
    pub received: u64,
    /// Times the host's timer fired: wake-ups without a datagram.
    pub timer_wakeups: u64,
}

/// One simulated machine.
pub struct Host {
    /// Unique name.
    pub name: String,
    /// Its long-term identity (kept across restarts).
    pub identity: Identity,
    /// Its socket address (private if in a LAN).
    pub addr: SocketAddr,
    /// Its LAN, if any.
    pub lan: Option<LanId>,
    /// The running node; `None` while crashed.
    pub node: Option<Node>,
    /// How many times it was (re)started.
    pub boots: u32,
    /// When it last crashed (virtual time since the start); `None` while running.
    pub down_since: Option<Duration>,
    /// Every event its node emitted, with the virtual time since simulation start.
    pub events: Vec<(Duration, Event)>,
    /// Wire counters.
    pub bytes: HostBytes,
    /// Bootstrap hosts.
    pub bootstrap: Vec<HostId>,
    /// Credential fault, if any.
    pub credential: CredentialFault,
    /// Its durable disk (servers with `SimConfig::raft_disk`).
    pub disk: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Writes issued but not yet durable (lost in a crash).
    pub disk_pending: Vec<p2pcore::RaftWrite>,
    /// How many writes it lost in crashes.
    pub disk_lost: u64,
    timeout: Option<Instant>,
    timer_gen: u64,
}

impl Host {
    /// The node ID.
    pub fn id(&self) -> NodeId {
        self.identity.id()
    }
    /// Whether the node is running.
    pub fn alive(&self) -> bool {
        self.node.is_some()
    }
}

/// One line of the run's ordered trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceEntry {
    /// Virtual milliseconds since the start (microsecond precision).
    pub t_ms: f64,
    /// The host name, or `"sim"` for simulator actions.
    pub node: String,
    /// Event or action name.
    pub event: String,
    /// Human-readable details.
    pub detail: String,
}

/// Delivery accounting for messages sent with [`Sim::send_messages`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MessageMetrics {
    /// Messages accepted by `Node::send`.
    pub sent: u64,
    /// Messages `Node::send` refused (not connected, too large, ...).
    pub rejected: u64,
    /// Distinct messages delivered.
    pub delivered: u64,
    /// Deliveries of a message already delivered.
    pub duplicated: u64,
    /// Deliveries that arrived after a later message of the same flow.
    pub reordered: u64,
    /// Accepted messages the sender reported as given up on
    /// (`Event::SendFailed`) and that were not delivered.
    pub failed: u64,
    /// Messages both delivered and reported as failed: a broken promise.
    pub misreported: u64,
    /// Reliable messages accepted and neither delivered nor reported:
    /// silent losses, which the delivery guarantee rules out once the run
    /// has settled.
    pub lost: u64,
    /// Of `sent`, the unreliable ones (best effort: never reported).
    pub unreliable_sent: u64,
    /// Of `delivered`, the unreliable ones.
    pub unreliable_delivered: u64,
    /// Unreliable messages not delivered (expected on lossy links).
    pub unreliable_lost: u64,
}

/// Counters of what the network did to datagrams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NetStats {
    /// Datagrams put on a link.
    pub sent: u64,
    /// Datagrams delivered to a running node.
    pub delivered: u64,
    /// Lost by link loss.
    pub lost: u64,
    /// Extra copies made by link duplication.
    pub duplicated: u64,
    /// Held back by link reordering.
    pub reordered: u64,
    /// ECN-capable datagrams a link marked "congestion experienced".
    pub ce_marked: u64,
    /// Dropped for exceeding the MTU.
    pub too_big: u64,
    /// Dropped by a partition.
    pub partitioned: u64,
    /// Dropped by a NAT (no mapping, filter, firewall, hairpin off).
    pub nat_dropped: u64,
    /// Addressed to nobody, or to a crashed node.
    pub undeliverable: u64,
}

/// A scripted action.
#[derive(Debug, Clone)]
pub enum Action {
    /// Crash a host (its state is lost; its identity is kept).
    Kill(HostId),
    /// Start a crashed host again with the same identity.
    Restart(HostId),
    /// Cut links between these groups of sites (by host or LAN name).
    Partition(Vec<Vec<String>>),
    /// Remove every partition.
    Heal,
    /// Change link parameters: for every link, or for the pair of sites named.
    Link {
        /// The parameters to change; the others keep their current values.
        patch: LinkPatch,
        /// `Some((a, b))` to change only the link between these two sites.
        between: Option<(String, String)>,
    },
    /// Send a batch of tracked messages.
    Send(SendSpec),
    /// Reboot a LAN's NAT: all its mappings are lost.
    NatReboot(LanId),
}

/// A batch of tracked messages.
#[derive(Debug, Clone)]
pub struct SendSpec {
    /// Sender.
    pub from: HostId,
    /// Receiver.
    pub to: HostId,
    /// How many messages.
    pub count: u32,
    /// Bytes per message (at least [`MSG_HEADER`]).
    pub size: usize,
    /// Reliable or not.
    pub reliability: Reliability,
    /// The channel.
    pub channel: u8,
}

/// Bytes at the start of every tracked message: magic, flow, sequence.
pub const MSG_HEADER: usize = 12;
const MSG_MAGIC: &[u8; 4] = b"P2SM";

#[derive(Debug)]
struct Flow {
    to: HostId,
    from_id: NodeId,
    seen: BTreeSet<u32>,
    /// Messages the sender reported as failed.
    failed: BTreeSet<u32>,
    highest: Option<u32>,
    reliable: bool,
}

#[derive(Debug)]
enum Happening {
    /// A datagram arriving at a public address.
    Wire {
        to: SocketAddr,
        from: SocketAddr,
        data: Bytes,
        ecn: Option<Ecn>,
    },
    /// A datagram arriving inside a LAN.
    Local {
        host: HostId,
        from: SocketAddr,
        data: Bytes,
        ecn: Option<Ecn>,
    },
    Timer {
        host: HostId,
        generation: u64,
    },
    /// A disk write of `host` (in its boot `boot`) became durable.
    Disk {
        host: HostId,
        boot: u32,
        seq: u64,
    },
    Action(Action),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Site {
    Host(HostId),
    Lan(LanId),
}

/// Hook to adjust each node's configuration before it starts.
pub type Configure = Rc<dyn Fn(&mut Config, &Host)>;

/// The simulator. See the [module docs](self).
pub struct Sim {
    cfg: SimConfig,
    base: Instant,
    now: Instant,
    rng: ChaCha20Rng,
    hosts: Vec<Host>,
    lans: Vec<Lan>,
    queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    /// Payloads of queued happenings, by slot (kept out of the heap so it stays small).
    slots: Vec<Option<Happening>>,
    free_slots: Vec<usize>,
    seq: u64,
    by_ip: HashMap<IpAddr, Site>,
    by_addr: HashMap<SocketAddr, HostId>,
    by_id: HashMap<NodeId, HostId>,
    next_public: u32,
    link_default: LinkParams,
    link_override: BTreeMap<(Site, Site), LinkParams>,
    /// Latest arrival scheduled per direction: links are FIFO, so jitter
    /// varies delay without reordering (only `reorder` reorders).
    last_arrival: BTreeMap<(Site, Site), Instant>,
    partition: Option<BTreeMap<Site, usize>>,
    configure: Option<Configure>,
    admission: NetworkAdmission,
    watch: ClusterWatch,
    trace: Vec<TraceEntry>,
    trace_digest: ring::digest::Context,
    wire_digest: ring::digest::Context,
    flows: Vec<Flow>,
    /// `(sender, destination, channel, sequence number from send)` → `(flow,
    /// message number in the flow)`, to match `SendFailed` ranges.
    sent_index: BTreeMap<(HostId, NodeId, u8, u64), (usize, u32)>,
    messages: MessageMetrics,
    /// Datagrams captured from tapped hosts: (sender, destination, bytes).
    tapped: Vec<(HostId, SocketAddr, Bytes)>,
    /// Told which host's node runs (and `None` after), for per-node memory accounting.
    scope: Option<fn(Option<HostId>)>,
    taps: BTreeSet<HostId>,
    /// Latest path per (reporting host, peer): the path, since when, and
    /// since when the pair has had any path (its link came up).
    pairs: BTreeMap<(HostId, NodeId), (Option<p::PathKind>, Duration, Duration)>,
    net: NetStats,
    same_instant: (Instant, usize),
    /// Inside `run_until` (as opposed to building the topology).
    running: bool,
    buf: Vec<u8>,
}

fn hash_seed(seed: u64, parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"p2psim\0");
    ctx.update(&seed.to_be_bytes());
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn hex(d: ring::digest::Digest) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Sim {
    /// An empty network.
    pub fn new(cfg: SimConfig) -> Self {
        // The only clock read of a run: an arbitrary origin for virtual time.
        // Nothing depends on its value, only on offsets from it.
        let base = Instant::now();
        Self {
            rng: ChaCha20Rng::from_seed(hash_seed(cfg.seed, &[b"network"])),
            link_default: cfg.link,
            cfg,
            base,
            now: base,
            hosts: Vec::new(),
            lans: Vec::new(),
            queue: BinaryHeap::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            seq: 0,
            by_ip: HashMap::new(),
            by_addr: HashMap::new(),
            by_id: HashMap::new(),
            next_public: 0,
            link_override: BTreeMap::new(),
            last_arrival: BTreeMap::new(),
            partition: None,
            configure: None,
            admission: NetworkAdmission::Open,
            watch: ClusterWatch::default(),
            trace: Vec::new(),
            trace_digest: ring::digest::Context::new(&ring::digest::SHA256),
            wire_digest: ring::digest::Context::new(&ring::digest::SHA256),
            flows: Vec::new(),
            sent_index: BTreeMap::new(),
            messages: MessageMetrics::default(),
            pairs: BTreeMap::new(),
            tapped: Vec::new(),
            scope: None,
            taps: BTreeSet::new(),
            net: NetStats::default(),
            same_instant: (base, 0),
            running: false,
            buf: Vec::with_capacity(65536),
        }
    }

    /// Sets how nodes prove membership (before adding nodes).
    pub fn set_admission(&mut self, admission: NetworkAdmission) {
        self.admission = admission;
    }

    /// Sets a hook that adjusts every node's configuration before (re)start.
    pub fn set_configure(&mut self, f: impl Fn(&mut Config, &Host) + 'static) {
        self.configure = Some(Rc::new(f));
    }

    fn public_ip(&mut self, v6: bool) -> IpAddr {
        self.next_public += 1;
        let n = self.next_public;
        if v6 {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (n >> 16) as u16, n as u16))
        } else {
            // 198.18.0.0/15 is reserved for benchmarking networks (RFC 2544).
            IpAddr::V4(Ipv4Addr::new(198, 18 + ((n >> 16) & 1) as u8, (n >> 8) as u8, n as u8))
        }
    }

    /// Adds a LAN, open (`nat: None`) or behind a NAT.
    pub fn add_lan(&mut self, name: &str, nat: Option<NatConfig>) -> LanId {
        let id = self.lans.len();
        let nat = nat.map(|cfg| {
            let ip = self.public_ip(false);
            self.by_ip.insert(ip, Site::Lan(id));
            let seed = u64::from_be_bytes(
                hash_seed(self.cfg.seed, &[b"nat", name.as_bytes()])[..8].try_into().unwrap_or_default(),
            );
            Nat::new(ip, cfg, seed)
        });
        self.lans.push(Lan { name: name.into(), nat, subnet: [10, (id >> 8) as u8, id as u8], next_host: 2 });
        self.refresh_firewalls();
        id
    }

    /// The usual test network: three servers (`s1` first, `s2` and `s3`
    /// joining through it) and `peers` public peers (`p0`, ...)
    /// bootstrapping from every server, all started at once. Returns
    /// (servers, peers).
    pub fn add_mesh(&mut self, peers: usize) -> (Vec<HostId>, Vec<HostId>) {
        let s1 = self.add_node(NodeSpec::server("s1"));
        let s2 = self.add_node(NodeSpec::server("s2").via(&[s1]));
        let s3 = self.add_node(NodeSpec::server("s3").via(&[s1]));
        let servers = vec![s1, s2, s3];
        let peers =
            (0..peers).map(|i| self.add_node(NodeSpec::peer(&format!("p{i}"), None).via(&servers))).collect();
        (servers, peers)
    }

    /// Adds a host and starts its node now.
    pub fn add_node(&mut self, spec: NodeSpec) -> HostId {
        let id = self.hosts.len();
        let ip = match spec.lan {
            Some(l) if self.lans[l].nat.is_some() => {
                let lan = &mut self.lans[l];
                let ip =
                    IpAddr::V4(Ipv4Addr::new(lan.subnet[0], lan.subnet[1], lan.subnet[2], lan.next_host));
                lan.next_host = lan.next_host.wrapping_add(1);
                ip
            }
            Some(l) => {
                // Open LAN: hosts are public but share the LAN site.
                let ip = self.public_ip(false);
                self.by_ip.insert(ip, Site::Lan(l));
                ip
            }
            None => {
                let ip = self.public_ip(spec.ipv6);
                self.by_ip.insert(ip, Site::Host(id));
                ip
            }
        };
        let identity =
            Identity::from_seed(spec.role, hash_seed(self.cfg.seed, &[b"identity", spec.name.as_bytes()]));
        self.by_addr.insert(SocketAddr::new(ip, NODE_PORT), id);
        self.by_id.insert(identity.id(), id);
        self.hosts.push(Host {
            name: spec.name,
            identity,
            addr: SocketAddr::new(ip, NODE_PORT),
            lan: spec.lan,
            node: None,
            boots: 0,
            down_since: None,
            events: Vec::new(),
            bytes: HostBytes::default(),
            bootstrap: spec.bootstrap,
            credential: spec.credential,
            disk: BTreeMap::new(),
            disk_pending: Vec::new(),
            disk_lost: 0,
            timeout: None,
            timer_gen: 0,
        });
        if spec.role == Role::Server {
            self.refresh_firewalls();
        }
        match spec.start_after {
            // Scheduled (even for zero delay): the node boots once the run
            // starts, after every host it may bootstrap from exists.
            Some(d) => {
                let at = self.now + d;
                self.push(at, Happening::Action(Action::Restart(id)));
            }
            None => self.boot(id),
        }
        id
    }

    fn admission_for(&self, h: HostId) -> (p2pcore::Admission, Option<u64>) {
        use p2pcore::{Admission, JoinToken, Keypair, NetworkSecret};
        let host = &self.hosts[h];
        let issuer = |label: &[u8]| Keypair::from_seed(hash_seed(self.cfg.seed, &[b"issuer", label]));
        let unix = Some(SIM_UNIX_START);
        let valid_until = SIM_UNIX_START + 365 * 86_400;
        match (&self.admission, host.credential) {
            (_, CredentialFault::Missing) | (NetworkAdmission::Open, _) => (Admission::Open, unix),
            (NetworkAdmission::Secret(_), CredentialFault::WrongSecret) => {
                (Admission::SharedSecret(NetworkSecret::from_passphrase("not the network's secret")), unix)
            }
            (NetworkAdmission::Secret(p), _) => {
                (Admission::SharedSecret(NetworkSecret::from_passphrase(p)), unix)
            }
            (NetworkAdmission::Token, fault) => {
                let network = issuer(b"network");
                let (signer, expires) = match fault {
                    CredentialFault::ExpiredToken => (issuer(b"network"), SIM_UNIX_START - 1),
                    CredentialFault::UntrustedToken => (issuer(b"rogue"), valid_until),
                    _ => (issuer(b"network"), valid_until),
                };
                let token = JoinToken::issue(&signer, host.id(), expires);
                (Admission::Token { token, issuers: vec![network.public()] }, unix)
            }
        }
    }

    fn refresh_firewalls(&mut self) {
        let servers: Vec<IpAddr> =
            self.hosts.iter().filter(|h| h.identity.role() == Role::Server).map(|h| h.addr.ip()).collect();
        for lan in &mut self.lans {
            if let Some(nat) = &mut lan.nat {
                nat.set_outbound_allow(servers.iter().copied());
            }
        }
    }

    fn boot(&mut self, h: HostId) {
        let host = &mut self.hosts[h];
        host.boots += 1;
        host.down_since = None;
        let seed = hash_seed(self.cfg.seed, &[b"node", host.name.as_bytes(), &host.boots.to_be_bytes()]);
        let mut config = Config::new(host.identity.clone(), host.name.clone(), seed);
        config.advertise = vec![host.addr];
        let bootstrap = host.bootstrap.clone();
        config.bootstrap = bootstrap.iter().filter_map(|b| self.public_addr(*b)).collect();
        (config.admission, config.unix_time) = self.admission_for(h);
        if self.cfg.raft_disk && self.hosts[h].identity.role() == Role::Server {
            let table = self.hosts[h].disk.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            config.cluster.raft_disk = Some(table);
        }
        if let Some(f) = &self.configure {
            f(&mut config, &self.hosts[h]);
        }
        let name = self.hosts[h].name.clone();
        self.enter(Some(h));
        let node = Node::new(config, self.now);
        self.enter(None);
        match node {
            Ok(node) => {
                self.hosts[h].node = Some(node);
                self.record("sim", "start", &name);
                self.drain(h);
            }
            Err(e) => self.record("sim", "start-failed", &format!("{name}: {e}")),
        }
    }

    // ----- accessors ------------------------------------------------------

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    /// The virtual clock itself (for passing `now` to nodes).
    pub fn now(&self) -> Instant {
        self.now
    }

    /// All hosts.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// One host.
    pub fn host(&self, h: HostId) -> &Host {
        &self.hosts[h]
    }

    /// The host name of a node ID (or the ID itself if unknown).
    pub fn name_of(&self, id: &NodeId) -> String {
        self.by_id.get(id).map_or_else(|| id.to_string(), |h| self.hosts[*h].name.clone())
    }

    /// A host by name.
    pub fn find(&self, name: &str) -> Option<HostId> {
        self.hosts.iter().position(|h| h.name == name)
    }

    /// A LAN by name.
    pub fn find_lan(&self, name: &str) -> Option<LanId> {
        self.lans.iter().position(|l| l.name == name)
    }

    /// All LANs.
    pub fn lans(&self) -> &[Lan] {
        &self.lans
    }

    /// The node of a host, if running. Use [`Sim::with_node`] for commands.
    pub fn node(&self, h: HostId) -> Option<&Node> {
        self.hosts[h].node.as_ref()
    }

    /// Direct access to a host's node, without draining its output into the
    /// network (for benchmarks that drive a node by hand).
    pub fn node_mut(&mut self, h: HostId) -> Option<&mut Node> {
        self.hosts[h].node.as_mut()
    }

    /// Runs a command on a host's node at the current virtual time, then
    /// drains the node's output. `None` if the host is down.
    pub fn with_node<R>(&mut self, h: HostId, f: impl FnOnce(&mut Node, Instant) -> R) -> Option<R> {
        let now = self.now;
        self.enter(Some(h));
        let r = self.hosts[h].node.as_mut().map(|n| f(n, now));
        self.enter(None);
        self.drain(h);
        r
    }

    /// The public address through which `h` is reached from the internet, if
    /// it has one without a NAT mapping (public hosts and open LANs).
    pub fn public_addr(&self, h: HostId) -> Option<SocketAddr> {
        match self.hosts[h].lan {
            Some(l) if self.lans[l].nat.is_some() => None,
            _ => Some(self.hosts[h].addr),
        }
    }

    /// The run's ordered trace.
    pub fn trace(&self) -> &[TraceEntry] {
        &self.trace
    }

    /// SHA-256 over the trace so far (hex).
    pub fn digest(&self) -> String {
        hex(self.trace_digest.clone().finish())
    }

    /// SHA-256 over every datagram put on the network, with its time and
    /// addresses (hex): equal digests mean byte-identical runs.
    pub fn wire_digest(&self) -> String {
        hex(self.wire_digest.clone().finish())
    }

    /// Delivery accounting of tracked messages.
    pub fn message_metrics(&self) -> MessageMetrics {
        let mut m = self.messages;
        let (reliable_sent, reliable_delivered) =
            (m.sent - m.unreliable_sent, m.delivered - m.unreliable_delivered);
        m.lost = reliable_sent.saturating_sub(reliable_delivered + m.failed);
        m.unreliable_lost = m.unreliable_sent.saturating_sub(m.unreliable_delivered);
        m
    }

    /// What the network did to datagrams.
    pub fn net_stats(&self) -> NetStats {
        self.net
    }

    /// Takes the events a host's node emitted so far.
    pub fn take_events(&mut self, h: HostId) -> Vec<(Duration, Event)> {
        std::mem::take(&mut self.hosts[h].events)
    }

    // ----- scheduling -----------------------------------------------------

    fn push(&mut self, at: Instant, what: Happening) {
        self.seq += 1;
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.slots[s] = Some(what);
                s
            }
            None => {
                self.slots.push(Some(what));
                self.slots.len() - 1
            }
        };
        self.queue.push(Reverse((at, self.seq, slot)));
    }

    /// Schedules an action at virtual time `at` since the start.
    pub fn schedule(&mut self, at: Duration, action: Action) {
        let at = (self.base + at).max(self.now);
        self.push(at, Happening::Action(action));
    }

    /// Runs until virtual time `t` since the start.
    pub fn run_until(&mut self, t: Duration) {
        let end = self.base + t;
        if !self.running {
            self.running = true;
            self.observe_cluster();
        }
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > end {
                break;
            }
            let Some(Reverse((at, _, slot))) = self.queue.pop() else {
                break;
            };
            let Some(what) = self.slots[slot].take() else {
                continue;
            };
            self.free_slots.push(slot);
            self.check_livelock(at);
            self.now = at;
            crate::log::set_virtual_time(self.now - self.base);
            self.happen(what);
        }
        if end > self.now {
            self.now = end;
        }
    }

    /// Runs for `d` more virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let t = self.elapsed() + d;
        self.run_until(t);
    }

    fn check_livelock(&mut self, at: Instant) {
        if self.same_instant.0 == at {
            self.same_instant.1 += 1;
            assert!(
                self.same_instant.1 <= self.cfg.livelock_limit,
                "livelock: more than {} happenings at virtual time {:?}",
                self.cfg.livelock_limit,
                at - self.base
            );
        } else {
            self.same_instant = (at, 1);
        }
    }

    fn happen(&mut self, what: Happening) {
        match what {
            Happening::Wire { to, from, data, ecn } => self.arrive(to, from, data, ecn),
            Happening::Local { host, from, data, ecn } => self.deliver(host, from, &data, ecn),
            Happening::Timer { host, generation } => {
                let h = &mut self.hosts[host];
                if h.timer_gen != generation || h.timeout.is_none_or(|t| t > self.now) {
                    return;
                }
                h.timeout = None;
                h.bytes.timer_wakeups += 1;
                let now = self.now;
                if let Some(node) = h.node.as_mut() {
                    if let Some(f) = self.scope {
                        f(Some(host));
                        node.handle_timeout(now);
                        f(None);
                    } else {
                        node.handle_timeout(now);
                    }
                    self.drain(host);
                }
            }
            Happening::Disk { host, boot, seq } => {
                let h = &mut self.hosts[host];
                if h.boots != boot || h.node.is_none() {
                    return;
                }
                let done: Vec<p2pcore::RaftWrite> = {
                    let n = h.disk_pending.iter().take_while(|w| w.seq <= seq).count();
                    h.disk_pending.drain(..n).collect()
                };
                for w in &done {
                    p2pcore::apply_raft_write(&mut h.disk, w);
                }
                let now = self.now;
                if let Some(node) = h.node.as_mut() {
                    node.raft_written(now, seq);
                    self.drain(host);
                }
            }
            Happening::Action(a) => self.act(a),
        }
    }

    fn act(&mut self, a: Action) {
        match a {
            Action::Kill(h) => self.kill(h),
            Action::Restart(h) => self.restart(h),
            Action::Partition(groups) => self.partition(&groups),
            Action::Heal => self.heal(),
            Action::Link { patch, between } => self.patch_link(&patch, between),
            Action::Send(spec) => self.send_messages(&spec),
            Action::NatReboot(l) => self.nat_reboot(l),
        }
    }

    /// Crashes a host now.
    pub fn kill(&mut self, h: HostId) {
        let name = self.hosts[h].name.clone();
        let agreed = self.agreed_master();
        if self.hosts[h].node.take().is_some() {
            let lost = self.hosts[h].disk_pending.drain(..).count() as u64;
            self.hosts[h].disk_lost += lost;
            self.hosts[h].timeout = None;
            self.hosts[h].down_since = Some(self.now - self.base);
            self.record("sim", "kill", &name);
            let id = self.hosts[h].id();
            self.watch.on_kill(self.now - self.base, id, agreed);
            self.observe_cluster();
        }
    }

    /// Restarts a crashed host now (same identity, fresh state), or starts a
    /// host added with a delay.
    pub fn restart(&mut self, h: HostId) {
        if self.hosts[h].node.is_none() {
            if self.hosts[h].boots > 0 {
                let name = self.hosts[h].name.clone();
                self.record("sim", "restart", &name);
            }
            self.boot(h);
        }
    }

    fn site_by_name(&self, name: &str) -> Option<Site> {
        if let Some(h) = self.find(name) {
            return Some(self.site_of_host(h));
        }
        self.find_lan(name).map(Site::Lan)
    }

    fn site_of_host(&self, h: HostId) -> Site {
        match self.hosts[h].lan {
            Some(l) => Site::Lan(l),
            None => Site::Host(h),
        }
    }

    /// Cuts every link between sites of different groups (names of hosts or
    /// LANs). Sites not named stay connected to everyone.
    pub fn partition(&mut self, groups: &[Vec<String>]) {
        let mut map = BTreeMap::new();
        for (i, g) in groups.iter().enumerate() {
            for name in g {
                if let Some(site) = self.site_by_name(name) {
                    map.insert(site, i);
                }
            }
        }
        self.partition = Some(map);
        self.record("sim", "partition", &format!("{groups:?}"));
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.partition = None;
        self.record("sim", "heal", "");
    }

    /// Changes link parameters for every link without an override, or for
    /// one pair of sites (named by host or LAN).
    pub fn patch_link(&mut self, patch: &LinkPatch, between: Option<(String, String)>) {
        let pair = between.and_then(|(a, b)| Some((self.site_by_name(&a)?, self.site_by_name(&b)?)));
        let params = match pair {
            None => {
                self.link_default = patch.apply(self.link_default);
                self.link_default
            }
            Some((a, b)) => {
                let key = (a.min(b), a.max(b));
                let p = patch.apply(self.link_params(a, b));
                self.link_override.insert(key, p);
                p
            }
        };
        self.record("sim", "link", &format!("{params:?}"));
    }

    /// Reboots a LAN's NAT.
    pub fn nat_reboot(&mut self, l: LanId) {
        if let Some(nat) = &mut self.lans[l].nat {
            nat.reboot();
        }
        let name = self.lans[l].name.clone();
        self.record("sim", "nat-reboot", &name);
    }

    fn record(&mut self, node: &str, event: &str, detail: &str) {
        let us = (self.now - self.base).as_micros() as u64;
        self.trace_digest.update(format!("{us}\t{node}\t{event}\t{detail}\n").as_bytes());
        self.trace.push(TraceEntry {
            t_ms: us as f64 / 1000.0,
            node: node.into(),
            event: event.into(),
            detail: detail.into(),
        });
    }

    // ----- node I/O -------------------------------------------------------

    /// Drains a node's output in the documented order: transmits, events, timeout.
    fn drain(&mut self, h: HostId) {
        let mut buf = std::mem::take(&mut self.buf);
        let mut out = Vec::new();
        let mut events = Vec::new();
        let mut writes = Vec::new();
        let disk_latency = self.cfg.disk_latency;
        let now = self.now;
        let timeout = {
            let host = &mut self.hosts[h];
            let Some(node) = host.node.as_mut() else {
                self.buf = buf;
                return;
            };
            let disk = &mut host.disk;
            let scope_fn = self.scope;
            let scope = |on: bool| {
                if let Some(f) = scope_fn {
                    f(on.then_some(h));
                }
            };
            // Raft state first: with an instant disk, confirmations can
            // release more transmits.
            while let Some(w) = node.poll_raft_write() {
                if disk_latency.is_zero() {
                    p2pcore::apply_raft_write(disk, &w);
                    node.raft_written(now, w.seq);
                } else {
                    writes.push(w);
                }
            }
            loop {
                scope(true);
                let t = node.poll_transmit(1, &mut buf);
                scope(false);
                let Some(t) = t else { break };
                out.push((t.destination, Bytes::copy_from_slice(&buf[..t.size]), t.ecn));
            }
            scope(true);
            while let Some(e) = node.poll_event() {
                events.push(e);
            }
            let timeout = node.poll_timeout();
            scope(false);
            timeout
        };
        self.buf = buf;
        if let Some(last) = writes.last().map(|w| w.seq) {
            let boot = self.hosts[h].boots;
            self.hosts[h].disk_pending.extend(writes);
            self.push(now + disk_latency, Happening::Disk { host: h, boot, seq: last });
        }
        for (dest, data, ecn) in out {
            self.transmit(h, dest, data, ecn);
        }
        let elapsed = self.elapsed();
        let mut cluster_changed = false;
        let trace = self.cfg.trace;
        for e in events {
            if trace {
                let name = self.hosts[h].name.clone();
                let (kind, detail) = describe(&e, |id| self.name_of(id));
                self.record(&name, kind, &detail);
            }
            self.track_delivery(h, &e);
            self.track_failure(h, &e);
            if let Event::MasterChanged { master, basis, term, epoch } = &e {
                self.watch.masters.push(MasterObservation {
                    t_ms: elapsed.as_secs_f64() * 1000.0,
                    node: self.hosts[h].name.clone(),
                    master: master.map(|m| self.name_of(&m)),
                    basis: basis.map(|b| b.as_str().to_owned()),
                    term: *term,
                    epoch: *epoch,
                });
            }
            if matches!(e, Event::ServerUp { .. } | Event::ServerDown { .. }) {
                self.watch.last_change = elapsed;
            }
            if let Event::PathChanged { peer, path } = &e {
                let old = self.pairs.get(&(h, *peer)).copied();
                if old.is_none_or(|(p, _, _)| p != *path) {
                    let up = match old {
                        Some((Some(_), _, up)) => up,
                        _ => elapsed,
                    };
                    self.pairs.insert((h, *peer), (*path, elapsed, up));
                }
            }
            // The cluster watch is the servers' agreement: only their
            // events can change it (a peer's would cost a scan of every
            // host per event, O(N²) over a join wave).
            cluster_changed |= self.hosts[h].identity.role() == Role::Server
                && matches!(
                    e,
                    Event::MasterChanged { .. } | Event::ServerUp { .. } | Event::ServerDown { .. }
                );
            if trace {
                self.hosts[h].events.push((elapsed, e));
            }
        }
        if cluster_changed {
            self.observe_cluster();
        }
        let host = &mut self.hosts[h];
        if timeout != host.timeout {
            host.timeout = timeout;
            host.timer_gen += 1;
            let generation = host.timer_gen;
            if let Some(t) = timeout {
                let at = t.max(self.now);
                self.push(at, Happening::Timer { host: h, generation });
            }
        }
    }

    fn deliver(&mut self, h: HostId, from: SocketAddr, data: &[u8], ecn: Option<Ecn>) {
        let now = self.now;
        let host = &mut self.hosts[h];
        let Some(node) = host.node.as_mut() else {
            self.net.undeliverable += 1;
            return;
        };
        host.bytes.datagrams_received += 1;
        host.bytes.received += data.len() as u64;
        self.net.delivered += 1;
        if let Some(f) = self.scope {
            f(Some(h));
            node.handle_datagram(now, from, None, ecn, BytesMut::from(data));
            f(None);
        } else {
            node.handle_datagram(now, from, None, ecn, BytesMut::from(data));
        }
        self.drain(h);
    }

    fn site_of_ip(&self, ip: IpAddr) -> Option<Site> {
        if let Some(s) = self.by_ip.get(&ip) {
            return Some(*s);
        }
        None
    }

    fn transmit(&mut self, h: HostId, dest: SocketAddr, data: Bytes, ecn: Option<Ecn>) {
        let now = self.now;
        if self.taps.contains(&h) {
            self.tapped.push((h, dest, data.clone()));
        }
        let src = self.hosts[h].addr;
        {
            let host = &mut self.hosts[h];
            host.bytes.datagrams_sent += 1;
            host.bytes.sent += data.len() as u64;
        }
        let us = (now - self.base).as_micros() as u64;
        self.wire_digest.update(format!("{us} {src} {dest} ").as_bytes());
        self.wire_digest.update(&data);
        let my_lan = self.hosts[h].lan;
        // Inside a NATed LAN: local delivery, hairpin, or translation.
        let public_src = match my_lan {
            Some(l) if self.lans[l].nat.is_some() => {
                let subnet = self.lans[l].subnet;
                if let IpAddr::V4(v4) = dest.ip()
                    && v4.octets()[..3] == subnet
                {
                    self.local(l, dest, src, data, ecn);
                    return;
                }
                let Some(nat) = self.lans[l].nat.as_mut() else {
                    return;
                };
                if dest.ip() == nat.public_ip() {
                    match nat.hairpin(now, src, dest.port()) {
                        Some((from, to)) => self.local(l, to, from, data, ecn),
                        None => self.net.nat_dropped += 1,
                    }
                    return;
                }
                match nat.outbound(now, src, dest) {
                    Some(s) => s,
                    None => {
                        self.net.nat_dropped += 1;
                        return;
                    }
                }
            }
            Some(l) => {
                // Open LAN: talk directly to LAN neighbours.
                if self.site_of_ip(dest.ip()) == Some(Site::Lan(l)) {
                    self.local(l, dest, src, data, ecn);
                    return;
                }
                src
            }
            None => src,
        };
        self.internet(self.site_of_host(h), public_src, dest, data, ecn);
    }

    fn local(&mut self, _lan: LanId, to: SocketAddr, from: SocketAddr, data: Bytes, ecn: Option<Ecn>) {
        let Some(&host) = self.by_addr.get(&to) else {
            self.net.undeliverable += 1;
            return;
        };
        self.net.sent += 1;
        let at = self.now + self.cfg.lan_latency;
        self.push(at, Happening::Local { host, from, data, ecn });
    }

    fn link_params(&self, a: Site, b: Site) -> LinkParams {
        self.link_override.get(&(a.min(b), a.max(b))).copied().unwrap_or(self.link_default)
    }

    fn internet(&mut self, from_site: Site, from: SocketAddr, to: SocketAddr, data: Bytes, ecn: Option<Ecn>) {
        let Some(to_site) = self.site_of_ip(to.ip()) else {
            self.net.undeliverable += 1;
            return;
        };
        if let Some(p) = &self.partition
            && let (Some(a), Some(b)) = (p.get(&from_site), p.get(&to_site))
            && a != b
        {
            self.net.partitioned += 1;
            return;
        }
        let link = self.link_params(from_site, to_site);
        let header = if to.is_ipv4() { 28 } else { 48 };
        if data.len() + header > link.mtu {
            self.net.too_big += 1;
            return;
        }
        self.net.sent += 1;
        if link.loss > 0.0 && self.rng.random_bool(link.loss.clamp(0.0, 1.0)) {
            self.net.lost += 1;
            return;
        }
        // A congested router marks ECN-capable packets instead of dropping them.
        let ecn = match ecn {
            Some(Ecn::Ect0 | Ecn::Ect1)
                if link.ce_mark > 0.0 && self.rng.random_bool(link.ce_mark.clamp(0.0, 1.0)) =>
            {
                self.net.ce_marked += 1;
                Some(Ecn::Ce)
            }
            other => other,
        };
        let copies = if link.duplicate > 0.0 && self.rng.random_bool(link.duplicate.clamp(0.0, 1.0)) {
            self.net.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = link.latency;
            if !link.jitter.is_zero() {
                let j = link.jitter.as_secs_f64() * (self.rng.random::<f64>() * 2.0 - 1.0);
                delay = Duration::from_secs_f64((delay.as_secs_f64() + j).max(0.0));
            }
            let at = if link.reorder > 0.0 && self.rng.random_bool(link.reorder.clamp(0.0, 1.0)) {
                // Hold it back long enough for later packets to overtake it.
                self.net.reordered += 1;
                self.now + delay + link.latency / 2 + link.jitter * 2 + Duration::from_millis(1)
            } else {
                // A queue, not a lottery: never before the previous packet.
                let last = self.last_arrival.entry((from_site, to_site)).or_insert(self.now);
                *last = (*last).max(self.now + delay);
                *last
            };
            self.push(at, Happening::Wire { to, from, data: data.clone(), ecn });
        }
    }

    fn arrive(&mut self, to: SocketAddr, from: SocketAddr, data: Bytes, ecn: Option<Ecn>) {
        match self.site_of_ip(to.ip()) {
            Some(Site::Host(h)) if self.hosts[h].addr == to => self.deliver(h, from, &data, ecn),
            Some(Site::Lan(l)) => {
                let now = self.now;
                if let Some(nat) = self.lans[l].nat.as_mut()
                    && nat.public_ip() == to.ip()
                {
                    match nat.inbound(now, from, to.port()) {
                        Some(internal) => match self.by_addr.get(&internal) {
                            Some(&h) => self.deliver(h, from, &data, ecn),
                            None => self.net.undeliverable += 1,
                        },
                        None => self.net.nat_dropped += 1,
                    }
                    return;
                }
                // An open LAN's host.
                match self.by_addr.get(&to) {
                    Some(&h) => self.deliver(h, from, &data, ecn),
                    None => self.net.undeliverable += 1,
                }
            }
            _ => self.net.undeliverable += 1,
        }
    }

    // ----- cluster observation -------------------------------------------

    /// The Master every running server agrees on, if they all agree and it is running.
    pub fn agreed_master(&self) -> Option<NodeId> {
        let mut agreed = None;
        let mut any = false;
        for h in self.hosts.iter().filter(|h| h.identity.role() == Role::Server) {
            let Some(node) = &h.node else { continue };
            any = true;
            let m = node.master().master?;
            match agreed {
                None => agreed = Some(m),
                Some(a) if a == m => {}
                Some(_) => return None,
            }
        }
        let m = agreed.filter(|_| any)?;
        self.hosts.iter().any(|h| h.id() == m && h.alive()).then_some(m)
    }

    /// Whether every running server lists exactly the running servers as live.
    pub fn server_lists_converged(&self) -> bool {
        let alive: BTreeSet<NodeId> = self
            .hosts
            .iter()
            .filter(|h| h.identity.role() == Role::Server && h.alive())
            .map(Host::id)
            .collect();
        self.hosts.iter().filter(|h| h.identity.role() == Role::Server).all(|h| match &h.node {
            None => true,
            Some(n) => n.servers().iter().filter(|s| s.live).map(|s| s.id).collect::<BTreeSet<_>>() == alive,
        })
    }

    fn observe_cluster(&mut self) {
        if !self.running {
            // Nodes booting while the topology is still being built.
            return;
        }
        let t = self.now - self.base;
        let agreed = self.agreed_master();
        let converged = agreed.is_some() && self.server_lists_converged();
        let all_started =
            self.hosts.iter().filter(|h| h.identity.role() == Role::Server).all(|h| h.boots > 0);
        self.watch.observe(t, agreed, converged && all_started);
    }

    /// Since when every running server has agreed on the Master with
    /// converged server lists (virtual time since the start), if they do now.
    pub fn agreed_since(&self) -> Option<Duration> {
        self.watch.agreed_since
    }

    /// When the last server membership change (a `ServerUp` or `ServerDown`
    /// anywhere) happened, in virtual time since the start.
    pub fn last_membership_change(&self) -> Duration {
        self.watch.last_change
    }

    /// Calls `f(Some(h))` before and `f(None)` after every call into host
    /// `h`'s node, so a test's allocator can charge memory to the node that
    /// allocated it.
    pub fn set_memory_scope(&mut self, f: fn(Option<HostId>)) {
        self.scope = Some(f);
    }

    fn enter(&self, h: Option<HostId>) {
        if let Some(f) = self.scope {
            f(h);
        }
    }

    /// Starts recording every datagram `h` sends (an on-path observer).
    pub fn tap(&mut self, h: HostId) {
        self.taps.insert(h);
    }

    /// Takes the recorded datagrams: (sender, destination, bytes).
    pub fn take_tapped(&mut self) -> Vec<(HostId, SocketAddr, Bytes)> {
        std::mem::take(&mut self.tapped)
    }

    /// The latest path of every pair that reported one, ordered by reporter
    /// and peer names.
    pub fn pair_paths(&self) -> Vec<PairPath> {
        let mut v: Vec<PairPath> = self
            .pairs
            .iter()
            .filter(|((h, _), _)| self.hosts[*h].alive())
            .filter_map(|((h, peer), (path, since, up))| {
                // A pair without a path (its link closed) is not reported.
                let (kind, via) = match (*path)? {
                    p::PathKind::Relayed { via } => ("relayed", Some(self.name_of(&via))),
                    p::PathKind::Direct => ("direct", None),
                    p::PathKind::Punched => ("punched", None),
                    // A kind added to the core after this report was written.
                    _ => ("other", None),
                };
                Some(PairPath {
                    a: self.hosts[*h].name.clone(),
                    b: self.name_of(peer),
                    path: kind.into(),
                    via,
                    since_ms: since.as_secs_f64() * 1000.0,
                    up_ms: up.as_secs_f64() * 1000.0,
                })
            })
            .collect();
        v.sort_by(|x, y| (&x.a, &x.b).cmp(&(&y.a, &y.b)));
        v
    }

    /// Cluster measurements so far.
    pub fn cluster_metrics(&self) -> ClusterMetrics {
        ClusterMetrics {
            cluster_formed_ms: self.watch.formed.map(|d| d.as_secs_f64() * 1000.0),
            masters: self.watch.masters.clone(),
            failover_ms: self.watch.failovers.iter().map(|d| d.as_secs_f64() * 1000.0).collect(),
        }
    }

    // ----- tracked messages ----------------------------------------------

    /// Sends `spec.count` tracked messages now. If the sender is not connected
    /// to the receiver, it first dials the receiver's public address (when it
    /// has one); reliable messages wait for that connection.
    pub fn send_messages(&mut self, spec: &SendSpec) {
        let (from_name, to_name) = (self.hosts[spec.from].name.clone(), self.hosts[spec.to].name.clone());
        self.record(
            "sim",
            "send",
            &format!("{} -> {}: {} x {} bytes", from_name, to_name, spec.count, spec.size),
        );
        let to_id = self.hosts[spec.to].id();
        let from_id = self.hosts[spec.from].id();
        let flow = self.flows.len() as u32;
        self.flows.push(Flow {
            to: spec.to,
            from_id,
            seen: BTreeSet::new(),
            failed: BTreeSet::new(),
            highest: None,
            reliable: spec.reliability == Reliability::Reliable,
        });
        let size = spec.size.max(MSG_HEADER);
        let addr = self.public_addr(spec.to);
        let (mut sent, mut rejected) = (0u64, 0u64);
        let mut numbered = Vec::new();
        // Without servers there is no directory: dial the receiver's public
        // address directly. With servers, nodes route by ID.
        let standalone = self.hosts[spec.from].bootstrap.is_empty();
        let r = self.with_node(spec.from, |node, now| {
            if standalone
                && !node.is_connected(&to_id)
                && let Some(addr) = addr
            {
                let _ = node.connect(now, to_id, addr);
            }
            for seq in 0..spec.count {
                let mut msg = vec![0u8; size];
                msg[..4].copy_from_slice(MSG_MAGIC);
                msg[4..8].copy_from_slice(&flow.to_be_bytes());
                msg[8..12].copy_from_slice(&seq.to_be_bytes());
                match node.send(now, to_id, spec.channel, msg, spec.reliability) {
                    Ok(number) => {
                        sent += 1;
                        numbered.extend(number.map(|n| (n, seq)));
                    }
                    Err(_) => rejected += 1,
                }
            }
        });
        if r.is_none() {
            rejected += u64::from(spec.count);
        }
        self.messages.sent += sent;
        self.messages.rejected += rejected;
        if spec.reliability == Reliability::Unreliable {
            self.messages.unreliable_sent += sent;
        }
        let flow = flow as usize;
        for (number, seq) in numbered {
            self.sent_index.insert((spec.from, to_id, spec.channel, number), (flow, seq));
        }
    }

    /// A sender reported reliable messages as given up on.
    fn track_failure(&mut self, h: HostId, e: &Event) {
        let Event::SendFailed { to, channel, first, last, .. } = e else {
            return;
        };
        let tracked: Vec<(usize, u32)> = self
            .sent_index
            .range((h, *to, *channel, *first)..=(h, *to, *channel, *last))
            .map(|(_, v)| *v)
            .collect();
        for (flow, seq) in tracked {
            let Some(f) = self.flows.get_mut(flow) else { continue };
            if f.seen.contains(&seq) {
                self.messages.misreported += 1;
            } else if f.failed.insert(seq) {
                self.messages.failed += 1;
            }
        }
    }

    fn track_delivery(&mut self, h: HostId, e: &Event) {
        let Event::MessageReceived { from, bytes, .. } = e else {
            return;
        };
        if bytes.len() < MSG_HEADER || &bytes[..4] != MSG_MAGIC {
            return;
        }
        let flow = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
        let seq = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let Some(f) = self.flows.get_mut(flow) else {
            return;
        };
        if f.to != h || f.from_id != *from {
            return;
        }
        if !f.seen.insert(seq) {
            self.messages.duplicated += 1;
            return;
        }
        if f.failed.remove(&seq) {
            // Reported as failed, then delivered after all.
            self.messages.failed -= 1;
            self.messages.misreported += 1;
        }
        self.messages.delivered += 1;
        if !f.reliable {
            self.messages.unreliable_delivered += 1;
        }
        match f.highest {
            Some(hi) if seq < hi => self.messages.reordered += 1,
            _ => f.highest = Some(seq),
        }
    }
}

/// One `MasterChanged` observation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MasterObservation {
    /// When, in virtual milliseconds.
    pub t_ms: f64,
    /// Who observed it.
    pub node: String,
    /// The Master's name, or `None`.
    pub master: Option<String>,
    /// `solo`, `eldest` or `raft`.
    pub basis: Option<String>,
    /// Raft term (0 for other bases).
    pub term: u64,
    /// Raft group (0 for other bases).
    pub epoch: u64,
}

/// How one peer reaches another at the end of a run (the latest `PathChanged`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairPath {
    /// The peer that reported it.
    pub a: String,
    /// The peer it reaches.
    pub b: String,
    /// `direct`, `punched` or `relayed`.
    pub path: String,
    /// The relaying server for `relayed`.
    pub via: Option<String>,
    /// Since when (virtual ms): for `direct` and `punched`, when the pair
    /// went direct.
    pub since_ms: f64,
    /// Since when the pair has had a connection (virtual ms): `since_ms -
    /// up_ms` is how long the move from the relay to a direct path took.
    pub up_ms: f64,
}

/// Cluster measurements of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClusterMetrics {
    /// When every server was first up, listed every other, and agreed on one Master.
    pub cluster_formed_ms: Option<f64>,
    /// Every `MasterChanged` any server reported.
    pub masters: Vec<MasterObservation>,
    /// For each killed Master: time until every running server agreed on a new one.
    pub failover_ms: Vec<f64>,
}

#[derive(Debug, Default)]
struct ClusterWatch {
    formed: Option<Duration>,
    /// Last ServerUp/ServerDown anywhere.
    last_change: Duration,
    /// Since when all running servers agree (with converged lists), if they do.
    agreed_since: Option<Duration>,
    masters: Vec<MasterObservation>,
    /// A killed Master and when it was killed.
    pending_failover: Option<(Duration, NodeId)>,
    failovers: Vec<Duration>,
}

impl ClusterWatch {
    fn on_kill(&mut self, t: Duration, killed: NodeId, agreed: Option<NodeId>) {
        if agreed == Some(killed) && self.pending_failover.is_none() {
            self.pending_failover = Some((t, killed));
        }
    }

    fn observe(&mut self, t: Duration, agreed: Option<NodeId>, formed: bool) {
        if formed && self.formed.is_none() {
            self.formed = Some(t);
        }
        match (formed, self.agreed_since) {
            (true, None) => self.agreed_since = Some(t),
            (false, Some(_)) => self.agreed_since = None,
            _ => {}
        }
        if let Some((t0, dead)) = self.pending_failover
            && let Some(m) = agreed
            && m != dead
        {
            self.failovers.push(t - t0);
            self.pending_failover = None;
        }
    }
}

/// The event's name and a one-line description for the trace; `name` turns
/// node IDs into host names.
pub fn describe(e: &Event, name: impl Fn(&NodeId) -> String) -> (&'static str, String) {
    match e {
        Event::Connected { id, addr, .. } => ("Connected", format!("{} via {addr}", name(id))),
        Event::ConnectFailed { id, addr, error } => (
            "ConnectFailed",
            format!("{} at {addr}: {error}", id.as_ref().map_or_else(|| "?".to_owned(), &name)),
        ),
        Event::Disconnected { id, reason } => ("Disconnected", format!("{}: {reason}", name(id))),
        Event::SendFailed { to, channel, first, last, messages, reason } => (
            "SendFailed",
            format!("{messages} to {} on channel {channel} (#{first}..=#{last}): {reason}", name(to)),
        ),
        Event::Refused { id, addr, reason, by_remote } => (
            "Refused",
            format!(
                "{} at {addr} {}: {reason}",
                name(id),
                if *by_remote { "refused us" } else { "refused by us" }
            ),
        ),
        Event::BootstrapFailed { addr, error, retry_in } => {
            ("BootstrapFailed", format!("{addr}: {error}; retry in {} ms", retry_in.as_millis()))
        }
        Event::ServerUp { id, .. } => ("ServerUp", name(id)),
        Event::ServerDown { id, .. } => ("ServerDown", name(id)),
        Event::MasterChanged { master, basis, term, .. } => (
            "MasterChanged",
            match (master, basis) {
                (Some(m), Some(b)) => format!("{} ({b}, term {term})", name(m)),
                _ => "none".to_owned(),
            },
        ),
        Event::PeerOnline { id, .. } => ("PeerOnline", name(id)),
        Event::PeerOffline { id, .. } => ("PeerOffline", name(id)),
        Event::NetworkUp => ("NetworkUp", String::new()),
        Event::NetworkDown => ("NetworkDown", String::new()),
        Event::PathChanged { peer, path } => (
            "PathChanged",
            match path {
                Some(p::PathKind::Relayed { via }) => format!("{} relayed via {}", name(peer), name(via)),
                Some(p) => format!("{} {p}", name(peer)),
                None => format!("{} no path", name(peer)),
            },
        ),
        Event::MessageReceived { from, channel, bytes, reliability } => (
            "MessageReceived",
            format!("{} bytes from {} on channel {channel} ({reliability:?})", bytes.len(), name(from)),
        ),
        Event::SendReady { to } => ("SendReady", name(to)),
        // Events added to the core later are traced by their debug form.
        other => ("Other", format!("{other:?}")),
    }
}
