//! An in-memory store: the same contract as the durable one, for tests and throwaway runs.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use crate::hub::Hub;
use crate::op::{Op, Table};
use crate::{KeyValue, Options, Revision, Store, StoreError, Watch};

/// A `BTreeMap` behind one lock, with a revision counter and the shared watch hub.
/// Share it with `Arc`.
pub struct MemoryStore {
    state: Mutex<State>,
}

struct State {
    data: BTreeMap<String, KeyValue>,
    revision: Revision,
    hub: Hub,
}

impl Table for BTreeMap<String, KeyValue> {
    fn get(&mut self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(BTreeMap::get(self, key).cloned())
    }

    fn put(&mut self, kv: &KeyValue) -> Result<(), StoreError> {
        self.insert(kv.key.clone(), kv.clone());
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Result<(), StoreError> {
        BTreeMap::remove(self, key);
        Ok(())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store with the default [`Options`].
    pub fn new() -> Self {
        Self::with_options(Options::default())
    }

    pub fn with_options(options: Options) -> Self {
        Self {
            state: Mutex::new(State {
                data: BTreeMap::new(),
                revision: 0,
                hub: Hub::new(options.history, options.watch_buffer, 0, []),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-written (each write is
        // one insert or remove), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, op: Op) -> Result<KeyValue, StoreError> {
        let mut state = self.lock();
        let state = &mut *state;
        let revision = state.revision + 1;
        let (kv, entry) = op.apply(&mut state.data, revision)?;
        state.revision = revision;
        state.hub.publish(entry);
        Ok(kv)
    }
}

pub(crate) fn prefix_range<'a, V>(
    map: &'a BTreeMap<String, V>,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a String, &'a V)> + 'a {
    map.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.lock().data.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let state = self.lock();
        let items = prefix_range(&state.data, prefix)
            .map(|(_, kv)| kv.clone())
            .collect();
        Ok((items, state.revision))
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        self.write(Op::Create {
            key: key.to_owned(),
            value,
        })
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
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        self.write(Op::Delete {
            key: key.to_owned(),
            expected,
        })
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        self.lock().hub.watch(prefix, after)
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.lock().revision)
    }
}
