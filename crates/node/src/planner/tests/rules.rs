//! Direct tests of the phase and condition rules (spec cases 24 and 25) and of the small
//! helpers the planner's messages depend on.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use super::sim::*;
use crate::planner::conditions::{self, ConditionInput};
use crate::planner::phase::pod_phase;
use crate::planner::view::go_duration;
use crate::planner::{backoff_key, qos};

fn spec(v: Value) -> PodSpec {
    serde_json::from_value(v).expect("valid spec")
}

fn status(name: &str, v: Value) -> ContainerStatus {
    let mut base =
        json!({"name": name, "image": "img", "imageID": "", "ready": false, "restartCount": 0});
    if let (Some(b), Some(extra)) = (base.as_object_mut(), v.as_object()) {
        for (k, val) in extra {
            b.insert(k.clone(), val.clone());
        }
    }
    serde_json::from_value(base).expect("valid status")
}

fn terminated(code: i32) -> Value {
    json!({"terminated": {"exitCode": code}})
}

fn running() -> Value {
    json!({"running": {"startedAt": T0}})
}

fn case24_spec() -> PodSpec {
    spec(json!({
        "restartPolicy": "Never",
        "initContainers": [container("init"), sidecar("sidecar")],
        "containers": [container("main")],
    }))
}

#[test]
fn case24_phase_rules() {
    let s = case24_spec();
    let init_done = status("init", json!({"state": terminated(0), "ready": true}));
    let sidecar_killed = status("sidecar", json!({"state": terminated(137)}));

    let all_done = [
        init_done.clone(),
        sidecar_killed.clone(),
        status("main", json!({"state": terminated(0)})),
    ];
    assert_eq!(pod_phase(&s, &all_done, true, false), "Succeeded");
    assert_eq!(pod_phase(&s, &all_done, true, true), "Succeeded");

    let main_failed = [
        init_done.clone(),
        sidecar_killed,
        status("main", json!({"state": terminated(1)})),
    ];
    assert_eq!(pod_phase(&s, &main_failed, true, false), "Failed");

    let sidecar_running = status("sidecar", json!({"state": running(), "started": true}));
    let stopping = [
        init_done.clone(),
        sidecar_running,
        status("main", json!({"state": terminated(0)})),
    ];
    assert_eq!(pod_phase(&s, &stopping, true, false), "Running");

    let not_started = status("sidecar", json!({"state": running(), "started": false}));
    let before_mains = [init_done.clone(), not_started.clone()];
    assert_eq!(pod_phase(&s, &before_mains, false, false), "Pending");

    let restarted_after_init = [
        init_done,
        not_started,
        status("main", json!({"state": running()})),
    ];
    assert_eq!(pod_phase(&s, &restarted_after_init, true, false), "Running");
}

#[test]
fn phase_of_failed_regular_init() {
    let never = case24_spec();
    let failed = [status("init", json!({"state": terminated(3)}))];
    assert_eq!(pod_phase(&never, &failed, false, false), "Failed");
    let mut on_failure = case24_spec();
    on_failure.restart_policy = Some("OnFailure".to_string());
    let waiting = [
        status(
            "init",
            json!({"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": terminated(3)}),
        ),
        status(
            "sidecar",
            json!({"state": {"waiting": {"reason": "PodInitializing"}}}),
        ),
        status(
            "main",
            json!({"state": {"waiting": {"reason": "PodInitializing"}}}),
        ),
    ];
    assert_eq!(pod_phase(&on_failure, &waiting, false, false), "Pending");
}

#[test]
fn phase_all_stopped_depends_on_policy_unless_terminal() {
    let mut s = spec(json!({"containers": [container("main")]}));
    let failed = [status("main", json!({"state": terminated(1)}))];
    assert_eq!(pod_phase(&s, &failed, true, false), "Running");
    assert_eq!(pod_phase(&s, &failed, true, true), "Failed");
    s.restart_policy = Some("OnFailure".to_string());
    assert_eq!(pod_phase(&s, &failed, true, false), "Running");
    let ok = [status("main", json!({"state": terminated(0)}))];
    assert_eq!(pod_phase(&s, &ok, true, false), "Succeeded");
}

