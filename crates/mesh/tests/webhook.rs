//! The injection webhook over real HTTPS, with AdmissionReview requests shaped like the
//! ones the Kubernetes API server sends.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use mesh::config::MeshConfig;
use mesh::inject::{InjectContext, NodeVersion, inject};
use mesh::webhook::{Webhook, WebhookArgs, bind, mesh_config};
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct Running {
    addr: SocketAddr,
    ca: CertificateDer<'static>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start(webhook: Webhook) -> Running {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let cert_pem = key.cert.pem();
    let key_pem = key.signing_key.serialize_pem();
    let server = bind(
        "127.0.0.1:0".parse().expect("addr"),
        cert_pem.as_bytes(),
        key_pem.as_bytes(),
        webhook,
    )
    .await
    .expect("binds");
    let addr = server.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.serve(shutdown.clone()));
    Running {
        addr,
        ca: key.cert.der().clone(),
        shutdown,
        task,
    }
}

impl Running {
    /// One HTTPS request, verifying the server's certificate; (status, body).
    async fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, Vec<u8>) {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let name = ServerName::try_from("localhost").expect("name");
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("http1");
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", content_type)
            .body(Full::new(bytes::Bytes::from(body)))
            .expect("request");
        let resp = sender.send_request(req).await.expect("response");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, body.to_vec())
    }

    async fn review(&self, path: &str, review: &Value) -> Value {
        let (status, body) = self
            .call(
                "POST",
                path,
                "application/json",
                serde_json::to_vec(review).expect("json"),
            )
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("AdmissionReview JSON")
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("server task");
    }
}

/// A Deployment's pod as the API server hands it to a mutating webhook: defaulted, with
/// a generated name still empty, managed fields, and an empty status.
fn deployment_pod() -> Value {
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "generateName": "sleep-7656cf8794-",
            "namespace": "default",
            "creationTimestamp": null,
            "labels": {"app": "sleep", "pod-template-hash": "7656cf8794"},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "sleep-7656cf8794",
                "uid": "a3c1a1e2-7d1b-4e0a-9a43-6a0c3c1e8b11",
                "controller": true, "blockOwnerDeletion": true
            }],
            "managedFields": [{
                "manager": "kube-controller-manager", "operation": "Update",
                "apiVersion": "v1", "time": "2025-01-01T00:00:00Z",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}
            }]
        },
        "spec": {
            "containers": [{
                "name": "sleep",
                "image": "curlimages/curl",
                "command": ["/bin/sleep", "infinity"],
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent"
            }],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 0,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "sleep",
            "serviceAccount": "sleep",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority"
        },
        "status": {}
    })
}

fn admission_review(uid: &str, object: Value) -> Value {
    let gvk = json!({"group": "", "version": "v1", "kind": "Pod"});
    let gvr = json!({"group": "", "version": "v1", "resource": "pods"});
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid,
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": "",
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "2f6a3f3e-0b7c-4d1e-8f53-0d2b8a7c9e10",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]
            },
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

fn patched(object: &Value, response: &Value) -> Pod {
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("patch"))
        .expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("RFC 6902 patch");
    let mut doc = object.clone();
    json_patch::patch(&mut doc, &patch).expect("the patch applies to the object sent");
    serde_json::from_value(doc).expect("a pod")
}

fn nodes() -> Vec<NodeVersion> {
    vec![NodeVersion::new("", "v1.33.0")]
}

#[tokio::test]
async fn injects_a_deployment_pod_with_a_json_patch() {
    let server = start(Webhook::new(MeshConfig::default(), nodes())).await;
    let object = deployment_pod();
    let out = server
        .review(
            "/inject",
            &admission_review("705ab4f5-6393-11e8-b7cc-42010a800002", object.clone()),
        )
        .await;
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    let response = &out["response"];
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], true);
    let mut pod = patched(&object, response);

    // Exactly what the in-process injector makes of the same pod.
    let mesh = MeshConfig::default();
    let nodes = nodes();
    let mut want: Pod = serde_json::from_value(object).expect("pod");
    want.metadata.managed_fields = None;
    let want = inject(&want, &InjectContext::new(&mesh, &nodes)).expect("injects");
    assert!(
        pod.metadata.managed_fields.is_some(),
        "the patch leaves managedFields alone"
    );
    pod.metadata.managed_fields = None;
    assert_eq!(pod, want);

    let spec = pod.spec.as_ref().expect("spec");
    let inits: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(inits, ["istio-init", "istio-proxy"]);
    let proxy = &spec.init_containers.as_ref().expect("inits")[1];
    let owner = proxy
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "ISTIO_META_OWNER")
        .and_then(|e| e.value.clone());
    assert_eq!(
        owner.as_deref(),
        Some("kubernetes://apis/apps/v1/namespaces/default/deployments/sleep")
    );
    server.stop().await;
}

