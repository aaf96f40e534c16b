//! The C ABI's hosted and raw modes, called from Rust exactly as C calls
//! them, over real loopback sockets: waiting on the waitable descriptor,
//! waking a blocked service, thread mode, bounded close, the log callback's
//! thread, typed errors, identity persistence, and the raw mode's transmit
//! buffer and clock.
#![allow(unsafe_code, missing_docs)]

use p2pcore_ffi::*;
use std::ffi::{CStr, CString, c_char, c_void};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// A config with the strings it points to kept alive.
struct Cfg {
    cfg: p2p_config,
    _strings: Vec<CString>,
}

fn config(role: u32, name: &str, bootstrap: Option<SocketAddr>) -> Cfg {
    let mut cfg = std::mem::MaybeUninit::<p2p_config>::uninit();
    // SAFETY: a writable config.
    assert_eq!(unsafe { p2p_config_default(cfg.as_mut_ptr()) }, P2P_OK);
    // SAFETY: filled by p2p_config_default.
    let mut cfg = unsafe { cfg.assume_init() };
    let mut strings = vec![CString::new(name).unwrap(), CString::new("127.0.0.1:0").unwrap()];
    cfg.role = role;
    cfg.name = strings[0].as_ptr();
    cfg.bind = strings[1].as_ptr();
    if let Some(b) = bootstrap {
        strings.push(CString::new(b.to_string()).unwrap());
        cfg.bootstrap = strings[2].as_ptr();
    }
    Cfg { cfg, _strings: strings }
}

fn set(c: &mut Cfg, key: &str, value: &str) {
    let (k, v) = (CString::new(key).unwrap(), CString::new(value).unwrap());
    // SAFETY: a valid config and strings.
    assert_eq!(unsafe { p2p_config_set(&mut c.cfg, k.as_ptr(), v.as_ptr()) }, P2P_OK);
}

fn create(c: &mut Cfg) -> *mut p2p_node {
    let mut node = std::ptr::null_mut();
    // SAFETY: a valid config; `node` is writable.
    let r = unsafe { p2p_node_create(&c.cfg, &mut node) };
    assert_eq!(r, P2P_OK, "p2p_node_create: {}", last_error());
    // SAFETY: the settings are released once.
    unsafe { p2p_config_clear(&mut c.cfg) };
    node
}

fn node(role: u32, name: &str, bootstrap: Option<SocketAddr>) -> *mut p2p_node {
    create(&mut config(role, name, bootstrap))
}

fn last_error() -> String {
    let mut buf = [0 as c_char; 512];
    // SAFETY: 512 writable bytes.
    unsafe { p2p_last_error(buf.as_mut_ptr(), 512) };
    // SAFETY: NUL-terminated by p2p_last_error.
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

fn local_addr(n: *mut p2p_node) -> SocketAddr {
    let mut a = p2p_addr { family: 0, port: 0, scope_id: 0, ip: [0; 16] };
    // SAFETY: a live node and a writable address.
    assert_eq!(unsafe { p2p_node_local_addr(n, &mut a) }, P2P_OK);
    let mut text = [0 as c_char; 64];
    let mut len = 64;
    // SAFETY: 64 writable bytes.
    assert_eq!(unsafe { p2p_addr_format(&a, text.as_mut_ptr(), &mut len) }, P2P_OK);
    // SAFETY: NUL-terminated.
    unsafe { CStr::from_ptr(text.as_ptr()) }.to_str().unwrap().parse().unwrap()
}

fn id_of(n: *mut p2p_node) -> p2p_node_id {
    let mut id = p2p_node_id { bytes: [0; 17] };
    // SAFETY: a live node and a writable ID.
    assert_eq!(unsafe { p2p_node_get_id(n, &mut id) }, P2P_OK);
    id
}

/// Events waiting now (messages released); their kinds.
fn take_events(n: *mut p2p_node) -> Vec<u32> {
    events(n).into_iter().map(|e| e.kind).collect()
}

/// Services `nodes` (hosted mode) until `done` says so, at most 20 s.
fn drive_until(nodes: &[*mut p2p_node], mut done: impl FnMut(usize, u32) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "not done within 20 s");
        for (i, n) in nodes.iter().enumerate() {
            // SAFETY: live nodes.
            assert_eq!(unsafe { p2p_node_service(*n, 2) }, P2P_OK);
            for kind in take_events(*n) {
                if done(i, kind) {
                    return;
                }
            }
        }
    }
}

