//! The namespace controller's decisions about finalizers.

use k8s_openapi::api::core::v1::Namespace;

/// The finalizer the namespace controller owns (in `spec.finalizers`).
pub const KUBERNETES: &str = "kubernetes";

/// Whether a deleting namespace still waits for this controller to empty it.
pub fn waits_for_us(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        && ns
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.as_ref())
            .is_some_and(|f| f.iter().any(|x| x == KUBERNETES))
}

/// `spec.finalizers` once the namespace is empty: without ours, others kept.
pub fn finalizers_after_cleanup(ns: &Namespace) -> Vec<String> {
    ns.spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .into_iter()
        .flatten()
        .filter(|f| *f != KUBERNETES)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ns(deleting: bool, finalizers: &[&str]) -> Namespace {
        let mut ns = Namespace::default();
        ns.metadata.name = Some("team".into());
        if deleting {
            ns.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        }
        ns.spec = Some(NamespaceSpec {
            finalizers: Some(finalizers.iter().map(|f| f.to_string()).collect()),
        });
        ns
    }

    #[test]
    fn only_a_deleting_namespace_with_our_finalizer_is_emptied() {
        assert!(waits_for_us(&ns(true, &["kubernetes"])));
        assert!(!waits_for_us(&ns(false, &["kubernetes"])));
        assert!(!waits_for_us(&ns(true, &["example.com/other"])));
        assert!(!waits_for_us(&ns(true, &[])));
    }

    #[test]
    fn finalizing_keeps_other_finalizers() {
        assert_eq!(
            finalizers_after_cleanup(&ns(true, &["example.com/other", "kubernetes"])),
            vec!["example.com/other"]
        );
        assert!(finalizers_after_cleanup(&ns(true, &["kubernetes"])).is_empty());
    }
}
