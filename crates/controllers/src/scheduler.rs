//! The scheduler of a one-node cluster: every pod without `spec.nodeName` is bound to
//! the node, through `pods/binding`, with the `Scheduled` event Kubernetes records.

use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Binding, Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

/// Binds unscheduled pods to `node` until `shutdown`.
pub async fn run(client: kube::Client, node: String, shutdown: CancellationToken) {
    let pods: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields("spec.nodeName=");
    let mut stream = watcher(pods, config).boxed();
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
                if let Err(err) = bind(&client, &pod, &node).await {
                    tracing::warn!(pod = ?pod.metadata.name, %err, "binding pod");
                }
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
        reason: Some("Scheduled".into()),
        message: Some(format!(
            "Successfully assigned {namespace}/{name} to {node}"
        )),
        type_: Some("Normal".into()),
        source: Some(EventSource {
            component: Some("default-scheduler".into()),
            host: None,
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        count: Some(1),
        reporting_component: Some("default-scheduler".into()),
        reporting_instance: Some(format!("default-scheduler-{node}")),
        ..Event::default()
    };
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    events
        .create(&PostParams::default(), &event)
        .await
        .map(|_| ())
}
