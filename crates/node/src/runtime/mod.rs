//! The process runtime: a pod is a sandbox process holding network, UTS, IPC and mount
//! namespaces; a container is a process tree on the host filesystem ("host image mode")
//! run by its own supervisor, the shim.
//!
//! Sandboxes and shims are separate `tandem` processes in their own sessions, and all their
//! state is on disk, so containers keep running if the agent goes away:
//!
//! ```text
//! <root>/pods/<uid>/sandbox.json              pid + start time + namespace ids
//! <root>/pods/<uid>/created-paths             mount points created on the host
//! <root>/pods/<uid>/volumes/<volume>/         emptyDir, configMap, secret, downwardAPI,
//!                                             projected (those four as the kubelet's atomic
//!                                             writer lays them out: `..data` -> `..<time>/`)
//! <root>/pods/<uid>/containers/<name>/<n>/    config.json, status.json, ctl (FIFO), shim.log
//! <log_root>/<namespace>_<pod>_<uid>/<name>/<n>.log   CRI-format log of instance n
//! ```
//!
//! The agent learns about exits through a pidfd on the shim (no polling), and reaps the
//! shim when it is its child. Signals go through the shim's control FIFO, so they reach the
//! container's whole process tree.

mod access;
mod adopt;
pub mod exec;
mod logs;
pub mod network;
mod procfs;
mod resolve;
pub mod sandbox;
pub mod shim;
mod state;
mod sweep;
mod sys;
mod volumes;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde::{Deserialize, Serialize};

pub use procfs::ProcId;
pub use resolve::{
    ContainerSpec, DEFAULT_PATH, MountSpec, ResolveContext, UserSpec, VolumeSources, builtin_tool,
    expand,
};
pub use volumes::VolumeWrite;

use crate::access::ContainerAccess;
use crate::planner::Exited;
pub use crate::planner::StartError;
use state::{
    CONFIG, CONTROL, CREATED_PATHS, Report, SANDBOX, SANDBOX_LOG, SHIM_LOG, STATUS, ShimConfig,
    Status,
};

/// How long a shim gets to carry out SIGKILL before the shim itself is killed.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// The pod's `/etc/hosts` and `/etc/resolv.conf`, in its state directory.
pub(crate) const ETC_HOSTS: &str = "hosts";
pub(crate) const RESOLV_CONF: &str = "resolv.conf";
/// The cluster's DNS domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// How long `stop_sandbox` keeps killing processes left in the pod's namespaces.
const LEFTOVER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("creating the pod sandbox failed: {0}")]
    Sandbox(String),
    /// Volume setup failed (the kubelet's FailedMount wording).
    #[error("MountVolume.SetUp failed for volume {volume:?} : {message}")]
    Volume { volume: String, message: String },
    #[error("invalid {what} {value:?}: it must be usable as a file name")]
    InvalidName { what: &'static str, value: String },
    #[error("container is not running")]
    NotRunning,
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> RuntimeError {
    let context = context.into();
    move |source| RuntimeError::Io { context, source }
}

/// Where the runtime keeps things and which binary provides `sandbox`, `shim` and the
/// built-in images.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Sandboxes, container state and volumes.
    pub root: PathBuf,
    /// Container logs.
    pub log_root: PathBuf,
    /// The tandem binary.
    pub helper_exe: PathBuf,
}

/// What a pod sandbox is created from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSpec {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    /// `spec.subdomain`: the pod's name is then `<hostname>.<subdomain>.<ns>.svc.<domain>`.
    pub subdomain: Option<String>,
    /// `spec.hostNetwork`: the pod shares the host's network (no address of its own).
    pub host_network: bool,
}

impl SandboxSpec {
    /// The sandbox of `pod`: hostname is `spec.hostname` or the pod name, at most 63
    /// characters without a trailing `-` or `.` (as the kubelet truncates it).
    pub fn for_pod(pod: &Pod) -> Self {
        let meta = &pod.metadata;
        let name = meta.name.clone().unwrap_or_default();
        let hostname = pod
            .spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| name.clone());
        let mut hostname: String = hostname.chars().take(63).collect();
        while hostname.ends_with(['-', '.']) {
            hostname.pop();
        }
        let spec = pod.spec.as_ref();
        Self {
            uid: meta.uid.clone().unwrap_or_default(),
            name,
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            hostname,
            subdomain: spec
                .and_then(|s| s.subdomain.clone())
                .filter(|s| !s.is_empty()),
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        }
    }
}

/// A running pod sandbox (also its `sandbox.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    /// The namespace holder process.
    pub process: ProcId,
    /// Its namespaces as created (`net:[4026532281]`, ...), for diagnostics.
    pub namespaces: Vec<String>,
    /// The pod's address on the pod network (none: loopback only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// The node's address as the pod reaches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

