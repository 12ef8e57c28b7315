//! The injection template: what Istio's `injection-template.yaml` renders with default
//! values, as Rust, driven by the pod's annotations.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, DownwardAPIVolumeFile,
    DownwardAPIVolumeSource, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, HTTPGetAction,
    Lifecycle, LifecycleHandler, ObjectFieldSelector, Pod, Probe, ProjectedVolumeSource,
    ResourceFieldSelector, ResourceRequirements, SecurityContext, ServiceAccountTokenProjection,
    Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::workload::Workload;
use super::{
    INIT_CONTAINER, InjectContext, InjectError, PROXY_CONTAINER, PROXY_UID,
    native_sidecars_supported,
};
use crate::config::{ProxyConfig, TRUST_DOMAIN};

/// How traffic reaches the proxy (`sidecar.istio.io/interceptionMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interception {
    Redirect,
    Tproxy,
    None,
}

impl Interception {
    fn as_str(self) -> &'static str {
        match self {
            Interception::Redirect => "REDIRECT",
            Interception::Tproxy => "TPROXY",
            Interception::None => "NONE",
        }
    }
}

/// Everything the template reads, resolved from the mesh config and the pod.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    pub native: bool,
    /// `holdApplicationUntilProxyStarts` in effect (legacy layout only).
    pub hold: bool,
    pub interception: Interception,
    /// The agent's status port (`status.sidecar.istio.io/port`); 0 turns probes off.
    pub status_port: i32,
    pub proxy_config: ProxyConfig,
    pub rewrite_probes: bool,
    include_ip_ranges: String,
    exclude_ip_ranges: String,
    include_inbound_ports: String,
    exclude_inbound_ports: String,
    include_outbound_ports: Option<String>,
    exclude_outbound_ports: Option<String>,
    reroute_interfaces: Option<String>,
    exclude_interfaces: Option<String>,
    agent_log_level: String,
    proxy_log_level: String,
    component_log_level: String,
    readiness_initial_delay: i32,
    readiness_period: i32,
    readiness_failure_threshold: i32,
    cap_net_bind_service: bool,
    proxy_image: String,
    proxy_resources: ResourceRequirements,
}

pub(crate) const STATUS_PORT: i32 = 15020;
const READINESS_PORT: i32 = 15021;
const ENVOY_PROM_PORT: i32 = 15090;

fn annotation<'p>(pod: &'p Pod, name: &str) -> Option<&'p str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(name))
        .map(String::as_str)
}

fn bad(name: &str, value: &str, reason: &str) -> InjectError {
    InjectError::InvalidAnnotation {
        name: name.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn port_number(name: &str, value: &str) -> Result<i32, InjectError> {
    value
        .trim()
        .parse::<u16>()
        .map(i32::from)
        .map_err(|_| bad(name, value, "must be a port number (0-65535)"))
}

/// Comma-separated ports, as the capture flags take them.
fn port_list(pod: &Pod, name: &str, allow_star: bool) -> Result<Option<String>, InjectError> {
    let Some(value) = annotation(pod, name) else {
        return Ok(None);
    };
    if allow_star && value.trim() == "*" {
        return Ok(Some(value.to_owned()));
    }
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part.parse::<u16>().is_err() {
            let reason = if allow_star {
                "must be * or a comma-separated list of ports"
            } else {
                "must be a comma-separated list of ports"
            };
            return Err(bad(name, value, reason));
        }
    }
    Ok(Some(value.to_owned()))
}

/// Comma-separated CIDRs, or `*`.
fn cidr_list(pod: &Pod, name: &str) -> Result<Option<String>, InjectError> {
    let Some(value) = annotation(pod, name) else {
        return Ok(None);
    };
    if value.trim() == "*" {
        return Ok(Some(value.to_owned()));
    }
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ok = match part.split_once('/') {
            Some((ip, bits)) => match (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
                (Ok(IpAddr::V4(_)), Ok(b)) => b <= 32,
                (Ok(IpAddr::V6(_)), Ok(b)) => b <= 128,
                _ => false,
            },
            None => false,
        };
        if !ok {
            return Err(bad(
                name,
                value,
                "must be * or a comma-separated list of CIDRs",
            ));
        }
    }
    Ok(Some(value.to_owned()))
}

fn non_negative(pod: &Pod, name: &str, default: i32) -> Result<i32, InjectError> {
    match annotation(pod, name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| bad(name, v, "must be a non-negative integer")),
    }
}

