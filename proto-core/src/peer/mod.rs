//! The peer role: staying connected to the servers, merging their
//! directories, reaching other peers by ID through relays, and reporting.
//!
//! A peer dials its bootstrap servers until one answers, learns the server
//! list from it and connects to every server (redialing lost ones with
//! backoff, like servers do — see `roster`). Each server sends a snapshot of
//! its directory (the peers connected to it), then versioned deltas; the peer
//! keeps a copy of each server's directory and sees a peer as online while
//! any server lists it. It reports its own addresses (its interface
//! addresses and the addresses servers observed) to every server when they
//! change, and its link table (how it reaches each node) as deltas.
//!
//! Peer-to-peer QUIC runs end to end over mapped addresses (see `paths`),
//! on a direct path when one is proven and otherwise relayed (see `relay`) by
//! a server both peers are connected to, chosen at random among them and
//! re-chosen when it stops being common. With no
//! server at all the network is down: `NetworkDown`, and sends fail until a
//! server is back.

pub(crate) mod coord;
pub(crate) mod kv;
mod lookup;
pub(crate) mod paths;
pub(crate) mod relay;

use crate::config::{ConnectPolicy, PeerConfig};
use crate::event::Event;
use crate::identity::{NodeId, Role};
use crate::info::{LinkRow, ObservedAddr, PeerInfo};
use crate::proto::{Control, DirEntry, PathKind, PathMsg, PeerAddrs, PeerMsg};
use crate::quic::Expect;
use crate::rng::NodeRng;
use crate::roster::{Backoff, DialOutcome, Roster};
use crate::server::election::{MasterBasis, MasterInfo};
use crate::server::{Action, LinkMeta, ServerInfo};
use crate::wire::{FrameType, ProbeFrame, TOKEN_LEN};
use paths::{LocalView, PathOut, Paths, Route};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a packet for a peer goes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Straight to this address.
    Direct(SocketAddr),
    /// In a relay frame to this server.
    Relay { server: SocketAddr, token: [u8; TOKEN_LEN], peer: NodeId },
}

#[derive(Debug)]
struct ServerLink {
    name: String,
    /// Where the server's packets come from (and relay frames go to).
    addr: SocketAddr,
    /// Our relay session token at this server.
    token: Option<[u8; TOKEN_LEN]>,
    /// Our address as this server sees it.
    observed: Option<SocketAddr>,
    master: Option<MasterInfo>,
    /// Our copy of this server's directory. Rows equal to another server's
    /// share its allocation ([`Peer::share`]): every server lists a peer
    /// with the same name and addresses, and a full directory of N peers
    /// from three servers would otherwise be held three times.
    dir: BTreeMap<NodeId, Arc<DirEntry>>,
    version: Option<u64>,
}

/// Shortest time between two round-trip reports for one link.
const RTT_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// The peer role state machine.
pub(crate) struct Peer {
    me: NodeId,
    cfg: PeerConfig,
    local: Vec<SocketAddr>,
    roster: Roster,
    servers: BTreeMap<NodeId, ServerLink>,
    /// Merged directory: online peers and their names.
    online: BTreeMap<NodeId, String>,
    master: MasterInfo,
    network_up: bool,
    addrs_sent: Option<PeerAddrs>,
    /// See [`Peer::resyncs`].
    resyncs: u64,
    paths: Paths,
    /// Established links to peers and their path (the peers part of the link table).
    links: BTreeMap<NodeId, PathKind>,
    /// Linked peers whose path is gone (`PathChanged { path: None }` told).
    pathless: BTreeSet<NodeId>,
    /// The round-trip time last reported to the servers per linked peer (µs)
    /// and when.
    rtt_reported: BTreeMap<NodeId, (u32, Instant)>,
    /// Peer dials in progress, and when a failed peer may be dialed again.
    dialing: BTreeSet<NodeId>,
    retry_at: BTreeMap<NodeId, (Instant, Duration)>,
    rng: NodeRng,
    actions: VecDeque<Action>,
    /// Store requests in flight.
    kv: kv::KvClient,
    /// Coordination requests running (locks, campaigns, ...).
    coord: coord::CoordClient,
    /// Directory lookups (lookup mode, and `Node::lookup`).
    lookups: lookup::Lookups,
}

