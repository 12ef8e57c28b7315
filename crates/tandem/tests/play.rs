//! `tandem play` end to end: real pods, real processes, real namespaces (needs root).
//!
//! Each test writes a manifest, runs the built `tandem play` binary on it and checks what a
//! user sees: the printed rows, the exit status, the final pod status (`--status-file`) and
//! what the containers themselves recorded in a shared hostPath directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Root tests fail under CI when they cannot run; elsewhere they say so and pass.
fn root_or_skip() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("this test needs root (namespaces, mounts); CI runs as root");
    }
    eprintln!("skipping: needs root");
    false
}

struct Play {
    dir: tempfile::TempDir,
}

impl Play {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A directory the pods mount as hostPath `/rec` to record what happened.
    fn rec(&self) -> PathBuf {
        let rec = self.dir.path().join("rec");
        std::fs::create_dir_all(&rec).unwrap();
        rec
    }

    fn manifest(&self, yaml: &str) -> PathBuf {
        let path = self.dir.path().join("pod.yaml");
        let yaml = yaml.replace("REC", &self.rec().display().to_string());
        std::fs::write(&path, yaml).unwrap();
        path
    }

    fn status_file(&self) -> PathBuf {
        self.dir.path().join("final.json")
    }

    fn command(&self, manifest: &Path, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
        cmd.arg("play")
            .arg(manifest)
            .arg("--status-file")
            .arg(self.status_file())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn run(&self, yaml: &str, extra: &[&str]) -> Output {
        let manifest = self.manifest(yaml);
        self.command(&manifest, extra)
            .output()
            .expect("run tandem play")
    }

    fn spawn(&self, yaml: &str, extra: &[&str]) -> Child {
        let manifest = self.manifest(yaml);
        self.command(&manifest, extra)
            .spawn()
            .expect("start tandem play")
    }

    /// The final pod (first item of the status file).
    fn final_pod(&self) -> Value {
        let text = std::fs::read_to_string(self.status_file()).expect("status file");
        let list: Value = serde_json::from_str(&text).unwrap();
        list["items"][0].clone()
    }

    /// Reads `/rec/<name>` as written by the pod (a float timestamp per line).
    fn times(&self, name: &str) -> Vec<f64> {
        let text = std::fs::read_to_string(self.rec().join(name)).unwrap_or_else(|e| {
            let seen: Vec<_> = std::fs::read_dir(self.rec())
                .map(|d| d.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            panic!("rec/{name}: {e}; rec holds {seen:?}")
        });
        text.lines().map(|l| l.trim().parse().unwrap()).collect()
    }

    fn wait_for_file(&self, name: &str, timeout: Duration) {
        let path = self.rec().join(name);
        let start = Instant::now();
        while !path.exists() {
            assert!(start.elapsed() < timeout, "rec/{name} never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The printed rows as (READY, STATUS, RESTARTS) triples.
fn rows(out: &str) -> Vec<(String, String, String)> {
    out.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() >= 5).then(|| {
                // RESTARTS may read "1 (3s ago)": take the columns between STATUS and AGE.
                (
                    cols[1].to_string(),
                    cols[2].to_string(),
                    cols[3..cols.len() - 1].join(" "),
                )
            })
        })
        .collect()
}

fn container_status<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod["status"][list]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {list} entry for {name} in {pod:#}"))
}

const STAMP: &str = "date +%s.%N";

#[test]
fn blog_exiting_pod_completes_with_its_sidecar_running() {
    if !root_or_skip() {
        return;
    }
    let play = Play::new();
    let out = play.run(
        include_str!("../../../examples/exiting-pod.yaml"),
        &["--timeout", "60s"],
    );
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "exit {:?}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = rows(&text);
    let statuses: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert!(statuses.contains(&"Running"), "{text}");
    assert_eq!(
        rows.last().unwrap(),
        &("0/2".into(), "Completed".into(), "0".into()),
        "{text}"
    );
    let pod = play.final_pod();
    assert_eq!(pod["status"]["phase"], "Succeeded");
    let app = container_status(&pod, "containerStatuses", "sleep");
    assert_eq!(app["state"]["terminated"]["exitCode"], 0);
    assert_eq!(app["state"]["terminated"]["reason"], "Completed");
    // The sidecar was stopped by the kubelet; its exit code does not matter to the phase.
    let proxy = container_status(&pod, "initContainerStatuses", "proxy");
    assert!(proxy["state"]["terminated"].is_object(), "{proxy:#}");
}

#[test]
fn startup_order_two_sidecars_with_an_init_container_between() {
    if !root_or_skip() {
        return;
    }
    let play = Play::new();
    let yaml = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: order}}
spec:
  restartPolicy: Never
  volumes: [{{name: rec, hostPath: {{path: REC}}}}]
  initContainers:
  - name: a
    image: debian:12
    restartPolicy: Always
    command: [sh, -c, "{STAMP} > /rec/a; sleep 0.3; touch /rec/a.ok; exec sleep infinity"]
    startupProbe: {{exec: {{command: [test, -f, /rec/a.ok]}}, periodSeconds: 1}}
    volumeMounts: [{{name: rec, mountPath: /rec}}]
  - name: setup
    image: debian:12
    command: [sh, -c, "{STAMP} > /rec/setup.start; sleep 0.5; {STAMP} > /rec/setup.end"]
    volumeMounts: [{{name: rec, mountPath: /rec}}]
  - name: b
    image: debian:12
    restartPolicy: Always
    command: [sh, -c, "{STAMP} > /rec/b.tmp; mv /rec/b.tmp /rec/b; exec sleep infinity"]
    # Without a probe b counts as started once its process runs, which may be before
    # its first command wrote anything: the probe makes "started" mean "stamped".
    startupProbe: {{exec: {{command: [test, -f, /rec/b]}}, periodSeconds: 1}}
    volumeMounts: [{{name: rec, mountPath: /rec}}]
  containers:
  - name: main
    image: debian:12
    command: [sh, -c, "{STAMP} > /rec/main"]
    volumeMounts: [{{name: rec, mountPath: /rec}}]
"#
    );
    let out = play.run(&yaml, &["--timeout", "60s"]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = play.times("a")[0];
    let setup_start = play.times("setup.start")[0];
    let setup_end = play.times("setup.end")[0];
    let b = play.times("b")[0];
    let main = play.times("main")[0];
    // setup starts only once a passed its startup probe (a.ok is written 0.3 s after a).
    assert!(setup_start >= a + 0.3, "a={a} setup={setup_start}");
    assert!(b >= setup_end, "setup ended {setup_end}, b started {b}");
    assert!(main >= b, "b={b} main={main}");
    let statuses: Vec<String> = rows(&text).into_iter().map(|r| r.1).collect();
    assert!(statuses.iter().any(|s| s.starts_with("Init:")), "{text}");
}

#[test]
fn startup_probe_gates_the_main_container() {
    if !root_or_skip() {
        return;
    }
    let play = Play::new();
    let yaml = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: gated}}
