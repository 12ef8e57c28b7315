//! The job controller: runs a Job's pods to completion like kube-controller-manager's.
//! Each sync reads the Job and its pods fresh from the API (so a retried sync never
//! creates a pod twice), asks [`decide`] what to do, then creates and deletes pods,
//! writes the status and records Events.

mod decide;
mod events;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

pub use decide::{COMPLETION_INDEX, CONTROLLER_UID, JOB_NAME};

/// Why a sync failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("job has no namespace, name or uid")]
    Incomplete,
    #[error(transparent)]
    Api(#[from] kube::Error),
}

struct Ctx {
    client: kube::Client,
}

/// Runs the controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let jobs: Api<Job> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client });
    let controller = Controller::new(jobs, watcher::Config::default())
        .owns(pods, watcher::Config::default().labels(CONTROLLER_UID))
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {});
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = controller => {}
    }
}

fn error_policy(_job: Arc<Job>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::debug!(%err, "job sync failed; retrying");
    Action::requeue(Duration::from_millis(200))
}

fn not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}

async fn reconcile(cached: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let (Some(namespace), Some(name)) = (
        cached.metadata.namespace.as_deref(),
        cached.metadata.name.as_deref(),
    ) else {
        return Err(Error::Incomplete);
    };
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    // The cache may lag behind our own status writes; decide on the stored Job.
    let job = match jobs.get(name).await {
        Ok(job) => job,
        Err(e) if not_found(&e) => return Ok(Action::await_change()),
        Err(e) => return Err(e.into()),
    };
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let uid = job.metadata.uid.clone().ok_or(Error::Incomplete)?;
    let now = Timestamp::now();

    if let Some(expiry) = decide::ttl_expiry(&job) {
        if expiry <= now {
            let dp = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match jobs.delete(name, &dp).await {
                Ok(_) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(Action::await_change());
        }
        let wait = Duration::try_from(now.duration_until(expiry)).unwrap_or_default();
        return Ok(Action::requeue(wait));
    }

    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let list = pods_api
        .list(&ListParams::default().labels(&format!("{CONTROLLER_UID}={uid}")))
        .await?;
    // Only pods this Job controls count, whatever their labels say.
    let pods: Vec<Pod> = list
        .items
        .into_iter()
        .filter(|p| {
            p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.uid == uid && r.controller == Some(true))
        })
        .collect();

    let decision = decide::decide(&job, &pods, now);
    tracing::debug!(
        job = name,
        pods = pods.len(),
        active = decision.status.active,
        succeeded = decision.status.succeeded,
        create = decision.create.len(),
        delete = ?decision.delete,
        "job sync"
    );

    for pod in &decision.delete {
        match pods_api.delete(pod, &DeleteParams::default()).await {
            Ok(_) => {
                events::record(
                    &ctx.client,
                    &job,
                    false,
                    "SuccessfulDelete",
                    &format!("Deleted pod: {pod}"),
                )
                .await;
            }
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut created = 0usize;
    let mut create_error = None;
    for index in &decision.create {
        let pod = decide::new_pod(&job, *index);
        match pods_api.create(&PostParams::default(), &pod).await {
            Ok(p) => {
                created += 1;
                let pod_name = p.metadata.name.unwrap_or_default();
                events::record(
                    &ctx.client,
                    &job,
                    false,
                    "SuccessfulCreate",
                    &format!("Created pod: {pod_name}"),
                )
                .await;
            }
            Err(e) => {
                events::record(
                    &ctx.client,
                    &job,
                    true,
                    "FailedCreate",
                    &format!("Error creating: {e}"),
                )
                .await;
                create_error = Some(e);
                break;
            }
        }
    }

    let mut status = decision.status.clone();
    if created < decision.create.len() {
        // Count only what exists.
        let missing = i32::try_from(decision.create.len() - created).unwrap_or(0);
        status.active = status.active.map(|a| (a - missing).max(0));
    }
    if job.status.as_ref() != Some(&status) {
        let mut updated = job.clone();
        updated.status = Some(status);
        jobs.replace_status(name, &PostParams::default(), &updated)
            .await?;
    }
    for e in &decision.events {
        events::record(&ctx.client, &job, e.warning, &e.reason, &e.message).await;
    }
    if let Some(e) = create_error {
        return Err(e.into());
    }
    Ok(match decision.requeue {
        Some(after) => Action::requeue(after.max(Duration::from_millis(50))),
        // A finished Job with a TTL comes back through the status write above.
        None => Action::await_change(),
    })
}
