//! NAT boxes in the running network: what gets through and what does not.
//! (Unit tests in `src/nat.rs` pin each RFC 4787 behaviour in isolation.)

mod common;

use p2pcore::ConnectError;
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
