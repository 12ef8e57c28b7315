//! The sidecar over real sockets, with the original destination supplied by a mock lookup
//! (as if iptables had redirected the connection) and the cluster view from a discovery
//! server the test feeds.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use proxy::accesslog::{Encoding, Sink};
use proxy::config::{Ports, SidecarConfig};
use proxy::metrics::Workload;
use proxy::orig_dst::MockOrigDst;
use proxy::sidecar::{self, Sidecar};

const VIP: &str = "10.96.0.5";

struct Pod {
    sidecar: Sidecar,
    orig: MockOrigDst,
    discovery: FakeDiscovery,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn config(discovery: SocketAddr, log: &Path) -> SidecarConfig {
    SidecarConfig {
        pod_name: "sleep-1".into(),
        namespace: "default".into(),
        pod_ip: Some("127.0.0.1".parse().unwrap()),
        domain: "cluster.local".into(),
        discovery_address: discovery.to_string(),
        termination_drain: Duration::from_secs(1),
        exit_on_zero_active: false,
        minimum_drain: Duration::from_secs(1),
        hold_application: false,
        access_log: Some(Sink::File(log.to_owned())),
        access_log_encoding: Encoding::Text,
        registry_only: false,
        detect_timeout: None,
        workload: Workload {
            name: "sleep".into(),
            namespace: "default".into(),
            canonical_service: "sleep".into(),
            canonical_revision: "latest".into(),
            app: "sleep".into(),
            version: "unknown".into(),
            cluster: "Kubernetes".into(),
        },
        probers: HashMap::new(),
        app_metrics: None,
        ports: Ports::ephemeral(),
        concurrency: 2,
    }
}

async fn pod_with(tweak: impl FnOnce(&mut SidecarConfig)) -> Pod {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let discovery = FakeDiscovery::start().await;
    let mut cfg = config(discovery.addr, &log);
    tweak(&mut cfg);
    let orig = MockOrigDst::default();
    let sidecar = sidecar::start(cfg, Arc::new(orig.clone())).await.unwrap();
    Pod {
        sidecar,
        orig,
        discovery,
        log,
        _dir: dir,
    }
}

impl Pod {
    fn outbound(&self) -> SocketAddr {
        self.sidecar.addresses.outbound
    }

    fn inbound(&self) -> SocketAddr {
        self.sidecar.addresses.inbound
    }

    /// Publishes services and waits until the proxy reports ready.
    async fn publish(&self, services: Vec<proxy::discovery::ServiceView>) {
        self.discovery.publish(services);
        let health = self.sidecar.addresses.health;
        eventually("readiness", || async move {
            get(health, "h", "/healthz/ready").await.status == 200
        })
        .await;
    }

    /// Connects "to" `dst` through the outbound listener.
    async fn via_outbound(&self, dst: &str, host: &str, path: &str) -> Got {
        self.orig.set(dst.parse().unwrap());
        get(self.outbound(), host, path).await
    }

