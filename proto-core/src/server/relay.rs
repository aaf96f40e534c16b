//! Relaying: forwarding datagrams between two peers that are both connected
//! to this server, for pairs that cannot reach each other directly.
//!
//! A relay frame carries a token and a node ID in front of one QUIC packet.
//! On the way in, the token is the sender's relay session here (handed out
//! when it connected, see `peers`) and the node is the destination; a frame
//! is forwarded only when
//!
//! * the token belongs to a peer connected here,
//! * the frame came from that peer's link address (a token seen on the wire
//!   is useless from anywhere else: nobody can use this server as an open
//!   relay or speak for a peer whose token leaked), and
//! * the destination is a peer connected here.
//!
//! On the way out the header is rewritten in place — the destination's token
//! and the sender's ID — so the receiver can check the frame came from its
//! server and knows whose packet it holds. Every relay header has the same
//! size, so the frame leaves in the buffer it arrived in: no copy, no
//! allocation per relayed datagram. The QUIC packet inside is end-to-end
//! encrypted between the two peers; the server never looks at it.

use super::Server;
use crate::identity::NodeId;
use crate::wire::{RelayFrame, TOKEN_LEN};
use std::net::{IpAddr, SocketAddr};

/// The addresses of a node's QUIC link to this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkAddr {
    /// Where the node's packets come from (and ours go to).
    pub(crate) remote: SocketAddr,
    /// The local address its packets arrive on, when known: forwarded frames
    /// leave from it, as the link's own packets do.
    pub(crate) local: Option<IpAddr>,
}

/// Why a relay frame was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reject {
    /// The token is no relay session here.
    UnknownToken,
    /// The token's owner has no link here, or the frame did not come from
    /// its link's address.
    WrongSource,
    /// The destination is not a peer connected here.
    UnknownDestination,
}

impl Server {
    /// Decides whether the relay frame `frame` (a whole raw frame, header
    /// included, that `RelayFrame::decode` accepted with `token` and `to`)
    /// that arrived from `from` is forwarded, and if so rewrites its header
    /// for the destination and returns the destination link's addresses.
    /// `link` gives the addresses of a connected node's link (the node owns
    /// the connections).
    pub(crate) fn forward_relay(
        &self,
        from: SocketAddr,
        token: &[u8; TOKEN_LEN],
        to: &NodeId,
        frame: &mut [u8],
        link: impl Fn(&NodeId) -> Option<LinkAddr>,
    ) -> Result<LinkAddr, Reject> {
        let source = self.peers.by_token(token).ok_or(Reject::UnknownToken)?;
        if link(&source).is_none_or(|l| l.remote != from) {
            return Err(Reject::WrongSource);
        }
        let dest_token = self.peers.token_of(to).ok_or(Reject::UnknownDestination)?;
        let dest = link(to).ok_or(Reject::UnknownDestination)?;
        RelayFrame::rewrite(frame, &dest_token, &source);
        Ok(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterConfig;
    use crate::identity::{Identity, Role};
    use crate::rng::NodeRng;
    use crate::server::LinkMeta;
    use crate::wire;

    fn peer_id(n: u8) -> NodeId {
        Identity::from_seed(Role::Peer, [n; 32]).id()
    }

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([203, 0, 113, n], 5000))
    }

    /// A lone server with peers 1 and 2 connected (from `addr(1)`, `addr(2)`).
    fn server() -> Server {
        let id = Identity::from_seed(Role::Server, [9; 32]).id();
        let now = crate::test_support::epoch();
        let mut s = Server::new(
            id,
            "s".into(),
            1,
            vec![addr(9)],
            &[],
            ClusterConfig::default(),
            NodeRng::from_seed([9; 32]),
            now,
        );
        for n in [1, 2] {
            let meta = LinkMeta {
                id: peer_id(n),
                name: format!("p{n}"),
                incarnation: 1,
                remote_addr: addr(n),
                addrs: Vec::new(),
                elder: false,
                join: false,
                lookup: false,
                probe_key: None,
            };
            s.peer_up(now, &meta);
        }
        s
    }

    fn links(id: &NodeId) -> Option<LinkAddr> {
        (1..=2).find(|&n| peer_id(n) == *id).map(|n| LinkAddr { remote: addr(n), local: Some(addr(9).ip()) })
    }

    fn frame(token: [u8; TOKEN_LEN], to: NodeId) -> Vec<u8> {
        let mut out = Vec::new();
        RelayFrame { token, node: to, data: &[0xc3, 0, 0, 0, 1, 8] }.encode(&mut out).unwrap();
        out
    }

    #[test]
    fn forwards_between_connected_peers_with_the_header_rewritten() {
        let s = server();
        let t1 = s.peers.token_of(&peer_id(1)).unwrap();
        let t2 = s.peers.token_of(&peer_id(2)).unwrap();
        let mut f = frame(t1, peer_id(2));
        let out = s.forward_relay(addr(1), &t1, &peer_id(2), &mut f, links).unwrap();
        assert_eq!(out, LinkAddr { remote: addr(2), local: Some(addr(9).ip()) });
        // What peer 2 receives: its own token, and who sent it.
        assert_eq!(f, frame(t2, peer_id(1)));
        let decoded = RelayFrame::decode(wire::decode(&f).unwrap().payload).unwrap();
        assert_eq!((decoded.token, decoded.node), (t2, peer_id(1)));
    }

    #[test]
    fn rejects_strangers_spoofed_sources_and_absent_destinations() {
        let s = server();
        let t1 = s.peers.token_of(&peer_id(1)).unwrap();
        let cases = [
            // A token nobody was given.
            (addr(1), [0xaa; TOKEN_LEN], peer_id(2), Reject::UnknownToken),
            // Peer 1's token, replayed from peer 2's address and from elsewhere.
            (addr(2), t1, peer_id(2), Reject::WrongSource),
            (addr(77), t1, peer_id(2), Reject::WrongSource),
            // A destination that is not connected here.
            (addr(1), t1, peer_id(3), Reject::UnknownDestination),
        ];
        for (from, token, to, why) in cases {
            let mut f = frame(token, to);
            let before = f.clone();
            assert_eq!(s.forward_relay(from, &token, &to, &mut f, links), Err(why));
            assert_eq!(f, before, "a rejected frame is left as it was");
        }
        // A destination in the directory whose link is gone is not forwarded to.
        let mut f = frame(t1, peer_id(2));
        let only_one = |id: &NodeId| links(id).filter(|_| *id == peer_id(1));
        assert_eq!(
            s.forward_relay(addr(1), &t1, &peer_id(2), &mut f, only_one),
            Err(Reject::UnknownDestination)
        );
    }
}
