//! Coordination recipes over the cluster's store (peers only): locks with
//! fencing tokens, leader elections, queues and a registry of live
//! instances, as the core runs them (`p2pcore::coord`). Each request
//! returns an id at once and reports through `P2P_EVENT_COORD_*` events
//! with that id in `first`, polled with `p2p_poll_events`; what it holds
//! (a lock, a candidacy, a registration, a watch) it keeps until
//! `p2p_coord_release` or a `P2P_EVENT_COORD_ENDED`. Locks, campaigns and
//! registrations are bound to a session (`p2p_kv_session_open`): when
//! this peer is gone for the session's TTL, what it held is let go by
//! itself. Coordination ids are their own numbering, apart from store
//! request ids and watch ids.

use crate::event::{
    CoordExtra, P2P_EVENT_COORD_ELECTED, P2P_EVENT_COORD_ENDED, P2P_EVENT_COORD_INSTANCES,
    P2P_EVENT_COORD_LEADER, P2P_EVENT_COORD_LOCK_ACQUIRED, P2P_EVENT_COORD_POPPED, P2P_EVENT_COORD_PUSHED,
    P2P_EVENT_COORD_QUEUE_LENGTH, P2P_EVENT_COORD_REGISTERED, P2P_EVENT_COORD_RELEASED,
    P2P_EVENT_COORD_REMOVED, P2P_EVENT_COORD_UPDATED, P2P_EVENT_FLAG_COORD_APPLIED,
    P2P_EVENT_FLAG_COORD_NO_LEADER, P2P_EVENT_UNKNOWN, P2P_KV_PUT, owned_list, p2p_event,
};
use crate::node::{node_arg, p2p_node};
use crate::result::{Error, P2P_ERR_NOT_FOUND, P2P_OK, call, coord_code, p2p_result};
use crate::types::{bytes_arg, name_field, p2p_node_id, str_arg};
use p2pcore::{
    CoordError, CoordEvent, CoordRequest, CoordUpdate, InstanceFilter, InstanceInfo, KvEntry, MAX_COORD_NAME,
    MAX_POP,
};
use std::collections::BTreeMap;
use std::ffi::c_char;
use std::time::Duration;

/// Longest lock, group, queue or service name, and longest queue item or
/// instance id, in bytes (UTF-8, without the NUL).
pub const P2P_COORD_MAX_NAME: u32 = 256;
/// Most items one `p2p_coord_pop` takes.
pub const P2P_COORD_MAX_POP: u32 = 64;

// The header's constants are the core's bounds.
const _: () = assert!(P2P_COORD_MAX_NAME as usize == MAX_COORD_NAME);
const _: () = assert!(P2P_COORD_MAX_POP == MAX_POP);

/// Starts `req` on `node`; its id, or the node's refusal.
fn start(node: &p2p_node, req: CoordRequest) -> Result<i64, Error> {
    let id = node.command(move |n, now| n.coord(now, req))??;
    // Ids count up from 0, one per request: far below i64::MAX.
    Ok(i64::try_from(id).unwrap_or(i64::MAX))
}

/// A name argument: NUL-terminated UTF-8, not NULL. Its length is checked
/// by the core (`P2P_ERR_COORD_INVALID_NAME`).
///
/// # Safety
/// `p` is NULL or a NUL-terminated string valid for `'a`.
pub(crate) unsafe fn name_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, Error> {
    // SAFETY: the caller's promise.
    unsafe { str_arg(p, what) }?.ok_or_else(|| Error::invalid(format!("`{what}` is NULL")))
}

/// Tags as `"k=v,k2=v2"`: pieces split at `,`, each a key and a value split
/// at its first `=`, spaces around both trimmed, empty pieces skipped.
fn parse_tags(text: &str, what: &str) -> Result<Vec<(String, String)>, Error> {
    let mut tags = Vec::new();
    for piece in text.split(',') {
        if piece.trim().is_empty() {
            continue;
        }
        let (k, v) = piece.split_once('=').ok_or_else(|| {
            Error::invalid(format!("`{what}`: `{piece}` is not `key=value` (tags are \"k=v,k2=v2\")"))
        })?;
        let k = k.trim();
        if k.is_empty() {
            return Err(Error::invalid(format!("`{what}`: `{piece}` has an empty key")));
        }
        tags.push((k.to_owned(), v.trim().to_owned()));
    }
    Ok(tags)
}

