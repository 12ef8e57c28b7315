//! HTTP proxying (HTTP/1.1 and h2c, same protocol upstream as downstream): routing, Istio's
//! default retry policy, Envoy's local replies and response headers, and
//! one access-log line plus metrics per request, written when the last response byte has
//! left (or the client went away).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::accesslog::{Entry, ResponseFlags};
use crate::body::ReqBody;
use crate::metrics::{RequestLabels, RequestProtocol};
use crate::proxy::{Routes, Shared};
use crate::registry::Cluster;
use crate::upstream::{self, CheckoutError, H1, Key};

/// Istio's default route retry policy: 2 retries, so 3 attempts.
const MAX_ATTEMPTS: usize = 3;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_ENVOY_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
static X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Envoy's local-reply bodies.
const BODY_CONNECT_FAILURE: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
const BODY_TERMINATION: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection termination";
const BODY_NO_HEALTHY: &str = "no healthy upstream";

/// One downstream HTTP connection, shared by its requests.
#[derive(Debug)]
pub struct HttpConn {
    pub shared: Arc<Shared>,
    pub inbound: bool,
    pub h2: bool,
    /// `%DOWNSTREAM_LOCAL_ADDRESS%`: the original destination.
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

enum Route {
    To {
        cluster: Arc<Cluster>,
        name: &'static str,
    },
    /// REGISTRY_ONLY's `block_all` direct response.
    Block,
}

impl HttpConn {
    fn route(&self, headers: &HeaderMap, uri: &http::Uri) -> Route {
        let shared = &self.shared;
        let registry = match &shared.routes {
            Routes::Static(c) => {
                return Route::To {
                    cluster: c.clone(),
                    name: "default",
                };
            }
            Routes::Mesh(rx) => rx.borrow().clone(),
        };
        if self.inbound {
            let cluster = registry
                .inbound(self.local.port())
                .cloned()
                .unwrap_or_else(|| shared.inbound_passthrough.clone());
            return Route::To {
                cluster,
                name: "default",
            };
        }
        let authority = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()));
        if let Some(c) = authority.and_then(|a| registry.route_http(self.local.port(), a)) {
            return Route::To {
                cluster: c.clone(),
                name: "default",
            };
        }
        if shared.registry_only {
            Route::Block
        } else {
            Route::To {
                cluster: shared.passthrough.clone(),
                name: "allow_any",
            }
        }
    }
}

