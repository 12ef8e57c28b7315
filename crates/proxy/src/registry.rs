//! The routing view compiled from a discovery [`Snapshot`]: HTTP routes by destination port
//! and `Host`, TCP routes by VIP, inbound clusters by target port, and the clusters with their
//! ready endpoints. Building is pure, so every routing rule is a unit test.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::discovery::Snapshot;
use crate::metrics::{Metrics, Peer, ServiceName};

/// Source address of connections to the local app, let through by istio-iptables.
pub const INBOUND_BIND_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6));
/// IPv6 counterpart of [`INBOUND_BIND_V4`].
pub const INBOUND_BIND_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6));

/// Server-first protocols Istio never sniffs (SMTP, DNS, MySQL, MongoDB).
pub const SERVER_FIRST_PORTS: [u16; 4] = [25, 53, 3306, 27017];

/// The protocol a Service port declares by name prefix or `appProtocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Declared {
    /// Sniff the first bytes.
    Auto,
    Http,
    /// TCP, TLS, HTTPS and other opaque protocols: never parsed.
    Opaque,
}

/// Istio's protocol selection for a Service port.
pub fn declared_protocol(name: &str, app_protocol: Option<&str>) -> Declared {
    fn classify(p: &str) -> Option<Declared> {
        let p = p.to_ascii_lowercase();
        match p.as_str() {
            "http" | "http2" | "grpc" | "grpc-web" | "kubernetes.io/h2c" | "kubernetes.io/ws"
            | "kubernetes.io/wss" => Some(Declared::Http),
            "https" | "tls" | "tcp" | "mongo" | "mysql" | "redis" | "udp" => Some(Declared::Opaque),
            _ => None,
        }
    }
    if let Some(d) = app_protocol.and_then(classify) {
        return d;
    }
    let prefix = name.split('-').next().unwrap_or("");
    classify(prefix).unwrap_or(Declared::Auto)
}

/// Where a cluster's traffic goes.
#[derive(Debug)]
pub enum Endpoints {
    /// Balanced over these addresses.
    Balanced(Box<[SocketAddr]>),
    /// The address the client originally dialled (passthrough and inbound clusters).
    OriginalDst,
    /// Nowhere (`BlackHoleCluster`).
    None,
}

/// An upstream cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Envoy's name for it, as logged in `%UPSTREAM_CLUSTER_RAW%`.
    pub name: Arc<str>,
    pub endpoints: Endpoints,
    /// The protocol declared for the port (decides whether connections are sniffed).
    pub declared: Declared,
    /// Local address to bind upstream sockets to.
    pub bind: Option<IpAddr>,
    /// Metric labels of traffic to this cluster.
    pub peer: Peer,
    next: AtomicUsize,
}

impl Cluster {
    pub fn new(
        name: impl Into<Arc<str>>,
        endpoints: Endpoints,
        declared: Declared,
        bind: Option<IpAddr>,
        peer: Peer,
    ) -> Self {
        Self {
            name: name.into(),
            endpoints,
            declared,
            bind,
            peer,
            next: AtomicUsize::new(0),
        }
    }

    /// Picks the next endpoint round-robin, preferring one not in `tried` (Envoy's
    /// previous-hosts retry predicate). `None` when the cluster has no healthy host.
    pub fn pick(&self, original_dst: SocketAddr, tried: &[SocketAddr]) -> Option<SocketAddr> {
        match &self.endpoints {
            Endpoints::OriginalDst => Some(original_dst),
            Endpoints::None => None,
            Endpoints::Balanced(eps) if eps.is_empty() => None,
            Endpoints::Balanced(eps) => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                // Envoy retries host selection up to 5 times before accepting a repeat.
                for i in 0..eps.len().min(5) {
                    let ep = eps[(start + i) % eps.len()];
                    if !tried.contains(&ep) {
                        if i > 0 {
                            self.next.fetch_add(i, Ordering::Relaxed);
                        }
                        return Some(ep);
                    }
                }
                Some(eps[start % eps.len()])
            }
        }
    }

    /// Whether the cluster has no host at all.
    pub fn is_empty(&self) -> bool {
        match &self.endpoints {
            Endpoints::Balanced(eps) => eps.is_empty(),
            Endpoints::OriginalDst => false,
            Endpoints::None => true,
        }
    }
}

/// Identity and settings the view depends on.
#[derive(Clone, Debug)]
pub struct MeshContext {
    /// This pod's namespace: short names resolve in it.
    pub namespace: String,
    /// Cluster DNS domain (`cluster.local`).
    pub domain: String,
    /// This pod's IP: endpoints with it are this pod's inbound ports.
    pub pod_ip: Option<IpAddr>,
}

/// The compiled view.
#[derive(Debug, Default)]
pub struct Registry {
    pub version: u64,
    /// Destination port → lower-case host (without port) → cluster.
    http: HashMap<u16, HashMap<Box<str>, Arc<Cluster>>>,
    /// Service VIP:port → cluster.
    vips: HashMap<SocketAddr, Arc<Cluster>>,
    /// Target port on this pod → `inbound|<port>||` cluster.
    inbound: HashMap<u16, Arc<Cluster>>,
}

