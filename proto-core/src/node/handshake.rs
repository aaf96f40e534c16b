//! Connection lifecycle after TLS: Hello / Welcome / Ready, admission,
//! duplicate resolution, establishment and teardown.
//!
//! ```text
//! dialer                                   acceptor
//!   | -- Hello {credential, uptime, join} -->  |  checks credential, duplicates,
//!   |                                          |  decides who is elder
//!   | <-- Welcome {credential, elder} -------  |  (or Refuse(reason))
//!   |  checks credential; established          |
//!   | -- Ready -------------------------------> |  established
//! ```
//!
//! The acceptor only considers the connection established on `Ready`, so if
//! the dialer rejects the acceptor's credential both sides see a refusal
//! rather than a connection that comes and goes. User messages the dialer
//! sends right after `Welcome` may overtake `Ready` (they travel on other
//! streams); the acceptor holds them until `Ready` arrives.

use super::*;
use crate::admission::{self, Side};
use crate::error::Violation;
use crate::server::election::dialer_is_elder;
use crate::server::{DialOutcome, LinkMeta};

impl Node {
    fn unix_now(&self) -> u64 {
        self.cfg.unix_time.unwrap_or(0) + self.uptime().as_secs()
    }

    fn exporter(&self, handle: usize, side: Side, prover: NodeId) -> Option<[u8; 32]> {
        let conn = self.conns.get(&handle)?;
        admission::exporter_input(conn.quic.crypto_session(), side, prover)
    }

    pub(super) fn on_tls_done(&mut self, handle: usize) {
        let my_id = self.id();
        let Some(conn) = self.conns.get_mut(&handle) else { return };
        let Some(remote) = quic::remote_id(&conn.quic) else {
            self.close_conn(handle, Close::Violation(Violation::NoIdentity));
            return;
        };
        conn.remote = Some(remote);
        conn.phase = Phase::Greeting;
        tracing::debug!(node = %self.cfg.name, handle, %remote, dialed = conn.dialed(), "TLS handshake done");
        // A relayed connection must come from the peer the relay frames named.
        let addr = conn.addr;
        if is_mapped(&addr) && self.role.peer().and_then(|p| p.peer_of(&addr)) != Some(remote) {
            self.close_conn(handle, Close::Violation(Violation::RelayedIdentityMismatch));
            return;
        }
        if remote == my_id {
            self.fail_dial_or_close(handle, ConnectError::SelfConnect, Close::Duplicate);
            return;
        }
        if !conn.dialed() {
            return;
        }
        // Dialed by address and it turns out we are already connected: keep the old one.
        if self.links.contains_key(&remote) && conn.expect() != Some(Expect::Node(remote)) {
            self.close_quietly(handle, Close::Duplicate);
            return;
        }
        let credential = admission::present(&self.cfg.admission, self.exporter(handle, Side::Dialer, my_id));
        let nonce = self.rng.next_u64();
        let Some(conn) = self.conns.get_mut(&handle) else { return };
        conn.nonce = nonce;
        let hello = Hello {
            nonce,
            protocol: PROTOCOL_VERSION,
            name: self.cfg.name.clone(),
            incarnation: self.incarnation,
            uptime_ms: self.now.saturating_duration_since(self.started).as_millis() as u64,
            credential,
            // A server's: where to dial it. A peer's: its interface
            // addresses, so a server's first directory row for it is already
            // what its first report will say (one delta per join, not two).
            addrs: match self.role.peer() {
                Some(_) => self.local_addrs.clone(),
                None => self.cfg.advertise.clone(),
            },
            join: conn.dialer().is_some_and(|d| d.join),
            lookup: self.cfg.peer.directory == crate::config::DirectoryMode::Lookup,
        };
        let ok = conn.open_control() && conn.send_control(proto::encode(&Control::Hello(hello))).is_ok();
        if !ok {
            self.close_conn(handle, Close::Violation(Violation::ControlStreamUnavailable));
        }
    }