impl Sandbox {
    pub fn pid(&self) -> i32 {
        self.process.pid
    }

    /// `status.podIP`: the pod network's address, or loopback without a pod network.
    pub fn pod_ip(&self) -> IpAddr {
        self.ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// `status.hostIP`.
    pub fn host_ip(&self) -> IpAddr {
        self.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }
}

/// How a container instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    pub exit_code: i32,
    /// The signal that ended the process (the exit code is then 128 + signal).
    pub signal: Option<i32>,
    /// `Completed` (exit 0), `Error`, `ContainerCannotRun`.
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
}

impl From<ExitInfo> for Exited {
    fn from(e: ExitInfo) -> Self {
        Exited {
            exit_code: e.exit_code,
            signal: e.signal,
            reason: e.reason,
            message: e.message,
            started_at: e.started_at,
            finished_at: e.finished_at,
        }
    }
}

/// A started container instance. Cheap to clone; all clones share the exit once known.
#[derive(Debug, Clone)]
pub struct ContainerHandle(Arc<HandleInner>);

#[derive(Debug)]
struct HandleInner {
    id: String,
    name: String,
    attempt: u32,
    dir: PathBuf,
    log_path: PathBuf,
    shim: Option<ProcId>,
    pid: Option<i32>,
    started_at: Timestamp,
    spec: ContainerSpec,
    exit: OnceLock<ExitInfo>,
}

impl ContainerHandle {
    /// Runtime container ID (64 hex digits).
    pub fn id(&self) -> &str {
        &self.0.id
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    pub fn attempt(&self) -> u32 {
        self.0.attempt
    }

    /// PID of the container's main process (`None` if exec failed).
    pub fn pid(&self) -> Option<i32> {
        self.0.pid
    }

    /// When the process started (for a failed exec: when it was attempted).
    pub fn started_at(&self) -> Timestamp {
        self.0.started_at
    }

    /// The exit, if already known (immediately for `ContainerCannotRun`).
    pub fn exit(&self) -> Option<&ExitInfo> {
        self.0.exit.get()
    }

    pub fn spec(&self) -> &ContainerSpec {
        &self.0.spec
    }
}

/// Runs pods as namespaced process trees. Clone is cheap; clones share everything.
#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: RuntimeConfig,
    /// Gives sandboxes an address; without one, pods have loopback only.
    network: OnceLock<Arc<dyn network::PodNetwork>>,
    /// Exits of instances whose state directory `stop_sandbox` removed, for waiters that
    /// read them afterwards (kept for [`GRAVEYARD_TTL`]).
    graveyard: Mutex<Vec<(PathBuf, ExitInfo, Instant)>>,
    /// Per pod: held while its volume directories are written or removed, so that a
    /// refresh never races the pod's removal (and never brings a removed directory back).
    volume_locks: Mutex<BTreeMap<String, Arc<Mutex<()>>>>,
    /// Kills what is left in stopped pods' namespaces, one `/proc` scan for many pods.
    sweeper: sweep::Sweeper,
}

const GRAVEYARD_TTL: Duration = Duration::from_secs(600);

/// A file name taken from the API must not leave its directory.
fn check_name(what: &'static str, value: &str) -> Result<(), RuntimeError> {
    let ok = !value.is_empty() && value != "." && value != ".." && !value.contains(['/', '\0']);
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidName {
            what,
            value: value.to_owned(),
        })
    }
}

/// 64 hex digits from the instance's identity and start time (FNV-1a, four lanes).
fn container_id(uid: &str, name: &str, attempt: u32) -> String {
    let nanos = Timestamp::now().as_nanosecond();
    let input = format!("{uid}/{name}/{attempt}/{nanos}");
    (0u64..4)
        .map(|lane| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ lane.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for b in input.bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
            format!("{h:016x}")
        })
        .collect()
}

/// Starts `exe args...` with stdout piped and stderr to `stderr_path`, and reads the first
/// line it prints (`None` if it exited without one).
fn spawn_helper(
    exe: &Path,
    args: &[&std::ffi::OsStr],
    stderr_path: &Path,
) -> io::Result<(std::process::Child, Option<String>)> {
    let stderr = fs::File::create(stderr_path)?;
    let mut child = std::process::Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out).read_line(&mut line)?;
    }
    let line = line.trim_end().to_owned();
    Ok((child, (!line.is_empty()).then_some(line)))
}

/// The end of a helper's stderr file, for error messages.
fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let text = text.trim();
    let start = text.len().saturating_sub(2000);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    if text.is_empty() {
        "no output".into()
    } else {
        text[start..].to_owned()
    }
}

