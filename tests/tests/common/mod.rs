//! Helpers shared by the scenario tests (one scenario per file).
#![allow(dead_code, unreachable_pub)]

use p2pcore::{ConnectError, Event, NodeId};
use p2pcore_tests::sim::{HostId, LinkParams, Sim, SimConfig};
use std::time::Duration;

/// A simulator with the given seed and link.
pub fn sim_with(seed: u64, link: LinkParams) -> Sim {
    Sim::new(SimConfig { seed, link, ..SimConfig::default() })
}

/// A simulator with the given seed and a clean 20 ms link.
pub fn sim(seed: u64) -> Sim {
    sim_with(seed, LinkParams::default())
}

/// Dials `to` from `from` at `addr` (the target's public address by default).
pub fn dial(sim: &mut Sim, from: HostId, to: HostId) {
    let id = sim.host(to).id();
    let addr = sim.public_addr(to).or_else(|| Some(sim.host(to).addr)).unwrap();
    sim.with_node(from, |n, now| n.connect(now, id, addr)).unwrap().unwrap();
}

/// Whether `a` has an established connection to `b`.
pub fn linked(sim: &Sim, a: HostId, b: HostId) -> bool {
    let id = sim.host(b).id();
    sim.node(a).is_some_and(|n| n.is_connected(&id))
}

/// The events of host `h` so far (consumed).
pub fn events(sim: &mut Sim, h: HostId) -> Vec<Event> {
    sim.take_events(h).into_iter().map(|(_, e)| e).collect()
}

/// The first connect failure in `events`, if any.
pub fn connect_failure(events: &[Event]) -> Option<ConnectError> {
    events.iter().find_map(|e| match e {
        Event::ConnectFailed { error, .. } => Some(error.clone()),
        _ => None,
    })
}

/// Whether `events` contain a disconnect from `id`.
pub fn disconnected_from(events: &[Event], id: NodeId) -> bool {
    events.iter().any(|e| matches!(e, Event::Disconnected { id: x, .. } if *x == id))
}

/// Runs `sim` in small steps until `cond` holds or `limit` passes; returns the elapsed virtual time.
pub fn run_until(sim: &mut Sim, limit: Duration, mut cond: impl FnMut(&Sim) -> bool) -> Option<Duration> {
    let start = sim.elapsed();
    while sim.elapsed() - start < limit {
        if cond(sim) {
            return Some(sim.elapsed() - start);
        }
        sim.run_for(Duration::from_millis(5));
    }
    cond(sim).then(|| sim.elapsed() - start)
}

/// Three servers (s1 first, then s2 and s3 joining through it) and `peers`
/// public peers bootstrapping from every server; everyone started at once.
pub fn mesh(seed: u64, peers: usize, link: LinkParams) -> (Sim, Vec<HostId>, Vec<HostId>) {
    mesh_configured(seed, peers, link, |_, _| {})
}

/// [`mesh`] with hole punching off: every peer-to-peer byte is relayed.
#[allow(dead_code)]
pub fn relay_mesh(seed: u64, peers: usize, link: LinkParams) -> (Sim, Vec<HostId>, Vec<HostId>) {
    mesh_configured(seed, peers, link, |c, _| c.peer.hole_punching = false)
}

/// [`mesh`] with a configuration hook applied to every node.
pub fn mesh_configured(
    seed: u64,
    peers: usize,
    link: LinkParams,
    configure: impl Fn(&mut p2pcore::Config, &p2pcore_tests::sim::Host) + 'static,
) -> (Sim, Vec<HostId>, Vec<HostId>) {
    let mut sim = sim_with(seed, link);
    sim.set_configure(configure);
    let (servers, peers) = sim.add_mesh(peers);
    (sim, servers, peers)
}

/// Runs an invariant check over seeds 1..=N (`P2PCORE_SEEDS`, default 200)
/// and fails with every failing seed and why.
pub fn check_seeds(run: impl Fn(u64) -> Result<(), String>) {
    check_seeds_n(200, run)
}

/// [`check_seeds`] with another default count (for sweeps whose seeds are
/// long); `P2PCORE_SEEDS` still overrides it.
#[allow(dead_code)]
pub fn check_seeds_n(default: u64, run: impl Fn(u64) -> Result<(), String>) {
    let seeds: u64 = std::env::var("P2PCORE_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    let failures: Vec<String> =
        (1..=seeds).filter_map(|seed| run(seed).err().map(|e| format!("seed {seed}: {e}"))).collect();
    assert!(failures.is_empty(), "{} of {seeds} seeds failed:\n{}", failures.len(), failures.join("\n"));
}

/// Runs one seed (`SEED`, default 1) of an invariant check with the core's
/// diagnostics on (`RUST_LOG`) and prints the outcome.
pub fn debug_seed(run: impl Fn(u64) -> Result<(), String>) {
    p2pcore_tests::log::init_from_env();
    let seed: u64 = std::env::var("SEED").unwrap_or_else(|_| "1".into()).parse().unwrap_or(1);
    eprintln!("seed {seed}: {:?}", run(seed));
}

/// Whether every running peer sees every other running peer online.
pub fn directories_converged(sim: &Sim, peers: &[HostId]) -> bool {
    let alive: Vec<HostId> = peers.iter().copied().filter(|p| sim.host(*p).alive()).collect();
    alive.iter().all(|p| {
        let seen: std::collections::BTreeSet<NodeId> =
            sim.node(*p).unwrap().peers().iter().map(|x| x.id).collect();
        alive.iter().filter(|q| *q != p).all(|q| seen.contains(&sim.host(*q).id()))
            && seen.len() == alive.len() - 1
    })
}
