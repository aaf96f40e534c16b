//! ECN end to end: the codepoints a node asks for travel with its packets,
//! through NATs and through a relay server, and congestion marks made by a
//! router on the way reach QUIC's congestion controller at the sender.

mod common;

use p2pcore::Reliability;
use p2pcore_tests::sim::{HostId, LinkParams, NodeSpec, SendSpec, Sim};
use std::time::Duration;

/// Two peers relayed through one server (hole punching off), exchanging
/// 200 reliable 1 KB messages over links that mark `ce_mark` of the
/// ECN-capable packets. Returns the sim, the sender and the receiver.
fn relayed_run(seed: u64, ce_mark: f64, punching: bool) -> (Sim, HostId, HostId, HostId) {
    let mut sim = common::sim_with(seed, LinkParams { ce_mark, ..Default::default() });
    sim.set_configure(move |c, _| c.peer.hole_punching = punching);
    let s = sim.add_node(NodeSpec::server("s1"));
    let a = sim.add_node(NodeSpec::peer("alice", None).via(&[s]));
    let b = sim.add_node(NodeSpec::peer("bob", None).via(&[s]));
    sim.run_for(Duration::from_secs(2));
    sim.send_messages(&SendSpec {
        from: a,
        to: b,
        count: 200,
        size: 1000,
        reliability: Reliability::Reliable,
        channel: 0,
    });
    sim.run_for(Duration::from_secs(10));
    (sim, s, a, b)
}

fn congestion_events(sim: &Sim, from: HostId, to: HostId) -> u64 {
    let id = sim.host(to).id();
    sim.node(from).unwrap().links().find(|l| l.id == id).map_or(0, |l| l.congestion_events)
}

#[test]
fn congestion_marks_on_a_relayed_path_reach_the_sender() {
    let (sim, s, a, b) = relayed_run(41, 0.05, false);
    let m = sim.message_metrics();
    assert_eq!((m.delivered, m.lost), (200, 0), "{m:?}");
    assert!(sim.node(s).unwrap().stats().relayed_datagrams > 100, "the messages went through the relay");
    assert!(sim.net_stats().ce_marked > 0, "the links marked packets");
    // The marks were made on either hop of the relay; the receiver counted
    // them and its acknowledgements carried the counts back the same way.
    assert!(congestion_events(&sim, a, b) > 0, "the sender's congestion controller saw the marks");
}

#[test]
fn without_marks_ecn_stays_on_and_causes_no_congestion_event() {
    let (sim, _, a, b) = relayed_run(42, 0.0, false);
    let m = sim.message_metrics();
    assert_eq!((m.delivered, m.lost), (200, 0), "{m:?}");
    assert_eq!(sim.net_stats().ce_marked, 0);
    assert_eq!(congestion_events(&sim, a, b), 0);
}

#[test]
fn congestion_marks_on_a_direct_path_reach_the_sender() {
    let (sim, _, a, b) = relayed_run(43, 0.05, true);
    let m = sim.message_metrics();
    assert_eq!((m.delivered, m.lost), (200, 0), "{m:?}");
    let id = sim.host(b).id();
    let link = sim.node(a).unwrap().links().find(|l| l.id == id).unwrap();
    assert_eq!(link.path, Some(p2pcore::PathKind::Direct), "open LANs connect directly");
    assert!(link.congestion_events > 0);
}
