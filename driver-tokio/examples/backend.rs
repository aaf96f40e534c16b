//! What a game backend usually keeps in Redis, on p2pcore's replicated
//! store and coordination layer instead, end to end on loopback:
//!
//! | Redis                         | p2pcore                                   |
//! |-------------------------------|-------------------------------------------|
//! | HSET/HGETALL service registry | `register` / `query` (health = session)   |
//! | SET/GET player → instance     | `put` / `get`                             |
//! | ZADD/ZPOPMIN matchmaking      | `push` / `pop` (all or none)              |
//! | SET NX PX room lock + DEL     | `lock` / `unlock` (fencing token)         |
//! | SETEX/EXISTS token blacklist  | `put` with the expiry in the value        |
//!
//! Run: `cargo run -p p2pcore-tokio --example backend`. Each operation is
//! checked and timed once.

#![allow(clippy::print_stdout)]

#[path = "common/mod.rs"]
#[allow(dead_code)]
mod common;

use common::{Cluster, LIMIT};
use p2pcore::{CompareOp, CoordRequest, InstanceFilter, InstanceInfo, KvCompare, KvRequest, KvResponse};
use p2pcore_tokio::Endpoint;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::time::timeout;

/// One checked operation: what, whether it answered correctly, how long.
#[derive(Debug, Clone)]
pub(crate) struct Check {
    /// The operation.
    pub(crate) what: &'static str,
    /// Whether its answer was the expected one.
    pub(crate) ok: bool,
    /// How long it took.
    pub(crate) took: Duration,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Blacklists `token` for `ttl`. The store has no per-key TTL apart from
/// sessions (a key bound to a session lives as long as its owner's
/// session, not for a fixed time), so the expiry is stored in the value,
/// readers check it, and whoever holds the `janitor` election deletes
/// expired entries ([`sweep_blacklist`]).
pub(crate) async fn blacklist(ep: &Endpoint, token: &str, ttl: Duration) -> Result<(), p2pcore::KvError> {
    let expires = now_ms() + ttl.as_millis() as u64;
    ep.put(format!("blacklist/{token}"), expires.to_string()).await.map(|_| ())
}

/// Whether `token` is blacklisted now (present and not expired).
pub(crate) async fn is_blacklisted(ep: &Endpoint, token: &str) -> Result<bool, p2pcore::KvError> {
    Ok(ep
        .get(format!("blacklist/{token}"))
        .await?
        .and_then(|e| String::from_utf8_lossy(&e.value).parse::<u64>().ok())
        .is_some_and(|expires| expires > now_ms()))
}

/// The janitor's sweep: deletes every expired blacklist entry, each only
/// if it was not rewritten since it was read (a compare on its
/// mod revision). Returns how many went.
pub(crate) async fn sweep_blacklist(ep: &Endpoint) -> Result<usize, p2pcore::KvError> {
    let KvResponse::Get { entries, .. } = ep.kv(KvRequest::get_prefix("blacklist/")).await?.response else {
        return Ok(0);
    };
    let mut swept = 0;
    for e in entries {
        let expired = String::from_utf8_lossy(&e.value).parse::<u64>().is_ok_and(|t| t <= now_ms());
        if expired {
            let cmp = KvCompare::mod_revision(e.key.clone(), CompareOp::Equal, e.mod_revision);
            let txn = KvRequest::txn([cmp], [KvRequest::delete(e.key)], []);
            if matches!(ep.kv(txn).await?.response, KvResponse::Txn { succeeded: true, .. }) {
                swept += 1;
            }
        }
    }
    Ok(swept)
}

/// The whole scenario: two backend instances and a gateway; every
/// operation checked. `seed` keeps identities apart between runs.
pub(crate) async fn run(seed: u8) -> Vec<Check> {
    let cluster = Cluster::start(seed);
    let a = cluster.peer(seed.wrapping_add(10), "backend-a").await;
    let b = cluster.peer(seed.wrapping_add(11), "backend-b").await;
    let gw = cluster.peer(seed.wrapping_add(12), "gateway").await;
    let mut checks = Vec::new();
    let mut check = |what: &'static str, ok: bool, start: Instant| {
        let took = start.elapsed();
        println!("{:<44} {:>8.2} ms  {}", what, took.as_secs_f64() * 1e3, if ok { "ok" } else { "WRONG" });
        checks.push(Check { what, ok, took });
    };
    let sa = a.session(Duration::from_secs(1)).await.expect("session a");
    let sb = b.session(Duration::from_secs(1)).await.expect("session b");

