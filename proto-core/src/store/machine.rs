//! The store's state machine: what every server applies, in log order.
//!
//! Everything here is deterministic — ordered maps, no clock, no
//! randomness — so two servers that applied the same entries hold equal
//! stores and give equal answers, and a snapshot restores exactly.
//!
//! *Exactly once.* Every write arrives as a [`Command`] carrying the client
//! (the peer's node ID), a per-client sequence number and the client's
//! acknowledgement (every sequence number below it has been answered and
//! will not be retried). The store keeps the answer of each unacknowledged
//! request (at most [`MAX_CLIENT_ANSWERS`] per client, at most
//! [`MAX_CACHE_BYTES`] in all, least recently active clients forgotten
//! first); a retry — through another server, after a failover — gets the
//! kept answer instead of being applied again (Raft dissertation §6.3).

use super::{
    Compare, KEY_OVERHEAD, KvEntry, KvError, KvEvent, KvEventKind, KvResponse, MAX_READ_LEN,
    MAX_SESSIONS_PER_PEER, MAX_STORE_BYTES, Op, Range, Target, TxnOp, WireCmp, check_op,
};
use crate::identity::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Answers kept per client for retries.
pub(crate) const MAX_CLIENT_ANSWERS: usize = 64;
/// Bytes of kept answers in all (keys, values and answers of reads inside
/// transactions are what makes them big).
pub(crate) const MAX_CACHE_BYTES: usize = 1024 * 1024;
/// Most bytes the reads inside one transaction return together, so a kept
/// answer stays small.
pub(crate) const MAX_TXN_READ_LEN: usize = 64 * 1024;

/// Most changes kept for watches (a watch resumed from an older revision
/// gets `Compacted`)…
pub(crate) const MAX_HISTORY_CHANGES: usize = 20_000;
/// …and most bytes of them.
pub(crate) const MAX_HISTORY_BYTES: usize = 2 * 1024 * 1024;

/// One change to one key, as watches report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Change {
    /// The revision of the write.
    pub(crate) rev: u64,
    pub(crate) key: Vec<u8>,
    /// The new value, or `None` for a delete.
    pub(crate) value: Option<Vec<u8>>,
    /// For a put: the key's create revision and version after it.
    pub(crate) create: u64,
    pub(crate) version: u64,
    /// For a delete: the key went because its session expired (not by a
    /// request), which coordination recipes treat as an involuntary loss.
    pub(crate) expired: bool,
}

impl Change {
    fn cost(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, Vec::len) + KEY_OVERHEAD
    }
}

impl From<Change> for KvEvent {
    fn from(c: Change) -> Self {
        let (kind, value) = match c.value {
            Some(v) => (KvEventKind::Put, v),
            None if c.expired => (KvEventKind::Expired, Vec::new()),
            None => (KvEventKind::Delete, Vec::new()),
        };
        KvEvent {
            kind,
            entry: KvEntry {
                key: c.key,
                value,
                create_revision: c.create,
                mod_revision: c.rev,
                version: c.version,
            },
        }
    }
}

/// Whose exactly-once answers: a peer's ID and the run ([`Command::epoch`]).
pub(crate) type ClientKey = (NodeId, u64);

/// A write as it travels in a log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Command {
    /// The peer that asked.
    pub(crate) client: NodeId,
    /// Which run of that peer asked (random per start): sequence numbers
    /// restart with every run, so answers are kept per (peer, run).
    pub(crate) epoch: u64,
    /// Its sequence number for this request (retries reuse it).
    pub(crate) seq: u64,
    /// Every sequence number below this one has been answered to the client.
    pub(crate) ack: u64,
    /// The request.
    pub(crate) op: Op,
}

/// One key's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Rec {
    value: Vec<u8>,
    create: u64,
    modified: u64,
    version: u64,
    /// The session the key is bound to (0: none).
    session: u64,
}

/// A session: its owner, TTL and the keys bound to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    pub(crate) owner: NodeId,
    /// The run of the owner that opened it ([`Command::epoch`]).
    epoch: u64,
    pub(crate) ttl_ms: u64,
    keys: BTreeSet<Vec<u8>>,
}

/// What a log entry of the store carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Proposal {
    /// A peer's request.
    Client(Command),
    /// The leader decided that a session's owner has been away from every
    /// server for its TTL: the session ends and its keys go.
    Expire { session: u64 },
}

