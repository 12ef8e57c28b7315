//! The host bridge and the per-pod veth pairs.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rtnetlink::Handle;
use rtnetlink::packet_route::link::InfoKind;

use crate::cidr::Ipv4Cidr;
use crate::ipam::Ipam;
use crate::link::{self, PodSide};
use crate::netns::Netns;
use crate::{Error, nft};

/// Where and how pods are networked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The host bridge (default `tandem0`).
    pub bridge: String,
    /// Pod addresses come from here; the bridge gets the first one (default `10.244.0.0/16`).
    pub pod_cidr: Ipv4Cidr,
    /// ClusterIPs live here (default `10.96.0.0/16`, the API server's default). When set, a
    /// route sends it to the bridge, so the host reaches Services even without a default
    /// route; the route goes away with the bridge.
    pub service_cidr: Option<Ipv4Cidr>,
    /// tandem's own nftables table in the `ip` family (default `tandem`).
    pub table: String,
    /// IPAM state lives in `<state_dir>/ipam`.
    pub state_dir: PathBuf,
}

impl NetConfig {
    /// The defaults, with state under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        NetConfig {
            bridge: "tandem0".to_owned(),
            pod_cidr: Ipv4Cidr::DEFAULT_PODS,
            service_cidr: Some(Ipv4Cidr::DEFAULT_SERVICES),
            table: "tandem".to_owned(),
            state_dir: state_dir.into(),
        }
    }

    /// The bridge's address: the first address of the pod CIDR.
    pub fn gateway(&self) -> Ipv4Addr {
        self.pod_cidr.gateway()
    }

    fn check(&self) -> Result<(), Error> {
        link::check_ifname(&self.bridge)?;
        nft::check_table_name(&self.table)?;
        self.pod_cidr.check_pod_range()
    }
}

/// A pod's address as configured on its `eth0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodAddress {
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
}

