//! The replicated key-value store of the server cluster: what a request
//! looks like to a user, what it answers, and the bounds it enforces.
//!
//! The state machine itself is in `machine.rs`; it is replicated by the
//! servers' Raft group (`server/raft.rs`), so every server applies the same
//! commands in the same order and holds the same data. The model is etcd
//! v3's: keys and values are bytes, every write that changes something gets
//! the next cluster-wide *revision*, every key carries the revision that
//! created it, the revision that last changed it and a version (changes
//! since creation), and a transaction compares keys and then runs one of two
//! branches atomically.
//!
//! The request types here are opaque builders ([`KvRequest::put`],
//! [`KvRequest::txn`], ...): their wire form is a private enum, so the
//! public API can grow without touching the encoding, and a transaction
//! cannot nest (decoding never recurses).

pub(crate) mod machine;
#[cfg(test)]
mod tests;

pub(crate) use machine::{Command, Store};

use serde::{Deserialize, Serialize};

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Longest value, in bytes.
pub const MAX_VALUE_LEN: usize = 32 * 1024;
/// Most comparisons, and most operations per branch, of one transaction.
pub const MAX_TXN_OPS: usize = 64;
/// Largest request, encoded (a request travels in one peer → server
/// control message, which is capped at 64 KiB).
pub const MAX_REQUEST_LEN: usize = 48 * 1024;
/// Most bytes one read returns: a larger result is cut at a key boundary
/// and says so (`more`), like a limit would.
pub const MAX_READ_LEN: usize = 1024 * 1024;
/// What the whole store may hold: keys, values, a fixed overhead per key
/// ([`KEY_OVERHEAD`]) and the answers kept for retried requests. Its
/// snapshot travels to a catching-up server in one message, which is what
/// bounds it for now.
pub const MAX_STORE_BYTES: usize = 4 * 1024 * 1024;
/// Shortest session TTL.
pub const MIN_SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest session TTL.
pub const MAX_SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(3600);
/// Sessions one peer may hold at once.
pub const MAX_SESSIONS_PER_PEER: usize = 64;

/// Bytes each key costs in [`MAX_STORE_BYTES`] beside its key and value
/// (its revisions and version, and the map's own bookkeeping).
pub const KEY_OVERHEAD: usize = 32;

/// A comparison operator of a transaction's condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CompareOp {
    /// The key's field equals the operand.
    Equal,
    /// The key's field differs from the operand.
    NotEqual,
    /// The key's field is less than the operand (bytes: lexicographically).
    Less,
    /// The key's field is greater than the operand.
    Greater,
}

/// The wire form of [`CompareOp`] (the variant order is the protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WireCmp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

impl From<CompareOp> for WireCmp {
    fn from(op: CompareOp) -> Self {
        match op {
            CompareOp::Equal => WireCmp::Equal,
            CompareOp::NotEqual => WireCmp::NotEqual,
            CompareOp::Less => WireCmp::Less,
            CompareOp::Greater => WireCmp::Greater,
        }
    }
}

/// Which keys an operation covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Range {
    /// Exactly this key.
    Key(Vec<u8>),
    /// Every key that starts with these bytes (empty: every key).
    Prefix(Vec<u8>),
}

impl Range {
    fn bytes(&self) -> &[u8] {
        match self {
            Range::Key(k) | Range::Prefix(k) => k,
        }
    }
}

/// What a comparison looks at, with its operand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Target {
    /// The value (a missing key compares false, whatever the operator).
    Value(Vec<u8>),
    /// Changes since creation (0: the key does not exist).
    Version(u64),
    /// The revision that created the key (0: missing).
    CreateRevision(u64),
    /// The revision that last changed the key (0: missing).
    ModRevision(u64),
}

/// One comparison of a transaction's condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Compare {
    pub(crate) key: Vec<u8>,
    pub(crate) op: WireCmp,
    pub(crate) target: Target,
}

/// An operation inside a transaction (never another transaction).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum TxnOp {
    Get {
        range: Range,
        limit: u32,
    },
    /// `session` 0: the key outlives every session.
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        session: u64,
    },
    Delete {
        range: Range,
    },
}

/// A request's wire form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Op {
    Get {
        range: Range,
        limit: u32,
    },
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        session: u64,
    },
    Delete {
        range: Range,
    },
    Txn {
        compare: Vec<Compare>,
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    },
    /// Opens a session owned by the requesting peer.
    SessionOpen {
        ttl_ms: u64,
    },
    /// Closes one of the requesting peer's sessions (its keys go with it).
    SessionClose {
        session: u64,
    },
}

/// A condition of a transaction ([`KvRequest::txn`]): one key's value,
/// version or revisions compared with an operand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvCompare(pub(crate) Compare);

