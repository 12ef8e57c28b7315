//! Pod QoS class (`status.qosClass`) from CPU and memory requests and limits.

use k8s_openapi::api::core::v1::{Container, PodSpec};

const TRACKED: [&str; 2] = ["cpu", "memory"];

/// `Guaranteed` when every container limits CPU and memory with requests equal to the
/// limits (unset requests default to the limits); `BestEffort` when no container requests
/// or limits either; `Burstable` otherwise.
pub fn class(spec: &PodSpec) -> &'static str {
    let containers: Vec<&Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in containers {
        let resources = c.resources.as_ref();
        let requests = resources.and_then(|r| r.requests.as_ref());
        let limits = resources.and_then(|r| r.limits.as_ref());
        for name in TRACKED {
            let request = requests.and_then(|r| r.get(name));
            let limit = limits.and_then(|l| l.get(name));
            if request.is_some() || limit.is_some() {
                any = true;
            }
            match (request, limit) {
                (Some(r), Some(l)) if r == l => {}
                (None, Some(_)) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}
