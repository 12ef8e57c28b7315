//! The garbage collector: deletes objects whose owners (`metadata.ownerReferences`) are
//! all gone, and serves the `orphan` and `foregroundDeletion` finalizers of deleting
//! owners. It watches every resource the server serves, keeps a uid index of what
//! exists, and after each burst of changes scans that index; an owner missing from the
//! index is confirmed with a live read before anything is deleted.

mod decide;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::{BoxStream, select_all};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use decide::{FOREGROUND, ORPHAN, Owner, OwnerAction, Verdict};

/// Changes arriving within this window are handled by one scan.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// A served resource.
#[derive(Clone, Debug)]
pub(crate) struct Served {
    pub ar: ApiResource,
    pub namespaced: bool,
}

/// Every resource the server serves that can be listed, watched and deleted.
pub(crate) async fn served_resources(client: &kube::Client) -> Result<Vec<Served>, kube::Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if [verbs::LIST, verbs::WATCH, verbs::DELETE]
                .iter()
                .all(|v| caps.supports_operation(v))
            {
                out.push(Served {
                    ar,
                    namespaced: caps.scope == Scope::Namespaced,
                });
            }
        }
    }
    Ok(out)
}

/// A watch event, tagged with the index of its resource.
type Tagged = (usize, Result<watcher::Event<DynamicObject>, watcher::Error>);

/// What the collector remembers of an object.
#[derive(Clone, Debug)]
struct Entry {
    resource: usize,
    meta: ObjectMeta,
}

/// Runs the collector until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let resources = loop {
        match served_resources(&client).await {
            Ok(r) => break r,
            Err(err) => {
                tracing::warn!(%err, "garbage collector: discovery failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    // Events never own anything and churn the most.
    let watched: Vec<usize> = (0..resources.len())
        .filter(|&i| resources[i].ar.plural != "events")
        .collect();
    let streams: Vec<BoxStream<'static, Tagged>> = watched
        .iter()
        .map(|&i| {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resources[i].ar);
            watcher(api, watcher::Config::default())
                .map(move |e| (i, e))
                .boxed()
        })
        .collect();
    let mut events = select_all(streams);
    let mut gc = Collector {
        client,
        resources,
        objects: HashMap::new(),
        relisting: HashMap::new(),
    };
    let mut retry: Option<Duration> = None;
    loop {
        // Wait for a change (or a retry), then take in the rest of the burst.
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.next() => e,
            _ = tokio::time::sleep(retry.unwrap_or(Duration::from_secs(3600))), if retry.is_some() => None,
        };
        if let Some((i, e)) = first {
            gc.observe(i, e);
        }
        let window = tokio::time::sleep(DEBOUNCE);
        tokio::pin!(window);
        loop {
            tokio::select! {
                _ = &mut window => break,
                e = events.next() => match e {
                    Some((i, e)) => gc.observe(i, e),
                    None => return,
                },
            }
        }
        retry = if gc.scan().await {
            None
        } else {
            Some(Duration::from_secs(1))
        };
    }
}

struct Collector {
    client: kube::Client,
    resources: Vec<Served>,
    /// Every object seen, by uid.
    objects: HashMap<String, Entry>,
    /// Per resource being relisted: the uids seen so far (the rest are gone).
    relisting: HashMap<usize, HashSet<String>>,
}

impl Collector {
    fn observe(
        &mut self,
        resource: usize,
        event: Result<watcher::Event<DynamicObject>, watcher::Error>,
    ) {
        let event = match event {
            Ok(e) => e,
            Err(err) => {
                tracing::debug!(%err, "garbage collector: watch error");
                return;
            }
        };
        match event {
            watcher::Event::Init => {
                self.relisting.insert(resource, HashSet::new());
            }
            watcher::Event::InitApply(obj) | watcher::Event::Apply(obj) => {
                if let Some(uid) = obj.metadata.uid.clone() {
                    if let Some(seen) = self.relisting.get_mut(&resource) {
                        seen.insert(uid.clone());
                    }
                    self.objects.insert(
                        uid,
                        Entry {
                            resource,
                            meta: obj.metadata,
                        },
                    );
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.relisting.remove(&resource) {
                    self.objects
                        .retain(|uid, e| e.resource != resource || seen.contains(uid));
                }
            }
            watcher::Event::Delete(obj) => {
                if let Some(uid) = &obj.metadata.uid {
                    self.objects.remove(uid);
                }
            }
        }
    }

    fn api(&self, resource: usize, namespace: Option<&str>) -> Api<DynamicObject> {
        let served = &self.resources[resource];
        match namespace {
            Some(ns) if served.namespaced => {
                Api::namespaced_with(self.client.clone(), ns, &served.ar)
            }
            _ => Api::all_with(self.client.clone(), &served.ar),
        }
    }

    fn resource_of(&self, r: &OwnerReference) -> Option<usize> {
        let (group, version) = match r.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", r.api_version.as_str()),
        };
        self.resources
            .iter()
            .position(|s| s.ar.group == group && s.ar.version == version && s.ar.kind == r.kind)
    }

