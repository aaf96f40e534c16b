//! Raw frames: the datagrams that cannot be QUIC.
//!
//! Every node uses one UDP socket for everything. A datagram whose first byte
//! has the QUIC fixed bit (`0x40`) set is QUIC and goes to quinn-proto; any
//! other datagram must be a raw frame:
//!
//! ```text
//!  0      2         3      4
//!  +------+---------+------+--------------------------------+
//!  | magic| version | type | payload (the rest of the datagram)
//!  | 3e b1|   02    |  u8  |
//!  +------+---------+------+--------------------------------+
//! ```
//!
//! The magic's first byte (`0x3e`) has the fixed bit clear, so a raw frame can
//! never be mistaken for QUIC; QUIC bit greasing (RFC 9287) is switched off on
//! every endpoint so the converse holds too.
//!
//! The header is deliberately small: a relayed QUIC packet (up to 1200 bytes)
//! plus the relay header must fit IPv6's minimum MTU of 1280 bytes, that is
//! 1232 bytes of UDP payload ([`RELAY_OVERHEAD`] is 29). Version 1 carried a
//! length field and a CRC-32 as well; both were dropped: the length is the
//! datagram's, UDP's checksum catches corruption, and every payload is
//! authenticated anyway (probes by an HMAC, relayed packets by QUIC's AEAD, relay
//! headers by the session token and source address).
//!
//! [`decode`] is total: every byte string yields a frame or a [`FrameError`];
//! nothing panics and nothing allocates. Callers count errors in
//! [`DropCounters`](crate::stats::DropCounters) and drop the datagram.

use crate::identity::{NODE_ID_LEN, NodeId};
use std::net::{IpAddr, SocketAddr};

/// The two magic bytes that start every raw frame.
pub const MAGIC: [u8; 2] = [0x3e, 0xb1];
/// The raw frame format version this code speaks.
pub const VERSION: u8 = 2;
/// Size of the raw frame header in bytes.
pub const HEADER_LEN: usize = 4;
/// Largest payload a raw frame can carry: the largest UDP payload over IPv4
/// (65,507 bytes) less the header.
pub const MAX_PAYLOAD: usize = 65_507 - HEADER_LEN;

/// The QUIC fixed bit (RFC 9000 §17): set in every QUIC packet we accept.
const QUIC_FIXED_BIT: u8 = 0x40;

/// Whether a datagram is QUIC (fixed bit set) rather than a raw frame.
pub fn is_quic(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| b & QUIC_FIXED_BIT != 0)
}

/// The kinds of raw frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// A path probe: "can you hear me on this address?"
    Ping = 1,
    /// The answer to a [`FrameType::Ping`], naming the address it came from.
    Pong = 2,
    /// An end-to-end QUIC packet forwarded through a server.
    Relay = 3,
}

impl FrameType {
    /// The type for a type byte, if known.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Ping),
            2 => Some(Self::Pong),
            3 => Some(Self::Relay),
            _ => None,
        }
    }
}

/// A decoded raw frame, borrowing its payload from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// What the payload is.
    pub kind: FrameType,
    /// The payload bytes.
    pub payload: &'a [u8],
}

/// Why a datagram is not a valid raw frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A zero-length datagram.
    #[error("empty datagram")]
    Empty,
    /// The datagram is QUIC, not a raw frame.
    #[error("datagram has the QUIC fixed bit set")]
    Quic,
    /// Shorter than a header.
    #[error("datagram of {0} bytes is shorter than a raw frame header")]
    Truncated(usize),
    /// The first two bytes are not [`MAGIC`].
    #[error("bad magic")]
    BadMagic,
    /// A version this code does not speak.
    #[error("unsupported raw frame version {0}")]
    UnsupportedVersion(u8),
    /// A type byte this code does not know.
    #[error("unknown raw frame type {0}")]
    UnknownType(u8),
    /// The header is fine but the payload is malformed for its type.
    #[error("malformed {kind:?} payload: {reason}")]
    Payload {
        /// The frame type.
        kind: FrameType,
        /// What is wrong.
        reason: &'static str,
    },
    /// Encoding only: the payload exceeds [`MAX_PAYLOAD`].
    #[error("payload of {0} bytes exceeds the raw frame maximum of 65503")]
    TooLarge(usize),
}

