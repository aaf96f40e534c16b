//! Output scheduling: the datagrams a node hands its driver
//! ([`Node::poll_transmit`]), from its own queue (relay forwards, probes,
//! stateless QUIC responses) and from its connections, round robin; and the
//! I/O metadata both directions carry (ECN, source address, segmentation).

use super::*;

/// An ECN codepoint (RFC 3168): the two low bits of a packet's IPv4 TOS or
/// IPv6 traffic-class byte.
///
/// Drivers pass the codepoint a datagram arrived with to
/// [`Node::handle_datagram`] and set the one a [`Transmit`] asks for on the
/// packet they send (quinn-udp does both). QUIC then learns of congestion
/// from routers that mark packets instead of dropping them, and stops
/// marking its own packets on a path that mangles the bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Ecn {
    /// ECN-capable transport, codepoint 0 (`0b10`): what QUIC sends.
    Ect0 = 0b10,
    /// ECN-capable transport, codepoint 1 (`0b01`).
    Ect1 = 0b01,
    /// Congestion experienced (`0b11`): set by a router on the way.
    Ce = 0b11,
}

impl Ecn {
    /// The codepoint in the two low bits of `bits` (the whole TOS or
    /// traffic-class byte may be passed); `None` for not-ECT (`0b00`).
    pub fn from_bits(bits: u8) -> Option<Self> {
        match bits & 0b11 {
            0b10 => Some(Self::Ect0),
            0b01 => Some(Self::Ect1),
            0b11 => Some(Self::Ce),
            _ => None,
        }
    }

    /// The codepoint's two bits.
    pub fn bits(self) -> u8 {
        self as u8
    }

    pub(super) fn to_quic(this: Option<Self>) -> Option<quinn_proto::EcnCodepoint> {
        this.and_then(|e| quinn_proto::EcnCodepoint::from_bits(e.bits()))
    }

    pub(super) fn from_quic(ecn: Option<quinn_proto::EcnCodepoint>) -> Option<Self> {
        ecn.and_then(|e| Self::from_bits(e as u8))
    }
}

/// A datagram for the caller to send. The bytes are in the buffer passed to
/// [`Node::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a transmit that is not sent is a lost packet"]
#[non_exhaustive]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// The local IP to send from, when it matters: the address this node
    /// was reached on for connections it accepted, direct peer paths and
    /// probe answers (on a multi-homed host, an answer from another address
    /// would fail the remote's and its NAT's checks). `None`: let the
    /// operating system choose.
    pub source: Option<IpAddr>,
    /// ECN codepoint to set on the packet(s).
    pub ecn: Option<Ecn>,
    /// Bytes written to the caller's buffer.
    pub size: usize,
    /// When `Some(n)`, the buffer holds several datagrams of `n` bytes each
    /// (the last may be shorter) for one destination, ready for UDP
    /// segmentation offload (GSO); a driver without it sends them one by
    /// one. Only produced when the caller allows more than one datagram per
    /// transmit, on server links and peer paths alike (relayed packets are
    /// wrapped one by one and still leave as one batch).
    pub segment_size: Option<usize>,
}

/// A datagram the node made itself (not a connection's packet).
#[derive(Debug)]
pub(super) struct OutDatagram {
    pub(super) destination: SocketAddr,
    pub(super) source: Option<IpAddr>,
    pub(super) ecn: Option<Ecn>,
    /// Owned, so a forwarded relay frame is queued without a copy.
    pub(super) data: Bytes,
}

impl Node {
    pub(super) fn queue_response(&mut self, t: quinn_proto::Transmit, buf: &[u8]) {
        self.out.push_back(OutDatagram {
            destination: t.destination,
            source: t.src_ip,
            ecn: Ecn::from_quic(t.ecn),
            data: Bytes::copy_from_slice(&buf[..t.size]),
        });
    }

    pub(super) fn next_transmit(&mut self, max_datagrams: usize, buf: &mut Vec<u8>) -> Option<Transmit> {
        if let Some(d) = self.out.pop_front() {
            buf.extend_from_slice(&d.data);
            return Some(Transmit {
                destination: d.destination,
                source: d.source,
                ecn: d.ecn,
                size: d.data.len(),
                segment_size: None,
            });
        }
        let now = self.now;
        loop {
            let handle = match self.dirty.range(self.cursor..).next() {
                Some(&handle) => handle,
                None => *self.dirty.first()?,
            };
            let Some(conn) = self.conns.get_mut(&handle) else {
                self.dirty.remove(&handle);
                continue;
            };
            match conn.quic.poll_transmit(now, max_datagrams, buf) {
                Some(t) if is_mapped(&t.destination) => {
                    self.cursor = handle + 1;
                    self.update_timer(handle);
                    if let Some(t) = self.route_mapped(handle, &t, buf) {
                        return Some(t);
                    }
                    // No path now: drop it; QUIC retransmits once there is one.
                    tracing::trace!(node = %self.cfg.name, handle, to = %t.destination, "unroutable packet");
                    self.stats.unroutable += 1;
                    buf.clear();
                }
                Some(t) => {
                    self.cursor = handle + 1;
                    self.update_timer(handle);
                    return Some(Transmit {
                        destination: t.destination,
                        source: t.src_ip,
                        ecn: Ecn::from_quic(t.ecn),
                        size: t.size,
                        segment_size: t.segment_size,
                    });
                }
                None => {
                    self.dirty.remove(&handle);
                    self.update_timer(handle);
                }
            }
        }
    }

    /// Sends the QUIC packets in `buf` (from connection `handle`, for mapped
    /// address `t.destination`) on the peer's current path: as they are to a
    /// direct address (from the local address that path's packets arrive
    /// on), or each wrapped in a relay frame to its relay server, as one
    /// batch again when QUIC made one.
    fn route_mapped(
        &mut self,
        handle: usize,
        t: &quinn_proto::Transmit,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        let now = self.now;
        let ecn = Ecn::from_quic(t.ecn);
        let (server, token, peer) = match self.role.peer_mut()?.route(now, &t.destination)? {
            Next::Direct(destination) => {
                buf.truncate(t.size);
                let source = self.conns.get(&handle).and_then(|c| c.local);
                return Some(Transmit {
                    destination,
                    source,
                    ecn,
                    size: t.size,
                    segment_size: t.segment_size,
                });
            }
            Next::Relay { server, token, peer } => (server, token, peer),
        };
        // From wherever the server link's own packets leave (the relay frames
        // must use the same NAT mapping).
        let server_link = self.role.peer().and_then(|p| p.relay_of(&peer)).and_then(|id| self.links.get(&id));
        let source = server_link.and_then(|sc| self.conns.get(sc)).and_then(|c| c.quic.local_ip());
        let mut framed = std::mem::take(&mut self.scratch);
        framed.clear();
        let segment_size =
            crate::peer::relay::wrap(token, peer, &buf[..t.size], t.segment_size, &mut framed).ok()?;
        tracing::trace!(node = %self.cfg.name, to = %peer, via = %server, size = t.size, first = buf[0], "relay out");
        std::mem::swap(buf, &mut framed);
        self.scratch = framed;
        Some(Transmit { destination: server, source, ecn, size: buf.len(), segment_size })
    }
}
