//! A crashed node restarts with the same identity; the connection is
//! re-established and the old one is replaced, not duplicated.

mod common;

use p2pcore::{DisconnectReason, Event};
use p2pcore_tests::sim::NodeSpec;
use std::time::Duration;

#[test]
fn restart_keeps_identity_and_replaces_the_old_connection() {
    let mut sim = common::sim(21);
    let s = sim.add_node(NodeSpec::server("s1"));
    let a = sim.add_node(NodeSpec::peer("alice", None));
    common::dial(&mut sim, a, s);
    sim.run_for(Duration::from_millis(500));
    assert!(common::linked(&sim, s, a));
    let id_before = sim.node(a).unwrap().id();
    common::events(&mut sim, s);

    sim.kill(a);
    assert!(sim.node(a).is_none());
    sim.run_for(Duration::from_millis(200));
    sim.restart(a);
    assert_eq!(sim.node(a).unwrap().id(), id_before, "same identity after restart");
    assert_eq!(sim.host(a).boots, 2);

    // The restarted node dials again before the server noticed the crash.
    common::dial(&mut sim, a, s);
    sim.run_for(Duration::from_millis(500));
    assert!(common::linked(&sim, a, s) && common::linked(&sim, s, a));
    let ev = common::events(&mut sim, s);
    assert!(
        ev.iter().any(|e| matches!(e, Event::Disconnected { id, reason: DisconnectReason::Replaced } if *id == id_before)),
        "{ev:?}"
    );
    assert_eq!(ev.iter().filter(|e| matches!(e, Event::Connected { .. })).count(), 1);
    assert_eq!(sim.node(s).unwrap().links().count(), 1, "one connection, not two");
}

#[test]
fn a_crashed_node_is_noticed() {
    let mut sim = common::sim(22);
    let s = sim.add_node(NodeSpec::server("s1"));
    let a = sim.add_node(NodeSpec::peer("alice", None));
    common::dial(&mut sim, a, s);
    sim.run_for(Duration::from_millis(500));
    common::events(&mut sim, s);
    sim.kill(a);
    let took = common::run_until(&mut sim, Duration::from_secs(10), |x| !common::linked(x, s, a)).unwrap();
    assert!(took <= Duration::from_secs(3), "{took:?}");
}
