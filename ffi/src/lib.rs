//! # p2pcore-ffi — the C ABI of p2pcore
//!
//! A plain C API for game engines and other languages (C, C++, C# through
//! P/Invoke, Python through ctypes), built as `cdylib` and `staticlib`, with
//! a cbindgen-generated header checked in at `ffi/include/p2pcore.h` (the
//! `header` test fails when it drifts from this crate).
//!
//! * **Hosted mode** (`p2p_node_*`): a node on the mio host — its own UDP
//!   socket, clock and randomness — driven by `p2p_node_service` from the
//!   caller's frame loop, or by a network thread of its own
//!   (`p2p_node_start_thread`); a waitable descriptor and `p2p_node_wake`
//!   for engines that wait in their own loop.
//! * **Raw core mode** (`p2p_core_*`): the sans-IO state machine for engines
//!   that own their socket and clock (time in monotonic microseconds).
//! * **Polling, not callbacks**: `p2p_poll_events` fills an array of flat
//!   `p2p_event` structures; received messages are owned `p2p_message *`
//!   released with `p2p_message_release` from any thread. An optional log
//!   callback per node runs only inside the service and poll calls.
//! * **The cluster's store** (peers): `p2p_kv_get`, `p2p_kv_get_prefix`,
//!   `p2p_kv_put`, `p2p_kv_delete`, `p2p_kv_delete_prefix` and `p2p_kv_cas`
//!   return a request id at once; the answer is a `P2P_EVENT_KV_DONE` with
//!   that id, its entries an owned `p2p_kv_list *` (`p2p_kv_list_free`).
//!   `p2p_kv_watch` streams changes as `P2P_EVENT_KV_WATCH` events;
//!   `p2p_kv_session_open` opens the sessions coordination binds to.
//! * **Finding peers** (peers): `p2p_lookup_id` and `p2p_lookup_name` (and
//!   their raw-mode twins) answer as `P2P_EVENT_LOOKUP_DONE`; with
//!   `peer.directory = lookup` a peer learns only the peers it looks up or
//!   sends to, which is what networks of thousands of peers want.
//! * **Coordination** (peers): locks with fencing tokens
//!   (`p2p_coord_lock`), elections (`p2p_coord_campaign`,
//!   `p2p_coord_leader`), queues (`p2p_coord_push`, `p2p_coord_pop`, ...)
//!   and a registry of live instances (`p2p_coord_register`,
//!   `p2p_coord_query`), reporting as `P2P_EVENT_COORD_*` events until
//!   `p2p_coord_release`.
//! * **Safety at the boundary**: every exported function catches panics
//!   (`P2P_ERR_PANIC`, never an unwind into C), checks its pointers and
//!   lengths, and leaves a per-thread message for `p2p_last_error`. Node IDs
//!   are 17-byte values, never pointers into the library.
//!
//! `ffi/README.md` has the build and link recipes, the frame loop in C, the
//! threading model and a C# snippet; `ffi/examples/` has `chat.c` (hosted),
//! `raw_loop.c` (raw mode with the example's own socket), `kv.c` (the store)
//! and `coord.c` (sessions, a lock, an election, a queue and the registry).
//!
//! # Safety
//!
//! The functions are `unsafe extern "C"`: callable from Rust too (the tests
//! and the benchmark do), under the same contract as from C, which is one
//! for every function (the header's preamble states it): each pointer is
//! NULL (reported as `P2P_ERR_INVALID_ARGUMENT` where one is needed) or
//! valid for what it points to — a live object from this library, a
//! NUL-terminated string, or as many bytes or items as the length beside
//! it says — and objects are freed once, when no other thread uses them.
// The C names (`p2p_node`, `p2p_event`, ...) are the API; raw pointers from
// C are dereferenced after checks, in `unsafe` blocks that say why. The one
// safety contract is stated above rather than repeated on every function
// (cbindgen copies doc comments into the C header).
#![allow(non_camel_case_types, unsafe_code, clippy::missing_safety_doc)]

mod config;
mod coord;
mod core;
mod event;
mod kv;
mod log;
mod lookup;
mod node;
mod query;
mod result;
mod types;

pub use config::{P2P_CONFIG_VERSION, p2p_config, p2p_config_clear, p2p_config_default, p2p_config_set};
pub use coord::{
    P2P_COORD_MAX_NAME, P2P_COORD_MAX_POP, p2p_coord_campaign, p2p_coord_leader, p2p_coord_lock,
    p2p_coord_pop, p2p_coord_push, p2p_coord_query, p2p_coord_register, p2p_coord_release, p2p_coord_remove,
    p2p_coord_update, p2p_coord_watch_queue,
};
pub use core::{
    p2p_core, p2p_core_close, p2p_core_connect, p2p_core_create, p2p_core_free, p2p_core_handle_datagram,
    p2p_core_handle_timeout, p2p_core_id, p2p_core_is_closed, p2p_core_links, p2p_core_lookup_id,
    p2p_core_lookup_name, p2p_core_master, p2p_core_path, p2p_core_peers, p2p_core_poll_events,
    p2p_core_poll_timeout, p2p_core_poll_transmit, p2p_core_send, p2p_core_servers, p2p_core_set_local_addrs,
    p2p_core_set_log, p2p_core_stats, p2p_transmit,
};
pub use event::*;
pub use kv::{
    P2P_KV_MAX_KEY_LEN, P2P_KV_MAX_SESSION_TTL_MS, P2P_KV_MAX_VALUE_LEN, P2P_KV_MIN_SESSION_TTL_MS,
    p2p_kv_cas, p2p_kv_delete, p2p_kv_delete_prefix, p2p_kv_get, p2p_kv_get_prefix, p2p_kv_put,
    p2p_kv_session_close, p2p_kv_session_open, p2p_kv_unwatch, p2p_kv_watch,
};
pub use log::{
    P2P_LOG_DEBUG, P2P_LOG_ERROR, P2P_LOG_INFO, P2P_LOG_OFF, P2P_LOG_TRACE, P2P_LOG_WARN, p2p_log_fn,
};
pub use lookup::{p2p_lookup_id, p2p_lookup_name};
pub use node::{
    P2P_NO_WAITABLE, P2P_SEND_RELIABLE, P2P_SEND_UNRELIABLE, p2p_connect, p2p_disconnect, p2p_node,
    p2p_node_close, p2p_node_create, p2p_node_free, p2p_node_get_id, p2p_node_identity, p2p_node_links,
    p2p_node_local_addr, p2p_node_master, p2p_node_path, p2p_node_peers, p2p_node_servers, p2p_node_service,
    p2p_node_set_load, p2p_node_set_log, p2p_node_start_thread, p2p_node_stats, p2p_node_timeout,
    p2p_node_waitable, p2p_node_wake, p2p_poll_events, p2p_send, p2p_waitable,
};
pub use query::{p2p_link_info, p2p_master_info, p2p_path_info, p2p_peer_info, p2p_server_info, p2p_stats};
pub use result::*;
pub use types::*;
