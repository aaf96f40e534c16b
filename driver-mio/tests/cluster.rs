//! Three servers and three peers on real loopback sockets, each a
//! `p2pcore_mio::Host`: the cluster forms and elects a Master; peers find
//! each other by ID, start relayed and go direct; 10,000 reliable messages
//! on two channels arrive exactly once and in order across that path
//! change; unreliable datagrams arrive; the Master's host is killed and the
//! others agree on a new one; the killed server restarts from its data
//! directory with the same ID and rejoins; and a second host on a data
//! directory in use is refused, naming the process that holds it.

mod common;

use bytes::Bytes;
use common::*;
use p2pcore::{Event, NodeId, PathKind, Reliability, Role};
use p2pcore_mio::{DataDir, DataDirError, HostConfig};
use std::net::SocketAddr;

const MESSAGES: u32 = 10_000;

/// Every server in `servers` names the same Master, and it is one of them.
fn agreed_master(servers: &[&Runner]) -> Option<NodeId> {
    let seen: Vec<Option<NodeId>> = servers.iter().map(|s| s.with(|h| h.node().master().master)).collect();
    let first = seen[0]?;
    (seen.iter().all(|m| *m == Some(first)) && servers.iter().any(|s| s.id == first)).then_some(first)
}

fn live_servers(r: &Runner) -> usize {
    r.with(|h| h.node().servers().iter().filter(|s| s.live && s.id != h.id()).count())
}

fn message(channel: u8, i: u32) -> Bytes {
    // Sizes vary from 8 bytes to about 1.2 kB so that messages share
    // packets and span them.
    let mut b = Vec::with_capacity(8 + (i as usize * 7) % 1200);
    b.extend_from_slice(&[channel, 0, 0, 0]);
    b.extend_from_slice(&i.to_be_bytes());
    b.resize(8 + (i as usize * 7) % 1200, channel);
    Bytes::from(b)
}

#[test]
fn a_cluster_on_real_sockets_elects_relays_goes_direct_delivers_and_fails_over() {
    cluster(true);
}

/// The same with GSO off: the fallback path every host takes where the
/// kernel or the NIC has no working segmentation offload.
#[test]
fn the_same_cluster_without_gso() {
    cluster(false);
}

fn bind(addr: &str, gso: bool) -> HostConfig {
    let mut c = HostConfig::new(addr.parse().unwrap());
    c.gso = gso;
    c
}

