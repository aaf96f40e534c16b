//! Building protocol values from fuzz input.
//!
//! Random bytes rarely decode as a meaningful postcard [`Control`], so the
//! stateful targets build messages structurally: the input picks the variant
//! and every field, with node IDs drawn from a small pool (the real nodes of
//! the harness and a few strangers) so that messages refer to state that
//! exists.

use super::input::Input;
use crate::admission::{AdmissionError, Credential, JoinToken};
use crate::identity::{Identity, Keypair, NodeId, Role};
use crate::proto::{
    ClusterMsg, Control, DirEntry, Hello, PathKind, PathMsg, PeerAddrs, PeerMsg, RaftStatus, RefuseReason,
    ServerEntry, Welcome,
};
use crate::proto::{KvAsk, KvReply, WireLookup};
use crate::server::election::{MasterBasis, MasterInfo};
use crate::store::machine::{Change, Fail, Leaf, Outcome, Res};
use crate::store::{CompareOp, KvCompare, KvRequest, Op};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

/// Node IDs of nodes that never exist in any harness: two servers, four peers.
pub(crate) fn strangers() -> &'static [NodeId] {
    static IDS: OnceLock<Vec<NodeId>> = OnceLock::new();
    IDS.get_or_init(|| {
        let mut v: Vec<NodeId> =
            (0..2u8).map(|i| Identity::from_seed(Role::Server, [0xa0 + i; 32]).id()).collect();
        v.extend((0..4u8).map(|i| Identity::from_seed(Role::Peer, [0xb0 + i; 32]).id()));
        v
    })
}

fn issuer() -> &'static Keypair {
    static K: OnceLock<Keypair> = OnceLock::new();
    K.get_or_init(|| Keypair::from_seed([0xc7; 32]))
}

/// What the generator knows about the harness it builds messages for.
pub(crate) struct Pool<'p> {
    /// IDs to refer to: real nodes first, then strangers.
    pub(crate) ids: &'p [NodeId],
    /// Addresses the harness's nodes really have.
    pub(crate) addrs: &'p [SocketAddr],
    /// Raft group IDs and Raft IDs in use, if any.
    pub(crate) clusters: &'p [u64],
    pub(crate) raft_ids: &'p [u64],
    /// The store epochs of the harness's peers (see `KvAsk::epoch`).
    pub(crate) epochs: &'p [u64],
}

