//! The path layer: where the packets of each peer-to-peer connection go.
//!
//! QUIC between two peers addresses the remote peer by a stable synthetic
//! *mapped address* (an IPv6 unique-local address, one per remote peer).
//! Below QUIC, this layer decides packet by packet what that address
//! currently means — a relay through a server both peers are connected to,
//! or a direct UDP address found by hole punching — so QUIC never sees a
//! path change except through [`PathOut::Switched`], on which the node resets
//! QUIC's RTT and congestion state (the old path's numbers say nothing about
//! the new one).
//!
//! Hole punching follows ICE, Tailscale's disco and iroh's magicsock:
//!
//! * **Candidates** of the remote: its interface addresses, the addresses
//!   servers observed it at (both from the directory and, fresher, from a
//!   `Candidates` message over the relayed connection), peer-reflexive
//!   addresses its authenticated pings came from, and — when the remote's
//!   NAT is endpoint-dependent and ours is not, and the ports servers saw
//!   lie close together (a sequential allocator) — a bounded window of
//!   predicted ports just past them.
//! * **Rounds**: both sides ping every candidate on a short schedule
//!   ([`TICKS`]). A round starts on both sides when the connection comes up
//!   (the handshake through the relay is the coordination), and later rounds
//!   are announced with a `Candidates` message so the other side starts one
//!   at once. A valid ping is answered with a pong to the address it came
//!   from, and from an unvalidated address it also triggers a ping back, so
//!   the side whose filter opened first lets the other through within one
//!   round trip. Pinging continues for two ticks after the first success so
//!   the other side's filter opens too. Failed rounds are retried with
//!   exponential backoff ([`FIRST_RETRY`] doubling to [`MAX_RETRY`]); two
//!   endpoint-dependent NATs are not probed at all (only interface
//!   addresses, for peers on one LAN).
//! * **Selection**: a pong validates a path and measures its RTT. Traffic
//!   starts on the relay; it moves to the first validated direct path, and
//!   from one direct path to another only if that is [`HYSTERESIS`] faster.
//! * **Liveness**: a direct path whose sends go unanswered for a few RTTs is
//!   pinged; if the pings go unanswered too, traffic falls back to the relay
//!   and a new round starts. An idle direct path is kept open by pings every
//!   keep-alive interval; when a path died after an idle gap (a NAT binding
//!   shorter than the keep-alive), the interval for that peer drops below the
//!   gap.

use crate::identity::NodeId;
use crate::proto::{PathKind, PeerAddrs};
use crate::rng::NodeRng;
use crate::wire::{FrameType, PROBE_MAC_LEN, ProbeFrame, TXID_LEN};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Prefix of mapped addresses: `fd70:3270:6d61::/48` (a unique-local range,
/// never routed; "p2pma").
const MAPPED_PREFIX: [u16; 3] = [0xfd70, 0x3270, 0x6d61];

/// When a round pings, as offsets from its start (ms). Dense at first, when
/// the other side is starting its own round, then sparser.
pub(crate) const TICKS: [u64; 7] = [0, 100, 200, 400, 700, 1100, 1600];
/// How long a round waits for pongs after its last tick.
const ROUND_TAIL: Duration = Duration::from_millis(900);
/// Ticks that still ping after the first success (so the other side's
/// filter opens too).
const TICKS_AFTER_SUCCESS: usize = 2;
/// Wait before retrying after a failed round; doubles per failure.
pub(crate) const FIRST_RETRY: Duration = Duration::from_secs(2);
/// Longest wait between rounds.
pub(crate) const MAX_RETRY: Duration = Duration::from_secs(300);
/// Ports predicted past the highest observed one of an endpoint-dependent NAT.
const PREDICT_WINDOW: u16 = 64;
/// Observed ports further apart than this look randomly allocated: no
/// prediction.
const PREDICT_SPREAD: u16 = 64;
/// Ticks of a round that also ping predicted ports: at most
/// `PREDICT_WINDOW * PREDICT_TICKS` (256) predicted probes per round.
const PREDICT_TICKS: usize = 4;
/// Most candidates kept per remote peer.
const MAX_CANDIDATES: usize = 32;
/// Least time between two triggered pings to one address.
const TRIGGER_GAP: Duration = Duration::from_millis(20);
/// How long an unanswered ping is remembered.
const PING_TTL: Duration = Duration::from_secs(5);
/// Ping counters accepted below the highest one seen (pings to several
/// candidates overtake each other on different paths).
const REPLAY_WINDOW: u64 = 128;
/// Real addresses mapped to one peer at most (validated round trips); the
/// oldest not in use is forgotten first. This bounds the demultiplexing
/// table at this many entries per connected peer.
const MAX_MAPPED: usize = 8;
/// Another direct path must be this much faster to take over (new RTT below
/// 3/4 of the current one).
pub(crate) const HYSTERESIS: (u32, u32) = (3, 4);
/// Pings sent to a suspect path before it is given up (with 5% loss each
/// way, all three round trips fail about once in a thousand suspicions).
const SUSPECT_PINGS: u32 = 3;
/// Shortest keep-alive interval learned from a lost binding.
const MIN_KEEPALIVE: Duration = Duration::from_secs(2);
/// Idle gaps shorter than this do not teach a keep-alive interval (a NAT that
/// drops a binding that quickly is rebooting, not timing out).
const LEARN_GAP: Duration = Duration::from_secs(5);

/// Whether `addr` is a mapped address (as opposed to a real one).
pub(crate) fn is_mapped(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V6(ip) => ip.segments()[..3] == MAPPED_PREFIX,
        IpAddr::V4(_) => false,
    }
}

/// Where the next packet for a peer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Straight to this address.
    Direct(SocketAddr),
    /// Through this server.
    Relay(NodeId),
}

/// What the path layer asks of the peer role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathOut {
    /// Send this raw frame to this address.
    Datagram { to: SocketAddr, data: Vec<u8> },
    /// The route of `peer` changed (to or from a direct address).
    Switched { peer: NodeId },
    /// Tell `peer` our candidates over the connection (`reply` when
    /// answering its announcement).
    Candidates { peer: NodeId, reply: bool },
}

/// What our side looks like, for the round logic.
#[derive(Debug, Clone, Default)]
pub(crate) struct LocalView {
    /// Our interface addresses.
    pub(crate) local: Vec<SocketAddr>,
    /// Whether our NAT is endpoint-dependent (servers see different ports).
    pub(crate) edm: bool,
}

/// Counters of probing work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ProbeStats {
    pub(crate) pings: u64,
    pub(crate) pongs: u64,
    pub(crate) bytes: u64,
    pub(crate) rejected: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum CandKind {
    /// One of the remote's interface addresses.
    Local,
    /// An address a server observed the remote at.
    Observed,
    /// Where an authenticated ping or pong of the remote came from.
    Reflexive,
}