/// Tags in their C form, `"k=v,k2=v2"` in key order.
fn format_tags(tags: &BTreeMap<String, String>) -> String {
    tags.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// `ms` as a wait: < 0 none (`None`), otherwise that many milliseconds.
fn wait_of(ms: i64) -> Option<Duration> {
    u64::try_from(ms).ok().map(Duration::from_millis)
}

/// Acquires the lock `name` (NUL-terminated UTF-8, 1 to
/// `P2P_COORD_MAX_NAME` bytes) for `session` (from `p2p_kv_session_open`),
/// waiting in line, first come first served. `wait_ms` < 0 waits for as
/// long as it takes; 0 takes the lock only if it is free now (as long as
/// one store round trip takes); > 0 waits up to that many milliseconds.
/// When the previous holder lost the lock *involuntarily* (its session
/// expired), the grant waits `delay_ms` more (a lock delay: a holder cut
/// off mid-write has time to notice); an unlock hands over at once.
///
/// Returns the request id (0 or more): `P2P_EVENT_COORD_LOCK_ACQUIRED`
/// with the fencing token in `last` once held; held until
/// `p2p_coord_release` (unlock; `P2P_EVENT_COORD_RELEASED`) or a
/// `P2P_EVENT_COORD_ENDED` (`P2P_ERR_COORD_TIMEOUT`: the wait passed;
/// `P2P_ERR_COORD_SESSION_ENDED`: the session ended, and the lock with it).
///
/// Errors at once: `P2P_ERR_INVALID_ARGUMENT` (a NULL or non-UTF-8
/// `name`), `P2P_ERR_COORD_INVALID_NAME`, `P2P_ERR_COORD_NO_SESSION`
/// (`session` 0), `P2P_ERR_COORD_TOO_MANY`, `P2P_ERR_KV_NOT_A_PEER`,
/// `P2P_ERR_KV_TOO_MANY`, `P2P_ERR_CLOSED`.
///
/// Hosted mode: the request leaves at the next `p2p_node_service`. Thread
/// safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_coord_lock(
    node: *mut p2p_node,
    name: *const c_char,
    session: u64,
    wait_ms: i64,
    delay_ms: u32,
) -> i64 {
    call(|| {
        // SAFETY: the caller passes a live node and a string (or NULL).
        let node = unsafe { node_arg(node) }?;
        let name = unsafe { name_arg(name, "name") }?;
        let mut req =
            CoordRequest::lock(name, session).lock_delay(Duration::from_millis(u64::from(delay_ms)));
        if let Some(wait) = wait_of(wait_ms) {
            req = req.wait(wait);
        }
        start(node, req)
    })
}

/// Campaigns to lead `group` (a name as in `p2p_coord_lock`) for
/// `session`, with `value` (`value_len` bytes, copied; NULL with 0: empty):
/// what followers read about the leader (an address, a shard, ...). By
/// default the oldest candidate wins; with `least_loaded` non-zero,
/// whenever the leadership is vacant the candidate with the lowest `load`
/// wins (ties: the oldest), and a sitting leader is not displaced. Every
/// candidate of a group must use the same rule.
///
/// Returns the request id: `P2P_EVENT_COORD_ELECTED` with the term in
/// `last` once this peer leads; a candidate until `p2p_coord_release`
/// (resign) or a `P2P_EVENT_COORD_ENDED` (`P2P_ERR_COORD_LEADERSHIP_LOST`,
/// `P2P_ERR_COORD_SESSION_ENDED`). Change its value or load with
/// `p2p_coord_update`. Errors at once as `p2p_coord_lock`, and
/// `P2P_ERR_KV_TOO_LARGE` for a value that does not fit a store value.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_coord_campaign(
    node: *mut p2p_node,
    group: *const c_char,
    session: u64,
    value: *const u8,
    value_len: u32,
    load: u32,
    least_loaded: u8,
) -> i64 {
    call(|| {
        // SAFETY: the caller passes a live node, a string and `value_len` bytes (or NULL).
        let node = unsafe { node_arg(node) }?;
        let group = unsafe { name_arg(group, "group") }?;
        let value = unsafe { bytes_arg(value, value_len, "value") }?;
        let mut req = CoordRequest::campaign(group, session, value).load(load);
        if least_loaded != 0 {
            req = req.least_loaded();
        }
        start(node, req)
    })
}

/// Who leads `group`: one `P2P_EVENT_COORD_LEADER` (the leader's node id in
/// `id`, its term in `last`, its value in `kv`, or
/// `P2P_EVENT_FLAG_COORD_NO_LEADER`), after which the request is over; with
/// `watch` non-zero, one now and one at every change, until
/// `p2p_coord_release`. Returns the request id. Errors at once:
/// `P2P_ERR_INVALID_ARGUMENT`, `P2P_ERR_COORD_INVALID_NAME`,
/// `P2P_ERR_COORD_TOO_MANY`, `P2P_ERR_KV_NOT_A_PEER`, `P2P_ERR_KV_TOO_MANY`,
/// `P2P_ERR_CLOSED`.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_coord_leader(node: *mut p2p_node, group: *const c_char, watch: u8) -> i64 {
    call(|| {
        // SAFETY: the caller passes a live node and a string (or NULL).
        let node = unsafe { node_arg(node) }?;
        let group = unsafe { name_arg(group, "group") }?;
        start(node, if watch != 0 { CoordRequest::watch_leader(group) } else { CoordRequest::leader(group) })
    })
}

/// Adds `item` (an id, 1 to `P2P_COORD_MAX_NAME` bytes of UTF-8) to
/// `queue` with `payload` (`payload_len` bytes, copied) and `priority`
/// (higher pops first; equal priorities in the order pushed). With a
/// `session` (non-zero) the item leaves the queue when the session ends (a
/// player who disconnects is not matched); 0 binds it to none.
///
/// Returns the request id, answered by one `P2P_EVENT_COORD_PUSHED`
/// (`flags & P2P_EVENT_FLAG_COORD_APPLIED`: added; without it an item with
/// that id was already queued and stays as it was), or a
/// `P2P_EVENT_COORD_ENDED`. Errors at once as `p2p_coord_leader`, and
/// `P2P_ERR_KV_TOO_LARGE` for a payload that does not fit a store value.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_coord_push(
    node: *mut p2p_node,
    queue: *const c_char,
    item: *const c_char,
    priority: i32,
    payload: *const u8,
    payload_len: u32,
    session: u64,
) -> i64 {
    call(|| {
        // SAFETY: the caller passes a live node, strings and `payload_len` bytes (or NULL).
        let node = unsafe { node_arg(node) }?;
        let queue = unsafe { name_arg(queue, "queue") }?;
        let item = unsafe { name_arg(item, "item") }?;
        let payload = unsafe { bytes_arg(payload, payload_len, "payload") }?;
        start(node, CoordRequest::push(queue, item, payload).priority(priority).session(session))
    })
}

