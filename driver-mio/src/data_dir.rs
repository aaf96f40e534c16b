//! The data directory every p2pcore host keeps its state in.
//!
//! One implementation, shared by every host kind (the mio driver, the tokio
//! driver, the C ABI and the CLI), so they all agree on the layout and on what
//! happens when something is wrong. The core stays free of file I/O: it only
//! converts an [`Identity`] to and from bytes.
//!
//! # What the directory holds
//!
//! - `identity`: the node's role and secret key, exactly
//!   [`Identity::to_bytes`] (38 bytes). It is created on the first start from
//!   the operating system's CSPRNG and reused afterwards, so the node ID
//!   survives restarts. It is written atomically (`identity.tmp`, then a
//!   rename) and never overwritten: a file that does not decode is a
//!   [`DataDirError::CorruptIdentity`], left exactly as found.
//! - `lock`: holds an exclusive OS lock for as long as a [`DataDir`] is alive,
//!   so two processes never share a data directory, and the holder's PID (one
//!   line of decimal digits) so the error can name it.
//! - `raft.redb`: a server's Raft state and replicated store, when its host
//!   is bound with [`Host::bind_in`](crate::Host::bind_in) (see
//!   [`RaftStore`](crate::RaftStore)).
//!
//! # Stale locks
//!
//! The lock is the operating system's advisory file lock
//! ([`File::try_lock`]: `flock` on Unix, `LockFileEx` on Windows), not the
//! PID in the file. The OS drops the lock when its holder exits, however it
//! exits, so a lock left by a crashed or killed process is simply taken over
//! on the next start. No PID-liveness check is needed, which avoids both an
//! OS-specific call and the race where a dead holder's PID has been reused by
//! an unrelated process. The PID is only written for the error message.
//!
//! The lock needs a file system that supports it; network file systems may
//! not, and then opening fails with [`DataDirError::Io`] (action `lock`)
//! instead of running unprotected.
//!
//! # File modes
//!
//! On Unix a directory created here gets mode `0700` and the identity file
//! `0600` (both further restricted by the umask). An existing identity file
//! that other users may read is used as it is, with a warning in the log: its
//! mode is the owner's decision, so it is not changed silently. On other
//! platforms (Windows, and anything else without Unix modes) files get the
//! default access control of the directory they are created in; keep the data
//! directory in a per-user location (the default ACLs of the user's profile
//! restrict it to that user).

use p2pcore::{Config, IDENTITY_LEN, IdError, Identity, NodeId, Role};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Name of the identity file inside the data directory.
const IDENTITY_FILE: &str = "identity";
/// Where a new identity is written before it is renamed into place.
const IDENTITY_TMP_FILE: &str = "identity.tmp";
/// Name of the lock file inside the data directory.
const LOCK_FILE: &str = "lock";

/// An open data directory: its lock is held and its identity is loaded.
///
/// Only one `DataDir` for a directory can exist at a time, across all
/// processes on the machine: [`DataDir::open`] takes an exclusive OS lock on
/// `<dir>/lock` and keeps it until the `DataDir` is dropped. A lock left
/// behind by a process that died is released by the OS and taken over by the
/// next [`DataDir::open`]; one held by a live process is
/// [`DataDirError::Locked`], naming its PID. Dropping the `DataDir` releases
/// the lock and leaves the lock file in place (the OS lock is what counts, not
/// the file).
///
/// The directory holds `identity` (the node's role and secret key, exactly
/// [`Identity::to_bytes`], written atomically and never overwritten) and
/// `lock` (the holder's PID). On Unix a new directory gets mode `0700` and a
/// new identity file `0600`; elsewhere files get the directory's default
/// access control, so keep the data directory in a per-user location.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    /// Kept open only to hold the OS lock; closing it releases the lock.
    #[allow(dead_code)]
    lock: File,
    identity: Identity,
    created: bool,
}

