//! Pod validation: `ValidatePodCreate` and `ValidatePodSpec` of
//! k8s.io/kubernetes `pkg/apis/core/validation`, in the same order and with the
//! same paths (quirks included) as Kubernetes 1.33. Resource quantities, affinity,
//! topology spread and most security-context checks are not covered.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{
    ConfigMapKeySelector, Container, ContainerPort, ContainerResizePolicy, DownwardAPIVolumeFile,
    EnvFromSource, EnvVar, ExecAction, GRPCAction, HTTPGetAction, KeyToPath, Lifecycle,
    LifecycleHandler, ObjectFieldSelector, Pod, PodDNSConfig, PodSpec, Probe,
    ResourceFieldSelector, SecretKeySelector, SecurityContext, SleepAction, TCPSocketAction,
    Toleration, Volume, VolumeDevice, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names;
use super::{BadValue, FeatureGates, FieldError, FieldPath, ValidationError};

const NOT_FOR_REGULAR_INIT: &str =
    "may not be set for init containers without restartPolicy=Always";
const NEGATIVE: &str = "must be greater than or equal to 0";
const FILE_MODE: &str = "must be a number between 0 and 0777 (octal), both inclusive";
const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

type Errors = Vec<FieldError>;

#[derive(Clone, Copy)]
struct Opts<'a> {
    gates: &'a FeatureGates,
    /// A pod (not a template inside a Deployment or Job).
    resource_is_pod: bool,
}

/// Validates a new pod as the API server does on create. Expects a defaulted pod.
pub fn validate_pod(pod: &Pod, gates: &FeatureGates) -> Result<(), ValidationError> {
    let errors = pod_errors(pod, gates);
    if errors.is_empty() {
        Ok(())
    } else {
        let name = pod.metadata.name.as_deref().unwrap_or("");
        Err(ValidationError::new("Pod", name, errors))
    }
}

/// Validates a pod spec under `path_prefix` (`spec` for pods,
/// `spec.template.spec` for Deployments and Jobs).
pub fn validate_pod_spec(
    spec: &PodSpec,
    path_prefix: &str,
    gates: &FeatureGates,
) -> Vec<FieldError> {
    let opts = Opts {
        gates,
        resource_is_pod: false,
    };
    spec_errors(spec, &FieldPath::new(path_prefix), opts)
}

/// Validates object metadata: name (DNS subdomain), namespace (DNS label) when
/// `requires_namespace`, labels and annotations.
pub fn validate_object_meta(
    meta: &ObjectMeta,
    requires_namespace: bool,
    path: &FieldPath,
) -> Vec<FieldError> {
    object_meta_errors(meta, requires_namespace, names::name_is_dns_subdomain, path)
}

/// The warnings the API server returns with a created pod (the request still
/// succeeds). Call before defaulting, which rewrites a negative grace period.
pub fn pod_warnings(pod: &Pod) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(name) = pod.metadata.name.as_deref().filter(|n| !n.is_empty()) {
        let msgs = names::is_dns1123_label(name);
        if !msgs.is_empty() {
            warnings.push(format!(
                "metadata.name: this is used in the Pod's hostname, which can result in surprising behavior; a DNS label is recommended: [{}]",
                msgs.join(" ")
            ));
        }
    }
    if let Some(grace) = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        && grace < 0
    {
        warnings.push(
            "spec.terminationGracePeriodSeconds: must be >= 0; negative values are invalid and will be treated as 1"
                .to_owned(),
        );
    }
    warnings
}

fn pod_errors(pod: &Pod, gates: &FeatureGates) -> Errors {
    let opts = Opts {
        gates,
        resource_is_pod: true,
    };
    let mut errs = object_meta_errors(
        &pod.metadata,
        true,
        names::name_is_dns_subdomain,
        &FieldPath::new("metadata"),
    );
    let empty = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&empty);
    let spec_path = FieldPath::new("spec");
    errs.extend(spec_errors(spec, &spec_path, opts));

    if str_of(&spec.service_account_name).is_empty() {
        for (vi, volume) in spec.volumes.iter().flatten().enumerate() {
            let Some(projected) = &volume.projected else {
                continue;
            };
            for (si, source) in projected.sources.iter().flatten().enumerate() {
                if source.service_account_token.is_some() {
                    let p = spec_path
                        .child("volumes")
                        .index(vi)
                        .child("projected")
                        .child("sources")
                        .index(si)
                        .child("serviceAccountToken");
                    errs.push(FieldError::forbidden(
                        &p,
                        "must not be specified when serviceAccountName is not set",
                    ));
                }
            }
        }
    }
    for (field, list) in [
        ("containers", Some(&spec.containers)),
        ("initContainers", spec.init_containers.as_ref()),
    ] {
        for (i, c) in list.into_iter().flatten().enumerate() {
            let image = str_of(&c.image);
            if image.len() != image.trim().len() {
                let p = spec_path.child(field).index(i).child("image");
                errs.push(FieldError::invalid(
                    &p,
                    image,
                    "must not have leading or trailing whitespace",
                ));
            }
        }
    }
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        errs.push(FieldError::forbidden(
            &spec_path.child("ephemeralContainers"),
            "cannot be set on create",
        ));
    }
    if !str_of(&spec.node_name).is_empty()
        && spec
            .scheduling_gates
            .as_ref()
            .is_some_and(|g| !g.is_empty())
    {
        errs.push(FieldError::forbidden(
            &spec_path.child("nodeName"),
            "cannot be set until all schedulingGates have been cleared",
        ));
    }
    errs
}

fn str_of(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("")
}