impl Params {
    pub(crate) fn from_pod(pod: &Pod, ctx: &InjectContext<'_>) -> Result<Params, InjectError> {
        let mesh = ctx.mesh;
        let pod_proxy_config = match annotation(pod, super::ANNOTATION_PROXY_CONFIG) {
            Some(text) => ProxyConfig::from_yaml(text, super::ANNOTATION_PROXY_CONFIG)
                .map_err(InjectError::ProxyConfig)?,
            None => ProxyConfig::default(),
        };
        let mut proxy_config = mesh.default_config.merged_with(&pod_proxy_config);
        proxy_config
            .discovery_address
            .get_or_insert_with(|| mesh.discovery_address().to_owned());

        // The template's $nativeSidecar: a non-empty pod annotation decides, and only
        // "false" turns native sidecars off.
        let native =
            match annotation(pod, super::ANNOTATION_NATIVE_SIDECAR).filter(|v| !v.is_empty()) {
                Some(v) => v != "false",
                None => {
                    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
                    match mesh.native_sidecars {
                        crate::config::NativeSidecars::True => true,
                        crate::config::NativeSidecars::False => false,
                        crate::config::NativeSidecars::Auto => {
                            native_sidecars_supported(ctx.nodes, node)
                        }
                    }
                }
            };
        let hold = proxy_config
            .hold_application_until_proxy_starts
            .unwrap_or(false)
            || mesh
                .values_hold_application_until_proxy_starts
                .unwrap_or(false);

        let name = super::ANNOTATION_INTERCEPTION_MODE;
        let interception = match annotation(pod, name) {
            None => Interception::Redirect,
            Some("REDIRECT") => Interception::Redirect,
            Some("TPROXY") => Interception::Tproxy,
            Some("NONE") => Interception::None,
            Some(v) => return Err(bad(name, v, "must be one of REDIRECT, TPROXY, NONE")),
        };
        let status_port = match annotation(pod, "status.sidecar.istio.io/port") {
            None => STATUS_PORT,
            Some(v) => port_number("status.sidecar.istio.io/port", v)?,
        };
        // The agent learns a non-default status port from its ProxyConfig.
        if status_port != STATUS_PORT {
            proxy_config.status_port = u16::try_from(status_port).ok();
        }
        let rewrite_probes = match annotation(pod, "sidecar.istio.io/rewriteAppHTTPProbers") {
            None => true,
            Some(v) => super::go_parse_bool(v).ok_or_else(|| {
                bad(
                    "sidecar.istio.io/rewriteAppHTTPProbers",
                    v,
                    "must be true or false",
                )
            })?,
        };
        let cap_net_bind_service =
            annotation(pod, "sidecar.istio.io/capNetBindService").is_some_and(|v| v == "true");

        let mut proxy_resources = ResourceRequirements {
            limits: Some(quantities(&[("cpu", "2"), ("memory", "1Gi")])),
            requests: Some(quantities(&[("cpu", "100m"), ("memory", "128Mi")])),
            ..ResourceRequirements::default()
        };
        let custom = [
            ("sidecar.istio.io/proxyCPU", "cpu", false),
            ("sidecar.istio.io/proxyMemory", "memory", false),
            ("sidecar.istio.io/proxyCPULimit", "cpu", true),
            ("sidecar.istio.io/proxyMemoryLimit", "memory", true),
        ];
        if custom.iter().any(|(a, _, _)| annotation(pod, a).is_some()) {
            // Any of these replaces the default resources entirely, as in Istio.
            let mut limits = BTreeMap::new();
            let mut requests = BTreeMap::new();
            for (a, resource, limit) in custom {
                if let Some(v) = annotation(pod, a) {
                    let target = if limit { &mut limits } else { &mut requests };
                    target.insert(resource.to_owned(), Quantity(v.to_owned()));
                }
            }
            proxy_resources = ResourceRequirements {
                limits: (!limits.is_empty()).then_some(limits),
                requests: (!requests.is_empty()).then_some(requests),
                ..ResourceRequirements::default()
            };
        }

        let reroute_interfaces = annotation(pod, "istio.io/reroute-virtual-interfaces")
            .or_else(|| annotation(pod, "traffic.sidecar.istio.io/kubevirtInterfaces"))
            .map(str::to_owned);
        Ok(Params {
            native,
            hold,
            interception,
            status_port,
            proxy_config,
            rewrite_probes,
            include_ip_ranges: cidr_list(pod, "traffic.sidecar.istio.io/includeOutboundIPRanges")?
                .unwrap_or_else(|| "*".to_owned()),
            exclude_ip_ranges: cidr_list(pod, "traffic.sidecar.istio.io/excludeOutboundIPRanges")?
                .unwrap_or_default(),
            include_inbound_ports: port_list(
                pod,
                "traffic.sidecar.istio.io/includeInboundPorts",
                true,
            )?
            .unwrap_or_else(|| "*".to_owned()),
            exclude_inbound_ports: port_list(
                pod,
                "traffic.sidecar.istio.io/excludeInboundPorts",
                false,
            )?
            .unwrap_or_default(),
            include_outbound_ports: port_list(
                pod,
                "traffic.sidecar.istio.io/includeOutboundPorts",
                false,
            )?,
            exclude_outbound_ports: port_list(
                pod,
                "traffic.sidecar.istio.io/excludeOutboundPorts",
                false,
            )?,
            reroute_interfaces,
            exclude_interfaces: annotation(pod, "traffic.sidecar.istio.io/excludeInterfaces")
                .map(str::to_owned),
            agent_log_level: annotation(pod, "sidecar.istio.io/agentLogLevel")
                .unwrap_or("default:info")
                .to_owned(),
            proxy_log_level: annotation(pod, "sidecar.istio.io/logLevel")
                .unwrap_or("warning")
                .to_owned(),
            component_log_level: annotation(pod, "sidecar.istio.io/componentLogLevel")
                .unwrap_or("misc:error")
                .to_owned(),
            readiness_initial_delay: non_negative(
                pod,
                "readiness.status.sidecar.istio.io/initialDelaySeconds",
                0,
            )?,
            readiness_period: non_negative(
                pod,
                "readiness.status.sidecar.istio.io/periodSeconds",
                15,
            )?,
            readiness_failure_threshold: non_negative(
                pod,
                "readiness.status.sidecar.istio.io/failureThreshold",
                4,
            )?,
            cap_net_bind_service,
            proxy_image: annotation(pod, "sidecar.istio.io/proxyImage")
                .unwrap_or(ctx.image)
                .to_owned(),
            proxy_resources,
        })
    }

