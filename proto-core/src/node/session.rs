//! Reliable delivery across connections: what a node keeps per remote node
//! so that an accepted reliable message is delivered exactly once and in
//! order per channel, even when the QUIC connection it travelled on dies —
//! or is reported as failed, precisely and once.
//!
//! *Sender.* Every reliable message gets the next sequence number of its
//! `(destination, channel)` and is kept in that channel's log until the
//! receiver acknowledges it. QUIC's own acknowledgements are not enough: a
//! packet can be acknowledged by a connection that dies before the message
//! is handed up. When a connection to the same node (same incarnation) is
//! established again, every unacknowledged message is written to it again,
//! in order. The messages held per destination are bounded by a byte budget
//! (`Config::send_buffer_limit`); after the connection is lost they are
//! kept for the resume window (`Config::resume_window`), then reported
//! (`Event::SendFailed`, one per channel, with the sequence range).
//!
//! *Receiver.* Each channel stream starts with a header naming the sender's
//! session and the sequence number of the stream's first message; the
//! following messages are numbered implicitly. The receiver remembers, per
//! remote and channel, the next sequence number it expects and drops what it
//! already delivered (resent duplicates); a jump forward is accepted (the
//! sender gave up on the messages in between and reported them). It
//! acknowledges cumulatively on the control stream. A new session (the
//! sender restarted, or forgot us after a long absence) starts afresh.
//!
//! Unreliable datagrams do not pass through here: they are best effort.

use crate::identity::NodeId;
use crate::rng::NodeRng;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// While messages wait for a lost connection to come back, how often the
/// node asks its role to reconnect (a peer dials by ID once the other peer
/// is in the directory again).
pub(super) const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// Messages of one channel that were given up on, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failed {
    pub(super) channel: u8,
    /// Sequence number of the first and of the last message (inclusive).
    pub(super) first: u64,
    pub(super) last: u64,
    pub(super) messages: usize,
}

/// The log of one outgoing channel.
#[derive(Debug, Default)]
struct TxLog {
    next_seq: u64,
    /// Sent or waiting to be sent, not acknowledged; in sequence order.
    unacked: VecDeque<(u64, Bytes)>,
}

/// What the receiving side remembers of a remote's session.
#[derive(Debug)]
struct RxSession {
    incarnation: u64,
    session: u64,
    /// Next sequence number expected per channel.
    next: BTreeMap<u8, u64>,
}

/// Everything kept about one remote node.
#[derive(Debug)]
struct Session {
    /// Our session with the remote; the receiver keys its state by it.
    id: u64,
    /// The remote incarnation our messages are meant for, once a
    /// connection has been established.
    incarnation: Option<u64>,
    tx: BTreeMap<u8, TxLog>,
    /// Bytes of unacknowledged messages.
    bytes: usize,
    rx: Option<RxSession>,
    /// Acknowledgements not sent yet: channel → next expected.
    ack_due: BTreeMap<u8, u64>,
    /// Since when the remote has had no established connection (`None`
    /// while it has one, and before the first).
    down_since: Option<Instant>,
    /// The deadline registered in `Sessions::deadlines`.
    deadline: Option<Instant>,
}

impl Session {
    fn new(rng: &mut NodeRng) -> Self {
        Self {
            id: rng.next_u64(),
            incarnation: None,
            tx: BTreeMap::new(),
            bytes: 0,
            rx: None,
            ack_due: BTreeMap::new(),
            down_since: None,
            deadline: None,
        }
    }

    /// Removes every unacknowledged message and says which they were.
    fn fail_all(&mut self) -> Vec<Failed> {
        let mut out = Vec::new();
        for (&channel, log) in &mut self.tx {
            if let (Some(first), Some(last)) = (log.unacked.front(), log.unacked.back()) {
                out.push(Failed { channel, first: first.0, last: last.0, messages: log.unacked.len() });
            }
            log.unacked.clear();
        }
        self.bytes = 0;
        out
    }
}

/// The per-remote delivery state of a node.
#[derive(Debug)]
pub(super) struct Sessions {
    peers: BTreeMap<NodeId, Session>,
    /// `(deadline, remote)` for every session whose remote is down.
    deadlines: BTreeSet<(Instant, NodeId)>,
    window: Duration,
}

impl Sessions {
    pub(super) fn new(window: Duration) -> Self {
        Self { peers: BTreeMap::new(), deadlines: BTreeSet::new(), window }
    }

    /// Bytes of reliable messages to `to` not acknowledged yet.
    pub(super) fn outstanding(&self, to: &NodeId) -> usize {
        self.peers.get(to).map_or(0, |s| s.bytes)
    }

