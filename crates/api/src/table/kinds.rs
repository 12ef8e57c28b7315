//! Server-side printing of the served kinds other than Pod, with the columns and cell
//! formats of kube-apiserver's printers (`pkg/printers/internalversion`). Objects are
//! read as JSON so that a stored object always gets a row, whatever it holds.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as ApiLabelSelector;
use serde_json::{Value, json};

use super::{TableColumnDefinition, TableRow};
use crate::printer::{age, human_duration};
use crate::selector::LabelSelector;

const NONE: &str = "<none>";
const UNKNOWN: &str = "<unknown>";

fn col(
    name: &str,
    type_: &str,
    format: &str,
    priority: i32,
    description: &str,
) -> TableColumnDefinition {
    TableColumnDefinition {
        name: name.to_owned(),
        type_: type_.to_owned(),
        format: format.to_owned(),
        description: description.to_owned(),
        priority,
    }
}

fn name_col() -> TableColumnDefinition {
    col(
        "Name",
        "string",
        "name",
        0,
        "Name of the object, unique within its namespace (or cluster).",
    )
}

fn age_col() -> TableColumnDefinition {
    col("Age", "string", "", 0, "Time since the object was created.")
}

fn workload_wide_cols() -> [TableColumnDefinition; 3] {
    [
        col(
            "Containers",
            "string",
            "",
            1,
            "Names of each container in the template.",
        ),
        col(
            "Images",
            "string",
            "",
            1,
            "Images referenced by each container in the template.",
        ),
        col(
            "Selector",
            "string",
            "",
            1,
            "Label query over the pods this object manages.",
        ),
    ]
}

fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, p| &v[*p])
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).as_str().unwrap_or_default()
}

fn int(v: &Value, path: &[&str]) -> i64 {
    at(v, path).as_i64().unwrap_or(0)
}

fn items<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path)
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn timestamp(v: &Value, path: &[&str]) -> Option<Timestamp> {
    text(v, path).parse().ok()
}

fn name(o: &Value) -> Value {
    Value::from(text(o, &["metadata", "name"]))
}

fn age_cell(o: &Value, now: Timestamp) -> Value {
    Value::from(age(timestamp(o, &["metadata", "creationTimestamp"]), now))
}

fn row(cells: Vec<Value>) -> TableRow {
    TableRow {
        cells,
        conditions: Vec::new(),
        object: None,
    }
}

fn or_none(s: String) -> String {
    if s.is_empty() { NONE.to_owned() } else { s }
}

/// `labels.FormatLabels`: `k=v` pairs sorted by key, or `<none>`.
fn format_labels(v: &Value) -> String {
    let pairs: BTreeMap<&str, &str> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default()))
        .collect();
    let joined: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    or_none(joined.join(","))
}

/// A `spec.selector` in its canonical string form; `Err` if it is invalid.
fn selector_string(v: &Value) -> Result<String, ()> {
    if v.is_null() {
        // A missing selector selects nothing, which prints as the empty string.
        return Ok(String::new());
    }
    let sel: ApiLabelSelector = serde_json::from_value(v.clone()).map_err(|_| ())?;
    LabelSelector::from_api(&sel)
        .map(|s| s.to_string())
        .map_err(|_| ())
}

/// `metav1.FormatLabelSelector`.
fn format_label_selector(v: &Value) -> String {
    match selector_string(v) {
        Ok(s) => or_none(s),
        Err(()) => "<error>".to_owned(),
    }
}

