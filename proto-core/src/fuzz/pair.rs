//! Target `pair`: two real nodes behind a completed handshake, one speaking
//! to the other as a broken or malicious remote would.

use super::input::Input;
use super::msgs::Pool;
use crate::config::Config;
use crate::event::{Event, Reliability};
use crate::identity::{Identity, NodeId, Role};
use crate::node::Node;
use crate::proto;
use crate::stats::NodeStats;
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One-way latency of the in-memory network.
const LATENCY: Duration = Duration::from_millis(1);
/// Virtual time one input may spend in explicit waits (see [`Pair::run`]).
const MAX_WAIT: Duration = Duration::from_secs(8);
/// Bound on happenings (deliveries and timer firings) in one `drive`: far
/// above what two nodes do in the longest drive, so hitting it is a livelock.
const MAX_STEPS: usize = 200_000;

/// Which two nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairKind {
    /// Node 0 a server, node 1 a peer that bootstraps from it.
    ServerPeer,
    /// Node 0 a server that founds the cluster, node 1 a server joining it.
    ServerServer,
}

/// A reliable or unreliable message a side sent: `(disconnects seen when sent, channel, bytes)`.
type Sent = (u64, u8, Bytes);

/// A reliable message in flight: the harness's sequence number, the
/// node's own sequence number (what `send` returned and `SendFailed`
/// names), whether the node has reported it given up, and what was sent.
struct InFlight {
    seq: u64,
    node_seq: u64,
    given_up: bool,
    sent: Sent,
}

struct Side {
    node: Node,
    addr: SocketAddr,
    timeout: Option<Instant>,
    /// What the harness handed the node and took from it.
    dgrams_in: u64,
    bytes_in: u64,
    dgrams_out: u64,
    bytes_out: u64,
    last_stats: NodeStats,
    /// State according to the node's events.
    connected: BTreeSet<NodeId>,
    online: BTreeSet<NodeId>,
    servers_up: BTreeSet<NodeId>,
    network_up: bool,
    disconnects: u64,
    /// Messages sent by this side: reliable ones in order per channel.
    reliable: BTreeMap<u8, VecDeque<InFlight>>,
    unreliable: BTreeMap<u64, Sent>,
    next_seq: u64,
}

/// Two nodes connected through an in-memory network on a virtual clock,
/// driven in the documented order (transmits until `None`, then events
/// until `None`, then `poll_timeout`, after every input). Every event is
/// checked as it comes out; see [`Pair::check`] for the standing invariants.
pub struct Pair {
    kind: PairKind,
    now: Instant,
    sides: [Side; 2],
    /// `(deliver at, to side, from address, bytes)`, FIFO.
    wire: VecDeque<(Instant, usize, SocketAddr, Vec<u8>)>,
    buf: Vec<u8>,
}

fn fields(s: &NodeStats) -> Vec<u64> {
    let d = &s.dropped;
    vec![
        s.datagrams_in,
        s.bytes_in,
        s.datagrams_out,
        s.bytes_out,
        s.relayed_datagrams,
        s.relayed_bytes,
        s.unroutable,
        s.directory_resyncs,
        s.path_pings,
        s.path_pongs,
        s.path_probe_bytes,
        d.empty,
        d.truncated,
        d.bad_magic,
        d.bad_version,
        d.unknown_type,
        d.raft_rejected,
        d.bad_payload,
        d.unexpected,
        d.quic_ignored,
        d.relay_rejected,
        d.probe_rejected,
        0,
    ]
}

