//! Root tests of the process runtime: real namespaces, bind mounts and process trees,
//! with the tandem binary as the sandbox and shim helper.
//!
//! Without root they print a notice and pass, except under `CI=true`, where they fail.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use node::runtime::{
    ContainerHandle, ExitInfo, ProcessRuntime, ResolveContext, RuntimeConfig, Sandbox, SandboxSpec,
    VolumeSources,
};
use serde_json::json;

fn have_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "the runtime tests need root (namespaces, mounts) and CI=true requires them to run"
    );
    eprintln!("notice: skipping runtime test: it needs root");
    false
}

struct Fixture {
    dir: tempfile::TempDir,
    rt: ProcessRuntime,
    sources: VolumeSources,
    /// Sandboxes not stopped yet; a failing test must not leave pods behind.
    live: std::sync::Mutex<Vec<Sandbox>>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let left = std::mem::take(&mut *self.live.lock().unwrap_or_else(|e| e.into_inner()));
        if left.is_empty() {
            return;
        }
        let rt = self.rt.clone();
        // Drop may run inside the test's runtime; stop them on a thread with its own.
        let _ = std::thread::spawn(move || {
            if let Ok(tokio_rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                tokio_rt.block_on(async {
                    for sb in &left {
                        let _ = rt.stop_sandbox(sb).await;
                    }
                });
            }
        })
        .join();
    }
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = ProcessRuntime::new(RuntimeConfig {
            root: dir.path().join("run"),
            log_root: dir.path().join("logs"),
            helper_exe: PathBuf::from(env!("CARGO_BIN_EXE_tandem")),
        });
        Self {
            dir,
            rt,
            sources: VolumeSources::default(),
            live: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A directory on the host for mount points, inside the test's temp dir.
    fn host(&self, rel: &str) -> String {
        self.dir.path().join("host").join(rel).display().to_string()
    }

    async fn sandbox(&self, pod: &Pod) -> Sandbox {
        let sb = self
            .rt
            .create_sandbox(&SandboxSpec::for_pod(pod))
            .await
            .expect("sandbox");
        self.live.lock().expect("lock").push(sb.clone());
        self.rt
            .prepare_volumes(&sb, pod, &self.sources)
            .expect("volumes");
        sb
    }

    async fn stop(&self, sb: &Sandbox) {
        self.rt.stop_sandbox(sb).await.expect("stop sandbox");
        self.live.lock().expect("lock").retain(|s| s.uid != sb.uid);
    }

    async fn start(&self, sb: &Sandbox, pod: &Pod, name: &str, attempt: u32) -> ContainerHandle {
        let ctx = ResolveContext::new("node-1", &self.sources);
        let spec = pod.spec.as_ref().expect("spec");
        let c = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
            .expect("container");
        let cs = self.rt.resolve(sb, pod, c, &ctx).expect("resolve");
        self.rt
            .start_container(sb, &cs, attempt)
            .await
            .expect("start")
    }
}

fn pod(name: &str, containers: serde_json::Value, volumes: serde_json::Value) -> Pod {
    let uid = format!(
        "{name}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": uid,
                     "labels": {"app": name, "tier": "test"}},
        "spec": {"containers": containers, "volumes": volumes}
    }))
    .expect("pod")
}

fn sh(name: &str, script: &str) -> serde_json::Value {
    json!({"name": name, "image": "host", "command": ["sh", "-c", script]})
}

/// (stream, tag, text) of every record; panics on a record not in the CRI format.
fn log_records(path: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let ts = parts.next().unwrap_or_default();
            assert!(
                ts.len() == 30 && ts.ends_with('Z') && ts.parse::<jiff::Timestamp>().is_ok(),
                "bad timestamp in {line:?}"
            );
            let stream = parts.next().unwrap_or_default().to_owned();
            let tag = parts.next().unwrap_or_default().to_owned();
            let text = parts.next().unwrap_or_default().to_owned();
            assert!(stream == "stdout" || stream == "stderr", "{line:?}");
            assert!(tag == "F" || tag == "P", "{line:?}");
            (stream, tag, text)
        })
        .collect()
}

