//! The cluster's replicated store (peers only): requests that return an id
//! at once and answer later as `P2P_EVENT_KV_DONE` through
//! `p2p_poll_events`, and watches whose changes come as
//! `P2P_EVENT_KV_WATCH`. Keys and values are bytes with a length, not
//! strings. Only the common shapes are here (get, prefix read, put,
//! delete, compare-and-set); the Rust API has the whole transaction builder.

use crate::node::{node_arg, p2p_node};
use crate::result::{Error, P2P_ERR_NOT_FOUND, P2P_OK, call, p2p_result};
use crate::types::bytes_arg;
use p2pcore::{
    CompareOp, KvCompare, KvRequest, MAX_KEY_LEN, MAX_SESSION_TTL, MAX_VALUE_LEN, MIN_SESSION_TTL,
};
use std::time::Duration;

/// Longest store key, in bytes.
pub const P2P_KV_MAX_KEY_LEN: u32 = 1024;
/// Longest store value, in bytes.
pub const P2P_KV_MAX_VALUE_LEN: u32 = 32 * 1024;

/// Shortest session TTL (`p2p_kv_session_open`), in milliseconds.
pub const P2P_KV_MIN_SESSION_TTL_MS: u32 = 1000;
/// Longest session TTL (`p2p_kv_session_open`), in milliseconds.
pub const P2P_KV_MAX_SESSION_TTL_MS: u32 = 3_600_000;

// The header's constants are the core's bounds.
const _: () = assert!(P2P_KV_MAX_KEY_LEN as usize == MAX_KEY_LEN);
const _: () = assert!(P2P_KV_MAX_VALUE_LEN as usize == MAX_VALUE_LEN);
const _: () = assert!(P2P_KV_MIN_SESSION_TTL_MS as u128 == MIN_SESSION_TTL.as_millis());
const _: () = assert!(P2P_KV_MAX_SESSION_TTL_MS as u128 == MAX_SESSION_TTL.as_millis());

/// Sends `req` from `node`; its id, or the node's refusal.
fn request(node: &p2p_node, req: KvRequest) -> Result<i64, Error> {
    let id = node.command(move |n, now| n.kv(now, req))??;
    // Ids count up from 0, one per request: far below i64::MAX.
    Ok(i64::try_from(id).unwrap_or(i64::MAX))
}

/// The body of every request on one key or prefix: check the node and the
/// bytes (`what` names them in errors), build the request, send it.
///
/// # Safety
/// As the exported functions: a live node (or NULL) and `len` readable
/// bytes at `bytes` (or NULL with `len` 0).
unsafe fn keyed(
    node: *mut p2p_node,
    bytes: *const u8,
    len: u32,
    what: &str,
    make: impl FnOnce(&[u8]) -> KvRequest,
) -> i64 {
    call(|| {
        // SAFETY: forwarded from the caller's contract.
        let node = unsafe { node_arg(node) }?;
        let bytes = unsafe { bytes_arg(bytes, len, what) }?;
        request(node, make(bytes))
    })
}

/// Reads one key (`key_len` bytes at `key`; copied). Returns the request
/// id (0 or more), answered by a `P2P_EVENT_KV_DONE` with that id in
/// `first`: `count` 1 and the entry in `kv` when the key exists, `count` 0
/// and `kv` NULL when it does not. Reads are linearizable: they see every
/// write that completed before. The store answers within 5 s or fails with
/// `P2P_ERR_KV_UNAVAILABLE` (no quorum of servers reachable).
///
/// Errors at once: `P2P_ERR_KV_NOT_A_PEER` (servers do not use the store),
/// `P2P_ERR_KV_TOO_LARGE` (a key over `P2P_KV_MAX_KEY_LEN`),
/// `P2P_ERR_KV_TOO_MANY` (64 requests waiting), `P2P_ERR_CLOSED`,
/// `P2P_ERR_INVALID_ARGUMENT`.
///
/// Hosted mode: the request leaves at the next `p2p_node_service`. Thread
/// safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_kv_get(node: *mut p2p_node, key: *const u8, key_len: u32) -> i64 {
    // SAFETY: the caller passes a live node and `key_len` bytes (or NULL).
    unsafe { keyed(node, key, key_len, "key", |k| KvRequest::get(k)) }
}

