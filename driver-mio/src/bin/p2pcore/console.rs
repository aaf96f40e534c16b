//! `p2pcore peer`: a console that joins a network as a peer. Commands come
//! from `--exec` (in order) and then from stdin, one per line; what happens
//! on the network is printed as it happens. The node runs on a network
//! thread of its own (the mio host's thread mode). The `kv` commands (the
//! cluster's store) are in `kv.rs`.
//!
//! With `--directory lookup` the servers send this peer no directory: the
//! console finds a peer named in a command by asking them (`find`, and
//! `send`, `wait` with a name), as an application in a network of
//! thousands of peers would.

use crate::kv::{self, KvWaits};
use crate::settings::{AdmissionArgs, addr, addrs};
use crate::waits::Waits;
use crate::{Failure, Outcome};
use clap::{Args, ValueEnum};
use p2pcore::{DirectoryMode, Event, LookupKey, NodeId, PathKind, PeerInfo, Reliability, Role};
use p2pcore_mio::{DataDir, EventReceiver, Handle, Host, HostConfig, os_seed};
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `p2pcore peer` flags.
#[derive(Debug, Args)]
pub(crate) struct PeerArgs {
    /// This peer's name, as others see it (1 to 64 bytes).
    #[arg(long)]
    name: String,
    /// A server of the network (repeat for several).
    #[arg(long = "join", value_name = "ADDR", required = true)]
    join: Vec<String>,
    /// Keep this peer's identity here across runs (default: a new one).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    admission: AdmissionArgs,
    /// UDP address to bind (default 0.0.0.0:0, any free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// A command to run first (repeat; they run in order, then stdin is read).
    #[arg(long = "exec", value_name = "COMMAND")]
    exec: Vec<String>,
    /// How long to wait at start for a server to answer (seconds; default 15).
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    join_timeout: u64,
    /// Log filter for the library's own logs (stderr; default warn).
    #[arg(long, value_name = "FILTER", default_value = "warn")]
    log: String,
    /// Which peers this peer is told of: `full` (every peer, as they come
    /// and go) or `lookup` (only the peers it looks up, for large networks).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = Directory::Full)]
    directory: Directory,
}

/// `--directory`: [`DirectoryMode`] on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Directory {
    /// Every peer, as they come and go.
    Full,
    /// Only the peers looked up (by `find`, or a name or ID in a command).
    Lookup,
}

/// How long a lookup may take before the console gives up on it (the
/// servers answer within a round trip; a server lost meanwhile ends it).
const LOOKUP_LIMIT: Duration = Duration::from_secs(10);

const HELP: &str = "commands:
  peers                    online peers: name, ID, path, round trip
                           (lookup mode: the peers found so far)
  find NAME|ID             ask the servers for a peer (any mode)
  send NAME|ID TEXT        send TEXT to one peer (reliable, channel 0)
  broadcast TEXT           send TEXT to every online peer
  servers                  the servers (M marks the Master)
  master                   the Master, its basis and term
  stats                    traffic counters
  wait NAME|ID [SECS]      wait until that peer is online (default 30 s)";
const HELP_END: &str = "  help                     this list
  quit                     leave (after what was sent is acknowledged, 5 s at most)";

/// Names of the nodes this console has heard of.
type Names = Arc<Mutex<BTreeMap<NodeId, String>>>;

/// Lookup answers a command waits for.
type LookupWaits = Waits<Vec<PeerInfo>>;