impl DataDir {
    /// Opens the data directory at `path` for a node of `role`, creating the
    /// directory and the identity if they do not exist yet.
    ///
    /// The lock is taken first, so no other process can be creating or
    /// reading the identity at the same time. The identity is then loaded, or
    /// created from the OS CSPRNG if the file is absent; an existing identity
    /// file is never overwritten.
    ///
    /// # Errors
    ///
    /// - [`DataDirError::Locked`] if another live process holds the directory.
    /// - [`DataDirError::CorruptIdentity`] if `identity` exists but does not
    ///   decode (including an empty file); the file is left untouched.
    /// - [`DataDirError::WrongRole`] if the identity belongs to the other role.
    /// - [`DataDirError::Random`] if the OS random number generator fails.
    /// - [`DataDirError::Io`] if a file or the directory cannot be created,
    ///   read, written or locked.
    pub fn open(path: impl AsRef<Path>, role: Role) -> Result<DataDir, DataDirError> {
        let path = path.as_ref().to_path_buf();
        create_dir(&path).map_err(io_error(&path, "create directory"))?;
        let lock = take_lock(&path)?;
        let identity_path = path.join(IDENTITY_FILE);
        let (identity, created) = match File::open(&identity_path) {
            Ok(file) => (load_identity(&identity_path, file, role)?, false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // `File::open` follows symbolic links: a link whose target is
                // missing also reports NotFound. Renaming over it would
                // replace the link the owner made, so refuse instead.
                if fs::symlink_metadata(&identity_path).is_ok() {
                    return Err(DataDirError::Io {
                        path: identity_path,
                        action: "read",
                        source: io::Error::new(
                            io::ErrorKind::NotFound,
                            "it is a symbolic link to a missing file; restore its target or remove the link",
                        ),
                    });
                }
                (create_identity(&path, &identity_path, role)?, true)
            }
            Err(e) => return Err(DataDirError::Io { path: identity_path, action: "read", source: e }),
        };
        Ok(DataDir { path, lock, identity, created })
    }

    /// The node's long-term identity (role and key pair).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The node ID, derived from the identity.
    pub fn id(&self) -> NodeId {
        self.identity.id()
    }

    /// The directory's path, as given to [`DataDir::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this [`DataDir::open`] created the identity (a new node ID)
    /// rather than loading an existing one.
    pub fn created(&self) -> bool {
        self.created
    }

    /// A node configuration with this directory's identity, the given
    /// human-readable `name`, a fresh seed from [`os_seed`] and default
    /// settings otherwise.
    ///
    /// # Errors
    ///
    /// [`DataDirError::Random`] if the OS random number generator fails.
    pub fn config(&self, name: impl Into<String>) -> Result<Config, DataDirError> {
        Ok(Config::new(self.identity.clone(), name, os_seed()?))
    }
}

/// 32 bytes from the operating system's CSPRNG, for [`Config::seed`].
///
/// # Errors
///
/// [`DataDirError::Random`] if the OS random number generator fails.
pub fn os_seed() -> Result<[u8; 32], DataDirError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(DataDirError::Random)?;
    Ok(seed)
}

/// Why a data directory could not be opened. Each message says which file is
/// affected and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// Another process holds the lock on the data directory.
    #[error(
        "{}: another {} is using this data directory; stop it or choose another --data-dir",
        .path.display(),
        holder(*.pid)
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The holder's PID, as it wrote it into the lock file; `None` if the
        /// file could not be read (on Windows the holder's lock prevents
        /// reading it) or did not hold a PID yet.
        pid: Option<u32>,
    },
    /// The identity file exists but is not a valid p2pcore identity.
    #[error(
        "{} is not a valid p2pcore identity ({problem}); it was NOT overwritten: move it away to start \
         with a new node ID (the old ID is lost), or restore it from a backup",
        .path.display()
    )]
    CorruptIdentity {
        /// The identity file.
        path: PathBuf,
        /// What is wrong with its contents.
        #[source]
        problem: IdError,
    },
    /// The identity file belongs to a node of the other role.
    #[error(
        "{}: this data directory belongs to a {found}, not a {wanted}; use a separate data directory per node",
        .path.display()
    )]
    WrongRole {
        /// The identity file.
        path: PathBuf,
        /// The role stored in the file.
        found: Role,
        /// The role the caller asked for.
        wanted: Role,
    },
    /// The operating system's random number generator failed.
    // getrandom 0.3 implements `std::error::Error` only with its `std`
    // feature, so the error is kept (for `raw_os_error`) but not chained as
    // a source.
    #[error("the operating system's random number generator failed: {0}")]
    Random(getrandom::Error),
    /// A file or directory could not be created, opened, read, written or
    /// locked.
    #[error("could not {action} {}: {source}{}", .path.display(), io_hint(.action, .source))]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What was being done, as a verb: `create directory`, `open`,
        /// `lock`, `read`, `write` or `create`.
        action: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
}

