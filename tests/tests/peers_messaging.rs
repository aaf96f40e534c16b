//! Messaging by node ID through relays: exactly once and in order per
//! channel, channels independent, large messages, typed errors.

mod common;

use bytes::Bytes;
use p2pcore::{Event, Identity, Reliability, Role, SendError};
use p2pcore_tests::sim::{LinkParams, SendSpec};
use std::time::Duration;

#[test]
fn reliable_messages_between_every_pair() {
    let (mut sim, _, peers) = common::relay_mesh(1, 6, LinkParams::default());
    sim.run_for(Duration::from_secs(3));
    for (i, &a) in peers.iter().enumerate() {
        for (j, &b) in peers.iter().enumerate() {
            if i != j {
                sim.send_messages(&SendSpec {
                    from: a,
                    to: b,
                    count: 20,
                    size: 200,
                    reliability: Reliability::Reliable,
                    channel: (i % 3) as u8,
                });
            }
        }
    }
    sim.run_for(Duration::from_secs(5));
    let m = sim.message_metrics();
    assert_eq!((m.sent, m.delivered, m.duplicated, m.reordered, m.lost), (600, 600, 0, 0, 0), "{m:?}");
    // Every byte went through a server.
    let relayed: u64 =
        sim.hosts().iter().filter_map(|h| h.node.as_ref()).map(|n| n.stats().relayed_datagrams).sum();
    assert!(relayed > 100, "{relayed}");
}

#[test]
fn a_message_can_go_before_the_connection_exists() {
    // On-demand: the first send sets the connection up through a relay.
    let (mut sim, _, peers) = common::mesh_configured(2, 2, LinkParams::default(), |c, _| {
        c.peer.connect = p2pcore::ConnectPolicy::OnDemand
    });
    sim.run_for(Duration::from_secs(2));
    let (a, b) = (peers[0], peers[1]);
    assert!(!common::linked(&sim, a, b), "on-demand: nothing yet");
    let bid = sim.host(b).id();
    sim.with_node(a, |n, now| n.send(now, bid, 1, Bytes::from_static(b"first"), Reliability::Reliable))
        .unwrap()
        .unwrap();
    sim.run_for(Duration::from_secs(2));
    let aid = sim.host(a).id();
    let ev = common::events(&mut sim, b);
    assert!(ev.iter().any(|e| matches!(e, Event::MessageReceived { from, bytes, .. } if *from == aid && bytes[..] == b"first"[..])));
}

#[test]
fn large_messages_and_independent_channels() {
    let (mut sim, _, peers) = common::mesh(3, 2, LinkParams::default());
    sim.run_for(Duration::from_secs(3));
    let (a, b) = (peers[0], peers[1]);
    let bid = sim.host(b).id();
    let big: Vec<u8> = (0..(2 << 20)).map(|i| (i * 31 % 251) as u8).collect();
    let big2 = big.clone();
    sim.with_node(a, move |n, now| {
        n.send(now, bid, 0, big2, Reliability::Reliable).unwrap();
        n.send(now, bid, 1, Bytes::from_static(b"small"), Reliability::Reliable).unwrap();
    });
    sim.run_for(Duration::from_secs(20));
    let got: Vec<(u8, Bytes)> = common::events(&mut sim, b)
        .into_iter()
        .filter_map(|e| match e {
            Event::MessageReceived { channel, bytes, .. } => Some((channel, bytes)),
            _ => None,
        })
        .collect();
    // The small message on channel 1 was not held up behind the 2 MiB one.
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], (1, Bytes::from_static(b"small")));
    assert_eq!(got[1].0, 0);
    assert_eq!(&got[1].1[..], &big[..]);
}