impl Peer {
    pub(crate) fn new(
        me: NodeId,
        local: Vec<SocketAddr>,
        bootstrap: &[SocketAddr],
        cfg: PeerConfig,
        backoff: Backoff,
        rng: NodeRng,
        now: Instant,
    ) -> Self {
        let mut rng = rng;
        let epoch = rng.next_u64();
        let paths =
            Paths::new(me, cfg.hole_punching, cfg.keep_alive_interval, NodeRng::from_seed(rng.child_seed()));
        let mut p = Self {
            me,
            cfg,
            local,
            roster: Roster::new(me, bootstrap, backoff, now),
            servers: BTreeMap::new(),
            online: BTreeMap::new(),
            master: MasterInfo::NONE,
            network_up: false,
            addrs_sent: None,
            resyncs: 0,
            paths,
            links: BTreeMap::new(),
            pathless: BTreeSet::new(),
            rtt_reported: BTreeMap::new(),
            dialing: BTreeSet::new(),
            retry_at: BTreeMap::new(),
            rng,
            actions: VecDeque::new(),
            kv: kv::KvClient::new(epoch),
            coord: coord::CoordClient::default(),
            lookups: lookup::Lookups::default(),
        };
        p.dial_servers(now);
        p
    }

    // ----- getters ------------------------------------------------------

    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let servers = &self.servers;
        let dial = self.roster.next_due(|id| servers.contains_key(id), !servers.is_empty());
        // Only real deadlines: a server redial, a failed peer dial's retry,
        // the path layer's probes and keep-alives. An idle peer sleeps.
        [
            dial,
            self.next_peer_retry(),
            self.paths.poll_timeout(),
            self.kv.next_deadline(),
            self.coord.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    #[cfg(feature = "fuzzing")]
    pub(crate) fn kv_epoch(&self) -> u64 {
        self.kv.epoch()
    }

    pub(crate) fn master(&self) -> MasterInfo {
        self.master
    }

    pub(crate) fn network_up(&self) -> bool {
        self.network_up
    }

    /// Whether a live server link holds a directory snapshot (its version
    /// is known: not waiting for a resync). In lookup mode there is no
    /// snapshot: a server that gave us a relay session is ready to answer.
    pub(crate) fn directory_synced(&self) -> bool {
        match self.cfg.directory {
            crate::config::DirectoryMode::Lookup => self.servers.values().any(|l| l.token.is_some()),
            _ => self.servers.values().any(|l| l.version.is_some()),
        }
    }

    /// Whether this peer uses servers at all. A peer configured without any
    /// (a standalone node dialing others by address) is never "down".
    pub(crate) fn uses_servers(&self) -> bool {
        self.roster.has_bootstrap() || self.roster.iter().next().is_some()
    }

    pub(crate) fn servers(&self) -> Vec<ServerInfo> {
        self.roster
            .iter()
            .map(|(id, k)| ServerInfo {
                id: *id,
                name: k.name.clone(),
                addrs: k.addrs.clone(),
                load: k.load,
                live: self.servers.contains_key(id),
                master: self.master.master == Some(*id),
            })
            .collect()
    }

    pub(crate) fn peers(&self) -> Vec<PeerInfo> {
        self.online.keys().filter_map(|id| self.peer_info(id)).collect()
    }

    /// A peer's addresses, merged from every server that lists it.
    fn merged_addrs(&self, id: &NodeId) -> PeerAddrs {
        let mut addrs = PeerAddrs::default();
        for e in self.servers.values().filter_map(|s| s.dir.get(id)) {
            for a in &e.addrs.local {
                if !addrs.local.contains(a) {
                    addrs.local.push(*a);
                }
            }
            for a in &e.addrs.observed {
                if !addrs.observed.contains(a) {
                    addrs.observed.push(*a);
                }
            }
        }
        addrs
    }

    /// Our address as each connected server sees it.
    pub(crate) fn observed_addrs(&self) -> Vec<ObservedAddr> {
        self.servers
            .iter()
            .filter_map(|(server, link)| Some(ObservedAddr { server: *server, addr: link.observed? }))
            .collect()
    }

    /// Our own addresses: interfaces and what servers observe.
    fn own_addrs(&self) -> PeerAddrs {
        let mut observed: Vec<SocketAddr> = self.servers.values().filter_map(|s| s.observed).collect();
        observed.sort();
        observed.dedup();
        PeerAddrs { local: self.local.clone(), observed }
    }

    /// Hands the directory's view of a linked peer's addresses to the path layer.
    fn refresh_remote(&mut self, now: Instant, id: NodeId) {
        if self.links.contains_key(&id) {
            let addrs = self.merged_addrs(&id);
            self.paths.set_remote(now, id, &addrs);
            self.drain_paths();
        }
    }

    /// What the path layer needs to know about our side.
    fn view(&self) -> LocalView {
        let own = self.own_addrs();
        LocalView { edm: paths::is_edm(&own.observed), local: own.local }
    }

    /// The link table: servers (direct) and peers (their round-trip times
    /// are the node's to fill in).
    pub(crate) fn link_table(&self) -> Vec<LinkRow> {
        let servers = self.servers.keys().map(|id| LinkRow { id: *id, path: PathKind::Direct, rtt: None });
        let peers = self.links.iter().map(|(id, path)| LinkRow { id: *id, path: *path, rtt: None });
        servers.chain(peers).collect()
    }

    /// A linked peer's connection measured `rtt`: tell the servers when it
    /// moved by a quarter and 2 ms since the last report, at most every
    /// `RTT_REPORT_INTERVAL` per link (the first measurement at once).
    pub(crate) fn link_rtt(&mut self, peer: NodeId, rtt: Duration, now: Instant) {
        if !self.links.contains_key(&peer) {
            return;
        }
        let us = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX);
        if let Some(&(old, at)) = self.rtt_reported.get(&peer) {
            let moved = us.abs_diff(old);
            if now.saturating_duration_since(at) < RTT_REPORT_INTERVAL || moved < 2_000 || moved < old / 4 {
                return;
            }
        }
        self.rtt_reported.insert(peer, (us, now));
        self.broadcast(PeerMsg::LinkRtt { peer, rtt_us: us });
    }

