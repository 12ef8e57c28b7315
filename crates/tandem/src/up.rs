//! `tandem up` and `tandem down`: a single-node cluster in one process.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use node::agent::{Agent, AgentConfig, NodeLogs};
use node::runtime::{ProcessRuntime, RuntimeConfig};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Options of `tandem up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Where the store, certificates, kubeconfig, pod state and logs live
    /// [default: /var/lib/tandem as root, else ~/.local/share/tandem].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address of the API server (HTTPS).
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: std::net::SocketAddr,
    /// A kind cluster config (`kind: Cluster`, `apiVersion: kind.x-k8s.io/v1alpha4`);
    /// `featureGates` and the API server address apply. `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// `bridge`: pods get addresses on the `tandem0` bridge, Services get ClusterIPs
    /// (nftables) and names (cluster DNS). `none`: pods have loopback only, as under
    /// `tandem play`, and the host's network is left alone.
    #[arg(long, value_enum, default_value_t = PodNetworkMode::Bridge)]
    pub pod_network: PodNetworkMode,
    /// CrashLoopBackOff initial delay (Kubernetes: 10s). For experiments and tests.
    #[arg(long, value_parser = crate::play::parse_duration, hide = true)]
    pub backoff_initial: Option<Duration>,
}

/// How pods are networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PodNetworkMode {
    Bridge,
    None,
}

/// Options of `tandem down`.
#[derive(Debug, Clone, clap::Args)]
pub struct DownArgs {
    /// The data directory of the cluster to stop.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

pub fn default_data_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/tandem");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/tandem")
}

/// Adapts the node's log files to the API server's `pods/log`.
struct Logs(NodeLogs);

impl apiserver::state::LogSource for Logs {
    fn log_file(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
        container: &str,
        previous: bool,
    ) -> Option<PathBuf> {
        self.0.log_file(namespace, pod, uid, container, previous)
    }

    fn is_live(&self, path: &Path) -> bool {
        self.0.is_live(path)
    }
}

/// Runs `pods/exec` commands in the node's containers (in-process: the runtime reads the
/// containers' state from disk, as the agent does).
struct Exec(ProcessRuntime);