/// `poll(2)` on a descriptor for readability, for at most `ms`.
fn readable(fd: p2p_waitable, ms: i32) -> bool {
    let mut p = libc::pollfd { fd: fd as i32, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    r == 1 && p.revents & libc::POLLIN != 0
}

fn free(nodes: &[*mut p2p_node]) {
    for n in nodes {
        // SAFETY: each freed once.
        unsafe { p2p_node_free(*n) };
    }
}

#[test]
fn hosted_waitable_turns_readable_on_a_datagram_and_timeout_bounds_the_wait() {
    let mut c = config(P2P_ROLE_SERVER, "s", None);
    set(&mut c, "host.local_addrs_interval_ms", "60000");
    let server = create(&mut c);
    // SAFETY: a live node.
    let fd = unsafe { p2p_node_waitable(server) };
    assert!(fd >= 0);
    // A lone server settles at once (it is Master), then nothing is due
    // before the interface re-read (60 s, as set).
    for _ in 0..10 {
        // SAFETY: a live node.
        unsafe { p2p_node_service(server, 0) };
        take_events(server);
    }
    let mut ms = 0;
    // SAFETY: a live node and a writable count.
    assert_eq!(unsafe { p2p_node_timeout(server, &mut ms) }, P2P_OK);
    assert!(ms > 30_000 && ms <= 60_000, "{ms} ms");
    assert!(!readable(fd, 0), "quiet: nothing to do");
    // A datagram (junk) arrives: the descriptor says so, service reads it.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    junk.send_to(&[0x17; 40], local_addr(server)).unwrap();
    assert!(readable(fd, 10_000), "the datagram made the descriptor readable");
    let mut stats = p2p_stats { size: std::mem::size_of::<p2p_stats>() as u32, ..Default::default() };
    // SAFETY: a live node and a sized struct.
    unsafe {
        assert_eq!(p2p_node_service(server, 0), P2P_OK);
        assert_eq!(p2p_node_stats(server, &mut stats), P2P_OK);
    }
    assert_eq!(stats.datagrams_in, 1);
    assert_eq!(stats.dropped, 1, "junk is counted and dropped");
    assert!(!readable(fd, 0), "service consumed the readiness");
    free(&[server]);
}

#[test]
fn wake_ends_a_blocked_service() {
    let server = node(P2P_ROLE_SERVER, "s", None);
    for _ in 0..10 {
        // SAFETY: a live node.
        unsafe { p2p_node_service(server, 0) };
        take_events(server);
    }
    let ptr = server as usize;
    let waiting = |_: ()| {
        std::thread::spawn(move || {
            let t = Instant::now();
            // SAFETY: the node outlives the thread (joined below).
            assert_eq!(unsafe { p2p_node_service(ptr as *mut p2p_node, 60_000) }, P2P_OK);
            t.elapsed()
        })
    };
    // p2p_node_wake: the service returns instead of waiting its minute.
    let t = waiting(());
    // SAFETY: a live node; waking from another thread is allowed.
    assert_eq!(unsafe { p2p_node_wake(server) }, P2P_OK);
    assert!(t.join().unwrap() < Duration::from_secs(30));
    // A wake before the wait is not lost: the next wait returns at once.
    // SAFETY: a live node.
    assert_eq!(unsafe { p2p_node_wake(server) }, P2P_OK);
    assert!(waiting(()).join().unwrap() < Duration::from_secs(30));
    free(&[server]);
}

#[test]
fn thread_mode_signals_events_on_the_waitable_and_in_service() {
    let server = node(P2P_ROLE_SERVER, "s", None);
    // SAFETY: a live node.
    assert_eq!(unsafe { p2p_node_start_thread(server) }, P2P_OK);
    // SAFETY: twice is a mode error.
    assert_eq!(unsafe { p2p_node_start_thread(server) }, P2P_ERR_WRONG_MODE);
    let addr = local_addr(server);
    let a = node(P2P_ROLE_PEER, "a", Some(addr));
    let b = node(P2P_ROLE_PEER, "b", Some(addr));
    // SAFETY: live nodes.
    unsafe {
        assert_eq!(p2p_node_start_thread(a), P2P_OK);
        assert_eq!(p2p_node_start_thread(b), P2P_OK);
    }
    // SAFETY: a live node.
    let fd = unsafe { p2p_node_waitable(a) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !seen.contains(&P2P_EVENT_PEER_ONLINE) {
        assert!(Instant::now() < deadline, "a never saw b online: {seen:?}");
        // Readiness may be spurious (an event taken by the previous poll
        // can leave a wake-up behind); events are only taken when it fires.
        if readable(fd, 1000) {
            seen.extend(take_events(a));
        }
    }
    // b must see a too before it can send to it.
    let mut b_seen = Vec::new();
    while !b_seen.contains(&P2P_EVENT_PEER_ONLINE) {
        assert!(Instant::now() < deadline, "b never saw a online: {b_seen:?}");
        // SAFETY: a live node; thread mode.
        assert_eq!(unsafe { p2p_node_service(b, 1000) }, P2P_OK);
        b_seen.extend(take_events(b));
    }
    // A message from b: p2p_node_service(a) returns when it arrives.
    let to = id_of(a);
    // SAFETY: a live node, an ID and 5 bytes.
    let seq = unsafe { p2p_send(b, &to, 3, b"hello".as_ptr(), 5, P2P_SEND_RELIABLE) };
    assert!(seq >= 0, "{seq}: {}", last_error());
    let t = Instant::now();
    let mut got = Vec::new();
    while !got.contains(&P2P_EVENT_MESSAGE) {
        assert!(t.elapsed() < Duration::from_secs(20));
        // SAFETY: a live node; thread mode: any thread.
        assert_eq!(unsafe { p2p_node_service(a, 20_000) }, P2P_OK);
        got.extend(take_events(a));
    }
    free(&[a, b, server]);
}

#[test]
fn close_is_bounded_when_the_remotes_are_gone() {
    let server = node(P2P_ROLE_SERVER, "s", None);
    let mut c = config(P2P_ROLE_PEER, "p", Some(local_addr(server)));
    c.cfg.close_timeout_ms = 300;
    let peer = create(&mut c);
    let mut connected = false;
    drive_until(&[server, peer], |i, kind| {
        connected |= i == 1 && kind == P2P_EVENT_NETWORK_UP;
        connected
    });
    // The server goes silent (nobody services it): the peer's goodbye is
    // never acknowledged, and close gives up at its bound.
    let t = Instant::now();
    // SAFETY: a live node.
    assert_eq!(unsafe { p2p_node_close(peer) }, P2P_OK);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(3), "close took {took:?}");
    let payload = [1u8; 4];
    let to = id_of(server);
    // SAFETY: a live node, an ID and 4 bytes.
    assert_eq!(unsafe { p2p_send(peer, &to, 0, payload.as_ptr(), 4, 0) }, P2P_ERR_CLOSED as i64);
    free(&[peer, server]);
}

unsafe extern "C" fn record_thread(user: *mut c_void, level: u32, _: *const c_char, _: *const c_char) {
    // SAFETY: `user` is the test's Vec.
    let out = unsafe { &mut *user.cast::<Vec<(u32, std::thread::ThreadId)>>() };
    out.push((level, std::thread::current().id()));
}

#[test]
fn the_log_callback_runs_only_inside_service_on_the_callers_thread() {
    let server = node(P2P_ROLE_SERVER, "s", None);
    // SAFETY: a live node.
    unsafe { p2p_node_start_thread(server) };
    let peer = node(P2P_ROLE_PEER, "p", Some(local_addr(server)));
    let mut records: Vec<(u32, std::thread::ThreadId)> = Vec::new();
    let user = (&mut records as *mut Vec<(u32, std::thread::ThreadId)>).cast::<c_void>();
    // SAFETY: a live node; `records` outlives it.
    assert_eq!(unsafe { p2p_node_set_log(peer, Some(record_thread), user, P2P_LOG_DEBUG) }, P2P_OK);
    let mut up = false;
    drive_until(&[peer], |_, kind| {
        up |= kind == P2P_EVENT_NETWORK_UP;
        up
    });
    // SAFETY: `records` is only touched by the callback, inside the calls above.
    let records = unsafe { &*user.cast::<Vec<(u32, std::thread::ThreadId)>>() };
    assert!(!records.is_empty(), "the dial and handshake are logged at debug");
    assert!(records.iter().all(|(_, t)| *t == std::thread::current().id()));
    assert!(records.iter().all(|(l, _)| (P2P_LOG_ERROR..=P2P_LOG_DEBUG).contains(l)));
    // SAFETY: NULL callback: off.
    assert_eq!(unsafe { p2p_node_set_log(peer, None, std::ptr::null_mut(), P2P_LOG_TRACE) }, P2P_OK);
    free(&[peer, server]);
}

#[test]
fn mistakes_are_typed_errors_with_messages() {
    let dir = tempfile::tempdir().unwrap();
    let path = CString::new(dir.path().join("node").to_str().unwrap()).unwrap();
    let mut c = config(P2P_ROLE_PEER, "p", None);
    c.cfg.data_dir = path.as_ptr();
    let first = create(&mut c);
    let id = id_of(first);
    let mut second = std::ptr::null_mut();
    // SAFETY: a valid config.
    assert_eq!(unsafe { p2p_node_create(&c.cfg, &mut second) }, P2P_ERR_DATA_DIR);
    assert!(second.is_null());
    assert!(last_error().contains(&format!("PID {}", std::process::id())), "{}", last_error());
    free(&[first]);
    // The identity survived in the directory.
    let again = create(&mut c);
    assert_eq!(id_of(again), id);

    // A port in use.
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let bind = CString::new(taken.local_addr().unwrap().to_string()).unwrap();
    let mut c = config(P2P_ROLE_PEER, "p", None);
    c.cfg.bind = bind.as_ptr();
    let mut n = std::ptr::null_mut();
    // SAFETY: a valid config.
    assert_eq!(unsafe { p2p_node_create(&c.cfg, &mut n) }, P2P_ERR_IO);
    assert!(last_error().contains("another process uses this port"), "{}", last_error());

    // Sends the node refuses, each with its own code.
    let me = id_of(again);
    let data = [0u8; 8];
    // SAFETY: a live node, IDs and 8 bytes (or NULL where the test says).
    unsafe {
        assert_eq!(p2p_send(again, &me, 0, data.as_ptr(), 8, 0), P2P_ERR_SELF_SEND as i64);
        assert_eq!(
            p2p_send(again, std::ptr::null(), 0, data.as_ptr(), 8, 0),
            P2P_ERR_INVALID_ARGUMENT as i64
        );
        assert_eq!(p2p_send(again, &me, 0, std::ptr::null(), 8, 0), P2P_ERR_INVALID_ARGUMENT as i64);
        assert_eq!(p2p_send(again, &me, 0, data.as_ptr(), 8, 7), P2P_ERR_INVALID_ARGUMENT as i64);
        assert!(last_error().contains("P2P_SEND_UNRELIABLE"), "{}", last_error());
        let bad = p2p_node_id { bytes: [0xff; 17] };
        assert_eq!(p2p_send(again, &bad, 0, data.as_ptr(), 8, 0), P2P_ERR_INVALID_ARGUMENT as i64);
        assert!(last_error().contains("not a node ID"), "{}", last_error());
        assert_eq!(p2p_node_service(std::ptr::null_mut(), 0), P2P_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("`node` is NULL"), "{}", last_error());
    }
    // A peer that no server lists (this node has no server at all).
    let other = node(P2P_ROLE_PEER, "o", None);
    let other_id = id_of(other);
    // SAFETY: a live node, an ID and 8 bytes.
    let r = unsafe { p2p_send(again, &other_id, 0, data.as_ptr(), 8, 0) };
    assert!(r == P2P_ERR_NETWORK_DOWN as i64 || r == P2P_ERR_UNKNOWN_PEER as i64, "{r}");
    // The identity blob comes back out, and makes the same ID.
    let mut blob = [0u8; 64];
    let mut len = 64;
    let mut from_blob = p2p_node_id { bytes: [0; 17] };
    // SAFETY: a live node and a 64-byte buffer.
    unsafe {
        assert_eq!(p2p_node_identity(again, blob.as_mut_ptr(), &mut len), P2P_OK);
        assert_eq!(len, P2P_IDENTITY_LEN);
        assert_eq!(p2p_identity_id(blob.as_ptr(), len, &mut from_blob), P2P_OK);
    }
    assert_eq!(from_blob, id);
    free(&[again, other]);
}

#[test]
fn store_mistakes_are_typed_errors_with_messages_in_both_modes() {
    let server = node(P2P_ROLE_SERVER, "s", None);
    let peer = node(P2P_ROLE_PEER, "p", None);
    let key = b"k";
    let long = vec![b'k'; P2P_KV_MAX_KEY_LEN as usize + 1];
    let value = vec![0u8; P2P_KV_MAX_VALUE_LEN as usize + 1];
    // SAFETY: live nodes and buffers of the lengths given (or NULL where the test says).
    unsafe {
        assert_eq!(p2p_kv_get(server, key.as_ptr(), 1), P2P_ERR_KV_NOT_A_PEER as i64);
        assert!(last_error().contains("only a peer"), "{}", last_error());
        assert_eq!(p2p_kv_watch(server, key.as_ptr(), 1, 0), P2P_ERR_KV_NOT_A_PEER as i64);
        assert_eq!(p2p_kv_get(peer, long.as_ptr(), long.len() as u32), P2P_ERR_KV_TOO_LARGE as i64);
        assert!(last_error().contains("key is 1025 bytes"), "{}", last_error());
        let r = p2p_kv_put(peer, key.as_ptr(), 1, value.as_ptr(), value.len() as u32);
        assert_eq!(r, P2P_ERR_KV_TOO_LARGE as i64);
        assert!(last_error().contains("value is 32769 bytes"), "{}", last_error());
        assert_eq!(p2p_kv_put(peer, std::ptr::null(), 0, key.as_ptr(), 1), P2P_ERR_KV_INVALID as i64);
        assert!(last_error().contains("non-empty key"), "{}", last_error());
        assert_eq!(p2p_kv_get(peer, std::ptr::null(), 3), P2P_ERR_INVALID_ARGUMENT as i64);
        assert!(last_error().contains("`key` is NULL"), "{}", last_error());
        let r = p2p_kv_cas(peer, key.as_ptr(), 1, std::ptr::null(), 2, key.as_ptr(), 1);
        assert_eq!(r, P2P_ERR_INVALID_ARGUMENT as i64);
        assert!(last_error().contains("`expect` is NULL"), "{}", last_error());
        assert_eq!(p2p_kv_unwatch(peer, 99), P2P_ERR_NOT_FOUND);
        assert_eq!(p2p_kv_get(std::ptr::null_mut(), key.as_ptr(), 1), P2P_ERR_INVALID_ARGUMENT as i64);
        // Valid requests get ids at once, counting up, answered later
        // (here: never in time, as this peer has no server).
        assert_eq!(p2p_kv_get(peer, key.as_ptr(), 1), 0);
        assert_eq!(p2p_kv_cas(peer, key.as_ptr(), 1, std::ptr::null(), 0, key.as_ptr(), 1), 1);
        let watch = p2p_kv_watch(peer, std::ptr::null(), 0, 0);
        assert_eq!(watch, 0, "watches have their own ids");
        // Thread mode: the same through the network thread.
        assert_eq!(p2p_node_start_thread(peer), P2P_OK);
        assert_eq!(p2p_kv_delete_prefix(peer, key.as_ptr(), 1), 2);
        assert_eq!(p2p_kv_get_prefix(peer, long.as_ptr(), long.len() as u32, 5), P2P_ERR_KV_TOO_LARGE as i64);
        assert_eq!(p2p_kv_unwatch(peer, watch as u64), P2P_OK);
        assert_eq!(p2p_kv_unwatch(peer, watch as u64), P2P_ERR_NOT_FOUND);
        assert_eq!(p2p_node_close(peer), P2P_OK);
        assert_eq!(p2p_kv_put(peer, key.as_ptr(), 1, key.as_ptr(), 1), P2P_ERR_CLOSED as i64);
        assert_eq!(p2p_node_close(server), P2P_OK);
        assert_eq!(p2p_kv_delete(server, key.as_ptr(), 1), P2P_ERR_CLOSED as i64);
        let code = std::ffi::CStr::from_ptr(p2p_result_str(P2P_ERR_KV_COMPACTED)).to_str().unwrap();
        assert!(code.starts_with("P2P_ERR_KV_COMPACTED"), "{code}");
    }
    free(&[peer, server]);
}

fn core(name: &str, seed: [u8; 32], identity: &[u8], now_us: u64) -> *mut p2p_core {
    let mut c = config(P2P_ROLE_PEER, name, Some("127.0.0.1:9".parse().unwrap()));
    c.cfg.seed = seed.as_ptr();
    c.cfg.identity = identity.as_ptr();
    c.cfg.identity_len = identity.len() as u32;
    let mut core = std::ptr::null_mut();
    // SAFETY: a valid config (seed and identity outlive the call).
    assert_eq!(unsafe { p2p_core_create(&c.cfg, now_us, &mut core) }, P2P_OK, "{}", last_error());
    core
}

/// Every transmit the core has now, in order.
fn transmits(core: *mut p2p_core) -> Vec<(p2p_transmit, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2048];
    loop {
        let mut meta = p2p_transmit::default();
        // SAFETY: a live core and a 2048-byte buffer.
        let n = unsafe { p2p_core_poll_transmit(core, buf.as_mut_ptr(), 2048, &mut meta) };
        if n == P2P_DONE {
            return out;
        }
        assert!(n > 0, "{n}: {}", last_error());
        out.push((meta, buf[..n as usize].to_vec()));
    }
}