spec:
  restartPolicy: Never
  volumes: [{{name: rec, hostPath: {{path: REC}}}}]
  initContainers:
  - name: proxy
    image: debian:12
    restartPolicy: Always
    command: [sh, -c, "sleep 2; {STAMP} > /rec/ready; exec sleep infinity"]
    startupProbe: {{exec: {{command: [test, -f, /rec/ready]}}, periodSeconds: 1, failureThreshold: 30}}
    volumeMounts: [{{name: rec, mountPath: /rec}}]
  containers:
  - name: app
    image: debian:12
    command: [sh, -c, "{STAMP} > /rec/app"]
    volumeMounts: [{{name: rec, mountPath: /rec}}]
"#
    );
    let out = play.run(&yaml, &["--timeout", "60s"]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ready = play.times("ready")[0];
    let app = play.times("app")[0];
    assert!(
        app >= ready,
        "app started at {app}, before the probe could pass at {ready}"
    );
    assert!(
        app - ready < 1.5,
        "app should start within a probe period of readiness"
    );
    let first = &rows(&text)[1];
    assert_eq!(
        (first.0.as_str(), first.1.as_str()),
        ("0/2", "Init:0/1"),
        "{text}"
    );
}

#[test]
fn delete_stops_main_then_later_sidecar_then_earlier_one() {
    if !root_or_skip() {
        return;
    }
    let play = Play::new();
    let trap = |name: &str| {
        format!(
            "trap '{STAMP} > /rec/{name}.term; sleep 0.5; {STAMP} > /rec/{name}.exit; exit 0' TERM; touch /rec/{name}.up; while true; do sleep 0.05; done"
        )
    };
    let yaml = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: shutdown}}
