//! Scenario files: a network and a timeline in TOML.
//!
//! See `tests/SCENARIOS.md` for the full schema with examples. In short:
//!
//! ```toml
//! seed = 7                 # optional, default 1; --seed overrides it
//! duration_ms = 30000      # optional, default 10000
//! [link]                   # defaults for every internet link
//! latency_ms = 20          # also jitter_ms, loss, duplicate, reorder, mtu, ce_mark
//! [[server]]
//! name = "s1"
//! [[lan]]
//! name = "home1"
//! nat = "port-restricted"  # or mapping/filtering/binding_timeout_ms/hairpin
//! [[peer]]
//! name = "alice"
//! lan = "home1"            # omitted: a public host
//! [[event]]
//! at_ms = 10000
//! kill = "s1"              # or restart, partition, heal, send, link, nat_reboot
//! ```
//!
//! Every error names the line and the key, and says what would be accepted.

use crate::nat::{Allocation, Filtering, Mapping, NatConfig, NatPreset};
use crate::sim::{
    Action, CredentialFault, LinkParams, LinkPatch, NetworkAdmission, NodeSpec, SendSpec, Sim, SimConfig,
};
use p2pcore::Reliability;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;
use toml::Spanned;

/// A scenario that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// The key at fault, like `event[2].kill`.
    pub key: String,
    /// What is wrong and what would be accepted.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}, key `{}`: {}", self.key, self.message),
            None => write!(f, "key `{}`: {}", self.key, self.message),
        }
    }
}

impl std::error::Error for ScenarioError {}

fn default_seed() -> u64 {
    1
}
fn default_duration() -> u64 {
    10_000
}

/// The root of a scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Seed of the run.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Virtual run time in milliseconds.
    #[serde(default = "default_duration")]
    pub duration_ms: u64,
    /// Link defaults.
    #[serde(default)]
    pub link: Option<Spanned<LinkSpec>>,
    /// Network-wide settings.
    #[serde(default)]
    pub network: NetworkSpec,
    /// Servers.
    #[serde(default)]
    pub server: Vec<Spanned<ServerSpec>>,
    /// LANs.
    #[serde(default)]
    pub lan: Vec<Spanned<LanSpec>>,
    /// Peers.
    #[serde(default)]
    pub peer: Vec<Spanned<PeerSpec>>,
    /// The timeline.
    #[serde(default)]
    pub event: Vec<Spanned<EventSpec>>,
}

/// Link parameters; every field optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// One-way latency (ms).
    pub latency_ms: Option<f64>,
    /// Jitter (ms), uniform in ±jitter.
    pub jitter_ms: Option<f64>,
    /// Loss probability, 0..=1.
    pub loss: Option<f64>,
    /// Duplication probability, 0..=1.
    pub duplicate: Option<f64>,
    /// Reordering probability, 0..=1.
    pub reorder: Option<f64>,
    /// Largest IP packet, bytes.
    pub mtu: Option<usize>,
    /// Probability of marking an ECN-capable datagram "congestion
    /// experienced", 0..=1.
    pub ce_mark: Option<f64>,
}

/// A `[[server]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// Unique node name.
    pub name: String,
    /// Public IPv6 address instead of IPv4.
    #[serde(default)]
    pub ipv6: bool,
    /// Servers to join through (default: the first server in the file).
    pub introducers: Option<Vec<Spanned<String>>>,
    /// One introducer (shorthand for `introducers = [...]`).
    pub introducer: Option<Spanned<String>>,
    /// Start this many virtual milliseconds into the run (default 0).
    #[serde(default)]
    pub start_ms: u64,
    /// A deliberately wrong credential, to test refusals.
    pub credential: Option<CredentialName>,
}

/// Credential faults as written in scenario files.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialName {
    /// Present nothing (open mode).
    Missing,
    /// Another network's secret.
    WrongSecret,
    /// An expired join token.
    ExpiredToken,
    /// A token from an untrusted issuer.
    UntrustedToken,
}

impl CredentialName {
    fn fault(self) -> CredentialFault {
        match self {
            CredentialName::Missing => CredentialFault::Missing,
            CredentialName::WrongSecret => CredentialFault::WrongSecret,
            CredentialName::ExpiredToken => CredentialFault::ExpiredToken,
            CredentialName::UntrustedToken => CredentialFault::UntrustedToken,
        }
    }
}

