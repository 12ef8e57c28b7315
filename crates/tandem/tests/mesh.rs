//! The blog post's session against `tandem up`, through the real kubectl: install the mesh
//! with the two `--set` flags, label the namespace, and watch injected pods come up with
//! `istio-init` and the `istio-proxy` native sidecar; an init container reaches a Service
//! through the proxy, which logs the request; a pod that exits completes. With native
//! sidecars off (the legacy layout) the same pods show the woes: init containers run
//! outside the mesh and a pod whose app exits never completes. Needs root.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Cluster, example};

/// The blog's install command, unchanged, run by tandem linked as `./istioctl`.
fn install(c: &Cluster, native: bool) {
    let dir = c.data().with_file_name("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let istioctl = dir.join("istioctl");
    if !istioctl.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tandem"), &istioctl).unwrap();
    }
    let out =
        c.ns.command("./istioctl")
            .current_dir(&dir)
            .args(["install", "--set"])
            .arg(format!("values.pilot.env.ENABLE_NATIVE_SIDECARS={native}"))
            .args(["-y", "--set", "meshConfig.accessLogFile=/dev/stdout"])
            .env("KUBECONFIG", c.data().join("kubeconfig"))
            .stdin(Stdio::null())
            .output()
            .expect("./istioctl install");
    assert!(out.status.success(), "mesh install: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Installation complete"),
        "{out:?}"
    );
    c.ok(&["label", "namespace", "default", "istio-injection=enabled"]);
}

/// The README's replay of the blog uses these files; the tests apply the same ones.
const CHECK_TRAFFIC: &str = include_str!("../../../examples/check-traffic.yaml");
const EXITING: &str = include_str!("../../../examples/exiting-mesh-pod.yaml");

fn columns(c: &Cluster, pod: &str) -> String {
    c.ok(&[
        "get",
        "pod",
        pod,
        "--no-headers",
        "-o",
        "custom-columns=INIT:.spec.initContainers[*].name,CONTAINERS:.spec.containers[*].name",
    ])
    .split_whitespace()
    .collect::<Vec<_>>()
    .join(" ")
}