    pub(super) fn on_control(&mut self, handle: usize, msg: Control) {
        let Some(conn) = self.conns.get(&handle) else { return };
        let (phase, dialed, remote) = (conn.phase, conn.dialed(), conn.remote);
        let welcomed = conn.acceptor().is_some_and(|a| a.welcomed);
        if phase != Phase::Established {
            tracing::debug!(node = %self.cfg.name, handle, ?phase, msg = msg.kind(), "handshake message");
        }
        match (phase, msg) {
            (Phase::Greeting, Control::Hello(h)) if !dialed && !welcomed => self.on_hello(handle, h),
            (Phase::Greeting, Control::Welcome(w)) if dialed => self.on_welcome(handle, w),
            (Phase::Greeting, Control::Ready) if !dialed && welcomed => self.establish(handle),
            (Phase::Greeting | Phase::Refusing, Control::Refuse(reason)) => self.on_refuse(handle, reason),
            (Phase::Established, Control::Ack(acks)) => {
                let Some(from) = remote else { return };
                for (channel, next) in acks {
                    self.sessions.on_ack(&from, channel, next);
                }
            }
            (Phase::Established, m @ (Control::Cluster(_) | Control::Peer(_) | Control::Path(_))) => {
                let Some(from) = remote else { return };
                if self.role.message(self.now, from, m) {
                    self.run_role_actions();
                } else {
                    self.close_conn(handle, Close::Violation(Violation::NotForRole));
                }
            }
            (Phase::Refusing | Phase::Closing, _) => {}
            _ => self.close_conn(handle, Close::Violation(Violation::OutOfTurn)),
        }
    }

    fn on_hello(&mut self, handle: usize, h: Hello) {
        let my_id = self.id();
        let Some(remote) = self.conns.get(&handle).and_then(|c| c.remote) else { return };
        if h.protocol != PROTOCOL_VERSION {
            self.refuse(handle, RefuseReason::ProtocolVersion { ours: PROTOCOL_VERSION, theirs: h.protocol });
            return;
        }
        if crate::identity::validate_name(&h.name).is_err() || h.addrs.len() > 16 {
            self.close_conn(handle, Close::Violation(Violation::InvalidHello));
            return;
        }
        let exported = self.exporter(handle, Side::Dialer, remote);
        if let Err(e) =
            admission::check(&self.cfg.admission, &h.credential, remote, exported, self.unix_now())
        {
            self.refuse(handle, RefuseReason::Admission(e));
            return;
        }
        // The incoming connection was dialed by `remote`.
        if let Some(c) = self.conns.get_mut(&handle) {
            c.nonce = h.nonce;
        }
        if let Some(&old) = self.links.get(&remote) {
            let old_inc = self.conns.get(&old).map_or(0, |c| c.remote_incarnation);
            if old_inc == h.incarnation && self.link_key(old) > self.link_key(handle) {
                self.refuse(handle, RefuseReason::Duplicate);
                return;
            }
            // Either the remote restarted, or it lost the old connection, or
            // this one wins the tie-break: it replaces the old one on `Ready`.
        } else if self.has_pending_dial(&remote, handle) && my_id > remote {
            // Simultaneous dials: the one dialed by the larger ID (ours) wins.
            self.refuse(handle, RefuseReason::Duplicate);
            return;
        }
        let my_uptime = self.uptime().as_millis() as u64;
        let credential =
            admission::present(&self.cfg.admission, self.exporter(handle, Side::Acceptor, my_id));
        let (name, incarnation, addrs) =
            (self.cfg.name.clone(), self.incarnation, self.cfg.advertise.clone());
        let Some(conn) = self.conns.get_mut(&handle) else { return };
        let half_rtt = conn.quic.rtt().as_millis() as u64 / 2;
        let remote_elder = dialer_is_elder(remote, h.uptime_ms, half_rtt, my_id, my_uptime);
        let welcome = Welcome {
            protocol: PROTOCOL_VERSION,
            name,
            incarnation,
            uptime_ms: my_uptime,
            observed: conn.quic.remote_address(),
            credential,
            addrs,
            elder: if remote_elder { remote } else { my_id },
        };
        conn.remote_name = h.name;
        conn.remote_incarnation = h.incarnation;
        conn.remote_addrs = h.addrs;
        conn.remote_elder = remote_elder;
        if let Some(a) = conn.acceptor_mut() {
            a.join_request = h.join;
            a.lookup = h.lookup;
            a.welcomed = true;
        }
        if conn.send_control(proto::encode(&Control::Welcome(welcome))).is_err() {
            self.close_conn(handle, Close::Violation(Violation::ControlStreamUnavailable));
        }
    }

