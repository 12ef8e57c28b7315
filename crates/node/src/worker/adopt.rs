//! What a worker that starts on a pod with state on disk (after an agent restart) knows
//! about each container, from the runtime's records and the pod's last reported status.
//!
//! Pure: the worker reads the disk and calls these to build its first [`Observation`].
//!
//! * Sandbox still running: each container's newest instance is taken over as it is
//!   (running or exited), with `restartCount` and `lastState` as last reported for that
//!   instance. Hooks count as done; a startup probe that had passed (`started: true`) and
//!   a readiness that was reported are kept, so nothing waits or flickers again.
//! * Sandbox gone (machine reboot): as in the kubelet (§9), everything starts again in a
//!   new sandbox, from the first init container; restart counts go on from the old
//!   instances. A `Never` pod that already ran gets no new sandbox: its containers are
//!   recorded with the exits found on disk (an instance that ended without a recorded exit
//!   is an error, exit code 255) and the pod ends with the phase those give.
//!
//! [`Observation`]: crate::planner::Observation

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, ContainerStateTerminated, ContainerStatus, Pod};

use crate::planner::{
    ContainerObservation, Exited, HookState, Instance, InstanceState, KillCause, Observation,
    ProbeResult, ProbeResults, SandboxState, Termination,
};
use crate::probe::ProbeUpdate;

/// Message of a container that ran before its sandbox was lost and left nothing behind.
pub const LOST_MESSAGE: &str = "the container was lost with its pod sandbox";

/// A container's newest instance as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `containerID` as reported (`tandem://...`).
    pub id: String,
    /// Instance number; instance n of a container is its n-th restart.
    pub attempt: u32,
    pub image: String,
    pub started_at: Timestamp,
    pub exit: Option<Exited>,
    /// The exit of the instance before it, if still on disk.
    pub previous: Option<Exited>,
}

/// A readiness carried over from a previous agent: it holds until the new readiness
/// prober's first attempt decides, so an adopted pod does not flicker to not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    None,
    /// The prober's initial "not ready" (sent before any attempt) is still to come.
    Fresh,
    /// Waiting for the outcome of the first attempt.
    Held,
}

impl Seed {
    /// The next seed and the result `update` of the instance's readiness prober stands for.
    pub fn apply(self, update: &ProbeUpdate) -> (Seed, Option<ProbeResult>) {
        match (self, update.result) {
            (Seed::None, result) => (Seed::None, result),
            // The prober's initial value, not an observation: the seed stays.
            (Seed::Fresh, Some(_)) => (Seed::Held, None),
            (Seed::Held, Some(result)) => (Seed::None, Some(result)),
            // A failed attempt that did not change the prober's own (initial) value.
            (Seed::Held, None)
                if update
                    .event
                    .as_ref()
                    .is_some_and(|e| e.reason == "Unhealthy") =>
            {
                (Seed::None, Some(ProbeResult::Failure))
            }
            (seed, None) => (seed, None),
        }
    }
}

fn containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    pod.spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
}

/// The observation of a pod whose sandbox still runs, from the newest instance of each
/// container found in it.
pub fn running_pod(pod: &Pod, mut found: BTreeMap<String, Found>, now: Timestamp) -> Observation {
    let containers = containers(pod)
        .map(|c| {
            let f = found.remove(&c.name);
            (c.name.clone(), adopted(c, reported(pod, &c.name), f, now))
        })
        .collect();
    Observation {
        sandbox: SandboxState::Ready,
        containers,
        termination: None,
    }
}

/// The observation of a pod whose sandbox is gone, from what its old instances left
/// (their exits known).
pub fn lost_pod(pod: &Pod, mut found: BTreeMap<String, Found>, now: Timestamp) -> Observation {
    let never = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("Never");
    let ran_before = containers(pod).any(|c| ran(reported(pod, &c.name), found.get(&c.name)));
    // A Never pod that ran gets no new sandbox (§9): it ends with what it has.
    let keep = never && ran_before;
    let containers = containers(pod)
        .map(|c| {
            let f = found.remove(&c.name);
            (c.name.clone(), lost(reported(pod, &c.name), f, keep, now))
        })
        .collect();
    Observation {
        sandbox: SandboxState::None,
        containers,
        // Nothing is left to stop: the kill ends at once, with the phase the exits give.
        termination: keep.then_some(Termination {
            cause: KillCause::Completed,
            started_at: now,
            grace: Duration::ZERO,
        }),
    }
}

