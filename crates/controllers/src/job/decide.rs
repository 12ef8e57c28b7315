//! What the job controller does in one sync, decided without I/O: given a Job, the pods
//! it owns and the time, which pods to create (with their completion index), which to
//! delete, and the status (counts and conditions) the Job gets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{
    Job, JobCondition, JobStatus, PodFailurePolicyRule, UncountedTerminatedPods,
};
use k8s_openapi::api::core::v1::{
    ContainerStatus, EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
const LEGACY_CONTROLLER_UID: &str = "controller-uid";
const LEGACY_JOB_NAME: &str = "job-name";

/// Kubernetes' pod backoff: 10 s, doubled per consecutive failure, at most 6 min.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

/// An Event to record on the Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

/// The outcome of one sync.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// One entry per pod to create: its completion index (Indexed jobs) or `None`.
    pub create: Vec<Option<i32>>,
    /// Names of pods to delete.
    pub delete: Vec<String>,
    /// The new status (compare with the old one to decide whether to write it).
    pub status: JobStatus,
    pub events: Vec<JobEvent>,
    /// Sync again after this long even if nothing changes (deadline, backoff).
    pub requeue: Option<Duration>,
}

/// How a pod stands, for counting.
enum PodState {
    Active,
    Terminating,
    Succeeded,
    Failed,
}

fn state(pod: &Pod) -> PodState {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Succeeded") => PodState::Succeeded,
        Some("Failed") => PodState::Failed,
        _ if pod.metadata.deletion_timestamp.is_some() => PodState::Terminating,
        _ => PodState::Active,
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// The completion index a pod carries (annotation, else label).
pub fn pod_index(pod: &Pod) -> Option<i32> {
    let from = |m: &Option<BTreeMap<String, String>>| {
        m.as_ref()
            .and_then(|m| m.get(COMPLETION_INDEX))
            .and_then(|v| v.parse::<i32>().ok())
    };
    from(&pod.metadata.annotations).or_else(|| from(&pod.metadata.labels))
}

/// When a finished pod finished: its containers' last `finishedAt`, else its creation.
fn finish_time(pod: &Pod) -> Option<Timestamp> {
    let status = pod.status.as_ref();
    let all = status
        .into_iter()
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    all.or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Parses `completedIndexes` ("1,3-5,7").
pub fn parse_indexes(text: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    out.insert(i);
                }
            }
        }
    }
    out
}

/// Formats indexes as Kubernetes does: ascending, runs of 2+ as "a-b".
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if end > start {
            format!("{start}-{end}")
        } else {
            start.to_string()
        });
    }
    parts.join(",")
}

fn condition_true(conditions: &[JobCondition], type_: &str) -> Option<JobCondition> {
    conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .cloned()
}

/// Sets a condition; times change only when the status does.
fn set_condition(
    conditions: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let fresh = JobCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if c.status == status => {
            c.reason = fresh.reason;
            c.message = fresh.message;
        }
        Some(c) => *c = fresh,
        None => conditions.push(fresh),
    }
}

/// The container whose exit code a pod failure policy rule matches: main containers
/// first, then init containers, which include sidecars (so a rule without
/// `containerName` can match a sidecar's 143). Exit code 0 never matches.
fn match_exit_codes<'a>(
    pod: &'a Pod,
    container: Option<&str>,
    operator: &str,
    values: &[i32],
) -> Option<&'a ContainerStatus> {
    let status = pod.status.as_ref()?;
    let matches = |c: &&ContainerStatus| {
        let Some(code) = c
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| t.exit_code)
        else {
            return false;
        };
        container.is_none_or(|n| n == c.name)
            && code != 0
            && match operator {
                "In" => values.contains(&code),
                "NotIn" => !values.contains(&code),
                _ => false,
            }
    };
    status
        .container_statuses
        .iter()
        .flatten()
        .find(matches)
        .or_else(|| {
            status
                .init_container_statuses
                .iter()
                .flatten()
                .find(matches)
        })
}

