//! The pod status to report: container statuses (§2.3, S4, §6.2), phase (§5.1, D7),
//! conditions (§5.2), start time and QoS class.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodCondition, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::{self, ConditionInput};
use super::model::{
    ContainerKind, ContainerObservation, Exited, HookState, InstanceState, ProbeResult,
    SandboxState,
};
use super::outcome::WaitingReason;
use super::phase::{self, FAILED, PENDING, RUNNING};
use super::qos;
use super::view::{Entry, PodView, RestartPolicy, is_started};

/// Reason and message of a container that the kubelet could not find at the end of a kill.
pub const STATUS_UNKNOWN_REASON: &str = "ContainerStatusUnknown";
pub const STATUS_UNKNOWN_MESSAGE: &str =
    "The container could not be located when the pod was terminated";

/// What [`build`] needs besides the view.
pub struct StatusInput<'a> {
    /// Reasons the sync left for containers (CrashLoopBackOff, start errors).
    pub waiting: &'a std::collections::BTreeMap<String, WaitingReason>,
    /// A pod kill is in progress or done (reasons of a sync no longer apply).
    pub terminating: bool,
    /// The kill is finished: no container left alive.
    pub terminal: bool,
    pub previous: Option<&'a PodStatus>,
}

/// Whether the kubelet turns this container's status into Waiting with a cached reason:
/// only containers the pod restart policy would restart (`ShouldContainerBeRestarted`,
/// §6.2), and never an init container that exited 0.
fn shows_waiting(view: &PodView<'_>, entry: &Entry<'_>, obs: &ContainerObservation) -> bool {
    if view.is_deleted() {
        return false;
    }
    match obs.current.as_ref().map(|i| &i.state) {
        None | Some(InstanceState::Created) => true,
        Some(InstanceState::Running { .. }) => false,
        Some(InstanceState::Exited(e)) => {
            if entry.is_init() && e.exit_code == 0 {
                return false;
            }
            match view.restart_policy() {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => e.exit_code != 0,
                RestartPolicy::Never => false,
            }
        }
    }
}

fn terminated(e: &Exited, container_id: Option<&str>) -> ContainerStateTerminated {
    ContainerStateTerminated {
        container_id: container_id.map(str::to_string),
        exit_code: e.exit_code,
        finished_at: Some(Time(e.finished_at)),
        message: e.message.clone(),
        reason: Some(e.reason.clone()).filter(|r| !r.is_empty()),
        signal: e.signal,
        started_at: e.started_at.map(Time),
    }
}

fn waiting(reason: Option<&str>, message: Option<&str>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: reason.map(str::to_string),
            message: message.map(str::to_string).filter(|m| !m.is_empty()),
        }),
        ..ContainerState::default()
    }
}

/// The API status of one container.
pub fn container_status(
    view: &PodView<'_>,
    entry: &Entry<'_>,
    input: &StatusInput<'_>,
) -> ContainerStatus {
    let obs = view.observed(entry.name());
    let inst = obs.current.as_ref();
    let mut reason = if input.terminating {
        None
    } else {
        input.waiting.get(entry.name()).cloned()
    };
    // A postStart failure leaves PostStartHookError until the next start (S2).
    if reason.is_none()
        && !input.terminating
        && let Some(i) = inst
        && matches!(i.state, InstanceState::Exited(_))
        && let HookState::Failed { message, .. } = &i.post_start
    {
        reason = Some(WaitingReason {
            reason: "PostStartHookError".to_string(),
            message: message.clone(),
        });
    }
    let reason = reason.filter(|_| shows_waiting(view, entry, obs));
    let default_reason = if view.init().is_empty() {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let previous = obs.previous.as_ref().map(|e| ContainerState {
        terminated: Some(terminated(e, None)),
        ..ContainerState::default()
    });
    let container_id = inst.map(|i| i.id.as_str());
    let (state, last_state) = match (inst.map(|i| &i.state), &reason) {
        (_, Some(r)) if !matches!(inst.map(|i| &i.state), Some(InstanceState::Exited(_))) => {
            (waiting(Some(&r.reason), Some(&r.message)), previous)
        }
        (Some(InstanceState::Exited(e)), Some(r)) => (
            waiting(Some(&r.reason), Some(&r.message)),
            Some(ContainerState {
                terminated: Some(terminated(e, container_id)),
                ..ContainerState::default()
            }),
        ),
        (None, _) => (waiting(Some(default_reason), None), previous),
        (Some(InstanceState::Created), _) => (waiting(None, None), previous),
        (Some(InstanceState::Running { started_at }), _) => (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(*started_at)),
                }),
                ..ContainerState::default()
            },
            previous,
        ),
        (Some(InstanceState::Exited(e)), None) => (
            ContainerState {
                terminated: Some(terminated(e, container_id)),
                ..ContainerState::default()
            },
            previous,
        ),
    };
    let started = inst.is_some_and(|i| is_started(entry, i));
    let ready = match (entry.kind, inst.map(|i| &i.state)) {
        (ContainerKind::RegularInit, Some(InstanceState::Exited(e))) => e.exit_code == 0,
        (ContainerKind::RegularInit, _) => false,
        _ => {
            started
                && (!entry.has_readiness_probe()
                    || inst.is_some_and(|i| i.probes.readiness == Some(ProbeResult::Success)))
        }
    };
    ContainerStatus {
        name: entry.name().to_string(),
        image: inst.map_or(entry.image(), |i| i.image.as_str()).to_string(),
        image_id: inst.map(|i| i.image.clone()).unwrap_or_default(),
        container_id: container_id.map(str::to_string),
        ready,
        started: Some(started),
        restart_count: i32::try_from(obs.restart_count).unwrap_or(i32::MAX),
        state: Some(state),
        last_state: Some(last_state.unwrap_or_default()),
        ..ContainerStatus::default()
    }
}