    /// The proxy runs as root only for TPROXY or to bind low ports.
    fn proxy_as_root(&self) -> bool {
        self.interception == Interception::Tproxy || self.cap_net_bind_service
    }

    /// `-d`: Envoy's ports, the status port, then the pod's own exclusions.
    fn excluded_inbound(&self) -> String {
        let mut ports = vec!["15090".to_owned(), "15021".to_owned()];
        let status = self.status_port.to_string();
        if self.status_port != 0 {
            ports.push(status.clone());
        }
        for p in self
            .exclude_inbound_ports
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            if !ports.iter().any(|q| q == p) {
                ports.push(p.to_owned());
            }
        }
        ports.join(",")
    }
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// `istio-init`: runs the capture rules as root with NET_ADMIN/NET_RAW, then exits. It
/// uses the proxy's image (`sidecar.istio.io/proxyImage` moves both).
pub(crate) fn init_container(p: &Params) -> Container {
    let mut args = strings(&[
        "istio-iptables",
        "-p",
        "15001",
        "-z",
        "15006",
        "-u",
        "1337",
        "-m",
        p.interception.as_str(),
        "-i",
        &p.include_ip_ranges,
        "-x",
        &p.exclude_ip_ranges,
        "-b",
        &p.include_inbound_ports,
        "-d",
        &p.excluded_inbound(),
    ]);
    for (flag, value) in [
        ("-q", &p.include_outbound_ports),
        ("-o", &p.exclude_outbound_ports),
        ("-k", &p.reroute_interfaces),
        ("-c", &p.exclude_interfaces),
    ] {
        if let Some(v) = value {
            args.push(flag.to_owned());
            args.push(v.clone());
        }
    }
    args.push(format!("--log_output_level={}", p.agent_log_level));
    let env: Vec<EnvVar> = p
        .proxy_config
        .proxy_metadata
        .iter()
        .map(|(k, v)| env_value(k, v.clone()))
        .collect();
    Container {
        name: INIT_CONTAINER.to_owned(),
        image: Some(p.proxy_image.clone()),
        args: Some(args),
        env: (!env.is_empty()).then_some(env),
        resources: Some(ResourceRequirements {
            limits: Some(quantities(&[("cpu", "2"), ("memory", "1Gi")])),
            requests: Some(quantities(&[("cpu", "100m"), ("memory", "128Mi")])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: Some(strings(&["NET_ADMIN", "NET_RAW"])),
                drop: Some(strings(&["ALL"])),
            }),
            privileged: Some(false),
            read_only_root_filesystem: Some(false),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            run_as_user: Some(0),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

fn env_value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: path.to_owned(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn env_resource(name: &str, resource: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: None,
                divisor: None,
                resource: resource.to_owned(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// `ISTIO_META_POD_PORTS`: the app containers' ports, one JSON object per line, as the
/// template lays them out.
fn pod_ports(app: &[Container]) -> String {
    let mut out = String::from("[");
    let mut first = true;
    for port in app.iter().flat_map(|c| c.ports.iter().flatten()) {
        out.push_str("\n    ");
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&port_json(port));
    }
    out.push_str("\n]");
    out
}

/// A ContainerPort as Go's encoding/json writes it (field order, omitempty).
fn port_json(p: &ContainerPort) -> String {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let mut parts = Vec::new();
    if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
        parts.push(format!("\"name\":{}", quote(n)));
    }
    if let Some(h) = p.host_port.filter(|h| *h != 0) {
        parts.push(format!("\"hostPort\":{h}"));
    }
    parts.push(format!("\"containerPort\":{}", p.container_port));
    if let Some(proto) = p.protocol.as_deref().filter(|s| !s.is_empty()) {
        parts.push(format!("\"protocol\":{}", quote(proto)));
    }
    if let Some(ip) = p.host_ip.as_deref().filter(|s| !s.is_empty()) {
        parts.push(format!("\"hostIP\":{}", quote(ip)));
    }
    format!("{{{}}}", parts.join(","))
}

fn http_probe(port: i32, period: i32, failure: i32, initial_delay: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz/ready".to_owned()),
            port: IntOrString::Int(port),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: (initial_delay != 0).then_some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failure),
        ..Probe::default()
    }
}

fn exec_handler(command: &[&str]) -> LifecycleHandler {
    LifecycleHandler {
        exec: Some(ExecAction {
            command: Some(strings(command)),
        }),
        ..LifecycleHandler::default()
    }
}

/// The volumes of the sidecar, in template order.
pub(crate) fn volumes() -> Vec<Volume> {
    let empty = |name: &str, medium: Option<&str>| Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: medium.map(str::to_owned),
            size_limit: None,
        }),
        ..Volume::default()
    };
    let field_file = |path: &str, field: &str| DownwardAPIVolumeFile {
        path: path.to_owned(),
        field_ref: Some(ObjectFieldSelector {
            api_version: None,
            field_path: field.to_owned(),
        }),
        ..DownwardAPIVolumeFile::default()
    };
    vec![
        empty("workload-socket", None),
        empty("credential-socket", None),
        empty("workload-certs", None),
        empty("istio-envoy", Some("Memory")),
        empty("istio-data", None),
        Volume {
            name: "istio-podinfo".to_owned(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![
                    field_file("labels", "metadata.labels"),
                    field_file("annotations", "metadata.annotations"),
                ]),
                ..DownwardAPIVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "istio-token".to_owned(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some("istio-ca".to_owned()),
                        expiration_seconds: Some(43200),
                        path: "istio-token".to_owned(),
                    }),
                    ..VolumeProjection::default()
                }]),
                default_mode: None,
            }),
            ..Volume::default()
        },
        Volume {
            name: "istiod-ca-cert".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: "istio-ca-root-cert".to_owned(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "istio-ca-crl".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: "istio-ca-crl".to_owned(),
                optional: Some(true),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
    ]
}

