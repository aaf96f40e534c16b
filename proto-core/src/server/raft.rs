//! The Raft group of the server cluster (tikv raft-rs).
//!
//! The group elects a partition-safe Master and replicates the cluster's
//! store along with its own membership. This module wraps `RawNode` so the rest of the
//! server code never touches raft-rs directly.
//!
//! # Ready, persist, advance
//!
//! raft-rs hands out a `Ready` that separates messages that may be sent at
//! once from messages that may only be sent after the entries and hard state
//! of the same `Ready` are persisted. [`Consensus::process`] honours that:
//!
//! 1. send `messages()` (leader appends and heartbeats may go out before the
//!    leader's own write — Raft §10.2.1);
//! 2. install a snapshot, if any; apply `committed_entries()` (membership
//!    changes);
//! 3. persist `entries()` and the hard state — to `MemStorage`, synchronously,
//!    so "persisted" is true when the call returns;
//! 4. only then send `persisted_messages()` (votes and append responses,
//!    which must never claim something that is not yet stored);
//! 5. `advance`, record the new commit index, send the light ready's
//!    messages, apply its committed entries, `advance_apply`.
//!
//! The group also replicates the store (`crate::store`): normal entries are
//! store commands, applied in log order on every server; snapshots carry the
//! store's image (`raft_log.rs`), and confirmed reads come back as read
//! states (ReadIndex).
//!
//! Storage is in memory, so a restarted server has lost its Raft state; it
//! therefore never reuses its old Raft ID (the ID is derived from the node
//! ID, its per-boot incarnation and a generation counter), and the old member
//! is removed as provably gone. That keeps the "never vote twice in a term"
//! rule intact without disk I/O in the core.
//!
//! # Determinism
//!
//! raft-rs draws each randomized election timeout from the thread RNG. We
//! overwrite it from the node's seeded RNG after every call that may have
//! reset it, so a run replays exactly. The timeout is also ranked: a server
//! with fewer live elders campaigns earlier, which makes the eldest server
//! the usual winner and avoids needless Master flips.
//!
//! # Untrusted input
//!
//! Every byte from another server may be hostile. Raft messages therefore
//! never travel as protobuf, whose 2.x decoder recurses without bound on
//! crafted input (RUSTSEC-2024-0437): [`raft_wire`](super::raft_wire)
//! mirrors `eraftpb::Message` as a flat postcard struct with capped lists,
//! and carries membership changes as structured values that the receiver
//! re-encodes with protobuf's serializer, so protobuf only ever parses bytes
//! this process produced. raft-rs trusts its peers and panics (`fatal!`,
//! asserts, overflow, out-of-bounds) on a number of inconsistent messages;
//! before a message reaches it, [`raft_wire::check`](super::raft_wire::check)
//! validates it against our own Raft state (sender, term and index bounds,
//! types and fields we never send, entries consecutive from an anchor
//! consistent with our commit, heartbeat commits inside our log,
//! acknowledgements inside the leader's log, restorable snapshots that
//! keep our commit) and drops what a correct server never sends,
//! counting it in [`Consensus::rejected`]. Calls into raft-rs still run
//! under `catch_unwind` as a second line of defence — a panic discards the
//! group and the server rejoins under a fresh Raft ID, counted in
//! [`Consensus::panics`] — but validation is meant to keep it from ever
//! firing, which matters where the embedding builds with `panic = "abort"`.

use super::raft_log::{self, RaftLog};
use super::raft_wire::{self, Local, Members, WireKind, WireMsg};
use crate::identity::NodeId;
use crate::persist::{DiskOp, RaftWrite};
use crate::rng::NodeRng;
use crate::store::machine::{Outcome, Proposal};
use crate::store::{Command, Store};
use protobuf::Message as _;
use raft::StateRole;
use raft::prelude::*;
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Raft timing in ticks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RaftTiming {
    /// Minimum election timeout, in ticks.
    pub(crate) election_ticks: usize,
    /// Heartbeat interval, in ticks.
    pub(crate) heartbeat_ticks: usize,
}

/// A Raft message ready to send to a server.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// The Raft ID it is for.
    pub(crate) to: u64,
    /// The message in the [`raft_wire`] encoding, as [`Consensus::step`] takes it.
    pub(crate) bytes: Vec<u8>,
}

struct Group {
    cluster: u64,
    node: RawNode<RaftLog>,
    /// The replicated store, as of the applied index.
    store: Store,
}

