//! The node agent on the API: registers this machine as a `Node`, watches the pods bound
//! to it, runs a pod worker for each, and writes back what the workers report (status
//! through `pods/status`, Events) like a kubelet. It only talks to the API, so it could run
//! on another machine than the server.
//!
//! While a pod runs, its configMap, secret, projected and downwardAPI volumes are kept up
//! to date and its projected tokens renewed (see `refresher`).
//!
//! Pods outlive the agent. When it starts again, each pod's worker takes over what runs
//! (see the worker), and once the first list of pods is in, the state of pods that are
//! not running any more or that the API no longer knows is removed.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Event as ApiEvent, EventSource, Node, NodeAddress, NodeCondition, NodeSpec,
    NodeStatus, NodeSystemInfo, ObjectReference, Pod, Secret, ServiceAccount,
    ServiceAccountTokenProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod refresh;
mod refresher;
mod writer;

pub use refresh::RENEWAL_FRACTION_ENV;
use refresh::TokenLease;

use crate::planner::{BackoffConfig, Event};
use crate::runtime::{ProcessRuntime, RuntimeConfig, VolumeSources};
use crate::worker::{PodHandle, PodSink, WorkerConfig, spawn_pod};
use writer::{Update, Writers};

/// Grace of the containers of a pod removed from the API while the agent was away (the
/// kubelet's minimum grace; the pod's own is gone with it).
const ORPHAN_GRACE: Duration = Duration::from_secs(2);

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("registering node {node}: {source}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
}

/// Settings of the node agent.
#[derive(Clone)]
pub struct AgentConfig {
    pub node_name: String,
    pub runtime: RuntimeConfig,
    pub backoff: BackoffConfig,
    /// Gives pods their addresses; without it pods have loopback only.
    pub network: Option<Arc<dyn crate::runtime::network::PodNetwork>>,
    /// The node's `InternalIP` (the pod network's gateway when there is one).
    pub internal_ip: String,
}

/// Container log files the API server reads for `pods/log`.
#[derive(Clone)]
pub struct NodeLogs {
    runtime: ProcessRuntime,
    live: Arc<Mutex<HashSet<PathBuf>>>,
}

impl NodeLogs {
    /// The CRI log of a container's current instance (or the one before it).
    pub fn log_file(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
        container: &str,
        previous: bool,
    ) -> Option<PathBuf> {
        let dir = self
            .runtime
            .pod_log_dir(namespace, pod, uid)
            .join(container);
        let mut attempts: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)
            .ok()?
            .flatten()
            .filter_map(|entry| {
                let path = entry.path();
                let attempt = path.file_stem()?.to_str()?.parse().ok()?;
                (path.extension()? == "log").then_some((attempt, path))
            })
            .collect();
        attempts.sort();
        let index = attempts.len().checked_sub(if previous { 2 } else { 1 })?;
        attempts.into_iter().nth(index).map(|(_, path)| path)
    }

    /// Whether a container instance may still write to `path`.
    pub fn is_live(&self, path: &Path) -> bool {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(path)
    }
}

/// The running agent.
pub struct Agent {
    config: AgentConfig,
    client: kube::Client,
    runtime: ProcessRuntime,
    logs: NodeLogs,
    /// When projected tokens are renewed (see [`RENEWAL_FRACTION_ENV`]).
    renewal_fraction: f64,
}

impl Agent {
    pub fn new(client: kube::Client, config: AgentConfig) -> Self {
        let mut runtime = ProcessRuntime::new(config.runtime.clone());
        if let Some(network) = &config.network {
            runtime = runtime.with_network(network.clone());
        }
        let logs = NodeLogs {
            runtime: runtime.clone(),
            live: Arc::default(),
        };
        let setting = std::env::var(RENEWAL_FRACTION_ENV).ok();
        let renewal_fraction =
            refresh::renewal_fraction(setting.as_deref()).unwrap_or_else(|err| {
                tracing::warn!("{err}; using {}", refresh::RENEWAL_FRACTION);
                refresh::RENEWAL_FRACTION
            });
        Self {
            config,
            client,
            runtime,
            logs,
            renewal_fraction,
        }
    }

    /// Log access for the API server's `pods/log`.
    pub fn logs(&self) -> NodeLogs {
        self.logs.clone()
    }

