//! The floor: bare UDP on std sockets (a ping-pong, a blast) and a bare
//! forwarder that moves datagrams with `recvmmsg` → `sendmmsg` in batches,
//! with nothing between the two calls but choosing the other side.
#![allow(unsafe_code)]

use crate::measure::{Forwarding, Rate, thread_cpu};
use std::io;
use std::mem::{MaybeUninit, size_of};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

fn socket() -> io::Result<UdpSocket> {
    UdpSocket::bind("127.0.0.1:0")
}

/// A thread that sends every datagram back where it came from (through
/// `via` when given, else to its source) until `stop`.
fn echo(sock: UdpSocket, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        }
    })
}

/// `count` round trips of `size`-byte datagrams, one at a time: to an echo
/// directly, or through `forwarder` when given (the echo then answers the
/// forwarder, which sends it back). Sorted samples.
pub(crate) fn ping_pong(count: usize, size: usize, through_forwarder: bool) -> io::Result<Vec<Duration>> {
    let client = socket()?;
    let server = socket()?;
    let stop = Arc::new(AtomicBool::new(false));
    let server_addr = server.local_addr()?;
    let echo = echo(server, stop.clone());
    let forwarder =
        if through_forwarder { Some(Forwarder::start(client.local_addr()?, server_addr)?) } else { None };
    let target = forwarder.as_ref().map_or(server_addr, |f| f.addr);
    client.set_read_timeout(Some(Duration::from_secs(1)))?;
    let payload = vec![7u8; size];
    let mut buf = vec![0u8; 65536];
    let mut rtts = Vec::with_capacity(count);
    while rtts.len() < count {
        let t = Instant::now();
        client.send_to(&payload, target)?;
        // A datagram lost on loopback (a full buffer) is sent again.
        if client.recv_from(&mut buf).is_ok() {
            rtts.push(t.elapsed());
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = echo.join();
    if let Some(f) = forwarder {
        f.stop();
    }
    rtts.sort();
    Ok(rtts)
}

/// Sends `size`-byte datagrams as fast as one thread can for `seconds`
/// (to a receiver directly, or through a forwarder). Returns what was sent
/// and received, and the forwarder's work when there was one.
pub(crate) fn blast(
    seconds: f64,
    size: usize,
    through_forwarder: bool,
) -> io::Result<(Rate, Option<Forwarding>)> {
    let tx = socket()?;
    let rx = socket()?;
    let rx_addr = rx.local_addr()?;
    let forwarder = if through_forwarder { Some(Forwarder::start(tx.local_addr()?, rx_addr)?) } else { None };
    let target = forwarder.as_ref().map_or(rx_addr, |f| f.addr);
    let done = Arc::new(AtomicBool::new(false));
    let receiver = {
        let done = done.clone();
        std::thread::spawn(move || {
            let _ = rx.set_read_timeout(Some(Duration::from_millis(20)));
            let mut buf = vec![0u8; 65536];
            let mut got = 0u64;
            let mut idle_since: Option<Instant> = None;
            loop {
                match rx.recv_from(&mut buf) {
                    Ok(_) => {
                        got += 1;
                        idle_since = None;
                    }
                    Err(_) if done.load(Ordering::Relaxed) => {
                        // Stragglers: stop after 100 ms of silence.
                        let since = *idle_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_millis(100) {
                            return got;
                        }
                    }
                    Err(_) => {}
                }
            }
        })
    };
    let payload = vec![0x5au8; size];
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let mut sent = 0u64;
    while Instant::now() < until {
        for _ in 0..64 {
            if tx.send_to(&payload, target).is_ok() {
                sent += 1;
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let received = receiver.join().map_err(|_| io::Error::other("receiver thread panicked"))?;
    let forwarding = forwarder.map(|f| f.stop_with(elapsed));
    Ok((Rate { sent, received, seconds: elapsed }, forwarding))
}

/// Batch size of one `recvmmsg` / `sendmmsg`.
const BATCH: usize = 32;
const MAX_DATAGRAM: usize = 2048;

/// The bare forwarder: what arrives from `a` goes to `b` and the reverse.
pub(crate) struct Forwarder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Datagrams and bytes forwarded so far.
    forwarded: Arc<[AtomicU64; 2]>,
    thread: JoinHandle<Duration>,
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { MaybeUninit::zeroed().assume_init() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = addr.port().to_be();
    sa.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(addr.ip().octets()) };
    sa
}

fn v4(addr: SocketAddr) -> io::Result<SocketAddrV4> {
    match addr {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(_) => Err(io::Error::other("the forwarder is IPv4 only")),
    }
}

impl Forwarder {
    pub(crate) fn start(a: SocketAddr, b: SocketAddr) -> io::Result<Self> {
        let sock = socket()?;
        sock.set_read_timeout(Some(Duration::from_millis(20)))?;
        let addr = sock.local_addr()?;
        let (a, b) = (sockaddr(v4(a)?), sockaddr(v4(b)?));
        let stop = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let thread = {
            let (stop, forwarded) = (stop.clone(), forwarded.clone());
            std::thread::spawn(move || {
                let cpu = thread_cpu();
                forward_loop(&sock, a, b, &stop, &forwarded);
                thread_cpu().saturating_sub(cpu)
            })
        };
        Ok(Self { addr, stop, forwarded, thread })
    }

    pub(crate) fn stop(self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }

    fn stop_with(self, seconds: f64) -> Forwarding {
        let forwarded = self.forwarded[0].load(Ordering::Relaxed);
        let bytes = self.forwarded[1].load(Ordering::Relaxed);
        let cpu = self.stop();
        Forwarding { forwarded, bytes, seconds, cpu }
    }
}

fn forward_loop(
    sock: &UdpSocket,
    a: libc::sockaddr_in,
    b: libc::sockaddr_in,
    stop: &AtomicBool,
    forwarded: &[AtomicU64; 2],
) {
    let fd = sock.as_raw_fd();
    let mut bufs = vec![[0u8; MAX_DATAGRAM]; BATCH];
    // SAFETY: these C structs are plain data; zero is valid for each.
    let mut names: [libc::sockaddr_in; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut iovs: [libc::iovec; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut dests: [libc::sockaddr_in; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut out: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut out_iovs: [libc::iovec; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    while !stop.load(Ordering::Relaxed) {
        for i in 0..BATCH {
            iovs[i] = libc::iovec { iov_base: bufs[i].as_mut_ptr().cast(), iov_len: MAX_DATAGRAM };
            msgs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_in).cast();
            msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at a live buffer, name and iovec of
        // this frame for the call's duration; BATCH entries are valid.
        let n = unsafe {
            libc::recvmmsg(fd, msgs.as_mut_ptr(), BATCH as u32, libc::MSG_WAITFORONE, std::ptr::null_mut())
        };
        if n <= 0 {
            continue; // timeout (a chance to see `stop`) or a transient error
        }
        let n = n as usize;
        for i in 0..n {
            let from_a = names[i].sin_port == a.sin_port && names[i].sin_addr.s_addr == a.sin_addr.s_addr;
            dests[i] = if from_a { b } else { a };
            out_iovs[i] =
                libc::iovec { iov_base: bufs[i].as_mut_ptr().cast(), iov_len: msgs[i].msg_len as usize };
            out[i].msg_hdr.msg_name = (&mut dests[i] as *mut libc::sockaddr_in).cast();
            out[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            out[i].msg_hdr.msg_iov = &mut out_iovs[i];
            out[i].msg_hdr.msg_iovlen = 1;
        }
        let mut done = 0;
        let mut bytes = 0;
        while done < n {
            // SAFETY: entries done..n point at live buffers and names.
            let sent = unsafe { libc::sendmmsg(fd, out[done..].as_mut_ptr(), (n - done) as u32, 0) };
            if sent <= 0 {
                break; // the rest is dropped, as a full socket would
            }
            bytes += out[done..done + sent as usize].iter().map(|m| m.msg_len as u64).sum::<u64>();
            done += sent as usize;
        }
        forwarded[0].fetch_add(done as u64, Ordering::Relaxed);
        forwarded[1].fetch_add(bytes, Ordering::Relaxed);
    }
}
