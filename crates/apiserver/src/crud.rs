//! Generic CRUD for every served resource, with the API server's semantics:
//! create (generateName, uid, namespace checks), get, list with selectors, update
//! with resourceVersion preconditions, patch, graceful delete and finalizers, the
//! `status` subresource and `pods/binding`.

use std::collections::BTreeMap;

use api::patch::{PatchType, apply_patch};
use api::selector::{FieldSelector, LabelSelector};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use jiff::SignedDuration;
use serde_json::{Value, json};
use store::{KeyValue, StoreError};

use crate::admission::{self, Operation};
use crate::body::{FieldValidation, check_fields, check_type, parse_object};
use crate::ipalloc;
use crate::objects::{
    self, bump_generation, decorate, finalizers, from_kv, is_deleting, meta_mut, prepare_create,
    prepare_update, to_stored, with_status,
};
use crate::query::{ListQuery, Render};
use crate::render::{json_reply, list_reply, object_reply};
use crate::resources::{ResourceInfo, lookup};
use crate::state::AppState;
use crate::status::{
    ApiError, ApiResult, already_exists, bad_request, conflict, conflict_with, failure, forbidden,
    internal, invalid, namespace_not_found, not_found, unsupported_media_type,
};

/// How often a write is retried when a concurrent write got there first.
const RETRIES: usize = 5;

/// What a request addresses, parsed from its path.
#[derive(Debug, Clone)]
pub struct Target {
    pub res: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// The parts of a request the handlers read.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub headers: HeaderMap,
    pub query: Option<String>,
    pub body: Bytes,
}

impl Request {
    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn render(&self) -> ApiResult<Render> {
        Render::negotiate(self.header(header::ACCEPT), self.query.as_deref())
    }

    fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_deref().unwrap_or("").as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    pub(crate) fn reject_dry_run(&self) -> ApiResult<()> {
        if self.query_param("dryRun").is_some_and(|v| !v.is_empty()) {
            return Err(bad_request("dryRun is not supported by this server"));
        }
        Ok(())
    }
}

fn ns(t: &Target) -> Option<&str> {
    t.namespace.as_deref().filter(|_| t.res.namespaced)
}

fn item_name(t: &Target) -> &str {
    t.name.as_deref().unwrap_or("")
}

async fn load(state: &AppState, t: &Target) -> ApiResult<(KeyValue, Value)> {
    let key = t.res.key(ns(t), item_name(t));
    let kv = state
        .store
        .get(&key)
        .await?
        .ok_or_else(|| not_found(t.res, item_name(t)))?;
    let value = from_kv(t.res, &kv)?;
    Ok((kv, value))
}

fn namespaces() -> &'static ResourceInfo {
    lookup("", "v1", "namespaces").expect("namespaces are always served")
}

/// The namespace object of a namespaced request, if it exists.
async fn namespace_object(state: &AppState, namespace: &str) -> ApiResult<Option<Value>> {
    let res = namespaces();
    match state.store.get(&res.key(None, namespace)).await? {
        Some(kv) => Ok(Some(from_kv(res, &kv)?)),
        None => Ok(None),
    }
}

// ---------------------------------------------------------------------------
// Reads

/// `GET` of one object (also `…/status`).
pub async fn get(state: &AppState, t: &Target, req: &Request) -> ApiResult<Response> {
    let render = req.render()?;
    let (_, value) = load(state, t).await?;
    Ok(object_reply(
        t.res,
        render,
        value,
        StatusCode::OK,
        &[],
        state.config.now(),
    ))
}

/// Parsed `labelSelector` and `fieldSelector`.
pub struct Selectors {
    pub label: LabelSelector,
    pub field: FieldSelector,
}

impl Selectors {
    pub fn from_query(res: &ResourceInfo, q: &ListQuery) -> ApiResult<Selectors> {
        let label = LabelSelector::parse(q.label_selector.as_deref().unwrap_or(""))
            .map_err(|e| bad_request(&e.to_string()))?;
        let field = FieldSelector::parse(q.field_selector.as_deref().unwrap_or(""))
            .map_err(|e| bad_request(&e.to_string()))?;
        field
            .check_supported(res.kind)
            .map_err(|e| bad_request(&e.to_string()))?;
        Ok(Selectors { label, field })
    }

    /// No selector: every object matches.
    pub fn is_everything(&self) -> bool {
        self.label.is_empty() && self.field.is_empty()
    }

