//! Main containers after initialization: restart policy R2, probe and definition kills,
//! and the completion trigger C1 (part of `computePodActions`).

use super::init::{Stop, kill_grace};
use super::model::{HookState, InstanceState, ProbeResult, StopReason};
use super::view::{Entry, PodView, RestartPolicy};

/// What the main-container pass decided.
#[derive(Debug, Default)]
pub struct MainsPass<'a> {
    /// Main containers to (re)start, in spec order.
    pub starts: Vec<Entry<'a>>,
    pub stops: Vec<Stop>,
    /// C1: no main container is kept running or about to start.
    pub completed: bool,
}

/// R2 (`ShouldContainerBeRestarted`) for a main container that is not running.
fn should_restart(policy: RestartPolicy, exit_code: i32) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => exit_code != 0,
        RestartPolicy::Never => false,
    }
}

pub fn pass<'a>(view: &PodView<'a>) -> MainsPass<'a> {
    let policy = view.restart_policy();
    let restart_on_failure = policy != RestartPolicy::Never;
    let mut out = MainsPass::default();
    let mut keep = 0usize;
    // Kills whose container comes back afterwards count like starts for C1.
    let mut pending_restarts = 0usize;
    for entry in view.mains() {
        let name = entry.name();
        let obs = view.observed(name);
        if obs.in_flight {
            keep += 1;
            continue;
        }
        let Some(inst) = obs.current.as_ref() else {
            out.starts.push(*entry);
            continue;
        };
        match &inst.state {
            InstanceState::Created => out.starts.push(*entry),
            InstanceState::Exited(exited) => {
                // A kill for a changed image restarts whatever the policy says.
                let changed = obs.stop.is_some() && inst.image != entry.image();
                if changed || should_restart(policy, exited.exit_code) {
                    out.starts.push(*entry);
                }
            }
            InstanceState::Running { .. } if obs.stop.is_some() => {
                // An earlier kill is still in progress.
                if restart_on_failure || inst.image != entry.image() {
                    pending_restarts += 1;
                }
            }
            InstanceState::Running { .. } => {
                let kill = if let HookState::Failed { .. } = inst.post_start {
                    Some((
                        StopReason::PostStartHook,
                        "FailedPostStartHook".to_string(),
                        restart_on_failure,
                        kill_grace(view, None),
                    ))
                } else if inst.image != entry.image() {
                    Some((
                        StopReason::DefinitionChanged,
                        format!("Container {name} definition changed"),
                        true,
                        kill_grace(view, None),
                    ))
                } else if inst.probes.liveness == Some(ProbeResult::Failure)
                    && entry.has_liveness_probe()
                {
                    Some((
                        StopReason::LivenessProbe,
                        format!("Container {name} failed liveness probe"),
                        restart_on_failure,
                        kill_grace(view, entry.spec.liveness_probe.as_ref()),
                    ))
                } else if inst.probes.startup == Some(ProbeResult::Failure)
                    && entry.startup_probe().is_some()
                {
                    Some((
                        StopReason::StartupProbe,
                        format!("Container {name} failed startup probe"),
                        restart_on_failure,
                        kill_grace(view, entry.startup_probe()),
                    ))
                } else {
                    None
                };
                match kill {
                    None => keep += 1,
                    Some((reason, message, restart, grace)) => {
                        // The kubelet spells out the intent when the container comes back;
                        // the postStart kill keeps its bare message.
                        let message = if restart && reason != StopReason::PostStartHook {
                            format!("{message}, will be restarted")
                        } else {
                            message
                        };
                        if restart {
                            pending_restarts += 1;
                        }
                        out.stops.push(Stop {
                            name: name.to_string(),
                            reason,
                            grace,
                            message,
                        });
                    }
                }
            }
        }
    }
    out.completed = keep == 0 && out.starts.is_empty() && pending_restarts == 0;
    out
}
