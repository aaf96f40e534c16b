//! `p2p_event`, `p2p_message` and `p2p_kv_list` (with its coordination
//! extras, `p2p_coord_entry`): the core's events as
//! flat, blittable structures (no unions, no pointers but the two owned
//! payloads), so Unity's P/Invoke, Python's ctypes and C all read them the
//! same way.

use crate::result::{P2P_OK, call_void, kv_code};
use crate::types::{name_field, p2p_addr, p2p_node_id};
use bytes::Bytes;
use p2pcore::{Event, KvEntry, KvError, KvEventKind, KvResponse, MasterBasis, PathKind, Reliability};
use std::ffi::{CString, c_char};

/// An event kind this header does not know (a newer library): skip it.
pub const P2P_EVENT_UNKNOWN: u32 = 0;
/// A connection to `id` (`name`) is ready; `addr` is where its packets go.
pub const P2P_EVENT_CONNECTED: u32 = 1;
/// A dial failed: `id` (if `flags & P2P_EVENT_FLAG_HAS_ID`), `addr`, `code`
/// (the connect error's code), `text`.
pub const P2P_EVENT_CONNECT_FAILED: u32 = 2;
/// A connection to `id` ended; `code` is the reason's code, `text` says it.
pub const P2P_EVENT_DISCONNECTED: u32 = 3;
/// Reliable messages to `id` on `channel`, sequence numbers `first` to
/// `last` (`count` of them), were given up on (`code`: why; `text`).
pub const P2P_EVENT_SEND_FAILED: u32 = 4;
/// A connection with `id` at `addr` was refused after TLS (`code`: why;
/// `flags & P2P_EVENT_FLAG_BY_REMOTE`: the remote refused this node).
pub const P2P_EVENT_REFUSED: u32 = 5;
/// A bootstrap server at `addr` could not be reached (`code`, `text`); it
/// is retried in `first` ms.
pub const P2P_EVENT_BOOTSTRAP_FAILED: u32 = 6;
/// Server `id` (`name`) joined this node's view of the cluster.
pub const P2P_EVENT_SERVER_UP: u32 = 7;
/// Server `id` (`name`) left it.
pub const P2P_EVENT_SERVER_DOWN: u32 = 8;
/// The Master changed: `id` (all zero while there is none), `code` its
/// basis (`P2P_MASTER_*`), `first` the Raft term, `last` the Raft group
/// (epoch); `(last, first)` is a fencing token.
pub const P2P_EVENT_MASTER_CHANGED: u32 = 9;
/// Peer `id` (`name`) came online.
pub const P2P_EVENT_PEER_ONLINE: u32 = 10;
/// Peer `id` (`name`) went offline.
pub const P2P_EVENT_PEER_OFFLINE: u32 = 11;
/// The first server connection is up: peers can be reached.
pub const P2P_EVENT_NETWORK_UP: u32 = 12;
/// The last server connection is lost: sends to peers fail with
/// `P2P_ERR_NETWORK_DOWN` until `P2P_EVENT_NETWORK_UP`.
pub const P2P_EVENT_NETWORK_DOWN: u32 = 13;
/// The path to peer `id` changed: `path` (`P2P_PATH_*`), `via` the relaying
/// server.
pub const P2P_EVENT_PATH_CHANGED: u32 = 14;
/// The send buffer for `id` has room again after `P2P_ERR_BUFFER_FULL`.
pub const P2P_EVENT_SEND_READY: u32 = 15;
/// A message arrived from `id` on `channel` with `reliability`: `message`
/// holds it and must be released with `p2p_message_release`.
pub const P2P_EVENT_MESSAGE: u32 = 16;
/// A store request (`p2p_kv_*`) finished; every request id gets exactly one
/// (unless the node is closed first). `first`: the request id; `code`: the
/// result, `P2P_OK` or a `P2P_ERR_KV_*` code, as a `p2p_result` stored in
/// the unsigned field (read it as `(p2p_result)ev.code`), with `text`
/// saying what went wrong; `last`: the store's revision the answer was
/// taken at (for a write, the revision it created; for
/// `p2p_kv_session_open`, the new session's id instead); `count`: the
/// entries in `kv` (reads; a cas that failed: the key's current entry, if
/// any) or the keys removed (deletes; `p2p_kv_session_close`: the keys the
/// session held); `flags`: `P2P_EVENT_FLAG_KV_SUCCEEDED` (a
/// cas made its put), `P2P_EVENT_FLAG_KV_MORE` (a read was cut by its
/// limit); `kv`: the entries, now the caller's (`p2p_kv_list_free`), or
/// NULL when there are none.
pub const P2P_EVENT_KV_DONE: u32 = 17;
/// Changes under a watched prefix (`p2p_kv_watch`), oldest first, each
/// once, with no gaps: `first`: the watch id; `count`: changes in `kv`
/// (each entry's `kind` says put or delete, its `mod_revision` is the
/// change's revision); `last`: the newest change's revision; `kv`: the
/// caller's (`p2p_kv_list_free`).
pub const P2P_EVENT_KV_WATCH: u32 = 18;
/// A watch ended by itself: `first`: the watch id; `code`: why, as in
/// `P2P_EVENT_KV_DONE` (`P2P_ERR_KV_COMPACTED`: its start is no longer
/// kept, `last` is the oldest revision that is); `text`.
pub const P2P_EVENT_KV_WATCH_ENDED: u32 = 19;
/// A lock is held (`p2p_coord_lock`): `first`: the request id; `last`: its
/// fencing token (strictly greater than every earlier grant of the lock:
/// pass it with every write the lock protects, and have the resource
/// refuse older tokens). Held until `p2p_coord_release` or a
/// `P2P_EVENT_COORD_ENDED`.
pub const P2P_EVENT_COORD_LOCK_ACQUIRED: u32 = 20;
/// This peer leads the group (`p2p_coord_campaign`): `first`: the request
/// id; `last`: the term (a fencing token that grows with every new
/// leadership). Leads until `p2p_coord_release` or a
/// `P2P_EVENT_COORD_ENDED` (`P2P_ERR_COORD_LEADERSHIP_LOST`, ...).
pub const P2P_EVENT_COORD_ELECTED: u32 = 21;
/// Who leads a group (`p2p_coord_leader`; with `watch`, again at every
/// change): `first`: the request id; `id`: the leading peer; `last`: its
/// term; `count` 1 and `kv` one entry whose `value` is the value the leader
/// campaigned with or last set (its `key` is empty, its `create_revision`
/// the term); free `kv` with `p2p_kv_list_free`. While nobody leads:
/// `flags & P2P_EVENT_FLAG_COORD_NO_LEADER`, `id` all zero, `last` and
/// `count` 0, `kv` NULL.
pub const P2P_EVENT_COORD_LEADER: u32 = 22;
/// A push was applied (`p2p_coord_push`): `first`: the request id;
/// `flags & P2P_EVENT_FLAG_COORD_APPLIED`: the item was added (without it:
/// an item with that id was already queued and stays as it was).
pub const P2P_EVENT_COORD_PUSHED: u32 = 23;
/// A remove was applied (`p2p_coord_remove`): `first`: the request id;
/// `flags & P2P_EVENT_FLAG_COORD_APPLIED`: an item was removed (without
/// it: none with that id was queued).
pub const P2P_EVENT_COORD_REMOVED: u32 = 24;
/// A pop took its items (`p2p_coord_pop`), all it asked for, in queue
/// order (highest priority first, then oldest): `first`: the request id;
/// `count`: the items; `kv`: the caller's (`p2p_kv_list_free`), where each
/// `entries[i]` has `key` = the item id, `value` = its payload,
/// `create_revision` = `mod_revision` = the revision it was pushed at,
/// `version` = its priority as a 64-bit two's complement value (cast to
/// `int64_t`), and `kv->coord[i]` its `priority` and `node` (the peer that
/// pushed it).
pub const P2P_EVENT_COORD_POPPED: u32 = 25;
/// A watched queue's length (`p2p_coord_watch_queue`), now and at every
/// change: `first`: the request id; `count`: the items queued.
pub const P2P_EVENT_COORD_QUEUE_LENGTH: u32 = 26;
/// An instance is registered (`p2p_coord_register`): listed while its
/// session lives. `first`: the request id.
pub const P2P_EVENT_COORD_REGISTERED: u32 = 27;
/// The live instances a query matched (`p2p_coord_query`; with `watch`,
/// again at every change), least loaded first: `first`: the request id;
/// `count`: the instances; `kv`: the caller's (`p2p_kv_list_free`), NULL
/// when none matched, where each `entries[i]` has `key` = the instance id,
/// `value` = its data, `create_revision` = `mod_revision` = the revision
/// it registered at, `version` = its load, and `kv->coord[i]` its `node`,
/// `load`, `capacity` and `tags`.
pub const P2P_EVENT_COORD_INSTANCES: u32 = 28;
/// A `p2p_coord_update` was applied, or why not: `first`: the request id
/// (the campaign or registration); `code`: `P2P_OK`, or a failure as in
/// `P2P_EVENT_KV_DONE` (`P2P_ERR_COORD_SESSION_ENDED`, `P2P_ERR_KV_*`),
/// with `text`.
pub const P2P_EVENT_COORD_UPDATED: u32 = 29;
/// A `p2p_coord_release` is done (the lock unlocked, the campaign resigned,
/// the instance deregistered, the watch or wait stopped): `first`: the
/// request id. Nothing more comes for it.
pub const P2P_EVENT_COORD_RELEASED: u32 = 30;
/// A coordination request ended without being released: it failed, timed
/// out, or lost what it held. `first`: the request id; `code`: why, as a
/// `p2p_result` in the unsigned field (`P2P_ERR_COORD_TIMEOUT`,
/// `P2P_ERR_COORD_SESSION_ENDED`, `P2P_ERR_COORD_LEADERSHIP_LOST`,
/// `P2P_ERR_COORD_NOT_ENOUGH` with the items queued in `count`,
/// `P2P_ERR_KV_*`, ...); `text` says it. Nothing more comes for it. (One-shot
/// requests, pushes, removes, pops, `p2p_coord_leader` and
/// `p2p_coord_query` without `watch`, end with their answer instead.)
pub const P2P_EVENT_COORD_ENDED: u32 = 31;
/// A lookup (`p2p_lookup_id`, `p2p_lookup_name`) was answered: `first`:
/// the lookup id; `count`: the peers found (0: none is online); when there
/// are any, `id` and `name` are the first of them, and all of them are now
/// listed by `p2p_node_peers` (`p2p_core_peers`).
pub const P2P_EVENT_LOOKUP_DONE: u32 = 32;

