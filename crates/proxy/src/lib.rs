//! `tandem proxy`: the mesh's sidecar proxy.
//!
//! - `tandem proxy --listen ADDR --upstream ADDR`: a standalone forwarder (HTTP/1.1, h2c and
//!   opaque TCP detected per connection) on the same data path as the sidecar's outbound side.
//! - `tandem proxy proxy sidecar [Istio's args...]`: the injected `istio-proxy` container:
//!   transparent outbound (15001) and inbound (15006) listeners, readiness (15021), the agent's
//!   status server (15020) and Prometheus stats (15090), configured from the environment
//!   Istio's injector sets (see [`config`]).
//! - `tandem proxy request [--debug-port P] METHOD PATH` and `tandem proxy wait`: what
//!   `pilot-agent request` (the native preStop hook) and `pilot-agent wait` (the legacy
//!   postStart hook) do.
//!
//! The cluster view comes from [`discovery`], which also holds the control plane's server.

#![forbid(unsafe_code)]

pub mod accesslog;
pub mod admin;
mod body;
pub mod config;
pub mod detect;
pub mod discovery;
pub mod forward;
pub mod http_proxy;
pub mod metrics;
pub mod orig_dst;
pub mod proxy;
pub mod registry;
pub mod sidecar;
mod tcp;
pub mod upstream;
pub mod workers;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::accesslog::{Encoding, Sink};
use crate::config::{IstioArgs, SidecarConfig};

/// `tandem proxy` arguments.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Standalone forwarder: address to listen on.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Standalone forwarder: where to forward to (`host:port`).
    #[arg(long, value_name = "ADDR")]
    pub upstream: Option<String>,
    /// Write an access log line per request/connection here.
    #[arg(long, value_name = "FILE|/dev/stdout")]
    pub access_log: Option<String>,
    /// Access log encoding.
    #[arg(long, value_name = "TEXT|JSON", default_value = "TEXT")]
    pub access_log_encoding: Encoding,
    /// Serve `/stats/prometheus` on this address.
    #[arg(long, value_name = "ADDR")]
    pub stats: Option<SocketAddr>,
    /// Treat a connection as TCP when the client sends nothing for this long (e.g. `1s`);
    /// by default detection waits for the client's first bytes.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub protocol_detection_timeout: Option<Duration>,
    /// Worker threads (default: one per CPU).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    config::parse_duration(s)
}

/// Subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Istio's `pilot-agent proxy sidecar ...`: run as the pod's sidecar proxy.
    Proxy {
        /// `sidecar` (the only kind supported).
        kind: String,
        /// Istio's arguments; `--domain` and `--statusPort` are used, the rest ignored.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// `pilot-agent request`: send a request to a local agent port.
    Request(RequestArgs),
    /// `pilot-agent wait`: wait until the local proxy is ready.
    Wait(WaitArgs),
}

/// `request` arguments.
#[derive(clap::Args, Debug)]
pub struct RequestArgs {
    /// Local port to send the request to.
    #[arg(long = "debug-port", default_value_t = 15020)]
    pub debug_port: u16,
    /// HTTP method.
    pub method: String,
    /// Path, with or without the leading `/`.
    pub path: String,
}

/// `wait` arguments (pilot-agent's names).
#[derive(clap::Args, Debug)]
pub struct WaitArgs {
    #[arg(long = "timeoutSeconds", default_value_t = 60)]
    pub timeout_seconds: u64,
    #[arg(long = "requestTimeoutMillis", default_value_t = 500)]
    pub request_timeout_millis: u64,
    #[arg(long = "periodMillis", default_value_t = 500)]
    pub period_millis: u64,
    #[arg(long, default_value = "http://localhost:15021/healthz/ready")]
    pub url: String,
}

/// Runs `tandem proxy ...`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(Command::Proxy { kind, args }) => {
            if kind != "sidecar" {
                anyhow::bail!("proxy type {kind:?} is not supported (only \"sidecar\")");
            }
            run_sidecar(&args).await
        }
        Some(Command::Request(r)) => request(r).await,
        Some(Command::Wait(w)) => wait(w).await,
        None => {
            let (Some(listen), Some(upstream)) = (args.listen, args.upstream) else {
                anyhow::bail!(
                    "the forwarder needs --listen and --upstream (or use `proxy sidecar`)"
                );
            };
            let fwd = forward::start(forward::ForwardConfig {
                listen,
                upstream,
                access_log: args.access_log.as_deref().map(Sink::from_path),
                access_log_encoding: args.access_log_encoding,
                detect_timeout: args.protocol_detection_timeout,
                stats: args.stats,
                drain_timeout: Duration::from_secs(5),
                workers: args
                    .workers
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            })
            .await?;
            tracing::info!(listen = %fwd.local, "forwarding");
            let signals = terminate_signal().await?;
            let terminate = fwd.terminate_handle();
            tokio::spawn(async move {
                signals.await;
                terminate.cancel();
            });
            Ok(fwd.wait().await)
        }
    }
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn terminate_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