    fn has_pending_dial(&self, remote: &NodeId, except: usize) -> bool {
        self.unestablished.iter().filter_map(|h| Some((*h, self.conns.get(h)?))).any(|(handle, c)| {
            handle != except
                && c.dialed()
                && matches!(c.phase, Phase::Handshaking | Phase::Greeting)
                && (c.remote == Some(*remote) || c.expect() == Some(Expect::Node(*remote)))
        })
    }

    fn on_welcome(&mut self, handle: usize, w: Welcome) {
        let my_id = self.id();
        let Some(remote) = self.conns.get(&handle).and_then(|c| c.remote) else { return };
        if w.protocol != PROTOCOL_VERSION
            || crate::identity::validate_name(&w.name).is_err()
            || w.addrs.len() > 16
        {
            self.close_conn(handle, Close::Violation(Violation::InvalidWelcome));
            return;
        }
        if w.elder != remote && w.elder != my_id {
            self.close_conn(handle, Close::Violation(Violation::InvalidWelcome));
            return;
        }
        let exported = self.exporter(handle, Side::Acceptor, remote);
        if let Err(e) =
            admission::check(&self.cfg.admission, &w.credential, remote, exported, self.unix_now())
        {
            let reason = RefuseReason::Admission(e.clone());
            self.refuse(handle, reason);
            self.notify_dial(handle, DialOutcome::Failed(ConnectError::NotAdmitted(e)));
            return;
        }
        let Some(conn) = self.conns.get_mut(&handle) else { return };
        conn.remote_name = w.name;
        conn.remote_incarnation = w.incarnation;
        conn.remote_addrs = w.addrs;
        conn.remote_elder = w.elder == remote;
        if let Some(d) = conn.dialer_mut() {
            d.observed = Some(w.observed);
        }
        if conn.send_control(proto::encode(&Control::Ready)).is_err() {
            self.close_conn(handle, Close::Violation(Violation::ControlStreamUnavailable));
            return;
        }
        self.establish(handle);
    }

    fn on_refuse(&mut self, handle: usize, reason: RefuseReason) {
        let Some(conn) = self.conns.get(&handle) else { return };
        let (dialed, remote, addr) = (conn.dialed(), conn.remote, conn.addr);
        if reason == RefuseReason::Duplicate {
            // The other connection between us wins; nothing failed.
            self.close_quietly(handle, Close::Duplicate);
            return;
        }
        // Refusals are reported on both sides, whoever dialed.
        if let Some(id) = remote {
            let addr = self.real_addr(Some(id), addr);
            self.events.push_back(Event::Refused { id, addr, reason: reason.clone(), by_remote: true });
        }
        if dialed {
            self.fail_dial_or_close(handle, ConnectError::Refused(reason), Close::Refused);
        } else {
            self.close_quietly(handle, Close::Refused);
        }
    }

    /// Refuses the remote: tells it why, reports it (unless it is a duplicate),
    /// and closes once the dialer has read the reason or the deadline passes.
    pub(super) fn refuse(&mut self, handle: usize, reason: RefuseReason) {
        tracing::debug!(node = %self.cfg.name, handle, ?reason, "refusing connection");
        let deadline = self.now + self.cfg.hello_timeout;
        let Some(conn) = self.conns.get_mut(&handle) else { return };
        let _ = conn.send_control(proto::encode(&Control::Refuse(reason.clone())));
        // Closing right away would discard the unsent Refuse.
        conn.phase = Phase::Refusing;
        conn.hello_deadline = Some(deadline);
        let (remote, addr) = (conn.remote, conn.addr);
        if reason != RefuseReason::Duplicate
            && let Some(id) = remote
        {
            let addr = self.real_addr(Some(id), addr);
            self.events.push_back(Event::Refused { id, addr, reason, by_remote: false });
        }
        self.touch(handle);
    }

    /// Orders duplicate connections between the same two nodes; both sides
    /// compute the same key, so they keep the same one: the connection dialed
    /// by the larger ID wins, then the larger dialer-chosen nonce.
    fn link_key(&self, handle: usize) -> (bool, u64) {
        let my_id = self.id();
        match self.conns.get(&handle) {
            Some(c) => {
                let remote = c.remote.unwrap_or(my_id);
                (if c.dialed() { my_id > remote } else { remote > my_id }, c.nonce)
            }
            None => (false, 0),
        }
    }