#[derive(Debug, Clone)]
struct Cand {
    kind: CandKind,
    /// Latest (smoothed) RTT if validated.
    rtt: Option<Duration>,
    /// Our address as the remote saw our ping on this path.
    seen_as: Option<SocketAddr>,
    last_ping: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Round {
    started: Instant,
    /// Next index into [`TICKS`].
    tick: usize,
    /// Tick index at which a pong first arrived.
    success_tick: Option<usize>,
    /// Ports to try on an endpoint-dependent remote.
    predicted: Vec<SocketAddr>,
}

/// Liveness of the direct path in use.
#[derive(Debug, Clone, Default)]
struct Liveness {
    last_rx: Option<Instant>,
    last_tx: Option<Instant>,
    /// First send since the last receipt, and the activity before it.
    unanswered: Option<(Instant, Instant)>,
    /// Probing an unanswered path: give up at this time.
    suspect_until: Option<Instant>,
    next_suspect_ping: Option<Instant>,
}

/// Which ping counters of one remote were seen (RFC 4303 §3.4.3 style): the
/// highest, and a bitmap of the [`REPLAY_WINDOW`] below it. A ping whose
/// counter was seen, or lies below the window, is a replay.
#[derive(Debug, Clone, Copy, Default)]
struct ReplayWindow {
    top: u64,
    /// Bit `i` set: counter `top - i` was seen.
    seen: u128,
}

impl ReplayWindow {
    /// Records `counter`; false if it is a replay (or too old to tell).
    fn accept(&mut self, counter: u64) -> bool {
        if counter == 0 {
            return false;
        }
        if counter > self.top {
            let shift = counter - self.top;
            self.seen = if shift >= REPLAY_WINDOW { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.top = counter;
            return true;
        }
        let back = self.top - counter;
        if back >= REPLAY_WINDOW || self.seen & (1 << back) != 0 {
            return false;
        }
        self.seen |= 1 << back;
        true
    }
}

/// Everything about the paths to one remote peer.
#[derive(Debug)]
pub(crate) struct PeerPath {
    pub(crate) mapped: SocketAddr,
    /// The server relaying to this peer, if any common server is known.
    pub(crate) relay: Option<NodeId>,
    /// The direct address in use, if any.
    pub(crate) direct: Option<SocketAddr>,
    /// Probe authentication key (from the end-to-end TLS session); `None`
    /// while not connected.
    key: Option<ring::hmac::Key>,
    /// The remote's own view of its addresses (directory and `Candidates`).
    remote: PeerAddrs,
    cands: BTreeMap<SocketAddr, Cand>,
    pending: BTreeMap<[u8; TXID_LEN], (SocketAddr, Instant)>,
    /// Counter of our next ping under the current key (the first 8 bytes
    /// of its transaction ID).
    next_ping: u64,
    /// Counters of the remote's pings already seen under the current key.
    replay: ReplayWindow,
    /// Real addresses mapped to this peer, oldest first.
    mapped_addrs: Vec<SocketAddr>,
    round: Option<Round>,
    next_round: Option<Instant>,
    failures: u32,
    live: Liveness,
    keepalive: Duration,
}

impl PeerPath {
    fn new(mapped: SocketAddr, keepalive: Duration) -> Self {
        Self {
            mapped,
            relay: None,
            direct: None,
            key: None,
            remote: PeerAddrs::default(),
            cands: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_ping: 1,
            replay: ReplayWindow::default(),
            mapped_addrs: Vec::new(),
            round: None,
            next_round: None,
            failures: 0,
            live: Liveness::default(),
            keepalive,
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let round = self.round.as_ref().map(|r| match TICKS.get(r.tick) {
            Some(t) => r.started + Duration::from_millis(*t),
            None => r.started + Duration::from_millis(TICKS[TICKS.len() - 1]) + ROUND_TAIL,
        });
        let keepalive = self.direct.and(self.live.last_tx).map(|t| t + self.keepalive);
        let l = &self.live;
        let live = self.direct.and_then(|_| match l.suspect_until {
            Some(until) => Some(l.next_suspect_ping.map_or(until, |p| p.min(until))),
            None => l.unanswered.map(|(since, _)| since + self.suspect_after()),
        });
        let next_round = self.next_round.filter(|_| self.round.is_none());
        [round, next_round, keepalive, live].into_iter().flatten().min()
    }

    fn rtt(&self) -> Duration {
        self.direct.and_then(|a| self.cands.get(&a)).and_then(|c| c.rtt).unwrap_or(Duration::from_millis(100))
    }

    /// How long sends may go unanswered before the path is probed.
    fn suspect_after(&self) -> Duration {
        (self.rtt() * 3).max(Duration::from_millis(250))
    }

    /// How long the probing of a suspect path lasts.
    fn probe_timeout(&self) -> Duration {
        (self.rtt() * 4).max(Duration::from_millis(500))
    }

    /// The best validated candidate and its RTT.
    fn best(&self) -> Option<(SocketAddr, Duration)> {
        self.cands.iter().filter_map(|(a, c)| Some((*a, c.rtt?))).min_by_key(|(a, rtt)| (*rtt, *a))
    }
}

/// Mapped addresses and paths of remote peers.
#[derive(Debug)]
pub(crate) struct Paths {
    me: NodeId,
    enabled: bool,
    keepalive: Duration,
    by_peer: BTreeMap<NodeId, PeerPath>,
    by_mapped: BTreeMap<SocketAddr, NodeId>,
    /// Real addresses authenticated as a peer's (its pings or pongs came
    /// from them): QUIC packets from them belong to that peer.
    by_addr: BTreeMap<SocketAddr, NodeId>,
    next: u64,
    rng: NodeRng,
    pub(crate) stats: ProbeStats,
    out: Vec<PathOut>,
}

impl Paths {
    /// `enabled`: whether to hole-punch at all; `keepalive`: the default
    /// keep-alive interval of idle direct paths.
    pub(crate) fn new(me: NodeId, enabled: bool, keepalive: Duration, rng: NodeRng) -> Self {
        Self {
            rng,
            me,
            enabled,
            keepalive,
            by_peer: BTreeMap::new(),
            by_mapped: BTreeMap::new(),
            by_addr: BTreeMap::new(),
            next: 0,
            stats: ProbeStats::default(),
            out: Vec::new(),
        }
    }

    /// The mapped address of `peer`, allocated on first use.
    pub(crate) fn mapped(&mut self, peer: NodeId) -> SocketAddr {
        if let Some(p) = self.by_peer.get(&peer) {
            return p.mapped;
        }
        self.next += 1;
        let n = self.next;
        let ip = Ipv6Addr::new(
            MAPPED_PREFIX[0],
            MAPPED_PREFIX[1],
            MAPPED_PREFIX[2],
            0,
            (n >> 48) as u16,
            (n >> 32) as u16,
            (n >> 16) as u16,
            n as u16,
        );
        let mapped = SocketAddr::new(IpAddr::V6(ip), 1);
        self.by_peer.insert(peer, PeerPath::new(mapped, self.keepalive));
        self.by_mapped.insert(mapped, peer);
        mapped
    }

    /// The peer behind a mapped address.
    pub(crate) fn peer_of(&self, mapped: &SocketAddr) -> Option<NodeId> {
        self.by_mapped.get(mapped).copied()
    }

    pub(crate) fn get(&self, peer: &NodeId) -> Option<&PeerPath> {
        self.by_peer.get(peer)
    }

    /// Every peer with a path.
    pub(crate) fn peers(&self) -> impl Iterator<Item = &NodeId> {
        self.by_peer.keys()
    }

    /// Takes what the layer wants done.
    pub(crate) fn take_out(&mut self) -> Vec<PathOut> {
        std::mem::take(&mut self.out)
    }

    /// Sets the relay of `peer`; true if it changed.
    pub(crate) fn set_relay(&mut self, peer: NodeId, relay: Option<NodeId>) -> bool {
        self.mapped(peer);
        match self.by_peer.get_mut(&peer) {
            Some(p) if p.relay != relay => {
                p.relay = relay;
                true
            }
            _ => false,
        }
    }