/// Removes `item` from `queue`. Returns the request id, answered by one
/// `P2P_EVENT_COORD_REMOVED` (`flags & P2P_EVENT_FLAG_COORD_APPLIED`: it
/// was queued and is removed) or a `P2P_EVENT_COORD_ENDED`. Errors at once
/// as `p2p_coord_leader`.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_coord_remove(
    node: *mut p2p_node,
    queue: *const c_char,
    item: *const c_char,
) -> i64 {
    call(|| {
        // SAFETY: the caller passes a live node and strings (or NULL).
        let node = unsafe { node_arg(node) }?;
        let queue = unsafe { name_arg(queue, "queue") }?;
        let item = unsafe { name_arg(item, "item") }?;
        start(node, CoordRequest::remove(queue, item))
    })
}

/// Takes the first `n` items (1 to `P2P_COORD_MAX_POP`) of `queue`,
/// highest priority first, then oldest, atomically: all `n` or none, each
/// item taken by exactly one pop. `wait_ms` 0: only what is queued now
/// (fewer: `P2P_EVENT_COORD_ENDED` with `P2P_ERR_COORD_NOT_ENOUGH`, `count`
/// the items queued); > 0: waits up to that many milliseconds for enough
/// items (then `P2P_ERR_COORD_TIMEOUT`; `p2p_coord_release` stops the
/// wait).
///
/// Returns the request id, answered by one `P2P_EVENT_COORD_POPPED` with
/// the items in `kv` (or a `P2P_EVENT_COORD_ENDED`). Errors at once as
/// `p2p_coord_leader`, `P2P_ERR_INVALID_ARGUMENT` for `n` 0 and
/// `P2P_ERR_KV_TOO_LARGE` for `n` over `P2P_COORD_MAX_POP`.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_coord_pop(
    node: *mut p2p_node,
    queue: *const c_char,
    n: u32,
    wait_ms: u32,
) -> i64 {
    call(|| {
        // SAFETY: the caller passes a live node and a string (or NULL).
        let node = unsafe { node_arg(node) }?;
        let queue = unsafe { name_arg(queue, "queue") }?;
        if n == 0 {
            return Err(Error::invalid("`n` is 0: a pop takes 1 to P2P_COORD_MAX_POP items"));
        }
        let mut req = CoordRequest::pop(queue, n);
        if wait_ms > 0 {
            req = req.wait(Duration::from_millis(u64::from(wait_ms)));
        }
        start(node, req)
    })
}

/// Watches the length of `queue`: a `P2P_EVENT_COORD_QUEUE_LENGTH` (the
/// items in `count`) now and at every change, until `p2p_coord_release`.
/// Returns the request id. Errors at once as `p2p_coord_leader`.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_coord_watch_queue(node: *mut p2p_node, queue: *const c_char) -> i64 {
    call(|| {
        // SAFETY: the caller passes a live node and a string (or NULL).
        let node = unsafe { node_arg(node) }?;
        let queue = unsafe { name_arg(queue, "queue") }?;
        start(node, CoordRequest::watch_queue(queue))
    })
}

/// Registers `instance` (an id, 1 to `P2P_COORD_MAX_NAME` bytes of UTF-8)
/// of `service` for `session`: listed by `p2p_coord_query` while the
/// session lives, with this node as its node, its `load` and `capacity`
/// (same unit; 0: unbounded), `tags` to query by (`"k=v,k2=v2"`: split at
/// `,`, then at the first `=`, spaces around keys and values trimmed; NULL
/// or `""`: none) and `data` (`data_len` bytes, copied: anything else to
/// publish, an address say).
///
/// Returns the request id: `P2P_EVENT_COORD_REGISTERED` once listed; then
/// `p2p_coord_update` changes its load or data, `p2p_coord_release`
/// deregisters it, and a `P2P_EVENT_COORD_ENDED` says it was lost (the
/// session ended). Errors at once as `p2p_coord_lock` (also for malformed
/// `tags`), and `P2P_ERR_KV_TOO_LARGE` when it does not fit a store value.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_coord_register(
    node: *mut p2p_node,
    service: *const c_char,
    instance: *const c_char,
    load: u32,
    capacity: u32,
    tags: *const c_char,
    data: *const u8,
    data_len: u32,
    session: u64,
) -> i64 {
    call(|| {
        // SAFETY: the caller passes a live node, strings and `data_len` bytes (or NULL).
        let node = unsafe { node_arg(node) }?;
        let service = unsafe { name_arg(service, "service") }?;
        let instance = unsafe { name_arg(instance, "instance") }?;
        let tags = unsafe { str_arg(tags, "tags") }?.unwrap_or("");
        let data = unsafe { bytes_arg(data, data_len, "data") }?;
        let mut info = InstanceInfo::new(load, capacity).data(data);
        for (k, v) in parse_tags(tags, "tags")? {
            info = info.tag(k, v);
        }
        start(node, CoordRequest::register(service, instance, info, session))
    })
}