/// The last reported status of container `name`.
pub fn reported<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    let status = pod.status.as_ref()?;
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .find(|s| s.name == name)
}

/// A reported terminated state as the planner's exit.
pub fn exited(t: &ContainerStateTerminated, now: Timestamp) -> Exited {
    Exited {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: t.reason.clone().unwrap_or_default(),
        message: t.message.clone(),
        started_at: t.started_at.as_ref().map(|s| s.0),
        finished_at: t.finished_at.as_ref().map_or(now, |f| f.0),
    }
}

fn last_terminated(s: &ContainerStatus, now: Timestamp) -> Option<Exited> {
    let t = s.last_state.as_ref()?.terminated.as_ref()?;
    Some(exited(t, now))
}

fn restart_count(s: &ContainerStatus) -> u32 {
    u32::try_from(s.restart_count).unwrap_or(0)
}

/// The status was reported for this very instance (the agent may have gone away after
/// starting an instance and before reporting it).
fn reports<'a>(
    reported: Option<&'a ContainerStatus>,
    found: &Found,
) -> Option<&'a ContainerStatus> {
    reported.filter(|s| s.container_id.as_deref() == Some(found.id.as_str()))
}

/// A container of a pod whose sandbox still runs.
pub fn adopted(
    container: &Container,
    reported: Option<&ContainerStatus>,
    found: Option<Found>,
    now: Timestamp,
) -> ContainerObservation {
    let Some(found) = found else {
        // Never started in this sandbox (or its start failed): as last reported.
        return ContainerObservation {
            restart_count: reported.map_or(0, restart_count),
            previous: reported.and_then(|s| last_terminated(s, now)),
            ..ContainerObservation::default()
        };
    };
    let same = reports(reported, &found);
    let (restart_count, previous) = match same {
        Some(s) => (restart_count(s), last_terminated(s, now)),
        None => (found.attempt, found.previous.clone()),
    };
    let running = found.exit.is_none();
    let mut probes = ProbeResults::default();
    if running && let Some(s) = same {
        if container.startup_probe.is_some() && s.started == Some(true) {
            probes.startup = Some(ProbeResult::Success);
        }
        if container.readiness_probe.is_some() && s.ready {
            probes.readiness = Some(ProbeResult::Success);
        }
    }
    let has_post_start = container
        .lifecycle
        .as_ref()
        .is_some_and(|l| l.post_start.is_some());
    ContainerObservation {
        current: Some(Instance {
            id: found.id,
            image: found.image,
            state: match found.exit {
                Some(exit) => InstanceState::Exited(exit),
                None => InstanceState::Running {
                    started_at: found.started_at,
                },
            },
            // It ran before this worker; the kubelet does not run it again either.
            post_start: if has_post_start {
                HookState::Succeeded {
                    finished_at: found.started_at,
                }
            } else {
                HookState::NotRun
            },
            probes,
        }),
        previous,
        restart_count,
        ..ContainerObservation::default()
    }
}

/// Whether a container ran before: an instance on disk or a reported container ID.
pub fn ran(reported: Option<&ContainerStatus>, found: Option<&Found>) -> bool {
    found.is_some() || reported.is_some_and(|s| s.container_id.is_some())
}