/// Decodes a datagram as a raw frame. Total: never panics, never allocates.
pub fn decode(datagram: &[u8]) -> Result<RawFrame<'_>, FrameError> {
    let Some(&first) = datagram.first() else {
        return Err(FrameError::Empty);
    };
    if first & QUIC_FIXED_BIT != 0 {
        return Err(FrameError::Quic);
    }
    if datagram.len() < HEADER_LEN {
        return Err(FrameError::Truncated(datagram.len()));
    }
    if datagram[..2] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    if datagram[2] != VERSION {
        return Err(FrameError::UnsupportedVersion(datagram[2]));
    }
    let kind = FrameType::from_u8(datagram[3]).ok_or(FrameError::UnknownType(datagram[3]))?;
    Ok(RawFrame { kind, payload: &datagram[HEADER_LEN..] })
}

/// Incremental encoder: write the header, append the payload in place, then
/// [`FrameWriter::finish`] checks its size. This lets a relay wrap a QUIC
/// packet without copying it twice.
#[derive(Debug)]
#[must_use = "a frame is incomplete until finish() is called"]
pub struct FrameWriter {
    start: usize,
}

impl FrameWriter {
    /// Appends a header for a frame of `kind` to `out`.
    pub fn begin(kind: FrameType, out: &mut Vec<u8>) -> Self {
        let start = out.len();
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(kind as u8);
        Self { start }
    }

    /// Completes the frame whose payload is everything appended after
    /// `begin`; a payload over [`MAX_PAYLOAD`] is removed again and reported.
    pub fn finish(self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let payload_len = out.len() - self.start - HEADER_LEN;
        if payload_len > MAX_PAYLOAD {
            out.truncate(self.start);
            return Err(FrameError::TooLarge(payload_len));
        }
        Ok(())
    }
}

/// Appends a complete frame of `kind` carrying `payload` to `out`.
pub fn encode(kind: FrameType, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(payload.len()));
    }
    let w = FrameWriter::begin(kind, out);
    out.extend_from_slice(payload);
    w.finish(out)
}

/// Length of a relay session token. Eight random bytes are out of reach of
/// blind guessing (and a server checks the registered source address too);
/// an on-path observer sees tokens whatever their length.
pub const TOKEN_LEN: usize = 8;

/// Bytes a relay frame adds to the QUIC packet it carries.
pub const RELAY_OVERHEAD: usize = HEADER_LEN + TOKEN_LEN + NODE_ID_LEN;

/// Largest UDP payload an IPv6 path must carry (1280-byte MTU less the IPv6
/// and UDP headers).
pub const IPV6_MIN_UDP_PAYLOAD: usize = 1280 - 40 - 8;

// A relayed full-size QUIC packet (quinn-proto's 1200-byte floor, which we
// never exceed: PMTU discovery is off) must fit the IPv6 minimum.
const _: () = assert!(1200 + RELAY_OVERHEAD <= IPV6_MIN_UDP_PAYLOAD);

/// A relay frame's payload: `[token 8][node ID 17][QUIC packet]`.
///
/// Peer to server, `token` is the sender's session token at that server and
/// `node` the destination; server to peer, `token` is the recipient's token
/// and `node` the original sender. A server forwards only frames whose token
/// belongs to the connection they came from, and a peer accepts only frames
/// that carry its own token and come from its server: a stranger can use
/// neither to inject traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayFrame<'a> {
    /// Session token.
    pub token: [u8; TOKEN_LEN],
    /// Destination (to a server) or source (from a server).
    pub node: NodeId,
    /// The end-to-end QUIC packet, opaque to the server.
    pub data: &'a [u8],
}

