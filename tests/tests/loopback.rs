//! Over real UDP sockets on loopback: one server and two peers, driven by a
//! minimal single-threaded loop of std sockets: the core's contract needs no
//! driver (the mio host's own real-socket tests are in `driver-mio/tests`). The
//! peers register, find each other by ID, start on the relay, move to the
//! direct path (both advertise their loopback address) and exchange reliable
//! and unreliable messages. Deadlines are generous wall-clock limits on a
//! condition, never sleeps that hope for timing.

use bytes::{Bytes, BytesMut};
use p2pcore::{Config, Event, Identity, Node, NodeId, PathKind, Reliability, Role};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

struct Host {
    node: Node,
    socket: UdpSocket,
    events: Vec<Event>,
}

fn host(role: Role, name: &str, n: u8, bootstrap: Option<SocketAddr>) -> Host {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_nonblocking(true).unwrap();
    let identity = Identity::from_seed(role, [n; 32]);
    let mut config = Config::new(identity, name, [n.wrapping_add(100); 32]);
    config.advertise = vec![socket.local_addr().unwrap()];
    config.bootstrap = bootstrap.into_iter().collect();
    let node = Node::new(config, Instant::now()).unwrap();
    Host { node, socket, events: Vec::new() }
}

/// Sends everything queued, then collects events (the drain order the
/// `Node` contract asks for before `poll_timeout`).
fn drain(h: &mut Host) {
    let mut out = Vec::new();
    while let Some(t) = h.node.poll_transmit(1, &mut out) {
        // Loopback never refuses a datagram of this size; a failure here
        // is a real error worth failing the test on.
        h.socket.send_to(&out[..t.size], t.destination).unwrap();
        out.clear();
    }
    while let Some(e) = h.node.poll_event() {
        h.events.push(e);
    }
}

/// One pass of the loop for every host: receive everything waiting, run due
/// timers, and drain after each input.
fn turn(hosts: &mut [Host]) {
    let mut buf = vec![0u8; 65536];
    for h in hosts.iter_mut() {
        let now = Instant::now();
        while let Ok((n, from)) = h.socket.recv_from(&mut buf) {
            h.node.handle_datagram(now, from, None, None, BytesMut::from(&buf[..n]));
        }
        drain(h);
        if h.node.poll_timeout().is_some_and(|t| t <= now) {
            h.node.handle_timeout(now);
            drain(h);
        }
    }
}

/// Turns the loop until `cond` holds, or fails after `limit` of wall time.
fn until(hosts: &mut [Host], limit: Duration, what: &str, mut cond: impl FnMut(&[Host]) -> bool) {
    let start = Instant::now();
    while !cond(hosts) {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        turn(hosts);
        // Yield the CPU between passes; the loop is driven by the sockets
        // and the nodes' deadlines, not by this pause.
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn path_to(h: &Host, peer: NodeId) -> Option<PathKind> {
    h.node.link_table().into_iter().find(|r| r.id == peer).map(|r| r.path)
}

#[test]
fn two_peers_go_direct_over_real_sockets() {
    let server = host(Role::Server, "s1", 1, None);
    let server_addr = server.socket.local_addr().unwrap();
    let a = host(Role::Peer, "alice", 2, Some(server_addr));
    let b = host(Role::Peer, "bob", 3, Some(server_addr));
    let (a_id, b_id) = (a.node.id(), b.node.id());
    let mut hosts = vec![server, a, b];
    let limit = Duration::from_secs(20);

    until(&mut hosts, limit, "the peers to see each other", |h| {
        h[1].node.peers().iter().any(|p| p.id == b_id) && h[2].node.peers().iter().any(|p| p.id == a_id)
    });
    until(&mut hosts, limit, "a direct path", |h| {
        path_to(&h[1], b_id) == Some(PathKind::Direct) && path_to(&h[2], a_id) == Some(PathKind::Direct)
    });
    // It started on the relay.
    let relayed_first = hosts[1].events.iter().find_map(|e| match e {
        Event::PathChanged { peer, path: Some(p) } if *peer == b_id => Some(*p),
        _ => None,
    });
    assert!(matches!(relayed_first, Some(PathKind::Relayed { .. })), "{relayed_first:?}");

    // Messages by ID, on the direct path.
    let now = Instant::now();
    for i in 0..100u32 {
        let msg = Bytes::from(i.to_be_bytes().to_vec());
        hosts[1].node.send(now, b_id, 0, msg, Reliability::Reliable).unwrap();
    }
    hosts[2].node.send(now, a_id, 1, Bytes::from_static(b"hi"), Reliability::Unreliable).unwrap();
    until(&mut hosts, limit, "the messages", |h| {
        h[2].events.iter().filter(|e| matches!(e, Event::MessageReceived { .. })).count() == 100
    });
    let got: Vec<u32> = hosts[2]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::MessageReceived { from, bytes, .. } if *from == a_id => {
                Some(u32::from_be_bytes(bytes[..4].try_into().unwrap()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(got, (0..100).collect::<Vec<_>>(), "exactly once, in order");
    // The unreliable one may be lost in principle; on loopback it is not.
    until(&mut hosts, limit, "the datagram", |h| {
        h[1].events.iter().any(|e| matches!(e, Event::MessageReceived { from, .. } if *from == b_id))
    });
    // The server relayed only the start.
    let relayed = hosts[0].node.stats().relayed_datagrams;
    assert!(relayed < 50, "{relayed} datagrams relayed");
    assert!(hosts[1].node.stats().path_pongs > 0);
}
