//! The pod's `/etc/resolv.conf` as the kubelet writes it (the node writes `/etc/hosts`).

use std::net::IpAddr;

/// The resolv.conf of a pod with `dnsPolicy: ClusterFirst`, laid out as the container
/// runtime writes the kubelet's DNS config: search list, nameserver, options.
pub fn resolv_conf(namespace: &str, nameserver: IpAddr, domain: &str) -> String {
    let domain = domain.trim_end_matches('.');
    format!(
        "search {namespace}.svc.{domain} svc.{domain} {domain}\nnameserver {nameserver}\noptions ndots:5\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_matches_the_kubelet_layout() {
        let text = resolv_conf("shop", "10.88.0.1".parse().unwrap(), "cluster.local.");
        assert_eq!(
            text,
            "search shop.svc.cluster.local svc.cluster.local cluster.local\n\
             nameserver 10.88.0.1\n\
             options ndots:5\n"
        );
    }
}
