//! A networked `tandem up` for end-to-end tests: each cluster runs in a private network
//! namespace of its own (held by a `sleep` process), so clusters run side by side and the
//! machine's own network is never touched; kubectl, `tandem mesh` and DNS queries enter
//! that namespace with nsenter. Needs root.

#![allow(dead_code)]

pub mod host;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

pub fn kubectl_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TANDEM_KUBECTL") {
        return Some(PathBuf::from(path));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/kubectl");
    venv.exists().then_some(venv)
}

pub fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A private network namespace, alive as long as its holder process.
pub struct Netns {
    holder: Child,
}

impl Netns {
    pub fn new() -> Self {
        let holder = Command::new("unshare")
            .args(["--net", "sleep", "infinity"])
            .spawn()
            .expect("unshare --net");
        let ns = Netns { holder };
        // Wait until the holder has left our namespace.
        let own = std::fs::read_link("/proc/self/ns/net").expect("own netns");
        let start = Instant::now();
        while std::fs::read_link(ns.path()).ok().as_ref() == Some(&own) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "unshare did not start"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let up = ns.run("ip", &["link", "set", "lo", "up"]);
        assert!(up.status.success(), "lo up: {up:?}");
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.holder.id()))
    }

    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        cmd
    }

    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("nsenter")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A `tandem up` with pod networking inside its own network namespace.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub ns: Netns,
    up: Option<Child>,
    kubectl: PathBuf,
}

impl Cluster {
    pub fn start() -> Option<Self> {
        Self::start_in(Netns::new())
    }

    pub fn start_in(ns: Netns) -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            assert!(!ci(), "this test needs root (namespaces); CI runs as root");
            eprintln!("skipping: needs root");
            return None;
        }
        for tool in ["nft", "ip", "unshare", "nsenter"] {
            if !have(tool) {
                assert!(
                    !ci(),
                    "{tool} missing: scripts/test.sh installs nftables/iproute2/util-linux"
                );
                eprintln!("skipping: no {tool}");
                return None;
            }
        }
        let Some(kubectl) = kubectl_binary() else {
            assert!(
                !ci(),
                "kubectl 1.37 missing: scripts/test.sh installs it into .venv"
            );
            eprintln!("skipping: no kubectl in .venv (run scripts/test.sh)");
            return None;
        };
        let mut cluster = Cluster {
            dir: tempfile::tempdir().expect("tempdir"),
            ns,
            up: None,
            kubectl,
        };
        cluster.up();
        Some(cluster)
    }

    pub fn kubectl_path(&self) -> &Path {
        &self.kubectl
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts (or restarts) `tandem up` and waits until it answers.
    pub fn up(&mut self) {
        let child = self
            .ns
            .command(env!("CARGO_BIN_EXE_tandem"))
            .arg("up")
            .arg("--data-dir")
            .arg(self.data())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tandem up");
        self.up = Some(child);
        let start = Instant::now();
        while !(self.data().join("kubeconfig").exists()
            && self.kubectl(&["get", "ns", "default"]).status.success())
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "tandem up did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops `tandem up` with SIGTERM (pods keep running).
    pub fn stop(&mut self) {
        if let Some(mut up) = self.up.take() {
            // nsenter forwards the signal to tandem.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(up.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = up.wait();
        }
    }

    pub fn down(&mut self) {
        let _ = self
            .ns
            .command(env!("CARGO_BIN_EXE_tandem"))
            .args(["down", "--data-dir"])
            .arg(self.data())
            .stdout(Stdio::null())
            .status();
        if let Some(mut up) = self.up.take() {
            let _ = up.kill();
            let _ = up.wait();
        }
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.ns
            .command(self.kubectl.to_str().expect("path"))
            .args(args)
            .env("KUBECONFIG", self.data().join("kubeconfig"))
            .env("KUBECACHEDIR", self.dir.path().join("cache"))
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl")
    }

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

    pub fn apply(&self, yaml: &str) {
        let file = self.dir.path().join(format!("m{}.yaml", yaml.len()));
        std::fs::write(&file, yaml).expect("write manifest");
        self.ok(&["apply", "-f", file.to_str().expect("path")]);
    }

    /// Waits until `check` holds for kubectl's output of `args`.
    pub fn wait_for(&self, args: &[&str], what: &str, check: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let out = self.kubectl(args);
            let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if check(&text) {
                return text;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{what}: kubectl {args:?} last printed {text:?} ({})",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs a one-shot pod with `script` and returns its log once it has finished.
    pub fn run_pod(&self, name: &str, script: &str) -> String {
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: Never\n  \
             terminationGracePeriodSeconds: 0\n  containers:\n  - name: main\n    image: debian:12\n    \
             command: [\"sh\", \"-c\", {script:?}]\n"
        );
        self.apply(&yaml);
        self.wait_for(
            &["get", "pod", name, "-o", "jsonpath={.status.phase}"],
            "one-shot pod finished",
            |p| p == "Succeeded" || p == "Failed",
        );
        self.ok(&["logs", name])
    }

    pub fn pod_ips(&self, selector: &str) -> Vec<(String, String)> {
        self.ok(&[
            "get",
            "pods",
            "-l",
            selector,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.podIP}{\"\\n\"}{end}",
        ])
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, ip)| (n.to_owned(), ip.to_owned()))
        .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.down();
    }
}
