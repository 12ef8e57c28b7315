//! The defaults the API server applies to a Pod (k8s.io/kubernetes
//! `pkg/apis/core/v1/defaults.go` and the generated defaulters), so that what we
//! store and run is what a real cluster would store and run.
//!
//! Go cannot tell a zero value from "unset" for non-pointer fields, so an empty
//! string or a `0` in such a field is defaulted like a missing one.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, ContainerResizePolicy, EnvVar, HTTPGetAction, Lifecycle, Pod,
    PodSecurityContext, PodSpec, Probe, ResourceRequirements, Secret, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The grace period a pod gets when it does not set one.
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;
/// `0644`, the default file mode of configMap, secret, downwardAPI and projected volumes.
pub const DEFAULT_VOLUME_MODE: i32 = 0o644;

/// Applies Kubernetes' defaults to `pod` in place.
///
/// Also normalises a negative `terminationGracePeriodSeconds` to 1, as the API
/// server has done since 1.27 (it warns instead of rejecting; see
/// [`crate::validation::pod_warnings`]).
pub fn default_pod(pod: &mut Pod) {
    if is_unset(&pod.metadata.namespace) {
        pod.metadata.namespace = Some("default".to_owned());
    }
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    default_pod_spec(spec);

    // Pod-only defaults (not applied to pod templates).
    if let Some(grace) = spec.termination_grace_period_seconds.as_mut()
        && *grace < 0
    {
        *grace = 1;
    }
    for c in spec.containers.iter_mut() {
        requests_from_limits(c.resources.as_mut());
        default_resize_policy(c);
    }
    for c in spec.init_containers.iter_mut().flatten() {
        requests_from_limits(c.resources.as_mut());
    }
    if spec.enable_service_links.is_none() {
        spec.enable_service_links = Some(true);
    }
    if spec.host_network == Some(true) {
        host_network_ports(&mut spec.containers);
        host_network_ports(spec.init_containers.iter_mut().flatten());
    }
}

/// The defaults shared by pods and pod templates (`SetDefaults_PodSpec` and the
/// defaulters of the types it contains).
pub fn default_pod_spec(spec: &mut PodSpec) {
    set_if_unset(&mut spec.dns_policy, "ClusterFirst");
    set_if_unset(&mut spec.restart_policy, "Always");
    if spec.security_context.is_none() {
        spec.security_context = Some(PodSecurityContext::default());
    }
    if spec.termination_grace_period_seconds.is_none() {
        spec.termination_grace_period_seconds = Some(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS);
    }
    set_if_unset(&mut spec.scheduler_name, "default-scheduler");

    for c in spec.containers.iter_mut() {
        default_container(c);
    }
    for c in spec.init_containers.iter_mut().flatten() {
        default_container(c);
    }
    for c in spec.ephemeral_containers.iter_mut().flatten() {
        set_if_unset(&mut c.termination_message_path, "/dev/termination-log");
        set_if_unset(&mut c.termination_message_policy, "File");
        if is_unset(&c.image_pull_policy) {
            c.image_pull_policy =
                Some(pull_policy_for(c.image.as_deref().unwrap_or("")).to_owned());
        }
        default_env(c.env.iter_mut().flatten());
        default_ports(c.ports.iter_mut().flatten());
        default_probe(c.liveness_probe.as_mut());
        default_probe(c.readiness_probe.as_mut());
        default_probe(c.startup_probe.as_mut());
        default_lifecycle(c.lifecycle.as_mut());
    }
    for v in spec.volumes.iter_mut().flatten() {
        default_volume(v);
    }
}

fn default_container(c: &mut Container) {
    if is_unset(&c.image_pull_policy) {
        c.image_pull_policy = Some(pull_policy_for(c.image.as_deref().unwrap_or("")).to_owned());
    }
    set_if_unset(&mut c.termination_message_path, "/dev/termination-log");
    set_if_unset(&mut c.termination_message_policy, "File");
    default_env(c.env.iter_mut().flatten());
    default_ports(c.ports.iter_mut().flatten());
    default_probe(c.liveness_probe.as_mut());
    default_probe(c.readiness_probe.as_mut());
    default_probe(c.startup_probe.as_mut());
    default_lifecycle(c.lifecycle.as_mut());
}

