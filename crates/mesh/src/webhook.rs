//! `tandem mesh webhook`: the injector as a Kubernetes mutating admission webhook, served
//! over HTTPS at `/inject` (and `/inject/...`) like istiod's.
//!
//! The namespace selection lives in the MutatingWebhookConfiguration (a webhook never
//! sees namespace labels), so the webhook applies the pod-level rules only
//! ([`inject_required`]), then answers with an RFC 6902 patch from the pod it was sent
//! to the injected one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::core::v1::Pod;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, MeshConfig};
use crate::inject::{
    DEFAULT_PROXY_IMAGE, InjectContext, NodeVersion, Selection, inject, inject_required,
};

/// `tandem mesh webhook`.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// PEM certificate (chain) to serve.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: PathBuf,
    /// PEM private key of the certificate.
    #[arg(long, value_name = "FILE")]
    pub tls_key: PathBuf,
    /// Address to listen on (istiod serves its webhook on 15017).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:15017")]
    pub listen: SocketAddr,
    /// MeshConfig YAML, as in the `mesh` key of the `istio` ConfigMap.
    #[arg(long, value_name = "FILE")]
    pub mesh_config: Option<PathBuf>,
    /// A mesh setting, applied after --mesh-config (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Kubelet version of the nodes, for ENABLE_NATIVE_SIDECARS=auto.
    #[arg(long, value_name = "VERSION", default_value = "v1.33.0")]
    pub kubelet_version: String,
}

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The injector with its configuration: answers AdmissionReviews.
#[derive(Debug, Clone)]
pub struct Webhook {
    mesh: MeshConfig,
    nodes: Vec<NodeVersion>,
    image: String,
}

const ADMISSION_V1: &str = "admission.k8s.io/v1";

impl Webhook {
    pub fn new(mesh: MeshConfig, nodes: Vec<NodeVersion>) -> Self {
        Webhook {
            mesh,
            nodes,
            image: DEFAULT_PROXY_IMAGE.to_owned(),
        }
    }