impl Pool<'_> {
    /// A peer's store epoch, mostly a real one.
    fn epoch(&self, i: &mut Input<'_>) -> u64 {
        match self.epochs.len() {
            0 => i.u64() % 2,
            n => {
                let k = i.below(n + 1);
                self.epochs.get(k).copied().unwrap_or_else(|| i.u64() % 2)
            }
        }
    }

    pub(crate) fn id(&self, i: &mut Input<'_>) -> NodeId {
        let all = self.ids.len() + strangers().len();
        let k = i.below(all);
        if k < self.ids.len() { self.ids[k] } else { strangers()[k - self.ids.len()] }
    }

    fn id_of(&self, i: &mut Input<'_>, role: Role) -> NodeId {
        for _ in 0..4 {
            let id = self.id(i);
            if id.role() == role {
                return id;
            }
        }
        strangers().iter().copied().find(|s| s.role() == role).unwrap_or_else(|| self.id(i))
    }

    pub(crate) fn addr(&self, i: &mut Input<'_>) -> SocketAddr {
        match i.u8() % 6 {
            0 if !self.addrs.is_empty() => self.addrs[i.below(self.addrs.len())],
            1 => SocketAddr::new(IpAddr::V4(Ipv4Addr::from(i.u32())), i.u16()),
            2 => SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(u128::from(i.u64()) << 64 | u128::from(i.u64()))),
                i.u16(),
            ),
            // Inside the range peers use for mapped (virtual) addresses.
            3 => SocketAddr::new(
                IpAddr::V6(Ipv6Addr::new(0xfd70, 0x3270, 0x6d61, 0, 0, 0, 0, i.u16())),
                i.u16(),
            ),
            4 => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            _ => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, i.u8())), 4433),
        }
    }

    fn addrs(&self, i: &mut Input<'_>) -> Vec<SocketAddr> {
        // Mostly a few, sometimes more than a node accepts (16).
        let n = if i.one_in(16) { 17 + i.below(8) } else { i.below(4) };
        (0..n).map(|_| self.addr(i)).collect()
    }

    fn peer_addrs(&self, i: &mut Input<'_>) -> PeerAddrs {
        PeerAddrs { local: self.addrs(i), observed: self.addrs(i) }
    }

    fn cluster(&self, i: &mut Input<'_>) -> u64 {
        if !self.clusters.is_empty() && i.bool() {
            self.clusters[i.below(self.clusters.len())]
        } else {
            i.interesting_u64()
        }
    }

    fn raft_id(&self, i: &mut Input<'_>) -> u64 {
        if !self.raft_ids.is_empty() && i.bool() {
            self.raft_ids[i.below(self.raft_ids.len())]
        } else {
            i.interesting_u64()
        }
    }

    pub(crate) fn name(&self, i: &mut Input<'_>) -> String {
        match i.u8() % 4 {
            0 => String::new(),
            1 => "x".repeat(65),
            2 => "p\u{7}".to_owned(),
            _ => format!("n{}", i.u8()),
        }
    }

    fn credential(&self, i: &mut Input<'_>) -> Credential {
        match i.u8() % 3 {
            0 => Credential::None,
            1 => Credential::SecretProof(i.array()),
            _ => Credential::Token(JoinToken::issue(issuer(), self.id(i), i.interesting_u64())),
        }
    }

    pub(crate) fn server_entry(&self, i: &mut Input<'_>) -> ServerEntry {
        ServerEntry {
            id: self.id_of(i, Role::Server),
            name: self.name(i),
            addrs: self.addrs(i),
            incarnation: i.interesting_u64(),
            load: i.u32(),
        }
    }

    pub(crate) fn dir_entry(&self, i: &mut Input<'_>) -> DirEntry {
        DirEntry { id: self.id(i), name: self.name(i), addrs: self.peer_addrs(i) }
    }

    pub(crate) fn master(&self, i: &mut Input<'_>) -> MasterInfo {
        let basis = match i.u8() % 4 {
            0 => None,
            1 => Some(MasterBasis::Solo),
            2 => Some(MasterBasis::Eldest),
            _ => Some(MasterBasis::Raft),
        };
        let master = if i.bool() { Some(self.id(i)) } else { None };
        MasterInfo { master, basis, term: i.interesting_u64(), epoch: self.cluster(i) }
    }

    fn path_kind(&self, i: &mut Input<'_>) -> PathKind {
        match i.u8() % 3 {
            0 => PathKind::Direct,
            1 => PathKind::Punched,
            _ => PathKind::Relayed { via: self.id(i) },
        }
    }

    fn refuse_reason(&self, i: &mut Input<'_>) -> RefuseReason {
        match i.u8() % 4 {
            0 => RefuseReason::ProtocolVersion { ours: i.u32(), theirs: i.u32() },
            1 => RefuseReason::Duplicate,
            2 => RefuseReason::Admission(AdmissionError::BadProof),
            _ => {
                RefuseReason::Admission(AdmissionError::Expired { expired_unix: i.u64(), now_unix: i.u64() })
            }
        }
    }

    /// A versioned directory delta's version: the caller's guess at the right
    /// next one, or anything.
    fn version(&self, i: &mut Input<'_>, next: u64) -> u64 {
        match i.u8() % 4 {
            0 | 1 => next,
            2 => next.wrapping_add(u64::from(i.u8())).wrapping_sub(2),
            _ => i.interesting_u64(),
        }
    }

    /// A server → peer or peer → server message.
    pub(crate) fn peer_msg(&self, i: &mut Input<'_>, next_version: u64) -> PeerMsg {
        match i.u8() % 25 {
            0 => PeerMsg::Session { token: i.array() },
            1 => {
                let n = i.below(6);
                PeerMsg::Directory {
                    version: self.version(i, next_version),
                    peers: (0..n).map(|_| self.dir_entry(i)).collect(),
                }
            }
            2 => PeerMsg::DirAdd { version: self.version(i, next_version), entry: self.dir_entry(i) },
            3 => PeerMsg::DirUpdate { version: self.version(i, next_version), entry: self.dir_entry(i) },
            4 => PeerMsg::DirRemove { version: self.version(i, next_version), id: self.id(i) },
            5 => {
                let n = i.below(4);
                PeerMsg::Servers((0..n).map(|_| self.server_entry(i)).collect())
            }
            6 => PeerMsg::ServerUp(self.server_entry(i)),
            7 => PeerMsg::ServerDown(self.id(i)),
            8 => PeerMsg::Master(self.master(i)),
            9 => PeerMsg::Info(self.peer_addrs(i)),
            10 => PeerMsg::LinkSet { peer: self.id(i), path: self.path_kind(i) },
            11 => PeerMsg::LinkDrop { peer: self.id(i) },
            12 => PeerMsg::Resync,
            13 => PeerMsg::LinkRtt { peer: self.id(i), rtt_us: i.u32() },
            14 => PeerMsg::Kv(self.kv_ask(i)),
            15 => PeerMsg::KvReply(KvReply {
                epoch: self.epoch(i),
                seq: i.u64() % 8,
                outcome: self.outcome(i),
                linearizable: i.bool(),
                voters: u32::from(i.u8()),
            }),
            16 => PeerMsg::Watch { id: i.u64() % 4, prefix: self.kv_key(i), from: i.interesting_u64() },
            17 => PeerMsg::Unwatch { id: i.u64() % 4 },
            18 => {
                let n = i.below(4);
                PeerMsg::WatchEvents {
                    id: i.u64() % 4,
                    next: i.interesting_u64(),
                    changes: (0..n)
                        .map(|_| Change {
                            rev: i.interesting_u64(),
                            key: self.kv_key(i),
                            value: i.bool().then(|| i.chunk(16).to_vec()),
                            create: i.u64(),
                            version: i.u64(),
                            expired: i.bool(),
                        })
                        .collect(),
                }
            }
            19 => {
                PeerMsg::WatchEnd { id: i.u64() % 4, fail: Fail::Compacted { oldest: i.interesting_u64() } }
            }
            20 => PeerMsg::Observed(self.addr(i)),
            21 => {
                let key = if i.bool() { WireLookup::Id(self.id(i)) } else { WireLookup::Name(self.name(i)) };
                PeerMsg::Lookup { query: i.u64() % 4, key }
            }
            22 => {
                let n = i.below(4);
                PeerMsg::Found { query: i.u64() % 4, entries: (0..n).map(|_| self.dir_entry(i)).collect() }
            }
            23 => PeerMsg::Listed(self.dir_entry(i)),
            _ => PeerMsg::Unlisted(self.id(i)),
        }
    }

    /// A store key from a small pool (so requests meet), or any bytes.
    fn kv_key(&self, i: &mut Input<'_>) -> Vec<u8> {
        match i.u8() % 4 {
            0 => Vec::new(),
            1 => b"a".to_vec(),
            2 => b"ab".to_vec(),
            _ => i.chunk(24).to_vec(),
        }
    }

    /// A store request: any kind, in or out of bounds.
    fn kv_op(&self, i: &mut Input<'_>) -> Op {
        let mut req = match i.u8() % 7 {
            0 => KvRequest::get(self.kv_key(i)).limit(u32::from(i.u8() % 4)),
            1 => KvRequest::get_prefix(self.kv_key(i)),
            2 => KvRequest::put(self.kv_key(i), i.chunk(32).to_vec()),
            3 => KvRequest::delete_prefix(self.kv_key(i)),
            4 => KvRequest::session_open(std::time::Duration::from_millis(i.interesting_u64() % 7_200_000)),
            5 => KvRequest::session_close(i.interesting_u64()),
            _ => KvRequest::txn(
                [KvCompare::value(self.kv_key(i), CompareOp::Equal, i.chunk(8).to_vec())],
                [KvRequest::put(self.kv_key(i), i.chunk(8).to_vec())],
                [KvRequest::get(self.kv_key(i))],
            ),
        };
        if i.one_in(4) {
            req = req.with_session(i.interesting_u64());
        }
        req.0
    }

    fn kv_ask(&self, i: &mut Input<'_>) -> KvAsk {
        let op = self.kv_op(i);
        KvAsk {
            epoch: self.epoch(i),
            seq: i.u64() % 8,
            ack: i.u64() % 8,
            op,
            at_least: i.bool().then(|| i.interesting_u64()),
        }
    }

    /// A store answer as a server would send it (or a failure).
    fn outcome(&self, i: &mut Input<'_>) -> Outcome {
        match i.u8() % 3 {
            0 => Ok((i.interesting_u64(), Res::Leaf(Leaf::Put))),
            1 => Ok((i.interesting_u64(), Res::Leaf(Leaf::Delete { deleted: i.u64() }))),
            _ => Err(Fail::Stale),
        }
    }

    /// A server → server message. Raft payloads are raw input bytes.
    pub(crate) fn cluster_msg(&self, i: &mut Input<'_>) -> ClusterMsg {
        match i.u8() % 9 {
            0 => {
                let n = i.below(4);
                ClusterMsg::List((0..n).map(|_| self.server_entry(i)).collect())
            }
            1 => ClusterMsg::Joined(self.server_entry(i)),
            2 => ClusterMsg::Load(i.u32()),
            3 => ClusterMsg::Status(RaftStatus {
                cluster: if i.bool() { Some(self.cluster(i)) } else { None },
                raft_id: self.raft_id(i),
                voters: u32::from(i.u8()),
                joining: i.bool(),
            }),
            4 => ClusterMsg::Dismiss { cluster: self.cluster(i), raft_id: self.raft_id(i) },
            5 => ClusterMsg::KvForward(self.kv_ask(i), self.id(i)),
            6 => ClusterMsg::KvRead {
                client: self.id(i),
                epoch: self.epoch(i),
                seq: i.u64() % 8,
                outcome: self.outcome(i),
            },
            7 => {
                let n = i.below(4);
                ClusterMsg::Holding {
                    full: i.bool(),
                    up: (0..n).map(|_| self.id(i)).collect(),
                    down: (0..n).map(|_| self.id(i)).collect(),
                }
            }
            _ => ClusterMsg::Raft { cluster: self.cluster(i), msg: i.chunk(512).to_vec() },
        }
    }

    /// Any control message. `role` is the sender's: messages its role sends
    /// are picked more often than ones it never sends.
    pub(crate) fn control(&self, i: &mut Input<'_>, role: Role, next_version: u64) -> Control {
        let pick = i.u8();
        match pick % 16 {
            0 => Control::Hello(Hello {
                protocol: if i.bool() { crate::proto::PROTOCOL_VERSION } else { i.u32() },
                name: self.name(i),
                incarnation: i.u64(),
                uptime_ms: i.interesting_u64(),
                credential: self.credential(i),
                addrs: self.addrs(i),
                join: i.bool(),
                lookup: i.bool(),
                nonce: i.u64(),
            }),
            1 => Control::Welcome(Welcome {
                protocol: crate::proto::PROTOCOL_VERSION,
                name: self.name(i),
                incarnation: i.u64(),
                uptime_ms: i.interesting_u64(),
                observed: self.addr(i),
                credential: self.credential(i),
                addrs: self.addrs(i),
                elder: self.id(i),
            }),
            2 => Control::Ready,
            3 => Control::Refuse(self.refuse_reason(i)),
            4 => Control::Path(PathMsg::Candidates { addrs: self.peer_addrs(i), reply: i.bool() }),
            // The rest: the sender role's own kind of message.
            _ if pick & 0x80 != 0 => Control::Cluster(self.cluster_msg(i)),
            _ if pick & 0x40 != 0 => Control::Peer(self.peer_msg(i, next_version)),
            _ => match role {
                Role::Server if i.bool() => Control::Cluster(self.cluster_msg(i)),
                _ => Control::Peer(self.peer_msg(i, next_version)),
            },
        }
    }
}