/// `p2p_event.flags`: `id` is set (`P2P_EVENT_CONNECT_FAILED`).
pub const P2P_EVENT_FLAG_HAS_ID: u8 = 1;
/// `p2p_event.flags`: the remote refused this node (`P2P_EVENT_REFUSED`).
pub const P2P_EVENT_FLAG_BY_REMOTE: u8 = 2;
/// `p2p_event.flags`: a cas found what it expected and made its put
/// (`P2P_EVENT_KV_DONE`).
pub const P2P_EVENT_FLAG_KV_SUCCEEDED: u8 = 4;
/// `p2p_event.flags`: more keys matched than the read returned (its limit,
/// or 1 MiB of answer) (`P2P_EVENT_KV_DONE`).
pub const P2P_EVENT_FLAG_KV_MORE: u8 = 8;
/// `p2p_event.flags`: the push added its item, or the remove removed one
/// (`P2P_EVENT_COORD_PUSHED`, `P2P_EVENT_COORD_REMOVED`).
pub const P2P_EVENT_FLAG_COORD_APPLIED: u8 = 16;
/// `p2p_event.flags`: nobody leads the group (`P2P_EVENT_COORD_LEADER`).
pub const P2P_EVENT_FLAG_COORD_NO_LEADER: u8 = 32;

