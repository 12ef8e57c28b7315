//! `tandem play FILE...`: run the pods of some manifests on this machine and watch them
//! the way `kubectl get pods -w` does.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use api::decode::Object;
use api::validation::FeatureGates;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use node::planner::Event;
use node::runtime::{ProcessRuntime, RuntimeConfig, VolumeSources};
use node::worker::{PodHandle, PodSink, WorkerConfig, spawn_pod};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::logs::LogFollower;

/// Options of `tandem play`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlayArgs {
    /// Manifest files (YAML, several documents each, or JSON); `-` reads standard input.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Stop waiting after this long (`90s`, `5m`, `1h`), delete the pods and exit 1.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Also stream every container's output, prefixed with `[pod/container]`.
    #[arg(long)]
    pub logs: bool,
    /// Print the pods' events as they happen.
    #[arg(long)]
    pub events: bool,
    /// Print a leading EVENT column (ADDED / MODIFIED / DELETED) like
    /// `kubectl get pods -w --output-watch-events`.
    #[arg(long)]
    pub output_watch_events: bool,
    /// Feature gates, `Name=true|false` comma separated (`SidecarContainers=false`).
    #[arg(long, value_delimiter = ',')]
    pub feature_gates: Vec<String>,
    /// CrashLoopBackOff initial delay (Kubernetes: 10s). For experiments and tests.
    #[arg(long, value_parser = parse_duration, hide = true)]
    pub backoff_initial: Option<Duration>,
    /// CrashLoopBackOff maximum delay (Kubernetes: 300s). For experiments and tests.
    #[arg(long, value_parser = parse_duration, hide = true)]
    pub backoff_max: Option<Duration>,
    /// Write the final pod objects (a `v1` `List`, JSON) to this file when done.
    #[arg(long, value_name = "FILE")]
    pub status_file: Option<PathBuf>,
    /// Where pod state, volumes and logs live while playing (removed afterwards).
    #[arg(long, hide = true)]
    pub state_dir: Option<PathBuf>,
}

/// Parses `90s`, `5m`, `1h30m`, `250ms`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let span: Result<jiff::Span, _> = text.parse();
    if let Ok(seconds) = text.parse::<f64>()
        && seconds >= 0.0
        && seconds.is_finite()
    {
        return Ok(Duration::from_secs_f64(seconds));
    }
    let span = span.map_err(|_| format!("invalid duration {text:?} (use e.g. 90s, 5m, 1h30m)"))?;
    let signed = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|e| format!("invalid duration {text:?}: {e}"))?;
    Duration::try_from(signed).map_err(|_| format!("invalid duration {text:?}: negative"))
}

/// What the files asked for.
pub struct Manifests {
    pub pods: Vec<Pod>,
    pub sources: VolumeSources,
}

/// Reads, decodes, defaults and validates every file. Errors are user errors (exit 2).
/// Warnings (as the API server returns them) are printed to stderr.
pub fn load(files: &[PathBuf], gates: &FeatureGates) -> anyhow::Result<Manifests> {
    let mut pods = Vec::new();
    let mut sources = VolumeSources::default();
    for file in files {
        let (name, text) = read_file(file)?;
        for manifest in api::decode::decode_manifests_located(&name, &text)? {
            match manifest.object {
                Object::Pod(pod) => pods.push((*pod, name.clone(), manifest.line, manifest.column)),
                Object::ConfigMap(cm) => sources.add_config_map(cm),
                Object::Secret(secret) => sources.add_secret(secret),
            }
        }
    }
    if pods.is_empty() {
        anyhow::bail!("no pods in {}", display_files(files));
    }
    let mut seen = BTreeMap::new();
    let mut admitted = Vec::new();
    for (mut pod, file, line, column) in pods {
        // The API server's order: warnings on the object as sent, then defaults, then the
        // fields of disabled features are dropped, then validation.
        for warning in api::validation::pod_warnings(&pod) {
            eprintln!("Warning: {warning}");
        }
        api::defaults::default_pod(&mut pod);
        if let Some(spec) = pod.spec.as_mut() {
            api::validation::drop_disabled_fields(spec, gates);
        }
        api::validation::validate_pod(&pod, gates)
            .map_err(|err| anyhow::anyhow!("{file}:{line}:{column}: {err}"))?;
        let key = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        if seen.insert(key.clone(), ()).is_some() {
            anyhow::bail!(
                "{file}:{line}:{column}: pods \"{}\" already exists in namespace \"{}\"",
                key.1,
                key.0
            );
        }
        admitted.push(pod);
    }
    Ok(Manifests {
        pods: admitted,
        sources,
    })
}

fn read_file(file: &Path) -> anyhow::Result<(String, String)> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading standard input")?;
        return Ok(("<stdin>".into(), text));
    }
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("{}: cannot read", file.display()))?;
    Ok((file.display().to_string(), text))
}