/// Container names and images of a pod template, comma-joined.
fn container_cells(template: &Value) -> (Value, Value) {
    let containers = items(template, &["spec", "containers"]);
    let names: Vec<&str> = containers.iter().map(|c| text(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| text(c, &["image"])).collect();
    (Value::from(names.join(",")), Value::from(images.join(",")))
}

pub(super) fn namespace(
    objects: &[Value],
    now: Timestamp,
) -> (Vec<TableColumnDefinition>, Vec<TableRow>) {
    let columns = vec![
        name_col(),
        col("Status", "string", "", 0, "The status of the namespace."),
        age_col(),
    ];
    let rows = objects
        .iter()
        .map(|o| {
            row(vec![
                name(o),
                Value::from(text(o, &["status", "phase"])),
                age_cell(o, now),
            ])
        })
        .collect();
    (columns, rows)
}

pub(super) fn service(
    objects: &[Value],
    now: Timestamp,
) -> (Vec<TableColumnDefinition>, Vec<TableRow>) {
    let columns = vec![
        name_col(),
        col("Type", "string", "", 0, "The type of the service."),
        col(
            "Cluster-IP",
            "string",
            "",
            0,
            "The cluster-internal IP of the service.",
        ),
        col(
            "External-IP",
            "string",
            "",
            0,
            "External addresses of the service.",
        ),
        col("Port(s)", "string", "", 0, "The ports the service exposes."),
        age_col(),
        col(
            "Selector",
            "string",
            "",
            1,
            "Labels of the pods that receive the service's traffic.",
        ),
    ];
    let rows = objects
        .iter()
        .map(|o| {
            let cluster_ip = items(o, &["spec", "clusterIPs"])
                .first()
                .and_then(Value::as_str)
                .or_else(|| at(o, &["spec", "clusterIP"]).as_str())
                .filter(|ip| !ip.is_empty())
                .unwrap_or(NONE);
            let ports: Vec<String> = items(o, &["spec", "ports"])
                .iter()
                .map(|p| {
                    let protocol = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64().filter(|n| *n > 0) {
                        Some(node_port) => format!("{}:{node_port}/{protocol}", int(p, &["port"])),
                        None => format!("{}/{protocol}", int(p, &["port"])),
                    }
                })
                .collect();
            row(vec![
                name(o),
                Value::from(text(o, &["spec", "type"])),
                Value::from(cluster_ip),
                Value::from(service_external_ip(o)),
                Value::from(or_none(ports.join(","))),
                age_cell(o, now),
                Value::from(format_labels(at(o, &["spec", "selector"]))),
            ])
        })
        .collect();
    (columns, rows)
}

/// `getServiceExternalIP` with wide output (no clipping).
fn service_external_ip(o: &Value) -> String {
    let external: Vec<&str> = items(o, &["spec", "externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match text(o, &["spec", "type"]) {
        "ClusterIP" | "NodePort" => or_none(external.join(",")),
        "LoadBalancer" => {
            let mut ingress: Vec<&str> = items(o, &["status", "loadBalancer", "ingress"])
                .iter()
                .filter_map(|i| {
                    [text(i, &["ip"]), text(i, &["hostname"])]
                        .into_iter()
                        .find(|s| !s.is_empty())
                })
                .collect();
            ingress.sort_unstable();
            ingress.dedup();
            ingress.extend(external);
            if ingress.is_empty() {
                "<pending>".to_owned()
            } else {
                ingress.join(",")
            }
        }
        "ExternalName" => text(o, &["spec", "externalName"]).to_owned(),
        _ => UNKNOWN.to_owned(),
    }
}

pub(super) fn service_account(
    objects: &[Value],
    now: Timestamp,
) -> (Vec<TableColumnDefinition>, Vec<TableRow>) {
    let columns = vec![
        name_col(),
        col(
            "Secrets",
            "string",
            "",
            0,
            "Number of secrets listed in the service account.",
        ),
        age_col(),
    ];
    let rows = objects
        .iter()
        .map(|o| {
            let secrets = items(o, &["secrets"]).len();
            row(vec![name(o), Value::from(secrets), age_cell(o, now)])
        })
        .collect();
    (columns, rows)
}

pub(super) fn deployment(
    objects: &[Value],
    now: Timestamp,
) -> (Vec<TableColumnDefinition>, Vec<TableRow>) {
    let mut columns = vec![
        name_col(),
        col(
            "Ready",
            "string",
            "",
            0,
            "Ready pods out of desired replicas.",
        ),
        col(
            "Up-to-date",
            "string",
            "",
            0,
            "Pods that run the current template.",
        ),
        col(
            "Available",
            "string",
            "",
            0,
            "Pods that have been ready long enough to count as available.",
        ),
        age_col(),
    ];
    columns.extend(workload_wide_cols());
    let rows = objects
        .iter()
        .map(|o| {
            let desired = at(o, &["spec", "replicas"]).as_i64().unwrap_or(1);
            let ready = int(o, &["status", "readyReplicas"]);
            let (names, images) = container_cells(at(o, &["spec", "template"]));
            // Deployments print the bare selector string (empty stays empty).
            let selector = selector_string(at(o, &["spec", "selector"]))
                .unwrap_or_else(|()| "<invalid>".to_owned());
            row(vec![
                name(o),
                Value::from(format!("{ready}/{desired}")),
                Value::from(int(o, &["status", "updatedReplicas"])),
                Value::from(int(o, &["status", "availableReplicas"])),
                age_cell(o, now),
                names,
                images,
                Value::from(selector),
            ])
        })
        .collect();
    (columns, rows)
}

pub(super) fn replica_set(
    objects: &[Value],
    now: Timestamp,
) -> (Vec<TableColumnDefinition>, Vec<TableRow>) {
    let mut columns = vec![
        name_col(),
        col("Desired", "integer", "", 0, "Number of desired pods."),
        col("Current", "integer", "", 0, "Number of pods that exist."),
        col("Ready", "integer", "", 0, "Number of ready pods."),
        age_col(),
    ];
    columns.extend(workload_wide_cols());
    let rows = objects
        .iter()
        .map(|o| {
            let (names, images) = container_cells(at(o, &["spec", "template"]));
            row(vec![
                name(o),
                Value::from(at(o, &["spec", "replicas"]).as_i64().unwrap_or(1)),
                Value::from(int(o, &["status", "replicas"])),
                Value::from(int(o, &["status", "readyReplicas"])),
                age_cell(o, now),
                names,
                images,
                Value::from(format_label_selector(at(o, &["spec", "selector"]))),
            ])
        })
        .collect();
    (columns, rows)
}

/// Whether the job has a condition of `type_` with status `True` (the first of that
/// type decides, as upstream).
fn job_condition(o: &Value, type_: &str) -> bool {
    items(o, &["status", "conditions"])
        .iter()
        .find(|c| text(c, &["type"]) == type_)
        .is_some_and(|c| text(c, &["status"]) == "True")
}

pub(super) fn job(
    objects: &[Value],
    now: Timestamp,
) -> (Vec<TableColumnDefinition>, Vec<TableRow>) {
    let mut columns = vec![
        name_col(),
        col("Status", "string", "", 0, "Status of the job."),
        col(
            "Completions",
            "string",
            "",
            0,
            "Succeeded pods out of the completions wanted.",
        ),
        col(
            "Duration",
            "string",
            "",
            0,
            "Time the job took to complete, or has run so far.",
        ),
        age_col(),
    ];
    columns.extend(workload_wide_cols());
    let rows = objects
        .iter()
        .map(|o| {
            let succeeded = int(o, &["status", "succeeded"]);
            let completions = match at(o, &["spec", "completions"]).as_i64() {
                Some(c) => format!("{succeeded}/{c}"),
                None => match at(o, &["spec", "parallelism"]).as_i64().unwrap_or(0) {
                    p if p > 1 => format!("{succeeded}/1 of {p}"),
                    _ => format!("{succeeded}/1"),
                },
            };
            let duration = match (
                timestamp(o, &["status", "startTime"]),
                timestamp(o, &["status", "completionTime"]),
            ) {
                (None, _) => String::new(),
                (Some(start), None) => human_duration(now.duration_since(start)),
                (Some(start), Some(end)) => human_duration(end.duration_since(start)),
            };
            let status = if job_condition(o, "Complete") {
                "Complete"
            } else if job_condition(o, "Failed") {
                "Failed"
            } else if !at(o, &["metadata", "deletionTimestamp"]).is_null() {
                "Terminating"
            } else if job_condition(o, "Suspended") {
                "Suspended"
            } else if job_condition(o, "FailureTarget") {
                "FailureTarget"
            } else if job_condition(o, "SuccessCriteriaMet") {
                "SuccessCriteriaMet"
            } else {
                "Running"
            };
            let (names, images) = container_cells(at(o, &["spec", "template"]));
            row(vec![
                name(o),
                Value::from(status),
                Value::from(completions),
                Value::from(duration),
                age_cell(o, now),
                names,
                images,
                Value::from(format_label_selector(at(o, &["spec", "selector"]))),
            ])
        })
        .collect();
    (columns, rows)
}

pub(super) fn event(
    objects: &[Value],
    now: Timestamp,
) -> (Vec<TableColumnDefinition>, Vec<TableRow>) {
    let columns = vec![
        col(
            "Last Seen",
            "string",
            "",
            0,
            "Time since the event was last observed.",
        ),
        col(
            "Type",
            "string",
            "",
            0,
            "Type of the event (Normal, Warning).",
        ),
        col(
            "Reason",
            "string",
            "",
            0,
            "Short, machine-readable reason for the event.",
        ),
        col("Object", "string", "", 0, "The object the event is about."),
        col(
            "Subobject",
            "string",
            "",
            1,
            "The part of the object the event is about.",
        ),
        col(
            "Source",
            "string",
            "",
            1,
            "The component that reported the event.",
        ),
        col(
            "Message",
            "string",
            "",
            0,
            "Human-readable description of the event.",
        ),
        col(
            "First Seen",
            "string",
            "",
            1,
            "Time since the event was first observed.",
        ),
        col(
            "Count",
            "string",
            "",
            1,
            "Number of times the event occurred.",
        ),
        col("Name", "string", "name", 1, "Name of the event object."),
    ];
    let since = |t: Option<Timestamp>| {
        t.map_or_else(
            || UNKNOWN.to_owned(),
            |t| human_duration(now.duration_since(t)),
        )
    };
    let rows = objects
        .iter()
        .map(|o| {
            let first = match timestamp(o, &["firstTimestamp"]) {
                Some(t) => since(Some(t)),
                None => since(timestamp(o, &["eventTime"])),
            };
            let mut last = match timestamp(o, &["lastTimestamp"]) {
                Some(t) => since(Some(t)),
                None => first.clone(),
            };
            let mut count = int(o, &["count"]);
            let series = at(o, &["series"]);
            if series.is_object() {
                last = since(timestamp(series, &["lastObservedTime"]));
                count = int(series, &["count"]);
            } else if count == 0 {
                // Events of the newer API carry no count when they happened once.
                count = 1;
            }
            let kind = text(o, &["involvedObject", "kind"]).to_lowercase();
            let target = match text(o, &["involvedObject", "name"]) {
                "" => kind,
                n => format!("{kind}/{n}"),
            };
            let component = [
                text(o, &["source", "component"]),
                text(o, &["reportingComponent"]),
            ]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or_default();
            let instance = [
                text(o, &["source", "host"]),
                text(o, &["reportingInstance"]),
            ]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or_default();
            let source = if instance.is_empty() {
                component.to_owned()
            } else {
                format!("{component}, {instance}")
            };
            row(vec![
                Value::from(last),
                Value::from(text(o, &["type"])),
                Value::from(text(o, &["reason"])),
                Value::from(target),
                Value::from(text(o, &["involvedObject", "fieldPath"])),
                Value::from(source),
                Value::from(text(o, &["message"]).trim()),
                Value::from(first),
                Value::from(count),
                name(o),
            ])
        })
        .collect();
    (columns, rows)
}

pub(super) fn config_map(
    objects: &[Value],
    now: Timestamp,
) -> (Vec<TableColumnDefinition>, Vec<TableRow>) {
    let columns = vec![
        name_col(),
        col(
            "Data",
            "string",
            "",
            0,
            "Number of data and binaryData keys.",
        ),
        age_col(),
    ];
    let len = |v: &Value| v.as_object().map_or(0, |m| m.len());
    let rows = objects
        .iter()
        .map(|o| {
            let data = len(&o["data"]) + len(&o["binaryData"]);
            row(vec![name(o), Value::from(data), age_cell(o, now)])
        })
        .collect();
    (columns, rows)
}

pub(super) fn secret(
    objects: &[Value],
    now: Timestamp,
) -> (Vec<TableColumnDefinition>, Vec<TableRow>) {
    let columns = vec![
        name_col(),
        col("Type", "string", "", 0, "The type of the secret."),
        col("Data", "string", "", 0, "Number of data keys."),
        age_col(),
    ];
    let rows = objects
        .iter()
        .map(|o| {
            let data = o["data"].as_object().map_or(0, |m| m.len());
            row(vec![
                name(o),
                Value::from(text(o, &["type"])),
                Value::from(data),
                age_cell(o, now),
            ])
        })
        .collect();
    (columns, rows)
}

pub(super) fn node(
    objects: &[Value],
    now: Timestamp,
) -> (Vec<TableColumnDefinition>, Vec<TableRow>) {
    let columns = vec![
        name_col(),
        col("Status", "string", "", 0, "The status of the node."),
        col("Roles", "string", "", 0, "The roles of the node."),
        age_col(),
        col(
            "Version",
            "string",
            "",
            0,
            "Kubelet version the node reports.",
        ),
        col(
            "Internal-IP",
            "string",
            "",
            1,
            "The node's first internal address.",
        ),
        col(
            "External-IP",
            "string",
            "",
            1,
            "The node's first external address.",
        ),
        col(
            "OS-Image",
            "string",
            "",
            1,
            "The operating system the node reports.",
        ),
        col(
            "Kernel-Version",
            "string",
            "",
            1,
            "The kernel version the node reports.",
        ),
        col(
            "Container-Runtime",
            "string",
            "",
            1,
            "The container runtime the node reports.",
        ),
    ];
    let rows = objects
        .iter()
        .map(|o| {
            let mut status: Vec<&str> = Vec::new();
            // The last condition of a type wins, as in upstream's map.
            if let Some(ready) = items(o, &["status", "conditions"])
                .iter()
                .rfind(|c| text(c, &["type"]) == "Ready")
            {
                status.push(if text(ready, &["status"]) == "True" {
                    "Ready"
                } else {
                    "NotReady"
                });
            } else {
                status.push("Unknown");
            }
            if at(o, &["spec", "unschedulable"]).as_bool() == Some(true) {
                status.push("SchedulingDisabled");
            }
            let address = |type_: &str| {
                items(o, &["status", "addresses"])
                    .iter()
                    .find(|a| text(a, &["type"]) == type_)
                    .map_or(NONE, |a| text(a, &["address"]))
                    .to_owned()
            };
            let info = |field: &str| {
                let v = text(o, &["status", "nodeInfo", field]);
                if v.is_empty() { UNKNOWN } else { v }.to_owned()
            };
            row(vec![
                name(o),
                Value::from(status.join(",")),
                Value::from(node_roles(o)),
                age_cell(o, now),
                Value::from(text(o, &["status", "nodeInfo", "kubeletVersion"])),
                Value::from(address("InternalIP")),
                Value::from(address("ExternalIP")),
                Value::from(info("osImage")),
                Value::from(info("kernelVersion")),
                Value::from(info("containerRuntimeVersion")),
            ])
        })
        .collect();
    (columns, rows)
}

/// Roles from `node-role.kubernetes.io/<role>` labels and the `kubernetes.io/role` label.
fn node_roles(o: &Value) -> String {
    let mut roles: Vec<&str> = at(o, &["metadata", "labels"])
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| match k.strip_prefix("node-role.kubernetes.io/") {
            Some(role) => Some(role),
            None if k == "kubernetes.io/role" => v.as_str(),
            None => None,
        })
        .filter(|r| !r.is_empty())
        .collect();
    roles.sort_unstable();
    roles.dedup();
    or_none(roles.join(","))
}

pub(super) fn endpoints(
    objects: &[Value],
    now: Timestamp,
) -> (Vec<TableColumnDefinition>, Vec<TableRow>) {
    let columns = vec![
        name_col(),
        col(
            "Endpoints",
            "string",
            "",
            0,
            "Ready addresses and ports of the endpoints.",
        ),
        age_col(),
    ];
    let rows = objects
        .iter()
        .map(|o| {
            row(vec![
                name(o),
                Value::from(format_endpoints(o)),
                age_cell(o, now),
            ])
        })
        .collect();
    (columns, rows)
}

/// Up to three `ip:port` pairs, then `+ N more...`.
fn format_endpoints(o: &Value) -> String {
    const MAX: usize = 3;
    let subsets = items(o, &["subsets"]);
    if subsets.is_empty() {
        return NONE.to_owned();
    }
    let mut list: Vec<String> = Vec::new();
    let mut count = 0;
    let mut more = false;
    for subset in subsets {
        let addresses: Vec<&str> = items(subset, &["addresses"])
            .iter()
            .map(|a| text(a, &["ip"]))
            .collect();
        let ports = items(subset, &["ports"]);
        // Headless services may have addresses without ports.
        let port_list: Vec<Option<i64>> = if ports.is_empty() {
            vec![None]
        } else {
            ports.iter().map(|p| Some(int(p, &["port"]))).collect()
        };
        for port in port_list {
            count += addresses.len();
            for ip in &addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(match port {
                    None => (*ip).to_owned(),
                    Some(port) if ip.contains(':') => format!("[{ip}]:{port}"),
                    Some(port) => format!("{ip}:{port}"),
                });
            }
        }
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

/// Any other kind: Name and Created At (RFC 3339), like the default table convertor.
pub(super) fn generic(objects: &[Value]) -> (Vec<TableColumnDefinition>, Vec<TableRow>) {
    let columns = vec![
        name_col(),
        col("Created At", "date", "", 0, "Time the object was created."),
    ];
    let rows = objects
        .iter()
        .map(|o| {
            let created = timestamp(o, &["metadata", "creationTimestamp"]).map_or_else(
                || "0001-01-01T00:00:00Z".to_owned(),
                |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            );
            row(vec![name(o), json!(created)])
        })
        .collect();
    (columns, rows)
}

pub(super) fn endpoint_slice(
    objects: &[Value],
    now: Timestamp,
) -> (Vec<TableColumnDefinition>, Vec<TableRow>) {
    let columns = vec![
        name_col(),
        col(
            "AddressType",
            "string",
            "",
            0,
            "Type of address carried by this EndpointSlice.",
        ),
        col("Ports", "string", "", 0, "Ports served by this slice."),
        col(
            "Endpoints",
            "string",
            "",
            0,
            "Addresses of the endpoints in this slice.",
        ),
        age_col(),
    ];
    let rows = objects
        .iter()
        .map(|o| {
            row(vec![
                name(o),
                Value::from(text(o, &["addressType"])),
                Value::from(slice_ports(o)),
                Value::from(slice_addresses(o)),
                age_cell(o, now),
            ])
        })
        .collect();
    (columns, rows)
}

/// Up to three entries joined by commas, then `+ N more...`; `<unset>` when empty.
fn first_three(list: &[String]) -> String {
    const MAX: usize = 3;
    match list.len() {
        0 => "<unset>".to_owned(),
        n if n > MAX => format!("{} + {} more...", list[..MAX].join(","), n - MAX),
        _ => list.join(","),
    }
}

fn slice_ports(o: &Value) -> String {
    let ports: Vec<String> = items(o, &["ports"])
        .iter()
        .map(|p| match p.get("port").and_then(Value::as_i64) {
            Some(n) => n.to_string(),
            None => "<unset>".to_owned(),
        })
        .collect();
    first_three(&ports)
}

fn slice_addresses(o: &Value) -> String {
    let addresses: Vec<String> = items(o, &["endpoints"])
        .iter()
        .flat_map(|e| items(e, &["addresses"]))
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    first_three(&addresses)
}
