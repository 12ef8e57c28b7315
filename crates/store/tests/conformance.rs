//! One behaviour suite, run against every backend.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use store::{KeyValue, MemoryStore, Options, RedbStore, Revision, Store, StoreError, WatchEvent};
use tempfile::TempDir;

/// A store plus whatever must outlive it.
struct Fixture {
    store: Arc<dyn Store>,
    _dir: Option<TempDir>,
}

fn memory(options: Options) -> Fixture {
    Fixture {
        store: Arc::new(MemoryStore::with_options(options)),
        _dir: None,
    }
}

fn redb(options: Options) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = RedbStore::open_with(dir.path().join("store.redb"), options).expect("open");
    Fixture {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

type Make = fn(Options) -> Fixture;

fn defaults(make: Make) -> Fixture {
    make(Options::default())
}

fn revision_of(event: &WatchEvent) -> Revision {
    match event {
        WatchEvent::Put { kv, .. } => kv.mod_revision,
        WatchEvent::Delete { revision, .. } | WatchEvent::Progress { revision } => *revision,
    }
}

async fn next(watch: &mut store::Watch) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within 10 s"),
    }
}

fn keys(items: &[KeyValue]) -> Vec<&str> {
    items.iter().map(|kv| kv.key.as_str()).collect()
}

async fn create_get_list(make: Make) {
    let f = defaults(make);
    let s = f.store.clone();
    assert_eq!(s.revision().await.unwrap(), 0);
    let b = s
        .create("/registry/pods/ns/b", b"B".to_vec())
        .await
        .unwrap();
    let a = s
        .create("/registry/pods/ns/a", b"A".to_vec())
        .await
        .unwrap();
    s.create("/registry/services/ns/a", b"S".to_vec())
        .await
        .unwrap();
    assert_eq!((b.create_revision, b.mod_revision), (1, 1));
    assert_eq!((a.create_revision, a.mod_revision), (2, 2));
    assert_eq!(a.value, b"A");

    assert_eq!(s.get("/registry/pods/ns/a").await.unwrap(), Some(a.clone()));
    assert_eq!(s.get("/registry/pods/ns/c").await.unwrap(), None);

    let (items, rev) = s.list("/registry/pods/").await.unwrap();
    assert_eq!(keys(&items), ["/registry/pods/ns/a", "/registry/pods/ns/b"]);
    assert_eq!(items[0], a);
    assert_eq!(items[1], b);
    assert_eq!(rev, 3);
    assert_eq!(s.revision().await.unwrap(), 3);

    let (all, _) = s.list("").await.unwrap();
    assert_eq!(all.len(), 3);
    let (none, rev) = s.list("/registry/nodes/").await.unwrap();
    assert!(none.is_empty());
    assert_eq!(rev, 3);
}

async fn prefixes_are_isolated(make: Make) {
    let f = defaults(make);
    let s = f.store.clone();
    for key in [
        "/registry/pods/a",
        "/registry/pods/a/web",
        "/registry/pods/ab",
        "/registry/pods/ab/web",
        "/registry/podsx/a/web",
    ] {
        s.create(key, key.as_bytes().to_vec()).await.unwrap();
    }
    let (items, _) = s.list("/registry/pods/a/").await.unwrap();
    assert_eq!(keys(&items), ["/registry/pods/a/web"]);
    let (items, _) = s.list("/registry/pods/ab/").await.unwrap();
    assert_eq!(keys(&items), ["/registry/pods/ab/web"]);
    let (items, _) = s.list("/registry/pods/").await.unwrap();
    assert_eq!(items.len(), 4);

    // Watches filter the same way, in the replay and live.
    let mut w = s.watch("/registry/pods/a/", 0).await.unwrap();
    assert_eq!(revision_of(&next(&mut w).await), 2);
    s.update("/registry/pods/ab/web", b"x".to_vec(), None)
        .await
        .unwrap();
    s.update("/registry/pods/a", b"x".to_vec(), None)
        .await
        .unwrap();
    let kv = s
        .update("/registry/pods/a/web", b"x".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(revision_of(&next(&mut w).await), kv.mod_revision);
}

async fn create_refuses_existing_keys(make: Make) {
    let f = defaults(make);
    let s = f.store.clone();
    s.create("/k", b"1".to_vec()).await.unwrap();
    let err = s.create("/k", b"2".to_vec()).await.unwrap_err();
    assert_eq!(err, StoreError::AlreadyExists("/k".into()));
    assert_eq!(s.get("/k").await.unwrap().unwrap().value, b"1");
    assert_eq!(
        s.revision().await.unwrap(),
        1,
        "a failed write uses no revision"
    );
}

async fn update_with_and_without_precondition(make: Make) {
    let f = defaults(make);
    let s = f.store.clone();
    let first = s.create("/k", b"1".to_vec()).await.unwrap();
    s.create("/other", b"o".to_vec()).await.unwrap();

    let second = s.update("/k", b"2".to_vec(), None).await.unwrap();
    assert_eq!(second.create_revision, first.create_revision);
    assert_eq!(second.mod_revision, 3);
    assert_eq!(second.value, b"2");

    let third = s
        .update("/k", b"3".to_vec(), Some(second.mod_revision))
        .await
        .unwrap();
    assert_eq!(third.mod_revision, 4);

    let err = s
        .update("/k", b"stale".to_vec(), Some(second.mod_revision))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::Conflict {
            key: "/k".into(),
            expected: 3,
            actual: 4
        }
    );
    assert_eq!(s.get("/k").await.unwrap(), Some(third));

    let err = s.update("/missing", b"x".to_vec(), None).await.unwrap_err();
    assert_eq!(err, StoreError::NotFound("/missing".into()));
    let err = s
        .update("/missing", b"x".to_vec(), Some(1))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::NotFound("/missing".into()));
    assert_eq!(s.revision().await.unwrap(), 4);
}