async fn run_sidecar(args: &[String]) -> anyhow::Result<ExitCode> {
    let istio = IstioArgs::parse(args)?;
    let labels = std::fs::read_to_string("/etc/istio/pod/labels")
        .map(|t| config::parse_labels_file(&t))
        .unwrap_or_default();
    let config = SidecarConfig::from_env(&|k| std::env::var(k).ok(), &istio, &labels)?;
    tracing::info!(
        discovery = %config.discovery_address,
        pod = %config.pod_name,
        namespace = %config.namespace,
        "starting sidecar"
    );
    let signals = terminate_signal().await?;
    let sidecar = sidecar::start(config, Arc::new(orig_dst::SoOriginalDst)).await?;
    let terminate = sidecar.terminate_handle();
    tokio::spawn(async move {
        signals.await;
        terminate.cancel();
    });
    Ok(sidecar.wait().await)
}

async fn request(r: RequestArgs) -> anyhow::Result<ExitCode> {
    let method: ::http::Method = r
        .method
        .to_ascii_uppercase()
        .parse()
        .with_context(|| format!("invalid method {:?}", r.method))?;
    let path = if r.path.starts_with('/') {
        r.path
    } else {
        format!("/{}", r.path)
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], r.debug_port));
    let (status, body) =
        admin::http_request(addr, None, method, &path, &[], Duration::from_secs(10))
            .await
            .with_context(|| format!("requesting {addr}{path}"))?;
    print!("{}", String::from_utf8_lossy(&body));
    if status.is_success() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: {status}");
        Ok(ExitCode::FAILURE)
    }
}

async fn wait(w: WaitArgs) -> anyhow::Result<ExitCode> {
    let uri: ::http::Uri = w.url.parse().context("invalid --url")?;
    let host = uri.host().unwrap_or("localhost");
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let deadline = Instant::now() + Duration::from_secs(w.timeout_seconds);
    let period = Duration::from_millis(w.period_millis);
    let per_request = Duration::from_millis(w.request_timeout_millis);
    loop {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map(|a| a.collect())
            .unwrap_or_default();
        for addr in addrs {
            if let Ok((status, _)) =
                admin::http_request(addr, None, ::http::Method::GET, &path, &[], per_request).await
                && status == ::http::StatusCode::OK
            {
                return Ok(ExitCode::SUCCESS);
            }
        }
        if Instant::now() + period > deadline {
            eprintln!(
                "error: timeout waiting for {} to be ready after {}s",
                w.url, w.timeout_seconds
            );
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Top {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn parses_the_forwarder_flags() {
        let t = Top::try_parse_from([
            "proxy",
            "--listen",
            "127.0.0.1:8080",
            "--upstream",
            "127.0.0.1:9090",
            "--access-log",
            "/dev/stdout",
            "--access-log-encoding",
            "JSON",
        ])
        .unwrap();
        assert_eq!(t.args.listen, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(t.args.upstream.as_deref(), Some("127.0.0.1:9090"));
        assert_eq!(t.args.access_log_encoding, Encoding::Json);
        assert!(t.args.command.is_none());
    }

    #[test]
    fn parses_istio_sidecar_args() {
        let t = Top::try_parse_from([
            "proxy",
            "proxy",
            "sidecar",
            "--domain",
            "default.svc.cluster.local",
            "--proxyLogLevel=warning",
            "--proxyComponentLogLevel=misc:error",
            "--log_output_level=default:info",
        ])
        .unwrap();
        let Some(Command::Proxy { kind, args }) = t.args.command else {
            panic!("not the proxy subcommand");
        };
        assert_eq!(kind, "sidecar");
        assert_eq!(args[0], "--domain");
        assert_eq!(args.len(), 5);
    }

    #[test]
    fn parses_the_prestop_request() {
        let t = Top::try_parse_from(["proxy", "request", "--debug-port=15020", "POST", "drain"])
            .unwrap();
        let Some(Command::Request(r)) = t.args.command else {
            panic!("not request");
        };
        assert_eq!(
            (r.debug_port, r.method.as_str(), r.path.as_str()),
            (15020, "POST", "drain")
        );
    }
}
