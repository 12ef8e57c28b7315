//! The namespace controller: empties a deleting namespace (every namespaced resource
//! the server serves), then removes the `kubernetes` finalizer through `finalize` so the
//! server removes the namespace; and keeps a `default` ServiceAccount in every active
//! namespace (the service account controller's job in Kubernetes).

mod decide;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::gc::{Served, served_resources};

/// Why a sync failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("namespace has no name")]
    Incomplete,
    #[error(transparent)]
    Api(#[from] kube::Error),
}

struct Ctx {
    client: kube::Client,
    /// Namespaced resources, discovered on first need.
    resources: Mutex<Option<Vec<Served>>>,
}

/// Runs the controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let accounts: Api<ServiceAccount> = Api::all(client.clone());
    let ctx = Arc::new(Ctx {
        client,
        resources: Mutex::new(None),
    });
    let controller = Controller::new(namespaces, watcher::Config::default())
        // A deleted `default` account is recreated.
        .watches(
            accounts,
            watcher::Config::default(),
            |sa: ServiceAccount| {
                sa.metadata
                    .namespace
                    .filter(|_| sa.metadata.name.as_deref() == Some("default"))
                    .map(|ns| ObjectRef::new(&ns))
            },
        )
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {});
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = controller => {}
    }
}

fn error_policy(_ns: Arc<Namespace>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::debug!(%err, "namespace sync failed; retrying");
    Action::requeue(Duration::from_millis(500))
}

async fn namespaced_resources(ctx: &Ctx) -> Result<Vec<Served>, kube::Error> {
    let mut cached = ctx.resources.lock().await;
    if let Some(r) = cached.as_ref() {
        return Ok(r.clone());
    }
    let found: Vec<Served> = served_resources(&ctx.client)
        .await?
        .into_iter()
        .filter(|s| s.namespaced)
        .collect();
    *cached = Some(found.clone());
    Ok(found)
}

async fn reconcile(cached: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = cached.metadata.name.as_deref().ok_or(Error::Incomplete)?;
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let Some(ns) = namespaces.get_opt(name).await? else {
        return Ok(Action::await_change());
    };
    if ns.metadata.deletion_timestamp.is_none() {
        ensure_default_account(&ctx.client, name).await?;
        return Ok(Action::await_change());
    }
    if !decide::waits_for_us(&ns) {
        return Ok(Action::await_change());
    }

    // Delete what is left; pods take their grace period, so come back until empty.
    let mut remaining = 0usize;
    for served in namespaced_resources(&ctx).await? {
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), name, &served.ar);
        let items = match api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => continue,
            Err(e) => return Err(e.into()),
        };
        remaining += items.len();
        for item in items
            .iter()
            .filter(|i| i.metadata.deletion_timestamp.is_none())
        {
            let Some(item_name) = item.metadata.name.as_deref() else {
                continue;
            };
            match api.delete(item_name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if remaining > 0 {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }

    let mut finalized = ns.clone();
    finalized
        .spec
        .get_or_insert_with(Default::default)
        .finalizers = Some(decide::finalizers_after_cleanup(&ns));
    match namespaces
        .replace_subresource::<Namespace>("finalize", name, &PostParams::default(), &finalized)
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

async fn ensure_default_account(client: &kube::Client, namespace: &str) -> Result<(), kube::Error> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    if accounts.get_opt("default").await?.is_some() {
        return Ok(());
    }
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("default".into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    match accounts.create(&PostParams::default(), &sa).await {
        Ok(_) => Ok(()),
        // Already there, or the namespace started terminating meanwhile.
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => Ok(()),
        Err(e) => Err(e),
    }
}
