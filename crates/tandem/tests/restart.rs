//! `tandem up` stopped with SIGTERM leaves its pods running; started again with the same
//! data dir it takes them back without restarting anything, removes what the API no
//! longer knows, and `tandem down` leaves nothing behind.
//!
//! Root tests with real processes, driven through the `kube` crate. Without root they say
//! so and pass, except under `CI=true`, where they fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use node::runtime::{ProcessRuntime, ResolveContext, RuntimeConfig, SandboxSpec, VolumeSources};
use serde_json::json;

const TANDEM: &str = env!("CARGO_BIN_EXE_tandem");

fn have_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "the restart tests need root (tandem up runs pods) and CI=true requires them to run"
    );
    eprintln!("notice: skipping restart test: it needs root");
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `tandem up` on a data dir of its own. Dropping it kills whatever is left.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    up: Option<Child>,
}

impl Cluster {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("host")).expect("host dir");
        Self {
            dir,
            port: free_port(),
            up: None,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A directory shared with the containers (mounted at the same path).
    fn host(&self) -> PathBuf {
        self.dir.path().join("host")
    }

    fn runtime(&self) -> ProcessRuntime {
        ProcessRuntime::new(RuntimeConfig {
            root: self.data().join("run"),
            log_root: self.data().join("logs"),
            helper_exe: PathBuf::from(TANDEM),
        })
    }

    fn start(&mut self) {
        assert!(self.up.is_none(), "already up");
        let log = std::fs::File::create(self.dir.path().join("up.log")).expect("log file");
        let child = Command::new(TANDEM)
            .arg("up")
            .arg("--data-dir")
            .arg(self.data())
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            // Several clusters run at once here; only tests/network.rs needs pod networking.
            .args(["--pod-network", "none"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tandem up");
        self.up = Some(child);
    }

    /// A client once the API answers.
    async fn client(&self) -> kube::Client {
        let start = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(self.data().join("kubeconfig"))
                && let Ok(kubeconfig) = kube::config::Kubeconfig::from_yaml(&text)
                && let Ok(config) =
                    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await
                && let Ok(client) = kube::Client::try_from(config)
                && client.apiserver_version().await.is_ok()
            {
                return client;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "tandem up did not come up:\n{}",
                self.up_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn up_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default()
    }

    /// SIGTERM to `tandem up` (only to it, not its process group) and wait for its exit.
    async fn stop(&mut self) {
        let mut child = self.up.take().expect("up is running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait for up") {
                assert!(status.success(), "tandem up exited with {status}");
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "tandem up did not stop on SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `tandem down`, then the exit of `tandem up`.
    async fn down(&mut self) {
        let data = self.data();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(TANDEM)
                .arg("down")
                .arg("--data-dir")
                .arg(data)
                .output()
        })
        .await
        .expect("join")
        .expect("run tandem down");
        assert!(
            out.status.success(),
            "tandem down failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut child = self.up.take().expect("up is running");
        let start = Instant::now();
        while child.try_wait().expect("wait for up").is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "tandem up still runs after tandem down"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut up) = self.up.take() {
            let _ = up.kill();
            let _ = up.wait();
        }
        // A failed test must not leave pods running: stop what is on disk.
        let rt = self.runtime();
        let _ = std::thread::spawn(move || {
            if let Ok(tokio_rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                tokio_rt.block_on(async {
                    for uid in rt.pods_on_disk() {
                        let _ = rt.remove_pod_state(&uid, Duration::ZERO).await;
                    }
                });
            }
        })
        .join();
    }
}

/// A container that appends its PID to `<host>/<name>.pids` once, then sleeps; on
/// SIGTERM it appends its name to `<host>/order` and exits 0. It has a readiness probe,
/// and a sidecar also a startup probe (both pass), so that adoption has probe results
/// to carry over.
fn container(name: &str, host: &Path, sidecar: bool) -> serde_json::Value {
    let host = host.display();
    // `$$$$`: Kubernetes turns `$$` into `$` before the shell sees it.
    let script = format!(
        "echo $$$$ >> {host}/{name}.pids; trap 'echo {name} >> {host}/order; exit 0' TERM; \
         sleep 3600 & wait"
    );
    let mut c = json!({
        "name": name,
        "image": "busybox",
        "command": ["sh", "-c", script],
        "volumeMounts": [{"name": "host", "mountPath": host.to_string()}],
        "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}
    });
    if sidecar {
        c["restartPolicy"] = json!("Always");
        c["startupProbe"] = json!({"exec": {"command": ["true"]}, "periodSeconds": 1});
    }
    c
}

/// A pod with sidecar `<prefix>proxy` and main container `<prefix>app`.
fn pod(name: &str, prefix: &str, host: &Path) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "terminationGracePeriodSeconds": 10,
            "volumes": [{"name": "host", "hostPath": {"path": host.display().to_string(),
                "type": "Directory"}}],
            "initContainers": [container(&format!("{prefix}proxy"), host, true)],
            "containers": [container(&format!("{prefix}app"), host, false)]
        }
    }))
    .expect("pod")
}

