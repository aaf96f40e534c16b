//! The driver: the one task per endpoint that owns the socket and drives
//! the node.
//!
//! One *turn*, under the shared lock, in the order the core's contract asks
//! for (as the mio host's turn): read a bounded batch of datagrams and feed
//! them, run the node's timer when due and the periodic interface re-read,
//! drain transmits (a full socket buffer keeps the transmit and stops the
//! drain until writable), drain events (into the inbox, the watchers and the
//! event stream), read the next deadline. Then, without the lock, wait for
//! the first of: a handle's wake-up, the socket readable (or writable, with
//! a transmit waiting), the deadline. A turn that stopped at its bound
//! yields to the runtime instead of waiting, so a flood neither starves the
//! node's timers nor the runtime's other tasks.

use crate::endpoint::{CloseReason, EndpointConfig, Shared, State};
use crate::inbox::Pushed;
use crate::peer::PathView;
use p2pcore::{CoordEvent, Event, Node, Role};
use p2pcore_mio::DataDir;
use p2pcore_mio::net::{self, Datagram, Out, RecvOutcome, SendOutcome, UdpBatch, UdpSockRef};
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::Notify;

/// What [`crate::Endpoint::bind`] hands the driver.
pub(crate) struct Setup {
    pub(crate) socket: UdpSocket,
    pub(crate) batch: UdpBatch,
    pub(crate) cfg: EndpointConfig,
    pub(crate) local: SocketAddr,
    pub(crate) dual_stack: bool,
    pub(crate) local_addrs: Vec<SocketAddr>,
    /// Kept (locked) until the driver ends.
    pub(crate) dir: Option<DataDir>,
}

struct Io {
    socket: UdpSocket,
    batch: UdpBatch,
    cfg: EndpointConfig,
    local: SocketAddr,
    dual_stack: bool,
    local_addrs: Vec<SocketAddr>,
    next_addr_check: Option<Instant>,
    /// The buffer `poll_transmit` writes into; holds `pending`'s bytes.
    tx: Vec<u8>,
    /// A transmit the kernel had no room for.
    pending: Option<Out>,
    rx: Vec<Datagram>,
    deadline: Option<Instant>,
    closing_since: Option<Instant>,
    /// An event changed the server list or the Master.
    servers_dirty: bool,
    _dir: Option<DataDir>,
}

/// Who to wake once the lock is released (waking while holding it would
/// wake tasks straight into a wait for it).
#[derive(Default)]
struct Wakes {
    merged: bool,
    send_ready: bool,
    routes: Vec<Arc<Notify>>,
}

enum Step {
    Wait { until: Option<Instant>, backlog: bool },
    End(CloseReason),
}

/// Ends the endpoint when the driver's future ends, whether it returned or
/// was dropped (the runtime shut down): every waiter is woken, watchers and
/// the event stream end, sends fail.
struct Ending {
    shared: Arc<Shared>,
    reason: CloseReason,
}

impl Drop for Ending {
    fn drop(&mut self) {
        let (reason, routes) = {
            let mut st = self.shared.lock();
            let reason = st.ended.get_or_insert_with(|| self.reason.clone()).clone();
            st.watchers = None;
            st.paths.clear();
            // Dropped slots complete the store futures (`Unavailable`) and
            // end the watches.
            st.kv.clear();
            st.kv_watches.clear();
            st.coord.clear();
            st.lookups.clear();
            (reason, st.inbox.notifiers())
        };
        tracing::debug!(%reason, "p2pcore endpoint ended");
        self.shared.closed.send_replace(Some(reason));
        self.shared.merged_ready.notify_waiters();
        self.shared.send_ready.notify_waiters();
        for n in routes {
            n.notify_waiters();
        }
    }
}

pub(crate) async fn run(shared: Arc<Shared>, setup: Setup) {
    let mut ending = Ending { shared: shared.clone(), reason: CloseReason::RuntimeShutdown };
    let now = Instant::now();
    let mut io = Io {
        next_addr_check: setup.cfg.host.local_addrs_interval.and_then(|d| now.checked_add(d)),
        socket: setup.socket,
        batch: setup.batch,
        cfg: setup.cfg,
        local: setup.local,
        dual_stack: setup.dual_stack,
        local_addrs: setup.local_addrs,
        tx: Vec::with_capacity(64 * 1024),
        pending: None,
        rx: Vec::with_capacity(256),
        deadline: None,
        closing_since: None,
        servers_dirty: false,
        _dir: setup.dir,
    };
    ending.reason = io.run(&shared).await;
}

