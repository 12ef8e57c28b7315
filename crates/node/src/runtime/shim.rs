//! `tandem shim STATE_DIR`: the supervisor of one container instance.
//!
//! Started by the agent with `STATE_DIR/config.json` ([`ShimConfig`]), it
//! 1. leaves the agent's session and opens everything it needs on the host side (log file,
//!    volume sources as `O_PATH` fds, the control FIFO), so later mount namespaces cannot
//!    hide them;
//! 2. joins the sandbox's IPC, UTS, network and mount namespaces and unshares a mount
//!    namespace of its own, where it bind-mounts the volumes;
//! 3. becomes a child subreaper and starts the container process (own process group, env,
//!    working directory, user), reporting one JSON line on stdout;
//! 4. pumps stdout/stderr into the CRI log file, forwards signals written to the FIFO to
//!    the whole process tree, and when the main process exits kills what is left, writes
//!    the exit to `status.json` and exits.
//!
//! It is single-threaded until the container runs (setns and unshare require that).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::sys::statvfs::{FsFlags, statvfs};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use rustix::fs::CWD;
use rustix::mount::{MoveMountFlags, OpenTreeFlags, move_mount, open_tree};

use super::logs::{self, Stream};
use super::procfs::{self, ProcId};
use super::resolve::{DEFAULT_PATH, MountSpec};
use super::state::{
    self, CONFIG, CONTROL, CREATED_PATHS, ExitRecord, Report, STATUS, ShimConfig, Status,
};
use super::sys::{self, Identity};
use crate::gofmt::go_quote;

/// How long the log pumps may take to drain after the process tree is gone.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

