//! p2pcore's side: real nodes on the mio host over loopback, each serviced
//! on a thread of its own with its application logic in the same loop (the
//! harness the mio driver's own `loopback` bench uses, included below).

#[path = "../../driver-mio/benches/common/mod.rs"]
pub(crate) mod common;

use crate::measure::{Forwarding, Rate, Throughput, process_cpu, thread_cpu};
use bytes::Bytes;
use common::{App, Idle, Node, host, host_with};
use p2pcore::{Config, ConnectPolicy, Event, Identity, NodeId, PathKind, Reliability, Role};
use p2pcore_mio::{Host, HostConfig, os_seed};
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// Reliable throughput of `size`-byte messages on one channel, direct path.
pub(crate) fn throughput(size: usize, total: usize) -> Throughput {
    let cpu0 = process_cpu();
    let t = common::transfer_placed(true, total, size, false, crate::measure::pin_thread);
    // The CPU of the whole transfer, setup included as for the others
    // (the shared harness's own figure counts in 10 ms ticks).
    let cpu = process_cpu().saturating_sub(cpu0);
    Throughput { mb_per_s: t.mb_per_s, cpu_ms_per_100mb: cpu.as_secs_f64() * 1e3 * 100e6 / total as f64 }
}

/// Round trips of `size`-byte reliable messages, direct or relayed.
pub(crate) fn round_trips(count: usize, size: usize, relayed: bool) -> Vec<Duration> {
    common::round_trip_samples(true, count, size, relayed)
}

/// Whether `host`'s path to `to` is the wanted kind; while it is not and
/// no connection is up, nudges one open with a reliable message on channel 9.
fn path_ready(host: &mut Host, to: NodeId, relayed: bool) -> bool {
    let path = host.node().link_table().into_iter().find(|l| l.id == to).map(|l| l.path);
    let ready = match path {
        Some(PathKind::Direct) => !relayed,
        Some(PathKind::Relayed { .. }) => relayed,
        _ => false,
    };
    if !ready && host.node().peers().iter().any(|p| p.id == to) && !host.node().is_connected(&to) {
        let _ = host.send(to, 9, &b"go"[..], Reliability::Reliable);
    }
    ready
}

/// Sends unreliable messages to `to` on channel 3, 64 per turn, for a set
/// time once the wanted path is up. `size` 0 means the largest that fits.
struct Blaster {
    to: NodeId,
    relayed: bool,
    size: usize,
    seconds: f64,
    payload: Option<Bytes>,
    until: Option<Instant>,
    sent: Arc<AtomicU64>,
    started: mpsc::Sender<Instant>,
    done: Arc<AtomicBool>,
}

impl App for Blaster {
    fn step(&mut self, host: &mut Host, events: &mut Vec<Event>) -> bool {
        events.clear();
        let Some(until) = self.until else {
            if path_ready(host, self.to, self.relayed) {
                let size = match self.size {
                    0 => host.node_mut().max_unreliable_size(&self.to).unwrap_or(1000),
                    n => n,
                };
                self.payload = Some(Bytes::from(vec![0x5a; size]));
                let now = Instant::now();
                self.until = Some(now + Duration::from_secs_f64(self.seconds));
                let _ = self.started.send(now);
            }
            return true;
        };
        if Instant::now() >= until {
            self.done.store(true, Ordering::Relaxed);
            return true;
        }
        let Some(payload) = &self.payload else { return true };
        let mut sent = 0;
        for _ in 0..64 {
            if host.send(self.to, 3, payload.clone(), Reliability::Unreliable).is_ok() {
                sent += 1;
            }
        }
        self.sent.fetch_add(sent, Ordering::Relaxed);
        true
    }
}

/// Counts messages on channel 3.
struct Counter(Arc<AtomicU64>);

impl App for Counter {
    fn step(&mut self, _: &mut Host, events: &mut Vec<Event>) -> bool {
        let n = events.drain(..).filter(|e| matches!(e, Event::MessageReceived { channel: 3, .. })).count();
        self.0.fetch_add(n as u64, Ordering::Relaxed);
        true
    }
}

