//! Two or more nodes on a perfect in-memory network with a virtual clock.
//!
//! The full simulator (latency, loss, NAT) lives in `p2pcore-tests`; these
//! tests pin the core contract with the smallest possible harness.

use bytes::{Bytes, BytesMut};
use p2pcore::{
    Config, ConnectError, DisconnectReason, Ecn, Event, Identity, Node, NodeId, PathKind, Reliability, Role,
    SendError, SendFailure,
};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A datagram on the wire: (deliver at, to, from, bytes, ECN codepoint).
type InFlight = (Instant, SocketAddr, SocketAddr, Vec<u8>, Option<Ecn>);

struct Net {
    now: Instant,
    nodes: Vec<(SocketAddr, Node, Vec<Event>)>,
    /// Each node's deadline as read after its last drain.
    timeouts: Vec<Option<Instant>>,
    wire: VecDeque<InFlight>,
    latency: Duration,
    steps: usize,
    /// Datagrams a node may put in one transmit (more than one: GSO).
    max_datagrams: usize,
    /// Address pairs that cannot reach each other (either direction).
    blocked: Vec<(SocketAddr, SocketAddr)>,
    /// Every segmented transmit: (from, to, segment size, datagrams).
    batches: Vec<(SocketAddr, SocketAddr, usize, usize)>,
    /// Tell each node the local IP a datagram arrived on (its own).
    pass_local: bool,
    /// Every transmit: (from, to, source, first datagram).
    sent: Vec<(SocketAddr, SocketAddr, Option<std::net::IpAddr>, Vec<u8>)>,
}

impl Net {
    fn new() -> Self {
        Self {
            now: Instant::now(),
            nodes: Vec::new(),
            timeouts: Vec::new(),
            wire: VecDeque::new(),
            latency: Duration::from_millis(10),
            steps: 0,
            max_datagrams: 1,
            blocked: Vec::new(),
            batches: Vec::new(),
            pass_local: false,
            sent: Vec::new(),
        }
    }

    fn add(&mut self, role: Role, seed: u8, name: &str) -> usize {
        self.add_with(role, seed, name, |_| {})
    }

    fn add_with(&mut self, role: Role, seed: u8, name: &str, configure: impl FnOnce(&mut Config)) -> usize {
        let addr: SocketAddr = format!("192.0.2.{}:4433", self.nodes.len() + 1).parse().unwrap();
        let mut cfg = Config::new(Identity::from_seed(role, [seed; 32]), name, [seed; 32]);
        cfg.advertise = vec![addr];
        configure(&mut cfg);
        let node = Node::new(cfg, self.now).unwrap();
        self.nodes.push((addr, node, Vec::new()));
        self.timeouts.push(None);
        self.nodes.len() - 1
    }

    fn id(&self, i: usize) -> NodeId {
        self.nodes[i].1.id()
    }

    fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].0
    }

    fn node(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i].1
    }

    /// Drains every node's output in the documented order. A segmented
    /// transmit is cut into its datagrams, as a kernel doing GSO would.
    fn flush(&mut self) {
        let mut buf = Vec::new();
        for (i, (addr, node, events)) in self.nodes.iter_mut().enumerate() {
            while let Some(t) = node.poll_transmit(self.max_datagrams, &mut buf) {
                assert_eq!(buf.len(), t.size);
                let stride = t.segment_size.unwrap_or(t.size);
                let blocked = self
                    .blocked
                    .iter()
                    .any(|&(x, y)| (x, y) == (*addr, t.destination) || (y, x) == (*addr, t.destination));
                if let Some(s) = t.segment_size {
                    self.batches.push((*addr, t.destination, s, t.size.div_ceil(s)));
                }
                self.sent.push((*addr, t.destination, t.source, buf[..stride.min(buf.len())].to_vec()));
                for d in buf.chunks(stride).filter(|_| !blocked) {
                    self.wire.push_back((self.now + self.latency, t.destination, *addr, d.to_vec(), t.ecn));
                }
            }
            while let Some(e) = node.poll_event() {
                events.push(e);
            }
            self.timeouts[i] = node.poll_timeout();
        }
    }

    /// Advances to the next packet delivery or timer; false when idle.
    fn step(&mut self) -> bool {
        self.steps += 1;
        assert!(self.steps < 1_000_000, "livelock: too many steps");
        self.flush();
        let next_timer = self.timeouts.iter().flatten().min().copied();
        let next_packet = self.wire.front().map(|p| p.0);
        let next = match (next_timer, next_packet) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => return false,
            },
        };
        self.now = self.now.max(next);
        while self.wire.front().is_some_and(|p| p.0 <= self.now) {
            // Every datagram due now reaches its node before any node is
            // drained: the batch-feeding pattern of a recvmmsg driver.
            let (_, to, from, data, ecn) = self.wire.pop_front().unwrap();
            if let Some((_, node, _)) = self.nodes.iter_mut().find(|(a, _, _)| *a == to) {
                let local = self.pass_local.then_some(to.ip());
                node.handle_datagram(self.now, from, local, ecn, BytesMut::from(&data[..]));
            }
        }
        for (i, (_, node, _)) in self.nodes.iter_mut().enumerate() {
            if self.timeouts[i].is_some_and(|t| t <= self.now) {
                node.handle_timeout(self.now);
            }
        }
        true
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            if !self.step() {
                break;
            }
        }
        self.flush();
    }

    fn events(&mut self, i: usize) -> Vec<Event> {
        std::mem::take(&mut self.nodes[i].2)
    }
}

