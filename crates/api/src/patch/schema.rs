//! Patch strategies and merge keys of the served kinds, from the `patchStrategy` /
//! `patchMergeKey` struct tags of `k8s.io/api`. Lists not named here are replaced
//! wholesale; maps are always merged. `retainKeys` needs no entry: it only takes effect
//! through the `$retainKeys` directive, which is honoured wherever it appears.

/// The type of a JSON value inside an object, as far as patching cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    /// A type without list strategies: everything below it merges maps and replaces lists.
    Unknown,
    /// A top-level object of a kind.
    Root(Kind),
    ObjectMeta,
    /// `spec` of a Deployment, ReplicaSet or Job: only `template` matters.
    WorkloadSpec,
    PodTemplateSpec,
    PodSpec,
    /// Container and EphemeralContainer share their list fields.
    Container,
    PodStatus,
    ServiceSpec,
    NodeSpec,
    NodeStatus,
    /// A status whose only merged list is `conditions`.
    ConditionsStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Pod,
    Deployment,
    ReplicaSet,
    Job,
    Service,
    ServiceAccount,
    Namespace,
    Node,
    /// ConfigMap, Secret, Event, Endpoints and anything else: metadata only.
    Other,
}

/// How a list field is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListStrategy {
    /// The patch's list replaces the original (no `patchStrategy` tag).
    Replace,
    /// `patchStrategy:"merge"`: items are matched by the merge key, or, for lists of
    /// scalars (`None`), the lists are merged as sets.
    Merge(Option<&'static str>),
}

/// What the schema says about one field: the type of its value (of its items, for
/// lists) and, for lists, the strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    pub ty: Ty,
    pub list: ListStrategy,
}

const fn plain(ty: Ty) -> Field {
    Field {
        ty,
        list: ListStrategy::Replace,
    }
}

const fn keyed(ty: Ty, key: &'static str) -> Field {
    Field {
        ty,
        list: ListStrategy::Merge(Some(key)),
    }
}

const UNKNOWN: Field = plain(Ty::Unknown);
/// A list of scalars merged as a set (`finalizers`, `podCIDRs`).
const SET: Field = Field {
    ty: Ty::Unknown,
    list: ListStrategy::Merge(None),
};

impl Ty {
    /// The type of a whole object of `kind` (e.g. `"Pod"`).
    pub(crate) fn root(kind: &str) -> Ty {
        Ty::Root(match kind {
            "Pod" => Kind::Pod,
            "Deployment" => Kind::Deployment,
            "ReplicaSet" => Kind::ReplicaSet,
            "Job" => Kind::Job,
            "Service" => Kind::Service,
            "ServiceAccount" => Kind::ServiceAccount,
            "Namespace" => Kind::Namespace,
            "Node" => Kind::Node,
            _ => Kind::Other,
        })
    }

    /// The schema of field `name` of a value of this type.
    pub(crate) fn field(self, name: &str) -> Field {
        match self {
            Ty::Unknown => UNKNOWN,
            Ty::Root(kind) => root_field(kind, name),
            Ty::ObjectMeta => match name {
                "finalizers" => SET,
                "ownerReferences" => keyed(Ty::Unknown, "uid"),
                _ => UNKNOWN,
            },
            Ty::WorkloadSpec => match name {
                "template" => plain(Ty::PodTemplateSpec),
                _ => UNKNOWN,
            },
            Ty::PodTemplateSpec => match name {
                "metadata" => plain(Ty::ObjectMeta),
                "spec" => plain(Ty::PodSpec),
                _ => UNKNOWN,
            },
            Ty::PodSpec => match name {
                "containers" | "initContainers" | "ephemeralContainers" => {
                    keyed(Ty::Container, "name")
                }
                "imagePullSecrets" | "volumes" | "schedulingGates" | "resourceClaims" => {
                    keyed(Ty::Unknown, "name")
                }
                "hostAliases" => keyed(Ty::Unknown, "ip"),
                "topologySpreadConstraints" => keyed(Ty::Unknown, "topologyKey"),
                _ => UNKNOWN,
            },
            Ty::Container => match name {
                "env" => keyed(Ty::Unknown, "name"),
                "ports" => keyed(Ty::Unknown, "containerPort"),
                "volumeMounts" => keyed(Ty::Unknown, "mountPath"),
                "volumeDevices" => keyed(Ty::Unknown, "devicePath"),
                _ => UNKNOWN,
            },
            Ty::PodStatus => match name {
                "conditions" => keyed(Ty::Unknown, "type"),
                "podIPs" | "hostIPs" => keyed(Ty::Unknown, "ip"),
                "resourceClaimStatuses" => keyed(Ty::Unknown, "name"),
                _ => UNKNOWN,
            },
            Ty::ServiceSpec => match name {
                "ports" => keyed(Ty::Unknown, "port"),
                _ => UNKNOWN,
            },
            Ty::NodeSpec => match name {
                "podCIDRs" => SET,
                _ => UNKNOWN,
            },
            Ty::NodeStatus => match name {
                "conditions" | "addresses" => keyed(Ty::Unknown, "type"),
                _ => UNKNOWN,
            },
            Ty::ConditionsStatus => match name {
                "conditions" => keyed(Ty::Unknown, "type"),
                _ => UNKNOWN,
            },
        }
    }
}

fn root_field(kind: Kind, name: &str) -> Field {
    match (kind, name) {
        (_, "metadata") => plain(Ty::ObjectMeta),
        (Kind::Pod, "spec") => plain(Ty::PodSpec),
        (Kind::Pod, "status") => plain(Ty::PodStatus),
        (Kind::Deployment | Kind::ReplicaSet | Kind::Job, "spec") => plain(Ty::WorkloadSpec),
        (Kind::Service, "spec") => plain(Ty::ServiceSpec),
        (Kind::Node, "spec") => plain(Ty::NodeSpec),
        (Kind::Node, "status") => plain(Ty::NodeStatus),
        (
            Kind::Deployment | Kind::ReplicaSet | Kind::Job | Kind::Service | Kind::Namespace,
            "status",
        ) => plain(Ty::ConditionsStatus),
        (Kind::ServiceAccount, "secrets") => keyed(Ty::Unknown, "name"),
        _ => UNKNOWN,
    }
}