/// The subject of a [`DataDirError::Locked`] message.
fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("p2pcore process (PID {pid})"),
        None => "process".to_owned(),
    }
}

/// Advice appended to a [`DataDirError::Io`] message, where there is any.
fn io_hint(action: &str, error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::PermissionDenied => "; check the directory's owner and permissions",
        io::ErrorKind::Unsupported if action == "lock" => {
            "; the file system does not support file locks: choose a data directory on a local disk"
        }
        io::ErrorKind::AlreadyExists if action == "create directory" => {
            "; the path exists but is not a directory: choose another --data-dir"
        }
        io::ErrorKind::IsADirectory => "; it should be a file: move the directory away",
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => "; free some disk space",
        io::ErrorKind::ReadOnlyFilesystem => "; the data directory must be writable",
        _ => "",
    }
}

/// A `map_err` adapter building [`DataDirError::Io`].
fn io_error(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> DataDirError {
    move |source| DataDirError::Io { path: path.to_path_buf(), action, source }
}

/// Creates `path` and its missing parents; new directories are private to the
/// user on Unix. Existing directories keep their mode.
fn create_dir(path: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path)
}

/// Takes the exclusive lock on `<dir>/lock` and writes our PID into it.
fn take_lock(dir: &Path) -> Result<File, DataDirError> {
    let path = dir.join(LOCK_FILE);
    // No truncation on open: until we hold the lock, the PID in the file
    // belongs to whoever does, and the error message needs it.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error(&path, "open"))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let pid = read_pid(&mut file);
            return Err(DataDirError::Locked { path, pid });
        }
        Err(TryLockError::Error(e)) => return Err(DataDirError::Io { path, action: "lock", source: e }),
    }
    // The lock is ours; whatever PID is left in the file is a dead holder's.
    let write = |file: &mut File| -> io::Result<()> {
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_all()
    };
    write(&mut file).map_err(io_error(&path, "write"))?;
    Ok(file)
}

/// The PID the lock's holder wrote, best effort: `None` if the file cannot be
/// read (Windows forbids reading a range another process has locked) or the
/// holder has not written its PID yet.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    // A PID is at most 10 digits; anything much longer is not one.
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Decodes an existing identity file, refusing (and never touching) one that
/// is corrupt or belongs to the other role.
fn load_identity(path: &Path, mut file: File, role: Role) -> Result<Identity, DataDirError> {
    // Read one byte more than a valid file has, which is enough to tell that
    // it is too long without reading a large stray file whole.
    let mut bytes = Vec::with_capacity(IDENTITY_LEN + 1);
    (&mut file).take(IDENTITY_LEN as u64 + 1).read_to_end(&mut bytes).map_err(io_error(path, "read"))?;
    let metadata = file.metadata().map_err(io_error(path, "read"))?;
    let identity = Identity::from_bytes(&bytes).map_err(|problem| {
        let problem = match problem {
            // Report the file's real length, not the truncated read's.
            IdError::BadLength { what, expected, .. } if bytes.len() > IDENTITY_LEN => IdError::BadLength {
                what,
                expected,
                actual: usize::try_from(metadata.len()).unwrap_or(usize::MAX),
            },
            other => other,
        };
        DataDirError::CorruptIdentity { path: path.to_path_buf(), problem }
    })?;
    if identity.role() != role {
        return Err(DataDirError::WrongRole {
            path: path.to_path_buf(),
            found: identity.role(),
            wanted: role,
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = %format_args!("{mode:04o}"),
                "the identity file holds the node's secret key but other users may read it; \
                 run `chmod 600` on it"
            );
        }
    }
    Ok(identity)
}

