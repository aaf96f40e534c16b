//! Memory under attack, before and after admission. A counting allocator
//! charges every allocation to the simulated node whose code made it (the
//! simulator says which node runs), so each test can state how much a
//! server holds while strangers and hostile members try to make it hold
//! more, and check that honest nodes are still served.
//!
//! * A stranger who completes TLS cannot open a single channel stream, and
//!   its connection has a 64 KiB window.
//! * An admitted but hostile peer that opens every stream it may and claims
//!   huge lengths on each makes the server hold at most the receive budget,
//!   one message and QUIC's window — not what it claims (and it gets far
//!   fewer than 264 streams: the limit grows only as streams are accepted).
//! * Floods of handshakes, from real addresses and spoofed ones, never hold
//!   more than `limits.max_handshakes` connections; spoofed ones cost a
//!   stateless Retry each.

mod common;

use bytes::BytesMut;
use p2pcore::{Config, Identity, Node, NodeId, Reliability, Role};
use p2pcore_tests::memory::{Counting, held, reset_peak, scope};
use p2pcore_tests::sim::{CredentialFault, HostId, NetworkAdmission, NodeSpec, SendSpec, Sim};
use quinn_proto::{Dir, StreamId};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

#[global_allocator]
static ALLOC: Counting = Counting;

const MIB: isize = 1 << 20;

/// The accounts are per host index: one simulation at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn sim(seed: u64) -> Sim {
    let mut sim = common::sim(seed);
    sim.set_memory_scope(scope);
    sim.set_admission(NetworkAdmission::Secret("s3cret".into()));
    sim
}

fn honest_traffic(sim: &mut Sim, a: HostId, b: HostId, count: u32) {
    for (from, to) in [(a, b), (b, a)] {
        sim.send_messages(&SendSpec {
            from,
            to,
            count,
            size: 1000,
            reliability: Reliability::Reliable,
            channel: 3,
        });
    }
}

// ----- streams -----------------------------------------------------------------

