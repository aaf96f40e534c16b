//! The tokio driver over real loopback sockets: three servers on the mio
//! host (each on its own thread) and tokio peers in one runtime. Every wait
//! is on an event or a watcher, capped by a generous timeout that only a
//! real failure hits. The store: puts, reads, a transaction and a watch
//! across two peers; a server's requests refused.

use p2pcore::{
    Config, Identity, KvAnswer, KvCompare, KvError, KvEventKind, KvRequest, KvResponse, MasterBasis, NodeId,
    Reliability, Role,
};
use p2pcore_mio::{Handle, Host, HostConfig};
use p2pcore_tokio::{CloseReason, Endpoint, EndpointConfig, Error};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Three servers introduced to one another, each on a mio thread.
fn servers() -> Vec<(Handle, SocketAddr)> {
    let mut out: Vec<(Handle, SocketAddr)> = Vec::new();
    for i in 0..3u8 {
        let mut config =
            Config::new(Identity::from_seed(Role::Server, [100 + i; 32]), format!("s{i}"), [i; 32]);
        config.bootstrap = out.iter().map(|(_, a)| *a).collect();
        let host = Host::bind(HostConfig::new(loopback()), config).expect("server bind");
        let addr = host.local_addr();
        let (handle, _events) = host.spawn().expect("server thread");
        out.push((handle, addr));
    }
    out
}

async fn peer(
    n: u8,
    servers: &[SocketAddr],
    tweak: impl FnOnce(&mut EndpointConfig, &mut Config),
) -> Endpoint {
    let mut config = Config::new(Identity::from_seed(Role::Peer, [n; 32]), format!("p{n}"), [n; 32]);
    config.bootstrap = servers.to_vec();
    let mut ep = EndpointConfig::new(loopback());
    tweak(&mut ep, &mut config);
    Endpoint::bind(ep, config).await.expect("peer bind")
}

