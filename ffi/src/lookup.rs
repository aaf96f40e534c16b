//! Finding peers by ID or by name: `p2p_lookup_id` and `p2p_lookup_name`
//! (hosted mode), `p2p_core_lookup_id` and `p2p_core_lookup_name` (raw
//! mode). Each returns a lookup id at once; the answer is a
//! `P2P_EVENT_LOOKUP_DONE` with that id. A peer configured with
//! `peer.directory = lookup` knows no peer until it looks it up (or a send
//! by ID does it for it); in full mode the answer comes from the directory
//! at the next poll.

use crate::node::{node_arg, p2p_node};
use crate::result::{Error, call};
use crate::types::{arg, p2p_node_id};
use p2pcore::LookupKey;
use std::ffi::c_char;

/// The key of `p2p_*lookup_id`.
///
/// # Safety
/// `id` is NULL or points to a `p2p_node_id`.
pub(crate) unsafe fn id_key(id: *const p2p_node_id) -> Result<LookupKey, Error> {
    // SAFETY: the caller's promise.
    Ok(LookupKey::Id(unsafe { arg(id, "id") }?.to_id()?))
}

/// The key of `p2p_*lookup_name`.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
pub(crate) unsafe fn name_key(name: *const c_char) -> Result<LookupKey, Error> {
    // SAFETY: the caller's promise.
    Ok(LookupKey::Name(unsafe { crate::coord::name_arg(name, "name") }?.to_owned()))
}

/// A lookup id as the functions return it.
pub(crate) fn lookup_id(query: u64) -> i64 {
    // Ids count up from 0, one per lookup: far below i64::MAX.
    i64::try_from(query).unwrap_or(i64::MAX)
}

fn lookup(node: *mut p2p_node, key: Result<LookupKey, Error>) -> i64 {
    call(|| {
        // SAFETY: the exported functions pass the caller's node pointer on.
        let node = unsafe { node_arg(node) }?;
        let key = key?;
        Ok(lookup_id(node.command(move |n, now| n.lookup(now, key))??))
    })
}

/// Looks peer `id` up (peers only). Returns the lookup id (0 or more),
/// answered by a `P2P_EVENT_LOOKUP_DONE` with that id in `first`: `count`
/// 1, `id` and `name` the peer, when it is online; `count` 0 when no server
/// lists it. A peer found enters the directory (a `P2P_EVENT_PEER_ONLINE`
/// before the answer, the first time) and is listed by `p2p_node_peers`;
/// in lookup mode the servers keep this node told of it
/// (`P2P_EVENT_PEER_OFFLINE` when it leaves) for as long as the link to
/// them lasts.
///
/// Sending needs no lookup: `p2p_send` to an ID not yet known looks it up
/// by itself (messages wait for the answer; `P2P_EVENT_SEND_FAILED` with
/// the connect error's "not found" code when nobody has it).
///
/// Errors at once: `P2P_ERR_WRONG_MODE` (a server: servers hold the
/// directory), `P2P_ERR_NETWORK_DOWN` (lookup mode with no server linked:
/// wait for `P2P_EVENT_NETWORK_UP`), `P2P_ERR_CLOSED`,
/// `P2P_ERR_INVALID_ARGUMENT`.
///
/// Hosted mode: the question leaves at the next `p2p_node_service`. Thread
/// safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_lookup_id(node: *mut p2p_node, id: *const p2p_node_id) -> i64 {
    // SAFETY: the caller passes a live node and an ID (or NULL).
    lookup(node, unsafe { id_key(id) })
}

/// Looks up every peer named `name` (peers only; names need not be
/// unique). Returns the lookup id, answered by a `P2P_EVENT_LOOKUP_DONE`
/// with that id in `first` and the number found in `count` (each server
/// answers with at most 64); `id` and `name` are the first found, and every
/// one of them is then listed by `p2p_node_peers` (match them by name).
///
/// Errors at once: as `p2p_lookup_id`, and `P2P_ERR_INVALID_ARGUMENT` for
/// a name longer than 64 bytes (no node can have it; `P2P_NAME_LEN`
/// leaves room for the NUL) or not UTF-8.
///
/// Thread safety: as `p2p_poll_events`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn p2p_lookup_name(node: *mut p2p_node, name: *const c_char) -> i64 {
    // SAFETY: the caller passes a live node and a string (or NULL).
    lookup(node, unsafe { name_key(name) })
}
