//! Direct paths over time: port prediction against a sequential symmetric
//! NAT, bindings shorter than the keep-alive, NAT reboots mid-transfer, and
//! no message lost or duplicated across any path switch.

use p2pcore::{Event, PathKind};
use p2pcore_tests::scenario::Loaded;
use p2pcore_tests::sim::Sim;

/// Two servers and two peers, `a` behind `nat_a` and `b` behind `nat_b`
/// (each a `[[lan]]` body), then `events` (TOML `[[event]]` tables); run
/// to the end with `seed`.
fn run(seed: u64, duration_ms: u64, nat_a: &str, nat_b: &str, events: &str) -> Sim {
    let text = format!(
        r#"
        duration_ms = {duration_ms}
        [link]
        latency_ms = 20
        jitter_ms = 2
        [[server]]
        name = "s1"
        [[server]]
        name = "s2"
        [[lan]]
        name = "la"
        {nat_a}
        [[lan]]
        name = "lb"
        {nat_b}
        [[peer]]
        name = "a"
        lan = "la"
        [[peer]]
        name = "b"
        lan = "lb"
        {events}
        "#
    );
    run_scenario(seed, &text)
}

/// Runs scenario `text` (p2psim's TOML) to its end with `seed`.
fn run_scenario(seed: u64, text: &str) -> Sim {
    let loaded = Loaded::parse(text).unwrap();
    let mut sim = loaded.build(seed);
    sim.run_until(loaded.duration());
    sim
}

/// The final path of `from` to `to` as the pair table reports it.
fn path(sim: &Sim, from: &str, to: &str) -> String {
    let p = sim.pair_paths().into_iter().find(|p| p.a == from && p.b == to);
    p.map_or_else(|| "none".into(), |p| p.path)
}

/// How often `name` saw its path to its peer change to `relayed`.
fn fallbacks(sim: &Sim, name: &str) -> usize {
    let h = sim.find(name).unwrap();
    sim.host(h)
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::PathChanged { path: Some(PathKind::Relayed { .. }), peer } if peer.role() == p2pcore::Role::Peer))
        .count()
}

const PRC: &str = r#"nat = "port-restricted""#;
const SYM: &str = r#"nat = "symmetric""#;
const SYM_SEQ: &str = r#"nat = "symmetric"
        allocation = "sequential""#;

/// Two `send` events at `at_ms`: `count` reliable messages of `size` bytes
/// from a to b on channel 0 and from b to a on `back_channel`.
fn both_ways(at_ms: u64, count: u64, size: u64, back_channel: u8) -> String {
    format!(
        r#"
        [[event]]
        at_ms = {at_ms}
        send = {{ from = "a", to = "b", count = {count}, size = {size} }}
        [[event]]
        at_ms = {at_ms}
        send = {{ from = "b", to = "a", count = {count}, size = {size}, channel = {back_channel} }}
        "#
    )
}

/// Asserts both sides of the pair end on `want`.
fn assert_path(sim: &Sim, want: &str, what: &str) {
    assert_eq!((path(sim, "a", "b").as_str(), path(sim, "b", "a").as_str()), (want, want), "{what}");
}

/// Asserts every tracked message arrived exactly once and in order.
fn assert_exactly_once(sim: &Sim, sent: u64, what: &str) {
    let m = sim.message_metrics();
    assert_eq!(
        (m.sent, m.delivered, m.duplicated, m.reordered, m.lost),
        (sent, sent, 0, 0, 0),
        "{what}: {m:?}"
    );
}

#[test]
fn a_sequential_symmetric_nat_is_punched_by_port_prediction() {
    for seed in 1..=5 {
        let sim = run(seed, 8000, PRC, SYM_SEQ, "");
        assert_path(&sim, "punched", &format!("seed {seed}"));
    }
    // With random allocation the same pair stays relayed, and so do two
    // symmetric NATs, predictable or not.
    assert_path(&run(1, 8000, PRC, SYM, ""), "relayed", "random ports");
    assert_path(&run(1, 8000, SYM_SEQ, SYM_SEQ, ""), "relayed", "two symmetric NATs");
}

