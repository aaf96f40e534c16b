//! Mapped addresses: how end-to-end QUIC between peers is told apart from
//! where its packets actually go.
//!
//! QUIC between two peers addresses the remote peer by a stable synthetic
//! *mapped address* (an IPv6 unique-local address, one per remote peer).
//! Below QUIC, the path layer decides packet by packet what that address
//! currently means — for now, a relay through a server both peers are
//! connected to — so QUIC never notices a path change.

use crate::identity::NodeId;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Prefix of mapped addresses: `fd70:3270:6d61::/48` (a unique-local range,
/// never routed; "p2pma").
const MAPPED_PREFIX: [u16; 3] = [0xfd70, 0x3270, 0x6d61];

/// Whether `addr` is a mapped address (as opposed to a real one).
pub(crate) fn is_mapped(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V6(ip) => ip.segments()[..3] == MAPPED_PREFIX,
        IpAddr::V4(_) => false,
    }
}

#[derive(Debug, Clone)]
pub(crate) struct PeerPath {
    pub(crate) mapped: SocketAddr,
    /// The server relaying to this peer, if any common server is known.
    pub(crate) relay: Option<NodeId>,
}

/// Mapped addresses and current relays of remote peers.
#[derive(Debug, Default)]
pub(crate) struct Paths {
    by_peer: BTreeMap<NodeId, PeerPath>,
    by_mapped: BTreeMap<SocketAddr, NodeId>,
    next: u64,
}

impl Paths {
    /// The mapped address of `peer`, allocated on first use.
    pub(crate) fn mapped(&mut self, peer: NodeId) -> SocketAddr {
        if let Some(p) = self.by_peer.get(&peer) {
            return p.mapped;
        }
        self.next += 1;
        let n = self.next;
        let ip = Ipv6Addr::new(
            MAPPED_PREFIX[0],
            MAPPED_PREFIX[1],
            MAPPED_PREFIX[2],
            0,
            (n >> 48) as u16,
            (n >> 32) as u16,
            (n >> 16) as u16,
            n as u16,
        );
        let mapped = SocketAddr::new(IpAddr::V6(ip), 1);
        self.by_peer.insert(peer, PeerPath { mapped, relay: None });
        self.by_mapped.insert(mapped, peer);
        mapped
    }

    /// The peer behind a mapped address.
    pub(crate) fn peer_of(&self, mapped: &SocketAddr) -> Option<NodeId> {
        self.by_mapped.get(mapped).copied()
    }

    pub(crate) fn get(&self, peer: &NodeId) -> Option<&PeerPath> {
        self.by_peer.get(peer)
    }

    /// Sets the relay of `peer`; true if it changed.
    pub(crate) fn set_relay(&mut self, peer: NodeId, relay: Option<NodeId>) -> bool {
        self.mapped(peer);
        match self.by_peer.get_mut(&peer) {
            Some(p) if p.relay != relay => {
                p.relay = relay;
                true
            }
            _ => false,
        }
    }

    /// Every peer with a path.
    pub(crate) fn peers(&self) -> impl Iterator<Item = &NodeId> {
        self.by_peer.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Identity, Role};

    #[test]
    fn mapped_addresses_are_stable_distinct_and_recognisable() {
        let a = Identity::from_seed(Role::Peer, [1; 32]).id();
        let b = Identity::from_seed(Role::Peer, [2; 32]).id();
        let mut p = Paths::default();
        let ma = p.mapped(a);
        let mb = p.mapped(b);
        assert_ne!(ma, mb);
        assert_eq!(p.mapped(a), ma);
        assert!(is_mapped(&ma) && is_mapped(&mb));
        assert!(!is_mapped(&"198.51.100.1:4433".parse().unwrap()));
        assert!(!is_mapped(&"[2001:db8::1]:4433".parse().unwrap()));
        assert_eq!(p.peer_of(&mb), Some(b));
        assert!(p.set_relay(a, Some(b)));
        assert!(!p.set_relay(a, Some(b)));
    }
}
