//! This host's own addresses, registered as LAN endpoints so that peers
//! behind the same NAT can reach us without going out and back in.

use std::net::{IpAddr, SocketAddr};

/// The most LAN endpoints registered (the wire carries four).
const MAX: usize = 4;

/// Our LAN endpoints for a socket bound to `local`, in the address family
/// of the rendezvous at `rendezvous`: the bound address itself, or for a
/// wildcard bind the addresses of the interfaces that are up. Loopback is
/// included only when the rendezvous is on loopback (a one-host setup);
/// link-local IPv6 is never (it needs a scope the wire does not carry).
pub fn lan_endpoints(local: SocketAddr, rendezvous: SocketAddr) -> Vec<SocketAddr> {
    let port = local.port();
    let ip = local.ip();
    if !ip.is_unspecified() {
        return vec![local];
    }
    let want_loopback = rendezvous.ip().is_loopback();
    let mut out: Vec<SocketAddr> = Vec::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for ifa in addrs {
        let up = ifa.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
        let Some(addr) = ifa.address else { continue };
        let ip: IpAddr = if let Some(v4) = addr.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        let family_ok = ip.is_ipv4() == rendezvous.is_ipv4();
        let link_local = matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
        if !up || !family_ok || link_local || ip.is_loopback() != want_loopback {
            continue;
        }
        let ep = SocketAddr::new(ip, port);
        if !out.contains(&ep) && out.len() < MAX {
            out.push(ep);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_specific_bind_is_its_own_endpoint() {
        let local: SocketAddr = "127.0.0.1:4100".parse().unwrap();
        let rv: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(lan_endpoints(local, rv), vec![local]);
    }

    #[test]
    fn a_wildcard_bind_lists_interfaces_of_the_rendezvous_family() {
        let local: SocketAddr = "0.0.0.0:4100".parse().unwrap();
        let rv: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let eps = lan_endpoints(local, rv);
        // Every host has a loopback interface that is up.
        assert!(eps.contains(&"127.0.0.1:4100".parse().unwrap()), "{eps:?}");
        assert!(eps.iter().all(|e| e.is_ipv4() && e.port() == 4100));
    }
}