/// `hasPodInitialized` of the status manager: decides whether main containers that never
/// terminated are recorded as `ContainerStatusUnknown` at the end of a kill.
fn has_pod_initialized(
    spec: &PodSpec,
    init: &[ContainerStatus],
    mains: &[ContainerStatus],
) -> bool {
    if spec.init_containers.as_ref().is_none_or(Vec::is_empty) {
        return true;
    }
    let main_moved = mains.iter().any(|s| {
        s.last_state
            .as_ref()
            .is_some_and(|l| l.terminated.is_some())
            || s.state.as_ref().is_some_and(|st| st.waiting.is_none())
    });
    let last_init_done = init.last().is_some_and(|s| {
        s.state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0)
    });
    main_moved || last_init_done
}

fn is_terminal_phase(status: Option<&PodStatus>) -> Option<String> {
    status
        .and_then(|s| s.phase.clone())
        .filter(|p| phase::is_terminal(p))
}

/// Builds the whole pod status.
pub fn build(view: &PodView<'_>, input: &StatusInput<'_>) -> PodStatus {
    let default_spec = PodSpec::default();
    let spec = view.pod.spec.as_ref().unwrap_or(&default_spec);
    let init: Vec<ContainerStatus> = view
        .init()
        .iter()
        .map(|e| container_status(view, e, input))
        .collect();
    let mut mains: Vec<ContainerStatus> = view
        .mains()
        .iter()
        .map(|e| container_status(view, e, input))
        .collect();
    // The kubelet sorts main container statuses by name (§6.1); init ones stay in order.
    mains.sort_by(|a, b| a.name.cmp(&b.name));

    let all: Vec<ContainerStatus> = init.iter().chain(mains.iter()).cloned().collect();
    let mut phase =
        phase::pod_phase(spec, &all, view.any_main_instance(), input.terminal).to_string();
    // A terminal phase, once reported, is final (three-way merge in generateAPIPodStatus;
    // the API server rejects leaving it).
    if let Some(p) =
        is_terminal_phase(input.previous).or_else(|| is_terminal_phase(view.pod.status.as_ref()))
    {
        phase = p;
    }

    let stored = view.pod.status.as_ref();
    let previous_conditions: &[PodCondition] = input
        .previous
        .or(stored)
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let foreign: &[PodCondition] = stored
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let conditions = conditions::build(&ConditionInput {
        spec,
        statuses: &all,
        phase: &phase,
        sandbox_ready: view.obs.sandbox == SandboxState::Ready,
        previous: previous_conditions,
        foreign,
        now: view.now,
    });

    if input.terminal {
        // D7 (`TerminatePod`): containers without a final state are recorded as failed,
        // and a pod that would stay Pending/Running is forced to Failed.
        if has_pod_initialized(spec, &init, &mains) {
            for s in &mut mains {
                if s.state.as_ref().is_some_and(|st| st.terminated.is_none()) {
                    s.state = Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: 137,
                            reason: Some(STATUS_UNKNOWN_REASON.to_string()),
                            message: Some(STATUS_UNKNOWN_MESSAGE.to_string()),
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    });
                }
            }
        }
        if phase == PENDING || phase == RUNNING {
            phase = FAILED.to_string();
        }
    }

    let carried = input.previous.or(stored);
    PodStatus {
        phase: Some(phase),
        conditions: Some(conditions),
        init_container_statuses: (!init.is_empty()).then_some(init),
        container_statuses: Some(mains),
        start_time: Some(
            carried
                .and_then(|s| s.start_time.clone())
                .unwrap_or(Time(view.now)),
        ),
        qos_class: Some(qos::class(spec).to_string()),
        host_ip: carried.and_then(|s| s.host_ip.clone()),
        host_ips: carried.and_then(|s| s.host_ips.clone()),
        pod_ip: carried.and_then(|s| s.pod_ip.clone()),
        pod_ips: carried.and_then(|s| s.pod_ips.clone()),
        nominated_node_name: carried.and_then(|s| s.nominated_node_name.clone()),
        ..PodStatus::default()
    }
}
