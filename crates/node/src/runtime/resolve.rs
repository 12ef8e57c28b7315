//! Turning a pod's container into what the shim runs: argv, environment, working
//! directory, user and bind mounts. Pure apart from the user database, which is passed in.
//!
//! The rules are the kubelet's: env from `envFrom` then `env` in order, `$(VAR)` references
//! to variables defined earlier (`$$` escapes), `valueFrom` field, resource, ConfigMap and
//! Secret references, then `$(VAR)` expansion of `command` and `args` with the result.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, EnvVarSource, Pod, Secret};
use serde::{Deserialize, Serialize};

use crate::gofmt::go_quote;
use crate::planner::StartError;

/// The `PATH` a container gets when its env does not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// ConfigMaps and Secrets that env references and volumes can use, by namespace and name,
/// and the service account tokens of the pod's projected volumes.
#[derive(Debug, Clone, Default)]
pub struct VolumeSources {
    config_maps: BTreeMap<(String, String), ConfigMap>,
    secrets: BTreeMap<(String, String), Secret>,
    /// By volume name and the projection's `path`.
    tokens: BTreeMap<(String, String), TokenOutcome>,
}

/// What requesting a projected service account token gave; the token itself is never
/// printed.
#[derive(Clone, PartialEq, Eq)]
struct TokenOutcome(Result<String, String>);

impl std::fmt::Debug for TokenOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Ok(_) => f.write_str("Ok(<token>)"),
            Err(e) => write!(f, "Err({e:?})"),
        }
    }
}

fn object_key(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}

impl VolumeSources {
    /// Adds (or replaces) a ConfigMap; a missing namespace means `default`.
    pub fn add_config_map(&mut self, cm: ConfigMap) {
        self.config_maps.insert(object_key(&cm.metadata), cm);
    }

    /// Adds (or replaces) a Secret; a missing namespace means `default`.
    pub fn add_secret(&mut self, secret: Secret) {
        self.secrets.insert(object_key(&secret.metadata), secret);
    }

    pub fn config_map(&self, namespace: &str, name: &str) -> Option<&ConfigMap> {
        self.config_maps
            .get(&(namespace.to_owned(), name.to_owned()))
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<&Secret> {
        self.secrets.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// Records the outcome of the token request for the `serviceAccountToken`
    /// projection at `path` of volume `volume`: the token, or why there is none (the
    /// API server's message).
    pub fn add_service_account_token(
        &mut self,
        volume: &str,
        path: &str,
        outcome: Result<String, String>,
    ) {
        self.tokens
            .insert((volume.to_owned(), path.to_owned()), TokenOutcome(outcome));
    }

    /// The token for a projection, `Some(Err(why))` when the request failed, `None`
    /// when none was requested (no API server).
    pub fn service_account_token(&self, volume: &str, path: &str) -> Option<Result<&str, &str>> {
        self.tokens
            .get(&(volume.to_owned(), path.to_owned()))
            .map(|t| t.0.as_deref().map_err(String::as_str))
    }
}

/// A ConfigMap value: `data` first, then `binaryData`.
pub(crate) fn config_map_value(cm: &ConfigMap, key: &str) -> Option<Vec<u8>> {
    if let Some(v) = cm.data.as_ref().and_then(|d| d.get(key)) {
        return Some(v.as_bytes().to_vec());
    }
    cm.binary_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
}

/// A Secret value. `stringData` wins over `data`, as the API server merges it on write
/// (objects read straight from manifest files may still carry it).
pub(crate) fn secret_value(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    if let Some(v) = secret.string_data.as_ref().and_then(|d| d.get(key)) {
        return Some(v.as_bytes().to_vec());
    }
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
}

/// All keys of a Secret (`data` and `stringData`), sorted.
pub(crate) fn secret_keys(secret: &Secret) -> Vec<String> {
    let mut keys: Vec<String> = secret
        .data
        .iter()
        .flat_map(|d| d.keys().cloned())
        .chain(secret.string_data.iter().flat_map(|d| d.keys().cloned()))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// What resolving a container may consult besides the pod.
#[derive(Debug, Clone)]
pub struct ResolveContext<'a> {
    pub node_name: String,
    /// `status.podIP`; pods only have loopback for now.
    pub pod_ip: String,
    /// `status.hostIP`.
    pub host_ip: String,
    pub sources: &'a VolumeSources,
    /// Node allocatable, used by `resourceFieldRef` for limits the container does not set.
    pub node_cpu_millis: u64,
    pub node_memory_bytes: u64,
}

impl<'a> ResolveContext<'a> {
    /// A context for this machine (CPU count and memory read from the host).
    pub fn new(node_name: &str, sources: &'a VolumeSources) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        Self {
            node_name: node_name.to_owned(),
            pod_ip: "127.0.0.1".into(),
            host_ip: "127.0.0.1".into(),
            sources,
            node_cpu_millis: cpus * 1000,
            node_memory_bytes: host_memory_bytes().unwrap_or(0),
        }
    }
}

fn host_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User and groups a container runs as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSpec {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// A bind mount of a volume into a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    pub volume: String,
    /// Host path that is mounted (the volume directory, a hostPath, or a subPath in them).
    pub source: PathBuf,
    /// `mountPath`.
    pub target: PathBuf,
    pub read_only: bool,
    /// A `subPath` the shim creates as a directory when missing (as the kubelet does).
    pub create_source: bool,
}

/// Everything the shim needs to run one container instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub pod_uid: String,
    pub pod_name: String,
    pub pod_namespace: String,
    pub name: String,
    pub image: String,
    /// `argv[0]` is looked up in the container's `PATH` unless it contains a `/`.
    pub argv: Vec<String>,
    /// Final environment in order (runtime defaults first, then the container's).
    pub env: Vec<(String, String)>,
    pub working_dir: PathBuf,
    pub user: UserSpec,
    /// Sorted so that parents are mounted before what is mounted inside them.
    pub mounts: Vec<MountSpec>,
}

