//! Coordination from async code: locks with fencing tokens, elections,
//! queues and a registry of live instances, the core's recipes
//! ([`p2pcore::CoordRequest`]) behind awaitable calls and handles.
//!
//! Like the store's requests ([`crate::kv`]), a request is handed to the
//! node and its slot (an unbounded channel of the core's
//! [`CoordEvent`]s, by the core's request id) registered under the shared
//! lock in one step, and the driver routes [`Event::Coord`](p2pcore::Event::Coord)
//! events under the same lock, so nothing can come before its slot exists.
//! The driver drops a slot after the request's last event
//! ([`CoordEvent::Released`] or [`CoordEvent::Ended`]); the endpoint's end
//! drops every slot, which completes the futures with
//! `CoordError::Kv(KvError::Unavailable)` and ends the handles and streams.
//!
//! Every request that is still running in the core when its future or
//! handle is dropped is released ([`p2pcore::Node::coord_release`]): a
//! dropped `lock` future leaves the line, a dropped [`Lock`] unlocks, a
//! dropped [`Leadership`] resigns, a dropped [`Registration`] deregisters,
//! a dropped watch stops. The handles do not keep the endpoint alive.

use crate::endpoint::{Endpoint, Shared};
use p2pcore::{
    CoordError, CoordEvent, CoordRequest, CoordUpdate, Instance, InstanceFilter, InstanceInfo, KvError,
    KvRequest, KvResponse, LeaderInfo, QueueItem,
};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::Stream;

/// Where the driver sends a coordination request's events.
pub(crate) type CoordSlot = mpsc::UnboundedSender<CoordEvent>;

/// The error a request gets when the endpoint ended under it.
fn gone() -> CoordError {
    CoordError::Kv(KvError::Unavailable)
}

/// One running coordination request of this endpoint: its id, its events,
/// and whether the core still runs it (then dropping it releases it).
struct Running {
    shared: Arc<Shared>,
    id: u64,
    rx: mpsc::UnboundedReceiver<CoordEvent>,
    /// The core still runs the request (no `Released` or `Ended` seen).
    live: bool,
    /// Why it ended, once it did.
    ended: Option<CoordError>,
}