/// `p2p_kv_entry.kind`: the key as it is (reads), or a put that created or
/// changed it (watches).
pub const P2P_KV_PUT: u8 = 0;
/// `p2p_kv_entry.kind`: the key was deleted (watches; `value` is empty,
/// `create_revision` and `version` are 0).
pub const P2P_KV_DELETE: u8 = 1;
/// `p2p_kv_entry.kind`: the key was deleted because the session it was
/// bound to expired (its owner was away from every server for the session's TTL).
pub const P2P_KV_EXPIRED: u8 = 2;

/// Reliable: exactly once, in order within its channel.
pub const P2P_RELIABLE: u8 = 0;
/// Unreliable: at most once, in no particular order; must fit one packet.
pub const P2P_UNRELIABLE: u8 = 1;

/// No path (not linked, or none at this moment).
pub const P2P_PATH_NONE: u8 = 0;
/// Straight to the peer's address.
pub const P2P_PATH_DIRECT: u8 = 1;
/// Straight to the peer's address, after UDP hole punching.
pub const P2P_PATH_PUNCHED: u8 = 2;
/// Through a server (`via`) that forwards the end-to-end encrypted packets.
pub const P2P_PATH_RELAYED: u8 = 3;

/// No Master.
pub const P2P_MASTER_NONE: u32 = 0;
/// The only live server.
pub const P2P_MASTER_SOLO: u32 = 1;
/// The elder of two live servers.
pub const P2P_MASTER_ELDEST: u32 = 2;
/// The Raft leader of three or more servers: the only partition-safe basis.
pub const P2P_MASTER_RAFT: u32 = 3;

/// A received message. The library owns it until `p2p_message_release`;
/// `data` stays valid until then, from any thread.
#[repr(C)]
#[derive(Debug)]
pub struct p2p_message {
    /// The payload (`len` bytes; NULL when `len` is 0).
    pub data: *const u8,
    /// Bytes in `data`.
    pub len: u32,
    /// The channel it was sent on.
    pub channel: u8,
    /// `P2P_RELIABLE` or `P2P_UNRELIABLE`.
    pub reliability: u8,
    /// The sender.
    pub from: p2p_node_id,
}

/// The library's allocation behind a `p2p_message *`: the public header
/// first (so the pointer converts both ways), then what keeps `data` alive.
#[repr(C)]
struct OwnedMessage {
    header: p2p_message,
    bytes: Bytes,
}