/// Serves one request.
pub async fn handle(
    conn: Arc<HttpConn>,
    mut req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let start = Instant::now();
    if !req.headers().contains_key(&X_REQUEST_ID) {
        req.headers_mut()
            .insert(X_REQUEST_ID.clone(), new_request_id());
    }
    let protocol = match req.headers().get(header::CONTENT_TYPE) {
        Some(ct) if ct.as_bytes().starts_with(b"application/grpc") => RequestProtocol::Grpc,
        _ => RequestProtocol::Http,
    };
    let info = conn
        .shared
        .log
        .is_some()
        .then(|| RequestInfo::capture(&req));
    let mut done = Completion {
        conn: conn.clone(),
        start,
        wall: info.as_ref().map(|_| SystemTime::now()),
        info,
        protocol,
        cluster: None,
        route: None,
        status: 0,
        flags: ResponseFlags::NONE,
        details: None,
        upstream_host: None,
        upstream_local: None,
        upstream_time: None,
        req_bytes: None,
        bytes_sent: 0,
        h1: None,
        emitted: false,
    };

    let (cluster, route_name) = match conn.route(req.headers(), req.uri()) {
        Route::Block => {
            done.route = Some("block_all");
            return Ok(local_reply(
                done,
                StatusCode::BAD_GATEWAY,
                ResponseFlags::NONE,
                "direct_response",
                "",
            ));
        }
        Route::To { cluster, name } => (cluster, name),
    };
    done.route = Some(route_name);
    done.cluster = Some(cluster.clone());
    if cluster.is_empty() {
        return Ok(local_reply(
            done,
            StatusCode::SERVICE_UNAVAILABLE,
            ResponseFlags::UH,
            "no_healthy_upstream",
            BODY_NO_HEALTHY,
        ));
    }

    let upgrade = !conn.h2 && req.headers().contains_key(header::UPGRADE);
    if !conn.h2 {
        strip_hop_by_hop(req.headers_mut(), upgrade);
    }
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let counter = (!body.is_end_stream()).then(|| Arc::new(AtomicU64::new(0)));
    done.req_bytes = counter.clone();
    let mut req = Request::from_parts(parts, ReqBody::new(body, counter));

    // A bodiless request can be sent again as it is; one with a body only while the body
    // has not left (connect failures), as nothing here buffers bodies.
    let replay = req.body().is_end_stream().then(|| Replay::of(&req));

    let mut tried = [conn.local; MAX_ATTEMPTS];
    for attempt in 0..MAX_ATTEMPTS {
        let Some(ep) = cluster.pick(conn.local, &tried[..attempt]) else {
            break;
        };
        tried[attempt] = ep;
        done.upstream_host = Some(ep);
        req.headers_mut().insert(
            X_ENVOY_ATTEMPT_COUNT.clone(),
            HeaderValue::from_static(["1", "2", "3"][attempt]),
        );
        let key = Key {
            addr: ep,
            bind: cluster.bind,
        };
        let last = attempt + 1 == MAX_ATTEMPTS;
        let sent_at = Instant::now();
        match send(key, conn.h2, req, conn.shared.connect_timeout).await {
            Sent::Response(resp, local, h1) => {
                let grpc_status = resp.headers().get(&GRPC_STATUS).map(|v| v.as_bytes());
                let retriable = retriable_response(resp.status().as_u16(), grpc_status);
                if let Some(replay) = replay.as_ref().filter(|_| retriable) {
                    if !last {
                        // The answer is dropped unread, and its connection with it.
                        drop((resp, h1));
                        conn.shared.metrics.retried(&cluster.name);
                        req = replay.request();
                        backoff(attempt).await;
                        continue;
                    }
                    done.flags.insert(ResponseFlags::URX);
                }
                done.upstream_local = Some(local);
                done.upstream_time = Some(sent_at.elapsed().as_millis() as u64);
                return Ok(respond(done, resp, h1, downstream_upgrade));
            }
            Sent::ConnectFailed(back) => {
                conn.shared.metrics.connect_failed(&cluster.name);
                if !last {
                    conn.shared.metrics.retried(&cluster.name);
                    backoff(attempt).await;
                }
                req = back;
            }
            Sent::Failed(err, local) => {
                tracing::debug!(%err, upstream = %ep, "upstream request failed");
                let (flag, details) = classify_reset(&err);
                let refused = is_refused_stream(&err);
                if refused
                    && !last
                    && let Some(replay) = &replay
                {
                    conn.shared.metrics.retried(&cluster.name);
                    req = replay.request();
                    backoff(attempt).await;
                    continue;
                }
                done.upstream_local = local;
                if refused && replay.is_some() {
                    done.flags.insert(ResponseFlags::URX);
                }
                return Ok(local_reply(
                    done,
                    StatusCode::SERVICE_UNAVAILABLE,
                    flag,
                    details,
                    BODY_TERMINATION,
                ));
            }
        }
    }
    Ok(local_reply(
        done,
        StatusCode::SERVICE_UNAVAILABLE,
        ResponseFlags::UF | ResponseFlags::URX,
        "upstream_reset_before_response_started{connection_failure}",
        BODY_CONNECT_FAILURE,
    ))
}

/// Istio's default `retryOn` for a response: `retriable-status-codes` (503),
/// `unavailable` (gRPC 14) and `cancelled` (gRPC 1). `connect-failure` and `refused-stream`
/// are decided where the attempt failed.
fn retriable_response(status: u16, grpc_status: Option<&[u8]>) -> bool {
    status == 503 || matches!(grpc_status, Some(b"14" | b"1"))
}

