//! Root tests: real bridges, veths and nftables, each in a private network namespace.

mod common;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use net::services::{self, Endpoint, Model, Protocol, ProxyConfig, Service, ServicePort};
use net::{Network, nft};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

fn web_model(vip: Ipv4Addr, endpoints: &[(Ipv4Addr, u16)]) -> Model {
    Model {
        services: vec![Service {
            namespace: "default".into(),
            name: "web".into(),
            cluster_ip: Some(vip),
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                endpoints: endpoints
                    .iter()
                    .map(|(ip, port)| Endpoint {
                        ip: *ip,
                        port: *port,
                    })
                    .collect(),
            }],
        }],
    }
}

#[test]
fn pods_get_distinct_addresses_and_reach_each_other() {
    in_private_host(|| async {
        let dir = tempfile::tempdir().unwrap();
        let network = Network::ensure(config(dir.path())).await.expect("ensure");
        // Forwarding is on for the bridge only.
        let fwd = std::fs::read_to_string("/proc/sys/net/ipv4/conf/tandem0/forwarding").unwrap();
        assert_eq!(fwd.trim(), "1");
        let global = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
        assert_eq!(global.trim(), "0");
        assert!(sh("ip -o addr show dev tandem0").contains("10.244.0.1/16"));

        let a = Pod::new("pod-a-uid");
        let b = Pod::new("pod-b-uid");
        let addr_a = network
            .attach(&a.uid, &a.ns.path())
            .await
            .expect("attach a");
        let addr_b = network
            .attach(&b.uid, &b.ns.path())
            .await
            .expect("attach b");
        assert_ne!(addr_a.ip, addr_b.ip);
        for addr in [addr_a, addr_b] {
            assert!(network.config().pod_cidr.is_pod_address(addr.ip));
            assert_eq!(addr.prefix_len, 16);
            assert_eq!(addr.gateway, Ipv4Addr::new(10, 244, 0, 1));
        }
        let in_pod = a
            .sh("ip -o -4 addr show dev eth0; ip route show default")
            .await;
        assert!(in_pod.contains(&format!("{}/16", addr_a.ip)), "{in_pod}");
        assert!(
            in_pod.contains("default via 10.244.0.1 dev eth0"),
            "{in_pod}"
        );
        assert!(a.sh("ip -o link show dev lo").await.contains("UP"));

        let _server = b.serve(8080, "b").await;
        let reply = a
            .fetch(SocketAddrV4::new(addr_b.ip, 8080))
            .await
            .expect("a -> b");
        assert_eq!(reply, format!("b {}", addr_a.ip));
        // The host reaches pods directly through the bridge.
        let reply = host_fetch(SocketAddrV4::new(addr_b.ip, 8080))
            .await
            .expect("host -> b");
        assert_eq!(reply, "b 10.244.0.1");

        // Attaching again changes nothing: same address, same veth.
        let host_end = net::host_veth_name(&a.uid);
        let before = ifindex(&host_end).expect("host end exists");
        let again = network
            .attach(&a.uid, &a.ns.path())
            .await
            .expect("re-attach");
        assert_eq!(again, addr_a);
        assert_eq!(ifindex(&host_end), Some(before));

        let mut held = network.allocations();
        held.sort();
        assert_eq!(
            held,
            vec![(a.uid.clone(), addr_a.ip), (b.uid.clone(), addr_b.ip)]
        );

        network.detach(&a.uid).await.expect("detach");
        assert_eq!(ifindex(&host_end), None);
        assert!(!sh_ok_in(&a, "ip link show dev eth0").await);
        assert_eq!(network.allocations(), vec![(b.uid.clone(), addr_b.ip)]);
        network.detach(&a.uid).await.expect("detach twice");
    });
}

