use serde_json::{Value, json};

use super::*;

fn now() -> Timestamp {
    "2025-06-01T12:00:00Z".parse().expect("timestamp")
}

/// Metadata created five minutes before [`now`].
fn meta(name: &str) -> Value {
    json!({"name": name, "namespace": "default", "uid": format!("uid-{name}"),
           "creationTimestamp": "2025-06-01T11:55:00Z", "resourceVersion": "7", "labels": {"app": name}})
}

fn table(kind: &str, objects: &[Value]) -> Table {
    table_for(kind, objects, now(), IncludeObject::Metadata)
}

fn column_names(t: &Table) -> Vec<&str> {
    t.column_definitions
        .iter()
        .map(|c| c.name.as_str())
        .collect()
}

/// Names of the `-o wide`-only columns.
fn wide_columns(t: &Table) -> Vec<&str> {
    t.column_definitions
        .iter()
        .filter(|c| c.priority == 1)
        .map(|c| c.name.as_str())
        .collect()
}

fn cells(t: &Table, row: usize) -> &[Value] {
    &t.rows[row].cells
}

#[test]
fn namespace_table() {
    let t = table(
        "Namespace",
        &[json!({"metadata": meta("demo"), "status": {"phase": "Active"}})],
    );
    assert_eq!(column_names(&t), ["Name", "Status", "Age"]);
    assert_eq!(cells(&t, 0), [json!("demo"), json!("Active"), json!("5m")]);
    assert_eq!(t.column_definitions[0].format, "name");
}

#[test]
fn service_table() {
    let cluster_ip = json!({"metadata": meta("web"), "spec": {
        "type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
        "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "nodePort": 30443, "protocol": "TCP"}],
        "selector": {"tier": "front", "app": "web"}}});
    let headless = json!({"metadata": meta("db"), "spec": {"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"]}});
    let lb_pending = json!({"metadata": meta("lb"), "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.11"],
        "ports": [{"port": 53, "protocol": "UDP"}]}});
    let lb = json!({"metadata": meta("lb2"), "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.12"],
        "externalIPs": ["192.0.2.9"]},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.2"}, {"hostname": "lb.example.com"}]}}});
    let external = json!({"metadata": meta("ext"), "spec": {"type": "ExternalName", "externalName": "example.com"}});
    let t = table("Service", &[cluster_ip, headless, lb_pending, lb, external]);
    assert_eq!(
        column_names(&t),
        [
            "Name",
            "Type",
            "Cluster-IP",
            "External-IP",
            "Port(s)",
            "Age",
            "Selector"
        ]
    );
    assert_eq!(wide_columns(&t), ["Selector"]);
    assert_eq!(
        cells(&t, 0),
        [
            json!("web"),
            json!("ClusterIP"),
            json!("10.96.0.10"),
            json!("<none>"),
            json!("80/TCP,443:30443/TCP"),
            json!("5m"),
            json!("app=web,tier=front")
        ]
    );
    assert_eq!(
        cells(&t, 1)[1..5],
        [
            json!("ClusterIP"),
            json!("None"),
            json!("<none>"),
            json!("<none>")
        ]
    );
    assert_eq!(cells(&t, 1)[6], json!("<none>"));
    assert_eq!(cells(&t, 2)[3], json!("<pending>"));
    assert_eq!(cells(&t, 2)[4], json!("53/UDP"));
    assert_eq!(
        cells(&t, 3)[3],
        json!("203.0.113.2,lb.example.com,192.0.2.9")
    );
    assert_eq!(cells(&t, 4)[2], json!("<none>"));
    assert_eq!(cells(&t, 4)[3], json!("example.com"));
}

#[test]
fn service_account_table() {
    let t = table(
        "ServiceAccount",
        &[
            json!({"metadata": meta("default")}),
            json!({"metadata": meta("builder"), "secrets": [{"name": "a"}, {"name": "b"}]}),
        ],
    );
    assert_eq!(column_names(&t), ["Name", "Secrets", "Age"]);
    assert_eq!(cells(&t, 0), [json!("default"), json!(0), json!("5m")]);
    assert_eq!(cells(&t, 1)[1], json!(2));
}