    /// The path kind of a direct address in use for `peer`: `Direct` when
    /// neither side is translated on it (both ends are interface addresses),
    /// `Punched` otherwise.
    pub(crate) fn direct_kind(&self, peer: &NodeId, view: &LocalView) -> Option<PathKind> {
        let p = self.by_peer.get(peer)?;
        let addr = p.direct?;
        let seen_as = p.cands.get(&addr).and_then(|c| c.seen_as);
        let untranslated = p.remote.local.contains(&addr) && seen_as.is_some_and(|s| view.local.contains(&s));
        Some(if untranslated { PathKind::Direct } else { PathKind::Punched })
    }

    /// Where the next packet for `mapped` goes, recording a direct send.
    pub(crate) fn route(&mut self, now: Instant, mapped: &SocketAddr) -> Option<(NodeId, Option<Route>)> {
        let peer = self.peer_of(mapped)?;
        let p = self.by_peer.get_mut(&peer)?;
        if let Some(addr) = p.direct {
            sent(&mut p.live, now);
            return Some((peer, Some(Route::Direct(addr))));
        }
        Some((peer, p.relay.map(Route::Relay)))
    }

    /// A QUIC packet arrived from real address `from`: if it is a known
    /// direct address of a peer, the mapped address QUIC knows the peer by.
    pub(crate) fn demux(&mut self, now: Instant, from: &SocketAddr) -> Option<SocketAddr> {
        let peer = *self.by_addr.get(from)?;
        let p = self.by_peer.get_mut(&peer)?;
        if p.direct == Some(*from) {
            heard(&mut p.live, now);
        }
        Some(p.mapped)
    }

    /// The connection to `peer` is up: `key` authenticates its probes.
    /// Starts the first round.
    pub(crate) fn connected(&mut self, now: Instant, peer: NodeId, key: [u8; 32], view: &LocalView) {
        self.mapped(peer);
        let Some(p) = self.by_peer.get_mut(&peer) else { return };
        p.key = Some(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key));
        // A new key starts a new counter space: pings of an earlier session
        // fail its tag anyway.
        p.next_ping = 1;
        p.replay = ReplayWindow::default();
        p.failures = 0;
        self.start_round(now, peer, false, view);
    }

    /// The connection to `peer` is gone: forget everything but its mapped
    /// address and relay.
    pub(crate) fn disconnected(&mut self, peer: NodeId) {
        let Some(p) = self.by_peer.get_mut(&peer) else { return };
        let mapped = p.mapped;
        let relay = p.relay;
        *p = PeerPath::new(mapped, self.keepalive);
        p.relay = relay;
        self.by_addr.retain(|_, id| *id != peer);
    }

    /// The remote's addresses as the directory or its `Candidates` message
    /// tell them. A change while no direct path is in use makes a new round
    /// due soon.
    pub(crate) fn set_remote(&mut self, now: Instant, peer: NodeId, addrs: &PeerAddrs) {
        let Some(p) = self.by_peer.get_mut(&peer) else { return };
        // The latest report is the truth about the remote (stale observed
        // ports would make a NAT look endpoint-dependent); candidates learned
        // from earlier reports stay, bounded, in case they still work.
        let mut fresh = addrs.clone();
        fresh.local.truncate(MAX_CANDIDATES / 4);
        fresh.observed.truncate(MAX_CANDIDATES / 4);
        if fresh == p.remote {
            return;
        }
        p.remote = fresh;
        for a in &p.remote.local {
            add_cand(&mut p.cands, &p.remote, *a, CandKind::Local);
        }
        for a in &p.remote.observed {
            add_cand(&mut p.cands, &p.remote, *a, CandKind::Observed);
        }
        if p.key.is_some() && p.direct.is_none() && p.round.is_none() {
            p.failures = 0;
            let soon = now + Duration::from_millis(50);
            p.next_round = Some(p.next_round.map_or(soon, |t| t.min(soon)));
        }
    }

    /// The remote announced its candidates; unless it is a reply, it has just
    /// started a round, so start ours.
    pub(crate) fn on_candidates(
        &mut self,
        now: Instant,
        peer: NodeId,
        addrs: &PeerAddrs,
        reply: bool,
        view: &LocalView,
    ) {
        self.set_remote(now, peer, addrs);
        let Some(p) = self.by_peer.get(&peer) else { return };
        if reply || p.round.is_some() {
            return;
        }
        self.start_round(now, peer, true, view);
    }

    fn start_round(&mut self, now: Instant, peer: NodeId, responsive: bool, view: &LocalView) {
        if !self.enabled {
            return;
        }
        let Some(p) = self.by_peer.get_mut(&peer) else { return };
        if p.key.is_none() {
            return;
        }
        p.next_round = None;
        let both_edm = view.edm && is_edm(&p.remote.observed);
        let predicted = if !view.edm { predict(&p.remote.observed, &p.cands) } else { Vec::new() };
        if both_edm && p.remote.local.is_empty() {
            // Two endpoint-dependent NATs: nothing to punch. Stay relayed.
            return;
        }
        p.round = Some(Round { started: now, tick: 0, success_tick: None, predicted });
        self.out.push(PathOut::Candidates { peer, reply: responsive });
        self.handle_peer_timeout(now, peer, view);
    }

    /// Runs every due timer.
    pub(crate) fn handle_timeout(&mut self, now: Instant, view: &LocalView) {
        let due: Vec<NodeId> = self
            .by_peer
            .iter()
            .filter(|(_, p)| p.next_deadline().is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for peer in due {
            if let Some(p) = self.by_peer.get_mut(&peer)
                && p.next_round.is_some_and(|t| t <= now)
                && p.round.is_none()
            {
                p.next_round = None;
                self.start_round(now, peer, false, view);
            }
            self.handle_peer_timeout(now, peer, view);
            self.end_round_if_done(now, peer);
        }
    }

    /// The earliest deadline of any peer's paths.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.by_peer.values().filter_map(PeerPath::next_deadline).min()
    }

    fn handle_peer_timeout(&mut self, now: Instant, peer: NodeId, view: &LocalView) {
        let Some(p) = self.by_peer.get_mut(&peer) else { return };
        p.pending.retain(|_, (_, sent)| now.saturating_duration_since(*sent) < PING_TTL);
        let mut targets: Vec<SocketAddr> = Vec::new();
        // Round ticks.
        if let Some(r) = p.round.as_mut() {
            while TICKS.get(r.tick).is_some_and(|t| r.started + Duration::from_millis(*t) <= now) {
                let after_success = r.success_tick.is_some_and(|s| r.tick > s + TICKS_AFTER_SUCCESS);
                if !after_success {
                    let both_edm = view.edm && is_edm(&p.remote.observed);
                    for (a, c) in &p.cands {
                        if !both_edm || c.kind == CandKind::Local {
                            targets.push(*a);
                        }
                    }
                    if r.tick < PREDICT_TICKS {
                        targets.extend(r.predicted.iter().copied());
                    }
                }
                r.tick += 1;
            }
        }
        // Liveness of the direct path in use.
        if let Some(addr) = p.direct {
            let (suspect_after, probe_timeout, keepalive) =
                (p.suspect_after(), p.probe_timeout(), p.keepalive);
            let l = &mut p.live;
            match l.suspect_until {
                Some(until) if until <= now => {
                    self.lost_direct(now, peer, view);
                    return;
                }
                Some(until) if l.next_suspect_ping.is_some_and(|t| t <= now) => {
                    // Spaced pings, so one lost packet does not condemn a path.
                    let next = now + probe_timeout / SUSPECT_PINGS;
                    l.next_suspect_ping = (next < until).then_some(next);
                    targets.push(addr);
                }
                Some(_) => {}
                None if l.unanswered.is_some_and(|(since, _)| since + suspect_after <= now) => {
                    // Sends went unanswered: ask the path directly.
                    l.suspect_until = Some(now + probe_timeout);
                    l.next_suspect_ping = Some(now + probe_timeout / SUSPECT_PINGS);
                    targets.push(addr);
                }
                // Idle: keep the NAT bindings on both sides open.
                None if l.last_tx.is_some_and(|t| t + keepalive <= now) => targets.push(addr),
                None => {}
            }
        }
        targets.sort();
        targets.dedup();
        for to in targets {
            self.ping(now, peer, to);
        }
    }

