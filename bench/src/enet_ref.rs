//! ENet 1.3 (C, Debian's `libenet-dev`) measured the way its users drive
//! it: each host on a thread of its own calling `enet_host_service`, 1 ms
//! waits (ENet's granularity), packets flushed as they are queued.
//!
//! ENet has no send-side backpressure: a sender that queues faster than it
//! sends grows without bound. The throughput sender therefore keeps at most
//! 4 MiB ahead of what the receiver reported (a reliable 8-byte progress
//! report per MiB), as an ENet application must, and as QUIC's flow
//! control does for the other two.

use crate::enet::{Event, Host, RELIABLE, UNSEQUENCED};
use crate::measure::{Rate, Throughput, pin_thread, process_cpu};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CHANNELS: usize = 2;
const AHEAD: usize = 4 << 20;
const REPORT_EVERY: usize = 1 << 20;

/// A listening host on its own thread running `serve`; returns its port.
fn spawn_server(
    serve: impl FnOnce(&mut Host) -> io::Result<()> + Send + 'static,
) -> io::Result<(u16, std::thread::JoinHandle<io::Result<()>>)> {
    let (host, port) = Host::new(true, CHANNELS)?;
    let thread = std::thread::spawn(move || {
        let mut host = host;
        serve(&mut host)
    });
    Ok((port, thread))
}

fn join(t: std::thread::JoinHandle<io::Result<()>>) -> io::Result<()> {
    t.join().map_err(|_| io::Error::other("ENet thread panicked"))?
}

/// Reliable throughput of `size`-byte packets on one channel.
pub(crate) fn throughput(size: usize, total: usize) -> io::Result<Throughput> {
    let (done_tx, done_rx) = mpsc::channel();
    let (port, server) = spawn_server(move |host| {
        // The receiver on the second CPU, the sender on the first (see
        // `pin_thread`).
        pin_thread(1);
        let (mut got, mut reported, mut first) = (0usize, 0usize, None);
        loop {
            match host.service(1)? {
                Some(Event::Receive { peer, data }) => {
                    let now = Instant::now();
                    first.get_or_insert(now);
                    got += data.len();
                    if got >= total {
                        let _ = done_tx.send((first.unwrap_or(now), now));
                        // Linger so the sender's last acknowledgements go out.
                        let end = Instant::now() + Duration::from_millis(200);
                        while Instant::now() < end {
                            host.service(1)?;
                        }
                        return Ok(());
                    }
                    if got - reported >= REPORT_EVERY {
                        reported = got;
                        host.send(peer, 1, &(got as u64).to_be_bytes(), RELIABLE)?;
                    }
                }
                Some(Event::Disconnect) => return Ok(()),
                _ => {}
            }
        }
    })?;
    let finished = Arc::new(AtomicBool::new(false));
    let cpu0 = process_cpu();
    let client = {
        let finished = finished.clone();
        std::thread::spawn(move || -> io::Result<()> {
            pin_thread(0);
            let (mut host, _) = Host::new(false, CHANNELS)?;
            let peer = host.connect(port, CHANNELS)?;
            host.wait_connected()?;
            let payload = vec![0x5au8; size];
            let (mut queued, mut acked) = (0usize, 0usize);
            // Until the receiver has it all (the main thread says so).
            while !finished.load(Ordering::Relaxed) {
                while queued < total && queued < acked + AHEAD {
                    host.send(peer, 0, &payload, RELIABLE)?;
                    queued += size;
                }
                // Sends what was queued; waits at most 1 ms for news when
                // there is nothing more to queue.
                let room = queued < total && queued < acked + AHEAD;
                let mut event = host.service(if room { 0 } else { 1 })?;
                while let Some(e) = event {
                    if let Event::Receive { data, .. } = e
                        && let Ok(b) = <[u8; 8]>::try_from(data.as_slice())
                    {
                        acked = acked.max(u64::from_be_bytes(b) as usize);
                    }
                    event = host.check_events();
                }
            }
            Ok(())
        })
    };
    let outcome = done_rx.recv_timeout(Duration::from_secs(300)).map_err(io::Error::other);
    let cpu = process_cpu().saturating_sub(cpu0);
    finished.store(true, Ordering::Relaxed);
    client.join().map_err(|_| io::Error::other("ENet client panicked"))??;
    join(server)?;
    let (first, last) = outcome?;
    let seconds = last.duration_since(first).as_secs_f64().max(1e-9);
    Ok(Throughput {
        mb_per_s: total as f64 / 1e6 / seconds,
        cpu_ms_per_100mb: cpu.as_secs_f64() * 1e3 * 100e6 / total as f64,
    })
}

