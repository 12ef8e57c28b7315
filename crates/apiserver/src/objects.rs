//! Objects as JSON values: reading them back from the store (with `kind`,
//! `apiVersion` and `resourceVersion` filled in), and the system metadata the
//! server owns on create and update (the registry "strategies").

use jiff::Timestamp;
use serde_json::{Map, Value, json};
use store::KeyValue;

use crate::resources::ResourceInfo;
use crate::status::{ApiResult, internal};

/// The object stored in `kv`, as clients see it: `kind` and `apiVersion` set and
/// `metadata.resourceVersion` = the key's `mod_revision` (the stored one is ignored).
pub fn from_kv(res: &ResourceInfo, kv: &KeyValue) -> ApiResult<Value> {
    let mut value: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| internal(&format!("stored object {} is not JSON: {e}", kv.key)))?;
    decorate(res, &mut value, kv.mod_revision);
    Ok(value)
}

/// Sets `kind`, `apiVersion` and `metadata.resourceVersion`.
pub fn decorate(res: &ResourceInfo, value: &mut Value, revision: u64) {
    if let Some(obj) = value.as_object_mut() {
        obj.insert("kind".to_owned(), Value::String(res.kind.to_owned()));
        obj.insert(
            "apiVersion".to_owned(),
            Value::String(res.api_version().to_owned()),
        );
    }
    meta_mut(value).insert(
        "resourceVersion".to_owned(),
        Value::String(revision.to_string()),
    );
}

/// The bytes to store: the object without its `resourceVersion` (the store's
/// revision is the truth).
pub fn to_stored(value: &Value) -> ApiResult<Vec<u8>> {
    let mut v = value.clone();
    meta_mut(&mut v).remove("resourceVersion");
    serde_json::to_vec(&v).map_err(|e| internal(&e.to_string()))
}

/// A list reply: `{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":…},"items":[…]}`.
pub fn list(res: &ResourceInfo, items: Vec<Value>, revision: u64) -> Value {
    json!({
        "kind": res.list_kind,
        "apiVersion": res.api_version(),
        "metadata": {"resourceVersion": revision.to_string()},
        "items": items,
    })
}

/// `metadata`, created if missing.
pub fn meta_mut(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    let obj = value.as_object_mut().expect("made an object above");
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("made an object above")
}

pub fn meta_str<'a>(value: &'a Value, field: &str) -> Option<&'a str> {
    value
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

pub fn name(value: &Value) -> Option<&str> {
    meta_str(value, "name")
}

pub fn namespace(value: &Value) -> Option<&str> {
    meta_str(value, "namespace")
}

pub fn uid(value: &Value) -> Option<&str> {
    meta_str(value, "uid")
}

pub fn resource_version(value: &Value) -> Option<&str> {
    meta_str(value, "resourceVersion")
}