/// A command this server applied, with what the store answered.
#[derive(Debug)]
pub(crate) struct Applied {
    /// The command's client.
    pub(crate) client: NodeId,
    /// The client's run.
    pub(crate) epoch: u64,
    /// Its sequence number.
    pub(crate) seq: u64,
    /// The answer.
    pub(crate) outcome: Outcome,
}

/// Where this server stands with respect to Raft groups.
pub(crate) struct Consensus {
    me: NodeId,
    incarnation: u64,
    generation: u32,
    raft_id: u64,
    /// The group we are in (possibly as a not-yet-added joiner).
    group: Option<Group>,
    /// True while we wait to be added to `group` (created empty).
    joining: bool,
    timing: RaftTiming,
    rng: NodeRng,
    rank: usize,
    last_role: (u64, StateRole),
    /// Raft ID → node, learned from statuses and conf change contexts.
    names: BTreeMap<u64, NodeId>,
    outbox: Vec<Outgoing>,
    /// Raft IDs removed by applied changes, for the server to dismiss.
    removed: Vec<u64>,
    /// Highest term seen in groups this server left.
    max_term: u64,
    logger: slog::Logger,
    /// Number of times raft-rs panicked on input and the group was discarded.
    pub(crate) panics: u64,
    /// Number of received Raft messages dropped as malformed or inconsistent
    /// with our state (see [`raft_wire::check`]); stays 0 among correct servers.
    pub(crate) rejected: u64,
    /// Commands applied since the last [`Consensus::take_applied`].
    applied: Vec<Applied>,
    /// Read indexes confirmed since the last [`Consensus::take_reads`]:
    /// (context, index).
    reads: Vec<(u64, u64)>,
    /// Whether the host keeps our Raft state on disk.
    disk: bool,
    /// Batches for the host, oldest first.
    writes: VecDeque<RaftWrite>,
    write_seq: u64,
    /// Readys whose writes the host has not confirmed yet, oldest first.
    held: VecDeque<Held>,
    /// Every message handed to the encoder, for the round-trip tests.
    #[cfg(test)]
    sent: Vec<Message>,
}

fn raft_id_for(me: NodeId, incarnation: u64, generation: u32) -> u64 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"p2pcore raft id\0");
    ctx.update(&me.to_bytes());
    ctx.update(&incarnation.to_be_bytes());
    ctx.update(&generation.to_be_bytes());
    let d = ctx.finish();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    // Raft reserves 0 for "none".
    u64::from_be_bytes(b).max(1)
}

impl Consensus {
    pub(crate) fn new(me: NodeId, incarnation: u64, timing: RaftTiming, rng: NodeRng) -> Self {
        let raft_id = raft_id_for(me, incarnation, 0);
        let mut names = BTreeMap::new();
        names.insert(raft_id, me);
        Self {
            me,
            incarnation,
            generation: 0,
            raft_id,
            group: None,
            joining: false,
            timing,
            rng,
            rank: 0,
            last_role: (0, StateRole::Follower),
            names,
            outbox: Vec::new(),
            removed: Vec::new(),
            max_term: 0,
            logger: slog::Logger::root(slog::Discard, slog::o!()),
            panics: 0,
            rejected: 0,
            applied: Vec::new(),
            reads: Vec::new(),
            disk: false,
            writes: VecDeque::new(),
            write_seq: 0,
            held: VecDeque::new(),
            #[cfg(test)]
            sent: Vec::new(),
        }
    }

    fn config(&self) -> raft::Config {
        raft::Config {
            id: self.raft_id,
            election_tick: self.timing.election_ticks,
            heartbeat_tick: self.timing.heartbeat_ticks,
            min_election_tick: self.timing.election_ticks,
            max_election_tick: self.timing.election_ticks * 3,
            check_quorum: true,
            pre_vote: true,
            max_inflight_msgs: 64,
            max_size_per_msg: 64 * 1024,
            ..raft::Config::default()
        }
    }

    /// Our Raft ID in the current generation.
    pub(crate) fn raft_id(&self) -> u64 {
        self.raft_id
    }

    /// The group we belong to or are joining.
    pub(crate) fn cluster(&self) -> Option<u64> {
        self.group.as_ref().map(|g| g.cluster)
    }

    /// Whether we wait to be added to our group.
    pub(crate) fn is_joining(&self) -> bool {
        self.joining
    }

    /// Records which node a Raft ID belongs to.
    pub(crate) fn learn(&mut self, raft_id: u64, node: NodeId) {
        self.names.insert(raft_id, node);
    }

    /// The node behind a Raft ID.
    pub(crate) fn node_of(&self, raft_id: u64) -> Option<NodeId> {
        self.names.get(&raft_id).copied()
    }