#[test]
fn pods_attached_and_detached_at_once_each_get_their_own_working_address() {
    in_private_host(|| async {
        let dir = tempfile::tempdir().unwrap();
        let network = Network::ensure(config(dir.path())).await.expect("ensure");
        let old: Vec<Pod> = (0..8).map(|i| Pod::new(&format!("old-{i}"))).collect();
        for pod in &old {
            network
                .attach(&pod.uid, &pod.ns.path())
                .await
                .expect("attach");
        }
        let pods: Vec<Pod> = (0..24).map(|i| Pod::new(&format!("pod-{i}"))).collect();
        // New pods come up while others go away, all at once.
        let paths: Vec<_> = pods.iter().map(|p| p.ns.path()).collect();
        let attaches = futures::future::join_all(
            pods.iter()
                .zip(&paths)
                .map(|(p, path)| network.attach(&p.uid, path)),
        );
        let detaches = futures::future::join_all(old.iter().map(|p| network.detach(&p.uid)));
        let (addrs, detached) = futures::future::join(attaches, detaches).await;
        for result in detached {
            result.expect("detach");
        }
        let addrs: Vec<_> = addrs.into_iter().map(|a| a.expect("attach").ip).collect();
        let distinct: std::collections::BTreeSet<_> = addrs.iter().collect();
        assert_eq!(distinct.len(), pods.len(), "{addrs:?}");
        for (pod, ip) in pods.iter().zip(&addrs) {
            let eth0 = pod.sh("ip -o -4 addr show dev eth0").await;
            assert!(eth0.contains(&format!("{ip}/16")), "{}: {eth0}", pod.uid);
        }
        // The pod ends were made inside the pods: none is left on the host.
        assert!(!sh("ip -o link show").contains("tnp"));
        let mut held: Vec<_> = network.allocations().into_iter().map(|(u, _)| u).collect();
        held.sort();
        let mut want: Vec<_> = pods.iter().map(|p| p.uid.clone()).collect();
        want.sort();
        assert_eq!(held, want);
        for pod in &old {
            assert_eq!(ifindex(&net::host_veth_name(&pod.uid)), None);
        }
        // The last pod reaches the first through the bridge.
        let _server = pods[0].serve(8080, "first").await;
        let reply = pods[23]
            .fetch(SocketAddrV4::new(addrs[0], 8080))
            .await
            .expect("pod -> pod");
        assert_eq!(reply, format!("first {}", addrs[23]));
    });
}

#[test]
fn setting_up_a_pod_never_waits_for_pods_being_removed() {
    in_private_host(|| async {
        let dir = tempfile::tempdir().unwrap();
        let network = Network::ensure(config(dir.path())).await.expect("ensure");
        let old: Vec<Pod> = (0..20).map(|i| Pod::new(&format!("old-{i}"))).collect();
        for pod in &old {
            network
                .attach(&pod.uid, &pod.ns.path())
                .await
                .expect("attach");
        }
        let new = Pod::new("new");
        let path = new.ns.path();
        // The removals are asked for first; each costs the kernel an RCU barrier (~20 ms).
        // Taking turns with them made the new pod wait ~0.4 s; on its own it takes ~2 ms.
        let detaches = futures::future::join_all(old.iter().map(|p| network.detach(&p.uid)));
        let attach = async {
            let start = Instant::now();
            let addr = network.attach(&new.uid, &path).await.expect("attach");
            (addr, start.elapsed())
        };
        let (detached, (addr, took)) = futures::future::join(detaches, attach).await;
        for result in detached {
            result.expect("detach");
        }
        assert!(took < Duration::from_millis(150), "attach took {took:?}");
        let eth0 = new.sh("ip -o -4 addr show dev eth0").await;
        assert!(eth0.contains(&format!("{}/16", addr.ip)), "{eth0}");
        // Made one after another, pods do not pay for moving their end between namespaces.
        let more: Vec<Pod> = (0..10).map(|i| Pod::new(&format!("more-{i}"))).collect();
        let start = Instant::now();
        for pod in &more {
            network
                .attach(&pod.uid, &pod.ns.path())
                .await
                .expect("attach");
        }
        let took = start.elapsed();
        assert!(
            took < Duration::from_millis(150),
            "10 attaches took {took:?}"
        );
    });
}

async fn sh_ok_in(pod: &Pod, cmd: &str) -> bool {
    let cmd = cmd.to_owned();
    pod.ns.run(move || sh_ok(&cmd)).await.expect("pod thread")
}

