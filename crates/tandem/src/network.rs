//! The cluster's pod network as `tandem up` runs it: the bridge and IPAM (`net`), the
//! nftables service proxy, cluster DNS on the bridge's address, and the Services that make
//! it reachable the Kubernetes way (`kube-dns` in `kube-system`, `kubernetes` in `default`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use node::runtime::network::{PodAddress, PodIdentity, PodNetwork};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// The ClusterIP of `kube-dns` (what pods' resolv.conf names), as in kubeadm clusters.
pub const DNS_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// Who manages the Endpoints of the Services tandem itself serves.
const MANAGED_BY: &str = "tandem";

/// Where `up` keeps the pod network's state.
pub fn config(data_dir: &Path) -> net::NetConfig {
    net::NetConfig::new(data_dir.join("net"))
}

/// The runtime's view of the pod network.
#[derive(Debug)]
pub struct ClusterNetwork {
    net: net::Network,
}

impl ClusterNetwork {
    pub fn gateway(&self) -> Ipv4Addr {
        self.net.config().gateway()
    }
}

impl PodNetwork for ClusterNetwork {
    fn attach<'a>(
        &'a self,
        pod: PodIdentity<'a>,
        netns: &'a Path,
    ) -> BoxFuture<'a, Result<PodAddress, String>> {
        Box::pin(async move {
            let addr = self
                .net
                .attach(pod.uid, netns)
                .await
                .map_err(|e| e.to_string())?;
            Ok(PodAddress {
                ip: IpAddr::V4(addr.ip),
                host_ip: IpAddr::V4(addr.gateway),
                resolv_conf: Some(dns::resolv_conf(
                    pod.namespace,
                    IpAddr::V4(DNS_SERVICE_IP),
                    node::runtime::CLUSTER_DOMAIN,
                )),
            })
        })
    }

    fn detach<'a>(&'a self, uid: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { self.net.detach(uid).await.map_err(|e| e.to_string()) })
    }
}

/// Brings up the bridge and releases the addresses of pods that are gone from disk (their
/// state went while no `up` ran).
pub async fn start(data_dir: &Path, pods_dir: &Path) -> anyhow::Result<Arc<ClusterNetwork>> {
    let net = net::Network::ensure(config(data_dir))
        .await
        .context("setting up the pod network (bridge tandem0)")?;
    for (uid, _) in net.allocations() {
        if !pods_dir.join(&uid).exists()
            && let Err(err) = net.detach(&uid).await
        {
            tracing::warn!(%uid, %err, "releasing the address of a pod that is gone");
        }
    }
    Ok(Arc::new(ClusterNetwork { net }))
}

/// Starts the service proxy and cluster DNS; they stop with `shutdown`.
pub async fn spawn_services(
    data_dir: &Path,
    client: kube::Client,
    gateway: Ipv4Addr,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let proxy_shutdown = shutdown.clone();
    let proxy_client = client.clone();
    // The service proxy's table and bridge are the pod network's, from one config.
    let proxy_config = net::services::ProxyConfig::from(&config(data_dir));
    tokio::spawn(async move {
        if let Err(err) = net::services::run(proxy_client, proxy_config, proxy_shutdown).await {
            tracing::error!(%err, "service proxy stopped");
        }
    });

    // The mesh's control plane: proxies follow Services and endpoints from here
    // (`istiod.istio-system.svc:15010`, which `tandem mesh install` points at this node).
    let discovery_addr = SocketAddr::new(IpAddr::V4(gateway), 15010);
    let discovery = tokio::net::TcpListener::bind(discovery_addr)
        .await
        .with_context(|| format!("starting mesh discovery on {discovery_addr}"))?;
    let discovery_client = client.clone();
    let discovery_shutdown = shutdown.clone();
    tokio::spawn(async move {
        let stop = discovery_shutdown.cancelled_owned();
        if let Err(err) = proxy::discovery::serve(discovery_client, discovery, stop).await {
            tracing::error!(%err, "mesh discovery stopped");
        }
    });

    let listen = SocketAddr::new(IpAddr::V4(gateway), 53);
    let upstream = dns::Upstream::from_resolv_conf(Path::new("/etc/resolv.conf"), &[listen])
        .unwrap_or_else(|_| dns::Upstream::none());
    let zone = dns::ClusterDns::new(node::runtime::CLUSTER_DOMAIN).context("cluster DNS zone")?;
    let server = dns::DnsServer::bind(&[listen], zone.clone(), upstream)
        .await
        .with_context(|| format!("starting cluster DNS on {listen}"))?;
    let dns_shutdown = shutdown.clone();
    tokio::spawn(async move {
        if let Err(err) = server.run(dns_shutdown).await {
            tracing::error!(%err, "cluster DNS stopped");
        }
    });
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            result = dns::watch(client, zone) => {
                if let Err(err) = result {
                    tracing::error!(%err, "cluster DNS stopped following Services");
                }
            }
        }
    });
    Ok(())
}

/// Creates the Services every cluster has, if missing: `kubernetes` (the first ClusterIP)
/// and `kube-dns` (10.96.0.10, served by tandem on the bridge address).
pub async fn seed_services(client: &kube::Client, gateway: Ipv4Addr) -> anyhow::Result<()> {
    let default: Api<Service> = Api::namespaced(client.clone(), "default");
    let kubernetes: Service = serde_json::from_value(json!({
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]},
    }))?;
    create_if_missing(&default, &kubernetes).await?;

    let system: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    let kube_dns: Service = serde_json::from_value(json!({
        "metadata": {"name": "kube-dns", "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
        "spec": {"clusterIP": DNS_SERVICE_IP.to_string(), "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
        ]},
    }))?;
    create_if_missing(&system, &kube_dns).await?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "kube-system");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "kube-dns-tandem", "labels": {
            "kubernetes.io/service-name": "kube-dns",
            "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
        }},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [gateway.to_string()], "conditions": {"ready": true}}],
        "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        ],
    }))?;
    match slices.get_opt("kube-dns-tandem").await? {
        Some(existing) if existing.endpoints == slice.endpoints => {}
        Some(existing) => {
            let mut updated = slice;
            updated.metadata.resource_version = existing.metadata.resource_version;
            slices
                .replace("kube-dns-tandem", &PostParams::default(), &updated)
                .await?;
        }
        None => {
            slices.create(&PostParams::default(), &slice).await?;
        }
    }
    Ok(())
}

async fn create_if_missing(api: &Api<Service>, svc: &Service) -> anyhow::Result<()> {
    match api.create(&PostParams::default(), svc).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes the bridge and tandem's nftables table (after every pod is gone).
pub async fn teardown(data_dir: &Path) -> anyhow::Result<()> {
    net::teardown(&config(data_dir))
        .await
        .context("removing the pod network")
}

/// The pods directory of the runtime under `data_dir`.
pub fn pods_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("run").join("pods")
}
