//! Candidate addresses of a remote peer, and port prediction.

use super::Paths;
use crate::identity::NodeId;
use crate::proto::PeerAddrs;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Ports predicted past the highest observed one of an endpoint-dependent NAT.
pub(super) const PREDICT_WINDOW: u16 = 64;
/// Observed ports further apart than this look randomly allocated: no
/// prediction.
pub(super) const PREDICT_SPREAD: u16 = 64;
/// Ticks of a round that also ping predicted ports: at most
/// `PREDICT_WINDOW * PREDICT_TICKS` (256) predicted probes per round.
pub(super) const PREDICT_TICKS: usize = 4;
/// Most candidates kept per remote peer.
pub(super) const MAX_CANDIDATES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum CandKind {
    /// One of the remote's interface addresses.
    Local,
    /// An address a server observed the remote at.
    Observed,
    /// Where an authenticated ping or pong of the remote came from.
    Reflexive,
}

#[derive(Debug, Clone)]
pub(super) struct Cand {
    pub(super) kind: CandKind,
    /// Latest (smoothed) RTT if validated.
    pub(super) rtt: Option<Duration>,
    /// Our address as the remote saw our ping on this path.
    pub(super) seen_as: Option<SocketAddr>,
    pub(super) last_ping: Option<Instant>,
}

impl Paths {
    /// The remote's addresses as the directory or its `Candidates` message
    /// tell them. A change while no direct path is in use makes a new round
    /// due soon.
    pub(crate) fn set_remote(&mut self, now: Instant, peer: NodeId, addrs: &PeerAddrs) {
        self.learn_remote(now, peer, addrs);
        self.reschedule(peer);
    }

    fn learn_remote(&mut self, now: Instant, peer: NodeId, addrs: &PeerAddrs) {
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
}

pub(super) fn add_cand(
    cands: &mut BTreeMap<SocketAddr, Cand>,
    remote: &PeerAddrs,
    addr: SocketAddr,
    kind: CandKind,
) {
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
pub(super) fn predict(observed: &[SocketAddr], known: &BTreeMap<SocketAddr, Cand>) -> Vec<SocketAddr> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::paths::rounds::TICKS;
    use crate::peer::paths::test_net::*;

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
}
