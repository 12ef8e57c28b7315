//! The sidecar injector: which pods get a sidecar ([`should_inject`]) and what the pod
//! looks like afterwards ([`inject`]). Pure functions over `Pod`s, so that the API
//! server's admission chain and the webhook share them.
//!
//! Native layout (the default on kubelets >= 1.33): `initContainers` are `istio-init`,
//! `istio-proxy` (`restartPolicy: Always`), then the user's. Legacy layout: the user's
//! init containers, then `istio-init`; `istio-proxy` is the last app container (the first
//! with `holdApplicationUntilProxyStarts`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, MeshConfig};

mod merge;
pub mod probes;
mod template;
mod workload;

#[cfg(test)]
mod tests;

pub use probes::{AppProber, AppProbers, PROBERS_ENV};

/// Label (and annotation) a pod opts in or out with.
pub const INJECT_LABEL: &str = "sidecar.istio.io/inject";
/// Namespace label that turns injection on (`enabled`) or off (`disabled`).
pub const NAMESPACE_INJECTION_LABEL: &str = "istio-injection";
/// Namespace or pod label selecting a control plane revision.
pub const REVISION_LABEL: &str = "istio.io/rev";
/// Annotation recording what was injected; its presence makes re-injection strip first.
pub const ANNOTATION_STATUS: &str = "sidecar.istio.io/status";
/// Per-pod override of the native/legacy decision.
pub const ANNOTATION_NATIVE_SIDECAR: &str = "sidecar.istio.io/nativeSidecar";
/// Per-pod ProxyConfig (YAML or JSON).
pub const ANNOTATION_PROXY_CONFIG: &str = "proxy.istio.io/config";
/// `REDIRECT`, `TPROXY` or `NONE`.
pub const ANNOTATION_INTERCEPTION_MODE: &str = "sidecar.istio.io/interceptionMode";
/// The user's own `istio-proxy`/`istio-init` fields, kept for re-injection.
pub const ANNOTATION_OVERRIDES: &str = "sidecar.istio.io/overrides";
/// Init containers that go before the proxy in the native layout (comma-separated).
pub const ANNOTATION_INIT_BEFORE_PROXY: &str = "sidecar.istio.io/init-containers-before-proxy";
/// The proxy env var holding the pod's original Prometheus annotations.
pub const PROMETHEUS_ENV: &str = "ISTIO_PROMETHEUS_ANNOTATIONS";

/// Namespaces the injector never touches.
pub const IGNORED_NAMESPACES: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];
/// The sidecar container.
pub const PROXY_CONTAINER: &str = "istio-proxy";
/// The traffic capture init container.
pub const INIT_CONTAINER: &str = "istio-init";
/// The image of both: a built-in tool, run as `tandem proxy <args>`.
pub const DEFAULT_PROXY_IMAGE: &str = "tandem/proxy";
/// The proxy's uid and gid.
pub const PROXY_UID: i64 = 1337;
/// The revision this injector serves.
pub const REVISION: &str = "default";

/// A node and the kubelet version it reports (`status.nodeInfo.kubeletVersion`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeVersion {
    pub name: String,
    pub kubelet_version: String,
}

impl NodeVersion {
    pub fn new(name: impl Into<String>, kubelet_version: impl Into<String>) -> Self {
        NodeVersion {
            name: name.into(),
            kubelet_version: kubelet_version.into(),
        }
    }
}

/// What injection needs besides the pod.
#[derive(Debug, Clone, Copy)]
pub struct InjectContext<'a> {
    pub mesh: &'a MeshConfig,
    /// The cluster's nodes; `ENABLE_NATIVE_SIDECARS=auto` looks at their kubelets.
    pub nodes: &'a [NodeVersion],
    /// Image of `istio-init` and `istio-proxy`.
    pub image: &'a str,
    /// Proxy environment forced by the caller (the webhook's `/inject/cluster/X/net/Y`).
    pub proxy_env: &'a [(String, String)],
}

