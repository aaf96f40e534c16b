//! One seed, one run: the trace digest and every byte on the wire repeat.

mod common;

use p2pcore::Reliability;
use p2pcore_tests::nat::NatPreset;
use p2pcore_tests::sim::{Action, LinkParams, NodeSpec, SendSpec, Sim};
use std::time::Duration;

fn run(seed: u64) -> (String, String, usize) {
    let link = LinkParams {
        latency: Duration::from_millis(15),
        jitter: Duration::from_millis(5),
        loss: 0.05,
        duplicate: 0.02,
        reorder: 0.05,
        ..LinkParams::default()
    };
    let mut sim: Sim = common::sim_with(seed, link);
    let lan = sim.add_lan("home", NatPreset::PortRestricted.config());
    let s = sim.add_node(NodeSpec::server("s1"));
    let a = sim.add_node(NodeSpec::peer("alice", Some(lan)));
    let b = sim.add_node(NodeSpec::peer("bob", None));
    common::dial(&mut sim, a, s);
    common::dial(&mut sim, a, b);
    sim.schedule(
        Duration::from_secs(1),
        Action::Send(SendSpec {
            from: a,
            to: b,
            count: 50,
            size: 300,
            reliability: Reliability::Reliable,
            channel: 0,
        }),
    );
    sim.schedule(
        Duration::from_secs(2),
        Action::Send(SendSpec {
            from: b,
            to: a,
            count: 50,
            size: 300,
            reliability: Reliability::Unreliable,
            channel: 1,
        }),
    );
    sim.schedule(Duration::from_secs(3), Action::Kill(s));
    sim.schedule(Duration::from_secs(4), Action::Restart(s));
    sim.run_until(Duration::from_secs(8));
    (sim.digest(), sim.wire_digest(), sim.trace().len())
}

#[test]
fn same_seed_same_digest_twice() {
    let first = run(42);
    assert!(first.2 > 50, "a non-trivial run: {} trace entries", first.2);
    assert_eq!(first, run(42));
}

#[test]
fn different_seeds_differ() {
    assert_ne!(run(1).1, run(2).1);
}