fn object_meta_errors(
    meta: &ObjectMeta,
    requires_namespace: bool,
    name_fn: fn(&str, bool) -> Vec<String>,
    path: &FieldPath,
) -> Errors {
    let mut errs = Vec::new();
    let generate_name = str_of(&meta.generate_name);
    if !generate_name.is_empty() {
        for msg in name_fn(generate_name, true) {
            errs.push(FieldError::invalid(
                &path.child("generateName"),
                generate_name,
                &msg,
            ));
        }
    }
    let name = str_of(&meta.name);
    if name.is_empty() {
        errs.push(FieldError::required(
            &path.child("name"),
            "name or generateName is required",
        ));
    } else {
        for msg in name_fn(name, false) {
            errs.push(FieldError::invalid(&path.child("name"), name, &msg));
        }
    }
    let namespace = str_of(&meta.namespace);
    if requires_namespace {
        if namespace.is_empty() {
            errs.push(FieldError::required(&path.child("namespace"), ""));
        } else {
            for msg in names::name_is_dns_label(namespace, false) {
                errs.push(FieldError::invalid(
                    &path.child("namespace"),
                    namespace,
                    &msg,
                ));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(
            &path.child("namespace"),
            "not allowed on this type",
        ));
    }
    if let Some(generation) = meta.generation
        && generation < 0
    {
        errs.push(FieldError::invalid(
            &path.child("generation"),
            generation,
            NEGATIVE,
        ));
    }
    if let Some(labels) = &meta.labels {
        errs.extend(labels_errors(labels, &path.child("labels")));
    }
    if let Some(annotations) = &meta.annotations {
        let p = path.child("annotations");
        let mut size = 0;
        for (k, v) in annotations {
            for msg in names::is_qualified_name(&k.to_lowercase()) {
                errs.push(FieldError::invalid(&p, k.as_str(), &msg));
            }
            size += k.len() + v.len();
        }
        if size > TOTAL_ANNOTATION_SIZE_LIMIT {
            errs.push(FieldError::too_long(&p, TOTAL_ANNOTATION_SIZE_LIMIT));
        }
    }
    errs
}

fn labels_errors(labels: &BTreeMap<String, String>, path: &FieldPath) -> Errors {
    let mut errs = Vec::new();
    for (k, v) in labels {
        for msg in names::is_qualified_name(k) {
            errs.push(FieldError::invalid(path, k.as_str(), &msg));
        }
        for msg in names::is_valid_label_value(v) {
            errs.push(FieldError::invalid(path, v.as_str(), &msg));
        }
    }
    errs
}

fn spec_errors(spec: &PodSpec, path: &FieldPath, opts: Opts<'_>) -> Errors {
    let mut errs = Vec::new();
    let grace = spec.termination_grace_period_seconds;
    if grace.is_none() {
        errs.push(FieldError::required(
            &path.child("terminationGracePeriodSeconds"),
            "",
        ));
    }
    let volumes = spec.volumes.as_deref().unwrap_or(&[]);
    let (vols, volume_errs) = volumes_errors(volumes, &path.child("volumes"), opts);
    errs.extend(volume_errs);
    let restart_policy = str_of(&spec.restart_policy);
    let ctx = ContainerCtx {
        volumes: &vols,
        grace,
        opts,
        pod_restart_policy: restart_policy,
    };
    errs.extend(containers_errors(
        &spec.containers,
        &path.child("containers"),
        &ctx,
    ));
    errs.extend(init_containers_errors(
        spec.init_containers.as_deref().unwrap_or(&[]),
        &spec.containers,
        &path.child("initContainers"),
        &ctx,
    ));
    errs.extend(host_network_errors(spec, path, opts));
    errs.extend(one_of(
        &path.child("restartPolicy"),
        restart_policy,
        &["Always", "OnFailure", "Never"],
    ));
    let dns_policy = str_of(&spec.dns_policy);
    errs.extend(one_of(
        &path.child("dnsPolicy"),
        dns_policy,
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
    ));
    if let Some(selector) = &spec.node_selector {
        errs.extend(labels_errors(selector, &path.child("nodeSelector")));
    }
    errs.extend(pod_security_context_errors(
        spec,
        &path.child("securityContext"),
    ));
    errs.extend(dns_config_errors(
        spec.dns_config.as_ref(),
        dns_policy,
        &path.child("dnsConfig"),
    ));
    for (i, gate) in spec.readiness_gates.iter().flatten().enumerate() {
        let p = path.child("readinessGates").index(i).child("conditionType");
        for msg in names::is_qualified_name(&gate.condition_type) {
            errs.push(FieldError::invalid(&p, gate.condition_type.as_str(), &msg));
        }
    }
    let mut seen_gates = HashSet::new();
    for (i, gate) in spec.scheduling_gates.iter().flatten().enumerate() {
        let p = path.child("schedulingGates").index(i);
        for msg in names::is_qualified_name(&gate.name) {
            errs.push(FieldError::invalid(&p, gate.name.as_str(), &msg));
        }
        if !seen_gates.insert(gate.name.as_str()) {
            errs.push(FieldError::duplicate(&p, gate.name.as_str()));
        }
    }
    for (field, value) in [
        ("serviceAccountName", &spec.service_account_name),
        ("nodeName", &spec.node_name),
    ] {
        let value = str_of(value);
        if !value.is_empty() {
            for msg in names::name_is_dns_subdomain(value, false) {
                errs.push(FieldError::invalid(&path.child(field), value, &msg));
            }
        }
    }
    if let Some(deadline) = spec.active_deadline_seconds
        && !(1..=i64::from(i32::MAX)).contains(&deadline)
    {
        errs.push(FieldError::invalid(
            &path.child("activeDeadlineSeconds"),
            deadline,
            &names::inclusive_range_error(1, i64::from(i32::MAX)),
        ));
    }
    for (field, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        let value = str_of(value);
        if !value.is_empty() {
            for msg in names::is_dns1123_label(value) {
                errs.push(FieldError::invalid(&path.child(field), value, &msg));
            }
        }
    }
    for (i, t) in spec.tolerations.iter().flatten().enumerate() {
        errs.extend(toleration_errors(t, &path.child("tolerations").index(i)));
    }
    for (i, alias) in spec.host_aliases.iter().flatten().enumerate() {
        let p = path.child("hostAliases").index(i);
        errs.extend(ip_errors(&p.child("ip"), &alias.ip));
        for (j, hostname) in alias.hostnames.iter().flatten().enumerate() {
            for msg in names::is_dns1123_subdomain(hostname) {
                errs.push(FieldError::invalid(
                    &p.child("hostnames").index(j),
                    hostname.as_str(),
                    &msg,
                ));
            }
        }
    }
    for (field, value) in [
        (
            "priorityClassName",
            spec.priority_class_name
                .as_deref()
                .filter(|v| !v.is_empty()),
        ),
        ("runtimeClassName", spec.runtime_class_name.as_deref()),
    ] {
        if let Some(value) = value {
            for msg in names::name_is_dns_subdomain(value, false) {
                errs.push(FieldError::invalid(&path.child(field), value, &msg));
            }
        }
    }
    if let Some(policy) = &spec.preemption_policy {
        errs.extend(one_of(
            &path.child("preemptionPolicy"),
            policy,
            &["PreemptLowerPriority", "Never"],
        ));
    }
    if let Some(os) = &spec.os {
        let p = path.child("os").child("name");
        if os.name.is_empty() {
            errs.push(FieldError::required(&p, ""));
        } else if os.name != "linux" && os.name != "windows" {
            errs.push(FieldError::not_supported(
                &p,
                os.name.as_str(),
                &["linux", "windows"],
            ));
        }
    }
    errs
}

/// `""` is `Required value`, anything outside `allowed` is `Unsupported value`.
fn one_of(path: &FieldPath, value: &str, allowed: &[&str]) -> Errors {
    if value.is_empty() {
        vec![FieldError::required(path, "")]
    } else if allowed.contains(&value) {
        Vec::new()
    } else {
        vec![FieldError::not_supported(path, value, allowed)]
    }
}

fn pod_security_context_errors(spec: &PodSpec, path: &FieldPath) -> Errors {
    let mut errs = Vec::new();
    let Some(sc) = &spec.security_context else {
        return errs;
    };
    for (field, value) in [
        ("fsGroup", sc.fs_group),
        ("runAsUser", sc.run_as_user),
        ("runAsGroup", sc.run_as_group),
    ] {
        if let Some(id) = value {
            for msg in names::is_valid_id(id) {
                errs.push(FieldError::invalid(&path.child(field), id, &msg));
            }
        }
    }
    for (g, gid) in sc.supplemental_groups.iter().flatten().enumerate() {
        for msg in names::is_valid_id(*gid) {
            errs.push(FieldError::invalid(
                &path.child("supplementalGroups").index(g),
                *gid,
                &msg,
            ));
        }
    }
    if spec.share_process_namespace == Some(true) && spec.host_pid == Some(true) {
        errs.push(FieldError::invalid(
            &path.child("shareProcessNamespace"),
            true,
            "ShareProcessNamespace and HostPID cannot both be enabled",
        ));
    }
    errs
}

fn dns_config_errors(config: Option<&PodDNSConfig>, dns_policy: &str, path: &FieldPath) -> Errors {
    let mut errs = Vec::new();
    if dns_policy == "None" {
        let Some(config) = config else {
            errs.push(FieldError::required(
                path,
                "must provide `dnsConfig` when `dnsPolicy` is None",
            ));
            return errs;
        };
        if config.nameservers.as_ref().is_none_or(|n| n.is_empty()) {
            errs.push(FieldError::required(
                &path.child("nameservers"),
                "must provide at least one DNS nameserver when `dnsPolicy` is None",
            ));
            return errs;
        }
    }
    let Some(config) = config else {
        return errs;
    };
    let nameservers = config.nameservers.as_deref().unwrap_or(&[]);
    if nameservers.len() > 3 {
        errs.push(FieldError::invalid(
            &path.child("nameservers"),
            BadValue::Raw(go_string_slice(nameservers)),
            "must not have more than 3 nameservers",
        ));
    }
    for (i, ns) in nameservers.iter().enumerate() {
        errs.extend(ip_errors(&path.child("nameservers").index(i), ns));
    }
    let searches = config.searches.as_deref().unwrap_or(&[]);
    if searches.len() > 32 {
        errs.push(FieldError::invalid(
            &path.child("searches"),
            BadValue::Raw(go_string_slice(searches)),
            "must not have more than 32 search paths",
        ));
    }
    if searches.join(" ").len() > 2048 {
        errs.push(FieldError::invalid(
            &path.child("searches"),
            BadValue::Raw(go_string_slice(searches)),
            "must not have more than 2048 characters (including spaces) in the search list",
        ));
    }
    for (i, search) in searches.iter().enumerate() {
        // RelaxedDNSSearchValidation (beta, on): "." and underscores are allowed.
        if search != "." {
            let search = search.strip_suffix('.').unwrap_or(search);
            for msg in subdomain_with_underscore(search) {
                errs.push(FieldError::invalid(
                    &path.child("searches").index(i),
                    search,
                    &msg,
                ));
            }
        }
    }
    for (i, option) in config.options.iter().flatten().enumerate() {
        if str_of(&option.name).is_empty() {
            errs.push(FieldError::required(
                &path.child("options").index(i),
                "must not be empty",
            ));
        }
    }
    errs
}

fn subdomain_with_underscore(value: &str) -> Vec<String> {
    let label_ok = |l: &str| {
        let l = l.strip_prefix('_').unwrap_or(l);
        let b = l.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        !b.is_empty()
            && alnum(b[0])
            && alnum(b[b.len() - 1])
            && b.iter().all(|&c| alnum(c) || c == b'-' || c == b'_')
    };
    let mut errs = Vec::new();
    if value.len() > names::DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(names::max_len_error(names::DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !value.split('.').all(label_ok) {
        errs.push(names::regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '_', '-' or '.', and must start and end with an alphanumeric character",
            "_?[a-z0-9]([-_a-z0-9]*[a-z0-9])?(\\._?[a-z0-9]([-_a-z0-9]*[a-z0-9])?)*",
            &["example.com"],
        ));
    }
    errs
}

fn ip_errors(path: &FieldPath, value: &str) -> Errors {
    if value.parse::<std::net::IpAddr>().is_ok() {
        Vec::new()
    } else {
        vec![FieldError::invalid(
            path,
            value,
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        )]
    }
}

/// Go's `%#v` of a `[]string`.
fn go_string_slice(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| super::go_quote(v)).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

fn toleration_errors(t: &Toleration, path: &FieldPath) -> Errors {
    let mut errs = Vec::new();
    let key = str_of(&t.key);
    let operator = str_of(&t.operator);
    let effect = str_of(&t.effect);
    let value = str_of(&t.value);
    if !key.is_empty() {
        for msg in names::is_qualified_name(key) {
            errs.push(FieldError::invalid(&path.child("key"), key, &msg));
        }
    }
    if key.is_empty() && operator != "Exists" {
        errs.push(FieldError::invalid(
            &path.child("operator"),
            operator,
            "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
        ));
    }
    if t.toleration_seconds.is_some() && effect != "NoExecute" {
        errs.push(FieldError::invalid(
            &path.child("effect"),
            effect,
            "effect must be 'NoExecute' when `tolerationSeconds` is set",
        ));
    }
    match operator {
        "Equal" | "" => {
            let msgs = names::is_valid_label_value(value);
            if !msgs.is_empty() {
                errs.push(FieldError::invalid(
                    &path.child("operator"),
                    value,
                    &msgs.join(";"),
                ));
            }
        }
        "Exists" => {
            if !value.is_empty() {
                errs.push(FieldError::invalid(
                    &path.child("operator"),
                    value,
                    "value must be empty when `operator` is 'Exists'",
                ));
            }
        }
        _ => errs.push(FieldError::not_supported(
            &path.child("operator"),
            operator,
            &["Equal", "Exists"],
        )),
    }
    if !effect.is_empty() && !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        errs.push(FieldError::not_supported(
            &path.child("effect"),
            effect,
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
        ));
    }
    errs
}

// ----- volumes -----

type Volumes<'a> = BTreeMap<&'a str, &'a Volume>;

fn volumes_errors<'a>(
    volumes: &'a [Volume],
    path: &FieldPath,
    opts: Opts<'_>,
) -> (Volumes<'a>, Errors) {
    let mut errs = Vec::new();
    let mut vols = BTreeMap::new();
    for (i, vol) in volumes.iter().enumerate() {
        let idx = path.index(i);
        let name_path = idx.child("name");
        let mut el = volume_source_errors(vol, &idx, opts);
        if vol.name.is_empty() {
            el.push(FieldError::required(&name_path, ""));
        } else {
            for msg in names::is_dns1123_label(&vol.name) {
                el.push(FieldError::invalid(&name_path, vol.name.as_str(), &msg));
            }
        }
        if vols.contains_key(vol.name.as_str()) {
            el.push(FieldError::duplicate(&name_path, vol.name.as_str()));
        }
        // A volume with errors is not registered, so its mounts are "Not found" too.
        if el.is_empty() {
            vols.insert(vol.name.as_str(), vol);
        } else {
            errs.extend(el);
        }
    }
    (vols, errs)
}

