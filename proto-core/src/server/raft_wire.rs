//! The wire encoding of Raft messages between servers, and the checks every
//! received message passes before raft-rs sees it.
//!
//! # Why not protobuf
//!
//! raft-rs speaks protobuf (`eraftpb`), and protobuf 2.x recurses without
//! bound on crafted unknown fields and groups (RUSTSEC-2024-0437): a few
//! kilobytes from a hostile server would overflow the stack. So the network
//! never carries protobuf. [`WireMsg`] mirrors `eraftpb::Message` field by
//! field — every field raft-rs 0.7 reads — as a flat, non-recursive postcard
//! struct whose lists and byte strings have caps checked while decoding
//! ([`Capped`]). Membership changes travel as a structured value
//! ([`WireConfChange`]) that the receiver re-encodes with protobuf's
//! *serializer* into `Entry::data`; protobuf therefore only ever parses bytes
//! this process produced.
//!
//! # Why check
//!
//! raft-rs trusts its peers: a number of inconsistent messages reach a
//! `fatal!`/`panic!`/`assert!`, an index out of bounds or an integer
//! overflow. Where the embedding builds with `panic = "abort"`, a
//! `catch_unwind` cannot save the process. [`check`] rejects, against the
//! receiver's own state, every message that could reach one of them (the
//! panic site is named next to each rule), and everything else this code
//! never sends. Each rule only rejects what a correct server never sends, so
//! honest traffic is never lost; the unit tests run honest clusters and
//! assert exactly that.

