//! Node configuration.

use crate::admission::Admission;
use crate::error::ConfigError;
use crate::identity::{Identity, Role, validate_name};
use std::net::SocketAddr;
use std::time::Duration;

/// When a peer connects to the other peers it learns of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConnectPolicy {
    /// Connect to every online peer (the seed's eager mesh). Of each pair, the
    /// larger ID dials, so the two rarely race.
    #[default]
    Eager,
    /// Connect only when there is something to send (for large networks).
    OnDemand,
}

/// Settings of the peer role (used by peers only).
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// Eager mesh or on-demand connections. Default eager.
    pub connect: ConnectPolicy,
    /// Idle timeout of peer-to-peer connections. Longer than the server
    /// connections' so a peer-to-peer connection rides out the loss of its
    /// relay (noticed within `Config::idle_timeout`) and moves to another.
    /// Default 30 s.
    pub idle_timeout: Duration,
    /// Keep-alive interval of idle peer-to-peer connections, which also keeps
    /// the NAT bindings of a direct path open (so keep it under the shortest
    /// binding timeout expected; NATs commonly allow 30 s or more). When a
    /// direct path dies after an idle gap, its interval for that peer drops
    /// below the gap. Default 10 s.
    pub keep_alive_interval: Duration,
    /// Whether to look for direct paths (UDP hole punching). Off, every
    /// peer-to-peer packet is relayed. Default on.
    pub hole_punching: bool,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            connect: ConnectPolicy::Eager,
            idle_timeout: Duration::from_secs(30),
            keep_alive_interval: Duration::from_secs(10),
            hole_punching: true,
        }
    }
}

/// Settings of the server cluster (used by servers only).
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Raft's logical clock period. Default 50 ms.
    pub raft_tick: Duration,
    /// Minimum Raft election timeout, in ticks (the randomized timeout is
    /// 1× to 2× this). Default 10 (500 ms): a dead Master is replaced in
    /// about a second.
    pub election_ticks: usize,
    /// Raft heartbeat interval, in ticks. Default 2 (100 ms).
    pub heartbeat_ticks: usize,
    /// First delay before redialing a lost server or an unreachable
    /// introducer; doubles on each failure. Default 250 ms.
    pub reconnect_min: Duration,
    /// Longest delay between redials. Default 5 s.
    pub reconnect_max: Duration,
    /// A server unreachable for this long is forgotten (no more redials).
    /// Default 10 minutes.
    pub forget_after: Duration,
    /// Hand Raft leadership to the least-loaded server when the leader's load
    /// is more than `load_ratio` times it (and at least 10 higher). Off by
    /// default: leadership then stays put unless the leader fails.
    pub prefer_least_loaded: bool,
    /// See `prefer_least_loaded`. Default 2.0.
    pub load_ratio: f64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            raft_tick: Duration::from_millis(50),
            election_ticks: 10,
            heartbeat_ticks: 2,
            reconnect_min: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(5),
            forget_after: Duration::from_secs(600),
            prefer_least_loaded: false,
            load_ratio: 2.0,
        }
    }
}

/// Everything a [`Node`](crate::Node) needs to start.
///
/// Build it with [`Config::new`] and adjust the public fields; [`Node::new`]
/// validates it and reports a [`ConfigError`] naming the offending field.
///
/// [`Node::new`]: crate::Node::new
#[derive(Clone, Debug)]
pub struct Config {
    /// Role and key pair; the node ID is derived from them.
    pub identity: Identity,
    /// Human-readable name (1 to 64 bytes of UTF-8, no control characters).
    pub name: String,
    /// Seed of every random choice the node makes. Drivers fill it from the
    /// operating system's CSPRNG; simulations use fixed seeds to replay runs.
    pub seed: [u8; 32],
    /// A connection that hears nothing is declared dead at most this long
    /// after the last packet it received; a dial that gets no answer fails
    /// after this long too. Default 2.5 s, so a crashed remote is noticed
    /// within 3 s of its death even across a few hundred milliseconds of latency.
    ///
    /// QUIC restarts its idle timer when it sends the first packet after a
    /// receipt (RFC 9000 §10.1), so the QUIC idle timeout is set to this value
    /// minus `keep_alive_interval` to keep the promise.
    pub idle_timeout: Duration,
    /// Send a keep-alive after this long without receiving anything, so idle
    /// connections stay open while busy ones need no extra traffic (received
    /// data is the heartbeat). At most half of `idle_timeout`. Default 1 s.
    pub keep_alive_interval: Duration,
    /// How long the dialer's Hello may go unanswered after the TLS handshake
    /// (and how long an acceptor waits for a Hello). Default 5 s.
    pub hello_timeout: Duration,
    /// Largest reliable message, in bytes. Default 64 MiB.
    pub max_message_size: usize,
    /// Most bytes queued for one destination before [`SendError::BufferFull`](crate::SendError::BufferFull).
    /// Default 128 MiB.
    pub send_buffer_limit: usize,
    /// Bytes of unreliable datagrams buffered per connection in each direction. Default 1 MiB.
    pub datagram_buffer: usize,
    /// How this node proves membership and what it requires of others.
    /// Default [`Admission::Open`] (development only).
    pub admission: Admission,
    /// Wall-clock time (seconds since the Unix epoch) at the `now` passed to
    /// `Node::new`. Drivers read it once at start; the core adds elapsed
    /// monotonic time. Needed only to check join-token expiry.
    pub unix_time: Option<u64>,
    /// Servers to contact first: a server's introducers, or a peer's bootstrap
    /// servers. Dialed by address; the node behind must prove it is a server.
    pub bootstrap: Vec<SocketAddr>,
    /// Addresses other nodes should dial to reach this node. Servers: their
    /// public listen addresses. Peers: their interface (LAN) addresses, which
    /// the driver knows and the core cannot discover.
    pub advertise: Vec<SocketAddr>,
    /// Server cluster settings.
    pub cluster: ClusterConfig,
    /// Peer settings.
    pub peer: PeerConfig,
}