#[tokio::test]
async fn pod_level_opt_outs_pass_without_a_patch() {
    let server = start(Webhook::new(MeshConfig::default(), nodes())).await;
    let mut annotated = deployment_pod();
    annotated["metadata"]["annotations"] = json!({"sidecar.istio.io/inject": "false"});
    let mut host = deployment_pod();
    host["spec"]["hostNetwork"] = json!(true);
    let mut system = deployment_pod();
    system["metadata"]["namespace"] = json!("kube-system");
    for (i, object) in [annotated, host, system].into_iter().enumerate() {
        let uid = format!("uid-{i}");
        let out = server
            .review("/inject", &admission_review(&uid, object))
            .await;
        assert_eq!(
            out["response"],
            json!({"uid": uid, "allowed": true}),
            "case {i}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn mesh_config_file_and_sets_choose_the_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh_file = dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh_file,
        "defaultConfig:\n  holdApplicationUntilProxyStarts: true\n  terminationDrainDuration: 20s\n",
    )
    .expect("write");
    let args = WebhookArgs {
        tls_cert: dir.path().join("unused.crt"),
        tls_key: dir.path().join("unused.key"),
        listen: "127.0.0.1:0".parse().expect("addr"),
        mesh_config: Some(mesh_file),
        set: vec!["values.pilot.env.ENABLE_NATIVE_SIDECARS=false".to_owned()],
        kubelet_version: "v1.33.0".to_owned(),
    };
    let mesh = mesh_config(&args).expect("mesh config");
    let server = start(Webhook::new(mesh, nodes())).await;
    let object = deployment_pod();
    let out = server
        .review("/inject", &admission_review("u", object.clone()))
        .await;
    let pod = patched(&object, &out["response"]);
    let spec = pod.spec.expect("spec");
    let containers: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        containers,
        ["istio-proxy", "sleep"],
        "legacy layout, proxy held first"
    );
    let proxy_config = spec.containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "PROXY_CONFIG")
        .and_then(|e| e.value.clone());
    assert_eq!(
        proxy_config.as_deref(),
        Some(
            "{\"discoveryAddress\":\"istiod.istio-system.svc:15010\",\"terminationDrainDuration\":\"20s\",\"holdApplicationUntilProxyStarts\":true}\n"
        )
    );
    server.stop().await;
}

#[tokio::test]
async fn cluster_and_network_come_from_the_path_and_v1beta1_is_answered_in_kind() {
    let server = start(Webhook::new(MeshConfig::default(), nodes())).await;
    let object = deployment_pod();
    let mut review = admission_review("b1", object.clone());
    review["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let out = server
        .review("/inject/cluster/east/net/network1", &review)
        .await;
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1beta1");
    let pod = patched(&object, &out["response"]);
    let proxy = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .and_then(|i| i.iter().find(|c| c.name == "istio-proxy"))
        .expect("proxy")
        .clone();
    let env = |name: &str| {
        proxy
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(env("ISTIO_META_CLUSTER_ID").as_deref(), Some("east"));
    assert_eq!(env("ISTIO_META_NETWORK").as_deref(), Some("network1"));
    assert_eq!(
        pod.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("topology.istio.io/network"))
            .map(String::as_str),
        Some("network1")
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_get_istiods_answers() {
    let server = start(Webhook::new(MeshConfig::default(), nodes())).await;
    let (status, body) = server
        .call("POST", "/inject", "application/json", Vec::new())
        .await;
    assert_eq!(
        (status, String::from_utf8_lossy(&body).trim()),
        (400, "no body found")
    );
    let (status, _) = server
        .call("POST", "/inject", "text/plain", b"{}".to_vec())
        .await;
    assert_eq!(status, 415);
    let (status, _) = server
        .call("GET", "/inject", "application/json", Vec::new())
        .await;
    assert_eq!(status, 405);
    let (status, body) = server
        .call("POST", "/inject", "application/json", b"{not json".to_vec())
        .await;
    assert_eq!(status, 200);
    let out: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(out["response"]["allowed"], false);
    assert!(
        out["response"]["status"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("could not decode body")),
        "{out}"
    );
    // An injection error denies the pod with the reason.
    let mut object = deployment_pod();
    object["metadata"]["annotations"] = json!({"sidecar.istio.io/interceptionMode": "MAGIC"});
    let out = server
        .review("/inject", &admission_review("bad", object))
        .await;
    assert_eq!(out["response"]["uid"], "bad");
    assert_eq!(out["response"]["allowed"], false);
    assert!(
        out["response"]["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("sidecar.istio.io/interceptionMode")),
        "{out}"
    );
    server.stop().await;
}
