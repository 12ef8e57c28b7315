//! Watch history and fan-out, shared by every backend.
//!
//! The hub keeps the last `window` events in memory and the open watchers. Backends call
//! [`Hub::publish`] for each committed event, in revision order, while holding the lock
//! that also serialises [`Hub::watch`]; so a new watcher gets the history replay and then
//! the live events with no gap and no duplicate.

use std::collections::VecDeque;

use tokio::sync::mpsc;

use crate::{KeyValue, Revision, StoreError, Watch, WatchEvent};

/// One committed change, as kept in the history.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub revision: Revision,
    pub event: WatchEvent,
}

impl Entry {
    pub fn put(kv: KeyValue, prev: Option<KeyValue>) -> Self {
        Self {
            revision: kv.mod_revision,
            event: WatchEvent::Put { kv, prev },
        }
    }

    pub fn delete(prev: KeyValue, revision: Revision) -> Self {
        Self {
            revision,
            event: WatchEvent::Delete { prev, revision },
        }
    }

    pub fn key(&self) -> &str {
        event_key(&self.event)
    }
}

fn event_key(event: &WatchEvent) -> &str {
    match event {
        WatchEvent::Put { kv, .. } => &kv.key,
        WatchEvent::Delete { prev, .. } => &prev.key,
        WatchEvent::Progress { .. } => "",
    }
}

struct Watcher {
    prefix: String,
    /// Only events after this revision are delivered (the replay may already cover some
    /// events a backend publishes later, see `RedbStore`).
    after: Revision,
    tx: mpsc::Sender<Result<WatchEvent, StoreError>>,
}

impl Watcher {
    /// Offers one event; false once the watcher is gone or has been ended.
    fn offer(&mut self, entry: &Entry) -> bool {
        if self.tx.is_closed() {
            return false;
        }
        if entry.revision <= self.after || !entry.key().starts_with(&self.prefix) {
            return true;
        }
        // One slot is always kept free for the error that ends a watcher that fell behind,
        // so writers never wait on a slow reader.
        if self.tx.capacity() <= 1 {
            let _ = self.tx.try_send(Err(StoreError::Io(format!(
                "watch on {:?} fell behind at revision {}; watch again from the last revision seen",
                self.prefix, entry.revision
            ))));
            return false;
        }
        self.after = entry.revision;
        self.tx.try_send(Ok(entry.event.clone())).is_ok()
    }
}

pub(crate) struct Hub {
    history: VecDeque<Entry>,
    /// Every event with a revision up to this one has left the history.
    compacted: Revision,
    window: usize,
    buffer: usize,
    watchers: Vec<Watcher>,
}

impl Hub {
    /// `history` must be in revision order and directly follow `compacted`.
    pub fn new(
        window: usize,
        buffer: usize,
        compacted: Revision,
        history: impl IntoIterator<Item = Entry>,
    ) -> Self {
        let mut hub = Self {
            history: history.into_iter().collect(),
            compacted,
            window,
            buffer: buffer.max(1),
            watchers: Vec::new(),
        };
        hub.trim();
        hub
    }

    /// Records a committed event and hands it to the matching watchers.
    pub fn publish(&mut self, entry: Entry) {
        self.watchers.retain_mut(|w| w.offer(&entry));
        self.history.push_back(entry);
        self.trim();
    }

    fn trim(&mut self) {
        while self.history.len() > self.window {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.revision;
            }
        }
    }

    /// Starts a watch on `prefix` for events after `after`.
    pub fn watch(&mut self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        if after < self.compacted {
            return Err(StoreError::Expired {
                requested: after,
                oldest: self.compacted,
            });
        }
        let start = self.history.partition_point(|e| e.revision <= after);
        let replay: Vec<&Entry> = self
            .history
            .range(start..)
            .filter(|e| e.key().starts_with(prefix))
            .collect();
        // Room for the whole replay, the live buffer and the final error: the replay is
        // sent right here, under the caller's lock, so no live event can slip in between.
        let (tx, rx) = mpsc::channel(replay.len() + self.buffer + 1);
        let mut last = after;
        for entry in replay {
            if tx.try_send(Ok(entry.event.clone())).is_err() {
                break;
            }
            last = entry.revision;
        }
        // Events already in the history but outside the prefix are behind us as well.
        if let Some(newest) = self.history.back() {
            last = last.max(newest.revision);
        }
        self.watchers.push(Watcher {
            prefix: prefix.to_owned(),
            after: last.max(after),
            tx,
        });
        Ok(Watch { events: rx })
    }
}