/// The server's relay counters and its thread's CPU, as of its last turn.
#[derive(Default)]
struct ServerProbe {
    relayed: AtomicU64,
    relayed_bytes: AtomicU64,
    cpu_ns: AtomicU64,
}

impl ServerProbe {
    fn snapshot(&self) -> (u64, u64, Duration) {
        (
            self.relayed.load(Ordering::Relaxed),
            self.relayed_bytes.load(Ordering::Relaxed),
            Duration::from_nanos(self.cpu_ns.load(Ordering::Relaxed)),
        )
    }
}

struct ServerApp(Arc<ServerProbe>);

impl App for ServerApp {
    fn step(&mut self, host: &mut Host, events: &mut Vec<Event>) -> bool {
        events.clear();
        let stats = host.node().stats();
        self.0.relayed.store(stats.relayed_datagrams, Ordering::Relaxed);
        self.0.relayed_bytes.store(stats.relayed_bytes, Ordering::Relaxed);
        self.0.cpu_ns.store(thread_cpu().as_nanos() as u64, Ordering::Relaxed);
        true
    }
}

/// A blast of unreliable messages from one peer to another for `seconds`:
/// `size`-byte messages on a direct path, or (`relayed`) the largest that
/// fit through the server, whose forwarding is measured too.
pub(crate) fn blast(seconds: f64, size: usize, relayed: bool) -> (Rate, Option<Forwarding>) {
    let probe = Arc::new(ServerProbe::default());
    let server = host(Role::Server, "s", true, &[], true);
    let addr = server.local_addr();
    let s = Node::start(server, ServerApp(probe.clone()), Duration::from_millis(5));
    let a = host(Role::Peer, "a", true, &[addr], !relayed);
    let b = host(Role::Peer, "b", true, &[addr], !relayed);
    let received = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (started_tx, started) = mpsc::channel();
    let b_id = b.id();
    let rb = Node::start(b, Counter(received.clone()), Duration::from_millis(5));
    let blaster = Blaster {
        to: b_id,
        relayed,
        size,
        seconds,
        payload: None,
        until: None,
        sent: sent.clone(),
        started: started_tx,
        done: done.clone(),
    };
    // The sender never waits in its poll: it always has more to send (as
    // the other systems' senders, which never block either).
    let ra = Node::start(a, blaster, Duration::ZERO);
    let start = started.recv_timeout(Duration::from_secs(30)).expect("the wanted path came up");
    let (r0, b0, c0) = probe.snapshot();
    let received0 = received.load(Ordering::Relaxed);
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Stragglers in socket buffers and queues.
    std::thread::sleep(Duration::from_millis(200));
    let (r1, b1, c1) = probe.snapshot();
    let rate = Rate {
        sent: sent.load(Ordering::Relaxed),
        received: received.load(Ordering::Relaxed) - received0,
        seconds: elapsed,
    };
    ra.stop();
    rb.stop();
    s.stop();
    let forwarding = relayed.then(|| Forwarding {
        forwarded: r1 - r0,
        bytes: b1 - b0,
        seconds: elapsed,
        cpu: c1.saturating_sub(c0),
    });
    (rate, forwarding)
}

/// Sends one reliable message on channel 4 to `to` as soon as the directory
/// lists it, and reports when its path to `to` first becomes direct.
struct Starter {
    to: NodeId,
    t0: Instant,
    sent: bool,
    direct: Option<mpsc::Sender<Duration>>,
}

impl App for Starter {
    fn step(&mut self, host: &mut Host, events: &mut Vec<Event>) -> bool {
        events.clear();
        if !self.sent && host.node().peers().iter().any(|p| p.id == self.to) {
            self.sent = host.send(self.to, 4, &b"hello"[..], Reliability::Reliable).is_ok();
        }
        if self.direct.is_some()
            && host.node().link_table().iter().any(|l| l.id == self.to && l.path == PathKind::Direct)
            && let Some(tx) = self.direct.take()
        {
            let _ = tx.send(self.t0.elapsed());
        }
        true
    }
}

