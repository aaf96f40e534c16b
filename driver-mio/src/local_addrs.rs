//! The host's interface addresses, as the core wants them
//! ([`p2pcore::Node::set_local_addrs`]): the addresses other nodes on the
//! same LAN could reach this socket at.
//!
//! Interfaces are listed by `if-addrs` (getifaddrs on Unix, Android and
//! Apple platforms, GetAdaptersAddresses on Windows); where listing fails,
//! the socket's own bound address is the fallback (when it is a real one).

use std::net::{IpAddr, SocketAddr};

/// The addresses a socket bound to `bound` (its real local address, port
/// included) can be reached at, sorted, without duplicates:
///
/// * bound to one IP: that address only;
/// * bound to `0.0.0.0`: every IPv4 interface address;
/// * bound to `[::]`: every IPv6 interface address, and the IPv4 ones too
///   when the socket is dual-stack.
///
/// Loopback addresses count only when the socket is bound to one (a
/// loopback address handed to a peer on another machine reaches the wrong
/// host); link-local IPv6 addresses never do (they need a scope the core
/// does not carry); unspecified ones never do.
pub(crate) fn discover(bound: SocketAddr, dual_stack: bool) -> Vec<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    let ips = match if_addrs::get_if_addrs() {
        Ok(list) => list.into_iter().map(|i| i.ip()).collect(),
        Err(e) => {
            tracing::debug!(error = %e, "listing interface addresses failed");
            Vec::new()
        }
    };
    select(bound, dual_stack, ips)
}

/// The selection rules of [`discover`], on a given list of interface IPs.
pub(crate) fn select(bound: SocketAddr, dual_stack: bool, ips: Vec<IpAddr>) -> Vec<SocketAddr> {
    let port = bound.port();
    let mut out: Vec<SocketAddr> = ips
        .into_iter()
        .filter(|ip| !ip.is_unspecified() && !ip.is_loopback() && !is_link_local(ip))
        .filter(|ip| match ip {
            IpAddr::V4(_) => bound.is_ipv4() || dual_stack,
            IpAddr::V6(_) => bound.is_ipv6(),
        })
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn a_specific_bind_is_its_only_address() {
        let bound = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(discover(bound, false), vec![bound]);
        let bound = "[::1]:4000".parse().unwrap();
        assert_eq!(discover(bound, false), vec![bound]);
    }

    #[test]
    fn wildcard_binds_take_the_reachable_interface_addresses() {
        let all =
            ips(&["127.0.0.1", "192.168.1.20", "10.0.0.5", "::1", "fe80::1", "2001:db8::7", "169.254.3.3"]);
        assert_eq!(
            select("0.0.0.0:9".parse().unwrap(), false, all.clone()),
            addrs(&["10.0.0.5:9", "192.168.1.20:9"])
        );
        assert_eq!(select("[::]:9".parse().unwrap(), false, all.clone()), addrs(&["[2001:db8::7]:9"]));
        assert_eq!(
            select("[::]:9".parse().unwrap(), true, all),
            addrs(&["10.0.0.5:9", "192.168.1.20:9", "[2001:db8::7]:9"])
        );
        // Two interfaces with one address count once.
        assert_eq!(
            select("0.0.0.0:9".parse().unwrap(), false, ips(&["10.0.0.5", "10.0.0.5"])),
            addrs(&["10.0.0.5:9"])
        );
    }

    #[test]
    fn this_machine_lists_without_failing() {
        // Whatever the machine has, the result follows the rules.
        for a in discover("0.0.0.0:7".parse().unwrap(), false) {
            assert!(a.is_ipv4() && !a.ip().is_loopback() && a.port() == 7, "{a}");
        }
    }
}
