//! `TokenRequest` through the real router on loopback, driven by the `kube` client as
//! the node agent drives it: claims, signature, defaults and Kubernetes' errors.

use std::sync::Arc;

use apiserver::AppState;
use apiserver::state::ApiConfig;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::{Client, Config};
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use serde_json::{Value, json};
use store::MemoryStore;
use tokio_util::sync::CancellationToken;

/// The server's clock, fixed so that expiry times are exact.
const NOW: i64 = 1_750_000_000;

struct Harness {
    state: AppState,
    client: Client,
    stop: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start() -> Harness {
    let clock = jiff::Timestamp::from_second(NOW).expect("timestamp");
    let state = AppState::new(Arc::new(MemoryStore::new())).with_config(ApiConfig {
        clock: Arc::new(move || clock),
        ..Default::default()
    });
    apiserver::bootstrap(&state).await.expect("seed namespaces");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let stop = CancellationToken::new();
    let app = apiserver::router(state.clone());
    let until = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { until.cancelled().await })
            .await;
    });
    let config = Config::new(format!("http://{addr}").parse().expect("uri"));
    let client = Client::try_from(config).expect("client");
    Harness {
        state,
        client,
        stop,
    }
}

fn object<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("object")
}

fn api_error(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn request(audiences: &[&str], seconds: Option<i64>, pod: Option<(&str, &str)>) -> TokenRequest {
    TokenRequest {
        spec: TokenRequestSpec {
            audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
            expiration_seconds: seconds,
            bound_object_ref: pod.map(|(name, uid)| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(name.into()),
                uid: Some(uid.into()),
            }),
        },
        ..Default::default()
    }
}

/// The claims of a token whose signature verifies with the server's key.
fn verified_claims(state: &AppState, token: &str) -> Value {
    let signer = state.token_signer.as_ref().expect("the server has a key");
    let (input, signature) = token.rsplit_once('.').expect("a JWS");
    let signature = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, signer.public_key())
        .verify(input.as_bytes(), &signature)
        .expect("signature verifies with the service account key");
    let (header, payload) = input.split_once('.').expect("header and payload");
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("b64")).expect("json");
    assert_eq!(header, json!({"alg": "ES256", "kid": signer.key_id()}));
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json")
}

#[tokio::test]
async fn bound_token_for_a_pod_carries_kubernetes_claims() {
    let h = start().await;
    let accounts: Api<ServiceAccount> = Api::namespaced(h.client.clone(), "default");
    let sa = accounts
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": "web"}})),
        )
        .await
        .expect("service account");
    let node = Api::<Node>::all(h.client.clone())
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": "n1"}})),
        )
        .await
        .expect("node");
    let pod = Api::<Pod>::namespaced(h.client.clone(), "default")
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": "web-1"},
                "spec": {"serviceAccountName": "web", "nodeName": "n1",
                         "containers": [{"name": "app", "image": "nginx"}]}
            })),
        )
        .await
        .expect("pod");
    let pod_uid = pod.metadata.uid.clone().expect("pod uid");

    let answer = accounts
        .create_token_request(
            "web",
            &PostParams::default(),
            &request(&["istio-ca"], Some(43200), Some(("web-1", &pod_uid))),
        )
        .await
        .expect("token");
    assert_eq!(answer.metadata.name.as_deref(), Some("web"));
    assert_eq!(answer.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(answer.spec.audiences, ["istio-ca"]);
    assert_eq!(answer.spec.expiration_seconds, Some(43200));
    let status = answer.status.expect("status");
    assert_eq!(status.expiration_timestamp.0.as_second(), NOW + 43200);

    let claims = verified_claims(&h.state, &status.token);
    assert_eq!(
        claims["iss"],
        "https://kubernetes.default.svc.cluster.local"
    );
    assert_eq!(claims["sub"], "system:serviceaccount:default:web");
    assert_eq!(claims["aud"], json!(["istio-ca"]));
    assert_eq!(claims["iat"], NOW);
    assert_eq!(claims["nbf"], NOW);
    assert_eq!(claims["exp"], NOW + 43200);
    assert_eq!(
        claims["kubernetes.io"],
        json!({
            "namespace": "default",
            "serviceaccount": {"name": "web", "uid": sa.metadata.uid},
            "pod": {"name": "web-1", "uid": pod_uid},
            "node": {"name": "n1", "uid": node.metadata.uid},
        })
    );
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() == 36));

    // A pod of another account, or a reference to a replaced pod, is refused.
    accounts
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": "default"}})),
        )
        .await
        .expect("default account");
    let err = api_error(
        Api::<ServiceAccount>::namespaced(h.client.clone(), "default")
            .create_token_request(
                "default",
                &PostParams::default(),
                &request(&[], None, Some(("web-1", ""))),
            )
            .await
            .expect_err("other account"),
    );
    assert_eq!(err.code, 400);
    assert_eq!(
        err.message,
        "cannot bind token for serviceaccount \"default\" to pod running with different serviceaccount name."
    );
    let err = api_error(
        accounts
            .create_token_request(
                "web",
                &PostParams::default(),
                &request(&[], None, Some(("web-1", "stale-uid"))),
            )
            .await
            .expect_err("stale uid"),
    );
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    let err = api_error(
        accounts
            .create_token_request(
                "web",
                &PostParams::default(),
                &request(&[], None, Some(("gone", ""))),
            )
            .await
            .expect_err("missing pod"),
    );
    assert_eq!(err.code, 404);
    assert_eq!(err.message, "pods \"gone\" not found");
}