/// Admission modes as written in scenario files.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdmissionName {
    /// Anyone may join.
    #[default]
    Open,
    /// A shared secret.
    Secret,
    /// Signed join tokens.
    Token,
}

/// The `[network]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// How nodes prove membership (default open).
    #[serde(default)]
    pub admission: AdmissionName,
    /// The passphrase of `admission = "secret"` (default "p2psim").
    pub secret: Option<String>,
    /// When peers connect to each other (default eager).
    #[serde(default)]
    pub connect: ConnectName,
    /// How peers learn the directory (default full).
    #[serde(default)]
    pub directory: DirectoryName,
    /// Whether peers hole-punch (default true); `false` keeps every
    /// peer-to-peer byte on a relay.
    #[serde(default = "yes")]
    pub hole_punching: bool,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self {
            admission: AdmissionName::default(),
            secret: None,
            connect: ConnectName::default(),
            directory: DirectoryName::default(),
            hole_punching: true,
        }
    }
}

/// `[network] connect`: the peers' connection policy.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectName {
    /// Every peer connects to every peer it learns of.
    #[default]
    Eager,
    /// Peers connect on their first send.
    OnDemand,
}

/// `[network] directory`: how peers learn the directory.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirectoryName {
    /// Every peer is sent every row and every change.
    #[default]
    Full,
    /// Peers look up what they need.
    Lookup,
}

/// A `[[lan]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanSpec {
    /// Unique LAN name.
    pub name: String,
    /// A preset; default `port-restricted`.
    pub nat: Option<NatPreset>,
    /// Override the preset's mapping.
    pub mapping: Option<Mapping>,
    /// Override how mappings pick ports.
    pub allocation: Option<Allocation>,
    /// Whether endpoint-independent mappings keep the internal port (default true).
    pub port_preservation: Option<bool>,
    /// Override the preset's filtering.
    pub filtering: Option<Filtering>,
    /// Mapping idle timeout (ms).
    pub binding_timeout_ms: Option<u64>,
    /// Hairpinning on or off (default off).
    pub hairpin: Option<bool>,
}

/// A `[[peer]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSpec {
    /// Unique node name.
    pub name: String,
    /// The LAN it sits in; omitted for a public host.
    pub lan: Option<Spanned<String>>,
    /// Public IPv6 address instead of IPv4 (public hosts only).
    #[serde(default)]
    pub ipv6: bool,
    /// Servers to contact first (default: every server in the file).
    pub bootstrap: Option<Vec<Spanned<String>>>,
    /// Start this many virtual milliseconds into the run (default 0).
    #[serde(default)]
    pub start_ms: u64,
    /// A deliberately wrong credential, to test refusals.
    pub credential: Option<CredentialName>,
}

fn one() -> u32 {
    1
}
fn hundred() -> usize {
    100
}
fn yes() -> bool {
    true
}

/// The `send = { ... }` action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendEvent {
    /// Sender name.
    pub from: Spanned<String>,
    /// Receiver name.
    pub to: Spanned<String>,
    /// Number of messages (default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// Bytes per message (default 100; at least 12 are used for tracking).
    #[serde(default = "hundred")]
    pub size: usize,
    /// Reliable (default) or unreliable.
    #[serde(default = "yes")]
    pub reliable: bool,
    /// Channel (default 0).
    #[serde(default)]
    pub channel: u8,
}

/// The `link = { ... }` action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkEvent {
    /// Parameters to change.
    #[serde(flatten)]
    pub params: LinkSpec,
    /// Only the link between these two sites (host or LAN names).
    pub between: Option<[String; 2]>,
}

/// One `[[event]]`: a time and exactly one action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    /// When, in virtual milliseconds since the start.
    pub at_ms: f64,
    /// Crash a node.
    pub kill: Option<Spanned<String>>,
    /// Restart a crashed node.
    pub restart: Option<Spanned<String>>,
    /// Cut links between groups of node or LAN names.
    pub partition: Option<Vec<Vec<String>>>,
    /// `heal = true` removes partitions.
    pub heal: Option<bool>,
    /// Send tracked messages.
    pub send: Option<SendEvent>,
    /// Change link parameters.
    pub link: Option<LinkEvent>,
    /// Reboot a LAN's NAT.
    pub nat_reboot: Option<Spanned<String>>,
}

/// A parsed and validated scenario, ready to run.
#[derive(Debug)]
pub struct Loaded {
    /// The raw scenario.
    pub scenario: Scenario,
    text: String,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v.max(0.0) / 1000.0)
}

