//! The peer's coordination recipes (`crate::coord`): locks, campaigns,
//! queue pops, registrations and the watches behind them, each a small
//! state machine driven by the answers of the store requests it makes, the
//! changes of the store watches it keeps, and its deadlines.
//!
//! Requests and watches a recipe makes are ordinary store requests and
//! watches of this peer (retried through any server, resumed without gaps
//! after a server loss, `peer/kv.rs`); their answers and changes come here
//! instead of reaching the user. A recipe waits only on the store: it keeps
//! no state the store does not also hold, so a failover or a lost server
//! changes nothing for it.

use super::Peer;
use crate::coord::{
    COORD_PREFIX, CoordError, CoordEvent, CoordRequest, CoordUpdate, Instance, InstanceFilter, InstanceInfo,
    LeaderInfo, QueueItem, Req,
};
use crate::event::Event;
use crate::identity::NodeId;
use crate::server::Action;
use crate::store::{
    KvAnswer, KvCompare, KvEntry, KvError, KvEvent, KvEventKind, KvOptions, KvRequest, KvResponse,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Coordination requests one peer runs at once (each may hold a store
/// watch, and a server serves at most 64 per peer).
pub(crate) const MAX_TASKS: usize = 48;

/// How long one step of a recipe may take before it is tried again
/// (recipes without a deadline retry for as long as they run).
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// What a lock key holds: who waits or holds.
#[derive(Serialize, Deserialize)]
struct LockRec {
    node: NodeId,
}

/// What a candidate key holds.
#[derive(Serialize, Deserialize)]
struct CandRec {
    node: NodeId,
    value: Vec<u8>,
    load: u32,
}

/// What a group's leader key holds: the winning candidate's key.
#[derive(Serialize, Deserialize)]
struct LeaderRec {
    cand: Vec<u8>,
    node: NodeId,
    value: Vec<u8>,
}

/// What a queue item's key holds.
#[derive(Serialize, Deserialize)]
struct ItemRec {
    priority: i32,
    payload: Vec<u8>,
    node: NodeId,
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Encoding into a Vec only fails on types serde cannot represent.
    postcard::to_allocvec(v).unwrap_or_default()
}

fn decode<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Option<T> {
    postcard::from_bytes(b).ok()
}

/// The key prefix of one named object: the name's length first, so that
/// no name's prefix is a prefix of another's ("a" and "a/b").
fn prefix(kind: &str, name: &str) -> Vec<u8> {
    format!("{COORD_PREFIX}{kind}/{}:{name}/", name.len()).into_bytes()
}

fn joined(prefix: &[u8], tail: &[u8]) -> Vec<u8> {
    [prefix, tail].concat()
}

/// The entries of the last read in an answer (a get, or a transaction
/// whose last operation is one).
fn listing(resp: &KvResponse) -> Vec<KvEntry> {
    match resp {
        KvResponse::Get { entries, .. } => entries.clone(),
        KvResponse::Txn { responses, .. } => responses.last().map(listing).unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn succeeded(resp: &KvResponse) -> bool {
    !matches!(resp, KvResponse::Txn { succeeded: false, .. })
}

/// A copy of every key under a prefix: a read at revision `rev`, then the
/// changes of a watch from `rev + 1`.
#[derive(Debug, Default)]
struct Mirror {
    prefix: Vec<u8>,
    entries: BTreeMap<Vec<u8>, KvEntry>,
    rev: u64,
    watch: Option<u64>,
    /// Whether the first read arrived.
    ready: bool,
    /// Bumped at every change (recipes compare it to see if anything moved).
    changes: u64,
}

impl Mirror {
    fn new(prefix: Vec<u8>) -> Self {
        Self { prefix, ..Self::default() }
    }

    fn load(&mut self, entries: Vec<KvEntry>, rev: u64) {
        self.entries = entries.into_iter().map(|e| (e.key.clone(), e)).collect();
        self.rev = rev;
        self.ready = true;
        self.changes += 1;
    }

    fn apply(&mut self, events: &[KvEvent]) {
        for e in events {
            match e.kind {
                KvEventKind::Put => {
                    self.entries.insert(e.entry.key.clone(), e.entry.clone());
                }
                _ => {
                    self.entries.remove(&e.entry.key);
                }
            }
            self.rev = self.rev.max(e.entry.mod_revision);
        }
        self.changes += 1;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LockPhase {
    /// The put of our key (and the read of the line) is in flight.
    Enqueue,
    /// Watching the key ahead of ours.
    Waiting,
    /// Reading the line again after the key ahead went.
    Relist,
    /// First in line after an involuntary release: granted at this instant.
    Delay(Instant),
    Held,
}

#[derive(Debug)]
struct Lock {
    prefix: Vec<u8>,
    key: Vec<u8>,
    session: u64,
    deadline: Option<Instant>,
    delay: Duration,
    phase: LockPhase,
    token: u64,
    /// The key ahead of ours went because its session expired.
    pred_expired: bool,
    watch: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CampPhase {
    Joining,
    Following,
    Claiming,
}

#[derive(Debug)]
struct Campaign {
    cand: Vec<u8>,
    leader_key: Vec<u8>,
    session: u64,
    value: Vec<u8>,
    load: u32,
    least_loaded: bool,
    mirror: Mirror,
    phase: CampPhase,
    my_create: u64,
    term: Option<u64>,
    /// The mirror's change count when the last claim left: a failed claim
    /// is tried again only once something moved since.
    claimed_at: u64,
    updating: bool,
    queued_update: Option<CoordUpdate>,
}

#[derive(Debug)]
enum Watcher {
    Leader {
        last: Option<Option<LeaderInfo>>,
    },
    Queue {
        last: Option<usize>,
    },
    Service {
        filter: InstanceFilter,
        watch: bool,
        last: Option<Vec<Instance>>,
    },
    /// `sent_at`: the mirror's change count when the last take left (a
    /// failed take is tried again only once the mirror moved); `taking`:
    /// the items of the take in flight.
    Pop {
        n: u32,
        deadline: Option<Instant>,
        in_flight: bool,
        sent_at: u64,
        taking: Vec<QueueItem>,
    },
}

#[derive(Debug)]
struct Watching {
    mirror: Mirror,
    what: Watcher,
    watch: bool,
}

#[derive(Debug)]
struct Registration {
    key: Vec<u8>,
    session: u64,
    info: InstanceInfo,
    created: u64,
    watch: Option<u64>,
    updating: bool,
    queued_update: Option<CoordUpdate>,
}

#[derive(Debug)]
enum Kind {
    Lock(Lock),
    Campaign(Box<Campaign>),
    Watching(Box<Watching>),
    Register(Box<Registration>),
    /// A push, remove, or one-shot leader read: one request, one answer.
    OneShot,
}

#[derive(Debug)]
struct Task {
    kind: Kind,
    /// Released by the user: the request in flight is the release (or,
    /// while an enqueue or registration is still in flight, the release
    /// goes out once it is answered so it cannot overtake it).
    releasing: bool,
    /// Its end was already reported (a timed-out lock still leaving the
    /// line): the release completes silently.
    silent: bool,
}

/// What an internal store request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Enqueue,
    Relist,
    Claim,
    Update,
    Release,
    /// A cleanup after the task ended (its answer is ignored).
    Cleanup,
    Push,
    Remove,
    LeaderRead,
    List,
    PopTxn,
    Register,
}

/// The peer's running coordination requests.
#[derive(Debug, Default)]
pub(crate) struct CoordClient {
    next_id: u64,
    tasks: BTreeMap<u64, Task>,
    /// Internal store request id → (task, step).
    reqs: BTreeMap<u64, (u64, Step)>,
    /// Internal watch id → task.
    watches: BTreeMap<u64, u64>,
}

impl CoordClient {
    /// Whether store request `seq` belongs to a recipe.
    pub(super) fn owns_request(&self, seq: u64) -> bool {
        self.reqs.contains_key(&seq)
    }

    /// Whether watch `id` belongs to a recipe.
    pub(super) fn owns_watch(&self, id: u64) -> bool {
        self.watches.contains_key(&id)
    }

    /// The earliest recipe deadline (lock waits and delays, pop waits).
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        // Only deadlines that act: a task being released, or a pop whose
        // take is in flight, waits for an answer instead.
        self.tasks
            .values()
            .filter(|t| !t.releasing)
            .filter_map(|t| match &t.kind {
                Kind::Lock(l) => match l.phase {
                    LockPhase::Delay(at) => Some(l.deadline.map_or(at, |d| d.min(at))),
                    LockPhase::Held => None,
                    _ => l.deadline,
                },
                Kind::Watching(w) => match w.what {
                    Watcher::Pop { deadline, in_flight: false, .. } => deadline,
                    _ => None,
                },
                _ => None,
            })
            .min()
    }
}

fn emit(actions: &mut std::collections::VecDeque<Action>, ev: CoordEvent) {
    actions.push_back(Action::Event(Event::Coord(ev)));
}

impl Peer {
    /// Starts a coordination request; returns its id.
    pub(crate) fn coord_start(&mut self, now: Instant, req: CoordRequest) -> Result<u64, CoordError> {
        req.check()?;
        if self.coord.tasks.len() >= MAX_TASKS {
            return Err(CoordError::TooMany(MAX_TASKS));
        }
        let id = self.coord.next_id;
        self.coord.next_id += 1;
        let me = self.me;
        let unique = |rng: &mut crate::rng::NodeRng, session: u64| {
            format!("{session:016x}{:016x}", rng.next_u64()).into_bytes()
        };
        let (kind, first): (Kind, Option<(Step, KvRequest)>) = match req.0 {
            Req::Lock { name, session, wait, delay } => {
                let prefix = prefix("lock", &name);
                let key = joined(&prefix, &unique(&mut self.rng, session));
                let put = KvRequest::put(key.clone(), encode(&LockRec { node: me })).with_session(session);
                let txn = KvRequest::txn([], [put, KvRequest::get_prefix(prefix.clone())], []);
                let lock = Lock {
                    prefix,
                    key,
                    session,
                    deadline: wait.map(|w| deadline(now, w)),
                    delay,
                    phase: LockPhase::Enqueue,
                    token: 0,
                    pred_expired: false,
                    watch: None,
                };
                (Kind::Lock(lock), Some((Step::Enqueue, txn)))
            }
            Req::Campaign { group, session, value, load, least_loaded } => {
                let prefix = prefix("elect", &group);
                let cand = joined(&prefix, &joined(b"c/", &unique(&mut self.rng, session)));
                let rec = encode(&CandRec { node: me, value: value.clone(), load });
                let put = KvRequest::put(cand.clone(), rec).with_session(session);
                let txn = KvRequest::txn([], [put, KvRequest::get_prefix(prefix.clone())], []);
                let c = Campaign {
                    cand,
                    leader_key: joined(&prefix, b"leader"),
                    session,
                    value,
                    load,
                    least_loaded,
                    mirror: Mirror::new(prefix),
                    phase: CampPhase::Joining,
                    my_create: 0,
                    term: None,
                    claimed_at: 0,
                    updating: false,
                    queued_update: None,
                };
                (Kind::Campaign(Box::new(c)), Some((Step::Enqueue, txn)))
            }
            Req::Leader { group, watch: false } => {
                let key = joined(&prefix("elect", &group), b"leader");
                (Kind::OneShot, Some((Step::LeaderRead, KvRequest::get(key))))
            }
            Req::Leader { group, watch: true } => {
                let w = Watching {
                    mirror: Mirror::new(prefix("elect", &group)),
                    what: Watcher::Leader { last: None },
                    watch: true,
                };
                (Kind::Watching(Box::new(w)), None)
            }
            Req::Push { queue, item, priority, payload, session } => {
                let key = joined(&prefix("queue", &queue), item.as_bytes());
                let rec = encode(&ItemRec { priority, payload, node: me });
                let put = KvRequest::put(key.clone(), rec).with_session(session);
                (Kind::OneShot, Some((Step::Push, KvRequest::txn([KvCompare::missing(key)], [put], []))))
            }
            Req::Remove { queue, item } => {
                let key = joined(&prefix("queue", &queue), item.as_bytes());
                (Kind::OneShot, Some((Step::Remove, KvRequest::delete(key))))
            }
            Req::Pop { queue, n, wait } => {
                let deadline = wait.map(|w| deadline(now, w));
                let w = Watching {
                    mirror: Mirror::new(prefix("queue", &queue)),
                    what: Watcher::Pop { n, deadline, in_flight: false, sent_at: 0, taking: Vec::new() },
                    watch: wait.is_some(),
                };
                (Kind::Watching(Box::new(w)), None)
            }
            Req::WatchQueue { queue } => {
                let w = Watching {
                    mirror: Mirror::new(prefix("queue", &queue)),
                    what: Watcher::Queue { last: None },
                    watch: true,
                };
                (Kind::Watching(Box::new(w)), None)
            }
            Req::Register { service, instance, mut info, session } => {
                info.node = Some(me);
                let key = joined(&prefix("reg", &service), instance.as_bytes());
                let put = KvRequest::put(key.clone(), encode(&info)).with_session(session);
                let txn = KvRequest::txn([], [put, KvRequest::get(key.clone())], []);
                let r = Registration {
                    key,
                    session,
                    info,
                    created: 0,
                    watch: None,
                    updating: false,
                    queued_update: None,
                };
                (Kind::Register(Box::new(r)), Some((Step::Register, txn)))
            }
            Req::Query { service, filter, watch } => {
                let w = Watching {
                    mirror: Mirror::new(prefix("reg", &service)),
                    what: Watcher::Service { filter, watch, last: None },
                    watch,
                };
                (Kind::Watching(Box::new(w)), None)
            }
        };
        let task = Task { kind, releasing: false, silent: false };
        let first = match (&task.kind, first) {
            (_, Some(f)) => f,
            (Kind::Watching(w), None) => (Step::List, KvRequest::get_prefix(w.mirror.prefix.clone())),
            _ => return Err(CoordError::NoSuchRequest),
        };
        self.coord_kv(now, id, first.0, first.1, STEP_TIMEOUT).map_err(CoordError::Kv)?;
        self.coord.tasks.insert(id, task);
        Ok(id)
    }

    /// Sends an internal store request for task `id`.
    fn coord_kv(
        &mut self,
        now: Instant,
        id: u64,
        step: Step,
        req: KvRequest,
        timeout: Duration,
    ) -> Result<(), KvError> {
        let seq = self.kv_request(now, req.0, KvOptions::default().with_timeout(timeout))?;
        self.coord.reqs.insert(seq, (id, step));
        Ok(())
    }

    /// Sends step `step` of task `id` (taken out of the map) and hands the
    /// task back; if the request cannot even be sent (too many in flight),
    /// the task ends with that error instead.
    fn coord_send(&mut self, now: Instant, id: u64, task: Task, step: Step, req: KvRequest) -> Option<Task> {
        match self.coord_kv(now, id, step, req, STEP_TIMEOUT) {
            Ok(()) => Some(task),
            Err(e) => {
                self.coord_end(now, id, task, CoordEvent::Ended { id, error: e.into() });
                None
            }
        }
    }

    /// Starts an internal watch for task `id`.
    fn coord_watch(&mut self, id: u64, prefix: Vec<u8>, from: u64) -> Option<u64> {
        let w = self.watch(prefix, from).ok()?;
        self.coord.watches.insert(w, id);
        Some(w)
    }

    /// A recipe that could not start the watch it needs (this peer's store
    /// watches, its own and the user's, are all in use) ends: without the
    /// watch it would wait forever.
    fn coord_no_watch(&mut self, now: Instant, id: u64, task: Task) -> Option<Task> {
        let error = CoordError::Kv(KvError::TooManyInFlight(crate::server::MAX_WATCHES));
        self.coord_end(now, id, task, CoordEvent::Ended { id, error });
        None
    }

    fn coord_unwatch(&mut self, w: Option<u64>) {
        if let Some(w) = w {
            self.coord.watches.remove(&w);
            self.unwatch(w);
        }
    }

    /// Ends task `id` (already taken out of the map): stops its watches,
    /// deletes what it still holds in the store, reports `ev`.
    fn coord_end(&mut self, now: Instant, id: u64, task: Task, ev: CoordEvent) {
        let task_silent = task.silent;
        // What it may still hold: only its own keys (a leader key only
        // while it is still the one this campaign created).
        let (watch, cleanup): (Option<u64>, Vec<KvRequest>) = match task.kind {
            Kind::Lock(l) => (l.watch, vec![KvRequest::delete(l.key)]),
            Kind::Campaign(c) => {
                let mut reqs = vec![KvRequest::delete(c.cand.clone())];
                if let Some(term) = c.term {
                    let mine =
                        KvCompare::create_revision(c.leader_key.clone(), crate::CompareOp::Equal, term);
                    reqs.push(KvRequest::txn([mine], [KvRequest::delete(c.leader_key.clone())], []));
                }
                (c.mirror.watch, reqs)
            }
            Kind::Watching(w) => (w.mirror.watch, Vec::new()),
            Kind::Register(r) => (r.watch, Vec::new()),
            Kind::OneShot => (None, Vec::new()),
        };
        self.coord_unwatch(watch);
        if !matches!(ev, CoordEvent::Released { .. }) {
            for req in cleanup {
                let _ = self.coord_kv(now, id, Step::Cleanup, req, STEP_TIMEOUT);
            }
        }
        if !task_silent {
            emit(&mut self.actions, ev);
        }
    }

    /// Changes a running campaign (proclaim) or registration (load, tags, data).
    pub(crate) fn coord_update(&mut self, now: Instant, id: u64, up: CoordUpdate) -> Result<(), CoordError> {
        let Some(mut task) = self.coord.tasks.remove(&id) else { return Err(CoordError::NoSuchRequest) };
        let out = match &mut task.kind {
            _ if task.releasing => Err(CoordError::NoSuchRequest),
            Kind::Campaign(c) => {
                if c.updating || c.phase == CampPhase::Joining {
                    merge(&mut c.queued_update, up);
                } else {
                    self.campaign_update(now, id, c, up);
                }
                Ok(())
            }
            Kind::Register(r) => {
                if r.updating || r.created == 0 {
                    merge(&mut r.queued_update, up);
                } else {
                    self.register_update(now, id, r, up);
                }
                Ok(())
            }
            _ => Err(CoordError::NoSuchRequest),
        };
        self.coord.tasks.insert(id, task);
        out
    }

    fn campaign_update(&mut self, now: Instant, id: u64, c: &mut Campaign, up: CoordUpdate) {
        if let Some(v) = up.value {
            c.value = v;
        }
        if let Some(l) = up.load {
            c.load = l;
        }
        let me = self.me;
        let rec = encode(&CandRec { node: me, value: c.value.clone(), load: c.load });
        let mut cmp = vec![KvCompare::create_revision(c.cand.clone(), crate::CompareOp::Equal, c.my_create)];
        let mut ops = vec![KvRequest::put(c.cand.clone(), rec).with_session(c.session)];
        if let Some(term) = c.term {
            cmp.push(KvCompare::create_revision(c.leader_key.clone(), crate::CompareOp::Equal, term));
            let lrec = LeaderRec { cand: c.cand.clone(), node: me, value: c.value.clone() };
            ops.push(KvRequest::put(c.leader_key.clone(), encode(&lrec)).with_session(c.session));
        }
        c.updating = true;
        if let Err(e) = self.coord_kv(now, id, Step::Update, KvRequest::txn(cmp, ops, []), STEP_TIMEOUT) {
            c.updating = false;
            emit(&mut self.actions, CoordEvent::Updated { id, result: Err(e.into()) });
        }
    }

    fn register_update(&mut self, now: Instant, id: u64, r: &mut Registration, up: CoordUpdate) {
        if let Some(v) = up.value {
            r.info.data = v;
        }
        if let Some(l) = up.load {
            r.info.load = l;
        }
        if let Some(t) = up.tags {
            r.info.tags = t;
        }
        let cmp = KvCompare::create_revision(r.key.clone(), crate::CompareOp::Equal, r.created);
        let put = KvRequest::put(r.key.clone(), encode(&r.info)).with_session(r.session);
        r.updating = true;
        if let Err(e) = self.coord_kv(now, id, Step::Update, KvRequest::txn([cmp], [put], []), STEP_TIMEOUT) {
            r.updating = false;
            emit(&mut self.actions, CoordEvent::Updated { id, result: Err(e.into()) });
        }
    }

    /// Releases a running request: unlock, resign, deregister, stop
    /// watching or waiting. False if `id` is not running.
    pub(crate) fn coord_release(&mut self, now: Instant, id: u64) -> bool {
        let Some(mut task) = self.coord.tasks.remove(&id) else { return false };
        if task.releasing {
            self.coord.tasks.insert(id, task);
            return true;
        }
        task.releasing = true;
        let in_flight = self
            .coord
            .reqs
            .values()
            .any(|(t, s)| *t == id && matches!(s, Step::Enqueue | Step::Register | Step::PopTxn));
        if in_flight {
            // The release goes out once the write it must not overtake is answered.
            self.coord.tasks.insert(id, task);
            return true;
        }
        self.release_now(now, id, task);
        true
    }

    /// Sends the release of a task (or ends it at once if it holds nothing).
    fn release_now(&mut self, now: Instant, id: u64, mut task: Task) {
        let req = match &mut task.kind {
            Kind::Lock(l) => {
                self.coord_unwatch(l.watch.take());
                Some(KvRequest::delete(l.key.clone()))
            }
            Kind::Campaign(c) => {
                self.coord_unwatch(c.mirror.watch.take());
                Some(match c.term {
                    Some(term) => KvRequest::txn(
                        [KvCompare::create_revision(c.leader_key.clone(), crate::CompareOp::Equal, term)],
                        [KvRequest::delete(c.leader_key.clone()), KvRequest::delete(c.cand.clone())],
                        [KvRequest::delete(c.cand.clone())],
                    ),
                    None => KvRequest::delete(c.cand.clone()),
                })
            }
            Kind::Register(r) => {
                self.coord_unwatch(r.watch.take());
                Some(KvRequest::txn(
                    [KvCompare::create_revision(r.key.clone(), crate::CompareOp::Equal, r.created)],
                    [KvRequest::delete(r.key.clone())],
                    [],
                ))
            }
            Kind::Watching(_) | Kind::OneShot => None,
        };
        match req {
            Some(req) => {
                if let Some(task) = self.coord_send(now, id, task, Step::Release, req) {
                    self.coord.tasks.insert(id, task);
                }
            }
            None => self.coord_end(now, id, task, CoordEvent::Released { id }),
        }
    }

    /// An internal store request was answered.
    pub(super) fn coord_on_answer(&mut self, now: Instant, seq: u64, result: Result<KvAnswer, KvError>) {
        let Some((id, step)) = self.coord.reqs.remove(&seq) else { return };
        if step == Step::Cleanup {
            return;
        }
        let Some(task) = self.coord.tasks.remove(&id) else { return };
        let ans = match result {
            Ok(a) => a,
            Err(KvError::Unavailable) if retryable(&task, step, now) => {
                // No answer in time: do the step again (every step is
                // idempotent: the same key, or a compare that fails the
                // second time).
                self.coord.tasks.insert(id, task);
                self.coord_retry(now, id, step);
                return;
            }
            Err(e) => {
                if step == Step::Update {
                    emit(&mut self.actions, CoordEvent::Updated { id, result: Err(e.into()) });
                    self.coord.tasks.insert(id, task);
                    return;
                }
                self.coord_end(now, id, task, CoordEvent::Ended { id, error: e.into() });
                return;
            }
        };
        if step == Step::Release {
            self.coord_end(now, id, task, CoordEvent::Released { id });
            return;
        }
        match step {
            Step::Push | Step::Remove | Step::LeaderRead => {
                let ev = match step {
                    Step::Push => CoordEvent::Pushed { id, added: succeeded(&ans.response) },
                    Step::Remove => CoordEvent::Removed {
                        id,
                        removed: matches!(ans.response, KvResponse::Delete { deleted } if deleted > 0),
                    },
                    _ => {
                        CoordEvent::Leader { id, leader: listing(&ans.response).first().and_then(leader_of) }
                    }
                };
                emit(&mut self.actions, ev);
                return;
            }
            _ => {}
        }
        let keep = match &task.kind {
            Kind::Lock(_) => self.lock_answer(now, id, task, step, ans),
            Kind::Campaign(_) => self.campaign_answer(now, id, task, step, ans),
            Kind::Watching(_) => self.watching_answer(now, id, task, step, ans),
            Kind::Register(_) => self.register_answer(now, id, task, step, ans),
            Kind::OneShot => None,
        };
        if let Some(task) = keep {
            self.coord_after(now, id, task);
        }
    }

    /// Puts a task back, sending a release that was waiting for an answer.
    fn coord_after(&mut self, now: Instant, id: u64, task: Task) {
        let waiting = self
            .coord
            .reqs
            .values()
            .any(|(t, s)| *t == id && matches!(s, Step::Enqueue | Step::Register | Step::PopTxn));
        if task.releasing
            && !waiting
            && !self.coord.reqs.values().any(|(t, s)| *t == id && *s == Step::Release)
        {
            self.release_now(now, id, task);
        } else {
            self.coord.tasks.insert(id, task);
        }
    }

    /// Sends step `step` of task `id` again after it went unanswered.
    fn coord_retry(&mut self, now: Instant, id: u64, step: Step) {
        let Some(mut task) = self.coord.tasks.remove(&id) else { return };
        let req = match (&mut task.kind, step) {
            (Kind::Lock(l), Step::Enqueue) => {
                let put =
                    KvRequest::put(l.key.clone(), encode(&LockRec { node: self.me })).with_session(l.session);
                Some(KvRequest::txn([], [put, KvRequest::get_prefix(l.prefix.clone())], []))
            }
            (Kind::Lock(l), Step::Relist) => Some(KvRequest::get_prefix(l.prefix.clone())),
            (Kind::Campaign(c), Step::Enqueue) => {
                let rec = encode(&CandRec { node: self.me, value: c.value.clone(), load: c.load });
                let put = KvRequest::put(c.cand.clone(), rec).with_session(c.session);
                Some(KvRequest::txn([], [put, KvRequest::get_prefix(c.mirror.prefix.clone())], []))
            }
            (Kind::Campaign(c), Step::Claim) => {
                c.phase = CampPhase::Following;
                c.claimed_at = 0;
                None
            }
            (Kind::Watching(w), Step::List) => Some(KvRequest::get_prefix(w.mirror.prefix.clone())),
            (Kind::Watching(w), Step::PopTxn) => {
                if let Watcher::Pop { in_flight, sent_at, .. } = &mut w.what {
                    *in_flight = false;
                    *sent_at = 0;
                }
                None
            }
            (Kind::Register(r), Step::Register) => {
                let put = KvRequest::put(r.key.clone(), encode(&r.info)).with_session(r.session);
                Some(KvRequest::txn([], [put, KvRequest::get(r.key.clone())], []))
            }
            (_, Step::Release) => {
                task.releasing = false;
                self.coord.tasks.insert(id, task);
                self.coord_release(now, id);
                return;
            }
            _ => None,
        };
        if let Some(req) = req
            && let Err(e) = self.coord_kv(now, id, step, req, STEP_TIMEOUT)
        {
            self.coord_end(now, id, task, CoordEvent::Ended { id, error: e.into() });
            return;
        }
        let task = match &task.kind {
            Kind::Campaign(_) => self.campaign_evaluate(now, id, task),
            Kind::Watching(_) => self.watching_evaluate(now, id, task),
            _ => Some(task),
        };
        if let Some(task) = task {
            self.coord.tasks.insert(id, task);
        }
    }

    // ----- locks ----------------------------------------------------------

    fn lock_answer(&mut self, now: Instant, id: u64, task: Task, step: Step, ans: KvAnswer) -> Option<Task> {
        if task.releasing {
            return Some(task); // the release follows (coord_after)
        }
        match step {
            Step::Enqueue | Step::Relist => {
                self.lock_evaluate(now, id, task, &listing(&ans.response), ans.revision)
            }
            _ => Some(task),
        }
    }

    /// Decides from a read of the line whether the lock is ours, or which
    /// key to wait behind.
    fn lock_evaluate(
        &mut self,
        now: Instant,
        id: u64,
        mut task: Task,
        line: &[KvEntry],
        rev: u64,
    ) -> Option<Task> {
        let Kind::Lock(l) = &mut task.kind else { return Some(task) };
        let Some(mine) = line.iter().find(|e| e.key == l.key) else {
            self.coord_end(now, id, task, CoordEvent::Ended { id, error: CoordError::SessionEnded });
            return None;
        };
        l.token = mine.create_revision;
        let ahead = line
            .iter()
            .filter(|e| e.create_revision < l.token)
            .max_by_key(|e| e.create_revision)
            .map(|e| e.key.clone());
        // Waiting watches the key ahead; holding (or the delay before it)
        // watches our own, to notice the session ending under us.
        let (phase, watched) = match ahead {
            Some(key) => (LockPhase::Waiting, key),
            None if l.pred_expired && !l.delay.is_zero() => (LockPhase::Delay(now + l.delay), l.key.clone()),
            None => (LockPhase::Held, l.key.clone()),
        };
        l.phase = phase;
        l.watch = self.coord_watch(id, watched, rev + 1);
        if l.watch.is_none() {
            return self.coord_no_watch(now, id, task);
        }
        if phase == LockPhase::Held {
            emit(&mut self.actions, CoordEvent::LockAcquired { id, token: l.token });
        }
        Some(task)
    }

    // ----- campaigns ------------------------------------------------------

    fn campaign_answer(
        &mut self,
        now: Instant,
        id: u64,
        mut task: Task,
        step: Step,
        ans: KvAnswer,
    ) -> Option<Task> {
        let Kind::Campaign(c) = &mut task.kind else { return Some(task) };
        match step {
            Step::Enqueue => {
                if task.releasing {
                    return Some(task);
                }
                c.mirror.load(listing(&ans.response), ans.revision);
                c.mirror.watch = self.coord_watch(id, c.mirror.prefix.clone(), ans.revision + 1);
                if c.mirror.watch.is_none() {
                    return self.coord_no_watch(now, id, task);
                }
                c.phase = CampPhase::Following;
                if let Some(up) = c.queued_update.take() {
                    self.campaign_update(now, id, c, up);
                }
            }
            // Elected is told from the mirror, in revision order with what
            // else happened to the group (a claim's answer can come late,
            // after a retry, when the term is already over).
            Step::Claim => c.phase = CampPhase::Following,
            Step::Update => {
                c.updating = false;
                let result = if succeeded(&ans.response) { Ok(()) } else { Err(CoordError::SessionEnded) };
                emit(&mut self.actions, CoordEvent::Updated { id, result });
                if let Some(up) = c.queued_update.take() {
                    self.campaign_update(now, id, c, up);
                }
                return Some(task);
            }
            _ => return Some(task),
        }
        self.campaign_evaluate(now, id, task)
    }

    /// Decides from the mirror of the group whether we lead, lost the
    /// lead, or should claim it.
    fn campaign_evaluate(&mut self, now: Instant, id: u64, mut task: Task) -> Option<Task> {
        if task.releasing {
            return Some(task);
        }
        let me = self.me;
        let Kind::Campaign(c) = &mut task.kind else { return Some(task) };
        if c.phase == CampPhase::Joining || !c.mirror.ready {
            return Some(task);
        }
        let Some(mine) = c.mirror.entries.get(&c.cand) else {
            self.coord_end(now, id, task, CoordEvent::Ended { id, error: CoordError::SessionEnded });
            return None;
        };
        c.my_create = mine.create_revision;
        let leader = c.mirror.entries.get(&c.leader_key);
        let leads = leader.and_then(|e| decode::<LeaderRec>(&e.value).map(|r| (r, e.create_revision)));
        match (leads, c.term) {
            (Some((r, term)), _) if r.cand == c.cand => {
                if c.term != Some(term) {
                    c.term = Some(term);
                    emit(&mut self.actions, CoordEvent::Elected { id, term });
                }
            }
            // Someone else leads, or nobody, while we thought we did: the
            // leadership is gone (our leader key was deleted) — once the
            // mirror has caught up with our claim (its answer can come
            // before the watch reports it).
            (_, Some(term)) if c.mirror.rev < term => {}
            (_, Some(_)) if c.phase != CampPhase::Claiming => {
                c.term = None;
                self.coord_end(now, id, task, CoordEvent::Ended { id, error: CoordError::LeadershipLost });
                return None;
            }
            (Some(_), _) => {}
            (None, _) => {
                let winner = c
                    .mirror
                    .entries
                    .iter()
                    .filter(|(k, _)| k.starts_with(&joined(&c.mirror.prefix, b"c/")))
                    .filter_map(|(k, e)| decode::<CandRec>(&e.value).map(|r| (k, e.create_revision, r.load)))
                    .min_by_key(
                        |(_, create, load)| if c.least_loaded { (*load, *create) } else { (0, *create) },
                    )
                    .map(|(k, _, _)| k.clone());
                let moved = c.mirror.changes != c.claimed_at;
                if winner.as_ref() == Some(&c.cand) && c.phase == CampPhase::Following && moved {
                    c.phase = CampPhase::Claiming;
                    c.claimed_at = c.mirror.changes;
                    let rec = LeaderRec { cand: c.cand.clone(), node: me, value: c.value.clone() };
                    let claim = KvRequest::txn(
                        [
                            KvCompare::missing(c.leader_key.clone()),
                            KvCompare::create_revision(c.cand.clone(), crate::CompareOp::Equal, c.my_create),
                        ],
                        [KvRequest::put(c.leader_key.clone(), encode(&rec)).with_session(c.session)],
                        [],
                    );
                    return self.coord_send(now, id, task, Step::Claim, claim);
                }
            }
        }
        Some(task)
    }

    // ----- mirrors: leader watches, queue watches and pops, queries --------

    fn watching_answer(
        &mut self,
        now: Instant,
        id: u64,
        mut task: Task,
        step: Step,
        ans: KvAnswer,
    ) -> Option<Task> {
        let Kind::Watching(w) = &mut task.kind else { return Some(task) };
        match step {
            Step::List => {
                w.mirror.load(listing(&ans.response), ans.revision);
                if w.watch {
                    w.mirror.watch = self.coord_watch(id, w.mirror.prefix.clone(), ans.revision + 1);
                    if w.mirror.watch.is_none() {
                        return self.coord_no_watch(now, id, task);
                    }
                }
            }
            Step::PopTxn => {
                let Watcher::Pop { in_flight, sent_at, taking, deadline, .. } = &mut w.what else {
                    return Some(task);
                };
                *in_flight = false;
                if succeeded(&ans.response) {
                    let items = std::mem::take(taking);
                    self.coord_end(now, id, task, CoordEvent::Popped { id, items });
                    return None;
                }
                if deadline.is_some_and(|d| d <= now) {
                    self.coord_end(now, id, task, CoordEvent::Ended { id, error: CoordError::Timeout });
                    return None;
                }
                if !w.watch {
                    // No watch to bring the change that beat us: read again.
                    *sent_at = 0;
                    w.mirror.ready = false;
                    let list = KvRequest::get_prefix(w.mirror.prefix.clone());
                    return self.coord_send(now, id, task, Step::List, list);
                }
            }
            _ => return Some(task),
        }
        self.watching_evaluate(now, id, task)
    }

    /// Reports what a mirror shows, or pops from it.
    fn watching_evaluate(&mut self, now: Instant, id: u64, mut task: Task) -> Option<Task> {
        if task.releasing {
            return Some(task);
        }
        let Kind::Watching(w) = &mut task.kind else { return Some(task) };
        if !w.mirror.ready {
            return Some(task);
        }
        let ev = match &mut w.what {
            Watcher::Leader { last } => {
                let leader =
                    w.mirror.entries.values().find(|e| e.key.ends_with(b"/leader")).and_then(leader_of);
                if last.as_ref() == Some(&leader) {
                    return Some(task);
                }
                *last = Some(leader.clone());
                CoordEvent::Leader { id, leader }
            }
            Watcher::Queue { last } => {
                let len = w.mirror.entries.len();
                if *last == Some(len) {
                    return Some(task);
                }
                *last = Some(len);
                CoordEvent::QueueLength { id, len }
            }
            Watcher::Service { filter, watch, last } => {
                let mut instances: Vec<Instance> = w
                    .mirror
                    .entries
                    .values()
                    .filter_map(|e| {
                        let info: InstanceInfo = decode(&e.value)?;
                        let name = String::from_utf8(e.key.get(w.mirror.prefix.len()..)?.to_vec()).ok()?;
                        filter.matches(&info).then_some(Instance {
                            instance: name,
                            info,
                            registered: e.create_revision,
                        })
                    })
                    .collect();
                instances
                    .sort_by(|a, b| a.info.load.cmp(&b.info.load).then_with(|| a.instance.cmp(&b.instance)));
                if last.as_ref() == Some(&instances) {
                    return Some(task);
                }
                *last = Some(instances.clone());
                let ev = CoordEvent::Instances { id, instances };
                if !*watch {
                    self.coord_end(now, id, task, ev);
                    return None;
                }
                ev
            }
            Watcher::Pop { n, deadline, in_flight, sent_at, taking } => {
                if *in_flight || *sent_at == w.mirror.changes {
                    return Some(task);
                }
                let mut items: Vec<(QueueItem, KvEntry)> = w
                    .mirror
                    .entries
                    .values()
                    .filter_map(|e| queue_item(&w.mirror.prefix, e).map(|i| (i, e.clone())))
                    .collect();
                if items.len() < *n as usize {
                    if deadline.is_none() {
                        let len = items.len();
                        self.coord_end(
                            now,
                            id,
                            task,
                            CoordEvent::Ended { id, error: CoordError::NotEnough { len } },
                        );
                        return None;
                    }
                    return Some(task);
                }
                items.sort_by(|a, b| queue_order(&a.0, &b.0));
                items.truncate(*n as usize);
                // All or none: each item must still be the incarnation we
                // read (same create revision) for the deletes to run.
                let cmp: Vec<KvCompare> = items
                    .iter()
                    .map(|(_, e)| {
                        KvCompare::create_revision(e.key.clone(), crate::CompareOp::Equal, e.create_revision)
                    })
                    .collect();
                let ops: Vec<KvRequest> =
                    items.iter().map(|(_, e)| KvRequest::delete(e.key.clone())).collect();
                *in_flight = true;
                *sent_at = w.mirror.changes;
                *taking = items.into_iter().map(|(i, _)| i).collect();
                return self.coord_send(now, id, task, Step::PopTxn, KvRequest::txn(cmp, ops, []));
            }
        };
        emit(&mut self.actions, ev);
        Some(task)
    }

    // ----- registrations --------------------------------------------------

    fn register_answer(
        &mut self,
        now: Instant,
        id: u64,
        mut task: Task,
        step: Step,
        ans: KvAnswer,
    ) -> Option<Task> {
        let releasing = task.releasing;
        let Kind::Register(r) = &mut task.kind else { return Some(task) };
        match step {
            Step::Register => {
                let Some(e) = listing(&ans.response).into_iter().next() else {
                    self.coord_end(now, id, task, CoordEvent::Ended { id, error: CoordError::SessionEnded });
                    return None;
                };
                r.created = e.create_revision;
                if releasing {
                    return Some(task);
                }
                r.watch = self.coord_watch(id, r.key.clone(), ans.revision + 1);
                if r.watch.is_none() {
                    return self.coord_no_watch(now, id, task);
                }
                emit(&mut self.actions, CoordEvent::Registered { id });
                if let Some(up) = r.queued_update.take() {
                    self.register_update(now, id, r, up);
                }
            }
            Step::Update => {
                r.updating = false;
                if !succeeded(&ans.response) {
                    emit(
                        &mut self.actions,
                        CoordEvent::Updated { id, result: Err(CoordError::SessionEnded) },
                    );
                    self.coord_end(now, id, task, CoordEvent::Ended { id, error: CoordError::SessionEnded });
                    return None;
                }
                emit(&mut self.actions, CoordEvent::Updated { id, result: Ok(()) });
                if let Some(up) = r.queued_update.take() {
                    self.register_update(now, id, r, up);
                }
            }
            _ => {}
        }
        Some(task)
    }

    // ----- watch changes and deadlines -------------------------------------

    /// Changes for an internal watch.
    pub(super) fn coord_on_watch(&mut self, now: Instant, watch: u64, events: Vec<KvEvent>) {
        let Some(&id) = self.coord.watches.get(&watch) else { return };
        let Some(mut task) = self.coord.tasks.remove(&id) else { return };
        match &mut task.kind {
            Kind::Lock(l) if l.watch == Some(watch) => {
                let gone = events.iter().find(|e| e.kind != KvEventKind::Put).map(|e| e.kind);
                let Some(kind) = gone else {
                    self.coord.tasks.insert(id, task);
                    return;
                };
                match l.phase {
                    LockPhase::Waiting => {
                        l.pred_expired = kind == KvEventKind::Expired;
                        self.coord_unwatch(l.watch.take());
                        l.phase = LockPhase::Relist;
                        let list = KvRequest::get_prefix(l.prefix.clone());
                        if let Some(task) = self.coord_send(now, id, task, Step::Relist, list) {
                            self.coord.tasks.insert(id, task);
                        }
                        return;
                    }
                    // Our own key went: the session ended under us.
                    LockPhase::Held | LockPhase::Delay(_) => {
                        self.coord_end(
                            now,
                            id,
                            task,
                            CoordEvent::Ended { id, error: CoordError::SessionEnded },
                        );
                        return;
                    }
                    _ => {}
                }
                self.coord.tasks.insert(id, task);
            }
            Kind::Register(r) if r.watch == Some(watch) => {
                if events.iter().any(|e| e.kind != KvEventKind::Put) {
                    self.coord_end(now, id, task, CoordEvent::Ended { id, error: CoordError::SessionEnded });
                    return;
                }
                // Another registration of the same instance id took it over.
                if let Some(e) = events.iter().rev().find(|e| e.kind == KvEventKind::Put) {
                    r.created = e.entry.create_revision;
                }
                self.coord.tasks.insert(id, task);
            }
            Kind::Campaign(c) if c.mirror.watch == Some(watch) => {
                c.mirror.apply(&events);
                if let Some(t) = self.campaign_evaluate(now, id, task) {
                    self.coord.tasks.insert(id, t);
                }
            }
            Kind::Watching(w) if w.mirror.watch == Some(watch) => {
                w.mirror.apply(&events);
                if let Some(t) = self.watching_evaluate(now, id, task) {
                    self.coord.tasks.insert(id, t);
                }
            }
            _ => {
                self.coord.tasks.insert(id, task);
            }
        }
    }

    /// An internal watch ended (it fell behind what the store keeps):
    /// read again and watch from there.
    pub(super) fn coord_on_watch_end(&mut self, now: Instant, watch: u64, error: KvError) {
        let Some(id) = self.coord.watches.remove(&watch) else { return };
        let Some(mut task) = self.coord.tasks.remove(&id) else { return };
        let relist = match &mut task.kind {
            Kind::Campaign(c) => {
                c.mirror.watch = None;
                c.phase = CampPhase::Joining;
                let rec = encode(&CandRec { node: self.me, value: c.value.clone(), load: c.load });
                let put = KvRequest::put(c.cand.clone(), rec).with_session(c.session);
                Some((
                    Step::Enqueue,
                    KvRequest::txn([], [put, KvRequest::get_prefix(c.mirror.prefix.clone())], []),
                ))
            }
            Kind::Watching(w) => {
                w.mirror.watch = None;
                w.mirror.ready = false;
                Some((Step::List, KvRequest::get_prefix(w.mirror.prefix.clone())))
            }
            Kind::Lock(l) if l.phase == LockPhase::Waiting => {
                l.watch = None;
                l.phase = LockPhase::Relist;
                Some((Step::Relist, KvRequest::get_prefix(l.prefix.clone())))
            }
            _ => None,
        };
        match relist {
            Some((step, req)) => {
                if let Some(task) = self.coord_send(now, id, task, step, req) {
                    self.coord.tasks.insert(id, task);
                }
            }
            None => self.coord_end(now, id, task, CoordEvent::Ended { id, error: error.into() }),
        }
    }

    /// Lock deadlines and delays, pop deadlines.
    pub(super) fn coord_timeout(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .coord
            .tasks
            .iter()
            .filter(|(_, t)| match &t.kind {
                Kind::Lock(l) => match l.phase {
                    LockPhase::Delay(at) => at <= now || l.deadline.is_some_and(|d| d <= now),
                    LockPhase::Held => false,
                    _ => l.deadline.is_some_and(|d| d <= now),
                },
                Kind::Watching(w) => {
                    matches!(w.what, Watcher::Pop { deadline: Some(d), in_flight: false, .. } if d <= now)
                }
                _ => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(mut task) = self.coord.tasks.remove(&id) else { continue };
            if task.releasing {
                self.coord.tasks.insert(id, task);
                continue;
            }
            if let Kind::Lock(l) = &mut task.kind
                && let LockPhase::Delay(at) = l.phase
                && at <= now
            {
                l.phase = LockPhase::Held;
                emit(&mut self.actions, CoordEvent::LockAcquired { id, token: l.token });
                self.coord.tasks.insert(id, task);
                continue;
            }
            if let Kind::Watching(w) = &task.kind
                && matches!(w.what, Watcher::Pop { in_flight: true, .. })
            {
                // A pop in flight decides; its answer ends the request.
                self.coord.tasks.insert(id, task);
                continue;
            }
            let enqueuing = self.coord.reqs.values().any(|(t, s)| *t == id && *s == Step::Enqueue);
            if enqueuing {
                // Leave the line once our key is in it (a delete now could
                // overtake the put): the answer sends the release.
                task.releasing = true;
                task.silent = true;
                self.coord.tasks.insert(id, task);
                emit(&mut self.actions, CoordEvent::Ended { id, error: CoordError::Timeout });
                continue;
            }
            self.coord_end(now, id, task, CoordEvent::Ended { id, error: CoordError::Timeout });
        }
    }
}

/// Whether a step that went unanswered is tried again: the steps of
/// long-running requests are, until their deadline; one-shot requests and
/// updates report the failure.
fn retryable(task: &Task, step: Step, now: Instant) -> bool {
    match (&task.kind, step) {
        (_, Step::Release) => true,
        (_, Step::Push | Step::Remove | Step::LeaderRead | Step::Update | Step::Cleanup) => false,
        (Kind::Lock(l), _) => l.deadline.is_none_or(|d| d > now),
        (Kind::Watching(w), _) => match w.what {
            Watcher::Pop { deadline, .. } => deadline.is_some_and(|d| d > now),
            _ => w.watch,
        },
        (Kind::Campaign(_) | Kind::Register(_), _) => true,
        (Kind::OneShot, _) => false,
    }
}

/// `now + wait`, a wait too long to represent meaning "in a century"
/// (never, in practice) rather than "now".
fn deadline(now: Instant, wait: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(wait.min(CENTURY)).or_else(|| now.checked_add(Duration::from_secs(3600))).unwrap_or(now)
}

/// Merges a queued update with a newer one (the newer wins field by field).
fn merge(slot: &mut Option<CoordUpdate>, up: CoordUpdate) {
    let old = slot.take().unwrap_or_default();
    *slot = Some(CoordUpdate {
        value: up.value.or(old.value),
        load: up.load.or(old.load),
        tags: up.tags.or(old.tags),
    });
}

/// The leader a group's leader key names.
fn leader_of(e: &KvEntry) -> Option<LeaderInfo> {
    let r: LeaderRec = decode(&e.value)?;
    Some(LeaderInfo { node: r.node, value: r.value, term: e.create_revision })
}

/// A queue item from its key and value (`None` for anything else).
fn queue_item(prefix: &[u8], e: &KvEntry) -> Option<QueueItem> {
    let r: ItemRec = decode(&e.value)?;
    let item = String::from_utf8(e.key.get(prefix.len()..)?.to_vec()).ok()?;
    Some(QueueItem {
        item,
        priority: r.priority,
        payload: r.payload,
        pushed_by: r.node,
        pushed_at: e.create_revision,
    })
}

/// Queue order: higher priority first, then first pushed.
fn queue_order(a: &QueueItem, b: &QueueItem) -> std::cmp::Ordering {
    b.priority.cmp(&a.priority).then(a.pushed_at.cmp(&b.pushed_at))
}
