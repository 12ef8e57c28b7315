//! The deployment controller: one replicaset per pod template (`<deployment>-<hash>`),
//! rolled out with RollingUpdate or Recreate, and the deployment's status and conditions,
//! as kube-controller-manager's does.

pub mod logic;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use self::logic::{HASH_LABEL, Step};
use crate::replicaset::controller_key;
use crate::replicaset::events::{self, Subject};
use crate::replicaset::logic::{controller_of, equal_ignoring_hash_rs, is_active, selector_query};

const COMPONENT: &str = "deployment-controller";

/// What a sync can fail with (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("API call failed: {0}")]
    Api(#[from] kube::Error),
}

struct Ctx {
    client: kube::Client,
}

/// Runs the controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let replicasets: Api<ReplicaSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client });
    let controller = Controller::new(deployments, watcher::Config::default());
    let store = controller.store();
    let controller = controller
        .watches(replicasets, watcher::Config::default(), |rs: ReplicaSet| {
            controller_key(&rs.metadata, "Deployment")
        })
        // Recreate waits for old pods to be gone: their deletion must wake the deployment.
        .watches(pods, watcher::Config::default(), move |pod| {
            recreate_owner(&store, &pod)
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(%err, "deployment sync");
            }
        });
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = controller => {}
    }
    tracing::debug!("deployment controller stopped");
}

/// The Recreate deployment a pod belongs to (through its replicaset's name,
/// `<deployment>-<pod-template-hash>`).
fn recreate_owner(store: &Store<Deployment>, pod: &Pod) -> Option<ObjectRef<Deployment>> {
    let owner = controller_of(&pod.metadata).filter(|r| r.kind == "ReplicaSet")?;
    let hash = pod.metadata.labels.as_ref()?.get(HASH_LABEL)?;
    let name = owner.name.strip_suffix(hash.as_str())?.strip_suffix('-')?;
    let namespace = pod.metadata.namespace.as_deref()?;
    let key = ObjectRef::new(name).within(namespace);
    let d = store.get(&key)?;
    let recreate = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate");
    recreate.then_some(key)
}

fn error_policy(d: Arc<Deployment>, err: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!(deployment = ?d.metadata.name, %err, "deployment sync failed; retrying");
    Action::requeue(Duration::from_secs(1))
}

