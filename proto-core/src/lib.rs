//! # p2pcore — the sans-IO protocol core
//!
//! p2pcore lets programs spread over many LANs talk to each other **by node ID
//! instead of IP:port**. This crate is the pure protocol state machine: it
//! consumes datagrams and timer expirations and produces datagrams to send,
//! the next deadline, and events. It never opens a socket, reads a clock,
//! spawns a thread or draws from a global random number generator, so the
//! same seed and the same inputs always produce the same outputs, byte for
//! byte — which is what lets the deterministic simulator in `p2pcore-tests`
//! replay any run.
//!
//! Start with [`Node`]: its documentation states the driving contract.
//!
//! ```
//! use p2pcore::{Config, Identity, Node, Role};
//! use std::time::Instant;
//!
//! let now = Instant::now(); // a driver reads the clock; the core never does
//! let identity = Identity::from_seed(Role::Peer, [7; 32]);
//! let mut node = Node::new(Config::new(identity, "alice", [1; 32]), now).unwrap();
//! let mut buf = Vec::new();
//! while let Some(t) = node.poll_transmit(1, &mut buf) {
//!     // socket.send_to(&buf[..t.size], t.destination)
//!     let _ = t;
//! }
//! while let Some(event) = node.poll_event() {
//!     println!("{event:?}");
//! }
//! let _next_wakeup = node.poll_timeout();
//! ```

//! # Module map
//!
//! Everything public is re-exported here at the crate root; the modules
//! themselves are private, so their layout can change without breaking
//! anyone.
//!
//! * `node/` — [`Node`], the driving contract and public API (`mod.rs`),
//!   receive dispatch (`recv.rs`: what each datagram is and which role
//!   handles it), connection driving and timers
//!   (`drive.rs`), output scheduling and I/O metadata (`io.rs`: [`Transmit`],
//!   [`Ecn`]), the Hello/Welcome handshake and admission (`handshake.rs`),
//!   per-connection state and channel streams (`conn.rs`), the role switch
//!   (`role.rs`).
//! * `server/` — the server role: the server list, the full mesh and
//!   liveness, the Raft group and Master election, the peer directory it
//!   keeps, relay sessions and relay forwarding (`relay.rs`).
//! * `peer/` — the peer role: the merged directory, links to servers and
//!   peers, `paths/` (direct, punched and relayed paths: candidates,
//!   probes, punching rounds, liveness) and the peer's end of relayed paths
//!   (`relay.rs`: wrapping packets, checking forwarded frames).
//! * `info.rs` — the read-only views both roles hand out ([`PeerInfo`],
//!   [`DirectoryRow`], [`LinkRow`], [`PathKind`], [`NatBehaviour`], ...).
//! * `config.rs`, `error.rs`, `event.rs`, `stats.rs`, `identity.rs`,
//!   `admission.rs` — what their names say.
//! * Internal: `proto.rs` (control-stream messages, their own wire types),
//!   `wire.rs` (raw UDP frames: relay and probes), `quic.rs` (quinn-proto and
//!   rustls setup, seeded TLS randomness), `rng.rs`, `roster.rs` (dial
//!   backoff).

mod admission;
mod config;
mod coord;
mod error;
mod event;
// Fuzzing entry points (feature `fuzzing`): not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod identity;
mod info;
mod node;
mod peer;
mod persist;
mod proto;
mod quic;
mod rng;
mod roster;
mod server;
mod stats;
mod store;
// Raw UDP frame formats, public for tests, benchmarks and fuzzing only: not
// part of the API and not covered by semver.
#[doc(hidden)]
pub mod wire;

/// Test-only support shared by the unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::time::Instant;

    /// Some instant for unit tests to count from. Unit tests play the
    /// driver's part, and `Instant` has no constructor but the clock, so this
    /// is the crate's one clock read — test builds only (the purity test
    /// allows exactly this line). Tests then move time only by adding
    /// durations, so they stay deterministic.
    pub(crate) fn epoch() -> Instant {
        Instant::now() // purity: test-only epoch
    }
}

pub use admission::{
    Admission, AdmissionError, AdmissionMode, CredentialKind, JoinToken, NetworkSecret, TokenParseError,
};
pub use config::{ClusterConfig, Config, ConnectPolicy, DirectoryMode, LimitsConfig, PeerConfig};
pub use coord::{
    COORD_PREFIX, CoordError, CoordEvent, CoordRequest, CoordUpdate, Instance, InstanceFilter, InstanceInfo,
    LeaderInfo, MAX_COORD_NAME, MAX_POP, QueueItem,
};
pub use error::{
    CertError, ConfigError, ConnectError, DisconnectReason, LookupError, RefuseReason, SendError,
    SendFailure, SetupError,
};
pub use event::{Event, Reliability};
pub use identity::{
    IDENTITY_LEN, IdError, Identity, Keypair, MAX_NAME_LEN, NODE_ID_LEN, NameError, NodeId, PublicKey, Role,
    validate_name,
};
pub use info::{DirectoryRow, LinkRow, LookupKey, NatBehaviour, ObservedAddr, PathKind, PeerAddrs, PeerInfo};
pub use node::{Ecn, LinkInfo, Node, Transmit};
pub use persist::{DiskOp, RaftWrite, apply_raft_write};
pub use server::election::{MasterBasis, MasterInfo};
pub use server::{RaftView, ServerInfo};
pub use stats::{DropCounters, NodeStats};
pub use store::{
    CompareOp, KEY_OVERHEAD, KvAnswer, KvCompare, KvEntry, KvError, KvEvent, KvEventKind, KvGuarantee,
    KvOptions, KvRequest, KvResponse, MAX_KEY_LEN, MAX_READ_LEN, MAX_REQUEST_LEN, MAX_SESSION_TTL,
    MAX_SESSIONS_PER_PEER, MAX_STORE_BYTES, MAX_TXN_OPS, MAX_VALUE_LEN, MIN_SESSION_TTL,
};

/// Application close codes p2pcore puts on QUIC connections it closes.
pub mod close_code {
    /// Orderly shutdown or user disconnect.
    pub const SHUTDOWN: u32 = 0;
    /// A duplicate connection lost the tie-break.
    pub const DUPLICATE: u32 = 1;
    /// The connection was refused after the handshake.
    pub const REFUSED: u32 = 2;
    /// The remote broke the protocol.
    pub const PROTOCOL_VIOLATION: u32 = 3;
    /// A newer connection to the same node replaced this one.
    pub const REPLACED: u32 = 4;
    /// The Hello/Welcome exchange did not finish in time.
    pub const HELLO_TIMEOUT: u32 = 5;
}
