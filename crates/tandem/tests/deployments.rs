//! Deployments through the real kubectl against `tandem up`: replicaset and pod names,
//! `kubectl get deploy` columns, scaling, rolling updates, `rollout status` and
//! `rollout restart`, and the `sleep` sample. Needs root (pods run in namespaces) and
//! `.venv/bin/kubectl` (installed by `scripts/test.sh`).

use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::host::HostCluster as Cluster;

/// Kubernetes' alphabet for generated name parts.
const ALPHABET: &str = "bcdfghjklmnpqrstvwxz2456789";

fn from_alphabet(s: &str) -> bool {
    s.chars().all(|c| ALPHABET.contains(c))
}

/// Whether `name` is `<deploy>-<8..10 chars>-<5 chars>` of the alphabet.
fn is_deployment_pod_name(name: &str, deploy: &str) -> bool {
    let Some(rest) = name.strip_prefix(&format!("{deploy}-")) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('-').collect();
    matches!(parts.as_slice(), [hash, id]
        if (8..=10).contains(&hash.len()) && from_alphabet(hash)
            && id.len() == 5 && from_alphabet(id))
}

/// Pods of `selector` as (name, phase, terminating).
fn pods(c: &Cluster, selector: &str) -> Vec<(String, String, bool)> {
    let out = c.ok(&[
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.metadata.deletionTimestamp}{"\n"}{end}"#,
    ]);
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next().unwrap_or_default().to_owned();
            let phase = f.next().unwrap_or_default().to_owned();
            (name, phase, f.next().is_some())
        })
        .collect()
}

