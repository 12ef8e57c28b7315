//! The replicaset controller: keeps `spec.replicas` pods of the template running, names
//! them `<replicaset>-<5 random chars>` through `generateName`, and reports their counts in
//! `status`, as kube-controller-manager's does.

pub(crate) mod events;
pub mod logic;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use self::events::Subject;
use self::logic::Diff;

const COMPONENT: &str = "replicaset-controller";

/// What a sync can fail with (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("API call failed: {0}")]
    Api(#[from] kube::Error),
    /// Pod creation failed part way; the rest is retried.
    #[error("creating pods for {0}: {1}")]
    Create(String, kube::Error),
}

struct Ctx {
    client: kube::Client,
}

/// Runs the controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let replicasets: Api<ReplicaSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client });
    let controller = Controller::new(replicasets, watcher::Config::default())
        // A full watch (not `owns`, whose metadata-only watch the API server does not
        // serve) mapped to the controlling replicaset.
        .watches(pods, watcher::Config::default(), |pod: Pod| {
            controller_key(&pod.metadata, "ReplicaSet")
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(%err, "replicaset sync");
            }
        });
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = controller => {}
    }
    tracing::debug!("replicaset controller stopped");
}

/// The object of `kind` that controls the object with `meta`, as a work-queue key.
pub(crate) fn controller_key<K>(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    kind: &str,
) -> Option<ObjectRef<K>>
where
    K: kube::Resource<DynamicType = ()>,
{
    let owner = logic::controller_of(meta).filter(|r| r.kind == kind)?;
    let namespace = meta.namespace.as_deref()?;
    Some(ObjectRef::new(&owner.name).within(namespace))
}

fn error_policy(rs: Arc<ReplicaSet>, err: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!(replicaset = ?rs.metadata.name, %err, "replicaset sync failed; retrying");
    Action::requeue(Duration::from_secs(1))
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let client = &ctx.client;
    let namespace = rs.metadata.namespace.as_deref().unwrap_or("default");
    let name = rs.metadata.name.as_deref().unwrap_or_default();
    let Some(spec) = rs.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    // A fresh list (not a cache) so pods created by the last sync are always counted.
    let selector = logic::selector_query(&spec.selector);
    let pods = pods_api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    adopt(&pods_api, &rs, &pods).await;
    let mut active: Vec<&Pod> = logic::owned(&rs, &pods)
        .into_iter()
        .filter(|p| logic::is_active(p))
        .collect();
    // Adopted orphans count from the next sync on (their watch events bring it).
    let rs_deleting = rs.metadata.deletion_timestamp.is_some();
    let subject = Subject {
        api_version: "apps/v1",
        kind: "ReplicaSet",
        namespace,
        name,
        uid: rs.metadata.uid.as_deref(),
    };
    let mut manage_error = None;
    if !rs_deleting {
        match logic::diff(spec.replicas.unwrap_or(1), &active) {
            Diff::None => {}
            Diff::Create(count) => {
                if let Err(err) = create_pods(client, &pods_api, &rs, &subject, count).await {
                    manage_error = Some(Error::Create(name.to_owned(), err));
                }
            }
            Diff::Delete(victims) => {
                delete_pods(client, &pods_api, &subject, &victims).await?;
                active.retain(|p| {
                    p.metadata
                        .name
                        .as_ref()
                        .is_none_or(|n| !victims.contains(n))
                });
            }
        }
    }
    let (status, recheck) = logic::status(&rs, &active, Timestamp::now());
    if rs.status.as_ref() != Some(&status) {
        let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
        match rs_api
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
            Err(err) => return Err(err.into()),
        }
    }
    if let Some(err) = manage_error {
        return Err(err);
    }
    Ok(recheck.map_or_else(Action::await_change, Action::requeue))
}

/// Takes over matching pods no controller owns (Kubernetes' adoption).
async fn adopt(pods_api: &Api<Pod>, rs: &ReplicaSet, pods: &[Pod]) {
    let owner = logic::controller_ref("apps/v1", "ReplicaSet", &rs.metadata);
    for pod in logic::orphans(rs, pods) {
        let Some(pod_name) = pod.metadata.name.as_deref() else {
            continue;
        };
        let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
        refs.push(owner.clone());
        let patch = json!({ "metadata": {
            "ownerReferences": refs,
            "resourceVersion": pod.metadata.resource_version,
        }});
        if let Err(err) = pods_api
            .patch(pod_name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            tracing::debug!(pod = pod_name, %err, "adopting pod");
        }
    }
}

/// Creates `count` pods in batches of 1, 2, 4, ... (Kubernetes' slow start), stopping at
/// the first batch with a failure so a broken template does not flood the API.
async fn create_pods(
    client: &kube::Client,
    pods_api: &Api<Pod>,
    rs: &ReplicaSet,
    subject: &Subject<'_>,
    count: usize,
) -> Result<(), kube::Error> {
    let pod = logic::pod_from_template(rs);
    let mut remaining = count;
    let mut batch = 1;
    while remaining > 0 {
        let size = batch.min(remaining);
        let results = join_all((0..size).map(|_| async {
            let created = pods_api.create(&PostParams::default(), &pod).await?;
            let pod_name = created.metadata.name.unwrap_or_default();
            events::record(
                client,
                COMPONENT,
                subject,
                "Normal",
                "SuccessfulCreate",
                format!("Created pod: {pod_name}"),
            )
            .await;
            Ok::<(), kube::Error>(())
        }))
        .await;
        let mut first_error = None;
        for result in results {
            if let Err(err) = result {
                first_error.get_or_insert(err);
            }
        }
        if let Some(err) = first_error {
            events::record(
                client,
                COMPONENT,
                subject,
                "Warning",
                "FailedCreate",
                format!("Error creating: {err}"),
            )
            .await;
            return Err(err);
        }
        remaining -= size;
        batch *= 2;
    }
    Ok(())
}

async fn delete_pods(
    client: &kube::Client,
    pods_api: &Api<Pod>,
    subject: &Subject<'_>,
    victims: &[String],
) -> Result<(), kube::Error> {
    let results = join_all(victims.iter().map(|pod_name| async move {
        match pods_api.delete(pod_name, &DeleteParams::default()).await {
            Ok(_) => {}
            // Already gone: the goal is met.
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(err) => return Err(err),
        }
        events::record(
            client,
            COMPONENT,
            subject,
            "Normal",
            "SuccessfulDelete",
            format!("Deleted pod: {pod_name}"),
        )
        .await;
        Ok(())
    }))
    .await;
    results.into_iter().collect()
}
