//! The cluster's replicated store, used by peers: answers through any
//! server, transactions, exactly-once retries, and a linearizable history
//! under leader crashes, partitions and message loss (checked by
//! `p2pcore_tests::history`).

mod common;

use p2pcore::{
    CompareOp, Event, KvCompare, KvError, KvEventKind, KvGuarantee, KvOptions, KvRequest, KvResponse,
};
use p2pcore_tests::history::{self, KvOp, KvRet, Record};
use p2pcore_tests::sim::{HostId, LinkParams, Sim};
use std::collections::BTreeMap;
use std::time::Duration;

/// The answers `h` received so far: request id → result.
fn answers(sim: &mut Sim, h: HostId) -> BTreeMap<u64, Result<p2pcore::KvAnswer, KvError>> {
    common::events(sim, h)
        .into_iter()
        .filter_map(|e| match e {
            Event::KvDone { id, result } => Some((id, result)),
            _ => None,
        })
        .collect()
}

/// Sends `req` from `h` and runs until it is answered.
fn ask(sim: &mut Sim, h: HostId, req: KvRequest) -> Result<p2pcore::KvAnswer, KvError> {
    ask_with(sim, h, req, KvOptions::default())
}

fn ask_with(sim: &mut Sim, h: HostId, req: KvRequest, opts: KvOptions) -> Result<p2pcore::KvAnswer, KvError> {
    let id = sim.with_node(h, |n, now| n.kv_with(now, req, opts)).unwrap()?;
    for _ in 0..2000 {
        sim.run_for(Duration::from_millis(5));
        if let Some(r) = answers(sim, h).remove(&id) {
            return r;
        }
    }
    panic!("request {id} never answered");
}

fn value(a: &p2pcore::KvAnswer) -> Option<Vec<u8>> {
    match &a.response {
        KvResponse::Get { entries, .. } => entries.first().map(|e| e.value.clone()),
        other => panic!("not a read: {other:?}"),
    }
}

#[test]
fn peers_write_and_read_through_the_cluster() {
    let (mut sim, _servers, peers) = common::mesh(1, 2, LinkParams::default());
    sim.run_for(Duration::from_secs(3));
    let (a, b) = (peers[0], peers[1]);
    let put = ask(&mut sim, a, KvRequest::put("room/1", "alice")).expect("put");
    assert_eq!((put.response.clone(), put.revision, put.voters), (KvResponse::Put, 1, 3));
    // Another peer reads it, linearizably, through its own servers.
    let got = ask(&mut sim, b, KvRequest::get("room/1")).expect("get");
    assert_eq!(
        (value(&got), got.guarantee, got.revision),
        (Some(b"alice".to_vec()), KvGuarantee::Linearizable, 1)
    );
    // Create-if-absent from both peers at once: exactly one wins.
    let create = |v: &str| {
        KvRequest::txn([KvCompare::missing("lock")], [KvRequest::put("lock", v)], [KvRequest::get("lock")])
    };
    let ia = sim.with_node(a, |n, now| n.kv(now, create("a"))).unwrap().unwrap();
    let ib = sim.with_node(b, |n, now| n.kv(now, create("b"))).unwrap().unwrap();
    sim.run_for(Duration::from_secs(1));
    let ra = answers(&mut sim, a).remove(&ia).unwrap().unwrap();
    let rb = answers(&mut sim, b).remove(&ib).unwrap().unwrap();
    let won = |r: &p2pcore::KvAnswer| matches!(r.response, KvResponse::Txn { succeeded: true, .. });
    assert!(won(&ra) != won(&rb), "{ra:?} {rb:?}");
    // Prefix reads with a limit, and a read at a revision from the nearest server.
    for i in 0..5 {
        ask(&mut sim, a, KvRequest::put(format!("players/{i}"), "x")).unwrap();
    }
    let page = ask(&mut sim, b, KvRequest::get_prefix("players/").limit(3)).unwrap();
    let KvResponse::Get { entries, more } = &page.response else { panic!() };
    assert_eq!((entries.len(), *more), (3, true));
    let opts = KvOptions::default().with_at_least(page.revision);
    let near = ask_with(&mut sim, a, KvRequest::get_prefix("players/"), opts).unwrap();
    assert_eq!(near.guarantee, KvGuarantee::AtLeastRevision);
    assert!(near.revision >= page.revision);
    // Deletes and compares on versions.
    let del = ask(&mut sim, a, KvRequest::delete_prefix("players/")).unwrap();
    assert_eq!(del.response, KvResponse::Delete { deleted: 5 });
    let cas = KvRequest::txn(
        [KvCompare::version("room/1", CompareOp::Equal, 1)],
        [KvRequest::put("room/1", "bob")],
        [],
    );
    assert!(matches!(ask(&mut sim, b, cas).unwrap().response, KvResponse::Txn { succeeded: true, .. }));
    // Bounds are typed errors before anything is sent; servers refuse nothing valid.
    let big = sim.with_node(a, |n, now| n.kv(now, KvRequest::put("k", vec![0u8; 40_000]))).unwrap();
    assert!(matches!(big, Err(KvError::TooLarge { what: "value", .. })));
    let server = sim.with_node(_servers[0], |n, now| n.kv(now, KvRequest::get("k"))).unwrap();
    assert_eq!(server, Err(KvError::NotAPeer));
}

