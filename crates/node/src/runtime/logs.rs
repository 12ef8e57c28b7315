//! Container logs in the CRI format the kubelet reads:
//! `2026-11-25T15:51:26.123456789Z stdout F text` per line, `P` for the pieces of a line
//! longer than [`MAX_LINE`]. One file per container instance; the current and the previous
//! instance's files are kept.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;

/// Longest piece written as one record (containerd uses 16 KiB too).
pub(crate) const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// RFC 3339 in UTC with nanoseconds, the timestamp of every log record.
pub(crate) fn format_timestamp(ts: Timestamp) -> String {
    format!("{ts:.9}")
}

/// Splits a byte stream into CRI records.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    stream: Stream,
    pending: Vec<u8>,
}

impl LineSplitter {
    pub(crate) fn new(stream: Stream) -> Self {
        Self {
            stream,
            pending: Vec::new(),
        }
    }

    fn record(&self, ts: &str, tag: char, text: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(ts.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.stream.as_str().as_bytes());
        out.push(b' ');
        out.push(tag as u8);
        out.push(b' ');
        out.extend_from_slice(text);
        out.push(b'\n');
    }

    /// Appends the records completed by `data` to `out`, all stamped `now`.
    pub(crate) fn push(&mut self, data: &[u8], now: Timestamp, out: &mut Vec<u8>) {
        let ts = format_timestamp(now);
        let mut rest = data;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.pending.extend_from_slice(&rest[..i]);
                    rest = &rest[i + 1..];
                    self.flush_long(&ts, out);
                    let line = std::mem::take(&mut self.pending);
                    self.record(&ts, 'F', &line, out);
                }
                None => {
                    self.pending.extend_from_slice(rest);
                    rest = &[];
                    self.flush_long(&ts, out);
                }
            }
        }
    }

    /// Emits full-size pieces of an overlong pending line as partial records.
    fn flush_long(&mut self, ts: &str, out: &mut Vec<u8>) {
        while self.pending.len() > MAX_LINE {
            let piece: Vec<u8> = self.pending.drain(..MAX_LINE).collect();
            self.record(ts, 'P', &piece, out);
        }
    }

    /// At end of stream: an unterminated last line is written as a full record
    /// (as containerd does).
    pub(crate) fn finish(&mut self, now: Timestamp, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.record(&format_timestamp(now), 'F', &line, out);
        }
    }
}

/// Copies `input` into the shared log file until end of stream.
pub(crate) fn pump(mut input: fs::File, stream: Stream, log: Arc<Mutex<fs::File>>) {
    let mut splitter = LineSplitter::new(stream);
    let mut buf = vec![0u8; 32 * 1024];
    let mut records = Vec::new();
    let write = |records: &[u8]| {
        if records.is_empty() {
            return;
        }
        // A poisoned lock only means the other pump panicked; the file is still usable.
        let mut file = log.lock().unwrap_or_else(|e| e.into_inner());
        let _ = file.write_all(records);
    };
    loop {
        match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                records.clear();
                splitter.push(&buf[..n], Timestamp::now(), &mut records);
                write(&records);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    records.clear();
    splitter.finish(Timestamp::now(), &mut records);
    write(&records);
}

/// `<dir>/<attempt>.log`.
pub(crate) fn instance_log(dir: &Path, attempt: u32) -> PathBuf {
    dir.join(format!("{attempt}.log"))
}

/// Numbered entries (`<n>` or `<n>.log`) of `dir` that are neither `current` nor the
/// newest one below it.
pub(crate) fn stale_instances(dir: &Path, current: u32, suffix: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let numbered: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name();
            let n = name.to_str()?.strip_suffix(suffix)?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    let previous = numbered
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| *n < current)
        .max();
    numbered
        .into_iter()
        .filter(|(n, _)| *n != current && Some(*n) != previous)
        .map(|(_, p)| p)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts() -> Timestamp {
        "2026-11-25T15:51:26.123456789Z".parse().expect("timestamp")
    }

    fn run(chunks: &[&[u8]], stream: Stream) -> String {
        let mut s = LineSplitter::new(stream);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, ts(), &mut out);
        }
        s.finish(ts(), &mut out);
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn lines_get_timestamp_stream_and_full_tag() {
        assert_eq!(
            run(&[b"hello\nwor", b"ld\n"], Stream::Stdout),
            "2026-11-25T15:51:26.123456789Z stdout F hello\n\
             2026-11-25T15:51:26.123456789Z stdout F world\n"
        );
    }

    #[test]
    fn whole_seconds_keep_nine_fraction_digits() {
        let t: Timestamp = "2026-01-02T03:04:05Z".parse().expect("timestamp");
        assert_eq!(format_timestamp(t), "2026-01-02T03:04:05.000000000Z");
    }

    #[test]
    fn empty_lines_and_unterminated_tail_are_records() {
        assert_eq!(
            run(&[b"\nlast"], Stream::Stderr),
            "2026-11-25T15:51:26.123456789Z stderr F \n\
             2026-11-25T15:51:26.123456789Z stderr F last\n"
        );
    }

    #[test]
    fn overlong_lines_are_split_into_partial_records() {
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let mut input = long.clone();
        input.push(b'\n');
        let text = run(&[&input], Stream::Stdout);
        let records: Vec<&str> = text.lines().collect();
        assert_eq!(records.len(), 3);
        assert!(records[0].contains(" stdout P "));
        assert!(records[1].contains(" stdout P "));
        assert!(records[2].ends_with(" stdout F xxxxx"));
        let total: usize = records
            .iter()
            .map(|r| r.splitn(4, ' ').nth(3).map_or(0, str::len))
            .sum();
        assert_eq!(total, long.len());
    }

    #[test]
    fn only_current_and_previous_instances_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        for n in [0, 1, 2, 4] {
            fs::write(instance_log(dir.path(), n), "x").expect("write");
        }
        fs::write(dir.path().join("notes.txt"), "x").expect("write");
        let mut stale = stale_instances(dir.path(), 5, ".log");
        stale.sort();
        assert_eq!(
            stale,
            vec![
                instance_log(dir.path(), 0),
                instance_log(dir.path(), 1),
                instance_log(dir.path(), 2)
            ]
        );
    }
}
