//! What a server keeps about the peers connected to it: the directory (each
//! connected peer and its addresses), the links each reported (how it
//! reaches other nodes) and their relay sessions.
//!
//! A peer in full-directory mode that connects gets a relay token, the live
//! server list, the Master and a snapshot of the directory; every other
//! full-mode peer gets one versioned delta. A join therefore costs O(1) bytes
//! per existing peer; only the newcomer receives O(N).
//!
//! Deltas are not sent one by one: they wait in `pending` and leave together
//! ([`PeerTable::take_batch`]), encoded once, so a wave of joins costs each
//! peer one QUIC packet per batch instead of one (plus its acknowledgement)
//! per join. A peer that received a snapshot after a pending delta was made
//! already has it: it gets only the later ones.
//!
//! A peer in lookup mode gets no snapshot and no deltas. It asks
//! ([`PeerTable::lookup`], by ID or by name) and is told of changes to the
//! peers it asked about (`Listed`, `Unlisted`), so what a join costs is
//! O(peers that looked the newcomer up).

use crate::identity::NodeId;
use crate::proto::{DirEntry, MAX_FOUND, PathKind, PeerAddrs, PeerMsg, WireLookup};
use crate::wire::TOKEN_LEN;
use std::collections::{BTreeMap, BTreeSet};

/// Most peers one lookup-mode peer may watch at this server; lookups beyond
/// are answered but not watched.
pub(crate) const MAX_WATCHING: usize = 65_536;

/// One connected peer.
#[derive(Debug)]
pub(crate) struct PeerRecord {
    pub(crate) name: String,
    pub(crate) addrs: PeerAddrs,
    pub(crate) token: [u8; TOKEN_LEN],
    /// The peer's reported links: how it reaches each node.
    pub(crate) links: BTreeMap<NodeId, PathKind>,
    /// The round-trip times it reported for some of those links, in µs.
    pub(crate) rtts: BTreeMap<NodeId, u32>,
    /// The directory version of the last snapshot it was sent: it needs
    /// only deltas after that.
    since: u64,
    /// The peers it looked up (lookup mode), whether connected or not.
    watching: BTreeSet<NodeId>,
}

/// The server's peer tables.
#[derive(Debug, Default)]
pub(crate) struct PeerTable {
    peers: BTreeMap<NodeId, PeerRecord>,
    /// Relay token → peer, looked up for every relayed datagram. Ordered
    /// (not std's `HashMap`, whose hasher is seeded from OS randomness,
    /// which the core never reads).
    tokens: BTreeMap<[u8; TOKEN_LEN], NodeId>,
    /// Name → the connected peers of that name, for lookups by name.
    names: BTreeMap<String, BTreeSet<NodeId>>,
    /// Peer → the lookup-mode peers watching it (it may not be connected).
    watchers: BTreeMap<NodeId, BTreeSet<NodeId>>,
    version: u64,
    /// Deltas not sent yet, with their versions, in version order; kept
    /// only while a full-mode peer is connected to need them.
    pending: Vec<(u64, PeerMsg)>,
    /// The full-mode peers: the ones deltas go to.
    full: BTreeSet<NodeId>,
}

/// Deltas to send: every recipient gets `msgs[first..]`.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) msgs: Vec<PeerMsg>,
    /// `(recipient, index of the first message it needs)`.
    pub(crate) to: Vec<(NodeId, usize)>,
}

/// Messages for lookup-mode watchers, sent at once: `(to, message)`.
pub(crate) type Outbox = Vec<(NodeId, PeerMsg)>;

impl PeerTable {
    pub(crate) fn len(&self) -> usize {
        self.peers.len()
    }

    pub(crate) fn ids(&self) -> impl Iterator<Item = &NodeId> {
        self.peers.keys()
    }

    pub(crate) fn get(&self, id: &NodeId) -> Option<&PeerRecord> {
        self.peers.get(id)
    }

    fn entry(id: NodeId, r: &PeerRecord) -> DirEntry {
        DirEntry { id, name: r.name.clone(), addrs: r.addrs.clone() }
    }

    /// Drops `id`'s record and everything indexed by it (its token, its
    /// name, what it watches); others keep watching it.
    fn remove(&mut self, id: &NodeId) -> Option<PeerRecord> {
        let r = self.peers.remove(id)?;
        self.tokens.remove(&r.token);
        self.full.remove(id);
        if let Some(ids) = self.names.get_mut(&r.name) {
            ids.remove(id);
            if ids.is_empty() {
                self.names.remove(&r.name);
            }
        }
        for target in &r.watching {
            if let Some(w) = self.watchers.get_mut(target) {
                w.remove(id);
                if w.is_empty() {
                    self.watchers.remove(target);
                }
            }
        }
        Some(r)
    }

