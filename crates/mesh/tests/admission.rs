//! The injector in the real API server's admission chain: injected pods must pass the
//! server's defaulting and validation, as they will when the chain calls the injector.

use std::collections::BTreeMap;
use std::sync::Arc;

use apiserver::resources::ResourceInfo;
use apiserver::status::ApiError;
use apiserver::{AppState, MutatingAdmission, Operation};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use kube::{Client, Config};
use mesh::config::MeshConfig;
use mesh::inject::{InjectContext, NodeVersion, inject, should_inject};
use serde_json::{Value, json};
use store::MemoryStore;
use tokio_util::sync::CancellationToken;

/// What the API server's plugin does: select with the namespace's labels, then inject.
struct Injector {
    mesh: MeshConfig,
    nodes: Vec<NodeVersion>,
}

impl MutatingAdmission for Injector {
    fn name(&self) -> &str {
        "mesh-injector"
    }

    fn admit(
        &self,
        op: Operation,
        resource: &ResourceInfo,
        object: &mut Value,
        namespace: Option<&Value>,
    ) -> Result<(), ApiError> {
        if op != Operation::Create || resource.kind != "Pod" {
            return Ok(());
        }
        let labels: BTreeMap<String, String> = namespace
            .and_then(|n| n.pointer("/metadata/labels"))
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default();
        let pod: Pod = serde_json::from_value(object.clone()).expect("pod");
        if !should_inject(&pod, &labels) {
            return Ok(());
        }
        let injected = inject(&pod, &InjectContext::new(&self.mesh, &self.nodes))
            .map_err(|e| apiserver::status::bad_request(&e.to_string()))?;
        *object = serde_json::to_value(injected).expect("json");
        Ok(())
    }
}

async fn start(mesh: MeshConfig) -> (Client, CancellationToken) {
    let plugin = Injector {
        mesh,
        nodes: vec![NodeVersion::new("node-1", "v1.33.0")],
    };
    let state = AppState::new(Arc::new(MemoryStore::new())).with_admission(vec![Arc::new(plugin)]);
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
    (Client::try_from(config).expect("client"), stop)
}

async fn label_namespace(client: &Client, name: &str, labels: Value) {
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
            .expect("namespace");
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await.expect("get").is_some() {
        let patch = json!({"metadata": {"labels": ns.metadata.labels}});
        api.patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(patch),
        )
        .await
        .expect("label");
    } else {
        api.create(&PostParams::default(), &ns)
            .await
            .expect("create");
    }
}

/// The blog's pod: an init container that calls out, and a sleeping app.
fn blog_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "initContainers": [{"name": "check-traffic", "image": "istio/base",
                "command": ["curl", "httpbin.org/get"]}],
            "containers": [{"name": "sleep", "image": "istio/base",
                "command": ["/bin/sleep", "infinity"],
                "readinessProbe": {"httpGet": {"path": "/", "port": 80}}}]
        }
    }))
    .expect("pod")
}

fn names(cs: Option<&Vec<k8s_openapi::api::core::v1::Container>>) -> Vec<String> {
    cs.into_iter().flatten().map(|c| c.name.clone()).collect()
}

#[tokio::test]
async fn injected_pods_pass_the_api_servers_validation() {
    let (client, stop) = start(MeshConfig::default()).await;
    label_namespace(&client, "default", json!({"istio-injection": "enabled"})).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    let created = pods
        .create(&PostParams::default(), &blog_pod("sleep"))
        .await
        .expect("the native layout is a valid pod");
    let spec = created.spec.clone().expect("spec");
    assert_eq!(
        names(spec.init_containers.as_ref()),
        ["istio-init", "istio-proxy", "check-traffic"]
    );
    assert_eq!(names(Some(&spec.containers)), ["sleep"]);

    let mut legacy = blog_pod("sleep-legacy");
    legacy.metadata.annotations = Some(BTreeMap::from([(
        "sidecar.istio.io/nativeSidecar".to_owned(),
        "false".to_owned(),
    )]));
    let created = pods
        .create(&PostParams::default(), &legacy)
        .await
        .expect("the legacy layout is a valid pod");
    let spec = created.spec.clone().expect("spec");
    assert_eq!(
        names(spec.init_containers.as_ref()),
        ["check-traffic", "istio-init"]
    );
    assert_eq!(names(Some(&spec.containers)), ["sleep", "istio-proxy"]);

    // Opted out: stored as sent.
    let mut out = blog_pod("plain");
    out.metadata.labels = Some(BTreeMap::from([(
        "sidecar.istio.io/inject".to_owned(),
        "false".to_owned(),
    )]));
    let created = pods
        .create(&PostParams::default(), &out)
        .await
        .expect("created");
    assert_eq!(
        names(
            created
                .spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
        ),
        ["check-traffic"]
    );
    stop.cancel();
}

#[tokio::test]
async fn hold_application_in_legacy_mode_is_valid_too() {
    let mut mesh = MeshConfig::default();
    mesh.apply_sets(&[
        "values.pilot.env.ENABLE_NATIVE_SIDECARS=false",
        "values.global.proxy.holdApplicationUntilProxyStarts=true",
    ])
    .expect("set");
    let (client, stop) = start(mesh).await;
    label_namespace(&client, "apps", json!({"istio.io/rev": "default"})).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "apps");
    let created = pods
        .create(&PostParams::default(), &blog_pod("held"))
        .await
        .expect("valid pod");
    let spec = created.spec.expect("spec");
    assert_eq!(names(Some(&spec.containers)), ["istio-proxy", "sleep"]);
    stop.cancel();
}
