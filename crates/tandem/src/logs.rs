//! `--logs`: follow container log files (CRI format) and print their lines with a prefix.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Follows any number of log files until stopped.
pub struct LogFollower {
    out: Arc<Mutex<std::io::Stdout>>,
    tasks: Mutex<JoinSet<()>>,
    stop: CancellationToken,
}

impl LogFollower {
    pub fn start(out: Arc<Mutex<std::io::Stdout>>) -> Arc<Self> {
        Arc::new(Self {
            out,
            tasks: Mutex::new(JoinSet::new()),
            stop: CancellationToken::new(),
        })
    }

    /// Prints every line of `path`, now and as it grows, as `<prefix> <text>`.
    pub fn follow(&self, prefix: String, path: PathBuf) {
        let out = self.out.clone();
        let stop = self.stop.clone();
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.spawn(async move {
            let mut offset = 0u64;
            let mut partial = String::new();
            loop {
                let stopping = stop.is_cancelled();
                offset = drain(&path, offset, &mut partial, &prefix, &out);
                if stopping {
                    break;
                }
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        });
    }

    /// Prints what is left in every file and stops following.
    pub async fn stop(&self) {
        self.stop.cancel();
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        while tasks.join_next().await.is_some() {}
    }
}

/// Reads from `offset` to the end and prints complete CRI lines; returns the new offset.
fn drain(
    path: &PathBuf,
    offset: u64,
    partial: &mut String,
    prefix: &str,
    out: &Mutex<std::io::Stdout>,
) -> u64 {
    let Ok(mut file) = std::fs::File::open(path) else {
        return offset;
    };
    if file.seek(SeekFrom::Start(offset)).is_err() {
        return offset;
    }
    let mut bytes = Vec::new();
    let Ok(read) = file.read_to_end(&mut bytes) else {
        return offset;
    };
    partial.push_str(&String::from_utf8_lossy(&bytes));
    let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
    while let Some(end) = partial.find('\n') {
        let line: String = partial.drain(..=end).collect();
        if let Some(text) = cri_text(line.trim_end_matches('\n')) {
            let _ = writeln!(out, "{prefix} {text}");
        }
    }
    let _ = out.flush();
    offset + read as u64
}

/// The message part of a CRI log line: `<time> <stream> <P|F> <text>`.
pub fn cri_text(line: &str) -> Option<&str> {
    let mut parts = line.splitn(4, ' ');
    let _time = parts.next()?;
    let _stream = parts.next()?;
    let _tag = parts.next()?;
    Some(parts.next().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::cri_text;

    #[test]
    fn cri_lines_yield_their_text() {
        assert_eq!(
            cri_text("2026-11-25T15:51:26.123456789Z stdout F hello world"),
            Some("hello world")
        );
        assert_eq!(cri_text("2026-11-25T15:51:26Z stderr F "), Some(""));
        assert_eq!(cri_text("garbage"), None);
    }
}
