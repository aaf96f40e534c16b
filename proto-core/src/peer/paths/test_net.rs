//! A two-sided in-memory network for the unit tests of the path layer.

use super::*;
use crate::identity::{Identity, Role};
use crate::rng::NodeRng;
use crate::wire::{self, FrameType, ProbeFrame};
use std::collections::BTreeMap;

pub(super) const KEY: [u8; 32] = [7; 32];

pub(super) fn id(n: u8) -> NodeId {
    Identity::from_seed(Role::Peer, [n; 32]).id()
}

pub(super) fn at(port: u16) -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 1], port))
}

/// One side of a two-peer test network: its path layer and the
/// addresses it answers on, each with the one-way latency towards it
/// (`None`: unreachable).
pub(super) struct Side {
    pub(super) paths: Paths,
    pub(super) id: NodeId,
    pub(super) addrs: Vec<(SocketAddr, Option<Duration>)>,
    pub(super) view: LocalView,
    /// Of `addrs`, those reported as server-observed (translated by a NAT)
    /// rather than as interface addresses.
    pub(super) observed: Vec<SocketAddr>,
    pub(super) switched: usize,
    pub(super) rounds: Vec<Instant>,
}

pub(super) enum Msg {
    Probe { from: SocketAddr, to: SocketAddr, data: Vec<u8> },
    Candidates { addrs: PeerAddrs, reply: bool },
}

/// Two path layers and a network between them with per-address latency;
/// `cut` drops every direct packet (candidates still go via the relay).
pub(super) struct Net {
    pub(super) now: Instant,
    pub(super) sides: [Side; 2],
    pub(super) queue: Vec<(Instant, usize, Msg)>,
    pub(super) cut: bool,
    /// Every address pinged or ponged, in order.
    pub(super) sent_to: Vec<SocketAddr>,
    /// Per side: which of its own addresses a remote address last
    /// reached it on; it answers from that one (as a socket bound to
    /// each interface would).
    pub(super) reply_from: [BTreeMap<SocketAddr, SocketAddr>; 2],
}

impl Net {
    pub(super) fn new(
        a: Vec<(SocketAddr, Option<Duration>)>,
        b: Vec<(SocketAddr, Option<Duration>)>,
    ) -> Self {
        let now = crate::test_support::epoch();
        let side = |n: u8, addrs| Side {
            paths: Paths::new(id(n), true, Duration::from_secs(25), NodeRng::from_seed([n; 32])),
            id: id(n),
            addrs,
            view: LocalView::default(),
            observed: Vec::new(),
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

    /// What side `i` reports about itself: interface addresses (all public
    /// unless listed in `observed`) and server-observed ones.
    pub(super) fn report(&self, i: usize) -> PeerAddrs {
        let s = &self.sides[i];
        let (observed, local) = s.addrs.iter().map(|(a, _)| *a).partition(|a| s.observed.contains(a));
        PeerAddrs { local, observed }
    }

    /// Both sides learn each other and connect (as after the relayed
    /// handshake).
    pub(super) fn connect(&mut self) {
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

    pub(super) fn route(&mut self, i: usize) -> Option<Route> {
        let other = self.sides[1 - i].id;
        let mapped = self.sides[i].paths.mapped(other);
        let route = self.sides[i].paths.route(self.now, &mapped).and_then(|(_, r)| r);
        self.check();
        route
    }

    /// Checks each side's deadline index against its peers' deadlines.
    pub(super) fn check(&self) {
        for s in &self.sides {
            s.paths.check_deadlines();
        }
    }

    pub(super) fn collect(&mut self) {
        self.check();
        for i in 0..2 {
            for out in self.sides[i].paths.take_out() {
                match out {
                    PathOut::Datagram { to, data } => {
                        self.sent_to.push(to);
                        let j = 1 - i;
                        let lat = self.sides[j].addrs.iter().find(|(a, _)| *a == to).and_then(|(_, l)| *l);
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

    pub(super) fn run_for(&mut self, d: Duration) {
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
                self.check();
            }
            for s in &mut self.sides {
                s.paths.handle_timeout(now, &s.view);
                s.paths.check_deadlines();
            }
        }
        self.now = end;
    }

    pub(super) fn direct(&self, i: usize) -> Option<SocketAddr> {
        self.sides[i].paths.get(&self.sides[1 - i].id).and_then(|p| p.direct)
    }
}

pub(super) fn ms(n: u64) -> Option<Duration> {
    Some(Duration::from_millis(n))
}