#[test]
fn requests_survive_the_leaders_crash_and_fail_cleanly_without_a_quorum() {
    let (mut sim, servers, peers) = common::mesh(2, 1, LinkParams::default());
    sim.run_for(Duration::from_secs(3));
    let p = peers[0];
    ask(&mut sim, p, KvRequest::put("a", "1")).unwrap();
    let master = sim.agreed_master().expect("a master");
    let leader = servers.iter().copied().find(|s| sim.host(*s).id() == master).unwrap();
    // The write is sent, then the leader dies before anyone can answer.
    let id = sim.with_node(p, |n, now| n.kv(now, KvRequest::put("a", "2"))).unwrap().unwrap();
    sim.kill(leader);
    let mut got = None;
    for _ in 0..2000 {
        sim.run_for(Duration::from_millis(5));
        if let Some(r) = answers(&mut sim, p).remove(&id) {
            got = Some(r);
            break;
        }
    }
    assert!(got.expect("answered").is_ok(), "the write went through a new leader");
    let read = ask(&mut sim, p, KvRequest::get("a")).unwrap();
    assert_eq!(value(&read), Some(b"2".to_vec()));
    // A second server down: no quorum, so no answer — an error, never a wrong one.
    let other = servers.iter().copied().find(|s| *s != leader).unwrap();
    sim.kill(other);
    let opts = KvOptions::default().with_timeout(Duration::from_secs(2));
    assert_eq!(ask_with(&mut sim, p, KvRequest::get("a"), opts), Err(KvError::Unavailable));
    // (Raft state is kept in memory only: with a majority restarted at
    // once the group re-forms empty — durable Raft is what lifts that.)
}

#[test]
fn a_watch_reports_every_change_once_in_order_across_the_loss_of_its_server() {
    let (mut sim, servers, peers) = common::mesh(3, 2, LinkParams::default());
    sim.run_for(Duration::from_secs(3));
    let (writer, watcher) = (peers[0], peers[1]);
    let w = sim.with_node(watcher, |n, now| n.watch(now, "room/", 0)).unwrap().unwrap();
    sim.run_for(Duration::from_millis(200));
    let mut seen: Vec<(u64, Vec<u8>, KvEventKind)> = Vec::new();
    let mut collect = |sim: &mut Sim| {
        for e in common::events(sim, watcher) {
            match e {
                Event::KvWatch { id, events } if id == w => {
                    seen.extend(events.into_iter().map(|e| (e.entry.mod_revision, e.entry.key, e.kind)))
                }
                Event::KvWatchEnded { id, error } => panic!("watch {id} ended: {error}"),
                _ => {}
            }
        }
        seen.clone()
    };
    for i in 0..10 {
        ask(&mut sim, writer, KvRequest::put(format!("room/{i}"), "x")).unwrap();
        ask(&mut sim, writer, KvRequest::put(format!("other/{i}"), "x")).unwrap();
    }
    ask(&mut sim, writer, KvRequest::delete("room/0")).unwrap();
    // The watch's server dies (the watcher registers at its first server
    // by ID); writes go on while it moves to another.
    let first = servers.iter().copied().min_by_key(|s| sim.host(*s).id()).unwrap();
    sim.kill(first);
    for i in 10..20 {
        ask(&mut sim, writer, KvRequest::put(format!("room/{i}"), "y")).unwrap();
    }
    sim.run_for(Duration::from_secs(1));
    let seen = collect(&mut sim);
    let keys: Vec<String> = seen.iter().map(|(_, k, _)| String::from_utf8(k.clone()).unwrap()).collect();
    let mut want: Vec<String> = (0..10).map(|i| format!("room/{i}")).collect();
    want.push("room/0".into());
    want.extend((10..20).map(|i| format!("room/{i}")));
    assert_eq!(keys, want, "every change under the prefix, once, in order");
    assert!(seen.windows(2).all(|p| p[0].0 < p[1].0), "revisions increase");
    assert_eq!(seen[10].2, KvEventKind::Delete);
    // Unwatched: nothing more.
    assert!(sim.with_node(watcher, |n, now| n.unwatch(now, w)).unwrap());
    ask(&mut sim, writer, KvRequest::put("room/x", "z")).unwrap();
    sim.run_for(Duration::from_millis(500));
    assert!(!common::events(&mut sim, watcher).iter().any(|e| matches!(e, Event::KvWatch { .. })));
}