/// Creates a new identity from the OS CSPRNG and writes it atomically to
/// `path`, which the caller has checked does not exist.
fn create_identity(dir: &Path, path: &Path, role: Role) -> Result<Identity, DataDirError> {
    let identity = Identity::from_seed(role, os_seed()?);
    let tmp = dir.join(IDENTITY_TMP_FILE);
    // A temporary file left by a crash is ours to discard: it was never
    // renamed into place, so it is not an identity. Removing it instead of
    // truncating matters on Unix, where a mode is only applied on creation.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(DataDirError::Io { path: tmp, action: "write", source: e }),
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let write = || -> io::Result<()> {
        let mut file = options.open(&tmp)?;
        file.write_all(&identity.to_bytes())?;
        // On disk before the rename, so a crash cannot leave a renamed but
        // empty identity file.
        file.sync_all()
    };
    write().map_err(io_error(&tmp, "write"))?;
    // Nothing is replaced: the caller found no identity, and we hold the lock.
    fs::rename(&tmp, path).map_err(io_error(path, "create"))?;
    // Make the rename itself durable (best effort: not every file system
    // lets a directory be opened and synced).
    #[cfg(unix)]
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(path = %dir.display(), error = %e, "could not sync the data directory");
    }
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    /// Set (to a data directory) only in the child process of
    /// `dead_process_lock_is_taken_over`.
    const CHILD_ENV: &str = "P2PCORE_DATA_DIR_CHILD";
    /// What the child prints once it holds the lock.
    const CHILD_LOCKED: &str = "P2PCORE_CHILD_LOCKED";

    /// Every test here holds this while it runs. A child process spawned by
    /// `dead_process_lock_is_taken_over` inherits, between fork and exec,
    /// every descriptor open at that moment, and with them the flock of any
    /// data directory another test holds: that test would then see its own
    /// released lock still held. (A real host that spawns processes while
    /// another thread opens a data directory can see that too, for the
    /// microseconds until the child's exec.)
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_pid(dir: &Path) -> String {
        fs::read_to_string(dir.join(LOCK_FILE)).unwrap()
    }

    #[test]
    fn first_open_creates_identity() {
        let _serial = serial();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a").join("node");
        let data = DataDir::open(&dir, Role::Peer).unwrap();
        assert!(data.created());
        assert_eq!(data.path(), dir);
        assert_eq!(data.id().role(), Role::Peer);
        assert_eq!(data.identity().id(), data.id());
        let bytes = fs::read(dir.join(IDENTITY_FILE)).unwrap();
        assert_eq!(bytes.len(), IDENTITY_LEN);
        assert_eq!(bytes, data.identity().to_bytes());
        assert!(!dir.join(IDENTITY_TMP_FILE).exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir.join(IDENTITY_FILE)), 0o600);
            assert_eq!(mode(&dir) & 0o077, 0, "new data directory is private");
        }
        drop(data);
        assert_eq!(lock_pid(&dir), format!("{}\n", std::process::id()));
    }

    #[test]
    fn reopen_keeps_node_id() {
        let _serial = serial();
        let tmp = tempfile::tempdir().unwrap();
        let first = DataDir::open(tmp.path(), Role::Server).unwrap();
        let id = first.id();
        let secret = first.identity().keypair().secret_bytes();
        assert!(first.created());
        drop(first);
        let second = DataDir::open(tmp.path(), Role::Server).unwrap();
        assert!(!second.created());
        assert_eq!(second.id(), id);
        assert_eq!(second.identity().keypair().secret_bytes(), secret);
    }

    #[test]
    fn second_open_while_held_is_locked() {
        let _serial = serial();
        let tmp = tempfile::tempdir().unwrap();
        let first = DataDir::open(tmp.path(), Role::Peer).unwrap();
        // flock locks belong to the open file description, so a second open
        // in the same process conflicts just like another process would.
        let err = DataDir::open(tmp.path(), Role::Peer).unwrap_err();
        let DataDirError::Locked { path, pid } = &err else { panic!("expected Locked, got {err:?}") };
        assert_eq!(path, &tmp.path().join(LOCK_FILE));
        let msg = err.to_string();
        // On Windows the holder's lock keeps others from reading the PID.
        if cfg!(unix) {
            assert_eq!(*pid, Some(std::process::id()));
            assert!(msg.contains(&format!("another p2pcore process (PID {})", std::process::id())), "{msg}");
        }
        assert!(msg.contains("is using this data directory; stop it or choose another --data-dir"), "{msg}");
        assert!(msg.contains(&tmp.path().join(LOCK_FILE).display().to_string()), "{msg}");
        let id = first.id();
        drop(first);
        // The failed attempt did not disturb the holder.
        assert_eq!(lock_pid(tmp.path()), format!("{}\n", std::process::id()));
        assert_eq!(DataDir::open(tmp.path(), Role::Peer).unwrap().id(), id);
    }

    #[test]
    fn locked_message_without_pid() {
        let _serial = serial();
        let err = DataDirError::Locked { path: PathBuf::from("d/lock"), pid: None };
        assert_eq!(
            err.to_string(),
            "d/lock: another process is using this data directory; stop it or choose another --data-dir"
        );
    }

    #[test]
    fn stale_lock_file_is_taken_over() {
        let _serial = serial();
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(LOCK_FILE), "999999\n").unwrap();
        let data = DataDir::open(tmp.path(), Role::Peer).unwrap();
        assert!(data.created());
        drop(data);
        assert_eq!(lock_pid(tmp.path()), format!("{}\n", std::process::id()));
    }

    #[test]
    fn corrupt_identity_is_an_error_and_left_alone() {
        let _serial = serial();
        let long = {
            let mut v = Identity::from_seed(Role::Peer, [7; 32]).to_bytes().to_vec();
            v.push(0);
            v
        };
        let mut bad_header = Identity::from_seed(Role::Peer, [7; 32]).to_bytes();
        bad_header[4] = 99;
        let cases: [(&str, Vec<u8>, &str); 4] = [
            ("random", os_seed().unwrap()[..10].to_vec(), "expected 38 bytes, got 10"),
            ("empty", Vec::new(), "expected 38 bytes, got 0"),
            ("long", long, "expected 38 bytes, got 39"),
            ("header", bad_header.to_vec(), "bad magic or unsupported version"),
        ];
        for (case, content, problem) in cases {
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join(IDENTITY_FILE);
            fs::write(&path, &content).unwrap();
            let err = DataDir::open(tmp.path(), Role::Peer).unwrap_err();
            assert!(
                matches!(&err, DataDirError::CorruptIdentity { path: p, .. } if *p == path),
                "{case}: {err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(&path.display().to_string()), "{case}: {msg}");
            assert!(msg.contains("is not a valid p2pcore identity"), "{case}: {msg}");
            assert!(msg.contains(problem), "{case}: {msg}");
            assert!(msg.contains("it was NOT overwritten"), "{case}: {msg}");
            assert!(
                msg.contains("move it away to start with a new node ID (the old ID is lost)"),
                "{case}: {msg}"
            );
            assert!(msg.contains("restore it from a backup"), "{case}: {msg}");
            assert_eq!(fs::read(&path).unwrap(), content, "{case}: file unchanged");
            // The failure released the lock: trying again reports the same problem.
            let again = DataDir::open(tmp.path(), Role::Peer).unwrap_err();
            assert!(matches!(again, DataDirError::CorruptIdentity { .. }), "{case}: {again:?}");
        }
    }

    #[test]
    fn wrong_role_is_an_error() {
        let _serial = serial();
        let tmp = tempfile::tempdir().unwrap();
        let id = DataDir::open(tmp.path(), Role::Server).unwrap().id();
        let before = fs::read(tmp.path().join(IDENTITY_FILE)).unwrap();
        let err = DataDir::open(tmp.path(), Role::Peer).unwrap_err();
        assert!(
            matches!(&err, DataDirError::WrongRole { found: Role::Server, wanted: Role::Peer, path }
                if *path == tmp.path().join(IDENTITY_FILE)),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("this data directory belongs to a server, not a peer"), "{msg}");
        assert!(msg.contains("use a separate data directory per node"), "{msg}");
        assert_eq!(fs::read(tmp.path().join(IDENTITY_FILE)).unwrap(), before);
        assert_eq!(DataDir::open(tmp.path(), Role::Server).unwrap().id(), id);
    }

    #[test]
    fn unreadable_identity_is_an_io_error() {
        let _serial = serial();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(IDENTITY_FILE);
        fs::create_dir(&path).unwrap();
        let err = DataDir::open(tmp.path(), Role::Peer).unwrap_err();
        assert!(matches!(&err, DataDirError::Io { path: p, action: "read", .. } if *p == path), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("could not read {}: ", path.display())), "{msg}");
        assert!(path.is_dir(), "left alone");
    }

    #[test]
    fn data_dir_that_is_a_file_is_an_io_error() {
        let _serial = serial();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("file");
        fs::write(&path, "x").unwrap();
        let err = DataDir::open(&path, Role::Peer).unwrap_err();
        assert!(matches!(&err, DataDirError::Io { path: p, action: "create directory", .. } if *p == path));
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("could not create directory {}: ", path.display())), "{msg}");
        assert_eq!(fs::read(&path).unwrap(), b"x");
    }

    #[test]
    fn leftover_tmp_file_is_replaced() {
        let _serial = serial();
        let tmp = tempfile::tempdir().unwrap();
        let leftover = tmp.path().join(IDENTITY_TMP_FILE);
        fs::write(&leftover, b"half-written").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&leftover, fs::Permissions::from_mode(0o644)).unwrap();
        }
        let data = DataDir::open(tmp.path(), Role::Peer).unwrap();
        assert!(data.created());
        assert!(!leftover.exists());
        assert_eq!(fs::read(tmp.path().join(IDENTITY_FILE)).unwrap(), data.identity().to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(tmp.path().join(IDENTITY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[cfg(unix)]
    #[test]
    fn loose_identity_mode_is_used_and_kept() {
        let _serial = serial();
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let id = DataDir::open(tmp.path(), Role::Peer).unwrap().id();
        let path = tmp.path().join(IDENTITY_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        // Only a warning: the node still starts with its ID.
        assert_eq!(DataDir::open(tmp.path(), Role::Peer).unwrap().id(), id);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644, "not changed silently");
    }

    #[cfg(unix)]
    #[test]
    fn dangling_identity_link_is_not_replaced() {
        let _serial = serial();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(IDENTITY_FILE);
        let target = tmp.path().join("backup").join("identity");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = DataDir::open(tmp.path(), Role::Peer).unwrap_err();
        assert!(matches!(&err, DataDirError::Io { path: p, action: "read", .. } if *p == path), "{err:?}");
        assert!(err.to_string().contains("symbolic link to a missing file"), "{err}");
        assert_eq!(fs::read_link(&path).unwrap(), target);
    }

    #[test]
    fn os_seed_is_random() {
        let _serial = serial();
        let a = os_seed().unwrap();
        let b = os_seed().unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0; 32]);
    }

    #[test]
    fn config_uses_identity_and_fresh_seed() {
        let _serial = serial();
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path(), Role::Peer).unwrap();
        let a = data.config("alice").unwrap();
        let b = data.config("alice").unwrap();
        assert_eq!(a.identity.id(), data.id());
        assert_eq!(a.name, "alice");
        assert_ne!(a.seed, b.seed);
    }

    #[test]
    fn io_messages_give_hints() {
        let _serial = serial();
        let err = DataDirError::Io {
            path: PathBuf::from("d/identity"),
            action: "read",
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        let msg = err.to_string();
        assert!(msg.starts_with("could not read d/identity: "), "{msg}");
        assert!(msg.ends_with("; check the directory's owner and permissions"), "{msg}");
    }

    /// Helper for `dead_process_lock_is_taken_over`, run in a child process:
    /// holds the data directory named by the environment variable until
    /// killed (or for 60 s). Without the variable it does nothing.
    #[test]
    #[ignore = "run by dead_process_lock_is_taken_over in a child process"]
    fn child_holds_lock() {
        let Some(dir) = std::env::var_os(CHILD_ENV) else { return };
        let _data = DataDir::open(&dir, Role::Peer).unwrap();
        let mut out = io::stdout().lock();
        writeln!(out, "{CHILD_LOCKED}").unwrap();
        out.flush().unwrap();
        drop(out);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    #[test]
    fn dead_process_lock_is_taken_over() {
        let _serial = serial();
        use std::process::{Command, Stdio};
        let tmp = tempfile::tempdir().unwrap();
        let id = DataDir::open(tmp.path(), Role::Peer).unwrap().id();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "data_dir::tests::child_holds_lock", "--nocapture", "--ignored"])
            .env(CHILD_ENV, tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the child says it holds the lock. The test harness
        // prints its own lines around ours, possibly on the same line.
        let mut stdout = io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            if stdout.read_line(&mut line).unwrap() == 0 {
                let status = child.wait().unwrap();
                panic!("child exited ({status}) without taking the lock");
            }
            if line.contains(CHILD_LOCKED) {
                break;
            }
        }
        let err = DataDir::open(tmp.path(), Role::Peer).unwrap_err();
        let DataDirError::Locked { pid, .. } = &err else { panic!("expected Locked, got {err:?}") };
        if cfg!(unix) {
            assert_eq!(*pid, Some(child.id()));
            assert!(err.to_string().contains(&format!("(PID {})", child.id())), "{err}");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // The OS released the dead child's lock; its PID is still in the file.
        assert_eq!(lock_pid(tmp.path()), format!("{}\n", child.id()));
        let data = DataDir::open(tmp.path(), Role::Peer).unwrap();
        assert_eq!(data.id(), id);
        assert!(!data.created());
        drop(data);
        assert_eq!(lock_pid(tmp.path()), format!("{}\n", std::process::id()));
    }
}
