//! Typed errors returned to the user and carried in events.

use crate::admission::AdmissionError;
use crate::identity::{NameError, NodeId, Role};
use std::net::SocketAddr;

/// A [`Config`](crate::Config) that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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

impl ConfigError {
    /// A stable number for this kind of error (1-based; never reused).
    pub fn code(&self) -> u32 {
        match self {
            ConfigError::Name(_) => 1,
            ConfigError::Setting { .. } => 2,
            ConfigError::Setup(_) => 3,
        }
    }
}

/// How a remote broke the p2pcore protocol. Each has a stable
/// [`code`](Violation::code) (for logs, metrics and the C ABI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// TLS completed but named no verifiable identity.
    #[error("no authenticated identity")]
    NoIdentity,
    /// A relayed connection proved another identity than the relay named.
    #[error("the relayed identity does not match the relay's")]
    RelayedIdentityMismatch,
    /// The control stream could not be opened or was stopped by the remote.
    #[error("control stream unavailable")]
    ControlStreamUnavailable,
    /// The remote stopped a stream this node sends on.
    #[error("stream stopped by the remote")]
    StreamStopped,
    /// A control message this role does not accept.
    #[error("control message not for this role")]
    NotForRole,
    /// A control message out of the handshake's order.
    #[error("control message out of turn")]
    OutOfTurn,
    /// An invalid Hello (bad name, too many addresses).
    #[error("invalid hello")]
    InvalidHello,
    /// An invalid Welcome (version, name, addresses or the elder verdict).
    #[error("invalid welcome")]
    InvalidWelcome,
    /// A control message that does not decode.
    #[error("malformed control message")]
    MalformedControl,
    /// A channel message before the remote was admitted.
    #[error("message before admission")]
    MessageBeforeAdmission,
    /// A frame longer than allowed at this stage.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The length the frame claimed.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The remote closed the control stream.
    #[error("control stream closed by the remote")]
    ControlStreamClosed,
    /// The remote opened a stream p2pcore never uses.
    #[error("unexpected stream")]
    UnexpectedStream,
}

impl Violation {
    /// A stable number for this violation (1-based; never reused).
    pub fn code(&self) -> u32 {
        match self {
            Violation::NoIdentity => 1,
            Violation::RelayedIdentityMismatch => 2,
            Violation::ControlStreamUnavailable => 3,
            Violation::StreamStopped => 4,
            Violation::NotForRole => 5,
            Violation::OutOfTurn => 6,
            Violation::InvalidHello => 7,
            Violation::InvalidWelcome => 8,
            Violation::MalformedControl => 9,
            Violation::MessageBeforeAdmission => 10,
            Violation::FrameTooLarge { .. } => 11,
            Violation::ControlStreamClosed => 12,
            Violation::UnexpectedStream => 13,
        }
    }
}

/// Why a connection attempt failed. Each has a stable
/// [`code`](ConnectError::code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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
    /// The remote broke the protocol during the handshake.
    #[error("protocol violation by the remote: {0}")]
    ProtocolViolation(Violation),
    /// The remote closed the connection during the handshake.
    #[error("closed by remote (code {code}): {reason}")]
    ClosedByRemote {
        /// The remote's p2pcore close code (see [`close_code`](crate::close_code)).
        code: u64,
        /// The text it sent, for logs.
        reason: String,
    },
    /// QUIC or TLS failed with this transport error code (RFC 9000 §20.1;
    /// 0x100–0x1ff are TLS alerts, RFC 9001 §4.8).
    #[error("QUIC transport error {code:#x}")]
    Transport {
        /// The QUIC transport error code.
        code: u64,
    },
    /// The remote answered with a stateless reset: it has no state for this connection.
    #[error("reset by remote")]
    Reset,
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
    /// The local QUIC endpoint has no connection IDs left for a new connection.
    #[error("out of local connection IDs; retry later")]
    OutOfConnectionIds,
    /// The peer went offline (no server lists it) before a connection could be made.
    #[error("the peer went offline")]
    PeerOffline,
    /// A lookup ([`DirectoryMode::Lookup`](crate::DirectoryMode::Lookup))
    /// found no server listing the peer.
    #[error("no server lists the peer")]
    NotFound,
}

