use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn smp(kind: &str, original: &Value, patch: Value) -> Result<Value, PatchError> {
    apply_patch(
        kind,
        original,
        PatchType::Strategic,
        patch.to_string().as_bytes(),
    )
}

fn pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": {"app": "web"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}\n"},
            "finalizers": ["example.com/a", "example.com/b"]
        },
        "spec": {
            "containers": [
                {"name": "main", "image": "nginx:1.25", "args": ["-g", "daemon off;"],
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                 "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                {"name": "sidecar", "image": "busybox", "command": ["sleep", "infinity"]}
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "restartPolicy": "Always",
            "activeDeadlineSeconds": 600
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "False"}
            ]
        }
    })
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|c| c["name"].as_str().expect("a name"))
        .collect()
}

#[test]
fn content_types_map_to_patch_types() {
    assert_eq!(
        PatchType::from_content_type("application/strategic-merge-patch+json"),
        Some(PatchType::Strategic)
    );
    assert_eq!(
        PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
        Some(PatchType::Merge)
    );
    assert_eq!(
        PatchType::from_content_type("Application/JSON-Patch+JSON"),
        Some(PatchType::Json)
    );
    assert_eq!(
        PatchType::from_content_type("application/apply-patch+yaml"),
        Some(PatchType::Apply)
    );
    assert_eq!(PatchType::from_content_type("application/json"), None);
    assert_eq!(PatchType::from_content_type(""), None);
    for t in [
        PatchType::Json,
        PatchType::Merge,
        PatchType::Strategic,
        PatchType::Apply,
    ] {
        assert_eq!(PatchType::from_content_type(t.content_type()), Some(t));
    }
}

#[test]
fn server_side_apply_is_unsupported_media_type() {
    let err = apply_patch("Pod", &pod(), PatchType::Apply, b"{}").expect_err("unsupported");
    assert_eq!(err, PatchError::Unsupported(PatchType::Apply));
    assert_eq!(err.http_status(), 415);
    assert_eq!(err.reason(), "UnsupportedMediaType");
}

/// The body kubectl 1.37 sent to re-apply a pod after a label and an image changed.
#[test]
fn kubectl_reapply_changes_label_and_one_image() {
    let patch = json!({
        "metadata": {
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"new\":1}\n"},
            "labels": {"tier": "front"}
        },
        "spec": {
            "$setElementOrder/containers": [{"name": "main"}, {"name": "sidecar"}],
            "containers": [{"image": "nginx:1.27", "name": "main"}]
        }
    });
    let out = smp("Pod", &pod(), patch).expect("patched");
    assert_eq!(
        out["metadata"]["labels"],
        json!({"app": "web", "tier": "front"})
    );
    assert_eq!(
        out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        "{\"new\":1}\n"
    );
    let containers = &out["spec"]["containers"];
    assert_eq!(names(containers), ["main", "sidecar"]);
    assert_eq!(containers[0]["image"], "nginx:1.27");
    // Fields of the merged container that the patch does not name are kept.
    assert_eq!(containers[0]["args"], json!(["-g", "daemon off;"]));
    assert_eq!(containers[0]["env"], pod()["spec"]["containers"][0]["env"]);
    assert_eq!(containers[1], pod()["spec"]["containers"][1]);
    assert_eq!(out["status"], pod()["status"]);
    assert!(!out.to_string().contains("$setElementOrder"));
}

#[test]
fn labels_are_added_and_removed_by_merge_and_strategic_patches() {
    for patch_type in [PatchType::Merge, PatchType::Strategic] {
        let added = apply_patch(
            "Namespace",
            &json!({"kind": "Namespace", "metadata": {"name": "default", "labels": {"kubernetes.io/metadata.name": "default"}}}),
            patch_type,
            br#"{"metadata":{"labels":{"istio-injection":"enabled"}}}"#,
        )
        .expect("label added");
        assert_eq!(
            added["metadata"]["labels"],
            json!({"kubernetes.io/metadata.name": "default", "istio-injection": "enabled"})
        );
        let removed = apply_patch(
            "Namespace",
            &added,
            patch_type,
            br#"{"metadata":{"labels":{"istio-injection":null}}}"#,
        )
        .expect("label removed");
        assert_eq!(
            removed["metadata"]["labels"],
            json!({"kubernetes.io/metadata.name": "default"})
        );
    }
}