fn case25() -> (PodSpec, Vec<ContainerStatus>) {
    (
        spec(json!({
            "initContainers": [sidecar("sidecar")],
            "containers": [container("main")],
        })),
        vec![
            status(
                "sidecar",
                json!({"state": running(), "started": true, "ready": false}),
            ),
            status(
                "main",
                json!({"state": running(), "started": true, "ready": true}),
            ),
        ],
    )
}

#[test]
fn case25_conditions() {
    let (s, statuses) = case25();
    let init = conditions::initialized(&s, &statuses, "Running");
    assert_eq!((init.status.as_str(), init.reason), ("True", None));
    let cready = conditions::containers_ready(&s, &statuses, "Running");
    assert_eq!(cready.status, "False");
    assert_eq!(cready.reason.as_deref(), Some("ContainersNotReady"));
    assert_eq!(
        cready.message.as_deref(),
        Some("containers with unready status: [sidecar]")
    );
    let ready = conditions::ready(&s, &cready, &[]);
    assert_eq!(ready.type_, "Ready");
    assert_eq!(
        (
            ready.status.as_str(),
            ready.reason.as_deref(),
            ready.message.as_deref()
        ),
        (
            "False",
            Some("ContainersNotReady"),
            Some("containers with unready status: [sidecar]")
        )
    );
}

#[test]
fn containers_ready_lists_unknown_then_unready_sidecars_first() {
    let s = spec(json!({
        "initContainers": [sidecar("b-side"), container("setup")],
        "containers": [container("a-main"), container("c-main")],
    }));
    let statuses = [
        status("setup", json!({"state": running()})),
        status("b-side", json!({"state": running()})),
        status(
            "a-main",
            json!({"state": {"waiting": {"reason": "PodInitializing"}}}),
        ),
    ];
    let c = conditions::containers_ready(&s, &statuses, "Pending");
    assert_eq!(
        c.message.as_deref(),
        Some(
            "containers with unknown status: [c-main], containers with unready status: [b-side a-main]"
        )
    );
    let init = conditions::initialized(&s, &statuses, "Pending");
    assert_eq!(init.reason.as_deref(), Some("ContainersNotInitialized"));
    assert_eq!(
        init.message.as_deref(),
        Some("containers with incomplete status: [b-side setup]")
    );
}

#[test]
fn readiness_gates_and_transition_times() {
    let (mut s, mut statuses) = case25();
    statuses[0].ready = true;
    s.readiness_gates = Some(vec![
        serde_json::from_value(json!({"conditionType": "example.com/lb"})).expect("gate"),
    ]);
    let gate = PodCondition {
        type_: "example.com/lb".to_string(),
        status: "False".to_string(),
        ..PodCondition::default()
    };
    let earlier = at(0.0);
    let first = conditions::build(&ConditionInput {
        spec: &s,
        statuses: &statuses,
        phase: "Running",
        sandbox_ready: true,
        previous: &[],
        foreign: std::slice::from_ref(&gate),
        now: earlier,
    });
    let types: Vec<&str> = first.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        types,
        vec![
            "example.com/lb",
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled"
        ]
    );
    let ready = &first[3];
    assert_eq!(ready.reason.as_deref(), Some("ReadinessGatesNotReady"));
    assert_eq!(
        ready.message.as_deref(),
        Some("the status of pod readiness gate \"example.com/lb\" is not \"True\", but False")
    );

    // Later: the gate turns True; Ready flips (new time), the rest keep theirs.
    let mut open = gate.clone();
    open.status = "True".to_string();
    let later = at(42.0);
    let second = conditions::build(&ConditionInput {
        spec: &s,
        statuses: &statuses,
        phase: "Running",
        sandbox_ready: true,
        previous: &first,
        foreign: std::slice::from_ref(&open),
        now: later,
    });
    let time = |cs: &[PodCondition], t: &str| {
        cs.iter()
            .find(|c| c.type_ == t)
            .and_then(|c| c.last_transition_time.clone())
    };
    assert_eq!(time(&second, "Ready"), Some(Time(later)));
    assert_eq!(time(&second, "ContainersReady"), Some(Time(earlier)));
    assert_eq!(time(&second, "Initialized"), Some(Time(earlier)));
}

