//! ClusterIP allocation for Services, as the API server's service REST storage does it:
//! an address from the service CIDR on create (the first one is reserved for the
//! `kubernetes` Service), a requested address checked against the range and the addresses
//! in use, headless (`None`) and `ExternalName` Services left without one, and the address
//! kept across updates. The Services in the store are the allocation record, so nothing
//! can drift; creates are serialized so two Services never get the same address.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

/// An IPv4 CIDR (`10.96.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Option<Cidr> {
        let (ip, prefix) = text.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 30)?;
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        Some(Cidr {
            base: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }

    fn size(&self) -> u32 {
        1u32 << (32 - u32::from(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let offset = u32::from(ip).wrapping_sub(u32::from(self.base));
        offset < self.size()
    }

    /// The first usable address (the `kubernetes` Service's).
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }

    /// Usable offsets: neither the network nor the broadcast address.
    fn usable(&self) -> std::ops::Range<u32> {
        1..self.size() - 1
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// What to do with a Service being created.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Headless or ExternalName: no address.
    None,
    /// Any free address.
    Any,
    /// This address.
    Specific(String),
}

/// What a Service asks for, from its (defaulted) JSON.
pub fn request_of(service: &Value) -> Request {
    let spec = service.get("spec");
    if spec.and_then(|s| s.get("type")).and_then(Value::as_str) == Some("ExternalName") {
        return Request::None;
    }
    let requested = spec
        .and_then(|s| s.get("clusterIP"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            spec.and_then(|s| s.pointer("/clusterIPs/0"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        });
    match requested {
        Some("None") => Request::None,
        Some(ip) => Request::Specific(ip.to_owned()),
        None => Request::Any,
    }
}

/// Why an address cannot be given (a field error on `spec.clusterIPs[0]`).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")]
    NotAnIp,
    #[error("failed to allocate IP {ip}: the provided network does not match the current range")]
    OutOfRange { ip: String },
    #[error("failed to allocate IP {ip}: provided IP is already allocated")]
    InUse { ip: String },
    #[error("failed to allocate IP: range is full")]
    Full,
}

/// The cluster IPs of stored Services.
pub fn used_addresses<'a>(services: impl Iterator<Item = &'a Value>) -> HashSet<Ipv4Addr> {
    services
        .filter_map(|s| s.pointer("/spec/clusterIP").and_then(Value::as_str))
        .filter_map(|ip| ip.parse().ok())
        .collect()
}

/// Picks the address for `request`. Dynamic addresses come from the upper part of the
/// range (Kubernetes keeps the lower part for addresses users ask for), starting at a
/// point derived from `seed` so bursts spread out, skipping the used ones.
pub fn allocate(
    cidr: &Cidr,
    request: &Request,
    used: &HashSet<Ipv4Addr>,
    seed: u32,
) -> Result<Option<Ipv4Addr>, AllocError> {
    match request {
        Request::None => Ok(None),
        Request::Specific(text) => {
            let ip: Ipv4Addr = text.parse().map_err(|_| AllocError::NotAnIp)?;
            let offset = u32::from(ip).wrapping_sub(u32::from(cidr.base));
            if !cidr.usable().contains(&offset) {
                return Err(AllocError::OutOfRange { ip: text.clone() });
            }
            if used.contains(&ip) {
                return Err(AllocError::InUse { ip: text.clone() });
            }
            Ok(Some(ip))
        }
        Request::Any => {
            let usable = cidr.usable();
            let total = usable.end - usable.start;
            // Kubernetes' static band: min(max(16, size/16), 256) addresses.
            let static_band = (total / 16).clamp(16, 256).min(total / 2);
            let dynamic = (usable.start + static_band)..usable.end;
            let pick = |range: std::ops::Range<u32>| {
                let len = range.end - range.start;
                (0..len)
                    .map(|i| range.start + (seed.wrapping_add(i) % len))
                    .map(|o| Ipv4Addr::from(u32::from(cidr.base) + o))
                    .find(|ip| !used.contains(ip))
            };
            pick(dynamic)
                .or_else(|| pick(usable.start + 1..usable.start + static_band))
                .map(Some)
                .ok_or(AllocError::Full)
        }
    }
}

/// Writes an allocation into the Service: `clusterIP`, `clusterIPs`, the IP family fields.
pub fn record(service: &mut Value, ip: Option<Ipv4Addr>) {
    let Some(spec) = service.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let headless = ip.is_none() && spec.get("type").and_then(Value::as_str) != Some("ExternalName");
    match ip {
        Some(ip) => {
            spec.insert("clusterIP".into(), json!(ip.to_string()));
            spec.insert("clusterIPs".into(), json!([ip.to_string()]));
        }
        None if headless => {
            spec.insert("clusterIP".into(), json!("None"));
            spec.insert("clusterIPs".into(), json!(["None"]));
        }
        None => return,
    }
    spec.entry("ipFamilies").or_insert_with(|| json!(["IPv4"]));
    spec.entry("ipFamilyPolicy")
        .or_insert_with(|| json!("SingleStack"));
}

/// On update, a Service that leaves its address out keeps the stored one.
pub fn keep_on_update(new: &mut Value, old: &Value) {
    let Some(old_spec) = old.get("spec") else {
        return;
    };
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
        let missing = match spec.get(field) {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        if missing && let Some(v) = old_spec.get(field) {
            spec.insert(field.to_owned(), v.clone());
        }
    }
}

/// The message when a Service tries to change its address.
pub fn changed_on_update(new: &Value, old: &Value) -> Option<(String, String)> {
    let old_ip = old.pointer("/spec/clusterIP").and_then(Value::as_str)?;
    let new_ip = new
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("");
    (old_ip != new_ip).then(|| (new_ip.to_owned(), "field is immutable".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr() -> Cidr {
        Cidr::parse("10.96.0.0/16").expect("cidr")
    }

    #[test]
    fn parses_and_masks_cidrs() {
        let c = Cidr::parse("10.96.3.4/16").expect("cidr");
        assert_eq!(c.to_string(), "10.96.0.0/16");
        assert_eq!(c.first(), Ipv4Addr::new(10, 96, 0, 1));
        assert!(c.contains(Ipv4Addr::new(10, 96, 255, 254)));
        assert!(!c.contains(Ipv4Addr::new(10, 97, 0, 1)));
        assert_eq!(Cidr::parse("10.96.0.0"), None);
        assert_eq!(Cidr::parse("10.96.0.0/31"), None);
    }

    #[test]
    fn requests_follow_the_spec() {
        assert_eq!(request_of(&json!({"spec": {}})), Request::Any);
        assert_eq!(
            request_of(&json!({"spec": {"clusterIP": ""}})),
            Request::Any
        );
        assert_eq!(
            request_of(&json!({"spec": {"clusterIP": "None"}})),
            Request::None
        );
        assert_eq!(
            request_of(&json!({"spec": {"clusterIPs": ["10.96.0.9"]}})),
            Request::Specific("10.96.0.9".into())
        );
        assert_eq!(
            request_of(&json!({"spec": {"type": "ExternalName", "externalName": "x.org"}})),
            Request::None
        );
    }

    #[test]
    fn dynamic_addresses_avoid_the_static_band_and_used_ones() {
        let c = cidr();
        let mut used = HashSet::new();
        for seed in 0..500 {
            let ip = allocate(&c, &Request::Any, &used, seed)
                .expect("free")
                .expect("an address");
            assert!(c.contains(ip));
            assert!(
                u32::from(ip) - u32::from(c.base) > 256,
                "{ip} in static band"
            );
            assert!(used.insert(ip), "{ip} handed out twice");
        }
    }

    #[test]
    fn specific_addresses_are_checked() {
        let c = cidr();
        let used: HashSet<Ipv4Addr> = [c.first()].into();
        assert_eq!(
            allocate(&c, &Request::Specific("10.96.0.1".into()), &used, 0),
            Err(AllocError::InUse {
                ip: "10.96.0.1".into()
            })
        );
        assert_eq!(
            allocate(&c, &Request::Specific("10.1.0.1".into()), &used, 0),
            Err(AllocError::OutOfRange {
                ip: "10.1.0.1".into()
            })
        );
        assert_eq!(
            allocate(&c, &Request::Specific("nope".into()), &used, 0),
            Err(AllocError::NotAnIp)
        );
        assert_eq!(
            allocate(&c, &Request::Specific("10.96.0.10".into()), &used, 0),
            Ok(Some(Ipv4Addr::new(10, 96, 0, 10)))
        );
    }

    #[test]
    fn a_small_range_fills_up() {
        let c = Cidr::parse("10.0.0.0/29").expect("cidr");
        let mut used = HashSet::new();
        while let Ok(Some(ip)) = allocate(&c, &Request::Any, &used, 3) {
            used.insert(ip);
        }
        // 8 addresses minus network and broadcast; .1 stays for `kubernetes`.
        assert_eq!(used.len(), 5);
        assert_eq!(allocate(&c, &Request::Any, &used, 0), Err(AllocError::Full));
    }

    #[test]
    fn records_and_keeps_addresses() {
        let mut svc = json!({"spec": {"ports": [{"port": 80}]}});
        record(&mut svc, Some(Ipv4Addr::new(10, 96, 1, 2)));
        assert_eq!(svc["spec"]["clusterIP"], "10.96.1.2");
        assert_eq!(svc["spec"]["clusterIPs"], json!(["10.96.1.2"]));
        assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv4"]));
        let mut headless = json!({"spec": {"clusterIP": "None"}});
        record(&mut headless, None);
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));

        let mut update = json!({"spec": {"ports": [{"port": 81}]}});
        keep_on_update(&mut update, &svc);
        assert_eq!(update["spec"]["clusterIP"], "10.96.1.2");
        assert_eq!(changed_on_update(&update, &svc), None);
        let moved = json!({"spec": {"clusterIP": "10.96.1.3"}});
        assert!(changed_on_update(&moved, &svc).is_some());
    }
}
