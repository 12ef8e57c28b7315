//! Facts about the network namespace and files the rules depend on.

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpStream};

use nix::sys::socket::{SockaddrIn, SockaddrIn6, getsockopt, sockopt};

/// Addresses of the calling thread's network namespace that can be a pod IP: not
/// loopback, not link-local. In interface order.
pub fn pod_addresses() -> io::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        let Some(addr) = ifa.address else { continue };
        let ip = if let Some(v4) = addr.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            match v6.ip().to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6.ip()),
            }
        } else {
            continue;
        };
        let link_local = match ip {
            IpAddr::V4(a) => a.is_link_local(),
            IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
        };
        if ip.is_loopback() || link_local || ip.is_multicast() {
            continue;
        }
        out.push(ip);
    }
    Ok(out)
}

/// Whether IPv6 rules are written, as istio-iptables decides: the first pod address is
/// IPv6, or with dual stack, any is. None when the namespace has no pod address.
pub fn ipv6_enabled(addrs: &[IpAddr], dual_stack: bool) -> Option<bool> {
    let first = addrs.first()?;
    Some(if dual_stack {
        addrs.iter().any(IpAddr::is_ipv6)
    } else {
        first.is_ipv6()
    })
}

/// Nameservers of a resolv.conf, split into IPv4 and IPv6.
pub fn resolv_conf_servers(text: &str) -> (Vec<String>, Vec<String>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        // A zone suffix (fe80::1%eth0) cannot go into an iptables address.
        match words.next().and_then(|w| w.parse::<IpAddr>().ok()) {
            Some(IpAddr::V4(a)) => v4.push(a.to_string()),
            Some(IpAddr::V6(a)) => v6.push(a.to_string()),
            None => {}
        }
    }
    (v4, v6)
}

/// The destination a redirected connection was originally sent to (`SO_ORIGINAL_DST`).
/// This is what the proxy's 15001/15006 listeners read.
pub fn original_destination(stream: &TcpStream) -> io::Result<SocketAddr> {
    if stream.local_addr()?.is_ipv4() {
        let raw = getsockopt(stream, sockopt::OriginalDst).map_err(io::Error::from)?;
        let addr = SockaddrIn::from(raw);
        Ok(SocketAddr::V4(SocketAddrV4::new(addr.ip(), addr.port())))
    } else {
        let raw = getsockopt(stream, sockopt::Ip6tOriginalDst).map_err(io::Error::from)?;
        let addr = SockaddrIn6::from(raw);
        Ok(SocketAddr::V6(SocketAddrV6::new(
            addr.ip(),
            addr.port(),
            0,
            0,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_are_split_by_family() {
        let text = "# comment\nsearch default.svc.cluster.local\nnameserver 10.96.0.10\n\
                    nameserver fd00::10\nnameserver fe80::1%eth0\noptions ndots:5\n";
        let (v4, v6) = resolv_conf_servers(text);
        assert_eq!(v4, vec!["10.96.0.10"]);
        assert_eq!(v6, vec!["fd00::10"]);
    }

    #[test]
    fn ipv6_follows_the_first_address_unless_dual_stack() {
        let v4: IpAddr = "10.244.0.5".parse().unwrap();
        let v6: IpAddr = "fd00::5".parse().unwrap();
        assert_eq!(ipv6_enabled(&[v4, v6], false), Some(false));
        assert_eq!(ipv6_enabled(&[v4, v6], true), Some(true));
        assert_eq!(ipv6_enabled(&[v6, v4], false), Some(true));
        assert_eq!(ipv6_enabled(&[], false), None);
    }
}