impl Running {
    /// Starts `req` and registers its slot in one step.
    fn start(shared: Arc<Shared>, req: CoordRequest) -> Result<Self, CoordError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = {
            let mut st = shared.lock();
            let st = &mut *st;
            if st.ended.is_some() {
                return Err(gone());
            }
            let id = st.node.coord(Instant::now(), req)?;
            st.coord.insert(id, tx);
            id
        };
        shared.wake.notify_one();
        Ok(Self { shared, id, rx, live: true, ended: None })
    }

    /// Notes what an event means for the request's life.
    fn note(&mut self, ev: &CoordEvent) {
        match ev {
            CoordEvent::Released { .. } => self.live = false,
            CoordEvent::Ended { error, .. } => {
                self.live = false;
                self.ended = Some(error.clone());
            }
            _ => {}
        }
    }

    /// The next event; `Err` once the endpoint ended (or after the last
    /// event, the error it ended with).
    async fn next(&mut self) -> Result<CoordEvent, CoordError> {
        match self.rx.recv().await {
            Some(ev) => {
                self.note(&ev);
                Ok(ev)
            }
            None => {
                self.live = false;
                Err(self.ended.clone().unwrap_or_else(gone))
            }
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<CoordEvent>> {
        let ev = std::task::ready!(self.rx.poll_recv(cx));
        match &ev {
            Some(ev) => self.note(ev),
            None => {
                self.live = false;
                self.ended.get_or_insert_with(gone);
            }
        }
        Poll::Ready(ev)
    }

    /// Asks the core to release the request (unlock, resign, deregister,
    /// stop); false if the core no longer runs it.
    fn release(&self) -> bool {
        let found = {
            let mut st = self.shared.lock();
            st.ended.is_none() && st.node.coord_release(Instant::now(), self.id)
        };
        self.shared.wake.notify_one();
        found
    }

    /// Applies `up` to a campaign or registration.
    fn update(&self, up: CoordUpdate) -> Result<(), CoordError> {
        {
            let mut st = self.shared.lock();
            if st.ended.is_some() {
                return Err(gone());
            }
            st.node.coord_update(Instant::now(), self.id, up)?;
        }
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Releases the request and waits for the core's `Released`; `Err`
    /// with the reason when it had ended by itself before.
    async fn release_and_wait(&mut self) -> Result<(), CoordError> {
        if !self.live {
            return Err(self.ended.clone().unwrap_or(CoordError::NoSuchRequest));
        }
        if !self.release() {
            self.live = false;
            // The core ended it: its `Ended` may still be queued.
            while let Some(ev) = self.rx.recv().await {
                self.note(&ev);
                if let CoordEvent::Released { .. } = ev {
                    return Ok(());
                }
            }
            return Err(self.ended.clone().unwrap_or_else(gone));
        }
        loop {
            match self.next().await? {
                CoordEvent::Released { .. } => return Ok(()),
                CoordEvent::Ended { error, .. } => return Err(error),
                _ => {}
            }
        }
    }

    /// Waits until the core ends the request by itself (or the endpoint
    /// ends); returns why. Updates answered meanwhile are counted off.
    async fn lost(&mut self, pending_updates: &mut usize) -> CoordError {
        if let Some(e) = &self.ended {
            return e.clone();
        }
        loop {
            match self.next().await {
                Ok(CoordEvent::Ended { error, .. }) => return error,
                Ok(CoordEvent::Released { .. }) => return CoordError::NoSuchRequest,
                Ok(CoordEvent::Updated { .. }) => *pending_updates = pending_updates.saturating_sub(1),
                Ok(_) => {}
                Err(e) => return e,
            }
        }
    }

    /// Sends `up` and waits for its answer (the last of the updates still
    /// unanswered, counted in `pending`).
    async fn update_and_wait(&mut self, up: CoordUpdate, pending: &mut usize) -> Result<(), CoordError> {
        if !self.live {
            return Err(self.ended.clone().unwrap_or(CoordError::NoSuchRequest));
        }
        self.update(up)?;
        *pending += 1;
        loop {
            match self.next().await? {
                CoordEvent::Updated { result, .. } => {
                    *pending = pending.saturating_sub(1);
                    if *pending == 0 {
                        return result;
                    }
                }
                CoordEvent::Ended { error, .. } => return Err(error),
                CoordEvent::Released { .. } => return Err(CoordError::NoSuchRequest),
                _ => {}
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.coord.remove(&self.id);
        if self.live && st.ended.is_none() {
            st.node.coord_release(Instant::now(), self.id);
            drop(st);
            self.shared.wake.notify_one();
        }
    }
}

/// A request that got an event of a kind its call does not expect (the
/// request passed was not of the call's kind): released, and reported as
/// [`CoordError::NoSuchRequest`].
fn wrong_kind(run: &Running, ev: &CoordEvent) -> CoordError {
    tracing::debug!(id = run.id, ?ev, "a coordination request of another kind than its call");
    CoordError::NoSuchRequest
}

impl Endpoint {
    /// Opens a store session with this time to live (1 s to 1 h; see
    /// [`KvRequest::session_open`]) and returns its id, for the
    /// coordination calls that need one ([`Endpoint::lock`],
    /// [`Endpoint::campaign`], [`Endpoint::register`], pushes bound with
    /// [`CoordRequest::session`]) and for keys put with
    /// [`KvRequest::with_session`]. The session lives while this peer is
    /// connected to any server, and `ttl` longer once it is on none; when
    /// it ends, everything bound to it goes (locks, leadership, queue
    /// items, registrations). Errors as [`Endpoint::kv`].
    pub async fn session(&self, ttl: Duration) -> Result<u64, KvError> {
        match self.kv(KvRequest::session_open(ttl)).await?.response {
            KvResponse::SessionOpened { session } => Ok(session),
            _ => Err(KvError::Invalid("the store answered a session open with another kind of answer")),
        }
    }

    /// Closes a session at once: its keys are deleted, and what it held
    /// (locks, leadership, registrations, queue items) ends, as when it
    /// expires. Returns how many keys went with it. Errors as
    /// [`Endpoint::kv`].
    pub async fn session_close(&self, session: u64) -> Result<u64, KvError> {
        match self.kv(KvRequest::session_close(session)).await?.response {
            KvResponse::SessionClosed { deleted } => Ok(deleted),
            _ => Err(KvError::Invalid("the store answered a session close with another kind of answer")),
        }
    }

    /// Starts any coordination request and returns the raw handle of its
    /// events (for the calls below).
    fn coord_start(&self, req: CoordRequest) -> Result<Running, CoordError> {
        Running::start(self.shared_arc(), req)
    }

    /// Acquires the lock `name` for `session` (one of this peer's,
    /// [`Endpoint::session`]), waiting in line, first come first served,
    /// for as long as it takes. The [`Lock`]'s [`Lock::token`] is its
    /// fencing token: strictly greater than every earlier grant of the
    /// lock.
    ///
    /// Fails at once with [`CoordError::InvalidName`],
    /// [`CoordError::NoSession`] (session 0), [`CoordError::TooMany`] or
    /// [`CoordError::NotAPeer`]; later with [`CoordError::SessionEnded`]
    /// (the session ended while waiting) or a store error. After the
    /// endpoint ended, or when it ends first:
    /// `CoordError::Kv(KvError::Unavailable)`.
    ///
    /// Cancel-safe: dropping the future leaves the line (or unlocks, if
    /// the grant had just come).
    pub async fn lock(&self, name: impl Into<String>, session: u64) -> Result<Lock, CoordError> {
        self.lock_with(CoordRequest::lock(name, session)).await
    }

    /// [`Endpoint::lock`] giving up after `deadline` with
    /// [`CoordError::Timeout`] (the request leaves the line);
    /// `Duration::ZERO` takes the lock only if it is free now.
    pub async fn try_lock(
        &self,
        name: impl Into<String>,
        session: u64,
        deadline: Duration,
    ) -> Result<Lock, CoordError> {
        self.lock_with(CoordRequest::lock(name, session).wait(deadline)).await
    }

    /// [`Endpoint::lock`] with a request built by hand
    /// ([`CoordRequest::lock`] with [`CoordRequest::wait`] and
    /// [`CoordRequest::lock_delay`]). Another kind of request is released
    /// and fails with [`CoordError::NoSuchRequest`].
    pub async fn lock_with(&self, req: CoordRequest) -> Result<Lock, CoordError> {
        let mut run = self.coord_start(req)?;
        loop {
            match run.next().await? {
                CoordEvent::LockAcquired { token, .. } => return Ok(Lock { run, token }),
                CoordEvent::Ended { error, .. } => return Err(error),
                ev @ (CoordEvent::Updated { .. } | CoordEvent::Released { .. }) => {
                    tracing::trace!(?ev, "ignored while locking");
                }
                ev => return Err(wrong_kind(&run, &ev)),
            }
        }
    }

    /// Campaigns with `req` ([`CoordRequest::campaign`], optionally with
    /// [`CoordRequest::load`] and [`CoordRequest::least_loaded`]) and
    /// waits until this peer leads the group. The [`Leadership`] keeps the
    /// candidacy; it ends when resigned or dropped, or when the session
    /// ends ([`Leadership::lost`]).
    ///
    /// Fails at once for what the node refuses ([`CoordError::NoSession`],
    /// [`CoordError::InvalidName`], [`CoordError::TooMany`]); later with
    /// [`CoordError::SessionEnded`] or a store error; with
    /// `CoordError::Kv(KvError::Unavailable)` when the endpoint ends.
    /// Another kind of request: [`CoordError::NoSuchRequest`].
    ///
    /// Cancel-safe: dropping the future withdraws the candidacy (and
    /// resigns, if the election had just been won).
    pub async fn campaign(&self, req: CoordRequest) -> Result<Leadership, CoordError> {
        let mut run = self.coord_start(req)?;
        let mut pending_updates = 0;
        loop {
            match run.next().await? {
                CoordEvent::Elected { term, .. } => return Ok(Leadership { run, term, pending_updates }),
                CoordEvent::Ended { error, .. } => return Err(error),
                CoordEvent::Updated { .. } => pending_updates = 0,
                CoordEvent::Released { .. } => return Err(CoordError::NoSuchRequest),
                ev => return Err(wrong_kind(&run, &ev)),
            }
        }
    }

    /// Who leads `group` now (`None`: nobody), read once from the store.
    /// Errors: [`CoordError::InvalidName`], a store error, or
    /// `CoordError::Kv(KvError::Unavailable)` when the endpoint ends.
    /// Cancel-safe (a read).
    pub async fn leader(&self, group: impl Into<String>) -> Result<Option<LeaderInfo>, CoordError> {
        let mut run = self.coord_start(CoordRequest::leader(group))?;
        match run.next().await? {
            CoordEvent::Leader { leader, .. } => {
                run.live = false;
                Ok(leader)
            }
            CoordEvent::Ended { error, .. } => Err(error),
            ev => Err(wrong_kind(&run, &ev)),
        }
    }

    /// Watches who leads `group`: a [`LeaderWatch`] yielding the leader
    /// now, then at every change (`None` while nobody leads). Not `async`:
    /// the watch starts at once; a request the node refuses (an invalid
    /// name, too many requests, the endpoint ended) gives a watch that
    /// ends at once with [`LeaderWatch::error`] set.
    pub fn watch_leader(&self, group: impl Into<String>) -> LeaderWatch {
        LeaderWatch(Watch::start(self, CoordRequest::watch_leader(group)))
    }

    /// Adds an item to a queue with `req` ([`CoordRequest::push`],
    /// optionally with [`CoordRequest::priority`] and
    /// [`CoordRequest::session`]); returns whether it was added (false:
    /// the item was already queued and stays as it was).
    ///
    /// Errors: [`CoordError::InvalidName`]; a store error (a push is not
    /// retried by the core: [`KvError::Unavailable`] when no quorum
    /// answered within 5 s); `CoordError::Kv(KvError::Unavailable)` when
    /// the endpoint ends. Another kind of request:
    /// [`CoordError::NoSuchRequest`]. Dropping the future stops waiting
    /// for the answer, but the push may still be applied (pushing again is
    /// harmless: it answers `false`).
    pub async fn push(&self, req: CoordRequest) -> Result<bool, CoordError> {
        let mut run = self.coord_start(req)?;
        match run.next().await? {
            CoordEvent::Pushed { added, .. } => {
                run.live = false;
                Ok(added)
            }
            CoordEvent::Ended { error, .. } => Err(error),
            ev => Err(wrong_kind(&run, &ev)),
        }
    }

    /// Removes `item` from `queue`; returns whether it was queued. Errors
    /// and cancellation as [`Endpoint::push`].
    pub async fn remove(
        &self,
        queue: impl Into<String>,
        item: impl Into<String>,
    ) -> Result<bool, CoordError> {
        let mut run = self.coord_start(CoordRequest::remove(queue, item))?;
        match run.next().await? {
            CoordEvent::Removed { removed, .. } => {
                run.live = false;
                Ok(removed)
            }
            CoordEvent::Ended { error, .. } => Err(error),
            ev => Err(wrong_kind(&run, &ev)),
        }
    }

    /// Takes the first `n` items of `queue` (highest priority, then
    /// oldest) atomically: all `n` or none, each item taken by exactly one
    /// pop in the whole cluster. Without `wait` it fails at once with
    /// [`CoordError::NotEnough`] when fewer are queued; with `wait` it
    /// waits that long for enough items, then fails with
    /// [`CoordError::Timeout`].
    ///
    /// Errors also: [`CoordError::InvalidName`], a count of 0 or over
    /// [`p2pcore::MAX_POP`] (`CoordError::Kv(KvError::TooLarge)`), store
    /// errors, `CoordError::Kv(KvError::Unavailable)` when the endpoint
    /// ends.
    ///
    /// **Not cancel-safe once items are being taken**: dropping the future
    /// stops the pop, but a take already sent to the store may still be
    /// applied, and its items are then gone without anybody receiving
    /// them. Drop it only while it waits (or give it a `wait` instead).
    pub async fn pop(
        &self,
        queue: impl Into<String>,
        n: u32,
        wait: Option<Duration>,
    ) -> Result<Vec<QueueItem>, CoordError> {
        let mut req = CoordRequest::pop(queue, n);
        if let Some(w) = wait {
            req = req.wait(w);
        }
        let mut run = self.coord_start(req)?;
        loop {
            match run.next().await? {
                CoordEvent::Popped { items, .. } => {
                    run.live = false;
                    return Ok(items);
                }
                CoordEvent::Ended { error, .. } => return Err(error),
                CoordEvent::Released { .. } => return Err(CoordError::NoSuchRequest),
                _ => {}
            }
        }
    }

    /// Watches the length of `queue`: a [`QueueWatch`] yielding it now,
    /// then at every change. Not `async`; a refused request gives a watch
    /// that ends at once with [`QueueWatch::error`] set.
    pub fn watch_queue(&self, queue: impl Into<String>) -> QueueWatch {
        QueueWatch(Watch::start(self, CoordRequest::watch_queue(queue)))
    }

    /// Registers `instance` of `service` with its attributes, bound to
    /// `session`: it is listed ([`Endpoint::query`]) while the session
    /// lives and until the [`Registration`] is deregistered or dropped.
    /// Registering an instance id that is already registered takes it over.
    ///
    /// Errors: [`CoordError::InvalidName`], [`CoordError::NoSession`],
    /// [`CoordError::TooMany`], [`CoordError::SessionEnded`] (the session
    /// was gone), store errors, `CoordError::Kv(KvError::Unavailable)` when
    /// the endpoint ends. Cancel-safe: dropping the future deregisters.
    pub async fn register(
        &self,
        service: impl Into<String>,
        instance: impl Into<String>,
        info: InstanceInfo,
        session: u64,
    ) -> Result<Registration, CoordError> {
        let mut run = self.coord_start(CoordRequest::register(service, instance, info, session))?;
        loop {
            match run.next().await? {
                CoordEvent::Registered { .. } => return Ok(Registration { run, pending_updates: 0 }),
                CoordEvent::Ended { error, .. } => return Err(error),
                CoordEvent::Released { .. } => return Err(CoordError::NoSuchRequest),
                _ => {}
            }
        }
    }

    /// The live instances of `service` that pass `filter`, least loaded
    /// first, read once. Errors: [`CoordError::InvalidName`], store
    /// errors, `CoordError::Kv(KvError::Unavailable)` when the endpoint
    /// ends. Cancel-safe (a read).
    pub async fn query(
        &self,
        service: impl Into<String>,
        filter: InstanceFilter,
    ) -> Result<Vec<Instance>, CoordError> {
        let mut run = self.coord_start(CoordRequest::query(service, filter))?;
        match run.next().await? {
            CoordEvent::Instances { instances, .. } => {
                run.live = false;
                Ok(instances)
            }
            CoordEvent::Ended { error, .. } => Err(error),
            ev => Err(wrong_kind(&run, &ev)),
        }
    }

    /// Watches the live instances of `service` that pass `filter`: a
    /// [`ServiceWatch`] yielding them now, then at every change (a
    /// registration, an update, a deregistration, a session's end). Not
    /// `async`; a refused request gives a watch that ends at once with
    /// [`ServiceWatch::error`] set.
    pub fn watch_service(&self, service: impl Into<String>, filter: InstanceFilter) -> ServiceWatch {
        ServiceWatch(Watch::start(self, CoordRequest::watch_service(service, filter)))
    }
}

/// A held lock ([`Endpoint::lock`]). Dropping it without
/// [`Lock::unlock`] unlocks it in the background (best-effort: nobody
/// learns whether the store applied it; if not, the lock goes with its
/// session).
pub struct Lock {
    run: Running,
    token: u64,
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock").field("id", &self.run.id).field("token", &self.token).finish()
    }
}

impl Lock {
    /// The fencing token: strictly greater than every earlier grant of
    /// this lock, cluster-wide and across failovers. Pass it with every
    /// write the lock protects and have the resource refuse older ones.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The core's request id (the `id` of its events in [`Endpoint::events`]).
    pub fn id(&self) -> u64 {
        self.run.id
    }

    /// Unlocks and waits until the store applied it (the next in line is
    /// granted then). `Err` with the reason if the lock had already been
    /// lost ([`CoordError::SessionEnded`]), a store error, or
    /// `CoordError::Kv(KvError::Unavailable)` when the endpoint ends.
    /// Dropping the future still unlocks (the request stays released).
    pub async fn unlock(mut self) -> Result<(), CoordError> {
        self.run.release_and_wait().await
    }

    /// Resolves when the lock is lost without being unlocked: its session
    /// ended ([`CoordError::SessionEnded`]), or the endpoint ended
    /// (`CoordError::Kv(KvError::Unavailable)`); returns why. Cancel-safe;
    /// after it returned, it returns the same at once.
    pub async fn lost(&mut self) -> CoordError {
        self.run.lost(&mut 0).await
    }
}

/// This peer's leadership of a group ([`Endpoint::campaign`]). Dropping
/// it resigns in the background (best-effort, as [`Lock`]).
pub struct Leadership {
    run: Running,
    term: u64,
    pending_updates: usize,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership").field("id", &self.run.id).field("term", &self.term).finish()
    }
}

impl Leadership {
    /// The term: a fencing token that grows with every new leadership of
    /// the group.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The core's request id.
    pub fn id(&self) -> u64 {
        self.run.id
    }

    /// Publishes a new value and/or load ([`CoordUpdate::value`],
    /// [`CoordUpdate::load`]) to the group's followers and waits until the
    /// store applied it. `Err`: [`CoordError::SessionEnded`] when the
    /// candidacy was gone, [`CoordError::LeadershipLost`] and the like if
    /// the leadership ended meanwhile, a store error, or
    /// `CoordError::Kv(KvError::Unavailable)` when the endpoint ends.
    /// Dropping the future does not recall the update (the next call
    /// waits for its answer too).
    pub async fn proclaim(&mut self, update: CoordUpdate) -> Result<(), CoordError> {
        self.run.update_and_wait(update, &mut self.pending_updates).await
    }

    /// Resigns and waits until the store applied it (another candidate
    /// may then be elected). `Err` if the leadership had already been
    /// lost (with the reason), or the endpoint ended.
    pub async fn resign(mut self) -> Result<(), CoordError> {
        self.run.release_and_wait().await
    }

    /// Resolves when the leadership is lost without resigning:
    /// [`CoordError::LeadershipLost`] (the leader key went, another leads),
    /// [`CoordError::SessionEnded`], a store error, or
    /// `CoordError::Kv(KvError::Unavailable)` when the endpoint ends.
    /// Cancel-safe; after it returned, it returns the same at once.
    pub async fn lost(&mut self) -> CoordError {
        self.run.lost(&mut self.pending_updates).await
    }
}

/// A registered instance ([`Endpoint::register`]). Dropping it
/// deregisters in the background (best-effort, as [`Lock`]).
pub struct Registration {
    run: Running,
    pending_updates: usize,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").field("id", &self.run.id).finish()
    }
}

impl Registration {
    /// The core's request id.
    pub fn id(&self) -> u64 {
        self.run.id
    }

    /// Changes the instance's load, tags or data ([`CoordUpdate::load`],
    /// [`CoordUpdate::tags`], [`CoordUpdate::value`]: its `data`) in
    /// place and waits until the store applied it; watchers see one
    /// change. `Err`: [`CoordError::SessionEnded`] when the registration
    /// was gone (it then ends), a store error, or
    /// `CoordError::Kv(KvError::Unavailable)` when the endpoint ends.
    /// Dropping the future does not recall the update.
    pub async fn update(&mut self, update: CoordUpdate) -> Result<(), CoordError> {
        self.run.update_and_wait(update, &mut self.pending_updates).await
    }

    /// Deregisters and waits until the store applied it. `Err` if the
    /// registration had already been lost (with the reason), or the
    /// endpoint ended.
    pub async fn deregister(mut self) -> Result<(), CoordError> {
        self.run.release_and_wait().await
    }

    /// Resolves when the registration is lost without deregistering: its
    /// session ended or its key was removed ([`CoordError::SessionEnded`]),
    /// or the endpoint ended (`CoordError::Kv(KvError::Unavailable)`).
    /// Cancel-safe; after it returned, it returns the same at once.
    pub async fn lost(&mut self) -> CoordError {
        self.run.lost(&mut self.pending_updates).await
    }
}

/// A running watch request, or the error that refused it.
struct Watch {
    run: Option<Running>,
    error: Option<CoordError>,
}

impl Watch {
    fn start(ep: &Endpoint, req: CoordRequest) -> Self {
        match ep.coord_start(req) {
            Ok(run) => Self { run: Some(run), error: None },
            Err(e) => Self { run: None, error: Some(e) },
        }
    }

    fn id(&self) -> Option<u64> {
        self.run.as_ref().map(|r| r.id)
    }

    /// The next event `pick` maps to an item; `None` once it ended.
    fn poll_map<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut pick: impl FnMut(CoordEvent) -> Option<T>,
    ) -> Poll<Option<T>> {
        loop {
            let Some(run) = self.run.as_mut() else { return Poll::Ready(None) };
            match std::task::ready!(run.poll_next(cx)) {
                Some(CoordEvent::Ended { error, .. }) => {
                    self.error = Some(error);
                    self.run = None;
                }
                Some(CoordEvent::Released { .. }) => self.run = None,
                Some(ev) => {
                    if let Some(item) = pick(ev) {
                        return Poll::Ready(Some(item));
                    }
                }
                None => {
                    self.error = run.ended.clone();
                    self.run = None;
                }
            }
        }
    }

    fn stop(&mut self) {
        // Dropping the request releases it.
        self.run = None;
    }
}

