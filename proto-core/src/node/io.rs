//! Output scheduling: the datagrams a node hands its driver
//! ([`Node::poll_transmit`]), from its own queue (relay forwards, probes,
//! stateless QUIC responses) and from its connections, round robin.

use super::*;

/// A datagram for the caller to send. The bytes are in the buffer passed to
/// [`Node::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a transmit that is not sent is a lost packet"]
#[non_exhaustive]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// The local IP to send from, when it matters (multi-homed hosts).
    pub source: Option<IpAddr>,
    /// Bytes written to the caller's buffer.
    pub size: usize,
    /// When `Some(n)`, the buffer holds several datagrams of `n` bytes each
    /// (the last may be shorter), ready for UDP segmentation offload. Only
    /// produced when the caller allows more than one datagram per transmit.
    pub segment_size: Option<usize>,
}

#[derive(Debug)]
pub(super) struct OutDatagram {
    pub(super) destination: SocketAddr,
    pub(super) source: Option<IpAddr>,
    pub(super) data: Vec<u8>,
}

impl Node {
    pub(super) fn queue_response(&mut self, t: quinn_proto::Transmit, buf: &[u8]) {
        self.out.push_back(OutDatagram {
            destination: t.destination,
            source: t.src_ip,
            data: buf[..t.size].to_vec(),
        });
    }

    pub(super) fn next_transmit(&mut self, max_datagrams: usize, buf: &mut Vec<u8>) -> Option<Transmit> {
        if let Some(d) = self.out.pop_front() {
            buf.extend_from_slice(&d.data);
            return Some(Transmit {
                destination: d.destination,
                source: d.source,
                size: d.data.len(),
                segment_size: None,
            });
        }
        let now = self.now;
        loop {
            let ch = match self.dirty.range(self.cursor..).next() {
                Some(&ch) => ch,
                None => *self.dirty.first()?,
            };
            let Some(conn) = self.conns.get_mut(&ch) else {
                self.dirty.remove(&ch);
                continue;
            };
            // Relayed packets are wrapped one by one: no segmentation offload.
            let mapped = is_mapped(&conn.addr);
            let max = if mapped { 1 } else { max_datagrams };
            match conn.quic.poll_transmit(now, max, buf) {
                Some(t) if is_mapped(&t.destination) => {
                    self.cursor = ch + 1;
                    self.update_timer(ch);
                    if let Some(t) = self.route_mapped(t.destination, t.size, buf) {
                        return Some(t);
                    }
                    // No path now: drop it; QUIC retransmits once there is one.
                    tracing::trace!(node = %self.cfg.name, ch, to = %t.destination, "unroutable packet");
                    self.stats.unroutable += 1;
                    buf.clear();
                }
                Some(t) => {
                    self.cursor = ch + 1;
                    self.update_timer(ch);
                    return Some(Transmit {
                        destination: t.destination,
                        source: t.src_ip,
                        size: t.size,
                        segment_size: t.segment_size,
                    });
                }
                None => {
                    self.dirty.remove(&ch);
                    self.update_timer(ch);
                }
            }
        }
    }

    /// Sends the QUIC packet in `buf` (for mapped address `mapped`) on the
    /// peer's current path: as is to a direct address, or wrapped in a relay
    /// frame to its relay server.
    pub(super) fn route_mapped(
        &mut self,
        mapped: SocketAddr,
        size: usize,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        let now = self.now;
        let (server, token, peer) = match self.role.peer_mut()?.route(now, &mapped)? {
            Next::Direct(destination) => {
                buf.truncate(size);
                return Some(Transmit { destination, source: None, size, segment_size: None });
            }
            Next::Relay { server, token, peer } => (server, token, peer),
        };
        let mut framed = std::mem::take(&mut self.scratch);
        framed.clear();
        RelayFrame { token, node: peer, data: &buf[..size] }.encode(&mut framed).ok()?;
        tracing::trace!(node = %self.cfg.name, to = %peer, via = %server, size, first = buf[0], "relay out");
        std::mem::swap(buf, &mut framed);
        self.scratch = framed;
        Some(Transmit { destination: server, source: None, size: buf.len(), segment_size: None })
    }
}
