//! Discovery (`/api`, `/apis`, per-group-version resource lists; legacy or
//! aggregated by `Accept`), `/version`, and the OpenAPI v3 stubs that let
//! `kubectl apply` validate on the server.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::render::json_reply;
use crate::resources::{
    API_VERSIONS, GROUPS, ResourceInfo, in_group_version, subresource_group_version,
};
use crate::state::AppState;
use crate::status::{ApiResult, no_route};

/// The Kubernetes version this server reports.
pub const MAJOR: &str = "1";
pub const MINOR: &str = "33";
pub const GIT_VERSION: &str = "v1.33.0";

/// `GET /version`.
pub fn version() -> Response {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    json_reply(
        StatusCode::OK,
        &json!({
            "major": MAJOR,
            "minor": MINOR,
            "emulationMajor": MAJOR,
            "emulationMinor": MINOR,
            "minCompatibilityMajor": "1",
            "minCompatibilityMinor": "32",
            "gitVersion": GIT_VERSION,
            "gitCommit": format!("tandem-{}", env!("CARGO_PKG_VERSION")),
            "gitTreeState": "clean",
            "buildDate": "2025-04-23T00:00:00Z",
            "goVersion": "go1.24.2",
            "compiler": "gc",
            "platform": format!("linux/{arch}"),
        }),
        &[],
    )
}

/// The aggregated-discovery version a client accepts (`v2` or `v2beta1`), if any.
fn aggregated_version(accept: Option<&str>) -> Option<&'static str> {
    let accept = accept?;
    let mut best = None;
    for range in accept.split(',') {
        let params: Vec<(&str, &str)> = range
            .split(';')
            .skip(1)
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let has = |k: &str, v: &str| params.iter().any(|(pk, pv)| *pk == k && *pv == v);
        if has("as", "APIGroupDiscoveryList") && has("g", "apidiscovery.k8s.io") {
            if has("v", "v2") {
                return Some("v2");
            }
            if has("v", "v2beta1") {
                best = Some("v2beta1");
            }
        }
    }
    best
}

fn aggregated_reply(version: &str, groups: Vec<Value>) -> Response {
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": groups,
    });
    let mut response = json_reply(StatusCode::OK, &body, &[]);
    let ct = format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    if let Ok(v) = HeaderValue::from_str(&ct) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    response
}