/// [`common::mesh`] with servers keeping Raft state on simulated disks
/// (writes durable after `latency`; a crash loses what was not).
fn durable_mesh(seed: u64, peers: usize, latency: Duration) -> (Sim, Vec<HostId>, Vec<HostId>) {
    use p2pcore_tests::sim::SimConfig;
    let cfg = SimConfig { seed, raft_disk: true, disk_latency: latency, ..SimConfig::default() };
    let mut sim = Sim::new(cfg);
    let (servers, peers) = sim.add_mesh(peers);
    (sim, servers, peers)
}

#[test]
fn the_store_survives_the_whole_cluster_restarting_from_disk() {
    for latency in [Duration::ZERO, Duration::from_millis(2)] {
        let (mut sim, servers, peers) = durable_mesh(6, 1, latency);
        sim.run_for(Duration::from_secs(3));
        let p = peers[0];
        for i in 0..50 {
            ask(&mut sim, p, KvRequest::put(format!("k{i}"), format!("v{i}"))).unwrap();
        }
        let epoch = sim.node(servers[0]).unwrap().raft_view().unwrap().epoch;
        let before = ask(&mut sim, p, KvRequest::get_prefix("k")).unwrap();
        // Every server crashes at once and comes back from its disk.
        for &s in &servers {
            sim.kill(s);
        }
        sim.run_for(Duration::from_secs(1));
        for &s in &servers {
            sim.restart(s);
        }
        sim.run_for(Duration::from_secs(6));
        let after = ask(&mut sim, p, KvRequest::get_prefix("k")).unwrap();
        assert_eq!(after.response, before.response, "latency {latency:?}: the same 50 keys");
        assert_eq!(after.revision, before.revision);
        // The same group (Raft identity resumed), not a new one.
        assert_eq!(sim.node(servers[0]).unwrap().raft_view().unwrap().epoch, epoch);
        // And it goes on taking writes.
        let put = ask(&mut sim, p, KvRequest::put("k-after", "x")).unwrap();
        assert_eq!(put.revision, before.revision + 1);
    }
}

/// Opens a session with `ttl` from `h` and binds `key` to it.
fn session_key(sim: &mut Sim, h: HostId, ttl: Duration, key: &str) -> u64 {
    let opened = ask(sim, h, KvRequest::session_open(ttl)).expect("session");
    let KvResponse::SessionOpened { session } = opened.response else { panic!("{opened:?}") };
    ask(sim, h, KvRequest::put(key, "here").with_session(session)).expect("bound put");
    session
}

/// Runs until `key` is gone (as `reader` sees it); returns how long that took.
fn until_gone(sim: &mut Sim, reader: HostId, key: &str, limit: Duration) -> Option<Duration> {
    let start = sim.elapsed();
    while sim.elapsed() - start < limit {
        sim.run_for(Duration::from_millis(250));
        let got = ask(sim, reader, KvRequest::get(key)).expect("read");
        if value(&got).is_none() {
            return Some(sim.elapsed() - start);
        }
    }
    None
}