/// An answer of an operation inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Leaf {
    Get { entries: Vec<(Vec<u8>, Rec)>, more: bool },
    Put,
    Delete { deleted: u64 },
    SessionOpened { session: u64 },
    SessionClosed { deleted: u64 },
}

/// A response's wire form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Res {
    Leaf(Leaf),
    Txn { succeeded: bool, responses: Vec<Leaf> },
}

/// Names of the parts [`KvError::TooLarge`] reports, indexed on the wire.
const PARTS: [&str; 7] = ["key", "value", "success", "failure", "compared value", "request", "comparisons"];
/// Texts of [`KvError::Invalid`], indexed on the wire.
const INVALID: [&str; 7] = [
    "a put needs a non-empty key",
    "a transaction has at most MAX_TXN_OPS comparisons and no nested transaction",
    "the request does not decode",
    "a watch's prefix is at most MAX_KEY_LEN bytes, and a peer has at most 64 watches per server",
    "no such session of this peer (it expired or was closed)",
    "a session's TTL is between MIN_SESSION_TTL and MAX_SESSION_TTL",
    "a peer holds at most MAX_SESSIONS_PER_PEER sessions",
];

/// A failure's wire form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Fail {
    Unavailable,
    TooLarge { part: u8, len: u64, max: u64 },
    Invalid(u8),
    StoreFull { used: u64, max: u64 },
    Stale,
    Compacted { oldest: u64 },
}

impl From<&KvError> for Fail {
    fn from(e: &KvError) -> Self {
        let index = |table: &[&str], s: &str| table.iter().position(|t| *t == s).unwrap_or(0) as u8;
        match e {
            KvError::TooLarge { what, len, max } => {
                Fail::TooLarge { part: index(&PARTS, what), len: *len as u64, max: *max as u64 }
            }
            KvError::Invalid(s) => Fail::Invalid(index(&INVALID, s)),
            KvError::StoreFull { used, max } => Fail::StoreFull { used: *used as u64, max: *max as u64 },
            KvError::Stale => Fail::Stale,
            KvError::Compacted { oldest } => Fail::Compacted { oldest: *oldest },
            // Local errors never travel; an unknown outcome is "unavailable".
            KvError::Unavailable | KvError::NotAPeer | KvError::TooManyInFlight(_) => Fail::Unavailable,
        }
    }
}

