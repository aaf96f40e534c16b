//! What the coordination examples share: an in-process cluster of three
//! mio servers on loopback, tokio peers bootstrapped to it, and sends that
//! wait until the destination is in the directory.

use p2pcore::{Config, Identity, NodeId, Reliability, Role, SendError};
use p2pcore_mio::{Handle, Host, HostConfig};
use p2pcore_tokio::{Endpoint, EndpointConfig};
use std::net::SocketAddr;
use std::time::Duration;

/// A generous cap on every wait: only a real failure reaches it.
pub(crate) const LIMIT: Duration = Duration::from_secs(30);

/// Three servers on 127.0.0.1 (ephemeral ports), each on its own mio
/// thread, introduced to one another.
pub(crate) struct Cluster {
    servers: Vec<Option<Handle>>,
    /// Their addresses.
    pub(crate) addrs: Vec<SocketAddr>,
}

impl Cluster {
    /// Starts the three servers; `seed` keeps the identities of several
    /// clusters in one process apart.
    pub(crate) fn start(seed: u8) -> Cluster {
        let mut servers = Vec::new();
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for i in 0..3u8 {
            let id = Identity::from_seed(Role::Server, [seed.wrapping_add(i); 32]);
            let mut config = Config::new(id, format!("s{i}"), [seed ^ i; 32]);
            config.bootstrap = addrs.clone();
            let host =
                Host::bind(HostConfig::new("127.0.0.1:0".parse().unwrap()), config).expect("server bind");
            addrs.push(host.local_addr());
            let (handle, _events) = host.spawn().expect("server thread");
            servers.push(Some(handle));
        }
        Cluster { servers, addrs }
    }

    /// Stops every server (the cluster becomes unreachable).
    pub(crate) fn stop(&mut self) {
        for h in self.servers.iter_mut().filter_map(Option::take) {
            let _ = h.close();
        }
    }

    /// A peer named `name` bootstrapped to the cluster, online (connected
    /// to a server, directory received).
    pub(crate) async fn peer(&self, seed: u8, name: &str) -> Endpoint {
        let mut config = Config::new(Identity::from_seed(Role::Peer, [seed; 32]), name, [seed; 32]);
        config.bootstrap = self.addrs.clone();
        let ep = Endpoint::bind(EndpointConfig::new("127.0.0.1:0".parse().unwrap()), config)
            .await
            .expect("peer bind");
        tokio::time::timeout(LIMIT, ep.online()).await.expect("online in time").expect("online");
        ep
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends a reliable message, waiting (up to [`LIMIT`]) until `to` is in
/// this peer's directory when it is not yet.
pub(crate) async fn send(ep: &Endpoint, to: NodeId, channel: u8, bytes: Vec<u8>) -> Result<(), SendError> {
    let mut events = ep.events();
    let give_up = tokio::time::Instant::now() + LIMIT;
    loop {
        match ep.send_wait(to, channel, bytes.clone(), Reliability::Reliable).await {
            Err(SendError::UnknownPeer(_)) if tokio::time::Instant::now() < give_up => {
                let _ = tokio::time::timeout(Duration::from_millis(100), events.recv()).await;
            }
            other => return other.map(|_| ()),
        }
    }
}

/// The `q`-quantile of `samples` (sorted here), in milliseconds.
pub(crate) fn quantile_ms(samples: &mut [Duration], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[i].as_secs_f64() * 1e3
}