    pub fn matches(&self, res: &ResourceInfo, object: &Value) -> bool {
        if !self.label.is_empty() {
            let labels: BTreeMap<String, String> = object
                .pointer("/metadata/labels")
                .cloned()
                .and_then(|l| serde_json::from_value(l).ok())
                .unwrap_or_default();
            if !self.label.matches(&labels) {
                return false;
            }
        }
        self.field.is_empty() || self.field.matches(res.kind, object)
    }
}

/// `GET` of a collection: a list, or a watch with `watch=true`.
pub async fn list(state: &AppState, t: &Target, req: &Request) -> ApiResult<Response> {
    let q = ListQuery::parse(req.query.as_deref())?;
    let render = req.render()?;
    if q.watch {
        return Ok(crate::watch::watch_response(state, t.res, ns(t), &q, render).await);
    }
    let selectors = Selectors::from_query(t.res, &q)?;
    let (kvs, revision) = state.store.list(&t.res.prefix(ns(t))).await?;
    let mut items = Vec::with_capacity(kvs.len());
    for kv in &kvs {
        let value = from_kv(t.res, kv)?;
        if selectors.matches(t.res, &value) {
            items.push(value);
        }
    }
    Ok(list_reply(
        t.res,
        render,
        items,
        revision,
        state.config.now(),
    ))
}

// ---------------------------------------------------------------------------
// Create