pub(crate) fn run(a: PeerArgs) -> Outcome {
    crate::logging::init(Some(&a.log), crate::logging::LogFormat::Text)?;
    p2pcore::validate_name(&a.name).map_err(|e| Failure::new(format!("peer name `{}`: {e}", a.name)))?;
    let join = addrs("--join", &a.join)?;
    let listen = addr("--listen", a.listen.as_deref().unwrap_or("0.0.0.0:0"))?;
    let admission = a.admission.build()?;
    let (identity, _dir) = match &a.data_dir {
        Some(d) => {
            let dir = DataDir::open(d, Role::Peer)?;
            (dir.identity().clone(), Some(dir))
        }
        None => (crate::credentials::ephemeral(Role::Peer)?, None),
    };
    let mut config = p2pcore::Config::new(identity, a.name.clone(), os_seed()?);
    config.bootstrap = join.clone();
    config.admission = admission;
    let lookup_mode = a.directory == Directory::Lookup;
    config.peer.directory = if lookup_mode { DirectoryMode::Lookup } else { DirectoryMode::Full };
    let host = Host::bind(HostConfig::new(listen), config)?;
    let me = host.id();
    let (handle, events) = host.spawn()?;
    let names: Names = Arc::default();

    join_network(&handle, &events, &names, &join, Duration::from_secs(a.join_timeout))?;
    if lookup_mode {
        println!(
            "joined as {} ({me}) in lookup mode: `find NAME` asks for a peer; type `help` for commands",
            a.name
        );
    } else {
        let peers = handle.peers()?;
        println!("joined as {} ({me}); {} peers online; type `help` for commands", a.name, peers.len());
    }
    let waits = Arc::new(KvWaits::default());
    let lookups: Arc<LookupWaits> = Arc::default();
    let printer = {
        let names = names.clone();
        let (waits, lookups) = (waits.clone(), lookups.clone());
        std::thread::spawn(move || print_events(events, names, &waits, &lookups))
    };
    let mut console =
        Console { handle, names, me, sent_to: BTreeSet::new(), kv: waits, lookups, lookup_mode };
    let mut quit = false;
    for line in &a.exec {
        if !console.command(line)? {
            quit = true;
            break;
        }
    }
    if !quit {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if !console.command(&line)? {
                break;
            }
        }
    }
    console.flush();
    console.handle.close()?;
    let _ = printer.join();
    Ok(ExitCode::SUCCESS)
}

/// Waits until a server connected and its directory arrived; a refused
/// credential or silence past `limit` is the end.
fn join_network(
    handle: &Handle,
    events: &EventReceiver,
    names: &Names,
    join: &[std::net::SocketAddr],
    limit: Duration,
) -> Result<(), Failure> {
    let deadline = Instant::now() + limit;
    loop {
        if handle.with(|h| h.node().network_up() && h.node().directory_synced())? {
            let mut n = names.lock().map_err(|_| Failure::new("internal error: names lock"))?;
            for p in handle.peers()? {
                n.insert(p.id, p.name);
            }
            for s in handle.servers()? {
                n.insert(s.id, s.name);
            }
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let list = join.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            return Err(Failure::new(format!(
                "no server answered at {list} within {} s: check the address, that a p2pcore server runs there \
                 and that its port is reachable",
                limit.as_secs()
            )));
        }
        if let Ok(e) = events.recv_timeout(left.min(Duration::from_millis(100))) {
            crate::server::startup_check(&e, false)?;
            if let Event::PeerOnline { id, name } | Event::ServerUp { id, name } = &e
                && let Ok(mut n) = names.lock()
            {
                n.insert(*id, name.clone());
            }
        }
    }
}

fn short(id: &NodeId) -> String {
    id.to_string()[..9].to_owned()
}

