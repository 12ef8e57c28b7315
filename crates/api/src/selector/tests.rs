use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use proptest::prelude::*;
use serde_json::json;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn label_error(s: &str) -> String {
    match LabelSelector::parse(s) {
        Ok(sel) => panic!("{s:?} parsed as {sel}"),
        Err(e) => e.to_string(),
    }
}

fn selects(s: &str, pairs: &[(&str, &str)]) -> bool {
    LabelSelector::parse(s)
        .unwrap_or_else(|e| panic!("{s:?}: {e}"))
        .matches(&labels(pairs))
}

#[test]
fn label_selector_operators_match_like_kubernetes() {
    let web = [("app", "web"), ("tier", "front"), ("n", "7")];
    assert!(selects("app=web", &web));
    assert!(selects("app==web", &web));
    assert!(!selects("app=db", &web));
    assert!(selects("app!=db", &web));
    assert!(selects("missing!=x", &web), "!= matches a missing label");
    assert!(selects("tier in (front,back)", &web));
    assert!(!selects("tier in (back)", &web));
    assert!(!selects("missing in (x)", &web));
    assert!(selects("tier notin (back)", &web));
    assert!(selects("missing notin (x)", &web));
    assert!(selects("app", &web));
    assert!(!selects("!app", &web));
    assert!(selects("!canary", &web));
    assert!(selects("n>5", &web));
    assert!(!selects("n<5", &web));
    assert!(
        !selects("app>5", &web),
        "a non-integer label never compares"
    );
    assert!(selects("app=web,tier in (front),!canary,n", &web));
    assert!(!selects("app=web,tier=back", &web));
    assert!(selects("", &web));
    assert!(selects("  app = web ,  tier  ", &web));
}

#[test]
fn empty_values_and_keywords_as_identifiers() {
    assert!(selects("x=", &[("x", "")]));
    assert!(!selects("x=", &[("x", "a")]));
    assert!(selects("x in (,a)", &[("x", "")]));
    assert!(selects("x in (a,)", &[("x", "a")]));
    assert!(selects("x in ()", &[("x", "")]));
    // `in` and `notin` are keywords only where an operator is expected.
    assert!(selects("notin in (in)", &[("notin", "in")]));
    assert!(selects("in=notin", &[("in", "notin")]));
}

#[test]
fn label_selectors_print_in_canonical_form() {
    let sel = LabelSelector::parse("z notin (b,a), !y,x>1, a==b,b!=c,c in (q)").expect("parses");
    assert_eq!(sel.to_string(), "a==b,b!=c,c in (q),x>1,!y,z notin (a,b)");
    assert_eq!(sel.requirements().len(), 6);
    assert_eq!(sel.requirements()[0].key(), "a");
    assert_eq!(sel.requirements()[0].operator(), Operator::DoubleEquals);
    assert!(LabelSelector::parse("").expect("empty").is_empty());
}

#[test]
fn label_selector_parse_errors_match_kubernetes() {
    assert_eq!(
        label_error("x=a,"),
        "found '', expected: identifier after ','"
    );
    assert_eq!(
        label_error("=a"),
        "found '=', expected: !, identifier, or 'end of string'"
    );
    assert_eq!(
        label_error("a b"),
        "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
    );
    assert_eq!(
        label_error("x in a"),
        "unable to parse requirement: found 'a' expected: '('"
    );
    assert_eq!(
        label_error("x in (a b)"),
        "unable to parse requirement: found 'b', expected: ',' or ')'"
    );
    assert_eq!(
        label_error("x=(a"),
        "unable to parse requirement: found '(', expected: identifier"
    );
    assert_eq!(
        label_error("!a=b"),
        "found '=', expected: ',' or 'end of string'"
    );
    assert_eq!(
        label_error("x>a"),
        "unable to parse requirement: values[0]: Invalid value: \"a\": for 'Gt', 'Lt' operators, the value must be an integer"
    );
    let key = label_error("-x=a");
    assert!(
        key.starts_with(
            "unable to parse requirement: <nil>: Invalid value: \"-x\": name part must consist of alphanumeric characters"
        ),
        "{key}"
    );
    let value = label_error("x=-a");
    assert!(
        value.starts_with(
            "unable to parse requirement: values[0][x]: Invalid value: \"-a\": a valid label must be an empty string or consist of alphanumeric characters"
        ),
        "{value}"
    );
}

fn api_selector(value: serde_json::Value) -> meta::LabelSelector {
    serde_json::from_value(value).expect("a LabelSelector")
}

