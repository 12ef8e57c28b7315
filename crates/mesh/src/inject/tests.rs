//! The injector test cases of the mesh spec (1-11), plus the rules around them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;

use super::*;
use crate::config::MeshConfig;

fn pod(value: serde_json::Value) -> Pod {
    serde_json::from_value(value).expect("test pod")
}

/// A pod with one container `app` listening on 8080, in namespace `default`.
fn app_pod() -> Pod {
    pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app", "namespace": "default", "labels": {"app": "app"}},
        "spec": {"containers": [{
            "name": "app", "image": "busybox", "command": ["sleep", "infinity"],
            "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}]
        }]}
    }))
}

fn annotate(mut p: Pod, key: &str, value: &str) -> Pod {
    p.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.to_owned(), value.to_owned());
    p
}

fn label(mut p: Pod, key: &str, value: &str) -> Pod {
    p.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(key.to_owned(), value.to_owned());
    p
}

fn nodes_133() -> Vec<NodeVersion> {
    vec![NodeVersion::new("node-1", "v1.33.0")]
}

fn run(p: &Pod) -> Pod {
    run_with(p, &MeshConfig::default())
}

fn run_with(p: &Pod, mesh: &MeshConfig) -> Pod {
    let nodes = nodes_133();
    inject(p, &InjectContext::new(mesh, &nodes)).expect("injects")
}

fn names(cs: Option<&Vec<Container>>) -> Vec<&str> {
    cs.into_iter().flatten().map(|c| c.name.as_str()).collect()
}

fn init_names(p: &Pod) -> Vec<&str> {
    names(p.spec.as_ref().and_then(|s| s.init_containers.as_ref()))
}

fn container_names(p: &Pod) -> Vec<&str> {
    names(p.spec.as_ref().map(|s| &s.containers))
}

