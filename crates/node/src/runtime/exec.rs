//! `kubectl exec`: a command run inside a running container, as a container runtime's exec
//! does it: in the container's mount namespace and the pod's network, UTS and IPC
//! namespaces (those of the instance's shim), with the container's environment, user and
//! working directory, on pipes or on a new pseudo-terminal.
//!
//! A multi-threaded process may not enter a mount namespace, so the command's own process
//! joins the namespaces between fork and exec, while it is still single-threaded (see
//! `sys`). std hands a failed setns or exec back as the spawn error, so a command that
//! cannot start is an error here, not an exit code.

use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};

use nix::errno::Errno;
use rustix::pty::OpenptFlags;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::resolve::image_program;
use super::sys::{self, ControllingTerminal, Identity};
use super::{ContainerHandle, ProcessRuntime};
use crate::gofmt::go_quote;

/// What to run and which streams to connect (`PodExecOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// On a pseudo-terminal: stdin, stdout and stderr are all the terminal.
    pub tty: bool,
    /// With `tty`: the terminal's size (width, height) when the command starts.
    pub size: Option<(u16, u16)>,
}

/// Why nothing runs.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// No running instance of the container (the kubelet's wording).
    #[error("container not found ({})", go_quote(.0))]
    NotFound(String),
    /// The command could not be started (runc's wording for exec failures).
    #[error("{0}")]
    Start(String),
}

/// The command's stdin.
pub type ExecInput = Pin<Box<dyn AsyncWrite + Send>>;
/// The command's stdout or stderr.
pub type ExecOutput = Pin<Box<dyn AsyncRead + Send>>;

/// A started command: its streams (those asked for), its terminal and the process.
pub struct ExecSession {
    pub stdin: Option<ExecInput>,
    pub stdout: Option<ExecOutput>,
    pub stderr: Option<ExecOutput>,
    pub terminal: Option<Terminal>,
    pub process: ExecProcess,
}

/// The pseudo-terminal of a session with `tty`.
pub struct Terminal {
    master: OwnedFd,
}

impl Terminal {
    /// Sets the window size; the kernel tells the foreground process group (SIGWINCH).
    pub fn resize(&self, width: u16, height: u16) -> io::Result<()> {
        set_size(&self.master, width, height)
    }
}

fn set_size(master: &OwnedFd, width: u16, height: u16) -> io::Result<()> {
    let size = rustix::termios::Winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(master, size).map_err(io::Error::from)
}

/// The command's process. Dropped before it exited, it is killed with its process group
/// (a client that goes away takes its command with it).
pub struct ExecProcess {
    child: tokio::process::Child,
    /// Its own process group (and session, on a terminal): the pid.
    group: i32,
    exited: bool,
}

impl ExecProcess {
    /// Waits for the exit; the exit code, 128 + the signal number for a signal.
    pub async fn wait(&mut self) -> io::Result<i32> {
        let status = self.child.wait().await?;
        self.exited = true;
        use std::os::unix::process::ExitStatusExt;
        Ok(status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(255))
    }
}

impl Drop for ExecProcess {
    fn drop(&mut self) {
        // Not reaped yet, so the group id cannot belong to anyone else.
        if !self.exited && self.group > 0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.group),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The environment of an exec'd command: the container's, and on a terminal `TERM=xterm`
/// (as containerd's CRI exec sets it).
pub fn exec_env(container_env: &[(String, String)], tty: bool) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = container_env
        .iter()
        .filter(|(k, _)| !(tty && k == "TERM"))
        .cloned()
        .collect();
    if tty {
        env.push(("TERM".to_owned(), "xterm".to_owned()));
    }
    env
}

/// The message for a command that could not start, from the error of the spawn (which
/// carries the errno of the failed exec or setup step).
pub fn start_error(program: &str, err: &io::Error) -> String {
    let quoted = go_quote(program);
    let errno = Errno::from_raw(err.raw_os_error().unwrap_or(0));
    let why = match errno {
        Errno::ENOENT if program.contains('/') => {
            format!("stat {program}: no such file or directory")
        }
        Errno::ENOENT => "executable file not found in $PATH".to_owned(),
        Errno::EACCES | Errno::EPERM => "permission denied".to_owned(),
        Errno::UnknownErrno => err.to_string(),
        other => lower_first(other.desc()),
    };
    format!("unable to start container process: exec: {quoted}: {why}")
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A pty master read as a stream: `EIO` (every slave closed) is the end.
struct PtyReader(tokio::net::unix::pipe::Receiver);

impl AsyncRead for PtyReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.0).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.raw_os_error() == Some(libc::EIO) => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

/// A new pty: the master (non-blocking, for the reactor) and its slave.
fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    // The slave by its master, not by a path that depends on the mount namespace.
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags)?;
    rustix::io::ioctl_fionbio(&master, true)?;
    Ok((master, slave))
}

impl ProcessRuntime {
    /// The running instance of `container` in pod `uid`, if there is one.
    fn running_instance(&self, uid: &str, container: &str) -> Option<ContainerHandle> {
        let sb = self.find_sandbox(uid).filter(|sb| sb.is_running())?;
        let newest = self
            .instances(uid, container)
            .into_iter()
            .rev()
            .find_map(|attempt| self.adopt_container(&sb, container, attempt))?;
        (self.supervisor_running(&newest) && newest.pid().is_some()).then_some(newest)
    }