impl<'a> InjectContext<'a> {
    pub fn new(mesh: &'a MeshConfig, nodes: &'a [NodeVersion]) -> Self {
        InjectContext {
            mesh,
            nodes,
            image: DEFAULT_PROXY_IMAGE,
            proxy_env: &[],
        }
    }
}

/// Why injection failed (the pod is then rejected, as with Istio's webhook).
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("the pod has no spec")]
    NoSpec,
    #[error("annotation {name}: invalid value {value:?}: {reason}")]
    InvalidAnnotation {
        name: String,
        value: String,
        reason: String,
    },
    #[error("annotation proxy.istio.io/config: {0}")]
    ProxyConfig(ConfigError),
    #[error("annotation sidecar.istio.io/overrides: {0}")]
    Overrides(String),
    #[error("merging the user's {container} container: {message}")]
    Override { container: String, message: String },
}

/// The outcome of the selection rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    Inject,
    /// No entry of the MutatingWebhookConfiguration matches the namespace and pod labels.
    NotSelected,
    /// `spec.hostNetwork: true`.
    HostNetwork,
    /// One of [`IGNORED_NAMESPACES`].
    IgnoredNamespace,
    /// The pod's `sidecar.istio.io/inject` label (or, without it, annotation) is `"false"`.
    OptedOut,
}

/// Whether a pod created in a namespace with `namespace_labels` gets a sidecar: the
/// webhook configuration's selectors and then the injector's own rules. A pod that is
/// already injected is selected too; [`inject`] re-injects it idempotently.
pub fn should_inject(pod: &Pod, namespace_labels: &BTreeMap<String, String>) -> bool {
    selection(pod, namespace_labels) == Selection::Inject
}

/// [`should_inject`] with the reason.
pub fn selection(pod: &Pod, namespace_labels: &BTreeMap<String, String>) -> Selection {
    let empty = BTreeMap::new();
    let pod_labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    if !webhook_selects(namespace_labels, pod_labels) {
        return Selection::NotSelected;
    }
    inject_required(pod)
}

/// The four webhook entries Istio installs for the default revision, with their
/// namespace and object selectors. Only labels count here, never annotations.
pub fn webhook_selects(
    namespace_labels: &BTreeMap<String, String>,
    pod_labels: &BTreeMap<String, String>,
) -> bool {
    let ns_injection = namespace_labels
        .get(NAMESPACE_INJECTION_LABEL)
        .map(String::as_str);
    let ns_rev = namespace_labels.get(REVISION_LABEL).map(String::as_str);
    let pod_inject = pod_labels.get(INJECT_LABEL).map(String::as_str);
    let pod_rev = pod_labels.get(REVISION_LABEL).map(String::as_str);
    // `NotIn ["false"]` also matches when the label is absent.
    let not_opted_out = pod_inject != Some("false");

    let rev_namespace = ns_rev == Some(REVISION) && ns_injection.is_none() && not_opted_out;
    let rev_object =
        ns_rev.is_none() && ns_injection.is_none() && not_opted_out && pod_rev == Some(REVISION);
    let namespace = ns_injection == Some("enabled") && not_opted_out;
    let object = ns_injection.is_none()
        && ns_rev.is_none()
        && pod_inject == Some("true")
        && pod_rev.is_none();
    rev_namespace || rev_object || namespace || object
}

/// The injector's own rules (`injectRequired`), which is all a webhook can apply since it
/// never sees the namespace's labels.
pub fn inject_required(pod: &Pod) -> Selection {
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return Selection::HostNetwork;
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    if IGNORED_NAMESPACES.contains(&namespace) {
        return Selection::IgnoredNamespace;
    }
    let label = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(INJECT_LABEL));
    let annotation = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INJECT_LABEL));
    // The label wins over the annotation; values other than true/false mean "default",
    // and the default policy (`enabled`) injects.
    match label.or(annotation).map(String::as_str) {
        Some("false") => Selection::OptedOut,
        _ => Selection::Inject,
    }
}

