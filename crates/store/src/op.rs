//! The write operations, with their preconditions, written once for every backend.

use crate::hub::Entry;
use crate::{KeyValue, Revision, StoreError};

/// A backend's current key/value view inside one write.
pub(crate) trait Table {
    fn get(&mut self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    fn put(&mut self, kv: &KeyValue) -> Result<(), StoreError>;
    fn remove(&mut self, key: &str) -> Result<(), StoreError>;
}

#[derive(Debug)]
pub(crate) enum Op {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Option<Revision>,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
}

fn check(key: &str, current: &KeyValue, expected: Option<Revision>) -> Result<(), StoreError> {
    match expected {
        Some(rev) if rev != current.mod_revision => Err(StoreError::Conflict {
            key: key.to_owned(),
            expected: rev,
            actual: current.mod_revision,
        }),
        _ => Ok(()),
    }
}

impl Op {
    /// Applies the operation as the write of `revision` (the current revision + 1). On
    /// error nothing was written and the revision stays unused.
    pub fn apply(
        self,
        table: &mut impl Table,
        revision: Revision,
    ) -> Result<(KeyValue, Entry), StoreError> {
        match self {
            Op::Create { key, value } => {
                if table.get(&key)?.is_some() {
                    return Err(StoreError::AlreadyExists(key));
                }
                let kv = KeyValue {
                    key,
                    value,
                    create_revision: revision,
                    mod_revision: revision,
                };
                table.put(&kv)?;
                Ok((kv.clone(), Entry::put(kv, None)))
            }
            Op::Update {
                key,
                value,
                expected,
            } => {
                let Some(prev) = table.get(&key)? else {
                    return Err(StoreError::NotFound(key));
                };
                check(&key, &prev, expected)?;
                let kv = KeyValue {
                    key,
                    value,
                    create_revision: prev.create_revision,
                    mod_revision: revision,
                };
                table.put(&kv)?;
                Ok((kv.clone(), Entry::put(kv, Some(prev))))
            }
            Op::Delete { key, expected } => {
                let Some(prev) = table.get(&key)? else {
                    return Err(StoreError::NotFound(key));
                };
                check(&key, &prev, expected)?;
                table.remove(&key)?;
                Ok((prev.clone(), Entry::delete(prev, revision)))
            }
        }
    }
}
