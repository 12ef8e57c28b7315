//! Istio's standard metrics (`istio_requests_total`, `istio_request_duration_milliseconds`,
//! `istio_tcp_*`) with Istio's label names, served in the Prometheus text format.
//!
//! The per-peer part of a label set (workloads, services, principals) is interned once when a
//! view is built, so recording a request costs a pointer hash and two atomic increments
//! rather than hashing twenty strings.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::accesslog::ResponseFlags;

/// Istio's value for anything the proxy does not know.
pub const UNKNOWN: &str = "unknown";

/// The label names of the peer part, in Istio's order.
const PEER_KEYS: [&str; 20] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
];

/// Who this proxy is (the `source_*` labels of outbound traffic, `destination_*` inbound).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub canonical_service: String,
    pub canonical_revision: String,
    pub app: String,
    pub version: String,
    pub cluster: String,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            name: UNKNOWN.into(),
            namespace: UNKNOWN.into(),
            canonical_service: UNKNOWN.into(),
            canonical_revision: UNKNOWN.into(),
            app: UNKNOWN.into(),
            version: UNKNOWN.into(),
            cluster: UNKNOWN.into(),
        }
    }
}

/// The destination service of a request as the labels name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceName {
    /// `destination_service`: the FQDN, or `unknown`.
    pub host: String,
    /// `destination_service_name`: the short name, or the cluster name for passthrough.
    pub name: String,
    pub namespace: String,
}

impl ServiceName {
    pub fn service(name: &str, namespace: &str, domain: &str) -> Self {
        Self {
            host: format!("{name}.{namespace}.svc.{domain}"),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        }
    }

    /// For clusters without a service (`PassthroughCluster`, `BlackHoleCluster`, ...).
    pub fn cluster(cluster: &str) -> Self {
        Self {
            host: UNKNOWN.into(),
            name: cluster.to_owned(),
            namespace: UNKNOWN.into(),
        }
    }
}

/// The interned peer part of a label set.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PeerLabels {
    values: [Box<str>; 20],
    /// `connection_security_policy`.
    security: &'static str,
}

/// A pointer-identity handle on interned [`PeerLabels`]; equal contents share one pointer.
#[derive(Clone, Debug)]
pub struct Peer(Arc<PeerLabels>);

impl PartialEq for Peer {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for Peer {}
impl Hash for Peer {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0), state);
    }
}

impl Peer {
    pub fn get(&self, key: &str) -> Option<&str> {
        PEER_KEYS
            .iter()
            .position(|k| *k == key)
            .map(|i| &*self.0.values[i])
            .or_else(|| (key == "connection_security_policy").then_some(self.0.security))
    }

    fn encode_into(&self, enc: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (k, v) in PEER_KEYS.iter().zip(self.0.values.iter()) {
            (*k, &**v).encode(enc.encode_label())?;
        }
        Ok(())
    }
}

/// What the request was, for `request_protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestProtocol {
    Http,
    Grpc,
}

/// Labels of `istio_requests_total` and `istio_request_duration_milliseconds`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestLabels {
    pub peer: Peer,
    pub protocol: RequestProtocol,
    pub code: u16,
    pub flags: ResponseFlags,
}

fn flags_str(flags: ResponseFlags, buf: &mut String) -> &str {
    let mut bytes = Vec::with_capacity(8);
    flags.write_to(&mut bytes);
    buf.clear();
    buf.push_str(std::str::from_utf8(&bytes).unwrap_or("-"));
    buf
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, enc: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.peer.encode_into(enc)?;
        let proto = match self.protocol {
            RequestProtocol::Http => "http",
            RequestProtocol::Grpc => "grpc",
        };
        ("request_protocol", proto).encode(enc.encode_label())?;
        ("response_code", self.code).encode(enc.encode_label())?;
        ("grpc_response_status", "").encode(enc.encode_label())?;
        let mut buf = String::new();
        ("response_flags", flags_str(self.flags, &mut buf)).encode(enc.encode_label())?;
        ("connection_security_policy", self.peer.0.security).encode(enc.encode_label())
    }
}

/// Labels of the `istio_tcp_*` metrics.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TcpLabels {
    pub peer: Peer,
    pub flags: ResponseFlags,
}

impl EncodeLabelSet for TcpLabels {
    fn encode(&self, enc: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.peer.encode_into(enc)?;
        ("request_protocol", "tcp").encode(enc.encode_label())?;
        let mut buf = String::new();
        ("response_flags", flags_str(self.flags, &mut buf)).encode(enc.encode_label())?;
        ("connection_security_policy", self.peer.0.security).encode(enc.encode_label())
    }
}