    pub(super) fn establish(&mut self, handle: usize) {
        let Some(remote) = self.conns.get(&handle).and_then(|c| c.remote) else { return };
        tracing::debug!(node = %self.cfg.name, handle, %remote, "connection established");
        if let Some(&old) = self.links.get(&remote)
            && old != handle
        {
            let same_boot = self.conns.get(&old).map(|c| c.remote_incarnation)
                == self.conns.get(&handle).map(|c| c.remote_incarnation);
            if same_boot && self.link_key(old) > self.link_key(handle) {
                // A duplicate that lost the tie-break.
                self.close_quietly(handle, Close::Duplicate);
                return;
            }
            if same_boot {
                // Same remote boot: swap connections without telling anyone.
                let now = self.now;
                if let Some(c) = self.conns.get_mut(&old) {
                    c.quic.close(
                        now,
                        VarInt::from_u32(close_code::DUPLICATE),
                        Bytes::from_static(b"duplicate"),
                    );
                    c.phase = Phase::Closing;
                }
                self.links.remove(&remote);
                self.touch(old);
                self.swap_link(handle);
                return;
            }
            // The remote restarted: the old connection is dead.
            self.replace(old);
        }
        self.admit(handle, remote);
        let Some(conn) = self.conns.get_mut(&handle) else { return };
        let name = conn.remote_name.clone();
        let addr = conn.addr;
        let meta = link_meta(remote, conn);
        self.links.insert(remote, handle);
        self.dial_errors.remove(&remote);
        let addr = self.real_addr(Some(remote), addr);
        self.events.push_back(Event::Connected { id: remote, name, addr });
        if !self.resume(remote, handle) {
            return;
        }
        self.notify_dial(handle, DialOutcome::Connected(remote));
        let observed = self.conns.get(&handle).and_then(|c| c.observed());
        self.role.link_up(self.now, &meta, observed);
        self.run_role_actions();
        self.touch(handle);
    }

    /// Makes `handle` the established connection to its remote, which already
    /// counts as connected (a duplicate swap): no user events, but the role
    /// logic hears of it so it can restate what the other side may have lost.
    fn swap_link(&mut self, handle: usize) {
        let Some(remote) = self.conns.get(&handle).and_then(|c| c.remote) else { return };
        self.admit(handle, remote);
        let Some(conn) = self.conns.get_mut(&handle) else { return };
        let meta = link_meta(remote, conn);
        let observed = conn.observed();
        self.links.insert(remote, handle);
        // What the old connection carried and the remote did not
        // acknowledge goes out again on this one (it drops duplicates).
        if !self.resume(remote, handle) {
            return;
        }
        self.role.link_up(self.now, &meta, observed);
        self.run_role_actions();
        self.notify_dial(handle, DialOutcome::Superseded);
        self.touch(handle);
    }

    /// `handle` became the connection to `remote`: reliable messages it has
    /// not acknowledged are written to it, in order per channel — unless the
    /// remote restarted, then they are reported instead. False if the
    /// connection had to be closed (the remote broke the protocol).
    fn resume(&mut self, remote: NodeId, handle: usize) -> bool {
        let Some(conn) = self.conns.get(&handle) else { return false };
        let incarnation = conn.remote_incarnation;
        let (failed, session, resend) = self.sessions.link_up(remote, incarnation, &mut self.rng);
        self.report_failed(remote, failed, SendFailure::PeerRestarted);
        if !resend.is_empty() {
            tracing::debug!(node = %self.cfg.name, %remote, messages = resend.len(), "resending unacknowledged messages");
            self.stats.messages_resent += resend.len() as u64;
        }
        for (channel, seq, bytes) in resend {
            let Some(conn) = self.conns.get_mut(&handle) else { return false };
            if conn.send_reliable(channel, session, seq, bytes).is_err() {
                self.close_conn(handle, Close::Violation(Violation::StreamStopped));
                return false;
            }
        }
        true
    }

    /// Reports messages given up on, one event per channel.
    pub(super) fn report_failed(&mut self, to: NodeId, failed: Vec<session::Failed>, reason: SendFailure) {
        for f in failed {
            tracing::debug!(node = %self.cfg.name, %to, channel = f.channel, messages = f.messages, %reason, "reliable messages given up on");
            self.stats.messages_failed += f.messages as u64;
            self.events.push_back(Event::SendFailed {
                to,
                channel: f.channel,
                first: f.first,
                last: f.last,
                messages: f.messages,
                reason: reason.clone(),
            });
        }
    }

