//! What connected peers are sent, and what they report.
//!
//! A peer that connects gets a relay token, the live server list, the Master
//! and a snapshot of the directory (the peers connected to this server);
//! every other connected peer gets one versioned directory delta (`peers.rs`
//! keeps the directory and builds those messages). Servers coming and going
//! and Master changes go to every connected peer as one broadcast, encoded
//! once. Peers report their addresses, their links (how they reach each
//! node) and may ask for a fresh snapshot. Kept apart from the server-side
//! concerns because its cost grows with the number of peers, not servers:
//! what is sent to whom here decides the server's bandwidth.

use super::{Action, LinkMeta, Server, peers};
use crate::identity::NodeId;
use crate::info::{DirectoryRow, LinkRow};
use crate::proto::{Control, PeerMsg};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long directory deltas may wait to be sent together (after one went
/// out alone), at most. Short next to anything a peer does with the
/// directory; long enough that a join wave of hundreds per second shares
/// packets.
pub(crate) const DIRECTORY_BATCH: Duration = Duration::from_millis(50);
/// The wait per full-mode peer, up to [`DIRECTORY_BATCH`]: a flush costs a
/// packet per recipient, so this caps the delta packets a server sends at
/// about 10,000 a second (up to 500 full-mode peers; beyond, the cap grows
/// with them at 20 flushes a second) — and a small network (2 peers:
/// 200 µs) hardly waits at all.
pub(crate) const DIRECTORY_BATCH_PER_PEER: Duration = Duration::from_micros(100);

impl Server {
    /// The directory: the peers connected to this server, each with the
    /// links it reported.
    pub(crate) fn directory(&self) -> Vec<DirectoryRow> {
        self.peers
            .ids()
            .filter_map(|id| {
                let r = self.peers.get(id)?;
                Some(DirectoryRow {
                    id: *id,
                    name: r.name.clone(),
                    addrs: r.addrs.clone(),
                    links: r
                        .links
                        .iter()
                        .map(|(k, v)| LinkRow {
                            id: *k,
                            path: *v,
                            rtt: r.rtts.get(k).map(|us| Duration::from_micros(u64::from(*us))),
                        })
                        .collect(),
                })
            })
            .collect()
    }

    pub(super) fn send_peer(&mut self, to: NodeId, msg: PeerMsg) {
        self.actions.push_back(Action::Send { to, msg: Control::Peer(msg) });
    }

    pub(super) fn send_all(&mut self, out: peers::Outbox) {
        for (to, msg) in out {
            self.send_peer(to, msg);
        }
    }

    pub(super) fn broadcast_peers(&mut self, msg: &PeerMsg) {
        let to: Vec<NodeId> = self.peers.ids().copied().collect();
        if !to.is_empty() {
            self.actions.push_back(Action::Broadcast { to, msg: Control::Peer(msg.clone()) });
        }
    }

    pub(super) fn peer_load_changed(&mut self) {
        if self.load_override.is_none() {
            self.load = u32::try_from(self.peers.len()).unwrap_or(u32::MAX);
        }
    }

    /// A peer connected to this server.
    pub(super) fn peer_up(&mut self, now: Instant, meta: &LinkMeta) {
        let mut token = [0u8; crate::wire::TOKEN_LEN];
        self.rng.fill(&mut token);
        let mut out = Vec::new();
        let first = self.peers.join(
            meta.id,
            meta.name.clone(),
            &meta.addrs,
            meta.remote_addr,
            token,
            meta.lookup,
            &mut out,
        );
        let mut servers = self.live_list(meta.id);
        servers.sort_by_key(|e| e.id);
        self.send_peer(meta.id, PeerMsg::Servers(servers));
        self.send_peer(meta.id, PeerMsg::Master(self.master));
        for msg in first {
            self.send_peer(meta.id, msg);
        }
        self.send_all(out);
        self.directory_changed(now);
        self.peer_load_changed();
    }

    /// The directory changed: its deltas go out now if none went out in the
    /// last window ([`DIRECTORY_BATCH_PER_PEER`] per full-mode peer, at most
    /// [`DIRECTORY_BATCH`]), else together at the end of that window.
    /// A lone change is sent at once; a wave of joins costs each peer one
    /// packet per window rather than one per join.
    pub(super) fn directory_changed(&mut self, now: Instant) {
        let recipients = u32::try_from(self.peers.full_len()).unwrap_or(u32::MAX);
        let window = DIRECTORY_BATCH_PER_PEER.saturating_mul(recipients).min(DIRECTORY_BATCH);
        match self.dir_flushed {
            Some(last) if now < last + window => {
                self.dir_flush_at.get_or_insert(last + window);
            }
            _ => self.flush_directory(now),
        }
    }

    /// Sends the pending directory deltas: each encoded once, every peer
    /// given the ones after its snapshot.
    pub(super) fn flush_directory(&mut self, now: Instant) {
        self.dir_flush_at = None;
        let batch = self.peers.take_batch();
        if batch.to.is_empty() {
            return;
        }
        self.dir_flushed = Some(now);
        let msgs = batch.msgs.into_iter().map(Control::Peer).collect();
        self.actions.push_back(Action::SendFrom { msgs, to: batch.to });
    }

    /// The packets of a connected peer now come from `addr` (QUIC followed
    /// the move): tell the peer, whose report updates everyone's directory.
    pub(crate) fn on_remote_moved(&mut self, id: NodeId, addr: SocketAddr) {
        if self.peers.get(&id).is_some() {
            self.send_peer(id, PeerMsg::Observed(addr));
        }
    }

    /// A message from a connected peer.
    pub(crate) fn on_peer_message(&mut self, now: Instant, from: NodeId, msg: PeerMsg) {
        if self.peers.get(&from).is_none() {
            return;
        }
        match msg {
            PeerMsg::Info(addrs) => {
                let mut out = Vec::new();
                self.peers.update(from, addrs, &mut out);
                self.send_all(out);
                if self.peers.has_pending() {
                    self.directory_changed(now);
                }
            }
            PeerMsg::LinkSet { peer, path } => self.peers.set_link(from, peer, path),
            PeerMsg::LinkDrop { peer } => self.peers.drop_link(from, peer),
            PeerMsg::LinkRtt { peer, rtt_us } => self.peers.set_rtt(from, peer, rtt_us),
            PeerMsg::Resync => {
                let snapshot = self.peers.snapshot(from);
                self.send_peer(from, snapshot);
            }
            PeerMsg::Kv(ask) => {
                self.clock = self.clock.max(now);
                self.on_kv_ask(now, from, ask)
            }
            PeerMsg::Watch { id, prefix, from: start } => self.on_watch(from, id, prefix, start),
            PeerMsg::Unwatch { id } => self.on_unwatch(from, id),
            PeerMsg::Lookup { query, key } => {
                if let Some(found) = self.peers.lookup(from, query, &key) {
                    self.send_peer(from, found);
                }
            }
            // Server-to-peer messages are not accepted from peers.
            _ => {}
        }
    }
}