    /// How the connection to `peer` is carried, if there is one.
    pub(crate) fn link_path(&self, peer: &NodeId) -> Option<PathKind> {
        self.links.get(peer).copied()
    }

    /// The direct address in use for `peer`, if any.
    pub(crate) fn direct_addr(&self, peer: &NodeId) -> Option<SocketAddr> {
        self.paths.get(peer).and_then(|p| p.direct)
    }

    /// The server relaying to `peer`, if one is chosen.
    pub(crate) fn relay_of(&self, peer: &NodeId) -> Option<NodeId> {
        self.paths.get(peer).and_then(|p| p.relay)
    }

    /// The mapped address QUIC uses for `peer`.
    pub(crate) fn mapped(&mut self, peer: NodeId) -> SocketAddr {
        self.paths.mapped(peer)
    }

    /// The peer behind a mapped address.
    pub(crate) fn peer_of(&self, mapped: &SocketAddr) -> Option<NodeId> {
        self.paths.peer_of(mapped)
    }

    /// Where to send a packet for mapped address `mapped`: straight to a
    /// direct address, or to a relay server (its address, our token there,
    /// and the destination peer).
    pub(crate) fn route(&mut self, now: Instant, mapped: &SocketAddr) -> Option<Next> {
        let (peer, route) = self.paths.route(now, mapped)?;
        let via = match route {
            Some(Route::Direct(addr)) => return Some(Next::Direct(addr)),
            Some(Route::Relay(via)) => via,
            None => {
                self.select_relay(peer);
                self.paths.get(&peer)?.relay?
            }
        };
        let s = self.servers.get(&via)?;
        Some(Next::Relay { server: s.addr, token: s.token?, peer })
    }

    /// A QUIC packet came from real address `from`: the mapped address of
    /// the peer it belongs to, if `from` is one of that peer's direct paths.
    pub(crate) fn demux(&mut self, now: Instant, from: &SocketAddr) -> Option<SocketAddr> {
        self.paths.demux(now, from)
    }

    /// A path probe arrived from `from`. `in_use` tells whether a
    /// connection other than a relayed or punched peer-to-peer one already
    /// talks to `from` (a server, a node dialed by address): such an address
    /// is never taken as a peer's path, whatever probes say.
    pub(crate) fn on_probe(
        &mut self,
        now: Instant,
        kind: FrameType,
        from: SocketAddr,
        probe: &ProbeFrame,
        in_use: impl FnOnce(&SocketAddr) -> bool,
    ) {
        let servers = &self.servers;
        let reserved = |a: &SocketAddr| servers.values().any(|s| s.addr == *a) || in_use(a);
        match kind {
            FrameType::Ping => self.paths.on_ping(now, from, probe, reserved),
            _ => self.paths.on_pong(now, from, probe, reserved),
        }
        self.drain_paths();
    }

    /// A path message from a connected peer.
    pub(crate) fn on_path_msg(&mut self, now: Instant, from: NodeId, msg: PathMsg) {
        match msg {
            PathMsg::Candidates { addrs, reply } => {
                let view = self.view();
                self.paths.on_candidates(now, from, &addrs, reply, &view);
            }
        }
        self.drain_paths();
    }

    /// Probing work so far.
    pub(crate) fn probe_stats(&self) -> paths::ProbeStats {
        self.paths.stats
    }

    /// Carries out what the path layer asked for.
    fn drain_paths(&mut self) {
        for out in self.paths.take_out() {
            match out {
                PathOut::Datagram { to, data } => self.actions.push_back(Action::Datagram { to, data }),
                PathOut::Candidates { peer, reply } => {
                    let addrs = self.own_addrs();
                    self.actions.push_back(Action::Send {
                        to: peer,
                        msg: Control::Path(PathMsg::Candidates { addrs, reply }),
                    });
                }
                PathOut::Switched { peer } => {
                    self.actions.push_back(Action::PathReset(peer));
                    self.path_changed(peer);
                }
            }
        }
    }

