//! What the deployment controller decides, without I/O: given a deployment and its
//! replicasets, which replicaset to create, which to scale (and to what), which old ones
//! to delete, and the status to report, following kube-controller-manager's rollouts.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::replicaset::logic::{controller_of, controller_ref};

/// The label that ties a replicaset and its pods to one template.
pub const HASH_LABEL: &str = "pod-template-hash";
/// The revision of a replicaset (and of its deployment, the newest).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// `spec.replicas` of the deployment when the replicaset was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas + maxSurge` of the deployment when the replicaset was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Deployment annotations not copied onto its replicasets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// Kubernetes' alphabet for generated name parts (no vowels, no look-alike characters).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// One write the controller makes to a replicaset.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Create this replicaset (its `spec.replicas` is the starting size).
    Create(Box<ReplicaSet>),
    /// Patch an existing replicaset: its size (`from` -> `to`) and/or annotations.
    Update {
        name: String,
        replicas: Option<(i32, i32)>,
        annotations: BTreeMap<String, String>,
        min_ready_seconds: Option<i32>,
    },
    /// Delete an old replicaset beyond `revisionHistoryLimit`.
    Delete(String),
}

/// Everything one sync of a deployment does.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Writes to replicasets, in order.
    pub steps: Vec<Step>,
    /// The `deployment.kubernetes.io/revision` the deployment should carry, if it changes.
    pub revision: Option<String>,
    /// The status to report.
    pub status: DeploymentStatus,
    /// When to sync again to notice a missed progress deadline.
    pub recheck: Option<Duration>,
}

/// Kubernetes' FNV-1a (32-bit).
fn fnv32a(data: &[u8], mut hash: u32) -> u32 {
    for b in data {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Maps each byte to the safe alphabet (`rand.SafeEncodeString`).
fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// The `pod-template-hash` of a template: FNV-32a of the template, then of
/// `collisionCount` (little-endian) when set, its decimal form safe-encoded.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let bytes = serde_json::to_vec(&normalized(template)).unwrap_or_default();
    let mut hash = fnv32a(&bytes, 0x811c_9dc5);
    if let Some(count) = collision_count {
        hash = fnv32a(&u32::from_ne_bytes(count.to_ne_bytes()).to_le_bytes(), hash);
    }
    safe_encode(&hash.to_string())
}

/// The template as JSON without empty values, so that an absent field and an empty one
/// compare equal (Kubernetes' semantic equality; `kubectl rollout undo` sends
/// `resources: {}` where the original had none).
fn normalized(template: &PodTemplateSpec) -> serde_json::Value {
    fn prune(v: &mut serde_json::Value) -> bool {
        match v {
            serde_json::Value::Null => true,
            serde_json::Value::Object(map) => {
                map.retain(|_, v| !prune(v));
                map.is_empty()
            }
            serde_json::Value::Array(items) => {
                items.iter_mut().for_each(|i| {
                    prune(i);
                });
                items.is_empty()
            }
            _ => false,
        }
    }
    let mut v = serde_json::to_value(template).unwrap_or_default();
    prune(&mut v);
    v
}

/// Whether two templates are the same apart from the `pod-template-hash` label.
pub fn equal_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    fn strip(t: &PodTemplateSpec) -> serde_json::Value {
        let mut t = t.clone();
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(HASH_LABEL);
        }
        normalized(&t)
    }
    strip(a) == strip(b)
}

/// `maxSurge` and `maxUnavailable` as pod counts (surge rounds up, unavailable down; both
/// zero is read as one unavailable, as Kubernetes does).
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let spec = d.spec.as_ref();
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    if is_recreate(d) {
        return (0, 0);
    }
    // Unset fields take Kubernetes' defaults (25% each).
    let ru = spec
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default();
    let resolve = |v: Option<&IntOrString>, default: &str, up: bool| -> i32 {
        let v = v
            .cloned()
            .unwrap_or(IntOrString::String(default.to_owned()));
        match v {
            IntOrString::Int(n) => n.max(0),
            IntOrString::String(s) => {
                let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
                let scaled = pct * i64::from(replicas);
                let n = if up {
                    (scaled + 99) / 100
                } else {
                    scaled / 100
                };
                i32::try_from(n.max(0)).unwrap_or(i32::MAX)
            }
        }
    };
    let surge = resolve(ru.max_surge.as_ref(), "25%", true);
    let unavailable = resolve(ru.max_unavailable.as_ref(), "25%", false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

/// `maxUnavailable` as Kubernetes uses it for the Available condition.
fn max_unavailable(d: &Deployment) -> i32 {
    let replicas = desired(d);
    if is_recreate(d) || replicas == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas)
}

