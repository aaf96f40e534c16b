//! Probing rounds: their schedule, start, end and backoff.

use super::candidates::{CandKind, PREDICT_TICKS, is_edm, predict};
use super::{LocalView, PathOut, Paths, PeerPath};
use crate::identity::NodeId;
use crate::proto::PeerAddrs;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// When a round pings, as offsets from its start (ms). Dense at first, when
/// the other side is starting its own round, then sparser.
pub(super) const TICKS: [u64; 7] = [0, 100, 200, 400, 700, 1100, 1600];
/// How long a round waits for pongs after its last tick.
pub(super) const ROUND_TAIL: Duration = Duration::from_millis(900);
/// Ticks that still ping after the first success (so the other side's
/// filter opens too).
pub(super) const TICKS_AFTER_SUCCESS: usize = 2;
/// Wait before retrying after a failed round; doubles per failure.
pub(super) const FIRST_RETRY: Duration = Duration::from_secs(2);
/// Longest wait between rounds.
pub(super) const MAX_RETRY: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub(super) struct Round {
    pub(super) started: Instant,
    /// Next index into [`TICKS`].
    pub(super) tick: usize,
    /// Tick index at which a pong first arrived.
    pub(super) success_tick: Option<usize>,
    /// Ports to try on an endpoint-dependent remote.
    pub(super) predicted: Vec<SocketAddr>,
}

impl Round {
    /// When the round is over at the latest: its last tick plus the wait
    /// for stragglers.
    fn end(&self) -> Instant {
        self.started + Duration::from_millis(TICKS[TICKS.len() - 1]) + ROUND_TAIL
    }

    /// When the round next needs attention: its next tick, or its end once
    /// every tick has gone.
    fn deadline(&self) -> Instant {
        match TICKS.get(self.tick) {
            Some(t) => self.started + Duration::from_millis(*t),
            None => self.end(),
        }
    }

    /// Whether pinging is over: enough ticks have passed since the first
    /// pong for the other side's filter to be open too.
    fn done_pinging(&self) -> bool {
        self.success_tick.is_some_and(|s| self.tick > s + TICKS_AFTER_SUCCESS)
    }
}

impl PeerPath {
    /// When the round logic next needs attention: the running round's next
    /// tick or end, or, while none runs, when the next one is due.
    pub(super) fn round_deadline(&self) -> Option<Instant> {
        match &self.round {
            Some(r) => Some(r.deadline()),
            None => self.next_round,
        }
    }

    /// Moves the running round past every tick that has come and returns the
    /// addresses those ticks ping.
    pub(super) fn due_round_pings(&mut self, now: Instant, view: &LocalView) -> Vec<SocketAddr> {
        let mut targets = Vec::new();
        let Some(r) = self.round.as_mut() else { return targets };
        while TICKS.get(r.tick).is_some_and(|t| r.started + Duration::from_millis(*t) <= now) {
            if !r.done_pinging() {
                let both_edm = view.edm && is_edm(&self.remote.observed);
                for (a, c) in &self.cands {
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
        targets
    }
}

impl Paths {
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
        self.reschedule(peer);
    }

    pub(super) fn start_round(&mut self, now: Instant, peer: NodeId, responsive: bool, view: &LocalView) {
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

    pub(super) fn end_round_if_done(&mut self, now: Instant, peer: NodeId) {
        let Some(p) = self.by_peer.get_mut(&peer) else { return };
        let Some(r) = &p.round else { return };
        if now < r.end() && !r.done_pinging() {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::paths::test_net::*;

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
}
