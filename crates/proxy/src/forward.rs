//! The standalone forwarder (`tandem proxy --listen A --upstream B`): the sidecar's outbound
//! data path with a single static cluster, for benchmarks against other proxies.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accesslog::{Encoding, Sink};
use crate::admin::{self, AdminPort, Agent};
use crate::metrics::{Metrics, ServiceName, Workload};
use crate::orig_dst::LocalAddr;
use crate::proxy::{self, Direction, Routes, Shared, SharedConfig};
use crate::registry::{Cluster, Declared, Endpoints};
use crate::sidecar::{StartError, bind, open_log};
use crate::upstream::CONNECT_TIMEOUT;
use crate::workers::{self, Workers};

/// Settings of the forwarder.
#[derive(Clone, Debug)]
pub struct ForwardConfig {
    pub listen: SocketAddr,
    /// `host:port`, resolved once at start.
    pub upstream: String,
    pub access_log: Option<Sink>,
    pub access_log_encoding: Encoding,
    pub detect_timeout: Option<Duration>,
    /// Serves `/stats/prometheus` here when set.
    pub stats: Option<SocketAddr>,
    /// How long in-flight connections may take to finish after SIGTERM.
    pub drain_timeout: Duration,
    /// Data-plane worker threads.
    pub workers: usize,
}

/// A running forwarder.
#[derive(Debug)]
pub struct Forwarder {
    pub local: SocketAddr,
    pub stats: Option<SocketAddr>,
    terminate: CancellationToken,
    task: JoinHandle<ExitCode>,
}

impl Forwarder {
    /// What SIGTERM does: stop accepting, let open connections finish, exit.
    pub fn terminate(&self) {
        self.terminate.cancel();
    }

    /// A token that, when cancelled, does what [`Self::terminate`] does.
    pub fn terminate_handle(&self) -> CancellationToken {
        self.terminate.clone()
    }

    pub async fn wait(self) -> ExitCode {
        self.task.await.unwrap_or(ExitCode::FAILURE)
    }
}

/// Starts the forwarder.
pub async fn start(config: ForwardConfig) -> Result<Forwarder, StartError> {
    let upstream = tokio::net::lookup_host(config.upstream.as_str())
        .await
        .map_err(|e| StartError::Upstream {
            addr: config.upstream.clone(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| StartError::Upstream {
            addr: config.upstream.clone(),
            reason: "no address".into(),
        })?;
    let host = config
        .upstream
        .rsplit_once(':')
        .map_or(config.upstream.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let log = open_log(config.access_log.as_ref(), config.access_log_encoding)?;
    let metrics = Arc::new(Metrics::new(Workload::default()));
    let cluster = Cluster::new(
        format!("outbound|{}||{}", upstream.port(), host),
        Endpoints::Balanced(vec![upstream].into_boxed_slice()),
        Declared::Auto,
        None,
        metrics.outbound_peer(&ServiceName {
            host: host.clone(),
            name: host,
            namespace: crate::metrics::UNKNOWN.into(),
        }),
    );
    let shared = Arc::new(Shared::new(SharedConfig {
        routes: Routes::Static(Arc::new(cluster)),
        registry_only: false,
        log: log.clone(),
        metrics: metrics.clone(),
        connect_timeout: CONNECT_TIMEOUT,
        detect_timeout: config.detect_timeout,
        ipv6: false,
    }));
    let n = config.workers.max(1);
    let listeners = workers::bind_shared(config.listen, n).map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let local = listeners[0].local_addr().unwrap_or(config.listen);
    let shutdown = CancellationToken::new();
    let conns = TaskTracker::new();
    let mut listeners: Vec<_> = listeners.into_iter().map(Some).collect();
    let data_plane = Workers::spawn(n, "forward-worker", |i| {
        let listener = listeners[i].take();
        let (shared, shutdown, conns) = (shared.clone(), shutdown.clone(), conns.clone());
        move || async move {
            let Some(listener) = listener else { return };
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => {
                    proxy::serve(
                        l,
                        Direction::Outbound,
                        shared,
                        Arc::new(LocalAddr),
                        conns,
                        shutdown,
                    )
                    .await;
                }
                Err(err) => tracing::error!(%err, "worker listener"),
            }
        }
    })
    .map_err(StartError::Workers)?;
    let mut background = Vec::new();
    let mut stats = None;
    if let Some(addr) = config.stats {
        let l = bind(addr).await?;
        stats = Some(l.local_addr().unwrap_or(addr));
        let agent = Arc::new(Agent {
            ready: true.into(),
            terminating: CancellationToken::new(),
            drained: false.into(),
            quit: CancellationToken::new(),
            shared: shared.clone(),
            metrics: metrics.clone(),
            probers: Default::default(),
            probe_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            app_metrics: None,
        });
        background.push(tokio::spawn(admin::serve(
            l,
            AdminPort::Prometheus,
            agent,
            TaskTracker::new(),
            shutdown.clone(),
        )));
    }
    let flusher = log.clone().map(|l| tokio::spawn(l.run_flusher()));
    let terminate = CancellationToken::new();
    let task = {
        let terminate = terminate.clone();
        let drain = config.drain_timeout;
        tokio::spawn(async move {
            terminate.cancelled().await;
            shutdown.cancel();
            conns.close();
            let _ = tokio::time::timeout(drain, conns.wait()).await;
            data_plane.halt().await;
            for t in background {
                t.abort();
            }
            if let Some(f) = flusher {
                f.abort();
            }
            if let Some(log) = log {
                log.flush().await;
            }
            ExitCode::SUCCESS
        })
    };
    Ok(Forwarder {
        local,
        stats,
        terminate,
        task,
    })
}