#[test]
fn a_restart_readopts_veths_and_never_reuses_held_addresses() {
    in_private_host(|| async {
        let dir = tempfile::tempdir().unwrap();
        let a = Pod::new("readopt-a");
        let (addr_a, index_a) = {
            let network = Network::ensure(config(dir.path())).await.expect("ensure");
            let addr = network.attach(&a.uid, &a.ns.path()).await.expect("attach");
            (addr, ifindex(&net::host_veth_name(&a.uid)).unwrap())
        };
        // A new process view of the same state directory and bridge.
        let network = Network::ensure(config(dir.path()))
            .await
            .expect("ensure again");
        assert_eq!(network.allocations(), vec![(a.uid.clone(), addr_a.ip)]);
        let again = network
            .attach(&a.uid, &a.ns.path())
            .await
            .expect("re-attach");
        assert_eq!(again, addr_a);
        assert_eq!(ifindex(&net::host_veth_name(&a.uid)), Some(index_a));
        for i in 0..20 {
            let p = Pod::new(&format!("other-{i}"));
            let addr = network
                .attach(&p.uid, &p.ns.path())
                .await
                .expect("attach other");
            assert_ne!(addr.ip, addr_a.ip, "a held address was handed out again");
        }
        // The re-adopted pod still works.
        let b = Pod::new("readopt-b");
        let addr_b = network.attach(&b.uid, &b.ns.path()).await.unwrap();
        let _server = a.serve(80, "a").await;
        let reply = b
            .fetch(SocketAddrV4::new(addr_a.ip, 80))
            .await
            .expect("b -> a");
        assert_eq!(reply, format!("a {}", addr_b.ip));
    });
}

#[test]
fn a_service_vip_reaches_its_endpoint_from_pods_the_host_and_itself() {
    in_private_host(|| async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let network = Network::ensure(cfg.clone()).await.expect("ensure");
        let server = Pod::new("server");
        let client = Pod::new("client");
        let s = network
            .attach(&server.uid, &server.ns.path())
            .await
            .unwrap();
        let c = network
            .attach(&client.uid, &client.ns.path())
            .await
            .unwrap();
        let _srv = server.serve(8080, "server").await;

        let proxy = ProxyConfig::from(&cfg);
        let model = web_model(VIP, &[(s.ip, 8080)]);
        services::apply(&services::render_full(&proxy, &model))
            .await
            .expect("apply");

        let vip = SocketAddrV4::new(VIP, 80);
        assert_eq!(
            client.fetch(vip).await.expect("pod -> vip"),
            format!("server {}", c.ip)
        );
        let from_host = host_fetch(vip).await.expect("host -> vip");
        assert!(from_host.starts_with("server "), "{from_host}");
        // Hairpin: the endpoint reaching itself through its Service sees the gateway.
        assert_eq!(
            server.fetch(vip).await.expect("hairpin"),
            "server 10.244.0.1"
        );
        // Other ports of the VIP are not served.
        let listed = nft::list_table("tandem")
            .await
            .unwrap()
            .expect("table exists");
        assert!(listed.contains("10.96.0.10 . tcp . 80"), "{listed}");
    });
}

#[test]
fn a_service_without_endpoints_refuses_connections_at_once() {
    in_private_host(|| async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let network = Network::ensure(cfg.clone()).await.expect("ensure");
        let client = Pod::new("client");
        network
            .attach(&client.uid, &client.ns.path())
            .await
            .unwrap();
        let proxy = ProxyConfig::from(&cfg);
        services::apply(&services::render_full(&proxy, &web_model(VIP, &[])))
            .await
            .expect("apply");

        let vip = SocketAddrV4::new(VIP, 80);
        let started = Instant::now();
        let err = client.fetch(vip).await.expect_err("nothing serves the VIP");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );

        let started = Instant::now();
        let err = host_fetch(vip).await.expect_err("nothing serves the VIP");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    });
}

#[test]
fn incremental_updates_switch_traffic_between_endpoints() {
    in_private_host(|| async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let network = Network::ensure(cfg.clone()).await.expect("ensure");
        let one = Pod::new("one");
        let two = Pod::new("two");
        let client = Pod::new("client");
        let ip1 = network.attach(&one.uid, &one.ns.path()).await.unwrap().ip;
        let ip2 = network.attach(&two.uid, &two.ns.path()).await.unwrap().ip;
        network
            .attach(&client.uid, &client.ns.path())
            .await
            .unwrap();
        let _s1 = one.serve(8080, "one").await;
        let _s2 = two.serve(9090, "two").await;
        let proxy = ProxyConfig::from(&cfg);
        let vip = SocketAddrV4::new(VIP, 80);

        let first = web_model(VIP, &[(ip1, 8080)]);
        services::apply(&services::render_full(&proxy, &first))
            .await
            .unwrap();
        assert!(client.fetch(vip).await.unwrap().starts_with("one "));

        let second = web_model(VIP, &[(ip2, 9090)]);
        let update = services::render_update(&proxy, &first, &second);
        assert!(!update.contains("delete table"));
        services::apply(&update)
            .await
            .expect("incremental update applies");
        for _ in 0..5 {
            assert!(client.fetch(vip).await.unwrap().starts_with("two "));
        }

        // Both endpoints: traffic is spread over them.
        let both = web_model(VIP, &[(ip1, 8080), (ip2, 9090)]);
        services::apply(&services::render_update(&proxy, &second, &both))
            .await
            .unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let reply = client.fetch(vip).await.unwrap();
            seen.insert(reply.split(' ').next().unwrap_or_default().to_owned());
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["one", "two"]);

        // No endpoints left: refused. Then the Service goes away entirely.
        let none = web_model(VIP, &[]);
        services::apply(&services::render_update(&proxy, &both, &none))
            .await
            .unwrap();
        let err = client.fetch(vip).await.expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        services::apply(&services::render_update(&proxy, &none, &Model::default()))
            .await
            .unwrap();
        let listed = nft::list_table("tandem").await.unwrap().unwrap();
        assert!(!listed.contains("10.96.0.10"), "{listed}");
        assert!(
            !listed.contains("chain svc-") && !listed.contains("chain ep-"),
            "{listed}"
        );
        // The incremental path ends where a full sync of the same model would.
        services::apply(&services::render_full(&proxy, &Model::default()))
            .await
            .unwrap();
        assert_eq!(nft::list_table("tandem").await.unwrap().unwrap(), listed);
    });
}

