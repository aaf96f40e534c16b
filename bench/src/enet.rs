//! A small binding to ENet 1.3 (the C library from Debian's `libenet-dev`,
//! linked by `build.rs`), covering what the suite measures: one host per
//! thread, a connect, reliable and unsequenced packets, service and flush.
//!
//! Only the three structs the API hands out by value or reads are declared
//! (`ENetAddress`, `ENetEvent`, `ENetPacket`, as laid out in 1.3.17's
//! `enet.h`); hosts and peers stay opaque pointers.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::io;
use std::net::{SocketAddrV4, UdpSocket};
use std::sync::Once;

#[repr(C)]
struct EnetAddress {
    /// IPv4 address in network byte order.
    host: u32,
    /// Port in host byte order.
    port: u16,
}

#[repr(C)]
struct EnetPacket {
    reference_count: usize,
    flags: u32,
    data: *mut u8,
    data_length: usize,
    free_callback: Option<extern "C" fn(*mut EnetPacket)>,
    user_data: *mut c_void,
}

#[repr(C)]
struct EnetEvent {
    kind: u32,
    peer: *mut c_void,
    channel_id: u8,
    data: u32,
    packet: *mut EnetPacket,
}

const EVENT_CONNECT: u32 = 1;
const EVENT_DISCONNECT: u32 = 2;
const EVENT_RECEIVE: u32 = 3;

/// `ENET_PACKET_FLAG_RELIABLE`.
pub(crate) const RELIABLE: u32 = 1;
/// `ENET_PACKET_FLAG_UNSEQUENCED`: unreliable and unordered, like a QUIC
/// datagram.
pub(crate) const UNSEQUENCED: u32 = 1 << 1;

#[link(name = "enet")]
unsafe extern "C" {
    fn enet_initialize() -> i32;
    fn enet_host_create(
        address: *const EnetAddress,
        peer_count: usize,
        channel_limit: usize,
        incoming_bandwidth: u32,
        outgoing_bandwidth: u32,
    ) -> *mut c_void;
    fn enet_host_destroy(host: *mut c_void);
    fn enet_host_connect(
        host: *mut c_void,
        address: *const EnetAddress,
        channels: usize,
        data: u32,
    ) -> *mut c_void;
    fn enet_host_service(host: *mut c_void, event: *mut EnetEvent, timeout_ms: u32) -> i32;
    fn enet_host_check_events(host: *mut c_void, event: *mut EnetEvent) -> i32;
    fn enet_host_flush(host: *mut c_void);
    fn enet_packet_create(data: *const c_void, len: usize, flags: u32) -> *mut EnetPacket;
    fn enet_packet_destroy(packet: *mut EnetPacket);
    fn enet_peer_send(peer: *mut c_void, channel: u8, packet: *mut EnetPacket) -> i32;
}

static INIT: Once = Once::new();

/// A peer of a [`Host`]: valid while that host lives (ENet owns it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer(*mut c_void);

/// What [`Host::service`] returned.
#[derive(Debug)]
pub(crate) enum Event {
    Connect(Peer),
    Disconnect,
    /// A packet, copied out (as p2pcore hands over an owned message).
    Receive {
        peer: Peer,
        data: Vec<u8>,
    },
}

/// An ENet host, used from one thread at a time.
pub(crate) struct Host {
    raw: *mut c_void,
}

// SAFETY: an ENet host has no thread affinity; `Host` is moved to the
// thread that uses it and never shared (it is not `Sync`).
unsafe impl Send for Host {}
// SAFETY: a peer pointer is only dereferenced by ENet, through its host.
unsafe impl Send for Peer {}

fn address(addr: SocketAddrV4) -> EnetAddress {
    EnetAddress { host: u32::from_ne_bytes(addr.ip().octets()), port: addr.port() }
}

impl Host {
    /// A host on 127.0.0.1: listening on a free port when `listen`, else a
    /// client. Returns the host and its port (0 for a client).
    pub(crate) fn new(listen: bool, channels: usize) -> io::Result<(Self, u16)> {
        let mut rc = 0;
        // SAFETY: enet_initialize has no preconditions; Once runs it once.
        INIT.call_once(|| rc = unsafe { enet_initialize() });
        if rc != 0 {
            return Err(io::Error::other("enet_initialize failed"));
        }
        let (raw, port) = if listen {
            // ENet does not report an ephemeral port: take a free one.
            let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
            let addr = address(SocketAddrV4::new([127, 0, 0, 1].into(), port));
            // SAFETY: `addr` outlives the call; 0 bandwidths mean unlimited.
            (unsafe { enet_host_create(&addr, 64, channels, 0, 0) }, port)
        } else {
            // SAFETY: a null address makes a client host.
            (unsafe { enet_host_create(std::ptr::null(), 1, channels, 0, 0) }, 0)
        };
        if raw.is_null() {
            return Err(io::Error::other("enet_host_create failed"));
        }
        Ok((Self { raw }, port))
    }

