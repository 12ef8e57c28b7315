//! Service account tokens: the `token` subresource of ServiceAccounts
//! (`POST …/serviceaccounts/{name}/token`, an `authentication.k8s.io/v1`
//! `TokenRequest`) answered with a JWT signed ES256 by the cluster's service-account
//! key, carrying the claims Kubernetes puts in bound tokens.

use std::fmt;

use axum::http::{StatusCode, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Map, Value, json};

use api::validation::{FieldError, FieldPath, ValidationError};

use crate::body::parse_object;
use crate::crud::{Request, Target};
use crate::objects::{self, from_kv};
use crate::render::json_reply;
use crate::resources::{ResourceInfo, lookup};
use crate::state::AppState;
use crate::status::{ApiError, ApiResult, bad_request, failure, internal, invalid, not_found};

/// The issuer of every token (the API server's default `--service-account-issuer`).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// `spec.expirationSeconds` when the request has none.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// Kubernetes refuses tokens shorter than ten minutes.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// Kubernetes refuses tokens longer than 2^32 seconds.
pub const MAX_EXPIRATION_SECONDS: i64 = u32::MAX as i64;

const API_VERSION: &str = "authentication.k8s.io/v1";
const KIND: &str = "TokenRequest";
const GROUP: &str = "authentication.k8s.io";

/// Why a key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no secure random numbers")]
    Random,
    #[error("service account key: {0}")]
    Key(String),
    #[error("signing: {0}")]
    Sign(String),
}

/// The service-account signing key (ECDSA P-256).
pub struct Signer {
    pair: EcdsaKeyPair,
    key_id: String,
    rng: SystemRandom,
}

impl fmt::Debug for Signer {
    // Never print the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A new key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn generate_pem() -> Result<String, TokenError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| TokenError::Random)?;
        Ok(pem("PRIVATE KEY", doc.as_ref()))
    }

    /// The signer of a PKCS#8 PEM P-256 key.
    pub fn from_pem(pem: &str) -> Result<Signer, TokenError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| TokenError::Key(e.to_string()))?;
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| TokenError::Key(e.to_string()))?;
        let key_id = key_id(pair.public_key().as_ref());
        Ok(Signer { pair, key_id, rng })
    }

    /// A signer with a fresh key that lives as long as the process (servers without
    /// a data directory: tests, embedding).
    pub fn ephemeral() -> Result<Signer, TokenError> {
        Signer::from_pem(&Signer::generate_pem()?)
    }

    /// The `kid` of the tokens: base64url of the SHA-256 of the public key's
    /// SubjectPublicKeyInfo, as Kubernetes computes it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key as an uncompressed P-256 point (65 bytes), for verification.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// The compact JWS of `claims`.
    pub fn sign(&self, claims: &Value) -> Result<String, TokenError> {
        let input = signing_input(&header(&self.key_id), claims);
        let signature = self
            .pair
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| TokenError::Sign("ECDSA signing failed".into()))?;
        Ok(assemble(&input, signature.as_ref()))
    }
}

/// PEM armour with 64-character lines.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER SubjectPublicKeyInfo of an uncompressed P-256 point: the fixed
/// `id-ecPublicKey`/`prime256v1` prefix, then the point as a BIT STRING.
fn p256_spki(point: &[u8]) -> Vec<u8> {
    const PREFIX: [u8; 26] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(point);
    der
}

/// The key id of a P-256 public key (uncompressed point).
pub fn key_id(public_key: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, &p256_spki(public_key));
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// The JOSE header of a token.
pub fn header(key_id: &str) -> Value {
    json!({"alg": "ES256", "kid": key_id})
}

/// `base64url(header) "." base64url(claims)`: what the signature covers.
pub fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// The compact serialization: the signing input, ".", base64url(signature).
pub fn assemble(signing_input: &str, signature: &[u8]) -> String {
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// A named object with its uid, as the `kubernetes.io` claim records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub name: String,
    /// Empty when unknown (then omitted).
    pub uid: String,
}

impl ObjectRef {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        if !self.uid.is_empty() {
            m.insert("uid".into(), json!(self.uid));
        }
        Value::Object(m)
    }
}