impl Pair {
    /// Builds the two nodes and drives them until each is connected to the
    /// other (and a little longer, so the role traffic that follows a
    /// connection has settled). Panics if they do not connect: that is a bug.
    pub fn new(epoch: Instant, kind: PairKind) -> Self {
        let addr0: SocketAddr = "192.0.2.1:4433".parse().unwrap_or_else(|_| unreachable!());
        let addr1: SocketAddr = "192.0.2.2:4433".parse().unwrap_or_else(|_| unreachable!());
        let (role1, name1) = match kind {
            PairKind::ServerPeer => (Role::Peer, "peer"),
            PairKind::ServerServer => (Role::Server, "server-b"),
        };
        let mut cfg0 = Config::new(Identity::from_seed(Role::Server, [0x61; 32]), "server-a", [0x71; 32]);
        cfg0.advertise = vec![addr0];
        let mut cfg1 = Config::new(Identity::from_seed(role1, [0x62; 32]), name1, [0x72; 32]);
        cfg1.advertise = vec![addr1];
        cfg1.bootstrap = vec![addr0];
        let side = |cfg: Config, addr| Side {
            node: Node::new(cfg, epoch).expect("valid configuration"),
            addr,
            timeout: None,
            dgrams_in: 0,
            bytes_in: 0,
            dgrams_out: 0,
            bytes_out: 0,
            last_stats: NodeStats::default(),
            connected: BTreeSet::new(),
            online: BTreeSet::new(),
            servers_up: BTreeSet::new(),
            network_up: false,
            disconnects: 0,
            reliable: BTreeMap::new(),
            unreliable: BTreeMap::new(),
            next_seq: 0,
        };
        let mut p = Self {
            kind,
            now: epoch,
            sides: [side(cfg0, addr0), side(cfg1, addr1)],
            wire: VecDeque::new(),
            buf: Vec::new(),
        };
        p.drain(0);
        p.drain(1);
        let settle = match kind {
            PairKind::ServerPeer => Duration::from_millis(100),
            // The joiner's Raft membership takes a few election rounds.
            PairKind::ServerServer => Duration::from_millis(1500),
        };
        for _ in 0..100 {
            p.drive(Duration::from_millis(20));
            if p.is_established() {
                break;
            }
        }
        assert!(p.is_established(), "the pair did not connect");
        p.drive(settle);
        p.check();
        p
    }

    /// The pair's kind.
    pub fn kind(&self) -> PairKind {
        self.kind
    }

    /// Whether both nodes have an established connection to each other.
    pub fn is_established(&self) -> bool {
        let (a, b) = (self.sides[0].node.id(), self.sides[1].node.id());
        self.sides[0].node.is_connected(&b) && self.sides[1].node.is_connected(&a)
    }

    fn id(&self, k: usize) -> NodeId {
        self.sides[k].node.id()
    }

    /// Drains side `k` in the documented order, checking every event.
    fn drain(&mut self, k: usize) {
        let other_addr = self.sides[1 - k].addr;
        let now = self.now;
        loop {
            let side = &mut self.sides[k];
            let Some(t) = side.node.poll_transmit(1, &mut self.buf) else { break };
            let count = match t.segment_size {
                Some(s) if s > 0 => t.size.div_ceil(s),
                _ => 1,
            };
            side.dgrams_out += count as u64;
            side.bytes_out += t.size as u64;
            assert!(t.size <= self.buf.len(), "transmit larger than its buffer");
            if t.destination == other_addr {
                self.wire.push_back((now + LATENCY, 1 - k, side.addr, self.buf[..t.size].to_vec()));
            }
            // Anything else (dials of strangers, probes to made-up
            // candidates) goes nowhere.
        }
        while let Some(e) = self.sides[k].node.poll_event() {
            self.on_event(k, e);
        }
        self.sides[k].timeout = self.sides[k].node.poll_timeout();
    }

