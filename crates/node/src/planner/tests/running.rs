//! §2 running pods: sidecar restarts, probes, image changes, backoff, and the statuses
//! the printer cases read. Spec test cases 13–17, 26–29, 32, 33.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::sim::*;
use crate::planner::{Action, ProbeResult, StopReason};

fn proxy_app(policy: &str) -> serde_json::Value {
    json!({
        "restartPolicy": policy,
        "initContainers": [sidecar("proxy")],
        "containers": [container("app")],
    })
}

#[test]
fn case13_always_restarts_completed_main() {
    let mut sim = Sim::new(pod(json!({
        "initContainers": [sidecar("logger")],
        "containers": [container("main")],
    })))
    .program("main", vec![exits(5, 0)]);
    sim.run_until(12.0);
    assert_eq!(sim.starts("main"), vec![0.0, 5.0]);
    assert_eq!(state_of(&sim.cs("main")), "waiting:CrashLoopBackOff");
    sim.run_until(60.0);
    assert_eq!(sim.starts("main"), vec![0.0, 5.0, 20.0, 45.0]);
    assert_eq!(sim.starts("logger"), vec![0.0]);
    assert_eq!(sim.phases(), vec!["Pending", "Running"]);
    assert!(
        !sim.log
            .iter()
            .any(|(_, a)| matches!(a, Action::BeginTermination { .. }))
    );
}

fn crash_after_init(policy: &str) -> Sim {
    Sim::new(pod(proxy_app(policy))).program("proxy", vec![exits(20, 1)])
}

#[test]
fn case14_sidecar_crash_after_init_always() {
    let mut sim = crash_after_init("Always");
    sim.run_until(45.0);
    assert_eq!(sim.starts("proxy"), vec![0.0, 20.0]);
    assert_eq!(state_of(&sim.cs("proxy")), "waiting:CrashLoopBackOff");
    assert_eq!(sim.cs("proxy").restart_count, 1);
    assert_eq!(sim.phase(), "Running");
    let ready = sim.condition("Ready");
    assert_eq!(ready.status, "False");
    assert_eq!(
        ready.message.as_deref(),
        Some("containers with unready status: [proxy]")
    );
    assert_eq!(sim.condition("Initialized").status, "True");
    assert!(sim.cs("app").ready);
    sim.run_until(55.0);
    assert_eq!(sim.starts("proxy"), vec![0.0, 20.0, 50.0]);
    assert_eq!(sim.starts("app"), vec![0.0]);
    assert_eq!(sim.cs("app").restart_count, 0);
}

#[test]
fn case15_sidecar_crash_after_init_never() {
    let mut sim = crash_after_init("Never");
    sim.run_until(45.0);
    // Shown Terminated between restarts, but restarted nonetheless (R1, R5).
    assert_eq!(state_of(&sim.cs("proxy")), "terminated:Error:1");
    sim.run_until(55.0);
    assert_eq!(sim.starts("proxy"), vec![0.0, 20.0, 50.0]);
    assert_eq!(state_of(&sim.cs("proxy")), "running");
    assert_eq!(sim.cs("proxy").restart_count, 2);
    assert_eq!(sim.phases(), vec!["Pending", "Running"]);
    assert_eq!(sim.starts("app"), vec![0.0]);
}

#[test]
fn case16_sidecar_exit_zero_is_restarted_but_shown_completed() {
    let mut sim = Sim::new(pod(proxy_app("Always"))).program("proxy", vec![exits(5, 0)]);
    sim.run_until(15.0);
    assert_eq!(sim.starts("proxy"), vec![0.0, 5.0]);
    let proxy = sim.cs("proxy");
    assert_eq!(state_of(&proxy), "terminated:Completed:0");
    assert!(!proxy.ready);
    assert_eq!(sim.phase(), "Running");
    sim.run_until(30.0);
    assert_eq!(sim.starts("proxy"), vec![0.0, 5.0, 20.0]);
}