fn connected_pair() -> (Net, usize, usize) {
    let mut net = Net::new();
    let a = net.add(Role::Peer, 1, "alice");
    let b = net.add(Role::Peer, 2, "bob");
    let (bid, baddr, now) = (net.id(b), net.addr(b), net.now);
    net.node(a).connect(now, bid, baddr).unwrap();
    net.run_for(Duration::from_millis(500));
    (net, a, b)
}

#[test]
fn handshake_then_reliable_and_unreliable() {
    let (mut net, a, b) = connected_pair();
    let (aid, bid) = (net.id(a), net.id(b));
    let ea = net.events(a);
    let eb = net.events(b);
    assert!(ea.iter().any(|e| matches!(e, Event::Connected { id, name, .. } if *id == bid && name == "bob")));
    assert!(
        eb.iter().any(|e| matches!(e, Event::Connected { id, name, .. } if *id == aid && name == "alice"))
    );
    assert!(net.node(a).is_connected(&bid));

    let now = net.now;
    net.node(a).send(now, bid, 3, Bytes::from_static(b"reliable hello"), Reliability::Reliable).unwrap();
    net.node(a).send(now, bid, 4, Bytes::from_static(b"datagram"), Reliability::Unreliable).unwrap();
    net.run_for(Duration::from_millis(200));
    let eb = net.events(b);
    assert!(eb.contains(&Event::MessageReceived {
        from: aid,
        channel: 3,
        bytes: Bytes::from_static(b"reliable hello"),
        reliability: Reliability::Reliable,
    }));
    assert!(eb.contains(&Event::MessageReceived {
        from: aid,
        channel: 4,
        bytes: Bytes::from_static(b"datagram"),
        reliability: Reliability::Unreliable,
    }));
}

#[test]
fn dialing_the_wrong_id_fails_clearly() {
    let mut net = Net::new();
    let a = net.add(Role::Peer, 1, "alice");
    let b = net.add(Role::Peer, 2, "bob");
    let impostor_target = Identity::from_seed(Role::Peer, [99; 32]).id();
    let (baddr, now) = (net.addr(b), net.now);
    net.node(a).connect(now, impostor_target, baddr).unwrap();
    net.run_for(Duration::from_secs(2));
    let bid = net.id(b);
    let ea = net.events(a);
    let failed = ea
        .iter()
        .find_map(|e| match e {
            Event::ConnectFailed { error, id, .. } => Some((error.clone(), *id)),
            _ => None,
        })
        .expect("a ConnectFailed event");
    assert_eq!(failed.0, ConnectError::WrongNode { expected: impostor_target, found: bid });
    assert_eq!(failed.1, Some(impostor_target));
    assert!(failed.0.to_string().contains("dialed"), "{}", failed.0);
    assert!(!net.node(a).is_connected(&bid));
    assert!(net.events(b).iter().all(|e| !matches!(e, Event::Connected { .. })));
}

#[test]
fn large_messages_and_channel_order() {
    let (mut net, a, b) = connected_pair();
    let (aid, bid) = (net.id(a), net.id(b));
    net.events(b);
    let big: Vec<u8> = (0..(1 << 20) + 123).map(|i| (i % 251) as u8).collect();
    let now = net.now;
    for i in 0..20u32 {
        net.node(a).send(now, bid, 0, i.to_be_bytes().to_vec(), Reliability::Reliable).unwrap();
    }
    net.node(a).send(now, bid, 1, big.clone(), Reliability::Reliable).unwrap();
    net.run_for(Duration::from_secs(10));
    let got: Vec<(u8, Bytes)> = net
        .events(b)
        .into_iter()
        .filter_map(|e| match e {
            Event::MessageReceived { from, channel, bytes, .. } if from == aid => Some((channel, bytes)),
            _ => None,
        })
        .collect();
    let ch0: Vec<u32> = got
        .iter()
        .filter(|(c, _)| *c == 0)
        .map(|(_, b)| u32::from_be_bytes(b[..4].try_into().unwrap()))
        .collect();
    assert_eq!(ch0, (0..20).collect::<Vec<_>>());
    let ch1: Vec<&Bytes> = got.iter().filter(|(c, _)| *c == 1).map(|(_, b)| b).collect();
    assert_eq!(ch1.len(), 1);
    assert_eq!(&ch1[0][..], &big[..]);
}

