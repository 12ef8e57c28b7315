//! Service discovery between the control plane and the sidecars.
//!
//! Protocol (plain HTTP/1.1, no TLS): the client sends `GET /v1/discovery`; the server answers
//! `200` with `content-type: application/x-ndjson` and a body that never ends by itself. Each
//! line is one complete [`Snapshot`] of the cluster's Services and their ready endpoints. The
//! first line is sent as soon as the server has listed both Services and EndpointSlices;
//! another full snapshot follows every change. Empty lines are keep-alives and carry no
//! meaning. Snapshots carry an increasing `version` so a client can tell a repeat.
//!
//! [`serve`] is the control-plane end (kube-runtime watchers on Services and EndpointSlices
//! in all namespaces); [`run_client`] is the sidecar end (reconnects with backoff and keeps the
//! last view while disconnected).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The path both ends use.
pub const PATH: &str = "/v1/discovery";
/// Label tying an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Keep-alive interval on an idle stream.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// Changes arriving within this window are sent as one snapshot.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// A line longer than this is refused rather than buffered.
const MAX_LINE: usize = 64 << 20;

/// The whole view a sidecar needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u64,
    pub services: Vec<ServiceView>,
}

/// One Service with its ready endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    pub name: String,
    pub namespace: String,
    /// `spec.clusterIPs` (or `clusterIP`); empty for headless and ExternalName Services.
    #[serde(rename = "clusterIPs", default)]
    pub cluster_ips: Vec<String>,
    #[serde(default)]
    pub ports: Vec<PortView>,
    #[serde(default)]
    pub endpoints: Vec<EndpointView>,
}

/// A Service port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortView {
    /// Empty for the single unnamed port a Service may have.
    #[serde(default)]
    pub name: String,
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

fn tcp() -> String {
    "TCP".to_owned()
}

/// A ready endpoint address with its ports keyed by Service port name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointView {
    pub ip: String,
    pub ports: BTreeMap<String, u16>,
}

/// Errors of the discovery server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("encoding a snapshot: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Builds the snapshot of the given objects (pure; sorted by namespace and name).
pub fn build_snapshot(
    version: u64,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
) -> Snapshot {
    let mut by_service: BTreeMap<(String, String), Vec<EndpointView>> = BTreeMap::new();
    for slice in slices {
        let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        if slice.address_type == "FQDN" {
            continue;
        }
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        let ports: BTreeMap<String, u16> = slice
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| {
                let port = u16::try_from(p.port?).ok()?;
                Some((p.name.clone().unwrap_or_default(), port))
            })
            .collect();
        let out = by_service.entry((ns, svc.clone())).or_default();
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            for ip in &ep.addresses {
                out.push(EndpointView {
                    ip: ip.clone(),
                    ports: ports.clone(),
                });
            }
        }
    }
    let mut services: Vec<ServiceView> = services
        .iter()
        .filter_map(|svc| {
            let name = svc.metadata.name.clone()?;
            let namespace = svc.metadata.namespace.clone().unwrap_or_default();
            let spec = svc.spec.as_ref()?;
            let mut cluster_ips: Vec<String> = match &spec.cluster_ips {
                Some(ips) if !ips.is_empty() => ips.clone(),
                _ => spec.cluster_ip.iter().cloned().collect(),
            };
            cluster_ips.retain(|ip| !ip.is_empty() && ip != "None");
            let ports = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(PortView {
                        name: p.name.clone().unwrap_or_default(),
                        port: u16::try_from(p.port).ok()?,
                        protocol: p.protocol.clone().unwrap_or_else(tcp),
                        app_protocol: p.app_protocol.clone(),
                    })
                })
                .collect();
            let mut endpoints = by_service
                .remove(&(namespace.clone(), name.clone()))
                .unwrap_or_default();
            endpoints.sort_by(|a, b| a.ip.cmp(&b.ip).then_with(|| a.ports.cmp(&b.ports)));
            endpoints.dedup();
            Some(ServiceView {
                name,
                namespace,
                cluster_ips,
                ports,
                endpoints,
            })
        })
        .collect();
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Snapshot { version, services }
}

/// Serves the discovery stream on `listener` until `shutdown` completes. Watches Services
/// and EndpointSlices in all namespaces through `client`.
pub async fn serve(
    client: kube::Client,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let (tx, rx) = watch::channel::<Option<Bytes>>(None);
    let stop = CancellationToken::new();
    let watch_task = tokio::spawn(watch_cluster(client, tx, stop.clone()));
    let result = serve_snapshots(listener, rx, shutdown, stop.clone()).await;
    stop.cancel();
    let _ = watch_task.await;
    result
}

