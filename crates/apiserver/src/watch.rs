//! `GET <collection>?watch=true`: a chunked stream of `{"type":…,"object":…}` lines.
//!
//! Follows the API server's watch cache: a numeric `resourceVersion` resumes after it;
//! an empty one or `"0"` first sends the current objects as `ADDED`; watch-list
//! (`sendInitialEvents=true`) ends those with the `k8s.io/initial-events-end` bookmark;
//! selectors turn updates that enter or leave the selection into `ADDED` / `DELETED`;
//! a history that no longer reaches back ends the stream with a 410 `ERROR` event.

use std::collections::VecDeque;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};
use serde_json::{Value, json};
use store::{KeyValue, Revision, StoreError, WatchEvent};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::crud::Selectors;
use crate::objects;
use crate::query::{IncludeObject, ListQuery, Render};
use crate::render;
use crate::resources::ResourceInfo;
use crate::state::AppState;
use crate::status::{ApiError, bad_request, failure};

/// The annotation on the bookmark that ends a watch-list's initial events.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// Answers a watch request with an event stream, or a `Status` error.
pub async fn watch_response(
    state: &AppState,
    res: &'static ResourceInfo,
    namespace: Option<&str>,
    q: &ListQuery,
    render: Render,
) -> Response {
    match WatchStream::start(state, res, namespace, q, render).await {
        Ok(stream) => {
            let body = Body::from_stream(futures::stream::unfold(stream, |mut s| async move {
                s.next_chunk()
                    .await
                    .map(|chunk| (Ok::<_, std::io::Error>(chunk), s))
            }));
            let mut response = (StatusCode::OK, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => e.into_response(),
    }
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// The current objects as `ADDED`, then changes after them.
    Current,
    /// Changes after this revision.
    After(Revision),
    /// Changes from now on.
    Now,
}

/// 422 for watch-list parameters Kubernetes does not accept together.
fn check_watch_list(q: &ListQuery) -> Result<(), ApiError> {
    let mut errors: Vec<(&str, String)> = Vec::new();
    let not_older = q.resource_version_match.as_deref() == Some("NotOlderThan");
    if q.send_initial_events.is_some() && !not_older {
        errors.push((
            "resourceVersionMatch",
            "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
                .to_owned(),
        ));
    }
    if let Some(m) = q.resource_version_match.as_deref() {
        if q.send_initial_events.is_none() {
            errors.push((
                "resourceVersionMatch",
                "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"
                    .to_owned(),
            ));
        }
        if m != "NotOlderThan" {
            errors.push((
                "resourceVersionMatch",
                format!("Unsupported value: \"{m}\": supported values: \"NotOlderThan\""),
            ));
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    let text: Vec<String> = errors.iter().map(|(f, m)| format!("{f}: {m}")).collect();
    let joined = if text.len() == 1 {
        text[0].clone()
    } else {
        format!("[{}]", text.join(", "))
    };
    Err(failure(
        422,
        "Invalid",
        &format!("ListOptions.meta.k8s.io \"\" is invalid: {joined}"),
        Some(StatusDetails {
            group: Some("meta.k8s.io".to_owned()),
            kind: Some("ListOptions".to_owned()),
            causes: Some(
                errors
                    .iter()
                    .map(|(f, m)| StatusCause {
                        field: Some((*f).to_owned()),
                        message: Some(m.clone()),
                        reason: Some(
                            if m.starts_with("Unsupported") {
                                "FieldValueNotSupported"
                            } else {
                                "FieldValueForbidden"
                            }
                            .to_owned(),
                        ),
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
    ))
}

struct WatchStream {
    state: AppState,
    res: &'static ResourceInfo,
    prefix: String,
    filter: Selectors,
    render: Render,
    /// Current objects still to send as `ADDED`.
    initial: VecDeque<KeyValue>,
    /// Whether the initial-events-end bookmark is still to send.
    initial_end: bool,
    watch: Option<store::Watch>,
    /// The newest revision the client has seen all changes up to.
    last: Revision,
    bookmarks: Option<Interval>,
    allow_bookmarks: bool,
    deadline: Option<Instant>,
    /// Output decided ahead of the store (the 410 `ERROR` event).
    queued: VecDeque<Bytes>,
    done: bool,
}

impl WatchStream {
    async fn start(
        state: &AppState,
        res: &'static ResourceInfo,
        namespace: Option<&str>,
        q: &ListQuery,
        render: Render,
    ) -> Result<WatchStream, ApiError> {
        check_watch_list(q)?;
        let filter = Selectors::from_query(res, q)?;
        let rv = q.resource_version.as_deref().unwrap_or("");
        let start = match (q.send_initial_events, rv) {
            (Some(true), _) | (None, "" | "0") => Start::Current,
            (Some(false), "" | "0") => Start::Now,
            (_, n) => Start::After(
                n.parse()
                    .map_err(|_| bad_request(&format!("invalid resource version {n:?}")))?,
            ),
        };
        let prefix = res.prefix(namespace);
        let deadline = q
            .timeout_seconds
            .map(|s| Instant::now() + Duration::from_secs(s));
        let bookmarks = q.allow_watch_bookmarks.then(|| {
            let period = state.config.bookmark_interval.max(Duration::from_millis(1));
            let mut tick = tokio::time::interval_at(Instant::now() + period, period);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            tick
        });
        let mut stream = WatchStream {
            state: state.clone(),
            res,
            prefix,
            filter,
            render,
            initial: VecDeque::new(),
            initial_end: q.send_initial_events == Some(true),
            watch: None,
            last: 0,
            bookmarks,
            allow_bookmarks: q.allow_watch_bookmarks,
            deadline,
            queued: VecDeque::new(),
            done: false,
        };
        let after = match start {
            Start::Current => {
                let (items, revision) = stream.state.store.list(&stream.prefix).await?;
                stream.initial = items.into();
                revision
            }
            Start::After(n) => n,
            Start::Now => stream.state.store.revision().await?,
        };
        stream.last = after;
        match stream.state.store.watch(&stream.prefix, after).await {
            Ok(w) => stream.watch = Some(w),
            // Too old: the stream carries one 410 ERROR event (informers then relist).
            Err(e @ StoreError::Expired { .. }) => {
                stream.initial.clear();
                stream.initial_end = false;
                stream.fail(e.into());
            }
            Err(e) => return Err(e.into()),
        }
        Ok(stream)
    }

    /// The next line of the stream, or None when it ends.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if let Some(chunk) = self.queued.pop_front() {
                return Some(chunk);
            }
            if self.done || self.deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            if let Some(kv) = self.initial.pop_front() {
                if let Some(obj) = self.object(&kv.value, kv.mod_revision)
                    && self.filter.matches(self.res, &obj)
                {
                    return Some(self.event("ADDED", obj));
                }
                continue;
            }
            if self.initial_end {
                self.initial_end = false;
                return Some(self.bookmark(true));
            }
            let Some(watch) = self.watch.as_mut() else {
                self.done = true;
                continue;
            };
            let next = tokio::select! {
                event = watch.next() => Next::Store(event),
                () = tick(&mut self.bookmarks) => Next::Bookmark,
                () = sleep_until(self.deadline) => Next::Timeout,
            };
            match next {
                Next::Timeout => self.done = true,
                Next::Bookmark => return Some(self.bookmark(false)),
                // The store closed (shutting down): end the stream; clients watch again.
                Next::Store(None) => self.done = true,
                Next::Store(Some(Ok(event))) => {
                    if let Some(chunk) = self.convert(event) {
                        return Some(chunk);
                    }
                }
                Next::Store(Some(Err(e @ StoreError::Expired { .. }))) => self.fail(e.into()),
                Next::Store(Some(Err(e))) => {
                    // The store ended this watch (e.g. it fell behind): resume where the
                    // client is, so it misses nothing.
                    tracing::debug!(prefix = %self.prefix, "watch ended by the store: {e}; resuming");
                    match self.state.store.watch(&self.prefix, self.last).await {
                        Ok(w) => self.watch = Some(w),
                        Err(e @ StoreError::Expired { .. }) => self.fail(e.into()),
                        Err(e) => {
                            tracing::warn!(prefix = %self.prefix, "cannot resume a watch: {e}");
                            self.done = true;
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream with an `ERROR` event carrying `err`'s `Status`.
    fn fail(&mut self, err: ApiError) {
        self.queued
            .push_back(line(&json!({"type": "ERROR", "object": err.to_value()})));
        self.watch = None;
        self.done = true;
    }

    /// The watch event for one store event, if the client should see it.
    fn convert(&mut self, event: WatchEvent) -> Option<Bytes> {
        match event {
            WatchEvent::Put { kv, prev } => {
                let revision = kv.mod_revision;
                self.last = self.last.max(revision);
                let cur = self.object(&kv.value, revision);
                let cur_in = cur
                    .as_ref()
                    .is_some_and(|o| self.filter.matches(self.res, o));
                // Without a selector an object never leaves the selection: the old one
                // is not needed (nor decoded, which would double the work per event).
                if self.filter.is_everything() {
                    let kind = if prev.is_some() { "MODIFIED" } else { "ADDED" };
                    return cur.map(|o| self.event(kind, o));
                }
                // The old object as of this revision, as the cacher sends it when it
                // leaves the selection.
                let old = prev.and_then(|p| self.object(&p.value, revision));
                let old_in = old
                    .as_ref()
                    .is_some_and(|o| self.filter.matches(self.res, o));
                match (old_in, cur_in) {
                    (true, true) => cur.map(|o| self.event("MODIFIED", o)),
                    (false, true) => cur.map(|o| self.event("ADDED", o)),
                    (true, false) => old.map(|o| self.event("DELETED", o)),
                    (false, false) => None,
                }
            }
            WatchEvent::Delete { prev, revision } => {
                self.last = self.last.max(revision);
                let old = self.object(&prev.value, revision)?;
                self.filter
                    .matches(self.res, &old)
                    .then(|| self.event("DELETED", old))
            }
            WatchEvent::Progress { revision } => {
                self.last = self.last.max(revision);
                self.allow_bookmarks.then(|| self.bookmark(false))
            }
        }
    }

    /// A stored object as the client sees it: with `kind`, `apiVersion` and the
    /// `resourceVersion` of `revision`.
    fn object(&self, value: &[u8], revision: Revision) -> Option<Value> {
        let mut obj: Value = match serde_json::from_slice(value) {
            Ok(obj @ Value::Object(_)) => obj,
            Ok(_) => {
                tracing::warn!(prefix = %self.prefix, "skipping a stored value that is no object");
                return None;
            }
            Err(e) => {
                tracing::warn!(prefix = %self.prefix, "skipping an undecodable object: {e}");
                return None;
            }
        };
        objects::decorate(self.res, &mut obj, revision);
        Some(obj)
    }

    fn event(&self, kind: &str, obj: Value) -> Bytes {
        let object = match self.render {
            Render::Json => obj,
            Render::Metadata => render::partial_metadata(&obj),
            Render::Table { include } => self.table(obj, include),
        };
        line(&json!({"type": kind, "object": object}))
    }

    /// The one-row Table of `obj`, built like the list's rows (so kubectl's columns
    /// line up) but with no column definitions (kubectl keeps the list's).
    fn table(&self, obj: Value, include: IncludeObject) -> Value {
        let rv = objects::resource_version(&obj).unwrap_or("").to_owned();
        let mut t = render::table(
            self.res,
            std::slice::from_ref(&obj),
            include,
            self.state.config.now(),
            &rv,
        );
        if let Some(t) = t.as_object_mut() {
            t.insert("columnDefinitions".to_owned(), Value::Array(Vec::new()));
        }
        t
    }

    /// A BOOKMARK at the newest revision; `initial_end` marks the end of a watch-list's
    /// initial events.
    fn bookmark(&self, initial_end: bool) -> Bytes {
        let rv = self.last.to_string();
        let object = match self.render {
            Render::Json => {
                let mut meta = json!({"resourceVersion": rv});
                if initial_end {
                    meta["annotations"] = json!({INITIAL_EVENTS_END: "true"});
                }
                json!({"kind": self.res.kind, "apiVersion": self.res.api_version(), "metadata": meta})
            }
            Render::Metadata => {
                let mut meta = json!({"resourceVersion": rv});
                if initial_end {
                    meta["annotations"] = json!({INITIAL_EVENTS_END: "true"});
                }
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
            }
            // Table watchers decode every object as a Table: an empty one carries the
            // revision.
            Render::Table { .. } => json!({
                "kind": "Table",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": rv},
                "columnDefinitions": [],
                "rows": [],
            }),
        };
        line(&json!({"type": "BOOKMARK", "object": object}))
    }
}

enum Next {
    Store(Option<Result<WatchEvent, StoreError>>),
    Bookmark,
    Timeout,
}

/// One event line (serialising a `Value` cannot fail).
fn line(event: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(event).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
