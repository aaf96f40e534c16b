//! NAT boxes in RFC 4787 terms.
//!
//! A [`Nat`] translates between one LAN and the internet. Its behaviour is set
//! by a [`NatConfig`]:
//!
//! * **mapping** — endpoint-independent (one external port per internal
//!   address, reused for every destination) or endpoint-dependent (a new,
//!   random external port for every destination address and port: the
//!   "symmetric" NAT);
//! * **filtering** — which inbound packets a mapping lets through:
//!   endpoint-independent (anyone), address-dependent (hosts the internal side
//!   has sent to), address-and-port-dependent (exact addresses it has sent to);
//! * **binding timeout** — a mapping with no outbound traffic for this long is
//!   forgotten (RFC 4787 REQ-6: only outbound traffic refreshes it by default);
//! * **hairpinning** — whether an internal host can reach another internal
//!   host through the NAT's public address;
//! * an optional **outbound allow-list** — the `firewalled` preset only lets
//!   traffic out to the servers.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How external ports are assigned (scenario names: `eim`, `edm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mapping {
    /// Endpoint-independent: one mapping per internal address.
    #[serde(rename = "eim")]
    EndpointIndependent,
    /// Endpoint-dependent: a new random port per destination address and port.
    #[serde(rename = "edm")]
    EndpointDependent,
}

/// Which inbound packets an existing mapping accepts (scenario names: `eif`, `adf`, `apdf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Filtering {
    /// From anyone.
    #[serde(rename = "eif")]
    EndpointIndependent,
    /// From any port of an IP the internal host has sent to.
    #[serde(rename = "adf")]
    AddressDependent,
    /// Only from exact addresses the internal host has sent to.
    #[serde(rename = "apdf")]
    AddressAndPortDependent,
}

/// How an endpoint-dependent NAT picks the external port of a new mapping
/// (scenario names: `random`, `sequential`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Allocation {
    /// A random free port: unpredictable.
    #[default]
    Random,
    /// The next free port after the last one allocated, as many carrier and
    /// enterprise NATs do: predictable from the ports servers observed.
    Sequential,
}

/// Named NAT behaviours (scenario names in kebab case: `port-restricted`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatPreset {
    /// No NAT: hosts have public addresses and nothing is filtered.
    Open,
    /// Endpoint-independent mapping and filtering.
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering.
    Restricted,
    /// Endpoint-independent mapping, address-and-port-dependent filtering.
    PortRestricted,
    /// Endpoint-dependent mapping, address-and-port-dependent filtering.
    Symmetric,
    /// Port-restricted, and only traffic to the servers may leave at all.
    Firewalled,
}

impl NatPreset {
    /// Every preset, in the order used by NAT grids.
    pub const ALL: [NatPreset; 6] = [
        NatPreset::Open,
        NatPreset::FullCone,
        NatPreset::Restricted,
        NatPreset::PortRestricted,
        NatPreset::Symmetric,
        NatPreset::Firewalled,
    ];

    /// The scenario-file name of the preset.
    pub fn name(self) -> &'static str {
        match self {
            NatPreset::Open => "open",
            NatPreset::FullCone => "full-cone",
            NatPreset::Restricted => "restricted",
            NatPreset::PortRestricted => "port-restricted",
            NatPreset::Symmetric => "symmetric",
            NatPreset::Firewalled => "firewalled",
        }
    }

    /// Parses a scenario-file name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The NAT configuration of the preset, or `None` for [`NatPreset::Open`].
    pub fn config(self) -> Option<NatConfig> {
        let (mapping, filtering) = match self {
            NatPreset::Open => return None,
            NatPreset::FullCone => (Mapping::EndpointIndependent, Filtering::EndpointIndependent),
            NatPreset::Restricted => (Mapping::EndpointIndependent, Filtering::AddressDependent),
            NatPreset::PortRestricted | NatPreset::Firewalled => {
                (Mapping::EndpointIndependent, Filtering::AddressAndPortDependent)
            }
            NatPreset::Symmetric => (Mapping::EndpointDependent, Filtering::AddressAndPortDependent),
        };
        Some(NatConfig {
            mapping,
            filtering,
            firewalled: self == NatPreset::Firewalled,
            ..NatConfig::default()
        })
    }
}