#[test]
fn pod_traffic_is_not_routed_off_the_machine_and_teardown_leaves_the_rest() {
    in_private_host(|| async {
        // An "outside" world behind an uplink `up0`, reachable from the host.
        let outside = Pod::new("outside");
        sh(&format!(
            "ip link add up0 type veth peer name up0-peer && \
             ip link set up0-peer netns {} && \
             ip addr add 192.0.2.10/24 dev up0 && ip link set up0 up && \
             ip route add default via 192.0.2.1",
            outside.ns.path().display()
        ));
        outside
            .sh(
                "ip link set up0-peer name eth0 && ip addr add 192.0.2.1/24 dev eth0 && \
                 ip link set eth0 up && ip link set lo up && \
                 ip route add 10.244.0.0/16 via 192.0.2.10",
            )
            .await;
        sh("nft add table inet foreign && \
            nft add chain inet foreign input '{ type filter hook input priority 0; policy accept; }' && \
            nft add rule inet foreign input tcp dport 7 counter");
        let routes_before = sh("ip route show table all");
        let foreign_before = sh("nft list table inet foreign");

        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let network = Network::ensure(cfg.clone()).await.expect("ensure");
        let pod = Pod::new("pod");
        network.attach(&pod.uid, &pod.ns.path()).await.unwrap();
        services::apply(&services::render_full(
            &ProxyConfig::from(&cfg),
            &web_model(VIP, &[]),
        ))
        .await
        .unwrap();

        let sink = outside
            .ns
            .run(|| {
                let s = UdpSocket::bind("0.0.0.0:9999").unwrap();
                s.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                s
            })
            .await
            .unwrap();
        let received = |sink: &UdpSocket| {
            let mut buf = [0u8; 64];
            sink.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
        };
        let to = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 9999);
        // The host itself reaches the outside: the path works.
        UdpSocket::bind("0.0.0.0:0")
            .unwrap()
            .send_to(b"host", to)
            .unwrap();
        assert_eq!(received(&sink).as_deref(), Some(&b"host"[..]));
        // A pod does not: its packet is dropped where it would leave the bridge.
        pod.send_udp(to, b"pod").await;
        assert_eq!(received(&sink), None, "a pod's packet left the machine");

        // Pods' veths go with the pods; the bridge and table go with teardown.
        network.detach(&pod.uid).await.unwrap();
        drop(network);
        net::teardown(&cfg).await.expect("teardown");
        assert_eq!(nft::list_table("tandem").await.unwrap(), None);
        assert_eq!(ifindex("tandem0"), None);
        assert_eq!(sh("nft list table inet foreign"), foreign_before);
        assert_eq!(sh("ip route show table all"), routes_before);
        let global = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
        assert_eq!(global.trim(), "0");
        // Teardown twice is fine.
        net::teardown(&cfg).await.expect("teardown again");
    });
}

#[test]
fn teardown_refuses_to_delete_something_that_is_not_a_bridge() {
    in_private_host(|| async {
        sh("ip link add notabridge type veth peer name nb-peer");
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.bridge = "notabridge".into();
        assert!(matches!(
            net::teardown(&cfg).await,
            Err(net::Error::NotABridge(_))
        ));
        assert!(ifindex("notabridge").is_some());
        assert!(matches!(
            Network::ensure(cfg).await,
            Err(net::Error::NotABridge(_))
        ));
    });
}

