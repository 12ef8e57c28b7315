//! Test helpers: upstream servers (HTTP/1.1 + h2c, TCP echo), HTTP clients, a discovery
//! server fed by hand, and access-log readers.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy::discovery::{self, EndpointView, PortView, ServiceView, Snapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What an upstream server saw.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub peer: Option<SocketAddr>,
    pub request_id: Option<String>,
    pub host: Option<String>,
    pub version: Option<http::Version>,
    /// `x-envoy-attempt-count`.
    pub attempt: Option<String>,
}

/// A test HTTP server (HTTP/1.1 and h2c on the same port).
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: &'static str,
    pub hits: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections accepted.
    pub accepts: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

async fn answer(
    name: &'static str,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    hits.fetch_add(1, Ordering::SeqCst);
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    seen.lock().unwrap().push(Seen {
        peer: Some(peer),
        request_id: header("x-request-id"),
        host: header("host").or_else(|| req.uri().authority().map(|a| a.to_string())),
        version: Some(req.version()),
        attempt: header("x-envoy-attempt-count"),
    });
    let path = req.uri().path().to_owned();
    if req.headers().contains_key("upgrade") {
        let mut req = req;
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert("upgrade", http::HeaderValue::from_static("echo"));
        r.headers_mut()
            .insert("connection", http::HeaderValue::from_static("upgrade"));
        return Ok(r);
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if let Some(ms) = path.strip_prefix("/delay/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    // `/fail-first/N`: 503 until the server has seen more than N requests.
    let failing = path
        .strip_prefix("/fail-first/")
        .and_then(|n| n.parse::<usize>().ok())
        .is_some_and(|n| hits.load(Ordering::SeqCst) <= n);
    let mut resp = if failing {
        let mut r = Response::new(Full::new(Bytes::from_static(b"try again\n")));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        r
    } else if let Some(code) = path.strip_prefix("/status/") {
        let code: u16 = code.parse().unwrap_or(500);
        let mut r = Response::new(Full::new(Bytes::from(format!("status {code}\n"))));
        *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        r
    } else if path == "/echo" {
        Response::new(Full::new(body))
    } else {
        Response::new(Full::new(Bytes::from(name)))
    };
    resp.headers_mut()
        .insert("x-upstream", http::HeaderValue::from_static(name));
    resp.headers_mut()
        .insert("server", http::HeaderValue::from_static("test-upstream"));
    Ok(resp)
}

/// Starts an HTTP server on `bind`.
pub async fn http_upstream_on(listener: TcpListener, name: &'static str) -> Upstream {
    let addr = listener.local_addr().unwrap();
    let up = Upstream {
        addr,
        name,
        hits: Arc::default(),
        seen: Arc::default(),
        accepts: Arc::default(),
    };
    let (hits, seen, accepts) = (up.hits.clone(), up.seen.clone(), up.accepts.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            accepts.fetch_add(1, Ordering::SeqCst);
            let (hits, seen) = (hits.clone(), seen.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    answer(name, hits.clone(), seen.clone(), peer, req)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    up
}

pub async fn http_upstream(bind: &str, name: &'static str) -> Upstream {
    http_upstream_on(TcpListener::bind(bind).await.unwrap(), name).await
}

/// Two servers on different loopback addresses with the same port (a Service's endpoints
/// share the target port).
pub async fn http_upstream_pair(a: &'static str, b: &'static str) -> (Upstream, Upstream) {
    for _ in 0..50 {
        let first = TcpListener::bind("127.0.0.2:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        if let Ok(second) = TcpListener::bind(("127.0.0.3", port)).await {
            return (
                http_upstream_on(first, a).await,
                http_upstream_on(second, b).await,
            );
        }
    }
    panic!("no common free port on 127.0.0.2 and 127.0.0.3");
}

/// A TCP echo server; returns its address.
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// An address nothing listens on.
pub async fn closed_port(ip: &str) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).await.unwrap();
    l.local_addr().unwrap()
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on a new connection.
pub async fn h1(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Got {
    h1_with_body(addr, method, host, path, headers, Bytes::new()).await
}

/// One HTTP/1.1 request with a body on a new connection.
pub async fn h1_with_body(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Got {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .header("user-agent", "proxy-test/1.0");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tx
        .send_request(req.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Got {
        status,
        headers,
        body,
    }
}

pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Got {
    h1(addr, "GET", host, path, &[]).await
}

/// One h2c (prior knowledge) request on a new connection.
pub async fn h2_get(addr: SocketAddr, authority: &str, path: &str) -> Got {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("http://{authority}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Got {
        status,
        headers,
        body,
    }
}

/// Sends `data` on a raw connection, half-closes, and reads until the peer closes.
pub async fn tcp_roundtrip(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(data).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out
}

/// A discovery server whose snapshots the test publishes.
pub struct FakeDiscovery {
    pub addr: SocketAddr,
    tx: watch::Sender<Option<Bytes>>,
    stop: CancellationToken,
    version: AtomicUsize,
}

impl FakeDiscovery {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(None);
        let stop = CancellationToken::new();
        tokio::spawn(discovery::serve_snapshots(
            listener,
            rx,
            std::future::pending(),
            stop.clone(),
        ));
        Self {
            addr,
            tx,
            stop,
            version: AtomicUsize::new(0),
        }
    }

    pub fn publish(&self, services: Vec<ServiceView>) {
        let version = self.version.fetch_add(1, Ordering::SeqCst) as u64 + 1;
        let line = discovery::encode_line(&Snapshot { version, services }).unwrap();
        self.tx.send_replace(Some(line));
    }

    /// Stops serving and closes the open streams.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// A Service with one TCP port and its endpoints (`ip`, target port).
pub fn service(
    ns: &str,
    name: &str,
    vip: &str,
    port_name: &str,
    port: u16,
    endpoints: &[SocketAddr],
) -> ServiceView {
    ServiceView {
        name: name.into(),
        namespace: ns.into(),
        cluster_ips: vec![vip.into()],
        ports: vec![PortView {
            name: port_name.into(),
            port,
            protocol: "TCP".into(),
            app_protocol: None,
        }],
        endpoints: endpoints
            .iter()
            .map(|e| EndpointView {
                ip: e.ip().to_string(),
                ports: [(port_name.to_owned(), e.port())].into(),
            })
            .collect(),
    }
}

/// Waits until `path` has at least `n` lines and returns them.
pub async fn log_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "wanted {n} access log lines, got {}:\n{text}",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `f` until it returns true (or fails after 5 s).
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the first sample line of `metric` whose labels include all of `labels`.
pub fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