pub fn main(args: &[String]) -> ExitCode {
    let [dir] = args else {
        eprintln!("usage: tandem shim STATE_DIR");
        return ExitCode::from(2);
    };
    match run(Path::new(dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem shim: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Why setup stopped.
enum SetupError {
    /// Nothing runs; the agent reports a start error.
    Failed(String),
    /// exec failed: the instance ran and exited at once.
    CannotRun(i32, String),
}

fn failed(message: impl Into<String>) -> SetupError {
    SetupError::Failed(message.into())
}

/// The container process and what the shim keeps for it.
struct Running {
    pid: i32,
    started_at: Timestamp,
    stdout: OwnedFd,
    stderr: OwnedFd,
    log: File,
    control: File,
}

fn run(dir: &Path) -> io::Result<()> {
    let _ = nix::unistd::setsid();
    let dir_file = File::open(dir)?;
    // A path to the state directory that stays valid in any mount namespace.
    let state_dir = PathBuf::from(format!("/proc/self/fd/{}", dir_file.as_raw_fd()));
    let _ = std::env::set_current_dir("/");
    let cfg: ShimConfig = state::read_json(&state_dir.join(CONFIG))?;
    let mut status = Status {
        id: cfg.id.clone(),
        shim: ProcId::current(),
        ..Status::default()
    };
    state::write_json(&state_dir, STATUS, &status)?;
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;

    let running = match setup(&cfg, &state_dir) {
        Ok(running) => running,
        Err(SetupError::Failed(message)) => {
            status.failed = Some(message.clone());
            state::write_json(&state_dir, STATUS, &status)?;
            return report(&Report::Failed { message });
        }
        Err(SetupError::CannotRun(code, message)) => {
            let exit = ExitRecord::cannot_run(code, message, Timestamp::now());
            status.exit = Some(exit.clone());
            state::write_json(&state_dir, STATUS, &status)?;
            return report(&Report::CannotRun { exit });
        }
    };

    let started_at = running.started_at.to_string();
    status.pid = Some(running.pid);
    status.started_at = Some(started_at.clone());
    state::write_json(&state_dir, STATUS, &status)?;
    report(&Report::Started {
        pid: running.pid,
        started_at,
    })?;
    // The agent has its answer; do not hold its pipe open (or die of SIGPIPE on it).
    let _ = nix::unistd::dup2_stdout(&null);

    let me = std::process::id() as i32;
    let log = Arc::new(Mutex::new(running.log));
    let (done_tx, done_rx) = mpsc::channel();
    for (fd, stream) in [
        (running.stdout, Stream::Stdout),
        (running.stderr, Stream::Stderr),
    ] {
        let log = log.clone();
        let done = done_tx.clone();
        std::thread::spawn(move || {
            logs::pump(File::from(fd), stream, log);
            let _ = done.send(());
        });
    }
    let control = running.control;
    // Opened while main cannot have been reaped yet (only this thread reaps), so the fd
    // is main's for good, whatever happens to its pid later.
    let main = rustix::process::Pid::from_raw(running.pid)
        .and_then(|pid| rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok())
        .map(|fd| (running.pid, fd));
    std::thread::spawn(move || serve_control(control, me, main));

    let (code, signal) = wait_main(running.pid);
    let finished_at = Timestamp::now();
    // As with a pid namespace ending, nothing of the container outlives its main process.
    kill_tree(me);
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    status.exit = Some(ExitRecord::from_process(
        code,
        signal,
        Some(running.started_at),
        finished_at,
    ));
    state::write_json(&state_dir, STATUS, &status)
}

fn report(r: &Report) -> io::Result<()> {
    let line = serde_json::to_string(r).map_err(io::Error::other)?;
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

fn setup(cfg: &ShimConfig, state_dir: &Path) -> Result<Running, SetupError> {
    let spec = &cfg.spec;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(&cfg.log_path)
        .map_err(|e| failed(format!("opening log file {}: {e}", cfg.log_path.display())))?;
    let mut created = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(cfg.pod_dir.join(CREATED_PATHS))
        .map_err(|e| failed(format!("opening {CREATED_PATHS}: {e}")))?;
    let control_path = state_dir.join(CONTROL);
    match nix::unistd::mkfifo(&control_path, Mode::from_bits_truncate(0o600)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(failed(format!("creating control fifo: {e}"))),
    }
    // Read-write, so the FIFO never reports end-of-file when a writer goes away.
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&control_path)
        .map_err(|e| failed(format!("opening control fifo: {e}")))?;

    // Volume sources are resolved in the host's view (hostPath means the host's path).
    let mut sources = Vec::with_capacity(spec.mounts.len());
    for m in &spec.mounts {
        sources.push(open_source(m)?);
    }

    let namespaces = cfg
        .sandbox
        .open_namespaces(&["ipc", "uts", "net", "mnt"])
        .map_err(|_| failed("pod sandbox is not running"))?;
    for ns in &namespaces {
        setns(ns, CloneFlags::empty()).map_err(|e| failed(format!("joining the pod: {e}")))?;
    }
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| failed(format!("unshare mount ns: {e}")))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| failed(format!("making / private: {e}")))?;
    for (m, (fd, is_dir)) in spec.mounts.iter().zip(&sources) {
        bind_volume(m, fd, *is_dir, &mut created)?;
    }

    let exe = find_executable(&spec.argv, spec.env_value("PATH").unwrap_or(DEFAULT_PATH))?;
    if !spec.working_dir.is_dir() {
        return Err(SetupError::CannotRun(
            128,
            format!(
                "chdir to cwd ({}) set in config.json failed: no such file or directory",
                go_quote(&spec.working_dir.to_string_lossy())
            ),
        ));
    }

    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| failed(format!("pipe: {e}")));
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    // Orphans of the container become our children, so none can escape the final kill.
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| failed(format!("PR_SET_CHILD_SUBREAPER: {e}")))?;

    let argv0 = spec.argv.first().cloned().unwrap_or_default();
    let child = {
        // Scoped: dropping the Command closes our copies of the pipes' write ends.
        let mut cmd = Command::new(&exe);
        cmd.arg0(&argv0)
            .args(spec.argv.iter().skip(1))
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.working_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out_w))
            .stderr(Stdio::from(err_w))
            .process_group(0);
        sys::exec_as(
            &mut cmd,
            Identity {
                uid: spec.user.uid,
                gid: spec.user.gid,
                groups: spec.user.groups.clone(),
            },
        );
        cmd.spawn()
    };
    let child = child.map_err(|e| exec_error(&argv0, &e))?;
    Ok(Running {
        pid: child.id() as i32,
        started_at: Timestamp::now(),
        stdout: out_r,
        stderr: err_r,
        log,
        control,
    })
}

fn open_source(m: &MountSpec) -> Result<(OwnedFd, bool), SetupError> {
    let fail = |what: String| {
        failed(format!(
            "failed to mount volume {:?} at {}: {what}",
            m.volume,
            m.target.display()
        ))
    };
    if m.create_source && !m.source.exists() {
        fs::create_dir_all(&m.source)
            .map_err(|e| fail(format!("creating {}: {e}", m.source.display())))?;
    }
    // A detached copy of the source tree: unlike a path or an fd of a mount in another
    // namespace, it can be attached inside the container's mount namespace.
    let flags = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC
        | OpenTreeFlags::AT_RECURSIVE;
    let fd = open_tree(CWD, &m.source, flags)
        .map_err(|e| fail(format!("{}: {}", m.source.display(), errno_text(e))))?;
    let is_dir = nix::sys::stat::fstat(&fd)
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        .map_err(|e| fail(format!("{}: {}", m.source.display(), e.desc())))?;
    Ok((fd, is_dir))
}

