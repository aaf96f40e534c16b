//! The mio host's loopback measurements, shared by this crate's
//! `loopback` bench and the tokio driver's `tokio_vs_mio` bench (which
//! includes this file), so both measure the mio side the same way.
#![allow(dead_code)]

use bytes::Bytes;
use p2pcore::{Config, Event, Identity, NodeId, PathKind, Reliability, Role, SendError};
use p2pcore_mio::{Host, HostConfig, os_seed};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// CPU time of the calling thread (ns on CPU, from the scheduler).
pub(crate) fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// CPU time of the whole process (user + system, clock ticks of 10 ms).
pub(crate) fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return Duration::ZERO };
    // Fields after the command name (which may hold spaces) start at ")".
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// What a node's thread does between turns.
pub(crate) trait App: Send + 'static {
    /// Called after every turn with the events it produced; `false` ends
    /// the thread.
    fn step(&mut self, host: &mut Host, events: &mut Vec<Event>) -> bool;
}

pub(crate) struct Idle;
impl App for Idle {
    fn step(&mut self, _: &mut Host, events: &mut Vec<Event>) -> bool {
        events.clear();
        true
    }
}

/// A host serviced on a thread of its own, with an [`App`] in its loop.
pub(crate) struct Node {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Duration>>,
    pub(crate) id: NodeId,
}

impl Node {
    pub(crate) fn start(host: Host, app: impl App, wait: Duration) -> Self {
        Self::start_with(host, app, wait, || {})
    }

    /// [`Node::start`], running `first` on the new thread before anything
    /// else (to pin it to a CPU, say).
    pub(crate) fn start_with(
        mut host: Host,
        mut app: impl App,
        wait: Duration,
        first: impl FnOnce() + Send + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let id = host.id();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                first();
                let cpu = thread_cpu();
                let mut events = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    host.service(wait).expect("service");
                    host.drain_events(&mut events);
                    if !app.step(&mut host, &mut events) {
                        break;
                    }
                }
                let used = thread_cpu().saturating_sub(cpu);
                let _ = host.close();
                used
            })
        };
        Self { stop, thread: Some(thread), id }
    }

    /// Stops the thread; returns the CPU time it used.
    pub(crate) fn stop(mut self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map_or(Duration::ZERO, |t| t.join().expect("node thread"))
    }
}

pub(crate) fn host(role: Role, name: &str, gso: bool, servers: &[SocketAddr], hole_punching: bool) -> Host {
    host_with(role, name, gso, servers, hole_punching, |_| {})
}

/// [`host`] with further settings.
pub(crate) fn host_with(
    role: Role,
    name: &str,
    gso: bool,
    servers: &[SocketAddr],
    hole_punching: bool,
    tweak: impl FnOnce(&mut Config),
) -> Host {
    let mut config = Config::new(Identity::from_seed(role, os_seed().unwrap()), name, os_seed().unwrap());
    config.bootstrap = servers.to_vec();
    config.peer.hole_punching = hole_punching;
    tweak(&mut config);
    let mut host_config = HostConfig::new("127.0.0.1:0".parse().unwrap());
    host_config.gso = gso;
    Host::bind(host_config, config).expect("bind")
}

/// Sends `total` bytes in `size`-byte reliable messages to `to`, keeping the
/// send buffer full; then idles.
struct Sender {
    to: NodeId,
    size: usize,
    left: usize,
    payload: Bytes,
    wanted_path: Option<PathKind>,
    started: bool,
}