#[test]
fn a_binding_timeout_shorter_than_the_keepalive_is_survived() {
    // Bindings last 4 s; the keep-alive is 10 s. After a long idle spell
    // the pair is still (or again) direct and a burst gets through.
    let nat = r#"nat = "port-restricted"
        binding_timeout_ms = 4000"#;
    let events = both_ways(60_000, 300, 500, 1);
    for seed in 1..=3 {
        let sim = run(seed, 90_000, nat, nat, &events);
        assert_path(&sim, "punched", &format!("seed {seed}"));
        assert_exactly_once(&sim, 600, &format!("seed {seed}"));
        // A lost idle path teaches a shorter keep-alive: it does not keep dying.
        let f = fallbacks(&sim, "a");
        assert!(f <= 3, "seed {seed}: {f} fallbacks to the relay in 90 s");
    }
}

#[test]
fn a_nat_reboot_mid_transfer_loses_nothing() {
    // Two reboots of a's NAT while a stream flows: each time the direct
    // path dies, traffic falls back to the relay, and a new round punches
    // again through the new mappings.
    let events = r#"
        [[event]]
        at_ms = 2000
        send = { from = "a", to = "b", count = 3000, size = 1000 }
        [[event]]
        at_ms = 2000
        send = { from = "b", to = "a", count = 1000, size = 300, channel = 2 }
        [[event]]
        at_ms = 2300
        nat_reboot = "la"
        [[event]]
        at_ms = 6000
        nat_reboot = "la"
    "#;
    // Without port preservation the rebooted NAT hands out new ports, so
    // the old direct path really is gone.
    let moving = r#"nat = "port-restricted"
        port_preservation = false"#;
    for seed in 1..=3 {
        let sim = run(seed, 20_000, moving, PRC, events);
        assert_path(&sim, "punched", &format!("seed {seed}"));
        assert_exactly_once(&sim, 4000, &format!("seed {seed}"));
        // The side that notices the dead path first falls back (b may
        // re-punch before a's own liveness check fires, and a then keeps
        // its punched path throughout).
        let f = fallbacks(&sim, "a").max(fallbacks(&sim, "b"));
        assert!((2..=4).contains(&f), "seed {seed}: {f} fallbacks");
    }
}

#[test]
fn messages_sent_from_the_first_moment_survive_the_move_to_direct() {
    // Sends start before the pair is even connected: queued, then relayed,
    // then moved to the punched path mid-stream, both ways.
    let events = both_ways(150, 2000, 700, 3);
    for seed in 1..=5 {
        let sim = run(seed, 10_000, PRC, PRC, &events);
        assert_path(&sim, "punched", &format!("seed {seed}"));
        assert_exactly_once(&sim, 4000, &format!("seed {seed}"));
        // The switch happened while the streams were flowing.
        let a = sim.find("a").unwrap();
        let switched_at = sim.host(a).events.iter().find_map(|(t, e)| {
            matches!(e, Event::PathChanged { path: Some(PathKind::Punched), .. }).then_some(*t)
        });
        let relayed = sim
            .hosts()
            .iter()
            .filter_map(|h| h.node.as_ref())
            .map(|n| n.stats().relayed_datagrams)
            .sum::<u64>();
        assert!(switched_at.is_some() && relayed > 0, "seed {seed}: relayed first, then punched");
    }
}

