//! Pod networking for tandem: a host bridge, one veth pair per pod, persisted IPAM, and a
//! Service proxy in nftables (the shape of kube-proxy's nftables mode).
//!
//! # Pod addresses
//!
//! ```no_run
//! # async fn demo() -> Result<(), net::Error> {
//! use net::{NetConfig, Network};
//! let cfg = NetConfig::new("/var/lib/tandem/net");
//! let network = Network::ensure(cfg).await?; // bridge tandem0 = 10.244.0.1/16, up
//! let addr = network
//!     .attach("pod-uid", std::path::Path::new("/proc/1234/ns/net"))
//!     .await?; // veth, eth0 = 10.244.x.y/16, default route via 10.244.0.1
//! network.detach("pod-uid").await?; // veth gone, address freed
//! # let _ = addr; Ok(()) }
//! ```
//!
//! - [`Network::ensure`] creates (or adopts) the bridge with the first address of the pod
//!   CIDR, turns on IPv4 forwarding **on the bridge only**, and installs, in tandem's own
//!   nftables table, a rule dropping anything forwarded from the bridge to another interface:
//!   nothing from a pod is routed or NATed off the machine. With a `service_cidr`, a route
//!   for it points at the bridge so the host reaches ClusterIPs with or without an uplink.
//! - [`Network::attach`] is idempotent: the same uid gets the same address and keeps its
//!   veth (re-adoption after a restart). The host end is named `tnd` + 11 hex digits of a
//!   hash of the uid ([`host_veth_name`]) and carries the uid as its alias.
//! - [`Network::allocations`] lists `(uid, ip)` so the caller can [`Network::detach`]
//!   leftovers of pods that no longer exist.
//! - [`teardown`] removes the nftables table and the bridge; nothing else on the host.
//!
//! # Services
//!
//! [`services`] turns Services and EndpointSlices into a [`services::Model`], renders it as an
//! `nft` script (full or incremental) and applies it atomically; [`services::run`] keeps the
//! table in sync with a Kubernetes API.
//!
//! All of this needs root (CAP_NET_ADMIN). Work that must happen inside a pod's network
//! namespace runs on a dedicated thread that `setns`'d into it ([`netns::Netns`]).

#![forbid(unsafe_code)]

mod cidr;
mod error;
pub mod ipam;
mod link;
pub mod netns;
mod network;
pub mod nft;
pub mod services;

pub use cidr::Ipv4Cidr;
pub use error::Error;
pub use link::host_veth_name;
pub use network::{NetConfig, Network, PodAddress, teardown};
