//! The core is sans-IO: no clocks, no global RNG, no sockets, no threads,
//! and no I/O runtime anywhere in its dependency tree.

use std::collections::BTreeSet;
use std::path::Path;

/// Source patterns that would make the core impure.
const FORBIDDEN: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "thread_rng",
    "rand::rng()",
    "rand::random",
    "OsRng",
    "SysRng",
    "getrandom",
    "std::net::UdpSocket",
    "UdpSocket",
    "std::thread",
    "thread::spawn",
    "thread::sleep",
    "tokio",
    "mio::",
    "std::fs",
    "std::env",
    // std's hashed collections seed their hasher from OS randomness.
    "HashMap",
    "HashSet",
    "RandomState",
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn sources_read_no_clock_rng_socket_or_thread() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 5, "found the sources");
    let mut hits = Vec::new();
    let mut allowed = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        // Unit tests included: they get their one starting `Instant` from
        // `test_support::epoch`, the single line allowed here.
        for (n, line) in text.lines().enumerate() {
            if line.trim_end().ends_with("// purity: test-only epoch") && f.ends_with("lib.rs") {
                allowed += 1;
                continue;
            }
            let code = line.split("//").next().unwrap_or("");
            for pat in FORBIDDEN {
                if code.contains(pat) {
                    hits.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(hits.is_empty(), "impure code in proto-core:\n{}", hits.join("\n"));
    assert_eq!(allowed, 1, "exactly one test-only clock read, in lib.rs");
}

/// Crates that do I/O or run an event loop; none may be a dependency of the core.
const FORBIDDEN_CRATES: &[&str] =
    &["mio", "tokio", "async-std", "smol", "polling", "socket2", "quinn", "quinn-udp", "async-io"];

#[test]
fn dependency_tree_has_no_io_runtime() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Normal dependencies only (what ships in the core), for the host platform.
    let out = std::process::Command::new(cargo)
        .args(["tree", "-p", "p2pcore", "-e", "normal", "--prefix", "none", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let tree: BTreeSet<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(tree.contains("quinn-proto") && tree.contains("rustls"), "walked the real tree: {tree:?}");
    let bad: Vec<&&str> = FORBIDDEN_CRATES.iter().filter(|c| tree.contains(**c)).collect();
    assert!(bad.is_empty(), "I/O crates in proto-core's dependency tree: {bad:?}");
}