/// A pidfd for `p`, if `p` still exists (a zombie counts).
fn pidfd(p: ProcId) -> Option<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(p.pid)?;
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()?;
    // Checked after opening: if the pid was reused before, the start time differs.
    p.exists().then_some(fd)
}

/// Reaps the process behind `fd` if it is our child and has exited.
fn reap(fd: &OwnedFd) {
    let _ = rustix::process::waitid(
        rustix::process::WaitId::PidFd(fd.as_fd()),
        rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOHANG,
    );
}

/// Waits until `p` has exited, without polling, and reaps it if it is our child.
async fn wait_gone(p: ProcId) {
    let Some(fd) = pidfd(p) else {
        return;
    };
    match sys::async_pidfd(fd) {
        Ok(afd) => {
            if let Ok(mut guard) = afd.readable().await {
                guard.retain_ready();
            }
            reap(afd.get_ref());
        }
        Err(_) => {
            // No reactor: fall back to polling.
            while p.running() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// SIGKILLs `p` through a pidfd (race-free) and waits for it.
async fn kill_and_wait(p: ProcId) {
    if let Some(fd) = pidfd(p) {
        let _ = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL);
    }
    wait_gone(p).await;
}

/// Writes a signal number to a shim's control FIFO.
fn send_signal(dir: &Path, sig: i32) -> Result<(), RuntimeError> {
    let opened = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(dir.join(CONTROL));
    let mut fifo = match opened {
        Ok(f) => f,
        // ENXIO: nobody reads the FIFO any more, the shim is gone.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Err(RuntimeError::NotRunning),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(RuntimeError::NotRunning),
        Err(e) => return Err(io_error("opening the control fifo")(e)),
    };
    match fifo.write_all(format!("{sig}\n").as_bytes()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(RuntimeError::NotRunning),
        Err(e) => Err(io_error("signalling the container")(e)),
    }
}

impl ProcessRuntime {
    pub fn new(cfg: RuntimeConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                cfg,
                network: OnceLock::new(),
                graveyard: Mutex::new(Vec::new()),
                volume_locks: Mutex::new(BTreeMap::new()),
                sweeper: sweep::Sweeper::new(),
            }),
        }
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.cfg
    }

    /// Attaches new sandboxes to `network` (set once, before the first pod starts).
    pub fn with_network(self, network: Arc<dyn network::PodNetwork>) -> Self {
        let _ = self.inner.network.set(network);
        self
    }

    fn bury(&self, dir: PathBuf, exit: ExitInfo) {
        let mut graves = self
            .inner
            .graveyard
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        graves.retain(|(_, _, at)| at.elapsed() < GRAVEYARD_TTL);
        graves.push((dir, exit, Instant::now()));
    }

    fn exhume(&self, dir: &Path) -> Option<ExitInfo> {
        let graves = self
            .inner
            .graveyard
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        graves
            .iter()
            .find(|(d, _, _)| d == dir)
            .map(|(_, e, _)| e.clone())
    }

    pub(crate) fn pod_dir(&self, uid: &str) -> PathBuf {
        self.inner.cfg.root.join("pods").join(uid)
    }

    /// The lock of the pod's volume directories (see `Inner::volume_locks`).
    fn volume_lock(&self, uid: &str) -> Arc<Mutex<()>> {
        self.inner
            .volume_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(uid.to_owned())
            .or_default()
            .clone()
    }

    /// `<log_root>/<namespace>_<pod>_<uid>`: the logs of all containers of a pod.
    pub fn pod_log_dir(&self, namespace: &str, name: &str, uid: &str) -> PathBuf {
        self.inner
            .cfg
            .log_root
            .join(format!("{namespace}_{name}_{uid}"))
    }

    /// Removes a pod's logs (when the pod object is deleted; stopping keeps them).
    pub fn remove_pod_logs(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<(), RuntimeError> {
        let dir = self.pod_log_dir(namespace, name, uid);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(io_error(format!("removing {}", dir.display()))(e))
            }
            _ => Ok(()),
        }
    }

    /// Starts the pod's namespace holder, or returns the one already running for this uid
    /// (after an agent restart).
    pub async fn create_sandbox(&self, spec: &SandboxSpec) -> Result<Sandbox, RuntimeError> {
        check_name("pod uid", &spec.uid)?;
        check_name("pod name", &spec.name)?;
        check_name("pod namespace", &spec.namespace)?;
        let pod_dir = self.pod_dir(&spec.uid);
        if let Ok(existing) = state::read_json::<Sandbox>(&pod_dir.join(SANDBOX))
            && existing.process.running()
        {
            return Ok(existing);
        }
        for sub in ["volumes", "containers"] {
            let dir = pod_dir.join(sub);
            fs::create_dir_all(&dir).map_err(io_error(format!("creating {}", dir.display())))?;
        }
        let exe = self.inner.cfg.helper_exe.clone();
        let hostname = spec.hostname.clone();
        let log = pod_dir.join(SANDBOX_LOG);
        let log2 = log.clone();
        let spawned = tokio::task::spawn_blocking(move || {
            let (mut child, line) =
                spawn_helper(&exe, &["sandbox".as_ref(), hostname.as_ref()], &log2)?;
            if line.as_deref() != Some(sandbox::READY) {
                let _ = child.wait();
                return Ok(None);
            }
            Ok(Some(child.id() as i32))
        })
        .await
        .map_err(|e| RuntimeError::Sandbox(e.to_string()))?
        .map_err(|e: io::Error| {
            RuntimeError::Sandbox(format!(
                "starting {}: {e}",
                self.inner.cfg.helper_exe.display()
            ))
        })?;
        let Some(pid) = spawned else {
            return Err(RuntimeError::Sandbox(log_tail(&log)));
        };
        let process = ProcId::of(pid)
            .ok_or_else(|| RuntimeError::Sandbox("the sandbox process exited".into()))?;
        let mut sb = Sandbox {
            uid: spec.uid.clone(),
            name: spec.name.clone(),
            namespace: spec.namespace.clone(),
            hostname: spec.hostname.clone(),
            process,
            namespaces: process.namespace_ids(&["net", "uts", "ipc", "mnt"]),
            ip: None,
            host_ip: None,
        };
        if let Err(e) = self.attach_network(spec, &mut sb, &pod_dir).await {
            kill_and_wait(process).await;
            self.detach_network(&spec.uid).await;
            return Err(e);
        }
        if let Err(e) = state::write_json(&pod_dir, SANDBOX, &sb) {
            kill_and_wait(process).await;
            self.detach_network(&spec.uid).await;
            return Err(io_error("writing sandbox.json")(e));
        }
        Ok(sb)
    }

    /// Gives the sandbox its address and writes the pod's `/etc/hosts` and
    /// `/etc/resolv.conf` (bind-mounted into every container).
    async fn attach_network(
        &self,
        spec: &SandboxSpec,
        sb: &mut Sandbox,
        pod_dir: &Path,
    ) -> Result<(), RuntimeError> {
        let Some(net) = self.inner.network.get().filter(|_| !spec.host_network) else {
            return Ok(());
        };
        let netns = PathBuf::from(format!("/proc/{}/ns/net", sb.process.pid));
        let who = network::PodIdentity {
            uid: &spec.uid,
            namespace: &spec.namespace,
            name: &spec.name,
        };
        let addr = net
            .attach(who, &netns)
            .await
            .map_err(|e| RuntimeError::Sandbox(format!("setting up the pod network: {e}")))?;
        sb.ip = Some(addr.ip);
        sb.host_ip = Some(addr.host_ip);
        let fqdn = spec.subdomain.as_ref().map(|sub| {
            format!(
                "{}.{sub}.{}.svc.{CLUSTER_DOMAIN}",
                spec.hostname, spec.namespace
            )
        });
        let hosts = network::hosts_file(addr.ip, &spec.hostname, fqdn.as_deref());
        let write = |name: &str, text: &str| {
            fs::write(pod_dir.join(name), text).map_err(io_error(format!(
                "writing {}",
                pod_dir.join(name).display()
            )))
        };
        write(ETC_HOSTS, &hosts)?;
        if let Some(resolv) = &addr.resolv_conf {
            write(RESOLV_CONF, resolv)?;
        }
        Ok(())
    }

    /// Gives the pod's address back (after its processes are gone).
    pub(crate) async fn detach_network(&self, uid: &str) {
        if let Some(net) = self.inner.network.get()
            && let Err(err) = net.detach(uid).await
        {
            tracing::warn!(%uid, %err, "releasing the pod's network");
        }
    }

    /// Kills whatever still runs in the pod, stops the sandbox, removes the mount points
    /// the pod created on the host and the pod's state and volume directories. Logs stay.
    pub async fn stop_sandbox(&self, sb: &Sandbox) -> Result<(), RuntimeError> {
        let pod_dir = self.pod_dir(&sb.uid);
        check_name("pod uid", &sb.uid)?;

        // Containers first, through their shims, so each reaps its own tree.
        let shims = live_shims(&pod_dir);
        for (dir, _) in &shims {
            let _ = send_signal(dir, libc::SIGKILL);
        }
        for (_, shim) in &shims {
            if tokio::time::timeout(KILL_TIMEOUT, wait_gone(*shim))
                .await
                .is_err()
            {
                kill_and_wait(*shim).await;
            }
        }

        // Anything else still in the pod's namespaces (exec'd probes, escaped processes).
        // Namespace ids are inode numbers that a later namespace may reuse, so they are
        // read from the live sandbox while fds pin its namespaces.
        let kinds = procfs::POD_NAMESPACES;
        let pinned = sb.process.open_namespaces(&kinds).ok();
        let ids = match &pinned {
            Some(_) => sb.process.namespace_ids(&kinds),
            None => Vec::new(),
        };
        self.inner
            .sweeper
            .sweep(ids, sb.process.pid, LEFTOVER_TIMEOUT)
            .await;
        drop(pinned);

        kill_and_wait(sb.process).await;
        self.detach_network(&sb.uid).await;

        for dir in instance_dirs(&pod_dir) {
            if let Ok(Status {
                exit: Some(rec), ..
            }) = state::read_json(&dir.join(STATUS))
            {
                self.bury(dir, rec.to_info());
            }
        }
        remove_created_paths(&self.inner.cfg.root, &pod_dir);
        let lock = self.volume_lock(&sb.uid);
        let removed = {
            let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
            fs::remove_dir_all(&pod_dir)
        };
        self.inner
            .volume_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&sb.uid);
        match removed {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(io_error(format!("removing {}", pod_dir.display()))(e))
            }
            _ => Ok(()),
        }
    }

    /// Writes the pod's volumes (emptyDir, configMap, secret, downwardAPI, projected) and
    /// checks its hostPath volumes.
    pub fn prepare_volumes(
        &self,
        sb: &Sandbox,
        pod: &Pod,
        sources: &VolumeSources,
    ) -> Result<(), RuntimeError> {
        check_name("pod uid", &sb.uid)?;
        let ctx = ResolveContext::new("", sources);
        let lock = self.volume_lock(&sb.uid);
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        volumes::prepare(pod, &self.pod_dir(&sb.uid).join("volumes"), &ctx)
    }

    /// Writes the named volumes of a running pod again from `sources` (configMap, secret,
    /// downwardAPI and projected volumes, in the kubelet's atomic writer layout, so that
    /// the containers see the new set of files at once). Blocking file I/O: call it off
    /// the async workers. A volume whose directory is gone (the pod was removed) is left
    /// alone and reported as [`VolumeWrite::Missing`].
    pub fn refresh_volumes(
        &self,
        pod: &Pod,
        names: &[String],
        sources: &VolumeSources,
    ) -> Vec<(String, Result<VolumeWrite, RuntimeError>)> {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        if check_name("pod uid", uid).is_err() {
            let invalid = || RuntimeError::InvalidName {
                what: "pod uid",
                value: uid.to_owned(),
            };
            return names.iter().map(|n| (n.clone(), Err(invalid()))).collect();
        }
        let ctx = ResolveContext::new("", sources);
        let volumes_dir = self.pod_dir(uid).join("volumes");
        if !volumes_dir.is_dir() {
            // Not set up, or removed with the pod (whose lock is gone with it).
            let missing = |n: &String| (n.clone(), Ok(VolumeWrite::Missing));
            return names.iter().map(missing).collect();
        }
        let lock = self.volume_lock(uid);
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        names
            .iter()
            .map(|name| {
                let written = volumes::refresh(pod, &volumes_dir, name, &ctx);
                (name.clone(), written)
            })
            .collect()
    }

    /// Resolves container `c` of `pod`; errors are `CreateContainerConfigError`s.
    pub fn resolve(
        &self,
        sb: &Sandbox,
        pod: &Pod,
        c: &Container,
        ctx: &ResolveContext<'_>,
    ) -> Result<ContainerSpec, StartError> {
        let pod_dir = self.pod_dir(&sb.uid);
        let volumes_dir = pod_dir.join("volumes");
        let paths = resolve::Paths {
            volumes_dir: &volumes_dir,
            pod_dir: &pod_dir,
            helper_exe: &self.inner.cfg.helper_exe,
            hostname: &sb.hostname,
        };
        resolve::resolve_container(pod, c, ctx, paths, &resolve::HostUsers)
    }

    /// Starts instance `attempt` of a container and returns once its process runs, or at
    /// once with a handle whose exit is `ContainerCannotRun` when exec failed. Errors
    /// (`CreateContainerError`) mean nothing was started (e.g. a volume could not be
    /// mounted).
    pub async fn start_container(
        &self,
        sb: &Sandbox,
        spec: &ContainerSpec,
        attempt: u32,
    ) -> Result<ContainerHandle, StartError> {
        let start_error = |message: String| StartError {
            reason: "CreateContainerError".into(),
            message,
        };
        let named =
            check_name("pod uid", &sb.uid).and_then(|()| check_name("container name", &spec.name));
        named.map_err(|e| start_error(e.to_string()))?;
        let pod_dir = self.pod_dir(&sb.uid);
        let prepared = self.prepare_instance(sb, spec, attempt, &pod_dir);
        let (dir, log_path, id) = prepared.map_err(|e| start_error(e.to_string()))?;

        let exe = self.inner.cfg.helper_exe.clone();
        let shim_dir = dir.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let (mut child, line) = spawn_helper(
                &exe,
                &["shim".as_ref(), shim_dir.as_os_str()],
                &shim_dir.join(SHIM_LOG),
            )?;
            let report = line.and_then(|l| serde_json::from_str::<Report>(&l).ok());
            let shim = if matches!(report, Some(Report::Started { .. })) {
                // Reaped later through its pidfd.
                ProcId::of(child.id() as i32)
            } else {
                let _ = child.wait();
                None
            };
            Ok::<_, io::Error>((report, shim))
        })
        .await
        .map_err(|e| start_error(e.to_string()))?
        .map_err(|e| start_error(format!("starting the container supervisor: {e}")))?;

        let now = Timestamp::now();
        let make = |shim, pid, started_at, exit: Option<ExitInfo>| {
            let exit_cell = OnceLock::new();
            if let Some(e) = exit {
                let _ = exit_cell.set(e);
            }
            ContainerHandle(Arc::new(HandleInner {
                id: id.clone(),
                name: spec.name.clone(),
                attempt,
                dir: dir.clone(),
                log_path: log_path.clone(),
                shim,
                pid,
                started_at,
                spec: spec.clone(),
                exit: exit_cell,
            }))
        };
        match outcome {
            (Some(Report::Started { pid, started_at }), Some(shim)) => {
                let started_at = started_at.parse().unwrap_or(now);
                Ok(make(Some(shim), Some(pid), started_at, None))
            }
            (Some(Report::Started { .. }), None) => Err(start_error(
                "the container supervisor vanished right after starting".into(),
            )),
            (Some(Report::CannotRun { exit }), _) => {
                let info = exit.to_info();
                let at = info.finished_at;
                Ok(make(None, None, at, Some(info)))
            }
            (Some(Report::Failed { message }), _) => Err(start_error(message)),
            (None, _) => Err(start_error(format!(
                "the container supervisor failed: {}",
                log_tail(&dir.join(SHIM_LOG))
            ))),
        }
    }

    /// State directory, log file and ID of a new instance; prunes instances older than the
    /// previous one.
    fn prepare_instance(
        &self,
        sb: &Sandbox,
        spec: &ContainerSpec,
        attempt: u32,
        pod_dir: &Path,
    ) -> Result<(PathBuf, PathBuf, String), RuntimeError> {
        let instances = pod_dir.join("containers").join(&spec.name);
        let dir = instances.join(attempt.to_string());
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_error(format!("removing {}", dir.display())))?;
        }
        fs::create_dir_all(&dir).map_err(io_error(format!("creating {}", dir.display())))?;
        for stale in logs::stale_instances(&instances, attempt, "") {
            let _ = fs::remove_dir_all(stale);
        }
        let log_dir = self
            .pod_log_dir(&sb.namespace, &sb.name, &sb.uid)
            .join(&spec.name);
        fs::create_dir_all(&log_dir)
            .map_err(io_error(format!("creating {}", log_dir.display())))?;
        for stale in logs::stale_instances(&log_dir, attempt, ".log") {
            let _ = fs::remove_file(stale);
        }
        let log_path = logs::instance_log(&log_dir, attempt);
        let _ = fs::remove_file(&log_path);
        let id = container_id(&sb.uid, &spec.name, attempt);
        let cfg = ShimConfig {
            id: id.clone(),
            attempt,
            spec: spec.clone(),
            sandbox: sb.process,
            log_path: log_path.clone(),
            pod_dir: pod_dir.to_path_buf(),
        };
        state::write_json(&dir, CONFIG, &cfg).map_err(io_error("writing config.json"))?;
        Ok((dir, log_path, id))
    }

    /// A handle for an instance started earlier (for example by a previous agent), from its
    /// state on disk.
    pub fn adopt_container(
        &self,
        sb: &Sandbox,
        name: &str,
        attempt: u32,
    ) -> Option<ContainerHandle> {
        let dir = self
            .pod_dir(&sb.uid)
            .join("containers")
            .join(name)
            .join(attempt.to_string());
        let cfg: ShimConfig = state::read_json(&dir.join(CONFIG)).ok()?;
        let status: Status = state::read_json(&dir.join(STATUS)).ok()?;
        let exit_cell = OnceLock::new();
        if let Some(rec) = &status.exit {
            let _ = exit_cell.set(rec.to_info());
        }
        let started_at = status
            .started_at
            .as_deref()
            .and_then(|s| s.parse().ok())
            .or_else(|| exit_cell.get().map(|e: &ExitInfo| e.finished_at))?;
        Some(ContainerHandle(Arc::new(HandleInner {
            id: cfg.id,
            name: name.to_owned(),
            attempt,
            dir,
            log_path: cfg.log_path,
            shim: status.shim.filter(|_| status.exit.is_none()),
            pid: status.pid,
            started_at,
            spec: cfg.spec,
            exit: exit_cell,
        })))
    }

    /// Waits for the instance to exit.
    pub async fn wait(&self, h: &ContainerHandle) -> ExitInfo {
        if let Some(e) = h.0.exit.get() {
            return e.clone();
        }
        if let Some(shim) = h.0.shim {
            wait_gone(shim).await;
        }
        let status: Option<Status> = state::read_json(&h.0.dir.join(STATUS)).ok();
        let recorded = status
            .and_then(|s| s.exit)
            .map(|rec| rec.to_info())
            .or_else(|| self.exhume(&h.0.dir));
        let info = match recorded {
            Some(info) => info,
            None => ExitInfo {
                exit_code: 255,
                signal: None,
                reason: "Error".into(),
                message: Some(
                    "the container's supervisor exited without recording an exit status".into(),
                ),
                started_at: Some(h.0.started_at),
                finished_at: Timestamp::now(),
            },
        };
        h.0.exit.get_or_init(|| info).clone()
    }

    /// Sends `sig` to every process of the container.
    pub fn signal(&self, h: &ContainerHandle, sig: i32) -> Result<(), RuntimeError> {
        if h.0.exit.get().is_some() || h.0.shim.is_none() {
            return Err(RuntimeError::NotRunning);
        }
        send_signal(&h.0.dir, sig)
    }

    /// SIGTERM, then SIGKILL after `grace` (CRI StopContainer); returns the exit.
    pub async fn stop_container(&self, h: &ContainerHandle, grace: Duration) -> ExitInfo {
        if let Some(e) = h.0.exit.get() {
            return e.clone();
        }
        if self.signal(h, libc::SIGTERM).is_ok()
            && let Ok(exit) = tokio::time::timeout(grace, self.wait(h)).await
        {
            return exit;
        }
        let _ = self.signal(h, libc::SIGKILL);
        if let Ok(exit) = tokio::time::timeout(KILL_TIMEOUT, self.wait(h)).await {
            return exit;
        }
        // The shim does not respond; kill it. What it leaves behind, stop_sandbox removes.
        if let Some(shim) = h.0.shim {
            kill_and_wait(shim).await;
        }
        self.wait(h).await
    }

    /// Exec and connect access for probes and hooks.
    pub fn access(&self, sb: &Sandbox, h: &ContainerHandle) -> Arc<dyn ContainerAccess> {
        Arc::new(access::ProcessAccess {
            sandbox: sb.process,
            pod_ip: sb.pod_ip(),
            image: h.0.spec.image.clone(),
            helper_exe: self.inner.cfg.helper_exe.clone(),
            shim: h.0.shim.filter(|_| h.0.exit.get().is_none()),
            env: h.0.spec.env.clone(),
            working_dir: h.0.spec.working_dir.clone(),
            user: h.0.spec.user.clone(),
        })
    }

    /// The CRI log file of the instance.
    pub fn log_path(&self, h: &ContainerHandle) -> PathBuf {
        h.0.log_path.clone()
    }
}