    /// Runs until `shutdown`; pods keep running under their supervisors afterwards.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let node = self.config.node_name.clone();
        // The API may still be starting: retry for a while before giving up.
        let mut attempt = 0;
        while let Err(source) = register_node(&self.client, &node, &self.config.internal_ip).await {
            attempt += 1;
            if attempt >= 50 || shutdown.is_cancelled() {
                return Err(AgentError::Register { node, source });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let heartbeat = tokio::spawn(heartbeat(
            self.client.clone(),
            node.clone(),
            shutdown.clone(),
        ));

        let (updates_tx, mut updates) = mpsc::unbounded_channel::<Update>();
        let sink = Arc::new(ApiSink {
            updates: updates_tx,
            live: self.logs.live.clone(),
            node: node.clone(),
        });
        let pods: Api<Pod> = Api::all(self.client.clone());
        let watch_config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let mut stream = watcher(pods, watch_config).boxed();
        let mut workers: BTreeMap<String, PodHandle> = BTreeMap::new();
        let mut writers = Writers::new(ClientApi {
            client: self.client.clone(),
            node: node.clone(),
            runtime: self.runtime.clone(),
        });
        // Pods with volumes kept up to date while they run, and the watches that feed
        // them (started with the first such pod).
        let mut refreshers: BTreeMap<String, refresher::RefreshHandle> = BTreeMap::new();
        let mut source_cache: Option<Arc<refresher::SourceCache>> = None;
        // Pods whose worker has finished, until the API forgets them: a watch event that
        // lags behind the final status must not start such a pod again.
        let mut finished: HashSet<String> = HashSet::new();
        // Uids of the current (re)list, to forget finished pods deleted during a watch gap.
        let mut listing: Option<HashSet<String>> = None;
        // Uids of the first list, until it is complete.
        let mut first_list: Option<HashSet<String>> = Some(HashSet::new());
        let worker_config = WorkerConfig {
            node_name: node.clone(),
            backoff: self.config.backoff,
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                event = stream.next() => match event {
                    Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                        let Some(uid) = pod.metadata.uid.clone() else { continue };
                        if let Some(seen) = first_list.as_mut() {
                            seen.insert(uid.clone());
                        }
                        if let Some(seen) = listing.as_mut() {
                            seen.insert(uid.clone());
                        }
                        if let Some(handle) = workers.get(&uid) {
                            if let Some(refresher) = refreshers.get(&uid) {
                                refresher.update(&pod);
                            }
                            if pod.metadata.deletion_timestamp.is_some() {
                                let grace = pod.metadata.deletion_grace_period_seconds
                                    .and_then(|g| u32::try_from(g).ok());
                                handle.delete(grace);
                            }
                            continue;
                        }
                        if finished.contains(&uid) {
                            if is_terminal(&pod)
                                && pod.metadata.deletion_timestamp.is_some()
                                && updates_tx_delete(&self.client, &pod).await.is_ok()
                            {
                                remove_logs(&self.runtime, &pod);
                            }
                            continue;
                        }
                        if is_terminal(&pod) {
                            // Finished before this agent started: only remove it if asked.
                            if pod.metadata.deletion_timestamp.is_some()
                                && updates_tx_delete(&self.client, &pod).await.is_ok()
                            {
                                remove_logs(&self.runtime, &pod);
                            }
                            continue;
                        }
                        let (sources, leases) = fetch_sources(&self.client, &pod).await;
                        let sources = Arc::new(sources);
                        let handle = spawn_pod(
                            self.runtime.clone(),
                            worker_config.clone(),
                            sources.clone(),
                            sink.clone(),
                            pod.clone(),
                        );
                        if !refresh::refreshable_volumes(&pod).is_empty() {
                            let cache = source_cache
                                .get_or_insert_with(|| {
                                    refresher::SourceCache::start(&self.client, &shutdown)
                                })
                                .clone();
                            let refresh = self.pod_refresh(cache, sink.clone(), sources, leases);
                            let stop = shutdown.child_token();
                            let status = handle.watch();
                            let started = refresher::spawn(refresh, pod.clone(), status, stop);
                            refreshers.insert(uid.clone(), started);
                        }
                        if pod.metadata.deletion_timestamp.is_some() {
                            handle.delete(pod.metadata.deletion_grace_period_seconds
                                .and_then(|g| u32::try_from(g).ok()));
                        }
                        workers.insert(uid, handle);
                    }
                    Some(Ok(watcher::Event::Delete(pod))) => {
                        // Removed from the API (force delete): stop it now.
                        if let Some(uid) = pod.metadata.uid.as_deref() {
                            finished.remove(uid);
                            if let Some(handle) = workers.get(uid) {
                                handle.delete(Some(0));
                            }
                        }
                    }
                    Some(Ok(watcher::Event::Init)) => listing = Some(HashSet::new()),
                    Some(Ok(watcher::Event::InitDone)) => {
                        if let Some(seen) = listing.take() {
                            finished.retain(|uid| seen.contains(uid));
                        }
                        if let Some(seen) = first_list.take() {
                            self.remove_orphans(&seen, &workers);
                        }
                    }
                    Some(Err(err)) => {
                        tracing::warn!(%err, "watching pods; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    None => break,
                },
                Some(update) = updates.recv() => {
                    let Some(uid) = update.pod().metadata.uid.clone() else { continue };
                    if let Update::Finished(_) = &update {
                        refreshers.remove(&uid);
                        workers.remove(&uid);
                        finished.insert(uid.clone());
                    } else if finished.contains(&uid) {
                        // Nothing may follow a pod's final status.
                        continue;
                    }
                    writers.send(&uid, update);
                }
            }
        }
        heartbeat.abort();
        Ok(())
    }

    /// What the refresher of a pod started with `sources` works with.
    fn pod_refresh(
        &self,
        cache: Arc<refresher::SourceCache>,
        sink: Arc<dyn PodSink>,
        sources: Arc<VolumeSources>,
        leases: BTreeMap<(String, String), TokenLease>,
    ) -> refresher::PodRefresh {
        let client = self.client.clone();
        refresher::PodRefresh {
            runtime: self.runtime.clone(),
            cache,
            sink,
            request_token: Arc::new(move |pod, projection| {
                let client = client.clone();
                Box::pin(async move { request_token(&client, &pod, &projection).await })
            }),
            renewal_fraction: self.renewal_fraction,
            sources,
            leases,
        }
    }

    /// Removes what pods without a worker left on disk: pods that finished (their logs
    /// stay for `kubectl logs`) and pods the API no longer knows (their containers are
    /// stopped first, and their logs go too).
    fn remove_orphans(&self, listed: &HashSet<String>, workers: &BTreeMap<String, PodHandle>) {
        for uid in self.runtime.pods_on_disk() {
            if workers.contains_key(&uid) {
                continue;
            }
            let known = listed.contains(&uid);
            let runtime = self.runtime.clone();
            tokio::spawn(async move {
                let sandbox = runtime.find_sandbox(&uid);
                tracing::info!(%uid, known, "removing the state of a pod without a worker");
                if let Err(err) = runtime.remove_pod_state(&uid, ORPHAN_GRACE).await {
                    tracing::warn!(%uid, %err, "removing the state of an orphaned pod");
                }
                if let Some(sb) = sandbox.filter(|_| !known) {
                    let _ = runtime.remove_pod_logs(&sb.namespace, &sb.name, &uid);
                }
            });
        }
    }
}

fn remove_logs(runtime: &ProcessRuntime, pod: &Pod) {
    let meta = &pod.metadata;
    let _ = runtime.remove_pod_logs(
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
        meta.uid.as_deref().unwrap_or_default(),
    );
}

/// The API as the pods' writers use it.
struct ClientApi {
    client: kube::Client,
    node: String,
    runtime: ProcessRuntime,
}

impl writer::Api for ClientApi {
    fn write_status<'a>(
        &'a self,
        pod: &'a Pod,
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            write_status(&self.client, pod)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn write_event<'a>(
        &'a self,
        pod: &'a Pod,
        event: &'a Event,
        at: Timestamp,
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            write_event(&self.client, &self.node, pod, event, at)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn remove<'a>(&'a self, pod: &'a Pod) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Err(err) = updates_tx_delete(&self.client, pod).await {
                tracing::warn!(%err, "removing a terminated pod");
            }
            remove_logs(&self.runtime, pod);
        })
    }
}