fn cluster(gso: bool) {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let s1 = Runner::start(server_with(dirs[0].path(), "s1", bind("127.0.0.1:0", gso), &[]));
    let s2 = Runner::start(server_with(dirs[1].path(), "s2", bind("127.0.0.1:0", gso), &[s1.addr]));
    let s3 = Runner::start(server_with(dirs[2].path(), "s3", bind("127.0.0.1:0", gso), &[s1.addr]));
    let server_addrs: Vec<SocketAddr> = vec![s1.addr, s2.addr, s3.addr];
    let mut servers = vec![s1, s2, s3];

    // The cluster forms a full mesh and agrees on a Master (Raft leader).
    wait_for("a full mesh of servers", || servers.iter().all(|s| live_servers(s) == 2));
    wait_for("an agreed Master", || agreed_master(&servers.iter().collect::<Vec<_>>()).is_some());
    let master = agreed_master(&servers.iter().collect::<Vec<_>>()).unwrap();

    // Peers connect to every server and learn each other by ID.
    let peers: Vec<Runner> = (0..3)
        .map(|i| {
            Runner::start(peer_with(
                &format!("p{i}"),
                10 + i as u8 + u8::from(!gso) * 10,
                &server_addrs,
                bind("127.0.0.1:0", gso),
            ))
        })
        .collect();
    let ids: Vec<NodeId> = peers.iter().map(|p| p.id).collect();
    wait_for("peers on every server and in every directory", || {
        peers.iter().all(|p| {
            let ids = ids.clone();
            p.with(move |h| {
                let known = h.node().peers();
                h.node().network_up()
                    && ids.iter().filter(|id| **id != h.id()).all(|id| known.iter().any(|k| k.id == *id))
                    && h.node().servers().iter().filter(|s| s.live).count() == 3
            })
        })
    });

    // Peer 0 sends 10,000 reliable messages to peer 1 on two channels,
    // starting at once: the connection is set up through a relay and the
    // transfer spans the move to the direct path.
    let to = ids[1];
    peers[0].with(move |h| {
        for i in 0..MESSAGES {
            let channel = 1 + (i % 2) as u8;
            h.send(to, channel, message(channel, i / 2), Reliability::Reliable).expect("send");
        }
    });
    // Every other pair exchanges a greeting, so every pair has a path.
    for (a, b) in [(0, 2), (1, 2)] {
        let to = ids[b];
        peers[a].with(move |h| h.send(to, 0, &b"hello"[..], Reliability::Reliable).expect("send"));
    }
    wait_for("every pair on a direct path", || {
        [(0, 1), (0, 2), (1, 2)].iter().all(|&(a, b)| {
            path(&peers[a], ids[b]) == Some(PathKind::Direct)
                && path(&peers[b], ids[a]) == Some(PathKind::Direct)
        })
    });
    let first_path = peers[0].events().into_iter().find_map(|e| match e {
        Event::PathChanged { peer, path: Some(p) } if peer == to => Some(p),
        _ => None,
    });
    assert!(matches!(first_path, Some(PathKind::Relayed { .. })), "started relayed: {first_path:?}");

    let per_channel = MESSAGES / 2;
    wait_for("10,000 reliable messages", || {
        received(&peers[1], ids[0], 1).len() + received(&peers[1], ids[0], 2).len() >= MESSAGES as usize
    });
    for channel in [1u8, 2] {
        let got = received(&peers[1], ids[0], channel);
        let want: Vec<Bytes> = (0..per_channel).map(|i| message(channel, i)).collect();
        assert_eq!(got.len(), want.len(), "channel {channel}: exactly once");
        assert!(got == want, "channel {channel}: in order, intact");
    }

    // Unreliable datagrams arrive on the direct path (loopback loses none
    // in practice; some may be lost in principle, so not all are required).
    let from = ids[2];
    let to = ids[0];
    peers[2].with(move |h| {
        for i in 0..100u32 {
            h.send(to, 7, Bytes::from(i.to_be_bytes().to_vec()), Reliability::Unreliable).expect("datagram");
        }
    });
    wait_for("unreliable datagrams", || {
        peers[0]
            .events()
            .iter()
            .filter(|e| matches!(e, Event::MessageReceived { from: f, channel: 7, reliability: Reliability::Unreliable, .. } if *f == from))
            .count()
            >= 50
    });

    // Kill the Master's host: the other two agree on a new Master, and the
    // peers follow.
    let at = servers.iter().position(|s| s.id == master).unwrap();
    let killed = servers.remove(at);
    let killed_addr = killed.addr;
    killed.kill();
    release_dir(master);
    wait_for("a new Master among the survivors", || {
        agreed_master(&servers.iter().collect::<Vec<_>>()).is_some_and(|m| m != master)
    });
    let new_master = agreed_master(&servers.iter().collect::<Vec<_>>()).unwrap();
    wait_for("the peers to follow the new Master", || {
        peers.iter().all(|p| p.with(|h| h.node().master().master) == Some(new_master))
    });

    // A second host on a data directory in use is refused, naming us.
    let in_use = dirs[(at + 1) % 3].path();
    match DataDir::open(in_use, Role::Server) {
        Err(e @ DataDirError::Locked { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&std::process::id().to_string()), "names the PID: {text}");
        }
        other => panic!("expected a locked data directory, got {other:?}"),
    }

    // The killed server restarts from its data directory, on its address:
    // same ID, and it rejoins the cluster.
    let others: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let restarted =
        Runner::start(server_with(dirs[at].path(), "again", bind(&killed_addr.to_string(), gso), &others));
    assert_eq!(restarted.id, master, "the node ID survives the restart");
    servers.push(restarted);
    wait_for("the restarted server back in a full mesh", || servers.iter().all(|s| live_servers(s) == 2));
    wait_for("the peers connected to it again", || {
        peers.iter().all(|p| p.with(|h| h.node().servers().iter().filter(|s| s.live).count() == 3))
    });
    wait_for("one Master for all three", || agreed_master(&servers.iter().collect::<Vec<_>>()).is_some());
}
