//! Pod networking against `tandem up`: pod addresses, Services (nftables), cluster DNS,
//! through the real kubectl. Each cluster runs in a private network namespace of its own
//! (held by a `sleep` process), so tests run side by side and the machine's own network is
//! never touched; kubectl and DNS queries enter that namespace. Needs root.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;

use common::{Cluster, Netns, ci, example, have};

fn httpbin_ready(c: &Cluster) {
    c.ok(&["apply", "-f", &example("httpbin.yaml")]);
    c.wait_for(
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=httpbin",
            "-o",
            "jsonpath={.items[*].endpoints[?(@.conditions.ready==true)].addresses[0]}",
        ],
        "two ready httpbin endpoints",
        |t| t.split_whitespace().count() == 2,
    );
}

#[test]
fn pods_reach_a_service_by_name_and_every_replica_answers() {
    let Some(c) = Cluster::start() else { return };
    httpbin_ready(&c);
    let pods = c.pod_ips("app=httpbin");
    assert_eq!(pods.len(), 2, "{pods:?}");
    for (_, ip) in &pods {
        let addr: Ipv4Addr = ip.parse().expect("pod IP");
        assert_eq!(addr.octets()[..2], [10, 244], "{ip} is from the pod CIDR");
    }
    let wide = c.ok(&["get", "pods", "-o", "wide", "-l", "app=httpbin"]);
    for (name, ip) in &pods {
        assert!(wide.contains(name) && wide.contains(ip.as_str()), "{wide}");
    }

    let log = c.run_pod(
        "client",
        "curl -sS -m 5 http://httpbin.default.svc.cluster.local:8000/get && \
         for i in $(seq 1 30); do curl -sS -m 5 http://httpbin:8000/hostname; done",
    );
    assert!(
        log.contains("\"url\": \"http://httpbin.default.svc.cluster.local:8000/get\""),
        "{log}"
    );
    let client_ip = c.ok(&["get", "pod", "client", "-o", "jsonpath={.status.podIP}"]);
    assert!(
        log.contains(&format!("\"origin\": \"{client_ip}\"")),
        "{log}"
    );
    for (name, _) in &pods {
        assert!(
            log.contains(&format!("\"hostname\": \"{name}\"")),
            "replica {name} never answered:\n{log}"
        );
    }

    // No endpoints: refused at once, not a hang.
    c.ok(&["scale", "deployment/httpbin", "--replicas=0"]);
    c.wait_for(
        &["get", "endpoints", "httpbin", "-o", "jsonpath={.subsets}"],
        "httpbin without endpoints",
        str::is_empty,
    );
    let log = c.run_pod(
        "refused",
        "s=$(date +%s%N); curl -sS -m 20 http://httpbin:8000/get; rc=$?; \
         echo rc=$rc ms=$(( ($(date +%s%N) - s) / 1000000 ))",
    );
    let line = log.lines().last().unwrap_or_default();
    let (rc, ms) = line
        .strip_prefix("rc=")
        .and_then(|r| r.split_once(" ms="))
        .expect("rc and ms line");
    assert_eq!(rc, "7", "curl: connection refused expected:\n{log}");
    assert!(
        ms.parse::<u64>().expect("ms") < 2000,
        "took {ms} ms:\n{log}"
    );
}

#[test]
fn a_pod_whose_sidecar_is_not_ready_is_not_an_endpoint() {
    let Some(c) = Cluster::start() else { return };
    c.apply(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-ready
  labels: {app: web}
spec:
  containers:
  - name: app
    image: tandem/httpbin
---
apiVersion: v1
kind: Pod
metadata:
  name: web-not-ready
  labels: {app: web}
spec:
  initContainers:
  - name: proxy
    image: debian:12
    command: ["sleep", "infinity"]
    restartPolicy: Always
    readinessProbe:
      exec: {command: ["false"]}
      periodSeconds: 1
  containers:
  - name: app
    image: tandem/httpbin
"#,
    );
    let ips = c.pod_ips("app=web");
    let ip_of = |name: &str| {
        c.wait_for(
            &["get", "pod", name, "-o", "jsonpath={.status.podIP}"],
            "pod IP",
            |t| t.starts_with("10.244."),
        )
    };
    let (ready, not_ready) = (ip_of("web-ready"), ip_of("web-not-ready"));
    assert!(ips.len() == 2 && ready != not_ready, "{ips:?}");
    let slice = c.wait_for(
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={range .items[*].endpoints[*]}{.addresses[0]}={.conditions.ready} {end}",
        ],
        "both pods listed",
        |t| t.contains(&format!("{ready}=true")) && t.contains(&format!("{not_ready}=false")),
    );
    assert_eq!(slice.split_whitespace().count(), 2, "{slice}");
    let endpoints = c.ok(&[
        "get",
        "endpoints",
        "web",
        "-o",
        "jsonpath={.subsets[*].addresses[*].ip}/{.subsets[*].notReadyAddresses[*].ip}",
    ]);
    assert_eq!(endpoints, format!("{ready}/{not_ready}"));
    // Only the ready pod answers through the Service.
    let log = c.run_pod(
        "probe",
        "for i in $(seq 1 10); do curl -sS -m 5 http://web/hostname; done",
    );
    assert_eq!(
        log.matches("\"hostname\": \"web-ready\"").count(),
        10,
        "{log}"
    );
}

