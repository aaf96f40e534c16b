//! The `p2psim` binary and the shipped scenarios.

use p2pcore_tests::report::Report;
use p2pcore_tests::scenario::Loaded;
use std::path::{Path, PathBuf};
use std::process::Command;

fn scenarios() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

fn p2psim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_p2psim")).args(args).output().unwrap()
}

#[test]
fn every_shipped_scenario_runs() {
    let files = scenarios();
    assert!(files.len() >= 10);
    for f in files {
        let loaded = Loaded::parse(&std::fs::read_to_string(&f).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let seed = loaded.scenario.seed;
        let mut sim = loaded.build(seed);
        sim.run_until(loaded.duration());
        let report = Report::new(&sim, seed, loaded.scenario.duration_ms);
        assert!(!report.events.is_empty(), "{}", f.display());
        let sends = loaded.scenario.event.iter().any(|e| e.get_ref().send.is_some());
        if sends {
            assert!(report.metrics.messages.sent > 0, "{}: the scenario sends messages", f.display());
        }
        // The delivery guarantee: every accepted message delivered once or
        // reported, in every shipped scenario.
        let m = &report.metrics.messages;
        assert_eq!((m.lost, m.duplicated, m.misreported), (0, 0, 0), "{}: {m:?}", f.display());
        assert_eq!(m.delivered + m.failed + m.unreliable_lost, m.sent, "{}: {m:?}", f.display());
        let name = f.file_name().unwrap().to_string_lossy();
        if name.starts_with("cluster-") && name != "cluster-admission.toml" {
            assert!(report.metrics.cluster_formed_ms.is_some(), "{name}: the cluster forms");
            assert!(sim.agreed_master().is_some(), "{name}: one Master at the end");
            assert!(sim.server_lists_converged(), "{name}: lists converge");
        }
        if name == "peers-relay.toml" {
            let m = &report.metrics.messages;
            assert_eq!((m.sent, m.delivered, m.duplicated, m.lost), (3600, 3600, 0, 0), "{name}: {m:?}");
            assert!(report.metrics.pairs.iter().all(|p| p.path == "relayed" && p.via.is_some()), "{name}");
        }
        if name == "peers-outage-resume.toml" {
            let m = &report.metrics.messages;
            assert_eq!((m.sent, m.delivered, m.failed), (2201, 2201, 0), "{name}: {m:?}");
        }
        if name == "peers-all-servers-down.toml" {
            let m = &report.metrics.messages;
            assert_eq!((m.sent, m.rejected, m.delivered), (40, 20, 40), "{name}: {m:?}");
        }
    }
}

#[test]
fn on_demand_peers_connect_only_to_whom_they_send() {
    let text = r#"
        duration_ms = 8000
        [network]
        connect = "on-demand"
        [[server]]
        name = "s1"
        [[peer]]
        name = "alice"
        [[peer]]
        name = "bob"
        [[peer]]
        name = "carol"
        [[event]]
        at_ms = 2000
        send = { from = "alice", to = "bob", count = 10 }
    "#;
    let loaded = Loaded::parse(text).unwrap();
    let mut sim = loaded.build(3);
    sim.run_until(loaded.duration());
    let report = Report::new(&sim, 3, 8000);
    assert_eq!(report.metrics.messages.delivered, 10);
    let pairs: Vec<(&str, &str)> =
        report.metrics.pairs.iter().map(|p| (p.a.as_str(), p.b.as_str())).collect();
    assert_eq!(pairs, [("alice", "bob"), ("bob", "alice")], "carol stays unconnected");
    let carol = report.nodes["carol"].state.as_ref().unwrap();
    assert_eq!(carol.peers, ["alice", "bob"], "but she still sees everyone online");
}

#[test]
fn report_has_the_documented_schema() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/two-nodes.toml");
    let out = p2psim(&[path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["seed"], 7);
    assert_eq!(r["duration_ms"], 20000);
    assert_eq!(r["digest"].as_str().unwrap().len(), 64);
    let events = r["events"].as_array().unwrap();
    assert!(!events.is_empty());
    for key in ["t_ms", "node", "event", "detail"] {
        assert!(events[0].get(key).is_some(), "event key {key}");
    }
    for name in ["alice", "bob"] {
        let n = &r["nodes"][name];
        assert!(n["id"].as_str().unwrap().starts_with('C'));
        assert_eq!(n["role"], "peer");
        assert_eq!(n["alive"], true);
        assert!(n["state"]["links"].is_array());
        assert!(r["metrics"]["bytes"][name]["sent"].as_u64().unwrap() > 0);
    }
    let m = &r["metrics"]["messages"];
    for key in ["sent", "delivered", "duplicated", "reordered", "lost"] {
        assert!(m[key].is_u64(), "metrics.messages.{key}");
    }
    assert_eq!(m["sent"], 301);
    // Over 1% loss only some of the 100 unreliable messages may be lost; the
    // 201 reliable ones all arrive.
    let delivered = m["delivered"].as_u64().unwrap();
    assert!(delivered >= 201 + 90, "{m}");
    // `lost` counts reliable messages only (silent losses, ruled out); the
    // unreliable ones the links dropped are counted apart.
    assert_eq!(m["lost"], 0, "{m}");
    assert_eq!(m["unreliable_lost"].as_u64().unwrap(), 301 - delivered, "{m}");
}

#[test]
fn seed_flag_overrides_and_runs_repeat() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/two-nodes.toml");
    let p = path.to_str().unwrap();
    let digest = |args: &[&str]| -> (u64, String) {
        let out = p2psim(args);
        assert!(out.status.success());
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (r["seed"].as_u64().unwrap(), r["digest"].as_str().unwrap().to_owned())
    };
    let a = digest(&[p, "--seed", "99", "--no-events"]);
    let b = digest(&[p, "--seed", "99", "--no-events"]);
    let c = digest(&[p, "--no-events"]);
    assert_eq!(a, b);
    assert_eq!(a.0, 99);
    assert_ne!(a.1, c.1);
}

#[test]
fn bad_scenarios_get_clear_errors() {
    let dir = std::env::temp_dir().join(format!("p2psim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "seed = 1\n[[server]]\nname = \"s1\"\n[[event]]\nat_ms = 10\nkill = \"s2\"\n")
        .unwrap();
    let out = p2psim(&[bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 6") && err.contains("event[0].kill") && err.contains("s2"), "{err}");
    assert!(out.stdout.is_empty());

    let out = p2psim(&[dir.join("missing.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    std::fs::remove_dir_all(&dir).ok();
}