#[test]
fn raw_mode_keeps_what_did_not_fit_runs_on_the_callers_clock_and_replays() {
    let mut identity = [0u8; 38];
    let mut len = 38;
    // SAFETY: a 38-byte buffer.
    assert_eq!(unsafe { p2p_identity_generate(P2P_ROLE_PEER, identity.as_mut_ptr(), &mut len) }, P2P_OK);
    let start = 5_000_000_000;
    let a = core("a", [4; 32], &identity, start);
    // The dial to the bootstrap server: a QUIC Initial, padded to 1200 bytes.
    let mut small = [0u8; 16];
    let mut meta = p2p_transmit::default();
    // SAFETY: a live core and a 16-byte buffer.
    let r = unsafe { p2p_core_poll_transmit(a, small.as_mut_ptr(), 16, &mut meta) };
    assert_eq!(r, P2P_ERR_BUFFER_TOO_SMALL);
    assert!(meta.size >= 1200, "{}", meta.size);
    assert_eq!(meta.destination.port, 9);
    let first = transmits(a);
    assert_eq!(first[0].0.size, meta.size, "the datagram that did not fit comes first, whole");
    // Deadlines are in the caller's microseconds.
    let mut deadline = 0;
    // SAFETY: a live core.
    assert_eq!(unsafe { p2p_core_poll_events(a, std::ptr::null_mut(), 0) }, 0);
    // SAFETY: a live core and a writable count.
    assert_eq!(unsafe { p2p_core_poll_timeout(a, &mut deadline) }, P2P_OK);
    assert!(deadline > start && deadline < start + 10_000_000, "{deadline}");
    // The same seed, identity and inputs: the same bytes.
    let b = core("a", [4; 32], &identity, 77);
    assert_eq!(
        transmits(b).iter().map(|t| &t.1).collect::<Vec<_>>(),
        first.iter().map(|t| &t.1).collect::<Vec<_>>()
    );
    // Time passes on the caller's clock: the dial is retransmitted.
    // SAFETY: a live core.
    assert_eq!(unsafe { p2p_core_handle_timeout(a, deadline) }, P2P_OK);
    assert!(!transmits(a).is_empty(), "a retransmission at the deadline");
    // SAFETY: freed once.
    unsafe {
        p2p_core_free(a);
        p2p_core_free(b);
    }
}

