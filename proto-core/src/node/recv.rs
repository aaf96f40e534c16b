//! Receive dispatch: what one received datagram becomes (a QUIC packet for
//! a connection, a new incoming connection, a relay frame to forward or
//! unwrap, a path probe).

use super::*;

impl Node {
    /// Hands a QUIC packet to quinn-proto. `remote` is the sender as QUIC
    /// knows it (a peer's mapped address on peer-to-peer connections);
    /// `local` is `None` for packets unwrapped from a relay frame.
    pub(super) fn handle_quic(
        &mut self,
        remote: SocketAddr,
        local: Option<IpAddr>,
        ecn: Option<Ecn>,
        data: BytesMut,
    ) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let now = self.now;
        match self.endpoint.handle(now, remote, local, Ecn::to_quic(ecn), data, &mut buf) {
            Some(DatagramEvent::ConnectionEvent(handle, ev)) => {
                if let Some(conn) = self.conns.get_mut(&handle.0) {
                    if local.is_some() {
                        conn.local = local;
                    }
                    conn.quic.handle_event(ev);
                    self.drive(handle.0);
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
                Ok((handle, quic)) => {
                    tracing::debug!(node = %self.cfg.name, handle = handle.0, %remote, "incoming connection");
                    let (max, budget) = (self.cfg.max_message_size, self.cfg.limits.receive_buffer);
                    let side = Side::Acceptor(Acceptor { slot: Some(ip), ..Acceptor::default() });
                    let mut conn = Conn::new(quic, side, remote, max, budget);
                    let idle = if peer { self.cfg.peer.idle_timeout } else { self.cfg.idle_timeout };
                    conn.hello_deadline = Some(now + idle + self.cfg.hello_timeout);
                    self.handshakes += 1;
                    if let Some(ip) = ip {
                        *self.handshakes_by_ip.entry(ip).or_default() += 1;
                    }
                    self.conns.insert(handle.0, Box::new(conn));
                    self.unestablished.insert(handle.0);
                    self.drive(handle.0);
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
    pub(super) fn release_handshake(&mut self, handle: usize) {
        let Some(slot) =
            self.conns.get_mut(&handle).and_then(|c| c.acceptor_mut().and_then(|a| a.slot.take()))
        else {
            return;
        };
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

    /// A relay frame (`frame` is the whole datagram): a server forwards it,
    /// a peer unwraps it. Neither copies the QUIC packet inside: the server
    /// rewrites the frame's header in place and queues the same buffer, the
    /// peer hands QUIC the buffer's tail. The ECN codepoint travels with the
    /// packet, as through any router, so congestion marks on either hop
    /// reach the QUIC endpoints.
    pub(super) fn on_relay(
        &mut self,
        remote: SocketAddr,
        ecn: Option<Ecn>,
        token: [u8; wire::TOKEN_LEN],
        node: NodeId,
        mut frame: BytesMut,
    ) {
        let size = frame.len() - wire::RELAY_OVERHEAD;
        match &mut self.role {
            RoleState::Server(server) => {
                let (links, conns) = (&self.links, &self.conns);
                let link = |id: &NodeId| {
                    let conn = conns.get(links.get(id)?)?;
                    Some(LinkAddr { remote: conn.quic.remote_address(), local: conn.quic.local_ip() })
                };
                match server.forward_relay(remote, &token, &node, &mut frame, link) {
                    Ok(to) => {
                        self.stats.relayed_datagrams += 1;
                        self.stats.relayed_bytes += size as u64;
                        let data = frame.freeze();
                        self.out.push_back(OutDatagram {
                            destination: to.remote,
                            source: to.local,
                            ecn,
                            data,
                        });
                    }
                    Err(why) => {
                        tracing::trace!(node = %self.cfg.name, %remote, to = %node, ?why, "relay frame rejected");
                        self.stats.dropped.relay_rejected += 1;
                    }
                }
            }
            RoleState::Peer(peer) => {
                let Some(mapped) = peer.accept_relay(remote, &token, node) else {
                    tracing::trace!(node = %self.cfg.name, %remote, from = %node, "relay frame rejected");
                    self.stats.dropped.relay_rejected += 1;
                    return;
                };
                let packet = frame.split_off(wire::RELAY_OVERHEAD);
                tracing::trace!(node = %self.cfg.name, from = %node, %remote, size, first = packet[0], "relay in");
                // No local address: the one it came in on belongs to the
                // server link, not to the peer's path.
                self.handle_quic(mapped, None, ecn, packet);
            }
        }
    }
}
