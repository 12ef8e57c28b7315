//! Netlink work on links, addresses and routes (rtnetlink), and interface naming.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::Error;
use crate::error::errno;

/// Linux interface names hold at most 15 bytes.
const IFNAMSIZ_MAX: usize = 15;

/// The host end of a pod's veth pair: `tnd` + 11 hex digits of a stable hash of the uid.
pub fn host_veth_name(uid: &str) -> String {
    format!("tnd{}", uid_hash(uid))
}

/// The pod end's name while it is still in the host namespace, before it becomes `eth0`.
pub(crate) fn peer_tmp_name(uid: &str) -> String {
    format!("tnp{}", uid_hash(uid))
}

/// FNV-1a: stable across builds and Rust versions, unlike `DefaultHasher`, so a restarted
/// tandem finds the veths it made before.
fn uid_hash(uid: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in uid.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:011x}", h >> 20)
}

/// Checks an interface name the kernel would accept (and that is safe in a sysctl path).
pub(crate) fn check_ifname(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > IFNAMSIZ_MAX {
        return Err(Error::InvalidName(name.to_owned(), "1 to 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(Error::InvalidName(
            name.to_owned(),
            "not a valid interface name",
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(Error::InvalidName(
            name.to_owned(),
            "letters, digits, '-', '_' and '.' only",
        ));
    }
    Ok(())
}

/// Opens a netlink connection in the namespace of the calling thread and drives it on the
/// current tokio runtime.
pub(crate) fn connect() -> Result<(Handle, tokio::task::JoinHandle<()>), Error> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(Error::NetlinkSocket)?;
    Ok((handle, tokio::spawn(conn)))
}

pub(crate) async fn get(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, Error> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(Errno::ENODEV as i32) => Ok(None),
        Err(e) => Err(Error::netlink(format!("looking up {name}"), e)),
    }
}

pub(crate) fn index(link: &LinkMessage) -> u32 {
    link.header.index
}

pub(crate) fn kind(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}

pub(crate) fn alias(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(s) => Some(s.as_str()),
        _ => None,
    })
}

/// For a veth: the peer's index (in the peer's namespace).
pub(crate) fn peer_index(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Link(i) => Some(*i),
        _ => None,
    })
}

/// A locally administered MAC derived from the bridge name. A bridge without an explicit
/// address takes the lowest of its ports' and changes as pods come and go, which would
/// leave stale gateway entries in the pods' ARP caches.
fn bridge_mac(name: &str) -> Vec<u8> {
    let h = uid_hash(name);
    let n = u64::from_str_radix(&h, 16).unwrap_or(0);
    vec![
        0x02,
        0x74,
        (n >> 24) as u8,
        (n >> 16) as u8,
        (n >> 8) as u8,
        n as u8,
    ]
}

/// Creates the bridge if missing (bridged IPv4 passes the `ip` netfilter hooks), gives it
/// `addr/prefix_len` and brings it up. Returns its index.
pub(crate) async fn ensure_bridge(
    handle: &Handle,
    name: &str,
    addr: Ipv4Addr,
    prefix_len: u8,
) -> Result<u32, Error> {
    let link = match get(handle, name).await? {
        Some(link) => link,
        None => {
            let msg = LinkBridge::new(name)
                .nf_call_iptables(true)
                .address(bridge_mac(name))
                .build();
            match handle.link().add(msg).execute().await {
                Ok(()) => {}
                // Someone made it meanwhile: adopt it below.
                Err(e) if errno(&e) == Some(Errno::EEXIST as i32) => {}
                Err(e) => return Err(Error::netlink(format!("creating bridge {name}"), e)),
            }
            get(handle, name)
                .await?
                .ok_or_else(|| Error::NotABridge(name.to_owned()))?
        }
    };
    if kind(&link) != Some(&InfoKind::Bridge) {
        return Err(Error::NotABridge(name.to_owned()));
    }
    let idx = index(&link);
    handle
        .address()
        .add(idx, IpAddr::V4(addr), prefix_len)
        .replace()
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("adding {addr}/{prefix_len} to {name}"), e))?;
    set_up(handle, idx, name).await?;
    Ok(idx)
}

pub(crate) async fn set_up(handle: &Handle, idx: u32, name: &str) -> Result<(), Error> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("bringing {name} up"), e))
}

/// `dst/prefix_len dev idx scope link`, replacing any such route.
pub(crate) async fn ensure_link_route(
    handle: &Handle,
    idx: u32,
    dst: Ipv4Addr,
    prefix_len: u8,
    src: Ipv4Addr,
) -> Result<(), Error> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, prefix_len)
        .output_interface(idx)
        .pref_source(src)
        .scope(rtnetlink::packet_route::route::RouteScope::Link)
        .build();
    handle
        .route()
        .add(route)
        .replace()
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("adding route {dst}/{prefix_len}"), e))
}

pub(crate) async fn delete(handle: &Handle, idx: u32, name: &str) -> Result<(), Error> {
    match handle.link().del(idx).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(Errno::ENODEV as i32) => Ok(()),
        Err(e) => Err(Error::netlink(format!("deleting {name}"), e)),
    }
}

