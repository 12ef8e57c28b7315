//! Model -> `nft` script. Both renderings go through [`Desired`], the table's variable part
//! (map elements and per-Service chains), so a full sync and a chain of incremental ones
//! always describe the same ruleset.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write};
use std::net::Ipv4Addr;

use super::{Endpoint, Model, Protocol, ProxyConfig};
use crate::nft::{ISOLATION_CHAIN, ISOLATION_HOOK, isolation_rule};

const SERVICE_IPS: &str = "service-ips";
const NO_ENDPOINTS: &str = "no-endpoint-services";
const REJECT_CHAIN: &str = "reject-chain";
const MARK_MASQ_CHAIN: &str = "mark-for-masquerade";
/// nft chain names may be 256 bytes; stay well clear.
const MAX_CHAIN_NAME: usize = 200;

/// A map key: `ip daddr . meta l4proto . th dport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    ip: Ipv4Addr,
    protocol: Protocol,
    port: u16,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} . {} . {}", self.ip, self.protocol, self.port)
    }
}

/// The part of the table that depends on the model.
#[derive(Debug, Default, PartialEq, Eq)]
struct Desired {
    /// Service port -> its chain.
    service_ips: BTreeMap<Key, String>,
    /// Service ports with nothing ready: rejected.
    no_endpoints: BTreeSet<Key>,
    /// Per-Service and per-endpoint chains with their rules.
    chains: BTreeMap<String, Vec<String>>,
}

fn desired(model: &Model) -> Desired {
    let mut d = Desired::default();
    for svc in &model.services {
        let Some(ip) = svc.cluster_ip else { continue };
        for port in &svc.ports {
            let key = Key {
                ip,
                protocol: port.protocol,
                port: port.port,
            };
            // Two Services cannot share a ClusterIP port; if the input says so anyway, the
            // first (in model order) keeps it rather than failing the whole transaction.
            if d.service_ips.contains_key(&key) || d.no_endpoints.contains(&key) {
                tracing::warn!(
                    service = %format_args!("{}/{}", svc.namespace, svc.name),
                    %key,
                    "ClusterIP port already taken by another Service; ignored"
                );
                continue;
            }
            let endpoints: BTreeSet<Endpoint> = port.endpoints.iter().copied().collect();
            if endpoints.is_empty() {
                d.no_endpoints.insert(key);
                continue;
            }
            let port_label = if port.name.is_empty() {
                format!("p{}", port.port)
            } else {
                port.name.clone()
            };
            let ident = format!(
                "{}/{}/{}/{}",
                svc.namespace, svc.name, port.protocol, port_label
            );
            let svc_chain = chain_name("svc", &ident);
            let mut arms = Vec::with_capacity(endpoints.len());
            for (i, ep) in endpoints.iter().enumerate() {
                let ep_chain = chain_name("ep", &format!("{ident}__{}/{}", ep.ip, ep.port));
                d.chains.insert(
                    ep_chain.clone(),
                    vec![
                        format!("ip saddr {} jump {MARK_MASQ_CHAIN}", ep.ip),
                        format!(
                            "meta l4proto {} dnat to {}:{}",
                            port.protocol, ep.ip, ep.port
                        ),
                    ],
                );
                arms.push(format!("{i} : goto {ep_chain}"));
            }
            d.chains.insert(
                svc_chain.clone(),
                vec![format!(
                    "numgen random mod {} vmap {{ {} }}",
                    endpoints.len(),
                    arms.join(", ")
                )],
            );
            d.service_ips.insert(key, svc_chain);
        }
    }
    d
}

/// `<kind>-<hash>-<readable identity>`: the hash keeps names unique after the readable
/// part is sanitised or cut; the readable part is for people running `nft list`.
fn chain_name(kind: &str, ident: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ident.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut name = format!("{kind}-{:08x}-", (h >> 32) as u32);
    for c in ident.chars() {
        if name.len() >= MAX_CHAIN_NAME {
            break;
        }
        name.push(if c.is_ascii_alphanumeric() || "/_.-".contains(c) {
            c
        } else {
            '_'
        });
    }
    name
}

