//! Messages exchanged over QUIC streams, and their framing.
//!
//! Each connection has one bidirectional *control stream*, opened by the
//! dialer as soon as the TLS handshake completes. It carries
//! length-prefixed [`Control`] messages encoded with postcard:
//! `[u32 BE length][postcard bytes]`. User messages travel on separate
//! unidirectional streams, one per channel and direction, framed the same way
//! after a one-byte channel header, so channels never block each other.

use crate::admission::{AdmissionError, AdmissionMode, Credential, CredentialKind};
pub(crate) use crate::error::RefuseReason;
use crate::identity::NodeId;
pub(crate) use crate::info::{PathKind, PeerAddrs};
use crate::server::election::{MasterBasis, MasterInfo};
use crate::store::Op;
use crate::store::machine::{Change, Fail, Outcome};
use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Version of the control protocol spoken on the control stream.
pub(crate) const PROTOCOL_VERSION: u32 = 6;

/// Length prefix size of every stream frame.
pub(crate) const LEN_PREFIX: usize = 4;

/// Largest control message accepted from a server, in bytes. Generous enough
/// for a directory snapshot of many thousands of peers; a larger one is a
/// protocol violation.
pub(crate) const MAX_CONTROL_MESSAGE: usize = 8 << 20;

/// Largest control message accepted from a peer (addresses, links, path
/// candidates: all small).
pub(crate) const MAX_PEER_CONTROL: usize = 64 << 10;

/// Largest control message accepted before the remote is admitted: a Hello,
/// a Welcome or a Refuse (name, a few addresses, a credential).
pub(crate) const MAX_HANDSHAKE_MESSAGE: usize = 16 << 10;

/// The first message on a control stream, sent by the dialer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub(crate) protocol: u32,
    /// Human-readable name of the sender.
    pub(crate) name: String,
    /// Random per-boot number: tells a restart from a reconnection.
    pub(crate) incarnation: u64,
    /// Milliseconds since the sender started.
    pub(crate) uptime_ms: u64,
    /// Proof of network membership.
    pub(crate) credential: Credential,
    /// Addresses the sender can be reached at (servers: where to dial them).
    pub(crate) addrs: Vec<SocketAddr>,
    /// The dialer is joining through this server and wants the server list.
    pub(crate) join: bool,
    /// Random per connection: orders duplicate connections identically on both sides.
    pub(crate) nonce: u64,
    /// A peer dialing a server: send it only the directory rows it looks up
    /// (`DirectoryMode::Lookup`), not the whole directory (protocol 6).
    pub(crate) lookup: bool,
}

/// The acceptor's answer to an acceptable [`Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Welcome {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub(crate) protocol: u32,
    /// Human-readable name of the acceptor.
    pub(crate) name: String,
    /// Random per-boot number of the acceptor.
    pub(crate) incarnation: u64,
    /// Milliseconds since the acceptor started.
    pub(crate) uptime_ms: u64,
    /// The dialer's address as the acceptor sees it (a server-reflexive candidate).
    pub(crate) observed: SocketAddr,
    /// Proof of network membership.
    pub(crate) credential: Credential,
    /// Addresses the acceptor can be reached at.
    pub(crate) addrs: Vec<SocketAddr>,
    /// Which of the two has run longer, decided once by the acceptor so both
    /// sides hold the same answer (see `server::election`).
    pub(crate) elder: NodeId,
}

/// A server as listed in the server list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServerEntry {
    pub(crate) id: NodeId,
    pub(crate) name: String,
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) incarnation: u64,
    pub(crate) load: u32,
}

/// A server's standing in the Raft groups, gossiped to other servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RaftStatus {
    /// The group it is in or is joining.
    pub(crate) cluster: Option<u64>,
    /// Its current Raft ID.
    pub(crate) raft_id: u64,
    /// Voters of its group that are present (itself and live servers in it).
    pub(crate) voters: u32,
    /// It waits to be added to `cluster`.
    pub(crate) joining: bool,
}

