//! A service that works only while it sees the current Master: it watches
//! the Master and prints every change, and does its (here: counted) work
//! only while it is connected to the server its view names as Master.
//!
//! ```sh
//! cargo run -p p2pcore-tokio --example master_watch            # a self-contained demo
//! cargo run -p p2pcore-tokio --example master_watch -- 203.0.113.10:7400 203.0.113.11:7400
//! ```
//!
//! The demo starts three servers (on the mio host) in this process, watches
//! the Master, closes it after a few rounds of work and ends once the
//! failover elected another.
#![allow(clippy::print_stdout)]

use p2pcore::{Config, Identity, Role};
use p2pcore_tokio::{Endpoint, EndpointConfig, MasterView};
use std::net::SocketAddr;
use std::time::Duration;

fn describe(m: &MasterView) -> String {
    match m.master {
        Some(id) => format!(
            "{} ({id}), basis {:?}, term {}, epoch {}",
            m.name.as_deref().unwrap_or("?"),
            m.basis,
            m.term,
            m.epoch
        ),
        None => "none (an election is running, or no server is reachable)".into(),
    }
}

/// Whether this endpoint is connected to the Master its view names.
fn sees_master(endpoint: &Endpoint, m: &MasterView) -> bool {
    m.master.is_some_and(|id| endpoint.links().iter().any(|l| l.id == id))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut demo = Vec::new();
    let servers: Vec<SocketAddr> = if args.is_empty() {
        for i in 0..3 {
            let seed = p2pcore_tokio::os_seed()?;
            let mut config = Config::new(Identity::from_seed(Role::Server, seed), format!("s{i}"), seed);
            config.bootstrap = demo.iter().map(|(_, a)| *a).collect();
            let host = p2pcore_mio::Host::bind(p2pcore_mio::HostConfig::new("127.0.0.1:0".parse()?), config)?;
            let addr = host.local_addr();
            demo.push((host.spawn()?.0, addr));
        }
        demo.iter().map(|(_, a)| *a).collect()
    } else {
        args.iter()
            .map(|a| a.parse().map_err(|e| format!("'{a}' is not an address like 203.0.113.10:7400: {e}")))
            .collect::<Result<_, _>>()?
    };

    let identity = Identity::from_seed(Role::Peer, p2pcore_tokio::os_seed()?);
    let mut config = Config::new(identity, "watcher", p2pcore_tokio::os_seed()?);
    config.bootstrap = servers;
    let endpoint = Endpoint::bind(EndpointConfig::new("0.0.0.0:0".parse()?), config).await?;
    endpoint.online().await?;
    let mut master = endpoint.master_watch();
    println!("master: {}", describe(&master.borrow_and_update()));
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let (mut work, mut masters_seen, mut closed_one) = (0u64, 0usize, false);
    loop {
        tokio::select! {
            changed = master.changed() => {
                if changed.is_err() {
                    break; // the endpoint ended
                }
                let m = master.borrow_and_update().clone();
                println!("master changed: {}", describe(&m));
                if m.master.is_some() {
                    masters_seen += 1;
                }
                if !demo.is_empty() && closed_one && masters_seen >= 2 {
                    break;
                }
            }
            _ = tick.tick() => {
                let m = master.borrow().clone();
                if sees_master(&endpoint, &m) {
                    work += 1;
                } else {
                    println!("not connected to the Master's view: pausing work");
                }
                // The demo closes the Master after some work to show a failover.
                if !demo.is_empty()
                    && !closed_one
                    && work >= 5
                    && let Some((handle, _)) = demo.iter().find(|(h, _)| Some(h.id()) == m.master)
                {
                    println!("closing the Master {}", describe(&m));
                    handle.close()?;
                    closed_one = true;
                    masters_seen = masters_seen.max(1);
                }
            }
        }
    }
    println!("did {work} rounds of work while connected to the Master");
    endpoint.close().await;
    for (h, _) in demo {
        let _ = h.close();
    }
    Ok(())
}
