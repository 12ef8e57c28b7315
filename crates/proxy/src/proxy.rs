//! Listeners and per-connection handling: original destination, loop protection, protocol
//! detection, then HTTP ([`crate::http`]) or TCP ([`crate::tcp`]) forwarding. The standalone
//! forwarder and the sidecar's outbound listener share this code path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accesslog::AccessLog;
use crate::detect::{self, Protocol, Rewind};
use crate::http_proxy::{self, HttpConn};
use crate::metrics::{Metrics, ServiceName};
use crate::orig_dst::OrigDstLookup;
use crate::registry::{
    Cluster, Declared, Endpoints, INBOUND_BIND_V4, INBOUND_BIND_V6, Registry, SERVER_FIRST_PORTS,
};
use crate::tcp;

/// Where traffic is routed from.
#[derive(Debug)]
pub enum Routes {
    /// Everything goes to one cluster (the standalone forwarder).
    Static(Arc<Cluster>),
    /// The mesh view from discovery.
    Mesh(watch::Receiver<Arc<Registry>>),
}

/// State shared by all listeners and connections of one proxy.
#[derive(Debug)]
pub struct Shared {
    pub routes: Routes,
    /// `outboundTrafficPolicy.mode == REGISTRY_ONLY`.
    pub registry_only: bool,
    pub log: Option<AccessLog>,
    pub metrics: Arc<Metrics>,
    pub connect_timeout: Duration,
    /// Cancelled when inbound listeners start draining.
    pub inbound_drain: CancellationToken,
    pub passthrough: Arc<Cluster>,
    pub inbound_passthrough: Arc<Cluster>,
    pub blackhole: Arc<Cluster>,
    /// `protocolDetectionTimeout`; `None` waits for the client's first bytes forever.
    pub detect_timeout: Option<Duration>,
}

/// Settings for [`Shared::new`].
#[derive(Debug)]
pub struct SharedConfig {
    pub routes: Routes,
    pub registry_only: bool,
    pub log: Option<AccessLog>,
    pub metrics: Arc<Metrics>,
    pub connect_timeout: Duration,
    pub detect_timeout: Option<Duration>,
    /// IPv6 pod: inbound passthrough binds `::6` instead of `127.0.0.6`.
    pub ipv6: bool,
}

impl Shared {
    pub fn new(cfg: SharedConfig) -> Self {
        let m = &cfg.metrics;
        let passthrough = Cluster::new(
            "PassthroughCluster",
            Endpoints::OriginalDst,
            Declared::Auto,
            None,
            m.outbound_peer(&ServiceName::cluster("PassthroughCluster")),
        );
        let inbound_passthrough = Cluster::new(
            "InboundPassthroughCluster",
            Endpoints::OriginalDst,
            Declared::Auto,
            Some(if cfg.ipv6 {
                INBOUND_BIND_V6
            } else {
                INBOUND_BIND_V4
            }),
            m.inbound_peer(&ServiceName::cluster("InboundPassthroughCluster")),
        );
        let blackhole = Cluster::new(
            "BlackHoleCluster",
            Endpoints::None,
            // Still sniffed: under REGISTRY_ONLY, HTTP gets a 502 rather than a reset.
            Declared::Auto,
            None,
            m.outbound_peer(&ServiceName::cluster("BlackHoleCluster")),
        );
        Self {
            routes: cfg.routes,
            registry_only: cfg.registry_only,
            log: cfg.log,
            metrics: cfg.metrics,
            connect_timeout: cfg.connect_timeout,
            inbound_drain: CancellationToken::new(),
            passthrough: Arc::new(passthrough),
            inbound_passthrough: Arc::new(inbound_passthrough),
            blackhole: Arc::new(blackhole),
            detect_timeout: cfg.detect_timeout,
        }
    }
}

/// Which way a listener's traffic flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Outbound,
    Inbound,
}

/// Accepts connections until `shutdown`, each handled on its own task in `tracker` (whose
/// length is the number of open connections).
pub async fn serve(
    listener: TcpListener,
    direction: Direction,
    shared: Arc<Shared>,
    orig_dst: Arc<dyn OrigDstLookup>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    tracing::warn!(%err, "accept");
                    if let Some(pause) = crate::discovery::accept_pause(&err) {
                        tokio::time::sleep(pause).await;
                    }
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let orig_dst = orig_dst.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            handle_connection(stream, peer, direction, shared, &*orig_dst, shutdown).await;
        });
    }
}

