//! The mesh root certificate publisher: once the mesh is installed (ConfigMap `istio` in
//! `istio-system`), keeps ConfigMap `istio-ca-root-cert` (key `root-cert.pem`) in every
//! active namespace, as istiod's namespace controller does, so that injected pods can
//! mount it.
//!
//! The root is the one published in `istio-system` (by istiod, when one runs); else the
//! self-signed CA kept in Secret `istio-system/istio-ca-secret` (istiod's layout); else a
//! new self-signed CA is generated and stored there first.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::{Timestamp, ToSpan};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Where the mesh's control plane lives.
pub const MESH_NAMESPACE: &str = "istio-system";
/// The mesh configuration; its presence means the mesh is installed.
pub const MESH_CONFIG: &str = "istio";
/// The ConfigMap published in every namespace.
pub const ROOT_CONFIG_MAP: &str = "istio-ca-root-cert";
/// Its key.
pub const ROOT_KEY: &str = "root-cert.pem";
/// istiod's self-signed CA secret.
pub const CA_SECRET: &str = "istio-ca-secret";
/// The label istiod puts on the ConfigMap.
pub const CONFIG_LABEL: &str = "istio.io/config";

/// Namespaces istiod never publishes into.
const IGNORED_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// Why a sync failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("namespace has no name")]
    Incomplete,
    #[error("secret {MESH_NAMESPACE}/{CA_SECRET} has no ca-cert.pem")]
    BrokenSecret,
    #[error("generating the mesh root CA: {0}")]
    Generate(String),
    #[error(transparent)]
    Api(#[from] kube::Error),
}

/// Where the root certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSource {
    /// Already published in the mesh namespace.
    Published(String),
    /// The certificate of the stored CA secret.
    Stored(String),
    /// Nothing yet: generate a CA.
    Generate,
    /// The CA secret exists without a certificate; generating would fight over it.
    Broken,
}

/// Chooses the root from the mesh namespace's ConfigMap and CA secret.
pub fn root_source(published: Option<&ConfigMap>, ca_secret: Option<&Secret>) -> RootSource {
    if let Some(pem) = published
        .and_then(|cm| cm.data.as_ref())
        .and_then(|d| d.get(ROOT_KEY))
        .filter(|p| !p.trim().is_empty())
    {
        return RootSource::Published(pem.clone());
    }
    match ca_secret {
        None => RootSource::Generate,
        Some(secret) => secret
            .data
            .as_ref()
            .and_then(|d| d.get("ca-cert.pem"))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .filter(|p| !p.trim().is_empty())
            .map_or(RootSource::Broken, RootSource::Stored),
    }
}

/// What to do about one namespace's ConfigMap.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Not ours to touch (no mesh, terminating or ignored namespace).
    Skip,
    InSync,
    Create(Box<ConfigMap>),
    /// A JSON merge patch bringing the existing ConfigMap to the wanted content.
    Patch(Value),
}

fn is_terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

/// The ConfigMap wanted in `namespace`.
pub fn wanted_config_map(namespace: &str, root_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(ROOT_CONFIG_MAP.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(CONFIG_LABEL.into(), "true".into())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(ROOT_KEY.into(), root_pem.into())])),
        ..ConfigMap::default()
    }
}

/// Whether namespace `ns` should get the root ConfigMap at all.
pub fn publishes_into(mesh_installed: bool, ns: &Namespace) -> bool {
    let name = ns.metadata.name.as_deref().unwrap_or("");
    mesh_installed && !name.is_empty() && !is_terminating(ns) && !IGNORED_NAMESPACES.contains(&name)
}

/// What to do in namespace `ns`, given whether the mesh is installed, the root and the
/// ConfigMap found there. Like istiod, the data is replaced as a whole.
pub fn decide(
    mesh_installed: bool,
    ns: &Namespace,
    root_pem: &str,
    existing: Option<&ConfigMap>,
) -> Decision {
    if !publishes_into(mesh_installed, ns) {
        return Decision::Skip;
    }
    let name = ns.metadata.name.as_deref().unwrap_or("");
    let Some(existing) = existing else {
        return Decision::Create(Box::new(wanted_config_map(name, root_pem)));
    };
    let data_ok = existing.binary_data.as_ref().is_none_or(BTreeMap::is_empty)
        && existing
            .data
            .as_ref()
            .is_some_and(|d| d.len() == 1 && d.get(ROOT_KEY).map(String::as_str) == Some(root_pem));
    let label_ok = existing
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(CONFIG_LABEL))
        .map(String::as_str)
        == Some("true");
    if data_ok && label_ok {
        return Decision::InSync;
    }
    let mut data = serde_json::Map::new();
    for key in existing.data.iter().flat_map(BTreeMap::keys) {
        data.insert(key.clone(), Value::Null);
    }
    data.insert(ROOT_KEY.into(), json!(root_pem));
    let mut patch = json!({
        "metadata": {"labels": {CONFIG_LABEL: "true"}},
        "data": data,
    });
    if existing.binary_data.as_ref().is_some_and(|b| !b.is_empty()) {
        patch["binaryData"] = Value::Null;
    }
    Decision::Patch(patch)
}

