//! The server's admin address: Prometheus metrics, health and readiness,
//! and a live network map (a page served from the binary, polling a JSON
//! endpoint). The daemon's loop captures a [`Snapshot`] twice a second; the
//! admin thread only serves the last one, so it never touches the node.

use crate::Failure;
use p2pcore::{DropCounters, MasterBasis, NodeId, PathKind, Role};
use p2pcore_mio::Host;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The map page: one file, no external assets.
const MAP_HTML: &str = include_str!("map.html");

/// What the admin address serves, captured from the node by the daemon's
/// loop.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    at: Instant,
    metrics: String,
    map: String,
    ready: Result<(), String>,
}

fn basis(b: Option<MasterBasis>) -> &'static str {
    b.map_or("none", |b| b.as_str())
}

fn path_text(p: &PathKind) -> (&'static str, Option<NodeId>) {
    match p {
        PathKind::Direct => ("direct", None),
        PathKind::Punched => ("punched", None),
        PathKind::Relayed { via } => ("relayed", Some(*via)),
        _ => ("unknown", None),
    }
}

/// Prometheus text exposition, written metric by metric.
struct Metrics(String);

impl Metrics {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP p2pcore_{name} {help}\n# TYPE p2pcore_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str("p2pcore_");
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(self.0, "{k}=\"{v}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

fn drops(d: &DropCounters) -> [(&'static str, u64); 11] {
    [
        ("empty", d.empty),
        ("truncated", d.truncated),
        ("bad_magic", d.bad_magic),
        ("bad_version", d.bad_version),
        ("unknown_type", d.unknown_type),
        ("raft_rejected", d.raft_rejected),
        ("bad_payload", d.bad_payload),
        ("unexpected", d.unexpected),
        ("quic_ignored", d.quic_ignored),
        ("relay_rejected", d.relay_rejected),
        ("probe_rejected", d.probe_rejected),
    ]
}

impl Snapshot {
    /// Reads everything the admin address serves from the node.
    pub(crate) fn capture(host: &Host) -> Self {
        let node = host.node();
        let me = node.id();
        let master = node.master();
        let servers = node.servers();
        let directory = node.directory();
        let stats = *node.stats();
        let links: BTreeMap<NodeId, Duration> = node.links().map(|l| (l.id, l.rtt)).collect();
        let name_of: BTreeMap<NodeId, String> = servers
            .iter()
            .map(|s| (s.id, s.name.clone()))
            .chain(directory.iter().map(|r| (r.id, r.name.clone())))
            .collect();

        // Every pair of peers once, with what each end reported.
        let mut pairs: BTreeMap<(NodeId, NodeId), Value> = BTreeMap::new();
        let mut path_counts: BTreeMap<&'static str, u64> = BTreeMap::new();
        for row in &directory {
            for link in row.links.iter().filter(|l| l.id.role() == Role::Peer) {
                let key = if row.id < link.id { (row.id, link.id) } else { (link.id, row.id) };
                let (kind, via) = path_text(&link.path);
                let entry = pairs.entry(key).or_insert_with(|| {
                    *path_counts.entry(kind).or_default() += 1;
                    json!({
                        "a": key.0.to_string(), "b": key.1.to_string(),
                        "path": kind,
                        "via": via.map(|v| v.to_string()),
                        "via_name": via.and_then(|v| name_of.get(&v).cloned()),
                        "rtt_ms": link.rtt.map(|r| r.as_secs_f64() * 1e3),
                    })
                });
                if entry["rtt_ms"].is_null()
                    && let Some(r) = link.rtt
                {
                    entry["rtt_ms"] = json!(r.as_secs_f64() * 1e3);
                }
            }
        }
        let master_name = master.master.and_then(|m| name_of.get(&m).cloned());
        let map = json!({
            "self": { "id": me.to_string(), "name": node.name(), "uptime_s": node.uptime().as_secs() },
            "master": {
                "id": master.master.map(|m| m.to_string()),
                "name": master_name,
                "basis": basis(master.basis),
                "term": master.term,
                "epoch": master.epoch,
            },
            "servers": servers.iter().map(|s| json!({
                "id": s.id.to_string(), "name": s.name, "live": s.live, "master": s.master, "load": s.load,
                "addrs": s.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "rtt_ms": links.get(&s.id).map(|r| r.as_secs_f64() * 1e3),
            })).collect::<Vec<_>>(),
            "peers": directory.iter().map(|r| json!({
                "id": r.id.to_string(), "name": r.name,
                "local": r.addrs.local.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "observed": r.addrs.observed.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "rtt_ms": links.get(&r.id).map(|r| r.as_secs_f64() * 1e3),
            })).collect::<Vec<_>>(),
            "pairs": pairs.into_values().collect::<Vec<_>>(),
            "relay": { "datagrams": stats.relayed_datagrams, "bytes": stats.relayed_bytes },
            "drops": drops(&stats.dropped).iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        });

        let mut m = Metrics(String::new());
        m.family("info", "gauge", "This node: its ID, name, role and version.");
        m.sample(
            "info",
            &[
                ("id", &me.to_string()),
                ("name", node.name()),
                ("role", node.role().as_str()),
                ("version", env!("CARGO_PKG_VERSION")),
            ],
            1,
        );
        m.one("uptime_seconds", "gauge", "Seconds since this node started.", node.uptime().as_secs());
        m.one("peers", "gauge", "Peers in this server's directory.", directory.len());
        m.family("servers", "gauge", "Servers this node knows, by whether it has a live connection to them.");
        let live = servers.iter().filter(|s| s.live).count();
        m.sample("servers", &[("state", "live")], live);
        m.sample("servers", &[("state", "down")], servers.len() - live);
        m.family("master", "gauge", "The Master as this node sees it (1 on the series naming it).");
        if let Some(id) = master.master {
            m.sample(
                "master",
                &[
                    ("id", &id.to_string()),
                    ("name", master_name.as_deref().unwrap_or("")),
                    ("basis", basis(master.basis)),
                ],
                1,
            );
        }
        m.one("is_master", "gauge", "1 when this node is the Master.", u8::from(master.master == Some(me)));
        m.one(
            "master_term",
            "gauge",
            "Raft term of the Master's mandate (0 unless basis raft).",
            master.term,
        );
        m.one(
            "relayed_datagrams_total",
            "counter",
            "Datagrams relayed between peers.",
            stats.relayed_datagrams,
        );
        m.one("relayed_bytes_total", "counter", "Bytes relayed between peers.", stats.relayed_bytes);
        m.one("datagrams_in_total", "counter", "Datagrams received.", stats.datagrams_in);
        m.one("datagrams_out_total", "counter", "Datagrams sent.", stats.datagrams_out);
        m.one("bytes_in_total", "counter", "Bytes received.", stats.bytes_in);
        m.one("bytes_out_total", "counter", "Bytes sent.", stats.bytes_out);
        m.one(
            "unroutable_total",
            "counter",
            "Relay frames for peers this server does not know.",
            stats.unroutable,
        );
        m.family("dropped_total", "counter", "Received datagrams dropped, by reason.");
        for (reason, n) in drops(&stats.dropped) {
            m.sample("dropped_total", &[("reason", reason)], n);
        }
        m.family(
            "peer_paths",
            "gauge",
            "Pairs of peers by the path their last report names (punching outcomes).",
        );
        for kind in ["direct", "punched", "relayed"] {
            m.sample("peer_paths", &[("path", kind)], path_counts.get(kind).copied().unwrap_or(0));
        }
        m.one(
            "handshakes_shed_total",
            "counter",
            "Incoming handshakes ignored over the limit.",
            stats.handshakes_shed,
        );
        m.one(
            "handshakes_refused_total",
            "counter",
            "Incoming handshakes refused.",
            stats.handshakes_refused,
        );
        m.one(
            "retries_sent_total",
            "counter",
            "QUIC Retry packets sent (address validation).",
            stats.retries_sent,
        );
        let h = host.host_stats();
        m.one("send_errors_total", "counter", "Datagrams the kernel refused to send.", h.send_errors);
        m.one(
            "bounded_turns_total",
            "counter",
            "Loop turns that stopped reading at their bound.",
            h.bounded_turns,
        );
        m.one(
            "raft_writes_total",
            "counter",
            "Raft state batches stored in raft.redb and confirmed.",
            h.raft_writes,
        );
        m.one(
            "raft_write_errors_total",
            "counter",
            "Raft store writes that failed (non-zero: this server's Raft has stalled; check the disk and restart).",
            h.raft_write_errors,
        );

        let ready = if master.master.is_none() {
            Err("no Master known yet".to_owned())
        } else if servers.iter().filter(|s| s.live).count() == 0 {
            Err("not connected to the cluster".to_owned())
        } else {
            Ok(())
        };
        Self { at: Instant::now(), metrics: m.0, map: map.to_string(), ready }
    }
}

/// The admin HTTP server's thread.
pub(crate) struct Admin {
    shared: Arc<Mutex<Option<Snapshot>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Admin {
    /// Listens on `addr`; with a token every request must present it
    /// (`Authorization: Bearer …`, or `?token=…` for a browser).
    pub(crate) fn start(addr: SocketAddr, token: Option<String>) -> Result<Self, Failure> {
        let server = tiny_http::Server::http(addr).map_err(|e| {
            Failure::new(format!(
                "could not listen on the admin address {addr}: {e} (choose another --admin)"
            ))
        })?;
        tracing::info!(%addr, auth = token.is_some(), "admin address: /metrics /healthz /readyz /map");
        let shared = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("p2pcore admin".into())
                .spawn(move || serve(server, token, shared, stop))
                .map_err(|e| Failure::new(format!("could not start the admin thread: {e}")))?
        };
        Ok(Self { shared, stop, thread: Some(thread) })
    }

    /// Makes `snapshot` what the address serves.
    pub(crate) fn publish(&self, snapshot: Snapshot) {
        if let Ok(mut s) = self.shared.lock() {
            *s = Some(snapshot);
        }
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn authorized(req: &tiny_http::Request, token: &str) -> bool {
    let header = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str().trim().to_owned());
    let from_header = header.as_deref().and_then(|h| h.strip_prefix("Bearer ")).map(str::trim);
    let from_query =
        req.url().split_once('?').and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
    // Compare without an early exit, so the time does not leak the prefix.
    let same = |given: &str| {
        given.len() == token.len()
            && given.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    };
    from_header.is_some_and(same) || from_query.is_some_and(same)
}

fn respond(req: tiny_http::Request, status: u16, content_type: &str, body: String) {
    let header = tiny_http::Header::from_bytes("Content-Type", content_type).ok();
    let mut response = tiny_http::Response::from_string(body).with_status_code(status);
    if let Some(h) = header {
        response = response.with_header(h);
    }
    if status == 401
        && let Ok(h) = tiny_http::Header::from_bytes("WWW-Authenticate", "Bearer")
    {
        response = response.with_header(h);
    }
    let _ = req.respond(response);
}

fn serve(
    server: tiny_http::Server,
    token: Option<String>,
    shared: Arc<Mutex<Option<Snapshot>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Acquire) {
        let req = match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "admin address failed");
                return;
            }
        };
        if let Some(t) = &token
            && !authorized(&req, t)
        {
            respond(req, 401, "text/plain", "a bearer token is required\n".into());
            continue;
        }
        let path = req.url().split('?').next().unwrap_or("").to_owned();
        let snap = shared.lock().ok().and_then(|s| s.clone());
        let fresh = snap.as_ref().is_some_and(|s| s.at.elapsed() < Duration::from_secs(5));
        match (path.as_str(), snap) {
            ("/healthz", _) if fresh => respond(req, 200, "text/plain", "ok\n".into()),
            ("/healthz", _) => respond(req, 503, "text/plain", "the server loop is not turning\n".into()),
            ("/readyz", Some(s)) if fresh => match s.ready {
                Ok(()) => respond(req, 200, "text/plain", "ready\n".into()),
                Err(why) => respond(req, 503, "text/plain", format!("not ready: {why}\n")),
            },
            ("/readyz", _) => respond(req, 503, "text/plain", "not ready: starting\n".into()),
            ("/metrics", Some(s)) => respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", s.metrics),
            ("/map.json", Some(s)) => respond(req, 200, "application/json", s.map),
            ("/map" | "/", _) => respond(req, 200, "text/html; charset=utf-8", MAP_HTML.to_owned()),
            ("/metrics" | "/map.json", None) => respond(req, 503, "text/plain", "starting\n".into()),
            _ => {
                respond(req, 404, "text/plain", "not found: try /map, /metrics, /healthz or /readyz\n".into())
            }
        }
    }
}