#[test]
fn send_errors_are_typed() {
    let (mut net, a, b) = connected_pair();
    let (aid, bid) = (net.id(a), net.id(b));
    let now = net.now;
    let stranger = Identity::from_seed(Role::Peer, [77; 32]).id();
    let server = Identity::from_seed(Role::Server, [78; 32]).id();
    let n = net.node(a);
    assert_eq!(n.send(now, aid, 0, vec![1], Reliability::Reliable), Err(SendError::SelfSend));
    assert_eq!(
        n.send(now, stranger, 0, vec![1], Reliability::Reliable),
        Err(SendError::UnknownPeer(stranger)),
        "a peer that is neither connected nor listed is unknown"
    );
    assert_eq!(
        n.send(now, server, 0, vec![1], Reliability::Reliable),
        Err(SendError::NotConnected(server)),
        "servers are reached by dialing them, not through the directory"
    );
    let max = n.max_unreliable_size(&bid).unwrap();
    assert!(max > 1000 && max < 1200, "{max}");
    assert_eq!(
        n.send(now, bid, 0, vec![0; max + 1], Reliability::Unreliable),
        Err(SendError::TooLarge { size: max + 1, max })
    );
    net.flush();
}

#[test]
fn simultaneous_dials_keep_one_connection() {
    let mut net = Net::new();
    let a = net.add(Role::Peer, 1, "alice");
    let b = net.add(Role::Peer, 2, "bob");
    let (aid, bid, aaddr, baddr, now) = (net.id(a), net.id(b), net.addr(a), net.addr(b), net.now);
    net.node(a).connect(now, bid, baddr).unwrap();
    net.node(b).connect(now, aid, aaddr).unwrap();
    net.run_for(Duration::from_secs(2));
    let ea = net.events(a);
    let eb = net.events(b);
    let count = |ev: &[Event]| ev.iter().filter(|e| matches!(e, Event::Connected { .. })).count();
    assert_eq!(count(&ea), 1, "{ea:?}");
    assert_eq!(count(&eb), 1, "{eb:?}");
    assert!(
        ea.iter().chain(&eb).all(|e| !matches!(e, Event::Disconnected { .. } | Event::ConnectFailed { .. }))
    );
    // The survivor is the connection dialed by the larger ID.
    let larger = if aid > bid { a } else { b };
    let link = net.node(larger).links().next().unwrap();
    assert!(link.dialed);
    // And it carries traffic both ways.
    let now = net.now;
    net.node(a).send(now, bid, 0, vec![1], Reliability::Reliable).unwrap();
    net.node(b).send(now, aid, 0, vec![2], Reliability::Reliable).unwrap();
    net.run_for(Duration::from_millis(300));
    assert!(net.events(a).iter().any(|e| matches!(e, Event::MessageReceived { .. })));
    assert!(net.events(b).iter().any(|e| matches!(e, Event::MessageReceived { .. })));
}

#[test]
fn messages_sent_while_dialing_are_delivered() {
    let mut net = Net::new();
    let a = net.add(Role::Peer, 1, "alice");
    let b = net.add(Role::Peer, 2, "bob");
    let (aid, bid, baddr, now) = (net.id(a), net.id(b), net.addr(b), net.now);
    net.node(a).connect(now, bid, baddr).unwrap();
    net.node(a).send(now, bid, 0, vec![42], Reliability::Reliable).unwrap();
    net.run_for(Duration::from_millis(500));
    assert!(net.events(b).iter().any(|e| matches!(e,
        Event::MessageReceived { from, bytes, .. } if *from == aid && bytes[..] == [42])));
}