/// Server-to-server messages (and, later, server-to-peer announcements).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum ClusterMsg {
    /// The live server list, sent once to a server that joins through us.
    List(Vec<ServerEntry>),
    /// A server became known: flooded once per server and incarnation.
    Joined(ServerEntry),
    /// The sender's load changed.
    Load(u32),
    /// The sender's Raft standing changed.
    Status(RaftStatus),
    /// The leader removed `raft_id` from group `cluster`: its owner is out.
    Dismiss { cluster: u64, raft_id: u64 },
    /// A raft-rs message for group `cluster`, in the bounded encoding of
    /// `server::raft_wire` (never protobuf on the wire).
    Raft { cluster: u64, msg: Vec<u8> },
    /// A store request of a peer connected to the sender, for the leader.
    KvForward(KvAsk, NodeId),
    /// Leader → the server that forwarded a read: the read's answer.
    KvRead { client: NodeId, epoch: u64, seq: u64, outcome: Outcome },
    /// Server → leader: peers connected to the sender (all of them when
    /// `full`, else what changed), so the leader knows whose sessions live.
    Holding { full: bool, up: Vec<NodeId>, down: Vec<NodeId> },
}

/// A store request as a peer sends it (and a server forwards it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KvAsk {
    /// The asking run of the peer (random per start; see `Command::epoch`).
    pub(crate) epoch: u64,
    /// The peer's sequence number for it (a retry reuses it).
    pub(crate) seq: u64,
    /// Every sequence number below this one has its answer.
    pub(crate) ack: u64,
    /// The request.
    pub(crate) op: Op,
    /// Reads only: serve from the server's own copy once it has applied
    /// this revision, instead of confirming with the leader.
    pub(crate) at_least: Option<u64>,
}

/// A server's answer to a peer's store request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KvReply {
    /// The run of the peer that asked (a reply to an earlier run is dropped).
    pub(crate) epoch: u64,
    pub(crate) seq: u64,
    pub(crate) outcome: Outcome,
    /// Confirmed by the leader (or a write), as opposed to an at-least read.
    pub(crate) linearizable: bool,
    /// Voters of the group that answered.
    pub(crate) voters: u32,
}

/// One peer in a server's directory (and in a peer's copy of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DirEntry {
    pub(crate) id: NodeId,
    pub(crate) name: String,
    #[serde(with = "wire_addrs")]
    pub(crate) addrs: PeerAddrs,
}

/// Server-to-peer and peer-to-server messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum PeerMsg {
    /// Server → peer: the relay session token for this connection.
    Session { token: [u8; crate::wire::TOKEN_LEN] },
    /// Server → peer: the whole directory, once per connection.
    Directory { version: u64, peers: Vec<DirEntry> },
    /// Server → peer: a peer connected to the server.
    DirAdd { version: u64, entry: DirEntry },
    /// Server → peer: a peer's addresses changed.
    DirUpdate { version: u64, entry: DirEntry },
    /// Server → peer: a peer left the server.
    DirRemove { version: u64, id: NodeId },
    /// Server → peer: the live servers, once per connection.
    Servers(Vec<ServerEntry>),
    /// Server → peer: a server joined the cluster.
    ServerUp(ServerEntry),
    /// Server → peer: a server left the cluster.
    ServerDown(NodeId),
    /// Server → peer: the Master as the server sees it.
    Master(#[serde(with = "wire_master")] MasterInfo),
    /// Peer → server: the peer's own addresses, sent when they change.
    Info(#[serde(with = "wire_addrs")] PeerAddrs),
    /// Peer → server: a link-table entry appeared or changed.
    LinkSet {
        peer: NodeId,
        #[serde(with = "wire_path")]
        path: PathKind,
    },
    /// Peer → server: a link-table entry went away.
    LinkDrop { peer: NodeId },
    /// Peer → server: directory versions did not line up; send a snapshot.
    Resync,
    /// Server → peer: the peer's packets now come from this address (its
    /// NAT gave it a new mapping, or its address changed).
    Observed(SocketAddr),
    /// Peer → server: the round-trip time of the peer's connection to a
    /// linked peer, in µs, when it moved noticeably (for the servers' view
    /// of who reaches whom how fast; protocol 3). Protocol 4 added the
    /// store requests below and store images in Raft snapshots.
    LinkRtt { peer: NodeId, rtt_us: u32 },
    /// Peer → server: a request to the replicated store.
    Kv(KvAsk),
    /// Server → peer: the answer to a store request.
    KvReply(KvReply),
    /// Peer → server: report changes under `prefix` from revision `from`
    /// on (0: from the next one) as watch `id`.
    Watch { id: u64, prefix: Vec<u8>, from: u64 },
    /// Peer → server: stop watch `id`.
    Unwatch { id: u64 },
    /// Server → peer: changes for watch `id` (whole revisions, in order),
    /// and the revision the server will report from next. Sent at once on
    /// `Watch` (maybe empty: the watch's start), then as changes apply.
    WatchEvents { id: u64, next: u64, changes: Vec<Change> },
    /// Server → peer: watch `id` ended (its start was compacted away, or
    /// it was refused).
    WatchEnd { id: u64, fail: Fail },
    /// Peer → server (lookup mode, protocol 6): which peers match `key`?
    /// The answer also subscribes the asker to each peer found (and, for an
    /// ID, to that ID even if it is not connected yet).
    Lookup { query: u64, key: WireLookup },
    /// Server → peer: the answer to `Lookup` number `query`.
    Found { query: u64, entries: Vec<DirEntry> },
    /// Server → peer (lookup mode): a peer it looked up connected to the
    /// server, or its addresses changed.
    Listed(DirEntry),
    /// Server → peer (lookup mode): a peer it looked up left the server.
    Unlisted(NodeId),
}

/// Most entries in one lookup answer (a name many peers share).
pub(crate) const MAX_FOUND: usize = 64;

/// The wire form of [`LookupKey`](crate::LookupKey) (variant order is the
/// encoding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WireLookup {
    Id(NodeId),
    Name(String),
}

