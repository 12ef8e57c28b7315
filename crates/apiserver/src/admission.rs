//! The admission chain every create and update goes through, in the API server's
//! order: defaulting (as Kubernetes' defaulters do for the kinds served), then the
//! registered mutating plugins (the mesh injector plugs in here), then validation.

use std::collections::BTreeMap;

use api::validation::{
    BadValue, FeatureGates, FieldError, FieldPath, ValidationError, go_quote, validate_object_meta,
    validate_pod, validate_pod_spec,
};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentStrategy, ReplicaSet, RollingUpdateDeployment,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, PodSpec, PodTemplateSpec, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::resources::ResourceInfo;
use crate::state::AppState;
use crate::status::{ApiError, ApiResult, bad_request, invalid};

/// What a request does to the object being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
}

/// A mutating admission plugin. It sees the defaulted object (JSON, with `kind` and
/// `apiVersion`) and the object's namespace (`None` for cluster-scoped resources),
/// and may change the object or reject the request with a `Status` (an [`ApiError`]
/// is a boxed `Status`; build one with the helpers in [`crate::status`] or
/// `ApiError::from(status)`).
pub trait MutatingAdmission: Send + Sync {
    fn name(&self) -> &str;

    fn admit(
        &self,
        op: Operation,
        resource: &ResourceInfo,
        object: &mut Value,
        namespace: Option<&Value>,
    ) -> Result<(), ApiError>;
}

/// Runs the chain on `object` (in place). `old` is the stored object of an update.
/// Returns the warnings for the client.
pub fn run(
    state: &AppState,
    op: Operation,
    res: &ResourceInfo,
    object: &mut Value,
    old: Option<&Value>,
    namespace: Option<&Value>,
) -> ApiResult<Vec<String>> {
    let mut warnings = Vec::new();
    apply_defaults(res, object, op, &mut warnings)?;
    if !state.admission.is_empty() {
        for plugin in state.admission.iter() {
            plugin
                .admit(op, res, object, namespace)
                .inspect_err(|_| tracing::debug!(plugin = plugin.name(), "admission rejected"))?;
        }
        // Like the API server after a mutating webhook: what a plugin added is defaulted too.
        apply_defaults(res, object, op, &mut Vec::new())?;
    }
    validate(&state.config.feature_gates, op, res, object, old)?;
    Ok(warnings)
}

/// Decodes `object` as `T`, with the API server's message for a body that does not fit.
pub fn typed<T: DeserializeOwned>(res: &ResourceInfo, object: &Value) -> ApiResult<T> {
    serde_json::from_value(object.clone()).map_err(|e| {
        bad_request(&format!(
            "{kind} in version \"{v}\" cannot be handled as a {kind}: {e}",
            kind = res.kind,
            v = res.version
        ))
    })
}

fn to_value<T: Serialize>(typed: &T) -> ApiResult<Value> {
    serde_json::to_value(typed).map_err(|e| crate::status::internal(&e.to_string()))
}

