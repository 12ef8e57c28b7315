//! How probes and hooks reach into a running container: run a command in its namespaces,
//! or open a TCP connection from inside the pod's network namespace.
//!
//! The process runtime implements this for real containers; probe and hook tests can use a
//! host implementation.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future, so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Output of a command run in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code; `None` when the command was killed after the timeout.
    pub exit_code: Option<i32>,
    /// Combined stdout and stderr, truncated to a few KiB (Kubernetes keeps 10 KiB).
    pub output: String,
}

/// Access to one running container.
pub trait ContainerAccess: Send + Sync {
    /// Runs `argv` (no shell) in the container's namespaces with its environment, user and
    /// working directory; kills it after `timeout`.
    fn exec(
        &self,
        argv: Vec<String>,
        timeout: Duration,
    ) -> BoxFuture<'_, std::io::Result<ExecOutput>>;

    /// Connects to `addr` from inside the pod's network namespace.
    fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> BoxFuture<'_, std::io::Result<tokio::net::TcpStream>>;

    /// The pod IP used as the default host of httpGet/tcpSocket handlers.
    fn pod_ip(&self) -> std::net::IpAddr;
}
