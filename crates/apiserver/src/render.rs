//! Replies: objects and lists as JSON or as a `meta.k8s.io/v1` Table, with
//! `Warning` headers.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::Value;

use crate::query::{IncludeObject, Render};
use crate::resources::ResourceInfo;

/// A JSON reply with `Warning: 299 - "…"` headers.
pub fn json_reply(code: StatusCode, value: &Value, warnings: &[String]) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = (code, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for w in warnings {
        let text = format!("299 - {}", api::validation::go_quote(w));
        if let Ok(v) = HeaderValue::from_str(&text) {
            headers.append(HeaderName::from_static("warning"), v);
        }
    }
    response
}

/// One object, as JSON or as a one-row Table.
pub fn object_reply(
    res: &ResourceInfo,
    render: Render,
    object: Value,
    code: StatusCode,
    warnings: &[String],
    now: Timestamp,
) -> Response {
    match render {
        Render::Json => json_reply(code, &object, warnings),
        Render::Metadata => json_reply(code, &partial_metadata(&object), warnings),
        Render::Table { include } => {
            let rv = crate::objects::resource_version(&object)
                .unwrap_or("")
                .to_owned();
            let table = table(res, std::slice::from_ref(&object), include, now, &rv);
            json_reply(code, &table, warnings)
        }
    }
}

/// A list, as `<Kind>List` or as a Table.
pub fn list_reply(
    res: &ResourceInfo,
    render: Render,
    items: Vec<Value>,
    revision: u64,
    now: Timestamp,
) -> Response {
    match render {
        Render::Json => json_reply(
            StatusCode::OK,
            &crate::objects::list(res, items, revision),
            &[],
        ),
        Render::Table { include } => json_reply(
            StatusCode::OK,
            &table(res, &items, include, now, &revision.to_string()),
            &[],
        ),
        Render::Metadata => json_reply(
            StatusCode::OK,
            &serde_json::json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": revision.to_string()},
                "items": items.iter().map(partial_metadata).collect::<Vec<_>>(),
            }),
            &[],
        ),
    }
}

/// An object as `PartialObjectMetadata`: its metadata only.
pub fn partial_metadata(object: &Value) -> Value {
    serde_json::json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| serde_json::json!({})),
    })
}

/// The Table of `objects` (all of kind `res.kind`), with `metadata.resourceVersion`.
pub fn table(
    res: &ResourceInfo,
    objects: &[Value],
    include: IncludeObject,
    now: Timestamp,
    resource_version: &str,
) -> Value {
    let mut table = api::table::table_for(res.kind, objects, now, include);
    table.metadata.resource_version = Some(resource_version.to_owned());
    serde_json::to_value(&table).unwrap_or(Value::Null)
}
