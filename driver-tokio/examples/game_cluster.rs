//! A game cluster on p2pcore's coordination layer, end to end on loopback.
//!
//! * Three game-server peers register in service `game` with their load
//!   and campaign for the shard's master with `.least_loaded()`: whenever
//!   the seat is vacant, the least loaded candidate takes it.
//! * The master broadcasts world-state ticks to the other game servers by
//!   p2pcore message, stamped with its term (a fencing token: a server
//!   never accepts a tick of an older term than one it saw).
//! * Two clients find the master with `watch_leader`, greet it, and after
//!   the master is killed re-find the new one the same way.
//!
//! Run: `cargo run -p p2pcore-tokio --example game_cluster`. Key figure:
//! master failover time (kill → clients told the new master → its reply).

#![allow(clippy::print_stdout)]

#[path = "common/mod.rs"]
#[allow(dead_code)]
mod common;

use common::{Cluster, LIMIT, send};
use p2pcore::{CoordError, CoordRequest, CoordUpdate, InstanceFilter, InstanceInfo, NodeId};
use p2pcore_tokio::Endpoint;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::time::timeout;

const SERVICE: &str = "game";
const SHARD: &str = "shard-1";
const CH_TICK: u8 = 1;
const CH_HELLO: u8 = 2;
const CH_WELCOME: u8 = 3;

/// What a run showed.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Every election, in order: (node, term).
    pub(crate) elections: Vec<(NodeId, u64)>,
    /// The most game servers that believed they were master at once.
    pub(crate) max_masters: usize,
    /// Ticks the followers accepted, and ticks of an older term they saw
    /// after a newer one (must be 0 with fencing).
    pub(crate) ticks: usize,
    /// Ticks refused for an old term.
    pub(crate) stale_ticks: usize,
    /// The master killed, and whom each client reached after.
    pub(crate) killed: Option<NodeId>,
    /// The masters each client got a welcome from after the kill.
    pub(crate) reached_after: Vec<NodeId>,
    /// Kill → each client's welcome from the new master.
    pub(crate) failover: Vec<Duration>,
    /// Instances the registry listed before and after the kill.
    pub(crate) listed: (usize, usize),
}

#[derive(Default)]
struct Shared {
    masters: AtomicUsize,
    max_masters: AtomicUsize,
    elections: Mutex<Vec<(NodeId, u64)>>,
    ticks: AtomicUsize,
    stale: AtomicUsize,
}

/// One game server: registered with its load, campaigning for the shard;
/// as master it ticks and answers clients, as follower it takes ticks.
async fn game_server(ep: Endpoint, load: u32, shared: Arc<Shared>) -> Result<(), CoordError> {
    let session = ep.session(Duration::from_secs(1)).await?;
    let info = InstanceInfo::new(load, 100).tag("shard", SHARD);
    let mut reg = ep.register(SERVICE, ep.name(), info, session).await?;
    // Followers take ticks (and clients' greetings) while campaigning.
    let follower = tokio::spawn(follow(ep.clone(), shared.clone()));
    let req = CoordRequest::campaign(SHARD, session, ep.name()).load(load).least_loaded();
    let mut lead = ep.campaign(req).await?;
    let now = shared.masters.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_masters.fetch_max(now, Ordering::SeqCst);
    shared.elections.lock().unwrap().push((ep.id(), lead.term()));
    println!("[{}] master of {SHARD} (term {}, load {load})", ep.name(), lead.term());
    // A master carries more load: publish it.
    reg.update(CoordUpdate::default().load(load + 50)).await?;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut n = 0u64;
    loop {
        tokio::select! {
            why = lead.lost() => {
                shared.masters.fetch_sub(1, Ordering::SeqCst);
                println!("[{}] lost the shard: {why}", ep.name());
                follower.abort();
                return Ok(());
            }
            _ = tick.tick() => {
                n += 1;
                let others = ep.query(SERVICE, InstanceFilter::all().tag("shard", SHARD)).await?;
                for i in others.iter().filter_map(|i| i.info.node).filter(|n| *n != ep.id()) {
                    let body = format!("{} {n}", lead.term()).into_bytes();
                    let _ = ep.send(i, CH_TICK, body, p2pcore::Reliability::Reliable);
                }
            }
        }
    }
}

/// Takes ticks (refusing those of an older term) and welcomes clients.
async fn follow(ep: Endpoint, shared: Arc<Shared>) {
    let mut newest = 0u64;
    while let Some(m) = ep.recv().await {
        match m.channel {
            CH_TICK => {
                let term: u64 = String::from_utf8_lossy(&m.bytes)
                    .split(' ')
                    .next()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                if term < newest {
                    shared.stale.fetch_add(1, Ordering::SeqCst);
                } else {
                    newest = term;
                    shared.ticks.fetch_add(1, Ordering::SeqCst);
                }
            }
            CH_HELLO => {
                let _ = send(&ep, m.from, CH_WELCOME, ep.name().as_bytes().to_vec()).await;
            }
            _ => {}
        }
    }
}

