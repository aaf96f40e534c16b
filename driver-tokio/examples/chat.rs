//! A chat peer: joins a network and greets every other peer by name, then
//! prints what anyone says.
//!
//! ```sh
//! cargo run -p p2pcore-tokio --example chat                       # a self-contained demo
//! cargo run -p p2pcore-tokio --example chat -- 203.0.113.10:7400 alice   # join a real network
//! ```
//!
//! The demo starts one server (on the mio host) and three peers in this
//! process; each greets the others and the demo ends when everyone heard
//! from everyone.
#![allow(clippy::print_stdout)]

use p2pcore::{Config, Identity, Reliability, Role};
use p2pcore_tokio::{Endpoint, EndpointConfig};
use std::collections::BTreeSet;
use std::net::SocketAddr;

const CHAT: u8 = 1;

async fn join(server: SocketAddr, name: &str) -> Result<Endpoint, Box<dyn std::error::Error>> {
    let identity = Identity::from_seed(Role::Peer, p2pcore_tokio::os_seed()?);
    let mut config = Config::new(identity, name, p2pcore_tokio::os_seed()?);
    config.bootstrap = vec![server];
    let endpoint = Endpoint::bind(EndpointConfig::new("0.0.0.0:0".parse()?), config).await?;
    endpoint.online().await?;
    Ok(endpoint)
}

/// Greets every peer online now, by name.
async fn greet(endpoint: &Endpoint) -> Result<(), Box<dyn std::error::Error>> {
    for peer in endpoint.peers() {
        let text = format!("hello {}, this is {}", peer.name, endpoint.name());
        endpoint.send_wait(peer.id, CHAT, text.into_bytes(), Reliability::Reliable).await?;
    }
    Ok(())
}

fn name_of(endpoint: &Endpoint, id: p2pcore::NodeId) -> String {
    endpoint.peer(id).name().unwrap_or_else(|| id.short())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [server, name] = &args[..] {
        let server: SocketAddr = server
            .parse()
            .map_err(|e| format!("'{server}' is not an address like 203.0.113.10:7400: {e}"))?;
        let endpoint = join(server, name).await?;
        greet(&endpoint).await?;
        println!("joined as {} ({}); Ctrl-C to leave", endpoint.name(), endpoint.id());
        loop {
            tokio::select! {
                m = endpoint.recv() => match m {
                    Some(m) => println!("{}: {}", name_of(&endpoint, m.from), String::from_utf8_lossy(&m.bytes)),
                    None => break,
                },
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        endpoint.close().await;
        return Ok(());
    }
    if !args.is_empty() {
        return Err("usage: chat [<server address> <name>]".into());
    }

    // The demo: a server on a thread of its own, three peers here.
    let config = Config::new(
        Identity::from_seed(Role::Server, p2pcore_tokio::os_seed()?),
        "hub",
        p2pcore_tokio::os_seed()?,
    );
    let host = p2pcore_mio::Host::bind(p2pcore_mio::HostConfig::new("127.0.0.1:0".parse()?), config)?;
    let server = host.local_addr();
    let (hub, _events) = host.spawn()?;
    let names = ["alice", "bob", "carol"];
    let mut peers = Vec::new();
    for name in names {
        peers.push(join(server, name).await?);
    }
    // Everyone waits until the directory lists the other two, then greets.
    let mut tasks = Vec::new();
    // Nobody closes before everyone heard everyone: closing gives up what
    // is still unacknowledged.
    let all_heard = std::sync::Arc::new(tokio::sync::Barrier::new(names.len()));
    for endpoint in peers {
        let all_heard = all_heard.clone();
        tasks.push(tokio::spawn(async move {
            let mut events = endpoint.events();
            while endpoint.peers().len() < names.len() - 1 {
                events.recv().await;
            }
            greet(&endpoint).await.map_err(|e| e.to_string())?;
            let mut heard = BTreeSet::new();
            while heard.len() < names.len() - 1 {
                let Some(m) = endpoint.recv().await else { break };
                println!(
                    "{} got from {}: {}",
                    endpoint.name(),
                    name_of(&endpoint, m.from),
                    String::from_utf8_lossy(&m.bytes)
                );
                heard.insert(m.from);
            }
            all_heard.wait().await;
            endpoint.close().await;
            Ok::<_, String>(heard.len())
        }));
    }
    for t in tasks {
        t.await??;
    }
    hub.close()?;
    println!("everyone heard from everyone");
    Ok(())
}
