//! Keeps the volumes of running pods up to date, as the kubelet does: configMap, secret,
//! projected and downwardAPI (labels, annotations) volumes are written again when what
//! they show changes, and projected service account tokens are renewed before they
//! expire. Env vars never change, and `subPath` mounts keep what they had (the shim
//! bind-mounts the file itself, which an update replaces rather than rewrites).
//!
//! How changes are noticed: one watch of ConfigMaps and one of Secrets for the whole node
//! (a reflector cache shared by every pod), and the pod watch the agent runs anyway for
//! labels and annotations. The kubelet's default is a watch per referenced object plus a
//! sync about once a minute; here each pod's refresher wakes on every change of the cache
//! and writes at once, so an update shows in the containers within about a second,
//! without polling the API. Tokens are renewed on a timer (see [`super::refresh`]).
//!
//! Each pod has its own task, started with its worker and stopped with it: it never
//! blocks the pod worker, and file writes run on the blocking pool.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccountTokenProjection};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::refresh::{TokenLease, VolumeRefs, changed_volumes, refreshable_volumes, volume_refs};
use crate::planner::Event;
use crate::runtime::{ProcessRuntime, RuntimeError, VolumeSources, VolumeWrite};
use crate::worker::PodSink;

/// How long after a failed write (or a volume that is not there yet) it is tried again.
const WRITE_RETRY: Duration = Duration::from_secs(2);
/// How long after a failed token request it is made again (the old token stays).
const TOKEN_RETRY: SignedDuration = SignedDuration::from_secs(10);
/// At most one token request per projection in this time, whatever the answers say.
const TOKEN_SPACING: SignedDuration = SignedDuration::from_secs(1);
/// A token request that takes longer than this counts as failed.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// The node's view of ConfigMaps and Secrets, kept by watches.
pub(super) struct SourceCache {
    config_maps: Store<ConfigMap>,
    secrets: Store<Secret>,
    /// Bumped on every event of either watch.
    changed: watch::Receiver<u64>,
}

impl SourceCache {
    /// Starts the watches; they stop with `shutdown`.
    pub(super) fn start(client: &kube::Client, shutdown: &CancellationToken) -> Arc<Self> {
        let (changed_tx, changed) = watch::channel(0u64);
        let changed_tx = Arc::new(changed_tx);
        let (config_maps, writer) = reflector::store::<ConfigMap>();
        let stream =
            watcher(Api::all(client.clone()), watcher::Config::default()).default_backoff();
        tokio::spawn(follow(
            reflector::reflector(writer, stream),
            changed_tx.clone(),
            shutdown.clone(),
        ));
        let (secrets, writer) = reflector::store::<Secret>();
        let stream =
            watcher(Api::all(client.clone()), watcher::Config::default()).default_backoff();
        tokio::spawn(follow(
            reflector::reflector(writer, stream),
            changed_tx,
            shutdown.clone(),
        ));
        Arc::new(Self {
            config_maps,
            secrets,
            changed,
        })
    }

    /// Waits for the first full list of both; false if the watches stopped before.
    async fn ready(&self) -> bool {
        self.config_maps.wait_until_ready().await.is_ok()
            && self.secrets.wait_until_ready().await.is_ok()
    }

    /// The sources of `refs` in `namespace` as the cache has them, with `tokens`.
    fn sources(
        &self,
        namespace: &str,
        refs: &VolumeRefs,
        tokens: &BTreeMap<(String, String), TokenState>,
    ) -> VolumeSources {
        let mut sources = VolumeSources::default();
        for name in &refs.config_maps {
            if let Some(cm) = self
                .config_maps
                .get(&ObjectRef::new(name).within(namespace))
            {
                sources.add_config_map(cm.as_ref().clone());
            }
        }
        for name in &refs.secrets {
            if let Some(secret) = self.secrets.get(&ObjectRef::new(name).within(namespace)) {
                sources.add_secret(secret.as_ref().clone());
            }
        }
        for ((volume, path), token) in tokens {
            sources.add_service_account_token(volume, path, token.outcome.clone());
        }
        sources
    }
}

/// Drives a reflector stream and announces each event.
async fn follow<S, T>(stream: S, changed: Arc<watch::Sender<u64>>, shutdown: CancellationToken)
where
    S: futures::Stream<Item = Result<T, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            event = stream.next() => match event {
                Some(Ok(_)) => changed.send_modify(|n| *n = n.wrapping_add(1)),
                Some(Err(err)) => tracing::debug!(%err, "watching volume sources"),
                None => return,
            },
        }
    }
}

/// A projected token and when to ask for the next one.
#[derive(Debug, Clone)]
pub(super) struct TokenState {
    outcome: Result<String, String>,
    lease: Option<TokenLease>,
    /// No request before this (after a failure, or right after one).
    not_before: Option<Timestamp>,
}

impl TokenState {
    fn due(&self, now: Timestamp, fraction: f64) -> bool {
        self.not_before.is_none_or(|t| now >= t)
            && (self.outcome.is_err() || self.lease.is_some_and(|l| l.needs_renewal(now, fraction)))
    }