/// Parses `v1.33.0`, `1.33.2-tandem`, `v1.33+` into (major, minor).
fn kubelet_minor(version: &str) -> Option<(u32, u32)> {
    let v = version.trim().trim_start_matches('v');
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor_text = parts.next()?;
    let digits: String = minor_text
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, digits.parse().ok()?))
}

fn supports_native(version: &str) -> bool {
    kubelet_minor(version).is_some_and(|(major, minor)| major > 1 || (major == 1 && minor >= 33))
}

/// `ENABLE_NATIVE_SIDECARS=auto`: native when the pod's node (if it is known), or else
/// every node, runs kubelet 1.33 or newer. Without nodes it stays legacy.
pub fn native_sidecars_supported(nodes: &[NodeVersion], node_name: Option<&str>) -> bool {
    if let Some(name) = node_name.filter(|n| !n.is_empty())
        && let Some(node) = nodes.iter().find(|n| n.name == name)
    {
        return supports_native(&node.kubelet_version);
    }
    !nodes.is_empty() && nodes.iter().all(|n| supports_native(&n.kubelet_version))
}

/// `sidecar.istio.io/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InjectionStatus {
    #[serde(default)]
    pub init_containers: Option<Vec<String>>,
    #[serde(default)]
    pub containers: Option<Vec<String>>,
    #[serde(default)]
    pub volumes: Option<Vec<String>>,
    #[serde(default)]
    pub image_pull_secrets: Option<Vec<String>>,
    #[serde(default)]
    pub revision: String,
}

/// The injection status recorded on `pod`, if it was injected.
pub fn injection_status(pod: &Pod) -> Option<InjectionStatus> {
    let text = pod.metadata.annotations.as_ref()?.get(ANNOTATION_STATUS)?;
    // An unreadable status still marks the pod as injected; nothing can be stripped.
    Some(serde_json::from_str(text).unwrap_or_default())
}

/// Go's `strconv.ParseBool`.
pub(crate) fn go_parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// The pod with its sidecar. Injecting an injected pod gives the same pod.
pub fn inject(pod: &Pod, ctx: &InjectContext<'_>) -> Result<Pod, InjectError> {
    let previously = injection_status(pod);
    let mut pod = pod.clone();
    if pod.spec.is_none() {
        return Err(InjectError::NoSpec);
    }
    if let Some(status) = &previously {
        strip(&mut pod, status)?;
    }
    let params = template::Params::from_pod(&pod, ctx)?;
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let workload = workload::workload(&pod);

    let spec = pod.spec.as_mut().ok_or(InjectError::NoSpec)?;
    // A user's own istio-proxy / istio-init overrides fields of the generated one.
    let user_proxy = take_container(spec, PROXY_CONTAINER);
    let user_init = take_container(spec, INIT_CONTAINER);
    let app = spec.containers.clone();

    let mut proxy = template::proxy_container(
        &params,
        &app,
        &workload,
        &namespace,
        &ctx.mesh.to_mesh_json(),
    );
    let mut init = (params.interception != template::Interception::None)
        .then(|| template::init_container(&params));
    if let Some((user, _)) = &user_proxy {
        proxy = override_with(&proxy, user)?;
    }
    if let (Some(generated), Some((user, _))) = (init.as_ref(), &user_init) {
        init = Some(override_with(generated, user)?);
    }

    let volumes = template::volumes();
    let status = InjectionStatus {
        init_containers: non_empty(
            init.iter()
                .map(|c| c.name.clone())
                .chain(params.native.then(|| PROXY_CONTAINER.to_owned()))
                .collect(),
        ),
        containers: non_empty(
            (!params.native)
                .then(|| PROXY_CONTAINER.to_owned())
                .into_iter()
                .collect(),
        ),
        volumes: non_empty(volumes.iter().map(|v| v.name.clone()).collect()),
        image_pull_secrets: None,
        revision: REVISION.to_owned(),
    };

    let spec_volumes = spec.volumes.get_or_insert_with(Vec::new);
    for v in volumes {
        match spec_volumes.iter_mut().find(|x| x.name == v.name) {
            Some(existing) => *existing = v,
            None => spec_volumes.push(v),
        }
    }

    // The caller's cluster/network overrides replace the template's values.
    for (name, value) in ctx.proxy_env {
        set_env(&mut proxy, name, value.clone());
    }
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if previously.is_none() && (user_proxy.is_some() || user_init.is_some()) {
        annotations.insert(
            ANNOTATION_OVERRIDES.to_owned(),
            overrides_json(user_proxy.as_ref(), user_init.as_ref()),
        );
    }
    prometheus_merge(&mut pod, &mut proxy, ctx.mesh, params.status_port);

    // Probe rewriting: app containers, and in the native layout the user's sidecars.
    let spec = pod.spec.as_mut().ok_or(InjectError::NoSpec)?;
    if params.rewrite_probes && params.status_port != 0 {
        let mut probers = AppProbers::new();
        for c in &mut spec.containers {
            probes::rewrite_container(c, params.status_port, &mut probers);
        }
        if params.native {
            for c in spec.init_containers.iter_mut().flatten() {
                if c.restart_policy.as_deref() == Some("Always") {
                    probes::rewrite_container(c, params.status_port, &mut probers);
                }
            }
        }
        if !probers.is_empty() {
            set_env(&mut proxy, PROBERS_ENV, probes::probers_json(&probers));
        }
    }

    place(spec, init, proxy, &params, &pod.metadata);
    apply_metadata(&mut pod, &app, &workload, &status, ctx);
    Ok(pod)
}

