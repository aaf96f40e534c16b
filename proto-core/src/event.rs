//! What the core tells its user.

use crate::error::{ConnectError, DisconnectReason};
use crate::identity::NodeId;
use bytes::Bytes;
use std::net::SocketAddr;

/// How a message is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Reliability {
    /// Delivered exactly once and in order within its channel (a QUIC stream
    /// per channel, so channels do not block each other). Any size up to
    /// [`Config::max_message_size`](crate::Config::max_message_size).
    Reliable,
    /// Delivered at most once, in no particular order (a QUIC datagram). Must
    /// fit in one packet; see [`Node::max_unreliable_size`](crate::Node::max_unreliable_size).
    Unreliable,
}

/// Something the user of a [`Node`](crate::Node) should know about.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An authenticated connection to `id` is ready for messages.
    Connected {
        /// The remote node.
        id: NodeId,
        /// Its human-readable name.
        name: String,
        /// The address the connection runs over.
        addr: SocketAddr,
    },
    /// A connection attempt failed.
    ConnectFailed {
        /// The node that was dialed, when it was dialed by ID.
        id: Option<NodeId>,
        /// The address that was dialed.
        addr: SocketAddr,
        /// Why it failed.
        error: ConnectError,
    },
    /// An established connection ended.
    Disconnected {
        /// The remote node.
        id: NodeId,
        /// Why.
        reason: DisconnectReason,
    },
    /// Messages queued for a node could not be delivered because the
    /// connection they waited for failed; they were discarded.
    SendFailed {
        /// The destination.
        to: NodeId,
        /// How many messages were discarded.
        messages: usize,
        /// Why the connection failed.
        error: ConnectError,
    },
    /// A message arrived.
    MessageReceived {
        /// The sender.
        from: NodeId,
        /// The channel it was sent on.
        channel: u8,
        /// The payload.
        bytes: Bytes,
        /// How it was sent.
        reliability: Reliability,
    },
}
