//! Times attaching pods to the pod network inside a private network namespace (root): N
//! pods one after another, N pods at once, N pods while N others are detached (as in a
//! Job's waves), then detaching them all at once.
//!
//! `cargo run --release -p tandem-net --example attach_pods -- [PODS]`

use std::path::Path;
use std::time::{Duration, Instant};

use net::netns::Netns;
use net::{NetConfig, Network};

async fn timed_attach(network: &Network, uid: &str, path: &Path) -> Duration {
    let start = Instant::now();
    network.attach(uid, path).await.expect("attach");
    start.elapsed()
}

fn main() {
    let pods: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let host = Netns::new_private().expect("a private network namespace (run as root)");
    host.block_on(move || async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let network = Network::ensure(NetConfig::new(dir.path()))
            .await
            .expect("bridge");
        let make = |prefix: &str| -> Vec<(String, Netns)> {
            (0..pods)
                .map(|i| {
                    let ns = Netns::new_private().expect("pod namespace");
                    (format!("{prefix}-{i}"), ns)
                })
                .collect()
        };
        let one_by_one = make("seq");
        let start = Instant::now();
        for (uid, ns) in &one_by_one {
            network.attach(uid, &ns.path()).await.expect("attach");
        }
        let seq = start.elapsed();
        println!(
            "{pods} pods one after another: {:.1} ms per pod",
            seq.as_secs_f64() * 1000.0 / pods as f64
        );
        let together = make("par");
        let paths: Vec<_> = together.iter().map(|(_, ns)| ns.path()).collect();
        let start = Instant::now();
        let results = futures::future::join_all(
            together
                .iter()
                .zip(&paths)
                .map(|((uid, _), path)| network.attach(uid, path)),
        )
        .await;
        let par = start.elapsed();
        for r in results {
            r.expect("attach");
        }
        println!(
            "{pods} pods at once: {:.1} ms in all, {:.1} ms per pod",
            par.as_secs_f64() * 1000.0,
            par.as_secs_f64() * 1000.0 / pods as f64
        );
        // Pods come up while as many go away, as in a Job: each attach on its own clock.
        let next = make("next");
        let next_paths: Vec<_> = next.iter().map(|(_, ns)| ns.path()).collect();
        let (took, detached) = futures::future::join(
            futures::future::join_all(
                next.iter()
                    .zip(&next_paths)
                    .map(|((uid, _), path)| timed_attach(&network, uid, path)),
            ),
            futures::future::join_all(together.iter().map(|(uid, _)| network.detach(uid))),
        )
        .await;
        for r in detached {
            r.expect("detach");
        }
        let mut took: Vec<f64> = took.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        took.sort_by(f64::total_cmp);
        println!(
            "{pods} pods attached while {pods} were detached: median {:.1} ms, max {:.1} ms per attach",
            took[took.len() / 2],
            took[took.len() - 1]
        );
        let start = Instant::now();
        let all: Vec<&String> = one_by_one.iter().chain(&next).map(|(u, _)| u).collect();
        for r in futures::future::join_all(all.iter().map(|uid| network.detach(uid))).await {
            r.expect("detach");
        }
        println!(
            "{} pods detached at once: {:.1} ms per pod",
            all.len(),
            start.elapsed().as_secs_f64() * 1000.0 / all.len() as f64
        );
        drop(one_by_one);
        drop(together);
        drop(next);
        net::teardown(network.config()).await.expect("teardown");
    })
    .expect("enter the private namespace");
}