/// Reports when the first message on channel 4 arrived.
struct FirstMessage(Option<mpsc::Sender<Instant>>);

impl App for FirstMessage {
    fn step(&mut self, _: &mut Host, events: &mut Vec<Event>) -> bool {
        if events.drain(..).any(|e| matches!(e, Event::MessageReceived { channel: 4, .. }))
            && let Some(tx) = self.0.take()
        {
            let _ = tx.send(Instant::now());
        }
        true
    }
}

/// From a peer's start (its `Host::bind`) to its first message delivered to
/// another peer, and to a direct path to it, with a server and the other
/// peer already up. One sample per run.
pub(crate) fn startup(runs: usize) -> (Vec<Duration>, Vec<Duration>) {
    let (mut first, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let server = host(Role::Server, "s", true, &[], true);
        let addr = server.local_addr();
        let s = Node::start(server, Idle, Duration::from_millis(5));
        let b = host(Role::Peer, "b", true, &[addr], true);
        let b_id = b.id();
        let (got_tx, got) = mpsc::channel();
        let rb = Node::start(b, FirstMessage(Some(got_tx)), Duration::from_millis(50));
        // Let the server and the other peer settle, then start the clock.
        std::thread::sleep(Duration::from_millis(100));
        let (direct_tx, direct_rx) = mpsc::channel();
        let t0 = Instant::now();
        let a = host(Role::Peer, "a", true, &[addr], true);
        let ra = Node::start(
            a,
            Starter { to: b_id, t0, sent: false, direct: Some(direct_tx) },
            Duration::from_millis(50),
        );
        let at = got.recv_timeout(Duration::from_secs(30)).expect("first message delivered");
        first.push(at.duration_since(t0));
        direct.push(direct_rx.recv_timeout(Duration::from_secs(30)).expect("a direct path"));
        ra.stop();
        rb.stop();
        s.stop();
    }
    (first, direct)
}

/// A p2pcore server in a child process (this binary's `serve-child`), so
/// its resident memory is its own.
struct ChildServer {
    child: Child,
    addr: SocketAddr,
}

impl ChildServer {
    fn start() -> io::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("serve-child")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| io::Error::other("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr =
            line.trim().parse().map_err(|e| io::Error::other(format!("child printed {line:?}: {e}")))?;
        Ok(Self { child, addr })
    }

    fn rss(&self) -> io::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| io::Error::other("no VmRSS"))
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        // Closing its stdin (dropped with `child.stdin`) ends it; kill in case.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `serve-child`: a server on 127.0.0.1 that prints its address, then runs
/// until its stdin closes. Every bench peer comes from 127.0.0.1, so the
/// per-address handshake cap is raised to let them join at once.
pub(crate) fn serve_child() -> io::Result<()> {
    let seed = os_seed().map_err(io::Error::other)?;
    let mut config = Config::new(
        Identity::from_seed(Role::Server, seed),
        "bench-server",
        os_seed().map_err(io::Error::other)?,
    );
    config.limits.max_handshakes_per_ip = 4096;
    config.limits.max_handshakes = 4096;
    let mut host = Host::bind(HostConfig::new("127.0.0.1:0".parse().map_err(io::Error::other)?), config)
        .map_err(io::Error::other)?;
    {
        use std::io::Write;
        let mut out = io::stdout().lock();
        writeln!(out, "{}", host.local_addr())?;
        out.flush()?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
            stop.store(true, Ordering::Relaxed);
        });
    }
    let mut events = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        host.service(Duration::from_millis(50)).map_err(io::Error::other)?;
        host.drain_events(&mut events);
        events.clear();
    }
    let _ = host.close();
    Ok(())
}

/// Many peers on one thread: each host's poll descriptor is registered in
/// one outer poll, and a host gets a turn when it is readable or due.
struct Swarm {
    poll: mio::Poll,
    hosts: Vec<Host>,
    events: Vec<Event>,
}