#[test]
fn case17_liveness_restart_of_sidecar() {
    let probe = with(exec_probe(), json!({"terminationGracePeriodSeconds": 7}));
    let mut sim = Sim::new(pod(json!({
        "initContainers": [with(sidecar("proxy"), json!({"livenessProbe": probe}))],
        "containers": [container("app")],
    })))
    .program(
        "proxy",
        vec![
            Program {
                liveness: vec![(secs(5), ProbeResult::Failure)],
                ..forever()
            },
            forever(),
        ],
    );
    sim.run_until(10.0);
    assert_eq!(
        sim.stops("proxy"),
        vec![(5.0, 7, StopReason::LivenessProbe)]
    );
    assert!(sim.events().iter().any(|(t, e)| *t == 5.0
        && e.reason == "Killing"
        && !e.warning
        && e.message == "Init container proxy failed liveness probe"));
    assert_eq!(sim.starts("proxy"), vec![0.0, 5.0]);
    assert_eq!(sim.cs("proxy").restart_count, 1);
    assert_eq!(sim.starts("app"), vec![0.0]);
    assert_eq!(sim.phases(), vec!["Pending", "Running"]);
}

#[test]
fn main_liveness_failure_in_never_pod_completes_the_pod() {
    let mut sim = Sim::new(pod(json!({
        "restartPolicy": "Never",
        "initContainers": [sidecar("proxy")],
        "containers": [with(container("app"), json!({"livenessProbe": exec_probe()}))],
    })))
    .program(
        "app",
        vec![Program {
            liveness: vec![(secs(5), ProbeResult::Failure)],
            ..forever()
        }],
    );
    sim.run_until(20.0);
    // No restart in a Never pod: the pod kill stops both containers.
    assert_eq!(sim.starts("app"), vec![0.0]);
    assert_eq!(
        sim.stops("app"),
        vec![(5.0, 30, StopReason::PodTermination)]
    );
    assert_eq!(
        sim.stops("proxy"),
        vec![(5.0, 30, StopReason::PodTermination)]
    );
    assert_eq!(sim.phase(), "Failed");
    assert!(sim.done);
}

#[test]
fn main_liveness_failure_restarts_with_message() {
    let mut sim = Sim::new(pod(json!({
        "containers": [with(container("app"), json!({"livenessProbe": exec_probe()}))],
    })))
    .program(
        "app",
        vec![
            Program {
                liveness: vec![(secs(5), ProbeResult::Failure)],
                ..forever()
            },
            forever(),
        ],
    );
    sim.run_until(10.0);
    assert_eq!(sim.stops("app"), vec![(5.0, 30, StopReason::LivenessProbe)]);
    assert!(
        sim.events()
            .iter()
            .any(|(_, e)| e.message == "Container app failed liveness probe, will be restarted")
    );
    assert_eq!(sim.starts("app"), vec![0.0, 5.0]);
    assert_eq!(sim.phase(), "Running");
}

#[test]
fn case26_init_restarts_then_running() {
    let mut sim = Sim::new(pod(json!({
        "initContainers": [container("flaky"), sidecar("proxy")],
        "containers": [container("app")],
    })))
    .program("flaky", vec![exits(0, 1), exits(0, 1), exits(1, 0)]);
    sim.run_until(10.5);
    assert_eq!(sim.cs("flaky").restart_count, 2);
    assert_eq!(state_of(&sim.cs("flaky")), "running");
    assert_eq!(sim.phase(), "Pending");
    sim.run_until(20.0);
    assert_eq!(sim.starts("proxy"), vec![11.0]);
    assert_eq!(sim.starts("app"), vec![11.0]);
    assert_eq!(sim.phase(), "Running");
    assert_eq!(sim.condition("Initialized").status, "True");
    let flaky = sim.cs("flaky");
    assert_eq!(state_of(&flaky), "terminated:Completed:0");
    assert_eq!(flaky.restart_count, 2);
}

#[test]
fn case27_restart_counts_and_last_termination() {
    let mut sim = Sim::new(pod(proxy_app("Always")))
        .program(
            "proxy",
            vec![exits(5, 1), exits(5, 1), exits(5, 1), forever()],
        )
        .program("app", vec![exits(3, 1), forever()]);
    sim.run_until(60.0);
    let proxy = sim.cs("proxy");
    let app = sim.cs("app");
    assert_eq!((proxy.restart_count, app.restart_count), (3, 1));
    let finished = |s: &k8s_openapi::api::core::v1::ContainerStatus| {
        s.last_state
            .clone()
            .and_then(|l| l.terminated)
            .and_then(|t| t.finished_at)
    };
    assert_eq!(finished(&proxy), Some(Time(at(25.0))));
    assert_eq!(finished(&app), Some(Time(at(3.0))));
    assert_eq!(sim.condition("Initialized").status, "True");
}