async fn delete_with_precondition(make: Make) {
    let f = defaults(make);
    let s = f.store.clone();
    s.create("/k", b"1".to_vec()).await.unwrap();
    let kv = s.update("/k", b"2".to_vec(), None).await.unwrap();

    let err = s.delete("/k", Some(1)).await.unwrap_err();
    assert_eq!(
        err,
        StoreError::Conflict {
            key: "/k".into(),
            expected: 1,
            actual: 2
        }
    );
    assert!(s.get("/k").await.unwrap().is_some());

    let last = s.delete("/k", Some(kv.mod_revision)).await.unwrap();
    assert_eq!(last, kv);
    assert_eq!(s.get("/k").await.unwrap(), None);
    assert_eq!(s.revision().await.unwrap(), 3, "a delete takes a revision");
    assert_eq!(
        s.delete("/k", None).await.unwrap_err(),
        StoreError::NotFound("/k".into())
    );

    // A key created again starts a new life.
    let again = s.create("/k", b"3".to_vec()).await.unwrap();
    assert_eq!((again.create_revision, again.mod_revision), (4, 4));
    let last = s.delete("/k", None).await.unwrap();
    assert_eq!(last, again);
}

async fn watch_replays_history(make: Make) {
    let f = defaults(make);
    let s = f.store.clone();
    s.create("/p/a", b"1".to_vec()).await.unwrap();
    let (_, after) = s.list("/p/").await.unwrap();
    let created = s.create("/p/b", b"2".to_vec()).await.unwrap();
    let updated = s.update("/p/b", b"3".to_vec(), None).await.unwrap();
    let deleted = s.delete("/p/a", None).await.unwrap();

    let mut w = s.watch("/p/", after).await.unwrap();
    assert_eq!(
        next(&mut w).await,
        WatchEvent::Put {
            kv: created.clone(),
            prev: None
        }
    );
    assert_eq!(
        next(&mut w).await,
        WatchEvent::Put {
            kv: updated,
            prev: Some(created)
        }
    );
    assert_eq!(
        next(&mut w).await,
        WatchEvent::Delete {
            prev: deleted,
            revision: 4
        }
    );
    // Then live events follow the replay.
    let live = s.create("/p/c", b"4".to_vec()).await.unwrap();
    assert_eq!(
        next(&mut w).await,
        WatchEvent::Put {
            kv: live,
            prev: None
        }
    );

    // From 0 the whole history comes back.
    let mut w = s.watch("/p/", 0).await.unwrap();
    for rev in 1..=5 {
        assert_eq!(revision_of(&next(&mut w).await), rev);
    }
}

async fn watch_live_from_now(make: Make) {
    let f = defaults(make);
    let s = f.store.clone();
    s.create("/p/old", b"1".to_vec()).await.unwrap();
    let now = s.revision().await.unwrap();
    let mut w = s.watch("/p/", now).await.unwrap();
    let mut future = s.watch("/p/", now + 1).await.unwrap();
    let a = s.create("/p/a", b"1".to_vec()).await.unwrap();
    let b = s.create("/p/b", b"2".to_vec()).await.unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Put { kv: a, prev: None });
    assert_eq!(
        next(&mut w).await,
        WatchEvent::Put {
            kv: b.clone(),
            prev: None
        }
    );
    // A watch from a revision not reached yet starts after it.
    assert_eq!(
        next(&mut future).await,
        WatchEvent::Put { kv: b, prev: None }
    );
}

