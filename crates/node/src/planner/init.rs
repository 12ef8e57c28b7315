//! The init-list walk (§1.2, a rewrite of `computeInitContainerActions`): ordered start of
//! regular init containers and sidecars, sidecar restarts (S6, R1, R4) and the
//! initialized decision that gates main containers (S3, S5).

use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;

use super::model::{ContainerKind, HookState, Instance, InstanceState, ProbeResult, StopReason};
use super::view::{Entry, MIN_STOP_GRACE, PodView, RestartPolicy, secs_to_duration};

/// A single-container stop decided by a sync (not a pod kill).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub name: String,
    pub reason: StopReason,
    pub grace: Duration,
    /// Text of the `Killing` event.
    pub message: String,
}

/// What the walk decided.
#[derive(Debug, Default)]
pub struct InitWalk {
    /// Indices into `spec.initContainers` to start, ascending.
    pub starts: Vec<usize>,
    pub stops: Vec<Stop>,
    /// A regular init container failed in a `Never` pod (S7): kill the pod.
    pub kill_pod: bool,
    /// Every init entry is done (or the pod ran main containers before, S5).
    pub initialized: bool,
}

/// Grace of a single-container kill (`setTerminationGracePeriod`): the probe's own
/// `terminationGracePeriodSeconds` for probe kills, else the pod's; never below 2 s.
pub fn kill_grace(view: &PodView<'_>, probe: Option<&Probe>) -> Duration {
    let grace = probe
        .and_then(|p| p.termination_grace_period_seconds)
        .map(secs_to_duration)
        .unwrap_or_else(|| view.tgps());
    grace.max(MIN_STOP_GRACE)
}

pub fn walk(view: &PodView<'_>) -> InitWalk {
    let init = view.init();
    if init.is_empty() {
        return InitWalk {
            initialized: true,
            ..InitWalk::default()
        };
    }
    let mut out = InitWalk {
        initialized: view.any_main_active(),
        ..InitWalk::default()
    };
    let mut prev = out.initialized;
    let mut any_instance = false;
    for (i, entry) in init.iter().enumerate().rev() {
        let obs = view.observed(entry.name());
        // A start or stop is executing: the entry has been reached, nothing to add now.
        if obs.in_flight {
            any_instance = true;
            prev = true;
            continue;
        }
        let Some(inst) = obs.current.as_ref() else {
            if prev && entry.kind == ContainerKind::Sidecar {
                out.starts.push(i);
            }
            continue;
        };
        any_instance = true;
        if prev && entry.kind == ContainerKind::RegularInit {
            // Ran before the pod was initialized; regular init never re-runs (S5).
            continue;
        }
        let last = i + 1 == init.len();
        match &inst.state {
            InstanceState::Created => out.starts.push(i),
            InstanceState::Running { .. } => {
                if entry.kind == ContainerKind::Sidecar && obs.stop.is_none() {
                    running_sidecar(view, i, entry, inst, prev, last, &mut out);
                }
            }
            InstanceState::Exited(exited) => match entry.kind {
                // R1/S6: a sidecar restarts whatever its exit code and the pod policy.
                ContainerKind::Sidecar => out.starts.push(i),
                _ if exited.exit_code != 0 => {
                    if view.restart_policy() == RestartPolicy::Never {
                        out.kill_pod = true;
                        out.starts.clear();
                        out.stops.clear();
                        return out;
                    }
                    out.starts.push(i);
                }
                _ => advance(i, last, prev, &mut out),
            },
        }
        prev = true;
    }
    if !any_instance && !out.initialized {
        out.starts.push(0);
    }
    out.starts.sort_unstable();
    out.starts.dedup();
    out
}

/// Entry `i` is done: the pod is initialized after the last entry, else the next entry
/// starts unless it was reached before.
fn advance(i: usize, last: bool, prev: bool, out: &mut InitWalk) {
    if last {
        out.initialized = true;
    } else if !prev {
        out.starts.push(i + 1);
    }
}

fn running_sidecar(
    view: &PodView<'_>,
    i: usize,
    entry: &Entry<'_>,
    inst: &Instance,
    prev: bool,
    last: bool,
    out: &mut InitWalk,
) {
    let name = entry.name();
    match inst.post_start {
        // S2: a failed postStart kills the container; it is restarted like a crash.
        HookState::Failed { .. } => {
            out.stops.push(Stop {
                name: name.to_string(),
                reason: StopReason::PostStartHook,
                grace: kill_grace(view, None),
                message: "FailedPostStartHook".to_string(),
            });
            return;
        }
        HookState::Running { .. } => return,
        HookState::NotRun | HookState::Succeeded { .. } => {}
    }
    if let Some(probe) = entry.startup_probe() {
        match inst.probes.startup {
            Some(ProbeResult::Success) => {}
            Some(ProbeResult::Failure) => {
                out.stops.push(Stop {
                    name: name.to_string(),
                    reason: StopReason::StartupProbe,
                    grace: kill_grace(view, Some(probe)),
                    message: format!("Init container {name} failed startup probe"),
                });
                return;
            }
            // No result yet, or Unknown: the next entry waits.
            None | Some(ProbeResult::Unknown) => return,
        }
    }
    advance(i, last, prev, out);
    // R4: only the image of a sidecar can change; the spec hash covers name + image.
    if inst.image != entry.image() {
        out.stops.push(Stop {
            name: name.to_string(),
            reason: StopReason::DefinitionChanged,
            grace: kill_grace(view, None),
            message: format!("Init container {name} definition changed"),
        });
        return;
    }
    if entry.has_liveness_probe() && inst.probes.liveness == Some(ProbeResult::Failure) {
        out.stops.push(Stop {
            name: name.to_string(),
            reason: StopReason::LivenessProbe,
            grace: kill_grace(view, entry.spec.liveness_probe.as_ref()),
            message: format!("Init container {name} failed liveness probe"),
        });
    }
}