impl apiserver::ExecBackend for Exec {
    fn exec(
        &self,
        request: apiserver::exec::ExecRequest,
    ) -> futures::future::BoxFuture<
        'static,
        Result<apiserver::exec::ExecProcess, apiserver::exec::ExecError>,
    > {
        use apiserver::exec::ExecError;
        let runtime = self.0.clone();
        Box::pin(async move {
            let options = node::runtime::exec::ExecOptions {
                command: request.command,
                stdin: request.stdin,
                stdout: request.stdout,
                stderr: request.stderr,
                tty: request.tty,
                size: request.size.map(|s| (s.width, s.height)),
            };
            let session = runtime
                .exec(&request.uid, &request.container, options)
                .await
                .map_err(|e| match e {
                    node::runtime::exec::ExecError::NotFound(c) => ExecError::ContainerNotFound(c),
                    node::runtime::exec::ExecError::Start(why) => ExecError::Start(why),
                })?;
            let mut process = session.process;
            Ok(apiserver::exec::ExecProcess {
                stdin: session.stdin,
                stdout: session.stdout,
                stderr: session.stderr,
                resize: session.terminal.map(|t| {
                    Box::new(move |width, height| {
                        let _ = t.resize(width, height);
                    }) as apiserver::exec::Resize
                }),
                exit: Box::pin(async move { process.wait().await.map_err(|e| e.to_string()) }),
            })
        })
    }
}

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    crate::require_root("tandem up")?;
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let mut listen = args.listen;
    let mut gates = api::validation::FeatureGates::default();
    let mut cluster_name = "tandem".to_string();
    if let Some(file) = &args.config {
        // `-` reads standard input, as `kind create cluster --config=-` does.
        let text = if file.as_os_str() == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("reading the cluster config from standard input")?;
            text
        } else {
            std::fs::read_to_string(file)
                .with_context(|| format!("{}: cannot read", file.display()))?
        };
        let config =
            crate::config::parse(&file.display().to_string(), &text).map_err(anyhow::Error::msg)?;
        for ignored in &config.ignored {
            eprintln!(
                "tandem up: {}: {ignored} does not apply to one node; ignored",
                file.display()
            );
        }
        gates = config.feature_gates;
        if let Some(addr) = config.listen {
            listen = addr;
        }
        if let Some(name) = config.name {
            cluster_name = name;
        }
    }

    let pki = apiserver::pki::ensure(&data_dir, &[]).context("preparing certificates")?;
    let server_url = format!("https://{listen}");
    let kubeconfig_path = data_dir.join("kubeconfig");
    let kubeconfig = apiserver::pki::kubeconfig(&server_url, &pki, &cluster_name);
    apiserver::pki::write_private(&kubeconfig_path, kubeconfig.as_bytes())
        .context("writing the kubeconfig")?;

    let store = store::redb::RedbStore::open(data_dir.join("store.redb"))
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;

    let client = client_from_kubeconfig(&kubeconfig).await?;
    let network = match args.pod_network {
        PodNetworkMode::Bridge => {
            Some(crate::network::start(&data_dir, &crate::network::pods_dir(&data_dir)).await?)
        }
        PodNetworkMode::None => None,
    };
    let gateway = network.as_ref().map(|n| n.gateway());
    let mut backoff = node::planner::BackoffConfig::default();
    if let Some(d) = args.backoff_initial {
        backoff.initial = d;
    }
    let runtime = RuntimeConfig {
        root: data_dir.join("run"),
        log_root: data_dir.join("logs"),
        helper_exe: std::env::current_exe().context("locating the tandem binary")?,
    };
    let agent = Agent::new(
        client.clone(),
        AgentConfig {
            node_name: crate::node_name(),
            runtime: runtime.clone(),
            backoff,
            network: network
                .clone()
                .map(|n| n as Arc<dyn node::runtime::network::PodNetwork>),
            internal_ip: gateway.map_or_else(|| "127.0.0.1".to_owned(), |g| g.to_string()),
        },
    );
    let mut config = apiserver::state::ApiConfig {
        feature_gates: gates,
        server_address: listen.to_string(),
        ..Default::default()
    };
    config.feature_gates = gates;
    let injector = crate::injection::MeshInjector::new(&crate::node_name());
    let state = apiserver::state::AppState::new(Arc::new(store))
        .with_logs(Arc::new(Logs(agent.logs())))
        .with_exec(Arc::new(Exec(ProcessRuntime::new(runtime))))
        .with_admission(vec![Arc::new(injector.clone())])
        .with_token_signer(
            apiserver::tokens::Signer::from_pem(&pki.service_account_key_pem)
                .context("reading the service account signing key")?,
        )
        .with_config(config);

    let shutdown = CancellationToken::new();
    // Bind first: a port in use is an error before anything claims to be up.
    let bound = apiserver::bind(apiserver::ServerConfig::new(listen, &pki))
        .await
        .with_context(|| format!("starting the API server on {listen}"))?;
    let server = tokio::spawn(bound.run(state, shutdown.clone()));
    wait_until_listening(listen).await;
    let agent = tokio::spawn(agent.run(shutdown.clone()));
    tokio::spawn(injector.follow(client.clone(), shutdown.clone()));
    let controllers = controllers::spawn_all(client.clone(), crate::node_name(), shutdown.clone());
    if let Some(gateway) = gateway {
        crate::network::spawn_services(&data_dir, client.clone(), gateway, shutdown.clone())
            .await?;
        crate::network::seed_services(&client, gateway)
            .await
            .context("creating the kubernetes and kube-dns Services")?;
    }
    std::fs::write(data_dir.join("tandem.pid"), std::process::id().to_string())
        .context("writing the pid file")?;
    println!(
        "tandem is up: API server on {server_url}, node {}",
        crate::node_name()
    );
    println!("export KUBECONFIG={}", kubeconfig_path.display());

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
        result = server => {
            shutdown.cancel();
            let _ = std::fs::remove_file(data_dir.join("tandem.pid"));
            return match result {
                Ok(Ok(())) => Ok(ExitCode::SUCCESS),
                Ok(Err(err)) => Err(anyhow::Error::new(err).context("API server")),
                Err(err) => Err(anyhow::Error::new(err).context("API server task")),
            };
        }
    }
    // Pods keep running under their supervisors; the next `tandem up` takes them back.
    shutdown.cancel();
    let _ = agent.await;
    for controller in controllers {
        let _ = controller.await;
    }
    let _ = std::fs::remove_file(data_dir.join("tandem.pid"));
    Ok(ExitCode::SUCCESS)
}

