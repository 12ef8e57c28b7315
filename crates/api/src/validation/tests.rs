use super::*;
use crate::decode::{Object, decode_manifests};
use crate::defaults::default_pod;
use k8s_openapi::api::core::v1::Pod;

/// A defaulted pod named `sleep` whose spec is `spec` (YAML, indented by two).
fn pod_with_spec(spec: &str) -> Pod {
    let text = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: sleep\nspec:\n{spec}");
    let objects = decode_manifests("t.yaml", &text).expect("test manifest decodes");
    let Some(Object::Pod(pod)) = objects.into_iter().next() else {
        panic!("not a pod");
    };
    let mut pod = *pod;
    default_pod(&mut pod);
    pod
}

fn check_with(spec: &str, gates: &FeatureGates) -> String {
    match validate_pod(&pod_with_spec(spec), gates) {
        Ok(()) => "valid".to_owned(),
        Err(e) => e.to_string(),
    }
}

fn check(spec: &str) -> String {
    check_with(spec, &FeatureGates::default())
}

const APP: &str = "  containers:\n  - name: app\n    image: busybox\n";

#[test]
fn a_plain_pod_is_valid() {
    assert_eq!(check(APP), "valid");
}

// §10 case 34
#[test]
fn restart_policy_on_a_regular_container_is_forbidden() {
    assert_eq!(
        check("  containers:\n  - name: app\n    image: busybox\n    restartPolicy: Always\n"),
        "Pod \"sleep\" is invalid: spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers"
    );
}

// §10 case 35
#[test]
fn init_restart_policy_other_than_always_is_unsupported() {
    let spec = format!(
        "  initContainers:\n  - name: setup\n    image: busybox\n    restartPolicy: OnFailure\n{APP}"
    );
    assert_eq!(
        check(&spec),
        "Pod \"sleep\" is invalid: spec.initContainers[0].restartPolicy: Unsupported value: \"OnFailure\": supported values: \"Always\""
    );
}

// §10 case 36
#[test]
fn probes_and_hooks_on_a_regular_init_container_are_forbidden() {
    for field in [
        "lifecycle",
        "livenessProbe",
        "readinessProbe",
        "startupProbe",
    ] {
        let value = if field == "lifecycle" {
            "{preStop: {exec: {command: [\"true\"]}}}"
        } else {
            "{exec: {command: [\"true\"]}}"
        };
        let spec = format!(
            "  initContainers:\n  - name: setup\n    image: busybox\n    {field}: {value}\n{APP}"
        );
        assert_eq!(
            check(&spec),
            format!(
                "Pod \"sleep\" is invalid: spec.initContainers[0].{field}: Forbidden: may not be set for init containers without restartPolicy=Always"
            )
        );
    }
}

#[test]
fn all_four_forbidden_fields_are_reported_in_kubernetes_order() {
    let spec = format!(
        "  initContainers:\n  - name: setup\n    image: busybox\n    startupProbe: {{exec: {{command: [a]}}}}\n    readinessProbe: {{exec: {{command: [a]}}}}\n    livenessProbe: {{exec: {{command: [a]}}}}\n    lifecycle: {{postStart: {{exec: {{command: [a]}}}}}}\n{APP}"
    );
    let forbidden = |f: &str| {
        format!(
            "spec.initContainers[0].{f}: Forbidden: may not be set for init containers without restartPolicy=Always"
        )
    };
    assert_eq!(
        check(&spec),
        format!(
            "Pod \"sleep\" is invalid: [{}, {}, {}, {}]",
            forbidden("lifecycle"),
            forbidden("livenessProbe"),
            forbidden("readinessProbe"),
            forbidden("startupProbe")
        )
    );
}

// §10 case 37
#[test]
fn a_sidecar_may_have_probes_and_hooks() {
    let spec = format!(
        "  initContainers:\n  - name: proxy\n    image: tandem/proxy\n    restartPolicy: Always\n    startupProbe: {{httpGet: {{port: 15021, path: /ready}}, failureThreshold: 30}}\n    readinessProbe: {{tcpSocket: {{port: 15001}}}}\n    livenessProbe: {{exec: {{command: [\"true\"]}}}}\n    lifecycle:\n      postStart: {{exec: {{command: [\"true\"]}}}}\n      preStop: {{sleep: {{seconds: 5}}}}\n{APP}"
    );
    assert_eq!(check(&spec), "valid");
}