/// Serves whatever snapshots `snapshots` carries (each value one encoded line). Split from
/// [`serve`] so the HTTP side can be driven without a cluster.
pub async fn serve_snapshots(
    listener: TcpListener,
    snapshots: watch::Receiver<Option<Bytes>>,
    shutdown: impl Future<Output = ()> + Send,
    stop: CancellationToken,
) -> Result<(), Error> {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => break,
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    tracing::debug!(%err, "discovery accept");
                    if let Some(pause) = accept_pause(&err) {
                        tokio::time::sleep(pause).await;
                    }
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let rx = snapshots.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let rx = rx.clone();
                let stop = stop.clone();
                async move { Ok::<_, Infallible>(handle_discovery(req, rx, stop)) }
            });
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%err, "discovery connection");
            }
        });
    }
    stop.cancel();
    Ok(())
}

/// How long to pause after a failed `accept`: not at all when only that connection failed,
/// a moment when the process is out of resources (descriptors, memory), so the loop does
/// not spin while they are released.
pub(crate) fn accept_pause(err: &std::io::Error) -> Option<Duration> {
    use std::io::ErrorKind::*;
    match err.kind() {
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock => None,
        _ => Some(Duration::from_millis(50)),
    }
}

type DiscoveryBody = BoxBody<Bytes, Infallible>;

