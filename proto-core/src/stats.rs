//! Counters: what came in, what went out, and what was dropped and why.

use crate::wire::FrameError;
use serde::Serialize;

/// Datagrams dropped on input, by reason. Bad bytes from the network are never
/// an error for the caller: they are counted here and discarded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DropCounters {
    /// Zero-length datagrams.
    pub empty: u64,
    /// Raw frames shorter than a header.
    pub truncated: u64,
    /// Raw frames with the wrong magic.
    pub bad_magic: u64,
    /// Raw frames of an unsupported version.
    pub bad_version: u64,
    /// Raw frames of an unknown type.
    pub unknown_type: u64,
    /// Raw frames with a malformed payload.
    pub bad_payload: u64,
    /// Well-formed raw frames this node has no use for (for example a relay
    /// frame sent to a peer that is not expecting one).
    pub unexpected: u64,
    /// QUIC datagrams quinn-proto ignored (unknown connection, malformed header, ...).
    pub quic_ignored: u64,
    /// Relay frames refused: unknown or misused session token, unknown
    /// destination, or (at a peer) not from one of its servers.
    pub relay_rejected: u64,
    /// Path probes refused: from a peer with no connection to us, with a tag
    /// that does not verify, replayed, or (pongs) not answering one of our
    /// pings from the address it went to.
    pub probe_rejected: u64,
    /// Raft messages from other servers refused before they reached raft-rs
    /// (inconsistent with this server's log, or of a kind never sent); see
    /// `server::raft_wire`. Not part of [`DropCounters::raw_total`]: they
    /// arrive on QUIC connections.
    pub raft_rejected: u64,
}

impl DropCounters {
    /// Counts one datagram rejected by the raw frame decoder.
    pub fn record(&mut self, err: &FrameError) {
        let slot = match err {
            FrameError::Empty => &mut self.empty,
            // A QUIC datagram is never handed to the raw decoder by the node;
            // if it is, it is malformed from the raw layer's point of view.
            FrameError::Quic | FrameError::Truncated(_) => &mut self.truncated,
            FrameError::BadMagic => &mut self.bad_magic,
            FrameError::UnsupportedVersion(_) => &mut self.bad_version,
            FrameError::UnknownType(_) => &mut self.unknown_type,
            FrameError::Payload { .. } | FrameError::TooLarge(_) => &mut self.bad_payload,
        };
        *slot += 1;
    }

    /// All raw-frame drops together (everything but `quic_ignored`).
    pub fn raw_total(&self) -> u64 {
        self.empty
            + self.truncated
            + self.bad_magic
            + self.bad_version
            + self.unknown_type
            + self.bad_payload
            + self.unexpected
            + self.relay_rejected
            + self.probe_rejected
    }
}

/// Traffic and drop counters of one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct NodeStats {
    /// Datagrams handed to [`Node::handle_datagram`](crate::Node::handle_datagram).
    pub datagrams_in: u64,
    /// Bytes handed to [`Node::handle_datagram`](crate::Node::handle_datagram).
    pub bytes_in: u64,
    /// Datagrams returned by [`Node::poll_transmit`](crate::Node::poll_transmit).
    pub datagrams_out: u64,
    /// Bytes returned by [`Node::poll_transmit`](crate::Node::poll_transmit).
    pub bytes_out: u64,
    /// Datagrams this server relayed between peers.
    pub relayed_datagrams: u64,
    /// Payload bytes (end-to-end QUIC packets) this server relayed.
    pub relayed_bytes: u64,
    /// Packets for a peer with no path (no common server), dropped; QUIC
    /// retransmits once a path exists.
    pub unroutable: u64,
    /// Directory snapshots this peer had to ask a server for because its
    /// deltas had a gap; zero in a healthy network (deltas arrive in order on
    /// the control stream), so anything else points at a bug.
    pub directory_resyncs: u64,
    /// Path probes (pings) this peer sent while hole punching and checking
    /// direct paths.
    pub path_pings: u64,
    /// Answers (pongs) this peer sent to other peers' pings.
    pub path_pongs: u64,
    /// Bytes of pings and pongs sent.
    pub path_probe_bytes: u64,
    /// Incoming connection attempts ignored because `limits.max_handshakes`
    /// handshakes were already in progress.
    pub handshakes_shed: u64,
    /// Incoming connection attempts refused because their IP address had
    /// `limits.max_handshakes_per_ip` handshakes in progress.
    pub handshakes_refused: u64,
    /// QUIC Retry packets sent to make a dialer prove its address under load.
    pub retries_sent: u64,
    /// Reliable messages written again to a new connection because the
    /// previous one was lost before the receiver acknowledged them.
    pub messages_resent: u64,
    /// Reliable messages received a second time (resent after a lost
    /// connection) and dropped: the application saw them once.
    pub duplicates_dropped: u64,
    /// Reliable messages given up on and reported in `Event::SendFailed`.
    pub messages_failed: u64,
    /// Input datagrams dropped, by reason.
    pub dropped: DropCounters,
}