/// The agent and the controllers are API clients like any other: start them once the
/// server answers, so their first requests do not fail.
async fn wait_until_listening(addr: std::net::SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn client_from_kubeconfig(text: &str) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(text).context("reading the kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .context("loading the kubeconfig")?;
    kube::Client::try_from(config).context("building the API client")
}

/// `tandem down`: delete every pod gracefully (the full termination order), then stop
/// the server.
pub async fn down(args: DownArgs) -> anyhow::Result<ExitCode> {
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    let pid_file = data_dir.join("tandem.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .with_context(|| format!("no tandem is up with data dir {}", data_dir.display()))?
        .trim()
        .parse()
        .context("reading the pid file")?;
    let kubeconfig =
        std::fs::read_to_string(data_dir.join("kubeconfig")).context("reading the kubeconfig")?;
    let client = client_from_kubeconfig(&kubeconfig).await?;
    // Workloads first, so that their controllers do not replace the pods being stopped.
    delete_all::<k8s_openapi::api::apps::v1::Deployment>(&client).await;
    delete_all::<k8s_openapi::api::apps::v1::ReplicaSet>(&client).await;
    delete_all::<k8s_openapi::api::batch::v1::Job>(&client).await;
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods
        .list(&ListParams::default())
        .await
        .context("listing pods")?;
    for pod in &list.items {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let _ = api.delete(name, &DeleteParams::default()).await;
    }
    let longest = list
        .items
        .iter()
        .filter_map(|p| p.spec.as_ref()?.termination_grace_period_seconds)
        .max()
        .unwrap_or(30);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(longest.max(0) as u64 + 15);
    loop {
        let Ok(left) = pods.list(&ListParams::default()).await else {
            break;
        };
        if left.items.is_empty() || tokio::time::Instant::now() > deadline {
            break;
        }
        // A controller may have started a pod after the first round (before its owner was
        // gone): delete whatever is not terminating yet, or it would outlive the server.
        for pod in left
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            let _ = api.delete(name, &DeleteParams::default()).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Pods can leave the API before the node has finished with them (grace 0, force
    // delete): wait until the agent has stopped every sandbox, or they would outlive it.
    let pods_dir = data_dir.join("run/pods");
    while tokio::time::Instant::now() < deadline
        && std::fs::read_dir(&pods_dir).is_ok_and(|mut d| d.next().is_some())
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    // `up` removes its pid file as its last step (a zombie would still answer kill(0)).
    for _ in 0..200 {
        if !pid_file.exists() || nix::sys::signal::kill(pid, None).is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every pod is gone: the bridge and tandem's nftables table can go too.
    if crate::network::config(&data_dir).state_dir.exists()
        && let Err(err) = crate::network::teardown(&data_dir).await
    {
        eprintln!("tandem down: {err:#}");
    }
    println!("tandem is down");
    Ok(ExitCode::SUCCESS)
}

/// Deletes every object of a namespaced kind, in all namespaces (best effort).
async fn delete_all<K>(client: &kube::Client)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let all: Api<K> = Api::all(client.clone());
    let Ok(list) = all.list(&ListParams::default()).await else {
        return;
    };
    for object in list.items {
        let meta = object.meta();
        let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
            continue;
        };
        let api: Api<K> = Api::namespaced(client.clone(), ns);
        let _ = api.delete(name, &DeleteParams::background()).await;
    }
}