impl From<&crate::info::LookupKey> for WireLookup {
    fn from(k: &crate::info::LookupKey) -> Self {
        match k {
            crate::info::LookupKey::Id(id) => WireLookup::Id(*id),
            crate::info::LookupKey::Name(n) => WireLookup::Name(n.clone()),
        }
    }
}

/// Messages of the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Control {
    Hello(Hello),
    Welcome(Welcome),
    /// The dialer accepts the Welcome: the connection is established.
    Ready,
    Refuse(#[serde(with = "wire_refuse")] RefuseReason),
    Cluster(ClusterMsg),
    Peer(PeerMsg),
    /// Between two peers, over their end-to-end connection.
    Path(PathMsg),
    /// Reliable delivery: for each `(channel, next)`, every message below
    /// sequence number `next` of the receiver's current session with us
    /// was handed to the application (see `node/session.rs`).
    Ack(Vec<(u8, u64)>),
}

/// Peer-to-peer path coordination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PathMsg {
    /// "I am probing you now; these are my addresses." Unless `reply`, the
    /// receiver starts probing too and replies with its own addresses.
    Candidates {
        #[serde(with = "wire_addrs")]
        addrs: PeerAddrs,
        reply: bool,
    },
}

impl Control {
    /// The message's name, for diagnostics.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Control::Hello(_) => "Hello",
            Control::Welcome(_) => "Welcome",
            Control::Ready => "Ready",
            Control::Refuse(_) => "Refuse",
            Control::Cluster(_) => "Cluster",
            Control::Peer(_) => "Peer",
            Control::Path(_) => "Path",
            Control::Ack(_) => "Ack",
        }
    }
}

/// Encodes one length-prefixed postcard message.
pub(crate) fn encode<T: Serialize>(msg: &T) -> Bytes {
    let out = vec![0u8; LEN_PREFIX];
    // postcard only fails on serializer errors that our plain data types cannot produce.
    match postcard::to_extend(msg, out) {
        Ok(mut v) => {
            let len = (v.len() - LEN_PREFIX) as u32;
            v[..LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
            Bytes::from(v)
        }
        Err(_) => Bytes::new(),
    }
}

/// A stream framing violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FramingError {
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
}

/// Splits a byte stream into length-prefixed frames.
///
/// Memory grows only with the bytes that actually arrive, never with the
/// length a frame claims: a remote that announces a 64 MiB message and sends
/// ten bytes costs ten bytes. A frame claiming more than `max` is an error as
/// soon as its length prefix is complete.
#[derive(Debug)]
pub(crate) struct FrameReader {
    buf: BytesMut,
    max: usize,
}

impl FrameReader {
    pub(crate) fn new(max: usize) -> Self {
        Self { buf: BytesMut::new(), max }
    }