/// Events waiting now, whole (messages released).
fn events(n: *mut p2p_node) -> Vec<p2p_event> {
    let mut out = Vec::new();
    let mut buf: Vec<p2p_event> = Vec::with_capacity(32);
    loop {
        // SAFETY: a live node; `buf` has room for 32 events.
        let got = unsafe { p2p_poll_events(n, buf.as_mut_ptr(), 32) };
        assert!(got >= 0, "p2p_poll_events: {got} {}", last_error());
        // SAFETY: `got` events were written.
        unsafe { buf.set_len(got as usize) };
        for mut e in buf.drain(..) {
            // SAFETY: released once (NULL for non-messages).
            unsafe { p2p_message_release(e.message) };
            e.message = std::ptr::null_mut();
            out.push(e);
        }
        if got < 32 {
            return out;
        }
    }
}

/// Services `nodes` until node `who` reports the lookup `query` answered.
fn lookup_answer(nodes: &[*mut p2p_node], who: usize, query: i64) -> p2p_event {
    assert!(query >= 0, "lookup refused: {query} {}", last_error());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "lookup {query} not answered within 20 s");
        for (i, n) in nodes.iter().enumerate() {
            // SAFETY: live nodes.
            assert_eq!(unsafe { p2p_node_service(*n, 2) }, P2P_OK);
            let found = events(*n)
                .into_iter()
                .find(|e| i == who && e.kind == P2P_EVENT_LOOKUP_DONE && e.first == query as u64);
            if let Some(e) = found {
                return e;
            }
        }
    }
}