#[test]
fn sidecar_probes_are_validated_like_main_container_probes() {
    let spec = format!(
        "  initContainers:\n  - name: proxy\n    image: tandem/proxy\n    restartPolicy: Always\n    startupProbe: {{exec: {{command: [a]}}, successThreshold: 3}}\n    livenessProbe: {{}}\n{APP}"
    );
    assert_eq!(
        check(&spec),
        "Pod \"sleep\" is invalid: [spec.initContainers[0].livenessProbe: Required value: must specify a handler type, spec.initContainers[0].startupProbe.successThreshold: Invalid value: 3: must be 1]"
    );
}

#[test]
fn missing_name_and_image() {
    assert_eq!(
        check("  containers:\n  - name: ''\n"),
        "Pod \"sleep\" is invalid: [spec.containers[0].name: Required value, spec.containers[0].image: Required value]"
    );
    assert_eq!(
        check("  containers:\n  - name: app\n"),
        "Pod \"sleep\" is invalid: spec.containers[0].image: Required value"
    );
    assert_eq!(
        check("  containers: []\n"),
        "Pod \"sleep\" is invalid: spec.containers: Required value"
    );
}

#[test]
fn duplicate_container_names() {
    assert_eq!(
        check("  containers:\n  - {name: app, image: a}\n  - {name: app, image: b}\n"),
        "Pod \"sleep\" is invalid: spec.containers[1].name: Duplicate value: \"app\""
    );
    // Across init and main containers the init container is the duplicate.
    let spec =
        format!("  initContainers:\n  - {{name: app, image: a, restartPolicy: Always}}\n{APP}");
    assert_eq!(
        check(&spec),
        "Pod \"sleep\" is invalid: spec.initContainers[0].name: Duplicate value: \"app\""
    );
}

#[test]
fn container_names_are_dns_labels() {
    assert_eq!(
        check("  containers:\n  - {name: My_App, image: a}\n"),
        "Pod \"sleep\" is invalid: spec.containers[0].name: Invalid value: \"My_App\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
    );
    assert_eq!(
        check("  containers:\n  - {name: app.v1, image: a}\n"),
        "Pod \"sleep\" is invalid: spec.containers[0].name: Invalid value: \"app.v1\": must not contain dots"
    );
}

