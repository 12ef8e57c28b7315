//! The redb store across close and reopen.

use std::time::Duration;

use store::{Options, RedbStore, Store, StoreError, WatchEvent};

async fn next(watch: &mut store::Watch) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
        Ok(Some(Ok(event))) => event,
        other => panic!("expected a watch event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_revision_and_history_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");

    let store = RedbStore::open(&path).unwrap();
    let mut before = store.watch("/registry/", 0).await.unwrap();
    store
        .create("/registry/pods/a", b"1".to_vec())
        .await
        .unwrap();
    store
        .create("/registry/pods/b", b"2".to_vec())
        .await
        .unwrap();
    store
        .update("/registry/pods/a", b"3".to_vec(), Some(1))
        .await
        .unwrap();
    store.delete("/registry/pods/b", Some(2)).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next(&mut before).await);
    }
    let (list_before, rev_before) = store.list("/registry/").await.unwrap();
    drop(store);

    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.revision().await.unwrap(), 4);
    assert_eq!(
        store.list("/registry/").await.unwrap(),
        (list_before, rev_before)
    );
    assert_eq!(store.get("/registry/pods/b").await.unwrap(), None);

    // The history comes back exactly as it was delivered before the restart.
    let mut after = store.watch("/registry/", 0).await.unwrap();
    for event in &seen {
        assert_eq!(&next(&mut after).await, event);
    }
    let mut from_two = store.watch("/registry/", 2).await.unwrap();
    assert_eq!(next(&mut from_two).await, seen[2]);

    // The revision continues, and so does the watch.
    let kv = store.create("/registry/pods/c", vec![]).await.unwrap();
    assert_eq!(kv.mod_revision, 5);
    assert_eq!(next(&mut after).await, WatchEvent::Put { kv, prev: None });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_window_holds_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let options = Options {
        history: 3,
        ..Options::default()
    };
    let store = RedbStore::open_with(&path, options).unwrap();
    for i in 0..10u8 {
        store.create(&format!("/k/{i}"), vec![i]).await.unwrap();
    }
    drop(store);

    let store = RedbStore::open_with(&path, options).unwrap();
    assert_eq!(
        store.watch("/k/", 6).await.err(),
        Some(StoreError::Expired {
            requested: 6,
            oldest: 7
        })
    );
    let mut w = store.watch("/k/", 7).await.unwrap();
    for rev in 8..=10 {
        match next(&mut w).await {
            WatchEvent::Put { kv, .. } => assert_eq!(kv.mod_revision, rev),
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(store);

    // A larger window cannot bring back what was dropped; a smaller one trims at once.
    let store = RedbStore::open(&path).unwrap();
    assert!(matches!(
        store.watch("/k/", 0).await,
        Err(StoreError::Expired { oldest: 7, .. })
    ));
    drop(store);
    let store = RedbStore::open_with(
        &path,
        Options {
            history: 1,
            ..options
        },
    )
    .unwrap();
    assert!(matches!(
        store.watch("/k/", 8).await,
        Err(StoreError::Expired { oldest: 9, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_file_is_opened_by_one_store_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let store = RedbStore::open(&path).unwrap();
    assert!(matches!(RedbStore::open(&path), Err(StoreError::Io(_))));
    drop(store);
    RedbStore::open(&path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_store_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    assert!(matches!(RedbStore::open(&path), Err(StoreError::Io(_))));
}