async fn watch_expires_after_the_window(make: Make) {
    let f = make(Options {
        history: 5,
        ..Options::default()
    });
    let s = f.store.clone();
    for i in 0..10 {
        s.create(&format!("/p/{i}"), vec![i]).await.unwrap();
    }
    for after in [0, 4] {
        let err = s.watch("/p/", after).await.err().expect("expired");
        assert_eq!(
            err,
            StoreError::Expired {
                requested: after,
                oldest: 5
            }
        );
    }
    let mut w = s.watch("/p/", 5).await.unwrap();
    for rev in 6..=10 {
        assert_eq!(revision_of(&next(&mut w).await), rev);
    }
    s.create("/p/x", vec![]).await.unwrap();
    assert!(matches!(
        s.watch("/p/", 5).await,
        Err(StoreError::Expired { oldest: 6, .. })
    ));
    // The watch opened earlier keeps going past the window.
    assert_eq!(revision_of(&next(&mut w).await), 11);
}

async fn concurrent_writers_seen_once_in_order(make: Make) {
    let f = defaults(make);
    let s = f.store.clone();
    let mut from_start = s.watch("/c/", 0).await.unwrap();
    let writers = 8u64;
    let per_writer = 40u8;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..per_writer {
                let key = format!("/c/{w}/{}", i % 5);
                let kv = match s.create(&key, vec![i]).await {
                    Ok(kv) => kv,
                    Err(StoreError::AlreadyExists(_)) => {
                        s.update(&key, vec![i], None).await.unwrap()
                    }
                    Err(e) => panic!("{e}"),
                };
                revs.push(kv.mod_revision);
            }
            revs
        }));
    }
    // A watcher that joins halfway through, from a list's revision.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (_, mid) = s.list("/c/").await.unwrap();
    let mut from_mid = s.watch("/c/", mid).await.unwrap();

    let mut acknowledged = Vec::new();
    for t in tasks {
        let revs = t.await.unwrap();
        assert!(revs.windows(2).all(|w| w[0] < w[1]), "per-writer order");
        acknowledged.extend(revs);
    }
    acknowledged.sort();
    let total = writers * u64::from(per_writer);
    assert_eq!(acknowledged, (1..=total).collect::<Vec<_>>());
    assert_eq!(s.revision().await.unwrap(), total);

    for rev in 1..=total {
        assert_eq!(revision_of(&next(&mut from_start).await), rev);
    }
    for rev in mid + 1..=total {
        assert_eq!(revision_of(&next(&mut from_mid).await), rev);
    }
    // Nothing more than that: the next event is the next write.
    s.create("/c/last", vec![]).await.unwrap();
    assert_eq!(revision_of(&next(&mut from_start).await), total + 1);
    assert_eq!(revision_of(&next(&mut from_mid).await), total + 1);
}

async fn racing_creates_of_one_key(make: Make) {
    let f = defaults(make);
    let s = f.store.clone();
    let tasks: Vec<_> = (0..16u8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.create("/same", vec![i]).await })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(kv) => {
                won += 1;
                assert_eq!(kv.mod_revision, 1);
            }
            Err(e) => assert_eq!(e, StoreError::AlreadyExists("/same".into())),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(s.revision().await.unwrap(), 1);
}

async fn slow_watcher_is_ended_not_waited_for(make: Make) {
    let f = make(Options {
        watch_buffer: 4,
        ..Options::default()
    });
    let s = f.store.clone();
    let mut slow = s.watch("/p/", 0).await.unwrap();
    // Writers finish even though nobody reads the watch.
    tokio::time::timeout(Duration::from_secs(10), async {
        for i in 0..20u8 {
            s.create(&format!("/p/{i}"), vec![i]).await.unwrap();
        }
    })
    .await
    .expect("writers were blocked by a slow watcher");

    let mut delivered = Vec::new();
    let end = loop {
        match slow.next().await {
            Some(Ok(event)) => delivered.push(revision_of(&event)),
            Some(Err(e)) => break e,
            None => panic!("watch ended without an error"),
        }
    };
    assert!(matches!(end, StoreError::Io(_)), "{end:?}");
    assert!(!delivered.is_empty() && delivered.len() < 20);
    assert_eq!(delivered, (1..=delivered.len() as u64).collect::<Vec<_>>());
    assert!(slow.next().await.is_none());

    // A new watch can resume from the last revision it got.
    let resume = *delivered.last().unwrap();
    let mut w = s.watch("/p/", resume).await.unwrap();
    assert_eq!(revision_of(&next(&mut w).await), resume + 1);
}