fn display_files(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn parse_gates(flags: &[String]) -> anyhow::Result<FeatureGates> {
    let mut gates = FeatureGates::default();
    for flag in flags.iter().filter(|f| !f.is_empty()) {
        let (name, value) = flag
            .split_once('=')
            .with_context(|| format!("feature gate {flag:?}: expected Name=true|false"))?;
        let value: bool = value
            .parse()
            .with_context(|| format!("feature gate {flag:?}: expected true or false"))?;
        match name {
            "SidecarContainers" => gates.sidecar_containers = value,
            other => anyhow::bail!("unrecognized feature gate: {other}"),
        }
    }
    Ok(gates)
}

/// Sink shared by all workers: forwards pod updates and log files to the watch loop.
struct Sink {
    updates: mpsc::UnboundedSender<(Pod, bool)>,
    logs: Option<Arc<LogFollower>>,
    events: bool,
    out: Arc<Mutex<std::io::Stdout>>,
}

impl PodSink for Sink {
    fn status(&self, pod: &Pod) {
        let _ = self.updates.send((pod.clone(), false));
    }

    fn finished(&self, pod: &Pod) {
        let _ = self.updates.send((pod.clone(), true));
    }

    fn event(&self, pod: &Pod, event: &Event) {
        if self.events {
            let kind = if event.warning { "Warning" } else { "Normal" };
            let object = match &event.container {
                Some(c) => format!("pod/{}[{c}]", pod.metadata.name.as_deref().unwrap_or("")),
                None => format!("pod/{}", pod.metadata.name.as_deref().unwrap_or("")),
            };
            let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(out, "{kind} {} {object}: {}", event.reason, event.message);
        }
    }

    fn log_file(&self, pod: &Pod, container: &str, path: PathBuf) {
        if let Some(logs) = &self.logs {
            let name = pod.metadata.name.as_deref().unwrap_or("");
            logs.follow(format!("[pod/{name}/{container}]"), path);
        }
    }
}

/// Runs `tandem play`. Returns the process exit code.
pub async fn run(args: PlayArgs) -> anyhow::Result<ExitCode> {
    let gates = match parse_gates(&args.feature_gates) {
        Ok(g) => g,
        Err(err) => return Ok(user_error(&err)),
    };
    let manifests = match load(&args.files, &gates) {
        Ok(m) => m,
        Err(err) => return Ok(user_error(&err)),
    };
    crate::require_root("tandem play")?;

    let state = match &args.state_dir {
        Some(dir) => dir.clone(),
        None => default_state_dir(),
    };
    std::fs::create_dir_all(&state)
        .with_context(|| format!("creating state directory {}", state.display()))?;
    let helper_exe = std::env::current_exe().context("locating the tandem binary")?;
    let runtime = ProcessRuntime::new(RuntimeConfig {
        root: state.join("run"),
        log_root: state.join("logs"),
        helper_exe,
    });
    let mut backoff = node::planner::BackoffConfig::default();
    if let Some(d) = args.backoff_initial {
        backoff.initial = d;
    }
    if let Some(d) = args.backoff_max {
        backoff.max = d;
    }
    let config = WorkerConfig {
        node_name: crate::node_name(),
        backoff,
    };

    let out = Arc::new(Mutex::new(std::io::stdout()));
    let logs = args.logs.then(|| LogFollower::start(out.clone()));
    let (updates_tx, mut updates) = mpsc::unbounded_channel();
    let sink: Arc<dyn PodSink> = Arc::new(Sink {
        updates: updates_tx,
        logs: logs.clone(),
        events: args.events,
        out: out.clone(),
    });
    let sources = Arc::new(manifests.sources);

    let mut printer = WatchPrinter::new(out.clone(), args.output_watch_events, &manifests.pods);
    let mut handles: BTreeMap<String, PodHandle> = BTreeMap::new();
    for mut pod in manifests.pods {
        admit(&mut pod, &config.node_name);
        printer.row(&pod, "ADDED");
        let key = pod_key(&pod);
        if args.events {
            sink.event(
                &pod,
                &Event {
                    warning: false,
                    reason: "Scheduled".into(),
                    message: format!(
                        "Successfully assigned {} to {}",
                        key.replace('_', "/"),
                        config.node_name
                    ),
                    container: None,
                },
            );
        }
        let handle = spawn_pod(
            runtime.clone(),
            config.clone(),
            sources.clone(),
            sink.clone(),
            pod,
        );
        handles.insert(key, handle);
    }

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut latest: BTreeMap<String, Pod> = BTreeMap::new();
    let mut finished = 0;
    let mut stopping: Option<u8> = None;
    while finished < handles.len() {
        tokio::select! {
            Some((pod, done)) = updates.recv() => {
                printer.row(&pod, "MODIFIED");
                if done && pod.metadata.deletion_timestamp.is_some() {
                    // kubectl shows the removal of a deleted pod as one more row.
                    printer.row(&pod, "DELETED");
                }
                finished += usize::from(done);
                latest.insert(pod_key(&pod), pod);
            }
            _ = sigint.recv(), if stopping.is_none() => {
                stopping = Some(130);
                delete_all(&handles);
            }
            _ = sigterm.recv(), if stopping.is_none() => {
                stopping = Some(143);
                delete_all(&handles);
            }
            _ = sleep_until(deadline), if stopping.is_none() => {
                eprintln!("tandem play: timed out after {}; deleting the pods",
                    humantime(args.timeout.unwrap_or_default()));
                stopping = Some(1);
                delete_all(&handles);
            }
        }
    }
    for handle in handles.into_values() {
        handle.finished().await;
    }
    if let Some(logs) = logs {
        logs.stop().await;
    }
    if args.state_dir.is_none() {
        let _ = std::fs::remove_dir_all(&state);
    }
    if let Some(path) = &args.status_file {
        let list = serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": latest.values().collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&list)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(code) = stopping {
        return Ok(ExitCode::from(code));
    }
    let all_succeeded = latest.values().all(|p| phase(p) == Some("Succeeded"));
    Ok(if all_succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn user_error(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {err:#}");
    ExitCode::from(2)
}

fn default_state_dir() -> PathBuf {
    // /run is a tmpfs: pod state and logs of a throw-away run never touch the disk.
    PathBuf::from(format!("/run/tandem/play-{}", std::process::id()))
}

fn delete_all(handles: &BTreeMap<String, PodHandle>) {
    for handle in handles.values() {
        handle.delete(None);
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn humantime(d: Duration) -> String {
    api::printer::human_duration(jiff::SignedDuration::try_from(d).unwrap_or_default())
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}_{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// What the API server and scheduler would have done by the time the kubelet sees the pod.
fn admit(pod: &mut Pod, node_name: &str) {
    pod.metadata.uid = Some(new_uid());
    pod.metadata.creation_timestamp = Some(Time(Timestamp::now()));
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some(node_name.to_string());
    }
    pod.status = Some(PodStatus {
        phase: Some("Pending".into()),
        ..Default::default()
    });
}

/// A random RFC 4122 version 4 UUID, as the API server assigns.
pub fn new_uid() -> String {
    let mut bytes = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut bytes);
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Prints `kubectl get pods -w` rows: the header once, then a row whenever a printed
/// column other than AGE changes.
struct WatchPrinter {
    out: Arc<Mutex<std::io::Stdout>>,
    events: bool,
    table: api::printer::WatchTable,
    last: BTreeMap<String, Vec<String>>,
}

impl WatchPrinter {
    fn new(out: Arc<Mutex<std::io::Stdout>>, events: bool, pods: &[Pod]) -> Self {
        let mut header = vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"];
        if events {
            header.insert(0, "EVENT");
        }
        // Size the columns for the names and the common statuses, so that rows line up
        // without knowing the future (kubectl's own watch output has the same trade-off).
        let initial: Vec<Vec<String>> = pods
            .iter()
            .map(|p| {
                let mut row = vec![
                    p.metadata.name.clone().unwrap_or_default(),
                    "0/0".into(),
                    "Init:CrashLoopBackOff".into(),
                    "0 (10s ago)".into(),
                    "0s".into(),
                ];
                if events {
                    row.insert(0, "MODIFIED".into());
                }
                row
            })
            .collect();
        let table = api::printer::WatchTable::new(&header, &initial);
        let printer = Self {
            out,
            events,
            table,
            last: BTreeMap::new(),
        };
        printer.print(printer.table.header_line());
        printer
    }

    fn row(&mut self, pod: &Pod, event: &str) {
        let row = api::printer::pod_row(pod, Timestamp::now());
        let mut cells = row.cells();
        let shown = cells[..cells.len() - 1].to_vec();
        let key = pod_key(pod);
        if self.last.get(&key) == Some(&shown) && event != "DELETED" {
            return;
        }
        self.last.insert(key, shown);
        if self.events {
            cells.insert(0, event.to_string());
        }
        let line = self.table.row_line(&cells);
        self.print(line);
    }

    fn print(&self, line: String) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "{}", line.trim_end());
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_kubectl_flags() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn feature_gates_parse_and_reject_unknown_names() {
        let gates = parse_gates(&["SidecarContainers=false".into()]).unwrap();
        assert!(!gates.sidecar_containers);
        assert!(parse_gates(&[]).unwrap().sidecar_containers);
        let err = parse_gates(&["Nope=true".into()]).unwrap_err();
        assert_eq!(err.to_string(), "unrecognized feature gate: Nope");
        assert!(parse_gates(&["SidecarContainers=maybe".into()]).is_err());
    }

    #[test]
    fn uids_are_version_4() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert_ne!(uid, new_uid());
    }
}
