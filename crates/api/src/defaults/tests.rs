use super::*;
use crate::decode::{Object, decode_manifests};

fn decode_pod(text: &str) -> Pod {
    let objects = decode_manifests("t.yaml", text).expect("valid manifest");
    match objects.into_iter().next() {
        Some(Object::Pod(p)) => *p,
        other => panic!("expected a pod, got {other:?}"),
    }
}

fn defaulted(text: &str) -> Pod {
    let mut pod = decode_pod(text);
    default_pod(&mut pod);
    pod
}

fn spec(pod: &Pod) -> &PodSpec {
    pod.spec.as_ref().expect("spec")
}

const MINIMAL: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: app, image: busybox}]\n";

#[test]
fn pod_level_defaults() {
    let pod = defaulted(MINIMAL);
    assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
    let s = spec(&pod);
    assert_eq!(s.restart_policy.as_deref(), Some("Always"));
    assert_eq!(s.termination_grace_period_seconds, Some(30));
    assert_eq!(s.dns_policy.as_deref(), Some("ClusterFirst"));
    assert_eq!(s.scheduler_name.as_deref(), Some("default-scheduler"));
    assert_eq!(s.enable_service_links, Some(true));
    assert_eq!(s.security_context, Some(PodSecurityContext::default()));
}

#[test]
fn explicit_values_are_kept() {
    let pod = defaulted(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: team}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 0\n  dnsPolicy: Default\n  enableServiceLinks: false\n  containers: [{name: app, image: busybox, imagePullPolicy: Never, terminationMessagePolicy: FallbackToLogsOnError}]\n",
    );
    assert_eq!(pod.metadata.namespace.as_deref(), Some("team"));
    let s = spec(&pod);
    assert_eq!(s.restart_policy.as_deref(), Some("Never"));
    assert_eq!(s.termination_grace_period_seconds, Some(0));
    assert_eq!(s.dns_policy.as_deref(), Some("Default"));
    assert_eq!(s.enable_service_links, Some(false));
    let c = &s.containers[0];
    assert_eq!(c.image_pull_policy.as_deref(), Some("Never"));
    assert_eq!(
        c.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError")
    );
}

#[test]
fn negative_grace_period_becomes_one() {
    let pod = defaulted(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  terminationGracePeriodSeconds: -5\n  containers: [{name: app, image: busybox}]\n",
    );
    assert_eq!(spec(&pod).termination_grace_period_seconds, Some(1));
}

