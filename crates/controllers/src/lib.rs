//! Controllers: small loops that watch the API and write back through it, like the
//! Kubernetes controller manager and scheduler.

#![forbid(unsafe_code)]

pub mod castore;
pub mod deployment;
pub mod endpoints;
pub mod gc;
pub mod job;
pub mod namespace;
pub mod replicaset;
pub mod scheduler;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Starts every controller and the scheduler for a one-node cluster.
pub fn spawn_all(
    client: kube::Client,
    node: String,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(scheduler::run(client.clone(), node, shutdown.clone())),
        tokio::spawn(deployment::run(client.clone(), shutdown.clone())),
        tokio::spawn(replicaset::run(client.clone(), shutdown.clone())),
        tokio::spawn(job::run(client.clone(), shutdown.clone())),
        tokio::spawn(namespace::run(client.clone(), shutdown.clone())),
        tokio::spawn(endpoints::run(client.clone(), shutdown.clone())),
        tokio::spawn(castore::run(client.clone(), shutdown.clone())),
        tokio::spawn(gc::run(client, shutdown)),
    ]
}
