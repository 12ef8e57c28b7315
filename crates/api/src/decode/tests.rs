use super::*;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn err(text: &str) -> DecodeError {
    match decode_manifests("pod.yaml", text) {
        Ok(objects) => panic!("expected an error, decoded {objects:?}"),
        Err(e) => e,
    }
}

fn pod(object: &Object) -> &Pod {
    match object {
        Object::Pod(p) => p,
        other => panic!("expected a Pod, got {}", other.kind()),
    }
}

const SIDECAR_POD: &str = "\
# a pod with a native sidecar
apiVersion: v1
kind: Pod
metadata:
  name: sleep
  labels: {app: sleep}
spec:
  restartPolicy: Never
  initContainers:
  - name: proxy
    image: tandem/proxy
    restartPolicy: Always
    ports:
    - containerPort: 15001
    startupProbe:
      httpGet: {path: /ready, port: 15021}
  containers:
  - name: app
    image: busybox
    command: [sleep, '5']
";

#[test]
fn decodes_a_pod_with_a_sidecar() {
    let objects = decode_manifests("pod.yaml", SIDECAR_POD).expect("valid pod");
    assert_eq!(objects.len(), 1);
    let p = pod(&objects[0]);
    assert_eq!(p.metadata.name.as_deref(), Some("sleep"));
    let spec = p.spec.as_ref().expect("spec");
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    let init = &spec.init_containers.as_ref().expect("init containers")[0];
    assert_eq!(init.restart_policy.as_deref(), Some("Always"));
    let probe = init.startup_probe.as_ref().expect("startup probe");
    let get = probe.http_get.as_ref().expect("httpGet");
    assert_eq!(get.port, IntOrString::Int(15021));
    assert_eq!(
        spec.containers[0].command.as_deref(),
        Some(&["sleep".to_owned(), "5".to_owned()][..])
    );
}

#[test]
fn several_documents_empty_ones_skipped_and_positions_kept() {
    let text = "---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n---\n# only a comment\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {k: v}\n";
    let located = decode_manifests_located("all.yaml", text).expect("valid");
    let kinds: Vec<_> = located.iter().map(|m| (m.object.kind(), m.line)).collect();
    assert_eq!(kinds, vec![("ConfigMap", 3), ("Secret", 10)]);
    assert_eq!(located[1].object.name(), Some("s"));
}

#[test]
fn json_is_accepted() {
    let text = "{\n\t\"apiVersion\": \"v1\",\n\t\"kind\": \"Pod\",\n\t\"metadata\": {\"name\": \"j\"},\n\t\"spec\": {\"containers\": [{\"name\": \"a\", \"image\": \"b\"}]}\n}\n";
    let objects = decode_manifests("pod.json", text).expect("valid json");
    assert_eq!(pod(&objects[0]).metadata.name.as_deref(), Some("j"));
}

#[test]
fn json_errors_keep_positions() {
    let text = "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"Pod\",\n  \"spec\": {\"containers\": [{\"name\": 5}]}\n}\n";
    let e = decode_manifests("pod.json", text).expect_err("name is a number");
    assert_eq!(
        e.to_string(),
        "pod.json:4:36: spec.containers[0].name: invalid type: integer `5`, expected a string"
    );
}

#[test]
fn list_is_flattened() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: one}\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: two}\n  spec:\n    containers: [{name: a, image: b}]\n";
    let located = decode_manifests_located("list.yaml", text).expect("valid list");
    let names: Vec<_> = located
        .iter()
        .map(|m| {
            (
                m.object.kind(),
                m.object.name().unwrap_or(""),
                m.line,
                m.column,
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![("ConfigMap", "one", 4, 3), ("Pod", "two", 7, 3)]
    );
}

#[test]
fn errors_inside_list_items_point_into_the_item() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  spec:\n    containers: [{name: a, image: b, tty: maybe}]\n";
    assert_eq!(
        err(text).to_string(),
        "pod.yaml:7:43: spec.containers[0].tty: invalid type: string \"maybe\", expected a boolean"
    );
}

#[test]
fn wrong_type_names_path_and_value_position() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: app\n    image: busybox\n    ports:\n    - containerPort: \"http\"\n";
    let e = err(text);
    assert_eq!(
        e.to_string(),
        "pod.yaml:10:22: spec.containers[0].ports[0].containerPort: invalid type: string \"http\", expected i32"
    );
    assert_eq!((e.file(), e.line(), e.column()), ("pod.yaml", 10, 22));
    assert_eq!(
        e.message(),
        "spec.containers[0].ports[0].containerPort: invalid type: string \"http\", expected i32"
    );
}

#[test]
fn a_number_is_not_a_string() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels:\n    version: 2\n";
    assert_eq!(
        err(text).to_string(),
        "pod.yaml:6:14: metadata.labels[version]: invalid type: integer `2`, expected a string"
    );
}

#[test]
fn unknown_fields_are_rejected_like_strict_field_validation() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: app\n    image: busybox\n  - name: b\n    imagee: busybox\n";
    let e = err(text);
    assert_eq!(
        e.to_string(),
        "pod.yaml:10:5: strict decoding error: unknown field \"spec.containers[1].imagee\""
    );
}

#[test]
fn a_misspelt_restart_policy_is_not_ignored() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  initContainers:\n  - name: proxy\n    image: tandem/proxy\n    restartpolicy: Always\n  containers: [{name: a, image: b}]\nbogus: 1\n";
    assert_eq!(
        err(text).to_string(),
        "pod.yaml:8:5: strict decoding error: unknown field \"spec.initContainers[0].restartpolicy\", unknown field \"bogus\""
    );
}