    /// When this token next needs attention.
    fn wake_at(&self, fraction: f64) -> Option<Timestamp> {
        let due = match (&self.outcome, self.lease) {
            (Err(_), _) => self.not_before,
            (Ok(_), Some(lease)) => Some(lease.renew_at(fraction)),
            (Ok(_), None) => None,
        }?;
        Some(self.not_before.map_or(due, |t| due.max(t)))
    }
}

/// Asks the API for a projected token (the agent's token request).
pub(super) type RequestToken = Arc<
    dyn Fn(
            Pod,
            ServiceAccountTokenProjection,
        ) -> futures::future::BoxFuture<'static, Result<(String, TokenLease), String>>
        + Send
        + Sync,
>;

/// What a pod's refresher works with.
pub(super) struct PodRefresh {
    pub runtime: ProcessRuntime,
    pub cache: Arc<SourceCache>,
    pub sink: Arc<dyn PodSink>,
    pub request_token: RequestToken,
    /// See [`super::refresh::RENEWAL_FRACTION_ENV`].
    pub renewal_fraction: f64,
    /// The sources the pod started with, and the leases of their tokens.
    pub sources: Arc<VolumeSources>,
    pub leases: BTreeMap<(String, String), TokenLease>,
}

/// A running refresher; dropping it stops it.
pub(super) struct RefreshHandle {
    pod: watch::Sender<Pod>,
    _stop: DropGuard,
}

impl RefreshHandle {
    /// The pod as the API has it now (labels and annotations may have changed).
    pub(super) fn update(&self, pod: &Pod) {
        self.pod.send_if_modified(|current| {
            let changed = current.metadata.labels != pod.metadata.labels
                || current.metadata.annotations != pod.metadata.annotations;
            if changed {
                *current = pod.clone();
            }
            changed
        });
    }
}

/// Starts the refresher of `pod` (a pod with refreshable volumes). `status` is the pod as
/// its worker reports it: volumes are only written while a container runs, and the
/// refresher ends when the worker does.
pub(super) fn spawn(
    refresh: PodRefresh,
    pod: Pod,
    status: watch::Receiver<Pod>,
    stop: CancellationToken,
) -> RefreshHandle {
    let (pod_tx, pod_rx) = watch::channel(pod);
    tokio::spawn(refresh.run(pod_rx, status, stop.clone()));
    RefreshHandle {
        pod: pod_tx,
        _stop: stop.drop_guard(),
    }
}

fn running(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
}

