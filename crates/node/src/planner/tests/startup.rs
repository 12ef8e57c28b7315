//! §1 startup ordering and failures: spec test cases 1–8, 18, 31 and 40.

use serde_json::json;

use super::sim::*;
use crate::planner::{Action, KillCause, ProbeResult, StopReason};

fn position(sim: &Sim, pred: impl Fn(&Action) -> bool) -> usize {
    sim.log
        .iter()
        .position(|(_, a)| pred(a))
        .expect("action present")
}

fn started(name: &'static str) -> impl Fn(&Action) -> bool {
    move |a| matches!(a, Action::StartContainer { name: n, .. } if n == name)
}

#[test]
fn case01_basic_order() {
    let mut sim = Sim::new(pod(json!({
        "initContainers": [container("init"), sidecar("proxy")],
        "containers": [container("app")],
    })))
    .program("init", vec![exits(3, 0)]);
    sim.run_until(10.0);

    assert_eq!(sim.starts("init"), vec![0.0]);
    assert_eq!(sim.starts("proxy"), vec![3.0]);
    assert_eq!(sim.starts("app"), vec![3.0]);
    assert!(position(&sim, started("proxy")) < position(&sim, started("app")));
    assert_eq!(sim.phases(), vec!["Pending", "Running"]);

    let first = &sim.history[0].1;
    let init_cond = condition_of(first, "Initialized");
    assert_eq!(init_cond.status, "False");
    assert_eq!(
        init_cond.reason.as_deref(),
        Some("ContainersNotInitialized")
    );
    assert_eq!(
        init_cond.message.as_deref(),
        Some("containers with incomplete status: [init proxy]")
    );
    assert_eq!(state_of(&cs_of(first, "app")), "waiting:PodInitializing");

    for c in [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ] {
        assert_eq!(sim.condition(c).status, "True", "{c}");
    }
    assert!(sim.cs("proxy").ready && sim.cs("app").ready);
    assert_eq!(state_of(&sim.cs("init")), "terminated:Completed:0");
    assert!(sim.cs("init").ready);
    assert_eq!(sim.cs("init").started, Some(false));
}

#[test]
fn case02_startup_probe_gates_mains() {
    let mut sim = Sim::new(pod(json!({
        "initContainers": [with(sidecar("proxy"), json!({"startupProbe": exec_probe()}))],
        "containers": [container("app")],
    })))
    .program(
        "proxy",
        vec![Program {
            startup: vec![(secs(10), ProbeResult::Success)],
            ..forever()
        }],
    );
    sim.run_until(5.0);
    assert_eq!(sim.phase(), "Pending");
    let proxy = sim.cs("proxy");
    assert_eq!(state_of(&proxy), "running");
    assert_eq!(proxy.started, Some(false));
    let app = sim.cs("app");
    assert_eq!(state_of(&app), "waiting:PodInitializing");
    assert_eq!(app.container_id, None);
    assert!(sim.starts("app").is_empty());

    sim.run_until(12.0);
    assert_eq!(sim.cs("proxy").started, Some(true));
    assert_eq!(sim.starts("app"), vec![10.0]);
    assert_eq!(sim.phase(), "Running");
    assert!(sim.cs("proxy").ready && sim.cs("app").ready);
}

#[test]
fn case03_readiness_does_not_gate_init() {
    let mut sim = Sim::new(pod(json!({
        "initContainers": [with(sidecar("proxy"), json!({"readinessProbe": exec_probe()}))],
        "containers": [container("app")],
    })))
    .program(
        "proxy",
        vec![Program {
            readiness: vec![(secs(1), ProbeResult::Failure)],
            ..forever()
        }],
    );
    sim.run_until(5.0);
    assert_eq!(sim.starts("app"), vec![0.0]);
    assert_eq!(sim.phase(), "Running");
    assert!(!sim.cs("proxy").ready);
    assert!(sim.cs("app").ready);
    for c in ["Ready", "ContainersReady"] {
        let cond = sim.condition(c);
        assert_eq!(cond.status, "False");
        assert_eq!(cond.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            cond.message.as_deref(),
            Some("containers with unready status: [proxy]")
        );
    }
    assert_eq!(sim.condition("Initialized").status, "True");
}

