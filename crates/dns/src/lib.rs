//! Cluster DNS, like CoreDNS's `kubernetes` plugin.
//!
//! * [`Records::from_objects`] turns Services and EndpointSlices into the DNS view.
//! * [`ClusterDns`] is the shared handle servers answer from; [`ClusterDns::update`]
//!   swaps the view and takes effect for the next question.
//! * [`serve`] / [`DnsServer`] answer over UDP and TCP: `<svc>.<ns>.svc.<domain>`,
//!   `<endpoint>.<svc>.<ns>.svc.<domain>`, `_<port>._<proto>.<svc>.<ns>.svc.<domain>` (SRV),
//!   `<a-b-c-d>.<ns>.pod.<domain>`, and PTR for service and endpoint addresses. Other names
//!   go to the [`Upstream`] servers (2 s, then SERVFAIL; NXDOMAIN when there are none).
//! * [`watch`] keeps a handle current from the API server.
//! * [`resolv_conf`] gives the per-pod resolv.conf the kubelet writes.
#![forbid(unsafe_code)]

mod files;
mod forward;
mod records;
mod server;
mod watch;
mod zone;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use files::resolv_conf;
pub use forward::{DEFAULT_TIMEOUT, Upstream};
pub use records::{
    EndpointRecord, Port, Records, SERVICE_NAME_LABEL, ServiceKind, ServiceRecord, dashed,
};
pub use server::{DnsServer, serve};
pub use watch::watch;
pub use zone::{ClusterDns, TTL};

/// The default cluster domain.
pub const DEFAULT_DOMAIN: &str = "cluster.local";

/// Errors of the cluster DNS.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster domain is not a usable DNS name.
    #[error("invalid cluster domain {domain:?}: {reason}")]
    InvalidDomain {
        /// The domain as given.
        domain: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The resolv.conf with the upstream servers could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadResolvConf {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `serve` was given no address.
    #[error("no address to serve DNS on")]
    NoAddress,
    /// A listening socket could not be opened.
    #[error("cannot listen for DNS on {protocol} {addr}: {source}")]
    Bind {
        /// `UDP` or `TCP`.
        protocol: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The DNS server stopped with an error.
    #[error("DNS server failed: {0}")]
    Server(#[from] hickory_server::net::NetError),
    /// The listeners stopped without being asked to.
    #[error("the DNS listeners stopped unexpectedly")]
    ListenersStopped,
    /// A Service or EndpointSlice watch stream ended.
    #[error("the Service/EndpointSlice watch ended")]
    WatchEnded,
}
