//! The byte format of one event in the durable event log.
//!
//! `tag:u8` then, for a put (tag 0), the new key/value and an optional previous one
//! (`has_prev:u8`); for a delete (tag 1), the deleted key/value. A key/value is
//! `key_len:u32 key create:u64 mod:u64 value_len:u32 value`, little-endian. The event's
//! revision is the log key, so it is not repeated here.

use crate::{KeyValue, Revision, StoreError, WatchEvent};

const PUT: u8 = 0;
const DELETE: u8 = 1;

pub(crate) fn encode(event: &WatchEvent, out: &mut Vec<u8>) {
    out.clear();
    match event {
        WatchEvent::Put { kv, prev } => {
            out.push(PUT);
            put_kv(out, kv);
            match prev {
                Some(prev) => {
                    out.push(1);
                    put_kv(out, prev);
                }
                None => out.push(0),
            }
        }
        WatchEvent::Delete { prev, .. } => {
            out.push(DELETE);
            put_kv(out, prev);
        }
        // Progress notifications are never logged.
        WatchEvent::Progress { .. } => {}
    }
}

fn put_kv(out: &mut Vec<u8>, kv: &KeyValue) {
    put_bytes(out, kv.key.as_bytes());
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    put_bytes(out, &kv.value);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Values larger than 4 GiB cannot reach the store (the API limits requests far below).
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&bytes[..len as usize]);
}

pub(crate) fn decode(revision: Revision, bytes: &[u8]) -> Result<WatchEvent, StoreError> {
    let mut r = Reader { bytes, revision };
    let event = match r.u8()? {
        PUT => {
            let kv = r.kv()?;
            let prev = match r.u8()? {
                0 => None,
                _ => Some(r.kv()?),
            };
            WatchEvent::Put { kv, prev }
        }
        DELETE => WatchEvent::Delete {
            prev: r.kv()?,
            revision,
        },
        tag => return Err(r.corrupt(&format!("unknown tag {tag}"))),
    };
    if !r.bytes.is_empty() {
        return Err(r.corrupt("trailing bytes"));
    }
    Ok(event)
}

struct Reader<'a> {
    bytes: &'a [u8],
    revision: Revision,
}

impl<'a> Reader<'a> {
    fn corrupt(&self, what: &str) -> StoreError {
        StoreError::Io(format!(
            "event log entry {} is corrupt: {what}",
            self.revision
        ))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < n {
            return Err(self.corrupt("truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        let mut b = [0; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn kv(&mut self) -> Result<KeyValue, StoreError> {
        let key = std::str::from_utf8(self.bytes()?)
            .map_err(|_| self.corrupt("key is not UTF-8"))?
            .to_owned();
        let create_revision = self.u64()?;
        let mod_revision = self.u64()?;
        let value = self.bytes()?.to_vec();
        Ok(KeyValue {
            key,
            value,
            create_revision,
            mod_revision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &[u8], c: Revision, m: Revision) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: c,
            mod_revision: m,
        }
    }

    #[test]
    fn events_survive_a_round_trip() {
        let events = [
            WatchEvent::Put {
                kv: kv("/registry/pods/default/a", b"{}", 3, 3),
                prev: None,
            },
            WatchEvent::Put {
                kv: kv("/registry/pods/default/a", b"{\"x\":1}", 3, 7),
                prev: Some(kv("/registry/pods/default/a", b"{}", 3, 3)),
            },
            WatchEvent::Delete {
                prev: kv("/registry/pods/default/a", b"", 3, 7),
                revision: 9,
            },
        ];
        let mut buf = Vec::new();
        for (rev, event) in [3, 7, 9].into_iter().zip(events) {
            encode(&event, &mut buf);
            assert_eq!(decode(rev, &buf), Ok(event));
        }
    }

    #[test]
    fn damaged_entries_are_errors_not_panics() {
        let mut buf = Vec::new();
        let event = WatchEvent::Put {
            kv: kv("k", b"value", 1, 1),
            prev: None,
        };
        encode(&event, &mut buf);
        for cut in 0..buf.len() {
            assert!(matches!(decode(1, &buf[..cut]), Err(StoreError::Io(_))));
        }
        buf.push(0);
        assert!(matches!(decode(1, &buf), Err(StoreError::Io(_))));
        assert!(matches!(decode(1, &[7]), Err(StoreError::Io(_))));
    }
}