    /// Messages to `to` not acknowledged yet.
    pub(super) fn outstanding_messages(&self, to: &NodeId) -> usize {
        self.peers.get(to).map_or(0, |s| s.tx.values().map(|l| l.unacked.len()).sum())
    }

    /// Whether a connection to `to` was ever established in this session.
    pub(super) fn was_connected(&self, to: &NodeId) -> bool {
        self.peers.get(to).is_some_and(|s| s.incarnation.is_some())
    }

    /// Remotes with messages outstanding and no connection.
    pub(super) fn waiting(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.iter().filter(|(_, s)| s.down_since.is_some() && s.bytes > 0).map(|(id, _)| *id)
    }

    /// Accepts a reliable message for `to`: returns our session ID and the
    /// message's sequence number.
    pub(super) fn accept(
        &mut self,
        now: Instant,
        to: NodeId,
        channel: u8,
        bytes: Bytes,
        rng: &mut NodeRng,
    ) -> (u64, u64) {
        let s = self.peers.entry(to).or_insert_with(|| Session::new(rng));
        let log = s.tx.entry(channel).or_default();
        let seq = log.next_seq;
        log.next_seq += 1;
        let was_idle = s.bytes == 0;
        s.bytes += bytes.len();
        log.unacked.push_back((seq, bytes));
        let id = s.id;
        if was_idle && s.down_since.is_some() {
            // Held for a connection that is gone: reconnection attempts and
            // the window's end are due now, not the session's forgetting.
            Self::schedule(&mut self.deadlines, self.window, to, s, now);
        }
        (id, seq)
    }

    /// A connection to `to` (remote incarnation `incarnation`) was
    /// established. Returns the messages the remote's previous incarnation
    /// never acknowledged (it restarted: they are reported, not replayed
    /// into its new life), and our session ID and the messages to write to
    /// the new connection, in order per channel.
    #[allow(clippy::type_complexity)]
    pub(super) fn link_up(
        &mut self,
        to: NodeId,
        incarnation: u64,
        rng: &mut NodeRng,
    ) -> (Vec<Failed>, u64, Vec<(u8, u64, Bytes)>) {
        let s = self.peers.entry(to).or_insert_with(|| Session::new(rng));
        if let Some(d) = s.deadline.take() {
            self.deadlines.remove(&(d, to));
        }
        s.down_since = None;
        let mut failed = Vec::new();
        if s.incarnation.is_some_and(|i| i != incarnation) {
            failed = s.fail_all();
            s.id = rng.next_u64();
            s.ack_due.clear();
        }
        s.incarnation = Some(incarnation);
        let resend = s
            .tx
            .iter()
            .flat_map(|(&channel, log)| log.unacked.iter().map(move |(seq, b)| (channel, *seq, b.clone())))
            .collect();
        (failed, s.id, resend)
    }

    /// The established connection to `to` is gone: its messages wait for
    /// the resume window.
    pub(super) fn link_down(&mut self, to: NodeId, now: Instant) {
        let Some(s) = self.peers.get_mut(&to) else { return };
        s.down_since = Some(now);
        s.ack_due.clear();
        Self::schedule(&mut self.deadlines, self.window, to, s, now);
    }

    /// Registers the session's next deadline: a reconnection attempt while
    /// messages wait, the end of the resume window, or the time to forget
    /// the session (twice the window: the remote's own window may start a
    /// little later than ours, and until it ends it may resend what we
    /// delivered).
    fn schedule(
        deadlines: &mut BTreeSet<(Instant, NodeId)>,
        window: Duration,
        to: NodeId,
        s: &mut Session,
        now: Instant,
    ) {
        if let Some(d) = s.deadline.take() {
            deadlines.remove(&(d, to));
        }
        let Some(down) = s.down_since else { return };
        let at = if s.bytes > 0 { (now + RECONNECT_EVERY).min(down + window) } else { down + 2 * window };
        s.deadline = Some(at);
        deadlines.insert((at, to));
    }

    /// The next deadline of any session.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Handles the deadlines due at `now`: messages whose resume window is
    /// over are returned as failed, sessions idle for long are forgotten.
    pub(super) fn handle_timeout(&mut self, now: Instant) -> Vec<(NodeId, Vec<Failed>)> {
        let mut out = Vec::new();
        while let Some(&(at, to)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.remove(&(at, to));
            let Some(s) = self.peers.get_mut(&to) else { continue };
            s.deadline = None;
            let Some(down) = s.down_since else { continue };
            if s.bytes > 0 && now >= down + self.window {
                out.push((to, s.fail_all()));
            }
            if now >= down + 2 * self.window {
                self.peers.remove(&to);
                continue;
            }
            Self::schedule(&mut self.deadlines, self.window, to, s, now);
        }
        out
    }