fn non_empty(v: Vec<String>) -> Option<Vec<String>> {
    (!v.is_empty()).then_some(v)
}

/// Removes (and returns) the container called `name` from containers or init containers,
/// with whether it was an init container.
fn take_container(spec: &mut PodSpec, name: &str) -> Option<(Container, bool)> {
    if let Some(i) = spec.containers.iter().position(|c| c.name == name) {
        return Some((spec.containers.remove(i), false));
    }
    let inits = spec.init_containers.as_mut()?;
    let i = inits.iter().position(|c| c.name == name)?;
    Some((inits.remove(i), true))
}

fn override_with(generated: &Container, user: &Container) -> Result<Container, InjectError> {
    merge::overlay(generated, user).map_err(|message| InjectError::Override {
        container: generated.name.clone(),
        message,
    })
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Overrides {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    containers: Vec<Container>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    init_containers: Vec<Container>,
}

fn overrides_json(proxy: Option<&(Container, bool)>, init: Option<&(Container, bool)>) -> String {
    let mut o = Overrides::default();
    for (c, is_init) in [proxy, init].into_iter().flatten() {
        if *is_init {
            o.init_containers.push(c.clone());
        } else {
            o.containers.push(c.clone());
        }
    }
    serde_json::to_string(&o).unwrap_or_else(|_| "{}".to_owned())
}

fn env_of<'c>(c: &'c Container, name: &str) -> Option<&'c str> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

fn set_env(c: &mut Container, name: &str, value: String) {
    let env = c.env.get_or_insert_with(Vec::new);
    match env.iter_mut().find(|e| e.name == name) {
        Some(e) => {
            e.value = Some(value);
            e.value_from = None;
        }
        None => env.push(EnvVar {
            name: name.to_owned(),
            value: Some(value),
            value_from: None,
        }),
    }
}