impl KvCompare {
    /// Compares the key's value (a missing key fails every value comparison).
    pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, value: impl Into<Vec<u8>>) -> Self {
        Self(Compare { key: key.into(), op: op.into(), target: Target::Value(value.into()) })
    }

    /// Compares the key's version (changes since it was created; 0 when it
    /// does not exist).
    pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, version: u64) -> Self {
        Self(Compare { key: key.into(), op: op.into(), target: Target::Version(version) })
    }

    /// Compares the revision that created the key (0 when it does not exist).
    pub fn create_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: u64) -> Self {
        Self(Compare { key: key.into(), op: op.into(), target: Target::CreateRevision(revision) })
    }

    /// Compares the revision that last changed the key (0 when it does not exist).
    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: u64) -> Self {
        Self(Compare { key: key.into(), op: op.into(), target: Target::ModRevision(revision) })
    }

    /// True when the key exists (version > 0).
    pub fn exists(key: impl Into<Vec<u8>>) -> Self {
        Self::version(key, CompareOp::Greater, 0)
    }

    /// True when the key does not exist (version = 0): the "create if
    /// absent" condition.
    pub fn missing(key: impl Into<Vec<u8>>) -> Self {
        Self::version(key, CompareOp::Equal, 0)
    }
}

/// A request to the cluster's replicated store, built with the functions
/// below and handed to [`Node::kv`](crate::Node::kv).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvRequest(pub(crate) Op);

impl KvRequest {
    /// Reads one key.
    pub fn get(key: impl Into<Vec<u8>>) -> Self {
        Self(Op::Get { range: Range::Key(key.into()), limit: 0 })
    }

    /// Reads every key that starts with `prefix`, in key order (an empty
    /// prefix reads the whole store). Combine with [`KvRequest::limit`].
    pub fn get_prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Self(Op::Get { range: Range::Prefix(prefix.into()), limit: 0 })
    }

    /// Returns at most `n` entries (0: no limit). Only reads have a limit;
    /// on any other request this does nothing.
    pub fn limit(mut self, n: u32) -> Self {
        if let Op::Get { limit, .. } = &mut self.0 {
            *limit = n;
        }
        self
    }

    /// Writes `value` under `key`, creating or replacing it.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self(Op::Put { key: key.into(), value: value.into(), session: 0 })
    }

    /// Binds a put (or every put of a transaction) to one of this peer's
    /// sessions ([`KvRequest::session_open`]): the key is deleted when the
    /// session ends. Does nothing on other requests.
    pub fn with_session(mut self, id: u64) -> Self {
        match &mut self.0 {
            Op::Put { session, .. } => *session = id,
            Op::Txn { success, failure, .. } => {
                for op in success.iter_mut().chain(failure.iter_mut()) {
                    if let TxnOp::Put { session, .. } = op {
                        *session = id;
                    }
                }
            }
            _ => {}
        }
        self
    }

    /// Opens a session owned by this peer: it lives as long as the peer is
    /// connected to any server, and `ttl` longer (the servers keep it alive;
    /// the peer sends nothing for that). Keys put with
    /// [`KvRequest::with_session`] vanish when it ends, with watch events.
    /// The answer is [`KvResponse::SessionOpened`]. `ttl` is between
    /// [`MIN_SESSION_TTL`] and [`MAX_SESSION_TTL`].
    pub fn session_open(ttl: std::time::Duration) -> Self {
        Self(Op::SessionOpen { ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX) })
    }

    /// Closes one of this peer's sessions now; its keys are deleted
    /// ([`KvResponse::SessionClosed`]).
    pub fn session_close(id: u64) -> Self {
        Self(Op::SessionClose { session: id })
    }

    /// Deletes one key.
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Self(Op::Delete { range: Range::Key(key.into()) })
    }

    /// Deletes every key that starts with `prefix`.
    pub fn delete_prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Self(Op::Delete { range: Range::Prefix(prefix.into()) })
    }

    /// A transaction: if every comparison holds, runs `success`, otherwise
    /// `failure`, atomically and under one revision. The operations are
    /// gets, puts and deletes (a transaction inside one is refused with
    /// [`KvError::Invalid`]).
    pub fn txn(
        compare: impl IntoIterator<Item = KvCompare>,
        success: impl IntoIterator<Item = KvRequest>,
        failure: impl IntoIterator<Item = KvRequest>,
    ) -> Self {
        // A nested transaction cannot be represented; it is kept as an
        // invalid marker (an oversized compare list) and refused by `check`.
        let mut nested = false;
        let mut ops = |reqs: &mut dyn Iterator<Item = KvRequest>| -> Vec<TxnOp> {
            reqs.filter_map(|r| match r.0 {
                Op::Get { range, limit } => Some(TxnOp::Get { range, limit }),
                Op::Put { key, value, session } => Some(TxnOp::Put { key, value, session }),
                Op::Delete { range } => Some(TxnOp::Delete { range }),
                Op::Txn { .. } | Op::SessionOpen { .. } | Op::SessionClose { .. } => {
                    nested = true;
                    None
                }
            })
            .collect()
        };
        let success = ops(&mut success.into_iter());
        let failure = ops(&mut failure.into_iter());
        let mut compare: Vec<Compare> = compare.into_iter().map(|c| c.0).collect();
        if nested {
            compare.resize(
                MAX_TXN_OPS + 1,
                Compare { key: Vec::new(), op: WireCmp::Equal, target: Target::Version(0) },
            );
        }
        Self(Op::Txn { compare, success, failure })
    }

    /// Whether the request only reads (served without a log entry).
    pub fn is_read(&self) -> bool {
        matches!(self.0, Op::Get { .. })
    }

    /// Checks the request against the store's bounds. [`Node::kv`](crate::Node::kv)
    /// does this before anything is sent; servers check again.
    pub fn check(&self) -> Result<(), KvError> {
        check_op(&self.0)
    }
}