impl Config {
    /// A configuration with default settings.
    pub fn new(identity: Identity, name: impl Into<String>, seed: [u8; 32]) -> Self {
        Self {
            identity,
            name: name.into(),
            seed,
            idle_timeout: Duration::from_millis(2500),
            keep_alive_interval: Duration::from_secs(1),
            hello_timeout: Duration::from_secs(5),
            max_message_size: 64 << 20,
            send_buffer_limit: 128 << 20,
            datagram_buffer: 1 << 20,
            admission: Admission::Open,
            unix_time: None,
            bootstrap: Vec::new(),
            advertise: Vec::new(),
            cluster: ClusterConfig::default(),
            peer: PeerConfig::default(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        validate_name(&self.name)?;
        let bad = |setting, problem: &str| Err(ConfigError::Setting { setting, problem: problem.to_owned() });
        if self.idle_timeout < Duration::from_millis(100) {
            return bad("idle_timeout", "must be at least 100 ms");
        }
        if self.keep_alive_interval.is_zero() || self.keep_alive_interval * 2 > self.idle_timeout {
            return bad("keep_alive_interval", "must be non-zero and at most half of idle_timeout");
        }
        if self.hello_timeout.is_zero() {
            return bad("hello_timeout", "must be non-zero");
        }
        if self.max_message_size == 0 || self.max_message_size > u32::MAX as usize {
            return bad("max_message_size", "must be between 1 byte and 4 GiB - 1");
        }
        if self.send_buffer_limit < self.max_message_size {
            return bad("send_buffer_limit", "must be at least max_message_size");
        }
        if self.datagram_buffer < 1500 {
            return bad("datagram_buffer", "must hold at least one datagram (1500 bytes)");
        }
        if let Admission::Token { token, issuers } = &self.admission {
            if self.unix_time.is_none() {
                return bad(
                    "unix_time",
                    "join tokens expire, so token admission needs the wall-clock time at start",
                );
            }
            if issuers.is_empty() {
                return bad("admission", "token admission needs at least one trusted issuer key");
            }
            if token.node != self.identity.id() {
                return bad("admission", "the join token was issued to another node ID");
            }
        }
        let c = &self.cluster;
        if c.raft_tick.is_zero()
            || c.election_ticks < 2
            || c.heartbeat_ticks == 0
            || c.heartbeat_ticks >= c.election_ticks
        {
            return bad("cluster", "raft_tick must be non-zero and 0 < heartbeat_ticks < election_ticks");
        }
        if c.reconnect_min.is_zero() || c.reconnect_max < c.reconnect_min {
            return bad("cluster.reconnect_min", "must be non-zero and no larger than reconnect_max");
        }
        let p = &self.peer;
        if p.idle_timeout < self.idle_timeout || p.keep_alive_interval * 2 > p.idle_timeout {
            return bad(
                "peer.idle_timeout",
                "must be at least idle_timeout, and peer.keep_alive_interval at most half of it",
            );
        }
        if self.identity.role() == Role::Server && self.advertise.is_empty() {
            return bad(
                "advertise",
                "a server must advertise at least one address other servers can dial (its public address)",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Role;

    fn base() -> Config {
        Config::new(Identity::from_seed(Role::Peer, [1; 32]), "n", [0; 32])
    }

    #[test]
    fn defaults_are_valid() {
        base().validate().unwrap();
    }

    #[test]
    fn errors_name_the_setting() {
        let mut c = base();
        c.keep_alive_interval = c.idle_timeout;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("keep_alive_interval"), "{e}");
        let mut c = base();
        c.name = String::new();
        assert!(c.validate().unwrap_err().to_string().contains("name"));
        let mut c = base();
        c.send_buffer_limit = 1;
        assert!(c.validate().unwrap_err().to_string().contains("send_buffer_limit"));
    }
}
