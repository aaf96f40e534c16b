//! The server role: cluster membership (the server list, the seed's table
//! C), the full mesh, liveness, and Master election.
//!
//! This is a sans-IO machine inside the sans-IO node: it consumes link events
//! and cluster messages and emits actions (send a message, dial, report an
//! event) that the [`Node`](crate::Node) carries out.
//!
//! # Membership
//!
//! A server starts with an optional list of introducer addresses. It dials
//! one by address, marking its Hello as a *join*; the introducer answers with
//! its live server list, and the newcomer dials every server on it. Whenever a
//! server learns of a server (or of a new incarnation of one) for the first
//! time, it tells its other live servers once (`Joined`), so concurrent joins
//! through different introducers still converge; nothing is ever re-sent on a
//! timer. Every known server that is not connected is redialed with
//! exponential backoff until it answers or has been unreachable for
//! `forget_after`. Liveness comes from the QUIC connections themselves (see
//! `Config::idle_timeout`): a server whose connection dies is down.
//!
//! # Raft groups
//!
//! Every server founds a one-voter Raft group when it starts. When two
//! servers in different groups meet, the smaller group (by voters) yields —
//! between two one-voter groups, the younger server — and its member rejoins
//! the other group under a fresh Raft ID; the group's leader adds live
//! servers one at a time and removes voters whose server is down or was
//! superseded by a restart. A group whose voters are provably gone (their
//! servers came back under a new Raft ID) is re-founded with a higher term.
//! A group that lost a majority of voters that *may* still be alive (a
//! partition) is never re-founded: that is what makes the `raft` basis
//! partition-safe.

pub(crate) mod election;
mod peers;
pub(crate) mod raft;
pub(crate) mod raft_wire;

use crate::config::ClusterConfig;
use crate::event::Event;
use crate::identity::{NodeId, Role};
use crate::info::{DirectoryRow, LinkRow};
use crate::proto::{ClusterMsg, Control, PeerMsg, RaftStatus, ServerEntry};
use crate::quic::Expect;
use crate::rng::NodeRng;
pub(crate) use crate::roster::DialOutcome;
use crate::roster::{Backoff, Roster};
use election::{MasterInfo, decide};
use raft::{Consensus, RaftTiming};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// After asking raft-rs to hand leadership over, wait this long before
/// judging again (a transfer takes an election to complete).
const TRANSFER_PAUSE: Duration = Duration::from_secs(2);

/// What the role logic asks the node to do.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send a control message over the established connection to `to`.
    Send { to: NodeId, msg: Control },
    /// Send one control message to each of `to`: encoded once, the same
    /// bytes queued on every connection.
    Broadcast { to: Vec<NodeId>, msg: Control },
    /// Dial a node (by ID, or any node of a role at an address).
    Dial { expect: Expect, addr: SocketAddr, join: bool },
    /// Dial a peer through its mapped address (peers only).
    DialPeer(NodeId),
    /// Close the connection to a node, if any (peers: a peer went offline).
    Close(NodeId),
    /// Report an event to the user.
    Event(Event),
    /// Send a raw frame (a path probe) to an address (peers only).
    Datagram { to: SocketAddr, data: Vec<u8> },
    /// The path to a peer changed: reset QUIC's RTT and congestion state
    /// for it (peers only).
    PathReset(NodeId),
}

/// Everything the node knows about a freshly established connection.
#[derive(Debug, Clone)]
pub(crate) struct LinkMeta {
    pub(crate) id: NodeId,
    pub(crate) name: String,
    pub(crate) incarnation: u64,
    /// Where the remote's packets come from, as this node sees it.
    pub(crate) remote_addr: SocketAddr,
    /// Addresses the remote advertised.
    pub(crate) addrs: Vec<SocketAddr>,
    /// Whether the remote has run longer than this node (agreed verdict).
    pub(crate) elder: bool,
    /// The remote dialed us to join and wants the server list.
    pub(crate) join: bool,
    /// Peer-to-peer links: the key that authenticates path probes, exported
    /// from the connection's TLS session.
    pub(crate) probe_key: Option<[u8; 32]>,
}

impl LinkMeta {
    /// The remote server as it presented itself on this connection (its
    /// load is reported separately, later).
    pub(crate) fn server_entry(&self) -> ServerEntry {
        ServerEntry {
            id: self.id,
            name: self.name.clone(),
            addrs: self.addrs.clone(),
            incarnation: self.incarnation,
            load: 0,
        }
    }
}