fn handle_discovery(
    req: Request<Incoming>,
    rx: watch::Receiver<Option<Bytes>>,
    stop: CancellationToken,
) -> Response<DiscoveryBody> {
    if req.uri().path() != PATH {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::GET {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    let stream = futures::stream::unfold((rx, true), move |(mut rx, first)| {
        let stop = stop.clone();
        async move {
            if first {
                // Wait for the first complete view.
                let line = tokio::select! {
                    () = stop.cancelled() => return None,
                    r = rx.wait_for(Option::is_some) => r.ok()?.clone()?,
                };
                rx.mark_unchanged();
                return Some((Ok(Frame::data(line)), (rx, false)));
            }
            let frame = tokio::select! {
                () = stop.cancelled() => return None,
                changed = rx.changed() => {
                    changed.ok()?;
                    let line = rx.borrow_and_update().clone()?;
                    Frame::data(line)
                }
                () = tokio::time::sleep(KEEPALIVE) => Frame::data(Bytes::from_static(b"\n")),
            };
            Some((Ok(frame), (rx, false)))
        }
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-ndjson"),
    );
    resp
}

fn plain(status: StatusCode, body: &'static str) -> Response<DiscoveryBody> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *resp.status_mut() = status;
    resp
}

/// Watches Services and EndpointSlices and publishes an encoded snapshot line on each change
/// once both have been listed.
async fn watch_cluster(
    client: kube::Client,
    tx: watch::Sender<Option<Bytes>>,
    stop: CancellationToken,
) {
    let (svc_store, svc_writer) = reflector::store::<Service>();
    let (eps_store, eps_writer) = reflector::store::<EndpointSlice>();
    let svc_events = reflector(
        svc_writer,
        watcher(
            kube::Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|e| e.map(|ev| matches!(ev, watcher::Event::InitDone)));
    let eps_events = reflector(
        eps_writer,
        watcher(
            kube::Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|e| e.map(|ev| matches!(ev, watcher::Event::InitDone)));
    let mut events = futures::stream::select(
        svc_events.map(|e| (true, e)).boxed(),
        eps_events.map(|e| (false, e)).boxed(),
    );
    let (mut svc_listed, mut eps_listed) = (false, false);
    let mut version = 0u64;
    let mut last: Option<Vec<ServiceView>> = None;
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return,
            n = events.next() => n,
        };
        let Some((is_svc, event)) = next else { return };
        match event {
            Ok(init_done) => {
                if init_done {
                    if is_svc {
                        svc_listed = true;
                    } else {
                        eps_listed = true;
                    }
                }
            }
            Err(err) => {
                tracing::warn!(%err, "discovery watch");
                continue;
            }
        }
        if !(svc_listed && eps_listed) {
            continue;
        }
        // Fold a burst of changes into one snapshot.
        let deadline = tokio::time::sleep(DEBOUNCE);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => break,
                () = stop.cancelled() => return,
                n = events.next() => match n {
                    Some((_, Err(err))) => tracing::warn!(%err, "discovery watch"),
                    Some(_) => {}
                    None => return,
                },
            }
        }
        let mut snap = build_snapshot(0, &svc_store.state(), &eps_store.state());
        // The version only counts real changes.
        if last.as_ref() == Some(&snap.services) {
            continue;
        }
        version += 1;
        snap.version = version;
        match encode_line(&snap) {
            Ok(line) => {
                tx.send_replace(Some(line));
                last = Some(snap.services);
            }
            Err(err) => tracing::warn!(error = %Error::Encode(err), "discovery"),
        }
    }
}

/// One line of the stream: the snapshot as JSON and a newline.
pub fn encode_line(snapshot: &Snapshot) -> Result<Bytes, serde_json::Error> {
    let mut out = serde_json::to_vec(snapshot)?;
    out.push(b'\n');
    Ok(Bytes::from(out))
}

/// Client-side reconnect delays.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

/// Why one discovery connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("discovery HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("discovery server answered {0}")]
    Status(StatusCode),
    #[error("discovery stream ended")]
    Ended,
    #[error("discovery line of {0} bytes is too long")]
    LineTooLong(usize),
    #[error("decoding a discovery snapshot: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Follows the discovery stream at `address` (`host:port`, resolved through the system
/// resolver on each attempt) and calls `on_snapshot` for every snapshot, until `shutdown`.
/// Reconnects with exponential backoff; the caller keeps its last view meanwhile.
pub async fn run_client<F>(
    address: String,
    backoff: Backoff,
    mut on_snapshot: F,
    shutdown: CancellationToken,
) where
    F: FnMut(Snapshot) + Send,
{
    let mut delay = backoff.initial;
    loop {
        let mut got_one = false;
        let mut deliver = |s| {
            got_one = true;
            on_snapshot(s);
        };
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            r = follow(&address, &mut deliver) => r,
        };
        if got_one {
            delay = backoff.initial;
        }
        match result {
            Ok(()) => tracing::info!(%address, "discovery stream ended; reconnecting"),
            Err(err) => tracing::warn!(%address, %err, "discovery; reconnecting"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(backoff.max);
    }
}

async fn follow(
    address: &str,
    on_snapshot: &mut (dyn FnMut(Snapshot) + Send),
) -> Result<(), ClientError> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|source| ClientError::Connect {
            addr: address.to_owned(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn_task = tokio::spawn(conn);
    let req = Request::get(PATH)
        .header(http::header::HOST, address)
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|_| ClientError::Ended)?;
    let result = async {
        let resp = tx.send_request(req).await?;
        if resp.status() != StatusCode::OK {
            return Err(ClientError::Status(resp.status()));
        }
        let mut body = resp.into_body();
        let mut pending = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                let line = pending.split_to(nl + 1);
                let line = &line[..nl];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                on_snapshot(serde_json::from_slice(line)?);
            }
            if pending.len() > MAX_LINE {
                return Err(ClientError::LineTooLong(pending.len()));
            }
        }
        Err(ClientError::Ended)
    }
    .await;
    conn_task.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(ns: &str, name: &str, ip: &str, ports: &[(&str, i32)]) -> Arc<Service> {
        Arc::new(Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p)| ServicePort {
                            name: Some((*n).into()),
                            port: *p,
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn slice(
        ns: &str,
        name: &str,
        service: &str,
        ports: &[(&str, i32)],
        eps: &[(&str, Option<bool>)],
    ) -> Arc<EndpointSlice> {
        Arc::new(EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: Some([(SERVICE_NAME_LABEL.to_owned(), service.to_owned())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| EndpointPort {
                        name: Some((*n).into()),
                        port: Some(*p),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            endpoints: eps
                .iter()
                .map(|(ip, ready)| Endpoint {
                    addresses: vec![(*ip).into()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
        })
    }

    #[test]
    fn snapshot_joins_slices_to_services_and_keeps_ready_endpoints() {
        let services = [
            svc("default", "httpbin", "10.96.0.5", &[("http", 8000)]),
            svc("apps", "api", "None", &[("grpc", 9000)]),
        ];
        let slices = [
            slice(
                "default",
                "httpbin-a",
                "httpbin",
                &[("http", 8080)],
                &[
                    ("10.244.0.13", Some(true)),
                    ("10.244.0.14", None),
                    ("10.244.0.15", Some(false)),
                ],
            ),
            // Same name in another namespace must not leak into default/httpbin.
            slice(
                "other",
                "httpbin-x",
                "httpbin",
                &[("http", 1)],
                &[("10.9.9.9", None)],
            ),
            slice(
                "apps",
                "api-1",
                "api",
                &[("grpc", 9090)],
                &[("10.244.1.2", Some(true))],
            ),
        ];
        let snap = build_snapshot(7, &services, &slices);
        assert_eq!(snap.version, 7);
        let names: Vec<_> = snap
            .services
            .iter()
            .map(|s| format!("{}/{}", s.namespace, s.name))
            .collect();
        assert_eq!(names, ["apps/api", "default/httpbin"]);
        let api = &snap.services[0];
        assert!(api.cluster_ips.is_empty(), "headless has no VIP");
        let httpbin = &snap.services[1];
        assert_eq!(httpbin.cluster_ips, ["10.96.0.5"]);
        assert_eq!(httpbin.ports[0].port, 8000);
        let ips: Vec<_> = httpbin.endpoints.iter().map(|e| e.ip.as_str()).collect();
        assert_eq!(ips, ["10.244.0.13", "10.244.0.14"]);
        assert_eq!(httpbin.endpoints[0].ports["http"], 8080);
    }

    #[test]
    fn snapshot_json_round_trips_with_camel_case_keys() {
        let snap = build_snapshot(1, &[svc("default", "a", "10.96.0.1", &[("http", 80)])], &[]);
        let text = serde_json::to_string(&snap).unwrap();
        assert!(text.contains("\"clusterIPs\":[\"10.96.0.1\"]"), "{text}");
        let back: Snapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back, snap);
    }
}
