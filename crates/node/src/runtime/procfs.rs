//! Reading `/proc`: process start times (pid reuse safety), process trees and namespace
//! membership.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};

/// The fields of `/proc/<pid>/stat` the runtime needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub ppid: i32,
    /// `R`, `S`, `Z`, ...
    pub state: char,
    /// Start time in clock ticks since boot: with the pid, identifies a process for good.
    pub start_time: u64,
}

/// Parses the text of `/proc/<pid>/stat`. The command name may contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

pub(crate) fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// A process identified by pid and start time, so a reused pid is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcId {
    pub(crate) fn current() -> Option<Self> {
        let pid = std::process::id() as i32;
        Some(Self {
            pid,
            start_time: stat(pid)?.start_time,
        })
    }

    pub(crate) fn of(pid: i32) -> Option<Self> {
        Some(Self {
            pid,
            start_time: stat(pid)?.start_time,
        })
    }

    /// The process still exists (possibly as a zombie) and is the one recorded.
    pub(crate) fn exists(&self) -> bool {
        stat(self.pid).is_some_and(|s| s.start_time == self.start_time)
    }

    /// Alive and not a zombie.
    pub(crate) fn running(&self) -> bool {
        stat(self.pid).is_some_and(|s| s.start_time == self.start_time && s.state != 'Z')
    }

    /// Opens `/proc/<pid>/ns/<kind>` for each kind, checking afterwards that the pid still
    /// belongs to this process (so the fds cannot belong to a successor).
    pub(crate) fn open_namespaces(&self, kinds: &[&str]) -> std::io::Result<Vec<OwnedFd>> {
        let mut fds = Vec::with_capacity(kinds.len());
        for kind in kinds {
            let file = fs::File::open(format!("/proc/{}/ns/{kind}", self.pid))?;
            fds.push(OwnedFd::from(file));
        }
        if !self.running() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "process is gone",
            ));
        }
        Ok(fds)
    }

    /// `/proc/<pid>/ns/<kind>` link targets such as `net:[4026532281]`.
    pub(crate) fn namespace_ids(&self, kinds: &[&str]) -> Vec<String> {
        namespace_links(self.pid, kinds)
    }
}

/// Every numeric entry of `/proc` (thread group leaders).
pub(crate) fn all_pids() -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// All descendants of `root` (not `root` itself) with their stats.
pub(crate) fn descendants(root: i32) -> Vec<(i32, Stat)> {
    let mut children: BTreeMap<i32, Vec<(i32, Stat)>> = BTreeMap::new();
    for pid in all_pids() {
        if let Some(st) = stat(pid) {
            children.entry(st.ppid).or_default().push((pid, st));
        }
    }
    let mut out = Vec::new();
    let mut queue = vec![root];
    while let Some(parent) = queue.pop() {
        if let Some(kids) = children.remove(&parent) {
            for (pid, st) in kids {
                queue.push(pid);
                out.push((pid, st));
            }
        }
    }
    out
}

/// The namespaces a pod's sandbox holds and every process of the pod joins.
pub(crate) const POD_NAMESPACES: [&str; 4] = ["net", "uts", "ipc", "mnt"];

/// The links of `/proc/<pid>/ns/<kind>` (like `net:[4026531840]`) that could be read.
pub(crate) fn namespace_links(pid: i32, kinds: &[&str]) -> Vec<String> {
    kinds
        .iter()
        .filter_map(|kind| {
            fs::read_link(format!("/proc/{pid}/ns/{kind}"))
                .ok()
                .map(|p| p.to_string_lossy().into_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let text = "4242 (my (odd) prog) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        let st = parse_stat(text).expect("parses");
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 17);
        assert_eq!(st.start_time, 987654);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_found_with_its_start_time() {
        let me = ProcId::current().expect("own stat");
        assert!(me.running());
        let other = ProcId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(
            !other.exists(),
            "a different start time is a different process"
        );
    }

    #[test]
    fn children_are_descendants() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        let me = std::process::id() as i32;
        let found = descendants(me)
            .iter()
            .any(|(pid, _)| *pid == child.id() as i32);
        let _ = child.kill();
        let _ = child.wait();
        assert!(found);
    }
}
