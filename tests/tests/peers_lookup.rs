//! Directory lookup mode (`DirectoryMode::Lookup`): peers learn only the rows
//! they ask for, and a join costs servers O(peers interested), not O(all).
//!
//! * A lookup-mode peer that joins gets no directory, and its neighbours'
//!   joins send it nothing.
//! * A send to an ID it does not know looks the ID up, dials and delivers;
//!   the receiver, which never looked the sender up, answers through the
//!   relay its packets came by and learns the sender; the two then find a
//!   direct path.
//! * `Node::lookup` by name; a send to an ID nobody lists fails with
//!   `ConnectError::NotFound`.
//! * A peer looked up is watched: its departure and return reach the
//!   watcher (`PeerOffline`, `PeerOnline`).
//! * Full-mode peers still see everyone, lookup-mode peers included.

mod common;

use common::run_until;
use p2pcore::{
    ConnectError, ConnectPolicy, DirectoryMode, Event, LookupKey, PathKind, Reliability, SendFailure,
};
use p2pcore_tests::sim::{HostId, LinkParams, NodeSpec, SendSpec, Sim};
use std::time::Duration;

/// Three servers and `n` public peers; those at index in `full` use the full
/// directory, the rest look up.
fn network(seed: u64, n: usize, full: &[usize]) -> (Sim, Vec<HostId>, Vec<HostId>) {
    let mut sim = common::sim_with(seed, LinkParams::default());
    let full_names: Vec<String> = full.iter().map(|i| format!("p{i}")).collect();
    sim.set_configure(move |c, h| {
        c.peer.connect = ConnectPolicy::OnDemand;
        if !full_names.contains(&h.name) {
            c.peer.directory = DirectoryMode::Lookup;
        }
    });
    let s1 = sim.add_node(NodeSpec::server("s1"));
    let s2 = sim.add_node(NodeSpec::server("s2").via(&[s1]));
    let s3 = sim.add_node(NodeSpec::server("s3").via(&[s1]));
    let servers = vec![s1, s2, s3];
    let peers = (0..n).map(|i| sim.add_node(NodeSpec::peer(&format!("p{i}"), None).via(&servers))).collect();
    sim.run_for(Duration::from_secs(5));
    (sim, servers, peers)
}

fn send(sim: &mut Sim, from: HostId, to: HostId, count: u32) {
    sim.send_messages(&SendSpec {
        from,
        to,
        count,
        size: 200,
        reliability: Reliability::Reliable,
        channel: 1,
    });
}

#[test]
fn a_lookup_mode_peer_learns_only_what_it_asks_for_and_reaches_it() {
    let (mut sim, servers, peers) = network(61, 12, &[]);
    for p in &peers {
        assert!(sim.node(*p).unwrap().network_up(), "every peer is linked");
        assert!(sim.node(*p).unwrap().peers().is_empty(), "no directory without a lookup");
    }
    // Every server still lists every peer (table A).
    for s in &servers {
        assert_eq!(sim.node(*s).unwrap().directory().len(), peers.len());
    }
    // Joins cost a lookup-mode peer nothing: a newcomer's arrival sends the
    // others no directory message (their received bytes stay at keep-alive level).
    let before: Vec<u64> = peers.iter().map(|p| sim.host(*p).bytes.received).collect();
    sim.run_for(Duration::from_secs(3));
    let idle: Vec<u64> = peers.iter().zip(&before).map(|(p, b)| sim.host(*p).bytes.received - b).collect();
    let before: Vec<u64> = peers.iter().map(|p| sim.host(*p).bytes.received).collect();
    let late = sim.add_node(NodeSpec::peer("late", None).via(&servers));
    sim.run_for(Duration::from_secs(3));
    for ((p, b), i) in peers.iter().zip(&before).zip(&idle) {
        let got = sim.host(*p).bytes.received - b;
        assert!(got <= i + 300, "a join cost a lookup-mode peer {got} bytes (idle {i})");
        assert!(sim.node(*p).unwrap().peers().is_empty());
    }

    // p0 sends to p1 by ID: looked up, dialed, delivered.
    let (a, b) = (peers[0], peers[1]);
    send(&mut sim, a, b, 20);
    // p1 replies without ever having looked p0 up.
    let reply_sent = run_until(&mut sim, Duration::from_secs(5), |sim| common::linked(sim, b, a));
    assert!(reply_sent.is_some(), "the connection came up");
    send(&mut sim, b, a, 20);
    sim.run_for(Duration::from_secs(3));
    let m = sim.message_metrics();
    assert_eq!((m.sent, m.delivered, m.failed, m.lost), (40, 40, 0, 0), "{m:?}");
    // Each learned the other (and only the other).
    let ids =
        |sim: &Sim, h: HostId| -> Vec<_> { sim.node(h).unwrap().peers().iter().map(|p| p.id).collect() };
    assert_eq!(ids(&sim, a), [sim.host(b).id()]);
    assert_eq!(ids(&sim, b), [sim.host(a).id()]);
    assert_eq!(sim.node(a).unwrap().peers()[0].via.len(), 3, "every server answered");
    // And found a direct path (both are public).
    let direct = run_until(&mut sim, Duration::from_secs(10), |sim| {
        sim.node(a)
            .unwrap()
            .link_table()
            .iter()
            .any(|l| l.id == sim.host(b).id() && l.path == PathKind::Direct)
    });
    assert!(direct.is_some(), "no direct path: {:?}", sim.node(a).unwrap().link_table());
    let _ = late;
}

