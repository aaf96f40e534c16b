//! Node configuration.

use crate::admission::Admission;
use crate::error::ConfigError;
use crate::identity::{Identity, Role, validate_name};
use std::net::SocketAddr;
use std::time::Duration;

/// The longest time setting accepted (timeouts, intervals, ticks).
const MAX_SETTING: Duration = Duration::from_secs(24 * 3600);
/// The longest `cluster.forget_after` accepted.
const MAX_FORGET: Duration = Duration::from_secs(30 * 24 * 3600);
/// 9999-12-31T23:59:59Z: later "wall-clock" values are not seconds since 1970.
const MAX_UNIX_TIME: u64 = 253_402_300_799;

/// When a peer connects to the other peers it learns of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectPolicy {
    /// Connect to every online peer (an eager full mesh). Of each pair, the
    /// larger ID dials, so the two rarely race.
    #[default]
    Eager,
    /// Connect only when there is something to send (for large networks).
    OnDemand,
}

/// How a peer learns the directory: who is online, and at which addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DirectoryMode {
    /// Every server sends every peer every row and every change: a peer
    /// knows everyone at once, and a join costs each server a delta to every
    /// connected peer. Right for networks up to a few thousand peers.
    #[default]
    Full,
    /// A peer learns only the rows it asks for: a `send` to an ID it does not
    /// know looks the ID up first, [`Node::lookup`](crate::Node::lookup)
    /// finds peers by ID or name, and servers tell it when a peer it looked
    /// up joins, moves or leaves. A join then costs servers O(peers that
    /// looked the newcomer up), not O(all peers). For large networks (pair
    /// it with [`ConnectPolicy::OnDemand`]).
    Lookup,
}

/// Settings of the peer role (used by peers only).
#[derive(Clone, Debug)]
#[non_exhaustive]
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
    /// Full directory or lookups. Default full.
    pub directory: DirectoryMode,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            directory: DirectoryMode::Full,
            connect: ConnectPolicy::Eager,
            idle_timeout: Duration::from_secs(30),
            keep_alive_interval: Duration::from_secs(10),
            hole_punching: true,
        }
    }
}

/// Resource limits: how much a remote can make this node hold, before and
/// after it is admitted. The defaults suit a public server; see
/// ARCHITECTURE.md ("Hostile input") for the bounds they give.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LimitsConfig {
    /// QUIC connection-level receive window of an admitted connection, in
    /// bytes: data QUIC buffers for us before we read it. Before admission a
    /// connection gets a fixed 64 KiB window and may open no channel stream.
    /// Default 8 MiB.
    pub receive_window: u64,
    /// QUIC receive window of each stream (one per channel), in bytes; at
    /// most `receive_window`. Default 4 MiB.
    pub stream_receive_window: u64,
    /// Bytes of partly received reliable messages held per connection before
    /// p2pcore stops reading its streams (QUIC flow control then slows the
    /// sender); one stream may still finish its current message beyond it.
    /// Default 16 MiB.
    pub receive_buffer: usize,
    /// Incoming connections not yet established (TLS, Hello, admission) held
    /// at once; further attempts are ignored until some finish, and the
    /// dialers' retransmissions try again. Default 256.
    pub max_handshakes: usize,
    /// Incoming connections not yet established from one IP address; more
    /// are refused. Default 16.
    pub max_handshakes_per_ip: usize,
    /// Above this many incoming handshakes, a new one from an address that
    /// has not proved it can receive (QUIC Retry, RFC 9000 §8.1.2) is sent a
    /// Retry first, so spoofed floods cost one stateless packet each.
    /// 0 retries every attempt. Default 32.
    pub retry_above: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            receive_window: 8 << 20,
            stream_receive_window: 4 << 20,
            receive_buffer: 16 << 20,
            max_handshakes: 256,
            max_handshakes_per_ip: 16,
            retry_above: 32,
        }
    }
}

