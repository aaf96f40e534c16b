//! Directory lookups (`DirectoryMode::Lookup`): a peer learns only the rows
//! it asks for.
//!
//! A lookup goes to every linked server (each lists only the peers connected
//! to it) and ends when all of them have answered or gone. Servers add the
//! asker to the watchers of every peer found — and, asked by ID, of that ID
//! even while it is not connected — and tell it when one of them joins,
//! moves or leaves (`Listed`, `Unlisted`), which this peer merges like
//! directory deltas. Three things start a lookup:
//!
//! * `send` to an ID not in the directory: the messages wait, as for a
//!   connection being set up; once a server lists the peer it is dialed,
//!   and when every server answered without it they fail with
//!   `ConnectError::NotFound`.
//! * A relayed connection from a peer not in the directory (it looked us
//!   up): its packets are answered through the server they came through
//!   until a server lists it. (Full mode does the same for a peer whose
//!   directory delta has not arrived yet.)
//! * [`Node::lookup`](crate::Node::lookup), by ID or name, answered with
//!   `Event::LookupDone` (in full mode at once, from the directory).

use super::{Action, Peer};
use crate::config::DirectoryMode;
use crate::event::Event;
use crate::identity::NodeId;
use crate::info::{LookupKey, PeerInfo};
use crate::proto::{DirEntry, PeerMsg, WireLookup};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// One lookup in progress.
#[derive(Debug)]
struct Asked {
    key: LookupKey,
    /// Servers that have not answered yet.
    waiting: BTreeSet<NodeId>,
    /// Peers found so far.
    found: BTreeSet<NodeId>,
    /// Asked by the user (`Event::LookupDone`), not by the node itself.
    user: bool,
}

/// The lookups of a peer (lookup mode), and relay hints (both modes).
#[derive(Debug, Default)]
pub(crate) struct Lookups {
    next_query: u64,
    asked: BTreeMap<u64, Asked>,
    /// ID → the node's own lookup of it.
    by_id: BTreeMap<NodeId, u64>,
    /// IDs with messages waiting for the lookup: dialed once listed.
    wanted: BTreeSet<NodeId>,
    /// Peers not in the directory that reached us through a relay: the
    /// server their packets came through, used to answer them.
    hints: BTreeMap<NodeId, NodeId>,
}

impl Peer {
    /// Whether this peer runs in lookup mode (learns only what it asks for).
    pub(super) fn lookup_mode(&self) -> bool {
        self.cfg.directory == DirectoryMode::Lookup
    }

    /// Sends lookup `key` to every linked server. `None` when no server is
    /// linked (there is nobody to ask).
    fn ask(&mut self, key: LookupKey, user: bool) -> Option<u64> {
        let waiting: BTreeSet<NodeId> = self.servers.keys().copied().collect();
        if waiting.is_empty() {
            return None;
        }
        let query = self.lookups.next_query;
        self.lookups.next_query += 1;
        let wire = WireLookup::from(&key);
        for s in &waiting {
            self.send(*s, PeerMsg::Lookup { query, key: wire.clone() });
        }
        self.lookups.asked.insert(query, Asked { key, waiting, found: BTreeSet::new(), user });
        Some(query)
    }

    /// Looks `id` up for the node itself (once at a time).
    fn ask_id(&mut self, id: NodeId) -> bool {
        if self.lookups.by_id.contains_key(&id) {
            return true;
        }
        match self.ask(LookupKey::Id(id), false) {
            Some(q) => {
                self.lookups.by_id.insert(id, q);
                true
            }
            None => false,
        }
    }

    /// A send to `to`, which is not in the directory, in lookup mode: look it
    /// up and have the messages wait. False if it cannot be looked up.
    pub(super) fn want_unknown(&mut self, to: NodeId) -> bool {
        if !self.lookup_mode() || !self.ask_id(to) {
            return false;
        }
        self.lookups.wanted.insert(to);
        true
    }

    /// Whether messages for `id` wait for a lookup.
    pub(crate) fn looking_up(&self, id: &NodeId) -> bool {
        self.lookups.wanted.contains(id) && self.lookups.by_id.contains_key(id)
    }

    /// `Node::lookup`: starts a lookup and returns its number; the answer
    /// comes as `Event::LookupDone`. In full mode it is answered at once
    /// from the directory. `None` when there is no server to ask.
    pub(crate) fn lookup(&mut self, key: LookupKey) -> Option<u64> {
        if self.lookup_mode() {
            return self.ask(key, true);
        }
        let query = self.lookups.next_query;
        self.lookups.next_query += 1;
        let ids: Vec<NodeId> = match &key {
            LookupKey::Id(id) => self.online.contains_key(id).then_some(*id).into_iter().collect(),
            LookupKey::Name(name) => {
                self.online.iter().filter(|(_, n)| *n == name).map(|(id, _)| *id).collect()
            }
        };
        let peers = ids.iter().filter_map(|id| self.peer_info(id)).collect();
        self.actions.push_back(Action::Event(Event::LookupDone { query, peers }));
        Some(query)
    }