/// Replicaset names of `selector`.
fn replicasets(c: &Cluster, selector: &str) -> Vec<String> {
    c.ok(&[
        "get",
        "rs",
        "-l",
        selector,
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ])
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

fn until(what: &str, timeout: Duration, mut done: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match done() {
            Ok(()) => return,
            Err(last) => assert!(
                start.elapsed() < timeout,
                "{what}: not reached in {timeout:?}; last: {last}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `kubectl get deploy NAME` row without AGE.
fn deploy_row(c: &Cluster, name: &str) -> Vec<String> {
    let out = c.ok(&["get", "deploy", name]);
    let mut lines = out.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{out}"
    );
    let row: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    row[..row.len().saturating_sub(1)].to_vec()
}

fn rollout_status(c: &Cluster, name: &str) {
    let out = c.ok(&[
        "rollout",
        "status",
        &format!("deploy/{name}"),
        "--timeout=60s",
    ]);
    assert!(
        out.contains(&format!("deployment \"{name}\" successfully rolled out")),
        "{out}"
    );
}

/// Waits until the live (not terminating) pods of `selector` are `count`, all Running and
/// all from one replicaset, and every other pod is gone; returns their names.
fn settled(c: &Cluster, selector: &str, count: usize) -> Vec<String> {
    let mut names = Vec::new();
    until(
        &format!("{count} running pods of {selector}"),
        Duration::from_secs(40),
        || {
            let all = pods(c, selector);
            let running = all
                .iter()
                .filter(|(_, phase, gone)| phase == "Running" && !gone)
                .count();
            if all.len() == count && running == count {
                names = all.into_iter().map(|(n, _, _)| n).collect();
                Ok(())
            } else {
                Err(format!("{all:?}"))
            }
        },
    );
    names
}

fn rs_of(pod: &str) -> &str {
    pod.rsplit_once('-').map_or(pod, |(rs, _)| rs)
}

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 0
      initContainers:
      - name: proxy
        image: debian:12
        restartPolicy: Always
        command: [sleep, infinity]
      containers:
      - name: app
        image: debian:12
        command: [sleep, infinity]
"#;

#[test]
fn deployment_pods_are_named_scaled_and_rolled_out() {
    let Some(c) = Cluster::start() else { return };
    let out = c.apply(WEB);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rollout_status(&c, "web");
    let first = settled(&c, "app=web", 3);
    for name in &first {
        assert!(is_deployment_pod_name(name, "web"), "pod name {name}");
    }
    let rs = replicasets(&c, "app=web");
    assert_eq!(rs.len(), 1, "{rs:?}");
    assert!(
        first.iter().all(|p| rs_of(p) == rs[0]),
        "{first:?} vs {rs:?}"
    );
    // The replicaset carries the hash label its pods have, and the revision.
    let hash = c.ok(&[
        "get",
        "rs",
        &rs[0],
        "-o",
        "jsonpath={.metadata.labels.pod-template-hash}",
    ]);
    assert_eq!(rs[0], format!("web-{hash}"));
    let revision = c.ok(&[
        "get",
        "rs",
        &rs[0],
        "-o",
        r"jsonpath={.metadata.annotations.deployment\.kubernetes\.io/revision}",
    ]);
    assert_eq!(revision, "1");
    let owner = c.ok(&["get", "rs", &rs[0], "-o", "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}/{.metadata.ownerReferences[0].controller}"]);
    assert_eq!(owner, "Deployment/web/true");
    until("READY 3/3", Duration::from_secs(10), || {
        let row = deploy_row(&c, "web");
        (row == ["web", "3/3", "3", "3"])
            .then_some(())
            .ok_or(format!("{row:?}"))
    });
    let events = c.ok(&[
        "get",
        "events",
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ]);
    assert!(
        events.contains(&format!(
            "ScalingReplicaSet: Scaled up replica set {} from 0 to 3",
            rs[0]
        )),
        "{events}"
    );
    assert!(
        events.contains(&format!("SuccessfulCreate: Created pod: {}", first[0])),
        "{events}"
    );

    c.ok(&["scale", "deploy/web", "--replicas=1"]);
    let one = settled(&c, "app=web", 1);
    assert!(
        first.contains(&one[0]),
        "scaling down keeps an existing pod"
    );
    until("READY 1/1", Duration::from_secs(10), || {
        let row = deploy_row(&c, "web");
        (row == ["web", "1/1", "1", "1"])
            .then_some(())
            .ok_or(format!("{row:?}"))
    });
    c.ok(&["scale", "deploy/web", "--replicas=3"]);
    rollout_status(&c, "web");
    settled(&c, "app=web", 3);
    until("READY 3/3 again", Duration::from_secs(10), || {
        let row = deploy_row(&c, "web");
        (row == ["web", "3/3", "3", "3"])
            .then_some(())
            .ok_or(format!("{row:?}"))
    });

    c.ok(&["set", "image", "deploy/web", "app=debian:bookworm"]);
    rollout_status(&c, "web");
    let rolled = settled(&c, "app=web", 3);
    let all_rs = replicasets(&c, "app=web");
    assert_eq!(all_rs.len(), 2, "{all_rs:?}");
    let new_rs = rs_of(&rolled[0]).to_owned();
    assert_ne!(new_rs, rs[0]);
    assert!(
        rolled
            .iter()
            .all(|p| rs_of(p) == new_rs && is_deployment_pod_name(p, "web")),
        "{rolled:?}"
    );
    let old_size = c.ok(&[
        "get",
        "rs",
        &rs[0],
        "-o",
        "jsonpath={.spec.replicas}/{.status.replicas}",
    ]);
    assert_eq!(old_size, "0/0");
    let deploy_revision = c.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        r"jsonpath={.metadata.annotations.deployment\.kubernetes\.io/revision}",
    ]);
    assert_eq!(deploy_revision, "2");
    let conditions = c.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        r#"jsonpath={range .status.conditions[*]}{.type}={.status}/{.reason} {end}"#,
    ]);
    assert!(
        conditions.contains("Available=True/MinimumReplicasAvailable"),
        "{conditions}"
    );
    assert!(
        conditions.contains("Progressing=True/NewReplicaSetAvailable"),
        "{conditions}"
    );

    // Undo goes back to the first replicaset (no third one), as revision 3.
    c.ok(&["rollout", "undo", "deploy/web"]);
    rollout_status(&c, "web");
    let undone = settled(&c, "app=web", 3);
    assert!(undone.iter().all(|p| rs_of(p) == rs[0]), "{undone:?}");
    assert_eq!(replicasets(&c, "app=web").len(), 2);
    let revision = c.ok(&[
        "get",
        "rs",
        &rs[0],
        "-o",
        r"jsonpath={.metadata.annotations.deployment\.kubernetes\.io/revision}",
    ]);
    assert_eq!(revision, "3");
}