/// The live instances of `service` that have every tag of `tags`
/// (`"k=v,k2=v2"` as in `p2p_coord_register`; NULL or `""`: any) and, with
/// `has_room` non-zero, are below their capacity: one
/// `P2P_EVENT_COORD_INSTANCES` with them in `kv`, least loaded first,
/// after which the request is over; with `watch` non-zero, one now and one
/// at every change, until `p2p_coord_release`. Returns the request id.
/// Errors at once as `p2p_coord_leader` (also for malformed `tags`).
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_coord_query(
    node: *mut p2p_node,
    service: *const c_char,
    tags: *const c_char,
    has_room: u8,
    watch: u8,
) -> i64 {
    call(|| {
        // SAFETY: the caller passes a live node and strings (or NULL).
        let node = unsafe { node_arg(node) }?;
        let service = unsafe { name_arg(service, "service") }?;
        let tags = unsafe { str_arg(tags, "tags") }?.unwrap_or("");
        let mut filter = InstanceFilter::all();
        for (k, v) in parse_tags(tags, "tags")? {
            filter = filter.tag(k, v);
        }
        if has_room != 0 {
            filter = filter.has_room();
        }
        start(
            node,
            if watch != 0 {
                CoordRequest::watch_service(service, filter)
            } else {
                CoordRequest::query(service, filter)
            },
        )
    })
}

/// Changes running campaign or registration `id`: its value (a campaign's,
/// shown to followers if it leads) or data (a registration's) to the
/// `value_len` bytes at `value` (NULL: unchanged, then `value_len` must be
/// 0), and its load to `load` (< 0: unchanged; at most 4294967295).
/// Watchers see one change.
///
/// Returns `P2P_OK`, answered later by a `P2P_EVENT_COORD_UPDATED` with
/// `id` in `first` and the outcome in `code`; `P2P_ERR_NOT_FOUND` (`id` is
/// no running campaign or registration), `P2P_ERR_INVALID_ARGUMENT`,
/// `P2P_ERR_KV_NOT_A_PEER`, `P2P_ERR_CLOSED`.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_coord_update(
    node: *mut p2p_node,
    id: u64,
    value: *const u8,
    value_len: u32,
    load: i64,
) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live node and `value_len` bytes (or NULL).
        let node = unsafe { node_arg(node) }?;
        let mut update = CoordUpdate::default();
        if value.is_null() {
            if value_len != 0 {
                return Err(Error::invalid(format!(
                    "`value` is NULL but its length is {value_len} (NULL with 0 means: unchanged)"
                )));
            }
        } else {
            // SAFETY: the caller passes `value_len` bytes at `value`.
            update = update.value(unsafe { bytes_arg(value, value_len, "value") }?);
        }
        if load >= 0 {
            let load = u32::try_from(load)
                .map_err(|_| Error::invalid(format!("`load` {load} is over 4294967295")))?;
            update = update.load(load);
        }
        node.command(move |n, now| n.coord_update(now, id, update))??;
        Ok(P2P_OK)
    })
}

/// Releases running coordination request `id`: unlocks a lock (or leaves
/// its line), resigns a campaign, deregisters an instance, stops a watch or
/// a waiting pop. A `P2P_EVENT_COORD_RELEASED` with `id` follows once the
/// store applied it; no other event for `id` comes after that one. Returns
/// `P2P_OK`, `P2P_ERR_NOT_FOUND` (no such running request: never made,
/// already over, or ended), `P2P_ERR_CLOSED`, `P2P_ERR_INVALID_ARGUMENT`.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_coord_release(node: *mut p2p_node, id: u64) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live node (or NULL).
        let node = unsafe { node_arg(node) }?;
        if node.command(move |n, now| n.coord_release(now, id))? {
            Ok(P2P_OK)
        } else {
            Err(Error::new(P2P_ERR_NOT_FOUND, format!("no running coordination request has id {id}")))
        }
    })
}

