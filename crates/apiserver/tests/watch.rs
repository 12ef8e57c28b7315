//! Watch streams against a memory store: resume points, watch-list, selectors, Table
//! events, bookmarks, timeouts and clients that go away.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use apiserver::{ApiConfig, AppState};
use serde_json::{Value, json};
use store::memory::MemoryStore;
use store::{KeyValue, Options, Revision, Store, StoreError, Watch};

mod loopback;
use loopback::{Reply, Server};

/// Stores a pod the way clients see it, minus the `resourceVersion` the store assigns.
/// Creates it, or replaces it when it exists.
async fn put(store: &dyn Store, ns: &str, name: &str, labels: Value, phase: &str) -> KeyValue {
    let key = format!("/registry/pods/{ns}/{name}");
    // Objects are stored without kind/apiVersion here: the watch must add them.
    let pod = json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"),
                     "labels": labels, "creationTimestamp": "2026-11-25T15:00:00Z"},
        "spec": {"containers": [{"name": "main", "image": "app"}]},
        "status": {"phase": phase}
    });
    let value = serde_json::to_vec(&pod).expect("json");
    match store.get(&key).await.expect("get") {
        Some(_) => store.update(&key, value, None).await.expect("update"),
        None => store.create(&key, value).await.expect("create"),
    }
}

async fn delete(store: &dyn Store, ns: &str, name: &str) -> Revision {
    store
        .delete(&format!("/registry/pods/{ns}/{name}"), None)
        .await
        .expect("delete");
    store.revision().await.expect("revision")
}

/// kubectl's Accept header for `get`.
const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

/// `GET` of the pods collection (of `ns`, or all namespaces) with `query`.
async fn get(server: &Server, ns: Option<&str>, query: &str, accept: &str) -> Reply {
    let path = match ns {
        Some(ns) => format!("/api/v1/namespaces/{ns}/pods?{query}"),
        None => format!("/api/v1/pods?{query}"),
    };
    server.get(&path, &[("Accept", accept)]).await
}

async fn watch(server: &Server, ns: Option<&str>, query: &str) -> Events {
    Events::of(get(server, ns, query, "application/json").await)
}

/// The events of a watch reply.
struct Events {
    reply: Reply,
}

impl Events {
    fn of(reply: Reply) -> Events {
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
        Events { reply }
    }

    /// The next event, or None when the stream has ended; fails after 5 s of silence.
    async fn next(&mut self) -> Option<Value> {
        let chunk = self.reply.chunk().await?;
        // One event per chunk, each a full line: nothing waits for a later write.
        assert_eq!(chunk.last(), Some(&b'\n'), "an event is one whole line");
        assert_eq!(chunk.iter().filter(|b| **b == b'\n').count(), 1);
        Some(serde_json::from_slice(&chunk).expect("event JSON"))
    }

    async fn expect(&mut self) -> Value {
        self.next().await.expect("the stream is still open")
    }

    /// Nothing arrives (and the stream stays open) for `wait`.
    async fn quiet(&mut self, wait: Duration) {
        if let Ok(chunk) = self.reply.chunk_within(wait).await {
            panic!(
                "expected silence, got {:?}",
                chunk.map(|c| String::from_utf8_lossy(&c).into_owned())
            );
        }
    }
}

/// A Status error reply: its code and body.
async fn status(reply: Reply) -> (u16, Value) {
    let code = reply.status;
    let body: Value = serde_json::from_str(&reply.text().await).expect("Status JSON");
    assert_eq!(body["kind"], "Status");
    (code, body)
}

/// `(type, name, resourceVersion)` of an event carrying a plain object.
fn summary(event: &Value) -> (String, String, String) {
    let obj = &event["object"];
    assert_eq!(obj["kind"], "Pod", "{event}");
    assert_eq!(obj["apiVersion"], "v1", "{event}");
    (
        event["type"].as_str().unwrap_or("").to_owned(),
        obj["metadata"]["name"].as_str().unwrap_or("").to_owned(),
        obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
    )
}

fn ev(kind: &str, name: &str, rv: Revision) -> (String, String, String) {
    (kind.to_owned(), name.to_owned(), rv.to_string())
}

async fn serve(store: Arc<dyn Store>) -> Server {
    Server::start(AppState::new(store)).await
}

