//! Read-only views of the network that the node hands out, shared by both
//! roles (neither role's module owns them, so neither imports the other's
//! to describe what it knows).

use crate::identity::NodeId;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

/// A peer in the merged directory, as [`Node::peers`](crate::Node::peers) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// Its ID.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// Its addresses, merged from every server that lists it.
    pub addrs: PeerAddrs,
    /// The servers that list it (a peer is online while one does).
    pub via: Vec<NodeId>,
}

/// What [`Node::lookup`](crate::Node::lookup) looks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LookupKey {
    /// The peer with this ID.
    Id(NodeId),
    /// Every peer with this name (names need not be unique; servers answer
    /// with at most 64 each).
    Name(String),
}

/// One row of the link table: how this peer reaches one node, as
/// [`Node::link_table`](crate::Node::link_table) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkRow {
    /// The node linked to.
    pub id: NodeId,
    /// How it is reached.
    pub path: PathKind,
    /// The connection's round-trip time, for links to peers: on a peer,
    /// QUIC's current estimate; in a server's directory, the last value the
    /// peer reported (it reports when it moves by a quarter and 2 ms, at
    /// most every 5 s per link). `None` when not known.
    pub rtt: Option<Duration>,
}

/// One peer as a server lists it, with the links it reported, as
/// [`Node::directory`](crate::Node::directory) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirectoryRow {
    /// The peer.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// The addresses it reported and the one the server observes.
    pub addrs: PeerAddrs,
    /// The links it reported to other peers.
    pub links: Vec<LinkRow>,
}

/// A peer's own network information: what it reports to servers and what
/// they list in the directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerAddrs {
    /// Addresses on the peer's own interfaces (LAN addresses).
    pub local: Vec<SocketAddr>,
    /// Addresses servers saw the peer's packets come from (public, after NAT).
    pub observed: Vec<SocketAddr>,
}

/// How a peer reaches another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PathKind {
    /// Straight to the node's address (same LAN, public address, or a server).
    Direct,
    /// Straight to the node's address after UDP hole punching.
    Punched,
    /// Through a server that forwards the end-to-end QUIC packets.
    Relayed {
        /// The relaying server.
        via: NodeId,
    },
}

impl std::fmt::Display for PathKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathKind::Direct => f.write_str("direct"),
            PathKind::Punched => f.write_str("punched"),
            PathKind::Relayed { via } => write!(f, "relayed via {via}"),
        }
    }
}

/// This node's address as one server sees it: the source address of the
/// node's packets when they reach that server, after every NAT on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub struct ObservedAddr {
    /// The server that reported it.
    pub server: NodeId,
    /// The address it sees.
    pub addr: SocketAddr,
}

/// How the NAT in front of this node maps its address, as far as the
/// servers' observations tell (RFC 4787 terms). It says what to expect from
/// hole punching: direct paths come easily with [`NatBehaviour::NoNat`] and
/// [`NatBehaviour::EndpointIndependent`], need port prediction or a relay
/// with [`NatBehaviour::EndpointDependent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NatBehaviour {
    /// No server has reported this node's address yet.
    Unknown,
    /// A server sees one of this node's own interface addresses (see
    /// [`Node::set_local_addrs`](crate::Node::set_local_addrs)): there is
    /// no NAT on the way.
    NoNat,
    /// Every server sees the same address: one mapping for all
    /// destinations (endpoint-independent mapping). With `servers == 1`
    /// that is what a single observation shows, not yet a proof.
    EndpointIndependent {
        /// Servers that agree.
        servers: usize,
    },
    /// Servers see different addresses (different ports, or different
    /// public IPs): the NAT makes a new mapping per destination
    /// (endpoint-dependent, "symmetric").
    EndpointDependent,
}

impl NatBehaviour {
    /// Classifies what the servers observe, given this node's own
    /// interface addresses.
    pub(crate) fn classify(observed: &[ObservedAddr], local: &[SocketAddr]) -> Self {
        if observed.is_empty() {
            return Self::Unknown;
        }
        if observed.iter().any(|o| local.contains(&o.addr)) {
            return Self::NoNat;
        }
        let distinct: BTreeSet<SocketAddr> = observed.iter().map(|o| o.addr).collect();
        if distinct.len() == 1 {
            Self::EndpointIndependent { servers: observed.len() }
        } else {
            Self::EndpointDependent
        }
    }
}

impl std::fmt::Display for NatBehaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown => f.write_str("unknown"),
            Self::NoNat => f.write_str("no NAT"),
            Self::EndpointIndependent { servers } => {
                write!(f, "endpoint-independent mapping (seen by {servers} server(s))")
            }
            Self::EndpointDependent => f.write_str("endpoint-dependent mapping"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Identity, Role};

    fn seen(seed: u8, addr: &str) -> ObservedAddr {
        ObservedAddr {
            server: Identity::from_seed(Role::Server, [seed; 32]).id(),
            addr: addr.parse().unwrap(),
        }
    }

    #[test]
    fn classifies_what_servers_see() {
        let local: Vec<SocketAddr> = vec!["10.0.0.2:5000".parse().unwrap()];
        assert_eq!(NatBehaviour::classify(&[], &local), NatBehaviour::Unknown);
        assert_eq!(NatBehaviour::classify(&[seen(1, "10.0.0.2:5000")], &local), NatBehaviour::NoNat);
        let one = [seen(1, "198.51.100.7:40001")];
        assert_eq!(NatBehaviour::classify(&one, &local), NatBehaviour::EndpointIndependent { servers: 1 });
        let agree = [seen(1, "198.51.100.7:40001"), seen(2, "198.51.100.7:40001")];
        assert_eq!(NatBehaviour::classify(&agree, &local), NatBehaviour::EndpointIndependent { servers: 2 });
        let ports = [seen(1, "198.51.100.7:40001"), seen(2, "198.51.100.7:40002")];
        assert_eq!(NatBehaviour::classify(&ports, &local), NatBehaviour::EndpointDependent);
        let ips = [seen(1, "198.51.100.7:40001"), seen(2, "198.51.100.8:40001")];
        assert_eq!(NatBehaviour::classify(&ips, &local), NatBehaviour::EndpointDependent);
    }
}