impl ContainerSpec {
    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An entry of the user database ("the image's /etc/passwd"; here the host's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserEntry {
    pub gid: u32,
    pub home: String,
    /// Groups listing the user in the group database (including `gid`).
    pub groups: Vec<u32>,
}

pub(crate) trait UserDb {
    fn lookup(&self, uid: u32) -> Option<UserEntry>;
}

/// The host's user database.
pub(crate) struct HostUsers;

impl UserDb for HostUsers {
    fn lookup(&self, uid: u32) -> Option<UserEntry> {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok()??;
        let name = std::ffi::CString::new(user.name.as_bytes()).ok()?;
        let groups = nix::unistd::getgrouplist(&name, user.gid)
            .map(|gs| gs.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default();
        Some(UserEntry {
            gid: user.gid.as_raw(),
            home: user.dir.to_string_lossy().into_owned(),
            groups,
        })
    }
}

/// Where a pod's volume directories live and how built-in images are run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Paths<'a> {
    pub volumes_dir: &'a Path,
    /// Where the pod's `hosts` and `resolv.conf` are (when it has its own network).
    pub pod_dir: &'a Path,
    pub helper_exe: &'a Path,
    pub hostname: &'a str,
}

fn config_error(message: impl Into<String>) -> StartError {
    StartError {
        reason: "CreateContainerConfigError".into(),
        message: message.into(),
    }
}

/// `$(VAR)` expansion as the kubelet does it: `$$` is a literal `$`, a reference to an
/// unknown variable and an unterminated `$(` stay as written.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after.chars().next() {
            None => {
                out.push('$');
                rest = after;
            }
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after.find(')') {
                Some(j) => {
                    let name = &after[1..j];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[j + 1..];
                }
                None => {
                    out.push('$');
                    out.push_str(after);
                    rest = "";
                }
            },
            Some(c) => {
                out.push('$');
                out.push(c);
                rest = &after[c.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// An ordered environment where a later definition replaces an earlier one in place.
#[derive(Debug, Default)]
struct EnvList(Vec<(String, String)>);

impl EnvList {
    fn set(&mut self, name: &str, value: String) {
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name.to_owned(), value)),
        }
    }

    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// Env names from `envFrom` that are not usable are skipped (printable ASCII without `=`,
/// the relaxed rule that is on by default since 1.32).
fn usable_env_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'=')
}

/// `key="value"` lines sorted by key, no trailing newline (the downward API file format).
pub(crate) fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `metadata.labels['key']` -> (`metadata.labels`, `key`).
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let open = inner.find("['")?;
    Some((&inner[..open], &inner[open + 2..]))
}

/// The value of a pod field path (env `fieldRef` and downward API volume files).
pub(crate) fn pod_field(pod: &Pod, path: &str, ctx: &ResolveContext<'_>) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    if let Some((base, key)) = split_subscript(path) {
        let map = match base {
            "metadata.labels" => meta.labels.as_ref(),
            "metadata.annotations" => meta.annotations.as_ref(),
            _ => return Err(format!("unsupported fieldPath: {path}")),
        };
        return Ok(map.and_then(|m| m.get(key)).cloned().unwrap_or_default());
    }
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| ctx.node_name.clone()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => ctx.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => ctx.host_ip.clone(),
        _ => return Err(format!("unsupported fieldPath: {path}")),
    })
}

