//! A junk-datagram flood at a server over real sockets: 100,000 datagrams
//! of random bytes (random lengths, half of them with the QUIC bit set)
//! leave the server serving its peers and its memory flat, and are counted
//! as drops. Alone in its test binary so the process's memory is the
//! server's.

mod common;

use common::*;
use p2pcore::{Event, Reliability};
use std::net::UdpSocket;

/// A tiny deterministic generator: the bytes only need to be junk.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 16
    }
}

/// Resident memory of this process, in bytes (Linux; elsewhere `None`).
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn a_junk_flood_leaves_a_server_serving_with_flat_memory() {
    let dir = tempfile::tempdir().unwrap();
    let s = Runner::start(server(dir.path(), "s1", "127.0.0.1:0", &[]));
    let a = Runner::start(peer("a", 1, &[s.addr]));
    let b = Runner::start(peer("b", 2, &[s.addr]));
    let (a_id, b_id) = (a.id, b.id);
    wait_for("the peers to see each other", || {
        a.with(move |h| h.node().peers().iter().any(|p| p.id == b_id))
    });

    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = Lcg(7);
    let mut buf = [0u8; 1400];
    let mut flood = |count: usize| {
        for _ in 0..count {
            let len = 1 + (rng.next() % 1400) as usize;
            for byte in &mut buf[..len] {
                *byte = rng.next() as u8;
            }
            // A full socket buffer drops some: the flood needs no delivery.
            let _ = junk.send_to(&buf[..len], s.addr);
        }
    };
    // Warm up (allocator pools, the arena, QUIC's stateless-reply paths),
    // then measure across the real flood.
    flood(10_000);
    let before_stats = s.with(|h| (*h.node().stats(), h.host_stats()));
    let before = rss();
    flood(100_000);
    // Everything sent has been read once the server's counters stop moving
    // and a message still gets through.
    let mut seq = 0u32;
    let mut got = 0;
    wait_for("the server to serve after the flood", || {
        seq += 1;
        let _ = a.with(move |h| h.send(b_id, 0, seq.to_be_bytes().to_vec(), Reliability::Reliable));
        got = b
            .events()
            .iter()
            .filter(|e| matches!(e, Event::MessageReceived { from, .. } if *from == a_id))
            .count();
        got > 0
    });
    let after = rss();
    let (stats, host) = s.with(|h| (*h.node().stats(), h.host_stats()));
    let received = host.datagrams_received - before_stats.1.datagrams_received;
    let dropped = stats.dropped.raw_total() + stats.dropped.quic_ignored
        - before_stats.0.dropped.raw_total()
        - before_stats.0.dropped.quic_ignored;
    eprintln!("flood: {received} datagrams read, {dropped} dropped, resident memory {before:?} -> {after:?}");
    assert!(received > 50_000, "the server read the flood ({received} datagrams)");
    assert!(dropped * 10 >= received * 9, "junk is counted as dropped: {dropped} of {received}");
    if let (Some(before), Some(after)) = (before, after) {
        let grown = after.saturating_sub(before);
        // 100,000 datagrams average 700 bytes: 70 MB if any were kept.
        assert!(grown < 8 << 20, "memory grew by {grown} bytes across the flood");
    }
    let server = s.id;
    assert!(a.with(move |h| h.node().is_connected(&server)), "the peer kept its server");
}