#[test]
fn case04_sidecar_regular_init_sidecar() {
    let mut sim = Sim::new(pod(json!({
        "initContainers": [sidecar("a"), container("b"), sidecar("c")],
        "containers": [container("main")],
    })))
    .program("b", vec![exits(2, 0)]);
    sim.run_until(1.0);
    assert_eq!(sim.starts("a"), vec![0.0]);
    assert_eq!(sim.starts("b"), vec![0.0]);
    assert!(sim.starts("c").is_empty());
    assert!(sim.cs("a").ready && sim.cs("a").started == Some(true));
    assert_eq!(state_of(&sim.cs("b")), "running");
    assert_eq!(
        sim.condition("Initialized").message.as_deref(),
        Some("containers with incomplete status: [b c]")
    );
    sim.run_until(5.0);
    assert_eq!(sim.starts("c"), vec![2.0]);
    assert_eq!(sim.starts("main"), vec![2.0]);
    assert!(position(&sim, started("a")) < position(&sim, started("b")));
    assert!(position(&sim, started("c")) < position(&sim, started("main")));
    assert_eq!(sim.phase(), "Running");
}

fn crashing_sidecar_pod(policy: &str) -> Sim {
    Sim::new(pod(json!({
        "restartPolicy": policy,
        "initContainers": [sidecar("proxy")],
        "containers": [container("app")],
    })))
    .program("proxy", vec![exits(0, 1)])
}

#[test]
fn case05_sidecar_crash_during_init_never() {
    let mut sim = crashing_sidecar_pod("Never");
    sim.run_until(5.0);
    assert_eq!(sim.restart_count("proxy"), 1);
    // A Never pod shows the crashed sidecar as Terminated between restarts (§6.2).
    assert_eq!(state_of(&sim.cs("proxy")), "terminated:Error:1");
    sim.run_until(100.0);
    assert_eq!(sim.starts("proxy"), vec![0.0, 0.0, 10.0, 30.0, 70.0]);
    assert_eq!(sim.restart_count("proxy"), 4);
    assert!(sim.starts("app").is_empty());
    assert_eq!(sim.phases(), vec!["Pending"]);
    assert!(
        !sim.log
            .iter()
            .any(|(_, a)| matches!(a, Action::BeginTermination { .. }))
    );
}

#[test]
fn case06_sidecar_crash_during_init_always() {
    let mut sim = crashing_sidecar_pod("Always");
    sim.run_until(5.0);
    let proxy = sim.cs("proxy");
    assert_eq!(state_of(&proxy), "waiting:CrashLoopBackOff");
    let waiting = proxy.state.and_then(|s| s.waiting).expect("waiting");
    assert_eq!(
        waiting.message.as_deref(),
        Some("back-off 10s restarting failed container=proxy pod=web_default(uid-1)")
    );
    let last = proxy
        .last_state
        .and_then(|s| s.terminated)
        .expect("last state");
    assert_eq!(last.exit_code, 1);
    assert_eq!(proxy.restart_count, 1);

    sim.run_until(100.0);
    let backoffs: Vec<_> = sim
        .events()
        .into_iter()
        .filter(|(_, e)| e.reason == "BackOff")
        .collect();
    // One event per blocked crash: at 0 (second exit), 10, 30 and 70 s.
    assert_eq!(
        backoffs.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        vec![0.0, 10.0, 30.0, 70.0]
    );
    let (_, e) = &backoffs[0];
    assert!(e.warning);
    assert_eq!(
        e.message,
        "Back-off restarting failed container proxy in pod web_default(uid-1)"
    );
    assert_eq!(e.container.as_deref(), Some("proxy"));
    assert_eq!(sim.phase(), "Pending");
}

fn failing_setup_pod(policy: &str) -> Sim {
    Sim::new(pod(json!({
        "restartPolicy": policy,
        "initContainers": [sidecar("proxy"), container("setup")],
        "containers": [container("app")],
    })))
    .program("proxy", vec![traps(1, 0)])
    .program("setup", vec![exits(0, 3)])
}

#[test]
fn case07_regular_init_fails_never() {
    let mut sim = failing_setup_pod("Never");
    sim.run_until(0.0);
    // Failed at once (P1) while the sidecar is still stopping.
    assert_eq!(sim.phase(), "Failed");
    assert_eq!(state_of(&sim.cs("proxy")), "running");
    assert_eq!(state_of(&sim.cs("setup")), "terminated:Error:3");
    assert!(sim.log.iter().any(|(_, a)| matches!(
        a,
        Action::BeginTermination {
            cause: KillCause::InitFailed,
            ..
        }
    )));
    assert_eq!(
        sim.stops("proxy"),
        vec![(0.0, 30, StopReason::PodTermination)]
    );
    sim.run_until(10.0);
    assert!(sim.done);
    assert_eq!(sim.phases(), vec!["Pending", "Failed"]);
    assert!(sim.starts("app").is_empty());
    assert_eq!(sim.starts("setup"), vec![0.0]);
    assert_eq!(sim.condition("Initialized").status, "False");
    assert_eq!(state_of(&sim.cs("proxy")), "terminated:Completed:0");
}