fn find<'p>(p: &'p Pod, name: &str) -> &'p Container {
    let spec = p.spec.as_ref().expect("spec");
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn annotation<'p>(p: &'p Pod, key: &str) -> Option<&'p str> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn env<'c>(c: &'c Container, name: &str) -> Option<&'c str> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

fn env_names(c: &Container) -> Vec<&str> {
    c.env.iter().flatten().map(|e| e.name.as_str()).collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

const NATIVE_STATUS: &str = r#"{"initContainers":["istio-init","istio-proxy"],"containers":null,"volumes":["workload-socket","credential-socket","workload-certs","istio-envoy","istio-data","istio-podinfo","istio-token","istiod-ca-cert","istio-ca-crl"],"imagePullSecrets":null,"revision":"default"}"#;

// 1. Native layout.
#[test]
fn native_layout() {
    let out = run(&app_pod());
    assert_eq!(init_names(&out), ["istio-init", "istio-proxy"]);
    assert_eq!(container_names(&out), ["app"]);
    let proxy = find(&out, "istio-proxy");
    assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
    assert_eq!(proxy.image.as_deref(), Some("tandem/proxy"));
    assert_eq!(
        proxy.command, None,
        "host image mode runs `tandem proxy <args>`"
    );
    assert_eq!(annotation(&out, ANNOTATION_STATUS), Some(NATIVE_STATUS));
    let volumes: Vec<&str> = out
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(
        volumes,
        [
            "workload-socket",
            "credential-socket",
            "workload-certs",
            "istio-envoy",
            "istio-data",
            "istio-podinfo",
            "istio-token",
            "istiod-ca-cert",
            "istio-ca-crl"
        ]
    );
}

// 2. Legacy layout.
#[test]
fn legacy_layout_by_annotation() {
    let out = run(&annotate(app_pod(), ANNOTATION_NATIVE_SIDECAR, "false"));
    assert_eq!(init_names(&out), ["istio-init"]);
    assert_eq!(container_names(&out), ["app", "istio-proxy"]);
    let proxy = find(&out, "istio-proxy");
    assert_eq!(proxy.restart_policy, None);
    assert_eq!(proxy.lifecycle, None);
    let status = annotation(&out, ANNOTATION_STATUS).expect("status");
    assert!(
        status.starts_with(r#"{"initContainers":["istio-init"],"containers":["istio-proxy"],"#),
        "{status}"
    );
    // The probes stay in the legacy layout.
    assert!(proxy.startup_probe.is_some() && proxy.readiness_probe.is_some());
}

#[test]
fn native_decision_follows_mesh_config_and_kubelet_versions() {
    let p = app_pod();
    let is_native = |mesh: &MeshConfig, nodes: &[NodeVersion], p: &Pod| {
        let out = inject(p, &InjectContext::new(mesh, nodes)).expect("injects");
        init_names(&out).contains(&"istio-proxy")
    };
    let mut mesh = MeshConfig::default();
    assert!(is_native(&mesh, &nodes_133(), &p));
    let old = [NodeVersion::new("node-1", "v1.32.4")];
    assert!(
        !is_native(&mesh, &old, &p),
        "auto with an old kubelet is legacy"
    );
    assert!(!is_native(&mesh, &[], &p), "auto without nodes is legacy");
    // One old node turns native off for pods not yet scheduled...
    let mixed = [
        NodeVersion::new("a", "v1.33.1"),
        NodeVersion::new("b", "v1.30.0"),
    ];
    assert!(!is_native(&mesh, &mixed, &p));
    // ...but a pod bound to a new node only looks at that node.
    let mut bound = p.clone();
    if let Some(s) = bound.spec.as_mut() {
        s.node_name = Some("a".into());
    }
    assert!(is_native(&mesh, &mixed, &bound));
    mesh.apply(
        crate::config::parse_set("values.pilot.env.ENABLE_NATIVE_SIDECARS=false").expect("set"),
    );
    assert!(!is_native(&mesh, &nodes_133(), &p));
    assert!(is_native(
        &mesh,
        &nodes_133(),
        &annotate(p.clone(), ANNOTATION_NATIVE_SIDECAR, "true")
    ));
    mesh.apply(
        crate::config::parse_set("values.pilot.env.ENABLE_NATIVE_SIDECARS=true").expect("set"),
    );
    assert!(is_native(&mesh, &old, &p));
}

// 3. User init container ordering.
#[test]
fn user_init_containers_follow_the_proxy_in_native_and_precede_capture_in_legacy() {
    let mut p = app_pod();
    if let Some(s) = p.spec.as_mut() {
        s.init_containers = Some(vec![Container {
            name: "setup".into(),
            image: Some("busybox".into()),
            command: Some(vec!["true".into()]),
            ..Container::default()
        }]);
    }
    assert_eq!(init_names(&run(&p)), ["istio-init", "istio-proxy", "setup"]);
    let legacy = run(&annotate(p, ANNOTATION_NATIVE_SIDECAR, "false"));
    assert_eq!(init_names(&legacy), ["setup", "istio-init"]);
}

#[test]
fn init_containers_before_proxy_annotation() {
    let mut p = app_pod();
    if let Some(s) = p.spec.as_mut() {
        s.init_containers = Some(
            ["a", "b", "c"]
                .iter()
                .map(|n| Container {
                    name: (*n).into(),
                    ..Container::default()
                })
                .collect(),
        );
    }
    let out = run(&annotate(p, ANNOTATION_INIT_BEFORE_PROXY, "c,a,c"));
    assert_eq!(
        init_names(&out),
        ["istio-init", "c", "a", "istio-proxy", "b"]
    );
}

// 4. holdApplicationUntilProxyStarts.
#[test]
fn hold_application_puts_the_proxy_first_with_a_wait_hook_in_legacy_mode_only() {
    for key in [
        "meshConfig.defaultConfig.holdApplicationUntilProxyStarts=true",
        "values.global.proxy.holdApplicationUntilProxyStarts=true",
    ] {
        let mut mesh = MeshConfig::default();
        mesh.apply_sets(&[key]).expect("set");
        let legacy = run_with(
            &annotate(app_pod(), ANNOTATION_NATIVE_SIDECAR, "false"),
            &mesh,
        );
        assert_eq!(container_names(&legacy), ["istio-proxy", "app"], "{key}");
        let post_start = find(&legacy, "istio-proxy")
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
            .and_then(|h| h.exec.as_ref())
            .and_then(|e| e.command.clone());
        assert_eq!(
            post_start,
            Some(vec!["pilot-agent".to_owned(), "wait".to_owned()])
        );

        let native = run_with(&app_pod(), &mesh);
        assert_eq!(init_names(&native), ["istio-init", "istio-proxy"], "{key}");
        assert_eq!(container_names(&native), ["app"]);
        let lc = find(&native, "istio-proxy")
            .lifecycle
            .as_ref()
            .expect("preStop");
        assert_eq!(lc.post_start, None, "{key}");
    }
    // The pod's own ProxyConfig works too.
    let p = annotate(
        annotate(app_pod(), ANNOTATION_NATIVE_SIDECAR, "false"),
        ANNOTATION_PROXY_CONFIG,
        "holdApplicationUntilProxyStarts: true",
    );
    assert_eq!(container_names(&run(&p)), ["istio-proxy", "app"]);
}

// 5. istio-init args and security.
#[test]
fn istio_init_args_and_security_context() {
    let out = run(&app_pod());
    let init = find(&out, "istio-init");
    let want: Vec<String> = [
        "istio-iptables",
        "-p",
        "15001",
        "-z",
        "15006",
        "-u",
        "1337",
        "-m",
        "REDIRECT",
        "-i",
        "*",
        "-x",
        "",
        "-b",
        "*",
        "-d",
        "15090,15021,15020",
        "--log_output_level=default:info",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    assert_eq!(init.args.as_ref(), Some(&want));
    assert_eq!(init.image.as_deref(), Some("tandem/proxy"));
    assert_eq!(init.command, None);
    let sc = init.security_context.as_ref().expect("securityContext");
    assert_eq!(sc.run_as_user, Some(0));
    assert_eq!(sc.run_as_non_root, Some(false));
    let caps = sc.capabilities.as_ref().expect("caps");
    assert_eq!(
        caps.add.as_deref(),
        Some(&["NET_ADMIN".to_owned(), "NET_RAW".to_owned()][..])
    );
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));

    let out = run(&annotate(
        app_pod(),
        "traffic.sidecar.istio.io/excludeOutboundPorts",
        "5432",
    ));
    let args = find(&out, "istio-init").args.clone().expect("args");
    let d = args.iter().position(|a| a == "-d").expect("-d");
    assert_eq!(args[d + 2..d + 4], ["-o", "5432"]);
    assert_eq!(
        args.last().map(String::as_str),
        Some("--log_output_level=default:info")
    );
}

#[test]
fn capture_annotations_shape_the_args() {
    let p = [
        (
            "traffic.sidecar.istio.io/includeOutboundIPRanges",
            "10.0.0.0/8",
        ),
        (
            "traffic.sidecar.istio.io/excludeOutboundIPRanges",
            "10.1.0.0/16,fd00::/8",
        ),
        ("traffic.sidecar.istio.io/includeInboundPorts", "80,8080"),
        ("traffic.sidecar.istio.io/excludeInboundPorts", "9000"),
        ("traffic.sidecar.istio.io/includeOutboundPorts", "9001"),
        ("traffic.sidecar.istio.io/excludeInterfaces", "eth9"),
        ("traffic.sidecar.istio.io/kubevirtInterfaces", "net1"),
        ("status.sidecar.istio.io/port", "15999"),
    ]
    .iter()
    .fold(app_pod(), |p, (k, v)| annotate(p, k, v));
    let out = run(&p);
    let args = find(&out, "istio-init").args.clone().expect("args");
    let after = |flag: &str| {
        let i = args.iter().position(|a| a == flag).expect(flag);
        args[i + 1].clone()
    };
    assert_eq!(after("-i"), "10.0.0.0/8");
    assert_eq!(after("-x"), "10.1.0.0/16,fd00::/8");
    assert_eq!(after("-b"), "80,8080");
    assert_eq!(after("-d"), "15090,15021,15999,9000");
    assert_eq!(after("-q"), "9001");
    assert_eq!(after("-k"), "net1");
    assert_eq!(after("-c"), "eth9");
    // The status port moves the drain hook, the Prometheus port and rewritten probes.
    let proxy = find(&out, "istio-proxy");
    let pre_stop = proxy
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.exec.as_ref())
        .and_then(|e| e.command.clone())
        .expect("preStop");
    assert_eq!(pre_stop[2], "--debug-port=15999");
    assert!(
        env(proxy, "PROXY_CONFIG").is_some_and(|c| c.contains("\"statusPort\":15999")),
        "the agent is told its port"
    );
    assert_eq!(annotation(&out, "prometheus.io/port"), Some("15999"));
}

#[test]
fn bad_annotations_are_rejected_with_what_is_allowed() {
    let nodes = nodes_133();
    let mesh = MeshConfig::default();
    for (key, value, allowed) in [
        (
            ANNOTATION_INTERCEPTION_MODE,
            "MAGIC",
            "REDIRECT, TPROXY, NONE",
        ),
        (
            "traffic.sidecar.istio.io/excludeOutboundPorts",
            "http",
            "list of ports",
        ),
        (
            "traffic.sidecar.istio.io/includeOutboundIPRanges",
            "10.0.0.0",
            "CIDRs",
        ),
        ("status.sidecar.istio.io/port", "70000", "port number"),
        (
            "readiness.status.sidecar.istio.io/periodSeconds",
            "-1",
            "non-negative",
        ),
        (
            ANNOTATION_PROXY_CONFIG,
            "terminationDrainDuration: soon",
            "duration",
        ),
    ] {
        let err = inject(
            &annotate(app_pod(), key, value),
            &InjectContext::new(&mesh, &nodes),
        )
        .expect_err(key);
        let msg = err.to_string();
        assert!(msg.contains(key) && msg.contains(allowed), "{key}: {msg}");
    }
}

// 6. istio-proxy security and probes.
#[test]
fn istio_proxy_security_probes_and_drain_hook() {
    let out = run(&app_pod());
    let proxy = find(&out, "istio-proxy");
    let sc = proxy.security_context.as_ref().expect("securityContext");
    assert_eq!(sc.run_as_user, Some(1337));
    assert_eq!(sc.run_as_group, Some(1337));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_owned()])
    );
    let check = |probe: Option<&k8s_openapi::api::core::v1::Probe>, period, failure| {
        let p = probe.expect("probe");
        let get = p.http_get.as_ref().expect("httpGet");
        assert_eq!(get.path.as_deref(), Some("/healthz/ready"));
        assert_eq!(get.port, IntOrString::Int(15021));
        assert_eq!(p.period_seconds, Some(period));
        assert_eq!(p.timeout_seconds, Some(3));
        assert_eq!(p.failure_threshold, Some(failure));
        assert_eq!(p.initial_delay_seconds, None);
    };
    check(proxy.startup_probe.as_ref(), 1, 600);
    check(proxy.readiness_probe.as_ref(), 15, 4);
    assert_eq!(proxy.liveness_probe, None);
    let pre_stop = proxy
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.exec.as_ref())
        .and_then(|e| e.command.clone());
    assert_eq!(
        pre_stop,
        Some(
            [
                "pilot-agent",
                "request",
                "--debug-port=15020",
                "POST",
                "drain"
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
        )
    );
    let ports = proxy.ports.clone().expect("ports");
    assert_eq!(ports[0].container_port, 15090);
    assert_eq!(ports[0].name.as_deref(), Some("http-envoy-prom"));
    assert_eq!(
        proxy.args.clone().expect("args")[..4],
        [
            "proxy",
            "sidecar",
            "--domain",
            "$(POD_NAMESPACE).svc.cluster.local"
        ]
    );
    // Status port 0 removes the probes.
    let out = run(&annotate(app_pod(), "status.sidecar.istio.io/port", "0"));
    let proxy = find(&out, "istio-proxy");
    assert!(proxy.startup_probe.is_none() && proxy.readiness_probe.is_none());
}