/// `count` round trips of `size`-byte reliable packets.
pub(crate) fn round_trips(count: usize, size: usize) -> io::Result<Vec<Duration>> {
    let stop = Arc::new(AtomicBool::new(false));
    let (port, server) = {
        let stop = stop.clone();
        spawn_server(move |host| {
            while !stop.load(Ordering::Relaxed) {
                if let Some(Event::Receive { peer, data }) = host.service(1)? {
                    host.send(peer, 0, &data, RELIABLE)?;
                    host.flush();
                }
            }
            Ok(())
        })?
    };
    let (mut host, _) = Host::new(false, CHANNELS)?;
    let peer = host.connect(port, CHANNELS)?;
    host.wait_connected()?;
    let payload = vec![7u8; size];
    let mut rtts = Vec::with_capacity(count);
    while rtts.len() < count {
        let t = Instant::now();
        host.send(peer, 0, &payload, RELIABLE)?;
        host.flush();
        loop {
            if let Some(Event::Receive { .. }) = host.service(1)? {
                rtts.push(t.elapsed());
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "ENet echo lost for 10 s"));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    join(server)?;
    rtts.sort();
    Ok(rtts)
}

/// Unsequenced (unreliable, unordered) packets as fast as one thread queues
/// and flushes them, 64 per service call, for `seconds`.
pub(crate) fn blast(seconds: f64, size: usize) -> io::Result<Rate> {
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (port, server) = {
        let (received, stop) = (received.clone(), stop.clone());
        spawn_server(move |host| {
            while !stop.load(Ordering::Relaxed) {
                if let Some(Event::Receive { .. }) = host.service(1)? {
                    received.fetch_add(1, Ordering::Relaxed);
                    while let Some(e) = host.check_events() {
                        if matches!(e, Event::Receive { .. }) {
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            Ok(())
        })?
    };
    let (mut host, _) = Host::new(false, CHANNELS)?;
    let peer = host.connect(port, CHANNELS)?;
    host.wait_connected()?;
    let payload = vec![0x5au8; size];
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let received0 = received.load(Ordering::Relaxed);
    let mut sent = 0u64;
    while Instant::now() < until {
        for _ in 0..64 {
            host.send(peer, 1, &payload, UNSEQUENCED)?;
            sent += 1;
        }
        while host.service(0)?.is_some() {}
    }
    let elapsed = start.elapsed().as_secs_f64();
    let linger = Instant::now() + Duration::from_millis(200);
    while Instant::now() < linger {
        host.service(1)?;
    }
    stop.store(true, Ordering::Relaxed);
    join(server)?;
    Ok(Rate { sent, received: received.load(Ordering::Relaxed) - received0, seconds: elapsed })
}

/// From a client's start (its host's creation) to its first packet
/// delivered to an already running host. One sample per run.
pub(crate) fn startup(runs: usize) -> io::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (got_tx, got_rx) = mpsc::channel();
        let (port, server) = spawn_server(move |host| {
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if let Some(Event::Receive { .. }) = host.service(1)? {
                    let _ = got_tx.send(Instant::now());
                    // Acknowledge before going away.
                    host.service(5)?;
                    return Ok(());
                }
            }
            Err(io::Error::new(io::ErrorKind::TimedOut, "no ENet packet in 10 s"))
        })?;
        std::thread::sleep(Duration::from_millis(50));
        let t0 = Instant::now();
        let (mut host, _) = Host::new(false, CHANNELS)?;
        let peer = host.connect(port, CHANNELS)?;
        host.wait_connected()?;
        host.send(peer, 0, b"hello", RELIABLE)?;
        host.flush();
        let at = got_rx.recv_timeout(Duration::from_secs(10)).map_err(io::Error::other)?;
        out.push(at.duration_since(t0));
        join(server)?;
    }
    Ok(out)
}
