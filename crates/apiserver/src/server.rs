//! HTTPS serving: rustls (ring) with HTTP/1.1 and h2, bearer-token
//! authentication, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, Once};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::pki::Pki;
use crate::state::AppState;
use crate::status::unauthorized;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open requests (watches, log follows) get to finish on shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to serve.
#[derive(Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub cert_pem: String,
    pub key_pem: String,
    /// The bearer token every request must carry.
    pub token: String,
}

impl ServerConfig {
    pub fn new(listen: SocketAddr, pki: &Pki) -> Self {
        ServerConfig {
            listen,
            cert_pem: pki.cert_pem.clone(),
            key_pem: pki.key_pem.clone(),
            token: pki.token.clone(),
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("seeding the store: {0}")]
    Seed(#[from] store::StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Installs ring as rustls' process-wide crypto provider (once; a provider that is
/// already installed is kept).
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A bound, not yet serving, HTTPS listener.
pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    token: Arc<str>,
}

/// Binds the listener and loads the certificate.
pub async fn bind(config: ServerConfig) -> Result<Server, ServeError> {
    install_crypto_provider();
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(config.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| ServeError::Tls(format!("serving certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(config.key_pem.as_bytes())
        .map_err(|e| ServeError::Tls(format!("serving key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    Ok(Server {
        listener,
        acceptor: TlsAcceptor::from(Arc::new(tls)),
        token: Arc::from(config.token.as_str()),
    })
}

/// Seeds the store (the standard namespaces) and serves until `shutdown`.
pub async fn serve(
    config: ServerConfig,
    state: AppState,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    bind(config).await?.run(state, shutdown).await
}

impl Server {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Seeds the store and serves until `shutdown` is cancelled; then stops
    /// accepting, lets open requests finish for a few seconds, and ends the rest.
    pub async fn run(self, state: AppState, shutdown: CancellationToken) -> Result<(), ServeError> {
        crate::bootstrap(&state).await?;
        let app = with_auth(crate::router(state), self.token.clone());
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
                // Reap finished connection tasks as we go.
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let acceptor = self.acceptor.clone();
            let app = app.clone();
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
                let service = TowerToHyperService::new(app);
                let builder = auto::Builder::new(TokioExecutor::new());
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
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
            tracing::debug!("open requests did not finish in time; closing them");
        }
        connections.shutdown().await;
        Ok(())
    }
}

/// Wraps `router` so that every request needs `Authorization: Bearer <token>`;
/// others get 401 with an `Unauthorized` Status.
pub fn with_auth(router: Router, token: Arc<str>) -> Router {
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let token = token.clone();
            async move {
                if authorized(&req, &token) {
                    next.run(req).await
                } else {
                    let mut response: Response = unauthorized().into_response();
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        header::HeaderValue::from_static("Bearer"),
                    );
                    response
                }
            }
        },
    ))
}

fn authorized(req: &Request, token: &str) -> bool {
    let Some(value) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, presented)) = value.split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && constant_time_eq(presented.trim().as_bytes(), token.as_bytes())
}

/// Compares without an early exit, so the time taken does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