/// Everything a token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub namespace: String,
    pub service_account: ObjectRef,
    /// Already defaulted (see [`audiences_or_default`]).
    pub audiences: Vec<String>,
    /// Unix seconds.
    pub issued_at: i64,
    pub expiration_seconds: i64,
    /// The pod the token is bound to, and its node.
    pub pod: Option<ObjectRef>,
    pub node: Option<ObjectRef>,
    /// The token's unique id (`jti`).
    pub id: String,
}

/// The requested audiences, or the API server's own (the issuer) when none.
pub fn audiences_or_default(requested: &[String]) -> Vec<String> {
    if requested.is_empty() {
        vec![ISSUER.to_owned()]
    } else {
        requested.to_vec()
    }
}

/// The JWT claims Kubernetes issues for a grant.
pub fn claims(grant: &Grant) -> Value {
    let mut k8s = Map::new();
    k8s.insert("namespace".into(), json!(grant.namespace));
    if let Some(node) = &grant.node {
        k8s.insert("node".into(), node.to_json());
    }
    if let Some(pod) = &grant.pod {
        k8s.insert("pod".into(), pod.to_json());
    }
    k8s.insert("serviceaccount".into(), grant.service_account.to_json());
    json!({
        "aud": grant.audiences,
        "exp": grant.issued_at + grant.expiration_seconds,
        "iat": grant.issued_at,
        "iss": ISSUER,
        "jti": grant.id,
        "kubernetes.io": k8s,
        "nbf": grant.issued_at,
        "sub": format!("system:serviceaccount:{}:{}", grant.namespace, grant.service_account.name),
    })
}

/// Kubernetes' `ValidateTokenRequest` for the expiration.
pub fn validate_expiration(seconds: i64) -> Vec<FieldError> {
    let path = FieldPath::new("spec").child("expirationSeconds");
    let mut errors = Vec::new();
    if seconds < MIN_EXPIRATION_SECONDS {
        errors.push(FieldError::invalid(
            &path,
            seconds,
            "may not specify a duration less than 10 minutes",
        ));
    }
    if seconds > MAX_EXPIRATION_SECONDS {
        errors.push(FieldError::invalid(
            &path,
            seconds,
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    errors
}

/// The parts of a `TokenRequest` body the server reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenRequestSpec {
    pub audiences: Vec<String>,
    pub expiration_seconds: Option<i64>,
    pub bound: Option<BoundRef>,
}

/// `spec.boundObjectRef`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoundRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

fn undecodable(why: &str) -> ApiError {
    bad_request(&format!(
        "TokenRequest in version \"v1\" cannot be handled as a TokenRequest: {why}"
    ))
}

fn opt_str(v: Option<&Value>, field: &str) -> ApiResult<String> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(undecodable(&format!("{field}: expected a string"))),
    }
}

/// Reads the spec of a `TokenRequest` body (a missing spec is an empty one).
pub fn parse_spec(body: &Value) -> ApiResult<TokenRequestSpec> {
    let spec = match body.get("spec") {
        None | Some(Value::Null) => return Ok(TokenRequestSpec::default()),
        Some(Value::Object(s)) => s,
        Some(_) => return Err(undecodable("spec: expected an object")),
    };
    let audiences = match spec.get("audiences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|a| {
                a.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| undecodable("spec.audiences: expected strings"))
            })
            .collect::<ApiResult<_>>()?,
        Some(_) => return Err(undecodable("spec.audiences: expected an array")),
    };
    let expiration_seconds = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or_else(|| undecodable("spec.expirationSeconds: expected an integer"))?,
        ),
    };
    let bound = match spec.get("boundObjectRef") {
        None | Some(Value::Null) => None,
        Some(r @ Value::Object(_)) => Some(BoundRef {
            api_version: opt_str(r.get("apiVersion"), "spec.boundObjectRef.apiVersion")?,
            kind: opt_str(r.get("kind"), "spec.boundObjectRef.kind")?,
            name: opt_str(r.get("name"), "spec.boundObjectRef.name")?,
            uid: opt_str(r.get("uid"), "spec.boundObjectRef.uid")?,
        }),
        Some(_) => return Err(undecodable("spec.boundObjectRef: expected an object")),
    };
    Ok(TokenRequestSpec {
        audiences,
        expiration_seconds,
        bound,
    })
}

