//! The durable store: one redb file.
//!
//! Tables: `kv` (key → (create_rev, mod_rev, value)), `log` (rev → event, the last
//! `history` events, for watches to resume from after a restart) and `meta` (`revision`, the
//! current revision, and `compacted`, the newest revision dropped from `log`).
//!
//! redb is synchronous and has one writer at a time, so all writes go through one writer
//! thread. It commits with `Durability::Immediate` (fsync) before answering, and uses group
//! commit: the writes that queue up while a commit is in flight go into the next
//! transaction together, each with its own revision and its own result. Reads run on
//! tokio's blocking pool against redb's MVCC snapshots and never wait for the writer.
//! Watches are served from the in-memory hub, fed after each commit and before the writers
//! are answered, so an acknowledged write is already visible to watches.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;

use ::redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use tokio::sync::oneshot;

use crate::hub::{Entry, Hub};
use crate::op::{Op, Table};
use crate::{KeyValue, Options, Revision, Store, StoreError, Watch, codec};

const KV: TableDefinition<&str, (u64, u64, &[u8])> = TableDefinition::new("kv");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
const COMPACTED: &str = "compacted";

/// Writes per transaction at most, so one commit stays bounded in size and latency.
const MAX_BATCH: usize = 1_024;

fn io(e: impl Into<::redb::Error>) -> StoreError {
    StoreError::Io(e.into().to_string())
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<KeyValue, StoreError>>,
}

/// The redb-backed store. Dropping it finishes the queued writes, closes the file and ends
/// the open watches.
pub struct RedbStore {
    db: Arc<Database>,
    hub: Arc<Mutex<Hub>>,
    writes: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
}

fn lock(hub: &Mutex<Hub>) -> MutexGuard<'_, Hub> {
    // The hub stays consistent even if a holder panicked: every change is a single push.
    hub.lock().unwrap_or_else(|e| e.into_inner())
}

impl RedbStore {
    /// Opens (or creates) the store file at `path` with the default [`Options`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, Options::default())
    }

    pub fn open_with(path: impl AsRef<Path>, options: Options) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let db = Database::create(path)
            .map_err(|e| StoreError::Io(format!("opening {}: {e}", path.display())))?;
        // Create the tables up front so that readers can always open them.
        let txn = db.begin_write().map_err(io)?;
        {
            txn.open_table(KV).map_err(io)?;
            txn.open_table(LOG).map_err(io)?;
            txn.open_table(META).map_err(io)?;
        }
        txn.commit().map_err(io)?;

        let txn = db.begin_read().map_err(io)?;
        let compacted = meta(&txn, COMPACTED)?;
        let log = txn.open_table(LOG).map_err(io)?;
        let mut history = Vec::new();
        for row in log.range(compacted + 1..).map_err(io)? {
            let (rev, event) = row.map_err(io)?;
            let revision = rev.value();
            history.push(Entry {
                revision,
                event: codec::decode(revision, event.value())?,
            });
        }
        drop(log);
        drop(txn);

        let hub = Arc::new(Mutex::new(Hub::new(
            options.history,
            options.watch_buffer,
            compacted,
            history,
        )));
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel();
        let writer = {
            let (db, hub) = (db.clone(), hub.clone());
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || write_loop(&db, &hub, &rx, options.history))
                .map_err(|e| StoreError::Io(format!("starting the store writer: {e}")))?
        };
        Ok(Self {
            db,
            hub,
            writes: Some(tx),
            writer: Some(writer),
        })
    }

    async fn write(&self, op: Op) -> Result<KeyValue, StoreError> {
        let stopped = || StoreError::Io("the store writer has stopped".into());
        let (reply, result) = oneshot::channel();
        self.writes
            .as_ref()
            .ok_or_else(stopped)?
            .send(Request { op, reply })
            .map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }

    /// Runs a read against a snapshot on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db.begin_read().map_err(io)?))
            .await
            .map_err(|e| StoreError::Io(format!("store read failed: {e}")))?
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and exit; waiting for it
        // means the file is closed once we return (unless a read is still running).
        self.writes.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn meta(txn: &ReadTransaction, name: &str) -> Result<u64, StoreError> {
    let table = txn.open_table(META).map_err(io)?;
    Ok(table.get(name).map_err(io)?.map_or(0, |v| v.value()))
}

fn to_kv(key: &str, (create_revision, mod_revision, value): (u64, u64, &[u8])) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: value.to_vec(),
        create_revision,
        mod_revision,
    }
}