#[test]
fn a_session_lives_while_its_peer_is_connected_anywhere_and_ends_a_ttl_after() {
    let (mut sim, servers, peers) = common::mesh(4, 3, LinkParams::default());
    sim.run_for(Duration::from_secs(3));
    // `other` reads (and so consumes its events); `watcher` only watches.
    let (owner, other, watcher) = (peers[0], peers[1], peers[2]);
    let ttl = Duration::from_secs(2);
    session_key(&mut sim, owner, ttl, "svc/owner");
    let w = sim.with_node(watcher, |n, now| n.watch(now, "svc/", 0)).unwrap().unwrap();
    // Connected: it stays, with no keep-alive of its own.
    sim.run_for(Duration::from_secs(10));
    assert!(value(&ask(&mut sim, other, KvRequest::get("svc/owner")).unwrap()).is_some());
    // Cut off from the leader but still connected to another server: it stays.
    let master = sim.agreed_master().expect("a master");
    let leader = servers.iter().copied().find(|s| sim.host(*s).id() == master).unwrap();
    let (ln, on) = (sim.host(leader).name.clone(), sim.host(owner).name.clone());
    sim.patch_link(&p2pcore_tests::sim::LinkPatch { loss: Some(1.0), ..Default::default() }, Some((ln, on)));
    sim.run_for(Duration::from_secs(8));
    assert!(
        value(&ask(&mut sim, other, KvRequest::get("svc/owner")).unwrap()).is_some(),
        "held by another server"
    );
    // Gone from every server: the key goes a TTL after the servers notice
    // (QUIC's idle timeout), and the watch sees it go.
    sim.kill(owner);
    let took = until_gone(&mut sim, other, "svc/owner", Duration::from_secs(15)).expect("expired");
    assert!(took >= ttl && took <= ttl + Duration::from_secs(5), "{took:?}");
    let deleted = common::events(&mut sim, watcher).into_iter().any(|e| match e {
        Event::KvWatch { id, events } => {
            id == w && events.iter().any(|e| e.kind == KvEventKind::Expired && e.entry.key == b"svc/owner")
        }
        _ => false,
    });
    assert!(deleted, "the watch saw the key expire");
}

#[test]
fn a_new_leader_grants_every_session_a_fresh_ttl() {
    let (mut sim, servers, peers) = common::mesh(5, 2, LinkParams::default());
    sim.run_for(Duration::from_secs(3));
    let (owner, reader) = (peers[0], peers[1]);
    let ttl = Duration::from_secs(6);
    session_key(&mut sim, owner, ttl, "lock");
    sim.kill(owner);
    // 3 s into the owner's absence (TTL 6 s), the leader dies too.
    sim.run_for(Duration::from_secs(3) + Duration::from_millis(2500));
    let master = sim.agreed_master().expect("a master");
    let leader = servers.iter().copied().find(|s| sim.host(*s).id() == master).unwrap();
    sim.kill(leader);
    let took = until_gone(&mut sim, reader, "lock", Duration::from_secs(20)).expect("expired");
    // Never early: the new leader counts a whole TTL from its election.
    assert!(took >= ttl, "expired {took:?} after the failover, before a full TTL");
}