/// The behaviour of one NAT box.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NatConfig {
    /// How external ports are assigned.
    pub mapping: Mapping,
    /// How a mapping picks its port when it does not preserve the internal one.
    pub allocation: Allocation,
    /// Whether an endpoint-independent mapping keeps the internal port when
    /// it is free (as Linux masquerading does). Off, a NAT reboot moves every
    /// host to a new public port. Default on.
    pub port_preservation: bool,
    /// Which inbound packets are let through.
    pub filtering: Filtering,
    /// Idle time after which a mapping is forgotten. Default 120 s
    /// (RFC 4787 REQ-5 asks for at least 2 minutes; many home routers use 30 s).
    pub binding_timeout: Duration,
    /// Whether internal hosts can reach each other through the public address.
    pub hairpin: bool,
    /// Whether inbound traffic also refreshes a mapping (RFC 4787 allows either).
    pub inbound_refresh: bool,
    /// Only let traffic out to the addresses in [`Nat::set_outbound_allow`].
    pub firewalled: bool,
}

impl Default for NatConfig {
    fn default() -> Self {
        Self {
            mapping: Mapping::EndpointIndependent,
            allocation: Allocation::Random,
            port_preservation: true,
            filtering: Filtering::AddressAndPortDependent,
            binding_timeout: Duration::from_secs(120),
            hairpin: false,
            inbound_refresh: false,
            firewalled: false,
        }
    }
}

