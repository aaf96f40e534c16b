//! Received messages waiting for the application: one merged queue, and a
//! queue per `(peer, channel)` that a [`Peer`](crate::Peer) handle routes to
//! itself. Each message is in exactly one queue, so it is received once; a
//! route takes over the messages of its `(peer, channel)` already waiting
//! in the merged queue when it is made and gives back what it still holds
//! when it goes, so per-channel order survives both.
//!
//! The inbox counts the bytes it holds per sender and says when a sender
//! should be paused (its bytes then wait in QUIC, whose flow control holds
//! the sender back) and when it may resume.

use crate::endpoint::Message;
use p2pcore::{NodeId, Reliability};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use tokio::sync::Notify;

struct Route {
    queue: VecDeque<Message>,
    notify: Arc<Notify>,
    /// Peer handles that registered this route.
    refs: usize,
}

/// What a push did.
#[derive(Debug)]
pub(crate) enum Pushed {
    /// Into the merged queue.
    Merged,
    /// Into a route, whose waiters should be woken.
    Routed(Arc<Notify>),
    /// Dropped: an unreliable message from a sender over its limit.
    Dropped,
}

pub(crate) struct Inbox {
    merged: VecDeque<Message>,
    routes: BTreeMap<(NodeId, u8), Route>,
    held: BTreeMap<NodeId, usize>,
    total: usize,
    /// Senders this inbox asked to pause.
    paused: BTreeSet<NodeId>,
    per_peer: usize,
    max_total: usize,
}

impl Inbox {
    pub(crate) fn new(per_peer: usize, max_total: usize) -> Self {
        Self {
            merged: VecDeque::new(),
            routes: BTreeMap::new(),
            held: BTreeMap::new(),
            total: 0,
            paused: BTreeSet::new(),
            per_peer,
            max_total,
        }
    }

    fn over(&self, from: &NodeId) -> bool {
        self.held.get(from).copied().unwrap_or(0) >= self.per_peer || self.total >= self.max_total
    }

    /// Queues `m`. Returns where it went, and whether its sender should now
    /// be paused (it just went over its limit, or the inbox over its total).
    pub(crate) fn push(&mut self, m: Message) -> (Pushed, bool) {
        let from = m.from;
        if m.reliability == Reliability::Unreliable && self.over(&from) {
            // Best effort by contract: dropping is what an unreliable message
            // may suffer anyway, and holding it would be unbounded.
            return (Pushed::Dropped, false);
        }
        let len = m.bytes.len();
        *self.held.entry(from).or_default() += len;
        self.total += len;
        let pushed = match self.routes.get_mut(&(from, m.channel)) {
            Some(r) => {
                r.queue.push_back(m);
                Pushed::Routed(r.notify.clone())
            }
            None => {
                self.merged.push_back(m);
                Pushed::Merged
            }
        };
        let pause = self.over(&from) && self.paused.insert(from);
        (pushed, pause)
    }

    /// The next message of the merged queue.
    pub(crate) fn pop_merged(&mut self, resume: &mut Vec<NodeId>) -> Option<Message> {
        let m = self.merged.pop_front()?;
        self.release(&m, resume);
        Some(m)
    }

    /// The next message of a route.
    pub(crate) fn pop_route(
        &mut self,
        from: NodeId,
        channel: u8,
        resume: &mut Vec<NodeId>,
    ) -> Option<Message> {
        let m = self.routes.get_mut(&(from, channel))?.queue.pop_front()?;
        self.release(&m, resume);
        Some(m)
    }

    /// Accounts a message taken by the application; adds to `resume` the
    /// paused senders that are now under half their limits.
    fn release(&mut self, m: &Message, resume: &mut Vec<NodeId>) {
        let len = m.bytes.len();
        self.total -= len;
        if let Some(h) = self.held.get_mut(&m.from) {
            *h -= len;
            if *h == 0 {
                self.held.remove(&m.from);
            }
        }
        if self.paused.is_empty() || self.total > self.max_total / 2 {
            return;
        }
        let per_peer = self.per_peer;
        let held = &self.held;
        self.paused.retain(|id| {
            let low = held.get(id).copied().unwrap_or(0) <= per_peer / 2;
            if low {
                resume.push(*id);
            }
            !low
        });
    }

    /// Registers a route for `(from, channel)` (or one more user of it) and
    /// moves the messages of that pair waiting in the merged queue into it,
    /// in order. Returns the route's notifier and whether messages moved.
    pub(crate) fn route(&mut self, from: NodeId, channel: u8) -> (Arc<Notify>, bool) {
        let route = self.routes.entry((from, channel)).or_insert_with(|| Route {
            queue: VecDeque::new(),
            notify: Arc::new(Notify::new()),
            refs: 0,
        });
        route.refs += 1;
        let mut moved = false;
        if route.refs == 1 {
            let mut rest = VecDeque::with_capacity(self.merged.len());
            for m in self.merged.drain(..) {
                if m.from == from && m.channel == channel {
                    route.queue.push_back(m);
                    moved = true;
                } else {
                    rest.push_back(m);
                }
            }
            self.merged = rest;
        }
        (route.notify.clone(), moved)
    }

