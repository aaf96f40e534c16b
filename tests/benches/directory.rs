//! Directory-sync bytes: what one more peer joining costs in a network of
//! 64, 256 and 1024 peers (3 servers). Run with
//! `cargo bench -p p2pcore-tests --bench directory`.
//!
//! The cost is measured on the wire (QUIC-encrypted, with headers): all bytes
//! sent in a 3 s window after the join, minus the same window without one
//! (keep-alives). Peers use the on-demand policy so no peer-to-peer
//! connections add to it. A join should cost O(1) per existing peer (one
//! delta from each server) plus an O(N) snapshot for the newcomer: linear in
//! N, not quadratic.
#![allow(clippy::print_stdout)] // a bench binary reports on stdout

use p2pcore::ConnectPolicy;
use p2pcore_tests::sim::{HostId, LinkParams, NodeSpec, Sim, SimConfig};
use std::time::{Duration, Instant};

fn total_sent(sim: &Sim) -> u64 {
    sim.hosts().iter().map(|h| h.bytes.sent).sum()
}

fn network(n: usize) -> (Sim, Vec<HostId>, Vec<HostId>) {
    let mut sim = Sim::new(SimConfig { seed: 3, link: LinkParams::default(), ..SimConfig::default() });
    sim.set_configure(|c, _| c.peer.connect = ConnectPolicy::OnDemand);
    let s1 = sim.add_node(NodeSpec::server("s1"));
    let s2 = sim.add_node(NodeSpec::server("s2").via(&[s1]));
    let s3 = sim.add_node(NodeSpec::server("s3").via(&[s1]));
    let servers = vec![s1, s2, s3];
    let peers = (0..n)
        .map(|i| {
            let spec = NodeSpec {
                // Spread the joins over 4 s, as real peers would trickle in.
                start_after: Some(Duration::from_micros(4_000_000 * i as u64 / n as u64)),
                ..NodeSpec::peer(&format!("p{i}"), None)
            };
            sim.add_node(spec.via(&servers))
        })
        .collect();
    (sim, servers, peers)
}

fn main() {
    println!("directory sync when one more peer joins (3 servers; bytes on the wire)");
    println!(
        "{:>6} {:>14} {:>18} {:>18} {:>12}",
        "peers", "join total", "per existing peer", "newcomer received", "build wall"
    );
    for n in [64usize, 256, 1024] {
        let t = Instant::now();
        let (mut sim, servers, peers) = network(n);
        sim.run_for(Duration::from_secs(8));
        let build = t.elapsed();
        let listed = sim.node(peers[0]).unwrap().peers().len();
        assert_eq!(listed, n - 1, "the network formed");
        // Idle window.
        let b0 = total_sent(&sim);
        let w0: Vec<u64> = peers.iter().map(|p| sim.host(*p).bytes.received).collect();
        sim.run_for(Duration::from_secs(3));
        let idle = total_sent(&sim) - b0;
        let w_idle: Vec<u64> = peers.iter().zip(&w0).map(|(p, b)| sim.host(*p).bytes.received - b).collect();
        // Join window.
        let b1 = total_sent(&sim);
        let w1: Vec<u64> = peers.iter().map(|p| sim.host(*p).bytes.received).collect();
        let newcomer = sim.add_node(NodeSpec::peer("newcomer", None).via(&servers));
        sim.run_for(Duration::from_secs(3));
        let join = (total_sent(&sim) - b1).saturating_sub(idle);
        let per_existing: u64 = peers
            .iter()
            .zip(&w1)
            .zip(&w_idle)
            .map(|((p, b), i)| (sim.host(*p).bytes.received - b).saturating_sub(*i))
            .sum::<u64>()
            / n as u64;
        let got = sim.host(newcomer).bytes.received;
        println!("{n:>6} {join:>14} {per_existing:>18} {got:>18} {:>10.1} s", build.as_secs_f64());
    }
}