/// A DNS question (RD set) for `name` of `qtype`; returns (rcode, answers as (type, rdata)).
fn dns_query(server: (Ipv4Addr, u16), name: &str, qtype: u16) -> (u8, Vec<(u16, Vec<u8>)>) {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(u8::try_from(label.len()).expect("label"));
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, (qtype >> 8) as u8, qtype as u8, 0, 1]);
    let sock = UdpSocket::bind("0.0.0.0:0").expect("udp");
    sock.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    sock.send_to(&q, server).expect("send");
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf).expect("DNS answer within 3 s");
    let r = &buf[..n];
    assert_eq!(&r[..2], &[0x12, 0x34], "id");
    let rcode = r[3] & 0x0f;
    let ancount = u16::from_be_bytes([r[6], r[7]]);
    // Skip the question.
    let mut i = 12;
    i = skip_name(r, i) + 4;
    let mut answers = Vec::new();
    for _ in 0..ancount {
        i = skip_name(r, i);
        let ty = u16::from_be_bytes([r[i], r[i + 1]]);
        let len = usize::from(u16::from_be_bytes([r[i + 8], r[i + 9]]));
        answers.push((ty, r[i + 10..i + 10 + len].to_vec()));
        i += 10 + len;
    }
    (rcode, answers)
}

fn skip_name(r: &[u8], mut i: usize) -> usize {
    loop {
        let len = r[i];
        if len == 0 {
            return i + 1;
        }
        if len & 0xc0 == 0xc0 {
            return i + 2;
        }
        i += 1 + usize::from(len);
    }
}

#[test]
fn cluster_dns_answers_a_srv_and_missing_names() {
    let Some(c) = Cluster::start() else { return };
    httpbin_ready(&c);
    let cluster_ip = c.ok(&["get", "svc", "httpbin", "-o", "jsonpath={.spec.clusterIP}"]);
    let cluster_ip: Ipv4Addr = cluster_ip.parse().expect("cluster IP");
    let gateway = Ipv4Addr::new(10, 244, 0, 1);
    // Ask from inside the cluster's network namespace, on a thread of our own.
    let ns = std::fs::File::open(c.ns.path()).expect("netns");
    let answers = std::thread::spawn(move || {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let a = dns_query((gateway, 53), "httpbin.default.svc.cluster.local", 1);
        let srv = dns_query(
            (gateway, 53),
            "_http._tcp.httpbin.default.svc.cluster.local",
            33,
        );
        let missing = dns_query((gateway, 53), "nope.default.svc.cluster.local", 1);
        let via_service_ip = dns_query(
            (Ipv4Addr::new(10, 96, 0, 10), 53),
            "kubernetes.default.svc.cluster.local",
            1,
        );
        (a, srv, missing, via_service_ip)
    })
    .join()
    .expect("query thread");
    let (a, srv, missing, via_service_ip) = answers;
    assert_eq!(a.0, 0, "NOERROR");
    assert_eq!(a.1, vec![(1, cluster_ip.octets().to_vec())]);
    assert_eq!(srv.0, 0);
    assert_eq!(srv.1.len(), 1, "{srv:?}");
    let (ty, rdata) = &srv.1[0];
    assert_eq!(*ty, 33);
    assert_eq!(u16::from_be_bytes([rdata[4], rdata[5]]), 8000, "SRV port");
    assert_eq!(missing.0, 3, "NXDOMAIN");
    assert!(missing.1.is_empty());
    assert_eq!(via_service_ip.0, 0);
    assert_eq!(via_service_ip.1, vec![(1, vec![10, 96, 0, 1])]);
}