#[test]
fn case28_first_sidecar_crashing() {
    let mut sim = Sim::new(pod(json!({
        "initContainers": [sidecar("a"), sidecar("b")],
        "containers": [container("app")],
    })))
    .program("a", vec![exits(10, 1)]);
    sim.run_until(25.0);
    assert_eq!(state_of(&sim.cs("a")), "waiting:CrashLoopBackOff");
    let b = sim.cs("b");
    assert!(b.ready && b.started == Some(true));
    assert!(sim.cs("app").ready);
    assert_eq!(sim.condition("Initialized").status, "True");
    assert_eq!(sim.phase(), "Running");
    assert_eq!(sim.starts("b"), vec![0.0]);
}

#[test]
fn case29_not_ready_with_completed_main() {
    let mut sim = Sim::new(pod(json!({
        "restartPolicy": "Never",
        "initContainers": [sidecar("proxy")],
        "containers": [container("a"), container("b")],
    })))
    .program("a", vec![exits(0, 0)]);
    sim.run_until(5.0);
    assert_eq!(state_of(&sim.cs("a")), "terminated:Completed:0");
    assert_eq!(state_of(&sim.cs("b")), "running");
    assert_eq!(sim.starts("a"), vec![0.0]);
    assert_eq!(sim.phase(), "Running");
    let ready = sim.condition("Ready");
    assert_eq!(ready.status, "False");
    assert_eq!(
        ready.message.as_deref(),
        Some("containers with unready status: [a]")
    );
}

#[test]
fn case32_sidecar_image_update() {
    let mut sim = Sim::new(pod(proxy_app("Always")));
    sim.run_until(10.0);
    let app_id = sim.cs("app").container_id;
    sim.set_image("proxy", "img/proxy:v2");
    sim.run_until(20.0);
    assert_eq!(
        sim.stops("proxy"),
        vec![(10.0, 30, StopReason::DefinitionChanged)]
    );
    assert!(
        sim.events().iter().any(|(_, e)| e.reason == "Killing"
            && e.message == "Init container proxy definition changed")
    );
    assert_eq!(sim.starts("proxy"), vec![0.0, 10.0]);
    let proxy = sim.cs("proxy");
    assert_eq!(proxy.image, "img/proxy:v2");
    assert_eq!(proxy.restart_count, 1);
    assert_eq!(sim.cs("app").container_id, app_id);
    assert_eq!(sim.starts("app"), vec![0.0]);
    assert_eq!(sim.phase(), "Running");
}

#[test]
fn case33_backoff_sequence_and_reset() {
    let mut runs = vec![exits(0, 1); 8];
    runs.push(exits(700, 1));
    runs.push(exits(0, 1));
    let mut sim = Sim::new(pod(proxy_app("Always"))).program("proxy", runs);
    sim.run_until(1700.0);
    let starts = sim.starts("proxy");
    assert_eq!(
        &starts[..9],
        &[0.0, 0.0, 10.0, 30.0, 70.0, 150.0, 310.0, 610.0, 910.0]
    );
    // Run 9 lasted 700 s (> 2 × 300 s): the next restart is immediate and the one after
    // waits 10 s again.
    assert_eq!(&starts[9..11], &[1610.0, 1620.0]);
}

#[test]
fn backoff_wakes_at_expiry() {
    let mut sim = Sim::new(pod(proxy_app("Always"))).program("proxy", vec![exits(0, 1)]);
    sim.run_until(1.0);
    let plan = sim.peek();
    assert_eq!(plan.wake_at, Some(at(10.0)));
    assert!(plan.actions.is_empty());
}

#[test]
fn scaled_backoff_config_is_honoured() {
    let mut sim = Sim::new(pod(proxy_app("Always"))).program("proxy", vec![exits(0, 1)]);
    sim.cfg = crate::planner::BackoffConfig {
        initial: secs(1),
        max: secs(4),
    };
    sim.run_until(20.0);
    assert_eq!(
        &sim.starts("proxy")[..7],
        &[0.0, 0.0, 1.0, 3.0, 7.0, 11.0, 15.0]
    );
}
