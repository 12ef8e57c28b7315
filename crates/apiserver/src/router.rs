//! Request routing. Kubernetes paths form a small grammar
//! (`/api/v1/namespaces/{ns}/{plural}/{name}/{sub}`, `/apis/{group}/{version}/…`),
//! so one handler parses them against the resource registry.

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::crud::{self, Request, Target};
use crate::discovery;
use crate::render::json_reply;
use crate::resources::{ResourceInfo, lookup};
use crate::state::AppState;
use crate::status::{ApiResult, failure, method_not_allowed, no_route, not_found};

/// Kubernetes' limit on request bodies (3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// The API as an axum router, without authentication or TLS (see [`crate::serve`]).
pub fn router(state: AppState) -> Router {
    Router::new()
        // Upgraded to a WebSocket, so not through `dispatch` (which reads the body).
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/exec",
            axum::routing::any(crate::exec::handle),
        )
        .fallback(dispatch)
        .with_state(state)
}

async fn dispatch(State(state): State<AppState>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return failure(
                413,
                "RequestEntityTooLarge",
                "the request body is too large (at most 3 MiB)",
                None,
            )
            .into_response();
        }
    };
    let request = Request {
        headers: parts.headers,
        query: parts.uri.query().map(str::to_owned),
        body,
    };
    let path = parts.uri.path();
    tracing::debug!(method = %parts.method, path, query = ?request.query, "request");
    match route(&state, &parts.method, path, &request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

fn only_get(method: &Method) -> ApiResult<()> {
    if method == Method::GET || method == Method::HEAD {
        Ok(())
    } else {
        Err(method_not_allowed(&format!(
            "the server does not allow this method on the requested resource ({method})"
        )))
    }
}

async fn route(
    state: &AppState,
    method: &Method,
    path: &str,
    req: &Request,
) -> ApiResult<Response> {
    let trimmed = path.trim_matches('/');
    let segments: Vec<&str> = if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    };
    let accept = req
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    match segments.as_slice() {
        [] => {
            only_get(method)?;
            Ok(root_paths())
        }
        ["version"] => {
            only_get(method)?;
            Ok(discovery::version())
        }
        ["healthz" | "livez" | "readyz", ..] => {
            only_get(method)?;
            Ok(discovery::health())
        }
        ["api"] => {
            only_get(method)?;
            Ok(discovery::api_root(state, accept))
        }
        ["apis"] => {
            only_get(method)?;
            Ok(discovery::apis_root(accept))
        }
        ["openapi", "v3"] => {
            only_get(method)?;
            Ok(discovery::openapi_root())
        }
        ["openapi", "v3", rest @ ..] => {
            only_get(method)?;
            discovery::openapi_group_version(&rest.join("/"))
        }
        ["api", version, rest @ ..] => resource_route(state, method, "", version, rest, req).await,
        ["apis", group] => {
            only_get(method)?;
            discovery::group(group)
        }
        ["apis", group, version, rest @ ..] => {
            resource_route(state, method, group, version, rest, req).await
        }
        _ => Err(no_route()),
    }
}

fn root_paths() -> Response {
    let mut paths = vec![
        "/api".to_owned(),
        "/api/v1".to_owned(),
        "/apis".to_owned(),
        "/healthz".to_owned(),
        "/livez".to_owned(),
        "/openapi/v3".to_owned(),
        "/readyz".to_owned(),
        "/version".to_owned(),
    ];
    for g in crate::resources::GROUPS {
        paths.push(format!("/apis/{g}"));
    }
    for (g, _, gv) in crate::resources::API_VERSIONS {
        if !g.is_empty() {
            paths.push(format!("/apis/{gv}"));
        }
    }
    paths.sort();
    json_reply(StatusCode::OK, &json!({ "paths": paths }), &[])
}

/// Splits the part of a path after `/api/v1` or `/apis/{g}/{v}` into a target.
fn parse_target(group: &str, version: &str, rest: &[&str]) -> ApiResult<Target> {
    let namespaced = |plural: &str| -> Option<&'static ResourceInfo> {
        lookup(group, version, plural).filter(|r| r.namespaced)
    };
    let (res, namespace, tail): (&'static ResourceInfo, Option<String>, &[&str]) = match rest {
        ["namespaces", ns, plural, tail @ ..] if namespaced(plural).is_some() => (
            namespaced(plural).ok_or_else(no_route)?,
            Some((*ns).to_owned()),
            tail,
        ),
        [plural, tail @ ..] => (
            lookup(group, version, plural).ok_or_else(no_route)?,
            None,
            tail,
        ),
        [] => return Err(no_route()),
    };
    let (name, subresource) = match tail {
        [] => (None, None),
        [name] => (Some((*name).to_owned()), None),
        [name, sub] => (Some((*name).to_owned()), Some((*sub).to_owned())),
        _ => return Err(no_route()),
    };
    // Objects of namespaced resources are only addressed within a namespace.
    if res.namespaced && namespace.is_none() && name.is_some() {
        return Err(no_route());
    }
    if let Some(sub) = &subresource
        && res.subresource(sub).is_none()
    {
        return Err(no_route());
    }
    Ok(Target {
        res,
        namespace,
        name,
        subresource,
    })
}

