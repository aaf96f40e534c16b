//! What the C ABI costs on top of the Rust API, on the same box in the same
//! run (the figures):
//!
//! * a `p2p_node_service(node, 0)` call with nothing to do, against
//!   `Host::service(Duration::ZERO)` (a lone server: quiet when idle);
//! * per message received: the time inside `p2p_poll_events` +
//!   `p2p_message_release`, against `Host::drain_events` and dropping the
//!   events, while a peer streams 64-byte reliable messages to the
//!   receiver over loopback;
//! * per `p2p_send` of a 64-byte message, against `Host::send`.
//!
//! `cargo bench -p p2pcore-ffi --bench overhead` (`-- --quick` for a short
//! run). Only the calls themselves are timed, so the network's own work
//! (QUIC, crypto) does not hide the difference.
#![allow(clippy::print_stdout, missing_docs, unsafe_code)]

use p2pcore::{Config, Event, Identity, NodeId, Reliability, Role};
use p2pcore_ffi::*;
use p2pcore_mio::{Host, HostConfig, os_seed};
use std::ffi::CString;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn host(role: Role, name: &str, servers: &[SocketAddr]) -> Host {
    let mut config = Config::new(Identity::from_seed(role, os_seed().unwrap()), name, os_seed().unwrap());
    config.bootstrap = servers.to_vec();
    Host::bind(HostConfig::new("127.0.0.1:0".parse().unwrap()), config).expect("bind")
}

fn ffi_node(role: u32, name: &str, bootstrap: Option<SocketAddr>) -> *mut p2p_node {
    let name = CString::new(name).unwrap();
    let bind = CString::new("127.0.0.1:0").unwrap();
    let bootstrap = bootstrap.map(|b| CString::new(b.to_string()).unwrap());
    let mut cfg = std::mem::MaybeUninit::<p2p_config>::uninit();
    let mut node = std::ptr::null_mut();
    // SAFETY: a writable config, strings that outlive the create call.
    unsafe {
        p2p_config_default(cfg.as_mut_ptr());
        let mut cfg = cfg.assume_init();
        cfg.role = role;
        cfg.name = name.as_ptr();
        cfg.bind = bind.as_ptr();
        cfg.bootstrap = bootstrap.as_ref().map_or(std::ptr::null(), |b| b.as_ptr());
        assert_eq!(p2p_node_create(&cfg, &mut node), P2P_OK);
    }
    node
}

fn per_call(total: Duration, calls: u64) -> f64 {
    total.as_secs_f64() * 1e9 / calls.max(1) as f64
}

/// ns per idle service call: (Rust, C).
fn idle_service(calls: u64) -> (f64, f64) {
    let mut server = host(Role::Server, "idle", &[]);
    let node = ffi_node(P2P_ROLE_SERVER, "idle-c", None);
    // Let both settle (a lone server becomes Master at once, then is quiet).
    for _ in 0..100 {
        server.service(Duration::ZERO).unwrap();
        // SAFETY: a live node; events are dropped (a server gets no messages).
        unsafe { p2p_node_service(node, 0) };
    }
    let mut drop_events = Vec::new();
    server.drain_events(&mut drop_events);
    let t = Instant::now();
    for _ in 0..calls {
        server.service(Duration::ZERO).unwrap();
    }
    let rust = per_call(t.elapsed(), calls);
    let t = Instant::now();
    for _ in 0..calls {
        // SAFETY: a live node.
        unsafe { p2p_node_service(node, 0) };
    }
    let c = per_call(t.elapsed(), calls);
    // SAFETY: freed once.
    unsafe { p2p_node_free(node) };
    (rust, c)
}

/// The receiving side under test.
enum Receiver {
    Rust(Box<Host>, Vec<Event>),
    C(*mut p2p_node, Vec<p2p_event>),
}

impl Receiver {
    fn id(&self) -> NodeId {
        match self {
            Receiver::Rust(h, _) => h.id(),
            Receiver::C(n, _) => {
                let mut id = p2p_node_id { bytes: [0; 17] };
                // SAFETY: a live node and a writable ID.
                unsafe { p2p_node_get_id(*n, &mut id) };
                NodeId::from_bytes(&id.bytes).unwrap()
            }
        }
    }

    fn service(&mut self) {
        match self {
            Receiver::Rust(h, _) => h.service(Duration::from_millis(1)).unwrap(),
            // SAFETY: a live node.
            Receiver::C(n, _) => assert_eq!(unsafe { p2p_node_service(*n, 1) }, P2P_OK),
        }
    }

    /// Takes the waiting events, timing only that; returns the messages.
    fn take(&mut self, timed: &mut Duration) -> u64 {
        let t = Instant::now();
        let mut messages = 0;
        match self {
            Receiver::Rust(h, events) => {
                h.drain_events(events);
                for e in events.drain(..) {
                    if let Event::MessageReceived { bytes, .. } = e {
                        messages += 1;
                        std::hint::black_box(bytes.len());
                    }
                }
            }
            Receiver::C(n, events) => loop {
                // SAFETY: a live node; `events` has room for its capacity.
                let got = unsafe { p2p_poll_events(*n, events.as_mut_ptr(), events.capacity() as u32) };
                assert!(got >= 0);
                // SAFETY: p2p_poll_events wrote `got` events.
                unsafe { events.set_len(got as usize) };
                for e in events.drain(..) {
                    if e.kind == P2P_EVENT_MESSAGE {
                        messages += 1;
                        // SAFETY: a live message, released once.
                        unsafe {
                            std::hint::black_box((*e.message).len);
                            p2p_message_release(e.message);
                        }
                    }
                }
                if (got as usize) < events.capacity() {
                    break;
                }
            },
        }
        *timed += t.elapsed();
        messages
    }
}

