//! Relayed paths, the peer's end: wrapping the QUIC packets for another peer
//! in relay frames to the server that relays for it, and checking the frames
//! a server forwards to us.
//!
//! QUIC between two peers runs end to end over the mapped address of the
//! other peer (see `paths`); when the path in use is a relay, each packet
//! travels in a relay frame carrying our session token at the relaying
//! server and the destination's node ID. The server checks and rewrites the
//! header (see the server role's `relay`), so what arrives here carries our
//! token at that server and the sender's ID.

use super::Peer;
use crate::identity::{NodeId, Role};
use crate::wire::{FrameError, RELAY_OVERHEAD, RelayFrame, TOKEN_LEN};
use std::net::SocketAddr;

impl Peer {
    /// Checks a relay frame that arrived from `from` with `token`, holding
    /// (the server says) a packet of `sender`: it must come from a
    /// connected server, carry our token there and name a peer. Returns the
    /// mapped address QUIC knows `sender` by, to hand the packet to.
    pub(crate) fn accept_relay(
        &mut self,
        from: SocketAddr,
        token: &[u8; TOKEN_LEN],
        sender: NodeId,
    ) -> Option<SocketAddr> {
        let via = self.servers.iter().find(|(_, s)| s.addr == from && s.token.as_ref() == Some(token))?.0;
        if sender.role() != Role::Peer {
            return None;
        }
        let via = *via;
        self.relayed_from(sender, via);
        Some(self.mapped(sender))
    }
}

/// Appends to `out` the QUIC packets in `packets` — one, or a batch of
/// `segment_size`-byte segments (the last may be shorter) as QUIC makes them
/// for segmentation offload — each wrapped in a relay frame for `peer` with
/// our `token` at the relaying server. Returns the segment size of the
/// wrapped batch (`None` for a single frame), so it still leaves as one
/// batch.
pub(crate) fn wrap(
    token: [u8; TOKEN_LEN],
    peer: NodeId,
    packets: &[u8],
    segment_size: Option<usize>,
    out: &mut Vec<u8>,
) -> Result<Option<usize>, FrameError> {
    let stride = segment_size.unwrap_or(packets.len()).max(1);
    for packet in packets.chunks(stride) {
        RelayFrame { token, node: peer, data: packet }.encode(out)?;
    }
    Ok(segment_size.filter(|&s| s < packets.len()).map(|s| s + RELAY_OVERHEAD))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::wire;

    /// The relay frames of a batch, split at `stride` (a raw frame's payload
    /// is the rest of its datagram, so a batch is split as GSO splits it).
    fn frames(buf: &[u8], stride: usize) -> Vec<(NodeId, Vec<u8>)> {
        let decode = |d| RelayFrame::decode(wire::decode(d).unwrap().payload).unwrap();
        buf.chunks(stride).map(decode).map(|f| (f.node, f.data.to_vec())).collect()
    }

    #[test]
    fn a_batch_stays_a_batch_one_frame_per_packet() {
        let peer = Identity::from_seed(Role::Peer, [4; 32]).id();
        let mut batch = vec![0xc3u8; 2400];
        batch.extend_from_slice(&[0x43; 500]);
        let mut out = Vec::new();
        let seg = wrap([1; TOKEN_LEN], peer, &batch, Some(1200), &mut out).unwrap();
        assert_eq!(seg, Some(1200 + RELAY_OVERHEAD));
        assert_eq!(out.len(), batch.len() + 3 * RELAY_OVERHEAD);
        let got = frames(&out, seg.unwrap());
        assert!(got.iter().all(|(node, _)| *node == peer));
        assert_eq!(got.iter().map(|(_, d)| d.len()).collect::<Vec<_>>(), [1200, 1200, 500]);
        assert_eq!(got.into_iter().flat_map(|(_, d)| d).collect::<Vec<_>>(), batch);
    }

    #[test]
    fn a_single_packet_is_one_frame() {
        let peer = Identity::from_seed(Role::Peer, [4; 32]).id();
        let mut out = Vec::new();
        // A "batch" of one segment is no batch.
        assert_eq!(wrap([1; TOKEN_LEN], peer, &[0xc3; 900], Some(900), &mut out).unwrap(), None);
        assert_eq!(frames(&out, out.len()), [(peer, vec![0xc3; 900])]);
        out.clear();
        assert_eq!(wrap([1; TOKEN_LEN], peer, &[0xc3; 900], None, &mut out).unwrap(), None);
        assert_eq!(out.len(), 900 + RELAY_OVERHEAD);
    }
}