use crate::identity::NodeId;
use protobuf::Message as _;
use raft::prelude::*;
use serde::de::{Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;

/// Largest encoded Raft message accepted: a snapshot with the largest
/// store image, inside one server-to-server control message. raft-rs packs
/// at most `max_size_per_msg` (64 KiB) of entries into one append — or one
/// entry, if it is larger — so appends stay far below.
pub(crate) const MAX_WIRE_BYTES: usize = crate::proto::MAX_CONTROL_MESSAGE - 64 * 1024;
/// Largest store image a snapshot carries.
pub(crate) const MAX_SNAPSHOT_DATA: usize = MAX_WIRE_BYTES - 64 * 1024;
/// Most entries in one message: 64 KiB of empty entries at raft-rs' 12
/// accounted bytes each is 5,462 entries.
pub(crate) const MAX_ENTRIES: usize = 8192;
/// Largest `data` of a normal entry: empty (leader no-ops) or one store
/// command (at most `MAX_REQUEST_LEN` plus the client, sequence numbers
/// and the request's own framing).
pub(crate) const MAX_ENTRY_DATA: usize = crate::store::MAX_REQUEST_LEN + 1024;
/// Largest context (of a message, an entry or a conf change). Ours are
/// empty, `CampaignTransfer`, or one encoded [`Members`] row (< 40 bytes).
pub(crate) const MAX_CONTEXT: usize = 256;
/// Most single changes in one conf change while decoding (we send one).
pub(crate) const MAX_CHANGES: usize = 8;
/// Most IDs in each list of a snapshot's conf state.
pub(crate) const MAX_MEMBERS: usize = 1024;
/// Bound on every term and index. A group reaching it would have held one
/// election per millisecond for 8,900 years; keeping far below `u64::MAX`
/// means raft-rs' unchecked `+ 1`s (next index, next term) cannot overflow.
pub(crate) const LIMIT: u64 = 1 << 48;

/// One membership change carried in a conf change's context, so every member
/// learns which node a Raft ID belongs to.
pub(crate) type Members = Vec<(u64, NodeId)>;

/// A list that refuses, while decoding, to hold more than `N` elements, so
/// a length prefix can neither make us allocate nor loop past the cap.
/// Byte strings are `Capped<u8, N>` (postcard writes them as length + bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Capped<T, const N: usize>(pub(crate) Vec<T>);

impl<T, const N: usize> Capped<T, N> {
    /// Wraps `v` if it fits under the cap.
    pub(crate) fn new(v: Vec<T>) -> Option<Self> {
        (v.len() <= N).then_some(Self(v))
    }
}

impl<T: Serialize, const N: usize> Serialize for Capped<T, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(&self.0)
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Capped<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T, const N: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for V<T, N> {
            type Value = Capped<T, N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a list of at most {N} elements")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let hint = seq.size_hint().unwrap_or(0);
                if hint > N {
                    return Err(A::Error::invalid_length(hint, &self));
                }
                // The prefix is the sender's claim: reserve little up front.
                let mut v = Vec::with_capacity(hint.min(64));
                while let Some(x) = seq.next_element()? {
                    if v.len() == N {
                        return Err(A::Error::invalid_length(N + 1, &self));
                    }
                    v.push(x);
                }
                Ok(Capped(v))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// `eraftpb::MessageType`, in protobuf order (variant index = protobuf number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WireKind {
    /// `MsgHup` (local: start an election).
    Hup,
    /// `MsgBeat` (local: send heartbeats).
    Beat,
    /// `MsgPropose` (a proposal, forwarded by followers; never sent here).
    Propose,
    /// `MsgAppend`: entries after an anchor, and the leader's commit.
    Append,
    /// `MsgAppendResponse`: a follower's acknowledgement or rejection.
    AppendResponse,
    /// `MsgRequestVote`.
    RequestVote,
    /// `MsgRequestVoteResponse`.
    RequestVoteResponse,
    /// `MsgSnapshot`: the leader's snapshot for a follower too far behind.
    Snapshot,
    /// `MsgHeartbeat`.
    Heartbeat,
    /// `MsgHeartbeatResponse`.
    HeartbeatResponse,
    /// `MsgUnreachable` (local report).
    Unreachable,
    /// `MsgSnapStatus` (local report).
    SnapStatus,
    /// `MsgCheckQuorum` (local).
    CheckQuorum,
    /// `MsgTransferLeader` (a request to the leader; never sent here).
    TransferLeader,
    /// `MsgTimeoutNow`: the leader tells its chosen successor to campaign.
    TimeoutNow,
    /// `MsgReadIndex` (never used here).
    ReadIndex,
    /// `MsgReadIndexResp` (never used here).
    ReadIndexResp,
    /// `MsgRequestPreVote`.
    RequestPreVote,
    /// `MsgRequestPreVoteResponse`.
    RequestPreVoteResponse,
}

impl From<MessageType> for WireKind {
    fn from(t: MessageType) -> Self {
        use MessageType as M;
        match t {
            M::MsgHup => Self::Hup,
            M::MsgBeat => Self::Beat,
            M::MsgPropose => Self::Propose,
            M::MsgAppend => Self::Append,
            M::MsgAppendResponse => Self::AppendResponse,
            M::MsgRequestVote => Self::RequestVote,
            M::MsgRequestVoteResponse => Self::RequestVoteResponse,
            M::MsgSnapshot => Self::Snapshot,
            M::MsgHeartbeat => Self::Heartbeat,
            M::MsgHeartbeatResponse => Self::HeartbeatResponse,
            M::MsgUnreachable => Self::Unreachable,
            M::MsgSnapStatus => Self::SnapStatus,
            M::MsgCheckQuorum => Self::CheckQuorum,
            M::MsgTransferLeader => Self::TransferLeader,
            M::MsgTimeoutNow => Self::TimeoutNow,
            M::MsgReadIndex => Self::ReadIndex,
            M::MsgReadIndexResp => Self::ReadIndexResp,
            M::MsgRequestPreVote => Self::RequestPreVote,
            M::MsgRequestPreVoteResponse => Self::RequestPreVoteResponse,
        }
    }
}

impl From<WireKind> for MessageType {
    fn from(k: WireKind) -> Self {
        use WireKind as K;
        match k {
            K::Hup => Self::MsgHup,
            K::Beat => Self::MsgBeat,
            K::Propose => Self::MsgPropose,
            K::Append => Self::MsgAppend,
            K::AppendResponse => Self::MsgAppendResponse,
            K::RequestVote => Self::MsgRequestVote,
            K::RequestVoteResponse => Self::MsgRequestVoteResponse,
            K::Snapshot => Self::MsgSnapshot,
            K::Heartbeat => Self::MsgHeartbeat,
            K::HeartbeatResponse => Self::MsgHeartbeatResponse,
            K::Unreachable => Self::MsgUnreachable,
            K::SnapStatus => Self::MsgSnapStatus,
            K::CheckQuorum => Self::MsgCheckQuorum,
            K::TransferLeader => Self::MsgTransferLeader,
            K::TimeoutNow => Self::MsgTimeoutNow,
            K::ReadIndex => Self::MsgReadIndex,
            K::ReadIndexResp => Self::MsgReadIndexResp,
            K::RequestPreVote => Self::MsgRequestPreVote,
            K::RequestPreVoteResponse => Self::MsgRequestPreVoteResponse,
        }
    }
}

/// `eraftpb::ConfChangeType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WireChangeKind {
    /// `AddNode`: add a voter (or promote a learner).
    Voter,
    /// `RemoveNode`.
    Remove,
    /// `AddLearnerNode`.
    Learner,
}

