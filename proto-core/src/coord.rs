//! Coordination for applications, built on the replicated store: locks
//! with fencing tokens, elections among peers, queues, and a registry of
//! live instances.
//!
//! Each is a *recipe* over the store's transactions, sessions and watches,
//! the way etcd's `concurrency` package builds them, run by the peer core
//! itself so every front end (tokio, C, console, an engine's own loop) gets
//! the same behaviour. A request starts with [`Node::coord`](crate::Node::coord)
//! and reports through [`Event::Coord`](crate::Event::Coord) events carrying its
//! id. What a recipe keeps lives under the reserved key prefix
//! [`COORD_PREFIX`]; every key a recipe writes for a participant is bound
//! to that participant's session, so a peer that dies (or stays away from
//! every server longer than its session's TTL) lets go of its locks,
//! leadership, queue entries and registrations by itself.
//!
//! * **Locks**: every contender writes a key; the key with the lowest
//!   create revision holds the lock and its create revision is the
//!   *fencing token* — revisions are cluster-wide and only grow, so tokens
//!   strictly increase with every grant and stay comparable across
//!   failovers. A waiter watches only the key just ahead of it (FIFO, no
//!   thundering herd).
//! * **Elections**: candidates write a key each; the winner by the group's
//!   rule (the oldest candidate, or the least loaded) claims the group's
//!   leader key with a transaction. The term is that key's create revision.
//! * **Queues**: one key per item; a pop of `n` items is one transaction
//!   that deletes exactly the `n` items it read, or nothing.
//! * **Registry**: one key per instance with its attributes; its health is
//!   its owner's session.

use crate::identity::NodeId;
use crate::store::KvError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The key prefix the coordination recipes keep their keys under. Do not
/// write keys under it yourself; reading and watching them is fine.
pub const COORD_PREFIX: &str = "_coord/";

/// Longest lock, group, queue or service name, and longest queue item or
/// registry instance id, in bytes.
pub const MAX_COORD_NAME: usize = 256;

/// Most items one pop takes (one transaction compares and deletes each).
pub const MAX_POP: u32 = crate::store::MAX_TXN_OPS as u32;

/// A coordination request, built with the functions below and handed to
/// [`Node::coord`](crate::Node::coord).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordRequest(pub(crate) Req);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Req {
    Lock { name: String, session: u64, wait: Option<Duration>, delay: Duration },
    Campaign { group: String, session: u64, value: Vec<u8>, load: u32, least_loaded: bool },
    Leader { group: String, watch: bool },
    Push { queue: String, item: String, priority: i32, payload: Vec<u8>, session: u64 },
    Remove { queue: String, item: String },
    Pop { queue: String, n: u32, wait: Option<Duration> },
    WatchQueue { queue: String },
    Register { service: String, instance: String, info: InstanceInfo, session: u64 },
    Query { service: String, filter: InstanceFilter, watch: bool },
}

impl CoordRequest {
    /// Acquires the lock `name` for one of this peer's sessions, waiting in
    /// line (first come, first served) for as long as it takes. Answered by
    /// [`CoordEvent::LockAcquired`] with the fencing token; hold it until
    /// [`Node::coord_release`](crate::Node::coord_release) (unlock) or until
    /// the session ends ([`CoordEvent::Ended`] with
    /// [`CoordError::SessionEnded`]).
    pub fn lock(name: impl Into<String>, session: u64) -> Self {
        Self(Req::Lock { name: name.into(), session, wait: None, delay: Duration::ZERO })
    }

    /// `try_lock`: a lock request that gives up after `deadline`
    /// ([`CoordError::Timeout`]), leaving the line. `Duration::ZERO` means
    /// "only if free now" (as long as one store round trip takes).
    /// On other requests, a pop: wait up to `deadline` for enough items.
    pub fn wait(mut self, deadline: Duration) -> Self {
        match &mut self.0 {
            Req::Lock { wait, .. } | Req::Pop { wait, .. } => *wait = Some(deadline),
            _ => {}
        }
        self
    }

    /// A lock request whose grant waits `delay` after the previous holder
    /// lost the lock *involuntarily* (its session expired), so a holder cut
    /// off mid-write has time to notice before the next one starts
    /// (Chubby's lock delay). An unlock hands over at once.
    pub fn lock_delay(mut self, delay: Duration) -> Self {
        if let Req::Lock { delay: d, .. } = &mut self.0 {
            *d = delay;
        }
        self
    }

