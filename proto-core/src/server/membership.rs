//! The server list and the mesh: which servers exist, what a joining server
//! is told, and which servers to dial.
//!
//! A server starts with an optional list of introducer addresses. While no
//! other server is connected it dials each of them by address, marking its
//! Hello as a *join*; an introducer answers a join with its live server list,
//! and the newcomer dials every server on it. Whenever a server learns of a
//! server (or of a new incarnation of one) for the first time, it tells its
//! other live servers once (`Joined`), so concurrent joins through different
//! introducers still converge; nothing is re-sent on a timer. Every known
//! server that is not connected is redialed with jittered exponential
//! backoff (see `roster`) until it answers or has been unreachable for
//! `forget_after`. Liveness comes from the QUIC connections themselves (see
//! `Config::idle_timeout`): a server whose connection dies is down.
//!
//! Membership needs no agreement — gossip makes every server's list converge
//! — which is why it is kept apart from the Raft group (`group.rs`), where
//! agreement is the point.

use super::{Action, Server, ServerInfo};
use crate::identity::NodeId;
use crate::proto::{ClusterMsg, ServerEntry};
use std::time::Instant;

impl Server {
    /// The server list: this server first, then every server it knows, with
    /// its last reported load and whether it is connected now.
    pub(crate) fn servers(&self) -> Vec<ServerInfo> {
        let mut v = vec![ServerInfo {
            id: self.me,
            name: self.name.clone(),
            addrs: self.advertise.clone(),
            load: self.load,
            live: true,
            master: self.master.master == Some(self.me),
        }];
        for (id, k) in self.roster.iter() {
            v.push(ServerInfo {
                id: *id,
                name: k.name.clone(),
                addrs: k.addrs.clone(),
                load: k.load,
                live: self.live.contains_key(id),
                master: self.master.master == Some(*id),
            });
        }
        v
    }

    /// What a joining server (or a newly connected peer) is told: this server
    /// and every live server except `except`, the one being told.
    pub(super) fn live_list(&self, except: NodeId) -> Vec<ServerEntry> {
        let mut list = vec![ServerEntry {
            id: self.me,
            name: self.name.clone(),
            addrs: self.advertise.clone(),
            incarnation: self.incarnation,
            load: self.load,
        }];
        list.extend(self.live.keys().filter(|id| **id != except).filter_map(|id| self.roster.entry(id)));
        list
    }

    /// Forgets servers unreachable for longer than `forget_after`.
    pub(super) fn forget_stale(&mut self, now: Instant) {
        let live = &self.live;
        self.roster.forget_stale(now, |id| live.contains_key(id));
    }

    /// Dials every known server whose redial is due (and, while no server is
    /// connected, the introducers).
    pub(super) fn dial_due(&mut self, now: Instant) {
        let live = &self.live;
        for d in self.roster.due(now, |id| live.contains_key(id), !live.is_empty()) {
            self.actions.push_back(Action::Dial { expect: d.expect, addr: d.addr, join: d.join });
        }
    }

    /// Tells the other servers our load when it changed.
    pub(super) fn flush_load(&mut self) {
        if self.load != self.load_sent {
            self.load_sent = self.load;
            self.broadcast(ClusterMsg::Load(self.load), None);
        }
    }
}
