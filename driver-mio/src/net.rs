//! Socket plumbing every p2pcore host shares (this crate's [`Host`] and the
//! tokio driver): a UDP socket set up by socket2 (dual-stack when bound to
//! `[::]`), and [`UdpBatch`], quinn-udp's batched, metadata-carrying I/O
//! (recvmmsg/GRO with the destination IP and ECN bits of every datagram;
//! sendmsg with GSO, a source IP and ECN bits) over any socket type that
//! exposes its descriptor (mio's, tokio's, std's). A [`Host`] needs none of
//! this directly.
//!
//! Addresses are canonical on the core's side: a dual-stack socket reports
//! IPv4 senders as IPv4-mapped IPv6 addresses, which are turned back into
//! IPv4 before the core sees them, and IPv4 destinations are mapped again on
//! the way out (what quinn's endpoint does too), so one remote never has two
//! spellings.
//!
//! [`Host`]: crate::Host

use bytes::BytesMut;
use p2pcore::{Config, Ecn, Role, Transmit};
/// quinn-udp's borrowed socket, which [`UdpBatch`] reads and writes
/// through (`UdpSockRef::from(&socket)` for any socket type with a descriptor).
pub use quinn_udp::UdpSockRef;
use quinn_udp::{RecvMeta, UdpSocketState};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};

/// Largest UDP payload over IPv4 or IPv6 without jumbograms; a GRO batch
/// never exceeds it either.
const MAX_DATAGRAM: usize = 65_527;

/// Largest datagram a GSO batch is planned for: the core's QUIC packets
/// are 1,200 bytes (path MTU discovery is off, as relayed paths need) plus
/// a relay header, well under an Ethernet MTU.
const MAX_SEGMENT: usize = 1500;

/// Most segments one GSO batch may carry: the kernel refuses a batch whose
/// total exceeds one UDP datagram's limit (EMSGSIZE), and quinn-udp
/// reports the kernel's segment limit (64 on Linux), not that byte limit.
/// Found by the loopback bench: uncapped 64 × 1,229-byte batches were
/// refused and lost.
const MAX_GSO_SEGMENTS: usize = 65_507 / MAX_SEGMENT;

/// Size of the arena received datagrams are copied into (see
/// `Socket::arena`).
const ARENA: usize = 256 * 1024;

/// One received datagram, ready for [`p2pcore::Node::handle_datagram`].
#[derive(Debug)]
pub struct Datagram {
    /// Its source.
    pub remote: SocketAddr,
    /// The local IP it arrived on, where the platform reports it.
    pub local: Option<IpAddr>,
    /// The ECN codepoint of its IP header.
    pub ecn: Option<Ecn>,
    /// Its bytes.
    pub data: BytesMut,
}

/// Where and how one transmit goes: the fields of the core's [`Transmit`].
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// Where to.
    pub destination: SocketAddr,
    /// The local IP to send from, if it matters.
    pub source: Option<IpAddr>,
    /// ECN codepoint to set.
    pub ecn: Option<Ecn>,
    /// Bytes in the buffer.
    pub size: usize,
    /// GSO segment size, for a batch.
    pub segment_size: Option<usize>,
}

impl From<Transmit> for Out {
    fn from(t: Transmit) -> Self {
        Self {
            destination: t.destination,
            source: t.source,
            ecn: t.ecn,
            size: t.size,
            segment_size: t.segment_size,
        }
    }
}

/// What became of a send. Exhaustive on purpose: every host must handle
/// each case (a new one would be a breaking change to how hosts send).
#[derive(Debug)]
pub enum SendOutcome {
    /// Handed to the kernel.
    Sent,
    /// The socket buffer is full: keep the transmit and wait for writability.
    WouldBlock,
    /// The kernel refused it (unreachable network, message too large for
    /// the interface, a GSO batch the NIC cannot take, ...). UDP promises
    /// nothing, QUIC recovers; the host counts it and moves on.
    Dropped(io::Error),
}

/// Binds a non-blocking UDP socket to `addr` for a host. An unspecified
/// IPv6 address (`[::]`) is bound dual-stack on every platform (Windows and
/// the BSDs default to IPv6-only). Buffer sizes are requests: the operating
/// system may grant less.
pub fn bind(
    addr: SocketAddr,
    recv_buffer: Option<usize>,
    send_buffer: Option<usize>,
) -> io::Result<std::net::UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // Best effort: a host without IPv4 refuses, and then `[::]` is
        // simply IPv6 only.
        let _ = sock.set_only_v6(false);
    }
    sock.set_nonblocking(true)?;
    if let Some(bytes) = recv_buffer {
        sock.set_recv_buffer_size(bytes)?;
    }
    if let Some(bytes) = send_buffer {
        sock.set_send_buffer_size(bytes)?;
    }
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Whether `socket` is IPv6 and carries IPv4 too (dual-stack).
pub fn is_dual_stack(socket: &std::net::UdpSocket) -> bool {
    socket.local_addr().is_ok_and(|a| a.is_ipv6())
        && socket2::SockRef::from(socket).only_v6().is_ok_and(|only| !only)
}