    /// Answers one AdmissionReview. `path` is the request path, whose `/inject/K/V/...`
    /// pairs set proxy environment (`cluster` and `net` name the cluster and network).
    pub fn review(&self, review: &Value, path: &str) -> Value {
        let api_version = review
            .get("apiVersion")
            .and_then(Value::as_str)
            .filter(|v| v.starts_with("admission.k8s.io/"))
            .unwrap_or(ADMISSION_V1);
        let request = review.get("request");
        let uid = request
            .and_then(|r| r.get("uid"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let response = match request {
            Some(request) => self.respond(request, path),
            None => Err("the AdmissionReview has no request".to_owned()),
        };
        let mut response = match response {
            Ok(patch) => {
                let mut r = json!({"allowed": true});
                if let Some(patch) = patch {
                    r["patchType"] = json!("JSONPatch");
                    r["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch));
                }
                r
            }
            Err(message) => json!({"allowed": false, "status": {"message": message}}),
        };
        response["uid"] = json!(uid);
        json!({"apiVersion": api_version, "kind": "AdmissionReview", "response": response})
    }

    /// The JSON patch for one request (`None`: nothing to change), or why it failed.
    fn respond(&self, request: &Value, path: &str) -> Result<Option<Vec<u8>>, String> {
        let kind = request.get("kind");
        let is_pod = kind.is_none_or(|k| {
            k.get("kind").and_then(Value::as_str) == Some("Pod")
                && k.get("group")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .is_empty()
        });
        if !is_pod {
            return Ok(None);
        }
        let object = request
            .get("object")
            .filter(|o| !o.is_null())
            .ok_or_else(|| "the request has no object".to_owned())?;
        let mut pod: Pod = serde_json::from_value(object.clone())
            .map_err(|e| format!("could not unmarshal raw object: {e}"))?;
        // Large and irrelevant to injection; the patch leaves them alone.
        pod.metadata.managed_fields = None;
        if pod.metadata.namespace.as_deref().is_none_or(str::is_empty) {
            pod.metadata.namespace = request
                .get("namespace")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        let selection = inject_required(&pod);
        if selection != Selection::Inject {
            tracing::debug!(?selection, "skipping injection");
            return Ok(None);
        }
        let proxy_env = path_env(path);
        let ctx = InjectContext {
            mesh: &self.mesh,
            nodes: &self.nodes,
            image: &self.image,
            proxy_env: &proxy_env,
        };
        let injected = inject(&pod, &ctx).map_err(|e| e.to_string())?;
        let before = serde_json::to_value(&pod).map_err(|e| e.to_string())?;
        let after = serde_json::to_value(&injected).map_err(|e| e.to_string())?;
        let patch = json_patch::diff(&before, &after);
        serde_json::to_vec(&patch)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

/// `/inject/cluster/c1/net/n1` -> ISTIO_META_CLUSTER_ID=c1, ISTIO_META_NETWORK=n1; other
/// keys are upper-cased into env names; `--slash--` in values stands for `/`.
pub fn path_env(path: &str) -> Vec<(String, String)> {
    let rest = path
        .trim_end_matches('/')
        .strip_prefix("/inject")
        .unwrap_or_default()
        .trim_start_matches('/');
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    parts
        .chunks_exact(2)
        .map(|kv| {
            let name = match kv[0] {
                "cluster" => "ISTIO_META_CLUSTER_ID".to_owned(),
                "net" => "ISTIO_META_NETWORK".to_owned(),
                other => other.to_uppercase(),
            };
            (name, kv[1].replace("--slash--", "/"))
        })
        .collect()
}

async fn serve_inject(
    State(webhook): State<Arc<Webhook>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if body.is_empty() {
        return (StatusCode::BAD_REQUEST, "no body found\n").into_response();
    }
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json_body {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid Content-Type, want `application/json`\n",
        )
            .into_response();
    }
    let answer = match serde_json::from_slice::<Value>(&body) {
        Ok(review) => webhook.review(&review, uri.path()),
        Err(e) => json!({
            "apiVersion": ADMISSION_V1,
            "kind": "AdmissionReview",
            "response": {"uid": "", "allowed": false,
                "status": {"message": format!("could not decode body: {e}")}},
        }),
    };
    axum::Json(answer).into_response()
}

/// The webhook's routes.
pub fn router(webhook: Webhook) -> Router {
    Router::new()
        .route("/inject", post(serve_inject))
        .route("/inject/", post(serve_inject))
        .route("/inject/{*rest}", post(serve_inject))
        .with_state(Arc::new(webhook))
}

/// A bound, not yet serving, HTTPS listener.
pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Loads the certificate and binds `addr`.
pub async fn bind(
    addr: SocketAddr,
    cert_pem: &[u8],
    key_pem: &[u8],
    webhook: Webhook,
) -> Result<Server, WebhookError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| WebhookError::Tls(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(WebhookError::Tls(
            "no certificate in the PEM file".to_owned(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| WebhookError::Tls(format!("private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WebhookError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| WebhookError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| WebhookError::Bind { addr, source })?;
    Ok(Server {
        listener,
        acceptor: TlsAcceptor::from(Arc::new(tls)),
        app: router(webhook),
    })
}

impl Server {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`, then lets open requests finish for a few seconds.
    pub async fn serve(self, shutdown: CancellationToken) {
        let graceful = GracefulShutdown::new();
        let mut connections = JoinSet::new();
        loop {
            let (tcp, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let acceptor = self.acceptor.clone();
            let service = TowerToHyperService::new(self.app.clone());
            let watcher = graceful.watcher();
            connections.spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let conn = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .into_owned();
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        drop(self.listener);
        if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::debug!("open requests did not finish in time");
        }
        connections.shutdown().await;
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, WebhookError> {
    std::fs::read(path).map_err(|source| WebhookError::Read {
        path: path.clone(),
        source,
    })
}

/// The mesh config the webhook injects with: `--mesh-config`, then `--set`s.
pub fn mesh_config(args: &WebhookArgs) -> Result<MeshConfig, WebhookError> {
    let mut mesh = MeshConfig::default();
    if let Some(path) = &args.mesh_config {
        let text = String::from_utf8_lossy(&read(path)?).into_owned();
        mesh.merge_mesh_yaml(&text)?;
    }
    mesh.apply_sets(&args.set)?;
    Ok(mesh)
}

/// `tandem mesh webhook`: serves until SIGINT or SIGTERM.
pub async fn run(args: WebhookArgs) -> anyhow::Result<ExitCode> {
    let mesh = mesh_config(&args)?;
    let cert = read(&args.tls_cert)?;
    let key = read(&args.tls_key)?;
    let nodes = vec![NodeVersion::new("", args.kubelet_version.clone())];
    let server = bind(args.listen, &cert, &key, Webhook::new(mesh, nodes)).await?;
    let addr = server.local_addr()?;
    println!("serving the sidecar injector on https://{addr}/inject");
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        stop.cancel();
    });
    server.serve(shutdown).await;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: WebhookArgs,
        }
        let cli = Cli::try_parse_from([
            "webhook",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--listen",
            "127.0.0.1:9443",
            "--mesh-config",
            "mesh.yaml",
            "--set",
            "meshConfig.accessLogFile=/dev/stdout",
        ])
        .expect("parses");
        assert_eq!(cli.args.listen, "127.0.0.1:9443".parse().expect("addr"));
        assert_eq!(cli.args.set, ["meshConfig.accessLogFile=/dev/stdout"]);
        assert_eq!(cli.args.kubelet_version, "v1.33.0");
        let cli = Cli::try_parse_from(["webhook", "--tls-cert", "c", "--tls-key", "k"])
            .expect("defaults");
        assert_eq!(cli.args.listen.port(), 15017);
        assert!(Cli::try_parse_from(["webhook", "--tls-key", "k"]).is_err());
    }

    #[test]
    fn path_parameters_become_proxy_env() {
        assert!(path_env("/inject").is_empty());
        assert!(path_env("/inject/").is_empty());
        assert_eq!(
            path_env("/inject/cluster/east/net/net1"),
            [
                ("ISTIO_META_CLUSTER_ID".to_owned(), "east".to_owned()),
                ("ISTIO_META_NETWORK".to_owned(), "net1".to_owned())
            ]
        );
        assert_eq!(
            path_env("/inject/custom/a--slash--b/odd"),
            [("CUSTOM".to_owned(), "a/b".to_owned())]
        );
    }

    #[test]
    fn a_review_without_request_is_refused_with_a_message() {
        let w = Webhook::new(MeshConfig::default(), vec![]);
        let out = w.review(&json!({"apiVersion": "admission.k8s.io/v1"}), "/inject");
        assert_eq!(out["response"]["allowed"], false);
        assert_eq!(
            out["response"]["status"]["message"],
            "the AdmissionReview has no request"
        );
    }

    #[test]
    fn non_pods_pass_unchanged() {
        let w = Webhook::new(MeshConfig::default(), vec![]);
        let out = w.review(
            &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {"uid": "u1", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                    "object": {"metadata": {"name": "d"}}}}),
            "/inject",
        );
        assert_eq!(out["response"], json!({"uid": "u1", "allowed": true}));
    }
}