/// `eraftpb::ConfChangeTransition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WireTransition {
    /// Simple protocol when possible (ours: one change, never joint).
    Auto,
    /// Joint consensus, left automatically.
    Implicit,
    /// Joint consensus, left by an explicit empty change.
    Explicit,
}

/// `eraftpb::ConfChangeSingle`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireChange {
    /// Add a voter, remove a member, or add a learner.
    pub(crate) kind: WireChangeKind,
    /// The Raft ID concerned.
    pub(crate) node_id: u64,
}

/// `eraftpb::ConfChangeV2`, structured instead of protobuf bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireConfChange {
    /// Joint consensus or not (we only ever send `Auto` with one change).
    pub(crate) transition: WireTransition,
    /// The changes.
    pub(crate) changes: Capped<WireChange, MAX_CHANGES>,
    /// Opaque to raft-rs; ours is one encoded [`Members`] row.
    pub(crate) context: Capped<u8, MAX_CONTEXT>,
}

/// What an entry holds: `Entry::entry_type` and `Entry::data` together.
/// There is no v1 `EntryConfChange`: raft-rs never creates one itself and
/// this code only proposes `ConfChangeV2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WirePayload {
    /// `EntryNormal` with its data (leader no-ops: empty).
    Normal(Capped<u8, MAX_ENTRY_DATA>),
    /// `EntryConfChangeV2`; the receiver re-encodes it into `Entry::data`.
    ConfChange(WireConfChange),
}

/// `eraftpb::Entry` (the deprecated `sync_log` is not read by raft-rs 0.7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireEntry {
    /// The term the entry was created in.
    pub(crate) term: u64,
    /// Its log index.
    pub(crate) index: u64,
    /// `Entry::context` (for conf changes raft-rs copies the proposal context here).
    pub(crate) context: Capped<u8, MAX_CONTEXT>,
    /// Type and data.
    pub(crate) payload: WirePayload,
}

/// `eraftpb::ConfState`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireConfState {
    /// Voters (of the incoming configuration, when joint).
    pub(crate) voters: Capped<u64, MAX_MEMBERS>,
    /// Learners.
    pub(crate) learners: Capped<u64, MAX_MEMBERS>,
    /// Voters of the outgoing configuration (joint consensus only).
    pub(crate) voters_outgoing: Capped<u64, MAX_MEMBERS>,
    /// Learners once the joint configuration is left.
    pub(crate) learners_next: Capped<u64, MAX_MEMBERS>,
    /// Leave the joint configuration automatically.
    pub(crate) auto_leave: bool,
}

/// `eraftpb::Snapshot` with its metadata and data (the store's image,
/// which raft-rs never reads; `Consensus::step` checks that it decodes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireSnapshot {
    /// Index of the last entry the snapshot covers.
    pub(crate) index: u64,
    /// Term of that entry.
    pub(crate) term: u64,
    /// Configuration at that index.
    pub(crate) conf: WireConfState,
    /// The store's image at that index.
    pub(crate) data: Capped<u8, MAX_SNAPSHOT_DATA>,
}

