//! Ping and pong probes: building, authenticating, refusing replays.

use super::candidates::{CandKind, add_cand};
use super::{PathOut, Paths, PeerPath};
use crate::identity::NodeId;
use crate::wire::{FrameType, PROBE_MAC_LEN, ProbeFrame, TXID_LEN};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Least time between two triggered pings to one address.
pub(super) const TRIGGER_GAP: Duration = Duration::from_millis(20);
/// How long an unanswered ping is remembered.
const PING_TTL: Duration = Duration::from_secs(5);
/// Ping counters accepted below the highest one seen (pings to several
/// candidates overtake each other on different paths).
pub(super) const REPLAY_WINDOW: u64 = 128;

/// Which ping counters of one remote were seen (RFC 4303 §3.4.3 style): the
/// highest, and a bitmap of the [`REPLAY_WINDOW`] below it. A ping whose
/// counter was seen, or lies below the window, is a replay.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ReplayWindow {
    pub(super) top: u64,
    /// Bit `i` set: counter `top - i` was seen.
    pub(super) seen: u128,
}

impl ReplayWindow {
    /// Records `counter`; false if it is a replay (or too old to tell).
    pub(super) fn accept(&mut self, counter: u64) -> bool {
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

impl PeerPath {
    /// Forgets pings too old for their pongs to count.
    pub(super) fn expire_pings(&mut self, now: Instant) {
        self.pending.retain(|_, (_, sent)| now.saturating_duration_since(*sent) < PING_TTL);
    }
}

impl Paths {
    pub(super) fn ping(&mut self, now: Instant, peer: NodeId, to: SocketAddr) {
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
            p.live.sent(now);
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
    /// validated yet it also triggers a ping back — at once, or if we pinged
    /// that address less than [`TRIGGER_GAP`] ago, when the gap ends. A ping
    /// alone never maps `from` to the peer: only a round trip we started and
    /// that came back from the address we pinged does (see
    /// [`Paths::on_pong`]), so a captured ping replayed from a spoofed source
    /// teaches nothing.
    /// `reserved` says whether `from` belongs to a server or another
    /// established connection: such addresses are never a peer's path.
    pub(crate) fn on_ping(
        &mut self,
        now: Instant,
        from: SocketAddr,
        probe: &ProbeFrame,
        reserved: impl FnOnce(&SocketAddr) -> bool,
    ) {
        self.answer_ping(now, from, probe, reserved);
        self.reschedule(probe.from);
    }

    fn answer_ping(
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
            p.live.heard(now);
        }
        let validated = p.cands.get(&from).is_some_and(|c| c.rtt.is_some());
        let last = p.cands.get(&from).and_then(|c| c.last_ping);
        if !self.enabled || validated {
            return;
        }
        match last.map(|t| t + TRIGGER_GAP).filter(|at| *at > now) {
            // The remote may send QUIC here as soon as this pong reaches it,
            // and until our own round trip maps the address those packets
            // are dropped: our ping back cannot wait for the next round tick
            // (100 ms away), only for the gap that bounds triggered pings.
            // (Our recent ping may have gone before the remote could answer
            // it, as when both sides start a round at once.)
            Some(at) => {
                if p.ping_back.is_none_or(|(t, _)| t > at) {
                    p.ping_back = Some((at, from));
                }
            }
            None => self.ping(now, peer, from),
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
        self.validate_pong(now, from, probe, reserved);
        self.reschedule(probe.from);
    }

    fn validate_pong(
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
            p.live.heard(now);
        }
        if let Some(r) = p.round.as_mut()
            && r.success_tick.is_none()
        {
            r.success_tick = Some(r.tick.saturating_sub(1));
        }
        self.map_addr(peer, from, owner);
        self.select(now, peer);
    }
}

pub(super) fn tag(
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

pub(super) fn verify(
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
    use crate::peer::paths::test_net::*;
    use crate::peer::paths::{LocalView, PathOut};
    use crate::wire;

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
    fn a_ping_inside_the_trigger_gap_is_pinged_back_when_the_gap_ends() {
        // Both sides start a round at once: a's first ping to b arrives
        // before b could answer it (here: never), and b's ping reaches a
        // right after a pinged. a must ping b back soon — b validated the
        // path with a's pong and may already be sending there — not at its
        // next round tick 100 ms later.
        let mut net = Net::new(vec![(at(1), None)], vec![(at(2), None)]);
        net.connect();
        let (t0, b) = (net.now, net.sides[1].id);
        let p = &mut net.sides[0].paths;
        p.take_out();
        let last = p.by_peer[&b].cands.get(&at(2)).and_then(|c| c.last_ping);
        assert_eq!(last, Some(t0), "a pinged b as the round started");
        let pings = p.stats.pings;
        let ping = signed_ping(&net, 1, 1_000);
        let p = &mut net.sides[0].paths;
        p.on_ping(t0 + Duration::from_millis(1), at(2), &ping, |_| false);
        assert_eq!((p.stats.pongs, p.stats.pings), (1, pings), "answered; no ping inside the gap");
        let back = t0 + TRIGGER_GAP;
        assert_eq!(p.poll_timeout(), Some(back), "a wakes when the gap ends");
        p.handle_timeout(back, &LocalView::default());
        assert_eq!(p.stats.pings, pings + 1, "and pings b back");
        let out = p.take_out();
        assert!(out.iter().any(|o| matches!(o, PathOut::Datagram { to, .. } if *to == at(2))));
        p.check_deadlines();
        // Once the address is validated, an owed ping back is not sent.
        let p = &mut net.sides[0].paths;
        let owed = t0 + TRIGGER_GAP * 2;
        p.by_peer.get_mut(&b).unwrap().ping_back = Some((owed, at(2)));
        p.by_peer.get_mut(&b).unwrap().cands.get_mut(&at(2)).unwrap().rtt = Some(Duration::from_millis(3));
        p.reschedule(b);
        let pings = p.stats.pings;
        p.handle_timeout(owed, &LocalView::default());
        assert_eq!(p.stats.pings, pings);
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
    fn replay_window() {
        let mut w = ReplayWindow::default();
        assert!(!w.accept(0), "counters start at 1");
        assert!(w.accept(5) && !w.accept(5));
        assert!(w.accept(3) && !w.accept(3), "out of order within the window");
        assert!(w.accept(5 + REPLAY_WINDOW) && !w.accept(5), "slid past");
        assert!(w.accept(u64::MAX) && !w.accept(u64::MAX) && !w.accept(7));
    }
}
