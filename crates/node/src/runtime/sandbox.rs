//! `tandem sandbox HOSTNAME`: the process that holds a pod's namespaces.
//!
//! It leaves the agent's session, unshares network, UTS, IPC and mount namespaces, sets the
//! hostname, brings `lo` up, makes its mount tree private (so nothing mounted for the pod
//! reaches the host), prints `ready` and then sleeps until it is killed. Containers join
//! its namespaces through `/proc/<pid>/ns/*`.

use std::io::Write;
use std::process::ExitCode;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

use super::sys;

/// Written on stdout once the namespaces are ready.
pub(crate) const READY: &str = "ready";

pub fn main(args: &[String]) -> ExitCode {
    let [hostname] = args else {
        eprintln!("usage: tandem sandbox HOSTNAME");
        return ExitCode::from(2);
    };
    match setup(hostname) {
        Ok(()) => {}
        Err(message) => {
            eprintln!("tandem sandbox: {message}");
            return ExitCode::FAILURE;
        }
    }
    let mut out = std::io::stdout();
    if writeln!(out, "{READY}").and_then(|()| out.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    // Nothing reads stdout any more; keep the agent's pipe from being held open.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
    loop {
        nix::unistd::pause();
    }
}

fn setup(hostname: &str) -> Result<(), String> {
    // Own session: terminal signals aimed at the agent do not reach the pod.
    let _ = nix::unistd::setsid();
    let _ = std::env::set_current_dir("/");
    unshare(
        CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWNS,
    )
    .map_err(|e| format!("unshare: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private: {e}"))?;
    nix::unistd::sethostname(hostname).map_err(|e| format!("sethostname: {e}"))?;
    sys::loopback_up().map_err(|e| format!("bringing lo up: {e}"))?;
    Ok(())
}
