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

/// IPv6 guarantees only a 1280-byte MTU (1232 bytes of UDP payload). A relayed
/// QUIC packet (up to 1200 bytes) plus the relay header must fit in it, or
/// relayed peers on such a path could not even finish their handshake.
#[test]
fn relaying_fits_the_ipv6_minimum_mtu() {
    let mut sim = common::sim_with(32, p2pcore_tests::sim::LinkParams { mtu: 1280, ..Default::default() });
    sim.set_configure(|c, _| c.peer.hole_punching = false);
    let s = sim.add_node(NodeSpec { ipv6: true, ..NodeSpec::server("s1") });
    let a = sim.add_node(NodeSpec { ipv6: true, ..NodeSpec::peer("alice", None).via(&[s]) });
    let b = sim.add_node(NodeSpec { ipv6: true, ..NodeSpec::peer("bob", None).via(&[s]) });
    sim.run_for(Duration::from_secs(2));
    for (size, count) in [(1000, 50), (300_000, 1)] {
        sim.send_messages(&SendSpec {
            from: a,
            to: b,
            count,
            size,
            reliability: Reliability::Reliable,
            channel: 0,
        });
    }
    sim.run_for(Duration::from_secs(10));
    let m = sim.message_metrics();
    assert_eq!((m.delivered, m.lost), (51, 0), "{m:?}");
    assert!(sim.node(s).unwrap().stats().relayed_datagrams > 250, "the bytes went through the relay");
    assert_eq!(sim.net_stats().too_big, 0, "no datagram exceeded the 1280-byte MTU");
}
