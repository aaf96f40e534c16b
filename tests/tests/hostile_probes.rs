//! Path probes under attack: an on-path observer captures authentic pings
//! and pongs and replays them with spoofed sources (a server's address,
//! another peer's, a random one), or relays a fresh ping round trip through
//! a server's address. None of it may change where a peer's packets go: the
//! peer keeps its servers, its direct paths and its message flows.

mod common;

use bytes::BytesMut;
use p2pcore::wire::{self, FrameType};
use p2pcore::{Event, Reliability};
use p2pcore_tests::sim::{HostId, LinkParams, SendSpec, Sim};
use std::net::SocketAddr;
use std::time::Duration;

/// Captured probes of `kind` that `from` sent to `to`'s address.
fn probes(tapped: &[(HostId, SocketAddr, bytes::Bytes)], kind: FrameType, to: SocketAddr) -> Vec<Vec<u8>> {
    tapped
        .iter()
        .filter(|(_, dest, b)| *dest == to && wire::decode(b).is_ok_and(|f| f.kind == kind))
        .map(|(_, _, b)| b.to_vec())
        .collect()
}

/// Event names and details, without message payloads.
fn kinds(events: &[&Event]) -> String {
    let v: Vec<String> = events
        .iter()
        .map(|e| {
            let (kind, detail) = p2pcore_tests::sim::describe(e, |id| id.to_string());
            format!("{kind} {detail}")
        })
        .collect();
    v.join("; ")
}

/// Three servers, three public peers, all pairs on direct paths; `a`'s
/// datagrams are tapped from the start.
fn punched() -> (Sim, Vec<HostId>, Vec<HostId>) {
    let (mut sim, servers, peers) = common::mesh(7, 3, LinkParams::default());
    sim.tap(peers[0]);
    let ok = common::run_until(&mut sim, Duration::from_secs(10), |sim| {
        peers.iter().all(|p| {
            let links: Vec<_> = sim.node(*p).unwrap().link_table();
            links
                .iter()
                .filter(|l| l.path == p2pcore::PathKind::Direct && l.id.role() == p2pcore::Role::Peer)
                .count()
                == 2
        })
    });
    assert!(ok.is_some(), "every pair goes direct");
    (sim, servers, peers)
}

/// Messages both ways between `b` and each of `others`, then a quiet spell.
fn traffic(sim: &mut Sim, b: HostId, others: &[HostId]) {
    for (i, o) in others.iter().enumerate() {
        for (from, to) in [(b, *o), (*o, b)] {
            sim.send_messages(&SendSpec {
                from,
                to,
                count: 50,
                size: 200,
                reliability: Reliability::Reliable,
                channel: i as u8,
            });
        }
    }
    sim.run_for(Duration::from_secs(10));
}

/// What must not change at the victim: no server or peer lost, every
/// message delivered exactly once, nothing sent to the spoofed addresses.
fn assert_unharmed(sim: &mut Sim, victim: HostId, spoofed: &[SocketAddr]) {
    let events = common::events(sim, victim);
    let lost: Vec<_> = events
        .iter()
        .filter(|e| {
            matches!(e, Event::ServerDown { .. } | Event::Disconnected { .. } | Event::PeerOffline { .. })
        })
        .collect();
    assert!(lost.is_empty(), "victim lost links: {}", kinds(&lost));
    let m = sim.message_metrics();
    assert_eq!((m.lost, m.duplicated), (0, 0), "{m:?}");
    let moved: Vec<&Event> = events.iter().filter(|e| matches!(e, Event::PathChanged { .. })).collect();
    assert!(moved.is_empty(), "paths stay put: {}", kinds(&moved));
    let tapped = sim.take_tapped();
    let to_spoofed: Vec<_> = tapped
        .iter()
        .filter(|(h, dest, b)| *h == victim && spoofed.contains(dest) && !wire::is_quic(b))
        .collect();
    assert!(to_spoofed.is_empty(), "probes reflected to spoofed sources: {}", to_spoofed.len());
}

