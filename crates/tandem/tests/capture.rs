//! `tandem mesh capture` as a process: the istio-iptables flags, run the way istio-init
//! and Istio CNI's validation container run them, in a private network namespace so the
//! machine's own rules are never touched. Needs root, `iptables` (nft or legacy) and
//! iproute2; without them the tests are skipped, except under `CI=true`, where they fail.

use std::os::unix::process::CommandExt;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

/// A thread in its own network namespace. Processes spawned from it inherit the namespace,
/// which is how an unprivileged child (that may not call setns) gets into it.
struct Netns {
    tx: Option<mpsc::Sender<Job>>,
    handle: Option<JoinHandle<()>>,
}

impl Netns {
    fn new() -> Netns {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let handle = std::thread::spawn(move || {
            let _ = ready_tx.send(nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET));
            for job in rx {
                job();
            }
        });
        ready_rx
            .recv()
            .expect("namespace thread started")
            .expect("unshare(CLONE_NEWNET)");
        let ns = Netns {
            tx: Some(tx),
            handle: Some(handle),
        };
        // The validation probe goes over loopback.
        let mut cmd = Command::new("ip");
        cmd.args(["link", "set", "lo", "up"]);
        let out = ns.output(cmd);
        assert!(out.status.success(), "ip link set lo up: {out:?}");
        ns
    }

    /// Runs `cmd` to completion from the namespace thread.
    fn output(&self, mut cmd: Command) -> Output {
        let (tx, rx) = mpsc::channel();
        let line = format!("{cmd:?}");
        let job: Job = Box::new(move || {
            let _ = tx.send(cmd.output());
        });
        self.tx
            .as_ref()
            .expect("namespace thread alive")
            .send(job)
            .expect("namespace thread alive");
        rx.recv()
            .expect("job finished")
            .unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    /// `tandem mesh capture ARGS` in the namespace as `uid` (and the same gid).
    fn capture_as(&self, uid: u32, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
        cmd.args(["mesh", "capture"]).args(args);
        if uid != 0 {
            // Anyone may read "/"; the package directory may not be readable for `uid`.
            cmd.current_dir("/").uid(uid).gid(uid);
        }
        self.output(cmd)
    }

    /// The nat table as `iptables-save` prints it.
    fn nat(&self) -> String {
        let mut cmd = Command::new("iptables-save");
        cmd.args(["-t", "nat"]);
        let out = self.output(cmd);
        assert!(out.status.success(), "iptables-save: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn on_path(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok()
}

/// Root, iptables and iproute2 present. Skips (returns false) unless CI=true, where a
/// missing prerequisite fails the test.
fn prerequisites() -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root".to_string());
    }
    for tool in ["iptables", "iptables-save", "iptables-restore", "ip"] {
        if !on_path(tool) {
            missing.push(tool.to_string());
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("missing prerequisites: {}", missing.join(", "));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    false
}

/// The args Istio's injector gives istio-init.
const INJECTED: &[&str] = &[
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
    "--log_output_level=default:info",
];

/// What Istio CNI's validation container runs: no rule changes, as the proxy user.
const VALIDATE: &[&str] = &[
    "-p",
    "15001",
    "-z",
    "15006",
    "--skip-rule-apply",
    "--run-validation",
    "--probe-timeout=1s",
];

fn report(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn run_validation_sees_the_redirect_only_once_rules_are_in() {
    if !prerequisites() {
        return;
    }
    let pod = Netns::new();

    // Without rules the probe is not redirected: istio-iptables' validation exit code.
    let out = pod.capture_as(1337, VALIDATE);
    assert_eq!(out.status.code(), Some(126), "{}", report(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("iptables validation failed"),
        "{}",
        report(&out)
    );
    // --skip-rule-apply left the table alone.
    assert!(!pod.nat().contains("ISTIO"));

    // istio-init's run, as root.
    let out = pod.capture_as(0, INJECTED);
    assert_eq!(out.status.code(), Some(0), "{}", report(&out));
    assert!(pod.nat().contains(":ISTIO_OUTPUT - [0:0]"));

    let out = pod.capture_as(1337, VALIDATE);
    assert_eq!(out.status.code(), Some(0), "{}", report(&out));
}