async fn handle_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    direction: Direction,
    shared: Arc<Shared>,
    orig_dst: &dyn OrigDstLookup,
    shutdown: CancellationToken,
) {
    let start = Instant::now();
    let wall = SystemTime::now();
    let _ = stream.set_nodelay(true);
    let dst = match orig_dst.original_dst(&stream) {
        Ok(a) => a,
        Err(err) => {
            tracing::debug!(%err, %peer, "no original destination");
            return;
        }
    };
    let own = stream.local_addr().ok();
    // A connection addressed to the capture port itself (a client dialling 15001, or 15006
    // from outside) would loop forever. The standalone forwarder is not transparent: its
    // destination is always itself.
    let transparent = matches!(shared.routes, Routes::Mesh(_));
    if transparent && own.is_some_and(|o| o.port() == dst.port()) {
        tcp::blackhole(&shared, shared.blackhole.clone(), dst, peer, start, wall);
        return;
    }
    let registry = match &shared.routes {
        Routes::Mesh(rx) => Some(rx.borrow().clone()),
        Routes::Static(_) => None,
    };
    let tcp_cluster = match (&shared.routes, direction) {
        (Routes::Static(c), _) => c.clone(),
        (Routes::Mesh(_), Direction::Outbound) => registry
            .as_ref()
            .and_then(|r| r.route_vip(dst).cloned())
            .unwrap_or_else(|| {
                if shared.registry_only {
                    shared.blackhole.clone()
                } else {
                    shared.passthrough.clone()
                }
            }),
        (Routes::Mesh(_), Direction::Inbound) => registry
            .as_ref()
            .and_then(|r| r.inbound(dst.port()).cloned())
            .unwrap_or_else(|| shared.inbound_passthrough.clone()),
    };
    drop(registry);
    let opaque = match tcp_cluster.declared {
        Declared::Opaque => true,
        Declared::Http => false,
        Declared::Auto => SERVER_FIRST_PORTS.contains(&dst.port()),
    };
    let (protocol, prefix) = if opaque {
        (Protocol::Tcp, Bytes::new())
    } else {
        match detect::detect(&mut stream, shared.detect_timeout).await {
            Ok(found) => found,
            Err(err) => {
                tracing::debug!(%err, %peer, "protocol detection");
                return;
            }
        }
    };
    match protocol {
        Protocol::Http1 | Protocol::H2c => {
            let conn = Arc::new(HttpConn {
                shared: shared.clone(),
                inbound: direction == Direction::Inbound,
                h2: protocol == Protocol::H2c,
                local: dst,
                remote: peer,
            });
            let drain = (direction == Direction::Inbound).then(|| shared.inbound_drain.clone());
            serve_http(Rewind::new(prefix, stream), conn, drain, shutdown).await;
        }
        Protocol::Tcp => {
            if tcp_cluster.is_empty() {
                tcp::blackhole(&shared, tcp_cluster, dst, peer, start, wall);
                return;
            }
            tcp::forward(&shared, stream, prefix, tcp_cluster, dst, peer, start, wall).await;
        }
    }
}

async fn wait_opt(token: Option<&CancellationToken>) {
    match token {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
}

/// Drives a server connection; on drain or shutdown it is asked to finish gracefully
/// (HTTP/1.1 closes after the response in flight, HTTP/2 sends GOAWAY).
macro_rules! drive {
    ($conn:expr, $drain:expr, $shutdown:expr) => {{
        let conn = $conn;
        tokio::pin!(conn);
        let mut closing = false;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(err) = r {
                        tracing::debug!(%err, "downstream HTTP connection");
                    }
                    break;
                }
                () = wait_opt($drain.as_ref()), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = $shutdown.cancelled(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }};
}

/// Serves HTTP on an accepted (and sniffed) connection.
pub async fn serve_http<I>(
    io: I,
    conn: Arc<HttpConn>,
    drain: Option<CancellationToken>,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // A connection opened after the drain began is served (its HTTP/1.1 responses carry
    // `connection: close`); only those already open are asked to wind down.
    let drain = drain.filter(|d| !d.is_cancelled());
    let h2 = conn.h2;
    let service = hyper::service::service_fn(move |req| http_proxy::handle(conn.clone(), req));
    if h2 {
        let c = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(io), service);
        drive!(c, drain, shutdown);
    } else {
        // No header-read timeout, as Envoy's default `request_headers_timeout: 0s`; a
        // per-request timer would also cost a driver wake-up on every request.
        let c = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        drive!(c, drain, shutdown);
    }
}
