//! What the core tells its user.

use crate::error::{ConnectError, DisconnectReason, SendFailure};
use crate::identity::NodeId;
use crate::info::PeerInfo;
use crate::proto::{PathKind, RefuseReason};
use crate::server::election::MasterBasis;
use crate::store::{KvAnswer, KvError, KvEvent};
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::Duration;

/// How a message is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
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
#[non_exhaustive]
pub enum Event {
    /// An authenticated connection to `id` is ready for messages.
    Connected {
        /// The remote node.
        id: NodeId,
        /// Its human-readable name.
        name: String,
        /// The real address its packets go to: the remote's own address, or
        /// for a relayed peer the relaying server's (`[::]:0` if it has no
        /// path at this moment).
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
    /// Reliable messages that [`Node::send`](crate::Node::send) accepted for
    /// `to` on `channel` were given up on and discarded: `to` did not
    /// acknowledge them, and they will not be sent again. Reported once per
    /// channel, with the range of their sequence numbers (what `send`
    /// returned), `first` to `last` inclusive. Every accepted message is
    /// either acknowledged by the receiver or reported here, never neither.
    /// A reported message was not handed to the receiving application —
    /// except in one case no protocol can rule out: a message in flight when
    /// the connection was cut (by [`Node::disconnect`](crate::Node::disconnect),
    /// [`Node::close`](crate::Node::close), or the receiver crashing) may have
    /// reached the receiver's application just before, without its
    /// acknowledgement coming back.
    SendFailed {
        /// The destination.
        to: NodeId,
        /// The channel.
        channel: u8,
        /// Sequence number of the first message given up on.
        first: u64,
        /// Sequence number of the last one (inclusive).
        last: u64,
        /// How many messages (`last - first + 1`).
        messages: usize,
        /// Why.
        reason: SendFailure,
    },
    /// A connection was refused after the TLS handshake (a credential was not
    /// accepted, or the protocol versions differ): either this node refused the
    /// remote or the remote refused this node. Both sides always report it. A
    /// dial the user made also ends in [`Event::ConnectFailed`].
    Refused {
        /// The remote node.
        id: NodeId,
        /// Its address.
        addr: SocketAddr,
        /// Why.
        reason: RefuseReason,
        /// True if the remote refused this node; false if this node refused the remote.
        by_remote: bool,
    },
    /// An introducer or bootstrap server could not be reached; it is retried.
    BootstrapFailed {
        /// The address dialed.
        addr: SocketAddr,
        /// Why it failed.
        error: ConnectError,
        /// When the next attempt is made.
        retry_in: Duration,
    },
    /// A server joined this node's view of the cluster (it is connected and live).
    ServerUp {
        /// The server.
        id: NodeId,
        /// Its name.
        name: String,
    },
    /// A server left this node's view of the cluster (its connection died).
    ServerDown {
        /// The server.
        id: NodeId,
        /// Its name.
        name: String,
    },
    /// The Master changed, or the basis or Raft term of its mandate did.
    MasterChanged {
        /// The new Master; `None` while there is none (for example during a Raft election).
        master: Option<NodeId>,
        /// Why it is Master: only `Raft` is partition-safe.
        basis: Option<MasterBasis>,
        /// The Raft term for basis `Raft`; 0 otherwise.
        term: u64,
        /// The Raft group for basis `Raft`; 0 otherwise. `(epoch, term)` is a
        /// fencing token (see [`MasterInfo`](crate::MasterInfo)).
        epoch: u64,
    },
    /// The answer to [`Node::lookup`](crate::Node::lookup) number `query`:
    /// the peers found (empty: none), each now in the directory.
    LookupDone {
        /// The number `lookup` returned.
        query: u64,
        /// The peers found.
        peers: Vec<PeerInfo>,
    },
    /// A peer appeared in the directory (some server lists it).
    PeerOnline {
        /// The peer.
        id: NodeId,
        /// Its name.
        name: String,
    },
    /// A peer left the directory (no server lists it any more).
    PeerOffline {
        /// The peer.
        id: NodeId,
        /// Its name.
        name: String,
    },
    /// The first server connection is up: peers can be reached.
    NetworkUp,
    /// The last server connection is lost: sends to peers fail with
    /// [`SendError::NetworkDown`](crate::SendError::NetworkDown) until a
    /// server is back (the node keeps redialing).
    NetworkDown,
    /// How this node reaches a linked peer changed (direct, punched, or
    /// relayed through which server; see [`Node::link_table`](crate::Node::link_table)).
    PathChanged {
        /// The peer.
        peer: NodeId,
        /// The new path; `None` while no path is available.
        path: Option<PathKind>,
    },
    /// The send buffer for `to` has room again: it was full (`send` returned
    /// [`SendError::BufferFull`](crate::SendError::BufferFull)) and now holds at
    /// most half of `send_buffer_limit`. Told once per time it was full.
    SendReady {
        /// The destination.
        to: NodeId,
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
    /// A store request ([`Node::kv`](crate::Node::kv)) finished: its answer,
    /// or why not. Every request id gets exactly one.
    KvDone {
        /// The id `kv` returned.
        id: u64,
        /// The answer or the failure.
        result: Result<KvAnswer, KvError>,
    },
    /// Changes under a watched prefix ([`Node::watch`](crate::Node::watch)),
    /// in revision order, each reported once, with no gaps — also across
    /// the loss of the server the watch was registered at.
    KvWatch {
        /// The id `watch` returned.
        id: u64,
        /// The changes, oldest first.
        events: Vec<KvEvent>,
    },
    /// A watch ended: it asked for changes the store no longer keeps
    /// ([`KvError::Compacted`]), or it was refused.
    KvWatchEnded {
        /// The id `watch` returned.
        id: u64,
        /// Why.
        error: KvError,
    },
    /// A coordination request ([`Node::coord`](crate::Node::coord)) made
    /// progress, succeeded, or ended.
    Coord(crate::coord::CoordEvent),
}
