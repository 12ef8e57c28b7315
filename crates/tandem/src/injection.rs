//! The mesh's sidecar injector in the API server's admission chain, as Istio's mutating
//! webhook sits in a real cluster's: on Pod create, when the mesh is installed (ConfigMap
//! `istio` in `istio-system`), the pod is selected with its namespace's labels and injected.
//! The mesh config is followed through a watch so admission never waits on I/O.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use apiserver::resources::ResourceInfo;
use apiserver::status::ApiError;
use apiserver::{MutatingAdmission, Operation};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::Api;
use kube::runtime::watcher;
use mesh::config::MeshConfig;
use mesh::inject::{InjectContext, NodeVersion, inject, should_inject};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The admission plugin; cheap to clone (shares the followed config).
#[derive(Clone)]
pub struct MeshInjector {
    mesh: Arc<RwLock<Option<MeshConfig>>>,
    nodes: Arc<Vec<NodeVersion>>,
}

impl MeshInjector {
    /// An injector for a cluster whose only node runs kubelet `v1.33.0`.
    pub fn new(node_name: &str) -> Self {
        MeshInjector {
            mesh: Arc::default(),
            nodes: Arc::new(vec![NodeVersion::new(node_name, "v1.33.0")]),
        }
    }

    fn set(&self, config: Option<MeshConfig>) {
        *self.mesh.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// Follows ConfigMap `istio-system/istio` until `shutdown`.
    pub async fn follow(self, client: kube::Client, shutdown: CancellationToken) {
        let api: Api<ConfigMap> = Api::namespaced(client, "istio-system");
        let config = watcher::Config::default().fields("metadata.name=istio");
        let mut events = watcher(api, config).boxed();
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = events.next() => e,
            };
            match event {
                Some(Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm))) => {
                    let data = cm.data.unwrap_or_default();
                    match MeshConfig::from_config_map_data(&data) {
                        Ok(mesh) => self.set(Some(mesh)),
                        Err(err) => {
                            tracing::warn!(%err, "ConfigMap istio-system/istio: not injecting");
                            self.set(None);
                        }
                    }
                }
                Some(Ok(watcher::Event::Delete(_))) => self.set(None),
                Some(Ok(watcher::Event::Init)) => {}
                Some(Ok(watcher::Event::InitDone)) => {}
                Some(Err(err)) => {
                    tracing::debug!(%err, "following the mesh config");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                None => return,
            }
        }
    }
}

impl MutatingAdmission for MeshInjector {
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
        if op != Operation::Create || !resource.group.is_empty() || resource.kind != "Pod" {
            return Ok(());
        }
        let mesh = self.mesh.read().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(mesh) = mesh else {
            return Ok(());
        };
        let labels: BTreeMap<String, String> = namespace
            .and_then(|n| n.pointer("/metadata/labels"))
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default();
        let Ok(pod) = serde_json::from_value::<Pod>(object.clone()) else {
            // Validation reports what is wrong with it.
            return Ok(());
        };
        if !should_inject(&pod, &labels) {
            return Ok(());
        }
        let injected = inject(&pod, &InjectContext::new(&mesh, &self.nodes)).map_err(|e| {
            apiserver::status::bad_request(&format!("sidecar injection failed: {e}"))
        })?;
        *object = serde_json::to_value(injected)
            .map_err(|e| apiserver::status::internal(&e.to_string()))?;
        Ok(())
    }
}