/// `Always` for `:latest` or an image without tag and digest, else `IfNotPresent`
/// (also for references that do not parse, as Kubernetes ignores the error).
pub fn pull_policy_for(image: &str) -> &'static str {
    match image_tag(image) {
        Some(tag) if tag == "latest" => "Always",
        _ => "IfNotPresent",
    }
}

/// The tag Kubernetes sees in an image reference: the explicit tag, `latest` when
/// there is neither tag nor digest, and `None` when there is only a digest or the
/// reference is invalid.
fn image_tag(image: &str) -> Option<String> {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    if let Some(digest) = digest {
        let (algo, hex) = digest.split_once(':')?;
        if algo.is_empty() || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
    }
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    if !valid_repository(repo) {
        return None;
    }
    match tag {
        Some(tag) => valid_tag(tag).then(|| tag.to_owned()),
        None if digest.is_none() => Some("latest".to_owned()),
        None => None,
    }
}

fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    first_ok
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Docker reference rules: an optional registry host, then lower-case path
/// components separated by `.`, `_`, `__` or dashes.
fn valid_repository(repo: &str) -> bool {
    if repo.is_empty() {
        return false;
    }
    let mut parts: Vec<&str> = repo.split('/').collect();
    if parts.len() > 1 {
        let first = parts[0];
        if first.contains('.') || first.contains(':') || first == "localhost" {
            let host_ok = first.split(':').next().is_some_and(|h| {
                !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
            });
            let port_ok = first
                .split_once(':')
                .is_none_or(|(_, p)| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
            if !(host_ok && port_ok) {
                return false;
            }
            parts.remove(0);
        }
    }
    !parts.is_empty() && parts.iter().all(|p| valid_path_component(p))
}

fn valid_path_component(p: &str) -> bool {
    let bytes = p.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    // Separators between alphanumeric runs: `.`, `_`, `__` or any number of `-`.
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn default_env<'a>(env: impl Iterator<Item = &'a mut EnvVar>) {
    for e in env {
        if let Some(field_ref) = e.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            set_if_unset(&mut field_ref.api_version, "v1");
        }
    }
}

fn default_ports<'a>(ports: impl Iterator<Item = &'a mut ContainerPort>) {
    for p in ports {
        set_if_unset(&mut p.protocol, "TCP");
    }
}

fn default_probe(probe: Option<&mut Probe>) {
    let Some(p) = probe else { return };
    set_if_zero(&mut p.timeout_seconds, 1);
    set_if_zero(&mut p.period_seconds, 10);
    set_if_zero(&mut p.success_threshold, 1);
    set_if_zero(&mut p.failure_threshold, 3);
    default_http_get(p.http_get.as_mut());
    if let Some(grpc) = p.grpc.as_mut()
        && grpc.service.is_none()
    {
        grpc.service = Some(String::new());
    }
}

fn default_lifecycle(lifecycle: Option<&mut Lifecycle>) {
    let Some(l) = lifecycle else { return };
    for handler in [l.post_start.as_mut(), l.pre_stop.as_mut()]
        .into_iter()
        .flatten()
    {
        default_http_get(handler.http_get.as_mut());
    }
}

fn default_http_get(get: Option<&mut HTTPGetAction>) {
    let Some(g) = get else { return };
    set_if_unset(&mut g.path, "/");
    set_if_unset(&mut g.scheme, "HTTP");
}