#[tokio::test]
async fn watch_from_a_list_revision_sees_exactly_the_later_changes() {
    let store = Arc::new(MemoryStore::new());
    let server = serve(store.clone()).await;
    let a = put(&*store, "default", "a", json!({}), "Pending").await;
    put(&*store, "default", "b", json!({}), "Pending").await;
    let (_, list_rv) = store.list("/registry/pods/default/").await.expect("list");
    assert!(list_rv >= a.mod_revision);

    let mut events = watch(
        &server,
        Some("default"),
        &format!("resourceVersion={list_rv}&watch=true"),
    )
    .await;
    let a2 = put(&*store, "default", "a", json!({}), "Running").await;
    let b_gone = delete(&*store, "default", "b").await;
    // Another namespace, and a namespace whose name starts the same: not watched.
    put(&*store, "other", "x", json!({}), "Pending").await;
    put(&*store, "default2", "y", json!({}), "Pending").await;
    let c = put(&*store, "default", "c", json!({}), "Pending").await;

    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(summary(&events.expect().await));
    }
    assert_eq!(
        got,
        vec![
            ev("MODIFIED", "a", a2.mod_revision),
            ev("DELETED", "b", b_gone),
            ev("ADDED", "c", c.mod_revision),
        ]
    );
    events.quiet(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn empty_or_zero_resource_version_sends_current_objects_first() {
    let store = Arc::new(MemoryStore::new());
    let server = serve(store.clone()).await;
    let a = put(&*store, "default", "a", json!({}), "Pending").await;
    let b = put(&*store, "default", "b", json!({}), "Pending").await;
    for query in [
        "resourceVersion=0&watch=true",
        "resourceVersion=&watch=true",
        "watch=1",
    ] {
        let mut events = watch(&server, Some("default"), query).await;
        let first = [events.expect().await, events.expect().await];
        let mut got: Vec<_> = first.iter().map(summary).collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ev("ADDED", "a", a.mod_revision),
                ev("ADDED", "b", b.mod_revision)
            ],
            "{query}"
        );
        // The full object is there.
        assert_eq!(first[0]["object"]["spec"]["containers"][0]["name"], "main");
        events.quiet(Duration::from_millis(100)).await;
    }
    let mut events = watch(&server, None, "resourceVersion=0&watch=true").await;
    events.expect().await;
    events.expect().await;
    let c = put(&*store, "elsewhere", "c", json!({}), "Pending").await;
    assert_eq!(
        summary(&events.expect().await),
        ev("ADDED", "c", c.mod_revision)
    );
}

#[tokio::test]
async fn too_old_resource_version_ends_with_a_410_error_event() {
    let store = Arc::new(MemoryStore::with_options(Options {
        history: 2,
        ..Options::default()
    }));
    let server = serve(store.clone()).await;
    for phase in ["Pending", "Running", "Succeeded", "Failed", "Unknown"] {
        put(&*store, "default", "a", json!({}), phase).await;
    }
    let expected = match store.watch("/registry/pods/default/", 1).await {
        Err(e @ StoreError::Expired { .. }) => e.to_string(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("the store kept the whole history"),
    };
    assert!(expected.starts_with("too old resource version: 1 ("));

    let mut events = watch(&server, Some("default"), "resourceVersion=1&watch=true").await;
    let error = events.expect().await;
    assert_eq!(error["type"], "ERROR");
    let status = &error["object"];
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["apiVersion"], "v1");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "Expired");
    assert_eq!(status["code"], 410);
    assert_eq!(status["message"], expected.as_str());
    assert!(
        events.next().await.is_none(),
        "the stream ends after the error"
    );
}