/// One key of the store, as a read answered it or a watch reported it.
/// Part of a `p2p_kv_list`: its bytes stay valid until the list is freed.
/// 56 bytes on 64-bit platforms, 48 on 32-bit ones.
#[repr(C)]
#[derive(Debug)]
pub struct p2p_kv_entry {
    /// The revision that created the key (0 for a delete).
    pub create_revision: u64,
    /// The revision that last changed it (a watch's change: its revision).
    pub mod_revision: u64,
    /// Writes since it was created, 1 after the first (0 for a delete).
    pub version: u64,
    /// The key (`key_len` bytes, not NUL-terminated; NULL when empty).
    pub key: *const u8,
    /// The value (`value_len` bytes; NULL when empty).
    pub value: *const u8,
    /// Bytes in `key` (at most `P2P_KV_MAX_KEY_LEN`).
    pub key_len: u32,
    /// Bytes in `value` (at most `P2P_KV_MAX_VALUE_LEN`).
    pub value_len: u32,
    /// `P2P_KV_PUT`, `P2P_KV_DELETE` or `P2P_KV_EXPIRED`.
    pub kind: u8,
    /// Padding; zero.
    pub reserved: [u8; 7],
}

/// What a coordination event says about one entry of its `p2p_kv_list`
/// beyond the key and value (`kv->coord[i]` goes with `kv->entries[i]`):
/// a popped queue item (`P2P_EVENT_COORD_POPPED`) or a registered instance
/// (`P2P_EVENT_COORD_INSTANCES`). Its bytes stay valid until the list is
/// freed. 40 bytes on 64-bit platforms, 36 on 32-bit ones.
#[repr(C)]
#[derive(Debug)]
pub struct p2p_coord_entry {
    /// The peer that pushed the item, or the node serving the instance
    /// (all zero if the registration did not say).
    pub node: p2p_node_id,
    /// Padding; zero.
    pub reserved: [u8; 3],
    /// The item's priority (higher pops first); 0 for an instance.
    pub priority: i32,
    /// The instance's load; 0 for an item.
    pub load: u32,
    /// The instance's capacity in the same unit (0: unbounded); 0 for an
    /// item.
    pub capacity: u32,
    /// The instance's tags as `"k=v,k2=v2"` in key order, NUL-terminated,
    /// `""` when it has none (and for an item); never NULL. Written as is: a
    /// key or value that itself holds `,` or `=` (possible from the Rust
    /// API) makes it ambiguous, and a NUL in one is dropped.
    pub tags: *const c_char,
}

/// Entries a `P2P_EVENT_KV_DONE`, `P2P_EVENT_KV_WATCH`,
/// `P2P_EVENT_COORD_LEADER`, `P2P_EVENT_COORD_POPPED` or
/// `P2P_EVENT_COORD_INSTANCES` handed over: the caller's until
/// `p2p_kv_list_free`, from any thread. Only the library allocates it (it
/// may grow at the end in later versions). 24 bytes on 64-bit platforms,
/// 16 on 32-bit ones.
#[repr(C)]
#[derive(Debug)]
pub struct p2p_kv_list {
    /// `count` entries, in key order (reads), revision order (watches) or
    /// the order the event says.
    pub entries: *const p2p_kv_entry,
    /// Entries in `entries`.
    pub count: u32,
    /// Padding; zero.
    pub reserved: u32,
    /// `P2P_EVENT_COORD_POPPED` and `P2P_EVENT_COORD_INSTANCES`: `count`
    /// more entries, `coord[i]` about `entries[i]`. NULL for the other
    /// events.
    pub coord: *const p2p_coord_entry,
}

/// The library's allocation behind a `p2p_kv_list *`: the public header
/// first, then what its pointers point into.
#[repr(C)]
struct OwnedKvList {
    header: p2p_kv_list,
    entries: Vec<p2p_kv_entry>,
    /// The keys and values the entries point into (their heap buffers do
    /// not move with the vector).
    data: Vec<KvEntry>,
    coord: Vec<p2p_coord_entry>,
    /// The tags the coordination entries point into.
    tags: Vec<CString>,
}

/// A coordination entry's content, before its tags are pinned.
pub(crate) struct CoordExtra {
    pub(crate) node: p2p_node_id,
    pub(crate) priority: i32,
    pub(crate) load: u32,
    pub(crate) capacity: u32,
    pub(crate) tags: String,
}

/// A list of `entries` (with their kinds) the caller now owns; NULL for
/// none.
pub(crate) fn kv_list(items: Vec<(KvEntry, u8)>) -> *mut p2p_kv_list {
    owned_list(items, Vec::new())
}

