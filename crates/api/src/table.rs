//! The `meta.k8s.io/v1` `Table` that `kubectl get` asks the server for
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`): the pod table, and
//! [`table_for`] for every served kind.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::printer::{pod_row, pod_wide_columns};

#[cfg(test)]
mod kind_tests;
mod kinds;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Table {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ListMeta,
    pub column_definitions: Vec<TableColumnDefinition>,
    pub rows: Vec<TableRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableColumnDefinition {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub format: String,
    pub description: String,
    /// 0 for default columns, 1 for `-o wide` only.
    pub priority: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableRow {
    pub cells: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<TableRowCondition>,
    /// Usually a `PartialObjectMetadata` of the row's object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRowCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Table {
    pub fn new(column_definitions: Vec<TableColumnDefinition>, rows: Vec<TableRow>) -> Self {
        Table {
            api_version: "meta.k8s.io/v1".to_owned(),
            kind: "Table".to_owned(),
            metadata: ListMeta::default(),
            column_definitions,
            rows,
        }
    }
}

fn column(name: &str, format: &str, priority: i32, description: &str) -> TableColumnDefinition {
    TableColumnDefinition {
        name: name.to_owned(),
        type_: "string".to_owned(),
        format: format.to_owned(),
        description: description.to_owned(),
        priority,
    }
}

/// The columns the server offers for pods (kubectl upper-cases the names).
pub fn pod_columns() -> Vec<TableColumnDefinition> {
    vec![
        column(
            "Name",
            "name",
            0,
            "Name of the pod, unique within its namespace.",
        ),
        column(
            "Ready",
            "",
            0,
            "Ready containers out of main containers plus sidecars.",
        ),
        column(
            "Status",
            "",
            0,
            "The aggregate status of the containers in this pod.",
        ),
        column(
            "Restarts",
            "",
            0,
            "Container restarts, and how long ago the last one ended.",
        ),
        column("Age", "", 0, "Time since the pod was created."),
        column("IP", "", 1, "The pod's first IP address."),
        column("Node", "", 1, "The node the pod is bound to."),
        column(
            "Nominated Node",
            "",
            1,
            "The node the scheduler nominated after preemption.",
        ),
        column(
            "Readiness Gates",
            "",
            1,
            "Readiness gates that are True, out of all gates.",
        ),
    ]
}

/// A `Table` of `pods` at time `now`, each row carrying the pod's metadata as a
/// `PartialObjectMetadata`.
pub fn pod_table(pods: &[Pod], now: Timestamp) -> Table {
    let rows = pods
        .iter()
        .map(|pod| {
            let mut cells: Vec<Value> = pod_row(pod, now)
                .cells()
                .into_iter()
                .map(Value::String)
                .collect();
            cells.extend(pod_wide_columns(pod).cells().into_iter().map(Value::String));
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            let conditions = match phase {
                Some("Succeeded") => vec![completed(
                    "Succeeded",
                    "The pod has completed successfully.",
                )],
                Some("Failed") => vec![completed("Failed", "The pod failed.")],
                _ => Vec::new(),
            };
            TableRow {
                cells,
                conditions,
                object: Some(json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": pod.metadata,
                })),
            }
        })
        .collect();
    Table::new(pod_columns(), rows)
}

/// What each row's `object` holds (the `includeObject` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A `PartialObjectMetadata` with the object's metadata (the default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parses `?includeObject=`; empty means the default.
    pub fn from_query(value: &str) -> Option<IncludeObject> {
        match value {
            "None" => Some(IncludeObject::None),
            "" | "Metadata" => Some(IncludeObject::Metadata),
            "Object" => Some(IncludeObject::Object),
            _ => None,
        }
    }

    fn object(self, object: &Value) -> Option<Value> {
        match self {
            IncludeObject::None => None,
            IncludeObject::Metadata => Some(json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
            })),
            IncludeObject::Object => Some(object.clone()),
        }
    }
}

/// The `Table` of `objects` (JSON objects of `kind`, e.g. `"Deployment"`) at time
/// `now`, with the columns kubectl shows for that kind (`priority: 1` ones only with
/// `-o wide`) and one row per object. Unknown kinds get Name and Created At.
pub fn table_for(kind: &str, objects: &[Value], now: Timestamp, include: IncludeObject) -> Table {
    let (columns, mut rows) = match kind {
        "Pod" => {
            let pods: Vec<Pod> = objects.iter().map(pod_from_json).collect();
            let table = pod_table(&pods, now);
            (table.column_definitions, table.rows)
        }
        "Namespace" => kinds::namespace(objects, now),
        "Service" => kinds::service(objects, now),
        "ServiceAccount" => kinds::service_account(objects, now),
        "Deployment" => kinds::deployment(objects, now),
        "ReplicaSet" => kinds::replica_set(objects, now),
        "Job" => kinds::job(objects, now),
        "Event" => kinds::event(objects, now),
        "ConfigMap" => kinds::config_map(objects, now),
        "Secret" => kinds::secret(objects, now),
        "Node" => kinds::node(objects, now),
        "Endpoints" => kinds::endpoints(objects, now),
        "EndpointSlice" => kinds::endpoint_slice(objects, now),
        _ => kinds::generic(objects),
    };
    for (row, object) in rows.iter_mut().zip(objects) {
        row.object = include.object(object);
    }
    Table::new(columns, rows)
}

/// A stored pod as the typed `Pod` the printer needs; one that does not decode still
/// gets a row from its metadata.
fn pod_from_json(object: &Value) -> Pod {
    serde_json::from_value(object.clone()).unwrap_or_else(|_| Pod {
        metadata: object
            .get("metadata")
            .and_then(|m| serde_json::from_value(m.clone()).ok())
            .unwrap_or_default(),
        ..Pod::default()
    })
}

fn completed(reason: &str, message: &str) -> TableRowCondition {
    TableRowCondition {
        type_: "Completed".to_owned(),
        status: "True".to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_table_serialises_like_the_api_server() {
        let now: Timestamp = "2025-06-01T12:00:00Z".parse().expect("timestamp");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "job-1", "namespace": "default", "creationTimestamp": "2025-06-01T11:59:00Z"},
            "spec": {"containers": [{"name": "app", "image": "busybox"}], "nodeName": "tandem"},
            "status": {"phase": "Succeeded", "podIPs": [{"ip": "10.88.0.4"}], "containerStatuses": [{
                "name": "app", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}
            }]}
        }))
        .expect("pod");
        let table = serde_json::to_value(pod_table(&[pod], now)).expect("serialises");
        assert_eq!(table["kind"], "Table");
        assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
        let names: Vec<&str> = table["columnDefinitions"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| c["name"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        assert_eq!(table["columnDefinitions"][0]["format"], "name");
        assert_eq!(table["columnDefinitions"][4]["priority"], 0);
        assert_eq!(table["columnDefinitions"][5]["priority"], 1);
        assert_eq!(
            table["rows"][0]["cells"],
            json!([
                "job-1",
                "0/1",
                "Completed",
                "0",
                "60s",
                "10.88.0.4",
                "tandem",
                "<none>",
                "<none>"
            ])
        );
        assert_eq!(table["rows"][0]["conditions"][0]["reason"], "Succeeded");
        assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(table["rows"][0]["object"]["metadata"]["name"], "job-1");

        let back: Table = serde_json::from_value(table).expect("round trip");
        assert_eq!(back.rows[0].cells.len(), 9);
    }
}