/// One seed of the linearizability sweep: three servers, three peers, each
/// peer issuing one request at a time on four keys for 12 s while the
/// scenario crashes and restarts the leader, partitions a server (the
/// leader, or another) away and back, and loses messages.
fn linearizable(seed: u64) -> Result<(), String> {
    let loss = if seed.is_multiple_of(3) { 0.02 } else { 0.0 };
    // Even seeds: servers keep Raft state on disks (2 ms to make a write
    // durable; a crash loses what was not), and may lose a majority at once.
    let durable = seed.is_multiple_of(2);
    let (mut sim, servers, peers) = if durable {
        let (mut sim, s, p) = durable_mesh(seed, 3, Duration::from_millis(2));
        sim.patch_link(&p2pcore_tests::sim::LinkPatch { loss: Some(loss), ..Default::default() }, None);
        (sim, s, p)
    } else {
        common::mesh(seed, 3, LinkParams { loss, ..LinkParams::default() })
    };
    sim.run_for(Duration::from_secs(3));
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut history: Vec<Record> = Vec::new();
    // Per peer: the request in flight (id, index into history).
    let mut inflight: Vec<Option<(u64, usize)>> = vec![None; peers.len()];
    let mut counter = 0u64;
    let start = sim.elapsed();
    let ms = |sim: &Sim| (sim.elapsed() - start).as_micros() as u64;
    let fault_at = Duration::from_millis(2000 + next(3000));
    let heal_at = fault_at + Duration::from_millis(1500 + next(3000));
    let kind = if durable { next(4) } else { next(3) };
    let mut victim = None;
    let mut second = None;
    let mut healed = false;
    while sim.elapsed() - start < Duration::from_secs(12) {
        let t = sim.elapsed() - start;
        if victim.is_none() && t >= fault_at {
            let master = sim.agreed_master();
            let leader = servers.iter().copied().find(|s| Some(sim.host(*s).id()) == master);
            let v = match kind {
                0 | 1 => leader.unwrap_or(servers[0]),
                _ => servers[next(3) as usize],
            };
            if kind == 3 {
                // A majority at once: the leader and another server.
                let other = servers.iter().copied().find(|s| *s != v).unwrap_or(v);
                sim.kill(v);
                sim.kill(other);
                second = Some(other);
            } else if kind == 0 {
                sim.kill(v);
            } else {
                // One peer stays with the cut-off server: it keeps asking a
                // server that may still believe it leads.
                let side = [sim.host(v).name.clone(), sim.host(peers[0]).name.clone()];
                let rest: Vec<String> =
                    sim.hosts().iter().filter(|h| !side.contains(&h.name)).map(|h| h.name.clone()).collect();
                sim.partition(&[side.to_vec(), rest]);
            }
            victim = Some(v);
        }
        if let Some(v) = victim
            && t >= heal_at
            && !healed
        {
            if kind == 0 || kind == 3 {
                sim.restart(v);
                if let Some(o) = second {
                    sim.restart(o);
                }
            } else {
                sim.heal();
            }
            healed = true;
        }
        for (i, &p) in peers.iter().enumerate() {
            if inflight[i].is_some() {
                continue;
            }
            let key = format!("k{}", next(6));
            counter += 1;
            let v = format!("{i}-{counter}");
            let (op, req) = match next(4) {
                0 => (KvOp::Get, KvRequest::get(key.clone())),
                1 => (KvOp::Put(v.clone().into()), KvRequest::put(key.clone(), v.clone())),
                2 => (KvOp::Delete, KvRequest::delete(key.clone())),
                _ => {
                    // Compare with what this peer last saw, or with missing.
                    let expect = history
                        .iter()
                        .rev()
                        .find_map(|r| match (&r.returned, r.key == key.as_bytes()) {
                            (Some((_, KvRet::Value(v))), true) => Some(v.clone()),
                            _ => None,
                        })
                        .flatten();
                    let cmp = match &expect {
                        Some(x) => KvCompare::value(key.clone(), CompareOp::Equal, x.clone()),
                        None => KvCompare::missing(key.clone()),
                    };
                    let req = KvRequest::txn([cmp], [KvRequest::put(key.clone(), v.clone())], []);
                    (KvOp::Cas { expect, new: v.clone().into() }, req)
                }
            };
            let opts = KvOptions::default().with_timeout(Duration::from_secs(3));
            let Some(Ok(id)) = sim.with_node(p, |n, now| n.kv_with(now, req, opts)) else {
                return Err(format!("peer {i} refused a request"));
            };
            history.push(Record { key: key.into_bytes(), op, invoked: ms(&sim), returned: None });
            inflight[i] = Some((id, history.len() - 1));
        }
        sim.run_for(Duration::from_millis(1 + next(20)));
        for (i, &p) in peers.iter().enumerate() {
            for (id, result) in answers(&mut sim, p) {
                let Some((want, at)) = inflight[i] else { return Err(format!("unexpected answer {id}")) };
                if id != want {
                    return Err(format!("peer {i}: answer {id}, waiting for {want}"));
                }
                inflight[i] = None;
                let ret = match result {
                    Err(KvError::Unavailable) => continue, // unknown outcome
                    Err(e) => return Err(format!("peer {i}: {e}")),
                    Ok(a) => match a.response {
                        KvResponse::Get { entries, .. } => {
                            KvRet::Value(entries.first().map(|e| e.value.clone()))
                        }
                        KvResponse::Txn { succeeded, .. } => KvRet::Swapped(succeeded),
                        _ => KvRet::Done,
                    },
                };
                history[at].returned = Some((ms(&sim), ret));
            }
        }
    }
    let completed = history.iter().filter(|r| r.returned.is_some()).count();
    if completed < history.len() / 2 {
        return Err(format!("only {completed} of {} requests answered", history.len()));
    }
    if std::env::var_os("P2PCORE_STORE_STATS").is_some() {
        let unknown = history.len() - completed;
        eprintln!(
            "seed {seed}: kind {kind}, {} requests, {completed} answered, {unknown} unknown",
            history.len()
        );
    }
    history::check(&history)
}

#[test]
fn the_history_is_linearizable_under_crashes_partitions_and_loss() {
    let seeds: u64 = std::env::var("P2PCORE_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let failures: Vec<String> = (1..=seeds)
        .filter_map(|seed| linearizable(seed).err().map(|e| format!("seed {seed}: {e}")))
        .collect();
    assert!(failures.is_empty(), "{} of {seeds} seeds failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
#[ignore = "debugging aid: SEED=n cargo test -p p2pcore-tests --test store debug -- --ignored"]
fn debug() {
    common::debug_seed(linearizable);
}