#[test]
fn case08_regular_init_fails_on_failure() {
    let mut sim = failing_setup_pod("OnFailure");
    sim.run_until(5.0);
    let setup = sim.cs("setup");
    assert_eq!(state_of(&setup), "waiting:CrashLoopBackOff");
    assert_eq!(setup.restart_count, 1);
    assert_eq!(state_of(&sim.cs("proxy")), "running");
    assert!(sim.cs("proxy").ready);
    sim.run_until(60.0);
    assert_eq!(sim.starts("setup"), vec![0.0, 0.0, 10.0, 30.0]);
    assert_eq!(sim.restart_count("proxy"), 0);
    assert_eq!(sim.phases(), vec!["Pending"]);
    assert!(sim.starts("app").is_empty());
}

#[test]
fn case18_startup_probe_failure_restarts_sidecar_never() {
    let probe = with(
        exec_probe(),
        json!({"failureThreshold": 3, "terminationGracePeriodSeconds": 5}),
    );
    let mut sim = Sim::new(pod(json!({
        "restartPolicy": "Never",
        "initContainers": [with(sidecar("proxy"), json!({"startupProbe": probe}))],
        "containers": [container("app")],
    })))
    .program(
        "proxy",
        vec![Program {
            startup: vec![(secs(3), ProbeResult::Failure)],
            ..forever()
        }],
    );
    sim.run_until(60.0);
    assert_eq!(sim.starts("proxy"), vec![0.0, 3.0, 16.0, 39.0]);
    let stops = sim.stops("proxy");
    assert_eq!(stops[0], (3.0, 5, StopReason::StartupProbe));
    assert!(sim.events().iter().any(|(t, e)| *t == 3.0
        && e.reason == "Killing"
        && e.message == "Init container proxy failed startup probe"));
    assert!(sim.starts("app").is_empty());
    assert_eq!(sim.phases(), vec!["Pending"]);
}

#[test]
fn case31_image_pull_error_on_sidecar() {
    let mut sim = Sim::new(pod(json!({
        "initContainers": [sidecar("proxy")],
        "containers": [container("app")],
    })))
    .program(
        "proxy",
        vec![Program {
            start_error: Some(("ErrImagePull", "pull access denied")),
            ..forever()
        }],
    );
    sim.run_until(0.0);
    let proxy = sim.cs("proxy");
    assert_eq!(state_of(&proxy), "waiting:ErrImagePull");
    assert_eq!(
        proxy
            .state
            .and_then(|s| s.waiting)
            .and_then(|w| w.message)
            .as_deref(),
        Some("pull access denied")
    );
    sim.run_until(5.0);
    let proxy = sim.cs("proxy");
    assert_eq!(state_of(&proxy), "waiting:ImagePullBackOff");
    assert_eq!(
        proxy
            .state
            .and_then(|s| s.waiting)
            .and_then(|w| w.message)
            .as_deref(),
        Some("Back-off pulling image \"img/proxy\"")
    );
    sim.run_until(80.0);
    assert_eq!(sim.starts("proxy"), vec![0.0, 10.0, 30.0, 70.0]);
    assert!(sim.starts("app").is_empty());
    assert_eq!(sim.phases(), vec!["Pending"]);
}

#[test]
fn create_container_config_error_is_shown_and_retried() {
    let mut sim = Sim::new(pod(json!({"containers": [container("app")]}))).program(
        "app",
        vec![
            Program {
                start_error: Some((
                    "CreateContainerConfigError",
                    "no command and image is not built in",
                )),
                ..forever()
            },
            Program {
                start_error: Some((
                    "CreateContainerConfigError",
                    "no command and image is not built in",
                )),
                ..forever()
            },
            forever(),
        ],
    );
    sim.run_until(5.0);
    let app = sim.cs("app");
    assert_eq!(state_of(&app), "waiting:CreateContainerConfigError");
    assert_eq!(
        app.state
            .and_then(|s| s.waiting)
            .and_then(|w| w.message)
            .as_deref(),
        Some("no command and image is not built in")
    );
    assert_eq!(sim.phase(), "Pending");
    sim.run_until(40.0);
    assert_eq!(sim.starts("app"), vec![0.0, 10.0, 30.0]);
    assert_eq!(state_of(&sim.cs("app")), "running");
    assert_eq!(sim.phase(), "Running");
    // Retry pacing is dropped once the container runs.
    assert!(
        sim.backoff
            .keys()
            .all(|k| !k.ends_with(crate::planner::START_ERROR_SUFFIX))
    );
}

fn post_start_pod() -> serde_json::Value {
    json!({
        "initContainers": [
            with(sidecar("a"), json!({"lifecycle": {"postStart": {"exec": {"command": ["sleep", "5"]}}}})),
            sidecar("b"),
        ],
        "containers": [container("main")],
    })
}