impl<'a> RelayFrame<'a> {
    /// Decodes a relay payload.
    pub fn decode(payload: &'a [u8]) -> Result<Self, FrameError> {
        let bad = |reason| FrameError::Payload { kind: FrameType::Relay, reason };
        if payload.len() < TOKEN_LEN + NODE_ID_LEN + 1 {
            return Err(bad("shorter than token, node ID and one byte of data"));
        }
        let (token, rest) = payload.split_at(TOKEN_LEN);
        let (node, data) = rest.split_at(NODE_ID_LEN);
        let node = NodeId::from_bytes(node).map_err(|_| bad("invalid node ID"))?;
        let mut t = [0u8; TOKEN_LEN];
        t.copy_from_slice(token);
        if !is_quic(data) {
            return Err(bad("relayed data is not a QUIC packet"));
        }
        Ok(Self { token: t, node, data })
    }

    /// Turns a complete relay frame, in place, into the one a server
    /// forwards: the header's token and node become `token` and `node`; the
    /// QUIC packet behind them is not touched. Every relay frame has the same
    /// header size ([`RELAY_OVERHEAD`]), so a server forwards a frame without
    /// copying it. `frame` must be a frame [`RelayFrame::decode`] accepted
    /// (behind its [`HEADER_LEN`] bytes of raw-frame header).
    pub fn rewrite(frame: &mut [u8], token: &[u8; TOKEN_LEN], node: &NodeId) {
        debug_assert!(frame.len() > RELAY_OVERHEAD, "not a decoded relay frame");
        frame[HEADER_LEN..HEADER_LEN + TOKEN_LEN].copy_from_slice(token);
        frame[HEADER_LEN + TOKEN_LEN..RELAY_OVERHEAD].copy_from_slice(&node.to_bytes());
    }

    /// Appends a complete relay frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let w = FrameWriter::begin(FrameType::Relay, out);
        out.extend_from_slice(&self.token);
        out.extend_from_slice(&self.node.to_bytes());
        out.extend_from_slice(self.data);
        w.finish(out)
    }
}

/// Length of a probe's transaction ID.
pub const TXID_LEN: usize = 12;
/// Length of a probe's authentication tag.
pub const PROBE_MAC_LEN: usize = 16;
/// Bytes an address takes in a probe: family (4 or 6, 0 for none), 16
/// address bytes (IPv4 in the first 4), port.
const ADDR_LEN: usize = 1 + 16 + 2;
/// Length of a probe payload (pings and pongs alike).
pub const PROBE_LEN: usize = NODE_ID_LEN + TXID_LEN + ADDR_LEN + PROBE_MAC_LEN;

/// A path probe's payload, the same for pings and pongs:
/// `[sender node ID 17][txid 12][address 19][tag 16]`.
///
/// A ping asks "can you hear me on this address?"; the pong echoes the
/// transaction ID and names the address the ping came from (a ping's address
/// field is empty, so a pong is never larger than the ping that caused it: no
/// amplification). The tag is an HMAC keyed by a secret both peers export from
/// their end-to-end TLS session, over the frame type, both node IDs, the
/// transaction ID and the address, so only the peer at the other end of that
/// session can make a probe that validates a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeFrame {
    /// Who sent it.
    pub from: NodeId,
    /// Matches a pong to its ping.
    pub txid: [u8; TXID_LEN],
    /// Pongs: the address the ping came from. Pings: `None`.
    pub addr: Option<SocketAddr>,
    /// Authentication tag.
    pub mac: [u8; PROBE_MAC_LEN],
}

