//! §3 completion and §4 deletion: spec test cases 9–12, 19–23, 30, and D7.

use serde_json::json;

use super::sim::*;
use crate::planner::{Action, KillCause, STATUS_UNKNOWN_MESSAGE, StopReason};

fn job(main: Program, logger: Program, extra: serde_json::Value) -> Sim {
    let mut spec = json!({
        "restartPolicy": "Never",
        "initContainers": [sidecar("logger")],
        "containers": [container("main")],
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    Sim::new(pod(spec))
        .program("main", vec![main])
        .program("logger", vec![logger])
}

fn begins(sim: &Sim) -> Vec<(f64, KillCause, u64)> {
    sim.log
        .iter()
        .filter_map(|(t, a)| match a {
            Action::BeginTermination { cause, grace } => Some((*t, *cause, grace.as_secs())),
            _ => None,
        })
        .collect()
}

#[test]
fn case09_job_style_completion() {
    let mut sim = job(exits(5, 0), traps(1, 0), json!({}));
    sim.run_until(5.0);
    assert_eq!(begins(&sim), vec![(5.0, KillCause::Completed, 30)]);
    assert_eq!(
        sim.stops("logger"),
        vec![(5.0, 30, StopReason::PodTermination)]
    );
    assert!(sim.events().iter().any(|(t, e)| *t == 5.0
        && e.reason == "Killing"
        && e.message == "Stopping container logger"));
    // Transient: main done, logger still stopping.
    assert_eq!(sim.phase(), "Running");
    assert_eq!(state_of(&sim.cs("main")), "terminated:Completed:0");
    sim.run_until(20.0);
    assert_eq!(sim.phases(), vec!["Pending", "Running", "Succeeded"]);
    assert_eq!(state_of(&sim.cs("logger")), "terminated:Completed:0");
    let ready = sim.condition("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("False", Some("PodCompleted"))
    );
    assert_eq!(
        sim.condition("Initialized").reason.as_deref(),
        Some("PodCompleted")
    );
    assert_eq!(sim.condition("PodReadyToStartContainers").status, "False");
    assert_eq!(sim.starts("logger"), vec![0.0]);
    assert!(sim.done);
    let stop_sandbox = sim.actions_named(|a| matches!(a, Action::StopSandbox));
    let done = sim.actions_named(|a| matches!(a, Action::Done));
    assert_eq!((stop_sandbox, done), (vec![6.0], vec![6.0]));
}

#[test]
fn case10_sidecar_exit_code_ignored() {
    let mut sim = job(
        exits(5, 0),
        ignores_term(),
        json!({"terminationGracePeriodSeconds": 5}),
    );
    sim.run_until(30.0);
    assert_eq!(
        sim.stops("logger"),
        vec![(5.0, 5, StopReason::PodTermination)]
    );
    assert_eq!(sim.finished_at("logger"), at(10.0));
    assert_eq!(state_of(&sim.cs("logger")), "terminated:Error:137");
    assert_eq!(sim.phase(), "Succeeded");
}

#[test]
fn case11_main_fails_never() {
    let mut sim = job(exits(5, 1), forever(), json!({}));
    sim.run_until(30.0);
    assert_eq!(sim.phase(), "Failed");
    assert_eq!(state_of(&sim.cs("main")), "terminated:Error:1");
    assert_eq!(sim.stops("logger").len(), 1);
    assert_eq!(
        sim.condition("ContainersReady").reason.as_deref(),
        Some("PodFailed")
    );
    assert_eq!(sim.starts("main"), vec![0.0]);
}

#[test]
fn case12_main_fails_on_failure_then_succeeds() {
    let mut sim = Sim::new(pod(json!({
        "restartPolicy": "OnFailure",
        "initContainers": [sidecar("logger")],
        "containers": [container("main")],
    })))
    .program("main", vec![exits(5, 1), exits(5, 1), exits(5, 0)])
    .program("logger", vec![traps(1, 0)]);
    sim.run_until(12.0);
    assert_eq!(state_of(&sim.cs("main")), "waiting:CrashLoopBackOff");
    assert_eq!(sim.phase(), "Running");
    assert!(sim.cs("logger").ready);
    sim.run_until(60.0);
    assert_eq!(sim.starts("main"), vec![0.0, 5.0, 20.0]);
    assert_eq!(begins(&sim), vec![(25.0, KillCause::Completed, 30)]);
    assert_eq!(sim.starts("logger"), vec![0.0]);
    assert_eq!(sim.phases(), vec!["Pending", "Running", "Succeeded"]);
}

#[test]
fn case19_deletion_order_two_sidecars() {
    let mut sim = Sim::new(pod(json!({
        "initContainers": [sidecar("a"), sidecar("b")],
        "containers": [container("main")],
    })))
    .program("a", vec![traps(2, 0)])
    .program("b", vec![traps(2, 0)])
    .program("main", vec![traps(2, 0)]);
    sim.run_until(10.0);
    sim.delete(None);
    sim.run_until(60.0);
    assert_eq!(begins(&sim), vec![(10.0, KillCause::Deleted, 30)]);
    assert_eq!(
        sim.stops("main"),
        vec![(10.0, 30, StopReason::PodTermination)]
    );
    assert_eq!(sim.stops("b"), vec![(12.0, 28, StopReason::PodTermination)]);
    assert_eq!(sim.stops("a"), vec![(14.0, 26, StopReason::PodTermination)]);
    assert!(sim.finished_at("main") < sim.finished_at("b"));
    assert!(sim.finished_at("b") < sim.finished_at("a"));
    let killing: Vec<_> = sim
        .events()
        .into_iter()
        .filter(|(_, e)| e.reason == "Killing")
        .map(|(t, e)| (t, e.message))
        .collect();
    assert_eq!(
        killing,
        vec![
            (10.0, "Stopping container a".to_string()),
            (10.0, "Stopping container b".to_string()),
            (10.0, "Stopping container main".to_string()),
        ]
    );
    assert_eq!(sim.phase(), "Succeeded");
    assert!(sim.done);
}

#[test]
fn case20_grace_exhausted_by_main() {
    let mut sim = Sim::new(pod(json!({
        "terminationGracePeriodSeconds": 10,
        "initContainers": [sidecar("a"), sidecar("b")],
        "containers": [container("main")],
    })))
    .program("a", vec![ignores_term()])
    .program("b", vec![ignores_term()])
    .program("main", vec![ignores_term()]);
    sim.run_until(10.0);
    sim.delete(None);
    sim.run_until(15.0);
    // Sidecars wait for their turn; the planner wants to be woken at the deadline.
    assert_eq!(sim.peek().wake_at, Some(at(20.0)));
    assert!(sim.stops("a").is_empty());
    sim.run_until(60.0);
    assert_eq!(
        sim.stops("main"),
        vec![(10.0, 10, StopReason::PodTermination)]
    );
    assert_eq!(sim.stops("b"), vec![(20.0, 2, StopReason::PodTermination)]);
    assert_eq!(sim.stops("a"), vec![(20.0, 2, StopReason::PodTermination)]);
    assert_eq!(sim.finished_at("main"), at(20.0));
    assert_eq!(sim.finished_at("a"), at(22.0));
    assert_eq!(state_of(&sim.cs("main")), "terminated:Error:137");
    assert_eq!(sim.phase(), "Failed");
}

#[test]
fn case21_sidecar_pre_stop_timing() {
    let pre_stop = json!({"lifecycle": {"preStop": {"exec": {"command": ["sleep", "1"]}}}});
    let mut sim = Sim::new(pod(json!({
        "initContainers": [with(sidecar("proxy"), pre_stop.clone())],
        "containers": [with(container("main"), pre_stop)],
    })))
    .program(
        "proxy",
        vec![Program {
            pre_stop: secs(3),
            ..forever()
        }],
    )
    .program(
        "main",
        vec![Program {
            pre_stop: secs(1),
            ..forever()
        }],
    );
    sim.run_until(5.0);
    sim.delete(None);
    sim.run_until(60.0);
    let pre_stops: Vec<_> = sim
        .log
        .iter()
        .filter_map(|(t, a)| match a {
            Action::RunPreStop { name, timeout } => Some((*t, name.clone(), timeout.as_secs())),
            _ => None,
        })
        .collect();
    assert_eq!(
        pre_stops,
        vec![
            (5.0, "proxy".to_string(), 30),
            (5.0, "main".to_string(), 30)
        ]
    );
    assert_eq!(
        sim.stops("main"),
        vec![(6.0, 29, StopReason::PodTermination)]
    );
    assert_eq!(
        sim.stops("proxy"),
        vec![(8.0, 27, StopReason::PodTermination)]
    );
    assert!(sim.done);
}

#[test]
fn pre_stop_overrunning_the_budget_gets_two_seconds() {
    let pre_stop = json!({"lifecycle": {"preStop": {"exec": {"command": ["sleep", "99"]}}}});
    let mut sim = Sim::new(pod(json!({
        "terminationGracePeriodSeconds": 5,
        "containers": [with(container("main"), pre_stop)],
    })))
    .program(
        "main",
        vec![Program {
            pre_stop: secs(99),
            ..ignores_term()
        }],
    );
    sim.run_until(1.0);
    sim.delete(None);
    sim.run_until(30.0);
    assert_eq!(
        sim.stops("main"),
        vec![(6.0, 2, StopReason::PodTermination)]
    );
    assert_eq!(sim.finished_at("main"), at(8.0));
}

#[test]
fn case22_sidecar_not_restarted_during_termination() {
    let mut sim = Sim::new(pod(proxy_and_main()))
        .program("proxy", vec![exits(12, 1)])
        .program("main", vec![traps(20, 0)]);
    sim.run_until(10.0);
    sim.delete(None);
    sim.run_until(60.0);
    assert_eq!(sim.starts("proxy"), vec![0.0]);
    assert_eq!(sim.restart_count("proxy"), 0);
    assert!(sim.stops("proxy").is_empty());
    assert_eq!(state_of(&sim.cs("proxy")), "terminated:Error:1");
    assert_eq!(sim.finished_at("main"), at(30.0));
    assert_eq!(sim.actions_named(|a| matches!(a, Action::Done)), vec![30.0]);
}

fn proxy_and_main() -> serde_json::Value {
    json!({
        "initContainers": [sidecar("proxy")],
        "containers": [container("main")],
    })
}

#[test]
fn case23_completion_with_ordering() {
    let mut sim = Sim::new(pod(json!({
        "restartPolicy": "Never",
        "initContainers": [sidecar("a"), sidecar("b")],
        "containers": [container("main")],
    })))
    .program("a", vec![traps(2, 0)])
    .program("b", vec![traps(2, 0)])
    .program("main", vec![exits(1, 0)]);
    sim.run_until(30.0);
    assert_eq!(sim.stops("b"), vec![(1.0, 30, StopReason::PodTermination)]);
    assert_eq!(sim.stops("a"), vec![(3.0, 28, StopReason::PodTermination)]);
    assert_eq!(sim.phase(), "Succeeded");
}

#[test]
fn case30_terminating_during_init() {
    let mut sim = Sim::new(pod(json!({
        "initContainers": [container("slow")],
        "containers": [container("app")],
    })))
    .program("slow", vec![exits(60, 0)]);
    sim.run_until(5.0);
    sim.delete(None);
    sim.run_until(6.0);
    assert_eq!(
        sim.stops("slow"),
        vec![(5.0, 30, StopReason::PodTermination)]
    );
    assert_eq!(state_of(&sim.cs("slow")), "terminated:Error:143");
    assert_eq!(sim.phases(), vec!["Pending", "Failed"]);
    // Never initialized: the main container keeps its Waiting state.
    assert_eq!(state_of(&sim.cs("app")), "waiting:PodInitializing");
    assert!(sim.starts("app").is_empty());
    assert!(sim.done);
}

#[test]
fn main_never_started_after_init_is_status_unknown() {
    let mut sim = Sim::new(pod(json!({
        "initContainers": [sidecar("proxy")],
        "containers": [container("a"), container("b")],
    })))
    .program(
        "b",
        vec![Program {
            start_error: Some(("CreateContainerConfigError", "missing config")),
            ..forever()
        }],
    );
    sim.run_until(5.0);
    assert_eq!(state_of(&sim.cs("b")), "waiting:CreateContainerConfigError");
    sim.delete(None);
    sim.run_until(10.0);
    let b = sim.cs("b");
    let t = b.state.and_then(|s| s.terminated).expect("terminated");
    assert_eq!(t.reason.as_deref(), Some("ContainerStatusUnknown"));
    assert_eq!(t.exit_code, 137);
    assert_eq!(t.message.as_deref(), Some(STATUS_UNKNOWN_MESSAGE));
    assert_eq!(sim.phase(), "Failed");
}

#[test]
fn delete_before_sandbox_finishes_at_once() {
    let mut sim = Sim::new(pod(proxy_and_main()));
    sim.delete(Some(30));
    sim.run_until(1.0);
    assert!(sim.done);
    assert!(
        sim.actions_named(|a| matches!(a, Action::CreateSandbox))
            .is_empty()
    );
    assert_eq!(sim.phase(), "Failed");
}

#[test]
fn shorter_deletion_grace_cuts_a_completion_kill() {
    let mut sim = job(
        exits(5, 0),
        ignores_term(),
        json!({"terminationGracePeriodSeconds": 60}),
    );
    sim.run_until(6.0);
    assert_eq!(
        sim.stops("logger"),
        vec![(5.0, 60, StopReason::PodTermination)]
    );
    sim.delete(Some(3));
    sim.run_until(7.0);
    assert_eq!(
        begins(&sim),
        vec![
            (5.0, KillCause::Completed, 60),
            (6.0, KillCause::Deleted, 3)
        ]
    );
    // The logger was signalled already; the runtime's own timer still applies.
    assert_eq!(sim.stops("logger").len(), 1);
}

#[test]
fn deletion_keeps_start_budget_when_not_shorter() {
    let mut sim = Sim::new(pod(proxy_and_main())).program("main", vec![traps(5, 0)]);
    sim.run_until(1.0);
    sim.delete(None);
    sim.run_until(3.0);
    sim.run_until(20.0);
    assert_eq!(begins(&sim).len(), 1);
}

#[test]
fn terminal_phase_reported_before_is_kept_and_finished() {
    let mut sim = Sim::new(pod(proxy_and_main()));
    sim.run_until(1.0);
    // E.g. the agent restarted and lost its record of the kill.
    let mut prev = sim.status().clone();
    prev.phase = Some("Succeeded".to_string());
    sim.prev = Some(prev);
    sim.run_until(5.0);
    assert_eq!(begins(&sim), vec![(1.0, KillCause::Completed, 30)]);
    assert_eq!(sim.phase(), "Succeeded");
    assert!(sim.done);
}