fn write_loop(db: &Database, hub: &Mutex<Hub>, rx: &mpsc::Receiver<Request>, history: usize) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let (ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().map(|r| (r.op, r.reply)).unzip();
        match commit(db, ops, history) {
            Ok((results, entries)) => {
                let mut hub = lock(hub);
                for entry in entries {
                    hub.publish(entry);
                }
                drop(hub);
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

type Results = Vec<Result<KeyValue, StoreError>>;

/// Applies `ops` in order in one durable transaction. The outer error means nothing was
/// committed; the inner results are each operation's own outcome.
fn commit(
    db: &Database,
    ops: Vec<Op>,
    history: usize,
) -> Result<(Results, Vec<Entry>), StoreError> {
    let mut txn = db.begin_write().map_err(io)?;
    txn.set_durability(Durability::Immediate).map_err(io)?;
    let (results, entries) = apply(&txn, ops, history)?;
    if entries.is_empty() {
        // Only failed preconditions: nothing to make durable.
        txn.abort().map_err(io)?;
    } else {
        txn.commit().map_err(io)?;
    }
    Ok((results, entries))
}

struct KvTable<'t>(::redb::Table<'t, &'static str, (u64, u64, &'static [u8])>);

impl Table for KvTable<'_> {
    fn get(&mut self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.0.get(key).map_err(io)?.map(|v| to_kv(key, v.value())))
    }

    fn put(&mut self, kv: &KeyValue) -> Result<(), StoreError> {
        self.0
            .insert(
                kv.key.as_str(),
                (kv.create_revision, kv.mod_revision, kv.value.as_slice()),
            )
            .map_err(io)?;
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Result<(), StoreError> {
        self.0.remove(key).map_err(io)?;
        Ok(())
    }
}

fn apply(
    txn: &WriteTransaction,
    ops: Vec<Op>,
    history: usize,
) -> Result<(Results, Vec<Entry>), StoreError> {
    let mut kv = KvTable(txn.open_table(KV).map_err(io)?);
    let mut log = txn.open_table(LOG).map_err(io)?;
    let mut meta = txn.open_table(META).map_err(io)?;
    let get = |meta: &::redb::Table<&str, u64>, name| -> Result<u64, StoreError> {
        Ok(meta.get(name).map_err(io)?.map_or(0, |v| v.value()))
    };
    let mut revision = get(&meta, REVISION)?;
    let compacted = get(&meta, COMPACTED)?;

    let mut results = Vec::with_capacity(ops.len());
    let mut entries = Vec::with_capacity(ops.len());
    let mut buf = Vec::new();
    for op in ops {
        match op.apply(&mut kv, revision + 1) {
            Ok((result, entry)) => {
                revision += 1;
                codec::encode(&entry.event, &mut buf);
                log.insert(revision, buf.as_slice()).map_err(io)?;
                results.push(Ok(result));
                entries.push(entry);
            }
            // A storage failure inside an operation fails the whole transaction.
            Err(e @ StoreError::Io(_)) => return Err(e),
            Err(e) => results.push(Err(e)),
        }
    }
    if entries.is_empty() {
        return Ok((results, entries));
    }
    meta.insert(REVISION, revision).map_err(io)?;
    // Keep the newest `history` events; the log covers (compacted, revision].
    let floor = revision.saturating_sub(history as u64);
    if floor > compacted {
        log.retain_in(compacted + 1..=floor, |_, _| false)
            .map_err(io)?;
        meta.insert(COMPACTED, floor).map_err(io)?;
    }
    Ok((results, entries))
}

#[async_trait::async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_owned();
        self.read(move |txn| {
            let table = txn.open_table(KV).map_err(io)?;
            Ok(table
                .get(key.as_str())
                .map_err(io)?
                .map(|v| to_kv(&key, v.value())))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let prefix = prefix.to_owned();
        self.read(move |txn| {
            let revision = meta(txn, REVISION)?;
            let table = txn.open_table(KV).map_err(io)?;
            let mut items = Vec::new();
            for row in table.range(prefix.as_str()..).map_err(io)? {
                let (key, value) = row.map_err(io)?;
                let key = key.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                items.push(to_kv(key, value.value()));
            }
            Ok((items, revision))
        })
        .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        self.write(Op::Create {
            key: key.to_owned(),
            value,
        })
        .await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<KeyValue, StoreError> {
        self.write(Op::Update {
            key: key.to_owned(),
            value,
            expected,
        })
        .await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        self.write(Op::Delete {
            key: key.to_owned(),
            expected,
        })
        .await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        lock(&self.hub).watch(prefix, after)
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.read(|txn| meta(txn, REVISION)).await
    }
}