    fn end_round_if_done(&mut self, now: Instant, peer: NodeId) {
        let Some(p) = self.by_peer.get_mut(&peer) else { return };
        let Some(r) = &p.round else { return };
        let last = r.started + Duration::from_millis(TICKS[TICKS.len() - 1]) + ROUND_TAIL;
        let done_early = r.success_tick.is_some_and(|s| r.tick > s + TICKS_AFTER_SUCCESS);
        if now < last && !done_early {
            return;
        }
        let success = r.success_tick.is_some();
        p.round = None;
        if success || p.direct.is_some() {
            p.failures = 0;
            p.next_round = None;
        } else {
            p.failures = p.failures.saturating_add(1);
            let backoff = FIRST_RETRY.saturating_mul(1 << (p.failures - 1).min(16)).min(MAX_RETRY);
            p.next_round = Some(now + self.rng.jitter(backoff, 0.2));
        }
    }

    fn ping(&mut self, now: Instant, peer: NodeId, to: SocketAddr) {
        let me = self.me;
        let Some(p) = self.by_peer.get_mut(&peer) else { return };
        let Some(key) = &p.key else { return };
        // A counter (so the receiver can refuse replays) and random bytes
        // (so a pong cannot be forged by guessing the next counter).
        let mut txid = [0u8; TXID_LEN];
        txid[..8].copy_from_slice(&p.next_ping.to_be_bytes());
        self.rng.fill(&mut txid[8..]);
        p.next_ping += 1;
        let mac = tag(key, FrameType::Ping, &me, &peer, &txid, None);
        let mut data = Vec::with_capacity(crate::wire::HEADER_LEN + crate::wire::PROBE_LEN);
        if (ProbeFrame { from: me, txid, addr: None, mac }).encode(FrameType::Ping, &mut data).is_err() {
            return;
        }
        p.pending.insert(txid, (to, now));
        if let Some(c) = p.cands.get_mut(&to) {
            c.last_ping = Some(now);
        }
        if p.direct == Some(to) {
            sent(&mut p.live, now);
        }
        self.stats.pings += 1;
        self.stats.bytes += data.len() as u64;
        self.out.push(PathOut::Datagram { to, data });
    }

    /// Whether a probe is authentic: its sender is a connected peer and the
    /// tag checks out under that connection's key. Anything else is counted
    /// as rejected.
    fn authentic(&mut self, kind: FrameType, probe: &ProbeFrame) -> bool {
        let me = self.me;
        let ok = self
            .by_peer
            .get(&probe.from)
            .and_then(|p| p.key.as_ref())
            .is_some_and(|key| verify(key, kind, &probe.from, &me, &probe.txid, probe.addr, &probe.mac));
        if !ok {
            self.stats.rejected += 1;
        }
        ok
    }

    /// A ping arrived from `from`. An authentic, fresh ping (its counter not
    /// seen before under this session's key) is answered with a pong to
    /// `from` and teaches a peer-reflexive candidate; from an address not
    /// validated yet it also triggers a ping back. A ping alone never maps
    /// `from` to the peer: only a round trip we started and that came back
    /// from the address we pinged does (see [`Paths::on_pong`]), so a
    /// captured ping replayed from a spoofed source teaches nothing.
    /// `reserved` says whether `from` belongs to a server or another
    /// established connection: such addresses are never a peer's path.
    pub(crate) fn on_ping(
        &mut self,
        now: Instant,
        from: SocketAddr,
        probe: &ProbeFrame,
        reserved: impl FnOnce(&SocketAddr) -> bool,
    ) {
        let (me, peer) = (self.me, probe.from);
        if !self.authentic(FrameType::Ping, probe) {
            return;
        }
        let Some(p) = self.by_peer.get_mut(&peer) else { return };
        let counter = u64::from_be_bytes(probe.txid[..8].try_into().unwrap_or([0; 8]));
        if !p.replay.accept(counter) || reserved(&from) {
            self.stats.rejected += 1;
            return;
        }
        let Some(key) = &p.key else { return };
        let mac = tag(key, FrameType::Pong, &me, &peer, &probe.txid, Some(from));
        let mut data = Vec::with_capacity(crate::wire::HEADER_LEN + crate::wire::PROBE_LEN);
        if (ProbeFrame { from: me, txid: probe.txid, addr: Some(from), mac })
            .encode(FrameType::Pong, &mut data)
            .is_ok()
        {
            self.stats.pongs += 1;
            self.stats.bytes += data.len() as u64;
            self.out.push(PathOut::Datagram { to: from, data });
        }
        add_cand(&mut p.cands, &p.remote, from, CandKind::Reflexive);
        if p.direct == Some(from) {
            heard(&mut p.live, now);
        }
        let validated = p.cands.get(&from).is_some_and(|c| c.rtt.is_some());
        let recently = p
            .cands
            .get(&from)
            .and_then(|c| c.last_ping)
            .is_some_and(|t| now.saturating_duration_since(t) < TRIGGER_GAP);
        if self.enabled && !validated && !recently {
            self.ping(now, peer, from);
        }
    }

    /// A pong arrived from `from`: if it answers one of our pings and comes
    /// from the very address that ping went to (a symmetric round trip, as
    /// ICE requires), the path is validated with a fresh RTT and `from` is
    /// mapped to the peer. A pong is accepted once; one from elsewhere, or
    /// for a reserved address (a server's, another connection's), is refused.
    pub(crate) fn on_pong(
        &mut self,
        now: Instant,
        from: SocketAddr,
        probe: &ProbeFrame,
        reserved: impl FnOnce(&SocketAddr) -> bool,
    ) {
        let peer = probe.from;
        if !self.authentic(FrameType::Pong, probe) {
            return;
        }
        let Some(p) = self.by_peer.get_mut(&peer) else { return };
        let answered = p.pending.get(&probe.txid).is_some_and(|(pinged, _)| *pinged == from);
        let owner = self.by_addr.get(&from).copied();
        // An address another peer is using right now is not up for grabs.
        let taken =
            owner.is_some_and(|o| o != peer && self.by_peer.get(&o).is_some_and(|q| q.direct == Some(from)));
        if !answered || taken || reserved(&from) {
            self.stats.rejected += 1;
            return;
        }
        let Some(p) = self.by_peer.get_mut(&peer) else { return };
        let Some((pinged, sent)) = p.pending.remove(&probe.txid) else { return };
        let sample = now.saturating_duration_since(sent);
        add_cand(&mut p.cands, &p.remote, pinged, CandKind::Reflexive);
        if let Some(c) = p.cands.get_mut(&pinged) {
            c.rtt = Some(c.rtt.map_or(sample, |r| (r * 7 + sample) / 8));
            c.seen_as = probe.addr;
        }
        if p.direct == Some(pinged) {
            heard(&mut p.live, now);
        }
        if let Some(r) = p.round.as_mut()
            && r.success_tick.is_none()
        {
            r.success_tick = Some(r.tick.saturating_sub(1));
        }
        self.map_addr(peer, from, owner);
        self.select(now, peer);
    }

