//! The standalone forwarder over real sockets: HTTP/1.1, h2c and TCP, access logs in both
//! encodings, and a clean exit.

mod common;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use common::*;
use proxy::accesslog::{Encoding, Sink};
use proxy::forward::{self, ForwardConfig};

async fn forwarder(
    upstream: SocketAddr,
    log: &std::path::Path,
    encoding: Encoding,
) -> forward::Forwarder {
    forward::start(ForwardConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: upstream.to_string(),
        access_log: Some(Sink::File(log.to_owned())),
        access_log_encoding: encoding,
        detect_timeout: Some(Duration::from_millis(300)),
        stats: Some("127.0.0.1:0".parse().unwrap()),
        drain_timeout: Duration::from_secs(2),
        workers: 2,
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_http1_with_envoy_headers_and_a_text_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let up = http_upstream("127.0.0.1:0", "backend").await;
    let fwd = forwarder(up.addr, &log, Encoding::Text).await;

    let got = get(fwd.local, "backend.example", "/status/418").await;
    assert_eq!(got.status, 418);
    assert_eq!(got.header("server"), Some("envoy"));
    assert!(got.header("x-envoy-upstream-service-time").is_some());
    let seen = up.last();
    let rid = seen.request_id.expect("x-request-id generated");
    assert_eq!(rid.len(), 36);
    assert_eq!(seen.host.as_deref(), Some("backend.example"));

    // A request id sent by the client is kept.
    let _ = common::h1(
        fwd.local,
        "GET",
        "backend.example",
        "/",
        &[("x-request-id", "my-own-id")],
    )
    .await;
    assert_eq!(up.last().request_id.as_deref(), Some("my-own-id"));

    let lines = log_lines(&log, 2).await;
    let first = &lines[0];
    let re = regex::Regex::new(&format!(
        r#"^\[\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z\] "GET /status/418 HTTP/1\.1" 418 - via_upstream - "-" 0 11 \d+ \d+ "-" "proxy-test/1\.0" "{rid}" "backend\.example" "{up}" outbound\|{port}\|\|127\.0\.0\.1 127\.0\.0\.1:\d+ {local} 127\.0\.0\.1:\d+ - default$"#,
        up = regex::escape(&up.addr.to_string()),
        port = up.addr.port(),
        local = regex::escape(&fwd.local.to_string()),
    ))
    .unwrap();
    assert!(re.is_match(first), "{first}");
    assert!(lines[1].contains("\"my-own-id\""), "{}", lines[1]);

    fwd.terminate();
    assert_eq!(fwd.wait().await, ExitCode::SUCCESS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_h2c_and_logs_json() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.json");
    let up = http_upstream("127.0.0.1:0", "h2-backend").await;
    let fwd = forwarder(up.addr, &log, Encoding::Json).await;

    let got = h2_get(fwd.local, "svc.example:80", "/hello?x=1").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "h2-backend");
    assert_eq!(
        up.last().version,
        Some(http::Version::HTTP_2),
        "h2c upstream too"
    );

    let lines = log_lines(&log, 1).await;
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/hello?x=1");
    assert_eq!(v["protocol"], "HTTP/2");
    assert_eq!(v["response_code"], 200);
    assert_eq!(v["response_flags"], "-");
    assert_eq!(v["response_code_details"], "via_upstream");
    assert_eq!(v["bytes_sent"], 10);
    assert_eq!(v["authority"], "svc.example:80");
    assert_eq!(v["upstream_host"], up.addr.to_string());
    assert_eq!(v["downstream_local_address"], fwd.local.to_string());
    assert_eq!(v["route_name"], "default");
    assert!(v["x_forwarded_for"].is_null());
    assert!(v["upstream_service_time"].is_string());
    assert_eq!(
        v["request_id"].as_str().map(str::len),
        Some(36),
        "{}",
        lines[0]
    );
    fwd.terminate();
    assert_eq!(fwd.wait().await, ExitCode::SUCCESS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_opaque_tcp_and_counts_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("tcp.log");
    let echo = echo_server().await;
    let fwd = forwarder(echo, &log, Encoding::Text).await;

    let payload = b"\x16\x03\x01 not http at all".repeat(100);
    let back = tcp_roundtrip(fwd.local, &payload).await;
    assert_eq!(back, payload);

    // A client that never speaks first is treated as TCP after the detection timeout.
    let mut silent = tokio::net::TcpStream::connect(fwd.local).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    silent.write_all(b"late").await.unwrap();
    let mut buf = [0u8; 4];
    silent.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"late");
    drop(silent);

    let lines = log_lines(&log, 2).await;
    let n = payload.len();
    let line = &lines[0];
    assert!(
        line.contains(&format!("\"- - -\" 0 - - - \"-\" {n} {n} ")),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "\"-\" \"-\" \"-\" \"-\" \"{echo}\" outbound|{}||127.0.0.1 ",
            echo.port()
        )),
        "{line}"
    );
    assert!(line.ends_with(" - -"), "{line}");

    let stats = fwd.stats.unwrap();
    let text = get(stats, "stats", "/stats/prometheus").await.text();
    assert_eq!(
        sample(&text, "istio_tcp_received_bytes_total", &[]),
        Some((n + 4) as f64),
        "{text}"
    );
    fwd.terminate();
    assert_eq!(fwd.wait().await, ExitCode::SUCCESS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upstream_gives_503_after_three_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let dead = closed_port("127.0.0.1").await;
    let fwd = forwarder(dead, &log, Encoding::Text).await;
    let got = get(fwd.local, "x", "/").await;
    assert_eq!(got.status, 503);
    assert_eq!(
        got.text(),
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
    );
    let line = &log_lines(&log, 1).await[0];
    assert!(
        line.contains(
            "\"GET / HTTP/1.1\" 503 UF,URX upstream_reset_before_response_started{connection_failure} - \"-\" 0 91 "
        ),
        "{line}"
    );
    // No upstream service time for a local reply; no upstream local address either.
    let re = regex::Regex::new(r#" 0 91 \d+ - "-" "#).unwrap();
    assert!(re.is_match(line), "{line}");
    let text = get(fwd.stats.unwrap(), "stats", "/stats/prometheus")
        .await
        .text();
    assert_eq!(
        sample(&text, "envoy_cluster_upstream_cx_connect_fail", &[]),
        Some(3.0),
        "{text}"
    );
    fwd.terminate();
    assert_eq!(fwd.wait().await, ExitCode::SUCCESS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_503_is_retried_twice_then_passed_on_with_urx() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let up = http_upstream("127.0.0.1:0", "backend").await;
    let fwd = forwarder(up.addr, &log, Encoding::Text).await;
    let got = get(fwd.local, "backend", "/status/503").await;
    assert_eq!(got.status, 503);
    assert_eq!(got.text(), "status 503\n", "the upstream's own answer");
    assert_eq!(up.hits(), 3, "1 attempt + 2 retries");
    let attempts: Vec<_> = up
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.attempt.clone())
        .collect();
    assert_eq!(
        attempts,
        ["1", "2", "3"].map(|a| Some(a.to_owned())),
        "x-envoy-attempt-count"
    );
    let line = &log_lines(&log, 1).await[0];
    assert!(
        line.contains("\"GET /status/503 HTTP/1.1\" 503 URX via_upstream "),
        "{line}"
    );
    let text = get(fwd.stats.unwrap(), "stats", "/stats/prometheus")
        .await
        .text();
    assert_eq!(
        sample(&text, "envoy_cluster_upstream_rq_retry", &[]),
        Some(2.0),
        "{text}"
    );
    fwd.terminate();
    assert_eq!(fwd.wait().await, ExitCode::SUCCESS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_503_is_hidden_by_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let up = http_upstream("127.0.0.1:0", "backend").await;
    let fwd = forwarder(up.addr, &log, Encoding::Text).await;
    let got = get(fwd.local, "backend", "/fail-first/1").await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(up.hits(), 2);
    assert_eq!(up.last().attempt.as_deref(), Some("2"));
    let line = &log_lines(&log, 1).await[0];
    assert!(line.contains("\" 200 - via_upstream "), "{line}");
    fwd.terminate();
    assert_eq!(fwd.wait().await, ExitCode::SUCCESS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_body_is_not_resent_after_a_503() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let up = http_upstream("127.0.0.1:0", "backend").await;
    let fwd = forwarder(up.addr, &log, Encoding::Text).await;
    let got = h1_with_body(
        fwd.local,
        "POST",
        "backend",
        "/status/503",
        &[],
        bytes::Bytes::from_static(b"payload"),
    )
    .await;
    assert_eq!(got.status, 503);
    assert_eq!(
        up.hits(),
        1,
        "the body has gone upstream once and is not kept"
    );
    let line = &log_lines(&log, 1).await[0];
    assert!(
        line.contains("\"POST /status/503 HTTP/1.1\" 503 - via_upstream "),
        "{line}"
    );
    fwd.terminate();
    assert_eq!(fwd.wait().await, ExitCode::SUCCESS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_lets_an_inflight_tcp_connection_finish() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let echo = echo_server().await;
    let fwd = forwarder(echo, &log, Encoding::Text).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(fwd.local).await.unwrap();
    conn.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).await.unwrap();
    let local = fwd.local;
    fwd.terminate();
    // New connections are refused once the listener has stopped...
    common::eventually("listener closed", || async move {
        tokio::net::TcpStream::connect(local).await.is_err()
    })
    .await;
    // ...while the open one still works.
    conn.write_all(b"pong").await.unwrap();
    conn.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    drop(conn);
    let code = tokio::time::timeout(Duration::from_secs(3), fwd.wait())
        .await
        .unwrap();
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(!log_lines(&log, 1).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_forwarded_and_counted_and_connections_reused() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let up = http_upstream("127.0.0.1:0", "backend").await;
    let fwd = forwarder(up.addr, &log, Encoding::Text).await;
    let body = "x".repeat(5000);
    let stream = tokio::net::TcpStream::connect(fwd.local).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    use http_body_util::BodyExt;
    for _ in 0..5 {
        tx.ready().await.unwrap();
        let req = http::Request::post("/echo")
            .header("host", "backend")
            .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let got = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got.len(), 5000);
    }
    assert_eq!(up.hits(), 5);
    assert_eq!(
        up.accepts.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one pooled upstream connection serves all five requests"
    );
    let lines = log_lines(&log, 5).await;
    for line in &lines {
        assert!(
            line.contains("\"POST /echo HTTP/1.1\" 200 - via_upstream - \"-\" 5000 5000 "),
            "{line}"
        );
    }
    fwd.terminate();
    assert_eq!(fwd.wait().await, ExitCode::SUCCESS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_upgrades_are_tunnelled() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let up = http_upstream("127.0.0.1:0", "ws").await;
    let fwd = forwarder(up.addr, &log, Encoding::Text).await;
    let mut s = tokio::net::TcpStream::connect(fwd.local).await.unwrap();
    s.write_all(b"GET /chat HTTP/1.1\r\nHost: ws\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    drop(s);
    let line = &log_lines(&log, 1).await[0];
    assert!(
        line.contains("\"GET /chat HTTP/1.1\" 101 - via_upstream "),
        "{line}"
    );
    fwd.terminate();
    assert_eq!(fwd.wait().await, ExitCode::SUCCESS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_early_is_logged_with_dc() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let up = http_upstream("127.0.0.1:0", "slow").await;
    let fwd = forwarder(up.addr, &log, Encoding::Text).await;
    let mut s = tokio::net::TcpStream::connect(fwd.local).await.unwrap();
    s.write_all(b"GET /delay/500 HTTP/1.1\r\nHost: slow\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(s);
    let line = &log_lines(&log, 1).await[0];
    assert!(
        line.contains("\"GET /delay/500 HTTP/1.1\" 0 DC downstream_remote_disconnect - \"-\" 0 0 "),
        "{line}"
    );
    fwd.terminate();
    assert_eq!(fwd.wait().await, ExitCode::SUCCESS);
}
