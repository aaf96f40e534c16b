//! The cluster's replicated store from async code: [`Endpoint::kv`] and its
//! shortcuts await the core's [`Event::KvDone`](p2pcore::Event::KvDone) for
//! their request, [`Endpoint::watch`] gives a [`KvWatch`] fed by
//! [`Event::KvWatch`](p2pcore::Event::KvWatch).
//!
//! The request is handed to the node and its answer's slot (a oneshot
//! sender, by the core's request id) registered under the shared lock in
//! one step, and the driver routes events under the same lock, so no answer
//! can come before its slot exists. A future dropped early removes its slot
//! (the request itself goes on in the core: a write may still be applied);
//! the endpoint's end drops every slot, which completes the futures with
//! [`KvError::Unavailable`] and ends the watches.

use crate::endpoint::{Endpoint, Shared};
use p2pcore::{KvAnswer, KvEntry, KvError, KvEvent, KvOptions, KvRequest, KvResponse};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;

/// Where the driver sends a store answer.
pub(crate) type AnswerSlot = oneshot::Sender<Result<KvAnswer, KvError>>;
/// Where the driver sends a watch's changes (an `Err` ends it).
pub(crate) type WatchSlot = mpsc::UnboundedSender<Result<Vec<KvEvent>, KvError>>;

/// Removes a request's slot when its future goes before the answer came.
struct Slot<'a> {
    shared: &'a Shared,
    id: u64,
    answered: bool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.shared.lock().kv.remove(&self.id);
        }
    }
}

impl Endpoint {
    /// Sends a request to the cluster's replicated store (peers only) with
    /// the default options (linearizable, 5 s to find a server, a leader
    /// and a quorum: see [`p2pcore::Node::kv`]) and waits for its answer.
    ///
    /// Fails at once for what the node refuses itself:
    /// [`KvError::NotAPeer`] on a server, [`KvError::TooLarge`] /
    /// [`KvError::Invalid`] for a request over the store's bounds,
    /// [`KvError::TooManyInFlight`] with 64 requests waiting; later with
    /// the store's answer ([`KvError::Unavailable`] when no quorum answered
    /// in time, [`KvError::StoreFull`], ...). After the endpoint ended, or
    /// when it ends first: [`KvError::Unavailable`].
    ///
    /// Cancel-safe in the sense that dropping the future loses nothing of
    /// the endpoint's (its answer's slot is removed), but the request is
    /// not recalled: a write may still be applied.
    pub async fn kv(&self, req: KvRequest) -> Result<KvAnswer, KvError> {
        self.kv_with(req, KvOptions::default()).await
    }

    /// [`Endpoint::kv`] with options: another timeout, or a read served by
    /// the nearest server once it applied a revision
    /// ([`KvOptions::with_at_least`]).
    pub async fn kv_with(&self, req: KvRequest, opts: KvOptions) -> Result<KvAnswer, KvError> {
        let (tx, rx) = oneshot::channel();
        let shared = self.shared();
        let id = {
            let mut st = shared.lock();
            let st = &mut *st;
            if st.ended.is_some() {
                return Err(KvError::Unavailable);
            }
            let id = st.node.kv_with(Instant::now(), req, opts)?;
            st.kv.insert(id, tx);
            id
        };
        shared.wake.notify_one();
        let mut slot = Slot { shared, id, answered: false };
        // The sender is dropped without an answer only when the endpoint
        // ended: the store cannot be reached any more.
        let answer = rx.await.unwrap_or(Err(KvError::Unavailable));
        slot.answered = true;
        answer
    }

    /// Reads one key: `Some(entry)` with its value, revisions and version,
    /// `None` when the store has no such key. Errors as [`Endpoint::kv`].
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<KvEntry>, KvError> {
        match self.kv(KvRequest::get(key)).await?.response {
            KvResponse::Get { entries, .. } => Ok(entries.into_iter().next()),
            _ => Err(unexpected("a read")),
        }
    }

    /// Writes `value` under `key` (creating or replacing it) and returns the
    /// store's revision that write created. Errors as [`Endpoint::kv`]; an
    /// empty key is [`KvError::Invalid`].
    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<u64, KvError> {
        let answer = self.kv(KvRequest::put(key, value)).await?;
        match answer.response {
            KvResponse::Put => Ok(answer.revision),
            _ => Err(unexpected("a put")),
        }
    }

    /// Deletes one key; true when it existed. Errors as [`Endpoint::kv`]
    /// (use [`Endpoint::kv`] with [`KvRequest::delete`] for the revision).
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<bool, KvError> {
        match self.kv(KvRequest::delete(key)).await?.response {
            KvResponse::Delete { deleted } => Ok(deleted > 0),
            _ => Err(unexpected("a delete")),
        }
    }

    /// Watches the keys under `prefix` (empty: every key) from revision
    /// `from_revision` on (0: from the next change the serving server
    /// applies after the watch reaches it; to miss nothing after a read,
    /// pass the read's revision + 1). Peers only: a server gets
    /// [`KvError::NotAPeer`]; a prefix over [`p2pcore::MAX_KEY_LEN`] is
    /// [`KvError::TooLarge`]; too many live watches
    /// [`KvError::TooManyInFlight`]. After the endpoint ended:
    /// [`KvError::Unavailable`].
    ///
    /// Not `async`: the watch is registered at once, and its changes come
    /// through [`KvWatch::next`]. The handle does not keep the endpoint
    /// alive; dropping it unwatches.
    pub fn watch(&self, prefix: impl Into<Vec<u8>>, from_revision: u64) -> Result<KvWatch, KvError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = self.shared_arc();
        let id = {
            let mut st = shared.lock();
            let st = &mut *st;
            if st.ended.is_some() {
                return Err(KvError::Unavailable);
            }
            let id = st.node.watch(Instant::now(), prefix, from_revision)?;
            st.kv_watches.insert(id, tx);
            id
        };
        shared.wake.notify_one();
        Ok(KvWatch { shared, id, rx: Some(rx) })
    }
}