#[test]
fn missing_readiness_gate_condition() {
    let (mut s, mut statuses) = case25();
    statuses[0].ready = true;
    s.readiness_gates = Some(vec![
        serde_json::from_value(json!({"conditionType": "x/y"})).expect("gate"),
    ]);
    let cready = conditions::containers_ready(&s, &statuses, "Running");
    let ready = conditions::ready(&s, &cready, &[]);
    assert_eq!(
        ready.message.as_deref(),
        Some("corresponding condition of pod readiness gate \"x/y\" does not exist.")
    );
}

#[test]
fn go_durations_match_kubelet_messages() {
    let cases = [
        (0, "0s"),
        (10_000, "10s"),
        (80_000, "1m20s"),
        (160_000, "2m40s"),
        (300_000, "5m0s"),
        (1_500, "1.5s"),
        (100, "100ms"),
        (3_600_000, "1h0m0s"),
    ];
    for (ms, text) in cases {
        assert_eq!(go_duration(Duration::from_millis(ms)), text);
    }
}

#[test]
fn qos_classes() {
    let best = spec(json!({"containers": [container("a")]}));
    assert_eq!(qos::class(&best), "BestEffort");
    let burst = spec(
        json!({"containers": [with(container("a"), json!({"resources": {"requests": {"cpu": "100m"}}}))]}),
    );
    assert_eq!(qos::class(&burst), "Burstable");
    let limits = json!({"resources": {"limits": {"cpu": "1", "memory": "64Mi"}}});
    let guaranteed = spec(json!({
        "initContainers": [with(sidecar("s"), limits.clone())],
        "containers": [with(container("a"), limits)],
    }));
    assert_eq!(qos::class(&guaranteed), "Guaranteed");
}

#[test]
fn backoff_key_covers_image() {
    let p = pod(json!({"containers": [container("a")]}));
    assert_eq!(backoff_key(&p, "a", "img/a"), "web_default_uid-1_a_img/a");
    assert_ne!(
        backoff_key(&p, "a", "img/a"),
        backoff_key(&p, "a", "img/a:v2")
    );
}

#[test]
fn statuses_before_the_sandbox() {
    let mut sim = Sim::new(pod(
        json!({"containers": [container("zeta"), container("alpha")]}),
    ));
    let plan = sim.peek();
    assert_eq!(plan.actions, vec![crate::planner::Action::CreateSandbox]);
    sim.run_until(0.0);
    let first = &sim.history[0].1;
    let names: Vec<&str> = first
        .container_statuses
        .iter()
        .flatten()
        .map(|s| s.name.as_str())
        .collect();
    // Main container statuses are sorted by name.
    assert_eq!(names, vec!["alpha", "zeta"]);
    assert_eq!(state_of(&cs_of(first, "zeta")), "waiting:ContainerCreating");
    assert_eq!(first.init_container_statuses, None);
    assert_eq!(first.phase.as_deref(), Some("Pending"));
    assert_eq!(first.qos_class.as_deref(), Some("BestEffort"));
    assert_eq!(first.start_time, Some(Time(t0())));
    assert_eq!(
        condition_of(first, "PodReadyToStartContainers").status,
        "False"
    );
    assert_eq!(condition_of(first, "Initialized").status, "True");
    // Start time stays.
    sim.run_until(5.0);
    assert_eq!(sim.status().start_time, Some(Time(t0())));
    let zeta = sim.cs("zeta");
    assert_eq!(zeta.container_id.as_deref(), Some("tandem://zeta-1"));
    assert_eq!(zeta.image_id, "img/zeta");
    assert_eq!(zeta.started, Some(true));
}

#[test]
fn regular_init_started_only_while_running() {
    let mut sim = Sim::new(pod(json!({
        "initContainers": [container("setup")],
        "containers": [container("app")],
    })))
    .program("setup", vec![exits(2, 0)]);
    sim.run_until(1.0);
    let setup = sim.cs("setup");
    assert_eq!((setup.started, setup.ready), (Some(true), false));
    sim.run_until(3.0);
    let setup = sim.cs("setup");
    assert_eq!((setup.started, setup.ready), (Some(false), true));
}