#[test]
fn pod_name_and_namespace() {
    let mut pod = pod_with_spec(APP);
    pod.metadata.name = Some("Foo".to_owned());
    let e = validate_pod(&pod, &FeatureGates::default()).expect_err("bad name");
    assert_eq!(
        e.to_string(),
        "Pod \"Foo\" is invalid: metadata.name: Invalid value: \"Foo\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    );
    assert_eq!(e.errors().len(), 1);
    assert_eq!(e.errors()[0].kind.reason(), "FieldValueInvalid");

    let mut pod = pod_with_spec(APP);
    pod.metadata.name = None;
    pod.metadata.namespace = Some("team.a".to_owned());
    assert_eq!(
        validate_pod(&pod, &FeatureGates::default())
            .expect_err("bad")
            .to_string(),
        "Pod \"\" is invalid: [metadata.name: Required value: name or generateName is required, metadata.namespace: Invalid value: \"team.a\": must not contain dots]"
    );
}

#[test]
fn labels_are_checked() {
    let mut pod = pod_with_spec(APP);
    pod.metadata.labels = Some([("app".to_owned(), "-bad".to_owned())].into());
    assert_eq!(
        validate_pod(&pod, &FeatureGates::default())
            .expect_err("bad")
            .to_string(),
        "Pod \"sleep\" is invalid: metadata.labels: Invalid value: \"-bad\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
    );
}

#[test]
fn probe_handler_rules() {
    assert_eq!(
        check(
            "  containers:\n  - name: app\n    image: a\n    readinessProbe: {httpGet: {port: 80}, exec: {command: [a]}}\n"
        ),
        "Pod \"sleep\" is invalid: spec.containers[0].readinessProbe.httpGet: Forbidden: may not specify more than 1 handler type"
    );
    assert_eq!(
        check(
            "  containers:\n  - name: app\n    image: a\n    livenessProbe: {exec: {command: [a]}, successThreshold: 2}\n"
        ),
        "Pod \"sleep\" is invalid: spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1"
    );
    assert_eq!(
        check(
            "  containers:\n  - name: app\n    image: a\n    readinessProbe: {exec: {command: []}, periodSeconds: -1, initialDelaySeconds: -5}\n"
        ),
        "Pod \"sleep\" is invalid: [spec.containers[0].readinessProbe.exec.command: Required value, spec.containers[0].readinessProbe.initialDelaySeconds: Invalid value: -5: must be greater than or equal to 0, spec.containers[0].readinessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0]"
    );
    assert_eq!(
        check(
            "  containers:\n  - name: app\n    image: a\n    readinessProbe: {grpc: {port: 9000}, terminationGracePeriodSeconds: 5}\n    livenessProbe: {tcpSocket: {port: 0}, terminationGracePeriodSeconds: 0}\n"
        ),
        "Pod \"sleep\" is invalid: [spec.containers[0].livenessProbe.tcpSocket.port: Invalid value: 0: must be between 1 and 65535, inclusive, spec.containers[0].livenessProbe.terminationGracePeriodSeconds: Invalid value: 0: must be greater than 0, spec.containers[0].readinessProbe.terminationGracePeriodSeconds: Invalid value: 5: must not be set for readinessProbes]"
    );
}

#[test]
fn lifecycle_handler_rules() {
    assert_eq!(
        check(
            "  containers:\n  - name: app\n    image: a\n    lifecycle:\n      postStart: {httpGet: {port: 70000}}\n      preStop: {sleep: {seconds: -1}}\n"
        ),
        "Pod \"sleep\" is invalid: [spec.containers[0].lifecycle.postStart.httpGet.port: Invalid value: 70000: must be between 1 and 65535, inclusive, spec.containers[0].lifecycle.preStop.sleep: Invalid value: -1: must be non-negative and less than terminationGracePeriodSeconds (30)]"
    );
    assert_eq!(
        check(
            "  terminationGracePeriodSeconds: 10\n  containers:\n  - name: app\n    image: a\n    lifecycle:\n      preStop: {sleep: {seconds: 11}}\n      postStart: {httpGet: {port: HTTP, scheme: FTP}}\n"
        ),
        "Pod \"sleep\" is invalid: [spec.containers[0].lifecycle.postStart.httpGet.port: Invalid value: \"HTTP\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-), spec.containers[0].lifecycle.postStart.httpGet.port: Invalid value: \"HTTP\": must contain at least one letter (a-z), spec.containers[0].lifecycle.postStart.httpGet.scheme: Unsupported value: \"FTP\": supported values: \"HTTP\", \"HTTPS\", spec.containers[0].lifecycle.preStop.sleep: Invalid value: 11: must be non-negative and less than terminationGracePeriodSeconds (10)]"
    );
    assert_eq!(
        check("  containers:\n  - name: app\n    image: a\n    lifecycle: {preStop: {}}\n"),
        "Pod \"sleep\" is invalid: spec.containers[0].lifecycle.preStop: Required value: must specify a handler type"
    );
    let gates = FeatureGates {
        pod_lifecycle_sleep_action_allow_zero: false,
        ..FeatureGates::default()
    };
    assert_eq!(
        check_with(
            "  containers:\n  - name: app\n    image: a\n    lifecycle: {preStop: {sleep: {seconds: 0}}}\n",
            &gates
        ),
        "Pod \"sleep\" is invalid: spec.containers[0].lifecycle.preStop.sleep: Invalid value: 0: must be greater than 0 and less than terminationGracePeriodSeconds (30). Enable AllowPodLifecycleSleepActionZeroValue feature gate for zero sleep."
    );
}

#[test]
fn pod_restart_and_dns_policy() {
    assert_eq!(
        check(&format!("  restartPolicy: Sometimes\n{APP}")),
        "Pod \"sleep\" is invalid: spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
    );
    assert_eq!(
        check(&format!("  dnsPolicy: Google\n{APP}")),
        "Pod \"sleep\" is invalid: spec.dnsPolicy: Unsupported value: \"Google\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\""
    );
}

#[test]
fn volumes_need_unique_names_and_one_source() {
    let spec = format!(
        "  volumes:\n  - name: data\n    emptyDir: {{}}\n  - name: data\n    emptyDir: {{}}\n  - name: cfg\n    emptyDir: {{}}\n    configMap: {{name: c}}\n{APP}"
    );
    assert_eq!(
        check(&spec),
        "Pod \"sleep\" is invalid: [spec.volumes[1].name: Duplicate value: \"data\", spec.volumes[2].configMap: Forbidden: may not specify more than 1 volume type]"
    );
}

#[test]
fn volume_sources_are_checked() {
    let spec = format!(
        "  volumes:\n  - name: s\n    secret: {{defaultMode: 01000, items: [{{key: k, path: /etc/k}}]}}\n  - name: h\n    hostPath: {{path: /tmp/../etc, type: Folder}}\n{APP}"
    );
    assert_eq!(
        check(&spec),
        "Pod \"sleep\" is invalid: [spec.volumes[0].secret.secretName: Required value, spec.volumes[0].secret.defaultMode: Invalid value: 512: must be a number between 0 and 0777 (octal), both inclusive, spec.volumes[0].secret.items[0].path: Invalid value: \"/etc/k\": must be a relative path, spec.volumes[1].hostPath.path: Invalid value: \"/tmp/../etc\": must not contain '..', spec.volumes[1].hostPath.type: Unsupported value: \"Folder\": supported values: \"\", \"BlockDevice\", \"CharDevice\", \"Directory\", \"DirectoryOrCreate\", \"File\", \"FileOrCreate\", \"Socket\"]"
    );
}

#[test]
fn mounts_must_name_a_volume_and_a_path() {
    assert_eq!(
        check(
            "  containers:\n  - name: app\n    image: a\n    volumeMounts: [{name: data, mountPath: /data}, {name: '', mountPath: ''}]\n"
        ),
        "Pod \"sleep\" is invalid: [spec.containers[0].volumeMounts[0].name: Not found: \"data\", spec.containers[0].volumeMounts[1].name: Required value, spec.containers[0].volumeMounts[1].name: Not found: \"\", spec.containers[0].volumeMounts[1].mountPath: Required value]"
    );
    // Kubernetes does not require an absolute mountPath; only uniqueness.
    assert_eq!(
        check(
            "  volumes: [{name: data, emptyDir: {}}]\n  containers:\n  - name: app\n    image: a\n    volumeMounts: [{name: data, mountPath: data}, {name: data, mountPath: data}]\n"
        ),
        "Pod \"sleep\" is invalid: spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"data\": must be unique"
    );
}

#[test]
fn env_var_names() {
    assert_eq!(
        check(
            "  containers:\n  - name: app\n    image: a\n    env: [{name: A=B, value: x}, {name: '', value: w}, {name: 1.ok-now, value: z}]\n"
        ),
        "Pod \"sleep\" is invalid: [spec.containers[0].env[0].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '=', spec.containers[0].env[1].name: Required value]"
    );
    let strict = FeatureGates {
        relaxed_environment_variable_validation: false,
        ..FeatureGates::default()
    };
    assert_eq!(
        check_with(
            "  containers:\n  - name: app\n    image: a\n    env: [{name: 1ABC, value: x}]\n",
            &strict
        ),
        "Pod \"sleep\" is invalid: spec.containers[0].env[0].name: Invalid value: \"1ABC\": a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')"
    );
}

#[test]
fn env_value_from() {
    assert_eq!(
        check(
            "  containers:\n  - name: app\n    image: a\n    env:\n    - {name: A, valueFrom: {}}\n    - name: B\n      value: x\n      valueFrom: {fieldRef: {fieldPath: metadata.name}}\n    - name: C\n      valueFrom: {fieldRef: {fieldPath: spec.restartPolicy}}\n"
        ),
        "Pod \"sleep\" is invalid: [spec.containers[0].env[0].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`, spec.containers[0].env[1].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty, spec.containers[0].env[2].valueFrom.fieldRef.fieldPath: Unsupported value: \"spec.restartPolicy\": supported values: \"metadata.name\", \"metadata.namespace\", \"metadata.uid\", \"spec.nodeName\", \"spec.serviceAccountName\", \"status.hostIP\", \"status.hostIPs\", \"status.podIP\", \"status.podIPs\"]"
    );
}

#[test]
fn port_numbers() {
    assert_eq!(
        check(
            "  containers:\n  - name: app\n    image: a\n    ports: [{containerPort: 70000}, {containerPort: 0}, {containerPort: 80, name: web}, {containerPort: 81, name: web, protocol: HTTP}]\n"
        ),
        "Pod \"sleep\" is invalid: [spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive, spec.containers[0].ports[1].containerPort: Required value, spec.containers[0].ports[3].name: Duplicate value: \"web\", spec.containers[0].ports[3].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"]"
    );
}

