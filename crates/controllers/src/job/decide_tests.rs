use super::*;
use k8s_openapi::api::batch::v1::{
    JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateTerminated, PodCondition, PodSpec, PodStatus,
};

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).unwrap()
}

fn job(completions: Option<i32>, parallelism: i32) -> Job {
    Job {
        metadata: ObjectMeta {
            name: Some("pi".into()),
            namespace: Some("default".into()),
            uid: Some("uid-1".into()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            completions,
            parallelism: Some(parallelism),
            backoff_limit: Some(6),
            completion_mode: Some("NonIndexed".into()),
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![Container {
                        name: "main".into(),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

fn pod(name: &str, phase: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            creation_timestamp: Some(Time(t(0))),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some(phase.into()),
            ..PodStatus::default()
        }),
    }
}

/// A pod that ended with `main` exiting `main_code` and a sidecar `proxy` with 143.
fn ended(name: &str, phase: &str, main_code: i32, at: i64) -> Pod {
    let term = |n: &str, code: i32| ContainerStatus {
        name: n.into(),
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                finished_at: Some(Time(t(at))),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        }),
        ..ContainerStatus::default()
    };
    let mut p = pod(name, phase);
    if let Some(s) = p.status.as_mut() {
        s.container_statuses = Some(vec![term("main", main_code)]);
        s.init_container_statuses = Some(vec![term("proxy", 143)]);
    }
    p
}

fn with_index(mut p: Pod, i: i32) -> Pod {
    p.metadata.annotations = Some([(COMPLETION_INDEX.to_owned(), i.to_string())].into());
    p
}

fn condition<'a>(d: &'a Decision, type_: &str) -> Option<&'a JobCondition> {
    d.status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// Feeds a decision's status back into the job, as the next sync would see it.
fn apply(mut j: Job, d: &Decision) -> Job {
    j.status = Some(d.status.clone());
    j
}

#[test]
fn a_new_job_starts_parallelism_pods_and_its_clock() {
    let d = decide(&job(Some(5), 2), &[], t(0));
    assert_eq!(d.create, vec![None, None]);
    assert_eq!(d.status.active, Some(2));
    assert_eq!(d.status.start_time, Some(Time(t(0))));
    assert!(d.delete.is_empty());
    assert!(d.status.conditions.is_none());
}

#[test]
fn succeeded_pods_are_replaced_until_completions_are_reached() {
    let j = job(Some(3), 2);
    let pods = [pod("a", "Succeeded"), pod("b", "Running")];
    let d = decide(&j, &pods, t(5));
    // One succeeded, one running: one more may run (3 - 1 = 2 remaining, 1 active).
    assert_eq!(d.create.len(), 1);
    assert_eq!(d.status.succeeded, Some(1));
    assert_eq!(d.status.active, Some(2));
}

#[test]
fn a_job_completes_in_two_steps_with_kubernetes_conditions_and_event() {
    let j = job(Some(1), 1);
    let pods = [ended("a", "Succeeded", 0, 3)];
    let d = decide(&j, &pods, t(10));
    let met = condition(&d, "SuccessCriteriaMet").expect("SuccessCriteriaMet");
    assert_eq!(met.reason.as_deref(), Some("CompletionsReached"));
    let complete = condition(&d, "Complete").expect("Complete");
    assert_eq!(complete.reason.as_deref(), Some("CompletionsReached"));
    assert_eq!(
        complete.message.as_deref(),
        Some("Reached expected number of succeeded pods")
    );
    assert_eq!(d.status.completion_time, Some(Time(t(10))));
    assert_eq!(d.status.succeeded, Some(1));
    assert_eq!(
        d.events,
        vec![JobEvent {
            warning: false,
            reason: "Completed".into(),
            message: "Job completed".into()
        }]
    );
    // The next sync changes nothing and records nothing.
    let again = decide(&apply(j, &d), &pods, t(20));
    assert!(again.events.is_empty() && again.create.is_empty());
    assert_eq!(again.status.completion_time, Some(Time(t(10))));
}

#[test]
fn success_waits_for_extra_pods_to_stop_before_complete() {
    let j = job(Some(1), 2);
    let pods = [ended("a", "Succeeded", 0, 3), pod("b", "Running")];
    let d = decide(&j, &pods, t(10));
    assert!(condition(&d, "SuccessCriteriaMet").is_some());
    assert!(condition(&d, "Complete").is_none());
    assert_eq!(d.delete, vec!["b".to_owned()]);
    // Once the extra pod is gone the Job is Complete.
    let d2 = decide(&apply(j, &d), &pods[..1], t(12));
    assert!(condition(&d2, "Complete").is_some());
}

