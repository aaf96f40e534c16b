//! Relay frames are authenticated: a stranger cannot use a server as a relay,
//! and a peer only accepts relay frames from its own servers with its token.

mod common;

use bytes::BytesMut;
use p2pcore::wire::{RelayFrame, TOKEN_LEN};
use p2pcore::{Event, Identity, Role};
use p2pcore_tests::sim::LinkParams;
use std::time::Duration;

#[test]
fn strangers_cannot_relay() {
    let (mut sim, servers, peers) = common::relay_mesh(1, 2, LinkParams::default());
    sim.run_for(Duration::from_secs(3));
    let (a, b) = (peers[0], peers[1]);
    let s = servers[0];
    let server_addr = sim.host(s).addr;
    let bid = sim.host(b).id();
    let stranger_addr = "198.51.100.77:999".parse().unwrap();
    // A QUIC-looking payload (fixed bit set) that is not a real packet.
    let junk = [0x40u8; 64];
    let mut frames = Vec::new();
    for token in [[0u8; TOKEN_LEN], [0xab; TOKEN_LEN]] {
        let mut f = Vec::new();
        RelayFrame { token, node: bid, data: &junk }.encode(&mut f).unwrap();
        frames.push(f);
    }
    let before = sim.node(s).unwrap().stats().dropped.relay_rejected;
    for f in &frames {
        sim.with_node(s, |n, now| n.handle_datagram(now, stranger_addr, None, None, BytesMut::from(&f[..])));
    }
    let after = sim.node(s).unwrap().stats().dropped.relay_rejected;
    assert_eq!(after - before, 2, "guessed tokens are refused");

    // An on-path observer sees alice's real relay frames (tokens travel in
    // the clear); replayed from another address they are refused.
    sim.tap(a);
    sim.send_messages(&p2pcore_tests::sim::SendSpec {
        from: a,
        to: b,
        count: 3,
        size: 100,
        reliability: p2pcore::Reliability::Reliable,
        channel: 0,
    });
    sim.run_for(Duration::from_millis(300));
    let captured: Vec<_> = sim
        .take_tapped()
        .into_iter()
        .filter(|(_, dest, bytes)| {
            servers.iter().any(|s| sim.host(*s).addr == *dest)
                && p2pcore::wire::decode(bytes).is_ok_and(|f| f.kind == p2pcore::wire::FrameType::Relay)
        })
        .collect();
    assert!(!captured.is_empty(), "alice relayed something");
    let (_, dest, bytes) = captured[0].clone();
    let target = servers.iter().copied().find(|s| sim.host(*s).addr == dest).unwrap();
    let (rej, fwd) = {
        let st = sim.node(target).unwrap().stats();
        (st.dropped.relay_rejected, st.relayed_datagrams)
    };
    sim.with_node(target, |n, now| {
        n.handle_datagram(now, stranger_addr, None, None, BytesMut::from(&bytes[..]))
    });
    let st = *sim.node(target).unwrap().stats();
    assert_eq!(
        (st.dropped.relay_rejected - rej, st.relayed_datagrams - fwd),
        (1, 0),
        "stolen token, wrong source"
    );

    // A peer does not accept relay frames that do not come from its servers.
    let a_before = sim.node(a).unwrap().stats().dropped.relay_rejected;
    let forged_src = Identity::from_seed(Role::Peer, [5; 32]).id();
    let mut f = Vec::new();
    RelayFrame { token: [1; TOKEN_LEN], node: forged_src, data: &junk }.encode(&mut f).unwrap();
    sim.with_node(a, |n, now| {
        n.handle_datagram(now, stranger_addr, None, None, BytesMut::from(&f[..]));
        // Right source address, wrong token.
        n.handle_datagram(now, server_addr, None, None, BytesMut::from(&f[..]));
    });
    assert_eq!(sim.node(a).unwrap().stats().dropped.relay_rejected - a_before, 2);
    sim.run_for(Duration::from_millis(200));
    assert!(
        common::events(&mut sim, a)
            .iter()
            .all(|e| !matches!(e, Event::Connected { id, .. } if *id == forged_src))
    );
}