    /// Voters of our group's current configuration.
    pub(crate) fn voters(&self) -> Vec<u64> {
        match &self.group {
            Some(g) => {
                let mut v = g.node.raft.prs().conf().to_conf_state().voters;
                v.sort_unstable();
                v
            }
            None => Vec::new(),
        }
    }

    /// How many voters our group's configuration has (no allocation: asked
    /// on every `poll_timeout`).
    pub(crate) fn voter_count(&self) -> usize {
        self.group.as_ref().map_or(0, |g| g.node.raft.prs().conf().voters().ids().len())
    }

    /// Whether `raft_id` is a voter of our group's configuration.
    pub(crate) fn is_voter(&self, raft_id: u64) -> bool {
        self.group.as_ref().is_some_and(|g| g.node.raft.prs().conf().voters().contains(raft_id))
    }

    /// Whether our group's configuration has learners.
    pub(crate) fn has_learners(&self) -> bool {
        self.group.as_ref().is_some_and(|g| !g.node.raft.prs().conf().learners().is_empty())
    }

    /// Learners (non-voting members catching up) of our group's configuration.
    pub(crate) fn learners(&self) -> Vec<u64> {
        match &self.group {
            Some(g) => {
                let mut v = g.node.raft.prs().conf().to_conf_state().learners;
                v.sort_unstable();
                v
            }
            None => Vec::new(),
        }
    }

    /// Whether member `raft_id` has every committed entry (leader's view).
    pub(crate) fn caught_up(&self, raft_id: u64) -> bool {
        self.group.as_ref().is_some_and(|g| {
            g.node.raft.prs().get(raft_id).is_some_and(|p| p.matched >= g.node.raft.raft_log.committed)
        })
    }

    /// The leader as this node knows it, and the term.
    pub(crate) fn leader(&self) -> Option<(u64, u64)> {
        let g = self.group.as_ref()?;
        let r = &g.node.raft;
        (r.leader_id != 0).then_some((r.leader_id, r.term))
    }

    /// Our current term (0 without a group).
    pub(crate) fn term(&self) -> u64 {
        self.group.as_ref().map_or(0, |g| g.node.raft.term)
    }

    /// Whether we lead our group.
    pub(crate) fn is_leader(&self) -> bool {
        self.group.as_ref().is_some_and(|g| g.node.raft.state == StateRole::Leader)
    }

    /// Whether a membership change is proposed but not yet applied.
    pub(crate) fn has_pending_conf(&self) -> bool {
        self.group.as_ref().is_some_and(|g| g.node.raft.pending_conf_index > g.node.raft.raft_log.applied)
    }

    /// Sets how many live elders this server has; fewer elders, earlier campaign.
    pub(crate) fn set_rank(&mut self, rank: usize) {
        self.rank = rank;
    }

    /// Messages to send, in order.
    pub(crate) fn take_outbox(&mut self) -> Vec<Outgoing> {
        std::mem::take(&mut self.outbox)
    }

    /// Starts a new group with this server as its only voter and leader,
    /// under a fresh Raft ID. `min_term` keeps terms increasing across
    /// re-foundings.
    pub(crate) fn found(&mut self, min_term: u64) {
        self.fresh_raft_id();
        let cluster = self.rng.next_u64();
        let mut storage = RaftLog::with_conf(ConfState::from((vec![self.raft_id], vec![])));
        // Terms beyond the wire's limit are refused from the network, so
        // none reaches here from outside; the clamp keeps raft-rs's own
        // `term + 1` in `campaign` far from overflow whatever the caller.
        storage.set_term(min_term.min(raft_wire::LIMIT));
        let Ok(mut node) = RawNode::new(&self.config(), storage, &self.logger) else {
            self.group = None;
            return;
        };
        let _ = node.campaign();
        self.group = Some(Group { cluster, node, store: Store::default() });
        self.joining = false;
        self.new_identity();
        self.after_call();
        self.process();
    }

    /// Asks to join `cluster` under a fresh Raft ID; the group's leader adds
    /// us, first as a learner.
    pub(crate) fn join(&mut self, cluster: u64) {
        self.fresh_raft_id();
        let Ok(node) = RawNode::new(&self.config(), RaftLog::empty(), &self.logger) else {
            self.group = None;
            return;
        };
        self.group = Some(Group { cluster, node, store: Store::default() });
        self.joining = true;
        self.new_identity();
        self.after_call();
    }

