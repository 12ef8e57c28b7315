//! `tandem up` through the `kube` crate like any client: list, watch, patch, and `kill -9`
//! of the server during a burst of creates loses no acknowledged object. Needs root.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};

fn start_up(data: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["up", "--data-dir"])
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        // Several clusters run at once here; only tests/network.rs needs pod networking.
        .args(["--pod-network", "none"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tandem up")
}

async fn client(data: &Path) -> kube::Client {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(data.join("kubeconfig"))
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
            "tandem up did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_of_creates_loses_no_acknowledged_object() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "this test needs root; CI runs as root"
        );
        eprintln!("skipping: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut up = start_up(&data, port);
    let client = client(&data).await;
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let mut writers = Vec::new();
    for w in 0..8 {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("burst-{w}-{i}");
                let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name},
                    "data": {"payload": "x".repeat(512)},
                }))
                .unwrap();
                match api.create(&PostParams::default(), &cm).await {
                    Ok(_) => {
                        acknowledged.lock().unwrap().insert(name);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Let the burst run, then kill the server without warning.
    while acknowledged.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    up.kill().unwrap(); // SIGKILL
    up.wait().unwrap();
    for writer in writers {
        let _ = writer.await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let mut up = start_up(&data, port);
    let client = crate::client(&data).await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let stored: BTreeSet<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|cm| cm.metadata.name)
        .collect();
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged objects lost: {lost:?}",
        lost.len()
    );
    assert!(acknowledged.len() >= 300);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = up.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_client_lists_watches_and_patches_a_running_pod() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Patch, PatchParams};
    use kube::runtime::watcher;

    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "this test needs root; CI runs as root"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut up = start_up(&data, port);
    let client = client(&data).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "watched"},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "initContainers": [{"name": "proxy", "image": "debian:12", "restartPolicy": "Always",
                                "command": ["sleep", "infinity"]}],
            "containers": [{"name": "app", "image": "debian:12", "command": ["sleep", "infinity"]}],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    // kube-runtime's watcher (watch-list or list+watch) sees the pod become Running.
    let config = watcher::Config::default().fields("metadata.name=watched");
    let mut stream = watcher(pods.clone(), config).boxed();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut phases = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline.into(), stream.next()).await {
        if let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = event {
            let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
            phases.push(phase.clone());
            if phase == "Running" {
                break;
            }
        }
    }
    assert_eq!(
        phases.last().map(String::as_str),
        Some("Running"),
        "{phases:?}"
    );
    let listed = pods.list(&ListParams::default().labels("")).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    let patch = serde_json::json!({"metadata": {"labels": {"tier": "front"}}});
    let patched = pods
        .patch(
            "watched",
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
        .unwrap();
    assert_eq!(
        patched
            .metadata
            .labels
            .unwrap()
            .get("tier")
            .map(String::as_str),
        Some("front")
    );
    let _ = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["down", "--data-dir"])
        .arg(&data)
        .status();
    let _ = up.wait();
}