#[test]
fn proxy_env_follows_istio_order_and_carries_the_discovery_address() {
    let mut mesh = MeshConfig::default();
    mesh.apply_sets(&["meshConfig.defaultConfig.terminationDrainDuration=30s"])
        .expect("set");
    let out = run_with(&app_pod(), &mesh);
    let proxy = find(&out, "istio-proxy");
    assert_eq!(
        env_names(proxy),
        [
            "PILOT_CERT_PROVIDER",
            "CA_ADDR",
            "POD_NAME",
            "POD_NAMESPACE",
            "INSTANCE_IP",
            "SERVICE_ACCOUNT",
            "HOST_IP",
            "ISTIO_CPU_LIMIT",
            "PROXY_CONFIG",
            "ISTIO_META_POD_PORTS",
            "ISTIO_META_APP_CONTAINERS",
            "GOMEMLIMIT",
            "GOMAXPROCS",
            "ISTIO_META_CLUSTER_ID",
            "ISTIO_META_NODE_NAME",
            "ISTIO_META_INTERCEPTION_MODE",
            "ISTIO_META_WORKLOAD_NAME",
            "ISTIO_META_OWNER",
            "ISTIO_META_MESH_ID",
            "TRUST_DOMAIN",
            "MESH_CONFIG",
        ]
    );
    let mesh_config: serde_json::Value =
        serde_json::from_str(env(proxy, "MESH_CONFIG").expect("MESH_CONFIG")).expect("json");
    assert_eq!(
        mesh_config["defaultConfig"]["terminationDrainDuration"],
        "30s"
    );
    assert_eq!(
        env(proxy, "PROXY_CONFIG"),
        Some(
            "{\"discoveryAddress\":\"istiod.istio-system.svc:15010\",\"terminationDrainDuration\":\"30s\"}\n"
        )
    );
    assert_eq!(
        env(proxy, "ISTIO_META_POD_PORTS"),
        Some("[\n    {\"name\":\"http\",\"containerPort\":8080,\"protocol\":\"TCP\"}\n]")
    );
    assert_eq!(env(proxy, "ISTIO_META_APP_CONTAINERS"), Some("app"));
    assert_eq!(env(proxy, "ISTIO_META_WORKLOAD_NAME"), Some("app"));
    assert_eq!(
        env(proxy, "ISTIO_META_OWNER"),
        Some("kubernetes://apis/v1/namespaces/default/pods/app")
    );
    assert_eq!(env(proxy, "ISTIO_META_CLUSTER_ID"), Some("Kubernetes"));
    assert_eq!(env(proxy, "ISTIO_META_INTERCEPTION_MODE"), Some("REDIRECT"));
    let field = |name: &str| {
        proxy
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.clone())
    };
    assert_eq!(field("POD_NAME").as_deref(), Some("metadata.name"));
    assert_eq!(field("INSTANCE_IP").as_deref(), Some("status.podIP"));
    assert_eq!(
        field("SERVICE_ACCOUNT").as_deref(),
        Some("spec.serviceAccountName")
    );
    assert_eq!(field("HOST_IP").as_deref(), Some("status.hostIP"));
    // Mounts only of volumes that exist as directories in host image mode.
    let mounts: Vec<&str> = proxy
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(
        mounts,
        [
            "workload-socket",
            "credential-socket",
            "workload-certs",
            "istio-data",
            "istio-envoy",
            "istio-podinfo"
        ]
    );
}