macro_rules! watch_type {
    ($(#[$doc:meta])* $name:ident, $item:ty, $pat:pat => $out:expr) => {
        $(#[$doc])*
        pub struct $name(Watch);

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).field("id", &self.0.id()).field("error", &self.0.error).finish()
            }
        }

        impl $name {
            /// The core's request id (`None` if the request was refused).
            pub fn id(&self) -> Option<u64> {
                self.0.id()
            }

            /// The next value; `None` once the watch ended (see
            /// [`Self::error`]), was stopped, or the endpoint ended.
            /// Cancel-safe.
            pub async fn next(&mut self) -> Option<$item> {
                std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
            }

            /// Why the watch ended, if it ended by itself: the request was
            /// refused, failed in the store, or the endpoint ended
            /// (`CoordError::Kv(KvError::Unavailable)`).
            pub fn error(&self) -> Option<&CoordError> {
                self.0.error.as_ref()
            }

            /// Whether the watch ended or was stopped.
            pub fn is_ended(&self) -> bool {
                self.0.run.is_none()
            }

            /// Stops the watch (what is still queued is dropped); doing it
            /// twice is fine. Dropping the handle does the same.
            pub fn stop(&mut self) {
                self.0.stop();
            }
        }

        impl Stream for $name {
            type Item = $item;

            fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<$item>> {
                self.0.poll_map(cx, |ev| match ev {
                    $pat => Some($out),
                    _ => None,
                })
            }
        }
    };
}