/// Parses a Kubernetes quantity (`500m`, `128Mi`, `1e3`, `2`) into base units.
pub(crate) fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}

/// The value of a `resourceFieldRef` for `container`, as the kubelet computes it: CPU is
/// rounded up in units of the divisor (millicores), the rest in units of the divisor;
/// unset limits are the node's allocatable.
pub(crate) fn resource_field(
    container: &Container,
    resource: &str,
    divisor: Option<&str>,
    ctx: &ResolveContext<'_>,
) -> Result<String, String> {
    let res = container.resources.as_ref();
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported container resource : {resource}"))?;
    let table = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => return Err(format!("unsupported container resource : {resource}")),
    };
    let set = table
        .and_then(|t| t.get(name))
        .and_then(|q| parse_quantity(&q.0));
    let value = match (set, kind, name) {
        (Some(v), _, _) => v,
        (None, "limits", "cpu") => ctx.node_cpu_millis as f64 / 1000.0,
        (None, "limits", "memory") => ctx.node_memory_bytes as f64,
        (None, _, "cpu" | "memory" | "ephemeral-storage") => 0.0,
        _ => return Err(format!("unsupported container resource : {resource}")),
    };
    let divisor = match divisor.filter(|d| !d.is_empty()) {
        Some(d) => parse_quantity(d)
            .filter(|d| *d > 0.0)
            .ok_or_else(|| format!("invalid divisor {d:?}"))?,
        None => 1.0,
    };
    let n = if name == "cpu" {
        ((value * 1000.0).ceil() / (divisor * 1000.0).ceil()).ceil()
    } else {
        (value.ceil() / divisor.ceil()).ceil()
    };
    Ok(format!("{}", n as i64))
}

/// Computes the container's own environment (without runtime defaults).
fn container_env(
    pod: &Pod,
    c: &Container,
    ctx: &ResolveContext<'_>,
) -> Result<EnvList, StartError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env = EnvList::default();
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        if let Some(r) = &from.config_map_ref {
            match ctx.sources.config_map(namespace, &r.name) {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        let name = format!("{prefix}{k}");
                        if usable_env_name(&name) {
                            env.set(&name, v.clone());
                        }
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(config_error(format!("configmap {:?} not found", r.name))),
            }
        }
        if let Some(r) = &from.secret_ref {
            match ctx.sources.secret(namespace, &r.name) {
                Some(secret) => {
                    for k in secret_keys(secret) {
                        let name = format!("{prefix}{k}");
                        if usable_env_name(&name) {
                            let v = secret_value(secret, &k).unwrap_or_default();
                            env.set(&name, String::from_utf8_lossy(&v).into_owned());
                        }
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(config_error(format!("secret {:?} not found", r.name))),
            }
        }
    }
    for var in c.env.iter().flatten() {
        if let Some(value) = env_value(pod, c, var, &env, ctx, namespace)? {
            env.set(&var.name, value);
        }
    }
    Ok(env)
}

/// One `env` entry; `None` when an optional reference is missing (the variable is unset).
fn env_value(
    pod: &Pod,
    c: &Container,
    var: &EnvVar,
    env: &EnvList,
    ctx: &ResolveContext<'_>,
    namespace: &str,
) -> Result<Option<String>, StartError> {
    let value = var.value.as_deref().unwrap_or("");
    if !value.is_empty() {
        return Ok(Some(expand(value, |name| env.get(name))));
    }
    let Some(from) = &var.value_from else {
        return Ok(Some(String::new()));
    };
    let EnvVarSource {
        config_map_key_ref,
        field_ref,
        resource_field_ref,
        secret_key_ref,
    } = from;
    if let Some(f) = field_ref {
        return pod_field(pod, &f.field_path, ctx)
            .map(Some)
            .map_err(config_error);
    }
    if let Some(r) = resource_field_ref {
        let target = match r.container_name.as_deref().filter(|n| !n.is_empty()) {
            Some(name) if name != c.name => find_container(pod, name)
                .ok_or_else(|| config_error(format!("container {name:?} not found")))?,
            _ => c,
        };
        let divisor = r.divisor.as_ref().map(|d| d.0.as_str());
        return resource_field(target, &r.resource, divisor, ctx)
            .map(Some)
            .map_err(config_error);
    }
    if let Some(r) = config_map_key_ref {
        let optional = r.optional == Some(true);
        let Some(cm) = ctx.sources.config_map(namespace, &r.name) else {
            return if optional {
                Ok(None)
            } else {
                Err(config_error(format!("configmap {:?} not found", r.name)))
            };
        };
        return match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
            Some(v) => Ok(Some(v.clone())),
            None if optional => Ok(None),
            None => Err(config_error(format!(
                "couldn't find key {} in ConfigMap {namespace}/{}",
                r.key, r.name
            ))),
        };
    }
    if let Some(r) = secret_key_ref {
        let optional = r.optional == Some(true);
        let Some(secret) = ctx.sources.secret(namespace, &r.name) else {
            return if optional {
                Ok(None)
            } else {
                Err(config_error(format!("secret {:?} not found", r.name)))
            };
        };
        return match secret_value(secret, &r.key) {
            Some(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
            None if optional => Ok(None),
            None => Err(config_error(format!(
                "couldn't find key {} in Secret {namespace}/{}",
                r.key, r.name
            ))),
        };
    }
    Ok(Some(String::new()))
}

