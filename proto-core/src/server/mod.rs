//! The server role: a sans-IO state machine inside the sans-IO node. It
//! consumes link events, messages from other servers and messages from
//! connected peers, and emits actions (send a message, dial, report an
//! event) that the [`Node`](crate::Node) carries out.
//!
//! Its concerns live in separate files, because they change for different
//! reasons and each is easier to check on its own:
//!
//! * `membership.rs`: the server list and the mesh — which servers exist,
//!   what a joining server is told, which servers to dial. It needs no
//!   agreement: every server converges on the same list by gossip.
//! * `group.rs`: Raft group politics — founding, joining and leaving groups,
//!   how groups that meet are ranked, leadership handover, and the Master
//!   that results. This is the partition-safe part.
//! * `raft.rs` and `raft_wire.rs`: the Raft node (raft-rs) and the bounded
//!   wire form of its messages; `election.rs`: the rules that name the Master.
//! * `fanout.rs`: what connected peers are sent and what they report;
//!   `peers.rs`: the directory of connected peers those messages maintain.
//!
//! This file holds the state, the timers, the getters and the inputs. An
//! input applies the Raft ticks that are due before anything else (so
//! raft-rs sees ticks and messages in time order), hands the event to the
//! concern it belongs to, and — whenever something group politics depend on
//! changed: a timer fired, a server came or went, a Raft status, load, Raft
//! message or dismissal arrived — lets them react at once (`reconcile`).

pub(crate) mod election;
mod fanout;
mod group;
mod kv;
mod sessions;
pub(crate) use kv::MAX_WATCHES;
mod membership;
mod peers;
pub(crate) mod raft;
mod raft_log;
pub(crate) mod raft_wire;
mod relay;

use crate::config::ClusterConfig;
use crate::event::Event;
use crate::identity::{NodeId, Role};
use crate::proto::{ClusterMsg, Control, PeerMsg, RaftStatus, ServerEntry};
use crate::quic::Expect;
use crate::rng::NodeRng;
pub(crate) use crate::roster::DialOutcome;
use crate::roster::{Backoff, Roster};
use election::MasterInfo;
use group::TRANSFER_PAUSE;
use raft::{Consensus, RaftTiming};
pub(crate) use relay::LinkAddr;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

/// What the role logic asks the node to do.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send a control message over the established connection to `to`.
    Send { to: NodeId, msg: Control },
    /// Send one control message to each of `to`: encoded once, the same
    /// bytes queued on every connection.
    Broadcast { to: Vec<NodeId>, msg: Control },
    /// Send each recipient `(to, first)` the messages `msgs[first..]`, in
    /// order: each encoded once, and every recipient's share queued as one
    /// slice of the same bytes (directory deltas).
    SendFrom { msgs: Vec<Control>, to: Vec<(NodeId, usize)> },
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
    /// A lookup found no server listing the peer: fail the messages that
    /// wait for it (peers only, lookup mode).
    NotFound(NodeId),
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
    /// The remote is a peer in lookup mode (`DirectoryMode::Lookup`).
    pub(crate) lookup: bool,
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
    /// Store requests in progress.
    kv: kv::KvTables,
    /// Store sessions' liveness.
    sessions: sessions::SessionKeeper,
    /// The time of the latest input.
    clock: Instant,
    /// When the pending directory deltas go out (see `fanout.rs`).
    dir_flush_at: Option<Instant>,
    /// When directory deltas last went out.
    dir_flushed: Option<Instant>,
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
            kv: kv::KvTables::default(),
            sessions: sessions::SessionKeeper::default(),
            clock: now,
            dir_flush_at: None,
            dir_flushed: None,
        };
        let resumed = match &s.cfg.raft_disk {
            Some(table) => {
                let table: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = table.iter().cloned().collect();
                s.consensus.use_disk();
                s.consensus.resume(&table)
            }
            None => false,
        };
        if bootstrap.is_empty() && !resumed {
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
        [dial, raft, politics, transfer, self.next_expiry(), self.dir_flush_at].into_iter().flatten().min()
    }

    /// Applies the Raft ticks due by `now` (see
    /// [`Consensus::ticks_until_due`]); called before every input, so
    /// raft-rs sees ticks and messages in time order.
    fn advance_ticks(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
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

    /// Sets the load this server reports (number of peers, or an operator's value).
    pub(crate) fn set_load(&mut self, load: u32) {
        self.load_override = Some(load);
        self.load = load;
        self.flush_load();
    }

    /// The next batch of Raft state for the host's disk.
    pub(crate) fn poll_raft_write(&mut self) -> Option<crate::persist::RaftWrite> {
        self.consensus.poll_write()
    }

    /// The host stored batch `seq` durably.
    pub(crate) fn raft_written(&mut self, now: Instant, seq: u64) {
        self.advance_ticks(now);
        self.consensus.written(seq);
        self.reconcile(now);
    }

    // ----- inputs ---------------------------------------------------------

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.advance_ticks(now);
        // A transfer pause that is over is no deadline any more.
        if self.last_transfer.is_some_and(|t| now.saturating_duration_since(t) >= TRANSFER_PAUSE) {
            self.last_transfer = None;
        }
        self.flush_load();
        if self.dir_flush_at.is_some_and(|t| t <= now) {
            self.flush_directory(now);
        }
        self.forget_stale(now);
        self.dial_due(now);
        self.reconcile(now);
        if self.next_expiry().is_some_and(|t| t <= now) {
            self.expire_sessions(now);
        }
    }

    pub(crate) fn on_link_up(&mut self, now: Instant, meta: &LinkMeta) {
        self.advance_ticks(now);
        if meta.id.role() != Role::Server {
            self.peer_up(now, meta);
            self.flush_load();
            self.sessions_peer_changed(now, meta.id, true);
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
            self.kv_peer_gone(id);
            let mut out = Vec::new();
            self.peers.leave(&id, &mut out);
            self.send_all(out);
            self.directory_changed(now);
            self.peer_load_changed();
            self.flush_load();
            self.sessions_peer_changed(now, id, false);
            return;
        }
        if self.live.remove(&id).is_none() {
            return;
        }
        self.sessions_server_gone(now, id);
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
            ClusterMsg::KvForward(ask, client) => {
                self.on_kv_forward(now, from, ask, client);
            }
            ClusterMsg::KvRead { client, epoch, seq, outcome } => {
                self.on_kv_read(client, epoch, seq, outcome)
            }
            ClusterMsg::Holding { full, up, down } => self.on_holding(now, from, full, up, down),
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
}