impl Swarm {
    fn new() -> io::Result<Self> {
        Ok(Self { poll: mio::Poll::new()?, hosts: Vec::new(), events: Vec::new() })
    }

    fn add(&mut self, server: SocketAddr) -> io::Result<()> {
        // On-demand peer connections, the setting for large networks: the
        // default eager mesh would have the swarm dial n²/2 connections
        // among its own peers, which is not what is measured here.
        let name = format!("p{}", self.hosts.len());
        let mut h = host_with(Role::Peer, &name, true, &[server], true, |c| {
            c.peer.connect = ConnectPolicy::OnDemand;
        });
        let fd = h.waitable();
        self.poll.registry().register(
            &mut mio::unix::SourceFd(&fd),
            mio::Token(self.hosts.len()),
            mio::Interest::READABLE,
        )?;
        self.hosts.push(h);
        Ok(())
    }

    fn turn(&mut self, i: usize) -> io::Result<()> {
        let h = &mut self.hosts[i];
        h.service(Duration::ZERO).map_err(io::Error::other)?;
        h.drain_events(&mut self.events);
        self.events.clear();
        Ok(())
    }

    /// Services every host for up to `d`.
    fn run_for(&mut self, d: Duration) -> io::Result<()> {
        let end = Instant::now() + d;
        let mut ready = mio::Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            let next = self.hosts.iter().filter_map(Host::next_turn).min().unwrap_or(end).min(end);
            self.poll.poll(&mut ready, Some(next.saturating_duration_since(now)))?;
            for e in &ready {
                self.turn(e.token().0)?;
            }
            let now = Instant::now();
            for i in 0..self.hosts.len() {
                if self.hosts[i].next_turn().is_some_and(|t| t <= now) {
                    self.turn(i)?;
                }
            }
        }
    }

    /// How many hosts are linked to their server and list all the others.
    fn settled(&self) -> usize {
        let n = self.hosts.len();
        self.hosts.iter().filter(|h| h.node().peers().len() + 1 >= n && h.node().network_up()).count()
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            h.start_close();
        }
    }
}

/// The server's resident memory with no peer, then with each of `counts`
/// peers connected and every peer listing all the others.
pub(crate) fn server_memory(counts: &[usize]) -> io::Result<(u64, Vec<(usize, u64)>)> {
    let server = ChildServer::start()?;
    std::thread::sleep(Duration::from_millis(300));
    let base = server.rss()?;
    let mut swarm = Swarm::new()?;
    let mut out = Vec::new();
    for &n in counts {
        while swarm.hosts.len() < n {
            swarm.add(server.addr)?;
            // Joins in small waves, as real peers arrive.
            if swarm.hosts.len() % 50 == 0 {
                swarm.run_for(Duration::from_millis(20))?;
            }
        }
        let start = Instant::now();
        let mut said = start;
        loop {
            swarm.run_for(Duration::from_millis(250))?;
            let settled = swarm.settled();
            if settled == n {
                break;
            }
            if said.elapsed() > Duration::from_secs(10) {
                said = Instant::now();
                let up = swarm.hosts.iter().filter(|h| h.node().network_up()).count();
                let known: usize = swarm.hosts.iter().map(|h| h.node().peers().len()).sum();
                let links: usize = swarm.hosts.iter().map(|h| h.node().links().count()).sum();
                eprintln!(
                    "   {settled} of {n} peers see all the others after {:.0} s ({up} up, {} known on average, {links} links)",
                    start.elapsed().as_secs_f64(),
                    known / n.max(1)
                );
            }
            if start.elapsed() > Duration::from_secs(300) {
                return Err(io::Error::other(format!(
                    "only {settled} of {n} peers saw all the others in 300 s"
                )));
            }
        }
        // Let the server finish what the last joins started.
        swarm.run_for(Duration::from_millis(500))?;
        out.push((n, server.rss()?));
    }
    Ok((base, out))
}