/// Kubernetes' defaults for the kinds served.
pub fn apply_defaults(
    res: &ResourceInfo,
    object: &mut Value,
    op: Operation,
    warnings: &mut Vec<String>,
) -> ApiResult<()> {
    match (res.group, res.kind) {
        ("", "Pod") => {
            let mut pod: Pod = typed(res, object)?;
            if op == Operation::Create {
                warnings.extend(api::validation::pod_warnings(&pod));
            }
            api::defaults::default_pod(&mut pod);
            if let Some(spec) = pod.spec.as_mut() {
                default_service_account(spec);
            }
            *object = to_value(&pod)?;
        }
        ("apps", "Deployment") => {
            let mut d: Deployment = typed(res, object)?;
            if let Some(spec) = d.spec.as_mut() {
                spec.replicas.get_or_insert(1);
                spec.revision_history_limit.get_or_insert(10);
                spec.progress_deadline_seconds.get_or_insert(600);
                let strategy = spec
                    .strategy
                    .get_or_insert_with(DeploymentStrategy::default);
                if strategy.type_.as_deref().is_none_or(str::is_empty) {
                    strategy.type_ = Some("RollingUpdate".to_owned());
                }
                if strategy.type_.as_deref() == Some("RollingUpdate") {
                    let ru = strategy
                        .rolling_update
                        .get_or_insert_with(RollingUpdateDeployment::default);
                    ru.max_unavailable
                        .get_or_insert_with(|| IntOrString::String("25%".to_owned()));
                    ru.max_surge
                        .get_or_insert_with(|| IntOrString::String("25%".to_owned()));
                }
                default_template(&mut spec.template);
            }
            *object = to_value(&d)?;
        }
        ("apps", "ReplicaSet") => {
            let mut rs: ReplicaSet = typed(res, object)?;
            if let Some(spec) = rs.spec.as_mut() {
                spec.replicas.get_or_insert(1);
                if let Some(t) = spec.template.as_mut() {
                    default_template(t);
                }
            }
            *object = to_value(&rs)?;
        }
        ("batch", "Job") => {
            let mut job: Job = typed(res, object)?;
            if let Some(spec) = job.spec.as_mut() {
                if spec.completions.is_none() && spec.parallelism.is_none() {
                    spec.completions = Some(1);
                }
                spec.parallelism.get_or_insert(1);
                if spec.backoff_limit.is_none() {
                    spec.backoff_limit = Some(if spec.backoff_limit_per_index.is_some() {
                        i32::MAX
                    } else {
                        6
                    });
                }
                if spec.completion_mode.as_deref().is_none_or(str::is_empty) {
                    spec.completion_mode = Some("NonIndexed".to_owned());
                }
                spec.suspend.get_or_insert(false);
                if spec.pod_replacement_policy.is_none() {
                    let policy = if spec.pod_failure_policy.is_some() {
                        "Failed"
                    } else {
                        "TerminatingOrFailed"
                    };
                    spec.pod_replacement_policy = Some(policy.to_owned());
                }
                default_template(&mut spec.template);
            }
            *object = to_value(&job)?;
        }
        ("", "Service") => {
            let mut svc: Service = typed(res, object)?;
            let spec = svc.spec.get_or_insert_with(Default::default);
            if spec.type_.as_deref().is_none_or(str::is_empty) {
                spec.type_ = Some("ClusterIP".to_owned());
            }
            if spec.session_affinity.as_deref().is_none_or(str::is_empty) {
                spec.session_affinity = Some("None".to_owned());
            }
            let external_name = spec.type_.as_deref() == Some("ExternalName");
            if !external_name {
                spec.internal_traffic_policy
                    .get_or_insert_with(|| "Cluster".to_owned());
            }
            if matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer")) {
                spec.external_traffic_policy
                    .get_or_insert_with(|| "Cluster".to_owned());
            }
            if spec.type_.as_deref() == Some("LoadBalancer") {
                spec.allocate_load_balancer_node_ports.get_or_insert(true);
            }
            for port in spec.ports.iter_mut().flatten() {
                if port.protocol.as_deref().is_none_or(str::is_empty) {
                    port.protocol = Some("TCP".to_owned());
                }
                let unset = match &port.target_port {
                    None => true,
                    Some(IntOrString::Int(0)) => true,
                    Some(IntOrString::String(s)) => s.is_empty(),
                    Some(IntOrString::Int(_)) => false,
                };
                if unset {
                    port.target_port = Some(IntOrString::Int(port.port));
                }
            }
            *object = to_value(&svc)?;
        }
        ("", "Namespace") => {
            let mut ns: Namespace = typed(res, object)?;
            // Every namespace carries its name as a label (`NamespaceDefaultLabelName`).
            if let Some(name) = ns.metadata.name.clone().filter(|n| !n.is_empty()) {
                ns.metadata
                    .labels
                    .get_or_insert_with(BTreeMap::new)
                    .insert("kubernetes.io/metadata.name".to_owned(), name);
            }
            *object = to_value(&ns)?;
        }
        ("", "Secret") => {
            let mut secret: Secret = typed(res, object)?;
            api::defaults::default_secret(&mut secret);
            // `stringData` is write-only: it lands in `data`, overriding keys there.
            if let Some(strings) = secret.string_data.take() {
                let data = secret.data.get_or_insert_with(BTreeMap::new);
                for (k, v) in strings {
                    data.insert(k, k8s_openapi::ByteString(v.into_bytes()));
                }
            }
            *object = to_value(&secret)?;
        }
        _ => {}
    }
    Ok(())
}

/// What the ServiceAccount admission plugin does: pods run as `default` unless named.
fn default_service_account(spec: &mut PodSpec) {
    let name = spec
        .service_account_name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| spec.service_account.clone().filter(|n| !n.is_empty()))
        .unwrap_or_else(|| "default".to_owned());
    spec.service_account_name = Some(name.clone());
    // The deprecated field mirrors the new one in v1 objects.
    spec.service_account = Some(name);
}

fn default_template(template: &mut PodTemplateSpec) {
    let spec = template.spec.get_or_insert_with(PodSpec::default);
    api::defaults::default_pod_spec(spec);
}

