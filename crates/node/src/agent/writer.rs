//! Writes what pod workers report (statuses, Events, the final status) to the API.
//!
//! Each pod has its own queues and tasks, so pods are written in parallel and one pod's
//! writes never wait behind another's: with one queue for the whole node, 200 pods
//! starting at once put seconds between a container starting and the API showing it.
//! Statuses and Events are written separately, as the kubelet does (its status manager
//! and its event recorder): a status never waits for Events, which are records of what
//! happened and carry their own time. Each stays in order. Like the kubelet's status
//! manager, a pod's status queue keeps only the newest status: statuses that a newer one
//! replaced before they were sent are not written, so a busy API server gets fewer
//! writes, never stale ones.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio::sync::{Semaphore, mpsc};

use crate::planner::Event;

/// Status writes in flight at once for all pods together: enough for the store to commit
/// many writes in one transaction, few enough not to open a connection per pod.
const STATUSES_IN_FLIGHT: usize = 16;
/// The same for Events, kept apart so that a burst of Events never holds up a status.
const EVENTS_IN_FLIGHT: usize = 8;
/// A failed status write is tried again after this long, doubling up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// What a pod worker reported, in the order it did.
pub(super) enum Update {
    Status(Box<Pod>),
    /// An Event and when it happened.
    Event(Box<Pod>, Event, Timestamp),
    /// The worker is done: the final status, then the pod's removal if it is being deleted.
    Finished(Box<Pod>),
}

impl Update {
    pub(super) fn pod(&self) -> &Pod {
        match self {
            Update::Status(pod) | Update::Event(pod, _, _) | Update::Finished(pod) => pod,
        }
    }
}

/// A status to write: the newest one, or the final one.
#[derive(Debug)]
pub(super) enum StatusWrite {
    Latest(Box<Pod>),
    Final(Box<Pod>),
}

/// The status a pass over a pod's queued statuses writes: only the newest (the final one
/// if the worker finished).
pub(super) fn newest(queued: impl IntoIterator<Item = StatusWrite>) -> Option<StatusWrite> {
    let mut out: Option<StatusWrite> = None;
    for next in queued {
        // Nothing replaces the final status.
        if !matches!(out, Some(StatusWrite::Final(_))) {
            out = Some(next);
        }
    }
    out
}

/// How the writer talks to the API (the agent's client in production).
pub(super) trait Api: Send + Sync + 'static {
    fn write_status<'a>(
        &'a self,
        pod: &'a Pod,
    ) -> futures::future::BoxFuture<'a, Result<(), String>>;
    fn write_event<'a>(
        &'a self,
        pod: &'a Pod,
        event: &'a Event,
        at: Timestamp,
    ) -> futures::future::BoxFuture<'a, Result<(), String>>;
    /// The final removal of a terminated pod that is being deleted (and its logs).
    fn remove<'a>(&'a self, pod: &'a Pod) -> futures::future::BoxFuture<'a, ()>;
}

/// A pod's two queues.
struct Queues {
    statuses: mpsc::UnboundedSender<StatusWrite>,
    events: mpsc::UnboundedSender<(Box<Pod>, Event, Timestamp)>,
}

/// The queues of every pod with running writer tasks.
pub(super) struct Writers<A: Api> {
    api: Arc<A>,
    status_permits: Arc<Semaphore>,
    event_permits: Arc<Semaphore>,
    queues: HashMap<String, Queues>,
}

impl<A: Api> Writers<A> {
    pub(super) fn new(api: A) -> Self {
        Self {
            api: Arc::new(api),
            status_permits: Arc::new(Semaphore::new(STATUSES_IN_FLIGHT)),
            event_permits: Arc::new(Semaphore::new(EVENTS_IN_FLIGHT)),
            queues: HashMap::new(),
        }
    }

    /// Queues `update` for its pod (`uid`). After `Finished` the pod's queues close; their
    /// tasks end once everything queued is written.
    pub(super) fn send(&mut self, uid: &str, update: Update) {
        let queues = self.queues.entry(uid.to_owned()).or_insert_with(|| {
            let (statuses, status_rx) = mpsc::unbounded_channel();
            let (events, event_rx) = mpsc::unbounded_channel();
            let api = self.api.clone();
            tokio::spawn(write_statuses(
                api.clone(),
                self.status_permits.clone(),
                status_rx,
            ));
            tokio::spawn(write_events(api, self.event_permits.clone(), event_rx));
            Queues { statuses, events }
        });
        match update {
            Update::Status(pod) => {
                let _ = queues.statuses.send(StatusWrite::Latest(pod));
            }
            Update::Event(pod, event, at) => {
                let _ = queues.events.send((pod, event, at));
            }
            Update::Finished(pod) => {
                let _ = queues.statuses.send(StatusWrite::Final(pod));
                self.queues.remove(uid);
            }
        }
    }
}

