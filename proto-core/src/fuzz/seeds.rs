//! Hand-made seed inputs for every target, built with the real encoders so
//! they stay valid when formats change. `tests/fuzz_replay.rs` writes them to
//! `fuzz/seeds/<target>/` (an ignored test, run on demand) and checks that
//! the files there match.

use crate::admission::Credential;
use crate::identity::{Identity, Role};
use crate::proto::{self, ClusterMsg, Control, DirEntry, Hello, PeerAddrs, PeerMsg, RaftStatus, Welcome};
use crate::wire::{self, FrameType, ProbeFrame, RelayFrame};
use std::net::SocketAddr;

/// One seed input.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The target it is for (a name in [`TARGETS`](super::TARGETS)).
    pub target: &'static str,
    /// A file name.
    pub name: &'static str,
    /// The input.
    pub data: Vec<u8>,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|_| unreachable!("a valid address literal"))
}

fn raw_frames() -> Vec<Seed> {
    let peer = Identity::from_seed(Role::Peer, [1; 32]).id();
    let mut out = Vec::new();
    let mut probe = |name, kind, a: Option<SocketAddr>| {
        let p = ProbeFrame { from: peer, txid: [5; wire::TXID_LEN], addr: a, mac: [9; wire::PROBE_MAC_LEN] };
        let mut data = Vec::new();
        let _ = p.encode(kind, &mut data);
        out.push(Seed { target: "raw_frame", name, data });
    };
    probe("ping", FrameType::Ping, None);
    probe("pong-v4", FrameType::Pong, Some(addr("198.51.100.7:4433")));
    probe("pong-v6", FrameType::Pong, Some(addr("[2001:db8::9]:1")));
    let mut relay = Vec::new();
    let _ = RelayFrame { token: [7; wire::TOKEN_LEN], node: peer, data: &[0xc3, 0, 0, 0, 1, 8] }
        .encode(&mut relay);
    out.push(Seed { target: "raw_frame", name: "relay", data: relay.clone() });
    let mut old = relay;
    // The same relay frame in the retired version-1 layout's version byte.
    old[2] = 1;
    out.push(Seed { target: "raw_frame", name: "relay-old-version", data: old });
    out.push(Seed {
        target: "raw_frame",
        name: "quic-initial",
        data: vec![0xc3, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8],
    });
    out
}

fn control_messages() -> Vec<u8> {
    let a = Identity::from_seed(Role::Server, [2; 32]).id();
    let b = Identity::from_seed(Role::Peer, [3; 32]).id();
    let msgs = [
        Control::Hello(Hello {
            protocol: proto::PROTOCOL_VERSION,
            name: "alice".into(),
            incarnation: 7,
            uptime_ms: 1234,
            credential: Credential::None,
            addrs: vec![addr("192.0.2.1:4433")],
            join: true,
            lookup: false,
            nonce: 9,
        }),
        Control::Welcome(Welcome {
            protocol: proto::PROTOCOL_VERSION,
            name: "s".into(),
            incarnation: 8,
            uptime_ms: 99,
            observed: addr("[2001:db8::1]:9"),
            credential: Credential::SecretProof([4; 32]),
            addrs: vec![],
            elder: a,
        }),
        Control::Ready,
        Control::Peer(PeerMsg::Directory {
            version: 3,
            peers: vec![DirEntry {
                id: b,
                name: "bob".into(),
                addrs: PeerAddrs { local: vec![addr("10.0.0.2:1")], observed: vec![addr("203.0.113.9:7")] },
            }],
        }),
        Control::Peer(PeerMsg::DirRemove { version: 4, id: b }),
        Control::Cluster(ClusterMsg::Status(RaftStatus {
            cluster: Some(5),
            raft_id: 6,
            voters: 1,
            joining: false,
        })),
        Control::Cluster(ClusterMsg::Raft { cluster: 5, msg: vec![8, 3, 16, 6] }),
    ];
    msgs.iter().flat_map(|m| proto::encode(m).to_vec()).collect()
}

fn control_streams() -> Vec<Seed> {
    let stream = control_messages();
    let with = |max: u16, mode: u8| {
        let mut v = max.to_be_bytes().to_vec();
        v.push(mode);
        v.extend_from_slice(&stream);
        v
    };
    vec![
        Seed { target: "control_stream", name: "bytewise", data: with(4096, 0) },
        Seed { target: "control_stream", name: "growing-chunks", data: with(4096, 1) },
        Seed { target: "control_stream", name: "stream-chunks", data: with(4096, 2) },
        Seed { target: "control_stream", name: "big-chunks", data: with(4096, 0xff) },
        Seed { target: "control_stream", name: "too-large", data: with(20, 3) },
    ]
}