fn name_of(e: &p2p_event) -> String {
    // SAFETY: NUL-terminated by the library.
    unsafe { CStr::from_ptr(e.name.as_ptr()) }.to_str().unwrap().to_owned()
}

#[test]
fn lookup_mode_finds_peers_by_name_and_id_over_real_sockets() {
    let server = node(P2P_ROLE_SERVER, "s", None);
    let at = local_addr(server);
    let lookup_peer = |name: &str| {
        let mut c = config(P2P_ROLE_PEER, name, Some(at));
        set(&mut c, "peer.directory", "lookup");
        create(&mut c)
    };
    let (alice, bob) = (lookup_peer("alice"), lookup_peer("bob"));
    let bob_id = id_of(bob);
    let name = |s: &str| CString::new(s).unwrap();
    // Mistakes and refusals, each with its code.
    // SAFETY: live nodes, IDs and strings (or NULL where the test says).
    unsafe {
        assert_eq!(p2p_lookup_name(server, name("bob").as_ptr()), P2P_ERR_WRONG_MODE as i64);
        assert!(last_error().contains("only peers look peers up"), "{}", last_error());
        assert_eq!(p2p_lookup_id(alice, &bob_id), P2P_ERR_NETWORK_DOWN as i64);
        assert!(last_error().contains("wait for P2P_EVENT_NETWORK_UP"), "{}", last_error());
        assert_eq!(p2p_lookup_name(alice, name(&"n".repeat(65)).as_ptr()), P2P_ERR_INVALID_ARGUMENT as i64);
        assert!(last_error().contains("65 bytes cannot match"), "{}", last_error());
        assert_eq!(p2p_lookup_name(alice, std::ptr::null()), P2P_ERR_INVALID_ARGUMENT as i64);
        assert_eq!(p2p_lookup_id(alice, std::ptr::null()), P2P_ERR_INVALID_ARGUMENT as i64);
        assert_eq!(p2p_lookup_id(std::ptr::null_mut(), &bob_id), P2P_ERR_INVALID_ARGUMENT as i64);
    }
    let nodes = [server, alice, bob];
    let mut up = [false; 3];
    drive_until(&nodes, |i, kind| {
        up[i] |= kind == P2P_EVENT_NETWORK_UP;
        up[1] && up[2]
    });
    // Lookup mode: nobody is known until looked up.
    let mut count = 0;
    // SAFETY: a live node; count 0 asks for the number only.
    assert_eq!(unsafe { p2p_node_peers(alice, std::ptr::null_mut(), &mut count) }, P2P_OK);
    assert_eq!(count, 0, "a lookup-mode peer is sent no directory");

    // SAFETY: a live node and a string.
    let e = lookup_answer(&nodes, 1, unsafe { p2p_lookup_name(alice, name("bob").as_ptr()) });
    assert_eq!((e.count, e.id, name_of(&e)), (1, bob_id, "bob".to_owned()));
    let mut peers = vec![std::mem::MaybeUninit::<p2p_peer_info>::uninit(); 4];
    let mut count = 4;
    // SAFETY: room for 4 peers.
    assert_eq!(unsafe { p2p_node_peers(alice, peers.as_mut_ptr().cast(), &mut count) }, P2P_OK);
    assert_eq!(count, 1);
    // SAFETY: written by p2p_node_peers.
    assert_eq!(unsafe { peers[0].assume_init() }.id, bob_id, "the peer found is in the directory");

    // An ID nobody has, and a name nobody has: answered, with none found.
    let offline = node(P2P_ROLE_PEER, "nobody", None);
    let stranger = id_of(offline);
    // SAFETY: a live node and an ID.
    let e = lookup_answer(&nodes, 1, unsafe { p2p_lookup_id(alice, &stranger) });
    assert_eq!((e.count, e.id), (0, p2p_node_id { bytes: [0; 17] }));
    // SAFETY: a live node and a string.
    let e = lookup_answer(&nodes, 1, unsafe { p2p_lookup_name(alice, name("carol").as_ptr()) });
    assert_eq!(e.count, 0);

    // Sending by ID needs no lookup: bob has never looked alice up, and
    // answers her anyway.
    let alice_id = id_of(alice);
    let hello = b"hello";
    // SAFETY: a live node, an ID and 5 bytes.
    assert!(unsafe { p2p_send(alice, &bob_id, 1, hello.as_ptr(), 5, P2P_SEND_RELIABLE) } >= 0);
    drive_until(&nodes, |i, kind| i == 2 && kind == P2P_EVENT_MESSAGE);
    // SAFETY: a live node, an ID and 5 bytes.
    assert!(unsafe { p2p_send(bob, &alice_id, 1, hello.as_ptr(), 5, P2P_SEND_RELIABLE) } >= 0);
    drive_until(&nodes, |i, kind| i == 1 && kind == P2P_EVENT_MESSAGE);
    free(&[alice, bob, server, offline]);
}

