//! What a server's host writes to disk so that its Raft state — and the
//! replicated store — survive a restart.
//!
//! The core never touches a disk. A server whose
//! [`ClusterConfig::raft_disk`](crate::ClusterConfig::raft_disk) is set
//! hands out [`RaftWrite`]s from [`Node::poll_raft_write`](crate::Node::poll_raft_write):
//! small batches of key-value operations on one ordered table. The host
//! applies each batch atomically, in order (an embedded store such as redb
//! does this), makes it durable, and confirms it with
//! [`Node::raft_written`](crate::Node::raft_written). Until then the core
//! holds back every Raft message that claims the batch is stored (votes,
//! append acknowledgements) and does not count its own log towards a
//! commit: a crash before the confirmation loses nothing anybody relied on.
//! At the next start the host passes the whole table back in
//! `raft_disk`, and the server resumes its Raft identity, log and store
//! instead of joining under a new identity.
//!
//! The table's layout is the core's business (keys are short ASCII tags
//! and log indexes); hosts treat keys and values as opaque bytes and keep
//! them sorted.

/// One operation of a [`RaftWrite`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiskOp {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Delete every key `k` with `from <= k < to` (bytewise order).
    DeleteRange {
        /// First key deleted.
        from: Vec<u8>,
        /// First key kept after the range.
        to: Vec<u8>,
    },
}

/// A batch of operations to apply atomically and confirm.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RaftWrite {
    /// Its number: batches are numbered 1, 2, ... and must be applied in
    /// that order; confirm with this number.
    pub seq: u64,
    /// The operations, in order.
    pub ops: Vec<DiskOp>,
}

/// Applies a batch to an in-memory image of the table: what a host's
/// store does, for hosts that keep a copy and for tests.
pub fn apply_raft_write(table: &mut std::collections::BTreeMap<Vec<u8>, Vec<u8>>, write: &RaftWrite) {
    for op in &write.ops {
        match op {
            DiskOp::Put { key, value } => {
                table.insert(key.clone(), value.clone());
            }
            DiskOp::DeleteRange { from, to } => {
                let doomed: Vec<Vec<u8>> =
                    table.range(from.clone()..to.clone()).map(|(k, _)| k.clone()).collect();
                for k in doomed {
                    table.remove(&k);
                }
            }
        }
    }
}
