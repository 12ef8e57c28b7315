//! The job controller: runs a Job's pods to completion like kube-controller-manager's.
//! Each sync reads the Job fresh from the API, takes its pods from the controller's
//! cache, asks [`decide`] what to do, then creates and deletes pods, writes the status
//! and records Events.
//!
//! The cache is fed by the watch that also triggers the syncs, so a sync always sees the
//! change that triggered it. It can still lag behind what this controller has just done:
//! a sync that trusted it then would create a pod again, or delete another one. So, as
//! kube-controller-manager does with its expectations, the controller remembers the pods
//! it created and deleted until the cache shows that, and until then a sync lists the
//! Job's pods from the API instead (a retried sync never creates a pod twice). Listing
//! on every sync made a Job of 100 pods decode ~10,000 pods on both sides of the API.
//!
//! A Job is synced as soon as one of its pods changes. kube-controller-manager instead
//! waits up to a second after a pod event (`syncJobBatchPeriod`), so that a burst of pod
//! changes in a large cluster costs one sync: a pod that finished is replaced up to a
//! second later there. One node's Jobs never make such bursts, and a sync costs a few
//! milliseconds, so tandem does not wait: a Job of short pods finishes in the time its
//! pods take rather than a second more per wave of pods. The sync itself is the same.

mod decide;
mod events;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{self, Action, trigger_owners, trigger_self};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, applier, watcher};
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
    pods: PodCache,
}

/// The pods of all Jobs as the watch shows them, and what this controller did to them
/// that the watch has not shown yet.
struct PodCache {
    /// Every pod that carries a Job's controller-uid label.
    pods: Store<Pod>,
    /// Per Job uid.
    pending: Mutex<HashMap<String, Pending>>,
}

/// Pods (by uid) created or deleted by this controller that the cache does not show as
/// such yet.
#[derive(Debug, Default)]
struct Pending {
    created: HashSet<String>,
    deleted: HashSet<String>,
}

impl Pending {
    /// Crosses off what `pods` (the cache) shows; true once nothing is left.
    fn settle(&mut self, pods: &[Arc<Pod>]) -> bool {
        let find = |uid: &String| pods.iter().find(|p| p.metadata.uid.as_ref() == Some(uid));
        self.created.retain(|uid| find(uid).is_none());
        self.deleted
            .retain(|uid| find(uid).is_some_and(|p| p.metadata.deletion_timestamp.is_none()));
        self.created.is_empty() && self.deleted.is_empty()
    }
}

impl PodCache {
    /// The pods `job_uid` controls, from the cache, or None while the cache may lack
    /// pods this controller created or show pods it deleted as still running.
    fn cached_pods(&self, job_uid: &str) -> Option<Vec<Arc<Pod>>> {
        let pods: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| controlled_by(p, job_uid))
            .collect();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waiting) = pending.get_mut(job_uid) {
            if !waiting.settle(&pods) {
                return None;
            }
            pending.remove(job_uid);
        }
        Some(pods)
    }

    /// After a list from the API: a created pod it does not show is gone already, and the
    /// cache may never show it.
    fn listed(&self, job_uid: &str, listed: &[Arc<Pod>]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waiting) = pending.get_mut(job_uid) {
            waiting
                .created
                .retain(|uid| listed.iter().any(|p| p.metadata.uid.as_ref() == Some(uid)));
        }
    }

    fn created(&self, job_uid: &str, pod_uid: String) {
        self.pending_of(job_uid, |p| p.created.insert(pod_uid));
    }

    fn deleted(&self, job_uid: &str, pod_uid: String) {
        self.pending_of(job_uid, |p| p.deleted.insert(pod_uid));
    }

    fn pending_of(&self, job_uid: &str, f: impl FnOnce(&mut Pending) -> bool) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        f(pending.entry(job_uid.to_owned()).or_default());
    }
}

/// Whether `job_uid` is `pod`'s controller (only such pods count, whatever their labels).
fn controlled_by(pod: &Pod, job_uid: &str) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == job_uid && r.controller == Some(true))
}

