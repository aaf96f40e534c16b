//! The tokio driver next to the mio host, in one run on the same box:
//!
//! * reliable throughput of one channel between two peers on a direct path
//!   (64 KiB messages, MB/s) and its CPU (ms, all threads, per 100 MB);
//! * small-message (64-byte) round trip, p50 and p99 (µs), on the direct
//!   path, the other side echoing at once;
//!
//! with the ratio tokio / mio (absolute numbers on a shared machine swing
//! between runs; the ratio within one run holds). The mio side is measured
//! by the mio host's own loopback bench code (included from
//! `driver-mio/benches/common`): each node's `Host::service` on a thread of
//! its own. The tokio side: one server on the mio host, the two peers as
//! tokio endpoints in a 2-worker multi-thread runtime, the application's
//! logic in tasks (`send_wait` / `recv`).
//!
//! `cargo bench -p p2pcore-tokio --bench tokio_vs_mio` (`-- --quick` for a
//! short run). Linux: CPU times come from `/proc`.
#![allow(clippy::print_stdout, missing_docs)]

#[path = "../../driver-mio/benches/common/mod.rs"]
mod mio_side;

use bytes::Bytes;
use mio_side::process_cpu;
use p2pcore::{Config, Identity, PathKind, Reliability, Role};
use p2pcore_mio::os_seed;
use p2pcore_tokio::{Endpoint, EndpointConfig};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

async fn endpoint(role: Role, name: &str, servers: &[SocketAddr]) -> Endpoint {
    let mut config = Config::new(Identity::from_seed(role, os_seed().unwrap()), name, os_seed().unwrap());
    config.bootstrap = servers.to_vec();
    Endpoint::bind(EndpointConfig::new("127.0.0.1:0".parse().unwrap()), config).await.expect("bind")
}

