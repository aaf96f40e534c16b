//! The Raft group of the server cluster (tikv raft-rs).
//!
//! The group exists to elect a partition-safe Master; it replicates nothing
//! but its own membership. This module wraps `RawNode` so the rest of the
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

use super::raft_wire::{self, Local, Members, WireMsg};
use crate::identity::NodeId;
use crate::rng::NodeRng;
use protobuf::Message as _;
use raft::prelude::*;
use raft::storage::MemStorage;
use raft::{StateRole, Storage};
use std::collections::BTreeMap;
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
    node: RawNode<MemStorage>,
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
        let storage = MemStorage::new_with_conf_state(ConfState::from((vec![self.raft_id], vec![])));
        // Terms beyond the wire's limit are refused from the network, so
        // none reaches here from outside; the clamp keeps raft-rs's own
        // `term + 1` in `campaign` far from overflow whatever the caller.
        storage.wl().mut_hard_state().term = min_term.min(raft_wire::LIMIT);
        let Ok(mut node) = RawNode::new(&self.config(), storage, &self.logger) else {
            self.group = None;
            return;
        };
        let _ = node.campaign();
        self.group = Some(Group { cluster, node });
        self.joining = false;
        self.after_call();
        self.process();
    }

    /// Asks to join `cluster` under a fresh Raft ID; the group's leader adds
    /// us, first as a learner.
    pub(crate) fn join(&mut self, cluster: u64) {
        self.fresh_raft_id();
        let Ok(node) = RawNode::new(&self.config(), MemStorage::new(), &self.logger) else {
            self.group = None;
            return;
        };
        self.group = Some(Group { cluster, node });
        self.joining = true;
        self.after_call();
    }

    /// Leaves the group: the server is unaffiliated until it joins or founds one.
    pub(crate) fn leave(&mut self) {
        self.group = None;
        self.joining = false;
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

    fn guarded<R>(&mut self, f: impl FnOnce(&mut RawNode<MemStorage>) -> R) -> Option<R> {
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
                let conf = r.prs().conf().to_conf_state();
                (conf.voters.len() > 1 || !conf.learners.is_empty()).then_some(1)
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
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let mut out = Vec::new();
                let mut learned = Vec::new();
                let mut removed = Vec::new();
                let node = &mut g.node;
                let mut rd = node.ready();
                out.extend(rd.take_messages());
                if !rd.snapshot().is_empty() {
                    let _ = node.mut_store().wl().apply_snapshot(rd.snapshot().clone());
                }
                apply_committed(node, rd.take_committed_entries(), &mut learned, &mut removed);
                if !rd.entries().is_empty() {
                    let _ = node.mut_store().wl().append(rd.entries());
                }
                if let Some(hs) = rd.hs() {
                    node.mut_store().wl().set_hardstate(hs.clone());
                }
                out.extend(rd.take_persisted_messages());
                let mut light = node.advance(rd);
                if let Some(commit) = light.commit_index() {
                    node.mut_store().wl().mut_hard_state().set_commit(commit);
                }
                out.extend(light.take_messages());
                apply_committed(node, light.take_committed_entries(), &mut learned, &mut removed);
                node.advance_apply();
                compact(node);
                (out, learned, removed)
            }));
            match outcome {
                Ok((msgs, learned, removed)) => {
                    for (id, node) in learned {
                        self.names.insert(id, node);
                    }
                    self.removed.extend(removed);
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
                }
                Err(_) => {
                    self.panics += 1;
                    self.leave();
                    return;
                }
            }
        }
    }
}

fn apply_committed(
    node: &mut RawNode<MemStorage>,
    entries: Vec<Entry>,
    learned: &mut Vec<(u64, NodeId)>,
    removed: &mut Vec<u64>,
) {
    for e in entries {
        if e.entry_type != EntryType::EntryConfChangeV2 || e.data.is_empty() {
            continue;
        }
        // Our own bytes: proposed here or re-encoded from the structured
        // wire form by `raft_wire` (never protobuf from the network).
        let Ok(cc) = ConfChangeV2::parse_from_bytes(&e.data) else { continue };
        if let Ok(members) = postcard::from_bytes::<Members>(&cc.context) {
            learned.extend(members);
        }
        removed.extend(
            cc.changes.iter().filter(|c| c.change_type == ConfChangeType::RemoveNode).map(|c| c.node_id),
        );
        if let Ok(cs) = node.apply_conf_change(&cc) {
            node.mut_store().wl().set_conf_state(cs);
        }
    }
}

/// Entries kept behind the applied index before the log is compacted.
const KEEP_ENTRIES: u64 = 100;