/// One pod's status writer: takes everything queued, writes the newest, repeats. A write
/// that fails is tried again (after 1 s, doubling up to 10 s) unless a newer status
/// replaces it first, as the kubelet's status manager keeps syncing until the API has
/// the pod's status.
async fn write_statuses<A: Api>(
    api: Arc<A>,
    permits: Arc<Semaphore>,
    mut rx: mpsc::UnboundedReceiver<StatusWrite>,
) {
    // The status the API has from us, so the final one is not written twice.
    let mut written: Option<PodStatus> = None;
    let mut failed: Option<StatusWrite> = None;
    let mut retry = RETRY_FIRST;
    let mut open = true;
    loop {
        let first = match failed.take() {
            None => match rx.recv().await {
                Some(first) => first,
                None => return,
            },
            Some(again) => tokio::select! {
                newer = rx.recv(), if open => match newer {
                    Some(newer) => {
                        failed = Some(again);
                        newer
                    }
                    None => {
                        open = false;
                        again
                    }
                },
                () = tokio::time::sleep(retry) => {
                    retry = (retry * 2).min(RETRY_MAX);
                    again
                }
            },
        };
        let mut queued: Vec<StatusWrite> = failed.take().into_iter().collect();
        queued.push(first);
        while let Ok(more) = rx.try_recv() {
            queued.push(more);
        }
        let Some(next) = newest(queued) else {
            continue;
        };
        let pod = match &next {
            StatusWrite::Latest(pod) | StatusWrite::Final(pod) => pod,
        };
        if !write_status(&*api, &permits, pod, &mut written).await {
            failed = Some(next);
            continue;
        }
        retry = RETRY_FIRST;
        if let StatusWrite::Final(pod) = next {
            if pod.metadata.deletion_timestamp.is_some() {
                let Ok(_permit) = permits.acquire().await else {
                    return;
                };
                api.remove(&pod).await;
            }
            return;
        }
    }
}

/// One pod's Event writer, in the order they were reported.
async fn write_events<A: Api>(
    api: Arc<A>,
    permits: Arc<Semaphore>,
    mut rx: mpsc::UnboundedReceiver<(Box<Pod>, Event, Timestamp)>,
) {
    while let Some((pod, event, at)) = rx.recv().await {
        let Ok(_permit) = permits.acquire().await else {
            return;
        };
        if let Err(err) = api.write_event(&pod, &event, at).await {
            tracing::debug!(%err, "recording event");
        }
    }
}

