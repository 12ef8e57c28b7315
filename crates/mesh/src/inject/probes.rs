//! App probe rewriting: the kubelet's HTTP/TCP/gRPC probes and hooks of app containers
//! are pointed at the agent's status port, which replays the original (kept in the
//! proxy's `ISTIO_KUBE_APP_PROBERS`) against the app. Traffic capture would otherwise
//! send the kubelet's probes through the proxy.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, GRPCAction, HTTPGetAction, HTTPHeader, LifecycleHandler, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

/// The proxy env var holding the original probes.
pub const PROBERS_ENV: &str = "ISTIO_KUBE_APP_PROBERS";

/// One original probe or hook, keyed by its new path in [`PROBERS_ENV`]. Field order and
/// names follow Istio's JSON.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppProber {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<Grpc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
}

/// An `httpGet` action, fields in Go's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub port: IntOrString,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_headers: Option<Vec<HTTPHeader>>,
}

/// A `tcpSocket` action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcpSocket {
    pub port: IntOrString,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// A `grpc` action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grpc {
    pub port: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// Original probes by new path.
pub type AppProbers = BTreeMap<String, AppProber>;

/// Resolves a named port against the container's ports (numbers stay as they are).
fn resolve_port(port: &IntOrString, c: &Container) -> IntOrString {
    match port {
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map_or_else(|| port.clone(), |p| IntOrString::Int(p.container_port)),
        IntOrString::Int(_) => port.clone(),
    }
}

fn original(
    http: Option<&HTTPGetAction>,
    tcp: Option<&TCPSocketAction>,
    grpc: Option<&GRPCAction>,
    c: &Container,
) -> Option<AppProber> {
    let mut prober = AppProber::default();
    if let Some(h) = http {
        prober.http_get = Some(HttpGet {
            path: h.path.clone(),
            port: resolve_port(&h.port, c),
            host: h.host.clone(),
            scheme: h.scheme.clone(),
            http_headers: h.http_headers.clone(),
        });
    } else if let Some(t) = tcp {
        prober.tcp_socket = Some(TcpSocket {
            port: resolve_port(&t.port, c),
            host: t.host.clone(),
        });
    } else if let Some(g) = grpc {
        prober.grpc = Some(Grpc {
            port: g.port,
            service: g.service.clone(),
        });
    } else {
        return None;
    }
    Some(prober)
}

/// The kubelet reaches the agent with plain HTTP; the agent speaks HTTPS to the app
/// when the original did.
fn agent_get(path: &str, status_port: i32, had_scheme: bool) -> HTTPGetAction {
    HTTPGetAction {
        path: Some(path.to_owned()),
        port: IntOrString::Int(status_port),
        scheme: had_scheme.then(|| "HTTP".to_owned()),
        ..HTTPGetAction::default()
    }
}

fn already_rewritten(h: Option<&HTTPGetAction>, status_port: i32, prefix: &str) -> bool {
    h.is_some_and(|h| {
        h.port == IntOrString::Int(status_port)
            && h.path.as_deref().is_some_and(|p| p.starts_with(prefix))
    })
}

fn rewrite_probe(
    probe: &mut Option<Probe>,
    key: String,
    c: &Container,
    status_port: i32,
    out: &mut AppProbers,
) {
    let Some(p) = probe.as_mut() else { return };
    if already_rewritten(p.http_get.as_ref(), status_port, "/app-health/") {
        return;
    }
    let Some(mut prober) = original(
        p.http_get.as_ref(),
        p.tcp_socket.as_ref(),
        p.grpc.as_ref(),
        c,
    ) else {
        return;
    };
    prober.timeout_seconds = p.timeout_seconds;
    let had_scheme = p.http_get.as_ref().is_some_and(|h| h.scheme.is_some());
    p.http_get = Some(agent_get(&key, status_port, had_scheme));
    p.tcp_socket = None;
    p.grpc = None;
    out.insert(key, prober);
}

