//! Dispatch to the role logic: a server or a peer state machine.

use crate::identity::NodeId;
use crate::peer::Peer;
use crate::proto::Control;
use crate::quic::Expect;
use crate::roster::DialOutcome;
use crate::server::election::MasterInfo;
use crate::server::{Action, LinkMeta, Server, ServerInfo};
use std::net::SocketAddr;
use std::time::Instant;

/// The role-specific state machine of a node.
pub(super) enum RoleState {
    Server(Box<Server>),
    Peer(Box<Peer>),
}

impl RoleState {
    pub(super) fn poll_action(&mut self) -> Option<Action> {
        match self {
            RoleState::Server(s) => s.poll_action(),
            RoleState::Peer(p) => p.poll_action(),
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        match self {
            RoleState::Server(s) => s.poll_timeout(),
            RoleState::Peer(p) => p.poll_timeout(),
        }
    }

    pub(super) fn handle_timeout(&mut self, now: Instant) {
        match self {
            RoleState::Server(s) => s.handle_timeout(now),
            RoleState::Peer(p) => p.handle_timeout(now),
        }
    }

    pub(super) fn link_up(&mut self, now: Instant, meta: &LinkMeta, observed: Option<SocketAddr>) {
        match self {
            RoleState::Server(s) => s.on_link_up(now, meta),
            RoleState::Peer(p) => p.on_link_up(now, meta, observed),
        }
    }

    /// The remote of an established link now sends from `addr`.
    pub(super) fn remote_moved(&mut self, id: NodeId, addr: SocketAddr) {
        if let RoleState::Server(s) = self {
            s.on_remote_moved(id, addr);
        }
    }

    pub(super) fn link_down(&mut self, now: Instant, id: NodeId) {
        match self {
            RoleState::Server(s) => s.on_link_down(now, id),
            RoleState::Peer(p) => p.on_link_down(now, id),
        }
    }

    pub(super) fn dial_done(
        &mut self,
        now: Instant,
        expect: Expect,
        addr: SocketAddr,
        outcome: &DialOutcome,
    ) {
        match self {
            RoleState::Server(s) => s.on_dial_done(now, expect, addr, outcome),
            RoleState::Peer(p) => p.on_dial_done(now, expect, addr, outcome),
        }
    }

    /// A role message on an established link. Returns false if the message
    /// is not acceptable from that sender (a protocol violation).
    pub(super) fn message(&mut self, now: Instant, from: NodeId, msg: Control) -> bool {
        use crate::identity::Role;
        match (self, msg) {
            (RoleState::Server(s), Control::Cluster(m)) if from.role() == Role::Server => {
                s.on_message(now, from, m);
                true
            }
            (RoleState::Server(s), Control::Peer(m)) if from.role() == Role::Peer => {
                s.on_peer_message(now, from, m);
                true
            }
            (RoleState::Peer(p), Control::Peer(m)) if from.role() == Role::Server => {
                p.on_message(now, from, m);
                true
            }
            (RoleState::Peer(p), Control::Path(m)) if from.role() == Role::Peer => {
                p.on_path_msg(now, from, m);
                true
            }
            _ => false,
        }
    }

    pub(super) fn master(&self) -> MasterInfo {
        match self {
            RoleState::Server(s) => s.master(),
            RoleState::Peer(p) => p.master(),
        }
    }

    pub(super) fn servers(&self) -> Vec<ServerInfo> {
        match self {
            RoleState::Server(s) => s.servers(),
            RoleState::Peer(p) => p.servers(),
        }
    }

    pub(super) fn server(&self) -> Option<&Server> {
        match self {
            RoleState::Server(s) => Some(s),
            RoleState::Peer(_) => None,
        }
    }

    pub(super) fn server_mut(&mut self) -> Option<&mut Server> {
        match self {
            RoleState::Server(s) => Some(s),
            RoleState::Peer(_) => None,
        }
    }

    pub(super) fn peer(&self) -> Option<&Peer> {
        match self {
            RoleState::Peer(p) => Some(p),
            RoleState::Server(_) => None,
        }
    }

    pub(super) fn peer_mut(&mut self) -> Option<&mut Peer> {
        match self {
            RoleState::Peer(p) => Some(p),
            RoleState::Server(_) => None,
        }
    }
}