/// Validation of the object as stored (after defaulting and mutation).
pub fn validate(
    gates: &FeatureGates,
    op: Operation,
    res: &ResourceInfo,
    object: &Value,
    old: Option<&Value>,
) -> ApiResult<()> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let fail = |errors: Vec<FieldError>| -> ApiResult<()> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(invalid(
                res,
                &ValidationError::new(&res.qualified_kind(), &name, errors),
            ))
        }
    };
    let meta_path = FieldPath::new("metadata");
    match (res.group, res.kind) {
        ("", "Pod") => {
            let pod: Pod = typed(res, object)?;
            if let Err(e) = validate_pod(&pod, gates) {
                return Err(invalid(res, &e));
            }
            if let (Operation::Update, Some(old)) = (op, old) {
                let old: Pod = typed(res, old)?;
                fail(pod_update_errors(&old, &pod))?;
            }
            Ok(())
        }
        ("apps", "Deployment") => {
            let d: Deployment = typed(res, object)?;
            let mut errors = validate_object_meta(&d.metadata, true, &meta_path);
            if let Some(spec) = &d.spec {
                let path = FieldPath::new("spec");
                nonnegative(&mut errors, &path.child("replicas"), spec.replicas);
                workload_errors(
                    &mut errors,
                    gates,
                    "deployment",
                    Some(&spec.selector),
                    Some(&spec.template),
                    &["Always"],
                );
                if let Some(old) = old {
                    let old: Deployment = typed(res, old)?;
                    let old_sel = old.spec.as_ref().map(|s| &s.selector);
                    if old_sel.is_some() && old_sel != Some(&spec.selector) {
                        errors.push(FieldError::invalid(
                            &path.child("selector"),
                            BadValue::Raw(selector_string(&spec.selector)),
                            "field is immutable",
                        ));
                    }
                }
            } else {
                errors.push(FieldError::required(&FieldPath::new("spec"), ""));
            }
            fail(errors)
        }
        ("apps", "ReplicaSet") => {
            let rs: ReplicaSet = typed(res, object)?;
            let mut errors = validate_object_meta(&rs.metadata, true, &meta_path);
            if let Some(spec) = &rs.spec {
                nonnegative(
                    &mut errors,
                    &FieldPath::new("spec").child("replicas"),
                    spec.replicas,
                );
                workload_errors(
                    &mut errors,
                    gates,
                    "replicaset",
                    Some(&spec.selector),
                    spec.template.as_ref(),
                    &["Always"],
                );
            }
            fail(errors)
        }
        ("batch", "Job") => {
            let job: Job = typed(res, object)?;
            let mut errors = validate_object_meta(&job.metadata, true, &meta_path);
            if let Some(spec) = &job.spec {
                let path = FieldPath::new("spec");
                nonnegative(&mut errors, &path.child("parallelism"), spec.parallelism);
                nonnegative(&mut errors, &path.child("completions"), spec.completions);
                nonnegative(&mut errors, &path.child("backoffLimit"), spec.backoff_limit);
                workload_errors(
                    &mut errors,
                    gates,
                    "job",
                    spec.selector.as_ref(),
                    Some(&spec.template),
                    &["OnFailure", "Never"],
                );
            } else {
                errors.push(FieldError::required(&FieldPath::new("spec"), ""));
            }
            fail(errors)
        }
        ("", "Service") => {
            let svc: Service = typed(res, object)?;
            let mut errors = validate_object_meta(&svc.metadata, true, &meta_path);
            errors.extend(service_errors(&svc));
            fail(errors)
        }
        ("", "Namespace") => {
            let ns: Namespace = typed(res, object)?;
            let mut errors = validate_object_meta(&ns.metadata, false, &meta_path);
            if let Some(n) = ns.metadata.name.as_deref().filter(|n| !n.is_empty()) {
                for msg in api::validation::names::name_is_dns_label(n, false) {
                    let e = FieldError::invalid(&meta_path.child("name"), n, &msg);
                    if !errors.contains(&e) {
                        errors.push(e);
                    }
                }
                // A DNS label is also a subdomain; drop the subdomain duplicates.
                errors.retain(|e| e.path != "metadata.name" || !e.detail.contains("subdomain"));
            }
            fail(errors)
        }
        _ => {
            let meta: ObjectMeta = object
                .get("metadata")
                .cloned()
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| bad_request(&format!("metadata: {e}")))?
                .unwrap_or_default();
            fail(validate_object_meta(&meta, res.namespaced, &meta_path))
        }
    }
}