/// A list of `entries` (with their kinds) and, for coordination events,
/// one `p2p_coord_entry` per entry (`extras` empty: none); NULL for no
/// entries.
pub(crate) fn owned_list(items: Vec<(KvEntry, u8)>, extras: Vec<CoordExtra>) -> *mut p2p_kv_list {
    if items.is_empty() {
        return std::ptr::null_mut();
    }
    debug_assert!(extras.is_empty() || extras.len() == items.len());
    let ptr = |b: &[u8]| if b.is_empty() { std::ptr::null() } else { b.as_ptr() };
    // Keys are at most 1 KiB and values 32 KiB: far below 4 GiB.
    let len = |b: &[u8]| u32::try_from(b.len()).unwrap_or(u32::MAX);
    let entries: Vec<p2p_kv_entry> = items
        .iter()
        .map(|(e, kind)| p2p_kv_entry {
            create_revision: e.create_revision,
            mod_revision: e.mod_revision,
            version: e.version,
            key: ptr(&e.key),
            value: ptr(&e.value),
            key_len: len(&e.key),
            value_len: len(&e.value),
            kind: *kind,
            reserved: [0; 7],
        })
        .collect();
    let tags: Vec<CString> =
        extras.iter().map(|x| CString::new(x.tags.replace('\0', "")).unwrap_or_default()).collect();
    let coord: Vec<p2p_coord_entry> = extras
        .into_iter()
        .zip(&tags)
        .map(|(x, t)| p2p_coord_entry {
            node: x.node,
            reserved: [0; 3],
            priority: x.priority,
            load: x.load,
            capacity: x.capacity,
            tags: t.as_ptr(),
        })
        .collect();
    let header = p2p_kv_list {
        entries: entries.as_ptr(),
        count: u32::try_from(entries.len()).unwrap_or(u32::MAX),
        reserved: 0,
        coord: if coord.is_empty() { std::ptr::null() } else { coord.as_ptr() },
    };
    let data = items.into_iter().map(|(e, _)| e).collect();
    Box::into_raw(Box::new(OwnedKvList { header, entries, data, coord, tags })).cast::<p2p_kv_list>()
}

/// One event. Which fields mean something depends on `kind` (see the
/// `P2P_EVENT_*` constants); the others are zero. 336 bytes on 64-bit
/// platforms, 328 on 32-bit ones; only the two pointers differ.
#[repr(C)]
#[derive(Debug)]
pub struct p2p_event {
    /// `P2P_EVENT_*`.
    pub kind: u32,
    /// A reason or error code, stable across versions (the Rust
    /// documentation of p2pcore's `code()` methods lists them), or the
    /// Master's basis.
    pub code: u32,
    /// First sequence number (`SEND_FAILED`), Raft term (`MASTER_CHANGED`),
    /// retry delay in ms (`BOOTSTRAP_FAILED`).
    pub first: u64,
    /// Last sequence number (`SEND_FAILED`), Raft group (`MASTER_CHANGED`).
    pub last: u64,
    /// Messages given up on (`SEND_FAILED`).
    pub count: u32,
    /// The channel (`MESSAGE`, `SEND_FAILED`).
    pub channel: u8,
    /// `P2P_RELIABLE` or `P2P_UNRELIABLE` (`MESSAGE`).
    pub reliability: u8,
    /// `P2P_PATH_*` (`PATH_CHANGED`).
    pub path: u8,
    /// `P2P_EVENT_FLAG_*`.
    pub flags: u8,
    /// The node the event is about (sender, destination, remote, Master).
    pub id: p2p_node_id,
    /// The relaying server (`PATH_CHANGED` with `P2P_PATH_RELAYED`).
    pub via: p2p_node_id,
    /// Padding; zero.
    pub reserved: [u8; 2],
    /// An address (`CONNECTED`, `CONNECT_FAILED`, `REFUSED`,
    /// `BOOTSTRAP_FAILED`).
    pub addr: p2p_addr,
    /// The node's name, NUL-terminated (`CONNECTED`, `SERVER_*`, `PEER_*`).
    pub name: [c_char; 68],
    /// A human-readable description of a failure, NUL-terminated, cut to
    /// fit (the failure events).
    pub text: [c_char; 160],
    /// `P2P_EVENT_MESSAGE`: the message, now the caller's: release it with
    /// `p2p_message_release` (from any thread). NULL otherwise.
    pub message: *mut p2p_message,
    /// `P2P_EVENT_KV_DONE` (with entries), `P2P_EVENT_KV_WATCH`,
    /// `P2P_EVENT_COORD_LEADER` (with a leader), `P2P_EVENT_COORD_POPPED`
    /// and `P2P_EVENT_COORD_INSTANCES` (with instances): the entries, now
    /// the caller's: free them with `p2p_kv_list_free` (from any thread).
    /// NULL otherwise.
    pub kv: *mut p2p_kv_list,
}

impl p2p_event {
    pub(crate) fn empty(kind: u32) -> Self {
        Self {
            kind,
            code: 0,
            first: 0,
            last: 0,
            count: 0,
            channel: 0,
            reliability: 0,
            path: P2P_PATH_NONE,
            flags: 0,
            id: p2p_node_id::default(),
            via: p2p_node_id::default(),
            reserved: [0; 2],
            addr: p2p_addr::default(),
            name: [0; 68],
            text: [0; 160],
            message: std::ptr::null_mut(),
            kv: std::ptr::null_mut(),
        }
    }
}

