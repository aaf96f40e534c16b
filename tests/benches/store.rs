//! The replicated store's figures: request latency from a peer (1 ms and
//! 30 ms links), put throughput with many peers, the write-unavailability
//! window when the leader dies, bytes on the wire per write, and the
//! snapshot at 100k keys. Run with `cargo bench -p p2pcore-tests --bench store`.
//!
//! Latencies, throughput and windows are virtual time in the simulator
//! (three servers, peers connected to all of them); the snapshot figures are
//! wall time on this machine.
#![allow(clippy::print_stdout)] // a bench binary reports on stdout

use p2pcore::{Event, KvOptions, KvRequest};
use p2pcore_tests::sim::{HostId, LinkParams, Sim, SimConfig};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn cluster(seed: u64, latency_ms: u64, peers: usize) -> (Sim, Vec<HostId>, Vec<HostId>) {
    let link = LinkParams { latency: Duration::from_millis(latency_ms), ..LinkParams::default() };
    let mut sim = Sim::new(SimConfig { seed, link, ..SimConfig::default() });
    let (servers, peers) = sim.add_mesh(peers);
    sim.run_for(Duration::from_secs(4));
    (sim, servers, peers)
}

/// Request ids answered by `h` since the last call, with success.
fn done(sim: &mut Sim, h: HostId) -> Vec<(u64, bool)> {
    sim.take_events(h)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::KvDone { id, result } => Some((id, result.is_ok())),
            _ => None,
        })
        .collect()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Sequential requests from one peer: their latencies in ms.
fn latencies(sim: &mut Sim, p: HostId, n: usize, make: impl Fn(usize) -> KvRequest) -> Vec<f64> {
    let mut out = Vec::new();
    for i in 0..n {
        let start = sim.elapsed();
        let id = sim.with_node(p, |node, now| node.kv(now, make(i))).unwrap().unwrap();
        loop {
            sim.run_for(Duration::from_micros(100));
            if done(sim, p).iter().any(|(d, ok)| *d == id && *ok) {
                break;
            }
        }
        out.push((sim.elapsed() - start).as_secs_f64() * 1000.0);
    }
    out
}

