//! The servers a node knows of, and when to (re)dial them.
//!
//! Servers and peers alike keep a list of known servers — learned from
//! introducers, server lists and announcements — and a list of bootstrap
//! addresses to fall back on when no server is connected. Every server that
//! is known but not connected is redialed with jittered exponential backoff
//! until it answers or has been unreachable for `forget_after`; bootstrap
//! addresses are dialed (by address, expecting any server) only while no
//! server is connected.

use crate::event::Event;
use crate::identity::{NodeId, Role};
use crate::proto::ServerEntry;
use crate::quic::Expect;
use crate::rng::NodeRng;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Backoff settings shared by all redials.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub(crate) min: Duration,
    pub(crate) max: Duration,
    pub(crate) forget_after: Duration,
}

/// How a dial ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DialOutcome {
    /// Established with this node.
    Connected(NodeId),
    /// Another connection to the same node won the tie-break (or already existed).
    Superseded,
    /// Failed.
    Failed(crate::error::ConnectError),
}

/// A server the roster knows.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    pub(crate) name: String,
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) incarnation: u64,
    /// Incarnations this one superseded (most recent last, bounded): news of
    /// them is stale. Incarnations are random, not ordered, so without this
    /// two stories of a restarted server could chase each other round the
    /// mesh for ever.
    retired: Vec<u64>,
    pub(crate) load: u32,
    dialing: bool,
    backoff: Duration,
    next_dial: Instant,
    /// When it was last live (or first learned of).
    last_seen: Instant,
}

/// Superseded incarnations remembered per server.
const MAX_RETIRED: usize = 8;

#[derive(Debug)]
struct Bootstrap {
    addr: SocketAddr,
    dialing: bool,
    backoff: Duration,
    next: Instant,
}

/// A dial the roster wants made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dial {
    pub(crate) expect: Expect,
    pub(crate) addr: SocketAddr,
    /// Ask the server for its list (a join through an introducer).
    pub(crate) join: bool,
}

/// Known servers, bootstrap addresses and their redial schedule.
#[derive(Debug)]
pub(crate) struct Roster {
    me: NodeId,
    backoff: Backoff,
    known: BTreeMap<NodeId, Known>,
    bootstrap: Vec<Bootstrap>,
}

impl Roster {
    pub(crate) fn new(me: NodeId, bootstrap: &[SocketAddr], backoff: Backoff, now: Instant) -> Self {
        Self {
            me,
            bootstrap: bootstrap
                .iter()
                .map(|&addr| Bootstrap { addr, dialing: false, backoff: backoff.min, next: now })
                .collect(),
            backoff,
            known: BTreeMap::new(),
        }
    }

    /// Whether any bootstrap address was configured.
    pub(crate) fn has_bootstrap(&self) -> bool {
        !self.bootstrap.is_empty()
    }

