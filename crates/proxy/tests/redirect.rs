//! Root only: real iptables `REDIRECT` in a private network namespace, so the sidecar reads
//! the original destination with `SO_ORIGINAL_DST` exactly as it does in a pod. Without
//! root or iptables the test is skipped, except under `CI=true`, where it fails.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use proxy::accesslog::{Encoding, Sink};
use proxy::config::{Ports, SidecarConfig};
use proxy::metrics::Workload;
use proxy::orig_dst::SoOriginalDst;

fn prerequisites() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not running as root".into());
    }
    for (tool, flag) in [("iptables", "--version"), ("ip", "-V")] {
        let found = Command::new(tool)
            .arg(flag)
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!("{tool} is not installed"));
        }
    }
    Ok(())
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a thread of its own inside a new network namespace (threads own their
/// namespace, so the rest of the test process is untouched).
fn in_netns<F: FnOnce() + Send + 'static>(f: F) {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        // Children started from this thread inherit its namespace.
        run("ip", &["link", "set", "lo", "up"]);
        // An interface with a default route, so the VIP is routable before NAT.
        run(
            "ip",
            &["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
        );
        run("ip", &["addr", "add", "10.0.0.2/24", "dev", "v0"]);
        run("ip", &["link", "set", "v0", "up"]);
        run("ip", &["link", "set", "v1", "up"]);
        run("ip", &["route", "add", "default", "dev", "v0"]);
        f();
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

#[test]
fn redirected_connections_are_routed_by_their_original_destination() {
    if let Err(why) = prerequisites() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("prerequisite missing under CI=true: {why}");
        }
        eprintln!("skipping: {why}");
        return;
    }
    in_netns(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let log = dir.path().join("access.log");
            let up = http_upstream("127.0.0.2:0", "httpbin").await;
            let discovery = FakeDiscovery::start().await;
            let mut ports = Ports::ephemeral();
            ports.outbound = "0.0.0.0:0".parse().unwrap();
            let cfg = SidecarConfig {
                pod_name: "sleep-1".into(),
                namespace: "default".into(),
                pod_ip: Some("10.0.0.2".parse().unwrap()),
                domain: "cluster.local".into(),
                discovery_address: discovery.addr.to_string(),
                termination_drain: Duration::from_secs(1),
                exit_on_zero_active: false,
                minimum_drain: Duration::from_secs(1),
                hold_application: false,
                access_log: Some(Sink::File(log.clone())),
                access_log_encoding: Encoding::Text,
                registry_only: false,
                detect_timeout: None,
                workload: Workload::default(),
                probers: HashMap::new(),
                app_metrics: None,
                ports,
                concurrency: 2,
            };
            let sidecar = proxy::sidecar::start(cfg, Arc::new(SoOriginalDst))
                .await
                .unwrap();
            let port = sidecar.addresses.outbound.port().to_string();
            run(
                "iptables",
                &[
                    "-t",
                    "nat",
                    "-A",
                    "OUTPUT",
                    "-p",
                    "tcp",
                    "-d",
                    "10.96.0.0/16",
                    "-j",
                    "REDIRECT",
                    "--to-ports",
                    &port,
                ],
            );
            discovery.publish(vec![service(
                "default",
                "httpbin",
                "10.96.0.10",
                "http",
                8000,
                &[up.addr],
            )]);
            let health = sidecar.addresses.health;
            eventually("readiness", || async move {
                get(health, "h", "/healthz/ready").await.status == 200
            })
            .await;

            // The app dials the VIP; iptables sends it to the proxy.
            let got = get("10.96.0.10:8000".parse().unwrap(), "httpbin", "/status/418").await;
            assert_eq!(got.status, 418);
            assert_eq!(got.header("server"), Some("envoy"));
            assert_eq!(up.hits(), 1);
            let line = &log_lines(&log, 1).await[0];
            assert!(
                line.contains(" outbound|8000||httpbin.default.svc.cluster.local "),
                "{line}"
            );
            assert!(
                line.contains(" 10.96.0.10:8000 "),
                "original destination: {line}"
            );
            sidecar.terminate();
        });
    });
}
