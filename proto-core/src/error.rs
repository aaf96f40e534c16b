//! Typed errors returned to the user and carried in events.

use crate::admission::AdmissionError;
use crate::identity::{NameError, NodeId, Role};
use crate::proto::RefuseReason;
use crate::quic::{CertError, SetupError};
use std::net::SocketAddr;

/// A [`Config`](crate::Config) that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The human-readable name is unusable.
    #[error("invalid node name: {0}")]
    Name(#[from] NameError),
    /// A numeric setting is out of range.
    #[error("invalid setting `{setting}`: {problem}")]
    Setting {
        /// The field of [`Config`](crate::Config).
        setting: &'static str,
        /// What is wrong and what would be accepted.
        problem: String,
    },
    /// Building the QUIC/TLS configuration failed.
    #[error("QUIC setup failed: {0}")]
    Setup(#[from] SetupError),
}

/// Why a connection attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The node at the address proved a different ID than the one dialed.
    #[error("dialed {expected} but the node at that address is {found}")]
    WrongNode {
        /// The ID that was dialed.
        expected: NodeId,
        /// The ID the remote proved.
        found: NodeId,
    },
    /// The node at the address has the wrong role (for example a peer where a server was expected).
    #[error("expected a {expected} at that address but found {found}")]
    WrongRole {
        /// The role that was expected.
        expected: Role,
        /// The ID the remote proved.
        found: NodeId,
    },
    /// The remote's certificate does not prove a p2pcore identity.
    #[error("remote certificate rejected: {0}")]
    BadCertificate(#[from] CertError),
    /// The remote refused the connection after the handshake.
    #[error("refused by remote: {0}")]
    Refused(RefuseReason),
    /// This node refused the remote's credential (see [`Event::Refused`](crate::Event::Refused)).
    #[error("the remote's credential was not accepted: {0}")]
    NotAdmitted(AdmissionError),
    /// No answer within the handshake timeout.
    #[error("connection attempt timed out")]
    TimedOut,
    /// The TLS or QUIC handshake failed for another reason.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The address cannot be dialed (port 0, unspecified address, ...).
    #[error("cannot dial {0}: the address must have a specific IP and a non-zero port")]
    InvalidAddress(SocketAddr),
    /// A node cannot connect to itself.
    #[error("a node cannot connect to itself")]
    SelfConnect,
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The attempt was cancelled by [`Node::disconnect`](crate::Node::disconnect).
    #[error("cancelled by the user")]
    Cancelled,
    /// The local QUIC endpoint could not start the attempt (for example, out of connection IDs).
    #[error("local QUIC endpoint refused the attempt: {0}")]
    Local(String),
}

/// Why an established connection ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisconnectReason {
    /// Nothing was heard from the remote within the idle timeout.
    #[error("timed out")]
    TimedOut,
    /// The remote closed the connection.
    #[error("closed by remote (code {code}): {reason}")]
    ClosedByRemote {
        /// p2pcore close code (see [`close_code`](crate::close_code)).
        code: u64,
        /// Text sent by the remote.
        reason: String,
    },
    /// This node closed the connection.
    #[error("closed locally")]
    ClosedLocally,
    /// A newer connection to the same node (for example after it restarted) replaced this one.
    #[error("replaced by a newer connection")]
    Replaced,
    /// The remote broke the protocol.
    #[error("protocol violation: {0}")]
    ProtocolViolation(String),
    /// The remote reset the connection (stateless reset: it lost its state).
    #[error("reset by remote")]
    Reset,
    /// A transport-level error.
    #[error("transport error: {0}")]
    Transport(String),
}

/// Why [`Node::send`](crate::Node::send) rejected a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// There is no connection to the destination and none is being set up.
    #[error("not connected to {0}")]
    NotConnected(NodeId),
    /// A node cannot send to itself.
    #[error("a node cannot send to itself")]
    SelfSend,
    /// The message is larger than allowed for its reliability.
    #[error("message of {size} bytes exceeds the maximum of {max} bytes for this reliability")]
    TooLarge {
        /// The message size.
        size: usize,
        /// The largest size currently allowed.
        max: usize,
    },
    /// Too much data is already queued for this destination; retry after some is sent.
    #[error("send buffer for {to} is full ({buffered} of {limit} bytes queued)")]
    BufferFull {
        /// The destination.
        to: NodeId,
        /// Bytes queued now.
        buffered: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The remote does not accept unreliable datagrams.
    #[error("the remote does not accept unreliable datagrams")]
    DatagramsUnsupported,
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// No server is connected, so no peer can be reached (see
    /// [`Event::NetworkDown`](crate::Event::NetworkDown)); retry after `NetworkUp`.
    #[error("the network is down: no server is connected (retry after NetworkUp)")]
    NetworkDown,
    /// The destination is not in the directory (not online) and not connected.
    #[error("{0} is not online: no server lists it")]
    UnknownPeer(NodeId),
}
