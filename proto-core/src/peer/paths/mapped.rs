//! Mapped addresses and the table that maps real addresses back to peers.

use super::{Paths, PeerPath};
use crate::identity::NodeId;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;

/// Prefix of mapped addresses: `fd70:3270:6d61::/48` (a unique-local range,
/// never routed; "p2pma").
pub(super) const MAPPED_PREFIX: [u16; 3] = [0xfd70, 0x3270, 0x6d61];

/// Real addresses mapped to one peer at most (validated round trips); the
/// oldest not in use is forgotten first. This bounds the demultiplexing
/// table at this many entries per connected peer.
pub(super) const MAX_MAPPED: usize = 8;

/// Whether `addr` is a mapped address (as opposed to a real one).
pub(crate) fn is_mapped(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V6(ip) => ip.segments()[..3] == MAPPED_PREFIX,
        IpAddr::V4(_) => false,
    }
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
        self.by_peer.insert(peer, PeerPath::new(mapped, self.keepalive));
        self.by_mapped.insert(mapped, peer);
        mapped
    }

    /// The peer behind a mapped address.
    pub(crate) fn peer_of(&self, mapped: &SocketAddr) -> Option<NodeId> {
        self.by_mapped.get(mapped).copied()
    }

    /// A QUIC packet arrived from real address `from`: if it is a known
    /// direct address of a peer, the mapped address QUIC knows the peer by.
    pub(crate) fn demux(&mut self, now: Instant, from: &SocketAddr) -> Option<SocketAddr> {
        let peer = *self.by_addr.get(from)?;
        let p = self.by_peer.get_mut(&peer)?;
        if p.direct == Some(*from) {
            p.live.heard(now);
        }
        let mapped = p.mapped;
        self.reschedule(peer);
        Some(mapped)
    }

    /// Maps real address `addr` to `peer` after a validated round trip,
    /// taking it from its previous owner (whose path through it, if any,
    /// is not in use) and forgetting `peer`'s oldest unused mapping beyond
    /// [`MAX_MAPPED`].
    pub(super) fn map_addr(&mut self, peer: NodeId, addr: SocketAddr, owner: Option<NodeId>) {
        if let Some(old) = owner.filter(|o| *o != peer)
            && let Some(q) = self.by_peer.get_mut(&old)
        {
            q.mapped_addrs.retain(|a| *a != addr);
        }
        self.by_addr.insert(addr, peer);
        let Some(p) = self.by_peer.get_mut(&peer) else { return };
        p.mapped_addrs.retain(|a| *a != addr);
        p.mapped_addrs.push(addr);
        while p.mapped_addrs.len() > MAX_MAPPED {
            let Some(i) = p.mapped_addrs.iter().position(|a| p.direct != Some(*a)) else { break };
            let gone = p.mapped_addrs.remove(i);
            self.by_addr.remove(&gone);
        }
    }

    /// Real addresses currently mapped to peers (the demultiplexing table).
    #[cfg(test)]
    pub(crate) fn mapped_count(&self) -> usize {
        self.by_addr.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::paths::test_net::*;
    use crate::rng::NodeRng;
    use std::time::Duration;

    #[test]
    fn mapped_addresses_are_stable_distinct_and_recognisable() {
        let mut p = Paths::new(id(1), true, Duration::from_secs(25), NodeRng::from_seed([0; 32]));
        let (a, b) = (p.mapped(id(2)), p.mapped(id(3)));
        assert_ne!(a, b);
        assert_eq!(p.mapped(id(2)), a, "stable");
        assert!(is_mapped(&a) && is_mapped(&b));
        assert!(!is_mapped(&at(1)));
        assert_eq!((p.peer_of(&a), p.peer_of(&b)), (Some(id(2)), Some(id(3))));
        assert_eq!(p.peer_of(&at(1)), None);
    }

    #[test]
    fn the_mapping_table_is_capped_per_peer() {
        let mut p = Paths::new(id(1), true, Duration::from_secs(25), NodeRng::from_seed([0; 32]));
        p.mapped(id(2));
        for port in 0..(MAX_MAPPED as u16 * 3) {
            p.map_addr(id(2), at(1000 + port), None);
        }
        assert_eq!(p.mapped_count(), MAX_MAPPED);
        assert_eq!(p.get(&id(2)).unwrap().mapped_addrs.last(), Some(&at(1000 + MAX_MAPPED as u16 * 3 - 1)));
    }
}