impl From<Fail> for KvError {
    fn from(f: Fail) -> Self {
        let pick = |table: &[&'static str], i: u8| table.get(usize::from(i)).copied().unwrap_or("request");
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        match f {
            Fail::Unavailable => KvError::Unavailable,
            Fail::TooLarge { part, len, max } => {
                KvError::TooLarge { what: pick(&PARTS, part), len: size(len), max: size(max) }
            }
            Fail::Invalid(i) => KvError::Invalid(pick(&INVALID, i)),
            Fail::StoreFull { used, max } => KvError::StoreFull { used: size(used), max: size(max) },
            Fail::Stale => KvError::Stale,
            Fail::Compacted { oldest } => KvError::Compacted { oldest },
        }
    }
}

/// What the store answered: the revision and the response, or why not.
pub(crate) type Outcome = Result<(u64, Res), Fail>;

fn entry(key: Vec<u8>, r: Rec) -> KvEntry {
    KvEntry { key, value: r.value, create_revision: r.create, mod_revision: r.modified, version: r.version }
}

impl From<Leaf> for KvResponse {
    fn from(l: Leaf) -> Self {
        match l {
            Leaf::Get { entries, more } => {
                KvResponse::Get { entries: entries.into_iter().map(|(k, r)| entry(k, r)).collect(), more }
            }
            Leaf::Put => KvResponse::Put,
            Leaf::Delete { deleted } => KvResponse::Delete { deleted },
            Leaf::SessionOpened { session } => KvResponse::SessionOpened { session },
            Leaf::SessionClosed { deleted } => KvResponse::SessionClosed { deleted },
        }
    }
}

impl From<Res> for KvResponse {
    fn from(r: Res) -> Self {
        match r {
            Res::Leaf(l) => l.into(),
            Res::Txn { succeeded, responses } => {
                KvResponse::Txn { succeeded, responses: responses.into_iter().map(Into::into).collect() }
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Client {
    /// Sequence number → kept answer.
    answers: BTreeMap<u64, Outcome>,
    /// Every sequence number below this was acknowledged by the client.
    acked: u64,
    /// The log index of its latest command (least recent is forgotten first).
    touched: u64,
}

/// The whole state, as a snapshot carries it.
#[derive(Serialize, Deserialize)]
struct Image {
    revision: u64,
    applied: u64,
    kvs: Vec<(Vec<u8>, Rec)>,
    clients: Vec<(ClientKey, Client)>,
    history: Vec<Change>,
    first_kept: u64,
    sessions: Vec<(u64, Session)>,
}

/// The replicated store's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Store {
    kvs: BTreeMap<Vec<u8>, Rec>,
    /// The revision of the latest change (0: nothing was ever written).
    revision: u64,
    /// Bytes counted against [`MAX_STORE_BYTES`].
    used: usize,
    clients: BTreeMap<ClientKey, Client>,
    /// (touched, client), to forget the least recently active first.
    lru: BTreeSet<(u64, ClientKey)>,
    /// Bytes of kept answers.
    cached: usize,
    /// The log index of the latest applied entry.
    applied: u64,
    /// The revision the latest change was made at (`revision + 1` while a
    /// request that changed something is being executed).
    last_write: u64,
    /// Recent changes, oldest first, for watches.
    history: VecDeque<Change>,
    history_bytes: usize,
    /// Every change at or after this revision is in `history`.
    first_kept: u64,
    /// Open sessions by id (the log index of the request that opened it).
    sessions: BTreeMap<u64, Session>,
    /// Bumped whenever a session opens or ends (servers watch it).
    sessions_changed: u64,
}

fn answer_cost(o: &Outcome) -> usize {
    postcard::experimental::serialized_size(o).unwrap_or(0) + 16
}

fn rec_cost(key: &[u8], r: &Rec) -> usize {
    key.len() + r.value.len() + KEY_OVERHEAD
}

impl Store {
    /// The revision of the latest change.
    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    /// The log index of the latest entry applied.
    pub(crate) fn applied(&self) -> u64 {
        self.applied
    }

    /// Records that log entries up to `index` were applied (entries that
    /// carry no command: leader no-ops, membership changes).
    pub(crate) fn set_applied(&mut self, index: u64) {
        self.applied = self.applied.max(index);
    }

    /// Bytes counted against [`MAX_STORE_BYTES`].
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used
    }

    /// Applies a committed command at log index `index`.
    pub(crate) fn apply(&mut self, index: u64, cmd: Command) -> Outcome {
        self.applied = self.applied.max(index);
        let key = (cmd.client, cmd.epoch);
        let client = self.touch(key, index);
        // The client has every answer below `ack`: forget them.
        if cmd.ack > client.acked {
            client.acked = cmd.ack;
            let keep = client.answers.split_off(&cmd.ack);
            let freed: usize = client.answers.values().map(answer_cost).sum();
            client.answers = keep;
            self.cached -= freed.min(self.cached);
        }
        // A new run of a peer ends the sessions of its earlier runs: they
        // would otherwise live on while the new run stays connected, with
        // locks and candidacies nobody holds. Their keys go as expired.
        let old: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.owner == cmd.client && s.epoch != cmd.epoch)
            .map(|(id, _)| *id)
            .collect();
        if !old.is_empty() {
            let next = self.revision + 1;
            for id in old {
                self.end_session(id, next, true);
            }
            if self.kvs_changed_at(next) {
                self.revision = next;
            }
        }
        let client = self.clients.entry(key).or_default();
        if cmd.seq < client.acked {
            return Err(Fail::Stale);
        }
        if let Some(kept) = client.answers.get(&cmd.seq) {
            return kept.clone();
        }
        let outcome = self.execute(index, cmd.client, cmd.epoch, &cmd.op);
        let client = self.clients.entry(key).or_default();
        if client.answers.len() >= MAX_CLIENT_ANSWERS
            && let Some((_, old)) = client.answers.pop_first()
        {
            self.cached -= answer_cost(&old).min(self.cached);
        }
        self.cached += answer_cost(&outcome);
        client.answers.insert(cmd.seq, outcome.clone());
        self.forget_clients(key);
        outcome
    }

    /// Serves a read (`Op::Get`) from this copy.
    pub(crate) fn read(&self, op: &Op) -> Outcome {
        match op {
            Op::Get { range, limit } => Ok((self.revision, Res::Leaf(self.get(range, *limit, MAX_READ_LEN)))),
            _ => Err(Fail::Invalid(2)),
        }
    }

    fn touch(&mut self, id: ClientKey, index: u64) -> &mut Client {
        let client = self.clients.entry(id).or_default();
        self.lru.remove(&(client.touched, id));
        client.touched = index;
        self.lru.insert((index, id));
        client
    }

    /// Forgets the least recently active clients (never `keep`) while the
    /// kept answers are over budget or there are too many clients.
    fn forget_clients(&mut self, keep: ClientKey) {
        const MAX_CLIENTS: usize = 4096;
        while self.cached > MAX_CACHE_BYTES || self.clients.len() > MAX_CLIENTS {
            let Some(&(t, id)) = self.lru.iter().find(|(_, id)| *id != keep) else { break };
            self.lru.remove(&(t, id));
            if let Some(c) = self.clients.remove(&id) {
                let freed: usize = c.answers.values().map(answer_cost).sum();
                self.cached -= freed.min(self.cached);
            }
        }
    }

    /// A put may bind a key to a session only if the session exists and is
    /// the requester's.
    fn bindable(&self, session: u64, client: NodeId) -> Result<(), Fail> {
        if session != 0 && self.sessions.get(&session).is_none_or(|s| s.owner != client) {
            return Err(Fail::Invalid(4));
        }
        Ok(())
    }

    /// Ends a session: deletes its keys at revision `rev` (if any) and
    /// forgets it. Returns how many keys went.
    fn end_session(&mut self, session: u64, rev: u64, expired: bool) -> u64 {
        let Some(s) = self.sessions.remove(&session) else { return 0 };
        self.sessions_changed += 1;
        let mut deleted = 0;
        for k in s.keys {
            deleted += self.delete_as(&Range::Key(k), rev, expired);
        }
        deleted
    }

    /// Applies a session expiry the leader committed at log index `index`.
    pub(crate) fn expire(&mut self, index: u64, session: u64) {
        self.applied = self.applied.max(index);
        let next = self.revision + 1;
        self.end_session(session, next, true);
        if self.kvs_changed_at(next) {
            self.revision = next;
        }
    }

    /// Open sessions.
    pub(crate) fn sessions(&self) -> impl Iterator<Item = (u64, &Session)> {
        self.sessions.iter().map(|(id, s)| (*id, s))
    }

    /// Changes whenever a session opens or ends.
    pub(crate) fn sessions_changed(&self) -> u64 {
        self.sessions_changed
    }

    fn execute(&mut self, index: u64, client: NodeId, epoch: u64, op: &Op) -> Outcome {
        if let Err(e) = check_op(op) {
            return Err(Fail::from(&e));
        }
        let next = self.revision + 1;
        let res = match op {
            Op::Get { range, limit } => Res::Leaf(self.get(range, *limit, MAX_READ_LEN)),
            Op::Put { key, value, session } => {
                self.bindable(*session, client)?;
                self.room_for(std::iter::once((key, value)))?;
                self.put(key, value, next, *session);
                Res::Leaf(Leaf::Put)
            }
            Op::SessionOpen { ttl_ms } => {
                if self.sessions.values().filter(|s| s.owner == client).count() >= MAX_SESSIONS_PER_PEER {
                    return Err(Fail::Invalid(6));
                }
                self.sessions
                    .insert(index, Session { owner: client, epoch, ttl_ms: *ttl_ms, keys: BTreeSet::new() });
                self.sessions_changed += 1;
                Res::Leaf(Leaf::SessionOpened { session: index })
            }
            Op::SessionClose { session } => {
                if self.sessions.get(session).is_none_or(|s| s.owner != client) {
                    return Err(Fail::Invalid(4));
                }
                Res::Leaf(Leaf::SessionClosed { deleted: self.end_session(*session, next, false) })
            }
            Op::Delete { range } => Res::Leaf(Leaf::Delete { deleted: self.delete(range, next) }),
            Op::Txn { compare, success, failure } => {
                let succeeded = compare.iter().all(|c| self.holds(c));
                let ops = if succeeded { success } else { failure };
                for o in ops {
                    if let TxnOp::Put { session, .. } = o {
                        self.bindable(*session, client)?;
                    }
                }
                self.room_for(ops.iter().filter_map(|o| match o {
                    TxnOp::Put { key, value, .. } => Some((key, value)),
                    _ => None,
                }))?;
                let mut responses = Vec::with_capacity(ops.len());
                let mut read_budget = MAX_TXN_READ_LEN;
                for o in ops {
                    responses.push(match o {
                        TxnOp::Get { range, limit } => {
                            let leaf = self.get(range, *limit, read_budget);
                            if let Leaf::Get { entries, .. } = &leaf {
                                let spent: usize = entries.iter().map(|(k, r)| rec_cost(k, r)).sum();
                                read_budget = read_budget.saturating_sub(spent);
                            }
                            leaf
                        }
                        TxnOp::Put { key, value, session } => {
                            self.put(key, value, next, *session);
                            Leaf::Put
                        }
                        TxnOp::Delete { range } => Leaf::Delete { deleted: self.delete(range, next) },
                    });
                }
                Res::Txn { succeeded, responses }
            }
        };
        // Every change of one request shares its revision.
        if self.kvs_changed_at(next) {
            self.revision = next;
        }
        Ok((self.revision, res))
    }

    /// Whether anything was written at `rev` (by the request being executed).
    fn kvs_changed_at(&self, rev: u64) -> bool {
        self.last_write == rev
    }

    /// Refuses a write whose puts could take the store over its bound
    /// (counting every put as growth, deletes in the same transaction not
    /// subtracted: an upper bound).
    fn room_for<'a>(&self, puts: impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)>) -> Result<(), Fail> {
        let growth: usize = puts
            .map(|(k, v)| match self.kvs.get(k) {
                Some(r) => v.len().saturating_sub(r.value.len()),
                None => k.len() + v.len() + KEY_OVERHEAD,
            })
            .sum();
        if self.used + growth > MAX_STORE_BYTES {
            return Err(Fail::StoreFull { used: self.used as u64, max: MAX_STORE_BYTES as u64 });
        }
        Ok(())
    }

