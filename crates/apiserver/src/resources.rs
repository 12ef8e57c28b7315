//! The resource registry: every resource the server serves, with what discovery,
//! routing and storage need to know about it.

/// A subresource (`pods/status`, `pods/log`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subresource {
    pub name: &'static str,
    /// The kind of the subresource's request/response body (`Pod`, `Binding`).
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

/// One served resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub list_kind: &'static str,
    pub subresources: &'static [Subresource],
    pub verbs: &'static [&'static str],
}

impl ResourceInfo {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> &'static str {
        API_VERSIONS
            .iter()
            .find(|(g, v, _)| *g == self.group && *v == self.version)
            .map(|(_, _, gv)| *gv)
            .unwrap_or(self.version)
    }

    /// The kind qualified by group, as Kubernetes names it in `Invalid` errors
    /// (`Pod`, `Deployment.apps`).
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_owned()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// The resource qualified by group, as in `NotFound` messages (`pods`,
    /// `deployments.apps`).
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!("/registry/{}/{ns}/{name}", self.plural),
            None => format!("/registry/{}/{name}", self.plural),
        }
    }

    /// The store prefix of a list: one namespace, or every object of the resource.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!("/registry/{}/{ns}/", self.plural),
            None => format!("/registry/{}/", self.plural),
        }
    }

    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    pub fn has_status(&self) -> bool {
        self.subresource("status").is_some()
    }

    /// The URL path of the collection (`/api/v1/namespaces/default/pods`).
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        let root = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!("{root}/namespaces/{ns}/{}", self.plural),
            None => format!("{root}/{}", self.plural),
        }
    }
}

/// Every (group, version, apiVersion) served, in discovery order.
pub const API_VERSIONS: &[(&str, &str, &str)] = &[
    ("", "v1", "v1"),
    ("apps", "v1", "apps/v1"),
    ("batch", "v1", "batch/v1"),
    ("discovery.k8s.io", "v1", "discovery.k8s.io/v1"),
];

/// The groups served under `/apis` (the core group is under `/api`).
pub const GROUPS: &[&str] = &["apps", "batch", "discovery.k8s.io"];

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Kubernetes does not offer deletecollection on namespaces.
const NAMESPACE_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

const fn status(kind: &'static str) -> Subresource {
    Subresource {
        name: "status",
        kind,
        verbs: STATUS_VERBS,
    }
}

const fn scale() -> Subresource {
    Subresource {
        name: "scale",
        kind: "Scale",
        verbs: STATUS_VERBS,
    }
}

/// The group and version of a subresource's kind (`Scale` is `autoscaling/v1`).
pub fn subresource_group_version<'a>(
    res: &'a ResourceInfo,
    sub: &Subresource,
) -> (&'a str, &'a str) {
    match sub.kind {
        "Scale" => ("autoscaling", "v1"),
        "Binding" => ("", "v1"),
        "TokenRequest" => ("authentication.k8s.io", "v1"),
        _ => (res.group, res.version),
    }
}

/// Every served resource, in discovery order.
pub static RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        list_kind: "ConfigMapList",
        subresources: &[],
        verbs: VERBS,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        namespaced: true,
        short_names: &["ep"],
        categories: &[],
        list_kind: "EndpointsList",
        subresources: &[],
        verbs: VERBS,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        list_kind: "EventList",
        subresources: &[],
        verbs: VERBS,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        list_kind: "NamespaceList",
        subresources: &[
            Subresource {
                name: "finalize",
                kind: "Namespace",
                verbs: &["update"],
            },
            status("Namespace"),
        ],
        verbs: NAMESPACE_VERBS,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        list_kind: "NodeList",
        subresources: &[status("Node")],
        verbs: VERBS,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        list_kind: "PodList",
        subresources: &[
            Subresource {
                name: "binding",
                kind: "Binding",
                verbs: &["create"],
            },
            Subresource {
                name: "log",
                kind: "Pod",
                verbs: &["get"],
            },
            status("Pod"),
        ],
        verbs: VERBS,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        list_kind: "SecretList",
        subresources: &[],
        verbs: VERBS,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        list_kind: "ServiceAccountList",
        subresources: &[Subresource {
            name: "token",
            kind: "TokenRequest",
            verbs: &["create"],
        }],
        verbs: VERBS,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        namespaced: true,
        short_names: &["svc"],
        categories: &["all"],
        list_kind: "ServiceList",
        subresources: &[status("Service")],
        // Kubernetes offers no deletecollection on services either.
        verbs: &[
            "create", "delete", "get", "list", "patch", "update", "watch",
        ],
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: &["all"],
        list_kind: "DeploymentList",
        subresources: &[scale(), status("Deployment")],
        verbs: VERBS,
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        namespaced: true,
        short_names: &["rs"],
        categories: &["all"],
        list_kind: "ReplicaSetList",
        subresources: &[scale(), status("ReplicaSet")],
        verbs: VERBS,
    },
    ResourceInfo {
        group: "batch",
        version: "v1",
        kind: "Job",
        plural: "jobs",
        singular: "job",
        namespaced: true,
        short_names: &[],
        categories: &["all"],
        list_kind: "JobList",
        subresources: &[status("Job")],
        verbs: VERBS,
    },
    ResourceInfo {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        singular: "endpointslice",
        namespaced: true,
        short_names: &[],
        categories: &[],
        list_kind: "EndpointSliceList",
        subresources: &[],
        verbs: VERBS,
    },
];

/// The resource served at `group`/`version` under the plural name `plural`.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource of an object's `apiVersion` and `kind`.
pub fn lookup_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

/// The resources of one group-version, in discovery order.
pub fn in_group_version<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static ResourceInfo> + 'a {
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_prefixes_follow_the_registry_layout() {
        let pods = lookup("", "v1", "pods").expect("pods served");
        assert_eq!(
            pods.key(Some("default"), "web"),
            "/registry/pods/default/web"
        );
        assert_eq!(pods.prefix(Some("default")), "/registry/pods/default/");
        assert_eq!(pods.prefix(None), "/registry/pods/");
        let ns = lookup("", "v1", "namespaces").expect("namespaces served");
        // A namespace given for a cluster-scoped resource is ignored.
        assert_eq!(ns.key(Some("x"), "demo"), "/registry/namespaces/demo");
        let deploy = lookup_kind("apps/v1", "Deployment").expect("deployments served");
        assert_eq!(deploy.plural, "deployments");
        assert_eq!(deploy.qualified_resource(), "deployments.apps");
        assert_eq!(
            deploy.collection_path(Some("a")),
            "/apis/apps/v1/namespaces/a/deployments"
        );
        assert!(lookup("apps", "v1", "pods").is_none());
    }

    #[test]
    fn short_names_kubectl_needs_are_present() {
        for (plural, short) in [
            ("pods", "po"),
            ("namespaces", "ns"),
            ("services", "svc"),
            ("serviceaccounts", "sa"),
            ("deployments", "deploy"),
            ("events", "ev"),
        ] {
            let r = RESOURCES
                .iter()
                .find(|r| r.plural == plural)
                .expect("served");
            assert!(r.short_names.contains(&short), "{plural}");
        }
    }
}