fn check_key(key: &[u8]) -> Result<(), KvError> {
    if key.len() > MAX_KEY_LEN {
        return Err(KvError::TooLarge { what: "key", len: key.len(), max: MAX_KEY_LEN });
    }
    Ok(())
}

fn check_put(key: &[u8], value: &[u8]) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::Invalid("a put needs a non-empty key"));
    }
    check_key(key)?;
    if value.len() > MAX_VALUE_LEN {
        return Err(KvError::TooLarge { what: "value", len: value.len(), max: MAX_VALUE_LEN });
    }
    Ok(())
}

fn check_txn_op(op: &TxnOp) -> Result<(), KvError> {
    match op {
        TxnOp::Get { range, .. } | TxnOp::Delete { range } => check_key(range.bytes()),
        TxnOp::Put { key, value, .. } => check_put(key, value),
    }
}

/// The bounds every request must keep; servers apply it to what peers send.
pub(crate) fn check_op(op: &Op) -> Result<(), KvError> {
    match op {
        Op::Get { range, .. } | Op::Delete { range } => check_key(range.bytes())?,
        Op::Put { key, value, .. } => check_put(key, value)?,
        Op::SessionOpen { ttl_ms } => {
            let (min, max) = (MIN_SESSION_TTL.as_millis() as u64, MAX_SESSION_TTL.as_millis() as u64);
            if !(min..=max).contains(ttl_ms) {
                return Err(KvError::Invalid(
                    "a session's TTL is between MIN_SESSION_TTL and MAX_SESSION_TTL",
                ));
            }
        }
        Op::SessionClose { .. } => {}
        Op::Txn { compare, success, failure } => {
            if compare.len() > MAX_TXN_OPS {
                return Err(KvError::Invalid(
                    "a transaction has at most MAX_TXN_OPS comparisons and no nested transaction",
                ));
            }
            for (what, list) in [("success", success), ("failure", failure)] {
                if list.len() > MAX_TXN_OPS {
                    return Err(KvError::TooLarge { what, len: list.len(), max: MAX_TXN_OPS });
                }
                list.iter().try_for_each(check_txn_op)?;
            }
            for c in compare {
                check_key(&c.key)?;
                if let Target::Value(v) = &c.target
                    && v.len() > MAX_VALUE_LEN
                {
                    return Err(KvError::TooLarge {
                        what: "compared value",
                        len: v.len(),
                        max: MAX_VALUE_LEN,
                    });
                }
            }
        }
    }
    let len = postcard::experimental::serialized_size(op).unwrap_or(usize::MAX);
    if len > MAX_REQUEST_LEN {
        return Err(KvError::TooLarge { what: "request", len, max: MAX_REQUEST_LEN });
    }
    Ok(())
}

/// One key as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// The key.
    pub key: Vec<u8>,
    /// Its value.
    pub value: Vec<u8>,
    /// The revision that created it.
    pub create_revision: u64,
    /// The revision that last changed it.
    pub mod_revision: u64,
    /// How many times it was written since it was created (1 after the put
    /// that created it).
    pub version: u64,
}

