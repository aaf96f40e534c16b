//! The NAT grid: every pair of NAT presets, plus two peers behind one NAT,
//! ends on the path the NATs allow — direct, punched or relayed — and gets
//! there within a few round trips of the connection coming up.

use p2pcore_tests::nat::expected_path;
use p2pcore_tests::scenario::Loaded;
use p2pcore_tests::sim::{PairPath, Sim};
use std::collections::BTreeMap;

const GRID: &str = include_str!("../scenarios/nat-grid.toml");

/// The preset a grid peer is behind, from its name (`prc1` → `prc`).
fn preset(name: &str) -> &str {
    name.trim_end_matches(char::is_numeric)
}

/// The path the NATs of `a` and `b` allow.
fn expected(sim: &Sim, a: &str, b: &str) -> &'static str {
    let (ha, hb) = (sim.host(sim.find(a).unwrap()), sim.host(sim.find(b).unwrap()));
    let nat = |lan: Option<usize>| lan.and_then(|l| sim.lans()[l].nat.as_ref()).map(|n| n.config().clone());
    let same = ha.lan.is_some() && ha.lan == hb.lan;
    expected_path(nat(ha.lan).as_ref(), nat(hb.lan).as_ref(), same)
}

/// The grid's own reading of the presets, to pin `expected_path` to the
/// outcomes the issue names.
fn by_name(a: &str, b: &str) -> &'static str {
    let mut p = [preset(a), preset(b)];
    p.sort();
    match p {
        ["fw", _] | [_, "fw"] => "relayed",
        ["open", "open"] | ["home", "home"] => "direct",
        ["sym", "sym"] | ["prc", "sym"] | ["home", "sym"] => "relayed",
        _ => "punched",
    }
}

/// Runs the grid with `seed` (and `extra` appended to its `[link]` table).
fn run(seed: u64, extra: &str) -> Sim {
    let text = GRID.replacen("jitter_ms = 2\n", &format!("jitter_ms = 2\n{extra}\n"), 1);
    let loaded = Loaded::parse(&text).unwrap();
    let mut sim = loaded.build(seed);
    sim.run_until(loaded.duration());
    sim
}

/// Every pair's path from both sides, keyed by the names in order.
fn by_pair(sim: &Sim) -> BTreeMap<(String, String), (PairPath, PairPath)> {
    let pairs = sim.pair_paths();
    let mut out = BTreeMap::new();
    for p in pairs.iter().filter(|p| p.a < p.b) {
        let back = pairs.iter().find(|q| q.a == p.b && q.b == p.a).cloned();
        let back = back.unwrap_or_else(|| panic!("{} has no link to {}", p.b, p.a));
        out.insert((p.a.clone(), p.b.clone()), (p.clone(), back));
    }
    out
}

#[test]
fn every_pair_of_presets_ends_on_the_expected_path() {
    for seed in 1..=4 {
        let sim = run(seed, "");
        let pairs = by_pair(&sim);
        // 14 peers: every one linked to every other.
        assert_eq!(pairs.len(), 14 * 13 / 2, "seed {seed}");
        for ((a, b), (ab, ba)) in &pairs {
            let want = expected(&sim, a, b);
            assert_eq!(want, by_name(a, b), "{a} x {b}");
            assert_eq!((ab.path.as_str(), ba.path.as_str()), (want, want), "seed {seed}: {a} x {b}");
            if want != "relayed" {
                // Both sides start relayed, then move within a few RTTs
                // (40 ms between public hosts, 80 ms relayed).
                let took = ab.since_ms - ab.up_ms;
                let limit = if preset(a) == "sym" || preset(b) == "sym" { 600.0 } else { 400.0 };
                assert!(took <= limit, "seed {seed}: {a} x {b} went direct after {took} ms");
            }
        }
    }
}

#[test]
fn punching_survives_five_percent_loss() {
    for seed in 1..=4 {
        let sim = run(seed, "loss = 0.05");
        for ((a, b), (ab, ba)) in by_pair(&sim) {
            let want = expected(&sim, &a, &b);
            assert_eq!((ab.path.as_str(), ba.path.as_str()), (want, want), "seed {seed}: {a} x {b}");
        }
    }
}

#[test]
fn hard_pairs_stop_probing() {
    // Relayed pairs retry with backoff, so probing stays bounded: the two
    // symmetric peers spend at most a few kilobytes each over 20 s.
    let sim = run(1, "");
    for name in ["sym1", "sym2", "fw1"] {
        let h = sim.find(name).unwrap();
        let st = sim.node(h).unwrap().stats();
        assert!(st.path_probe_bytes < 64 * 1024, "{name}: {} probe bytes", st.path_probe_bytes);
    }
    let fw = sim.node(sim.find("fw1").unwrap()).unwrap().stats().path_pings;
    let fc = sim.node(sim.find("fc1").unwrap()).unwrap().stats().path_pings;
    assert!(fw > 0 && fc > 0, "everyone tries");
}