pub(crate) fn reliability_code(r: Reliability) -> u8 {
    if r == Reliability::Unreliable { P2P_UNRELIABLE } else { P2P_RELIABLE }
}

pub(crate) fn path_code(p: Option<PathKind>) -> (u8, p2p_node_id) {
    match p {
        None => (P2P_PATH_NONE, p2p_node_id::default()),
        Some(PathKind::Direct) => (P2P_PATH_DIRECT, p2p_node_id::default()),
        Some(PathKind::Punched) => (P2P_PATH_PUNCHED, p2p_node_id::default()),
        Some(PathKind::Relayed { via }) => (P2P_PATH_RELAYED, via.into()),
        // A path kind this library version does not name.
        Some(_) => (P2P_PATH_NONE, p2p_node_id::default()),
    }
}

pub(crate) fn basis_code(b: Option<MasterBasis>) -> u32 {
    match b {
        None => P2P_MASTER_NONE,
        Some(MasterBasis::Solo) => P2P_MASTER_SOLO,
        Some(MasterBasis::Eldest) => P2P_MASTER_ELDEST,
        Some(MasterBasis::Raft) => P2P_MASTER_RAFT,
        // A basis this library version does not name: there is a Master.
        Some(_) => P2P_MASTER_SOLO,
    }
}

/// A core event as a `p2p_event`. A message's bytes move into a library
/// allocation the caller now owns (no copy).
pub(crate) fn to_c(event: Event) -> p2p_event {
    use P2P_EVENT_MESSAGE as MESSAGE;
    match event {
        Event::MessageReceived { from, channel, bytes, reliability } => {
            let mut e = p2p_event::empty(MESSAGE);
            e.id = from.into();
            e.channel = channel;
            e.reliability = reliability_code(reliability);
            let header = p2p_message {
                data: if bytes.is_empty() { std::ptr::null() } else { bytes.as_ptr() },
                // Messages are at most Config::max_message_size, far below 4 GiB.
                len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
                channel,
                reliability: e.reliability,
                from: e.id,
            };
            let owned = Box::new(OwnedMessage { header, bytes });
            e.message = Box::into_raw(owned).cast::<p2p_message>();
            e
        }
        Event::Connected { id, name, addr } => {
            let mut e = p2p_event::empty(P2P_EVENT_CONNECTED);
            e.id = id.into();
            e.name = name_field(&name);
            e.addr = addr.into();
            e
        }
        Event::ConnectFailed { id, addr, error } => {
            let mut e = p2p_event::empty(P2P_EVENT_CONNECT_FAILED);
            if let Some(id) = id {
                e.id = id.into();
                e.flags |= P2P_EVENT_FLAG_HAS_ID;
            }
            e.addr = addr.into();
            e.code = error.code();
            e.text = name_field(&error.to_string());
            e
        }
        Event::Disconnected { id, reason } => {
            let mut e = p2p_event::empty(P2P_EVENT_DISCONNECTED);
            e.id = id.into();
            e.code = reason.code();
            e.text = name_field(&reason.to_string());
            e
        }
        Event::SendFailed { to, channel, first, last, messages, reason } => {
            let mut e = p2p_event::empty(P2P_EVENT_SEND_FAILED);
            e.id = to.into();
            e.channel = channel;
            e.first = first;
            e.last = last;
            e.count = u32::try_from(messages).unwrap_or(u32::MAX);
            e.code = reason.code();
            e.text = name_field(&reason.to_string());
            e
        }
        Event::Refused { id, addr, reason, by_remote } => {
            let mut e = p2p_event::empty(P2P_EVENT_REFUSED);
            e.id = id.into();
            e.addr = addr.into();
            e.code = reason.code();
            e.text = name_field(&reason.to_string());
            if by_remote {
                e.flags |= P2P_EVENT_FLAG_BY_REMOTE;
            }
            e
        }
        Event::BootstrapFailed { addr, error, retry_in } => {
            let mut e = p2p_event::empty(P2P_EVENT_BOOTSTRAP_FAILED);
            e.addr = addr.into();
            e.code = error.code();
            e.text = name_field(&error.to_string());
            e.first = u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX);
            e
        }
        Event::ServerUp { id, name } => named(P2P_EVENT_SERVER_UP, id.into(), &name),
        Event::ServerDown { id, name } => named(P2P_EVENT_SERVER_DOWN, id.into(), &name),
        Event::PeerOnline { id, name } => named(P2P_EVENT_PEER_ONLINE, id.into(), &name),
        Event::PeerOffline { id, name } => named(P2P_EVENT_PEER_OFFLINE, id.into(), &name),
        Event::MasterChanged { master, basis, term, epoch } => {
            let mut e = p2p_event::empty(P2P_EVENT_MASTER_CHANGED);
            e.id = master.map(p2p_node_id::from).unwrap_or_default();
            e.code = basis_code(basis);
            e.first = term;
            e.last = epoch;
            e
        }
        Event::NetworkUp => p2p_event::empty(P2P_EVENT_NETWORK_UP),
        Event::NetworkDown => p2p_event::empty(P2P_EVENT_NETWORK_DOWN),
        Event::PathChanged { peer, path } => {
            let mut e = p2p_event::empty(P2P_EVENT_PATH_CHANGED);
            e.id = peer.into();
            (e.path, e.via) = path_code(path);
            e
        }
        Event::SendReady { to } => {
            let mut e = p2p_event::empty(P2P_EVENT_SEND_READY);
            e.id = to.into();
            e
        }
        Event::KvDone { id, result } => {
            let mut e = p2p_event::empty(P2P_EVENT_KV_DONE);
            e.first = id;
            match result {
                Ok(answer) => {
                    e.code = P2P_OK as u32;
                    e.last = answer.revision;
                    let mut entries = Vec::new();
                    kv_response(&mut e, answer.response, &mut entries);
                    if !entries.is_empty() {
                        e.count = u32::try_from(entries.len()).unwrap_or(u32::MAX);
                        e.kv = kv_list(entries.into_iter().map(|entry| (entry, P2P_KV_PUT)).collect());
                    }
                }
                Err(error) => kv_failure(&mut e, &error),
            }
            e
        }
        Event::KvWatch { id, events } => {
            let mut e = p2p_event::empty(P2P_EVENT_KV_WATCH);
            e.first = id;
            e.last = events.iter().map(|c| c.entry.mod_revision).max().unwrap_or(0);
            e.count = u32::try_from(events.len()).unwrap_or(u32::MAX);
            let items = events
                .into_iter()
                .map(|c| {
                    let kind = match c.kind {
                        KvEventKind::Delete => P2P_KV_DELETE,
                        KvEventKind::Expired => P2P_KV_EXPIRED,
                        _ => P2P_KV_PUT,
                    };
                    (c.entry, kind)
                })
                .collect();
            e.kv = kv_list(items);
            e
        }
        Event::KvWatchEnded { id, error } => {
            let mut e = p2p_event::empty(P2P_EVENT_KV_WATCH_ENDED);
            e.first = id;
            kv_failure(&mut e, &error);
            e
        }
        Event::Coord(ev) => crate::coord::event_to_c(ev),
        Event::LookupDone { query, peers } => {
            let mut e = p2p_event::empty(P2P_EVENT_LOOKUP_DONE);
            e.first = query;
            e.count = u32::try_from(peers.len()).unwrap_or(u32::MAX);
            if let Some(first) = peers.first() {
                e.id = first.id.into();
                e.name = name_field(&first.name);
            }
            e
        }
        other => {
            let mut e = p2p_event::empty(P2P_EVENT_UNKNOWN);
            e.text = name_field(&format!("{other:?}"));
            e
        }
    }
}