impl LinkSpec {
    fn patch(&self) -> LinkPatch {
        LinkPatch {
            latency: self.latency_ms.map(ms),
            jitter: self.jitter_ms.map(ms),
            loss: self.loss,
            duplicate: self.duplicate,
            reorder: self.reorder,
            mtu: self.mtu,
            ce_mark: self.ce_mark,
        }
    }

    fn check(&self, key: &str) -> Result<(), (String, String)> {
        for (name, v) in [("latency_ms", self.latency_ms), ("jitter_ms", self.jitter_ms)] {
            if let Some(v) = v
                && !(0.0..=60_000.0).contains(&v)
            {
                return Err((format!("{key}.{name}"), format!("{v} is out of range: use 0 to 60000 ms")));
            }
        }
        for (name, v) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
            ("ce_mark", self.ce_mark),
        ] {
            if let Some(v) = v
                && !(0.0..=1.0).contains(&v)
            {
                return Err((format!("{key}.{name}"), format!("{v} is not a probability: use 0.0 to 1.0")));
            }
        }
        if let Some(m) = self.mtu
            && !(576..=65535).contains(&m)
        {
            return Err((format!("{key}.mtu"), format!("{m} is out of range: use 576 to 65535 bytes")));
        }
        Ok(())
    }
}

impl Loaded {
    /// Parses and validates scenario text.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            ScenarioError { line, key: "(syntax)".into(), message: e.message().trim().to_owned() }
        })?;
        let loaded = Self { scenario, text: text.to_owned() };
        loaded.validate()?;
        Ok(loaded)
    }

    fn err<T>(&self, span: std::ops::Range<usize>, key: String, message: String) -> Result<T, ScenarioError> {
        Err(ScenarioError { line: Some(line_of(&self.text, span.start)), key, message })
    }

    fn node_names(&self) -> Vec<&str> {
        self.scenario
            .server
            .iter()
            .map(|s| s.get_ref().name.as_str())
            .chain(self.scenario.peer.iter().map(|p| p.get_ref().name.as_str()))
            .collect()
    }

    fn lan_names(&self) -> Vec<&str> {
        self.scenario.lan.iter().map(|l| l.get_ref().name.as_str()).collect()
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        let s = &self.scenario;
        if s.duration_ms == 0 || s.duration_ms > 86_400_000 {
            return Err(ScenarioError {
                line: None,
                key: "duration_ms".into(),
                message: format!("{} is out of range: use 1 to 86400000 (24 h)", s.duration_ms),
            });
        }
        if let Some(link) = &s.link
            && let Err((key, msg)) = link.get_ref().check("link")
        {
            return self.err(link.span(), key, msg);
        }
        let mut seen = BTreeSet::new();
        let named = s
            .server
            .iter()
            .enumerate()
            .map(|(i, x)| (format!("server[{i}].name"), x.get_ref().name.as_str(), x.span()))
            .chain(
                s.peer
                    .iter()
                    .enumerate()
                    .map(|(i, x)| (format!("peer[{i}].name"), x.get_ref().name.as_str(), x.span())),
            )
            .chain(
                s.lan
                    .iter()
                    .enumerate()
                    .map(|(i, x)| (format!("lan[{i}].name"), x.get_ref().name.as_str(), x.span())),
            );
        for (key, name, span) in named {
            if let Err(e) = p2pcore::validate_name(name) {
                return self.err(span, key, e.to_string());
            }
            if !seen.insert(name) {
                return self.err(
                    span,
                    key,
                    format!("the name `{name}` is used twice; servers, peers and LANs need distinct names"),
                );
            }
        }
        let lans = self.lan_names();
        for (i, p) in s.peer.iter().enumerate() {
            let p = p.get_ref();
            if let Some(lan) = &p.lan {
                if !lans.contains(&lan.get_ref().as_str()) {
                    return self.err(
                        lan.span(),
                        format!("peer[{i}].lan"),
                        format!("no LAN named `{}` (known: {})", lan.get_ref(), list(&lans)),
                    );
                }
                if p.ipv6 {
                    return self.err(
                        lan.span(),
                        format!("peer[{i}].ipv6"),
                        "LANs are IPv4; ipv6 = true needs a public peer (no lan)".into(),
                    );
                }
            }
        }
        let servers: Vec<&str> = s.server.iter().map(|x| x.get_ref().name.as_str()).collect();
        for (i, srv) in s.server.iter().enumerate() {
            let srv = srv.get_ref();
            let listed = srv.introducers.iter().flatten().chain(srv.introducer.iter());
            for n in listed {
                if !servers.contains(&n.get_ref().as_str()) || *n.get_ref() == srv.name {
                    return self.err(
                        n.span(),
                        format!("server[{i}].introducers"),
                        format!("`{}` is not another server (servers: {})", n.get_ref(), list(&servers)),
                    );
                }
            }
        }
        for (i, p) in s.peer.iter().enumerate() {
            for n in p.get_ref().bootstrap.iter().flatten() {
                if !servers.contains(&n.get_ref().as_str()) {
                    return self.err(
                        n.span(),
                        format!("peer[{i}].bootstrap"),
                        format!("`{}` is not a server (servers: {})", n.get_ref(), list(&servers)),
                    );
                }
            }
        }
        let nodes = self.node_names();
        for (i, ev) in s.event.iter().enumerate() {
            self.validate_event(i, ev, &nodes, &lans)?;
        }
        Ok(())
    }

    fn validate_event(
        &self,
        i: usize,
        ev: &Spanned<EventSpec>,
        nodes: &[&str],
        lans: &[&str],
    ) -> Result<(), ScenarioError> {
        let span = ev.span();
        let e = ev.get_ref();
        let key = |k: &str| format!("event[{i}].{k}");
        let actions = [
            e.kill.is_some(),
            e.restart.is_some(),
            e.partition.is_some(),
            e.heal.is_some(),
            e.send.is_some(),
            e.link.is_some(),
            e.nat_reboot.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if actions != 1 {
            return self.err(
                span,
                key("(action)"),
                format!(
                    "an event needs exactly one of kill, restart, partition, heal, send, link, nat_reboot; found {actions}"
                ),
            );
        }
        if !(0.0..=self.scenario.duration_ms as f64).contains(&e.at_ms) {
            return self.err(
                span,
                key("at_ms"),
                format!("{} is outside the run (0 to duration_ms = {})", e.at_ms, self.scenario.duration_ms),
            );
        }
        let node_ok = |n: &Spanned<String>, k: &str| -> Result<(), ScenarioError> {
            if nodes.contains(&n.get_ref().as_str()) {
                Ok(())
            } else {
                self.err(
                    n.span(),
                    key(k),
                    format!("no node named `{}` (known: {})", n.get_ref(), list(nodes)),
                )
            }
        };
        if let Some(n) = &e.kill {
            node_ok(n, "kill")?;
        }
        if let Some(n) = &e.restart {
            node_ok(n, "restart")?;
        }
        if let Some(groups) = &e.partition {
            for n in groups.iter().flatten() {
                if !nodes.contains(&n.as_str()) && !lans.contains(&n.as_str()) {
                    return self.err(span, key("partition"), format!("`{n}` is neither a node nor a LAN"));
                }
            }
        }
        if e.heal == Some(false) {
            return self.err(span, key("heal"), "write `heal = true` (false does nothing)".into());
        }
        if let Some(send) = &e.send {
            for (k, n) in [("send.from", &send.from), ("send.to", &send.to)] {
                if !nodes.contains(&n.get_ref().as_str()) {
                    return self.err(
                        n.span(),
                        key(k),
                        format!("no node named `{}` (known: {})", n.get_ref(), list(nodes)),
                    );
                }
            }
            if send.from.get_ref() == send.to.get_ref() {
                return self.err(send.to.span(), key("send.to"), "a node cannot send to itself".into());
            }
            if send.count == 0 || send.size > 64 << 20 {
                return self.err(
                    span,
                    key("send"),
                    "count must be at least 1 and size at most 67108864".into(),
                );
            }
        }
        if let Some(link) = &e.link {
            if let Err((k, msg)) = link.params.check(&key("link")) {
                return self.err(span, k, msg);
            }
            if let Some(pair) = &link.between {
                for n in pair {
                    if !nodes.contains(&n.as_str()) && !lans.contains(&n.as_str()) {
                        return self.err(
                            span,
                            key("link.between"),
                            format!("`{n}` is neither a node nor a LAN"),
                        );
                    }
                }
            }
        }
        if let Some(l) = &e.nat_reboot {
            let behind_nat = self.scenario.lan.iter().any(|x| {
                let x = x.get_ref();
                x.name == *l.get_ref() && !matches!(x.nat, Some(NatPreset::Open))
            });
            if !behind_nat {
                return self.err(
                    l.span(),
                    key("nat_reboot"),
                    format!("`{}` is not a LAN behind a NAT", l.get_ref()),
                );
            }
        }
        Ok(())
    }

    /// The NAT configuration of a LAN spec (`None` for an open LAN).
    fn nat_config(l: &LanSpec) -> Option<NatConfig> {
        let mut cfg = l.nat.unwrap_or(NatPreset::PortRestricted).config()?;
        if let Some(m) = l.mapping {
            cfg.mapping = m;
        }
        if let Some(f) = l.filtering {
            cfg.filtering = f;
        }
        if let Some(a) = l.allocation {
            cfg.allocation = a;
        }
        if let Some(p) = l.port_preservation {
            cfg.port_preservation = p;
        }
        if let Some(t) = l.binding_timeout_ms {
            cfg.binding_timeout = Duration::from_millis(t);
        }
        if let Some(h) = l.hairpin {
            cfg.hairpin = h;
        }
        Some(cfg)
    }

    /// Builds the simulator with the whole timeline scheduled.
    pub fn build(&self, seed: u64) -> Sim {
        let s = &self.scenario;
        let link = s
            .link
            .as_ref()
            .map_or_else(LinkParams::default, |l| l.get_ref().patch().apply(LinkParams::default()));
        let mut sim = Sim::new(SimConfig { seed, link, ..SimConfig::default() });
        sim.set_admission(match s.network.admission {
            AdmissionName::Open => NetworkAdmission::Open,
            AdmissionName::Secret => {
                NetworkAdmission::Secret(s.network.secret.clone().unwrap_or_else(|| "p2psim".into()))
            }
            AdmissionName::Token => NetworkAdmission::Token,
        });
        let connect = match s.network.connect {
            ConnectName::Eager => p2pcore::ConnectPolicy::Eager,
            ConnectName::OnDemand => p2pcore::ConnectPolicy::OnDemand,
        };
        let directory = match s.network.directory {
            DirectoryName::Full => p2pcore::DirectoryMode::Full,
            DirectoryName::Lookup => p2pcore::DirectoryMode::Lookup,
        };
        let hole_punching = s.network.hole_punching;
        sim.set_configure(move |c, _| {
            c.peer.connect = connect;
            c.peer.directory = directory;
            c.peer.hole_punching = hole_punching;
        });
        for l in &s.lan {
            let l = l.get_ref();
            sim.add_lan(&l.name, Self::nat_config(l));
        }
        // Server host IDs are their positions: servers are added first, in order.
        let server_index = |name: &str| s.server.iter().position(|x| x.get_ref().name == name);
        for (i, srv) in s.server.iter().enumerate() {
            let srv = srv.get_ref();
            let named: Vec<&Spanned<String>> =
                srv.introducers.iter().flatten().chain(srv.introducer.iter()).collect();
            let bootstrap: Vec<usize> = if srv.introducers.is_some() || srv.introducer.is_some() {
                named.iter().filter_map(|n| server_index(n.get_ref())).collect()
            } else if i > 0 {
                vec![0]
            } else {
                Vec::new()
            };
            sim.add_node(NodeSpec {
                ipv6: srv.ipv6,
                bootstrap,
                start_after: Some(Duration::from_millis(srv.start_ms)),
                credential: srv.credential.map_or(CredentialFault::None, CredentialName::fault),
                ..NodeSpec::server(&srv.name)
            });
        }
        for p in &s.peer {
            let p = p.get_ref();
            let lan = p.lan.as_ref().and_then(|l| sim.find_lan(l.get_ref()));
            let bootstrap: Vec<usize> = match &p.bootstrap {
                Some(names) => names.iter().filter_map(|n| server_index(n.get_ref())).collect(),
                None => (0..s.server.len()).collect(),
            };
            sim.add_node(NodeSpec {
                ipv6: p.ipv6,
                bootstrap,
                start_after: Some(Duration::from_millis(p.start_ms)),
                credential: p.credential.map_or(CredentialFault::None, CredentialName::fault),
                ..NodeSpec::peer(&p.name, lan)
            });
        }
        for ev in &s.event {
            let e = ev.get_ref();
            let host = |n: &str| sim.find(n).unwrap_or(usize::MAX);
            let action = if let Some(n) = &e.kill {
                Action::Kill(host(n.get_ref()))
            } else if let Some(n) = &e.restart {
                Action::Restart(host(n.get_ref()))
            } else if let Some(g) = &e.partition {
                Action::Partition(g.clone())
            } else if e.heal.is_some() {
                Action::Heal
            } else if let Some(x) = &e.send {
                Action::Send(SendSpec {
                    from: host(x.from.get_ref()),
                    to: host(x.to.get_ref()),
                    count: x.count,
                    size: x.size,
                    reliability: if x.reliable { Reliability::Reliable } else { Reliability::Unreliable },
                    channel: x.channel,
                })
            } else if let Some(l) = &e.link {
                Action::Link { patch: l.params.patch(), between: l.between.clone().map(|[a, b]| (a, b)) }
            } else if let Some(l) = &e.nat_reboot {
                Action::NatReboot(sim.find_lan(l.get_ref()).unwrap_or(usize::MAX))
            } else {
                continue;
            };
            sim.schedule(ms(e.at_ms), action);
        }
        sim
    }

    /// The run length.
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.scenario.duration_ms)
    }
}

