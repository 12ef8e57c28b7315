//! Which workload a pod belongs to (the injector's "deploy meta"), and the canonical
//! service labels derived from it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

/// The object that owns the pod, as the proxy's metadata names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Workload {
    pub name: String,
    pub kind: String,
    pub api_version: String,
}

impl Workload {
    /// `ISTIO_META_OWNER`.
    pub(crate) fn owner(&self, namespace: &str) -> String {
        format!(
            "kubernetes://apis/{}/namespaces/{namespace}/{}s/{}",
            self.api_version,
            self.kind.to_lowercase(),
            self.name
        )
    }
}

/// A Job created by a CronJob is named `<cronjob>-<scheduled time>` (8 to 10 digits).
fn cron_job_name(job: &str) -> Option<&str> {
    let (prefix, digits) = job.rsplit_once('-')?;
    let ok = !prefix.is_empty()
        && (8..=10).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit());
    ok.then_some(prefix)
}

/// The pod's workload: its controller for pods with a generated name (a ReplicaSet made by
/// a Deployment counts as the Deployment, a Job made by a CronJob as the CronJob), else
/// the pod itself.
pub(crate) fn workload(pod: &Pod) -> Workload {
    let meta = &pod.metadata;
    let mut w = Workload {
        name: String::new(),
        kind: "Pod".to_owned(),
        api_version: "v1".to_owned(),
    };
    let generated = meta.generate_name.as_deref().is_some_and(|g| !g.is_empty());
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true));
    if generated && let Some(owner) = controller {
        w.name = owner.name.clone();
        w.kind = owner.kind.clone();
        w.api_version = owner.api_version.clone();
        let hash = meta
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash"))
            .filter(|h| !h.is_empty());
        if w.kind == "ReplicaSet"
            && let Some(hash) = hash
            && let Some(deployment) = owner.name.strip_suffix(&format!("-{hash}"))
        {
            w.name = deployment.to_owned();
            w.kind = "Deployment".to_owned();
        } else if w.kind == "Job"
            && let Some(cron) = cron_job_name(&owner.name)
        {
            w.name = cron.to_owned();
            w.kind = "CronJob".to_owned();
            w.api_version = "batch/v1".to_owned();
        }
    }
    if w.name.is_empty() {
        w.name = meta.name.clone().unwrap_or_default();
    }
    w
}

const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";

/// `service.istio.io/canonical-{name,revision}`: existing labels win, then the usual app
/// labels, then the workload name and `latest`. The name is cut to 63 characters without
/// a trailing `-`, as the template does.
pub(crate) fn canonical_labels(
    labels: &BTreeMap<String, String>,
    workload_name: &str,
) -> [(&'static str, String); 2] {
    let first = |keys: &[&str]| {
        keys.iter()
            .filter_map(|k| labels.get(*k))
            .find(|v| !v.is_empty())
            .cloned()
    };
    let name = first(&[CANONICAL_NAME, "app.kubernetes.io/name", "app"])
        .unwrap_or_else(|| workload_name.to_owned());
    let mut name: String = name.chars().take(63).collect();
    if name.ends_with('-') {
        name.pop();
    }
    let revision = first(&[CANONICAL_REVISION, "app.kubernetes.io/version", "version"])
        .unwrap_or_else(|| "latest".to_owned());
    [(CANONICAL_NAME, name), (CANONICAL_REVISION, revision)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn pod(generate: Option<&str>, owner: Option<(&str, &str, &str)>, hash: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("p-1".into());
        p.metadata.generate_name = generate.map(str::to_owned);
        p.metadata.owner_references = owner.map(|(api, kind, name)| {
            vec![OwnerReference {
                api_version: api.into(),
                kind: kind.into(),
                name: name.into(),
                uid: "u".into(),
                controller: Some(true),
                ..OwnerReference::default()
            }]
        });
        p.metadata.labels =
            hash.map(|h| BTreeMap::from([("pod-template-hash".to_owned(), h.to_owned())]));
        p
    }

    #[test]
    fn deployment_pods_belong_to_the_deployment() {
        let w = workload(&pod(
            Some("sleep-7656cf8794-"),
            Some(("apps/v1", "ReplicaSet", "sleep-7656cf8794")),
            Some("7656cf8794"),
        ));
        assert_eq!(w.name, "sleep");
        assert_eq!(
            w.owner("default"),
            "kubernetes://apis/apps/v1/namespaces/default/deployments/sleep"
        );
    }

    #[test]
    fn job_and_cronjob_pods() {
        let w = workload(&pod(Some("pi-"), Some(("batch/v1", "Job", "pi")), None));
        assert_eq!((w.name.as_str(), w.kind.as_str()), ("pi", "Job"));
        let w = workload(&pod(
            Some("hello-28914720-"),
            Some(("batch/v1", "Job", "hello-28914720")),
            None,
        ));
        assert_eq!(
            w.owner("ns"),
            "kubernetes://apis/batch/v1/namespaces/ns/cronjobs/hello"
        );
    }

    #[test]
    fn bare_pods_and_named_pods_are_their_own_workload() {
        let w = workload(&pod(None, None, None));
        assert_eq!(
            w.owner("default"),
            "kubernetes://apis/v1/namespaces/default/pods/p-1"
        );
        // Without a generated name the owner is not looked at, as in Istio.
        let w = workload(&pod(None, Some(("batch/v1", "Job", "pi")), None));
        assert_eq!(w.name, "p-1");
    }

    #[test]
    fn canonical_labels_prefer_existing_then_app_labels() {
        let labels = BTreeMap::from([
            ("app".to_owned(), "web".to_owned()),
            ("version".to_owned(), "v2".to_owned()),
        ]);
        let [(_, n), (_, r)] = canonical_labels(&labels, "deploy");
        assert_eq!((n.as_str(), r.as_str()), ("web", "v2"));
        let [(_, n), (_, r)] = canonical_labels(&BTreeMap::new(), "deploy");
        assert_eq!((n.as_str(), r.as_str()), ("deploy", "latest"));
        let long = format!("{}-b", "a".repeat(62));
        let [(_, n), _] = canonical_labels(&BTreeMap::new(), &long);
        assert_eq!(n, "a".repeat(62));
    }
}
