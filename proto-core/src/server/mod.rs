//! The server role: cluster membership (the server list, the seed's table
//! C), the full mesh, liveness, and Master election.
//!
//! This is a sans-IO machine inside the sans-IO node: it consumes link events
//! and cluster messages and emits [`Action`]s (send a message, dial, report an
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

pub mod election;
pub(crate) mod raft;

use crate::config::ClusterConfig;
use crate::error::ConnectError;
use crate::event::Event;
use crate::identity::{NodeId, Role};
use crate::proto::{ClusterMsg, Control, RaftStatus, ServerEntry};
use crate::quic::Expect;
use crate::rng::NodeRng;
use election::{MasterInfo, decide};
use raft::{Consensus, RaftTiming};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What the role logic asks the node to do.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send a control message over the established connection to `to`.
    Send { to: NodeId, msg: Control },
    /// Dial a node (by ID, or any node of a role at an address).
    Dial { expect: Expect, addr: SocketAddr, join: bool },
    /// Report an event to the user.
    Event(Event),
}

/// Everything the node knows about a freshly established connection.
#[derive(Debug, Clone)]
pub(crate) struct LinkMeta {
    pub(crate) id: NodeId,
    pub(crate) name: String,
    pub(crate) incarnation: u64,
    /// Addresses the remote advertised.
    pub(crate) addrs: Vec<SocketAddr>,
    /// Whether the remote has run longer than this node (agreed verdict).
    pub(crate) elder: bool,
    /// The remote dialed us to join and wants the server list.
    pub(crate) join: bool,
}

/// How a dial ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DialOutcome {
    /// Established with this node.
    Connected(NodeId),
    /// Another connection to the same node won the tie-break (or already existed).
    Superseded,
    /// Failed.
    Failed(ConnectError),
}

/// How Raft groups compare when they meet: lexicographically by term (the
/// higher wins), voters (more wins), then cluster ID (the smaller wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GroupRank {
    term: u64,
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
        (self.term, self.voters).cmp(&(other.term, other.voters)).then(other.cluster.cmp(&self.cluster))
    }
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
struct Known {
    name: String,
    addrs: Vec<SocketAddr>,
    incarnation: u64,
    load: u32,
    dialing: bool,
    backoff: Duration,
    next_dial: Instant,
    /// When it was last live (or first learned of).
    last_seen: Instant,
}

#[derive(Debug)]
struct Live {
    elder: bool,
    status: Option<RaftStatus>,
}

#[derive(Debug)]
struct Bootstrap {
    addr: SocketAddr,
    dialing: bool,
    backoff: Duration,
    next: Instant,
}