/// The first pod failure policy rule matching a failed pod: its action and message.
fn match_rule(rules: &[PodFailurePolicyRule], pod: &Pod) -> Option<(String, String)> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    for (i, rule) in rules.iter().enumerate() {
        if let Some(req) = &rule.on_exit_codes
            && let Some(c) = match_exit_codes(
                pod,
                req.container_name.as_deref(),
                &req.operator,
                &req.values,
            )
        {
            let code = c
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map_or(0, |t| t.exit_code);
            return Some((
                rule.action.clone(),
                format!(
                    "Container {} for pod {namespace}/{name} failed with exit code {code} matching {} rule at index {i}",
                    c.name, rule.action
                ),
            ));
        }
        for pattern in rule.on_pod_conditions.iter().flatten() {
            let wanted = pattern.status.as_str();
            let has = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == pattern.type_ && c.status == wanted)
                });
            if has {
                return Some((
                    rule.action.clone(),
                    format!(
                        "Pod {namespace}/{name} has condition {} matching {} rule at index {i}",
                        pattern.type_, rule.action
                    ),
                ));
            }
        }
    }
    None
}

fn to_std(d: SignedDuration) -> Duration {
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

/// [`decide_refs`] on owned pods.
#[cfg(test)]
pub fn decide(job: &Job, pods: &[Pod], now: Timestamp) -> Decision {
    decide_refs(job, &pods.iter().collect::<Vec<_>>(), now)
}

/// Decides one sync of `job` owning `pods` at `now`.
pub fn decide_refs(job: &Job, pods: &[&Pod], now: Timestamp) -> Decision {
    let spec = job.spec.clone().unwrap_or_default();
    let old = job.status.clone().unwrap_or_default();
    let mut conditions = old.conditions.clone().unwrap_or_default();
    let mut d = Decision::default();

    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let replace_only_failed = spec.pod_replacement_policy.as_deref() == Some("Failed");

    let mut active: Vec<&Pod> = Vec::new();
    let mut terminating: Vec<&Pod> = Vec::new();
    let mut succeeded_pods: Vec<&Pod> = Vec::new();
    let mut failed_pods: Vec<&Pod> = Vec::new();
    for &pod in pods {
        match state(pod) {
            PodState::Active => active.push(pod),
            PodState::Terminating => terminating.push(pod),
            PodState::Succeeded => succeeded_pods.push(pod),
            PodState::Failed => failed_pods.push(pod),
        }
    }
    failed_pods.sort_by_key(|p| finish_time(p));

    // Successes: counted from the pods, never below what the status already says (a
    // finished pod may have been deleted since).
    let mut completed = parse_indexes(old.completed_indexes.as_deref().unwrap_or(""));
    let succeeded = if indexed {
        let limit = spec.completions.unwrap_or(0);
        completed.extend(
            succeeded_pods
                .iter()
                .filter_map(|p| pod_index(p))
                .filter(|i| (0..limit).contains(i)),
        );
        i32::try_from(completed.len()).unwrap_or(i32::MAX)
    } else {
        old.succeeded
            .unwrap_or(0)
            .max(i32::try_from(succeeded_pods.len()).unwrap_or(i32::MAX))
    };

    // Failures, through the pod failure policy (ignored ones are not counted).
    let rules = spec
        .pod_failure_policy
        .as_ref()
        .map(|p| p.rules.as_slice())
        .unwrap_or(&[]);
    let mut counted_failures: Vec<&Pod> = Vec::new();
    let mut policy_failure = None;
    for pod in &failed_pods {
        match match_rule(rules, pod) {
            Some((action, _)) if action == "Ignore" => {}
            Some((action, message)) if action == "FailJob" => {
                counted_failures.push(pod);
                policy_failure.get_or_insert(("PodFailurePolicy".to_owned(), message));
            }
            _ => counted_failures.push(pod),
        }
    }
    let failed = old
        .failed
        .unwrap_or(0)
        .max(i32::try_from(counted_failures.len()).unwrap_or(i32::MAX));

    let mut status = JobStatus {
        active: None,
        ready: None,
        terminating: None,
        succeeded: Some(succeeded),
        failed: Some(failed),
        start_time: old.start_time.clone(),
        completion_time: old.completion_time.clone(),
        completed_indexes: (indexed && !completed.is_empty()).then(|| format_indexes(&completed)),
        failed_indexes: old.failed_indexes.clone(),
        uncounted_terminated_pods: Some(UncountedTerminatedPods::default()),
        conditions: None,
    };

    let finished = condition_true(&conditions, "Complete").is_some()
        || condition_true(&conditions, "Failed").is_some();
    let names = |ps: &[&Pod]| -> Vec<String> {
        ps.iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect::<Vec<_>>()
    };

    // A verdict reached earlier (or now): stop the active pods, and finish once no pod
    // is left running.
    let mut verdict: Option<(bool, String, String)> = if finished {
        None
    } else if let Some(c) = condition_true(&conditions, "FailureTarget") {
        Some((
            false,
            c.reason.unwrap_or_default(),
            c.message.unwrap_or_default(),
        ))
    } else if condition_true(&conditions, "SuccessCriteriaMet").is_some() {
        Some((true, String::new(), String::new()))
    } else {
        None
    };

    let suspended = spec.suspend == Some(true);
    if !finished && verdict.is_none() {
        let deadline_passed = spec.active_deadline_seconds.and_then(|secs| {
            let start = status.start_time.as_ref()?.0;
            let end = start.checked_add(SignedDuration::from_secs(secs)).ok()?;
            Some((end <= now, end))
        });
        let restarts_past_limit = spec
            .template
            .spec
            .as_ref()
            .is_some_and(|s| s.restart_policy.as_deref() == Some("OnFailure"))
            && {
                let restarts: i32 = active
                    .iter()
                    .filter_map(|p| p.status.as_ref())
                    .flat_map(|s| {
                        s.container_statuses
                            .iter()
                            .flatten()
                            .chain(s.init_container_statuses.iter().flatten())
                    })
                    .map(|c| c.restart_count)
                    .sum();
                if backoff_limit == 0 {
                    restarts > 0
                } else {
                    restarts >= backoff_limit
                }
            };
        let complete = match spec.completions {
            Some(c) => succeeded >= c,
            None => succeeded > 0 && active.is_empty(),
        };
        if let Some((reason, message)) = policy_failure {
            verdict = Some((false, reason, message));
        } else if failed > backoff_limit || restarts_past_limit {
            verdict = Some((
                false,
                "BackoffLimitExceeded".to_owned(),
                "Job has reached the specified backoff limit".to_owned(),
            ));
        } else if !suspended && deadline_passed.is_some_and(|(passed, _)| passed) {
            verdict = Some((
                false,
                "DeadlineExceeded".to_owned(),
                "Job was active longer than specified deadline".to_owned(),
            ));
        } else if complete {
            verdict = Some((true, String::new(), String::new()));
        } else if let Some((false, end)) = deadline_passed
            && !suspended
        {
            d.requeue = Some(to_std(now.duration_until(end)));
        }
        match &verdict {
            Some((false, reason, message)) => set_condition(
                &mut conditions,
                "FailureTarget",
                "True",
                reason,
                message,
                now,
            ),
            Some((true, _, _)) => set_condition(
                &mut conditions,
                "SuccessCriteriaMet",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                now,
            ),
            None => {}
        }
    }

    if finished || verdict.is_some() {
        d.delete = names(&active);
        let still_running = !active.is_empty() || !terminating.is_empty();
        match verdict {
            Some(_) if still_running => d.requeue = Some(Duration::from_secs(1)),
            Some((false, reason, message)) => {
                set_condition(&mut conditions, "Failed", "True", &reason, &message, now);
                d.events.push(JobEvent {
                    warning: true,
                    reason,
                    message,
                });
            }
            Some((true, _, _)) => {
                set_condition(
                    &mut conditions,
                    "Complete",
                    "True",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now,
                );
                status.completion_time = Some(Time(now));
                d.events.push(JobEvent {
                    warning: false,
                    reason: "Completed".to_owned(),
                    message: "Job completed".to_owned(),
                });
            }
            None => {}
        }
        status.active = Some(0);
        status.ready = Some(0);
        status.terminating = Some(i32::try_from(terminating.len() + d.delete.len()).unwrap_or(0));
        status.conditions = (!conditions.is_empty()).then_some(conditions);
        d.status = status;
        return d;
    }

    if suspended {
        d.delete = names(&active);
        if condition_true(&conditions, "Suspended").is_none() {
            set_condition(
                &mut conditions,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
                now,
            );
            d.events.push(JobEvent {
                warning: false,
                reason: "Suspended".to_owned(),
                message: "Job suspended".to_owned(),
            });
        }
        // The deadline counts from the resume.
        status.start_time = None;
        status.active = Some(0);
        status.ready = Some(0);
        status.terminating = Some(i32::try_from(terminating.len() + d.delete.len()).unwrap_or(0));
        status.conditions = (!conditions.is_empty()).then_some(conditions);
        d.status = status;
        return d;
    }

    if condition_true(&conditions, "Suspended").is_some() {
        set_condition(
            &mut conditions,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            now,
        );
        d.events.push(JobEvent {
            warning: false,
            reason: "Resumed".to_owned(),
            message: "Job resumed".to_owned(),
        });
        status.start_time = Some(Time(now));
        if let Some(secs) = spec.active_deadline_seconds {
            d.requeue = Some(Duration::from_secs(secs.max(0).unsigned_abs()));
        }
    }
    if status.start_time.is_none() {
        status.start_time = Some(Time(now));
        if let Some(secs) = spec.active_deadline_seconds {
            d.requeue = Some(Duration::from_secs(secs.max(0).unsigned_abs()));
        }
    }

    // How many pods should run now.
    let remaining = spec.completions.map(|c| (c - succeeded).max(0));
    let want = match remaining {
        Some(r) => parallelism.min(r),
        // A work queue: once one pod succeeded, no new ones start.
        None if succeeded > 0 => i32::try_from(active.len()).unwrap_or(0),
        None => parallelism,
    };
    let mut keep: Vec<&Pod> = active.clone();

    // Indexed: one pod per index; duplicates and indexes out of range go.
    let mut held: BTreeSet<i32> = BTreeSet::new();
    if indexed {
        let limit = spec.completions.unwrap_or(0);
        keep.retain(|p| match pod_index(p) {
            Some(i) if (0..limit).contains(&i) && !completed.contains(&i) && held.insert(i) => true,
            _ => {
                d.delete.extend(p.metadata.name.clone());
                false
            }
        });
        if replace_only_failed {
            held.extend(terminating.iter().filter_map(|p| pod_index(p)));
        }
    }

    let counted_active = i32::try_from(keep.len()).unwrap_or(i32::MAX)
        + if replace_only_failed {
            i32::try_from(terminating.len()).unwrap_or(0)
        } else {
            0
        };
    // Only more pods than `parallelism` are excess (a lowered parallelism): pods already
    // running when fewer completions remain are left to finish, as Kubernetes does.
    let excess_count = counted_active - parallelism;
    let diff = if excess_count > 0 {
        -excess_count
    } else {
        (want - counted_active).max(0)
    };
    if diff < 0 {
        // Excess: not-ready and not-running pods first, then the newest.
        let mut order = keep.clone();
        order.sort_by_key(|p| {
            (
                is_ready(p),
                is_running(p),
                std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
            )
        });
        let excess: Vec<&Pod> = order
            .into_iter()
            .take(usize::try_from(-diff).unwrap_or(0))
            .collect();
        d.delete.extend(names(&excess));
        keep.retain(|p| !excess.iter().any(|e| std::ptr::eq(*e, *p)));
    } else if diff > 0 {
        // Failures since the last success delay new pods (exponential backoff).
        let last_success = succeeded_pods.iter().filter_map(|p| finish_time(p)).max();
        let recent: Vec<Timestamp> = counted_failures
            .iter()
            .filter_map(|p| finish_time(p))
            .filter(|t| last_success.is_none_or(|s| *t > s))
            .collect();
        let wait = recent.iter().max().and_then(|last| {
            let n = u32::try_from(recent.len()).unwrap_or(u32::MAX);
            let delay = BACKOFF_BASE
                .checked_mul(2u32.saturating_pow(n.saturating_sub(1)))
                .unwrap_or(BACKOFF_MAX)
                .min(BACKOFF_MAX);
            let until = last
                .checked_add(SignedDuration::try_from(delay).ok()?)
                .ok()?;
            (until > now).then(|| to_std(now.duration_until(until)))
        });
        match wait {
            Some(w) => d.requeue = Some(d.requeue.map_or(w, |r| r.min(w))),
            None if indexed => {
                let limit = spec.completions.unwrap_or(0);
                d.create = (0..limit)
                    .filter(|i| !completed.contains(i) && !held.contains(i))
                    .take(usize::try_from(diff).unwrap_or(0))
                    .map(Some)
                    .collect();
            }
            None => d.create = vec![None; usize::try_from(diff).unwrap_or(0)],
        }
    }

    status.active = Some(i32::try_from(keep.len() + d.create.len()).unwrap_or(i32::MAX));
    status.ready = Some(i32::try_from(keep.iter().filter(|p| is_ready(p)).count()).unwrap_or(0));
    status.terminating = Some(i32::try_from(terminating.len() + d.delete.len()).unwrap_or(0));
    status.conditions = (!conditions.is_empty()).then_some(conditions);
    d.status = status;
    d
}

/// When a finished Job may be deleted (`ttlSecondsAfterFinished`), if it has finished
/// and has a TTL.
pub fn ttl_expiry(job: &Job) -> Option<Timestamp> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let finished = conditions
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
    let at = job
        .status
        .as_ref()
        .and_then(|s| s.completion_time.as_ref())
        .or(finished.last_transition_time.as_ref())?
        .0;
    at.checked_add(SignedDuration::from_secs(i64::from(ttl)))
        .ok()
}