    /// Starts `opts.command` in the running container `container` of pod `uid`.
    pub async fn exec(
        &self,
        uid: &str,
        container: &str,
        opts: ExecOptions,
    ) -> Result<ExecSession, ExecError> {
        let not_found = || ExecError::NotFound(container.to_owned());
        let handle = self
            .running_instance(uid, container)
            .ok_or_else(not_found)?;
        let shim = handle.0.shim.ok_or_else(not_found)?;
        let namespaces = shim
            .open_namespaces(&["ipc", "uts", "net", "mnt"])
            .map_err(|_| not_found())?;
        let spec = handle.spec();
        let argv = image_program(&spec.image, &self.inner.cfg.helper_exe, &opts.command)
            .unwrap_or(opts.command);
        let Some(program) = argv.first().filter(|p| !p.is_empty()).cloned() else {
            return Err(ExecError::Start(
                "unable to start container process: exec: no command specified".to_owned(),
            ));
        };
        let cwd = CString::new(spec.working_dir.as_os_str().as_bytes())
            .map_err(|e| ExecError::Start(e.to_string()))?;
        let identity = Identity {
            uid: spec.user.uid,
            gid: spec.user.gid,
            groups: spec.user.groups.clone(),
        };
        let io_error = |e: io::Error| ExecError::Start(format!("setting up the streams: {e}"));

        let mut cmd = std::process::Command::new(&program);
        cmd.args(&argv[1..])
            .env_clear()
            .envs(exec_env(&spec.env, opts.tty));
        let mut master = None;
        if opts.tty {
            let (m, slave) = open_pty().map_err(io_error)?;
            if let Some((width, height)) = opts.size {
                set_size(&m, width, height).map_err(io_error)?;
            }
            cmd.stdin(Stdio::from(slave.try_clone().map_err(io_error)?))
                .stdout(Stdio::from(slave.try_clone().map_err(io_error)?))
                .stderr(Stdio::from(slave));
            sys::exec_in_namespaces(
                &mut cmd,
                namespaces,
                cwd,
                identity,
                ControllingTerminal::Stdin,
            );
            master = Some(m);
        } else {
            let pipe = |wanted: bool| {
                if wanted {
                    Stdio::piped()
                } else {
                    Stdio::null()
                }
            };
            cmd.stdin(pipe(opts.stdin))
                .stdout(pipe(opts.stdout))
                .stderr(pipe(opts.stderr))
                .process_group(0);
            sys::exec_in_namespaces(
                &mut cmd,
                namespaces,
                cwd,
                identity,
                ControllingTerminal::Inherit,
            );
        }
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let spawned = cmd.spawn();
        // Our copies of the terminal's slave end must go, or its reader never ends.
        drop(cmd);
        let child = spawned.map_err(|e| ExecError::Start(start_error(&program, &e)))?;
        let group = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);

        let mut session = ExecSession {
            stdin: None,
            stdout: None,
            stderr: None,
            terminal: None,
            process: ExecProcess {
                child,
                group,
                exited: false,
            },
        };
        match master {
            Some(master) => {
                let reader = tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(
                    master.try_clone().map_err(io_error)?,
                )
                .map_err(io_error)?;
                let writer = tokio::net::unix::pipe::Sender::from_owned_fd_unchecked(
                    master.try_clone().map_err(io_error)?,
                )
                .map_err(io_error)?;
                if opts.stdin {
                    session.stdin = Some(Box::pin(writer));
                }
                session.stdout = Some(Box::pin(PtyReader(reader)));
                session.terminal = Some(Terminal { master });
            }
            None => {
                let child = &mut session.process.child;
                session.stdin = child.stdin.take().map(|s| Box::pin(s) as ExecInput);
                session.stdout = child.stdout.take().map(|s| Box::pin(s) as ExecOutput);
                session.stderr = child.stderr.take().map(|s| Box::pin(s) as ExecOutput);
            }
        }
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_command_gets_the_container_environment() {
        let container = env(&[
            ("PATH", "/usr/bin:/bin"),
            ("TERM", "dumb"),
            ("GREETING", "hi"),
        ]);
        assert_eq!(exec_env(&container, false), container);
        assert_eq!(
            exec_env(&container, true),
            env(&[
                ("PATH", "/usr/bin:/bin"),
                ("GREETING", "hi"),
                ("TERM", "xterm")
            ])
        );
    }

    #[test]
    fn start_failures_read_like_the_runtime() {
        let err = |errno| io::Error::from_raw_os_error(errno);
        assert_eq!(
            start_error("nope", &err(libc::ENOENT)),
            "unable to start container process: exec: \"nope\": executable file not found in $PATH"
        );
        assert_eq!(
            start_error("/no/such", &err(libc::ENOENT)),
            "unable to start container process: exec: \"/no/such\": stat /no/such: no such file or directory"
        );
        assert_eq!(
            start_error("/etc/hosts", &err(libc::EACCES)),
            "unable to start container process: exec: \"/etc/hosts\": permission denied"
        );
        assert_eq!(
            start_error("x", &err(libc::E2BIG)),
            "unable to start container process: exec: \"x\": argument list too long"
        );
    }

    #[test]
    fn a_missing_container_reads_like_the_kubelet() {
        assert_eq!(
            ExecError::NotFound("sleep".into()).to_string(),
            "container not found (\"sleep\")"
        );
    }

    #[tokio::test]
    async fn nothing_runs_for_a_pod_without_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = ProcessRuntime::new(super::super::RuntimeConfig {
            root: dir.path().join("run"),
            log_root: dir.path().join("logs"),
            helper_exe: "/bin/false".into(),
        });
        let opts = ExecOptions {
            command: vec!["true".into()],
            stdout: true,
            ..Default::default()
        };
        let result = rt.exec("uid-1", "app", opts).await;
        assert!(
            matches!(&result, Err(ExecError::NotFound(c)) if c == "app"),
            "{}",
            result.err().map(|e| e.to_string()).unwrap_or_default()
        );
        // Names from the API never leave the state directory.
        assert!(rt.running_instance("../x", "app").is_none());
    }
}
