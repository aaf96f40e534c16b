//! `p2pcore demo`: a real network on loopback — 3 servers and 4 peers, each
//! a mio host on a network thread of its own with real UDP sockets — and a
//! plain-text account of what happens, step by step: the cluster forms, a
//! Master is elected, the peers come online and find their paths, messages
//! go around, the Master is stopped, a new one takes over and messages
//! still flow. Ends with a summary; `--json` prints it for machines.

use crate::{Failure, Outcome};
use clap::Args;
use p2pcore::{Admission, Config, Event, Identity, MasterBasis, NetworkSecret, NodeId, Reliability, Role};
use p2pcore_mio::{EventReceiver, Handle, Host, HostConfig, os_seed};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `p2pcore demo` flags.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Print the result as one JSON document instead of the narration.
    #[arg(long)]
    json: bool,
}

const PEERS: [&str; 4] = ["alice", "bob", "carol", "dave"];
/// The longest any one step may take before the demo calls it failed.
const STEP_LIMIT: Duration = Duration::from_secs(8);

struct Node {
    name: String,
    handle: Handle,
    events: EventReceiver,
    addr: SocketAddr,
}

impl Node {
    fn start(
        role: Role,
        name: &str,
        bootstrap: &[SocketAddr],
        secret: &NetworkSecret,
    ) -> Result<Self, Failure> {
        let mut config = Config::new(Identity::from_seed(role, os_seed()?), name, os_seed()?);
        config.bootstrap = bootstrap.to_vec();
        config.admission = Admission::SharedSecret(secret.clone());
        let host =
            Host::bind(HostConfig::new("127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!())), config)?;
        let addr = host.local_addr();
        let (handle, events) = host.spawn()?;
        Ok(Self { name: name.to_owned(), handle, events, addr })
    }

    fn id(&self) -> NodeId {
        self.handle.id()
    }
}

/// One narrated step.
struct Step {
    name: &'static str,
    ok: bool,
    ms: u128,
    detail: String,
}

struct Demo {
    json: bool,
    steps: Vec<Step>,
    names: BTreeMap<NodeId, String>,
}

impl Demo {
    fn say(&self, line: impl AsRef<str>) {
        if !self.json {
            println!("{}", line.as_ref());
        }
    }

    fn step(&mut self, name: &'static str, started: Instant, ok: bool, detail: String) {
        let ms = started.elapsed().as_millis();
        self.say(format!("{} {name}: {detail} ({ms} ms)", if ok { "ok  " } else { "FAIL" }));
        self.steps.push(Step { name, ok, ms, detail });
    }

    fn name(&self, id: &NodeId) -> String {
        self.names.get(id).cloned().unwrap_or_else(|| id.to_string())
    }
}

/// Polls `check` every 10 ms until it gives a value or the step's time is up.
fn until<T>(mut check: impl FnMut() -> Result<Option<T>, Failure>) -> Result<Option<T>, Failure> {
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        if let Some(v) = check()? {
            return Ok(Some(v));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The Master every one of `nodes` sees, if they agree on one with `basis`.
fn agreed_master(nodes: &[&Node], basis: MasterBasis) -> Result<Option<(NodeId, u64)>, Failure> {
    let mut seen = None;
    for n in nodes {
        let m = n.handle.master()?;
        match (m.master, m.basis) {
            (Some(id), Some(b)) if b == basis && seen.is_none_or(|(s, _)| s == id) => {
                seen = Some((id, m.term))
            }
            _ => return Ok(None),
        }
    }
    Ok(seen)
}

/// Every peer sends one message to every other; true when all arrived
/// exactly once.
fn exchange(peers: &[Node], round: &str) -> Result<(bool, usize), Failure> {
    let mut expected: BTreeMap<(NodeId, NodeId), String> = BTreeMap::new();
    for from in peers {
        for to in peers.iter().filter(|p| p.id() != from.id()) {
            let text = format!("{round}: {} to {}", from.name, to.name);
            from.handle.send(to.id(), 0, text.clone().into_bytes(), Reliability::Reliable)?;
            expected.insert((from.id(), to.id()), text);
        }
    }
    let total = expected.len();
    let deadline = Instant::now() + STEP_LIMIT;
    let mut duplicates = 0;
    while !expected.is_empty() && Instant::now() < deadline {
        for to in peers {
            while let Ok(e) = to.events.try_recv() {
                if let Event::MessageReceived { from, bytes, .. } = e {
                    match expected.remove(&(from, to.id())) {
                        Some(text) if text.as_bytes() == &bytes[..] => {}
                        _ => duplicates += 1,
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok((expected.is_empty() && duplicates == 0, total))
}

/// Drops what piled up in the event queues (the demo polls state instead).
fn drain(nodes: &[Node]) {
    for n in nodes {
        while n.events.try_recv().is_ok() {}
    }
}

pub(crate) fn run(a: DemoArgs) -> Outcome {
    let mut d = Demo { json: a.json, steps: Vec::new(), names: BTreeMap::new() };
    let secret = NetworkSecret::from_bytes(os_seed()?);
    let all_start = Instant::now();
    d.say("p2pcore demo: 3 servers and 4 peers on loopback, real UDP sockets, one network thread each");
    d.say("");

    // 1. The cluster.
    let t_cluster = Instant::now();
    let t = t_cluster;
    let mut servers: Vec<Node> = Vec::new();
    for i in 1..=3 {
        let join: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
        servers.push(Node::start(Role::Server, &format!("s{i}"), &join, &secret)?);
    }
    for s in &servers {
        d.names.insert(s.id(), s.name.clone());
        d.say(format!("     started server {} ({}) on {}", s.name, s.id(), s.addr));
    }
    let formed = until(|| {
        for s in &servers {
            if s.handle.servers()?.iter().filter(|i| i.live).count() < 3 {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })?;
    d.step("cluster formed", t, formed.is_some(), "each server sees all 3 live".into());

    // 2. The Master (timed from the servers' start, like the cluster).
    let refs: Vec<&Node> = servers.iter().collect();
    let master = until(|| agreed_master(&refs, MasterBasis::Raft))?;
    let detail = match master {
        Some((id, term)) => {
            format!("{} leads the Raft group (term {term}); every server agrees", d.name(&id))
        }
        None => "the servers did not agree on a Raft leader".into(),
    };
    d.step("Master elected", t_cluster, master.is_some(), detail);

    // 3. The peers.
    let t = Instant::now();
    let server_addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let mut peers = Vec::new();
    for name in PEERS {
        peers.push(Node::start(Role::Peer, name, &server_addrs, &secret)?);
    }
    for p in &peers {
        d.names.insert(p.id(), p.name.clone());
    }
    let online = until(|| {
        for p in &peers {
            let others = p.handle.peers()?.iter().filter(|o| o.id != p.id()).count();
            if others < PEERS.len() - 1 {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })?;
    d.step(
        "peers online",
        t,
        online.is_some(),
        format!("{} peers, each sees the other {}", PEERS.len(), PEERS.len() - 1),
    );

    // 4. Paths.
    let t = Instant::now();
    let pairs = until(|| {
        for (i, p) in peers.iter().enumerate() {
            let table = p.handle.with(|h| h.node().link_table())?;
            for q in &peers[i + 1..] {
                // On loopback every pair should reach the direct path.
                if table.iter().find(|r| r.id == q.id()).map(|r| r.path) != Some(p2pcore::PathKind::Direct) {
                    return Ok(None);
                }
            }
        }
        Ok(Some(()))
    })?;
    let pair_count = PEERS.len() * (PEERS.len() - 1) / 2;
    d.step("paths", t, pairs.is_some(), format!("all {pair_count} pairs on a direct path"));

    // 5. Messages.
    drain(&peers);
    let t = Instant::now();
    let (ok, n) = exchange(&peers, "hello")?;
    d.step("messages", t, ok, format!("{n} messages by node ID, each delivered exactly once"));
    // The round trips, now that traffic has measured them.
    let mut pair_json = Vec::new();
    for (i, p) in peers.iter().enumerate() {
        let (table, links) =
            p.handle.with(|h| (h.node().link_table(), h.node().links().collect::<Vec<_>>()))?;
        for q in &peers[i + 1..] {
            let path =
                table.iter().find(|r| r.id == q.id()).map(|r| r.path.to_string()).unwrap_or("none".into());
            let rtt_ms = links.iter().find(|l| l.id == q.id()).map(|l| l.rtt.as_secs_f64() * 1e3);
            let rtt = rtt_ms.map_or(String::new(), |ms| format!(", round trip {ms:.2} ms"));
            d.say(format!("     {:<6} <-> {:<6} {path}{rtt}", p.name, q.name));
            pair_json.push(json!({ "a": p.name, "b": q.name, "path": path, "rtt_ms": rtt_ms }));
        }
    }

    // 6. Failover.
    let t = Instant::now();
    let mut failover = json!(null);
    let new_master = match master {
        Some((old, _)) => {
            let i = servers.iter().position(|s| s.id() == old).unwrap_or(0);
            let stopped = servers.remove(i);
            d.say(format!("     stopping the Master, {}", stopped.name));
            stopped.handle.close()?;
            let survivors: Vec<&Node> = servers.iter().chain(peers.iter()).collect();
            // Two servers left: the elder of them is Master (basis eldest).
            let m = until(|| agreed_master(&survivors, MasterBasis::Eldest))?;
            if let Some((id, _)) = m {
                failover = json!({ "stopped": stopped.name, "new_master": d.name(&id), "basis": "eldest" });
            }
            m.map(|(id, _)| id)
        }
        None => None,
    };
    let detail = match new_master {
        Some(id) => {
            format!("{} is Master now (eldest of the 2 servers left); servers and peers agree", d.name(&id))
        }
        None => "no new Master was agreed".into(),
    };
    d.step("failover", t, new_master.is_some(), detail);

    // 7. Messages after the failover.
    drain(&peers);
    let t = Instant::now();
    let (ok, n) = exchange(&peers, "after the failover")?;
    d.step("messages after failover", t, ok, format!("{n} messages, each delivered exactly once"));

    // Everyone says goodbye at once, then each waits for its own close.
    for n in peers.iter().chain(servers.iter()) {
        let _ = n.handle.with(Host::start_close);
    }
    for n in peers.iter().chain(servers.iter()) {
        let _ = n.handle.close();
    }
    let all_ok = d.steps.iter().all(|s| s.ok);
    if d.json {
        let doc = json!({
            "ok": all_ok,
            "total_ms": all_start.elapsed().as_millis(),
            "steps": d.steps.iter().map(|s| json!({ "step": s.name, "ok": s.ok, "ms": s.ms, "detail": s.detail })).collect::<Vec<_>>(),
            "pairs": pair_json,
            "failover": failover,
        });
        println!("{doc}");
    } else {
        println!();
        println!("| step | result | ms |");
        println!("|---|---|---|");
        for s in &d.steps {
            println!("| {} | {} | {} |", s.name, if s.ok { "ok" } else { "FAILED" }, s.ms);
        }
        println!();
        println!(
            "{} in {:.1} s",
            if all_ok { "every step passed" } else { "some steps FAILED" },
            all_start.elapsed().as_secs_f64()
        );
    }
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