    /// Campaigns to lead `group` with `value` (what followers read about
    /// the leader: an address, a shard, ...). Answered by
    /// [`CoordEvent::Elected`] with the term once this peer leads; stays a
    /// candidate until [`Node::coord_release`](crate::Node::coord_release)
    /// (resign) or the session ends. By default the oldest candidate wins.
    pub fn campaign(group: impl Into<String>, session: u64, value: impl Into<Vec<u8>>) -> Self {
        Self(Req::Campaign {
            group: group.into(),
            session,
            value: value.into(),
            load: 0,
            least_loaded: false,
        })
    }

    /// A campaign's load (see [`CoordRequest::least_loaded`]); update it
    /// with [`Node::coord_update`](crate::Node::coord_update).
    pub fn load(mut self, l: u32) -> Self {
        if let Req::Campaign { load, .. } = &mut self.0 {
            *load = l;
        }
        self
    }

    /// A campaign in a group where, whenever the leadership is vacant, the
    /// least loaded candidate wins (ties: the oldest). A sitting leader is
    /// not displaced by a less loaded newcomer (no churn). Every candidate
    /// of a group must use the same rule.
    pub fn least_loaded(mut self) -> Self {
        if let Req::Campaign { least_loaded, .. } = &mut self.0 {
            *least_loaded = true;
        }
        self
    }

    /// Who leads `group` now: one [`CoordEvent::Leader`].
    pub fn leader(group: impl Into<String>) -> Self {
        Self(Req::Leader { group: group.into(), watch: false })
    }

    /// Who leads `group`, now and at every change: a [`CoordEvent::Leader`]
    /// each time, until released.
    pub fn watch_leader(group: impl Into<String>) -> Self {
        Self(Req::Leader { group: group.into(), watch: true })
    }

    /// Adds `item` to `queue` with `payload` (priority 0, bound to no
    /// session: see [`CoordRequest::priority`] and
    /// [`CoordRequest::session`]). An item already queued stays as it is
    /// ([`CoordEvent::Pushed`] says `added: false`).
    pub fn push(queue: impl Into<String>, item: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self(Req::Push {
            queue: queue.into(),
            item: item.into(),
            priority: 0,
            payload: payload.into(),
            session: 0,
        })
    }

    /// A push's priority: higher pops first; equal priorities pop in the
    /// order they were pushed.
    pub fn priority(mut self, p: i32) -> Self {
        if let Req::Push { priority, .. } = &mut self.0 {
            *priority = p;
        }
        self
    }

    /// Binds a push to one of this peer's sessions: the item leaves the
    /// queue when the session ends (a player who disconnects is not matched).
    pub fn session(mut self, id: u64) -> Self {
        if let Req::Push { session, .. } = &mut self.0 {
            *session = id;
        }
        self
    }

    /// Removes `item` from `queue` ([`CoordEvent::Removed`]).
    pub fn remove(queue: impl Into<String>, item: impl Into<String>) -> Self {
        Self(Req::Remove { queue: queue.into(), item: item.into() })
    }

    /// Takes the first `n` items of `queue` (highest priority, then oldest)
    /// atomically: all `n` or none, each item popped by exactly one
    /// request. Without [`CoordRequest::wait`] it fails with
    /// [`CoordError::NotEnough`] when fewer are queued.
    pub fn pop(queue: impl Into<String>, n: u32) -> Self {
        Self(Req::Pop { queue: queue.into(), n, wait: None })
    }

    /// The length of `queue`, now and at every change
    /// ([`CoordEvent::QueueLength`]), until released.
    pub fn watch_queue(queue: impl Into<String>) -> Self {
        Self(Req::WatchQueue { queue: queue.into() })
    }

    /// Registers `instance` of `service` with its attributes, bound to one
    /// of this peer's sessions: it is listed while the session lives.
    /// Answered by [`CoordEvent::Registered`]; update its load with
    /// [`Node::coord_update`](crate::Node::coord_update), deregister with
    /// [`Node::coord_release`](crate::Node::coord_release).
    pub fn register(
        service: impl Into<String>,
        instance: impl Into<String>,
        info: InstanceInfo,
        session: u64,
    ) -> Self {
        Self(Req::Register { service: service.into(), instance: instance.into(), info, session })
    }

    /// The live instances of `service` that pass `filter`, least loaded
    /// first: one [`CoordEvent::Instances`].
    pub fn query(service: impl Into<String>, filter: InstanceFilter) -> Self {
        Self(Req::Query { service: service.into(), filter, watch: false })
    }

    /// [`CoordRequest::query`], answered again at every change until released.
    pub fn watch_service(service: impl Into<String>, filter: InstanceFilter) -> Self {
        Self(Req::Query { service: service.into(), filter, watch: true })
    }

