//! Request bodies: JSON decoding, the `kind`/`apiVersion` check, and
//! `fieldValidation` (unknown fields rejected, warned about or dropped).

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Endpoints, Event, Namespace, Node, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::admission::typed;
use crate::resources::ResourceInfo;
use crate::status::{ApiResult, bad_request, internal, unsupported_media_type};

/// The `fieldValidation` query parameter (default `Warn`, as in Kubernetes 1.27+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn from_query(query: Option<&str>) -> ApiResult<FieldValidation> {
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if k == "fieldValidation" {
                return match v.as_ref() {
                    "Ignore" => Ok(FieldValidation::Ignore),
                    "Warn" | "" => Ok(FieldValidation::Warn),
                    "Strict" => Ok(FieldValidation::Strict),
                    other => Err(bad_request(&format!(
                        "fieldValidation parameter unsupported: {other:?}; valid values are: Ignore, Warn, Strict"
                    ))),
                };
            }
        }
        Ok(FieldValidation::Warn)
    }
}

/// Parses a create/update body (`application/json`, what kubectl and client
/// libraries send).
pub fn parse_object(content_type: Option<&str>, body: &[u8]) -> ApiResult<Value> {
    let media = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if !media.is_empty() && media != "application/json" && media != "*/*" {
        return Err(unsupported_media_type(&media, &["application/json"]));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        bad_request(&format!(
            "the object provided is not valid JSON: {}",
            one_line(&e.to_string())
        ))
    })?;
    if !value.is_object() {
        return Err(bad_request(
            "the object provided is unrecognized (must be of type Object)",
        ));
    }
    Ok(value)
}

/// Checks the body's `kind` and `apiVersion` against the endpoint (missing ones are
/// filled in).
pub fn check_type(res: &ResourceInfo, value: &mut Value, expect_kind: &str) -> ApiResult<()> {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !api_version.is_empty() && api_version != res.api_version() {
        return Err(bad_request(&format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            res.api_version()
        )));
    }
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    if !kind.is_empty() && kind != expect_kind {
        return Err(bad_request(&format!(
            "the kind in the data ({kind}) does not match the expected kind ({expect_kind})"
        )));
    }
    if let Some(obj) = value.as_object_mut() {
        obj.insert("kind".to_owned(), Value::String(expect_kind.to_owned()));
        obj.insert(
            "apiVersion".to_owned(),
            Value::String(res.api_version().to_owned()),
        );
    }
    Ok(())
}

/// The unknown fields of `value` (paths like `spec.containers[0].imagee`).
pub fn unknown_fields(res: &ResourceInfo, value: &Value) -> ApiResult<Vec<String>> {
    if matches!((res.group, res.kind), ("", "Pod" | "ConfigMap" | "Secret")) {
        // The manifest decoder knows these kinds field by field; other decode errors
        // (wrong types) are left to the typed decoding that follows.
        let text = serde_json::to_string(value).map_err(|e| internal(&e.to_string()))?;
        return Ok(match api::decode::decode_manifests("request", &text) {
            Err(api::decode::DecodeError::UnknownFields { fields, .. }) => fields,
            _ => Vec::new(),
        });
    }
    // Other kinds: what a typed round trip drops is what the schema lacks.
    let known = match (res.group, res.kind) {
        ("", "Endpoints") => round_trip::<Endpoints>(res, value)?,
        ("", "Event") => round_trip::<Event>(res, value)?,
        ("", "Namespace") => round_trip::<Namespace>(res, value)?,
        ("", "Node") => round_trip::<Node>(res, value)?,
        ("", "Service") => round_trip::<Service>(res, value)?,
        ("", "ServiceAccount") => round_trip::<ServiceAccount>(res, value)?,
        ("apps", "Deployment") => round_trip::<Deployment>(res, value)?,
        ("apps", "ReplicaSet") => round_trip::<ReplicaSet>(res, value)?,
        ("batch", "Job") => round_trip::<Job>(res, value)?,
        ("discovery.k8s.io", "EndpointSlice") => round_trip::<EndpointSlice>(res, value)?,
        _ => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    diff_keys(value, &known, "", &mut out);
    Ok(out)
}

fn round_trip<T: DeserializeOwned + Serialize>(
    res: &ResourceInfo,
    value: &Value,
) -> ApiResult<Value> {
    let typed: T = typed(res, value)?;
    serde_json::to_value(&typed).map_err(|e| internal(&e.to_string()))
}

/// Keys present in `input` but not in `known`, recursively (nulls do not count:
/// they decode to "unset").
fn diff_keys(input: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (input, known) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                if v.is_null() {
                    continue;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(kv) => diff_keys(v, kv, &p, out),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_keys(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Applies the `fieldValidation` directive: `Strict` fails with Kubernetes'
/// `strict decoding error`, `Warn` returns one warning per field.
pub fn check_fields(
    res: &ResourceInfo,
    value: &Value,
    mode: FieldValidation,
) -> ApiResult<Vec<String>> {
    if mode == FieldValidation::Ignore {
        return Ok(Vec::new());
    }
    let unknown = unknown_fields(res, value)?;
    let messages: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if mode == FieldValidation::Strict && !messages.is_empty() {
        return Err(bad_request(&format!(
            "strict decoding error: {}",
            messages.join(", ")
        )));
    }
    Ok(messages)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::lookup;
    use serde_json::json;

    #[test]
    fn unknown_fields_of_a_deployment() {
        let res = lookup("apps", "v1", "deployments").expect("served");
        let d = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x","labels":{"a":"b"}},
            "spec":{"replica":3,"selector":{"matchLabels":{"a":"b"}},
                    "template":{"metadata":{"labels":{"a":"b"}},
                                "spec":{"containers":[{"name":"c","image":"i","imagePullPolicy":null,"bogus":1}]}}}});
        assert_eq!(
            unknown_fields(res, &d).expect("decodes"),
            vec![
                "spec.replica".to_owned(),
                "spec.template.spec.containers[0].bogus".to_owned()
            ]
        );
        let err = check_fields(res, &d, FieldValidation::Strict).expect_err("strict");
        assert_eq!(err.code(), 400);
        assert_eq!(
            err.message(),
            "strict decoding error: unknown field \"spec.replica\", unknown field \"spec.template.spec.containers[0].bogus\""
        );
        assert_eq!(
            check_fields(res, &d, FieldValidation::Warn)
                .expect("warn")
                .len(),
            2
        );
        assert!(
            check_fields(res, &d, FieldValidation::Ignore)
                .expect("ignore")
                .is_empty()
        );
    }

    #[test]
    fn unknown_fields_of_a_pod() {
        let res = lookup("", "v1", "pods").expect("served");
        let p = json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"},
            "spec":{"containers":[{"name":"c","image":"i"}],"foo":true}});
        assert_eq!(
            unknown_fields(res, &p).expect("decodes"),
            vec!["spec.foo".to_owned()]
        );
    }

    #[test]
    fn kind_and_version_must_match_the_endpoint() {
        let res = lookup("", "v1", "pods").expect("served");
        let mut v = json!({"apiVersion":"apps/v1","kind":"Pod"});
        assert_eq!(check_type(res, &mut v, "Pod").expect_err("bad").code(), 400);
        let mut v = json!({"metadata":{"name":"x"}});
        check_type(res, &mut v, "Pod").expect("filled in");
        assert_eq!(v["kind"], "Pod");
        assert_eq!(v["apiVersion"], "v1");
    }
}