/// A container of a pod whose sandbox is gone. `keep` (a `Never` pod that already ran):
/// the old instance stays as the current one, exited. Otherwise the container starts
/// afresh, its restart count going on from the old instance, which becomes `lastState`.
pub fn lost(
    reported: Option<&ContainerStatus>,
    found: Option<Found>,
    keep: bool,
    now: Timestamp,
) -> ContainerObservation {
    let lost_exit = |started_at: Option<Timestamp>| Exited {
        exit_code: 255,
        signal: None,
        reason: "Error".into(),
        message: Some(LOST_MESSAGE.into()),
        started_at,
        finished_at: now,
    };
    // The old instance: id, image, restart count, its exit, the exit before it.
    let (id, image, count, exit, before) = match (found, reported) {
        (Some(f), reported) => {
            let same = reports(reported, &f);
            let (count, before) = match same {
                Some(s) => (restart_count(s), last_terminated(s, now)),
                None => (f.attempt, f.previous.clone()),
            };
            let exit = f.exit.unwrap_or_else(|| lost_exit(Some(f.started_at)));
            (f.id, f.image, count, exit, before)
        }
        (None, Some(s)) if s.container_id.is_some() => {
            let state = s.state.clone().unwrap_or_default();
            let exit = match (&state.terminated, &state.running) {
                (Some(t), _) => exited(t, now),
                (None, Some(r)) => lost_exit(r.started_at.as_ref().map(|t| t.0)),
                (None, None) => lost_exit(None),
            };
            let id = s.container_id.clone().unwrap_or_default();
            (
                id,
                s.image.clone(),
                restart_count(s),
                exit,
                last_terminated(s, now),
            )
        }
        (None, reported) => {
            return ContainerObservation {
                restart_count: reported.map_or(0, restart_count),
                previous: reported.and_then(|s| last_terminated(s, now)),
                ..ContainerObservation::default()
            };
        }
    };
    if keep {
        ContainerObservation {
            current: Some(Instance {
                id,
                image,
                state: InstanceState::Exited(exit),
                post_start: HookState::NotRun,
                probes: ProbeResults::default(),
            }),
            previous: before,
            restart_count: count,
            ..ContainerObservation::default()
        }
    } else {
        ContainerObservation {
            previous: Some(exit),
            restart_count: count + 1,
            ..ContainerObservation::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn container(value: serde_json::Value) -> Container {
        serde_json::from_value(value).expect("container")
    }

    fn status(value: serde_json::Value) -> ContainerStatus {
        serde_json::from_value(value).expect("status")
    }

    fn found(id: &str, attempt: u32, exit: Option<Exited>) -> Found {
        Found {
            id: id.into(),
            attempt,
            image: "busybox".into(),
            started_at: ts("2026-01-01T00:00:00Z"),
            exit,
            previous: None,
        }
    }

    fn exit(code: i32) -> Exited {
        Exited {
            exit_code: code,
            signal: None,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: Some(ts("2026-01-01T00:00:00Z")),
            finished_at: ts("2026-01-01T00:01:00Z"),
        }
    }

    const NOW: &str = "2026-01-01T01:00:00Z";

    #[test]
    fn a_running_instance_keeps_its_reported_counts_and_probe_results() {
        let c = container(json!({
            "name": "proxy", "image": "busybox", "restartPolicy": "Always",
            "startupProbe": {"exec": {"command": ["true"]}},
            "readinessProbe": {"exec": {"command": ["true"]}},
            "lifecycle": {"postStart": {"exec": {"command": ["true"]}}}
        }));
        let s = status(json!({
            "name": "proxy", "image": "busybox", "imageID": "", "ready": true, "started": true,
            "restartCount": 3, "containerID": "tandem://abc",
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                "finishedAt": "2025-12-31T23:59:00Z"}}
        }));
        let obs = adopted(&c, Some(&s), Some(found("tandem://abc", 3, None)), ts(NOW));
        assert_eq!(obs.restart_count, 3);
        assert_eq!(obs.previous.as_ref().map(|p| p.exit_code), Some(1));
        let inst = obs.current.expect("instance");
        assert_eq!(inst.id, "tandem://abc");
        assert!(
            matches!(inst.state, InstanceState::Running { started_at } if started_at == ts("2026-01-01T00:00:00Z"))
        );
        assert!(matches!(inst.post_start, HookState::Succeeded { .. }));
        assert_eq!(inst.probes.startup, Some(ProbeResult::Success));
        assert_eq!(inst.probes.readiness, Some(ProbeResult::Success));
        assert!(!obs.in_flight);
    }

    #[test]
    fn an_unstarted_sidecar_probes_again() {
        let c = container(json!({
            "name": "proxy", "image": "busybox", "restartPolicy": "Always",
            "startupProbe": {"exec": {"command": ["true"]}}
        }));
        let s = status(json!({
            "name": "proxy", "image": "busybox", "imageID": "", "ready": false,
            "started": false, "restartCount": 0, "containerID": "tandem://abc"
        }));
        let obs = adopted(&c, Some(&s), Some(found("tandem://abc", 0, None)), ts(NOW));
        let inst = obs.current.expect("instance");
        assert_eq!(inst.probes.startup, None);
        assert_eq!(inst.post_start, HookState::NotRun);
    }

    #[test]
    fn an_instance_never_reported_counts_from_its_number() {
        let c = container(json!({"name": "app", "image": "busybox",
            "readinessProbe": {"exec": {"command": ["true"]}}}));
        // The report is about the instance before (the agent went away right after a
        // restart); the restart count and lastState come from disk.
        let s = status(json!({
            "name": "app", "image": "busybox", "imageID": "", "ready": true, "started": true,
            "restartCount": 1, "containerID": "tandem://old"
        }));
        let mut f = found("tandem://new", 2, None);
        f.previous = Some(exit(2));
        let obs = adopted(&c, Some(&s), Some(f), ts(NOW));
        assert_eq!(obs.restart_count, 2);
        assert_eq!(obs.previous, Some(exit(2)));
        let inst = obs.current.expect("instance");
        assert_eq!(
            inst.probes.readiness, None,
            "ready was about another instance"
        );
    }

    #[test]
    fn an_exited_instance_is_taken_with_its_exit() {
        let c = container(json!({"name": "init", "image": "busybox"}));
        let obs = adopted(
            &c,
            None,
            Some(found("tandem://i", 0, Some(exit(0)))),
            ts(NOW),
        );
        let inst = obs.current.expect("instance");
        assert_eq!(inst.state, InstanceState::Exited(exit(0)));
        assert_eq!(obs.restart_count, 0);
    }

    #[test]
    fn a_container_without_instance_keeps_what_was_reported() {
        let c = container(json!({"name": "app", "image": "busybox"}));
        let s = status(json!({
            "name": "app", "image": "busybox", "imageID": "", "ready": false,
            "restartCount": 4,
            "lastState": {"terminated": {"exitCode": 137, "reason": "Error"}}
        }));
        let obs = adopted(&c, Some(&s), None, ts(NOW));
        assert_eq!(obs.current, None);
        assert_eq!(obs.restart_count, 4);
        assert_eq!(obs.previous.map(|p| p.finished_at), Some(ts(NOW)));
    }

    #[test]
    fn reported_statuses_are_found_in_both_lists() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": []},
            "status": {
                "initContainerStatuses": [{"name": "proxy", "image": "", "imageID": "",
                    "ready": true, "restartCount": 1}],
                "containerStatuses": [{"name": "app", "image": "", "imageID": "",
                    "ready": false, "restartCount": 2}]
            }
        }))
        .expect("pod");
        assert_eq!(reported(&pod, "proxy").map(|s| s.restart_count), Some(1));
        assert_eq!(reported(&pod, "app").map(|s| s.restart_count), Some(2));
        assert!(reported(&pod, "other").is_none());
    }

    #[test]
    fn a_lost_container_starts_again_with_the_old_exit_as_last_state() {
        let s = status(json!({
            "name": "app", "image": "busybox", "imageID": "", "ready": true,
            "restartCount": 2, "containerID": "tandem://abc",
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
        }));
        let obs = lost(
            Some(&s),
            Some(found("tandem://abc", 2, Some(exit(137)))),
            false,
            ts(NOW),
        );
        assert_eq!(obs.current, None);
        assert_eq!(obs.restart_count, 3);
        assert_eq!(obs.previous, Some(exit(137)));

        // Nothing on disk (state removed with the machine): the reported running state
        // becomes an unknown exit.
        let obs = lost(Some(&s), None, false, ts(NOW));
        assert_eq!(obs.restart_count, 3);
        let prev = obs.previous.expect("previous");
        assert_eq!(prev.exit_code, 255);
        assert_eq!(prev.message.as_deref(), Some(LOST_MESSAGE));
        assert_eq!(prev.started_at, Some(ts("2026-01-01T00:00:00Z")));
    }

    #[test]
    fn a_lost_container_of_a_never_pod_stays_exited() {
        let s = status(json!({
            "name": "app", "image": "busybox", "imageID": "", "ready": true,
            "restartCount": 0, "containerID": "tandem://abc",
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
        }));
        let obs = lost(Some(&s), None, true, ts(NOW));
        assert_eq!(obs.restart_count, 0);
        let inst = obs.current.expect("instance");
        assert_eq!(inst.id, "tandem://abc");
        assert!(matches!(&inst.state, InstanceState::Exited(e) if e.exit_code == 255));

        let done = status(json!({
            "name": "app", "image": "busybox", "imageID": "", "ready": false,
            "restartCount": 0, "containerID": "tandem://abc",
            "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                "finishedAt": "2026-01-01T00:01:00Z"}}
        }));
        let obs = lost(Some(&done), None, true, ts(NOW));
        let inst = obs.current.expect("instance");
        assert!(
            matches!(&inst.state, InstanceState::Exited(e) if e.exit_code == 0 && e.reason == "Completed")
        );
    }

    /// A Running pod with a sidecar (startup + readiness probes) and a main container,
    /// as last reported, and its instances on disk.
    fn reported_pod(restart_policy: &str) -> (Pod, BTreeMap<String, Found>) {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u-1"},
            "spec": {
                "restartPolicy": restart_policy,
                "initContainers": [{"name": "proxy", "image": "busybox", "restartPolicy": "Always",
                    "startupProbe": {"exec": {"command": ["true"]}},
                    "readinessProbe": {"exec": {"command": ["true"]}}}],
                "containers": [{"name": "app", "image": "busybox"}]
            },
            "status": {
                "phase": "Running",
                "startTime": "2026-01-01T00:00:00Z",
                "initContainerStatuses": [{"name": "proxy", "image": "busybox", "imageID": "",
                    "ready": true, "started": true, "restartCount": 2,
                    "containerID": "tandem://p2",
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                        "finishedAt": "2025-12-31T23:59:59Z"}}}],
                "containerStatuses": [{"name": "app", "image": "busybox", "imageID": "",
                    "ready": true, "started": true, "restartCount": 0,
                    "containerID": "tandem://a0",
                    "state": {"running": {"startedAt": "2026-01-01T00:00:01Z"}}}]
            }
        }))
        .expect("pod");
        let found = BTreeMap::from([
            ("proxy".to_string(), found("tandem://p2", 2, None)),
            ("app".to_string(), found("tandem://a0", 0, None)),
        ]);
        (pod, found)
    }

    fn plan(pod: &Pod, obs: &Observation) -> crate::planner::Plan {
        crate::planner::plan(crate::planner::PlanInput {
            pod,
            observation: obs,
            backoff: &Default::default(),
            backoff_config: &Default::default(),
            previous_status: pod.status.as_ref(),
            now: ts(NOW),
        })
    }

    fn statuses(plan: &crate::planner::Plan) -> Vec<ContainerStatus> {
        let s = &plan.status;
        s.init_container_statuses
            .iter()
            .flatten()
            .chain(s.container_statuses.iter().flatten())
            .cloned()
            .collect()
    }

    #[test]
    fn an_adopted_running_pod_needs_nothing_and_reports_the_same() {
        let (pod, found) = reported_pod("Always");
        let obs = running_pod(&pod, found, ts(NOW));
        let plan = plan(&pod, &obs);
        assert_eq!(plan.actions, vec![], "nothing to start, stop or create");
        assert_eq!(plan.status.phase.as_deref(), Some("Running"));
        let got: Vec<_> = statuses(&plan)
            .into_iter()
            .map(|s| (s.name, s.container_id, s.restart_count, s.ready, s.started))
            .collect();
        let want = vec![
            (
                "proxy".to_string(),
                Some("tandem://p2".to_string()),
                2,
                true,
                Some(true),
            ),
            (
                "app".to_string(),
                Some("tandem://a0".to_string()),
                0,
                true,
                Some(true),
            ),
        ];
        assert_eq!(got, want);
        let ready = plan
            .status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready");
        assert_eq!(ready.map(|c| c.status.as_str()), Some("True"));
    }

    #[test]
    fn a_deleted_adopted_pod_is_terminated_main_first() {
        let (mut pod, found) = reported_pod("Always");
        pod.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(NOW)),
        );
        pod.metadata.deletion_grace_period_seconds = Some(30);
        let obs = running_pod(&pod, found, ts(NOW));
        let stops: Vec<_> = plan(&pod, &obs)
            .actions
            .into_iter()
            .filter_map(|a| match a {
                crate::planner::Action::StopContainer { name, .. } => Some(name),
                _ => None,
            })
            .collect();
        assert_eq!(
            stops,
            vec!["app".to_string()],
            "the sidecar waits for the main container"
        );
    }

    #[test]
    fn a_lost_sandbox_starts_over_unless_the_pod_never_restarts() {
        let (pod, mut found) = reported_pod("Always");
        for f in found.values_mut() {
            f.exit = Some(exit(255));
        }
        let obs = lost_pod(&pod, found.clone(), ts(NOW));
        let restarted = plan(&pod, &obs);
        assert_eq!(
            restarted.actions,
            vec![crate::planner::Action::CreateSandbox]
        );
        assert_eq!(obs.containers["proxy"].restart_count, 3);
        assert_eq!(obs.containers["app"].restart_count, 1);

        let (pod, _) = reported_pod("Never");
        let obs = lost_pod(&pod, found, ts(NOW));
        let plan = plan(&pod, &obs);
        assert_eq!(plan.actions, vec![crate::planner::Action::Done]);
        assert_eq!(plan.status.phase.as_deref(), Some("Failed"));
        let app = statuses(&plan)
            .into_iter()
            .find(|s| s.name == "app")
            .expect("app");
        let t = app.state.and_then(|s| s.terminated).expect("terminated");
        assert_eq!((t.exit_code, app.restart_count), (255, 0));
    }

    #[test]
    fn a_never_pod_whose_main_container_completed_succeeds_without_its_sidecar() {
        let (pod, mut found) = reported_pod("Never");
        if let Some(f) = found.get_mut("app") {
            f.exit = Some(exit(0));
        }
        // The sidecar's instance left no exit: it was lost with the machine.
        let obs = lost_pod(&pod, found, ts(NOW));
        let plan = plan(&pod, &obs);
        assert_eq!(plan.actions, vec![crate::planner::Action::Done]);
        assert_eq!(plan.status.phase.as_deref(), Some("Succeeded"));
    }

    fn readiness(result: Option<ProbeResult>, event: Option<&str>) -> ProbeUpdate {
        ProbeUpdate {
            container: "app".into(),
            instance: "tandem://a0".into(),
            kind: crate::probe::ProbeKind::Readiness,
            result,
            event: event.map(|reason| crate::planner::Event {
                warning: true,
                reason: reason.into(),
                message: "Readiness probe failed: ".into(),
                container: Some("app".into()),
            }),
        }
    }

    #[test]
    fn a_carried_over_readiness_holds_until_the_first_attempt() {
        let initial = readiness(Some(ProbeResult::Failure), None);
        let (seed, result) = Seed::Fresh.apply(&initial);
        assert_eq!(
            (seed, result),
            (Seed::Held, None),
            "the initial value is ignored"
        );

        // First attempt succeeds: the prober reports the change, which is no change here.
        let ok = readiness(Some(ProbeResult::Success), None);
        assert_eq!(seed.apply(&ok), (Seed::None, Some(ProbeResult::Success)));

        // First attempt fails: the prober stays at its initial value and only says so
        // in an event; readiness drops to it.
        let failed = readiness(None, Some("Unhealthy"));
        assert_eq!(
            seed.apply(&failed),
            (Seed::None, Some(ProbeResult::Failure))
        );

        // A success with a warning is no failure.
        let warned = readiness(None, Some("ProbeWarning"));
        assert_eq!(seed.apply(&warned), (Seed::Held, None));

        // Without a seed, results pass through.
        assert_eq!(
            Seed::None.apply(&initial),
            (Seed::None, Some(ProbeResult::Failure))
        );
    }

    #[test]
    fn a_container_that_never_ran_is_not_lost() {
        let s = status(json!({
            "name": "app", "image": "busybox", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}
        }));
        assert!(!ran(Some(&s), None));
        assert!(ran(None, Some(&found("tandem://x", 0, None))));
        let obs = lost(Some(&s), None, true, ts(NOW));
        assert_eq!(obs, ContainerObservation::default());
    }
}