#[test]
fn a_script_that_fails_halfway_changes_nothing() {
    in_private_host(|| async {
        let proxy = ProxyConfig::default();
        let mut model = web_model(VIP, &[(Ipv4Addr::new(10, 244, 0, 5), 8080)]);
        // Every protocol renders into rules nft accepts.
        model.services[0].ports.push(ServicePort {
            name: "dns".into(),
            protocol: Protocol::Udp,
            port: 53,
            endpoints: vec![Endpoint {
                ip: Ipv4Addr::new(10, 244, 0, 5),
                port: 5353,
            }],
        });
        model.services[0].ports.push(ServicePort {
            name: "sig".into(),
            protocol: Protocol::Sctp,
            port: 9,
            endpoints: vec![],
        });
        services::apply(&services::render_full(&proxy, &model))
            .await
            .expect("full sync");
        let before = nft::list_table("tandem").await.unwrap().expect("table");
        assert!(
            before.contains("meta l4proto udp dnat to 10.244.0.5:5353"),
            "{before}"
        );
        assert!(
            before.contains("10.96.0.10 . sctp . 9 : goto reject-chain"),
            "{before}"
        );

        // An update computed from a wrong idea of the table: its first half would work,
        // its deletions cannot.
        let imagined = web_model(
            Ipv4Addr::new(10, 96, 0, 99),
            &[(Ipv4Addr::new(10, 244, 0, 7), 80)],
        );
        let script = services::render_update(&proxy, &imagined, &Model::default());
        let script = format!(
            "{}{script}",
            services::render_update(
                &proxy,
                &Model::default(),
                &web_model(Ipv4Addr::new(10, 96, 0, 50), &[])
            )
        );
        match services::apply(&script).await {
            Err(net::Error::Nft { stderr, .. }) => assert!(!stderr.is_empty()),
            other => panic!("expected nft to refuse, got {other:?}"),
        }
        assert_eq!(
            nft::list_table("tandem").await.unwrap().as_deref(),
            Some(before.as_str())
        );
    });
}

/// `nft list table` as a sorted list of (block, item) pairs: independent of the order in
/// which chains were created and map elements inserted.
fn normalise(listing: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut block = String::new();
    for line in listing.lines().map(str::trim) {
        if line.starts_with("chain ") || line.starts_with("map ") {
            block = line.to_owned();
            // Listed even when empty: a leftover chain is a difference.
            out.push((block.clone(), String::new()));
            continue;
        }
        let line = line
            .trim_start_matches("elements = {")
            .trim_end_matches('}');
        for item in line.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            out.push((block.clone(), item.to_owned()));
        }
    }
    out.sort();
    out
}

#[test]
fn incremental_updates_end_where_a_full_sync_would() {
    in_private_host(|| async {
        let proxy = ProxyConfig::default();
        let ep = |last: u8, port: u16| (Ipv4Addr::new(10, 244, 0, last), port);
        let vip = |last: u8| Ipv4Addr::new(10, 96, 0, last);
        let two = |a: Model, b: Model| Model {
            services: a.services.into_iter().chain(b.services).collect(),
        };
        let renamed = |mut m: Model, name: &str| {
            m.services[0].name = name.into();
            m
        };
        let steps = [
            Model::default(),
            web_model(vip(10), &[ep(5, 80)]),
            two(
                web_model(vip(10), &[ep(5, 80), ep(6, 80)]),
                renamed(web_model(vip(11), &[]), "api"),
            ),
            two(
                web_model(vip(10), &[ep(6, 80)]),
                renamed(web_model(vip(11), &[ep(7, 8443)]), "api"),
            ),
            two(
                web_model(vip(10), &[]),
                renamed(web_model(vip(12), &[ep(7, 8443)]), "api"),
            ),
            renamed(web_model(vip(12), &[ep(8, 8443)]), "api"),
            Model::default(),
        ];
        services::apply(&services::render_full(&proxy, &steps[0]))
            .await
            .unwrap();
        for pair in steps.windows(2) {
            let update = services::render_update(&proxy, &pair[0], &pair[1]);
            services::apply(&update)
                .await
                .unwrap_or_else(|e| panic!("{e}\n{update}"));
            let incremental = nft::list_table("tandem").await.unwrap().unwrap();
            services::apply(&services::render_full(&proxy, &pair[1]))
                .await
                .unwrap();
            let full = nft::list_table("tandem").await.unwrap().unwrap();
            assert_eq!(normalise(&incremental), normalise(&full), "after\n{update}");
        }
    });
}
