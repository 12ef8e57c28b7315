//! Query parameters of list/watch requests, and the representation a client asks
//! for in `Accept` (plain JSON or a `meta.k8s.io/v1` Table).

use crate::status::{ApiError, bad_request, not_acceptable};

pub use api::table::IncludeObject;

/// The query of a list or watch (`GET <collection>?…`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    /// `None` when absent; `Some("")` when sent empty (kubectl does that).
    pub resource_version: Option<String>,
    /// `NotOlderThan` or `Exact`.
    pub resource_version_match: Option<String>,
    pub watch: bool,
    pub allow_watch_bookmarks: bool,
    pub send_initial_events: Option<bool>,
    pub timeout_seconds: Option<u64>,
    pub limit: Option<i64>,
    pub continue_token: Option<String>,
}

impl ListQuery {
    /// Parses a raw query string (without `?`).
    pub fn parse(query: Option<&str>) -> Result<ListQuery, ApiError> {
        let mut q = ListQuery::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let value = value.into_owned();
            match key.as_ref() {
                "labelSelector" => q.label_selector = Some(value),
                "fieldSelector" => q.field_selector = Some(value),
                "resourceVersion" => q.resource_version = Some(value),
                "resourceVersionMatch" => {
                    if !value.is_empty() && value != "NotOlderThan" && value != "Exact" {
                        return Err(bad_request(&format!(
                            "resourceVersionMatch: Unsupported value: \"{value}\": supported values: \"Exact\", \"NotOlderThan\""
                        )));
                    }
                    q.resource_version_match = (!value.is_empty()).then_some(value);
                }
                "watch" => q.watch = parse_bool("watch", &value)?,
                "allowWatchBookmarks" => {
                    q.allow_watch_bookmarks = parse_bool("allowWatchBookmarks", &value)?
                }
                "sendInitialEvents" => {
                    q.send_initial_events = Some(parse_bool("sendInitialEvents", &value)?)
                }
                "timeoutSeconds" => {
                    let secs: i64 = value.parse().map_err(|_| {
                        bad_request(&format!("timeoutSeconds: invalid value {value:?}"))
                    })?;
                    q.timeout_seconds = u64::try_from(secs).ok().filter(|s| *s > 0);
                }
                "limit" => {
                    let limit: i64 = value
                        .parse()
                        .map_err(|_| bad_request(&format!("limit: invalid value {value:?}")))?;
                    q.limit = (limit > 0).then_some(limit);
                }
                "continue" => q.continue_token = (!value.is_empty()).then_some(value),
                _ => {}
            }
        }
        Ok(q)
    }
}

/// Go's `strconv.ParseBool`, which Kubernetes uses for query booleans.
pub fn parse_bool(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" | "" => Ok(false),
        _ => Err(bad_request(&format!(
            "{name}: invalid boolean value {value:?}"
        ))),
    }
}

/// How to render objects in a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Render {
    Json,
    Table {
        include: IncludeObject,
    },
    /// `PartialObjectMetadata(List)`: only kind, apiVersion and metadata (what metadata
    /// informers such as kube-runtime's `owns()` ask for).
    Metadata,
}

impl Render {
    /// Negotiates from the `Accept` header and the `includeObject` query parameter.
    ///
    /// The first acceptable media range wins, as in Kubernetes. Protobuf and other
    /// encodings are skipped (JSON is always possible); an `Accept` that names only
    /// representations we do not serve gets 406.
    pub fn negotiate(accept: Option<&str>, query: Option<&str>) -> Result<Render, ApiError> {
        let include = include_object(query)?;
        let Some(accept) = accept.map(str::trim).filter(|a| !a.is_empty()) else {
            return Ok(Render::Json);
        };
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let mut as_ = None;
            let mut g = None;
            let mut v = None;
            for p in parts {
                if let Some((k, val)) = p.split_once('=') {
                    let val = val.trim().trim_matches('"');
                    match k.trim() {
                        "as" => as_ = Some(val),
                        "g" => g = Some(val),
                        "v" => v = Some(val),
                        _ => {}
                    }
                }
            }
            if !matches!(media.as_str(), "application/json" | "application/*" | "*/*") {
                continue;
            }
            match as_ {
                None => return Ok(Render::Json),
                Some("Table")
                    if g == Some("meta.k8s.io") && matches!(v, Some("v1") | Some("v1beta1")) =>
                {
                    return Ok(Render::Table {
                        include: include.unwrap_or(IncludeObject::Metadata),
                    });
                }
                Some("PartialObjectMetadata" | "PartialObjectMetadataList")
                    if g == Some("meta.k8s.io") && matches!(v, Some("v1") | Some("v1beta1")) =>
                {
                    return Ok(Render::Metadata);
                }
                // Other representations are not served: try the next range.
                Some(_) => continue,
            }
        }
        Err(not_acceptable(&format!(
            "only the following media types are accepted: application/json, application/json;as=Table;v=v1;g=meta.k8s.io, application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io (got {accept:?})"
        )))
    }
}

fn include_object(query: Option<&str>) -> Result<Option<IncludeObject>, ApiError> {
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if key == "includeObject" {
            return IncludeObject::from_query(&value).map(Some).ok_or_else(|| {
                bad_request(&format!(
                    "includeObject: Unsupported value: \"{value}\": supported values: \"Metadata\", \"None\", \"Object\""
                ))
            });
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubectl_watch_list_query() {
        let q = ListQuery::parse(Some(
            "allowWatchBookmarks=true&fieldSelector=metadata.name%3Dw2&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&timeoutSeconds=30&watch=true",
        ))
        .expect("parses");
        assert!(q.watch);
        assert!(q.allow_watch_bookmarks);
        assert_eq!(q.send_initial_events, Some(true));
        assert_eq!(q.field_selector.as_deref(), Some("metadata.name=w2"));
        assert_eq!(q.resource_version_match.as_deref(), Some("NotOlderThan"));
        assert_eq!(q.timeout_seconds, Some(30));
        assert_eq!(q.resource_version, None);
    }

    #[test]
    fn empty_resource_version_is_kept_apart_from_absent() {
        let q = ListQuery::parse(Some("resourceVersion=&watch=1&limit=500")).expect("parses");
        assert_eq!(q.resource_version.as_deref(), Some(""));
        assert!(q.watch);
        assert_eq!(q.limit, Some(500));
        assert!(ListQuery::parse(Some("watch=maybe")).is_err());
        assert!(ListQuery::parse(Some("resourceVersionMatch=Newest")).is_err());
    }

    #[test]
    fn table_is_chosen_from_kubectl_accept() {
        let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(
            Render::negotiate(Some(accept), None).expect("ok"),
            Render::Table {
                include: IncludeObject::Metadata
            }
        );
        assert_eq!(
            Render::negotiate(Some(accept), Some("includeObject=Object&limit=500")).expect("ok"),
            Render::Table {
                include: IncludeObject::Object
            }
        );
        assert_eq!(
            Render::negotiate(Some("application/json, */*"), None).expect("ok"),
            Render::Json
        );
        assert_eq!(
            Render::negotiate(
                Some("application/vnd.kubernetes.protobuf,application/json"),
                None
            )
            .expect("ok"),
            Render::Json
        );
        assert_eq!(Render::negotiate(None, None).expect("ok"), Render::Json);
        assert_eq!(
            Render::negotiate(
                Some("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
                None,
            )
            .expect("metadata informers are served"),
            Render::Metadata
        );
        let err = Render::negotiate(Some("application/json;as=Other;g=example.com;v=v1"), None)
            .expect_err("not served");
        assert_eq!(err.code(), 406);
    }
}