    /// Checks names and sizes ([`Node::coord`](crate::Node::coord) does
    /// this before anything is sent).
    pub fn check(&self) -> Result<(), CoordError> {
        let name = |s: &str| -> Result<(), CoordError> {
            if s.is_empty() || s.len() > MAX_COORD_NAME {
                return Err(CoordError::InvalidName { len: s.len() });
            }
            Ok(())
        };
        match &self.0 {
            Req::Lock { name: n, session, .. } | Req::Campaign { group: n, session, .. } => {
                name(n)?;
                if *session == 0 {
                    return Err(CoordError::NoSession);
                }
            }
            Req::Leader { group: n, .. } | Req::WatchQueue { queue: n } => name(n)?,
            Req::Push { queue, item, .. } | Req::Remove { queue, item } => {
                name(queue)?;
                name(item)?;
            }
            Req::Pop { queue, n, .. } => {
                name(queue)?;
                if *n == 0 {
                    return Err(CoordError::Kv(KvError::Invalid("a pop takes at least one item")));
                }
                if *n > MAX_POP {
                    return Err(CoordError::Kv(KvError::TooLarge {
                        what: "pop count",
                        len: *n as usize,
                        max: MAX_POP as usize,
                    }));
                }
            }
            Req::Register { service, instance, session, .. } => {
                name(service)?;
                name(instance)?;
                if *session == 0 {
                    return Err(CoordError::NoSession);
                }
            }
            Req::Query { service, .. } => name(service)?,
        }
        Ok(())
    }
}

/// A change to a running campaign or registration
/// ([`Node::coord_update`](crate::Node::coord_update)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoordUpdate {
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) load: Option<u32>,
    pub(crate) tags: Option<BTreeMap<String, String>>,
}

impl CoordUpdate {
    /// A new value: a campaign's (proclaimed to followers if it leads) or a
    /// registration's `data`.
    pub fn value(mut self, v: impl Into<Vec<u8>>) -> Self {
        self.value = Some(v.into());
        self
    }

    /// A new load (a campaign's or a registration's).
    pub fn load(mut self, l: u32) -> Self {
        self.load = Some(l);
        self
    }

    /// New tags of a registration.
    pub fn tags(mut self, t: BTreeMap<String, String>) -> Self {
        self.tags = Some(t);
        self
    }
}

/// A registered instance's attributes ([`CoordRequest::register`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InstanceInfo {
    /// The node serving it (filled in by the registering peer).
    pub node: Option<NodeId>,
    /// Its current load (players, rooms, requests in flight, ...).
    pub load: u32,
    /// Its capacity in the same unit (0: unbounded).
    pub capacity: u32,
    /// Attributes to query by (`region = eu`, `mode = ranked`, ...).
    pub tags: BTreeMap<String, String>,
    /// Anything else the application wants to publish.
    pub data: Vec<u8>,
}

impl InstanceInfo {
    /// An instance with this load and capacity, no tags and no data.
    pub fn new(load: u32, capacity: u32) -> Self {
        Self { node: None, load, capacity, tags: BTreeMap::new(), data: Vec::new() }
    }

    /// This instance with one more tag.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// This instance with `data`.
    pub fn data(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.data = data.into();
        self
    }

    /// Whether it can take one more unit of load.
    pub fn has_room(&self) -> bool {
        self.capacity == 0 || self.load < self.capacity
    }
}

/// Which instances a registry query returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceFilter {
    tags: Vec<(String, String)>,
    has_room: bool,
    max_load: Option<u32>,
}

impl InstanceFilter {
    /// Every live instance.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only instances with this tag.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }

    /// Only instances below their capacity.
    pub fn has_room(mut self) -> Self {
        self.has_room = true;
        self
    }

    /// Only instances with at most this load.
    pub fn max_load(mut self, load: u32) -> Self {
        self.max_load = Some(load);
        self
    }

    /// Whether `info` passes.
    pub fn matches(&self, info: &InstanceInfo) -> bool {
        self.tags.iter().all(|(k, v)| info.tags.get(k) == Some(v))
            && (!self.has_room || info.has_room())
            && self.max_load.is_none_or(|m| info.load <= m)
    }
}

/// One live instance, as a registry query reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Instance {
    /// Its id within the service.
    pub instance: String,
    /// Its attributes.
    pub info: InstanceInfo,
    /// The revision it registered at (changes only if it re-registers).
    pub registered: u64,
}

/// Who leads a group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaderInfo {
    /// The leading peer.
    pub node: NodeId,
    /// The value it campaigned with or last proclaimed.
    pub value: Vec<u8>,
    /// Its term: a fencing token that grows with every new leadership.
    pub term: u64,
}

/// One item taken from a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueItem {
    /// The item's id.
    pub item: String,
    /// Its priority.
    pub priority: i32,
    /// Its payload.
    pub payload: Vec<u8>,
    /// The peer that pushed it.
    pub pushed_by: NodeId,
    /// The revision it was pushed at.
    pub pushed_at: u64,
}

