//! Pod-level kill (§4 D1–D7, also used for completion C2): preStop hooks of every running
//! container at once, main containers stopped as soon as their hook is done, sidecars in
//! reverse declaration order after all main containers, one shared budget, 2 s grace floor.

use super::model::{
    Action, ContainerKind, HookState, InstanceState, SandboxState, StopReason, Termination,
};
use super::outcome::Outcome;
use super::view::{MIN_STOP_GRACE, PodView, add, ceil_secs, elapsed, floor_secs, is_alive};

/// Emits the `Killing` events of a kill that begins now, one per live container
/// (`killContainer` records it before the preStop hook runs).
pub fn announce(view: &PodView<'_>, out: &mut Outcome) {
    for entry in view.all() {
        if is_alive(view.observed(entry.name())) {
            out.event(
                false,
                "Killing",
                format!("Stopping container {}", entry.name()),
                entry.name(),
            );
        }
    }
}

/// Advances the kill; returns true once no container is left alive (the pod is terminal).
pub fn advance(view: &PodView<'_>, term: &Termination, out: &mut Outcome) -> bool {
    let now = view.now;
    let deadline = add(term.started_at, term.grace);
    let budget_left = deadline > now;
    let remaining = elapsed(deadline, now);
    let mains_alive = view
        .mains()
        .iter()
        .any(|m| is_alive(view.observed(m.name())));
    let init = view.init();
    let mut any_alive = false;
    let mut waiting = false;
    for (idx, entry) in view.all().enumerate() {
        let name = entry.name();
        let obs = view.observed(name);
        if !is_alive(obs) {
            continue;
        }
        any_alive = true;
        let Some(inst) = obs
            .current
            .as_ref()
            .filter(|i| !matches!(i.state, InstanceState::Exited(_)))
        else {
            // A start is still executing; its instance is stopped once it exists.
            waiting = true;
            continue;
        };
        if obs.stop.is_some() {
            continue;
        }
        let running = matches!(inst.state, InstanceState::Running { .. });
        if entry.has_pre_stop() && running {
            match obs.pre_stop {
                HookState::NotRun => {
                    // The hook gets what is left of the budget, in whole seconds; with
                    // nothing left it is skipped (D2.3).
                    let timeout = floor_secs(remaining);
                    if !timeout.is_zero() {
                        out.actions.push(Action::RunPreStop {
                            name: name.to_string(),
                            timeout,
                        });
                        waiting = true;
                        continue;
                    }
                }
                HookState::Running { .. } if budget_left => {
                    waiting = true;
                    continue;
                }
                _ => {}
            }
        }
        if entry.kind == ContainerKind::Sidecar && budget_left {
            // D2.4: a sidecar's turn comes once every main container and every sidecar
            // declared after it have exited.
            let later_sidecar_alive = init
                .iter()
                .skip(idx + 1)
                .filter(|e| e.kind == ContainerKind::Sidecar)
                .any(|e| is_alive(view.observed(e.name())));
            if mains_alive || later_sidecar_alive {
                waiting = true;
                continue;
            }
        }
        out.actions.push(Action::StopContainer {
            name: name.to_string(),
            grace: ceil_secs(remaining).max(MIN_STOP_GRACE),
            reason: StopReason::PodTermination,
        });
    }
    if waiting && budget_left {
        out.wake(deadline);
    }
    if any_alive {
        return false;
    }
    match view.obs.sandbox {
        SandboxState::Ready => out.actions.push(Action::StopSandbox),
        SandboxState::None | SandboxState::Stopped => out.actions.push(Action::Done),
    }
    true
}
