//! The Raft log and hard state as raft-rs reads them (`raft::Storage`),
//! with snapshots that carry the store's data.
//!
//! raft-rs' own `MemStorage` fabricates snapshots from its metadata alone
//! (no state machine data) at whatever index it is asked for; a server that
//! catches up from one would have the group's configuration but an empty
//! store. Here a snapshot is taken by the group (`Consensus`) at its applied
//! index, with the store's image, and the log is then compacted behind it:
//! whoever needs entries before the log's first gets that snapshot.

use raft::prelude::*;
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

/// The log, hard state, configuration and latest snapshot of one group.
#[derive(Default)]
pub(crate) struct RaftLog {
    hard: HardState,
    conf: ConfState,
    /// The latest snapshot (index 0: none yet).
    snapshot: Snapshot,
    /// Entries from `first` on; `first <= snapshot index + 1`.
    entries: Vec<Entry>,
    /// Index of `entries[0]` (or of the next entry when empty).
    first: u64,
    /// Bytes of entry data held (what drives compaction besides counts).
    bytes: usize,
}

impl RaftLog {
    /// An empty log with a starting configuration (a founder's).
    pub(crate) fn with_conf(conf: ConfState) -> Self {
        let mut log = Self { first: 1, ..Self::default() };
        log.snapshot.mut_metadata().set_conf_state(conf.clone());
        log.conf = conf;
        log
    }

    /// An empty log (a joiner's, which learns everything from its leader).
    pub(crate) fn empty() -> Self {
        Self { first: 1, ..Self::default() }
    }

    fn last(&self) -> u64 {
        self.first + self.entries.len() as u64 - 1
    }

    /// Sets the term of the hard state (a founder starts above any term it saw).
    pub(crate) fn set_term(&mut self, term: u64) {
        self.hard.term = term;
    }

    /// Persists the hard state.
    pub(crate) fn set_hard_state(&mut self, hs: HardState) {
        self.hard = hs;
    }

    /// Persists a new commit index.
    pub(crate) fn set_commit(&mut self, commit: u64) {
        self.hard.commit = commit;
    }

    /// Records the configuration an applied change produced.
    pub(crate) fn set_conf(&mut self, conf: ConfState) {
        self.conf = conf;
    }

    /// Bytes of entry data held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the configuration changed since the latest snapshot. A
    /// snapshot must name its receiver (raft-rs refuses one whose
    /// configuration lacks it), so a member added after it needs a new one.
    pub(crate) fn conf_changed(&self) -> bool {
        self.snapshot.get_metadata().get_conf_state() != &self.conf
    }

    /// The latest snapshot's index.
    pub(crate) fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    /// Appends entries from a `Ready`, replacing any conflicting suffix
    /// (raft-rs only hands out entries that follow what is stored).
    pub(crate) fn append(&mut self, new: &[Entry]) {
        let Some(head) = new.first() else { return };
        if head.index < self.first {
            // Before our first entry: only possible after a snapshot that
            // covers them; keep the part after it.
            let skip = (self.first - head.index) as usize;
            return self.append(new.get(skip..).unwrap_or(&[]));
        }
        let keep = ((head.index - self.first) as usize).min(self.entries.len());
        for e in self.entries.drain(keep..) {
            self.bytes -= e.data.len().min(self.bytes);
        }
        for e in new {
            self.bytes += e.data.len();
            self.entries.push(e.clone());
        }
    }

    /// Installs a snapshot received from the leader: the log restarts after it.
    pub(crate) fn apply_snapshot(&mut self, snap: Snapshot) {
        let meta = snap.get_metadata();
        let index = meta.index;
        self.hard.term = self.hard.term.max(meta.term);
        self.hard.commit = self.hard.commit.max(index);
        self.conf = meta.get_conf_state().clone();
        self.entries.clear();
        self.bytes = 0;
        self.first = index + 1;
        self.snapshot = snap;
    }

    /// Records a snapshot taken at applied index `index` (term `term`,
    /// configuration as now) with the store's image, and drops the entries
    /// up to `index - keep` (a follower a little behind still gets entries).
    pub(crate) fn take_snapshot(&mut self, index: u64, data: Vec<u8>, keep: u64) {
        let Ok(term) = self.term(index) else { return };
        let mut snap = Snapshot { data: data.into(), ..Snapshot::default() };
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf.clone());
        self.snapshot = snap;
        let upto = index.saturating_sub(keep);
        if upto >= self.first {
            let n = ((upto - self.first + 1) as usize).min(self.entries.len());
            for e in self.entries.drain(..n) {
                self.bytes -= e.data.len().min(self.bytes);
            }
            self.first += n as u64;
        }
    }
}

impl Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState { hard_state: self.hard.clone(), conf_state: self.conf.clone() })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let slice = &self.entries[(low - self.first) as usize..(high - self.first) as usize];
        let mut out = slice.to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let snap = self.snapshot.get_metadata();
        if idx == snap.index {
            return Ok(snap.term);
        }
        if idx < self.first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entries.get((idx - self.first) as usize) {
            Some(e) => Ok(e.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last().max(self.snapshot_index()))
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot_index() < request_index {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(self.snapshot.clone())
    }
}