impl Registry {
    /// Compiles a snapshot.
    pub fn build(snapshot: &Snapshot, ctx: &MeshContext, metrics: &Metrics) -> Self {
        let mut reg = Registry {
            version: snapshot.version,
            ..Default::default()
        };
        let inbound_bind = match ctx.pod_ip {
            Some(IpAddr::V6(_)) => INBOUND_BIND_V6,
            _ => INBOUND_BIND_V4,
        };
        for svc in &snapshot.services {
            let fqdn = format!("{}.{}.svc.{}", svc.name, svc.namespace, ctx.domain);
            let vips: Vec<IpAddr> = svc
                .cluster_ips
                .iter()
                .filter_map(|ip| ip.parse().ok())
                .collect();
            let svc_name = ServiceName::service(&svc.name, &svc.namespace, &ctx.domain);
            let outbound_peer = metrics.outbound_peer(&svc_name);
            for port in svc.ports.iter().filter(|p| p.protocol == "TCP") {
                let declared = declared_protocol(&port.name, port.app_protocol.as_deref());
                let mut eps: Vec<SocketAddr> = svc
                    .endpoints
                    .iter()
                    .filter_map(|e| {
                        let ip: IpAddr = e.ip.parse().ok()?;
                        Some(SocketAddr::new(ip, *e.ports.get(&port.name)?))
                    })
                    .collect();
                eps.sort_unstable();
                eps.dedup();
                // This pod's own endpoints become inbound clusters.
                if let Some(pod_ip) = ctx.pod_ip {
                    for ep in eps.iter().filter(|e| e.ip() == pod_ip) {
                        reg.inbound.entry(ep.port()).or_insert_with(|| {
                            Arc::new(Cluster::new(
                                format!("inbound|{}||", ep.port()),
                                Endpoints::OriginalDst,
                                declared,
                                Some(inbound_bind),
                                metrics.inbound_peer(&svc_name),
                            ))
                        });
                    }
                }
                let cluster = Arc::new(Cluster::new(
                    format!("outbound|{}||{}", port.port, fqdn),
                    Endpoints::Balanced(eps.into_boxed_slice()),
                    declared,
                    None,
                    outbound_peer.clone(),
                ));
                for vip in &vips {
                    reg.vips
                        .entry(SocketAddr::new(*vip, port.port))
                        .or_insert_with(|| cluster.clone());
                }
                if declared == Declared::Opaque {
                    continue;
                }
                let hosts = reg.http.entry(port.port).or_default();
                let mut names = vec![
                    format!("{}.{}", svc.name, svc.namespace),
                    format!("{}.{}.svc", svc.name, svc.namespace),
                    fqdn.clone(),
                ];
                if svc.namespace == ctx.namespace {
                    names.push(svc.name.clone());
                }
                names.extend(vips.iter().map(IpAddr::to_string));
                for n in names {
                    // The first service (sorted by namespace/name) keeps a contested name.
                    hosts
                        .entry(n.to_ascii_lowercase().into_boxed_str())
                        .or_insert_with(|| cluster.clone());
                }
            }
        }
        reg
    }

    /// The HTTP route for a request to destination port `port` with this `Host`/`:authority`.
    pub fn route_http(&self, port: u16, authority: &str) -> Option<&Arc<Cluster>> {
        let hosts = self.http.get(&port)?;
        let (host, host_port) = split_authority(authority)?;
        if host_port.is_some_and(|p| p != port) {
            return None;
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            hosts.get(host.to_ascii_lowercase().as_str())
        } else {
            hosts.get(host)
        }
    }

    /// The TCP route for a connection to a Service VIP.
    pub fn route_vip(&self, dst: SocketAddr) -> Option<&Arc<Cluster>> {
        self.vips.get(&dst)
    }

    /// The inbound cluster for a target port of this pod.
    pub fn inbound(&self, port: u16) -> Option<&Arc<Cluster>> {
        self.inbound.get(&port)
    }
}