/// `eraftpb::Message`: the mirror that goes on the wire. `priority` is the
/// effective priority (raft-rs reads `priority`, else `deprecated_priority`);
/// decoding restores both the way raft-rs sets them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireMsg {
    /// `msg_type`.
    pub(crate) kind: WireKind,
    /// Recipient's Raft ID.
    pub(crate) to: u64,
    /// Sender's Raft ID.
    pub(crate) from: u64,
    /// Sender's term (0 only for raft-rs' local messages).
    pub(crate) term: u64,
    /// Appends: term of the anchor entry; rejections: term at the hint;
    /// votes: term of the candidate's last entry.
    pub(crate) log_term: u64,
    /// Appends: the anchor index; responses: the acknowledged or rejected
    /// index; votes: the candidate's last index.
    pub(crate) index: u64,
    /// Appends: the entries after the anchor.
    pub(crate) entries: Capped<WireEntry, MAX_ENTRIES>,
    /// The sender's commit index (heartbeats: bounded by our match).
    pub(crate) commit: u64,
    /// Term of the entry at `commit` (votes and vote responses).
    pub(crate) commit_term: u64,
    /// `MsgSnapshot` only.
    pub(crate) snapshot: Option<WireSnapshot>,
    /// A follower asking for a snapshot (never done here).
    pub(crate) request_snapshot: u64,
    /// Responses: refused.
    pub(crate) reject: bool,
    /// Append rejections: where the follower suggests probing next.
    pub(crate) reject_hint: u64,
    /// Vote requests of a leader transfer: `CampaignTransfer`.
    pub(crate) context: Capped<u8, MAX_CONTEXT>,
    /// Election priority (never set here).
    pub(crate) priority: i64,
}

/// Why a Raft message was dropped before reaching raft-rs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reject {
    /// Longer than [`MAX_WIRE_BYTES`].
    Oversized,
    /// Not a well-formed encoding: bad tag, a list over its cap, trailing bytes.
    Malformed,
    /// A type raft-rs only generates for itself (`MsgHup`, `MsgBeat`, ...).
    LocalOnly,
    /// A type this code never sends: forwarded proposals, leader-transfer
    /// requests, read-index traffic.
    NeverSent,
    /// `from` is not the link's Raft ID, or is 0, or is ours.
    Sender,
    /// Term 0 (raft-rs' marker for local messages) or beyond [`LIMIT`].
    Term,
    /// A term or index field beyond [`LIMIT`].
    Range,
    /// A field set that this message type never carries.
    StrayField,
    /// `log_term` inconsistent with `index` or `term`.
    LogPosition,
    /// Append entries not consecutive from `index + 1`, with impossible
    /// terms, or with a payload we never produce.
    Entries,
    /// A heartbeat committing past our last index.
    CommitBeyondLog,
    /// A response acknowledging past the leader's last index.
    AckBeyondLog,
    /// A snapshot raft-rs cannot restore, or one that rewrites our commit.
    Snapshot,
    /// `MsgTimeoutNow` not from our current leader in our term.
    NotLeader,
}

impl WireMsg {
    /// The mirror of a message raft-rs wants sent; `None` for what the wire
    /// cannot carry (never produced by this code: v1 conf changes, snapshot
    /// data, lists over their caps).
    pub(crate) fn from_message(m: &Message) -> Option<Self> {
        let entries = m.entries.iter().map(WireEntry::from_entry).collect::<Option<Vec<_>>>()?;
        let snapshot =
            if m.has_snapshot() { Some(WireSnapshot::from_snapshot(m.get_snapshot())?) } else { None };
        let priority = if m.priority != 0 {
            m.priority
        } else {
            i64::try_from(m.deprecated_priority).unwrap_or(i64::MAX)
        };
        Some(Self {
            kind: m.get_msg_type().into(),
            to: m.to,
            from: m.from,
            term: m.term,
            log_term: m.log_term,
            index: m.index,
            entries: Capped::new(entries)?,
            commit: m.commit,
            commit_term: m.commit_term,
            snapshot,
            request_snapshot: m.request_snapshot,
            reject: m.reject,
            reject_hint: m.reject_hint,
            context: Capped::new(m.context.to_vec())?,
            priority,
        })
    }

    /// Back to the protobuf struct raft-rs steps. Conf changes are encoded
    /// with protobuf's serializer; `None` only if that fails.
    pub(crate) fn into_message(self) -> Option<Message> {
        let mut m = Message::default();
        m.set_msg_type(self.kind.into());
        m.to = self.to;
        m.from = self.from;
        m.term = self.term;
        m.log_term = self.log_term;
        m.index = self.index;
        let entries = self.entries.0.into_iter().map(WireEntry::into_entry).collect::<Option<Vec<_>>>()?;
        m.set_entries(entries.into());
        m.commit = self.commit;
        m.commit_term = self.commit_term;
        if let Some(s) = self.snapshot {
            m.set_snapshot(s.into_snapshot());
        }
        m.request_snapshot = self.request_snapshot;
        m.reject = self.reject;
        m.reject_hint = self.reject_hint;
        m.context = self.context.0.into();
        m.priority = self.priority;
        // raft-rs fills the deprecated field only for positive priorities.
        m.deprecated_priority = u64::try_from(self.priority).unwrap_or(0);
        Some(m)
    }