    /// One user of the route is gone; the last one's waiting messages go
    /// back to the merged queue. Returns whether any did.
    pub(crate) fn unroute(&mut self, from: NodeId, channel: u8) -> bool {
        let Some(route) = self.routes.get_mut(&(from, channel)) else { return false };
        route.refs -= 1;
        if route.refs > 0 {
            return false;
        }
        let Some(route) = self.routes.remove(&(from, channel)) else { return false };
        let moved = !route.queue.is_empty();
        self.merged.extend(route.queue);
        moved
    }

    /// Every route's notifier (to wake every waiter when the endpoint ends).
    pub(crate) fn notifiers(&self) -> Vec<Arc<Notify>> {
        self.routes.values().map(|r| r.notify.clone()).collect()
    }

    /// Messages waiting, in every queue.
    pub(crate) fn len(&self) -> usize {
        self.merged.len() + self.routes.values().map(|r| r.queue.len()).sum::<usize>()
    }

    /// Bytes waiting, in every queue.
    pub(crate) fn bytes(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use p2pcore::{Identity, Role};

    fn id(n: u8) -> NodeId {
        Identity::from_seed(Role::Peer, [n; 32]).id()
    }

    fn msg(from: NodeId, channel: u8, body: &str, reliability: Reliability) -> Message {
        Message { from, channel, bytes: Bytes::copy_from_slice(body.as_bytes()), reliability }
    }

    fn body(m: Option<Message>) -> String {
        String::from_utf8(m.expect("a message").bytes.to_vec()).unwrap()
    }

    #[test]
    fn a_route_takes_over_waiting_messages_and_gives_back_the_rest_in_order() {
        let (a, b) = (id(1), id(2));
        let mut inbox = Inbox::new(1 << 20, 1 << 30);
        let mut resume = Vec::new();
        for (from, ch, text) in [(a, 0, "a0"), (b, 0, "b0"), (a, 1, "a1"), (a, 0, "a0'")] {
            assert!(matches!(inbox.push(msg(from, ch, text, Reliability::Reliable)).0, Pushed::Merged));
        }
        let (_, moved) = inbox.route(a, 0);
        assert!(moved);
        assert!(matches!(inbox.push(msg(a, 0, "a0''", Reliability::Reliable)).0, Pushed::Routed(_)));
        assert_eq!(body(inbox.pop_route(a, 0, &mut resume)), "a0");
        // The merged queue no longer has a's channel 0.
        assert_eq!(body(inbox.pop_merged(&mut resume)), "b0");
        assert_eq!(body(inbox.pop_merged(&mut resume)), "a1");
        assert!(inbox.pop_merged(&mut resume).is_none());
        // A second user keeps the route; the last one gives back what waits.
        inbox.route(a, 0);
        assert!(!inbox.unroute(a, 0));
        assert!(inbox.unroute(a, 0));
        assert_eq!(body(inbox.pop_merged(&mut resume)), "a0'");
        assert_eq!(body(inbox.pop_merged(&mut resume)), "a0''");
        assert_eq!((inbox.len(), inbox.bytes()), (0, 0));
    }

    #[test]
    fn a_sender_over_its_limit_is_paused_until_half_is_taken() {
        let (a, b) = (id(1), id(2));
        let mut inbox = Inbox::new(10, 1 << 30);
        let mut resume = Vec::new();
        assert!(!inbox.push(msg(a, 0, "12345", Reliability::Reliable)).1);
        assert!(inbox.push(msg(a, 0, "123456", Reliability::Reliable)).1, "11 bytes of 10: pause");
        // Paused once; further reliable messages (already in flight) are kept.
        assert!(!inbox.push(msg(a, 0, "1", Reliability::Reliable)).1);
        // Unreliable ones over the limit are dropped; other senders unaffected.
        assert!(matches!(inbox.push(msg(a, 0, "u", Reliability::Unreliable)).0, Pushed::Dropped));
        assert!(matches!(inbox.push(msg(b, 0, "u", Reliability::Unreliable)).0, Pushed::Merged));
        inbox.pop_merged(&mut resume);
        assert!(resume.is_empty(), "7 bytes held: still over half");
        inbox.pop_merged(&mut resume);
        assert_eq!(resume, vec![a], "1 byte held: resume");
        assert!(!inbox.push(msg(a, 0, "1", Reliability::Reliable)).1);
    }

    #[test]
    fn the_total_limit_pauses_any_sender() {
        let (a, b) = (id(1), id(2));
        let mut inbox = Inbox::new(100, 8);
        let mut resume = Vec::new();
        assert!(!inbox.push(msg(a, 0, "1234", Reliability::Reliable)).1);
        assert!(inbox.push(msg(b, 0, "1234", Reliability::Reliable)).1, "8 bytes in all");
        inbox.pop_merged(&mut resume);
        assert_eq!(resume, vec![b]);
    }
}