    /// Maps real address `addr` to `peer` after a validated round trip,
    /// taking it from its previous owner (whose path through it, if any,
    /// is not in use) and forgetting `peer`'s oldest unused mapping beyond
    /// [`MAX_MAPPED`].
    fn map_addr(&mut self, peer: NodeId, addr: SocketAddr, owner: Option<NodeId>) {
        if let Some(old) = owner.filter(|o| *o != peer)
            && let Some(q) = self.by_peer.get_mut(&old)
        {
            q.mapped_addrs.retain(|a| *a != addr);
        }
        self.by_addr.insert(addr, peer);
        let Some(p) = self.by_peer.get_mut(&peer) else { return };
        p.mapped_addrs.retain(|a| *a != addr);
        p.mapped_addrs.push(addr);
        while p.mapped_addrs.len() > MAX_MAPPED {
            let Some(i) = p.mapped_addrs.iter().position(|a| p.direct != Some(*a)) else { break };
            let gone = p.mapped_addrs.remove(i);
            self.by_addr.remove(&gone);
        }
    }

    /// Real addresses currently mapped to peers (the demultiplexing table).
    #[cfg(test)]
    pub(crate) fn mapped_count(&self) -> usize {
        self.by_addr.len()
    }

    /// Moves `peer` to its best validated direct path if it has none, or if
    /// the best one is faster than the current one by the hysteresis margin.
    fn select(&mut self, now: Instant, peer: NodeId) {
        let Some(p) = self.by_peer.get_mut(&peer) else { return };
        let Some((best, rtt)) = p.best() else { return };
        let switch = match p.direct {
            None => true,
            Some(cur) if cur == best => false,
            Some(cur) => {
                let cur_rtt = p.cands.get(&cur).and_then(|c| c.rtt).unwrap_or(Duration::MAX);
                rtt * HYSTERESIS.1 < cur_rtt.saturating_mul(HYSTERESIS.0)
            }
        };
        if switch {
            p.direct = Some(best);
            p.live = Liveness { last_rx: Some(now), last_tx: Some(now), ..Liveness::default() };
            self.out.push(PathOut::Switched { peer });
        }
    }

    /// The direct path of `peer` stopped answering: back to the relay, learn
    /// a shorter keep-alive if it died idle, and start a new round.
    fn lost_direct(&mut self, now: Instant, peer: NodeId, view: &LocalView) {
        let Some(p) = self.by_peer.get_mut(&peer) else { return };
        if p.direct.take().is_none() {
            return;
        }
        if let Some((since, before)) = p.live.unanswered {
            let gap = since.saturating_duration_since(before);
            if gap >= LEARN_GAP {
                // A third of the gap: comfortably inside the binding timeout.
                p.keepalive = p.keepalive.min((gap / 3).max(MIN_KEEPALIVE));
            }
        }
        p.live = Liveness::default();
        // The other validated paths may be as dead (same NAT): re-validate all.
        for c in p.cands.values_mut() {
            c.rtt = None;
        }
        p.round = None;
        p.failures = 0;
        self.out.push(PathOut::Switched { peer });
        self.start_round(now, peer, false, view);
    }

    /// The keep-alive interval of `peer`'s direct path (learned or default).
    #[cfg(test)]
    pub(crate) fn keepalive(&self, peer: &NodeId) -> Option<Duration> {
        self.by_peer.get(peer).map(|p| p.keepalive)
    }
}

/// A packet went out on the direct path: if nothing has been heard since,
/// the clock for an answer starts now.
fn sent(l: &mut Liveness, now: Instant) {
    if l.unanswered.is_none() {
        let before = l.last_rx.into_iter().chain(l.last_tx).max().unwrap_or(now);
        l.unanswered = Some((now, before));
    }
    l.last_tx = Some(now);
}

fn heard(l: &mut Liveness, now: Instant) {
    l.last_rx = Some(now);
    l.unanswered = None;
    l.suspect_until = None;
    l.next_suspect_ping = None;
}

fn add_cand(cands: &mut BTreeMap<SocketAddr, Cand>, remote: &PeerAddrs, addr: SocketAddr, kind: CandKind) {
    if let Some(c) = cands.get_mut(&addr) {
        c.kind = c.kind.min(kind);
        return;
    }
    if cands.len() >= MAX_CANDIDATES {
        // Make room: drop an unvalidated candidate the remote no longer reports.
        let current = |a: &SocketAddr| remote.local.contains(a) || remote.observed.contains(a);
        let victim = cands.iter().find(|(a, c)| c.rtt.is_none() && !current(a)).map(|(a, _)| *a);
        match victim {
            Some(v) => {
                cands.remove(&v);
            }
            None => return,
        }
    }
    cands.insert(addr, Cand { kind, rtt: None, seen_as: None, last_ping: None });
}

/// Whether observed addresses show an endpoint-dependent NAT: one IP seen
/// with different ports by different servers.
pub(crate) fn is_edm(observed: &[SocketAddr]) -> bool {
    let mut ports: BTreeMap<IpAddr, BTreeSet<u16>> = BTreeMap::new();
    for a in observed {
        ports.entry(a.ip()).or_default().insert(a.port());
    }
    ports.values().any(|p| p.len() > 1)
}

/// Ports an endpoint-dependent NAT is likely to pick next: many allocate
/// sequentially, so the window just past the highest port servers saw —
/// but only if the ports servers saw lie close together (a NAT picking
/// random ports scatters them, and predicting would be wasted probes).
fn predict(observed: &[SocketAddr], known: &BTreeMap<SocketAddr, Cand>) -> Vec<SocketAddr> {
    if !is_edm(observed) {
        return Vec::new();
    }
    let mut range: BTreeMap<IpAddr, (u16, u16)> = BTreeMap::new();
    for a in observed {
        let r = range.entry(a.ip()).or_insert((a.port(), a.port()));
        *r = (r.0.min(a.port()), r.1.max(a.port()));
    }
    let mut out = Vec::new();
    for (ip, (low, top)) in range {
        if top - low > PREDICT_SPREAD {
            continue;
        }
        for d in 1..=PREDICT_WINDOW {
            let Some(port) = top.checked_add(d) else { break };
            let a = SocketAddr::new(ip, port);
            if !known.contains_key(&a) {
                out.push(a);
            }
        }
    }
    out.truncate(PREDICT_WINDOW as usize * 2);
    out
}

fn tag(
    key: &ring::hmac::Key,
    kind: FrameType,
    from: &NodeId,
    to: &NodeId,
    txid: &[u8; TXID_LEN],
    addr: Option<SocketAddr>,
) -> [u8; PROBE_MAC_LEN] {
    let t = ring::hmac::sign(key, &ProbeFrame::signed_bytes(kind, from, to, txid, addr));
    let mut out = [0u8; PROBE_MAC_LEN];
    out.copy_from_slice(&t.as_ref()[..PROBE_MAC_LEN]);
    out
}

fn verify(
    key: &ring::hmac::Key,
    kind: FrameType,
    from: &NodeId,
    to: &NodeId,
    txid: &[u8; TXID_LEN],
    addr: Option<SocketAddr>,
    mac: &[u8; PROBE_MAC_LEN],
) -> bool {
    let expected = tag(key, kind, from, to, txid, addr);
    // Constant time: no early exit on the first differing byte.
    expected.iter().zip(mac).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Identity, Role};
    use crate::wire;

