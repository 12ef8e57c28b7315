//! Replies: objects and lists as JSON or as a `meta.k8s.io/v1` Table, with
//! `Warning` headers.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::{Value, json};

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
    }
}

/// The Table of `objects` (all of kind `res.kind`), with `metadata.resourceVersion`.
pub fn table(
    res: &ResourceInfo,
    objects: &[Value],
    include: IncludeObject,
    now: Timestamp,
    resource_version: &str,
) -> Value {
    let mut table = generic_table(objects, include);
    if res.group.is_empty() && res.kind == "Pod" {
        let pods: Vec<k8s_openapi::api::core::v1::Pod> = objects
            .iter()
            .filter_map(|o| serde_json::from_value(o.clone()).ok())
            .collect();
        if pods.len() == objects.len() {
            let mut t = api::table::pod_table(&pods, now);
            for (row, obj) in t.rows.iter_mut().zip(objects) {
                row.object = row_object(obj, include);
            }
            table = serde_json::to_value(&t).unwrap_or(table);
        }
    }
    if let Some(obj) = table.as_object_mut() {
        obj.insert(
            "metadata".to_owned(),
            json!({"resourceVersion": resource_version}),
        );
    }
    table
}

/// Name + Created At, Kubernetes' table for kinds without their own printer.
fn generic_table(objects: &[Value], include: IncludeObject) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": [
                crate::objects::name(o).unwrap_or(""),
                crate::objects::meta_str(o, "creationTimestamp").unwrap_or(""),
            ]});
            if let Some(obj) = row_object(o, include) {
                row["object"] = obj;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": [
            {"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0},
            {"name": "Created At", "type": "date", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0},
        ],
        "rows": rows,
    })
}

/// What a row carries: nothing, `PartialObjectMetadata`, or the whole object.
pub fn row_object(object: &Value, include: IncludeObject) -> Option<Value> {
    match include {
        IncludeObject::None => None,
        IncludeObject::Object => Some(object.clone()),
        IncludeObject::Metadata => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
        })),
    }
}