#[test]
fn raw_mode_lookups_answer_from_the_directory_or_refuse() {
    let mut identity = [0u8; 38];
    let mut len = 38;
    // SAFETY: a 38-byte buffer.
    assert_eq!(unsafe { p2p_identity_generate(P2P_ROLE_PEER, identity.as_mut_ptr(), &mut len) }, P2P_OK);
    // A full-directory peer answers from what it knows, at the next poll.
    let a = core("a", [5; 32], &identity, 1_000);
    let nobody = CString::new("nobody").unwrap();
    let long = CString::new("n".repeat(65)).unwrap();
    // SAFETY: a live core and strings (or NULL where the test says).
    unsafe {
        assert_eq!(p2p_core_lookup_name(a, 2_000, nobody.as_ptr()), 0);
        assert_eq!(p2p_core_lookup_name(a, 2_000, long.as_ptr()), P2P_ERR_INVALID_ARGUMENT as i64);
        assert_eq!(p2p_core_lookup_id(a, 2_000, std::ptr::null()), P2P_ERR_INVALID_ARGUMENT as i64);
        assert_eq!(
            p2p_core_lookup_name(std::ptr::null_mut(), 0, nobody.as_ptr()),
            P2P_ERR_INVALID_ARGUMENT as i64
        );
    }
    transmits(a);
    let mut buf: Vec<p2p_event> = Vec::with_capacity(8);
    // SAFETY: a live core and room for 8 events.
    let n = unsafe { p2p_core_poll_events(a, buf.as_mut_ptr(), 8) };
    // SAFETY: `n` events were written.
    unsafe { buf.set_len(n as usize) };
    let done = buf.iter().find(|e| e.kind == P2P_EVENT_LOOKUP_DONE).expect("the answer");
    assert_eq!((done.first, done.count), (0, 0));
    // SAFETY: freed once.
    unsafe { p2p_core_free(a) };
}