/// Settings of the server cluster (used by servers only).
#[derive(Clone, Debug)]
#[non_exhaustive]
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
    /// Servers: keep Raft state (and the replicated store) on disk through
    /// the host. `None` (the default): in memory only, so a restarted server
    /// rejoins under a new Raft identity and a majority restarted at once
    /// loses the store. `Some(table)`: the table the host read back from
    /// disk at start (empty on the first start); the server resumes from it
    /// and hands out writes ([`Node::poll_raft_write`](crate::Node::poll_raft_write)).
    pub raft_disk: Option<Vec<(Vec<u8>, Vec<u8>)>>,
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
            raft_disk: None,
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
#[non_exhaustive]
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
    /// Most bytes of reliable messages held for one destination until it
    /// acknowledges them (waiting for a connection, queued, in flight, or
    /// kept to be resent after a lost connection); beyond it `send` fails
    /// with [`SendError::BufferFull`](crate::SendError::BufferFull). A
    /// single message larger than this is accepted when nothing else is
    /// held for that destination. Together with the round-trip time it
    /// bounds one destination's reliable throughput (8 MiB over a 100 ms
    /// round trip: about 80 MB/s). Default 8 MiB.
    pub send_buffer_limit: usize,
    /// How long reliable messages wait for a lost connection to come back
    /// (the same node, not restarted) before they are reported in
    /// [`Event::SendFailed`](crate::Event::SendFailed); the receiving side
    /// remembers what it delivered for twice as long, to drop what is
    /// resent. Default 30 s.
    pub resume_window: Duration,
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
    /// Resource limits against hostile or runaway remotes.
    pub limits: LimitsConfig,
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
            send_buffer_limit: 8 << 20,
            resume_window: Duration::from_secs(30),
            datagram_buffer: 1 << 20,
            admission: Admission::Open,
            unix_time: None,
            bootstrap: Vec::new(),
            advertise: Vec::new(),
            cluster: ClusterConfig::default(),
            peer: PeerConfig::default(),
            limits: LimitsConfig::default(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        validate_name(&self.name)?;
        let bad = |setting, problem: &str| Err(ConfigError::Setting { setting, problem: problem.to_owned() });
        // Deadlines are `now + setting` (sometimes a sum or multiple of
        // settings); an absurd value would overflow `Instant` arithmetic and
        // panic deep inside a later input. Nothing here needs more than a day
        // (forgetting a server: a month).
        let c = &self.cluster;
        let p = &self.peer;
        let durations = [
            ("idle_timeout", self.idle_timeout, MAX_SETTING),
            ("keep_alive_interval", self.keep_alive_interval, MAX_SETTING),
            ("hello_timeout", self.hello_timeout, MAX_SETTING),
            ("cluster.raft_tick", c.raft_tick, MAX_SETTING),
            ("cluster.reconnect_min", c.reconnect_min, MAX_SETTING),
            ("cluster.reconnect_max", c.reconnect_max, MAX_SETTING),
            ("cluster.forget_after", c.forget_after, MAX_FORGET),
            ("peer.idle_timeout", p.idle_timeout, MAX_SETTING),
            ("peer.keep_alive_interval", p.keep_alive_interval, MAX_SETTING),
        ];
        for (setting, value, max) in durations {
            if value > max {
                return Err(ConfigError::Setting {
                    setting,
                    problem: format!("{value:?} is longer than the largest allowed, {max:?}"),
                });
            }
        }
        if c.raft_tick.saturating_mul(c.election_ticks.saturating_mul(3).try_into().unwrap_or(u32::MAX))
            > MAX_SETTING
        {
            return bad("cluster.election_ticks", "election_ticks × 3 × raft_tick must stay within a day");
        }
        if !(c.load_ratio.is_finite() && c.load_ratio >= 1.0) {
            return bad("cluster.load_ratio", "must be a finite number of at least 1.0");
        }
        if self.unix_time.is_some_and(|t| t > MAX_UNIX_TIME) {
            return bad("unix_time", "must be seconds since 1970 (a value before the year 10000)");
        }
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
        if self.send_buffer_limit == 0 {
            return bad("send_buffer_limit", "must be non-zero");
        }
        if self.resume_window.is_zero() || self.resume_window > Duration::from_secs(24 * 3600) {
            return bad("resume_window", "must be between 1 ns and 24 hours");
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
        if p.idle_timeout < self.idle_timeout || p.keep_alive_interval * 2 > p.idle_timeout {
            return bad(
                "peer.idle_timeout",
                "must be at least idle_timeout, and peer.keep_alive_interval at most half of it",
            );
        }
        let l = &self.limits;
        if l.receive_window < 64 << 10 || l.receive_window > 1 << 30 {
            return bad("limits.receive_window", "must be between 64 KiB and 1 GiB");
        }
        if l.stream_receive_window < 16 << 10 || l.stream_receive_window > l.receive_window {
            return bad("limits.stream_receive_window", "must be between 16 KiB and limits.receive_window");
        }
        if l.receive_buffer < 64 << 10 {
            return bad("limits.receive_buffer", "must be at least 64 KiB");
        }
        if l.max_handshakes == 0 || l.max_handshakes_per_ip == 0 {
            return bad(
                "limits.max_handshakes",
                "max_handshakes and max_handshakes_per_ip must be at least 1",
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
        c.send_buffer_limit = 0;
        assert!(c.validate().unwrap_err().to_string().contains("send_buffer_limit"));
        let mut c = base();
        c.resume_window = Duration::ZERO;
        assert!(c.validate().unwrap_err().to_string().contains("resume_window"));
    }

    #[test]
    fn durations_that_would_overflow_instants_are_refused() {
        type Breaker = fn(&mut Config);
        let cases: [(&str, Breaker); 8] = [
            ("idle_timeout", |c| c.idle_timeout = Duration::MAX),
            ("resume_window", |c| c.resume_window = Duration::MAX),
            ("hello_timeout", |c| c.hello_timeout = Duration::from_secs(u64::MAX / 2)),
            ("cluster.reconnect_max", |c| c.cluster.reconnect_max = Duration::MAX),
            ("cluster.forget_after", |c| c.cluster.forget_after = Duration::from_secs(365 * 24 * 3600)),
            ("peer.idle_timeout", |c| c.peer.idle_timeout = Duration::MAX),
            ("cluster.election_ticks", |c| c.cluster.election_ticks = usize::MAX),
            ("cluster.load_ratio", |c| c.cluster.load_ratio = f64::NAN),
        ];
        for (setting, break_it) in cases {
            let mut c = base();
            break_it(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(setting), "{setting}: {e}");
        }
        let mut c = base();
        c.unix_time = Some(u64::MAX);
        assert!(c.validate().unwrap_err().to_string().contains("unix_time"));
        // A Node is never built from such a config, so no later input can overflow.
        let mut c = base();
        c.keep_alive_interval = Duration::MAX;
        assert!(crate::Node::new(c, crate::test_support::epoch()).is_err());
    }
}