/// The `cluster_name` label of Envoy's cluster stats.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClusterLabel(pub Arc<str>);

impl EncodeLabelSet for ClusterLabel {
    fn encode(&self, enc: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        ("cluster_name", &*self.0).encode(enc.encode_label())
    }
}

/// Envoy counters keep their names without `_total`; a monotonic gauge does that.
type EnvoyCounter = Gauge<u64, std::sync::atomic::AtomicU64>;

/// Istio's buckets for `istio_request_duration_milliseconds`.
const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS_MS)
}

/// The proxy's metrics registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RequestLabels, Histogram, fn() -> Histogram>,
    tcp_opened: Family<TcpLabels, Counter>,
    tcp_closed: Family<TcpLabels, Counter>,
    tcp_sent: Family<TcpLabels, Counter>,
    tcp_received: Family<TcpLabels, Counter>,
    connect_fail: Family<ClusterLabel, EnvoyCounter>,
    retries: Family<ClusterLabel, EnvoyCounter>,
    interned: Mutex<HashSet<Arc<PeerLabels>>>,
    workload: Workload,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("workload", &self.workload)
            .finish()
    }
}

impl Metrics {
    pub fn new(workload: Workload) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        let tcp_opened = Family::<TcpLabels, Counter>::default();
        let tcp_closed = Family::<TcpLabels, Counter>::default();
        let tcp_sent = Family::<TcpLabels, Counter>::default();
        let tcp_received = Family::<TcpLabels, Counter>::default();
        registry.register("istio_requests", "Total requests", requests.clone());
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds",
            durations.clone(),
        );
        registry.register(
            "istio_tcp_connections_opened",
            "Total TCP connections opened",
            tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "Total TCP connections closed",
            tcp_closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Total bytes sent during response in case of a TCP connection",
            tcp_sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Total bytes received during request in case of a TCP connection",
            tcp_received.clone(),
        );
        let connect_fail = Family::<ClusterLabel, EnvoyCounter>::default();
        let retries = Family::<ClusterLabel, EnvoyCounter>::default();
        registry.register(
            "envoy_cluster_upstream_cx_connect_fail",
            "Upstream connection failures",
            connect_fail.clone(),
        );
        registry.register(
            "envoy_cluster_upstream_rq_retry",
            "Upstream request retries",
            retries.clone(),
        );
        Self {
            registry,
            connect_fail,
            retries,
            requests,
            durations,
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
            interned: Mutex::new(HashSet::new()),
            workload,
        }
    }

    pub fn workload(&self) -> &Workload {
        &self.workload
    }

    fn intern(&self, labels: PeerLabels) -> Peer {
        let mut set = self.interned.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = set.get(&labels) {
            return Peer(found.clone());
        }
        let arc = Arc::new(labels);
        set.insert(arc.clone());
        Peer(arc)
    }

    /// Labels for traffic this proxy sends out (`reporter="source"`).
    pub fn outbound_peer(&self, dest: &ServiceName) -> Peer {
        let w = &self.workload;
        let u = UNKNOWN;
        self.intern(PeerLabels {
            values: [
                "source",
                &w.name,
                &w.canonical_service,
                &w.canonical_revision,
                &w.namespace,
                u,
                &w.app,
                &w.version,
                &w.cluster,
                u,
                u,
                u,
                u,
                u,
                &dest.host,
                u,
                u,
                &dest.name,
                &dest.namespace,
                u,
            ]
            .map(Box::from),
            security: UNKNOWN,
        })
    }

    /// Labels for traffic this proxy receives (`reporter="destination"`).
    pub fn inbound_peer(&self, dest: &ServiceName) -> Peer {
        let w = &self.workload;
        let u = UNKNOWN;
        self.intern(PeerLabels {
            values: [
                "destination",
                u,
                u,
                u,
                u,
                u,
                u,
                u,
                u,
                &w.name,
                &w.namespace,
                u,
                &w.app,
                &w.version,
                &dest.host,
                &w.canonical_service,
                &w.canonical_revision,
                &dest.name,
                &dest.namespace,
                &w.cluster,
            ]
            .map(Box::from),
            security: "none",
        })
    }

    /// Counts one finished HTTP request.
    pub fn record_request(&self, labels: &RequestLabels, duration_ms: f64) {
        self.requests.get_or_create(labels).inc();
        self.durations.get_or_create(labels).observe(duration_ms);
    }

    pub fn tcp_opened(&self, labels: &TcpLabels) {
        self.tcp_opened.get_or_create(labels).inc();
    }

    /// Counts a closed TCP connection; `sent` went to the client, `received` came from it.
    pub fn tcp_closed(&self, labels: &TcpLabels, sent: u64, received: u64) {
        self.tcp_closed.get_or_create(labels).inc();
        self.tcp_sent.get_or_create(labels).inc_by(sent);
        self.tcp_received.get_or_create(labels).inc_by(received);
    }

    /// Counts a failed upstream connect to `cluster`.
    pub fn connect_failed(&self, cluster: &Arc<str>) {
        self.connect_fail
            .get_or_create(&ClusterLabel(cluster.clone()))
            .inc();
    }

    /// Counts a retried request to `cluster`.
    pub fn retried(&self, cluster: &Arc<str>) {
        self.retries
            .get_or_create(&ClusterLabel(cluster.clone()))
            .inc();
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry).is_err() {
            out.clear();
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }
}