#[tokio::test]
async fn watch_list_sends_added_then_the_initial_events_end_bookmark_then_changes() {
    let store = Arc::new(MemoryStore::new());
    let server = serve(store.clone()).await;
    let a = put(&*store, "default", "a", json!({}), "Running").await;
    put(&*store, "default", "b", json!({}), "Running").await;
    let at_start = store.revision().await.expect("revision");

    // What `kubectl wait` and `kubectl delete` send.
    let query = "allowWatchBookmarks=true&fieldSelector=metadata.name%3Da&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&timeoutSeconds=373&watch=true";
    let mut events = watch(&server, Some("default"), query).await;
    assert_eq!(
        summary(&events.expect().await),
        ev("ADDED", "a", a.mod_revision)
    );
    let bookmark = events.expect().await;
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(bookmark["object"]["kind"], "Pod");
    assert_eq!(bookmark["object"]["apiVersion"], "v1");
    assert_eq!(
        bookmark["object"]["metadata"]["resourceVersion"],
        at_start.to_string()
    );
    assert_eq!(
        bookmark["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    put(&*store, "default", "b", json!({}), "Failed").await;
    let gone = delete(&*store, "default", "a").await;
    assert_eq!(summary(&events.expect().await), ev("DELETED", "a", gone));

    // An empty selection still gets its bookmark.
    let query = "fieldSelector=metadata.name%3Dnone&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&watch=true";
    let mut events = watch(&server, Some("default"), query).await;
    assert_eq!(events.expect().await["type"], "BOOKMARK");
}

#[tokio::test]
async fn watch_list_without_not_older_than_is_rejected_with_422() {
    let server = serve(Arc::new(MemoryStore::new())).await;
    let reply = get(
        &server,
        Some("default"),
        "sendInitialEvents=true&watch=true",
        "application/json",
    )
    .await;
    let (code, status) = status(reply).await;
    assert_eq!(code, 422);
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(
        status["message"],
        "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
    );
}

#[tokio::test]
async fn selectors_filter_and_turn_transitions_into_added_and_deleted() {
    let store = Arc::new(MemoryStore::new());
    let server = serve(store.clone()).await;
    put(&*store, "default", "x", json!({}), "Pending").await;
    put(&*store, "default", "y", json!({}), "Pending").await;
    let rv = store.revision().await.expect("revision");

    // metadata.name=x: only x, whatever happens to y.
    let mut by_name = watch(
        &server,
        Some("default"),
        &format!("fieldSelector=metadata.name%3Dx&resourceVersion={rv}&watch=true"),
    )
    .await;
    // status.phase=Running: objects move in and out of the selection.
    let mut running = watch(
        &server,
        Some("default"),
        &format!("fieldSelector=status.phase%3DRunning&resourceVersion={rv}&watch=true"),
    )
    .await;
    // A label selector behaves the same way.
    let mut labelled = watch(
        &server,
        Some("default"),
        &format!("labelSelector=app%3Dweb&resourceVersion={rv}&watch=true"),
    )
    .await;

    put(&*store, "default", "y", json!({"app": "web"}), "Running").await;
    let x1 = put(&*store, "default", "x", json!({}), "Running").await;
    let x2 = put(&*store, "default", "x", json!({}), "Succeeded").await;
    let y_gone = delete(&*store, "default", "y").await;
    let x_gone = delete(&*store, "default", "x").await;

    assert_eq!(
        summary(&by_name.expect().await),
        ev("MODIFIED", "x", x1.mod_revision)
    );
    assert_eq!(
        summary(&by_name.expect().await),
        ev("MODIFIED", "x", x2.mod_revision)
    );
    assert_eq!(summary(&by_name.expect().await), ev("DELETED", "x", x_gone));
    by_name.quiet(Duration::from_millis(200)).await;

    let y_added = running.expect().await;
    assert_eq!(summary(&y_added).0, "ADDED");
    assert_eq!(summary(&y_added).1, "y");
    assert_eq!(
        summary(&running.expect().await),
        ev("ADDED", "x", x1.mod_revision)
    );
    // x leaves the selection: DELETED, with its last matching state at the new revision.
    let left = running.expect().await;
    assert_eq!(summary(&left), ev("DELETED", "x", x2.mod_revision));
    assert_eq!(left["object"]["status"]["phase"], "Running");
    assert_eq!(summary(&running.expect().await), ev("DELETED", "y", y_gone));
    running.quiet(Duration::from_millis(200)).await;

    assert_eq!(summary(&labelled.expect().await).0, "ADDED");
    assert_eq!(
        summary(&labelled.expect().await),
        ev("DELETED", "y", y_gone)
    );
    labelled.quiet(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn bad_selectors_are_rejected_with_400() {
    let server = serve(Arc::new(MemoryStore::new())).await;
    for (query, message) in [
        (
            "fieldSelector=spec.color%3Dblue&watch=true",
            "field label not supported: spec.color",
        ),
        ("labelSelector=app%20in%20(&watch=true", ""),
    ] {
        let (code, body) =
            status(get(&server, Some("default"), query, "application/json").await).await;
        assert_eq!(code, 400, "{query}");
        assert_eq!(body["reason"], "BadRequest");
        if !message.is_empty() {
            assert_eq!(body["message"], message);
        }
    }
}

#[tokio::test]
async fn timeout_seconds_closes_the_stream() {
    let store = Arc::new(MemoryStore::new());
    let server = serve(store.clone()).await;
    put(&*store, "default", "a", json!({}), "Pending").await;
    let started = Instant::now();
    let mut events = watch(
        &server,
        Some("default"),
        "resourceVersion=0&timeoutSeconds=1&watch=true",
    )
    .await;
    assert_eq!(events.expect().await["type"], "ADDED");
    assert!(events.next().await.is_none(), "the stream ends");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

#[tokio::test]
async fn without_a_timeout_an_idle_watch_stays_open() {
    let store = Arc::new(MemoryStore::new());
    let server = serve(store.clone()).await;
    let mut events = watch(&server, Some("default"), "watch=true").await;
    events.quiet(Duration::from_millis(1500)).await;
    put(&*store, "default", "late", json!({}), "Pending").await;
    assert_eq!(summary(&events.expect().await).1, "late");
}

#[tokio::test]
async fn bookmarks_are_sent_periodically_when_allowed() {
    let store = Arc::new(MemoryStore::new());
    let config = ApiConfig {
        bookmark_interval: Duration::from_millis(200),
        ..ApiConfig::default()
    };
    let server = Server::start(AppState::new(store.clone()).with_config(config)).await;
    put(&*store, "default", "a", json!({}), "Pending").await;
    let rv = store.revision().await.expect("revision");

    let mut events = watch(
        &server,
        Some("default"),
        &format!("allowWatchBookmarks=true&resourceVersion={rv}&watch=true"),
    )
    .await;
    let bookmark = events.expect().await;
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(
        bookmark["object"],
        json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}})
    );
    // After a change, bookmarks carry its revision.
    let b = put(&*store, "default", "b", json!({}), "Pending").await;
    loop {
        let event = events.expect().await;
        if event["type"] == "ADDED" {
            assert_eq!(summary(&event), ev("ADDED", "b", b.mod_revision));
            break;
        }
        assert_eq!(event["type"], "BOOKMARK");
    }
    let bookmark = events.expect().await;
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(
        bookmark["object"]["metadata"]["resourceVersion"],
        b.mod_revision.to_string()
    );

    // Not asked for: none.
    let mut quiet = watch(
        &server,
        Some("default"),
        &format!("resourceVersion={}&watch=true", b.mod_revision),
    )
    .await;
    quiet.quiet(Duration::from_millis(600)).await;
}

#[tokio::test]
async fn table_watches_carry_one_row_tables() {
    let store = Arc::new(MemoryStore::new());
    let server = serve(store.clone()).await;
    let a = put(&*store, "default", "a", json!({}), "Pending").await;
    // `kubectl get pods -w`: the list gives the columns, the watch the rows.
    let list = get(&server, Some("default"), "limit=500", TABLE_ACCEPT).await;
    assert_eq!(list.status, 200);
    let list: Value = serde_json::from_str(&list.text().await).expect("Table JSON");
    let columns = list["columnDefinitions"].as_array().expect("columns").len();
    let list_rv = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("list resourceVersion")
        .to_owned();
    let mut events = Events::of(
        get(
            &server,
            Some("default"),
            "resourceVersion=0&watch=true",
            TABLE_ACCEPT,
        )
        .await,
    );
    let added = events.expect().await;
    assert_eq!(added["type"], "ADDED");
    let t = &added["object"];
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(t["metadata"]["resourceVersion"], a.mod_revision.to_string());
    assert!(
        t["columnDefinitions"]
            .as_array()
            .is_none_or(|c| c.is_empty()),
        "no columns in watch events: {t}"
    );
    let rows = t["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0]["cells"].as_array().map(Vec::len),
        Some(columns),
        "one cell per column of the list"
    );
    assert_eq!(rows[0]["cells"][0], "a");
    assert_eq!(rows[0]["cells"][2], "Pending");
    assert_eq!(rows[0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(
        rows[0]["object"]["metadata"]["resourceVersion"],
        a.mod_revision.to_string()
    );

    // Resuming from the list's revision gives the same rows.
    let mut resumed = Events::of(
        get(
            &server,
            Some("default"),
            &format!("resourceVersion={list_rv}&watch=true"),
            TABLE_ACCEPT,
        )
        .await,
    );
    put(&*store, "default", "a", json!({}), "Running").await;
    assert_eq!(
        resumed.expect().await["object"]["rows"][0]["cells"][2],
        "Running"
    );
    let modified = events.expect().await;
    assert_eq!(modified["type"], "MODIFIED");
    assert_eq!(modified["object"]["rows"][0]["cells"][2], "Running");

    let gone = delete(&*store, "default", "a").await;
    let deleted = events.expect().await;
    assert_eq!(deleted["type"], "DELETED");
    assert_eq!(deleted["object"]["kind"], "Table");
    assert_eq!(deleted["object"]["rows"][0]["cells"][0], "a");
    assert_eq!(
        deleted["object"]["metadata"]["resourceVersion"],
        gone.to_string()
    );
}

/// A memory store that counts the watches a reader still holds.
struct CountingStore {
    inner: MemoryStore,
    open: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Store for CountingStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        self.inner.list(prefix).await
    }
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        self.inner.create(key, value).await
    }
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<KeyValue, StoreError> {
        self.inner.update(key, value, expected).await
    }
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        self.inner.delete(key, expected).await
    }
    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        let mut inner = self.inner.watch(prefix, after).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let open = self.open.clone();
        open.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = inner.next() => {
                        let Some(e) = event else { break };
                        if tx.send(e).await.is_err() {
                            break;
                        }
                    }
                    () = tx.closed() => break,
                }
            }
            open.fetch_sub(1, Ordering::SeqCst);
        });
        Ok(Watch { events: rx })
    }
    async fn revision(&self) -> Result<Revision, StoreError> {
        self.inner.revision().await
    }
}