/// A new self-signed root CA (ECDSA P-256, ten years, organization `cluster.local`
/// like istiod's) as PEM certificate and PKCS#8 key.
pub fn generate_root(now: Timestamp) -> Result<(String, String), Error> {
    let fail = |e: &dyn std::fmt::Display| Error::Generate(e.to_string());
    let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    let until = today.checked_add(10.years()).map_err(|e| fail(&e))?;
    let day = |d: jiff::civil::Date| -> Result<_, Error> {
        let month = u8::try_from(d.month()).map_err(|e| fail(&e))?;
        let dom = u8::try_from(d.day()).map_err(|e| fail(&e))?;
        // Valid by construction: the parts come from a real calendar date.
        Ok(rcgen::date_time_ymd(i32::from(d.year()), month, dom))
    };
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "cluster.local");
    dn.push(rcgen::DnType::CommonName, "Istio CA");
    params.distinguished_name = dn;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = day(today)?;
    params.not_after = day(until)?;
    let key = rcgen::KeyPair::generate().map_err(|e| fail(&e))?;
    let cert = params.self_signed(&key).map_err(|e| fail(&e))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// istiod's self-signed CA secret for a generated root.
pub fn ca_secret(cert_pem: &str, key_pem: &str) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    Secret {
        metadata: ObjectMeta {
            name: Some(CA_SECRET.into()),
            namespace: Some(MESH_NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        type_: Some("istio.io/ca-root".into()),
        data: Some(BTreeMap::from([
            ("ca-cert.pem".into(), bytes(cert_pem)),
            ("ca-key.pem".into(), bytes(key_pem)),
            ("cert-chain.pem".into(), bytes("")),
            ("root-cert.pem".into(), bytes("")),
        ])),
        ..Secret::default()
    }
}

struct Ctx {
    client: kube::Client,
}

/// Runs the publisher until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let config_maps: Api<ConfigMap> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client });
    let controller = Controller::new(namespaces, watcher::Config::default());
    let cache = controller.store();
    let controller = controller
        // The mesh config or the published root concern every namespace; a namespace's
        // own copy concerns that namespace.
        .watches(
            config_maps,
            watcher::Config::default(),
            move |cm: ConfigMap| {
                let namespace = cm.metadata.namespace.as_deref().unwrap_or("");
                let name = cm.metadata.name.as_deref().unwrap_or("");
                let refs: Vec<ObjectRef<Namespace>> = if namespace == MESH_NAMESPACE
                    && matches!(name, MESH_CONFIG | ROOT_CONFIG_MAP)
                {
                    cache
                        .state()
                        .iter()
                        .map(|ns| ObjectRef::from_obj(ns.as_ref()))
                        .collect()
                } else if name == ROOT_CONFIG_MAP {
                    vec![ObjectRef::new(namespace)]
                } else {
                    Vec::new()
                };
                refs
            },
        )
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {});
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = controller => {}
    }
}

fn error_policy(_ns: Arc<Namespace>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::debug!(%err, "mesh root certificate sync failed; retrying");
    Action::requeue(Duration::from_secs(1))
}