/// Splits `host[:port]` (with `[v6]:port` support). `None` for an unparsable port.
pub fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(p) => Some((host, Some(p.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match authority.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address.
        Some((host, _)) if host.contains(':') => Some((authority, None)),
        Some((host, p)) => Some((host, Some(p.parse().ok()?))),
        None => Some((authority, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{EndpointView, PortView, ServiceView};
    use crate::metrics::Workload;

    fn ctx() -> MeshContext {
        MeshContext {
            namespace: "default".into(),
            domain: "cluster.local".into(),
            pod_ip: Some("10.244.0.12".parse().unwrap()),
        }
    }

    fn service(
        ns: &str,
        name: &str,
        vip: &str,
        port: (&str, u16),
        eps: &[(&str, u16)],
    ) -> ServiceView {
        ServiceView {
            name: name.into(),
            namespace: ns.into(),
            cluster_ips: vec![vip.into()],
            ports: vec![PortView {
                name: port.0.into(),
                port: port.1,
                protocol: "TCP".into(),
                app_protocol: None,
            }],
            endpoints: eps
                .iter()
                .map(|(ip, p)| EndpointView {
                    ip: (*ip).into(),
                    ports: [(port.0.to_owned(), *p)].into(),
                })
                .collect(),
        }
    }

    fn registry() -> Registry {
        let snap = Snapshot {
            version: 3,
            services: vec![
                service(
                    "default",
                    "httpbin",
                    "10.96.0.5",
                    ("http", 8000),
                    &[("10.244.0.13", 8080), ("10.244.0.14", 8080)],
                ),
                service(
                    "other",
                    "web",
                    "10.96.0.6",
                    ("", 8000),
                    &[("10.244.1.1", 80)],
                ),
                service(
                    "default",
                    "db",
                    "10.96.0.7",
                    ("tcp-pg", 5432),
                    &[("10.244.2.1", 5432)],
                ),
                service(
                    "default",
                    "sleep",
                    "10.96.0.8",
                    ("http", 80),
                    &[("10.244.0.12", 8081)],
                ),
            ],
        };
        Registry::build(&snap, &ctx(), &Metrics::new(Workload::default()))
    }

    #[test]
    fn routes_by_port_and_host_in_every_spelling() {
        let reg = registry();
        let name = "outbound|8000||httpbin.default.svc.cluster.local";
        for host in [
            "httpbin",
            "httpbin:8000",
            "httpbin.default",
            "httpbin.default.svc",
            "httpbin.default.svc.cluster.local",
            "httpbin.default.svc.cluster.local.",
            "HTTPBIN.Default:8000",
            "10.96.0.5",
            "10.96.0.5:8000",
        ] {
            assert_eq!(
                reg.route_http(8000, host).map(|c| &*c.name),
                Some(name),
                "{host}"
            );
        }
        // Wrong port, other namespace's short name, unknown host.
        assert!(reg.route_http(8000, "httpbin:9000").is_none());
        assert!(reg.route_http(9000, "httpbin").is_none());
        assert!(reg.route_http(8000, "web").is_none());
        assert!(reg.route_http(8000, "example.com").is_none());
        assert_eq!(
            reg.route_http(8000, "web.other").map(|c| &*c.name),
            Some("outbound|8000||web.other.svc.cluster.local")
        );
    }

    #[test]
    fn opaque_ports_get_no_http_route_but_a_vip_route() {
        let reg = registry();
        assert!(reg.route_http(5432, "db").is_none());
        let c = reg.route_vip("10.96.0.7:5432".parse().unwrap()).unwrap();
        assert_eq!(&*c.name, "outbound|5432||db.default.svc.cluster.local");
        assert_eq!(c.declared, Declared::Opaque);
        assert!(reg.route_vip("10.96.0.7:5433".parse().unwrap()).is_none());
    }

    #[test]
    fn own_endpoints_become_inbound_clusters() {
        let reg = registry();
        let c = reg.inbound(8081).unwrap();
        assert_eq!(&*c.name, "inbound|8081||");
        assert_eq!(c.bind, Some(INBOUND_BIND_V4));
        assert_eq!(c.peer.get("destination_service_name"), Some("sleep"));
        assert!(reg.inbound(8080).is_none(), "another pod's port");
    }

    #[test]
    fn round_robin_avoids_hosts_already_tried() {
        let reg = registry();
        let c = reg.route_http(8000, "httpbin").unwrap();
        let dst: SocketAddr = "10.96.0.5:8000".parse().unwrap();
        let a = c.pick(dst, &[]).unwrap();
        let b = c.pick(dst, &[]).unwrap();
        assert_ne!(a, b, "alternates between the two endpoints");
        for _ in 0..4 {
            let again = c.pick(dst, &[a]).unwrap();
            assert_ne!(again, a);
        }
        // With every host tried, a repeat is still better than nothing.
        assert!(c.pick(dst, &[a, b]).is_some());
    }

    #[test]
    fn protocol_selection_follows_istio_naming() {
        assert_eq!(declared_protocol("http", None), Declared::Http);
        assert_eq!(declared_protocol("http-web", None), Declared::Http);
        assert_eq!(declared_protocol("grpc-api", None), Declared::Http);
        assert_eq!(declared_protocol("tcp-db", None), Declared::Opaque);
        assert_eq!(declared_protocol("https", None), Declared::Opaque);
        assert_eq!(declared_protocol("web", None), Declared::Auto);
        assert_eq!(declared_protocol("", None), Declared::Auto);
        assert_eq!(declared_protocol("web", Some("tcp")), Declared::Opaque);
        assert_eq!(declared_protocol("tcp", Some("HTTP")), Declared::Http);
        assert_eq!(declared_protocol("httpx", None), Declared::Auto);
    }

    #[test]
    fn authority_splitting() {
        assert_eq!(split_authority("a:80"), Some(("a", Some(80))));
        assert_eq!(split_authority("a"), Some(("a", None)));
        assert_eq!(split_authority("[::1]:8080"), Some(("::1", Some(8080))));
        assert_eq!(split_authority("[::1]"), Some(("::1", None)));
        assert_eq!(split_authority("::1"), Some(("::1", None)));
        assert_eq!(split_authority("a:x"), None);
    }
}