impl Io {
    async fn run(&mut self, shared: &Shared) -> CloseReason {
        let mut sleep = pin!(tokio::time::sleep(Duration::ZERO));
        loop {
            let (until, backlog) = match self.turn(shared) {
                Step::End(reason) => return reason,
                Step::Wait { until, backlog } => (until, backlog),
            };
            if backlog {
                tokio::task::yield_now().await;
                continue;
            }
            if let Some(t) = until {
                sleep.as_mut().reset(t.into());
            }
            let pending = self.pending.is_some();
            tokio::select! {
                biased;
                () = shared.wake.notified() => {}
                ready = self.socket.readable() => {
                    if let Err(e) = ready {
                        return CloseReason::Failed(Arc::new(e));
                    }
                }
                ready = self.socket.writable(), if pending => {
                    if let Err(e) = ready {
                        return CloseReason::Failed(Arc::new(e));
                    }
                }
                () = &mut sleep, if until.is_some() => {}
            }
        }
    }

    /// One turn (see the module docs).
    fn turn(&mut self, shared: &Shared) -> Step {
        let mut wakes = Wakes::default();
        let step = {
            let mut guard = shared.lock();
            let st = &mut *guard;
            st.stats.turns += 1;
            let now = Instant::now();
            if self.closing_since.is_none() && (st.close_requested || st.dropped) {
                self.closing_since = Some(now);
                st.node.close(now);
            }
            match self.receive(st) {
                Ok(backlog) => {
                    let now = Instant::now();
                    if self.deadline.is_some_and(|d| d <= now) {
                        st.node.handle_timeout(now);
                    }
                    if self.next_addr_check.is_some_and(|t| t <= now) {
                        self.check_local_addrs(st, now);
                    }
                    self.drain(st, &mut wakes);
                    self.update_watchers(st);
                    self.next_step(st, backlog, Instant::now())
                }
                Err(e) => Step::End(CloseReason::Failed(Arc::new(e))),
            }
        };
        if wakes.merged {
            shared.merged_ready.notify_waiters();
        }
        if wakes.send_ready {
            shared.send_ready.notify_waiters();
        }
        for n in wakes.routes {
            n.notify_waiters();
        }
        step
    }

    fn next_step(&self, st: &State, backlog: bool, now: Instant) -> Step {
        if let Some(since) = self.closing_since
            && (st.node.is_closed() || now.saturating_duration_since(since) >= self.cfg.host.close_timeout)
        {
            let reason = if st.close_requested { CloseReason::Closed } else { CloseReason::Dropped };
            return Step::End(reason);
        }
        // With a transmit waiting for room, the deadline read before it is
        // stale: writability ends the wait.
        let deadline = if self.pending.is_some() { None } else { self.deadline };
        let close_by = self.closing_since.and_then(|t| t.checked_add(self.cfg.host.close_timeout));
        let until = [deadline, self.next_addr_check, close_by].into_iter().flatten().min();
        Step::Wait { until, backlog }
    }

    /// Reads until the socket is empty or the turn's bound is reached;
    /// returns whether the bound was (datagrams may be waiting).
    fn receive(&mut self, st: &mut State) -> io::Result<bool> {
        let start = Instant::now();
        let mut count = 0;
        loop {
            if count >= self.cfg.host.max_turn_datagrams || start.elapsed() >= self.cfg.host.max_turn_time {
                st.stats.bounded_turns += 1;
                return Ok(true);
            }
            self.rx.clear();
            let (socket, batch, rx) = (&self.socket, &mut self.batch, &mut self.rx);
            match RecvOutcome::of(
                socket.try_io(Interest::READABLE, || batch.recv(UdpSockRef::from(socket), rx)),
            ) {
                RecvOutcome::Received(n) => {
                    st.stats.recv_calls += 1;
                    st.stats.datagrams_received += n as u64;
                    count += n;
                    let now = Instant::now();
                    for d in self.rx.drain(..) {
                        st.node.handle_datagram(now, d.remote, d.local, d.ecn, d.data);
                    }
                }
                RecvOutcome::Drained => return Ok(false),
                RecvOutcome::Retry => {}
                RecvOutcome::Skipped(_) => st.stats.recv_errors += 1,
                RecvOutcome::Failed(e) => return Err(e),
            }
        }
    }

    fn send(&mut self, st: &mut State, out: &Out) -> bool {
        let (socket, batch, tx) = (&self.socket, &self.batch, &self.tx);
        let result = socket.try_io(Interest::WRITABLE, || batch.send(UdpSockRef::from(socket), out, tx));
        match SendOutcome::of(result) {
            SendOutcome::Sent => st.stats.send_calls += 1,
            SendOutcome::WouldBlock => {
                st.stats.send_blocked += 1;
                return false;
            }
            SendOutcome::Dropped(e) => {
                st.stats.send_errors += 1;
                tracing::debug!(error = %e, "a datagram was refused by the kernel and dropped");
            }
        }
        true
    }

    /// Drains transmits, then events (into the inbox, watchers and stream),
    /// again until a pass has no event (event handling issues commands:
    /// pauses), then reads the deadline. A transmit left waiting for the
    /// socket stops it all: the core's drain order.
    fn drain(&mut self, st: &mut State, wakes: &mut Wakes) {
        if let Some(out) = self.pending {
            if !self.send(st, &out) {
                return;
            }
            self.pending = None;
        }
        loop {
            loop {
                let max = self.batch.max_segments();
                let Some(t) = st.node.poll_transmit(max, &mut self.tx) else { break };
                let out = Out::from(t);
                if !self.send(st, &out) {
                    self.pending = Some(out);
                    return;
                }
            }
            let mut any = false;
            while let Some(e) = st.node.poll_event() {
                any = true;
                self.dispatch(st, e, wakes);
            }
            if !any {
                break;
            }
        }
        self.deadline = st.node.poll_timeout();
    }