    /// The bytes on the wire.
    pub(crate) fn encode(&self) -> Option<Vec<u8>> {
        postcard::to_allocvec(self).ok()
    }

    /// Decodes bytes from the network. Bounded: no recursion, every list
    /// capped, and the whole input capped at [`MAX_WIRE_BYTES`].
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Reject> {
        if bytes.len() > MAX_WIRE_BYTES {
            return Err(Reject::Oversized);
        }
        match postcard::take_from_bytes::<Self>(bytes) {
            Ok((m, [])) => Ok(m),
            _ => Err(Reject::Malformed),
        }
    }
}

/// Encodes a message raft-rs wants sent; `None` for a message no receiver
/// would accept (see [`check`]) or that the wire cannot carry, which this
/// code never produces.
pub(crate) fn encode(m: &Message) -> Option<Vec<u8>> {
    let w = WireMsg::from_message(m)?;
    accepted_kind(w.kind).ok()?;
    w.encode()
}

impl WireEntry {
    pub(crate) fn from_entry(e: &Entry) -> Option<Self> {
        let payload = match e.get_entry_type() {
            EntryType::EntryNormal => WirePayload::Normal(Capped::new(e.data.to_vec())?),
            EntryType::EntryConfChangeV2 => {
                // Safe to parse: every entry in our log was built by this
                // process — proposed here, or re-encoded by `into_entry`.
                let cc = ConfChangeV2::parse_from_bytes(&e.data).ok()?;
                WirePayload::ConfChange(WireConfChange {
                    transition: match cc.get_transition() {
                        ConfChangeTransition::Auto => WireTransition::Auto,
                        ConfChangeTransition::Implicit => WireTransition::Implicit,
                        ConfChangeTransition::Explicit => WireTransition::Explicit,
                    },
                    changes: Capped::new(
                        cc.changes
                            .iter()
                            .map(|c| WireChange {
                                kind: match c.get_change_type() {
                                    ConfChangeType::AddNode => WireChangeKind::Voter,
                                    ConfChangeType::RemoveNode => WireChangeKind::Remove,
                                    ConfChangeType::AddLearnerNode => WireChangeKind::Learner,
                                },
                                node_id: c.node_id,
                            })
                            .collect(),
                    )?,
                    context: Capped::new(cc.context.to_vec())?,
                })
            }
            EntryType::EntryConfChange => return None,
        };
        Some(Self { term: e.term, index: e.index, context: Capped::new(e.context.to_vec())?, payload })
    }

    pub(crate) fn into_entry(self) -> Option<Entry> {
        let mut e = Entry {
            term: self.term,
            index: self.index,
            context: self.context.0.into(),
            ..Default::default()
        };
        match self.payload {
            WirePayload::Normal(data) => {
                e.set_entry_type(EntryType::EntryNormal);
                e.data = data.0.into();
            }
            WirePayload::ConfChange(w) => {
                let mut cc = ConfChangeV2::default();
                cc.set_transition(match w.transition {
                    WireTransition::Auto => ConfChangeTransition::Auto,
                    WireTransition::Implicit => ConfChangeTransition::Implicit,
                    WireTransition::Explicit => ConfChangeTransition::Explicit,
                });
                for c in w.changes.0 {
                    let mut s = ConfChangeSingle { node_id: c.node_id, ..Default::default() };
                    s.set_change_type(match c.kind {
                        WireChangeKind::Voter => ConfChangeType::AddNode,
                        WireChangeKind::Remove => ConfChangeType::RemoveNode,
                        WireChangeKind::Learner => ConfChangeType::AddLearnerNode,
                    });
                    cc.changes.push(s);
                }
                cc.context = w.context.0.into();
                e.set_entry_type(EntryType::EntryConfChangeV2);
                e.data = cc.write_to_bytes().ok()?.into();
            }
        }
        Some(e)
    }
}