/// Runs the controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let (jobs, jobs_writer) = reflector::store::<Job>();
    let (pods, pods_writer) = reflector::store::<Pod>();
    let job_changes = reflector::reflector(
        jobs_writer,
        watcher(Api::<Job>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .applied_objects();
    // A pod's change (or removal) is in the cache before it triggers its Job's sync.
    let pod_changes = reflector::reflector(
        pods_writer,
        watcher(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().labels(CONTROLLER_UID),
        ),
    )
    .default_backoff()
    .touched_objects();
    let queue = futures::stream::select(
        trigger_self(job_changes, ()).boxed(),
        trigger_owners(pod_changes, (), ()).boxed(),
    );
    let ctx = Arc::new(Ctx {
        client,
        pods: PodCache {
            pods,
            pending: Mutex::default(),
        },
    });
    let controller = applier(
        |job, ctx| Box::pin(reconcile(job, ctx)),
        error_policy,
        ctx,
        jobs,
        queue,
        controller::Config::default(),
    )
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

/// Records an Event without waiting for it, as kube-controller-manager's recorder does:
/// the next pod's creation never waits for the last one's Event.
fn record_later(ctx: &Arc<Ctx>, job: &Job, warning: bool, reason: &'static str, message: String) {
    let client = ctx.client.clone();
    let job = job.clone();
    tokio::spawn(async move { events::record(&client, &job, warning, reason, &message).await });
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
    // The cache is complete once its first list is in.
    if ctx.pods.pods.wait_until_ready().await.is_err() {
        return Ok(Action::await_change());
    }
    let pods = match ctx.pods.cached_pods(&uid) {
        Some(pods) => pods,
        None => {
            let list = pods_api
                .list(&ListParams::default().labels(&format!("{CONTROLLER_UID}={uid}")))
                .await?;
            let listed: Vec<Arc<Pod>> = list
                .items
                .into_iter()
                .filter(|p| controlled_by(p, &uid))
                .map(Arc::new)
                .collect();
            ctx.pods.listed(&uid, &listed);
            listed
        }
    };
    let pod_refs: Vec<&Pod> = pods.iter().map(AsRef::as_ref).collect();
    let decision = decide::decide_refs(&job, &pod_refs, now);
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
        let pod_uid = pods
            .iter()
            .find(|p| p.metadata.name.as_ref() == Some(pod))
            .and_then(|p| p.metadata.uid.clone());
        if let Some(pod_uid) = pod_uid {
            ctx.pods.deleted(&uid, pod_uid);
        }
        match pods_api.delete(pod, &DeleteParams::default()).await {
            Ok(_) => record_later(
                &ctx,
                &job,
                false,
                "SuccessfulDelete",
                format!("Deleted pod: {pod}"),
            ),
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Pods are created in batches of 1, 2, 4, ... at once, and the first error stops
    // further batches (kube-controller-manager's slow start: a Job whose pods cannot be
    // created makes one failing request per sync, not `parallelism` of them).
    let mut created = 0usize;
    let mut create_error = None;
    let mut rest = decision.create.as_slice();
    let mut batch = 1;
    while !rest.is_empty() && create_error.is_none() {
        let (this_batch, later) = rest.split_at(batch.min(rest.len()));
        rest = later;
        batch *= 2;
        let results = futures::future::join_all(this_batch.iter().map(|index| {
            let pod = decide::new_pod(&job, *index);
            let pods_api = pods_api.clone();
            async move { pods_api.create(&PostParams::default(), &pod).await }
        }))
        .await;
        for result in results {
            match result {
                Ok(p) => {
                    created += 1;
                    if let Some(pod_uid) = p.metadata.uid {
                        ctx.pods.created(&uid, pod_uid);
                    }
                    let pod_name = p.metadata.name.unwrap_or_default();
                    record_later(
                        &ctx,
                        &job,
                        false,
                        "SuccessfulCreate",
                        format!("Created pod: {pod_name}"),
                    );
                }
                Err(e) => {
                    record_later(
                        &ctx,
                        &job,
                        true,
                        "FailedCreate",
                        format!("Error creating: {e}"),
                    );
                    create_error.get_or_insert(e);
                }
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

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use kube::runtime::watcher::Event;

    use super::*;

    fn pod(name: &str, job_uid: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                owner_references: Some(vec![OwnerReference {
                    api_version: "batch/v1".into(),
                    kind: "Job".into(),
                    name: "job".into(),
                    uid: job_uid.into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    fn names(pods: Option<Vec<Arc<Pod>>>) -> Option<Vec<String>> {
        pods.map(|p| {
            let mut n: Vec<String> = p.iter().filter_map(|p| p.metadata.name.clone()).collect();
            n.sort();
            n
        })
    }

    #[test]
    fn the_cache_is_trusted_only_once_it_shows_what_the_controller_did() {
        let (store, mut writer) = reflector::store::<Pod>();
        let cache = PodCache {
            pods: store,
            pending: Mutex::default(),
        };
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitApply(pod("a", "job-1")));
        writer.apply_watcher_event(&Event::InitApply(pod("other", "job-2")));
        writer.apply_watcher_event(&Event::InitDone);
        assert_eq!(names(cache.cached_pods("job-1")), Some(vec!["a".into()]));

        // Two pods created; the watch has brought one of them so far.
        cache.created("job-1", "uid-b".into());
        cache.created("job-1", "uid-c".into());
        writer.apply_watcher_event(&Event::Apply(pod("b", "job-1")));
        assert_eq!(names(cache.cached_pods("job-1")), None);
        // A list from the API shows both: still not the cache's view.
        let listed = [Arc::new(pod("b", "job-1")), Arc::new(pod("c", "job-1"))];
        cache.listed("job-1", &listed);
        assert_eq!(names(cache.cached_pods("job-1")), None);
        // Other Jobs are not held up.
        assert_eq!(
            names(cache.cached_pods("job-2")),
            Some(vec!["other".into()])
        );
        writer.apply_watcher_event(&Event::Apply(pod("c", "job-1")));
        assert_eq!(
            names(cache.cached_pods("job-1")),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );

        // A deleted pod counts as running until the cache shows it terminating.
        cache.deleted("job-1", "uid-c".into());
        assert_eq!(names(cache.cached_pods("job-1")), None);
        let mut terminating = pod("c", "job-1");
        terminating.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
        );
        writer.apply_watcher_event(&Event::Apply(terminating));
        assert_eq!(names(cache.cached_pods("job-1")).map(|n| n.len()), Some(3));

        // A created pod deleted before the cache saw it: a list without it settles it.
        cache.created("job-1", "uid-d".into());
        assert_eq!(names(cache.cached_pods("job-1")), None);
        cache.listed("job-1", &listed);
        assert_eq!(names(cache.cached_pods("job-1")).map(|n| n.len()), Some(3));
    }
}
