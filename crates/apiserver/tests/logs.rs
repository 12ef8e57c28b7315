//! `GET …/pods/{name}/log` against a memory store and log files in a temporary directory.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use apiserver::{ApiConfig, AppState, LogSource};
use jiff::Timestamp;
use serde_json::{Value, json};
use store::Store;
use store::memory::MemoryStore;

mod loopback;
use loopback::{Reply, Server};

/// Log files by (container, previous); `live` says whether the writer still runs.
struct FakeLogs {
    files: HashMap<(String, bool), PathBuf>,
    live: AtomicBool,
}

impl LogSource for FakeLogs {
    fn log_file(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
        container: &str,
        previous: bool,
    ) -> Option<PathBuf> {
        // Only the pod the tests store has logs.
        if (namespace, pod, uid) != ("default", "web", "uid-web") {
            return None;
        }
        self.files.get(&(container.to_owned(), previous)).cloned()
    }

    fn is_live(&self, _: &Path) -> bool {
        self.live.load(Ordering::SeqCst)
    }
}

struct Fixture {
    server: Server,
    logs: Arc<FakeLogs>,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn append(&self, name: &str, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path(name))
            .expect("open log");
        f.write_all(text.as_bytes()).expect("append");
    }

    async fn get(&self, pod: &str, query: &str) -> Reply {
        self.server
            .get(
                &format!("/api/v1/namespaces/default/pods/{pod}/log?{query}"),
                &[],
            )
            .await
    }
}

const MAIN_LOG: &str = "\
2026-11-25T15:51:20.000000000Z stdout F one
2026-11-25T15:51:21.500000000Z stderr F two
2026-11-25T15:51:22.000000000Z stdout P thr
2026-11-25T15:51:22.100000000Z stdout P e
2026-11-25T15:51:22.200000000Z stdout F e
2026-11-25T15:51:23.123456789Z stdout F four
";

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = HashMap::new();
    for (container, previous, file, text) in [
        ("main", false, "main.log", MAIN_LOG),
        (
            "main",
            true,
            "main-0.log",
            "2026-11-25T15:50:00.000000000Z stdout F before the restart\n",
        ),
        (
            "sidecar",
            false,
            "sidecar.log",
            "2026-11-25T15:51:00.000000000Z stdout F proxy up\n",
        ),
    ] {
        let path = dir.path().join(file);
        std::fs::write(&path, text).expect("write log");
        files.insert((container.to_owned(), previous), path);
    }
    let logs = Arc::new(FakeLogs {
        files,
        live: AtomicBool::new(false),
    });
    let store = Arc::new(MemoryStore::new());
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "uid": "uid-web"},
        "spec": {
            "initContainers": [
                {"name": "init-a", "image": "busybox"},
                {"name": "sidecar", "image": "proxy", "restartPolicy": "Always"}
            ],
            "containers": [{"name": "main", "image": "app"}, {"name": "helper", "image": "app"}]
        },
        "status": {
            "initContainerStatuses": [{
                "name": "init-a", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "PodInitializing"}}
            }],
            "containerStatuses": [{
                "name": "helper", "image": "app", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}
            }]
        }
    });
    let single = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "solo", "namespace": "default", "uid": "uid-solo"},
        "spec": {"containers": [{"name": "only", "image": "app"}]}
    });
    for p in [pod, single] {
        let key = format!(
            "/registry/pods/default/{}",
            p["metadata"]["name"].as_str().expect("name")
        );
        store
            .create(&key, serde_json::to_vec(&p).expect("json"))
            .await
            .expect("create pod");
    }
    // The clock reads a second after the last line of `MAIN_LOG`.
    let now: Timestamp = "2026-11-25T15:51:24Z".parse().expect("time");
    let config = ApiConfig {
        clock: Arc::new(move || now),
        ..ApiConfig::default()
    };
    let state = AppState::new(store)
        .with_logs(logs.clone())
        .with_config(config);
    let server = Server::start(state).await;
    Fixture { server, logs, dir }
}

async fn text(reply: Reply) -> String {
    assert_eq!(reply.status, 200);
    reply.text().await
}

async fn status(reply: Reply) -> (u16, Value) {
    let code = reply.status;
    let body: Value = serde_json::from_str(&reply.text().await).expect("Status JSON");
    assert_eq!(body["kind"], "Status");
    (code, body)
}

#[tokio::test]
async fn prints_the_text_of_each_line_with_partials_joined() {
    let fx = fixture().await;
    let reply = fx.get("web", "container=main").await;
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(text(reply).await, "one\ntwo\nthree\nfour\n");
}

#[tokio::test]
async fn timestamps_prefix_each_line_with_its_first_record_time() {
    let fx = fixture().await;
    let got = text(fx.get("web", "container=main&timestamps=true").await).await;
    assert_eq!(
        got,
        "2026-11-25T15:51:20Z one\n\
         2026-11-25T15:51:21.5Z two\n\
         2026-11-25T15:51:22Z three\n\
         2026-11-25T15:51:23.123456789Z four\n"
    );
}