    fn on_event(&mut self, k: usize, e: Event) {
        let me = self.id(k);
        let other = 1 - k;
        let other_id = self.id(other);
        let side = &mut self.sides[k];
        match e {
            Event::Connected { id, .. } => {
                assert!(side.connected.insert(id), "{me}: Connected twice to {id}");
            }
            Event::Disconnected { id, .. } => {
                assert!(side.connected.remove(&id), "{me}: Disconnected from {id}, which was not connected");
                side.disconnects += 1;
            }
            Event::PeerOnline { id, .. } => {
                assert!(side.online.insert(id), "{me}: PeerOnline twice for {id}");
            }
            Event::PeerOffline { id, .. } => {
                assert!(side.online.remove(&id), "{me}: PeerOffline for {id}, which was not online");
            }
            Event::ServerUp { id, .. } => {
                assert!(side.servers_up.insert(id), "{me}: ServerUp twice for {id}");
            }
            Event::ServerDown { id, .. } => {
                assert!(side.servers_up.remove(&id), "{me}: ServerDown for {id}, which was not up");
            }
            Event::NetworkUp => {
                assert!(!side.network_up, "{me}: NetworkUp twice");
                side.network_up = true;
            }
            Event::NetworkDown => {
                assert!(side.network_up, "{me}: NetworkDown while down");
                side.network_up = false;
            }
            Event::MessageReceived { from, channel, bytes, reliability } => {
                assert!(side.connected.contains(&from), "{me}: message from {from}, which is not connected");
                assert_eq!(from, self.sides[other].node.id(), "{me}: message from a stranger");
                let disconnects = self.sides[0].disconnects + self.sides[1].disconnects;
                let sender = &mut self.sides[other];
                assert!(bytes.len() >= 8, "{me}: message shorter than the harness's sequence number");
                let seq = u64::from_be_bytes(bytes[..8].try_into().unwrap_or_default());
                match reliability {
                    Reliability::Reliable => {
                        let q = sender.reliable.entry(channel).or_default();
                        let pos = q.iter().position(|m| m.seq == seq);
                        let Some(pos) = pos else {
                            panic!(
                                "{me}: reliable message {seq} on channel {channel} was not sent (or came twice)"
                            )
                        };
                        // A message may be skipped only if the sender gave
                        // it up (`SendFailed`, which the core may report
                        // without any connection having been lost, e.g. a
                        // `disconnect` during a redial) or a connection was
                        // lost since it was sent.
                        for lost in q.drain(..pos) {
                            assert!(
                                lost.given_up || disconnects > lost.sent.0,
                                "{me}: reliable message {} on channel {channel} skipped without a disconnect \
                                 or a SendFailed",
                                lost.seq
                            );
                        }
                        let InFlight { sent: (_, ch, sent), .. } =
                            q.pop_front().unwrap_or_else(|| unreachable!());
                        assert_eq!((ch, &sent), (channel, &bytes), "{me}: reliable message {seq} altered");
                    }
                    Reliability::Unreliable => {
                        let Some((_, ch, sent)) = sender.unreliable.remove(&seq) else {
                            panic!("{me}: datagram {seq} was not sent (or came twice)")
                        };
                        assert_eq!((ch, &sent), (channel, &bytes), "{me}: datagram {seq} altered");
                    }
                }
            }
            Event::SendFailed { to, channel, first, last, messages, .. } => {
                assert_eq!(to, other_id, "{me}: SendFailed for a stranger");
                assert!(first <= last, "{me}: SendFailed range {first}..={last} is empty");
                assert_eq!(Some(messages as u64), (last - first).checked_add(1), "{me}: SendFailed count");
                // Given up is not lost: a message in flight when the
                // sender gave up may still arrive, so it is excused, not
                // removed.
                for m in side.reliable.entry(channel).or_default() {
                    if (first..=last).contains(&m.node_seq) {
                        m.given_up = true;
                    }
                }
            }
            Event::ConnectFailed { .. }
            | Event::Refused { .. }
            | Event::BootstrapFailed { .. }
            | Event::MasterChanged { .. }
            | Event::PathChanged { .. }
            | Event::SendReady { .. } => {}
            // The harness makes no store requests; an answer to none is a bug.
            Event::KvDone { id, .. } => panic!("{me}: store answer {id} without a request"),
            Event::LookupDone { query, .. } => panic!("{me}: lookup answer {query} without a lookup"),
            Event::KvWatch { id, .. } | Event::KvWatchEnded { id, .. } => {
                panic!("{me}: watch {id} reported without a watch")
            }
            Event::Coord(e) => panic!("{me}: coordination event without a request: {e:?}"),
        }
    }

