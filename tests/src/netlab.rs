//! The real-NAT lab: network namespaces, veth pairs and Linux netfilter
//! NATs (nftables + conntrack) that real p2pcore processes run behind.
//!
//! One lab is a private "internet" — a namespace holding a bridge — that
//! server namespaces, public hosts and home routers plug into with veth
//! pairs. A router is a namespace with a WAN leg on the bridge, a LAN leg per
//! host behind it, IP forwarding, and an nftables ruleset for one of the
//! [`NatPreset`]s (the simulator's presets, so the lab and the simulator
//! share [`crate::nat::expected_path`]):
//!
//! | preset | mapping | filtering |
//! |---|---|---|
//! | full cone | masquerade (keeps the port) | a DNAT of each host's port from anyone |
//! | restricted | masquerade | that DNAT only from addresses the host sent to (a dynamic set) |
//! | port-restricted | masquerade | conntrack: only replies (`ct state new` dropped) |
//! | symmetric | `masquerade random` (a new port per destination) | conntrack |
//! | firewalled | masquerade | conntrack, and out only to the servers |
//!
//! Unsolicited inbound packets are dropped in prerouting at priority −150,
//! after conntrack has classified them (−200) but before NAT (−100) and
//! before any entry is confirmed: dropped later, an entry for the router's
//! own port would be confirmed, and the host's next packet to that remote
//! would be given a new port — a failure no real router has.
//!
//! Addresses are only ever inside the lab's namespaces: 203.0.113.0/24
//! (TEST-NET-3) on the bridge, 10.N.0.0/24 behind router N. Everything is
//! torn down when the [`Lab`] is dropped (also when a test fails), and
//! [`Lab::new`] first removes what a killed run left behind.

use crate::nat::NatPreset;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The network on the bridge.
const INET: [u8; 3] = [203, 0, 113];
/// Port hosts behind routers bind (the second host behind one router: +1),
/// so the routers' static rules know them.
pub const HOST_PORT: u16 = 7000;

/// Why the lab cannot run here.
#[derive(Debug)]
pub struct Unavailable(pub String);

/// A namespace of the lab with an address: a server, a public host, or a
/// host behind a router.
#[derive(Debug, Clone)]
pub struct Station {
    /// Its namespace.
    pub ns: String,
    /// Its address (on the bridge, or on its router's LAN).
    pub ip: Ipv4Addr,
    /// The port it should bind.
    pub port: u16,
}

/// A home router.
#[derive(Debug, Clone)]
pub struct Router {
    /// Its namespace.
    pub ns: String,
    /// Its public (WAN) address.
    pub wan: Ipv4Addr,
    /// The behaviour it was built with.
    pub preset: NatPreset,
    /// Its index (the LAN is 10.index.0.0/24).
    index: u8,
    hosts: u8,
    hairpin: bool,
}

/// One lab: its namespaces, torn down on drop.
#[derive(Debug)]
pub struct Lab {
    tag: String,
    inet: String,
    namespaces: Vec<String>,
    next_inet: u8,
    next_router: u8,
    next_link: u32,
    servers: Vec<Ipv4Addr>,
}

static LABS: AtomicU32 = AtomicU32::new(0);

/// Runs a command; its error output on failure.
fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    run(Command::new("ip").args(args))
}

/// Runs `program args` inside namespace `ns`.
pub fn netns_exec(ns: &str, program: &str, args: &[&str]) -> Result<String, String> {
    run(Command::new("ip").args(["netns", "exec", ns, program]).args(args))
}