/// Two tokio peers on a direct path through one mio server.
async fn pair() -> (p2pcore_mio::Handle, Endpoint, Endpoint) {
    let server = mio_side::host(Role::Server, "s", true, &[], true);
    let addr = server.local_addr();
    let (server, _events) = server.spawn().expect("server thread");
    let a = endpoint(Role::Peer, "a", &[addr]).await;
    let b = endpoint(Role::Peer, "b", &[addr]).await;
    a.online().await.expect("a online");
    b.online().await.expect("b online");
    let to_b = a.peer(b.id());
    let to_a = b.peer(a.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    // Peers connect eagerly; wait for the direct path both ways.
    while !(to_b.path().is_some_and(|p| p.kind == PathKind::Direct)
        && to_a.path().is_some_and(|p| p.kind == PathKind::Direct))
    {
        assert!(Instant::now() < deadline, "no direct path within 60 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (server, a, b)
}

/// (MB/s, CPU per 100 MB) of `total` bytes in `size`-byte messages.
async fn transfer(total: usize, size: usize) -> (f64, Duration) {
    let (server, a, b) = pair().await;
    let b_id = b.id();
    let receiver = tokio::spawn(async move {
        let mut got = 0;
        let mut first = None;
        while got < total {
            let m = b.recv().await.expect("b alive");
            first.get_or_insert_with(Instant::now);
            got += m.bytes.len();
        }
        let last = Instant::now();
        b.close().await;
        (first.unwrap_or(last), last)
    });
    let payload = Bytes::from(vec![0x5a; size]);
    let cpu0 = process_cpu();
    let mut left = total;
    while left > 0 {
        a.send_wait(b_id, 1, payload.clone(), Reliability::Reliable).await.expect("send");
        left = left.saturating_sub(size);
    }
    let (first, last) = receiver.await.expect("receiver");
    let cpu = process_cpu().saturating_sub(cpu0);
    a.close().await;
    server.close().expect("server close");
    let seconds = last.duration_since(first).as_secs_f64().max(1e-9);
    (total as f64 / 1e6 / seconds, cpu.mul_f64(100e6 / total as f64))
}

/// (p50, p99) of `count` 64-byte round trips.
async fn round_trips(count: usize) -> (Duration, Duration) {
    let (server, a, b) = pair().await;
    let b_id = b.id();
    let echo = tokio::spawn(async move {
        while let Some(m) = b.recv().await {
            if m.channel == 3 {
                break;
            }
            b.send(m.from, 2, m.bytes, Reliability::Reliable).expect("echo");
        }
        b.close().await;
    });
    let from_b = a.peer(b_id);
    let mut rtts = Vec::with_capacity(count);
    let ping = Bytes::from(vec![7u8; 64]);
    for _ in 0..count {
        let t = Instant::now();
        a.send(from_b.id(), 2, ping.clone(), Reliability::Reliable).expect("ping");
        from_b.recv(2).await.expect("pong");
        rtts.push(t.elapsed());
    }
    a.send(from_b.id(), 3, &b"stop"[..], Reliability::Reliable).expect("stop");
    echo.await.expect("echo task");
    a.close().await;
    server.close().expect("server close");
    rtts.sort();
    let pct = |p: f64| rtts[((rtts.len() as f64 - 1.0) * p) as usize];
    (pct(0.5), pct(0.99))
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (total, pings) = if quick { (32 << 20, 500) } else { (512 << 20, 5000) };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("p2pcore tokio driver vs mio host, loopback ({} run)", if quick { "quick" } else { "full" });
    println!();
    // The mio side first, then the tokio side, then each once more in the
    // other order: the table shows the mean of the two.
    let mio_t1 = mio_side::transfer(true, total, 64 << 10, false);
    let (tok_mb1, tok_cpu1) = rt.block_on(transfer(total, 64 << 10));
    let (tok_mb2, tok_cpu2) = rt.block_on(transfer(total, 64 << 10));
    let mio_t2 = mio_side::transfer(true, total, 64 << 10, false);
    let (mio_p50a, mio_p99a) = mio_side::round_trips(true, pings);
    let (tok_p50a, tok_p99a) = rt.block_on(round_trips(pings));
    let (tok_p50b, tok_p99b) = rt.block_on(round_trips(pings));
    let (mio_p50b, mio_p99b) = mio_side::round_trips(true, pings);

    let mean = |a: f64, b: f64| (a + b) / 2.0;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mio_mb = mean(mio_t1.mb_per_s, mio_t2.mb_per_s);
    let tok_mb = mean(tok_mb1, tok_mb2);
    let mio_cpu = mean(mio_t1.cpu_per_100mb.as_secs_f64(), mio_t2.cpu_per_100mb.as_secs_f64()) * 1e3;
    let tok_cpu = mean(tok_cpu1.as_secs_f64(), tok_cpu2.as_secs_f64()) * 1e3;
    let (mio_p50, mio_p99) = (mean(us(mio_p50a), us(mio_p50b)), mean(us(mio_p99a), us(mio_p99b)));
    let (tok_p50, tok_p99) = (mean(us(tok_p50a), us(tok_p50b)), mean(us(tok_p99a), us(tok_p99b)));
    println!("| figure | mio host | tokio driver | tokio / mio |");
    println!("|---|---|---|---|");
    println!("| direct MB/s (64 KiB msgs) | {mio_mb:.0} | {tok_mb:.0} | {:.2} |", tok_mb / mio_mb);
    println!("| CPU ms / 100 MB (all threads) | {mio_cpu:.0} | {tok_cpu:.0} | {:.2} |", tok_cpu / mio_cpu);
    println!("| RTT p50 µs (64 B) | {mio_p50:.0} | {tok_p50:.0} | {:.2} |", tok_p50 / mio_p50);
    println!("| RTT p99 µs (64 B) | {mio_p99:.0} | {tok_p99:.0} | {:.2} |", tok_p99 / mio_p99);
    println!();
    println!(
        "runs: mio {:.0} / {:.0} MB/s, tokio {tok_mb1:.0} / {tok_mb2:.0} MB/s; p50 mio {:.0} / {:.0} µs, tokio {:.0} / {:.0} µs",
        mio_t1.mb_per_s,
        mio_t2.mb_per_s,
        us(mio_p50a),
        us(mio_p50b),
        us(tok_p50a),
        us(tok_p50b)
    );
}