fn rewrite_hook(
    hook: &mut Option<LifecycleHandler>,
    key: String,
    c: &Container,
    status_port: i32,
    out: &mut AppProbers,
) {
    let Some(h) = hook.as_mut() else { return };
    if already_rewritten(h.http_get.as_ref(), status_port, "/app-lifecycle/") {
        return;
    }
    let Some(prober) = original(h.http_get.as_ref(), h.tcp_socket.as_ref(), None, c) else {
        return;
    };
    let had_scheme = h.http_get.as_ref().is_some_and(|g| g.scheme.is_some());
    h.http_get = Some(agent_get(&key, status_port, had_scheme));
    h.tcp_socket = None;
    out.insert(key, prober);
}

/// Rewrites the probes and HTTP/TCP hooks of `c` to the status port, recording the
/// originals in `out`. `exec` probes are left alone.
pub(crate) fn rewrite_container(c: &mut Container, status_port: i32, out: &mut AppProbers) {
    let name = c.name.clone();
    let snapshot = c.clone();
    for (probe, kind) in [
        (&mut c.liveness_probe, "livez"),
        (&mut c.readiness_probe, "readyz"),
        (&mut c.startup_probe, "startupz"),
    ] {
        rewrite_probe(
            probe,
            format!("/app-health/{name}/{kind}"),
            &snapshot,
            status_port,
            out,
        );
    }
    if let Some(lc) = c.lifecycle.as_mut() {
        rewrite_hook(
            &mut lc.pre_stop,
            format!("/app-lifecycle/{name}/prestopz"),
            &snapshot,
            status_port,
            out,
        );
        rewrite_hook(
            &mut lc.post_start,
            format!("/app-lifecycle/{name}/poststartz"),
            &snapshot,
            status_port,
            out,
        );
    }
}

fn restore_action(
    http: &mut Option<HTTPGetAction>,
    tcp: &mut Option<TCPSocketAction>,
    grpc: Option<&mut Option<GRPCAction>>,
    probers: &AppProbers,
) {
    let Some(path) = http.as_ref().and_then(|h| h.path.as_deref()) else {
        return;
    };
    let Some(orig) = probers.get(path) else {
        return;
    };
    *http = orig.http_get.as_ref().map(|h| HTTPGetAction {
        path: h.path.clone(),
        port: h.port.clone(),
        host: h.host.clone(),
        scheme: h.scheme.clone(),
        http_headers: h.http_headers.clone(),
    });
    *tcp = orig.tcp_socket.as_ref().map(|t| TCPSocketAction {
        port: t.port.clone(),
        host: t.host.clone(),
    });
    if let Some(grpc) = grpc {
        *grpc = orig.grpc.as_ref().map(|g| GRPCAction {
            port: g.port,
            service: g.service.clone(),
        });
    }
}

/// Puts back the original probes and hooks of `c` (undoing [`rewrite_container`]), so
/// that re-injection starts from the user's pod.
pub(crate) fn restore_container(c: &mut Container, probers: &AppProbers) {
    for probe in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        restore_action(
            &mut probe.http_get,
            &mut probe.tcp_socket,
            Some(&mut probe.grpc),
            probers,
        );
    }
    if let Some(lc) = c.lifecycle.as_mut() {
        for hook in [&mut lc.pre_stop, &mut lc.post_start].into_iter().flatten() {
            restore_action(&mut hook.http_get, &mut hook.tcp_socket, None, probers);
        }
    }
}

/// Reads [`PROBERS_ENV`]; anything unreadable counts as no probers.
pub(crate) fn parse_probers(value: &str) -> AppProbers {
    serde_json::from_str(value).unwrap_or_default()
}

/// The [`PROBERS_ENV`] value (compact JSON, keys sorted).
pub(crate) fn probers_json(probers: &AppProbers) -> String {
    serde_json::to_string(probers).unwrap_or_else(|_| "{}".to_owned())
}
