//! The pure view of the cluster that DNS answers come from: Services and the ready
//! addresses of their EndpointSlices, independent of the cluster domain.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Everything the DNS server knows about the cluster, keyed by namespace and name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    services: BTreeMap<(String, String), ServiceRecord>,
    namespaces: BTreeSet<String>,
}

/// How a Service's own name resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    /// A virtual IP per address family (empty while none is allocated).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: the name resolves to the ready endpoints.
    Headless,
    /// `type: ExternalName`: the name is a CNAME to this host.
    ExternalName(String),
}

/// A port as DNS sees it: SRV records exist for the named ones.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Port {
    /// The port's name, empty when unnamed.
    pub name: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The port number.
    pub port: u16,
}

/// One ready address of a Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EndpointRecord {
    /// The address.
    pub ip: IpAddr,
    /// `hostname` of the endpoint (set from a Pod's `spec.hostname`).
    pub hostname: Option<String>,
    /// The ports of the slice the address came from.
    pub ports: Vec<Port>,
}

impl EndpointRecord {
    /// The label that names this endpoint under its service: the hostname, or the
    /// address with `.`/`:` replaced by `-`, as CoreDNS does.
    pub fn dns_label(&self) -> String {
        match &self.hostname {
            Some(hostname) if !hostname.is_empty() => hostname.to_ascii_lowercase(),
            _ => dashed(self.ip),
        }
    }
}

/// One Service with its ready endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    /// How the name itself resolves.
    pub kind: ServiceKind,
    /// The Service's ports (`spec.ports`).
    pub ports: Vec<Port>,
    /// The ready endpoint addresses from all of the Service's slices, sorted.
    pub endpoints: Vec<EndpointRecord>,
}

/// The address in the form used for DNS labels: `10-0-0-1`, `fd00--1`.
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// Parses a dashed address label back, the way CoreDNS reads pod names.
pub(crate) fn undashed(label: &str) -> Option<IpAddr> {
    let text = if label.matches('-').count() == 3 && !label.contains("--") {
        label.replace('-', ".")
    } else {
        label.replace('-', ":")
    };
    text.parse().ok()
}