fn volume_source_errors(v: &Volume, path: &FieldPath, opts: Opts<'_>) -> Errors {
    let mut errs = Vec::new();
    let mut count = 0;
    if let Some(empty_dir) = &v.empty_dir {
        count += 1;
        if empty_dir
            .size_limit
            .as_ref()
            .is_some_and(|q| q.0.trim_start().starts_with('-'))
        {
            errs.push(FieldError::forbidden(
                &path.child("emptyDir").child("sizeLimit"),
                "SizeLimit field must be a valid resource quantity",
            ));
        }
    }
    // Every other source, in Kubernetes' order; the first one counts, later ones
    // are "more than 1 volume type" (path names as Kubernetes spells them).
    let mut source = |present: bool, name: &str, check: &mut dyn FnMut(&mut Errors)| {
        if !present {
            return;
        }
        if count > 0 {
            errs.push(FieldError::forbidden(
                &path.child(name),
                "may not specify more than 1 volume type",
            ));
        } else {
            count += 1;
            check(&mut errs);
        }
    };
    source(v.host_path.is_some(), "hostPath", &mut |errs| {
        if let Some(h) = &v.host_path {
            errs.extend(host_path_errors(
                &h.path,
                h.type_.as_deref(),
                &path.child("hostPath"),
            ));
        }
    });
    source(v.git_repo.is_some(), "gitRepo", &mut |errs| {
        if let Some(g) = &v.git_repo {
            let p = path.child("gitRepo");
            if g.repository.is_empty() {
                errs.push(FieldError::required(&p.child("repository"), ""));
            }
            errs.extend(local_descending_path_errors(
                str_of(&g.directory),
                &p.child("directory"),
            ));
        }
    });
    source(
        v.gce_persistent_disk.is_some(),
        "gcePersistentDisk",
        &mut |_| {},
    );
    source(
        v.aws_elastic_block_store.is_some(),
        "awsElasticBlockStore",
        &mut |_| {},
    );
    source(v.secret.is_some(), "secret", &mut |errs| {
        if let Some(s) = &v.secret {
            let p = path.child("secret");
            if str_of(&s.secret_name).is_empty() {
                errs.push(FieldError::required(&p.child("secretName"), ""));
            }
            errs.extend(mode_errors(s.default_mode, &p.child("defaultMode")));
            for (i, item) in s.items.iter().flatten().enumerate() {
                errs.extend(key_to_path_errors(item, &p.child("items").index(i)));
            }
        }
    });
    source(v.nfs.is_some(), "nfs", &mut |errs| {
        if let Some(n) = &v.nfs {
            let p = path.child("nfs");
            if n.server.is_empty() {
                errs.push(FieldError::required(&p.child("server"), ""));
            }
            if n.path.is_empty() {
                errs.push(FieldError::required(&p.child("path"), ""));
            }
            if !n.path.starts_with('/') {
                errs.push(FieldError::invalid(
                    &p.child("path"),
                    n.path.as_str(),
                    "must be an absolute path",
                ));
            }
        }
    });
    source(v.iscsi.is_some(), "iscsi", &mut |_| {});
    source(v.glusterfs.is_some(), "glusterfs", &mut |_| {});
    source(v.flocker.is_some(), "flocker", &mut |_| {});
    source(
        v.persistent_volume_claim.is_some(),
        "persistentVolumeClaim",
        &mut |errs| {
            if let Some(c) = &v.persistent_volume_claim
                && c.claim_name.is_empty()
            {
                errs.push(FieldError::required(
                    &path.child("persistentVolumeClaim").child("claimName"),
                    "",
                ));
            }
        },
    );
    source(v.rbd.is_some(), "rbd", &mut |_| {});
    source(v.cinder.is_some(), "cinder", &mut |_| {});
    source(v.cephfs.is_some(), "cephFS", &mut |_| {});
    source(v.quobyte.is_some(), "quobyte", &mut |_| {});
    source(v.downward_api.is_some(), "downwarAPI", &mut |errs| {
        if let Some(d) = &v.downward_api {
            let p = path.child("downwardAPI");
            errs.extend(mode_errors(d.default_mode, &p.child("defaultMode")));
            for file in d.items.iter().flatten() {
                errs.extend(downward_api_file_errors(file, &p));
            }
        }
    });
    source(v.fc.is_some(), "fc", &mut |_| {});
    source(v.flex_volume.is_some(), "flexVolume", &mut |_| {});
    source(v.config_map.is_some(), "configMap", &mut |errs| {
        if let Some(c) = &v.config_map {
            let p = path.child("configMap");
            if c.name.is_empty() {
                errs.push(FieldError::required(&p.child("name"), ""));
            }
            errs.extend(mode_errors(c.default_mode, &p.child("defaultMode")));
            for (i, item) in c.items.iter().flatten().enumerate() {
                errs.extend(key_to_path_errors(item, &p.child("items").index(i)));
            }
        }
    });
    source(v.azure_file.is_some(), "azureFile", &mut |_| {});
    source(v.vsphere_volume.is_some(), "vsphereVolume", &mut |_| {});
    source(
        v.photon_persistent_disk.is_some(),
        "photonPersistentDisk",
        &mut |_| {},
    );
    source(v.portworx_volume.is_some(), "portworxVolume", &mut |_| {});
    source(v.azure_disk.is_some(), "azureDisk", &mut |_| {});
    source(v.storageos.is_some(), "storageos", &mut |_| {});
    source(v.projected.is_some(), "projected", &mut |errs| {
        if let Some(p) = &v.projected {
            errs.extend(projected_errors(p, &path.child("projected")));
        }
    });
    source(v.scale_io.is_some(), "scaleIO", &mut |_| {});
    source(v.csi.is_some(), "csi", &mut |_| {});
    source(v.ephemeral.is_some(), "ephemeral", &mut |_| {});
    source(v.image.is_some(), "image", &mut |errs| {
        if let Some(image) = &v.image {
            let p = path.child("image");
            if opts.resource_is_pod && str_of(&image.reference).is_empty() {
                errs.push(FieldError::required(&p.child("reference"), ""));
            }
            if let Some(policy) = &image.pull_policy {
                errs.extend(one_of(
                    &p.child("pullPolicy"),
                    policy,
                    &["Always", "IfNotPresent", "Never"],
                ));
            }
        }
    });
    if count == 0 {
        errs.push(FieldError::required(path, "must specify a volume type"));
    }
    errs
}