/// Envoy's default retry back-off: the n-th retry waits a random time up to
/// `(2^n - 1) x 25 ms`, at most 250 ms.
fn retry_backoff(retry: u32, unit: f64) -> Duration {
    const BASE: Duration = Duration::from_millis(25);
    const MAX: Duration = Duration::from_millis(250);
    let factor = (1u32 << retry.min(8)) - 1;
    (BASE * factor).min(MAX).mul_f64(unit.clamp(0.0, 1.0))
}

async fn backoff(attempt: usize) {
    tokio::time::sleep(retry_backoff(attempt as u32 + 1, fastrand::f64())).await;
}

/// An HTTP/2 stream the upstream refused (`REFUSED_STREAM`): it was not processed.
fn is_refused_stream(err: &hyper::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_remote() && h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = e.source();
    }
    false
}

/// The head of a bodiless request, kept to send it again.
struct Replay {
    method: Method,
    uri: http::Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    fn of(req: &Request<ReqBody>) -> Self {
        Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        }
    }

    fn request(&self) -> Request<ReqBody> {
        let mut req = Request::new(ReqBody::empty());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

fn classify_reset(err: &hyper::Error) -> (ResponseFlags, &'static str) {
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>()
            && h2.is_reset()
            && h2.is_remote()
        {
            return (
                ResponseFlags::UR,
                "upstream_reset_before_response_started{remote_reset}",
            );
        }
        source = e.source();
    }
    (
        ResponseFlags::UC,
        "upstream_reset_before_response_started{connection_termination}",
    )
}

