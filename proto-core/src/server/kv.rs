//! Store requests at a server: taking them from connected peers, getting
//! them to the Raft leader, and answering.
//!
//! A peer sends a request to any server it is connected to (the *origin*),
//! which remembers it and forwards it to the leader (or handles it itself
//! when it leads). The leader proposes a write as a log entry; every
//! server applies it, and the origin answers its peer when it applies that
//! entry, so no answer has to travel back from the leader. A read goes
//! through ReadIndex at the leader: once a quorum has confirmed the
//! leadership after the request arrived and the leader has applied up to
//! the confirmed index, it reads its own copy and sends the answer to the
//! origin. A read "at least revision R" is answered by the origin from its
//! own copy as soon as it has applied R.
//!
//! Nothing is retried here: a request lost with a leadership change, a
//! partition or a crash is retried by the peer (same sequence number,
//! possibly through another server), and the store applies a retried
//! write at most once (`store::machine`). Forgotten requests cost nothing
//! but the peer's wait, so the tables here are bounded and expire.

use super::Server;
use crate::identity::NodeId;
use crate::proto::{ClusterMsg, KvAsk, KvReply, PeerMsg};
use crate::store::machine::{Fail, Outcome};
use crate::store::{Command, Op, check_op};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Watches one peer may have at one server.
pub(crate) const MAX_WATCHES: usize = 64;
/// Bytes of changes per watch message.
const WATCH_BATCH: usize = 32 * 1024;
/// A watch whose prefix saw no change for this many revisions is told the
/// server's progress anyway, so it resumes elsewhere from a recent revision
/// (not from one compacted away in the meantime).
const PROGRESS_EVERY: u64 = 1000;

/// Requests one peer may have waiting at one server.
const MAX_WAITING_PER_PEER: usize = 128;
/// Reads the leader confirms at once.
const MAX_READS: usize = 4096;
/// How long a request is remembered (peers give up sooner by default).
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// A peer's request this server took and has not answered.
#[derive(Debug)]
struct Waiting {
    since: Instant,
    /// For reads at a revision: the request and the revision.
    local_read: Option<(Op, u64)>,
}

/// A read the leader is confirming.
#[derive(Debug)]
struct Read {
    origin: NodeId,
    client: NodeId,
    epoch: u64,
    seq: u64,
    op: Op,
    since: Instant,
    /// Asked raft-rs for the read index.
    asked: bool,
    /// The confirmed index, once a quorum answered.
    index: Option<u64>,
}

/// A peer's watch at this server.
#[derive(Debug)]
struct Watching {
    prefix: Vec<u8>,
    /// The revision to report from next (0: not started — no store yet).
    next: u64,
    /// The `next` last told to the peer.
    told: u64,
}

/// The server's store-request tables.
#[derive(Debug, Default)]
pub(super) struct KvTables {
    /// By (peer, run, sequence number).
    waiting: BTreeMap<(NodeId, u64, u64), Waiting>,
    watches: BTreeMap<(NodeId, u64), Watching>,
    reads: BTreeMap<u64, Read>,
    next_ctx: u64,
}

impl Server {
    /// A peer's store request (`PeerMsg::Kv`).
    pub(super) fn on_kv_ask(&mut self, now: Instant, from: NodeId, ask: KvAsk) {
        if let Err(e) = check_op(&ask.op) {
            self.reply(from, ask.epoch, ask.seq, Err(Fail::from(&e)), true);
            return;
        }
        let waiting = self.kv.waiting.range((from, 0, 0)..=(from, u64::MAX, u64::MAX)).count();
        if waiting >= MAX_WAITING_PER_PEER && !self.kv.waiting.contains_key(&(from, ask.epoch, ask.seq)) {
            // The peer keeps fewer in flight; it will retry.
            return;
        }
        if let (Op::Get { .. }, Some(rev)) = (&ask.op, ask.at_least) {
            let key = (from, ask.epoch, ask.seq);
            self.kv.waiting.insert(key, Waiting { since: now, local_read: Some((ask.op, rev)) });
            self.serve_local_reads();
            return;
        }
        // A retry is forwarded again: the leader may have changed.
        self.kv.waiting.insert((from, ask.epoch, ask.seq), Waiting { since: now, local_read: None });
        self.forward(now, from, ask);
    }

    /// A request forwarded by another server (`ClusterMsg::KvForward`).
    pub(super) fn on_kv_forward(&mut self, now: Instant, origin: NodeId, ask: KvAsk, client: NodeId) {
        if check_op(&ask.op).is_ok() && self.consensus.is_leader() {
            self.lead(now, origin, client, ask);
        }
    }