/// The path two peers can end on, from their NATs' RFC 4787 behaviour
/// (`None`: a public address): `"direct"`, `"punched"` or `"relayed"`, as
/// `metrics.pairs[].path` names them. `same_nat`: both behind one NAT.
///
/// * One NAT, or none at all: interface addresses reach each other, direct.
/// * A firewalled side sends nowhere but to servers: relayed.
/// * Endpoint-independent mappings on both sides: the ports servers saw are
///   the ports to use, and pinging each other at once opens any filter.
/// * One endpoint-dependent side: the port it uses towards us is unknown.
///   Our filter must let its first ping in (endpoint-independent or
///   address-dependent filtering, or no NAT), so we learn the port from it
///   (peer-reflexive) — or its ports must be predictable (sequential).
/// * Both endpoint-dependent: neither port is known in advance, relayed.
pub fn expected_path(a: Option<&NatConfig>, b: Option<&NatConfig>, same_nat: bool) -> &'static str {
    if same_nat || (a.is_none() && b.is_none()) {
        return "direct";
    }
    if a.is_some_and(|n| n.firewalled) || b.is_some_and(|n| n.firewalled) {
        return "relayed";
    }
    let edm = |n: Option<&NatConfig>| n.is_some_and(|n| n.mapping == Mapping::EndpointDependent);
    // Whether `n` lets in a first packet from an unknown port of a host it
    // has already sent to.
    let lets_in = |n: Option<&NatConfig>| n.is_none_or(|n| n.filtering != Filtering::AddressAndPortDependent);
    let predictable = |n: Option<&NatConfig>| n.is_some_and(|n| n.allocation == Allocation::Sequential);
    match (edm(a), edm(b)) {
        (false, false) => "punched",
        (true, true) => "relayed",
        (true, false) if lets_in(b) || predictable(a) => "punched",
        (false, true) if lets_in(a) || predictable(b) => "punched",
        _ => "relayed",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct MapKey {
    internal: SocketAddr,
    /// `Some` only for endpoint-dependent mappings.
    dest: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
struct Binding {
    port: u16,
    last_active: Instant,
    /// Remote addresses the internal host has sent to through this mapping,
    /// with the last time (each is a session with its own timeout, as in
    /// conntrack: traffic to one remote does not keep another's filter open).
    contacted: BTreeMap<SocketAddr, Instant>,
}

/// Counters of what a NAT did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NatStats {
    /// Mappings created.
    pub mappings_created: u64,
    /// Mappings that expired.
    pub mappings_expired: u64,
    /// Inbound packets dropped for lack of a mapping.
    pub dropped_no_mapping: u64,
    /// Inbound packets dropped by the filter.
    pub dropped_filtered: u64,
    /// Outbound packets dropped by the firewall allow-list.
    pub dropped_firewall: u64,
    /// Hairpinned packets dropped because hairpinning is off.
    pub dropped_hairpin: u64,
}

/// A NAT box with its mapping table.
#[derive(Debug)]
pub struct Nat {
    public_ip: IpAddr,
    config: NatConfig,
    bindings: BTreeMap<MapKey, Binding>,
    by_port: BTreeMap<u16, MapKey>,
    allow_out: BTreeSet<IpAddr>,
    rng: ChaCha20Rng,
    /// Last port a sequential allocator handed out.
    last_port: u16,
    stats: NatStats,
}

const PORT_MIN: u16 = 1024;

impl Nat {
    /// A NAT with public address `public_ip`; `seed` drives port allocation.
    pub fn new(public_ip: IpAddr, config: NatConfig, seed: u64) -> Self {
        Self {
            public_ip,
            config,
            bindings: BTreeMap::new(),
            by_port: BTreeMap::new(),
            allow_out: BTreeSet::new(),
            rng: ChaCha20Rng::seed_from_u64(seed),
            last_port: 0,
            stats: NatStats::default(),
        }
    }

    /// The public address.
    pub fn public_ip(&self) -> IpAddr {
        self.public_ip
    }

    /// The behaviour.
    pub fn config(&self) -> &NatConfig {
        &self.config
    }

    /// What the NAT did so far.
    pub fn stats(&self) -> NatStats {
        self.stats
    }

    /// Destinations a firewalled NAT lets traffic out to.
    pub fn set_outbound_allow(&mut self, ips: impl IntoIterator<Item = IpAddr>) {
        self.allow_out = ips.into_iter().collect();
    }

    /// Forgets every mapping, as a rebooting router does.
    pub fn reboot(&mut self) {
        self.bindings.clear();
        self.by_port.clear();
    }

    /// Number of live mappings.
    pub fn mapping_count(&self) -> usize {
        self.bindings.len()
    }

    fn expire(&mut self, now: Instant) {
        let timeout = self.config.binding_timeout;
        let dead: Vec<MapKey> = self
            .bindings
            .iter()
            .filter(|(_, b)| now.saturating_duration_since(b.last_active) >= timeout)
            .map(|(k, _)| *k)
            .collect();
        for k in dead {
            if let Some(b) = self.bindings.remove(&k) {
                self.by_port.remove(&b.port);
                self.stats.mappings_expired += 1;
            }
        }
        for b in self.bindings.values_mut() {
            b.contacted.retain(|_, t| now.saturating_duration_since(*t) < timeout);
        }
    }

    fn allocate_port(&mut self, preferred: u16) -> Option<u16> {
        if self.config.mapping == Mapping::EndpointIndependent
            && self.config.port_preservation
            && preferred >= PORT_MIN
            && !self.by_port.contains_key(&preferred)
        {
            return Some(preferred);
        }
        if self.config.allocation == Allocation::Sequential {
            if self.last_port < PORT_MIN {
                self.last_port = self.rng.random_range(PORT_MIN..=u16::MAX - 4096);
            }
            let start = self.last_port;
            let mut p = start;
            loop {
                p = if p == u16::MAX { PORT_MIN } else { p + 1 };
                if !self.by_port.contains_key(&p) {
                    self.last_port = p;
                    return Some(p);
                }
                if p == start {
                    return None;
                }
            }
        }
        // Random ports, as many endpoint-dependent NATs pick them.
        for _ in 0..64 {
            let p = self.rng.random_range(PORT_MIN..=u16::MAX);
            if !self.by_port.contains_key(&p) {
                return Some(p);
            }
        }
        // A nearly full table: scan for any free port.
        (PORT_MIN..=u16::MAX).find(|p| !self.by_port.contains_key(p))
    }

    /// Translates an outbound packet from `internal` to `dest`. Returns the
    /// public source address, or `None` if the packet is dropped.
    pub fn outbound(&mut self, now: Instant, internal: SocketAddr, dest: SocketAddr) -> Option<SocketAddr> {
        self.expire(now);
        if self.config.firewalled && !self.allow_out.contains(&dest.ip()) {
            self.stats.dropped_firewall += 1;
            return None;
        }
        let key =
            MapKey { internal, dest: (self.config.mapping == Mapping::EndpointDependent).then_some(dest) };
        if !self.bindings.contains_key(&key) {
            let port = self.allocate_port(internal.port())?;
            self.bindings.insert(key, Binding { port, last_active: now, contacted: BTreeMap::new() });
            self.by_port.insert(port, key);
            self.stats.mappings_created += 1;
        }
        let b = self.bindings.get_mut(&key)?;
        b.last_active = now;
        b.contacted.insert(dest, now);
        Some(SocketAddr::new(self.public_ip, b.port))
    }

    /// Translates an inbound packet from `remote` to public port `port`.
    /// Returns the internal destination, or `None` if the packet is dropped.
    pub fn inbound(&mut self, now: Instant, remote: SocketAddr, port: u16) -> Option<SocketAddr> {
        self.expire(now);
        let Some(key) = self.by_port.get(&port).copied() else {
            self.stats.dropped_no_mapping += 1;
            return None;
        };
        let b = self.bindings.get_mut(&key)?;
        let allowed = match self.config.filtering {
            Filtering::EndpointIndependent => true,
            Filtering::AddressDependent => b.contacted.keys().any(|a| a.ip() == remote.ip()),
            Filtering::AddressAndPortDependent => b.contacted.contains_key(&remote),
        };
        if !allowed {
            self.stats.dropped_filtered += 1;
            return None;
        }
        if self.config.inbound_refresh {
            b.last_active = now;
            if let Some(t) = b.contacted.get_mut(&remote) {
                *t = now;
            }
        }
        Some(key.internal)
    }

    /// Handles a packet from `internal` to this NAT's own public address
    /// (`public_port`). Returns `(translated source, internal destination)`
    /// when hairpinning delivers it.
    pub fn hairpin(
        &mut self,
        now: Instant,
        internal: SocketAddr,
        public_port: u16,
    ) -> Option<(SocketAddr, SocketAddr)> {
        let dest = SocketAddr::new(self.public_ip, public_port);
        if !self.config.hairpin {
            self.stats.dropped_hairpin += 1;
            return None;
        }
        let src = self.outbound(now, internal, dest)?;
        let to = self.inbound(now, src, public_port)?;
        Some((src, to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }
    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }
    fn nat(preset: NatPreset) -> Nat {
        Nat::new("198.51.100.1".parse().unwrap(), preset.config().unwrap(), 1)
    }

    const HOST: &str = "10.0.0.2:5000";
    const S1: &str = "203.0.113.1:7000";
    const S1_OTHER_PORT: &str = "203.0.113.1:7001";
    const S2: &str = "203.0.113.2:7000";

    #[test]
    fn open_has_no_nat() {
        assert!(NatPreset::Open.config().is_none());
        assert_eq!(NatPreset::from_name("port-restricted"), Some(NatPreset::PortRestricted));
        assert_eq!(NatPreset::from_name("bogus"), None);
    }

    #[test]
    fn eim_reuses_one_port_for_all_destinations() {
        let now = t0();
        let mut n = nat(NatPreset::PortRestricted);
        let p1 = n.outbound(now, a(HOST), a(S1)).unwrap();
        let p2 = n.outbound(now, a(HOST), a(S2)).unwrap();
        assert_eq!(p1, p2);
        // Port preservation when the port is free.
        assert_eq!(p1.port(), 5000);
    }

    #[test]
    fn sequential_allocation_is_predictable() {
        let now = t0();
        let cfg = NatConfig {
            mapping: Mapping::EndpointDependent,
            allocation: Allocation::Sequential,
            ..NatConfig::default()
        };
        let mut n = Nat::new("198.51.100.1".parse().unwrap(), cfg, 1);
        let p1 = n.outbound(now, a(HOST), a(S1)).unwrap().port();
        let p2 = n.outbound(now, a(HOST), a(S2)).unwrap().port();
        let p3 = n.outbound(now, a(HOST), a(S1_OTHER_PORT)).unwrap().port();
        assert_eq!((p2, p3), (p1 + 1, p1 + 2));
    }

    #[test]
    fn edm_uses_a_new_port_per_destination() {
        let now = t0();
        let mut n = nat(NatPreset::Symmetric);
        let p1 = n.outbound(now, a(HOST), a(S1)).unwrap();
        let p2 = n.outbound(now, a(HOST), a(S2)).unwrap();
        let p3 = n.outbound(now, a(HOST), a(S1_OTHER_PORT)).unwrap();
        assert_ne!(p1.port(), p2.port());
        assert_ne!(p1.port(), p3.port());
        assert_eq!(n.outbound(now, a(HOST), a(S1)).unwrap(), p1, "same destination, same port");
        // Each mapping only answers to its own destination.
        assert_eq!(n.inbound(now, a(S1), p1.port()), Some(a(HOST)));
        assert_eq!(n.inbound(now, a(S2), p1.port()), None);
    }

    #[test]
    fn filtering_behaviours() {
        let now = t0();
        for (preset, from_same_ip_other_port, from_other_ip) in [
            (NatPreset::FullCone, true, true),
            (NatPreset::Restricted, true, false),
            (NatPreset::PortRestricted, false, false),
        ] {
            let mut n = nat(preset);
            let ext = n.outbound(now, a(HOST), a(S1)).unwrap();
            assert_eq!(n.inbound(now, a(S1), ext.port()), Some(a(HOST)), "{preset:?}");
            assert_eq!(
                n.inbound(now, a(S1_OTHER_PORT), ext.port()).is_some(),
                from_same_ip_other_port,
                "{preset:?}"
            );
            assert_eq!(n.inbound(now, a(S2), ext.port()).is_some(), from_other_ip, "{preset:?}");
        }
    }

    #[test]
    fn unsolicited_inbound_is_dropped() {
        let now = t0();
        let mut n = nat(NatPreset::FullCone);
        assert_eq!(n.inbound(now, a(S1), 5000), None);
        assert_eq!(n.stats().dropped_no_mapping, 1);
    }

    #[test]
    fn bindings_expire_without_outbound_traffic() {
        let now = t0();
        let mut cfg = NatPreset::PortRestricted.config().unwrap();
        cfg.binding_timeout = Duration::from_secs(30);
        let mut n = Nat::new("198.51.100.1".parse().unwrap(), cfg, 1);
        let ext = n.outbound(now, a(HOST), a(S1)).unwrap();
        // Inbound traffic does not refresh by default.
        assert!(n.inbound(now + Duration::from_secs(20), a(S1), ext.port()).is_some());
        assert!(n.inbound(now + Duration::from_secs(31), a(S1), ext.port()).is_none());
        assert_eq!(n.stats().mappings_expired, 1);
        // Outbound traffic refreshes.
        let ext = n.outbound(now + Duration::from_secs(40), a(HOST), a(S1)).unwrap();
        n.outbound(now + Duration::from_secs(60), a(HOST), a(S1)).unwrap();
        assert!(n.inbound(now + Duration::from_secs(80), a(S1), ext.port()).is_some());
    }

    #[test]
    fn each_remote_has_its_own_filter_timeout() {
        // Traffic to S1 keeps the mapping alive, but the filter entry for S2
        // expires on its own (as conntrack times out each flow).
        let now = t0();
        let mut cfg = NatPreset::PortRestricted.config().unwrap();
        cfg.binding_timeout = Duration::from_secs(30);
        let mut n = Nat::new("198.51.100.1".parse().unwrap(), cfg, 1);
        let ext = n.outbound(now, a(HOST), a(S2)).unwrap();
        for s in (10..=60).step_by(10) {
            assert_eq!(n.outbound(now + Duration::from_secs(s), a(HOST), a(S1)), Some(ext), "one mapping");
        }
        assert!(n.inbound(now + Duration::from_secs(61), a(S1), ext.port()).is_some());
        assert!(
            n.inbound(now + Duration::from_secs(61), a(S2), ext.port()).is_none(),
            "S2's session expired"
        );
        n.outbound(now + Duration::from_secs(62), a(HOST), a(S2)).unwrap();
        assert!(n.inbound(now + Duration::from_secs(63), a(S2), ext.port()).is_some(), "reopened");
    }

    #[test]
    fn expected_paths_follow_the_nat_behaviour() {
        let cfg = |p: NatPreset| p.config();
        let path = |a: NatPreset, b: NatPreset| expected_path(cfg(a).as_ref(), cfg(b).as_ref(), false);
        use NatPreset::*;
        assert_eq!(path(Open, Open), "direct");
        assert_eq!(path(PortRestricted, PortRestricted), "punched");
        assert_eq!(path(Symmetric, Restricted), "punched");
        assert_eq!(path(Symmetric, Open), "punched");
        assert_eq!(path(Symmetric, PortRestricted), "relayed");
        assert_eq!(path(Symmetric, Symmetric), "relayed");
        assert_eq!(path(Firewalled, Open), "relayed");
        let seq = NatConfig { allocation: Allocation::Sequential, ..cfg(Symmetric).unwrap() };
        assert_eq!(expected_path(Some(&seq), cfg(PortRestricted).as_ref(), false), "punched");
        assert_eq!(expected_path(Some(&seq), Some(&seq), false), "relayed");
        assert_eq!(expected_path(cfg(Symmetric).as_ref(), cfg(Symmetric).as_ref(), true), "direct");
    }

    #[test]
    fn without_port_preservation_a_reboot_moves_the_host() {
        let now = t0();
        let cfg = NatConfig { port_preservation: false, ..NatPreset::PortRestricted.config().unwrap() };
        let mut n = Nat::new("198.51.100.1".parse().unwrap(), cfg.clone(), 1);
        let before = n.outbound(now, a(HOST), a(S1)).unwrap();
        assert_ne!(before.port(), a(HOST).port());
        n.reboot();
        let after = n.outbound(now, a(HOST), a(S1)).unwrap();
        assert_ne!(before, after);
        // With preservation (the default) the host keeps its port.
        let mut n = Nat::new("198.51.100.1".parse().unwrap(), NatPreset::PortRestricted.config().unwrap(), 1);
        let before = n.outbound(now, a(HOST), a(S1)).unwrap();
        n.reboot();
        assert_eq!(n.outbound(now, a(HOST), a(S1)), Some(before));
    }

    #[test]
    fn inbound_refresh_when_enabled() {
        let now = t0();
        let mut cfg = NatPreset::FullCone.config().unwrap();
        cfg.binding_timeout = Duration::from_secs(30);
        cfg.inbound_refresh = true;
        let mut n = Nat::new("198.51.100.1".parse().unwrap(), cfg, 1);
        let ext = n.outbound(now, a(HOST), a(S1)).unwrap();
        assert!(n.inbound(now + Duration::from_secs(20), a(S1), ext.port()).is_some());
        assert!(n.inbound(now + Duration::from_secs(40), a(S1), ext.port()).is_some());
    }

    #[test]
    fn reboot_forgets_mappings() {
        let now = t0();
        let mut n = nat(NatPreset::FullCone);
        let ext = n.outbound(now, a(HOST), a(S1)).unwrap();
        n.reboot();
        assert_eq!(n.inbound(now, a(S1), ext.port()), None);
        assert_eq!(n.mapping_count(), 0);
    }

    #[test]
    fn firewalled_only_talks_to_allowed_hosts() {
        let now = t0();
        let mut n = nat(NatPreset::Firewalled);
        n.set_outbound_allow([a(S1).ip()]);
        assert!(n.outbound(now, a(HOST), a(S1)).is_some());
        assert!(n.outbound(now, a(HOST), a(S2)).is_none());
        assert_eq!(n.stats().dropped_firewall, 1);
    }

    #[test]
    fn hairpinning_on_and_off() {
        let now = t0();
        let other = a("10.0.0.3:5000");
        for hairpin in [true, false] {
            let mut cfg = NatPreset::FullCone.config().unwrap();
            cfg.hairpin = hairpin;
            let mut n = Nat::new("198.51.100.1".parse().unwrap(), cfg, 1);
            // `other` has a public mapping (it talked to a server).
            let other_ext = n.outbound(now, other, a(S1)).unwrap();
            let res = n.hairpin(now, a(HOST), other_ext.port());
            if hairpin {
                let (src, to) = res.unwrap();
                assert_eq!(to, other);
                assert_eq!(src.ip(), n.public_ip(), "hairpinned source is the external address");
            } else {
                assert!(res.is_none());
                assert_eq!(n.stats().dropped_hairpin, 1);
            }
        }
    }

    #[test]
    fn port_allocation_is_seeded() {
        let now = t0();
        let ports = |seed| {
            let mut n =
                Nat::new("198.51.100.1".parse().unwrap(), NatPreset::Symmetric.config().unwrap(), seed);
            (0..5u16)
                .map(|i| n.outbound(now, a(HOST), SocketAddr::new(a(S1).ip(), 7000 + i)).unwrap().port())
                .collect::<Vec<_>>()
        };
        assert_eq!(ports(3), ports(3));
        assert_ne!(ports(3), ports(4));
    }
}