fn list(names: &[&str]) -> String {
    if names.is_empty() { "none".into() } else { names.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ScenarioError {
        Loaded::parse(text).unwrap_err()
    }

    #[test]
    fn full_example_parses() {
        let text = r#"
seed = 7
duration_ms = 30000
[link]
latency_ms = 20
jitter_ms = 2
loss = 0.01
duplicate = 0.001
reorder = 0.01
mtu = 1500
[[server]]
name = "s1"
[[lan]]
name = "home1"
nat = "port-restricted"
[[lan]]
name = "office"
mapping = "edm"
filtering = "adf"
binding_timeout_ms = 30000
hairpin = true
[[peer]]
name = "alice"
lan = "home1"
[[peer]]
name = "bob"
[[event]]
at_ms = 10000
kill = "s1"
[[event]]
at_ms = 11000
restart = "s1"
[[event]]
at_ms = 12000
partition = [["s1"], ["home1", "bob"]]
[[event]]
at_ms = 13000
heal = true
[[event]]
at_ms = 14000
send = { from = "alice", to = "bob", count = 100, size = 200, reliable = true, channel = 0 }
[[event]]
at_ms = 15000
link = { latency_ms = 80, loss = 0.05 }
[[event]]
at_ms = 16000
nat_reboot = "home1"
"#;
        let l = Loaded::parse(text).unwrap();
        assert_eq!(l.scenario.seed, 7);
        assert_eq!(l.scenario.event.len(), 7);
        let office = Loaded::nat_config(l.scenario.lan[1].get_ref()).unwrap();
        assert_eq!(office.mapping, Mapping::EndpointDependent);
        assert_eq!(office.filtering, Filtering::AddressDependent);
        assert!(office.hairpin);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = err("seed = 1\n[[server]]\nname = \"s1\"\ncolour = \"red\"\n");
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("colour"), "{e}");
    }

    #[test]
    fn bad_preset_is_explained() {
        let e = err("[[lan]]\nname = \"x\"\nnat = \"cone\"\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("port-restricted"), "lists the choices: {e}");
    }

    #[test]
    fn unknown_node_in_event() {
        let e = err("[[server]]\nname = \"s1\"\n[[event]]\nat_ms = 5\nkill = \"s9\"\n");
        assert_eq!(e.key, "event[0].kill");
        assert_eq!(e.line, Some(5));
        assert!(e.message.contains("s9") && e.message.contains("s1"), "{e}");
    }

    #[test]
    fn event_needs_exactly_one_action() {
        let e = err("[[server]]\nname = \"s1\"\n[[event]]\nat_ms = 5\nkill = \"s1\"\nrestart = \"s1\"\n");
        assert!(e.message.contains("exactly one"), "{e}");
        let e = err("[[event]]\nat_ms = 5\n");
        assert!(e.message.contains("found 0"), "{e}");
    }

    #[test]
    fn ranges_are_checked() {
        let e = err("[link]\nloss = 1.5\n");
        assert_eq!(e.key, "link.loss");
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = err("duration_ms = 0\n");
        assert_eq!(e.key, "duration_ms");
        let e = err("[[peer]]\nname = \"a\"\nlan = \"nowhere\"\n");
        assert_eq!(e.key, "peer[0].lan");
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn duplicate_names_rejected() {
        let e = err("[[server]]\nname = \"x\"\n[[peer]]\nname = \"x\"\n");
        assert!(e.message.contains("twice"), "{e}");
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn syntax_errors_have_lines() {
        let e = err("seed = 1\nduration_ms = = 3\n");
        assert_eq!(e.line, Some(2), "{e}");
    }
}
