//! Keeping store sessions alive while their peer is connected, and ending
//! them when it has been away for their TTL.
//!
//! A session lives as long as its owner is connected to *any* server. The
//! peer sends nothing for that: every server tells the leader which peers
//! are connected to it (`ClusterMsg::Holding`: the whole list when the
//! leader changes, then what changes), and the leader — which sees its own
//! peers directly — starts a session's TTL when its owner is connected to
//! no live server, and stops it when the owner is back. When a TTL runs
//! out, the leader proposes an `Expire` entry: expiry is a committed log
//! entry, so every server applies it at the same point and a replay gives
//! the same store. A new leader knows nothing of its predecessor's timers,
//! so it starts every absent owner's TTL afresh before expiring anything
//! (a session can outlive its owner by up to one TTL per failover, never
//! end early).

use super::Server;
use crate::identity::NodeId;
use crate::proto::ClusterMsg;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How soon an expiry that did not commit (lost leadership, no quorum) is
/// proposed again.
const EXPIRE_RETRY: Duration = Duration::from_secs(1);

/// The leader's view of session owners, and what this server told the leader.
#[derive(Debug, Default)]
pub(super) struct SessionKeeper {
    /// At the leader: which peers each live server holds.
    held: BTreeMap<NodeId, BTreeSet<NodeId>>,
    /// At the leader: sessions whose owner is away, and when they end.
    expires: BTreeMap<u64, Instant>,
    /// The store's session counter the table was last reconciled with.
    seen_changes: Option<u64>,
    /// The Raft term we led in when `expires` was built (a new term starts afresh).
    led_term: Option<u64>,
    /// Follower side: the leader our peers were last reported to.
    reported_to: Option<NodeId>,
}

impl Server {
    /// Whether `peer` is connected to this server or any live server that
    /// reported it.
    fn owner_present(&self, peer: &NodeId) -> bool {
        self.peers.get(peer).is_some()
            || self.sessions.held.iter().any(|(s, set)| self.live.contains_key(s) && set.contains(peer))
    }

    /// Brings the leader's expiry table in line with the store's sessions
    /// and who is connected; reports our peers to a new leader.
    pub(super) fn keep_sessions(&mut self, now: Instant) {
        self.report_holding();
        let leading = self.consensus.is_leader() && self.master.master == Some(self.me);
        if !leading {
            self.sessions.expires.clear();
            self.sessions.led_term = None;
            self.sessions.seen_changes = None;
            return;
        }
        let term = self.consensus.term();
        if self.sessions.led_term != Some(term) {
            // A fresh TTL for everyone before anything expires.
            self.sessions.expires.clear();
            self.sessions.led_term = Some(term);
        }
        let Some(store) = self.consensus.store() else { return };
        self.sessions.seen_changes = Some(store.sessions_changed());
        let owners: Vec<(u64, NodeId, u64)> =
            store.sessions().map(|(id, s)| (id, s.owner, s.ttl_ms)).collect();
        let open: BTreeSet<u64> = owners.iter().map(|(id, _, _)| *id).collect();
        self.sessions.expires.retain(|id, _| open.contains(id));
        for (id, owner, ttl_ms) in owners {
            if self.owner_present(&owner) {
                self.sessions.expires.remove(&id);
            } else {
                self.sessions.expires.entry(id).or_insert_with(|| now + Duration::from_millis(ttl_ms));
            }
        }
    }

    /// Whether the table needs reconciling: sessions opened or ended, or
    /// leadership was gained, changed term or was lost.
    pub(super) fn sessions_stale(&self) -> bool {
        let leading = self.consensus.is_leader() && self.master.master == Some(self.me);
        if !leading {
            return self.sessions.led_term.is_some();
        }
        let changes = self.consensus.store().map(|s| s.sessions_changed());
        changes != self.sessions.seen_changes || self.sessions.led_term != Some(self.consensus.term())
    }

    /// The next session expiry (leader only).
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        self.sessions.expires.values().min().copied()
    }

    /// Proposes the expiry of every session whose TTL ran out.
    pub(super) fn expire_sessions(&mut self, now: Instant) {
        self.keep_sessions(now);
        let due: Vec<u64> =
            self.sessions.expires.iter().filter(|(_, t)| **t <= now).map(|(id, _)| *id).collect();
        for id in due {
            self.consensus.propose_expire(id);
            self.sessions.expires.insert(id, now + EXPIRE_RETRY);
        }
        self.flush_raft();
    }

    /// A server's report of its peers (`ClusterMsg::Holding`).
    pub(super) fn on_holding(
        &mut self,
        now: Instant,
        from: NodeId,
        full: bool,
        up: Vec<NodeId>,
        down: Vec<NodeId>,
    ) {
        let set = self.sessions.held.entry(from).or_default();
        if full {
            set.clear();
        }
        // A report lists at most the peers one server can hold.
        set.extend(up.into_iter().take(1 << 20));
        for p in down {
            set.remove(&p);
        }
        self.keep_sessions(now);
    }

    /// A server link went down: what it held no longer counts.
    pub(super) fn sessions_server_gone(&mut self, now: Instant, server: NodeId) {
        self.sessions.held.remove(&server);
        if self.sessions.reported_to == Some(server) {
            self.sessions.reported_to = None;
        }
        self.keep_sessions(now);
    }

    /// A peer connected to or left this server: tell the leader.
    pub(super) fn sessions_peer_changed(&mut self, now: Instant, peer: NodeId, up: bool) {
        if let Some(leader) = self.sessions.reported_to {
            let (up, down) = if up { (vec![peer], vec![]) } else { (vec![], vec![peer]) };
            self.send(leader, ClusterMsg::Holding { full: false, up, down });
        }
        self.keep_sessions(now);
    }

    /// Sends the whole list of our peers to a leader we have not reported to.
    pub(super) fn report_holding(&mut self) {
        let leader = self.consensus.leader().and_then(|(rid, _)| self.consensus.node_of(rid));
        let leader = leader.filter(|l| *l != self.me && self.live.contains_key(l));
        if leader == self.sessions.reported_to {
            return;
        }
        self.sessions.reported_to = leader;
        if let Some(l) = leader {
            let up: Vec<NodeId> = self.peers.ids().copied().collect();
            self.send(l, ClusterMsg::Holding { full: true, up, down: Vec::new() });
        }
    }
}
