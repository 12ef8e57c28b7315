//! The scheduler: every pod without `spec.nodeName` is bound, through `pods/binding`, to
//! a node that fits it (for now: the one node, if its labels satisfy the pod's
//! `nodeSelector`), with the `Scheduled` event Kubernetes records. A pod that fits no node
//! stays Pending with `PodScheduled=False` (`Unschedulable`) and a `FailedScheduling`
//! event, and is tried again when it changes.

use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Binding, Event, EventSource, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

/// Binds unscheduled pods to `node` until `shutdown`.
pub async fn run(client: kube::Client, node: String, shutdown: CancellationToken) {
    let pods: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields("spec.nodeName=");
    let mut stream = watcher(pods, config).boxed();
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = stream.next() => event,
        };
        match event {
            Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                if pod.metadata.deletion_timestamp.is_some() || has_node(&pod) {
                    continue;
                }
                // Pods are bound concurrently (a burst of 200 must not queue behind one
                // another); a second binding of the same pod gets a harmless conflict.
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    return;
                };
                let (client, node) = (client.clone(), node.clone());
                tokio::spawn(async move {
                    let labels = node_labels(&client, &node).await;
                    let result = if fits(&pod, &labels) {
                        bind(&client, &pod, &node).await
                    } else {
                        unschedulable(&client, &pod).await
                    };
                    if let Err(err) = result {
                        tracing::warn!(pod = ?pod.metadata.name, %err, "scheduling pod");
                    }
                    drop(permit);
                });
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => {
                tracing::warn!(%err, "watching unscheduled pods; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            None => return,
        }
    }
}

/// Whether the node's labels satisfy the pod's `nodeSelector`.
pub fn fits(pod: &Pod, node_labels: &BTreeMap<String, String>) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_selector.as_ref())
        .is_none_or(|selector| selector.iter().all(|(k, v)| node_labels.get(k) == Some(v)))
}

async fn node_labels(client: &kube::Client, node: &str) -> BTreeMap<String, String> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .get_opt(node)
        .await
        .ok()
        .flatten()
        .and_then(|n| n.metadata.labels)
        .unwrap_or_default()
}

/// The message Kubernetes' scheduler gives when the only node does not match.
pub const NO_FIT: &str = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";

/// Marks the pod `PodScheduled=False` and records `FailedScheduling` (once per change of
/// the condition, so a re-sync does not repeat the event).
async fn unschedulable(client: &kube::Client, pod: &Pod) -> Result<(), kube::Error> {
    let already = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "PodScheduled" && c.status == "False")
        });
    if already {
        return Ok(());
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let now = Timestamp::now();
    let status = serde_json::json!({"status": {
        "phase": "Pending",
        "conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": NO_FIT,
            "lastTransitionTime": Time(now),
        }],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    record(client, pod, "Warning", "FailedScheduling", NO_FIT).await
}

fn has_node(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

async fn bind(client: &kube::Client, pod: &Pod, node: &str) -> Result<(), kube::Error> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            uid: pod.metadata.uid.clone(),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_string()),
            ..ObjectReference::default()
        },
    };
    match pods
        .create_subresource::<_, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => {}
        // Someone bound it first (or it is gone): nothing to do.
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => return Ok(()),
        Err(err) => return Err(err),
    }
    record(
        client,
        pod,
        "Normal",
        "Scheduled",
        &format!("Successfully assigned {namespace}/{name} to {node}"),
    )
    .await
}

async fn record(
    client: &kube::Client,
    pod: &Pod,
    type_: &str,
    reason: &str,
    message: &str,
) -> Result<(), kube::Error> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let now = Timestamp::now();
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        source: Some(EventSource {
            component: Some("default-scheduler".into()),
            host: None,
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        count: Some(1),
        reporting_component: Some("default-scheduler".into()),
        reporting_instance: Some("default-scheduler".into()),
        ..Event::default()
    };
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    events
        .create(&PostParams::default(), &event)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(selector: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c"}], "nodeSelector": selector},
        }))
        .unwrap()
    }

    #[test]
    fn node_selector_must_be_a_subset_of_the_node_labels() {
        let labels: BTreeMap<String, String> = [
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("disk".to_string(), "ssd".to_string()),
        ]
        .into();
        assert!(fits(&pod(serde_json::json!(null)), &labels));
        assert!(fits(&pod(serde_json::json!({"disk": "ssd"})), &labels));
        assert!(!fits(&pod(serde_json::json!({"disk": "hdd"})), &labels));
        assert!(!fits(&pod(serde_json::json!({"gpu": "yes"})), &labels));
    }
}