#[test]
fn host_ports_conflict_across_main_containers_only() {
    let spec = "  containers:\n  - {name: a, image: a, ports: [{containerPort: 80, hostPort: 8080}]}\n  - {name: b, image: b, ports: [{containerPort: 81, hostPort: 8080}]}\n";
    assert_eq!(
        check(spec),
        "Pod \"sleep\" is invalid: spec.containers[1].ports[0].hostPort: Duplicate value: \"TCP//8080\""
    );
    let init = "  initContainers:\n  - {name: i, image: a, ports: [{containerPort: 80, hostPort: 8080}]}\n  - {name: j, image: b, ports: [{containerPort: 81, hostPort: 8080}]}\n";
    assert_eq!(check(&format!("{init}{APP}")), "valid");
}

#[test]
fn host_network_requires_matching_host_ports() {
    assert_eq!(
        check(
            "  hostNetwork: true\n  containers:\n  - {name: a, image: a, ports: [{containerPort: 80, hostPort: 8080}]}\n"
        ),
        "Pod \"sleep\" is invalid: spec.containers[0].ports[0].hostPort: Invalid value: 8080: must match `containerPort` when `hostNetwork` is true"
    );
}

// V5
#[test]
fn resize_policy_on_an_init_container() {
    let spec = format!(
        "  initContainers:\n  - name: proxy\n    image: p\n    restartPolicy: Always\n    resizePolicy: [{{resourceName: cpu, restartPolicy: NotRequired}}]\n{APP}"
    );
    assert_eq!(
        check(&spec),
        "Pod \"sleep\" is invalid: spec.initContainers[0].resizePolicy: Invalid value: []core.ContainerResizePolicy{core.ContainerResizePolicy{ResourceName:\"cpu\", RestartPolicy:\"NotRequired\"}}: must not be set for init containers"
    );
    let gates = FeatureGates {
        sidecar_resize_policy: true,
        ..FeatureGates::default()
    };
    assert_eq!(check_with(&spec, &gates), "valid");
}

