//! The `p2pcore` command, driven as a user drives it: real processes on
//! loopback. The demo and its JSON; two servers and two console peers
//! exchanging a scripted message; console peers in lookup mode finding each
//! other by name; console peers using the store (reads,
//! writes, a watch, its mistakes); every bad input giving one clear line and
//! a non-zero exit; SIGTERM closing within its bound; `/metrics` as
//! Prometheus text; the network map in a real headless browser (Debian's
//! `chromium`, which `.ci/run` installs).
#![allow(missing_docs)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod procs;

use procs::{BIN, Proc};

const LIMIT: Duration = Duration::from_secs(30);

fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A plain HTTP/1.1 GET: (status, body).
fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

fn wait_ready(admin: SocketAddr) {
    let deadline = Instant::now() + LIMIT;
    while http_get(admin, "/readyz", None).map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "the server at {admin} never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Net {
    dir: tempfile::TempDir,
    secret: PathBuf,
}

impl Net {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        let out = Command::new(BIN).args(["secret", "new", "--out"]).arg(&secret).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Self { dir, secret }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    /// A server; `admin` for readiness, metrics and the map.
    fn server(&self, name: &str, listen: SocketAddr, join: &[SocketAddr], admin: Option<SocketAddr>) -> Proc {
        let mut args: Vec<String> = vec![
            "server".into(),
            "--name".into(),
            name.into(),
            "--data-dir".into(),
            self.path(name),
            "--listen".into(),
            listen.to_string(),
            "--secret-file".into(),
            self.secret.to_str().unwrap().into(),
        ];
        for j in join {
            args.extend(["--join".into(), j.to_string()]);
        }
        if let Some(a) = admin {
            args.extend(["--admin".into(), a.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::p2pcore(name, &args)
    }

    fn peer(&self, name: &str, join: SocketAddr, exec: &[&str]) -> Proc {
        self.peer_with(name, join, &[], exec)
    }

    /// A console peer with `extra` flags.
    fn peer_with(&self, name: &str, join: SocketAddr, extra: &[&str], exec: &[&str]) -> Proc {
        let mut args: Vec<String> = vec![
            "peer".into(),
            "--name".into(),
            name.into(),
            "--join".into(),
            join.to_string(),
            "--secret-file".into(),
            self.secret.to_str().unwrap().into(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        for e in exec {
            args.extend(["--exec".into(), (*e).into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::p2pcore(name, &args)
    }
}

#[test]
fn demo_runs_every_step_and_reports_json() {
    let t = Instant::now();
    let out = Command::new(BIN).args(["demo", "--json"]).output().unwrap();
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "demo failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["ok"], true);
    let steps: Vec<&str> =
        doc["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(
        steps,
        [
            "cluster formed",
            "Master elected",
            "peers online",
            "paths",
            "messages",
            "failover",
            "messages after failover"
        ]
    );
    assert!(doc["steps"].as_array().unwrap().iter().all(|s| s["ok"] == true));
    assert_eq!(doc["pairs"].as_array().unwrap().len(), 6);
    assert_eq!(doc["failover"]["basis"], "eldest");
    assert!(took < Duration::from_secs(15), "the demo took {took:?}");
}

#[test]
fn two_servers_and_two_console_peers_exchange_a_scripted_message() {
    let net = Net::new();
    let (a1, a2, admin) = (free_udp(), free_udp(), free_tcp());
    let _s1 = net.server("s1", a1, &[], Some(admin));
    wait_ready(admin);
    let _s2 = net.server("s2", a2, &[a1], None);
    let mut bob = net.peer("bob", a1, &[]);
    bob.expect("joined as bob", LIMIT);
    let mut alice = net.peer("alice", a2, &["wait bob 20", "send bob hello from alice", "peers", "quit"]);
    let seen = bob.expect("[alice] hello from alice", LIMIT);
    assert!(seen.iter().any(|l| l.contains("alice") && l.contains("is online")), "{seen:?}");
    let status = alice.wait_exit(LIMIT);
    assert!(status.success(), "alice: {status}: {}", alice.stderr_text());
    let alice_lines: Vec<String> = alice.lines().into_iter().map(|(_, l)| l).collect();
    assert!(alice_lines.iter().any(|l| l == "bob is online"), "{alice_lines:?}");
    assert!(
        alice_lines.iter().any(|l| l.starts_with("bob ") && l.contains('C')),
        "peers lists bob: {alice_lines:?}"
    );
    // Bob answers by command on stdin, then leaves at end of input.
    bob.say("servers");
    bob.say("send nobody hi");
    bob.expect("no online peer is named `nobody`", LIMIT);
    // Two peers answer to one name: the console lists them instead of
    // guessing.
    let _twins = [net.peer("twin", a1, &[]), net.peer("twin", a2, &[])];
    bob.expect("twin (", LIMIT);
    bob.expect("twin (", LIMIT);
    bob.say("send twin hi");
    let seen = bob.expect("`twin` names 2 peers", LIMIT);
    assert_eq!(seen.last().unwrap().matches(", C").count() + 1, 2, "both IDs listed: {seen:?}");
    bob.close_stdin();
    assert!(bob.wait_exit(LIMIT).success());
}

#[test]
fn console_peers_in_lookup_mode_find_each_other_by_name() {
    let net = Net::new();
    let (a1, a2, admin) = (free_udp(), free_udp(), free_tcp());
    let _s1 = net.server("s1", a1, &[], Some(admin));
    wait_ready(admin);
    let _s2 = net.server("s2", a2, &[a1], None);
    let lookup = ["--directory", "lookup"];
    // A mode that does not exist is a usage mistake (clap's exit code 2)
    // naming the two that do.
    let out = Command::new(BIN)
        .args(["peer", "--name", "p", "--join", "127.0.0.1:9", "--directory", "some"])
        .output();
    let out = out.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("[possible values: full, lookup]"), "{stderr}");
    let mut bob = net.peer_with("bob", a1, &lookup, &[]);
    bob.expect("joined as bob", LIMIT);
    let mut alice = net.peer_with(
        "alice",
        a2,
        &lookup,
        &["peers", "find nobody", "find bob", "wait bob 20", "send bob hello from alice", "peers", "quit"],
    );
    bob.expect("hello from alice", LIMIT);
    let status = alice.wait_exit(LIMIT);
    assert!(status.success(), "alice: {status}: {}", alice.stderr_text());
    let lines: Vec<String> = alice.lines().into_iter().map(|(_, l)| l).collect();
    let at = |text: &str| {
        lines.iter().position(|l| l.contains(text)).unwrap_or_else(|| panic!("`{text}` missing: {lines:?}"))
    };
    assert!(at("in lookup mode") < at("no peer found yet"), "nobody is known at first: {lines:?}");
    at("no online peer is named `nobody`");
    assert!(at("found bob (C") < at("bob is online"), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("bob ") && l.contains('C')),
        "peers lists bob once found: {lines:?}"
    );
    // Bob never looked alice up; he answers her by name after a lookup.
    bob.say("send alice hi");
    bob.expect("no online peer is named `alice`", LIMIT);
    // A full-mode peer sees everyone, lookup-mode peers included.
    let mut carol = net.peer("carol", a2, &["wait bob 20"]);
    carol.expect("bob is online", LIMIT);
    bob.say("find carol");
    bob.expect("found carol (C", LIMIT);
    bob.close_stdin();
    assert!(bob.wait_exit(LIMIT).success());
    carol.close_stdin();
    assert!(carol.wait_exit(LIMIT).success());
}

#[test]
fn console_peers_use_the_store_and_watch_it() {
    let net = Net::new();
    let (a1, a2, a3, admin) = (free_udp(), free_udp(), free_udp(), free_tcp());
    let _s1 = net.server("s1", a1, &[], Some(admin));
    wait_ready(admin);
    let s2 = net.server("s2", a2, &[a1], None);
    let s3 = net.server("s3", a3, &[a1], None);
    let mut bob = net.peer("bob", a1, &[]);
    let mut alice = net.peer("alice", a1, &[]);
    bob.expect("joined as bob", LIMIT);
    alice.expect("joined as alice", LIMIT);
    // The store answers once the three servers' Raft group leads; until
    // then a request may time out, so the first write is retried.
    let deadline = Instant::now() + LIMIT;
    loop {
        alice.say("kv put room/topic hello world");
        let seen = alice.expect("room/topic", LIMIT);
        if seen.last().unwrap().starts_with("put room/topic at revision ") {
            break;
        }
        assert!(Instant::now() < deadline, "the store never answered: {seen:?}");
    }
    // A watch from now on, from another peer; reads see the write.
    bob.say("kv watch room/");
    let seen = bob.expect("watch 0: changes under room/ from revision", LIMIT);
    assert!(seen.last().unwrap().contains("`kv unwatch 0` stops it"), "{seen:?}");
    bob.say("kv get room/topic");
    let seen = bob.expect("room/topic = hello world", LIMIT);
    assert!(seen.last().unwrap().contains("(version 1, created at revision"), "{seen:?}");
    alice.say("kv put room/guest carol");
    alice.expect("put room/guest at revision", LIMIT);
    bob.expect("~ watch 0: put room/guest = carol (revision", LIMIT);
    alice.say("kv get-prefix room/ 1");
    let seen = alice.expect("1 key(s) under room/ at revision", LIMIT);
    assert!(seen.last().unwrap().ends_with("more keys match (raise the limit)"), "{seen:?}");
    assert!(seen.iter().any(|l| l.starts_with("room/guest = carol")), "key order: {seen:?}");
    alice.say("kv del room/topic");
    alice.expect("deleted room/topic at revision", LIMIT);
    bob.expect("~ watch 0: delete room/topic (revision", LIMIT);
    alice.say("kv del room/topic");
    alice.expect("room/topic: no such key, nothing deleted", LIMIT);
    alice.say("kv get room/topic");
    alice.expect("room/topic: no such key (at revision", LIMIT);
    alice.say("kv del-prefix room/");
    alice.expect("deleted 1 key(s) under room/ at revision", LIMIT);
    bob.expect("~ watch 0: delete room/guest", LIMIT);
    bob.say("kv unwatch 0");
    bob.expect("stopped watch 0", LIMIT);
    bob.say("kv unwatch 0");
    bob.expect("! no live watch has ID 0 (`kv watch` prints the IDs)", LIMIT);

    // Mistakes: one `!` line each, saying what to do.
    alice.say("kv put room/x");
    alice.expect("! usage: kv put KEY VALUE", LIMIT);
    alice.say(&format!("kv get {}", "k".repeat(1025)));
    let seen = alice.expect(&format!("! kv get {}... (1025 bytes): ", "k".repeat(40)), LIMIT);
    assert!(
        seen.last().unwrap().contains("key is 1025 bytes (or items), over the limit of 1024"),
        "{seen:?}"
    );
    alice.say("kv frob");
    alice.expect("! unknown store command `kv frob`", LIMIT);
    alice.say("help");
    alice.expect("kv watch PREFIX [FROM]", LIMIT);
    // Without a majority of the servers the store cannot answer: the
    // request times out (5 s) with what to check.
    drop((s2, s3));
    alice.say("kv get room/topic");
    let seen = alice.expect("! kv get room/topic: the cluster's store did not answer in time", LIMIT);
    assert!(seen.last().unwrap().contains("a majority of the servers must be up"), "{seen:?}");
    for p in [&mut alice, &mut bob] {
        p.say("quit");
        assert!(p.wait_exit(LIMIT).success(), "{}", p.stderr_text());
    }
}

/// Runs the command expecting failure: exit code 1, one line on stderr
/// naming the problem, nothing like a panic.
fn fails_with(args: &[&str], needle: &str) {
    let out = Command::new(BIN).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("p2pcore: error:")).collect();
    assert_eq!(lines.len(), 1, "{args:?}: one error line expected:\n{stderr}");
    assert!(lines[0].contains(needle), "{args:?}: `{needle}` not in `{}`", lines[0]);
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
}

#[test]
fn bad_input_prints_one_clear_line_and_exits_non_zero() {
    let net = Net::new();
    let dir = net.path("d");
    let secret = net.secret.to_str().unwrap().to_owned();
    let base = ["server", "--data-dir", &dir, "--secret-file", &secret];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        base.iter().chain(extra).copied().collect()
    }

    fails_with(
        &["server", "--config", "/nonexistent/server.toml"],
        "cannot read the config file /nonexistent",
    );
    let cfg = net.path("bad.toml");
    std::fs::write(&cfg, "name = \"x\"\nlisten = \"0.0.0.0:7400\"\nlistne = \"typo\"\n").unwrap();
    fails_with(&["server", "--config", &cfg], "(line 3): unknown field `listne`");
    fails_with(&with(&base, &["--listen", "nonsense"]), "`nonsense` is not an address");
    fails_with(&with(&base, &["--join", "10.0.0.1"]), "--join: `10.0.0.1` is not an address");
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    fails_with(&with(&base, &["--listen", &taken]), "another process uses this port");
    fails_with(&with(&base, &["--listen", "192.0.2.1:7400"]), "no interface of this machine has that IP");
    let file = net.path("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    fails_with(&["server", "--data-dir", &file, "--secret-file", &secret], &file);
    fails_with(&["server", "--data-dir", &dir], "no admission given");
    fails_with(
        &["server", "--data-dir", &dir, "--secret-file", "/nonexistent"],
        "cannot read the network secret file",
    );
    fails_with(&with(&base, &["--admin", "0.0.0.0:9400"]), "--admin-token-file");
    fails_with(
        &["token", "issue", "--issuer-key", &secret, "--role", "server", "--node", "nope", "--expires", "1d"],
        "`nope` is not a node ID",
    );
    // A join address where nothing answers.
    let silent = free_udp().to_string();
    fails_with(
        &with(&base, &["--listen", "127.0.0.1:0", "--join", &silent, "--join-timeout", "1"]),
        "no server answered",
    );
    fails_with(
        &["peer", "--name", "p", "--join", &silent, "--secret-file", &secret, "--join-timeout", "1"],
        "no server answered",
    );

    // A data directory held by a live server, and a wrong secret.
    let (a1, admin) = (free_udp(), free_tcp());
    let _s1 = net.server("s1", a1, &[], Some(admin));
    wait_ready(admin);
    let held = net.path("s1");
    fails_with(
        &["server", "--data-dir", &held, "--secret-file", &secret, "--listen", "127.0.0.1:0"],
        "is using this data directory",
    );
    let wrong = net.path("wrong-secret");
    std::fs::write(&wrong, "a different secret, long enough\n").unwrap();
    let a1 = a1.to_string();
    fails_with(
        &[
            "server",
            "--data-dir",
            &net.path("s9"),
            "--secret-file",
            &wrong,
            "--listen",
            "127.0.0.1:0",
            "--join",
            &a1,
        ],
        "refused",
    );
    // Usage mistakes are clap's: exit code 2 with a usage line.
    let out = Command::new(BIN).args(["server", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn sigterm_closes_the_server_within_its_bound() {
    let net = Net::new();
    let (a1, admin) = (free_udp(), free_tcp());
    let mut s1 = net.server("s1", a1, &[], Some(admin));
    wait_ready(admin);
    let t = Instant::now();
    s1.signal("TERM");
    let status = s1.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status}: {}", s1.stderr_text());
    assert!(t.elapsed() < Duration::from_secs(3), "closed in {:?}", t.elapsed());
    assert!(s1.stderr_text().contains("server closed"));
}

/// Checks the text exposition format (version 0.0.4) line by line: every
/// sample belongs to a family declared by `# TYPE`, names and labels are
/// well formed, values are numbers.
fn check_prometheus(text: &str) -> usize {
    let mut declared = std::collections::BTreeSet::new();
    let mut samples = 0;
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            let kind = parts.next().unwrap();
            assert!(name_ok(name) && ["counter", "gauge"].contains(&kind), "{line}");
            declared.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        assert!(value.parse::<f64>().is_ok(), "value: {line}");
        let name = series.split('{').next().unwrap();
        assert!(name_ok(name), "name: {line}");
        assert!(declared.contains(name), "undeclared family: {line}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}')).expect("braces");
            for pair in inner.split("\",") {
                let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("label: {line}"));
                assert!(name_ok(k), "label name: {line}");
                assert!(!v.trim_end_matches('"').contains('\n'), "{line}");
            }
        }
        samples += 1;
    }
    samples
}

#[test]
fn metrics_are_prometheus_text_and_health_answers() {
    let net = Net::new();
    let (a1, admin) = (free_udp(), free_tcp());
    let _s1 = net.server("s1", a1, &[], Some(admin));
    wait_ready(admin);
    let (status, body) = http_get(admin, "/metrics", None).unwrap();
    assert_eq!(status, 200);
    assert!(check_prometheus(&body) > 20, "{body}");
    assert!(body.contains("p2pcore_is_master 1"), "a lone server is Master:\n{body}");
    assert!(body.contains("p2pcore_dropped_total{reason=\"bad_magic\"} 0"));
    assert_eq!(http_get(admin, "/healthz", None).unwrap().0, 200);
    assert_eq!(http_get(admin, "/nope", None).unwrap().0, 404);
}

#[test]
fn the_admin_address_off_localhost_requires_its_token() {
    let net = Net::new();
    let token = net.path("admin-token");
    std::fs::write(&token, "s3cret-admin-token\n").unwrap();
    let admin = free_tcp();
    let a1 = free_udp().to_string();
    let p = Proc::p2pcore(
        "s1",
        &[
            "server",
            "--data-dir",
            &net.path("s1"),
            "--listen",
            &a1,
            "--secret-file",
            net.secret.to_str().unwrap(),
            "--admin",
            &admin.to_string(),
            "--admin-token-file",
            &token,
        ],
    );
    let deadline = Instant::now() + LIMIT;
    while http_get(admin, "/healthz", Some("s3cret-admin-token")).map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "never healthy: {}", p.stderr_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http_get(admin, "/metrics", None).unwrap().0, 401);
    assert_eq!(http_get(admin, "/metrics", Some("wrong")).unwrap().0, 401);
    assert_eq!(http_get(admin, "/metrics?token=s3cret-admin-token", None).unwrap().0, 200);
}

fn chromium() -> PathBuf {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("which").arg(c).output()
            && out.status.success()
        {
            return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        }
    }
    panic!("this test needs a headless browser: install Debian's chromium (apt-get install chromium)");
}

/// The page's DOM after its script ran, as a headless browser sees it.
fn dump_dom(browser: &Path, url: &str, profile: &Path) -> String {
    let out = Command::new("timeout")
        .arg("60")
        .arg(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("run the browser");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_network_map_shows_the_cluster_in_a_browser_and_follows_it() {
    let browser = chromium();
    let net = Net::new();
    let (a1, a2, a3, admin) = (free_udp(), free_udp(), free_udp(), free_tcp());
    let _s1 = net.server("s1", a1, &[], Some(admin));
    wait_ready(admin);
    let _s2 = net.server("s2", a2, &[a1], None);
    let mut s3 = net.server("s3", a3, &[a1], None);
    // Their output is not waited on: whichever joins second already sees
    // the other when it starts.
    let _ann = net.peer("ann", a1, &[]);
    let _ben = net.peer("ben", a1, &[]);
    // The map's JSON sees 3 live servers and the pair before the page is
    // loaded, so the page is checked against a settled cluster.
    let deadline = Instant::now() + LIMIT;
    loop {
        let map = http_get(admin, "/map.json", None).map(|r| r.1).unwrap_or_default();
        let doc: serde_json::Value = serde_json::from_str(&map).unwrap_or_default();
        let live = doc["servers"].as_array().map_or(0, |s| s.iter().filter(|s| s["live"] == true).count());
        // The pair's path, and the round trip its peers reported.
        if live == 3 && doc["pairs"].as_array().is_some_and(|p| p.len() == 1 && p[0]["rtt_ms"].is_number()) {
            break;
        }
        assert!(Instant::now() < deadline, "the cluster did not settle: {map}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("http://{admin}/map");
    let profile = tempfile::tempdir().unwrap();
    let dom = dump_dom(&browser, &url, profile.path());
    assert!(dom.contains("data-loaded=\"yes\""), "the page's script did not render:\n{dom}");
    for name in ["s1", "s2", "s3"] {
        assert!(dom.contains(&format!("data-name=\"{name}\" data-live=\"true\"")), "{name} live:\n{dom}");
    }
    assert!(dom.contains("★ Master"), "the Master is marked:\n{dom}");
    assert!(
        dom.contains("Master: s1 · basis raft") || dom.contains("basis raft"),
        "raft basis shown:\n{dom}"
    );
    assert!(dom.contains("data-name=\"ann\"") && dom.contains("data-name=\"ben\""), "peers:\n{dom}");
    assert!(dom.contains("class=\"pair\""), "the pair's path:\n{dom}");

    // A server goes away: the page follows.
    s3.signal("TERM");
    s3.wait_exit(Duration::from_secs(5));
    let deadline = Instant::now() + LIMIT;
    loop {
        let dom = dump_dom(&browser, &url, profile.path());
        if dom.contains("data-name=\"s3\" data-live=\"false\"")
            && dom.contains("data-name=\"s1\" data-live=\"true\"")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the page never showed s3 down:\n{dom}");
    }
}
