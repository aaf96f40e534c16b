//! Two peers that open connections to each other at once keep exactly one:
//! the outbound connection of the larger ID.

mod common;

use bytes::Bytes;
use p2pcore::{ConnectPolicy, Event, Reliability};
use p2pcore_tests::sim::LinkParams;
use std::time::Duration;

#[test]
fn simultaneous_sends_keep_the_larger_ids_outbound_connection() {
    for seed in 1..=10 {
        let (mut sim, _, peers) = common::mesh_configured(seed, 2, LinkParams::default(), |c, _| {
            c.peer.connect = ConnectPolicy::OnDemand
        });
        sim.run_for(Duration::from_secs(2));
        let (a, b) = (peers[0], peers[1]);
        let (aid, bid) = (sim.host(a).id(), sim.host(b).id());
        // Both send at the same instant: both dial.
        sim.with_node(a, |n, now| {
            n.send(now, bid, 0, Bytes::from_static(b"from a"), Reliability::Reliable).unwrap()
        });
        sim.with_node(b, |n, now| {
            n.send(now, aid, 0, Bytes::from_static(b"from b"), Reliability::Reliable).unwrap()
        });
        sim.run_for(Duration::from_secs(3));
        let larger = if aid > bid { a } else { b };
        let smaller = if aid > bid { b } else { a };
        let link = sim.node(larger).unwrap().links().find(|l| l.id == sim.host(smaller).id()).unwrap();
        assert!(link.dialed, "seed {seed}: the larger ID keeps its outbound connection");
        assert!(!sim.node(smaller).unwrap().links().find(|l| l.id == sim.host(larger).id()).unwrap().dialed);
        for (h, other) in [(a, bid), (b, aid)] {
            let ev = common::events(&mut sim, h);
            let connected =
                ev.iter().filter(|e| matches!(e, Event::Connected { id, .. } if *id == other)).count();
            assert_eq!(connected, 1, "seed {seed}: one Connected event");
            assert!(
                ev.iter().any(|e| matches!(e, Event::MessageReceived { from, .. } if *from == other)),
                "seed {seed}"
            );
        }
    }
}
