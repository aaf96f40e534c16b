//! NAT boxes in the running network: what gets through and what does not.
//! (Unit tests in `src/nat.rs` pin each RFC 4787 behaviour in isolation.)

mod common;

use p2pcore::{ConnectError, NatBehaviour};
use p2pcore_tests::nat::NatPreset;
use p2pcore_tests::sim::NodeSpec;
use std::time::Duration;

#[test]
fn outbound_through_every_nat_to_a_server() {
    for preset in NatPreset::ALL {
        let mut sim = common::sim(41);
        let lan = sim.add_lan("home", preset.config());
        let s = sim.add_node(NodeSpec::server("s1"));
        let a = sim.add_node(NodeSpec::peer("alice", Some(lan)));
        common::dial(&mut sim, a, s);
        sim.run_for(Duration::from_secs(1));
        assert!(common::linked(&sim, a, s), "{preset:?}");
        // The server sees the NAT's public address, not the private one.
        let seen = sim.node(s).unwrap().links().next().unwrap().addr;
        if preset == NatPreset::Open {
            assert_eq!(seen, sim.host(a).addr);
        } else {
            assert_eq!(seen.ip(), sim.lans()[lan].nat.as_ref().unwrap().public_ip(), "{preset:?}");
        }
    }
}

#[test]
fn unsolicited_inbound_is_blocked_by_a_nat() {
    let mut sim = common::sim(42);
    let lan = sim.add_lan("home", NatPreset::FullCone.config());
    let b = sim.add_node(NodeSpec::peer("bob", None));
    let a = sim.add_node(NodeSpec::peer("alice", Some(lan)));
    // Dialing the NAT's public address with no mapping: nothing arrives.
    let nat_ip = sim.lans()[lan].nat.as_ref().unwrap().public_ip();
    let id = sim.host(a).id();
    sim.with_node(b, |n, now| n.connect(now, id, std::net::SocketAddr::new(nat_ip, 4433))).unwrap().unwrap();
    sim.run_for(Duration::from_secs(4));
    assert!(!common::linked(&sim, b, a));
    assert_eq!(common::connect_failure(&common::events(&mut sim, b)), Some(ConnectError::TimedOut));
    assert!(sim.lans()[lan].nat.as_ref().unwrap().stats().dropped_no_mapping > 0);
}

#[test]
fn firewalled_lan_reaches_servers_only() {
    let mut sim = common::sim(43);
    let lan = sim.add_lan("corp", NatPreset::Firewalled.config());
    let s = sim.add_node(NodeSpec::server("s1"));
    let b = sim.add_node(NodeSpec::peer("bob", None));
    let a = sim.add_node(NodeSpec::peer("alice", Some(lan)));
    common::dial(&mut sim, a, s);
    common::dial(&mut sim, a, b);
    sim.run_for(Duration::from_secs(4));
    assert!(common::linked(&sim, a, s));
    assert!(!common::linked(&sim, a, b));
    assert!(sim.lans()[lan].nat.as_ref().unwrap().stats().dropped_firewall > 0);
}

#[test]
fn same_lan_hosts_talk_directly() {
    let mut sim = common::sim(44);
    let lan = sim.add_lan("home", NatPreset::Symmetric.config());
    let a = sim.add_node(NodeSpec::peer("alice", Some(lan)));
    let b = sim.add_node(NodeSpec::peer("bob", Some(lan)));
    common::dial(&mut sim, a, b); // private address: LAN-local
    sim.run_for(Duration::from_millis(200));
    assert!(common::linked(&sim, a, b));
    let rtt = sim.node(a).unwrap().links().next().unwrap().rtt;
    assert!(rtt < Duration::from_millis(10), "LAN latency, not internet: {rtt:?}");
}

#[test]
fn hairpinning_reaches_a_neighbour_through_the_public_address() {
    for hairpin in [true, false] {
        let mut sim = common::sim(45);
        let mut cfg = NatPreset::FullCone.config().unwrap();
        cfg.hairpin = hairpin;
        let lan = sim.add_lan("home", Some(cfg));
        let s = sim.add_node(NodeSpec::server("s1"));
        let a = sim.add_node(NodeSpec::peer("alice", Some(lan)));
        let b = sim.add_node(NodeSpec::peer("bob", Some(lan)));
        // bob talks to the server: his mapping now exists.
        common::dial(&mut sim, b, s);
        sim.run_for(Duration::from_millis(500));
        let bob_public = sim.node(s).unwrap().links().next().unwrap().addr;
        let bid = sim.host(b).id();
        sim.with_node(a, |n, now| n.connect(now, bid, bob_public)).unwrap().unwrap();
        sim.run_for(Duration::from_secs(4));
        assert_eq!(common::linked(&sim, a, b), hairpin, "hairpin {hairpin}");
    }
}