fn compact(node: &mut RawNode<MemStorage>) {
    let applied = node.raft.raft_log.applied;
    let store = node.mut_store();
    let first = store.first_index().unwrap_or(1);
    if applied > first + 2 * KEEP_ENTRIES {
        let _ = store.wl().compact(applied - KEEP_ENTRIES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Identity, Role};

    fn server(seed: u8) -> Consensus {
        let id = Identity::from_seed(Role::Server, [seed; 32]).id();
        Consensus::new(
            id,
            seed as u64,
            RaftTiming { election_ticks: 10, heartbeat_ticks: 2 },
            NodeRng::from_seed([seed; 32]),
        )
    }

    /// Delivers messages between in-memory consensus instances until quiet.
    fn pump(nodes: &mut [Consensus]) {
        pump_where(nodes, |_, _| true);
    }

    /// Like [`pump`], dropping messages for which `link(from, to)` is false.
    fn pump_where(nodes: &mut [Consensus], link: impl Fn(u64, u64) -> bool) {
        for _ in 0..100 {
            let mut any = false;
            let mut msgs = Vec::new();
            for n in nodes.iter_mut() {
                let from = n.raft_id();
                for o in n.take_outbox() {
                    msgs.push((from, o));
                }
            }
            for (from, o) in msgs {
                any = true;
                if !link(from, o.to) {
                    continue;
                }
                if let Some(to) = nodes.iter_mut().find(|n| n.raft_id() == o.to) {
                    let cluster = to.cluster().unwrap_or(0);
                    to.step(cluster, from, &o.bytes);
                }
            }
            if !any {
                return;
            }
        }
    }

    #[test]
    fn a_founder_leads_alone_then_adds_members() {
        let mut a = server(1);
        a.found(0);
        assert!(a.is_leader());
        assert_eq!(a.voters(), vec![a.raft_id()]);
        assert!(!a.was_removed());
        let cluster = a.cluster().unwrap();
        let mut b = server(2);
        b.join(cluster);
        let mut c = server(3);
        c.join(cluster);
        let (bid, cid) = (b.raft_id(), c.raft_id());
        let (bn, cn) = (b.me, c.me);
        let mut nodes = [a, b, c];
        for (rid, node) in [(bid, bn), (cid, cn)] {
            nodes[0].propose_add_learner(rid, node);
            pump(&mut nodes);
            assert!(nodes[0].learners().contains(&rid));
            assert!(nodes[0].caught_up(rid));
            nodes[0].propose_add(rid, node);
            pump(&mut nodes);
            assert!(!nodes[0].has_pending_conf());
        }
        for _ in 0..5 {
            for n in nodes.iter_mut() {
                n.tick();
            }
            pump(&mut nodes);
        }
        assert_eq!(nodes[0].voters().len(), 3);
        assert!(!nodes[1].is_joining() && !nodes[2].is_joining());
        let leader = nodes[0].raft_id();
        for n in &nodes {
            assert_eq!(n.leader().map(|l| l.0), Some(leader));
            assert_eq!(n.node_of(cid), Some(cn));
        }
    }

    #[test]
    fn garbage_and_misaddressed_messages_are_ignored() {
        let mut a = server(1);
        a.found(0);
        let cluster = a.cluster().unwrap();
        assert!(!a.step(cluster, 5, b"\xff\xff\xff"));
        assert!(!a.step(cluster + 1, 5, b""));
        let m = Message { to: 12345, from: 5, ..Default::default() };
        assert!(!a.step(cluster, 5, &wire(&m)));
        assert!(a.is_leader());
        assert_eq!(a.panics, 0);
        // Garbage is counted; a wrong group or an old Raft ID of ours is stale, not faulty.
        assert_eq!(a.rejected, 1);
    }

    #[test]
    fn an_inconsistent_message_resets_instead_of_panicking() {
        let mut a = server(1);
        a.found(0);
        let cluster = a.cluster().unwrap();
        // A heartbeat claiming a commit far beyond our log: raft-rs treats it as corruption.
        let m = Message {
            msg_type: MessageType::MsgHeartbeat,
            to: a.raft_id(),
            from: 77,
            term: 50,
            commit: 1_000_000,
            ..Default::default()
        };
        let before = a.raft_id();
        // Validation would drop it (`heartbeat_commit_past_our_log`): take the
        // unchecked path to exercise the second line of defence.
        a.step_unchecked(cluster, 77, &wire(&m));
        assert_eq!(a.panics, 1);
        assert_eq!(a.cluster(), None, "left the group");
        a.join(cluster);
        assert_ne!(a.raft_id(), before, "rejoins under a fresh Raft ID");
        assert!(a.is_joining());
    }

    #[test]
    fn raft_ids_change_with_incarnation_and_generation() {
        let id = Identity::from_seed(Role::Server, [1; 32]).id();
        assert_ne!(raft_id_for(id, 1, 0), raft_id_for(id, 2, 0));
        assert_ne!(raft_id_for(id, 1, 0), raft_id_for(id, 1, 1));
        assert_eq!(raft_id_for(id, 1, 0), raft_id_for(id, 1, 0));
    }

    // ----- helpers for the hardening tests ---------------------------------

    use super::raft_wire::{LIMIT, Reject};

    /// The wire form of any message, including types `encode` refuses to send.
    fn wire(m: &Message) -> Vec<u8> {
        WireMsg::from_message(m).expect("representable").encode().expect("encodes")
    }

    fn node(seed: u8) -> NodeId {
        Identity::from_seed(Role::Server, [seed; 32]).id()
    }

    fn msg(kind: MessageType, to: u64, from: u64, term: u64) -> Message {
        let mut m = Message { to, from, term, ..Default::default() };
        m.set_msg_type(kind);
        m
    }

    fn raft_of(c: &Consensus) -> &Raft<MemStorage> {
        &c.group.as_ref().expect("in a group").node.raft
    }

    fn last_index(c: &Consensus) -> u64 {
        raft_of(c).raft_log.last_index()
    }

    fn committed(c: &Consensus) -> u64 {
        raft_of(c).raft_log.committed
    }

    fn term_at(c: &Consensus, index: u64) -> u64 {
        raft_of(c).raft_log.term(index).expect("in the log")
    }

    /// A one-voter group: its founder leads.
    fn solo() -> Vec<Consensus> {
        let mut a = server(1);
        a.found(0);
        vec![a]
    }

    /// Three voters, `[0]` leading, the others followers with its log.
    fn trio() -> Vec<Consensus> {
        let mut nodes = vec![server(1), server(2), server(3)];
        nodes[0].found(0);
        let cluster = nodes[0].cluster().expect("founded");
        for i in 1..3 {
            nodes[i].join(cluster);
            let (rid, n) = (nodes[i].raft_id(), nodes[i].me);
            nodes[0].propose_add_learner(rid, n);
            pump(&mut nodes);
            nodes[0].propose_add(rid, n);
            pump(&mut nodes);
        }
        assert_eq!(nodes[0].voters().len(), 3);
        assert!(nodes[1..].iter().all(|n| !n.is_joining() && n.term() == nodes[0].term()));
        nodes
    }

    /// A leader and a server that asked to join but was not added yet (term 0).
    fn with_joiner() -> Vec<Consensus> {
        let mut nodes = solo();
        let mut j = server(2);
        j.join(nodes[0].cluster().expect("founded"));
        nodes.push(j);
        nodes
    }

    /// A leader and a caught-up learner.
    fn with_learner() -> Vec<Consensus> {
        let mut nodes = with_joiner();
        let (rid, n) = (nodes[1].raft_id(), nodes[1].me);
        nodes[0].propose_add_learner(rid, n);
        pump(&mut nodes);
        assert!(nodes[0].learners().contains(&rid) && nodes[0].caught_up(rid));
        nodes
    }

    /// Whether some leader of these servers can still add a member: ticks
    /// and delivers until one has committed and applied a new learner.
    fn can_commit_a_change(nodes: &mut [Consensus]) -> bool {
        let (fresh, owner) = (4242, node(42));
        for _ in 0..400 {
            if let Some(l) = nodes.iter_mut().find(|n| n.is_leader() && !n.is_joining()) {
                if l.learners().contains(&fresh) {
                    return true;
                }
                if !l.has_pending_conf() {
                    l.propose_add_learner(fresh, owner);
                }
            }
            for n in nodes.iter_mut() {
                n.tick();
            }
            pump(nodes);
        }
        false
    }

    /// One panic class: `craft` builds the message for `nodes[t]` of a fresh
    /// `build()`. Stepped the old way (no validation) it makes raft-rs panic
    /// when `old_panics`; stepped the new way it is rejected for `reason`,
    /// nothing panics, the target keeps its leader and term, and the group
    /// can still commit a membership change.
    fn blocked(
        build: fn() -> Vec<Consensus>,
        t: usize,
        craft: impl Fn(&[Consensus]) -> Message,
        reason: Reject,
        old_panics: bool,
    ) {
        let mut old = build();
        let m = craft(&old);
        let cluster = old[t].cluster().expect("in a group");
        old[t].step_unchecked(cluster, m.from, &wire(&m));
        if old_panics {
            assert_eq!(old[t].panics, 1, "raft-rs panics on {m:?}");
        }

        let mut new = build();
        let m = craft(&new);
        let local = new[t].local().expect("in a group");
        let w = WireMsg::decode(&wire(&m)).expect("decodes");
        assert_eq!(raft_wire::check(&w, m.from, &local), Err(reason));
        let before = (new[t].leader(), new[t].term());
        assert!(!new[t].step(cluster, m.from, &wire(&m)), "rejected");
        assert_eq!((new[t].rejected, new[t].panics), (1, 0));
        assert_eq!((new[t].leader(), new[t].term()), before);
        assert!(can_commit_a_change(&mut new), "the group still works");
        assert!(new.iter().all(|n| n.panics == 0));
    }

    // ----- one test per panic class -------------------------------------

    #[test]
    fn heartbeat_commit_past_our_log() {
        // `handle_heartbeat` → `commit_to`: fatal past the last index.
        blocked(
            trio,
            1,
            |n| {
                let mut m = msg(MessageType::MsgHeartbeat, n[1].raft_id(), n[0].raft_id(), n[0].term());
                m.commit = last_index(&n[1]) + 5;
                m
            },
            Reject::CommitBeyondLog,
            true,
        );
    }

    #[test]
    fn append_anchored_past_our_log_with_term_zero() {
        // `term()` answers 0 past the log, so the anchor "matches" and
        // `maybe_append` commits past the last index.
        blocked(
            trio,
            1,
            |n| {
                let mut m = msg(MessageType::MsgAppend, n[1].raft_id(), n[0].raft_id(), n[0].term());
                m.index = last_index(&n[1]) + 10;
                m.commit = m.index;
                m
            },
            Reject::LogPosition,
            true,
        );
    }

    #[test]
    fn append_entry_with_term_zero() {
        // A term-0 entry past the log "matches" too: same fatal commit.
        blocked(
            trio,
            1,
            |n| {
                let last = last_index(&n[1]);
                let mut m = msg(MessageType::MsgAppend, n[1].raft_id(), n[0].raft_id(), n[0].term());
                m.index = last;
                m.log_term = term_at(&n[1], last);
                m.commit = last + 3;
                m.mut_entries().push(Entry { index: last + 1, term: 0, ..Default::default() });
                m
            },
            Reject::Entries,
            true,
        );
    }

    #[test]
    fn append_entries_not_following_the_anchor() {
        // Entries restarting at index 1 under a newer term conflict with a
        // committed entry: `fatal!("entry 1 conflict with committed entry")`.
        blocked(
            trio,
            1,
            |n| {
                let c = committed(&n[1]);
                let term = n[0].term() + 1;
                let mut m = msg(MessageType::MsgAppend, n[1].raft_id(), n[0].raft_id(), term);
                m.index = c;
                m.log_term = term_at(&n[1], c);
                m.mut_entries().push(Entry { index: 1, term, ..Default::default() });
                m
            },
            Reject::Entries,
            true,
        );
    }

    #[test]
    fn append_response_acknowledging_past_the_leaders_log() {
        // `Progress::maybe_update(n)` computes `n + 1`: overflow. (Release
        // builds wrap instead; the lie then marks the follower caught up.)
        blocked(
            trio,
            0,
            |n| {
                let mut m = msg(MessageType::MsgAppendResponse, n[0].raft_id(), n[1].raft_id(), n[0].term());
                m.index = u64::MAX;
                m
            },
            Reject::Range,
            cfg!(debug_assertions),
        );
        // Within range the same lie does not panic, but the leader takes a
        // learner that lacks the newest entry for caught up (and would
        // promote it).
        for checked in [false, true] {
            let mut n = with_learner();
            let (rid, cluster) = (n[1].raft_id(), n[0].cluster().expect("founded"));
            n[0].propose_add_learner(777, node(7));
            assert!(!n[0].caught_up(rid));
            let mut m = msg(MessageType::MsgAppendResponse, n[0].raft_id(), rid, n[0].term());
            m.index = last_index(&n[0]) + 1000;
            if checked {
                assert!(!n[0].step(cluster, rid, &wire(&m)));
                assert_eq!(n[0].rejected, 1);
            } else {
                n[0].step_unchecked(cluster, rid, &wire(&m));
            }
            assert_eq!(n[0].caught_up(rid), !checked);
        }
    }

    /// A one-voter leader probing learner 999, which never answers.
    fn solo_probing() -> Vec<Consensus> {
        let mut nodes = solo();
        nodes[0].propose_add_learner(999, node(9));
        assert!(nodes[0].learners().contains(&999));
        nodes
    }

    #[test]
    fn append_rejection_with_a_huge_hint() {
        // A probing leader takes `min(rejected, hint + 1)`: overflow.
        blocked(
            solo_probing,
            0,
            |n| {
                let next = raft_of(&n[0]).prs().get(999).expect("tracked").next_idx;
                let mut m = msg(MessageType::MsgAppendResponse, n[0].raft_id(), 999, n[0].term());
                m.reject = true;
                m.index = next - 1;
                m.reject_hint = u64::MAX;
                m
            },
            Reject::Range,
            cfg!(debug_assertions),
        );
    }

    #[test]
    fn proposals_from_the_network() {
        // An empty MsgPropose at a leader: `fatal!("stepped empty MsgProp")`.
        // (One with entries would append them, conf changes included.)
        blocked(solo, 0, |n| msg(MessageType::MsgPropose, n[0].raft_id(), 77, 0), Reject::NeverSent, true);
    }

    #[test]
    fn leader_transfer_request_at_a_follower() {
        // Forwarded to the leader with its term still set: `fatal!("term
        // should not be set when sending MsgTransferLeader")`.
        blocked(
            trio,
            1,
            |n| msg(MessageType::MsgTransferLeader, n[1].raft_id(), n[2].raft_id(), n[0].term()),
            Reject::NeverSent,
            true,
        );
    }

    #[test]
    fn read_index_without_entries() {
        // A leader with followers reads `m.entries[0]`: out of bounds.
        blocked(
            trio,
            0,
            |n| msg(MessageType::MsgReadIndex, n[0].raft_id(), n[1].raft_id(), n[0].term()),
            Reject::NeverSent,
            true,
        );
    }

    #[test]
    fn vote_request_at_term_zero() {
        // Term 0 passes as a local message; the joiner (no vote, no leader)
        // grants it with term 0: `fatal!("term should be set when sending
        // MsgRequestVoteResponse")`.
        blocked(
            with_joiner,
            1,
            |n| msg(MessageType::MsgRequestVote, n[1].raft_id(), n[0].raft_id(), 0),
            Reject::Term,
            true,
        );
    }

    #[test]
    fn pre_vote_with_a_negative_priority_at_a_joiner() {
        // The priority makes a term-0 joiner reject; the rejection carries
        // its term, 0: the same fatal in `send`.
        blocked(
            with_joiner,
            1,
            |n| {
                let mut m = msg(MessageType::MsgRequestPreVote, n[1].raft_id(), n[0].raft_id(), 5);
                m.priority = -1;
                m
            },
            Reject::StrayField,
            true,
        );
    }

    fn snapshot_for(n: &[Consensus], index: u64, term: u64, cs: ConfState) -> Message {
        let mut m = msg(MessageType::MsgSnapshot, n[1].raft_id(), n[0].raft_id(), n[0].term());
        let meta = m.mut_snapshot().mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(cs);
        m
    }

    #[test]
    fn snapshot_with_term_zero() {
        // `restore` takes (index, 0) as matching past the log and
        // fast-forwards: `commit_to` past the last index.
        blocked(
            trio,
            1,
            |n| snapshot_for(n, last_index(&n[1]) + 10, 0, ConfState::from((n[0].voters(), vec![]))),
            Reject::Snapshot,
            true,
        );
    }

    #[test]
    fn snapshot_index_overflow() {
        // `Unstable::restore` sets `offset = index + 1`: overflow.
        blocked(
            trio,
            1,
            |n| snapshot_for(n, u64::MAX, n[0].term(), ConfState::from((n[0].voters(), vec![]))),
            Reject::Snapshot,
            cfg!(debug_assertions),
        );
    }

    #[test]
    fn snapshot_conf_states_raft_cannot_restore() {
        // `confchange::restore` fails or rebuilds another configuration:
        // `fatal!("unable to restore config")` / `fatal!("invalid restore")`.
        type Shape = fn(&[Consensus]) -> ConfState;
        let shapes: [Shape; 3] = [
            // A voter that is also a learner.
            |n| ConfState::from((vec![n[0].raft_id(), n[1].raft_id()], vec![n[1].raft_id()])),
            // No voters at all.
            |n| ConfState::from((vec![], vec![n[0].raft_id(), n[1].raft_id()])),
            // A joint configuration whose next learner is not an outgoing voter.
            |n| {
                let mut cs = ConfState::from((n[0].voters(), vec![]));
                cs.voters_outgoing = vec![n[0].raft_id(), n[1].raft_id()];
                cs.learners_next = vec![77];
                cs
            },
        ];
        for shape in shapes {
            blocked(
                trio,
                1,
                move |n| snapshot_for(n, last_index(&n[1]) + 10, n[0].term(), shape(n)),
                Reject::Snapshot,
                true,
            );
        }
    }

    /// Three servers after a leadership change (term 2) and enough
    /// membership changes that every log is compacted: `[1]` leads, `[2]`
    /// follows with a log starting after index 1.
    fn compacted_trio() -> Vec<Consensus> {
        let mut nodes = trio();
        let to = nodes[1].raft_id();
        nodes[0].transfer_to(to);
        pump(&mut nodes);
        assert!(nodes[1].is_leader() && nodes[1].term() == 2);
        for i in 0..120 {
            nodes[1].propose_add_learner(5000 + i, node(50));
            pump(&mut nodes);
            nodes[1].propose_remove(5000 + i);
            pump(&mut nodes);
        }
        let first = nodes[2].group.as_ref().expect("in a group").node.store().first_index().expect("mem");
        assert!(first > 2 && term_at(&nodes[2], first) == 2, "compacted past the term-1 entries");
        nodes
    }

    #[test]
    fn append_anchored_below_our_committed_term() {
        // Rejecting, the follower searches for a hint from the anchor down
        // while its terms exceed the anchor's; below the compacted start of
        // its log `term()` fails: `fatal!("term(..) must be valid")`.
        blocked(
            compacted_trio,
            2,
            |n| {
                let mut m = msg(MessageType::MsgAppend, n[2].raft_id(), n[1].raft_id(), n[1].term());
                m.index = committed(&n[2]);
                m.log_term = 1;
                m
            },
            Reject::LogPosition,
            true,
        );
    }

    #[test]
    fn stale_leaders_are_answered_not_counted() {
        // The same anchor from the deposed leader's older term is not acted
        // on by raft-rs: it passes, and the reply tells the sender its term
        // is over.
        let mut n = compacted_trio();
        let (cluster, old) = (n[2].cluster().expect("in a group"), n[0].raft_id());
        let mut m = msg(MessageType::MsgAppend, n[2].raft_id(), old, 1);
        m.index = committed(&n[2]);
        m.log_term = 1;
        m.commit = last_index(&n[2]) + 50;
        n[2].sent.clear();
        assert!(n[2].step(cluster, old, &wire(&m)));
        let mut hb = msg(MessageType::MsgHeartbeat, n[2].raft_id(), old, 1);
        hb.commit = last_index(&n[2]) + 50;
        assert!(n[2].step(cluster, old, &wire(&hb)));
        let tn = msg(MessageType::MsgTimeoutNow, n[2].raft_id(), old, 1);
        assert!(n[2].step(cluster, old, &wire(&tn)));
        assert_eq!((n[2].rejected, n[2].panics, n[2].term()), (0, 0, 2));
        assert!(n[2].sent.iter().any(|r| r.to == old && r.term == 2), "told the old leader");
    }

    #[test]
    fn a_huge_term_overflows_at_the_next_campaign() {
        // Accepted, the term makes the next pre-campaign compute `term + 1`.
        for checked in [false, true] {
            let mut n = solo();
            let cluster = n[0].cluster().expect("founded");
            let mut m = msg(MessageType::MsgHeartbeat, n[0].raft_id(), 77, u64::MAX);
            m.commit = 1;
            if checked {
                let w = WireMsg::decode(&wire(&m)).expect("decodes");
                assert_eq!(raft_wire::check(&w, 77, &n[0].local().expect("in a group")), Err(Reject::Term));
                assert!(!n[0].step(cluster, 77, &wire(&m)));
                assert_eq!(n[0].rejected, 1);
            } else {
                n[0].step_unchecked(cluster, 77, &wire(&m));
                assert_eq!(n[0].term(), u64::MAX, "the old path took the term");
            }
            for _ in 0..100 {
                n[0].tick();
            }
            if checked {
                assert_eq!(n[0].panics, 0);
                assert!(can_commit_a_change(&mut n));
            } else if cfg!(debug_assertions) {
                assert_eq!(n[0].panics, 1);
            }
        }
        // At the bound the same heartbeat is fine: it is a term, not an overflow.
        let mut n = solo();
        let cluster = n[0].cluster().expect("founded");
        let mut m = msg(MessageType::MsgHeartbeat, n[0].raft_id(), 77, LIMIT);
        m.commit = 1;
        assert!(n[0].step(cluster, 77, &wire(&m)));
        assert_eq!(n[0].term(), LIMIT);
    }

    // ----- what is not a panic but still never comes from a correct server

    #[test]
    fn timeout_now_only_from_our_leader() {
        // From a follower, it would force an election (no panic, a term bump).
        for checked in [false, true] {
            let mut n = trio();
            let (cluster, term) = (n[1].cluster().expect("in a group"), n[1].term());
            let other = n[2].raft_id();
            let m = msg(MessageType::MsgTimeoutNow, n[1].raft_id(), other, term);
            if checked {
                assert!(!n[1].step(cluster, other, &wire(&m)));
                assert_eq!(n[1].rejected, 1);
                assert_eq!(n[1].term(), term);
            } else {
                n[1].step_unchecked(cluster, other, &wire(&m));
                assert_eq!(n[1].term(), term + 1, "the old path campaigned");
            }
        }
        // From the leader it starts the transfer as usual.
        let mut n = trio();
        let (cluster, term) = (n[1].cluster().expect("in a group"), n[1].term());
        let leader = n[0].raft_id();
        let m = msg(MessageType::MsgTimeoutNow, n[1].raft_id(), leader, term);
        assert!(n[1].step(cluster, leader, &wire(&m)));
        assert_eq!(n[1].term(), term + 1);
    }

    #[test]
    fn snapshot_requests_are_refused() {
        // A follower "requesting a snapshot" at an index makes the leader's
        // MemStorage fabricate one there and send it on to the follower.
        for checked in [false, true] {
            let mut n = trio();
            let (cluster, rid) = (n[0].cluster().expect("founded"), n[1].raft_id());
            let last = last_index(&n[0]);
            let mut m = msg(MessageType::MsgAppendResponse, n[0].raft_id(), rid, n[0].term());
            m.reject = true;
            m.index = last;
            m.reject_hint = last;
            m.request_snapshot = last + 1000;
            n[0].sent.clear();
            if checked {
                assert!(!n[0].step(cluster, rid, &wire(&m)));
                assert_eq!(n[0].rejected, 1);
            } else {
                n[0].step_unchecked(cluster, rid, &wire(&m));
            }
            let fabricated = n[0].sent.iter().any(|s| {
                s.get_msg_type() == MessageType::MsgSnapshot && s.get_snapshot().get_metadata().index > last
            });
            assert_eq!(fabricated, !checked);
        }
    }

    #[test]
    fn snapshot_rewriting_our_commit_is_refused() {
        let mut n = trio();
        let c = committed(&n[1]);
        let m = snapshot_for(&n, c, term_at(&n[1], c) + 1, ConfState::from((n[0].voters(), vec![])));
        let w = WireMsg::decode(&wire(&m)).expect("decodes");
        assert_eq!(raft_wire::check(&w, m.from, &n[1].local().expect("in a group")), Err(Reject::Snapshot));
        // The same snapshot with the right term is harmless (raft-rs ignores it).
        let ok = snapshot_for(&n, c, term_at(&n[1], c), ConfState::from((n[0].voters(), vec![])));
        let cluster = n[1].cluster().expect("in a group");
        assert!(n[1].step(cluster, ok.from, &wire(&ok)));
        assert_eq!((n[1].rejected, n[1].panics), (0, 0));
    }

    #[test]
    fn local_and_never_sent_types_are_counted() {
        use MessageType as M;
        let local = [M::MsgHup, M::MsgBeat, M::MsgUnreachable, M::MsgSnapStatus, M::MsgCheckQuorum];
        let never = [M::MsgPropose, M::MsgTransferLeader, M::MsgReadIndex, M::MsgReadIndexResp];
        let mut n = trio();
        let (cluster, term) = (n[1].cluster().expect("in a group"), n[1].term());
        let (me, leader) = (n[1].raft_id(), n[0].raft_id());
        for (kinds, reason) in [(&local[..], Reject::LocalOnly), (&never[..], Reject::NeverSent)] {
            for kind in kinds {
                let m = msg(*kind, me, leader, term);
                let w = WireMsg::decode(&wire(&m)).expect("decodes");
                assert_eq!(raft_wire::check(&w, leader, &n[1].local().expect("in a group")), Err(reason));
                assert!(!n[1].step(cluster, leader, &wire(&m)));
                // Our own encoder never puts them on the wire either.
                assert!(raft_wire::encode(&m).is_none());
            }
        }
        assert_eq!(n[1].rejected, 9);
        // A message claiming another sender than its link, or to be from us.
        let hb = msg(M::MsgHeartbeat, me, leader, term);
        let other = n[2].raft_id();
        assert!(!n[1].step(cluster, other, &wire(&hb)));
        let mine = msg(M::MsgHeartbeat, me, me, term);
        assert!(!n[1].step(cluster, me, &wire(&mine)));
        assert_eq!(n[1].rejected, 11);
        // Addressed to someone else (an old Raft ID of ours): stale, not counted.
        let stale = msg(M::MsgHeartbeat, me + 1, leader, term);
        assert!(!n[1].step(cluster, leader, &wire(&stale)));
        assert_eq!((n[1].rejected, n[1].panics), (11, 0));
        assert_eq!(n[1].leader().map(|l| l.0), Some(leader));
    }

    // ----- the wire encoding ------------------------------------------------

    /// A one-voter leader whose log has been compacted (first index > 1),
    /// so a joiner can only catch up from a snapshot.
    fn compacted() -> Vec<Consensus> {
        let mut nodes = solo();
        for i in 0..120 {
            nodes[0].propose_add_learner(5000 + i, node(50));
            nodes[0].propose_remove(5000 + i);
        }
        let first = nodes[0].group.as_ref().expect("founded").node.store().first_index().expect("mem");
        assert!(first > 1, "compacted");
        nodes
    }

    /// Runs every kind of exchange raft-rs has (formation, heartbeats, a
    /// leader transfer, an election after the leader is cut off, a join
    /// from a snapshot) and returns what was sent and the servers.
    fn honest_traffic() -> (Vec<Message>, Vec<Consensus>) {
        let mut nodes = trio();
        for _ in 0..5 {
            for n in nodes.iter_mut() {
                n.tick();
            }
            pump(&mut nodes);
        }
        // The founder cut off: the others elect a leader (pre-vote, then vote).
        let cut = nodes[0].raft_id();
        for _ in 0..60 {
            for n in nodes.iter_mut() {
                n.tick();
            }
            pump_where(&mut nodes, |from, to| from != cut && to != cut);
        }
        for _ in 0..20 {
            for n in nodes.iter_mut() {
                n.tick();
            }
            pump(&mut nodes);
        }
        let l = (1..3).find(|i| nodes[*i].is_leader()).expect("re-elected without the founder");
        let other = 3 - l;
        let to = nodes[other].raft_id();
        nodes[l].transfer_to(to);
        pump(&mut nodes);
        assert!(nodes[other].is_leader(), "transferred");
        let mut sent: Vec<Message> = nodes.iter_mut().flat_map(|n| std::mem::take(&mut n.sent)).collect();

        let mut group = compacted();
        let mut j = server(9);
        j.join(group[0].cluster().expect("founded"));
        group.push(j);
        let (rid, n) = (group[1].raft_id(), group[1].me);
        group[0].propose_add_learner(rid, n);
        pump(&mut group);
        assert!(group[0].caught_up(rid), "caught up from a snapshot");
        sent.extend(group.iter_mut().flat_map(|n| std::mem::take(&mut n.sent)));
        nodes.extend(group);
        (sent, nodes)
    }

    #[test]
    fn every_message_raft_rs_sends_round_trips_and_passes_the_checks() {
        let (sent, nodes) = honest_traffic();
        let mut kinds = std::collections::BTreeSet::new();
        for m in &sent {
            let bytes = raft_wire::encode(m).expect("encodes");
            let back = WireMsg::decode(&bytes).expect("decodes").into_message().expect("converts");
            assert_eq!(&back, m, "round trip");
            kinds.insert(format!("{:?}", m.get_msg_type()));
        }
        let expected = [
            "MsgAppend",
            "MsgAppendResponse",
            "MsgRequestVote",
            "MsgRequestVoteResponse",
            "MsgRequestPreVote",
            "MsgRequestPreVoteResponse",
            "MsgSnapshot",
            "MsgHeartbeat",
            "MsgHeartbeatResponse",
            "MsgTimeoutNow",
        ];
        let want: std::collections::BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        assert_eq!(kinds, want, "every kind raft-rs sends on its own was seen");
        assert!(sent.iter().any(|m| m.get_msg_type() == MessageType::MsgAppend
            && m.entries.iter().any(|e| e.get_entry_type() == EntryType::EntryConfChangeV2)));
        assert!(sent.iter().any(|m| m.get_msg_type() == MessageType::MsgAppendResponse && m.reject));
        assert!(sent.iter().any(|m| m.context.as_ref() == raft::CAMPAIGN_TRANSFER));
        // Honest traffic is never refused.
        for n in &nodes {
            assert_eq!((n.rejected, n.panics), (0, 0));
        }
    }

    #[test]
    fn v1_conf_changes_and_snapshot_data_are_not_representable() {
        let mut m = msg(MessageType::MsgAppend, 2, 1, 1);
        let mut e = Entry::default();
        e.set_entry_type(EntryType::EntryConfChange);
        m.mut_entries().push(e);
        assert!(WireMsg::from_message(&m).is_none());
        assert!(raft_wire::encode(&m).is_none());
        let mut s = msg(MessageType::MsgSnapshot, 2, 1, 1);
        s.mut_snapshot().data = vec![1u8].into();
        assert!(raft_wire::encode(&s).is_none());
    }

    #[test]
    fn decoding_is_bounded() {
        use super::raft_wire::{Capped, MAX_CONTEXT, MAX_ENTRIES, MAX_WIRE_BYTES, WireEntry, WirePayload};
        let w = WireMsg::from_message(&msg(MessageType::MsgAppend, 2, 1, 1)).expect("representable");
        let bytes = w.encode().expect("encodes");
        assert_eq!(WireMsg::decode(&bytes), Ok(w.clone()));
        // Every truncation fails, and so does one byte too many.
        for cut in 0..bytes.len() {
            assert_eq!(WireMsg::decode(&bytes[..cut]), Err(Reject::Malformed));
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(WireMsg::decode(&trailing), Err(Reject::Malformed));
        assert_eq!(WireMsg::decode(&vec![0u8; MAX_WIRE_BYTES + 1]), Err(Reject::Oversized));
        // Lists over their caps are refused while decoding (our encoder
        // never writes them: `from_message` refuses such messages).
        let mut big = w.clone();
        big.context = Capped(vec![7; MAX_CONTEXT + 1]);
        assert_eq!(WireMsg::decode(&big.encode().expect("encodes")), Err(Reject::Malformed));
        let mut many = w.clone();
        let e = WireEntry {
            term: 1,
            index: 1,
            context: Capped(vec![]),
            payload: WirePayload::Normal(Capped(vec![])),
        };
        many.entries = Capped(vec![e; MAX_ENTRIES + 1]);
        let many = many.encode().expect("encodes");
        assert!(many.len() < MAX_WIRE_BYTES);
        assert_eq!(WireMsg::decode(&many), Err(Reject::Malformed));
        // An entry count the input cannot back: kind, to, from, term,
        // log_term, index, then the count (8,000 as a varint), then nothing.
        assert_eq!(&bytes[..7], &[3, 2, 1, 1, 0, 0, 0]);
        let mut lie = bytes[..6].to_vec();
        lie.extend_from_slice(&[0xc0, 0x3e]);
        assert_eq!(WireMsg::decode(&lie), Err(Reject::Malformed));
    }

    #[test]
    fn the_wire_form_is_about_as_small_as_protobuf() {
        // 14 of the mirror's 15 fields cost a byte even when zero, where
        // protobuf omits them; structured conf changes save protobuf's
        // nested tags. Typical sizes: heartbeat 31 bytes (protobuf 26),
        // append with one membership change 79 (protobuf 88).
        let (sent, _) = honest_traffic();
        for m in &sent {
            let (pb, w) =
                (m.write_to_bytes().expect("protobuf").len(), raft_wire::encode(m).expect("wire").len());
            assert!(w <= pb + 8, "{:?}: {w} bytes, protobuf {pb}", m.get_msg_type());
            if m.get_msg_type() == MessageType::MsgHeartbeat {
                assert!(w <= 32, "heartbeat: {w} bytes");
            }
        }
    }

    #[test]
    fn mutated_outbox_bytes_never_panic() {
        // What a byte-level fuzz harness does: take real `take_outbox`
        // bytes, flip, cut, splice and overwrite them, and step them into
        // every server of a working group.
        use rand::{RngExt, SeedableRng};
        let (sent, _) = honest_traffic();
        let corpus: Vec<Vec<u8>> = sent.iter().filter_map(raft_wire::encode).collect();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let mut nodes = trio();
        let cluster = nodes[0].cluster().expect("founded");
        let mut stepped = 0;
        for round in 0..20_000 {
            let mut b = corpus[rng.random_range(0..corpus.len())].clone();
            for _ in 0..rng.random_range(1..4) {
                let len = b.len();
                match rng.random_range(0..5) {
                    0 if len > 0 => b[rng.random_range(0..len)] ^= 1 << rng.random_range(0..8),
                    1 if len > 0 => b[rng.random_range(0..len)] = rng.random(),
                    2 if len > 0 => b.truncate(rng.random_range(0..len)),
                    3 => b.push(rng.random()),
                    _ => {
                        let other = &corpus[rng.random_range(0..corpus.len())];
                        let at = rng.random_range(0..=b.len().min(other.len()));
                        b.splice(at.., other[at..].iter().copied());
                    }
                }
            }
            let t = rng.random_range(0..3);
            // Address it to the target and claim the sender's link, as a
            // hostile server would, so the message gets past the stale check.
            if let Ok(mut w) = WireMsg::decode(&b) {
                w.to = nodes[t].raft_id();
                w.from = nodes[(t + 1 + round % 2) % 3].raft_id();
                b = w.encode().expect("encodes");
            }
            let from = nodes[(t + 1 + round % 2) % 3].raft_id();
            stepped += usize::from(nodes[t].step(cluster, from, &b));
            if round % 50 == 0 {
                for n in nodes.iter_mut() {
                    n.tick();
                }
                pump(&mut nodes);
            }
        }
        assert!(stepped > 1000, "many mutants reached raft-rs ({stepped})");
        assert!(nodes.iter().all(|n| n.panics == 0));
    }

    // ----- random messages ------------------------------------------------

    use proptest::prelude::*;

    /// A number relative to the target's state when the message is built.
    #[derive(Debug, Clone)]
    enum Num {
        Zero,
        One,
        /// Our term (for terms) or last index (for indexes), plus a delta.
        Near(i8),
        /// Our commit index plus a delta.
        Commit(i8),
        /// Just past [`LIMIT`].
        Over,
        Max,
        Any(u64),
    }

    impl Num {
        fn at(&self, near: u64, commit: u64) -> u64 {
            match self {
                Num::Zero => 0,
                Num::One => 1,
                Num::Near(d) => near.saturating_add_signed(i64::from(*d)),
                Num::Commit(d) => commit.saturating_add_signed(i64::from(*d)),
                Num::Over => LIMIT + 1,
                Num::Max => u64::MAX,
                Num::Any(v) => *v,
            }
        }
    }

    fn num() -> impl Strategy<Value = Num> {
        prop_oneof![
            2 => Just(Num::Zero),
            1 => Just(Num::One),
            12 => (-3i8..=3).prop_map(Num::Near),
            4 => (-2i8..=2).prop_map(Num::Commit),
            1 => prop_oneof![Just(Num::Over), Just(Num::Max), any::<u64>().prop_map(Num::Any)],
        ]
    }

    /// Terms: mostly around the current one.
    fn term() -> impl Strategy<Value = Num> {
        prop_oneof![12 => (0i8..=2).prop_map(Num::Near), 1 => Just(Num::Zero), 1 => num()]
    }

    #[derive(Debug, Clone)]
    struct JunkConf {
        kind: u8,
        member: bool,
        valid_context: bool,
        transition: u8,
        two: bool,
    }

    #[derive(Debug, Clone)]
    struct JunkEntry {
        /// `None`: the next consecutive index.
        index: Option<Num>,
        /// Relative to the message's term.
        term: Num,
        conf: Option<JunkConf>,
        data: Vec<u8>,
    }

    #[derive(Debug, Clone)]
    struct JunkSnapshot {
        index: Num,
        /// Relative to the message's term.
        term: Num,
        /// Which members are voters (bit i: member i), besides the sender.
        voters: u8,
        with_sender: bool,
        learner: bool,
        joint: bool,
    }

    #[derive(Debug, Clone)]
    struct Junk {
        kind: i32,
        /// Take `log_term` from the target's own log at `index`, when it has one.
        anchored: bool,
        /// Set fields this type never carries (otherwise they stay empty).
        stray: bool,
        from: usize,
        link_lies: bool,
        to_other: bool,
        term: Num,
        log_term: Num,
        index: Num,
        commit: Num,
        commit_term: Num,
        reject: bool,
        reject_hint: Num,
        request_snapshot: bool,
        priority: i64,
        context: u8,
        entries: Vec<JunkEntry>,
        snapshot: JunkSnapshot,
    }

    fn junk() -> impl Strategy<Value = Junk> {
        use MessageType as M;
        let sent = [
            M::MsgAppend,
            M::MsgAppendResponse,
            M::MsgRequestVote,
            M::MsgRequestVoteResponse,
            M::MsgRequestPreVote,
            M::MsgRequestPreVoteResponse,
            M::MsgSnapshot,
            M::MsgHeartbeat,
            M::MsgHeartbeatResponse,
            M::MsgTimeoutNow,
        ]
        .map(|k| k as i32);
        let kind = prop_oneof![8 => proptest::sample::select(sent.to_vec()), 1 => 0i32..19];
        let conf = (
            0u8..3,
            proptest::bool::weighted(0.2),
            proptest::bool::weighted(0.7),
            0u8..3,
            proptest::bool::weighted(0.1),
        )
            .prop_map(|(kind, member, valid_context, transition, two)| JunkConf {
                kind,
                member,
                valid_context,
                transition,
                two,
            });
        let entry = (
            proptest::option::weighted(0.1, num()),
            prop_oneof![8 => (-1i8..=0).prop_map(Num::Near), 1 => num()],
            proptest::option::weighted(0.3, conf),
            proptest::collection::vec(any::<u8>(), 0..4),
        )
            .prop_map(|(index, term, conf, data)| JunkEntry { index, term, conf, data });
        let snap_term = prop_oneof![8 => (-1i8..=0).prop_map(Num::Near), 1 => num()];
        let snapshot = (
            num(),
            snap_term,
            any::<u8>(),
            proptest::bool::weighted(0.9),
            any::<bool>(),
            proptest::bool::weighted(0.1),
        )
            .prop_map(|(index, term, voters, with_sender, learner, joint)| JunkSnapshot {
                index,
                term,
                voters,
                with_sender,
                learner,
                joint,
            });
        let from = prop_oneof![9 => 0usize..2, 1 => 2usize..5];
        let head = (
            (kind, proptest::bool::weighted(0.1), proptest::bool::weighted(0.7)),
            from,
            proptest::bool::weighted(0.03),
            proptest::bool::weighted(0.03),
            term(),
            term(),
            num(),
        );
        let tail = (
            num(),
            num(),
            any::<bool>(),
            num(),
            any::<bool>(),
            any::<i64>(),
            0u8..3,
            proptest::collection::vec(entry, 0..5),
            snapshot,
        );
        (head, tail).prop_map(
            |(
                ((kind, stray, anchored), from, link_lies, to_other, term, log_term, index),
                (
                    commit,
                    commit_term,
                    reject,
                    reject_hint,
                    request_snapshot,
                    priority,
                    context,
                    entries,
                    snapshot,
                ),
            )| Junk {
                kind,
                anchored,
                stray,
                from,
                link_lies,
                to_other,
                term,
                log_term,
                index,
                commit,
                commit_term,
                reject,
                reject_hint,
                request_snapshot,
                priority,
                context,
                entries,
                snapshot,
            },
        )
    }

    /// Builds the message `j` describes for `nodes[t]`, and the link it
    /// arrives on. Membership changes that pass validation only ever add
    /// learners or remove strangers, and snapshot voter sets are drawn from
    /// the real members: a message that passes validation is trusted like
    /// any Raft peer's, and voters invented by a Byzantine sender could
    /// legitimately stall a group, which is not what this property is about.
    fn build(j: &Junk, nodes: &[Consensus], t: usize) -> (Message, u64) {
        let me = nodes[t].raft_id();
        let others: Vec<u64> = nodes.iter().map(Consensus::raft_id).filter(|r| *r != me).collect();
        let members: Vec<u64> = nodes.iter().map(Consensus::raft_id).collect();
        // Mostly a plausible sender: another member, or a stranger.
        let mut senders = others.clone();
        senders.push(77);
        let from = match j.from {
            i if i < 2 => senders[(i + j.kind as usize) % senders.len()],
            2 => me,
            3 => 0,
            _ => 78,
        };
        let (term, last, commit) = (nodes[t].term(), last_index(&nodes[t]), committed(&nodes[t]));
        let to = if j.to_other { others.first().copied().unwrap_or(12345) } else { me };
        let kind = <MessageType as protobuf::ProtobufEnum>::from_i32(j.kind).expect("a type");
        let mut m = msg(kind, to, from, j.term.at(term, commit));
        m.index = j.index.at(last, commit);
        m.log_term = match raft_of(&nodes[t]).raft_log.term(m.index) {
            Ok(t) if j.anchored && m.index <= last => t,
            _ => j.log_term.at(term, commit),
        };
        m.commit = j.commit.at(last, commit);
        m.commit_term = j.commit_term.at(term, commit);
        use MessageType as M;
        let response =
            matches!(kind, M::MsgAppendResponse | M::MsgRequestVoteResponse | M::MsgRequestPreVoteResponse);
        m.reject = j.reject && (response || j.stray);
        m.reject_hint = j.reject_hint.at(last, commit);
        if j.stray {
            m.request_snapshot = if j.request_snapshot { last + 1 } else { 0 };
            m.priority = j.priority;
        }
        m.context = match j.context {
            1 if kind == M::MsgRequestVote || j.stray => raft::CAMPAIGN_TRANSFER.to_vec(),
            2 if j.stray => vec![1, 2, 3],
            _ => Vec::new(),
        }
        .into();
        let entries: &[JunkEntry] = if kind == M::MsgAppend || j.stray { &j.entries } else { &[] };
        for (i, e) in entries.iter().enumerate() {
            let index = e.index.as_ref().map_or(m.index.wrapping_add(1 + i as u64), |n| n.at(last, commit));
            let mut entry = Entry { index, term: e.term.at(m.term, m.term), ..Default::default() };
            match &e.conf {
                None => entry.data = e.data.clone().into(),
                Some(c) => {
                    let node_id = if c.member { members[i % members.len()] } else { 6000 + i as u64 };
                    let kind =
                        [ConfChangeType::AddNode, ConfChangeType::RemoveNode, ConfChangeType::AddLearnerNode]
                            [usize::from(c.kind)];
                    let harmless = !c.member && kind != ConfChangeType::AddNode;
                    let context = if c.valid_context && harmless {
                        postcard::to_allocvec(&vec![(node_id, node(60))]).expect("encodes")
                    } else {
                        vec![9, 9]
                    };
                    let mut cc = ConfChangeV2::default();
                    cc.set_transition(
                        [
                            ConfChangeTransition::Auto,
                            ConfChangeTransition::Implicit,
                            ConfChangeTransition::Explicit,
                        ][usize::from(c.transition)],
                    );
                    for _ in 0..if c.two { 2 } else { 1 } {
                        let mut single = ConfChangeSingle { node_id, ..Default::default() };
                        single.set_change_type(kind);
                        cc.changes.push(single);
                    }
                    cc.context = context.clone().into();
                    entry.set_entry_type(EntryType::EntryConfChangeV2);
                    entry.data = cc.write_to_bytes().expect("protobuf").into();
                    entry.context = context.into();
                }
            }
            m.mut_entries().push(entry);
        }
        if kind == M::MsgSnapshot || j.stray {
            let (sj, msg_term) = (&j.snapshot, m.term);
            let meta = m.mut_snapshot().mut_metadata();
            meta.index = sj.index.at(last, commit);
            meta.term = sj.term.at(msg_term, commit);
            let mut voters: Vec<u64> = members
                .iter()
                .enumerate()
                .filter(|(i, _)| sj.voters & (1 << i) != 0)
                .map(|(_, r)| *r)
                .collect();
            if sj.with_sender && members.contains(&from) && !voters.contains(&from) {
                voters.push(from);
            }
            let mut cs = ConfState::from((voters.clone(), if sj.learner { vec![7000] } else { vec![] }));
            if sj.joint {
                cs.voters_outgoing = voters;
            }
            meta.set_conf_state(cs);
        }
        let link = if j.link_lies { from ^ 1 } else { from };
        (m, link)
    }

    /// The states a target can be in: (servers, target): a one-voter
    /// leader, the leader and a follower of three, a joiner not yet added,
    /// a learner, a follower whose log was compacted.
    fn scenario(which: usize) -> (Vec<Consensus>, usize) {
        match which {
            0 => (solo(), 0),
            1 => (trio(), 0),
            2 => (trio(), 1),
            3 => (with_joiner(), 1),
            4 => (with_learner(), 1),
            _ => (compacted_trio(), 2),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Random messages — any type, sender, term, index, entries, commit
        /// or snapshot, biased towards values near the target's own state —
        /// fed to a leader, a follower with a log (compacted or not), a
        /// joiner or a learner,
        /// never make raft-rs panic, and the group still commits a
        /// membership change afterwards.
        #[test]
        fn random_messages_never_panic_and_the_group_keeps_working(
            which in 0usize..6,
            batch in proptest::collection::vec(junk(), 1..8),
        ) {
            let (mut nodes, t) = scenario(which);
            let cluster = nodes[t].cluster().expect("in a group");
            for j in &batch {
                let (m, link) = build(j, &nodes, t);
                let bytes = wire(&m);
                nodes[t].step(cluster, link, &bytes);
                pump(&mut nodes);
                prop_assert!(nodes.iter().all(|n| n.panics == 0));
            }
            prop_assert!(can_commit_a_change(&mut nodes), "the group still works");
            prop_assert!(nodes.iter().all(|n| n.panics == 0));
        }
    }
}