fn main() {
    println!("store request latency from a peer, 3 servers (virtual ms, 300 requests each)");
    for latency in [1, 30] {
        let (mut sim, _, peers) = cluster(1, latency, 1);
        let mut put = latencies(&mut sim, peers[0], 300, |i| KvRequest::put(format!("k{}", i % 20), "value"));
        let mut get = latencies(&mut sim, peers[0], 300, |i| KvRequest::get(format!("k{}", i % 20)));
        println!(
            "  {latency:>2} ms links: put p50 {:.1} p99 {:.1}   linearizable get p50 {:.1} p99 {:.1}",
            percentile(&mut put, 0.5),
            percentile(&mut put, 0.99),
            percentile(&mut get, 0.5),
            percentile(&mut get, 0.99)
        );
    }

    // Bytes per write: the same virtual time idle and with sequential puts.
    let (mut idle, _, _) = cluster(2, 1, 1);
    let (mut busy, _, peers) = cluster(2, 1, 1);
    let bytes = |sim: &Sim| sim.hosts().iter().map(|h| h.bytes.sent).sum::<u64>();
    let (b0, i0, t0) = (bytes(&busy), bytes(&idle), busy.elapsed());
    latencies(&mut busy, peers[0], 500, |i| KvRequest::put(format!("key{}", i % 50), vec![7u8; 100]));
    idle.run_for(busy.elapsed() - t0);
    let per = (bytes(&busy) - b0).saturating_sub(bytes(&idle) - i0) as f64 / 500.0;
    println!("bytes on the wire per 100-byte put (all hosts, minus an idle run): {per:.0}");

    // Throughput: many peers, each keeping 32 puts in flight.
    for peers_n in [10, 30] {
        let (mut sim, _, peers) = cluster(3, 1, peers_n);
        let mut inflight: BTreeMap<HostId, usize> = BTreeMap::new();
        let mut completed = 0usize;
        let wall = Instant::now();
        let window = Duration::from_secs(2);
        let start = sim.elapsed();
        while sim.elapsed() - start < window {
            for (i, &p) in peers.iter().enumerate() {
                let n = inflight.entry(p).or_default();
                while *n < 32 {
                    let req = KvRequest::put(format!("p{i}/{}", completed % 100), vec![1u8; 100]);
                    sim.with_node(p, |node, now| node.kv(now, req)).unwrap().unwrap();
                    *n += 1;
                }
            }
            sim.run_for(Duration::from_millis(1));
            for &p in &peers {
                let d = done(&mut sim, p);
                completed += d.iter().filter(|(_, ok)| *ok).count();
                *inflight.entry(p).or_default() -= d.len();
            }
        }
        // Virtual time models no CPU; the wall figure is what one core
        // simulating the whole cluster (every node's QUIC, TLS and Raft) did.
        let wall = wall.elapsed().as_secs_f64();
        println!(
            "put throughput, {peers_n} peers x 32 in flight, 1 ms links: {:.0} puts/s virtual; \
             the simulation ran {:.0} puts/s of wall time on one core",
            completed as f64 / window.as_secs_f64(),
            completed as f64 / wall
        );
    }

    // Failover: three peers writing one at a time; the leader dies.
    let mut gaps = Vec::new();
    for seed in 1..=10 {
        let (mut sim, servers, peers) = cluster(seed, 1, 3);
        let opts = KvOptions::default().with_timeout(Duration::from_secs(10));
        let mut waiting: BTreeMap<HostId, u64> = BTreeMap::new();
        let mut last_ok = sim.elapsed();
        let mut worst = Duration::ZERO;
        let kill_at = sim.elapsed() + Duration::from_secs(1);
        let mut killed = false;
        while sim.elapsed() < kill_at + Duration::from_secs(8) {
            if !killed && sim.elapsed() >= kill_at {
                let master = sim.agreed_master().expect("a master");
                let leader = servers.iter().copied().find(|s| sim.host(*s).id() == master).unwrap();
                sim.kill(leader);
                killed = true;
            }
            for &p in &peers {
                if let std::collections::btree_map::Entry::Vacant(slot) = waiting.entry(p) {
                    let id = sim
                        .with_node(p, |n, now| n.kv_with(now, KvRequest::put("x", "y"), opts))
                        .unwrap()
                        .unwrap();
                    slot.insert(id);
                }
            }
            sim.run_for(Duration::from_millis(1));
            for &p in &peers {
                for (id, ok) in done(&mut sim, p) {
                    if waiting.get(&p) == Some(&id) {
                        waiting.remove(&p);
                        if ok {
                            worst = worst.max(sim.elapsed() - last_ok);
                            last_ok = sim.elapsed();
                        }
                    }
                }
            }
        }
        gaps.push(worst.as_secs_f64() * 1000.0);
    }
    println!(
        "write-unavailability window after the leader dies (longest gap between successful puts, 10 seeds): \
         p50 {:.0} ms, max {:.0} ms",
        percentile(&mut gaps.clone(), 0.5),
        percentile(&mut gaps, 1.0)
    );

    // Snapshot at 100k keys.
    let t = Instant::now();
    let image = p2pcore::fuzz::store_image(100_000, 8);
    let build = t.elapsed();
    let n = 5;
    let t = Instant::now();
    for _ in 0..n {
        assert!(p2pcore::fuzz::store_restores(std::hint::black_box(&image)));
    }
    let restore = t.elapsed() / n;
    println!(
        "snapshot at 100k keys (8-byte keys, 8-byte values): {:.2} MB, 100k puts + encode {:.0} ms, decode {:.0} ms",
        image.len() as f64 / 1e6,
        build.as_secs_f64() * 1000.0,
        restore.as_secs_f64() * 1000.0
    );
}