#[tokio::test]
async fn a_client_that_goes_away_releases_its_watch() {
    let open = Arc::new(AtomicUsize::new(0));
    let store = Arc::new(CountingStore {
        inner: MemoryStore::new(),
        open: open.clone(),
    });
    put(&*store, "default", "a", json!({}), "Pending").await;
    let server = serve(store.clone()).await;

    let mut events = watch(&server, Some("default"), "resourceVersion=0&watch=true").await;
    assert_eq!(events.expect().await["type"], "ADDED");
    assert_eq!(open.load(Ordering::SeqCst), 1);

    drop(events);
    let deadline = Instant::now() + Duration::from_secs(5);
    while open.load(Ordering::SeqCst) != 0 {
        assert!(
            Instant::now() < deadline,
            "the watch is still held after the client left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Metadata informers (kube-runtime's `owns()`, garbage collectors) list and watch
/// `PartialObjectMetadata`: they must see changes like any watcher.
#[tokio::test]
async fn metadata_watchers_get_partial_object_metadata_events() {
    let store = Arc::new(MemoryStore::new());
    let server = serve(store.clone()).await;
    put(&*store, "default", "a", json!({}), "Pending").await;
    let list = get(
        &server,
        Some("default"),
        "",
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
    )
    .await;
    let list: Value = serde_json::from_str(&list.text().await).expect("list JSON");
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert_eq!(list["items"][0]["kind"], "PartialObjectMetadata");
    assert!(list["items"][0].get("spec").is_none());
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut events = Events::of(
        get(
            &server,
            Some("default"),
            &format!("watch=true&resourceVersion={rv}"),
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
        )
        .await,
    );
    let a2 = put(&*store, "default", "a", json!({}), "Running").await;
    let event = events.expect().await;
    assert_eq!(event["type"], "MODIFIED");
    assert_eq!(event["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(event["object"]["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(
        event["object"]["metadata"]["resourceVersion"],
        a2.mod_revision.to_string()
    );
    assert!(event["object"].get("status").is_none());
}