    /// The remote of `handle` is admitted: the connection carries user traffic
    /// from now on, so it gets its full limits (channel streams, receive
    /// window, control messages sized for the remote's role) and stops
    /// counting as a handshake.
    fn admit(&mut self, handle: usize, remote: NodeId) {
        self.release_handshake(handle);
        self.unestablished.remove(&handle);
        let window = self.cfg.limits.receive_window;
        let Some(conn) = self.conns.get_mut(&handle) else { return };
        conn.phase = Phase::Established;
        conn.hello_deadline = None;
        let max_control = match remote.role() {
            Role::Server => proto::MAX_CONTROL_MESSAGE,
            Role::Peer => proto::MAX_PEER_CONTROL,
        };
        conn.admit(max_control, MAX_CHANNEL_STREAMS, window);
        conn.set_paused(self.recv_paused.contains(&remote));
    }

    /// Tells the role logic how one of its dials ended (once per connection).
    pub(super) fn notify_dial(&mut self, handle: usize, outcome: DialOutcome) {
        let Some(conn) = self.conns.get_mut(&handle) else { return };
        let addr = conn.addr;
        let Some(dialer) = conn.dialer_mut() else { return };
        if dialer.reported {
            return;
        }
        dialer.reported = true;
        let expect = dialer.expect;
        self.role.dial_done(self.now, expect, addr, &outcome);
        self.run_role_actions();
    }

    /// Reports the end of an established link to the user and the role logic.
    fn link_down(&mut self, handle: usize, id: NodeId, reason: DisconnectReason) {
        if self.links.get(&id) != Some(&handle) {
            // Not the connection in use (a duplicate already swapped out).
            return;
        }
        self.links.remove(&id);
        self.sessions.link_down(id, self.now);
        self.events.push_back(Event::Disconnected { id, reason });
        self.role.link_down(self.now, id);
        self.run_role_actions();
        self.reconnect_waiting();
    }

    /// Asks the peer role to reconnect to peers that reliable messages wait
    /// for (the peer dials by ID once the other one is in the directory;
    /// servers and nodes dialed by address are redialed by whoever dialed
    /// them). Called when a link goes and every `session::RECONNECT_EVERY`
    /// while messages wait.
    pub(super) fn reconnect_waiting(&mut self) {
        if self.closing || self.role.peer().is_none() {
            return;
        }
        let waiting: Vec<NodeId> = self
            .sessions
            .waiting()
            .filter(|id| id.role() == Role::Peer && !self.links.contains_key(id) && !self.in_progress(id))
            .collect();
        if waiting.is_empty() {
            return;
        }
        for id in waiting {
            if let Some(p) = self.role.peer_mut() {
                p.want(id);
            }
        }
        self.run_role_actions();
    }

