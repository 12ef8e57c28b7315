//! The mesh root certificate publisher against the real API server (in process, plain
//! HTTP): nothing before the mesh is installed, then one root CA in every active
//! namespace, kept as it should be.

use std::sync::Arc;
use std::time::Duration;

use controllers::castore;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Config};
use serde_json::json;
use store::MemoryStore;
use tokio_util::sync::CancellationToken;

struct Cluster {
    client: Client,
    stop: CancellationToken,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start() -> Cluster {
    let state = apiserver::AppState::new(Arc::new(MemoryStore::new()));
    apiserver::bootstrap(&state).await.expect("seed namespaces");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let stop = CancellationToken::new();
    let app = apiserver::router(state);
    let until = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { until.cancelled().await })
            .await;
    });
    let config = Config::new(format!("http://{addr}").parse().expect("uri"));
    let client = Client::try_from(config).expect("client");
    tokio::spawn(castore::run(client.clone(), stop.clone()));
    Cluster { client, stop }
}

async fn create_namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
}

/// The root certificate published in `namespace`, waiting up to ten seconds for
/// `accept` to hold.
async fn root_in(client: &Client, namespace: &str, accept: impl Fn(&str) -> bool) -> String {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for _ in 0..200 {
        if let Ok(Some(cm)) = api.get_opt(castore::ROOT_CONFIG_MAP).await {
            let pem = cm
                .data
                .as_ref()
                .and_then(|d| d.get(castore::ROOT_KEY))
                .cloned()
                .unwrap_or_default();
            let labelled = cm
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(castore::CONFIG_LABEL))
                .is_some_and(|v| v == "true");
            if labelled && accept(&pem) {
                return pem;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no acceptable {} in {namespace}", castore::ROOT_CONFIG_MAP);
}

#[tokio::test]
async fn the_mesh_root_reaches_every_active_namespace() {
    let c = start().await;
    create_namespace(&c.client, "shop").await;
    create_namespace(&c.client, castore::MESH_NAMESPACE).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shop: Api<ConfigMap> = Api::namespaced(c.client.clone(), "shop");
    assert!(
        shop.get_opt(castore::ROOT_CONFIG_MAP)
            .await
            .expect("get")
            .is_none(),
        "nothing is published before the mesh is installed"
    );

    // Installing the mesh: a CA is generated and its certificate published everywhere.
    let mesh: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": castore::MESH_CONFIG},
        "data": {"mesh": "{}"}
    }))
    .expect("configmap");
    Api::<ConfigMap>::namespaced(c.client.clone(), castore::MESH_NAMESPACE)
        .create(&PostParams::default(), &mesh)
        .await
        .expect("mesh config");
    let root = root_in(&c.client, "shop", |p| {
        p.starts_with("-----BEGIN CERTIFICATE-----")
    })
    .await;
    for ns in ["default", castore::MESH_NAMESPACE] {
        assert_eq!(root_in(&c.client, ns, |p| !p.is_empty()).await, root);
    }
    let secret = Api::<Secret>::namespaced(c.client.clone(), castore::MESH_NAMESPACE)
        .get(castore::CA_SECRET)
        .await
        .expect("the CA is stored");
    let data = secret.data.expect("data");
    assert_eq!(data["ca-cert.pem"].0, root.as_bytes());
    assert!(String::from_utf8_lossy(&data["ca-key.pem"].0).contains("PRIVATE KEY"));
    assert!(
        Api::<ConfigMap>::namespaced(c.client.clone(), "kube-system")
            .get_opt(castore::ROOT_CONFIG_MAP)
            .await
            .expect("get")
            .is_none(),
        "istiod leaves kube-system alone"
    );

    // A changed copy is restored, a deleted one recreated, a new namespace served.
    shop.patch(
        castore::ROOT_CONFIG_MAP,
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {castore::ROOT_KEY: "tampered", "extra": "x"}})),
    )
    .await
    .expect("patch");
    root_in(&c.client, "shop", |p| p == root).await;
    let restored = shop.get(castore::ROOT_CONFIG_MAP).await.expect("get");
    assert_eq!(restored.data.map(|d| d.len()), Some(1));
    shop.delete(castore::ROOT_CONFIG_MAP, &DeleteParams::default())
        .await
        .expect("delete");
    root_in(&c.client, "shop", |p| p == root).await;
    create_namespace(&c.client, "late").await;
    assert_eq!(root_in(&c.client, "late", |p| !p.is_empty()).await, root);
}
