//! Peers learn the servers, the Master and every other peer; directories
//! are snapshots then deltas, merged across servers.

mod common;

use p2pcore::{Event, MasterBasis, PathKind, Role};
use p2pcore_tests::sim::{LinkParams, NodeSpec};
use std::time::Duration;

#[test]
fn two_to_sixty_four_peers_learn_everything() {
    for n in [2usize, 8, 64] {
        let (mut sim, servers, peers) = common::mesh(n as u64, n, LinkParams::default());
        sim.run_for(Duration::from_secs(4));
        assert!(common::directories_converged(&sim, &peers), "{n} peers: directories");
        let master = sim.agreed_master().expect("servers agree");
        for &p in &peers {
            let node = sim.node(p).unwrap();
            assert!(node.network_up());
            assert_eq!(node.master().master, Some(master), "{n} peers: Master known");
            assert_eq!(node.master().basis, Some(MasterBasis::Raft));
            assert_eq!(
                node.servers().iter().filter(|s| s.live).count(),
                servers.len(),
                "connected to every server"
            );
            // Eager mesh: linked to every other peer; public addresses, so
            // every link has moved from its relay to the direct path.
            let direct = node
                .link_table()
                .iter()
                .filter(|r| r.id.role() == Role::Peer && r.path == PathKind::Direct)
                .count();
            assert_eq!(direct, n - 1, "{n} peers: direct links");
        }
        for &s in &servers {
            assert_eq!(sim.node(s).unwrap().directory().len(), n, "table A lists every peer");
        }
    }
}

#[test]
fn a_peer_bootstrapping_from_one_server_finds_the_rest() {
    let mut sim = common::sim(3);
    let s1 = sim.add_node(NodeSpec::server("s1"));
    let s2 = sim.add_node(NodeSpec::server("s2").via(&[s1]));
    let s3 = sim.add_node(NodeSpec::server("s3").via(&[s1]));
    let a = sim.add_node(NodeSpec::peer("alice", None).via(&[s3]));
    sim.run_for(Duration::from_secs(3));
    let node = sim.node(a).unwrap();
    assert_eq!(node.servers().iter().filter(|s| s.live).count(), 3);
    for s in [s1, s2, s3] {
        assert!(common::linked(&sim, a, s));
    }
    // Table D reached the servers: the address they observe.
    let row = sim.node(s1).unwrap().directory().into_iter().find(|r| r.id == sim.host(a).id()).unwrap();
    assert_eq!(row.addrs.observed, vec![sim.host(a).addr]);
}

#[test]
fn joins_cost_each_existing_peer_a_constant() {
    // Bytes an existing peer receives when one more peer joins, for two
    // network sizes: a delta per server, not a snapshot.
    let mut per_peer = Vec::new();
    for n in [8usize, 32] {
        // On-demand: no peer-to-peer connections, so only directory traffic counts.
        let (mut sim, servers, peers) = common::mesh_configured(5, n, LinkParams::default(), |cfg, _| {
            cfg.peer.connect = p2pcore::ConnectPolicy::OnDemand
        });
        sim.run_for(Duration::from_secs(4));
        let watcher = peers[0];
        let before = sim.host(watcher).bytes.received;
        // A quiet window first, to subtract keep-alives.
        sim.run_for(Duration::from_secs(2));
        let idle = sim.host(watcher).bytes.received - before;
        let before = sim.host(watcher).bytes.received;
        sim.add_node(NodeSpec::peer("newcomer", None).via(&servers));
        sim.run_for(Duration::from_secs(2));
        let join = sim.host(watcher).bytes.received - before;
        per_peer.push(join.saturating_sub(idle));
    }
    assert!(per_peer[1] <= per_peer[0] + 200, "join cost grows with the network: {per_peer:?}");
    assert!(per_peer[0] < 1200, "{per_peer:?}");
}

#[test]
fn departed_peers_go_offline_within_five_seconds() {
    let (mut sim, _, peers) = common::mesh(7, 6, LinkParams::default());
    sim.run_for(Duration::from_secs(3));
    for &p in &peers {
        common::events(&mut sim, p);
    }
    let gone = peers[2];
    let gone_id = sim.host(gone).id();
    sim.kill(gone);
    let took = common::run_until(&mut sim, Duration::from_secs(10), |s| {
        peers
            .iter()
            .filter(|p| **p != gone)
            .all(|p| s.node(*p).unwrap().peers().iter().all(|x| x.id != gone_id))
    })
    .expect("offline everywhere");
    assert!(took <= Duration::from_secs(5), "{took:?}");
    for &p in peers.iter().filter(|p| **p != gone) {
        let ev = common::events(&mut sim, p);
        assert!(
            ev.iter().any(|e| matches!(e, Event::PeerOffline { id, name } if *id == gone_id && name == "p2"))
        );
    }
}
