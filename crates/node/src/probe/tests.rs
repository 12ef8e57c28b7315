//! Probe attempts and workers against real processes and sockets on the host.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerPort, GRPCAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::testing::{
    HostAccess, TestServer, closed_port, exec_probe, header, http_probe, tcp_probe,
};
use super::*;

fn named_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: i32::from(port),
        ..ContainerPort::default()
    }
}

async fn once(probe: &Probe) -> ProbeOutcome {
    probe_once(probe, &[], &HostAccess).await
}

// ---- exec ----

#[tokio::test]
async fn exec_exit_zero_succeeds_with_its_output() {
    let outcome = once(&exec_probe(&["sh", "-c", "echo hello"])).await;
    assert_eq!(outcome, ProbeOutcome::success("hello\n"));
}

#[tokio::test]
async fn exec_nonzero_exit_fails_with_its_output() {
    let outcome = once(&exec_probe(&["sh", "-c", "echo not yet >&2; exit 3"])).await;
    assert_eq!(outcome, ProbeOutcome::failure("not yet\n"));
}

#[tokio::test]
async fn exec_timeout_fails_after_timeout_seconds() {
    let mut probe = exec_probe(&["sleep", "10"]);
    probe.timeout_seconds = Some(1);
    let start = std::time::Instant::now();
    let outcome = once(&probe).await;
    let took = start.elapsed();
    assert_eq!(
        outcome,
        ProbeOutcome::failure("command \"sleep 10\" timed out")
    );
    assert!(took >= Duration::from_millis(900), "took {took:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

// ---- httpGet ----

#[tokio::test]
async fn http_200_succeeds_and_sends_kubelet_headers() {
    let server = TestServer::start().await;
    let mut probe = http_probe(server.port, "/ok");
    if let Some(get) = probe.http_get.as_mut() {
        get.http_headers = Some(vec![header("x-custom-thing", "yes")]);
    }
    let outcome = once(&probe).await;
    assert_eq!(outcome, ProbeOutcome::success("ok"));

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert!(req.starts_with("GET /ok HTTP/1.1\r\n"), "{req}");
    assert!(
        req.contains(&format!("\r\nHost: 127.0.0.1:{}\r\n", server.port)),
        "{req}"
    );
    assert!(req.contains("\r\nUser-Agent: kube-probe/1.33\r\n"), "{req}");
    assert!(req.contains("\r\nAccept: */*\r\n"), "{req}");
    assert!(req.contains("\r\nX-Custom-Thing: yes\r\n"), "{req}");
}

#[tokio::test]
async fn http_headers_override_user_agent_and_host() {
    let server = TestServer::start().await;
    let mut probe = http_probe(server.port, "/ok");
    if let Some(get) = probe.http_get.as_mut() {
        get.http_headers = Some(vec![
            header("User-Agent", "mine/1"),
            header("Host", "app.example"),
        ]);
    }
    assert_eq!(once(&probe).await.result, ProbeResult::Success);
    let req = &server.requests()[0];
    assert!(req.contains("\r\nUser-Agent: mine/1\r\n"), "{req}");
    assert!(req.contains("\r\nHost: app.example\r\n"), "{req}");
    assert!(!req.contains("kube-probe"), "{req}");
}

#[tokio::test]
async fn http_500_fails_with_kubelet_text() {
    let server = TestServer::start().await;
    let outcome = once(&http_probe(server.port, "/fail")).await;
    assert_eq!(
        outcome,
        ProbeOutcome::failure("HTTP probe failed with statuscode: 500")
    );
}

#[tokio::test]
async fn http_redirect_on_same_host_is_followed() {
    let server = TestServer::start().await;
    let outcome = once(&http_probe(server.port, "/redirect")).await;
    assert_eq!(outcome, ProbeOutcome::success("ok"));
    let paths: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.split(' ').nth(1).unwrap_or_default().to_string())
        .collect();
    assert_eq!(paths, ["/redirect", "/ok"]);
}

#[tokio::test]
async fn http_redirect_to_other_host_succeeds_with_warning() {
    let server = TestServer::start().await;
    let outcome = once(&http_probe(server.port, "/redirect-away")).await;
    assert_eq!(outcome.result, ProbeResult::Success);
    assert!(outcome.warning);
    assert_eq!(
        outcome.message,
        "Probe terminated redirects, Response body: moved"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn http_redirect_loop_fails_after_ten() {
    let server = TestServer::start().await;
    let outcome = once(&http_probe(server.port, "/loop")).await;
    assert_eq!(
        outcome,
        ProbeOutcome::failure("Get \"/loop\": stopped after 10 redirects")
    );
    assert_eq!(server.requests().len(), 10);
}

#[tokio::test]
async fn http_404_fails() {
    let server = TestServer::start().await;
    let outcome = once(&http_probe(server.port, "/missing")).await;
    assert_eq!(
        outcome,
        ProbeOutcome::failure("HTTP probe failed with statuscode: 404")
    );
}

#[tokio::test]
async fn http_closed_port_fails_with_dial_error() {
    let port = closed_port().await;
    let outcome = once(&http_probe(port, "/healthz")).await;
    assert_eq!(
        outcome,
        ProbeOutcome::failure(format!(
            "Get \"http://127.0.0.1:{port}/healthz\": dial tcp 127.0.0.1:{port}: connect: connection refused"
        ))
    );
}

#[tokio::test]
async fn http_named_port_resolves_from_container_ports() {
    let server = TestServer::start().await;
    let mut probe = http_probe(server.port, "/ok");
    if let Some(get) = probe.http_get.as_mut() {
        get.port = IntOrString::String("web".into());
    }
    let ports = [named_port("metrics", 1), named_port("web", server.port)];
    let outcome = probe_once(&probe, &ports, &HostAccess).await;
    assert_eq!(outcome, ProbeOutcome::success("ok"));
}

#[tokio::test]
async fn http_unknown_port_name_errors() {
    let mut probe = http_probe(1, "/ok");
    if let Some(get) = probe.http_get.as_mut() {
        get.port = IntOrString::String("web".into());
    }
    let outcome = once(&probe).await;
    assert_eq!(
        outcome,
        ProbeOutcome::errored("strconv.Atoi: parsing \"web\": invalid syntax")
    );
}

#[tokio::test]
async fn http_slow_server_times_out() {
    let server = TestServer::start().await;
    let mut probe = http_probe(server.port, "/slow");
    probe.timeout_seconds = Some(1);
    let start = std::time::Instant::now();
    let outcome = once(&probe).await;
    assert!(start.elapsed() < Duration::from_millis(2500));
    assert_eq!(
        outcome,
        ProbeOutcome::failure(format!(
            "Get \"http://127.0.0.1:{}/slow\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
            server.port
        ))
    );
}

#[tokio::test]
async fn http_chunked_body_is_read() {
    let server = TestServer::start().await;
    let outcome = once(&http_probe(server.port, "/chunked")).await;
    assert_eq!(outcome, ProbeOutcome::success("hello world"));
}

#[tokio::test]
async fn https_probe_skips_certificate_verification() {
    let server = TestServer::start_tls().await;
    let mut probe = http_probe(server.port, "/ok");
    if let Some(get) = probe.http_get.as_mut() {
        get.scheme = Some("HTTPS".into());
    }
    let outcome = once(&probe).await;
    assert_eq!(outcome, ProbeOutcome::success("ok"));
    assert!(server.requests()[0].contains("User-Agent: kube-probe/1.33"));
}

#[tokio::test]
async fn https_against_plain_http_server_fails() {
    let server = TestServer::start().await;
    let mut probe = http_probe(server.port, "/ok");
    if let Some(get) = probe.http_get.as_mut() {
        get.scheme = Some("HTTPS".into());
    }
    let outcome = once(&probe).await;
    assert_eq!(
        outcome,
        ProbeOutcome::failure(format!(
            "Get \"https://127.0.0.1:{}/ok\": http: server gave HTTP response to HTTPS client",
            server.port
        ))
    );
}

// ---- tcpSocket / grpc ----

#[tokio::test]
async fn tcp_open_port_succeeds() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let outcome = once(&tcp_probe(IntOrString::Int(i32::from(port)))).await;
    assert_eq!(outcome, ProbeOutcome::success(""));
}

#[tokio::test]
async fn tcp_closed_port_fails_with_dial_error() {
    let port = closed_port().await;
    let outcome = once(&tcp_probe(IntOrString::Int(i32::from(port)))).await;
    assert_eq!(
        outcome,
        ProbeOutcome::failure(format!(
            "dial tcp 127.0.0.1:{port}: connect: connection refused"
        ))
    );
}

#[tokio::test]
async fn tcp_named_port_and_numeric_string() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let ports = [named_port("db", port)];
    let by_name = probe_once(
        &tcp_probe(IntOrString::String("db".into())),
        &ports,
        &HostAccess,
    )
    .await;
    assert_eq!(by_name.result, ProbeResult::Success);
    let by_digits = once(&tcp_probe(IntOrString::String(port.to_string()))).await;
    assert_eq!(by_digits.result, ProbeResult::Success);
    let invalid = once(&tcp_probe(IntOrString::Int(70000))).await;
    assert_eq!(invalid, ProbeOutcome::errored("invalid port number: 70000"));
}

#[tokio::test]
async fn grpc_is_reported_as_unsupported_failure() {
    let probe = Probe {
        grpc: Some(GRPCAction {
            port: 9000,
            service: None,
        }),
        ..Probe::default()
    };
    let outcome = once(&probe).await;
    assert_eq!(outcome.result, ProbeResult::Failure);
    assert!(
        outcome.message.contains("not supported"),
        "{}",
        outcome.message
    );
}

// ---- worker ----

struct Worker {
    rx: mpsc::UnboundedReceiver<ProbeUpdate>,
    cancel: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
    start: Instant,
}

fn spawn(kind: ProbeKind, probe: Probe, started_at: Option<Instant>) -> Worker {
    let (tx, rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let start = Instant::now();
    let spec = ProberSpec {
        container: "proxy".into(),
        instance: "tandem://1".into(),
        kind,
        probe,
        ports: vec![],
        access: Arc::new(HostAccess),
        cancel: cancel.clone(),
        updates: tx,
    };
    let handle = match started_at {
        Some(at) => spawn_prober_at(spec, at),
        None => spawn_prober(spec),
    };
    Worker {
        rx,
        cancel,
        handle,
        start,
    }
}

impl Worker {
    /// Next update and the (virtual) time it arrived, since the worker was spawned.
    async fn next(&mut self) -> (Duration, ProbeUpdate) {
        let update = tokio::time::timeout(Duration::from_secs(600), self.rx.recv())
            .await
            .expect("an update within 600 s")
            .expect("worker still running");
        (self.start.elapsed(), update)
    }

    /// Asserts that nothing arrives for `period`.
    async fn quiet_for(&mut self, period: Duration) {
        if let Ok(update) = tokio::time::timeout(period, self.rx.recv()).await {
            panic!("unexpected update: {update:?}");
        }
    }

    /// Waits for the worker to stop by itself.
    async fn finished(mut self) {
        assert!(self.rx.recv().await.is_none(), "worker should have stopped");
        tokio::time::timeout(Duration::from_secs(1), self.handle)
            .await
            .expect("worker task ends")
            .expect("worker task did not panic");
    }
}

fn with_timing(mut probe: Probe, delay: i32, period: i32, success: i32, failure: i32) -> Probe {
    probe.initial_delay_seconds = Some(delay);
    probe.period_seconds = Some(period);
    probe.success_threshold = Some(success);
    probe.failure_threshold = Some(failure);
    probe
}

fn event_message(update: &ProbeUpdate) -> Option<(&str, &str)> {
    update
        .event
        .as_ref()
        .map(|e| (e.reason.as_str(), e.message.as_str()))
}

#[tokio::test(start_paused = true)]
async fn startup_probe_passing_at_once_succeeds_without_waiting_a_period() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let probe = with_timing(tcp_probe(IntOrString::Int(i32::from(port))), 0, 10, 1, 3);
    let mut w = spawn(ProbeKind::Startup, probe, None);

    let (at, first) = w.next().await;
    assert_eq!(
        (at, first.result, first.event.clone()),
        (Duration::ZERO, Some(ProbeResult::Unknown), None)
    );
    assert_eq!(
        (first.container.as_str(), first.instance.as_str()),
        ("proxy", "tandem://1")
    );
    let (at, second) = w.next().await;
    assert_eq!(at, Duration::ZERO);
    assert_eq!(second.kind, ProbeKind::Startup);
    assert_eq!(second.result, Some(ProbeResult::Success));
    assert_eq!(second.event, None);
    // A startup worker is done once the container has started.
    w.finished().await;
}

#[tokio::test]
async fn startup_exec_probe_reports_success_within_milliseconds() {
    let probe = with_timing(exec_probe(&["true"]), 0, 10, 1, 3);
    let wall = std::time::Instant::now();
    let mut w = spawn(ProbeKind::Startup, probe, None);
    assert_eq!(w.next().await.1.result, Some(ProbeResult::Unknown));
    assert_eq!(w.next().await.1.result, Some(ProbeResult::Success));
    let took = wall.elapsed();
    assert!(took < Duration::from_millis(500), "took {took:?}");
}

#[tokio::test(start_paused = true)]
async fn readiness_flips_only_after_thresholds_and_only_on_change() {
    let server = TestServer::start().await;
    let probe = with_timing(http_probe(server.port, "/status"), 0, 10, 2, 3);
    let mut w = spawn(ProbeKind::Readiness, probe, None);

    let (at, initial) = w.next().await;
    assert_eq!(
        (at, initial.result),
        (Duration::ZERO, Some(ProbeResult::Failure))
    );
    // Two consecutive successes (t=0, t=10) are needed.
    let (at, ready) = w.next().await;
    assert_eq!(
        (at, ready.result, ready.event),
        (Duration::from_secs(10), Some(ProbeResult::Success), None)
    );
    // Staying healthy sends nothing more.
    w.quiet_for(Duration::from_secs(35)).await;

    server.set_status(503);
    let expected = "Readiness probe failed: HTTP probe failed with statuscode: 503";
    // Attempts at t=50 and t=60 fail below the threshold: events only.
    for secs in [50, 60] {
        let (at, update) = w.next().await;
        assert_eq!(at, Duration::from_secs(secs));
        assert_eq!(update.result, None);
        assert_eq!(event_message(&update), Some(("Unhealthy", expected)));
        let event = update.event.as_ref().expect("event");
        assert!(event.warning);
        assert_eq!(event.container.as_deref(), Some("proxy"));
    }
    // The third failure flips the result, with its event in the same update.
    let (at, unready) = w.next().await;
    assert_eq!(at, Duration::from_secs(70));
    assert_eq!(unready.result, Some(ProbeResult::Failure));
    assert_eq!(event_message(&unready), Some(("Unhealthy", expected)));

    // Readiness keeps probing: recovering needs two successes again.
    server.set_status(200);
    let (at, again) = w.next().await;
    assert_eq!(
        (at, again.result),
        (Duration::from_secs(90), Some(ProbeResult::Success))
    );

    w.cancel.cancel();
    w.finished().await;
}

#[tokio::test(start_paused = true)]
async fn liveness_waits_initial_delay_and_stops_after_failure() {
    let port = closed_port().await;
    let probe = with_timing(tcp_probe(IntOrString::Int(i32::from(port))), 5, 10, 1, 2);
    let mut w = spawn(ProbeKind::Liveness, probe, None);

    let (at, initial) = w.next().await;
    assert_eq!(
        (at, initial.result),
        (Duration::ZERO, Some(ProbeResult::Success))
    );
    let expected =
        format!("Liveness probe failed: dial tcp 127.0.0.1:{port}: connect: connection refused");
    let (at, first) = w.next().await;
    assert_eq!((at, first.result), (Duration::from_secs(5), None));
    assert_eq!(
        event_message(&first),
        Some(("Unhealthy", expected.as_str()))
    );
    let (at, second) = w.next().await;
    assert_eq!(
        (at, second.result),
        (Duration::from_secs(15), Some(ProbeResult::Failure))
    );
    assert_eq!(
        event_message(&second),
        Some(("Unhealthy", expected.as_str()))
    );
    // The instance is about to be killed; its successor gets a new worker.
    w.finished().await;
}

#[tokio::test(start_paused = true)]
async fn initial_delay_counts_from_container_start() {
    let port = closed_port().await;
    let probe = with_timing(tcp_probe(IntOrString::Int(i32::from(port))), 5, 10, 1, 3);
    tokio::time::advance(Duration::from_secs(20)).await;
    // The container started 20 s ago (startup probe took that long): no more waiting.
    let started = Instant::now() - Duration::from_secs(20);
    let mut w = spawn(ProbeKind::Readiness, probe, Some(started));
    let (_, initial) = w.next().await;
    assert_eq!(initial.result, Some(ProbeResult::Failure));
    let (at, first) = w.next().await;
    assert_eq!(at, Duration::ZERO);
    assert!(first.event.is_some());
}

#[tokio::test(start_paused = true)]
async fn startup_failure_threshold_reports_failure_then_stops() {
    let port = closed_port().await;
    let probe = with_timing(tcp_probe(IntOrString::Int(i32::from(port))), 0, 1, 1, 3);
    let mut w = spawn(ProbeKind::Startup, probe, None);
    assert_eq!(w.next().await.1.result, Some(ProbeResult::Unknown));
    let mut results = Vec::new();
    for _ in 0..3 {
        let (at, update) = w.next().await;
        let message = update.event.map(|e| e.message).unwrap_or_default();
        assert!(
            message.starts_with("Startup probe failed: dial tcp"),
            "{message}"
        );
        results.push((at, update.result));
    }
    assert_eq!(
        results,
        [
            (Duration::ZERO, None),
            (Duration::from_secs(1), None),
            (Duration::from_secs(2), Some(ProbeResult::Failure)),
        ]
    );
    w.finished().await;
}

#[tokio::test(start_paused = true)]
async fn errored_attempts_send_events_but_never_change_the_result() {
    let mut probe = tcp_probe(IntOrString::String("missing".into()));
    probe = with_timing(probe, 0, 10, 1, 1);
    let mut w = spawn(ProbeKind::Liveness, probe, None);
    assert_eq!(w.next().await.1.result, Some(ProbeResult::Success));
    for secs in [0, 10, 20] {
        let (at, update) = w.next().await;
        assert_eq!((at, update.result), (Duration::from_secs(secs), None));
        assert_eq!(
            event_message(&update),
            Some((
                "Unhealthy",
                "Liveness probe errored: strconv.Atoi: parsing \"missing\": invalid syntax"
            ))
        );
    }
}

#[tokio::test(start_paused = true)]
async fn redirect_warning_is_reported_as_probe_warning_event() {
    let server = TestServer::start().await;
    let probe = with_timing(http_probe(server.port, "/redirect-away"), 0, 10, 1, 3);
    let mut w = spawn(ProbeKind::Readiness, probe, None);
    assert_eq!(w.next().await.1.result, Some(ProbeResult::Failure));
    let (_, update) = w.next().await;
    assert_eq!(update.result, Some(ProbeResult::Success));
    assert_eq!(
        event_message(&update),
        Some((
            "ProbeWarning",
            "Readiness probe warning: Probe terminated redirects, Response body: moved"
        ))
    );
}

#[tokio::test(start_paused = true)]
async fn cancelling_stops_the_worker() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let probe = with_timing(tcp_probe(IntOrString::Int(i32::from(port))), 0, 10, 1, 3);
    let mut w = spawn(ProbeKind::Readiness, probe, None);
    assert_eq!(w.next().await.1.result, Some(ProbeResult::Failure));
    assert_eq!(w.next().await.1.result, Some(ProbeResult::Success));
    w.cancel.cancel();
    w.finished().await;
}

// ---- numbers and texts ----

#[test]
fn timing_defaults_match_the_api() {
    let timing = ProbeTiming::of(&Probe::default());
    assert_eq!(
        timing,
        ProbeTiming {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 3,
        }
    );
}

#[test]
fn go_quote_escapes_like_go() {
    assert_eq!(go_quote("sh -c \"x\"\n"), r#""sh -c \"x\"\n""#);
    assert_eq!(go_quote("a\u{1}b"), r#""a\x01b""#);
}
