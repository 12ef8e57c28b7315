//! The host bridge and the per-pod veth pairs.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
    conn: tokio::task::JoinHandle<()>,
    bridge_index: u32,
    ipam: Mutex<Ipam>,
    /// Serialises attach/detach so two calls for one pod cannot race on its veth.
    ops: tokio::sync::Mutex<()>,
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
            conn,
            bridge_index,
            ipam: Mutex::new(ipam),
            ops: tokio::sync::Mutex::new(()),
        })
    }

    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    /// Gives pod `uid`, whose network namespace is at `netns` (e.g. `/proc/<pid>/ns/net` of
    /// its sandbox), an address and a veth into the bridge. Idempotent: an existing veth is
    /// kept and the same address returned.
    pub async fn attach(&self, uid: &str, netns: &Path) -> Result<PodAddress, Error> {
        let _serial = self.ops.lock().await;
        let ns = Netns::open(netns)?;
        let ip = self.lock_ipam().allocate(uid)?;
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
            link::delete(&self.handle, idx, &host).await?;
        }

        let (host_idx, peer_idx) = link::create_veth(&self.handle, &host, &want.tmp_name).await?;
        let made = async {
            link::plug_host_end(&self.handle, host_idx, &host, self.bridge_index, uid).await?;
            link::move_to_netns(&self.handle, peer_idx, &want.tmp_name, ns.as_raw_fd()).await?;
            ns.run_async(move || configure_pod(want)).await?
        }
        .await;
        if let Err(e) = made {
            // Leave nothing half-made behind; deleting one end removes both.
            let _ = link::delete(&self.handle, host_idx, &host).await;
            return Err(e);
        }
        Ok(addr)
    }

    /// Removes pod `uid`'s veth (if its namespace still exists) and frees its address.
    /// Idempotent.
    pub async fn detach(&self, uid: &str) -> Result<(), Error> {
        let _serial = self.ops.lock().await;
        let host = link::host_veth_name(uid);
        if let Some(existing) = link::get(&self.handle, &host).await? {
            let owner = link::alias(&existing).unwrap_or_default();
            if owner.is_empty() || owner == uid {
                link::delete(&self.handle, link::index(&existing), &host).await?;
            }
        }
        self.lock_ipam().release(uid)?;
        Ok(())
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
