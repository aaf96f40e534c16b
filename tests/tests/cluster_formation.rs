//! Clusters of 1, 2, 3, 5 and 7 servers form a full mesh, converge on one
//! server list and agree on the Master with the basis the rules give.

mod common;

use p2pcore::{Event, MasterBasis};
use p2pcore_tests::sim::{NodeSpec, Sim};
use std::time::Duration;

/// `n` servers started 200 ms apart, all introduced by the first.
fn staggered(seed: u64, n: usize) -> Sim {
    let mut sim = common::sim(seed);
    let first = sim.add_node(NodeSpec::server("s1"));
    for i in 2..=n {
        let spec = NodeSpec {
            start_after: Some(Duration::from_millis(200 * (i as u64 - 1))),
            ..NodeSpec::server(&format!("s{i}")).via(&[first])
        };
        sim.add_node(spec);
    }
    sim
}

fn basis_for(n: usize) -> MasterBasis {
    match n {
        1 => MasterBasis::Solo,
        2 => MasterBasis::Eldest,
        _ => MasterBasis::Raft,
    }
}

#[test]
fn sizes_1_2_3_5_7_converge_on_the_eldest() {
    for n in [1usize, 2, 3, 5, 7] {
        let mut sim = staggered(n as u64, n);
        sim.run_for(Duration::from_secs(5));
        assert!(sim.server_lists_converged(), "{n} servers: lists converge");
        let master = sim.agreed_master().unwrap_or_else(|| panic!("{n} servers agree on a master"));
        // s1 started first: it is the eldest, and growing never moved the mandate.
        assert_eq!(sim.name_of(&master), "s1", "{n} servers");
        for h in 0..n {
            let m = sim.node(h).unwrap().master();
            assert_eq!(m.basis, Some(basis_for(n)), "{n} servers, s{}", h + 1);
            assert_eq!(sim.node(h).unwrap().links().count(), n - 1, "full mesh");
            assert_eq!(sim.node(h).unwrap().servers().len(), n);
        }
        let metrics = sim.cluster_metrics();
        let formed = metrics.cluster_formed_ms.expect("formed");
        // The last server starts at 200 * (n - 1) ms and needs a few round trips.
        assert!(formed < 200.0 * (n as f64 - 1.0) + 1500.0, "{n} servers formed at {formed} ms");
        // Nobody but s1 was ever the agreed Master: no needless flips. Each
        // newcomer briefly sees itself as solo Master before it connects.
        for obs in &metrics.masters {
            if obs.t_ms > 200.0 * (n as f64 - 1.0) + 1000.0 {
                assert_eq!(obs.master.as_deref(), Some("s1"), "{n} servers: late flip {obs:?}");
            }
        }
    }
}

#[test]
fn two_servers_started_at_the_same_moment_introducing_each_other() {
    for seed in 1..=10 {
        let mut sim = common::sim(seed);
        let a = sim.add_node(NodeSpec::server("a"));
        let b = sim.add_node(NodeSpec::server("b").via(&[a]));
        // `a` learns `b` as its introducer too (both dial at the same instant).
        let b_addr = sim.host(b).addr;
        sim.set_configure(move |cfg, host| {
            if host.name == "a" {
                cfg.bootstrap = vec![b_addr];
            }
        });
        sim.kill(a);
        sim.restart(a);
        sim.run_for(Duration::from_secs(2));
        let master = sim.agreed_master().expect("agree");
        assert!(sim.server_lists_converged());
        assert_eq!(sim.node(a).unwrap().links().count(), 1, "one connection, not two");
        assert_eq!(sim.node(a).unwrap().master().basis, Some(MasterBasis::Eldest));
        // Both hold the same verdict even though their uptimes are nearly equal.
        assert_eq!(sim.node(b).unwrap().master().master, Some(master));
    }
}

#[test]
fn an_unreachable_introducer_is_retried_with_backoff() {
    let mut sim = common::sim(5);
    let s1 = sim.add_node(NodeSpec { start_after: Some(Duration::from_secs(8)), ..NodeSpec::server("s1") });
    let s2 = sim.add_node(NodeSpec::server("s2").via(&[s1]));
    sim.run_for(Duration::from_secs(7));
    // Alone meanwhile: it is its own Master.
    assert_eq!(sim.node(s2).unwrap().master().basis, Some(MasterBasis::Solo));
    let failures: Vec<Duration> = common::events(&mut sim, s2)
        .into_iter()
        .filter_map(|e| match e {
            Event::BootstrapFailed { retry_in, error, .. } => {
                assert_eq!(error, p2pcore::ConnectError::TimedOut);
                Some(retry_in)
            }
            _ => None,
        })
        .collect();
    assert!(failures.len() >= 2, "{failures:?}");
    assert!(failures.windows(2).all(|w| w[1] >= w[0]), "backoff grows: {failures:?}");
    sim.run_for(Duration::from_secs(8));
    assert!(common::linked(&sim, s2, s1), "joins once the introducer is up");
    assert!(sim.agreed_master().is_some());
}

#[test]
fn a_restarted_server_rejoins_with_the_same_id() {
    let mut sim = staggered(7, 3);
    sim.run_for(Duration::from_secs(3));
    let s3 = sim.find("s3").unwrap();
    let id = sim.host(s3).id();
    sim.kill(s3);
    sim.run_for(Duration::from_millis(500));
    sim.restart(s3);
    sim.run_for(Duration::from_secs(4));
    assert_eq!(sim.node(s3).unwrap().id(), id);
    assert!(sim.server_lists_converged());
    let m = sim.agreed_master().expect("agree");
    assert_eq!(sim.name_of(&m), "s1");
    assert_eq!(sim.node(s3).unwrap().master().basis, Some(MasterBasis::Raft));
}

#[test]
fn a_new_introducer_alone_accepts_the_first_joiner() {
    let mut sim = common::sim(9);
    let s1 = sim.add_node(NodeSpec::server("s1"));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.node(s1).unwrap().master().basis, Some(MasterBasis::Solo));
    let s2 = sim.add_node(NodeSpec::server("s2").via(&[s1]));
    sim.run_for(Duration::from_secs(1));
    assert!(common::linked(&sim, s1, s2));
    assert_eq!(sim.node(s2).unwrap().master().master, Some(sim.host(s1).id()));
    assert_eq!(sim.node(s2).unwrap().master().basis, Some(MasterBasis::Eldest));
}

#[test]
fn optional_least_loaded_leadership() {
    for prefer in [false, true] {
        let mut sim = common::sim(11);
        sim.set_configure(move |cfg, _| cfg.cluster.prefer_least_loaded = prefer);
        let first = sim.add_node(NodeSpec::server("s1"));
        for i in 2..=3 {
            sim.add_node(NodeSpec {
                start_after: Some(Duration::from_millis(200 * (i - 1))),
                ..NodeSpec::server(&format!("s{i}")).via(&[first])
            });
        }
        sim.run_for(Duration::from_secs(3));
        assert_eq!(sim.agreed_master(), Some(sim.host(first).id()));
        // The Master (s1) becomes very busy; the others stay idle.
        sim.with_node(first, |n, now| n.set_load(now, 500));
        sim.run_for(Duration::from_secs(5));
        let m = sim.agreed_master().expect("agreed");
        if prefer {
            assert_ne!(m, sim.host(first).id(), "leadership moved to a less loaded server");
            assert_eq!(sim.node(first).unwrap().master().basis, Some(MasterBasis::Raft));
        } else {
            assert_eq!(m, sim.host(first).id(), "off by default: the Master stays");
        }
    }
}