fn desired(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn rs_name(rs: &ReplicaSet) -> String {
    rs.metadata.name.clone().unwrap_or_default()
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn annotation_i32(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status.as_ref().map_or((0, 0, 0), |s| {
        (
            s.replicas,
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
        )
    })
}

fn available_of(rs: &ReplicaSet) -> i32 {
    status_of(rs).2
}

/// The replicasets a deployment controls.
pub fn owned_replicasets_ref<'a>(d: &Deployment, all: &'a [ReplicaSet]) -> Vec<&'a ReplicaSet> {
    let Some(uid) = d.metadata.uid.as_deref() else {
        return Vec::new();
    };
    all.iter()
        .filter(|rs| controller_of(&rs.metadata).is_some_and(|r| r.uid == uid))
        .collect()
}

/// The replicasets a deployment controls, oldest first.
pub fn owned_replicasets(d: &Deployment, all: &[ReplicaSet]) -> Vec<ReplicaSet> {
    let mut owned: Vec<ReplicaSet> = owned_replicasets_ref(d, all).into_iter().cloned().collect();
    owned.sort_by(|a, b| {
        let ts = |rs: &ReplicaSet| rs.metadata.creation_timestamp.as_ref().map(|t| t.0);
        ts(a)
            .cmp(&ts(b))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    owned
}

/// The annotations a deployment gives its replicasets (`SetNewReplicaSetAnnotations`,
/// `SetReplicasAnnotations`).
fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn replicas_annotations(d: &Deployment) -> BTreeMap<String, String> {
    let replicas = desired(d);
    BTreeMap::from([
        (DESIRED_REPLICAS.to_owned(), replicas.to_string()),
        (
            MAX_REPLICAS.to_owned(),
            (replicas + fenceposts(d).0).to_string(),
        ),
    ])
}

/// The working state of one sync: the replicasets as they will be after its steps.
struct Sync<'a> {
    d: &'a Deployment,
    new: Option<usize>,
    all: Vec<ReplicaSet>,
    steps: Vec<Step>,
}

impl Sync<'_> {
    fn olds(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.all.len()).filter(move |i| Some(*i) != self.new)
    }

    fn total_spec(&self) -> i32 {
        self.all.iter().map(spec_replicas).sum()
    }

    /// Scales replicaset `i` to `to`, with the replicas annotations; false when it is
    /// already there.
    fn scale(&mut self, i: usize, to: i32) -> bool {
        let rs = &mut self.all[i];
        let from = spec_replicas(rs);
        let wanted = replicas_annotations(self.d);
        let current = rs.metadata.annotations.clone().unwrap_or_default();
        let stale = wanted.iter().any(|(k, v)| current.get(k) != Some(v));
        if from == to && !stale {
            return false;
        }
        let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.extend(wanted.clone());
        if let Some(spec) = rs.spec.as_mut() {
            spec.replicas = Some(to);
        }
        self.steps.push(Step::Update {
            name: rs_name(rs),
            replicas: Some((from, to)),
            annotations: wanted,
            min_ready_seconds: None,
        });
        from != to
    }

    /// `NewRSNewReplicas`: the size the new replicaset may grow to now.
    fn new_rs_replicas(&self, new_spec: i32) -> i32 {
        let replicas = desired(self.d);
        if is_recreate(self.d) {
            return replicas;
        }
        let max_total = replicas + fenceposts(self.d).0;
        let current = self.total_spec();
        if current >= max_total {
            return new_spec;
        }
        new_spec + (max_total - current).min(replicas - new_spec).max(0)
    }

    /// Creates the new replicaset (`getNewReplicaSet` with create).
    fn create_new(&mut self, hash: &str, revision: i64) {
        let d = self.d;
        let spec = d.spec.clone().unwrap_or_default();
        let name = format!("{}-{hash}", d.metadata.name.as_deref().unwrap_or_default());
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(ObjectMeta::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.to_owned(), hash.to_owned());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.to_owned(), hash.to_owned());
        let mut annotations = copied_annotations(d);
        annotations.insert(REVISION.to_owned(), revision.to_string());
        annotations.extend(replicas_annotations(d));
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: d.metadata.namespace.clone(),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                annotations: Some(annotations),
                owner_references: Some(vec![controller_ref("apps/v1", "Deployment", &d.metadata)]),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let size = self.new_rs_replicas(0);
        if let Some(s) = rs.spec.as_mut() {
            s.replicas = Some(size);
        }
        self.steps.push(Step::Create(Box::new(rs.clone())));
        self.all.push(rs);
        self.new = Some(self.all.len() - 1);
    }

    /// Brings the existing new replicaset's revision, copied annotations and
    /// `minReadySeconds` up to date.
    fn refresh_new(&mut self, revision: i64) {
        let Some(i) = self.new else { return };
        let d = self.d;
        let rs = &mut self.all[i];
        let current = rs.metadata.annotations.clone().unwrap_or_default();
        let mut wanted = copied_annotations(d);
        if self::revision(rs) < revision {
            wanted.insert(REVISION.to_owned(), revision.to_string());
        }
        wanted.retain(|k, v| current.get(k) != Some(v));
        let min_ready = d.spec.as_ref().and_then(|s| s.min_ready_seconds);
        let rs_min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds);
        let min_ready_changed = min_ready.unwrap_or(0) != rs_min_ready.unwrap_or(0);
        if wanted.is_empty() && !min_ready_changed {
            return;
        }
        rs.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .extend(wanted.clone());
        if let Some(spec) = rs.spec.as_mut() {
            spec.min_ready_seconds = min_ready;
        }
        self.steps.push(Step::Update {
            name: rs_name(rs),
            replicas: None,
            annotations: wanted,
            min_ready_seconds: min_ready_changed.then_some(min_ready.unwrap_or(0)),
        });
    }

    fn is_scaling_event(&self) -> bool {
        let replicas = desired(self.d);
        self.all.iter().any(|rs| {
            spec_replicas(rs) > 0
                && annotation_i32(rs, DESIRED_REPLICAS).is_some_and(|n| n != replicas)
        })
    }

    /// `scale`: a change of `spec.replicas` spread over the active replicasets.
    fn scale_event(&mut self) {
        let replicas = desired(self.d);
        let active: Vec<usize> = (0..self.all.len())
            .filter(|i| spec_replicas(&self.all[*i]) > 0)
            .collect();
        if active.len() <= 1 {
            let target = active.first().copied().or(self.new);
            if let Some(i) = target {
                self.scale(i, replicas);
            }
            return;
        }
        if let Some(n) = self.new
            && spec_replicas(&self.all[n]) == replicas
            && available_of(&self.all[n]) >= replicas
        {
            let olds: Vec<usize> = self.olds().collect();
            for i in olds {
                self.scale(i, 0);
            }
            return;
        }
        if is_recreate(self.d) {
            return;
        }
        // Proportional scaling, as Kubernetes does mid-rollout.
        let surge = fenceposts(self.d).0;
        let allowed = if replicas > 0 { replicas + surge } else { 0 };
        let to_add = allowed - self.total_spec();
        if to_add == 0 {
            return;
        }
        let mut order = active.clone();
        order.sort_by(|a, b| {
            let (ra, rb) = (&self.all[*a], &self.all[*b]);
            let size = spec_replicas(rb).cmp(&spec_replicas(ra));
            let ts = |rs: &ReplicaSet| rs.metadata.creation_timestamp.as_ref().map(|t| t.0);
            // Larger first; ties go to the newer when adding, the older when removing.
            size.then_with(|| {
                if to_add > 0 {
                    ts(rb).cmp(&ts(ra))
                } else {
                    ts(ra).cmp(&ts(rb))
                }
            })
        });
        let status_replicas = self.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let mut added = 0;
        let mut sizes: Vec<(usize, i32)> = Vec::new();
        for &i in &order {
            let rs = &self.all[i];
            let current = spec_replicas(rs);
            let mut proportion = 0;
            if current > 0 && to_add != added {
                let fraction = if replicas == 0 {
                    -current
                } else {
                    let annotated = annotation_i32(rs, MAX_REPLICAS).unwrap_or(status_replicas);
                    let target = if annotated > 0 {
                        (f64::from(current) * f64::from(allowed) / f64::from(annotated)).round()
                    } else {
                        f64::from(current)
                    };
                    #[allow(clippy::cast_possible_truncation)]
                    let target = target as i32;
                    target - current
                };
                let left = to_add - added;
                proportion = if to_add > 0 {
                    fraction.min(left)
                } else {
                    fraction.max(left)
                };
            }
            added += proportion;
            sizes.push((i, current + proportion));
        }
        if let Some(first) = sizes.first_mut() {
            first.1 = (first.1 + to_add - added).max(0);
        }
        for (i, size) in sizes {
            self.scale(i, size);
        }
    }

    /// `reconcileNewReplicaSet` of a rolling update; true when it scaled.
    fn reconcile_new(&mut self) -> bool {
        let Some(i) = self.new else { return false };
        let replicas = desired(self.d);
        let current = spec_replicas(&self.all[i]);
        if current == replicas {
            return false;
        }
        if current > replicas {
            return self.scale(i, replicas);
        }
        let to = self.new_rs_replicas(current);
        self.scale(i, to)
    }

    /// `reconcileOldReplicaSets` of a rolling update; true when it scaled down.
    fn reconcile_olds(&mut self) -> bool {
        let olds: Vec<usize> = self.olds().collect();
        let old_count: i32 = olds.iter().map(|i| spec_replicas(&self.all[*i])).sum();
        if old_count == 0 {
            return false;
        }
        let replicas = desired(self.d);
        let min_available = replicas - fenceposts(self.d).1;
        let new_unavailable = self.new.map_or(0, |n| {
            spec_replicas(&self.all[n]) - available_of(&self.all[n])
        });
        let max_scaled_down = self.total_spec() - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        // First the old pods that are not available anyway.
        let mut cleaned = 0;
        for &i in &olds {
            if cleaned >= max_scaled_down {
                break;
            }
            let rs = &self.all[i];
            let spec = spec_replicas(rs);
            let unhealthy = spec - available_of(rs);
            if spec == 0 || unhealthy <= 0 {
                continue;
            }
            let down = unhealthy.min(max_scaled_down - cleaned);
            self.scale(i, spec - down);
            cleaned += down;
        }
        // Then available ones, keeping `minAvailable`.
        let available: i32 = self
            .all
            .iter()
            .map(|rs| available_of(rs).min(spec_replicas(rs)))
            .sum();
        let mut scaled_down = 0;
        if available > min_available {
            let total = available - min_available;
            for &i in &olds {
                if scaled_down >= total {
                    break;
                }
                let spec = spec_replicas(&self.all[i]);
                if spec == 0 {
                    continue;
                }
                let down = spec.min(total - scaled_down);
                self.scale(i, spec - down);
                scaled_down += down;
            }
        }
        cleaned + scaled_down > 0
    }

    /// Deletes old, empty replicasets beyond `revisionHistoryLimit`, oldest revision first.
    fn cleanup(&mut self) {
        let limit = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10);
        let limit = usize::try_from(limit).unwrap_or(0);
        let mut empty: Vec<&ReplicaSet> = self
            .olds()
            .map(|i| &self.all[i])
            .filter(|rs| {
                spec_replicas(rs) == 0
                    && status_of(rs).0 == 0
                    && rs.metadata.deletion_timestamp.is_none()
                    && rs.metadata.generation
                        <= rs.status.as_ref().and_then(|s| s.observed_generation)
            })
            .collect();
        let olds_count = self.olds().count();
        if olds_count <= limit {
            return;
        }
        empty.sort_by_key(|rs| revision(rs));
        let deletes: Vec<String> = empty
            .into_iter()
            .take(olds_count - limit)
            .map(rs_name)
            .collect();
        self.steps.extend(deletes.into_iter().map(Step::Delete));
    }
}