/// An answer of another kind than its request: the core answers each
/// request with its own kind, so this is a bug there, reported as an error
/// rather than a panic in the application.
fn unexpected(what: &'static str) -> KvError {
    tracing::error!("the store answered {what} with another kind of answer");
    KvError::Invalid("the store answered with the wrong kind of answer (a p2pcore bug: please report it)")
}

/// A watch of the store's keys under a prefix ([`Endpoint::watch`]):
/// changes in revision order, each once, without gaps (also when the server
/// serving the watch is lost: the core resumes it at another).
///
/// Changes wait in an unbounded queue until taken, as the node's own
/// events do: their rate is the cluster's write rate, and dropping some
/// would break the watch's promise. Take them, or drop the handle (which
/// unwatches). It does not keep the endpoint alive.
pub struct KvWatch {
    shared: Arc<Shared>,
    id: u64,
    /// `None` once ended or unwatched.
    rx: Option<mpsc::UnboundedReceiver<Result<Vec<KvEvent>, KvError>>>,
}

impl std::fmt::Debug for KvWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvWatch").field("id", &self.id).field("ended", &self.is_ended()).finish()
    }
}

impl KvWatch {
    /// The core's watch id (the `id` of its
    /// [`Event::KvWatch`](p2pcore::Event::KvWatch) events in
    /// [`Endpoint::events`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next changes, oldest first (each [`KvEvent`]'s revision is its
    /// `entry.mod_revision`); `Some(Err(e))` once when the watch ends
    /// ([`KvError::Compacted`]: its start is no longer kept; read the
    /// current state and watch from its revision + 1); `None` after that,
    /// after [`KvWatch::unwatch`], or once the endpoint ended. Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<Vec<KvEvent>, KvError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Whether the watch ended (an error was reported, it was unwatched, or
    /// the endpoint ended and everything queued was taken).
    pub fn is_ended(&self) -> bool {
        self.rx.is_none()
    }

    /// Stops the watch: [`KvWatch::next`] returns `None` from now on
    /// (changes still queued are dropped). Doing it twice is fine.
    pub fn unwatch(&mut self) {
        if self.rx.take().is_none() {
            return;
        }
        {
            let mut st = self.shared.lock();
            // Still registered: not ended by the core or the endpoint.
            if st.kv_watches.remove(&self.id).is_some() && st.ended.is_none() {
                st.node.unwatch(Instant::now(), self.id);
            }
        }
        self.shared.wake.notify_one();
    }
}

impl Stream for KvWatch {
    type Item = Result<Vec<KvEvent>, KvError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(rx) = self.rx.as_mut() else { return Poll::Ready(None) };
        let item = std::task::ready!(rx.poll_recv(cx));
        if item.is_none() {
            // The driver dropped the sender: the watch ended (its error
            // was the last item) or the endpoint did.
            self.rx = None;
        }
        Poll::Ready(item)
    }
}

impl Drop for KvWatch {
    fn drop(&mut self) {
        self.unwatch();
    }
}

#[cfg(test)]
mod tests {
    use crate::{Endpoint, EndpointConfig};
    use p2pcore::{Config, Identity, KvError, KvOptions, KvRequest, Role};
    use std::time::Duration;

    /// A peer with no server: its requests wait until their timeout.
    async fn lonely_peer() -> Endpoint {
        let config = Config::new(Identity::from_seed(Role::Peer, [61; 32]), "lonely", [61; 32]);
        Endpoint::bind(EndpointConfig::new("127.0.0.1:0".parse().unwrap()), config).await.unwrap()
    }

    #[tokio::test]
    async fn a_dropped_request_or_watch_leaves_nothing_behind() {
        let ep = lonely_peer().await;
        let opts = KvOptions::default().with_timeout(Duration::from_secs(600));
        let waiting = tokio::time::timeout(Duration::from_millis(20), ep.kv_with(KvRequest::get("k"), opts));
        assert!(waiting.await.is_err(), "no server: nothing can answer");
        assert!(ep.shared().lock().kv.is_empty(), "the dropped future removed its slot");
        let watch = ep.watch("k", 0).unwrap();
        assert_eq!(ep.shared().lock().kv_watches.len(), 1);
        drop(watch);
        assert!(ep.shared().lock().kv_watches.is_empty(), "dropping the handle unwatched");
        ep.close().await;
    }

    #[tokio::test]
    async fn closing_completes_waiting_requests_and_ends_watches() {
        let ep = lonely_peer().await;
        let opts = KvOptions::default().with_timeout(Duration::from_secs(600));
        let waiting = tokio::spawn({
            let ep = ep.clone();
            async move { ep.kv_with(KvRequest::put("k", "v"), opts).await }
        });
        let mut watch = ep.watch("", 0).unwrap();
        // The request is in the table before the endpoint closes.
        while ep.shared().lock().kv.is_empty() {
            tokio::task::yield_now().await;
        }
        ep.close().await;
        let got = tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("completed").unwrap();
        assert_eq!(got, Err(KvError::Unavailable));
        assert!(watch.next().await.is_none(), "the watch ended with the endpoint");
        assert!(watch.is_ended());
        assert_eq!(ep.get("k").await, Err(KvError::Unavailable), "after the end: at once");
        assert!(matches!(ep.watch("", 0), Err(KvError::Unavailable)));
    }
}