/// Builds the downstream response from the upstream one.
fn respond(
    mut done: Completion,
    mut resp: Response<Incoming>,
    h1: Option<H1>,
    downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<RespBody> {
    let conn = done.conn.clone();
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if !conn.h2 && !switching {
        strip_hop_by_hop(resp.headers_mut(), false);
    }
    let headers = resp.headers_mut();
    if let Some(ms) = done.upstream_time {
        headers.insert(X_ENVOY_UPSTREAM_SERVICE_TIME.clone(), HeaderValue::from(ms));
    }
    headers.insert(header::SERVER, HeaderValue::from_static("envoy"));
    if conn.inbound && !conn.h2 && !switching && conn.shared.inbound_drain.is_cancelled() {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    done.status = resp.status().as_u16();
    done.details = Some("via_upstream");
    if switching {
        if let Some(down) = downstream_upgrade {
            let up = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                let (Ok(down), Ok(up)) = (down.await, up.await) else {
                    return;
                };
                let _ =
                    tokio::io::copy_bidirectional(&mut TokioIo::new(down), &mut TokioIo::new(up))
                        .await;
            });
        }
    } else {
        done.h1 = h1;
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(
        parts,
        RespBody {
            inner: RespInner::Upstream(body),
            done: Some(done),
        },
    )
}

/// Envoy's own answer (no upstream response).
fn local_reply(
    mut done: Completion,
    status: StatusCode,
    flags: ResponseFlags,
    details: &'static str,
    body: &'static str,
) -> Response<RespBody> {
    done.status = status.as_u16();
    done.flags.insert(flags);
    done.details = Some(details);
    let inbound_draining = done.conn.inbound && done.conn.shared.inbound_drain.is_cancelled();
    let h2 = done.conn.h2;
    let mut resp = Response::new(RespBody {
        inner: RespInner::Local((!body.is_empty()).then(|| Bytes::from_static(body.as_bytes()))),
        done: Some(done),
    });
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if !body.is_empty() {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    headers.insert(header::SERVER, HeaderValue::from_static("envoy"));
    if inbound_draining && !h2 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Removes connection-scoped headers that must not be forwarded.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if !keep_upgrade {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
    if headers.contains_key(&KEEP_ALIVE) {
        headers.remove(&KEEP_ALIVE);
    }
    if headers.contains_key(&PROXY_CONNECTION) {
        headers.remove(&PROXY_CONNECTION);
    }
}

/// A random (version 4) UUID, Envoy's `x-request-id`.
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = fastrand::u128(..).to_be_bytes();
    // Version 4, variant 10xx.
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut out = [0u8; 36];
    let mut at = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[at] = b'-';
            at += 1;
        }
        out[at] = HEX[usize::from(b >> 4)];
        out[at + 1] = HEX[usize::from(b & 0xf)];
        at += 2;
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

enum Sent {
    Response(Response<Incoming>, SocketAddr, Option<H1>),
    /// The TCP connection could not be made; the request comes back for a retry.
    ConnectFailed(Request<ReqBody>),
    /// Failed after the request was handed to a connection.
    Failed(hyper::Error, Option<SocketAddr>),
}

/// Sends on a pooled connection; a stale one that hands the request back is replaced.
async fn send(key: Key, h2: bool, mut req: Request<ReqBody>, timeout: Duration) -> Sent {
    const STALE_TRIES: usize = 3;
    for i in 0..=STALE_TRIES {
        let reuse = i < STALE_TRIES;
        if h2 {
            let (conn, fresh) = match upstream::get_h2(key).filter(|_| reuse) {
                Some(c) => (c, false),
                None => match upstream::connect_h2(key, timeout).await {
                    Ok(c) => (c, true),
                    Err(CheckoutError::Connect(_)) => return Sent::ConnectFailed(req),
                    Err(CheckoutError::Handshake(e)) => return Sent::Failed(e, None),
                },
            };
            let mut tx = conn.tx.clone();
            if let Err(e) = tx.ready().await {
                upstream::drop_h2(key);
                if fresh {
                    return Sent::Failed(e, Some(conn.local));
                }
                continue;
            }
            match tx.try_send_request(req).await {
                Ok(resp) => return Sent::Response(resp, conn.local, None),
                Err(mut e) => match e.take_message() {
                    Some(back) if !fresh => {
                        req = back;
                        upstream::drop_h2(key);
                    }
                    _ => return Sent::Failed(e.into_error(), Some(conn.local)),
                },
            }
        } else {
            let (mut conn, fresh) = match upstream::take_h1(key).filter(|_| reuse) {
                Some(c) => (c, false),
                None => match upstream::connect_h1(key, timeout).await {
                    Ok(c) => (c, true),
                    Err(CheckoutError::Connect(_)) => return Sent::ConnectFailed(req),
                    Err(CheckoutError::Handshake(e)) => return Sent::Failed(e, None),
                },
            };
            if let Err(e) = conn.tx.ready().await {
                if fresh {
                    return Sent::Failed(e, Some(conn.local));
                }
                continue;
            }
            match conn.tx.try_send_request(req).await {
                Ok(resp) => {
                    let local = conn.local;
                    return Sent::Response(resp, local, Some(conn));
                }
                Err(mut e) => match e.take_message() {
                    Some(back) if !fresh => req = back,
                    _ => return Sent::Failed(e.into_error(), Some(conn.local)),
                },
            }
        }
    }
    // Unreachable in practice: the last round always uses a fresh connection.
    Sent::ConnectFailed(req)
}

/// What the access log needs from the request, captured before it goes upstream. The
/// clones share the parsed buffers, so this allocates nothing.
#[derive(Debug)]
struct RequestInfo {
    method: Method,
    path: Option<http::uri::PathAndQuery>,
    version: Version,
    xff: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
    host: Option<HeaderValue>,
    authority: Option<http::uri::Authority>,
}

impl RequestInfo {
    fn capture<B>(req: &Request<B>) -> Self {
        let h = req.headers();
        Self {
            method: req.method().clone(),
            path: req.uri().path_and_query().cloned(),
            version: req.version(),
            xff: h.get(&X_FORWARDED_FOR).cloned(),
            user_agent: h.get(header::USER_AGENT).cloned(),
            request_id: h.get(&X_REQUEST_ID).cloned(),
            host: h.get(header::HOST).cloned(),
            authority: req.uri().authority().cloned(),
        }
    }
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// Everything known about a request when it finishes; emits the access-log line and the
/// metrics exactly once, also when the request is abandoned (dropped).
pub struct Completion {
    conn: Arc<HttpConn>,
    start: Instant,
    wall: Option<SystemTime>,
    info: Option<RequestInfo>,
    protocol: RequestProtocol,
    cluster: Option<Arc<Cluster>>,
    route: Option<&'static str>,
    status: u16,
    flags: ResponseFlags,
    details: Option<&'static str>,
    upstream_host: Option<SocketAddr>,
    upstream_local: Option<SocketAddr>,
    upstream_time: Option<u64>,
    req_bytes: Option<Arc<AtomicU64>>,
    bytes_sent: u64,
    h1: Option<H1>,
    emitted: bool,
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completion")
            .field("status", &self.status)
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}

impl Completion {
    fn finish(&mut self, clean: bool) {
        if self.emitted {
            return;
        }
        self.emitted = true;
        let shared = self.conn.shared.clone();
        if let Some(h1) = self.h1.take()
            && clean
        {
            upstream::put_h1(h1);
        }
        let elapsed = self.start.elapsed();
        let peer = match &self.cluster {
            Some(c) => c.peer.clone(),
            None => shared.blackhole.peer.clone(),
        };
        shared.metrics.record_request(
            &RequestLabels {
                peer,
                protocol: self.protocol,
                code: self.status,
                flags: self.flags,
            },
            elapsed.as_secs_f64() * 1000.0,
        );
        let Some(log) = &shared.log else { return };
        let info = self.info.as_ref();
        fn hv(v: Option<&HeaderValue>) -> Option<&str> {
            v.and_then(|v| v.to_str().ok())
        }
        let authority = info
            .and_then(|i| hv(i.host.as_ref()).or_else(|| i.authority.as_ref().map(|a| a.as_str())));
        let entry = Entry {
            start: self.wall,
            method: info.map(|i| i.method.as_str()),
            path: info.and_then(|i| i.path.as_ref().map(|p| p.as_str())),
            protocol: info.map(|i| version_str(i.version)),
            response_code: self.status,
            response_flags: self.flags,
            response_code_details: self.details,
            connection_termination_details: None,
            upstream_transport_failure_reason: None,
            bytes_received: self
                .req_bytes
                .as_ref()
                .map_or(0, |c| c.load(Ordering::Relaxed)),
            bytes_sent: self.bytes_sent,
            duration_ms: Some(elapsed.as_millis() as u64),
            upstream_service_time: self.upstream_time,
            x_forwarded_for: info.and_then(|i| hv(i.xff.as_ref())),
            user_agent: info.and_then(|i| hv(i.user_agent.as_ref())),
            request_id: info.and_then(|i| hv(i.request_id.as_ref())),
            authority,
            upstream_host: self.upstream_host,
            upstream_cluster: self.cluster.as_ref().map(|c| &*c.name),
            upstream_local_address: self.upstream_local,
            downstream_local_address: Some(self.conn.local),
            downstream_remote_address: Some(self.conn.remote),
            requested_server_name: None,
            route_name: self.route,
        };
        log.log(&entry);
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.emitted {
            // Dropped before the response was complete: the client went away.
            self.flags.insert(ResponseFlags::DC);
            if self.details.is_none() {
                self.details = Some("downstream_remote_disconnect");
            }
            self.finish(false);
        }
    }
}

enum RespInner {
    Upstream(Incoming),
    Local(Option<Bytes>),
}

/// The response body sent downstream; finishes the request's [`Completion`] at its end.
pub struct RespBody {
    inner: RespInner,
    done: Option<Completion>,
}

impl RespBody {
    fn finish(&mut self, clean: bool) {
        if let Some(mut done) = self.done.take() {
            done.finish(clean);
        }
    }

    fn count(&mut self, n: usize) {
        if let Some(done) = self.done.as_mut() {
            done.bytes_sent += n as u64;
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        match &mut this.inner {
            RespInner::Local(data) => {
                let frame = data.take();
                if let Some(d) = &frame {
                    let n = d.len();
                    this.count(n);
                }
                this.finish(true);
                Poll::Ready(frame.map(|d| Ok(Frame::data(d))))
            }
            RespInner::Upstream(body) => {
                let polled = ready!(Pin::new(&mut *body).poll_frame(cx));
                let end = body.is_end_stream();
                match polled {
                    Some(Ok(frame)) => {
                        if let Some(d) = frame.data_ref() {
                            let n = d.len();
                            this.count(n);
                        }
                        if end {
                            this.finish(true);
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Some(Err(err)) => {
                        if let Some(done) = this.done.as_mut() {
                            done.flags.insert(ResponseFlags::UC);
                            done.details = Some(
                                "upstream_reset_after_response_started{connection_termination}",
                            );
                        }
                        this.finish(false);
                        Poll::Ready(Some(Err(err)))
                    }
                    None => {
                        this.finish(true);
                        Poll::Ready(None)
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            RespInner::Upstream(b) => b.is_end_stream(),
            RespInner::Local(d) => d.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            RespInner::Upstream(b) => b.size_hint(),
            RespInner::Local(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

impl Drop for RespBody {
    fn drop(&mut self) {
        if self.done.is_some() {
            let complete = self.is_end_stream();
            if !complete && let Some(done) = self.done.as_mut() {
                done.flags.insert(ResponseFlags::DC);
            }
            self.finish(complete);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_default_retry_conditions() {
        assert!(retriable_response(503, None));
        assert!(retriable_response(200, Some(b"14")));
        assert!(retriable_response(200, Some(b"1")));
        assert!(!retriable_response(200, Some(b"0")));
        assert!(!retriable_response(502, None));
        assert!(!retriable_response(500, None));
        assert!(!retriable_response(200, None));
    }

    #[test]
    fn retry_backoff_is_envoys_jittered_exponential() {
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(retry_backoff(1, 1.0)), 25);
        assert_eq!(ms(retry_backoff(2, 1.0)), 75);
        assert_eq!(ms(retry_backoff(3, 1.0)), 175);
        assert_eq!(ms(retry_backoff(4, 1.0)), 250, "capped at 10x the base");
        assert_eq!(ms(retry_backoff(40, 1.0)), 250);
        assert_eq!(ms(retry_backoff(2, 0.0)), 0);
        assert_eq!(ms(retry_backoff(2, 0.5)), 37);
    }

    #[test]
    fn request_ids_are_v4_uuids() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 36);
        let parts: Vec<&str> = s.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'), "{s}");
        assert!(
            matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'),
            "{s}"
        );
        assert!(s.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
    }

    #[test]
    fn hop_by_hop_headers_are_removed_unless_upgrading() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(KEEP_ALIVE.clone(), HeaderValue::from_static("timeout=5"));
        h.insert(header::HOST, HeaderValue::from_static("a"));
        let mut kept = h.clone();
        strip_hop_by_hop(&mut kept, true);
        assert!(kept.contains_key(header::UPGRADE));
        assert!(!kept.contains_key(&KEEP_ALIVE));
        strip_hop_by_hop(&mut h, false);
        assert!(!h.contains_key(header::CONNECTION));
        assert!(!h.contains_key(header::UPGRADE));
        assert!(h.contains_key(header::HOST));
    }

    #[test]
    fn local_reply_bodies_have_envoy_sizes() {
        // The sizes Envoy's access logs show for these replies.
        assert_eq!(BODY_CONNECT_FAILURE.len(), 91);
        assert_eq!(BODY_NO_HEALTHY.len(), 19);
    }
}
