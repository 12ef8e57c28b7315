//! When a running pod's volumes must be written again, as pure functions of the pod, its
//! sources and the time: the kubelet's rules for renewing projected service account
//! tokens, and which volumes changed between two sets of [`VolumeSources`].

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, Pod, Secret, ServiceAccountTokenProjection, Volume,
};

use crate::runtime::VolumeSources;

/// The kubelet renews a projected token once it is older than 80% of its lifetime...
pub const RENEWAL_FRACTION: f64 = 0.8;
/// ...or older than 24 hours, whichever comes first.
pub const MAX_TOKEN_AGE: SignedDuration = SignedDuration::from_hours(24);
/// The lifetime of a token whose request did not say (the API's default for projections).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// Test/ops knob: the fraction of a projected token's lifetime after which the agent
/// renews it, instead of the kubelet's 0.8. The API will not issue tokens shorter than ten
/// minutes, so tests set a small fraction to see a renewal within seconds.
pub const RENEWAL_FRACTION_ENV: &str = "TANDEM_TOKEN_RENEWAL_FRACTION";

/// When a token was issued and when it expires, as the API answered the token request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLease {
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

impl TokenLease {
    /// From a TokenRequest answer: `status.expirationTimestamp` and the lifetime granted
    /// (`spec.expirationSeconds`), the way the kubelet derives the issue time.
    pub fn from_answer(expires_at: Timestamp, expiration_seconds: Option<i64>) -> Self {
        let seconds = expiration_seconds
            .filter(|s| *s > 0)
            .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
        let issued_at = expires_at
            .checked_sub(SignedDuration::from_secs(seconds))
            .unwrap_or(expires_at);
        Self {
            issued_at,
            expires_at,
        }
    }

    /// When the token is due for renewal: after `fraction` of its lifetime, and at the
    /// latest [`MAX_TOKEN_AGE`] after it was issued.
    pub fn renew_at(&self, fraction: f64) -> Timestamp {
        let lifetime = self.expires_at.duration_since(self.issued_at);
        let by_fraction = SignedDuration::try_from_secs_f64(lifetime.as_secs_f64() * fraction)
            .unwrap_or(lifetime)
            .clamp(SignedDuration::ZERO, lifetime.max(SignedDuration::ZERO));
        let age = by_fraction.min(MAX_TOKEN_AGE);
        self.issued_at.checked_add(age).unwrap_or(self.issued_at)
    }

    /// Whether the token must be renewed at `now`.
    pub fn needs_renewal(&self, now: Timestamp, fraction: f64) -> bool {
        now >= self.renew_at(fraction)
    }
}

/// Reads [`RENEWAL_FRACTION_ENV`]'s value: a number in (0, 1]; unset means the kubelet's.
pub fn renewal_fraction(value: Option<&str>) -> Result<f64, String> {
    let Some(text) = value.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(RENEWAL_FRACTION);
    };
    match text.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!(
            "{RENEWAL_FRACTION_ENV}={text:?}: must be a number greater than 0 and at most 1"
        )),
    }
}

/// Whether a downward API item reads pod labels or annotations, the only fields of a
/// volume's items that can change while the pod runs.
fn reads_mutable_metadata(item: &DownwardAPIVolumeFile) -> bool {
    item.field_ref.as_ref().is_some_and(|f| {
        f.field_path.starts_with("metadata.labels")
            || f.field_path.starts_with("metadata.annotations")
    })
}

/// Whether the files of `volume` can change while the pod runs.
fn is_refreshable(volume: &Volume) -> bool {
    volume.config_map.is_some()
        || volume.secret.is_some()
        || volume.projected.is_some()
        || volume
            .downward_api
            .as_ref()
            .is_some_and(|d| d.items.iter().flatten().any(reads_mutable_metadata))
}

/// The pod's volumes that are kept up to date while it runs: configMap, secret and
/// projected volumes, and downwardAPI volumes that show labels or annotations.
pub fn refreshable_volumes(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter(|v| is_refreshable(v))
        .map(|v| v.name.clone())
        .collect()
}

/// The objects the pod's volumes are rendered from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VolumeRefs {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
    /// `serviceAccountToken` projections, with the name of their volume.
    pub tokens: Vec<(String, ServiceAccountTokenProjection)>,
}