#[test]
fn multiple_ports_and_containers_and_proxy_metadata() {
    let p = annotate(
        pod(json!({
            "metadata": {"generateName": "web-5d4f8-", "namespace": "shop",
                "labels": {"pod-template-hash": "5d4f8"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-5d4f8", "uid": "1", "controller": true}]},
            "spec": {"containers": [
                {"name": "web", "ports": [{"containerPort": 80}, {"containerPort": 81, "name": "m"}]},
                {"name": "log"}
            ]}
        })),
        ANNOTATION_PROXY_CONFIG,
        r#"{"proxyMetadata": {"EXIT_ON_ZERO_ACTIVE_CONNECTIONS": "true"}}"#,
    );
    let out = run(&p);
    let proxy = find(&out, "istio-proxy");
    assert_eq!(
        env(proxy, "ISTIO_META_POD_PORTS"),
        Some("[\n    {\"containerPort\":80}\n    ,{\"name\":\"m\",\"containerPort\":81}\n]")
    );
    assert_eq!(env(proxy, "ISTIO_META_APP_CONTAINERS"), Some("web,log"));
    assert_eq!(env(proxy, "ISTIO_META_WORKLOAD_NAME"), Some("web"));
    assert_eq!(
        env(proxy, "ISTIO_META_OWNER"),
        Some("kubernetes://apis/apps/v1/namespaces/shop/deployments/web")
    );
    assert_eq!(env(proxy, "EXIT_ON_ZERO_ACTIVE_CONNECTIONS"), Some("true"));
    assert_eq!(
        env(find(&out, "istio-init"), "EXIT_ON_ZERO_ACTIVE_CONNECTIONS"),
        Some("true")
    );
    assert_eq!(
        out.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("service.istio.io/canonical-name")),
        Some(&"web".to_owned())
    );
}

// 7. Metadata.
#[test]
fn labels_and_annotations() {
    let out = run(&app_pod());
    let l = out.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        l.get("security.istio.io/tlsMode").map(String::as_str),
        Some("istio")
    );
    assert_eq!(
        l.get("service.istio.io/canonical-name").map(String::as_str),
        Some("app")
    );
    assert_eq!(
        l.get("service.istio.io/canonical-revision")
            .map(String::as_str),
        Some("latest")
    );
    for (k, v) in [
        ("istio.io/rev", "default"),
        ("kubectl.kubernetes.io/default-container", "app"),
        ("kubectl.kubernetes.io/default-logs-container", "app"),
        ("prometheus.io/port", "15020"),
        ("prometheus.io/path", "/stats/prometheus"),
        ("prometheus.io/scrape", "true"),
    ] {
        assert_eq!(annotation(&out, k), Some(v), "{k}");
    }
    // Existing values are kept where Istio keeps them.
    let p = annotate(
        label(app_pod(), "security.istio.io/tlsMode", "disabled"),
        "kubectl.kubernetes.io/default-container",
        "other",
    );
    let out = run(&p);
    assert_eq!(
        out.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("security.istio.io/tlsMode")),
        Some(&"disabled".to_owned())
    );
    assert_eq!(
        annotation(&out, "kubectl.kubernetes.io/default-container"),
        Some("other")
    );
}