fn token_invalid(name: &str, errors: Vec<FieldError>) -> ApiError {
    let err = ValidationError::new(&format!("{KIND}.{GROUP}"), name, errors);
    let sa = service_accounts();
    let mut e = invalid(sa, &err);
    if let Some(d) = e.0.details.as_mut() {
        d.group = Some(GROUP.to_owned());
        d.kind = Some(KIND.to_owned());
    }
    e
}

fn service_accounts() -> &'static ResourceInfo {
    lookup("", "v1", "serviceaccounts").expect("serviceaccounts are always served")
}

async fn get_object(
    state: &AppState,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
) -> ApiResult<Option<Value>> {
    let res = lookup("", "v1", plural).ok_or_else(|| internal("resource not served"))?;
    match state.store.get(&res.key(namespace, name)).await? {
        Some(kv) => Ok(Some(from_kv(res, &kv)?)),
        None => Ok(None),
    }
}

/// `POST …/namespaces/{ns}/serviceaccounts/{name}/token`.
pub async fn create(state: &AppState, t: &Target, req: &Request) -> ApiResult<Response> {
    req.reject_dry_run()?;
    let namespace = t.namespace.as_deref().unwrap_or("");
    let name = t.name.as_deref().unwrap_or("");
    let content_type = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let body = parse_object(content_type, &req.body)?;
    let api_version = body.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if !api_version.is_empty() && api_version != API_VERSION {
        return Err(bad_request(&format!(
            "the API version in the data ({api_version}) does not match the expected API version ({API_VERSION})"
        )));
    }
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or("");
    if !kind.is_empty() && kind != KIND {
        return Err(bad_request(&format!(
            "the kind in the data ({kind}) does not match the expected kind ({KIND})"
        )));
    }
    let spec = parse_spec(&body)?;
    let expiration_seconds = spec
        .expiration_seconds
        .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
    let mut errors = validate_expiration(expiration_seconds);
    let meta = FieldPath::new("metadata");
    if let Some(n) = objects::name(&body).filter(|n| !n.is_empty() && *n != name) {
        errors.push(FieldError::invalid(
            &meta.child("name"),
            n,
            "must match the service account name if specified",
        ));
    }
    if let Some(n) = objects::namespace(&body).filter(|n| !n.is_empty() && *n != namespace) {
        errors.push(FieldError::invalid(
            &meta.child("namespace"),
            n,
            "must match the service account namespace if specified",
        ));
    }
    if !errors.is_empty() {
        return Err(token_invalid(name, errors));
    }

    let account = get_object(state, "serviceaccounts", Some(namespace), name)
        .await?
        .ok_or_else(|| not_found(service_accounts(), name))?;
    let (pod, node) = match &spec.bound {
        None => (None, None),
        Some(bound) => bind_pod(state, namespace, name, bound).await?,
    };

    let signer = state
        .token_signer
        .as_deref()
        .ok_or_else(|| internal("the server has no service account signing key"))?;
    let now = state.config.now();
    let audiences = audiences_or_default(&spec.audiences);
    let grant = Grant {
        namespace: namespace.to_owned(),
        service_account: ObjectRef {
            name: name.to_owned(),
            uid: objects::uid(&account).unwrap_or("").to_owned(),
        },
        audiences: audiences.clone(),
        issued_at: now.as_second(),
        expiration_seconds,
        pod,
        node,
        id: objects::new_uid(),
    };
    let token = signer
        .sign(&claims(&grant))
        .map_err(|e| internal(&e.to_string()))?;
    let expires = now
        .checked_add(jiff::SignedDuration::from_secs(expiration_seconds))
        .map_err(|e| internal(&e.to_string()))?;

    let mut metadata = body
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    metadata.insert("name".into(), json!(name));
    metadata.insert("namespace".into(), json!(namespace));
    metadata.entry("creationTimestamp").or_insert(Value::Null);
    let bound_ref = spec.bound.as_ref().map_or(Value::Null, |b| {
        let mut m = Map::new();
        for (k, v) in [
            ("kind", &b.kind),
            ("apiVersion", &b.api_version),
            ("name", &b.name),
            ("uid", &b.uid),
        ] {
            if !v.is_empty() {
                m.insert(k.into(), json!(v));
            }
        }
        Value::Object(m)
    });
    let reply = json!({
        "kind": KIND,
        "apiVersion": API_VERSION,
        "metadata": metadata,
        "spec": {
            "audiences": audiences,
            "expirationSeconds": expiration_seconds,
            "boundObjectRef": bound_ref,
        },
        "status": {
            "token": token,
            "expirationTimestamp": objects::timestamp(expires),
        },
    });
    Ok(json_reply(StatusCode::CREATED, &reply, &[]))
}