impl ProbeFrame {
    /// Decodes a ping or pong payload.
    pub fn decode(kind: FrameType, payload: &[u8]) -> Result<Self, FrameError> {
        let bad = |reason| FrameError::Payload { kind, reason };
        if payload.len() != PROBE_LEN {
            return Err(bad("probe of the wrong length"));
        }
        let (from, rest) = payload.split_at(NODE_ID_LEN);
        let from = NodeId::from_bytes(from).map_err(|_| bad("invalid node ID"))?;
        let (txid, rest) = rest.split_at(TXID_LEN);
        let (addr, mac) = rest.split_at(ADDR_LEN);
        let ip = match addr[0] {
            0 => None,
            4 => Some(IpAddr::from(<[u8; 4]>::try_from(&addr[1..5]).map_err(|_| bad("address"))?)),
            6 => Some(IpAddr::from(<[u8; 16]>::try_from(&addr[1..17]).map_err(|_| bad("address"))?)),
            _ => return Err(bad("unknown address family")),
        };
        let port = u16::from_be_bytes([addr[17], addr[18]]);
        let mut t = [0u8; TXID_LEN];
        t.copy_from_slice(txid);
        let mut m = [0u8; PROBE_MAC_LEN];
        m.copy_from_slice(mac);
        Ok(Self { from, txid: t, addr: ip.map(|ip| SocketAddr::new(ip, port)), mac: m })
    }

    /// The bytes the tag covers: frame type, sender, receiver, txid, address.
    pub fn signed_bytes(
        kind: FrameType,
        from: &NodeId,
        to: &NodeId,
        txid: &[u8],
        addr: Option<SocketAddr>,
    ) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + 2 * NODE_ID_LEN + TXID_LEN + ADDR_LEN);
        v.push(kind as u8);
        v.extend_from_slice(&from.to_bytes());
        v.extend_from_slice(&to.to_bytes());
        v.extend_from_slice(txid);
        encode_addr(addr, &mut v);
        v
    }

    /// Appends a complete raw frame of type `kind` to `out`.
    pub fn encode(&self, kind: FrameType, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let w = FrameWriter::begin(kind, out);
        out.extend_from_slice(&self.from.to_bytes());
        out.extend_from_slice(&self.txid);
        encode_addr(self.addr, out);
        out.extend_from_slice(&self.mac);
        w.finish(out)
    }
}

