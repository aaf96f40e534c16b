//! Losing servers: the relaying server dies mid-transfer; some servers die;
//! all servers die and come back.

mod common;

use p2pcore::{Event, PathKind, Reliability, SendError};
use p2pcore_tests::sim::{LinkParams, SendSpec};
use std::time::Duration;

#[test]
fn the_relaying_server_dies_mid_transfer() {
    for seed in 1..=5 {
        let (mut sim, servers, peers) = common::relay_mesh(seed, 2, LinkParams::default());
        sim.run_for(Duration::from_secs(3));
        let (a, b) = (peers[0], peers[1]);
        let bid = sim.host(b).id();
        let relay = sim
            .node(a)
            .unwrap()
            .link_table()
            .into_iter()
            .find_map(|r| match r.path {
                PathKind::Relayed { via } if r.id == bid => Some(via),
                _ => None,
            })
            .expect("relayed");
        sim.send_messages(&SendSpec {
            from: a,
            to: b,
            count: 2000,
            size: 1000,
            reliability: Reliability::Reliable,
            channel: 0,
        });
        sim.run_for(Duration::from_millis(300));
        let delivered_before = sim.message_metrics().delivered;
        assert!(delivered_before < 2000, "still in flight when the relay dies");
        let h = servers.iter().copied().find(|s| sim.host(*s).id() == relay).unwrap();
        sim.kill(h);
        sim.run_for(Duration::from_secs(20));
        let m = sim.message_metrics();
        assert_eq!((m.delivered, m.duplicated, m.reordered, m.lost), (2000, 0, 0, 0), "seed {seed}: {m:?}");
        // The pair moved to another server and stayed connected throughout.
        let now = sim.node(a).unwrap().link_table().into_iter().find(|r| r.id == bid).unwrap().path;
        assert!(matches!(now, PathKind::Relayed { via } if via != relay), "seed {seed}: {now:?}");
        assert!(
            common::events(&mut sim, a)
                .iter()
                .all(|e| !matches!(e, Event::Disconnected { id, .. } if *id == bid))
        );
    }
}

#[test]
fn losing_some_servers_keeps_peers_working_and_redialing() {
    let (mut sim, servers, peers) = common::mesh(6, 3, LinkParams::default());
    sim.run_for(Duration::from_secs(3));
    sim.kill(servers[0]);
    sim.kill(servers[1]);
    sim.run_for(Duration::from_secs(4));
    for &p in &peers {
        assert!(sim.node(p).unwrap().network_up());
        assert_eq!(sim.node(p).unwrap().servers().iter().filter(|s| s.live).count(), 1);
    }
    sim.send_messages(&SendSpec {
        from: peers[0],
        to: peers[2],
        count: 10,
        size: 100,
        reliability: Reliability::Reliable,
        channel: 0,
    });
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.message_metrics().delivered, 10);
    // They come back: the peers reconnect (with backoff) on their own.
    sim.restart(servers[0]);
    sim.restart(servers[1]);
    sim.run_for(Duration::from_secs(10));
    for &p in &peers {
        assert_eq!(sim.node(p).unwrap().servers().iter().filter(|s| s.live).count(), 3);
    }
}

#[test]
fn all_servers_down_then_back() {
    let (mut sim, servers, peers) = common::mesh(8, 2, LinkParams::default());
    sim.run_for(Duration::from_secs(3));
    let (a, b) = (peers[0], peers[1]);
    let bid = sim.host(b).id();
    common::events(&mut sim, a);
    for &s in &servers {
        sim.kill(s);
    }
    sim.run_for(Duration::from_secs(4));
    let ev = common::events(&mut sim, a);
    assert!(ev.iter().any(|e| matches!(e, Event::NetworkDown)), "{ev:?}");
    assert!(!sim.node(a).unwrap().network_up());
    let r = sim.with_node(a, |n, now| n.send(now, bid, 0, vec![1], Reliability::Reliable)).unwrap();
    assert_eq!(r, Err(SendError::NetworkDown));
    assert!(r.unwrap_err().to_string().contains("no server is connected"));
    for &s in &servers {
        sim.restart(s);
    }
    sim.run_for(Duration::from_secs(10));
    let ev = common::events(&mut sim, a);
    assert!(ev.iter().any(|e| matches!(e, Event::NetworkUp)), "{ev:?}");
    assert!(common::directories_converged(&sim, &peers));
    sim.send_messages(&SendSpec {
        from: a,
        to: b,
        count: 10,
        size: 100,
        reliability: Reliability::Reliable,
        channel: 0,
    });
    sim.run_for(Duration::from_secs(3));
    assert_eq!(sim.message_metrics().delivered, 10);
}