fn template() -> Value {
    json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
        {"name": "main", "image": "nginx:1.27"}, {"name": "proxy", "image": "envoy:v1"}]}})
}

#[test]
fn deployment_table() {
    let t = table(
        "Deployment",
        &[json!({"metadata": meta("web"), "spec": {
            "replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template()},
            "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}})],
    );
    assert_eq!(
        column_names(&t),
        [
            "Name",
            "Ready",
            "Up-to-date",
            "Available",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    assert_eq!(wide_columns(&t), ["Containers", "Images", "Selector"]);
    assert_eq!(
        cells(&t, 0),
        [
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("5m"),
            json!("main,proxy"),
            json!("nginx:1.27,envoy:v1"),
            json!("app=web")
        ]
    );
}

#[test]
fn new_deployment_without_status() {
    let t = table(
        "Deployment",
        &[json!({"metadata": meta("web"), "spec": {
            "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]},
            "template": template()}})],
    );
    assert_eq!(cells(&t, 0)[1..4], [json!("0/1"), json!(0), json!(0)]);
    assert_eq!(cells(&t, 0)[7], json!("app=web,tier in (a)"));
}

#[test]
fn replica_set_table() {
    let t = table(
        "ReplicaSet",
        &[
            json!({"metadata": meta("web-5d4f"), "spec": {
                "replicas": 3, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d4f"}}, "template": template()},
                "status": {"replicas": 3, "readyReplicas": 1}}),
            json!({"metadata": meta("bare"), "spec": {"replicas": 0, "template": template()}}),
        ],
    );
    assert_eq!(
        column_names(&t),
        [
            "Name",
            "Desired",
            "Current",
            "Ready",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    assert_eq!(t.column_definitions[1].type_, "integer");
    assert_eq!(
        cells(&t, 0),
        [
            json!("web-5d4f"),
            json!(3),
            json!(3),
            json!(1),
            json!("5m"),
            json!("main,proxy"),
            json!("nginx:1.27,envoy:v1"),
            json!("app=web,pod-template-hash=5d4f")
        ]
    );
    assert_eq!(cells(&t, 1)[1..4], [json!(0), json!(0), json!(0)]);
    assert_eq!(cells(&t, 1)[7], json!("<none>"));
}

fn job(spec: Value, status: Value, deleting: bool) -> Value {
    let mut m = meta("pi");
    if deleting {
        m["deletionTimestamp"] = json!("2025-06-01T11:59:00Z");
    }
    let mut spec = spec;
    spec["template"] = json!({"spec": {"containers": [{"name": "pi", "image": "perl:5"}]}});
    spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}});
    json!({"metadata": m, "spec": spec, "status": status})
}

fn condition(type_: &str, status: &str) -> Value {
    json!({"type": type_, "status": status})
}

#[test]
fn job_table() {
    let complete = job(
        json!({"completions": 1, "parallelism": 1}),
        json!({"succeeded": 1, "startTime": "2025-06-01T11:56:00Z", "completionTime": "2025-06-01T11:56:42Z",
               "conditions": [condition("SuccessCriteriaMet", "True"), condition("Complete", "True")]}),
        false,
    );
    let t = table("Job", &[complete]);
    assert_eq!(
        column_names(&t),
        [
            "Name",
            "Status",
            "Completions",
            "Duration",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    assert_eq!(
        cells(&t, 0),
        [
            json!("pi"),
            json!("Complete"),
            json!("1/1"),
            json!("42s"),
            json!("5m"),
            json!("pi"),
            json!("perl:5"),
            json!("batch.kubernetes.io/controller-uid=u1")
        ]
    );
}

#[test]
fn job_status_and_completions_follow_kubectl() {
    let started = json!({"startTime": "2025-06-01T11:59:30Z", "active": 1});
    let cases = [
        (
            job(json!({"completions": 3}), started.clone(), false),
            "Running",
            "0/3",
            "30s",
        ),
        (
            job(json!({"parallelism": 3}), started.clone(), false),
            "Running",
            "0/1 of 3",
            "30s",
        ),
        (job(json!({}), json!({}), false), "Running", "0/1", ""),
        (
            job(
                json!({"completions": 1}),
                json!({"startTime": "2025-06-01T11:59:30Z", "failed": 1,
                       "conditions": [condition("FailureTarget", "True"), condition("Failed", "True")]}),
                false,
            ),
            "Failed",
            "0/1",
            "30s",
        ),
        (
            job(
                json!({"completions": 1}),
                json!({"conditions": [condition("FailureTarget", "True")]}),
                false,
            ),
            "FailureTarget",
            "0/1",
            "",
        ),
        (
            job(
                json!({"completions": 1, "suspend": true}),
                json!({"conditions": [condition("Suspended", "True")]}),
                false,
            ),
            "Suspended",
            "0/1",
            "",
        ),
        (
            job(
                json!({"completions": 1}),
                json!({"conditions": [condition("Suspended", "True")]}),
                true,
            ),
            "Terminating",
            "0/1",
            "",
        ),
        (
            job(
                json!({"completions": 1}),
                json!({"conditions": [condition("Complete", "False")]}),
                false,
            ),
            "Running",
            "0/1",
            "",
        ),
    ];
    for (object, status, completions, duration) in cases {
        let t = table("Job", std::slice::from_ref(&object));
        assert_eq!(
            cells(&t, 0)[1..4],
            [json!(status), json!(completions), json!(duration)],
            "{object}"
        );
    }
}

#[test]
fn event_table() {
    let event = json!({
        "metadata": meta("web.17f"),
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default", "fieldPath": "spec.containers{main}"},
        "reason": "Pulled", "type": "Normal", "message": "Container image already present \n",
        "source": {"component": "kubelet", "host": "node1"},
        "firstTimestamp": "2025-06-01T11:58:00Z", "lastTimestamp": "2025-06-01T11:59:50Z", "count": 3
    });
    let new_api = json!({
        "metadata": meta("web.18a"),
        "involvedObject": {"kind": "Node"},
        "reason": "Starting", "type": "Warning", "message": "m",
        "eventTime": "2025-06-01T11:59:00.000000Z", "reportingComponent": "tandem", "reportingInstance": "tandem-1"
    });
    let series = json!({
        "metadata": meta("web.19b"),
        "involvedObject": {"kind": "Pod", "name": "web"},
        "reason": "BackOff", "type": "Warning", "message": "Back-off restarting failed container",
        "firstTimestamp": "2025-06-01T11:50:00Z", "count": 2,
        "series": {"count": 9, "lastObservedTime": "2025-06-01T11:59:55.000000Z"}
    });
    let t = table("Event", &[event, new_api, series]);
    assert_eq!(
        column_names(&t),
        [
            "Last Seen",
            "Type",
            "Reason",
            "Object",
            "Subobject",
            "Source",
            "Message",
            "First Seen",
            "Count",
            "Name"
        ]
    );
    assert_eq!(
        wide_columns(&t),
        ["Subobject", "Source", "First Seen", "Count", "Name"]
    );
    assert_eq!(
        cells(&t, 0),
        [
            json!("10s"),
            json!("Normal"),
            json!("Pulled"),
            json!("pod/web"),
            json!("spec.containers{main}"),
            json!("kubelet, node1"),
            json!("Container image already present"),
            json!("2m"),
            json!(3),
            json!("web.17f")
        ]
    );
    assert_eq!(
        cells(&t, 1),
        [
            json!("60s"),
            json!("Warning"),
            json!("Starting"),
            json!("node"),
            json!(""),
            json!("tandem, tandem-1"),
            json!("m"),
            json!("60s"),
            json!(1),
            json!("web.18a")
        ]
    );
    assert_eq!(cells(&t, 2)[0], json!("5s"));
    assert_eq!(cells(&t, 2)[7], json!("10m"));
    assert_eq!(cells(&t, 2)[8], json!(9));
}

#[test]
fn config_map_and_secret_tables() {
    let t = table(
        "ConfigMap",
        &[
            json!({"metadata": meta("cfg"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}),
            json!({"metadata": meta("empty")}),
        ],
    );
    assert_eq!(column_names(&t), ["Name", "Data", "Age"]);
    assert_eq!(cells(&t, 0), [json!("cfg"), json!(3), json!("5m")]);
    assert_eq!(cells(&t, 1)[1], json!(0));

    let t = table(
        "Secret",
        &[json!({"metadata": meta("creds"), "type": "Opaque", "data": {"u": "YQ==", "p": "Yg=="}})],
    );
    assert_eq!(column_names(&t), ["Name", "Type", "Data", "Age"]);
    assert_eq!(
        cells(&t, 0),
        [json!("creds"), json!("Opaque"), json!(2), json!("5m")]
    );
}

#[test]
fn node_table() {
    let mut m = meta("node1");
    m["labels"] = json!({"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "worker",
                         "node-role.kubernetes.io/": "ignored"});
    let ready = json!({
        "metadata": m,
        "spec": {"unschedulable": true},
        "status": {
            "conditions": [condition("MemoryPressure", "False"), condition("Ready", "True")],
            "addresses": [{"type": "Hostname", "address": "node1"}, {"type": "InternalIP", "address": "192.0.2.1"}],
            "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                         "kernelVersion": "6.1.0", "containerRuntimeVersion": "tandem://0.1.0"}
        }
    });
    let bare = json!({"metadata": meta("node2"), "status": {"conditions": [condition("Ready", "Unknown")]}});
    let unknown = json!({"metadata": meta("node3")});
    let t = table("Node", &[ready, bare, unknown]);
    assert_eq!(
        column_names(&t),
        [
            "Name",
            "Status",
            "Roles",
            "Age",
            "Version",
            "Internal-IP",
            "External-IP",
            "OS-Image",
            "Kernel-Version",
            "Container-Runtime"
        ]
    );
    assert_eq!(
        cells(&t, 0),
        [
            json!("node1"),
            json!("Ready,SchedulingDisabled"),
            json!("control-plane,worker"),
            json!("5m"),
            json!("v1.33.0"),
            json!("192.0.2.1"),
            json!("<none>"),
            json!("Debian GNU/Linux 12 (bookworm)"),
            json!("6.1.0"),
            json!("tandem://0.1.0")
        ]
    );
    assert_eq!(cells(&t, 1)[1..3], [json!("NotReady"), json!("<none>")]);
    assert_eq!(
        cells(&t, 1)[7..],
        [json!("<unknown>"), json!("<unknown>"), json!("<unknown>")]
    );
    assert_eq!(cells(&t, 2)[1], json!("Unknown"));
}

#[test]
fn endpoints_table() {
    let many = json!({"metadata": meta("web"), "subsets": [{
        "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
        "ports": [{"port": 80}, {"port": 443}]}]});
    let ipv6 = json!({"metadata": meta("v6"), "subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]});
    let headless =
        json!({"metadata": meta("db"), "subsets": [{"addresses": [{"ip": "10.0.0.3"}]}]});
    let empty = json!({"metadata": meta("none")});
    let t = table("Endpoints", &[many, ipv6, headless, empty]);
    assert_eq!(column_names(&t), ["Name", "Endpoints", "Age"]);
    assert_eq!(
        cells(&t, 0)[1],
        json!("10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more...")
    );
    assert_eq!(cells(&t, 1)[1], json!("[fd00::1]:80"));
    assert_eq!(cells(&t, 2)[1], json!("10.0.0.3"));
    assert_eq!(cells(&t, 3)[1], json!("<none>"));
}

#[test]
fn other_kinds_get_name_and_created_at() {
    let t = table(
        "Lease",
        &[
            json!({"metadata": meta("lock")}),
            json!({"metadata": {"name": "new"}}),
        ],
    );
    assert_eq!(column_names(&t), ["Name", "Created At"]);
    assert_eq!(t.column_definitions[1].type_, "date");
    assert_eq!(cells(&t, 0), [json!("lock"), json!("2025-06-01T11:55:00Z")]);
    assert_eq!(cells(&t, 1)[1], json!("0001-01-01T00:00:00Z"));
}

#[test]
fn pod_rows_match_the_pod_table() {
    let pod = json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": meta("web"),
        "spec": {"containers": [{"name": "main", "image": "nginx"}], "nodeName": "tandem"},
        "status": {"phase": "Running", "podIPs": [{"ip": "10.88.0.4"}], "containerStatuses": [{
            "name": "main", "image": "nginx", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {"startedAt": "2025-06-01T11:55:30Z"}}}]}
    });
    let typed: Pod = serde_json::from_value(pod.clone()).expect("pod");
    let t = table("Pod", std::slice::from_ref(&pod));
    let expected = pod_table(&[typed], now());
    assert_eq!(t.column_definitions, expected.column_definitions);
    assert_eq!(t.rows[0].cells, expected.rows[0].cells);
    assert_eq!(cells(&t, 0)[1..3], [json!("1/1"), json!("Running")]);

    // A stored pod that does not decode still gets a row with its name.
    let broken = json!({"metadata": meta("odd"), "spec": {"containers": "not a list"}});
    let t = table("Pod", &[broken]);
    assert_eq!(cells(&t, 0)[0], json!("odd"));
    assert_eq!(cells(&t, 0).len(), t.column_definitions.len());
}

#[test]
fn row_objects_follow_include_object() {
    let object = json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": meta("cfg"), "data": {"a": "1"}});
    for kind in ["ConfigMap", "Pod"] {
        let objects = std::slice::from_ref(&object);
        let t = table_for(kind, objects, now(), IncludeObject::Metadata);
        assert_eq!(
            t.rows[0].object,
            Some(
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta("cfg")})
            )
        );
        let t = table_for(kind, objects, now(), IncludeObject::Object);
        assert_eq!(t.rows[0].object, Some(object.clone()));
        let t = table_for(kind, objects, now(), IncludeObject::None);
        assert_eq!(t.rows[0].object, None);
        let json = serde_json::to_value(&t).expect("serialises");
        assert!(json["rows"][0].get("object").is_none());
    }
    assert_eq!(IncludeObject::from_query(""), Some(IncludeObject::Metadata));
    assert_eq!(
        IncludeObject::from_query("Object"),
        Some(IncludeObject::Object)
    );
    assert_eq!(IncludeObject::from_query("None"), Some(IncludeObject::None));
    assert_eq!(IncludeObject::from_query("all"), None);
    assert_eq!(IncludeObject::default(), IncludeObject::Metadata);
}

#[test]
fn every_kind_has_one_cell_per_column() {
    let objects = [json!({"metadata": meta("x")}), json!({})];
    for kind in [
        "Pod",
        "Namespace",
        "Service",
        "ServiceAccount",
        "Deployment",
        "ReplicaSet",
        "Job",
        "Event",
        "ConfigMap",
        "Secret",
        "Node",
        "Endpoints",
        "Widget",
    ] {
        let t = table(kind, &objects);
        assert_eq!(t.rows.len(), 2, "{kind}");
        for row in &t.rows {
            assert_eq!(row.cells.len(), t.column_definitions.len(), "{kind}");
        }
        let names = column_names(&t);
        assert!(
            names.contains(&"Name"),
            "{kind} has a Name column: {names:?}"
        );
        let json = serde_json::to_value(&t).expect("serialises");
        assert_eq!(json["kind"], "Table");
        assert_eq!(json["apiVersion"], "meta.k8s.io/v1");
    }
}