#[test]
fn every_channel_at_once_is_delivered() {
    // The remote's stream limit starts small and grows as it opens streams
    // (one per channel): a sender using all 256 channels at once waits for
    // credit a few round trips, and loses nothing.
    let (mut sim, _, peers) = common::mesh(5, 2, LinkParams::default());
    sim.run_for(Duration::from_secs(3));
    let (a, b) = (peers[0], peers[1]);
    let bid = sim.host(b).id();
    sim.with_node(a, move |n, now| {
        for ch in 0..=255u8 {
            for k in 0..3u8 {
                n.send(now, bid, ch, vec![ch, k], Reliability::Reliable).unwrap();
            }
        }
    });
    sim.run_for(Duration::from_secs(5));
    let mut got: Vec<(u8, Vec<u8>)> = common::events(&mut sim, b)
        .into_iter()
        .filter_map(|e| match e {
            Event::MessageReceived { channel, bytes, .. } => Some((channel, bytes.to_vec())),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), 256 * 3);
    // In order within each channel.
    got.sort_by_key(|(ch, _)| *ch);
    for (i, (ch, bytes)) in got.iter().enumerate() {
        assert_eq!((*ch as usize, bytes.clone()), (i / 3, vec![*ch, (i % 3) as u8]));
    }
}

#[test]
fn unreliable_datagrams_and_typed_errors() {
    let (mut sim, _, peers) = common::mesh(4, 2, LinkParams::default());
    sim.run_for(Duration::from_secs(3));
    let (a, b) = (peers[0], peers[1]);
    let bid = sim.host(b).id();
    let stranger = Identity::from_seed(Role::Peer, [99; 32]).id();
    let r = sim
        .with_node(a, |n, now| {
            let max = n.max_unreliable_size(&bid).unwrap();
            (
                max,
                n.send(now, bid, 2, vec![7u8; 100], Reliability::Unreliable),
                n.send(now, bid, 2, vec![7u8; max + 1], Reliability::Unreliable),
                n.send(now, stranger, 0, vec![1], Reliability::Reliable),
            )
        })
        .unwrap();
    // Relayed datagrams leave room for the relay header.
    assert!(r.0 > 1000 && r.0 < 1200, "{}", r.0);
    assert_eq!(r.1, Ok(None), "unreliable messages have no sequence number");
    assert_eq!(r.2, Err(SendError::TooLarge { size: r.0 + 1, max: r.0 }));
    assert_eq!(r.3, Err(SendError::UnknownPeer(stranger)));
    sim.run_for(Duration::from_millis(500));
    assert!(
        common::events(&mut sim, b).iter().any(|e| matches!(e, Event::MessageReceived { channel: 2, .. }))
    );
}

#[test]
fn loss_and_reordering_keep_messages_exactly_once_in_order() {
    let link = LinkParams {
        loss: 0.05,
        reorder: 0.05,
        jitter: Duration::from_millis(5),
        duplicate: 0.01,
        ..LinkParams::default()
    };
    for seed in 1..=3 {
        let (mut sim, _, peers) = common::mesh(seed, 4, link);
        sim.run_for(Duration::from_secs(4));
        for i in 0..4 {
            sim.send_messages(&SendSpec {
                from: peers[i],
                to: peers[(i + 1) % 4],
                count: 200,
                size: 500,
                reliability: Reliability::Reliable,
                channel: 0,
            });
        }
        sim.run_for(Duration::from_secs(15));
        let m = sim.message_metrics();
        assert_eq!((m.sent, m.delivered, m.duplicated, m.reordered), (800, 800, 0, 0), "seed {seed}: {m:?}");
    }
}

/// Events name real addresses: a relayed peer link is reported at its relay
/// server's address, never at the internal address QUIC uses for the peer.
#[test]
fn events_and_links_carry_real_addresses() {
    let (mut sim, servers, peers) = common::relay_mesh(5, 2, p2pcore_tests::sim::LinkParams::default());
    sim.run_for(Duration::from_secs(3));
    let server_addrs: Vec<_> = servers.iter().map(|s| sim.host(*s).addr).collect();
    let peer_id = sim.host(peers[1]).id();
    let events = common::events(&mut sim, peers[0]);
    let addr = events
        .iter()
        .find_map(|e| match e {
            p2pcore::Event::Connected { id, addr, .. } if *id == peer_id => Some(*addr),
            _ => None,
        })
        .expect("the peers connected");
    assert!(server_addrs.contains(&addr), "{addr} is a relay server's address");
    for l in sim.node(peers[0]).unwrap().links() {
        assert!(server_addrs.contains(&l.addr), "{} reported at {}", l.name, l.addr);
    }
}