/// How Raft groups compare when they meet: the one with more voters present
/// wins (least churn), then the smaller cluster ID. Only stable attributes
/// count — a rank that moved with terms or leadership would make servers
/// bounce between groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GroupRank {
    voters: u32,
    cluster: u64,
}

impl PartialOrd for GroupRank {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for GroupRank {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.voters.cmp(&other.voters).then(other.cluster.cmp(&self.cluster))
    }
}

/// A server's standing in the Raft groups, for diagnostics
/// ([`Node::raft_view`](crate::Node::raft_view)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftView {
    /// The group it belongs to or is joining (the `epoch` of Master mandates).
    pub epoch: Option<u64>,
    /// Its current Raft ID.
    pub raft_id: u64,
    /// The voters of its group's configuration, with their nodes when known.
    pub voters: Vec<(u64, Option<NodeId>)>,
    /// How many voters are present (itself and live servers in the group).
    pub present_voters: usize,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Its Raft term.
    pub term: u64,
    /// Whether it waits to be added to its group.
    pub joining: bool,
    /// How many times raft-rs rejected its input as inconsistent and the
    /// server rejoined under a fresh Raft ID (should stay 0).
    pub resets: u64,
    /// How many Raft messages from other servers it dropped as malformed or
    /// inconsistent with its own Raft state before they reached raft-rs
    /// (0 among correct servers).
    pub rejected: u64,
}

/// A server in the list, as [`Node::servers`](crate::Node::servers) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// Its ID.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// Where it can be dialed.
    pub addrs: Vec<SocketAddr>,
    /// Its last reported load (connected peers, or what its operator set).
    pub load: u32,
    /// Whether this node has a live connection to it (always true for itself).
    pub live: bool,
    /// Whether this node sees it as the Master.
    pub master: bool,
}

#[derive(Debug)]
struct Live {
    elder: bool,
    status: Option<RaftStatus>,
}

/// The server role state machine.
pub(crate) struct Server {
    me: NodeId,
    name: String,
    incarnation: u64,
    advertise: Vec<SocketAddr>,
    cfg: ClusterConfig,
    roster: Roster,
    live: BTreeMap<NodeId, Live>,
    consensus: Consensus,
    peers: peers::PeerTable,
    master: MasterInfo,
    load: u32,
    /// Set by the operator; otherwise the load is the number of peers.
    load_override: Option<u32>,
    load_sent: u32,
    next_tick: Instant,
    last_status: Option<RaftStatus>,
    last_transfer: Option<Instant>,
    leaderless_since: Option<Instant>,
    unaffiliated_since: Option<Instant>,
    target_lost_since: Option<Instant>,
    /// Our group lost to another: hand its members over, then leave.
    dissolving: bool,
    rng: NodeRng,
    actions: VecDeque<Action>,
}

