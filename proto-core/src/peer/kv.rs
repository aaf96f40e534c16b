//! A peer's store requests: sending each to a server, retrying through
//! another when that one goes away or stays silent, and reporting the answer
//! or the timeout.
//!
//! Each request gets the next sequence number of this peer, which is its
//! request id for the user; retries reuse it, so the store applies a write
//! at most once however many servers it went through
//! (`store::machine`). The acknowledgement sent with every request (all
//! sequence numbers below it are answered) lets the store forget answers.

use super::Peer;
use crate::event::Event;
use crate::identity::NodeId;
use crate::proto::{KvAsk, KvReply, PeerMsg};
use crate::server::Action;
use crate::store::machine::{Change, Fail};
use crate::store::{KvAnswer, KvError, KvEvent, KvGuarantee, KvOptions, Op, check_op};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Requests one peer keeps in flight (below what the store keeps answers
/// for, so every retry finds its answer).
pub(crate) const MAX_IN_FLIGHT: usize = 64;
/// First wait before a request is sent again; doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Pending {
    op: Op,
    at_least: Option<u64>,
    deadline: Instant,
    retry_at: Instant,
    backoff: Duration,
    /// The server it was last sent to.
    via: Option<NodeId>,
    tries: u32,
}

/// A watch of this peer.
#[derive(Debug)]
struct PeerWatch {
    prefix: Vec<u8>,
    /// The revision to resume from (0 until the server confirmed the start
    /// of a watch "from now").
    next: u64,
    /// The server it is registered at.
    via: Option<NodeId>,
}

/// The peer's store requests in flight and its watches.
#[derive(Debug, Default)]
pub(crate) struct KvClient {
    /// This run's epoch (random per start): the store keeps answers per
    /// (peer, epoch), so a restarted peer's sequence numbers, which start
    /// at 0 again, never meet the answers of its previous run.
    epoch: u64,
    next_seq: u64,
    pending: BTreeMap<u64, Pending>,
    next_watch: u64,
    watches: BTreeMap<u64, PeerWatch>,
}

/// Whether something last sent `via` a server must go out again now: it
/// never found a server, or went to the one just `lost`.
fn stranded(via: Option<NodeId>, lost: Option<NodeId>) -> bool {
    via.is_none() || (lost.is_some() && via == lost)
}

impl KvClient {
    pub(super) fn new(epoch: u64) -> Self {
        Self { epoch, ..Self::default() }
    }

    /// This run's epoch (the fuzz harness addresses replies with it).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The earliest retry or deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline.min(p.retry_at)).min()
    }
}

impl Peer {
    /// Starts a store request; returns its id.
    pub(crate) fn kv_request(&mut self, now: Instant, op: Op, opts: KvOptions) -> Result<u64, KvError> {
        check_op(&op)?;
        if self.kv.pending.len() >= MAX_IN_FLIGHT {
            return Err(KvError::TooManyInFlight(MAX_IN_FLIGHT));
        }
        let seq = self.kv.next_seq;
        self.kv.next_seq += 1;
        let at_least = if matches!(op, Op::Get { .. }) { opts.at_least } else { None };
        let p = Pending {
            op,
            at_least,
            deadline: now.checked_add(opts.timeout).unwrap_or(now),
            retry_at: now,
            backoff: RETRY_MIN,
            via: None,
            tries: 0,
        };
        self.kv.pending.insert(seq, p);
        self.kv_send(now, seq);
        Ok(seq)
    }

    /// Sends (or re-sends) request `seq` to the best server: the Master
    /// (with three or more servers, the Raft leader: no forwarding hop) if
    /// linked, otherwise the linked servers in turn.
    fn kv_send(&mut self, now: Instant, seq: u64) {
        let ack = self.kv.pending.keys().next().copied().unwrap_or(self.kv.next_seq);
        let servers: Vec<NodeId> = self.servers.keys().copied().collect();
        let Some(p) = self.kv.pending.get_mut(&seq) else { return };
        let master = self.master.master.filter(|m| servers.contains(m));
        let via = match (master, p.tries) {
            (Some(m), 0) => Some(m),
            _ if servers.is_empty() => None,
            _ => Some(servers[p.tries as usize % servers.len()]),
        };
        p.tries += 1;
        p.via = via;
        p.retry_at = now + p.backoff;
        p.backoff = (p.backoff * 2).min(RETRY_MAX);
        if let Some(to) = via {
            let ask = KvAsk { epoch: self.kv.epoch, seq, ack, op: p.op.clone(), at_least: p.at_least };
            self.actions.push_back(Action::Send { to, msg: crate::proto::Control::Peer(PeerMsg::Kv(ask)) });
        }
    }

    /// A server answered.
    pub(super) fn on_kv_reply(&mut self, now: Instant, reply: KvReply) {
        if reply.epoch != self.kv.epoch {
            return; // for this peer's previous run
        }
        if self.kv.pending.remove(&reply.seq).is_none() {
            return; // a late duplicate (answered through another server)
        }
        let guarantee =
            if reply.linearizable { KvGuarantee::Linearizable } else { KvGuarantee::AtLeastRevision };
        let result = match reply.outcome {
            Ok((revision, res)) => {
                Ok(KvAnswer { revision, response: res.into(), guarantee, voters: reply.voters })
            }
            Err(f) => Err(KvError::from(f)),
        };
        self.kv_done(now, reply.seq, result);
    }

