//! IPv4 prefixes: parsing, the gateway and the addresses a pod may get.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::Error;

/// An IPv4 prefix such as `10.244.0.0/16`. The base is kept normalised (host bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    base: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// `10.244.0.0/16`, the usual pod network.
    pub const DEFAULT_PODS: Ipv4Cidr = Ipv4Cidr {
        base: Ipv4Addr::new(10, 244, 0, 0),
        prefix_len: 16,
    };

    /// `10.96.0.0/16`, where tandem's API server allocates ClusterIPs.
    pub const DEFAULT_SERVICES: Ipv4Cidr = Ipv4Cidr {
        base: Ipv4Addr::new(10, 96, 0, 0),
        prefix_len: 16,
    };

    /// A prefix from any address inside it; host bits are cleared.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Self, Error> {
        if prefix_len > 32 {
            return Err(Error::InvalidCidr(format!(
                "{addr}/{prefix_len}: prefix length above 32"
            )));
        }
        let base = Ipv4Addr::from(u32::from(addr) & mask(prefix_len));
        Ok(Ipv4Cidr { base, prefix_len })
    }

    /// The network address (`10.244.0.0`).
    pub fn network(&self) -> Ipv4Addr {
        self.base
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The last address (`10.244.255.255`).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) | !mask(self.prefix_len))
    }

    /// The first address after the network address: the bridge's own address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base).wrapping_add(1))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix_len) == u32::from(self.base)
    }

    /// How many addresses pods can get: all but network, gateway and broadcast.
    pub fn pod_capacity(&self) -> u32 {
        let size = 1u64 << (32 - u32::from(self.prefix_len));
        size.saturating_sub(3).min(u64::from(u32::MAX)) as u32
    }

    /// The first pod address (gateway + 1).
    pub(crate) fn first_pod(&self) -> u32 {
        u32::from(self.base).wrapping_add(2)
    }

    /// Whether `ip` may be handed to a pod.
    pub fn is_pod_address(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && ip != self.network() && ip != self.gateway() && ip != self.broadcast()
    }

    /// Checks the prefix leaves room for a gateway and at least one pod.
    pub(crate) fn check_pod_range(&self) -> Result<(), Error> {
        if self.prefix_len > 30 {
            return Err(Error::InvalidCidr(format!(
                "{self}: a pod CIDR needs a prefix length of 30 or less"
            )));
        }
        Ok(())
    }
}

fn mask(prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix_len))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad =
            || Error::InvalidCidr(format!("{s:?}: expected an IPv4 prefix like 10.244.0.0/16"));
        let (addr, len) = s.trim().split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        Ipv4Cidr::new(addr, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let c: Ipv4Cidr = "10.244.3.7/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.244.0.0/16");
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 244, 0, 1));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 244, 255, 255));
        assert_eq!(c.pod_capacity(), 65533);
    }

    #[test]
    fn rejects_garbage() {
        for s in ["10.244.0.0", "10.244.0.0/33", "x/8", "10.244.0/16", ""] {
            assert!(s.parse::<Ipv4Cidr>().is_err(), "{s} parsed");
        }
    }

    #[test]
    fn pod_addresses_skip_reserved_ones() {
        let c: Ipv4Cidr = "192.168.7.0/30".parse().unwrap();
        let usable: Vec<_> = (0..4)
            .map(|i| Ipv4Addr::new(192, 168, 7, i))
            .filter(|ip| c.is_pod_address(*ip))
            .collect();
        assert_eq!(usable, vec![Ipv4Addr::new(192, 168, 7, 2)]);
        assert_eq!(c.pod_capacity(), 1);
        assert!(c.check_pod_range().is_ok());
        assert!(
            "192.168.7.0/31"
                .parse::<Ipv4Cidr>()
                .unwrap()
                .check_pod_range()
                .is_err()
        );
    }
}