/// Checks a `boundObjectRef` as Kubernetes does and returns the pod and node refs the
/// token records. Only pods can be bound here.
async fn bind_pod(
    state: &AppState,
    namespace: &str,
    account: &str,
    bound: &BoundRef,
) -> ApiResult<(Option<ObjectRef>, Option<ObjectRef>)> {
    let (group, version) = match bound.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", bound.api_version.as_str()),
    };
    if !(group.is_empty() && matches!(version, "" | "v1") && bound.kind == "Pod") {
        return Err(bad_request(&format!(
            "cannot bind token to object of type {group}/{version}, Kind={}",
            bound.kind
        )));
    }
    let pods = lookup("", "v1", "pods").ok_or_else(|| internal("pods are not served"))?;
    let pod = get_object(state, "pods", Some(namespace), &bound.name)
        .await?
        .ok_or_else(|| not_found(pods, &bound.name))?;
    let pod_account = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    if pod_account != account {
        return Err(bad_request(&format!(
            "cannot bind token for serviceaccount {account:?} to pod running with different serviceaccount name."
        )));
    }
    let uid = objects::uid(&pod).unwrap_or("").to_owned();
    if !bound.uid.is_empty() && bound.uid != uid {
        return Err(failure(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on Pod {:?}: the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
                bound.name, bound.uid
            ),
            Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::StatusDetails {
                    name: Some(bound.name.clone()),
                    kind: Some("Pod".to_owned()),
                    ..Default::default()
                },
            ),
        ));
    }
    // The node is recorded by name even when its object cannot be read.
    let node = match pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        Some(node_name) => {
            let node_uid = get_object(state, "nodes", None, node_name)
                .await
                .ok()
                .flatten()
                .and_then(|n| objects::uid(&n).map(str::to_owned))
                .unwrap_or_default();
            Some(ObjectRef {
                name: node_name.to_owned(),
                uid: node_uid,
            })
        }
        None => None,
    };
    Ok((
        Some(ObjectRef {
            name: bound.name.clone(),
            uid,
        }),
        node,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    fn grant() -> Grant {
        Grant {
            namespace: "shop".into(),
            service_account: ObjectRef {
                name: "web".into(),
                uid: "sa-uid".into(),
            },
            audiences: vec!["istio-ca".into()],
            issued_at: 1_700_000_000,
            expiration_seconds: 43200,
            pod: Some(ObjectRef {
                name: "web-1".into(),
                uid: "pod-uid".into(),
            }),
            node: Some(ObjectRef {
                name: "n1".into(),
                uid: String::new(),
            }),
            id: "jti-1".into(),
        }
    }

    fn decode_part(part: &str) -> Value {
        let bytes = URL_SAFE_NO_PAD.decode(part).expect("base64url");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[test]
    fn claims_are_those_kubernetes_issues_for_a_bound_token() {
        assert_eq!(
            claims(&grant()),
            json!({
                "aud": ["istio-ca"],
                "exp": 1_700_043_200,
                "iat": 1_700_000_000,
                "iss": "https://kubernetes.default.svc.cluster.local",
                "jti": "jti-1",
                "kubernetes.io": {
                    "namespace": "shop",
                    "node": {"name": "n1"},
                    "pod": {"name": "web-1", "uid": "pod-uid"},
                    "serviceaccount": {"name": "web", "uid": "sa-uid"}
                },
                "nbf": 1_700_000_000,
                "sub": "system:serviceaccount:shop:web"
            })
        );
        let unbound = Grant {
            pod: None,
            node: None,
            audiences: audiences_or_default(&[]),
            ..grant()
        };
        let c = claims(&unbound);
        assert_eq!(c["aud"], json!([ISSUER]));
        assert!(c["kubernetes.io"].get("pod").is_none());
        assert!(c["kubernetes.io"].get("node").is_none());
    }

    #[test]
    fn signed_tokens_verify_with_the_public_key() {
        let signer = Signer::ephemeral().expect("key");
        let token = signer.sign(&claims(&grant())).expect("signed");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            decode_part(parts[0]),
            json!({"alg": "ES256", "kid": signer.key_id()})
        );
        assert_eq!(decode_part(parts[1]), claims(&grant()));
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("signature");
        assert_eq!(signature.len(), 64, "JWS ES256 is r||s");
        let input = format!("{}.{}", parts[0], parts[1]);
        let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, signer.public_key());
        key.verify(input.as_bytes(), &signature)
            .expect("signature verifies");
        // A changed payload does not.
        let forged = signing_input(
            &header(signer.key_id()),
            &json!({"sub": "system:serviceaccount:kube-system:admin"}),
        );
        assert!(key.verify(forged.as_bytes(), &signature).is_err());
    }

    #[test]
    fn keys_round_trip_through_pem() {
        let pem = Signer::generate_pem().expect("pem");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        let a = Signer::from_pem(&pem).expect("parses");
        let b = Signer::from_pem(&pem).expect("parses again");
        assert_eq!(a.key_id(), b.key_id());
        assert_eq!(a.public_key(), b.public_key());
        // A token from one verifies with the other's key.
        let token = a.sign(&json!({"x": 1})).expect("signed");
        let (input, sig) = token.rsplit_once('.').expect("three parts");
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, b.public_key())
            .verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).expect("b64"))
            .expect("verifies");
        let other = Signer::ephemeral().expect("key");
        assert_ne!(other.key_id(), a.key_id());
        assert!(
            Signer::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
        assert!(Signer::from_pem("not a key").is_err());
    }

    #[test]
    fn key_id_hashes_the_subject_public_key_info() {
        let signer = Signer::ephemeral().expect("key");
        let spki = p256_spki(signer.public_key());
        assert_eq!(spki.len(), 91);
        let digest = ring::digest::digest(&ring::digest::SHA256, &spki);
        assert_eq!(signer.key_id(), URL_SAFE_NO_PAD.encode(digest.as_ref()));
        assert_eq!(signer.key_id().len(), 43);
    }

    #[test]
    fn expiration_limits_match_kubernetes() {
        assert!(validate_expiration(600).is_empty());
        assert!(validate_expiration(MAX_EXPIRATION_SECONDS).is_empty());
        let short = validate_expiration(599);
        assert_eq!(
            short[0].to_string(),
            "spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"
        );
        assert_eq!(validate_expiration(MAX_EXPIRATION_SECONDS + 1).len(), 1);
    }

    #[test]
    fn request_specs_parse_leniently_and_reject_wrong_types() {
        let spec = parse_spec(&json!({
            "spec": {"audiences": ["istio-ca"], "expirationSeconds": 43200,
                     "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "u"}}
        }))
        .expect("parses");
        assert_eq!(spec.audiences, ["istio-ca"]);
        assert_eq!(spec.expiration_seconds, Some(43200));
        assert_eq!(
            spec.bound,
            Some(BoundRef {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: "p".into(),
                uid: "u".into()
            })
        );
        assert_eq!(
            parse_spec(&json!({"spec": {"audiences": null}})).expect("null audiences"),
            TokenRequestSpec::default()
        );
        assert_eq!(
            parse_spec(&json!({})).expect("no spec"),
            TokenRequestSpec::default()
        );
        let err = parse_spec(&json!({"spec": {"expirationSeconds": "1h"}})).expect_err("string");
        assert_eq!(err.code(), 400);
        assert!(err.message().contains("spec.expirationSeconds"));
    }
}
