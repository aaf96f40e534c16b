//! Receive dispatch: what one received datagram becomes (a QUIC packet for
//! a connection, a new incoming connection, a relay frame to forward or
//! unwrap, a path probe).

use super::*;

impl Node {
    pub(super) fn handle_quic(&mut self, remote: SocketAddr, local: Option<IpAddr>, data: BytesMut) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let now = self.now;
        match self.endpoint.handle(now, remote, local, None, data, &mut buf) {
            Some(DatagramEvent::ConnectionEvent(ch, ev)) => {
                if let Some(conn) = self.conns.get_mut(&ch.0) {
                    conn.quic.handle_event(ev);
                    self.drive(ch.0);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => self.on_incoming(incoming, remote, &mut buf),
            Some(DatagramEvent::Response(t)) => self.queue_response(t, &buf),
            None => self.stats.dropped.quic_ignored += 1,
        }
        self.scratch = buf;
    }

    /// A new incoming connection attempt: accepted, retried, refused or
    /// ignored, so that strangers can hold only a bounded number of
    /// handshakes (see [`LimitsConfig`](crate::LimitsConfig)).
    pub(super) fn on_incoming(
        &mut self,
        incoming: quinn_proto::Incoming,
        remote: SocketAddr,
        buf: &mut Vec<u8>,
    ) {
        let now = self.now;
        let limits = &self.cfg.limits;
        // Relayed connections come from a peer's mapped address, which the
        // relay server has already authenticated: no per-IP cap, no Retry.
        let peer = is_mapped(&remote);
        let ip = (!peer).then(|| remote.ip());
        let from_ip = ip.and_then(|ip| self.handshakes_by_ip.get(&ip)).copied().unwrap_or(0);
        if self.closing {
            let t = self.endpoint.refuse(incoming, buf);
            self.queue_response(t, buf);
        } else if self.handshakes >= limits.max_handshakes {
            // Overloaded: stay silent; an honest dialer retransmits its
            // Initial and gets in once handshakes finish.
            self.stats.handshakes_shed += 1;
            self.endpoint.ignore(incoming);
        } else if from_ip >= limits.max_handshakes_per_ip {
            self.stats.handshakes_refused += 1;
            let t = self.endpoint.refuse(incoming, buf);
            self.queue_response(t, buf);
        } else if !peer
            && self.handshakes >= limits.retry_above
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            match self.endpoint.retry(incoming, buf) {
                Ok(t) => {
                    self.stats.retries_sent += 1;
                    self.queue_response(t, buf);
                }
                Err(e) => self.endpoint.ignore(e.into_incoming()),
            }
        } else {
            // Peer-to-peer connections (over mapped addresses) get their own timeouts.
            let config = peer.then(|| self.peer_server_config.clone());
            match self.endpoint.accept(incoming, now, buf, config) {
                Ok((ch, quic)) => {
                    tracing::debug!(node = %self.cfg.name, ch = ch.0, %remote, "incoming connection");
                    let (max, budget) = (self.cfg.max_message_size, self.cfg.limits.receive_buffer);
                    let mut conn = Conn::new(quic, false, remote, max, budget);
                    let idle = if peer { self.cfg.peer.idle_timeout } else { self.cfg.idle_timeout };
                    conn.hello_deadline = Some(now + idle + self.cfg.hello_timeout);
                    conn.handshake_slot = Some(ip);
                    self.handshakes += 1;
                    if let Some(ip) = ip {
                        *self.handshakes_by_ip.entry(ip).or_default() += 1;
                    }
                    self.conns.insert(ch.0, conn);
                    self.drive(ch.0);
                }
                Err(e) => {
                    if let Some(t) = e.response {
                        self.queue_response(t, buf);
                    }
                }
            }
        }
    }

    /// The connection no longer counts as an incoming handshake (established or gone).
    pub(super) fn release_handshake(&mut self, ch: usize) {
        let Some(slot) = self.conns.get_mut(&ch).and_then(|c| c.handshake_slot.take()) else { return };
        self.handshakes -= 1;
        if let Some(ip) = slot
            && let Some(n) = self.handshakes_by_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                self.handshakes_by_ip.remove(&ip);
            }
        }
    }

    /// A relay frame: a server forwards it, a peer unwraps it.
    pub(super) fn on_relay(&mut self, remote: SocketAddr, relay: RelayFrame<'_>) {
        match &mut self.role {
            RoleState::Server(server) => {
                // The token must belong to the connection the frame came from:
                // nobody else can use this server as a relay.
                let forward = server.relay_source(&relay.token).and_then(|src| {
                    let src_ch = *self.links.get(&src)?;
                    (self.conns.get(&src_ch)?.quic.remote_address() == remote).then_some(())?;
                    let token = server.relay_token(&relay.node)?;
                    let dst_ch = *self.links.get(&relay.node)?;
                    Some((src, token, self.conns.get(&dst_ch)?.quic.remote_address()))
                });
                let Some((src, token, destination)) = forward else {
                    tracing::trace!(node = %self.cfg.name, %remote, to = %relay.node, "relay frame rejected");
                    self.stats.dropped.relay_rejected += 1;
                    return;
                };
                let mut data = Vec::with_capacity(relay.data.len() + wire::RELAY_OVERHEAD);
                if (RelayFrame { token, node: src, data: relay.data }).encode(&mut data).is_ok() {
                    self.stats.relayed_datagrams += 1;
                    self.stats.relayed_bytes += relay.data.len() as u64;
                    self.out.push_back(OutDatagram { destination, source: None, data });
                }
            }
            RoleState::Peer(peer) => {
                if !peer.accept_relay(remote, &relay.token) || relay.node.role() != Role::Peer {
                    tracing::trace!(node = %self.cfg.name, %remote, from = %relay.node, "relay frame rejected");
                    self.stats.dropped.relay_rejected += 1;
                    return;
                }
                let mapped = peer.mapped(relay.node);
                tracing::trace!(node = %self.cfg.name, from = %relay.node, %remote, size = relay.data.len(), first = relay.data.first().copied().unwrap_or(0), "relay in");
                self.handle_quic(mapped, None, BytesMut::from(relay.data));
            }
        }
    }
}