fn default_volume(v: &mut Volume) {
    if !has_source(v) {
        v.empty_dir = Some(Default::default());
    }
    if let Some(s) = v.secret.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(c) = v.config_map.as_mut() {
        c.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(d) = v.downward_api.as_mut() {
        d.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
        for item in d.items.iter_mut().flatten() {
            if let Some(f) = item.field_ref.as_mut() {
                set_if_unset(&mut f.api_version, "v1");
            }
        }
    }
    if let Some(p) = v.projected.as_mut() {
        p.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
        for source in p.sources.iter_mut().flatten() {
            if let Some(t) = source.service_account_token.as_mut() {
                t.expiration_seconds.get_or_insert(3600);
            }
            if let Some(d) = source.downward_api.as_mut() {
                for item in d.items.iter_mut().flatten() {
                    if let Some(f) = item.field_ref.as_mut() {
                        set_if_unset(&mut f.api_version, "v1");
                    }
                }
            }
        }
    }
    if let Some(h) = v.host_path.as_mut() {
        h.type_.get_or_insert_with(String::new);
    }
}

/// Whether any volume source is set (Kubernetes: "all pointer fields nil").
pub(crate) fn has_source(v: &Volume) -> bool {
    v.aws_elastic_block_store.is_some()
        || v.azure_disk.is_some()
        || v.azure_file.is_some()
        || v.cephfs.is_some()
        || v.cinder.is_some()
        || v.config_map.is_some()
        || v.csi.is_some()
        || v.downward_api.is_some()
        || v.empty_dir.is_some()
        || v.ephemeral.is_some()
        || v.fc.is_some()
        || v.flex_volume.is_some()
        || v.flocker.is_some()
        || v.gce_persistent_disk.is_some()
        || v.git_repo.is_some()
        || v.glusterfs.is_some()
        || v.host_path.is_some()
        || v.image.is_some()
        || v.iscsi.is_some()
        || v.nfs.is_some()
        || v.persistent_volume_claim.is_some()
        || v.photon_persistent_disk.is_some()
        || v.portworx_volume.is_some()
        || v.projected.is_some()
        || v.quobyte.is_some()
        || v.rbd.is_some()
        || v.scale_io.is_some()
        || v.secret.is_some()
        || v.storageos.is_some()
        || v.vsphere_volume.is_some()
}

/// A container with limits but without requests for a resource requests its limit.
fn requests_from_limits(resources: Option<&mut ResourceRequirements>) {
    let Some(r) = resources else { return };
    let Some(limits) = r.limits.as_ref() else {
        return;
    };
    let requests: &mut BTreeMap<String, Quantity> = r.requests.get_or_insert_with(BTreeMap::new);
    for (name, value) in limits {
        requests
            .entry(name.clone())
            .or_insert_with(|| value.clone());
    }
}

/// In-place resize (beta, on in 1.33): main containers that request cpu or memory
/// get a `NotRequired` resize policy for it.
fn default_resize_policy(c: &mut Container) {
    let Some(requests) = c.resources.as_ref().and_then(|r| r.requests.as_ref()) else {
        return;
    };
    let wanted: Vec<&str> = ["cpu", "memory"]
        .into_iter()
        .filter(|r| requests.contains_key(*r))
        .collect();
    for resource in wanted {
        let policies = c.resize_policy.get_or_insert_with(Vec::new);
        if !policies.iter().any(|p| p.resource_name == resource) {
            policies.push(ContainerResizePolicy {
                resource_name: resource.to_owned(),
                restart_policy: "NotRequired".to_owned(),
            });
        }
    }
}

fn host_network_ports<'a>(containers: impl IntoIterator<Item = &'a mut Container>) {
    for c in containers {
        for p in c.ports.iter_mut().flatten() {
            if p.host_port.unwrap_or(0) == 0 {
                p.host_port = Some(p.container_port);
            }
        }
    }
}

/// `type: Opaque` when a Secret has no type.
pub fn default_secret(secret: &mut Secret) {
    set_if_unset(&mut secret.type_, "Opaque");
}

fn is_unset(value: &Option<String>) -> bool {
    value.as_deref().is_none_or(str::is_empty)
}

fn set_if_unset(value: &mut Option<String>, default: &str) {
    if is_unset(value) {
        *value = Some(default.to_owned());
    }
}

fn set_if_zero(value: &mut Option<i32>, default: i32) {
    if value.unwrap_or(0) == 0 {
        *value = Some(default);
    }
}

#[cfg(test)]
mod tests;