pub fn finalizers(value: &Value) -> Vec<String> {
    value
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

pub fn is_deleting(value: &Value) -> bool {
    meta_str(value, "deletionTimestamp").is_some()
}

/// RFC 3339 in UTC with whole seconds, as Kubernetes writes `metav1.Time`.
pub fn timestamp(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A random (version 4) UUID.
pub fn new_uid() -> String {
    let mut b = [0u8; 16];
    fill_random(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The random suffix of `generateName` (Kubernetes' alphabet: no vowels, no
/// look-alike digits).
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut b = [0u8; 5];
    fill_random(&mut b);
    b.iter()
        .map(|x| ALPHABET[usize::from(*x) % ALPHABET.len()] as char)
        .collect()
}

fn fill_random(buf: &mut [u8]) {
    use ring::rand::SecureRandom;
    if ring::rand::SystemRandom::new().fill(buf).is_err() {
        // The OS RNG does not fail on Linux once booted; fall back to the clock so a
        // name is still produced (uniqueness is checked by the store).
        let nanos = Timestamp::now().as_nanosecond().to_le_bytes();
        for (i, x) in buf.iter_mut().enumerate() {
            *x = nanos[i % nanos.len()] ^ (i as u8);
        }
    }
}

/// Sets the system metadata of a new object and resets what clients may not set
/// (`PrepareForCreate`): uid, creationTimestamp, generation, a cleared status.
pub fn prepare_create(res: &ResourceInfo, value: &mut Value, now: Timestamp) {
    let uid = new_uid();
    {
        let meta = meta_mut(value);
        meta.insert("uid".to_owned(), Value::String(uid.clone()));
        meta.insert(
            "creationTimestamp".to_owned(),
            Value::String(timestamp(now)),
        );
        for field in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ] {
            meta.remove(field);
        }
        if has_generation(res) {
            meta.insert("generation".to_owned(), json!(1));
        } else {
            meta.remove("generation");
        }
    }
    if res.has_status() {
        let status = initial_status(res, value);
        match status {
            Some(s) => {
                if let Some(obj) = value.as_object_mut() {
                    obj.insert("status".to_owned(), s);
                }
            }
            None => {
                if let Some(obj) = value.as_object_mut() {
                    obj.remove("status");
                }
            }
        }
    }
    match (res.group, res.kind) {
        ("", "Namespace") => {
            let spec = value
                .as_object_mut()
                .map(|o| o.entry("spec").or_insert_with(|| json!({})));
            if let Some(spec) = spec.and_then(Value::as_object_mut) {
                spec.entry("finalizers")
                    .or_insert_with(|| json!(["kubernetes"]));
            }
        }
        ("batch", "Job") => generate_job_selector(value, &uid),
        _ => {}
    }
}

/// Kinds whose `metadata.generation` counts spec changes.
fn has_generation(res: &ResourceInfo) -> bool {
    matches!(
        (res.group, res.kind),
        ("", "Pod") | ("apps", "Deployment") | ("apps", "ReplicaSet") | ("batch", "Job")
    )
}

/// The status a new object starts with, or None for no status at all.
fn initial_status(res: &ResourceInfo, value: &Value) -> Option<Value> {
    match (res.group, res.kind) {
        ("", "Pod") => Some(json!({"phase": "Pending", "qosClass": pod_qos(value)})),
        ("", "Namespace") => Some(json!({"phase": "Active"})),
        ("", "Service") => Some(json!({"loadBalancer": {}})),
        ("", "Node") => value.get("status").cloned(),
        _ => Some(json!({})),
    }
}

/// `BestEffort`, `Burstable` or `Guaranteed`, from the containers' resources
/// (a simplified `GetPodQOS`: cpu and memory only).
pub fn pod_qos(pod: &Value) -> &'static str {
    let spec = pod.get("spec");
    let containers = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| spec.and_then(|s| s.get(*f)).and_then(Value::as_array))
        .flatten()
        .collect::<Vec<_>>();
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        for res in ["cpu", "memory"] {
            let r = requests.and_then(|m| m.get(res));
            let l = limits.and_then(|m| m.get(res));
            if r.is_some() || l.is_some() {
                any = true;
            }
            // Requests default to limits, so a limit alone counts as equal.
            match (r, l) {
                (_, None) => guaranteed = false,
                (Some(r), Some(l)) if r != l => guaranteed = false,
                _ => {}
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// A Job without `manualSelector` gets a selector on its uid and matching labels on
/// its template, as the Job registry does.
fn generate_job_selector(value: &mut Value, uid: &str) {
    let name = name(value).unwrap_or("").to_owned();
    let Some(spec) = value.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if spec.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    spec.insert(
        "selector".to_owned(),
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
    let template = spec.entry("template").or_insert_with(|| json!({}));
    let labels = meta_mut(template)
        .entry("labels")
        .or_insert_with(|| json!({}));
    if let Some(labels) = labels.as_object_mut() {
        labels.insert("batch.kubernetes.io/controller-uid".to_owned(), json!(uid));
        labels.insert("batch.kubernetes.io/job-name".to_owned(), json!(name));
        labels.insert("controller-uid".to_owned(), json!(uid));
        labels.insert("job-name".to_owned(), json!(name));
    }
}

/// Carries over what an update of the main resource may not change
/// (`PrepareForUpdate`): identity, creation and deletion metadata, and the status
/// of resources with a status subresource.
pub fn prepare_update(res: &ResourceInfo, new: &mut Value, old: &Value) {
    let old_meta = old.get("metadata").and_then(Value::as_object);
    {
        let meta = meta_mut(new);
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match old_meta.and_then(|m| m.get(field)) {
                Some(v) => {
                    meta.insert(field.to_owned(), v.clone());
                }
                None => {
                    meta.remove(field);
                }
            }
        }
        meta.remove("managedFields");
        meta.remove("selfLink");
    }
    if res.has_status()
        && let Some(obj) = new.as_object_mut()
    {
        match old.get("status") {
            Some(s) => obj.insert("status".to_owned(), s.clone()),
            None => obj.remove("status"),
        };
    }
}

/// Counts a spec change in `metadata.generation` (call after admission, when both
/// objects are defaulted).
pub fn bump_generation(res: &ResourceInfo, new: &mut Value, old: &Value) {
    if has_generation(res) && new.get("spec") != old.get("spec") {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta_mut(new).insert("generation".to_owned(), json!(generation + 1));
    }
}

/// The object after a status update: the stored object with `new`'s status.
pub fn with_status(old: &Value, new: &Value) -> Value {
    let mut out = old.clone();
    if let Some(obj) = out.as_object_mut() {
        match new.get("status") {
            Some(s) => obj.insert("status".to_owned(), s.clone()),
            None => obj.remove("status"),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::lookup;

    #[test]
    fn uids_are_version_4() {
        let a = new_uid();
        let b = new_uid();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn qos_classes() {
        let best = json!({"spec":{"containers":[{"name":"a"}]}});
        assert_eq!(pod_qos(&best), "BestEffort");
        let guaranteed = json!({"spec":{"containers":[{"name":"a","resources":{"limits":{"cpu":"1","memory":"1Gi"}}}]}});
        assert_eq!(pod_qos(&guaranteed), "Guaranteed");
        let burstable =
            json!({"spec":{"containers":[{"name":"a","resources":{"requests":{"cpu":"1"}}}]}});
        assert_eq!(pod_qos(&burstable), "Burstable");
    }

    #[test]
    fn update_keeps_identity_and_status_and_counts_generations() {
        let pods = lookup("", "v1", "pods").expect("pods");
        let mut old = json!({"metadata":{"name":"p","namespace":"default"},"spec":{"containers":[{"name":"a","image":"x"}]}});
        prepare_create(pods, &mut old, Timestamp::UNIX_EPOCH);
        assert_eq!(old["metadata"]["generation"], 1);
        assert_eq!(old["status"]["phase"], "Pending");
        assert_eq!(old["metadata"]["creationTimestamp"], "1970-01-01T00:00:00Z");
        let mut new = json!({"metadata":{"name":"p","uid":"forged"},"spec":{"containers":[{"name":"a","image":"y"}]},"status":{"phase":"Running"}});
        prepare_update(pods, &mut new, &old);
        bump_generation(pods, &mut new, &old);
        assert_eq!(new["metadata"]["uid"], old["metadata"]["uid"]);
        assert_eq!(new["metadata"]["namespace"], "default");
        assert_eq!(new["status"]["phase"], "Pending");
        assert_eq!(new["metadata"]["generation"], 2);
    }

    #[test]
    fn jobs_get_a_generated_selector() {
        let jobs = lookup("batch", "v1", "jobs").expect("jobs");
        let mut job = json!({"metadata":{"name":"pi"},"spec":{"template":{"spec":{}}}});
        prepare_create(jobs, &mut job, Timestamp::UNIX_EPOCH);
        let uid = job["metadata"]["uid"].as_str().expect("uid").to_owned();
        assert_eq!(
            job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            uid.as_str()
        );
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"]["job-name"],
            "pi"
        );
    }
}
