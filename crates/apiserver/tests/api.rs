//! The API server on loopback (plain HTTP through `router`, and HTTPS with a bearer
//! token through `serve`), driven by the `kube` client as any Kubernetes client
//! would, plus raw requests where the wire shape itself is the point.

use std::sync::Arc;

use apiserver::{AppState, ServerConfig};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Config};
use serde_json::{Value, json};
use store::MemoryStore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

struct Harness {
    state: AppState,
    client: Client,
    stop: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The router on a loopback port (plain HTTP) with a kube client for it.
async fn start() -> Harness {
    let state = AppState::new(Arc::new(MemoryStore::new()));
    apiserver::bootstrap(&state).await.expect("seed namespaces");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let stop = CancellationToken::new();
    let app = apiserver::router(state.clone());
    let until = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { until.cancelled().await })
            .await;
    });
    let config = Config::new(format!("http://{addr}").parse().expect("uri"));
    let client = Client::try_from(config).expect("client");
    Harness {
        state,
        client,
        stop,
    }
}

/// One request straight through the router: status, content type and JSON body.
async fn raw(
    state: &AppState,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, String, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = match body {
        Some(b) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(serde_json::to_vec(&b).expect("json"))
        }
        None => Body::empty(),
    };
    let response = apiserver::router(state.clone())
        .oneshot(req.body(body).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let ct = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, ct, value)
}

fn pod(name: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "initContainers": [{"name": "proxy", "image": "tandem/proxy", "restartPolicy": "Always"}],
            "containers": [{"name": "main", "image": image}, {"name": "side", "image": "busybox:1.36"}]
        }
    }))
    .expect("pod")
}

fn api_error(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn create_get_list_and_defaults() {
    let h = start().await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let created = pods
        .create(&PostParams::default(), &pod("web", "nginx:1.27"))
        .await
        .expect("create");
    let meta = &created.metadata;
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    let rv: u64 = meta
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .expect("numeric resourceVersion");
    let spec = created.spec.as_ref().expect("spec");
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(
        spec.containers[0].image_pull_policy.as_deref(),
        Some("IfNotPresent")
    );
    let status = created.status.as_ref().expect("status");
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(status.qos_class.as_deref(), Some("BestEffort"));

    let got = pods.get("web").await.expect("get");
    assert_eq!(got, created);

    pods.create(&PostParams::default(), &pod("api", "nginx:1.27"))
        .await
        .expect("create second");
    let list = pods.list(&ListParams::default()).await.expect("list");
    let names: Vec<_> = list
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, ["api", "web"]);
    let list_rv: u64 = list
        .metadata
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .expect("list resourceVersion");
    assert!(list_rv > rv);

    let by_label = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("label selector");
    assert_eq!(by_label.items.len(), 1);
    let by_field = pods
        .list(&ListParams::default().fields("metadata.name!=web"))
        .await
        .expect("field selector");
    assert_eq!(by_field.items.len(), 1);
    assert_eq!(by_field.items[0].metadata.name.as_deref(), Some("api"));

    let everywhere: Api<Pod> = Api::all(h.client.clone());
    assert_eq!(
        everywhere
            .list(&ListParams::default())
            .await
            .expect("all namespaces")
            .items
            .len(),
        2
    );

    let err = api_error(
        pods.create(&PostParams::default(), &pod("web", "nginx"))
            .await
            .expect_err("duplicate"),
    );
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "AlreadyExists");
    assert_eq!(err.message, "pods \"web\" already exists");

    let err = api_error(pods.get("nope").await.expect_err("missing"));
    assert_eq!(err.code, 404);
    assert_eq!(err.message, "pods \"nope\" not found");

    let bad_selector = api_error(
        pods.list(&ListParams::default().fields("spec.bogus=1"))
            .await
            .expect_err("unsupported field"),
    );
    assert_eq!(bad_selector.code, 400);
}