/// Writes `pod`'s status unless the API has it from us already; false if that failed.
async fn write_status<A: Api>(
    api: &A,
    permits: &Semaphore,
    pod: &Pod,
    written: &mut Option<PodStatus>,
) -> bool {
    if pod.status.is_some() && *written == pod.status {
        return true;
    }
    let Ok(_permit) = permits.acquire().await else {
        return true;
    };
    match api.write_status(pod).await {
        Ok(()) => {
            *written = pod.status.clone();
            true
        }
        Err(err) => {
            tracing::warn!(pod = ?pod.metadata.name, %err, "writing pod status; will retry");
            *written = None;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn pod(name: &str, phase: &str) -> Box<Pod> {
        let mut pod = Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        pod.metadata.name = Some(name.into());
        Box::new(pod)
    }

    fn phase(pod: &Pod) -> &str {
        pod.status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("")
    }

    fn event(name: &str, reason: &str) -> Update {
        Update::Event(
            pod(name, ""),
            Event {
                warning: false,
                reason: reason.into(),
                message: String::new(),
                container: None,
            },
            Timestamp::UNIX_EPOCH,
        )
    }

    #[test]
    fn only_the_newest_status_is_written_and_nothing_replaces_the_final_one() {
        let latest = newest([
            StatusWrite::Latest(pod("p", "Pending")),
            StatusWrite::Latest(pod("p", "Running")),
        ]);
        assert!(matches!(latest, Some(StatusWrite::Latest(p)) if phase(&p) == "Running"));
        let last = newest([
            StatusWrite::Latest(pod("p", "Running")),
            StatusWrite::Final(pod("p", "Succeeded")),
            StatusWrite::Latest(pod("p", "Running")),
        ]);
        assert!(matches!(last, Some(StatusWrite::Final(p)) if phase(&p) == "Succeeded"));
        assert!(newest([]).is_none());
    }

    /// Records the writes; status writes take `status_delay`, Event writes `event_delay`.
    #[derive(Default)]
    struct Fake {
        log: Mutex<Vec<String>>,
        status_delay: Duration,
        event_delay: Duration,
        /// Status writes that fail before one succeeds.
        failures: AtomicUsize,
    }

    impl Fake {
        fn of(&self, name: &str) -> Vec<String> {
            let prefix = format!("{name}:");
            self.log
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
                .collect()
        }
    }

    impl Api for Arc<Fake> {
        fn write_status<'a>(
            &'a self,
            pod: &'a Pod,
        ) -> futures::future::BoxFuture<'a, Result<(), String>> {
            let line = format!(
                "{}:{}",
                pod.metadata.name.as_deref().unwrap_or(""),
                phase(pod)
            );
            Box::pin(async move {
                tokio::time::sleep(self.status_delay).await;
                let fail = self
                    .failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if fail {
                    return Err("the server is busy".to_owned());
                }
                self.log.lock().unwrap().push(line);
                Ok(())
            })
        }
        fn write_event<'a>(
            &'a self,
            pod: &'a Pod,
            event: &'a Event,
            _at: Timestamp,
        ) -> futures::future::BoxFuture<'a, Result<(), String>> {
            let line = format!(
                "{}:{}",
                pod.metadata.name.as_deref().unwrap_or(""),
                event.reason
            );
            Box::pin(async move {
                tokio::time::sleep(self.event_delay).await;
                self.log.lock().unwrap().push(line);
                Ok(())
            })
        }
        fn remove<'a>(&'a self, pod: &'a Pod) -> futures::future::BoxFuture<'a, ()> {
            let line = format!("{}:removed", pod.metadata.name.as_deref().unwrap_or(""));
            Box::pin(async move { self.log.lock().unwrap().push(line) })
        }
    }

    async fn wait_for(fake: &Fake, lines: usize) {
        while fake.log.lock().unwrap().len() < lines {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pods_are_written_in_parallel_each_in_order() {
        let fake = Arc::new(Fake {
            status_delay: Duration::from_millis(100),
            ..Fake::default()
        });
        let mut writers = Writers::new(fake.clone());
        let start = tokio::time::Instant::now();
        for i in 0..10 {
            let name = format!("p{i}");
            writers.send(&name, Update::Status(pod(&name, "Pending")));
        }
        // Let every writer take its first status before the later ones arrive.
        tokio::task::yield_now().await;
        for i in 0..10 {
            let name = format!("p{i}");
            writers.send(&name, Update::Status(pod(&name, "Running")));
            writers.send(&name, Update::Status(pod(&name, "Succeeded")));
            let mut done = pod(&name, "Succeeded");
            done.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
            writers.send(&name, Update::Finished(done));
        }
        wait_for(&fake, 30).await;
        // Ten pods, two status writes of 100 ms each: one after another this took 2 s.
        assert!(
            start.elapsed() < Duration::from_millis(250),
            "{:?}",
            start.elapsed()
        );
        for i in 0..10 {
            // Pending, then the final status once (Running was replaced while queued).
            assert_eq!(
                fake.of(&format!("p{i}")),
                ["Pending", "Succeeded", "removed"]
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_status_never_waits_for_events() {
        let fake = Arc::new(Fake {
            status_delay: Duration::from_millis(5),
            event_delay: Duration::from_secs(1),
            ..Fake::default()
        });
        let mut writers = Writers::new(fake.clone());
        let start = tokio::time::Instant::now();
        for reason in ["Created", "Started"] {
            writers.send("p", event("p", reason));
        }
        writers.send("p", Update::Status(pod("p", "Running")));
        wait_for(&fake, 1).await;
        assert_eq!(fake.of("p"), ["Running"]);
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
        // The Events follow, in order.
        wait_for(&fake, 3).await;
        assert_eq!(fake.of("p"), ["Running", "Created", "Started"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_status_write_is_retried_until_the_api_has_it() {
        let fake = Arc::new(Fake {
            failures: AtomicUsize::new(3),
            ..Fake::default()
        });
        let mut writers = Writers::new(fake.clone());
        let start = tokio::time::Instant::now();
        writers.send("p", Update::Status(pod("p", "Running")));
        wait_for(&fake, 1).await;
        assert_eq!(fake.of("p"), ["Running"]);
        // Tried again after 1 s, 2 s and 4 s.
        assert!(
            start.elapsed() >= Duration::from_secs(7),
            "{:?}",
            start.elapsed()
        );

        // A newer status replaces a failed one at once; the final one is retried too.
        fake.failures.store(2, Ordering::SeqCst);
        writers.send("q", Update::Status(pod("q", "Pending")));
        tokio::task::yield_now().await;
        writers.send("q", Update::Finished(pod("q", "Succeeded")));
        wait_for(&fake, 2).await;
        assert_eq!(fake.of("q"), ["Succeeded"]);
        assert_eq!(fake.failures.load(Ordering::SeqCst), 0);
    }
}