    /// Leaves the group: the server is unaffiliated until it joins or founds one.
    pub(crate) fn leave(&mut self) {
        self.group = None;
        self.joining = false;
        self.held.clear();
        if self.disk {
            self.push_write(vec![raft_log::wipe()]);
        }
    }

    /// Writes a new group identity: what was on disk belongs to a group and
    /// Raft ID we no longer have.
    fn new_identity(&mut self) {
        self.held.clear();
        if !self.disk {
            return;
        }
        let ident = postcard::to_allocvec(&(
            self.group.as_ref().map_or(0, |g| g.cluster),
            self.raft_id,
            self.generation,
            self.max_term,
        ))
        .unwrap_or_default();
        let mut ops = vec![raft_log::wipe(), DiskOp::Put { key: raft_log::K_GROUP.to_vec(), value: ident }];
        if let Some(g) = self.group.as_mut() {
            let log = g.node.mut_store();
            log.start_recording();
            ops.extend(log.take_ops());
        }
        self.push_write(ops);
    }

    /// Keeps Raft state on disk from now on (before anything else happens).
    pub(crate) fn use_disk(&mut self) {
        self.disk = true;
    }

    /// Resumes the group this server belonged to from the host's table.
    /// Returns false (and leaves nothing behind) if the table holds no
    /// complete identity, log and configuration.
    pub(crate) fn resume(&mut self, table: &BTreeMap<Vec<u8>, Vec<u8>>) -> bool {
        let Some(ident) = table.get(raft_log::K_GROUP) else { return false };
        let Ok((cluster, raft_id, generation, max_term)) =
            postcard::from_bytes::<(u64, u64, u32, u64)>(ident)
        else {
            return false;
        };
        let Some(mut log) = RaftLog::load(table) else { return false };
        if cluster == 0 || raft_id == 0 {
            return false;
        }
        // The store as of the snapshot; entries after it are applied again
        // as raft-rs hands them out (committed ones at once).
        let snap = log.snapshot_index();
        let store = if snap > 0 {
            match raft::Storage::snapshot(&log, 0, 0).ok().and_then(|s| Store::restore(&s.data)) {
                Some(s) => s,
                None => return false,
            }
        } else {
            Store::default()
        };
        log.start_recording();
        let _ = log.take_ops();
        let voter_or_learner = {
            let st = raft::Storage::initial_state(&log).ok();
            st.map(|s| (s.conf_state.voters.contains(&raft_id), s.conf_state.learners.contains(&raft_id)))
        };
        self.raft_id = raft_id;
        self.generation = generation;
        self.max_term = max_term;
        self.names.insert(raft_id, self.me);
        let mut cfg = self.config();
        cfg.applied = snap;
        let Ok(node) = RawNode::new(&cfg, log, &self.logger) else { return false };
        self.group = Some(Group { cluster, node, store });
        self.joining = !matches!(voter_or_learner, Some((true, _)));
        self.last_role = (0, StateRole::Follower);
        self.after_call();
        self.process();
        true
    }

    /// Whether a committed change removed this server from its group.
    pub(crate) fn was_removed(&self) -> bool {
        self.group.is_some()
            && !self.joining
            && !self.voters().contains(&self.raft_id)
            && !self.learners().contains(&self.raft_id)
    }