    const KEY: [u8; 32] = [7; 32];

    fn id(n: u8) -> NodeId {
        Identity::from_seed(Role::Peer, [n; 32]).id()
    }

    fn at(port: u16) -> SocketAddr {
        SocketAddr::from(([203, 0, 113, 1], port))
    }

    /// One side of a two-peer test network: its path layer and the
    /// addresses it answers on, each with the one-way latency towards it
    /// (`None`: unreachable).
    struct Side {
        paths: Paths,
        id: NodeId,
        addrs: Vec<(SocketAddr, Option<Duration>)>,
        view: LocalView,
        switched: usize,
        rounds: Vec<Instant>,
    }

    enum Msg {
        Probe { from: SocketAddr, to: SocketAddr, data: Vec<u8> },
        Candidates { addrs: PeerAddrs, reply: bool },
    }

    /// Two path layers and a network between them with per-address latency;
    /// `cut` drops every direct packet (candidates still go via the relay).
    struct Net {
        now: Instant,
        sides: [Side; 2],
        queue: Vec<(Instant, usize, Msg)>,
        cut: bool,
        /// Every address pinged or ponged, in order.
        sent_to: Vec<SocketAddr>,
        /// Per side: which of its own addresses a remote address last
        /// reached it on; it answers from that one (as a socket bound to
        /// each interface would).
        reply_from: [BTreeMap<SocketAddr, SocketAddr>; 2],
    }

    impl Net {
        fn new(a: Vec<(SocketAddr, Option<Duration>)>, b: Vec<(SocketAddr, Option<Duration>)>) -> Self {
            let now = crate::test_support::epoch();
            let side = |n: u8, addrs| Side {
                paths: Paths::new(id(n), true, Duration::from_secs(25), NodeRng::from_seed([n; 32])),
                id: id(n),
                addrs,
                view: LocalView::default(),
                switched: 0,
                rounds: Vec::new(),
            };
            Self {
                now,
                sides: [side(1, a), side(2, b)],
                queue: Vec::new(),
                cut: false,
                sent_to: Vec::new(),
                reply_from: Default::default(),
            }
        }

        /// What side `i` reports about itself (interface addresses, all public).
        fn report(&self, i: usize) -> PeerAddrs {
            let addrs: Vec<SocketAddr> = self.sides[i].addrs.iter().map(|(a, _)| *a).collect();
            PeerAddrs { local: addrs, observed: Vec::new() }
        }

        /// Both sides learn each other and connect (as after the relayed
        /// handshake).
        fn connect(&mut self) {
            for i in 0..2 {
                let other = self.sides[1 - i].id;
                let remote = self.report(1 - i);
                let now = self.now;
                let s = &mut self.sides[i];
                s.paths.set_relay(other, Some(id(99)));
                s.paths.set_remote(now, other, &remote);
                s.paths.connected(now, other, KEY, &s.view);
            }
            self.collect();
        }

        fn route(&mut self, i: usize) -> Option<Route> {
            let other = self.sides[1 - i].id;
            let mapped = self.sides[i].paths.mapped(other);
            self.sides[i].paths.route(self.now, &mapped).and_then(|(_, r)| r)
        }

        fn collect(&mut self) {
            for i in 0..2 {
                for out in self.sides[i].paths.take_out() {
                    match out {
                        PathOut::Datagram { to, data } => {
                            self.sent_to.push(to);
                            let j = 1 - i;
                            let lat =
                                self.sides[j].addrs.iter().find(|(a, _)| *a == to).and_then(|(_, l)| *l);
                            if let (Some(lat), false) = (lat, self.cut) {
                                let from =
                                    self.reply_from[i].get(&to).copied().unwrap_or(self.sides[i].addrs[0].0);
                                self.queue.push((self.now + lat, j, Msg::Probe { from, to, data }));
                            }
                        }
                        PathOut::Switched { .. } => self.sides[i].switched += 1,
                        PathOut::Candidates { reply, .. } => {
                            // Every announcement starts a round (its own or
                            // one joining the other side's).
                            self.sides[i].rounds.push(self.now);
                            let addrs = self.report(i);
                            let t = self.now + Duration::from_millis(40);
                            self.queue.push((t, 1 - i, Msg::Candidates { addrs, reply }));
                        }
                    }
                }
            }
        }

        fn run_for(&mut self, d: Duration) {
            let end = self.now + d;
            loop {
                self.collect();
                let next = self
                    .queue
                    .iter()
                    .map(|(t, _, _)| *t)
                    .chain(self.sides.iter().filter_map(|s| s.paths.poll_timeout()))
                    .min();
                let Some(next) = next.filter(|t| *t <= end) else { break };
                self.now = self.now.max(next);
                let now = self.now;
                let (due, rest): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut self.queue).into_iter().partition(|(t, _, _)| *t <= now);
                self.queue = rest;
                for (_, j, msg) in due {
                    let other = self.sides[1 - j].id;
                    let s = &mut self.sides[j];
                    match msg {
                        Msg::Probe { from, to, data } => {
                            self.reply_from[j].insert(from, to);
                            let f = wire::decode(&data).expect("a frame");
                            let probe = ProbeFrame::decode(f.kind, f.payload).expect("a probe");
                            match f.kind {
                                FrameType::Ping => s.paths.on_ping(now, from, &probe, |_| false),
                                _ => s.paths.on_pong(now, from, &probe, |_| false),
                            }
                        }
                        Msg::Candidates { addrs, reply } => {
                            s.paths.on_candidates(now, other, &addrs, reply, &s.view)
                        }
                    }
                }
                for s in &mut self.sides {
                    s.paths.handle_timeout(now, &s.view);
                }
            }
            self.now = end;
        }

        fn direct(&self, i: usize) -> Option<SocketAddr> {
            self.sides[i].paths.get(&self.sides[1 - i].id).and_then(|p| p.direct)
        }
    }

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn mapped_addresses_are_stable_distinct_and_recognisable() {
        let mut p = Paths::new(id(1), true, Duration::from_secs(25), NodeRng::from_seed([0; 32]));
        let (a, b) = (p.mapped(id(2)), p.mapped(id(3)));
        assert_ne!(a, b);
        assert_eq!(p.mapped(id(2)), a, "stable");
        assert!(is_mapped(&a) && is_mapped(&b));
        assert!(!is_mapped(&at(1)));
        assert_eq!((p.peer_of(&a), p.peer_of(&b)), (Some(id(2)), Some(id(3))));
        assert_eq!(p.peer_of(&at(1)), None);
    }