struct ApiSink {
    updates: mpsc::UnboundedSender<Update>,
    live: Arc<Mutex<HashSet<PathBuf>>>,
    node: String,
}

impl PodSink for ApiSink {
    fn status(&self, pod: &Pod) {
        let _ = self.updates.send(Update::Status(Box::new(pod.clone())));
    }

    fn event(&self, pod: &Pod, event: &Event) {
        let _ = self.updates.send(Update::Event(
            Box::new(pod.clone()),
            event.clone(),
            Timestamp::now(),
        ));
    }

    fn log_file(&self, _pod: &Pod, _container: &str, path: PathBuf) {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path);
    }

    fn log_closed(&self, path: PathBuf) {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&path);
    }

    fn finished(&self, pod: &Pod) {
        tracing::debug!(node = %self.node, pod = ?pod.metadata.name, "pod worker finished");
        let _ = self.updates.send(Update::Finished(Box::new(pod.clone())));
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Removes a pod whose containers are all gone (the kubelet's final delete, grace 0).
async fn updates_tx_delete(client: &kube::Client, pod: &Pod) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(
        client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api
        .delete(pod.metadata.name.as_deref().unwrap_or_default(), &params)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err),
    }
}

async fn write_status(client: &kube::Client, pod: &Pod) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(
        client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    // A merge patch would keep stale keys of changed container states (waiting next to
    // running); the status is the agent's to own, so replace it as a whole.
    let body = Pod {
        metadata: ObjectMeta {
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectMeta::default()
        },
        spec: None,
        status: pod.status.clone(),
    };
    match api
        .replace_status(name, &PostParams::default(), &body)
        .await
    {
        Ok(_) => Ok(()),
        // Gone, or replaced by a new pod of the same name (409: the uid is a precondition):
        // there is no one left to tell.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(err) => Err(err),
    }
}

