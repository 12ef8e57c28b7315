//! The agent endpoints: readiness on 15021, the status server on 15020 (`/healthz/ready`,
//! `/quitquitquit`, `/drain`, `/app-health/...`, `/stats/prometheus`) and Envoy's Prometheus
//! port 15090; plus the small HTTP client the app probes and `request`/`wait` use.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::AppMetrics;
use crate::metrics::{self, Metrics};
use crate::proxy::Shared;
use crate::registry::{INBOUND_BIND_V4, INBOUND_BIND_V6};
use crate::upstream;

/// Which admin listener a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminPort {
    /// 15021: readiness only.
    Health,
    /// 15020: the agent's status server.
    Status,
    /// 15090: Envoy's Prometheus stats.
    Prometheus,
}

/// The agent's state as its endpoints see it.
pub struct Agent {
    /// The first complete discovery view has been applied.
    pub ready: AtomicBool,
    /// Termination began (SIGTERM): readiness fails from now on.
    pub terminating: CancellationToken,
    /// `/drain` was called: a later SIGTERM exits at once.
    pub drained: AtomicBool,
    /// `/quitquitquit` was called.
    pub quit: CancellationToken,
    pub shared: Arc<Shared>,
    pub metrics: Arc<Metrics>,
    pub probers: HashMap<String, Probe>,
    /// Where app probes go by default (the pod IP, else loopback).
    pub probe_ip: IpAddr,
    pub app_metrics: Option<AppMetrics>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("ready", &self.ready)
            .field("drained", &self.drained)
            .finish_non_exhaustive()
    }
}

type AdminBody = Full<Bytes>;

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<AdminBody> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp
}

/// Serves one admin listener until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    port: AdminPort,
    agent: Arc<Agent>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, remote) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    tracing::debug!(%err, "admin accept");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let agent = agent.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let agent = agent.clone();
                async move { Ok::<_, Infallible>(handle(&agent, port, remote, req).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                () = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
}

async fn handle(
    agent: &Agent,
    port: AdminPort,
    remote: SocketAddr,
    req: Request<Incoming>,
) -> Response<AdminBody> {
    let path = req.uri().path();
    match (port, path) {
        (AdminPort::Health | AdminPort::Status, "/healthz/ready") => readiness(agent),
        (AdminPort::Status, "/quitquitquit") => guarded(req.method(), remote, || {
            agent.quit.cancel();
        }),
        (AdminPort::Status, "/drain") => guarded(req.method(), remote, || {
            agent.drained.store(true, Ordering::SeqCst);
            agent.shared.inbound_drain.cancel();
        }),
        (AdminPort::Status, p) if p.starts_with("/app-health/") => app_probe(agent, p).await,
        (AdminPort::Status, "/stats/prometheus" | "/metrics") => {
            let mut text = agent.metrics.encode();
            if let Some(app) = &agent.app_metrics {
                text.push_str(&scrape_app(agent, app).await);
            }
            prometheus(text)
        }
        (AdminPort::Prometheus, "/stats/prometheus") => prometheus(agent.metrics.encode()),
        _ => reply(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn prometheus(text: String) -> Response<AdminBody> {
    let mut resp = reply(StatusCode::OK, text);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    resp
}

fn readiness(agent: &Agent) -> Response<AdminBody> {
    if agent.terminating.is_cancelled() {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "server is terminated\n");
    }
    if !agent.ready.load(Ordering::SeqCst) {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "config not received from XDS server\n",
        );
    }
    reply(StatusCode::OK, Bytes::new())
}

/// POST-only, localhost-only endpoints (`/quitquitquit`, `/drain`).
fn guarded(method: &Method, remote: SocketAddr, act: impl FnOnce()) -> Response<AdminBody> {
    if method != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    if !remote.ip().is_loopback() {
        return reply(
            StatusCode::FORBIDDEN,
            "only requests from localhost are allowed\n",
        );
    }
    act();
    reply(StatusCode::OK, "OK")
}

/// Source address for connections to the app on the pod IP, so iptables lets them through.
fn bind_for(target: IpAddr, probe_ip: IpAddr) -> Option<IpAddr> {
    if target.is_loopback() || target != probe_ip {
        return None;
    }
    Some(if target.is_ipv4() {
        INBOUND_BIND_V4
    } else {
        INBOUND_BIND_V6
    })
}

fn port_number(port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).ok(),
        IntOrString::String(s) => s.parse().ok(),
    }
}