/// What the pod's volumes refer to (env references are not included: env never changes).
pub fn volume_refs(pod: &Pod) -> VolumeRefs {
    let mut refs = VolumeRefs::default();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if let Some(cm) = &volume.config_map {
            refs.config_maps.insert(cm.name.clone());
        }
        if let Some(secret) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            refs.secrets.insert(secret);
        }
        for source in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            if let Some(cm) = &source.config_map {
                refs.config_maps.insert(cm.name.clone());
            }
            if let Some(secret) = &source.secret {
                refs.secrets.insert(secret.name.clone());
            }
            if let Some(projection) = &source.service_account_token {
                refs.tokens.push((volume.name.clone(), projection.clone()));
            }
        }
    }
    refs
}

type ConfigMapPayload<'a> = (
    &'a Option<std::collections::BTreeMap<String, String>>,
    &'a Option<std::collections::BTreeMap<String, k8s_openapi::ByteString>>,
);

fn config_map_payload(cm: &ConfigMap) -> ConfigMapPayload<'_> {
    (&cm.data, &cm.binary_data)
}

type SecretPayload<'a> = (
    &'a Option<std::collections::BTreeMap<String, k8s_openapi::ByteString>>,
    &'a Option<std::collections::BTreeMap<String, String>>,
);

fn secret_payload(secret: &Secret) -> SecretPayload<'_> {
    (&secret.data, &secret.string_data)
}

/// Both sides of one comparison: the pod and its sources before and after.
struct Sides<'a> {
    namespace: &'a str,
    old_pod: &'a Pod,
    old: &'a VolumeSources,
    new_pod: &'a Pod,
    new: &'a VolumeSources,
}

impl Sides<'_> {
    /// Only the payload counts: a new resourceVersion or label on the object does not.
    fn config_map(&self, name: &str) -> bool {
        let old = self.old.config_map(self.namespace, name);
        let new = self.new.config_map(self.namespace, name);
        old.map(config_map_payload) != new.map(config_map_payload)
    }

    fn secret(&self, name: &str) -> bool {
        let old = self.old.secret(self.namespace, name);
        let new = self.new.secret(self.namespace, name);
        old.map(secret_payload) != new.map(secret_payload)
    }

    fn downward(&self, items: &[DownwardAPIVolumeFile]) -> bool {
        let (old, new) = (&self.old_pod.metadata, &self.new_pod.metadata);
        items.iter().filter_map(|i| i.field_ref.as_ref()).any(|f| {
            let path = f.field_path.as_str();
            (path.starts_with("metadata.labels") && old.labels != new.labels)
                || (path.starts_with("metadata.annotations") && old.annotations != new.annotations)
        })
    }

    fn token(&self, volume: &str, path: &str) -> bool {
        self.old.service_account_token(volume, path) != self.new.service_account_token(volume, path)
    }

    fn volume(&self, volume: &Volume) -> bool {
        if let Some(cm) = &volume.config_map {
            return self.config_map(&cm.name);
        }
        if let Some(secret) = &volume.secret {
            return self.secret(secret.secret_name.as_deref().unwrap_or_default());
        }
        if let Some(d) = &volume.downward_api {
            return self.downward(d.items.as_deref().unwrap_or_default());
        }
        let sources = volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten());
        for source in sources {
            let changed = if let Some(cm) = &source.config_map {
                self.config_map(&cm.name)
            } else if let Some(secret) = &source.secret {
                self.secret(&secret.name)
            } else if let Some(d) = &source.downward_api {
                self.downward(d.items.as_deref().unwrap_or_default())
            } else if let Some(token) = &source.service_account_token {
                self.token(&volume.name, &token.path)
            } else {
                false
            };
            if changed {
                return true;
            }
        }
        false
    }
}