    /// Runs the network and the timers for `budget` of virtual time (or
    /// until nothing is left to do before then).
    pub fn drive(&mut self, budget: Duration) {
        let end = self.now + budget;
        for _ in 0..MAX_STEPS {
            let packet = self.wire.front().map(|p| p.0);
            let timer = self.sides.iter().filter_map(|s| s.timeout).min();
            let next = match (packet, timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => return,
                },
            };
            if next > end {
                self.now = self.now.max(end);
                return;
            }
            self.now = self.now.max(next);
            while self.wire.front().is_some_and(|p| p.0 <= self.now) {
                let Some((_, to, from, data)) = self.wire.pop_front() else { break };
                let side = &mut self.sides[to];
                side.dgrams_in += 1;
                side.bytes_in += data.len() as u64;
                side.node.handle_datagram(self.now, from, None, None, BytesMut::from(&data[..]));
                self.drain(to);
            }
            for k in 0..2 {
                if self.sides[k].timeout.is_some_and(|t| t <= self.now) {
                    self.sides[k].node.handle_timeout(self.now);
                    self.drain(k);
                }
            }
        }
        panic!("livelock: {MAX_STEPS} happenings in {budget:?} of virtual time");
    }

    /// The standing invariants, for both nodes: the traffic counters are
    /// exactly what the harness handed over and took, no counter ever goes
    /// down, and the getters agree with the events.
    pub fn check(&mut self) {
        for k in 0..2 {
            let s = &mut self.sides[k];
            let me = s.node.id();
            let st = *s.node.stats();
            assert_eq!(st.datagrams_in, s.dgrams_in, "{me}: datagrams_in");
            assert_eq!(st.bytes_in, s.bytes_in, "{me}: bytes_in");
            assert_eq!(st.datagrams_out, s.dgrams_out, "{me}: datagrams_out");
            assert_eq!(st.bytes_out, s.bytes_out, "{me}: bytes_out");
            for (i, (now, before)) in fields(&st).iter().zip(fields(&s.last_stats)).enumerate() {
                assert!(*now >= before, "{me}: counter {i} of NodeStats went down");
            }
            s.last_stats = st;
            let links: BTreeSet<NodeId> = s.node.links().map(|l| l.id).collect();
            assert_eq!(links, s.connected, "{me}: links() vs Connected/Disconnected events");
            for id in &s.connected {
                assert!(s.node.is_connected(id), "{me}: is_connected({id})");
            }
            let online: BTreeSet<NodeId> = s.node.peers().iter().map(|p| p.id).collect();
            assert_eq!(online, s.online, "{me}: peers() vs PeerOnline/PeerOffline events");
            let live: BTreeSet<NodeId> =
                s.node.servers().iter().filter(|i| i.live && i.id != me).map(|i| i.id).collect();
            assert_eq!(live, s.servers_up, "{me}: servers() vs ServerUp/ServerDown events");
            if s.node.role() == Role::Peer {
                assert_eq!(s.node.network_up(), s.network_up, "{me}: network_up() vs events");
            }
        }
    }

    /// Side `from` sends a user message to the other side through the API.
    fn send_user(&mut self, from: usize, channel: u8, payload: &[u8], reliability: Reliability) {
        let to = self.id(1 - from);
        let disconnects = self.sides[0].disconnects + self.sides[1].disconnects;
        let s = &mut self.sides[from];
        let seq = s.next_seq;
        s.next_seq += 1;
        let mut bytes = seq.to_be_bytes().to_vec();
        bytes.extend_from_slice(payload);
        let bytes = Bytes::from(bytes);
        if let Ok(node_seq) = s.node.send(self.now, to, channel, bytes.clone(), reliability) {
            match (reliability, node_seq) {
                (Reliability::Reliable, Some(node_seq)) => {
                    s.reliable.entry(channel).or_default().push_back(InFlight {
                        seq,
                        node_seq,
                        given_up: false,
                        sent: (disconnects, channel, bytes),
                    })
                }
                (Reliability::Reliable, None) => panic!("reliable send accepted without a sequence number"),
                (Reliability::Unreliable, _) => {
                    s.unreliable.insert(seq, (disconnects, channel, bytes));
                }
            }
        }
        self.drain(from);
    }

    /// Side `from` writes raw bytes on its control stream to the other side.
    fn write_control(&mut self, from: usize, bytes: &[u8]) {
        let to = self.id(1 - from);
        self.sides[from].node.fuzz_write_control(self.now, &to, bytes);
        self.drain(from);
    }

    /// Feeds one input: a sequence of injections, each followed by a few
    /// milliseconds of network, then two seconds of quiet and the checks.
    pub fn run(&mut self, data: &[u8]) {
        let mut i = Input::new(data);
        let ids = [self.id(0), self.id(1)];
        let addrs = [self.sides[0].addr, self.sides[1].addr];
        let mut ops = 0;
        // Virtual time an input may ask for: long waits cost real time
        // (every Raft tick runs), and a few seconds reach every timer that
        // matters (keep-alive 1 s, idle 2.5 s, hello 5 s, backoff 0.25 s+).
        let mut wait_left = MAX_WAIT;
        while !i.is_empty() && ops < 64 {
            ops += 1;
            let sel = i.u8();
            let from = usize::from(sel & 1);
            let role = self.sides[from].node.role();
            let mut clusters = Vec::new();
            let mut raft_ids = Vec::new();
            for s in &self.sides {
                if let Some(v) = s.node.raft_view() {
                    clusters.extend(v.epoch);
                    raft_ids.push(v.raft_id);
                    raft_ids.extend(v.voters.iter().map(|(r, _)| *r));
                }
            }
            let epochs: Vec<u64> = self.sides.iter().filter_map(|s| s.node.kv_epoch()).collect();
            let pool =
                Pool { ids: &ids, addrs: &addrs, clusters: &clusters, raft_ids: &raft_ids, epochs: &epochs };
            match (sel >> 1) % 16 {
                // A well-formed control message built from the input.
                0..=4 => {
                    let msg = pool.control(&mut i, role, 3);
                    self.write_control(from, &proto::encode(&msg));
                }
                // A correctly framed payload of input bytes (postcard or not).
                5 | 6 => {
                    let body = i.chunk(255);
                    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
                    frame.extend_from_slice(body);
                    self.write_control(from, &frame);
                }
                // Raw bytes, no framing: a torn or lying stream.
                7 => {
                    let raw = i.chunk(64);
                    self.write_control(from, raw);
                }
                8 => {
                    let mut frame = i.u32().to_be_bytes().to_vec();
                    frame.extend_from_slice(i.chunk(64));
                    self.write_control(from, &frame);
                }
                9 | 10 => {
                    let channel = i.u8();
                    let payload = i.chunk(255);
                    self.send_user(from, channel, payload, Reliability::Reliable);
                }
                11 => {
                    let channel = i.u8();
                    let payload = i.chunk(255);
                    self.send_user(from, channel, payload, Reliability::Unreliable);
                }
                12 => {
                    let wait = Duration::from_millis(u64::from(i.u16() % 4000)).min(wait_left);
                    wait_left -= wait;
                    self.drive(wait);
                }
                // A stray datagram from the other node's address (raw frame or QUIC).
                13 => {
                    let data = i.chunk(255).to_vec();
                    let to = 1 - from;
                    let src = self.sides[from].addr;
                    let side = &mut self.sides[to];
                    side.dgrams_in += 1;
                    side.bytes_in += data.len() as u64;
                    side.node.handle_datagram(self.now, src, None, None, BytesMut::from(&data[..]));
                    self.drain(to);
                }
                14 => {
                    let to = self.id(1 - from);
                    let now = self.now;
                    match i.u8() % 4 {
                        0 => self.sides[from].node.disconnect(now, to),
                        1 => self.sides[from].node.set_load(now, i.u32()),
                        _ => {
                            let local = (0..i.below(3)).map(|_| pool.addr(&mut i)).collect();
                            self.sides[from].node.set_local_addrs(now, local);
                        }
                    }
                    self.drain(from);
                }
                _ => self.drive(Duration::from_millis(50)),
            }
            self.drive(Duration::from_millis(3));
            self.check();
        }
        self.drive(Duration::from_secs(2));
        self.check();
    }
}

