//! Kills what is left in a stopped pod's namespaces (exec'd commands and their orphans,
//! probes, hooks): processes that are no container's descendants, so no shim reaps them.
//!
//! Finding them means reading every process's namespace links in `/proc`, about 7 ms with
//! a thousand processes on the node. When many pods stop at once (a Deployment scaled to
//! zero), one scan serves every pod waiting at that moment, on one thread, instead of a
//! scan per pod.

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::procfs;

/// How long to wait between rounds while processes are still dying.
const ROUND_PAUSE: Duration = Duration::from_millis(5);

/// One pod's sweep: kill every live process (but `keep`) that is in one of `ids`.
#[derive(Debug)]
struct Request {
    ids: BTreeSet<String>,
    keep: i32,
    deadline: Instant,
    done: tokio::sync::oneshot::Sender<()>,
}

/// The handle of the sweeping thread, started with the first request.
#[derive(Debug)]
pub(crate) struct Sweeper {
    tx: std::sync::Mutex<Option<mpsc::Sender<Request>>>,
}

impl Sweeper {
    pub(crate) const fn new() -> Self {
        Self {
            tx: std::sync::Mutex::new(None),
        }
    }

    /// Kills the processes in the namespaces `ids` (as [`procfs::ProcId::namespace_ids`]
    /// reads them), except `keep`, until none is left or `timeout` has passed.
    pub(crate) async fn sweep(&self, ids: Vec<String>, keep: i32, timeout: Duration) {
        if ids.is_empty() {
            return;
        }
        let (done, finished) = tokio::sync::oneshot::channel();
        let request = Request {
            ids: ids.into_iter().collect(),
            keep,
            deadline: Instant::now() + timeout,
            done,
        };
        let sent = {
            let mut tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
            let sender = tx.get_or_insert_with(start);
            match sender.send(request) {
                Ok(()) => true,
                Err(mpsc::SendError(request)) => {
                    // The thread is gone (it panicked): start another.
                    let sender = tx.insert(start());
                    sender.send(request).is_ok()
                }
            }
        };
        if sent {
            let _ = finished.await;
        }
    }
}

fn start() -> mpsc::Sender<Request> {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("sweeper".into())
        .spawn(move || run(rx));
    if let Err(e) = spawned {
        tracing::warn!(%e, "cannot start the namespace sweeper");
    }
    tx
}

/// Serves requests until every sender is gone.
fn run(rx: mpsc::Receiver<Request>) {
    let mut pending: Vec<Request> = Vec::new();
    loop {
        if pending.is_empty() {
            match rx.recv() {
                Ok(first) => pending.push(first),
                Err(_) => return,
            }
        }
        pending.extend(rx.try_iter());
        let members = members(&pending);
        let now = Instant::now();
        let mut left = Vec::with_capacity(pending.len());
        for (request, pids) in pending.into_iter().zip(members) {
            if pids.is_empty() || now > request.deadline {
                let _ = request.done.send(());
                continue;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            left.push(request);
        }
        pending = left;
        if !pending.is_empty() {
            std::thread::sleep(ROUND_PAUSE);
        }
    }
}

/// For each request, the live processes in its namespaces: one pass over `/proc`.
fn members(requests: &[Request]) -> Vec<Vec<i32>> {
    let me = std::process::id() as i32;
    let mut out = vec![Vec::new(); requests.len()];
    for pid in procfs::all_pids() {
        if pid == me {
            continue;
        }
        let links = procfs::namespace_links(pid, &procfs::POD_NAMESPACES);
        if links.is_empty() {
            continue;
        }
        let mut live = None;
        for (request, found) in requests.iter().zip(out.iter_mut()) {
            if pid == request.keep || !links.iter().any(|l| request.ids.contains(l)) {
                continue;
            }
            let is_live =
                *live.get_or_insert_with(|| procfs::stat(pid).is_some_and(|s| s.state != 'Z'));
            if is_live {
                found.push(pid);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child in its own network namespace is found and killed; the process kept and
    /// the caller are spared. Needs root (unshare).
    #[tokio::test]
    async fn sweeps_the_processes_of_a_namespace_and_keeps_the_one_asked() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
                "this test needs root (unshare); CI runs as root"
            );
            eprintln!("skipping: needs root");
            return;
        }
        let mut holder = std::process::Command::new("unshare")
            .args(["--net", "--uts", "sleep", "60"])
            .spawn()
            .expect("unshare");
        let holder_pid = holder.id() as i32;
        // Wait until unshare has exec'd sleep inside the new namespaces.
        let host_net = std::fs::read_link("/proc/self/ns/net").expect("own ns");
        let deadline = Instant::now() + Duration::from_secs(5);
        let net = loop {
            let link = std::fs::read_link(format!("/proc/{holder_pid}/ns/net"));
            if let Ok(link) = link
                && link != host_net
            {
                break link;
            }
            assert!(Instant::now() < deadline, "namespace never appeared");
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut member = std::process::Command::new("nsenter")
            .args(["-t", &holder_pid.to_string(), "--net", "sleep", "60"])
            .spawn()
            .expect("nsenter");
        let member_pid = member.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(format!("/proc/{member_pid}/ns/net")).ok() != Some(net.clone()) {
            assert!(Instant::now() < deadline, "nsenter never joined");
            std::thread::sleep(Duration::from_millis(10));
        }

        let sweeper = Sweeper::new();
        let ids = vec![net.to_string_lossy().into_owned()];
        sweeper.sweep(ids, holder_pid, Duration::from_secs(5)).await;
        let status = member.wait().expect("wait member");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        assert!(holder.try_wait().expect("try_wait").is_none(), "kept");
        let _ = holder.kill();
        let _ = holder.wait();
    }
}