impl App for Sender {
    fn step(&mut self, host: &mut Host, events: &mut Vec<Event>) -> bool {
        events.clear();
        if !self.started {
            // Wait for the wanted path before the clock starts.
            let path = host.node().link_table().into_iter().find(|l| l.id == self.to).map(|l| l.path);
            let ready = matches!(
                (&self.wanted_path, path),
                (Some(PathKind::Direct), Some(PathKind::Direct))
                    | (Some(PathKind::Relayed { .. }), Some(PathKind::Relayed { .. }))
                    | (None, _)
            );
            if !ready {
                if host.node().peers().iter().any(|p| p.id == self.to) {
                    // Opens the connection (a reliable "go" message, not counted).
                    if host.node().buffered(&self.to) == 0 && !host.node().is_connected(&self.to) {
                        let _ = host.send(self.to, 9, &b"go"[..], Reliability::Reliable);
                    }
                }
                return true;
            }
            self.started = true;
        }
        while self.left > 0 {
            match host.send(self.to, 1, self.payload.clone(), Reliability::Reliable) {
                Ok(_) => self.left = self.left.saturating_sub(self.size),
                Err(SendError::BufferFull { .. }) => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        true
    }
}

/// Counts bytes on channel 1; reports the time of the first and the last.
struct Receiver {
    total: usize,
    got: usize,
    first: Option<Instant>,
    done: mpsc::Sender<(Instant, Instant)>,
}

impl App for Receiver {
    fn step(&mut self, _: &mut Host, events: &mut Vec<Event>) -> bool {
        for e in events.drain(..) {
            if let Event::MessageReceived { channel: 1, bytes, .. } = e {
                let now = Instant::now();
                self.first.get_or_insert(now);
                self.got += bytes.len();
                if self.got >= self.total {
                    let _ = self.done.send((self.first.unwrap_or(now), now));
                    self.got = 0; // report once
                    self.total = usize::MAX;
                }
            }
        }
        true
    }
}

pub(crate) struct Transfer {
    pub(crate) mb_per_s: f64,
    pub(crate) cpu_per_100mb: Duration,
    pub(crate) relayed: u64,
    pub(crate) server_cpu: Duration,
    pub(crate) seconds: f64,
}

pub(crate) fn transfer(gso: bool, total: usize, size: usize, relayed: bool) -> Transfer {
    transfer_placed(gso, total, size, relayed, |_| {})
}

/// [`transfer`], calling `place` on the sender's thread with 0 and on the
/// receiver's with 1 as they start (the benchmark suite pins them to CPUs).
pub(crate) fn transfer_placed(
    gso: bool,
    total: usize,
    size: usize,
    relayed: bool,
    place: fn(usize),
) -> Transfer {
    let server = host(Role::Server, "s", gso, &[], true);
    let server_addr = server.local_addr();
    let server_counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    struct ServerApp(Arc<std::sync::atomic::AtomicU64>);
    impl App for ServerApp {
        fn step(&mut self, host: &mut Host, events: &mut Vec<Event>) -> bool {
            events.clear();
            self.0.store(host.node().stats().relayed_datagrams, Ordering::Relaxed);
            true
        }
    }
    let s = Node::start(server, ServerApp(server_counter.clone()), Duration::from_millis(5));
    let a = host(Role::Peer, "a", gso, &[server_addr], !relayed);
    let b = host(Role::Peer, "b", gso, &[server_addr], !relayed);
    let b_id = b.id();
    let (done_tx, done) = mpsc::channel();
    let rb = Node::start_with(
        b,
        Receiver { total, got: 0, first: None, done: done_tx },
        Duration::from_millis(5),
        move || place(1),
    );
    let wanted = if relayed { PathKind::Relayed { via: s.id } } else { PathKind::Direct };
    let payload = Bytes::from(vec![0x5a; size]);
    let cpu0 = process_cpu();
    let relayed0 = server_counter.load(Ordering::Relaxed);
    let ra = Node::start_with(
        a,
        Sender { to: b_id, size, left: total, payload, wanted_path: Some(wanted), started: false },
        Duration::from_millis(1),
        move || place(0),
    );
    let (first, last) = done.recv_timeout(Duration::from_secs(300)).expect("transfer finished");
    let cpu = process_cpu().saturating_sub(cpu0);
    let relayed_count = server_counter.load(Ordering::Relaxed) - relayed0;
    ra.stop();
    rb.stop();
    let server_cpu = s.stop();
    let seconds = last.duration_since(first).as_secs_f64().max(1e-9);
    Transfer {
        mb_per_s: total as f64 / 1e6 / seconds,
        cpu_per_100mb: cpu.mul_f64(100e6 / total as f64),
        relayed: relayed_count,
        server_cpu,
        seconds,
    }
}

/// Echoes every message on channel 2 back to its sender at once.
struct Echo;
impl App for Echo {
    fn step(&mut self, host: &mut Host, events: &mut Vec<Event>) -> bool {
        for e in events.drain(..) {
            if let Event::MessageReceived { from, channel: 2, bytes, .. } = e {
                let _ = host.send(from, 2, bytes, Reliability::Reliable);
                host.flush();
            }
        }
        true
    }
}

/// Sends `size`-byte messages one at a time, timing each round trip, once
/// the path to `to` is the one wanted.
struct Pinger {
    to: NodeId,
    left: usize,
    size: usize,
    sent: Option<Instant>,
    rtts: Vec<Duration>,
    done: mpsc::Sender<Vec<Duration>>,
    relayed: bool,
    ready: bool,
}

impl App for Pinger {
    fn step(&mut self, host: &mut Host, events: &mut Vec<Event>) -> bool {
        let mut back = false;
        for e in events.drain(..) {
            if let Event::MessageReceived { channel: 2, .. } = e {
                back = true;
            }
        }
        if !self.ready {
            let path = host.node().link_table().into_iter().find(|l| l.id == self.to).map(|l| l.path);
            self.ready = match path {
                Some(PathKind::Direct) => !self.relayed,
                Some(PathKind::Relayed { .. }) => self.relayed,
                _ => false,
            };
            if !self.ready
                && host.node().peers().iter().any(|p| p.id == self.to)
                && !host.node().is_connected(&self.to)
            {
                let _ = host.send(self.to, 9, &b"go"[..], Reliability::Reliable);
            }
            return true;
        }
        if back && let Some(t) = self.sent.take() {
            self.rtts.push(t.elapsed());
            self.left -= 1;
        }
        if self.left == 0 {
            let _ = self.done.send(std::mem::take(&mut self.rtts));
            return false;
        }
        if self.sent.is_none() {
            self.sent = Some(Instant::now());
            host.send(self.to, 2, vec![7u8; self.size], Reliability::Reliable).expect("ping");
            host.flush();
        }
        true
    }
}

/// `count` round trips of `size`-byte reliable messages between two peers
/// on a direct path (or relayed through their server), one at a time.
/// Sorted samples.
pub(crate) fn round_trip_samples(gso: bool, count: usize, size: usize, relayed: bool) -> Vec<Duration> {
    let server = host(Role::Server, "s", gso, &[], true);
    let addr = server.local_addr();
    let s = Node::start(server, Idle, Duration::from_millis(5));
    let a = host(Role::Peer, "a", gso, &[addr], !relayed);
    let b = host(Role::Peer, "b", gso, &[addr], !relayed);
    let b_id = b.id();
    // Both ends wait in the poll (the wait is a bound, not a tick): a
    // message wakes them at once.
    let rb = Node::start(b, Echo, Duration::from_millis(50));
    let (tx, rx) = mpsc::channel();
    let pinger =
        Pinger { to: b_id, left: count, size, sent: None, rtts: Vec::new(), done: tx, relayed, ready: false };
    let ra = Node::start(a, pinger, Duration::from_millis(50));
    let mut rtts = rx.recv_timeout(Duration::from_secs(120)).expect("round trips");
    ra.stop();
    rb.stop();
    s.stop();
    rtts.sort();
    rtts
}

/// p50 and p99 of 64-byte round trips on a direct path.
pub(crate) fn round_trips(gso: bool, count: usize) -> (Duration, Duration) {
    let rtts = round_trip_samples(gso, count, 64, false);
    let pct = |p: f64| rtts[((rtts.len() as f64 - 1.0) * p) as usize];
    (pct(0.5), pct(0.99))
}