    /// Raft IDs removed by changes this server applied since the last call.
    pub(crate) fn take_removed(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.removed)
    }

    /// The highest term this server has seen in any group.
    pub(crate) fn max_term(&self) -> u64 {
        self.max_term.max(self.term())
    }

    fn fresh_raft_id(&mut self) {
        self.max_term = self.max_term();
        self.generation += 1;
        self.raft_id = raft_id_for(self.me, self.incarnation, self.generation);
        self.names.insert(self.raft_id, self.me);
        self.last_role = (0, StateRole::Follower);
    }

    fn guarded<R>(&mut self, f: impl FnOnce(&mut RawNode<RaftLog>) -> R) -> Option<R> {
        let g = self.group.as_mut()?;
        match catch_unwind(AssertUnwindSafe(|| f(&mut g.node))) {
            Ok(r) => Some(r),
            Err(_) => {
                // raft-rs found the input inconsistent with its state: leave and
                // start over under a fresh Raft ID.
                self.panics += 1;
                self.leave();
                None
            }
        }
    }

    /// How many more ticks raft-rs needs before one of them can do
    /// something; `None` when none ever will on its own. A follower or
    /// candidate acts at its election timeout (the ticks before only count);
    /// a leader heartbeats every few ticks (raft-rs keeps that count
    /// private, so: every tick) while it has anyone to talk to; a leader
    /// alone, a learner and a joiner never act on a tick. The server then
    /// sleeps through the ticks in between and applies them when it wakes
    /// or when an input comes ([`Server::handle_timeout`](super::Server)),
    /// which is the same to raft-rs: a tick that does nothing but count
    /// may be counted late.
    pub(crate) fn ticks_until_due(&self) -> Option<usize> {
        let r = &self.group.as_ref()?.node.raft;
        match r.state {
            StateRole::Leader => {
                (!r.prs().is_singleton() || !r.prs().conf().learners().is_empty()).then_some(1)
            }
            _ if !r.promotable() => None,
            _ => Some(r.randomized_election_timeout().saturating_sub(r.election_elapsed).max(1)),
        }
    }

    /// Advances Raft's logical clock by one tick.
    pub(crate) fn tick(&mut self) {
        self.guarded(|n| n.tick());
        self.after_call();
        self.process();
    }

    /// Feeds a message (bytes from [`Consensus::take_outbox`] of the server
    /// whose link has Raft ID `from`) for group `cluster`. Returns whether it
    /// reached raft-rs. Messages for another group or another of our Raft
    /// IDs are stale and dropped quietly; malformed or inconsistent ones are
    /// dropped and counted in [`Consensus::rejected`].
    pub(crate) fn step(&mut self, cluster: u64, from: u64, bytes: &[u8]) -> bool {
        let Some(wire) = self.receive(cluster, bytes) else { return false };
        let Some(local) = self.local() else { return false };
        if let Err(reason) = raft_wire::check(&wire, from, &local) {
            tracing::debug!(?reason, from, kind = ?wire.kind, "raft message rejected");
            self.rejected += 1;
            return false;
        }
        // A snapshot's store image must decode before raft-rs takes the
        // snapshot: afterwards there is no way back to the log it replaces.
        if wire.kind == WireKind::Snapshot
            && let Some(snap) = &wire.snapshot
            && Store::restore(&snap.data.0).is_none()
        {
            tracing::debug!(from, "raft snapshot with an undecodable store image rejected");
            self.rejected += 1;
            return false;
        }
        self.feed(wire)
    }

    /// Decodes a message for `cluster` addressed to our current Raft ID.
    fn receive(&mut self, cluster: u64, bytes: &[u8]) -> Option<WireMsg> {
        if self.cluster() != Some(cluster) {
            return None;
        }
        let wire = match WireMsg::decode(bytes) {
            Ok(w) => w,
            Err(reason) => {
                tracing::debug!(?reason, "raft message rejected");
                self.rejected += 1;
                return None;
            }
        };
        // Sent to an earlier Raft ID of ours, before we rejoined: stale, not faulty.
        (wire.to == self.raft_id).then_some(wire)
    }

    /// What [`raft_wire::check`] needs of our Raft state.
    fn local(&self) -> Option<Local> {
        let r = &self.group.as_ref()?.node.raft;
        let committed = r.raft_log.committed;
        Some(Local {
            id: self.raft_id,
            term: r.term,
            leader: r.state == StateRole::Leader,
            leader_id: r.leader_id,
            last_index: r.raft_log.last_index(),
            committed,
            committed_term: r.raft_log.term(committed).ok(),
        })
    }

    /// Steps a decoded (and, outside tests, checked) message into raft-rs.
    fn feed(&mut self, wire: WireMsg) -> bool {
        let Some(msg) = wire.into_message() else {
            self.rejected += 1;
            return false;
        };
        self.guarded(|n| n.step(msg));
        self.after_call();
        self.process();
        true
    }

    /// The pre-validation path — only the sender and local-type checks the
    /// old protobuf code had — to show what each rule of
    /// [`raft_wire::check`] protects against.
    #[cfg(test)]
    fn step_unchecked(&mut self, cluster: u64, from: u64, bytes: &[u8]) -> bool {
        let Some(wire) = self.receive(cluster, bytes) else { return false };
        if wire.from != from || raft::raw_node::is_local_msg(wire.kind.into()) {
            return false;
        }
        self.feed(wire)
    }

    /// Proposes adding `raft_id` (owned by `node`) as a voter.
    pub(crate) fn propose_add(&mut self, raft_id: u64, node: NodeId) {
        self.propose(ConfChangeType::AddNode, raft_id, node);
    }

    /// Proposes adding `raft_id` (owned by `node`) as a learner: it catches up
    /// without counting towards quorum, so a joiner that changes its mind
    /// before promotion cannot stall the group.
    pub(crate) fn propose_add_learner(&mut self, raft_id: u64, node: NodeId) {
        self.propose(ConfChangeType::AddLearnerNode, raft_id, node);
    }

    /// Proposes removing voter `raft_id`.
    pub(crate) fn propose_remove(&mut self, raft_id: u64) {
        let node = self.node_of(raft_id).unwrap_or(self.me);
        self.propose(ConfChangeType::RemoveNode, raft_id, node);
    }

    fn propose(&mut self, kind: ConfChangeType, raft_id: u64, node: NodeId) {
        // One change at a time: a single-server change needs no joint consensus.
        let single = ConfChangeSingle { change_type: kind, node_id: raft_id, ..Default::default() };
        let mut cc = ConfChangeV2::default();
        cc.changes.push(single);
        let members: Members = vec![(raft_id, node)];
        let context = postcard::to_allocvec(&members).unwrap_or_default();
        cc.context = context.clone().into();
        self.guarded(|n| n.propose_conf_change(context, cc));
        self.after_call();
        self.process();
    }

    /// Hands leadership to `raft_id`.
    pub(crate) fn transfer_to(&mut self, raft_id: u64) {
        self.guarded(|n| n.transfer_leader(raft_id));
        self.after_call();
        self.process();
    }

    /// Proposes a store command (leader only). Returns whether raft-rs
    /// took it; it is answered once applied ([`Consensus::take_applied`])
    /// on every server, or lost with a leadership change (the client retries).
    pub(crate) fn propose_command(&mut self, cmd: &Command) -> bool {
        if !self.is_leader() {
            return false;
        }
        self.propose_store(&Proposal::Client(cmd.clone()))
    }

    /// Proposes ending a session whose owner has been away for its TTL
    /// (leader only).
    pub(crate) fn propose_expire(&mut self, session: u64) -> bool {
        self.propose_store(&Proposal::Expire { session })
    }

    fn propose_store(&mut self, p: &Proposal) -> bool {
        if !self.is_leader() {
            return false;
        }
        let Ok(data) = postcard::to_allocvec(p) else { return false };
        let ok = self.guarded(|n| n.propose(Vec::new(), data).is_ok()).unwrap_or(false);
        self.after_call();
        self.process();
        ok
    }

    /// Whether this leader can confirm reads now: raft-rs 0.7 drops read
    /// requests until the leader has committed an entry of its own term.
    pub(crate) fn can_read(&self) -> bool {
        self.group.as_ref().is_some_and(|g| {
            let r = &g.node.raft;
            r.state == StateRole::Leader && r.raft_log.term(r.raft_log.committed).ok() == Some(r.term)
        })
    }

    /// Asks the group to confirm this server's leadership for a read
    /// (ReadIndex, Raft dissertation §6.4): the index comes back through
    /// [`Consensus::take_reads`] with `ctx` once a quorum answered a
    /// heartbeat sent after the request. Only when [`Consensus::can_read`].
    pub(crate) fn read_index(&mut self, ctx: u64) {
        self.guarded(|n| n.read_index(ctx.to_be_bytes().to_vec()));
        self.after_call();
        self.process();
    }

    /// The replicated store as this server has applied it.
    pub(crate) fn store(&self) -> Option<&Store> {
        self.group.as_ref().map(|g| &g.store)
    }

    /// Commands applied since the last call.
    pub(crate) fn take_applied(&mut self) -> Vec<Applied> {
        std::mem::take(&mut self.applied)
    }

    /// Read indexes confirmed since the last call: (context, index).
    pub(crate) fn take_reads(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.reads)
    }

    /// Re-draws the randomized election timeout from the seeded RNG whenever
    /// raft-rs may have reset it (term or role changed).
    fn after_call(&mut self) {
        let Some(g) = self.group.as_mut() else { return };
        let now = (g.node.raft.term, g.node.raft.state);
        if now != self.last_role || g.node.raft.election_elapsed == 0 {
            self.last_role = now;
            let e = self.timing.election_ticks;
            let t = e + self.rank.min(3) * 3 + self.rng.below(3) as usize;
            g.node.raft.set_randomized_election_timeout(t.min(3 * e - 1));
        }
    }

    /// Runs the Ready loop (see the module docs).
    fn process(&mut self) {
        loop {
            let Some(g) = self.group.as_mut() else { return };
            if !g.node.has_ready() {
                return;
            }
            let disk = self.disk;
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let mut out = Vec::new();
                let mut done = Done::default();
                let node = &mut g.node;
                let store = &mut g.store;
                let mut rd = node.ready();
                out.extend(rd.take_messages());
                if !rd.snapshot().is_empty() {
                    // Checked in `step`: the image decodes.
                    if let Some(image) = Store::restore(&rd.snapshot().data) {
                        *store = image;
                    }
                    node.mut_store().apply_snapshot(rd.snapshot().clone());
                }
                apply_committed(node, store, rd.take_committed_entries(), &mut done);
                if !rd.entries().is_empty() {
                    node.mut_store().append(rd.entries());
                }
                if let Some(hs) = rd.hs() {
                    node.mut_store().set_hard_state(hs.clone());
                }
                done.reads.extend(rd.take_read_states().into_iter().filter_map(|r| {
                    let ctx: [u8; 8] = r.request_ctx.as_slice().try_into().ok()?;
                    Some((u64::from_be_bytes(ctx), r.index))
                }));
                let persisted = rd.take_persisted_messages();
                if !disk {
                    out.extend(persisted);
                    finish(node, store, rd, &mut out, &mut done);
                    return (out, done, None);
                }
                // With a disk, raft-rs's asynchronous cycle: the Ready is
                // handed back at once, but our log counts as persisted —
                // towards commits, and in the votes and acknowledgements
                // that say so — only once the host confirms the write.
                let number = rd.number();
                node.advance_append_async(rd);
                advance_applied(node, store);
                let ops = node.mut_store().take_ops();
                let hold = if ops.is_empty() {
                    out.extend(persisted);
                    node.on_persist_ready(number);
                    None
                } else {
                    Some((ops, number, persisted))
                };
                compact(node, store);
                step_down_if_removed(node);
                (out, done, hold)
            }));
            match outcome {
                Ok((msgs, done, hold)) => {
                    if let Some((ops, number, persisted)) = hold {
                        let seq = self.push_write(ops);
                        self.held.push_back(Held { seq, number, persisted });
                    }
                    self.absorb(msgs, done);
                }
                Err(_) => {
                    self.panics += 1;
                    self.leave();
                    return;
                }
            }
        }
    }

    /// Takes a Ready cycle's results in: names, removals, answers, reads,
    /// messages to send, and the disk operations it left.
    fn absorb(&mut self, msgs: Vec<Message>, done: Done) {
        for (id, node) in done.learned {
            self.names.insert(id, node);
        }
        self.removed.extend(done.removed);
        self.applied.extend(done.applied);
        self.reads.extend(done.reads);
        // A member once it is a voter; learners are still joining.
        if self.joining && self.voters().contains(&self.raft_id) {
            self.joining = false;
        }
        for m in msgs {
            #[cfg(test)]
            self.sent.push(m.clone());
            if let Some(bytes) = raft_wire::encode(&m) {
                self.outbox.push(Outgoing { to: m.to, bytes });
            }
        }
        // Commit index and compaction: written, but nothing waits for them.
        if let Some(g) = self.group.as_mut() {
            let ops = g.node.mut_store().take_ops();
            if self.disk && !ops.is_empty() {
                self.push_write(ops);
            }
        }
    }

    /// Queues a batch for the host; returns its number.
    fn push_write(&mut self, ops: Vec<DiskOp>) -> u64 {
        self.write_seq += 1;
        self.writes.push_back(RaftWrite { seq: self.write_seq, ops });
        self.write_seq
    }

    /// The next batch for the host to write.
    pub(crate) fn poll_write(&mut self) -> Option<RaftWrite> {
        self.writes.pop_front()
    }

    /// The host made batch `seq` (and every one before it) durable: the
    /// Ready that waited for it goes on.
    pub(crate) fn written(&mut self, seq: u64) {
        while self.held.front().is_some_and(|h| h.seq <= seq) {
            let Some(held) = self.held.pop_front() else { break };
            let Some(g) = self.group.as_mut() else { return };
            let persist = || {
                g.node.on_persist_ready(held.number);
                advance_applied(&mut g.node, &g.store);
            };
            if catch_unwind(AssertUnwindSafe(persist)).is_err() {
                self.panics += 1;
                self.leave();
                return;
            }
            self.absorb(held.persisted, Done::default());
        }
        self.after_call();
        self.process();
    }
}

