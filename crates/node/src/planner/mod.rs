//! The pure lifecycle planner: pod + observation + backoff + now -> actions + status.
//!
//! No I/O, no clock reads, no async. Every rule of the native-sidecar lifecycle lives here
//! and is unit-tested with a fake clock.

pub mod model;

pub use model::*;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, PodStatus};

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
pub fn plan(input: PlanInput<'_>) -> Plan {
    let _ = input;
    todo!("planner")
}
