//! The ceiling: bare quinn (the `quinn` crate on tokio, rustls on ring like
//! p2pcore) on loopback. Each endpoint runs on a current-thread runtime on a
//! thread of its own, as each p2pcore node does, so neither side pays for
//! cross-thread hand-offs the other does not.
//!
//! Flow-control windows are p2pcore's defaults (8 MiB per connection, 4 MiB
//! per stream); everything else is quinn's default, path MTU discovery
//! included. Messages are framed with a 4-byte length, written with
//! `write_chunk` (no copy) and parsed out of `read_chunk`s, as a careful
//! quinn user would.

use crate::measure::{Throughput, pin_thread, process_cpu};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use quinn::{ClientConfig, Endpoint, RecvStream, ServerConfig, TransportConfig, VarInt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// quinn's defaults with p2pcore's windows; `pmtud: false` also stays at
/// QUIC's minimum packet size (1200 bytes) as p2pcore does, to tell that
/// difference apart from the rest.
fn transport(pmtud: bool) -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.receive_window(VarInt::from_u32(8 << 20));
    t.stream_receive_window(VarInt::from_u32(4 << 20));
    t.send_window(8 << 20);
    if !pmtud {
        t.mtu_discovery_config(None);
    }
    Arc::new(t)
}

fn configs() -> io::Result<(ServerConfig, ClientConfig)> {
    configs_with(true)
}

fn configs_with(pmtud: bool) -> io::Result<(ServerConfig, ClientConfig)> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).map_err(io::Error::other)?;
    let der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let mut server = ServerConfig::with_single_cert(vec![der.clone()], key).map_err(io::Error::other)?;
    server.transport_config(transport(pmtud));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).map_err(io::Error::other)?;
    let mut client = ClientConfig::with_root_certificates(Arc::new(roots)).map_err(io::Error::other)?;
    client.transport_config(transport(pmtud));
    Ok((server, client))
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

/// Reads length-prefixed messages out of `recv`'s chunks; calls `each`
/// with every complete one until it returns `false` or the stream ends.
async fn read_messages(recv: &mut RecvStream, mut each: impl FnMut(Bytes) -> bool) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(64 << 10);
    loop {
        while buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if buf.len() < 4 + len {
                buf.reserve(4 + len - buf.len());
                break;
            }
            buf.advance(4);
            if !each(buf.split_to(len).freeze()) {
                return Ok(());
            }
        }
        match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            // The remote finished or closed: the end of the messages.
            Ok(None)
            | Err(quinn::ReadError::ConnectionLost(quinn::ConnectionError::ApplicationClosed(_))) => {
                return Ok(());
            }
            Err(e) => return Err(io::Error::other(e)),
        }
    }
}

fn frame(size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + size);
    b.put_u32(size as u32);
    b.put_bytes(0x5a, size);
    b.freeze()
}

/// A server endpoint on its own thread, running `serve` on the first
/// connection it accepts.
fn spawn_server<F, Fut>(
    config: ServerConfig,
    serve: F,
) -> io::Result<(SocketAddr, std::thread::JoinHandle<()>)>
where
    F: FnOnce(quinn::Connection) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = io::Result<()>>,
{
    let (addr_tx, addr_rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let Ok(rt) = runtime() else { return };
        rt.block_on(async move {
            let endpoint = match Endpoint::server(config, "127.0.0.1:0".parse().expect("literal")) {
                Ok(e) => e,
                Err(e) => return eprintln!("quinn server: {e}"),
            };
            let _ = addr_tx.send(endpoint.local_addr());
            if let Some(incoming) = endpoint.accept().await {
                match incoming.await {
                    Ok(conn) => {
                        if let Err(e) = serve(conn.clone()).await {
                            eprintln!("quinn server: {e}");
                        }
                        // Let the client see everything before closing.
                        conn.closed().await;
                    }
                    Err(e) => eprintln!("quinn server: {e}"),
                }
            }
            endpoint.wait_idle().await;
        });
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(10)).map_err(io::Error::other)??;
    Ok((addr, thread))
}

async fn connect(config: ClientConfig, server: SocketAddr) -> io::Result<(Endpoint, quinn::Connection)> {
    let mut endpoint = Endpoint::client("127.0.0.1:0".parse().expect("literal"))?;
    endpoint.set_default_client_config(config);
    let conn =
        endpoint.connect(server, "localhost").map_err(io::Error::other)?.await.map_err(io::Error::other)?;
    Ok((endpoint, conn))
}