#[test]
fn env_items_are_added_and_deleted_by_name() {
    let patch = json!({
        "spec": {
            "$setElementOrder/containers": [{"name": "main"}, {"name": "sidecar"}],
            "containers": [{
                "$setElementOrder/env": [{"name": "A"}, {"name": "C"}],
                "env": [{"name": "C", "value": "3"}, {"$patch": "delete", "name": "B"}],
                "name": "main"
            }]
        }
    });
    let out = smp("Pod", &pod(), patch).expect("patched");
    assert_eq!(
        out["spec"]["containers"][0]["env"],
        json!([{"name": "A", "value": "1"}, {"name": "C", "value": "3"}])
    );
    assert_eq!(names(&out["spec"]["containers"]), ["main", "sidecar"]);
}

#[test]
fn patch_delete_removes_one_container() {
    let patch = json!({
        "spec": {
            "$setElementOrder/containers": [{"name": "main"}],
            "containers": [{"$patch": "delete", "name": "sidecar"}]
        }
    });
    let out = smp("Pod", &pod(), patch).expect("patched");
    assert_eq!(names(&out["spec"]["containers"]), ["main"]);
    assert_eq!(out["spec"]["containers"][0], pod()["spec"]["containers"][0]);
}

#[test]
fn set_element_order_alone_reorders_the_list() {
    let patch =
        json!({"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "main"}]}});
    let out = smp("Pod", &pod(), patch).expect("patched");
    assert_eq!(names(&out["spec"]["containers"]), ["sidecar", "main"]);
    assert_eq!(out["spec"]["containers"][1], pod()["spec"]["containers"][0]);
}

#[test]
fn set_element_order_places_a_new_container() {
    let patch = json!({
        "spec": {
            "$setElementOrder/containers": [{"name": "main"}, {"name": "proxy"}, {"name": "sidecar"}],
            "containers": [{"name": "proxy", "image": "envoy"}]
        }
    });
    let out = smp("Pod", &pod(), patch).expect("patched");
    assert_eq!(
        names(&out["spec"]["containers"]),
        ["main", "proxy", "sidecar"]
    );
    assert_eq!(
        out["spec"]["containers"][1],
        json!({"name": "proxy", "image": "envoy"})
    );
}

#[test]
fn without_set_element_order_merged_items_keep_their_place() {
    let patch = json!({"spec": {"containers": [{"name": "sidecar", "image": "busybox:2"}]}});
    let out = smp("Pod", &pod(), patch).expect("patched");
    assert_eq!(names(&out["spec"]["containers"]), ["main", "sidecar"]);
    assert_eq!(out["spec"]["containers"][1]["image"], "busybox:2");
    assert_eq!(
        out["spec"]["containers"][1]["command"],
        json!(["sleep", "infinity"])
    );
}

#[test]
fn set_element_order_contradicting_the_patch_list_is_rejected() {
    let patch = json!({
        "spec": {
            "$setElementOrder/containers": [{"name": "main"}, {"name": "sidecar"}],
            "containers": [{"name": "sidecar", "image": "a"}, {"name": "main", "image": "b"}]
        }
    });
    let err = smp("Pod", &pod(), patch).expect_err("order mismatch");
    assert!(
        err.to_string().starts_with("The order in patch list:\n"),
        "{err}"
    );
    assert_eq!(err.http_status(), 500);
}

#[test]
fn patch_replace_in_a_list_replaces_the_list() {
    let patch =
        json!({"spec": {"containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}]}});
    let out = smp("Pod", &pod(), patch).expect("patched");
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "only", "image": "x"}])
    );
}

#[test]
fn patch_replace_in_a_map_replaces_the_map() {
    let patch = json!({"metadata": {"labels": {"$patch": "replace", "tier": "back"}}});
    let out = smp("Pod", &pod(), patch).expect("patched");
    assert_eq!(out["metadata"]["labels"], json!({"tier": "back"}));
    assert_eq!(out["metadata"]["name"], "web");
}

#[test]
fn patch_delete_in_a_map_removes_it_and_merge_is_the_default() {
    let out = smp(
        "Pod",
        &pod(),
        json!({"metadata": {"annotations": {"$patch": "delete"}}}),
    )
    .expect("patched");
    assert!(out["metadata"].get("annotations").is_none());
    let out = smp(
        "Pod",
        &pod(),
        json!({"metadata": {"labels": {"$patch": "merge", "x": "y"}}}),
    )
    .expect("patched");
    assert_eq!(out["metadata"]["labels"], json!({"app": "web", "x": "y"}));
}

#[test]
fn null_deletes_a_field() {
    let out = smp(
        "Pod",
        &pod(),
        json!({"spec": {"activeDeadlineSeconds": null}}),
    )
    .expect("patched");
    assert!(out["spec"].get("activeDeadlineSeconds").is_none());
    assert_eq!(out["spec"]["restartPolicy"], "Always");
}

#[test]
fn retain_keys_drops_the_other_volume_source() {
    let patch = json!({
        "spec": {
            "$setElementOrder/volumes": [{"name": "data"}],
            "volumes": [{"$retainKeys": ["hostPath", "name"], "hostPath": {"path": "/srv"}, "name": "data"}]
        }
    });
    let out = smp("Pod", &pod(), patch).expect("patched");
    assert_eq!(
        out["spec"]["volumes"],
        json!([{"name": "data", "hostPath": {"path": "/srv"}}])
    );
}

#[test]
fn retain_keys_on_deployment_strategy() {
    let deployment = json!({
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}
    });
    let out = smp(
        "Deployment",
        &deployment,
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}}),
    )
    .expect("patched");
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(out["spec"]["replicas"], 2);

    let err = smp(
        "Deployment",
        &deployment,
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 2}}}}),
    )
    .expect_err("patch sets a key it does not retain");
    assert_eq!(err, PatchError::RetainKeysFormat);
    assert_eq!(err.http_status(), 400);
    assert_eq!(err.to_string(), "invalid patch format of retainKeys");
}