#[tokio::test]
async fn generate_name_and_missing_namespace() {
    let h = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"generateName": "cfg-"}, "data": {"a": "b"}
    }))
    .expect("configmap");
    let created = cms
        .create(&PostParams::default(), &cm)
        .await
        .expect("create");
    let name = created.metadata.name.expect("generated name");
    assert!(name.starts_with("cfg-") && name.len() == 9, "{name}");

    let nowhere: Api<ConfigMap> = Api::namespaced(h.client.clone(), "ghost");
    let err = api_error(
        nowhere
            .create(&PostParams::default(), &cm)
            .await
            .expect_err("no namespace"),
    );
    assert_eq!(err.code, 404);
    assert_eq!(err.message, "namespaces \"ghost\" not found");

    let (code, _, body) = raw(
        &h.state,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        &[],
        Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "other"}})),
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        "the namespace of the provided object does not match the namespace sent on the request"
    );
}

#[tokio::test]
async fn patches_strategic_and_merge() {
    let h = start().await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    pods.create(&PostParams::default(), &pod("web", "nginx:1.26"))
        .await
        .expect("create");

    // What `kubectl apply` sends after an image change: containers merge by name.
    let smp = json!({
        "metadata": {"labels": {"tier": "front"}},
        "spec": {
            "$setElementOrder/containers": [{"name": "main"}, {"name": "side"}],
            "containers": [{"name": "main", "image": "nginx:1.27"}]
        }
    });
    let patched = pods
        .patch("web", &PatchParams::default(), &Patch::Strategic(&smp))
        .await
        .expect("strategic patch");
    let spec = patched.spec.as_ref().expect("spec");
    assert_eq!(spec.containers.len(), 2);
    assert_eq!(spec.containers[0].image.as_deref(), Some("nginx:1.27"));
    assert_eq!(spec.containers[1].image.as_deref(), Some("busybox:1.36"));
    let labels = patched.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("tier").map(String::as_str), Some("front"));
    assert_eq!(patched.metadata.generation, Some(2));

    // What `kubectl label … app-` sends.
    let merge = json!({"metadata": {"labels": {"app": null}}});
    let patched = pods
        .patch("web", &PatchParams::default(), &Patch::Merge(&merge))
        .await
        .expect("merge patch");
    let labels = patched.metadata.labels.unwrap_or_default();
    assert!(!labels.contains_key("app"));
    assert!(labels.contains_key("tier"));

    // A label change is not a spec change.
    assert_eq!(patched.metadata.generation, Some(2));

    // Pod specs are immutable beyond images and a few fields.
    let forbidden = json!({"spec": {"restartPolicy": "Never"}});
    let err = api_error(
        pods.patch("web", &PatchParams::default(), &Patch::Merge(&forbidden))
            .await
            .expect_err("immutable"),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message
            .contains("spec: Forbidden: pod updates may not change fields")
    );

    // Server-side apply is not served yet.
    let err = api_error(
        pods.patch(
            "web",
            &PatchParams::apply("test"),
            &Patch::Apply(&json!({"apiVersion": "v1", "kind": "Pod"})),
        )
        .await
        .expect_err("apply"),
    );
    assert_eq!(err.code, 415);
}

#[tokio::test]
async fn invalid_pod_is_422_with_causes() {
    let h = start().await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let bad: Pod = serde_json::from_value(json!({
        "metadata": {"name": "bad1"},
        "spec": {"containers": [{"name": "main"}]}
    }))
    .expect("pod");
    let err = api_error(
        pods.create(&PostParams::default(), &bad)
            .await
            .expect_err("invalid"),
    );
    assert_eq!(err.code, 422);
    assert_eq!(err.reason, "Invalid");
    assert_eq!(
        err.message,
        "Pod \"bad1\" is invalid: spec.containers[0].image: Required value"
    );
    let details = err.details.expect("details");
    assert_eq!(details.name, "bad1");
    assert_eq!(details.kind, "Pod");
    assert_eq!(details.causes.len(), 1);
    assert_eq!(details.causes[0].field, "spec.containers[0].image");
    assert_eq!(details.causes[0].reason, "FieldValueRequired");
    assert_eq!(details.causes[0].message, "Required value");
}