    // Service registry with health.
    let t = Instant::now();
    let reg_a = a.register("rooms", "backend-a", InstanceInfo::new(3, 100).tag("region", "eu"), sa).await;
    let reg_b = b.register("rooms", "backend-b", InstanceInfo::new(7, 100).tag("region", "eu"), sb).await;
    check("registry: register two instances", reg_a.is_ok() && reg_b.is_ok(), t);
    let t = Instant::now();
    let found = gw.query("rooms", InstanceFilter::all().tag("region", "eu").has_room()).await.expect("query");
    let names: Vec<&str> = found.iter().map(|i| i.instance.as_str()).collect();
    check("registry: query, least loaded first", names == ["backend-a", "backend-b"], t);

    // Player -> instance map.
    let t = Instant::now();
    let put = gw.put("player/alice", "backend-a").await;
    check("map: put player -> instance", put.is_ok(), t);
    let t = Instant::now();
    let got = gw.get("player/alice").await.expect("get").map(|e| e.value);
    check("map: get player -> instance", got.as_deref() == Some(&b"backend-a"[..]), t);

    // Matchmaking queue.
    let t = Instant::now();
    let mut pushed = true;
    for p in ["p1", "p2", "p3", "p4"] {
        pushed &= gw.push(CoordRequest::push("mm", p, p)).await.expect("push");
    }
    check("queue: push 4 players", pushed, t);
    let t = Instant::now();
    let items = a.pop("mm", 4, None).await.expect("pop");
    let order: Vec<&str> = items.iter().map(|i| i.item.as_str()).collect();
    check("queue: pop 4 (in push order)", order == ["p1", "p2", "p3", "p4"], t);

    // Room-creation lock: two instances race to create room 42.
    let t = Instant::now();
    let (la, lb) = (a.clone(), b.clone());
    let create = |ep: Endpoint, s: u64| async move {
        let lock = ep.lock("room/42", s).await.expect("lock");
        let token = lock.token();
        let created = ep.get("room/42").await.expect("read room").is_none();
        if created {
            ep.put("room/42", format!("{} token {token}", ep.name())).await.expect("create room");
        }
        lock.unlock().await.expect("unlock");
        (created, token)
    };
    let (ra, rb) = tokio::join!(create(la, sa), create(lb, sb));
    check("lock: exactly one creates the room", ra.0 != rb.0 && ra.1 != rb.1, t);

    // Token blacklist with an expiry kept in the value.
    let t = Instant::now();
    blacklist(&gw, "tok-live", Duration::from_secs(3600)).await.expect("blacklist");
    blacklist(&gw, "tok-old", Duration::ZERO).await.expect("blacklist");
    check("blacklist: add two tokens", true, t);
    let t = Instant::now();
    let live = is_blacklisted(&gw, "tok-live").await.expect("check");
    let old = is_blacklisted(&gw, "tok-old").await.expect("check");
    check("blacklist: live listed, expired not", live && !old, t);
    let t = Instant::now();
    let janitor = a.campaign(CoordRequest::campaign("janitor", sa, "backend-a")).await.expect("janitor");
    let swept = sweep_blacklist(&a).await.expect("sweep");
    janitor.resign().await.expect("resign");
    let gone = gw.get("blacklist/tok-old").await.expect("get").is_none();
    check("blacklist: janitor sweeps expired entries", swept == 1 && gone, t);

    // Health: backend-b goes away; its registration goes with its session.
    let t = Instant::now();
    b.session_close(sb).await.expect("session close");
    let mut watch = gw.watch_service("rooms", InstanceFilter::all());
    let mut left = Vec::new();
    while let Ok(Some(now)) = timeout(LIMIT, watch.next()).await {
        left = now.into_iter().map(|i| i.instance).collect::<Vec<_>>();
        if left.len() == 1 {
            break;
        }
    }
    check("registry: a dead instance drops out", left == ["backend-a"], t);
    drop((reg_a, reg_b));
    for ep in [a, b, gw] {
        ep.close().await;
    }
    checks
}

#[allow(dead_code)]
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let checks = run(201).await;
    let wrong: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.what).collect();
    let total: Duration = checks.iter().map(|c| c.took).sum();
    println!("\n{} operations in {:.1} ms, wrong: {wrong:?}", checks.len(), total.as_secs_f64() * 1e3);
    if !wrong.is_empty() {
        std::process::exit(1);
    }
}