#[test]
fn resize_policy_of_a_never_pod_must_not_restart() {
    assert_eq!(
        check(
            "  restartPolicy: Never\n  containers:\n  - name: app\n    image: a\n    resizePolicy: [{resourceName: memory, restartPolicy: RestartContainer}, {resourceName: memory, restartPolicy: NotRequired}]\n"
        ),
        "Pod \"sleep\" is invalid: [spec.containers[0].resizePolicy: Invalid value: \"RestartContainer\": must be 'NotRequired' when `restartPolicy` is 'Never', spec.containers[0].resizePolicy[1]: Duplicate value: \"memory\"]"
    );
}

#[test]
fn sidecar_gate_off_drops_the_restart_policy() {
    let gates = FeatureGates {
        sidecar_containers: false,
        ..FeatureGates::default()
    };
    let plain = format!(
        "  initContainers:\n  - name: proxy\n    image: p\n    restartPolicy: OnFailure\n{APP}"
    );
    assert_eq!(check_with(&plain, &gates), "valid");
    let probed = format!(
        "  initContainers:\n  - name: proxy\n    image: p\n    restartPolicy: Always\n    readinessProbe: {{exec: {{command: [a]}}}}\n{APP}"
    );
    assert_eq!(
        check_with(&probed, &gates),
        "Pod \"sleep\" is invalid: spec.initContainers[0].readinessProbe: Forbidden: may not be set for init containers without restartPolicy=Always"
    );
    let mut pod = pod_with_spec(&probed);
    let spec = pod.spec.as_mut().expect("spec");
    drop_disabled_fields(spec, &FeatureGates::default());
    assert_eq!(
        spec.init_containers
            .as_ref()
            .map(|c| c[0].restart_policy.as_deref()),
        Some(Some("Always")),
        "kept while the gate is on"
    );
    drop_disabled_fields(spec, &gates);
    assert_eq!(
        spec.init_containers
            .as_ref()
            .map(|c| c[0].restart_policy.as_deref()),
        Some(None)
    );
}

#[test]
fn pod_spec_in_a_template_uses_the_prefix() {
    let pod =
        pod_with_spec("  containers:\n  - name: app\n    image: ''\n    restartPolicy: Always\n");
    let spec = pod.spec.as_ref().expect("spec");
    let errors: Vec<String> =
        validate_pod_spec(spec, "spec.template.spec", &FeatureGates::default())
            .iter()
            .map(ToString::to_string)
            .collect();
    assert_eq!(
        errors,
        vec![
            "spec.template.spec.containers[0].image: Required value",
            "spec.template.spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers",
        ]
    );
}