#[tokio::test]
async fn stale_update_is_a_conflict_and_status_is_separate() {
    let h = start().await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let first = pods
        .create(&PostParams::default(), &pod("web", "nginx:1.26"))
        .await
        .expect("create");

    let mut changed = first.clone();
    changed
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("v".into(), "2".into());
    let second = pods
        .replace("web", &PostParams::default(), &changed)
        .await
        .expect("replace");
    assert_ne!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );

    // Replacing from the first version again: someone else wrote in between.
    let err = api_error(
        pods.replace("web", &PostParams::default(), &first)
            .await
            .expect_err("stale"),
    );
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    assert_eq!(
        err.message,
        "Operation cannot be fulfilled on pods \"web\": the object has been modified; please apply your changes to the latest version and try again"
    );

    // The node reports status through the subresource; spec changes there are ignored.
    let mut reported = second.clone();
    reported.status.get_or_insert_with(Default::default).phase = Some("Running".into());
    reported
        .spec
        .get_or_insert_with(Default::default)
        .containers[0]
        .image = Some("evil:1".into());
    let after = pods
        .replace_status("web", &PostParams::default(), &reported)
        .await
        .expect("status update");
    assert_eq!(
        after.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );
    assert_eq!(
        after.spec.as_ref().expect("spec").containers[0]
            .image
            .as_deref(),
        Some("nginx:1.26")
    );

    // And a main-resource update keeps the stored status.
    let mut relabel = after.clone();
    relabel.status = None;
    relabel
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("v".into(), "3".into());
    let kept = pods
        .replace("web", &PostParams::default(), &relabel)
        .await
        .expect("replace");
    assert_eq!(
        kept.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );
}

#[tokio::test]
async fn a_write_for_a_deleted_pod_does_not_land_on_its_successor() {
    let h = start().await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let old = pods
        .create(&PostParams::default(), &pod("web", "nginx:1.26"))
        .await
        .expect("create");
    pods.delete("web", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete");
    let new = pods
        .create(&PostParams::default(), &pod("web", "nginx:1.27"))
        .await
        .expect("create again");
    let (old_uid, new_uid) = (old.metadata.uid.clone(), new.metadata.uid.clone());
    assert_ne!(old_uid, new_uid);

    // A late status from the old pod's node, without a resourceVersion: its uid is a
    // precondition.
    let mut late = old.clone();
    late.metadata.resource_version = None;
    late.status.get_or_insert_with(Default::default).phase = Some("Succeeded".into());
    let want = format!(
        "Operation cannot be fulfilled on pods \"web\": Precondition failed: UID in precondition: {}, UID in object meta: {}",
        old_uid.as_deref().unwrap_or(""),
        new_uid.as_deref().unwrap_or("")
    );
    let err = api_error(
        pods.replace_status("web", &PostParams::default(), &late)
            .await
            .expect_err("old uid"),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(err.message, want);
    // The same through a patch that names the old uid, and a plain update.
    let patch = serde_json::json!({"metadata": {"uid": old_uid}, "status": {"phase": "Failed"}});
    let err = api_error(
        pods.patch_status("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect_err("old uid"),
    );
    assert_eq!((err.code, err.message.as_str()), (409, want.as_str()));
    let err = api_error(
        pods.replace("web", &PostParams::default(), &late)
            .await
            .expect_err("old uid"),
    );
    assert_eq!(err.code, 409);

    let current = pods.get("web").await.expect("get");
    assert_eq!(current.metadata.uid, new_uid);
    assert_eq!(current.status.and_then(|s| s.phase), Some("Pending".into()));
}

#[tokio::test]
async fn deletes_are_graceful_for_running_pods() {
    let h = start().await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");

    // Never scheduled: gone at once.
    pods.create(&PostParams::default(), &pod("idle", "nginx"))
        .await
        .expect("create");
    pods.delete("idle", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(pods.get_opt("idle").await.expect("get").is_none());

    // Bound to a node: marked, kept until the node deletes it with grace 0.
    let mut running = pod("web", "nginx");
    running.spec.as_mut().expect("spec").node_name = Some("node1".into());
    running
        .spec
        .as_mut()
        .expect("spec")
        .termination_grace_period_seconds = Some(45);
    pods.create(&PostParams::default(), &running)
        .await
        .expect("create");
    let marked = pods
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete")
        .left()
        .expect("the pod, still terminating");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(45));
    let still = pods.get("web").await.expect("still there");
    assert!(still.metadata.deletion_timestamp.is_some());

    // A shorter grace period wins; a longer one does not.
    let shorter = pods
        .delete(
            "web",
            &DeleteParams {
                grace_period_seconds: Some(10),
                ..Default::default()
            },
        )
        .await
        .expect("delete again")
        .left()
        .expect("pod");
    assert_eq!(shorter.metadata.deletion_grace_period_seconds, Some(10));

    pods.delete("web", &DeleteParams::background().grace_period(0))
        .await
        .expect("final delete");
    assert!(pods.get_opt("web").await.expect("get").is_none());
}

#[tokio::test]
async fn finalizers_hold_objects_until_removed() {
    let h = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "held", "finalizers": ["example.com/hold"]}
    }))
    .expect("configmap");
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create");
    let deleted = cms
        .delete("held", &DeleteParams::default())
        .await
        .expect("delete");
    let held = deleted.left().expect("object kept while finalizers remain");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(cms.get_opt("held").await.expect("get").is_some());

    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("remove finalizer");
    assert!(cms.get_opt("held").await.expect("get").is_none());

    // Without finalizers a delete answers with a Success status.
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "plain"}})).expect("cm"),
    )
    .await
    .expect("create");
    let status = cms
        .delete("plain", &DeleteParams::default())
        .await
        .expect("delete")
        .right()
        .expect("status");
    assert_eq!(status.details.expect("details").name, "plain");
}

