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
//!   from one direct path to another only if that is [`HYSTERESIS`] faster
//!   — except to an address on the remote's own interfaces (a LAN path),
//!   which is preferred over a translated one unless over a third and
//!   [`LAN_SLACK`] slower.
//! * **Liveness**: a direct path whose sends go unanswered for a few RTTs is
//!   pinged; if the pings go unanswered too, traffic falls back to the relay
//!   and a new round starts. An idle direct path is kept open by pings every
//!   keep-alive interval; when a path died after an idle gap (a NAT binding
//!   shorter than the keep-alive), the interval for that peer drops below the
//!   gap.

mod candidates;
mod liveness;
mod mapped;
mod probes;
mod rounds;
mod schedule;
#[cfg(test)]
mod test_net;

pub(crate) use candidates::is_edm;
pub(crate) use mapped::is_mapped;

use crate::identity::NodeId;
use crate::proto::{PathKind, PeerAddrs};
use crate::rng::NodeRng;
use crate::wire::TXID_LEN;
use candidates::Cand;
use liveness::{LiveDue, Liveness};
use probes::ReplayWindow;
use rounds::Round;
use schedule::Deadlines;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Another direct path must be this much faster to take over (new RTT below
/// 3/4 of the current one).
pub(crate) const HYSTERESIS: (u32, u32) = (3, 4);

/// How much slower than a translated path (beyond a third) a LAN path may
/// measure and still be preferred: round trips of a few hundred µs on a LAN
/// vary by more than they differ, and a path through no NAT survives what a
/// NAT's mappings do not.
pub(crate) const LAN_SLACK: Duration = Duration::from_millis(10);

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
    /// A ping back owed to an address whose ping we answered while our own
    /// last ping to it was too recent to repeat ([`probes::TRIGGER_GAP`]):
    /// when, and where.
    ping_back: Option<(Instant, SocketAddr)>,
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
            ping_back: None,
            failures: 0,
            live: Liveness::default(),
            keepalive,
        }
    }

    /// The best validated candidate and its RTT: the fastest, except that
    /// an address on the remote's own interfaces (a LAN path, through no
    /// NAT) wins over a translated one unless it is over a third and
    /// [`LAN_SLACK`] slower. Two
    /// peers behind one router that hairpins otherwise kept whichever path
    /// validated first, often the one through the router's public address
    /// (the round trips are nearly equal), and then depended on the router's
    /// mapping and hairpinning — and the two sides could disagree (the
    /// real-NAT lab saw one side direct, the other punched).
    fn best(&self) -> Option<(SocketAddr, Duration)> {
        self.cands
            .iter()
            .filter_map(|(a, c)| Some((*a, c.rtt?)))
            .min_by_key(|(a, rtt)| (self.weighted(a, *rtt), *a))
    }

    /// Whether `addr` is one of the remote's own interface addresses.
    fn is_local(&self, addr: &SocketAddr) -> bool {
        self.remote.local.contains(addr)
    }

    /// The RTT paths are compared by: a local address's counts
    /// [`LAN_SLACK`] and a quarter less.
    fn weighted(&self, addr: &SocketAddr, rtt: Duration) -> Duration {
        if self.is_local(addr) { rtt.saturating_sub(LAN_SLACK).mul_f64(0.75) } else { rtt }
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
    deadlines: Deadlines,
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
            deadlines: Deadlines::default(),
        }
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
        let route = match p.direct {
            Some(addr) => {
                p.live.sent(now);
                Some(Route::Direct(addr))
            }
            None => p.relay.map(Route::Relay),
        };
        self.reschedule(peer);
        Some((peer, route))
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
        self.reschedule(peer);
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
        self.reschedule(peer);
    }

    /// Runs every due timer. Only the peers whose deadline has come are
    /// visited, taken from the deadline index, in ID order.
    pub(crate) fn handle_timeout(&mut self, now: Instant, view: &LocalView) {
        // The due set is fixed before any peer is handled, as handling one
        // peer only moves that peer's own deadline.
        for peer in self.deadlines.due(now) {
            if let Some(p) = self.by_peer.get_mut(&peer)
                && p.next_round.is_some_and(|t| t <= now)
                && p.round.is_none()
            {
                p.next_round = None;
                self.start_round(now, peer, false, view);
            }
            self.handle_peer_timeout(now, peer, view);
            self.end_round_if_done(now, peer);
            self.reschedule(peer);
        }
    }

    /// The earliest deadline of any peer's paths.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first()
    }

    /// Runs the timers of `peer` that have come: round ticks and the
    /// liveness of its direct path.
    fn handle_peer_timeout(&mut self, now: Instant, peer: NodeId, view: &LocalView) {
        let Some(p) = self.by_peer.get_mut(&peer) else { return };
        p.expire_pings(now);
        let mut targets = p.due_round_pings(now, view);
        if let Some((at, addr)) = p.ping_back
            && at <= now
        {
            p.ping_back = None;
            if p.cands.get(&addr).is_none_or(|c| c.rtt.is_none()) {
                targets.push(addr);
            }
        }
        match p.due_liveness(now) {
            LiveDue::Lost => {
                self.lost_direct(now, peer, view);
                return;
            }
            LiveDue::Ping(addr) => targets.push(addr),
            LiveDue::Nothing => {}
        }
        targets.sort();
        targets.dedup();
        for to in targets {
            self.ping(now, peer, to);
        }
    }

    /// Moves `peer` to its best validated direct path if it has none, or if
    /// the best one is faster than the current one by the hysteresis margin.
    fn select(&mut self, now: Instant, peer: NodeId) {
        let Some(p) = self.by_peer.get_mut(&peer) else { return };
        let Some((best, rtt)) = p.best() else { return };
        let switch = match p.direct {
            None => true,
            Some(cur) if cur == best => false,
            // From a translated path to a LAN one: taken unless the LAN path
            // is over a third and LAN_SLACK slower (a one-way upgrade, so no
            // flapping).
            Some(cur) if p.is_local(&best) && !p.is_local(&cur) => {
                let cur_rtt = p.cands.get(&cur).and_then(|c| c.rtt).unwrap_or(Duration::MAX);
                rtt.saturating_sub(LAN_SLACK).saturating_mul(3) <= cur_rtt.saturating_mul(4)
            }
            Some(cur) => {
                let cur_rtt = p.cands.get(&cur).and_then(|c| c.rtt).unwrap_or(Duration::MAX);
                p.weighted(&best, rtt) * HYSTERESIS.1 < p.weighted(&cur, cur_rtt).saturating_mul(HYSTERESIS.0)
            }
        };
        if switch {
            p.direct = Some(best);
            p.live = Liveness { last_rx: Some(now), last_tx: Some(now), ..Liveness::default() };
            self.out.push(PathOut::Switched { peer });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::paths::test_net::*;

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

    /// b is reached through its NAT's public address (at 2) at once; its
    /// LAN address (at 3) answers only later, with a one-way latency of
    /// `lan_ms`. Where a's traffic to b goes then.
    fn lan_against_nat(lan_ms: u64) -> (Net, Option<SocketAddr>) {
        let mut net = Net::new(vec![(at(1), ms(5))], vec![(at(2), ms(5)), (at(3), None)]);
        net.sides[1].observed = vec![at(2)];
        net.connect();
        net.run_for(Duration::from_secs(5));
        assert_eq!(net.direct(0), Some(at(2)));
        net.sides[1].addrs[1].1 = ms(lan_ms);
        let b = net.report(1);
        net.sides[0].paths.on_candidates(net.now, id(2), &b, false, &LocalView::default());
        net.run_for(Duration::from_secs(5));
        let direct = net.direct(0);
        (net, direct)
    }

    #[test]
    fn a_lan_path_takes_over_a_translated_one_though_a_little_slower() {
        // 12 ms against 10: taken, it crosses no NAT.
        let (mut net, direct) = lan_against_nat(7);
        assert_eq!(direct, Some(at(3)), "the LAN path takes over");
        // The translated path does not win it back by being a little faster.
        net.sides[1].addrs[0].1 = ms(4);
        let b = net.report(1);
        net.sides[0].paths.on_candidates(net.now, id(2), &b, false, &LocalView::default());
        net.run_for(Duration::from_secs(5));
        assert_eq!(net.direct(0), Some(at(3)), "no flap back");
    }

    #[test]
    fn a_much_slower_lan_path_does_not_take_over() {
        // 25 ms against 10: over a third and LAN_SLACK slower.
        assert_eq!(lan_against_nat(20).1, Some(at(2)));
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
}