#[test]
fn on_demand_pairs_punch_after_the_first_send() {
    let text = r#"
        duration_ms = 6000
        [network]
        connect = "on-demand"
        [[server]]
        name = "s1"
        [[lan]]
        name = "la"
        nat = "restricted"
        [[lan]]
        name = "lb"
        nat = "port-restricted"
        [[peer]]
        name = "a"
        lan = "la"
        [[peer]]
        name = "b"
        lan = "lb"
        [[event]]
        at_ms = 2000
        send = { from = "a", to = "b", count = 50, size = 100 }
    "#;
    let loaded = Loaded::parse(text).unwrap();
    let mut sim = loaded.build(1);
    sim.run_until(std::time::Duration::from_millis(1900));
    assert_eq!(path(&sim, "a", "b"), "none", "no connection before the send");
    sim.run_until(loaded.duration());
    assert_path(&sim, "punched", "after the first send");
    assert_exactly_once(&sim, 50, "on demand");
}

#[test]
fn quic_measures_the_new_path_after_a_switch() {
    // Relayed, the RTT is 80 ms (two hops of 20 ms each way); punched, 40.
    // After the switch QUIC starts its estimate afresh instead of carrying
    // the relay's over, and its congestion window is not cut by the move.
    let sim = run(1, 4000, PRC, PRC, &both_ways(1000, 500, 1000, 1));
    assert_path(&sim, "punched", "switched");
    assert_exactly_once(&sim, 1000, "both ways");
    for (me, other) in [("a", "b"), ("b", "a")] {
        let node = sim.node(sim.find(me).unwrap()).unwrap();
        let link = node.links().find(|l| l.name == other).unwrap();
        let ms = link.rtt.as_secs_f64() * 1000.0;
        assert!((38.0..60.0).contains(&ms), "{me}: RTT {ms} ms");
        assert_eq!(link.path, Some(PathKind::Punched));
        assert_eq!(link.lost_packets, 0, "{me}: the move lost nothing");
        // The link reports the real address it uses (the other's NAT), not
        // the synthetic one QUIC knows it by.
        let lan = sim.host(sim.find(other).unwrap()).lan.unwrap();
        let public = sim.lans()[lan].nat.as_ref().unwrap().public_ip();
        assert_eq!(link.addr.ip(), public, "{me}");
    }
}

#[test]
fn servers_list_the_punched_links_in_table_b() {
    let sim = run(1, 4000, PRC, PRC, "");
    for s in ["s1", "s2"] {
        let dir = sim.node(sim.find(s).unwrap()).unwrap().directory();
        assert_eq!(dir.len(), 2, "{s}");
        for row in &dir {
            let paths: Vec<PathKind> = row.links.iter().map(|l| l.path).collect();
            assert_eq!(paths, vec![PathKind::Punched], "{s}: {}", row.name);
        }
    }
}

#[test]
fn the_move_to_a_direct_path_loses_no_packet() {
    // Streams flow both ways while two public peers move from the relay to
    // their direct path, on links that neither lose nor reorder: QUIC must
    // not see a single packet lost in the move. (Here each side's pong
    // reaches the other before its first direct QUIC packet; on loopback
    // the order can differ — see BENCHMARKS.md, "Bulk throughput".)
    let events = both_ways(150, 3000, 1000, 3);
    let mut lost = Vec::new();
    for seed in 1..=12 {
        let text = format!(
            r#"
            duration_ms = 8000
            [link]
            latency_ms = 20
            jitter_ms = 0
            [[server]]
            name = "s1"
            [[peer]]
            name = "a"
            [[peer]]
            name = "b"
            {events}
            "#
        );
        let sim = run_scenario(seed, &text);
        assert_path(&sim, "direct", &format!("seed {seed}"));
        assert_exactly_once(&sim, 6000, &format!("seed {seed}"));
        for (me, other) in [("a", "b"), ("b", "a")] {
            let node = sim.node(sim.find(me).unwrap()).unwrap();
            let link = node.links().find(|l| l.name == other).unwrap();
            if link.lost_packets != 0 {
                lost.push(format!("seed {seed}: {me} lost {}", link.lost_packets));
            }
        }
    }
    assert!(lost.is_empty(), "{lost:?}");
}