#[tokio::test]
async fn deployments_and_namespaces() {
    let h = start().await;
    let namespaces: Api<Namespace> = Api::all(h.client.clone());
    let seeded: Vec<_> = namespaces
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(
        seeded,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    let demo: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "demo"}})).expect("ns");
    let demo = namespaces
        .create(&PostParams::default(), &demo)
        .await
        .expect("create namespace");
    assert_eq!(demo.status.and_then(|s| s.phase).as_deref(), Some("Active"));
    assert_eq!(
        demo.metadata
            .labels
            .unwrap_or_default()
            .get("kubernetes.io/metadata.name")
            .map(String::as_str),
        Some("demo")
    );

    let deploys: Api<Deployment> = Api::namespaced(h.client.clone(), "demo");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
        }
    }))
    .expect("deployment");
    let created = deploys
        .create(&PostParams::default(), &d)
        .await
        .expect("create deployment");
    let spec = created.spec.expect("spec");
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.revision_history_limit, Some(10));
    assert_eq!(
        spec.strategy.and_then(|s| s.type_).as_deref(),
        Some("RollingUpdate")
    );

    // `kubectl scale` patches the scale subresource.
    let scaled = deploys
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("scale");
    assert_eq!(scaled.spec.and_then(|s| s.replicas), Some(3));
    assert_eq!(
        scaled.status.and_then(|s| s.selector).as_deref(),
        Some("app=web")
    );
    let after = deploys.get("web").await.expect("get");
    assert_eq!(after.spec.and_then(|s| s.replicas), Some(3));
    assert_eq!(after.metadata.generation, Some(2));

    let mut bad = d.clone();
    bad.metadata.name = Some("bad".into());
    bad.spec
        .as_mut()
        .expect("spec")
        .template
        .spec
        .as_mut()
        .expect("pod spec")
        .containers[0]
        .name = "Bad_Name".into();
    let err = api_error(
        deploys
            .create(&PostParams::default(), &bad)
            .await
            .expect_err("invalid"),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message.starts_with("Deployment.apps \"bad\" is invalid: spec.template.spec.containers[0].name: Invalid value: \"Bad_Name\""),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn strict_field_validation() {
    let h = start().await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "nginx"}], "foo": 1}});
    let (code, _, body) = raw(
        &h.state,
        Method::POST,
        "/api/v1/namespaces/default/pods?fieldManager=kubectl-create&fieldValidation=Strict",
        &[],
        Some(pod.clone()),
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(body["reason"], "BadRequest");
    assert_eq!(
        body["message"],
        "strict decoding error: unknown field \"spec.foo\""
    );

    // The default (Warn) creates the object and drops the field, with a warning.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/namespaces/default/pods")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(&pod).expect("json")))
        .expect("request");
    let response = apiserver::router(h.state.clone())
        .oneshot(req)
        .await
        .expect("infallible");
    assert_eq!(response.status(), 201);
    let warning = response
        .headers()
        .get("warning")
        .and_then(|v| v.to_str().ok())
        .expect("warning header");
    assert_eq!(warning, "299 - \"unknown field \\\"spec.foo\\\"\"");
}

