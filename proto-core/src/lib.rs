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
//! Start with [`Node`] and its module documentation for the driving contract.
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

pub mod admission;
pub mod config;
pub mod error;
pub mod event;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
pub mod identity;
pub mod node;
pub mod peer;
mod proto;
pub mod quic;
pub mod rng;
mod roster;
pub mod server;
pub mod stats;
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

pub use admission::{Admission, JoinToken, NetworkSecret};
pub use config::{ClusterConfig, Config, ConnectPolicy, LimitsConfig, PeerConfig};
pub use error::{ConfigError, ConnectError, DisconnectReason, SendError};
pub use event::{Event, Reliability};
pub use identity::{IdError, Identity, Keypair, NodeId, PublicKey, Role};
pub use node::{LinkInfo, Node, Transmit};
pub use peer::{DirectoryRow, LinkRow, PeerInfo};
pub use proto::{PathKind, PeerAddrs, RefuseReason};
pub use server::ServerInfo;
pub use server::election::{MasterBasis, MasterInfo};
pub use stats::{DropCounters, NodeStats};

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