impl WireSnapshot {
    pub(crate) fn from_snapshot(s: &Snapshot) -> Option<Self> {
        let meta = s.get_metadata();
        let cs = meta.get_conf_state();
        Some(Self {
            index: meta.index,
            term: meta.term,
            conf: WireConfState {
                voters: Capped::new(cs.voters.clone())?,
                learners: Capped::new(cs.learners.clone())?,
                voters_outgoing: Capped::new(cs.voters_outgoing.clone())?,
                learners_next: Capped::new(cs.learners_next.clone())?,
                auto_leave: cs.auto_leave,
            },
            data: Capped::new(s.data.to_vec())?,
        })
    }

    pub(crate) fn into_snapshot(self) -> Snapshot {
        let mut s = Snapshot::default();
        let meta = s.mut_metadata();
        meta.index = self.index;
        meta.term = self.term;
        let cs = meta.mut_conf_state();
        cs.voters = self.conf.voters.0;
        cs.learners = self.conf.learners.0;
        cs.voters_outgoing = self.conf.voters_outgoing.0;
        cs.learners_next = self.conf.learners_next.0;
        cs.auto_leave = self.conf.auto_leave;
        s.data = self.data.0.into();
        s
    }
}

/// What [`check`] needs to know about the receiver's Raft state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Local {
    /// Our Raft ID.
    pub(crate) id: u64,
    /// Our current term.
    pub(crate) term: u64,
    /// Whether we lead.
    pub(crate) leader: bool,
    /// The leader we follow (0: none known).
    pub(crate) leader_id: u64,
    /// Index of our last log entry.
    pub(crate) last_index: u64,
    /// Our commit index.
    pub(crate) committed: u64,
    /// Term of the entry at `committed`, if our log still has it.
    pub(crate) committed_term: Option<u64>,
}

/// Types a server accepts from the network: exactly those raft-rs sends to
/// peers on its own. The others either are local-only (raft-rs' own
/// `is_local_msg`) or are forwarded proposals, leader-transfer requests and
/// read-index traffic, which this code never generates — and several of
/// which panic: an empty `MsgPropose` at a leader (`fatal!("stepped empty
/// MsgProp")`), a `MsgPropose`/`MsgTransferLeader`/`MsgReadIndex` with a term
/// at a follower (forwarded with the term set: `fatal!` in `send`), a
/// `MsgReadIndex` without entries (`entries[0]` out of bounds); a
/// `MsgPropose` with entries would append whatever it carries, membership
/// changes included, to the leader's log.
fn accepted_kind(kind: WireKind) -> Result<(), Reject> {
    use WireKind as K;
    match kind {
        K::Hup | K::Beat | K::Unreachable | K::SnapStatus | K::CheckQuorum => Err(Reject::LocalOnly),
        K::Propose | K::TransferLeader | K::ReadIndex | K::ReadIndexResp => Err(Reject::NeverSent),
        K::Append
        | K::AppendResponse
        | K::RequestVote
        | K::RequestVoteResponse
        | K::RequestPreVote
        | K::RequestPreVoteResponse
        | K::Snapshot
        | K::Heartbeat
        | K::HeartbeatResponse
        | K::TimeoutNow => Ok(()),
    }
}