fn nonnegative(errors: &mut Vec<FieldError>, path: &FieldPath, value: Option<i32>) {
    if let Some(v) = value.filter(|v| *v < 0) {
        errors.push(FieldError::invalid(
            path,
            i64::from(v),
            "must be greater than or equal to 0",
        ));
    }
}

/// Selector and pod template checks shared by Deployments, ReplicaSets and Jobs.
fn workload_errors(
    errors: &mut Vec<FieldError>,
    gates: &FeatureGates,
    what: &str,
    selector: Option<&LabelSelector>,
    template: Option<&PodTemplateSpec>,
    restart_policies: &[&str],
) {
    let spec_path = FieldPath::new("spec");
    let empty = selector.is_none_or(|s| {
        s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
            && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
    });
    if empty {
        // Jobs get a generated selector; an empty one elsewhere is an error.
        if what != "job" {
            if selector.is_none() {
                errors.push(FieldError::required(&spec_path.child("selector"), ""));
            } else {
                errors.push(FieldError::invalid(
                    &spec_path.child("selector"),
                    BadValue::Raw(selector_string(
                        selector
                            .cloned()
                            .as_ref()
                            .unwrap_or(&LabelSelector::default()),
                    )),
                    &format!("empty selector is invalid for {what}"),
                ));
            }
        }
    }
    let template_path = spec_path.child("template");
    let Some(template) = template else {
        errors.push(FieldError::required(&template_path, ""));
        return;
    };
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if let Some(sel) = selector.filter(|_| !empty)
        && !selector_matches(sel, &labels)
    {
        errors.push(FieldError::invalid(
            &template_path.child("metadata").child("labels"),
            BadValue::Raw(go_map(&labels)),
            "`selector` does not match template `labels`",
        ));
    }
    if let Some(meta) = &template.metadata {
        errors.extend(
            validate_object_meta(meta, false, &template_path.child("metadata"))
                .into_iter()
                // Template names and namespaces are not required.
                .filter(|e| {
                    !e.path.ends_with("metadata.name") && !e.path.ends_with("metadata.namespace")
                }),
        );
    }
    match &template.spec {
        Some(spec) => {
            errors.extend(validate_pod_spec(spec, "spec.template.spec", gates));
            let policy = spec.restart_policy.as_deref().unwrap_or("");
            if !restart_policies.contains(&policy) {
                errors.push(FieldError::not_supported(
                    &template_path.child("spec").child("restartPolicy"),
                    policy,
                    restart_policies,
                ));
            }
        }
        None => errors.push(FieldError::required(&template_path.child("spec"), "")),
    }
}

fn service_errors(svc: &Service) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let path = FieldPath::new("spec");
    let Some(spec) = &svc.spec else {
        return vec![FieldError::required(&path, "")];
    };
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !TYPES.contains(&ty) {
        errors.push(FieldError::not_supported(&path.child("type"), ty, TYPES));
    }
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let ports = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() && ty != "ExternalName" && !headless {
        errors.push(FieldError::required(&path.child("ports"), ""));
    }
    let mut names = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = path.child("ports").index(i);
        if ports.len() > 1 && p.name.as_deref().is_none_or(str::is_empty) {
            errors.push(FieldError::required(&pp.child("name"), ""));
        }
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            if names.contains(&n) {
                errors.push(FieldError::duplicate(&pp.child("name"), n));
            }
            names.push(n);
        }
        for msg in api::validation::names::is_valid_port_num(i64::from(p.port)) {
            errors.push(FieldError::invalid(
                &pp.child("port"),
                i64::from(p.port),
                &msg,
            ));
        }
        const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        if !PROTOCOLS.contains(&proto) {
            errors.push(FieldError::not_supported(
                &pp.child("protocol"),
                proto,
                PROTOCOLS,
            ));
        }
    }
    errors
}

/// Pod specs are immutable but for a few fields (`ValidatePodUpdate`).
fn pod_update_errors(old: &Pod, new: &Pod) -> Vec<FieldError> {
    let (Some(old_spec), Some(new_spec)) = (&old.spec, &new.spec) else {
        return Vec::new();
    };
    let mut a = old_spec.clone();
    let mut b = new_spec.clone();
    for spec in [&mut a, &mut b] {
        for c in spec.containers.iter_mut() {
            c.image = None;
        }
        for c in spec.init_containers.iter_mut().flatten() {
            c.image = None;
        }
        spec.active_deadline_seconds = None;
        spec.tolerations = None;
        spec.scheduling_gates = None;
    }
    // A negative grace period may be raised to 1; anything else is a change.
    if old_spec.termination_grace_period_seconds.unwrap_or(0) < 0
        && new_spec.termination_grace_period_seconds == Some(1)
    {
        b.termination_grace_period_seconds = a.termination_grace_period_seconds;
    }
    if a == b {
        return Vec::new();
    }
    vec![FieldError::forbidden(
        &FieldPath::new("spec"),
        "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
    )]
}