    /// The directory's view of one online peer.
    pub(super) fn peer_info(&self, id: &NodeId) -> Option<PeerInfo> {
        let name = self.online.get(id)?;
        let via = self.servers.iter().filter(|(_, s)| s.dir.contains_key(id)).map(|(s, _)| *s).collect();
        Some(PeerInfo { id: *id, name: name.clone(), addrs: self.merged_addrs(id), via })
    }

    /// Server `from` answered lookup `query`.
    pub(super) fn on_found(&mut self, now: Instant, from: NodeId, query: u64, entries: Vec<DirEntry>) {
        let mut ids = Vec::new();
        for entry in entries.into_iter().take(crate::proto::MAX_FOUND) {
            ids.push(entry.id);
            self.on_listed(now, from, entry);
        }
        let Some(a) = self.lookups.asked.get_mut(&query) else { return };
        if !a.waiting.remove(&from) {
            return;
        }
        // Only what was asked for counts as found.
        a.found.extend(ids.into_iter().filter(|id| match &a.key {
            LookupKey::Id(want) => want == id,
            LookupKey::Name(_) => true,
        }));
        if a.waiting.is_empty() {
            self.finish(query);
        }
    }

    /// Server `from` lists `entry` (an answer, or news of a watched peer).
    pub(super) fn on_listed(&mut self, now: Instant, from: NodeId, entry: DirEntry) {
        if entry.id.role() == crate::identity::Role::Peer {
            self.list(now, from, entry);
        }
    }

    /// Server `from` no longer lists `id` (a watched peer left it).
    pub(super) fn on_unlisted(&mut self, from: NodeId, id: NodeId) {
        let Some(link) = self.servers.get_mut(&from) else { return };
        if link.dir.remove(&id).is_some() {
            self.unlisted(id);
            self.select_relay(id);
        }
    }

    /// A peer is now listed: it needs no hint, and if messages wait for it,
    /// it is dialed.
    pub(super) fn lookup_listed(&mut self, id: NodeId) {
        self.lookups.hints.remove(&id);
        if self.lookups.wanted.remove(&id) && self.dialing.insert(id) {
            self.actions.push_back(Action::DialPeer(id));
        }
    }

    /// Server `server` is gone: its answers will not come.
    pub(super) fn lookup_server_down(&mut self, server: NodeId) {
        self.lookups.hints.retain(|_, s| *s != server);
        let done: Vec<u64> = self
            .lookups
            .asked
            .iter_mut()
            .filter_map(|(q, a)| (a.waiting.remove(&server) && a.waiting.is_empty()).then_some(*q))
            .collect();
        for q in done {
            self.finish(q);
        }
    }

    /// Every asked server answered (or went): report, and fail what waits
    /// for a peer nobody lists.
    fn finish(&mut self, query: u64) {
        let Some(a) = self.lookups.asked.remove(&query) else { return };
        if a.user {
            let peers = a.found.iter().filter_map(|id| self.peer_info(id)).collect();
            self.actions.push_back(Action::Event(Event::LookupDone { query, peers }));
        }
        if let LookupKey::Id(id) = a.key
            && self.lookups.by_id.get(&id) == Some(&query)
        {
            self.lookups.by_id.remove(&id);
            if self.lookups.wanted.remove(&id) && !self.online.contains_key(&id) {
                self.actions.push_back(Action::NotFound(id));
            }
        }
    }

    /// A relay frame from `sender` came through server `via`: if no server
    /// lists it, answer through `via` until one does — in lookup mode it
    /// dialed us after looking us up (and we look it up in turn); in full
    /// mode its server's delta may simply not have reached us yet.
    pub(super) fn relayed_from(&mut self, sender: NodeId, via: NodeId) {
        if self.online.contains_key(&sender) {
            return;
        }
        if self.lookups.hints.insert(sender, via) != Some(via) && self.lookup_mode() {
            self.ask_id(sender);
        }
    }

    /// The connection to `peer` ended: a hint for it is no longer needed.
    pub(super) fn lookup_link_down(&mut self, peer: &NodeId) {
        self.lookups.hints.remove(peer);
    }

    /// The server that relayed `peer`'s packets to us, while no server lists it.
    pub(super) fn relay_hint(&self, peer: &NodeId) -> Option<NodeId> {
        self.lookups.hints.get(peer).copied()
    }
}
