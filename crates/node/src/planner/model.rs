//! The planner's inputs and outputs.
//!
//! Everything here is plain data: the pod worker fills an [`Observation`] from what the
//! runtime, the probers and the hook runners reported, calls [`super::plan`], executes the
//! returned [`Action`]s and keeps the returned [`Backoff`] table for the next call.
//! Times are wall-clock `jiff::Timestamp`s supplied by the caller; the planner never reads
//! a clock.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

/// Which list a container comes from, and whether it is a native sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerKind {
    /// `spec.initContainers[i]` without `restartPolicy`.
    RegularInit,
    /// `spec.initContainers[i]` with `restartPolicy: Always`.
    Sidecar,
    /// `spec.containers[i]`.
    Main,
}

/// A finished container instance, as the runtime reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exited {
    pub exit_code: i32,
    /// Signal that ended the process, if any (exit code is then 128 + signal).
    pub signal: Option<i32>,
    /// `Completed` (exit 0), `Error`, `ContainerCannotRun`, `OOMKilled`, ...
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
}

/// Runtime state of the newest instance of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceState {
    /// Created but not (yet) running: the runtime failed to start it, or a start is in flight.
    Created,
    Running {
        started_at: Timestamp,
    },
    Exited(Exited),
}

/// Progress of a lifecycle hook (postStart for the current instance, preStop during
/// termination).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HookState {
    /// No hook defined, or not started yet.
    #[default]
    NotRun,
    Running {
        since: Timestamp,
    },
    Succeeded {
        finished_at: Timestamp,
    },
    Failed {
        finished_at: Timestamp,
        message: String,
    },
}

/// Latest result of one probe for the current instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    Success,
    Failure,
    Unknown,
}

/// Latest results of the three probes for the current instance (None = no result yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProbeResults {
    pub startup: Option<ProbeResult>,
    pub readiness: Option<ProbeResult>,
    pub liveness: Option<ProbeResult>,
}

/// The newest instance of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Runtime container ID, reported as `containerID` (`tandem://...`).
    pub id: String,
    /// Image the instance was started from (sidecar image changes restart it, R4).
    pub image: String,
    pub state: InstanceState,
    pub post_start: HookState,
    pub probes: ProbeResults,
}

/// Why the last start attempt did not produce a running instance
/// (`CreateContainerConfigError`, `CreateContainerError`, `PostStartHookError`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartError {
    pub reason: String,
    pub message: String,
}

/// Stop request already handed to the runtime for the current instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopIssued {
    pub at: Timestamp,
    pub grace: Duration,
}

/// Everything observed about one container (looked up by name).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerObservation {
    /// Newest instance, if any was ever created.
    pub current: Option<Instance>,
    /// The instance before `current`, once it has exited (`lastState.terminated`).
    pub previous: Option<Exited>,
    pub restart_count: u32,
    /// An action for this container is executing (start + postStart, or stop).
    /// The planner issues nothing new for it except termination steps. While a start has
    /// no instance yet, the container counts as alive for termination ordering; while
    /// postStart runs (`post_start = Running`), the container is not yet started (S2).
    pub in_flight: bool,
    pub last_start_error: Option<StartError>,
    /// preStop progress during pod termination.
    pub pre_stop: HookState,
    /// Set once a stop (signal + grace) was sent to `current`; reset to `None` when a new
    /// instance replaces `current`.
    pub stop: Option<StopIssued>,
}

/// Why the pod is being killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillCause {
    /// The API object was deleted (deletionTimestamp set).
    Deleted,
    /// restartPolicy Never/OnFailure and every main container is done (C1).
    Completed,
    /// restartPolicy Never and a regular init container failed (S7).
    InitFailed,
}

/// A pod-level kill in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Termination {
    pub cause: KillCause,
    pub started_at: Timestamp,
    /// The single shared budget (D4).
    pub grace: Duration,
}

/// The pod sandbox (namespaces holder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SandboxState {
    #[default]
    None,
    Ready,
    Stopped,
}

/// A CrashLoopBackOff record (B2), keyed by [`backoff_key`](super::backoff_key).
///
/// Entries are created and updated only by the planner; the worker just keeps the table.
/// Keys ending in [`START_ERROR_SUFFIX`](super::START_ERROR_SUFFIX) pace retries of
/// containers whose start failed without producing an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffEntry {
    pub delay: Duration,
    pub last_update: Timestamp,
    /// `finishedAt` of the exit for which the `BackOff` event was already emitted, so one
    /// crash yields one event however often the planner is called while waiting.
    pub reported: Option<Timestamp>,
}

/// Backoff numbers (B1). Tests may shorten them; the defaults are Kubernetes'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
        }
    }
}

/// Backoff table for one pod.
pub type Backoff = BTreeMap<String, BackoffEntry>;

/// Everything the pod worker knows right now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observation {
    pub sandbox: SandboxState,
    pub containers: BTreeMap<String, ContainerObservation>,
    /// Set by the worker when it executes [`Action::BeginTermination`]. Deletion itself is
    /// read from the pod's `metadata.deletionTimestamp`/`deletionGracePeriodSeconds`.
    pub termination: Option<Termination>,
}

/// Why a single container (not the pod) is being stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Pod termination (deletion or completion): event `Killing` "Stopping container X".
    PodTermination,
    StartupProbe,
    LivenessProbe,
    DefinitionChanged,
    /// postStart hook failed.
    PostStartHook,
}

/// A Kubernetes event to record (`type`, `reason`, `message`), about `container` if set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub warning: bool,
    pub reason: String,
    pub message: String,
    pub container: Option<String>,
}

/// One step for the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    CreateSandbox,
    /// Create + start the container and run its postStart hook. Several starts in one plan
    /// are in spec order; the kubelet runs them one after another.
    StartContainer {
        name: String,
        kind: ContainerKind,
    },
    /// Begin a pod-level kill with the given budget; the worker records a [`Termination`]
    /// with `started_at` = the plan's `now`. The kill steps follow in the same plan. Issued
    /// again (cause `Deleted`) when a deletion ends the budget earlier than the current one.
    BeginTermination {
        cause: KillCause,
        grace: Duration,
    },
    /// Run the container's preStop hook, waiting at most `timeout`.
    RunPreStop {
        name: String,
        timeout: Duration,
    },
    /// Send the stop signal now and SIGKILL after `grace` (CRI StopContainer).
    StopContainer {
        name: String,
        grace: Duration,
        reason: StopReason,
    },
    StopSandbox,
    Event(Event),
    /// The pod is finished: every container stopped, sandbox gone, status terminal.
    Done,
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// The status to report (phase, conditions, container statuses).
    pub status: k8s_openapi::api::core::v1::PodStatus,
    /// The backoff table to keep for the next call.
    pub backoff: Backoff,
    /// Call the planner again at this time even if nothing new is observed
    /// (backoff expiry, termination deadline).
    pub wake_at: Option<Timestamp>,
}