#[test]
fn case40_post_start_gates_next_entry() {
    let mut sim = Sim::new(pod(post_start_pod())).program(
        "a",
        vec![Program {
            post_start: Some((secs(5), true)),
            ..forever()
        }],
    );
    sim.run_until(3.0);
    assert_eq!(sim.cs("a").started, Some(false));
    assert!(sim.starts("b").is_empty());
    sim.run_until(8.0);
    assert_eq!(sim.starts("a"), vec![0.0]);
    assert_eq!(sim.starts("b"), vec![5.0]);
    assert_eq!(sim.starts("main"), vec![5.0]);
    assert_eq!(sim.cs("a").started, Some(true));
}

#[test]
fn case40_failing_post_start_is_killed_and_restarted() {
    let mut sim = Sim::new(pod(post_start_pod())).program(
        "a",
        vec![Program {
            post_start: Some((secs(1), false)),
            ..forever()
        }],
    );
    sim.run_until(30.0);
    assert!(sim.starts("b").is_empty());
    assert!(sim.starts("main").is_empty());
    // Killed when each hook fails, restarted at once after the first crash, then backoff.
    assert_eq!(sim.starts("a"), vec![0.0, 1.0, 12.0]);
    assert_eq!(
        sim.stops("a")
            .iter()
            .map(|(t, _, r)| (*t, r.clone()))
            .collect::<Vec<_>>(),
        vec![
            (1.0, StopReason::PostStartHook),
            (2.0, StopReason::PostStartHook),
            (13.0, StopReason::PostStartHook)
        ]
    );
    let failed: Vec<_> = sim
        .events()
        .into_iter()
        .filter(|(_, e)| e.reason == "FailedPostStartHook")
        .collect();
    assert_eq!(failed.len(), 3);
    assert!(failed[0].1.warning);
    assert_eq!(failed[0].1.message, "PostStartHook failed");
    // Between the kill and the immediate restart the start error is on display.
    assert!(
        sim.history
            .iter()
            .any(|(_, s)| state_of(&cs_of(s, "a")) == "waiting:PostStartHookError")
    );
    assert_eq!(sim.phases(), vec!["Pending"]);
}

fn running_instance(name: &str) -> crate::planner::Instance {
    crate::planner::Instance {
        id: format!("tandem://{name}-1"),
        image: format!("img/{name}"),
        state: crate::planner::InstanceState::Running { started_at: t0() },
        post_start: crate::planner::HookState::NotRun,
        probes: Default::default(),
    }
}

#[test]
fn s5_already_initialized_restarts_only_sidecars() {
    // E.g. after an agent restart: the main container runs, init statuses are gone.
    let mut sim = Sim::new(pod(json!({
        "initContainers": [container("setup"), sidecar("proxy")],
        "containers": [container("app")],
    })));
    sim.obs.sandbox = crate::planner::SandboxState::Ready;
    sim.obs.containers.insert(
        "app".to_string(),
        crate::planner::ContainerObservation {
            current: Some(running_instance("app")),
            ..Default::default()
        },
    );
    let plan = sim.peek();
    assert_eq!(
        plan.actions,
        vec![Action::StartContainer {
            name: "proxy".to_string(),
            kind: crate::planner::ContainerKind::Sidecar
        }]
    );
}

#[test]
fn created_container_is_started_again() {
    let mut sim = Sim::new(pod(json!({
        "initContainers": [sidecar("proxy")],
        "containers": [container("app")],
    })));
    sim.obs.sandbox = crate::planner::SandboxState::Ready;
    let mut created = running_instance("proxy");
    created.state = crate::planner::InstanceState::Created;
    sim.obs.containers.insert(
        "proxy".to_string(),
        crate::planner::ContainerObservation {
            current: Some(created),
            ..Default::default()
        },
    );
    let plan = sim.peek();
    assert_eq!(sim.starts("proxy"), Vec::<f64>::new());
    assert!(plan.actions.iter().any(|a| started("proxy")(a)));
    assert!(!plan.actions.iter().any(|a| started("app")(a)));
    // A created-but-not-running container shows Waiting with no reason.
    assert_eq!(state_of(&cs_of(&plan.status, "proxy")), "waiting:");
    // While the start is in flight nothing new is issued for it.
    if let Some(c) = sim.obs.containers.get_mut("proxy") {
        c.in_flight = true;
    }
    assert!(sim.peek().actions.is_empty());
}

#[test]
fn backoff_event_once_per_crash() {
    let mut sim = crashing_sidecar_pod("Always");
    sim.run_until(5.0);
    // Called again while still backing off: same reason, no second event.
    let plan = sim.peek();
    assert!(plan.actions.is_empty());
    assert_eq!(
        state_of(&cs_of(&plan.status, "proxy")),
        "waiting:CrashLoopBackOff"
    );
    assert_eq!(plan.wake_at, Some(at(10.0)));
}