#[test]
fn prometheus_annotations_move_into_the_proxy_env() {
    let p = annotate(
        annotate(app_pod(), "prometheus.io/port", "9090"),
        "prometheus.io/path",
        "/metrics",
    );
    let out = run(&p);
    assert_eq!(annotation(&out, "prometheus.io/port"), Some("15020"));
    assert_eq!(
        annotation(&out, "prometheus.io/path"),
        Some("/stats/prometheus")
    );
    assert_eq!(
        env(find(&out, "istio-proxy"), PROMETHEUS_ENV),
        Some(r#"{"scrape":"","path":"/metrics","port":"9090"}"#)
    );
    // Re-injection brings back the same result rather than losing the originals.
    assert_eq!(run(&out), out);
    // scrape=false leaves the pod's annotations alone.
    let out = run(&annotate(app_pod(), "prometheus.io/scrape", "false"));
    assert_eq!(annotation(&out, "prometheus.io/scrape"), Some("false"));
    assert_eq!(annotation(&out, "prometheus.io/port"), None);
}

// 8. and 9. Selection.
#[test]
fn selection_negative_cases() {
    let enabled = labels(&[("istio-injection", "enabled")]);
    assert_eq!(
        selection(&label(app_pod(), INJECT_LABEL, "false"), &enabled),
        Selection::NotSelected
    );
    assert_eq!(
        selection(&annotate(app_pod(), INJECT_LABEL, "false"), &enabled),
        Selection::OptedOut
    );
    let disabled = labels(&[("istio-injection", "disabled")]);
    assert!(!should_inject(
        &label(app_pod(), INJECT_LABEL, "true"),
        &disabled
    ));
    let mut host = app_pod();
    if let Some(s) = host.spec.as_mut() {
        s.host_network = Some(true);
    }
    assert_eq!(selection(&host, &enabled), Selection::HostNetwork);
    for ns in IGNORED_NAMESPACES {
        let mut p = app_pod();
        p.metadata.namespace = Some(ns.to_owned());
        assert_eq!(selection(&p, &enabled), Selection::IgnoredNamespace, "{ns}");
    }
}

#[test]
fn selection_positive_cases() {
    let none = BTreeMap::new();
    assert!(should_inject(
        &label(app_pod(), INJECT_LABEL, "true"),
        &none
    ));
    assert_eq!(
        selection(&annotate(app_pod(), INJECT_LABEL, "true"), &none),
        Selection::NotSelected,
        "annotations do not reach the webhook's object selector"
    );
    assert!(!should_inject(&app_pod(), &none));
    assert!(should_inject(
        &app_pod(),
        &labels(&[("istio.io/rev", "default")])
    ));
    assert!(should_inject(
        &app_pod(),
        &labels(&[("istio-injection", "enabled")])
    ));
    assert!(should_inject(
        &label(app_pod(), REVISION_LABEL, "default"),
        &none
    ));
    // istio-injection wins over istio.io/rev.
    let both = labels(&[("istio-injection", "disabled"), ("istio.io/rev", "default")]);
    assert!(!should_inject(&app_pod(), &both));
    // Another revision is not ours.
    assert!(!should_inject(
        &app_pod(),
        &labels(&[("istio.io/rev", "canary")])
    ));
    // An unknown value of the pod label means "default".
    assert!(should_inject(
        &label(app_pod(), INJECT_LABEL, "maybe"),
        &labels(&[("istio-injection", "enabled")])
    ));
    // The label wins over the annotation.
    let p = annotate(
        label(app_pod(), INJECT_LABEL, "true"),
        INJECT_LABEL,
        "false",
    );
    assert_eq!(inject_required(&p), Selection::Inject);
}

// 10. Probe rewriting.
#[test]
fn app_probes_go_through_the_agent() {
    let mut p = app_pod();
    if let Some(s) = p.spec.as_mut() {
        s.containers[0].readiness_probe = Some(
            serde_json::from_value(json!({
                "httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTP"},
                "timeoutSeconds": 1, "periodSeconds": 5
            }))
            .expect("probe"),
        );
        s.containers[0].liveness_probe =
            Some(serde_json::from_value(json!({"tcpSocket": {"port": "http"}})).expect("probe"));
        s.containers[0].startup_probe =
            Some(serde_json::from_value(json!({"exec": {"command": ["true"]}})).expect("probe"));
    }
    let out = run(&p);
    let app = find(&out, "app");
    let ready = app.readiness_probe.as_ref().expect("readiness");
    let get = ready.http_get.as_ref().expect("httpGet");
    assert_eq!(get.path.as_deref(), Some("/app-health/app/readyz"));
    assert_eq!(get.port, IntOrString::Int(15020));
    assert_eq!(get.scheme.as_deref(), Some("HTTP"));
    assert_eq!(ready.period_seconds, Some(5), "timing is kept");
    let live = app.liveness_probe.as_ref().expect("liveness");
    assert!(live.tcp_socket.is_none());
    assert_eq!(
        live.http_get.as_ref().and_then(|g| g.path.as_deref()),
        Some("/app-health/app/livez")
    );
    assert!(
        app.startup_probe
            .as_ref()
            .and_then(|p| p.exec.as_ref())
            .is_some()
    );
    let probers: serde_json::Value = serde_json::from_str(
        env(find(&out, "istio-proxy"), PROBERS_ENV).expect("ISTIO_KUBE_APP_PROBERS"),
    )
    .expect("json");
    assert_eq!(
        probers,
        json!({
            "/app-health/app/readyz": {"httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTP"}, "timeoutSeconds": 1},
            "/app-health/app/livez": {"tcpSocket": {"port": 8080}}
        })
    );
    // The annotation turns it off.
    let out = run(&annotate(
        p,
        "sidecar.istio.io/rewriteAppHTTPProbers",
        "false",
    ));
    assert_eq!(
        find(&out, "app")
            .readiness_probe
            .as_ref()
            .and_then(|r| r.http_get.as_ref())
            .and_then(|g| g.path.as_deref()),
        Some("/ready")
    );
    assert_eq!(env(find(&out, "istio-proxy"), PROBERS_ENV), None);
}