#[test]
fn claimed_lengths_and_open_streams_cost_what_arrives_not_what_is_claimed() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const MAX_MESSAGE: usize = 4 << 20;
    const BUDGET: usize = 1 << 20;
    let mut sim = sim(41);
    sim.set_configure(|c, _| {
        c.max_message_size = MAX_MESSAGE;
        c.limits.receive_buffer = BUDGET;
        c.peer.hole_punching = false;
    });
    let s = sim.add_node(NodeSpec::server("s1"));
    let p1 = sim.add_node(NodeSpec::peer("p1", None).via(&[s]));
    let p2 = sim.add_node(NodeSpec::peer("p2", None).via(&[s]));
    let hostile = sim.add_node(NodeSpec::peer("hostile", None).via(&[s]));
    let stranger = sim.add_node(NodeSpec {
        credential: CredentialFault::WrongSecret,
        ..NodeSpec::peer("stranger", None).via(&[s])
    });
    let sid = sim.host(s).id();

    // Before admission: the stranger tries to open channel streams at every
    // moment of its handshake; QUIC gives it none.
    let (mut polls, mut opened_early) = (0, 0);
    for _ in 0..300 {
        sim.run_for(Duration::from_millis(5));
        sim.with_node(stranger, |n, now| {
            n.hostile_raw_connections(now, |_, _, quic| {
                polls += 1;
                if quic.streams().open(Dir::Uni).is_some() {
                    opened_early += 1;
                }
            })
        });
    }
    assert!(polls > 3, "the stranger's connection was tried {polls} times");
    assert_eq!(opened_early, 0, "no channel stream before admission");
    assert!(!sim.node(stranger).unwrap().network_up(), "the stranger was refused");
    assert!(common::linked(&sim, hostile, s), "the hostile member is admitted");

    // After admission: open every stream allowed, claim a message just under
    // the limit on each, and push junk as fast as flow control lets us —
    // never quite completing a message, so that nothing is ever delivered
    // and everything received would have to be held.
    let (base, _) = held(s);
    reset_peak(s);
    let hid = sim.host(hostile).id();
    let claim = (MAX_MESSAGE as u32 - 1).to_be_bytes();
    let junk = vec![0xa5u8; 16 << 10];
    let mut streams: Vec<(StreamId, usize)> = Vec::new();
    let mut max_buffered = 0;
    honest_traffic(&mut sim, p1, p2, 200);
    for _ in 0..100 {
        sim.with_node(hostile, |n, now| {
            n.hostile_raw_connections(now, |_, remote, quic| {
                if remote != Some(sid) {
                    return;
                }
                while let Some(id) = quic.streams().open(Dir::Uni) {
                    let mut st = quic.send_stream(id);
                    // A well-formed stream header: channel 7, a session
                    // ID, the first message's sequence number.
                    let mut header = [0u8; 17];
                    header[0] = 7;
                    let _ = st.write(&header);
                    let _ = st.write(&claim);
                    streams.push((id, 0));
                }
                for (id, sent) in &mut streams {
                    let mut st = quic.send_stream(*id);
                    while *sent + junk.len() < MAX_MESSAGE - 1 {
                        match st.write(&junk) {
                            Ok(n) if n > 0 => *sent += n,
                            _ => break,
                        }
                    }
                }
            })
        });
        sim.run_for(Duration::from_millis(50));
        max_buffered = max_buffered.max(sim.node(s).unwrap().receive_buffered(&hid));
    }
    let (_, peak) = held(s);
    let grew = peak - base;
    eprintln!(
        "hostile member: {} streams, server peak +{:.1} MiB, receive buffer peak {:.2} MiB",
        streams.len(),
        grew as f64 / MIB as f64,
        max_buffered as f64 / MIB as f64
    );
    // The stream limit starts at 8 and grows only as the remote's streams
    // are accepted — which needs their bytes, which flow control holds back
    // once the junk has filled the window: far fewer than the 264 allowed.
    assert!(
        (8..=264).contains(&streams.len()),
        "the hostile member opened {} streams on one connection",
        streams.len()
    );
    assert!(common::linked(&sim, hostile, s), "it broke no rule, so it stays connected");
    assert!(max_buffered <= BUDGET + MAX_MESSAGE, "held {max_buffered} bytes of partial messages");
    // Budget (1 MiB) + one message finishing beyond it (4 MiB) + QUIC's
    // connection window (8 MiB), with room for QUIC's own bookkeeping.
    assert!(grew < 20 * MIB, "the server grew by {grew} bytes");
    // Honest peers relayed through the same server were served throughout.
    let m = sim.message_metrics();
    assert_eq!((m.delivered, m.lost, m.duplicated), (400, 0, 0), "{m:?}");
}

// ----- handshakes ----------------------------------------------------------------

/// Runs `sim` for `d`, returning the most incoming handshakes `s` held at once.
fn run_sampling(sim: &mut Sim, s: HostId, d: Duration) -> usize {
    let mut most = 0;
    let end = sim.elapsed() + d;
    while sim.elapsed() < end {
        sim.run_for(Duration::from_millis(5));
        most = most.max(sim.node(s).unwrap().incoming_handshakes());
    }
    most
}