/// The host side of pod networking: the bridge, a netlink connection in the host namespace
/// and the IPAM.
#[derive(Debug)]
pub struct Network {
    cfg: NetConfig,
    /// Opened by [`Network::ensure`]: it stays in that thread's (the host's) namespace.
    handle: Handle,
    /// The host's namespace, where veths are deleted on connections of their own.
    host_ns: Netns,
    conn: tokio::task::JoinHandle<()>,
    bridge_index: u32,
    /// Shared with the blocking pool, where its files are written.
    ipam: Arc<Mutex<Ipam>>,
    /// One lock per pod uid: attach and detach of one pod take turns (they work on the
    /// same veth), while different pods are set up side by side. One lock for all pods
    /// made 200 pods starting at once wait seconds for one another.
    ops: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Drop for Network {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl Network {
    /// Creates or adopts the bridge, enables forwarding on it, installs the isolation rule
    /// and opens the IPAM state. Safe to call again on a running system.
    pub async fn ensure(cfg: NetConfig) -> Result<Network, Error> {
        cfg.check()?;
        let ipam = Ipam::open(cfg.state_dir.join("ipam"), cfg.pod_cidr)?;
        let host_ns = Netns::open(Path::new("/proc/thread-self/ns/net"))?;
        let (handle, conn) = link::connect()?;
        let bridge_index = link::ensure_bridge(
            &handle,
            &cfg.bridge,
            cfg.gateway(),
            cfg.pod_cidr.prefix_len(),
        )
        .await?;
        // Forwarding on the bridge only: packets that arrive on it may be routed (a pod
        // reaching a Service), while the global switch stays as the host had it.
        write_sysctl(
            &PathBuf::from(format!("/proc/sys/net/ipv4/conf/{}/forwarding", cfg.bridge)),
            "1",
        )?;
        nft::apply(&nft::isolation_script(&cfg.table, &cfg.bridge)).await?;
        if let Some(svc) = cfg.service_cidr {
            link::ensure_link_route(
                &handle,
                bridge_index,
                svc.network(),
                svc.prefix_len(),
                cfg.gateway(),
            )
            .await?;
        }
        Ok(Network {
            cfg,
            handle,
            host_ns,
            conn,
            bridge_index,
            ipam: Arc::new(Mutex::new(ipam)),
            ops: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    /// Gives pod `uid`, whose network namespace is at `netns` (e.g. `/proc/<pid>/ns/net` of
    /// its sandbox), an address and a veth into the bridge. Idempotent: an existing veth is
    /// kept and the same address returned.
    pub async fn attach(&self, uid: &str, netns: &Path) -> Result<PodAddress, Error> {
        let _serial = self.pod_lock(uid).await;
        let ns = Netns::open(netns)?;
        let ip = self
            .with_ipam({
                let uid = uid.to_owned();
                move |ipam| ipam.allocate(&uid)
            })
            .await?;
        let addr = PodAddress {
            ip,
            prefix_len: self.cfg.pod_cidr.prefix_len(),
            gateway: self.cfg.gateway(),
        };
        let host = link::host_veth_name(uid);
        let want = PodSide {
            tmp_name: link::peer_tmp_name(uid),
            ip,
            prefix_len: addr.prefix_len,
            gateway: addr.gateway,
        };

        if let Some(existing) = link::get(&self.handle, &host).await? {
            let owner = link::alias(&existing).unwrap_or_default();
            if !owner.is_empty() && owner != uid {
                return Err(Error::NameClash {
                    name: host,
                    owner: owner.to_owned(),
                    uid: uid.to_owned(),
                });
            }
            let idx = link::index(&existing);
            let in_pod = ns.run_async(pod_eth0_peer).await??;
            if in_pod == Some(idx) {
                // Re-adoption: the pair is intact; make sure every setting is in place.
                link::plug_host_end(&self.handle, idx, &host, self.bridge_index, uid).await?;
                ns.run_async(move || configure_pod(want)).await??;
                return Ok(addr);
            }
            // The other end lives somewhere else (an older sandbox): start over.
            self.delete_host_end(&host, uid).await?;
        }

        // The pod end is made inside the pod's namespace: moving it there afterwards
        // costs the kernel a network-wide synchronisation (~20 ms) under its global lock.
        let host_idx =
            link::create_veth(&self.handle, &host, &want.tmp_name, ns.as_raw_fd()).await?;
        let made = async {
            link::plug_host_end(&self.handle, host_idx, &host, self.bridge_index, uid).await?;
            ns.run_async(move || configure_pod(want)).await?
        }
        .await;
        if let Err(e) = made {
            // Leave nothing half-made behind; deleting one end removes both.
            let _ = self.delete_host_end(&host, uid).await;
            return Err(e);
        }
        Ok(addr)
    }

    /// Removes pod `uid`'s veth (if its namespace still exists) and frees its address.
    /// Idempotent.
    pub async fn detach(&self, uid: &str) -> Result<(), Error> {
        let serial = self.pod_lock(uid).await;
        self.delete_host_end(&link::host_veth_name(uid), uid)
            .await?;
        self.with_ipam({
            let uid = uid.to_owned();
            move |ipam| ipam.release(&uid)
        })
        .await?;
        self.forget_lock(uid, serial);
        Ok(())
    }

    /// Deletes the host end `host` of pod `uid`'s veth (and so the pair), unless another
    /// pod owns that name. The kernel answers a delete only after an RCU barrier (tens of
    /// milliseconds) and a netlink connection handles one request at a time, so each
    /// delete runs on a connection of its own: on the shared one, pods being set up
    /// waited for every pod being removed.
    async fn delete_host_end(&self, host: &str, uid: &str) -> Result<(), Error> {
        let (host, uid) = (host.to_owned(), uid.to_owned());
        self.host_ns
            .run_async(move || async move {
                let (handle, conn) = link::connect()?;
                let out = async {
                    if let Some(existing) = link::get(&handle, &host).await? {
                        let owner = link::alias(&existing).unwrap_or_default();
                        if owner.is_empty() || owner == uid {
                            link::delete(&handle, link::index(&existing), &host).await?;
                        }
                    }
                    Ok(())
                }
                .await;
                conn.abort();
                out
            })
            .await?
    }

    /// Waits for pod `uid`'s turn.
    async fn pod_lock(&self, uid: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(uid.to_owned())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Drops pod `uid`'s lock once it is detached, unless another call waits on it.
    fn forget_lock(&self, uid: &str, held: tokio::sync::OwnedMutexGuard<()>) {
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        // Held by the map and by `held` only: nobody else waits for this pod.
        if ops.get(uid).is_some_and(|l| Arc::strong_count(l) <= 2) {
            ops.remove(uid);
        }
        drop(held);
    }

    /// Runs `f` on the IPAM on the blocking pool: it writes and syncs files.
    async fn with_ipam<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Ipam) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let ipam = self.ipam.clone();
        tokio::task::spawn_blocking(move || f(&mut ipam.lock().unwrap_or_else(|p| p.into_inner())))
            .await
            .map_err(|_| Error::IpamTask)?
    }

    /// The address `uid` holds, if any.
    pub fn address(&self, uid: &str) -> Option<PodAddress> {
        self.lock_ipam().get(uid).map(|ip| PodAddress {
            ip,
            prefix_len: self.cfg.pod_cidr.prefix_len(),
            gateway: self.cfg.gateway(),
        })
    }

    /// Every held address with its pod uid; the caller detaches those of vanished pods.
    pub fn allocations(&self) -> Vec<(String, Ipv4Addr)> {
        self.lock_ipam().allocations()
    }

    fn lock_ipam(&self) -> std::sync::MutexGuard<'_, Ipam> {
        // A panic while holding the lock cannot leave the pool inconsistent with the
        // files in a way that matters: every change hits the disk first.
        self.ipam.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn pod_eth0_peer() -> Result<Option<u32>, Error> {
    let (handle, conn) = link::connect()?;
    let out = link::pod_eth0_peer(&handle).await;
    conn.abort();
    out
}

async fn configure_pod(want: PodSide) -> Result<(), Error> {
    let (handle, conn) = link::connect()?;
    let out = link::configure_pod(&handle, &want).await;
    conn.abort();
    out
}

fn write_sysctl(path: &Path, value: &str) -> Result<(), Error> {
    std::fs::write(path, value).map_err(|e| Error::Sysctl {
        path: path.to_owned(),
        source: e,
    })
}

/// Deletes tandem's nftables table and the bridge. Pods' veths go with their namespaces;
/// other interfaces, routes and tables are not touched.
pub async fn teardown(cfg: &NetConfig) -> Result<(), Error> {
    link::check_ifname(&cfg.bridge)?;
    nft::check_table_name(&cfg.table)?;
    nft::apply(&nft::delete_table_script(&cfg.table)).await?;
    let (handle, conn) = link::connect()?;
    let out = async {
        if let Some(bridge) = link::get(&handle, &cfg.bridge).await? {
            // Only ever a bridge: a mistyped name must not take down an uplink.
            if link::kind(&bridge) != Some(&InfoKind::Bridge) {
                return Err(Error::NotABridge(cfg.bridge.clone()));
            }
            link::delete(&handle, link::index(&bridge), &cfg.bridge).await?;
        }
        Ok(())
    }
    .await;
    conn.abort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// The node agent keeps one `Network` behind an `Arc` and calls it from many tasks.
    #[allow(dead_code)]
    fn futures_are_send(n: &Network, p: &Path, cfg: &NetConfig, client: kube::Client) {
        fn shared<T: Send + Sync>() {}
        shared::<Network>();
        assert_send(&Network::ensure(cfg.clone()));
        assert_send(&n.attach("uid", p));
        assert_send(&n.detach("uid"));
        assert_send(&teardown(cfg));
        assert_send(&crate::services::run(
            client,
            crate::services::ProxyConfig::default(),
            tokio_util::sync::CancellationToken::new(),
        ));
    }

    #[test]
    fn config_checks_names_and_range() {
        let mut cfg = NetConfig::new("/tmp/x");
        assert!(cfg.check().is_ok());
        assert_eq!(cfg.gateway(), Ipv4Addr::new(10, 244, 0, 1));
        cfg.bridge = "a-name-that-is-too-long".into();
        assert!(cfg.check().is_err());
        cfg.bridge = "tandem0".into();
        cfg.table = "bad table".into();
        assert!(cfg.check().is_err());
        cfg.table = "tandem".into();
        cfg.pod_cidr = "10.0.0.0/31".parse().unwrap();
        assert!(cfg.check().is_err());
    }
}
