//! The Raft log and hard state as raft-rs reads them (`raft::Storage`),
//! with snapshots that carry the store's data.
//!
//! raft-rs' own `MemStorage` fabricates snapshots from its metadata alone
//! (no state machine data) at whatever index it is asked for; a server that
//! catches up from one would have the group's configuration but an empty
//! store. Here a snapshot is taken by the group (`Consensus`) at its applied
//! index, with the store's image, and the log is then compacted behind it:
//! whoever needs entries before the log's first gets that snapshot.

use super::raft_wire::{WireEntry, WireSnapshot};
use crate::persist::DiskOp;
use raft::prelude::*;
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use std::collections::BTreeMap;

/// Table keys (see `persist.rs`): the group identity, the hard state, the
/// configuration, the snapshot, and one key per entry (`e` + index, big
/// endian, so the table's order is the log's).
pub(crate) const K_GROUP: &[u8] = b"g";
const K_HARD: &[u8] = b"h";
const K_CONF: &[u8] = b"c";
const K_SNAP: &[u8] = b"s";

fn entry_key(index: u64) -> Vec<u8> {
    let mut k = b"e".to_vec();
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// Everything the group's table holds: wipe before a new identity.
pub(crate) fn wipe() -> DiskOp {
    DiskOp::DeleteRange { from: Vec::new(), to: vec![0xff] }
}

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
    /// Record every change as a disk operation (a server with a disk).
    record: bool,
    /// Changes not yet handed to the host.
    ops: Vec<DiskOp>,
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

    /// Turns recording of disk operations on, starting with everything
    /// the log holds now.
    pub(crate) fn start_recording(&mut self) {
        self.record = true;
        self.put_hard();
        self.put_conf();
        if self.snapshot_index() > 0 {
            self.put_snapshot();
        }
        for e in self.entries.clone() {
            self.put_entry(&e);
        }
    }

    /// Disk operations since the last call.
    pub(crate) fn take_ops(&mut self) -> Vec<DiskOp> {
        std::mem::take(&mut self.ops)
    }

    fn put(&mut self, key: &[u8], value: Option<Vec<u8>>) {
        if let (true, Some(value)) = (self.record, value) {
            self.ops.push(DiskOp::Put { key: key.to_vec(), value });
        }
    }

    fn put_hard(&mut self) {
        let v = postcard::to_allocvec(&(self.hard.term, self.hard.vote, self.hard.commit)).ok();
        self.put(K_HARD, v);
    }

    fn put_conf(&mut self) {
        let v = postcard::to_allocvec(&(&self.conf.voters, &self.conf.learners)).ok();
        self.put(K_CONF, v);
    }

    fn put_snapshot(&mut self) {
        let v = WireSnapshot::from_snapshot(&self.snapshot).and_then(|w| postcard::to_allocvec(&w).ok());
        self.put(K_SNAP, v);
    }

    fn put_entry(&mut self, e: &Entry) {
        let v = WireEntry::from_entry(e).and_then(|w| postcard::to_allocvec(&w).ok());
        self.put(&entry_key(e.index), v);
    }

    fn delete_entries(&mut self, from: u64, to: u64) {
        if self.record && from < to {
            self.ops.push(DiskOp::DeleteRange { from: entry_key(from), to: entry_key(to) });
        }
    }

    /// Rebuilds a log from the host's table; `None` if it holds no valid
    /// hard state and configuration. Entries stop at the first gap or
    /// undecodable one (a torn tail).
    pub(crate) fn load(table: &BTreeMap<Vec<u8>, Vec<u8>>) -> Option<Self> {
        let (term, vote, commit): (u64, u64, u64) = postcard::from_bytes(table.get(K_HARD)?).ok()?;
        let (voters, learners): (Vec<u64>, Vec<u64>) = postcard::from_bytes(table.get(K_CONF)?).ok()?;
        let mut log = Self::empty();
        log.hard = HardState { term, vote, commit, ..HardState::default() };
        log.conf = ConfState::from((voters, learners));
        if let Some(bytes) = table.get(K_SNAP) {
            let w: WireSnapshot = postcard::from_bytes(bytes).ok()?;
            let snap = w.into_snapshot();
            log.first = snap.get_metadata().index + 1;
            log.snapshot = snap;
        } else {
            log.snapshot.mut_metadata().set_conf_state(log.conf.clone());
        }
        let mut next = None;
        for (k, v) in table.range(b"e".to_vec()..b"f".to_vec()) {
            let Ok(idx) = <[u8; 8]>::try_from(&k[1..]).map(u64::from_be_bytes) else { break };
            let Some(e) = postcard::from_bytes::<WireEntry>(v).ok().and_then(WireEntry::into_entry) else {
                break;
            };
            if e.index != idx {
                break;
            }
            match next {
                None if idx > log.first => break,
                // Entries a snapshot already covers.
                None if idx < log.first => continue,
                Some(n) if idx != n => break,
                _ => {}
            }
            next = Some(idx + 1);
            log.bytes += e.data.len();
            log.entries.push(e);
        }
        // The commit cannot be past what survived, nor before the snapshot
        // (which only ever covers committed entries; the hard state holding
        // the commit may have been written before it).
        log.hard.commit = log.hard.commit.min(log.last().max(log.snapshot_index())).max(log.snapshot_index());
        Some(log)
    }

    /// Sets the term of the hard state (a founder starts above any term it saw).
    pub(crate) fn set_term(&mut self, term: u64) {
        self.hard.term = term;
        self.put_hard();
    }

    /// Persists the hard state.
    pub(crate) fn set_hard_state(&mut self, hs: HardState) {
        self.hard = hs;
        self.put_hard();
    }

    /// Persists a new commit index.
    pub(crate) fn set_commit(&mut self, commit: u64) {
        self.hard.commit = commit;
        self.put_hard();
    }

    /// Records the configuration an applied change produced.
    pub(crate) fn set_conf(&mut self, conf: ConfState) {
        self.conf = conf;
        self.put_conf();
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
        let old_end = self.first + self.entries.len() as u64;
        for e in self.entries.drain(keep..) {
            self.bytes -= e.data.len().min(self.bytes);
        }
        // A conflicting suffix on disk goes with it.
        self.delete_entries(head.index, old_end);
        for e in new {
            self.bytes += e.data.len();
            self.entries.push(e.clone());
            self.put_entry(e);
        }
    }

    /// Installs a snapshot received from the leader: the log restarts after it.
    pub(crate) fn apply_snapshot(&mut self, snap: Snapshot) {
        let meta = snap.get_metadata();
        let index = meta.index;
        self.hard.term = self.hard.term.max(meta.term);
        self.hard.commit = self.hard.commit.max(index);
        self.conf = meta.get_conf_state().clone();
        let old_end = self.first + self.entries.len() as u64;
        self.entries.clear();
        self.bytes = 0;
        self.delete_entries(0, old_end.max(index + 1));
        self.first = index + 1;
        self.snapshot = snap;
        self.put_snapshot();
        self.put_hard();
        self.put_conf();
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
        self.put_snapshot();
        let upto = index.saturating_sub(keep);
        if upto >= self.first {
            let n = ((upto - self.first + 1) as usize).min(self.entries.len());
            for e in self.entries.drain(..n) {
                self.bytes -= e.data.len().min(self.bytes);
            }
            let old_first = self.first;
            self.first += n as u64;
            self.delete_entries(old_first, self.first);
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