/// The mesh's root certificate, generating and storing a CA when there is none.
async fn ensure_root(client: &kube::Client) -> Result<String, Error> {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), MESH_NAMESPACE);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), MESH_NAMESPACE);
    let published = config_maps.get_opt(ROOT_CONFIG_MAP).await?;
    let stored = secrets.get_opt(CA_SECRET).await?;
    match root_source(published.as_ref(), stored.as_ref()) {
        RootSource::Published(pem) | RootSource::Stored(pem) => Ok(pem),
        RootSource::Broken => Err(Error::BrokenSecret),
        RootSource::Generate => {
            let (cert, key) = generate_root(Timestamp::now())?;
            match secrets
                .create(&PostParams::default(), &ca_secret(&cert, &key))
                .await
            {
                Ok(_) => {
                    tracing::info!("generated the mesh root CA in {MESH_NAMESPACE}/{CA_SECRET}");
                    Ok(cert)
                }
                // Another sync stored one first: use that.
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let stored = secrets.get_opt(CA_SECRET).await?;
                    match root_source(None, stored.as_ref()) {
                        RootSource::Stored(pem) => Ok(pem),
                        _ => Err(Error::BrokenSecret),
                    }
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

async fn reconcile(cached: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = cached.metadata.name.as_deref().ok_or(Error::Incomplete)?;
    let mesh: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), MESH_NAMESPACE);
    let installed = mesh.get_opt(MESH_CONFIG).await?.is_some();
    if !publishes_into(installed, &cached) {
        return Ok(Action::await_change());
    }
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let Some(ns) = namespaces.get_opt(name).await? else {
        return Ok(Action::await_change());
    };
    let root = ensure_root(&ctx.client).await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), name);
    let existing = config_maps.get_opt(ROOT_CONFIG_MAP).await?;
    match decide(installed, &ns, &root, existing.as_ref()) {
        Decision::Skip | Decision::InSync => {}
        Decision::Create(cm) => match config_maps.create(&PostParams::default(), &cm).await {
            Ok(_) => {}
            // Created meanwhile: compare again. Terminating meanwhile: nothing to do.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                return Ok(Action::requeue(Duration::from_millis(100)));
            }
            Err(kube::Error::Api(s)) if s.code == 403 => {}
            Err(e) => return Err(e.into()),
        },
        Decision::Patch(patch) => {
            match config_maps
                .patch(
                    ROOT_CONFIG_MAP,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    return Ok(Action::requeue(Duration::from_millis(100)));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

    fn ns(name: &str) -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": name}, "status": {"phase": "Active"}}))
            .expect("namespace")
    }

    fn cm(data: Value, labels: Value) -> ConfigMap {
        serde_json::from_value(json!({
            "metadata": {"name": ROOT_CONFIG_MAP, "namespace": "shop", "labels": labels},
            "data": data
        }))
        .expect("configmap")
    }

    #[test]
    fn publishes_only_into_active_namespaces_of_an_installed_mesh() {
        assert_eq!(decide(false, &ns("shop"), PEM, None), Decision::Skip);
        for ignored in ["kube-system", "kube-public", "kube-node-lease"] {
            assert_eq!(decide(true, &ns(ignored), PEM, None), Decision::Skip);
        }
        let mut terminating = ns("shop");
        terminating.status = serde_json::from_value(json!({"phase": "Terminating"})).ok();
        assert_eq!(decide(true, &terminating, PEM, None), Decision::Skip);

        let created = decide(true, &ns("shop"), PEM, None);
        let Decision::Create(cm) = created else {
            panic!("expected a create, got {created:?}");
        };
        assert_eq!(
            serde_json::to_value(&*cm).expect("json"),
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "istio-ca-root-cert", "namespace": "shop",
                             "labels": {"istio.io/config": "true"}},
                "data": {"root-cert.pem": PEM}
            })
        );
        assert!(matches!(
            decide(true, &ns(MESH_NAMESPACE), PEM, None),
            Decision::Create(_)
        ));
    }

    #[test]
    fn stale_copies_are_patched_and_current_ones_left_alone() {
        let current = cm(json!({ROOT_KEY: PEM}), json!({CONFIG_LABEL: "true"}));
        assert_eq!(
            decide(true, &ns("shop"), PEM, Some(&current)),
            Decision::InSync
        );
        let stale = cm(json!({ROOT_KEY: "old", "extra": "x"}), json!({"team": "a"}));
        assert_eq!(
            decide(true, &ns("shop"), PEM, Some(&stale)),
            Decision::Patch(json!({
                "metadata": {"labels": {"istio.io/config": "true"}},
                "data": {"root-cert.pem": PEM, "extra": null}
            }))
        );
        let unlabelled = cm(json!({ROOT_KEY: PEM}), json!(null));
        assert!(matches!(
            decide(true, &ns("shop"), PEM, Some(&unlabelled)),
            Decision::Patch(_)
        ));
    }

    #[test]
    fn the_published_root_wins_then_the_stored_ca() {
        let published = cm(json!({ROOT_KEY: PEM}), json!(null));
        let secret = ca_secret("stored-cert", "key");
        assert_eq!(
            root_source(Some(&published), Some(&secret)),
            RootSource::Published(PEM.into())
        );
        let empty = cm(json!({ROOT_KEY: ""}), json!(null));
        assert_eq!(
            root_source(Some(&empty), Some(&secret)),
            RootSource::Stored("stored-cert".into())
        );
        assert_eq!(root_source(None, None), RootSource::Generate);
        let mut broken = secret.clone();
        broken.data = None;
        assert_eq!(root_source(None, Some(&broken)), RootSource::Broken);
    }

    #[test]
    fn generated_roots_are_ca_certificates_with_their_keys() {
        // A leap day: ten years later there is none, which must not break generation.
        let leap: Timestamp = "2028-02-29T12:00:00Z".parse().expect("timestamp");
        let (cert, key) = generate_root(leap).expect("generated");
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        let key_pair = rcgen::KeyPair::from_pem(&key).expect("key parses");
        // The certificate carries the key's public half and the organization.
        let body: String = cert.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body)
            .expect("base64");
        let public = key_pair.public_key_raw();
        assert!(der.windows(public.len()).any(|w| w == public));
        assert!(der.windows(13).any(|w| w == b"cluster.local"));
        // Two roots are different CAs.
        let (other, _) = generate_root(leap).expect("generated");
        assert_ne!(cert, other);

        let secret = ca_secret(&cert, &key);
        assert_eq!(secret.type_.as_deref(), Some("istio.io/ca-root"));
        assert_eq!(root_source(None, Some(&secret)), RootSource::Stored(cert));
    }
}