fn print_events(events: EventReceiver, names: Names, waits: &KvWaits, lookups: &LookupWaits) {
    let name = |id: &NodeId| names.lock().ok().and_then(|n| n.get(id).cloned()).unwrap_or_else(|| short(id));
    while let Some(e) = events.recv() {
        match e {
            Event::MessageReceived { from, channel, bytes, .. } => {
                let text = String::from_utf8_lossy(&bytes);
                if channel == 0 {
                    println!("[{}] {text}", name(&from));
                } else {
                    println!("[{} #{channel}] {text}", name(&from));
                }
            }
            Event::PeerOnline { id, name: n } => {
                if let Ok(mut names) = names.lock() {
                    names.insert(id, n.clone());
                }
                println!("* {n} ({}) is online", short(&id));
            }
            Event::PeerOffline { id, name: n } => println!("* {n} ({}) went offline", short(&id)),
            Event::PathChanged { peer, path } => {
                println!("* path to {}: {}", name(&peer), path_text(path, &name))
            }
            Event::MasterChanged { master: Some(m), basis, term, .. } => println!(
                "* the Master is {} ({}, term {term})",
                name(&m),
                basis.map_or("none", |b| b.as_str())
            ),
            Event::ServerUp { id, name: n } => {
                if let Ok(mut names) = names.lock() {
                    names.insert(id, n.clone());
                }
                println!("* server {n} is up");
            }
            Event::ServerDown { name: n, .. } => println!("* server {n} is down"),
            Event::NetworkDown => println!("* network down: no server is reachable (retrying)"),
            Event::NetworkUp => println!("* network up"),
            Event::SendFailed { to, messages, reason, .. } => {
                println!("! {messages} message(s) to {} were not delivered: {reason}", name(&to))
            }
            // Answers are awaited by the command that asked; one that came
            // after its wait gave up is printed here.
            Event::KvDone { id, result } if !waits.deliver(id, &result) => match result {
                Ok(a) => println!("* late store answer to request {id} at revision {}", a.revision),
                Err(e) => println!("! {}", kv::error_line(&format!("store request {id}"), &e)),
            },
            // A lookup whose command gave up: its peers are in the
            // directory now, as their `PeerOnline` said.
            Event::LookupDone { query, peers } if !lookups.deliver(query, &peers) => {}
            Event::KvWatch { id, events } => {
                for line in kv::watch_lines(id, &events) {
                    println!("{line}");
                }
            }
            Event::KvWatchEnded { id, error } => {
                println!("! {}", kv::error_line(&format!("watch {id} ended"), &error))
            }
            _ => {}
        }
    }
}

/// The one peer of `found` (what `who` named), or why there is not one.
fn one_of(who: &str, found: &[PeerInfo]) -> Result<NodeId, String> {
    match found {
        [one] => Ok(one.id),
        [] => Err(format!("no online peer is named `{who}` (see `peers`, or `find`)")),
        many => Err(format!(
            "`{who}` names {} peers: {}; use the ID",
            many.len(),
            many.iter().map(|p| p.id.to_string()).collect::<Vec<_>>().join(", ")
        )),
    }
}

fn path_text(path: Option<PathKind>, name: &dyn Fn(&NodeId) -> String) -> String {
    match path {
        None => "none".into(),
        Some(PathKind::Relayed { via }) => format!("relayed via {}", name(&via)),
        Some(p) => p.to_string(),
    }
}

struct Console {
    handle: Handle,
    names: Names,
    me: NodeId,
    sent_to: BTreeSet<NodeId>,
    /// Store answers being waited for.
    kv: Arc<KvWaits>,
    /// Lookup answers being waited for.
    lookups: Arc<LookupWaits>,
    /// `--directory lookup`: peers are found by asking the servers.
    lookup_mode: bool,
}

impl Console {
    fn name(&self, id: &NodeId) -> String {
        if let Some(n) = self.names.lock().ok().and_then(|n| n.get(id).cloned()) {
            return n;
        }
        // The event thread may not have printed its `PeerOnline` yet (a peer
        // in the first directory is online before the events are read): the
        // directory has the name too.
        let listed = self.handle.peers().ok().and_then(|ps| ps.into_iter().find(|p| p.id == *id));
        listed.map_or_else(|| short(id), |p| p.name)
    }

    /// An online peer by ID (sends by ID need no lookup in either mode)
    /// or by an unambiguous name.
    fn resolve(&self, who: &str) -> Result<NodeId, String> {
        if let Ok(id) = who.parse::<NodeId>() {
            return Ok(id);
        }
        one_of(who, &self.find(who)?)
    }