/// The whole table, replacing whatever is there (including stale chains) in one
/// transaction. Existing connections keep their NAT through conntrack.
pub fn render_full(cfg: &ProxyConfig, model: &Model) -> String {
    let t = &cfg.table;
    let d = desired(model);
    let mut s = String::with_capacity(4096 + d.chains.len() * 160);
    // Declaring before deleting makes the delete unconditional.
    let _ = writeln!(s, "table ip {t} {{}}");
    let _ = writeln!(s, "delete table ip {t}");
    let _ = writeln!(s, "table ip {t} {{");
    for map in [SERVICE_IPS, NO_ENDPOINTS] {
        let _ = writeln!(
            s,
            "\tmap {map} {{\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\t}}"
        );
    }
    let base: [(&str, &str, &[&str]); 12] = [
        (
            "nat-prerouting",
            "type nat hook prerouting priority dstnat; policy accept;",
            &["jump services"],
        ),
        (
            "nat-output",
            "type nat hook output priority -100; policy accept;",
            &["jump services"],
        ),
        (
            "nat-postrouting",
            "type nat hook postrouting priority srcnat; policy accept;",
            &["jump masquerading"],
        ),
        // Mark bit 0x4000 asks postrouting to masquerade (kube-proxy's choice too).
        (
            "masquerading",
            "",
            &[
                "meta mark & 0x4000 == 0 return",
                "meta mark set meta mark ^ 0x4000",
                "masquerade fully-random",
            ],
        ),
        (MARK_MASQ_CHAIN, "", &["meta mark set meta mark | 0x4000"]),
        (
            "services",
            "",
            &["ip daddr . meta l4proto . th dport vmap @service-ips"],
        ),
        (
            "filter-input",
            "type filter hook input priority filter - 5; policy accept;",
            &["ct state new jump endpoints-check"],
        ),
        (
            "filter-forward",
            "type filter hook forward priority filter - 5; policy accept;",
            &["ct state new jump endpoints-check"],
        ),
        (
            "filter-output",
            "type filter hook output priority filter - 5; policy accept;",
            &["ct state new jump endpoints-check"],
        ),
        (
            "endpoints-check",
            "",
            &["ip daddr . meta l4proto . th dport vmap @no-endpoint-services"],
        ),
        (
            REJECT_CHAIN,
            "",
            &["meta l4proto tcp reject with tcp reset", "reject"],
        ),
        (ISOLATION_CHAIN, ISOLATION_HOOK, &[]),
    ];
    for (name, hook, rules) in base {
        let _ = writeln!(s, "\tchain {name} {{");
        if !hook.is_empty() {
            let _ = writeln!(s, "\t\t{hook}");
        }
        for r in rules {
            let _ = writeln!(s, "\t\t{r}");
        }
        if name == ISOLATION_CHAIN {
            let _ = writeln!(s, "\t\t{}", isolation_rule(&cfg.bridge));
        }
        let _ = writeln!(s, "\t}}");
    }
    // Endpoint chains sort before the Service chains ("ep-" < "svc-") that jump to them.
    for (name, rules) in &d.chains {
        let _ = writeln!(s, "\tchain {name} {{");
        for r in rules {
            let _ = writeln!(s, "\t\t{r}");
        }
        let _ = writeln!(s, "\t}}");
    }
    let _ = writeln!(s, "}}");
    write_elements(
        &mut s,
        t,
        SERVICE_IPS,
        d.service_ips.iter().map(|(k, c)| (*k, c.as_str())),
    );
    write_elements(
        &mut s,
        t,
        NO_ENDPOINTS,
        d.no_endpoints.iter().map(|k| (*k, REJECT_CHAIN)),
    );
    s
}

fn write_elements<'a>(
    s: &mut String,
    table: &str,
    map: &str,
    elements: impl Iterator<Item = (Key, &'a str)>,
) {
    let mut first = true;
    for (key, chain) in elements {
        if first {
            let _ = write!(s, "add element ip {table} {map} {{ ");
            first = false;
        } else {
            s.push_str(", ");
        }
        let _ = write!(s, "{key} : goto {chain}");
    }
    if !first {
        s.push_str(" }\n");
    }
}

