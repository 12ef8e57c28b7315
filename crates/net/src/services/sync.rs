//! Keeping the table in step with the API: watch, coalesce, render, apply.

use std::future::Future;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::Service as K8sService;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Model, ProxyConfig, apply, model_from, render_full, render_update};
use crate::Error;

/// First retry after a failed sync; doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Watches Services and EndpointSlices in all namespaces and keeps tandem's table in
/// step: a full sync once both lists are in, then incremental updates after each burst of
/// changes (coalesced for `cfg.debounce`), and a full sync again every `cfg.full_resync`
/// and after any failed sync. Watch errors are retried with backoff, forever.
///
/// Returns when `shutdown` fires. The rules stay in place, so Service traffic keeps
/// flowing while tandem restarts; [`crate::teardown`] removes them.
pub async fn run(
    client: kube::Client,
    cfg: ProxyConfig,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    cfg.check()?;
    let (services, services_writer) = reflector::store::<K8sService>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let changed = Notify::new();

    let services_watch = reflector(
        services_writer,
        watcher(
            Api::<K8sService>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    let slices_watch = reflector(
        slices_writer,
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        )
        .default_backoff(),
    );

    let sync = async {
        let ready = async {
            services.wait_until_ready().await.is_ok() && slices.wait_until_ready().await.is_ok()
        };
        let ready = tokio::select! {
            _ = shutdown.cancelled() => false,
            ready = ready => ready,
        };
        if ready {
            let snapshot = || model_from(&services.state(), &slices.state());
            sync_loop(
                &cfg,
                snapshot,
                &changed,
                |s| async move { apply(&s).await },
                &shutdown,
            )
            .await;
        }
    };
    tokio::select! {
        () = sync => {}
        () = drive(services_watch, "Services", &changed) => {}
        () = drive(slices_watch, "EndpointSlices", &changed) => {}
    }
    Ok(())
}

async fn drive<T, E: std::fmt::Display>(
    stream: impl Stream<Item = Result<T, E>>,
    what: &str,
    changed: &Notify,
) {
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => changed.notify_one(),
            Err(e) => tracing::warn!(error = %e, "watching {what} failed; retrying"),
        }
    }
}

