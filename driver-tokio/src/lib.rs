//! # p2pcore-tokio — an async p2pcore for Rust services
//!
//! An [`Endpoint`] is one [`p2pcore::Node`] on one UDP socket, driven by
//! **one tokio task** (the *driver*) that owns the socket. Every handle
//! ([`Endpoint`], [`Peer`]) talks to the node through a shared lock and
//! wakes the driver when it queued work, the way quinn's handles talk to its
//! endpoint driver: a send never waits for a round trip to another task, so
//! it fails fast with the core's typed [`SendError`] and returns the
//! message's sequence number at once.
//!
//! * **Binding**: [`Endpoint::bind`] (or [`Endpoint::from_data_dir`], with
//!   the identity and lock of the shared [`DataDir`]) binds a specific IP,
//!   `0.0.0.0` or dual-stack `[::]`, and uses quinn-udp's batched I/O
//!   (recvmmsg/GRO, GSO, source IP, ECN) through [`p2pcore_mio::net`], the
//!   same plumbing as the mio host. Outside a tokio runtime it returns
//!   [`Error::NoRuntime`] instead of panicking.
//! * **Sending**: [`Endpoint::send`] fails fast; [`Endpoint::send_wait`]
//!   waits for room in the send buffer (back-pressure) instead of failing
//!   with [`SendError::BufferFull`].
//! * **Receiving**: [`Endpoint::recv`] takes messages from anyone out of one
//!   merged queue; [`Endpoint::peer`] gives a [`Peer`] handle whose
//!   [`Peer::recv`] takes one channel of one peer (those messages then skip
//!   the merged queue, so each message is received exactly once). Received
//!   messages are held up to [`EndpointConfig::inbox_per_peer`] bytes per
//!   sender; beyond that the endpoint stops reading from that sender (QUIC
//!   flow control then holds the sender back) until the application catches
//!   up, so a slow consumer never means unbounded memory.
//! * **State**: [`Endpoint::online`] resolves once a server is connected and
//!   its directory arrived; watchers for the Master, the server set and
//!   network up/down; [`Endpoint::peers`], [`Endpoint::links`],
//!   [`Endpoint::stats`] snapshots; [`Endpoint::events`] streams every core
//!   event in order, with an explicit [`Lagged`] for a slow consumer.
//! * **The cluster's store** (peers): [`Endpoint::kv`] sends any
//!   [`KvRequest`] (get, prefix read, put, delete, transaction) and awaits
//!   its [`KvAnswer`]; [`Endpoint::get`], [`Endpoint::put`] and
//!   [`Endpoint::delete`] are the shortcuts; [`Endpoint::watch`] gives a
//!   [`KvWatch`] whose [`KvWatch::next`] yields the changes under a prefix,
//!   in order and without gaps. Failures are the core's typed [`KvError`].
//! * **Coordination** (peers): [`Endpoint::lock`] / [`Endpoint::try_lock`]
//!   give a [`Lock`] with a fencing token; [`Endpoint::campaign`] a
//!   [`Leadership`]; [`Endpoint::leader`] and [`Endpoint::watch_leader`]
//!   tell who leads; [`Endpoint::push`], [`Endpoint::pop`] (all or none) and
//!   [`Endpoint::watch_queue`] run queues; [`Endpoint::register`],
//!   [`Endpoint::query`] and [`Endpoint::watch_service`] a registry of live
//!   instances. What they hold is bound to a store session
//!   ([`Endpoint::session`]) and goes when it ends.
//! * **Shutdown**: [`Endpoint::close`] tells connected nodes and returns
//!   within [`HostConfig::close_timeout`] (in [`EndpointConfig::host`]); [`Endpoint::closed`] resolves
//!   when the endpoint ends for any reason; dropping every handle closes it
//!   in the background without blocking the runtime.
//!
//! ## Cancel safety
//!
//! Every `async fn` here is cancel-safe: dropping its future loses nothing.
//! [`Endpoint::send_wait`] hands the message to the node in one step or not
//! at all, so a dropped `send_wait` has either sent the whole message (and
//! returned its sequence number to nobody) or not sent it; the `recv`s take a
//! message off the queue only in the step that returns it.
//!
//! ## Example
//!
//! ```no_run
//! use p2pcore::{Config, Identity, Reliability, Role};
//! use p2pcore_tokio::{Endpoint, EndpointConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let identity = Identity::from_seed(Role::Peer, p2pcore_tokio::os_seed()?);
//! let mut config = Config::new(identity, "bot", p2pcore_tokio::os_seed()?);
//! config.bootstrap = vec!["203.0.113.10:7400".parse()?];
//! let endpoint = Endpoint::bind(EndpointConfig::new("0.0.0.0:0".parse()?), config).await?;
//! endpoint.online().await?;
//! for peer in endpoint.peers() {
//!     endpoint.send_wait(peer.id, 0, &b"hello"[..], Reliability::Reliable).await?;
//! }
//! while let Some(message) = endpoint.recv().await {
//!     println!("{} says {:?}", message.from, message.bytes);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The examples `chat`, `master_watch`, `matchmaking`, `game_cluster` and
//! `backend` run end to end on loopback
//! (`cargo run -p p2pcore-tokio --example chat`).

mod coord;
mod driver;
mod endpoint;
mod inbox;
mod kv;
mod peer;

pub use coord::{LeaderWatch, Leadership, Lock, QueueWatch, Registration, ServiceWatch};
pub use endpoint::{
    CloseReason, DriverStats, Endpoint, EndpointConfig, Error, Events, Lagged, MasterView, Message,
};
pub use kv::KvWatch;
pub use p2pcore_mio::{DataDir, DataDirError, HostConfig, os_seed};
pub use peer::{PathView, PathWatch, Peer};

// The core's types every user of this crate names.
pub use p2pcore::{
    COORD_PREFIX, CompareOp, Config, ConnectError, CoordError, CoordEvent, CoordRequest, CoordUpdate, Event,
    Instance, InstanceFilter, InstanceInfo, KvAnswer, KvCompare, KvEntry, KvError, KvEvent, KvEventKind,
    KvGuarantee, KvOptions, KvRequest, KvResponse, LeaderInfo, LinkInfo, MasterBasis, NodeId, NodeStats,
    PathKind, PeerInfo, QueueItem, Reliability, Role, SendError, ServerInfo,
};