#[test]
fn handshake_floods_hold_bounded_state_and_honest_peers_still_join() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut sim = sim(42);
    let s = sim.add_node(NodeSpec::server("s1"));
    let (base, _) = held(s);
    reset_peak(s);
    // 300 strangers on their own addresses and 40 behind one home router,
    // all with the wrong secret, all at once and redialing with backoff.
    let lan = sim.add_lan("home", Some(p2pcore_tests::nat::NatConfig::default()));
    let wrong = |name: String, lan| NodeSpec {
        credential: CredentialFault::WrongSecret,
        ..NodeSpec::peer(&name, lan).via(&[s])
    };
    for i in 0..300 {
        sim.add_node(wrong(format!("x{i}"), None));
    }
    for i in 0..40 {
        sim.add_node(wrong(format!("n{i}"), Some(lan)));
    }
    let late = |name: &str| NodeSpec {
        start_after: Some(Duration::from_secs(1)),
        ..NodeSpec::peer(name, None).via(&[s])
    };
    let p1 = sim.add_node(late("p1"));
    let p2 = sim.add_node(late("p2"));
    let most = run_sampling(&mut sim, s, Duration::from_secs(4));
    let (_, peak) = held(s);
    let st = *sim.node(s).unwrap().stats();
    eprintln!(
        "real flood: most handshakes {most}, shed {}, refused per IP {}, retries {}, server peak +{:.1} MiB",
        st.handshakes_shed,
        st.handshakes_refused,
        st.retries_sent,
        (peak - base) as f64 / MIB as f64
    );
    let limits = p2pcore::LimitsConfig::default();
    assert!(most <= limits.max_handshakes, "{most} handshakes at once");
    assert!(st.handshakes_shed > 0 && st.handshakes_refused > 0 && st.retries_sent > 0, "{st:?}");
    assert!(peak - base < 96 * MIB, "the server grew by {} bytes", peak - base);
    // Honest peers get in during the flood and talk.
    let joined = common::run_until(&mut sim, Duration::from_secs(20), |sim| {
        sim.node(p1).unwrap().network_up() && sim.node(p2).unwrap().network_up()
    });
    assert!(joined.is_some(), "honest peers joined during the flood");
    honest_traffic(&mut sim, p1, p2, 20);
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.message_metrics().delivered, 40);
}

#[test]
fn spoofed_initials_cost_a_stateless_retry_each() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut sim = sim(43);
    let s = sim.add_node(NodeSpec::server("s1"));
    sim.run_for(Duration::from_millis(100));
    let server_addr = sim.host(s).addr;
    // Real QUIC Initials (each with its own connection ID), made by a node
    // outside the network, then sent from addresses that can never answer.
    let mut maker =
        Node::new(Config::new(Identity::from_seed(Role::Peer, [99; 32]), "maker", [98; 32]), sim.now())
            .unwrap();
    let mut initials = Vec::new();
    let mut buf = Vec::new();
    for i in 0..2000u32 {
        let fake: NodeId = Identity::from_seed(
            Role::Server,
            [
                (i % 251) as u8,
                (i / 251) as u8,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
            ],
        )
        .id();
        maker.connect(sim.now(), fake, server_addr).unwrap();
        while let Some(t) = maker.poll_transmit(1, &mut buf) {
            initials.push(buf[..t.size].to_vec());
        }
        while maker.poll_event().is_some() {}
    }
    drop(maker);
    assert!(initials.len() >= 2000);
    let (base, _) = held(s);
    reset_peak(s);
    let late = |name: &str| NodeSpec {
        start_after: Some(Duration::from_millis(50)),
        ..NodeSpec::peer(name, None).via(&[s])
    };
    let p1 = sim.add_node(late("p1"));
    let p2 = sim.add_node(late("p2"));
    let mut most = 0;
    for (i, d) in initials.iter().enumerate() {
        let spoofed = SocketAddr::from(([10, 99, (i >> 8) as u8, i as u8], 4000 + (i % 1000) as u16));
        sim.with_node(s, |n, now| n.handle_datagram(now, spoofed, None, None, BytesMut::from(&d[..])));
        if i % 20 == 19 {
            sim.run_for(Duration::from_millis(1));
            most = most.max(sim.node(s).unwrap().incoming_handshakes());
        }
    }
    most = most.max(run_sampling(&mut sim, s, Duration::from_secs(3)));
    let (_, peak) = held(s);
    let st = *sim.node(s).unwrap().stats();
    eprintln!(
        "spoofed flood: most handshakes {most}, retries {}, server peak +{:.1} MiB",
        st.retries_sent,
        (peak - base) as f64 / MIB as f64
    );
    let limits = p2pcore::LimitsConfig::default();
    assert!(most <= limits.retry_above + 2, "{most} handshakes held for spoofed sources");
    assert!(st.retries_sent as usize >= initials.len() - limits.retry_above - 2, "{st:?}");
    assert!(peak - base < 16 * MIB, "the server grew by {} bytes", peak - base);
    assert!(sim.node(p1).unwrap().network_up() && sim.node(p2).unwrap().network_up(), "honest peers joined");
    honest_traffic(&mut sim, p1, p2, 20);
    sim.run_for(Duration::from_secs(3));
    assert_eq!(sim.message_metrics().delivered, 40);
}
