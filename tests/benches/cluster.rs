//! Cluster measurements: formation time, failover time, bytes per membership
//! change. Run with `cargo bench -p p2pcore-tests --bench cluster`.
//!
//! Virtual times come from the simulator (20 ms one-way links, 2 ms jitter);
//! wall times are what the simulation itself took on this machine.
#![allow(clippy::print_stdout)] // a bench binary reports on stdout

use p2pcore_tests::sim::{LinkParams, NodeSpec, Sim, SimConfig};
use std::time::{Duration, Instant};

fn link() -> LinkParams {
    LinkParams {
        latency: Duration::from_millis(20),
        jitter: Duration::from_millis(2),
        ..LinkParams::default()
    }
}

fn servers(seed: u64, n: usize, stagger_ms: u64) -> Sim {
    let mut sim = Sim::new(SimConfig { seed, link: link(), ..SimConfig::default() });
    let first = sim.add_node(NodeSpec::server("s1"));
    for i in 2..=n {
        let spec = NodeSpec {
            start_after: Some(Duration::from_millis(stagger_ms * (i as u64 - 1))),
            ..NodeSpec::server(&format!("s{i}")).via(&[first])
        };
        sim.add_node(spec);
    }
    sim
}

fn total_bytes(sim: &Sim) -> u64 {
    sim.hosts().iter().map(|h| h.bytes.sent).sum()
}

fn stats(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    format!("min {:.0}  median {:.0}  max {:.0}", v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    // Formation: seven servers started at the same instant, introduced by s1.
    let mut virt = Vec::new();
    let mut wall = Vec::new();
    for seed in 1..=20 {
        let mut sim = servers(seed, 7, 0);
        let t = Instant::now();
        let mut formed = None;
        while formed.is_none() && sim.elapsed() < Duration::from_secs(10) {
            sim.run_for(Duration::from_millis(10));
            formed = sim.cluster_metrics().cluster_formed_ms;
        }
        wall.push(t.elapsed().as_secs_f64() * 1000.0);
        virt.push(formed.expect("formed"));
    }
    println!("7-server cluster formation, all started at once (20 seeds)");
    println!("  virtual ms: {}", stats(virt));
    println!("  wall ms:    {}", stats(wall));

    // Failover after killing the Master.
    for n in [3usize, 5, 7] {
        let mut f = Vec::new();
        for seed in 1..=20 {
            let mut sim = servers(seed, n, 100);
            sim.run_for(Duration::from_secs(4));
            let m = sim.agreed_master().expect("formed");
            let h = sim.hosts().iter().position(|x| x.id() == m).unwrap();
            sim.kill(h);
            sim.run_for(Duration::from_secs(5));
            f.push(sim.cluster_metrics().failover_ms[0]);
        }
        println!("failover after killing the Master, {n} servers (20 seeds), virtual ms: {}", stats(f));
    }

    // Bytes per membership change: wire bytes in a 10 s window with the
    // change, minus the same window without it (Raft heartbeats and QUIC
    // keep-alives are the baseline).
    for n in [3usize, 5, 7] {
        let window = Duration::from_secs(10);
        let mut quiet = servers(1, n - 1, 100);
        quiet.run_for(Duration::from_secs(5));
        let b0 = total_bytes(&quiet);
        quiet.run_for(window);
        let baseline = total_bytes(&quiet) - b0;

        let mut join = servers(1, n - 1, 100);
        join.run_for(Duration::from_secs(5));
        let b0 = total_bytes(&join);
        join.add_node(NodeSpec::server(&format!("s{n}")).via(&[0]));
        join.run_for(window);
        let joined = total_bytes(&join) - b0;
        // The newcomer's own steady-state share over the window is not part of the change.
        let mut steady = servers(1, n, 100);
        steady.run_for(Duration::from_secs(5));
        let b0 = total_bytes(&steady);
        steady.run_for(window);
        let steady_n = total_bytes(&steady) - b0;

        let mut leave = servers(1, n, 100);
        leave.run_for(Duration::from_secs(5));
        let b0 = total_bytes(&leave);
        let victim = leave.hosts().iter().position(|h| leave.agreed_master() != Some(h.id())).unwrap();
        leave.kill(victim);
        leave.run_for(window);
        let left = total_bytes(&leave) - b0;

        println!(
            "{n} servers: join costs {} bytes ({} with vs {} without, over 10 s); leave costs {} bytes; steady state {} bytes/s",
            joined as i64 - steady_n as i64,
            joined,
            steady_n,
            left as i64 - baseline as i64,
            steady_n / window.as_secs()
        );
    }
}