#[test]
fn native_user_sidecars_and_hooks_are_rewritten() {
    let p = pod(json!({
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {
            "initContainers": [{"name": "helper", "restartPolicy": "Always",
                "readinessProbe": {"grpc": {"port": 9000}}}],
            "containers": [{"name": "app", "lifecycle": {"preStop": {"httpGet": {"path": "/stop", "port": 8080}}}}]
        }
    }));
    let out = run(&p);
    let helper = find(&out, "helper");
    assert_eq!(
        helper
            .readiness_probe
            .as_ref()
            .and_then(|r| r.http_get.as_ref())
            .and_then(|g| g.path.as_deref()),
        Some("/app-health/helper/readyz")
    );
    let app = find(&out, "app");
    assert_eq!(
        app.lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.http_get.as_ref())
            .and_then(|g| g.path.as_deref()),
        Some("/app-lifecycle/app/prestopz")
    );
    let probers: serde_json::Value =
        serde_json::from_str(env(find(&out, "istio-proxy"), PROBERS_ENV).expect("env"))
            .expect("json");
    assert_eq!(
        probers["/app-health/helper/readyz"],
        json!({"grpc": {"port": 9000}})
    );
    assert_eq!(
        probers["/app-lifecycle/app/prestopz"],
        json!({"httpGet": {"path": "/stop", "port": 8080}})
    );
}

