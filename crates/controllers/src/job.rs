//! The job controller (not written yet: runs idle until shutdown).

use tokio_util::sync::CancellationToken;

/// Runs the controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let _ = client;
    shutdown.cancelled().await;
}