    fn dispatch(&mut self, st: &mut State, e: Event, wakes: &mut Wakes) {
        match &e {
            Event::MessageReceived { from, channel, bytes, reliability } => {
                let m = crate::endpoint::Message {
                    from: *from,
                    channel: *channel,
                    bytes: bytes.clone(),
                    reliability: *reliability,
                };
                let (pushed, pause) = st.inbox.push(m);
                match pushed {
                    Pushed::Merged => wakes.merged = true,
                    Pushed::Routed(n) => {
                        if !wakes.routes.iter().any(|w| Arc::ptr_eq(w, &n)) {
                            wakes.routes.push(n);
                        }
                    }
                    Pushed::Dropped => st.stats.messages_dropped += 1,
                }
                if pause {
                    st.stats.receive_pauses += 1;
                    st.node.pause_receiving(Instant::now(), *from, true);
                }
            }
            Event::SendReady { .. } => wakes.send_ready = true,
            Event::KvDone { id, result } => {
                // No slot: the future was dropped (the event stream still
                // carries the answer).
                if let Some(slot) = st.kv.remove(id) {
                    let _ = slot.send(result.clone());
                }
            }
            Event::LookupDone { query, peers } => {
                if let Some(slot) = st.lookups.remove(query) {
                    let _ = slot.send(peers.clone());
                }
            }
            Event::KvWatch { id, events } => {
                if let Some(slot) = st.kv_watches.get(id)
                    && slot.send(Ok(events.clone())).is_err()
                {
                    st.kv_watches.remove(id);
                }
            }
            Event::KvWatchEnded { id, error } => {
                // The error is the watch's last item; the dropped sender
                // ends it.
                if let Some(slot) = st.kv_watches.remove(id) {
                    let _ = slot.send(Err(error.clone()));
                }
            }
            Event::Coord(ev) => {
                // No slot: nobody follows the request any more (the event
                // stream still carries it).
                let last = matches!(ev, CoordEvent::Released { .. } | CoordEvent::Ended { .. });
                let id = ev.id();
                if let Some(slot) = st.coord.get(&id)
                    && (slot.send(ev.clone()).is_err() || last)
                {
                    // Its last event (the dropped sender then ends the
                    // receiver after it), or a receiver gone.
                    st.coord.remove(&id);
                }
            }
            Event::PathChanged { peer, path } => {
                if let Some(tx) = st.paths.get(peer) {
                    if tx.receiver_count() == 0 {
                        st.paths.remove(peer);
                    } else {
                        let view = path.map(|kind| PathView::new(kind, rtt(&st.node, peer)));
                        tx.send_replace(view);
                    }
                }
            }
            Event::PeerOffline { id, .. } => {
                // Ends the peer's path watchers.
                st.paths.remove(id);
            }
            Event::MasterChanged { .. } | Event::ServerUp { .. } | Event::ServerDown { .. } => {
                self.servers_dirty = true;
            }
            Event::Connected { id, .. } | Event::Disconnected { id, .. } if id.role() == Role::Server => {
                self.servers_dirty = true;
            }
            _ => {}
        }
        if let Some(w) = &st.watchers {
            // No reader: the event is simply not kept.
            let _ = w.events.send(e);
        }
    }

    fn update_watchers(&mut self, st: &mut State) {
        let Some(w) = &st.watchers else { return };
        let up = st.node.network_up();
        set(&w.network, up);
        set(&w.online, up && st.node.directory_synced());
        if std::mem::take(&mut self.servers_dirty) {
            set(&w.servers, st.node.servers());
            set(&w.master, crate::endpoint::MasterView::of(&st.node));
        }
    }

    fn check_local_addrs(&mut self, st: &mut State, now: Instant) {
        self.next_addr_check = self.cfg.host.local_addrs_interval.and_then(|d| now.checked_add(d));
        let addrs = net::local_addrs(self.local, self.dual_stack);
        if addrs != self.local_addrs {
            tracing::info!(?addrs, "interface addresses changed");
            st.stats.local_addr_changes += 1;
            self.local_addrs.clone_from(&addrs);
            st.node.set_local_addrs(now, addrs);
        }
    }
}

/// Replaces a watched value only when it changed, so receivers see real
/// changes only.
fn set<T: PartialEq>(tx: &tokio::sync::watch::Sender<T>, value: T) {
    tx.send_if_modified(|v| {
        if *v == value {
            false
        } else {
            *v = value;
            true
        }
    });
}

pub(crate) fn rtt(node: &Node, peer: &p2pcore::NodeId) -> Option<Duration> {
    node.links().find(|l| l.id == *peer).map(|l| l.rtt)
}