#[test]
fn label_selectors_from_api_objects() {
    let sel = LabelSelector::from_api(&api_selector(json!({
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["front", "back"]},
            {"key": "env", "operator": "NotIn", "values": ["prod"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "team", "operator": "Exists"}
        ]
    })))
    .expect("valid");
    assert_eq!(
        sel.to_string(),
        "app=web,!canary,env notin (prod),team,tier in (back,front)"
    );
    assert!(sel.matches(&labels(&[("app", "web"), ("tier", "back"), ("team", "a")])));
    assert!(!sel.matches(&labels(&[
        ("app", "web"),
        ("tier", "back"),
        ("team", "a"),
        ("canary", "1")
    ])));
    assert!(!sel.matches(&labels(&[
        ("app", "web"),
        ("tier", "back"),
        ("team", "a"),
        ("env", "prod")
    ])));

    let everything = LabelSelector::from_api(&meta::LabelSelector::default()).expect("empty");
    assert!(everything.is_empty());
    assert!(everything.matches(&labels(&[("any", "thing")])));
}

#[test]
fn invalid_api_selectors_are_rejected_with_kubernetes_messages() {
    let err = LabelSelector::from_api(&api_selector(json!({
        "matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]
    })))
    .expect_err("bad operator");
    assert_eq!(
        err.to_string(),
        "\"Gt\" is not a valid label selector operator"
    );
    let err = LabelSelector::from_api(&api_selector(json!({
        "matchExpressions": [{"key": "a", "operator": "In"}]
    })))
    .expect_err("no values");
    assert_eq!(
        err.to_string(),
        "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty"
    );
    let err = LabelSelector::from_api(&api_selector(json!({
        "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x", "y"]}]
    })))
    .expect_err("values with Exists");
    assert_eq!(
        err.to_string(),
        "values: Invalid value: []string{\"x\", \"y\"}: values set must be empty for exists and does not exist"
    );
    let err = LabelSelector::from_api(&api_selector(json!({"matchLabels": {"bad key": "v"}})))
        .expect_err("bad key");
    assert!(
        err.to_string()
            .starts_with("key: Invalid value: \"bad key\": name part must consist"),
        "{err}"
    );
}

fn pod() -> serde_json::Value {
    json!({
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"nodeName": "node1", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                 "serviceAccountName": "default"},
        "status": {"phase": "Running", "podIP": "10.0.0.7", "podIPs": [{"ip": "10.0.0.7"}, {"ip": "fd00::7"}]}
    })
}

