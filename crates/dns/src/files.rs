//! The per-pod files the kubelet writes: `/etc/resolv.conf` and `/etc/hosts`.

use std::fmt::Write as _;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::HostAlias;

/// The resolv.conf of a pod with `dnsPolicy: ClusterFirst`, laid out as the container
/// runtime writes the kubelet's DNS config: search list, nameserver, options.
pub fn resolv_conf(namespace: &str, nameserver: IpAddr, domain: &str) -> String {
    let domain = domain.trim_end_matches('.');
    format!(
        "search {namespace}.svc.{domain} svc.{domain} {domain}\nnameserver {nameserver}\noptions ndots:5\n"
    )
}

/// The kubelet-managed `/etc/hosts` of a pod that does not use the host network: the
/// localhost and IPv6 lines, one line per pod IP (with the FQDN first when the pod has a
/// `subdomain`), then the `hostAliases` block.
pub fn hosts_file(
    pod_ips: &[IpAddr],
    hostname: &str,
    subdomain: Option<&str>,
    namespace: &str,
    domain: &str,
    host_aliases: &[HostAlias],
) -> String {
    let domain = domain.trim_end_matches('.');
    let mut out = String::from("# Kubernetes-managed hosts file.\n");
    out.push_str("127.0.0.1\tlocalhost\n");
    out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    out.push_str("fe00::0\tip6-localnet\n");
    out.push_str("fe00::0\tip6-mcastprefix\n");
    out.push_str("fe00::1\tip6-allnodes\n");
    out.push_str("fe00::2\tip6-allrouters\n");
    match subdomain.filter(|s| !s.is_empty()) {
        Some(subdomain) => {
            for ip in pod_ips {
                let _ = writeln!(
                    out,
                    "{ip}\t{hostname}.{subdomain}.{namespace}.svc.{domain}\t{hostname}"
                );
            }
        }
        None => {
            for ip in pod_ips {
                let _ = writeln!(out, "{ip}\t{hostname}");
            }
        }
    }
    if !host_aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for alias in host_aliases {
            let names = alias.hostnames.as_deref().unwrap_or_default().join("\t");
            let _ = writeln!(out, "{}\t{names}", alias.ip);
        }
    }
    out
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

    #[test]
    fn hosts_file_without_subdomain() {
        let text = hosts_file(
            &["10.88.0.7".parse().unwrap()],
            "web-5d8f",
            None,
            "default",
            "cluster.local",
            &[],
        );
        assert_eq!(
            text,
            "# Kubernetes-managed hosts file.\n\
             127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\n\
             fe00::0\tip6-mcastprefix\n\
             fe00::1\tip6-allnodes\n\
             fe00::2\tip6-allrouters\n\
             10.88.0.7\tweb-5d8f\n"
        );
    }

    #[test]
    fn hosts_file_with_subdomain_dual_stack_and_aliases() {
        let aliases = [
            HostAlias {
                ip: "127.0.0.1".into(),
                hostnames: Some(vec!["foo.local".into(), "bar.local".into()]),
            },
            HostAlias {
                ip: "10.1.2.3".into(),
                hostnames: Some(vec!["foo.remote".into()]),
            },
        ];
        let text = hosts_file(
            &["10.88.0.7".parse().unwrap(), "fd00::7".parse().unwrap()],
            "db-0",
            Some("db"),
            "shop",
            "cluster.local",
            &aliases,
        );
        let tail: Vec<&str> = text.lines().skip(7).collect();
        assert_eq!(
            tail,
            [
                "10.88.0.7\tdb-0.db.shop.svc.cluster.local\tdb-0",
                "fd00::7\tdb-0.db.shop.svc.cluster.local\tdb-0",
                "",
                "# Entries added by HostAliases.",
                "127.0.0.1\tfoo.local\tbar.local",
                "10.1.2.3\tfoo.remote",
            ]
        );
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn empty_subdomain_is_no_subdomain() {
        let ip: IpAddr = "10.88.0.9".parse().unwrap();
        assert_eq!(
            hosts_file(&[ip], "a", Some(""), "ns", "cluster.local", &[]),
            hosts_file(&[ip], "a", None, "ns", "cluster.local", &[])
        );
    }
}
