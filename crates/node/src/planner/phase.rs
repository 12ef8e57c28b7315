//! Pod phase from API container statuses (§5.1, the kubelet's `getPhase`).

use k8s_openapi::api::core::v1::{ContainerStatus, PodSpec};

pub const PENDING: &str = "Pending";
pub const RUNNING: &str = "Running";
pub const SUCCEEDED: &str = "Succeeded";
pub const FAILED: &str = "Failed";

pub fn is_terminal(phase: &str) -> bool {
    phase == SUCCEEDED || phase == FAILED
}

fn find<'a>(statuses: &'a [ContainerStatus], name: &str) -> Option<&'a ContainerStatus> {
    statuses.iter().find(|s| s.name == name)
}

/// Computes the phase.
///
/// * `statuses`: init and main container statuses (looked up by name).
/// * `has_started_main`: a main container has started in the current sandbox (P2).
/// * `pod_is_terminal`: the pod worker finished killing the pod (P4).
pub fn pod_phase(
    spec: &PodSpec,
    statuses: &[ContainerStatus],
    has_started_main: bool,
    pod_is_terminal: bool,
) -> &'static str {
    let mut pending_regular_init = 0;
    let mut failed_init = 0;
    let mut pending_sidecar = 0;
    let (mut unknown, mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);

    for c in spec.init_containers.iter().flatten() {
        let sidecar = c.restart_policy.as_deref() == Some("Always");
        let Some(s) = find(statuses, &c.name) else {
            if sidecar {
                unknown += 1;
            } else {
                pending_regular_init += 1;
            }
            continue;
        };
        let state = s.state.clone().unwrap_or_default();
        let last_terminated = s.last_state.as_ref().and_then(|l| l.terminated.as_ref());
        if sidecar {
            if state.running.is_some() {
                running += 1;
                if s.started != Some(true) {
                    pending_sidecar += 1;
                }
            } else if state.terminated.is_some() {
                // Terminated sidecars do not count toward the phase (C3).
            } else if state.waiting.is_some() {
                if last_terminated.is_none() {
                    pending_sidecar += 1;
                    waiting += 1;
                }
            } else {
                pending_sidecar += 1;
                unknown += 1;
            }
        } else if state.running.is_some() {
            pending_regular_init += 1;
        } else if let Some(t) = &state.terminated {
            if t.exit_code != 0 {
                failed_init += 1;
            }
        } else if state.waiting.is_some() {
            match last_terminated {
                Some(t) if t.exit_code != 0 => failed_init += 1,
                Some(_) => {}
                None => pending_regular_init += 1,
            }
        } else {
            pending_regular_init += 1;
        }
    }

    for c in &spec.containers {
        let Some(s) = find(statuses, &c.name) else {
            unknown += 1;
            continue;
        };
        let state = s.state.clone().unwrap_or_default();
        if state.running.is_some() {
            running += 1;
        } else if let Some(t) = &state.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if state.waiting.is_some() {
            if s.last_state
                .as_ref()
                .and_then(|l| l.terminated.as_ref())
                .is_some()
            {
                stopped += 1;
            } else {
                waiting += 1;
            }
        } else {
            unknown += 1;
        }
    }

    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    if failed_init > 0 && policy == "Never" {
        return FAILED;
    }
    if pending_regular_init > 0 || (pending_sidecar > 0 && !has_started_main) || waiting > 0 {
        return PENDING;
    }
    if running > 0 && unknown == 0 {
        return RUNNING;
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        if pod_is_terminal {
            return if stopped == succeeded {
                SUCCEEDED
            } else {
                FAILED
            };
        }
        return match policy {
            "Never" | "OnFailure" if stopped == succeeded => SUCCEEDED,
            "Never" => FAILED,
            // Always, and OnFailure with a failure: containers will be restarted.
            _ => RUNNING,
        };
    }
    PENDING
}