/// The refreshable volumes of the pod whose files differ between the old pod with its old
/// sources and the new pod (labels, annotations) with the new sources, in spec order.
pub fn changed_volumes(
    old_pod: &Pod,
    old: &VolumeSources,
    new_pod: &Pod,
    new: &VolumeSources,
) -> Vec<String> {
    let sides = Sides {
        namespace: new_pod.metadata.namespace.as_deref().unwrap_or("default"),
        old_pod,
        old,
        new_pod,
        new,
    };
    new_pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter(|v| is_refreshable(v) && sides.volume(v))
        .map(|v| v.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn tokens_are_renewed_after_80_percent_of_their_lifetime() {
        // Istio's token: 12 hours; renewed after 9h36m, well before it expires.
        let lease = TokenLease::from_answer(at("2025-01-01T12:00:00Z"), Some(43200));
        assert_eq!(lease.issued_at, at("2025-01-01T00:00:00Z"));
        assert_eq!(lease.renew_at(RENEWAL_FRACTION), at("2025-01-01T09:36:00Z"));
        assert!(!lease.needs_renewal(at("2025-01-01T09:35:59Z"), RENEWAL_FRACTION));
        assert!(lease.needs_renewal(at("2025-01-01T09:36:00Z"), RENEWAL_FRACTION));
        assert!(lease.needs_renewal(at("2025-01-01T13:00:00Z"), RENEWAL_FRACTION));

        // The API's minimum, ten minutes: renewed after eight.
        let short = TokenLease::from_answer(at("2025-01-01T00:10:00Z"), Some(600));
        assert_eq!(short.renew_at(RENEWAL_FRACTION), at("2025-01-01T00:08:00Z"));
    }

    #[test]
    fn long_lived_tokens_are_renewed_after_a_day() {
        // A week-long token is renewed after 24 hours, not after 80% of the week.
        let week = 7 * 24 * 3600;
        let lease = TokenLease::from_answer(at("2025-01-08T00:00:00Z"), Some(week));
        assert_eq!(lease.renew_at(RENEWAL_FRACTION), at("2025-01-02T00:00:00Z"));
        assert!(!lease.needs_renewal(at("2025-01-01T23:59:59Z"), RENEWAL_FRACTION));
        assert!(lease.needs_renewal(at("2025-01-02T00:00:00Z"), RENEWAL_FRACTION));
        // 30 hours: 80% is 24 hours exactly.
        let lease = TokenLease::from_answer(at("2025-01-02T06:00:00Z"), Some(30 * 3600));
        assert_eq!(lease.renew_at(RENEWAL_FRACTION), at("2025-01-02T00:00:00Z"));
    }

    #[test]
    fn the_renewal_fraction_scales_the_point_of_renewal() {
        let lease = TokenLease::from_answer(at("2025-01-01T00:10:00Z"), Some(600));
        assert_eq!(lease.renew_at(0.005), at("2025-01-01T00:00:03Z"));
        assert_eq!(lease.renew_at(1.0), lease.expires_at);
        // The day limit holds whatever the fraction.
        let week = TokenLease::from_answer(at("2025-01-08T00:00:00Z"), Some(7 * 24 * 3600));
        assert_eq!(week.renew_at(1.0), at("2025-01-02T00:00:00Z"));
        // No lifetime in the answer: the API's default hour.
        let default = TokenLease::from_answer(at("2025-01-01T01:00:00Z"), None);
        assert_eq!(default.issued_at, at("2025-01-01T00:00:00Z"));
    }

    #[test]
    fn the_renewal_fraction_is_read_from_its_setting() {
        assert_eq!(renewal_fraction(None), Ok(0.8));
        assert_eq!(renewal_fraction(Some("")), Ok(0.8));
        assert_eq!(renewal_fraction(Some("0.01")), Ok(0.01));
        assert_eq!(renewal_fraction(Some("1")), Ok(1.0));
        for bad in ["0", "-1", "1.5", "fast", "NaN"] {
            let err = renewal_fraction(Some(bad)).expect_err(bad);
            assert!(err.starts_with("TANDEM_TOKEN_RENEWAL_FRACTION="), "{err}");
        }
    }

    fn pod(labels: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "labels": labels,
                         "annotations": {"a": "1"}},
            "spec": {"containers": [{"name": "app", "env": [
                        {"name": "E", "valueFrom": {"configMapKeyRef": {"name": "env-only", "key": "k"}}}]}],
                     "volumes": [
                        {"name": "cfg", "configMap": {"name": "settings"}},
                        {"name": "creds", "secret": {"secretName": "creds"}},
                        {"name": "labels", "downwardAPI": {"items": [
                            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                        {"name": "one-label", "downwardAPI": {"items": [
                            {"path": "tier", "fieldRef": {"fieldPath": "metadata.labels['tier']"}}]}},
                        {"name": "name", "downwardAPI": {"items": [
                            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                        {"name": "token", "projected": {"sources": [
                            {"serviceAccountToken": {"path": "t", "audience": "istio-ca", "expirationSeconds": 43200}}]}},
                        {"name": "mixed", "projected": {"sources": [
                            {"configMap": {"name": "other"}},
                            {"downwardAPI": {"items": [
                                {"path": "notes", "fieldRef": {"fieldPath": "metadata.annotations"}}]}}]}},
                        {"name": "scratch", "emptyDir": {}}
                     ]}
        }))
        .expect("pod")
    }

    fn cm(name: &str, value: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop"}, "data": {"k": value}
        }))
        .expect("cm")
    }

    fn sources(settings: &str, other: &str, token: &str) -> VolumeSources {
        let mut s = VolumeSources::default();
        s.add_config_map(cm("settings", settings));
        s.add_config_map(cm("other", other));
        s.add_secret(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "creds", "namespace": "shop"}, "data": {"p": "cA=="}
            }))
            .expect("secret"),
        );
        s.add_service_account_token("token", "t", Ok(token.into()));
        s
    }

    #[test]
    fn only_volumes_that_can_change_are_refreshed() {
        let p = pod(serde_json::json!({"tier": "front"}));
        assert_eq!(
            refreshable_volumes(&p),
            ["cfg", "creds", "labels", "one-label", "token", "mixed"]
        );
        let refs = volume_refs(&p);
        // Env references are not followed: env never changes.
        assert_eq!(
            refs.config_maps,
            BTreeSet::from(["settings".into(), "other".into()])
        );
        assert_eq!(refs.secrets, BTreeSet::from(["creds".into()]));
        assert_eq!(refs.tokens.len(), 1);
        assert_eq!(refs.tokens[0].0, "token");
        let bare: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x"}, "spec": {"containers": [{"name": "c"}],
                "volumes": [{"name": "scratch", "emptyDir": {}}]}
        }))
        .expect("pod");
        assert!(refreshable_volumes(&bare).is_empty());
    }

    #[test]
    fn changes_are_found_per_volume() {
        let p = pod(serde_json::json!({"tier": "front"}));
        let base = sources("v1", "o1", "tok1");
        assert!(changed_volumes(&p, &base, &p, &base).is_empty());
        assert_eq!(
            changed_volumes(&p, &base, &p, &sources("v2", "o1", "tok1")),
            ["cfg"]
        );
        assert_eq!(
            changed_volumes(&p, &base, &p, &sources("v1", "o2", "tok1")),
            ["mixed"]
        );
        assert_eq!(
            changed_volumes(&p, &base, &p, &sources("v1", "o1", "tok2")),
            ["token"]
        );
        // A ConfigMap that is gone changes its volume (which then fails to render).
        let mut gone = VolumeSources::default();
        gone.add_config_map(cm("other", "o1"));
        gone.add_secret(base.secret("shop", "creds").cloned().expect("secret"));
        gone.add_service_account_token("token", "t", Ok("tok1".into()));
        assert_eq!(changed_volumes(&p, &base, &p, &gone), ["cfg"]);

        // Labels change the volumes that show them; annotations the projected one.
        let relabelled = pod(serde_json::json!({"tier": "back"}));
        assert_eq!(
            changed_volumes(&p, &base, &relabelled, &base),
            ["labels", "one-label"]
        );
        let mut annotated = p.clone();
        annotated.metadata.annotations = Some([("a".to_owned(), "2".to_owned())].into());
        assert_eq!(changed_volumes(&p, &base, &annotated, &base), ["mixed"]);
    }

    #[test]
    fn object_metadata_alone_is_no_change() {
        let p = pod(serde_json::json!({}));
        let base = sources("v1", "o1", "t");
        let mut touched = base.clone();
        let mut settings = cm("settings", "v1");
        settings.metadata.resource_version = Some("42".into());
        settings.metadata.labels = Some([("x".to_owned(), "y".to_owned())].into());
        touched.add_config_map(settings);
        assert!(changed_volumes(&p, &base, &p, &touched).is_empty());
    }
}
