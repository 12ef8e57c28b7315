//! The sidecar: outbound (15001) and inbound (15006) listeners, the agent endpoints, the
//! discovery client and the shutdown rules of §4.
//!
//! Shutdown: `/drain` (the native layout's preStop hook) starts the inbound drain and marks
//! the agent drained; a SIGTERM after that stops at once, letting requests in flight finish.
//! A SIGTERM without a prior `/drain` (legacy layout) drains inbound for
//! `terminationDrainDuration` (or, with `EXIT_ON_ZERO_ACTIVE_CONNECTIONS`, until no
//! connection is left after `MINIMUM_DRAIN_DURATION`), then exits. `/quitquitquit` exits at
//! once. All of these exit 0.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accesslog::{AccessLog, Sink};
use crate::admin::{self, AdminPort, Agent};
use crate::config::SidecarConfig;
use crate::discovery;
use crate::metrics::Metrics;
use crate::orig_dst::OrigDstLookup;
use crate::proxy::{self, Direction, Routes, Shared, SharedConfig};
use crate::registry::{MeshContext, Registry};
use crate::upstream::CONNECT_TIMEOUT;
use crate::workers::{self, Workers};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the access log {sink:?}: {source}")]
    AccessLog {
        sink: Sink,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the worker threads: {0}")]
    Workers(#[source] std::io::Error),
    #[error("resolving the upstream {addr:?}: {reason}")]
    Upstream { addr: String, reason: String },
}

pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    };
    let listener = socket
        .and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(addr)?;
            s.listen(1024)
        })
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok(listener)
}

pub(crate) fn open_log(
    sink: Option<&Sink>,
    encoding: crate::accesslog::Encoding,
) -> Result<Option<AccessLog>, StartError> {
    sink.map(|s| {
        AccessLog::open(s, encoding).map_err(|source| StartError::AccessLog {
            sink: s.clone(),
            source,
        })
    })
    .transpose()
}

/// The bound addresses of a running sidecar.
#[derive(Clone, Copy, Debug)]
pub struct Addresses {
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub health: SocketAddr,
    pub status: SocketAddr,
    pub prometheus: SocketAddr,
}

/// A running sidecar.
#[derive(Debug)]
pub struct Sidecar {
    pub addresses: Addresses,
    terminate: CancellationToken,
    task: JoinHandle<ExitCode>,
}

impl Sidecar {
    /// What SIGTERM does.
    pub fn terminate(&self) {
        self.terminate.cancel();
    }

    /// A token that, when cancelled, does what [`Self::terminate`] does.
    pub fn terminate_handle(&self) -> CancellationToken {
        self.terminate.clone()
    }

    /// Waits for the proxy to exit.
    pub async fn wait(self) -> ExitCode {
        self.task.await.unwrap_or(ExitCode::FAILURE)
    }