impl Records {
    /// Builds the view from Services and EndpointSlices. Slices join their Service through
    /// the `kubernetes.io/service-name` label in the same namespace; an endpoint counts when
    /// `conditions.ready` is true or unset. Objects without a name are skipped.
    pub fn from_objects<'a>(
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Self {
        let mut records = Records::default();
        for service in services {
            let (Some(name), Some(namespace)) = (
                service.metadata.name.as_deref(),
                service.metadata.namespace.as_deref(),
            ) else {
                continue;
            };
            let Some(spec) = &service.spec else { continue };
            let kind = if spec.type_.as_deref() == Some("ExternalName") {
                ServiceKind::ExternalName(
                    spec.external_name
                        .clone()
                        .unwrap_or_default()
                        .trim_end_matches('.')
                        .to_ascii_lowercase(),
                )
            } else if spec.cluster_ip.as_deref() == Some("None") {
                ServiceKind::Headless
            } else {
                // clusterIPs holds every family; clusterIP alone is what older clients set.
                let listed = match &spec.cluster_ips {
                    Some(ips) if !ips.is_empty() => ips.clone(),
                    _ => spec.cluster_ip.iter().cloned().collect(),
                };
                ServiceKind::ClusterIp(listed.iter().filter_map(|ip| ip.parse().ok()).collect())
            };
            let ports = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(Port {
                        name: p.name.clone().unwrap_or_default(),
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                        port: u16::try_from(p.port).ok()?,
                    })
                })
                .collect();
            records.namespaces.insert(namespace.to_string());
            records.services.insert(
                (namespace.to_string(), name.to_string()),
                ServiceRecord {
                    kind,
                    ports,
                    endpoints: Vec::new(),
                },
            );
        }

        for slice in slices {
            let Some(namespace) = slice.metadata.namespace.as_deref() else {
                continue;
            };
            let Some(service) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            // FQDN slices carry names, not addresses.
            if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
                continue;
            }
            let Some(record) = records
                .services
                .get_mut(&(namespace.to_string(), service.clone()))
            else {
                continue;
            };
            let ports: Vec<Port> = slice
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(Port {
                        name: p.name.clone().unwrap_or_default(),
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                        port: u16::try_from(p.port?).ok()?,
                    })
                })
                .collect();
            for endpoint in &slice.endpoints {
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                if !ready {
                    continue;
                }
                for address in &endpoint.addresses {
                    let Ok(ip) = address.parse::<IpAddr>() else {
                        continue;
                    };
                    record.endpoints.push(EndpointRecord {
                        ip,
                        hostname: endpoint.hostname.clone().filter(|h| !h.is_empty()),
                        ports: ports.clone(),
                    });
                }
            }
        }
        for record in records.services.values_mut() {
            record.endpoints.sort();
            record.endpoints.dedup();
        }
        records
    }

    /// The Service `name` in `namespace`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&ServiceRecord> {
        self.services
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// All services as `((namespace, name), record)`, sorted.
    pub fn services(&self) -> impl Iterator<Item = (&str, &str, &ServiceRecord)> {
        self.services
            .iter()
            .map(|((ns, name), record)| (ns.as_str(), name.as_str(), record))
    }

    /// Whether any Service lives in `namespace` (the namespace then exists as a DNS name).
    pub fn has_namespace(&self, namespace: &str) -> bool {
        self.namespaces.contains(namespace)
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether there is no service at all.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The owners of an address for reverse lookups: a Service's cluster IP wins; otherwise
    /// every endpoint with that address, as `(namespace, service, Some(endpoint label))`.
    pub(crate) fn reverse(&self, ip: IpAddr) -> Vec<(&str, &str, Option<String>)> {
        for ((ns, name), record) in &self.services {
            if let ServiceKind::ClusterIp(ips) = &record.kind
                && ips.contains(&ip)
            {
                return vec![(ns.as_str(), name.as_str(), None)];
            }
        }
        let mut owners = Vec::new();
        for ((ns, name), record) in &self.services {
            for endpoint in &record.endpoints {
                if endpoint.ip == ip {
                    let owner = (ns.as_str(), name.as_str(), Some(endpoint.dns_label()));
                    if !owners.contains(&owner) {
                        owners.push(owner);
                    }
                }
            }
        }
        owners
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn service(ns: &str, name: &str, cluster_ip: &str, ports: &[(&str, i32)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(cluster_ip.into()),
                cluster_ips: (cluster_ip != "None").then(|| vec![cluster_ip.into()]),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p)| ServicePort {
                            name: (!n.is_empty()).then(|| n.to_string()),
                            port: *p,
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn slice(
        ns: &str,
        svc: &str,
        family: &str,
        eps: &[(&str, Option<bool>, Option<&str>)],
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{svc}-abc")),
                namespace: Some(ns.into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into()),
                ..Default::default()
            },
            address_type: family.into(),
            endpoints: eps
                .iter()
                .map(|(ip, ready, hostname)| Endpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..Default::default()
                    }),
                    hostname: hostname.map(str::to_string),
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        }
    }

    #[test]
    fn cluster_ip_service_keeps_its_address_and_ports() {
        let svcs = [service(
            "default",
            "web",
            "10.96.0.10",
            &[("http", 80), ("", 9090)],
        )];
        let records = Records::from_objects(&svcs, &[]);
        let web = records.service("default", "web").expect("web");
        assert_eq!(
            web.kind,
            ServiceKind::ClusterIp(vec!["10.96.0.10".parse().unwrap()])
        );
        assert_eq!(
            web.ports,
            vec![
                Port {
                    name: "http".into(),
                    protocol: "TCP".into(),
                    port: 80
                },
                Port {
                    name: "".into(),
                    protocol: "TCP".into(),
                    port: 9090
                },
            ]
        );
        assert!(records.has_namespace("default"));
        assert!(!records.has_namespace("other"));
    }

    #[test]
    fn headless_endpoints_count_when_ready_or_unset() {
        let svcs = [service("ns", "db", "None", &[("sql", 5432)])];
        let slices = [slice(
            "ns",
            "db",
            "IPv4",
            &[
                ("10.0.0.3", Some(true), Some("db-0")),
                ("10.0.0.4", None, None),
                ("10.0.0.5", Some(false), Some("db-2")),
            ],
        )];
        let records = Records::from_objects(&svcs, &slices);
        let db = records.service("ns", "db").expect("db");
        assert_eq!(db.kind, ServiceKind::Headless);
        let ips: Vec<String> = db.endpoints.iter().map(|e| e.ip.to_string()).collect();
        assert_eq!(ips, ["10.0.0.3", "10.0.0.4"]);
        assert_eq!(db.endpoints[0].dns_label(), "db-0");
        assert_eq!(db.endpoints[1].dns_label(), "10-0-0-4");
        assert_eq!(db.endpoints[0].ports[0].port, 8080);
    }

    #[test]
    fn slices_join_only_their_own_service_and_namespace() {
        let svcs = [
            service("a", "web", "10.96.0.1", &[]),
            service("b", "web", "10.96.0.2", &[]),
        ];
        let slices = [
            slice("a", "web", "IPv4", &[("10.0.0.1", None, None)]),
            slice("b", "other", "IPv4", &[("10.0.0.2", None, None)]),
            slice("b", "web", "FQDN", &[("example.com", None, None)]),
        ];
        let records = Records::from_objects(&svcs, &slices);
        assert_eq!(records.service("a", "web").unwrap().endpoints.len(), 1);
        assert!(records.service("b", "web").unwrap().endpoints.is_empty());
        assert!(records.service("b", "other").is_none());
    }

    #[test]
    fn external_name_and_dual_stack() {
        let mut ext = service("ns", "ext", "", &[]);
        let spec = ext.spec.as_mut().unwrap();
        spec.type_ = Some("ExternalName".into());
        spec.external_name = Some("Example.COM.".into());
        spec.cluster_ip = None;
        spec.cluster_ips = None;
        let mut dual = service("ns", "dual", "10.96.0.7", &[]);
        dual.spec.as_mut().unwrap().cluster_ips = Some(vec!["10.96.0.7".into(), "fd00::7".into()]);
        let records = Records::from_objects(&[ext, dual], &[]);
        assert_eq!(
            records.service("ns", "ext").unwrap().kind,
            ServiceKind::ExternalName("example.com".into())
        );
        assert_eq!(
            records.service("ns", "dual").unwrap().kind,
            ServiceKind::ClusterIp(vec![
                "10.96.0.7".parse().unwrap(),
                "fd00::7".parse().unwrap()
            ])
        );
    }

    #[test]
    fn dashed_addresses_round_trip() {
        for ip in ["10.1.2.3", "fd00::1", "2001:db8::8:800:200c:417a"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(undashed(&dashed(ip)), Some(ip), "{ip}");
        }
        assert_eq!(undashed("not-an-ip"), None);
    }

    #[test]
    fn reverse_prefers_the_cluster_ip() {
        let svcs = [
            service("ns", "web", "10.96.0.1", &[]),
            service("ns", "db", "None", &[]),
        ];
        let slices = [
            slice("ns", "web", "IPv4", &[("10.0.0.9", None, None)]),
            slice("ns", "db", "IPv4", &[("10.0.0.9", None, Some("db-0"))]),
        ];
        let records = Records::from_objects(&svcs, &slices);
        assert_eq!(
            records.reverse("10.96.0.1".parse().unwrap()),
            vec![("ns", "web", None)]
        );
        assert_eq!(
            records.reverse("10.0.0.9".parse().unwrap()),
            vec![
                ("ns", "db", Some("db-0".to_string())),
                ("ns", "web", Some("10-0-0-9".to_string()))
            ]
        );
        assert!(records.reverse("10.0.0.10".parse().unwrap()).is_empty());
    }
}