#[tokio::test]
async fn tables_for_lists_and_objects() {
    let h = start().await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    pods.create(&PostParams::default(), &pod("web", "nginx"))
        .await
        .expect("create");
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let (code, _, table) = raw(
        &h.state,
        Method::GET,
        "/api/v1/namespaces/default/pods?limit=500",
        &[("accept", accept)],
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        &columns[..5],
        ["Name", "Ready", "Status", "Restarts", "Age"]
    );
    let row = &table["rows"][0];
    assert_eq!(row["cells"][0], "web");
    assert_eq!(row["cells"][1], "0/3");
    assert_eq!(row["cells"][2], "Pending");
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(row["object"]["metadata"]["name"], "web");
    assert!(table["metadata"]["resourceVersion"].is_string());

    // --sort-by asks for the whole object in each row.
    let (_, _, table) = raw(
        &h.state,
        Method::GET,
        "/api/v1/pods?includeObject=Object",
        &[("accept", accept)],
        None,
    )
    .await;
    assert_eq!(table["rows"][0]["object"]["kind"], "Pod");
    assert_eq!(
        table["rows"][0]["object"]["spec"]["containers"][0]["name"],
        "main"
    );

    // Other kinds get Name and Created At.
    let (_, _, table) = raw(
        &h.state,
        Method::GET,
        "/api/v1/namespaces/default",
        &[("accept", accept)],
        None,
    )
    .await;
    assert_eq!(table["rows"].as_array().map(Vec::len), Some(1));
    assert_eq!(table["rows"][0]["cells"][0], "default");
}