/// Creates a missing mount point (recording what it created) and bind-mounts the source.
fn bind_volume(
    m: &MountSpec,
    source: &OwnedFd,
    is_dir: bool,
    created: &mut File,
) -> Result<(), SetupError> {
    let fail = |what: String| {
        failed(format!(
            "failed to mount volume {:?} at {}: {what}",
            m.volume,
            m.target.display()
        ))
    };
    if fs::symlink_metadata(&m.target).is_err() {
        let mut missing = Vec::new();
        let mut cur = m.target.parent();
        while let Some(p) = cur {
            if p.exists() {
                break;
            }
            missing.push(p.to_path_buf());
            cur = p.parent();
        }
        for dir in missing.iter().rev() {
            make_mount_point(dir, true, created)
                .map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
        }
        make_mount_point(&m.target, is_dir, created)
            .map_err(|e| fail(format!("creating mount point: {e}")))?;
    }
    let empty = MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH;
    move_mount(source, "", CWD, &m.target, empty).map_err(|e| fail(errno_text(e)))?;
    if m.read_only {
        // A read-only remount must repeat the flags it wants to keep.
        let keep = statvfs(&m.target)
            .map(|s| s.flags())
            .unwrap_or(FsFlags::empty());
        let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        for (st, ms) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if keep.contains(st) {
                flags |= ms;
            }
        }
        mount(None::<&str>, &m.target, None::<&str>, flags, None::<&str>)
            .map_err(|e| fail(format!("read-only remount: {}", e.desc())))?;
    }
    Ok(())
}