/// Undoes a previous injection: removes what the status names, puts back the app's
/// original probes and Prometheus annotations, and the user's overridden containers.
fn strip(pod: &mut Pod, status: &InjectionStatus) -> Result<(), InjectError> {
    let status_port = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("status.sidecar.istio.io/port"))
        .and_then(|v| v.trim().parse::<u16>().ok())
        .map_or(template::STATUS_PORT, i32::from);
    let Some(spec) = pod.spec.as_mut() else {
        return Ok(());
    };
    let names = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
    let injected_containers = names(&status.containers);
    let injected_inits = names(&status.init_containers);
    let injected_volumes = names(&status.volumes);
    let injected_secrets = names(&status.image_pull_secrets);

    let old_proxy = spec
        .containers
        .iter()
        .filter(|c| injected_containers.contains(&c.name))
        .chain(
            spec.init_containers
                .iter()
                .flatten()
                .filter(|c| injected_inits.contains(&c.name)),
        )
        .find(|c| c.name == PROXY_CONTAINER)
        .cloned();
    let probers = old_proxy
        .as_ref()
        .and_then(|c| env_of(c, PROBERS_ENV))
        .map(probes::parse_probers)
        .unwrap_or_default();
    let prometheus: Option<PrometheusScrape> = old_proxy
        .as_ref()
        .and_then(|c| env_of(c, PROMETHEUS_ENV))
        .and_then(|v| serde_json::from_str(v).ok());

    spec.containers
        .retain(|c| !injected_containers.contains(&c.name));
    if let Some(inits) = spec.init_containers.as_mut() {
        inits.retain(|c| !injected_inits.contains(&c.name));
    }
    if let Some(volumes) = spec.volumes.as_mut() {
        volumes.retain(|v| !injected_volumes.contains(&v.name));
    }
    if let Some(secrets) = spec.image_pull_secrets.as_mut() {
        secrets.retain(|s| !injected_secrets.contains(&s.name));
    }
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        probes::restore_container(c, &probers);
    }

    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    match prometheus {
        Some(original) => {
            clear_prometheus(annotations);
            for (key, value) in [
                ("prometheus.io/scrape", original.scrape),
                ("prometheus.io/path", original.path),
                ("prometheus.io/port", original.port),
            ] {
                if !value.is_empty() {
                    annotations.insert(key.to_owned(), value);
                }
            }
        }
        None => {
            if prometheus_annotation(annotations, PROM_PORT) == Some(&status_port.to_string()) {
                clear_prometheus(annotations);
            }
        }
    }
    annotations.remove(ANNOTATION_STATUS);

    // The user's own istio-proxy / istio-init, replaced by the merged ones last time.
    if let Some(text) = annotations.get(ANNOTATION_OVERRIDES).cloned() {
        let o: Overrides =
            serde_json::from_str(&text).map_err(|e| InjectError::Overrides(e.to_string()))?;
        let spec = pod.spec.as_mut().ok_or(InjectError::NoSpec)?;
        for c in o.containers {
            if !spec.containers.iter().any(|x| x.name == c.name) {
                spec.containers.push(c);
            }
        }
        for c in o.init_containers {
            let inits = spec.init_containers.get_or_insert_with(Vec::new);
            if !inits.iter().any(|x| x.name == c.name) {
                inits.push(c);
            }
        }
    }
    Ok(())
}

/// Puts the generated containers where the layout wants them.
fn place(
    spec: &mut PodSpec,
    init: Option<Container>,
    proxy: Container,
    params: &template::Params,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) {
    let mut user_inits = spec.init_containers.take().unwrap_or_default();
    let mut inits = Vec::with_capacity(user_inits.len() + 2);
    if params.native {
        // istio-init, then init containers asked to run before the proxy, the proxy,
        // and the rest: "so init containers are part of the mesh".
        inits.extend(init);
        let before = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_INIT_BEFORE_PROXY))
            .map(String::as_str)
            .unwrap_or_default();
        let mut seen = Vec::new();
        for name in before.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if seen.contains(&name) {
                continue;
            }
            seen.push(name);
            if let Some(i) = user_inits.iter().position(|c| c.name == name) {
                inits.push(user_inits.remove(i));
            }
        }
        inits.push(proxy);
        inits.extend(user_inits);
    } else {
        // Capture goes last so that the user's init containers keep a plain network.
        inits.extend(user_inits);
        inits.extend(init);
        if params.hold {
            spec.containers.insert(0, proxy);
        } else {
            spec.containers.push(proxy);
        }
    }
    spec.init_containers = (!inits.is_empty()).then_some(inits);
}

