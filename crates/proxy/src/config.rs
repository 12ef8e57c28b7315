//! Sidecar configuration from the injected container's environment and Istio's arguments.
//!
//! Environment variables read (all optional):
//! - `POD_NAME`, `POD_NAMESPACE`, `INSTANCE_IP`: the pod (downward API).
//! - `PROXY_CONFIG`: JSON `ProxyConfig` (`discoveryAddress`, `terminationDrainDuration`,
//!   `holdApplicationUntilProxyStarts`, `statusPort`, `proxyMetadata`), merged over
//!   `MESH_CONFIG.defaultConfig`.
//! - `MESH_CONFIG`: JSON `MeshConfig` subset: `accessLogFile`, `accessLogEncoding`,
//!   `outboundTrafficPolicy.mode`, `protocolDetectionTimeout`, `defaultConfig`.
//! - `ISTIO_META_WORKLOAD_NAME`, `ISTIO_META_CLUSTER_ID`: metric labels.
//! - `ISTIO_KUBE_APP_PROBERS`: JSON map of `/app-health/...` path to the app's original probe.
//! - `ISTIO_PROMETHEUS_ANNOTATIONS`: JSON `{scrape, path, port}` of the app's own metrics,
//!   merged into `:15020/stats/prometheus`.
//! - `EXIT_ON_ZERO_ACTIVE_CONNECTIONS`, `MINIMUM_DRAIN_DURATION` (also accepted from
//!   `proxyMetadata`).
//!
//! Labels for metrics come from `/etc/istio/pod/labels` (the downward-API file Istio mounts)
//! when it exists.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;
use serde::Deserialize;

use crate::accesslog::{Encoding, Sink};
use crate::metrics::{UNKNOWN, Workload};

/// Istio's default discovery address.
pub const DEFAULT_DISCOVERY_ADDRESS: &str = "istiod.istio-system.svc:15012";
/// `ProxyConfig.terminationDrainDuration` default.
pub const DEFAULT_TERMINATION_DRAIN: Duration = Duration::from_secs(5);
/// `MINIMUM_DRAIN_DURATION` default.
pub const DEFAULT_MINIMUM_DRAIN: Duration = Duration::from_secs(5);

/// A configuration problem, naming the variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}={value:?}: {reason}")]
    Env {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("argument {arg:?}: {reason}")]
    Arg { arg: String, reason: String },
}

/// Parses a Go/protobuf duration such as `5s`, `1m30s`, `500ms` or `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {s:?}"))?;
        let value: f64 = rest[..num_end]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            unit => return Err(format!("unknown unit {unit:?} in duration {s:?}")),
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    Ok(Duration::from_secs_f64(total))
}

/// The `ProxyConfig` fields the proxy uses.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProxyConfigJson {
    discovery_address: Option<String>,
    termination_drain_duration: Option<String>,
    hold_application_until_proxy_starts: Option<bool>,
    status_port: Option<u16>,
    concurrency: Option<usize>,
    #[serde(default)]
    proxy_metadata: HashMap<String, String>,
}

impl ProxyConfigJson {
    fn merge_over(self, base: ProxyConfigJson) -> ProxyConfigJson {
        let mut proxy_metadata = base.proxy_metadata;
        proxy_metadata.extend(self.proxy_metadata);
        ProxyConfigJson {
            discovery_address: self.discovery_address.or(base.discovery_address),
            termination_drain_duration: self
                .termination_drain_duration
                .or(base.termination_drain_duration),
            hold_application_until_proxy_starts: self
                .hold_application_until_proxy_starts
                .or(base.hold_application_until_proxy_starts),
            status_port: self.status_port.or(base.status_port),
            concurrency: self.concurrency.or(base.concurrency),
            proxy_metadata,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutboundTrafficPolicy {
    mode: Option<String>,
}

/// The `MeshConfig` fields the proxy uses.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MeshConfigJson {
    access_log_file: Option<String>,
    access_log_encoding: Option<String>,
    outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    protocol_detection_timeout: Option<String>,
    default_config: Option<ProxyConfigJson>,
}

/// `ISTIO_PROMETHEUS_ANNOTATIONS`: where the app's own metrics are.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct AppMetrics {
    #[serde(default)]
    pub scrape: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub port: String,
}

/// Addresses the sidecar listens on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ports {
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub health: SocketAddr,
    pub status: SocketAddr,
    pub prometheus: SocketAddr,
}

