//! What the replicaset controller decides, without I/O: which pods it owns, how many to
//! create or which to delete, the pod a template makes, and the status it reports.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

/// Kubernetes creates at most this many pods in one sync (`BurstReplicas`).
pub const BURST_REPLICAS: usize = 500;

/// The change one sync makes to a replicaset's pods.
#[derive(Debug, PartialEq, Eq)]
pub enum Diff {
    /// Nothing to do.
    None,
    /// Create this many pods.
    Create(usize),
    /// Delete these pods (names), in this order.
    Delete(Vec<String>),
}

/// The controller reference of an object, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|r| r.controller == Some(true))
}

/// Whether `labels` satisfy `selector` (an empty selector matches nothing, as a
/// controller's selector must not select every pod).
pub fn selector_matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let match_labels = selector.match_labels.as_ref();
    let exprs = selector.match_expressions.as_deref().unwrap_or_default();
    if match_labels.is_none_or(BTreeMap::is_empty) && exprs.is_empty() {
        return false;
    }
    let labels_ok = match_labels
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    labels_ok
        && exprs.iter().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// The selector in `labelSelector=` query form.
pub fn selector_query(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.as_deref().unwrap_or_default() {
        let values = e.values.as_deref().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

/// A pod that counts towards the replicas: not terminating and not finished.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// When the pod's `Ready` condition last became true, if it is true now.
fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    pod.status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Whether the pod is Ready.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Whether the pod has been Ready for `min_ready` at `now`; else how long until it will be
/// (`Err(None)` when it is not Ready at all).
pub fn availability(
    pod: &Pod,
    min_ready: Duration,
    now: Timestamp,
) -> Result<(), Option<Duration>> {
    let since = ready_since(pod).ok_or(None)?;
    if min_ready.is_zero() {
        return Ok(());
    }
    let Some(since) = since else {
        return Err(Some(min_ready));
    };
    let ready_for = now.duration_since(since);
    let ready_for = Duration::try_from(ready_for).unwrap_or_default();
    if ready_for >= min_ready {
        Ok(())
    } else {
        Err(Some(min_ready - ready_for))
    }
}

/// The pods a replicaset owns (its controller reference names the replicaset's uid).
pub fn owned<'a>(rs: &ReplicaSet, pods: &'a [Pod]) -> Vec<&'a Pod> {
    let Some(uid) = rs.metadata.uid.as_deref() else {
        return Vec::new();
    };
    pods.iter()
        .filter(|p| controller_of(&p.metadata).is_some_and(|r| r.uid == uid))
        .collect()
}

/// Orphans the replicaset adopts: pods its selector matches that no controller owns and
/// that are not going away.
pub fn orphans<'a>(rs: &ReplicaSet, pods: &'a [Pod]) -> Vec<&'a Pod> {
    let Some(selector) = rs.spec.as_ref().map(|s| &s.selector) else {
        return Vec::new();
    };
    if rs.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    pods.iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && controller_of(&p.metadata).is_none()
                && selector_matches(selector, p.metadata.labels.as_ref())
        })
        .collect()
}

/// How many pods to create or which to delete so `active` pods become `desired`.
pub fn diff(desired: i32, active: &[&Pod]) -> Diff {
    let desired = usize::try_from(desired).unwrap_or(0);
    match active.len().cmp(&desired) {
        Ordering::Equal => Diff::None,
        Ordering::Less => Diff::Create((desired - active.len()).min(BURST_REPLICAS)),
        Ordering::Greater => {
            let count = (active.len() - desired).min(BURST_REPLICAS);
            let mut ranked = active.to_vec();
            ranked.sort_by(|a, b| deletion_order(a, b));
            Diff::Delete(
                ranked
                    .into_iter()
                    .take(count)
                    .filter_map(|p| p.metadata.name.clone())
                    .collect(),
            )
        }
    }
}