#[test]
fn finalizers_merge_as_a_set_and_delete_from_primitive_list() {
    let out = smp(
        "Pod",
        &pod(),
        json!({"metadata": {
            "$setElementOrder/finalizers": ["example.com/b", "example.com/c"],
            "$deleteFromPrimitiveList/finalizers": ["example.com/a"],
            "finalizers": ["example.com/c"]
        }}),
    )
    .expect("patched");
    assert_eq!(
        out["metadata"]["finalizers"],
        json!(["example.com/b", "example.com/c"])
    );

    let out = smp(
        "Pod",
        &pod(),
        json!({"metadata": {"finalizers": ["example.com/b", "example.com/z"]}}),
    )
    .expect("patched");
    let mut got: Vec<&str> = out["metadata"]["finalizers"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    got.sort_unstable();
    assert_eq!(got, ["example.com/a", "example.com/b", "example.com/z"]);
}

#[test]
fn lists_without_a_strategy_are_replaced() {
    let out = smp(
        "Pod",
        &pod(),
        json!({"spec": {"containers": [{"name": "main", "args": ["-v"]}], "tolerations": [{"operator": "Exists"}]}}),
    )
    .expect("patched");
    assert_eq!(out["spec"]["containers"][0]["args"], json!(["-v"]));
    assert_eq!(out["spec"]["tolerations"], json!([{"operator": "Exists"}]));
}

#[test]
fn container_ports_merge_by_container_port() {
    let out = smp(
        "Pod",
        &pod(),
        json!({"spec": {"containers": [{"name": "main", "ports": [{"containerPort": 443, "name": "https"}, {"containerPort": 80, "name": "http"}]}]}}),
    )
    .expect("patched");
    assert_eq!(
        out["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 443, "name": "https"}, {"containerPort": 80, "name": "http", "protocol": "TCP"}])
    );
}

#[test]
fn service_ports_merge_by_port() {
    let service = json!({
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 8443}], "selector": {"app": "web"}}
    });
    let out = smp(
        "Service",
        &service,
        json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
    )
    .expect("patched");
    assert_eq!(
        out["spec"]["ports"],
        json!([{"port": 80, "targetPort": 9090}, {"port": 443, "targetPort": 8443}])
    );
    // Merge patch replaces the list instead.
    let merged = apply_patch(
        "Service",
        &service,
        PatchType::Merge,
        br#"{"spec":{"ports":[{"port":80,"targetPort":9090}]}}"#,
    )
    .expect("patched");
    assert_eq!(
        merged["spec"]["ports"],
        json!([{"port": 80, "targetPort": 9090}])
    );
}

