//! Finding pods again after an agent restart: the sandbox record of a pod, the instances
//! of its containers, the pods that have state on disk, and removing what belongs to pods
//! the API no longer knows.

use std::fs;
use std::io;
use std::time::Duration;

use super::state::{self, SANDBOX, STATUS, Status};
use super::{
    ContainerHandle, ExitInfo, ProcessRuntime, RuntimeError, Sandbox, check_name, io_error,
};

impl Sandbox {
    /// The namespace holder still runs (the recorded pid with the recorded start time).
    pub fn is_running(&self) -> bool {
        self.process.running()
    }
}

impl ProcessRuntime {
    /// The sandbox recorded for pod `uid`, running or not; `None` without a readable record.
    pub fn find_sandbox(&self, uid: &str) -> Option<Sandbox> {
        check_name("pod uid", uid).ok()?;
        state::read_json(&self.pod_dir(uid).join(SANDBOX)).ok()
    }

    /// Uids of the pods that have state under the runtime root.
    pub fn pods_on_disk(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.inner.cfg.root.join("pods")) else {
            return Vec::new();
        };
        let mut uids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        uids.sort();
        uids
    }

    /// Instance numbers of container `name` of pod `uid` on disk, ascending.
    pub fn instances(&self, uid: &str, name: &str) -> Vec<u32> {
        if check_name("pod uid", uid).is_err() || check_name("container name", name).is_err() {
            return Vec::new();
        }
        let dir = self.pod_dir(uid).join("containers").join(name);
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut attempts: Vec<u32> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        attempts.sort_unstable();
        attempts
    }

    /// The exit recorded for instance `attempt` of a container, if it has ended.
    pub fn recorded_exit(&self, uid: &str, name: &str, attempt: u32) -> Option<ExitInfo> {
        check_name("pod uid", uid).ok()?;
        check_name("container name", name).ok()?;
        let path = self
            .pod_dir(uid)
            .join("containers")
            .join(name)
            .join(attempt.to_string())
            .join(STATUS);
        let status: Status = state::read_json(&path).ok()?;
        status.exit.map(|rec| rec.to_info())
    }

    /// The newest instance of container `name` that ever ran (a start that failed before
    /// the process existed left no instance). If its supervisor is gone, the handle
    /// already holds the exit (recorded, or an error if none was).
    pub async fn adopt_newest(&self, sb: &Sandbox, name: &str) -> Option<ContainerHandle> {
        for attempt in self.instances(&sb.uid, name).into_iter().rev() {
            let Some(handle) = self.adopt_container(sb, name, attempt) else {
                continue;
            };
            if handle.exit().is_none() && !self.supervisor_running(&handle) {
                // Returns at once: there is no supervisor to wait for.
                self.wait(&handle).await;
            }
            return Some(handle);
        }
        None
    }

    /// Whether the instance's supervisor still runs (so its exit is still to come).
    pub fn supervisor_running(&self, h: &ContainerHandle) -> bool {
        h.0.exit.get().is_none() && h.0.shim.is_some_and(|s| s.running())
    }

    /// Removes the state of pod `uid` whose worker is gone: stops the newest instance of
    /// every container (SIGTERM, SIGKILL after `grace`), then the sandbox, the mount points
    /// and state directories. Logs stay.
    pub async fn remove_pod_state(&self, uid: &str, grace: Duration) -> Result<(), RuntimeError> {
        check_name("pod uid", uid)?;
        let pod_dir = self.pod_dir(uid);
        let Some(sb) = self.find_sandbox(uid) else {
            // No sandbox was ever recorded, so no container could have started; an
            // address may have been handed out before the record was written.
            self.detach_network(uid).await;
            return match fs::remove_dir_all(&pod_dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    Err(io_error(format!("removing {}", pod_dir.display()))(e))
                }
                _ => Ok(()),
            };
        };
        let mut running = Vec::new();
        if let Ok(names) = fs::read_dir(pod_dir.join("containers")) {
            for name in names.filter_map(Result::ok) {
                let Ok(name) = name.file_name().into_string() else {
                    continue;
                };
                if let Some(h) = self.adopt_newest(&sb, &name).await
                    && self.supervisor_running(&h)
                {
                    running.push(h);
                }
            }
        }
        // All at once: which of them are sidecars is in a spec nobody has any more.
        futures::future::join_all(running.iter().map(|h| self.stop_container(h, grace))).await;
        self.stop_sandbox(&sb).await
    }
}