/// Kubernetes' order of pods to delete first (`ActivePods`): unscheduled before scheduled,
/// Pending before Unknown before Running, not Ready before Ready, Ready for less time
/// first, more restarts first, then the newest first.
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    fn scheduled(p: &Pod) -> bool {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
    }
    fn phase_rank(p: &Pod) -> u8 {
        match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Pending") | None => 0,
            Some("Unknown") => 1,
            _ => 2,
        }
    }
    fn restarts(p: &Pod) -> i32 {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_deref())
            .unwrap_or_default()
            .iter()
            .map(|c| c.restart_count)
            .max()
            .unwrap_or(0)
    }
    fn created(p: &Pod) -> Option<Timestamp> {
        p.metadata.creation_timestamp.as_ref().map(|t| t.0)
    }
    scheduled(a)
        .cmp(&scheduled(b))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| is_ready(a).cmp(&is_ready(b)))
        .then_with(|| {
            // Both Ready: the one Ready more recently goes first.
            match (ready_since(a).flatten(), ready_since(b).flatten()) {
                (Some(x), Some(y)) => y.cmp(&x),
                _ => Ordering::Equal,
            }
        })
        .then_with(|| restarts(b).cmp(&restarts(a)))
        .then_with(|| created(b).cmp(&created(a)))
}