/// Target `pair` on a fresh pair: the first input byte picks server ↔ peer
/// (even) or server ↔ server (odd); the rest is [`Pair::run`]'s input.
/// Deterministic: the same input always does the same thing, which makes
/// this the way to replay an input found by [`PairFuzzer`].
pub fn pair(epoch: Instant, data: &[u8]) {
    let kind =
        if data.first().is_some_and(|b| b & 1 == 1) { PairKind::ServerServer } else { PairKind::ServerPeer };
    let mut p = Pair::new(epoch, kind);
    p.run(data.get(1..).unwrap_or_default());
}

/// Target `pair` for AFL's persistent mode: keeps one pair of each kind
/// across inputs and builds a new one only when the old one lost its
/// connection or has served [`PairFuzzer::REUSE`] inputs, because the TLS
/// handshake and the settling of a fresh pair cost far more than an input.
///
/// An input's effect then depends on the inputs before it on the same pair.
/// A crash is first replayed with [`pair`], on a fresh pair (and minimised
/// that way if it reproduces). One that needs its history does not; for
/// those the AFL binary writes the inputs the crashed pair had served
/// ([`PairFuzzer::needs_new_pair`] tells where a history starts) and can
/// replay such a sequence through a `PairFuzzer`, which is deterministic
/// too: the same inputs in the same order do the same thing.
pub struct PairFuzzer {
    epoch: Instant,
    pairs: [Option<(Pair, u32)>; 2],
}