/// The addresses a socket bound to `bound` (its real local address) can be
/// reached at, for [`p2pcore::Node::set_local_addrs`]: the bound IP, or for
/// a wildcard the interface addresses of its family (both families when
/// dual-stack), without loopback (unless bound to it) and link-local ones.
pub fn local_addrs(bound: SocketAddr, dual_stack: bool) -> Vec<SocketAddr> {
    crate::local_addrs::discover(bound, dual_stack)
}

/// Completes a node's configuration with what only its host knows, before
/// `Node::new`: the wall-clock time at start (`unix_time`, when unset), and
/// for a server without `advertise` addresses, `local_addrs` (the bound
/// address, or for a wildcard the interface addresses). Every host kind
/// calls this, so a server advertises the same addresses whichever driver
/// runs it.
pub fn complete_config(config: &mut Config, local_addrs: &[SocketAddr]) {
    if config.unix_time.is_none() {
        config.unix_time = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs());
    }
    if config.identity.role() == Role::Server && config.advertise.is_empty() {
        config.advertise = local_addrs.to_vec();
    }
}

/// quinn-udp's batched I/O with the buffers it needs, for one socket:
/// receive buffers allocated once, an arena the datagrams handed to the core
/// are split from, and the address mapping of IPv6 sockets.
pub struct UdpBatch {
    state: UdpSocketState,
    /// The socket is IPv6 (possibly dual-stack): IPv4 destinations are mapped.
    v6: bool,
    /// Whether GSO may be used (by configuration; quinn-udp may still turn
    /// it off after the kernel refused a batch).
    gso_allowed: bool,
    /// One receive buffer per batch slot, each big enough for a full GRO
    /// batch, allocated (and zeroed) once.
    bufs: Vec<Box<[u8]>>,
    /// Where received datagrams are copied to be handed to the core: each
    /// is split off (no further copy) and the arena's memory is reclaimed
    /// once the core let go of everything split off it, so steady traffic
    /// allocates only when the core holds datagrams (QUIC stream data not
    /// yet read) across a whole arena.
    arena: BytesMut,
    meta: Vec<RecvMeta>,
}

impl std::fmt::Debug for UdpBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpBatch").field("v6", &self.v6).field("gso", &self.max_segments()).finish()
    }
}

impl UdpBatch {
    /// Sets up `socket` for batched I/O (quinn-udp turns on PKTINFO, ECN
    /// and GRO where it can). `v6`: the socket is an IPv6 one. `gso`: allow
    /// segmentation offload.
    pub fn new(socket: UdpSockRef<'_>, v6: bool, gso: bool) -> io::Result<Self> {
        let state = UdpSocketState::new(socket)?;
        // A GRO batch is at most 64 KiB (the kernel's limit), as is one
        // datagram without GRO: one size fits both.
        let slots = quinn_udp::BATCH_SIZE;
        let bufs = (0..slots).map(|_| vec![0u8; MAX_DATAGRAM].into_boxed_slice()).collect();
        Ok(Self {
            state,
            v6,
            gso_allowed: gso,
            bufs,
            arena: BytesMut::new(),
            meta: vec![RecvMeta::default(); slots],
        })
    }

    /// Datagrams one transmit may carry (the `max_datagrams` for
    /// [`p2pcore::Node::poll_transmit`]).
    pub fn max_segments(&self) -> usize {
        if self.gso_allowed { self.state.max_gso_segments().clamp(1, MAX_GSO_SEGMENTS) } else { 1 }
    }