    /// Gives up on every message to `to` (this node disconnected it, or the
    /// connection it waited for could not be made). The session itself stays:
    /// what we delivered from `to` must still be recognised if it resends
    /// (its messages that we delivered but whose acknowledgement was cut off),
    /// and our numbering towards it goes on.
    pub(super) fn fail(&mut self, to: &NodeId, now: Instant) -> Vec<Failed> {
        let Some(s) = self.peers.get_mut(to) else { return Vec::new() };
        let failed = s.fail_all();
        Self::schedule(&mut self.deadlines, self.window, *to, s, now);
        failed
    }

    /// Every remote with messages outstanding.
    pub(super) fn with_outstanding(&self) -> Vec<NodeId> {
        self.peers.iter().filter(|(_, s)| s.bytes > 0).map(|(id, _)| *id).collect()
    }

    /// `from` acknowledged every message below `next` on `channel`.
    /// Returns the bytes freed.
    pub(super) fn on_ack(&mut self, from: &NodeId, channel: u8, next: u64) -> usize {
        let Some(s) = self.peers.get_mut(from) else { return 0 };
        let Some(log) = s.tx.get_mut(&channel) else { return 0 };
        let mut freed = 0;
        while log.unacked.front().is_some_and(|(seq, _)| *seq < next) {
            if let Some((_, b)) = log.unacked.pop_front() {
                freed += b.len();
            }
        }
        s.bytes -= freed;
        freed
    }

    /// Message `seq` of `from`'s session `session` (remote incarnation
    /// `incarnation`) arrived on `channel`: whether to deliver it (`false`:
    /// a duplicate of one delivered already). Delivered messages are
    /// acknowledged at the next [`Sessions::take_acks`].
    pub(super) fn on_message(
        &mut self,
        from: NodeId,
        incarnation: u64,
        session: u64,
        channel: u8,
        seq: u64,
        rng: &mut NodeRng,
    ) -> bool {
        let s = self.peers.entry(from).or_insert_with(|| Session::new(rng));
        let rx = match &mut s.rx {
            Some(rx) if rx.incarnation == incarnation && rx.session == session => rx,
            rx => rx.insert(RxSession { incarnation, session, next: BTreeMap::new() }),
        };
        let next = rx.next.entry(channel).or_insert(seq);
        if seq < *next {
            return false;
        }
        *next = seq + 1;
        s.ack_due.insert(channel, seq + 1);
        true
    }