/// What a request answered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KvResponse {
    /// A read: the entries in key order.
    Get {
        /// The entries found (up to the limit).
        entries: Vec<KvEntry>,
        /// Whether more keys matched than were returned (limit or
        /// [`MAX_READ_LEN`]).
        more: bool,
    },
    /// A put was applied.
    Put,
    /// A delete: how many keys it removed.
    Delete {
        /// Keys removed.
        deleted: u64,
    },
    /// A transaction: which branch ran and what each of its operations answered.
    Txn {
        /// Whether every comparison held (the success branch ran).
        succeeded: bool,
        /// One answer per operation of the branch that ran, in order.
        responses: Vec<KvResponse>,
    },
    /// A session was opened ([`KvRequest::session_open`]).
    SessionOpened {
        /// Its id, for [`KvRequest::with_session`] and [`KvRequest::session_close`].
        session: u64,
    },
    /// A session was closed; its keys were deleted.
    SessionClosed {
        /// Keys deleted with it.
        deleted: u64,
    },
}

/// What a watch reports: one change to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KvEvent {
    /// A put or a delete.
    pub kind: KvEventKind,
    /// The key after a put (its new value, revisions and version); after a
    /// delete, the key with an empty value, the deleting revision as
    /// `mod_revision`, and 0 for `create_revision` and `version`.
    pub entry: KvEntry,
}

/// Which kind of change a [`KvEvent`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KvEventKind {
    /// The key was created or changed.
    Put,
    /// The key was deleted by a request (or its session was closed).
    Delete,
    /// The key was deleted because the session it was bound to expired:
    /// its owner was away from every server for the session's TTL. The
    /// entry is as for [`KvEventKind::Delete`].
    Expired,
}

/// How strongly an answer is ordered with respect to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KvGuarantee {
    /// Linearizable: the answer reflects every write that completed before
    /// the request was made. Writes always are; reads are by default
    /// (confirmed by the leader with a quorum — Raft's ReadIndex).
    Linearizable,
    /// Served from one server's copy at or after the requested revision:
    /// may miss writes newer than that ([`KvOptions::at_least`]).
    AtLeastRevision,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KvAnswer {
    /// The store's revision the answer was taken at (for a write: the
    /// revision it created, or the current one if it changed nothing).
    pub revision: u64,
    /// What the request answered.
    pub response: KvResponse,
    /// The ordering guarantee of this answer.
    pub guarantee: KvGuarantee,
    /// Voters in the Raft group that answered. With one voter every answer
    /// is linearizable but the store dies with that server; with two, both
    /// must be up for anything to be answered (a majority of two is two):
    /// the store chooses consistency over availability and says so here.
    pub voters: u32,
}

/// Options of one request ([`Node::kv_with`](crate::Node::kv_with)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KvOptions {
    /// How long to keep trying (through any server, across failovers)
    /// before failing with [`KvError::Unavailable`].
    pub timeout: std::time::Duration,
    /// For reads: `Some(r)` lets the nearest server answer from its own
    /// copy once it has applied revision `r` (no leader round trip, may be
    /// stale beyond `r`); `None` (the default) is linearizable.
    pub at_least: Option<u64>,
}

impl Default for KvOptions {
    fn default() -> Self {
        Self { timeout: std::time::Duration::from_secs(5), at_least: None }
    }
}

impl KvOptions {
    /// These options with another timeout.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// These options for a read served by the nearest server once it has
    /// applied `revision` (see [`KvOptions::at_least`]).
    pub fn with_at_least(mut self, revision: u64) -> Self {
        self.at_least = Some(revision);
        self
    }
}

/// Why a store request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// No answer within the request's timeout: no server reachable, no
    /// leader, or no quorum. The request may or may not have been applied
    /// (a retry with the same request id is applied at most once).
    #[error("the cluster's store did not answer in time (no server, leader or quorum reachable)")]
    Unavailable,
    /// Part of the request is over a bound.
    #[error("{what} is {len} bytes (or items), over the limit of {max}")]
    TooLarge {
        /// Which part.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The request is malformed.
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// Applying the write would take the store over [`MAX_STORE_BYTES`].
    #[error("the store is full ({used} of {max} bytes); delete keys first")]
    StoreFull {
        /// Bytes in use.
        used: usize,
        /// The bound.
        max: usize,
    },
    /// Only peers use the store through [`Node::kv`](crate::Node::kv).
    #[error("only a peer can make store requests")]
    NotAPeer,
    /// Too many requests of this node are in flight.
    #[error("{0} requests are already in flight; wait for answers")]
    TooManyInFlight(usize),
    /// A watch asked for changes from a revision the store no longer
    /// keeps; `oldest` is the first it has (read the current state and
    /// watch from its revision + 1 instead).
    #[error(
        "changes before revision {oldest} are compacted away; read the current state and watch from there"
    )]
    Compacted {
        /// The oldest revision still available.
        oldest: u64,
    },
    /// A retry of a request whose answer the store no longer keeps (the
    /// client acknowledged it, or too many newer requests came since).
    #[error("the request was already answered and its answer is no longer kept")]
    Stale,
}
