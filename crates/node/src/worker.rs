//! The pod worker: observe -> plan -> act, for one pod, until the planner says `Done`.
//!
//! All decisions are the planner's. The worker only turns actions into runtime calls
//! (each in its own task), and turns what those tasks report back into the
//! [`Observation`] the planner reads next. A worker never blocks on a runtime call: the
//! loop keeps planning while containers start, hooks run and stops are in progress.
//!
//! A worker that finds the pod's state on disk (the agent was restarted) first takes over
//! what runs there instead of starting it again; see [`adopt`].

mod adopt;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::access::ContainerAccess;
use crate::hook;
use crate::planner::{
    self, Action, BackoffConfig, ContainerKind, Event, HookState, Instance, InstanceState,
    Observation, PlanInput, ProbeResult, SandboxState, StartError, StopIssued, StopReason,
    Termination,
};
use crate::probe::{self, ProbeKind, ProbeUpdate};
use crate::runtime::{
    ContainerHandle, ExitInfo, ProcessRuntime, ResolveContext, Sandbox, SandboxSpec, VolumeSources,
};
use adopt::Seed;

/// Where a worker sends what others may want to see.
pub trait PodSink: Send + Sync {
    /// The pod with a new status (published only when the status changed).
    fn status(&self, pod: &Pod);
    /// A Kubernetes event about the pod.
    fn event(&self, pod: &Pod, event: &Event);
    /// A container instance started writing to this log file.
    fn log_file(&self, pod: &Pod, container: &str, path: PathBuf) {
        let _ = (pod, container, path);
    }
    /// The container instance that wrote this log file has exited.
    fn log_closed(&self, path: PathBuf) {
        let _ = path;
    }
    /// The worker is done: every container and the sandbox are gone; `pod` is final.
    fn finished(&self, pod: &Pod);
}

/// Settings shared by every worker of an agent.
#[derive(Clone)]
pub struct WorkerConfig {
    pub node_name: String,
    pub backoff: BackoffConfig,
}

/// What the worker's tasks report back.
enum Report {
    SandboxReady(Result<Sandbox, String>),
    SandboxStopped,
    Started {
        name: String,
        result: Result<Started, StartError>,
    },
    PostStart {
        name: String,
        id: String,
        result: Result<(), String>,
    },
    Exited {
        name: String,
        id: String,
        exit: ExitInfo,
    },
    PreStop {
        name: String,
        result: Result<(), String>,
    },
    Probe(ProbeUpdate),
    /// Plan again (after a delay that keeps a failing operation from spinning).
    Retry,
}

struct Started {
    handle: ContainerHandle,
    access: Arc<dyn ContainerAccess>,
    image: String,
    started_at: Timestamp,
    has_post_start: bool,
}

/// Live parts of a running container instance that the planner does not see.
struct Live {
    id: String,
    /// When the process started, on tokio's clock (probe initial delays count from it).
    started: tokio::time::Instant,
    handle: ContainerHandle,
    access: Arc<dyn ContainerAccess>,
    probes: CancellationToken,
    readiness_seed: Seed,
}

/// A handle to a running pod worker.
pub struct PodHandle {
    delete: watch::Sender<Option<u32>>,
    pod: watch::Receiver<Pod>,
    done: tokio::task::JoinHandle<()>,
}

impl PodHandle {
    /// Requests a graceful delete with this grace period (None = the pod's own).
    pub fn delete(&self, grace_seconds: Option<u32>) {
        self.delete.send_modify(|d| {
            // A later delete may shorten the grace, never lengthen it (as the API server).
            let grace = grace_seconds.unwrap_or(u32::MAX);
            *d = Some(d.map_or(grace, |old| old.min(grace)));
        });
    }

    /// The latest pod object (spec + reported status).
    pub fn watch(&self) -> watch::Receiver<Pod> {
        self.pod.clone()
    }

    /// Waits until the worker has finished (pod terminal, everything stopped).
    pub async fn finished(self) {
        let _ = self.done.await;
    }
}