/// The second half of a Ready cycle, once its writes are stored: advance,
/// the light Ready, apply, compact.
fn finish(
    node: &mut RawNode<RaftLog>,
    store: &mut Store,
    rd: Ready,
    out: &mut Vec<Message>,
    done: &mut Done,
) {
    let mut light = node.advance(rd);
    if let Some(commit) = light.commit_index() {
        node.mut_store().set_commit(commit);
    }
    out.extend(light.take_messages());
    apply_committed(node, store, light.take_committed_entries(), done);
    node.advance_apply();
    compact(node, store);
    step_down_if_removed(node);
}

/// Tells raft-rs how far the store has applied — but never past what is
/// persisted: after a snapshot the store holds its image at once, while
/// raft-rs may count it applied only once the snapshot is on disk.
fn advance_applied(node: &mut RawNode<RaftLog>, store: &Store) {
    let log = &node.raft.raft_log;
    let to = store.applied().min(log.persisted).min(log.committed);
    if to > log.applied {
        node.advance_apply_to(to);
    }
}

/// A Ready's writes waiting for the host's disk, and the messages that
/// claim they are stored.
struct Held {
    seq: u64,
    number: u64,
    persisted: Vec<Message>,
}

/// What one Ready cycle applied and learned.
#[derive(Default)]
struct Done {
    learned: Vec<(u64, NodeId)>,
    removed: Vec<u64>,
    applied: Vec<Applied>,
    reads: Vec<(u64, u64)>,
}

