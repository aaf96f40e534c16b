//! The server list and the mesh: what a server reports, what it tells a
//! joiner, and which servers it dials.

use super::{Action, Server, ServerInfo};
use crate::identity::NodeId;
use crate::proto::{ClusterMsg, ServerEntry};
use std::time::Instant;

impl Server {
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

    pub(super) fn forget_stale(&mut self, now: Instant) {
        let live = &self.live;
        self.roster.forget_stale(now, |id| live.contains_key(id));
    }

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