    fn put(&mut self, key: &[u8], value: &[u8], rev: u64, session: u64) {
        self.last_write = rev;
        let (create, version, was) = match self.kvs.get_mut(key) {
            Some(r) => {
                self.used = self.used - r.value.len() + value.len();
                r.value = value.to_vec();
                r.modified = rev;
                r.version += 1;
                let was = std::mem::replace(&mut r.session, session);
                (r.create, r.version, was)
            }
            None => {
                let r = Rec { value: value.to_vec(), create: rev, modified: rev, version: 1, session };
                self.used += rec_cost(key, &r);
                self.kvs.insert(key.to_vec(), r);
                (rev, 1, 0)
            }
        };
        if was != session {
            if let Some(s) = self.sessions.get_mut(&was) {
                s.keys.remove(key);
            }
            if let Some(s) = self.sessions.get_mut(&session) {
                s.keys.insert(key.to_vec());
            }
        }
        self.record(Change {
            rev,
            key: key.to_vec(),
            value: Some(value.to_vec()),
            create,
            version,
            expired: false,
        });
    }

    /// Keeps a change for watches, forgetting the oldest whole revisions
    /// beyond the bounds.
    fn record(&mut self, c: Change) {
        self.history_bytes += c.cost();
        self.history.push_back(c);
        while self.history.len() > MAX_HISTORY_CHANGES || self.history_bytes > MAX_HISTORY_BYTES {
            let Some(old) = self.history.pop_front() else { break };
            self.history_bytes -= old.cost().min(self.history_bytes);
            self.first_kept = old.rev + 1;
            while self.history.front().is_some_and(|f| f.rev < self.first_kept) {
                if let Some(o) = self.history.pop_front() {
                    self.history_bytes -= o.cost().min(self.history_bytes);
                }
            }
        }
    }