/// Mounts of the proxy. Containers run on the host filesystem, so only volumes the pod
/// itself materialises as directories (emptyDir, downwardAPI) are mounted; the
/// certificate and token volumes stay in the pod for Istio's shape but are not mounted.
fn volume_mounts() -> Vec<VolumeMount> {
    [
        ("/var/run/secrets/workload-spiffe-uds", "workload-socket"),
        ("/var/run/secrets/credential-uds", "credential-socket"),
        (
            "/var/run/secrets/workload-spiffe-credentials",
            "workload-certs",
        ),
        ("/var/lib/istio/data", "istio-data"),
        ("/etc/istio/proxy", "istio-envoy"),
        ("/etc/istio/pod", "istio-podinfo"),
    ]
    .into_iter()
    .map(|(path, name)| VolumeMount {
        mount_path: path.to_owned(),
        name: name.to_owned(),
        ..VolumeMount::default()
    })
    .collect()
}

/// `istio-proxy`. `app` are the pod's app containers (for the pod ports and names).
pub(crate) fn proxy_container(
    p: &Params,
    app: &[Container],
    workload: &Workload,
    namespace: &str,
    mesh_json: &str,
) -> Container {
    let mut env = vec![
        env_value("PILOT_CERT_PROVIDER", "istiod"),
        env_value("CA_ADDR", "istiod.istio-system.svc:15012"),
        env_field("POD_NAME", "metadata.name"),
        env_field("POD_NAMESPACE", "metadata.namespace"),
        env_field("INSTANCE_IP", "status.podIP"),
        env_field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        env_field("HOST_IP", "status.hostIP"),
        env_resource("ISTIO_CPU_LIMIT", "limits.cpu"),
        env_value("PROXY_CONFIG", format!("{}\n", p.proxy_config.to_json())),
        env_value("ISTIO_META_POD_PORTS", pod_ports(app)),
        env_value(
            "ISTIO_META_APP_CONTAINERS",
            app.iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
        env_resource("GOMEMLIMIT", "limits.memory"),
        env_resource("GOMAXPROCS", "limits.cpu"),
        env_value("ISTIO_META_CLUSTER_ID", "Kubernetes"),
        env_field("ISTIO_META_NODE_NAME", "spec.nodeName"),
        env_value("ISTIO_META_INTERCEPTION_MODE", p.interception.as_str()),
    ];
    if !workload.name.is_empty() {
        env.push(env_value("ISTIO_META_WORKLOAD_NAME", workload.name.clone()));
        if !workload.api_version.is_empty() {
            env.push(env_value("ISTIO_META_OWNER", workload.owner(namespace)));
        }
    }
    env.push(env_value("ISTIO_META_MESH_ID", TRUST_DOMAIN));
    env.push(env_value("TRUST_DOMAIN", TRUST_DOMAIN));
    // Mesh-wide settings (access log, outbound policy) that istiod would deliver over xDS.
    env.push(env_value("MESH_CONFIG", mesh_json.to_owned()));
    for (k, v) in &p.proxy_config.proxy_metadata {
        env.push(env_value(k, v.clone()));
    }

    let (readiness_probe, startup_probe) = if p.status_port == 0 {
        (None, None)
    } else {
        (
            Some(http_probe(
                READINESS_PORT,
                p.readiness_period,
                p.readiness_failure_threshold,
                p.readiness_initial_delay,
            )),
            // The startupProbe: up to 10 minutes, checked every second.
            Some(http_probe(READINESS_PORT, 1, 600, 0)),
        )
    };

    let lifecycle = if p.native {
        // Native sidecar: start draining inbound as soon as pod termination begins.
        Some(Lifecycle {
            pre_stop: Some(exec_handler(&[
                "pilot-agent",
                "request",
                &format!("--debug-port={}", p.status_port),
                "POST",
                "drain",
            ])),
            ..Lifecycle::default()
        })
    } else if p.hold {
        // The kubelet blocks on postStart, so the app starts once the proxy is ready.
        Some(Lifecycle {
            post_start: Some(exec_handler(&["pilot-agent", "wait"])),
            ..Lifecycle::default()
        })
    } else {
        None
    };

    let root = p.proxy_as_root();
    let mut add = Vec::new();
    if p.interception == Interception::Tproxy {
        add.push("NET_ADMIN".to_owned());
    }
    if p.cap_net_bind_service {
        add.push("NET_BIND_SERVICE".to_owned());
    }
    Container {
        name: PROXY_CONTAINER.to_owned(),
        image: Some(p.proxy_image.clone()),
        args: Some(vec![
            "proxy".to_owned(),
            "sidecar".to_owned(),
            "--domain".to_owned(),
            format!("$(POD_NAMESPACE).svc.{TRUST_DOMAIN}"),
            format!("--proxyLogLevel={}", p.proxy_log_level),
            format!("--proxyComponentLogLevel={}", p.component_log_level),
            format!("--log_output_level={}", p.agent_log_level),
        ]),
        env: Some(env),
        lifecycle,
        ports: Some(vec![ContainerPort {
            container_port: ENVOY_PROM_PORT,
            name: Some("http-envoy-prom".to_owned()),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        readiness_probe,
        startup_probe,
        resources: Some(p.proxy_resources.clone()),
        restart_policy: p.native.then(|| "Always".to_owned()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: (!add.is_empty()).then_some(add),
                drop: Some(strings(&["ALL"])),
            }),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_group: Some(PROXY_UID),
            run_as_non_root: Some(!root),
            run_as_user: Some(if root { 0 } else { PROXY_UID }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(volume_mounts()),
        ..Container::default()
    }
}