fn log_lines(rt: &ProcessRuntime, h: &ContainerHandle) -> Vec<String> {
    log_records(&rt.log_path(h))
        .into_iter()
        .map(|(_, _, t)| t)
        .collect()
}

/// Waits until the container's log has a line equal to `want`.
async fn wait_for_line(rt: &ProcessRuntime, h: &ContainerHandle, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if log_lines(rt, h).iter().any(|l| l == want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no line {want:?} in {:?}", log_lines(rt, h));
}

async fn wait(rt: &ProcessRuntime, h: &ContainerHandle) -> ExitInfo {
    tokio::time::timeout(Duration::from_secs(20), rt.wait(h))
        .await
        .expect("container exits")
}

fn process_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_has_its_hostname_and_loopback() {
    if !have_root() {
        return;
    }
    let f = Fixture::new();
    let p = pod(
        "hostname-pod",
        json!([
            sh("a", "hostname; ip -o link show lo; cat /proc/net/dev"),
            sh("b", "sleep 30"),
            sh("c", "sleep 30")
        ]),
        json!([]),
    );
    let t0 = Instant::now();
    let sb = f.sandbox(&p).await;
    let a = f.start(&sb, &p, "a", 0).await;
    let b = f.start(&sb, &p, "b", 0).await;
    let c = f.start(&sb, &p, "c", 0).await;
    eprintln!("sandbox + 3 containers running after {:?}", t0.elapsed());
    let exit = wait(&f.rt, &a).await;
    assert_eq!((exit.exit_code, exit.reason.as_str()), (0, "Completed"));
    let lines = log_lines(&f.rt, &a);
    assert_eq!(lines.first().map(String::as_str), Some("hostname-pod"));
    let lo = lines.iter().find(|l| l.contains(": lo:")).expect("lo line");
    assert!(lo.contains(",UP"), "lo is up: {lo}");
    let devices: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(':') && l.contains("  "))
        .collect();
    assert!(
        !lines.iter().any(|l| l.trim_start().starts_with("eth0:")),
        "the pod has only loopback: {devices:?}"
    );

    // Exec sees the same namespaces.
    let access = f.rt.access(&sb, &b);
    let out = access
        .exec(vec!["hostname".into()], Duration::from_secs(5))
        .await
        .expect("exec");
    assert_eq!(
        (out.exit_code, out.output.as_str()),
        (Some(0), "hostname-pod\n")
    );
    assert_ne!(
        nix::unistd::gethostname()
            .expect("hostname")
            .to_string_lossy(),
        "hostname-pod",
        "the host keeps its own name"
    );

    for h in [&b, &c] {
        let exit = f.rt.stop_container(h, Duration::from_secs(5)).await;
        assert_eq!(exit.exit_code, 143);
    }
    f.stop(&sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_share_the_pod_network_and_the_host_does_not_see_it() {
    if !have_root() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let f = Fixture::new();
    let server = format!(
        "use IO::Socket::INET; $| = 1; \
         my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => {port}, Listen => 5, ReuseAddr => 1) or die \"listen: $!\"; \
         print \"listening\\n\"; \
         while (my $c = $s->accept) {{ print $c \"hello from the pod\\n\"; close $c; }}"
    );
    let p = pod(
        "net-pod",
        json!([
            {"name": "server", "image": "host", "command": ["perl", "-e", server]},
            {"name": "client", "image": "host", "command": ["bash", "-c",
                format!("exec 3<>/dev/tcp/127.0.0.1/{port} && cat <&3")]}
        ]),
        json!([]),
    );
    let sb = f.sandbox(&p).await;
    let server = f.start(&sb, &p, "server", 0).await;
    wait_for_line(&f.rt, &server, "listening").await;

    let client = f.start(&sb, &p, "client", 0).await;
    let exit = wait(&f.rt, &client).await;
    assert_eq!(exit.exit_code, 0, "client: {:?}", log_lines(&f.rt, &client));
    assert_eq!(log_lines(&f.rt, &client), vec!["hello from the pod"]);

    let from_host = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(
        from_host.is_err(),
        "the host must not reach the pod's loopback"
    );

    // Probes connect from inside the pod.
    let access = f.rt.access(&sb, &server);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let stream = access
        .connect(addr, Duration::from_secs(2))
        .await
        .expect("connect in pod");
    let mut stream = stream.into_std().expect("std stream");
    stream.set_nonblocking(false).expect("blocking");
    let mut got = String::new();
    stream.read_to_string(&mut got).expect("read");
    assert_eq!(got, "hello from the pod\n");
    assert_eq!(access.pod_ip().to_string(), "127.0.0.1");

    let exit = f.rt.stop_container(&server, Duration::from_secs(5)).await;
    assert_eq!((exit.exit_code, exit.signal), (143, Some(15)));
    f.stop(&sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_working_dir_and_user_reach_the_process() {
    if !have_root() {
        return;
    }
    let f = Fixture::new();
    let workdir = f.dir.path().join("work");
    std::fs::create_dir_all(&workdir).expect("workdir");
    let script =
        "echo \"$POD|$NS|$NODE|$IP|$TIER|$GREETING|$HOSTNAME\"; pwd; id -u; id -g; echo \"$0 $1\"";
    let p = pod(
        "env-pod",
        json!([{
            "name": "app", "image": "host",
            "command": ["sh", "-c", script, "$(POD)-arg0", "$$(POD)"],
            "workingDir": workdir,
            "securityContext": {"runAsUser": 1234, "runAsGroup": 2345},
            "env": [
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "TIER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}},
                {"name": "GREETING", "value": "hi $(POD)"}
            ]
        }]),
        json!([]),
    );
    let sb = f.sandbox(&p).await;
    let h = f.start(&sb, &p, "app", 0).await;
    let exit = wait(&f.rt, &h).await;
    assert_eq!(exit.exit_code, 0, "{:?}", log_lines(&f.rt, &h));
    assert_eq!(
        log_lines(&f.rt, &h),
        vec![
            "env-pod|default|node-1|127.0.0.1|test|hi env-pod|env-pod".to_string(),
            workdir.display().to_string(),
            "1234".into(),
            "2345".into(),
            "env-pod-arg0 $(POD)".into(),
        ]
    );
    f.stop(&sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_are_shared_rendered_and_read_only_where_asked() {
    if !have_root() {
        return;
    }
    let mut f = Fixture::new();
    f.sources.add_config_map(
        serde_json::from_value(json!({
            "metadata": {"name": "settings", "namespace": "default"},
            "data": {"mode": "fast"}
        }))
        .expect("cm"),
    );
    f.sources.add_secret(
        serde_json::from_value(json!({
            "metadata": {"name": "creds", "namespace": "default"},
            "data": {"password": "czNjcjN0"}
        }))
        .expect("secret"),
    );
    let (w, r) = (f.host("writer"), f.host("reader"));
    let writer = format!(
        "echo shared-data > {w}/shared/a.txt && cat {w}/cfg/mode && echo && cat {w}/secret/password && echo && \
         cat {w}/info/labels && echo && (touch {w}/cfg/new 2>/dev/null || echo cfg-read-only) && sleep 30"
    );
    let reader = format!(
        "while [ ! -f {r}/shared/a.txt ]; do sleep 0.02; done; cat {r}/shared/a.txt; \
         touch {r}/shared/b 2>/dev/null || echo read-only-enforced"
    );
    let p = pod(
        "vol-pod",
        json!([
            {"name": "writer", "image": "host", "command": ["sh", "-c", writer],
             "volumeMounts": [
                {"name": "shared", "mountPath": format!("{w}/shared")},
                {"name": "cfg", "mountPath": format!("{w}/cfg")},
                {"name": "secret", "mountPath": format!("{w}/secret")},
                {"name": "info", "mountPath": format!("{w}/info")}
             ]},
            {"name": "reader", "image": "host", "command": ["sh", "-c", reader],
             "volumeMounts": [{"name": "shared", "mountPath": format!("{r}/shared"), "readOnly": true}]}
        ]),
        json!([
            {"name": "shared", "emptyDir": {}},
            {"name": "cfg", "configMap": {"name": "settings"}},
            {"name": "secret", "secret": {"secretName": "creds"}},
            {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}
        ]),
    );
    let sb = f.sandbox(&p).await;
    let writer = f.start(&sb, &p, "writer", 0).await;
    let reader = f.start(&sb, &p, "reader", 0).await;
    let exit = wait(&f.rt, &reader).await;
    assert_eq!(exit.exit_code, 0, "{:?}", log_lines(&f.rt, &reader));
    assert_eq!(
        log_lines(&f.rt, &reader),
        vec!["shared-data", "read-only-enforced"]
    );
    wait_for_line(&f.rt, &writer, "cfg-read-only").await;
    assert_eq!(
        log_lines(&f.rt, &writer),
        vec![
            "fast",
            "s3cr3t",
            "app=\"vol-pod\"",
            "tier=\"test\"",
            "cfg-read-only"
        ]
    );

    // The mounts exist only inside the containers: the host sees empty mount points.
    let host_view = Path::new(&w).join("shared");
    assert!(host_view.is_dir(), "mount point created on the host");
    assert_eq!(std::fs::read_dir(&host_view).expect("ls").count(), 0);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mountinfo.contains(&w), "no mount leaks to the host");

    f.rt.stop_container(&writer, Duration::from_secs(2)).await;
    f.stop(&sb).await;
    assert!(!Path::new(&w).exists(), "created mount points are removed");
    assert!(!Path::new(&r).exists(), "created mount points are removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_timestamped_and_the_previous_instance_is_kept() {
    if !have_root() {
        return;
    }
    let f = Fixture::new();
    let p = pod(
        "log-pod",
        json!([sh("app", "echo out; echo err >&2; printf 'no newline'")]),
        json!([]),
    );
    let sb = f.sandbox(&p).await;
    let mut paths = Vec::new();
    for attempt in 0..3 {
        let h = f.start(&sb, &p, "app", attempt).await;
        assert_eq!(wait(&f.rt, &h).await.exit_code, 0);
        paths.push(f.rt.log_path(&h));
    }
    let records = log_records(&paths[2]);
    let got: BTreeSet<(String, String, String)> = records.into_iter().collect();
    let want: BTreeSet<(String, String, String)> = [
        ("stdout", "F", "out"),
        ("stderr", "F", "err"),
        ("stdout", "F", "no newline"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want);
    assert!(!paths[0].exists(), "older instances are deleted");
    assert!(paths[1].exists(), "the previous instance is kept");
    assert_eq!(paths[2].file_name().and_then(|n| n.to_str()), Some("2.log"));
    f.stop(&sb).await;
    assert!(paths[2].exists(), "logs outlive the sandbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_and_signals_are_reported_like_kubernetes() {
    if !have_root() {
        return;
    }
    let f = Fixture::new();
    let p = pod(
        "exit-pod",
        json!([
            sh("ok", "exit 0"),
            sh("three", "exit 3"),
            {"name": "sleeper", "image": "host", "command": ["sleep", "100"]},
            sh("stubborn", "trap '' TERM; echo trapped; sleep 100")
        ]),
        json!([]),
    );
    let sb = f.sandbox(&p).await;
    let ok = f.start(&sb, &p, "ok", 0).await;
    let e = wait(&f.rt, &ok).await;
    assert_eq!(
        (e.exit_code, e.signal, e.reason.as_str()),
        (0, None, "Completed")
    );
    assert!(e.started_at.is_some_and(|s| s <= e.finished_at));

    let three = f.start(&sb, &p, "three", 0).await;
    let e = wait(&f.rt, &three).await;
    assert_eq!((e.exit_code, e.reason.as_str()), (3, "Error"));

    let sleeper = f.start(&sb, &p, "sleeper", 0).await;
    f.rt.signal(&sleeper, libc::SIGTERM).expect("signal");
    let e = wait(&f.rt, &sleeper).await;
    assert_eq!(
        (e.exit_code, e.signal, e.reason.as_str()),
        (143, Some(15), "Error")
    );
    assert!(
        f.rt.signal(&sleeper, libc::SIGTERM).is_err(),
        "no signals after exit"
    );

    let stubborn = f.start(&sb, &p, "stubborn", 0).await;
    wait_for_line(&f.rt, &stubborn, "trapped").await;
    let t0 = Instant::now();
    let e =
        f.rt.stop_container(&stubborn, Duration::from_millis(1500))
            .await;
    let took = t0.elapsed();
    assert_eq!((e.exit_code, e.signal), (137, Some(9)));
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(5),
        "SIGKILL after the grace period, took {took:?}"
    );
    f.stop(&sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_forked_by_the_container_die_with_it() {
    if !have_root() {
        return;
    }
    let f = Fixture::new();
    let p = pod(
        "fork-pod",
        json!([sh(
            "app",
            "sleep 300 & echo $!; setsid sleep 300 & echo $!; exit 0"
        )]),
        json!([]),
    );
    let sb = f.sandbox(&p).await;
    let h = f.start(&sb, &p, "app", 0).await;
    let e = wait(&f.rt, &h).await;
    assert_eq!(e.exit_code, 0);
    let pids: Vec<i32> = log_lines(&f.rt, &h)
        .iter()
        .filter_map(|l| l.parse().ok())
        .collect();
    assert_eq!(pids.len(), 2, "{:?}", log_lines(&f.rt, &h));
    for pid in pids {
        assert!(!process_exists(pid), "child {pid} outlived its container");
    }
    f.stop(&sb).await;
}

/// A stop sends SIGTERM to the main process and its process group, as Kubernetes sends it
/// to the container's first process; a process that left the group (a daemon) gets no
/// SIGTERM but is killed once the main process has exited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_reaches_the_main_process_group_and_daemons_die_with_main() {
    if !have_root() {
        return;
    }
    let f = Fixture::new();
    let loop_until_term =
        |name: &str| format!("trap 'echo {name}-term; exit 0' TERM; while :; do sleep 0.05; done");
    let script = format!(
        "trap 'echo main-term; exit 0' TERM; \
         sh -c \"{child}\" & \
         setsid sh -c \"echo daemon \\$\\$; {daemon}\" & \
         echo ready; while :; do sleep 0.05; done",
        child = loop_until_term("child"),
        daemon = loop_until_term("daemon"),
    );
    let p = pod("term-pod", json!([sh("app", &script)]), json!([]));
    let sb = f.sandbox(&p).await;
    let h = f.start(&sb, &p, "app", 0).await;
    wait_for_line(&f.rt, &h, "ready").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let daemon: i32 = loop {
        let found = log_lines(&f.rt, &h)
            .iter()
            .find_map(|l| l.strip_prefix("daemon ")?.parse().ok());
        if let Some(pid) = found {
            break pid;
        }
        assert!(Instant::now() < deadline, "{:?}", log_lines(&f.rt, &h));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(process_exists(daemon));

    let e = f.rt.stop_container(&h, Duration::from_secs(10)).await;
    assert_eq!(
        (e.exit_code, e.signal),
        (0, None),
        "main ran its trap: {e:?}"
    );
    let lines = log_lines(&f.rt, &h);
    assert!(lines.iter().any(|l| l == "main-term"), "{lines:?}");
    assert!(lines.iter().any(|l| l == "child-term"), "{lines:?}");
    assert!(!lines.iter().any(|l| l == "daemon-term"), "{lines:?}");
    assert!(!process_exists(daemon), "the daemon outlived its container");
    f.stop(&sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commands_and_volumes_fail_cleanly() {
    if !have_root() {
        return;
    }
    let f = Fixture::new();
    let missing = f.dir.path().join("does-not-exist");
    let not_executable = f.dir.path().join("data.txt");
    std::fs::write(&not_executable, "just data").expect("write");
    let p = pod(
        "bad-pod",
        json!([
            {"name": "nosuch", "image": "host", "command": ["nosuch-tandem-command", "x"]},
            {"name": "noperm", "image": "host", "command": [not_executable]},
            {"name": "mount", "image": "host", "command": ["true"],
             "volumeMounts": [{"name": "gone", "mountPath": f.host("gone")}]},
            {"name": "exec", "image": "host", "command": ["sleep", "30"],
             "securityContext": {"runAsUser": 4321}, "workingDir": "/tmp",
             "env": [{"name": "MARK", "value": "m1"}]}
        ]),
        json!([{"name": "gone", "hostPath": {"path": missing}}]),
    );
    let sb = f.sandbox(&p).await;

    let h = f.start(&sb, &p, "nosuch", 0).await;
    let e = wait(&f.rt, &h).await;
    assert_eq!(
        (e.exit_code, e.reason.as_str()),
        (127, "ContainerCannotRun")
    );
    assert_eq!(
        e.message.as_deref(),
        Some("exec: \"nosuch-tandem-command\": executable file not found in $PATH")
    );
    assert_eq!(h.pid(), None);

    let h = f.start(&sb, &p, "noperm", 0).await;
    let e = wait(&f.rt, &h).await;
    assert_eq!(
        (e.exit_code, e.reason.as_str()),
        (126, "ContainerCannotRun")
    );

    let ctx = ResolveContext::new("node-1", &f.sources);
    let spec = p.spec.as_ref().expect("spec");
    let c = spec
        .containers
        .iter()
        .find(|c| c.name == "mount")
        .expect("c");
    let cs = f.rt.resolve(&sb, &p, c, &ctx).expect("resolve");
    let err =
        f.rt.start_container(&sb, &cs, 0)
            .await
            .expect_err("mount fails");
    assert_eq!(err.reason, "CreateContainerError");
    assert!(
        err.message.contains("\"gone\"") && err.message.contains("No such file or directory"),
        "{}",
        err.message
    );

    // Exec in a container: its user, working directory and env; killed after the timeout.
    let h = f.start(&sb, &p, "exec", 0).await;
    let access = f.rt.access(&sb, &h);
    let out = access
        .exec(
            vec!["sh".into(), "-c".into(), "id -u; pwd; echo $MARK".into()],
            Duration::from_secs(5),
        )
        .await
        .expect("exec");
    assert_eq!(
        (out.exit_code, out.output.as_str()),
        (Some(0), "4321\n/tmp\nm1\n")
    );
    let t0 = Instant::now();
    let out = access
        .exec(
            vec!["sleep".into(), "10".into()],
            Duration::from_millis(200),
        )
        .await
        .expect("exec");
    assert_eq!(out.exit_code, None);
    assert!(t0.elapsed() < Duration::from_secs(3));
    let err = access
        .exec(vec!["nosuch-tandem-command".into()], Duration::from_secs(1))
        .await
        .expect_err("no such command");
    assert!(
        err.to_string().contains("executable file not found"),
        "{err}"
    );

    f.stop(&sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sandbox_leaves_no_process_mount_or_directory() {
    if !have_root() {
        return;
    }
    let f = Fixture::new();
    let mnt = f.host("deep/mount/point");
    let p = pod(
        "gone-pod",
        json!([
            {"name": "a", "image": "host", "command": ["sh", "-c", "setsid sleep 300 & echo $!; sleep 300"],
             "volumeMounts": [{"name": "data", "mountPath": mnt}]},
            sh("b", "sleep 300")
        ]),
        json!([{"name": "data", "emptyDir": {}}]),
    );
    let sb = f.sandbox(&p).await;
    let a = f.start(&sb, &p, "a", 0).await;
    let b = f.start(&sb, &p, "b", 0).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let daemon: i32 = loop {
        if let Some(pid) = log_lines(&f.rt, &a).first().and_then(|l| l.parse().ok()) {
            break pid;
        }
        assert!(Instant::now() < deadline, "no pid logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // A probe still running in the pod when it is stopped.
    let access = f.rt.access(&sb, &b);
    let probe = tokio::spawn(async move {
        access
            .exec(vec!["sleep".into(), "60".into()], Duration::from_secs(60))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let netns = std::fs::read_link(format!("/proc/{}/ns/net", sb.pid())).expect("netns");
    let mut pids = vec![sb.pid(), daemon];
    pids.extend(a.pid());
    pids.extend(b.pid());
    let t0 = Instant::now();
    f.stop(&sb).await;
    eprintln!("stop_sandbox took {:?}", t0.elapsed());

    for pid in pids {
        assert!(!process_exists(pid), "process {pid} survived stop_sandbox");
    }
    let probe = tokio::time::timeout(Duration::from_secs(5), probe)
        .await
        .expect("probe ends")
        .expect("join")
        .expect("exec result");
    assert_ne!(probe.exit_code, Some(0));
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        if let Ok(link) = std::fs::read_link(entry.path().join("ns/net")) {
            assert_ne!(
                link,
                netns,
                "process {:?} is still in the pod netns",
                entry.file_name()
            );
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mountinfo.contains(&f.dir.path().display().to_string()));
    assert!(
        !Path::new(&f.host("deep")).exists(),
        "created mount points removed"
    );
    let pod_dir = f.dir.path().join("run/pods").join(&sb.uid);
    assert!(!pod_dir.exists(), "pod state removed");
    // Waiting on a container of a stopped pod still answers.
    let e = wait(&f.rt, &b).await;
    assert_eq!((e.exit_code, e.signal), (137, Some(9)));
}

/// Takes what a pod worker reports and drops it.
struct Ignore;

impl node::worker::PodSink for Ignore {
    fn status(&self, _pod: &Pod) {}
    fn event(&self, _pod: &Pod, _event: &node::planner::Event) {}
    fn finished(&self, _pod: &Pod) {}
}

/// Pids of `tandem sandbox <hostname>` processes.
fn sandbox_processes(hostname: &str) -> Vec<i32> {
    let want = format!("sandbox\0{hostname}\0");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).ends_with(&want))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_while_its_sandbox_starts_leaves_nothing_behind() {
    if !have_root() {
        return;
    }
    let f = Fixture::new();
    let name = format!("early-{}", std::process::id());
    let p = pod(&name, json!([sh("app", "sleep 300")]), json!([]));
    let handle = node::worker::spawn_pod(
        f.rt.clone(),
        node::worker::WorkerConfig {
            node_name: "node-1".into(),
            backoff: node::planner::BackoffConfig::default(),
        },
        std::sync::Arc::new(VolumeSources::default()),
        std::sync::Arc::new(Ignore),
        p,
    );
    // Deleted at once: the worker sees the delete while the sandbox is still starting.
    handle.delete(Some(0));
    let finished = tokio::time::timeout(Duration::from_secs(30), handle.finished()).await;
    // The sandbox starts in the background: give a leaked one time to appear.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leaked = sandbox_processes(&name);
    for pid in &leaked {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(finished.is_ok(), "the worker did not finish");
    assert_eq!(leaked, Vec::<i32>::new(), "sandbox processes left behind");
    assert_eq!(f.rt.pods_on_disk(), Vec::<String>::new());
}