/// A client: waits for a master other than `not` (watch_leader), greets it
/// and waits for its welcome; returns it.
async fn reach_master(ep: &Endpoint, not: Option<NodeId>) -> NodeId {
    let mut watch = ep.watch_leader(SHARD);
    loop {
        let leader = timeout(LIMIT, watch.next()).await.expect("a leader in time").expect("watching");
        let Some(l) = leader.filter(|l| Some(l.node) != not) else { continue };
        if send(ep, l.node, CH_HELLO, b"hello".to_vec()).await.is_err() {
            continue;
        }
        loop {
            match timeout(Duration::from_secs(2), ep.recv()).await {
                Ok(Some(m)) if m.channel == CH_WELCOME && m.from == l.node => {
                    println!("[{}] welcomed by {}", ep.name(), String::from_utf8_lossy(&m.bytes));
                    return l.node;
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }
}

/// The whole scenario; `seed` keeps identities apart between runs in one process.
pub(crate) async fn run(seed: u8) -> Report {
    let cluster = Cluster::start(seed);
    let shared = Arc::new(Shared::default());
    let mut servers = Vec::new();
    for (i, load) in [30u32, 10, 20].into_iter().enumerate() {
        let ep = cluster.peer(seed.wrapping_add(10 + i as u8), &format!("game-{i}")).await;
        servers.push((ep.clone(), tokio::spawn(game_server(ep, load, shared.clone()))));
    }
    let clients = [
        cluster.peer(seed.wrapping_add(20), "client-a").await,
        cluster.peer(seed.wrapping_add(21), "client-b").await,
    ];
    let mut report = Report::default();
    let mut master = None;
    for c in &clients {
        master = Some(timeout(LIMIT, reach_master(c, None)).await.expect("master reached"));
    }
    let master = master.expect("a master");
    let mut registry = clients[0].watch_service(SERVICE, InstanceFilter::all());
    while report.listed.0 < 3 {
        report.listed.0 =
            timeout(LIMIT, registry.next()).await.expect("registry in time").expect("watching").len();
    }
    // Let ticks flow to both followers.
    let ticks_before = shared.ticks.load(Ordering::SeqCst);
    let flowing = async {
        while shared.ticks.load(Ordering::SeqCst) < ticks_before + 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    timeout(LIMIT, flowing).await.expect("ticks in time");
    let (ep, task) = servers.iter().find(|(ep, _)| ep.id() == master).expect("one of ours");
    println!("[observer] killing the master {}", ep.name());
    let killed_at = Instant::now();
    // Killed: its endpoint closes without resigning (its session, and so
    // its leadership, then runs out after the 1 s TTL).
    ep.close().await;
    task.abort();
    shared.masters.fetch_sub(1, Ordering::SeqCst);
    report.killed = Some(master);
    let mut reached = Vec::new();
    for c in &clients {
        let c = c.clone();
        reached.push(tokio::spawn(async move {
            let n = reach_master(&c, Some(master)).await;
            (n, killed_at.elapsed())
        }));
    }
    for r in reached {
        let (n, took) = timeout(LIMIT, r).await.expect("new master reached").unwrap();
        report.reached_after.push(n);
        report.failover.push(took);
    }
    // The dead master's registration goes with its session.
    loop {
        let now = timeout(LIMIT, registry.next()).await.expect("registry in time").expect("watching");
        if now.len() == 2 {
            report.listed.1 = now.len();
            break;
        }
    }
    report.elections = shared.elections.lock().unwrap().clone();
    report.max_masters = shared.max_masters.load(Ordering::SeqCst);
    report.ticks = shared.ticks.load(Ordering::SeqCst);
    report.stale_ticks = shared.stale.load(Ordering::SeqCst);
    for c in &clients {
        c.close().await;
    }
    for (ep, task) in servers {
        task.abort();
        ep.close().await;
    }
    report
}

#[allow(dead_code)]
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let r = run(101).await;
    println!("\nelections (node, term): {:?}", r.elections);
    println!(
        "at most {} master(s) at once; {} ticks taken, {} stale refused",
        r.max_masters, r.ticks, r.stale_ticks
    );
    println!("registry: {} instances before the kill, {} after", r.listed.0, r.listed.1);
    for f in &r.failover {
        println!(
            "master failover (kill -> client welcomed by the new master): {:.0} ms",
            f.as_secs_f64() * 1e3
        );
    }
}
