//! Both ends of the discovery stream: the control-plane server over a kube client (talking
//! to a small fake API server), and the sidecar's client with reconnects.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use proxy::discovery::{self, Backoff, Snapshot};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// Just enough of the Kubernetes API for kube-runtime watchers: list and watch of
/// Services and EndpointSlices.
struct FakeApi {
    services: Mutex<Vec<Value>>,
    slices: Mutex<Vec<Value>>,
    events: broadcast::Sender<(&'static str, Value)>,
}

impl FakeApi {
    fn kind_of(path: &str) -> Option<&'static str> {
        match path {
            "/api/v1/services" => Some("services"),
            "/apis/discovery.k8s.io/v1/endpointslices" => Some("endpointslices"),
            _ => None,
        }
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
        let Some(kind) = Self::kind_of(req.uri().path()) else {
            let mut r = Response::new(Full::new(Bytes::from_static(b"{}")).boxed());
            *r.status_mut() = http::StatusCode::NOT_FOUND;
            return Ok(r);
        };
        let query = req.uri().query().unwrap_or("");
        if query.contains("watch=true") || query.contains("watch=1") {
            let rx = self.events.subscribe();
            let stream = futures::stream::unfold(rx, move |mut rx| async move {
                loop {
                    match rx.recv().await {
                        Ok((k, obj)) if k == kind => {
                            let mut line =
                                serde_json::to_vec(&json!({"type": "MODIFIED", "object": obj}))
                                    .unwrap();
                            line.push(b'\n');
                            return Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line))), rx));
                        }
                        Ok(_) => continue,
                        Err(_) => return None,
                    }
                }
            });
            return Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))));
        }
        let (list_kind, api_version, items) = match kind {
            "services" => ("ServiceList", "v1", self.services.lock().unwrap().clone()),
            _ => (
                "EndpointSliceList",
                "discovery.k8s.io/v1",
                self.slices.lock().unwrap().clone(),
            ),
        };
        let body = json!({
            "apiVersion": api_version,
            "kind": list_kind,
            "metadata": {"resourceVersion": "1"},
            "items": items,
        });
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
        r.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        Ok(r)
    }
}

async fn fake_api(services: Vec<Value>, slices: Vec<Value>) -> (SocketAddr, Arc<FakeApi>) {
    let api = Arc::new(FakeApi {
        services: Mutex::new(services),
        slices: Mutex::new(slices),
        events: broadcast::channel(16).0,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = api.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let api = served.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| api.clone().handle(req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, api)
}

fn service_json(name: &str, ip: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
        "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"name": "http", "port": port, "protocol": "TCP", "targetPort": 8080}]}
    })
}

fn slice_json(name: &str, service: &str, ips: &[(&str, bool)]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "2",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": ips.iter().map(|(ip, ready)| json!({"addresses": [ip], "conditions": {"ready": ready}})).collect::<Vec<_>>(),
    })
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Snapshot>) -> Snapshot {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a snapshot in time")
        .expect("client running")
}

fn spawn_client(addr: SocketAddr, stop: CancellationToken) -> mpsc::UnboundedReceiver<Snapshot> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(discovery::run_client(
        addr.to_string(),
        Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
        },
        move |s| {
            let _ = tx.send(s);
        },
        stop,
    ));
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_services_and_ready_endpoints_from_the_api_and_follows_changes() {
    let (api_addr, api) = fake_api(
        vec![service_json("httpbin", "10.96.0.5", 8000)],
        vec![slice_json(
            "httpbin-1",
            "httpbin",
            &[("10.244.0.13", true), ("10.244.0.14", false)],
        )],
    )
    .await;
    let config = kube::Config::new(format!("http://{api_addr}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server_stop = stop.clone();
    tokio::spawn(async move {
        discovery::serve(client, listener, server_stop.cancelled_owned())
            .await
            .unwrap();
    });

    let mut rx = spawn_client(addr, stop.clone());
    let first = next(&mut rx).await;
    assert_eq!(first.version, 1);
    assert_eq!(first.services.len(), 1);
    let svc = &first.services[0];
    assert_eq!(
        (svc.name.as_str(), svc.namespace.as_str()),
        ("httpbin", "default")
    );
    assert_eq!(svc.cluster_ips, ["10.96.0.5"]);
    assert_eq!(svc.ports[0].port, 8000);
    let ips: Vec<&str> = svc.endpoints.iter().map(|e| e.ip.as_str()).collect();
    assert_eq!(ips, ["10.244.0.13"], "not-ready endpoints are left out");
    assert_eq!(svc.endpoints[0].ports["http"], 8080);

    // The endpoint becomes ready: a new snapshot follows.
    let _ = api.events.send((
        "endpointslices",
        slice_json(
            "httpbin-1",
            "httpbin",
            &[("10.244.0.13", true), ("10.244.0.14", true)],
        ),
    ));
    let second = next(&mut rx).await;
    assert_eq!(second.version, 2);
    assert_eq!(second.services[0].endpoints.len(), 2);

    // A plain HTTP client sees newline-delimited JSON.
    let got = common::get(addr, "d", "/nope").await;
    assert_eq!(got.status, 404);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reconnects_and_keeps_following() {
    let first = common::FakeDiscovery::start().await;
    let addr = first.addr;
    first.publish(vec![common::service(
        "default",
        "a",
        "10.96.0.1",
        "http",
        80,
        &[],
    )]);
    let stop = CancellationToken::new();
    let mut rx = spawn_client(addr, stop.clone());
    let snap = next(&mut rx).await;
    assert_eq!(snap.services[0].name, "a");

    // The control plane goes away and comes back on the same address.
    first.stop();
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let (tx, srx) = tokio::sync::watch::channel(None);
    tokio::spawn(discovery::serve_snapshots(
        listener,
        srx,
        std::future::pending(),
        CancellationToken::new(),
    ));
    let line = discovery::encode_line(&Snapshot {
        version: 7,
        services: vec![common::service(
            "default",
            "b",
            "10.96.0.2",
            "http",
            80,
            &[],
        )],
    })
    .unwrap();
    tx.send_replace(Some(line));
    let snap = next(&mut rx).await;
    assert_eq!(snap.version, 7);
    assert_eq!(snap.services[0].name, "b");
    stop.cancel();
}

#[tokio::test]
async fn stream_starts_with_the_current_snapshot() {
    let d = common::FakeDiscovery::start().await;
    d.publish(vec![]);
    let stream = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = tx
        .send_request(
            Request::get(discovery::PATH)
                .header("host", "d")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "application/x-ndjson"
    );
    let mut body = resp.into_body().into_data_stream();
    let chunk = tokio::time::timeout(Duration::from_secs(2), body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let line = std::str::from_utf8(&chunk).unwrap();
    assert!(line.ends_with('\n'));
    let snap: Snapshot = serde_json::from_str(line.trim_end()).unwrap();
    assert_eq!(snap.version, 1);
}