/// Plans one sync of `d` given every replicaset in its namespace; `old_pods_running` says
/// whether pods of old replicasets still exist (Recreate waits for them to be gone).
pub fn plan(
    d: &Deployment,
    replicasets: &[ReplicaSet],
    old_pods_running: bool,
    now: Timestamp,
) -> Plan {
    let spec = d.spec.clone().unwrap_or_default();
    let collision_count = d.status.as_ref().and_then(|s| s.collision_count);
    let hash = template_hash(&spec.template, collision_count);
    let all = owned_replicasets(d, replicasets);
    let new = all.iter().position(|rs| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| equal_ignoring_hash(t, &spec.template))
    });
    let max_old_revision = all
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != new)
        .map(|(_, rs)| revision(rs))
        .max()
        .unwrap_or(0);
    let new_revision = max_old_revision + 1;
    let mut sync = Sync {
        d,
        new,
        all,
        steps: Vec::new(),
    };
    let deleting = d.metadata.deletion_timestamp.is_some();
    let paused = spec.paused.unwrap_or(false);
    let mut created = false;
    if deleting {
        // Only the status is kept current while the deployment goes away.
    } else if paused || sync.is_scaling_event() {
        sync.refresh_new(new_revision);
        sync.scale_event();
    } else if is_recreate(d) {
        sync.refresh_new(new_revision);
        let olds: Vec<usize> = sync.olds().collect();
        let mut scaled = false;
        for i in olds {
            scaled |= sync.scale(i, 0);
        }
        let olds_running = sync.olds().any(|i| status_of(&sync.all[i]).0 > 0);
        if !scaled && !olds_running && !old_pods_running {
            match sync.new {
                None => {
                    sync.create_new(&hash, new_revision);
                    created = true;
                }
                Some(i) => {
                    sync.scale(i, desired(d));
                }
            }
        }
        if !scaled && sync.new.is_some() && spec_replicas_all_done(&sync) {
            sync.cleanup();
        }
    } else {
        if sync.new.is_none() {
            sync.create_new(&hash, new_revision);
            created = true;
        } else {
            sync.refresh_new(new_revision);
        }
        if !sync.reconcile_new() && !sync.reconcile_olds() && spec_replicas_all_done(&sync) {
            sync.cleanup();
        }
    }
    let revision = sync
        .new
        .map(|i| revision(&sync.all[i]).to_string())
        .filter(|r| {
            d.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                != Some(r)
        });
    let new_name = sync.new.map(|i| rs_name(&sync.all[i]));
    let (status, recheck) = status(d, &sync, new_name.as_deref(), created, now);
    Plan {
        steps: sync.steps,
        revision,
        status,
        recheck,
    }
}