#[test]
fn workload_templates_merge_containers_by_name() {
    for kind in ["Deployment", "ReplicaSet", "Job"] {
        let object = json!({
            "kind": kind,
            "metadata": {"name": "w"},
            "spec": {"template": {
                "metadata": {"labels": {"app": "w"}},
                "spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1",
                         "env": [{"name": "X", "value": "1"}]}]}
            }}
        });
        let out = smp(
            kind,
            &object,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "env": [{"name": "Y", "value": "2"}]}]}}}}),
        )
        .expect("patched");
        let containers = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(names(containers), ["a", "b"], "{kind}");
        assert_eq!(containers[1]["image"], "b:1", "{kind}");
        assert_eq!(
            containers[1]["env"],
            json!([{"name": "Y", "value": "2"}, {"name": "X", "value": "1"}]),
            "{kind}"
        );
    }
}

#[test]
fn status_conditions_merge_by_type() {
    let out = smp(
        "Pod",
        &pod(),
        json!({"status": {"$setElementOrder/conditions": [{"type": "Initialized"}, {"type": "Ready"}, {"type": "ContainersReady"}],
                          "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}]}}),
    )
    .expect("patched");
    assert_eq!(
        out["status"]["conditions"],
        json!([
            {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": "True"},
            {"type": "ContainersReady", "status": "True"}
        ])
    );
    assert_eq!(out["status"]["phase"], "Running");
}

#[test]
fn owner_references_merge_by_uid() {
    let object = json!({"kind": "ConfigMap", "metadata": {"name": "c", "ownerReferences": [
        {"uid": "1", "name": "a", "kind": "Pod", "apiVersion": "v1"}]}, "data": {"k": "v"}});
    let out = smp(
        "ConfigMap",
        &object,
        json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "b", "kind": "Pod", "apiVersion": "v1"}]}, "data": {"k2": "v2"}}),
    )
    .expect("patched");
    let uids: Vec<&str> = out["metadata"]["ownerReferences"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r["uid"].as_str())
        .collect();
    let mut sorted = uids.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["1", "2"]);
    assert_eq!(out["data"], json!({"k": "v", "k2": "v2"}));
}

#[test]
fn unknown_kinds_replace_lists() {
    let object = json!({"kind": "Widget", "spec": {"containers": [{"name": "a"}], "n": 1}});
    let out = smp(
        "Widget",
        &object,
        json!({"spec": {"containers": [{"name": "b"}]}}),
    )
    .expect("patched");
    assert_eq!(out["spec"], json!({"containers": [{"name": "b"}], "n": 1}));
}

#[test]
fn new_fields_get_their_directives_resolved() {
    let object =
        json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
    let out = smp(
        "Pod",
        &object,
        json!({"metadata": {"labels": {"a": "1", "b": null}},
               "spec": {"initContainers": [{"name": "i", "env": [{"name": "E", "value": "v"}, {"$patch": "delete", "name": "F"}]}]}}),
    )
    .expect("patched");
    assert_eq!(out["metadata"]["labels"], json!({"a": "1"}));
    assert_eq!(
        out["spec"]["initContainers"],
        json!([{"name": "i", "env": [{"name": "E", "value": "v"}]}])
    );
}

#[test]
fn strategic_patch_errors_match_the_api_server() {
    let err = smp(
        "Pod",
        &pod(),
        json!({"spec": {"containers": [{"image": "nginx"}]}}),
    )
    .expect_err("no merge key");
    assert_eq!(
        err.to_string(),
        "map: map[image:nginx] does not contain declared merge key: name"
    );
    assert_eq!(err.http_status(), 500);
    assert_eq!(err.reason(), "");

    let err = smp(
        "Pod",
        &pod(),
        json!({"metadata": {"labels": {"$patch": "bogus"}}}),
    )
    .expect_err("bad directive");
    assert_eq!(
        err.to_string(),
        "unknown patch type: bogus in map: map[$patch:bogus]"
    );

    let err = smp(
        "Pod",
        &json!({"metadata": {"name": "p"}}),
        json!({"metadata": {"finalizers": [["x"]]}}),
    )
    .expect_err("list of lists");
    assert_eq!(err, PatchError::ListOfLists);
    assert_eq!(err.http_status(), 422);

    let err = smp(
        "Pod",
        &pod(),
        json!({"spec": {"$setElementOrder/containers": {"name": "main"}}}),
    )
    .expect_err("order is not a list");
    assert_eq!(err, PatchError::SetElementOrderFormat);

    let err = smp(
        "Pod",
        &pod(),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "x"}}),
    )
    .expect_err("deletions are not a list");
    assert_eq!(err, PatchError::PrimitiveListFormat);

    let err = apply_patch("Pod", &pod(), PatchType::Strategic, b"[1]").expect_err("array");
    assert_eq!(
        err.to_string(),
        "json: cannot unmarshal array into Go value of type map[string]interface {}"
    );
    assert_eq!(err.http_status(), 400);
    assert_eq!(err.reason(), "BadRequest");

    let err = apply_patch("Pod", &pod(), PatchType::Strategic, b"{nope").expect_err("not json");
    assert_eq!(err.http_status(), 400);
}

