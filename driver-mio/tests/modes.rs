//! The three ways to drive a host, over real loopback sockets:
//! `service(0)` never sleeps; the thread mode's handle sends and queries
//! across threads, `close` ends it within its bound after telling the
//! other side, and dropping the last handle closes too; `run` returns when
//! a `Closer` from another thread closes it; a turn reads a bounded batch
//! and the next one goes on; bind errors say what to do.

mod common;

use common::*;
use p2pcore::{DisconnectReason, Event, Reliability};
use p2pcore_mio::{Handle, HandleError, Host, HostConfig};
use std::time::{Duration, Instant};

#[test]
fn service_zero_never_sleeps() {
    let dir = tempfile::tempdir().unwrap();
    let s = Runner::start(server(dir.path(), "s1", "127.0.0.1:0", &[]));
    let mut host = peer("game", 1, &[s.addr]);
    let mut events = Vec::new();
    // A game loop's frames: the node has deadlines (dials, keep-alives)
    // all along, and none of them makes the call wait.
    let start = Instant::now();
    while !host.node().network_up() {
        assert!(start.elapsed() < LIMIT, "the peer never came online");
        host.service(Duration::ZERO).unwrap();
        host.drain_events(&mut events);
        std::thread::yield_now();
    }
    for _ in 0..10_000 {
        host.service(Duration::ZERO).unwrap();
        host.drain_events(&mut events);
    }
    assert_eq!(host.host_stats().sleeps, 0, "service(0) slept");
    assert!(events.iter().any(|e| matches!(e, Event::NetworkUp)));
    // A bounded wait does sleep, and returns.
    host.service(Duration::from_millis(1)).unwrap();
    assert!(host.host_stats().sleeps > 0);
}

fn spawned(name: &str, n: u8, servers: &[std::net::SocketAddr]) -> (Handle, p2pcore_mio::EventReceiver) {
    peer(name, n, servers).spawn().expect("spawn")
}

#[test]
fn the_thread_mode_sends_queries_and_closes_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let s = Runner::start(server(dir.path(), "s1", "127.0.0.1:0", &[]));
    let (a, _a_events) = spawned("a", 1, &[s.addr]);
    let (b, b_events) = spawned("b", 2, &[s.addr]);
    let b_id = b.id();
    // The handle is Send + Sync + Clone: send from another thread.
    let a2 = a.clone();
    wait_for("a to see b", || a.peers().unwrap().iter().any(|p| p.id == b_id));
    std::thread::spawn(move || {
        for i in 0..1000u32 {
            a2.send(b_id, 3, i.to_be_bytes().to_vec(), Reliability::Reliable).expect("send");
        }
    })
    .join()
    .unwrap();
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < 1000 {
        assert!(start.elapsed() < LIMIT, "only {} messages arrived", got.len());
        if let Ok(Event::MessageReceived { bytes, .. }) = b_events.recv_timeout(Duration::from_millis(100)) {
            got.push(u32::from_be_bytes(bytes[..4].try_into().unwrap()));
        }
    }
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    assert!(a.links().unwrap().iter().any(|l| l.id == b_id));
    assert!(a.stats().unwrap().datagrams_out > 0);

    // close: bounded, the other side is told (it sees a Disconnected that
    // is the remote's close, not a timeout), later commands fail.
    let started = Instant::now();
    a.close().unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "close took {:?}", started.elapsed());
    assert!(matches!(a.peers(), Err(HandleError::Stopped)));
    let a_id = a.id();
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < LIMIT, "b was never told");
        match b_events.recv_timeout(Duration::from_millis(100)) {
            Ok(Event::Disconnected { id, reason, .. }) if id == a_id => {
                assert!(!matches!(reason, DisconnectReason::TimedOut), "told, not timed out: {reason:?}");
                break;
            }
            _ => {}
        }
    }

    // Dropping the last handle closes too: the event channel ends.
    drop(b);
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < Duration::from_secs(5), "the thread did not end");
        if let Err(p2pcore_mio::RecvTimeoutError::Disconnected) =
            b_events.recv_timeout(Duration::from_millis(100))
        {
            break;
        }
    }
}

#[test]
fn run_returns_when_closed_from_another_thread() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = server(dir.path(), "daemon", "127.0.0.1:0", &[]);
    let closer = host.closer();
    let (running_tx, running) = std::sync::mpsc::channel();
    let runner = std::thread::spawn(move || {
        let mut seen = 0;
        host.run(|_, _| {
            seen += 1;
            let _ = running_tx.send(());
        })?;
        Ok::<_, p2pcore_mio::HostError>((seen, host.is_closed()))
    });
    // It runs (a lone server reports itself Master as it starts) and keeps
    // running until told.
    running.recv_timeout(LIMIT).expect("run() handed over an event");
    assert!(!runner.is_finished());
    let asked = Instant::now();
    closer.close();
    let (events, closed) = runner.join().unwrap().unwrap();
    assert!(closed);
    assert!(asked.elapsed() < Duration::from_secs(3), "close took {:?}", asked.elapsed());
    assert!(events > 0);
}

#[test]
fn bind_errors_say_what_to_do() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = p2pcore::Config::new(
        p2pcore::Identity::from_seed(p2pcore::Role::Peer, [1; 32]),
        "p",
        p2pcore_mio::os_seed().unwrap(),
    );
    let err = Host::bind(HostConfig::new(addr), config).unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&addr.to_string()) && text.contains("another process uses this port"), "{text}");
}

#[test]
fn a_turn_reads_a_bounded_batch_and_the_next_turn_goes_on() {
    let mut host_config = HostConfig::new("127.0.0.1:0".parse().unwrap());
    host_config.max_turn_datagrams = 1;
    let mut host = peer_with("bounded", 1, &[], host_config);
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // 200 datagrams wait in the socket before the first turn (loopback
    // queues them synchronously).
    for i in 0..200u32 {
        junk.send_to(&i.to_be_bytes(), host.local_addr()).unwrap();
    }
    host.service(Duration::ZERO).unwrap();
    let first = host.host_stats();
    assert_eq!(first.bounded_turns, 1, "the turn stopped at its bound");
    assert!(first.datagrams_received >= 1 && first.datagrams_received < 200, "{first:?}");
    let start = Instant::now();
    while host.host_stats().datagrams_received < 200 {
        assert!(start.elapsed() < LIMIT, "the rest was never read");
        host.service(Duration::ZERO).unwrap();
    }
    // Junk: counted as dropped, nothing else.
    assert_eq!(host.node().stats().datagrams_in, 200);
}