/// The server role state machine.
pub(crate) struct Server {
    me: NodeId,
    name: String,
    incarnation: u64,
    advertise: Vec<SocketAddr>,
    cfg: ClusterConfig,
    known: BTreeMap<NodeId, Known>,
    live: BTreeMap<NodeId, Live>,
    bootstrap: Vec<Bootstrap>,
    consensus: Consensus,
    master: MasterInfo,
    load: u32,
    load_sent: u32,
    next_tick: Instant,
    last_status: Option<RaftStatus>,
    last_transfer: Option<Instant>,
    leaderless_since: Option<Instant>,
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
            bootstrap: bootstrap
                .iter()
                .map(|&addr| Bootstrap { addr, dialing: false, backoff: cfg.reconnect_min, next: now })
                .collect(),
            next_tick: now + cfg.raft_tick,
            cfg,
            known: BTreeMap::new(),
            live: BTreeMap::new(),
            consensus,
            master: MasterInfo::NONE,
            load: 0,
            load_sent: 0,
            last_status: None,
            last_transfer: None,
            leaderless_since: None,
            rng,
            actions: VecDeque::new(),
        };
        s.consensus.found(0);
        s.flush_raft();
        s.update_master();
        s.dial_due(now);
        s
    }

    // ----- getters ------------------------------------------------------

    pub(crate) fn master(&self) -> MasterInfo {
        self.master
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
        for (id, k) in &self.known {
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

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_tick;
        for (id, k) in &self.known {
            if !k.dialing && !k.addrs.is_empty() && !self.live.contains_key(id) {
                t = t.min(k.next_dial);
            }
        }
        if self.live.is_empty() {
            for b in &self.bootstrap {
                if !b.dialing {
                    t = t.min(b.next);
                }
            }
        }
        Some(t)
    }

    /// Sets the load this server reports (number of peers, or an operator's value).
    pub(crate) fn set_load(&mut self, load: u32) {
        self.load = load;
    }

    // ----- inputs ---------------------------------------------------------

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        while self.next_tick <= now {
            self.next_tick += self.cfg.raft_tick;
            self.consensus.tick();
        }
        if self.next_tick <= now {
            self.next_tick = now + self.cfg.raft_tick;
        }
        if self.load != self.load_sent {
            self.load_sent = self.load;
            self.broadcast(ClusterMsg::Load(self.load), None);
        }
        self.forget_stale(now);
        self.dial_due(now);
        self.reconcile(now);
    }

    pub(crate) fn on_link_up(&mut self, now: Instant, meta: &LinkMeta) {
        if meta.id.role() != Role::Server {
            return;
        }
        let entry = ServerEntry {
            id: meta.id,
            name: meta.name.clone(),
            addrs: meta.addrs.clone(),
            incarnation: meta.incarnation,
            load: 0,
        };
        let first_time = self.learn(now, &entry);
        if let Some(k) = self.known.get_mut(&meta.id) {
            k.dialing = false;
            k.backoff = self.cfg.reconnect_min;
            k.last_seen = now;
        }
        self.live.insert(meta.id, Live { elder: meta.elder, status: None });
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
        self.actions.push_back(Action::Event(Event::ServerUp { id: meta.id, name: meta.name.clone() }));
        self.reconcile(now);
    }

    pub(crate) fn on_link_down(&mut self, now: Instant, id: NodeId) {
        if self.live.remove(&id).is_none() {
            return;
        }
        let name = match self.known.get_mut(&id) {
            Some(k) => {
                k.dialing = false;
                k.backoff = self.cfg.reconnect_min;
                k.next_dial = now + self.rng.jitter(self.cfg.reconnect_min, 0.2);
                k.last_seen = now;
                k.name.clone()
            }
            None => String::new(),
        };
        if self.live.is_empty() {
            for b in &mut self.bootstrap {
                b.dialing = false;
                b.next = now;
            }
        }
        self.actions.push_back(Action::Event(Event::ServerDown { id, name }));
        self.reconcile(now);
    }

    pub(crate) fn on_dial_done(
        &mut self,
        now: Instant,
        expect: Expect,
        addr: SocketAddr,
        outcome: &DialOutcome,
    ) {
        match expect {
            Expect::Node(id) => {
                if let Some(k) = self.known.get_mut(&id) {
                    k.dialing = false;
                    match outcome {
                        DialOutcome::Failed(_) => {
                            k.next_dial = now + self.rng.jitter(k.backoff, 0.2);
                            k.backoff = (k.backoff * 2).min(self.cfg.reconnect_max);
                        }
                        // Another connection is on its way; check again later in
                        // case it fails without a word.
                        DialOutcome::Superseded => k.next_dial = now + self.cfg.reconnect_min,
                        DialOutcome::Connected(_) => {}
                    }
                }
            }
            Expect::AnyOf(_) => {
                let Some(b) = self.bootstrap.iter_mut().find(|b| b.addr == addr) else { return };
                b.dialing = false;
                match outcome {
                    DialOutcome::Failed(error) => {
                        let retry_in = self.rng.jitter(b.backoff, 0.2);
                        b.next = now + retry_in;
                        b.backoff = (b.backoff * 2).min(self.cfg.reconnect_max);
                        self.actions.push_back(Action::Event(Event::BootstrapFailed {
                            addr,
                            error: error.clone(),
                            retry_in,
                        }));
                    }
                    DialOutcome::Connected(_) | DialOutcome::Superseded => {
                        b.backoff = self.cfg.reconnect_min;
                        b.next = now + self.cfg.reconnect_min;
                    }
                }
            }
        }
        self.dial_due(now);
    }

    pub(crate) fn on_message(&mut self, now: Instant, from: NodeId, msg: ClusterMsg) {
        if !self.live.contains_key(&from) {
            return;
        }
        match msg {
            ClusterMsg::List(entries) => {
                for e in entries.into_iter().take(4096) {
                    if self.learn(now, &e) {
                        self.broadcast(ClusterMsg::Joined(e), Some(from));
                    }
                }
                self.dial_due(now);
            }
            ClusterMsg::Joined(e) => {
                if self.learn(now, &e) {
                    self.broadcast(ClusterMsg::Joined(e), Some(from));
                }
                self.dial_due(now);
            }
            ClusterMsg::Load(load) => {
                if let Some(k) = self.known.get_mut(&from) {
                    k.load = load;
                }
            }
            ClusterMsg::Status(st) => {
                self.consensus.learn(st.raft_id, from);
                if let Some(l) = self.live.get_mut(&from) {
                    l.status = Some(st);
                }
                self.reconcile(now);
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
        for id in to {
            self.send(id, msg.clone());
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
        for id in self.live.keys() {
            if *id == except {
                continue;
            }
            if let Some(k) = self.known.get(id) {
                list.push(ServerEntry {
                    id: *id,
                    name: k.name.clone(),
                    addrs: k.addrs.clone(),
                    incarnation: k.incarnation,
                    load: k.load,
                });
            }
        }
        list
    }

    /// Records a server; true if this ID and incarnation are news.
    fn learn(&mut self, now: Instant, e: &ServerEntry) -> bool {
        if e.id == self.me || e.id.role() != Role::Server {
            return false;
        }
        match self.known.get_mut(&e.id) {
            Some(k) if k.incarnation == e.incarnation => false,
            Some(k) => {
                k.incarnation = e.incarnation;
                k.name = e.name.clone();
                k.addrs = e.addrs.clone();
                k.load = e.load;
                k.last_seen = now;
                true
            }
            None => {
                self.known.insert(
                    e.id,
                    Known {
                        name: e.name.clone(),
                        addrs: e.addrs.clone(),
                        incarnation: e.incarnation,
                        load: e.load,
                        dialing: false,
                        backoff: self.cfg.reconnect_min,
                        next_dial: now,
                        last_seen: now,
                    },
                );
                true
            }
        }
    }

    fn forget_stale(&mut self, now: Instant) {
        let forget = self.cfg.forget_after;
        let stale: Vec<NodeId> = self
            .known
            .iter()
            .filter(|(id, k)| {
                !self.live.contains_key(id)
                    && !k.dialing
                    && now.saturating_duration_since(k.last_seen) > forget
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.known.remove(&id);
        }
    }

    fn dial_due(&mut self, now: Instant) {
        let due: Vec<(NodeId, SocketAddr)> = self
            .known
            .iter()
            .filter(|(id, k)| !self.live.contains_key(id) && !k.dialing && k.next_dial <= now)
            .filter_map(|(id, k)| k.addrs.first().map(|a| (*id, *a)))
            .collect();
        for (id, addr) in due {
            if let Some(k) = self.known.get_mut(&id) {
                k.dialing = true;
            }
            self.actions.push_back(Action::Dial { expect: Expect::Node(id), addr, join: false });
        }
        if self.live.is_empty() {
            for b in &mut self.bootstrap {
                if !b.dialing && b.next <= now {
                    b.dialing = true;
                    self.actions.push_back(Action::Dial {
                        expect: Expect::AnyOf(Role::Server),
                        addr: b.addr,
                        join: true,
                    });
                }
            }
        }
    }

    fn status(&self) -> RaftStatus {
        RaftStatus {
            cluster: self.consensus.cluster(),
            raft_id: self.consensus.raft_id(),
            voters: self.consensus.voters().len() as u32,
            joining: self.consensus.is_joining(),
            term: self.consensus.term(),
        }
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

    /// The best group among live servers' statuses, and one of its members.
    fn best_foreign_group(&self) -> Option<(GroupRank, NodeId)> {
        let mine = self.consensus.cluster();
        self.live
            .iter()
            .filter_map(|(id, l)| {
                let st = l.status?;
                let cluster = st.cluster?;
                (!st.joining && Some(cluster) != mine)
                    .then_some((GroupRank { term: st.term, voters: st.voters, cluster }, *id))
            })
            .max_by(|a, b| a.0.cmp(&b.0))
    }

    /// Whether this server should leave its group for the group `theirs`.
    ///
    /// The group with the higher Raft term wins (so the term — the Master's
    /// fencing token — never goes backwards when groups merge), then the one
    /// with more voters (less churn); between two one-voter groups the younger
    /// server yields to the elder, which keeps the eldest Master as a cluster
    /// grows.
    fn should_yield_to(&self, theirs: GroupRank, member: NodeId) -> bool {
        if self.consensus.is_joining() {
            // Joining a group nobody live belongs to any more: take the live one.
            let target_alive = self
                .live
                .values()
                .any(|l| l.status.is_some_and(|s| s.cluster == self.consensus.cluster() && !s.joining));
            return !target_alive;
        }
        let mine = GroupRank {
            term: self.consensus.term(),
            voters: self.consensus.voters().len() as u32,
            cluster: self.consensus.cluster().unwrap_or(u64::MAX),
        };
        if (theirs.term, theirs.voters) != (mine.term, mine.voters) {
            return (theirs.term, theirs.voters) > (mine.term, mine.voters);
        }
        if mine.voters <= 1 {
            return self.live.get(&member).is_some_and(|l| l.elder);
        }
        theirs.cluster < mine.cluster
    }

    fn reconcile(&mut self, now: Instant) {
        // Merge into a better group.
        if let Some((group, member)) = self.best_foreign_group()
            && self.should_yield_to(group, member)
        {
            self.consensus.join(group.cluster);
            self.leaderless_since = None;
        }
        // A joiner whose group vanished, with no group around: found anew if
        // no elder joiner is about to.
        if self.consensus.is_joining() && self.best_foreign_group().is_none() {
            let target_alive = self
                .live
                .values()
                .any(|l| l.status.is_some_and(|s| s.cluster == self.consensus.cluster() && !s.joining));
            let elder_joiner = self.live.values().any(|l| l.elder && l.status.is_some_and(|s| s.joining));
            if !target_alive && !elder_joiner {
                let term = self.consensus.term();
                self.consensus.found(term + 1);
            }
        }
        self.leader_duties(now);
        self.recover_stuck_group(now);
        let rank = self.live.values().filter(|l| l.elder).count();
        self.consensus.set_rank(rank);
        self.flush_raft();
        self.update_master();
    }

    fn leader_duties(&mut self, now: Instant) {
        if !self.consensus.is_leader() || self.consensus.has_pending_conf() {
            return;
        }
        let me_raft = self.consensus.raft_id();
        let voters = self.consensus.voters();
        // Remove voters whose server is down or has come back under another Raft ID.
        for v in &voters {
            if *v == me_raft {
                continue;
            }
            let gone = match self.consensus.node_of(*v) {
                Some(node) => match self.live.get(&node) {
                    Some(l) => l.status.is_some_and(|s| s.raft_id != *v),
                    None => true,
                },
                None => true,
            };
            if gone {
                self.consensus.propose_remove(*v);
                return;
            }
        }
        // Add live servers that want to be in this group.
        let cluster = self.consensus.cluster();
        let joiner = self.live.iter().find_map(|(id, l)| {
            let s = l.status?;
            (s.cluster == cluster && !voters.contains(&s.raft_id)).then_some((s.raft_id, *id))
        });
        if let Some((rid, node)) = joiner {
            self.consensus.propose_add(rid, node);
            return;
        }
        // Keep leadership where the Master rules put the Master.
        let recently =
            self.last_transfer.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(2));
        if recently {
            return;
        }
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
                voters.contains(&s.raft_id).then(|| (s.raft_id, self.known.get(id).map_or(0, |k| k.load)))
            })
            .min_by_key(|(_, load)| *load)?;
        let mine = f64::from(self.load);
        (mine > f64::from(load) * self.cfg.load_ratio && self.load >= load + 10).then_some(rid)
    }

    fn recover_stuck_group(&mut self, now: Instant) {
        if self.consensus.is_joining() || self.consensus.leader().is_some() {
            self.leaderless_since = None;
            return;
        }
        let since = *self.leaderless_since.get_or_insert(now);
        let election = self.cfg.raft_tick * (self.cfg.election_ticks as u32);
        if now.saturating_duration_since(since) < election * 3 {
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
            let term = self.consensus.term();
            self.consensus.found(term + 1);
            self.leaderless_since = None;
        }
    }

    fn update_master(&mut self) {
        let others: Vec<(NodeId, bool)> = self.live.iter().map(|(id, l)| (*id, l.elder)).collect();
        // A Raft leader counts only if its group holds a majority of the live
        // servers: a newcomer's one-voter group, or a group in the middle of a
        // merge, leads nobody.
        let live_voters = self
            .consensus
            .voters()
            .iter()
            .filter(|v| {
                **v == self.consensus.raft_id()
                    || self.live.values().any(|l| l.status.is_some_and(|s| s.raft_id == **v))
            })
            .count();
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
            self.actions.push_back(Action::Event(Event::MasterChanged {
                master: m.master,
                basis: m.basis,
                term: m.term,
                epoch: m.epoch,
            }));
        }
    }
}
