//! The JSON report `p2psim` prints. The schema is documented in
//! `tests/SCENARIOS.md`; keys are only ever added, never renamed.

use crate::nat::NatStats;
use crate::sim::{HostBytes, MasterObservation, MessageMetrics, NetStats, PairPath, Sim, TraceEntry};
use p2pcore::NodeStats;
use serde::Serialize;
use std::collections::BTreeMap;

/// One established connection of a node at the end of the run.
#[derive(Debug, Serialize)]
pub struct LinkReport {
    /// Remote node ID.
    pub id: String,
    /// Remote name.
    pub name: String,
    /// Address the connection runs over.
    pub addr: String,
    /// Whether this node dialed.
    pub dialed: bool,
    /// Smoothed RTT in milliseconds.
    pub rtt_ms: f64,
}

/// The Master as a node sees it at the end.
#[derive(Debug, Serialize)]
pub struct MasterReport {
    /// The Master's name, or `None`.
    pub master: Option<String>,
    /// `solo`, `eldest`, `raft`, or `None`.
    pub basis: Option<String>,
    /// Raft term (0 for other bases).
    pub term: u64,
}

/// A server in a node's final server list.
#[derive(Debug, Serialize)]
pub struct ServerReport {
    /// Server name.
    pub name: String,
    /// Whether the node has a live connection to it.
    pub live: bool,
    /// Its reported load.
    pub load: u32,
    /// Whether the node sees it as Master.
    pub master: bool,
}

/// A node's final state.
#[derive(Debug, Serialize)]
pub struct NodeState {
    /// Established connections.
    pub links: Vec<LinkReport>,
    /// The Master as this node sees it.
    pub master: MasterReport,
    /// The server list (table C) as this node knows it.
    pub servers: Vec<ServerReport>,
    /// Peers: the names of the peers online in its merged directory, sorted.
    pub peers: Vec<String>,
    /// Peers: its link table (table F) as `name: path`.
    pub link_table: BTreeMap<String, String>,
    /// Servers: the names of the peers connected to it (table A), sorted.
    pub directory: Vec<String>,
    /// The node's own counters.
    pub stats: NodeStats,
}

/// One node in the report.
#[derive(Debug, Serialize)]
pub struct NodeReport {
    /// Node ID.
    pub id: String,
    /// `server` or `peer`.
    pub role: String,
    /// Running at the end of the run.
    pub alive: bool,
    /// Its socket address.
    pub addr: String,
    /// Its LAN, if any.
    pub lan: Option<String>,
    /// Number of (re)starts.
    pub boots: u32,
    /// Final state; `None` if not running.
    pub state: Option<NodeState>,
}

/// Run-wide measurements.
#[derive(Debug, Serialize)]
pub struct Metrics {
    /// Tracked message delivery.
    pub messages: MessageMetrics,
    /// Wire traffic per node.
    pub bytes: BTreeMap<String, HostBytes>,
    /// What the network did to datagrams.
    pub network: NetStats,
    /// What each NAT did, by LAN name.
    pub nat: BTreeMap<String, NatStats>,
    /// When every server was first up, listed every other and agreed on one
    /// Master (virtual ms); `None` if that never happened.
    pub cluster_formed_ms: Option<f64>,
    /// Every `MasterChanged` reported by a server.
    pub masters: Vec<MasterObservation>,
    /// For each Master killed: virtual ms until every running server agreed on a new one.
    pub failover_ms: Vec<f64>,
    /// How each peer reaches each linked peer at the end.
    pub pairs: Vec<PairPath>,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The seed the run used.
    pub seed: u64,
    /// Virtual run time.
    pub duration_ms: u64,
    /// SHA-256 of the ordered event trace.
    pub digest: String,
    /// SHA-256 of every datagram sent, with times and addresses.
    pub wire_digest: String,
    /// The ordered trace.
    pub events: Vec<TraceEntry>,
    /// Nodes by name.
    pub nodes: BTreeMap<String, NodeReport>,
    /// Measurements.
    pub metrics: Metrics,
}

impl Report {
    /// Builds the report of a finished run.
    pub fn new(sim: &Sim, seed: u64, duration_ms: u64) -> Self {
        let lans = sim.lans();
        let nodes = sim
            .hosts()
            .iter()
            .map(|h| {
                let state = h.node.as_ref().map(|n| NodeState {
                    links: n
                        .links()
                        .map(|l| LinkReport {
                            id: l.id.to_string(),
                            name: l.name,
                            addr: l.addr.to_string(),
                            dialed: l.dialed,
                            rtt_ms: l.rtt.as_secs_f64() * 1000.0,
                        })
                        .collect(),
                    master: {
                        let m = n.master();
                        MasterReport {
                            master: m.master.map(|id| sim.name_of(&id)),
                            basis: m.basis.map(|b| b.as_str().to_owned()),
                            term: m.term,
                        }
                    },
                    servers: n
                        .servers()
                        .into_iter()
                        .map(|s| ServerReport {
                            name: sim.name_of(&s.id),
                            live: s.live,
                            load: s.load,
                            master: s.master,
                        })
                        .collect(),
                    peers: sorted(n.peers().into_iter().map(|p| p.name)),
                    link_table: n
                        .link_table()
                        .into_iter()
                        .map(|row| {
                            let path = match row.path {
                                p2pcore::PathKind::Relayed { via } => {
                                    format!("relayed via {}", sim.name_of(&via))
                                }
                                other => other.to_string(),
                            };
                            (sim.name_of(&row.id), path)
                        })
                        .collect(),
                    directory: sorted(n.directory().into_iter().map(|r| r.name)),
                    stats: *n.stats(),
                });
                let report = NodeReport {
                    id: h.id().to_string(),
                    role: h.identity.role().as_str().into(),
                    alive: h.alive(),
                    addr: h.addr.to_string(),
                    lan: h.lan.map(|l| lans[l].name.clone()),
                    boots: h.boots,
                    state,
                };
                (h.name.clone(), report)
            })
            .collect();
        let bytes = sim.hosts().iter().map(|h| (h.name.clone(), h.bytes)).collect();
        let nat = lans.iter().filter_map(|l| l.nat.as_ref().map(|n| (l.name.clone(), n.stats()))).collect();
        Self {
            seed,
            duration_ms,
            digest: sim.digest(),
            wire_digest: sim.wire_digest(),
            events: sim.trace().to_vec(),
            nodes,
            metrics: {
                let cluster = sim.cluster_metrics();
                Metrics {
                    messages: sim.message_metrics(),
                    bytes,
                    network: sim.net_stats(),
                    nat,
                    cluster_formed_ms: cluster.cluster_formed_ms,
                    masters: cluster.masters,
                    failover_ms: cluster.failover_ms,
                    pairs: sim.pair_paths(),
                }
            },
        }
    }
}

fn sorted(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = names.collect();
    v.sort();
    v
}
