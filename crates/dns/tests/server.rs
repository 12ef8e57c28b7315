//! The DNS server on loopback, asked by hickory's client over UDP and TCP.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dns::{ClusterDns, DnsServer, Records, Upstream};
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::{RData, RecordType};
use support::{FakeUpstream, ask, external, rdata, service, slice};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

fn cluster() -> ClusterDns {
    let services = [
        service("default", "web", "10.96.0.10", &[("http", 80)]),
        service("shop", "db", "None", &[("sql", 5432)]),
        external("default", "docs", "example.org"),
    ];
    let slices = [
        slice(
            "default",
            "web",
            &[("10.244.0.5", Some(true), None)],
            ("http", 8080),
        ),
        slice(
            "shop",
            "db",
            &[
                ("10.244.0.7", Some(true), Some("db-0")),
                ("10.244.0.8", None, Some("db-1")),
                ("10.244.0.9", Some(false), Some("db-2")),
            ],
            ("sql", 5432),
        ),
    ];
    let dns = ClusterDns::new(dns::DEFAULT_DOMAIN).expect("domain");
    dns.update(Records::from_objects(&services, &slices));
    dns
}

async fn start(upstream: Upstream) -> (DnsServer, SocketAddr) {
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = DnsServer::bind(&[listen], cluster(), upstream)
        .await
        .expect("bind");
    let addr = server.local_addrs()[0];
    assert_ne!(addr.port(), 0);
    (server, addr)
}

#[tokio::test]
async fn service_a_record_over_udp_and_tcp() {
    let (_server, addr) = start(Upstream::none()).await;
    for tcp in [false, true] {
        let reply = ask(addr, tcp, "Web.Default.SVC.cluster.local.", RecordType::A).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "tcp={tcp}"
        );
        assert!(reply.metadata.authoritative, "tcp={tcp}");
        assert_eq!(rdata(&reply.answers), ["10.96.0.10"], "tcp={tcp}");
        assert_eq!(reply.answers[0].ttl, 5);
    }
}

#[tokio::test]
async fn srv_record_has_the_target_address_as_additional() {
    let (_server, addr) = start(Upstream::none()).await;
    let reply = ask(
        addr,
        false,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        rdata(&reply.answers),
        ["0 100 80 web.default.svc.cluster.local."]
    );
    let additional: Vec<(String, String)> = reply
        .additionals
        .iter()
        .map(|r| (r.name.to_ascii(), r.data.to_string()))
        .collect();
    assert_eq!(
        additional,
        [(
            "web.default.svc.cluster.local.".to_string(),
            "10.96.0.10".to_string()
        )]
    );
}