    /// Closes an established connection superseded by a newer one.
    pub(super) fn replace(&mut self, old: usize) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(&old) else { return };
        let id = conn.remote;
        conn.quic.close(now, VarInt::from_u32(close_code::REPLACED), Bytes::from_static(b"replaced"));
        conn.phase = Phase::Closing;
        if let Some(id) = id {
            // The replacement is established right after; the role logic sees a
            // brief down/up, which is what a restart is.
            self.link_down(old, id, DisconnectReason::Replaced);
        }
        self.touch(old);
    }

    /// Closes a connection without telling the user (a losing duplicate, a
    /// refusal already reported).
    pub(super) fn close_quietly(&mut self, handle: usize, why: Close) {
        let now = self.now;
        if let Some(conn) = self.conns.get_mut(&handle) {
            conn.quic.close(now, VarInt::from_u32(why.code()), Bytes::from(why.to_string()));
            conn.phase = Phase::Closing;
        }
        self.notify_dial(handle, DialOutcome::Superseded);
        self.touch(handle);
        self.settle_pending();
    }

    /// Closes a connection and reports it: `Disconnected` if it was
    /// established, `ConnectFailed` if it was our dial in progress.
    pub(super) fn close_conn(&mut self, handle: usize, why: Close) {
        let error = why.connect_error();
        self.fail_dial_or_close(handle, error, why);
    }

    pub(super) fn fail_dial_or_close(&mut self, handle: usize, error: ConnectError, why: Close) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(&handle) else { return };
        if conn.phase == Phase::Closing {
            return;
        }
        let phase = conn.phase;
        tracing::debug!(node = %self.cfg.name, handle, ?phase, code = why.code(), reason = %why, "closing connection");
        conn.quic.close(now, VarInt::from_u32(why.code()), Bytes::from(why.to_string()));
        conn.phase = Phase::Closing;
        let (dialed, remote, expect, addr, internal) =
            (conn.dialed(), conn.remote, conn.expect(), conn.addr, conn.internal());
        if phase == Phase::Established {
            if let Some(id) = remote {
                self.link_down(handle, id, why.disconnect_reason());
            }
        } else if dialed {
            self.dial_failed(handle, expect.and_then(|e| e.node()).or(remote), addr, internal, error);
        }
        self.touch(handle);
        self.settle_pending();
    }

    /// Our dial `handle` to `addr` (meant for `id`) failed: tell the user unless
    /// the role logic made it, and tell the role logic.
    fn dial_failed(
        &mut self,
        handle: usize,
        id: Option<NodeId>,
        addr: SocketAddr,
        internal: bool,
        error: ConnectError,
    ) {
        if let Some(id) = id {
            // Messages waiting for this peer are reported with the real cause.
            self.dial_errors.insert(id, error.clone());
        }
        if !internal {
            let addr = self.real_addr(id, addr);
            self.events.push_back(Event::ConnectFailed { id, addr, error: error.clone() });
        }
        self.notify_dial(handle, DialOutcome::Failed(error));
    }

    pub(super) fn on_lost(&mut self, handle: usize, reason: ConnectionError) {
        let Some(conn) = self.conns.get_mut(&handle) else { return };
        if conn.phase == Phase::Closing {
            return;
        }
        let phase = conn.phase;
        tracing::debug!(node = %self.cfg.name, handle, ?phase, %reason, "connection lost");
        conn.phase = Phase::Closing;
        let (dialed, remote, expect, addr, internal) =
            (conn.dialed(), conn.remote, conn.expect(), conn.addr, conn.internal());
        let met = conn.dialer().and_then(|d| d.met.get()).cloned();
        if phase == Phase::Established {
            if let Some(id) = remote {
                self.link_down(handle, id, disconnect_reason(&reason));
            }
        } else if dialed {
            let error = connect_error(&reason, expect, met.as_ref());
            self.dial_failed(handle, expect.and_then(|e| e.node()).or(remote), addr, internal, error);
        }
        self.settle_pending();
    }

    /// Fails messages that wait for a first connection when none is left in
    /// progress. (Messages to a node that was connected wait for the resume
    /// window instead: a failed redial during an outage is not the end.)
    pub(super) fn settle_pending(&mut self) {
        let stale: Vec<NodeId> = self
            .sessions
            .with_outstanding()
            .into_iter()
            .filter(|id| {
                !self.sessions.was_connected(id) && !self.links.contains_key(id) && !self.on_the_way(id)
            })
            .collect();
        for to in stale {
            // The dial's own failure, when there was one; otherwise the
            // peer left the directory before any dial could be made.
            let error = self.dial_errors.remove(&to).unwrap_or(ConnectError::PeerOffline);
            let failed = self.sessions.fail(&to, self.now);
            self.report_failed(to, failed, SendFailure::Connect(error));
        }
    }
}

/// What the role logic learns about an established connection.
fn link_meta(remote: NodeId, conn: &conn::Conn) -> LinkMeta {
    LinkMeta {
        id: remote,
        name: conn.remote_name.clone(),
        incarnation: conn.remote_incarnation,
        remote_addr: conn.quic.remote_address(),
        addrs: conn.remote_addrs.clone(),
        elder: conn.remote_elder,
        join: conn.acceptor().is_some_and(|a| a.join_request),
        lookup: conn.acceptor().is_some_and(|a| a.lookup),
        probe_key: is_mapped(&conn.addr).then(|| quic::probe_key(&conn.quic)).flatten(),
    }
}

pub(super) fn disconnect_reason(e: &ConnectionError) -> DisconnectReason {
    match e {
        ConnectionError::TimedOut => DisconnectReason::TimedOut,
        ConnectionError::ApplicationClosed(c) => {
            let code = c.error_code.into_inner();
            if code == u64::from(close_code::REPLACED) {
                DisconnectReason::Replaced
            } else {
                DisconnectReason::ClosedByRemote {
                    code,
                    reason: String::from_utf8_lossy(&c.reason).into_owned(),
                }
            }
        }
        ConnectionError::Reset => DisconnectReason::Reset,
        ConnectionError::LocallyClosed => DisconnectReason::ClosedByUser,
        other => DisconnectReason::Transport { code: transport_code(other) },
    }
}

