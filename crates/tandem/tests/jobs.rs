//! Jobs, namespaces and garbage collection against `tandem up`, with the real kubectl
//! (installed into `.venv` by `scripts/test.sh`). Needs root (pods run in namespaces).

use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;

use common::host::HostCluster as Cluster;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
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
    c.apply_ok(
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
    c.apply_ok(
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
    c.apply_ok(TEAM);
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
    c.apply_ok(
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
    c.apply_ok(TEAM);
    let left = c.ok(&["get", "configmaps,jobs,pods", "-n", "team", "-o", "name"]);
    assert_eq!(left.trim(), "");
}

#[test]
fn deleting_a_job_deletes_its_pods_in_the_background() {
    let Some(c) = Cluster::start() else { return };
    c.apply_ok(LONG_JOB);
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
    c.apply_ok(LONG_JOB);
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