/// The loop behind [`run`], free of Kubernetes: `snapshot` gives the current model,
/// `changed` says it may have changed, `apply` runs a script.
pub(crate) async fn sync_loop<S, A, F>(
    cfg: &ProxyConfig,
    snapshot: S,
    changed: &Notify,
    mut apply: A,
    shutdown: &CancellationToken,
) where
    S: Fn() -> Model,
    A: FnMut(String) -> F,
    F: Future<Output = Result<(), Error>>,
{
    // What the table holds; `None` means unknown, so the next sync is a full one.
    let mut applied: Option<Model> = None;
    let mut next_full = Instant::now() + cfg.full_resync;
    let mut retry = RETRY_MIN;
    loop {
        let model = snapshot();
        let full = applied.is_none() || Instant::now() >= next_full;
        let script = match &applied {
            Some(old) if !full => render_update(cfg, old, &model),
            _ => render_full(cfg, &model),
        };
        let outcome = if script.is_empty() {
            Ok(())
        } else {
            apply(script).await
        };
        let wake_at = match outcome {
            Ok(()) => {
                if full {
                    next_full = Instant::now() + cfg.full_resync;
                    tracing::debug!(
                        services = model.services.len(),
                        "Service rules fully synced"
                    );
                }
                applied = Some(model);
                retry = RETRY_MIN;
                next_full
            }
            Err(e) => {
                tracing::warn!(error = %e, full, "syncing Service rules failed; will rewrite the table");
                applied = None;
                let at = Instant::now() + retry;
                retry = (retry * 2).min(RETRY_MAX);
                at
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changed.notified() => {}
            _ = tokio::time::sleep_until(wake_at) => {}
        }
        // Let the rest of a burst arrive, then take it all in one sync.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(cfg.debounce) => {}
        }
        let _ = changed.notified().now_or_never();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::net::Ipv4Addr;
    use std::rc::Rc;
    use std::sync::Mutex;

    use super::super::{Endpoint, Protocol, Service, ServicePort};
    use super::*;

    fn model(endpoint_octet: u8) -> Model {
        Model {
            services: vec![Service {
                namespace: "default".into(),
                name: "web".into(),
                cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 10)),
                ports: vec![ServicePort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 80,
                    endpoints: vec![Endpoint {
                        ip: Ipv4Addr::new(10, 244, 0, endpoint_octet),
                        port: 8080,
                    }],
                }],
            }],
        }
    }

    struct Harness {
        current: Mutex<Model>,
        changed: Notify,
        scripts: Rc<RefCell<Vec<String>>>,
        fail_next: Rc<RefCell<bool>>,
        shutdown: CancellationToken,
        cfg: ProxyConfig,
    }

    impl Harness {
        fn new() -> Self {
            Harness {
                current: Mutex::new(model(5)),
                changed: Notify::new(),
                scripts: Rc::default(),
                fail_next: Rc::default(),
                shutdown: CancellationToken::new(),
                cfg: ProxyConfig::default(),
            }
        }

        async fn run(&self) {
            let scripts = self.scripts.clone();
            let fail_next = self.fail_next.clone();
            sync_loop(
                &self.cfg,
                || self.current.lock().unwrap().clone(),
                &self.changed,
                move |s| {
                    let fail = fail_next.replace(false);
                    if !fail {
                        scripts.borrow_mut().push(s);
                    }
                    async move {
                        if fail {
                            Err(Error::Nft {
                                status: "exit status: 1".into(),
                                stderr: "boom".into(),
                            })
                        } else {
                            Ok(())
                        }
                    }
                },
                &self.shutdown,
            )
            .await
        }

        fn set(&self, octet: u8) {
            *self.current.lock().unwrap() = model(octet);
            self.changed.notify_one();
        }

        fn applied(&self) -> Vec<String> {
            self.scripts.borrow().clone()
        }
    }

    fn is_full(s: &str) -> bool {
        s.contains("delete table ip tandem")
    }

    async fn settle(ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn starts_full_then_coalesces_a_burst_into_one_incremental_sync() {
        let h = Harness::new();
        let test = async {
            settle(1).await;
            assert_eq!(h.applied().len(), 1);
            assert!(is_full(&h.applied()[0]));
            for octet in [6, 7, 8, 9] {
                h.set(octet);
                settle(2).await;
            }
            settle(100).await;
            let applied = h.applied();
            assert_eq!(applied.len(), 2, "{applied:#?}");
            assert!(!is_full(&applied[1]));
            assert!(applied[1].contains("dnat to 10.244.0.9:8080"));
            assert!(
                !applied[1].contains("10.244.0.6"),
                "intermediate state applied"
            );
            // A notification without a change applies nothing.
            h.changed.notify_one();
            settle(100).await;
            assert_eq!(h.applied().len(), 2);
            h.shutdown.cancel();
        };
        tokio::join!(h.run(), test);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_sync_is_retried_as_a_full_one() {
        let h = Harness::new();
        let test = async {
            settle(1).await;
            *h.fail_next.borrow_mut() = true;
            h.set(6);
            settle(100).await;
            assert_eq!(h.applied().len(), 1, "the failed script was recorded");
            // The retry comes by itself, after the backoff, and rewrites everything.
            settle(1_100).await;
            let applied = h.applied();
            assert_eq!(applied.len(), 2);
            assert!(is_full(&applied[1]));
            assert!(applied[1].contains("dnat to 10.244.0.6:8080"));
            h.shutdown.cancel();
        };
        tokio::join!(h.run(), test);
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_rewritten_periodically_without_changes() {
        let mut h = Harness::new();
        h.cfg.full_resync = Duration::from_secs(60);
        let test = async {
            settle(59_000).await;
            assert_eq!(h.applied().len(), 1);
            settle(2_000).await;
            let applied = h.applied();
            assert_eq!(applied.len(), 2);
            assert!(is_full(&applied[1]));
            h.shutdown.cancel();
        };
        tokio::join!(h.run(), test);
    }
}
