//! A read-only view of the pod spec and the observation that the rule modules share:
//! container classification, policy lookups and time arithmetic.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Container, Pod, Probe};

use super::model::{
    ContainerKind, ContainerObservation, HookState, Instance, InstanceState, Observation,
};

/// Pod `restartPolicy` (API default `Always`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// Default `terminationGracePeriodSeconds` when the spec leaves it unset.
const DEFAULT_TGPS: i64 = 30;

/// Kubelet floor for any stop grace (`minimumGracePeriodInSeconds`).
pub const MIN_STOP_GRACE: Duration = Duration::from_secs(2);

/// Observation of a container that was never seen.
static NEVER_SEEN: ContainerObservation = ContainerObservation {
    current: None,
    previous: None,
    restart_count: 0,
    in_flight: false,
    last_start_error: None,
    pre_stop: HookState::NotRun,
    stop: None,
};

/// One container of the spec with its kind.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub spec: &'a Container,
    pub kind: ContainerKind,
}

impl<'a> Entry<'a> {
    pub fn name(&self) -> &'a str {
        &self.spec.name
    }

    pub fn image(&self) -> &'a str {
        self.spec.image.as_deref().unwrap_or_default()
    }

    pub fn startup_probe(&self) -> Option<&'a Probe> {
        self.spec.startup_probe.as_ref()
    }

    pub fn has_readiness_probe(&self) -> bool {
        self.spec.readiness_probe.is_some()
    }

    pub fn has_liveness_probe(&self) -> bool {
        self.spec.liveness_probe.is_some()
    }

    /// preStop only exists on sidecars and main containers (validation V3).
    pub fn has_pre_stop(&self) -> bool {
        self.kind != ContainerKind::RegularInit
            && self
                .spec
                .lifecycle
                .as_ref()
                .is_some_and(|l| l.pre_stop.is_some())
    }

    pub fn is_init(&self) -> bool {
        self.kind != ContainerKind::Main
    }
}

/// The pod, classified, plus the observation it is planned against.
pub struct PodView<'a> {
    pub pod: &'a Pod,
    pub obs: &'a Observation,
    pub now: Timestamp,
    init: Vec<Entry<'a>>,
    mains: Vec<Entry<'a>>,
}