/// What a coordination request reports ([`Event::Coord`](crate::Event::Coord)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoordEvent {
    /// The lock is held; `token` is its fencing token (strictly greater
    /// than every earlier grant of this lock): pass it along with every
    /// write the lock protects, and have the resource refuse older tokens.
    LockAcquired {
        /// The request.
        id: u64,
        /// The fencing token.
        token: u64,
    },
    /// This peer leads the group; `term` is its fencing token.
    Elected {
        /// The request.
        id: u64,
        /// The term.
        term: u64,
    },
    /// Who leads the group ([`CoordRequest::leader`], [`CoordRequest::watch_leader`]);
    /// `None` while nobody does.
    Leader {
        /// The request.
        id: u64,
        /// The leader.
        leader: Option<LeaderInfo>,
    },
    /// A push was applied; `added` is false if the item was already queued.
    Pushed {
        /// The request.
        id: u64,
        /// Whether the item was added.
        added: bool,
    },
    /// A remove was applied; `removed` is false if the item was not queued.
    Removed {
        /// The request.
        id: u64,
        /// Whether an item was removed.
        removed: bool,
    },
    /// A pop took these items (as many as asked, in queue order).
    Popped {
        /// The request.
        id: u64,
        /// The items.
        items: Vec<QueueItem>,
    },
    /// A watched queue's length.
    QueueLength {
        /// The request.
        id: u64,
        /// Items queued.
        len: usize,
    },
    /// The instance is registered (listed while its session lives).
    Registered {
        /// The request.
        id: u64,
    },
    /// The live instances a query matched, least loaded first.
    Instances {
        /// The request.
        id: u64,
        /// The instances.
        instances: Vec<Instance>,
    },
    /// A [`Node::coord_update`](crate::Node::coord_update) was applied, or why not.
    Updated {
        /// The request.
        id: u64,
        /// The outcome.
        result: Result<(), CoordError>,
    },
    /// A [`Node::coord_release`](crate::Node::coord_release) is done: the
    /// lock is unlocked, the campaign resigned, the instance deregistered,
    /// the watch stopped. Nothing more comes for this id.
    Released {
        /// The request.
        id: u64,
    },
    /// The request ended without being released: it failed, timed out, or
    /// lost what it held (the lock, the leadership, the registration).
    /// Nothing more comes for this id.
    Ended {
        /// The request.
        id: u64,
        /// Why.
        error: CoordError,
    },
}

impl CoordEvent {
    /// The request this event is about.
    pub fn id(&self) -> u64 {
        match self {
            CoordEvent::LockAcquired { id, .. }
            | CoordEvent::Elected { id, .. }
            | CoordEvent::Leader { id, .. }
            | CoordEvent::Pushed { id, .. }
            | CoordEvent::Removed { id, .. }
            | CoordEvent::Popped { id, .. }
            | CoordEvent::QueueLength { id, .. }
            | CoordEvent::Registered { id }
            | CoordEvent::Instances { id, .. }
            | CoordEvent::Updated { id, .. }
            | CoordEvent::Released { id }
            | CoordEvent::Ended { id, .. } => *id,
        }
    }
}

/// Why a coordination request failed or ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoordError {
    /// The store refused or could not answer a step.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// A name or id is empty or longer than [`MAX_COORD_NAME`].
    #[error("names and ids are 1 to {MAX_COORD_NAME} bytes (this one is {len})")]
    InvalidName {
        /// Its length.
        len: usize,
    },
    /// Locks, campaigns and registrations need a session
    /// ([`KvRequest::session_open`](crate::KvRequest::session_open)).
    #[error("this request needs a session: open one with KvRequest::session_open")]
    NoSession,
    /// The session ended (expired or closed): what it held is gone.
    #[error("the session ended: its locks, leadership and registrations are gone")]
    SessionEnded,
    /// This peer led the group and does no more: its leader key was
    /// deleted (its session expired) or another candidate leads.
    #[error("the leadership was lost (the session expired or the leader key was removed)")]
    LeadershipLost,
    /// The deadline passed first.
    #[error("the deadline passed before the request could be served")]
    Timeout,
    /// A pop without a wait found fewer items than asked.
    #[error("the queue holds {len} items, fewer than asked")]
    NotEnough {
        /// Items queued.
        len: usize,
    },
    /// The id names no running request of the right kind.
    #[error("no such running coordination request (or not one this call applies to)")]
    NoSuchRequest,
    /// Too many coordination requests are running on this peer.
    #[error("{0} coordination requests are already running")]
    TooMany(usize),
    /// Only peers coordinate.
    #[error("only a peer can make coordination requests")]
    NotAPeer,
}
