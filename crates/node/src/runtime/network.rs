//! The pod network seen from the runtime: something that gives a pod sandbox's network
//! namespace an address (and takes it back), plus the `/etc/resolv.conf` and `/etc/hosts`
//! its containers see. The runtime only calls it; the bridge, IPAM and DNS live elsewhere.

use std::net::IpAddr;
use std::path::Path;

use futures::future::BoxFuture;

/// What a pod gets from the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAddress {
    /// `status.podIP`.
    pub ip: IpAddr,
    /// `status.hostIP`: the node's address as pods reach it.
    pub host_ip: IpAddr,
    /// The pod's `/etc/resolv.conf` (`None` keeps the host's).
    pub resolv_conf: Option<String>,
}

/// Who the pod is, for the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity<'a> {
    pub uid: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

/// Attaches sandboxes to the pod network. Both calls are idempotent: attaching a uid that
/// is attached returns its address (a sandbox adopted after a restart), detaching an
/// unknown uid succeeds.
pub trait PodNetwork: Send + Sync + std::fmt::Debug {
    /// `netns` is the sandbox's network namespace (`/proc/<pid>/ns/net`).
    fn attach<'a>(
        &'a self,
        pod: PodIdentity<'a>,
        netns: &'a Path,
    ) -> BoxFuture<'a, Result<PodAddress, String>>;

    fn detach<'a>(&'a self, uid: &'a str) -> BoxFuture<'a, Result<(), String>>;
}

/// `/etc/hosts` as the kubelet writes it for a pod with its own network namespace.
pub fn hosts_file(ip: IpAddr, hostname: &str, fqdn: Option<&str>) -> String {
    let mut text = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    match fqdn {
        Some(fqdn) => text.push_str(&format!("{ip}\t{fqdn}\t{hostname}\n")),
        None => text.push_str(&format!("{ip}\t{hostname}\n")),
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_ends_with_the_pod_line() {
        let ip: IpAddr = "10.244.0.7".parse().expect("ip");
        let text = hosts_file(ip, "web-0", None);
        assert!(text.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(text.ends_with("fe00::2\tip6-allrouters\n10.244.0.7\tweb-0\n"));
        let text = hosts_file(ip, "web-0", Some("web-0.web.default.svc.cluster.local"));
        assert!(text.ends_with("10.244.0.7\tweb-0.web.default.svc.cluster.local\tweb-0\n"));
    }
}
