//! `tandem httpbin`: a small HTTP server in the spirit of httpbin, for examples and tests.
//!
//! Pods that use the image `tandem/httpbin` run this server. It answers HTTP/1.1 and
//! HTTP/2 with prior knowledge (h2c) on one port, with httpbin's JSON shapes for
//! `/get`, `/headers`, `/ip`, `/user-agent`, `/anything`, `/post` and friends, plus
//! `/status/{code}`, `/delay/{seconds}` and `/bytes/{n}`. On SIGTERM or SIGINT it stops
//! accepting, lets in-flight requests finish for a few seconds, and exits 0.

#![forbid(unsafe_code)]

mod echo;
mod rng;
mod routes;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The default port, the one the go-httpbin image (used by Istio's httpbin sample) listens on.
pub const DEFAULT_PORT: u16 = 8080;

/// How long in-flight requests may run after a shutdown signal before they are cut off.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Arguments of `tandem httpbin`.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpbinArgs {
    /// TCP port to listen on.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// IP address to listen on (`::` for all IPv6 and, where the system allows, IPv4 too).
    #[arg(long, value_name = "ADDR", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub listen: IpAddr,
}

impl Default for HttpbinArgs {
    fn default() -> Self {
        Self {
            port: DEFAULT_PORT,
            listen: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpbinError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot install SIGTERM/SIGINT handlers: {0}")]
    Signals(#[source] io::Error),
}

/// Runs the server until SIGTERM or SIGINT, then drains and returns exit code 0.
pub async fn run(args: HttpbinArgs) -> anyhow::Result<ExitCode> {
    // Install the handlers before binding, so a signal that arrives as soon as the port is
    // open is never lost to the default action.
    let shutdown = shutdown_signal().map_err(HttpbinError::Signals)?;
    let addr = SocketAddr::new(args.listen, args.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| HttpbinError::Bind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    println!("httpbin listening on http://{local}");
    serve(listener, shutdown).await;
    println!("httpbin stopped");
    Ok(ExitCode::SUCCESS)
}

/// A future that completes on the first SIGTERM or SIGINT. The handlers are installed
/// when this is called, not when the future is first polled.
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Serves connections from `listener` until `shutdown` completes; then stops accepting,
/// closes idle connections, and waits up to [`SHUTDOWN_GRACE`] for in-flight requests.
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let local = listener.local_addr().ok();
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        // Small responses: do not hold them back waiting for more to coalesce.
        let _ = tcp.set_nodelay(true);
        let watcher = graceful.watcher();
        connections.spawn(async move {
            let service = service_fn(move |req| async move {
                Ok::<_, Infallible>(routes::handle(req, peer, local).await)
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder
                .serve_connection(TokioIo::new(tcp), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        println!(
            "httpbin: requests still running after {}s; closing them",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    connections.shutdown().await;
}