fn find_container<'p>(pod: &'p Pod, name: &str) -> Option<&'p Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

/// `tandem/<tool>` (optionally with a tag or digest) -> `<tool>`.
pub fn builtin_tool(image: &str) -> Option<&str> {
    let rest = image.strip_prefix("tandem/")?;
    let tool = rest.split(['@', ':']).next()?;
    let ok = !tool.is_empty()
        && tool
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ok.then_some(tool)
}

/// A program that a built-in image carries, as a real image would have it on its `PATH`:
/// `tandem/proxy` stands in for Istio's proxyv2 image, whose hooks and probes run
/// `pilot-agent ...`; that is `tandem proxy ...` here. `None` when `argv` names no such
/// program.
pub fn image_program(image: &str, helper_exe: &Path, argv: &[String]) -> Option<Vec<String>> {
    let tool = builtin_tool(image)?;
    let program = Path::new(argv.first()?).file_name()?.to_str()?;
    let subcommand = match (tool, program) {
        ("proxy", "pilot-agent") => "proxy",
        _ => return None,
    };
    Some(
        [
            helper_exe.to_string_lossy().into_owned(),
            subcommand.to_owned(),
        ]
        .into_iter()
        .chain(argv[1..].iter().cloned())
        .collect(),
    )
}

fn pod_label(pod: &Pod) -> String {
    let m = &pod.metadata;
    format!(
        "{}_{}({})",
        m.name.as_deref().unwrap_or(""),
        m.namespace.as_deref().unwrap_or(""),
        m.uid.as_deref().unwrap_or("")
    )
}

fn identity(
    pod: &Pod,
    c: &Container,
    users: &dyn UserDb,
) -> Result<(UserSpec, Option<String>), StartError> {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let csc = c.security_context.as_ref();
    let run_as_user = csc
        .and_then(|s| s.run_as_user)
        .or_else(|| psc.and_then(|s| s.run_as_user));
    let run_as_group = csc
        .and_then(|s| s.run_as_group)
        .or_else(|| psc.and_then(|s| s.run_as_group));
    let non_root = csc
        .and_then(|s| s.run_as_non_root)
        .or_else(|| psc.and_then(|s| s.run_as_non_root))
        == Some(true);
    let to_id = |v: i64, what: &str| {
        u32::try_from(v)
            .ok()
            .filter(|v| *v != u32::MAX)
            .ok_or_else(|| config_error(format!("invalid {what} {v}")))
    };
    let uid = match run_as_user {
        Some(v) => to_id(v, "runAsUser")?,
        None => 0,
    };
    if non_root && uid == 0 {
        let message = if run_as_user.is_some() {
            format!(
                "container's runAsUser breaks non-root policy (pod: {:?}, container: {})",
                pod_label(pod),
                c.name
            )
        } else {
            format!(
                "container has runAsNonRoot and image will run as root (pod: {:?}, container: {})",
                pod_label(pod),
                c.name
            )
        };
        return Err(config_error(message));
    }
    let entry = users.lookup(uid);
    let gid = match run_as_group {
        Some(v) => to_id(v, "runAsGroup")?,
        None => entry.as_ref().map_or(0, |e| e.gid),
    };
    let mut groups: Vec<u32> = Vec::new();
    if let Some(e) = &entry {
        groups.extend(e.groups.iter().copied());
    }
    if let Some(psc) = psc {
        for g in psc.supplemental_groups.iter().flatten() {
            groups.push(to_id(*g, "supplemental group")?);
        }
        if let Some(g) = psc.fs_group {
            groups.push(to_id(g, "fsGroup")?);
        }
    }
    groups.sort_unstable();
    groups.dedup();
    Ok((UserSpec { uid, gid, groups }, entry.map(|e| e.home)))
}

