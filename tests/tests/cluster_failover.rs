//! Killing the Master, killing a non-Master, partitions and heals, loss.

mod common;

use p2pcore::MasterBasis;
use p2pcore_tests::sim::{LinkParams, NodeSpec, Sim};
use std::time::Duration;

fn cluster(seed: u64, n: usize, link: LinkParams) -> Sim {
    let mut sim = common::sim_with(seed, link);
    let first = sim.add_node(NodeSpec::server("s1"));
    for i in 2..=n {
        let spec = NodeSpec {
            start_after: Some(Duration::from_millis(100 * (i as u64 - 1))),
            ..NodeSpec::server(&format!("s{i}")).via(&[first])
        };
        sim.add_node(spec);
    }
    sim.run_for(Duration::from_secs(4));
    assert!(sim.agreed_master().is_some(), "cluster formed");
    sim
}

fn dump(sim: &Sim) {
    for e in sim.trace() {
        eprintln!("{:>10.3} {:6} {:16} {}", e.t_ms, e.node, e.event, e.detail);
    }
}

#[test]
fn killing_the_master_fails_over_fast() {
    for n in [3usize, 5, 7] {
        for seed in 1..=5 {
            let mut sim = cluster(seed, n, LinkParams::default());
            let old = sim.agreed_master().unwrap();
            let h = sim.hosts().iter().position(|h| h.id() == old).unwrap();
            sim.kill(h);
            sim.run_for(Duration::from_secs(6));
            let m = sim.cluster_metrics();
            if m.failover_ms.len() != 1 {
                dump(&sim);
            }
            assert_eq!(m.failover_ms.len(), 1, "{n} servers, seed {seed}");
            let f = m.failover_ms[0];
            assert!(f <= 1500.0, "{n} servers, seed {seed}: failover took {f} ms");
            let new = sim.agreed_master().unwrap();
            assert_ne!(new, old);
            let basis = if n == 3 { MasterBasis::Eldest } else { MasterBasis::Raft };
            assert_eq!(
                sim.node(sim.hosts().iter().position(|x| x.id() == new).unwrap()).unwrap().master().basis,
                Some(basis)
            );
            assert!(sim.server_lists_converged());
        }
    }
}

#[test]
fn killing_a_non_master_changes_nothing_but_the_list() {
    let mut sim = cluster(3, 5, LinkParams::default());
    let master = sim.agreed_master().unwrap();
    let victim = sim.hosts().iter().position(|h| h.id() != master).unwrap();
    let before = sim.cluster_metrics().masters.len();
    sim.kill(victim);
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.agreed_master(), Some(master));
    assert!(sim.server_lists_converged());
    // Only the dead server's view changed (it was killed); nobody else saw a new Master.
    let after: Vec<_> = sim.cluster_metrics().masters[before..].to_vec();
    assert!(after.iter().all(|o| o.master.as_deref() == Some(sim.name_of(&master).as_str())), "{after:?}");
}

#[test]
fn partition_two_three_then_heal() {
    for seed in 1..=5 {
        let mut sim = cluster(seed, 5, LinkParams::default());
        sim.partition(&[vec!["s1".into(), "s2".into()], vec!["s3".into(), "s4".into(), "s5".into()]]);
        sim.run_for(Duration::from_secs(6));
        // The majority side has a Raft Master; the minority side falls back to `eldest`.
        for h in 2..5 {
            let m = sim.node(h).unwrap().master();
            assert_eq!(m.basis, Some(MasterBasis::Raft), "seed {seed}: majority side s{}", h + 1);
            assert!(["s3", "s4", "s5"].contains(&sim.name_of(&m.master.unwrap()).as_str()));
        }
        for h in 0..2 {
            assert_eq!(
                sim.node(h).unwrap().master().basis,
                Some(MasterBasis::Eldest),
                "seed {seed}: minority"
            );
        }
        sim.heal();
        sim.run_for(Duration::from_secs(8));
        assert!(sim.server_lists_converged(), "seed {seed}: lists converge after heal");
        let m = sim.agreed_master();
        if m.is_none() {
            dump(&sim);
        }
        assert!(m.is_some(), "seed {seed}: one Master after heal");
        for h in 0..5 {
            assert_eq!(sim.node(h).unwrap().master().basis, Some(MasterBasis::Raft));
        }
    }
}

#[test]
fn five_percent_loss() {
    let link = LinkParams { loss: 0.05, jitter: Duration::from_millis(3), ..LinkParams::default() };
    for seed in 1..=5 {
        let mut sim = cluster(seed, 5, link);
        sim.run_for(Duration::from_secs(5));
        assert!(sim.server_lists_converged(), "seed {seed}");
        assert!(sim.agreed_master().is_some(), "seed {seed}");
    }
}