fn field(s: &str) -> FieldSelector {
    FieldSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

#[test]
fn field_selectors_match_pod_fields() {
    let pod = pod();
    assert!(field("metadata.name=web").matches("Pod", &pod));
    assert!(field("metadata.name==web,metadata.namespace=default").matches("Pod", &pod));
    assert!(!field("metadata.name=other").matches("Pod", &pod));
    assert!(field("metadata.name!=other").matches("Pod", &pod));
    assert!(field("status.phase=Running,spec.nodeName=node1").matches("Pod", &pod));
    assert!(field("spec.host=node1").matches("Pod", &pod));
    assert!(field("status.podIP=10.0.0.7").matches("Pod", &pod));
    assert!(
        field("spec.restartPolicy=Always,spec.schedulerName=default-scheduler")
            .matches("Pod", &pod)
    );
    assert!(field("spec.serviceAccountName=default").matches("Pod", &pod));
    assert!(field("status.nominatedNodeName=").matches("Pod", &pod));
    assert!(field("spec.hostNetwork=false").matches("Pod", &pod));
    assert!(field("").matches("Pod", &pod));
    assert!(
        !field("spec.replicas=1").matches("Pod", &pod),
        "unsupported fields never match"
    );
    assert_eq!(
        field("metadata.name=web").exact("metadata.name"),
        Some("web")
    );
    assert_eq!(field("metadata.name!=web").exact("metadata.name"), None);
}

#[test]
fn field_selectors_for_describe_events_and_other_kinds() {
    let event = json!({
        "kind": "Event",
        "metadata": {"name": "web.1", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default", "uid": "u-1",
                           "apiVersion": "v1", "fieldPath": "spec.containers{main}"},
        "reason": "Started", "type": "Normal", "reportingComponent": "kubelet"
    });
    // The selector `kubectl describe pod web` sends.
    let describe =
        field("involvedObject.name=web,involvedObject.namespace=default,involvedObject.uid=u-1");
    assert!(describe.check_supported("Event").is_ok());
    assert!(describe.matches("Event", &event));
    assert!(!field("involvedObject.uid=u-2").matches("Event", &event));
    assert!(
        field("source=kubelet,reportingComponent=kubelet,reason=Started,type=Normal")
            .matches("Event", &event)
    );
    assert!(field("involvedObject.kind=Pod,involvedObject.apiVersion=v1").matches("Event", &event));
    assert!(field("involvedObject.fieldPath=spec.containers{main}").matches("Event", &event));

    let secret = json!({"metadata": {"name": "s"}, "type": "Opaque"});
    assert!(field("type=Opaque").matches("Secret", &secret));
    let node = json!({"metadata": {"name": "n"}, "spec": {}});
    assert!(field("spec.unschedulable=false").matches("Node", &node));
    assert!(!field("spec.unschedulable=true").matches("Node", &node));
    let job = json!({"metadata": {"name": "j"}, "status": {"succeeded": 1}});
    assert!(field("status.successful=1").matches("Job", &job));
    let rs = json!({"metadata": {"name": "r"}, "status": {}});
    assert!(field("status.replicas=0").matches("ReplicaSet", &rs));
    let ns = json!({"metadata": {"name": "default"}, "status": {"phase": "Active"}});
    assert!(field("status.phase=Active,metadata.name=default").matches("Namespace", &ns));
}

#[test]
fn unsupported_fields_are_reported_per_kind() {
    let check = |kind: &str, s: &str| {
        field(s)
            .check_supported(kind)
            .expect_err("unsupported")
            .to_string()
    };
    assert_eq!(
        check("Pod", "spec.replicas=1"),
        "field label not supported: spec.replicas"
    );
    assert_eq!(
        check("Event", "message=x"),
        "field label not supported: message"
    );
    assert_eq!(
        check("Deployment", "spec.replicas=1"),
        "\"spec.replicas\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
    );
    assert_eq!(
        check("Service", "spec.type=ClusterIP"),
        "field label \"spec.type\" not supported for \"Service\""
    );
    assert_eq!(
        check("Job", "status.active=1"),
        "field label \"status.active\" not supported for batchv1.Job"
    );
    // Terms are checked in sorted order, as upstream sorts them.
    assert_eq!(
        check("Pod", "zeta=1,alpha=2"),
        "field label not supported: alpha"
    );
    assert!(
        field("metadata.name=a,metadata.namespace=b")
            .check_supported("Widget")
            .is_ok()
    );
    assert!(field("status.phase=Running").check_supported("Pod").is_ok());
    assert!(
        field("status.phase=Running")
            .check_supported("Deployment")
            .is_err()
    );
}

#[test]
fn field_selector_syntax_errors_and_escapes() {
    let err = |s: &str| FieldSelector::parse(s).expect_err("invalid").to_string();
    assert_eq!(
        err("metadata.name"),
        "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
    );
    assert_eq!(
        err("metadata.name=a=b"),
        "invalid field selector: unescaped character in value: ="
    );
    assert_eq!(
        err("metadata.name=a\\x"),
        "invalid field selector: invalid escape sequence: \\x"
    );
    assert_eq!(
        err("metadata.name=a\\"),
        "invalid field selector: invalid escape sequence: \\"
    );
    let sel = field("metadata.name=a\\,b\\=c\\\\d,metadata.namespace!=x");
    assert_eq!(sel.exact("metadata.name"), Some("a,b=c\\d"));
    assert!(sel.matches(
        "Pod",
        &json!({"metadata": {"name": "a,b=c\\d", "namespace": "y"}})
    ));
    assert_eq!(
        sel.to_string(),
        "metadata.name=a\\,b\\=c\\\\d,metadata.namespace!=x"
    );
    assert!(field(",metadata.name=a,").requirements().len() == 1);
}

proptest! {
    /// A selector printed in canonical form parses back to the same selector.
    #[test]
    fn label_selector_display_round_trips(
        terms in prop::collection::vec(
            (
                prop::sample::select(vec!["a", "b.io/c", "d-e"]),
                0usize..7,
                prop::collection::btree_set(prop::sample::select(vec!["x", "y", "z1", ""]), 1..3),
            ),
            0..5,
        )
    ) {
        let text: Vec<String> = terms
            .iter()
            .map(|(key, op, values)| {
                let values: Vec<&str> = values.iter().copied().collect();
                let first = values[0];
                match op {
                    0 => format!("{key}={first}"),
                    1 => format!("{key}!={first}"),
                    2 => format!("{key} in ({})", values.join(",")),
                    3 => format!("{key} notin ({})", values.join(",")),
                    4 => (*key).to_owned(),
                    5 => format!("!{key}"),
                    _ => format!("{key}>{}", values.len()),
                }
            })
            .collect();
        let sel = LabelSelector::parse(&text.join(",")).expect("valid selector");
        let again = LabelSelector::parse(&sel.to_string()).expect("canonical form parses");
        prop_assert_eq!(&again, &sel);
        prop_assert_eq!(again.to_string(), sel.to_string());
    }

    /// `matches` is the conjunction of the terms: each term alone must match.
    #[test]
    fn label_selector_is_a_conjunction(
        keys in prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..4),
        present in prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c"]), prop::sample::select(vec!["x", "y"]), 0..3),
    ) {
        let terms: Vec<String> = keys.iter().enumerate().map(|(i, k)| match i % 3 {
            0 => format!("{k}=x"),
            1 => format!("!{k}"),
            _ => format!("{k} notin (y)"),
        }).collect();
        let set: BTreeMap<String, String> = present.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let all = LabelSelector::parse(&terms.join(",")).expect("valid").matches(&set);
        let each = terms.iter().all(|t| LabelSelector::parse(t).expect("valid").matches(&set));
        prop_assert_eq!(all, each);
    }
}