#[test]
fn dead_remote_is_noticed_within_idle_timeout() {
    let (mut net, a, b) = connected_pair();
    let bid = net.id(b);
    net.events(a);
    // Crash b: it vanishes without a word.
    assert_eq!(b, net.nodes.len() - 1);
    net.nodes.pop();
    net.timeouts.pop();
    let t0 = net.now;
    let mut noticed = None;
    while noticed.is_none() && net.now - t0 < Duration::from_secs(10) {
        assert!(net.step());
        net.flush();
        if net.nodes[a].2.iter().any(|e| matches!(e, Event::Disconnected { .. })) {
            noticed = Some(net.now - t0);
        }
    }
    let ea = net.events(a);
    assert!(
        ea.iter().any(
            |e| matches!(e, Event::Disconnected { id, reason: DisconnectReason::TimedOut } if *id == bid)
        ),
        "{ea:?}"
    );
    assert!(!net.node(a).is_connected(&bid));
    // Default idle timeout is 2.5 s after the last packet heard: the crash is
    // noticed within 3 s.
    let noticed = noticed.unwrap();
    assert!(noticed <= Duration::from_secs(3), "{noticed:?}");
}

#[test]
fn junk_datagrams_are_counted_not_fatal() {
    let (mut net, a, b) = connected_pair();
    let baddr = net.addr(b);
    let now = net.now;
    let n = net.node(a);
    n.handle_datagram(now, baddr, None, None, BytesMut::from(&[][..]));
    n.handle_datagram(now, baddr, None, None, BytesMut::from(&[0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10][..]));
    n.handle_datagram(now, baddr, None, None, BytesMut::from(&[0xc0; 40][..]));
    n.handle_datagram(now, baddr, None, None, BytesMut::from(&[0x41; 1200][..]));
    let d = n.stats().dropped;
    assert_eq!(d.empty, 1);
    assert_eq!(d.bad_magic, 1);
    assert!(d.quic_ignored >= 1);
    net.flush();
    net.run_for(Duration::from_millis(100));
    let bid = net.id(b);
    assert!(net.node(a).is_connected(&bid));
}

#[test]
fn same_seed_same_bytes() {
    fn transcript() -> Vec<Vec<u8>> {
        let mut net = Net::new();
        let a = net.add(Role::Peer, 1, "alice");
        let b = net.add(Role::Server, 2, "s1");
        let (bid, baddr, now) = (net.id(b), net.addr(b), net.now);
        net.node(a).connect(now, bid, baddr).unwrap();
        let mut out = Vec::new();
        for _ in 0..200 {
            net.flush();
            out.extend(net.wire.iter().map(|p| p.3.clone()));
            if !net.step() {
                break;
            }
        }
        out
    }
    let first = transcript();
    assert!(first.len() > 5);
    assert_eq!(first, transcript());
}

#[test]
fn graceful_close_tells_the_remote() {
    let (mut net, a, b) = connected_pair();
    let aid = net.id(a);
    net.events(b);
    let now = net.now;
    net.node(a).close(now);
    net.run_for(Duration::from_millis(500));
    assert!(net.node(a).is_closed());
    let eb = net.events(b);
    assert!(eb.iter().any(|e| matches!(e, Event::Disconnected { id, reason: DisconnectReason::ClosedByRemote { .. } } if *id == aid)), "{eb:?}");
}

/// A pair whose nodes use small buffers and windows, so back-pressure shows quickly.
fn tight_pair() -> (Net, usize, usize) {
    let mut net = Net::new();
    let mut add = |role, seed: u8, name: &str| {
        let addr: SocketAddr = format!("192.0.2.{}:4433", net.nodes.len() + 1).parse().unwrap();
        let mut cfg = Config::new(Identity::from_seed(role, [seed; 32]), name, [seed; 32]);
        cfg.advertise = vec![addr];
        cfg.max_message_size = 64 << 10;
        cfg.send_buffer_limit = 256 << 10;
        cfg.limits.receive_window = 64 << 10;
        cfg.limits.stream_receive_window = 32 << 10;
        cfg.limits.receive_buffer = 64 << 10;
        let node = Node::new(cfg, net.now).unwrap();
        net.nodes.push((addr, node, Vec::new()));
        net.timeouts.push(None);
        net.nodes.len() - 1
    };
    let a = add(Role::Peer, 1, "alice");
    let b = add(Role::Peer, 2, "bob");
    let (bid, baddr) = (net.id(b), net.addr(b));
    let now = net.now;
    net.node(a).connect(now, bid, baddr).unwrap();
    net.run_for(Duration::from_secs(1));
    assert!(net.node(a).is_connected(&bid));
    (net, a, b)
}