impl PodRefresh {
    async fn run(
        self,
        mut pod_rx: watch::Receiver<Pod>,
        mut status: watch::Receiver<Pod>,
        stop: CancellationToken,
    ) {
        tokio::select! {
            _ = stop.cancelled() => return,
            ready = self.cache.ready() => if !ready { return },
        }
        let first = pod_rx.borrow().clone();
        let namespace = first
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        // The spec does not change: neither do the objects and tokens it refers to.
        let refs = volume_refs(&first);
        let mut tokens: BTreeMap<(String, String), TokenState> = refs
            .tokens
            .iter()
            .map(|(volume, projection)| {
                let key = (volume.clone(), projection.path.clone());
                let outcome = match self.sources.service_account_token(volume, &projection.path) {
                    Some(Ok(token)) => Ok(token.to_owned()),
                    Some(Err(why)) => Err(why.to_owned()),
                    None => Err("no token requested yet".to_owned()),
                };
                let state = TokenState {
                    outcome,
                    lease: self.leases.get(&key).copied(),
                    not_before: None,
                };
                (key, state)
            })
            .collect();
        let mut changed = self.cache.changed.clone();
        // What the volumes were last written from; `None`: compare every volume with
        // the disk first (the agent may have restarted while the pod ran).
        let mut written: Option<(Pod, VolumeSources)> = None;
        let mut pending: BTreeSet<String> = BTreeSet::new();
        // The last error reported per volume, so that each is reported once.
        let mut reported: BTreeMap<String, String> = BTreeMap::new();
        loop {
            let pod = pod_rx.borrow_and_update().clone();
            let is_running = running(&status.borrow_and_update());
            let mut wake: Option<Timestamp> = None;
            if is_running {
                self.renew_tokens(&pod, &refs, &mut tokens).await;
                let current = self.cache.sources(&namespace, &refs, &tokens);
                let mut targets = match &written {
                    None => refreshable_volumes(&pod),
                    Some((old_pod, old)) => changed_volumes(old_pod, old, &pod, &current),
                };
                for name in std::mem::take(&mut pending) {
                    if !targets.contains(&name) {
                        targets.push(name);
                    }
                }
                if !targets.is_empty() {
                    pending = self.write(&pod, targets, &current, &mut reported).await;
                }
                written = Some((pod, current));
                let now = Timestamp::now();
                let retry = (!pending.is_empty())
                    .then(|| now.checked_add(WRITE_RETRY).ok())
                    .flatten();
                wake = tokens
                    .values()
                    .filter_map(|t| t.wake_at(self.renewal_fraction))
                    .chain(retry)
                    .min();
            }
            let sleep = wake.map(|at| {
                Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO)
            });
            tokio::select! {
                _ = stop.cancelled() => return,
                res = pod_rx.changed() => if res.is_err() { return },
                // The worker is gone with its pod.
                res = status.changed() => if res.is_err() { return },
                res = changed.changed() => if res.is_err() { return },
                _ = sleep_for(sleep) => {}
            }
        }
    }

    /// Requests the tokens that are due; a failed request keeps the old token.
    async fn renew_tokens(
        &self,
        pod: &Pod,
        refs: &VolumeRefs,
        tokens: &mut BTreeMap<(String, String), TokenState>,
    ) {
        for (volume, projection) in &refs.tokens {
            let key = (volume.clone(), projection.path.clone());
            let now = Timestamp::now();
            let Some(state) = tokens
                .get_mut(&key)
                .filter(|t| t.due(now, self.renewal_fraction))
            else {
                continue;
            };
            let request = (self.request_token)(pod.clone(), projection.clone());
            let answer = tokio::time::timeout(TOKEN_TIMEOUT, request)
                .await
                .unwrap_or_else(|_| Err("the token request timed out".into()));
            let now = Timestamp::now();
            match answer {
                Ok((token, lease)) => {
                    tracing::info!(pod = ?pod.metadata.name, %volume, path = %projection.path,
                        expires = %lease.expires_at, "renewed a projected service account token");
                    state.outcome = Ok(token);
                    state.lease = Some(lease);
                    state.not_before = now.checked_add(TOKEN_SPACING).ok();
                }
                Err(why) => {
                    tracing::warn!(pod = ?pod.metadata.name, %volume, %why,
                        "renewing a projected service account token; keeping the old one");
                    if state.outcome.is_err() {
                        state.outcome = Err(why);
                    }
                    state.not_before = now.checked_add(TOKEN_RETRY).ok();
                }
            }
        }
    }

    /// Writes `targets` on the blocking pool; returns the volumes to try again.
    async fn write(
        &self,
        pod: &Pod,
        targets: Vec<String>,
        sources: &VolumeSources,
        reported: &mut BTreeMap<String, String>,
    ) -> BTreeSet<String> {
        let runtime = self.runtime.clone();
        let (job_pod, job_sources) = (pod.clone(), sources.clone());
        let job = tokio::task::spawn_blocking(move || {
            runtime.refresh_volumes(&job_pod, &targets, &job_sources)
        });
        let mut retry = BTreeSet::new();
        let Ok(results) = job.await else {
            return retry;
        };
        for (volume, result) in results {
            match result {
                Ok(VolumeWrite::Written) => {
                    reported.remove(&volume);
                    tracing::info!(pod = ?pod.metadata.name, %volume, "updated volume");
                }
                Ok(VolumeWrite::Unchanged) => {
                    reported.remove(&volume);
                }
                Ok(VolumeWrite::Missing) => {
                    retry.insert(volume);
                }
                // What the volume refers to is wrong (a ConfigMap gone, a key missing):
                // the files stay as they were until it changes again, as in the kubelet.
                Err(err @ RuntimeError::Volume { .. }) => {
                    let message = err.to_string();
                    if reported.get(&volume) != Some(&message) {
                        let name = &pod.metadata.name;
                        tracing::warn!(pod = ?name, %volume, %message, "updating volume");
                        self.sink.event(
                            pod,
                            &Event {
                                warning: true,
                                reason: "FailedMount".into(),
                                message: message.clone(),
                                container: None,
                            },
                        );
                        reported.insert(volume, message);
                    }
                }
                Err(err) => {
                    let name = &pod.metadata.name;
                    tracing::warn!(pod = ?name, %volume, %err, "updating volume; retrying");
                    retry.insert(volume);
                }
            }
        }
        retry
    }
}

async fn sleep_for(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn tokens_wake_the_refresher_when_due_and_back_off_after_failures() {
        let lease = TokenLease::from_answer(at("2025-01-01T00:10:00Z"), Some(600));
        let mut token = TokenState {
            outcome: Ok("t".into()),
            lease: Some(lease),
            not_before: None,
        };
        assert_eq!(token.wake_at(0.8), Some(at("2025-01-01T00:08:00Z")));
        assert!(!token.due(at("2025-01-01T00:07:59Z"), 0.8));
        assert!(token.due(at("2025-01-01T00:08:00Z"), 0.8));
        // After a failed renewal: not before the retry time.
        token.not_before = Some(at("2025-01-01T00:08:10Z"));
        assert!(!token.due(at("2025-01-01T00:08:05Z"), 0.8));
        assert_eq!(token.wake_at(0.8), Some(at("2025-01-01T00:08:10Z")));
        assert!(token.due(at("2025-01-01T00:08:10Z"), 0.8));
        // No token yet: asked for at once, then after each retry time.
        let missing = TokenState {
            outcome: Err("refused".into()),
            lease: None,
            not_before: None,
        };
        assert!(missing.due(at("2025-01-01T00:00:00Z"), 0.8));
        assert_eq!(missing.wake_at(0.8), None);
    }
}