#[test]
fn rollout_restart_replaces_every_pod() {
    let Some(c) = Cluster::start() else { return };
    let manifest = WEB.replace("replicas: 3", "replicas: 2");
    let out = c.apply(&manifest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rollout_status(&c, "web");
    let before = settled(&c, "app=web", 2);
    let out = c.ok(&["rollout", "restart", "deploy/web"]);
    assert!(out.contains("deployment.apps/web restarted"), "{out}");
    rollout_status(&c, "web");
    let after = settled(&c, "app=web", 2);
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "{before:?} -> {after:?}"
    );
    assert_ne!(rs_of(&after[0]), rs_of(&before[0]));
    let restarted = c.ok(&[
        "get",
        "rs",
        rs_of(&after[0]),
        "-o",
        r"jsonpath={.spec.template.metadata.annotations.kubectl\.kubernetes\.io/restartedAt}",
    ]);
    assert!(
        !restarted.is_empty(),
        "the new replicaset has the restart annotation"
    );
}

#[test]
fn recreate_stops_old_pods_before_starting_new_ones() {
    let Some(c) = Cluster::start() else { return };
    let manifest = WEB.replace("replicas: 3", "replicas: 2\n  strategy: {type: Recreate}");
    let out = c.apply(&manifest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rollout_status(&c, "web");
    let before = settled(&c, "app=web", 2);
    c.ok(&["set", "image", "deploy/web", "app=debian:bookworm"]);
    // Never old and new pods at once.
    let start = Instant::now();
    loop {
        let now = pods(&c, "app=web");
        let rss: std::collections::BTreeSet<&str> = now.iter().map(|(n, _, _)| rs_of(n)).collect();
        assert!(rss.len() <= 1, "old and new pods together: {now:?}");
        if now.len() == 2
            && now
                .iter()
                .all(|(n, phase, gone)| !before.contains(n) && phase == "Running" && !gone)
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "recreate did not finish: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    rollout_status(&c, "web");
}

#[test]
fn sleep_sample_runs_one_pod() {
    let Some(c) = Cluster::start() else { return };
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sleep.yaml");
    let out = c.ok(&["apply", "-f", sample.to_str().unwrap()]);
    for created in [
        "serviceaccount/sleep created",
        "service/sleep created",
        "deployment.apps/sleep created",
    ] {
        assert!(out.contains(created), "{out}");
    }
    let names = settled(&c, "app=sleep", 1);
    assert!(is_deployment_pod_name(&names[0], "sleep"), "{names:?}");
    let sa = c.ok(&[
        "get",
        "pod",
        &names[0],
        "-o",
        "jsonpath={.spec.serviceAccountName}",
    ]);
    assert_eq!(sa, "sleep");
    rollout_status(&c, "sleep");
}

#[test]
fn deleting_a_deployment_with_cascade_orphan_keeps_its_pods() {
    let Some(c) = Cluster::start() else { return };
    let out = c.apply(WEB);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = settled(&c, "app=web", 3);
    c.ok(&["delete", "deployment", "web", "--cascade=orphan"]);
    until("the deployment is gone", Duration::from_secs(20), || {
        let out = c.kubectl(&["get", "deployment", "web"]);
        if out.status.success() {
            Err("still there".into())
        } else {
            Ok(())
        }
    });
    // The replicaset lost its owner but stays, and so do its three running pods.
    std::thread::sleep(Duration::from_secs(2));
    let rs = replicasets(&c, "app=web");
    assert_eq!(rs.len(), 1, "{rs:?}");
    let owners = c.ok(&[
        "get",
        "rs",
        &rs[0],
        "-o",
        "jsonpath={.metadata.ownerReferences}",
    ]);
    assert_eq!(owners, "", "the replicaset is orphaned");
    let mut after = settled(&c, "app=web", 3);
    let mut before = before;
    before.sort();
    after.sort();
    assert_eq!(before, after, "the same pods keep running");
}