/// Whether the rollout is complete as far as sizes go (the new replicaset holds all
/// replicas, available, and no old one has any).
fn spec_replicas_all_done(sync: &Sync<'_>) -> bool {
    let replicas = desired(sync.d);
    sync.new.is_some_and(|n| {
        let rs = &sync.all[n];
        spec_replicas(rs) == replicas && available_of(rs) >= replicas
    }) && sync.olds().all(|i| spec_replicas(&sync.all[i]) == 0)
}

fn set_condition(
    conditions: &mut Vec<DeploymentCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
    refresh: bool,
) {
    let current = conditions.iter().position(|c| c.type_ == type_);
    if let Some(i) = current {
        let c = &conditions[i];
        if c.status == status && c.reason.as_deref() == Some(reason) && !refresh {
            return;
        }
    }
    let transition = current
        .map(|i| &conditions[i])
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    let condition = DeploymentCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(transition),
    };
    match current {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// `calculateStatus` plus the Progressing condition of `syncRolloutStatus`.
fn status(
    d: &Deployment,
    sync: &Sync<'_>,
    new_name: Option<&str>,
    created: bool,
    now: Timestamp,
) -> (DeploymentStatus, Option<Duration>) {
    let replicas = desired(d);
    let old = d.status.clone().unwrap_or_default();
    let sum = |f: fn(&ReplicaSet) -> i32| sync.all.iter().map(f).sum::<i32>();
    let available = sum(available_of);
    let total_spec = sum(spec_replicas);
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(sum(|rs| status_of(rs).0)),
        updated_replicas: Some(sync.new.map_or(0, |i| status_of(&sync.all[i]).0)),
        ready_replicas: Some(sum(|rs| status_of(rs).1)),
        available_replicas: Some(available),
        unavailable_replicas: Some((total_spec - available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: old.terminating_replicas,
    };
    let mut conditions = status.conditions.take().unwrap_or_default();
    if available >= replicas - max_unavailable(d) {
        set_condition(
            &mut conditions,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".to_owned(),
            now,
            false,
        );
    } else {
        set_condition(
            &mut conditions,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".to_owned(),
            now,
            false,
        );
    }
    let mut recheck = None;
    let deadline = d.spec.as_ref().and_then(|s| s.progress_deadline_seconds);
    let progressing = conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .cloned();
    let timed_out_already = progressing
        .as_ref()
        .is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
    let what = new_name.map_or_else(
        || {
            format!(
                "Deployment {:?}",
                d.metadata.name.as_deref().unwrap_or_default()
            )
        },
        |n| format!("ReplicaSet {n:?}"),
    );
    if created {
        set_condition(
            &mut conditions,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set {:?}", new_name.unwrap_or_default()),
            now,
            false,
        );
    }
    if let Some(deadline) = deadline.filter(|s| *s < i32::MAX && !timed_out_already) {
        let complete = status.updated_replicas == Some(replicas)
            && status.replicas == Some(replicas)
            && status.available_replicas == Some(replicas)
            && status.observed_generation >= d.metadata.generation;
        let moved = status.updated_replicas > old.updated_replicas
            || status.ready_replicas > old.ready_replicas
            || status.available_replicas > old.available_replicas
            || status.replicas.unwrap_or(0) - status.updated_replicas.unwrap_or(0)
                < old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
        if complete {
            set_condition(
                &mut conditions,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("{what} has successfully progressed."),
                now,
                false,
            );
        } else if created {
            // Just recorded above.
        } else if moved {
            set_condition(
                &mut conditions,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("{what} is progressing."),
                now,
                true,
            );
        }
        if !complete {
            let deadline = Duration::from_secs(u64::try_from(deadline).unwrap_or(0));
            let since = conditions
                .iter()
                .find(|c| c.type_ == "Progressing")
                .and_then(|c| c.last_update_time.as_ref())
                .map_or(now, |t| t.0);
            let elapsed = Duration::try_from(now.duration_since(since)).unwrap_or_default();
            if elapsed >= deadline {
                set_condition(
                    &mut conditions,
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    format!("{what} has timed out progressing."),
                    now,
                    false,
                );
            } else {
                recheck = Some(deadline - elapsed + Duration::from_secs(1));
            }
        }
    }
    status.conditions = (!conditions.is_empty()).then_some(conditions);
    (status, recheck)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, ReplicaSetStatus};
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "main".into(),
                    image: Some(image.into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        }
    }

    fn deployment(replicas: i32, image: &str, strategy: &str) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("d-uid".into()),
                generation: Some(1),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                    ..LabelSelector::default()
                },
                template: template(image),
                strategy: Some(DeploymentStrategy {
                    type_: Some(strategy.into()),
                    rolling_update: None,
                }),
                revision_history_limit: Some(10),
                progress_deadline_seconds: Some(600),
                ..DeploymentSpec::default()
            }),
            status: None,
        }
    }

    /// The replicaset a previous sync made for `image`, with its pods' counts.
    fn replicaset(d: &Deployment, image: &str, rev: i64, spec: i32, available: i32) -> ReplicaSet {
        let mut d = d.clone();
        d.spec.as_mut().unwrap().template = template(image);
        let plan = plan(&d, &[], false, now());
        let Some(Step::Create(rs)) = plan.steps.into_iter().next() else {
            panic!("a first sync creates a replicaset");
        };
        let mut rs = *rs;
        rs.metadata.uid = Some(format!("uid-{image}"));
        rs.metadata.generation = Some(1);
        rs.metadata.creation_timestamp = Some(Time(now() + jiff::SignedDuration::from_secs(rev)));
        let ann = rs.metadata.annotations.as_mut().unwrap();
        ann.insert(REVISION.into(), rev.to_string());
        ann.insert(DESIRED_REPLICAS.into(), desired(&d).to_string());
        rs.spec.as_mut().unwrap().replicas = Some(spec);
        rs.status = Some(ReplicaSetStatus {
            replicas: spec,
            ready_replicas: Some(available),
            available_replicas: Some(available),
            observed_generation: Some(1),
            ..ReplicaSetStatus::default()
        });
        rs
    }

    fn scales(plan: &Plan) -> Vec<(String, i32, i32)> {
        plan.steps
            .iter()
            .filter_map(|s| match s {
                Step::Update {
                    name,
                    replicas: Some((from, to)),
                    ..
                } if from != to => Some((name.clone(), *from, *to)),
                _ => None,
            })
            .collect()
    }

    fn condition<'a>(plan: &'a Plan, type_: &str) -> (&'a str, &'a str) {
        let c = plan
            .status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_)
            .expect("condition set");
        (c.status.as_str(), c.reason.as_deref().unwrap_or_default())
    }

    #[test]
    fn fnv32a_and_safe_encoding_match_kubernetes() {
        // Published FNV-1a 32-bit test vectors.
        assert_eq!(fnv32a(b"", 0x811c_9dc5), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a", 0x811c_9dc5), 0xe40c_292c);
        assert_eq!(fnv32a(b"foobar", 0x811c_9dc5), 0xbf9c_f968);
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
    }

    #[test]
    fn template_hash_depends_on_template_and_collision_count() {
        let a = template_hash(&template("debian:12"), None);
        assert!((1..=10).contains(&a.len()));
        assert!(a.bytes().all(|b| SAFE_ALPHABET.contains(&b)));
        assert_eq!(a, template_hash(&template("debian:12"), None));
        assert_ne!(a, template_hash(&template("debian:13"), None));
        assert_ne!(a, template_hash(&template("debian:12"), Some(1)));
    }

    #[test]
    fn templates_differing_only_in_empty_fields_or_the_hash_label_are_equal() {
        let plain = template("v1");
        let mut with_empty = plain.clone();
        with_empty.spec.as_mut().unwrap().containers[0].resources = Some(Default::default());
        with_empty
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), "abc".into());
        assert!(equal_ignoring_hash(&plain, &with_empty));
        assert!(!equal_ignoring_hash(&plain, &template("v2")));
        // A rollback finds the replicaset it came from instead of making another.
        let d = deployment(2, "v1", "RollingUpdate");
        let mut back = d.clone();
        back.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .resources = Some(Default::default());
        let rss = [replicaset(&d, "v1", 1, 0, 0), replicaset(&d, "v2", 2, 2, 2)];
        let plan = plan(&back, &rss, false, now());
        assert!(
            !plan.steps.iter().any(|s| matches!(s, Step::Create(_))),
            "{:?}",
            plan.steps
        );
        assert_eq!(plan.revision.as_deref(), Some("3"));
    }

    #[test]
    fn first_sync_creates_the_replicaset_with_hash_labels_and_annotations() {
        let mut d = deployment(3, "debian:12", "RollingUpdate");
        d.metadata.annotations = Some(BTreeMap::from([
            ("team".into(), "a".into()),
            (
                "kubectl.kubernetes.io/last-applied-configuration".into(),
                "{}".into(),
            ),
        ]));
        let plan = plan(&d, &[], false, now());
        let [Step::Create(rs)] = plan.steps.as_slice() else {
            panic!("expected one create, got {:?}", plan.steps);
        };
        let hash = template_hash(&d.spec.as_ref().unwrap().template, None);
        assert_eq!(
            rs.metadata.name.as_deref(),
            Some(format!("web-{hash}").as_str())
        );
        let spec = rs.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(
            spec.selector.match_labels.as_ref().unwrap()[HASH_LABEL],
            hash
        );
        let labels = spec
            .template
            .as_ref()
            .unwrap()
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref();
        assert_eq!(labels.unwrap()[HASH_LABEL], hash);
        let ann = rs.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[REVISION], "1");
        assert_eq!(ann[DESIRED_REPLICAS], "3");
        assert_eq!(ann[MAX_REPLICAS], "4");
        assert_eq!(ann["team"], "a");
        assert!(!ann.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        let owner = &rs.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Deployment", "d-uid")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(plan.revision.as_deref(), Some("1"));
        assert_eq!(
            condition(&plan, "Progressing"),
            ("True", "NewReplicaSetCreated")
        );
        assert_eq!(
            condition(&plan, "Available"),
            ("False", "MinimumReplicasUnavailable")
        );
    }

    #[test]
    fn rolling_update_surges_then_scales_old_down_as_new_pods_become_available() {
        let d = deployment(3, "debian:13", "RollingUpdate");
        let old = replicaset(&d, "debian:12", 1, 3, 3);
        // 25% of 3: surge 1 (rounded up), unavailable 0 (rounded down).
        let first = plan(&d, std::slice::from_ref(&old), false, now());
        let Some(Step::Create(new)) = first.steps.first() else {
            panic!("expected a new replicaset, got {:?}", first.steps);
        };
        assert_eq!(new.spec.as_ref().unwrap().replicas, Some(1));
        assert_eq!(new.metadata.annotations.as_ref().unwrap()[REVISION], "2");
        assert!(
            scales(&first).is_empty(),
            "no old pod goes before a new one is available"
        );

        let old_name = old.metadata.name.clone().unwrap();
        let new_not_ready = replicaset(&d, "debian:13", 2, 1, 0);
        let waiting = plan(&d, &[old.clone(), new_not_ready], false, now());
        assert!(scales(&waiting).is_empty(), "{:?}", waiting.steps);

        let new_ready = replicaset(&d, "debian:13", 2, 1, 1);
        let next = plan(&d, &[old, new_ready], false, now());
        assert_eq!(scales(&next), [(old_name, 3, 2)]);
        assert_eq!(next.status.updated_replicas, Some(1));
        assert_eq!(
            condition(&next, "Available"),
            ("True", "MinimumReplicasAvailable")
        );
    }

    #[test]
    fn finished_rollout_reports_complete_and_prunes_history() {
        let mut d = deployment(2, "v4", "RollingUpdate");
        d.spec.as_mut().unwrap().revision_history_limit = Some(1);
        let rss = [
            replicaset(&d, "v1", 1, 0, 0),
            replicaset(&d, "v2", 2, 0, 0),
            replicaset(&d, "v3", 3, 0, 0),
            replicaset(&d, "v4", 4, 2, 2),
        ];
        let plan = plan(&d, &rss, false, now());
        let deleted: Vec<&Step> = plan
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Delete(_)))
            .collect();
        assert_eq!(
            deleted,
            [
                &Step::Delete(rss[0].metadata.name.clone().unwrap()),
                &Step::Delete(rss[1].metadata.name.clone().unwrap())
            ]
        );
        assert_eq!(plan.status.replicas, Some(2));
        assert_eq!(plan.status.available_replicas, Some(2));
        assert_eq!(plan.status.observed_generation, Some(1));
        assert_eq!(
            condition(&plan, "Progressing"),
            ("True", "NewReplicaSetAvailable")
        );
        assert_eq!(plan.recheck, None);
    }

    #[test]
    fn changing_replicas_scales_the_only_replicaset() {
        let d = deployment(1, "v1", "RollingUpdate");
        let rs = replicaset(&deployment(3, "v1", "RollingUpdate"), "v1", 1, 3, 3);
        let plan = plan(&d, std::slice::from_ref(&rs), false, now());
        assert_eq!(scales(&plan), [(rs.metadata.name.clone().unwrap(), 3, 1)]);
        let Some(Step::Update { annotations, .. }) = plan.steps.first() else {
            panic!("expected an update");
        };
        assert_eq!(annotations[DESIRED_REPLICAS], "1");
    }

    #[test]
    fn recreate_scales_old_to_zero_and_waits_for_old_pods() {
        let d = deployment(2, "v2", "Recreate");
        let old = replicaset(&d, "v1", 1, 2, 2);
        let first = plan(&d, std::slice::from_ref(&old), false, now());
        assert_eq!(scales(&first), [(old.metadata.name.clone().unwrap(), 2, 0)]);
        assert!(!first.steps.iter().any(|s| matches!(s, Step::Create(_))));

        let scaled = replicaset(&d, "v1", 1, 0, 0);
        let waiting = plan(&d, std::slice::from_ref(&scaled), true, now());
        assert!(waiting.steps.is_empty(), "{:?}", waiting.steps);

        let done = plan(&d, &[scaled], false, now());
        let Some(Step::Create(new)) = done.steps.first() else {
            panic!("expected the new replicaset, got {:?}", done.steps);
        };
        assert_eq!(new.spec.as_ref().unwrap().replicas, Some(2));
    }

    #[test]
    fn a_stuck_rollout_times_out_after_the_progress_deadline() {
        let mut d = deployment(1, "v2", "RollingUpdate");
        d.spec.as_mut().unwrap().progress_deadline_seconds = Some(60);
        let old = replicaset(&d, "v1", 1, 1, 1);
        let new = replicaset(&d, "v2", 2, 1, 0);
        let first = plan(&d, &[old.clone(), new.clone()], false, now());
        d.status = Some(first.status.clone());
        // Not progressing: asks to look again when the deadline passes.
        let recheck = first.recheck.expect("recheck before the deadline");
        assert!(recheck <= Duration::from_secs(61));
        let later = now() + jiff::SignedDuration::from_secs(61);
        let late = plan(&d, &[old, new], false, later);
        assert_eq!(
            condition(&late, "Progressing"),
            ("False", "ProgressDeadlineExceeded")
        );
    }
}