    /// Whether an owner missing from the index is really gone (a live read).
    async fn confirm(&self, r: &OwnerReference, namespace: Option<&str>) -> Owner {
        let Some(resource) = self.resource_of(r) else {
            return Owner::Unknown;
        };
        match self.api(resource, namespace).get_opt(&r.name).await {
            Ok(Some(o)) if o.metadata.uid.as_deref() == Some(r.uid.as_str()) => Owner::Present,
            Ok(_) => Owner::Absent,
            Err(_) => Owner::Unknown,
        }
    }

    /// One pass over everything known. Returns false when something failed and the
    /// pass should be repeated.
    async fn scan(&mut self) -> bool {
        let mut ok = true;
        let snapshot: Vec<(String, Entry)> = self
            .objects
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();

        // Deleting owners with finalizers for the collector.
        for (uid, owner) in &snapshot {
            let action = decide::owner_action(&owner.meta);
            if action == OwnerAction::None {
                continue;
            }
            let dependents: Vec<&Entry> = snapshot
                .iter()
                .map(|(_, e)| e)
                .filter(|e| {
                    e.meta
                        .owner_references
                        .iter()
                        .flatten()
                        .any(|r| &r.uid == uid)
                })
                .collect();
            let mut waiting = false;
            for dep in &dependents {
                let refs = dep.meta.owner_references.clone().unwrap_or_default();
                let result = match action {
                    OwnerAction::Orphan => {
                        let left = decide::without_owners(&refs, std::slice::from_ref(uid));
                        self.set_refs(dep, left).await
                    }
                    _ => {
                        if decide::blocks(&refs, uid) {
                            waiting = true;
                        }
                        if dep.meta.deletion_timestamp.is_some() {
                            Ok(())
                        } else {
                            self.delete(dep, DeleteParams::foreground()).await
                        }
                    }
                };
                if let Err(err) = result {
                    tracing::debug!(%err, "garbage collector: updating a dependent");
                    ok = false;
                    waiting = true;
                }
            }
            if action == OwnerAction::Orphan && !dependents.is_empty() {
                // Finalize once the index shows them free.
                waiting = true;
            }
            if !waiting {
                let name = if action == OwnerAction::Orphan {
                    ORPHAN
                } else {
                    FOREGROUND
                };
                if let Err(err) = self.drop_finalizer(owner, name).await {
                    tracing::debug!(%err, "garbage collector: finalizing an owner");
                    ok = false;
                }
            }
        }

        // Dependents whose owners are gone (each missing owner confirmed once a pass).
        let mut confirmed: HashMap<String, Owner> = HashMap::new();
        for (_, dep) in &snapshot {
            let refs = match &dep.meta.owner_references {
                Some(r) if !r.is_empty() && dep.meta.deletion_timestamp.is_none() => r.clone(),
                _ => continue,
            };
            let mut states = HashMap::new();
            for r in &refs {
                let state = if self.objects.contains_key(&r.uid) {
                    Owner::Present
                } else if let Some(s) = confirmed.get(&r.uid) {
                    *s
                } else {
                    let s = self.confirm(r, dep.meta.namespace.as_deref()).await;
                    confirmed.insert(r.uid.clone(), s);
                    s
                };
                states.insert(r.uid.clone(), state);
            }
            let verdict = decide::dependent_verdict(&refs, |r| {
                states.get(&r.uid).copied().unwrap_or(Owner::Unknown)
            });
            let result = match verdict {
                Verdict::Keep => Ok(()),
                Verdict::Delete => self.delete(dep, DeleteParams::background()).await,
                Verdict::RemoveRefs(uids) => {
                    self.set_refs(dep, decide::without_owners(&refs, &uids))
                        .await
                }
            };
            if let Err(err) = result {
                tracing::debug!(%err, "garbage collector: collecting a dependent");
                ok = false;
            }
        }
        ok
    }

    async fn delete(&self, e: &Entry, dp: DeleteParams) -> Result<(), kube::Error> {
        let name = e.meta.name.as_deref().unwrap_or_default();
        let dp = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: e.meta.uid.clone(),
                resource_version: None,
            }),
            ..dp
        };
        match self
            .api(e.resource, e.meta.namespace.as_deref())
            .delete(name, &dp)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(err) => Err(err),
        }
    }

    async fn merge(&self, e: &Entry, patch: Value) -> Result<(), kube::Error> {
        let name = e.meta.name.as_deref().unwrap_or_default();
        match self
            .api(e.resource, e.meta.namespace.as_deref())
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(err) => Err(err),
        }
    }

    async fn set_refs(&self, e: &Entry, refs: Vec<OwnerReference>) -> Result<(), kube::Error> {
        let refs = if refs.is_empty() {
            Value::Null
        } else {
            json!(refs)
        };
        self.merge(
            e,
            json!({"metadata": {
                "ownerReferences": refs,
                "resourceVersion": e.meta.resource_version,
            }}),
        )
        .await
    }

    async fn drop_finalizer(&self, e: &Entry, name: &str) -> Result<(), kube::Error> {
        let left = decide::without_finalizer(&e.meta, name);
        let left = if left.is_empty() {
            Value::Null
        } else {
            json!(left)
        };
        self.merge(
            e,
            json!({"metadata": {
                "finalizers": left,
                "resourceVersion": e.meta.resource_version,
            }}),
        )
        .await
    }
}