#[test]
fn a_binding_timeout_kills_an_idle_mapping() {
    // A NAT that forgets mappings after 300 ms, with the default 1 s keep-alive:
    // the server's packets hit a closed mapping and the connection dies.
    let mut sim = common::sim(46);
    let mut cfg = NatPreset::PortRestricted.config().unwrap();
    cfg.binding_timeout = Duration::from_millis(300);
    let lan = sim.add_lan("home", Some(cfg));
    let s = sim.add_node(NodeSpec::server("s1"));
    let a = sim.add_node(NodeSpec::peer("alice", Some(lan)));
    common::dial(&mut sim, a, s);
    sim.run_for(Duration::from_millis(500));
    assert!(common::linked(&sim, a, s));
    sim.run_for(Duration::from_secs(6));
    assert!(sim.lans()[lan].nat.as_ref().unwrap().stats().mappings_expired > 0);
}

#[test]
fn nat_reboot_drops_mappings() {
    let mut sim = common::sim(47);
    let lan = sim.add_lan("home", NatPreset::PortRestricted.config());
    let s = sim.add_node(NodeSpec::server("s1"));
    let a = sim.add_node(NodeSpec::peer("alice", Some(lan)));
    common::dial(&mut sim, a, s);
    sim.run_for(Duration::from_millis(500));
    assert!(sim.lans()[lan].nat.as_ref().unwrap().mapping_count() > 0);
    sim.nat_reboot(lan);
    assert_eq!(sim.lans()[lan].nat.as_ref().unwrap().mapping_count(), 0);
}

/// Each node learns its address as every server sees it, and from that the
/// kind of NAT in front of it: none, one mapping for all servers, or a new
/// mapping per server.
#[test]
fn nodes_learn_their_observed_address_and_nat_behaviour() {
    let cases = [
        (NatPreset::Open, NatBehaviour::NoNat),
        (NatPreset::FullCone, NatBehaviour::EndpointIndependent { servers: 2 }),
        (NatPreset::PortRestricted, NatBehaviour::EndpointIndependent { servers: 2 }),
        (NatPreset::Symmetric, NatBehaviour::EndpointDependent),
    ];
    for (preset, expected) in cases {
        let mut sim = common::sim(43);
        let lan = sim.add_lan("home", preset.config());
        let s1 = sim.add_node(NodeSpec::server("s1"));
        let s2 = sim.add_node(NodeSpec::server("s2"));
        let a = sim.add_node(NodeSpec::peer("alice", Some(lan)).via(&[s1, s2]));
        sim.run_for(Duration::from_secs(3));
        let node = sim.node(a).unwrap();
        let seen = node.observed_addrs();
        let servers: Vec<_> = seen.iter().map(|o| o.server).collect();
        assert_eq!(servers.len(), 2, "{preset:?}: {seen:?}");
        assert!(servers.contains(&sim.host(s1).id()) && servers.contains(&sim.host(s2).id()));
        for o in &seen {
            let as_server_sees = sim
                .node(if o.server == sim.host(s1).id() { s1 } else { s2 })
                .unwrap()
                .links()
                .find(|l| l.id == sim.host(a).id())
                .unwrap()
                .addr;
            assert_eq!(o.addr, as_server_sees, "{preset:?}: the server's own view");
        }
        assert_eq!(node.nat_behaviour(), expected, "{preset:?}: {seen:?}");
    }
    // Servers learn theirs from the servers they dialed: public, no NAT.
    let mut sim = common::sim(44);
    let s1 = sim.add_node(NodeSpec::server("s1"));
    let s2 = sim.add_node(NodeSpec::server("s2").via(&[s1]));
    sim.run_for(Duration::from_secs(3));
    let s2_node = sim.node(s2).unwrap();
    assert_eq!(s2_node.observed_addrs().len(), 1);
    assert_eq!(s2_node.nat_behaviour(), NatBehaviour::NoNat);
}