/// `Content-Type` of [`Metrics::encode`].
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Workload {
        Workload {
            name: "sleep".into(),
            namespace: "default".into(),
            canonical_service: "sleep".into(),
            canonical_revision: "latest".into(),
            app: "sleep".into(),
            version: UNKNOWN.into(),
            cluster: "Kubernetes".into(),
        }
    }

    #[test]
    fn equal_peers_are_interned_once() {
        let m = Metrics::new(me());
        let a = m.outbound_peer(&ServiceName::service("httpbin", "default", "cluster.local"));
        let b = m.outbound_peer(&ServiceName::service("httpbin", "default", "cluster.local"));
        let c = m.outbound_peer(&ServiceName::cluster("PassthroughCluster"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            a.get("destination_service"),
            Some("httpbin.default.svc.cluster.local")
        );
        assert_eq!(
            c.get("destination_service_name"),
            Some("PassthroughCluster")
        );
    }

    #[test]
    fn requests_are_exposed_with_istio_names_and_labels() {
        let m = Metrics::new(me());
        let peer = m.outbound_peer(&ServiceName::service("httpbin", "default", "cluster.local"));
        let labels = RequestLabels {
            peer: peer.clone(),
            protocol: RequestProtocol::Http,
            code: 418,
            flags: ResponseFlags::NONE,
        };
        m.record_request(&labels, 3.0);
        m.record_request(&labels, 7.0);
        m.record_request(
            &RequestLabels {
                code: 503,
                flags: ResponseFlags::UF | ResponseFlags::URX,
                ..labels.clone()
            },
            1.0,
        );
        let tcp = TcpLabels {
            peer,
            flags: ResponseFlags::NONE,
        };
        m.tcp_opened(&tcp);
        m.tcp_closed(&tcp, 100, 20);
        let text = m.encode();
        let line = text
            .lines()
            .find(|l| l.starts_with("istio_requests_total{") && l.contains("response_code=\"418\""))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(line.ends_with(" 2"), "{line}");
        for label in [
            "reporter=\"source\"",
            "source_workload=\"sleep\"",
            "source_workload_namespace=\"default\"",
            "destination_service=\"httpbin.default.svc.cluster.local\"",
            "destination_service_name=\"httpbin\"",
            "destination_service_namespace=\"default\"",
            "request_protocol=\"http\"",
            "response_flags=\"-\"",
            "connection_security_policy=\"unknown\"",
        ] {
            assert!(line.contains(label), "{label} missing in {line}");
        }
        assert!(text.contains("response_flags=\"UF,URX\""), "{text}");
        assert!(
            text.contains("istio_request_duration_milliseconds_bucket{"),
            "{text}"
        );
        assert!(
            text.contains("istio_request_duration_milliseconds_count{"),
            "{text}"
        );
        let sent = text
            .lines()
            .find(|l| l.starts_with("istio_tcp_sent_bytes_total{"))
            .unwrap();
        assert!(sent.ends_with(" 100"), "{sent}");
        let received = text
            .lines()
            .find(|l| l.starts_with("istio_tcp_received_bytes_total{"))
            .unwrap();
        assert!(received.ends_with(" 20"), "{received}");
        assert!(text.contains("istio_tcp_connections_opened_total{"));
        assert!(text.contains("istio_tcp_connections_closed_total{"));
    }

    #[test]
    fn inbound_peer_reports_as_destination() {
        let m = Metrics::new(me());
        let p = m.inbound_peer(&ServiceName::service("sleep", "default", "cluster.local"));
        assert_eq!(p.get("reporter"), Some("destination"));
        assert_eq!(p.get("destination_workload"), Some("sleep"));
        assert_eq!(p.get("source_workload"), Some(UNKNOWN));
        assert_eq!(p.get("connection_security_policy"), Some("none"));
    }
}