#[test]
fn error_maps_print_numbers_like_go() {
    let err = smp(
        "Pod",
        &pod(),
        json!({"spec": {"containers": [{"ports": [{"containerPort": 8080}], "size": 1_500_000, "ratio": 0.5}]}}),
    )
    .expect_err("no merge key");
    assert_eq!(
        err.to_string(),
        "map: map[ports:[map[containerPort:8080]] ratio:0.5 size:1.5e+06] does not contain declared merge key: name"
    );
}

#[test]
fn json_patch_applies_operations() {
    let out = apply_patch(
        "Pod",
        &pod(),
        PatchType::Json,
        br#"[{"op":"replace","path":"/spec/containers/1/image","value":"busybox:2"},
             {"op":"add","path":"/metadata/labels/tier","value":"front"},
             {"op":"remove","path":"/spec/activeDeadlineSeconds"}]"#,
    )
    .expect("patched");
    assert_eq!(out["spec"]["containers"][1]["image"], "busybox:2");
    assert_eq!(out["metadata"]["labels"]["tier"], "front");
    assert!(out["spec"].get("activeDeadlineSeconds").is_none());

    let err = apply_patch(
        "Pod",
        &pod(),
        PatchType::Json,
        br#"[{"op":"test","path":"/metadata/name","value":"other"}]"#,
    )
    .expect_err("test fails");
    assert_eq!(err.http_status(), 422);
    assert_eq!(err.reason(), "Invalid");

    let err = apply_patch(
        "Pod",
        &pod(),
        PatchType::Json,
        br#"[{"op":"remove","path":"/spec/nothing"}]"#,
    )
    .expect_err("missing path");
    assert_eq!(err.http_status(), 422);

    let err = apply_patch("Pod", &pod(), PatchType::Json, br#"{"op":"remove"}"#)
        .expect_err("not a patch");
    assert_eq!(err.http_status(), 400);
}

/// The example of RFC 7386, section 3.
#[test]
fn merge_patch_follows_rfc_7386() {
    let original = json!({
        "title": "Goodbye!",
        "author": {"givenName": "John", "familyName": "Doe"},
        "tags": ["example", "sample"],
        "content": "This will be unchanged"
    });
    let out = apply_patch(
        "Widget",
        &original,
        PatchType::Merge,
        br#"{"title":"Hello!","phoneNumber":"+01-123-456-7890","author":{"familyName":null},"tags":["example"]}"#,
    )
    .expect("patched");
    assert_eq!(
        out,
        json!({
            "title": "Hello!",
            "author": {"givenName": "John"},
            "tags": ["example"],
            "content": "This will be unchanged",
            "phoneNumber": "+01-123-456-7890"
        })
    );
    let err = apply_patch("Widget", &original, PatchType::Merge, b"\"x\"").expect_err("string");
    assert_eq!(err.http_status(), 400);
}

// ---- property tests ----

/// JSON trees of maps and scalars (no lists, no `$` keys).
fn tree() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::from),
        (-5i64..5).prop_map(Value::from),
        prop::sample::select(vec!["x", "y", ""]).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c", "d"]), inner, 0..4)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
    })
}

/// Like [`tree`] but values may be `null` (deletions).
fn patch_tree() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-5i64..5).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c", "d"]), inner, 0..4)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
    })
}

fn object(v: Value) -> Value {
    if v.is_object() { v } else { json!({"a": v}) }
}

/// The RFC 7386 patch that turns `from` into `to`.
fn merge_diff(from: &Value, to: &Value) -> Value {
    match (from, to) {
        (Value::Object(f), Value::Object(t)) => {
            let mut patch = serde_json::Map::new();
            for k in f.keys().filter(|k| !t.contains_key(*k)) {
                patch.insert(k.clone(), Value::Null);
            }
            for (k, tv) in t {
                match f.get(k) {
                    Some(fv) if fv == tv => {}
                    Some(fv) => {
                        patch.insert(k.clone(), merge_diff(fv, tv));
                    }
                    None => {
                        patch.insert(k.clone(), tv.clone());
                    }
                }
            }
            Value::Object(patch)
        }
        (_, to) => to.clone(),
    }
}

