//! A server's Raft state on disk: `raft.redb` in the data directory.
//!
//! The core hands a server's host batches of operations on one ordered
//! key-value table ([`p2pcore::RaftWrite`], see
//! [`Node::poll_raft_write`](p2pcore::Node::poll_raft_write)); the host
//! applies them atomically and in order, makes them durable and confirms
//! them. [`RaftStore`] is that table: one redb table (bytes to bytes) in one
//! file, every call to [`RaftStore::write`] one redb write transaction.
//!
//! # Durability
//!
//! With `fsync` on (the default, [`HostConfig::raft_fsync`](crate::HostConfig::raft_fsync))
//! every transaction is committed with [`redb::Durability::Immediate`]: it
//! is on the disk when [`RaftStore::write`] returns, and a crash or a power
//! loss at any point loses nothing the server confirmed.
//!
//! With `fsync` off, transactions are committed with
//! [`redb::Durability::None`]: nothing is synced, and redb only writes them
//! out with the next durable commit. The store makes every
//! [`LAZY_COMMITS`]th commit durable (redb frees pages only then, so the
//! file would otherwise grow without bound) and one more when it is
//! dropped (a clean close keeps everything). A crash of the process or of
//! the machine in between loses the batches since the last durable commit,
//! which the server had already confirmed to its group: acceptable for
//! tests and throwaway clusters, or when at most a minority of servers can
//! fail at once and a server that lost state is wiped and re-added, never
//! for a cluster that must survive a power loss of a majority.

use p2pcore::{DiskOp, RaftWrite};
use redb::{
    Database, DatabaseError, Durability, ReadableTable, ReadableTableMetadata, StorageError, TableDefinition,
};
use std::path::{Path, PathBuf};

/// Name of the store's file inside the data directory.
pub const RAFT_FILE: &str = "raft.redb";

/// With `fsync` off, every this many commits one is made durable (and
/// redb frees the pages earlier commits released).
pub const LAZY_COMMITS: u32 = 256;

/// The one table: the core's keys to its values.
const TABLE: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("raft");

/// The whole table, in key order, as
/// [`ClusterConfig::raft_disk`](p2pcore::ClusterConfig::raft_disk) takes it.
pub type RaftTable = Vec<(Vec<u8>, Vec<u8>)>;

/// A server's Raft table on disk (see the module docs).
pub struct RaftStore {
    db: Database,
    path: PathBuf,
    fsync: bool,
    /// Commits since the last durable one (fsync off only).
    lazy: u32,
}

impl std::fmt::Debug for RaftStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftStore")
            .field("path", &self.path)
            .field("fsync", &self.fsync)
            .finish_non_exhaustive()
    }
}

/// Why the Raft store could not be opened, read or written. Each message
/// names the file and says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RaftStoreError {
    /// Another process, or another host in this process, has the file open.
    #[error(
        "{}: the Raft store is in use by another p2pcore host; stop it, or give every server its own data \
         directory",
        .path.display()
    )]
    InUse {
        /// The store's file.
        path: PathBuf,
    },
    /// The file is not a redb database this version can read, or its
    /// contents are damaged.
    #[error(
        "{}: the Raft store is damaged or not a p2pcore Raft store ({problem}); restore the data directory \
         from a backup, or move the file away to start this server without its Raft state (it then joins \
         as a new member; if a majority of the servers lose theirs, the replicated store is lost)",
        .path.display()
    )]
    Corrupt {
        /// The store's file.
        path: PathBuf,
        /// What redb found wrong.
        problem: String,
    },
    /// The file could not be opened, read, written or synced.
    #[error("{}: could not {action} the Raft store: {source}{}", .path.display(), io_hint(.source))]
    Io {
        /// The store's file.
        path: PathBuf,
        /// What was being done: `open`, `read` or `write`.
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Anything else redb reported (a bug, a poisoned lock after a panic).
    #[error("{}: the Raft store failed to {action}: {source}", .path.display())]
    Store {
        /// The store's file.
        path: PathBuf,
        /// What was being done: `open`, `read` or `write`.
        action: &'static str,
        /// redb's error.
        #[source]
        source: Box<redb::Error>,
    },
    /// The core asked for an operation this host does not know (a newer
    /// core with an older host); nothing of the batch was written.
    #[error("{}: the core asked for a Raft store operation this host does not know: {op}", .path.display())]
    UnknownOp {
        /// The store's file.
        path: PathBuf,
        /// The operation, as debug text.
        op: String,
    },
}