    /// Acknowledgements owed to `to`, if any.
    pub(super) fn take_acks(&mut self, to: &NodeId) -> Vec<(u8, u64)> {
        self.peers
            .get_mut(to)
            .map(|s| std::mem::take(&mut s.ack_due).into_iter().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Identity, Role};

    fn id(n: u8) -> NodeId {
        Identity::from_seed(Role::Peer, [n; 32]).id()
    }

    fn t0() -> Instant {
        crate::test_support::epoch()
    }

    fn msg(n: u8) -> Bytes {
        Bytes::from(vec![n; 10])
    }

    #[test]
    fn unacknowledged_messages_are_resent_on_the_next_connection() {
        let mut rng = NodeRng::from_seed([1; 32]);
        let mut s = Sessions::new(Duration::from_secs(30));
        let b = id(2);
        assert_eq!(s.accept(t0(), b, 0, msg(0), &mut rng).1, 0);
        let (failed, session, resend) = s.link_up(b, 7, &mut rng);
        assert!(failed.is_empty());
        assert_eq!(resend.len(), 1, "what was queued before the connection goes out on it");
        assert_eq!(s.accept(t0(), b, 0, msg(1), &mut rng), (session, 1));
        assert_eq!(s.accept(t0(), b, 3, msg(2), &mut rng), (session, 0), "numbered per channel");
        assert_eq!(s.on_ack(&b, 0, 1), 10);
        assert_eq!(s.outstanding(&b), 20);
        let start = t0();
        s.link_down(b, start);
        assert_eq!(s.waiting().collect::<Vec<_>>(), [b]);
        let (failed, again, resend) = s.link_up(b, 7, &mut rng);
        assert!(failed.is_empty());
        assert_eq!(again, session, "same remote incarnation: same session");
        assert_eq!(resend.iter().map(|(c, q, _)| (*c, *q)).collect::<Vec<_>>(), [(0, 1), (3, 0)]);
    }

    #[test]
    fn a_restarted_remote_gets_a_report_not_a_replay() {
        let mut rng = NodeRng::from_seed([1; 32]);
        let mut s = Sessions::new(Duration::from_secs(30));
        let b = id(2);
        let (_, first, _) = s.link_up(b, 7, &mut rng);
        for n in 0..3 {
            s.accept(t0(), b, 5, msg(n), &mut rng);
        }
        s.on_ack(&b, 5, 1);
        let (failed, session, resend) = s.link_up(b, 8, &mut rng);
        assert_eq!(failed, [Failed { channel: 5, first: 1, last: 2, messages: 2 }]);
        assert!(resend.is_empty());
        assert_ne!(session, first, "a new session for the new incarnation");
        assert_eq!(s.outstanding(&b), 0);
        // Numbers are never reused towards the same node.
        assert_eq!(s.accept(t0(), b, 5, msg(9), &mut rng).1, 3);
    }

    #[test]
    fn the_window_ends_in_one_report_per_channel_then_the_session_is_forgotten() {
        let mut rng = NodeRng::from_seed([1; 32]);
        let w = Duration::from_secs(30);
        let mut s = Sessions::new(w);
        let b = id(2);
        s.link_up(b, 7, &mut rng);
        for n in 0..4 {
            s.accept(t0(), b, n % 2, msg(n), &mut rng);
        }
        let start = t0();
        s.link_down(b, start);
        let mut reports = Vec::new();
        let mut t = start;
        while let Some(at) = s.poll_timeout() {
            assert!(at > t || at == start + w, "deadlines move forward");
            t = at;
            reports.extend(s.handle_timeout(t));
        }
        assert_eq!(t, start + 2 * w, "forgotten after twice the window");
        assert_eq!(reports.len(), 1);
        assert_eq!(
            reports[0].1,
            [
                Failed { channel: 0, first: 0, last: 1, messages: 2 },
                Failed { channel: 1, first: 0, last: 1, messages: 2 }
            ]
        );
        assert_eq!(s.outstanding(&b), 0);
        assert!(!s.was_connected(&b));
    }

    /// Found by the `pair` fuzz target: a receiver that disconnected the
    /// sender forgot what it had delivered, and the sender's resend of
    /// messages whose acknowledgement had been cut off was delivered twice.
    #[test]
    fn giving_up_on_our_messages_keeps_what_we_delivered() {
        let mut rng = NodeRng::from_seed([1; 32]);
        let mut s = Sessions::new(Duration::from_secs(30));
        let a = id(1);
        s.link_up(a, 7, &mut rng);
        assert!(s.on_message(a, 7, 100, 0, 0, &mut rng));
        s.accept(t0(), a, 0, msg(1), &mut rng);
        // We disconnect `a`: our messages are reported ...
        s.link_down(a, t0());
        assert_eq!(s.fail(&a, t0()).len(), 1);
        assert_eq!(s.outstanding(&a), 0);
        // ... and what `a` resends after reconnecting is still recognised.
        s.link_up(a, 7, &mut rng);
        assert!(!s.on_message(a, 7, 100, 0, 0, &mut rng), "a resent duplicate");
        assert!(s.on_message(a, 7, 100, 0, 1, &mut rng));
        // Our numbering towards `a` goes on.
        assert_eq!(s.accept(t0(), a, 0, msg(2), &mut rng).1, 1);
    }

    #[test]
    fn the_receiver_drops_duplicates_and_starts_afresh_for_a_new_session() {
        let mut rng = NodeRng::from_seed([1; 32]);
        let mut s = Sessions::new(Duration::from_secs(30));
        let a = id(1);
        assert!(s.on_message(a, 7, 100, 0, 5, &mut rng), "the first message sets the baseline");
        assert!(s.on_message(a, 7, 100, 0, 6, &mut rng));
        assert!(!s.on_message(a, 7, 100, 0, 5, &mut rng), "resent: dropped");
        assert!(!s.on_message(a, 7, 100, 0, 6, &mut rng));
        assert!(s.on_message(a, 7, 100, 0, 9, &mut rng), "a gap: the sender gave up on 7 and 8");
        assert!(s.on_message(a, 7, 100, 1, 0, &mut rng), "channels are independent");
        assert_eq!(s.take_acks(&a), [(0, 10), (1, 1)]);
        assert!(s.take_acks(&a).is_empty());
        assert!(s.on_message(a, 7, 101, 0, 0, &mut rng), "a new session");
        assert!(s.on_message(a, 8, 101, 0, 0, &mut rng), "a new incarnation");
    }
}