proptest! {
    /// Without lists or directives, a strategic merge patch is a JSON merge patch.
    #[test]
    fn strategic_equals_merge_without_lists(original in tree(), patch in patch_tree()) {
        let original = object(original);
        let patch = object(patch);
        let body = patch.to_string();
        let merged = apply_patch("ConfigMap", &original, PatchType::Merge, body.as_bytes());
        let strategic = apply_patch("ConfigMap", &original, PatchType::Strategic, body.as_bytes());
        prop_assert_eq!(merged, strategic);
    }

    /// Applying the merge diff of two objects turns one into the other.
    #[test]
    fn merge_diff_round_trips(from in tree(), to in tree()) {
        let (from, to) = (object(from), object(to));
        let patch = merge_diff(&from, &to).to_string();
        let out = apply_patch("Pod", &from, PatchType::Merge, patch.as_bytes());
        prop_assert_eq!(out, Ok(to.clone()));
        let out = apply_patch("ConfigMap", &from, PatchType::Strategic, patch.as_bytes());
        prop_assert_eq!(out, Ok(to));
    }

    /// `json_patch::diff` output applied through `apply_patch` gives the target.
    #[test]
    fn json_patch_diff_round_trips(from in tree(), to in tree()) {
        let (from, to) = (object(from), object(to));
        let ops = serde_json::to_string(&json_patch::diff(&from, &to)).expect("serialises");
        prop_assert_eq!(apply_patch("Pod", &from, PatchType::Json, ops.as_bytes()), Ok(to));
    }

    /// A kubectl-style patch (changed and new items, `$patch: delete` for removed
    /// ones, `$setElementOrder` for the order) turns one container list into another,
    /// order included.
    #[test]
    fn container_list_patches_round_trip(
        from in prop::sample::subsequence(vec!["a", "b", "c", "d", "e"], 0..=5).prop_shuffle(),
        to in prop::sample::subsequence(vec!["a", "b", "c", "d", "e"], 0..=5).prop_shuffle(),
        images in prop::collection::vec(prop::sample::select(vec!["img:1", "img:2"]), 10),
    ) {
        let image = |name: &str, offset: usize| {
            let i = (name.as_bytes()[0] - b'a') as usize;
            images[i + offset]
        };
        let container = |name: &str, offset: usize| json!({"name": name, "image": image(name, offset), "command": [name]});
        let original = json!({"metadata": {"name": "p"}, "spec": {"containers": from.iter().map(|n| container(n, 0)).collect::<Vec<_>>()}});
        let target: Vec<Value> = to.iter().map(|n| container(n, 5)).collect();

        let mut items: Vec<Value> = Vec::new();
        for n in &to {
            if !from.contains(n) {
                items.push(container(n, 5));
            } else if image(n, 0) != image(n, 5) {
                items.push(json!({"name": n, "image": image(n, 5)}));
            }
        }
        for n in from.iter().filter(|n| !to.contains(n)) {
            items.push(json!({"$patch": "delete", "name": n}));
        }
        let order: Vec<Value> = to.iter().map(|n| json!({"name": n})).collect();
        let patch = json!({"spec": {"$setElementOrder/containers": order, "containers": items}});
        let out = smp("Pod", &original, patch).expect("patched");
        prop_assert_eq!(&out["spec"]["containers"], &Value::Array(target));
    }

    /// Finalizer patches as kubectl builds them give exactly the target list.
    #[test]
    fn finalizer_patches_round_trip(
        from in prop::sample::subsequence(vec!["f1", "f2", "f3", "f4"], 0..=4).prop_shuffle(),
        to in prop::sample::subsequence(vec!["f1", "f2", "f3", "f4"], 0..=4).prop_shuffle(),
    ) {
        let original = json!({"metadata": {"name": "p", "finalizers": from}});
        let added: Vec<&str> = to.iter().copied().filter(|f| !from.contains(f)).collect();
        let removed: Vec<&str> = from.iter().copied().filter(|f| !to.contains(f)).collect();
        let patch = json!({"metadata": {
            "$setElementOrder/finalizers": to,
            "$deleteFromPrimitiveList/finalizers": removed,
            "finalizers": added,
        }});
        let out = smp("Pod", &original, patch).expect("patched");
        prop_assert_eq!(&out["metadata"]["finalizers"], &json!(to));
    }
}