/// Advice appended to an I/O error's message.
fn io_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => "; check the data directory's owner and permissions",
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            "; free some disk space and restart the server"
        }
        std::io::ErrorKind::ReadOnlyFilesystem => "; the data directory must be writable",
        _ => "",
    }
}

impl RaftStoreError {
    fn new(path: &Path, action: &'static str, e: impl Into<redb::Error>) -> Self {
        let path = path.to_path_buf();
        match e.into() {
            redb::Error::DatabaseAlreadyOpen => Self::InUse { path },
            redb::Error::Corrupted(problem) => Self::Corrupt { path, problem },
            redb::Error::UpgradeRequired(v) => Self::Corrupt {
                path,
                problem: format!("written in redb file format {v}, which needs an upgrade"),
            },
            redb::Error::Io(source) => Self::Io { path, action, source },
            source => Self::Store { path, action, source: Box::new(source) },
        }
    }
}

fn open_error(path: &Path, e: DatabaseError) -> RaftStoreError {
    match e {
        DatabaseError::Storage(StorageError::Io(source)) => {
            RaftStoreError::Io { path: path.to_path_buf(), action: "open", source }
        }
        e => RaftStoreError::new(path, "open", e),
    }
}

impl RaftStore {
    /// Opens (or creates) `raft.redb` in the directory `dir` and reads the
    /// whole table back, for
    /// [`ClusterConfig::raft_disk`](p2pcore::ClusterConfig::raft_disk) (empty
    /// on the first start). `fsync` chooses the durability (module docs).
    pub fn open(dir: &Path, fsync: bool) -> Result<(Self, RaftTable), RaftStoreError> {
        let path = dir.join(RAFT_FILE);
        let db = Database::create(&path).map_err(|e| open_error(&path, e))?;
        // Make sure the table exists, so reading never meets its absence.
        let txn = db.begin_write().map_err(|e| RaftStoreError::new(&path, "open", e))?;
        txn.open_table(TABLE).map_err(|e| RaftStoreError::new(&path, "open", e))?;
        txn.commit().map_err(|e| RaftStoreError::new(&path, "open", e))?;
        let store = Self { db, path, fsync, lazy: 0 };
        let table = store.read_all()?;
        Ok((store, table))
    }

    /// The whole table, in key order.
    pub fn read_all(&self) -> Result<RaftTable, RaftStoreError> {
        let err = |e: redb::Error| RaftStoreError::new(&self.path, "read", e);
        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        let table = txn.open_table(TABLE).map_err(|e| err(e.into()))?;
        let mut out = Vec::with_capacity(table.len().map_err(|e| err(e.into()))? as usize);
        for row in table.iter().map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies the operations of `batches` in order, all in one transaction
    /// (atomically: all or none), and commits it with the configured
    /// durability. After `Ok` the host confirms the last batch's `seq`;
    /// after an error nothing of them was written.
    pub fn write(&mut self, batches: &[RaftWrite]) -> Result<(), RaftStoreError> {
        self.write_ops(batches.iter().flat_map(|b| &b.ops))
    }

    /// [`RaftStore::write`] for operations taken from any number of
    /// batches, in order.
    pub fn write_ops<'a>(&mut self, ops: impl IntoIterator<Item = &'a DiskOp>) -> Result<(), RaftStoreError> {
        let durable = self.fsync || self.lazy + 1 >= LAZY_COMMITS;
        let err = |e: redb::Error| RaftStoreError::new(&self.path, "write", e);
        let mut txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None });
        {
            let mut table = txn.open_table(TABLE).map_err(|e| err(e.into()))?;
            for op in ops {
                match op {
                    DiskOp::Put { key, value } => {
                        table.insert(key.as_slice(), value.as_slice()).map_err(|e| err(e.into()))?;
                    }
                    DiskOp::DeleteRange { from, to } => {
                        if from < to {
                            table
                                .retain_in(from.as_slice()..to.as_slice(), |_, _| false)
                                .map_err(|e| err(e.into()))?;
                        }
                    }
                    other => {
                        // Dropping the transaction aborts it.
                        return Err(RaftStoreError::UnknownOp {
                            path: self.path.clone(),
                            op: format!("{other:?}"),
                        });
                    }
                }
            }
        }
        txn.commit().map_err(|e| err(e.into()))?;
        self.lazy = if durable { 0 } else { self.lazy + 1 };
        Ok(())
    }

    /// Makes every commit so far durable (one synced empty commit; nothing
    /// to do with `fsync` on). Called when the store is dropped.
    pub fn sync(&mut self) -> Result<(), RaftStoreError> {
        if self.lazy == 0 {
            return Ok(());
        }
        let err = |e: redb::Error| RaftStoreError::new(&self.path, "write", e);
        let mut txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        txn.set_durability(Durability::Immediate);
        txn.commit().map_err(|e| err(e.into()))?;
        self.lazy = 0;
        Ok(())
    }
}

