//! Latency, jitter, loss, duplication and reordering: reliable messages still
//! arrive exactly once and in order; the network counters show the faults.

mod common;

use p2pcore::Reliability;
use p2pcore_tests::sim::{LinkParams, NodeSpec, SendSpec};
use std::time::Duration;

#[test]
fn reliable_messages_survive_a_hostile_link() {
    let link = LinkParams {
        latency: Duration::from_millis(30),
        jitter: Duration::from_millis(10),
        loss: 0.05,
        duplicate: 0.05,
        reorder: 0.1,
        ..LinkParams::default()
    };
    for seed in 1..=5 {
        let mut sim = common::sim_with(seed, link);
        let a = sim.add_node(NodeSpec::peer("alice", None));
        let b = sim.add_node(NodeSpec::peer("bob", None));
        sim.send_messages(&SendSpec {
            from: a,
            to: b,
            count: 300,
            size: 400,
            reliability: Reliability::Reliable,
            channel: 0,
        });
        sim.run_for(Duration::from_secs(20));
        let m = sim.message_metrics();
        assert_eq!(
            (m.sent, m.delivered, m.duplicated, m.reordered, m.lost),
            (300, 300, 0, 0, 0),
            "seed {seed}: {m:?}"
        );
        let net = sim.net_stats();
        assert!(net.lost > 0 && net.duplicated > 0 && net.reordered > 0, "faults happened: {net:?}");
    }
}

#[test]
fn latency_is_what_the_link_says() {
    let link = LinkParams { latency: Duration::from_millis(50), ..LinkParams::default() };
    let mut sim = common::sim_with(3, link);
    let a = sim.add_node(NodeSpec::peer("alice", None));
    let b = sim.add_node(NodeSpec::peer("bob", None));
    common::dial(&mut sim, a, b);
    sim.run_for(Duration::from_secs(3));
    let rtt = sim.node(a).unwrap().links().next().unwrap().rtt;
    assert!(rtt >= Duration::from_millis(100) && rtt < Duration::from_millis(110), "{rtt:?}");
}

#[test]
fn datagrams_above_the_mtu_are_dropped() {
    // QUIC needs 1200-byte datagrams; an MTU of 1000 makes the handshake impossible.
    let link = LinkParams { mtu: 1000, ..LinkParams::default() };
    let mut sim = common::sim_with(4, link);
    let a = sim.add_node(NodeSpec::peer("alice", None));
    let b = sim.add_node(NodeSpec::peer("bob", None));
    common::dial(&mut sim, a, b);
    sim.run_for(Duration::from_secs(5));
    assert!(!common::linked(&sim, a, b));
    assert!(sim.net_stats().too_big > 0);
    let ev = common::events(&mut sim, a);
    assert_eq!(common::connect_failure(&ev), Some(p2pcore::ConnectError::TimedOut));
}

#[test]
fn unreliable_datagrams_are_lossy_but_never_duplicated() {
    let link = LinkParams { loss: 0.1, duplicate: 0.1, ..LinkParams::default() };
    let mut sim = common::sim_with(5, link);
    let a = sim.add_node(NodeSpec::peer("alice", None));
    let b = sim.add_node(NodeSpec::peer("bob", None));
    common::dial(&mut sim, a, b);
    common::run_until(&mut sim, Duration::from_secs(10), |s| common::linked(s, a, b)).expect("connected");
    sim.send_messages(&SendSpec {
        from: a,
        to: b,
        count: 500,
        size: 100,
        reliability: Reliability::Unreliable,
        channel: 3,
    });
    sim.run_for(Duration::from_secs(3));
    let m = sim.message_metrics();
    assert_eq!(m.sent, 500);
    assert!(m.delivered > 350 && m.delivered < 500, "{m:?}");
    // QUIC drops duplicated packets: the application never sees a datagram twice.
    assert_eq!(m.duplicated, 0);
}