fn host_path_errors(host_path: &str, kind: Option<&str>, path: &FieldPath) -> Errors {
    if host_path.is_empty() {
        return vec![FieldError::required(&path.child("path"), "")];
    }
    let mut errs = no_backsteps_errors(host_path, &path.child("path"));
    const TYPES: &[&str] = &[
        "",
        "BlockDevice",
        "CharDevice",
        "Directory",
        "DirectoryOrCreate",
        "File",
        "FileOrCreate",
        "Socket",
    ];
    if let Some(kind) = kind
        && !TYPES.contains(&kind)
    {
        errs.push(FieldError::not_supported(&path.child("type"), kind, TYPES));
    }
    errs
}

fn mode_errors(mode: Option<i32>, path: &FieldPath) -> Errors {
    match mode {
        Some(m) if !(0..=0o777).contains(&m) => vec![FieldError::invalid(path, m, FILE_MODE)],
        _ => Vec::new(),
    }
}

fn key_to_path_errors(kp: &KeyToPath, path: &FieldPath) -> Errors {
    let mut errs = Vec::new();
    if kp.key.is_empty() {
        errs.push(FieldError::required(&path.child("key"), ""));
    }
    if kp.path.is_empty() {
        errs.push(FieldError::required(&path.child("path"), ""));
    }
    errs.extend(local_non_reserved_path_errors(
        &kp.path,
        &path.child("path"),
    ));
    errs.extend(mode_errors(kp.mode, &path.child("mode")));
    errs
}

fn no_backsteps_errors(target: &str, path: &FieldPath) -> Errors {
    if target.split('/').any(|part| part == "..") {
        vec![FieldError::invalid(path, target, "must not contain '..'")]
    } else {
        Vec::new()
    }
}

fn local_descending_path_errors(target: &str, path: &FieldPath) -> Errors {
    let mut errs = Vec::new();
    if target.starts_with('/') {
        errs.push(FieldError::invalid(path, target, "must be a relative path"));
    }
    errs.extend(no_backsteps_errors(target, path));
    errs
}

fn local_non_reserved_path_errors(target: &str, path: &FieldPath) -> Errors {
    let mut errs = local_descending_path_errors(target, path);
    if target.starts_with("..") && !target.starts_with("../") {
        errs.push(FieldError::invalid(
            path,
            target,
            "must not start with '..'",
        ));
    }
    errs
}