fn ignore_not_found<T>(result: Result<T, kube::Error>) -> Result<Option<T>, kube::Error> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(err) => Err(err),
    }
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let client = &ctx.client;
    let namespace = d.metadata.namespace.as_deref().unwrap_or("default");
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let Some(spec) = d.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    let d_api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let selector = selector_query(&spec.selector);
    if selector.is_empty() {
        // An empty selector would select everything; validation rejects it anyway.
        return Ok(Action::await_change());
    }
    // A fresh list so replicasets written by the last sync are always seen.
    let replicasets = rs_api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let old_pods_running = if is_recreate(&d) {
        old_pods_running(client, namespace, &d, &replicasets, &selector).await?
    } else {
        false
    };
    let plan = logic::plan(&d, &replicasets, old_pods_running, Timestamp::now());
    let subject = Subject {
        api_version: "apps/v1",
        kind: "Deployment",
        namespace,
        name,
        uid: d.metadata.uid.as_deref(),
    };
    for step in &plan.steps {
        match step {
            Step::Create(rs) => {
                if !create_replicaset(client, &rs_api, &d_api, &d, rs, &subject).await? {
                    // A hash collision: the next sync uses the new collisionCount.
                    return Ok(Action::requeue(Duration::ZERO));
                }
            }
            Step::Update {
                name: rs_name,
                replicas,
                annotations,
                min_ready_seconds,
            } => {
                let mut patch = json!({ "metadata": { "annotations": annotations } });
                let mut spec = Map::new();
                if let Some((_, to)) = replicas {
                    spec.insert("replicas".into(), json!(to));
                }
                if let Some(m) = min_ready_seconds {
                    spec.insert("minReadySeconds".into(), json!(m));
                }
                if !spec.is_empty() {
                    patch["spec"] = Value::Object(spec);
                }
                let patched = rs_api
                    .patch(rs_name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                if ignore_not_found(patched)?.is_none() {
                    continue;
                }
                if let Some((from, to)) = replicas.filter(|(from, to)| from != to) {
                    let dir = if to > from { "up" } else { "down" };
                    events::record(
                        client,
                        COMPONENT,
                        &subject,
                        "Normal",
                        "ScalingReplicaSet",
                        format!("Scaled {dir} replica set {rs_name} from {from} to {to}"),
                    )
                    .await;
                }
            }
            Step::Delete(rs_name) => {
                ignore_not_found(rs_api.delete(rs_name, &DeleteParams::default()).await)?;
            }
        }
    }
    if let Some(revision) = &plan.revision {
        let patch = json!({ "metadata": { "annotations": { logic::REVISION: revision } } });
        ignore_not_found(
            d_api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        )?;
    }
    if d.status.as_ref() != Some(&plan.status) {
        let patch = json!({ "status": plan.status });
        ignore_not_found(
            d_api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        )?;
    }
    Ok(plan
        .recheck
        .map_or_else(Action::await_change, Action::requeue))
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

/// Whether pods of the deployment's old replicasets still exist (terminating included).
async fn old_pods_running(
    client: &kube::Client,
    namespace: &str,
    d: &Deployment,
    replicasets: &[ReplicaSet],
    selector: &str,
) -> Result<bool, kube::Error> {
    let template = d.spec.as_ref().map(|s| &s.template);
    let old_uids: Vec<&str> = logic::owned_replicasets_ref(d, replicasets)
        .into_iter()
        .filter(|rs| template.is_none_or(|t| !equal_ignoring_hash_rs(rs, t)))
        .filter_map(|rs| rs.metadata.uid.as_deref())
        .collect();
    if old_uids.is_empty() {
        return Ok(false);
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = pods
        .list(&ListParams::default().labels(selector))
        .await?
        .items;
    Ok(pods.iter().any(|p| {
        let finished = !is_active(p) && p.metadata.deletion_timestamp.is_none();
        !finished && controller_of(&p.metadata).is_some_and(|r| old_uids.contains(&r.uid.as_str()))
    }))
}

/// Creates the new replicaset; on a name clash with a different template, counts a
/// collision in the deployment's status and returns false.
async fn create_replicaset(
    client: &kube::Client,
    rs_api: &Api<ReplicaSet>,
    d_api: &Api<Deployment>,
    d: &Deployment,
    rs: &ReplicaSet,
    subject: &Subject<'_>,
) -> Result<bool, kube::Error> {
    let rs_name = rs.metadata.name.as_deref().unwrap_or_default();
    match rs_api.create(&PostParams::default(), rs).await {
        Ok(_) => {
            let size = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            if size > 0 {
                events::record(
                    client,
                    COMPONENT,
                    subject,
                    "Normal",
                    "ScalingReplicaSet",
                    format!("Scaled up replica set {rs_name} from 0 to {size}"),
                )
                .await;
            }
            Ok(true)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let existing = rs_api.get(rs_name).await?;
            let ours = controller_of(&existing.metadata)
                .is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
            let template = d.spec.as_ref().map(|s| &s.template);
            if ours && template.is_some_and(|t| equal_ignoring_hash_rs(&existing, t)) {
                // Created by an earlier sync whose list did not show it yet.
                return Ok(true);
            }
            let count = d
                .status
                .as_ref()
                .and_then(|s| s.collision_count)
                .unwrap_or(0)
                .saturating_add(1);
            let patch = json!({ "status": { "collisionCount": count } });
            let name = d.metadata.name.as_deref().unwrap_or_default();
            d_api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            Ok(false)
        }
        Err(err) => Err(err),
    }
}