#[test]
fn failures_past_the_backoff_limit_fail_the_job() {
    let mut j = job(Some(1), 1);
    if let Some(s) = j.spec.as_mut() {
        s.backoff_limit = Some(1);
    }
    let one = [ended("a", "Failed", 1, 0)];
    let d = decide(&j, &one, t(1));
    assert!(condition(&d, "FailureTarget").is_none());
    assert_eq!(d.status.failed, Some(1));
    // Backoff: no replacement before 10 s after the failure.
    assert!(d.create.is_empty());
    assert_eq!(d.requeue, Some(Duration::from_secs(9)));
    let d = decide(&j, &one, t(10));
    assert_eq!(d.create.len(), 1);

    let two = [ended("a", "Failed", 1, 0), ended("b", "Failed", 1, 15)];
    let d = decide(&j, &two, t(16));
    for type_ in ["FailureTarget", "Failed"] {
        let c = condition(&d, type_).expect(type_);
        assert_eq!(c.reason.as_deref(), Some("BackoffLimitExceeded"));
        assert_eq!(
            c.message.as_deref(),
            Some("Job has reached the specified backoff limit")
        );
    }
    assert!(d.create.is_empty());
    assert!(
        d.events
            .iter()
            .any(|e| e.warning && e.reason == "BackoffLimitExceeded")
    );
}

#[test]
fn the_active_deadline_fails_the_job_and_stops_its_pods() {
    let mut j = job(Some(1), 1);
    if let Some(s) = j.spec.as_mut() {
        s.active_deadline_seconds = Some(30);
    }
    let first = decide(&j, &[], t(0));
    assert_eq!(first.requeue, Some(Duration::from_secs(30)));
    let j = apply(j, &first);
    let running = [pod("a", "Running")];
    let early = decide(&j, &running, t(20));
    assert_eq!(early.requeue, Some(Duration::from_secs(10)));
    let late = decide(&j, &running, t(30));
    let c = condition(&late, "FailureTarget").expect("FailureTarget");
    assert_eq!(c.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(late.delete, vec!["a".to_owned()]);
    // Failed only once the pod is gone.
    assert!(condition(&late, "Failed").is_none());
    let done = decide(&apply(j, &late), &[], t(31));
    assert_eq!(
        condition(&done, "Failed").and_then(|c| c.reason.as_deref()),
        Some("DeadlineExceeded")
    );
}

#[test]
fn indexed_jobs_fill_the_lowest_missing_indexes() {
    let mut j = job(Some(4), 2);
    if let Some(s) = j.spec.as_mut() {
        s.completion_mode = Some("Indexed".into());
    }
    let pods = [
        with_index(pod("a", "Succeeded"), 0),
        with_index(pod("b", "Running"), 1),
    ];
    let d = decide(&j, &pods, t(0));
    assert_eq!(d.create, vec![Some(2)]);
    assert_eq!(d.status.completed_indexes.as_deref(), Some("0"));
    assert_eq!(d.status.succeeded, Some(1));

    let p = new_pod(&j, Some(2));
    assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-2-"));
    let annotations = p.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations.get(COMPLETION_INDEX).map(String::as_str),
        Some("2")
    );
    let spec = p.spec.unwrap_or_default();
    assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
    assert!(
        spec.containers[0]
            .env
            .iter()
            .flatten()
            .any(|e| e.name == "JOB_COMPLETION_INDEX")
    );
}

#[test]
fn completed_indexes_are_written_as_ranges() {
    let set: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into();
    assert_eq!(format_indexes(&set), "0-2,4,6-7");
    assert_eq!(parse_indexes("0-2,4,6-7"), set);
}

#[test]
fn job_pods_carry_labels_and_a_controller_reference() {
    let p = new_pod(&job(Some(1), 1), None);
    assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-"));
    let labels = p.metadata.labels.unwrap_or_default();
    for key in [CONTROLLER_UID, "controller-uid"] {
        assert_eq!(labels.get(key).map(String::as_str), Some("uid-1"));
    }
    for key in [JOB_NAME, "job-name"] {
        assert_eq!(labels.get(key).map(String::as_str), Some("pi"));
    }
    let owner = &p.metadata.owner_references.unwrap_or_default()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Job", "uid-1"));
    assert_eq!(owner.controller, Some(true));
}