#[tokio::test]
async fn discovery_shapes() {
    let h = start().await;
    let aggregated =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let (code, ct, core) = raw(
        &h.state,
        Method::GET,
        "/api",
        &[("accept", aggregated)],
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        ct,
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    assert_eq!(core["kind"], "APIGroupDiscoveryList");
    assert_eq!(core["items"][0]["metadata"]["name"], "");
    let v1 = &core["items"][0]["versions"][0];
    assert_eq!(v1["version"], "v1");
    assert_eq!(v1["freshness"], "Current");
    let pods = v1["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["resource"] == "pods")
        .expect("pods");
    assert_eq!(
        pods["responseKind"],
        json!({"group": "", "version": "v1", "kind": "Pod"})
    );
    assert_eq!(pods["scope"], "Namespaced");
    assert_eq!(pods["shortNames"], json!(["po"]));
    assert_eq!(pods["categories"], json!(["all"]));
    let subs: Vec<&str> = pods["subresources"]
        .as_array()
        .expect("subresources")
        .iter()
        .filter_map(|s| s["subresource"].as_str())
        .collect();
    assert!(subs.contains(&"log") && subs.contains(&"status"));

    let (_, _, groups) = raw(
        &h.state,
        Method::GET,
        "/apis",
        &[("accept", aggregated)],
        None,
    )
    .await;
    let names: Vec<&str> = groups["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|g| g["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["apps", "batch", "discovery.k8s.io"]);

    // Legacy discovery for clients that do not ask for the aggregated form.
    let (_, ct, legacy) = raw(&h.state, Method::GET, "/api", &[], None).await;
    assert_eq!(ct, "application/json");
    assert_eq!(legacy["kind"], "APIVersions");
    assert_eq!(legacy["versions"], json!(["v1"]));
    let (_, _, list) = raw(&h.state, Method::GET, "/apis/apps/v1", &[], None).await;
    assert_eq!(list["kind"], "APIResourceList");
    assert_eq!(list["groupVersion"], "apps/v1");
    let deploy = list["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "deployments")
        .expect("deployments");
    assert_eq!(deploy["shortNames"], json!(["deploy"]));

    let (_, _, version) = raw(&h.state, Method::GET, "/version", &[], None).await;
    assert_eq!(version["major"], "1");
    assert_eq!(version["minor"], "33");
    assert_eq!(version["gitVersion"], "v1.33.0");

    // The kube client's own discovery understands all of it.
    let discovery = kube::discovery::Discovery::new(h.client.clone())
        .run()
        .await
        .expect("discovery");
    let groups: Vec<String> = discovery.groups().map(|g| g.name().to_owned()).collect();
    for g in ["", "apps", "batch"] {
        assert!(groups.iter().any(|n| n == g), "group {g:?} in {groups:?}");
    }
    let (res, caps) = discovery
        .resolve_gvk(&kube::core::GroupVersionKind::gvk(
            "apps",
            "v1",
            "Deployment",
        ))
        .expect("deployments discovered");
    assert_eq!(res.plural, "deployments");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
}

#[tokio::test]
async fn openapi_stub_lets_kubectl_validate_on_the_server() {
    let h = start().await;
    let (code, _, root) = raw(&h.state, Method::GET, "/openapi/v3?timeout=32s", &[], None).await;
    assert_eq!(code, 200);
    let url = root["paths"]["api/v1"]["serverRelativeURL"]
        .as_str()
        .expect("api/v1 listed");
    assert!(url.starts_with("/openapi/v3/api/v1?hash="));
    assert!(root["paths"]["apis/apps/v1"].is_object());
    assert!(root["paths"]["apis/batch/v1"].is_object());

    let (code, _, doc) = raw(&h.state, Method::GET, url, &[], None).await;
    assert_eq!(code, 200);
    let op = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
    assert_eq!(
        op["x-kubernetes-group-version-kind"],
        json!({"group": "", "version": "v1", "kind": "Pod"})
    );
    assert!(
        op["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
    );
    assert!(op.get("requestBody").is_none());
    assert!(doc["paths"]["/api/v1/namespaces/{name}"]["patch"].is_object());

    let (code, _, _) = raw(&h.state, Method::GET, "/openapi/v2", &[], None).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn binding_assigns_a_node_once() {
    let h = start().await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    pods.create(&PostParams::default(), &pod("web", "nginx"))
        .await
        .expect("create");
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web"},
                         "target": {"kind": "Node", "name": "node1"}});
    let (code, _, _) = raw(
        &h.state,
        Method::POST,
        "/api/v1/namespaces/default/pods/web/binding",
        &[],
        Some(binding.clone()),
    )
    .await;
    assert_eq!(code, 201);
    let bound = pods.get("web").await.expect("get");
    assert_eq!(
        bound.spec.and_then(|s| s.node_name).as_deref(),
        Some("node1")
    );
    let scheduled = bound
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .expect("PodScheduled");
    assert_eq!(scheduled.status, "True");

    let (code, _, body) = raw(
        &h.state,
        Method::POST,
        "/api/v1/namespaces/default/pods/web/binding",
        &[],
        Some(binding),
    )
    .await;
    assert_eq!(code, 409);
    assert_eq!(
        body["message"],
        "Operation cannot be fulfilled on pods/binding \"web\": pod web is already assigned to node \"node1\""
    );
}

/// The full stack: certificates from `pki`, HTTPS with the token via `serve`, a
/// kubeconfig the kube client reads, and 401 for requests without the token.
#[tokio::test]
async fn https_with_token_and_401_without() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = apiserver::pki::ensure(dir.path(), &[]).expect("pki");
    let state = AppState::new(Arc::new(MemoryStore::new()));
    let server = apiserver::bind(ServerConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        &pki,
    ))
    .await
    .expect("bind");
    let addr = server.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let serving = tokio::spawn(server.run(state, stop.clone()));

    let kubeconfig = apiserver::pki::kubeconfig(&format!("https://{addr}"), &pki, "tandem");
    let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig).expect("kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    let client = Client::try_from(config.clone()).expect("client");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let listed = namespaces
        .list(&ListParams::default())
        .await
        .expect("list over HTTPS");
    assert!(
        listed
            .items
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some("default"))
    );
    let pods: Api<Pod> = Api::namespaced(client, "default");
    pods.create(&PostParams::default(), &pod("web", "nginx"))
        .await
        .expect("create over HTTPS");

    let mut anonymous = config.clone();
    anonymous.auth_info = Default::default();
    let client = Client::try_from(anonymous).expect("client");
    let err = api_error(
        Api::<Pod>::namespaced(client, "default")
            .list(&ListParams::default())
            .await
            .expect_err("no token"),
    );
    assert_eq!(err.code, 401);
    assert_eq!(err.reason, "Unauthorized");

    let mut wrong = config;
    wrong.auth_info.token = Some(format!("{}0", pki.token).into());
    let client = Client::try_from(wrong).expect("client");
    let err = api_error(
        Api::<Pod>::namespaced(client, "default")
            .get("web")
            .await
            .expect_err("wrong token"),
    );
    assert_eq!(err.code, 401);

    stop.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(10), serving)
        .await
        .expect("server stops")
        .expect("join")
        .expect("clean shutdown");
}
