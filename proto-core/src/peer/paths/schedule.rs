//! When each peer's paths next need attention, kept sorted so that finding
//! the earliest deadline costs O(log n), and finding the peers that are due
//! O(log n) plus one step per due peer, rather than a walk over every peer
//! (which the node would otherwise pay twice per input: once to handle
//! timers, once to ask for the next one).
//!
//! A peer's deadline is a pure function of its own path state
//! ([`PeerPath::next_deadline`]). The index caches it, so it is only right if
//! it is refreshed whenever that state changes: every entry point of
//! [`Paths`] that can change a peer's round, next-round time, direct path,
//! that path's RTT (suspicion waits a few RTTs) or keep-alive interval, or
//! its liveness ends with [`Paths::reschedule`] for that peer. Entry points
//! that change nothing a deadline depends on (the relay, allocating a mapped
//! address, taking an address from another peer's list of mapped addresses)
//! do not need to. The tests compare the index with a fresh computation for
//! every peer after every input.

use super::{Paths, PeerPath};
use crate::identity::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// Each peer's next deadline, sorted by time.
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    /// `(deadline, peer)`, earliest first: the first entry is the next
    /// wake-up, and a range from the start is the set of due peers.
    by_time: BTreeSet<(Instant, NodeId)>,
    /// The deadline each scheduled peer is filed under in `by_time`, so that
    /// its old entry can be found and removed when it changes.
    by_peer: BTreeMap<NodeId, Instant>,
}

impl Deadlines {
    /// Files `peer` under `at` (or nowhere, for `None`), replacing its
    /// previous entry.
    fn set(&mut self, peer: NodeId, at: Option<Instant>) {
        let old = self.by_peer.get(&peer).copied();
        if old == at {
            return;
        }
        if let Some(t) = old {
            self.by_time.remove(&(t, peer));
        }
        match at {
            Some(t) => {
                self.by_time.insert((t, peer));
                self.by_peer.insert(peer, t);
            }
            None => {
                self.by_peer.remove(&peer);
            }
        }
    }

    /// The earliest deadline of any peer.
    pub(super) fn first(&self) -> Option<Instant> {
        self.by_time.first().map(|(t, _)| *t)
    }

    /// The peers whose deadline is at or before `now`, in ID order. Not in
    /// deadline order: peers handled in turn draw from one random number
    /// generator (ping transaction IDs, backoff jitter), so the order decides
    /// what each peer draws. ID order is the order of the scan over every
    /// peer this index replaced, so a seeded run sends the same bytes as it
    /// did before the index existed.
    pub(super) fn due(&self, now: Instant) -> Vec<NodeId> {
        let mut due: Vec<NodeId> =
            self.by_time.iter().take_while(|(t, _)| *t <= now).map(|(_, peer)| *peer).collect();
        due.sort_unstable();
        due
    }
}

impl PeerPath {
    /// When this peer's paths next need attention: the earliest of the round
    /// logic's and the direct path's deadlines. `None`: nothing to do until
    /// some input arrives.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let ping_back = self.ping_back.map(|(at, _)| at);
        [self.round_deadline(), self.liveness_deadline(), ping_back].into_iter().flatten().min()
    }
}

impl Paths {
    /// Refreshes the deadline index entry of `peer` from its current state.
    /// Called at the end of every entry point that touched that peer.
    pub(super) fn reschedule(&mut self, peer: NodeId) {
        let at = self.by_peer.get(&peer).and_then(PeerPath::next_deadline);
        self.deadlines.set(peer, at);
    }

