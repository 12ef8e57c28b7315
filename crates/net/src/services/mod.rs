//! The Service proxy: ClusterIP traffic DNAT'ed to ready endpoints with nftables, in the
//! shape of kube-proxy's nftables mode, inside one `ip` table that tandem owns alone.
//!
//! - A verdict map `service-ips` sends `ip daddr . meta l4proto . th dport` to one chain per
//!   Service port; that chain picks an endpoint with `numgen random mod N vmap { … }`, and
//!   each endpoint chain does `dnat to ip:port`. A packet whose source is the endpoint
//!   itself (a pod reaching itself through its own Service) is marked and masqueraded in
//!   postrouting, so the reply comes back through the bridge.
//! - The lookups hang off nat `prerouting` (traffic from pods) and nat `output` (the host
//!   itself connecting to a ClusterIP).
//! - A Service port with no ready endpoints is in `no-endpoint-services` and rejected at once
//!   (TCP reset, otherwise ICMP port unreachable) on input, forward and output, so clients
//!   get "connection refused" instead of a hang. Headless Services get no rules.
//! - [`render_full`] replaces the whole table; [`render_update`] touches only the chains and
//!   map elements that changed. Both are pure; [`apply`] runs either as one `nft -f -`
//!   transaction.
//! - [`model_from`] builds the [`Model`] from Services and EndpointSlices; [`run`] watches
//!   both through a Kubernetes API and keeps the table in sync.

mod k8s;
mod render;
mod sync;

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

pub use k8s::{SERVICE_NAME_LABEL, model_from};
pub use render::{render_full, render_update};
pub use sync::run;

use crate::{Error, NetConfig};

/// Applies a rendered script as one atomic transaction (`nft -f -`), in the network
/// namespace of the calling thread.
pub async fn apply(script: &str) -> Result<(), Error> {
    crate::nft::apply(script).await
}

/// Where the proxy writes, and how it paces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The `ip` table tandem owns (default `tandem`).
    pub table: String,
    /// The pod bridge, whose isolation rule lives in the same table (default `tandem0`).
    pub bridge: String,
    /// How long [`run`] waits after a change for more to arrive before syncing.
    pub debounce: Duration,
    /// How often [`run`] rewrites the whole table even without changes (repairs drift).
    pub full_resync: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            table: "tandem".to_owned(),
            bridge: "tandem0".to_owned(),
            debounce: Duration::from_millis(20),
            full_resync: Duration::from_secs(300),
        }
    }
}

impl From<&NetConfig> for ProxyConfig {
    fn from(cfg: &NetConfig) -> Self {
        ProxyConfig {
            table: cfg.table.clone(),
            bridge: cfg.bridge.clone(),
            ..ProxyConfig::default()
        }
    }
}

impl ProxyConfig {
    pub(crate) fn check(&self) -> Result<(), Error> {
        crate::nft::check_table_name(&self.table)?;
        crate::link::check_ifname(&self.bridge)
    }
}

/// A Service port's transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// From Kubernetes' spelling (`TCP`, `UDP`, `SCTP`).
    pub fn from_k8s(s: &str) -> Option<Protocol> {
        match s {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// nftables' spelling.
    pub fn as_nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_nft())
    }
}

/// A ready backend: a pod address and the target port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// One port of a Service with the endpoints ready to serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// The port's name (may be empty for a Service's only port).
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub endpoints: Vec<Endpoint>,
}

/// A Service as the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    /// `None` for a headless Service: no rules at all.
    pub cluster_ip: Option<Ipv4Addr>,
    pub ports: Vec<ServicePort>,
}

/// Everything the proxy programs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    pub services: Vec<Service>,
}