/// A relative path without `..` (subPath, item paths).
pub(crate) fn safe_relative(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fn mounts(
    pod: &Pod,
    c: &Container,
    env: &EnvList,
    volumes_dir: &Path,
) -> Result<Vec<MountSpec>, StartError> {
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    let mut out = Vec::new();
    for vm in c.volume_mounts.iter().flatten() {
        let Some(volume) = volumes.iter().find(|v| v.name == vm.name) else {
            return Err(config_error(format!(
                "cannot find volume {:?} to mount into container {:?}",
                vm.name, c.name
            )));
        };
        let (base, always_ro) = if let Some(hp) = &volume.host_path {
            (PathBuf::from(&hp.path), false)
        } else if volume.empty_dir.is_some() {
            (volumes_dir.join(&volume.name), false)
        } else if volume.config_map.is_some()
            || volume.secret.is_some()
            || volume.downward_api.is_some()
            || volume.projected.is_some()
        {
            (volumes_dir.join(&volume.name), true)
        } else {
            return Err(config_error(format!(
                "volume {:?} has an unsupported type (tandem supports emptyDir, hostPath, \
                 configMap, secret, downwardAPI and projected)",
                volume.name
            )));
        };
        let sub_path = match (&vm.sub_path, &vm.sub_path_expr) {
            (Some(p), _) if !p.is_empty() => Some(p.clone()),
            (_, Some(e)) if !e.is_empty() => Some(expand(e, |n| env.get(n))),
            _ => None,
        };
        let (source, create_source) = match sub_path {
            Some(sp) if safe_relative(&sp) => (base.join(sp), true),
            Some(sp) => {
                return Err(config_error(format!(
                    "invalid subPath {sp:?} for volume {:?}: must be a relative path without '..'",
                    vm.name
                )));
            }
            None => (base, false),
        };
        let target = PathBuf::from(&vm.mount_path);
        if !target.is_absolute() {
            return Err(config_error(format!(
                "mountPath {:?} of volume {:?} must be absolute",
                vm.mount_path, vm.name
            )));
        }
        out.push(MountSpec {
            volume: vm.name.clone(),
            source,
            target,
            read_only: always_ro || vm.read_only == Some(true),
            create_source,
        });
    }
    out.sort_by_key(|m| m.target.components().count());
    Ok(out)
}

/// Resolves container `c` of `pod` into a [`ContainerSpec`].
pub(crate) fn resolve_container(
    pod: &Pod,
    c: &Container,
    ctx: &ResolveContext<'_>,
    paths: Paths<'_>,
    users: &dyn UserDb,
) -> Result<ContainerSpec, StartError> {
    let env = container_env(pod, c, ctx)?;
    let lookup = |name: &str| env.get(name);
    let args = c.args.iter().flatten().map(|a| expand(a, lookup));
    let image = c.image.clone().unwrap_or_default();
    let argv: Vec<String> = match c.command.as_deref() {
        Some(cmd) if !cmd.is_empty() => {
            let argv: Vec<String> = cmd.iter().map(|a| expand(a, lookup)).chain(args).collect();
            image_program(&image, paths.helper_exe, &argv).unwrap_or(argv)
        }
        _ => match builtin_tool(&image) {
            Some(tool) => [
                paths.helper_exe.to_string_lossy().into_owned(),
                tool.to_owned(),
            ]
            .into_iter()
            .chain(args)
            .collect(),
            None => {
                return Err(config_error(format!(
                    "container {:?} has no command and image {image:?} is not built in: tandem \
                     runs programs from the host filesystem, so set command (or use a built-in \
                     image tandem/<tool>)",
                    c.name
                )));
            }
        },
    };
    let (user, home) = identity(pod, c, users)?;
    let mut mounts = mounts(pod, c, &env, paths.volumes_dir)?;
    // The pod's own /etc/hosts and /etc/resolv.conf, unless the container mounts its own.
    for (file, target) in [
        (super::ETC_HOSTS, "/etc/hosts"),
        (super::RESOLV_CONF, "/etc/resolv.conf"),
    ] {
        let source = paths.pod_dir.join(file);
        if source.is_file() && !mounts.iter().any(|m| m.target == Path::new(target)) {
            mounts.push(MountSpec {
                volume: format!("etc-{file}"),
                source,
                target: PathBuf::from(target),
                read_only: false,
                create_source: false,
            });
        }
    }
    let working_dir = match c.working_dir.as_deref() {
        Some(dir) if !dir.is_empty() => Path::new("/").join(dir),
        _ => PathBuf::from("/"),
    };

    // Runtime defaults first; the container's own variables override them.
    let mut full = EnvList::default();
    full.set("PATH", DEFAULT_PATH.into());
    full.set("HOSTNAME", paths.hostname.into());
    for (k, v) in env.0 {
        full.set(&k, v);
    }
    if full.get("HOME").is_none() {
        full.set(
            "HOME",
            home.filter(|h| !h.is_empty()).unwrap_or_else(|| "/".into()),
        );
    }

    let meta = &pod.metadata;
    Ok(ContainerSpec {
        pod_uid: meta.uid.clone().unwrap_or_default(),
        pod_name: meta.name.clone().unwrap_or_default(),
        pod_namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
        name: c.name.clone(),
        image,
        argv,
        env: full.0,
        working_dir,
        user,
        mounts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeUsers;

    impl UserDb for FakeUsers {
        fn lookup(&self, uid: u32) -> Option<UserEntry> {
            (uid == 1000).then(|| UserEntry {
                gid: 1000,
                home: "/home/dev".into(),
                groups: vec![1000, 27],
            })
        }
    }

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("pod json")
    }

    fn base_pod(container: serde_json::Value) -> Pod {
        pod(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1",
                         "labels": {"app": "web", "tier": "front"},
                         "annotations": {"note": "say \"hi\"\n"}},
            "spec": {"nodeName": "node-a", "serviceAccountName": "sa",
                     "containers": [container],
                     "volumes": [
                        {"name": "data", "emptyDir": {}},
                        {"name": "cfg", "configMap": {"name": "settings"}},
                        {"name": "host", "hostPath": {"path": "/srv/x"}}
                     ]}
        }))
    }

    fn sources() -> VolumeSources {
        let mut s = VolumeSources::default();
        s.add_config_map(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "settings", "namespace": "shop"},
                "data": {"mode": "fast", "LEVEL": "3", "bad=name": "x"}
            }))
            .expect("cm"),
        );
        s.add_secret(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "creds", "namespace": "shop"},
                "data": {"password": "czNjcjN0"},
                "stringData": {"user": "admin"}
            }))
            .expect("secret"),
        );
        s
    }

    fn run(pod: &Pod, sources: &VolumeSources) -> Result<ContainerSpec, StartError> {
        let ctx = ResolveContext {
            node_name: "node-a".into(),
            pod_ip: "10.1.0.7".into(),
            host_ip: "192.168.1.2".into(),
            sources,
            node_cpu_millis: 4000,
            node_memory_bytes: 8 * 1024 * 1024 * 1024,
        };
        let paths = Paths {
            volumes_dir: Path::new("/run/t/pods/u-1/volumes"),
            pod_dir: Path::new("/run/t/pods/u-1"),
            helper_exe: Path::new("/usr/bin/tandem"),
            hostname: "web",
        };
        let c = &pod.spec.as_ref().expect("spec").containers[0];
        resolve_container(pod, c, &ctx, paths, &FakeUsers)
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let lookup = |n: &str| match n {
            "A" => Some("1".to_string()),
            "B" => Some("two".to_string()),
            _ => None,
        };
        assert_eq!(expand("$(A)-$(B)", lookup), "1-two");
        assert_eq!(expand("$$(A)", lookup), "$(A)");
        assert_eq!(expand("$(MISSING)", lookup), "$(MISSING)");
        assert_eq!(expand("cost: $5 and $", lookup), "cost: $5 and $");
        assert_eq!(expand("$(A", lookup), "$(A");
        assert_eq!(expand("€$(A)€", lookup), "€1€");
        assert_eq!(expand("$$$$", lookup), "$$");
    }

    #[test]
    fn env_resolves_in_order_with_references_and_sources() {
        let p = base_pod(serde_json::json!({
            "name": "app", "image": "busybox", "command": ["sh", "-c", "echo $(GREETING) $$(GREETING)"],
            "args": ["$(POD)"],
            "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
            "env": [
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "GREETING", "value": "hello $(POD) in $(NS) at $(LATER)"},
                {"name": "LATER", "value": "late"},
                {"name": "TIER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
                {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "USER", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "user"}}},
                {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": true}}},
                {"name": "EMPTY"}
            ]
        }));
        let spec = run(&p, &sources()).expect("resolves");
        let get = |k: &str| spec.env_value(k).map(str::to_owned);
        assert_eq!(
            get("GREETING").as_deref(),
            Some("hello web in shop at $(LATER)")
        );
        assert_eq!(get("TIER").as_deref(), Some("front"));
        assert_eq!(get("IP").as_deref(), Some("10.1.0.7"));
        assert_eq!(get("NODE").as_deref(), Some("node-a"));
        assert_eq!(get("SA").as_deref(), Some("sa"));
        assert_eq!(get("MODE").as_deref(), Some("fast"));
        assert_eq!(get("CFG_LEVEL").as_deref(), Some("3"));
        assert_eq!(get("CFG_bad=name"), None);
        assert_eq!(get("PASS").as_deref(), Some("s3cr3t"));
        assert_eq!(get("USER").as_deref(), Some("admin"));
        assert_eq!(
            get("OPT"),
            None,
            "optional missing reference leaves the var unset"
        );
        assert_eq!(get("EMPTY").as_deref(), Some(""));
        assert_eq!(get("HOSTNAME").as_deref(), Some("web"));
        assert_eq!(get("PATH").as_deref(), Some(DEFAULT_PATH));
        assert_eq!(get("HOME").as_deref(), Some("/"));
        assert_eq!(
            spec.argv,
            vec![
                "sh",
                "-c",
                "echo hello web in shop at $(LATER) $(GREETING)",
                "web"
            ]
        );
        assert_eq!(spec.working_dir, PathBuf::from("/"));
        assert_eq!(
            spec.user,
            UserSpec {
                uid: 0,
                gid: 0,
                groups: vec![]
            }
        );
    }

    #[test]
    fn missing_references_are_config_errors() {
        let cases = [
            (
                serde_json::json!({"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}),
                "configmap \"nope\" not found",
            ),
            (
                serde_json::json!({"name": "X", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "k"}}}),
                "couldn't find key k in ConfigMap shop/settings",
            ),
            (
                serde_json::json!({"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}}),
                "couldn't find key k in Secret shop/creds",
            ),
            (
                serde_json::json!({"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}),
                "secret \"gone\" not found",
            ),
            (
                serde_json::json!({"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}),
                "unsupported fieldPath: spec.bogus",
            ),
        ];
        for (var, message) in cases {
            let p = base_pod(serde_json::json!({"name": "app", "command": ["true"], "env": [var]}));
            let err = run(&p, &sources()).expect_err("fails");
            assert_eq!(err.reason, "CreateContainerConfigError");
            assert_eq!(err.message, message);
        }
    }

    #[test]
    fn builtin_images_run_the_helper_and_others_need_a_command() {
        let p = base_pod(
            serde_json::json!({"name": "proxy", "image": "tandem/proxy:1.2", "args": ["--port", "15001"]}),
        );
        let spec = run(&p, &sources()).expect("resolves");
        assert_eq!(
            spec.argv,
            vec!["/usr/bin/tandem", "proxy", "--port", "15001"]
        );

        let p = base_pod(serde_json::json!({"name": "web", "image": "nginx:1.27"}));
        let err = run(&p, &sources()).expect_err("no command");
        assert_eq!(err.reason, "CreateContainerConfigError");
        assert!(
            err.message.contains("\"nginx:1.27\" is not built in"),
            "{}",
            err.message
        );
        assert_eq!(builtin_tool("tandem/Bad"), None);
        assert_eq!(builtin_tool("tandem/httpbin@sha256:ab"), Some("httpbin"));
    }

    #[test]
    fn user_comes_from_container_then_pod_security_context() {
        let mut p = base_pod(serde_json::json!({
            "name": "app", "command": ["id"], "workingDir": "/tmp",
            "securityContext": {"runAsUser": 1000}
        }));
        if let Some(spec) = p.spec.as_mut() {
            spec.security_context = Some(
                serde_json::from_value(serde_json::json!({"runAsUser": 5, "runAsGroup": 7,
                    "supplementalGroups": [44], "fsGroup": 2000}))
                .expect("psc"),
            );
        }
        let spec = run(&p, &sources()).expect("resolves");
        assert_eq!(
            spec.user,
            UserSpec {
                uid: 1000,
                gid: 7,
                groups: vec![27, 44, 1000, 2000]
            }
        );
        assert_eq!(spec.env_value("HOME"), Some("/home/dev"));
        assert_eq!(spec.working_dir, PathBuf::from("/tmp"));

        let p = base_pod(serde_json::json!({
            "name": "app", "command": ["id"], "securityContext": {"runAsNonRoot": true}
        }));
        let err = run(&p, &sources()).expect_err("root refused");
        assert_eq!(
            err.message,
            "container has runAsNonRoot and image will run as root (pod: \"web_shop(u-1)\", container: app)"
        );
    }

    #[test]
    fn the_proxy_image_carries_pilot_agent() {
        let exe = Path::new("/usr/bin/tandem");
        let argv = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            image_program(
                "tandem/proxy:1.28",
                exe,
                &argv(&["pilot-agent", "request", "POST", "drain"])
            ),
            Some(argv(&[
                "/usr/bin/tandem",
                "proxy",
                "request",
                "POST",
                "drain"
            ]))
        );
        assert_eq!(
            image_program(
                "tandem/proxy",
                exe,
                &argv(&["/usr/local/bin/pilot-agent", "wait"])
            ),
            Some(argv(&["/usr/bin/tandem", "proxy", "wait"]))
        );
        assert_eq!(
            image_program("debian:12", exe, &argv(&["pilot-agent"])),
            None
        );
        assert_eq!(
            image_program("tandem/proxy", exe, &argv(&["sh", "-c", "x"])),
            None
        );
    }

    #[test]
    fn mounts_resolve_sources_and_read_only() {
        let p = base_pod(serde_json::json!({
            "name": "app", "command": ["true"],
            "env": [{"name": "SUB", "value": "logs"}],
            "volumeMounts": [
                {"name": "data", "mountPath": "/data/deep/er"},
                {"name": "data", "mountPath": "/data", "subPathExpr": "$(SUB)"},
                {"name": "cfg", "mountPath": "/etc/cfg"},
                {"name": "host", "mountPath": "/host", "readOnly": true}
            ]
        }));
        let spec = run(&p, &sources()).expect("resolves");
        let m: Vec<(&str, &str, bool, bool)> = spec
            .mounts
            .iter()
            .map(|m| {
                (
                    m.source.to_str().unwrap_or(""),
                    m.target.to_str().unwrap_or(""),
                    m.read_only,
                    m.create_source,
                )
            })
            .collect();
        assert_eq!(
            m,
            vec![
                ("/run/t/pods/u-1/volumes/data/logs", "/data", false, true),
                ("/srv/x", "/host", true, false),
                ("/run/t/pods/u-1/volumes/cfg", "/etc/cfg", true, false),
                (
                    "/run/t/pods/u-1/volumes/data",
                    "/data/deep/er",
                    false,
                    false
                ),
            ]
        );

        let p = base_pod(serde_json::json!({
            "name": "app", "command": ["true"],
            "volumeMounts": [{"name": "data", "mountPath": "/d", "subPath": "../escape"}]
        }));
        assert!(run(&p, &sources()).is_err());
        let p = base_pod(serde_json::json!({
            "name": "app", "command": ["true"],
            "volumeMounts": [{"name": "nope", "mountPath": "/d"}]
        }));
        let err = run(&p, &sources()).expect_err("unknown volume");
        assert_eq!(
            err.message,
            "cannot find volume \"nope\" to mount into container \"app\""
        );
    }

    #[test]
    fn resource_fields_use_limits_or_node_allocatable() {
        let p = base_pod(serde_json::json!({
            "name": "app", "command": ["true"],
            "resources": {"limits": {"memory": "128Mi", "cpu": "1500m"}, "requests": {"cpu": "250m"}},
            "env": [
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                {"name": "REQ", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}}
            ]
        }));
        let spec = run(&p, &sources()).expect("resolves");
        assert_eq!(spec.env_value("MEM"), Some("128"));
        assert_eq!(spec.env_value("CPU"), Some("2"));
        assert_eq!(spec.env_value("REQ"), Some("250"));

        let p = base_pod(serde_json::json!({
            "name": "app", "command": ["true"],
            "env": [{"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}]
        }));
        assert_eq!(
            run(&p, &sources()).expect("resolves").env_value("CPU"),
            Some("4")
        );
    }

    #[test]
    fn label_files_use_go_quoting() {
        let mut m = BTreeMap::new();
        m.insert("b".to_string(), "x\"y\\z\n\u{1}é".to_string());
        m.insert("a".to_string(), "1".to_string());
        assert_eq!(format_map(Some(&m)), "a=\"1\"\nb=\"x\\\"y\\\\z\\n\\x01é\"");
        assert_eq!(format_map(None), "");
    }
}
