//! The garbage collector's decisions, without I/O: what becomes of a dependent given
//! whether its owners exist, and what a deleting owner's finalizers ask for.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

pub const ORPHAN: &str = "orphan";
pub const FOREGROUND: &str = "foregroundDeletion";

/// What is known about one owner of a dependent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// An object with the reference's uid exists.
    Present,
    /// Confirmed gone (not found, or a different object under that name).
    Absent,
    /// Cannot be told (unknown kind, lookup failed): treated as present.
    Unknown,
}

/// What to do with a dependent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Every owner is gone: delete it (background).
    Delete,
    /// Some owners are gone: drop the references to them (by uid).
    RemoveRefs(Vec<String>),
}

/// Decides a dependent's fate from the state of each of its owner references.
pub fn dependent_verdict(
    refs: &[OwnerReference],
    owner: impl Fn(&OwnerReference) -> Owner,
) -> Verdict {
    if refs.is_empty() {
        return Verdict::Keep;
    }
    let absent: Vec<String> = refs
        .iter()
        .filter(|r| owner(r) == Owner::Absent)
        .map(|r| r.uid.clone())
        .collect();
    if absent.is_empty() {
        Verdict::Keep
    } else if absent.len() == refs.len() {
        Verdict::Delete
    } else {
        Verdict::RemoveRefs(absent)
    }
}

/// What a deleting owner's finalizers ask of the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerAction {
    None,
    /// `orphan`: strip the owner from its dependents, then drop the finalizer.
    Orphan,
    /// `foregroundDeletion`: delete the dependents, drop the finalizer once no
    /// blocking dependent is left.
    Foreground,
}

pub fn owner_action(meta: &ObjectMeta) -> OwnerAction {
    if meta.deletion_timestamp.is_none() {
        return OwnerAction::None;
    }
    let has = |f: &str| meta.finalizers.iter().flatten().any(|x| x == f);
    if has(ORPHAN) {
        OwnerAction::Orphan
    } else if has(FOREGROUND) {
        OwnerAction::Foreground
    } else {
        OwnerAction::None
    }
}

/// The references left once those to `uids` are removed.
pub fn without_owners(refs: &[OwnerReference], uids: &[String]) -> Vec<OwnerReference> {
    refs.iter()
        .filter(|r| !uids.contains(&r.uid))
        .cloned()
        .collect()
}

/// Whether a dependent holds up the foreground deletion of owner `uid`.
pub fn blocks(refs: &[OwnerReference], uid: &str) -> bool {
    refs.iter()
        .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
}

/// The finalizers left once `name` is removed.
pub fn without_finalizer(meta: &ObjectMeta, name: &str) -> Vec<String> {
    meta.finalizers
        .iter()
        .flatten()
        .filter(|f| *f != name)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn owner_ref(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: format!("rs-{uid}"),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(block),
        }
    }

    #[test]
    fn a_dependent_goes_only_when_every_owner_is_gone() {
        let refs = [owner_ref("a", true), owner_ref("b", false)];
        let gone = |r: &OwnerReference| {
            if r.uid == "a" {
                Owner::Absent
            } else {
                Owner::Present
            }
        };
        assert_eq!(
            dependent_verdict(&refs, gone),
            Verdict::RemoveRefs(vec!["a".into()])
        );
        assert_eq!(dependent_verdict(&refs, |_| Owner::Absent), Verdict::Delete);
        assert_eq!(dependent_verdict(&refs, |_| Owner::Present), Verdict::Keep);
        assert_eq!(dependent_verdict(&[], |_| Owner::Absent), Verdict::Keep);
    }

    #[test]
    fn an_owner_that_cannot_be_looked_up_protects_its_dependents() {
        let refs = [owner_ref("a", true)];
        assert_eq!(dependent_verdict(&refs, |_| Owner::Unknown), Verdict::Keep);
    }

    #[test]
    fn finalizers_of_a_deleting_owner_pick_the_policy() {
        let mut meta = ObjectMeta {
            finalizers: Some(vec![FOREGROUND.into()]),
            ..ObjectMeta::default()
        };
        // Not deleting yet: nothing to do.
        assert_eq!(owner_action(&meta), OwnerAction::None);
        meta.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(owner_action(&meta), OwnerAction::Foreground);
        meta.finalizers = Some(vec!["example.com/x".into(), ORPHAN.into()]);
        assert_eq!(owner_action(&meta), OwnerAction::Orphan);
        assert_eq!(without_finalizer(&meta, ORPHAN), vec!["example.com/x"]);
        meta.finalizers = None;
        assert_eq!(owner_action(&meta), OwnerAction::None);
    }

    #[test]
    fn orphaning_strips_only_that_owner_and_blocking_follows_the_flag() {
        let refs = [owner_ref("a", true), owner_ref("b", false)];
        let left = without_owners(&refs, &["a".into()]);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].uid, "b");
        assert!(blocks(&refs, "a"));
        assert!(!blocks(&refs, "b"));
        assert!(!blocks(&refs, "c"));
    }
}
