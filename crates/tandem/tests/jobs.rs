//! Jobs, namespaces and garbage collection against `tandem up`, with the real kubectl
//! (installed into `.venv` by `scripts/test.sh`). Needs root (pods run in namespaces).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn kubectl_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TANDEM_KUBECTL") {
        return Some(PathBuf::from(path));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/kubectl");
    venv.exists().then_some(venv)
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

/// A `tandem up` on a free port with its own data dir, stopped (and its pods with it) on drop.
struct Cluster {
    dir: tempfile::TempDir,
    up: Option<Child>,
    kubectl: PathBuf,
}

impl Cluster {
    fn start() -> Option<Self> {
        Self::start_with(None)
    }

    fn start_with(config: Option<&Path>) -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            assert!(!ci(), "this test needs root (namespaces); CI runs as root");
            eprintln!("skipping: needs root");
            return None;
        }
        let Some(kubectl) = kubectl_binary() else {
            assert!(
                !ci(),
                "kubectl 1.37 missing: scripts/test.sh installs it into .venv"
            );
            eprintln!("skipping: no kubectl in .venv (run scripts/test.sh)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
        cmd.args(["up", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            // Several clusters run at once here; only tests/network.rs needs pod networking.
            .args(["--pod-network", "none"]);
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        let up = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tandem up");
        let cluster = Cluster {
            dir,
            up: Some(up),
            kubectl,
        };
        let start = Instant::now();
        loop {
            if cluster.kubeconfig().exists()
                && cluster.kubectl(&["get", "ns", "default"]).status.success()
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "tandem up did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(cluster)
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("data/kubeconfig")
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(&self.kubectl)
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("KUBECACHEDIR", self.dir.path().join("cache"))
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl")
    }

    /// Runs kubectl and returns stdout, failing the test with stderr if it fails.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({:?}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply(&self, yaml: &str) {
        let file = self.dir.path().join(format!("m{}.yaml", yaml.len()));
        std::fs::write(&file, yaml).unwrap();
        self.ok(&["apply", "-f", file.to_str().unwrap()]);
    }

    /// Waits until `kubectl ARGS` prints `want` (trimmed).
    fn wait_output(&self, args: &[&str], want: &str) {
        let start = Instant::now();
        loop {
            let out = self.kubectl(args);
            let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if text == want {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "kubectl {args:?} never printed {want:?} (last: {text:?}, {})",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Names of the pods with label selector `selector` (in `namespace`).
    fn pods(&self, namespace: &str, selector: &str) -> Vec<String> {
        self.ok(&[
            "get",
            "pods",
            "-n",
            namespace,
            "-l",
            selector,
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .split_whitespace()
        .map(str::to_owned)
        .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["down", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .stdout(Stdio::null())
            .status();
        if let Some(mut up) = self.up.take() {
            let _ = up.kill();
            let _ = up.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_job_with_a_sidecar_completes_when_its_main_container_succeeds() {
    let Some(c) = Cluster::start() else { return };
    c.ok(&[
        "apply",
        "-f",
        example("job-with-sidecar.yaml").to_str().unwrap(),
    ]);
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/with-sidecar",
        "--timeout=45s",
    ]);
    let status = c.ok(&[
        "get",
        "job",
        "with-sidecar",
        "-o",
        "jsonpath={.status.succeeded}/{.status.failed}/{.status.active}",
    ]);
    assert_eq!(status, "1/0/0");
    let pods = c.pods("default", "batch.kubernetes.io/job-name=with-sidecar");
    assert_eq!(pods.len(), 1, "one pod: {pods:?}");
    let phase = c.ok(&["get", "pod", &pods[0], "-o", "jsonpath={.status.phase}"]);
    assert_eq!(phase, "Succeeded");
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=with-sidecar",
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ]);
    assert!(
        events.contains(&format!("SuccessfulCreate: Created pod: {}", pods[0])),
        "{events}"
    );
    assert!(events.contains("Completed: Job completed"), "{events}");
}

#[test]
fn a_parallel_job_runs_each_pod_once_and_kills_none() {
    // A finished pod must never be started again by a watch event that lags behind its
    // final status, and the controller must never see more pods than it asked for.
    let Some(c) = Cluster::start() else { return };
    c.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: many
spec:
  completions: 24
  parallelism: 8
  template:
    spec:
      restartPolicy: Never
      initContainers:
      - name: proxy
        image: debian:12
        command: ["sleep", "infinity"]
        restartPolicy: Always
      containers:
      - name: app
        image: debian:12
        command: ["sh", "-c", "sleep 0.3"]
"#,
    );
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/many",
        "--timeout=90s",
    ]);
    let status = c.ok(&[
        "get",
        "job",
        "many",
        "-o",
        "jsonpath={.status.succeeded}/{.status.failed}",
    ]);
    assert_eq!(status, "24/0");
    let pods = c.pods("default", "batch.kubernetes.io/job-name=many");
    assert_eq!(pods.len(), 24, "exactly one pod per completion: {pods:?}");
    let phases = c.ok(&[
        "get",
        "pods",
        "-l",
        "batch.kubernetes.io/job-name=many",
        "-o",
        "jsonpath={range .items[*]}{.status.phase} {.status.containerStatuses[0].restartCount}{\"\\n\"}{end}",
    ]);
    for line in phases.lines() {
        assert_eq!(line, "Succeeded 0", "{phases}");
    }
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=many",
        "-o",
        "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}",
    ]);
    assert!(!events.contains("SuccessfulDelete"), "{events}");
}

#[test]
fn a_failing_job_stops_at_its_backoff_limit() {
    let Some(c) = Cluster::start() else { return };
    c.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: fails
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: debian:12
        command: ["sh", "-c", "exit 3"]
"#,
    );
    c.ok(&[
        "wait",
        "--for=condition=failed",
        "job/fails",
        "--timeout=50s",
    ]);
    let out = c.ok(&[
        "get",
        "job",
        "fails",
        "-o",
        "jsonpath={.status.failed}/{.status.conditions[?(@.type==\"Failed\")].reason}",
    ]);
    assert_eq!(out, "2/BackoffLimitExceeded");
    // The first pod plus one retry, no more.
    assert_eq!(c.pods("default", "job-name=fails").len(), 2);
}

// `kubectl create namespace` sends protobuf, which the server does not read.
const TEAM: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n";

#[test]
fn deleting_a_namespace_deletes_everything_in_it() {
    let Some(c) = Cluster::start() else { return };
    c.apply(TEAM);
    // Every active namespace gets a default service account.
    c.wait_output(
        &[
            "get",
            "serviceaccount",
            "default",
            "-n",
            "team",
            "-o",
            "name",
        ],
        "serviceaccount/default",
    );
    c.apply(
        r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: team
data:
  a: b
---
apiVersion: batch/v1
kind: Job
metadata:
  name: worker
  namespace: team
spec:
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: debian:12
        command: ["sleep", "600"]
"#,
    );
    c.wait_output(
        &[
            "get",
            "pods",
            "-n",
            "team",
            "-l",
            "job-name=worker",
            "-o",
            "jsonpath={.items[*].status.phase}",
        ],
        "Running",
    );
    // kubectl waits until the namespace is gone.
    c.ok(&["delete", "namespace", "team", "--timeout=45s"]);
    let out = c.kubectl(&["get", "namespace", "team"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Recreated, it starts empty (but for its new default account).
    c.apply(TEAM);
    let left = c.ok(&["get", "configmaps,jobs,pods", "-n", "team", "-o", "name"]);
    assert_eq!(left.trim(), "");
}

#[test]
fn deleting_a_job_deletes_its_pods_in_the_background() {
    let Some(c) = Cluster::start() else { return };
    c.apply(LONG_JOB);
    c.wait_output(
        &[
            "get",
            "pods",
            "-l",
            "job-name=long",
            "-o",
            "jsonpath={.items[*].status.phase}",
        ],
        "Running Running",
    );
    c.ok(&["delete", "job", "long", "--wait=false"]);
    c.wait_output(&["get", "pods", "-l", "job-name=long", "-o", "name"], "");
}

const LONG_JOB: &str = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: long
spec:
  parallelism: 2
  completions: 2
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: debian:12
        command: ["sleep", "600"]
"#;

/// `--cascade=orphan` asks the API server to put the `orphan` finalizer on the owner;
/// the collector then strips the owner reference from the pods, which stay.
#[test]
fn deleting_a_job_with_cascade_orphan_leaves_its_pods() {
    let Some(c) = Cluster::start() else { return };
    c.apply(LONG_JOB);
    c.wait_output(
        &[
            "get",
            "pods",
            "-l",
            "job-name=long",
            "-o",
            "jsonpath={.items[*].status.phase}",
        ],
        "Running Running",
    );
    c.ok(&["delete", "job", "long", "--cascade=orphan"]);
    c.wait_output(
        &[
            "get",
            "pods",
            "-l",
            "job-name=long",
            "-o",
            "jsonpath={.items[*].metadata.ownerReferences}",
        ],
        "",
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.pods("default", "job-name=long").len(), 2);
}

/// With the `SidecarContainers` gate off (Kubernetes before 1.28) a "sidecar" is a
/// regular container: nothing stops it, so the pod stays 1/2 NotReady and the Job
/// never completes.
#[test]
fn without_native_sidecars_a_job_never_completes() {
    let Some(c) = Cluster::start_with(Some(&example("kind-sidecars-off.yaml"))) else {
        return;
    };
    c.ok(&[
        "apply",
        "-f",
        example("job-without-native-sidecars.yaml")
            .to_str()
            .unwrap(),
    ]);
    let selector = "job-name=without-native-sidecars";
    // The main container finishes, the "sidecar" runs on.
    c.wait_output(
        &[
            "get", "pods", "-l", selector, "-o",
            "jsonpath={.items[0].status.containerStatuses[?(@.name==\"main\")].state.terminated.reason}",
        ],
        "Completed",
    );
    let table = c.ok(&["get", "pods", "-l", selector, "--no-headers"]);
    let columns: Vec<&str> = table.split_whitespace().collect();
    assert_eq!(columns.get(1..3), Some(&["1/2", "NotReady"][..]), "{table}");
    let out = c.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/without-native-sidecars",
        "--timeout=5s",
    ]);
    assert!(!out.status.success(), "the job completed");
    let active = c.ok(&[
        "get",
        "job",
        "without-native-sidecars",
        "-o",
        "jsonpath={.status.active}/{.status.succeeded}",
    ]);
    assert_eq!(active, "1/0");
}