    /// Starts connecting to a host on 127.0.0.1:`port`.
    pub(crate) fn connect(&mut self, port: u16, channels: usize) -> io::Result<Peer> {
        let addr = address(SocketAddrV4::new([127, 0, 0, 1].into(), port));
        // SAFETY: `self.raw` is a live host; `addr` outlives the call.
        let peer = unsafe { enet_host_connect(self.raw, &addr, channels, 0) };
        if peer.is_null() { Err(io::Error::other("enet_host_connect: no free peer")) } else { Ok(Peer(peer)) }
    }

    fn take(&mut self, event: &EnetEvent) -> Option<Event> {
        match event.kind {
            EVENT_CONNECT => Some(Event::Connect(Peer(event.peer))),
            EVENT_DISCONNECT => Some(Event::Disconnect),
            EVENT_RECEIVE => {
                // SAFETY: a receive event carries a live packet that we own
                // until we destroy it; `data` holds `data_length` bytes.
                let data = unsafe {
                    let p = &*event.packet;
                    let data = std::slice::from_raw_parts(p.data, p.data_length).to_vec();
                    enet_packet_destroy(event.packet);
                    data
                };
                Some(Event::Receive { peer: Peer(event.peer), data })
            }
            _ => None,
        }
    }

    /// Sends what is queued, then waits up to `timeout_ms` for an event.
    pub(crate) fn service(&mut self, timeout_ms: u32) -> io::Result<Option<Event>> {
        let mut event = EnetEvent {
            kind: 0,
            peer: std::ptr::null_mut(),
            channel_id: 0,
            data: 0,
            packet: std::ptr::null_mut(),
        };
        // SAFETY: `self.raw` is a live host and `event` a valid out-pointer.
        match unsafe { enet_host_service(self.raw, &mut event, timeout_ms) } {
            n if n < 0 => Err(io::Error::other("enet_host_service failed")),
            0 => Ok(None),
            _ => Ok(self.take(&event)),
        }
    }

    /// An event already received, without touching the socket.
    pub(crate) fn check_events(&mut self) -> Option<Event> {
        let mut event = EnetEvent {
            kind: 0,
            peer: std::ptr::null_mut(),
            channel_id: 0,
            data: 0,
            packet: std::ptr::null_mut(),
        };
        // SAFETY: as in `service`.
        match unsafe { enet_host_check_events(self.raw, &mut event) } {
            n if n <= 0 => None,
            _ => self.take(&event),
        }
    }

    /// Queues `data` to `peer` on `channel` with ENet packet `flags`.
    pub(crate) fn send(&mut self, peer: Peer, channel: u8, data: &[u8], flags: u32) -> io::Result<()> {
        // SAFETY: ENet copies `data` into a packet it allocates.
        let packet = unsafe { enet_packet_create(data.as_ptr().cast(), data.len(), flags) };
        if packet.is_null() {
            return Err(io::Error::other("enet_packet_create failed"));
        }
        // SAFETY: `peer` belongs to this live host; on success ENet owns
        // the packet, on failure we still do.
        if unsafe { enet_peer_send(peer.0, channel, packet) } < 0 {
            // SAFETY: the packet was not queued, so nothing else refers to it.
            unsafe { enet_packet_destroy(packet) };
            return Err(io::Error::other("enet_peer_send failed"));
        }
        Ok(())
    }

    /// Sends everything queued now.
    pub(crate) fn flush(&mut self) {
        // SAFETY: `self.raw` is a live host.
        unsafe { enet_host_flush(self.raw) }
    }

    /// Services until `peer`'s connection (a client's) or any connection
    /// (a listener's) is established.
    pub(crate) fn wait_connected(&mut self) -> io::Result<Peer> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Some(Event::Connect(p)) = self.service(10)? {
                return Ok(p);
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "ENet connection not established in 10 s"))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // SAFETY: the host is live and destroyed once; its peers and queued
        // packets go with it.
        unsafe { enet_host_destroy(self.raw) }
    }
}