impl Server {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        me: NodeId,
        name: String,
        incarnation: u64,
        advertise: Vec<SocketAddr>,
        bootstrap: &[SocketAddr],
        cfg: ClusterConfig,
        mut rng: NodeRng,
        now: Instant,
    ) -> Self {
        let timing = RaftTiming { election_ticks: cfg.election_ticks, heartbeat_ticks: cfg.heartbeat_ticks };
        let consensus = Consensus::new(me, incarnation, timing, NodeRng::from_seed(rng.child_seed()));
        let mut s = Self {
            me,
            name,
            incarnation,
            advertise,
            roster: Roster::new(
                me,
                bootstrap,
                Backoff { min: cfg.reconnect_min, max: cfg.reconnect_max, forget_after: cfg.forget_after },
                now,
            ),
            next_tick: now + cfg.raft_tick,
            cfg,
            live: BTreeMap::new(),
            consensus,
            peers: peers::PeerTable::default(),
            master: MasterInfo::NONE,
            load: 0,
            load_override: None,
            load_sent: 0,
            last_status: None,
            last_transfer: None,
            leaderless_since: None,
            unaffiliated_since: None,
            target_lost_since: None,
            dissolving: false,
            rng,
            actions: VecDeque::new(),
        };
        if bootstrap.is_empty() {
            // The first server of a cluster: nobody to join.
            s.consensus.found(1);
        }
        s.flush_raft();
        s.update_master();
        s.dial_due(now);
        s
    }

    // ----- getters ------------------------------------------------------

    pub(crate) fn master(&self) -> MasterInfo {
        self.master
    }

    pub(crate) fn raft_view(&self) -> RaftView {
        RaftView {
            epoch: self.consensus.cluster(),
            raft_id: self.consensus.raft_id(),
            voters: self.consensus.voters().iter().map(|v| (*v, self.consensus.node_of(*v))).collect(),
            present_voters: self.present_voters(),
            leader: self.consensus.leader().and_then(|(rid, _)| self.consensus.node_of(rid)),
            term: self.consensus.term(),
            joining: self.consensus.is_joining(),
            resets: self.consensus.panics,
            rejected: self.consensus.rejected,
        }
    }

    pub(crate) fn servers(&self) -> Vec<ServerInfo> {
        let mut v = vec![ServerInfo {
            id: self.me,
            name: self.name.clone(),
            addrs: self.advertise.clone(),
            load: self.load,
            live: true,
            master: self.master.master == Some(self.me),
        }];
        for (id, k) in self.roster.iter() {
            v.push(ServerInfo {
                id: *id,
                name: k.name.clone(),
                addrs: k.addrs.clone(),
                load: k.load,
                live: self.live.contains_key(id),
                master: self.master.master == Some(*id),
            });
        }
        v
    }

    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next real deadline: a redial, a Raft tick that acts (see
    /// [`Consensus::ticks_until_due`]), the end of a leadership-transfer
    /// pause, or — while the cluster is still forming or changing — every
    /// tick, because group politics run on time-outs. A settled cluster
    /// only wakes for Raft; a server alone never does. (Stale servers are
    /// forgotten at the next wake-up: a known server is redialed anyway.)
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let dial = self.roster.next_due(|id| self.live.contains_key(id), !self.live.is_empty());
        let tick = self.cfg.raft_tick;
        let raft = self.consensus.ticks_until_due().map(|k| {
            let ahead = u32::try_from(k.saturating_sub(1)).unwrap_or(u32::MAX);
            self.next_tick.checked_add(tick.saturating_mul(ahead)).unwrap_or(self.next_tick)
        });
        let politics = (!self.settled()).then_some(self.next_tick);
        let transfer = self.last_transfer.map(|t| t + TRANSFER_PAUSE);
        [dial, raft, politics, transfer].into_iter().flatten().min()
    }

    /// Whether group politics have nothing to do until an input comes: we
    /// are in a group with a leader and no change pending, every live
    /// server reports that group, and — as the leader sees it, which is
    /// what decides membership — the group is exactly the live servers.
    fn settled(&self) -> bool {
        let Some(cluster) = self.consensus.cluster() else { return false };
        let quiet = !self.consensus.is_joining()
            && self.consensus.leader().is_some()
            && !self.consensus.has_pending_conf()
            && !self.consensus.has_learners()
            && !self.dissolving
            && self.leaderless_since.is_none()
            && self.unaffiliated_since.is_none()
            && self.target_lost_since.is_none();
        let statuses = || self.live.values().map(|l| l.status);
        let same_group = statuses().all(|s| s.is_some_and(|s| s.cluster == Some(cluster) && !s.joining));
        let members_live = !self.consensus.is_leader()
            || (self.consensus.voter_count() == self.live.len() + 1
                && statuses().flatten().all(|s| self.consensus.is_voter(s.raft_id)));
        quiet && same_group && members_live
    }

    /// Applies the Raft ticks due by `now` (see
    /// [`Consensus::ticks_until_due`]); called before every input, so
    /// raft-rs sees ticks and messages in time order.
    fn advance_ticks(&mut self, now: Instant) {
        // Beyond three election timeouts more ticks change nothing that
        // these do not: a long sleep costs a bounded number.
        let mut budget = self.cfg.election_ticks.saturating_mul(3).saturating_add(1);
        while self.next_tick <= now {
            if budget == 0 {
                self.next_tick = now + self.cfg.raft_tick;
                break;
            }
            budget -= 1;
            self.next_tick += self.cfg.raft_tick;
            self.consensus.tick();
        }
    }

    /// Tells the other servers our load when it changed.
    fn flush_load(&mut self) {
        if self.load != self.load_sent {
            self.load_sent = self.load;
            self.broadcast(ClusterMsg::Load(self.load), None);
        }
    }

    /// Sets the load this server reports (number of peers, or an operator's value).
    pub(crate) fn set_load(&mut self, load: u32) {
        self.load_override = Some(load);
        self.load = load;
        self.flush_load();
    }

    /// The peer behind a relay token, if it is connected here.
    pub(crate) fn relay_source(&self, token: &[u8; crate::wire::TOKEN_LEN]) -> Option<NodeId> {
        self.peers.by_token(token)
    }

    /// The relay token of a peer connected here.
    pub(crate) fn relay_token(&self, peer: &NodeId) -> Option<[u8; crate::wire::TOKEN_LEN]> {
        self.peers.token_of(peer)
    }

    /// Peers connected to this server (the seed's table A), with their
    /// reported links (table B).
    pub(crate) fn directory(&self) -> Vec<DirectoryRow> {
        self.peers
            .ids()
            .filter_map(|id| {
                let r = self.peers.get(id)?;
                Some(DirectoryRow {
                    id: *id,
                    name: r.name.clone(),
                    addrs: r.addrs.clone(),
                    links: r.links.iter().map(|(k, v)| LinkRow { id: *k, path: *v }).collect(),
                })
            })
            .collect()
    }

    fn send_peer(&mut self, to: NodeId, msg: PeerMsg) {
        self.actions.push_back(Action::Send { to, msg: Control::Peer(msg) });
    }

    fn broadcast_peers(&mut self, msg: &PeerMsg) {
        let to: Vec<NodeId> = self.peers.ids().copied().collect();
        if !to.is_empty() {
            self.actions.push_back(Action::Broadcast { to, msg: Control::Peer(msg.clone()) });
        }
    }

    fn peer_load_changed(&mut self) {
        if self.load_override.is_none() {
            self.load = u32::try_from(self.peers.len()).unwrap_or(u32::MAX);
        }
    }

    /// A peer connected to this server.
    fn peer_up(&mut self, meta: &LinkMeta) {
        let mut token = [0u8; crate::wire::TOKEN_LEN];
        self.rng.fill(&mut token);
        let mut out = Vec::new();
        self.peers.join(meta.id, meta.name.clone(), meta.remote_addr, token, &mut out);
        let mut servers = self.live_list(meta.id);
        servers.sort_by_key(|e| e.id);
        self.send_peer(meta.id, PeerMsg::Servers(servers));
        self.send_peer(meta.id, PeerMsg::Master(self.master));
        for (to, msg) in out {
            self.send_peer(to, msg);
        }
        self.peer_load_changed();
    }

    /// The packets of a connected peer now come from `addr` (QUIC followed
    /// the move): tell the peer, whose report updates everyone's directory.
    pub(crate) fn on_remote_moved(&mut self, id: NodeId, addr: SocketAddr) {
        if self.peers.get(&id).is_some() {
            self.send_peer(id, PeerMsg::Observed(addr));
        }
    }

    /// A message from a connected peer.
    pub(crate) fn on_peer_message(&mut self, from: NodeId, msg: PeerMsg) {
        if self.peers.get(&from).is_none() {
            return;
        }
        match msg {
            PeerMsg::Info(addrs) => {
                let mut out = Vec::new();
                self.peers.update(from, addrs, &mut out);
                for (to, msg) in out {
                    self.send_peer(to, msg);
                }
            }
            PeerMsg::LinkSet { peer, path } => self.peers.set_link(from, peer, path),
            PeerMsg::LinkDrop { peer } => self.peers.drop_link(from, peer),
            PeerMsg::Resync => {
                let snapshot = self.peers.snapshot(from);
                self.send_peer(from, snapshot);
            }
            // Server-to-peer messages are not accepted from peers.
            _ => {}
        }
    }

    // ----- inputs ---------------------------------------------------------

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.advance_ticks(now);
        // A transfer pause that is over is no deadline any more.
        if self.last_transfer.is_some_and(|t| now.saturating_duration_since(t) >= TRANSFER_PAUSE) {
            self.last_transfer = None;
        }
        self.flush_load();
        self.forget_stale(now);
        self.dial_due(now);
        self.reconcile(now);
    }

    pub(crate) fn on_link_up(&mut self, now: Instant, meta: &LinkMeta) {
        self.advance_ticks(now);
        if meta.id.role() != Role::Server {
            self.peer_up(meta);
            self.flush_load();
            return;
        }
        let entry = meta.server_entry();
        let first_time = self.roster.learn_direct(now, &entry);
        self.roster.on_link_up(now, &meta.id);
        // A repeated link-up (a duplicate connection swapped in) restates our
        // state but is not news to the user.
        let kept = if first_time { None } else { self.live.get(&meta.id).and_then(|l| l.status) };
        let was_live = self.live.insert(meta.id, Live { elder: meta.elder, status: kept }).is_some();
        if first_time {
            self.broadcast(ClusterMsg::Joined(entry), Some(meta.id));
        }
        if meta.join {
            let list = self.live_list(meta.id);
            self.send(meta.id, ClusterMsg::List(list));
        }
        self.send(meta.id, ClusterMsg::Status(self.status()));
        if self.load != 0 {
            self.send(meta.id, ClusterMsg::Load(self.load));
        }
        if !was_live {
            self.actions.push_back(Action::Event(Event::ServerUp { id: meta.id, name: meta.name.clone() }));
            if let Some(e) = self.roster.entry(&meta.id) {
                self.broadcast_peers(&PeerMsg::ServerUp(e));
            }
        }
        self.reconcile(now);
    }

    pub(crate) fn on_link_down(&mut self, now: Instant, id: NodeId) {
        self.advance_ticks(now);
        if id.role() != Role::Server {
            let mut out = Vec::new();
            self.peers.leave(&id, &mut out);
            for (to, msg) in out {
                self.send_peer(to, msg);
            }
            self.peer_load_changed();
            self.flush_load();
            return;
        }
        if self.live.remove(&id).is_none() {
            return;
        }
        let name = self.roster.get(&id).map(|k| k.name.clone()).unwrap_or_default();
        self.roster.on_link_down(now, &id, !self.live.is_empty(), &mut self.rng);
        self.actions.push_back(Action::Event(Event::ServerDown { id, name }));
        self.broadcast_peers(&PeerMsg::ServerDown(id));
        self.reconcile(now);
    }

    pub(crate) fn on_dial_done(
        &mut self,
        now: Instant,
        expect: Expect,
        addr: SocketAddr,
        outcome: &DialOutcome,
    ) {
        if let Some(e) = self.roster.on_dial_done(now, expect, addr, outcome, &mut self.rng) {
            self.actions.push_back(Action::Event(e));
        }
        self.dial_due(now);
    }

    pub(crate) fn on_message(&mut self, now: Instant, from: NodeId, msg: ClusterMsg) {
        if !self.live.contains_key(&from) {
            return;
        }
        self.advance_ticks(now);
        match msg {
            ClusterMsg::List(entries) => {
                for e in entries.into_iter().take(4096) {
                    // A server we are linked to speaks for itself.
                    if !self.live.contains_key(&e.id) && self.roster.learn(now, &e) {
                        self.broadcast(ClusterMsg::Joined(e), Some(from));
                    }
                }
                self.dial_due(now);
            }
            ClusterMsg::Joined(e) => {
                if !self.live.contains_key(&e.id) && self.roster.learn(now, &e) {
                    self.broadcast(ClusterMsg::Joined(e), Some(from));
                }
                self.dial_due(now);
            }
            ClusterMsg::Load(load) => {
                self.roster.set_load(&from, load);
                // The least loaded voter may now be another.
                self.reconcile(now);
            }
            ClusterMsg::Status(st) => {
                self.consensus.learn(st.raft_id, from);
                if let Some(l) = self.live.get_mut(&from) {
                    l.status = Some(st);
                }
                self.reconcile(now);
            }
            ClusterMsg::Dismiss { cluster, raft_id } => {
                if self.consensus.cluster() == Some(cluster) && self.consensus.raft_id() == raft_id {
                    self.consensus.leave();
                    self.reconcile(now);
                }
            }
            ClusterMsg::Raft { cluster, msg } => {
                let from_raft = self.live.get(&from).and_then(|l| l.status).map(|s| s.raft_id);
                if let Some(rid) = from_raft {
                    self.consensus.step(cluster, rid, &msg);
                    self.flush_raft();
                    self.reconcile(now);
                }
            }
        }
    }

    // ----- internals ------------------------------------------------------

    fn send(&mut self, to: NodeId, msg: ClusterMsg) {
        self.actions.push_back(Action::Send { to, msg: Control::Cluster(msg) });
    }

    fn broadcast(&mut self, msg: ClusterMsg, except: Option<NodeId>) {
        let to: Vec<NodeId> = self.live.keys().copied().filter(|id| Some(*id) != except).collect();
        if !to.is_empty() {
            self.actions.push_back(Action::Broadcast { to, msg: Control::Cluster(msg) });
        }
    }

    fn live_list(&self, except: NodeId) -> Vec<ServerEntry> {
        let mut list = vec![ServerEntry {
            id: self.me,
            name: self.name.clone(),
            addrs: self.advertise.clone(),
            incarnation: self.incarnation,
            load: self.load,
        }];
        list.extend(self.live.keys().filter(|id| **id != except).filter_map(|id| self.roster.entry(id)));
        list
    }

    fn forget_stale(&mut self, now: Instant) {
        let live = &self.live;
        self.roster.forget_stale(now, |id| live.contains_key(id));
    }

    fn dial_due(&mut self, now: Instant) {
        let live = &self.live;
        for d in self.roster.due(now, |id| live.contains_key(id), !live.is_empty()) {
            self.actions.push_back(Action::Dial { expect: d.expect, addr: d.addr, join: d.join });
        }
    }

    fn status(&self) -> RaftStatus {
        RaftStatus {
            cluster: self.consensus.cluster(),
            raft_id: self.consensus.raft_id(),
            voters: self.present_voters() as u32,
            joining: self.consensus.is_joining(),
        }
    }

    /// Voters of our group that are here: ourselves, and live servers that
    /// report our group under the same Raft ID.
    fn present_voters(&self) -> usize {
        let cluster = self.consensus.cluster();
        self.consensus
            .voters()
            .iter()
            .filter(|v| {
                **v == self.consensus.raft_id()
                    || self
                        .live
                        .values()
                        .any(|l| l.status.is_some_and(|s| s.raft_id == **v && s.cluster == cluster))
            })
            .count()
    }

    /// Sends Raft's outbox and announces status changes.
    fn flush_raft(&mut self) {
        let cluster = self.consensus.cluster().unwrap_or(0);
        for out in self.consensus.take_outbox() {
            if let Some(node) = self.consensus.node_of(out.to)
                && self.live.contains_key(&node)
            {
                self.send(node, ClusterMsg::Raft { cluster, msg: out.bytes });
            }
        }
        let st = self.status();
        if self.last_status != Some(st) {
            self.last_status = Some(st);
            self.broadcast(ClusterMsg::Status(st), None);
        }
    }

    /// The best group among live servers' statuses (members, not joiners),
    /// and one of its members.
    fn best_foreign_group(&self) -> Option<(GroupRank, NodeId)> {
        let mine = self.consensus.cluster();
        self.live
            .iter()
            .filter_map(|(id, l)| {
                let st = l.status?;
                let cluster = st.cluster?;
                let rank = GroupRank { voters: st.voters, cluster };
                (!st.joining && Some(cluster) != mine).then_some((rank, *id))
            })
            .max_by(|a, b| a.0.cmp(&b.0))
    }

    /// Whether the group `theirs` beats ours (see [`GroupRank`]). Between
    /// two one-voter groups the elder server's wins (a stable, agreed
    /// verdict), which keeps the eldest Master as a cluster grows.
    fn beaten_by(&self, theirs: GroupRank, member: NodeId) -> bool {
        let mine = GroupRank {
            voters: self.present_voters() as u32,
            cluster: self.consensus.cluster().unwrap_or(u64::MAX),
        };
        if theirs.voters != mine.voters {
            return theirs.voters > mine.voters;
        }
        if mine.voters <= 1 {
            return self.live.get(&member).is_some_and(|l| l.elder);
        }
        theirs.cluster < mine.cluster
    }

    /// Joins, founds or leaves Raft groups as the situation requires.
    ///
    /// A server belongs to at most one group. Groups only ever lose voters
    /// through their leader (a committed removal, then a `Dismiss`), so a
    /// group never waits for a voter that walked away:
    ///
    /// * unaffiliated: join the best group around, or found one if there is
    ///   none and no elder unaffiliated server is about to;
    /// * joining (not yet a voter): give up if the group disappears, or move
    ///   to a better one — a learner does not count towards quorum;
    /// * leading a group beaten by another: dismiss the other members one at
    ///   a time, then leave and join the winner;
    /// * in a group that can provably never elect a leader again: leave.
    fn manage_groups(&mut self, now: Instant) {
        if self.consensus.was_removed() {
            self.consensus.leave();
        }
        let best = self.best_foreign_group();
        let election = self.cfg.raft_tick * (self.cfg.election_ticks as u32);
        match self.consensus.cluster() {
            None => {
                let since = *self.unaffiliated_since.get_or_insert(now);
                if let Some((group, _)) = best {
                    self.consensus.join(group.cluster);
                } else {
                    let elder_waiting = self
                        .live
                        .values()
                        .any(|l| l.elder && l.status.is_some_and(|s| s.cluster.is_none() || s.joining));
                    // Wait for an elder to found, but not forever (elder
                    // verdicts between three or more servers can be cyclic).
                    if !elder_waiting || now.saturating_duration_since(since) >= election * 2 {
                        let term = self.consensus.max_term().saturating_add(1);
                        self.consensus.found(term);
                    }
                }
            }
            Some(cluster) if self.consensus.is_joining() => {
                let target_alive = self
                    .live
                    .values()
                    .any(|l| l.status.is_some_and(|s| s.cluster == Some(cluster) && !s.joining));
                let since = *self.target_lost_since.get_or_insert(now);
                if target_alive {
                    self.target_lost_since = None;
                }
                let better = best.filter(|(g, _)| {
                    let target = self.group_rank_of(cluster);
                    target.is_none_or(|t| *g > t)
                });
                if let Some((group, _)) = better {
                    self.target_lost_since = None;
                    self.consensus.join(group.cluster);
                } else if !target_alive && now.saturating_duration_since(since) >= election {
                    self.target_lost_since = None;
                    self.consensus.leave();
                }
            }
            Some(_) => {
                self.target_lost_since = None;
                if let Some((group, member)) = best
                    && self.consensus.is_leader()
                    && self.beaten_by(group, member)
                {
                    self.dissolving = true;
                    if self.consensus.voters().len() + self.consensus.learners().len() <= 1 {
                        // Alone in the group: move over.
                        self.consensus.leave();
                        self.consensus.join(group.cluster);
                        self.dissolving = false;
                    }
                } else {
                    self.dissolving = false;
                }
            }
        }
        if self.consensus.cluster().is_some() {
            self.unaffiliated_since = None;
        }
    }

    /// The best rank any live member reports for `cluster`.
    fn group_rank_of(&self, cluster: u64) -> Option<GroupRank> {
        self.live
            .values()
            .filter_map(|l| l.status)
            .filter(|s| s.cluster == Some(cluster) && !s.joining)
            .map(|s| GroupRank { voters: s.voters, cluster })
            .max()
    }

    fn reconcile(&mut self, now: Instant) {
        self.manage_groups(now);
        self.leader_duties(now);
        self.recover_stuck_group(now);
        let rank = self.live.values().filter(|l| l.elder).count();
        self.consensus.set_rank(rank);
        self.flush_raft();
        self.dismiss_removed();
        self.update_master();
    }

    /// Tells servers removed from our group that they are out.
    fn dismiss_removed(&mut self) {
        let Some(cluster) = self.consensus.cluster() else {
            self.consensus.take_removed();
            return;
        };
        if !self.consensus.is_leader() {
            self.consensus.take_removed();
            return;
        }
        for raft_id in self.consensus.take_removed() {
            if let Some(node) = self.consensus.node_of(raft_id)
                && self.live.contains_key(&node)
            {
                self.send(node, ClusterMsg::Dismiss { cluster, raft_id });
            }
        }
    }

    fn leader_duties(&mut self, now: Instant) {
        if !self.consensus.is_leader() || self.consensus.has_pending_conf() {
            return;
        }
        let me_raft = self.consensus.raft_id();
        let voters = self.consensus.voters();
        let learners = self.consensus.learners();
        let cluster = self.consensus.cluster();
        if self.dissolving {
            // Hand members to the winning group one at a time, learners first.
            if let Some(m) = learners.iter().chain(&voters).find(|m| **m != me_raft) {
                self.consensus.propose_remove(*m);
            }
            return;
        }
        // Remove members whose server is down, has come back under another
        // Raft ID, or (learners only) has moved to another group.
        for m in voters.iter().chain(&learners) {
            if *m == me_raft {
                continue;
            }
            let learner = learners.contains(m);
            let gone = match self.consensus.node_of(*m) {
                Some(node) => match self.live.get(&node) {
                    Some(l) => l.status.is_some_and(|s| s.raft_id != *m || (learner && s.cluster != cluster)),
                    None => true,
                },
                None => true,
            };
            if gone {
                self.consensus.propose_remove(*m);
                return;
            }
        }
        // Promote learners that have caught up and still want in.
        for l in &learners {
            let Some(node) = self.consensus.node_of(*l) else { continue };
            let wants = self
                .live
                .get(&node)
                .and_then(|x| x.status)
                .is_some_and(|s| s.raft_id == *l && s.cluster == cluster);
            if wants && self.consensus.caught_up(*l) {
                self.consensus.propose_add(*l, node);
                return;
            }
        }
        // Add live servers that want to be in this group, as learners first.
        let joiner = self.live.iter().find_map(|(id, l)| {
            let s = l.status?;
            (s.cluster == cluster && !voters.contains(&s.raft_id) && !learners.contains(&s.raft_id))
                .then_some((s.raft_id, *id))
        });
        if let Some((rid, node)) = joiner {
            self.consensus.propose_add_learner(rid, node);
            return;
        }
        // Keep leadership where the Master rules put the Master.
        if self.last_transfer.is_some_and(|t| now.saturating_duration_since(t) < TRANSFER_PAUSE) {
            return;
        }
        self.last_transfer = None;
        let target = if self.live.len() == 1 {
            // Two live servers: the eldest should lead so growing to three keeps it Master.
            self.live.iter().find(|(_, l)| l.elder).and_then(|(_, l)| l.status.map(|s| s.raft_id))
        } else if self.cfg.prefer_least_loaded && self.live.len() >= 2 {
            self.least_loaded_voter(&voters)
        } else {
            None
        };
        if let Some(rid) = target
            && voters.contains(&rid)
            && rid != me_raft
        {
            self.last_transfer = Some(now);
            self.consensus.transfer_to(rid);
        }
    }

    fn least_loaded_voter(&self, voters: &[u64]) -> Option<u64> {
        let (rid, load) = self
            .live
            .iter()
            .filter_map(|(id, l)| {
                let s = l.status?;
                voters.contains(&s.raft_id).then(|| (s.raft_id, self.roster.get(id).map_or(0, |k| k.load)))
            })
            .min_by_key(|(_, load)| *load)?;
        let mine = f64::from(self.load);
        (mine > f64::from(load) * self.cfg.load_ratio && self.load >= load + 10).then_some(rid)
    }

    fn recover_stuck_group(&mut self, now: Instant) {
        if self.consensus.cluster().is_none()
            || self.consensus.is_joining()
            || self.consensus.leader().is_some()
        {
            self.leaderless_since = None;
            return;
        }
        let since = *self.leaderless_since.get_or_insert(now);
        let election = self.cfg.raft_tick * (self.cfg.election_ticks as u32);
        // Leaving is only ever done when a majority is provably gone, so one
        // election timeout of silence is enough to look.
        if now.saturating_duration_since(since) < election {
            return;
        }
        // Voters that may still be alive somewhere: all but those whose server
        // is live under a different Raft ID (restarted or moved on).
        let voters = self.consensus.voters();
        let maybe_alive = voters
            .iter()
            .filter(|v| {
                let Some(node) = self.consensus.node_of(**v) else { return true };
                match self.live.get(&node) {
                    Some(l) => {
                        l.status.is_none_or(|s| s.raft_id == **v && s.cluster == self.consensus.cluster())
                    }
                    None => true,
                }
            })
            .count();
        if maybe_alive <= voters.len() / 2 {
            // The group can never elect a leader again: leave it; the next
            // round joins the best group around or founds a new one.
            self.consensus.leave();
            self.leaderless_since = None;
        }
    }

    fn update_master(&mut self) {
        let others: Vec<(NodeId, bool)> = self.live.iter().map(|(id, l)| (*id, l.elder)).collect();
        // A Raft leader counts only if its group holds a majority of the live
        // servers: a newcomer's one-voter group, or a group in the middle of a
        // merge, leads nobody.
        let live_voters = self.present_voters();
        let majority = live_voters > self.live.len().div_ceil(2);
        let leader = self.consensus.leader().filter(|_| majority).and_then(|(rid, term)| {
            let node = self.consensus.node_of(rid)?;
            (node == self.me || self.live.contains_key(&node)).then_some((node, term))
        });
        let mut m = decide(self.me, &others, leader);
        if m.basis == Some(election::MasterBasis::Raft) {
            m.epoch = self.consensus.cluster().unwrap_or(0);
        }
        if m != self.master {
            self.master = m;
            self.broadcast_peers(&PeerMsg::Master(m));
            self.actions.push_back(Action::Event(Event::MasterChanged {
                master: m.master,
                basis: m.basis,
                term: m.term,
                epoch: m.epoch,
            }));
        }
    }
}