/// The owner reference a controller puts on what it creates.
pub fn controller_ref(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The pod the replicaset creates from its template (`GetPodFromTemplate`): named by the
/// API server from `generateName: <rs>-`.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let name = rs.metadata.name.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: rs.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![controller_ref("apps/v1", "ReplicaSet", &rs.metadata)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// The status a replicaset reports for its `active` pods, and when to look again for a
/// pod that becomes available after `minReadySeconds`.
pub fn status(
    rs: &ReplicaSet,
    active: &[&Pod],
    now: Timestamp,
) -> (ReplicaSetStatus, Option<Duration>) {
    let spec = rs.spec.as_ref();
    let min_ready = Duration::from_secs(
        spec.and_then(|s| s.min_ready_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(0),
    );
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let mut fully_labeled = 0;
    let mut ready = 0;
    let mut available = 0;
    let mut recheck: Option<Duration> = None;
    for pod in active {
        let labels = pod.metadata.labels.as_ref();
        if template_labels
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        {
            fully_labeled += 1;
        }
        if is_ready(pod) {
            ready += 1;
        }
        match availability(pod, min_ready, now) {
            Ok(()) => available += 1,
            Err(Some(wait)) => recheck = Some(recheck.map_or(wait, |r| r.min(wait))),
            Err(None) => {}
        }
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let old = rs.status.as_ref();
    let status = ReplicaSetStatus {
        replicas: count(active.len()),
        fully_labeled_replicas: Some(count(fully_labeled)),
        ready_replicas: Some(count(ready)),
        available_replicas: Some(count(available)),
        observed_generation: rs.metadata.generation,
        conditions: old.and_then(|s| s.conditions.clone()),
        terminating_replicas: old.and_then(|s| s.terminating_replicas),
    };
    (status, recheck)
}

/// Whether the replicaset's template is `template` apart from the `pod-template-hash`
/// label.
pub fn equal_ignoring_hash_rs(
    rs: &ReplicaSet,
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
) -> bool {
    rs.spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .is_some_and(|t| crate::deployment::logic::equal_ignoring_hash(t, template))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, Time};

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn pod(name: &str, created: i64, node: bool, phase: &str, ready_at: Option<i64>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(ts(created))),
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: node.then(|| "n".into()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready_at.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(ts(t))),
                        ..PodCondition::default()
                    }]
                }),
                ..PodStatus::default()
            }),
        }
    }

    fn rs(replicas: i32, min_ready: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web-6d4cf56db6".into()),
                namespace: Some("default".into()),
                uid: Some("rs-uid".into()),
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: Some(min_ready),
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                    ..LabelSelector::default()
                },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(BTreeMap::from([
                            ("app".into(), "web".into()),
                            ("pod-template-hash".into(), "6d4cf56db6".into()),
                        ])),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec::default()),
                }),
            }),
            status: None,
        }
    }

    #[test]
    fn diff_creates_the_missing_pods_and_caps_a_burst() {
        let pods = [pod("a", 0, true, "Running", Some(1))];
        let active: Vec<&Pod> = pods.iter().collect();
        assert_eq!(diff(3, &active), Diff::Create(2));
        assert_eq!(diff(1, &active), Diff::None);
        assert_eq!(diff(10_000, &[]), Diff::Create(BURST_REPLICAS));
    }

    #[test]
    fn scale_down_deletes_unready_and_unscheduled_pods_then_the_newest() {
        let pods = [
            pod("old-ready", 0, true, "Running", Some(5)),
            pod("new-ready", 10, true, "Running", Some(5)),
            pod("not-ready", 1, true, "Running", None),
            pod("pending", 2, true, "Pending", None),
            pod("unscheduled", 3, false, "Pending", None),
        ];
        let active: Vec<&Pod> = pods.iter().collect();
        assert_eq!(
            diff(1, &active),
            Diff::Delete(vec![
                "unscheduled".into(),
                "pending".into(),
                "not-ready".into(),
                "new-ready".into()
            ])
        );
        // Both Ready: the one Ready for less time goes first, whatever its age.
        let pods = [
            pod("long-ready", 10, true, "Running", Some(1)),
            pod("just-ready", 0, true, "Running", Some(50)),
        ];
        let active: Vec<&Pod> = pods.iter().collect();
        assert_eq!(diff(1, &active), Diff::Delete(vec!["just-ready".into()]));
    }

    #[test]
    fn pods_from_the_template_are_generated_names_owned_by_the_replicaset() {
        let pod = pod_from_template(&rs(3, 0));
        assert_eq!(
            pod.metadata.generate_name.as_deref(),
            Some("web-6d4cf56db6-")
        );
        assert_eq!(pod.metadata.name, None);
        assert_eq!(
            pod.metadata
                .labels
                .unwrap()
                .get("pod-template-hash")
                .map(String::as_str),
            Some("6d4cf56db6")
        );
        let owner = &pod.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("ReplicaSet", "web-6d4cf56db6", "rs-uid")
        );
        assert_eq!(
            (owner.controller, owner.block_owner_deletion),
            (Some(true), Some(true))
        );
    }

    #[test]
    fn only_controlled_pods_count_and_unowned_matching_pods_are_adopted() {
        let rs = rs(2, 0);
        let mut mine = pod("mine", 0, true, "Running", None);
        mine.metadata.owner_references =
            Some(vec![controller_ref("apps/v1", "ReplicaSet", &rs.metadata)]);
        let mut other = pod("other", 0, true, "Running", None);
        let mut foreign = controller_ref("apps/v1", "ReplicaSet", &rs.metadata);
        foreign.uid = "someone-else".into();
        other.metadata.owner_references = Some(vec![foreign]);
        let orphan = pod("orphan", 0, true, "Running", None);
        let mut stranger = pod("stranger", 0, true, "Running", None);
        stranger.metadata.labels = Some(BTreeMap::from([("app".into(), "db".into())]));
        let pods = [mine, other, orphan, stranger];
        let names = |v: Vec<&Pod>| -> Vec<String> {
            v.into_iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect()
        };
        assert_eq!(names(owned(&rs, &pods)), ["mine"]);
        assert_eq!(names(orphans(&rs, &pods)), ["orphan"]);
    }

    #[test]
    fn status_counts_ready_and_available_after_min_ready_seconds() {
        let rs = rs(3, 10);
        let pods = [
            pod("a", 0, true, "Running", Some(0)),
            pod("b", 0, true, "Running", Some(95)),
            pod("c", 0, true, "Pending", None),
        ];
        let active: Vec<&Pod> = pods.iter().collect();
        let (status, recheck) = status(&rs, &active, ts(100));
        assert_eq!(status.replicas, 3);
        assert_eq!(status.ready_replicas, Some(2));
        assert_eq!(status.available_replicas, Some(1));
        assert_eq!(status.fully_labeled_replicas, Some(0));
        assert_eq!(status.observed_generation, Some(2));
        // "b" becomes available 5 s later.
        assert_eq!(recheck, Some(Duration::from_secs(5)));
    }

    #[test]
    fn terminating_and_finished_pods_are_not_active() {
        let mut gone = pod("gone", 0, true, "Running", Some(0));
        gone.metadata.deletion_timestamp = Some(Time(ts(1)));
        assert!(!is_active(&gone));
        assert!(!is_active(&pod("done", 0, true, "Succeeded", None)));
        assert!(is_active(&pod("up", 0, true, "Running", None)));
    }

    #[test]
    fn selectors_match_and_render_like_kubernetes() {
        let sel = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["a".into(), "b".into()]),
            }]),
        };
        assert_eq!(selector_query(&sel), "app=web,tier in (a,b)");
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect()
        };
        assert!(selector_matches(
            &sel,
            Some(&labels(&[("app", "web"), ("tier", "b")]))
        ));
        assert!(!selector_matches(
            &sel,
            Some(&labels(&[("app", "web"), ("tier", "c")]))
        ));
        assert!(!selector_matches(
            &LabelSelector::default(),
            Some(&labels(&[("app", "web")]))
        ));
    }
}