impl Ports {
    /// Istio's: 15001, 15006, 15021, 15020 and 15090 on all addresses.
    pub fn istio(status_port: u16) -> Self {
        let any = |p| SocketAddr::from(([0, 0, 0, 0], p));
        Self {
            outbound: any(15001),
            inbound: any(15006),
            health: any(15021),
            status: any(status_port),
            prometheus: any(15090),
        }
    }

    /// Ephemeral ports on 127.0.0.1 (tests).
    pub fn ephemeral() -> Self {
        let lo = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            outbound: lo,
            inbound: lo,
            health: lo,
            status: lo,
            prometheus: lo,
        }
    }
}

/// Everything the sidecar needs.
#[derive(Clone, Debug)]
pub struct SidecarConfig {
    pub pod_name: String,
    pub namespace: String,
    pub pod_ip: Option<IpAddr>,
    /// Cluster DNS domain, from `--domain <ns>.svc.<domain>`.
    pub domain: String,
    pub discovery_address: String,
    pub termination_drain: Duration,
    pub exit_on_zero_active: bool,
    pub minimum_drain: Duration,
    pub hold_application: bool,
    pub access_log: Option<Sink>,
    pub access_log_encoding: Encoding,
    pub registry_only: bool,
    pub detect_timeout: Option<Duration>,
    pub workload: Workload,
    /// `/app-health/<container>/<kind>` → the app's probe.
    pub probers: HashMap<String, Probe>,
    pub app_metrics: Option<AppMetrics>,
    pub ports: Ports,
    /// Data-plane worker threads (Istio's `concurrency`).
    pub concurrency: usize,
}

fn env_json<T: for<'de> Deserialize<'de>>(
    name: &'static str,
    value: Option<String>,
) -> Result<Option<T>, ConfigError> {
    match value {
        Some(v) if !v.trim().is_empty() => {
            serde_json::from_str(&v)
                .map(Some)
                .map_err(|e| ConfigError::Env {
                    name,
                    value: v,
                    reason: e.to_string(),
                })
        }
        _ => Ok(None),
    }
}

fn env_bool(name: &'static str, value: Option<&String>) -> Result<bool, ConfigError> {
    match value.map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) => match v.as_str() {
            "" | "0" | "false" | "f" => Ok(false),
            "1" | "true" | "t" => Ok(true),
            _ => Err(ConfigError::Env {
                name,
                value: v,
                reason: "expected true or false".into(),
            }),
        },
    }
}

fn env_duration(
    name: &'static str,
    value: Option<String>,
) -> Result<Option<Duration>, ConfigError> {
    match value {
        Some(v) => parse_duration(&v)
            .map(Some)
            .map_err(|reason| ConfigError::Env {
                name,
                value: v,
                reason,
            }),
        None => Ok(None),
    }
}

/// Istio's `proxy sidecar` arguments the proxy uses (the rest are accepted and ignored).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IstioArgs {
    pub domain: Option<String>,
    pub status_port: Option<u16>,
    pub concurrency: Option<usize>,
}