const VOLUME_FIELD_PATHS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
];
const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];
const RESOURCE_FIELD_PATHS: &[&str] = &[
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

fn downward_api_file_errors(file: &DownwardAPIVolumeFile, path: &FieldPath) -> Errors {
    let mut errs = Vec::new();
    if file.path.is_empty() {
        errs.push(FieldError::required(&path.child("path"), ""));
    }
    errs.extend(local_non_reserved_path_errors(
        &file.path,
        &path.child("path"),
    ));
    match (&file.field_ref, &file.resource_field_ref) {
        (Some(field_ref), resource) => {
            errs.extend(object_field_selector_errors(
                field_ref,
                VOLUME_FIELD_PATHS,
                &path.child("fieldRef"),
            ));
            if resource.is_some() {
                errs.push(FieldError::invalid(
                    path,
                    "resource",
                    "fieldRef and resourceFieldRef can not be specified simultaneously",
                ));
            }
        }
        (None, Some(resource)) => {
            errs.extend(resource_field_selector_errors(
                resource,
                &path.child("resourceFieldRef"),
                true,
            ));
        }
        (None, None) => errs.push(FieldError::required(
            path,
            "one of fieldRef and resourceFieldRef is required",
        )),
    }
    errs.extend(mode_errors(file.mode, &path.child("mode")));
    errs
}

fn projected_errors(
    projected: &k8s_openapi::api::core::v1::ProjectedVolumeSource,
    path: &FieldPath,
) -> Errors {
    let mut errs = mode_errors(projected.default_mode, &path.child("defaultMode"));
    let mut all_paths: HashSet<String> = HashSet::new();
    for (i, source) in projected.sources.iter().flatten().enumerate() {
        let src = path.child("sources").index(i);
        let mut count = 0;
        let mut keyed =
            |name: &str, items: Option<&Vec<KeyToPath>>, proj: FieldPath, errs: &mut Errors| {
                if name.is_empty() {
                    errs.push(FieldError::required(&proj.child("name"), ""));
                }
                for (j, kp) in items.into_iter().flatten().enumerate() {
                    errs.extend(key_to_path_errors(kp, &proj.child("items").index(j)));
                    if !kp.path.is_empty() && !all_paths.insert(kp.path.clone()) {
                        errs.push(FieldError::invalid(
                            path,
                            name,
                            "conflicting duplicate paths",
                        ));
                    }
                }
            };
        if let Some(s) = &source.secret {
            count += 1;
            keyed(&s.name, s.items.as_ref(), src.child("secret"), &mut errs);
        }
        if let Some(c) = &source.config_map {
            count += 1;
            keyed(&c.name, c.items.as_ref(), src.child("configMap"), &mut errs);
        }
        if let Some(d) = &source.downward_api {
            count += 1;
            for file in d.items.iter().flatten() {
                errs.extend(downward_api_file_errors(file, &src.child("downwardAPI")));
                if !file.path.is_empty() && !all_paths.insert(file.path.clone()) {
                    errs.push(FieldError::invalid(
                        path,
                        file.path.as_str(),
                        "conflicting duplicate paths",
                    ));
                }
            }
        }
        if let Some(t) = &source.service_account_token {
            count += 1;
            let p = src.child("serviceAccountToken");
            let expiration = t.expiration_seconds.unwrap_or(0);
            if expiration < 600 {
                errs.push(FieldError::invalid(
                    &p.child("expirationSeconds"),
                    expiration,
                    "may not specify a duration less than 10 minutes",
                ));
            }
            if expiration > 1 << 32 {
                errs.push(FieldError::invalid(
                    &p.child("expirationSeconds"),
                    expiration,
                    "may not specify a duration larger than 2^32 seconds",
                ));
            }
            if t.path.is_empty() {
                errs.push(FieldError::required(&path.child("path"), ""));
            } else {
                errs.extend(local_non_reserved_path_errors(&t.path, &path.child("path")));
            }
        }
        if source.cluster_trust_bundle.is_some() {
            count += 1;
        }
        if count > 1 {
            errs.push(FieldError::forbidden(
                &src,
                "may not specify more than 1 volume type per source",
            ));
        }
    }
    errs
}

/// The downward API field paths the kubelet can resolve (`ConvertDownwardAPIFieldLabel`).
fn convertible_field_path(field_path: &str) -> bool {
    const FIELDS: &[&str] = &[
        "metadata.annotations",
        "metadata.labels",
        "metadata.name",
        "metadata.namespace",
        "metadata.uid",
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.serviceAccountName",
        "spec.schedulerName",
        "status.phase",
        "status.hostIP",
        "status.hostIPs",
        "status.podIP",
        "status.podIPs",
    ];
    FIELDS.contains(&field_path) || subscript(field_path).is_some()
}

/// `metadata.labels['key']` -> (`metadata.labels`, `key`).
fn subscript(field_path: &str) -> Option<(&str, &str)> {
    let (base, rest) = field_path.split_once("['")?;
    let key = rest.strip_suffix("']")?;
    Some((base, key))
}

fn object_field_selector_errors(
    fs: &ObjectFieldSelector,
    allowed: &[&str],
    path: &FieldPath,
) -> Errors {
    let api_version = str_of(&fs.api_version);
    if api_version.is_empty() {
        return vec![FieldError::required(&path.child("apiVersion"), "")];
    }
    if fs.field_path.is_empty() {
        return vec![FieldError::required(&path.child("fieldPath"), "")];
    }
    if api_version != "v1" || !convertible_field_path(&fs.field_path) {
        let detail = if api_version == "v1" {
            format!(
                "error converting fieldPath: field label not supported: {}",
                fs.field_path
            )
        } else {
            format!("error converting fieldPath: unsupported version: {api_version}")
        };
        return vec![FieldError::invalid(
            &path.child("fieldPath"),
            fs.field_path.as_str(),
            &detail,
        )];
    }
    let mut errs = Vec::new();
    if let Some((base, key)) = subscript(&fs.field_path) {
        match base {
            "metadata.annotations" => {
                for msg in names::is_qualified_name(&key.to_lowercase()) {
                    errs.push(FieldError::invalid(path, key, &msg));
                }
            }
            "metadata.labels" => {
                for msg in names::is_qualified_name(key) {
                    errs.push(FieldError::invalid(path, key, &msg));
                }
            }
            _ => errs.push(FieldError::invalid(
                path,
                base,
                "does not support subscript",
            )),
        }
    } else if !allowed.contains(&fs.field_path.as_str()) {
        errs.push(FieldError::not_supported(
            &path.child("fieldPath"),
            fs.field_path.as_str(),
            allowed,
        ));
    }
    errs
}

fn resource_field_selector_errors(
    fs: &ResourceFieldSelector,
    path: &FieldPath,
    volume: bool,
) -> Errors {
    let mut errs = Vec::new();
    if volume && str_of(&fs.container_name).is_empty() {
        errs.push(FieldError::required(&path.child("containerName"), ""));
    } else if fs.resource.is_empty() {
        errs.push(FieldError::required(&path.child("resource"), ""));
    } else if !RESOURCE_FIELD_PATHS.contains(&fs.resource.as_str())
        && !fs.resource.starts_with("limits.hugepages-")
        && !fs.resource.starts_with("requests.hugepages-")
    {
        errs.push(FieldError::not_supported(
            &path.child("resource"),
            fs.resource.as_str(),
            RESOURCE_FIELD_PATHS,
        ));
    }
    errs
}

// ----- containers -----

struct ContainerCtx<'a> {
    volumes: &'a Volumes<'a>,
    grace: Option<i64>,
    opts: Opts<'a>,
    pod_restart_policy: &'a str,
}