    #[test]
    fn both_sides_punch_within_a_round_trip_and_report_the_kind() {
        let mut net = Net::new(vec![(at(1), ms(20))], vec![(at(2), ms(20))]);
        net.sides[0].view.local = vec![at(1)];
        assert_eq!(net.route(0), None, "nothing before the connection");
        net.connect();
        assert_eq!(net.route(0), Some(Route::Relay(id(99))), "relayed at once");
        net.run_for(Duration::from_millis(45));
        assert_eq!((net.direct(0), net.direct(1)), (Some(at(2)), Some(at(1))), "one RTT");
        assert_eq!(net.route(0), Some(Route::Direct(at(2))));
        assert_eq!((net.sides[0].switched, net.sides[1].switched), (1, 1));
        // Interface addresses on both ends: a direct path, not a punched one.
        assert_eq!(net.sides[0].paths.direct_kind(&id(2), &net.sides[0].view), Some(PathKind::Direct));
        assert_eq!(net.sides[1].paths.direct_kind(&id(1), &net.sides[1].view), Some(PathKind::Punched));
        // The round ends two ticks after the success: probing is bounded.
        net.run_for(Duration::from_secs(10));
        let pings = net.sides[0].paths.stats.pings;
        assert!(pings <= 4, "{pings} pings");
        assert_eq!(
            net.sides[0].paths.poll_timeout(),
            Some(net.sides[0].paths.get(&id(2)).unwrap().live.last_tx.unwrap() + Duration::from_secs(25)),
            "only the keep-alive remains"
        );
    }

    #[test]
    fn probes_from_strangers_or_with_bad_tags_are_refused() {
        let mut net = Net::new(vec![(at(1), ms(5))], vec![(at(2), ms(5))]);
        net.connect();
        let mut forged = ProbeFrame { from: id(2), txid: [1; TXID_LEN], addr: None, mac: [0; PROBE_MAC_LEN] };
        let p = &mut net.sides[0].paths;
        p.on_ping(net.now, at(9), &forged, |_| false);
        forged.from = id(5);
        p.on_ping(net.now, at(9), &forged, |_| false);
        p.on_pong(net.now, at(9), &forged, |_| false);
        assert_eq!(p.stats.rejected, 3);
        assert!(!p.by_addr.contains_key(&at(9)), "a forged probe teaches nothing");
    }

    #[test]
    fn a_faster_path_takes_over_only_past_the_hysteresis() {
        // b answers on a slow public address; its LAN address starts unreachable.
        let mut net = Net::new(vec![(at(1), ms(10))], vec![(at(2), ms(90)), (at(3), None)]);
        net.connect();
        net.run_for(Duration::from_secs(5));
        assert_eq!(net.direct(0), Some(at(2)));
        // RTT 100 ms. A path at 85 ms is not enough of a gain.
        net.sides[1].addrs[1].1 = ms(75);
        let b = net.report(1);
        net.sides[0].paths.on_candidates(net.now, id(2), &b, false, &LocalView::default());
        net.run_for(Duration::from_secs(5));
        assert_eq!(net.direct(0), Some(at(2)), "no flap for 15%");
        // At 40 ms it is.
        net.sides[1].addrs[1].1 = ms(30);
        net.sides[0].paths.on_candidates(net.now, id(2), &b, false, &LocalView::default());
        net.run_for(Duration::from_secs(5));
        assert_eq!(net.direct(0), Some(at(3)));
        assert_eq!(net.sides[0].switched, 2);
    }

    #[test]
    fn a_dead_path_falls_back_to_the_relay_and_recovers() {
        let mut net = Net::new(vec![(at(1), ms(20))], vec![(at(2), ms(20))]);
        net.connect();
        net.run_for(Duration::from_secs(3));
        assert_eq!(net.route(0), Some(Route::Direct(at(2))));
        // Traffic flows both ways (QUIC packets sent and received)...
        for _ in 0..100 {
            net.route(0);
            let now = net.now;
            net.sides[0].paths.demux(now, &at(2));
            net.run_for(Duration::from_millis(10));
        }
        // ...and the path dies.
        net.cut = true;
        let cut_at = net.now;
        let mut fell_back = None;
        for _ in 0..200 {
            net.route(0);
            net.run_for(Duration::from_millis(10));
            if net.direct(0).is_none() {
                fell_back = Some(net.now - cut_at);
                break;
            }
        }
        let took = fell_back.expect("falls back");
        assert!(took <= Duration::from_millis(800), "{took:?}");
        assert_eq!(net.route(0), Some(Route::Relay(id(99))));
        // Busy when it died: nothing learned about keep-alives.
        assert_eq!(net.sides[0].paths.keepalive(&id(2)), Some(Duration::from_secs(25)));
        // The network heals; a new round (right away, then backed off) finds it.
        net.cut = false;
        net.run_for(Duration::from_secs(10));
        assert_eq!(net.route(0), Some(Route::Direct(at(2))));
    }

    #[test]
    fn a_binding_lost_while_idle_shortens_the_keepalive() {
        let mut net = Net::new(vec![(at(1), ms(20))], vec![(at(2), ms(20))]);
        net.connect();
        net.run_for(Duration::from_secs(3));
        assert!(net.direct(0).is_some());
        // Idle paths are kept open by keep-alive pings that get answered.
        let before = net.sides[0].paths.stats.pings;
        net.run_for(Duration::from_secs(60));
        assert!(net.direct(0).is_some() && net.direct(1).is_some());
        assert!(net.sides[0].paths.stats.pings - before >= 2, "keep-alives");
        // The binding expires during an idle gap: the next keep-alive fails.
        net.cut = true;
        net.run_for(Duration::from_secs(30));
        assert_eq!(net.direct(0), None);
        let learned = net.sides[0].paths.keepalive(&id(2)).unwrap();
        assert!(learned < Duration::from_secs(10) && learned >= MIN_KEEPALIVE, "{learned:?}");
    }

    #[test]
    fn failed_rounds_back_off_exponentially() {
        let mut net = Net::new(vec![(at(1), None)], vec![(at(2), None)]);
        net.connect();
        net.run_for(Duration::from_secs(3600));
        let rounds = &net.sides[0].rounds;
        let round_len = Duration::from_millis(TICKS[TICKS.len() - 1]) + ROUND_TAIL;
        let mut expected = FIRST_RETRY;
        // Both sides back off alike; whichever timer fires first starts the
        // round for both (the other joins 40 ms later, on the announcement).
        let slack = Duration::from_millis(50);
        for w in rounds.windows(2) {
            let wait = w[1] - w[0] - round_len;
            assert!(
                wait + slack >= expected.mul_f64(0.8) && wait <= expected.mul_f64(1.2) + slack,
                "{wait:?} vs {expected:?}"
            );
            expected = (expected * 2).min(MAX_RETRY);
        }
        // 2+4+...+256 s, then every 300 s: about 16 rounds in an hour, 7 pings each.
        assert!((12..=20).contains(&rounds.len()), "{} rounds", rounds.len());
        assert!(net.sides[0].paths.stats.pings <= 20 * TICKS.len() as u64);
    }

    #[test]
    fn two_endpoint_dependent_nats_are_not_probed() {
        let mut net = Net::new(vec![(at(1), None)], vec![(at(2), None)]);
        for s in &mut net.sides {
            s.view.edm = true;
        }
        let edm = PeerAddrs { local: Vec::new(), observed: vec![at(2000), at(2001)] };
        let s = &mut net.sides[0];
        s.paths.set_relay(id(2), Some(id(99)));
        s.paths.set_remote(net.now, id(2), &edm);
        s.paths.connected(net.now, id(2), KEY, &s.view);
        net.run_for(Duration::from_secs(600));
        assert_eq!(net.sides[0].paths.stats.pings, 0);
        assert!(net.sides[0].rounds.is_empty());
        // With interface addresses (maybe one LAN), only those are tried.
        let lan = PeerAddrs { local: vec![at(7)], observed: vec![at(2000), at(2001)] };
        let now = net.now;
        net.sides[0].paths.set_remote(now, id(2), &lan);
        net.run_for(Duration::from_secs(3));
        assert!(!net.sent_to.is_empty());
        assert!(net.sent_to.iter().all(|a| *a == at(7)), "{:?}", net.sent_to);
    }