/// Shims of the pod that are still running, with their state directories.
fn live_shims(pod_dir: &Path) -> Vec<(PathBuf, ProcId)> {
    instance_dirs(pod_dir)
        .into_iter()
        .filter_map(|dir| {
            let status: Status = state::read_json(&dir.join(STATUS)).ok()?;
            let shim = status.shim?;
            shim.exists().then_some((dir, shim))
        })
        .collect()
}

/// `<pod>/containers/<name>/<n>` directories.
fn instance_dirs(pod_dir: &Path) -> Vec<PathBuf> {
    let Ok(names) = fs::read_dir(pod_dir.join("containers")) else {
        return Vec::new();
    };
    names
        .filter_map(Result::ok)
        .filter_map(|e| fs::read_dir(e.path()).ok())
        .flat_map(|d| d.filter_map(Result::ok).map(|e| e.path()))
        .collect()
}

/// Mount targets (and their parents) of every other pod under `root`.
fn paths_used_elsewhere(root: &Path, pod_dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let Ok(pods) = fs::read_dir(root.join("pods")) else {
        return Vec::new();
    };
    let mut used = Vec::new();
    for other in pods.filter_map(Result::ok).map(|e| e.path()) {
        if other == pod_dir {
            continue;
        }
        for dir in instance_dirs(&other) {
            if let Ok(cfg) = state::read_json::<ShimConfig>(&dir.join(CONFIG)) {
                for m in cfg.spec.mounts {
                    for p in m.target.ancestors() {
                        used.push((p.to_path_buf(), other.clone()));
                    }
                }
            }
        }
    }
    used
}