fn containers_errors(containers: &[Container], path: &FieldPath, ctx: &ContainerCtx<'_>) -> Errors {
    if containers.is_empty() {
        return vec![FieldError::required(path, "")];
    }
    let mut errs = Vec::new();
    let mut all_names = HashSet::new();
    for (i, c) in containers.iter().enumerate() {
        let p = path.index(i);
        errs.extend(container_common_errors(c, &p, ctx));
        if !all_names.insert(c.name.as_str()) {
            errs.push(FieldError::duplicate(&p.child("name"), c.name.as_str()));
        }
        if let Some(lifecycle) = &c.lifecycle {
            errs.extend(lifecycle_errors(lifecycle, &p.child("lifecycle"), ctx));
        }
        errs.extend(probes_errors(c, &p, ctx));
        if c.restart_policy.is_some() {
            errs.push(FieldError::forbidden(
                &p.child("restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    let mut ports = HashSet::new();
    errs.extend(unique_host_ports_errors(containers, &mut ports, path));
    errs
}

fn init_containers_errors(
    containers: &[Container],
    regular: &[Container],
    path: &FieldPath,
    ctx: &ContainerCtx<'_>,
) -> Errors {
    let mut errs = Vec::new();
    let mut all_names: HashSet<&str> = regular.iter().map(|c| c.name.as_str()).collect();
    for (i, c) in containers.iter().enumerate() {
        let idx = path.index(i);
        errs.extend(container_common_errors(c, &idx, ctx));
        // With the gate off the API server has dropped the field before validating.
        let restart_policy = c
            .restart_policy
            .as_deref()
            .filter(|_| ctx.opts.gates.sidecar_containers);
        let mut restart_always = false;
        if let Some(policy) = restart_policy {
            if policy != "Always" {
                errs.push(FieldError::not_supported(
                    &idx.child("restartPolicy"),
                    policy,
                    &["Always"],
                ));
            }
            restart_always = policy == "Always";
        }
        if all_names.contains(c.name.as_str()) {
            errs.push(FieldError::duplicate(&idx.child("name"), c.name.as_str()));
        } else if !c.name.is_empty() {
            all_names.insert(c.name.as_str());
        }
        // Init containers run one at a time, so host ports only clash within one
        // (Kubernetes reports these under index 0).
        let mut ports = HashSet::new();
        errs.extend(unique_host_ports_errors(
            std::slice::from_ref(c),
            &mut ports,
            path,
        ));
        if restart_always {
            if let Some(lifecycle) = &c.lifecycle {
                errs.extend(lifecycle_errors(lifecycle, &idx.child("lifecycle"), ctx));
            }
            errs.extend(probes_errors(c, &idx, ctx));
        } else {
            for (field, set) in [
                ("lifecycle", c.lifecycle.is_some()),
                ("livenessProbe", c.liveness_probe.is_some()),
                ("readinessProbe", c.readiness_probe.is_some()),
                ("startupProbe", c.startup_probe.is_some()),
            ] {
                if set {
                    errs.push(FieldError::forbidden(
                        &idx.child(field),
                        NOT_FOR_REGULAR_INIT,
                    ));
                }
            }
        }
        if !ctx.opts.gates.sidecar_resize_policy
            && let Some(policies) = c.resize_policy.as_ref().filter(|p| !p.is_empty())
        {
            errs.push(FieldError::invalid(
                &idx.child("resizePolicy"),
                BadValue::Raw(go_resize_policies(policies)),
                "must not be set for init containers",
            ));
        }
    }
    errs
}

/// Go's `%#v` of a `[]core.ContainerResizePolicy`.
fn go_resize_policies(policies: &[ContainerResizePolicy]) -> String {
    let items: Vec<String> = policies
        .iter()
        .map(|p| {
            format!(
                "core.ContainerResizePolicy{{ResourceName:{}, RestartPolicy:{}}}",
                super::go_quote(&p.resource_name),
                super::go_quote(&p.restart_policy)
            )
        })
        .collect();
    format!("[]core.ContainerResizePolicy{{{}}}", items.join(", "))
}

fn probes_errors(c: &Container, p: &FieldPath, ctx: &ContainerCtx<'_>) -> Errors {
    let mut errs = Vec::new();
    if let Some(probe) = &c.liveness_probe {
        let path = p.child("livenessProbe");
        errs.extend(probe_errors(probe, &path, ctx));
        errs.extend(success_threshold_is_one(probe, &path));
    }
    if let Some(probe) = &c.readiness_probe {
        let path = p.child("readinessProbe");
        errs.extend(probe_errors(probe, &path, ctx));
        if let Some(grace) = probe.termination_grace_period_seconds {
            errs.push(FieldError::invalid(
                &path.child("terminationGracePeriodSeconds"),
                grace,
                "must not be set for readinessProbes",
            ));
        }
    }
    if let Some(probe) = &c.startup_probe {
        let path = p.child("startupProbe");
        errs.extend(probe_errors(probe, &path, ctx));
        errs.extend(success_threshold_is_one(probe, &path));
    }
    errs
}

fn success_threshold_is_one(probe: &Probe, path: &FieldPath) -> Errors {
    let threshold = probe.success_threshold.unwrap_or(0);
    if threshold == 1 {
        Vec::new()
    } else {
        vec![FieldError::invalid(
            &path.child("successThreshold"),
            threshold,
            "must be 1",
        )]
    }
}

fn probe_errors(probe: &Probe, path: &FieldPath, ctx: &ContainerCtx<'_>) -> Errors {
    let handler = Handler {
        exec: probe.exec.as_ref(),
        http_get: probe.http_get.as_ref(),
        tcp_socket: probe.tcp_socket.as_ref(),
        grpc: probe.grpc.as_ref(),
        sleep: None,
    };
    let mut errs = handler_errors(&handler, path, ctx);
    for (field, value) in [
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("periodSeconds", probe.period_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ] {
        let value = value.unwrap_or(0);
        if value < 0 {
            errs.push(FieldError::invalid(&path.child(field), value, NEGATIVE));
        }
    }
    if let Some(grace) = probe.termination_grace_period_seconds
        && grace <= 0
    {
        errs.push(FieldError::invalid(
            &path.child("terminationGracePeriodSeconds"),
            grace,
            "must be greater than 0",
        ));
    }
    errs
}

fn lifecycle_errors(lifecycle: &Lifecycle, path: &FieldPath, ctx: &ContainerCtx<'_>) -> Errors {
    let mut errs = Vec::new();
    for (field, handler) in [
        ("postStart", &lifecycle.post_start),
        ("preStop", &lifecycle.pre_stop),
    ] {
        if let Some(h) = handler {
            errs.extend(handler_errors(
                &Handler::from_lifecycle(h),
                &path.child(field),
                ctx,
            ));
        }
    }
    errs
}

struct Handler<'a> {
    exec: Option<&'a ExecAction>,
    http_get: Option<&'a HTTPGetAction>,
    tcp_socket: Option<&'a TCPSocketAction>,
    grpc: Option<&'a GRPCAction>,
    sleep: Option<&'a SleepAction>,
}

impl<'a> Handler<'a> {
    fn from_lifecycle(h: &'a LifecycleHandler) -> Self {
        Handler {
            exec: h.exec.as_ref(),
            http_get: h.http_get.as_ref(),
            tcp_socket: h.tcp_socket.as_ref(),
            grpc: None,
            sleep: h.sleep.as_ref(),
        }
    }
}

fn handler_errors(h: &Handler<'_>, path: &FieldPath, ctx: &ContainerCtx<'_>) -> Errors {
    let mut errs = Vec::new();
    let mut count = 0;
    let mut one = |present: bool, name: &str, errs: &mut Errors| -> bool {
        if !present {
            return false;
        }
        if count > 0 {
            errs.push(FieldError::forbidden(
                &path.child(name),
                "may not specify more than 1 handler type",
            ));
            false
        } else {
            count += 1;
            true
        }
    };
    if one(h.exec.is_some(), "exec", &mut errs)
        && let Some(exec) = h.exec
        && exec.command.as_ref().is_none_or(|c| c.is_empty())
    {
        errs.push(FieldError::required(
            &path.child("exec").child("command"),
            "",
        ));
    }
    if one(h.http_get.is_some(), "httpGet", &mut errs)
        && let Some(get) = h.http_get
    {
        let p = path.child("httpGet");
        if str_of(&get.path).is_empty() {
            errs.push(FieldError::required(&p.child("path"), ""));
        }
        errs.extend(port_num_or_name_errors(&get.port, &p.child("port")));
        let scheme = str_of(&get.scheme);
        if scheme != "HTTP" && scheme != "HTTPS" {
            errs.push(FieldError::not_supported(
                &p.child("scheme"),
                scheme,
                &["HTTP", "HTTPS"],
            ));
        }
        for header in get.http_headers.iter().flatten() {
            for msg in names::is_http_header_name(&header.name) {
                errs.push(FieldError::invalid(
                    &p.child("httpHeaders"),
                    header.name.as_str(),
                    &msg,
                ));
            }
        }
    }
    if one(h.tcp_socket.is_some(), "tcpSocket", &mut errs)
        && let Some(tcp) = h.tcp_socket
    {
        errs.extend(port_num_or_name_errors(
            &tcp.port,
            &path.child("tcpSocket").child("port"),
        ));
    }
    if one(h.grpc.is_some(), "grpc", &mut errs)
        && let Some(grpc) = h.grpc
    {
        for msg in names::is_valid_port_num(i64::from(grpc.port)) {
            errs.push(FieldError::invalid(
                &path.child("grpc").child("port"),
                grpc.port,
                &msg,
            ));
        }
    }
    if one(h.sleep.is_some(), "sleep", &mut errs)
        && let Some(sleep) = h.sleep
        && let Some(grace) = ctx.grace
    {
        let p = path.child("sleep");
        if ctx.opts.gates.pod_lifecycle_sleep_action_allow_zero {
            if sleep.seconds < 0 || sleep.seconds > grace {
                errs.push(FieldError::invalid(
                    &p,
                    sleep.seconds,
                    &format!(
                        "must be non-negative and less than terminationGracePeriodSeconds ({grace})"
                    ),
                ));
            }
        } else if sleep.seconds <= 0 || sleep.seconds > grace {
            errs.push(FieldError::invalid(
                &p,
                sleep.seconds,
                &format!(
                    "must be greater than 0 and less than terminationGracePeriodSeconds ({grace}). Enable AllowPodLifecycleSleepActionZeroValue feature gate for zero sleep."
                ),
            ));
        }
    }
    if count == 0 {
        errs.push(FieldError::required(path, "must specify a handler type"));
    }
    errs
}

fn port_num_or_name_errors(port: &IntOrString, path: &FieldPath) -> Errors {
    match port {
        IntOrString::Int(n) => names::is_valid_port_num(i64::from(*n))
            .into_iter()
            .map(|msg| FieldError::invalid(path, *n, &msg))
            .collect(),
        IntOrString::String(s) => names::is_valid_port_name(s)
            .into_iter()
            .map(|msg| FieldError::invalid(path, s.as_str(), &msg))
            .collect(),
    }
}

fn container_common_errors(c: &Container, p: &FieldPath, ctx: &ContainerCtx<'_>) -> Errors {
    let mut errs = Vec::new();
    let name_path = p.child("name");
    if c.name.is_empty() {
        errs.push(FieldError::required(&name_path, ""));
    } else {
        for msg in names::is_dns1123_label(&c.name) {
            errs.push(FieldError::invalid(&name_path, c.name.as_str(), &msg));
        }
    }
    if str_of(&c.image).is_empty() {
        errs.push(FieldError::required(&p.child("image"), ""));
    }
    let policy = str_of(&c.termination_message_policy);
    errs.extend(one_of(
        &p.child("terminationMessagePolicy"),
        policy,
        &["File", "FallbackToLogsOnError"],
    ));
    let mounts = c.volume_mounts.as_deref().unwrap_or(&[]);
    let devices = c.volume_devices.as_deref().unwrap_or(&[]);
    errs.extend(ports_errors(
        c.ports.as_deref().unwrap_or(&[]),
        &p.child("ports"),
    ));
    errs.extend(env_errors(
        c.env.as_deref().unwrap_or(&[]),
        &p.child("env"),
        ctx.opts,
    ));
    errs.extend(env_from_errors(
        c.env_from.as_deref().unwrap_or(&[]),
        &p.child("envFrom"),
        ctx.opts,
    ));
    errs.extend(volume_mounts_errors(
        mounts,
        devices,
        c,
        &p.child("volumeMounts"),
        ctx,
    ));
    errs.extend(volume_devices_errors(
        devices,
        mounts,
        &p.child("volumeDevices"),
        ctx,
    ));
    errs.extend(one_of(
        &p.child("imagePullPolicy"),
        str_of(&c.image_pull_policy),
        &["Always", "IfNotPresent", "Never"],
    ));
    errs.extend(resize_policy_errors(
        c.resize_policy.as_deref().unwrap_or(&[]),
        &p.child("resizePolicy"),
        ctx.pod_restart_policy,
    ));
    errs.extend(security_context_errors(
        c.security_context.as_ref(),
        &p.child("securityContext"),
    ));
    errs
}

fn ports_errors(ports: &[ContainerPort], path: &FieldPath) -> Errors {
    let mut errs = Vec::new();
    let mut all_names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let idx = path.index(i);
        let name = str_of(&port.name);
        if !name.is_empty() {
            let msgs = names::is_valid_port_name(name);
            if !msgs.is_empty() {
                for msg in msgs {
                    errs.push(FieldError::invalid(&idx.child("name"), name, &msg));
                }
            } else if !all_names.insert(name) {
                errs.push(FieldError::duplicate(&idx.child("name"), name));
            }
        }
        if port.container_port == 0 {
            errs.push(FieldError::required(&idx.child("containerPort"), ""));
        } else {
            for msg in names::is_valid_port_num(i64::from(port.container_port)) {
                errs.push(FieldError::invalid(
                    &idx.child("containerPort"),
                    port.container_port,
                    &msg,
                ));
            }
        }
        if let Some(host_port) = port.host_port.filter(|p| *p != 0) {
            for msg in names::is_valid_port_num(i64::from(host_port)) {
                errs.push(FieldError::invalid(&idx.child("hostPort"), host_port, &msg));
            }
        }
        let protocol = str_of(&port.protocol);
        if protocol.is_empty() {
            errs.push(FieldError::required(&idx.child("protocol"), ""));
        } else if !matches!(protocol, "TCP" | "UDP" | "SCTP") {
            errs.push(FieldError::not_supported(
                &idx.child("protocol"),
                protocol,
                &["SCTP", "TCP", "UDP"],
            ));
        }
    }
    errs
}

fn env_name_errors(name: &str, opts: Opts<'_>) -> Vec<String> {
    if opts.gates.relaxed_environment_variable_validation {
        names::is_relaxed_env_var_name(name)
    } else {
        names::is_env_var_name(name)
    }
}

fn env_errors(vars: &[EnvVar], path: &FieldPath, opts: Opts<'_>) -> Errors {
    let mut errs = Vec::new();
    for (i, var) in vars.iter().enumerate() {
        let idx = path.index(i);
        if var.name.is_empty() {
            errs.push(FieldError::required(&idx.child("name"), ""));
        } else {
            for msg in env_name_errors(&var.name, opts) {
                errs.push(FieldError::invalid(
                    &idx.child("name"),
                    var.name.as_str(),
                    &msg,
                ));
            }
        }
        let Some(from) = &var.value_from else {
            continue;
        };
        let p = idx.child("valueFrom");
        let mut sources = 0;
        if let Some(field_ref) = &from.field_ref {
            sources += 1;
            errs.extend(object_field_selector_errors(
                field_ref,
                ENV_FIELD_PATHS,
                &p.child("fieldRef"),
            ));
        }
        if let Some(resource) = &from.resource_field_ref {
            sources += 1;
            errs.extend(resource_field_selector_errors(
                resource,
                &p.child("resourceFieldRef"),
                false,
            ));
        }
        if let Some(selector) = &from.config_map_key_ref {
            sources += 1;
            errs.extend(key_selector_errors(selector, &p.child("configMapKeyRef")));
        }
        if let Some(selector) = &from.secret_key_ref {
            sources += 1;
            errs.extend(key_selector_errors(selector, &p.child("secretKeyRef")));
        }
        if sources == 0 {
            errs.push(FieldError::invalid(
                &p,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if !str_of(&var.value).is_empty() {
            errs.push(FieldError::invalid(
                &p,
                "",
                "may not be specified when `value` is not empty",
            ));
        } else if sources > 1 {
            errs.push(FieldError::invalid(
                &p,
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
    errs
}

/// ConfigMap and Secret key selectors share their checks.
trait KeySelector {
    fn name(&self) -> &str;
    fn key(&self) -> &str;
}

impl KeySelector for ConfigMapKeySelector {
    fn name(&self) -> &str {
        &self.name
    }
    fn key(&self) -> &str {
        &self.key
    }
}

impl KeySelector for SecretKeySelector {
    fn name(&self) -> &str {
        &self.name
    }
    fn key(&self) -> &str {
        &self.key
    }
}

fn key_selector_errors(selector: &dyn KeySelector, path: &FieldPath) -> Errors {
    let mut errs = Vec::new();
    for msg in names::name_is_dns_subdomain(selector.name(), false) {
        errs.push(FieldError::invalid(
            &path.child("name"),
            selector.name(),
            &msg,
        ));
    }
    if selector.key().is_empty() {
        errs.push(FieldError::required(&path.child("key"), ""));
    } else {
        for msg in names::is_config_map_key(selector.key()) {
            errs.push(FieldError::invalid(
                &path.child("key"),
                selector.key(),
                &msg,
            ));
        }
    }
    errs
}

fn env_from_errors(sources: &[EnvFromSource], path: &FieldPath, opts: Opts<'_>) -> Errors {
    let mut errs = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        let idx = path.index(i);
        let prefix = str_of(&source.prefix);
        if !prefix.is_empty() {
            for msg in env_name_errors(prefix, opts) {
                errs.push(FieldError::invalid(&idx.child("prefix"), prefix, &msg));
            }
        }
        let mut count = 0;
        for (field, name) in [
            (
                "configMapRef",
                source.config_map_ref.as_ref().map(|r| r.name.as_str()),
            ),
            (
                "secretRef",
                source.secret_ref.as_ref().map(|r| r.name.as_str()),
            ),
        ] {
            let Some(name) = name else { continue };
            count += 1;
            let p = idx.child(field).child("name");
            if name.is_empty() {
                errs.push(FieldError::required(&p, ""));
            } else {
                for msg in names::name_is_dns_subdomain(name, true) {
                    errs.push(FieldError::invalid(&p, name, &msg));
                }
            }
        }
        if count == 0 {
            errs.push(FieldError::invalid(
                path,
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        } else if count > 1 {
            errs.push(FieldError::invalid(
                path,
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
    errs
}

fn volume_mounts_errors(
    mounts: &[VolumeMount],
    devices: &[VolumeDevice],
    container: &Container,
    path: &FieldPath,
    ctx: &ContainerCtx<'_>,
) -> Errors {
    let mut errs = Vec::new();
    let mut mount_points = HashSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let idx = path.index(i);
        if m.name.is_empty() {
            errs.push(FieldError::required(&idx.child("name"), ""));
        }
        if !ctx.volumes.contains_key(m.name.as_str()) {
            errs.push(FieldError::not_found(&idx.child("name"), m.name.as_str()));
        }
        if m.mount_path.is_empty() {
            errs.push(FieldError::required(&idx.child("mountPath"), ""));
        }
        if !mount_points.insert(m.mount_path.as_str()) {
            errs.push(FieldError::invalid(
                &idx.child("mountPath"),
                m.mount_path.as_str(),
                "must be unique",
            ));
        }
        if devices.iter().any(|d| d.name == m.name) {
            errs.push(FieldError::invalid(
                &idx.child("name"),
                m.name.as_str(),
                "must not already exist in volumeDevices",
            ));
        }
        if devices.iter().any(|d| d.device_path == m.mount_path) {
            errs.push(FieldError::invalid(
                &idx.child("mountPath"),
                m.mount_path.as_str(),
                "must not already exist as a path in volumeDevices",
            ));
        }
        let sub_path = str_of(&m.sub_path);
        let sub_path_expr = str_of(&m.sub_path_expr);
        if ctx
            .volumes
            .get(m.name.as_str())
            .is_some_and(|v| v.image.is_some())
        {
            if !sub_path.is_empty() {
                errs.push(FieldError::invalid(
                    &idx.child("subPath"),
                    sub_path,
                    "not allowed in image volume sources",
                ));
            }
            if !sub_path_expr.is_empty() {
                errs.push(FieldError::invalid(
                    &idx.child("subPathExpr"),
                    sub_path_expr,
                    "not allowed in image volume sources",
                ));
            }
        }
        // Kubernetes reports these two without the mount's index.
        if !sub_path.is_empty() {
            errs.extend(local_descending_path_errors(
                sub_path,
                &path.child("subPath"),
            ));
        }
        if !sub_path_expr.is_empty() {
            if !sub_path.is_empty() {
                errs.push(FieldError::invalid(
                    &idx.child("subPathExpr"),
                    sub_path_expr,
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
            errs.extend(local_descending_path_errors(
                sub_path_expr,
                &path.child("subPathExpr"),
            ));
        }
        if let Some(propagation) = &m.mount_propagation {
            let p = path.child("mountPropagation");
            if !matches!(
                propagation.as_str(),
                "Bidirectional" | "HostToContainer" | "None"
            ) {
                errs.push(FieldError::not_supported(
                    &p,
                    propagation.as_str(),
                    &["Bidirectional", "HostToContainer", "None"],
                ));
            }
            let privileged = container
                .security_context
                .as_ref()
                .and_then(|s| s.privileged)
                .unwrap_or(false);
            if propagation == "Bidirectional" && !privileged {
                errs.push(FieldError::forbidden(
                    &p,
                    "Bidirectional mount propagation is available only to privileged containers",
                ));
            }
        }
        if let Some(rro) = &m.recursive_read_only {
            let p = path.child("recursiveReadOnly");
            match rro.as_str() {
                "Disabled" => {}
                "Enabled" | "IfPossible" => {
                    if m.read_only != Some(true) {
                        errs.push(FieldError::forbidden(
                            &p,
                            "may only be specified when readOnly is true",
                        ));
                    }
                    if m.mount_propagation
                        .as_deref()
                        .is_some_and(|mp| mp != "None")
                    {
                        errs.push(FieldError::forbidden(
                            &p,
                            "may only be specified when mountPropagation is None or not specified",
                        ));
                    }
                }
                other => errs.push(FieldError::not_supported(
                    &p,
                    other,
                    &["Disabled", "Enabled", "IfPossible"],
                )),
            }
        }
    }
    errs
}

fn volume_devices_errors(
    devices: &[VolumeDevice],
    mounts: &[VolumeMount],
    path: &FieldPath,
    ctx: &ContainerCtx<'_>,
) -> Errors {
    let mut errs = Vec::new();
    let mut device_paths = HashSet::new();
    let mut device_names = HashSet::new();
    for (i, d) in devices.iter().enumerate() {
        let idx = path.index(i);
        let volume = ctx.volumes.get(d.name.as_str());
        let is_claim =
            volume.is_some_and(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some());
        if d.name.is_empty() {
            errs.push(FieldError::required(&idx.child("name"), ""));
        }
        if device_names.contains(d.name.as_str()) {
            errs.push(FieldError::invalid(
                &idx.child("name"),
                d.name.as_str(),
                "must be unique",
            ));
        }
        if volume.is_some() && !is_claim {
            errs.push(FieldError::invalid(
                &idx.child("name"),
                d.name.as_str(),
                "can only use volume source type of PersistentVolumeClaim or Ephemeral for block mode",
            ));
        }
        if volume.is_none() {
            errs.push(FieldError::not_found(&idx.child("name"), d.name.as_str()));
        }
        if d.device_path.is_empty() {
            errs.push(FieldError::required(&idx.child("devicePath"), ""));
        }
        if device_paths.contains(d.device_path.as_str()) {
            errs.push(FieldError::invalid(
                &idx.child("devicePath"),
                d.device_path.as_str(),
                "must be unique",
            ));
        }
        if !d.device_path.is_empty() && d.device_path.split('/').any(|part| part == "..") {
            errs.push(FieldError::invalid(
                &idx.child("devicePath"),
                d.device_path.as_str(),
                "can not contain backsteps ('..')",
            ));
        } else {
            device_paths.insert(d.device_path.as_str());
        }
        if mounts.iter().any(|m| m.name == d.name) {
            errs.push(FieldError::invalid(
                &idx.child("name"),
                d.name.as_str(),
                "must not already exist in volumeMounts",
            ));
        }
        if mounts.iter().any(|m| m.mount_path == d.device_path) {
            errs.push(FieldError::invalid(
                &idx.child("devicePath"),
                d.device_path.as_str(),
                "must not already exist as a path in volumeMounts",
            ));
        }
        if !d.name.is_empty() {
            device_names.insert(d.name.as_str());
        }
    }
    errs
}

fn resize_policy_errors(
    policies: &[ContainerResizePolicy],
    path: &FieldPath,
    pod_restart_policy: &str,
) -> Errors {
    let mut errs = Vec::new();
    let mut seen = HashSet::new();
    for (i, p) in policies.iter().enumerate() {
        if !seen.insert(p.resource_name.as_str()) {
            errs.push(FieldError::duplicate(
                &path.index(i),
                p.resource_name.as_str(),
            ));
        }
        match p.resource_name.as_str() {
            "cpu" | "memory" => {}
            "" => errs.push(FieldError::required(path, "")),
            other => errs.push(FieldError::not_supported(path, other, &["cpu", "memory"])),
        }
        match p.restart_policy.as_str() {
            "NotRequired" | "RestartContainer" => {}
            "" => errs.push(FieldError::required(path, "")),
            other => errs.push(FieldError::not_supported(
                path,
                other,
                &["NotRequired", "RestartContainer"],
            )),
        }
        if pod_restart_policy == "Never" && p.restart_policy != "NotRequired" {
            errs.push(FieldError::invalid(
                path,
                p.restart_policy.as_str(),
                "must be 'NotRequired' when `restartPolicy` is 'Never'",
            ));
        }
    }
    errs
}

fn security_context_errors(sc: Option<&SecurityContext>, path: &FieldPath) -> Errors {
    let mut errs = Vec::new();
    let Some(sc) = sc else {
        return errs;
    };
    for (field, value) in [
        ("runAsUser", sc.run_as_user),
        ("runAsGroup", sc.run_as_group),
    ] {
        if let Some(id) = value {
            for msg in names::is_valid_id(id) {
                errs.push(FieldError::invalid(&path.child(field), id, &msg));
            }
        }
    }
    errs
}

/// Host ports must be unique per protocol and host IP.
fn unique_host_ports_errors(
    containers: &[Container],
    seen: &mut HashSet<String>,
    path: &FieldPath,
) -> Errors {
    let mut errs = Vec::new();
    for (ci, c) in containers.iter().enumerate() {
        for (pi, port) in c.ports.iter().flatten().enumerate() {
            let host_port = port.host_port.unwrap_or(0);
            if host_port == 0 {
                continue;
            }
            let key = format!(
                "{}/{}/{host_port}",
                str_of(&port.protocol),
                str_of(&port.host_ip)
            );
            if seen.contains(&key) {
                let p = path.index(ci).child("ports").index(pi).child("hostPort");
                errs.push(FieldError::duplicate(&p, key));
            } else {
                seen.insert(key);
            }
        }
    }
    errs
}

fn host_network_errors(spec: &PodSpec, path: &FieldPath, opts: Opts<'_>) -> Errors {
    let mut errs = Vec::new();
    if spec.host_network != Some(true) {
        return errs;
    }
    for (i, c) in spec.containers.iter().enumerate() {
        for (j, port) in c.ports.iter().flatten().enumerate() {
            let host_port = port.host_port.unwrap_or(0);
            if (opts.resource_is_pod || host_port != 0) && host_port != port.container_port {
                let p = path
                    .child("containers")
                    .index(i)
                    .child("ports")
                    .index(j)
                    .child("hostPort");
                errs.push(FieldError::invalid(
                    &p,
                    host_port,
                    "must match `containerPort` when `hostNetwork` is true",
                ));
            }
        }
    }
    errs
}