    /// Changes to keys under `prefix` from revision `from` on, whole
    /// revisions only, up to about `max_bytes`, and the revision to ask
    /// from next time; `Err(oldest)` when changes at `from` were already
    /// forgotten.
    pub(crate) fn changes_since(
        &self,
        from: u64,
        prefix: &[u8],
        max_bytes: usize,
    ) -> Result<(Vec<Change>, u64), u64> {
        if from < self.first_kept && from <= self.revision {
            return Err(self.first_kept);
        }
        let start = self.history.partition_point(|c| c.rev < from);
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut last_rev = 0;
        for c in self.history.range(start..) {
            if bytes >= max_bytes && c.rev != last_rev {
                return Ok((out, c.rev));
            }
            last_rev = c.rev;
            if c.key.starts_with(prefix) {
                bytes += c.cost();
                out.push(c.clone());
            }
        }
        Ok((out, from.max(self.revision + 1)))
    }

    fn delete(&mut self, range: &Range, rev: u64) -> u64 {
        self.delete_as(range, rev, false)
    }

    /// Deletes `range` at `rev`; `expired` marks a session expiry's deletes.
    fn delete_as(&mut self, range: &Range, rev: u64, expired: bool) -> u64 {
        let keys: Vec<Vec<u8>> = match range {
            Range::Key(k) => self.kvs.contains_key(k).then(|| k.clone()).into_iter().collect(),
            Range::Prefix(p) => self
                .kvs
                .range(p.clone()..)
                .take_while(|(k, _)| k.starts_with(p))
                .map(|(k, _)| k.clone())
                .collect(),
        };
        for k in &keys {
            if let Some(r) = self.kvs.remove(k) {
                self.used -= rec_cost(k, &r).min(self.used);
                if let Some(s) = self.sessions.get_mut(&r.session) {
                    s.keys.remove(k);
                }
                self.record(Change { rev, key: k.clone(), value: None, create: 0, version: 0, expired });
            }
        }
        if !keys.is_empty() {
            self.last_write = rev;
        }
        keys.len() as u64
    }