/// Removes the mount points the pod's shims created on the host (empty directories and
/// empty files only, deepest first). A path another pod still mounts on is handed over to
/// that pod instead: removing it would detach that pod's mount.
fn remove_created_paths(root: &Path, pod_dir: &Path) {
    let Ok(text) = fs::read_to_string(pod_dir.join(CREATED_PATHS)) else {
        return;
    };
    let mut paths: Vec<PathBuf> = text
        .lines()
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.parent().is_some())
        .collect();
    paths.sort();
    paths.dedup();
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    let used = paths_used_elsewhere(root, pod_dir);
    for path in paths {
        if let Some((_, other)) = used.iter().find(|(p, _)| *p == path) {
            let handed = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(other.join(CREATED_PATHS))
                .and_then(|mut f| writeln!(f, "{}", path.display()));
            if handed.is_ok() {
                continue;
            }
        }
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                let _ = fs::remove_dir(&path);
            }
            Ok(m) if m.is_file() && m.len() == 0 => {
                let _ = fs::remove_file(&path);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_follow_the_kubelet() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{}-.x", "a".repeat(61)), "uid": "u"},
            "spec": {"containers": []}
        }))
        .expect("pod");
        let spec = SandboxSpec::for_pod(&pod);
        assert_eq!(spec.hostname, "a".repeat(61));
        assert_eq!(spec.namespace, "default");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u"},
            "spec": {"hostname": "box", "containers": []}
        }))
        .expect("pod");
        assert_eq!(SandboxSpec::for_pod(&pod).hostname, "box");
    }

    #[test]
    fn names_that_leave_their_directory_are_rejected() {
        for bad in ["", ".", "..", "a/b"] {
            assert!(check_name("x", bad).is_err(), "{bad:?}");
        }
        assert!(check_name("x", "web-0").is_ok());
    }

    #[test]
    fn container_ids_are_64_hex_digits_and_differ() {
        let a = container_id("u", "c", 0);
        let b = container_id("u", "c", 1);
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn created_paths_are_removed_unless_another_pod_mounts_there() {
        let root = tempfile::tempdir().expect("tempdir");
        let host = tempfile::tempdir().expect("tempdir");
        let ours = root.path().join("pods/a");
        let theirs = root.path().join("pods/b");
        fs::create_dir_all(&ours).expect("mkdir");
        let shared = host.path().join("shared");
        let mine = host.path().join("mine/deep");
        let full = host.path().join("full");
        for d in [&shared, &mine, &full] {
            fs::create_dir_all(d).expect("mkdir");
        }
        fs::write(full.join("keep"), "data").expect("write");
        let lines = [&shared, &host.path().join("mine"), &mine, &full]
            .iter()
            .map(|p| format!("{}\n", p.display()))
            .collect::<String>();
        fs::write(ours.join(CREATED_PATHS), lines).expect("write");

        // Pod b has a container mounting at `shared`.
        let spec: ContainerSpec = serde_json::from_value(serde_json::json!({
            "pod_uid": "b", "pod_name": "b", "pod_namespace": "d", "name": "c", "image": "",
            "argv": ["true"], "env": [], "working_dir": "/",
            "user": {"uid": 0, "gid": 0, "groups": []},
            "mounts": [{"volume": "v", "source": "/x", "target": shared, "read_only": false, "create_source": false}]
        }))
        .expect("spec");
        let cdir = theirs.join("containers/c/0");
        fs::create_dir_all(&cdir).expect("mkdir");
        let cfg = ShimConfig {
            id: "i".into(),
            attempt: 0,
            spec,
            sandbox: ProcId {
                pid: 1,
                start_time: 0,
            },
            log_path: "/dev/null".into(),
            pod_dir: theirs.clone(),
        };
        state::write_json(&cdir, CONFIG, &cfg).expect("config");

        remove_created_paths(root.path(), &ours);
        assert!(shared.exists(), "still used by pod b");
        assert!(
            !host.path().join("mine").exists(),
            "empty created dirs go, deepest first"
        );
        assert!(full.join("keep").exists(), "non-empty directories stay");
        let handed = fs::read_to_string(theirs.join(CREATED_PATHS)).expect("handed over");
        assert_eq!(handed.trim(), shared.display().to_string());
    }
}