/// ns per received message spent taking it from the API (C API or Rust).
fn receive(c_api: bool, messages: u64) -> f64 {
    let (s_handle, _s_events) = host(Role::Server, "s", &[]).spawn().unwrap();
    let server = s_handle.local_addr();
    let mut rx = if c_api {
        Receiver::C(ffi_node(P2P_ROLE_PEER, "rx-c", Some(server)), Vec::with_capacity(64))
    } else {
        Receiver::Rust(Box::new(host(Role::Peer, "rx", &[server])), Vec::with_capacity(64))
    };
    let (tx, _tx_events) = host(Role::Peer, "tx", &[server]).spawn().unwrap();
    let to = rx.id();
    // The receiver joins; the sender streams once it sees the receiver.
    let mut timed = Duration::ZERO;
    let mut got = 0;
    let mut sent = 0u64;
    let payload = bytes::Bytes::from(vec![7u8; 64]);
    let deadline = Instant::now() + Duration::from_secs(300);
    while got < messages {
        assert!(Instant::now() < deadline, "only {got} of {messages} messages in 300 s");
        rx.service();
        got += rx.take(&mut timed);
        while sent < messages {
            match tx.send(to, 1, payload.clone(), Reliability::Reliable) {
                Ok(_) => sent += 1,
                Err(_) => break, // not online yet, or the buffer is full: later
            }
            if sent.is_multiple_of(256) {
                break; // let the receiver take some
            }
        }
    }
    tx.close().unwrap();
    s_handle.close().unwrap();
    if let Receiver::C(n, _) = rx {
        // SAFETY: freed once.
        unsafe { p2p_node_free(n) };
    }
    per_call(timed, got)
}

/// ns per send call: (Rust, C).
fn sends(count: u64) -> (f64, f64) {
    let mut server = host(Role::Server, "s", &[]);
    let addr = server.local_addr();
    let mut a = host(Role::Peer, "a", &[addr]);
    let c = ffi_node(P2P_ROLE_PEER, "c", Some(addr));
    let b = host(Role::Peer, "b", &[addr]);
    let (b_handle, _b_events) = b.spawn().unwrap();
    let to = b_handle.id();
    let to_c = p2p_node_id { bytes: to.to_bytes() };
    let payload = [9u8; 64];
    // Until both senders see b online.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "b never came online");
        server.service(Duration::ZERO).unwrap();
        a.service(Duration::from_millis(1)).unwrap();
        // SAFETY: a live node.
        unsafe { p2p_node_service(c, 1) };
        let a_sees = a.node().peers().iter().any(|p| p.id == to);
        let mut count = 8u32;
        let mut peers = [std::mem::MaybeUninit::<p2p_peer_info>::uninit(); 8];
        // SAFETY: an array of 8 and its count.
        let c_sees =
            unsafe { p2p_node_peers(c, peers.as_mut_ptr().cast(), &mut count) } == P2P_OK && count >= 2;
        if a_sees && c_sees {
            break;
        }
    }
    // Sends are timed alone, in bursts the buffer holds; the nodes are
    // serviced (untimed) in between so the buffers drain.
    let (mut rust, mut cc, mut n) = (Duration::ZERO, Duration::ZERO, 0);
    let rust_burst = |a: &mut Host| {
        let t = Instant::now();
        for _ in 0..64 {
            a.send(to, 1, bytes::Bytes::copy_from_slice(&payload), Reliability::Reliable).unwrap();
        }
        t.elapsed()
    };
    let c_burst = || {
        let t = Instant::now();
        for _ in 0..64 {
            // SAFETY: a live node, an ID and 64 bytes.
            let seq = unsafe { p2p_send(c, &to_c, 1, payload.as_ptr(), 64, P2P_SEND_RELIABLE) };
            assert!(seq >= 0, "p2p_send: {seq}");
        }
        t.elapsed()
    };
    while n < count {
        // Alternate which goes first, so neither always finds the caches
        // warmed (or cooled) by the other.
        if (n / 64).is_multiple_of(2) {
            rust += rust_burst(&mut a);
            cc += c_burst();
        } else {
            cc += c_burst();
            rust += rust_burst(&mut a);
        }
        n += 64;
        for _ in 0..4 {
            server.service(Duration::ZERO).unwrap();
            a.service(Duration::from_millis(1)).unwrap();
            // SAFETY: a live node; the events it queues are dropped with it.
            unsafe { p2p_node_service(c, 1) };
        }
        let mut sink = Vec::new();
        a.drain_events(&mut sink);
    }
    b_handle.close().unwrap();
    // SAFETY: freed once.
    unsafe { p2p_node_free(c) };
    (per_call(rust, n), per_call(cc, n))
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (calls, messages, send_count) =
        if quick { (20_000, 20_000, 5_000) } else { (200_000, 200_000, 50_000) };
    println!("p2pcore C ABI overhead ({} run)", if quick { "quick" } else { "full" });
    println!();
    println!("| figure | Rust API ns | C API ns | C / Rust |");
    println!("|---|---|---|---|");
    let (rust, c) = idle_service(calls);
    println!("| idle service call ({calls} calls) | {rust:.0} | {c:.0} | {:.2} |", c / rust);
    let rust = receive(false, messages);
    let c = receive(true, messages);
    println!("| per message taken ({messages} messages) | {rust:.0} | {c:.0} | {:.2} |", c / rust);
    let (rust_send, c_send) = sends(send_count);
    println!(
        "| send of 64 B ({send_count} sends) | {rust_send:.0} | {c_send:.0} | {:.2} |",
        c_send / rust_send
    );
}
