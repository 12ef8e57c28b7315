//! Every acknowledged write survives `kill -9`.
//!
//! The test binary runs itself again as a writer process (selected by an environment
//! variable): it opens a `RedbStore`, creates keys from many tasks at once and prints each
//! acknowledged key and revision. The test kills it with SIGKILL in the middle of the burst,
//! reopens the file and checks every printed key. This file has its own `main` (no libtest
//! harness) so that the writer is not a test of its own.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use store::{RedbStore, Revision, Store};

const WRITER_ENV: &str = "TANDEM_STORE_DURABILITY_WRITER";
const TEST_NAME: &str = "kill9_keeps_every_acknowledged_write";
const WRITERS: usize = 32;
/// Acknowledgements to wait for before the kill, per round.
const KILL_AFTER: usize = 400;
const ROUNDS: usize = 3;

fn main() {
    if let Some(path) = std::env::var_os(WRITER_ENV) {
        writer(Path::new(&path));
        return;
    }
    // Behave enough like libtest for `cargo test` filters and listing.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        // Test runners list the ignored tests separately (`--list --ignored`): none here.
        if !args.iter().any(|a| a == "--ignored") {
            println!("{TEST_NAME}: test");
        }
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let selected = filters.is_empty() || filters.iter().any(|f| TEST_NAME.contains(f.as_str()));
    if !selected || args.iter().any(|a| a == "--ignored") {
        println!("running 0 tests");
        return;
    }
    println!("running 1 test");
    kill9_keeps_every_acknowledged_write();
    println!("test {TEST_NAME} ... ok");
}

/// The child: creates keys under `/burst/<round>/` in the store at `path` until killed,
/// printing `key revision` once each create has returned.
fn writer(path: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = Arc::new(RedbStore::open(path).expect("open store"));
        let round = std::env::var("TANDEM_STORE_DURABILITY_ROUND").unwrap_or_default();
        let value = vec![b'x'; 1024];
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (store, value, round) = (store.clone(), value.clone(), round.clone());
                tokio::spawn(async move {
                    for i in 0.. {
                        let key = format!("/burst/{round}/{w}/{i}");
                        let kv = store.create(&key, value.clone()).await.expect("create");
                        let mut out = std::io::stdout().lock();
                        if writeln!(out, "{key} {}", kv.mod_revision).is_err() {
                            std::process::exit(1);
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
}

fn kill9_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.redb");
    let exe = std::env::current_exe().expect("test binary");
    let mut acknowledged: BTreeMap<String, Revision> = BTreeMap::new();

    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .env(WRITER_ENV, &path)
            .env("TANDEM_STORE_DURABILITY_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start writer");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut record = |line: String| {
            let (key, rev) = line.rsplit_once(' ').expect("`key revision` line");
            let rev: Revision = rev.parse().expect("revision");
            assert!(acknowledged.insert(key.to_owned(), rev).is_none());
        };
        for _ in 0..KILL_AFTER {
            let line = lines
                .next()
                .expect("writer stopped before the kill")
                .expect("read");
            record(line);
        }
        // SIGKILL while the writers keep going: no chance to flush or close anything.
        child.kill().expect("kill -9");
        // Lines already in the pipe were acknowledged before the kill.
        for line in lines {
            record(line.expect("read"));
        }
        let status = child.wait().expect("wait");
        assert_eq!(status.signal(), Some(9), "writer was not killed: {status}");
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = RedbStore::open(&path).expect("reopen after kill -9");
        for (key, rev) in &acknowledged {
            let kv = store.get(key).await.expect("get");
            let kv = kv.unwrap_or_else(|| panic!("acknowledged {key} is missing"));
            assert_eq!(kv.mod_revision, *rev, "{key}");
            assert_eq!(kv.value.len(), 1024);
        }
        let newest = acknowledged.values().max().copied().unwrap_or_default();
        let revision = store.revision().await.expect("revision");
        assert!(
            revision >= newest,
            "revision {revision} < acknowledged {newest}"
        );
        let (all, _) = store.list("/burst/").await.expect("list");
        assert!(all.len() >= acknowledged.len());
        // Revisions are unique, never reused after a crash.
        let mut revs: Vec<Revision> = all.iter().map(|kv| kv.mod_revision).collect();
        revs.sort_unstable();
        revs.dedup();
        assert_eq!(revs.len(), all.len());
        println!(
            "{} acknowledged writes over {ROUNDS} kills all present; revision {revision}",
            acknowledged.len()
        );
    });
}
