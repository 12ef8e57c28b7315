//! `tandem mesh install|uninstall` against the real API server, in-process on loopback.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use apiserver::AppState;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, NodeAddress, NodeStatus, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::{Client, Config};
use mesh::config::MeshConfig;
use mesh::install::{
    ClusterArgs, InstallArgs, UninstallArgs, install, run_install, run_uninstall, uninstall,
};
use store::MemoryStore;
use tokio_util::sync::CancellationToken;

struct Cluster {
    addr: SocketAddr,
    client: Client,
    stop: CancellationToken,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn cluster() -> Cluster {
    let state = AppState::new(Arc::new(MemoryStore::new()));
    apiserver::bootstrap(&state).await.expect("seed");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let until = stop.clone();
    let app = apiserver::router(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { until.cancelled().await })
            .await;
    });
    let config = Config::new(format!("http://{addr}").parse().expect("uri"));
    Cluster {
        addr,
        client: Client::try_from(config).expect("client"),
        stop,
    }
}

async fn add_node(client: &Client, name: &str, ip: &str) {
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        status: Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "Hostname".into(),
                    address: name.into(),
                },
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.into(),
                },
            ]),
            ..NodeStatus::default()
        }),
        ..Node::default()
    };
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .expect("node");
}

fn text(out: Vec<u8>) -> String {
    String::from_utf8(out).expect("utf8")
}

#[tokio::test]
async fn install_creates_the_objects_and_reinstall_replaces_them() {
    let c = cluster().await;
    add_node(&c.client, "node-1", "10.1.2.3").await;
    let mut mesh = MeshConfig::default();
    mesh.apply_sets(&["meshConfig.accessLogFile=/dev/stdout"])
        .expect("set");
    let mut out = Vec::new();
    assert!(install(&c.client, &mesh, &mut out).await.expect("io"));
    assert_eq!(
        text(out),
        "✔ Istio core installed ⛵️\n✔ Istiod installed 🧠\n✔ Installation complete\n"
    );

    Api::<Namespace>::all(c.client.clone())
        .get("istio-system")
        .await
        .expect("namespace");
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "istio-system");
    let cm = cms.get("istio").await.expect("configmap");
    let stored = MeshConfig::from_config_map_data(&cm.data.unwrap_or_default()).expect("reads");
    assert_eq!(stored.access_log_file, "/dev/stdout");

    let services: Api<Service> = Api::namespaced(c.client.clone(), "istio-system");
    let svc = services.get("istiod").await.expect("service");
    let spec = svc.spec.clone().expect("spec");
    assert_eq!(spec.selector, None);
    let ports: Vec<i32> = spec.ports.iter().flatten().map(|p| p.port).collect();
    assert_eq!(ports, [15010, 15012, 15014]);

    let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), "istio-system");
    let slice = slices.get("istiod").await.expect("endpointslice");
    assert_eq!(slice.endpoints[0].addresses, ["10.1.2.3"]);
    assert_eq!(slice.endpoints[0].node_name.as_deref(), Some("node-1"));

    // Installing again with other settings replaces the config, keeps the Service's IP.
    let mut mesh = MeshConfig::default();
    mesh.apply_sets(&["meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY"])
        .expect("set");
    let mut out = Vec::new();
    assert!(
        install(&c.client, &mesh, &mut out).await.expect("io"),
        "{}",
        text(out)
    );
    let cm = cms.get("istio").await.expect("configmap");
    let stored = MeshConfig::from_config_map_data(&cm.data.unwrap_or_default()).expect("reads");
    assert_eq!(stored.access_log_file, "");
    assert_eq!(
        stored.outbound_traffic_policy(),
        mesh::config::OutboundTrafficPolicy::RegistryOnly
    );
    let again = services.get("istiod").await.expect("service");
    assert_eq!(
        again.spec.and_then(|s| s.cluster_ip),
        spec.cluster_ip,
        "the cluster IP survives a reinstall"
    );

    let mut out = Vec::new();
    assert!(uninstall(&c.client, &mut out).await.expect("io"));
    assert_eq!(
        text(out),
        "  Removed EndpointSlice:istio-system:istiod.\n  Removed Service:istio-system:istiod.\n  \
         Removed ConfigMap:istio-system:istio.\n  Removed Namespace::istio-system.\n✔ Uninstall complete\n"
    );
    assert!(slices.get_opt("istiod").await.expect("get").is_none());
    assert!(services.get_opt("istiod").await.expect("get").is_none());
    assert!(cms.get_opt("istio").await.expect("get").is_none());

    // Nothing left to remove is not an error.
    let mut out = Vec::new();
    assert!(uninstall(&c.client, &mut out).await.expect("io"));
    assert_eq!(text(out), "✔ Uninstall complete\n");
}

#[tokio::test]
async fn without_a_node_address_istiod_fails_and_says_why() {
    let c = cluster().await;
    let mut out = Vec::new();
    assert!(
        !install(&c.client, &MeshConfig::default(), &mut out)
            .await
            .expect("io")
    );
    let out = text(out);
    assert!(out.starts_with("✔ Istio core installed ⛵️\n"), "{out}");
    assert!(
        out.contains("✘ Istiod encountered an error: no node reports an InternalIP"),
        "{out}"
    );
}

#[tokio::test]
async fn the_commands_use_the_kubeconfig_and_check_sets_first() {
    let c = cluster().await;
    add_node(&c.client, "node-1", "10.9.8.7").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: http://{}\n\
             contexts:\n- name: t\n  context:\n    cluster: t\n    user: u\n\
             current-context: t\nusers:\n- name: u\n  user: {{}}\n",
            c.addr
        ),
    )
    .expect("write");
    let cluster = ClusterArgs {
        kubeconfig: Some(kubeconfig),
        context: None,
    };
    let err = run_install(InstallArgs {
        set: vec!["meshConfig.nope=1".to_owned()],
        skip_confirmation: true,
        cluster: cluster.clone(),
    })
    .await
    .expect_err("unknown key");
    assert!(
        err.to_string()
            .contains("unknown --set key \"meshConfig.nope\""),
        "{err}"
    );

    let code = run_install(InstallArgs {
        set: vec!["values.pilot.env.ENABLE_NATIVE_SIDECARS=false".to_owned()],
        skip_confirmation: true,
        cluster: cluster.clone(),
    })
    .await
    .expect("installs");
    assert_eq!(code, ExitCode::SUCCESS);
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "istio-system");
    let cm = cms.get("istio").await.expect("configmap");
    let stored = MeshConfig::from_config_map_data(&cm.data.unwrap_or_default()).expect("reads");
    assert_eq!(stored.native_sidecars, mesh::config::NativeSidecars::False);

    let code = run_uninstall(UninstallArgs {
        skip_confirmation: true,
        cluster,
    })
    .await
    .expect("uninstalls");
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(cms.get_opt("istio").await.expect("get").is_none());
}