/// A store answer's fields: the counts and flags, and the entries of its
/// reads (a transaction's too: a cas that failed reads the key).
fn kv_response(e: &mut p2p_event, response: KvResponse, entries: &mut Vec<KvEntry>) {
    match response {
        KvResponse::Get { entries: got, more } => {
            entries.extend(got);
            if more {
                e.flags |= P2P_EVENT_FLAG_KV_MORE;
            }
        }
        KvResponse::Delete { deleted } | KvResponse::SessionClosed { deleted } => {
            e.count = u32::try_from(deleted).unwrap_or(u32::MAX)
        }
        KvResponse::SessionOpened { session } => e.last = session,
        KvResponse::Txn { succeeded, responses } => {
            if succeeded {
                e.flags |= P2P_EVENT_FLAG_KV_SUCCEEDED;
            }
            for r in responses {
                kv_response(e, r, entries);
            }
        }
        // A put, or an answer this library version does not name.
        _ => {}
    }
}

fn kv_failure(e: &mut p2p_event, error: &KvError) {
    // The negative result code, kept bit for bit in the unsigned field.
    e.code = kv_code(error) as u32;
    if let KvError::Compacted { oldest } = error {
        e.last = *oldest;
    }
    e.text = name_field(&error.to_string());
}

fn named(kind: u32, id: p2p_node_id, name: &str) -> p2p_event {
    let mut e = p2p_event::empty(kind);
    e.id = id;
    e.name = name_field(name);
    e
}

/// Releases a message taken from a `P2P_EVENT_MESSAGE` event (its `data`
/// is invalid afterwards). NULL is fine; releasing twice is not.
///
/// Thread safety: any thread, also after the node that produced it was
/// freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_message_release(message: *mut p2p_message) {
    call_void(|| {
        if !message.is_null() {
            // SAFETY: every `p2p_message *` the library hands out is a
            // boxed `OwnedMessage` (header first), released once.
            drop(unsafe { Box::from_raw(message.cast::<OwnedMessage>()) });
        }
    })
}

