//! Target `directory`: the peer role's merge of its servers' directories
//! (one copy per server), against a reference model.

use super::input::Input;
use super::msgs::Pool;
use crate::config::PeerConfig;
use crate::event::Event;
use crate::identity::{Identity, NodeId, Role};
use crate::peer::Peer;
use crate::proto::{Control, PeerMsg};
use crate::rng::NodeRng;
use crate::roster::Backoff;
use crate::server::{Action, LinkMeta};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What one server's directory should look like in the peer, per the protocol.
#[derive(Debug, Default)]
struct ModelServer {
    dir: BTreeSet<NodeId>,
    version: Option<u64>,
    /// The last version the harness sent in order (for "right" versions).
    sent: u64,
}

struct Harness {
    me: NodeId,
    now: Instant,
    peer: Peer,
    servers: Vec<NodeId>,
    linked: BTreeMap<NodeId, ModelServer>,
    /// Peers online according to the events seen so far.
    online_events: BTreeSet<NodeId>,
    servers_up_events: BTreeSet<NodeId>,
    network_up_events: bool,
    resyncs_expected: u64,
    resync_sends: u64,
}

/// The peer's and the three servers' IDs (deriving a key pair per run would
/// dominate the run).
fn ids() -> (NodeId, &'static [NodeId]) {
    static IDS: OnceLock<(NodeId, Vec<NodeId>)> = OnceLock::new();
    let (me, servers) = IDS.get_or_init(|| {
        let servers = (0..3u8).map(|k| Identity::from_seed(Role::Server, [0x21 + k; 32]).id()).collect();
        (Identity::from_seed(Role::Peer, [0x11; 32]).id(), servers)
    });
    (*me, servers)
}

fn server_addr(k: usize) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 10 + k as u8], 4433))
}

/// Target `directory`: a `Peer` role linked to one to three servers is fed
/// an input-derived sequence of link ups and downs and server → peer
/// messages (snapshots and deltas with right and wrong versions, server
/// lists, Master claims, observed addresses, timeouts). After every step:
///
/// * a peer is online iff some linked server's directory (as the protocol
///   says it must look: snapshot, then in-order deltas, deltas after a gap
///   ignored until the next snapshot) lists it, and `via` names exactly
///   those servers;
/// * `PeerOnline`/`PeerOffline`, `ServerUp`/`ServerDown` and
///   `NetworkUp`/`NetworkDown` alternate, and agree with the getters;
/// * every version gap asks once for a snapshot (`Resync`) and is counted;
/// * messages go only to linked servers.
pub fn directory(epoch: Instant, data: &[u8]) {
    let mut input = Input::new(data);
    let n_servers = 1 + input.below(3);
    let (me, all_servers) = ids();
    let servers = all_servers[..n_servers].to_vec();
    let backoff = Backoff {
        min: Duration::from_millis(250),
        max: Duration::from_secs(5),
        forget_after: Duration::from_secs(600),
    };
    let bootstrap: Vec<SocketAddr> = (0..n_servers).map(server_addr).collect();
    let peer = Peer::new(
        me,
        vec![SocketAddr::from(([10, 0, 0, 2], 4433))],
        &bootstrap[..1],
        PeerConfig::default(),
        backoff,
        NodeRng::from_seed([0x31; 32]),
        epoch,
    );
    let mut h = Harness {
        me,
        now: epoch,
        peer,
        servers,
        linked: BTreeMap::new(),
        online_events: BTreeSet::new(),
        servers_up_events: BTreeSet::new(),
        network_up_events: false,
        resyncs_expected: 0,
        resync_sends: 0,
    };
    h.drain();
    // Start with the first server linked and its (empty) snapshot, so short
    // inputs are already past the start.
    h.link_up(0, None);
    h.message(0, PeerMsg::Directory { version: 0, peers: Vec::new() });
    h.check();

    let mut ids = vec![me];
    ids.extend(h.servers.iter().copied());
    let addrs: Vec<SocketAddr> = (0..n_servers).map(server_addr).collect();
    let pool = Pool { ids: &ids, addrs: &addrs, clusters: &[], raft_ids: &[], epochs: &[] };
    let mut steps = 0;
    while !input.is_empty() && steps < 256 {
        steps += 1;
        let k = input.below(n_servers);
        match input.u8() % 16 {
            0 => {
                let observed = input.bool().then(|| pool.addr(&mut input));
                h.link_up(k, observed);
            }
            1 => h.link_down(k),
            2 => {
                h.now += Duration::from_millis(u64::from(input.u16()));
                if h.peer.poll_timeout().is_some_and(|t| t <= h.now) {
                    h.peer.handle_timeout(h.now);
                }
            }
            3 => {
                let local = (0..input.below(3)).map(|_| pool.addr(&mut input)).collect();
                h.peer.set_local_addrs(local);
            }
            4 => {
                let id = pool.id(&mut input);
                if id.role() == Role::Peer && id != me {
                    h.peer.want(id);
                }
            }
            // Mostly directory traffic.
            _ => {
                let next = h.linked.get(&h.servers[k]).map_or(0, |m| m.sent.wrapping_add(1));
                let msg = pool.peer_msg(&mut input, next);
                h.message(k, msg);
            }
        }
        h.drain();
        h.check();
    }
}

impl Harness {
    fn meta(&self, k: usize) -> LinkMeta {
        LinkMeta {
            id: self.servers[k],
            name: format!("s{k}"),
            incarnation: k as u64 + 1,
            remote_addr: server_addr(k),
            addrs: vec![server_addr(k)],
            elder: false,
            join: false,
            lookup: false,
            probe_key: None,
        }
    }

