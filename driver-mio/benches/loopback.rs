//! First figures of the mio host over real loopback sockets (the
//! side-by-side suite against quinn, ENet and bare UDP is a later issue):
//!
//! * reliable throughput of one channel between two peers on a direct path
//!   (MB/s), and the CPU it costs (ms of CPU, all threads, per 100 MB);
//! * small-message round trip, p50 and p99 (µs), on the direct path;
//! * relay forwarding at a server: datagrams/s it forwarded during a relayed
//!   bulk transfer, and its thread's CPU per forwarded datagram (the
//!   forwarding capacity of one core is its inverse);
//!
//! each with GSO on and off. Every node runs `Host::service` on a thread of
//! its own, with the application's logic in the same loop (no cross-thread
//! round trips in the measured path).
//!
//! `cargo bench -p p2pcore-mio --bench loopback` (add `-- --quick` for a
//! short run). Linux: CPU times come from `/proc`.
#![allow(clippy::print_stdout, missing_docs)]

mod common;

use common::{round_trips, transfer};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (total, relay_total, pings) =
        if quick { (32 << 20, 16 << 20, 500) } else { (512 << 20, 128 << 20, 5000) };
    println!("p2pcore-mio loopback figures ({} run)", if quick { "quick" } else { "full" });
    println!();
    println!(
        "| GSO | direct MB/s (64 KiB msgs) | CPU ms / 100 MB | RTT p50 µs | RTT p99 µs | relayed MB/s | server forwarded datagrams/s | server CPU µs / datagram |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for gso in [true, false] {
        let direct = transfer(gso, total, 64 << 10, false);
        let (p50, p99) = round_trips(gso, pings);
        let relay = transfer(gso, relay_total, 64 << 10, true);
        let per_datagram = relay.server_cpu.as_secs_f64() * 1e6 / relay.relayed.max(1) as f64;
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
            if gso { "on" } else { "off" },
            direct.mb_per_s,
            direct.cpu_per_100mb.as_secs_f64() * 1e3,
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            relay.mb_per_s,
            relay.relayed as f64 / relay.seconds,
            per_datagram,
        );
    }
}
