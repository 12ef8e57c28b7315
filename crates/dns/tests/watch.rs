//! `dns::watch` against a fake API server behind `kube::Client`: the initial lists fill the
//! zone, and watch events change it.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dns::{ClusterDns, ServiceKind};
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{Value, json};
use support::{service, slice};
use tokio::sync::broadcast;

const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";

/// Lists what it was given, and streams watch events sent through `events`.
struct FakeApi {
    services: Value,
    slices: Value,
    service_events: broadcast::Sender<Bytes>,
    slice_events: broadcast::Sender<Bytes>,
    watches: AtomicUsize,
}

impl FakeApi {
    fn reply(&self, request: &Request<kube::client::Body>) -> Response<BoxBody<Bytes, Infallible>> {
        let path = request.uri().path();
        let watching = request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true"));
        let (list, events) = match path {
            SERVICES => (&self.services, &self.service_events),
            SLICES => (&self.slices, &self.slice_events),
            _ => {
                return Response::builder()
                    .status(StatusCode::NOT_FOUND)
                    .body(Full::new(Bytes::from_static(b"{}")).boxed())
                    .expect("response");
            }
        };
        if !watching {
            return Response::new(Full::new(Bytes::from(list.to_string())).boxed());
        }
        // Subscribe before counting, so an event sent after the count is not missed.
        let receiver = events.subscribe();
        self.watches.fetch_add(1, Ordering::SeqCst);
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            let line = receiver.recv().await.ok()?;
            Some((Ok::<_, Infallible>(Frame::data(line)), receiver))
        });
        Response::new(StreamBody::new(stream).boxed())
    }
}

fn object(value: impl serde::Serialize, resource_version: &str) -> Value {
    let mut value = serde_json::to_value(value).expect("json");
    value["metadata"]["resourceVersion"] = json!(resource_version);
    value
}

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": api_version,
           "metadata": {"resourceVersion": "10"}, "items": items})
}

fn event(kind: &str, object: Value) -> Bytes {
    Bytes::from(format!("{}\n", json!({"type": kind, "object": object})))
}

/// Polls until `check` holds for the zone's records, or fails after 10 s.
async fn eventually(dns: &ClusterDns, what: &str, check: impl Fn(&dns::Records) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if check(&dns.records()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; records: {:?}",
            dns.records()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn watch_keeps_the_zone_current() {
    let web = service("default", "web", "10.96.0.10", &[("http", 80)]);
    let db = service("shop", "db", "None", &[("sql", 5432)]);
    let db_slice = slice(
        "shop",
        "db",
        &[("10.244.0.7", Some(true), Some("db-0"))],
        ("sql", 5432),
    );
    let (service_events, _) = broadcast::channel(16);
    let (slice_events, _) = broadcast::channel(16);
    let api = Arc::new(FakeApi {
        services: list(
            "ServiceList",
            "v1",
            vec![object(&web, "5"), object(&db, "6")],
        ),
        slices: list(
            "EndpointSliceList",
            "discovery.k8s.io/v1",
            vec![object(&db_slice, "7")],
        ),
        service_events: service_events.clone(),
        slice_events: slice_events.clone(),
        watches: AtomicUsize::new(0),
    });
    let served = api.clone();
    let service_fn = tower::service_fn(move |request: Request<kube::client::Body>| {
        let reply = served.reply(&request);
        async move { Ok::<_, Infallible>(reply) }
    });
    let client = kube::Client::new(service_fn, "default");

    let dns = ClusterDns::new("cluster.local").expect("domain");
    let watching = tokio::spawn(dns::watch(client, dns.clone()));

    eventually(&dns, "the initial lists", |records| {
        records.service("default", "web").is_some()
            && records
                .service("shop", "db")
                .is_some_and(|db| db.endpoints.len() == 1)
    })
    .await;
    assert_eq!(
        dns.records().service("default", "web").unwrap().kind,
        ServiceKind::ClusterIp(vec!["10.96.0.10".parse().unwrap()])
    );

    // Both watches are open: changes now arrive as events.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while api.watches.load(Ordering::SeqCst) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "watches never opened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let api_svc = service("default", "api", "10.96.0.20", &[("grpc", 9000)]);
    service_events
        .send(event("ADDED", object(&api_svc, "11")))
        .expect("send");
    service_events
        .send(event("DELETED", object(&web, "12")))
        .expect("send");
    eventually(&dns, "api added and web deleted", |records| {
        records.service("default", "api").is_some() && records.service("default", "web").is_none()
    })
    .await;

    let grown = slice(
        "shop",
        "db",
        &[
            ("10.244.0.7", Some(true), Some("db-0")),
            ("10.244.0.8", Some(true), Some("db-1")),
        ],
        ("sql", 5432),
    );
    slice_events
        .send(event("MODIFIED", object(&grown, "13")))
        .expect("send");
    eventually(&dns, "the second db endpoint", |records| {
        records
            .service("shop", "db")
            .is_some_and(|db| db.endpoints.len() == 2)
    })
    .await;

    assert!(!watching.is_finished());
    watching.abort();
}