    pub(crate) fn get(&self, id: &NodeId) -> Option<&Known> {
        self.known.get(id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&NodeId, &Known)> {
        self.known.iter()
    }

    pub(crate) fn set_load(&mut self, id: &NodeId, load: u32) {
        if let Some(k) = self.known.get_mut(id) {
            k.load = load;
        }
    }

    /// The entry the roster holds for `id`, as sent in server lists.
    pub(crate) fn entry(&self, id: &NodeId) -> Option<ServerEntry> {
        self.known.get(id).map(|k| ServerEntry {
            id: *id,
            name: k.name.clone(),
            addrs: k.addrs.clone(),
            incarnation: k.incarnation,
            load: k.load,
        })
    }

    /// Records a server from hearsay (another node's list or announcement);
    /// true if this ID and incarnation are news. An incarnation already
    /// superseded here is not.
    pub(crate) fn learn(&mut self, now: Instant, e: &ServerEntry) -> bool {
        if self.known.get(&e.id).is_some_and(|k| k.retired.contains(&e.incarnation)) {
            return false;
        }
        self.learn_direct(now, e)
    }

    /// Records a server as it presented itself on a connection (the truth
    /// about its incarnation); true if news.
    pub(crate) fn learn_direct(&mut self, now: Instant, e: &ServerEntry) -> bool {
        if e.id == self.me || e.id.role() != Role::Server {
            return false;
        }
        match self.known.get_mut(&e.id) {
            Some(k) if k.incarnation == e.incarnation => false,
            Some(k) => {
                k.retired.retain(|i| *i != e.incarnation);
                k.retired.push(k.incarnation);
                if k.retired.len() > MAX_RETIRED {
                    k.retired.remove(0);
                }
                k.incarnation = e.incarnation;
                k.name = e.name.clone();
                k.addrs = e.addrs.clone();
                k.load = e.load;
                k.last_seen = now;
                true
            }
            None => {
                self.known.insert(
                    e.id,
                    Known {
                        name: e.name.clone(),
                        addrs: e.addrs.clone(),
                        incarnation: e.incarnation,
                        retired: Vec::new(),
                        load: e.load,
                        dialing: false,
                        backoff: self.backoff.min,
                        next_dial: now,
                        last_seen: now,
                    },
                );
                true
            }
        }
    }

    /// A connection to `id` is up.
    pub(crate) fn on_link_up(&mut self, now: Instant, id: &NodeId) {
        if let Some(k) = self.known.get_mut(id) {
            k.dialing = false;
            k.backoff = self.backoff.min;
            k.last_seen = now;
        }
    }

    /// The connection to `id` died; `any_live` says whether another server
    /// is still connected (if not, bootstrapping resumes).
    pub(crate) fn on_link_down(&mut self, now: Instant, id: &NodeId, any_live: bool, rng: &mut NodeRng) {
        if let Some(k) = self.known.get_mut(id) {
            k.dialing = false;
            k.backoff = self.backoff.min;
            k.next_dial = now + rng.jitter(self.backoff.min, 0.2);
            k.last_seen = now;
        }
        if !any_live {
            for b in &mut self.bootstrap {
                b.dialing = false;
                b.next = now;
            }
        }
    }

    /// Records how a dial ended; returns an event to report, if any.
    pub(crate) fn on_dial_done(
        &mut self,
        now: Instant,
        dial: Expect,
        addr: SocketAddr,
        outcome: &DialOutcome,
        rng: &mut NodeRng,
    ) -> Option<Event> {
        match dial {
            Expect::Node(id) => {
                let k = self.known.get_mut(&id)?;
                k.dialing = false;
                match outcome {
                    DialOutcome::Failed(_) => {
                        k.next_dial = now + rng.jitter(k.backoff, 0.2);
                        k.backoff = (k.backoff * 2).min(self.backoff.max);
                    }
                    // Another connection is on its way; check again later in
                    // case it fails without a word.
                    DialOutcome::Superseded => k.next_dial = now + self.backoff.min,
                    DialOutcome::Connected(_) => {}
                }
                None
            }
            Expect::AnyOf(_) => {
                let b = self.bootstrap.iter_mut().find(|b| b.addr == addr)?;
                b.dialing = false;
                match outcome {
                    DialOutcome::Failed(error) => {
                        let retry_in = rng.jitter(b.backoff, 0.2);
                        b.next = now + retry_in;
                        b.backoff = (b.backoff * 2).min(self.backoff.max);
                        Some(Event::BootstrapFailed { addr, error: error.clone(), retry_in })
                    }
                    DialOutcome::Connected(_) | DialOutcome::Superseded => {
                        b.backoff = self.backoff.min;
                        b.next = now + self.backoff.min;
                        None
                    }
                }
            }
        }
    }

    /// Forgets servers unreachable for longer than `forget_after`.
    pub(crate) fn forget_stale(&mut self, now: Instant, live: impl Fn(&NodeId) -> bool) {
        let forget = self.backoff.forget_after;
        self.known
            .retain(|id, k| live(id) || k.dialing || now.saturating_duration_since(k.last_seen) <= forget);
    }

    /// The dials that are due now; marks them in progress.
    pub(crate) fn due(&mut self, now: Instant, live: impl Fn(&NodeId) -> bool, any_live: bool) -> Vec<Dial> {
        let mut out = Vec::new();
        for (id, k) in &mut self.known {
            if live(id) || k.dialing || k.next_dial > now {
                continue;
            }
            if let Some(addr) = k.addrs.first() {
                k.dialing = true;
                out.push(Dial { expect: Expect::Node(*id), addr: *addr, join: false });
            }
        }
        if !any_live {
            for b in &mut self.bootstrap {
                if !b.dialing && b.next <= now {
                    b.dialing = true;
                    out.push(Dial { expect: Expect::AnyOf(Role::Server), addr: b.addr, join: true });
                }
            }
        }
        out
    }

    /// When the next dial falls due.
    pub(crate) fn next_due(&self, live: impl Fn(&NodeId) -> bool, any_live: bool) -> Option<Instant> {
        let known = self
            .known
            .iter()
            .filter(|(id, k)| !k.dialing && !k.addrs.is_empty() && !live(id))
            .map(|(_, k)| k.next_dial);
        let boot = self.bootstrap.iter().filter(|b| !any_live && !b.dialing).map(|b| b.next);
        known.chain(boot).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn entry(seed: u8, inc: u64) -> ServerEntry {
        ServerEntry {
            id: Identity::from_seed(Role::Server, [seed; 32]).id(),
            name: format!("s{seed}"),
            addrs: vec![SocketAddr::from(([192, 0, 2, seed], 4433))],
            incarnation: inc,
            load: 0,
        }
    }

    fn roster(now: Instant) -> Roster {
        let me = Identity::from_seed(Role::Peer, [9; 32]).id();
        let backoff = Backoff {
            min: Duration::from_millis(250),
            max: Duration::from_secs(5),
            forget_after: Duration::from_secs(60),
        };
        Roster::new(me, &[SocketAddr::from(([192, 0, 2, 100], 4433))], backoff, now)
    }

    #[test]
    fn learning_is_news_once_per_incarnation() {
        let now = crate::test_support::epoch();
        let mut r = roster(now);
        assert!(r.learn(now, &entry(1, 1)));
        assert!(!r.learn(now, &entry(1, 1)));
        assert!(r.learn(now, &entry(1, 2)), "a restart is news");
        assert!(!r.learn(now, &entry(1, 1)), "hearsay of a superseded incarnation is stale");
        assert!(r.learn_direct(now, &entry(1, 1)), "the server itself is believed");
        assert!(!r.learn(now, &entry(1, 2)), "and now 2 is the stale one");
        let peer = ServerEntry { id: Identity::from_seed(Role::Peer, [3; 32]).id(), ..entry(3, 1) };
        assert!(!r.learn(now, &peer), "peers are not servers");
    }

    #[test]
    fn failed_dials_back_off_and_bootstrap_only_when_alone() {
        let now = crate::test_support::epoch();
        let mut r = roster(now);
        let mut rng = NodeRng::from_seed([1; 32]);
        r.learn(now, &entry(1, 1));
        let dials = r.due(now, |_| false, false);
        assert_eq!(dials.len(), 2, "the known server and the bootstrap address");
        assert!(r.due(now, |_| false, false).is_empty(), "in progress");
        let id = entry(1, 1).id;
        let fail = DialOutcome::Failed(crate::error::ConnectError::TimedOut);
        r.on_dial_done(now, Expect::Node(id), dials[0].addr, &fail, &mut rng);
        let first = r.next_due(|_| false, true).unwrap() - now;
        r.on_dial_done(now, Expect::Node(id), dials[0].addr, &fail, &mut rng);
        let event = r.on_dial_done(now, Expect::AnyOf(Role::Server), dials[1].addr, &fail, &mut rng);
        assert!(matches!(event, Some(Event::BootstrapFailed { .. })));
        assert!(
            r.due(now + Duration::from_secs(60), |_| false, true)
                .iter()
                .all(|d| d.expect == Expect::Node(id))
        );
        assert!(first <= Duration::from_millis(300));
    }

    #[test]
    fn stale_servers_are_forgotten() {
        let now = crate::test_support::epoch();
        let mut r = roster(now);
        r.learn(now, &entry(1, 1));
        r.forget_stale(now + Duration::from_secs(61), |_| false);
        assert!(r.iter().next().is_none());
    }
}
