//! Connection driving and timers: dialing, processing what quinn-proto
//! reports after each input, connection timers, and carrying out what the
//! role logic asks for.

use super::*;

impl Node {
    /// Whether messages for `id` may wait: a connection to it is being set
    /// up, or (lookup mode) the servers are being asked where it is. Not
    /// folded into `in_progress`, which also decides whether a dial is
    /// superseded: a lookup must not stop the dial that follows it.
    pub(super) fn on_the_way(&self, id: &NodeId) -> bool {
        self.in_progress(id) || self.role.peer().is_some_and(|p| p.looking_up(id))
    }

    pub(super) fn in_progress(&self, id: &NodeId) -> bool {
        // A relayed connection names its remote by its mapped address even
        // before TLS has authenticated it (and TLS then checks it is so).
        let relayed_from = |c: &Conn| self.role.peer().and_then(|p| p.peer_of(&c.addr));
        self.unestablished.iter().filter_map(|h| self.conns.get(h)).any(|c| {
            matches!(c.phase, Phase::Handshaking | Phase::Greeting)
                && (c.remote == Some(*id)
                    || (c.remote.is_none()
                        && (c.expect() == Some(Expect::Node(*id)) || relayed_from(c) == Some(*id))))
        })
    }

    pub(super) fn dial(
        &mut self,
        expect: Expect,
        addr: SocketAddr,
        join: bool,
        internal: bool,
    ) -> Result<(), ConnectError> {
        if self.closing {
            return Err(ConnectError::ShuttingDown);
        }
        if addr.port() == 0 || addr.ip().is_unspecified() {
            return Err(ConnectError::InvalidAddress(addr));
        }
        let mut dcid = [0u8; 16];
        self.rng.fill(&mut dcid);
        // Peer-to-peer connections (over mapped addresses) outlive their relay.
        let peer = is_mapped(&addr);
        let (client_config, server_name, met) =
            // Building a client config fails only on a bug (rustls rejecting our own setup).
            self.quic.client_config(expect, dcid, peer).map_err(|_| ConnectError::Transport { code: 0x01 })?;
        let now = self.now;
        let res = self.scoped(|n| n.endpoint.connect(now, client_config, addr, &server_name));
        let (new, quic) = res.map_err(|e| match e {
            quinn_proto::ConnectError::InvalidRemoteAddress(a) => ConnectError::InvalidAddress(a),
            quinn_proto::ConnectError::EndpointStopping => ConnectError::ShuttingDown,
            quinn_proto::ConnectError::CidsExhausted => ConnectError::OutOfConnectionIds,
            // Invalid server name, no default client config, unsupported
            // version: our own setup is wrong (INTERNAL_ERROR).
            _ => ConnectError::Transport { code: 0x01 },
        })?;
        tracing::debug!(node = %self.cfg.name, conn = new.0, ?expect, %addr, join, "dial");
        let side = Side::Dialer(Dialer { expect, met, join, internal, reported: false, observed: None });
        let mut conn = Conn::new(quic, side, addr, self.cfg.max_message_size, self.cfg.limits.receive_buffer);
        let idle = if peer { self.cfg.peer.idle_timeout } else { self.cfg.idle_timeout };
        conn.hello_deadline = Some(now + idle + self.cfg.hello_timeout);
        self.conns.insert(new.0, Box::new(conn));
        self.unestablished.insert(new.0);
        self.touch(new.0);
        Ok(())
    }

    /// Marks a connection as possibly having output and refreshes its timer.
    pub(super) fn touch(&mut self, handle: usize) {
        self.dirty.insert(handle);
        self.update_timer(handle);
    }

    pub(super) fn update_timer(&mut self, handle: usize) {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        let next = match (conn.quic.poll_timeout(), conn.hello_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };

        if conn.timer != next {
            if let Some(old) = conn.timer {
                self.timers.remove(&(old, handle));
            }
            if let Some(new) = next {
                self.timers.insert((new, handle));
            }
            conn.timer = next;
        }
    }

    pub(super) fn on_conn_timeout(&mut self, handle: usize) {
        let now = self.now;

        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        conn.quic.handle_timeout(now);
        if conn.hello_deadline.is_some_and(|d| d <= now) {
            conn.hello_deadline = None;
            match conn.phase {
                Phase::Handshaking | Phase::Greeting => {
                    self.fail_dial_or_close(handle, ConnectError::TimedOut, Close::HelloTimeout)
                }
                Phase::Refusing => self.close_quietly(handle, Close::Refused),
                Phase::Established | Phase::Closing => {}
            }
        }
        self.drive(handle);
    }