/// A store-shaped entry for a coordination list.
fn entry(key: Vec<u8>, value: Vec<u8>, revision: u64, version: u64) -> KvEntry {
    KvEntry { key, value, create_revision: revision, mod_revision: revision, version }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn applied(kind: u32, id: u64, applied: bool) -> p2p_event {
    let mut e = p2p_event::empty(kind);
    e.first = id;
    if applied {
        e.flags |= P2P_EVENT_FLAG_COORD_APPLIED;
    }
    e
}

fn failure(e: &mut p2p_event, error: &CoordError) {
    // The negative result code, kept bit for bit in the unsigned field.
    e.code = coord_code(error) as u32;
    if let CoordError::NotEnough { len } = error {
        e.count = count(*len);
    }
    e.text = name_field(&error.to_string());
}

/// A coordination event as a `p2p_event`; its items or instances move into
/// a `p2p_kv_list` the caller now owns.
pub(crate) fn event_to_c(ev: CoordEvent) -> p2p_event {
    match ev {
        CoordEvent::LockAcquired { id, token } => {
            let mut e = p2p_event::empty(P2P_EVENT_COORD_LOCK_ACQUIRED);
            (e.first, e.last) = (id, token);
            e
        }
        CoordEvent::Elected { id, term } => {
            let mut e = p2p_event::empty(P2P_EVENT_COORD_ELECTED);
            (e.first, e.last) = (id, term);
            e
        }
        CoordEvent::Leader { id, leader } => {
            let mut e = p2p_event::empty(P2P_EVENT_COORD_LEADER);
            e.first = id;
            match leader {
                Some(l) => {
                    e.id = l.node.into();
                    e.last = l.term;
                    e.count = 1;
                    e.kv = owned_list(vec![(entry(Vec::new(), l.value, l.term, 0), P2P_KV_PUT)], Vec::new());
                }
                None => e.flags |= P2P_EVENT_FLAG_COORD_NO_LEADER,
            }
            e
        }
        CoordEvent::Pushed { id, added } => applied(P2P_EVENT_COORD_PUSHED, id, added),
        CoordEvent::Removed { id, removed } => applied(P2P_EVENT_COORD_REMOVED, id, removed),
        CoordEvent::Popped { id, items } => {
            let mut e = p2p_event::empty(P2P_EVENT_COORD_POPPED);
            e.first = id;
            e.count = count(items.len());
            let (entries, extras) = items
                .into_iter()
                .map(|i| {
                    // Two's complement: (int64_t)version is the priority.
                    let version = i64::from(i.priority) as u64;
                    let extra = CoordExtra {
                        node: i.pushed_by.into(),
                        priority: i.priority,
                        load: 0,
                        capacity: 0,
                        tags: String::new(),
                    };
                    ((entry(i.item.into_bytes(), i.payload, i.pushed_at, version), P2P_KV_PUT), extra)
                })
                .unzip();
            e.kv = owned_list(entries, extras);
            e
        }
        CoordEvent::QueueLength { id, len } => {
            let mut e = p2p_event::empty(P2P_EVENT_COORD_QUEUE_LENGTH);
            (e.first, e.count) = (id, count(len));
            e
        }
        CoordEvent::Registered { id } => {
            let mut e = p2p_event::empty(P2P_EVENT_COORD_REGISTERED);
            e.first = id;
            e
        }
        CoordEvent::Instances { id, instances } => {
            let mut e = p2p_event::empty(P2P_EVENT_COORD_INSTANCES);
            e.first = id;
            e.count = count(instances.len());
            let (entries, extras) = instances
                .into_iter()
                .map(|i| {
                    let extra = CoordExtra {
                        node: i.info.node.map(p2p_node_id::from).unwrap_or_default(),
                        priority: 0,
                        load: i.info.load,
                        capacity: i.info.capacity,
                        tags: format_tags(&i.info.tags),
                    };
                    let load = u64::from(i.info.load);
                    ((entry(i.instance.into_bytes(), i.info.data, i.registered, load), P2P_KV_PUT), extra)
                })
                .unzip();
            e.kv = owned_list(entries, extras);
            e
        }
        CoordEvent::Updated { id, result } => {
            let mut e = p2p_event::empty(P2P_EVENT_COORD_UPDATED);
            e.first = id;
            if let Err(error) = result {
                failure(&mut e, &error);
            }
            e
        }
        CoordEvent::Released { id } => {
            let mut e = p2p_event::empty(P2P_EVENT_COORD_RELEASED);
            e.first = id;
            e
        }
        CoordEvent::Ended { id, error } => {
            let mut e = p2p_event::empty(P2P_EVENT_COORD_ENDED);
            e.first = id;
            failure(&mut e, &error);
            e
        }
        other => {
            let mut e = p2p_event::empty(P2P_EVENT_UNKNOWN);
            e.first = other.id();
            e.text = name_field(&format!("{other:?}"));
            e
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{p2p_config, p2p_config_default};
    use crate::event::{P2P_KV_PUT, p2p_kv_entry, p2p_kv_list_free, to_c};
    use crate::kv::{p2p_kv_session_close, p2p_kv_session_open};
    use crate::node::{p2p_node_create, p2p_node_free};
    use crate::result::{
        P2P_ERR_COORD_INVALID_NAME, P2P_ERR_COORD_NO_SESSION, P2P_ERR_COORD_NOT_ENOUGH,
        P2P_ERR_COORD_SESSION_ENDED, P2P_ERR_COORD_TIMEOUT, P2P_ERR_INVALID_ARGUMENT, P2P_ERR_KV_INVALID,
        P2P_ERR_KV_NOT_A_PEER, P2P_ERR_KV_TOO_LARGE, P2P_ERR_KV_UNAVAILABLE, p2p_last_error,
    };
    use crate::types::{P2P_ROLE_PEER, P2P_ROLE_SERVER};
    use p2pcore::{Event, KvError};
    use std::ffi::{CStr, CString};

    fn node(role: u32) -> *mut p2p_node {
        let name = CString::new("n").unwrap();
        let bind = CString::new("127.0.0.1:0").unwrap();
        let mut cfg = std::mem::MaybeUninit::<p2p_config>::uninit();
        let mut node = std::ptr::null_mut();
        // SAFETY: a writable config; the strings outlive the create call.
        unsafe {
            p2p_config_default(cfg.as_mut_ptr());
            let mut cfg = cfg.assume_init();
            cfg.role = role;
            cfg.name = name.as_ptr();
            cfg.bind = bind.as_ptr();
            assert_eq!(p2p_node_create(&cfg, &mut node), P2P_OK);
        }
        node
    }

    fn last_error() -> String {
        let mut buf = [0 as c_char; 512];
        // SAFETY: 512 writable bytes, NUL-terminated by p2p_last_error.
        unsafe {
            p2p_last_error(buf.as_mut_ptr(), 512);
            CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
        }
    }

    fn text(e: &p2p_event) -> String {
        // SAFETY: NUL-terminated by name_field.
        unsafe { CStr::from_ptr(e.text.as_ptr()) }.to_string_lossy().into_owned()
    }

    /// `r` is error `code` and the last error says `says`.
    #[track_caller]
    fn refused(r: i64, code: p2p_result, says: &str) {
        assert_eq!(r, i64::from(code), "{}", last_error());
        assert!(last_error().contains(says), "{}", last_error());
    }

    #[test]
    fn bad_arguments_are_typed_errors_never_a_crash() {
        let peer = node(P2P_ROLE_PEER);
        let server = node(P2P_ROLE_SERVER);
        let q = c"q";
        let bad_utf8 = [0xffu8, 0xfe, 0];
        let bad = bad_utf8.as_ptr().cast::<c_char>();
        let long = CString::new("x".repeat(P2P_COORD_MAX_NAME as usize + 1)).unwrap();
        let longest = CString::new("x".repeat(P2P_COORD_MAX_NAME as usize)).unwrap();
        let null = std::ptr::null();
        // SAFETY: live nodes, NUL-terminated strings and buffers of the
        // lengths given (or NULL where the test says).
        unsafe {
            // NULL node, NULL and non-UTF-8 names.
            refused(
                p2p_coord_lock(std::ptr::null_mut(), q.as_ptr(), 1, -1, 0),
                P2P_ERR_INVALID_ARGUMENT,
                "`node`",
            );
            refused(p2p_coord_lock(peer, null, 1, -1, 0), P2P_ERR_INVALID_ARGUMENT, "`name` is NULL");
            refused(
                p2p_coord_lock(peer, bad, 1, -1, 0),
                P2P_ERR_INVALID_ARGUMENT,
                "`name` is not valid UTF-8",
            );
            refused(p2p_coord_leader(peer, null, 0), P2P_ERR_INVALID_ARGUMENT, "`group` is NULL");
            refused(
                p2p_coord_push(peer, q.as_ptr(), null, 0, null.cast(), 0, 0),
                P2P_ERR_INVALID_ARGUMENT,
                "`item`",
            );
            refused(
                p2p_coord_remove(peer, bad, q.as_ptr()),
                P2P_ERR_INVALID_ARGUMENT,
                "`queue` is not valid",
            );
            refused(p2p_coord_watch_queue(peer, null), P2P_ERR_INVALID_ARGUMENT, "`queue` is NULL");
            refused(
                p2p_coord_register(peer, q.as_ptr(), bad, 0, 0, null, null.cast(), 0, 1),
                P2P_ERR_INVALID_ARGUMENT,
                "`instance` is not valid UTF-8",
            );
            refused(p2p_coord_query(peer, null, null, 0, 0), P2P_ERR_INVALID_ARGUMENT, "`service` is NULL");
            // Bytes: NULL with a length.
            refused(
                p2p_coord_campaign(peer, q.as_ptr(), 1, null.cast(), 3, 0, 0),
                P2P_ERR_INVALID_ARGUMENT,
                "`value` is NULL but its length is 3",
            );
            refused(
                p2p_coord_push(peer, q.as_ptr(), q.as_ptr(), 0, null.cast(), 1, 0),
                P2P_ERR_INVALID_ARGUMENT,
                "`payload` is NULL",
            );
            // Names: empty, too long, the longest allowed.
            refused(
                p2p_coord_lock(peer, c"".as_ptr(), 1, -1, 0),
                P2P_ERR_COORD_INVALID_NAME,
                "this one is 0",
            );
            refused(
                p2p_coord_lock(peer, long.as_ptr(), 1, -1, 0),
                P2P_ERR_COORD_INVALID_NAME,
                "this one is 257",
            );
            refused(
                p2p_coord_push(peer, q.as_ptr(), long.as_ptr(), 0, null.cast(), 0, 0),
                P2P_ERR_COORD_INVALID_NAME,
                "257",
            );
            refused(p2p_coord_query(peer, long.as_ptr(), null, 1, 1), P2P_ERR_COORD_INVALID_NAME, "257");
            // Sessions.
            refused(p2p_coord_lock(peer, q.as_ptr(), 0, 0, 0), P2P_ERR_COORD_NO_SESSION, "needs a session");
            refused(
                p2p_coord_campaign(peer, q.as_ptr(), 0, null.cast(), 0, 0, 1),
                P2P_ERR_COORD_NO_SESSION,
                "session",
            );
            refused(
                p2p_coord_register(peer, q.as_ptr(), q.as_ptr(), 0, 0, null, null.cast(), 0, 0),
                P2P_ERR_COORD_NO_SESSION,
                "session",
            );
            refused(p2p_kv_session_open(peer, 10), P2P_ERR_KV_INVALID, "TTL");
            refused(p2p_kv_session_open(std::ptr::null_mut(), 1000), P2P_ERR_INVALID_ARGUMENT, "`node`");
            // Pops: n of 0 and over the bound.
            refused(p2p_coord_pop(peer, q.as_ptr(), 0, 0), P2P_ERR_INVALID_ARGUMENT, "`n` is 0");
            refused(
                p2p_coord_pop(peer, q.as_ptr(), P2P_COORD_MAX_POP + 1, 0),
                P2P_ERR_KV_TOO_LARGE,
                "pop count",
            );
            // Tags.
            refused(
                p2p_coord_register(peer, q.as_ptr(), q.as_ptr(), 0, 0, c"region".as_ptr(), null.cast(), 0, 1),
                P2P_ERR_INVALID_ARGUMENT,
                "is not `key=value`",
            );
            refused(
                p2p_coord_query(peer, q.as_ptr(), c"=eu".as_ptr(), 0, 0),
                P2P_ERR_INVALID_ARGUMENT,
                "empty key",
            );
            refused(p2p_coord_query(peer, q.as_ptr(), bad, 0, 0), P2P_ERR_INVALID_ARGUMENT, "`tags`");
            // Updates and releases of what does not run.
            assert_eq!(p2p_coord_update(peer, 99, null.cast(), 0, 1), P2P_ERR_NOT_FOUND);
            assert_eq!(p2p_coord_update(peer, 99, null.cast(), 2, -1), P2P_ERR_INVALID_ARGUMENT);
            assert_eq!(p2p_coord_update(peer, 99, null.cast(), 0, 1 << 32), P2P_ERR_INVALID_ARGUMENT);
            assert_eq!(p2p_coord_release(peer, 99), P2P_ERR_NOT_FOUND);
            assert_eq!(p2p_coord_release(std::ptr::null_mut(), 0), P2P_ERR_INVALID_ARGUMENT);
            assert_eq!(
                p2p_coord_update(std::ptr::null_mut(), 0, null.cast(), 0, -1),
                P2P_ERR_INVALID_ARGUMENT
            );
            // Servers do not coordinate.
            refused(p2p_coord_leader(server, q.as_ptr(), 1), P2P_ERR_KV_NOT_A_PEER, "only a peer");
            refused(p2p_kv_session_open(server, 1000), P2P_ERR_KV_NOT_A_PEER, "only a peer");
            assert_eq!(p2p_coord_release(server, 0), P2P_ERR_NOT_FOUND);

            // Valid requests get ids at once, counting up from 0 (answered
            // later: never, here, as this peer has no server).
            assert_eq!(p2p_coord_lock(peer, longest.as_ptr(), 1, -1, 100), 0);
            assert_eq!(p2p_coord_campaign(peer, q.as_ptr(), 1, c"v".as_ptr().cast(), 1, 3, 1), 1);
            assert_eq!(p2p_coord_leader(peer, q.as_ptr(), 1), 2);
            assert_eq!(p2p_coord_push(peer, q.as_ptr(), c"i".as_ptr(), -5, null.cast(), 0, 0), 3);
            assert_eq!(p2p_coord_remove(peer, q.as_ptr(), c"i".as_ptr()), 4);
            assert_eq!(p2p_coord_pop(peer, q.as_ptr(), P2P_COORD_MAX_POP, 1000), 5);
            assert_eq!(p2p_coord_watch_queue(peer, q.as_ptr()), 6);
            let tags = c" region = eu ,mode=ranked,".as_ptr();
            assert_eq!(p2p_coord_register(peer, q.as_ptr(), c"i".as_ptr(), 1, 2, tags, null.cast(), 0, 1), 7);
            assert_eq!(p2p_coord_query(peer, q.as_ptr(), tags, 1, 0), 8);
            assert_eq!(p2p_coord_update(peer, 1, c"w".as_ptr().cast(), 1, -1), P2P_OK);
            assert_eq!(p2p_coord_update(peer, 7, null.cast(), 0, 5), P2P_OK);
            // Only campaigns and registrations take updates.
            assert_eq!(p2p_coord_update(peer, 0, null.cast(), 0, 5), P2P_ERR_NOT_FOUND);
            assert_eq!(p2p_coord_release(peer, 2), P2P_OK);
            assert!(p2p_kv_session_open(peer, P2P_KV_MIN_SESSION_TTL_MS) >= 0);
            assert!(p2p_kv_session_close(peer, 1) >= 0);
            p2p_node_free(peer);
            p2p_node_free(server);
        }
    }

    use crate::kv::P2P_KV_MIN_SESSION_TTL_MS;

    #[test]
    fn tags_parse_and_format() {
        let t = parse_tags(" region = eu ,mode=ranked,,x=a=b", "tags").unwrap();
        let want =
            [("region", "eu"), ("mode", "ranked"), ("x", "a=b")].map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(t, want);
        assert!(parse_tags("", "tags").unwrap().is_empty());
        assert!(parse_tags("a", "tags").is_err());
        assert!(parse_tags(" =b", "tags").is_err());
        let map: BTreeMap<String, String> = t.into_iter().collect();
        assert_eq!(format_tags(&map), "mode=ranked,region=eu,x=a=b");
        assert_eq!(format_tags(&BTreeMap::new()), "");
    }

    fn coord(ev: CoordEvent) -> p2p_event {
        to_c(Event::Coord(ev))
    }

    #[test]
    fn coordination_events_become_their_kinds() {
        let e = coord(CoordEvent::LockAcquired { id: 3, token: 42 });
        assert_eq!((e.kind, e.first, e.last, e.code), (P2P_EVENT_COORD_LOCK_ACQUIRED, 3, 42, 0));
        assert!(e.kv.is_null());
        let e = coord(CoordEvent::Elected { id: 4, term: 9 });
        assert_eq!((e.kind, e.first, e.last), (P2P_EVENT_COORD_ELECTED, 4, 9));
        let e = coord(CoordEvent::Leader { id: 5, leader: None });
        assert_eq!((e.kind, e.first, e.last, e.count), (P2P_EVENT_COORD_LEADER, 5, 0, 0));
        assert_eq!(e.flags, P2P_EVENT_FLAG_COORD_NO_LEADER);
        assert!(e.kv.is_null() && e.id == p2p_node_id::default());
        let e = coord(CoordEvent::Pushed { id: 6, added: true });
        assert_eq!((e.kind, e.first, e.flags), (P2P_EVENT_COORD_PUSHED, 6, P2P_EVENT_FLAG_COORD_APPLIED));
        let e = coord(CoordEvent::Pushed { id: 6, added: false });
        assert_eq!((e.kind, e.flags), (P2P_EVENT_COORD_PUSHED, 0));
        let e = coord(CoordEvent::Removed { id: 7, removed: true });
        assert_eq!((e.kind, e.first, e.flags), (P2P_EVENT_COORD_REMOVED, 7, P2P_EVENT_FLAG_COORD_APPLIED));
        let e = coord(CoordEvent::Popped { id: 8, items: Vec::new() });
        assert_eq!((e.kind, e.first, e.count), (P2P_EVENT_COORD_POPPED, 8, 0));
        assert!(e.kv.is_null());
        let e = coord(CoordEvent::QueueLength { id: 9, len: 12 });
        assert_eq!((e.kind, e.first, e.count), (P2P_EVENT_COORD_QUEUE_LENGTH, 9, 12));
        let e = coord(CoordEvent::Registered { id: 10 });
        assert_eq!((e.kind, e.first), (P2P_EVENT_COORD_REGISTERED, 10));
        let e = coord(CoordEvent::Instances { id: 11, instances: Vec::new() });
        assert_eq!((e.kind, e.first, e.count), (P2P_EVENT_COORD_INSTANCES, 11, 0));
        assert!(e.kv.is_null());
        let e = coord(CoordEvent::Updated { id: 12, result: Ok(()) });
        assert_eq!((e.kind, e.first, e.code), (P2P_EVENT_COORD_UPDATED, 12, 0));
        let e = coord(CoordEvent::Updated { id: 12, result: Err(CoordError::SessionEnded) });
        assert_eq!(e.code as i32, P2P_ERR_COORD_SESSION_ENDED);
        assert!(text(&e).contains("session ended"), "{}", text(&e));
        let e = coord(CoordEvent::Released { id: 13 });
        assert_eq!((e.kind, e.first), (P2P_EVENT_COORD_RELEASED, 13));
        let e = coord(CoordEvent::Ended { id: 14, error: CoordError::NotEnough { len: 2 } });
        assert_eq!(
            (e.kind, e.first, e.code as i32, e.count),
            (P2P_EVENT_COORD_ENDED, 14, P2P_ERR_COORD_NOT_ENOUGH, 2)
        );
        assert!(text(&e).contains("holds 2 items"), "{}", text(&e));
        let e = coord(CoordEvent::Ended { id: 15, error: CoordError::Timeout });
        assert_eq!(e.code as i32, P2P_ERR_COORD_TIMEOUT);
        let e = coord(CoordEvent::Ended { id: 16, error: CoordError::Kv(KvError::Unavailable) });
        assert_eq!(e.code as i32, P2P_ERR_KV_UNAVAILABLE);
        for c in [coord_code(&CoordError::NoSuchRequest), coord_code(&CoordError::NotAPeer)] {
            assert!([P2P_ERR_NOT_FOUND, P2P_ERR_KV_NOT_A_PEER].contains(&c));
        }
    }

    #[test]
    fn a_coordination_list_carries_its_extras() {
        let node = p2p_node_id { bytes: [7; 17] };
        let extra = |priority, load, tags: &str| CoordExtra {
            node,
            priority,
            load,
            capacity: 10,
            tags: tags.to_owned(),
        };
        let list = owned_list(
            vec![
                (entry(b"item".to_vec(), b"pay".to_vec(), 5, i64::from(-3i32) as u64), P2P_KV_PUT),
                (entry(b"eu-1".to_vec(), Vec::new(), 6, 4), P2P_KV_PUT),
            ],
            vec![extra(-3, 0, ""), extra(0, 4, "mode=ranked,reg\0ion=eu")],
        );
        // SAFETY: a live list with `count` entries and as many extras.
        unsafe {
            let l = &*list;
            assert_eq!(l.count, 2);
            let entries: &[p2p_kv_entry] = std::slice::from_raw_parts(l.entries, 2);
            let extras: &[crate::event::p2p_coord_entry] = std::slice::from_raw_parts(l.coord, 2);
            assert_eq!(std::slice::from_raw_parts(entries[0].key, 4), b"item");
            assert_eq!(std::slice::from_raw_parts(entries[0].value, 3), b"pay");
            assert_eq!(entries[0].version as i64, -3);
            assert_eq!((entries[0].create_revision, entries[0].mod_revision), (5, 5));
            assert_eq!((extras[0].priority, extras[0].node), (-3, node));
            assert_eq!(CStr::from_ptr(extras[0].tags).to_bytes(), b"");
            assert!(entries[1].value.is_null());
            assert_eq!((extras[1].load, extras[1].capacity), (4, 10));
            // A NUL inside a tag is dropped, not a cut string.
            assert_eq!(CStr::from_ptr(extras[1].tags).to_str().unwrap(), "mode=ranked,region=eu");
            p2p_kv_list_free(list);
        }
        // Store lists have no extras.
        let list = owned_list(vec![(entry(b"k".to_vec(), b"v".to_vec(), 1, 1), P2P_KV_PUT)], Vec::new());
        // SAFETY: a live list, freed once.
        unsafe {
            assert!((*list).coord.is_null());
            p2p_kv_list_free(list);
        }
    }
}