impl PairFuzzer {
    /// Inputs one pair serves before it is rebuilt (bounds the history an
    /// input can depend on).
    pub const REUSE: u32 = 64;

    /// A fuzzer whose pairs start at `epoch`.
    pub fn new(epoch: Instant) -> Self {
        Self { epoch, pairs: [None, None] }
    }

    /// Whether [`PairFuzzer::run`] would build a new pair for `data`: the
    /// inputs since the last `true` are the history an input can depend on
    /// (the AFL binary keeps them to write out when a crash happens).
    pub fn needs_new_pair(&self, data: &[u8]) -> bool {
        match &self.pairs[Self::slot(data)] {
            Some((p, n)) => *n >= Self::REUSE || !p.is_established(),
            None => true,
        }
    }

    fn slot(data: &[u8]) -> usize {
        usize::from(data.first().is_some_and(|b| b & 1 == 1))
    }

    /// Runs one input (same format as [`pair`]).
    pub fn run(&mut self, data: &[u8]) {
        let slot = Self::slot(data);
        let kind = if slot == 1 { PairKind::ServerServer } else { PairKind::ServerPeer };
        let fresh = self.needs_new_pair(data);
        let (mut p, uses) = match self.pairs[slot].take() {
            Some((p, n)) if !fresh => (p, n),
            _ => (Pair::new(self.epoch, kind), 0),
        };
        p.run(data.get(1..).unwrap_or_default());
        self.pairs[slot] = Some((p, uses + 1));
    }
}