fn write_keys(s: &mut String, op: &str, table: &str, map: &str, keys: &[Key]) {
    if keys.is_empty() {
        return;
    }
    let list: Vec<String> = keys.iter().map(Key::to_string).collect();
    let _ = writeln!(s, "{op} element ip {table} {map} {{ {} }}", list.join(", "));
}

/// Only what changed between `old` (what the table holds now) and `new`: new chains are
/// created, changed ones flushed and refilled, map elements swapped, and chains nothing
/// refers to any more deleted last. Empty when nothing changed. Assumes the table was
/// written by [`render_full`]; if it was not, `nft` refuses and a full sync is needed.
pub fn render_update(cfg: &ProxyConfig, old: &Model, new: &Model) -> String {
    let t = &cfg.table;
    let (o, n) = (desired(old), desired(new));
    if o == n {
        return String::new();
    }
    let mut s = String::new();

    // 1. Declare new chains first, so rules and elements below can point at them.
    for name in n.chains.keys().filter(|c| !o.chains.contains_key(*c)) {
        let _ = writeln!(s, "add chain ip {t} {name}");
    }
    // 2. Fill new chains, refill changed ones.
    for (name, rules) in &n.chains {
        match o.chains.get(name) {
            Some(old_rules) if old_rules == rules => continue,
            Some(_) => {
                let _ = writeln!(s, "flush chain ip {t} {name}");
            }
            None => {}
        }
        for r in rules {
            let _ = writeln!(s, "add rule ip {t} {name} {r}");
        }
    }
    // 3. Swap map elements: removals before additions, since a key may move.
    let gone: Vec<Key> = o
        .service_ips
        .iter()
        .filter(|(k, c)| n.service_ips.get(*k) != Some(*c))
        .map(|(k, _)| *k)
        .collect();
    write_keys(&mut s, "delete", t, SERVICE_IPS, &gone);
    let gone: Vec<Key> = o
        .no_endpoints
        .difference(&n.no_endpoints)
        .copied()
        .collect();
    write_keys(&mut s, "delete", t, NO_ENDPOINTS, &gone);
    write_elements(
        &mut s,
        t,
        SERVICE_IPS,
        n.service_ips
            .iter()
            .filter(|(k, c)| o.service_ips.get(*k) != Some(*c))
            .map(|(k, c)| (*k, c.as_str())),
    );
    write_elements(
        &mut s,
        t,
        NO_ENDPOINTS,
        n.no_endpoints
            .difference(&o.no_endpoints)
            .map(|k| (*k, REJECT_CHAIN)),
    );
    // 4. Delete chains nothing refers to any more: empty them all first, since a Service
    // chain being deleted still jumps to endpoint chains being deleted.
    let dead: Vec<&String> = o
        .chains
        .keys()
        .filter(|c| !n.chains.contains_key(*c))
        .collect();
    for name in &dead {
        let _ = writeln!(s, "flush chain ip {t} {name}");
    }
    for name in &dead {
        let _ = writeln!(s, "delete chain ip {t} {name}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::{Service, ServicePort};
    use super::*;

    fn cfg() -> ProxyConfig {
        ProxyConfig::default()
    }

    fn svc(name: &str, vip: Option<[u8; 4]>, ports: Vec<ServicePort>) -> Service {
        Service {
            namespace: "default".into(),
            name: name.into(),
            cluster_ip: vip.map(Ipv4Addr::from),
            ports,
        }
    }

    fn port(name: &str, protocol: Protocol, port: u16, eps: &[([u8; 4], u16)]) -> ServicePort {
        ServicePort {
            name: name.into(),
            protocol,
            port,
            endpoints: eps
                .iter()
                .map(|(ip, p)| Endpoint {
                    ip: Ipv4Addr::from(*ip),
                    port: *p,
                })
                .collect(),
        }
    }

    fn web(eps: &[([u8; 4], u16)]) -> Model {
        Model {
            services: vec![svc(
                "web",
                Some([10, 96, 0, 10]),
                vec![port("http", Protocol::Tcp, 80, eps)],
            )],
        }
    }

    fn lines_with<'a>(s: &'a str, needle: &str) -> Vec<&'a str> {
        s.lines().filter(|l| l.contains(needle)).collect()
    }

    #[test]
    fn full_sync_replaces_the_table_and_wires_every_hook() {
        let s = render_full(&cfg(), &web(&[([10, 244, 0, 5], 8080)]));
        let head: Vec<&str> = s.lines().take(3).collect();
        assert_eq!(
            head,
            [
                "table ip tandem {}",
                "delete table ip tandem",
                "table ip tandem {"
            ]
        );
        for (hook, chains) in [
            ("type nat hook prerouting", 1),
            ("type nat hook output", 1),
            ("type nat hook postrouting", 1),
            ("type filter hook input", 1),
            // The no-endpoint check and the bridge isolation.
            ("type filter hook forward", 2),
            ("type filter hook output", 1),
        ] {
            assert_eq!(lines_with(&s, hook).len(), chains, "{hook} in\n{s}");
        }
        assert!(s.contains("iifname \"tandem0\" oifname != \"tandem0\" drop"));
        assert!(s.contains("masquerade"));
        assert!(s.contains("reject with tcp reset"));
    }

    #[test]
    fn a_service_port_maps_to_a_chain_that_picks_and_dnats_an_endpoint() {
        let s = render_full(
            &cfg(),
            &web(&[([10, 244, 0, 5], 8080), ([10, 244, 0, 6], 8080)]),
        );
        let element = lines_with(&s, "add element ip tandem service-ips");
        assert_eq!(element.len(), 1);
        assert!(
            element[0].contains("10.96.0.10 . tcp . 80 : goto svc-"),
            "{}",
            element[0]
        );
        let pick = lines_with(&s, "numgen random mod 2 vmap");
        assert_eq!(pick.len(), 1);
        assert_eq!(pick[0].matches("goto ep-").count(), 2);
        assert_eq!(
            lines_with(&s, "meta l4proto tcp dnat to 10.244.0.5:8080").len(),
            1
        );
        assert_eq!(
            lines_with(&s, "meta l4proto tcp dnat to 10.244.0.6:8080").len(),
            1
        );
        // Hairpin: an endpoint reaching itself is marked for masquerade.
        assert_eq!(
            lines_with(&s, "ip saddr 10.244.0.5 jump mark-for-masquerade").len(),
            1
        );
        assert!(!s.contains("no-endpoint-services {  }"));
        assert!(lines_with(&s, "add element ip tandem no-endpoint-services").is_empty());
    }

    #[test]
    fn a_port_without_endpoints_is_rejected_and_headless_services_get_nothing() {
        let model = Model {
            services: vec![
                svc(
                    "empty",
                    Some([10, 96, 0, 11]),
                    vec![
                        port("dns", Protocol::Udp, 53, &[]),
                        port("", Protocol::Sctp, 9, &[]),
                    ],
                ),
                svc(
                    "headless",
                    None,
                    vec![port("http", Protocol::Tcp, 80, &[([10, 244, 0, 7], 80)])],
                ),
            ],
        };
        let s = render_full(&cfg(), &model);
        let reject = lines_with(&s, "add element ip tandem no-endpoint-services");
        assert_eq!(reject.len(), 1);
        assert!(reject[0].contains("10.96.0.11 . udp . 53 : goto reject-chain"));
        assert!(reject[0].contains("10.96.0.11 . sctp . 9 : goto reject-chain"));
        assert!(!s.contains("10.244.0.7"), "headless service rendered:\n{s}");
        assert!(lines_with(&s, "add element ip tandem service-ips").is_empty());
    }

    #[test]
    fn endpoints_are_deduplicated_and_order_does_not_matter() {
        let a = render_full(
            &cfg(),
            &web(&[([10, 244, 0, 6], 80), ([10, 244, 0, 5], 80)]),
        );
        let b = render_full(
            &cfg(),
            &web(&[
                ([10, 244, 0, 5], 80),
                ([10, 244, 0, 6], 80),
                ([10, 244, 0, 5], 80),
            ]),
        );
        assert_eq!(a, b);
        assert!(a.contains("numgen random mod 2 "));
    }

    #[test]
    fn a_duplicate_clusterip_port_is_kept_by_the_first_service_only() {
        let mut model = web(&[([10, 244, 0, 5], 80)]);
        model.services.push(svc(
            "clash",
            Some([10, 96, 0, 10]),
            vec![port("http", Protocol::Tcp, 80, &[([10, 244, 0, 9], 80)])],
        ));
        let s = render_full(&cfg(), &model);
        assert!(!s.contains("10.244.0.9"));
        assert_eq!(s.matches("10.96.0.10 . tcp . 80").count(), 1);
    }

    #[test]
    fn chain_names_are_valid_identifiers_even_for_odd_input() {
        let long = "x".repeat(300);
        let model = Model {
            services: vec![Service {
                namespace: "ns with space".into(),
                name: long,
                cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 1)),
                ports: vec![port("h\"ttp", Protocol::Tcp, 80, &[([10, 244, 0, 2], 80)])],
            }],
        };
        let d = desired(&model);
        for name in d.chains.keys() {
            assert!(name.len() <= MAX_CHAIN_NAME, "{} bytes", name.len());
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_.-".contains(c)),
                "{name}"
            );
        }
    }

    #[test]
    fn no_change_renders_nothing() {
        let m = web(&[([10, 244, 0, 5], 80)]);
        assert_eq!(render_update(&cfg(), &m, &m), "");
    }

    #[test]
    fn switching_endpoints_touches_only_that_service() {
        let mut old = web(&[([10, 244, 0, 5], 80)]);
        old.services.push(svc(
            "other",
            Some([10, 96, 0, 20]),
            vec![port("", Protocol::Tcp, 443, &[([10, 244, 0, 8], 8443)])],
        ));
        let mut new = old.clone();
        new.services[0].ports[0].endpoints = vec![Endpoint {
            ip: Ipv4Addr::new(10, 244, 0, 6),
            port: 80,
        }];
        let s = render_update(&cfg(), &old, &new);
        assert!(!s.contains("delete table"));
        assert!(!s.contains("10.244.0.8"), "unchanged service touched:\n{s}");
        assert!(
            !s.contains("element"),
            "the map entry did not need to change:\n{s}"
        );
        assert_eq!(lines_with(&s, "add chain ip tandem ep-").len(), 1);
        assert_eq!(lines_with(&s, "dnat to 10.244.0.6:80").len(), 1);
        let flush_svc = s
            .find("flush chain ip tandem svc-")
            .expect("service chain refilled");
        let delete_old = s
            .find("delete chain ip tandem ep-")
            .expect("old endpoint chain dropped");
        assert!(flush_svc < delete_old);
    }

    #[test]
    fn losing_all_endpoints_moves_the_port_to_the_reject_map_and_back() {
        let ready = web(&[([10, 244, 0, 5], 80)]);
        let empty = web(&[]);
        let down = render_update(&cfg(), &ready, &empty);
        assert!(down.contains("delete element ip tandem service-ips { 10.96.0.10 . tcp . 80 }"));
        assert!(down.contains(
            "add element ip tandem no-endpoint-services { 10.96.0.10 . tcp . 80 : goto reject-chain }"
        ));
        assert_eq!(lines_with(&down, "delete chain").len(), 2);
        let delete_elem = down.find("delete element").unwrap();
        let delete_chain = down.find("delete chain").unwrap();
        assert!(
            delete_elem < delete_chain,
            "chain deleted while still referenced"
        );

        let up = render_update(&cfg(), &empty, &ready);
        assert!(
            up.contains("delete element ip tandem no-endpoint-services { 10.96.0.10 . tcp . 80 }")
        );
        assert!(
            up.contains("add element ip tandem service-ips { 10.96.0.10 . tcp . 80 : goto svc-")
        );
        let add_chain = up.find("add chain").unwrap();
        let add_elem = up.find("add element").unwrap();
        assert!(
            add_chain < add_elem,
            "element added before its chain exists"
        );
    }

    #[test]
    fn removing_a_service_deletes_its_element_and_chains() {
        let old = web(&[([10, 244, 0, 5], 80)]);
        let s = render_update(&cfg(), &old, &Model::default());
        assert!(s.contains("delete element ip tandem service-ips { 10.96.0.10 . tcp . 80 }"));
        assert_eq!(lines_with(&s, "delete chain ip tandem svc-").len(), 1);
        assert_eq!(lines_with(&s, "delete chain ip tandem ep-").len(), 1);
        assert!(!s.contains("add "));
    }
}