#[test]
fn replayed_probes_from_spoofed_sources_change_nothing() {
    let (mut sim, servers, peers) = punched();
    let (a, b, c) = (peers[0], peers[1], peers[2]);
    let b_addr = sim.host(b).addr;
    let tapped = sim.take_tapped();
    let pings = probes(&tapped, FrameType::Ping, b_addr);
    let pongs = probes(&tapped, FrameType::Pong, b_addr);
    assert!(!pings.is_empty() && !pongs.is_empty(), "a probed b");
    sim.tap(b);
    common::events(&mut sim, b);
    let spoofed =
        [sim.host(servers[0]).addr, sim.host(c).addr, "198.51.100.9:4000".parse::<SocketAddr>().unwrap()];
    let before = *sim.node(b).unwrap().stats();
    let mut replays = 0;
    for src in spoofed {
        for p in pings.iter().chain(&pongs) {
            sim.with_node(b, |n, now| n.handle_datagram(now, src, None, None, BytesMut::from(&p[..])));
            replays += 1;
        }
    }
    // The same probes replayed from a's own address are stale too.
    let a_addr = sim.host(a).addr;
    for p in pings.iter().chain(&pongs) {
        sim.with_node(b, |n, now| n.handle_datagram(now, a_addr, None, None, BytesMut::from(&p[..])));
        replays += 1;
    }
    let after = *sim.node(b).unwrap().stats();
    assert_eq!(after.dropped.probe_rejected - before.dropped.probe_rejected, replays, "every replay refused");
    assert_eq!(after.path_pongs, before.path_pongs, "no pong answers a replay");
    traffic(&mut sim, b, &[a, c]);
    // c's address is a real path of b's (keep-alives go there); the server
    // and the random address must hear nothing from b but QUIC.
    assert_unharmed(&mut sim, b, &[spoofed[0], spoofed[2]]);
}

/// An on-path attacker completes a real ping round trip between two peers
/// through a server's address: b's triggered ping to the "server" is carried
/// to a, a's answer is carried back as if the server had sent it. b must
/// not start treating the server's address as a's.
#[test]
fn a_relayed_round_trip_never_maps_a_server_address() {
    let (mut sim, servers, peers) = punched();
    let (a, b) = (peers[0], peers[1]);
    sim.take_tapped();
    let s_addr = sim.host(servers[0]).addr;
    let b_addr = sim.host(b).addr;
    let a_addr = sim.host(a).addr;
    // Wait for a keep-alive ping from a to b (every 10 s on an idle direct
    // path) and deliver a copy "from the server" before the original lands.
    sim.tap(b);
    let mut injected_at = None;
    for _ in 0..6000 {
        sim.run_for(Duration::from_millis(5));
        let tapped = sim.take_tapped();
        if injected_at.is_none()
            && let Some(ping) = probes(&tapped, FrameType::Ping, b_addr).into_iter().next()
        {
            sim.with_node(b, |n, now| n.handle_datagram(now, s_addr, None, None, BytesMut::from(&ping[..])));
            injected_at = Some(sim.elapsed());
        }
        let is = |bytes: &[u8], kind| wire::decode(bytes).is_ok_and(|f| f.kind == kind);
        for (h, dest, bytes) in &tapped {
            // b pings the spoofed source back: carry that ping to a, "from the server"...
            if *h == b && *dest == s_addr && is(bytes, FrameType::Ping) {
                sim.with_node(a, |n, now| {
                    n.handle_datagram(now, s_addr, None, None, BytesMut::from(&bytes[..]))
                });
            }
            // ...and a's pong to "the server" back to b, from the server's address.
            if *h == a && *dest == s_addr && is(bytes, FrameType::Pong) {
                sim.with_node(b, |n, now| {
                    n.handle_datagram(now, s_addr, None, None, BytesMut::from(&bytes[..]))
                });
            }
        }
        if injected_at.is_some_and(|t| sim.elapsed() > t + Duration::from_millis(500)) {
            break;
        }
    }
    assert!(injected_at.is_some(), "a keep-alive ping was seen");
    common::events(&mut sim, b);
    traffic(&mut sim, b, &[a]);
    let events = common::events(&mut sim, b);
    let lost: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::ServerDown { .. } | Event::Disconnected { .. }))
        .collect();
    assert!(lost.is_empty(), "victim lost links: {}", kinds(&lost));
    let link = sim.node(b).unwrap().links().find(|l| l.id == sim.host(a).id()).unwrap();
    assert_eq!(link.addr, a_addr, "b still reaches a at a's own address");
    assert_eq!(sim.message_metrics().lost, 0);
}
