//! The EndpointSlice and Endpoints controllers (one loop): for every Service with a
//! selector, keeps its EndpointSlices and its legacy Endpoints object listing the pods the
//! selector picks, ready or not, as kube-controller-manager does. Services without a
//! selector are left to their users.

pub mod logic;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

/// What a sync can fail with (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("service has no namespace or name")]
    Incomplete,
    #[error(transparent)]
    Api(#[from] kube::Error),
}

struct Ctx {
    client: kube::Client,
}

/// Runs the controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let services: Api<Service> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client });
    let controller = Controller::new(services, watcher::Config::default());
    let cache = controller.store();
    let controller = controller
        // A pod change concerns the Services in its namespace whose selector picks it
        // (a pod that stopped matching is caught by the periodic resync).
        .watches(pods, watcher::Config::default(), move |pod: Pod| {
            let namespace = pod.metadata.namespace.clone();
            let labels = pod.metadata.labels.clone();
            cache
                .state()
                .into_iter()
                .filter(|svc| svc.metadata.namespace == namespace)
                .filter(|svc| {
                    svc.spec
                        .as_ref()
                        .and_then(|s| s.selector.as_ref())
                        .is_some_and(|sel| {
                            !sel.is_empty() && logic::map_selects(sel, labels.as_ref())
                        })
                })
                .map(|svc| ObjectRef::from_obj(svc.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(%err, "endpoints sync");
            }
        });
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = controller => {}
    }
}

fn error_policy(_svc: Arc<Service>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::debug!(%err, "endpoints sync failed; retrying");
    Action::requeue(Duration::from_millis(500))
}

fn not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}

fn ignore_missing(result: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match result {
        Err(e) if not_found(&e) => Ok(()),
        other => other,
    }
}

async fn reconcile(cached: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let (Some(namespace), Some(name)) = (
        cached.metadata.namespace.as_deref(),
        cached.metadata.name.as_deref(),
    ) else {
        return Err(Error::Incomplete);
    };
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), namespace);
    let endpoints: Api<Endpoints> = Api::namespaced(ctx.client.clone(), namespace);
    let owned = ListParams::default().labels(&format!(
        "{}={name},{}={}",
        logic::SERVICE_NAME,
        logic::MANAGED_BY,
        logic::CONTROLLER
    ));

    let service = match services.get_opt(name).await? {
        Some(s) if s.metadata.deletion_timestamp.is_none() => s,
        _ => {
            // Gone: its slices go with it (owner references); the legacy object has none.
            ignore_missing(
                endpoints
                    .delete(name, &DeleteParams::default())
                    .await
                    .map(|_| ()),
            )?;
            return Ok(Action::await_change());
        }
    };
    let selector = service
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .filter(|s| !s.is_empty());
    let Some(selector) = selector else {
        return Ok(Action::await_change());
    };
    let label_selector = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default().labels(&label_selector))
        .await?
        .items;

    // Slices: keep the existing names, change only what differs.
    let want = logic::desired_slices(&service, &pods);
    let mut have = slices.list(&owned).await?.items;
    have.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut have = have.into_iter();
    for desired in want {
        match have.next() {
            Some(existing) if logic::same_content(&existing, &desired) => {}
            Some(existing) => {
                let mut updated = desired;
                updated.metadata.name = existing.metadata.name.clone();
                updated.metadata.generate_name = None;
                updated.metadata.resource_version = existing.metadata.resource_version.clone();
                let slice_name = existing.metadata.name.clone().unwrap_or_default();
                slices
                    .replace(&slice_name, &PostParams::default(), &updated)
                    .await?;
            }
            None => {
                slices.create(&PostParams::default(), &desired).await?;
            }
        }
    }
    for extra in have {
        let extra_name = extra.metadata.name.unwrap_or_default();
        ignore_missing(
            slices
                .delete(&extra_name, &DeleteParams::default())
                .await
                .map(|_| ()),
        )?;
    }

    // The legacy Endpoints object.
    let desired = logic::desired_endpoints(&service, &pods);
    match endpoints.get_opt(name).await? {
        Some(existing) => {
            if existing.subsets != desired.subsets
                || existing.metadata.labels != desired.metadata.labels
            {
                let mut updated = desired;
                updated.metadata.resource_version = existing.metadata.resource_version;
                endpoints
                    .replace(name, &PostParams::default(), &updated)
                    .await?;
            }
        }
        None => {
            endpoints.create(&PostParams::default(), &desired).await?;
        }
    }
    // Catch pods that stopped matching the selector without an event for this Service.
    Ok(Action::requeue(Duration::from_secs(30)))
}
