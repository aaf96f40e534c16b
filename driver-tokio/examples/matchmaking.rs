//! Matchmaking on p2pcore's coordination layer, end to end on loopback.
//!
//! * Players push themselves into one global queue (item = their node id,
//!   bound to their session: a player who disconnects leaves the queue).
//! * Three matchmaker peers campaign for the `matchmaker` role; the elected
//!   one pops 4 players at a time (`pop` with a wait), writes the match to
//!   the store in one transaction that requires none of the 4 to be in a
//!   match yet (so no player is ever matched twice, whoever writes), and
//!   tells each player by p2pcore message.
//! * After the first match the leading matchmaker is killed: another is
//!   elected and matches the next waves. A player popped by a matchmaker
//!   that died before writing the match notices (no message, no match
//!   record) and pushes itself again: nobody is lost.
//! * Then every server is stopped: four more players, who can still reach
//!   each other directly, match among themselves and say so.
//!
//! Run: `cargo run -p p2pcore-tokio --example matchmaking`. Key figure:
//! the time from a player's push to its match notification.

#![allow(clippy::print_stdout)]

#[path = "common/mod.rs"]
#[allow(dead_code)]
mod common;

use common::{Cluster, LIMIT, quantile_ms, send};
use p2pcore::{
    Config, CoordError, CoordRequest, Identity, KvCompare, KvRequest, KvResponse, NodeId, QueueItem, Role,
};
use p2pcore_tokio::{Endpoint, EndpointConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::time::timeout;

const QUEUE: &str = "players";
const GROUP: &str = "matchmaker";
/// Channels: match notifications, direct matches.
const CH_MATCH: u8 = 1;
const CH_DIRECT: u8 = 3;
/// A player that heard nothing this long checks its match record and
/// pushes itself again if it has none.
const RECHECK: Duration = Duration::from_secs(3);

fn match_key(item: &str) -> String {
    format!("mm/player/{item}")
}

/// What a run showed.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Every match the store holds: match id → its players' names.
    pub(crate) matches: BTreeMap<String, Vec<String>>,
    /// What each player was told: name → match id.
    pub(crate) told: BTreeMap<String, String>,
    /// Push → notification, per player.
    pub(crate) form_times: Vec<Duration>,
    /// The killed matchmaker and the one elected after it.
    pub(crate) killed: Option<NodeId>,
    /// The matchmaker elected after the kill.
    pub(crate) successor: Option<NodeId>,
    /// Kill → the successor's election.
    pub(crate) failover: Option<Duration>,
    /// Every matchmaker election: (node, term).
    pub(crate) elections: Vec<(NodeId, u64)>,
    /// Group sizes the late players matched in directly, with the servers gone.
    pub(crate) direct: Vec<usize>,
}

/// Elections seen by the matchmakers: (node, term, when).
type Elections = Arc<Mutex<Vec<(NodeId, u64, Instant)>>>;