/// Waits until `ep` lists every one of `ids` in its directory.
async fn sees(ep: &Endpoint, ids: &[NodeId]) {
    let mut events = ep.events();
    while !ids.iter().all(|id| ep.peers().iter().any(|p| p.id == *id)) {
        let _ = timeout(Duration::from_millis(200), events.recv()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_exchange_messages_by_id_exactly_once_and_in_order() {
    let servers = servers();
    let addrs: Vec<SocketAddr> = servers.iter().map(|(_, a)| *a).collect();
    let base = tokio::runtime::Handle::current().metrics().num_alive_tasks();
    let mut peers = Vec::new();
    for n in 1..=4 {
        peers.push(peer(n, &addrs, |_, _| {}).await);
    }
    assert_eq!(
        tokio::runtime::Handle::current().metrics().num_alive_tasks() - base,
        4,
        "one task per endpoint"
    );
    for p in &peers {
        timeout(LIMIT, p.online()).await.expect("online in time").expect("online");
    }
    let ids: Vec<NodeId> = peers.iter().map(Endpoint::id).collect();
    for p in &peers {
        timeout(LIMIT, sees(p, &ids[..].iter().copied().filter(|i| *i != p.id()).collect::<Vec<_>>()))
            .await
            .expect("directory in time");
    }
    // Peer 0 takes channel 2 of peer 1 through a Peer handle: those
    // messages must come there, and only there.
    let from_1 = peers[0].peer(ids[1]);
    // The first receive routes the channel (nothing has been sent yet).
    assert_eq!(from_1.try_recv(2), None);
    let tasks_before = tokio::runtime::Handle::current().metrics().num_alive_tasks();
    const N: u64 = 40;
    for (i, p) in peers.iter().enumerate() {
        for (j, to) in ids.iter().enumerate() {
            if i == j {
                continue;
            }
            for seq in 0..N {
                for channel in 0..3u8 {
                    let body = format!("{i}>{j} ch{channel} #{seq}");
                    let got = p.send_wait(*to, channel, body.into_bytes(), Reliability::Reliable).await;
                    assert_eq!(got.expect("send"), Some(seq), "sequence numbers per destination and channel");
                }
            }
        }
    }
    assert_eq!(
        tokio::runtime::Handle::current().metrics().num_alive_tasks(),
        tasks_before,
        "a Peer handle spawns no task"
    );
    for (j, p) in peers.iter().enumerate() {
        let mut next: BTreeMap<(NodeId, u8), u64> = BTreeMap::new();
        let routed = if j == 0 { N } else { 0 };
        let want = 3 * 3 * N - routed;
        for _ in 0..want {
            let m = timeout(LIMIT, p.recv()).await.expect("message in time").expect("endpoint alive");
            assert!(
                !(j == 0 && m.from == ids[1] && m.channel == 2),
                "routed channel reached the merged queue"
            );
            let i = ids.iter().position(|id| *id == m.from).expect("a known sender");
            let seq = next.entry((m.from, m.channel)).or_default();
            assert_eq!(m.bytes, format!("{i}>{j} ch{} #{}", m.channel, *seq).into_bytes(), "in order, once");
            *seq += 1;
        }
        if j == 0 {
            for seq in 0..N {
                let m = timeout(LIMIT, from_1.recv(2)).await.expect("routed in time").expect("alive");
                assert_eq!(m.bytes, format!("1>0 ch2 #{seq}").into_bytes());
            }
        }
        assert_eq!(p.try_recv(), None, "nothing twice");
    }
    drop(from_1);
    for p in &peers {
        assert!(matches!(timeout(LIMIT, p.close()).await.expect("close in time"), CloseReason::Closed));
    }
    for (h, _) in servers {
        h.close().expect("server close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_wait_waits_for_a_slow_receiver_and_loses_nothing() {
    let servers = servers();
    let addrs: Vec<SocketAddr> = servers.iter().map(|(_, a)| *a).collect();
    let sender = peer(11, &addrs, |_, c| c.send_buffer_limit = 64 * 1024).await;
    let receiver = peer(12, &addrs, |e, _| e.inbox_per_peer = 32 * 1024).await;
    timeout(LIMIT, sender.online()).await.unwrap().unwrap();
    timeout(LIMIT, receiver.online()).await.unwrap().unwrap();
    timeout(LIMIT, sees(&sender, &[receiver.id()])).await.unwrap();
    const COUNT: usize = 400;
    let body = vec![7u8; 4096];
    let to = receiver.id();
    let sending = {
        let sender = sender.clone();
        let body = body.clone();
        tokio::spawn(async move {
            for _ in 0..COUNT {
                sender.send_wait(to, 0, body.clone(), Reliability::Reliable).await.expect("send_wait");
            }
        })
    };
    // The receiver does not read until the sender is held back: its inbox
    // fills, it pauses the sender, the sender's buffer fills.
    let mut events = receiver.events();
    while receiver.driver_stats().receive_pauses == 0 {
        let _ = timeout(Duration::from_millis(100), events.recv()).await;
    }
    assert!(!sending.is_finished(), "1.6 MB cannot fit in 64 KiB + 32 KiB of buffers");
    assert!(receiver.pending_bytes() <= 32 * 1024 + 64 * 1024, "the inbox stays bounded");
    for _ in 0..COUNT {
        let m = timeout(LIMIT, receiver.recv()).await.expect("in time").expect("alive");
        assert_eq!(&m.bytes[..], &body[..]);
    }
    timeout(LIMIT, sending).await.expect("sender done in time").unwrap();
    assert!(sender.stats().bytes_out > (COUNT * body.len()) as u64);
    sender.close().await;
    receiver.close().await;
    for (h, _) in servers {
        h.close().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_failover_paths_end_and_drop_does_not_hang() {
    let servers = servers();
    let addrs: Vec<SocketAddr> = servers.iter().map(|(_, a)| *a).collect();
    let a = peer(21, &addrs, |_, _| {}).await;
    let b = peer(22, &addrs, |_, _| {}).await;
    timeout(LIMIT, a.online()).await.unwrap().unwrap();
    timeout(LIMIT, b.online()).await.unwrap().unwrap();
    timeout(LIMIT, sees(&a, &[b.id()])).await.unwrap();

    // The Master watcher: a Raft Master, then another one after it closes.
    let mut master = a.master_watch();
    let first = timeout(LIMIT, master.wait_for(|m| m.master.is_some())).await.unwrap().unwrap().clone();
    let old = first.master.unwrap();
    assert!(first.name.is_some(), "the watcher names the Master");
    let (handle, _) = servers.iter().find(|(h, _)| h.id() == old).expect("the Master is one of ours");
    handle.close().unwrap();
    let next = timeout(LIMIT, master.wait_for(|m| m.master.is_some_and(|m| m != old)))
        .await
        .expect("failover in time")
        .expect("endpoint alive")
        .clone();
    assert!(next.term > first.term || next.epoch != first.epoch, "{first:?} then {next:?}");

    // A path watcher on b ends when b leaves.
    a.send_wait(b.id(), 0, &b"hi"[..], Reliability::Reliable).await.unwrap();
    let mut path = a.peer(b.id()).path_watch();
    assert!(!path.is_ended());
    let closed = timeout(LIMIT, b.close()).await.expect("close in time");
    assert!(matches!(closed, CloseReason::Closed));
    while timeout(LIMIT, path.next()).await.expect("path watcher ends in time").is_some() {}
    assert!(path.is_ended());

    // Dropping the last handle closes in the background: the event stream
    // (which does not keep the endpoint alive) ends, and nothing hangs.
    let mut events = a.events();
    drop(master);
    drop(a);
    while timeout(LIMIT, events.recv()).await.expect("stream ends in time").is_some() {}
    for (h, _) in servers {
        let _ = h.close();
    }
}

#[test]
fn bind_outside_a_runtime_is_an_error_not_a_panic() {
    let config = Config::new(Identity::from_seed(Role::Peer, [9; 32]), "outside", [9; 32]);
    let fut = Endpoint::bind(EndpointConfig::new(loopback()), config);
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Err(e @ Error::NoRuntime)) => {
            assert!(e.to_string().contains("tokio runtime"), "{e}");
        }
        other => panic!("expected NoRuntime, got {:?}", other.map(|r| r.map(|_| ()))),
    }
}

#[tokio::test]
async fn a_lone_server_is_online_at_once_and_closes_quickly() {
    let config = Config::new(Identity::from_seed(Role::Server, [31; 32]), "solo", [31; 32]);
    let ep = Endpoint::bind(EndpointConfig::new(loopback()), config).await.unwrap();
    timeout(LIMIT, ep.online()).await.unwrap().unwrap();
    assert_eq!(ep.master().master, Some(ep.id()), "one server: itself");
    let events = ep.events();
    assert!(matches!(ep.close().await, CloseReason::Closed));
    assert!(matches!(ep.closed().await, CloseReason::Closed));
    assert!(ep.send(ep.id(), 0, &b"x"[..], Reliability::Reliable).is_err());
    drop(events);
}

/// A server on a mio thread of its own that can vanish without a word: its
/// loop stops and its socket closes, nobody is told (a crash, a pulled
/// cable).
struct SilentServer {
    addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    wake: p2pcore_mio::Wakeup,
    thread: std::thread::JoinHandle<()>,
}

impl SilentServer {
    fn start(seed: u8) -> Self {
        let config = Config::new(Identity::from_seed(Role::Server, [seed; 32]), "silent", [seed; 32]);
        let mut host = Host::bind(HostConfig::new(loopback()), config).expect("server bind");
        let addr = host.local_addr();
        let wake = host.wakeup();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut events = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Acquire) {
                host.service(Duration::from_secs(10)).expect("server loop");
                host.drain_events(&mut events);
                events.clear();
            }
            // Dropped without closing: no goodbye goes out.
        });
        Self { addr, stop, wake, thread }
    }

    fn vanish(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.wake.wake().unwrap();
        self.thread.join().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_is_bounded_while_the_remotes_are_unreachable() {
    let server = SilentServer::start(41);
    let a = peer(42, &[server.addr], |ep, _| ep.host.close_timeout = Duration::from_millis(500)).await;
    timeout(LIMIT, a.online()).await.unwrap().unwrap();
    server.vanish();
    // Nobody will answer the goodbye: close gives up at its bound.
    let start = std::time::Instant::now();
    let reason = timeout(LIMIT, a.close()).await.expect("close returns");
    assert!(matches!(reason, CloseReason::Closed), "{reason:?}");
    let took = start.elapsed();
    assert!(took < Duration::from_millis(500) + Duration::from_secs(2), "close took {took:?}");
    assert!(matches!(timeout(LIMIT, a.closed()).await.expect("closed resolves"), CloseReason::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_without_close_tells_the_remote_and_blocks_nothing() {
    let servers = servers();
    let addrs: Vec<SocketAddr> = servers.iter().map(|(_, a)| *a).collect();
    let a = peer(43, &addrs, |_, _| {}).await;
    let b = peer(44, &addrs, |_, _| {}).await;
    timeout(LIMIT, a.online()).await.unwrap().unwrap();
    timeout(LIMIT, b.online()).await.unwrap().unwrap();
    timeout(LIMIT, sees(&b, &[a.id()])).await.unwrap();
    // A connection between the two.
    b.send_wait(a.id(), 0, &b"hello"[..], Reliability::Reliable).await.unwrap();
    let m = timeout(LIMIT, a.recv()).await.unwrap().unwrap();
    assert_eq!(m.from, b.id());
    let b_id = b.id();
    let mut events = a.events();
    // The last handle of b goes: its driver says goodbye in the background,
    // and a hears it (a close, not a timeout) while this task runs on.
    drop(b);
    let reason = loop {
        match timeout(LIMIT, events.recv()).await.expect("a hears b leave").expect("a alive") {
            Ok(p2pcore::Event::Disconnected { id, reason }) if id == b_id => break reason,
            _ => {}
        }
    };
    // Told by b itself, or by the servers that b left: not a timeout.
    assert!(
        matches!(
            reason,
            p2pcore::DisconnectReason::ClosedByRemote { .. } | p2pcore::DisconnectReason::PeerOffline
        ),
        "{reason:?}"
    );
    a.close().await;
    for (h, _) in servers {
        let _ = h.close();
    }
}

/// Waits until `ep` follows a Raft Master: the servers' group is formed,
/// so the store has a leader and a quorum.
async fn store_ready(ep: &Endpoint) {
    let mut master = ep.master_watch();
    timeout(LIMIT, master.wait_for(|m| m.basis == Some(MasterBasis::Raft)))
        .await
        .expect("a Raft Master in time")
        .expect("endpoint alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_answers_one_peer_what_another_wrote_and_watches_see_it() {
    let servers = servers();
    let addrs: Vec<SocketAddr> = servers.iter().map(|(_, a)| *a).collect();
    let a = peer(51, &addrs, |_, _| {}).await;
    let b = peer(52, &addrs, |_, _| {}).await;
    for p in [&a, &b] {
        timeout(LIMIT, p.online()).await.unwrap().unwrap();
        store_ready(p).await;
    }

    // A put from one peer, read by the other (linearizable by default).
    let first = timeout(LIMIT, a.put("room/1", "alice")).await.unwrap().expect("put");
    let got = timeout(LIMIT, b.get("room/1")).await.unwrap().expect("get").expect("the key exists");
    assert_eq!((got.value.as_slice(), got.mod_revision, got.version), (&b"alice"[..], first, 1));
    assert_eq!(timeout(LIMIT, b.get("room/none")).await.unwrap(), Ok(None));

    // A watch from the revision after that put sees the next changes under
    // its prefix only, in order.
    let mut watch = b.watch("room/", first + 1).expect("watch");
    let second = timeout(LIMIT, a.put("room/2", "bob")).await.unwrap().unwrap();
    timeout(LIMIT, a.put("other/x", "not watched")).await.unwrap().unwrap();
    assert!(timeout(LIMIT, a.delete("room/1")).await.unwrap().unwrap(), "room/1 existed");
    assert!(!timeout(LIMIT, a.delete("room/1")).await.unwrap().unwrap(), "and is gone");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let events = timeout(LIMIT, watch.next()).await.expect("changes in time").expect("alive").unwrap();
        seen.extend(events.into_iter().map(|e| (e.kind, e.entry.key, e.entry.value, e.entry.mod_revision)));
    }
    assert_eq!(seen[0], (KvEventKind::Put, b"room/2".to_vec(), b"bob".to_vec(), second));
    assert_eq!((seen[1].0, seen[1].1.as_slice()), (KvEventKind::Delete, &b"room/1"[..]));
    assert_eq!(seen[1].3, second + 2, "the put of other/x came between, unseen");

    // Create-if-absent from both peers at once: exactly one wins, and the
    // loser's failure branch reads the winner's value.
    let create = |who: &'static str| {
        KvRequest::txn([KvCompare::missing("lock")], [KvRequest::put("lock", who)], [KvRequest::get("lock")])
    };
    let (ra, rb) = tokio::join!(a.kv(create("a")), b.kv(create("b")));
    let (ra, rb) = (ra.expect("txn a"), rb.expect("txn b"));
    let won = |r: &KvAnswer| matches!(r.response, KvResponse::Txn { succeeded: true, .. });
    assert!(won(&ra) != won(&rb), "{ra:?} {rb:?}");
    let (winner, loser) = if won(&ra) { ("a", &rb) } else { ("b", &ra) };
    let KvResponse::Txn { responses, .. } = &loser.response else { panic!("{loser:?}") };
    let KvResponse::Get { entries, .. } = &responses[0] else { panic!("{responses:?}") };
    assert_eq!(entries[0].value, winner.as_bytes());

    // A prefix read with a limit, through the general request.
    for i in 0..4 {
        timeout(LIMIT, b.put(format!("players/{i}"), "x")).await.unwrap().unwrap();
    }
    let page = timeout(LIMIT, a.kv(KvRequest::get_prefix("players/").limit(3))).await.unwrap().unwrap();
    let KvResponse::Get { entries, more } = &page.response else { panic!("{page:?}") };
    let keys: Vec<&[u8]> = entries.iter().map(|e| e.key.as_slice()).collect();
    assert_eq!((keys, *more), (vec![&b"players/0"[..], b"players/1", b"players/2"], true));

    // Bounds are typed errors at once; an unwatched watch ends.
    let big = a.put("k", vec![0u8; p2pcore::MAX_VALUE_LEN + 1]).await;
    assert!(matches!(big, Err(KvError::TooLarge { what: "value", .. })), "{big:?}");
    assert_eq!(a.put("", "v").await.map_err(|e| matches!(e, KvError::Invalid(_))), Err(true));
    watch.unwatch();
    assert!(watch.next().await.is_none() && watch.is_ended());

    a.close().await;
    b.close().await;
    for (h, _) in servers {
        let _ = h.close();
    }
}

#[tokio::test]
async fn store_requests_from_a_server_are_refused() {
    let config = Config::new(Identity::from_seed(Role::Server, [53; 32]), "srv", [53; 32]);
    let ep = Endpoint::bind(EndpointConfig::new(loopback()), config).await.unwrap();
    assert_eq!(ep.put("k", "v").await, Err(KvError::NotAPeer));
    assert_eq!(ep.get("k").await, Err(KvError::NotAPeer));
    assert_eq!(ep.kv(KvRequest::delete_prefix("")).await.map(|_| ()), Err(KvError::NotAPeer));
    let refused = ep.watch("k", 0);
    assert!(matches!(refused, Err(KvError::NotAPeer)), "{refused:?}");
    assert!(refused.unwrap_err().to_string().contains("only a peer"));
    ep.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_mode_over_real_sockets() {
    // Peers in lookup mode get no directory: online once a server took
    // them; a name lookup finds one; a send by ID to a peer never looked
    // up reaches it, and its reply comes back the way the message came.
    let servers = servers();
    let addrs: Vec<SocketAddr> = servers.iter().map(|(_, a)| *a).collect();
    let lookup = |_: &mut EndpointConfig, c: &mut Config| {
        c.peer.directory = p2pcore::DirectoryMode::Lookup;
        c.peer.connect = p2pcore::ConnectPolicy::OnDemand;
    };
    let a = peer(31, &addrs, lookup).await;
    let b = peer(32, &addrs, lookup).await;
    for p in [&a, &b] {
        timeout(LIMIT, p.online()).await.expect("online in time").expect("online");
        assert!(p.peers().is_empty(), "no directory without a lookup");
    }
    // By name: p32 is found once every server took it.
    let found = timeout(LIMIT, async {
        loop {
            let found = a.lookup(p2pcore::LookupKey::Name("p32".into())).await.expect("lookup");
            if found.first().is_some_and(|p| p.via.len() == 3) {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("found in time");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, b.id());
    // b never looked a up: a's message, then b's reply.
    a.send_wait(b.id(), 0, &b"ping"[..], Reliability::Reliable).await.expect("send");
    let m = timeout(LIMIT, b.recv()).await.expect("in time").expect("alive");
    assert_eq!((m.from, &m.bytes[..]), (a.id(), &b"ping"[..]));
    b.send_wait(a.id(), 0, &b"pong"[..], Reliability::Reliable).await.expect("reply");
    let m = timeout(LIMIT, a.recv()).await.expect("in time").expect("alive");
    assert_eq!((m.from, &m.bytes[..]), (b.id(), &b"pong"[..]));
    // An ID nobody lists: the send is accepted and reported failed.
    let ghost = Identity::from_seed(Role::Peer, [99; 32]).id();
    let mut events = a.events();
    a.send(ghost, 0, &b"anyone?"[..], Reliability::Reliable).expect("accepted while looked up");
    let failed = timeout(LIMIT, async {
        loop {
            if let Some(Ok(p2pcore::Event::SendFailed { to, reason, .. })) = events.recv().await
                && to == ghost
            {
                return reason;
            }
        }
    })
    .await
    .expect("failure in time");
    assert!(matches!(failed, p2pcore::SendFailure::Connect(p2pcore::ConnectError::NotFound)), "{failed:?}");
    for p in [&a, &b] {
        timeout(LIMIT, p.close()).await.expect("close in time");
    }
    for (h, _) in servers {
        h.close().expect("server close");
    }
}
