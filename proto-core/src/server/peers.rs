//! What a server keeps about the peers connected to it: the directory (each
//! connected peer and its addresses), the links each reported (how it
//! reaches other nodes) and their relay sessions.
//!
//! A peer that connects gets a relay token, the live server list, the Master
//! and a snapshot of the directory; every other connected peer gets one
//! versioned delta. A join therefore costs O(1) bytes per existing peer; only
//! the newcomer receives O(N).

use crate::identity::NodeId;
use crate::proto::{DirEntry, PathKind, PeerAddrs, PeerMsg};
use crate::wire::TOKEN_LEN;
use std::collections::BTreeMap;

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
}

/// The server's peer tables.
#[derive(Debug, Default)]
pub(crate) struct PeerTable {
    peers: BTreeMap<NodeId, PeerRecord>,
    /// Relay token → peer, looked up for every relayed datagram. Ordered
    /// (not std's `HashMap`, whose hasher is seeded from OS randomness,
    /// which the core never reads).
    tokens: BTreeMap<[u8; TOKEN_LEN], NodeId>,
    version: u64,
}

/// Messages the table wants sent: `(to, message)`.
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

    /// A peer connected. `observed` is where its packets come from.
    pub(crate) fn join(
        &mut self,
        id: NodeId,
        name: String,
        observed: std::net::SocketAddr,
        token: [u8; TOKEN_LEN],
        out: &mut Outbox,
    ) {
        if let Some(old) = self.peers.remove(&id) {
            self.tokens.remove(&old.token);
        }
        let addrs = PeerAddrs { local: Vec::new(), observed: vec![observed] };
        let record = PeerRecord { name, addrs, token, links: BTreeMap::new(), rtts: BTreeMap::new() };
        self.version += 1;
        let entry = Self::entry(id, &record);
        for other in self.peers.keys() {
            out.push((*other, PeerMsg::DirAdd { version: self.version, entry: entry.clone() }));
        }
        self.tokens.insert(token, id);
        self.peers.insert(id, record);
        out.push((id, PeerMsg::Session { token }));
        out.push((id, self.snapshot(id)));
    }

    /// The directory as sent to `to` (everyone but `to`).
    pub(crate) fn snapshot(&self, to: NodeId) -> PeerMsg {
        let peers =
            self.peers.iter().filter(|(id, _)| **id != to).map(|(id, r)| Self::entry(*id, r)).collect();
        PeerMsg::Directory { version: self.version, peers }
    }

    /// A peer disconnected.
    pub(crate) fn leave(&mut self, id: &NodeId, out: &mut Outbox) {
        let Some(r) = self.peers.remove(id) else { return };
        self.tokens.remove(&r.token);
        self.version += 1;
        for other in self.peers.keys() {
            out.push((*other, PeerMsg::DirRemove { version: self.version, id: *id }));
        }
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
        // The updater gets it too: it ignores its own entry but must see
        // every version, or its next delta would look like a gap.
        for other in self.peers.keys() {
            out.push((*other, PeerMsg::DirUpdate { version: self.version, entry: entry.clone() }));
        }
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

    #[test]
    fn joins_cost_one_delta_per_existing_peer() {
        let mut t = PeerTable::default();
        let addr = "198.51.100.1:1".parse().unwrap();
        let mut out = Vec::new();
        for n in 1..=10u8 {
            out.clear();
            t.join(id(n), format!("p{n}"), addr, [n; TOKEN_LEN], &mut out);
            // Existing peers get one DirAdd each; the newcomer gets a session and a snapshot.
            let adds = out.iter().filter(|(_, m)| matches!(m, PeerMsg::DirAdd { .. })).count();
            assert_eq!(adds, usize::from(n) - 1);
            let snapshot = out.iter().find_map(|(to, m)| match m {
                PeerMsg::Directory { peers, .. } if *to == id(n) => Some(peers.len()),
                _ => None,
            });
            assert_eq!(snapshot, Some(usize::from(n) - 1));
        }
        assert_eq!(t.by_token(&[3; TOKEN_LEN]), Some(id(3)));
        out.clear();
        t.leave(&id(3), &mut out);
        assert_eq!(out.len(), 9);
        assert_eq!(t.by_token(&[3; TOKEN_LEN]), None);
        assert_eq!(t.len(), 9);
    }

    #[test]
    fn updates_are_deltas_and_only_on_change() {
        let mut t = PeerTable::default();
        let addr = "198.51.100.1:1".parse().unwrap();
        let mut out = Vec::new();
        t.join(id(1), "a".into(), addr, [1; TOKEN_LEN], &mut out);
        t.join(id(2), "b".into(), addr, [2; TOKEN_LEN], &mut out);
        out.clear();
        let addrs = PeerAddrs { local: vec!["10.0.0.2:4433".parse().unwrap()], observed: vec![addr] };
        t.update(id(1), addrs.clone(), &mut out);
        assert_eq!(out.len(), 2, "both peers, the updater included (it keeps the version count)");
        out.clear();
        t.update(id(1), addrs, &mut out);
        assert!(out.is_empty(), "no change, no message");
    }
}