#[test]
fn an_undefaulted_pod_reports_missing_defaults() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: raw, namespace: default}\nspec:\n  containers: [{name: app, image: a}]\n";
    let Some(Object::Pod(pod)) = decode_manifests("t.yaml", text)
        .expect("ok")
        .into_iter()
        .next()
    else {
        panic!("not a pod");
    };
    assert_eq!(
        validate_pod(&pod, &FeatureGates::default())
            .expect_err("not defaulted")
            .to_string(),
        "Pod \"raw\" is invalid: [spec.terminationGracePeriodSeconds: Required value, spec.containers[0].terminationMessagePolicy: Required value, spec.containers[0].imagePullPolicy: Required value, spec.restartPolicy: Required value, spec.dnsPolicy: Required value]"
    );
}

#[test]
fn create_only_rules() {
    let mut pod = pod_with_spec(APP);
    let spec = pod.spec.as_mut().expect("spec");
    spec.node_name = Some("node-1".to_owned());
    spec.scheduling_gates = Some(vec![k8s_openapi::api::core::v1::PodSchedulingGate {
        name: "example.com/wait".to_owned(),
    }]);
    spec.containers[0].image = Some(" busybox".to_owned());
    assert_eq!(
        validate_pod(&pod, &FeatureGates::default())
            .expect_err("bad")
            .to_string(),
        "Pod \"sleep\" is invalid: [spec.containers[0].image: Invalid value: \" busybox\": must not have leading or trailing whitespace, spec.nodeName: Forbidden: cannot be set until all schedulingGates have been cleared]"
    );
}

#[test]
fn warnings_for_negative_grace_and_non_label_names() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: web.v1}\nspec:\n  terminationGracePeriodSeconds: -1\n  containers: [{name: app, image: a}]\n";
    let Some(Object::Pod(pod)) = decode_manifests("t.yaml", text)
        .expect("ok")
        .into_iter()
        .next()
    else {
        panic!("not a pod");
    };
    assert_eq!(
        pod_warnings(&pod),
        vec![
            "metadata.name: this is used in the Pod's hostname, which can result in surprising behavior; a DNS label is recommended: [must not contain dots]".to_owned(),
            "spec.terminationGracePeriodSeconds: must be >= 0; negative values are invalid and will be treated as 1".to_owned(),
        ]
    );
    let mut pod = *pod;
    default_pod(&mut pod);
    assert_eq!(validate_pod(&pod, &FeatureGates::default()), Ok(()));
}

#[test]
fn field_error_rendering() {
    let p = FieldPath::new("spec")
        .child("containers")
        .index(2)
        .child("env")
        .key("A");
    assert_eq!(p.as_str(), "spec.containers[2].env[A]");
    assert_eq!(
        FieldError::invalid(&p, BadValue::Null, "x").to_string(),
        "spec.containers[2].env[A]: Invalid value: \"null\": x"
    );
    assert_eq!(
        FieldError::invalid(&p, "tab\there \"q\"", "").to_string(),
        "spec.containers[2].env[A]: Invalid value: \"tab\\there \\\"q\\\"\""
    );
    assert_eq!(
        FieldError::too_long(&p, 10).to_string(),
        "spec.containers[2].env[A]: Too long: must have at most 10 bytes"
    );
    assert_eq!(
        FieldError::too_many(&p, Some(5), 3).to_string(),
        "spec.containers[2].env[A]: Too many: 5: must have at most 3 items"
    );
    assert_eq!(
        FieldError::not_supported(&p, "x", &[]).to_string(),
        "spec.containers[2].env[A]: Unsupported value: \"x\""
    );
    assert_eq!(
        FieldError::internal(&p, "boom").to_string(),
        "spec.containers[2].env[A]: Internal error: boom"
    );
}

#[test]
fn repeated_messages_are_shown_once() {
    let e = ValidationError::new(
        "Deployment.apps",
        "web",
        vec![
            FieldError::required(&FieldPath::new("spec.replicas"), ""),
            FieldError::required(&FieldPath::new("spec.replicas"), ""),
        ],
    );
    assert_eq!(
        e.to_string(),
        "Deployment.apps \"web\" is invalid: spec.replicas: Required value"
    );
}