#[tokio::test]
async fn defaults_limits_and_missing_accounts() {
    let h = start().await;
    let accounts: Api<ServiceAccount> = Api::namespaced(h.client.clone(), "default");
    accounts
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": "default"}})),
        )
        .await
        .expect("service account");

    // No audiences and no expiry: the API server's own audience, one hour.
    let answer = accounts
        .create_token_request("default", &PostParams::default(), &request(&[], None, None))
        .await
        .expect("token");
    assert_eq!(
        answer.spec.audiences,
        ["https://kubernetes.default.svc.cluster.local"]
    );
    assert_eq!(answer.spec.expiration_seconds, Some(3600));
    let status = answer.status.expect("status");
    let claims = verified_claims(&h.state, &status.token);
    assert_eq!(claims["exp"], NOW + 3600);
    assert_eq!(
        claims["aud"],
        json!(["https://kubernetes.default.svc.cluster.local"])
    );
    assert!(claims["kubernetes.io"].get("pod").is_none());

    let err = api_error(
        accounts
            .create_token_request(
                "default",
                &PostParams::default(),
                &request(&[], Some(599), None),
            )
            .await
            .expect_err("too short"),
    );
    assert_eq!(err.code, 422);
    assert_eq!(
        err.message,
        "TokenRequest.authentication.k8s.io \"default\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"
    );

    let err = api_error(
        accounts
            .create_token_request("ghost", &PostParams::default(), &request(&[], None, None))
            .await
            .expect_err("no such account"),
    );
    assert_eq!(err.code, 404);
    assert_eq!(err.message, "serviceaccounts \"ghost\" not found");

    // Only POST is served on the subresource.
    let err = api_error(
        h.client
            .request::<Value>(
                axum::http::Request::get(
                    "/api/v1/namespaces/default/serviceaccounts/default/token",
                )
                .body(Vec::new())
                .expect("request"),
            )
            .await
            .expect_err("GET is not served"),
    );
    assert_eq!(err.code, 405);
}

#[tokio::test]
async fn discovery_lists_the_token_subresource() {
    let h = start().await;
    let discovery = kube::discovery::Discovery::new(h.client.clone())
        .run()
        .await
        .expect("discovery");
    let (sa, _) = discovery
        .resolve_gvk(&kube::core::GroupVersionKind::gvk(
            "",
            "v1",
            "ServiceAccount",
        ))
        .expect("serviceaccounts");
    assert_eq!(sa.plural, "serviceaccounts");

    let list: Value = h
        .client
        .request(
            axum::http::Request::get("/api/v1")
                .body(Vec::new())
                .expect("request"),
        )
        .await
        .expect("api/v1");
    let token = list["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "serviceaccounts/token")
        .expect("serviceaccounts/token listed");
    assert_eq!(token["group"], "authentication.k8s.io");
    assert_eq!(token["version"], "v1");
    assert_eq!(token["kind"], "TokenRequest");
    assert_eq!(token["verbs"], json!(["create"]));
}
