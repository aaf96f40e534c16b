//! The game-loop mode: two peers driven by `Host::service` once per frame
//! from one loop, as an engine would, beside a server on its own thread.
//! Each frame a peer sends its position unreliably; once a second a chat
//! line goes reliably. Runs for three seconds on loopback and closes.
//!
//! `cargo run -p p2pcore-mio --example game_loop`
#![allow(clippy::print_stdout)]

use p2pcore::{Config, Event, Identity, Reliability, Role};
use p2pcore_mio::{Host, HostConfig, os_seed};
use std::time::{Duration, Instant};

const FRAME: Duration = Duration::from_millis(16);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let loopback = "127.0.0.1:0".parse()?;
    // A throwaway server identity (a real one comes from a DataDir).
    let server = Config::new(Identity::from_seed(Role::Server, os_seed()?), "server", os_seed()?);
    let (server, _server_events) = Host::bind(HostConfig::new(loopback), server)?.spawn()?;

    let mut players = Vec::new();
    for name in ["alice", "bob"] {
        let mut config = Config::new(Identity::from_seed(Role::Peer, os_seed()?), name, os_seed()?);
        config.bootstrap = vec![server.local_addr()];
        players.push(Host::bind(HostConfig::new(loopback), config)?);
    }
    let bob = players[1].id();
    let mut events = Vec::new();
    let start = Instant::now();
    let mut frame = 0u64;
    while start.elapsed() < Duration::from_secs(3) {
        let frame_start = Instant::now();
        for host in players.iter_mut() {
            host.service(Duration::ZERO)?; // handle what arrived; never blocks
            host.drain_events(&mut events);
            for event in events.drain(..) {
                match event {
                    Event::MessageReceived { from, channel: 1, bytes, .. } => {
                        println!(
                            "[{}] chat from {}: {}",
                            host.node().name(),
                            from.short(),
                            String::from_utf8_lossy(&bytes)
                        );
                    }
                    Event::MessageReceived { channel: 0, .. } => {} // positions
                    Event::PathChanged { peer, path } => {
                        println!("[{}] path to {}: {path:?}", host.node().name(), peer.short());
                    }
                    other => println!("[{}] {other:?}", host.node().name()),
                }
            }
        }
        // Game logic: alice moves and talks to bob once she knows him.
        let alice = &mut players[0];
        if alice.node().peers().iter().any(|p| p.id == bob) {
            let position = (frame as f32 * 0.1).to_le_bytes().to_vec();
            // Unreliable needs a connection: the first reliable send makes one.
            let _ = alice.send(bob, 0, position, Reliability::Unreliable);
            if frame.is_multiple_of(60) {
                alice.send(bob, 1, format!("hello at frame {frame}"), Reliability::Reliable)?;
            }
            alice.flush(); // out now, not at the next frame's service
        }
        frame += 1;
        std::thread::sleep(FRAME.saturating_sub(frame_start.elapsed())); // vsync stand-in
    }
    let received = players[1].node().stats().datagrams_in;
    println!("{frame} frames; bob received {received} datagrams");
    for host in &mut players {
        host.close()?;
    }
    server.close()?;
    Ok(())
}