async fn write_event(
    client: &kube::Client,
    node: &str,
    pod: &Pod,
    event: &Event,
    now: Timestamp,
) -> Result<(), kube::Error> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<ApiEvent> = Api::namespaced(client.clone(), namespace);
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let field_path = event.container.as_ref().map(|c| {
        let init = pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .is_some_and(|list| list.iter().any(|i| &i.name == c));
        if init {
            format!("spec.initContainers{{{c}}}")
        } else {
            format!("spec.containers{{{c}}}")
        }
    });
    let object = ApiEvent {
        metadata: ObjectMeta {
            name: Some(format!("{pod_name}.{:x}", now.as_nanosecond())),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod_name),
            namespace: Some(namespace.to_string()),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            field_path,
        },
        reason: Some(event.reason.clone()),
        message: Some(event.message.clone()),
        type_: Some(if event.warning { "Warning" } else { "Normal" }.into()),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(node.to_string()),
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        count: Some(1),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(node.to_string()),
        action: None,
        related: None,
        series: None,
    };
    api.create(&PostParams::default(), &object)
        .await
        .map(|_| ())
}

/// The token request the kubelet makes for a `serviceAccountToken` projection: the
/// projection's audience and expiry, bound to the pod.
fn token_request(pod: &Pod, projection: &ServiceAccountTokenProjection) -> TokenRequest {
    TokenRequest {
        spec: TokenRequestSpec {
            audiences: projection
                .audience
                .iter()
                .filter(|a| !a.is_empty())
                .cloned()
                .collect(),
            expiration_seconds: projection.expiration_seconds,
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    }
}

/// The service account a pod runs as.
fn service_account_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
}

/// Requests the token of a `serviceAccountToken` projection; the API server's message
/// when it refuses.
async fn request_token(
    client: &kube::Client,
    pod: &Pod,
    projection: &ServiceAccountTokenProjection,
) -> Result<(String, TokenLease), String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let answer = accounts
        .create_token_request(
            service_account_of(pod),
            &PostParams::default(),
            &token_request(pod, projection),
        )
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) => status.message,
            other => other.to_string(),
        })?;
    let granted = answer.spec.expiration_seconds;
    let status = answer
        .status
        .filter(|s| !s.token.is_empty())
        .ok_or_else(|| "the API server returned no token".to_owned())?;
    let lease = TokenLease::from_answer(status.expiration_timestamp.0, granted);
    Ok((status.token, lease))
}

/// ConfigMaps and Secrets the pod's volumes and env refer to, and a token for each
/// `serviceAccountToken` projection (with when it was issued and expires), read at pod
/// start; the refresher keeps the volumes up to date afterwards.
async fn fetch_sources(
    client: &kube::Client,
    pod: &Pod,
) -> (VolumeSources, BTreeMap<(String, String), TokenLease>) {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let refs = refresh::volume_refs(pod);
    let mut config_maps: HashSet<String> = refs.config_maps.into_iter().collect();
    let mut secrets: HashSet<String> = refs.secrets.into_iter().collect();
    if let Some(spec) = &pod.spec {
        let containers = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers);
        for container in containers {
            for env in container.env.iter().flatten() {
                if let Some(from) = &env.value_from {
                    if let Some(key) = &from.config_map_key_ref {
                        config_maps.insert(key.name.clone());
                    }
                    if let Some(key) = &from.secret_key_ref {
                        secrets.insert(key.name.clone());
                    }
                }
            }
            for from in container.env_from.iter().flatten() {
                if let Some(cm) = &from.config_map_ref {
                    config_maps.insert(cm.name.clone());
                }
                if let Some(secret) = &from.secret_ref {
                    secrets.insert(secret.name.clone());
                }
            }
        }
    }
    let mut sources = VolumeSources::default();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for name in config_maps {
        if let Ok(Some(cm)) = cms.get_opt(&name).await {
            sources.add_config_map(cm);
        }
    }
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for name in secrets {
        if let Ok(Some(secret)) = secret_api.get_opt(&name).await {
            sources.add_secret(secret);
        }
    }
    let mut leases = BTreeMap::new();
    for (volume, projection) in refs.tokens {
        let outcome = request_token(client, pod, &projection)
            .await
            .map(|(token, lease)| {
                leases.insert((volume.clone(), projection.path.clone()), lease);
                token
            });
        sources.add_service_account_token(&volume, &projection.path, outcome);
    }
    (sources, leases)
}