async fn app_probe(agent: &Agent, path: &str) -> Response<AdminBody> {
    let Some(probe) = agent.probers.get(path) else {
        return reply(StatusCode::NOT_FOUND, "no prober for this path\n");
    };
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(get) = &probe.http_get {
        let Some(port) = port_number(&get.port) else {
            return reply(StatusCode::INTERNAL_SERVER_ERROR, "invalid probe port\n");
        };
        if get
            .scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("https"))
        {
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "HTTPS app probes are not supported\n",
            );
        }
        let ip = match get.host.as_deref().map(str::parse::<IpAddr>) {
            Some(Ok(ip)) => ip,
            Some(Err(_)) => {
                return reply(StatusCode::INTERNAL_SERVER_ERROR, "invalid probe host\n");
            }
            None => agent.probe_ip,
        };
        let headers: Vec<(String, String)> = get
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        let path = get.path.as_deref().filter(|p| !p.is_empty()).unwrap_or("/");
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        let addr = SocketAddr::new(ip, port);
        return match http_request(
            addr,
            bind_for(ip, agent.probe_ip),
            Method::GET,
            &path,
            &headers,
            timeout,
        )
        .await
        {
            // The app's own status is the probe's answer.
            Ok((status, _)) => reply(status, Bytes::new()),
            Err(err) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("probe failed: {err}\n"),
            ),
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = port_number(&tcp.port) else {
            return reply(StatusCode::INTERNAL_SERVER_ERROR, "invalid probe port\n");
        };
        let ip = tcp
            .host
            .as_deref()
            .and_then(|h| h.parse().ok())
            .unwrap_or(agent.probe_ip);
        return match upstream::connect(
            SocketAddr::new(ip, port),
            bind_for(ip, agent.probe_ip),
            timeout,
        )
        .await
        {
            Ok(_) => reply(StatusCode::OK, Bytes::new()),
            Err(err) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("probe failed: {err}\n"),
            ),
        };
    }
    if let Some(grpc) = &probe.grpc {
        let Ok(port) = u16::try_from(grpc.port) else {
            return reply(StatusCode::INTERNAL_SERVER_ERROR, "invalid probe port\n");
        };
        let ip = agent.probe_ip;
        let service = grpc.service.as_deref().unwrap_or("");
        return match grpc_health(
            SocketAddr::new(ip, port),
            bind_for(ip, agent.probe_ip),
            service,
            timeout,
        )
        .await
        {
            Ok(true) => reply(StatusCode::OK, Bytes::new()),
            Ok(false) => reply(StatusCode::INTERNAL_SERVER_ERROR, "not serving\n"),
            Err(err) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("probe failed: {err}\n"),
            ),
        };
    }
    reply(StatusCode::INTERNAL_SERVER_ERROR, "unsupported prober\n")
}

/// Fetches the app's metrics for merging; failures are reported as a comment.
async fn scrape_app(agent: &Agent, app: &AppMetrics) -> String {
    let Ok(port) = app.port.parse::<u16>() else {
        return String::new();
    };
    let path = if app.path.is_empty() {
        "/metrics"
    } else {
        &app.path
    };
    let addr = SocketAddr::new(agent.probe_ip, port);
    match http_request(
        addr,
        bind_for(agent.probe_ip, agent.probe_ip),
        Method::GET,
        path,
        &[],
        Duration::from_secs(5),
    )
    .await
    {
        Ok((status, body)) if status.is_success() => String::from_utf8_lossy(&body).into_owned(),
        Ok((status, _)) => format!("# app metrics: {status}\n"),
        Err(err) => format!("# app metrics: {err}\n"),
    }
}

/// One HTTP/1.1 request on a new connection; returns the status and the body.
pub async fn http_request(
    addr: SocketAddr,
    bind: Option<IpAddr>,
    method: Method,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> io::Result<(StatusCode, Bytes)> {
    let work = async {
        let stream = upstream::connect(addr, bind, timeout).await?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, addr.to_string())
            .header(header::USER_AGENT, "tandem-proxy");
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let resp = tx.send_request(req).await.map_err(io::Error::other)?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(io::Error::other)?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "request timed out"))?
}

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// `grpc.health.v1.Health/Check`: true when the answer is `SERVING`.
pub async fn grpc_health(
    addr: SocketAddr,
    bind: Option<IpAddr>,
    service: &str,
    timeout: Duration,
) -> io::Result<bool> {
    let work = async {
        let stream = upstream::connect(addr, bind, timeout).await?;
        let (mut tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(conn);
        // HealthCheckRequest { string service = 1; } in a gRPC length-prefixed frame.
        let mut msg = BytesMut::new();
        if !service.is_empty() {
            msg.put_u8(0x0a);
            put_varint(&mut msg, service.len() as u64);
            msg.put_slice(service.as_bytes());
        }
        let mut frame = BytesMut::with_capacity(5 + msg.len());
        frame.put_u8(0);
        frame.put_u32(msg.len() as u32);
        frame.put_slice(&msg);
        let req = Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
            .header(header::CONTENT_TYPE, "application/grpc")
            .header(header::TE, "trailers")
            .body(Full::new(frame.freeze()))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let resp = tx.send_request(req).await.map_err(io::Error::other)?;
        let header_status = resp.headers().get("grpc-status").cloned();
        let collected = resp.into_body().collect().await.map_err(io::Error::other)?;
        let trailer_status = collected
            .trailers()
            .and_then(|t| t.get("grpc-status").cloned());
        let ok = trailer_status
            .or(header_status)
            .is_some_and(|s| s.as_bytes() == b"0");
        let body = collected.to_bytes();
        // HealthCheckResponse { ServingStatus status = 1; } with SERVING = 1.
        let serving = body.len() >= 7 && body[5] == 0x08 && body[6] == 0x01;
        Ok(ok && serving)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "probe timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_endpoints_are_post_and_localhost_only() {
        let mut calls = 0;
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let remote: SocketAddr = "10.244.0.7:40000".parse().unwrap();
        let r = guarded(&Method::GET, local, || calls += 1);
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        let r = guarded(&Method::POST, remote, || calls += 1);
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(calls, 0);
        let r = guarded(&Method::POST, "[::1]:1".parse().unwrap(), || calls += 1);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(calls, 1);
    }

    #[test]
    fn probes_to_the_pod_ip_come_from_127_0_0_6() {
        let pod: IpAddr = "10.244.0.7".parse().unwrap();
        assert_eq!(bind_for(pod, pod), Some(INBOUND_BIND_V4));
        assert_eq!(bind_for("127.0.0.1".parse().unwrap(), pod), None);
        assert_eq!(bind_for("10.1.1.1".parse().unwrap(), pod), None);
        let pod6: IpAddr = "fd00::7".parse().unwrap();
        assert_eq!(bind_for(pod6, pod6), Some(INBOUND_BIND_V6));
    }
}