/// Starts a worker for `pod` (already defaulted and validated, with uid and nodeName set).
pub fn spawn_pod(
    runtime: ProcessRuntime,
    config: WorkerConfig,
    sources: Arc<VolumeSources>,
    sink: Arc<dyn PodSink>,
    pod: Pod,
) -> PodHandle {
    let (delete_tx, delete_rx) = watch::channel(None);
    let (pod_tx, pod_rx) = watch::channel(pod.clone());
    let worker = Worker::new(runtime, config, sources, sink, pod, pod_tx);
    let done = tokio::spawn(worker.run(delete_rx));
    PodHandle {
        delete: delete_tx,
        pod: pod_rx,
        done,
    }
}

struct Worker {
    runtime: ProcessRuntime,
    config: WorkerConfig,
    sources: Arc<VolumeSources>,
    sink: Arc<dyn PodSink>,
    pod: Pod,
    published: watch::Sender<Pod>,
    obs: Observation,
    backoff: planner::Backoff,
    sandbox: Option<Sandbox>,
    sandbox_pending: bool,
    live: BTreeMap<String, Live>,
    tx: mpsc::UnboundedSender<Report>,
    rx: mpsc::UnboundedReceiver<Report>,
}

impl Worker {
    fn new(
        runtime: ProcessRuntime,
        config: WorkerConfig,
        sources: Arc<VolumeSources>,
        sink: Arc<dyn PodSink>,
        pod: Pod,
        published: watch::Sender<Pod>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            runtime,
            config,
            sources,
            sink,
            pod,
            published,
            obs: Observation::default(),
            backoff: planner::Backoff::new(),
            sandbox: None,
            sandbox_pending: false,
            live: BTreeMap::new(),
            tx,
            rx,
        }
    }

    async fn run(mut self, mut delete: watch::Receiver<Option<u32>>) {
        self.adopt().await;
        loop {
            let now = Timestamp::now();
            let plan = planner::plan(PlanInput {
                pod: &self.pod,
                observation: &self.obs,
                backoff: &self.backoff,
                backoff_config: &self.config.backoff,
                previous_status: self.pod.status.as_ref(),
                now,
            });
            self.backoff = plan.backoff;
            self.publish(plan.status);
            let mut done = false;
            let mut starts = Vec::new();
            for action in plan.actions {
                done |= matches!(action, Action::Done);
                match action {
                    Action::StartContainer { name, .. } => starts.push(name),
                    other => self.act(other, now),
                }
            }
            self.start_containers(starts);
            // A sandbox still being created (the pod was deleted meanwhile) would outlive
            // the worker: wait for it, and the next plan stops it.
            if done && !self.sandbox_pending {
                break;
            }
            let sleep = plan.wake_at.map(|at| {
                let wait = at.duration_since(Timestamp::now());
                Duration::try_from(wait).unwrap_or(Duration::ZERO)
            });
            tokio::select! {
                report = self.rx.recv() => {
                    if let Some(report) = report {
                        self.observe(report);
                    }
                    // Take everything else that is already queued before planning again.
                    while let Ok(report) = self.rx.try_recv() {
                        self.observe(report);
                    }
                }
                changed = delete.changed(), if self.pod.metadata.deletion_timestamp.is_none() => {
                    if changed.is_ok() {
                        let requested = *delete.borrow_and_update();
                        if let Some(grace) = requested {
                            self.mark_deleted(grace);
                        }
                    }
                }
                _ = sleep_for(sleep) => {}
            }
        }
        for live in self.live.values() {
            live.probes.cancel();
        }
        self.sink.finished(&self.pod);
    }

    fn mark_deleted(&mut self, grace: u32) {
        let spec_grace = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        let grace = if grace == u32::MAX {
            spec_grace
        } else {
            i64::from(grace)
        };
        self.pod.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        self.pod.metadata.deletion_grace_period_seconds = Some(grace);
    }

    fn publish(&mut self, status: PodStatus) {
        if self.pod.status.as_ref() == Some(&status) {
            return;
        }
        self.pod.status = Some(status);
        self.sink.status(&self.pod);
        let _ = self.published.send(self.pod.clone());
    }

    fn container(&self, name: &str) -> Option<(Container, ContainerKind)> {
        let spec = self.pod.spec.as_ref()?;
        if let Some(c) = spec.containers.iter().find(|c| c.name == name) {
            return Some((c.clone(), ContainerKind::Main));
        }
        let c = spec
            .init_containers
            .as_ref()?
            .iter()
            .find(|c| c.name == name)?;
        let kind = if c.restart_policy.as_deref() == Some("Always") {
            ContainerKind::Sidecar
        } else {
            ContainerKind::RegularInit
        };
        Some((c.clone(), kind))
    }

    fn act(&mut self, action: Action, now: Timestamp) {
        match action {
            Action::CreateSandbox => self.create_sandbox(),
            Action::StartContainer { name, .. } => self.start_containers(vec![name]),
            Action::BeginTermination { cause, grace } => {
                self.obs.termination = Some(Termination {
                    cause,
                    started_at: now,
                    grace,
                });
            }
            Action::RunPreStop { name, timeout } => self.run_pre_stop(name, timeout, now),
            Action::StopContainer {
                name,
                grace,
                reason,
            } => self.stop_container(name, grace, reason, now),
            Action::StopSandbox => self.stop_sandbox(),
            Action::Event(event) => self.sink.event(&self.pod, &event),
            Action::Done => {}
        }
    }

    fn create_sandbox(&mut self) {
        if self.sandbox_pending || self.obs.sandbox != SandboxState::None {
            return;
        }
        self.sandbox_pending = true;
        let runtime = self.runtime.clone();
        let pod = self.pod.clone();
        let sources = self.sources.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let spec = SandboxSpec::for_pod(&pod);
            let result = match runtime.create_sandbox(&spec).await {
                Ok(sandbox) => match runtime.prepare_volumes(&sandbox, &pod, &sources) {
                    Ok(()) => Ok(sandbox),
                    Err(err) => {
                        let _ = runtime.stop_sandbox(&sandbox).await;
                        Err(err.to_string())
                    }
                },
                Err(err) => Err(err.to_string()),
            };
            let _ = tx.send(Report::SandboxReady(result));
        });
    }

    /// Starts containers one after another in one task, each with its postStart hook, as
    /// the kubelet does within one sync (S3): the next start waits for the previous hook.
    fn start_containers(&mut self, names: Vec<String>) {
        let Some(sandbox) = self.sandbox.clone() else {
            return;
        };
        let mut batch = Vec::new();
        for name in names {
            let Some((container, _kind)) = self.container(&name) else {
                continue;
            };
            let obs = self.obs.containers.entry(name.clone()).or_default();
            if obs.in_flight {
                continue;
            }
            obs.in_flight = true;
            let attempt = obs.restart_count + u32::from(obs.current.is_some());
            batch.push((container, attempt));
        }
        if batch.is_empty() {
            return;
        }
        let runtime = self.runtime.clone();
        let pod = self.pod.clone();
        let sources = self.sources.clone();
        let node_name = self.config.node_name.clone();
        let tx = self.tx.clone();
        let hook_timeout = Duration::from_secs(
            self.pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30)
                .max(0) as u64,
        )
        // postStart has no timeout of its own in Kubernetes; bound it generously so a
        // stuck hook cannot wedge the pod forever.
        .max(Duration::from_secs(120));
        tokio::spawn(async move {
            let mut ctx = ResolveContext::new(&node_name, &sources);
            ctx.pod_ip = sandbox.pod_ip().to_string();
            ctx.host_ip = sandbox.host_ip().to_string();
            for (container, attempt) in batch {
                let name = container.name.clone();
                let post_start = container
                    .lifecycle
                    .as_ref()
                    .and_then(|l| l.post_start.clone());
                let started = async {
                    let spec = runtime.resolve(&sandbox, &pod, &container, &ctx)?;
                    let handle = runtime.start_container(&sandbox, &spec, attempt).await?;
                    let access = runtime.access(&sandbox, &handle);
                    Ok(Started {
                        started_at: handle.started_at(),
                        access,
                        handle,
                        image: container.image.clone().unwrap_or_default(),
                        has_post_start: post_start.is_some(),
                    })
                }
                .await;
                let hook = match (&started, post_start) {
                    (Ok(s), Some(handler)) => {
                        Some((s.access.clone(), container_id(&s.handle), handler))
                    }
                    _ => None,
                };
                let _ = tx.send(Report::Started {
                    name: name.clone(),
                    result: started,
                });
                if let Some((access, id, handler)) = hook {
                    let ports = container.ports.clone().unwrap_or_default();
                    let result = hook::run_hook(&handler, access.as_ref(), &ports, hook_timeout)
                        .await
                        .map_err(|e| hook::failure_message(&handler, &name, &pod, &e));
                    let _ = tx.send(Report::PostStart { name, id, result });
                }
            }
        });
    }

    fn run_pre_stop(&mut self, name: String, timeout: Duration, now: Timestamp) {
        let Some(live) = self.live.get(&name) else {
            return;
        };
        let Some(handler) = self
            .container(&name)
            .and_then(|(c, _)| c.lifecycle.and_then(|l| l.pre_stop))
        else {
            return;
        };
        let ports = self.ports(&name);
        if let Some(obs) = self.obs.containers.get_mut(&name) {
            obs.pre_stop = HookState::Running { since: now };
        }
        let access = live.access.clone();
        let tx = self.tx.clone();
        let pod = self.pod.clone();
        tokio::spawn(async move {
            let result = hook::run_hook(&handler, access.as_ref(), &ports, timeout).await;
            // A preStop cut short by the grace period is not an error event (as the kubelet).
            let result = match result {
                Err(err) if !err.is_timeout() => {
                    Err(hook::failure_message(&handler, &name, &pod, &err))
                }
                _ => Ok(()),
            };
            let _ = tx.send(Report::PreStop { name, result });
        });
    }

    fn stop_container(
        &mut self,
        name: String,
        grace: Duration,
        reason: StopReason,
        now: Timestamp,
    ) {
        let Some(live) = self.live.get(&name) else {
            return;
        };
        let Some(obs) = self.obs.containers.get_mut(&name) else {
            return;
        };
        if obs.stop.is_some() {
            return;
        }
        obs.stop = Some(StopIssued { at: now, grace });
        tracing::debug!(container = %name, ?grace, ?reason, "stopping container");
        let runtime = self.runtime.clone();
        let handle = live.handle.clone();
        // The exit itself is reported by the instance's wait task.
        tokio::spawn(async move {
            runtime.stop_container(&handle, grace).await;
        });
    }

    fn stop_sandbox(&mut self) {
        if self.obs.sandbox != SandboxState::Ready {
            return;
        }
        let Some(sandbox) = self.sandbox.take() else {
            return;
        };
        for live in self.live.values() {
            live.probes.cancel();
        }
        let runtime = self.runtime.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            if let Err(err) = runtime.stop_sandbox(&sandbox).await {
                tracing::warn!(%err, "stopping the pod sandbox");
            }
            let _ = tx.send(Report::SandboxStopped);
        });
    }

    fn ports(&self, name: &str) -> Vec<k8s_openapi::api::core::v1::ContainerPort> {
        self.container(name)
            .and_then(|(c, _)| c.ports)
            .unwrap_or_default()
    }

    fn observe(&mut self, report: Report) {
        match report {
            Report::SandboxReady(Ok(sandbox)) => {
                self.sandbox_pending = false;
                set_addresses(&mut self.pod, &sandbox);
                self.sandbox = Some(sandbox);
                self.obs.sandbox = SandboxState::Ready;
            }
            Report::SandboxReady(Err(message)) => {
                self.sandbox_pending = false;
                let event = Event {
                    warning: true,
                    reason: "FailedCreatePodSandBox".into(),
                    message: format!("Failed to create pod sandbox: {message}"),
                    container: None,
                };
                self.sink.event(&self.pod, &event);
                // The next plan asks for the sandbox again; wait a little before it does.
                self.sandbox_pending = true;
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = tx.send(Report::Retry);
                });
            }
            Report::SandboxStopped => {
                self.obs.sandbox = SandboxState::Stopped;
            }
            Report::Started { name, result } => self.observe_started(name, result),
            Report::PostStart { name, id, result } => {
                let now = Timestamp::now();
                let Some(obs) = self.obs.containers.get_mut(&name) else {
                    return;
                };
                obs.in_flight = false;
                if let Some(instance) = obs.current.as_mut().filter(|i| i.id == id) {
                    instance.post_start = match result {
                        Ok(()) => HookState::Succeeded { finished_at: now },
                        Err(message) => HookState::Failed {
                            finished_at: now,
                            message,
                        },
                    };
                }
                self.start_probers(&name, &id, false);
            }
            Report::Exited { name, id, exit } => {
                if let Some(live) = self.live.get(&name).filter(|l| l.id == id) {
                    live.probes.cancel();
                    self.sink.log_closed(self.runtime.log_path(&live.handle));
                    self.live.remove(&name);
                }
                if let Some(obs) = self.obs.containers.get_mut(&name)
                    && let Some(instance) = obs.current.as_mut().filter(|i| i.id == id)
                {
                    instance.state = InstanceState::Exited(exit.into());
                }
            }
            Report::PreStop { name, result } => {
                let now = Timestamp::now();
                if let Err(message) = &result {
                    let event = Event {
                        warning: true,
                        reason: "FailedPreStopHook".into(),
                        message: message.clone(),
                        container: Some(name.clone()),
                    };
                    self.sink.event(&self.pod, &event);
                }
                if let Some(obs) = self.obs.containers.get_mut(&name) {
                    obs.pre_stop = match result {
                        Ok(()) => HookState::Succeeded { finished_at: now },
                        Err(message) => HookState::Failed {
                            finished_at: now,
                            message,
                        },
                    };
                }
            }
            Report::Probe(update) => self.observe_probe(update),
            Report::Retry => self.sandbox_pending = false,
        }
    }

    fn observe_started(&mut self, name: String, result: Result<Started, StartError>) {
        let Some(obs) = self.obs.containers.get_mut(&name) else {
            return;
        };
        match result {
            Err(err) => {
                obs.in_flight = false;
                obs.last_start_error = Some(err);
            }
            Ok(started) => {
                let id = container_id(&started.handle);
                if let Some(old) = obs.current.take() {
                    if let InstanceState::Exited(exited) = old.state {
                        obs.previous = Some(exited);
                    }
                    obs.restart_count += 1;
                }
                obs.last_start_error = None;
                obs.stop = None;
                obs.pre_stop = HookState::NotRun;
                obs.in_flight = started.has_post_start;
                obs.current = Some(Instance {
                    id: id.clone(),
                    image: started.image.clone(),
                    state: InstanceState::Running {
                        started_at: started.started_at,
                    },
                    post_start: if started.has_post_start {
                        HookState::Running {
                            since: started.started_at,
                        }
                    } else {
                        HookState::NotRun
                    },
                    probes: Default::default(),
                });
                self.track(&name, &started.handle, started.access.clone(), Seed::None);
                for (reason, message) in [
                    ("Created", format!("Created container: {name}")),
                    ("Started", format!("Started container {name}")),
                ] {
                    let event = Event {
                        warning: false,
                        reason: reason.into(),
                        message,
                        container: Some(name.clone()),
                    };
                    self.sink.event(&self.pod, &event);
                }
                // With a postStart hook, probing starts once the hook has returned.
                if !started.has_post_start {
                    self.start_probers(&name, &id, false);
                }
            }
        }
    }

    /// Keeps a running instance: its live parts, its log for readers, and a task that
    /// reports its exit.
    fn track(
        &mut self,
        name: &str,
        handle: &ContainerHandle,
        access: Arc<dyn ContainerAccess>,
        readiness_seed: Seed,
    ) {
        let id = container_id(handle);
        // Probe initial delays count from the process start, on tokio's clock.
        let age = Timestamp::now().duration_since(handle.started_at());
        let started = tokio::time::Instant::now()
            .checked_sub(Duration::try_from(age).unwrap_or_default())
            .unwrap_or_else(tokio::time::Instant::now);
        self.live.insert(
            name.to_string(),
            Live {
                id: id.clone(),
                started,
                handle: handle.clone(),
                access,
                probes: CancellationToken::new(),
                readiness_seed,
            },
        );
        self.sink
            .log_file(&self.pod, name, self.runtime.log_path(handle));
        let runtime = self.runtime.clone();
        let handle = handle.clone();
        let tx = self.tx.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let exit = runtime.wait(&handle).await;
            let _ = tx.send(Report::Exited { name, id, exit });
        });
    }

    /// What the runtime found of a container, for [`adopt`].
    fn found(&self, handle: &ContainerHandle) -> adopt::Found {
        let uid = self.pod.metadata.uid.as_deref().unwrap_or_default();
        let previous = handle
            .attempt()
            .checked_sub(1)
            .and_then(|a| self.runtime.recorded_exit(uid, handle.name(), a));
        adopt::Found {
            id: container_id(handle),
            attempt: handle.attempt(),
            image: handle.spec().image.clone(),
            started_at: handle.started_at(),
            exit: handle.exit().cloned().map(Into::into),
            previous: previous.map(Into::into),
        }
    }

    /// Takes over the pod's sandbox and containers if a previous agent left them on disk:
    /// a running sandbox with everything in it as it is, or, with the sandbox gone, a
    /// fresh start (§9) or the end of a `Never` pod that already ran.
    async fn adopt(&mut self) {
        let Some(uid) = self.pod.metadata.uid.clone() else {
            return;
        };
        let Some(sb) = self.runtime.find_sandbox(&uid) else {
            return;
        };
        let spec = self.pod.spec.as_ref();
        let names: Vec<String> = spec
            .into_iter()
            .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
            .map(|c| c.name.clone())
            .collect();
        let mut handles = BTreeMap::new();
        let mut found = BTreeMap::new();
        for name in names {
            if let Some(handle) = self.runtime.adopt_newest(&sb, &name).await {
                found.insert(name.clone(), self.found(&handle));
                handles.insert(name, handle);
            }
        }
        let now = Timestamp::now();
        if !sb.is_running() {
            // Whatever survived the sandbox goes too, as in the kubelet; then the exits
            // of the old instances are all known.
            if let Err(err) = self.runtime.stop_sandbox(&sb).await {
                tracing::warn!(%err, "removing the state of a lost pod sandbox");
            }
            for (name, handle) in &handles {
                let exit = self.runtime.wait(handle).await;
                if let Some(f) = found.get_mut(name) {
                    f.exit = Some(exit.into());
                }
            }
            self.obs = adopt::lost_pod(&self.pod, found, now);
            tracing::info!(
                pod = ?self.pod.metadata.name,
                restart = self.obs.termination.is_none(),
                "the pod's sandbox is gone"
            );
            return;
        }
        self.obs = adopt::running_pod(&self.pod, found, now);
        for (name, handle) in handles {
            if handle.exit().is_some() {
                continue;
            }
            let probes = self
                .obs
                .containers
                .get(&name)
                .and_then(|o| o.current.as_ref())
                .map(|i| i.probes)
                .unwrap_or_default();
            let seed = if probes.readiness == Some(ProbeResult::Success) {
                Seed::Fresh
            } else {
                Seed::None
            };
            let access = self.runtime.access(&sb, &handle);
            self.track(&name, &handle, access, seed);
            let started = probes.startup == Some(ProbeResult::Success);
            self.start_probers(&name, &container_id(&handle), started);
        }
        tracing::info!(pod = ?self.pod.metadata.name, "adopted the pod's sandbox and containers");
        set_addresses(&mut self.pod, &sb);
        self.sandbox = Some(sb);
    }

    /// Starts the probe workers for an instance: the startup probe first, the others once
    /// it has succeeded (`after_startup`).
    fn start_probers(&mut self, name: &str, id: &str, after_startup: bool) {
        let Some((container, _)) = self.container(name) else {
            return;
        };
        let Some(live) = self.live.get(name).filter(|l| l.id == id) else {
            return;
        };
        let ports = container.ports.clone().unwrap_or_default();
        let mut kinds = Vec::new();
        if !after_startup && let Some(p) = container.startup_probe.clone() {
            kinds.push((ProbeKind::Startup, p));
        } else {
            if let Some(p) = container.liveness_probe.clone() {
                kinds.push((ProbeKind::Liveness, p));
            }
            if let Some(p) = container.readiness_probe.clone() {
                kinds.push((ProbeKind::Readiness, p));
            }
        }
        for (kind, probe) in kinds {
            let (tx, mut rx) = mpsc::unbounded_channel();
            probe::spawn_prober_at(
                probe::ProberSpec {
                    container: name.to_string(),
                    instance: id.to_string(),
                    kind,
                    probe,
                    ports: ports.clone(),
                    access: live.access.clone(),
                    cancel: live.probes.child_token(),
                    updates: tx,
                },
                live.started,
            );
            let reports = self.tx.clone();
            tokio::spawn(async move {
                while let Some(update) = rx.recv().await {
                    if reports.send(Report::Probe(update)).is_err() {
                        break;
                    }
                }
            });
        }
    }

    fn observe_probe(&mut self, update: ProbeUpdate) {
        if let Some(event) = update.event.clone() {
            self.sink.event(&self.pod, &event);
        }
        let Some(result) = self.through_seed(&update) else {
            return;
        };
        let name = update.container.clone();
        let Some(obs) = self.obs.containers.get_mut(&name) else {
            return;
        };
        let Some(instance) = obs.current.as_mut().filter(|i| i.id == update.instance) else {
            return;
        };
        match update.kind {
            ProbeKind::Startup => instance.probes.startup = Some(result),
            ProbeKind::Readiness => instance.probes.readiness = Some(result),
            ProbeKind::Liveness => instance.probes.liveness = Some(result),
        }
        if update.kind == ProbeKind::Startup && result == ProbeResult::Success {
            let id = update.instance.clone();
            self.start_probers(&name, &id, true);
        }
    }

    /// The result a probe update stands for, given a carried-over readiness ([`Seed`]).
    fn through_seed(&mut self, update: &ProbeUpdate) -> Option<ProbeResult> {
        if update.kind != ProbeKind::Readiness {
            return update.result;
        }
        let Some(live) = self
            .live
            .get_mut(&update.container)
            .filter(|l| l.id == update.instance)
        else {
            return update.result;
        };
        let (seed, result) = live.readiness_seed.apply(update);
        live.readiness_seed = seed;
        result
    }
}

async fn sleep_for(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// The `containerID` reported in status: `<runtime>://<id>`, as Kubernetes prints it.
fn container_id(handle: &ContainerHandle) -> String {
    format!("tandem://{}", handle.id())
}

/// `status.podIP(s)` and `status.hostIP(s)` from the sandbox (the planner carries them).
fn set_addresses(pod: &mut Pod, sandbox: &Sandbox) {
    use k8s_openapi::api::core::v1::{HostIP, PodIP};
    let status = pod.status.get_or_insert_with(Default::default);
    let ip = sandbox.pod_ip().to_string();
    let host = sandbox.host_ip().to_string();
    status.pod_ip = Some(ip.clone());
    status.pod_ips = Some(vec![PodIP { ip }]);
    status.host_ip = Some(host.clone());
    status.host_ips = Some(vec![HostIP { ip: host }]);
}