    /// Segments one receive buffer may hold (1 without GRO).
    pub fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    /// One receive call: up to `BATCH_SIZE` buffers, each possibly a GRO
    /// batch, split into datagrams and appended to `out`; returns how many.
    /// `WouldBlock` means the socket is drained.
    pub fn recv(&mut self, socket: UdpSockRef<'_>, out: &mut Vec<Datagram>) -> io::Result<usize> {
        let count = {
            let mut bufs = self.bufs.iter_mut();
            let mut slices: [IoSliceMut<'_>; quinn_udp::BATCH_SIZE] =
                std::array::from_fn(|_| IoSliceMut::new(bufs.next().map_or(&mut [], |b| &mut b[..])));
            self.state.recv(socket, &mut slices, &mut self.meta)?
        };
        let mut datagrams = 0;
        for (meta, buf) in self.meta.iter().zip(self.bufs.iter()).take(count) {
            let len = meta.len.min(buf.len());
            if self.arena.capacity() < len {
                // Reclaims the arena when nothing split off it is alive.
                self.arena.reserve(ARENA.max(len));
            }
            self.arena.extend_from_slice(&buf[..len]);
            let mut data = self.arena.split_to(len);
            let stride = if meta.stride == 0 { len } else { meta.stride };
            let remote = canonical(meta.addr);
            let local = meta.dst_ip.map(canonical_ip);
            let ecn = meta.ecn.and_then(|e| Ecn::from_bits(e as u8));
            while !data.is_empty() {
                let seg = data.split_to(stride.min(data.len()));
                out.push(Datagram { remote, local, ecn, data: seg });
                datagrams += 1;
            }
        }
        Ok(datagrams)
    }

    /// Sends one transmit from the core (`contents` is its buffer), as is:
    /// `WouldBlock` and every other error come back to the caller (see
    /// [`SendOutcome::of`]).
    pub fn send(&self, socket: UdpSockRef<'_>, t: &Out, contents: &[u8]) -> io::Result<()> {
        let destination = if self.v6 { mapped(t.destination) } else { t.destination };
        let src_ip = t.source.map(|ip| if self.v6 { mapped_ip(ip) } else { ip });
        let transmit = quinn_udp::Transmit {
            destination,
            ecn: t.ecn.and_then(|e| quinn_udp::EcnCodepoint::from_bits(e.bits())),
            contents: &contents[..t.size],
            segment_size: t.segment_size.filter(|&s| s < t.size),
            src_ip,
        };
        self.state.try_send(socket, &transmit)
    }
}

/// What a receive call's result means for a host: one classification, so
/// every host treats the same errors alike.
#[derive(Debug)]
pub enum RecvOutcome {
    /// This many datagrams were appended.
    Received(usize),
    /// The socket is empty (`WouldBlock`): wait for readability.
    Drained,
    /// Interrupted by a signal: call again.
    Retry,
    /// An error about one earlier datagram, not about the socket: Windows
    /// reports an ICMP "port unreachable" for an earlier send as a reset on
    /// the next receive. Count it and go on reading.
    Skipped(io::Error),
    /// The socket itself failed (closed under the host, say).
    Failed(io::Error),
}

impl RecvOutcome {
    /// What a receive's result means for a host.
    pub fn of(result: io::Result<usize>) -> Self {
        match result {
            Ok(n) => RecvOutcome::Received(n),
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock => RecvOutcome::Drained,
                io::ErrorKind::Interrupted => RecvOutcome::Retry,
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused => RecvOutcome::Skipped(e),
                _ => RecvOutcome::Failed(e),
            },
        }
    }
}

impl SendOutcome {
    /// What a send's result means for a host.
    pub fn of(result: io::Result<()>) -> Self {
        match result {
            Ok(()) => SendOutcome::Sent,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                SendOutcome::WouldBlock
            }
            Err(e) => SendOutcome::Dropped(e),
        }
    }
}

/// This crate's socket: a mio socket with its [`UdpBatch`].
pub(crate) struct Socket {
    io: mio::net::UdpSocket,
    batch: UdpBatch,
    local: SocketAddr,
    dual_stack: bool,
}

