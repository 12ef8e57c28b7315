use std::path::{Path, PathBuf};
use std::sync::Arc;
use apiserver::{AppState, LogSource};
use store::Store;
use store::memory::MemoryStore;

struct L;
impl LogSource for L {
    fn log_file(&self, _: &str, _: &str, _: &str, c: &str, _: bool) -> Option<PathBuf> {
        (c == "main").then(|| PathBuf::from("/tmp/h8smoke/main.log"))
    }
    fn is_live(&self, _: &Path) -> bool { Path::new("/tmp/h8smoke/live").exists() }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn smoke() {
    let store = Arc::new(MemoryStore::new());
    let state = AppState::new(store.clone()).with_logs(Arc::new(L));
    apiserver::bootstrap(&state).await.unwrap();
    let pod = serde_json::json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"w2","namespace":"default","uid":"u1","creationTimestamp":"2026-11-25T15:00:00Z"},
      "spec":{"containers":[{"name":"main","image":"x"},{"name":"side","image":"y"}]},
      "status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}});
    store.create("/registry/pods/default/w2", serde_json::to_vec(&pod).unwrap()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:18080").await.unwrap();
    let app = apiserver::router(state);
    let s2 = store.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(20)).await;
        let mut p = pod.clone();
        p["status"]["phase"] = "Succeeded".into();
        s2.update("/registry/pods/default/w2", serde_json::to_vec(&p).unwrap(), None).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        s2.delete("/registry/pods/default/w2", None).await.unwrap();
    });
    tokio::time::timeout(std::time::Duration::from_secs(60), axum::serve(listener, app)).await.ok();
}