fn make_mount_point(path: &Path, dir: bool, created: &mut File) -> io::Result<()> {
    let made = if dir {
        fs::create_dir(path)
    } else {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)
            .map(drop)
    };
    match made {
        Ok(()) => {
            if dir {
                fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
            }
            writeln!(created, "{}", path.display())
        }
        // Another container of the pod created it at the same moment; it records it.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Finds the program like Go's `exec.LookPath` (what runc uses), with its messages.
fn find_executable(argv: &[String], path_env: &str) -> Result<PathBuf, SetupError> {
    let Some(name) = argv.first().filter(|n| !n.is_empty()) else {
        return Err(SetupError::CannotRun(
            128,
            "no command specified".to_owned(),
        ));
    };
    let quoted = go_quote(name);
    let executable = |p: &Path| -> Result<(), Errno> {
        let meta = fs::metadata(p).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
        if meta.is_dir() || meta.permissions().mode() & 0o111 == 0 {
            return Err(Errno::EACCES);
        }
        Ok(())
    };
    if name.contains('/') {
        return match executable(Path::new(name)) {
            Ok(()) => Ok(PathBuf::from(name)),
            Err(Errno::EACCES) => Err(SetupError::CannotRun(
                126,
                format!("exec: {quoted}: permission denied"),
            )),
            Err(e) => Err(SetupError::CannotRun(
                127,
                format!("exec: {quoted}: stat {name}: {}", lower(e.desc())),
            )),
        };
    }
    for dir in path_env.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        if executable(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err(SetupError::CannotRun(
        127,
        format!("exec: {quoted}: executable file not found in $PATH"),
    ))
}

/// `No such file or directory` for a rustix error.
fn errno_text(e: rustix::io::Errno) -> String {
    Errno::from_raw(e.raw_os_error()).desc().to_owned()
}

fn lower(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Maps a failed spawn (the error exec returned in the child) to ContainerCannotRun.
fn exec_error(argv0: &str, e: &io::Error) -> SetupError {
    let errno = Errno::from_raw(e.raw_os_error().unwrap_or(0));
    let code = match errno {
        Errno::ENOENT => 127,
        Errno::EACCES | Errno::EPERM | Errno::ENOEXEC => 126,
        _ => 128,
    };
    SetupError::CannotRun(
        code,
        format!("exec: {}: {}", go_quote(argv0), lower(errno.desc())),
    )
}

/// Reaps children until the main process exits; returns (exit code, signal).
fn wait_main(main: i32) -> (Option<i32>, Option<i32>) {
    loop {
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() == main => return (Some(code), None),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() == main => {
                return (None, Some(sig as i32));
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return (None, None),
        }
    }
}

/// Reaps every exited child; true if live children remain. The shim is a subreaper, so
/// once its main process is reaped every descendant left is a child of the shim or below
/// one: without children there is nothing to look for in `/proc`.
fn reap_any() -> bool {
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return true,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(Errno::ECHILD) => return false,
            Err(_) => return true,
        }
    }
}

/// Sends `sig` to the main process and to its process group (named by its pid), unless it
/// has exited: then its pid, and so the group's id, may be reused, and what is left is the
/// main thread's to kill.
fn signal_main(pid: i32, fd: &OwnedFd, sig: Signal) {
    // Looks without reaping: `Some` once main has exited, an error once it was reaped.
    use rustix::process::{WaitId, WaitIdOptions, waitid};
    let look = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    if !matches!(waitid(WaitId::PidFd(fd.as_fd()), look), Ok(None)) {
        return;
    }
    if let Some(raw) = rustix::process::Signal::from_named_raw(sig as i32) {
        let _ = rustix::process::pidfd_send_signal(fd, raw);
    }
    // The group may be gone, or main may have left it: both are tried.
    let _ = kill(Pid::from_raw(-pid), sig);
}

/// Sends `sig` to every live descendant of `root`.
fn signal_descendants(root: i32, sig: Signal) -> usize {
    let live: Vec<i32> = procfs::descendants(root)
        .into_iter()
        .filter(|(_, st)| st.state != 'Z')
        .map(|(pid, _)| pid)
        .collect();
    for pid in &live {
        let _ = kill(Pid::from_raw(*pid), sig);
    }
    live.len()
}

/// SIGKILLs the whole tree below `root` until nothing is left, reaping as it goes.
/// Scanning `/proc` costs milliseconds with a thousand processes on the node, so it only
/// happens while children are left (most containers leave none).
fn kill_tree(root: i32) {
    for _ in 0..1000 {
        if !reap_any() {
            return;
        }
        signal_descendants(root, Signal::SIGKILL);
        if !reap_any() || procfs::descendants(root).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Reads signal numbers from the control FIFO and delivers them: SIGKILL to the whole
/// tree below the shim, any other signal to the main process and its process group. A
/// process that left the group (a daemon) is not asked to stop, as in Kubernetes, where
/// only the container's first process gets SIGTERM; it is killed with the rest once the
/// main process exits. This keeps a stop from scanning `/proc`, which costs milliseconds
/// with a thousand processes on the node.
fn serve_control(control: File, root: i32, main: Option<(i32, OwnedFd)>) {
    let mut reader = BufReader::new(control);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => std::thread::sleep(Duration::from_millis(50)),
            Ok(_) => {
                let Some(sig) = line
                    .trim()
                    .parse::<i32>()
                    .ok()
                    .and_then(|n| Signal::try_from(n).ok())
                else {
                    continue;
                };
                if sig != Signal::SIGKILL
                    && let Some((pid, fd)) = &main
                {
                    signal_main(*pid, fd, sig);
                    continue;
                }
                // SIGKILL is repeated until the tree is empty, so a process forked in
                // between is caught too; the main thread reaps.
                for _ in 0..500 {
                    if signal_descendants(root, sig) == 0 {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cannot_run(r: Result<PathBuf, SetupError>) -> (i32, String) {
        match r {
            Err(SetupError::CannotRun(code, message)) => (code, message),
            Err(SetupError::Failed(m)) => panic!("unexpected setup failure {m}"),
            Ok(p) => panic!("unexpectedly found {}", p.display()),
        }
    }

    #[test]
    fn programs_are_looked_up_like_go_exec() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tool = dir.path().join("tool");
        fs::write(&tool, "#!/bin/sh\n").expect("write");
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).expect("chmod");
        let data = dir.path().join("data");
        fs::write(&data, "x").expect("write");
        let path = format!("/nonexistent:{}", dir.path().display());
        let argv = |s: &str| vec![s.to_owned()];

        assert_eq!(
            find_executable(&argv("tool"), &path).ok(),
            Some(tool.clone())
        );
        assert_eq!(
            cannot_run(find_executable(&argv("data"), &path)),
            (
                127,
                "exec: \"data\": executable file not found in $PATH".into()
            )
        );
        let data_str = data.display().to_string();
        assert_eq!(
            cannot_run(find_executable(&argv(&data_str), &path)),
            (126, format!("exec: \"{data_str}\": permission denied"))
        );
        assert_eq!(
            cannot_run(find_executable(&argv("/no/such/bin"), &path)),
            (
                127,
                "exec: \"/no/such/bin\": stat /no/such/bin: no such file or directory".into()
            )
        );
        let dir_str = dir.path().display().to_string();
        assert_eq!(cannot_run(find_executable(&argv(&dir_str), &path)).0, 126);
    }

    #[test]
    fn exec_errors_map_to_kubernetes_exit_codes() {
        let err = |errno: i32| match exec_error("app", &io::Error::from_raw_os_error(errno)) {
            SetupError::CannotRun(code, message) => (code, message),
            SetupError::Failed(m) => panic!("{m}"),
        };
        assert_eq!(
            err(libc::ENOENT),
            (127, "exec: \"app\": no such file or directory".into())
        );
        assert_eq!(err(libc::EACCES).0, 126);
        assert_eq!(err(libc::ENOEXEC).0, 126);
        assert_eq!(err(libc::E2BIG).0, 128);
    }
}