fn encode_addr(addr: Option<SocketAddr>, out: &mut Vec<u8>) {
    let mut a = [0u8; ADDR_LEN];
    if let Some(addr) = addr {
        match addr.ip() {
            IpAddr::V4(ip) => {
                a[0] = 4;
                a[1..5].copy_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                a[0] = 6;
                a[1..17].copy_from_slice(&ip.octets());
            }
        }
        a[17..19].copy_from_slice(&addr.port().to_be_bytes());
    }
    out.extend_from_slice(&a);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_round_trip_and_reject_junk() {
        let from = crate::identity::Identity::from_seed(crate::identity::Role::Peer, [3; 32]).id();
        for addr in
            [None, Some("198.51.100.7:4433".parse().unwrap()), Some("[2001:db8::9]:1".parse().unwrap())]
        {
            let p = ProbeFrame { from, txid: [5; TXID_LEN], addr, mac: [9; PROBE_MAC_LEN] };
            let mut out = Vec::new();
            p.encode(FrameType::Pong, &mut out).unwrap();
            assert_eq!(out.len(), HEADER_LEN + PROBE_LEN);
            let raw = decode(&out).unwrap();
            assert_eq!(raw.kind, FrameType::Pong);
            assert_eq!(ProbeFrame::decode(raw.kind, raw.payload).unwrap(), p);
            assert!(ProbeFrame::decode(raw.kind, &raw.payload[1..]).is_err());
            let mut bad = raw.payload.to_vec();
            bad[NODE_ID_LEN + TXID_LEN] = 5;
            assert!(ProbeFrame::decode(raw.kind, &bad).is_err(), "unknown family");
        }
        // The tag covers the type: a ping's signed bytes differ from a pong's.
        let to = crate::identity::Identity::from_seed(crate::identity::Role::Peer, [4; 32]).id();
        assert_ne!(
            ProbeFrame::signed_bytes(FrameType::Ping, &from, &to, &[1; TXID_LEN], None),
            ProbeFrame::signed_bytes(FrameType::Pong, &from, &to, &[1; TXID_LEN], None)
        );
    }

    #[test]
    fn round_trip_every_type() {
        for kind in [FrameType::Ping, FrameType::Pong, FrameType::Relay] {
            for len in [0usize, 1, 100, 1400, MAX_PAYLOAD] {
                let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                let mut out = Vec::new();
                encode(kind, &payload, &mut out).unwrap();
                assert_eq!(out.len(), HEADER_LEN + len);
                assert!(!is_quic(&out));
                let f = decode(&out).unwrap();
                assert_eq!(f.kind, kind);
                assert_eq!(f.payload, &payload[..]);
            }
        }
    }

    #[test]
    fn too_large_is_an_error_and_leaves_buffer_clean() {
        let mut out = vec![1, 2, 3];
        let big = vec![0u8; MAX_PAYLOAD + 1];
        assert_eq!(encode(FrameType::Relay, &big, &mut out), Err(FrameError::TooLarge(MAX_PAYLOAD + 1)));
        assert_eq!(out, vec![1, 2, 3]);
        let w = FrameWriter::begin(FrameType::Relay, &mut out);
        out.extend_from_slice(&big);
        assert!(w.finish(&mut out).is_err());
        assert_eq!(out, vec![1, 2, 3]);
    }

    #[test]
    fn rewriting_a_relay_frame_in_place_equals_encoding_the_forwarded_one() {
        use crate::identity::{Identity, Role};
        let from = Identity::from_seed(Role::Peer, [1; 32]).id();
        let to = Identity::from_seed(Role::Peer, [2; 32]).id();
        let packet = [0xc3u8; 100];
        let mut inbound = Vec::new();
        RelayFrame { token: [1; TOKEN_LEN], node: to, data: &packet }.encode(&mut inbound).unwrap();
        let mut outbound = Vec::new();
        RelayFrame { token: [9; TOKEN_LEN], node: from, data: &packet }.encode(&mut outbound).unwrap();
        RelayFrame::rewrite(&mut inbound, &[9; TOKEN_LEN], &from);
        assert_eq!(inbound, outbound);
        let decoded = RelayFrame::decode(decode(&inbound).unwrap().payload).unwrap();
        assert_eq!((decoded.token, decoded.node, decoded.data), ([9; TOKEN_LEN], from, &packet[..]));
    }

    #[test]
    fn relay_frames_round_trip_and_reject_junk() {
        let node = crate::identity::Identity::from_seed(crate::identity::Role::Peer, [1; 32]).id();
        let quic = [0xc3u8, 1, 2, 3];
        let f = RelayFrame { token: [7; TOKEN_LEN], node, data: &quic };
        let mut out = Vec::new();
        f.encode(&mut out).unwrap();
        let raw = decode(&out).unwrap();
        assert_eq!(raw.kind, FrameType::Relay);
        assert_eq!(RelayFrame::decode(raw.payload).unwrap(), f);
        assert_eq!(out.len(), RELAY_OVERHEAD + quic.len());
        assert!(RelayFrame::decode(&raw.payload[..20]).is_err());
        let mut bad = raw.payload.to_vec();
        bad[TOKEN_LEN] = b'X';
        assert!(RelayFrame::decode(&bad).is_err());
        let mut not_quic = raw.payload.to_vec();
        let last = not_quic.len() - quic.len();
        not_quic[last] = 0x00;
        assert!(RelayFrame::decode(&not_quic).is_err());
    }

    #[test]
    fn each_error_kind() {
        let mut good = Vec::new();
        encode(FrameType::Ping, b"abc", &mut good).unwrap();
        assert_eq!(decode(&[]), Err(FrameError::Empty));
        assert_eq!(decode(&[0xc0, 0, 0]), Err(FrameError::Quic));
        assert_eq!(decode(&good[..3]), Err(FrameError::Truncated(3)));
        let mut b = good.clone();
        b[1] = 0;
        assert_eq!(decode(&b), Err(FrameError::BadMagic));
        let mut b = good.clone();
        b[2] = 9;
        assert_eq!(decode(&b), Err(FrameError::UnsupportedVersion(9)));
        let mut b = good.clone();
        b[3] = 200;
        assert_eq!(decode(&b), Err(FrameError::UnknownType(200)));
        b[2] = 1;
        assert_eq!(decode(&b), Err(FrameError::UnsupportedVersion(1)), "version 1 frames are refused");
    }
}