/// Decides whether `m`, received on the link of Raft ID `from`, may be
/// stepped by a node in state `l`. Every rejection is a message a correct
/// server never sends; the comments name what it would reach in raft-rs
/// 0.7 (`raft.rs`, `raft_log.rs`, `log_unstable.rs`, `tracker/progress.rs`).
/// The caller has already dropped messages addressed to another Raft ID.
/// Everything is dropped rather than clamped: a sender caught in one lie is
/// not trusted for the rest of the message (its term, its leadership).
pub(crate) fn check(m: &WireMsg, from: u64, l: &Local) -> Result<(), Reject> {
    use WireKind as K;
    accepted_kind(m.kind)?;
    // The link already authenticated the server; a message from another ID
    // (or from ours) would let it act as a different member.
    if m.from != from || from == 0 || from == l.id {
        return Err(Reject::Sender);
    }
    // raft-rs treats term 0 as a local message and skips every term check:
    // a vote request at term 0 is answered at term 0 (`fatal!` "term should
    // be set" in `send`), a heartbeat at term 0 commits without a leader.
    // Huge terms would overflow `term + 1` at our next campaign.
    if m.term == 0 || m.term > LIMIT {
        return Err(Reject::Term);
    }
    // Huge indexes overflow `n + 1` in `Progress::maybe_update` and
    // `match_hint + 1` in `maybe_decr_to` (leader), `index + 1` in
    // `Unstable::restore` (follower).
    if [m.log_term, m.index, m.commit, m.commit_term, m.reject_hint].iter().any(|v| *v > LIMIT) {
        return Err(Reject::Range);
    }
    // Fields this code never sets. A request_snapshot makes the leader's
    // `MemStorage::snapshot` fabricate a snapshot at that index and send it
    // on; a negative priority makes a term-0 joiner reject a pre-vote with
    // term 0 (`fatal!` in `send`). Heartbeats carry read-index contexts
    // (ours are 8 bytes); raft-rs echoes them and looks them up in its own
    // queue of pending reads, where an unknown one matches nothing.
    let context_ok = m.context.0.is_empty()
        || (m.kind == K::RequestVote && m.context.0.as_slice() == raft::CAMPAIGN_TRANSFER)
        || (matches!(m.kind, K::Heartbeat | K::HeartbeatResponse) && m.context.0.len() == 8);
    let reject_ok =
        !m.reject || matches!(m.kind, K::AppendResponse | K::RequestVoteResponse | K::RequestPreVoteResponse);
    if m.request_snapshot != 0
        || m.priority != 0
        || !context_ok
        || !reject_ok
        || (m.kind != K::Append && !m.entries.0.is_empty())
        || ((m.kind == K::Snapshot) != m.snapshot.is_some())
    {
        return Err(Reject::StrayField);
    }
    // raft-rs acts on a leader's message (append, heartbeat, snapshot) only
    // from its term on; an older one just gets a reply carrying our term.
    // Rules against our own log apply only to messages it acts on, so a
    // correct but stale leader still learns that it is stale.
    let acted_on = m.term >= l.term;
    match m.kind {
        K::Append => check_append(m, l, acted_on),
        K::Heartbeat => {
            // `handle_heartbeat` → `RaftLog::commit_to`: `fatal!` past the
            // last index. A leader attaches min(our match, its commit).
            if acted_on && m.commit > l.last_index { Err(Reject::CommitBeyondLog) } else { Ok(()) }
        }
        K::Snapshot => check_snapshot(m, l, acted_on),
        K::AppendResponse | K::HeartbeatResponse => {
            // A rejection's hint (`handle_append_entries`) is at most the
            // probed index.
            if m.reject && m.reject_hint > m.index {
                return Err(Reject::LogPosition);
            }
            // Only a leader at the same term acts on responses. A follower
            // acknowledges and commits only entries its leader sent; an ack
            // beyond them would become `matched` and `next_idx` (near
            // `u64::MAX`, `n + 1` overflows in `Progress::maybe_update`),
            // make a learner look caught up (and get promoted) when it is
            // not, and stall its replication behind a term-0 anchor.
            let acts = l.leader && m.term == l.term;
            if acts && (m.index > l.last_index || m.commit > l.last_index) {
                return Err(Reject::AckBeyondLog);
            }
            Ok(())
        }
        K::RequestVote | K::RequestPreVote => {
            // A candidate's log ends no later than the term it runs for, and
            // its commit is inside its log.
            if m.log_term > m.term || m.commit > m.index || m.commit_term > m.log_term {
                return Err(Reject::LogPosition);
            }
            Ok(())
        }
        // `maybe_commit_by_vote` only commits an index whose term matches
        // our log, so nothing more to check.
        K::RequestVoteResponse | K::RequestPreVoteResponse => Ok(()),
        K::TimeoutNow => {
            // Only our leader starts a transfer, and only once we acked its
            // log in its term; anyone else would just force an election (a
            // newer term included). An older one is ignored by raft-rs.
            if m.term < l.term || (m.term == l.term && from == l.leader_id) {
                Ok(())
            } else {
                Err(Reject::NotLeader)
            }
        }
        _ => Err(Reject::NeverSent),
    }
}

