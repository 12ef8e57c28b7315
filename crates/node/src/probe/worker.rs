//! The periodic probe worker of one container instance and probe kind, following the
//! kubelet's `prober/worker.go`: an initial result at once, the first attempt after
//! `initialDelaySeconds` (immediately when 0), then one every `periodSeconds`; the result
//! flips after `successThreshold`/`failureThreshold` consecutive equal outcomes.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ContainerPort, Probe};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{ProbeKind, ProbeOutcome, ProbeTiming, probe_once};
use crate::access::ContainerAccess;
use crate::planner::{Event, ProbeResult};

/// The kubelet repeats an attempt that could not be run at all this many times.
const MAX_ATTEMPTS: usize = 3;

/// What a probe worker needs.
pub struct ProberSpec {
    /// Container name (for events and updates).
    pub container: String,
    /// Runtime ID of the instance being probed; results apply to this instance only.
    pub instance: String,
    pub kind: ProbeKind,
    pub probe: Probe,
    /// The container's declared ports, to resolve named ports.
    pub ports: Vec<ContainerPort>,
    pub access: Arc<dyn ContainerAccess>,
    /// Stops the worker (container exited, pod stopped).
    pub cancel: CancellationToken,
    pub updates: mpsc::UnboundedSender<ProbeUpdate>,
}

/// A message from a probe worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeUpdate {
    pub container: String,
    pub instance: String,
    pub kind: ProbeKind,
    /// The new result when it changed (the initial result is sent first, at once).
    pub result: Option<ProbeResult>,
    /// An event to record: `Unhealthy` on every failed or errored attempt, `ProbeWarning`
    /// on a success with a warning.
    pub event: Option<Event>,
}

/// Starts a worker whose initial delay counts from now. Use [`spawn_prober_at`] when the
/// container started earlier (liveness/readiness workers started once the startup probe
/// succeeded).
///
/// Stops when cancelled or when the update receiver is gone; a startup worker also stops
/// after success, and startup/liveness workers stop after reaching Failure (the instance
/// is about to be killed; its successor gets new workers).
pub fn spawn_prober(spec: ProberSpec) -> JoinHandle<()> {
    spawn_prober_at(spec, Instant::now())
}

/// Starts a worker for a container that started at `started_at`.
pub fn spawn_prober_at(spec: ProberSpec, started_at: Instant) -> JoinHandle<()> {
    tokio::spawn(run(spec, started_at))
}

async fn run(spec: ProberSpec, started_at: Instant) {
    let timing = ProbeTiming::of(&spec.probe);
    let mut current = spec.kind.initial_result();
    if !send(&spec, Some(current), None) {
        return;
    }

    let first = (started_at + timing.initial_delay).max(Instant::now());
    let mut ticker = tokio::time::interval_at(first, timing.period);
    // Like Go's ticker: a slow attempt delays the next one instead of causing a burst.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);

    let mut last: Option<ProbeResult> = None;
    let mut run_length = 0u32;
    loop {
        tokio::select! {
            biased;
            _ = spec.cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let outcome = tokio::select! {
            biased;
            _ = spec.cancel.cancelled() => return,
            outcome = attempt(&spec) => outcome,
        };
        let event = attempt_event(&spec, &outcome);
        if outcome.result == ProbeResult::Unknown {
            // The kubelet throws errored attempts away: no threshold counting.
            if event.is_some() && !send(&spec, None, event) {
                return;
            }
            continue;
        }

        if last == Some(outcome.result) {
            run_length = run_length.saturating_add(1);
        } else {
            last = Some(outcome.result);
            run_length = 1;
        }
        let threshold = match outcome.result {
            ProbeResult::Success => timing.success_threshold,
            _ => timing.failure_threshold,
        };
        let reached = run_length >= threshold;
        let changed = (reached && outcome.result != current).then_some(outcome.result);
        if let Some(result) = changed {
            current = result;
        }
        if (changed.is_some() || event.is_some()) && !send(&spec, changed, event) {
            return;
        }
        if reached {
            match (spec.kind, outcome.result) {
                (ProbeKind::Startup | ProbeKind::Liveness, ProbeResult::Failure) => return,
                (ProbeKind::Startup, ProbeResult::Success) => return,
                _ => {}
            }
        }
    }
}

/// One attempt, repeated while it cannot be run at all (`runProbeWithRetries`).
async fn attempt(spec: &ProberSpec) -> ProbeOutcome {
    let mut outcome = probe_once(&spec.probe, &spec.ports, spec.access.as_ref()).await;
    for _ in 1..MAX_ATTEMPTS {
        if outcome.result != ProbeResult::Unknown {
            break;
        }
        outcome = probe_once(&spec.probe, &spec.ports, spec.access.as_ref()).await;
    }
    outcome
}

/// The event the kubelet records for an attempt (`prober.go`), if any.
fn attempt_event(spec: &ProberSpec, outcome: &ProbeOutcome) -> Option<Event> {
    let kind = spec.kind;
    let (reason, message) = match outcome.result {
        ProbeResult::Failure => (
            "Unhealthy",
            format!("{kind} probe failed: {}", outcome.message),
        ),
        ProbeResult::Unknown => (
            "Unhealthy",
            format!("{kind} probe errored: {}", outcome.message),
        ),
        ProbeResult::Success if outcome.warning => (
            "ProbeWarning",
            format!("{kind} probe warning: {}", outcome.message),
        ),
        ProbeResult::Success => return None,
    };
    Some(Event {
        warning: true,
        reason: reason.into(),
        message,
        container: Some(spec.container.clone()),
    })
}

/// Returns false when nobody listens any more.
fn send(spec: &ProberSpec, result: Option<ProbeResult>, event: Option<Event>) -> bool {
    spec.updates
        .send(ProbeUpdate {
            container: spec.container.clone(),
            instance: spec.instance.clone(),
            kind: spec.kind,
            result,
            event,
        })
        .is_ok()
}