    /// A read's answer from the leader (`ClusterMsg::KvRead`).
    pub(super) fn on_kv_read(&mut self, client: NodeId, epoch: u64, seq: u64, outcome: Outcome) {
        if self.kv.waiting.remove(&(client, epoch, seq)).is_some() {
            self.reply(client, epoch, seq, outcome, true);
        }
    }

    /// A peer went away: its requests and watches are dropped (it retries
    /// and re-registers elsewhere).
    pub(super) fn kv_peer_gone(&mut self, peer: NodeId) {
        let keys: Vec<_> =
            self.kv.waiting.range((peer, 0, 0)..=(peer, u64::MAX, u64::MAX)).map(|(k, _)| *k).collect();
        for k in keys {
            self.kv.waiting.remove(&k);
        }
        let keys: Vec<_> = self.kv.watches.range((peer, 0)..=(peer, u64::MAX)).map(|(k, _)| *k).collect();
        for k in keys {
            self.kv.watches.remove(&k);
        }
    }

    /// A peer's `Watch`: registered here, served from this server's own
    /// copy (every server applies the same changes in the same order).
    pub(super) fn on_watch(&mut self, from: NodeId, id: u64, prefix: Vec<u8>, start: u64) {
        let count = self.kv.watches.range((from, 0)..=(from, u64::MAX)).count();
        if prefix.len() > crate::store::MAX_KEY_LEN
            || (count >= MAX_WATCHES && !self.kv.watches.contains_key(&(from, id)))
        {
            let fail = Fail::Invalid(3);
            self.send_peer(from, PeerMsg::WatchEnd { id, fail });
            return;
        }
        let next = match (start, self.consensus.store()) {
            (0, Some(s)) => s.revision() + 1,
            (0, None) => 0,
            (r, _) => r,
        };
        // `told: 0` makes the first pump confirm the start to the peer.
        self.kv.watches.insert((from, id), Watching { prefix, next, told: 0 });
        self.pump_watches();
    }

    /// A peer's `Unwatch`.
    pub(super) fn on_unwatch(&mut self, from: NodeId, id: u64) {
        self.kv.watches.remove(&(from, id));
    }

    /// Sends every watch the changes applied since it was last served.
    fn pump_watches(&mut self) {
        let Some(store) = self.consensus.store() else { return };
        let rev = store.revision();
        let mut out = Vec::new();
        let mut ended = Vec::new();
        for (&(peer, id), w) in self.kv.watches.iter_mut() {
            if w.next == 0 {
                w.next = rev + 1;
            }
            loop {
                if w.next > rev && w.told != 0 {
                    break;
                }
                match store.changes_since(w.next, &w.prefix, WATCH_BATCH) {
                    Err(oldest) => {
                        ended.push((peer, id, Fail::Compacted { oldest }));
                        break;
                    }
                    Ok((changes, next)) => {
                        let progress = w.told == 0 || next >= w.told + PROGRESS_EVERY;
                        w.next = next;
                        if !changes.is_empty() || progress {
                            w.told = next;
                            out.push((peer, PeerMsg::WatchEvents { id, next, changes }));
                        }
                        if next > rev {
                            break;
                        }
                    }
                }
            }
        }
        for (peer, id, fail) in ended {
            self.kv.watches.remove(&(peer, id));
            out.push((peer, PeerMsg::WatchEnd { id, fail }));
        }
        for (peer, msg) in out {
            self.send_peer(peer, msg);
        }
    }

    fn forward(&mut self, now: Instant, client: NodeId, ask: KvAsk) {
        if self.consensus.is_leader() {
            self.lead(now, self.me, client, ask);
            return;
        }
        let leader = self.consensus.leader().and_then(|(rid, _)| self.consensus.node_of(rid));
        if let Some(leader) = leader.filter(|l| self.live.contains_key(l)) {
            self.send(leader, ClusterMsg::KvForward(ask, client));
        }
        // No leader known: the peer's retry comes back once there is one.
    }