#[test]
fn a_paused_receiver_holds_the_sender_back_until_it_resumes() {
    let (mut net, a, b) = tight_pair();
    let (aid, bid) = (net.id(a), net.id(b));
    let now = net.now;
    net.node(b).pause_receiving(now, aid, true);
    assert!(net.node(b).is_receiving_paused(&aid));
    // Send until the buffer is full: flow control stops QUIC taking bytes
    // because b reads nothing.
    let mut sent = 0u32;
    let mut full = false;
    for _ in 0..200 {
        let now = net.now;
        let mut msg = vec![0u8; 16 << 10];
        msg[..4].copy_from_slice(&sent.to_be_bytes());
        match net.node(a).send(now, bid, 5, msg, Reliability::Reliable) {
            Ok(number) => {
                assert_eq!(number, Some(u64::from(sent)), "numbered per channel from 0");
                sent += 1;
            }
            Err(SendError::BufferFull { to, .. }) => {
                assert_eq!(to, bid);
                full = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
        net.run_for(Duration::from_millis(20));
    }
    assert!(full, "the sender's buffer filled after {sent} messages");
    net.run_for(Duration::from_secs(1));
    let got = |events: &[Event]| events.iter().filter(|e| matches!(e, Event::MessageReceived { .. })).count();
    assert_eq!(got(&net.events(b)), 0, "nothing is delivered while paused");
    assert!(!net.events(a).iter().any(|e| matches!(e, Event::SendReady { .. })), "no room yet");
    // Resume: everything arrives once and in order, and the sender hears it has room.
    let now = net.now;
    net.node(b).pause_receiving(now, aid, false);
    net.run_for(Duration::from_secs(2));
    let order: Vec<u32> = net
        .events(b)
        .iter()
        .filter_map(|e| match e {
            Event::MessageReceived { bytes, .. } => Some(u32::from_be_bytes(bytes[..4].try_into().unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(order, (0..sent).collect::<Vec<_>>());
    let ready: Vec<_> = net.events(a).into_iter().filter(|e| matches!(e, Event::SendReady { .. })).collect();
    assert_eq!(ready, vec![Event::SendReady { to: bid }], "told once");
}

#[test]
fn messages_that_waited_for_a_failed_dial_report_its_cause() {
    let mut net = Net::new();
    let a = net.add(Role::Peer, 1, "alice");
    // Nobody answers at this address.
    let ghost = Identity::from_seed(Role::Peer, [9; 32]).id();
    let nowhere: SocketAddr = "192.0.2.200:4433".parse().unwrap();
    let now = net.now;
    net.node(a).connect(now, ghost, nowhere).unwrap();
    for i in 0..3u8 {
        net.node(a).send(now, ghost, 0, vec![i], Reliability::Reliable).unwrap();
    }
    net.run_for(Duration::from_secs(10));
    let events = net.events(a);
    let failed = events.iter().find_map(|e| match e {
        Event::ConnectFailed { id, addr, error } => Some((*id, *addr, error.clone())),
        _ => None,
    });
    assert_eq!(failed, Some((Some(ghost), nowhere, ConnectError::TimedOut)));
    let report = events.iter().find_map(|e| match e {
        Event::SendFailed { to, channel, first, last, messages, reason } => {
            Some((*to, *channel, *first, *last, *messages, reason.clone()))
        }
        _ => None,
    });
    assert_eq!(
        report,
        Some((ghost, 0, 0, 2, 3, SendFailure::Connect(ConnectError::TimedOut))),
        "the dial's own cause, not a generic one, with the sequence range"
    );
    assert_eq!(ConnectError::TimedOut.code(), 6, "codes are stable");
}

/// A server and two peers that find each other through it, every transmit
/// allowed to carry `max_datagrams` datagrams. When `direct` is false the
/// peers cannot reach each other's addresses and must be relayed.
fn peers_via_server(max_datagrams: usize, direct: bool) -> (Net, usize, usize, usize) {
    let mut net = Net::new();
    net.max_datagrams = max_datagrams;
    net.pass_local = true;
    let s = net.add(Role::Server, 10, "s1");
    let saddr = net.addr(s);
    let a = net.add_with(Role::Peer, 11, "alice", |c| c.bootstrap = vec![saddr]);
    let b = net.add_with(Role::Peer, 12, "bob", |c| c.bootstrap = vec![saddr]);
    if !direct {
        net.blocked.push((net.addr(a), net.addr(b)));
    }
    net.run_for(Duration::from_secs(2));
    (net, s, a, b)
}

fn send_big(net: &mut Net, a: usize, b: usize) -> Vec<u8> {
    let (bid, now) = (net.id(b), net.now);
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    net.node(a).send(now, bid, 1, Bytes::from(big.clone()), Reliability::Reliable).unwrap();
    net.run_for(Duration::from_secs(5));
    big
}

fn received(net: &mut Net, b: usize) -> Vec<Bytes> {
    net.events(b)
        .into_iter()
        .filter_map(|e| match e {
            Event::MessageReceived { bytes, .. } => Some(bytes),
            _ => None,
        })
        .collect()
}

#[test]
fn direct_peer_paths_send_segmentation_offload_batches() {
    let (mut net, _, a, b) = peers_via_server(10, true);
    let (aaddr, baddr, bid) = (net.addr(a), net.addr(b), net.id(b));
    let path = net.node(a).links().find(|l| l.id == bid).and_then(|l| l.path);
    assert_eq!(path, Some(PathKind::Direct));
    net.batches.clear();
    let big = send_big(&mut net, a, b);
    assert_eq!(received(&mut net, b), vec![Bytes::from(big)]);
    let batches: Vec<_> = net.batches.iter().filter(|x| (x.0, x.1) == (aaddr, baddr)).collect();
    assert!(!batches.is_empty(), "the peer-to-peer connection used GSO on its direct path");
    assert!(batches.iter().all(|&&(_, _, _, n)| (2..=10).contains(&n)));
}

#[test]
fn relayed_batches_are_wrapped_datagram_by_datagram() {
    let (mut net, s, a, b) = peers_via_server(10, false);
    let (aaddr, saddr, bid) = (net.addr(a), net.addr(s), net.id(b));
    let path = net.node(a).links().find(|l| l.id == bid).and_then(|l| l.path);
    assert!(matches!(path, Some(PathKind::Relayed { .. })), "{path:?}");
    net.batches.clear();
    let relayed_before = net.node(s).stats().relayed_datagrams;
    let big = send_big(&mut net, a, b);
    assert_eq!(received(&mut net, b), vec![Bytes::from(big)]);
    // Each QUIC packet of a batch got its own relay header, and the frames
    // still left as one segmented transmit to the server, which forwarded
    // every one of them (a bad split would fail its frame checks).
    assert!(net.batches.iter().any(|x| (x.0, x.1) == (aaddr, saddr)), "relay frames left in batches");
    let s_stats = *net.node(s).stats();
    assert!(s_stats.relayed_datagrams - relayed_before > 150);
    assert_eq!(s_stats.dropped.relay_rejected, 0);
}

#[test]
fn ecn_stays_on_and_congestion_marks_reach_the_sender() {
    let (mut net, a, b) = connected_pair();
    let bid = net.id(b);
    // Every packet so far carried ECT(0), and acknowledgements came back
    // with ECN counts, so QUIC still marks its packets.
    let (now, mut buf) = (net.now, Vec::new());
    net.node(a).send(now, bid, 0, Bytes::from_static(b"x"), Reliability::Reliable).unwrap();
    let t = net.node(a).poll_transmit(1, &mut buf).expect("a packet for the message");
    assert_eq!(t.ecn, Some(Ecn::Ect0));
    net.wire.push_back((net.now + net.latency, t.destination, net.addr(a), buf.clone(), t.ecn));
    net.run_for(Duration::from_millis(200));
    assert_eq!(net.node(a).links().next().unwrap().congestion_events, 0);
    // A router on the way marks a packet "congestion experienced".
    let now = net.now;
    net.node(a).send(now, bid, 0, Bytes::from_static(b"y"), Reliability::Reliable).unwrap();
    let t = net.node(a).poll_transmit(1, &mut buf).unwrap();
    net.wire.push_back((net.now + net.latency, t.destination, net.addr(a), buf.clone(), Some(Ecn::Ce)));
    net.run_for(Duration::from_millis(200));
    assert_eq!(net.node(a).links().next().unwrap().congestion_events, 1);
    assert_eq!(Ecn::from_bits(0b1011_1111), Some(Ecn::Ce), "the low bits of a TOS byte");
    assert_eq!(Ecn::from_bits(0), None);
}

#[test]
fn transmits_leave_from_the_address_the_remote_reached() {
    let (mut net, s, a, b) = peers_via_server(1, true);
    let (aaddr, baddr, saddr) = (net.addr(a), net.addr(b), net.addr(s));
    net.sent.clear();
    send_big(&mut net, a, b);
    let to_b: Vec<_> = net.sent.iter().filter(|x| (x.0, x.1) == (aaddr, baddr)).collect();
    assert!(to_b.len() > 100, "the message went on the direct path");
    // QUIC packets on the direct peer path and probe answers alike.
    // Pings may leave from any address (the OS picks; a ping is a question).
    let is_ping = |d: &[u8]| p2pcore::wire::decode(d).is_ok_and(|f| f.kind == p2pcore::wire::FrameType::Ping);
    assert!(
        to_b.iter().filter(|x| !is_ping(&x.3)).all(|x| x.2 == Some(aaddr.ip())),
        "every datagram names its source"
    );
    let pongs = net
        .sent
        .iter()
        .filter(|x| p2pcore::wire::decode(&x.3).is_ok_and(|f| f.kind == p2pcore::wire::FrameType::Pong))
        .collect::<Vec<_>>();
    assert!(!pongs.is_empty(), "the direct path is kept alive by probes");
    assert!(pongs.iter().all(|x| x.2 == Some(x.0.ip())), "pongs leave from where the ping arrived");
    // The server accepted the peers' connections: it answers from the
    // address they reached.
    let from_s: Vec<_> = net.sent.iter().filter(|x| x.0 == saddr).collect();
    assert!(!from_s.is_empty() && from_s.iter().all(|x| x.2 == Some(saddr.ip())));
}

/// The `SendFailed` reports of `events`: `(to, channel, first, last, messages, reason)`.
fn send_failures(events: &[Event]) -> Vec<(NodeId, u8, u64, u64, usize, SendFailure)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::SendFailed { to, channel, first, last, messages, reason } => {
                Some((*to, *channel, *first, *last, *messages, reason.clone()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn disconnect_and_close_report_what_they_cut_off() {
    for closing in [false, true] {
        let (mut net, a, b) = connected_pair();
        let bid = net.id(b);
        net.events(a);
        let now = net.now;
        // Delivered and acknowledged first: not reported later.
        for i in 0..5u8 {
            assert_eq!(
                net.node(a).send(now, bid, 2, vec![i], Reliability::Reliable).unwrap(),
                Some(u64::from(i))
            );
        }
        net.run_for(Duration::from_millis(300));
        assert_eq!(net.node(a).unacknowledged(&bid), 0, "acknowledged by the receiver");
        assert_eq!(net.node(a).buffered(&bid), 0);
        // Cut off: never handed to QUIC's wire.
        let now = net.now;
        for i in 0..20u8 {
            net.node(a).send(now, bid, 2, vec![i], Reliability::Reliable).unwrap();
        }
        net.node(a).send(now, bid, 7, vec![1; 10], Reliability::Reliable).unwrap();
        assert_eq!(net.node(a).unacknowledged(&bid), 21);
        if closing {
            net.node(a).close(now);
        } else {
            net.node(a).disconnect(now, bid);
        }
        net.run_for(Duration::from_secs(1));
        let reason = if closing { SendFailure::Closed } else { SendFailure::Disconnected };
        assert_eq!(
            send_failures(&net.events(a)),
            [(bid, 2, 5, 24, 20, reason.clone()), (bid, 7, 0, 0, 1, reason)],
            "one report per channel, with the sequence range"
        );
        assert_eq!(net.node(a).stats().messages_failed, 21);
        let got = net.events(b).iter().filter(|e| matches!(e, Event::MessageReceived { .. })).count();
        assert_eq!(got, 5, "nothing after the cut was delivered");
    }
}

#[test]
fn the_budget_counts_unacknowledged_bytes_and_one_big_message_always_fits() {
    let mut net = Net::new();
    let a = net.add_with(Role::Peer, 1, "alice", |c| c.send_buffer_limit = 1000);
    let b = net.add(Role::Peer, 2, "bob");
    let (bid, baddr, now) = (net.id(b), net.addr(b), net.now);
    net.node(a).connect(now, bid, baddr).unwrap();
    net.run_for(Duration::from_millis(500));
    let now = net.now;
    // Larger than the budget, but nothing else is held: accepted.
    assert_eq!(net.node(a).send(now, bid, 0, vec![0; 5000], Reliability::Reliable).unwrap(), Some(0));
    let err = net.node(a).send(now, bid, 0, vec![1], Reliability::Reliable).unwrap_err();
    assert_eq!(err, SendError::BufferFull { to: bid, buffered: 5000, limit: 1000 });
    // Once acknowledged, room again, and the application is told.
    net.run_for(Duration::from_millis(500));
    assert_eq!(net.node(a).buffered(&bid), 0);
    assert!(net.events(a).contains(&Event::SendReady { to: bid }));
    let now = net.now;
    assert_eq!(net.node(a).send(now, bid, 0, vec![1], Reliability::Reliable).unwrap(), Some(1));
}

/// Steps until node `i` has delivered a message on `channel`; returns how
/// many datagrams node `i` sent in the step that delivered it.
fn step_until_delivered(net: &mut Net, i: usize, channel: u8) -> usize {
    let addr = net.addr(i);
    loop {
        let before = net.sent.iter().filter(|s| s.0 == addr).count();
        assert!(net.step(), "the network went idle before the delivery");
        net.flush();
        if net.nodes[i]
            .2
            .iter()
            .any(|e| matches!(e, Event::MessageReceived { channel: c, .. } if *c == channel))
        {
            return net.sent.iter().filter(|s| s.0 == addr).count() - before;
        }
    }
}

#[test]
fn an_acknowledgement_rides_with_the_reply() {
    let (mut net, a, b) = connected_pair();
    let (aid, bid, baddr) = (net.id(a), net.id(b), net.addr(b));
    // A first exchange opens the channel's streams (new streams earn QUIC
    // flow-control updates of their own) and settles QUIC's ACKs.
    for (from, to) in [(a, bid), (b, aid)] {
        let now = net.now;
        net.node(from).send(now, to, 3, Bytes::from_static(b"warm-up"), Reliability::Reliable).unwrap();
    }
    net.run_for(Duration::from_millis(200));
    net.events(a);
    net.events(b);
    let now = net.now;
    net.node(a).send(now, bid, 3, Bytes::from_static(b"ping"), Reliability::Reliable).unwrap();
    // Delivered: the acknowledgement waits for the turn's end (see the
    // next test) for a reply to ride with. Whatever b sent as it delivered (QUIC
    // may acknowledge the packet at once) is lost on the way: a lone
    // acknowledgement sent then would be lost with it.
    step_until_delivered(&mut net, b, 3);
    net.wire.retain(|d| d.2 != baddr);
    // The reply goes in one datagram and carries the acknowledgement: a has
    // it all the moment the reply arrives.
    let before = net.sent.iter().filter(|s| s.0 == baddr).count();
    let now = net.now;
    net.node(b).send(now, aid, 3, Bytes::from_static(b"pong"), Reliability::Reliable).unwrap();
    net.flush();
    assert_eq!(net.sent.iter().filter(|s| s.0 == baddr).count() - before, 1);
    step_until_delivered(&mut net, a, 3);
    assert_eq!(net.node(a).buffered(&bid), 0, "the reply did not acknowledge the ping");
}

#[test]
fn a_lone_delivery_is_acknowledged_at_the_end_of_the_turn() {
    let (mut net, a, b) = connected_pair();
    let (bid, baddr) = (net.id(b), net.addr(b));
    let now = net.now;
    net.node(a).send(now, bid, 3, Bytes::from_static(b"one way"), Reliability::Reliable).unwrap();
    net.flush();
    // The message reaches b (no timer of b's runs at that instant).
    let at = net.wire.front().expect("the message on the wire").0;
    net.now = at;
    let local = net.pass_local.then_some(baddr.ip());
    while let Some((_, to, from, data, ecn)) = net.wire.pop_front() {
        assert_eq!(to, baddr);
        net.node(b).handle_datagram(at, from, local, ecn, BytesMut::from(&data[..]));
    }
    net.flush();
    assert!(net.events(b).iter().any(|e| matches!(e, Event::MessageReceived { channel: 3, .. })));
    // Nothing to reply with: the node asks for a timeout at once, and that
    // timeout sends the acknowledgement alone (no delay timer a crash could
    // fall into). It takes the 10 ms latency.
    assert_eq!(net.timeouts[b], Some(at), "the owed acknowledgement waits");
    net.run_for(Duration::from_millis(10));
    assert_eq!(net.node(a).buffered(&bid), 0, "the acknowledgement did not go at once");
}

#[test]
fn a_bulk_transfer_is_acknowledged_as_it_arrives() {
    // 2 MiB in 16 KiB messages with a 512 KiB send buffer: acknowledgements
    // every quarter of it keep the sender going without waiting for timers.
    let mut net = Net::new();
    let a = net.add_with(Role::Peer, 1, "alice", |c| c.send_buffer_limit = 512 << 10);
    let b = net.add_with(Role::Peer, 2, "bob", |c| c.send_buffer_limit = 512 << 10);
    let (bid, baddr, now) = (net.id(b), net.addr(b), net.now);
    net.node(a).connect(now, bid, baddr).unwrap();
    net.run_for(Duration::from_millis(500));
    let msg = Bytes::from(vec![7u8; 16 << 10]);
    let (mut sent, mut got) = (0, 0);
    let start = net.now;
    while got < 128 {
        while sent < 128 {
            let now = net.now;
            match net.node(a).send(now, bid, 1, msg.clone(), Reliability::Reliable) {
                Ok(_) => sent += 1,
                Err(SendError::BufferFull { .. }) => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        assert!(net.step());
        net.flush();
        got +=
            net.events(b).iter().filter(|e| matches!(e, Event::MessageReceived { channel: 1, .. })).count();
    }
    // 4 windows of 512 KiB at a 20 ms round trip, give or take slow start:
    // well under a second of virtual time.
    assert!(net.now - start < Duration::from_secs(1), "took {:?}", net.now - start);
}