fn apply_committed(node: &mut RawNode<RaftLog>, store: &mut Store, entries: Vec<Entry>, done: &mut Done) {
    for e in entries {
        store.set_applied(e.index);
        if e.data.is_empty() {
            continue;
        }
        if e.entry_type == EntryType::EntryNormal {
            // Every server decodes the same bytes the same way: an entry
            // that is not a command is skipped everywhere.
            match postcard::from_bytes::<Proposal>(&e.data) {
                Ok(Proposal::Client(cmd)) => {
                    let (client, epoch, seq) = (cmd.client, cmd.epoch, cmd.seq);
                    let outcome = store.apply(e.index, cmd);
                    done.applied.push(Applied { client, epoch, seq, outcome });
                }
                Ok(Proposal::Expire { session }) => store.expire(e.index, session),
                Err(_) => {}
            }
            continue;
        }
        if e.entry_type != EntryType::EntryConfChangeV2 {
            continue;
        }
        // Our own bytes: proposed here or re-encoded from the structured
        // wire form by `raft_wire` (never protobuf from the network).
        let Ok(cc) = ConfChangeV2::parse_from_bytes(&e.data) else { continue };
        if let Ok(members) = postcard::from_bytes::<Members>(&cc.context) {
            done.learned.extend(members);
        }
        done.removed.extend(
            cc.changes.iter().filter(|c| c.change_type == ConfChangeType::RemoveNode).map(|c| c.node_id),
        );
        if let Ok(cs) = node.apply_conf_change(&cc) {
            node.mut_store().set_conf(cs);
        }
    }
}