    /// Panics unless the deadline index holds exactly each peer's deadline
    /// computed afresh.
    #[cfg(test)]
    pub(super) fn check_deadlines(&self) {
        let fresh: BTreeSet<(Instant, NodeId)> =
            self.by_peer.iter().filter_map(|(id, p)| Some((p.next_deadline()?, *id))).collect();
        assert_eq!(self.deadlines.by_time, fresh, "the index has every peer's current deadline");
        let filed: BTreeSet<(Instant, NodeId)> =
            self.deadlines.by_peer.iter().map(|(id, t)| (*t, *id)).collect();
        assert_eq!(filed, fresh, "and knows where each peer is filed");
        let min = self.by_peer.values().filter_map(PeerPath::next_deadline).min();
        assert_eq!(self.poll_timeout(), min, "poll_timeout is the earliest of them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Identity, Role};
    use crate::peer::paths::rounds::TICKS;
    use crate::peer::paths::test_net::{KEY, at, id};
    use crate::peer::paths::{LocalView, PathOut, Route};
    use crate::proto::PeerAddrs;
    use crate::rng::NodeRng;
    use crate::wire::{self, FrameType, ProbeFrame};
    use std::net::SocketAddr;
    use std::time::Duration;

    /// Remotes around the hub.
    const REMOTES: usize = 6;

    enum Msg {
        /// A ping or pong.
        Probe { from: SocketAddr, data: Vec<u8> },
        /// A QUIC packet on the direct path (only its arrival matters here).
        Quic { from: SocketAddr },
        /// A `Candidates` announcement over the relay.
        Candidates { from: usize, reply: bool },
    }

    /// A star network: node 0 (the hub) is connected to nodes 1..=REMOTES,
    /// each of which knows only the hub. Node `n` answers on `at(100 + n)`;
    /// packets take 5 to 60 ms, one in ten is lost, and a remote's link can
    /// be cut both ways.
    struct Star {
        now: Instant,
        nodes: Vec<Paths>,
        ids: Vec<NodeId>,
        /// What each node says about its own addresses.
        reports: Vec<PeerAddrs>,
        queue: Vec<(Instant, usize, Msg)>,
        cut: Vec<bool>,
        /// A few probes seen on the wire, to replay later.
        captured: Vec<Vec<u8>>,
        switches: usize,
        rng: NodeRng,
    }

    fn addr(n: usize) -> SocketAddr {
        at(100 + n as u16)
    }

    impl Star {
        fn new(seed: u8) -> Self {
            let ids: Vec<NodeId> = (0..=REMOTES).map(|n| id(n as u8 + 1)).collect();
            let nodes = (0..=REMOTES)
                .map(|n| {
                    let rng = NodeRng::from_seed([seed.wrapping_add(n as u8); 32]);
                    Paths::new(ids[n], true, Duration::from_secs(10), rng)
                })
                .collect();
            let reports =
                (0..=REMOTES).map(|n| PeerAddrs { local: vec![addr(n)], observed: Vec::new() }).collect();
            let mut star = Self {
                now: crate::test_support::epoch(),
                nodes,
                ids,
                reports,
                queue: Vec::new(),
                cut: vec![false; REMOTES + 1],
                captured: Vec::new(),
                switches: 0,
                rng: NodeRng::from_seed([seed; 32]),
            };
            for n in 1..=REMOTES {
                star.connect(n);
            }
            star
        }

        /// The two ends of remote `n`'s link, each as (node, its peer).
        fn pair(n: usize) -> [(usize, usize); 2] {
            [(0, n), (n, 0)]
        }

        fn connect(&mut self, n: usize) {
            let view = LocalView::default();
            for (me, other) in Self::pair(n) {
                let (peer, report) = (self.ids[other], self.reports[other].clone());
                let p = &mut self.nodes[me];
                p.set_relay(peer, Some(id(99)));
                p.set_remote(self.now, peer, &report);
                p.connected(self.now, peer, KEY, &view);
            }
        }

        fn disconnect(&mut self, n: usize) {
            for (me, other) in Self::pair(n) {
                self.nodes[me].disconnected(self.ids[other]);
            }
        }

        fn check(&self) {
            for p in &self.nodes {
                p.check_deadlines();
            }
        }

        fn node_of(&self, peer: NodeId) -> usize {
            self.ids.iter().position(|i| *i == peer).expect("a node")
        }

        /// Puts what the nodes want sent on the wire.
        fn collect(&mut self) {
            for i in 0..self.nodes.len() {
                for out in self.nodes[i].take_out() {
                    match out {
                        PathOut::Datagram { to, data } => {
                            if self.captured.len() < 64 && self.rng.below(4) == 0 {
                                self.captured.push(data.clone());
                            }
                            let j = (to.port() as usize).wrapping_sub(100);
                            let linked = j <= REMOTES && (i == 0) != (j == 0) && to == addr(j);
                            let remote = i.max(j);
                            if linked && !self.cut[remote] && self.rng.below(10) != 0 {
                                let t = self.now + Duration::from_millis(5 + self.rng.below(56));
                                self.queue.push((t, j, Msg::Probe { from: addr(i), data }));
                            }
                        }
                        PathOut::Switched { .. } => self.switches += 1,
                        PathOut::Candidates { peer, reply } => {
                            let j = self.node_of(peer);
                            let t = self.now + Duration::from_millis(40);
                            self.queue.push((t, j, Msg::Candidates { from: i, reply }));
                        }
                    }
                }
            }
        }

        fn deliver(&mut self, j: usize, msg: Msg) {
            let now = self.now;
            let view = LocalView::default();
            match msg {
                Msg::Probe { from, data } => {
                    let f = wire::decode(&data).expect("a frame");
                    let probe = ProbeFrame::decode(f.kind, f.payload).expect("a probe");
                    match f.kind {
                        FrameType::Ping => self.nodes[j].on_ping(now, from, &probe, |_| false),
                        _ => self.nodes[j].on_pong(now, from, &probe, |_| false),
                    }
                }
                Msg::Quic { from } => {
                    self.nodes[j].demux(now, &from);
                }
                Msg::Candidates { from, reply } => {
                    let (peer, report) = (self.ids[from], self.reports[from].clone());
                    self.nodes[j].on_candidates(now, peer, &report, reply, &view);
                }
            }
        }

        /// Runs deliveries and timers up to `now + d`, checking the index
        /// after every input.
        fn run_for(&mut self, d: Duration) {
            let end = self.now + d;
            loop {
                self.collect();
                let next = self
                    .queue
                    .iter()
                    .map(|(t, _, _)| *t)
                    .chain(self.nodes.iter().filter_map(Paths::poll_timeout))
                    .min();
                let Some(next) = next.filter(|t| *t <= end) else { break };
                self.now = self.now.max(next);
                let now = self.now;
                let (due, rest): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut self.queue).into_iter().partition(|(t, _, _)| *t <= now);
                self.queue = rest;
                for (_, j, msg) in due {
                    self.deliver(j, msg);
                    self.check();
                }
                for p in &mut self.nodes {
                    p.handle_timeout(now, &LocalView::default());
                    p.check_deadlines();
                }
            }
            self.now = end;
        }

        /// One random operation.
        fn step(&mut self) {
            let n = 1 + self.rng.below(REMOTES as u64) as usize;
            match self.rng.below(12) {
                0..=3 => {
                    let d = Duration::from_millis(1 + self.rng.below(3_000));
                    self.run_for(d);
                }
                4..=6 => {
                    // QUIC traffic one way, perhaps answered.
                    let (me, other) = Self::pair(n)[self.rng.below(2) as usize];
                    let mapped = self.nodes[me].mapped(self.ids[other]);
                    let route = self.nodes[me].route(self.now, &mapped).and_then(|(_, r)| r);
                    if let Some(Route::Direct(_)) = route
                        && !self.cut[n]
                    {
                        let t = self.now + Duration::from_millis(20);
                        self.queue.push((t, other, Msg::Quic { from: addr(me) }));
                    }
                }
                7 => self.cut[n] = !self.cut[n],
                8 => {
                    self.disconnect(n);
                    if self.rng.below(2) == 0 {
                        self.connect(n);
                    }
                }
                9 => {
                    // The remote's addresses change: sometimes it looks
                    // endpoint-dependent (several ports seen), which brings
                    // port prediction in.
                    let ports = self.rng.below(3);
                    let base = 2_000 + self.rng.below(1_000) as u16;
                    let observed = (0..ports).map(|k| at(base + k as u16 * 3)).collect();
                    self.reports[n] = PeerAddrs { local: vec![addr(n)], observed };
                    let (peer, report) = (self.ids[n], self.reports[n].clone());
                    self.nodes[0].set_remote(self.now, peer, &report);
                }
                10 => {
                    // A captured probe replayed from anywhere.
                    if !self.captured.is_empty() {
                        let k = self.rng.below(self.captured.len() as u64) as usize;
                        let data = self.captured[k].clone();
                        let from = at(100 + self.rng.below(REMOTES as u64 + 3) as u16);
                        let to = self.rng.below(REMOTES as u64 + 1) as usize;
                        self.deliver(to, Msg::Probe { from, data });
                    }
                }
                _ => self.connect(n),
            }
            self.collect();
            self.check();
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Peer IDs beyond the 255 that `id` makes.
    fn nth_peer(n: u16) -> NodeId {
        let mut seed = [0u8; 32];
        seed[..2].copy_from_slice(&n.to_le_bytes());
        seed[2] = 0xa5;
        Identity::from_seed(Role::Peer, seed).id()
    }

    /// Asserts that the two halves of the index agree: one entry per
    /// scheduled peer, nothing left behind by a move or a removal.
    fn consistent(d: &Deadlines) {
        let filed: BTreeSet<(Instant, NodeId)> = d.by_peer.iter().map(|(id, t)| (*t, *id)).collect();
        assert_eq!(d.by_time, filed);
    }

    #[test]
    fn a_deadline_moves_earlier_and_later_and_is_removed() {
        let t0 = crate::test_support::epoch();
        let (a, b) = (id(1), id(2));
        let mut d = Deadlines::default();
        assert_eq!((d.first(), d.due(t0 + ms(1_000))), (None, vec![]));
        d.set(a, Some(t0 + ms(100)));
        d.set(b, Some(t0 + ms(200)));
        assert_eq!(d.first(), Some(t0 + ms(100)));
        // b moves ahead of a.
        d.set(b, Some(t0 + ms(50)));
        consistent(&d);
        assert_eq!(d.first(), Some(t0 + ms(50)));
        assert_eq!(d.due(t0 + ms(60)), vec![b]);
        // And back behind it: its earlier entry is gone, not merely shadowed.
        d.set(b, Some(t0 + ms(300)));
        consistent(&d);
        assert_eq!(d.by_time.len(), 2);
        assert_eq!(d.first(), Some(t0 + ms(100)));
        assert_eq!(d.due(t0 + ms(60)), vec![]);
        // A deadline is due at its instant, not only after it.
        assert_eq!(d.due(t0 + ms(100)), vec![a]);
        // Filing a peer again under the same deadline changes nothing.
        d.set(a, Some(t0 + ms(100)));
        consistent(&d);
        assert_eq!(d.by_time.len(), 2);
        // Removal: nothing left to do for a, then for b.
        d.set(a, None);
        consistent(&d);
        assert_eq!(d.first(), Some(t0 + ms(300)));
        assert_eq!(d.due(t0 + ms(1_000)), vec![b]);
        d.set(b, None);
        assert_eq!(d.first(), None);
        assert!(d.by_time.is_empty() && d.by_peer.is_empty());
        // Removing a peer that is not filed (a stranger's probe) is a no-op.
        d.set(id(3), None);
        assert!(d.by_time.is_empty() && d.by_peer.is_empty());
    }

    #[test]
    fn due_peers_come_in_id_order_whatever_their_deadlines() {
        let t0 = crate::test_support::epoch();
        let mut peers: Vec<NodeId> = (1..=20).map(id).collect();
        peers.sort();
        let mut d = Deadlines::default();
        // The highest IDs are due first, the lowest last, two per instant
        // (0, 0, 10, 10, ... 90, 90 ms).
        for (k, p) in peers.iter().rev().enumerate() {
            d.set(*p, Some(t0 + ms(10 * (k as u64 / 2))));
        }
        assert_eq!(d.first(), Some(t0));
        assert_eq!(d.due(t0), peers[18..].to_vec());
        assert_eq!(d.due(t0 + ms(39)), peers[12..].to_vec());
        assert_eq!(d.due(t0 + ms(40)), peers[10..].to_vec());
        assert_eq!(d.due(t0 + ms(45)), peers[10..].to_vec());
        assert_eq!(d.due(t0 + ms(1_000)), peers);
    }

    #[test]
    fn many_peers_agree_with_a_scan() {
        let t0 = crate::test_support::epoch();
        let peers: Vec<NodeId> = (0..500).map(nth_peer).collect();
        let mut rng = NodeRng::from_seed([5; 32]);
        let mut d = Deadlines::default();
        // What a scan over every peer would find.
        let mut model: BTreeMap<NodeId, Instant> = BTreeMap::new();
        for step in 0..20_000 {
            let p = peers[rng.below(peers.len() as u64) as usize];
            // Deadlines cluster on few instants, so ties are common.
            let at = match rng.below(5) {
                0 => None,
                1 => model.get(&p).copied(),
                _ => Some(t0 + ms(rng.below(200) * 5)),
            };
            d.set(p, at);
            match at {
                Some(t) => model.insert(p, t),
                None => model.remove(&p),
            };
            assert_eq!(d.first(), model.values().min().copied(), "step {step}");
            if step % 100 == 0 {
                consistent(&d);
                let now = t0 + ms(rng.below(1_100));
                let due: Vec<NodeId> = model.iter().filter(|(_, t)| **t <= now).map(|(p, _)| *p).collect();
                assert_eq!(d.due(now), due, "step {step}");
            }
        }
        assert!(model.len() > 300, "{} peers filed at the end", model.len());
        assert_eq!(d.by_peer.len(), model.len());
    }

    #[test]
    fn a_disconnected_peer_leaves_the_index() {
        let now = crate::test_support::epoch();
        let mut p = Paths::new(id(1), true, Duration::from_secs(25), NodeRng::from_seed([1; 32]));
        let view = LocalView::default();
        for n in [2, 3] {
            let addrs = PeerAddrs { local: vec![at(n as u16)], observed: Vec::new() };
            p.set_relay(id(n), Some(id(99)));
            p.set_remote(now, id(n), &addrs);
        }
        // Known but not connected: no round, no deadline.
        assert_eq!(p.poll_timeout(), None);
        p.connected(now, id(2), KEY, &view);
        p.connected(now + ms(30), id(3), KEY, &view);
        p.check_deadlines();
        // Both rounds pinged at once; next are their 100 ms ticks.
        assert_eq!(p.poll_timeout(), Some(now + ms(100)));
        p.disconnected(id(2));
        p.check_deadlines();
        assert_eq!(p.poll_timeout(), Some(now + ms(130)), "only id(3)'s round is left");
        assert!(!p.deadlines.by_peer.contains_key(&id(2)));
        p.disconnected(id(3));
        p.check_deadlines();
        assert_eq!(p.poll_timeout(), None);
        assert!(p.deadlines.by_time.is_empty() && p.deadlines.by_peer.is_empty());
        // Nothing is due, so a timeout does nothing at all.
        p.take_out();
        p.handle_timeout(now + ms(10_000), &view);
        assert!(p.take_out().is_empty());
    }

    #[test]
    fn due_peers_are_handled_in_id_order() {
        let t0 = crate::test_support::epoch();
        let (mut lo, mut hi) = (id(2), id(3));
        if hi < lo {
            std::mem::swap(&mut lo, &mut hi);
        }
        let mut p = Paths::new(id(1), true, Duration::from_secs(25), NodeRng::from_seed([1; 32]));
        let view = LocalView::default();
        for (peer, port) in [(lo, 10), (hi, 20)] {
            let addrs = PeerAddrs { local: vec![at(port)], observed: Vec::new() };
            p.set_relay(peer, Some(id(99)));
            p.set_remote(t0, peer, &addrs);
        }
        // The higher ID connects first, so its 100 ms tick comes first.
        p.connected(t0, hi, KEY, &view);
        p.connected(t0 + ms(50), lo, KEY, &view);
        p.take_out();
        assert_eq!(p.poll_timeout(), Some(t0 + ms(100)));
        // Both ticks are due: the lower ID is still pinged first.
        p.handle_timeout(t0 + ms(150), &view);
        p.check_deadlines();
        let sent: Vec<SocketAddr> = p
            .take_out()
            .into_iter()
            .filter_map(|o| match o {
                PathOut::Datagram { to, .. } => Some(to),
                _ => None,
            })
            .collect();
        assert_eq!(sent, vec![at(10), at(20)]);
    }

    /// A hub with many peers that never answer: rounds fail and back off
    /// for every peer at once. The index stays exact throughout, and every
    /// wake-up it asks for finds work (no spurious or missed deadlines).
    #[test]
    fn many_peers_back_off_with_an_exact_index() {
        let mut now = crate::test_support::epoch();
        let view = LocalView::default();
        let mut p = Paths::new(id(1), true, Duration::from_secs(25), NodeRng::from_seed([3; 32]));
        let peers: Vec<NodeId> = (0..300).map(nth_peer).collect();
        // Peers connect 7 ms apart, while the earlier ones' rounds run.
        for (k, peer) in peers.iter().enumerate() {
            now += ms(7);
            p.handle_timeout(now, &view);
            let addrs = PeerAddrs { local: vec![at(1_000 + k as u16)], observed: Vec::new() };
            p.set_relay(*peer, Some(id(99)));
            p.set_remote(now, *peer, &addrs);
            p.connected(now, *peer, KEY, &view);
            p.check_deadlines();
        }
        let end = now + Duration::from_secs(120);
        let mut wakeups = 0;
        while let Some(t) = p.poll_timeout().filter(|t| *t <= end) {
            assert!(t >= now, "a deadline in the past was not handled");
            now = t;
            p.take_out();
            p.handle_timeout(now, &view);
            p.check_deadlines();
            // Whatever was due has been handled: the next wake-up is later.
            assert!(p.poll_timeout().is_none_or(|next| next > now), "livelock at wake-up {wakeups}");
            wakeups += 1;
        }
        // Every peer went through several failed rounds.
        assert!(p.stats.pings >= peers.len() as u64 * 3 * TICKS.len() as u64, "{} pings", p.stats.pings);
    }

    #[test]
    fn the_deadline_index_always_equals_the_earliest_deadline_of_every_peer() {
        let mut switches = 0;
        for seed in 0..8 {
            let mut star = Star::new(seed * 16);
            star.check();
            for _ in 0..1_500 {
                star.step();
            }
            switches += star.switches;
        }
        // The runs went through direct paths being found and lost, not only
        // through rounds that never succeed.
        assert!(switches > 50, "{switches} switches");
    }
}
