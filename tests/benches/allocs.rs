//! Heap allocations on the hot paths, counted by a counting global
//! allocator: per relayed frame at a server, per datagram received at the
//! peer at the end of a relayed path, per datagram received on a direct
//! path, and per frame in the server's relay loop alone (the `relay` bench's
//! loop). Run with `cargo bench -p p2pcore-tests --bench allocs`; it prints
//! one line per figure.
//!
//! A node's count covers everything it does for the input: decoding,
//! QUIC's processing and acknowledgements, events and transmits.

#![allow(unsafe_code)] // the counting allocator
#![allow(clippy::print_stdout)] // a bench binary reports on stdout

use bytes::BytesMut;
use p2pcore::{ConnectPolicy, Reliability};
use p2pcore_tests::sim::{HostId, NodeSpec, SendSpec, Sim, SimConfig};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SLOTS: usize = 64;
static COUNT: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

thread_local! {
    /// The host whose code is running, if any.
    static OWNER: Cell<Option<HostId>> = const { Cell::new(None) };
}

struct Counting;

// SAFETY: delegates to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(h) = OWNER.try_with(Cell::get).ok().flatten() {
            COUNT[h.min(SLOTS - 1)].fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same layout contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if let Some(h) = OWNER.try_with(Cell::get).ok().flatten() {
            COUNT[h.min(SLOTS - 1)].fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as for `System.realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn scope(h: Option<HostId>) {
    let _ = OWNER.try_with(|o| o.set(h));
}

fn allocs(h: HostId) -> u64 {
    COUNT[h].load(Ordering::Relaxed)
}

/// A server and two peers; `punching` off keeps their path relayed.
fn network(punching: bool) -> (Sim, HostId, HostId, HostId) {
    let mut sim = Sim::new(SimConfig { seed: 7, ..SimConfig::default() });
    sim.set_configure(move |c, _| {
        c.peer.hole_punching = punching;
        c.peer.connect = ConnectPolicy::OnDemand;
    });
    sim.set_memory_scope(scope);
    let s = sim.add_node(NodeSpec::server("s1"));
    let a = sim.add_node(NodeSpec::peer("alice", None).via(&[s]));
    let b = sim.add_node(NodeSpec::peer("bob", None).via(&[s]));
    sim.run_for(Duration::from_secs(2));
    // Connect and settle the path before counting.
    sim.send_messages(&SendSpec {
        from: a,
        to: b,
        count: 1,
        size: 100,
        reliability: Reliability::Reliable,
        channel: 0,
    });
    sim.run_for(Duration::from_secs(3));
    (sim, s, a, b)
}

/// Sends 2,000 reliable 1,000-byte messages from `a` to `b` and returns
/// (allocations, datagrams received) per host over the transfer.
fn transfer(sim: &mut Sim, hosts: &[HostId], a: HostId, b: HostId) -> Vec<(u64, u64)> {
    let before: Vec<(u64, u64)> =
        hosts.iter().map(|&h| (allocs(h), sim.host(h).bytes.datagrams_received)).collect();
    sim.send_messages(&SendSpec {
        from: a,
        to: b,
        count: 2000,
        size: 1000,
        reliability: Reliability::Reliable,
        channel: 0,
    });
    sim.run_for(Duration::from_secs(10));
    assert_eq!(sim.message_metrics().lost, 0);
    hosts
        .iter()
        .zip(before)
        .map(|(&h, (a0, d0))| (allocs(h) - a0, sim.host(h).bytes.datagrams_received - d0))
        .collect()
}

fn main() {
    // Criterion passes flags such as `--bench`; this binary takes none.
    let (mut sim, s, a, b) = network(false);
    let relayed0 = sim.node(s).unwrap().stats().relayed_datagrams;
    let r = transfer(&mut sim, &[s, b], a, b);
    let relayed = sim.node(s).unwrap().stats().relayed_datagrams - relayed0;
    println!(
        "relayed path: server {:.2} allocations per relayed frame ({} frames); receiving peer {:.2} per datagram ({} datagrams)",
        r[0].0 as f64 / relayed as f64,
        relayed,
        r[1].0 as f64 / r[1].1 as f64,
        r[1].1
    );

    let (mut sim, _, a, b) = network(true);
    let r = transfer(&mut sim, &[b], a, b);
    println!(
        "direct path: receiving peer {:.2} allocations per datagram ({} datagrams)",
        r[0].0 as f64 / r[0].1 as f64,
        r[0].1
    );

    // The relay loop alone: one captured frame fed again and again (the
    // `relay` bench's loop); the buffer is the driver's, made outside the count.
    let (mut sim, s, a, b) = network(false);
    sim.tap(a);
    let b_id = sim.host(b).id();
    sim.with_node(a, |n, now| {
        n.send(now, b_id, 0, bytes::Bytes::from(vec![7u8; 1100]), Reliability::Reliable)
    })
    .unwrap()
    .unwrap();
    sim.run_for(Duration::from_secs(1));
    let server = sim.host(s).addr;
    let frame = sim
        .take_tapped()
        .into_iter()
        .filter(|(_, dest, d)| {
            *dest == server
                && p2pcore::wire::decode(d).is_ok_and(|f| f.kind == p2pcore::wire::FrameType::Relay)
        })
        .max_by_key(|(_, _, d)| d.len())
        .map(|(_, _, d)| d.to_vec())
        .expect("a relay frame");
    let from = sim.host(a).addr;
    let now = sim.now();
    let node = sim.node_mut(s).unwrap();
    let mut buf = Vec::with_capacity(2048);
    let rounds = 10_000u64;
    let before = node.stats().relayed_datagrams;
    let mut counted = 0;
    for _ in 0..rounds {
        let data = BytesMut::from(&frame[..]);
        scope(Some(s));
        let c0 = allocs(s);
        node.handle_datagram(now, from, None, None, data);
        while node.poll_transmit(1, &mut buf).is_some() {}
        while node.poll_event().is_some() {}
        counted += allocs(s) - c0;
        scope(None);
    }
    assert_eq!(node.stats().relayed_datagrams - before, rounds, "every frame was relayed");
    println!("relay loop: {:.2} allocations per {}-byte frame", counted as f64 / rounds as f64, frame.len());
}