    /// Reports request `seq`'s outcome: to the coordination recipe that
    /// made it, or to the user.
    fn kv_done(&mut self, now: Instant, seq: u64, result: Result<KvAnswer, KvError>) {
        if self.coord.owns_request(seq) {
            self.coord_on_answer(now, seq, result);
        } else {
            self.actions.push_back(Action::Event(Event::KvDone { id: seq, result }));
        }
    }

    /// Retries and deadlines.
    pub(super) fn kv_timeout(&mut self, now: Instant) {
        let expired: Vec<u64> =
            self.kv.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(s, _)| *s).collect();
        for seq in expired {
            self.kv.pending.remove(&seq);
            self.kv_done(now, seq, Err(KvError::from(Fail::Unavailable)));
        }
        let due: Vec<u64> =
            self.kv.pending.iter().filter(|(_, p)| p.retry_at <= now).map(|(s, _)| *s).collect();
        for seq in due {
            self.kv_send(now, seq);
        }
    }

    /// Starts a watch of `prefix` from revision `from` (0: from the next
    /// change); returns its id.
    pub(crate) fn watch(&mut self, prefix: Vec<u8>, from: u64) -> Result<u64, KvError> {
        if prefix.len() > crate::store::MAX_KEY_LEN {
            return Err(KvError::TooLarge { what: "key", len: prefix.len(), max: crate::store::MAX_KEY_LEN });
        }
        if self.kv.watches.len() >= crate::server::MAX_WATCHES {
            return Err(KvError::TooManyInFlight(crate::server::MAX_WATCHES));
        }
        let id = self.kv.next_watch;
        self.kv.next_watch += 1;
        self.kv.watches.insert(id, PeerWatch { prefix, next: from, via: None });
        self.register_watch(id);
        Ok(id)
    }

    /// Stops a watch; false if there is no such watch.
    pub(crate) fn unwatch(&mut self, id: u64) -> bool {
        let Some(w) = self.kv.watches.remove(&id) else { return false };
        if let Some(to) = w.via {
            self.actions
                .push_back(Action::Send { to, msg: crate::proto::Control::Peer(PeerMsg::Unwatch { id }) });
        }
        true
    }

    /// Registers watch `id` at the nearest linked server (the first), from
    /// where it stands: gap-free, because every server reports the same
    /// sequence of changes.
    fn register_watch(&mut self, id: u64) {
        let first = self.servers.keys().next().copied();
        let Some(w) = self.kv.watches.get_mut(&id) else { return };
        w.via = first;
        if let Some(to) = first {
            let msg = PeerMsg::Watch { id, prefix: w.prefix.clone(), from: w.next };
            self.actions.push_back(Action::Send { to, msg: crate::proto::Control::Peer(msg) });
        }
    }

    /// Changes for a watch.
    pub(super) fn on_watch_events(
        &mut self,
        now: Instant,
        from: NodeId,
        id: u64,
        next: u64,
        changes: Vec<Change>,
    ) {
        let Some(w) = self.kv.watches.get_mut(&id) else { return };
        if w.via != Some(from) {
            return; // from a server the watch moved away from
        }
        // Only what is new: a re-registration never repeats a change.
        let start = w.next;
        let events: Vec<KvEvent> =
            changes.into_iter().filter(|c| c.rev >= start).map(KvEvent::from).collect();
        w.next = w.next.max(next);
        if events.is_empty() {
        } else if self.coord.owns_watch(id) {
            self.coord_on_watch(now, id, events);
        } else {
            self.actions.push_back(Action::Event(Event::KvWatch { id, events }));
        }
    }

    /// A server ended a watch.
    pub(super) fn on_watch_end(&mut self, now: Instant, from: NodeId, id: u64, fail: Fail) {
        if self.kv.watches.get(&id).is_some_and(|w| w.via == Some(from)) {
            self.kv.watches.remove(&id);
            let error = KvError::from(fail);
            if self.coord.owns_watch(id) {
                self.coord_on_watch_end(now, id, error);
            } else {
                self.actions.push_back(Action::Event(Event::KvWatchEnded { id, error }));
            }
        }
    }

    /// A server link came up or went down: requests that had no server, or
    /// went to the lost one, are sent (again) at once; so are watches.
    pub(super) fn kv_links_changed(&mut self, now: Instant, lost: Option<NodeId>) {
        let moved: Vec<u64> =
            self.kv.watches.iter().filter(|(_, w)| stranded(w.via, lost)).map(|(id, _)| *id).collect();
        for id in moved {
            self.register_watch(id);
        }
        let resend: Vec<u64> =
            self.kv.pending.iter().filter(|(_, p)| stranded(p.via, lost)).map(|(s, _)| *s).collect();
        for seq in resend {
            if let Some(p) = self.kv.pending.get_mut(&seq) {
                p.backoff = RETRY_MIN;
            }
            self.kv_send(now, seq);
        }
    }
}
