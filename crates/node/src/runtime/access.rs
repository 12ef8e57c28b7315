//! [`ContainerAccess`] for a running container: exec in its namespaces (the shim's, which
//! include the container's own mount namespace) and TCP connections from inside the pod's
//! network namespace.

use std::ffi::CString;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
use tokio::io::AsyncReadExt;

use super::procfs::ProcId;
use super::resolve::UserSpec;
use super::sys::{self, ControllingTerminal, Identity};
use crate::access::{BoxFuture, ContainerAccess, ExecOutput};

/// How much exec output is kept (the kubelet keeps 10 KiB).
const MAX_OUTPUT: usize = 10 * 1024;
/// How long output is still read after the command exited (a background child may hold
/// the pipe open).
const OUTPUT_GRACE: Duration = Duration::from_millis(100);

pub(crate) struct ProcessAccess {
    pub sandbox: ProcId,
    /// The address probes and hooks use for the pod (dialled inside its namespace).
    pub pod_ip: IpAddr,
    /// The container's image and the tandem binary, for the programs built-in images carry.
    pub image: String,
    pub helper_exe: PathBuf,
    /// The shim of the instance; `None` when the instance never ran.
    pub shim: Option<ProcId>,
    pub env: Vec<(String, String)>,
    pub working_dir: PathBuf,
    pub user: UserSpec,
}

fn not_running() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "container is not running")
}

impl ProcessAccess {
    async fn run(&self, argv: Vec<String>, timeout: Duration) -> io::Result<ExecOutput> {
        let argv =
            super::resolve::image_program(&self.image, &self.helper_exe, &argv).unwrap_or(argv);
        let Some(program) = argv.first() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
        };
        let shim = self.shim.ok_or_else(not_running)?;
        let namespaces = shim
            .open_namespaces(&["ipc", "uts", "net", "mnt"])
            .map_err(|_| not_running())?;
        let cwd = CString::new(self.working_dir.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let mut cmd = std::process::Command::new(program);
        cmd.arg0(program)
            .args(&argv[1..])
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(write.try_clone()?))
            .stderr(Stdio::from(write))
            .process_group(0);
        sys::exec_in_namespaces(
            &mut cmd,
            namespaces,
            cwd,
            Identity {
                uid: self.user.uid,
                gid: self.user.gid,
                groups: self.user.groups.clone(),
            },
            ControllingTerminal::Inherit,
        );
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let spawned = cmd.spawn();
        // Close our copies of the write end before reading to end-of-file.
        drop(cmd);
        let mut child = spawned.map_err(|e| {
            let what = if e.kind() == io::ErrorKind::NotFound {
                "executable file not found in $PATH".to_owned()
            } else {
                e.to_string()
            };
            io::Error::new(e.kind(), format!("exec: {program:?}: {what}"))
        })?;
        let pgid = child.id().map(|p| p as i32);
        let mut reader = tokio::net::unix::pipe::Receiver::from_owned_fd(read)?;
        let collect = tokio::spawn(async move {
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let room = MAX_OUTPUT.saturating_sub(kept.len());
                        kept.extend_from_slice(&buf[..n.min(room)]);
                    }
                }
            }
            kept
        });
        let exit_code = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => {
                let status = status?;
                use std::os::unix::process::ExitStatusExt;
                status.code().or_else(|| status.signal().map(|s| 128 + s))
            }
            Err(_) => {
                // Timed out: the whole process group goes.
                if let Some(pgid) = pgid {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pgid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.wait().await;
                None
            }
        };
        let abort = collect.abort_handle();
        let output = match tokio::time::timeout(OUTPUT_GRACE, collect).await {
            Ok(Ok(kept)) => kept,
            _ => {
                abort.abort();
                Vec::new()
            }
        };
        Ok(ExecOutput {
            exit_code,
            output: String::from_utf8_lossy(&output).into_owned(),
        })
    }

    async fn dial(&self, addr: SocketAddr, timeout: Duration) -> io::Result<tokio::net::TcpStream> {
        let sandbox = self.sandbox;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // setns only affects the calling thread: create the socket on a throwaway thread
        // that enters the pod's network namespace, then use it anywhere.
        std::thread::Builder::new()
            .name("pod-netns".into())
            .spawn(move || {
                let made = (|| -> io::Result<std::net::TcpStream> {
                    let ns = sandbox.open_namespaces(&["net"]).map_err(|_| {
                        io::Error::new(io::ErrorKind::NotFound, "pod sandbox is not running")
                    })?;
                    for fd in &ns {
                        setns(fd, CloneFlags::CLONE_NEWNET)?;
                    }
                    let family = match addr {
                        SocketAddr::V4(_) => AddressFamily::Inet,
                        SocketAddr::V6(_) => AddressFamily::Inet6,
                    };
                    let fd = socket(
                        family,
                        SockType::Stream,
                        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                        None,
                    )?;
                    Ok(std::net::TcpStream::from(fd))
                })();
                let _ = tx.send(made);
            })?;
        let stream = rx
            .await
            .map_err(|_| io::Error::other("pod-netns thread failed"))??;
        let socket = tokio::net::TcpSocket::from_std_stream(stream);
        match tokio::time::timeout(timeout, socket.connect(addr)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("dial tcp {addr}: i/o timeout"),
            )),
        }
    }
}

impl ContainerAccess for ProcessAccess {
    fn exec(&self, argv: Vec<String>, timeout: Duration) -> BoxFuture<'_, io::Result<ExecOutput>> {
        Box::pin(self.run(argv, timeout))
    }

    fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> BoxFuture<'_, io::Result<tokio::net::TcpStream>> {
        Box::pin(self.dial(addr, timeout))
    }

    fn pod_ip(&self) -> IpAddr {
        self.pod_ip
    }
}