/// Creates the veth pair `host`/`peer`: `host` in the calling namespace, `peer` in the
/// namespace open as `peer_ns` (created there, not moved). Returns the host end's index.
pub(crate) async fn create_veth(
    handle: &Handle,
    host: &str,
    peer: &str,
    peer_ns: std::os::fd::RawFd,
) -> Result<u32, Error> {
    let peer_msg = LinkUnspec::new_with_name(peer).setns_by_fd(peer_ns).build();
    let msg = LinkVeth::new(host, peer)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
        .build();
    handle
        .link()
        .add(msg)
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("creating veth {host}"), e))?;
    let host_link = get(handle, host)
        .await?
        .ok_or_else(|| Error::PodEndMissing(host.to_owned()))?;
    Ok(index(&host_link))
}

/// Attaches the host end to the bridge, labels it with the pod uid, turns on hairpin mode
/// (a pod reaching itself through its own Service comes back in on the same port) and
/// brings it up.
pub(crate) async fn plug_host_end(
    handle: &Handle,
    idx: u32,
    name: &str,
    bridge_idx: u32,
    uid: &str,
) -> Result<(), Error> {
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(idx)
                .controller(bridge_idx)
                .alias(uid)
                .build(),
        )
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("attaching {name} to the bridge"), e))?;
    handle
        .link()
        .set_port(LinkBridgePort::new(idx).hairpin(true).build())
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("hairpin mode on {name}"), e))?;
    set_up(handle, idx, name).await
}

/// What the pod end should look like.
#[derive(Debug, Clone)]
pub(crate) struct PodSide {
    pub tmp_name: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
}

pub(crate) const POD_IFNAME: &str = "eth0";

/// Inside the pod namespace: the peer index of `eth0` when it is a veth.
pub(crate) async fn pod_eth0_peer(handle: &Handle) -> Result<Option<u32>, Error> {
    Ok(get(handle, POD_IFNAME)
        .await?
        .filter(|l| kind(l) == Some(&InfoKind::Veth))
        .and_then(|l| peer_index(&l)))
}

/// Inside the pod namespace: names the veth end `eth0`, gives it the pod address, brings it
/// and `lo` up and routes everything via the gateway. Safe to repeat.
pub(crate) async fn configure_pod(handle: &Handle, want: &PodSide) -> Result<(), Error> {
    let tmp = get(handle, &want.tmp_name).await?;
    let eth0 = get(handle, POD_IFNAME).await?;
    let idx = match (tmp, eth0) {
        (Some(tmp), eth0) => {
            if let Some(old) = eth0 {
                // A stale eth0 (its host end is gone): the fresh veth replaces it.
                delete(handle, index(&old), POD_IFNAME).await?;
            }
            let idx = index(&tmp);
            handle
                .link()
                .set(LinkUnspec::new_with_index(idx).name(POD_IFNAME).build())
                .execute()
                .await
                .map_err(|e| Error::netlink("renaming the pod end to eth0", e))?;
            idx
        }
        (None, Some(eth0)) => index(&eth0),
        (None, None) => return Err(Error::PodEndMissing(want.tmp_name.clone())),
    };
    handle
        .address()
        .add(idx, IpAddr::V4(want.ip), want.prefix_len)
        .replace()
        .execute()
        .await
        .map_err(|e| {
            Error::netlink(format!("adding {}/{} to eth0", want.ip, want.prefix_len), e)
        })?;
    set_up(handle, idx, POD_IFNAME).await?;
    if let Some(lo) = get(handle, "lo").await? {
        set_up(handle, index(&lo), "lo").await?;
    }
    let default = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(want.gateway)
        .output_interface(idx)
        .build();
    handle
        .route()
        .add(default)
        .replace()
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("default route via {}", want.gateway), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_are_stable_short_and_distinct() {
        let a = host_veth_name("0b5f2a1c-7e4e-4d0e-9a8f-0d6c2f9f1a11");
        assert_eq!(a, host_veth_name("0b5f2a1c-7e4e-4d0e-9a8f-0d6c2f9f1a11"));
        assert!(a.starts_with("tnd"));
        assert_eq!(a.len(), 14);
        assert!(check_ifname(&a).is_ok());
        assert_ne!(a, host_veth_name("0b5f2a1c-7e4e-4d0e-9a8f-0d6c2f9f1a12"));
        assert_eq!(&peer_tmp_name("x")[3..], &host_veth_name("x")[3..]);
        // Pinned so a change of hash function (which would orphan veths made by an older
        // tandem) cannot go unnoticed.
        assert_eq!(host_veth_name(""), "tndcbf29ce4842");
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(check_ifname("tandem0").is_ok());
        for bad in ["", "a-very-long-bridge0", "..", "br/0", "br 0", "br\"0"] {
            assert!(check_ifname(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bridge_mac_is_locally_administered_unicast() {
        let mac = bridge_mac("tandem0");
        assert_eq!(mac.len(), 6);
        assert_eq!(mac[0] & 0b11, 0b10);
        assert_eq!(mac, bridge_mac("tandem0"));
    }
}