#[test]
fn pod_ips_survive_a_restart_and_are_not_reused_while_held() {
    let Some(mut c) = Cluster::start() else {
        return;
    };
    let pods = |prefix: &str| {
        (0..3)
            .map(|i| {
                format!(
                    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {prefix}-{i}\n  labels: {{set: {prefix}}}\nspec:\n  \
                     terminationGracePeriodSeconds: 0\n  containers:\n  - name: main\n    image: tandem/httpbin\n"
                )
            })
            .collect::<Vec<_>>()
            .join("---\n")
    };
    c.apply(&pods("first"));
    let first = c.wait_for(
        &[
            "get",
            "pods",
            "-l",
            "set=first",
            "-o",
            "jsonpath={.items[*].status.podIP}",
        ],
        "three addresses",
        |t| {
            t.split_whitespace()
                .filter(|ip| ip.starts_with("10.244."))
                .count()
                == 3
        },
    );
    let first: Vec<String> = first.split_whitespace().map(str::to_owned).collect();

    c.stop();
    c.up();
    // Adopted pods keep their addresses; new ones get others.
    let again = c.ok(&[
        "get",
        "pods",
        "-l",
        "set=first",
        "-o",
        "jsonpath={.items[*].status.podIP}",
    ]);
    assert_eq!(again.split_whitespace().collect::<Vec<_>>(), first);
    c.apply(&pods("second"));
    let second = c.wait_for(
        &[
            "get",
            "pods",
            "-l",
            "set=second",
            "-o",
            "jsonpath={.items[*].status.podIP}",
        ],
        "three new addresses",
        |t| {
            t.split_whitespace()
                .filter(|ip| ip.starts_with("10.244."))
                .count()
                == 3
        },
    );
    for ip in second.split_whitespace() {
        assert!(
            !first.iter().any(|f| f == ip),
            "{ip} handed out twice: {first:?} / {second}"
        );
    }
    // The first pods still answer on their addresses.
    let log = c.run_pod(
        "pinger",
        &first
            .iter()
            .map(|ip| format!("curl -sS -m 5 http://{ip}:8080/ip >/dev/null && echo ok-{ip};"))
            .collect::<String>(),
    );
    for ip in &first {
        assert!(
            log.contains(&format!("ok-{ip}")),
            "{ip} unreachable:\n{log}"
        );
    }
}

#[test]
fn down_leaves_the_hosts_routes_and_other_nftables_tables_as_they_were() {
    if !nix::unistd::geteuid().is_root() || !have("nft") {
        assert!(!ci(), "needs root and nft");
        return;
    }
    let ns = Netns::new();
    // Something of the host's own: an address, a route and a table of another program.
    for args in [
        vec![
            "ip",
            "link",
            "add",
            "uplink",
            "type",
            "veth",
            "peer",
            "name",
            "uplink-peer",
        ],
        vec!["ip", "link", "set", "uplink", "up"],
        vec!["ip", "addr", "add", "192.0.2.2/24", "dev", "uplink"],
        vec!["ip", "route", "add", "default", "via", "192.0.2.1"],
        vec!["nft", "add", "table", "inet", "other"],
        vec![
            "nft",
            "add",
            "chain",
            "inet",
            "other",
            "input",
            "{ type filter hook input priority 0; policy accept; }",
        ],
        vec![
            "nft", "add", "rule", "inet", "other", "input", "tcp", "dport", "9", "counter", "drop",
        ],
    ] {
        let out = ns.run(args[0], &args[1..]);
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    let snapshot = |ns: &Netns| {
        let routes = ns.run("ip", &["route", "show", "table", "all"]).stdout;
        let rules = ns.run("nft", &["list", "ruleset"]).stdout;
        let links = ns.run("ip", &["-br", "link"]).stdout;
        (
            String::from_utf8_lossy(&routes).into_owned(),
            String::from_utf8_lossy(&rules).into_owned(),
            String::from_utf8_lossy(&links).into_owned(),
        )
    };
    let before = snapshot(&ns);
    let Some(mut c) = Cluster::start_in(ns) else {
        return;
    };
    httpbin_ready(&c);
    let during = snapshot(&c.ns);
    assert!(during.1.contains("table ip tandem"), "{}", during.1);
    assert!(during.2.contains("tandem0"), "{}", during.2);
    c.down();
    let after = snapshot(&c.ns);
    assert_eq!(after.0, before.0, "routes");
    assert_eq!(after.1, before.1, "nftables");
    assert_eq!(after.2, before.2, "links");
}