    /// The online peers `who` (an ID or a name) names: from the directory,
    /// or in lookup mode from the servers, asked now.
    fn find(&self, who: &str) -> Result<Vec<PeerInfo>, String> {
        let id = who.parse::<NodeId>().ok();
        if !self.lookup_mode {
            let peers = self.handle.peers().map_err(|e| e.to_string())?;
            let wanted = |p: &PeerInfo| id.map_or(p.name == who, |id| p.id == id);
            return Ok(peers.into_iter().filter(wanted).collect());
        }
        let key = id.map_or_else(|| LookupKey::Name(who.to_owned()), LookupKey::Id);
        let register = self.lookups.clone();
        let query = self
            .handle
            .with(move |h| {
                let query = h.node_mut().lookup(Instant::now(), key)?;
                register.expect(query);
                Ok::<u64, p2pcore::LookupError>(query)
            })
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot look `{who}` up: {e}"))?;
        self.lookups
            .wait(query, LOOKUP_LIMIT)
            .ok_or_else(|| format!("no answer to the lookup of `{who}` within {} s", LOOKUP_LIMIT.as_secs()))
    }

    fn send(&mut self, to: NodeId, text: &str) -> Result<(), String> {
        self.handle
            .send(to, 0, text.as_bytes().to_vec(), Reliability::Reliable)
            .map_err(|e| e.to_string())?;
        self.sent_to.insert(to);
        Ok(())
    }