    /// Whether the proxy has exited.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Starts a sidecar. `orig_dst` recovers redirected destinations (`SoOriginalDst` in a
/// pod; a mock in tests).
pub async fn start(
    config: SidecarConfig,
    orig_dst: Arc<dyn OrigDstLookup>,
) -> Result<Sidecar, StartError> {
    let log = open_log(config.access_log.as_ref(), config.access_log_encoding)?;
    let metrics = Arc::new(Metrics::new(config.workload.clone()));
    let (registry_tx, registry_rx) = watch::channel(Arc::new(Registry::default()));

    let workers = config.concurrency.max(1);
    let outbound = workers::bind_shared(config.ports.outbound, workers).map_err(|source| {
        StartError::Bind {
            addr: config.ports.outbound,
            source,
        }
    })?;
    let inbound =
        workers::bind_shared(config.ports.inbound, workers).map_err(|source| StartError::Bind {
            addr: config.ports.inbound,
            source,
        })?;
    let health = bind(config.ports.health).await?;
    let status = bind(config.ports.status).await?;
    let prometheus = bind(config.ports.prometheus).await?;
    let local = |l: &TcpListener, a: SocketAddr| l.local_addr().unwrap_or(a);
    let shared_local = |l: &[std::net::TcpListener], a: SocketAddr| l[0].local_addr().unwrap_or(a);
    let addresses = Addresses {
        outbound: shared_local(&outbound, config.ports.outbound),
        inbound: shared_local(&inbound, config.ports.inbound),
        health: local(&health, config.ports.health),
        status: local(&status, config.ports.status),
        prometheus: local(&prometheus, config.ports.prometheus),
    };

    let shared = Arc::new(Shared::new(SharedConfig {
        routes: Routes::Mesh(registry_rx),
        registry_only: config.registry_only,
        log: log.clone(),
        metrics: metrics.clone(),
        connect_timeout: CONNECT_TIMEOUT,
        detect_timeout: config.detect_timeout,
        ipv6: config.pod_ip.is_some_and(|ip| ip.is_ipv6()),
    }));
    let agent = Arc::new(Agent {
        ready: AtomicBool::new(false),
        terminating: CancellationToken::new(),
        drained: AtomicBool::new(false),
        quit: CancellationToken::new(),
        shared: shared.clone(),
        metrics: metrics.clone(),
        probers: config.probers.clone(),
        probe_ip: config.pod_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        app_metrics: config.app_metrics.clone(),
    });

    let shutdown = CancellationToken::new();
    let outbound_conns = TaskTracker::new();
    let inbound_conns = TaskTracker::new();
    let admin_conns = TaskTracker::new();
    let mut listeners: Vec<_> = outbound.into_iter().zip(inbound).map(Some).collect();
    let data_plane = Workers::spawn(workers, "proxy-worker", |i| {
        let pair = listeners[i].take();
        let (shared, orig_dst, shutdown) = (shared.clone(), orig_dst.clone(), shutdown.clone());
        let (outbound_conns, inbound_conns) = (outbound_conns.clone(), inbound_conns.clone());
        move || async move {
            let Some((out, inb)) = pair else { return };
            let (out, inb) = match (TcpListener::from_std(out), TcpListener::from_std(inb)) {
                (Ok(o), Ok(i)) => (o, i),
                (Err(err), _) | (_, Err(err)) => {
                    tracing::error!(%err, "worker listener");
                    return;
                }
            };
            tokio::join!(
                proxy::serve(
                    out,
                    Direction::Outbound,
                    shared.clone(),
                    orig_dst.clone(),
                    outbound_conns,
                    shutdown.clone(),
                ),
                proxy::serve(
                    inb,
                    Direction::Inbound,
                    shared,
                    orig_dst,
                    inbound_conns,
                    shutdown,
                ),
            );
        }
    })
    .map_err(StartError::Workers)?;
    let mut background = Vec::new();
    for (listener, port) in [
        (health, AdminPort::Health),
        (status, AdminPort::Status),
        (prometheus, AdminPort::Prometheus),
    ] {
        background.push(tokio::spawn(admin::serve(
            listener,
            port,
            agent.clone(),
            admin_conns.clone(),
            shutdown.clone(),
        )));
    }
    {
        let ctx = MeshContext {
            namespace: config.namespace.clone(),
            domain: config.domain.clone(),
            pod_ip: config.pod_ip,
        };
        let agent = agent.clone();
        let metrics = metrics.clone();
        background.push(tokio::spawn(discovery::run_client(
            config.discovery_address.clone(),
            discovery::Backoff::default(),
            move |snapshot| {
                let registry = Registry::build(&snapshot, &ctx, &metrics);
                registry_tx.send_replace(Arc::new(registry));
                if !agent.ready.swap(true, Ordering::SeqCst) {
                    tracing::info!(version = snapshot.version, "first discovery view applied");
                }
            },
            shutdown.clone(),
        )));
    }
    let flusher = log.clone().map(|l| tokio::spawn(l.run_flusher()));

    let terminate = CancellationToken::new();
    let lifecycle = Lifecycle {
        agent,
        shared,
        shutdown,
        outbound_conns,
        inbound_conns,
        admin_conns,
        termination_drain: config.termination_drain,
        exit_on_zero_active: config.exit_on_zero_active,
        minimum_drain: config.minimum_drain,
    };
    let task = {
        let terminate = terminate.clone();
        tokio::spawn(async move {
            let code = lifecycle.run(terminate).await;
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
            code
        })
    };
    Ok(Sidecar {
        addresses,
        terminate,
        task,
    })
}

struct Lifecycle {
    agent: Arc<Agent>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    outbound_conns: TaskTracker,
    inbound_conns: TaskTracker,
    admin_conns: TaskTracker,
    termination_drain: Duration,
    exit_on_zero_active: bool,
    minimum_drain: Duration,
}

/// How long the answer to `/quitquitquit` may take to leave before the process exits.
const REPLY_GRACE: Duration = Duration::from_secs(1);

impl Lifecycle {
    async fn run(self, terminate: CancellationToken) -> ExitCode {
        tokio::select! {
            () = self.agent.quit.cancelled() => {
                tracing::info!("quitquitquit: exiting");
                self.stop(Duration::ZERO).await;
            }
            () = terminate.cancelled() => self.on_terminate().await,
        }
        ExitCode::SUCCESS
    }

    async fn on_terminate(&self) {
        self.agent.terminating.cancel();
        if self.agent.drained.load(Ordering::SeqCst) {
            // Native layout: the preStop hook drained us and the app has exited.
            tracing::info!("agent already drained, exiting immediately");
            self.stop(self.termination_drain).await;
            return;
        }
        tracing::info!("SIGTERM: draining inbound listeners");
        self.shared.inbound_drain.cancel();
        let quit = self.agent.quit.cancelled();
        tokio::pin!(quit);
        if self.exit_on_zero_active {
            tokio::select! {
                () = &mut quit => return self.stop(Duration::ZERO).await,
                () = tokio::time::sleep(self.minimum_drain) => {}
            }
            loop {
                let active = self.outbound_conns.len() + self.inbound_conns.len();
                if active == 0 {
                    break;
                }
                tracing::info!(active, "waiting for connections to close");
                tokio::select! {
                    () = &mut quit => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        } else {
            tokio::select! {
                () = &mut quit => {}
                () = tokio::time::sleep(self.termination_drain) => {}
            }
        }
        self.stop(Duration::ZERO).await;
    }

    /// Stops accepting, asks open connections to finish, and waits up to `grace` for them.
    async fn stop(&self, grace: Duration) {
        self.shutdown.cancel();
        self.outbound_conns.close();
        self.inbound_conns.close();
        self.admin_conns.close();
        let data = async {
            self.outbound_conns.wait().await;
            self.inbound_conns.wait().await;
        };
        let _ = tokio::time::timeout(grace, data).await;
        let _ = tokio::time::timeout(REPLY_GRACE, self.admin_conns.wait()).await;
    }
}