/// `POST` to a collection.
pub async fn create(state: &AppState, t: &Target, req: &Request) -> ApiResult<Response> {
    req.reject_dry_run()?;
    let render = req.render()?;
    let validation = FieldValidation::from_query(req.query.as_deref())?;
    let mut value = parse_object(req.header(header::CONTENT_TYPE), &req.body)?;
    check_type(t.res, &mut value, t.res.kind)?;
    let mut warnings = check_fields(t.res, &value, validation)?;

    let namespace_obj = match ns(t) {
        Some(namespace) => {
            match objects::namespace(&value) {
                Some(n) if n != namespace => {
                    return Err(bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {}
            }
            meta_mut(&mut value).insert("namespace".to_owned(), json!(namespace));
            Some(namespace.to_owned())
        }
        None => {
            meta_mut(&mut value).remove("namespace");
            None
        }
    };
    if objects::resource_version(&value).is_some() {
        return Err(bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }

    let generate =
        objects::name(&value).is_none() && objects::meta_str(&value, "generateName").is_some();
    let namespace_value = match &namespace_obj {
        Some(n) => {
            let obj = namespace_object(state, n)
                .await?
                .ok_or_else(|| namespace_not_found(n))?;
            if is_deleting(&obj) {
                return Err(forbidden(
                    t.res,
                    objects::name(&value).unwrap_or(""),
                    &format!(
                        "unable to create new content in namespace {n} because it is being terminated"
                    ),
                ));
            }
            Some(obj)
        }
        None => None,
    };

    // Services get their ClusterIP while holding the allocation lock until stored.
    let is_service = t.res.group.is_empty() && t.res.kind == "Service";
    let _allocating = if is_service {
        let guard = state.service_ips.clone().lock_owned().await;
        assign_cluster_ip(state, t.res, &mut value).await?;
        Some(guard)
    } else {
        None
    };

    // A generated name may collide; Kubernetes retries with a fresh suffix.
    for attempt in 0..RETRIES {
        let mut object = value.clone();
        if generate {
            let base = objects::meta_str(&object, "generateName")
                .unwrap_or("")
                .to_owned();
            // Leave room for the suffix within the 63-character limit most names have.
            let base: String = base.chars().take(58).collect();
            meta_mut(&mut object).insert(
                "name".to_owned(),
                json!(format!("{base}{}", objects::name_suffix())),
            );
        }
        prepare_create(t.res, &mut object, state.config.now());
        let mut all_warnings = warnings.clone();
        all_warnings.extend(admission::run(
            state,
            Operation::Create,
            t.res,
            &mut object,
            None,
            namespace_value.as_ref(),
        )?);
        let name = objects::name(&object).unwrap_or("").to_owned();
        let key = t.res.key(ns(t), &name);
        match state.store.create(&key, to_stored(&object)?).await {
            Ok(kv) => {
                decorate(t.res, &mut object, kv.mod_revision);
                warnings = all_warnings;
                return Ok(object_reply(
                    t.res,
                    render,
                    object,
                    StatusCode::CREATED,
                    &warnings,
                    state.config.now(),
                ));
            }
            Err(StoreError::AlreadyExists(_)) if generate && attempt + 1 < RETRIES => continue,
            Err(StoreError::AlreadyExists(_)) => return Err(already_exists(t.res, &name)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(internal("could not generate a unique name"))
}

// ---------------------------------------------------------------------------
// Update and patch

/// `PUT` of an object, its `status`, or a namespace's `finalize`.
pub async fn update(state: &AppState, t: &Target, req: &Request) -> ApiResult<Response> {
    req.reject_dry_run()?;
    let render = req.render()?;
    let validation = FieldValidation::from_query(req.query.as_deref())?;
    let mut new = parse_object(req.header(header::CONTENT_TYPE), &req.body)?;
    check_type(t.res, &mut new, t.res.kind)?;
    let warnings = check_fields(t.res, &new, validation)?;
    check_identity(t, &mut new)?;

    let (kv, old) = load(state, t).await?;
    check_uid(t, &new, &old)?;
    if let Some(rv) = objects::resource_version(&new)
        && rv != kv.mod_revision.to_string()
    {
        return Err(conflict(t.res, item_name(t)));
    }
    let (stored, warnings) = commit(state, t, kv.mod_revision, old, new, warnings).await?;
    Ok(object_reply(
        t.res,
        render,
        stored,
        StatusCode::OK,
        &warnings,
        state.config.now(),
    ))
}

/// A uid in the body is a precondition: the write is for that object, not for another
/// one created since under the same name.
fn check_uid(t: &Target, new: &Value, old: &Value) -> ApiResult<()> {
    match (objects::uid(new), objects::uid(old)) {
        (Some(wanted), Some(stored)) if !wanted.is_empty() && wanted != stored => {
            Err(conflict_with(
                t.res,
                item_name(t),
                &format!(
                    "Precondition failed: UID in precondition: {wanted}, UID in object meta: {stored}"
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// The name and namespace in a body must be those of the URL (missing ones are
/// taken from it).
fn check_identity(t: &Target, value: &mut Value) -> ApiResult<()> {
    let url_name = item_name(t);
    match objects::name(value) {
        Some(n) if n != url_name => {
            return Err(bad_request(&format!(
                "the name of the object ({n}) does not match the name on the URL ({url_name})"
            )));
        }
        Some(_) => {}
        None => {
            meta_mut(value).insert("name".to_owned(), json!(url_name));
        }
    }
    if let Some(namespace) = ns(t) {
        match objects::namespace(value) {
            Some(n) if n != namespace => {
                return Err(bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            Some(_) => {}
            None => {
                meta_mut(value).insert("namespace".to_owned(), json!(namespace));
            }
        }
    }
    Ok(())
}

/// `PATCH` of an object or its `status`.
pub async fn patch(state: &AppState, t: &Target, req: &Request) -> ApiResult<Response> {
    req.reject_dry_run()?;
    let render = req.render()?;
    let validation = FieldValidation::from_query(req.query.as_deref())?;
    let content_type = req.header(header::CONTENT_TYPE).unwrap_or("");
    let accepted = [
        PatchType::Json.content_type(),
        PatchType::Merge.content_type(),
        PatchType::Strategic.content_type(),
    ];
    let patch_type = match PatchType::from_content_type(content_type) {
        Some(PatchType::Apply) | None => {
            return Err(unsupported_media_type(content_type, &accepted));
        }
        Some(p) => p,
    };
    let mut last_conflict = None;
    for _ in 0..RETRIES {
        let (kv, old) = load(state, t).await?;
        let mut new = apply_patch(t.res.kind, &old, patch_type, &req.body).map_err(|e| {
            failure(
                e.http_status(),
                e.reason(),
                &e.to_string(),
                Some(Default::default()),
            )
        })?;
        check_type(t.res, &mut new, t.res.kind)?;
        let warnings = check_fields(t.res, &new, validation)?;
        check_uid(t, &new, &old)?;
        if let Some(rv) = objects::resource_version(&new)
            && rv != kv.mod_revision.to_string()
        {
            return Err(conflict(t.res, item_name(t)));
        }
        check_identity(t, &mut new)?;
        match commit(state, t, kv.mod_revision, old, new, warnings).await {
            // Someone wrote in between: patch the newer object.
            Err(e) if e.code() == 409 && e.reason() == "Conflict" => last_conflict = Some(e),
            Err(e) => return Err(e),
            Ok((stored, warnings)) => {
                return Ok(object_reply(
                    t.res,
                    render,
                    stored,
                    StatusCode::OK,
                    &warnings,
                    state.config.now(),
                ));
            }
        }
    }
    Err(last_conflict.unwrap_or_else(|| conflict(t.res, item_name(t))))
}

/// Stores an update of `old` (at `revision`) to `new`: runs the strategy and
/// admission, removes an object whose last finalizer went, skips no-op writes.
/// Returns the object as stored (or as last seen, when removed) and the warnings.
async fn commit(
    state: &AppState,
    t: &Target,
    revision: u64,
    old: Value,
    new: Value,
    mut warnings: Vec<String>,
) -> ApiResult<(Value, Vec<String>)> {
    let new = match t.subresource.as_deref() {
        // Only the status changes; the rest stays as stored.
        Some("status") => with_status(&old, &new),
        Some("finalize") => {
            let mut merged = old.clone();
            let fins = new.pointer("/spec/finalizers").cloned();
            if let Some(spec) = merged.get_mut("spec").and_then(Value::as_object_mut) {
                match fins {
                    Some(f) => spec.insert("finalizers".to_owned(), f),
                    None => spec.remove("finalizers"),
                };
            } else if let (Some(obj), Some(f)) = (merged.as_object_mut(), fins) {
                obj.insert("spec".to_owned(), json!({"finalizers": f}));
            }
            merged
        }
        // The main resource (and `scale`, which hands in a changed main object).
        _ => {
            let mut new = new;
            prepare_update(t.res, &mut new, &old);
            if t.res.group.is_empty() && t.res.kind == "Service" {
                ipalloc::keep_on_update(&mut new, &old);
                if let Some((value, why)) = ipalloc::changed_on_update(&new, &old) {
                    return Err(cluster_ip_error(t.res, &new, value, &why));
                }
            }
            let namespace_obj = match ns(t) {
                Some(n) => namespace_object(state, n).await?,
                None => None,
            };
            warnings.extend(admission::run(
                state,
                Operation::Update,
                t.res,
                &mut new,
                Some(&old),
                namespace_obj.as_ref(),
            )?);
            bump_generation(t.res, &mut new, &old);
            new
        }
    };
    let key = t.res.key(ns(t), item_name(t));

    if is_deleting(&new) && may_be_removed(t.res, &new) {
        return match state.store.delete(&key, Some(revision)).await {
            Ok(_) => Ok((new, warnings)),
            Err(StoreError::Conflict { .. }) => Err(conflict(t.res, item_name(t))),
            Err(StoreError::NotFound(_)) => Err(not_found(t.res, item_name(t))),
            Err(e) => Err(e.into()),
        };
    }

    // A write that changes nothing keeps the resourceVersion (and wakes no watcher).
    let mut old_cmp = old.clone();
    let mut new_cmp = new.clone();
    meta_mut(&mut old_cmp).remove("resourceVersion");
    meta_mut(&mut new_cmp).remove("resourceVersion");
    if old_cmp == new_cmp {
        return Ok((old, warnings));
    }

    match state
        .store
        .update(&key, to_stored(&new)?, Some(revision))
        .await
    {
        Ok(kv) => {
            let mut new = new;
            decorate(t.res, &mut new, kv.mod_revision);
            Ok((new, warnings))
        }
        Err(StoreError::Conflict { .. }) => Err(conflict(t.res, item_name(t))),
        Err(StoreError::NotFound(_)) => Err(not_found(t.res, item_name(t))),
        Err(e) => Err(e.into()),
    }
}

/// Whether an object marked for deletion can go now: no finalizers left (for
/// namespaces, none in `spec.finalizers` either) and, for pods, the grace period
/// over (the node confirms with a delete of grace 0).
fn may_be_removed(res: &ResourceInfo, value: &Value) -> bool {
    if !finalizers(value).is_empty() {
        return false;
    }
    match (res.group, res.kind) {
        ("", "Namespace") => value
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty),
        ("", "Pod") => {
            value
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                == 0
        }
        _ => true,
    }
}

// ---------------------------------------------------------------------------
// Delete

/// `DeleteOptions`, from the body and the query.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct DeleteOptions {
    grace_period_seconds: Option<i64>,
    precondition_uid: Option<String>,
    precondition_rv: Option<String>,
    propagation: Option<String>,
}

fn delete_options(req: &Request) -> ApiResult<DeleteOptions> {
    let mut opts = DeleteOptions::default();
    let mut policy = None;
    if !req.body.iter().all(u8::is_ascii_whitespace) {
        let body: Value = serde_json::from_slice(&req.body)
            .map_err(|e| bad_request(&format!("invalid DeleteOptions: {e}")))?;
        opts.grace_period_seconds = body.get("gracePeriodSeconds").and_then(Value::as_i64);
        opts.precondition_uid = body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_owned);
        opts.precondition_rv = body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned);
        policy = body
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            return Err(bad_request("dryRun is not supported by this server"));
        }
    }
    if let Some(g) = req.query_param("gracePeriodSeconds") {
        opts.grace_period_seconds = Some(
            g.parse()
                .map_err(|_| bad_request(&format!("gracePeriodSeconds: invalid value {g:?}")))?,
        );
    }
    if let Some(p) = req.query_param("propagationPolicy") {
        policy = Some(p);
    }
    // Orphan and Foreground become finalizers on the owner (see `delete_once`); the
    // garbage collector acts on them.
    if let Some(p) = policy.as_deref()
        && !matches!(p, "Orphan" | "Background" | "Foreground")
    {
        return Err(failure(
            422,
            "Invalid",
            &format!(
                "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
            ),
            None,
        ));
    }
    opts.propagation = policy;
    Ok(opts)
}

/// The finalizer a propagation policy puts on the object being deleted, as the API
/// server does: the garbage collector orphans or deletes the dependents, then drops it.
fn propagation_finalizer(policy: Option<&str>) -> Option<&'static str> {
    match policy {
        Some("Orphan") => Some("orphan"),
        Some("Foreground") => Some("foregroundDeletion"),
        _ => None,
    }
}

/// `DELETE` of one object.
pub async fn delete(state: &AppState, t: &Target, req: &Request) -> ApiResult<Response> {
    req.reject_dry_run()?;
    let render = req.render()?;
    let opts = delete_options(req)?;
    let mut last = None;
    for _ in 0..RETRIES {
        match delete_once(state, t, &opts).await {
            Err(e) if e.code() == 409 && e.reason() == "Conflict" && last.is_none() => {
                last = Some(e)
            }
            Err(e) => return Err(e),
            Ok(Deleted::Object(v)) => {
                return Ok(object_reply(
                    t.res,
                    render,
                    v,
                    StatusCode::OK,
                    &[],
                    state.config.now(),
                ));
            }
            Ok(Deleted::Gone(v)) => {
                let status = crate::status::success(t.res, item_name(t), objects::uid(&v));
                return Ok(json_reply(
                    StatusCode::OK,
                    &serde_json::to_value(&status).unwrap_or_default(),
                    &[],
                ));
            }
        }
    }
    Err(last.unwrap_or_else(|| conflict(t.res, item_name(t))))
}

enum Deleted {
    /// Still there (terminating), or a pod removed at once: reply with the object.
    Object(Value),
    /// Removed: reply with a `Success` status.
    Gone(Value),
}

async fn delete_once(state: &AppState, t: &Target, opts: &DeleteOptions) -> ApiResult<Deleted> {
    let (kv, mut obj) = load(state, t).await?;
    let name = item_name(t);
    if let Some(uid) = &opts.precondition_uid
        && Some(uid.as_str()) != objects::uid(&obj)
    {
        return Err(conflict_with(
            t.res,
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                objects::uid(&obj).unwrap_or("")
            ),
        ));
    }
    if let Some(rv) = &opts.precondition_rv
        && *rv != kv.mod_revision.to_string()
    {
        return Err(conflict_with(
            t.res,
            name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                kv.mod_revision
            ),
        ));
    }
    let key = t.res.key(ns(t), name);
    let now = state.config.now();
    if let Some(finalizer) = propagation_finalizer(opts.propagation.as_deref())
        && !finalizers(&obj).iter().any(|f| f == finalizer)
    {
        let meta = meta_mut(&mut obj);
        let list = meta.entry("finalizers").or_insert_with(|| json!([]));
        if let Some(list) = list.as_array_mut() {
            list.push(json!(finalizer));
        }
    }
    let is_pod = t.res.group.is_empty() && t.res.kind == "Pod";
    let grace = if is_pod { pod_grace(&obj, opts) } else { 0 };
    let namespace_finalizers = t.res.group.is_empty()
        && t.res.kind == "Namespace"
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
    let must_wait = grace > 0 || !finalizers(&obj).is_empty() || namespace_finalizers;

    if !must_wait {
        return match state.store.delete(&key, Some(kv.mod_revision)).await {
            Ok(_) if is_pod => Ok(Deleted::Object(obj)),
            Ok(_) => Ok(Deleted::Gone(obj)),
            Err(StoreError::Conflict { .. }) => Err(conflict(t.res, name)),
            Err(StoreError::NotFound(_)) => Err(not_found(t.res, name)),
            Err(e) => Err(e.into()),
        };
    }

    // Graceful: mark the object; it goes when the grace period or the finalizers end.
    let before = obj.clone();
    let current_grace = obj
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64);
    let already = is_deleting(&obj);
    // A second delete may only shorten the grace period.
    if !already || current_grace.is_some_and(|g| grace < g) {
        let meta = meta_mut(&mut obj);
        let at = now
            .checked_add(SignedDuration::from_secs(grace))
            .unwrap_or(now);
        meta.insert(
            "deletionTimestamp".to_owned(),
            json!(objects::timestamp(at)),
        );
        meta.insert("deletionGracePeriodSeconds".to_owned(), json!(grace));
    }
    if t.res.kind == "Namespace"
        && let Some(o) = obj.as_object_mut()
    {
        let status = o.entry("status").or_insert_with(|| json!({}));
        if let Some(s) = status.as_object_mut() {
            s.insert("phase".to_owned(), json!("Terminating"));
        }
    }
    // Grace 0 with nothing else pending (a pod whose node is done): remove now.
    if grace == 0 && may_be_removed(t.res, &obj) {
        return match state.store.delete(&key, Some(kv.mod_revision)).await {
            Ok(_) if is_pod => Ok(Deleted::Object(obj)),
            Ok(_) => Ok(Deleted::Gone(obj)),
            Err(StoreError::Conflict { .. }) => Err(conflict(t.res, name)),
            Err(StoreError::NotFound(_)) => Err(not_found(t.res, name)),
            Err(e) => Err(e.into()),
        };
    }
    if obj == before {
        return Ok(Deleted::Object(obj));
    }
    match state
        .store
        .update(&key, to_stored(&obj)?, Some(kv.mod_revision))
        .await
    {
        Ok(kv) => {
            decorate(t.res, &mut obj, kv.mod_revision);
            Ok(Deleted::Object(obj))
        }
        Err(StoreError::Conflict { .. }) => Err(conflict(t.res, name)),
        Err(StoreError::NotFound(_)) => Err(not_found(t.res, name)),
        Err(e) => Err(e.into()),
    }
}

/// The grace period of a pod deletion: the request's, else the pod's
/// `terminationGracePeriodSeconds`; 0 for pods that never ran on a node or have
/// finished, whose containers need no stopping.
fn pod_grace(pod: &Value, opts: &DeleteOptions) -> i64 {
    let bound = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    if !bound || matches!(phase, Some("Succeeded" | "Failed")) {
        return 0;
    }
    let grace = opts.grace_period_seconds.unwrap_or_else(|| {
        pod.pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(api::defaults::DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS)
    });
    grace.max(0)
}

/// `DELETE` of a collection (with selectors): deletes each match as a single delete
/// would, and answers with the list of what was deleted or marked.
pub async fn delete_collection(state: &AppState, t: &Target, req: &Request) -> ApiResult<Response> {
    req.reject_dry_run()?;
    let opts = delete_options(req)?;
    let q = ListQuery::parse(req.query.as_deref())?;
    let selectors = Selectors::from_query(t.res, &q)?;
    let (kvs, _) = state.store.list(&t.res.prefix(ns(t))).await?;
    let mut items = Vec::new();
    for kv in &kvs {
        let value = from_kv(t.res, kv)?;
        if !selectors.matches(t.res, &value) {
            continue;
        }
        let item = Target {
            res: t.res,
            namespace: objects::namespace(&value).map(str::to_owned),
            name: objects::name(&value).map(str::to_owned),
            subresource: None,
        };
        match delete_once(state, &item, &opts).await {
            Ok(Deleted::Object(v) | Deleted::Gone(v)) => items.push(v),
            // Gone meanwhile or changed concurrently: not ours to report.
            Err(e) if e.code() == 404 || e.code() == 409 => {}
            Err(e) => return Err(e),
        }
    }
    let revision = state.store.revision().await?;
    Ok(json_reply(
        StatusCode::OK,
        &objects::list(t.res, items, revision),
        &[],
    ))
}

// ---------------------------------------------------------------------------
// Scale

/// The `autoscaling/v1` `Scale` view of a Deployment or ReplicaSet.
fn to_scale(object: &Value) -> Value {
    let meta = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let pick = |k: &str| meta.get(k).cloned().unwrap_or(Value::Null);
    let selector = object
        .pointer("/spec/selector")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .and_then(|s| LabelSelector::from_api(&s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": pick("name"),
            "namespace": pick("namespace"),
            "uid": pick("uid"),
            "resourceVersion": pick("resourceVersion"),
            "creationTimestamp": pick("creationTimestamp"),
        },
        "spec": {"replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// `GET`, `PUT` and `PATCH` of `…/scale`: reads and sets `spec.replicas`.
pub async fn scale(
    state: &AppState,
    t: &Target,
    req: &Request,
    method: &axum::http::Method,
) -> ApiResult<Response> {
    if method == axum::http::Method::GET {
        let (_, object) = load(state, t).await?;
        return Ok(json_reply(StatusCode::OK, &to_scale(&object), &[]));
    }
    req.reject_dry_run()?;
    let patch_type = if method == axum::http::Method::PATCH {
        let ct = req.header(header::CONTENT_TYPE).unwrap_or("");
        match PatchType::from_content_type(ct) {
            Some(PatchType::Apply) | None => {
                return Err(unsupported_media_type(
                    ct,
                    &[
                        PatchType::Json.content_type(),
                        PatchType::Merge.content_type(),
                        PatchType::Strategic.content_type(),
                    ],
                ));
            }
            Some(p) => Some(p),
        }
    } else {
        None
    };
    let mut last = None;
    for _ in 0..RETRIES {
        let (kv, old) = load(state, t).await?;
        let current = to_scale(&old);
        let wanted = match patch_type {
            Some(p) => apply_patch("Scale", &current, p, &req.body)
                .map_err(|e| failure(e.http_status(), e.reason(), &e.to_string(), None))?,
            None => parse_object(req.header(header::CONTENT_TYPE), &req.body)?,
        };
        if let Some(rv) = objects::resource_version(&wanted)
            && rv != kv.mod_revision.to_string()
        {
            return Err(conflict(t.res, item_name(t)));
        }
        let replicas = wanted
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if replicas < 0 {
            return Err(failure(
                422,
                "Invalid",
                &format!(
                    "Scale.autoscaling \"{}\" is invalid: spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0",
                    item_name(t)
                ),
                None,
            ));
        }
        let mut new = old.clone();
        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("replicas".to_owned(), json!(replicas));
        }
        match commit(state, t, kv.mod_revision, old, new, Vec::new()).await {
            Err(e) if e.code() == 409 && e.reason() == "Conflict" && patch_type.is_some() => {
                last = Some(e)
            }
            Err(e) => return Err(e),
            Ok((stored, _)) => {
                return Ok(json_reply(StatusCode::OK, &to_scale(&stored), &[]));
            }
        }
    }
    Err(last.unwrap_or_else(|| conflict(t.res, item_name(t))))
}

// ---------------------------------------------------------------------------
// Binding

/// `POST …/pods/{name}/binding`: assigns the pod to a node.
pub async fn bind(state: &AppState, t: &Target, req: &Request) -> ApiResult<Response> {
    req.reject_dry_run()?;
    let body = parse_object(req.header(header::CONTENT_TYPE), &req.body)?;
    let name = item_name(t);
    if let Some(n) = objects::name(&body)
        && n != name
    {
        return Err(bad_request(&format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    let node = body
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            failure(
                422,
                "Invalid",
                &format!("Binding \"{name}\" is invalid: target.name: Required value"),
                None,
            )
        })?
        .to_owned();
    for _ in 0..RETRIES {
        let (kv, mut pod) = load(state, t).await?;
        if is_deleting(&pod) {
            return Err(binding_conflict(
                name,
                &format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        if let Some(current) = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            return Err(binding_conflict(
                name,
                &format!("pod {name} is already assigned to node \"{current}\""),
            ));
        }
        if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("nodeName".to_owned(), json!(node));
        }
        set_condition(
            &mut pod,
            "PodScheduled",
            "True",
            objects::timestamp(state.config.now()),
        );
        match state
            .store
            .update(
                &t.res.key(ns(t), name),
                to_stored(&pod)?,
                Some(kv.mod_revision),
            )
            .await
        {
            Ok(_) => {
                let status = k8s_openapi::apimachinery::pkg::apis::meta::v1::Status {
                    status: Some("Success".to_owned()),
                    code: Some(201),
                    ..Default::default()
                };
                return Ok(json_reply(
                    StatusCode::CREATED,
                    &serde_json::to_value(&status).unwrap_or_default(),
                    &[],
                ));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound(_)) => return Err(not_found(t.res, name)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(conflict(t.res, name))
}

/// Conflicts of `pods/binding` name the subresource.
fn binding_conflict(name: &str, why: &str) -> ApiError {
    failure(
        409,
        "Conflict",
        &format!("Operation cannot be fulfilled on pods/binding \"{name}\": {why}"),
        Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::StatusDetails {
                name: Some(name.to_owned()),
                kind: Some("pods/binding".to_owned()),
                ..Default::default()
            },
        ),
    )
}

/// Sets (or adds) a pod condition with `lastTransitionTime` on a status change.
fn set_condition(pod: &mut Value, type_: &str, status: &str, now: String) {
    let Some(obj) = pod.as_object_mut() else {
        return;
    };
    let st = obj.entry("status").or_insert_with(|| json!({}));
    let Some(st) = st.as_object_mut() else {
        return;
    };
    let conditions = st.entry("conditions").or_insert_with(|| json!([]));
    let Some(list) = conditions.as_array_mut() else {
        return;
    };
    if let Some(c) = list
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
    {
        if c.get("status").and_then(Value::as_str) != Some(status) {
            c["status"] = json!(status);
            c["lastTransitionTime"] = json!(now);
        }
    } else {
        list.push(json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": now}));
    }
}

/// Seeds the namespaces every cluster has (`default`, `kube-system`, `kube-public`,
/// `kube-node-lease`); existing ones are left alone.
pub async fn seed_namespaces(state: &AppState) -> Result<(), StoreError> {
    let res = namespaces();
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        prepare_create(res, &mut ns, state.config.now());
        // Only defaulting: these names are valid by construction.
        let _ = admission::apply_defaults(res, &mut ns, Operation::Create, &mut Vec::new());
        let bytes = serde_json::to_vec(&ns).map_err(|e| StoreError::Io(e.to_string()))?;
        match state.store.create(&res.key(None, name), bytes).await {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Chooses the ClusterIP of a Service being created (the caller holds the lock).
async fn assign_cluster_ip(
    state: &AppState,
    res: &ResourceInfo,
    service: &mut Value,
) -> ApiResult<()> {
    let request = ipalloc::request_of(service);
    if request == ipalloc::Request::None {
        if service.get("spec").is_some() {
            ipalloc::record(service, None);
        }
        return Ok(());
    }
    let (stored, _) = state.store.list(&res.prefix(None)).await?;
    // A Service of the same name is not a competitor: its create ends in AlreadyExists.
    let own_key = res.key(
        objects::namespace(service),
        objects::name(service).unwrap_or(""),
    );
    let objects: Vec<Value> = stored
        .iter()
        .filter(|kv| kv.key != own_key)
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect();
    let used = ipalloc::used_addresses(objects.iter());
    let seed = rand_seed();
    match ipalloc::allocate(&state.config.service_cidr, &request, &used, seed) {
        Ok(ip) => {
            if service.get("spec").is_none()
                && let Some(obj) = service.as_object_mut()
            {
                obj.insert("spec".to_owned(), json!({}));
            }
            ipalloc::record(service, ip);
            Ok(())
        }
        Err(e) => {
            let value = match &request {
                ipalloc::Request::Specific(ip) => ip.clone(),
                _ => String::new(),
            };
            Err(cluster_ip_error(res, service, value, &e.to_string()))
        }
    }
}

/// A 422 on `spec.clusterIPs[0]`.
fn cluster_ip_error(res: &ResourceInfo, service: &Value, value: String, why: &str) -> ApiError {
    let path = api::validation::FieldPath::new("spec")
        .child("clusterIPs")
        .index(0);
    let err = api::validation::ValidationError::new(
        &res.qualified_kind(),
        objects::name(service).unwrap_or(""),
        vec![api::validation::FieldError::invalid(&path, value, why)],
    );
    invalid(res, &err)
}

/// A cheap per-call seed that spreads dynamic addresses over the range.
fn rand_seed() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos.wrapping_mul(2_654_435_761)
}