    /// Changes the largest frame accepted (once the remote is admitted).
    pub(crate) fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Appends received stream bytes.
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, if one has arrived.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Bytes>, FramingError> {
        if self.buf.len() < LEN_PREFIX {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > self.max {
            return Err(FramingError::TooLarge { len, max: self.max });
        }
        if self.buf.len() < LEN_PREFIX + len {
            return Ok(None);
        }
        self.buf.advance(LEN_PREFIX);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Bytes buffered but not yet returned as frames.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Bytes of memory reserved for the buffer (at least [`Self::buffered`]).
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

// ----- wire forms of public types -------------------------------------------
//
// Public types carry no serde derive. Each one a message carries has a
// mirror here that fixes its encoding (postcard encodes a variant by its
// index, so a mirror's variant order is the protocol), converted at the
// message field by `#[serde(with)]`. Renaming or reordering a public
// variant cannot change the wire, and a new one does not compile until its
// encoding is chosen here.

/// Generates the `#[serde(with)]` module for public type `$public` through
/// its mirror `$wire` (`From<&$public>` and `From<$wire>` both ways).
macro_rules! wire_form {
    ($module:ident, $public:ty, $wire:ty) => {
        mod $module {
            use super::*;
            pub(super) fn serialize<S: serde::Serializer>(v: &$public, s: S) -> Result<S::Ok, S::Error> {
                <$wire>::from(v).serialize(s)
            }
            pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<$public, D::Error> {
                <$wire>::deserialize(d).map(Into::into)
            }
        }
    };
}

wire_form!(wire_path, PathKind, WirePath);
wire_form!(wire_addrs, PeerAddrs, WireAddrs);
wire_form!(wire_master, MasterInfo, WireMaster);
wire_form!(wire_refuse, RefuseReason, WireRefuse);

#[derive(Serialize, Deserialize)]
enum WirePath {
    Direct,
    Punched,
    Relayed { via: NodeId },
}

impl From<&PathKind> for WirePath {
    fn from(p: &PathKind) -> Self {
        match *p {
            PathKind::Direct => Self::Direct,
            PathKind::Punched => Self::Punched,
            PathKind::Relayed { via } => Self::Relayed { via },
        }
    }
}

impl From<WirePath> for PathKind {
    fn from(p: WirePath) -> Self {
        match p {
            WirePath::Direct => Self::Direct,
            WirePath::Punched => Self::Punched,
            WirePath::Relayed { via } => Self::Relayed { via },
        }
    }
}

#[derive(Serialize, Deserialize)]
struct WireAddrs {
    local: Vec<SocketAddr>,
    observed: Vec<SocketAddr>,
}

impl From<&PeerAddrs> for WireAddrs {
    fn from(a: &PeerAddrs) -> Self {
        Self { local: a.local.clone(), observed: a.observed.clone() }
    }
}

impl From<WireAddrs> for PeerAddrs {
    fn from(a: WireAddrs) -> Self {
        Self { local: a.local, observed: a.observed }
    }
}

#[derive(Serialize, Deserialize)]
enum WireBasis {
    Solo,
    Eldest,
    Raft,
}

#[derive(Serialize, Deserialize)]
struct WireMaster {
    master: Option<NodeId>,
    basis: Option<WireBasis>,
    term: u64,
    epoch: u64,
}

impl From<&MasterInfo> for WireMaster {
    fn from(m: &MasterInfo) -> Self {
        let basis = m.basis.map(|b| match b {
            MasterBasis::Solo => WireBasis::Solo,
            MasterBasis::Eldest => WireBasis::Eldest,
            MasterBasis::Raft => WireBasis::Raft,
        });
        Self { master: m.master, basis, term: m.term, epoch: m.epoch }
    }
}

impl From<WireMaster> for MasterInfo {
    fn from(m: WireMaster) -> Self {
        let basis = m.basis.map(|b| match b {
            WireBasis::Solo => MasterBasis::Solo,
            WireBasis::Eldest => MasterBasis::Eldest,
            WireBasis::Raft => MasterBasis::Raft,
        });
        Self { master: m.master, basis, term: m.term, epoch: m.epoch }
    }
}

#[derive(Serialize, Deserialize)]
enum WireRefuse {
    ProtocolVersion { ours: u32, theirs: u32 },
    Duplicate,
    Admission(WireAdmission),
}

#[derive(Serialize, Deserialize)]
enum WireMode {
    Open,
    SharedSecret,
    Token,
}

#[derive(Serialize, Deserialize)]
enum WireCredential {
    None,
    SecretProof,
    Token,
}

#[derive(Serialize, Deserialize)]
enum WireAdmission {
    CredentialRequired { required: WireMode, presented: WireCredential },
    BadProof,
    UntrustedIssuer,
    BadSignature,
    TokenForOtherNode { token_for: NodeId },
    WrongRole,
    Expired { expired_unix: u64, now_unix: u64 },
    Exporter,
}

impl From<&RefuseReason> for WireRefuse {
    fn from(r: &RefuseReason) -> Self {
        match r {
            RefuseReason::ProtocolVersion { ours, theirs } => {
                Self::ProtocolVersion { ours: *ours, theirs: *theirs }
            }
            RefuseReason::Duplicate => Self::Duplicate,
            RefuseReason::Admission(e) => Self::Admission(WireAdmission::from(e)),
        }
    }
}

impl From<WireRefuse> for RefuseReason {
    fn from(r: WireRefuse) -> Self {
        match r {
            WireRefuse::ProtocolVersion { ours, theirs } => Self::ProtocolVersion { ours, theirs },
            WireRefuse::Duplicate => Self::Duplicate,
            WireRefuse::Admission(e) => Self::Admission(e.into()),
        }
    }
}

impl From<&AdmissionError> for WireAdmission {
    fn from(e: &AdmissionError) -> Self {
        match *e {
            AdmissionError::CredentialRequired { required, presented } => Self::CredentialRequired {
                required: match required {
                    AdmissionMode::Open => WireMode::Open,
                    AdmissionMode::SharedSecret => WireMode::SharedSecret,
                    AdmissionMode::Token => WireMode::Token,
                },
                presented: match presented {
                    CredentialKind::None => WireCredential::None,
                    CredentialKind::SecretProof => WireCredential::SecretProof,
                    CredentialKind::Token => WireCredential::Token,
                },
            },
            AdmissionError::BadProof => Self::BadProof,
            AdmissionError::UntrustedIssuer => Self::UntrustedIssuer,
            AdmissionError::BadSignature => Self::BadSignature,
            AdmissionError::TokenForOtherNode { token_for } => Self::TokenForOtherNode { token_for },
            AdmissionError::WrongRole => Self::WrongRole,
            AdmissionError::Expired { expired_unix, now_unix } => Self::Expired { expired_unix, now_unix },
            AdmissionError::Exporter => Self::Exporter,
        }
    }
}

impl From<WireAdmission> for AdmissionError {
    fn from(e: WireAdmission) -> Self {
        match e {
            WireAdmission::CredentialRequired { required, presented } => Self::CredentialRequired {
                required: match required {
                    WireMode::Open => AdmissionMode::Open,
                    WireMode::SharedSecret => AdmissionMode::SharedSecret,
                    WireMode::Token => AdmissionMode::Token,
                },
                presented: match presented {
                    WireCredential::None => CredentialKind::None,
                    WireCredential::SecretProof => CredentialKind::SecretProof,
                    WireCredential::Token => CredentialKind::Token,
                },
            },
            WireAdmission::BadProof => Self::BadProof,
            WireAdmission::UntrustedIssuer => Self::UntrustedIssuer,
            WireAdmission::BadSignature => Self::BadSignature,
            WireAdmission::TokenForOtherNode { token_for } => Self::TokenForOtherNode { token_for },
            WireAdmission::WrongRole => Self::WrongRole,
            WireAdmission::Expired { expired_unix, now_unix } => Self::Expired { expired_unix, now_unix },
            WireAdmission::Exporter => Self::Exporter,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_round_trip() {
        let hello = Control::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            name: "alice".into(),
            incarnation: 7,
            uptime_ms: 1234,
            credential: Credential::None,
            addrs: vec!["192.0.2.1:4433".parse().unwrap()],
            join: true,
            lookup: false,
            nonce: 9,
        });
        let bytes = encode(&hello);
        let mut r = FrameReader::new(MAX_CONTROL_MESSAGE);
        // Feed byte by byte: frames must survive arbitrary chunking.
        for b in bytes.iter() {
            r.push(&[*b]);
        }
        let frame = r.next_frame().unwrap().unwrap();
        assert_eq!(postcard::from_bytes::<Control>(&frame).unwrap(), hello);
        assert_eq!(r.next_frame().unwrap(), None);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn claimed_lengths_reserve_nothing() {
        let mut r = FrameReader::new(64 << 20);
        r.push(&(64u32 << 20).to_be_bytes());
        r.push(&[0; 10]);
        assert_eq!(r.next_frame(), Ok(None));
        assert!(r.capacity() < 4096, "reserved {} bytes for a claim", r.capacity());
    }

    #[test]
    fn oversized_frames_are_rejected() {
        let mut r = FrameReader::new(10);
        r.push(&100u32.to_be_bytes());
        assert_eq!(r.next_frame(), Err(FramingError::TooLarge { len: 100, max: 10 }));
    }

    #[test]
    fn garbage_control_messages_are_errors() {
        for bytes in [&[0xffu8, 0xff, 0xff][..], &[], &[9, 9, 9, 9, 9, 9]] {
            assert!(postcard::from_bytes::<Control>(bytes).is_err());
        }
    }
}