fn aggregated_group(group: &str) -> Value {
    let versions: Vec<Value> = API_VERSIONS
        .iter()
        .filter(|(g, _, _)| *g == group)
        .map(|(g, v, _)| {
            let resources: Vec<Value> = in_group_version(g, v).map(aggregated_resource).collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
}

fn aggregated_resource(r: &ResourceInfo) -> Value {
    let kind = |k: &str| json!({"group": r.group, "version": r.version, "kind": k});
    let mut v = json!({
        "resource": r.plural,
        "responseKind": kind(r.kind),
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    if !r.subresources.is_empty() {
        v["subresources"] = r
            .subresources
            .iter()
            .map(|s| {
                let (group, version) = subresource_group_version(r, s);
                json!({
                    "subresource": s.name,
                    "responseKind": {"group": group, "version": version, "kind": s.kind},
                    "verbs": s.verbs,
                })
            })
            .collect();
    }
    v
}

/// `GET /api`.
pub fn api_root(state: &AppState, accept: Option<&str>) -> Response {
    if let Some(version) = aggregated_version(accept) {
        return aggregated_reply(version, vec![aggregated_group("")]);
    }
    json_reply(
        StatusCode::OK,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": state.config.server_address}
            ],
        }),
        &[],
    )
}

fn group_entry(group: &str) -> Value {
    let versions: Vec<Value> = API_VERSIONS
        .iter()
        .filter(|(g, _, _)| *g == group)
        .map(|(_, v, gv)| json!({"groupVersion": gv, "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

/// `GET /apis`.
pub fn apis_root(accept: Option<&str>) -> Response {
    if let Some(version) = aggregated_version(accept) {
        return aggregated_reply(
            version,
            GROUPS.iter().map(|g| aggregated_group(g)).collect(),
        );
    }
    let groups: Vec<Value> = GROUPS.iter().map(|g| group_entry(g)).collect();
    json_reply(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
        &[],
    )
}

/// `GET /apis/{group}`.
pub fn group(group: &str) -> ApiResult<Response> {
    if !GROUPS.contains(&group) {
        return Err(no_route());
    }
    let mut body = group_entry(group);
    body["kind"] = json!("APIGroup");
    body["apiVersion"] = json!("v1");
    Ok(json_reply(StatusCode::OK, &body, &[]))
}

/// `GET /api/v1`, `GET /apis/{group}/{version}`: the legacy `APIResourceList`.
pub fn resource_list(group: &str, version: &str) -> ApiResult<Response> {
    let Some((_, _, gv)) = API_VERSIONS
        .iter()
        .find(|(g, v, _)| *g == group && *v == version)
    else {
        return Err(no_route());
    };
    let mut resources = Vec::new();
    for r in in_group_version(group, version) {
        let mut v = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            v["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            v["categories"] = json!(r.categories);
        }
        resources.push(v);
        for s in r.subresources {
            let mut sub = json!({
                "name": format!("{}/{}", r.plural, s.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": s.kind,
                "verbs": s.verbs,
            });
            let (group, version) = subresource_group_version(r, s);
            if (group, version) != (r.group, r.version) {
                sub["group"] = json!(group);
                sub["version"] = json!(version);
            }
            resources.push(sub);
        }
    }
    Ok(json_reply(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
        &[],
    ))
}

// ---------------------------------------------------------------------------
// OpenAPI v3

/// The `openapi/v3` path of a group-version: `api/v1`, `apis/apps/v1`.
fn openapi_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The per-group-version document: one PATCH operation per kind, carrying the
/// kind's GVK and a `fieldValidation` parameter. That is what kubectl checks before
/// leaving validation to the server. No request bodies on purpose: with them,
/// kubectl would try to compute apply patches from these (schema-less) documents.
pub fn openapi_document(group: &str, version: &str) -> Option<Value> {
    API_VERSIONS
        .iter()
        .find(|(g, v, _)| *g == group && *v == version)?;
    let mut paths = serde_json::Map::new();
    for r in in_group_version(group, version) {
        let root = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let path = if r.namespaced {
            format!("{root}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{root}/{}/{{name}}", r.plural)
        };
        paths.insert(
            path,
            json!({"patch": {
                "operationId": format!("patch{}{}", capitalize(version), r.kind),
                "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
                "x-kubernetes-action": "patch",
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                    {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                    {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}},
                ],
                "responses": {},
            }}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A content hash of a document (upper-case hex SHA-512, like Kubernetes' etags).
fn hash(doc: &Value) -> String {
    let bytes = serde_json::to_vec(doc).unwrap_or_default();
    ring::digest::digest(&ring::digest::SHA512, &bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// `GET /openapi/v3`: the index of per-group-version documents.
pub fn openapi_root() -> Response {
    let mut paths = serde_json::Map::new();
    for (g, v, _) in API_VERSIONS {
        if let Some(doc) = openapi_document(g, v) {
            let p = openapi_path(g, v);
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash(&doc))}),
            );
        }
    }
    json_reply(StatusCode::OK, &json!({"paths": paths}), &[])
}

/// `GET /openapi/v3/{api/v1|apis/<group>/<version>}`.
pub fn openapi_group_version(path: &str) -> ApiResult<Response> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version) = match segments.as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return Err(no_route()),
    };
    let doc = openapi_document(group, version).ok_or_else(no_route)?;
    let etag = format!("\"{}\"", hash(&doc));
    let mut response = json_reply(StatusCode::OK, &doc, &[]);
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    Ok(response)
}

/// `/healthz`, `/livez`, `/readyz`.
pub fn health() -> Response {
    let mut response = (StatusCode::OK, "ok").into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