impl Socket {
    pub(crate) fn bind(
        addr: SocketAddr,
        gso: bool,
        recv_buffer: Option<usize>,
        send_buffer: Option<usize>,
    ) -> io::Result<Self> {
        let std_sock = bind(addr, recv_buffer, send_buffer)?;
        let dual_stack = is_dual_stack(&std_sock);
        let io = mio::net::UdpSocket::from_std(std_sock);
        let batch = UdpBatch::new(UdpSockRef::from(&io), addr.is_ipv6(), gso)?;
        let local = io.local_addr()?;
        Ok(Self { io, batch, local, dual_stack })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub(crate) fn dual_stack(&self) -> bool {
        self.dual_stack
    }

    pub(crate) fn mio(&mut self) -> &mut mio::net::UdpSocket {
        &mut self.io
    }

    pub(crate) fn max_segments(&self) -> usize {
        self.batch.max_segments()
    }

    pub(crate) fn gro_segments(&self) -> usize {
        self.batch.gro_segments()
    }

    pub(crate) fn recv(&mut self, out: &mut Vec<Datagram>) -> RecvOutcome {
        RecvOutcome::of(self.batch.recv(UdpSockRef::from(&self.io), out))
    }

    pub(crate) fn send(&mut self, t: &Out, contents: &[u8]) -> SendOutcome {
        SendOutcome::of(self.batch.send(UdpSockRef::from(&self.io), t, contents))
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) back to IPv4.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(addr.ip()), addr.port())
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn mapped(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(mapped_ip(addr.ip()), addr.port())
}

fn mapped_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        v6 => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn addresses_have_one_spelling() {
        let v4: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        let as_v6 = mapped(v4);
        assert_eq!(as_v6.ip(), IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped()));
        assert_eq!(canonical(as_v6), v4);
        let v6: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        assert_eq!(mapped(v6), v6);
        assert_eq!(canonical(v6), v6);
        assert_eq!(canonical_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)), IpAddr::V6(Ipv6Addr::LOCALHOST));
    }

    fn pair(gso: bool) -> (Socket, Socket) {
        let a = Socket::bind("127.0.0.1:0".parse().unwrap(), gso, None, None).unwrap();
        let b = Socket::bind("127.0.0.1:0".parse().unwrap(), gso, None, None).unwrap();
        (a, b)
    }

    /// Waits (bounded) until `b` has received `n` datagrams.
    fn recv_n(b: &mut Socket, n: usize) -> Vec<Datagram> {
        let mut got = Vec::new();
        let start = std::time::Instant::now();
        while got.len() < n {
            assert!(start.elapsed() < std::time::Duration::from_secs(10), "got {} of {n}", got.len());
            match b.recv(&mut got) {
                RecvOutcome::Received(_) | RecvOutcome::Retry => {}
                RecvOutcome::Drained => std::thread::yield_now(),
                RecvOutcome::Skipped(e) | RecvOutcome::Failed(e) => panic!("recv: {e}"),
            }
        }
        got
    }

    #[test]
    fn a_gso_batch_arrives_as_its_datagrams_with_metadata() {
        for gso in [true, false] {
            let (mut a, mut b) = pair(gso);
            let segments = a.max_segments().min(4);
            let stride = 1200;
            let mut contents = Vec::new();
            for i in 0..segments {
                contents.extend(std::iter::repeat_n(i as u8, stride));
            }
            contents.extend_from_slice(&[0xee; 100]);
            let t = transmit(b.local_addr(), contents.len(), (segments > 1).then_some(stride));
            if segments > 1 {
                assert!(matches!(a.send(&t, &contents), SendOutcome::Sent));
            } else {
                // Without GSO the host sends one datagram per transmit.
                for chunk in contents.chunks(stride) {
                    let t = transmit(b.local_addr(), chunk.len(), None);
                    assert!(matches!(a.send(&t, chunk), SendOutcome::Sent));
                }
            }
            let got = recv_n(&mut b, segments + 1);
            for (i, d) in got.iter().enumerate() {
                assert_eq!(d.remote, a.local_addr());
                assert_eq!(
                    d.local,
                    Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    "IP_PKTINFO reports the destination"
                );
                let want: &[u8] =
                    if i < segments { &contents[i * stride..(i + 1) * stride] } else { &[0xee; 100] };
                assert_eq!(&d.data[..], want, "datagram {i} (gso {gso})");
            }
        }
    }

    #[test]
    fn the_largest_gso_batch_the_host_plans_is_accepted() {
        let (mut a, mut b) = pair(true);
        let segments = a.max_segments();
        let contents = vec![0x42; segments * MAX_SEGMENT];
        let t = transmit(b.local_addr(), contents.len(), (segments > 1).then_some(MAX_SEGMENT));
        assert!(
            matches!(a.send(&t, &contents), SendOutcome::Sent),
            "{segments} segments of {MAX_SEGMENT} bytes"
        );
        let got = recv_n(&mut b, segments);
        assert!(got.iter().all(|d| d.data.len() == MAX_SEGMENT));
    }

    #[test]
    fn a_dual_stack_socket_speaks_ipv4_in_ipv4_addresses() {
        let Ok(mut v6) = Socket::bind("[::]:0".parse().unwrap(), true, None, None) else {
            return; // no IPv6 on this host: nothing to test
        };
        assert!(v6.dual_stack(), "[::] is bound dual-stack");
        let mut v4 = Socket::bind("127.0.0.1:0".parse().unwrap(), true, None, None).unwrap();
        let to_v6: SocketAddr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), v6.local_addr().port());
        assert!(matches!(v4.send(&transmit(to_v6, 5, None), b"hello"), SendOutcome::Sent));
        let got = recv_n(&mut v6, 1);
        assert_eq!(got[0].remote, v4.local_addr(), "the sender is seen as IPv4, not ::ffff:");
        assert_eq!(got[0].local, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        // And an IPv4 destination is reachable from the IPv6 socket.
        let back = transmit(got[0].remote, 3, None);
        assert!(matches!(v6.send(&back, b"hey"), SendOutcome::Sent));
        assert_eq!(&recv_n(&mut v4, 1)[0].data[..], b"hey");
    }

    fn transmit(destination: SocketAddr, size: usize, segment_size: Option<usize>) -> Out {
        Out { destination, source: None, ecn: None, size, segment_size }
    }
}
