//! The coordination layer from async code over real loopback sockets
//! (three mio servers, tokio peers): the three examples' scenarios with
//! their properties checked, and the async API's guarantees one by one.
//! Every wait is on an event, a future or a watch, capped by a generous
//! timeout that only a real failure hits.

// Each example includes the shared cluster helper itself (so it runs on
// its own); here they and this file load it once each.
#![allow(clippy::duplicate_mod)]

#[path = "../examples/backend.rs"]
#[allow(dead_code)]
mod backend;
#[path = "../examples/common/mod.rs"]
#[allow(dead_code)]
mod common;
#[path = "../examples/game_cluster.rs"]
#[allow(dead_code)]
mod game_cluster;
#[path = "../examples/matchmaking.rs"]
#[allow(dead_code)]
mod matchmaking;

use common::{Cluster, LIMIT};
use p2pcore::{CoordError, CoordRequest, InstanceFilter, InstanceInfo};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matchmaking_matches_everyone_once_across_a_matchmaker_failover() {
    let r = timeout(LIMIT * 2, matchmaking::run(61)).await.expect("scenario in time");
    assert_eq!(r.told.len(), 12, "every player was matched: {:?}", r.told);
    assert_eq!(r.matches.len(), 3, "three matches of four: {:?}", r.matches);
    let mut seen = BTreeSet::new();
    for (id, names) in &r.matches {
        assert_eq!(names.len(), 4, "match {id} has four players");
        for n in names {
            assert!(seen.insert(n.clone()), "{n} is in two matches");
        }
    }
    for (name, id) in &r.told {
        assert!(
            r.matches.get(id).is_some_and(|m| m.contains(name)),
            "{name} was told a match that holds them"
        );
    }
    assert!(
        r.killed.is_some() && r.successor.is_some() && r.killed != r.successor,
        "another matchmaker took over"
    );
    assert_eq!(r.direct, vec![4, 4, 4, 4], "without the cluster, the late players matched directly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn game_cluster_has_one_master_at_a_time_and_clients_follow_the_failover() {
    let r = timeout(LIMIT * 2, game_cluster::run(71)).await.expect("scenario in time");
    assert_eq!(r.max_masters, 1, "never two masters at once");
    assert!(r.elections.len() >= 2, "a new master after the kill: {:?}", r.elections);
    assert!(r.elections.windows(2).all(|w| w[0].1 < w[1].1), "terms only grow: {:?}", r.elections);
    let killed = r.killed.expect("a master was killed");
    let successor = r.elections.last().expect("elected").0;
    assert_ne!(successor, killed);
    assert_eq!(r.reached_after, vec![successor, successor], "both clients reached the new master");
    assert!(r.ticks > 0, "ticks reached the followers");
    assert_eq!(r.stale_ticks, 0, "no follower took a tick of an old term after a newer one");
    assert_eq!(r.listed, (3, 2), "the dead master left the registry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_operations_answer_correctly() {
    let checks = timeout(LIMIT * 2, backend::run(81)).await.expect("scenario in time");
    assert_eq!(checks.len(), 11);
    let wrong: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.what).collect();
    assert!(wrong.is_empty(), "wrong answers: {wrong:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_contention_gives_increasing_tokens_and_no_overlap() {
    let cluster = Cluster::start(91);
    let held = Arc::new(AtomicBool::new(false));
    let grants: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut tasks = Vec::new();
    for i in 0..3u8 {
        let ep = cluster.peer(94 + i, &format!("p{i}")).await;
        let (held, grants) = (held.clone(), grants.clone());
        tasks.push(tokio::spawn(async move {
            let session = ep.session(Duration::from_secs(5)).await.expect("session");
            for n in 0..5 {
                let lock = ep.lock("resource", session).await.expect("lock");
                assert!(!held.swap(true, Ordering::SeqCst), "two holders at once");
                grants.lock().unwrap().push(lock.token());
                // A write under the lock, fenced by its token.
                ep.put(format!("resource/{}", ep.name()), format!("{n} {}", lock.token()))
                    .await
                    .expect("put");
                held.store(false, Ordering::SeqCst);
                lock.unlock().await.expect("unlock");
            }
            ep.close().await;
        }));
    }
    for t in tasks {
        timeout(LIMIT, t).await.expect("in time").expect("no panic");
    }
    let grants = grants.lock().unwrap().clone();
    assert_eq!(grants.len(), 15);
    assert!(grants.windows(2).all(|w| w[0] < w[1]), "tokens strictly increase in grant order: {grants:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_lock_times_out_while_held_and_succeeds_once_free() {
    let cluster = Cluster::start(101);
    let (a, b) = (cluster.peer(104, "a").await, cluster.peer(105, "b").await);
    let (sa, sb) =
        (a.session(Duration::from_secs(5)).await.unwrap(), b.session(Duration::from_secs(5)).await.unwrap());
    let held = a.lock("room", sa).await.expect("a locks");
    let tried = timeout(LIMIT, b.try_lock("room", sb, Duration::from_millis(200))).await.expect("answered");
    assert_eq!(tried.unwrap_err(), CoordError::Timeout);
    let first = held.token();
    held.unlock().await.expect("unlock");
    let got = timeout(LIMIT, b.try_lock("room", sb, Duration::from_secs(5)))
        .await
        .expect("answered")
        .expect("b locks");
    assert!(got.token() > first, "a later grant has a greater token");
    got.unlock().await.expect("unlock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_watch_follows_a_resignation() {
    let cluster = Cluster::start(111);
    let (a, b, o) =
        (cluster.peer(114, "a").await, cluster.peer(115, "b").await, cluster.peer(116, "o").await);
    let (sa, sb) =
        (a.session(Duration::from_secs(5)).await.unwrap(), b.session(Duration::from_secs(5)).await.unwrap());
    let lead_a = timeout(LIMIT, a.campaign(CoordRequest::campaign("g", sa, "a")))
        .await
        .expect("in time")
        .expect("a leads");
    let mut watch = o.watch_leader("g");
    let first = timeout(LIMIT, watch.next()).await.expect("in time").expect("watching").expect("a leader");
    assert_eq!((first.node, first.term), (a.id(), lead_a.term()));
    let b_campaign = tokio::spawn({
        let b = b.clone();
        async move { b.campaign(CoordRequest::campaign("g", sb, "b")).await }
    });
    lead_a.resign().await.expect("resign");
    let next = loop {
        if let Some(l) = timeout(LIMIT, watch.next()).await.expect("in time").expect("watching") {
            break l;
        }
    };
    assert_eq!(next.node, b.id(), "b leads after a resigned");
    assert!(next.term > first.term, "a new term");
    let lead_b = timeout(LIMIT, b_campaign).await.expect("in time").unwrap().expect("b elected");
    assert_eq!(lead_b.term(), next.term);
    assert_eq!(o.leader("g").await.expect("read").map(|l| l.node), Some(b.id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop_takes_all_or_none() {
    let cluster = Cluster::start(121);
    let (a, b) = (cluster.peer(124, "a").await, cluster.peer(125, "b").await);
    for i in 0..3 {
        assert!(a.push(CoordRequest::push("q", format!("i{i}"), "x")).await.expect("push"));
    }
    assert!(!a.push(CoordRequest::push("q", "i0", "again")).await.expect("push"), "already queued");
    assert_eq!(b.pop("q", 4, None).await.unwrap_err(), CoordError::NotEnough { len: 3 });
    assert_eq!(b.pop("q", 4, Some(Duration::from_millis(200))).await.unwrap_err(), CoordError::Timeout);
    let mut len = b.watch_queue("q");
    assert_eq!(timeout(LIMIT, len.next()).await.expect("in time"), Some(3), "nothing was taken");
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { b.pop("q", 4, Some(LIMIT)).await }
    });
    assert!(a.push(CoordRequest::push("q", "i3", "x").priority(5)).await.expect("push"));
    let items = timeout(LIMIT, waiting).await.expect("in time").unwrap().expect("popped");
    let order: Vec<&str> = items.iter().map(|i| i.item.as_str()).collect();
    assert_eq!(order, ["i3", "i0", "i1", "i2"], "priority first, then push order");
    loop {
        if timeout(LIMIT, len.next()).await.expect("in time") == Some(0) {
            break;
        }
    }
    // Two pops race for two items: one takes both, the other none.
    a.push(CoordRequest::push("q", "x", "")).await.unwrap();
    a.push(CoordRequest::push("q", "y", "")).await.unwrap();
    let (ra, rb) = tokio::join!(a.pop("q", 2, None), b.pop("q", 2, None));
    let taken: Vec<usize> = [&ra, &rb].iter().map(|r| r.as_ref().map_or(0, Vec::len)).collect();
    assert_eq!(taken.iter().sum::<usize>(), 2, "{ra:?} {rb:?}");
    assert!(taken.contains(&0) && taken.contains(&2));
    assert!(b.remove("q", "x").await.is_ok_and(|r| !r), "nothing left to remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_is_lost_when_its_session_closes() {
    let cluster = Cluster::start(131);
    let (a, o) = (cluster.peer(134, "a").await, cluster.peer(135, "o").await);
    let session = a.session(Duration::from_secs(5)).await.unwrap();
    let mut reg = a.register("svc", "a-1", InstanceInfo::new(1, 10), session).await.expect("registered");
    let listed = o.query("svc", InstanceFilter::all()).await.expect("query");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].info.node, Some(a.id()));
    reg.update(p2pcore::CoordUpdate::default().load(9)).await.expect("update");
    assert_eq!(o.query("svc", InstanceFilter::all().max_load(5)).await.expect("query").len(), 0);
    a.session_close(session).await.expect("close");
    assert_eq!(timeout(LIMIT, reg.lost()).await.expect("in time"), CoordError::SessionEnded);
    assert!(o.query("svc", InstanceFilter::all()).await.expect("query").is_empty());
    assert!(matches!(reg.deregister().await, Err(CoordError::SessionEnded)));
}
