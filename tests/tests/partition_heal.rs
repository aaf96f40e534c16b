//! A partition cuts a connection (noticed within the idle timeout); after
//! healing, the nodes can connect again.

mod common;

use p2pcore_tests::sim::NodeSpec;
use std::time::Duration;

#[test]
fn partition_then_heal() {
    let mut sim = common::sim(11);
    let a = sim.add_node(NodeSpec::peer("alice", None));
    let b = sim.add_node(NodeSpec::peer("bob", None));
    let c = sim.add_node(NodeSpec::peer("carol", None));
    common::dial(&mut sim, a, b);
    common::dial(&mut sim, a, c);
    sim.run_for(Duration::from_secs(1));
    assert!(common::linked(&sim, a, b) && common::linked(&sim, a, c));
    common::events(&mut sim, a);

    sim.partition(&[vec!["alice".into()], vec!["bob".into()]]);
    let took = common::run_until(&mut sim, Duration::from_secs(10), |s| !common::linked(s, a, b)).unwrap();
    assert!(took <= Duration::from_secs(3), "noticed in {took:?}");
    // carol was not named: still connected.
    assert!(common::linked(&sim, a, c));
    let ev = common::events(&mut sim, a);
    assert!(common::disconnected_from(&ev, sim.host(b).id()));
    assert!(sim.net_stats().partitioned > 0);

    // While partitioned, a dial fails.
    common::dial(&mut sim, a, b);
    sim.run_for(Duration::from_secs(4));
    assert!(common::connect_failure(&common::events(&mut sim, a)).is_some());

    sim.heal();
    common::dial(&mut sim, a, b);
    sim.run_for(Duration::from_secs(1));
    assert!(common::linked(&sim, a, b) && common::linked(&sim, b, a));
}