    /// At the leader: propose a write, or start confirming a read. Only the
    /// agreed Master does: a leader whose group is not the one the cluster
    /// agrees on (two groups meet while the cluster forms; the smaller
    /// dissolves) must not take writes that would vanish with it.
    fn lead(&mut self, now: Instant, origin: NodeId, client: NodeId, ask: KvAsk) {
        if self.master.master != Some(self.me) {
            return;
        }
        if let Op::Get { .. } = ask.op {
            if self.kv.reads.len() >= MAX_READS {
                return;
            }
            let ctx = self.kv.next_ctx;
            self.kv.next_ctx += 1;
            let read = Read {
                origin,
                client,
                epoch: ask.epoch,
                seq: ask.seq,
                op: ask.op,
                since: now,
                asked: false,
                index: None,
            };
            self.kv.reads.insert(ctx, read);
            self.kv_pump();
        } else {
            let cmd = Command { client, epoch: ask.epoch, seq: ask.seq, ack: ask.ack, op: ask.op };
            self.consensus.propose_command(&cmd);
            self.flush_raft();
        }
    }

    /// Answers what Raft has applied or confirmed since the last call; run
    /// after every Raft step (from `flush_raft`).
    pub(super) fn kv_pump(&mut self) {
        for a in self.consensus.take_applied() {
            if self.kv.waiting.remove(&(a.client, a.epoch, a.seq)).is_some() {
                self.reply(a.client, a.epoch, a.seq, a.outcome, true);
            }
        }
        if !self.consensus.is_leader() {
            // Reads in flight were for a leadership that is over; raft-rs
            // drops them too. Their peers retry.
            self.kv.reads.clear();
        }
        for (ctx, index) in self.consensus.take_reads() {
            if let Some(r) = self.kv.reads.get_mut(&ctx) {
                r.index = Some(index);
            }
        }
        // A new leader confirms reads only once it committed in its term.
        if self.consensus.can_read() {
            let ask: Vec<u64> = self.kv.reads.iter().filter(|(_, r)| !r.asked).map(|(c, _)| *c).collect();
            for ctx in ask {
                if let Some(r) = self.kv.reads.get_mut(&ctx) {
                    r.asked = true;
                }
                self.consensus.read_index(ctx);
            }
            // The heartbeats that confirm the reads leave now, not at the
            // next tick.
            self.send_raft_outbox();
            // A single voter confirms at once: pick its answers up now.
            for (ctx, index) in self.consensus.take_reads() {
                if let Some(r) = self.kv.reads.get_mut(&ctx) {
                    r.index = Some(index);
                }
            }
        }
        let applied = self.consensus.store().map_or(0, |s| s.applied());
        let ready: Vec<u64> = self
            .kv
            .reads
            .iter()
            .filter(|(_, r)| r.index.is_some_and(|i| i <= applied))
            .map(|(c, _)| *c)
            .collect();
        for ctx in ready {
            let Some(r) = self.kv.reads.remove(&ctx) else { continue };
            let Some(store) = self.consensus.store() else { continue };
            let outcome = store.read(&r.op);
            if r.origin == self.me {
                self.on_kv_read(r.client, r.epoch, r.seq, outcome);
            } else if self.live.contains_key(&r.origin) {
                let msg = ClusterMsg::KvRead { client: r.client, epoch: r.epoch, seq: r.seq, outcome };
                self.send(r.origin, msg);
            }
        }
        self.serve_local_reads();
        self.pump_watches();
        self.expire_kv();
        self.report_holding();
        if self.sessions_stale() {
            self.keep_sessions(self.clock);
        }
    }

    /// Reads at a revision this server has reached.
    fn serve_local_reads(&mut self) {
        let Some(store) = self.consensus.store() else { return };
        let rev = store.revision();
        let due: Vec<((NodeId, u64, u64), Outcome)> = self
            .kv
            .waiting
            .iter()
            .filter_map(|(k, w)| {
                let (op, at) = w.local_read.as_ref()?;
                (rev >= *at).then(|| (*k, store.read(op)))
            })
            .collect();
        for ((client, epoch, seq), outcome) in due {
            self.kv.waiting.remove(&(client, epoch, seq));
            self.reply(client, epoch, seq, outcome, false);
        }
    }

    fn expire_kv(&mut self) {
        let now = self.clock;
        let old = |since: Instant| now.saturating_duration_since(since) >= FORGET_AFTER;
        self.kv.waiting.retain(|_, w| !old(w.since));
        self.kv.reads.retain(|_, r| !old(r.since));
    }

    fn reply(&mut self, to: NodeId, epoch: u64, seq: u64, outcome: Outcome, linearizable: bool) {
        if self.peers.get(&to).is_none() {
            return;
        }
        let voters = u32::try_from(self.consensus.voter_count()).unwrap_or(u32::MAX);
        self.send_peer(to, PeerMsg::KvReply(KvReply { epoch, seq, outcome, linearizable, voters }));
    }
}