fn apply_metadata(
    pod: &mut Pod,
    app: &[Container],
    workload: &workload::Workload,
    status: &InjectionStatus,
    ctx: &InjectContext<'_>,
) {
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    let canonical = workload::canonical_labels(labels, &workload.name);
    labels
        .entry("security.istio.io/tlsMode".to_owned())
        .or_insert_with(|| "istio".to_owned());
    for (k, v) in canonical {
        labels.insert(k.to_owned(), v);
    }
    if let Some((_, network)) = ctx
        .proxy_env
        .iter()
        .find(|(k, _)| k == "ISTIO_META_NETWORK")
    {
        labels.insert("topology.istio.io/network".to_owned(), network.clone());
    }
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(REVISION_LABEL.to_owned(), REVISION.to_owned());
    if let Some(first) = app.first() {
        for key in [
            "kubectl.kubernetes.io/default-logs-container",
            "kubectl.kubernetes.io/default-container",
        ] {
            annotations
                .entry(key.to_owned())
                .or_insert_with(|| first.name.clone());
        }
    }
    annotations.insert(
        ANNOTATION_STATUS.to_owned(),
        serde_json::to_string(status).unwrap_or_else(|_| "{}".to_owned()),
    );
}

const PROM_SCRAPE: &str = "prometheus_io_scrape";
const PROM_PORT: &str = "prometheus_io_port";
const PROM_PATH: &str = "prometheus_io_path";

/// Prometheus' label-name sanitising: `prometheus.io/port`, `prometheus-io/port` and
/// `prometheus.io.port` all mean the same.
fn sanitize(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn prometheus_annotation<'a>(a: &'a BTreeMap<String, String>, which: &str) -> Option<&'a String> {
    a.iter().find(|(k, _)| sanitize(k) == which).map(|(_, v)| v)
}

fn clear_prometheus(a: &mut BTreeMap<String, String>) {
    a.retain(|k, _| !matches!(sanitize(k).as_str(), PROM_SCRAPE | PROM_PORT | PROM_PATH));
}

/// The original scrape settings, as the agent reads them back.
#[derive(Debug, Default, Serialize, Deserialize)]
struct PrometheusScrape {
    #[serde(default)]
    scrape: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    port: String,
}

/// Metrics merging: Prometheus scrapes the agent, which merges the app's metrics (found
/// through the original annotations, moved into the proxy's env) with Envoy's.
fn prometheus_merge(pod: &mut Pod, proxy: &mut Container, mesh: &MeshConfig, status_port: i32) {
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let scrape = prometheus_annotation(annotations, PROM_SCRAPE).and_then(|v| go_parse_bool(v));
    if scrape == Some(false) {
        return;
    }
    let enabled = annotations
        .get("prometheus.istio.io/merge-metrics")
        .and_then(|v| go_parse_bool(v))
        .unwrap_or_else(|| mesh.prometheus_merge());
    if !enabled {
        return;
    }
    let target = status_port.to_string();
    if prometheus_annotation(annotations, PROM_PORT) == Some(&target) {
        return;
    }
    let original = PrometheusScrape {
        scrape: prometheus_annotation(annotations, PROM_SCRAPE)
            .cloned()
            .unwrap_or_default(),
        path: prometheus_annotation(annotations, PROM_PATH)
            .cloned()
            .unwrap_or_default(),
        port: prometheus_annotation(annotations, PROM_PORT)
            .cloned()
            .unwrap_or_default(),
    };
    if !(original.scrape.is_empty() && original.path.is_empty() && original.port.is_empty()) {
        set_env(
            proxy,
            PROMETHEUS_ENV,
            serde_json::to_string(&original).unwrap_or_default(),
        );
    }
    clear_prometheus(annotations);
    annotations.insert("prometheus.io/port".to_owned(), target);
    annotations.insert(
        "prometheus.io/path".to_owned(),
        "/stats/prometheus".to_owned(),
    );
    annotations.insert("prometheus.io/scrape".to_owned(), "true".to_owned());
}
