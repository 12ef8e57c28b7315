//! The object store behind the API server.
//!
//! Shaped like etcd's model so that a redb file, an in-memory map and (later) etcd are
//! interchangeable: keys are strings (`/registry/pods/default/web`), values are opaque
//! bytes (the API server stores JSON), and every write bumps one global, monotonic
//! revision. An object's `resourceVersion` is the revision of its last write
//! (`mod_revision`). Watches replay history from any revision still in the window and
//! fail with [`StoreError::Expired`] below it (the API's 410 `Expired`).

#![forbid(unsafe_code)]

mod codec;
mod hub;
pub mod memory;
mod op;
pub mod redb;

pub use self::memory::MemoryStore;
pub use self::redb::RedbStore;

/// A store revision (the API's `resourceVersion`).
pub type Revision = u64;

/// One stored key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created the key.
    pub create_revision: Revision,
    /// Revision of the last write to the key (its resourceVersion).
    pub mod_revision: Revision,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Created (`prev` is None) or updated.
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// Deleted; `prev` is the last value, `revision` the revision of the delete.
    Delete { prev: KeyValue, revision: Revision },
    /// Nothing changed up to this revision (progress notification, for bookmarks).
    Progress { revision: Revision },
}

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("key {0} not found")]
    NotFound(String),
    #[error("key {0} already exists")]
    AlreadyExists(String),
    /// An update or delete with a precondition found another revision.
    #[error("key {key}: expected revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },
    /// A watch asked for history that was compacted away. `oldest` is the oldest revision
    /// a watch may still start after (Kubernetes prints both in its 410 message).
    #[error("too old resource version: {requested} ({oldest})")]
    Expired {
        requested: Revision,
        oldest: Revision,
    },
    #[error("store I/O: {0}")]
    Io(String),
}

/// Tuning shared by the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// How many of the latest events are kept for watches to resume from; a watch after an
    /// older revision gets `Expired`.
    pub history: usize,
    /// How many live events may wait unread in one watch before it is ended with an error
    /// (writers never wait for watchers).
    pub watch_buffer: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            history: 10_000,
            watch_buffer: 1_024,
        }
    }
}

/// A live watch: events in revision order, ending with an error or when the store closes.
pub struct Watch {
    pub events: tokio::sync::mpsc::Receiver<Result<WatchEvent, StoreError>>,
}

impl Watch {
    /// The next event, or None once the watch has ended.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        self.events.recv().await
    }
}

/// The store contract. Every acknowledged write is durable for durable backends.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The current key, if any.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Every key starting with `prefix`, in key order, with the store's revision at the
    /// time of the read (a list's resourceVersion).
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError>;

    /// Creates `key`; fails with `AlreadyExists` if it is there.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError>;

    /// Replaces `key`'s value. With `expected = Some(rev)`, only if its mod_revision is
    /// `rev` (else `Conflict`). Fails with `NotFound` if the key does not exist.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<KeyValue, StoreError>;

    /// Deletes `key` (with an optional mod_revision precondition); returns the last value.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError>;

    /// Watches keys under `prefix` for changes with a revision greater than `after`:
    /// first the kept history, then live events, each exactly once and in order. `after = 0`
    /// means "from the first revision", so pass the revision of a preceding `list` to watch
    /// from now. `Expired` if `after` is older than the history kept. A watcher that leaves
    /// more than [`Options::watch_buffer`] events unread is ended with an error.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError>;

    /// The store's current revision.
    async fn revision(&self) -> Result<Revision, StoreError>;
}