#[test]
fn generated_manifests_with_nulls_and_empty_objects_decode() {
    // What `kubectl run --dry-run=client -o yaml` prints.
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  creationTimestamp: null\n  labels:\n    run: x\n  name: x\nspec:\n  containers:\n  - image: busybox\n    name: x\n    resources: {}\n  dnsPolicy: ClusterFirst\n  restartPolicy: Always\nstatus: {}\n";
    let objects = decode_manifests("x.yaml", text).expect("valid");
    let p = pod(&objects[0]);
    assert_eq!(p.metadata.creation_timestamp, None);
    assert_eq!(p.spec.as_ref().map(|s| s.containers.len()), Some(1));
}

#[test]
fn octal_modes_are_read_as_kubernetes_does() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: b}]\n  volumes:\n  - name: cfg\n    configMap: {name: c, defaultMode: 0644}\n";
    let objects = decode_manifests("p.yaml", text).expect("valid");
    let volumes = pod(&objects[0])
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone());
    let mode = volumes
        .and_then(|v| v[0].config_map.clone())
        .and_then(|c| c.default_mode);
    assert_eq!(mode, Some(420));
}

#[test]
fn unknown_kind_points_at_the_kind_key() {
    let text = "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n";
    assert_eq!(
        err(text).to_string(),
        "pod.yaml:3:1: unknown kind \"Deployment\" (apiVersion \"apps/v1\")"
    );
}

#[test]
fn pod_must_be_v1() {
    let text = "kind: Pod\napiVersion: apps/v1\n";
    assert_eq!(
        err(text).to_string(),
        "pod.yaml:2:1: no matches for kind \"Pod\" in version \"apps/v1\""
    );
}

#[test]
fn missing_kind_and_api_version() {
    assert_eq!(
        err("\n\napiVersion: v1\nmetadata: {}\n").to_string(),
        "pod.yaml:3:1: kind not set"
    );
    assert_eq!(
        err("kind: Pod\nmetadata: {name: p}\n").to_string(),
        "pod.yaml:1:1: apiVersion not set"
    );
    assert_eq!(
        err("apiVersion: v1\nkind: 7\n").to_string(),
        "pod.yaml:2:7: kind: invalid type: integer, expected a string"
    );
}

#[test]
fn syntax_errors_are_one_line_with_position() {
    let e = err("apiVersion: v1\nkind: Pod\nmetadata:\n  labels: [a, b\n  name: x\n");
    assert!(matches!(e, DecodeError::Syntax { .. }), "{e:?}");
    let text = e.to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(text.starts_with("pod.yaml:5:"), "{text}");

    assert_eq!(
        err("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  name: q\n").to_string(),
        "pod.yaml:5:3: duplicate mapping key `name` is not allowed here"
    );
    assert_eq!(
        err("a: \"unterminated\n").to_string(),
        "pod.yaml:1:4: unclosed quote"
    );
}

#[test]
fn a_document_must_be_an_object() {
    assert_eq!(
        err("- a\n- b\n").to_string(),
        "pod.yaml:1:1: expected an object with apiVersion and kind, found sequence"
    );
    assert_eq!(
        err("apiVersion: v1\nkind: List\nitems: [hello]\n").to_string(),
        "pod.yaml:3:9: expected an object with apiVersion and kind, found string"
    );
}

#[test]
fn bad_base64_in_a_secret() {
    let text = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  key: '!!!'\n";
    let e = err(text);
    assert_eq!((e.line(), e.column()), (6, 8));
    assert!(e.message().starts_with("data[key]: "), "{e}");
}

#[test]
fn empty_input_decodes_to_nothing() {
    assert_eq!(decode_manifests("e.yaml", ""), Ok(vec![]));
    assert_eq!(decode_manifests("e.yaml", "# nothing\n---\n"), Ok(vec![]));
}

#[test]
fn plain_scalars_are_typed_like_kubectl_reads_them() {
    // sigs.k8s.io/yaml resolves YAML 1.1 booleans: `value: yes` is not a string.
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: a\n    image: b\n    env: [{name: DEBUG, value: yes}]\n";
    assert_eq!(
        err(text).to_string(),
        "pod.yaml:8:32: spec.containers[0].env[0].value: invalid type: boolean `true`, expected a string"
    );
    let quoted = text.replace("value: yes", "value: 'yes'");
    assert!(decode_manifests("pod.yaml", &quoted).is_ok());
}

#[test]
fn null_is_called_null_in_messages() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: a\n    image: b\n    resources:\n      limits: {cpu: ~}\n";
    assert_eq!(
        err(text).to_string(),
        "pod.yaml:9:21: spec.containers[0].resources.limits[cpu]: invalid type: null, expected Quantity"
    );
}

#[test]
fn null_leaves_the_zero_value_like_go() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: a\n    image: b\n    command: [sh, null]\n    livenessProbe:\n      httpGet: {port: ~}\n";
    let objects = decode_manifests("pod.yaml", text).expect("nulls are accepted");
    let c = &pod(&objects[0]).spec.as_ref().expect("spec").containers[0];
    assert_eq!(
        c.command.as_deref(),
        Some(&["sh".to_owned(), String::new()][..])
    );
    let port = c
        .liveness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .map(|g| g.port.clone());
    assert_eq!(port, Some(IntOrString::Int(0)));
}
