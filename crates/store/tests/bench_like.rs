//! Rough timings for the API's targets (1,000 pod creates under 5 s, fast list of 1,000).
//! Meaningful in release mode:
//! `cargo test --release -p tandem-store --test bench_like -- --nocapture`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use store::{MemoryStore, RedbStore, Store};

const PODS: usize = 1_000;

async fn creates(store: &Arc<dyn Store>, prefix: &str) -> Duration {
    let value = vec![b'p'; 1024];
    let start = Instant::now();
    let tasks: Vec<_> = (0..PODS)
        .map(|i| {
            let (store, value) = (store.clone(), value.clone());
            let key = format!("{prefix}pod-{i:04}");
            tokio::spawn(async move { store.create(&key, value).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect("create");
    }
    start.elapsed()
}

async fn measure(name: &str, store: Arc<dyn Store>) {
    let before = store.revision().await.unwrap();
    let concurrent = creates(&store, "/registry/pods/default/").await;

    let (items, revision) = store.list("/registry/pods/default/").await.unwrap();
    assert_eq!(items.len(), PODS);
    assert_eq!(revision, before + PODS as u64);
    let mut revs: Vec<u64> = items.iter().map(|kv| kv.mod_revision).collect();
    revs.sort_unstable();
    assert_eq!(revs, (before + 1..=revision).collect::<Vec<_>>());

    let mut lists = Vec::new();
    for _ in 0..21 {
        let start = Instant::now();
        let (items, _) = store.list("/registry/pods/").await.unwrap();
        lists.push(start.elapsed());
        assert_eq!(items.len(), PODS);
    }
    lists.sort();

    let start = Instant::now();
    for i in 0..100 {
        store
            .create(&format!("/registry/other/seq-{i}"), vec![b'p'; 1024])
            .await
            .unwrap();
    }
    let sequential = start.elapsed() / 100;
    println!(
        "{name}: {PODS} concurrent creates (1 KiB) {concurrent:?}; list of {PODS} median {:?}; \
         one create alone {sequential:?}",
        lists[lists.len() / 2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_like_test() {
    measure("memory", Arc::new(MemoryStore::new())).await;
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("store.redb")).unwrap();
    measure("redb", Arc::new(store)).await;
}
