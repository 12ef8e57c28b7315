//! The pure lifecycle planner: pod + observation + backoff + now -> actions + status.
//!
//! No I/O, no clock reads, no async. Every rule of the native-sidecar lifecycle lives here
//! and is unit-tested with a fake clock.
//!
//! Layout: `init` walks the init list (§1), `mains` handles main containers and
//! completion (§2, §3), `backoff` gates restarts (§2.2), `termination` runs pod kills
//! (§4), `status`, [`phase`] and [`conditions`] build the reported status (§5, §6.2).

mod backoff;
pub mod conditions;
mod init;
mod mains;
pub mod model;
mod outcome;
pub mod phase;
mod qos;
mod status;
mod termination;
mod view;

#[cfg(test)]
mod tests;

pub use backoff::START_ERROR_SUFFIX;
pub use model::*;
pub use status::{STATUS_UNKNOWN_MESSAGE, STATUS_UNKNOWN_REASON};

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, PodStatus};

use outcome::Outcome;
use status::StatusInput;
use view::{Entry, PodView, add};

/// Everything [`plan`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// The pod as stored (spec, metadata incl. uid and deletion fields).
    pub pod: &'a Pod,
    pub observation: &'a Observation,
    pub backoff: &'a Backoff,
    pub backoff_config: &'a BackoffConfig,
    /// The status reported last time (for sticky terminal phases and lastTransitionTime).
    pub previous_status: Option<&'a PodStatus>,
    pub now: Timestamp,
}

/// Backoff key of a container (B2): pod, namespace, uid, container name and a hash of
/// the parts of the spec whose change restarts the container (name + image).
pub fn backoff_key(pod: &Pod, container: &str, image: &str) -> String {
    let meta = &pod.metadata;
    format!(
        "{}_{}_{}_{}_{}",
        meta.name.as_deref().unwrap_or_default(),
        meta.namespace.as_deref().unwrap_or_default(),
        meta.uid.as_deref().unwrap_or_default(),
        container,
        image
    )
}

/// Computes the next actions and the status to report.
///
/// Order of the returned actions: `BeginTermination` (if any) and its `Killing` events,
/// then stops (each after its events), then starts in spec order, then `StopSandbox` or
/// `Done`. A `CreateSandbox` plan contains nothing else.
pub fn plan(input: PlanInput<'_>) -> Plan {
    let view = PodView::new(input.pod, input.observation, input.now);
    let cfg = input.backoff_config;
    let mut out = Outcome::new(input.now, input.backoff.clone());
    let mut termination = input.observation.termination;

    // D1: a deletion starts the kill, or shortens one already running (a second delete
    // with a smaller grace, or a delete during a completion kill).
    if view.is_deleted() {
        let grace = view.kill_grace();
        let shorter =
            termination.is_some_and(|t| add(input.now, grace) < add(t.started_at, t.grace));
        if termination.is_none() || shorter {
            let announce = termination.is_none();
            termination = Some(begin(&view, &mut out, KillCause::Deleted, grace, announce));
        }
    }
    // A terminal phase was reported before but no kill is recorded (e.g. the worker lost
    // it): finish the pod, never restart anything.
    if termination.is_none() && previous_phase_terminal(&input) {
        termination = Some(begin(
            &view,
            &mut out,
            KillCause::Completed,
            view.kill_grace(),
            true,
        ));
    }
    if termination.is_none() {
        if view.obs.sandbox == SandboxState::Ready {
            if let Some(cause) = sync(&view, cfg, &mut out) {
                termination = Some(begin(&view, &mut out, cause, view.kill_grace(), true));
            }
        } else {
            out.actions.push(Action::CreateSandbox);
        }
    }
    let terminal = match &termination {
        Some(t) => termination::advance(&view, t, &mut out),
        None => false,
    };
    backoff::prune(&view, cfg, &mut out);
    let status = status::build(
        &view,
        &StatusInput {
            waiting: &out.waiting,
            terminating: termination.is_some(),
            terminal,
            previous: input.previous_status,
        },
    );
    Plan {
        actions: out.actions,
        status,
        backoff: out.backoff,
        wake_at: out.wake_at,
    }
}

fn previous_phase_terminal(input: &PlanInput<'_>) -> bool {
    input
        .previous_status
        .and_then(|s| s.phase.as_deref())
        .is_some_and(phase::is_terminal)
}

/// Emits `BeginTermination` and returns the kill as the worker will record it.
fn begin(
    view: &PodView<'_>,
    out: &mut Outcome,
    cause: KillCause,
    grace: Duration,
    announce: bool,
) -> Termination {
    out.actions.push(Action::BeginTermination { cause, grace });
    if announce {
        termination::announce(view, out);
    }
    Termination {
        cause,
        started_at: view.now,
        grace,
    }
}

/// One normal sync (no kill in progress): init walk, main containers, completion.
/// Returns the cause when the pod has to be killed instead.
fn sync(view: &PodView<'_>, cfg: &BackoffConfig, out: &mut Outcome) -> Option<KillCause> {
    let walk = init::walk(view);
    if walk.kill_pod {
        return Some(KillCause::InitFailed);
    }
    let mut stops = walk.stops;
    let mut starts: Vec<Entry<'_>> = walk
        .starts
        .iter()
        .filter_map(|&i| view.init().get(i).copied())
        .collect();
    // S3: main containers only once the last init entry is done.
    if walk.initialized {
        let pass = mains::pass(view);
        if pass.completed {
            // C1: nothing left to run; sidecars are stopped, not restarted.
            return Some(KillCause::Completed);
        }
        stops.extend(pass.stops);
        starts.extend(pass.starts);
    }
    for stop in stops {
        if stop.reason == StopReason::PostStartHook {
            out.event(
                true,
                "FailedPostStartHook",
                "PostStartHook failed".to_string(),
                &stop.name,
            );
        }
        out.stop(&stop.name, stop.grace, stop.reason, stop.message);
    }
    for entry in &starts {
        backoff::start_or_wait(view, entry, cfg, out);
    }
    None
}