fn statuses(pod: &Pod) -> Vec<ContainerStatus> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .cloned()
        .collect()
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

/// Waits until the pod is Running with every container running and ready.
async fn wait_running(api: &Api<Pod>, name: &str) -> Pod {
    let start = Instant::now();
    loop {
        let pod = api.get(name).await.expect("get pod");
        let all = statuses(&pod);
        let running = all.len() == 2
            && all
                .iter()
                .all(|s| s.ready && s.state.as_ref().is_some_and(|st| st.running.is_some()));
        if phase(&pod) == "Running" && running {
            return pod;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "pod {name} did not get running: {:?}",
            pod.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The PIDs a container wrote, one per start.
fn pids(host: &Path, container: &str) -> Vec<i32> {
    std::fs::read_to_string(host.join(format!("{container}.pids")))
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().parse().expect("a pid"))
        .collect()
}

/// The process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    state.is_some_and(|s| s != "Z")
}

/// Runtime helpers (`tandem sandbox`/`tandem shim`) that belong to this data dir or to
/// one of these pods.
fn helpers_left(data: &Path, pod_names: &[&str]) -> Vec<String> {
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let ours = args.first().is_some_and(|a| a == TANDEM)
            && matches!(args.get(1).map(String::as_str), Some("sandbox" | "shim"))
            && args.get(2).is_some_and(|a| {
                a.starts_with(&data.display().to_string()) || pod_names.contains(&a.as_str())
            });
        if ours && alive(pid) {
            left.push(args.join(" "));
        }
    }
    left
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ids(pod: &Pod) -> Vec<(String, Option<String>, i32)> {
    statuses(pod)
        .into_iter()
        .map(|s| (s.name, s.container_id, s.restart_count))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_up_adopts_its_running_pods() {
    if !have_root() {
        return;
    }
    let mut cluster = Cluster::new();
    let host = cluster.host();
    let name = format!("adopt-{}", std::process::id());
    cluster.start();
    let client = cluster.client().await;
    let api: Api<Pod> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &pod(&name, "", &host))
        .await
        .expect("create pod");
    let before = wait_running(&api, &name).await;
    let (proxy, app) = (pids(&host, "proxy"), pids(&host, "app"));
    assert_eq!((proxy.len(), app.len()), (1, 1), "one start each");

    cluster.stop().await;
    assert!(alive(proxy[0]), "the sidecar outlives tandem up");
    assert!(alive(app[0]), "the main container outlives tandem up");

    cluster.start();
    let client = cluster.client().await;
    let api: Api<Pod> = Api::namespaced(client, "default");
    // Nothing may happen to the pod: watch it for a while after the agent is back.
    let settle = Instant::now();
    let mut after = api.get(&name).await.expect("get pod");
    while settle.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = api.get(&name).await.expect("get pod");
        assert_eq!(
            pids(&host, "proxy"),
            proxy,
            "the sidecar was not started again"
        );
        assert_eq!(
            pids(&host, "app"),
            app,
            "the main container was not started again"
        );
        assert_eq!(ids(&after), ids(&before), "same containers, no restarts");
        assert_eq!(phase(&after), "Running");
    }
    // Not even briefly did a container look restarted, unstarted or unready: the
    // status was never written again (a watch, `kubectl get -w`, sees nothing new).
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "the pod changed after the restart: {:?}",
        after.status
    );
    assert!(
        ids(&after)
            .iter()
            .all(|(_, id, restarts)| id.is_some() && *restarts == 0)
    );
    assert!(alive(proxy[0]) && alive(app[0]));
    assert!(
        statuses(&after).iter().all(|s| s.ready),
        "still ready: {:?}",
        after.status
    );

    // The adopted pod is the agent's again: a delete stops it in order.
    api.delete(&name, &DeleteParams::default())
        .await
        .expect("delete pod");
    let start = Instant::now();
    while api.get_opt(&name).await.expect("get pod").is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the pod was not removed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let order = std::fs::read_to_string(host.join("order")).unwrap_or_default();
    assert_eq!(
        order.lines().collect::<Vec<_>>(),
        ["app", "proxy"],
        "main container first, then the sidecar"
    );
    assert!(!alive(proxy[0]) && !alive(app[0]));

    // `tandem down` stops the pods that are left and the server, and nothing remains.
    let second = format!("down-{}", std::process::id());
    api.create(&PostParams::default(), &pod(&second, "d", &host))
        .await
        .expect("create pod");
    wait_running(&api, &second).await;
    let (dproxy, dapp) = (pids(&host, "dproxy"), pids(&host, "dapp"));
    cluster.down().await;
    let data = cluster.data();
    assert!(!alive(dproxy[0]) && !alive(dapp[0]), "containers stopped");
    let order = std::fs::read_to_string(host.join("order")).unwrap_or_default();
    assert_eq!(
        order.lines().skip(2).collect::<Vec<_>>(),
        ["dapp", "dproxy"],
        "tandem down deletes gracefully"
    );
    assert_eq!(helpers_left(&data, &[&name, &second]), Vec::<String>::new());
    assert_eq!(cluster.runtime().pods_on_disk(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_the_api_does_not_know_is_removed_on_start() {
    if !have_root() {
        return;
    }
    let mut cluster = Cluster::new();
    let host = cluster.host();
    // State a previous `tandem up` would have left for a pod removed from the API since.
    let name = format!("orphan-{}", std::process::id());
    let mut orphan = pod(&name, "o", &host);
    orphan.metadata.uid = Some(format!("orphan-uid-{}", std::process::id()));
    let runtime = cluster.runtime();
    let sb = runtime
        .create_sandbox(&SandboxSpec::for_pod(&orphan))
        .await
        .expect("sandbox");
    let sources = VolumeSources::default();
    runtime
        .prepare_volumes(&sb, &orphan, &sources)
        .expect("volumes");
    let spec = orphan.spec.as_ref().expect("spec");
    let ctx = ResolveContext::new("node", &sources);
    let cs = runtime
        .resolve(&sb, &orphan, &spec.containers[0], &ctx)
        .expect("resolve");
    runtime.start_container(&sb, &cs, 0).await.expect("start");
    wait_until(
        "the orphan's container runs",
        Duration::from_secs(10),
        || pids(&host, "oapp").len() == 1,
    )
    .await;
    let pid = pids(&host, "oapp")[0];
    assert!(alive(pid));

    cluster.start();
    let _client = cluster.client().await;
    wait_until(
        "the orphan's container is stopped",
        Duration::from_secs(20),
        || !alive(pid),
    )
    .await;
    wait_until(
        "the orphan's state is removed",
        Duration::from_secs(20),
        || cluster.runtime().pods_on_disk().is_empty(),
    )
    .await;
    let order = std::fs::read_to_string(host.join("order")).unwrap_or_default();
    assert_eq!(order.trim(), "oapp", "stopped with SIGTERM first");
    assert!(!sb.is_running(), "the orphan's sandbox is gone");
    let data = cluster.data();
    assert_eq!(helpers_left(&data, &[&name]), Vec::<String>::new());
    cluster.down().await;
}