impl ConnectError {
    /// A stable number for this kind of failure (1-based; never reused).
    pub fn code(&self) -> u32 {
        match self {
            ConnectError::WrongNode { .. } => 1,
            ConnectError::WrongRole { .. } => 2,
            ConnectError::BadCertificate(_) => 3,
            ConnectError::Refused(_) => 4,
            ConnectError::NotAdmitted(_) => 5,
            ConnectError::TimedOut => 6,
            ConnectError::ProtocolViolation(_) => 7,
            ConnectError::ClosedByRemote { .. } => 8,
            ConnectError::Transport { .. } => 9,
            ConnectError::Reset => 10,
            ConnectError::InvalidAddress(_) => 11,
            ConnectError::SelfConnect => 12,
            ConnectError::ShuttingDown => 13,
            ConnectError::Cancelled => 14,
            ConnectError::OutOfConnectionIds => 15,
            ConnectError::PeerOffline => 16,
            ConnectError::NotFound => 17,
        }
    }
}

/// Why [`Node::lookup`](crate::Node::lookup) could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// Servers do not look peers up; they hold the directory
    /// ([`Node::directory`](crate::Node::directory)).
    #[error("only peers look peers up; this node is a server")]
    NotAPeer,
    /// No server is linked to ask (lookup mode); wait for `Event::NetworkUp`.
    #[error("no server is linked to answer the lookup; wait for Event::NetworkUp")]
    NetworkDown,
    /// Node names are at most `MAX_NAME_LEN` bytes, so none can match.
    #[error("a name of {0} bytes cannot match: node names are at most 64 bytes")]
    NameTooLong(usize),
}

/// Why an established connection ended. Each has a stable
/// [`code`](DisconnectReason::code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// Nothing was heard from the remote within the idle timeout.
    #[error("timed out")]
    TimedOut,
    /// The remote closed the connection.
    #[error("closed by remote (code {code}): {reason}")]
    ClosedByRemote {
        /// The remote's p2pcore close code (see [`close_code`](crate::close_code)).
        code: u64,
        /// The text it sent, for logs.
        reason: String,
    },
    /// [`Node::disconnect`](crate::Node::disconnect) closed it.
    #[error("disconnected by the user")]
    ClosedByUser,
    /// [`Node::close`](crate::Node::close) closed it.
    #[error("this node is shutting down")]
    ShuttingDown,
    /// The remote peer left the directory (no server lists it any more), so
    /// its connection was closed rather than left to time out.
    #[error("the peer went offline")]
    PeerOffline,
    /// A newer connection to the same node (for example after it restarted) replaced this one.
    #[error("replaced by a newer connection")]
    Replaced,
    /// The remote broke the protocol; this node closed the connection.
    #[error("protocol violation by the remote: {0}")]
    ProtocolViolation(Violation),
    /// The remote reset the connection (stateless reset: it lost its state).
    #[error("reset by remote")]
    Reset,
    /// QUIC failed with this transport error code (RFC 9000 §20.1).
    #[error("QUIC transport error {code:#x}")]
    Transport {
        /// The QUIC transport error code.
        code: u64,
    },
}

impl DisconnectReason {
    /// A stable number for this reason (1-based; never reused).
    pub fn code(&self) -> u32 {
        match self {
            DisconnectReason::TimedOut => 1,
            DisconnectReason::ClosedByRemote { .. } => 2,
            DisconnectReason::ClosedByUser => 3,
            DisconnectReason::ShuttingDown => 4,
            DisconnectReason::PeerOffline => 5,
            DisconnectReason::Replaced => 6,
            DisconnectReason::ProtocolViolation(_) => 7,
            DisconnectReason::Reset => 8,
            DisconnectReason::Transport { .. } => 9,
        }
    }
}