impl Drop for RaftStore {
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            tracing::error!(error = %e, "the last Raft store writes could not be made durable");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn put(k: &[u8], v: &[u8]) -> DiskOp {
        DiskOp::Put { key: k.to_vec(), value: v.to_vec() }
    }

    /// The reference semantics (`p2pcore::apply_raft_write`'s), on a model.
    fn apply(model: &mut BTreeMap<Vec<u8>, Vec<u8>>, ops: &[DiskOp]) {
        for op in ops {
            match op {
                DiskOp::Put { key, value } => {
                    model.insert(key.clone(), value.clone());
                }
                DiskOp::DeleteRange { from, to } => model.retain(|k, _| !(from <= k && k < to)),
                other => panic!("unknown op {other:?}"),
            }
        }
    }

    #[test]
    fn a_written_table_reads_back_identical() {
        for fsync in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let mut model = BTreeMap::new();
            let batches: Vec<Vec<DiskOp>> = vec![
                (0u8..50).map(|i| put(&[b'l', i], &[i; 40])).collect(),
                vec![put(b"hard", b"term 3"), put(b"conf", b"1,2,3"), put(b"", b"empty key")],
                // Deletes l/10 ..= l/29 (`to` is kept), and an empty range.
                vec![
                    DiskOp::DeleteRange { from: vec![b'l', 10], to: vec![b'l', 30] },
                    DiskOp::DeleteRange { from: b"z".to_vec(), to: b"a".to_vec() },
                    put(b"hard", b"term 4"),
                ],
                vec![put(&[b'l', 20], b"again"), put(&[0xff; 3], &[])],
            ];
            {
                let (mut store, first) = RaftStore::open(dir.path(), fsync).unwrap();
                assert!(first.is_empty());
                store.write_ops(&batches[0]).unwrap();
                store.write_ops(batches[1..].iter().flatten()).unwrap();
                for b in &batches {
                    apply(&mut model, b);
                }
                let want: Vec<_> = model.clone().into_iter().collect();
                assert_eq!(store.read_all().unwrap(), want);
            }
            let (_store, table) = RaftStore::open(dir.path(), fsync).unwrap();
            let want: Vec<_> = model.into_iter().collect();
            assert_eq!(table.len(), 50 - 20 + 1 + 3 + 1);
            assert_eq!(table, want, "fsync {fsync}: the table survives closing and opening");
        }
    }

    #[test]
    fn a_second_open_is_in_use_and_a_damaged_file_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, _) = RaftStore::open(dir.path(), true).unwrap();
        let e = RaftStore::open(dir.path(), true).unwrap_err();
        assert!(matches!(e, RaftStoreError::InUse { .. }), "{e:?}");
        assert!(e.to_string().contains("own data directory"), "{e}");

        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join(RAFT_FILE), vec![0x5a; 8192]).unwrap();
        let e = RaftStore::open(other.path(), true).unwrap_err();
        assert!(matches!(e, RaftStoreError::Corrupt { .. } | RaftStoreError::Io { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains(RAFT_FILE), "{text}");
    }
}