async fn matchmaker(ep: Endpoint, elections: Elections) -> Result<(), CoordError> {
    let session = ep.session(Duration::from_secs(1)).await?;
    let mut lead = ep.campaign(CoordRequest::campaign(GROUP, session, ep.name())).await?;
    println!("[{}] elected matchmaker (term {})", ep.name(), lead.term());
    elections.lock().unwrap().push((ep.id(), lead.term(), Instant::now()));
    loop {
        let popped = tokio::select! {
            why = lead.lost() => {
                println!("[{}] no longer matchmaker: {why}", ep.name());
                return Ok(());
            }
            r = ep.pop(QUEUE, 4, Some(Duration::from_secs(1))) => r,
        };
        match popped {
            Ok(items) => form_match(&ep, lead.term(), &items).await?,
            Err(CoordError::Timeout) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes the match (only if none of its players is in one yet) and tells
/// the players.
async fn form_match(ep: &Endpoint, term: u64, items: &[QueueItem]) -> Result<(), CoordError> {
    let id = format!("t{term}-r{}", items[0].pushed_at);
    let names: Vec<String> = items.iter().map(|i| String::from_utf8_lossy(&i.payload).into_owned()).collect();
    let mut puts: Vec<KvRequest> =
        items.iter().map(|i| KvRequest::put(match_key(&i.item), id.clone())).collect();
    puts.push(KvRequest::put(format!("mm/match/{id}"), names.join(",")));
    let txn = KvRequest::txn(items.iter().map(|i| KvCompare::missing(match_key(&i.item))), puts, []);
    let answer = ep.kv(txn).await?;
    if !matches!(answer.response, KvResponse::Txn { succeeded: true, .. }) {
        // One of them was matched already (by a matchmaker that died after
        // writing): the others find no record and push themselves again.
        println!("[{}] {id} refused: a player was already matched", ep.name());
        return Ok(());
    }
    println!("[{}] match {id}: {}", ep.name(), names.join(", "));
    for i in items {
        let body = format!("{id} {}", names.join(",")).into_bytes();
        if let Err(e) = send(ep, i.pushed_by, CH_MATCH, body).await {
            // The player re-checks its match record on its own.
            println!("[{}] could not tell {}: {e}", ep.name(), i.pushed_by);
        }
    }
    Ok(())
}

/// A player: queued until told its match (or, with no word for
/// [`RECHECK`], finding its match record or queueing again).
async fn player(ep: Endpoint) -> Result<(String, Duration), CoordError> {
    let session = ep.session(Duration::from_secs(5)).await?;
    let item = ep.id().to_string();
    let push = || CoordRequest::push(QUEUE, item.clone(), ep.name()).session(session);
    let start = Instant::now();
    ep.push(push()).await?;
    loop {
        match timeout(RECHECK, ep.recv()).await {
            Ok(Some(m)) if m.channel == CH_MATCH => {
                let text = String::from_utf8_lossy(&m.bytes).into_owned();
                let id = text.split(' ').next().unwrap_or_default().to_owned();
                return Ok((id, start.elapsed()));
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err(CoordError::Kv(p2pcore::KvError::Unavailable)),
            Err(_) => {
                if let Some(e) = ep.get(match_key(&item)).await? {
                    return Ok((String::from_utf8_lossy(&e.value).into_owned(), start.elapsed()));
                }
                if ep.push(push()).await? {
                    println!("[{}] was popped but never matched: queued again", ep.name());
                }
            }
        }
    }
}

/// A late player once the cluster is unreachable. While servers are
/// lost a peer cannot send to other peers (`SendError::NetworkDown`), so
/// each late player keeps a second, standalone "lobby" endpoint (no
/// bootstrap: it dials by address and is never down) whose id and address
/// it published in the store while the cluster was up. Now it dials the
/// lobbies it knows, matches with those that answer (the lowest id
/// hosts), and says so.
async fn direct_match(lobby: Endpoint, known: Vec<(NodeId, SocketAddr)>) -> usize {
    let mut events = lobby.events();
    for (id, addr) in known.iter().filter(|(id, _)| *id != lobby.id()) {
        let _ = lobby.connect(*id, *addr);
    }
    let linked = |lobby: &Endpoint| -> Vec<NodeId> {
        let links = lobby.links();
        known
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| *id == lobby.id() || links.iter().any(|l| l.id == *id))
            .collect()
    };
    // Dials on loopback answer at once; two seconds is only a cap.
    let give_up = tokio::time::Instant::now() + Duration::from_secs(2);
    while linked(&lobby).len() < known.len() && tokio::time::Instant::now() < give_up {
        let _ = tokio::time::timeout_at(give_up, events.recv()).await;
    }
    let reachable = linked(&lobby);
    let host = reachable.iter().min().copied().unwrap_or(lobby.id());
    if host == lobby.id() {
        for to in reachable.iter().filter(|id| **id != lobby.id()) {
            let _ = send(&lobby, *to, CH_DIRECT, format!("{}", reachable.len()).into_bytes()).await;
        }
        println!(
            "[{}] cluster unreachable: hosting a direct match of {} players",
            lobby.name(),
            reachable.len()
        );
        return reachable.len();
    }
    loop {
        match timeout(LIMIT, lobby.recv()).await {
            Ok(Some(m)) if m.channel == CH_DIRECT => {
                let n = String::from_utf8_lossy(&m.bytes).parse().unwrap_or(0);
                println!(
                    "[{}] cluster unreachable: matched directly with {} peers",
                    lobby.name(),
                    n.max(1) - 1
                );
                return n;
            }
            Ok(Some(_)) => {}
            _ => return 0,
        }
    }
}

/// A standalone endpoint on loopback (no servers: it dials by address).
async fn lobby_endpoint(seed: u8, name: &str) -> Endpoint {
    let config = Config::new(Identity::from_seed(Role::Peer, [seed; 32]), name, [seed; 32]);
    Endpoint::bind(EndpointConfig::new("127.0.0.1:0".parse().unwrap()), config).await.expect("lobby bind")
}

/// The whole scenario; `seed` keeps identities apart between runs in one
/// process.
pub(crate) async fn run(seed: u8) -> Report {
    let mut cluster = Cluster::start(seed);
    let elections: Elections = Arc::default();
    let mut makers = Vec::new();
    for i in 0..3u8 {
        let ep = cluster.peer(seed.wrapping_add(10 + i), &format!("matchmaker-{i}")).await;
        let task = tokio::spawn(matchmaker(ep.clone(), elections.clone()));
        makers.push((ep, task));
    }
    let observer = cluster.peer(seed.wrapping_add(9), "observer").await;
    let mut report = Report::default();
    let mut players = Vec::new();
    for wave in 0..3u8 {
        let mut tasks = Vec::new();
        for i in 0..4u8 {
            let ep =
                cluster.peer(seed.wrapping_add(20 + wave * 4 + i), &format!("player-{}", wave * 4 + i)).await;
            tasks.push((ep.name().to_owned(), tokio::spawn(player(ep.clone()))));
            players.push(ep);
        }
        for (name, t) in tasks {
            let (id, took) = timeout(LIMIT * 2, t).await.expect("matched in time").unwrap().expect("player");
            report.told.insert(name, id);
            report.form_times.push(took);
        }
        if wave == 0 {
            // Kill the leading matchmaker mid-run.
            let leader = observer.leader(GROUP).await.expect("leader read").expect("a matchmaker leads");
            let (ep, task) = makers.iter().find(|(ep, _)| ep.id() == leader.node).expect("one of ours");
            println!("[observer] killing matchmaker {} ({})", ep.name(), leader.node);
            let killed_at = Instant::now();
            // Killed: the endpoint closes without resigning (its session,
            // and so its leadership, then runs out after the 1 s TTL).
            ep.close().await;
            task.abort();
            report.killed = Some(leader.node);
            let mut watch = observer.watch_leader(GROUP);
            loop {
                let now = timeout(LIMIT, watch.next()).await.expect("new leader in time").expect("watching");
                if let Some(l) = now
                    && l.node != leader.node
                {
                    report.successor = Some(l.node);
                    report.failover = Some(killed_at.elapsed());
                    break;
                }
            }
        }
    }
    report.elections = elections.lock().unwrap().iter().map(|(n, t, _)| (*n, *t)).collect();
    // Every match, from the store.
    let all = observer.kv(KvRequest::get_prefix("mm/match/")).await.expect("matches read");
    if let KvResponse::Get { entries, .. } = all.response {
        for e in entries {
            let id = String::from_utf8_lossy(&e.key["mm/match/".len()..]).into_owned();
            let names = String::from_utf8_lossy(&e.value).split(',').map(str::to_owned).collect();
            report.matches.insert(id, names);
        }
    }
    // Four late players, each with a lobby endpoint published in the
    // store; then the cluster goes away.
    let mut late = Vec::new();
    for i in 0..4u8 {
        let ep = cluster.peer(seed.wrapping_add(40 + i), &format!("late-{i}")).await;
        let lobby = lobby_endpoint(seed.wrapping_add(50 + i), &format!("late-{i}")).await;
        ep.put(format!("lobby/{}", ep.name()), format!("{} {}", lobby.id(), lobby.local_addr()))
            .await
            .expect("publish");
        late.push((ep, lobby));
    }
    let mut known = Vec::new();
    if let KvResponse::Get { entries, .. } =
        late[0].0.kv(KvRequest::get_prefix("lobby/")).await.expect("read").response
    {
        for e in entries {
            let text = String::from_utf8_lossy(&e.value).into_owned();
            let mut it = text.split(' ');
            let id = it.next().and_then(|s| s.parse::<NodeId>().ok());
            let addr = it.next().and_then(|s| s.parse::<SocketAddr>().ok());
            if let (Some(id), Some(addr)) = (id, addr) {
                known.push((id, addr));
            }
        }
    }
    println!("[observer] stopping every server");
    cluster.stop();
    let mut direct = Vec::new();
    for (ep, lobby) in &late {
        let (ep, lobby, known) = (ep.clone(), lobby.clone(), known.clone());
        direct.push(tokio::spawn(async move {
            let mut up = ep.network_watch();
            // The servers said goodbye: no server is connected any more.
            let _ = timeout(LIMIT, up.wait_for(|up| !*up)).await;
            let queued =
                timeout(Duration::from_secs(2), ep.push(CoordRequest::push(QUEUE, ep.id().to_string(), "x")));
            match queued.await {
                Ok(Ok(_)) => 0,
                _ => direct_match(lobby, known).await,
            }
        }));
    }
    for t in direct {
        report.direct.push(timeout(LIMIT, t).await.expect("direct match in time").unwrap());
    }
    for (ep, lobby) in &late {
        ep.close().await;
        lobby.close().await;
    }
    for ep in players.iter().chain(std::iter::once(&observer)) {
        ep.close().await;
    }
    for (ep, task) in makers {
        task.abort();
        ep.close().await;
    }
    report
}

#[allow(dead_code)]
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut r = run(1).await;
    println!("\n{} matches formed:", r.matches.len());
    for (id, names) in &r.matches {
        println!("  {id}: {}", names.join(", "));
    }
    if let Some(f) = r.failover {
        println!("matchmaker failover (kill -> new matchmaker elected): {:.0} ms", f.as_secs_f64() * 1e3);
    }
    println!("direct matches without the cluster: {:?}", r.direct);
    println!(
        "time to form a match (push -> told): p50 {:.1} ms, max {:.1} ms over {} players",
        quantile_ms(&mut r.form_times, 0.5),
        quantile_ms(&mut r.form_times, 1.0),
        r.form_times.len()
    );
}