    #[test]
    fn an_endpoint_dependent_remote_gets_a_bounded_window_of_predicted_ports() {
        let mut net = Net::new(vec![(at(1), None)], vec![(at(2), None)]);
        let edm = PeerAddrs { local: Vec::new(), observed: vec![at(1000), at(1003)] };
        let s = &mut net.sides[0];
        s.paths.set_relay(id(2), Some(id(99)));
        s.paths.set_remote(net.now, id(2), &edm);
        s.paths.connected(net.now, id(2), KEY, &s.view);
        net.run_for(Duration::from_secs(3));
        let predicted = |a: &&SocketAddr| a.port() > 1003;
        let n = net.sent_to.iter().filter(predicted).count();
        assert_eq!(n, PREDICT_WINDOW as usize * PREDICT_TICKS);
        assert!(net.sent_to.iter().filter(predicted).all(|a| a.port() <= 1003 + PREDICT_WINDOW));
        // Observed candidates are pinged on every tick.
        assert_eq!(net.sent_to.iter().filter(|a| **a == at(1003)).count(), TICKS.len());
    }

    #[test]
    fn endpoint_dependence_is_seen_in_observed_ports() {
        assert!(!is_edm(&[at(1), at(1)]));
        assert!(!is_edm(&[at(1), SocketAddr::from(([198, 51, 100, 1], 1))]));
        assert!(is_edm(&[at(1), at(2)]));
        let known = BTreeMap::new();
        assert!(predict(&[at(5)], &known).is_empty());
        assert_eq!(predict(&[at(u16::MAX - 2), at(u16::MAX - 1)], &known), vec![at(u16::MAX)]);
        // Scattered ports: a random allocator, nothing to predict.
        assert!(predict(&[at(1000), at(31000), at(52000)], &known).is_empty());
        assert_eq!(predict(&[at(1000), at(1002)], &known).len(), PREDICT_WINDOW as usize);
    }

    /// A ping from side `from` with ping counter `counter`, signed with the test key.
    fn signed_ping(net: &Net, from: usize, counter: u64) -> ProbeFrame {
        let (me, peer) = (net.sides[from].id, net.sides[1 - from].id);
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &KEY);
        let mut txid = [7u8; TXID_LEN];
        txid[..8].copy_from_slice(&counter.to_be_bytes());
        let mac = tag(&key, FrameType::Ping, &me, &peer, &txid, None);
        ProbeFrame { from: me, txid, addr: None, mac }
    }

    #[test]
    fn a_ping_is_answered_once_and_never_maps_its_source() {
        let mut net = Net::new(vec![(at(1), None)], vec![(at(2), None)]);
        net.connect();
        let [ping, ping_999, ping_old, ping_new] =
            [1_000, 999, 1_000 - REPLAY_WINDOW, 2_000].map(|c| signed_ping(&net, 1, c));
        let p = &mut net.sides[0].paths;
        p.take_out();
        p.on_ping(net.now, at(9), &ping, |_| false);
        assert_eq!(p.stats.pongs, 1, "a fresh ping is answered");
        assert_eq!(p.mapped_count(), 0, "but maps nothing");
        // Replayed, from anywhere: refused, no answer.
        let rejected = p.stats.rejected;
        for src in [at(9), at(10), at(2)] {
            p.on_ping(net.now, src, &ping, |_| false);
        }
        assert_eq!((p.stats.pongs, p.stats.rejected - rejected), (1, 3));
        // Counters within the window may arrive out of order; below it they are stale.
        p.on_ping(net.now, at(9), &ping_999, |_| false);
        assert_eq!(p.stats.pongs, 2);
        p.on_ping(net.now, at(9), &ping_old, |_| false);
        assert_eq!(p.stats.pongs, 2, "too old to tell: refused");
        // A reserved source (a server's address) is never answered.
        p.on_ping(net.now, at(9), &ping_new, |a| *a == at(9));
        assert_eq!(p.stats.pongs, 2);
    }

    #[test]
    fn only_a_symmetric_round_trip_to_an_unreserved_address_maps_it() {
        let mut net = Net::new(vec![(at(1), ms(5))], vec![(at(2), ms(5))]);
        net.connect();
        // Capture a's first ping to b and b's pong to it; deliver neither.
        let ping = std::mem::take(&mut net.queue)
            .into_iter()
            .find_map(|(_, j, m)| match m {
                Msg::Probe { to, data, .. } if j == 1 && to == at(2) => Some(data),
                _ => None,
            })
            .expect("a pings b");
        let f = wire::decode(&ping).unwrap();
        let probe = ProbeFrame::decode(f.kind, f.payload).unwrap();
        let now = net.now;
        net.sides[1].paths.on_ping(now, at(1), &probe, |_| false);
        let pong = net.sides[1]
            .paths
            .take_out()
            .into_iter()
            .find_map(|o| match o {
                PathOut::Datagram { to, data } if to == at(1) => Some(data),
                _ => None,
            })
            .expect("b answers");
        let f = wire::decode(&pong).unwrap();
        let pong = ProbeFrame::decode(f.kind, f.payload).unwrap();
        let a = &mut net.sides[0].paths;
        // From another address than the one pinged: refused.
        a.on_pong(now, at(9), &pong, |_| false);
        // From the pinged address, but it is reserved: refused.
        a.on_pong(now, at(2), &pong, |a| *a == at(2));
        assert_eq!((a.mapped_count(), a.get(&id(2)).unwrap().direct), (0, None));
        // The real thing maps it and takes the path, once.
        a.on_pong(now, at(2), &pong, |_| false);
        assert_eq!((a.mapped_count(), a.get(&id(2)).unwrap().direct), (1, Some(at(2))));
        let rejected = a.stats.rejected;
        a.on_pong(now, at(2), &pong, |_| false);
        assert_eq!(a.stats.rejected - rejected, 1, "a pong counts once");
    }

    #[test]
    fn the_mapping_table_is_capped_per_peer() {
        let mut p = Paths::new(id(1), true, Duration::from_secs(25), NodeRng::from_seed([0; 32]));
        p.mapped(id(2));
        for port in 0..(MAX_MAPPED as u16 * 3) {
            p.map_addr(id(2), at(1000 + port), None);
        }
        assert_eq!(p.mapped_count(), MAX_MAPPED);
        assert_eq!(p.get(&id(2)).unwrap().mapped_addrs.last(), Some(&at(1000 + MAX_MAPPED as u16 * 3 - 1)));
    }

    #[test]
    fn replay_window() {
        let mut w = ReplayWindow::default();
        assert!(!w.accept(0), "counters start at 1");
        assert!(w.accept(5) && !w.accept(5));
        assert!(w.accept(3) && !w.accept(3), "out of order within the window");
        assert!(w.accept(5 + REPLAY_WINDOW) && !w.accept(5), "slid past");
        assert!(w.accept(u64::MAX) && !w.accept(u64::MAX) && !w.accept(7));
    }
}