/// A `Command` for `program` inside namespace `ns`, to spawn.
pub fn netns_command(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program);
    c
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces and links left by labs of processes that are gone
/// (a run killed before its guards ran).
pub fn cleanup_leftovers() {
    let owner =
        |name: &str| -> Option<u32> { name.strip_prefix("p2pl")?.split(['-', 'v']).next()?.parse().ok() };
    if let Ok(list) = ip(&["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if owner(name).is_some_and(|pid| !pid_alive(pid)) {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    if let Ok(links) = ip(&["-o", "link", "show"]) {
        for name in
            links.lines().filter_map(|l| l.split(": ").nth(1)).map(|n| n.split('@').next().unwrap_or(n))
        {
            if owner(name).is_some_and(|pid| !pid_alive(pid)) {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}

impl Lab {
    /// A new, empty lab (the internet bridge only). Fails with
    /// [`Unavailable`] when namespaces cannot be made here (not root, no
    /// `ip`/`nft`/`conntrack`), saying which.
    pub fn new() -> Result<Self, Unavailable> {
        for tool in ["ip", "nft", "conntrack"] {
            if run(Command::new("sh").args(["-c", &format!("command -v {tool}")])).is_err() {
                return Err(Unavailable(format!(
                    "`{tool}` is missing (install iproute2, nftables, conntrack)"
                )));
            }
        }
        cleanup_leftovers();
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let tag = format!("p2pl{}-{n}", std::process::id());
        let inet = format!("{tag}-inet");
        ip(&["netns", "add", &inet])
            .map_err(|e| Unavailable(format!("cannot create a network namespace: {e}")))?;
        let mut lab = Self {
            tag,
            inet: inet.clone(),
            namespaces: vec![inet.clone()],
            next_inet: 11,
            next_router: 1,
            next_link: 0,
            servers: Vec::new(),
        };
        lab.setup_inet().map_err(Unavailable)?;
        Ok(lab)
    }

    fn setup_inet(&mut self) -> Result<(), String> {
        let ns = self.inet.clone();
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &ns, "link", "set", "br0", "up"])?;
        Ok(())
    }

    fn namespace(&mut self, name: &str) -> Result<String, String> {
        let ns = format!("{}-{name}", self.tag);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A veth pair from `a` (named `a_name` there) to `b` (`b_name`).
    fn veth(&mut self, a: &str, a_name: &str, b: &str, b_name: &str) -> Result<(), String> {
        // Made in the root namespace under unique names (15 bytes at most),
        // then moved and renamed.
        let pid = std::process::id();
        let n = self.next_link;
        self.next_link += 1;
        let (x, y) = (format!("p2pl{pid}v{n}a"), format!("p2pl{pid}v{n}b"));
        ip(&["link", "add", &x, "type", "veth", "peer", "name", &y])?;
        ip(&["link", "set", &x, "netns", a])?;
        ip(&["link", "set", &y, "netns", b])?;
        ip(&["-n", a, "link", "set", &x, "name", a_name])?;
        ip(&["-n", b, "link", "set", &y, "name", b_name])?;
        ip(&["-n", a, "link", "set", a_name, "up"])?;
        ip(&["-n", b, "link", "set", b_name, "up"])?;
        Ok(())
    }

    /// A namespace with one leg on the internet bridge; its address there.
    fn on_bridge(&mut self, name: &str) -> Result<(String, Ipv4Addr), String> {
        let ns = self.namespace(name)?;
        let addr = Ipv4Addr::new(INET[0], INET[1], INET[2], self.next_inet);
        self.next_inet += 1;
        let port = format!("{}p", &name[..name.len().min(10)]);
        let inet = self.inet.clone();
        self.veth(&ns, "wan", &inet, &port)?;
        ip(&["-n", &inet, "link", "set", &port, "master", "br0"])?;
        ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "wan"])?;
        Ok((ns, addr))
    }

    /// A server's station, with a public address.
    pub fn server(&mut self, name: &str, port: u16) -> Result<Station, String> {
        let (ns, ip) = self.on_bridge(name)?;
        self.servers.push(ip);
        Ok(Station { ns, ip, port })
    }

    /// A host with a public address (no NAT).
    pub fn public(&mut self, name: &str, port: u16) -> Result<Station, String> {
        let (ns, ip) = self.on_bridge(name)?;
        Ok(Station { ns, ip, port })
    }

    /// A home router with `preset`'s behaviour (not [`NatPreset::Open`]).
    /// `hairpin`: hosts behind it reach each other through its public
    /// address. Add its hosts with [`Lab::behind`], then call
    /// [`Lab::configure`].
    pub fn router(&mut self, name: &str, preset: NatPreset, hairpin: bool) -> Result<Router, String> {
        assert!(preset != NatPreset::Open, "an open host is Lab::public");
        // Its own namespace name space: a router may share a host's name.
        let (ns, wan) = self.on_bridge(&format!("rt{name}"))?;
        let index = self.next_router;
        self.next_router += 1;
        netns_exec(&ns, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        // Frames switched on the LAN bridge stay out of the IP hooks where
        // the kernel lets a namespace say so (br_netfilter, when loaded).
        let _ = netns_exec(&ns, "sysctl", &["-qw", "net.bridge.bridge-nf-call-iptables=0"]);
        // The LAN: a bridge the hosts plug into, so they reach each other
        // directly, as on a home network.
        ip(&["-n", &ns, "link", "add", "lan", "type", "bridge"])?;
        ip(&["-n", &ns, "link", "set", "lan", "up"])?;
        ip(&["-n", &ns, "addr", "add", &format!("10.{index}.0.1/24"), "dev", "lan"])?;
        Ok(Router { ns, wan, preset, index, hosts: 0, hairpin })
    }

    /// A host behind `router`, on its LAN.
    pub fn behind(&mut self, router: &mut Router, name: &str) -> Result<Station, String> {
        let ns = self.namespace(name)?;
        router.hosts += 1;
        let h = router.hosts;
        let leg = format!("h{h}");
        let r = router.ns.clone();
        self.veth(&r, &leg, &ns, "eth0")?;
        ip(&["-n", &r, "link", "set", &leg, "master", "lan"])?;
        let gw = Ipv4Addr::new(10, router.index, 0, 1);
        let me = Ipv4Addr::new(10, router.index, 0, 1 + h);
        ip(&["-n", &ns, "addr", "add", &format!("{me}/24"), "dev", "eth0"])?;
        ip(&["-n", &ns, "route", "add", "default", "via", &gw.to_string()])?;
        Ok(Station { ns, ip: me, port: HOST_PORT + u16::from(h) - 1 })
    }

    /// Installs `router`'s NAT rules (after its hosts were added).
    pub fn configure(&self, router: &Router) -> Result<(), String> {
        let rules = ruleset(router, &self.servers);
        run(Command::new("ip").args(["netns", "exec", &router.ns, "nft", "-f", "-"]).stdin_str(&rules))
            .map_err(|e| format!("{e}\n{rules}"))?;
        Ok(())
    }

    /// Forgets every NAT mapping `router` holds (`conntrack -F`), as a
    /// router reboot or a mapping timeout would.
    pub fn flush_conntrack(&self, router: &Router) -> Result<(), String> {
        netns_exec(&router.ns, "conntrack", &["-F"]).map(|_| ())
    }

    /// Drops `percent` % of the packets crossing `router`'s WAN leg, both
    /// ways (nftables `numgen random`: no netem needed).
    pub fn wan_loss(&self, router: &Router, percent: u32) -> Result<(), String> {
        let rules = format!(
            "table ip loss {{\n  chain in {{\n    type filter hook prerouting priority -300; policy accept;\n    \
             iifname \"wan\" numgen random mod 100 < {percent} drop\n  }}\n  chain out {{\n    \
             type filter hook postrouting priority 300; policy accept;\n    \
             oifname \"wan\" numgen random mod 100 < {percent} drop\n  }}\n}}\n"
        );
        run(Command::new("ip").args(["netns", "exec", &router.ns, "nft", "-f", "-"]).stdin_str(&rules))
            .map(|_| ())
    }

    /// Short UDP conntrack timeouts on `router` (seconds), to exercise
    /// keep-alives against a router that forgets idle mappings fast.
    pub fn udp_timeouts(&self, router: &Router, unreplied: u32, stream: u32) -> Result<(), String> {
        netns_exec(
            &router.ns,
            "sysctl",
            &[
                "-qw",
                &format!("net.netfilter.nf_conntrack_udp_timeout={unreplied}"),
                &format!("net.netfilter.nf_conntrack_udp_timeout_stream={stream}"),
            ],
        )
        .map(|_| ())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its interfaces, and with them their
        // veth peers: nothing is left in the root namespace.
        for ns in self.namespaces.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// The nftables ruleset of a router.
fn ruleset(r: &Router, servers: &[Ipv4Addr]) -> String {
    let ports: Vec<u16> = (0..u16::from(r.hosts)).map(|h| HOST_PORT + h).collect();
    let host = |h: u16| Ipv4Addr::new(10, r.index, 0, 2 + h as u8);
    let port_set = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
    let mut pre_filter = Vec::new();
    let mut pre_nat = Vec::new();
    let mut forward = Vec::new();
    let mut post = Vec::new();
    let mut sets = String::new();
    let masquerade = if r.preset == NatPreset::Symmetric { "masquerade random" } else { "masquerade" };
    post.push(format!("oifname \"wan\" {masquerade}"));
    match r.preset {
        NatPreset::FullCone => {
            pre_filter.push(format!("iifname \"wan\" ct state new udp dport != {{ {port_set} }} drop"));
            for (h, p) in ports.iter().enumerate() {
                pre_nat.push(format!("iifname \"wan\" udp dport {p} dnat to {}:{p}", host(h as u16)));
            }
        }
        NatPreset::Restricted => {
            sets.push_str(
                "  set contacted {\n    type ipv4_addr\n    flags timeout\n    timeout 120s\n  }\n",
            );
            pre_filter.push("iifname \"wan\" ct state new ip saddr != @contacted drop".into());
            for (h, p) in ports.iter().enumerate() {
                pre_nat.push(format!(
                    "iifname \"wan\" ip saddr @contacted udp dport {p} dnat to {}:{p}",
                    host(h as u16)
                ));
            }
            forward.push("iifname != \"wan\" oifname \"wan\" update @contacted { ip daddr }".into());
        }
        NatPreset::PortRestricted | NatPreset::Symmetric => {
            pre_filter.push("iifname \"wan\" ct state new drop".into());
        }
        NatPreset::Firewalled => {
            pre_filter.push("iifname \"wan\" ct state new drop".into());
            let servers = servers.iter().map(Ipv4Addr::to_string).collect::<Vec<_>>().join(", ");
            forward.push(format!("iifname != \"wan\" oifname \"wan\" ip daddr != {{ {servers} }} drop"));
        }
        NatPreset::Open => {}
    }
    if r.hairpin {
        // A host sending to the public address and a sibling's port reaches
        // the sibling, seen as coming from the router (so replies come back
        // through it).
        for (h, p) in ports.iter().enumerate() {
            pre_nat.push(format!(
                "iifname != \"wan\" ip daddr {} udp dport {p} dnat to {}:{p}",
                r.wan,
                host(h as u16)
            ));
        }
        // Only what was hairpinned: with br_netfilter loaded, frames the
        // LAN bridge switches between hosts cross these hooks too, and
        // must pass untouched, as on a router's switch.
        post.push(format!("ct status dnat oifname != \"wan\" ip saddr 10.{}.0.0/24 masquerade", r.index));
    }
    let chain = |name: &str, hook: &str, kind: &str, prio: i32, rules: &[String]| {
        let body: String = rules.iter().map(|r| format!("    {r}\n")).collect();
        format!(
            "  chain {name} {{\n    type {kind} hook {hook} priority {prio}; policy accept;\n{body}  }}\n"
        )
    };
    format!(
        "table ip lab {{\n{sets}{}{}{}{}}}\n",
        chain("lab_filter", "prerouting", "filter", -150, &pre_filter),
        chain("lab_dnat", "prerouting", "nat", -100, &pre_nat),
        chain("lab_forward", "forward", "filter", 0, &forward),
        chain("lab_snat", "postrouting", "nat", 100, &post),
    )
}

/// `Command::output` with text on stdin.
trait StdinStr {
    fn stdin_str(&mut self, text: &str) -> &mut Self;
}

impl StdinStr for Command {
    fn stdin_str(&mut self, text: &str) -> &mut Self {
        // `output()` would give the child a closed stdin; a file holding the
        // text works with it and needs no thread.
        let path = std::env::temp_dir().join(format!(
            "p2pl-{}-{}.nft",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed) + 1_000_000
        ));
        if std::fs::write(&path, text).is_ok()
            && let Ok(f) = std::fs::File::open(&path)
        {
            self.stdin(f);
        }
        let _ = std::fs::remove_file(&path);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(preset: NatPreset, hosts: u8, hairpin: bool) -> Router {
        Router { ns: "r".into(), wan: Ipv4Addr::new(203, 0, 113, 40), preset, index: 3, hosts, hairpin }
    }

    #[test]
    fn rulesets_drop_unsolicited_traffic_before_nat() {
        let servers = [Ipv4Addr::new(203, 0, 113, 11)];
        let pr = ruleset(&router(NatPreset::PortRestricted, 1, false), &servers);
        assert!(pr.contains("hook prerouting priority -150") && pr.contains("ct state new drop"), "{pr}");
        assert!(pr.contains("oifname \"wan\" masquerade\n"));
        let sym = ruleset(&router(NatPreset::Symmetric, 1, false), &servers);
        assert!(sym.contains("masquerade random"));
        let cone = ruleset(&router(NatPreset::FullCone, 2, false), &servers);
        assert!(cone.contains("udp dport 7001 dnat to 10.3.0.3:7001"), "{cone}");
        let fw = ruleset(&router(NatPreset::Firewalled, 1, false), &servers);
        assert!(fw.contains("ip daddr != { 203.0.113.11 } drop"), "{fw}");
        let hp = ruleset(&router(NatPreset::PortRestricted, 2, true), &servers);
        assert!(hp.contains("ip daddr 203.0.113.40 udp dport 7000 dnat to 10.3.0.2:7000"), "{hp}");
        assert!(hp.contains("ct status dnat oifname != \"wan\" ip saddr 10.3.0.0/24 masquerade"), "{hp}");
    }
}