impl IstioArgs {
    /// Parses `--domain X`/`--domain=X`, `--statusPort N` and `--concurrency N`; ignores
    /// everything else.
    pub fn parse(args: &[String]) -> Result<Self, ConfigError> {
        let mut out = Self::default();
        let mut it = args.iter().peekable();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) => (f, Some(v.to_owned())),
                None => (arg.as_str(), None),
            };
            let value = |it: &mut std::iter::Peekable<std::slice::Iter<'_, String>>| {
                inline
                    .clone()
                    .or_else(|| it.next_if(|v| !v.starts_with("--")).cloned())
            };
            match flag.trim_start_matches('-') {
                "domain" => out.domain = value(&mut it),
                "statusPort" => {
                    if let Some(v) = value(&mut it) {
                        out.status_port = Some(v.parse().map_err(|_| ConfigError::Arg {
                            arg: arg.clone(),
                            reason: "not a port number".into(),
                        })?);
                    }
                }
                "concurrency" => {
                    if let Some(v) = value(&mut it) {
                        out.concurrency = Some(v.parse().map_err(|_| ConfigError::Arg {
                            arg: arg.clone(),
                            reason: "not a number".into(),
                        })?);
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

/// Reads `key="value"` lines of a downward-API labels file.
pub fn parse_labels_file(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            Some((k.trim().to_owned(), v.replace("\\\"", "\"")))
        })
        .collect()
}

impl SidecarConfig {
    /// Builds the configuration from environment variables (through `env`) and Istio's
    /// arguments; `labels` are the pod's labels when known.
    pub fn from_env(
        env: &dyn Fn(&str) -> Option<String>,
        args: &IstioArgs,
        labels: &HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let pod_name = env("POD_NAME").unwrap_or_default();
        let namespace = env("POD_NAMESPACE").unwrap_or_else(|| "default".into());
        let pod_ip = match env("INSTANCE_IP").filter(|v| !v.is_empty()) {
            Some(v) => Some(v.parse().map_err(|_| ConfigError::Env {
                name: "INSTANCE_IP",
                value: v.clone(),
                reason: "not an IP address".into(),
            })?),
            None => None,
        };
        let mesh: MeshConfigJson = env_json("MESH_CONFIG", env("MESH_CONFIG"))?.unwrap_or_default();
        let proxy: ProxyConfigJson =
            env_json("PROXY_CONFIG", env("PROXY_CONFIG"))?.unwrap_or_default();
        let proxy = proxy.merge_over(mesh.default_config.clone().unwrap_or_default());
        let meta =
            |name: &'static str| env(name).or_else(|| proxy.proxy_metadata.get(name).cloned());

        let termination_drain = match proxy.termination_drain_duration.clone() {
            Some(v) => parse_duration(&v).map_err(|reason| ConfigError::Env {
                name: "PROXY_CONFIG",
                value: v,
                reason: format!("terminationDrainDuration: {reason}"),
            })?,
            None => DEFAULT_TERMINATION_DRAIN,
        };
        let exit_on_zero_active = env_bool(
            "EXIT_ON_ZERO_ACTIVE_CONNECTIONS",
            meta("EXIT_ON_ZERO_ACTIVE_CONNECTIONS").as_ref(),
        )?;
        let minimum_drain = env_duration("MINIMUM_DRAIN_DURATION", meta("MINIMUM_DRAIN_DURATION"))?
            .unwrap_or(DEFAULT_MINIMUM_DRAIN);
        let access_log = mesh
            .access_log_file
            .as_deref()
            .filter(|f| !f.is_empty())
            .map(Sink::from_path);
        let access_log_encoding = match mesh.access_log_encoding.clone() {
            Some(v) => v.parse().map_err(|reason| ConfigError::Env {
                name: "MESH_CONFIG",
                value: v,
                reason,
            })?,
            None => Encoding::Text,
        };
        let registry_only = match mesh
            .outbound_traffic_policy
            .as_ref()
            .and_then(|p| p.mode.as_deref())
        {
            None | Some("ALLOW_ANY") | Some("") => false,
            Some("REGISTRY_ONLY") => true,
            Some(other) => {
                return Err(ConfigError::Env {
                    name: "MESH_CONFIG",
                    value: other.to_owned(),
                    reason: "outboundTrafficPolicy.mode must be ALLOW_ANY or REGISTRY_ONLY".into(),
                });
            }
        };
        let detect_timeout = match mesh.protocol_detection_timeout.clone() {
            Some(v) => {
                let d = parse_duration(&v).map_err(|reason| ConfigError::Env {
                    name: "MESH_CONFIG",
                    value: v,
                    reason: format!("protocolDetectionTimeout: {reason}"),
                })?;
                (!d.is_zero()).then_some(d)
            }
            None => None,
        };
        let probers: HashMap<String, Probe> =
            env_json("ISTIO_KUBE_APP_PROBERS", env("ISTIO_KUBE_APP_PROBERS"))?.unwrap_or_default();
        let app_metrics: Option<AppMetrics> = env_json(
            "ISTIO_PROMETHEUS_ANNOTATIONS",
            env("ISTIO_PROMETHEUS_ANNOTATIONS"),
        )?;

        let domain = args
            .domain
            .as_deref()
            .and_then(|d| d.split_once(".svc.").map(|(_, rest)| rest.to_owned()))
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "cluster.local".into());
        let workload_name = env("ISTIO_META_WORKLOAD_NAME")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| pod_name.clone());
        let label = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| labels.get(*k).filter(|v| !v.is_empty()).cloned())
        };
        let canonical_service = label(&[
            "service.istio.io/canonical-name",
            "app.kubernetes.io/name",
            "app",
        ])
        .unwrap_or_else(|| workload_name.clone());
        let workload = Workload {
            name: workload_name,
            namespace: namespace.clone(),
            canonical_service: canonical_service.clone(),
            canonical_revision: label(&[
                "service.istio.io/canonical-revision",
                "app.kubernetes.io/version",
                "version",
            ])
            .unwrap_or_else(|| "latest".into()),
            app: label(&["app", "app.kubernetes.io/name"]).unwrap_or_else(|| UNKNOWN.into()),
            version: label(&["version", "app.kubernetes.io/version"])
                .unwrap_or_else(|| UNKNOWN.into()),
            cluster: env("ISTIO_META_CLUSTER_ID")
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "Kubernetes".into()),
        };
        let status_port = args.status_port.or(proxy.status_port).unwrap_or(15020);
        Ok(Self {
            pod_name,
            namespace,
            pod_ip,
            domain,
            discovery_address: proxy
                .discovery_address
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| DEFAULT_DISCOVERY_ADDRESS.into()),
            termination_drain,
            exit_on_zero_active,
            minimum_drain,
            hold_application: proxy.hold_application_until_proxy_starts.unwrap_or(false),
            access_log,
            access_log_encoding,
            registry_only,
            detect_timeout,
            workload,
            probers,
            app_metrics: app_metrics.filter(|m| m.scrape == "true"),
            ports: Ports::istio(status_port),
            // 0 means "one per CPU" in Istio; either way no more than the CPUs we have.
            concurrency: match args.concurrency.or(proxy.concurrency) {
                None => crate::workers::default_count(),
                Some(0) => std::thread::available_parallelism().map_or(1, |n| n.get()),
                Some(n) => n.min(std::thread::available_parallelism().map_or(n, |p| p.get())),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn defaults_without_environment() {
        let cfg =
            SidecarConfig::from_env(&env_of(&[]), &IstioArgs::default(), &HashMap::new()).unwrap();
        assert_eq!(cfg.discovery_address, DEFAULT_DISCOVERY_ADDRESS);
        assert_eq!(cfg.termination_drain, Duration::from_secs(5));
        assert!(!cfg.registry_only);
        assert!(cfg.access_log.is_none());
        assert_eq!(cfg.domain, "cluster.local");
        assert_eq!(cfg.ports.status.port(), 15020);
        assert_eq!(cfg.ports.outbound.port(), 15001);
        assert!(cfg.detect_timeout.is_none());
    }

    #[test]
    fn reads_istio_environment_and_mesh_settings() {
        let env = env_of(&[
            ("POD_NAME", "sleep-1"),
            ("POD_NAMESPACE", "apps"),
            ("INSTANCE_IP", "10.244.0.12"),
            (
                "PROXY_CONFIG",
                r#"{"discoveryAddress":"10.0.0.1:15010","terminationDrainDuration":"30s","proxyMetadata":{"EXIT_ON_ZERO_ACTIVE_CONNECTIONS":"true"}}"#,
            ),
            (
                "MESH_CONFIG",
                r#"{"accessLogFile":"/dev/stdout","accessLogEncoding":"JSON","outboundTrafficPolicy":{"mode":"REGISTRY_ONLY"},"defaultConfig":{"terminationDrainDuration":"9s","holdApplicationUntilProxyStarts":true}}"#,
            ),
            ("ISTIO_META_WORKLOAD_NAME", "sleep"),
            ("MINIMUM_DRAIN_DURATION", "2s"),
            (
                "ISTIO_KUBE_APP_PROBERS",
                r#"{"/app-health/app/readyz":{"httpGet":{"path":"/ready","port":8080,"scheme":"HTTP"},"timeoutSeconds":3}}"#,
            ),
        ]);
        let args = IstioArgs::parse(&[
            "--domain".into(),
            "apps.svc.corp.example".into(),
            "--proxyLogLevel=warning".into(),
        ])
        .unwrap();
        let labels = parse_labels_file("app=\"sleep\"\nversion=\"v2\"\n");
        let cfg = SidecarConfig::from_env(&env, &args, &labels).unwrap();
        assert_eq!(cfg.namespace, "apps");
        assert_eq!(cfg.pod_ip, Some("10.244.0.12".parse().unwrap()));
        assert_eq!(cfg.discovery_address, "10.0.0.1:15010");
        // PROXY_CONFIG wins over the mesh default; the rest of the default still applies.
        assert_eq!(cfg.termination_drain, Duration::from_secs(30));
        assert!(cfg.hold_application);
        assert!(cfg.exit_on_zero_active);
        assert_eq!(cfg.minimum_drain, Duration::from_secs(2));
        assert_eq!(cfg.access_log, Some(Sink::Stdout));
        assert_eq!(cfg.access_log_encoding, Encoding::Json);
        assert!(cfg.registry_only);
        assert_eq!(cfg.domain, "corp.example");
        assert_eq!(cfg.workload.name, "sleep");
        assert_eq!(cfg.workload.app, "sleep");
        assert_eq!(cfg.workload.version, "v2");
        assert_eq!(cfg.workload.canonical_revision, "v2");
        let probe = &cfg.probers["/app-health/app/readyz"];
        assert_eq!(
            probe.http_get.as_ref().and_then(|h| h.path.as_deref()),
            Some("/ready")
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = SidecarConfig::from_env(
            &env_of(&[("PROXY_CONFIG", "{not json")]),
            &IstioArgs::default(),
            &HashMap::new(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("PROXY_CONFIG="), "{err}");
        let err = SidecarConfig::from_env(
            &env_of(&[(
                "MESH_CONFIG",
                r#"{"outboundTrafficPolicy":{"mode":"SOMETIMES"}}"#,
            )]),
            &IstioArgs::default(),
            &HashMap::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("REGISTRY_ONLY"), "{err}");
        let err = SidecarConfig::from_env(
            &env_of(&[("INSTANCE_IP", "pod")]),
            &IstioArgs::default(),
            &HashMap::new(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("INSTANCE_IP="), "{err}");
    }

    #[test]
    fn istio_args_accept_both_spellings() {
        let a = IstioArgs::parse(&[
            "--domain=default.svc.cluster.local".into(),
            "--statusPort".into(),
            "15999".into(),
            "--concurrency".into(),
            "2".into(),
        ])
        .unwrap();
        assert_eq!(a.domain.as_deref(), Some("default.svc.cluster.local"));
        assert_eq!(a.status_port, Some(15999));
        assert_eq!(a.concurrency, Some(2));
        assert!(IstioArgs::parse(&["--statusPort=x".into()]).is_err());
    }
}