    /// Tells `id`'s watchers `msg`.
    fn tell_watchers(&self, id: &NodeId, msg: impl Fn() -> PeerMsg, out: &mut Outbox) {
        for w in self.watchers.get(id).into_iter().flatten() {
            out.push((*w, msg()));
        }
    }

    /// A peer connected. `observed` is where its packets come from. Returns
    /// what the newcomer is sent (its relay session, then in full mode a
    /// snapshot); its watchers' news goes to `out`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn join(
        &mut self,
        id: NodeId,
        name: String,
        local: &[std::net::SocketAddr],
        observed: std::net::SocketAddr,
        token: [u8; TOKEN_LEN],
        lookup: bool,
        out: &mut Outbox,
    ) -> Vec<PeerMsg> {
        self.remove(&id);
        // Its interface addresses from its Hello, where it is seen from
        // here: what its first report says, so that report changes nothing.
        let addrs = PeerAddrs { local: local.iter().take(16).copied().collect(), observed: vec![observed] };
        let record = PeerRecord {
            name,
            addrs,
            token,
            links: BTreeMap::new(),
            rtts: BTreeMap::new(),
            since: 0,
            watching: BTreeSet::new(),
        };
        self.version += 1;
        let entry = Self::entry(id, &record);
        self.tell_watchers(&id, || PeerMsg::Listed(entry.clone()), out);
        self.push_delta(PeerMsg::DirAdd { version: self.version, entry });
        self.tokens.insert(token, id);
        if !lookup {
            self.full.insert(id);
        }
        self.names.entry(record.name.clone()).or_default().insert(id);
        self.peers.insert(id, record);
        let mut to_newcomer = vec![PeerMsg::Session { token }];
        if !lookup {
            to_newcomer.push(self.snapshot(id));
        }
        to_newcomer
    }

    /// The directory as sent to `to` (everyone but `to`), at the latest
    /// version: `to` will not be sent the deltas pending now.
    pub(crate) fn snapshot(&mut self, to: NodeId) -> PeerMsg {
        let version = self.version;
        if let Some(r) = self.peers.get_mut(&to) {
            r.since = version;
        }
        let peers =
            self.peers.iter().filter(|(id, _)| **id != to).map(|(id, r)| Self::entry(*id, r)).collect();
        PeerMsg::Directory { version, peers }
    }

    /// A peer disconnected.
    pub(crate) fn leave(&mut self, id: &NodeId, out: &mut Outbox) {
        if self.remove(id).is_none() {
            return;
        }
        self.version += 1;
        self.push_delta(PeerMsg::DirRemove { version: self.version, id: *id });
        self.tell_watchers(id, || PeerMsg::Unlisted(*id), out);
    }

    /// A peer reported its addresses.
    pub(crate) fn update(&mut self, id: NodeId, mut addrs: PeerAddrs, out: &mut Outbox) {
        // Bound what one peer can make every other peer store.
        addrs.local.truncate(16);
        addrs.observed.truncate(16);
        let Some(r) = self.peers.get_mut(&id) else { return };
        if r.addrs == addrs {
            return;
        }
        r.addrs = addrs;
        self.version += 1;
        let entry = Self::entry(id, r);
        self.tell_watchers(&id, || PeerMsg::Listed(entry.clone()), out);
        // The updater gets it too: it ignores its own entry but must see
        // every version, or its next delta would look like a gap.
        self.push_delta(PeerMsg::DirUpdate { version: self.version, entry });
    }

    /// Queues the delta of the latest version, if a full-mode peer needs it.
    fn push_delta(&mut self, msg: PeerMsg) {
        if !self.full.is_empty() {
            self.pending.push((self.version, msg));
        }
    }

    /// Lookup-mode peer `from` asks for `key`: the answer lists the matching
    /// connected peers, and `from` watches each of them (and, asked by ID,
    /// that ID even while it is not connected). `None` if `from` is not a
    /// connected peer.
    pub(crate) fn lookup(&mut self, from: NodeId, query: u64, key: &WireLookup) -> Option<PeerMsg> {
        if !self.peers.contains_key(&from) {
            return None;
        }
        let ids: Vec<NodeId> = match key {
            WireLookup::Id(id) => vec![*id],
            WireLookup::Name(name) => {
                self.names.get(name).into_iter().flatten().take(MAX_FOUND).copied().collect()
            }
        };
        let mut entries = Vec::new();
        for id in ids {
            if id == from || id.role() != crate::identity::Role::Peer {
                continue;
            }
            if let Some(r) = self.peers.get(&id) {
                entries.push(Self::entry(id, r));
            }
            let Some(me) = self.peers.get_mut(&from) else { break };
            if me.watching.len() < MAX_WATCHING || me.watching.contains(&id) {
                me.watching.insert(id);
                self.watchers.entry(id).or_default().insert(from);
            }
        }
        Some(PeerMsg::Found { query, entries })
    }

    /// The number of full-mode peers (the ones deltas go to).
    pub(crate) fn full_len(&self) -> usize {
        self.full.len()
    }

    /// Whether deltas wait to be sent.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The pending deltas and who needs which: a full-mode peer gets every
    /// delta after the version of its snapshot. O(full-mode peers × log +
    /// deltas).
    pub(crate) fn take_batch(&mut self) -> Batch {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return Batch::default();
        }
        let to = self
            .full
            .iter()
            .filter_map(|id| {
                let since = self.peers.get(id)?.since;
                let skip = pending.partition_point(|(v, _)| *v <= since);
                (skip < pending.len()).then_some((*id, skip))
            })
            .collect();
        Batch { msgs: pending.into_iter().map(|(_, m)| m).collect(), to }
    }

    /// A peer reported a link: how it reaches another node.
    pub(crate) fn set_link(&mut self, id: NodeId, peer: NodeId, path: PathKind) {
        if let Some(r) = self.peers.get_mut(&id)
            && (r.links.len() < 65_536 || r.links.contains_key(&peer))
        {
            r.links.insert(peer, path);
        }
    }

    /// A peer dropped a link.
    pub(crate) fn drop_link(&mut self, id: NodeId, peer: NodeId) {
        if let Some(r) = self.peers.get_mut(&id) {
            r.links.remove(&peer);
            r.rtts.remove(&peer);
        }
    }

    /// A peer reported a link's round-trip time (kept only for a link it
    /// reported, so the table stays as bounded as its links).
    pub(crate) fn set_rtt(&mut self, id: NodeId, peer: NodeId, rtt_us: u32) {
        if let Some(r) = self.peers.get_mut(&id)
            && r.links.contains_key(&peer)
        {
            r.rtts.insert(peer, rtt_us);
        }
    }

    /// The peer a relay token belongs to.
    pub(crate) fn by_token(&self, token: &[u8; TOKEN_LEN]) -> Option<NodeId> {
        self.tokens.get(token).copied()
    }

    /// The relay token of a connected peer.
    pub(crate) fn token_of(&self, id: &NodeId) -> Option<[u8; TOKEN_LEN]> {
        self.peers.get(id).map(|r| r.token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Identity, Role};

    fn id(n: u8) -> NodeId {
        Identity::from_seed(Role::Peer, [n; 32]).id()
    }

    fn addr() -> std::net::SocketAddr {
        "198.51.100.1:1".parse().unwrap()
    }

    /// Joins peer `n` in full mode (or lookup mode), dropping watcher news.
    fn join(t: &mut PeerTable, n: u8, lookup: bool) -> Vec<PeerMsg> {
        t.join(id(n), format!("p{n}"), &[], addr(), [n; TOKEN_LEN], lookup, &mut Vec::new())
    }

    #[test]
    fn joins_cost_one_delta_per_existing_peer() {
        let mut t = PeerTable::default();
        for n in 1..=10u8 {
            let sent = join(&mut t, n, false);
            assert!(matches!(sent[0], PeerMsg::Session { .. }));
            // The newcomer gets a snapshot of everyone else...
            let PeerMsg::Directory { peers, .. } = &sent[1] else { panic!("{sent:?}") };
            assert_eq!(peers.len(), usize::from(n) - 1);
            // ...and every existing peer one DirAdd, the newcomer none.
            // (Nobody needs the first one's.)
            let batch = t.take_batch();
            assert_eq!(batch.msgs.len(), usize::from(n > 1));
            assert!(batch.msgs.iter().all(|m| matches!(m, PeerMsg::DirAdd { .. })));
            assert_eq!(batch.to.len(), usize::from(n) - 1);
            assert!(batch.to.iter().all(|(to, first)| *to != id(n) && *first == 0));
        }
        assert_eq!(t.by_token(&[3; TOKEN_LEN]), Some(id(3)));
        t.leave(&id(3), &mut Vec::new());
        assert_eq!(t.take_batch().to.len(), 9);
        assert_eq!(t.by_token(&[3; TOKEN_LEN]), None);
        assert_eq!(t.len(), 9);
    }

    #[test]
    fn a_batch_gives_each_peer_the_deltas_after_its_snapshot() {
        let mut t = PeerTable::default();
        join(&mut t, 1, false);
        let _ = t.take_batch();
        // Three changes wait: b joins (v2), c joins (v3), b reports addresses (v4).
        join(&mut t, 2, false);
        join(&mut t, 3, false);
        let addrs = PeerAddrs { local: vec!["10.0.0.2:4433".parse().unwrap()], observed: vec![addr()] };
        t.update(id(2), addrs, &mut Vec::new());
        let batch = t.take_batch();
        let versions: Vec<u64> = batch
            .msgs
            .iter()
            .map(|m| match m {
                PeerMsg::DirAdd { version, .. } | PeerMsg::DirUpdate { version, .. } => *version,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(versions, [2, 3, 4]);
        // a had version 1: all three; b's snapshot was at 2, c's at 3.
        let to: BTreeMap<NodeId, usize> = batch.to.into_iter().collect();
        assert_eq!(to, BTreeMap::from([(id(1), 0), (id(2), 1), (id(3), 2)]));
        assert!(!t.has_pending());
    }

    #[test]
    fn updates_are_deltas_and_only_on_change() {
        let mut t = PeerTable::default();
        join(&mut t, 1, false);
        join(&mut t, 2, false);
        let _ = t.take_batch();
        let addrs = PeerAddrs { local: vec!["10.0.0.2:4433".parse().unwrap()], observed: vec![addr()] };
        t.update(id(1), addrs.clone(), &mut Vec::new());
        assert_eq!(
            t.take_batch().to.len(),
            2,
            "both peers, the updater included (it keeps the version count)"
        );
        t.update(id(1), addrs, &mut Vec::new());
        assert!(!t.has_pending(), "no change, no message");
    }

    #[test]
    fn lookup_mode_peers_get_only_what_they_asked_for() {
        let mut t = PeerTable::default();
        // A lookup-mode peer gets its session and no snapshot.
        let sent = join(&mut t, 1, true);
        assert_eq!(sent.len(), 1);
        for n in 2..=5 {
            join(&mut t, n, false);
        }
        // Nor any delta: the batch goes to the full-mode peers only.
        let batch = t.take_batch();
        assert!(batch.to.iter().all(|(to, _)| *to != id(1)));
        // It looks up p3 by ID and by name, and p9 (not connected) by ID.
        let found = t.lookup(id(1), 7, &WireLookup::Id(id(3)));
        assert!(
            matches!(&found, Some(PeerMsg::Found { query: 7, entries }) if entries.len() == 1 && entries[0].id == id(3))
        );
        let found = t.lookup(id(1), 8, &WireLookup::Name("p3".into()));
        assert!(matches!(&found, Some(PeerMsg::Found { query: 8, entries }) if entries.len() == 1));
        let found = t.lookup(id(1), 9, &WireLookup::Id(id(9)));
        assert!(matches!(&found, Some(PeerMsg::Found { query: 9, entries }) if entries.is_empty()));
        // A stranger's lookup is not answered.
        assert!(t.lookup(id(42), 1, &WireLookup::Id(id(3))).is_none());
        // Changes to what it watches reach it at once; others' do not.
        let mut out = Vec::new();
        let addrs = PeerAddrs { local: vec!["10.0.0.3:4433".parse().unwrap()], observed: vec![addr()] };
        t.update(id(3), addrs.clone(), &mut out);
        t.update(id(4), addrs, &mut out);
        assert!(matches!(&out[..], [(to, PeerMsg::Listed(e))] if *to == id(1) && e.id == id(3)));
        out.clear();
        t.leave(&id(3), &mut out);
        assert!(matches!(&out[..], [(to, PeerMsg::Unlisted(gone))] if *to == id(1) && *gone == id(3)));
        out.clear();
        t.join(id(9), "p9".into(), &[], addr(), [9; TOKEN_LEN], false, &mut out);
        assert!(matches!(&out[..], [(to, PeerMsg::Listed(e))] if *to == id(1) && e.id == id(9)));
        // When the watcher leaves, nobody watches for it any more.
        t.leave(&id(1), &mut Vec::new());
        out.clear();
        t.leave(&id(9), &mut out);
        assert!(out.is_empty());
        assert!(t.watchers.is_empty());
    }
}