/// Reliable throughput of `size`-byte messages on one stream; `pmtud`
/// false keeps quinn at 1200-byte packets like p2pcore.
pub(crate) fn throughput(size: usize, total: usize, pmtud: bool) -> io::Result<Throughput> {
    let (server_cfg, client_cfg) = configs_with(pmtud)?;
    let (done_tx, done_rx) = mpsc::channel();
    let (addr, server) = spawn_server(server_cfg, move |conn| async move {
        // The receiver on the second CPU, the sender on the first (see
        // `pin_thread`).
        pin_thread(1);
        let mut recv = conn.accept_uni().await.map_err(io::Error::other)?;
        let (mut got, mut first) = (0usize, None);
        read_messages(&mut recv, |m| {
            let now = Instant::now();
            first.get_or_insert(now);
            got += m.len();
            if got >= total {
                let _ = done_tx.send((first.unwrap_or(now), now));
                return false;
            }
            true
        })
        .await
    })?;
    let cpu0 = process_cpu();
    let client = std::thread::spawn(move || -> io::Result<()> {
        pin_thread(0);
        runtime()?.block_on(async move {
            let (endpoint, conn) = connect(client_cfg, addr).await?;
            let mut send = conn.open_uni().await.map_err(io::Error::other)?;
            let frame = frame(size);
            let mut left = total;
            while left > 0 {
                send.write_chunk(frame.clone()).await.map_err(io::Error::other)?;
                left = left.saturating_sub(size);
            }
            let _ = send.finish();
            let _ = send.stopped().await;
            conn.close(0u32.into(), b"done");
            endpoint.wait_idle().await;
            Ok(())
        })
    });
    let (first, last) = done_rx.recv_timeout(Duration::from_secs(300)).map_err(io::Error::other)?;
    let cpu = process_cpu().saturating_sub(cpu0);
    client.join().map_err(|_| io::Error::other("quinn client panicked"))??;
    let _ = server.join();
    let seconds = last.duration_since(first).as_secs_f64().max(1e-9);
    Ok(Throughput {
        mb_per_s: total as f64 / 1e6 / seconds,
        cpu_ms_per_100mb: cpu.as_secs_f64() * 1e3 * 100e6 / total as f64,
    })
}

/// `count` round trips of `size`-byte messages on one bidirectional stream.
pub(crate) fn round_trips(count: usize, size: usize) -> io::Result<Vec<Duration>> {
    let (server_cfg, client_cfg) = configs()?;
    let (addr, server) = spawn_server(server_cfg, |conn| async move {
        let (mut send, mut recv) = conn.accept_bi().await.map_err(io::Error::other)?;
        let mut echoed = Vec::new();
        loop {
            read_messages(&mut recv, |m| {
                echoed.push(m);
                false
            })
            .await?;
            let Some(m) = echoed.pop() else { return Ok(()) };
            let mut f = BytesMut::with_capacity(4 + m.len());
            f.put_u32(m.len() as u32);
            f.put_slice(&m);
            send.write_chunk(f.freeze()).await.map_err(io::Error::other)?;
        }
    })?;
    let rtts = runtime()?.block_on(async move {
        let (endpoint, conn) = connect(client_cfg, addr).await?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(io::Error::other)?;
        let frame = frame(size);
        let mut rtts = Vec::with_capacity(count);
        for _ in 0..count {
            let t = Instant::now();
            send.write_chunk(frame.clone()).await.map_err(io::Error::other)?;
            read_messages(&mut recv, |_| false).await?;
            rtts.push(t.elapsed());
        }
        let _ = send.finish();
        conn.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
        Ok::<_, io::Error>(rtts)
    })?;
    let _ = server.join();
    let mut rtts = rtts;
    rtts.sort();
    Ok(rtts)
}

/// From a client's start (its endpoint's bind) to its first message
/// delivered to an already running server. One sample per run.
pub(crate) fn startup(runs: usize) -> io::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (server_cfg, client_cfg) = configs()?;
        let (got_tx, got_rx) = mpsc::channel();
        let (addr, server) = spawn_server(server_cfg, move |conn| async move {
            let mut recv = conn.accept_uni().await.map_err(io::Error::other)?;
            read_messages(&mut recv, |_| {
                let _ = got_tx.send(Instant::now());
                false
            })
            .await
        })?;
        std::thread::sleep(Duration::from_millis(50));
        let t0 = Instant::now();
        runtime()?.block_on(async move {
            let (endpoint, conn) = connect(client_cfg, addr).await?;
            let mut send = conn.open_uni().await.map_err(io::Error::other)?;
            send.write_chunk(frame(5)).await.map_err(io::Error::other)?;
            let _ = send.finish();
            let _ = send.stopped().await;
            conn.close(0u32.into(), b"done");
            endpoint.wait_idle().await;
            Ok::<_, io::Error>(())
        })?;
        let at = got_rx.recv_timeout(Duration::from_secs(10)).map_err(io::Error::other)?;
        out.push(at.duration_since(t0));
        let _ = server.join();
    }
    Ok(out)
}
