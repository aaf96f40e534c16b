//! The suite's quick mode end to end, so it never rots: every part runs
//! against every reference, and the report, JSON and plots come out whole.
//! Nothing here judges a figure (timing is never asserted in tests): only
//! that each was measured.
#![allow(missing_docs)]

use std::process::Command;

#[test]
fn quick_mode_measures_every_system_and_writes_the_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--quick", "--out"])
        .arg(dir.path())
        .output()
        .expect("run the bench binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench --quick failed:\n{stdout}\n{stderr}");

    let table = std::fs::read_to_string(dir.path().join("report.md")).expect("report.md");
    assert!(
        stdout.contains(&table[table.find("| ratio").expect("a table")..]),
        "stdout holds the same table"
    );
    let mut wanted = vec![
        "reliable throughput, 64 B messages",
        "reliable throughput, 1 MiB messages",
        "| quinn ",
        "round trip p50, 64 B reliable",
        "bare UDP",
        "unreliable 100 B messages delivered per second",
        "one core forwards per second",
        "recvmmsg→sendmmsg",
        "added by relaying",
        "server memory per connected peer at 30 peers",
        "start to first message delivered",
        "start to a direct path",
    ];
    if cfg!(have_enet) {
        wanted.push("| ENet ");
    }
    for w in wanted {
        assert!(table.contains(w), "the table lacks {w:?}:\n{table}");
    }
    // Every ratio that was computed is a finite positive number.
    for line in table.lines().skip_while(|l| !l.starts_with("| ratio")).skip(2) {
        let ratio = line.trim_start_matches('|').split('|').next().unwrap_or("").trim();
        if ratio != "—" {
            let r: f64 = ratio.parse().unwrap_or_else(|_| panic!("ratio {ratio:?} in {line}"));
            assert!(r.is_finite() && r > 0.0, "ratio {r} in {line}");
        }
    }

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).expect("report.json"))
            .expect("valid JSON");
    assert_eq!(json["mode"], "quick");
    assert_eq!(json["throughput"].as_array().map(Vec::len), Some(3));
    for k in ["rtt_p2pcore", "rtt_quinn", "rtt_udp", "startup_p2pcore", "startup_quinn"] {
        assert!(json[k].as_array().is_some_and(|a| !a.is_empty()), "{k} has samples");
    }

    let svg = std::fs::read_to_string(dir.path().join("throughput.svg")).expect("throughput.svg");
    assert!(svg.starts_with("<svg") && svg.contains("p2pcore") && svg.contains("quinn"));
    let svg = std::fs::read_to_string(dir.path().join("rtt.svg")).expect("rtt.svg");
    assert!(svg.contains("p2pcore") && svg.contains("bare UDP"));
    if cfg!(have_enet) {
        assert!(svg.contains("ENet"));
    }
}