/// The pod a Job creates: its template with the Job's labels, an owner reference and,
/// for Indexed jobs, the completion index (annotation, label, env and hostname).
pub fn new_pod(job: &Job, index: Option<i32>) -> Pod {
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let template: PodTemplateSpec = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(CONTROLLER_UID.to_owned(), uid.clone());
    labels.insert(JOB_NAME.to_owned(), name.clone());
    labels.insert(LEGACY_CONTROLLER_UID.to_owned(), uid.clone());
    labels.insert(LEGACY_JOB_NAME.to_owned(), name.clone());
    let mut annotations = tmeta.annotations.unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    let generate_name = match index {
        Some(i) => {
            labels.insert(COMPLETION_INDEX.to_owned(), i.to_string());
            annotations.insert(COMPLETION_INDEX.to_owned(), i.to_string());
            if spec.hostname.as_deref().is_none_or(str::is_empty) {
                spec.hostname = Some(format!("{name}-{i}"));
            }
            let env = EnvVar {
                name: "JOB_COMPLETION_INDEX".to_owned(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: Some("v1".to_owned()),
                        field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                    }),
                    ..EnvVarSource::default()
                }),
            };
            for c in spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten())
            {
                c.env.get_or_insert_with(Vec::new).push(env.clone());
            }
            format!("{name}-{i}-")
        }
        None => format!("{name}-"),
    };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".to_owned(),
                kind: "Job".to_owned(),
                name,
                uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