async fn resource_route(
    state: &AppState,
    method: &Method,
    group: &str,
    version: &str,
    rest: &[&str],
    req: &Request,
) -> ApiResult<Response> {
    if rest.is_empty() {
        only_get(method)?;
        return discovery::resource_list(group, version);
    }
    let target = parse_target(group, version, rest)?;
    let not_allowed = || {
        method_not_allowed(&format!(
            "the server does not allow this method on the requested resource ({method})"
        ))
    };
    let all_namespaces = target.res.namespaced && target.namespace.is_none();
    match (target.name.as_deref(), target.subresource.as_deref()) {
        (None, _) => match *method {
            Method::GET => crud::list(state, &target, req).await,
            Method::POST if !all_namespaces => crud::create(state, &target, req).await,
            Method::DELETE if !all_namespaces => crud::delete_collection(state, &target, req).await,
            _ => Err(not_allowed()),
        },
        (Some(_), None) => match *method {
            Method::GET => crud::get(state, &target, req).await,
            Method::PUT => crud::update(state, &target, req).await,
            Method::PATCH => crud::patch(state, &target, req).await,
            Method::DELETE => crud::delete(state, &target, req).await,
            _ => Err(not_allowed()),
        },
        (Some(name), Some("log")) => {
            only_get(method)?;
            let q = crate::logs::LogQuery::parse(req.query.as_deref())?;
            let namespace = target.namespace.as_deref().unwrap_or("");
            Ok(crate::logs::log_response(state, namespace, name, q).await)
        }
        (Some(_), Some("binding")) => match *method {
            Method::POST => crud::bind(state, &target, req).await,
            _ => Err(not_allowed()),
        },
        (Some(_), Some("status")) => match *method {
            Method::GET => crud::get(state, &target, req).await,
            Method::PUT => crud::update(state, &target, req).await,
            Method::PATCH => crud::patch(state, &target, req).await,
            _ => Err(not_allowed()),
        },
        (Some(_), Some("scale")) => match *method {
            Method::GET | Method::PUT | Method::PATCH => {
                crud::scale(state, &target, req, method).await
            }
            _ => Err(not_allowed()),
        },
        (Some(_), Some("token")) => match *method {
            Method::POST => crate::tokens::create(state, &target, req).await,
            _ => Err(not_allowed()),
        },
        (Some(_), Some("finalize")) => match *method {
            Method::PUT => crud::update(state, &target, req).await,
            _ => Err(not_allowed()),
        },
        (Some(name), Some(_)) => Err(not_found(target.res, name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_targets() {
        let t = parse_target("", "v1", &["namespaces", "default", "pods", "web", "log"])
            .expect("pod log");
        assert_eq!(t.res.plural, "pods");
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("web"));
        assert_eq!(t.subresource.as_deref(), Some("log"));

        let t = parse_target("", "v1", &["namespaces", "demo"]).expect("namespace item");
        assert_eq!(t.res.plural, "namespaces");
        assert_eq!(t.name.as_deref(), Some("demo"));

        let t =
            parse_target("", "v1", &["namespaces", "demo", "status"]).expect("namespace status");
        assert_eq!(t.res.plural, "namespaces");
        assert_eq!(t.subresource.as_deref(), Some("status"));

        let t = parse_target("", "v1", &["pods"]).expect("all pods");
        assert!(t.namespace.is_none() && t.name.is_none());

        let t =
            parse_target("apps", "v1", &["namespaces", "a", "deployments"]).expect("deployments");
        assert_eq!(t.res.kind, "Deployment");

        assert!(parse_target("", "v1", &["pods", "web"]).is_err());
        assert!(parse_target("", "v1", &["namespaces", "a", "pods", "w", "exec"]).is_err());
        assert!(parse_target("", "v1", &["widgets"]).is_err());
    }
}