/// The QUIC transport error code behind a connection error that is not an
/// application close, a timeout or a reset.
fn transport_code(e: &ConnectionError) -> u64 {
    match e {
        ConnectionError::TransportError(t) => t.code.into(),
        ConnectionError::ConnectionClosed(c) => c.error_code.into(),
        // RFC 9000 §20.1: CONNECTION_ID_LIMIT_ERROR, PROTOCOL_VIOLATION, INTERNAL_ERROR.
        ConnectionError::CidsExhausted => 0x09,
        ConnectionError::VersionMismatch => 0x0a,
        _ => 0x01,
    }
}

pub(super) fn connect_error(
    e: &ConnectionError,
    expect: Option<Expect>,
    met: Option<&Result<NodeId, CertError>>,
) -> ConnectError {
    match (met, expect) {
        (Some(Ok(found)), Some(Expect::Node(expected))) if *found != expected => {
            return ConnectError::WrongNode { expected, found: *found };
        }
        (Some(Ok(found)), Some(Expect::AnyOf(role))) if found.role() != role => {
            return ConnectError::WrongRole { expected: role, found: *found };
        }
        (Some(Err(cert)), _) => return ConnectError::BadCertificate(cert.clone()),
        _ => {}
    }
    match e {
        ConnectionError::TimedOut => ConnectError::TimedOut,
        ConnectionError::ApplicationClosed(c) => ConnectError::ClosedByRemote {
            code: c.error_code.into_inner(),
            reason: String::from_utf8_lossy(&c.reason).into_owned(),
        },
        ConnectionError::Reset => ConnectError::Reset,
        ConnectionError::LocallyClosed => ConnectError::Cancelled,
        ConnectionError::CidsExhausted => ConnectError::OutOfConnectionIds,
        other => ConnectError::Transport { code: transport_code(other) },
    }
}

/// Why this node closes a connection: the close code and text the remote
/// receives, and what the user is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum Close {
    /// The remote broke the protocol.
    #[error("protocol violation: {0}")]
    Violation(Violation),
    /// [`Node::disconnect`].
    #[error("disconnected by user")]
    User,
    /// [`Node::close`].
    #[error("node shutting down")]
    Shutdown,
    /// The remote peer left the directory.
    #[error("peer went offline")]
    PeerOffline,
    /// Another connection between the same two nodes is kept.
    #[error("duplicate")]
    Duplicate,
    /// The connection was refused after the handshake.
    #[error("refused")]
    Refused,
    /// The Hello/Welcome exchange did not finish in time.
    #[error("no hello")]
    HelloTimeout,
}

impl Close {
    fn code(&self) -> u32 {
        match self {
            Close::Violation(_) => close_code::PROTOCOL_VIOLATION,
            Close::User | Close::Shutdown | Close::PeerOffline => close_code::SHUTDOWN,
            Close::Duplicate => close_code::DUPLICATE,
            Close::Refused => close_code::REFUSED,
            Close::HelloTimeout => close_code::HELLO_TIMEOUT,
        }
    }

    /// What a dial that ends this way failed with.
    fn connect_error(&self) -> ConnectError {
        match self {
            Close::Violation(v) => ConnectError::ProtocolViolation(*v),
            Close::User => ConnectError::Cancelled,
            Close::Shutdown => ConnectError::ShuttingDown,
            Close::PeerOffline => ConnectError::PeerOffline,
            Close::HelloTimeout => ConnectError::TimedOut,
            // Refusals and duplicates are reported before closing (as
            // `Refused`, or not at all); this is what the dial failed with.
            Close::Duplicate | Close::Refused => ConnectError::Cancelled,
        }
    }

    /// What the user is told when an established connection ends this way.
    fn disconnect_reason(&self) -> DisconnectReason {
        match self {
            Close::Violation(v) => DisconnectReason::ProtocolViolation(*v),
            Close::User => DisconnectReason::ClosedByUser,
            Close::Shutdown => DisconnectReason::ShuttingDown,
            Close::PeerOffline => DisconnectReason::PeerOffline,
            // Established connections are only closed as duplicates when a
            // newer one replaces them; refusals and Hello timeouts happen
            // before establishment.
            Close::Duplicate | Close::Refused | Close::HelloTimeout => DisconnectReason::Replaced,
        }
    }
}