    /// Processes everything a connection has to say after an input.
    pub(super) fn drive(&mut self, handle: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(&handle) else {
                return;
            };
            let mut progressed = false;
            let mut drained = None;
            while let Some(ev) = conn.quic.poll_endpoint_events() {
                progressed = true;
                if ev.is_drained() {
                    // Handed to the endpoint last: it frees the handle, which
                    // a dial made while handling the events below could reuse.
                    drained = Some(ev);
                    continue;
                }
                if let Some(cev) = self.endpoint.handle_event(ConnectionHandle(handle), ev) {
                    conn.quic.handle_event(cev);
                }
            }
            // Application events first: a drained connection still reports why it was lost.
            while let Some(ev) = self.conns.get_mut(&handle).and_then(|c| c.quic.poll()) {
                progressed = true;
                self.on_quic_event(handle, ev);
            }
            if let Some(ev) = drained {
                self.forget(handle);
                let _ = self.endpoint.handle_event(ConnectionHandle(handle), ev);
                return;
            }
            if !progressed {
                break;
            }
        }
        self.follow_move(handle);
        self.report_rtt(handle);
        self.touch(handle);
    }

    /// Hands an established peer-to-peer connection's round-trip time to the
    /// peer role, which reports it to the servers when it moved (this runs
    /// after every input on the connection: a comparison, no new timer).
    fn report_rtt(&mut self, handle: usize) {
        if self.role.peer().is_none() {
            return;
        }
        let Some(conn) = self.conns.get(&handle) else { return };
        let Some(remote) = conn.remote else { return };
        if remote.role() != Role::Peer || self.links.get(&remote) != Some(&handle) {
            return;
        }
        let rtt = conn.quic.rtt();
        let now = self.now;
        if let Some(p) = self.role.peer_mut() {
            p.link_rtt(remote, rtt, now);
        }
    }

    /// The remote of an accepted connection now sends from a new address
    /// (QUIC validated the migration, as after a NAT rebinding): remember it
    /// and let the role tell the remote where it is seen now.
    pub(super) fn follow_move(&mut self, handle: usize) {
        let Some(conn) = self.conns.get_mut(&handle) else { return };
        let now_at = conn.quic.remote_address();
        if conn.addr == now_at || is_mapped(&conn.addr) {
            return;
        }
        conn.addr = now_at;
        let established = conn.remote.filter(|id| self.links.get(id) == Some(&handle));
        if let Some(id) = established {
            self.role.remote_moved(id, now_at);
        }
    }

    /// Removes a drained connection.
    pub(super) fn forget(&mut self, handle: usize) {
        self.release_handshake(handle);
        self.unestablished.remove(&handle);
        if let Some(conn) = self.conns.remove(&handle) {
            if let Some(t) = conn.timer {
                self.timers.remove(&(t, handle));
            }
            if let Some(id) = conn.remote
                && self.links.get(&id) == Some(&handle)
            {
                self.links.remove(&id);
            }
        }
        self.dirty.remove(&handle);
    }

    pub(super) fn on_quic_event(&mut self, handle: usize, ev: quinn_proto::Event) {
        use quinn_proto::Event as Q;
        match ev {
            Q::HandshakeDataReady | Q::DatagramsUnblocked => {}
            Q::Connected => self.on_tls_done(handle),
            Q::ConnectionLost { reason } => self.on_lost(handle, reason),
            Q::Stream(StreamEvent::Opened { dir }) => {
                let mut got = Vec::new();
                let res = match self.conns.get_mut(&handle) {
                    // Channel streams wait in QUIC until the remote is admitted
                    // (it cannot open any before: its stream limit is zero).
                    Some(c) if dir == Dir::Uni && c.phase != Phase::Established => return,
                    Some(c) => c.accept_streams(dir, &mut got),
                    None => return,
                };
                self.on_received(handle, got, res);
            }
            Q::Stream(StreamEvent::Readable { id }) => {
                let mut got = Vec::new();
                let res = match self.conns.get_mut(&handle) {
                    Some(c) => c.read_stream(id, &mut got).and_then(|()| c.read_starved(&mut got)),
                    None => return,
                };
                self.on_received(handle, got, res);
            }
            Q::Stream(StreamEvent::Writable { id }) => {
                let res = self.conns.get_mut(&handle).map(|c| c.on_writable(id));
                if let Some(Err(_)) = res {
                    self.close_conn(handle, Close::Violation(Violation::StreamStopped));
                }
            }
            Q::Stream(StreamEvent::Available { dir: Dir::Uni }) => {
                let res = self.conns.get_mut(&handle).map(|c| c.flush_all());
                if let Some(Err(_)) = res {
                    self.close_conn(handle, Close::Violation(Violation::StreamStopped));
                }
            }
            Q::Stream(StreamEvent::Stopped { .. }) => {
                self.close_conn(handle, Close::Violation(Violation::StreamStopped));
            }
            Q::Stream(_) => {}
            Q::DatagramReceived => self.on_datagrams(handle),
        }
    }

    pub(super) fn on_datagrams(&mut self, handle: usize) {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        if conn.is_paused() {
            // Left in QUIC's datagram buffer until resumed.
            return;
        }
        let established = conn.phase == Phase::Established;
        let from = conn.remote;
        while let Some(d) = conn.quic.datagrams().recv() {
            match (established, from, d.first()) {
                (true, Some(from), Some(&channel)) => {
                    self.events.push_back(Event::MessageReceived {
                        from,
                        channel,
                        bytes: d.slice(1..),
                        reliability: Reliability::Unreliable,
                    });
                }
                _ => self.stats.dropped.unexpected += 1,
            }
        }
    }

    pub(super) fn on_received(
        &mut self,
        handle: usize,
        got: Vec<Received>,
        res: Result<(), StreamViolation>,
    ) {
        let mut acks = None;
        let mut delivered = 0;
        for r in got {
            match r {
                // A frame must be exactly one message: trailing bytes are
                // as malformed as missing ones.
                Received::Control(frame) => match postcard::take_from_bytes::<Control>(&frame) {
                    Ok((msg, [])) => self.on_control(handle, msg),
                    _ => {
                        self.close_conn(handle, Close::Violation(Violation::MalformedControl));
                        return;
                    }
                },
                Received::Message { channel, session, seq, bytes } => {
                    let Some(conn) = self.conns.get_mut(&handle) else { return };
                    match (conn.phase, conn.remote) {
                        (Phase::Established, Some(from)) => {
                            let incarnation = conn.remote_incarnation;
                            if !self.sessions.on_message(
                                from,
                                incarnation,
                                session,
                                channel,
                                seq,
                                &mut self.rng,
                            ) {
                                // Resent after a lost connection: seen already.
                                self.stats.duplicates_dropped += 1;
                                continue;
                            }
                            acks = Some(from);
                            delivered += bytes.len();
                            self.events.push_back(Event::MessageReceived {
                                from,
                                channel,
                                bytes,
                                reliability: Reliability::Reliable,
                            });
                        }
                        // Unreachable while the stream limit holds (no channel
                        // stream before admission); a closing connection's
                        // leftovers are dropped.
                        (Phase::Closing, _) => self.stats.dropped.unexpected += 1,
                        _ => {
                            self.close_conn(handle, Close::Violation(Violation::MessageBeforeAdmission));
                            return;
                        }
                    }
                }
            }
        }
        if let Some(from) = acks {
            self.owe_acks(from, delivered);
        }
        if let Err(v) = res {
            self.close_conn(handle, Close::Violation(v.into()));
        }
    }

    /// Reliable messages from `from` (`bytes` of them) were just handed to
    /// the application: acknowledge them with the next thing sent to `from`
    /// in this turn, or alone at the next timeout (due at once), or right
    /// now past [`ACK_BYTES`] (or a quarter of the send buffer limit, if
    /// smaller) delivered.
    fn owe_acks(&mut self, from: NodeId, bytes: usize) {
        let owed = self.acks_owed.entry(from).or_insert(0);
        *owed += bytes;
        if *owed >= ACK_BYTES.min(self.cfg.send_buffer_limit / 4) {
            self.send_owed_acks(from);
        }
    }

    /// Sends the acknowledgement owed to `to`, if any: one control message
    /// for everything delivered since the last (cumulative per channel), on
    /// its current connection. Without one the next delivery acknowledges
    /// it all.
    pub(super) fn send_owed_acks(&mut self, to: NodeId) {
        if self.acks_owed.remove(&to).is_none() {
            return;
        }
        let Some(&handle) = self.links.get(&to) else { return };
        if !self.conns.get(&handle).is_some_and(|c| c.phase == Phase::Established) {
            return;
        }
        let acks = self.sessions.take_acks(&to);
        if !acks.is_empty() {
            self.send_control_on(handle, proto::encode(&Control::Ack(acks)));
        }
    }

    /// Queues an encoded control frame on the control stream of the link
    /// to `to`, if there is one.
    fn send_control_to(&mut self, to: NodeId, frame: Bytes) {
        if let Some(&handle) = self.links.get(&to) {
            self.send_control_on(handle, frame);
        }
    }

    /// Queues an encoded control frame on connection `handle`'s control
    /// stream; a stream that cannot take it is a protocol violation.
    fn send_control_on(&mut self, handle: usize, frame: Bytes) {
        let Some(conn) = self.conns.get_mut(&handle) else { return };
        if conn.send_control(frame).is_err() {
            self.close_conn(handle, Close::Violation(Violation::ControlStreamUnavailable));
        } else {
            self.touch(handle);
        }
    }

    /// Carries out what the role logic asked for.
    pub(super) fn run_role_actions(&mut self) {
        if let Some(p) = self.role.peer() {
            self.stats.directory_resyncs = p.resyncs();
            let probes = p.probe_stats();
            self.stats.path_pings = probes.pings;
            self.stats.path_pongs = probes.pongs;
            self.stats.path_probe_bytes = probes.bytes;
            self.stats.dropped.probe_rejected = probes.rejected;
        }
        if let Some(s) = self.role.server() {
            self.stats.dropped.raft_rejected = s.raft_view().rejected;
        }
        while let Some(action) = self.role.poll_action() {
            match action {
                Action::Send { to, msg } => {
                    tracing::trace!(node = %self.name(), %to, kind = msg.kind(), "control message out");
                    self.send_control_to(to, proto::encode(&msg));
                }
                Action::Broadcast { to, msg } => {
                    tracing::trace!(node = %self.name(), recipients = to.len(), kind = msg.kind(), "control message out");
                    // Encoded once; every connection queues the same bytes.
                    let frame = proto::encode(&msg);
                    for id in to {
                        self.send_control_to(id, frame.clone());
                    }
                }
                Action::SendFrom { msgs, to } => {
                    tracing::trace!(node = %self.name(), recipients = to.len(), messages = msgs.len(), "control messages out");
                    // One buffer: message i starts at `starts[i]`, so each
                    // recipient's share is one slice of it.
                    let mut all = bytes::BytesMut::new();
                    let mut starts = Vec::with_capacity(msgs.len());
                    for msg in &msgs {
                        starts.push(all.len());
                        all.extend_from_slice(&proto::encode(msg));
                    }
                    let all = all.freeze();
                    for (id, first) in to {
                        if let Some(&start) = starts.get(first) {
                            self.send_control_to(id, all.slice(start..));
                        }
                    }
                }
                Action::Dial { expect, addr, join } => self.role_dial(expect, addr, join),
                Action::DialPeer(id) => {
                    let Some(addr) = self.role.peer_mut().map(|p| p.mapped(id)) else { continue };
                    self.role_dial(Expect::Node(id), addr, false);
                }
                Action::Close(id) => {
                    if let Some(&handle) = self.links.get(&id) {
                        self.close_conn(handle, Close::PeerOffline);
                    }
                }
                Action::Event(e) => self.events.push_back(e),
                Action::Datagram { to, data } => {
                    let source = self.reply_from.and_then(|(peer, ip)| (peer == to).then_some(ip));
                    self.out.push_back(OutDatagram {
                        destination: to,
                        source,
                        ecn: None,
                        data: Bytes::from(data),
                    });
                }
                Action::NotFound(peer) => {
                    self.dial_errors.insert(peer, ConnectError::NotFound);
                    self.settle_pending();
                }
                Action::PathReset(peer) => {
                    // The new path's RTT and capacity have nothing to do with
                    // the old one's: let QUIC measure afresh (in-flight data is
                    // kept and retransmitted as usual, so nothing is lost).
                    let now = self.now;
                    if let Some(&handle) = self.links.get(&peer)
                        && let Some(conn) = self.conns.get_mut(&handle)
                    {
                        conn.quic.path_changed(now);
                        self.touch(handle);
                    }
                }
            }
        }
    }

    /// A dial the role logic asked for; its outcome goes back to the role.
    pub(super) fn role_dial(&mut self, expect: Expect, addr: SocketAddr, join: bool) {
        let outcome = match expect {
            // Already connected, or a connection (either way) is being set
            // up: dialing again would only race it.
            Expect::Node(id) if self.links.contains_key(&id) || self.in_progress(&id) => {
                Some(DialOutcome::Superseded)
            }
            _ => self.dial(expect, addr, join, true).err().map(DialOutcome::Failed),
        };
        if let Some(outcome) = outcome {
            self.role.dial_done(self.now, expect, addr, &outcome);
        }
    }
}