/// Whether `labels` satisfy `sel` (matchLabels and matchExpressions).
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let got = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => got.is_some_and(|v| values.contains(v)),
            "NotIn" => got.is_none_or(|v| !values.contains(v)),
            "Exists" => got.is_some(),
            "DoesNotExist" => got.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// Go's `%#v` of a `map[string]string`.
fn go_map(map: &BTreeMap<String, String>) -> String {
    let items: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v)))
        .collect();
    format!("map[string]string{{{}}}", items.join(", "))
}

fn selector_string(sel: &LabelSelector) -> String {
    serde_json::to_string(sel).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::lookup;
    use serde_json::json;

    fn defaulted(plural: &str, group: &str, mut obj: Value) -> Value {
        let res = lookup(group, "v1", plural).expect("served");
        apply_defaults(res, &mut obj, Operation::Create, &mut Vec::new()).expect("defaults");
        obj
    }

    #[test]
    fn deployment_gets_kubernetes_defaults() {
        let d = defaulted(
            "deployments",
            "apps",
            json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},
                   "spec":{"selector":{"matchLabels":{"app":"web"}},
                           "template":{"metadata":{"labels":{"app":"web"}},
                                       "spec":{"containers":[{"name":"c","image":"nginx"}]}}}}),
        );
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(
            d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
            "25%"
        );
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn job_and_service_defaults() {
        let j = defaulted(
            "jobs",
            "batch",
            json!({"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"j"},
                   "spec":{"template":{"spec":{"restartPolicy":"Never","containers":[{"name":"c","image":"busybox:1"}]}}}}),
        );
        assert_eq!(j["spec"]["completions"], 1);
        assert_eq!(j["spec"]["parallelism"], 1);
        assert_eq!(j["spec"]["backoffLimit"], 6);
        assert_eq!(j["spec"]["completionMode"], "NonIndexed");
        assert_eq!(j["spec"]["suspend"], false);

        let s = defaulted(
            "services",
            "",
            json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"s"},
                   "spec":{"ports":[{"port":80},{"port":443,"targetPort":"https","protocol":"UDP"}]}}),
        );
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["sessionAffinity"], "None");
        assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["ports"][1]["targetPort"], "https");
        assert_eq!(s["spec"]["ports"][1]["protocol"], "UDP");
    }

    #[test]
    fn secret_string_data_is_stored_as_data() {
        let s = defaulted(
            "secrets",
            "",
            json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},
                   "data":{"a":"eA=="},"stringData":{"b":"hi","a":"over"}}),
        );
        assert_eq!(s["type"], "Opaque");
        assert_eq!(s["data"]["b"], "aGk=");
        assert_eq!(s["data"]["a"], "b3Zlcg==");
        assert!(s.get("stringData").is_none());
    }

    #[test]
    fn pods_run_as_the_default_service_account() {
        let p = defaulted(
            "pods",
            "",
            json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"default"},
                   "spec":{"containers":[{"name":"c","image":"nginx:1"}]}}),
        );
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 30);
        assert_eq!(
            p["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
    }

    #[test]
    fn deployment_selector_must_match_template() {
        let res = lookup("apps", "v1", "deployments").expect("served");
        let d = defaulted(
            "deployments",
            "apps",
            json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"default"},
                   "spec":{"selector":{"matchLabels":{"app":"web"}},
                           "template":{"metadata":{"labels":{"app":"other"}},
                                       "spec":{"containers":[{"name":"c","image":"nginx"}]}}}}),
        );
        let err = validate(&FeatureGates::default(), Operation::Create, res, &d, None)
            .expect_err("mismatch");
        assert_eq!(err.code(), 422);
        assert_eq!(
            err.message(),
            "Deployment.apps \"web\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`"
        );
    }

    #[test]
    fn job_rejects_restart_policy_always() {
        let res = lookup("batch", "v1", "jobs").expect("served");
        let j = defaulted(
            "jobs",
            "batch",
            json!({"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"j","namespace":"default"},
                   "spec":{"template":{"spec":{"containers":[{"name":"c","image":"busybox:1"}]}}}}),
        );
        let err =
            validate(&FeatureGates::default(), Operation::Create, res, &j, None).expect_err("bad");
        assert!(
            err.message().contains(
                "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
            ),
            "{}",
            err.message()
        );
    }
}