fn directories() -> Vec<Seed> {
    // Layout: see `fuzz::directory` (one byte per decision). Entry: id index,
    // name ("n<byte>"), no local addresses, one observed 192.0.2.x.
    let entry = |id: u8, n: u8| vec![id, 3, n, 1, 0, 1, 1, 5, n];
    let mut a = vec![1]; // two servers
    a.extend([1, 0, 0]); // link up server 1
    a.extend([1, 5, 1, 2, 0]); // server 1: snapshot, two entries, version = next
    a.extend(entry(5, 1));
    a.extend(entry(6, 2));
    a.extend([0, 5, 2, 0]); // server 0: DirAdd, right version
    a.extend(entry(5, 3));
    a.extend([1, 5, 4, 0, 5]); // server 1: DirRemove, right version
    a.extend([0, 5, 4, 3, 4, 200, 6]); // server 0: DirRemove, wrong version (a gap)
    a.extend([0, 5, 1, 1, 0]); // server 0: snapshot (the resync)
    a.extend(entry(7, 4));
    a.extend([1, 1]); // link down server 1
    a.extend([0, 2, 0x01, 0xf4]); // 500 ms pass
    let mut b = vec![2]; // three servers
    b.extend([2, 0, 1, 5, 7]); // link up server 2, observed 192.0.2.7
    b.extend([2, 5, 1, 1, 0]);
    b.extend(entry(8, 9));
    b.extend([0, 5, 8, 3, 1, 0]); // Master claim from server 0
    b.extend([2, 5, 13, 5, 3]); // Observed from server 2
    b.extend([0, 0, 0]); // server 0 links up again while up
    b.extend([1, 5, 5, 1]); // Servers list from server 1
    b.extend([0, 1, 2, 1]);
    vec![
        Seed { target: "directory", name: "snapshot-deltas-gap", data: a },
        Seed { target: "directory", name: "three-servers", data: b },
    ]
}

fn rafts() -> Vec<Seed> {
    // Layout: see `fuzz::raft`: the state, then ops.
    let ops = [9, 2, 6, 8, 1, 3, 0, 1, 5, 2, 13, 4, 10, 1, 1, 2, 5, 7, 11, 0, 0, 8, 2, 12, 6, 4];
    let names = ["solo", "three", "transferred", "joiner", "cut-off"];
    (0..5u8)
        .map(|s| {
            let mut data = vec![s];
            data.extend(ops);
            Seed { target: "raft", name: names[s as usize], data }
        })
        .collect()
}

fn pairs() -> Vec<Seed> {
    // Layout: see `fuzz::Pair::run`: the kind, then ops whose first byte is
    // `(op << 1) | sender`.
    let mut sp = vec![0];
    sp.extend([0, 5, 0, 2, 0, 4, 3, 1, 1, 0, 1, 0]); // server → peer: DirAdd of a stranger
    sp.extend([(9 << 1) | 1, 3, 5]); // peer → server: reliable "hello"
    sp.extend(b"hello");
    sp.extend([11 << 1, 4, 3]); // server → peer: datagram "abc"
    sp.extend(b"abc");
    sp.extend([12 << 1, 0x01, 0xf4]); // 500 ms
    sp.extend([1, 5, 9, 1, 1, 5, 7, 1, 0]); // peer → server: Info
    sp.extend([5 << 1, 4, 1, 2, 3, 4]); // server → peer: a garbage frame
    let mut ss = vec![1];
    ss.extend([0, 5, 1, 3, 1, 1, 0, 1, 0, 3, 0]); // server → server: Status
    ss.extend([1, 5, 1, 5, 1, 0, 6, 8, 3, 16, 6, 24, 1]); // server → server: a Raft message
    ss.extend([(9 << 1) | 1, 7, 2, b'h', b'i']);
    ss.extend([12 << 1, 0x03, 0xe8]); // 1 s
    let mut torn = vec![0];
    torn.extend([(8 << 1) | 1, 0xff, 0xff, 0xff, 0xff, 1, 0]); // a lying length prefix
    let mut stray = vec![0];
    stray.extend([13 << 1, 12, 0x3e, 0xb1, 1, 3, 0, 2, 0, 0, 0, 0, 0xc3, 1]);
    stray.extend([(14 << 1) | 1, 0]); // the peer disconnects
    stray.extend([12 << 1, 0x0f, 0xa0]); // 4 s: it redials
    vec![
        Seed { target: "pair", name: "server-peer", data: sp },
        Seed { target: "pair", name: "server-server", data: ss },
        Seed { target: "pair", name: "torn-stream", data: torn },
        Seed { target: "pair", name: "stray-and-disconnect", data: stray },
    ]
}

/// Every seed of every target.
pub fn seeds() -> Vec<Seed> {
    let mut v = raw_frames();
    v.extend(control_streams());
    v.extend(directories());
    v.extend(rafts());
    v.extend(pairs());
    v
}