async fn watches_end_when_the_store_closes(make: Make) {
    let f = make(Options::default());
    let mut w = f.store.watch("/", 0).await.unwrap();
    f.store.create("/a", vec![]).await.unwrap();
    drop(f);
    assert_eq!(revision_of(&next(&mut w).await), 1);
    let end = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("watch still open after the store closed");
    assert!(end.is_none());
}

macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::memory).await
                }
            )*
        }
        mod redb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::redb).await
                }
            )*
        }
    };
}

suite!(
    create_get_list,
    prefixes_are_isolated,
    create_refuses_existing_keys,
    update_with_and_without_precondition,
    delete_with_precondition,
    watch_replays_history,
    watch_live_from_now,
    watch_expires_after_the_window,
    concurrent_writers_seen_once_in_order,
    racing_creates_of_one_key,
    slow_watcher_is_ended_not_waited_for,
    watches_end_when_the_store_closes,
);

// Random operation sequences against a plain map: results match, every successful write
// takes exactly the next revision, failures take none, and a watch from 0 sees the same
// history.

#[derive(Debug, Clone)]
enum RandomOp {
    Create(u8),
    Update(u8, Option<u8>),
    Delete(u8, Option<u8>),
}

fn random_op() -> impl Strategy<Value = RandomOp> {
    let key = 0..4u8;
    let expected = proptest::option::of(0..12u8);
    prop_oneof![
        key.clone().prop_map(RandomOp::Create),
        (key.clone(), expected.clone()).prop_map(|(k, e)| RandomOp::Update(k, e)),
        (key, expected).prop_map(|(k, e)| RandomOp::Delete(k, e)),
    ]
}

async fn model_check(make: Make, ops: Vec<RandomOp>) -> Result<(), TestCaseError> {
    let f = make(Options::default());
    let s = &f.store;
    let mut model: BTreeMap<String, KeyValue> = BTreeMap::new();
    let mut revision = 0;
    for (i, op) in ops.iter().enumerate() {
        let value = vec![i as u8];
        let (got, want) = match op {
            RandomOp::Create(k) => {
                let key = format!("/m/{k}");
                let want = match model.get(&key) {
                    Some(_) => Err(StoreError::AlreadyExists(key.clone())),
                    None => Ok(KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: revision + 1,
                        mod_revision: revision + 1,
                    }),
                };
                (s.create(&key, value).await, want)
            }
            RandomOp::Update(k, expected) => {
                let key = format!("/m/{k}");
                let expected = expected.map(Revision::from);
                let want = match model.get(&key) {
                    None => Err(StoreError::NotFound(key.clone())),
                    Some(cur) if expected.is_some_and(|e| e != cur.mod_revision) => {
                        Err(StoreError::Conflict {
                            key: key.clone(),
                            expected: expected.unwrap_or_default(),
                            actual: cur.mod_revision,
                        })
                    }
                    Some(cur) => Ok(KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: cur.create_revision,
                        mod_revision: revision + 1,
                    }),
                };
                (s.update(&key, value, expected).await, want)
            }
            RandomOp::Delete(k, expected) => {
                let key = format!("/m/{k}");
                let expected = expected.map(Revision::from);
                let want = match model.get(&key) {
                    None => Err(StoreError::NotFound(key.clone())),
                    Some(cur) if expected.is_some_and(|e| e != cur.mod_revision) => {
                        Err(StoreError::Conflict {
                            key: key.clone(),
                            expected: expected.unwrap_or_default(),
                            actual: cur.mod_revision,
                        })
                    }
                    Some(cur) => Ok(cur.clone()),
                };
                (s.delete(&key, expected).await, want)
            }
        };
        prop_assert_eq!(&got, &want);
        if got.is_ok() {
            revision += 1;
            match op {
                RandomOp::Delete(..) => {
                    model.remove(&want.unwrap().key);
                }
                _ => {
                    let kv = want.unwrap();
                    model.insert(kv.key.clone(), kv);
                }
            }
        }
        prop_assert_eq!(s.revision().await.unwrap(), revision);
    }
    let (items, rev) = s.list("/m/").await.unwrap();
    prop_assert_eq!(rev, revision);
    prop_assert_eq!(items, model.into_values().collect::<Vec<_>>());
    let mut w = s.watch("/m/", 0).await.unwrap();
    for rev in 1..=revision {
        prop_assert_eq!(revision_of(&next(&mut w).await), rev);
    }
    Ok(())
}

fn run_model(make: Make, cases: u32) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        ..ProptestConfig::default()
    });
    let result = runner.run(&proptest::collection::vec(random_op(), 1..40), |ops| {
        rt.block_on(model_check(make, ops))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn memory_matches_a_model() {
    run_model(memory, 128);
}

#[test]
fn redb_matches_a_model() {
    run_model(redb, 24);
}