/// Why [`Node::send`](crate::Node::send) rejected a message. Each has a
/// stable [`code`](SendError::code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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
    /// Too many bytes of reliable messages to this destination are not
    /// acknowledged yet ([`Config::send_buffer_limit`](crate::Config::send_buffer_limit));
    /// retry after [`Event::SendReady`](crate::Event::SendReady).
    #[error("send buffer for {to} is full ({buffered} of {limit} bytes unacknowledged)")]
    BufferFull {
        /// The destination.
        to: NodeId,
        /// Bytes held (not acknowledged) now.
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

impl SendError {
    /// A stable number for this kind of rejection (1-based; never reused).
    pub fn code(&self) -> u32 {
        match self {
            SendError::NotConnected(_) => 1,
            SendError::SelfSend => 2,
            SendError::TooLarge { .. } => 3,
            SendError::BufferFull { .. } => 4,
            SendError::DatagramsUnsupported => 5,
            SendError::ShuttingDown => 6,
            SendError::NetworkDown => 7,
            SendError::UnknownPeer(_) => 8,
        }
    }
}

/// Why reliable messages that [`Node::send`](crate::Node::send) accepted were
/// given up on ([`Event::SendFailed`](crate::Event::SendFailed)). Each has a
/// stable [`code`](SendFailure::code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendFailure {
    /// The connection the messages waited for could not be set up (no
    /// connection to the destination had been established before).
    #[error("the connection could not be set up: {0}")]
    Connect(ConnectError),
    /// The connection was lost and no new one came up within the resume
    /// window ([`Config::resume_window`](crate::Config::resume_window)).
    #[error("not reconnected within the resume window")]
    ResumeTimeout,
    /// The destination restarted (a new incarnation connected): the
    /// messages were meant for its previous life and are not replayed.
    #[error("the destination restarted")]
    PeerRestarted,
    /// This node disconnected the destination
    /// ([`Node::disconnect`](crate::Node::disconnect)).
    #[error("disconnected by this node")]
    Disconnected,
    /// This node closed ([`Node::close`](crate::Node::close)).
    #[error("this node closed")]
    Closed,
}

impl SendFailure {
    /// A stable number for this kind of failure (1-based; never reused).
    pub fn code(&self) -> u32 {
        match self {
            SendFailure::Connect(_) => 1,
            SendFailure::ResumeTimeout => 2,
            SendFailure::PeerRestarted => 3,
            SendFailure::Disconnected => 4,
            SendFailure::Closed => 5,
        }
    }
}

/// Why a presented certificate was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// Not a parseable X.509 certificate.
    #[error("certificate is not valid DER: {0}")]
    Malformed(String),
    /// Only Ed25519 keys are used by p2pcore.
    #[error("certificate key is not an Ed25519 key")]
    NotEd25519,
    /// The certificate names no node ID.
    #[error("certificate carries no p2pcore node ID")]
    NoNodeId,
    /// The ID in the certificate was not derived from its key.
    #[error("certificate claims node ID {0} but its key does not hash to it")]
    NotSelfCertifying(NodeId),
    /// Chains are not used; a certificate must stand alone.
    #[error("unexpected certificate chain")]
    UnexpectedChain,
}

/// Errors building the QUIC configuration (all indicate a bug or a broken build, not bad input).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls rejected the configuration.
    #[error("TLS configuration rejected: {0}")]
    Tls(#[from] rustls::Error),
    /// quinn-proto rejected the TLS configuration.
    #[error("QUIC crypto configuration rejected: {0}")]
    Quic(String),
    /// A transport parameter is out of range.
    #[error("transport parameter out of range: {0}")]
    Transport(String),
}

/// Why a connection was refused after the TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefuseReason {
    /// The two nodes speak incompatible protocol versions.
    ProtocolVersion {
        /// The refusing node's version.
        ours: u32,
        /// The other node's version.
        theirs: u32,
    },
    /// Another connection between the same two nodes wins the tie-break.
    Duplicate,
    /// The credential was not accepted.
    Admission(AdmissionError),
}

impl RefuseReason {
    /// A stable number for this reason (1-based; never reused).
    pub fn code(&self) -> u32 {
        match self {
            RefuseReason::ProtocolVersion { .. } => 1,
            RefuseReason::Duplicate => 2,
            RefuseReason::Admission(_) => 3,
        }
    }
}

impl std::fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefuseReason::ProtocolVersion { ours, theirs } => write!(
                f,
                "protocol version mismatch: refusing side speaks {ours}, other side {theirs}; upgrade the older node"
            ),
            RefuseReason::Duplicate => f.write_str("duplicate connection (the other one is kept)"),
            RefuseReason::Admission(e) => write!(f, "not admitted: {e}"),
        }
    }
}