/// `MsgAppend`: the entries must be exactly those a leader appends after
/// `(index, log_term)`.
fn check_append(m: &WireMsg, l: &Local, acted_on: bool) -> Result<(), Reject> {
    // Only index 0 has term 0. `RaftLog::term` answers 0 for any index
    // past our log, so an anchor with log_term 0 "matches" there and
    // `maybe_append` then commits up to `min(commit, index + n)`, past our
    // last index: `fatal!` in `commit_to`.
    if (m.index == 0) != (m.log_term == 0) || m.log_term > m.term {
        return Err(Reject::LogPosition);
    }
    // An anchor at or after our commit comes from a leader holding our
    // committed entries, so its term there is at least ours at the commit
    // index. A lower one sends the rejection's hint search
    // (`find_conflict_by_term`) below our commit, down to the compacted
    // start of the log, where `term()` fails: `fatal!("term(..) must be
    // valid")`. (Anchors below our commit are answered without a search.)
    if acted_on && m.index >= l.committed && l.committed_term.is_none_or(|t| m.log_term < t) {
        return Err(Reject::LogPosition);
    }
    let mut prev_term = m.log_term;
    for (i, e) in m.entries.0.iter().enumerate() {
        // Non-consecutive entries make `find_conflict` report an index at or
        // below our commit (`fatal!` "conflict with committed entry", or
        // `conflict - (index + 1)` underflows) or a gap (`after < committed`
        // in `RaftLog::append`). Term 0 "matches" past our log like above.
        // Terms never decrease along a log and never exceed the leader's.
        let expected = m.index + 1 + i as u64;
        if e.index != expected || e.term == 0 || e.term < prev_term || e.term > m.term {
            return Err(Reject::Entries);
        }
        prev_term = e.term;
        if let WirePayload::ConfChange(cc) = &e.payload {
            check_conf_change(cc, &e.context.0)?;
        }
    }
    Ok(())
}

/// A membership change as this code proposes it: one change, no joint
/// consensus (which this code could neither leave — `apply_committed`
/// skips the empty leave-joint entry — nor snapshot), raft-rs' copy of the
/// context in the entry, and a context naming the node behind the ID.
fn check_conf_change(cc: &WireConfChange, entry_context: &[u8]) -> Result<(), Reject> {
    let [change] = cc.changes.0.as_slice() else { return Err(Reject::Entries) };
    if cc.transition != WireTransition::Auto || change.node_id == 0 || cc.context.0 != entry_context {
        return Err(Reject::Entries);
    }
    match postcard::from_bytes::<Members>(&cc.context.0) {
        Ok(members) if members.len() == 1 && members[0].0 == change.node_id => Ok(()),
        _ => Err(Reject::Entries),
    }
}

/// `MsgSnapshot`: restorable by `Raft::restore` and consistent with what we
/// committed.
fn check_snapshot(m: &WireMsg, l: &Local, acted_on: bool) -> Result<(), Reject> {
    let Some(s) = &m.snapshot else { return Err(Reject::StrayField) };
    // Index 0 is "no snapshot"; a huge index overflows `index + 1` in
    // `Unstable::restore`. Term 0 "matches" past our log, and `restore`
    // then fast-forwards with `commit_to(index)`: `fatal!`.
    if s.index == 0 || s.index > LIMIT || s.term == 0 || s.term > m.term {
        return Err(Reject::Snapshot);
    }
    // A snapshot at our commit index with another term would replace
    // committed entries (and `MemStorage::apply_snapshot` refuses it).
    if acted_on && s.index == l.committed && l.committed_term != Some(s.term) {
        return Err(Reject::Snapshot);
    }
    // `confchange::restore` rebuilds the configuration change by change:
    // no voters, joint states, IDs in both lists (`fatal!` "unable to
    // restore config" or "invalid restore") are refused. This code never
    // enters joint consensus, and the sender — the leader — is a voter of
    // its own configuration.
    let c = &s.conf;
    let mut ids: Vec<u64> = c.voters.0.iter().chain(&c.learners.0).copied().collect();
    ids.sort_unstable();
    let distinct = ids.windows(2).all(|w| w[0] != w[1]);
    if c.voters.0.is_empty()
        || !c.voters_outgoing.0.is_empty()
        || !c.learners_next.0.is_empty()
        || c.auto_leave
        || !distinct
        || ids.first() == Some(&0)
        || !c.voters.0.contains(&m.from)
    {
        return Err(Reject::Snapshot);
    }
    Ok(())
}
