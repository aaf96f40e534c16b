//! A server's Raft state on disk (`raft.redb` in its data directory), over
//! real loopback sockets: three servers and a peer; the peer stores 20
//! keys; every server is killed at once (dropped without closing, as a
//! crash) and started again from its data directory on its address; the
//! peer, still running, reads the same 20 keys at the same revision, and
//! the servers are the same Raft group as before. With `raft_fsync` on and
//! off.

mod common;

use common::*;
use p2pcore::{Event, KvAnswer, KvError, KvRequest, KvResponse, NodeId};
use p2pcore_mio::HostConfig;
use std::net::SocketAddr;
use std::time::Instant;

const KEYS: usize = 20;

fn bind(addr: &str, fsync: bool) -> HostConfig {
    let mut c = HostConfig::new(addr.parse().unwrap());
    c.raft_fsync = fsync;
    c
}

/// Every server in `servers` names the same Master, and it is one of them.
fn agreed_master(servers: &[Runner]) -> Option<NodeId> {
    let seen: Vec<Option<NodeId>> = servers.iter().map(|s| s.with(|h| h.node().master().master)).collect();
    let first = seen[0]?;
    (seen.iter().all(|m| *m == Some(first)) && servers.iter().any(|s| s.id == first)).then_some(first)
}

fn live_servers(r: &Runner) -> usize {
    r.with(|h| h.node().servers().iter().filter(|s| s.live && s.id != h.id()).count())
}

/// Sends `req` from the peer and waits for its answer.
fn ask(peer: &Runner, req: KvRequest) -> Result<KvAnswer, KvError> {
    let id = peer.with(move |h| h.node_mut().kv(Instant::now(), req)).expect("request accepted");
    let mut answer = None;
    wait_for("a store answer", || {
        answer = peer.events().into_iter().find_map(|e| match e {
            Event::KvDone { id: i, result } if i == id => Some(result),
            _ => None,
        });
        answer.is_some()
    });
    answer.unwrap()
}

/// Asks until an answer is not `Unavailable` (the cluster may still be
/// electing or the peer reconnecting); each attempt is bounded by the
/// request's own timeout, the whole by [`LIMIT`].
fn ask_until_available(peer: &Runner, req: KvRequest) -> KvAnswer {
    let start = Instant::now();
    loop {
        match ask(peer, req.clone()) {
            Ok(a) => return a,
            Err(KvError::Unavailable) if start.elapsed() < LIMIT => {}
            Err(e) => panic!("store request failed: {e:?}"),
        }
    }
}

fn epochs(servers: &[Runner]) -> Vec<Option<u64>> {
    servers.iter().map(|s| s.with(|h| h.node().raft_view().and_then(|v| v.epoch))).collect()
}

#[test]
fn the_store_survives_every_server_restarting_from_its_data_directory() {
    restart_all(true);
}

/// `raft_fsync = false` keeps everything across a clean stop as well; the
/// kill here drops the hosts, which syncs the store as it closes.
#[test]
fn the_same_without_fsync() {
    restart_all(false);
}

fn restart_all(fsync: bool) {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let s1 = Runner::start(durable_server(dirs[0].path(), "s1", bind("127.0.0.1:0", fsync), &[]));
    let s2 = Runner::start(durable_server(dirs[1].path(), "s2", bind("127.0.0.1:0", fsync), &[s1.addr]));
    let s3 = Runner::start(durable_server(dirs[2].path(), "s3", bind("127.0.0.1:0", fsync), &[s1.addr]));
    let addrs: Vec<SocketAddr> = vec![s1.addr, s2.addr, s3.addr];
    let ids: Vec<NodeId> = vec![s1.id, s2.id, s3.id];
    let servers = vec![s1, s2, s3];
    wait_for("a full mesh of servers", || servers.iter().all(|s| live_servers(s) == 2));
    wait_for("an agreed Master", || agreed_master(&servers).is_some());

    let peer = Runner::start(peer("p", 40 + u8::from(fsync), &addrs));
    wait_for("the peer on every server", || {
        peer.with(|h| h.node().network_up() && h.node().servers().iter().filter(|s| s.live).count() == 3)
    });

    // 20 puts in flight at once, each answered.
    let sent: Vec<u64> = peer.with(|h| {
        (0..KEYS)
            .map(|i| {
                h.node_mut().kv(Instant::now(), KvRequest::put(format!("k{i:02}"), format!("v{i}"))).unwrap()
            })
            .collect()
    });
    wait_for("20 answered puts", || {
        let events = peer.events();
        sent.iter().all(|id| events.iter().any(|e| matches!(e, Event::KvDone { id: i, .. } if i == id)))
    });
    for e in peer.events() {
        if let Event::KvDone { id, result } = e {
            assert!(result.is_ok(), "put {id}: {result:?}");
        }
    }
    let before = ask_until_available(&peer, KvRequest::get_prefix("k"));
    let KvResponse::Get { entries, .. } = &before.response else { panic!("{before:?}") };
    assert_eq!(entries.len(), KEYS);
    let epoch = epochs(&servers);
    assert!(epoch[0].is_some() && epoch.iter().all(|e| *e == epoch[0]), "one group: {epoch:?}");
    for s in &servers {
        let stats = s.with(|h| h.host_stats());
        assert!(stats.raft_writes > 0 && stats.raft_write_errors == 0, "{stats:?}");
        assert!(s.with(|h| h.raft_store_path().is_some_and(|p| p.exists())));
    }

    // Every server crashes at once.
    for s in servers {
        let id = s.id;
        s.kill();
        release_dir(id);
    }

    // They come back from their data directories, on their addresses.
    let servers: Vec<Runner> = (0..3)
        .map(|i| {
            let others: Vec<SocketAddr> = addrs.iter().copied().filter(|a| *a != addrs[i]).collect();
            Runner::start(durable_server(
                dirs[i].path(),
                &format!("s{}", i + 1),
                bind(&addrs[i].to_string(), fsync),
                &others,
            ))
        })
        .collect();
    for (s, id) in servers.iter().zip(&ids) {
        assert_eq!(s.id, *id, "the node ID survives the restart");
    }
    wait_for("the restarted servers in a full mesh", || servers.iter().all(|s| live_servers(s) == 2));
    wait_for("an agreed Master after the restart", || agreed_master(&servers).is_some());

    let after = ask_until_available(&peer, KvRequest::get_prefix("k"));
    assert_eq!(after.response, before.response, "the same 20 keys and values");
    assert_eq!(after.revision, before.revision, "at the same revision");
    assert_eq!(epochs(&servers), epoch, "the same Raft group, resumed, not a new one");

    // And it goes on taking writes.
    let put = ask_until_available(&peer, KvRequest::put("k-after", "x"));
    assert_eq!(put.revision, before.revision + 1);
}
