//! Hole-punching measurements over the NAT grid (`tests/scenarios/nat-grid.toml`):
//! per pair of presets, how often the pair ends on the path its NATs allow,
//! how long the move from the relay to the direct path takes after the
//! connection comes up, and the bytes each peer spends on probing. Run with
//! `cargo bench -p p2pcore-tests --bench nat_grid` (`P2PCORE_SEEDS=N` for
//! more or fewer seeds; default 100, each with and without 5% loss).
#![allow(clippy::print_stdout)] // a bench binary reports on stdout

use p2pcore::{Event, PathKind};
use p2pcore_tests::nat::expected_path;
use p2pcore_tests::scenario::Loaded;
use p2pcore_tests::sim::Sim;
use std::collections::BTreeMap;
use std::time::Instant;

const GRID: &str = include_str!("../scenarios/nat-grid.toml");

/// The preset class of a grid peer (`prc1` → `prc`).
fn class(name: &str) -> String {
    name.trim_end_matches(char::is_numeric).to_owned()
}

#[derive(Default)]
struct Cell {
    runs: u32,
    as_expected: u32,
    expected: &'static str,
    /// Relay-to-direct times (ms): from the connection coming up to the
    /// first direct path.
    took: Vec<f64>,
    /// Times a direct path was given up for the relay (both sides counted).
    fallbacks: u32,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn run(seed: u64, loss: f64, cells: &mut BTreeMap<(String, String), Cell>, probe_bytes: &mut Vec<u64>) {
    let text = GRID.replacen("jitter_ms = 2\n", &format!("jitter_ms = 2\nloss = {loss}\n"), 1);
    let loaded = Loaded::parse(&text).expect("the grid scenario parses");
    let mut sim: Sim = loaded.build(seed);
    sim.run_until(loaded.duration());
    let nat = |h: usize| sim.host(h).lan.and_then(|l| sim.lans()[l].nat.as_ref()).map(|n| n.config().clone());
    for p in sim.pair_paths().iter().filter(|p| p.a < p.b) {
        let (ha, hb) = (sim.find(&p.a).expect("grid peer"), sim.find(&p.b).expect("grid peer"));
        let same = sim.host(ha).lan.is_some() && sim.host(ha).lan == sim.host(hb).lan;
        let want = expected_path(nat(ha).as_ref(), nat(hb).as_ref(), same);
        let mut key = [class(&p.a), class(&p.b)];
        key.sort();
        let [x, y] = key;
        let cell = cells.entry((x, y)).or_default();
        cell.runs += 1;
        cell.expected = want;
        if p.path == want {
            cell.as_expected += 1;
        }
        // From a's events: when the link came up (first path) and when it
        // first went direct; and every later move back to the relay.
        let b_id = sim.host(hb).id();
        let mut up = None;
        let mut direct = None;
        for (host, other) in [(ha, b_id), (hb, sim.host(ha).id())] {
            let mut was_direct = false;
            for (t, e) in &sim.host(host).events {
                let Event::PathChanged { peer, path: Some(path) } = e else { continue };
                if *peer != other {
                    continue;
                }
                let is_direct = !matches!(path, PathKind::Relayed { .. });
                if host == ha {
                    up.get_or_insert(*t);
                    if is_direct {
                        direct.get_or_insert(*t);
                    }
                }
                if was_direct && !is_direct {
                    cell.fallbacks += 1;
                }
                was_direct = is_direct;
            }
        }
        if let (Some(up), Some(direct)) = (up, direct) {
            cell.took.push((direct - up).as_secs_f64() * 1000.0);
        }
    }
    for h in sim.hosts().iter().filter(|h| h.identity.id().role() == p2pcore::Role::Peer) {
        probe_bytes.push(h.node.as_ref().map_or(0, |n| n.stats().path_probe_bytes));
    }
}

fn main() {
    let seeds: u64 = std::env::var("P2PCORE_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    for loss in [0.0, 0.05] {
        let started = Instant::now();
        let mut cells = BTreeMap::new();
        let mut probe_bytes = Vec::new();
        for seed in 1..=seeds {
            run(seed, loss, &mut cells, &mut probe_bytes);
        }
        println!(
            "\nNAT grid, {seeds} seeds, {:.0}% loss, 20 ms one-way latency ({:.1} s wall)",
            loss * 100.0,
            started.elapsed().as_secs_f64()
        );
        println!("| pair | expected | as expected | relay→direct median ms | p95 ms | max ms | fallbacks |");
        println!("|---|---|---|---|---|---|---|");
        for ((x, y), mut c) in cells {
            let pct = 100.0 * f64::from(c.as_expected) / f64::from(c.runs);
            let (med, p95) = (percentile(&mut c.took, 0.5), percentile(&mut c.took, 0.95));
            let max = percentile(&mut c.took, 1.0);
            println!(
                "| {x} × {y} | {} | {pct:.1}% of {} | {med:.0} | {p95:.0} | {max:.0} | {} |",
                c.expected, c.runs, c.fallbacks
            );
        }
        let n = probe_bytes.len() as f64;
        let mean = probe_bytes.iter().sum::<u64>() as f64 / n;
        let max = probe_bytes.iter().max().copied().unwrap_or(0);
        println!("probe bytes per peer over the 20 s run (13 remote peers each): mean {mean:.0}, max {max}");
    }
}