    /// Reports `peer`'s current path (to the link table, the servers and the user) if it changed.
    fn path_changed(&mut self, peer: NodeId) {
        if !self.links.contains_key(&peer) {
            return;
        }
        match self.path_kind(&peer) {
            Some(path) => {
                self.pathless.remove(&peer);
                if self.links.insert(peer, path) != Some(path) {
                    self.broadcast(PeerMsg::LinkSet { peer, path });
                    self.actions.push_back(Action::Event(Event::PathChanged { peer, path: Some(path) }));
                }
            }
            None => {
                // No server relays for it now and no direct path; the link
                // stays up (QUIC rides out the gap) but has no path.
                if self.pathless.insert(peer) {
                    self.actions.push_back(Action::Event(Event::PathChanged { peer, path: None }));
                }
            }
        }
    }

    // ----- inputs ---------------------------------------------------------

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.kv.next_deadline().is_some_and(|t| t <= now) {
            self.kv_timeout(now);
        }
        if self.coord.next_deadline().is_some_and(|t| t <= now) {
            self.coord_timeout(now);
        }
        if self.next_peer_retry().is_some_and(|t| t <= now) {
            self.connect_peers(now, None);
        }
        let servers = &self.servers;
        self.roster.forget_stale(now, |id| servers.contains_key(id));
        self.dial_servers(now);
        if self.paths.poll_timeout().is_some_and(|t| t <= now) {
            let view = self.view();
            self.paths.handle_timeout(now, &view);
            self.drain_paths();
        }
    }

    pub(crate) fn on_link_up(&mut self, now: Instant, meta: &LinkMeta, observed: Option<SocketAddr>) {
        match meta.id.role() {
            Role::Server => {
                self.roster.learn_direct(now, &meta.server_entry());
                self.roster.on_link_up(now, &meta.id);
                let fresh = !self.servers.contains_key(&meta.id);
                let kept = self.servers.remove(&meta.id);
                // A link that comes up again (a duplicate connection swapped
                // in) keeps the server's directory until the snapshot it
                // sends on every link-up replaces it: dropping it here would
                // leave peers online that no directory lists. Its version is
                // unknown until then, so deltas wait for the snapshot.
                let (observed, dir) = match kept {
                    Some(k) => (observed.or(k.observed), k.dir),
                    None => (observed, BTreeMap::new()),
                };
                self.servers.insert(
                    meta.id,
                    ServerLink {
                        name: meta.name.clone(),
                        addr: meta.remote_addr,
                        token: None,
                        observed,
                        master: None,
                        dir,
                        version: None,
                    },
                );
                if fresh {
                    self.actions
                        .push_back(Action::Event(Event::ServerUp { id: meta.id, name: meta.name.clone() }));
                }
                if !self.network_up {
                    self.network_up = true;
                    self.actions.push_back(Action::Event(Event::NetworkUp));
                }
                // A new server hears our addresses and links once.
                self.addrs_sent = None;
                self.report_addrs();
                let links: Vec<(NodeId, PathKind)> = self.links.iter().map(|(k, v)| (*k, *v)).collect();
                for (peer, path) in links {
                    self.send(meta.id, PeerMsg::LinkSet { peer, path });
                }
                let rtts: Vec<(NodeId, u32)> =
                    self.rtt_reported.iter().map(|(k, (us, _))| (*k, *us)).collect();
                for (peer, rtt_us) in rtts {
                    self.send(meta.id, PeerMsg::LinkRtt { peer, rtt_us });
                }
                self.dial_servers(now);
                self.kv_links_changed(now, None);
            }
            Role::Peer => {
                self.dialing.remove(&meta.id);
                self.retry_at.remove(&meta.id);
                self.select_relay(meta.id);
                let path = self.path_kind(&meta.id);
                if let Some(path) = path {
                    self.links.insert(meta.id, path);
                    self.broadcast(PeerMsg::LinkSet { peer: meta.id, path });
                    self.actions
                        .push_back(Action::Event(Event::PathChanged { peer: meta.id, path: Some(path) }));
                }
                // Hole punching starts at once on both sides: the handshake
                // through the relay was the coordination.
                if let Some(key) = meta.probe_key {
                    let (addrs, view) = (self.merged_addrs(&meta.id), self.view());
                    self.paths.set_remote(now, meta.id, &addrs);
                    self.paths.connected(now, meta.id, key, &view);
                    self.drain_paths();
                }
            }
        }
    }

    pub(crate) fn on_link_down(&mut self, now: Instant, id: NodeId) {
        match id.role() {
            Role::Server => {
                let Some(link) = self.servers.remove(&id) else { return };
                let servers = &self.servers;
                self.roster.on_link_down(now, &id, !servers.is_empty(), &mut self.rng);
                self.actions.push_back(Action::Event(Event::ServerDown { id, name: link.name }));
                if self.servers.is_empty() && self.network_up {
                    self.network_up = false;
                    self.actions.push_back(Action::Event(Event::NetworkDown));
                }
                self.directory_changed(now);
                self.lookup_server_down(id);
                self.reselect_all();
                self.update_master();
                self.report_addrs();
                self.dial_servers(now);
                self.kv_links_changed(now, Some(id));
            }
            Role::Peer => {
                self.dialing.remove(&id);
                self.lookup_link_down(&id);
                self.paths.disconnected(id);
                let had_path = !self.pathless.remove(&id);
                self.rtt_reported.remove(&id);
                if self.links.remove(&id).is_some() {
                    self.broadcast(PeerMsg::LinkDrop { peer: id });
                    if had_path {
                        self.actions.push_back(Action::Event(Event::PathChanged { peer: id, path: None }));
                    }
                }
            }
        }
    }

    pub(crate) fn on_dial_done(
        &mut self,
        now: Instant,
        expect: Expect,
        addr: SocketAddr,
        outcome: &DialOutcome,
    ) {
        if let Expect::Node(id) = expect
            && id.role() == Role::Peer
        {
            self.dialing.remove(&id);
            match outcome {
                DialOutcome::Failed(_) => {
                    let backoff = self.retry_at.get(&id).map_or(Duration::from_millis(500), |(_, b)| *b * 2);
                    let backoff = backoff.min(Duration::from_secs(30));
                    self.retry_at.insert(id, (now + self.rng.jitter(backoff, 0.2), backoff));
                }
                // Another connection to it was already being set up; should
                // that one fail, check again shortly (nothing else would).
                DialOutcome::Superseded if !self.links.contains_key(&id) => {
                    let first = Duration::from_millis(500);
                    self.retry_at.entry(id).or_insert((now + first, first));
                }
                _ => {}
            }
            return;
        }
        if let Some(e) = self.roster.on_dial_done(now, expect, addr, outcome, &mut self.rng) {
            self.actions.push_back(Action::Event(e));
        }
        self.dial_servers(now);
    }

    pub(crate) fn on_message(&mut self, now: Instant, from: NodeId, msg: PeerMsg) {
        // Each directory mode takes only its own messages: a full-mode peer
        // holds every row by versioned snapshot and deltas (rows slipped in
        // beside them would escape the versions), a lookup-mode peer only
        // what it asked for.
        let lookup = self.lookup_mode();
        let Some(link) = self.servers.get_mut(&from) else { return };
        match msg {
            PeerMsg::Directory { .. }
            | PeerMsg::DirAdd { .. }
            | PeerMsg::DirUpdate { .. }
            | PeerMsg::DirRemove { .. }
                if lookup => {}
            PeerMsg::Found { .. } | PeerMsg::Listed(_) | PeerMsg::Unlisted(_) if !lookup => {}
            PeerMsg::Session { token } => {
                link.token = Some(token);
                self.reselect_all();
            }
            PeerMsg::Directory { version, peers } => {
                let dir = peers
                    .into_iter()
                    .take(1 << 20)
                    .filter(|e| e.id != self.me)
                    .map(|e| (e.id, self.share(from, e)))
                    .collect();
                let Some(link) = self.servers.get_mut(&from) else { return };
                link.dir = dir;
                link.version = Some(version);
                self.directory_changed(now);
                self.reselect_all();
                let linked: Vec<NodeId> = self.links.keys().copied().collect();
                for id in linked {
                    self.refresh_remote(now, id);
                }
            }
            PeerMsg::DirAdd { version, entry } | PeerMsg::DirUpdate { version, entry } => {
                if self.next_version(from, version) {
                    self.list(now, from, entry);
                }
            }
            PeerMsg::DirRemove { version, id } => {
                if !self.next_version(from, version) {
                    return;
                }
                let Some(link) = self.servers.get_mut(&from) else { return };
                link.dir.remove(&id);
                self.unlisted(id);
                self.select_relay(id);
            }
            PeerMsg::Servers(list) => {
                for e in list.into_iter().take(4096) {
                    self.roster.learn(now, &e);
                }
                self.dial_servers(now);
            }
            PeerMsg::ServerUp(e) => {
                self.roster.learn(now, &e);
                self.dial_servers(now);
            }
            // Servers redial a lost server themselves; a peer keeps it in its
            // roster until its own connection dies.
            PeerMsg::ServerDown(_) => {}
            PeerMsg::Master(m) => {
                link.master = Some(m);
                self.update_master();
            }
            PeerMsg::Observed(addr) => {
                // Our NAT moved us: servers and peers need the new address.
                link.observed = Some(addr);
                self.report_addrs();
            }
            // Peer-to-server messages are not accepted from servers.
            PeerMsg::Info(_)
            | PeerMsg::LinkSet { .. }
            | PeerMsg::LinkDrop { .. }
            | PeerMsg::LinkRtt { .. }
            | PeerMsg::Resync
            | PeerMsg::Kv(_)
            | PeerMsg::Watch { .. }
            | PeerMsg::Unwatch { .. } => {}
            PeerMsg::Found { query, entries } => self.on_found(now, from, query, entries),
            PeerMsg::Listed(entry) => self.on_listed(now, from, entry),
            PeerMsg::Unlisted(id) => self.on_unlisted(from, id),
            PeerMsg::Lookup { .. } => {}
            PeerMsg::KvReply(reply) => self.on_kv_reply(now, reply),
            PeerMsg::WatchEvents { id, next, changes } => self.on_watch_events(now, from, id, next, changes),
            PeerMsg::WatchEnd { id, fail } => self.on_watch_end(now, from, id, fail),
        }
    }

    /// A send to `to` needs a connection: dial it if it is online.
    pub(crate) fn want(&mut self, to: NodeId) -> bool {
        if !self.online.contains_key(&to) {
            // Lookup mode: ask the servers first.
            return self.want_unknown(to);
        }
        if self.dialing.insert(to) {
            self.actions.push_back(Action::DialPeer(to));
        }
        true
    }

    /// Updates the interface addresses reported to servers.
    pub(crate) fn set_local_addrs(&mut self, local: Vec<SocketAddr>) {
        self.local = local;
        self.report_addrs();
    }

    // ----- internals ------------------------------------------------------

    /// Whether a delta from `server` is the next one; on a gap, asks once
    /// for a fresh snapshot and ignores deltas until it arrives. (The control
    /// stream is ordered, so a gap means a bug somewhere: counted.)
    fn next_version(&mut self, server: NodeId, version: u64) -> bool {
        let Some(link) = self.servers.get_mut(&server) else { return false };
        match link.version {
            // `checked_add`: a snapshot may carry any version, even u64::MAX.
            Some(v) if v.checked_add(1) == Some(version) => {
                link.version = Some(version);
                true
            }
            Some(_) => {
                link.version = None;
                self.resyncs += 1;
                self.send(server, PeerMsg::Resync);
                false
            }
            // A snapshot is on its way.
            None => false,
        }
    }

    /// Directory snapshots this peer asked for after a gap in a server's deltas.
    pub(crate) fn resyncs(&self) -> u64 {
        self.resyncs
    }

    fn send(&mut self, to: NodeId, msg: PeerMsg) {
        self.actions.push_back(Action::Send { to, msg: Control::Peer(msg) });
    }

    fn broadcast(&mut self, msg: PeerMsg) {
        let to: Vec<NodeId> = self.servers.keys().copied().collect();
        if !to.is_empty() {
            self.actions.push_back(Action::Broadcast { to, msg: Control::Peer(msg) });
        }
    }

    fn dial_servers(&mut self, now: Instant) {
        let servers = &self.servers;
        for d in self.roster.due(now, |id| servers.contains_key(id), !servers.is_empty()) {
            self.actions.push_back(Action::Dial { expect: d.expect, addr: d.addr, join: d.join });
        }
    }

    /// Sends our addresses to every server if they changed.
    fn report_addrs(&mut self) {
        let addrs = self.own_addrs();
        if self.addrs_sent.as_ref() != Some(&addrs) {
            self.addrs_sent = Some(addrs.clone());
            self.broadcast(PeerMsg::Info(addrs));
        }
    }

    /// Recomputes the merged directory and reports who came and went (after
    /// a snapshot or the loss of a server; deltas use `listed`/`unlisted`).
    fn directory_changed(&mut self, now: Instant) {
        let mut now_online: BTreeMap<NodeId, String> = BTreeMap::new();
        for s in self.servers.values() {
            for (id, e) in &s.dir {
                now_online.entry(*id).or_insert_with(|| e.name.clone());
            }
        }
        let gone: Vec<NodeId> =
            self.online.keys().filter(|id| !now_online.contains_key(id)).copied().collect();
        let came: Vec<(NodeId, String)> = now_online
            .iter()
            .filter(|(id, _)| !self.online.contains_key(id))
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for id in gone {
            self.went_offline(id);
        }
        for (id, name) in came {
            self.listed(now, id, name);
        }
    }

    /// Server `from` lists `entry` (a delta, or a lookup's answer or news).
    fn list(&mut self, now: Instant, from: NodeId, entry: DirEntry) {
        if entry.id == self.me {
            return;
        }
        let (id, name) = (entry.id, entry.name.clone());
        let entry = self.share(from, entry);
        let Some(link) = self.servers.get_mut(&from) else { return };
        link.dir.insert(id, entry);
        self.listed(now, id, name);
        self.select_relay(id);
        self.refresh_remote(now, id);
    }

    /// A server lists `id`: it is online (if it was not already).
    fn listed(&mut self, now: Instant, id: NodeId, name: String) {
        if self.online.contains_key(&id) {
            return;
        }
        self.online.insert(id, name.clone());
        self.lookup_listed(id);
        self.actions.push_back(Action::Event(Event::PeerOnline { id, name }));
        // Connect at once rather than at the next periodic check.
        self.connect_peers(now, Some(id));
    }

    /// A server stopped listing `id`: offline unless another server lists it.
    fn unlisted(&mut self, id: NodeId) {
        if self.online.contains_key(&id) && !self.servers.values().any(|s| s.dir.contains_key(&id)) {
            self.went_offline(id);
        }
    }

    fn went_offline(&mut self, id: NodeId) {
        let Some(name) = self.online.remove(&id) else { return };
        self.retry_at.remove(&id);
        self.actions.push_back(Action::Event(Event::PeerOffline { id, name }));
        // Its connection, if any, has nowhere to go; close it rather than
        // wait for the idle timeout.
        self.actions.push_back(Action::Close(id));
    }

    /// `entry` as server `from` lists it, sharing another server's equal row.
    fn share(&self, from: NodeId, entry: DirEntry) -> Arc<DirEntry> {
        self.servers
            .iter()
            .filter(|(id, _)| **id != from)
            .find_map(|(_, s)| s.dir.get(&entry.id).filter(|e| ***e == entry).cloned())
            .unwrap_or_else(|| Arc::new(entry))
    }

    /// Servers that list `peer` and gave us a relay token (lookup mode: for
    /// a peer no server lists us yet, the server it reached us through).
    fn common_servers(&self, peer: &NodeId) -> Vec<NodeId> {
        let listing: Vec<NodeId> = self
            .servers
            .iter()
            .filter(|(_, s)| s.token.is_some() && s.dir.contains_key(peer))
            .map(|(id, _)| *id)
            .collect();
        if listing.is_empty()
            && let Some(via) = self.relay_hint(peer)
            && self.servers.get(&via).is_some_and(|s| s.token.is_some())
        {
            return vec![via];
        }
        listing
    }

    /// Keeps `peer`'s relay if it is still common, else picks one at random.
    /// Only for peers with a path (ones we talk to): the rest get theirs on
    /// first use (`route`), so a directory of N peers costs no path state.
    fn select_relay(&mut self, peer: NodeId) {
        if self.paths.get(&peer).is_none() {
            return;
        }
        let common = self.common_servers(&peer);
        let current = self.paths.get(&peer).and_then(|p| p.relay);
        let next = match current {
            Some(c) if common.contains(&c) => Some(c),
            _ if common.is_empty() => None,
            _ => Some(common[self.rng.below(common.len() as u64) as usize]),
        };
        if self.paths.set_relay(peer, next) {
            // Unseen while a direct path is in use; the relay is its fallback.
            self.path_changed(peer);
        }
    }

    fn reselect_all(&mut self) {
        let peers: Vec<NodeId> = self.paths.peers().copied().collect();
        for p in peers {
            self.select_relay(p);
        }
    }

    /// How `peer` is reached now: its direct path if one is in use, else its relay.
    fn path_kind(&self, peer: &NodeId) -> Option<PathKind> {
        self.paths
            .direct_kind(peer, &self.view())
            .or_else(|| self.paths.get(peer).and_then(|p| p.relay).map(|via| PathKind::Relayed { via }))
    }

    /// When the eager mesh next retries a failed peer dial, if any is waiting.
    fn next_peer_retry(&self) -> Option<Instant> {
        if self.cfg.connect != ConnectPolicy::Eager || !self.network_up {
            return None;
        }
        self.retry_at
            .iter()
            .filter(|(id, _)| {
                self.me > **id
                    && self.online.contains_key(id)
                    && !self.links.contains_key(id)
                    && !self.dialing.contains(id)
            })
            .map(|(_, (t, _))| *t)
            .min()
    }

    /// Eager mesh: the larger ID of each pair dials (the smaller dials only
    /// when it has something to send), so pairs rarely race.
    fn connect_peers(&mut self, now: Instant, only: Option<NodeId>) {
        if self.cfg.connect != ConnectPolicy::Eager || !self.network_up {
            return;
        }
        let candidates: Vec<NodeId> = match only {
            Some(id) => vec![id],
            None => self.online.keys().copied().collect(),
        };
        for id in candidates {
            let due = self.me > id
                && !self.links.contains_key(&id)
                && !self.dialing.contains(&id)
                && self.retry_at.get(&id).is_none_or(|(t, _)| *t <= now);
            if due {
                self.dialing.insert(id);
                self.actions.push_back(Action::DialPeer(id));
            }
        }
    }

    /// Merges the servers' Master claims. A claim made on a stronger basis
    /// was made with a wider view of the cluster (`raft` needs three or more
    /// servers, `eldest` two), so it wins over weaker ones: a server that just
    /// restarted and still believes it is alone (`solo`) does not make the
    /// peer's Master flap. Among Raft claims the latest term wins; among
    /// others, the most common claim.
    fn update_master(&mut self) {
        let reports: Vec<MasterInfo> = self.servers.values().filter_map(|s| s.master).collect();
        let strongest = reports.iter().filter_map(|m| m.basis).max();
        let raft =
            reports.iter().filter(|m| m.basis == Some(MasterBasis::Raft)).max_by_key(|m| (m.term, m.epoch));
        let m = match raft {
            Some(m) => *m,
            None => {
                let mut counts: BTreeMap<(Option<NodeId>, Option<MasterBasis>), usize> = BTreeMap::new();
                for r in reports.iter().filter(|r| r.basis.is_none() || r.basis == strongest) {
                    *counts.entry((r.master, r.basis)).or_default() += 1;
                }
                counts.into_iter().max_by_key(|(k, n)| (*n, std::cmp::Reverse(*k))).map_or(
                    MasterInfo::NONE,
                    |((master, basis), _)| MasterInfo { master, basis, term: 0, epoch: 0 },
                )
            }
        };
        if m != self.master {
            self.master = m;
            self.actions.push_back(Action::Event(Event::MasterChanged {
                master: m.master,
                basis: m.basis,
                term: m.term,
                epoch: m.epoch,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Identity, Role};

    fn id(role: Role, seed: u8) -> NodeId {
        Identity::from_seed(role, [seed; 32]).id()
    }

    fn entry(seed: u8) -> DirEntry {
        DirEntry { id: id(Role::Peer, seed), name: format!("p{seed}"), addrs: PeerAddrs::default() }
    }

    /// A peer with one server link and an empty snapshot (version 0) from it.
    fn peer_with_server(now: Instant) -> (Peer, NodeId) {
        let backoff = Backoff {
            min: Duration::from_millis(250),
            max: Duration::from_secs(5),
            forget_after: Duration::from_secs(60),
        };
        let mut p = Peer::new(
            id(Role::Peer, 1),
            Vec::new(),
            &[],
            PeerConfig::default(),
            backoff,
            NodeRng::from_seed([5; 32]),
            now,
        );
        let server = id(Role::Server, 2);
        let meta = LinkMeta {
            id: server,
            name: "s".into(),
            incarnation: 1,
            remote_addr: SocketAddr::from(([192, 0, 2, 1], 4433)),
            addrs: Vec::new(),
            elder: false,
            join: false,
            lookup: false,
            probe_key: None,
        };
        p.on_link_up(now, &meta, None);
        p.on_message(now, server, PeerMsg::Directory { version: 0, peers: Vec::new() });
        while p.poll_action().is_some() {}
        (p, server)
    }

    fn resync_requests(p: &mut Peer) -> usize {
        std::iter::from_fn(|| p.poll_action())
            .filter(|a| {
                matches!(
                    a,
                    Action::Send { msg: Control::Peer(PeerMsg::Resync), .. }
                        | Action::Broadcast { msg: Control::Peer(PeerMsg::Resync), .. }
                )
            })
            .count()
    }

    #[test]
    fn a_gap_in_deltas_asks_for_one_snapshot_and_recovers() {
        let now = crate::test_support::epoch();
        let (mut p, s) = peer_with_server(now);
        p.on_message(now, s, PeerMsg::DirAdd { version: 1, entry: entry(3) });
        assert_eq!(p.peers().len(), 1);
        assert_eq!(resync_requests(&mut p), 0, "in order: no resync");

        // Version 2 went missing: one request, and later deltas wait for the snapshot.
        p.on_message(now, s, PeerMsg::DirAdd { version: 3, entry: entry(4) });
        p.on_message(now, s, PeerMsg::DirRemove { version: 4, id: entry(3).id });
        assert_eq!(resync_requests(&mut p), 1);
        assert_eq!(p.resyncs(), 1);
        assert_eq!(p.peers().len(), 1, "nothing applied across the gap");

        // The snapshot replaces the table, and deltas apply again after it.
        p.on_message(now, s, PeerMsg::Directory { version: 4, peers: vec![entry(4)] });
        p.on_message(now, s, PeerMsg::DirAdd { version: 5, entry: entry(5) });
        let mut online: Vec<String> = p.peers().into_iter().map(|x| x.name).collect();
        online.sort();
        assert_eq!(online, ["p4", "p5"]);
        assert_eq!(resync_requests(&mut p), 0);
        assert_eq!(p.resyncs(), 1);
    }
}