    /// Runs one command; false to quit. Mistakes are printed, not fatal; a
    /// stopped node is.
    fn command(&mut self, line: &str) -> Result<bool, Failure> {
        let line = line.trim();
        let (verb, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        let result: Result<(), String> = match verb {
            "" => Ok(()),
            "quit" | "exit" => return Ok(false),
            "help" => {
                println!("{HELP}\n{}\n{HELP_END}", kv::HELP);
                Ok(())
            }
            "peers" => self.peers(),
            "find" if !rest.is_empty() => self.find(rest).map(|found| {
                if found.is_empty() {
                    let named = if rest.parse::<NodeId>().is_ok() { "" } else { "named " };
                    println!("no online peer is {named}`{rest}`");
                }
                for p in found {
                    println!("found {} ({})", p.name, p.id);
                }
            }),
            "find" => Err("usage: find NAME|ID".into()),
            "send" => match rest.split_once(char::is_whitespace) {
                // A refusal names the message, so a script knows which of
                // its sends were accepted.
                Some((who, text)) => self
                    .resolve(who)
                    .and_then(|to| self.send(to, text.trim()))
                    .map_err(|e| format!("not sent to {who}: {e} [{}]", text.trim())),
                None => Err("usage: send NAME|ID TEXT".into()),
            },
            "broadcast" if !rest.is_empty() => {
                let peers = self.handle.peers().map_err(|e| Failure::new(e.to_string()))?;
                let mut sent = 0;
                let me = self.me;
                for p in peers.iter().filter(|p| p.id != me) {
                    match self.send(p.id, rest) {
                        Ok(()) => sent += 1,
                        Err(e) => println!("! {}: {e}", p.name),
                    }
                }
                if self.lookup_mode {
                    println!("sent to {sent} peer(s) (lookup mode: the peers found so far)");
                } else {
                    println!("sent to {sent} peer(s)");
                }
                Ok(())
            }
            "broadcast" => Err("usage: broadcast TEXT".into()),
            "servers" => self.servers(),
            "master" => self.master(),
            "stats" => self.stats(),
            "wait" => self.wait(rest),
            "kv" => kv::command(&self.handle, &self.kv, rest),
            other => Err(format!("unknown command `{other}` (type `help`)")),
        };
        if let Err(e) = result {
            println!("! {e}");
        }
        Ok(true)
    }

    fn peers(&self) -> Result<(), String> {
        let (peers, table, links) = self
            .handle
            .with(|h| (h.node().peers(), h.node().link_table(), h.node().links().collect::<Vec<_>>()))
            .map_err(|e| e.to_string())?;
        if peers.is_empty() && self.lookup_mode {
            println!("no peer found yet (lookup mode: `find NAME` asks the servers)");
        } else if peers.is_empty() {
            println!("no other peer is online");
        }
        let name = |id: &NodeId| self.name(id);
        for p in peers {
            let path = table.iter().find(|r| r.id == p.id).map(|r| r.path);
            let rtt = links.iter().find(|l| l.id == p.id).map(|l| l.rtt);
            let path = match path {
                Some(_) => path_text(path, &name),
                None => "not connected".into(),
            };
            let rtt = rtt.map_or(String::new(), |r| format!("  rtt {:.1} ms", r.as_secs_f64() * 1e3));
            println!("{:<20} {}  {path}{rtt}", p.name, p.id);
        }
        Ok(())
    }

    fn servers(&self) -> Result<(), String> {
        for s in self.handle.servers().map_err(|e| e.to_string())? {
            println!(
                "{} {:<20} {}  {}  load {}",
                if s.master { "M" } else { " " },
                s.name,
                s.id,
                if s.live { "live" } else { "down" },
                s.load
            );
        }
        Ok(())
    }

    fn master(&self) -> Result<(), String> {
        let m = self.handle.master().map_err(|e| e.to_string())?;
        match m.master {
            Some(id) => println!(
                "the Master is {} ({id}): basis {}, term {}, group {}",
                self.name(&id),
                m.basis.map_or("none", |b| b.as_str()),
                m.term,
                m.epoch
            ),
            None => println!("no Master right now (an election is in progress)"),
        }
        Ok(())
    }

    fn stats(&self) -> Result<(), String> {
        let s = self.handle.stats().map_err(|e| e.to_string())?;
        println!(
            "in {} datagrams / {} bytes, out {} datagrams / {} bytes, dropped {}, resent {}, failed {}",
            s.datagrams_in,
            s.bytes_in,
            s.datagrams_out,
            s.bytes_out,
            s.dropped.raw_total(),
            s.messages_resent,
            s.messages_failed
        );
        Ok(())
    }

    fn wait(&mut self, rest: &str) -> Result<(), String> {
        let mut words = rest.split_whitespace();
        let who = words.next().ok_or("usage: wait NAME|ID [SECS]")?;
        let secs: u64 = words.next().map_or(Ok(30), str::parse).map_err(|_| "SECS must be a number")?;
        let deadline = Instant::now() + Duration::from_secs(secs);
        // Reading the directory is free; a lookup is a question to every
        // server, so it is asked only twice a second.
        let every = Duration::from_millis(if self.lookup_mode { 500 } else { 50 });
        // A lookup refused while no server is linked is "not yet": the
        // network may come back before the deadline.
        let mut refused = None;
        loop {
            let found = match self.find(who) {
                Ok(found) => found,
                Err(e) if self.lookup_mode => {
                    refused = Some(e);
                    Vec::new()
                }
                Err(e) => return Err(e),
            };
            if !found.is_empty() {
                let id = one_of(who, &found)?;
                println!("{} is online", self.name(&id));
                return Ok(());
            }
            if Instant::now() >= deadline {
                let last = refused.map_or(String::new(), |e| format!(" (last lookup: {e})"));
                return Err(format!("`{who}` did not come online within {secs} s{last}"));
            }
            std::thread::sleep(every);
        }
    }

    /// Waits (5 s at most) until every peer this console sent to has
    /// acknowledged everything, so `quit` does not cut messages off.
    fn flush(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let to: Vec<NodeId> = self.sent_to.iter().copied().collect();
        while Instant::now() < deadline {
            let to = to.clone();
            match self.handle.with(move |h| to.iter().map(|id| h.node().unacknowledged(id)).sum::<usize>()) {
                Ok(0) | Err(_) => return,
                Ok(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}