spec:
  terminationGracePeriodSeconds: 30
  volumes: [{{name: rec, hostPath: {{path: REC}}}}]
  initContainers:
  - {{name: a, image: debian:12, restartPolicy: Always, command: [sh, -c, "{a}"], volumeMounts: [{{name: rec, mountPath: /rec}}]}}
  - {{name: b, image: debian:12, restartPolicy: Always, command: [sh, -c, "{b}"], volumeMounts: [{{name: rec, mountPath: /rec}}]}}
  containers:
  - {{name: main, image: debian:12, command: [sh, -c, "{main}"], volumeMounts: [{{name: rec, mountPath: /rec}}]}}
"#,
        a = trap("a"),
        b = trap("b"),
        main = trap("main")
    );
    let child = play.spawn(&yaml, &["--timeout", "60s"]);
    play.wait_for_file("main.up", Duration::from_secs(20));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(143),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = |n: &str| play.times(n)[0];
    assert!(
        t("b.term") >= t("main.exit"),
        "b got TERM before main exited"
    );
    assert!(t("a.term") >= t("b.exit"), "a got TERM before b exited");
    let pod = play.final_pod();
    assert_eq!(pod["status"]["phase"], "Succeeded", "{pod:#}");
    let statuses: Vec<String> = rows(&text).into_iter().map(|r| r.1).collect();
    assert!(statuses.iter().any(|s| s == "Terminating"), "{text}");
}

#[test]
fn grace_expiry_kills_with_sigkill_and_the_pod_fails() {
    if !root_or_skip() {
        return;
    }
    let play = Play::new();
    let yaml = r#"
apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  terminationGracePeriodSeconds: 2
  volumes: [{name: rec, hostPath: {path: REC}}]
  initContainers:
  - {name: proxy, image: debian:12, restartPolicy: Always, command: [sh, -c, "trap '' TERM; while true; do sleep 0.05; done"]}
  containers:
  - {name: app, image: debian:12, command: [sh, -c, "trap '' TERM; touch /rec/up; while true; do sleep 0.05; done"], volumeMounts: [{name: rec, mountPath: /rec}]}
"#;
    let child = play.spawn(yaml, &["--timeout", "60s"]);
    play.wait_for_file("up", Duration::from_secs(20));
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(130));
    // main: SIGKILL at 2 s; proxy: its turn never came, TERM at the deadline + 2 s more.
    assert!(took >= Duration::from_secs(2), "stopped after {took:?}");
    assert!(took < Duration::from_secs(8), "stopped after {took:?}");
    let pod = play.final_pod();
    assert_eq!(pod["status"]["phase"], "Failed", "{pod:#}");
    let app = container_status(&pod, "containerStatuses", "app");
    assert_eq!(app["state"]["terminated"]["exitCode"], 137, "{app:#}");
    let proxy = container_status(&pod, "initContainerStatuses", "proxy");
    assert_eq!(proxy["state"]["terminated"]["exitCode"], 137, "{proxy:#}");
}

#[test]
fn crashing_sidecar_restarts_and_leaves_the_main_container_alone() {
    if !root_or_skip() {
        return;
    }
    let play = Play::new();
    let yaml = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: crashy}}