#[tokio::test]
async fn headless_service_answers_ready_endpoints_and_hostnames() {
    let (_server, addr) = start(Upstream::none()).await;
    let reply = ask(addr, true, "db.shop.svc.cluster.local.", RecordType::A).await;
    let mut ips = rdata(&reply.answers);
    ips.sort();
    assert_eq!(ips, ["10.244.0.7", "10.244.0.8"]);

    let reply = ask(
        addr,
        false,
        "db-1.db.shop.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(rdata(&reply.answers), ["10.244.0.8"]);

    let reply = ask(
        addr,
        false,
        "_sql._tcp.db.shop.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    let mut srv = rdata(&reply.answers);
    srv.sort();
    assert_eq!(
        srv,
        [
            "0 50 5432 db-0.db.shop.svc.cluster.local.",
            "0 50 5432 db-1.db.shop.svc.cluster.local."
        ]
    );
    assert_eq!(reply.additionals.len(), 2);
}

#[tokio::test]
async fn pod_record_answers_the_dashed_address() {
    let (_server, addr) = start(Upstream::none()).await;
    let reply = ask(
        addr,
        false,
        "10-244-0-5.default.pod.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(rdata(&reply.answers), ["10.244.0.5"]);
}

#[tokio::test]
async fn missing_name_is_nxdomain_with_soa_and_no_data_is_noerror() {
    let (_server, addr) = start(Upstream::none()).await;
    for tcp in [false, true] {
        let reply = ask(addr, tcp, "nope.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
        assert!(reply.answers.is_empty());
        assert_eq!(reply.authorities.len(), 1);
        let soa = &reply.authorities[0];
        assert_eq!(soa.name.to_ascii(), "cluster.local.");
        match &soa.data {
            RData::SOA(soa) => {
                assert_eq!(soa.mname.to_ascii(), "ns.dns.cluster.local.");
                assert_eq!(soa.rname.to_ascii(), "hostmaster.cluster.local.");
                assert_eq!(soa.minimum, 5);
            }
            other => panic!("expected an SOA, got {other:?}"),
        }

        let reply = ask(
            addr,
            tcp,
            "web.default.svc.cluster.local.",
            RecordType::AAAA,
        )
        .await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(reply.answers.is_empty());
        assert_eq!(reply.authorities.len(), 1);
    }
}

#[tokio::test]
async fn names_outside_the_cluster_go_to_the_upstream() {
    let upstream = FakeUpstream::start().await;
    let (_server, addr) = start(Upstream::new(vec![upstream.addr])).await;
    for tcp in [false, true] {
        let reply = ask(addr, tcp, "example.com.", RecordType::A).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(!reply.metadata.authoritative);
        assert!(reply.metadata.recursion_available);
        assert_eq!(rdata(&reply.answers), ["93.184.215.14"]);

        let reply = ask(addr, tcp, "missing.example.", RecordType::A).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    }
    assert_eq!(upstream.questions(), 4);
    // Cluster names never reach the upstream.
    ask(addr, false, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(upstream.questions(), 4);
}

#[tokio::test]
async fn truncated_upstream_replies_are_fetched_again_over_tcp() {
    let upstream = FakeUpstream::start().await;
    let (_server, addr) = start(Upstream::new(vec![upstream.addr])).await;
    let reply = ask(addr, true, "big.example.", RecordType::A).await;
    assert!(!reply.metadata.truncation);
    assert_eq!(reply.answers.len(), 100);
    // Over UDP the asker learns it must retry over TCP.
    let reply = ask(addr, false, "big.example.", RecordType::A).await;
    assert!(reply.metadata.truncation);
    assert!(reply.answers.len() < 100);
}

#[tokio::test]
async fn external_name_service_is_a_cname_resolved_upstream() {
    let upstream = FakeUpstream::start().await;
    let (_server, addr) = start(Upstream::new(vec![upstream.addr])).await;
    let reply = ask(
        addr,
        false,
        "docs.default.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(rdata(&reply.answers), ["example.org.", "93.184.215.15"]);
}

#[tokio::test]
async fn no_upstream_means_nxdomain() {
    let (_server, addr) = start(Upstream::none()).await;
    let reply = ask(addr, false, "example.com.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn silent_upstream_gives_servfail_after_the_timeout() {
    // Holds the port but never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let (_server, addr) = start(Upstream::new(vec![silent.local_addr().unwrap()])).await;
    let started = Instant::now();
    let reply = ask(addr, false, "example.com.", RecordType::A).await;
    let elapsed = started.elapsed();
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert!(
        elapsed >= Duration::from_millis(1900),
        "answered early: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

#[tokio::test]
async fn a_dead_first_upstream_falls_through_to_the_next() {
    let upstream = FakeUpstream::start().await;
    let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let servers = vec![silent.local_addr().unwrap(), upstream.addr];
    let (_server, addr) = start(Upstream::new(servers)).await;
    let started = Instant::now();
    let reply = ask(addr, false, "example.com.", RecordType::A).await;
    assert_eq!(rdata(&reply.answers), ["93.184.215.14"]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn updates_are_served_immediately() {
    let dns = ClusterDns::new("cluster.local").expect("domain");
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = DnsServer::bind(&[listen], dns.clone(), Upstream::none())
        .await
        .expect("bind");
    let addr = server.local_addrs()[0];
    let name = "api.default.svc.cluster.local.";
    let reply = ask(addr, false, name, RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);

    let services = [service("default", "api", "10.96.0.20", &[("http", 80)])];
    dns.update(Records::from_objects(&services, &[]));
    let reply = ask(addr, false, name, RecordType::A).await;
    assert_eq!(rdata(&reply.answers), ["10.96.0.20"]);
}

#[tokio::test]
async fn shutdown_stops_the_listeners() {
    let (server, addr) = start(Upstream::none()).await;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(server.run(shutdown.clone()));
    let reply = ask(addr, true, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(rdata(&reply.answers), ["10.96.0.10"]);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("server stops")
        .expect("join")
        .expect("clean stop");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    // The port is free again for both protocols.
    UdpSocket::bind(addr).await.expect("udp port released");
}

#[tokio::test]
async fn serve_reports_an_address_it_cannot_bind() {
    let taken = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = taken.local_addr().unwrap();
    let err = dns::serve(
        &[addr],
        cluster(),
        Upstream::none(),
        CancellationToken::new(),
    )
    .await
    .expect_err("port in use");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    let err = dns::serve(&[], cluster(), Upstream::none(), CancellationToken::new())
        .await
        .expect_err("no address");
    assert!(matches!(err, dns::Error::NoAddress));
}