watch_type!(
    /// Who leads a group, now and at every change ([`Endpoint::watch_leader`]):
    /// a [`Stream`] of `Option<LeaderInfo>` (`None` while nobody leads).
    /// Values wait in an unbounded queue until taken (one per change).
    /// Dropping it stops the watch; it does not keep the endpoint alive.
    LeaderWatch, Option<LeaderInfo>, CoordEvent::Leader { leader, .. } => leader
);

watch_type!(
    /// A queue's length, now and at every change ([`Endpoint::watch_queue`]):
    /// a [`Stream`] of `usize`. Dropping it stops the watch; it does not
    /// keep the endpoint alive.
    QueueWatch, usize, CoordEvent::QueueLength { len, .. } => len
);

watch_type!(
    /// A service's live instances passing a filter, least loaded first, now
    /// and at every change ([`Endpoint::watch_service`]): a [`Stream`] of
    /// `Vec<Instance>`. Dropping it stops the watch; it does not keep the
    /// endpoint alive.
    ServiceWatch, Vec<Instance>, CoordEvent::Instances { instances, .. } => instances
);

#[cfg(test)]
mod tests {
    use crate::{Endpoint, EndpointConfig};
    use p2pcore::{Config, CoordError, CoordRequest, Identity, KvError, Role};
    use std::time::Duration;

