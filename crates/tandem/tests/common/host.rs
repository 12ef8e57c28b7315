//! A `tandem up --pod-network none` in the machine's own network namespace, on a free port
//! with its own data dir, stopped (and its pods with it) on drop. Many run side by side;
//! tests that need pod networking use [`super::Cluster`] instead.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{ci, kubectl_binary};

pub struct HostCluster {
    pub dir: tempfile::TempDir,
    up: Option<Child>,
    kubectl: PathBuf,
}

impl HostCluster {
    pub fn start() -> Option<Self> {
        Self::start_with(None)
    }

    /// With a kind cluster config (`--config`).
    pub fn start_with(config: Option<&Path>) -> Option<Self> {
        Self::start_full(config, &[])
    }

    /// With extra environment for `tandem up` (and so its node agent).
    pub fn start_with_env(env: &[(&str, &str)]) -> Option<Self> {
        Self::start_full(None, env)
    }

    fn start_full(config: Option<&Path>, env: &[(&str, &str)]) -> Option<Self> {
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
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
        cmd.args(["up", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            // Several clusters share this namespace: no bridge, no DNS on its address.
            .args(["--pod-network", "none"]);
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        let up = cmd
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tandem up");
        let cluster = HostCluster {
            dir,
            up: Some(up),
            kubectl,
        };
        let start = Instant::now();
        while !(cluster.kubeconfig().exists()
            && cluster.kubectl(&["get", "ns", "default"]).status.success())
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "tandem up did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(cluster)
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("data/kubeconfig")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("KUBECACHEDIR", self.dir.path().join("cache"))
            .stdin(Stdio::null());
        cmd
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run kubectl")
    }

    /// Runs kubectl and returns stdout, failing the test with stderr if it fails.
    pub fn ok(&self, args: &[&str]) -> String {
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

    /// `kubectl apply -f` of the given manifest; the caller checks the outcome.
    pub fn apply(&self, yaml: &str) -> Output {
        let file = self.dir.path().join(format!("m{}.yaml", yaml.len()));
        std::fs::write(&file, yaml).expect("write manifest");
        self.kubectl(&["apply", "-f", file.to_str().expect("path")])
    }

    /// `kubectl apply -f` that must succeed.
    pub fn apply_ok(&self, yaml: &str) {
        let out = self.apply(yaml);
        assert!(out.status.success(), "kubectl apply failed: {out:?}");
    }

    /// Waits until `kubectl get pod NAME -o jsonpath=EXPR` prints `want`.
    pub fn wait_for(&self, pod: &str, expr: &str, want: &str) {
        self.wait_output(
            &["get", "pod", pod, "-o", &format!("jsonpath={expr}")],
            want,
        );
    }

    /// Waits until `kubectl ARGS` prints `want` (trimmed).
    pub fn wait_output(&self, args: &[&str], want: &str) {
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
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Names of the pods with label selector `selector` (in `namespace`).
    pub fn pods(&self, namespace: &str, selector: &str) -> Vec<String> {
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

impl Drop for HostCluster {
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
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}