#[test]
fn container_defaults_apply_to_init_and_main_containers() {
    let pod = defaulted(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  initContainers: [{name: proxy, image: 'envoy:v1', restartPolicy: Always}]\n  containers: [{name: app, image: busybox}]\n",
    );
    let s = spec(&pod);
    for c in s.init_containers.iter().flatten().chain(&s.containers) {
        assert_eq!(
            c.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
    }
    assert_eq!(
        s.init_containers
            .as_ref()
            .map(|v| v[0].image_pull_policy.as_deref()),
        Some(Some("IfNotPresent"))
    );
    assert_eq!(s.containers[0].image_pull_policy.as_deref(), Some("Always"));
}

#[test]
fn pull_policy_follows_the_image_tag() {
    let cases = [
        ("busybox", "Always"),
        ("busybox:latest", "Always"),
        ("busybox:1.36", "IfNotPresent"),
        ("docker.io/library/busybox", "Always"),
        ("localhost:5000/team/app", "Always"),
        ("localhost:5000/team/app:v2", "IfNotPresent"),
        (
            "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "IfNotPresent",
        ),
        (
            "busybox:latest@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "Always",
        ),
        ("tandem/proxy", "Always"),
        ("Busybox", "IfNotPresent"),
        ("", "IfNotPresent"),
    ];
    for (image, want) in cases {
        assert_eq!(pull_policy_for(image), want, "image {image:?}");
    }
}

#[test]
fn probe_and_handler_defaults() {
    let pod = defaulted(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: app\n    image: busybox\n    livenessProbe:\n      httpGet: {port: 8080}\n      periodSeconds: 0\n    readinessProbe:\n      grpc: {port: 9000}\n      timeoutSeconds: 5\n    lifecycle:\n      preStop:\n        httpGet: {port: 8080, path: /stop}\n      postStart:\n        httpGet: {port: 8080}\n",
    );
    let c = &spec(&pod).containers[0];
    let live = c.liveness_probe.as_ref().expect("liveness");
    assert_eq!(
        (
            live.timeout_seconds,
            live.period_seconds,
            live.success_threshold,
            live.failure_threshold
        ),
        (Some(1), Some(10), Some(1), Some(3))
    );
    let get = live.http_get.as_ref().expect("httpGet");
    assert_eq!(
        (get.path.as_deref(), get.scheme.as_deref()),
        (Some("/"), Some("HTTP"))
    );
    let ready = c.readiness_probe.as_ref().expect("readiness");
    assert_eq!(ready.timeout_seconds, Some(5));
    assert_eq!(
        ready.grpc.as_ref().and_then(|g| g.service.as_deref()),
        Some("")
    );
    let lifecycle = c.lifecycle.as_ref().expect("lifecycle");
    let pre = lifecycle
        .pre_stop
        .as_ref()
        .and_then(|h| h.http_get.as_ref())
        .expect("preStop");
    assert_eq!(
        (pre.path.as_deref(), pre.scheme.as_deref()),
        (Some("/stop"), Some("HTTP"))
    );
    let post = lifecycle
        .post_start
        .as_ref()
        .and_then(|h| h.http_get.as_ref())
        .expect("postStart");
    assert_eq!(post.path.as_deref(), Some("/"));
}

#[test]
fn ports_env_and_volumes() {
    let pod = defaulted(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: app\n    image: busybox\n    ports: [{containerPort: 80}, {containerPort: 53, protocol: UDP}]\n    env:\n    - name: POD\n      valueFrom: {fieldRef: {fieldPath: metadata.name}}\n  volumes:\n  - name: scratch\n  - name: cfg\n    configMap: {name: c}\n  - name: sec\n    secret: {secretName: s, defaultMode: 0400}\n  - name: info\n    downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}\n  - name: cache\n    emptyDir: {medium: Memory}\n  - name: host\n    hostPath: {path: /tmp}\n",
    );
    let s = spec(&pod);
    let ports = s.containers[0].ports.as_ref().expect("ports");
    assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
    assert_eq!(ports[1].protocol.as_deref(), Some("UDP"));
    assert_eq!(ports[0].host_port, None);
    let env = &s.containers[0].env.as_ref().expect("env")[0];
    let field_ref = env
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("fieldRef");
    assert_eq!(field_ref.api_version.as_deref(), Some("v1"));

    let volumes = s.volumes.as_ref().expect("volumes");
    assert!(
        volumes[0].empty_dir.is_some(),
        "a volume without source becomes emptyDir"
    );
    assert_eq!(
        volumes[1].config_map.as_ref().and_then(|c| c.default_mode),
        Some(420)
    );
    assert_eq!(
        volumes[2].secret.as_ref().and_then(|c| c.default_mode),
        Some(0o400)
    );
    let downward = volumes[3].downward_api.as_ref().expect("downwardAPI");
    assert_eq!(downward.default_mode, Some(420));
    let items = downward.items.as_ref().expect("items");
    assert_eq!(
        items[0]
            .field_ref
            .as_ref()
            .and_then(|f| f.api_version.as_deref()),
        Some("v1")
    );
    let cache = volumes[4].empty_dir.as_ref().expect("emptyDir");
    assert_eq!(
        (cache.medium.as_deref(), cache.size_limit.as_ref()),
        (Some("Memory"), None)
    );
    assert_eq!(
        volumes[5]
            .host_path
            .as_ref()
            .and_then(|h| h.type_.as_deref()),
        Some("")
    );
}

#[test]
fn requests_default_to_limits_and_resize_policy_is_added() {
    let pod = defaulted(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  initContainers:\n  - {name: init, image: busybox, resources: {limits: {memory: 64Mi}}}\n  containers:\n  - name: app\n    image: busybox\n    resources:\n      limits: {cpu: 500m, memory: 128Mi}\n      requests: {cpu: 100m}\n",
    );
    let s = spec(&pod);
    let app = &s.containers[0];
    let requests = app
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("requests");
    assert_eq!(requests.get("cpu").map(|q| q.0.as_str()), Some("100m"));
    assert_eq!(requests.get("memory").map(|q| q.0.as_str()), Some("128Mi"));
    let policies: Vec<_> = app
        .resize_policy
        .iter()
        .flatten()
        .map(|p| (p.resource_name.as_str(), p.restart_policy.as_str()))
        .collect();
    assert_eq!(
        policies,
        vec![("cpu", "NotRequired"), ("memory", "NotRequired")]
    );

    let init = &s.init_containers.as_ref().expect("init")[0];
    let init_requests = init
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("requests");
    assert_eq!(
        init_requests.get("memory").map(|q| q.0.as_str()),
        Some("64Mi")
    );
    assert_eq!(
        init.resize_policy, None,
        "init containers get no resize policy"
    );
}

#[test]
fn host_network_copies_container_ports_to_host_ports() {
    let pod = defaulted(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostNetwork: true\n  containers: [{name: app, image: busybox, ports: [{containerPort: 8080}]}]\n",
    );
    let ports = spec(&pod).containers[0].ports.as_ref().expect("ports");
    assert_eq!(ports[0].host_port, Some(8080));
}

#[test]
fn secret_type_defaults_to_opaque() {
    let mut secret = Secret::default();
    default_secret(&mut secret);
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    let mut tls = Secret {
        type_: Some("kubernetes.io/tls".to_owned()),
        ..Secret::default()
    };
    default_secret(&mut tls);
    assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
}