spec:
  restartPolicy: Never
  volumes: [{{name: rec, hostPath: {{path: REC}}}}]
  initContainers:
  - name: proxy
    image: debian:12
    restartPolicy: Always
    command: [sh, -c, "{STAMP} >> /rec/proxy; sleep 0.3; exit 1"]
    volumeMounts: [{{name: rec, mountPath: /rec}}]
  containers:
  - name: app
    image: debian:12
    command: [sh, -c, "{STAMP} >> /rec/app; sleep 4"]
    volumeMounts: [{{name: rec, mountPath: /rec}}]
"#
    );
    // Short backoff so the test sees several restarts within the app's 4 s.
    let out = play.run(
        &yaml,
        &[
            "--timeout",
            "60s",
            "--backoff-initial",
            "200ms",
            "--backoff-max",
            "1s",
        ],
    );
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let proxy_runs = play.times("proxy").len();
    assert!(proxy_runs >= 3, "proxy ran {proxy_runs} times\n{text}");
    assert_eq!(play.times("app").len(), 1, "the app must run exactly once");
    let pod = play.final_pod();
    assert_eq!(
        pod["status"]["phase"], "Succeeded",
        "sidecar exit codes are ignored"
    );
    let proxy = container_status(&pod, "initContainerStatuses", "proxy");
    assert!(proxy["restartCount"].as_u64().unwrap() >= 2, "{proxy:#}");
    let app = container_status(&pod, "containerStatuses", "app");
    assert_eq!(app["restartCount"], 0);
}

#[test]
fn sidecar_readiness_counts_in_ready() {
    if !root_or_skip() {
        return;
    }
    let play = Play::new();
    let yaml = r#"
apiVersion: v1
kind: Pod
metadata: {name: readiness}
spec:
  restartPolicy: Never
  volumes: [{name: rec, hostPath: {path: REC}}]
  initContainers:
  - name: proxy
    image: debian:12
    restartPolicy: Always
    command: [sh, -c, "sleep 1.5; touch /rec/ready; exec sleep infinity"]
    readinessProbe: {exec: {command: [test, -f, /rec/ready]}, periodSeconds: 1}
    volumeMounts: [{name: rec, mountPath: /rec}]
  containers:
  - {name: app, image: debian:12, command: [sleep, "4"]}
"#;
    let out = play.run(yaml, &["--timeout", "60s"]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = rows(&text);
    // Readiness does not gate the app: it runs while the proxy is not ready yet...
    assert!(
        rows.iter().any(|r| r.0 == "1/2" && r.1 == "Running"),
        "{text}"
    );
    // ...and once the proxy's probe passes, both count.
    assert!(
        rows.iter().any(|r| r.0 == "2/2" && r.1 == "Running"),
        "{text}"
    );
}

#[test]
fn invalid_manifests_exit_2_before_anything_runs() {
    let play = Play::new();
    let out = play.run(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  containers:\n  - name: app\n    image: x\n    restartPolicy: Always\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers"
        ),
        "{err}"
    );
    let out = play.run("apiVersion: v1\nkind: Pod\nmetadata: {name: bad\n", &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pod.yaml:"),
        "errors name the file and position: {err}"
    );
}

#[test]
fn timeout_deletes_the_pods_and_leaves_nothing_behind() {
    if !root_or_skip() {
        return;
    }
    let play = Play::new();
    let started = Instant::now();
    let child = play.spawn(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: forever}\nspec:\n  initContainers:\n  - {name: proxy, image: debian:12, restartPolicy: Always, command: [sleep, infinity]}\n  containers:\n  - {name: app, image: debian:12, command: [sleep, infinity]}\n",
        &["--timeout", "1s"],
    );
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out after 1s"));
    let rows = rows(&stdout(&out));
    assert!(rows.iter().any(|r| r.1 == "Terminating"), "{rows:?}");
    // No supervisor, container or sandbox of this run is left, nor its state directory.
    let state = format!("/run/tandem/play-{pid}");
    assert!(!Path::new(&state).exists(), "{state} left behind");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(!cmdline.contains(&state), "left running: {cmdline}");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&state), "mount left behind");
}
