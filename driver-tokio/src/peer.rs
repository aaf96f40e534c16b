//! [`Peer`]: a handle on one remote node, with its own receive queues and
//! its path.

use crate::endpoint::{Endpoint, Message};
use bytes::Bytes;
use p2pcore::{NodeId, PathKind, Reliability, SendError};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// How a peer is reached now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PathView {
    /// Direct, punched, or relayed via which server.
    pub kind: PathKind,
    /// The connection's smoothed round-trip time, once it has one.
    pub rtt: Option<Duration>,
}

impl PathView {
    pub(crate) fn new(kind: PathKind, rtt: Option<Duration>) -> Self {
        Self { kind, rtt }
    }
}

/// A handle on one remote node (from [`Endpoint::peer`]): sends to it,
/// receives its messages per channel, tells its path. Keeps the endpoint
/// alive. Cheap to make; several may exist for one node.
///
/// The first [`Peer::recv`] on a channel routes that channel of this node
/// to this handle (and to its other handles): from then on those messages
/// skip [`Endpoint::recv`], including those already waiting there, so each
/// message is received once and in order. Dropping the handle gives what it
/// did not take back to the merged queue.
#[derive(Debug)]
pub struct Peer {
    endpoint: Endpoint,
    id: NodeId,
    /// The channels this handle routed to itself.
    routes: Mutex<Vec<(u8, Arc<Notify>)>>,
}

impl Peer {
    pub(crate) fn new(endpoint: Endpoint, id: NodeId) -> Self {
        Self { endpoint, id, routes: Mutex::new(Vec::new()) }
    }

    /// The remote's ID.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The endpoint this handle belongs to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Its name, while the directory (or a connection) knows it.
    pub fn name(&self) -> Option<String> {
        self.endpoint.with_node(|n| {
            n.peers()
                .into_iter()
                .find(|p| p.id == self.id)
                .map(|p| p.name)
                .or_else(|| n.links().find(|l| l.id == self.id).map(|l| l.name))
        })
    }

    /// Whether some server lists it (peers) or it is connected (servers).
    pub fn is_online(&self) -> bool {
        self.endpoint.with_node(|n| is_online(n, self.id))
    }

    /// Sends to it (see [`Endpoint::send`]).
    pub fn send(
        &self,
        channel: u8,
        bytes: impl Into<Bytes>,
        reliability: Reliability,
    ) -> Result<Option<u64>, SendError> {
        self.endpoint.send(self.id, channel, bytes, reliability)
    }

    /// Sends to it, waiting for room (see [`Endpoint::send_wait`]).
    /// Cancel-safe.
    pub async fn send_wait(
        &self,
        channel: u8,
        bytes: impl Into<Bytes>,
        reliability: Reliability,
    ) -> Result<Option<u64>, SendError> {
        self.endpoint.send_wait(self.id, channel, bytes, reliability).await
    }

    /// The next message it sent on `channel` (reliable ones in order), or
    /// `None` once the endpoint ended with nothing left. Its going offline
    /// does not end this: it may come back. Cancel-safe.
    pub async fn recv(&self, channel: u8) -> Option<Message> {
        let notify = self.route(channel);
        let id = self.id;
        loop {
            let mut ready = pin!(notify.notified());
            ready.as_mut().enable();
            if let Some(got) = self.endpoint.take(|inbox, resume| inbox.pop_route(id, channel, resume)) {
                return got;
            }
            ready.await;
        }
    }

    /// The next message on `channel`, if one waits (routes the channel to
    /// this handle, as [`Peer::recv`] does).
    pub fn try_recv(&self, channel: u8) -> Option<Message> {
        self.route(channel);
        let id = self.id;
        self.endpoint.take(|inbox, resume| inbox.pop_route(id, channel, resume)).flatten()
    }

    fn route(&self, channel: u8) -> Arc<Notify> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, n)) = routes.iter().find(|(c, _)| *c == channel) {
            return n.clone();
        }
        let (notify, _) = self.endpoint.shared().lock().inbox.route(self.id, channel);
        routes.push((channel, notify.clone()));
        notify
    }

    /// How it is reached now; `None` without a connection (or for a
    /// server, which is always reached directly: see [`Endpoint::links`]).
    pub fn path(&self) -> Option<PathView> {
        self.endpoint.with_node(|n| current_path(n, self.id))
    }

    /// Watches its path: sees every change (the latest, if several happened
    /// since it last looked), and ends when it goes offline (no server
    /// lists it any more) or the endpoint ends. Made while it is offline,
    /// the watcher has already ended; make a new one when it is back
    /// ([`p2pcore::Event::PeerOnline`]).
    pub fn path_watch(&self) -> PathWatch {
        let mut st = self.endpoint.shared().lock();
        let st = &mut *st;
        if st.watchers.is_none() || !is_online(&st.node, self.id) {
            return PathWatch { rx: None };
        }
        let current = current_path(&st.node, self.id);
        let tx = st.paths.entry(self.id).or_insert_with(|| watch::channel(current).0);
        PathWatch { rx: Some(tx.subscribe()) }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let routes = std::mem::take(self.routes.get_mut().unwrap_or_else(|p| p.into_inner()));
        if routes.is_empty() {
            return;
        }
        let shared = self.endpoint.shared();
        let mut gave_back = false;
        {
            let mut st = shared.lock();
            for (channel, _) in routes {
                gave_back |= st.inbox.unroute(self.id, channel);
            }
        }
        if gave_back {
            shared.merged_ready.notify_waiters();
        }
    }
}

fn is_online(node: &p2pcore::Node, id: NodeId) -> bool {
    node.is_connected(&id) || node.peers().iter().any(|p| p.id == id)
}

fn current_path(node: &p2pcore::Node, id: NodeId) -> Option<PathView> {
    let kind = node.link_table().into_iter().find(|l| l.id == id)?.path;
    Some(PathView::new(kind, crate::driver::rtt(node, &id)))
}

/// A watcher of one peer's path ([`Peer::path_watch`]).
#[derive(Debug)]
pub struct PathWatch {
    rx: Option<watch::Receiver<Option<PathView>>>,
}

impl PathWatch {
    /// The path as last seen (`None`: no path, or the watcher ended).
    pub fn current(&self) -> Option<PathView> {
        self.rx.as_ref().and_then(|rx| *rx.borrow())
    }

    /// Whether the watcher ended (the peer went offline, or the endpoint
    /// ended).
    pub fn is_ended(&self) -> bool {
        self.rx.is_none()
    }

    /// Waits for the next change: `Some(path)` (`Some(None)` while no path
    /// is available), or `None` once the watcher ended. Cancel-safe.
    pub async fn next(&mut self) -> Option<Option<PathView>> {
        let rx = self.rx.as_mut()?;
        if rx.changed().await.is_err() {
            self.rx = None;
            return None;
        }
        Some(*rx.borrow_and_update())
    }
}
