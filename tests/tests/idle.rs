//! Quiet when idle: nodes wake only for real deadlines. A server alone
//! never wakes; in a settled cluster only Raft's own clock (the leader's
//! heartbeats, the followers' election timeouts) and QUIC's keep-alives on
//! idle links wake anyone; an idle peer wakes for its keep-alives.

mod common;

use p2pcore_tests::sim::{HostId, NodeSpec, Sim};
use std::time::Duration;

/// Timer wake-ups of each host during one idle minute, after `settle`.
fn idle_minute(sim: &mut Sim, hosts: &[HostId], settle: Duration) -> Vec<u64> {
    sim.run_for(settle);
    let before: Vec<u64> = hosts.iter().map(|&h| sim.host(h).bytes.timer_wakeups).collect();
    sim.run_for(Duration::from_secs(60));
    hosts.iter().zip(before).map(|(&h, b)| sim.host(h).bytes.timer_wakeups - b).collect()
}

#[test]
fn a_lone_server_never_wakes() {
    let mut sim = common::sim(51);
    let s = sim.add_node(NodeSpec::server("s1"));
    let sent = sim.host(s).bytes.datagrams_sent;
    assert_eq!(idle_minute(&mut sim, &[s], Duration::from_secs(2)), vec![0]);
    assert_eq!(sim.host(s).bytes.datagrams_sent, sent, "and sends nothing");
    assert!(sim.node(s).unwrap().master().master.is_some(), "it is its own Master");
}

#[test]
fn an_idle_peer_wakes_only_for_keep_alives() {
    let mut sim = common::sim(52);
    let s = sim.add_node(NodeSpec::server("s1"));
    let a = sim.add_node(NodeSpec::peer("alice", None).via(&[s]));
    let woke = idle_minute(&mut sim, &[s, a], Duration::from_secs(3));
    // One link: a keep-alive per interval (1 s by default) and the timers
    // QUIC arms around it (the acknowledgement delay, loss detection).
    let per_keep_alive = 2;
    let keep_alives = sim.node(a).unwrap().links().count() as u64 * 60;
    for (who, n) in ["server", "peer"].iter().zip(&woke) {
        assert!(*n <= keep_alives * per_keep_alive, "{who} woke {n} times in an idle minute: {woke:?}");
    }
}

#[test]
fn a_settled_cluster_wakes_for_raft_only() {
    let mut sim = common::sim(53);
    let s1 = sim.add_node(NodeSpec::server("s1"));
    let s2 = sim.add_node(NodeSpec::server("s2").via(&[s1]));
    let s3 = sim.add_node(NodeSpec::server("s3").via(&[s1]));
    let woke = idle_minute(&mut sim, &[s1, s2, s3], Duration::from_secs(10));
    let master = sim.agreed_master().expect("a Master");
    let tick = Duration::from_millis(50);
    let ticks_per_minute = (Duration::from_secs(60).as_millis() / tick.as_millis()) as u64;
    for (&h, n) in [s1, s2, s3].iter().zip(&woke) {
        if sim.host(h).id() == master {
            // The leader heartbeats: it wakes every tick, as before, plus
            // QUIC's acknowledgement timers for its followers' answers.
            assert!(*n <= ticks_per_minute * 2, "leader woke {n} times: {woke:?}");
        } else {
            // Followers hear the heartbeats and never reach their election
            // timeout: only QUIC's timers around that traffic wake them
            // (every tick, before this changed).
            assert!(*n < ticks_per_minute / 10, "follower woke {n} times (was {ticks_per_minute}): {woke:?}");
        }
    }
}