fn on_exit_codes(container: Option<&str>, action: &str) -> Job {
    let mut j = job(Some(1), 1);
    if let Some(s) = j.spec.as_mut() {
        s.pod_failure_policy = Some(PodFailurePolicy {
            rules: vec![PodFailurePolicyRule {
                action: action.into(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: container.map(str::to_owned),
                    operator: "In".into(),
                    values: vec![143],
                }),
                on_pod_conditions: None,
            }],
        });
    }
    j
}

#[test]
fn an_exit_code_rule_without_container_name_matches_a_sidecars_143() {
    // The main container failed with 1; the sidecar was stopped with SIGTERM (143).
    let pods = [ended("a", "Failed", 1, 0)];
    let d = decide(&on_exit_codes(None, "FailJob"), &pods, t(1));
    let c = condition(&d, "Failed").expect("Failed");
    assert_eq!(c.reason.as_deref(), Some("PodFailurePolicy"));
    assert_eq!(
        c.message.as_deref(),
        Some(
            "Container proxy for pod default/a failed with exit code 143 matching FailJob rule at index 0"
        )
    );
    // Naming the main container avoids it.
    let d = decide(&on_exit_codes(Some("main"), "FailJob"), &pods, t(1));
    assert!(condition(&d, "Failed").is_none());
}

#[test]
fn ignored_failures_do_not_count_toward_the_backoff_limit() {
    let pods = [ended("a", "Failed", 143, 0)];
    let d = decide(&on_exit_codes(Some("main"), "Ignore"), &pods, t(30));
    assert_eq!(d.status.failed, Some(0));
    assert_eq!(d.create.len(), 1);
}

#[test]
fn suspending_stops_pods_and_resuming_restarts_the_clock() {
    let mut j = job(Some(2), 2);
    if let Some(s) = j.spec.as_mut() {
        s.suspend = Some(true);
    }
    let running = [pod("a", "Running")];
    let d = decide(&j, &running, t(0));
    assert_eq!(d.delete, vec!["a".to_owned()]);
    assert!(d.create.is_empty());
    assert_eq!(
        condition(&d, "Suspended").and_then(|c| c.reason.as_deref()),
        Some("JobSuspended")
    );
    let mut j = apply(j, &d);
    if let Some(s) = j.spec.as_mut() {
        s.suspend = Some(false);
    }
    let d = decide(&j, &[], t(50));
    assert_eq!(d.create.len(), 2);
    assert_eq!(d.status.start_time, Some(Time(t(50))));
    assert!(condition(&d, "Suspended").is_none());
    assert!(d.events.iter().any(|e| e.reason == "Resumed"));
}

#[test]
fn a_finished_job_expires_after_its_ttl() {
    let mut j = job(Some(1), 1);
    if let Some(s) = j.spec.as_mut() {
        s.ttl_seconds_after_finished = Some(100);
    }
    assert_eq!(ttl_expiry(&j), None);
    let d = decide(&j, &[ended("a", "Succeeded", 0, 1)], t(5));
    assert_eq!(ttl_expiry(&apply(j, &d)), Some(t(105)));
}

#[test]
fn ready_counts_active_pods_with_the_ready_condition() {
    let mut ready = pod("a", "Running");
    if let Some(s) = ready.status.as_mut() {
        s.conditions = Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..PodCondition::default()
        }]);
    }
    let d = decide(&job(Some(4), 2), &[ready, pod("b", "Pending")], t(0));
    assert_eq!(d.status.ready, Some(1));
    assert_eq!(d.status.active, Some(2));
    assert!(d.create.is_empty());
}

#[test]
fn running_pods_are_left_to_finish_when_fewer_completions_remain() {
    // 100 completions, 10 in parallel: 93 done and 10 still running. Only 7 are needed,
    // but the 3 extra running pods are not killed (that would fail them); none are added.
    let mut pods: Vec<Pod> = (0..93)
        .map(|i| pod(&format!("done-{i}"), "Succeeded"))
        .collect();
    pods.extend((0..10).map(|i| pod(&format!("run-{i}"), "Running")));
    let d = decide(&job(Some(100), 10), &pods, t(10));
    assert!(d.delete.is_empty(), "{:?}", d.delete);
    assert!(d.create.is_empty(), "{:?}", d.create);
    // Lowering parallelism does make running pods excess.
    let d = decide(&job(Some(100), 4), &pods, t(10));
    assert_eq!(d.delete.len(), 6);
}