// 11. Idempotency.
#[test]
fn injecting_twice_is_injecting_once() {
    let mut p = app_pod();
    if let Some(s) = p.spec.as_mut() {
        s.containers[0].readiness_probe = Some(
            serde_json::from_value(json!({"httpGet": {"path": "/ready", "port": 8080}}))
                .expect("probe"),
        );
        s.init_containers = Some(vec![Container {
            name: "setup".into(),
            ..Container::default()
        }]);
        s.volumes = Some(vec![
            serde_json::from_value(json!({"name": "data", "emptyDir": {}})).expect("volume"),
        ]);
    }
    for p in [
        p.clone(),
        annotate(p.clone(), ANNOTATION_NATIVE_SIDECAR, "false"),
        annotate(p, ANNOTATION_INTERCEPTION_MODE, "NONE"),
    ] {
        let once = run(&p);
        let twice = run(&once);
        assert_eq!(twice, once);
        assert_eq!(run(&twice), once);
    }
}

#[test]
fn reinjection_applies_a_changed_config() {
    let once = run(&app_pod());
    let mut mesh = MeshConfig::default();
    mesh.apply_sets(&["values.pilot.env.ENABLE_NATIVE_SIDECARS=false"])
        .expect("set");
    let again = run_with(&once, &mesh);
    assert_eq!(init_names(&again), ["istio-init"]);
    assert_eq!(container_names(&again), ["app", "istio-proxy"]);
}