fn ready_column(c: &Cluster, pod: &str) -> String {
    c.ok(&["get", "pod", pod, "--no-headers"])
        .split_whitespace()
        .skip(1)
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Rows `kubectl get pods -w` prints for `pod` while `during` runs (and `linger` after).
fn watch_rows(c: &Cluster, pod: &str, during: impl FnOnce(), until: &str) -> Vec<String> {
    let out = c.dir.path().join("watch.txt");
    let mut watch =
        c.ns.command(c.kubectl_path().to_str().expect("path"))
            .args(["get", "pods", "-w"])
            .env("KUBECONFIG", c.data().join("kubeconfig"))
            .env("KUBECACHEDIR", c.dir.path().join("cache"))
            .stdout(std::fs::File::create(&out).expect("watch file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl get pods -w");
    std::thread::sleep(Duration::from_millis(500));
    during();
    let start = Instant::now();
    let rows = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let rows: Vec<String> = text
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(pod))
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        if rows.iter().any(|r| r == until) || start.elapsed() > Duration::from_secs(20) {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = watch.kill();
    let _ = watch.wait();
    rows
}

#[test]
fn the_blog_session_with_native_sidecars() {
    let Some(c) = Cluster::start() else { return };
    install(&c, true);
    let cm = c.ok(&["get", "cm", "istio", "-n", "istio-system", "-o", "yaml"]);
    assert!(cm.contains("accessLogFile: /dev/stdout"), "{cm}");

    c.ok(&[
        "apply",
        "-f",
        &example("sleep.yaml"),
        "-f",
        &example("httpbin.yaml"),
    ]);
    let sleep = c.wait_for(
        &[
            "get",
            "pods",
            "-l",
            "app=sleep",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
        "sleep pod",
        |t| !t.is_empty(),
    );
    c.wait_for(
        &["get", "pod", &sleep, "--no-headers"],
        "sleep 2/2 Running",
        |t| t.contains(" 2/2 ") && t.contains("Running"),
    );
    assert_eq!(columns(&c, &sleep), "istio-init,istio-proxy sleep");
    assert_eq!(ready_column(&c, &sleep), "2/2 Running");
    c.wait_for(
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=httpbin",
            "-o",
            "jsonpath={.items[*].endpoints[?(@.conditions.ready==true)].addresses[0]}",
        ],
        "two ready httpbin endpoints",
        |t| t.split_whitespace().count() == 2,
    );

    // An init container reaches the network: the proxy is already up, and logs the call.
    c.apply(CHECK_TRAFFIC);
    c.wait_for(
        &["get", "pod", "check", "--no-headers"],
        "check 2/2 Running",
        |t| t.contains(" 2/2 ") && t.contains("Running"),
    );
    assert_eq!(
        columns(&c, "check"),
        "istio-init,istio-proxy,check-traffic sleep"
    );
    let reply = c.ok(&["logs", "check", "-c", "check-traffic"]);
    assert!(
        reply.contains("\"url\": \"http://httpbin:8000/get\""),
        "{reply}"
    );
    // The proxy writes its access log within a second (Envoy flushes once a second).
    let line = c.wait_for(
        &["logs", "check", "-c", "istio-proxy"],
        "an access log line",
        |t| t.lines().any(|l| l.contains("\"GET /get HTTP/1.1\"")),
    );
    let line = line
        .lines()
        .rev()
        .find(|l| l.starts_with('['))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains("\"GET /get HTTP/1.1\" 200 - via_upstream - \"-\" 0 ")
            && line.contains("\"curl/")
            && line.contains("\"httpbin:8000\"")
            && line.contains("outbound|8000||httpbin.default.svc.cluster.local"),
        "last access log line: {line}"
    );

    // A pod that exits completes: the proxy is stopped after the app.
    let rows = watch_rows(&c, "exiting", || c.apply(EXITING), "0/2 Completed");
    let has = |want: &str| rows.iter().any(|r| r == want);
    assert!(rows.iter().any(|r| r.contains("Init:")), "{rows:?}");
    for want in ["2/2 Running", "1/2 Completed", "0/2 Completed"] {
        assert!(has(want), "no {want:?} row: {rows:?}");
    }
    assert_eq!(
        c.ok(&["get", "pod", "exiting", "-o", "jsonpath={.status.phase}"]),
        "Succeeded"
    );
}

#[test]
fn without_native_sidecars_the_woes_come_back() {
    let Some(c) = Cluster::start() else { return };
    install(&c, false);
    c.ok(&["apply", "-f", &example("httpbin.yaml")]);
    c.wait_for(
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=httpbin",
            "-o",
            "jsonpath={.items[*].endpoints[?(@.conditions.ready==true)].addresses[0]}",
        ],
        "two ready httpbin endpoints",
        |t| t.split_whitespace().count() == 2,
    );
    // Legacy layout: the proxy is the last regular container.
    c.apply(CHECK_TRAFFIC);
    c.wait_for(
        &[
            "get",
            "pod",
            "check",
            "-o",
            "jsonpath={.spec.containers[*].name}",
        ],
        "legacy layout",
        |t| t == "sleep istio-proxy",
    );
    // Istio's legacy order: the user's init containers run before istio-init, outside
    // the mesh: the request works but bypasses the proxy (nothing is logged or policed).
    assert_eq!(
        columns(&c, "check"),
        "check-traffic,istio-init sleep,istio-proxy"
    );
    c.wait_for(
        &["get", "pod", "check", "--no-headers"],
        "check 2/2 Running",
        |t| t.contains(" 2/2 ") && t.contains("Running"),
    );
    let reply = c.ok(&["logs", "check", "-c", "check-traffic"]);
    assert!(
        reply.contains("\"url\": \"http://httpbin:8000/get\""),
        "{reply}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let proxy_log = c.ok(&["logs", "check", "-c", "istio-proxy"]);
    assert!(!proxy_log.contains("GET /get"), "{proxy_log}");

    // The app exits, the proxy does not: the pod never completes.
    c.apply(EXITING);
    c.wait_for(
        &[
            "get",
            "pod",
            "exiting",
            "-o",
            "jsonpath={.status.containerStatuses[?(@.name==\"sleep\")].state.terminated.exitCode}",
        ],
        "app exited",
        |t| t == "0",
    );
    std::thread::sleep(Duration::from_secs(3));
    let row = ready_column(&c, "exiting");
    assert_eq!(row, "1/2 NotReady", "the proxy keeps the pod alive");
    assert_eq!(
        c.ok(&["get", "pod", "exiting", "-o", "jsonpath={.status.phase}"]),
        "Running"
    );
}
