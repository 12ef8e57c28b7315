//! The kubelet-owned pod conditions (§5.2), in the kubelet's order, with
//! `lastTransitionTime` kept while a condition's status does not change.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::phase::{FAILED, SUCCEEDED};

pub const POD_READY_TO_START_CONTAINERS: &str = "PodReadyToStartContainers";
pub const INITIALIZED: &str = "Initialized";
pub const READY: &str = "Ready";
pub const CONTAINERS_READY: &str = "ContainersReady";
pub const POD_SCHEDULED: &str = "PodScheduled";

const KUBELET_OWNED: [&str; 5] = [
    POD_READY_TO_START_CONTAINERS,
    INITIALIZED,
    READY,
    CONTAINERS_READY,
    POD_SCHEDULED,
];

fn condition(type_: &str, ok: bool, reason: Option<&str>, message: Option<String>) -> PodCondition {
    PodCondition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.map(str::to_string),
        message: message.filter(|m| !m.is_empty()),
        ..PodCondition::default()
    }
}

fn find<'a>(statuses: &'a [ContainerStatus], name: &str) -> Option<&'a ContainerStatus> {
    statuses.iter().find(|s| s.name == name)
}

fn is_sidecar(c: &k8s_openapi::api::core::v1::Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// `containers with unknown status: [a b], containers with <word> status: [c]`.
fn listing(unknown: &[&str], other_word: &str, other: &[&str]) -> String {
    let mut parts = Vec::new();
    if !unknown.is_empty() {
        parts.push(format!(
            "containers with unknown status: [{}]",
            unknown.join(" ")
        ));
    }
    if !other.is_empty() {
        parts.push(format!(
            "containers with {other_word} status: [{}]",
            other.join(" ")
        ));
    }
    parts.join(", ")
}

/// A main container has started according to the API statuses (Running or Terminated).
fn any_main_started(spec: &PodSpec, statuses: &[ContainerStatus]) -> bool {
    spec.containers.iter().any(|c| {
        find(statuses, &c.name)
            .and_then(|s| s.state.as_ref())
            .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
    })
}

/// `Initialized` (`GeneratePodInitializedCondition`).
pub fn initialized(spec: &PodSpec, statuses: &[ContainerStatus], phase: &str) -> PodCondition {
    let mut unknown = Vec::new();
    let mut incomplete = Vec::new();
    for c in spec.init_containers.iter().flatten() {
        match find(statuses, &c.name) {
            None => unknown.push(c.name.as_str()),
            Some(s) if is_sidecar(c) => {
                if s.started != Some(true) {
                    incomplete.push(c.name.as_str());
                }
            }
            Some(s) => {
                if !s.ready {
                    incomplete.push(c.name.as_str());
                }
            }
        }
    }
    if phase == SUCCEEDED && unknown.is_empty() {
        return condition(INITIALIZED, true, Some("PodCompleted"), None);
    }
    // Stays True while a sidecar restarts after the main containers ran.
    if any_main_started(spec, statuses) {
        return condition(INITIALIZED, true, None, None);
    }
    let message = listing(&unknown, "incomplete", &incomplete);
    if message.is_empty() {
        condition(INITIALIZED, true, None, None)
    } else {
        condition(
            INITIALIZED,
            false,
            Some("ContainersNotInitialized"),
            Some(message),
        )
    }
}

/// `ContainersReady` (`GenerateContainersReadyCondition`): sidecars, then main containers.
pub fn containers_ready(spec: &PodSpec, statuses: &[ContainerStatus], phase: &str) -> PodCondition {
    let mut unknown = Vec::new();
    let mut unready = Vec::new();
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| is_sidecar(c));
    for c in sidecars.chain(spec.containers.iter()) {
        match find(statuses, &c.name) {
            None => unknown.push(c.name.as_str()),
            Some(s) if !s.ready => unready.push(c.name.as_str()),
            Some(_) => {}
        }
    }
    if phase == SUCCEEDED && unknown.is_empty() {
        return condition(CONTAINERS_READY, false, Some("PodCompleted"), None);
    }
    if phase == FAILED {
        return condition(CONTAINERS_READY, false, Some("PodFailed"), None);
    }
    let message = listing(&unknown, "unready", &unready);
    if message.is_empty() {
        condition(CONTAINERS_READY, true, None, None)
    } else {
        condition(
            CONTAINERS_READY,
            false,
            Some("ContainersNotReady"),
            Some(message),
        )
    }
}

/// `Ready` (`GeneratePodReadyCondition`): a copy of `ContainersReady` unless that is True;
/// then readiness gates decide, looked up in `others` (conditions set by other writers).
pub fn ready(
    spec: &PodSpec,
    containers_ready: &PodCondition,
    others: &[PodCondition],
) -> PodCondition {
    if containers_ready.status != "True" {
        return PodCondition {
            type_: READY.to_string(),
            ..containers_ready.clone()
        };
    }
    let mut messages = Vec::new();
    for gate in spec.readiness_gates.iter().flatten() {
        let t = &gate.condition_type;
        match others.iter().find(|c| &c.type_ == t) {
            None => messages.push(format!(
                "corresponding condition of pod readiness gate \"{t}\" does not exist."
            )),
            Some(c) if c.status != "True" => messages.push(format!(
                "the status of pod readiness gate \"{t}\" is not \"True\", but {}",
                c.status
            )),
            Some(_) => {}
        }
    }
    if messages.is_empty() {
        condition(READY, true, None, None)
    } else {
        condition(
            READY,
            false,
            Some("ReadinessGatesNotReady"),
            Some(messages.join(", ")),
        )
    }
}

/// Inputs of [`build`].
pub struct ConditionInput<'a> {
    pub spec: &'a PodSpec,
    /// Init and main container statuses.
    pub statuses: &'a [ContainerStatus],
    pub phase: &'a str,
    pub sandbox_ready: bool,
    /// Conditions reported before (for `lastTransitionTime`).
    pub previous: &'a [PodCondition],
    /// Conditions other writers own (readiness gates, DisruptionTarget, ...), kept first.
    pub foreign: &'a [PodCondition],
    pub now: Timestamp,
}

/// All conditions: foreign ones first, then the five kubelet-owned ones in order.
pub fn build(input: &ConditionInput<'_>) -> Vec<PodCondition> {
    let foreign: Vec<PodCondition> = input
        .foreign
        .iter()
        .filter(|c| !KUBELET_OWNED.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    let cready = containers_ready(input.spec, input.statuses, input.phase);
    let owned = [
        condition(
            POD_READY_TO_START_CONTAINERS,
            input.sandbox_ready,
            None,
            None,
        ),
        initialized(input.spec, input.statuses, input.phase),
        ready(input.spec, &cready, &foreign),
        cready,
        condition(POD_SCHEDULED, true, None, None),
    ];
    let mut all = foreign;
    for mut c in owned {
        let kept = input
            .previous
            .iter()
            .find(|p| p.type_ == c.type_ && p.status == c.status)
            .and_then(|p| p.last_transition_time.clone());
        c.last_transition_time = Some(kept.unwrap_or(Time(input.now)));
        all.push(c);
    }
    all
}
