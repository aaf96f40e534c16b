//! Addresses are IPv4 and IPv6 throughout.

mod common;

use p2pcore::Reliability;
use p2pcore_tests::sim::{NodeSpec, SendSpec};
use std::time::Duration;

#[test]
fn ipv6_nodes_connect_and_exchange_messages() {
    let mut sim = common::sim(31);
    let a = sim.add_node(NodeSpec { ipv6: true, ..NodeSpec::peer("alice", None) });
    let b = sim.add_node(NodeSpec { ipv6: true, ..NodeSpec::server("s1") });
    assert!(sim.host(a).addr.is_ipv6() && sim.host(b).addr.is_ipv6());
    sim.send_messages(&SendSpec {
        from: a,
        to: b,
        count: 10,
        size: 1000,
        reliability: Reliability::Reliable,
        channel: 0,
    });
    sim.run_for(Duration::from_secs(2));
    assert!(common::linked(&sim, a, b));
    assert_eq!(sim.message_metrics().delivered, 10);
    let link = sim.node(b).unwrap().links().next().unwrap();
    assert!(link.addr.is_ipv6());
}