    fn get(&self, range: &Range, limit: u32, budget: usize) -> Leaf {
        let cap = if limit == 0 { usize::MAX } else { limit as usize };
        let mut entries = Vec::new();
        let mut spent = 0usize;
        let mut more = false;
        let mut push = |k: &Vec<u8>, r: &Rec| -> bool {
            let cost = rec_cost(k, r);
            if entries.len() >= cap || (spent + cost > budget && !entries.is_empty()) {
                more = true;
                return false;
            }
            spent += cost;
            entries.push((k.clone(), r.clone()));
            true
        };
        match range {
            Range::Key(k) => {
                if let Some(r) = self.kvs.get(k) {
                    push(k, r);
                }
            }
            Range::Prefix(p) => {
                for (k, r) in self.kvs.range(p.clone()..).take_while(|(k, _)| k.starts_with(p)) {
                    if !push(k, r) {
                        break;
                    }
                }
            }
        }
        Leaf::Get { entries, more }
    }

    fn holds(&self, c: &Compare) -> bool {
        let rec = self.kvs.get(&c.key);
        let ord = match (&c.target, rec) {
            // etcd: a value comparison on a missing key is false.
            (Target::Value(_), None) => return false,
            (Target::Value(v), Some(r)) => r.value.as_slice().cmp(v.as_slice()),
            (Target::Version(v), r) => r.map_or(0, |r| r.version).cmp(v),
            (Target::CreateRevision(v), r) => r.map_or(0, |r| r.create).cmp(v),
            (Target::ModRevision(v), r) => r.map_or(0, |r| r.modified).cmp(v),
        };
        match c.op {
            WireCmp::Equal => ord.is_eq(),
            WireCmp::NotEqual => ord.is_ne(),
            WireCmp::Less => ord.is_lt(),
            WireCmp::Greater => ord.is_gt(),
        }
    }

    /// The whole state, encoded for a Raft snapshot.
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        let image = Image {
            revision: self.revision,
            applied: self.applied,
            kvs: self.kvs.iter().map(|(k, r)| (k.clone(), r.clone())).collect(),
            clients: self.clients.iter().map(|(id, c)| (*id, c.clone())).collect(),
            history: self.history.iter().cloned().collect(),
            first_kept: self.first_kept,
            sessions: self.sessions.iter().map(|(id, s)| (*id, s.clone())).collect(),
        };
        postcard::to_allocvec(&image).unwrap_or_default()
    }

    /// A store from [`Store::snapshot`]'s bytes; `None` if they do not decode.
    pub(crate) fn restore(bytes: &[u8]) -> Option<Self> {
        let image: Image = postcard::from_bytes(bytes).ok()?;
        let mut s = Store { revision: image.revision, applied: image.applied, ..Store::default() };
        for (k, r) in image.kvs {
            s.used += rec_cost(&k, &r);
            s.kvs.insert(k, r);
        }
        for (id, c) in image.clients {
            s.cached += c.answers.values().map(answer_cost).sum::<usize>();
            s.lru.insert((c.touched, id));
            s.clients.insert(id, c);
        }
        s.last_write = s.revision;
        s.first_kept = image.first_kept;
        s.sessions = image.sessions.into_iter().collect();
        for c in image.history {
            s.history_bytes += c.cost();
            s.history.push_back(c);
        }
        Some(s)
    }
}