/// Creates or refreshes this machine's `Node` object.
async fn register_node(
    client: &kube::Client,
    name: &str,
    internal_ip: &str,
) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = node_object(name, internal_ip);
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let patch = serde_json::json!({"status": node.status});
            nodes
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
        }
        Err(err) => Err(err),
    }
}

async fn heartbeat(client: kube::Client, name: String, shutdown: CancellationToken) {
    let nodes: Api<Node> = Api::all(client);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        let patch = serde_json::json!({"status": {"conditions": [ready_condition()]}});
        if let Err(err) = nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            tracing::debug!(%err, "node heartbeat");
        }
    }
}

fn ready_condition() -> NodeCondition {
    let now = Time(Timestamp::now());
    NodeCondition {
        type_: "Ready".into(),
        status: "True".into(),
        reason: Some("KubeletReady".into()),
        message: Some("kubelet is posting ready status".into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

fn node_object(name: &str, internal_ip: &str) -> Node {
    let mut labels = BTreeMap::new();
    labels.insert("kubernetes.io/hostname".to_string(), name.to_string());
    labels.insert("kubernetes.io/os".to_string(), "linux".to_string());
    labels.insert(
        "kubernetes.io/arch".to_string(),
        std::env::consts::ARCH
            .replace("x86_64", "amd64")
            .replace("aarch64", "arm64"),
    );
    labels.insert(
        "node-role.kubernetes.io/control-plane".to_string(),
        String::new(),
    );
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_else(|| "0".into());
    let mut capacity = BTreeMap::new();
    capacity.insert("cpu".to_string(), Quantity(cpus.to_string()));
    capacity.insert("memory".to_string(), Quantity(format!("{memory_kib}Ki")));
    capacity.insert("pods".to_string(), Quantity("250".into()));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let os_image = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into());
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            allocatable: Some(capacity.clone()),
            capacity: Some(capacity),
            conditions: Some(vec![ready_condition()]),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: internal_ip.to_string(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: name.to_string(),
                },
            ]),
            node_info: Some(NodeSystemInfo {
                architecture: std::env::consts::ARCH.into(),
                container_runtime_version: format!("tandem://{}", env!("CARGO_PKG_VERSION")),
                kernel_version: kernel,
                kube_proxy_version: String::new(),
                kubelet_version: "v1.33.0".into(),
                operating_system: "linux".into(),
                os_image,
                boot_id: String::new(),
                machine_id: String::new(),
                system_uuid: String::new(),
                swap: None,
            }),
            ..NodeStatus::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_requests_carry_the_projection_and_bind_the_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1"},
            "spec": {"serviceAccountName": "web", "containers": [{"name": "app"}]}
        }))
        .expect("pod");
        let projection = ServiceAccountTokenProjection {
            audience: Some("istio-ca".into()),
            expiration_seconds: Some(43200),
            path: "istio-token".into(),
        };
        let request = serde_json::to_value(token_request(&pod, &projection)).expect("json");
        assert_eq!(
            request["spec"],
            serde_json::json!({
                "audiences": ["istio-ca"],
                "expirationSeconds": 43200,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web-1", "uid": "u-1"}
            })
        );
        assert_eq!(service_account_of(&pod), "web");

        // No audience: the API server's own; no account named: `default`.
        let bare = ServiceAccountTokenProjection {
            path: "token".into(),
            ..Default::default()
        };
        assert!(token_request(&pod, &bare).spec.audiences.is_empty());
        let mut unnamed = pod.clone();
        if let Some(spec) = unnamed.spec.as_mut() {
            spec.service_account_name = None;
        }
        assert_eq!(service_account_of(&unnamed), "default");
    }
}