    fn link_up(&mut self, k: usize, observed: Option<SocketAddr>) {
        let meta = self.meta(k);
        self.peer.on_link_up(self.now, &meta, observed);
        // A re-linked server keeps its directory until its next snapshot;
        // deltas wait for that snapshot.
        let m = self.linked.entry(meta.id).or_default();
        m.version = None;
        self.drain();
    }

    fn link_down(&mut self, k: usize) {
        let id = self.servers[k];
        self.peer.on_link_down(self.now, id);
        self.linked.remove(&id);
        self.drain();
    }

    fn message(&mut self, k: usize, msg: PeerMsg) {
        let id = self.servers[k];
        if let Some(m) = self.linked.get_mut(&id) {
            let me = self.me;
            match &msg {
                PeerMsg::Directory { version, peers } => {
                    m.dir = peers.iter().map(|e| e.id).filter(|p| *p != me).collect();
                    m.version = Some(*version);
                    m.sent = *version;
                }
                PeerMsg::DirAdd { version, entry } | PeerMsg::DirUpdate { version, entry }
                    // The version counts even for our own entry, which is not stored.
                    if Self::in_order(m, *version, &mut self.resyncs_expected) && entry.id != me =>
                {
                    m.dir.insert(entry.id);
                }
                PeerMsg::DirRemove { version, id } if Self::in_order(m, *version, &mut self.resyncs_expected) => {
                    m.dir.remove(id);
                }
                _ => {}
            }
        }
        self.peer.on_message(self.now, id, msg);
        self.drain();
    }

    /// The protocol's rule for a delta: applied iff it is the next version;
    /// a gap asks for one snapshot and deltas wait for it.
    fn in_order(m: &mut ModelServer, version: u64, resyncs: &mut u64) -> bool {
        match m.version {
            Some(v) if v.checked_add(1) == Some(version) => {
                m.version = Some(version);
                m.sent = version;
                true
            }
            Some(_) => {
                m.version = None;
                *resyncs += 1;
                false
            }
            None => false,
        }
    }

    /// Checks one control message the peer sends.
    fn sent(&mut self, to: NodeId, msg: &Control) {
        if to.role() == Role::Server {
            assert!(self.linked.contains_key(&to), "message {msg:?} for unlinked server {to}");
        }
        if matches!(msg, Control::Peer(PeerMsg::Resync)) {
            self.resync_sends += 1;
        }
    }

    /// Takes the role's actions, checking each.
    fn drain(&mut self) {
        while let Some(a) = self.peer.poll_action() {
            match a {
                Action::Send { to, msg } => self.sent(to, &msg),
                Action::Broadcast { to, msg } => {
                    for id in to {
                        self.sent(id, &msg);
                    }
                }
                Action::SendFrom { msgs, to } => {
                    for (to, first) in to {
                        for msg in msgs.iter().skip(first) {
                            self.sent(to, msg);
                        }
                    }
                }
                Action::Event(e) => self.event(e),
                Action::Dial { .. }
                | Action::DialPeer(_)
                | Action::Close(_)
                | Action::Datagram { .. }
                | Action::PathReset(_)
                | Action::NotFound(_) => {}
            }
        }
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::PeerOnline { id, .. } => {
                assert!(id != self.me, "PeerOnline for ourselves");
                assert!(self.online_events.insert(id), "PeerOnline twice for {id}");
            }
            Event::PeerOffline { id, .. } => {
                assert!(self.online_events.remove(&id), "PeerOffline for {id}, which was not online");
            }
            Event::ServerUp { id, .. } => {
                assert!(self.servers_up_events.insert(id), "ServerUp twice for {id}");
            }
            Event::ServerDown { id, .. } => {
                assert!(self.servers_up_events.remove(&id), "ServerDown for {id}, which was not up");
            }
            Event::NetworkUp => {
                assert!(!self.network_up_events, "NetworkUp twice");
                self.network_up_events = true;
            }
            Event::NetworkDown => {
                assert!(self.network_up_events, "NetworkDown while down");
                self.network_up_events = false;
            }
            _ => {}
        }
    }

    fn check(&self) {
        let peers = self.peer.peers();
        let online: BTreeSet<NodeId> = peers.iter().map(|p| p.id).collect();
        assert_eq!(online, self.online_events, "peers() disagrees with PeerOnline/PeerOffline events");
        let listed: BTreeSet<NodeId> = self.linked.values().flat_map(|m| m.dir.iter().copied()).collect();
        assert_eq!(online, listed, "online peers are not the ones linked servers list");
        for p in &peers {
            let via: Vec<NodeId> =
                self.linked.iter().filter(|(_, m)| m.dir.contains(&p.id)).map(|(s, _)| *s).collect();
            assert_eq!(p.via, via, "servers listing {}", p.id);
        }
        let linked: BTreeSet<NodeId> = self.linked.keys().copied().collect();
        assert_eq!(self.servers_up_events, linked, "ServerUp/ServerDown events vs links");
        assert_eq!(self.peer.network_up(), !self.linked.is_empty(), "network_up()");
        assert_eq!(self.network_up_events, !self.linked.is_empty(), "NetworkUp/NetworkDown events");
        assert_eq!(self.peer.resyncs(), self.resyncs_expected, "resync count");
        assert_eq!(self.resync_sends, self.resyncs_expected, "Resync requests sent");
        let live: BTreeSet<NodeId> = self.peer.servers().iter().filter(|s| s.live).map(|s| s.id).collect();
        assert_eq!(live, linked, "servers() live flags");
    }
}