/// Reads every key that starts with `prefix` (`prefix_len` bytes; 0: the
/// whole store), in key order, at most `limit` of them (0: no limit; an
/// answer also stops at 1 MiB). Answered as `p2p_kv_get`: `count` entries
/// in `kv`, and `flags & P2P_EVENT_FLAG_KV_MORE` when more keys matched.
/// Errors as `p2p_kv_get`.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_kv_get_prefix(
    node: *mut p2p_node,
    prefix: *const u8,
    prefix_len: u32,
    limit: u32,
) -> i64 {
    // SAFETY: the caller passes a live node and `prefix_len` bytes (or NULL).
    unsafe { keyed(node, prefix, prefix_len, "prefix", |p| KvRequest::get_prefix(p).limit(limit)) }
}

/// Writes `value` (`value_len` bytes, at most `P2P_KV_MAX_VALUE_LEN`)
/// under `key` (1 to `P2P_KV_MAX_KEY_LEN` bytes), creating or replacing
/// it; both are copied. Returns the request id; its `P2P_EVENT_KV_DONE`
/// has the revision the write created in `last`. A write is applied at
/// most once, even when it is retried through another server; after
/// `P2P_ERR_KV_UNAVAILABLE` it may or may not have been. Errors at once as
/// `p2p_kv_get`, and `P2P_ERR_KV_INVALID` for an empty key; later also
/// `P2P_ERR_KV_STORE_FULL`.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_kv_put(
    node: *mut p2p_node,
    key: *const u8,
    key_len: u32,
    value: *const u8,
    value_len: u32,
) -> i64 {
    call(|| {
        // SAFETY: the caller passes a live node and the buffers' lengths (or NULL).
        let node = unsafe { node_arg(node) }?;
        let key = unsafe { bytes_arg(key, key_len, "key") }?;
        let value = unsafe { bytes_arg(value, value_len, "value") }?;
        request(node, KvRequest::put(key, value))
    })
}

/// Deletes one key. Returns the request id; its `P2P_EVENT_KV_DONE` has
/// the keys removed (0 or 1) in `count`. Errors as `p2p_kv_get`.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_kv_delete(node: *mut p2p_node, key: *const u8, key_len: u32) -> i64 {
    // SAFETY: the caller passes a live node and `key_len` bytes (or NULL).
    unsafe { keyed(node, key, key_len, "key", |k| KvRequest::delete(k)) }
}

/// Deletes every key that starts with `prefix` (`prefix_len` 0: the whole
/// store). Answered as `p2p_kv_delete` (`count`: keys removed). Errors as
/// `p2p_kv_get`.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_kv_delete_prefix(
    node: *mut p2p_node,
    prefix: *const u8,
    prefix_len: u32,
) -> i64 {
    // SAFETY: the caller passes a live node and `prefix_len` bytes (or NULL).
    unsafe { keyed(node, prefix, prefix_len, "prefix", |p| KvRequest::delete_prefix(p)) }
}

/// Compare-and-set, atomically: writes `value` under `key` if the key's
/// value is now exactly the `expect_len` bytes at `expect`, or, when
/// `expect` is NULL, if the key does not exist (create-if-absent: a lock,
/// a claim, a unique name). Returns the request id; in its
/// `P2P_EVENT_KV_DONE`, `flags & P2P_EVENT_FLAG_KV_SUCCEEDED` says whether
/// the write was made (then `last` is its revision); when it was not,
/// `kv` holds the key's current entry (`count` 1), or is NULL if the key
/// does not exist, so the caller can retry from what is there. Errors as
/// `p2p_kv_put`, and `P2P_ERR_INVALID_ARGUMENT` for a NULL `expect` with a
/// non-zero `expect_len`.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_kv_cas(
    node: *mut p2p_node,
    key: *const u8,
    key_len: u32,
    expect: *const u8,
    expect_len: u32,
    value: *const u8,
    value_len: u32,
) -> i64 {
    call(|| {
        // SAFETY: the caller passes a live node and the buffers' lengths (or NULL).
        let node = unsafe { node_arg(node) }?;
        let key = unsafe { bytes_arg(key, key_len, "key") }?;
        let value = unsafe { bytes_arg(value, value_len, "value") }?;
        let condition = if expect.is_null() {
            if expect_len != 0 {
                return Err(Error::invalid(format!(
                    "`expect` is NULL but its length is {expect_len} (NULL with 0 means: the key is missing)"
                )));
            }
            KvCompare::missing(key)
        } else {
            // SAFETY: the caller passes `expect_len` bytes at `expect`.
            KvCompare::value(key, CompareOp::Equal, unsafe { bytes_arg(expect, expect_len, "expect") }?)
        };
        request(node, KvRequest::txn([condition], [KvRequest::put(key, value)], [KvRequest::get(key)]))
    })
}

