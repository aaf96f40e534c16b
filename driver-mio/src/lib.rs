//! # p2pcore-mio — a UDP host for p2pcore
//!
//! A [`Host`] is one [`p2pcore::Node`] on one UDP socket, driven by a mio
//! event loop: the host every real deployment starts from (the server
//! daemon, the C ABI and custom engine loops stand on it). It is thin: it
//! reads the clock, moves datagrams between the socket and the node, and
//! sleeps until the node's next deadline; every protocol decision is the
//! core's.
//!
//! * **Batched I/O** through quinn-udp: recvmmsg and GRO into receive
//!   buffers allocated once, split by the segment stride; sends with GSO
//!   (a whole `Transmit::segment_size` batch per system call), the source
//!   IP the core asks for (IP_PKTINFO) and ECN bits. A turn reads a bounded
//!   number of datagrams for a bounded time, so a flood cannot starve
//!   timers or the caller's frame. A full socket buffer keeps the transmit
//!   until the socket is writable; refused datagrams (unreachable,
//!   too large) are counted and dropped, as UDP may.
//! * **Addresses**: bound to one IP, `0.0.0.0` or dual-stack `[::]`; the
//!   interface addresses are handed to the node at start and re-read every
//!   [`HostConfig::local_addrs_interval`] (5 s).
//! * **A data directory** ([`DataDir`]) keeps the identity across restarts
//!   and locks out a second process; every host kind uses this one. A
//!   server bound with [`Host::bind_in`] also keeps its Raft state, and so
//!   the replicated store, there ([`RaftStore`], `raft.redb`, synced before
//!   it is confirmed unless [`HostConfig::raft_fsync`] is off).
//!
//! ## Three ways to drive it
//!
//! A daemon blocks in [`Host::run`] until closed (here by a [`Closer`] from
//! another thread, as a signal handler would):
//!
//! ```no_run
//! use p2pcore::{Event, Role};
//! use p2pcore_mio::{DataDir, Host, HostConfig};
//!
//! let dir = DataDir::open("/var/lib/p2pcore", Role::Server)?;
//! let host = HostConfig::new("0.0.0.0:7400".parse()?);
//! let mut server = Host::bind_in(host, &dir, dir.config("eu-1")?)?; // keeps its Raft state in dir
//! let closer = server.closer(); // e.g. moved into a SIGTERM handler
//! server.run(|_host, event| {
//!     if let Event::MasterChanged { .. } = event {
//!         println!("{event:?}");
//!     }
//! })?;
//! # drop(closer);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A game loop calls [`Host::service`] once per frame, then drains events
//! (zero waits for nothing; a frame time paces the loop):
//!
//! ```no_run
//! use p2pcore::{Event, Reliability, Role};
//! use p2pcore_mio::{DataDir, Host, HostConfig};
//! use std::time::Duration;
//!
//! let dir = DataDir::open("save/net", Role::Peer)?;
//! let mut config = dir.config("player-1")?;
//! config.bootstrap = vec!["203.0.113.10:7400".parse()?];
//! let mut host = Host::bind(HostConfig::new("0.0.0.0:0".parse()?), config)?;
//! let mut events = Vec::new();
//! loop {
//!     host.service(Duration::ZERO)?; // never blocks
//!     host.drain_events(&mut events);
//!     for event in events.drain(..) {
//!         if let Event::MessageReceived { from, channel, bytes, .. } = event {
//!             host.send(from, channel, bytes, Reliability::Reliable)?; // echo
//!         }
//!     }
//!     // ... simulate and render the frame ...
//!     # break;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A service hands the host to its own thread with [`Host::spawn`] and
//! commands it through a cloneable [`Handle`]:
//!
//! ```no_run
//! use p2pcore::{Event, Reliability, Role};
//! use p2pcore_mio::{DataDir, Host, HostConfig};
//!
//! let dir = DataDir::open("/var/lib/bot", Role::Peer)?;
//! let mut config = dir.config("bot")?;
//! config.bootstrap = vec!["203.0.113.10:7400".parse()?];
//! let (handle, events) = Host::bind(HostConfig::new("[::]:0".parse()?), config)?.spawn()?;
//! while let Some(event) = events.recv() {
//!     if let Event::PeerOnline { id, .. } = event {
//!         handle.send(id, 0, &b"hello"[..], Reliability::Reliable)?;
//!     }
//! }
//! handle.close()?; // bounded: at most HostConfig::close_timeout
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The examples (`cargo run -p p2pcore-mio --example game_loop`, `daemon`,
//! `thread`) run each mode end to end on loopback.
//!
//! ## Portability
//!
//! mio and quinn-udp carry the platform work (epoll, kqueue, IOCP;
//! recvmmsg/GSO where Linux has them, plain sendmsg elsewhere).
//! Interface listing uses `if-addrs` (Unix, Apple, Android, Windows); file
//! modes of the data directory are Unix-only with the platform's defaults
//! elsewhere; the data directory's lock is the operating system's file lock
//! on every platform. Only Linux is tested here.

mod data_dir;
mod host;
mod local_addrs;
pub mod net;
mod raft_store;
mod thread;

pub use data_dir::{DataDir, DataDirError, os_seed};
pub use host::{Closer, Host, HostConfig, HostError, HostStats, Wakeup};
pub use raft_store::{LAZY_COMMITS, RAFT_FILE, RaftStore, RaftStoreError, RaftTable};
pub use std::sync::mpsc::TryRecvError;
pub use thread::{EventReceiver, Handle, HandleError, RecvTimeoutError, SpawnOptions};