/// A leader that an applied change removed (or demoted) keeps leading in
/// raft-rs 0.7 (its `post_conf_change` leaves that branch "untested"), and
/// its next append response or proposal looks up its own progress, which is
/// gone: a panic. Such a leader steps down into the next term, as raft-rs's
/// own comment says it should; the others elect a leader among themselves
/// and the server sees it was removed. Called between Ready cycles (a term
/// change inside one breaks raft-rs's hard-state bookkeeping).
fn step_down_if_removed(node: &mut RawNode<RaftLog>) {
    let r = &mut node.raft;
    if r.state == StateRole::Leader && !r.prs().conf().voters().contains(r.id) {
        let term = r.term.saturating_add(1);
        r.become_follower(term, raft::INVALID_ID);
    }
}

/// Entries kept behind a snapshot, so a follower a little behind catches up
/// from the log instead of a whole snapshot.
const KEEP_ENTRIES: u64 = 100;
/// A snapshot is taken once this many entries were applied since the last…
const SNAPSHOT_ENTRIES: u64 = 1000;
/// …or once the log holds this many bytes of entry data.
const SNAPSHOT_LOG_BYTES: usize = 4 << 20;

/// Takes a snapshot of the store at the applied index and compacts the log
/// behind it, once enough was applied since the last one — or at once after
/// a membership change, so the snapshot a joiner may need names it.
fn compact(node: &mut RawNode<RaftLog>, store: &Store) {
    let applied = node.raft.raft_log.applied;
    let log = node.mut_store();
    let since = applied.saturating_sub(log.snapshot_index());
    let due = since >= SNAPSHOT_ENTRIES || log.bytes() >= SNAPSHOT_LOG_BYTES || log.conf_changed();
    if since > 0 && due {
        log.take_snapshot(applied, store.snapshot(), KEEP_ENTRIES);
    }
}

#[cfg(test)]
mod tests;
