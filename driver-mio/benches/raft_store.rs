//! What a server's Raft store costs a write: the latency of sequential
//! puts from a peer against three servers on loopback, each server on a
//! thread of its own keeping its Raft state in `raft.redb`
//! (`Host::bind_in`), with `HostConfig::raft_fsync` on (every confirmed
//! batch synced to the disk) and off. Also without a store (in memory),
//! for reference.
//!
//! `cargo bench -p p2pcore-mio --bench raft_store` (add `-- --quick` for
//! 50 puts instead of 200). The figures depend on the disk under the
//! temporary directory (`TMPDIR`): an fsync is ~0.05 ms on tmpfs, ~0.1-2
//! ms on an SSD, 5-10 ms on a spinning disk.
#![allow(clippy::print_stdout, missing_docs)]

use p2pcore::{Config, Event, Identity, KvRequest, Role};
use p2pcore_mio::{DataDir, Handle, Host, HostConfig};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy)]
enum Mode {
    Memory,
    Disk { fsync: bool },
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let puts = if quick { 50 } else { 200 };
    println!("p2pcore-mio Raft store: {puts} sequential 100-byte puts, 1 peer, 3 servers on loopback");
    println!("(TMPDIR: {})", std::env::temp_dir().display());
    println!();
    println!("| Raft state | p50 ms | p99 ms | max ms | puts/s |");
    println!("|---|---|---|---|---|");
    for (name, mode) in [
        ("raft.redb, raft_fsync = true", Mode::Disk { fsync: true }),
        ("raft.redb, raft_fsync = false", Mode::Disk { fsync: false }),
        ("in memory (no store)", Mode::Memory),
    ] {
        let (mut lat, total) = run(mode, puts);
        lat.sort();
        let q = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.0} |",
            q(0.5),
            q(0.99),
            q(1.0),
            puts as f64 / total.as_secs_f64()
        );
    }
}

fn server(dir: &DataDir, mode: Mode, join: &[SocketAddr]) -> Handle {
    let mut config = dir.config("s").expect("config");
    config.bootstrap = join.to_vec();
    let mut host_config = HostConfig::new("127.0.0.1:0".parse().unwrap());
    let host = match mode {
        Mode::Memory => Host::bind(host_config, config),
        Mode::Disk { fsync } => {
            host_config.raft_fsync = fsync;
            Host::bind_in(host_config, dir, config)
        }
    };
    host.expect("bind").spawn().expect("spawn").0
}

/// Drives the peer until `done` holds, failing after [`LIMIT`].
fn drive(peer: &mut Host, what: &str, mut done: impl FnMut(&mut Host, Vec<Event>) -> bool) {
    let start = Instant::now();
    let mut events = Vec::new();
    loop {
        peer.service(Duration::from_millis(5)).expect("service");
        peer.drain_events(&mut events);
        if done(peer, std::mem::take(&mut events)) {
            return;
        }
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
    }
}

fn run(mode: Mode, puts: usize) -> (Vec<Duration>, Duration) {
    let tmp: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let dirs: Vec<DataDir> = tmp.iter().map(|t| DataDir::open(t.path(), Role::Server).unwrap()).collect();
    let s1 = server(&dirs[0], mode, &[]);
    let first = s1.local_addr();
    let servers = [s1, server(&dirs[1], mode, &[first]), server(&dirs[2], mode, &[first])];
    let addrs: Vec<SocketAddr> = servers.iter().map(Handle::local_addr).collect();

    let mut config =
        Config::new(Identity::from_seed(Role::Peer, [9; 32]), "p", p2pcore_mio::os_seed().unwrap());
    config.bootstrap = addrs;
    let mut peer = Host::bind(HostConfig::new("127.0.0.1:0".parse().unwrap()), config).expect("bind");
    drive(&mut peer, "the peer on three servers and a Master", |h, _| {
        h.node().network_up() && h.node().servers().iter().filter(|s| s.live).count() == 3
    });
    // Warm up: the first writes wait for the leader's first commit.
    put(&mut peer, "warm-up".into());

    let value = "x".repeat(100);
    let mut lat = Vec::with_capacity(puts);
    let start = Instant::now();
    for i in 0..puts {
        let t = Instant::now();
        put(&mut peer, format!("key/{i:04}={value}"));
        lat.push(t.elapsed());
    }
    let total = start.elapsed();
    let _ = peer.close();
    for s in &servers {
        let _ = s.close();
    }
    (lat, total)
}

/// One put (`key=value`), retried while the store is unavailable.
fn put(peer: &mut Host, kv: String) {
    let (k, v) = kv.split_once('=').unwrap_or((&kv, ""));
    let (k, v) = (k.to_owned(), v.to_owned());
    loop {
        let id = peer.node_mut().kv(Instant::now(), KvRequest::put(k.clone(), v.clone())).expect("request");
        peer.flush();
        let mut result = None;
        drive(peer, "a put's answer", |_, events| {
            for e in events {
                if let Event::KvDone { id: i, result: r } = e
                    && i == id
                {
                    result = Some(r);
                }
            }
            result.is_some()
        });
        match result {
            Some(Ok(_)) => return,
            Some(Err(p2pcore::KvError::Unavailable)) => continue,
            other => panic!("put failed: {other:?}"),
        }
    }
}