/// Watches every key that starts with `prefix` (`prefix_len` 0: all),
/// from store revision `from_revision` on (0: from the next change; to
/// miss nothing after a read, pass its revision + 1). Returns the watch id
/// (0 or more; its own numbering, apart from request ids): the changes
/// come as `P2P_EVENT_KV_WATCH` events with that id in `first`, in order,
/// each once, also across the loss of the server serving it, until
/// `p2p_kv_unwatch` or a `P2P_EVENT_KV_WATCH_ENDED`. Errors at once:
/// `P2P_ERR_KV_NOT_A_PEER`, `P2P_ERR_KV_TOO_LARGE` (a prefix over
/// `P2P_KV_MAX_KEY_LEN`), `P2P_ERR_KV_TOO_MANY`, `P2P_ERR_CLOSED`,
/// `P2P_ERR_INVALID_ARGUMENT`.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_kv_watch(
    node: *mut p2p_node,
    prefix: *const u8,
    prefix_len: u32,
    from_revision: u64,
) -> i64 {
    call(|| {
        // SAFETY: the caller passes a live node and `prefix_len` bytes (or NULL).
        let node = unsafe { node_arg(node) }?;
        let prefix = unsafe { bytes_arg(prefix, prefix_len, "prefix") }?.to_vec();
        let id = node.command(move |n, now| n.watch(now, prefix, from_revision))??;
        Ok(i64::try_from(id).unwrap_or(i64::MAX))
    })
}

/// Stops watch `watch_id`: no `P2P_EVENT_KV_WATCH` for it is produced
/// after this returns (events already waiting for `p2p_poll_events` are
/// still handed out). Returns `P2P_OK`, `P2P_ERR_NOT_FOUND` (no such live
/// watch: never made, already stopped, or ended), `P2P_ERR_CLOSED`.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_kv_unwatch(node: *mut p2p_node, watch_id: u64) -> p2p_result {
    call(|| {
        // SAFETY: the caller passes a live node (or NULL).
        let node = unsafe { node_arg(node) }?;
        if node.command(move |n, now| n.unwatch(now, watch_id))? {
            Ok(P2P_OK)
        } else {
            Err(Error::new(P2P_ERR_NOT_FOUND, format!("no live watch has id {watch_id}")))
        }
    })
}

/// Opens a session owned by this peer, for the coordination requests
/// (`p2p_coord_lock`, `p2p_coord_campaign`, `p2p_coord_register`, and
/// `p2p_coord_push` of items that leave with their owner). It lives as long
/// as this peer is connected to any server, and `ttl_ms` longer
/// (`P2P_KV_MIN_SESSION_TTL_MS` to `P2P_KV_MAX_SESSION_TTL_MS`); the
/// servers keep it alive, this peer sends nothing for that. When it ends
/// (this peer stayed away from every server for `ttl_ms`, or
/// `p2p_kv_session_close`), every key bound to it is deleted: its locks,
/// leadership, queue items and registrations go with it. A peer holds at
/// most 64 sessions.
///
/// Returns the request id (0 or more); its `P2P_EVENT_KV_DONE` has the
/// session's id (never 0) in `last` (not a revision, unlike other
/// answers). Errors at once: `P2P_ERR_KV_INVALID` (`ttl_ms` out of range),
/// and as `p2p_kv_get`; later also `P2P_ERR_KV_INVALID` (64 sessions
/// open) and `P2P_ERR_KV_UNAVAILABLE`.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_kv_session_open(node: *mut p2p_node, ttl_ms: u32) -> i64 {
    call(|| {
        // SAFETY: the caller passes a live node (or NULL).
        let node = unsafe { node_arg(node) }?;
        request(node, KvRequest::session_open(Duration::from_millis(u64::from(ttl_ms))))
    })
}

/// Closes one of this peer's sessions (`session`, from
/// `p2p_kv_session_open`) now: every key bound to it is deleted, and the
/// coordination requests that used it end (`P2P_EVENT_COORD_ENDED` with
/// `P2P_ERR_COORD_SESSION_ENDED`, unless released first). Returns the
/// request id; its `P2P_EVENT_KV_DONE` has the keys deleted in `count`,
/// or fails with `P2P_ERR_KV_INVALID` when `session` is not an open
/// session of this peer. Errors at once as `p2p_kv_get`.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_kv_session_close(node: *mut p2p_node, session: u64) -> i64 {
    call(|| {
        // SAFETY: the caller passes a live node (or NULL).
        let node = unsafe { node_arg(node) }?;
        request(node, KvRequest::session_close(session))
    })
}
