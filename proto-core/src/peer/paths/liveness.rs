//! Liveness of the direct path in use: suspicion, keep-alives, fallback.

use super::{LocalView, PathOut, Paths, PeerPath};
use crate::identity::NodeId;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Pings sent to a suspect path before it is given up (with 5% loss each
/// way, all three round trips fail about once in a thousand suspicions).
pub(super) const SUSPECT_PINGS: u32 = 3;
/// Shortest keep-alive interval learned from a lost binding.
pub(super) const MIN_KEEPALIVE: Duration = Duration::from_secs(2);
/// Idle gaps shorter than this do not teach a keep-alive interval (a NAT that
/// drops a binding that quickly is rebooting, not timing out).
pub(super) const LEARN_GAP: Duration = Duration::from_secs(5);

/// Liveness of the direct path in use.
#[derive(Debug, Clone, Default)]
pub(super) struct Liveness {
    pub(super) last_rx: Option<Instant>,
    pub(super) last_tx: Option<Instant>,
    /// First send since the last receipt, and the activity before it.
    pub(super) unanswered: Option<(Instant, Instant)>,
    /// Probing an unanswered path: give up at this time.
    pub(super) suspect_until: Option<Instant>,
    pub(super) next_suspect_ping: Option<Instant>,
}

impl Liveness {
    /// A packet went out on the direct path: if nothing has been heard since,
    /// the clock for an answer starts now.
    pub(super) fn sent(&mut self, now: Instant) {
        if self.unanswered.is_none() {
            let before = self.last_rx.into_iter().chain(self.last_tx).max().unwrap_or(now);
            self.unanswered = Some((now, before));
        }
        self.last_tx = Some(now);
    }

    pub(super) fn heard(&mut self, now: Instant) {
        self.last_rx = Some(now);
        self.unanswered = None;
        self.suspect_until = None;
        self.next_suspect_ping = None;
    }
}

/// What the direct path in use needs when its timer fires.
pub(super) enum LiveDue {
    /// Nothing yet.
    Nothing,
    /// A ping to this address (the direct path).
    Ping(SocketAddr),
    /// The path is given up.
    Lost,
}

impl PeerPath {
    /// When the direct path in use next needs attention: a keep-alive, the
    /// point where unanswered sends make it suspect, or the next ping to (or
    /// the end of) a suspect path. `None` on the relay.
    pub(super) fn liveness_deadline(&self) -> Option<Instant> {
        self.direct?;
        let l = &self.live;
        let keepalive = l.last_tx.map(|t| t + self.keepalive);
        let probe = match l.suspect_until {
            Some(until) => Some(l.next_suspect_ping.map_or(until, |p| p.min(until))),
            None => l.unanswered.map(|(since, _)| since + self.suspect_after()),
        };
        keepalive.into_iter().chain(probe).min()
    }

    /// Runs the direct path's timers that have come.
    pub(super) fn due_liveness(&mut self, now: Instant) -> LiveDue {
        let Some(addr) = self.direct else { return LiveDue::Nothing };
        let (suspect_after, probe_timeout, keepalive) =
            (self.suspect_after(), self.probe_timeout(), self.keepalive);
        let l = &mut self.live;
        match l.suspect_until {
            Some(until) if until <= now => LiveDue::Lost,
            Some(until) if l.next_suspect_ping.is_some_and(|t| t <= now) => {
                // Spaced pings, so one lost packet does not condemn a path.
                let next = now + probe_timeout / SUSPECT_PINGS;
                l.next_suspect_ping = (next < until).then_some(next);
                LiveDue::Ping(addr)
            }
            Some(_) => LiveDue::Nothing,
            None if l.unanswered.is_some_and(|(since, _)| since + suspect_after <= now) => {
                // Sends went unanswered: ask the path directly.
                l.suspect_until = Some(now + probe_timeout);
                l.next_suspect_ping = Some(now + probe_timeout / SUSPECT_PINGS);
                LiveDue::Ping(addr)
            }
            // Idle: keep the NAT bindings on both sides open.
            None if l.last_tx.is_some_and(|t| t + keepalive <= now) => LiveDue::Ping(addr),
            None => LiveDue::Nothing,
        }
    }

    pub(super) fn rtt(&self) -> Duration {
        self.direct.and_then(|a| self.cands.get(&a)).and_then(|c| c.rtt).unwrap_or(Duration::from_millis(100))
    }

    /// How long sends may go unanswered before the path is probed.
    pub(super) fn suspect_after(&self) -> Duration {
        (self.rtt() * 3).max(Duration::from_millis(250))
    }

    /// How long the probing of a suspect path lasts.
    pub(super) fn probe_timeout(&self) -> Duration {
        (self.rtt() * 4).max(Duration::from_millis(500))
    }
}

impl Paths {
    /// The direct path of `peer` stopped answering: back to the relay, learn
    /// a shorter keep-alive if it died idle, and start a new round.
    pub(super) fn lost_direct(&mut self, now: Instant, peer: NodeId, view: &LocalView) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::paths::Route;
    use crate::peer::paths::test_net::*;

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
}
