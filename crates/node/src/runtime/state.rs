//! What the agent and the shim exchange, and the files that let a later agent find a
//! container again: `config.json` (agent -> shim), the one-line start report on the shim's
//! stdout, and `status.json` (shim -> anyone), written atomically.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::ExitInfo;
use super::procfs::ProcId;
use super::resolve::ContainerSpec;

pub(crate) const CONFIG: &str = "config.json";
pub(crate) const STATUS: &str = "status.json";
/// FIFO the shim reads signal numbers from, one per line.
pub(crate) const CONTROL: &str = "ctl";
pub(crate) const SHIM_LOG: &str = "shim.log";
pub(crate) const SANDBOX: &str = "sandbox.json";
pub(crate) const SANDBOX_LOG: &str = "sandbox.log";
/// Mount points the shims created on the host filesystem, one path per line; removed
/// when the pod's sandbox is stopped.
pub(crate) const CREATED_PATHS: &str = "created-paths";

/// The shim's instructions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ShimConfig {
    pub id: String,
    pub attempt: u32,
    pub spec: ContainerSpec,
    pub sandbox: ProcId,
    pub log_path: PathBuf,
    pub pod_dir: PathBuf,
}

/// An exit as stored on disk (timestamps as RFC 3339 text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExitRecord {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: String,
}

impl ExitRecord {
    /// Kubernetes' view of a process exit: 128 + signal for signals, `Completed` for 0.
    pub(crate) fn from_process(
        code: Option<i32>,
        signal: Option<i32>,
        started_at: Option<Timestamp>,
        finished_at: Timestamp,
    ) -> Self {
        let exit_code = match (code, signal) {
            (_, Some(sig)) => 128 + sig,
            (Some(code), None) => code,
            (None, None) => 255,
        };
        Self {
            exit_code,
            signal,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: started_at.map(|t| t.to_string()),
            finished_at: finished_at.to_string(),
        }
    }

    /// A start that failed at exec time (`ContainerCannotRun`).
    pub(crate) fn cannot_run(exit_code: i32, message: String, at: Timestamp) -> Self {
        Self {
            exit_code,
            signal: None,
            reason: "ContainerCannotRun".into(),
            message: Some(message),
            started_at: None,
            finished_at: at.to_string(),
        }
    }

    pub(crate) fn to_info(&self) -> ExitInfo {
        let parse = |s: &str| s.parse::<Timestamp>().ok();
        ExitInfo {
            exit_code: self.exit_code,
            signal: self.signal,
            reason: self.reason.clone(),
            message: self.message.clone(),
            started_at: self.started_at.as_deref().and_then(parse),
            finished_at: parse(&self.finished_at).unwrap_or_else(Timestamp::now),
        }
    }
}

/// The shim's one-line answer to "start this container".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub(crate) enum Report {
    /// The process runs.
    Started { pid: i32, started_at: String },
    /// exec failed; the instance exists and has already exited.
    CannotRun { exit: ExitRecord },
    /// Nothing was started (mount failure, sandbox gone, ...).
    Failed { message: String },
}

/// `status.json`: the shim's current view of its container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Status {
    pub id: String,
    pub shim: Option<ProcId>,
    pub pid: Option<i32>,
    pub started_at: Option<String>,
    pub exit: Option<ExitRecord>,
    pub failed: Option<String>,
}

/// Writes `dir/name` so that readers see the old or the new content, never a mix.
pub(crate) fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, data)?;
    fs::rename(&tmp, dir.join(name))
}

pub(crate) fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> io::Result<()> {
    let data = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_atomic(dir, name, &data)
}

pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<T> {
    let data = fs::read(path)?;
    serde_json::from_slice(&data).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_reported_the_kubernetes_way() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().expect("ts");
        let t1: Timestamp = "2026-01-01T00:00:05Z".parse().expect("ts");
        let ok = ExitRecord::from_process(Some(0), None, Some(t0), t1).to_info();
        assert_eq!((ok.exit_code, ok.reason.as_str()), (0, "Completed"));
        assert_eq!((ok.started_at, ok.finished_at), (Some(t0), t1));
        let err = ExitRecord::from_process(Some(3), None, Some(t0), t1);
        assert_eq!((err.exit_code, err.reason.as_str()), (3, "Error"));
        let term = ExitRecord::from_process(None, Some(15), Some(t0), t1);
        assert_eq!((term.exit_code, term.signal), (143, Some(15)));
        let kill = ExitRecord::from_process(None, Some(9), Some(t0), t1);
        assert_eq!((kill.exit_code, kill.reason.as_str()), (137, "Error"));
    }

    #[test]
    fn reports_round_trip_as_one_json_line() {
        let r = Report::Started {
            pid: 42,
            started_at: "2026-01-01T00:00:00Z".into(),
        };
        let line = serde_json::to_string(&r).expect("json");
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<Report>(&line).expect("parse"), r);
    }

    #[test]
    fn atomic_write_replaces_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_json(
            dir.path(),
            STATUS,
            &Status {
                id: "a".into(),
                ..Default::default()
            },
        )
        .expect("write");
        write_json(
            dir.path(),
            STATUS,
            &Status {
                id: "b".into(),
                ..Default::default()
            },
        )
        .expect("write");
        let s: Status = read_json(&dir.path().join(STATUS)).expect("read");
        assert_eq!(s.id, "b");
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}