    /// A peer with no server: its requests wait until their timeout.
    async fn lonely_peer() -> Endpoint {
        let config = Config::new(Identity::from_seed(Role::Peer, [62; 32]), "lonely", [62; 32]);
        Endpoint::bind(EndpointConfig::new("127.0.0.1:0".parse().unwrap()), config).await.unwrap()
    }

    #[tokio::test]
    async fn refused_requests_fail_at_once_and_dropped_ones_leave_nothing() {
        let ep = lonely_peer().await;
        assert_eq!(ep.lock("l", 0).await.unwrap_err(), CoordError::NoSession);
        assert!(matches!(ep.pop("", 1, None).await, Err(CoordError::InvalidName { len: 0 })));
        let w = ep.watch_leader("");
        assert!(w.is_ended() && matches!(w.error(), Some(CoordError::InvalidName { .. })));
        let waiting = tokio::time::timeout(Duration::from_millis(20), ep.lock("l", 7));
        assert!(waiting.await.is_err(), "no server: nothing can answer");
        assert!(ep.shared().lock().coord.is_empty(), "the dropped future removed its slot");
        let watch = ep.watch_queue("q");
        assert_eq!(ep.shared().lock().coord.len(), 1);
        drop(watch);
        assert!(ep.shared().lock().coord.is_empty(), "dropping the watch removed its slot");
        ep.close().await;
    }

    #[tokio::test]
    async fn closing_completes_waiting_requests_and_ends_watches() {
        let ep = lonely_peer().await;
        let waiting = tokio::spawn({
            let ep = ep.clone();
            async move { ep.pop("q", 1, Some(Duration::from_secs(600))).await }
        });
        let mut watch = ep.watch_leader("g");
        while ep.shared().lock().coord.len() < 2 {
            tokio::task::yield_now().await;
        }
        ep.close().await;
        let got = tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("completed").unwrap();
        assert_eq!(got, Err(CoordError::Kv(KvError::Unavailable)));
        assert_eq!(watch.next().await, None, "the watch ended with the endpoint");
        assert_eq!(watch.error(), Some(&CoordError::Kv(KvError::Unavailable)));
        assert_eq!(ep.leader("g").await, Err(CoordError::Kv(KvError::Unavailable)), "after the end: at once");
        let _ = CoordRequest::leader("g");
    }
}