    async fn stats(&self) -> String {
        get(self.sidecar.addresses.status, "s", "/stats/prometheus")
            .await
            .text()
    }
}

async fn httpbin_pod() -> (Pod, Upstream, Upstream) {
    httpbin_pod_with(|_| {}).await
}

async fn httpbin_pod_with(tweak: impl FnOnce(&mut SidecarConfig)) -> (Pod, Upstream, Upstream) {
    let (a, b) = http_upstream_pair("httpbin-a", "httpbin-b").await;
    let pod = pod_with(tweak).await;
    pod.publish(vec![service(
        "default",
        "httpbin",
        VIP,
        "http",
        8000,
        &[a.addr, b.addr],
    )])
    .await;
    (pod, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_first_view_and_survives_the_control_plane() {
    let pod = pod_with(|_| {}).await;
    let health = pod.sidecar.addresses.health;
    let status = pod.sidecar.addresses.status;
    assert_eq!(get(health, "h", "/healthz/ready").await.status, 503);
    assert_eq!(get(status, "h", "/healthz/ready").await.status, 503);
    pod.publish(vec![]).await;
    assert_eq!(get(status, "h", "/healthz/ready").await.status, 200);
    pod.discovery.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(health, "h", "/healthz/ready").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_balances_and_logs_like_istio() {
    let (pod, a, b) = httpbin_pod().await;
    // Test case 21: any destination IP, routed by Host.
    let got = pod.via_outbound("1.2.3.4:8000", "httpbin", "/get").await;
    assert_eq!(got.status, 200);
    let got2 = pod
        .via_outbound(
            &format!("{VIP}:8000"),
            "httpbin.default.svc.cluster.local:8000",
            "/status/418",
        )
        .await;
    assert_eq!(got2.status, 418);
    assert_eq!(got2.header("server"), Some("envoy"));
    assert!(
        got2.header("x-envoy-upstream-service-time")
            .is_some_and(|v| v.parse::<u64>().is_ok())
    );
    // Round robin over both endpoints.
    assert_eq!((a.hits(), b.hits()), (1, 1));
    for _ in 0..4 {
        pod.via_outbound(&format!("{VIP}:8000"), "httpbin", "/")
            .await;
    }
    assert_eq!((a.hits(), b.hits()), (3, 3));

    let lines = log_lines(&pod.log, 6).await;
    let first = &lines[0];
    assert!(
        first.contains("\"GET /get HTTP/1.1\" 200 - via_upstream - \"-\" 0 9 "),
        "{first}"
    );
    assert!(first.contains(" \"httpbin\" "), "{first}");
    assert!(
        first.contains(" outbound|8000||httpbin.default.svc.cluster.local 127.0.0.1:"),
        "{first}"
    );
    assert!(first.contains(" 1.2.3.4:8000 127.0.0.1:"), "{first}");
    assert!(first.ends_with(" - default"), "{first}");
    // Test case 26's shape, with this test's addresses.
    let re = regex::Regex::new(&format!(
        r#"^\[\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z\] "GET /status/418 HTTP/1\.1" 418 - via_upstream - "-" 0 \d+ \d+ \d+ "-" "[^"]*" "[0-9a-f-]{{36}}" "httpbin\.default\.svc\.cluster\.local:8000" "127\.0\.0\.[23]:\d+" outbound\|8000\|\|httpbin\.\S+ [\d.]+:\d+ {VIP}:8000 [\d.]+:\d+ - default$"#
    ))
    .unwrap();
    assert!(re.is_match(&lines[1]), "{}", lines[1]);

    // Metrics count the six requests on both metric ports.
    let text = pod.stats().await;
    let labels = [
        "reporter=\"source\"",
        "source_workload=\"sleep\"",
        "destination_service=\"httpbin.default.svc.cluster.local\"",
        "destination_service_name=\"httpbin\"",
        "response_code=\"200\"",
    ];
    assert_eq!(
        sample(&text, "istio_requests_total", &labels),
        Some(5.0),
        "{text}"
    );
    let prom = get(pod.sidecar.addresses.prometheus, "p", "/stats/prometheus")
        .await
        .text();
    assert_eq!(
        sample(&prom, "istio_requests_total", &["response_code=\"418\""]),
        Some(1.0),
        "{prom}"
    );
    assert_eq!(
        sample(
            &prom,
            "istio_request_duration_milliseconds_count",
            &["response_code=\"418\""]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_is_routed_by_authority() {
    let (pod, a, b) = httpbin_pod().await;
    pod.orig.set(format!("{VIP}:8000").parse().unwrap());
    let got = h2_get(pod.outbound(), "httpbin.default:8000", "/").await;
    assert_eq!(got.status, 200);
    assert_eq!(a.hits() + b.hits(), 1);
    let line = &log_lines(&pod.log, 1).await[0];
    assert!(line.contains("\"GET / HTTP/2\" 200 "), "{line}");
    assert!(line.contains(" \"httpbin.default:8000\" "), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_generated_once_and_kept() {
    let (pod, a, b) = httpbin_pod().await;
    pod.orig.set(format!("{VIP}:8000").parse().unwrap());
    get(pod.outbound(), "httpbin", "/").await;
    let seen = if a.hits() == 1 { a.last() } else { b.last() };
    let rid = seen.request_id.unwrap();
    let line = &log_lines(&pod.log, 1).await[0];
    assert!(
        line.contains(&format!("\"{rid}\"")),
        "the log shows the id sent upstream"
    );
    h1(
        pod.outbound(),
        "GET",
        "httpbin",
        "/",
        &[("x-request-id", "abc-123")],
    )
    .await;
    assert!(
        [a.last(), b.last()]
            .iter()
            .any(|s| s.request_id.as_deref() == Some("abc-123"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_retried_on_another_endpoint() {
    let up = http_upstream("127.0.0.2:0", "alive").await;
    let dead = closed_port("127.0.0.3").await;
    let refused = closed_port("127.0.0.4").await;
    let pod = pod_with(|_| {}).await;
    pod.publish(vec![
        service(
            "default",
            "mixed",
            "10.96.0.6",
            "http",
            80,
            &[up.addr, dead],
        ),
        service("default", "down", "10.96.0.7", "http", 80, &[refused]),
        service("default", "empty", "10.96.0.8", "http", 80, &[]),
    ])
    .await;
    for _ in 0..4 {
        let got = pod.via_outbound("10.96.0.6:80", "mixed", "/").await;
        assert_eq!(got.status, 200, "{}", got.text());
    }
    assert_eq!(up.hits(), 4);

    // Test case 25: every attempt refused.
    let got = pod.via_outbound("10.96.0.7:80", "down", "/").await;
    assert_eq!(got.status, 503);
    // And no endpoints at all.
    let empty = pod.via_outbound("10.96.0.8:80", "empty.default", "/").await;
    assert_eq!(empty.status, 503);
    assert_eq!(empty.text(), "no healthy upstream");

    let lines = log_lines(&pod.log, 6).await;
    for line in &lines[..4] {
        assert!(line.contains("\" 200 - via_upstream "), "{line}");
    }
    let refused_line = &lines[4];
    assert!(
        refused_line.contains(
            " 503 UF,URX upstream_reset_before_response_started{connection_failure} - \"-\" 0 91 "
        ),
        "{refused_line}"
    );
    assert!(
        refused_line.contains(&format!(
            "\"{refused}\" outbound|80||down.default.svc.cluster.local - "
        )),
        "{refused_line}"
    );
    let empty_line = &lines[5];
    assert!(
        empty_line.contains(" 503 UH no_healthy_upstream - \"-\" 0 19 "),
        "{empty_line}"
    );
    assert!(
        empty_line.contains(" \"-\" outbound|80||empty.default.svc.cluster.local - 10.96.0.8:80 "),
        "{empty_line}"
    );
    let re = regex::Regex::new(r#" 0 19 \d+ - "-" "#).unwrap();
    assert!(
        re.is_match(empty_line),
        "no upstream service time: {empty_line}"
    );

    let text = pod.stats().await;
    assert_eq!(
        sample(
            &text,
            "envoy_cluster_upstream_cx_connect_fail",
            &["cluster_name=\"outbound|80||down.default.svc.cluster.local\""]
        ),
        Some(3.0),
        "1 attempt + 2 retries: {text}"
    );
    assert_eq!(
        sample(
            &text,
            "istio_requests_total",
            &[
                "destination_service_name=\"down\"",
                "response_flags=\"UF,URX\"",
                "response_code=\"503\""
            ]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_destinations_pass_through_under_allow_any() {
    let pod = pod_with(|_| {}).await;
    pod.publish(vec![]).await;
    let web = http_upstream("127.0.0.1:0", "outside").await;
    let echo = echo_server().await;
    // HTTP to an unregistered host: forwarded to the original destination.
    let got = pod
        .via_outbound(&web.addr.to_string(), "example.org", "/")
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "outside");
    // Opaque TCP: piped through.
    pod.orig.set(echo);
    let back = tcp_roundtrip(pod.outbound(), b"\x16\x03\x01hello").await;
    assert_eq!(back, b"\x16\x03\x01hello");

    let lines = log_lines(&pod.log, 2).await;
    assert!(
        lines[0].contains(&format!(
            "\"example.org\" \"{web}\" PassthroughCluster 127.0.0.1:",
            web = web.addr
        )),
        "{}",
        lines[0]
    );
    assert!(lines[0].ends_with(" - allow_any"), "{}", lines[0]);
    assert!(
        lines[1].contains("\"- - -\" 0 - - - \"-\" 8 8 "),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].contains(&format!(
            "\"-\" \"-\" \"-\" \"-\" \"{echo}\" PassthroughCluster 127.0.0.1:"
        )),
        "{}",
        lines[1]
    );
    let re = regex::Regex::new(&format!(
        r#" PassthroughCluster 127\.0\.0\.1:\d+ {} 127\.0\.0\.1:\d+ - -$"#,
        regex::escape(&echo.to_string())
    ))
    .unwrap();
    assert!(re.is_match(&lines[1]), "{}", lines[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_only_blocks_unknown_destinations() {
    let pod = pod_with(|c| c.registry_only = true).await;
    pod.publish(vec![]).await;
    let web = http_upstream("127.0.0.1:0", "outside").await;
    let echo = echo_server().await;
    let got = pod
        .via_outbound(&web.addr.to_string(), "example.org", "/")
        .await;
    assert_eq!(got.status, 502);
    assert_eq!(web.hits(), 0);
    pod.orig.set(echo);
    assert!(
        tcp_roundtrip(pod.outbound(), b"\x00binary")
            .await
            .is_empty()
    );

    let lines = log_lines(&pod.log, 2).await;
    assert!(
        lines[0].contains("\"GET / HTTP/1.1\" 502 - direct_response - \"-\" 0 0 "),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("\"example.org\" \"-\" - - "),
        "{}",
        lines[0]
    );
    assert!(lines[0].ends_with(" - block_all"), "{}", lines[0]);
    assert!(
        lines[1].contains("\"- - -\" 0 UH - - \"-\" 0 0 "),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].contains(" \"-\" BlackHoleCluster - "),
        "{}",
        lines[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dialling_the_outbound_port_is_blackholed() {
    let pod = pod_with(|_| {}).await;
    pod.publish(vec![]).await;
    pod.orig.set(pod.outbound());
    assert!(
        tcp_roundtrip(pod.outbound(), b"GET / HTTP/1.1\r\n\r\n")
            .await
            .is_empty()
    );
    let line = &log_lines(&pod.log, 1).await[0];
    assert!(line.contains(" BlackHoleCluster "), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_reaches_the_app_from_127_0_0_6() {
    let app = http_upstream("127.0.0.1:0", "app").await;
    let other = http_upstream("127.0.0.1:0", "other").await;
    let pod = pod_with(|_| {}).await;
    // This pod (127.0.0.1) backs the sleep service on the app's port.
    pod.publish(vec![service(
        "default",
        "sleep",
        "10.96.0.9",
        "http",
        80,
        &[app.addr],
    )])
    .await;
    pod.orig.set(app.addr);
    let got = get(pod.inbound(), "sleep", "/status/418").await;
    assert_eq!(got.status, 418);
    assert_eq!(app.last().peer.unwrap().ip().to_string(), "127.0.0.6");
    // A port no Service covers.
    pod.orig.set(other.addr);
    let got = get(pod.inbound(), "whatever", "/").await;
    assert_eq!(got.status, 200);
    assert_eq!(other.last().peer.unwrap().ip().to_string(), "127.0.0.6");

    let lines = log_lines(&pod.log, 2).await;
    let port = app.addr.port();
    assert!(
        lines[0].contains(&format!("\"127.0.0.1:{port}\" inbound|{port}|| 127.0.0.6:")),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains(&format!(" 127.0.0.1:{port} 127.0.0.1:")),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains(" InboundPassthroughCluster 127.0.0.6:"),
        "{}",
        lines[1]
    );
    let text = pod.stats().await;
    assert_eq!(
        sample(
            &text,
            "istio_requests_total",
            &[
                "reporter=\"destination\"",
                "destination_workload=\"sleep\"",
                "response_code=\"418\""
            ]
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_then_sigterm_exits_at_once() {
    let app = http_upstream("127.0.0.1:0", "app").await;
    // A long drain duration, to tell "at once" from "after the drain".
    let (pod, _a, _b) = httpbin_pod_with(|c| c.termination_drain = Duration::from_secs(10)).await;
    let status = pod.sidecar.addresses.status;
    assert_eq!(get(status, "s", "/drain").await.status, 405);
    let drained = h1(status, "POST", "s", "/drain", &[]).await;
    assert_eq!(
        (drained.status.as_u16(), drained.text().as_str()),
        (200, "OK")
    );
    // Inbound responses now ask the client to close.
    pod.orig.set(app.addr);
    let got = get(pod.inbound(), "sleep", "/").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("connection"), Some("close"));
    // Outbound keeps working while the app shuts down.
    let got = pod
        .via_outbound(&format!("{VIP}:8000"), "httpbin", "/")
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("connection"), None);

    let started = Instant::now();
    pod.sidecar.terminate();
    let code = pod.sidecar.wait().await;
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "no drain wait after /drain: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_without_drain_waits_the_drain_duration() {
    let (pod, _a, _b) = httpbin_pod().await;
    let health = pod.sidecar.addresses.health;
    let started = Instant::now();
    pod.sidecar.terminate();
    // Not ready any more, but outbound still serves during the drain.
    eventually("readiness fails", || async move {
        get(health, "h", "/healthz/ready").await.status == 503
    })
    .await;
    let got = pod
        .via_outbound(&format!("{VIP}:8000"), "httpbin", "/")
        .await;
    assert_eq!(got.status, 200);
    let code = pod.sidecar.wait().await;
    assert_eq!(code, ExitCode::SUCCESS);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(3),
        "terminationDrainDuration is 1s here: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_on_zero_active_connections_waits_for_open_connections() {
    let echo = echo_server().await;
    let pod = pod_with(|c| {
        c.exit_on_zero_active = true;
        c.minimum_drain = Duration::from_millis(200);
    })
    .await;
    pod.publish(vec![]).await;
    pod.orig.set(echo);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(pod.outbound())
        .await
        .unwrap();
    conn.write_all(b"\x00hold").await.unwrap();
    let mut buf = [0u8; 5];
    conn.read_exact(&mut buf).await.unwrap();
    let started = Instant::now();
    pod.sidecar.terminate();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!pod.sidecar.is_finished(), "a connection is still open");
    drop(conn);
    let code = tokio::time::timeout(Duration::from_secs(3), pod.sidecar.wait())
        .await
        .unwrap();
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quitquitquit_exits_promptly() {
    let (pod, _a, _b) = httpbin_pod().await;
    let status = pod.sidecar.addresses.status;
    assert_eq!(get(status, "s", "/quitquitquit").await.status, 405);
    let started = Instant::now();
    let got = h1(status, "POST", "s", "/quitquitquit", &[]).await;
    assert_eq!((got.status.as_u16(), got.text().as_str()), (200, "OK"));
    let code = tokio::time::timeout(Duration::from_secs(2), pod.sidecar.wait())
        .await
        .unwrap();
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_health_runs_the_apps_original_probes() {
    let app = http_upstream("127.0.0.1:0", "app").await;
    let closed = closed_port("127.0.0.1").await;
    let probers = serde_json::json!({
        "/app-health/app/readyz": {"httpGet": {"path": "/status/418", "port": app.addr.port()}},
        "/app-health/app/livez": {"tcpSocket": {"port": closed.port()}},
        "/app-health/app/startupz": {"tcpSocket": {"port": app.addr.port()}},
    });
    let probers = serde_json::from_value(probers).unwrap();
    let pod = pod_with(|c| c.probers = probers).await;
    let status = pod.sidecar.addresses.status;
    assert_eq!(get(status, "s", "/app-health/app/readyz").await.status, 418);
    assert_eq!(app.hits(), 1);
    assert_eq!(get(status, "s", "/app-health/app/livez").await.status, 500);
    assert_eq!(
        get(status, "s", "/app-health/app/startupz").await.status,
        200
    );
    assert_eq!(
        get(status, "s", "/app-health/other/readyz").await.status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_fields() {
    let (a, b) = http_upstream_pair("httpbin-a", "httpbin-b").await;
    let pod = pod_with(|c| c.access_log_encoding = Encoding::Json).await;
    pod.publish(vec![service(
        "default",
        "httpbin",
        VIP,
        "http",
        8000,
        &[a.addr, b.addr],
    )])
    .await;
    pod.via_outbound(&format!("{VIP}:8000"), "httpbin:8000", "/status/418?x=y")
        .await;
    let lines = log_lines(&pod.log, 1).await;
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/status/418?x=y");
    assert_eq!(v["response_code"], 418);
    assert_eq!(v["response_flags"], "-");
    assert_eq!(v["bytes_received"], 0);
    assert_eq!(v["bytes_sent"], 11);
    assert_eq!(v["authority"], "httpbin:8000");
    assert_eq!(v["user_agent"], "proxy-test/1.0");
    assert_eq!(
        v["upstream_cluster"],
        "outbound|8000||httpbin.default.svc.cluster.local"
    );
    assert_eq!(v["downstream_local_address"], format!("{VIP}:8000"));
    let host = v["upstream_host"].as_str().unwrap();
    assert!(
        host == a.addr.to_string() || host == b.addr.to_string(),
        "{host}"
    );
    assert!(v["requested_server_name"].is_null());
    assert_eq!(v["route_name"], "default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_wait_commands_talk_to_the_agent() {
    use clap::Parser;
    #[derive(Parser)]
    struct Top {
        #[command(flatten)]
        args: proxy::Args,
    }
    let pod = pod_with(|_| {}).await;
    let health = pod.sidecar.addresses.health;
    let status = pod.sidecar.addresses.status.port();
    // `wait` (the legacy postStart hook) returns once the proxy is ready.
    let url = format!("http://127.0.0.1:{}/healthz/ready", health.port());
    let wait = tokio::spawn(proxy::run(
        Top::parse_from([
            "proxy",
            "wait",
            "--timeoutSeconds",
            "10",
            "--url",
            url.as_str(),
        ])
        .args,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!wait.is_finished(), "not ready before the first view");
    pod.publish(vec![]).await;
    let code = tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(code, ExitCode::SUCCESS);

    // `request POST drain` (the native preStop hook) drains inbound.
    let port = format!("--debug-port={status}");
    let code =
        proxy::run(Top::parse_from(["proxy", "request", port.as_str(), "POST", "drain"]).args)
            .await
            .unwrap();
    assert_eq!(code, ExitCode::SUCCESS);
    let app = http_upstream("127.0.0.1:0", "app").await;
    pod.orig.set(app.addr);
    assert_eq!(
        get(pod.inbound(), "x", "/").await.header("connection"),
        Some("close")
    );
    // A failed request exits non-zero.
    let code =
        proxy::run(Top::parse_from(["proxy", "request", port.as_str(), "GET", "drain"]).args)
            .await
            .unwrap();
    assert_eq!(code, ExitCode::FAILURE);
}