#[test]
fn lookups_by_name_unknown_ids_and_watched_peers() {
    let (mut sim, _servers, peers) = network(62, 6, &[5]);
    let (a, b, full) = (peers[0], peers[1], peers[5]);
    let b_id = sim.host(b).id();
    let _ = common::events(&mut sim, a);

    // By name: one answer, naming p1, now in the directory.
    let query = sim.with_node(a, |n, now| n.lookup(now, LookupKey::Name("p1".into()))).unwrap().unwrap();
    sim.run_for(Duration::from_secs(1));
    let events = common::events(&mut sim, a);
    let found = events.iter().find_map(|e| match e {
        Event::LookupDone { query: q, peers } if *q == query => Some(peers.clone()),
        _ => None,
    });
    let found = found.expect("the lookup was answered");
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].id, found[0].name.as_str()), (b_id, "p1"));
    assert!(events.iter().any(|e| matches!(e, Event::PeerOnline { id, .. } if *id == b_id)));
    // A name nobody has: an empty answer.
    let query = sim.with_node(a, |n, now| n.lookup(now, LookupKey::Name("nobody".into()))).unwrap().unwrap();
    sim.run_for(Duration::from_secs(1));
    let events = common::events(&mut sim, a);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::LookupDone { query: q, peers } if *q == query && peers.is_empty()))
    );
    // Names longer than any node's are refused at once.
    let long = "x".repeat(65);
    let err = sim.with_node(a, |n, now| n.lookup(now, LookupKey::Name(long))).unwrap();
    assert!(matches!(err, Err(p2pcore::LookupError::NameTooLong(65))), "{err:?}");

    // A send to an ID nobody lists: accepted, then reported as not found.
    let ghost = p2pcore::Identity::from_seed(p2pcore::Role::Peer, [7; 32]).id();
    let seq = sim.with_node(a, |n, now| n.send(now, ghost, 1, &b"hello"[..], Reliability::Reliable)).unwrap();
    assert!(seq.is_ok(), "{seq:?}");
    sim.run_for(Duration::from_secs(1));
    let events = common::events(&mut sim, a);
    assert!(
        events.iter().any(|e| matches!(e, Event::SendFailed { to, reason: SendFailure::Connect(ConnectError::NotFound), .. } if *to == ghost)),
        "{events:?}"
    );

    // p1 is watched: its crash and return reach p0.
    sim.kill(b);
    let gone = run_until(&mut sim, Duration::from_secs(10), |sim| sim.node(a).unwrap().peers().is_empty());
    assert!(gone.is_some(), "p0 still lists p1");
    assert!(
        common::events(&mut sim, a).iter().any(|e| matches!(e, Event::PeerOffline { id, .. } if *id == b_id))
    );
    sim.restart(b);
    let back = run_until(&mut sim, Duration::from_secs(10), |sim| sim.node(a).unwrap().peers().len() == 1);
    assert!(back.is_some(), "p0 did not see p1 return");

    // The full-mode peer sees every peer, lookup-mode ones included.
    assert_eq!(sim.node(full).unwrap().peers().len(), peers.len() - 1);
}

#[test]
fn the_lookup_scenario_delivers_everything_and_punches_through_nats() {
    let text = include_str!("../scenarios/peers-lookup.toml");
    let loaded = p2pcore_tests::scenario::Loaded::parse(text).unwrap();
    let mut sim = loaded.build(23);
    sim.run_until(loaded.duration());
    let m = sim.message_metrics();
    assert_eq!((m.sent, m.delivered, m.failed, m.lost, m.duplicated), (900, 900, 0, 0, 0), "{m:?}");
    let paths: Vec<(String, String, String)> =
        sim.pair_paths().into_iter().map(|p| (p.a, p.b, p.path)).collect();
    for (a, b, path) in &paths {
        assert!(path == "punched" || path == "direct", "{a} -> {b}: {path} ({paths:?})");
    }
    // Nobody learned more than the peers it talked to.
    for name in ["alice", "bob", "carol", "dave"] {
        let h = sim.find(name).unwrap();
        assert!(sim.node(h).unwrap().peers().len() <= 2, "{name} knows {:?}", sim.node(h).unwrap().peers());
    }
}