#[test]
fn interception_none_has_no_capture_container() {
    let legacy = run(&annotate(
        annotate(app_pod(), ANNOTATION_INTERCEPTION_MODE, "NONE"),
        ANNOTATION_NATIVE_SIDECAR,
        "false",
    ));
    assert!(init_names(&legacy).is_empty());
    let native = run(&annotate(app_pod(), ANNOTATION_INTERCEPTION_MODE, "NONE"));
    assert_eq!(init_names(&native), ["istio-proxy"]);
    assert_eq!(
        env(find(&native, "istio-proxy"), "ISTIO_META_INTERCEPTION_MODE"),
        Some("NONE")
    );
}

#[test]
fn a_user_istio_proxy_container_overrides_fields_and_survives_reinjection() {
    let mut p = app_pod();
    if let Some(s) = p.spec.as_mut() {
        s.containers.push(
            serde_json::from_value(json!({
                "name": "istio-proxy", "image": "auto",
                "env": [{"name": "EXTRA", "value": "1"}],
                "resources": {"limits": {"memory": "2Gi"}}
            }))
            .expect("container"),
        );
    }
    let out = run(&p);
    assert_eq!(init_names(&out), ["istio-init", "istio-proxy"]);
    assert_eq!(container_names(&out), ["app"]);
    let proxy = find(&out, "istio-proxy");
    assert_eq!(proxy.image.as_deref(), Some("tandem/proxy"));
    assert_eq!(env(proxy, "EXTRA"), Some("1"));
    assert_eq!(env(proxy, "ISTIO_META_APP_CONTAINERS"), Some("app"));
    let limits = proxy
        .resources
        .as_ref()
        .and_then(|r| r.limits.clone())
        .expect("limits");
    assert_eq!(limits["memory"].0, "2Gi");
    assert_eq!(limits["cpu"].0, "2");
    assert!(annotation(&out, ANNOTATION_OVERRIDES).is_some());
    assert_eq!(run(&out), out);
}

#[test]
fn a_pod_without_a_spec_is_an_error() {
    let nodes = nodes_133();
    let mesh = MeshConfig::default();
    let err = inject(&Pod::default(), &InjectContext::new(&mesh, &nodes)).expect_err("no spec");
    assert_eq!(err.to_string(), "the pod has no spec");
}

#[test]
fn kubelet_versions_parse() {
    assert!(supports_native("v1.33.0"));
    assert!(supports_native("v1.34.2-gke.1"));
    assert!(supports_native("1.33+"));
    assert!(supports_native("v2.0.0"));
    assert!(!supports_native("v1.32.9"));
    assert!(!supports_native("v1.9.0"));
    assert!(!supports_native("garbage"));
}

#[test]
fn proxy_image_and_resource_annotations() {
    let p = annotate(
        annotate(app_pod(), "sidecar.istio.io/proxyImage", "tandem/proxy:dev"),
        "sidecar.istio.io/proxyCPU",
        "50m",
    );
    let out = run(&p);
    assert_eq!(
        find(&out, "istio-init").image.as_deref(),
        Some("tandem/proxy:dev")
    );
    let proxy = find(&out, "istio-proxy");
    assert_eq!(proxy.image.as_deref(), Some("tandem/proxy:dev"));
    let resources = proxy.resources.clone().expect("resources");
    assert_eq!(
        resources.limits, None,
        "any resource annotation replaces the defaults"
    );
    assert_eq!(resources.requests.expect("requests")["cpu"].0, "50m");
    // Without annotations: Istio's defaults.
    let out = run(&app_pod());
    let resources = find(&out, "istio-proxy")
        .resources
        .clone()
        .expect("resources");
    assert_eq!(resources.limits.expect("limits")["memory"].0, "1Gi");
    assert_eq!(resources.requests.expect("requests")["cpu"].0, "100m");
}