/// Frees the entries taken from a `P2P_EVENT_KV_DONE`,
/// `P2P_EVENT_KV_WATCH` or `P2P_EVENT_COORD_*` event (their keys, values
/// and coordination entries are invalid afterwards). NULL is fine; freeing twice is not.
///
/// Thread safety: any thread, also after the node that produced it was
/// freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_kv_list_free(list: *mut p2p_kv_list) {
    call_void(|| {
        if !list.is_null() {
            // SAFETY: every `p2p_kv_list *` the library hands out is a
            // boxed `OwnedKvList` (header first), freed once.
            drop(unsafe { Box::from_raw(list.cast::<OwnedKvList>()) });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2pcore::{Identity, Role};

    #[test]
    fn the_layout_is_the_documented_one() {
        assert_eq!(std::mem::offset_of!(p2p_event, id), 32);
        assert_eq!(std::mem::offset_of!(p2p_event, addr), 68);
        assert_eq!(std::mem::offset_of!(p2p_event, name), 92);
        assert_eq!(std::mem::offset_of!(p2p_event, text), 160);
        assert_eq!(std::mem::offset_of!(p2p_event, message), 320);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(std::mem::size_of::<p2p_event>(), 336);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(std::mem::size_of::<p2p_kv_entry>(), 56);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(std::mem::size_of::<p2p_kv_list>(), 24);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(std::mem::size_of::<p2p_coord_entry>(), 40);
        assert_eq!(std::mem::size_of::<p2p_addr>(), 24);
        assert_eq!(std::mem::size_of::<p2p_node_id>(), 17);
    }

    #[test]
    fn a_message_event_owns_its_bytes_without_a_copy() {
        let from = Identity::from_seed(Role::Peer, [1; 32]).id();
        let bytes = Bytes::from(vec![1, 2, 3]);
        let ptr = bytes.as_ptr();
        let e = to_c(Event::MessageReceived { from, channel: 4, bytes, reliability: Reliability::Reliable });
        assert_eq!(e.kind, P2P_EVENT_MESSAGE);
        assert_eq!(e.id, p2p_node_id::from(from));
        // SAFETY: a live message from to_c.
        let m = unsafe { &*e.message };
        assert_eq!((m.data, m.len, m.channel, m.from), (ptr, 3, 4, e.id));
        // SAFETY: released once.
        unsafe { p2p_message_release(e.message) };
        // SAFETY: NULL is fine.
        unsafe { p2p_message_release(std::ptr::null_mut()) };
    }

    #[test]
    fn a_store_failure_carries_its_code_and_text() {
        let e = to_c(Event::KvDone { id: 7, result: Err(KvError::Unavailable) });
        assert_eq!((e.kind, e.first, e.code as i32), (P2P_EVENT_KV_DONE, 7, crate::P2P_ERR_KV_UNAVAILABLE));
        assert!(e.kv.is_null());
        // SAFETY: NUL-terminated by name_field.
        let text = unsafe { std::ffi::CStr::from_ptr(e.text.as_ptr()) }.to_str().unwrap();
        assert!(text.contains("did not answer in time"), "{text}");
        let e = to_c(Event::KvWatchEnded { id: 3, error: KvError::Compacted { oldest: 42 } });
        assert_eq!(
            (e.kind, e.first, e.code as i32, e.last),
            (P2P_EVENT_KV_WATCH_ENDED, 3, crate::P2P_ERR_KV_COMPACTED, 42)
        );
    }

    #[test]
    fn a_kv_list_points_into_what_it_owns() {
        let entry = |k: &str, v: &str, rev| KvEntry {
            key: k.into(),
            value: v.into(),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
        };
        assert!(kv_list(Vec::new()).is_null());
        let list = kv_list(vec![(entry("a", "x", 1), P2P_KV_PUT), (entry("b", "", 2), P2P_KV_DELETE)]);
        // SAFETY: a live list from kv_list with `count` entries.
        let l = unsafe { &*list };
        let entries = unsafe { std::slice::from_raw_parts(l.entries, l.count as usize) };
        // SAFETY: each key and value is `*_len` bytes in the list's allocation.
        let bytes = |p: *const u8, n: u32| unsafe { std::slice::from_raw_parts(p, n as usize) }.to_vec();
        assert_eq!(bytes(entries[0].key, entries[0].key_len), b"a");
        assert_eq!(bytes(entries[0].value, entries[0].value_len), b"x");
        assert_eq!(
            (entries[1].kind, entries[1].mod_revision, entries[1].value),
            (P2P_KV_DELETE, 2, std::ptr::null())
        );
        // SAFETY: freed once; NULL is fine.
        unsafe {
            p2p_kv_list_free(list);
            p2p_kv_list_free(std::ptr::null_mut());
        }
    }
}
