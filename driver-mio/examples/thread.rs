//! The thread mode: a server and two peers, each on a network thread of its
//! own, commanded through `Handle`s from the main thread and a worker. The
//! peers play ping-pong by node ID and print the round trips, then close.
//!
//! `cargo run -p p2pcore-mio --example thread`
#![allow(clippy::print_stdout)]

use p2pcore::{Config, Event, Identity, Reliability, Role};
use p2pcore_mio::{Host, HostConfig, os_seed};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let loopback = "127.0.0.1:0".parse()?;
    let server = Config::new(Identity::from_seed(Role::Server, os_seed()?), "server", os_seed()?);
    let (server, _) = Host::bind(HostConfig::new(loopback), server)?.spawn()?;
    let peer = |name: &str| -> Result<_, Box<dyn std::error::Error>> {
        let mut config = Config::new(Identity::from_seed(Role::Peer, os_seed()?), name, os_seed()?);
        config.bootstrap = vec![server.local_addr()];
        Ok(Host::bind(HostConfig::new(loopback), config)?.spawn()?)
    };
    let (ping, ping_events) = peer("ping")?;
    let (pong, pong_events) = peer("pong")?;

    // The ponger answers on a worker thread with its own clone of the handle.
    let ponger = pong.clone();
    let worker = std::thread::spawn(move || {
        while let Some(event) = pong_events.recv() {
            if let Event::MessageReceived { from, bytes, .. } = event {
                let _ = ponger.send(from, 0, bytes, Reliability::Reliable);
            }
        }
    });

    let pong_id = pong.id();
    while !ping.peers()?.iter().any(|p| p.id == pong_id) {
        // Directory updates arrive as events; wait for the next one.
        let _ = ping_events.recv_timeout(Duration::from_millis(100));
    }
    for i in 0..10u32 {
        let sent = Instant::now();
        ping.send(pong_id, 0, i.to_be_bytes().to_vec(), Reliability::Reliable)?;
        loop {
            match ping_events.recv_timeout(Duration::from_secs(10))? {
                Event::MessageReceived { bytes, .. } if bytes[..] == i.to_be_bytes() => break,
                Event::PathChanged { path, .. } => println!("path: {path:?}"),
                _ => {}
            }
        }
        println!("ping {i}: {:?}", sent.elapsed());
    }
    let links = ping.links()?;
    println!("ping's links: {:?}", links.iter().map(|l| (l.name.clone(), l.path, l.rtt)).collect::<Vec<_>>());
    ping.close()?;
    pong.close()?;
    drop(pong); // the worker's clone is the last: its loop ends with the thread
    worker.join().map_err(|_| "worker panicked")?;
    server.close()?;
    Ok(())
}
