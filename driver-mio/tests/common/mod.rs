//! Test support: hosts on real loopback sockets, each driven by
//! `Host::service` on a thread of the test's (so a test can *kill* one —
//! drop it without closing, as a crash would — which the library's own
//! thread mode rightly never does), and waits on conditions with a
//! generous wall-clock cap.

#![allow(dead_code, unreachable_pub)]

use p2pcore::{Config, Event, Identity, NodeId, PathKind, Role};
use p2pcore_mio::{DataDir, Host, HostConfig};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The cap on every wait: far above what loopback needs, so only a real
/// failure hits it.
pub const LIMIT: Duration = Duration::from_secs(60);

type Call = Box<dyn FnOnce(&mut Host) + Send>;

/// A host on a thread of the test's.
pub struct Runner {
    commands: Sender<Call>,
    kill: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Every event the host produced, in order.
    pub events: Arc<Mutex<Vec<Event>>>,
    pub id: NodeId,
    pub addr: SocketAddr,
}

impl Runner {
    pub fn start(mut host: Host) -> Self {
        let (commands, rx) = mpsc::channel::<Call>();
        let kill = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::new()));
        let (id, addr) = (host.id(), host.local_addr());
        let thread = {
            let (kill, events) = (kill.clone(), events.clone());
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while !kill.load(Ordering::Acquire) && !host.is_closed() {
                    while let Ok(call) = rx.try_recv() {
                        call(&mut host);
                    }
                    host.service(Duration::from_millis(5)).expect("service");
                    host.drain_events(&mut got);
                    events.lock().unwrap().append(&mut got);
                }
                // Dropped here: a killed host sends nothing more.
            })
        };
        Self { commands, kill, thread: Some(thread), events, id, addr }
    }

    /// Runs `f` on the host's thread and returns its result.
    pub fn with<R: Send + 'static>(&self, f: impl FnOnce(&mut Host) -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::sync_channel(1);
        self.commands
            .send(Box::new(move |h| {
                let _ = tx.send(f(h));
            }))
            .expect("host thread alive");
        rx.recv().expect("host thread alive")
    }

    /// A crash: the host stops and its socket closes, nobody is told.
    pub fn kill(mut self) {
        self.kill.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.kill.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until `cond` holds, failing after [`LIMIT`]. Checks every few
/// milliseconds: the hosts run on their own threads.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < LIMIT, "timed out after {LIMIT:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A server with its identity in `dir`, on `bind`, introduced to `join`.
pub fn server(dir: &Path, name: &str, bind: &str, join: &[SocketAddr]) -> Host {
    server_with(dir, name, HostConfig::new(bind.parse().unwrap()), join)
}

pub fn server_with(dir: &Path, name: &str, host: HostConfig, join: &[SocketAddr]) -> Host {
    let data = DataDir::open(dir, Role::Server).expect("data dir");
    let mut config = data.config(name).expect("config");
    config.bootstrap = join.to_vec();
    // A daemon keeps its data directory (and so its lock) open while its
    // host lives; here `DIRS` does, until `release_dir`.
    let host = Host::bind(host, config).expect("bind");
    DIRS.lock().unwrap().push((host.id(), data));
    host
}

/// A server like [`server_with`] that keeps its Raft state in its data
/// directory (`Host::bind_in`): it resumes its group and the replicated
/// store after a restart.
pub fn durable_server(dir: &Path, name: &str, host: HostConfig, join: &[SocketAddr]) -> Host {
    let data = DataDir::open(dir, Role::Server).expect("data dir");
    let mut config = data.config(name).expect("config");
    config.bootstrap = join.to_vec();
    let host = Host::bind_in(host, &data, config).expect("bind");
    DIRS.lock().unwrap().push((host.id(), data));
    host
}

/// Data directories held open (locked) for the hosts that use them.
pub static DIRS: Mutex<Vec<(NodeId, DataDir)>> = Mutex::new(Vec::new());

/// Releases the data directory of `id` (after its host is gone).
pub fn release_dir(id: NodeId) {
    DIRS.lock().unwrap().retain(|(i, _)| *i != id);
}

/// A peer with a fixed identity (from `n`), bootstrapped to `servers`.
pub fn peer(name: &str, n: u8, servers: &[SocketAddr]) -> Host {
    peer_with(name, n, servers, HostConfig::new("127.0.0.1:0".parse().unwrap()))
}

pub fn peer_with(name: &str, n: u8, servers: &[SocketAddr], host: HostConfig) -> Host {
    let mut config =
        Config::new(Identity::from_seed(Role::Peer, [n; 32]), name, p2pcore_mio::os_seed().expect("seed"));
    config.bootstrap = servers.to_vec();
    Host::bind(host, config).expect("bind")
}

/// How `from` reaches `to` now, from its link table.
pub fn path(r: &Runner, to: NodeId) -> Option<PathKind> {
    r.with(move |h| h.node().link_table().into_iter().find(|l| l.id == to).map(|l| l.path))
}

/// The reliable messages `r` received from `from` on `channel`, in order.
pub fn received(r: &Runner, from: NodeId, channel: u8) -> Vec<bytes::Bytes> {
    r.events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::MessageReceived {
                from: f,
                channel: c,
                bytes,
                reliability: p2pcore::Reliability::Reliable,
            } if *f == from && *c == channel => Some(bytes.clone()),
            _ => None,
        })
        .collect()
}