#[tokio::test]
async fn tail_since_and_limit_cut_the_output() {
    let fx = fixture().await;
    let got = text(fx.get("web", "container=main&tailLines=2").await).await;
    assert_eq!(got, "three\nfour\n");
    let got = text(fx.get("web", "container=main&tailLines=0").await).await;
    assert_eq!(got, "");
    let got = text(
        fx.get("web", "container=main&sinceTime=2026-11-25T15:51:21Z")
            .await,
    )
    .await;
    assert_eq!(got, "two\nthree\nfour\n");
    let got = text(fx.get("web", "container=main&limitBytes=6").await).await;
    assert_eq!(got, "one\ntw");
    // The clock reads 15:51:24: two seconds back is 15:51:22.
    let got = text(fx.get("web", "container=main&sinceSeconds=2").await).await;
    assert_eq!(got, "three\nfour\n");
}

#[tokio::test]
async fn previous_reads_the_earlier_instance() {
    let fx = fixture().await;
    let got = text(fx.get("web", "container=main&previous=true").await).await;
    assert_eq!(got, "before the restart\n");
    let (code, body) = status(fx.get("web", "container=sidecar&previous=true").await).await;
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        "previous terminated container \"sidecar\" in pod \"web\" not found"
    );
}

#[tokio::test]
async fn container_choice_follows_the_api_server() {
    let fx = fixture().await;
    let (code, body) = status(fx.get("web", "").await).await;
    assert_eq!(code, 400);
    assert_eq!(body["reason"], "BadRequest");
    assert_eq!(
        body["message"],
        "a container name must be specified for pod web, choose one of: [main helper] or one of the init containers: [init-a sidecar]"
    );
    let (code, body) = status(fx.get("web", "container=nope").await).await;
    assert_eq!(code, 400);
    assert_eq!(body["message"], "container nope is not valid for pod web");
    // An init container (a sidecar) can be named.
    assert_eq!(
        text(fx.get("web", "container=sidecar").await).await,
        "proxy up\n"
    );
    // One container: it is the default, even without a log yet.
    let (code, body) = status(fx.get("solo", "").await).await;
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        "container \"only\" in pod \"solo\" is waiting to start: ContainerCreating"
    );
}

#[tokio::test]
async fn containers_without_logs_report_their_waiting_reason() {
    let fx = fixture().await;
    let (code, body) = status(fx.get("web", "container=init-a").await).await;
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        "container \"init-a\" in pod \"web\" is waiting to start: PodInitializing"
    );
    let (_, body) = status(fx.get("web", "container=helper").await).await;
    assert_eq!(
        body["message"],
        "container \"helper\" in pod \"web\" is waiting to start: CrashLoopBackOff"
    );
}

#[tokio::test]
async fn missing_pods_and_bad_options_are_status_errors() {
    let fx = fixture().await;
    let (code, body) = status(fx.get("nope", "").await).await;
    assert_eq!(code, 404);
    assert_eq!(body["reason"], "NotFound");
    assert_eq!(body["message"], "pods \"nope\" not found");
    let (code, body) = status(
        fx.get(
            "web",
            "container=main&sinceSeconds=5&sinceTime=2026-11-25T15:51:21Z",
        )
        .await,
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(body["reason"], "Invalid");
    assert_eq!(
        body["message"],
        "PodLogOptions \"web\" is invalid: Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
    );
}

#[tokio::test]
async fn follow_streams_appended_lines_until_the_container_stops() {
    let fx = fixture().await;
    fx.logs.live.store(true, Ordering::SeqCst);
    let mut reply = fx
        .get("web", "container=main&follow=true&tailLines=1")
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
    let mut seen = String::new();
    async fn read_until(reply: &mut Reply, seen: &mut String, want: &str) {
        while !seen.ends_with(want) {
            let chunk = reply.chunk().await.expect("stream still open");
            seen.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    }
    read_until(&mut reply, &mut seen, "four\n").await;
    assert_eq!(seen, "four\n");

    // A line written in two pieces arrives whole, after its second piece.
    fx.append("main.log", "2026-11-25T15:52:00.000000000Z stdout P fi\n");
    fx.append("main.log", "2026-11-25T15:52:00.100000000Z stdout F ve\n");
    read_until(&mut reply, &mut seen, "five\n").await;
    assert_eq!(seen, "four\nfive\n");

    // Written just before the container stops: still delivered, then the stream ends.
    fx.append("main.log", "2026-11-25T15:52:01.000000000Z stdout F six\n");
    fx.logs.live.store(false, Ordering::SeqCst);
    let rest = reply.text().await;
    assert_eq!(format!("{seen}{rest}"), "four\nfive\nsix\n");
}