impl<'a> PodView<'a> {
    pub fn new(pod: &'a Pod, obs: &'a Observation, now: Timestamp) -> Self {
        let (init, mains) = match pod.spec.as_ref() {
            Some(spec) => (
                spec.init_containers
                    .iter()
                    .flatten()
                    .map(|c| Entry {
                        spec: c,
                        kind: if c.restart_policy.as_deref() == Some("Always") {
                            ContainerKind::Sidecar
                        } else {
                            ContainerKind::RegularInit
                        },
                    })
                    .collect(),
                spec.containers
                    .iter()
                    .map(|c| Entry {
                        spec: c,
                        kind: ContainerKind::Main,
                    })
                    .collect(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        Self {
            pod,
            obs,
            now,
            init,
            mains,
        }
    }

    /// `spec.initContainers` in spec order (sidecars and regular init containers).
    pub fn init(&self) -> &[Entry<'a>] {
        &self.init
    }

    /// `spec.containers` in spec order.
    pub fn mains(&self) -> &[Entry<'a>] {
        &self.mains
    }

    /// Every container: init entries first, then main containers.
    pub fn all(&self) -> impl Iterator<Item = &Entry<'a>> {
        self.init.iter().chain(self.mains.iter())
    }

    pub fn observed(&self, name: &str) -> &'a ContainerObservation {
        self.obs.containers.get(name).unwrap_or(&NEVER_SEEN)
    }

    pub fn restart_policy(&self) -> RestartPolicy {
        match self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
        {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        }
    }

    /// Pod `terminationGracePeriodSeconds`, defaulted to 30.
    pub fn tgps(&self) -> Duration {
        let secs = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(DEFAULT_TGPS);
        secs_to_duration(secs)
    }

    /// Whether the API object is being deleted (D1).
    pub fn is_deleted(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }

    /// The budget of a pod-level kill: `deletionGracePeriodSeconds` if set, else TGPS (C2).
    pub fn kill_grace(&self) -> Duration {
        match self.pod.metadata.deletion_grace_period_seconds {
            Some(secs) => secs_to_duration(secs),
            None => self.tgps(),
        }
    }

    /// `<name>_<namespace>(<uid>)`, the kubelet's way of naming a pod in messages.
    pub fn pod_ref(&self) -> String {
        let m = &self.pod.metadata;
        format!(
            "{}_{}({})",
            m.name.as_deref().unwrap_or_default(),
            m.namespace.as_deref().unwrap_or_default(),
            m.uid.as_deref().unwrap_or_default()
        )
    }

    /// S5: some main container has an instance that is Created or Running.
    pub fn any_main_active(&self) -> bool {
        self.mains.iter().any(|m| {
            matches!(
                self.observed(m.name()).current.as_ref().map(|i| &i.state),
                Some(InstanceState::Created | InstanceState::Running { .. })
            )
        })
    }

    /// "Has started a main container" for phase rule P2: a main container has an instance
    /// in the current sandbox (`HasAnyActiveRegularContainerStarted`).
    pub fn any_main_instance(&self) -> bool {
        self.mains
            .iter()
            .any(|m| self.observed(m.name()).current.is_some())
    }
}

/// Whether a sidecar or main container counts as started (S2/S4): running, postStart
/// finished well, and startup probe passed if one is defined.
pub fn is_started(entry: &Entry<'_>, inst: &Instance) -> bool {
    matches!(inst.state, InstanceState::Running { .. })
        && matches!(
            inst.post_start,
            HookState::NotRun | HookState::Succeeded { .. }
        )
        && (entry.startup_probe().is_none()
            || inst.probes.startup == Some(super::model::ProbeResult::Success))
}

/// Whether a container's current instance is, or is about to be, a live process: it needs
/// stopping in a pod kill and holds back sidecars that stop after it.
pub fn is_alive(obs: &ContainerObservation) -> bool {
    match obs.current.as_ref().map(|i| &i.state) {
        Some(InstanceState::Created | InstanceState::Running { .. }) => true,
        _ => obs.in_flight,
    }
}

pub fn secs_to_duration(secs: i64) -> Duration {
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// `ts + d`, saturating at the end of time.
pub fn add(ts: Timestamp, d: Duration) -> Timestamp {
    ts.checked_add(d).unwrap_or(Timestamp::MAX)
}

/// `later - earlier` (negative when `later` is before `earlier`).
pub fn since(later: Timestamp, earlier: Timestamp) -> SignedDuration {
    later.duration_since(earlier)
}

/// `later - earlier` clamped at zero.
pub fn elapsed(later: Timestamp, earlier: Timestamp) -> Duration {
    Duration::try_from(since(later, earlier)).unwrap_or(Duration::ZERO)
}

/// Rounds a duration up to whole seconds. The kubelet subtracts whole elapsed seconds from
/// the grace, so a part second left over counts as a full one.
pub fn ceil_secs(d: Duration) -> Duration {
    if d.subsec_nanos() == 0 {
        d
    } else {
        Duration::from_secs(d.as_secs().saturating_add(1))
    }
}

/// Rounds down to whole seconds (hook timeouts are whole seconds in the kubelet).
pub fn floor_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

/// Formats a duration like Go's `time.Duration.String` (`10s`, `1m20s`, `5m0s`, `1.5s`,
/// `100ms`), which is how the kubelet prints backoff delays.
pub fn go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    let nanos = d.as_nanos();
    if d < Duration::from_secs(1) {
        return if nanos < 1_000 {
            format!("{nanos}ns")
        } else if nanos < 1_000_000 {
            format!("{}µs", decimal(nanos, 3))
        } else {
            format!("{}ms", decimal(nanos, 6))
        };
    }
    let total = d.as_secs();
    let (h, m, s) = (total / 3600, total % 3600 / 60, total % 60);
    let seconds = decimal(
        u128::from(s) * 1_000_000_000 + u128::from(d.subsec_nanos()),
        9,
    );
    if h > 0 {
        format!("{h}h{m}m{seconds}s")
    } else if m > 0 {
        format!("{m}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// `value / 10^digits` as a decimal without trailing zeros.
fn decimal(value: u128, digits: u32) -> String {
    let scale = 10u128.pow(digits);
    let (int, frac) = (value / scale, value % scale);
    if frac == 0 {
        return int.to_string();
    }
    let frac = format!("{frac:0width$}", width = digits as usize);
    format!("{int}.{}", frac.trim_end_matches('0'))
}
