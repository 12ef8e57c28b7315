//! Errors as Kubernetes `Status` objects, with the reasons, codes and messages a
//! real API server uses (kubectl prints them verbatim).

use api::validation::ValidationError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};
use serde_json::Value;

use crate::resources::ResourceInfo;

/// A request that failed, carried to the client as a `Status` body.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} ({})", .0.message.as_deref().unwrap_or(""), .0.code.unwrap_or(500))]
pub struct ApiError(pub Box<Status>);

/// Handler results.
pub type ApiResult<T> = Result<T, ApiError>;

impl From<Status> for ApiError {
    fn from(status: Status) -> Self {
        ApiError(Box::new(status))
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::Expired { requested, oldest } => {
                expired(&format!("too old resource version: {requested} ({oldest})"))
            }
            other => internal(&other.to_string()),
        }
    }
}

impl ApiError {
    pub fn code(&self) -> u16 {
        self.0
            .code
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(500)
    }

    pub fn reason(&self) -> &str {
        self.0.reason.as_deref().unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.0.message.as_deref().unwrap_or("")
    }

    /// The `Status` as JSON (with `kind` and `apiVersion`), e.g. for a watch `ERROR` event.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(&*self.0).unwrap_or(Value::Null)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&*self.0).unwrap_or_default();
        let mut response = (code, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// A `Failure` status with the given code, reason and message.
pub fn failure(code: u16, reason: &str, message: &str, details: Option<StatusDetails>) -> ApiError {
    ApiError(Box::new(Status {
        code: Some(i32::from(code)),
        details,
        message: Some(message.to_owned()),
        metadata: Default::default(),
        reason: (!reason.is_empty()).then(|| reason.to_owned()),
        status: Some("Failure".to_owned()),
    }))
}

fn details(res: &ResourceInfo, name: &str) -> StatusDetails {
    StatusDetails {
        group: (!res.group.is_empty()).then(|| res.group.to_owned()),
        kind: Some(res.plural.to_owned()),
        name: (!name.is_empty()).then(|| name.to_owned()),
        ..Default::default()
    }
}

/// `pods "web" not found`.
pub fn not_found(res: &ResourceInfo, name: &str) -> ApiError {
    failure(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", res.qualified_resource()),
        Some(details(res, name)),
    )
}

/// `namespaces "x" not found`, for objects created in a missing namespace.
pub fn namespace_not_found(namespace: &str) -> ApiError {
    failure(
        404,
        "NotFound",
        &format!("namespaces \"{namespace}\" not found"),
        Some(StatusDetails {
            kind: Some("namespaces".to_owned()),
            name: Some(namespace.to_owned()),
            ..Default::default()
        }),
    )
}

/// A path that matches no resource (`the server could not find the requested resource`).
pub fn no_route() -> ApiError {
    failure(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(StatusDetails::default()),
    )
}

/// `pods "web" already exists`.
pub fn already_exists(res: &ResourceInfo, name: &str) -> ApiError {
    failure(
        409,
        "AlreadyExists",
        &format!("{} \"{name}\" already exists", res.qualified_resource()),
        Some(details(res, name)),
    )
}

/// The optimistic-concurrency failure of an update with a stale resourceVersion.
pub fn conflict(res: &ResourceInfo, name: &str) -> ApiError {
    conflict_with(
        res,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )
}

/// `Operation cannot be fulfilled on pods "x": <why>`.
pub fn conflict_with(res: &ResourceInfo, name: &str, why: &str) -> ApiError {
    failure(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            res.qualified_resource()
        ),
        Some(details(res, name)),
    )
}

/// 422 `Invalid` with one cause per field error.
pub fn invalid(res: &ResourceInfo, err: &ValidationError) -> ApiError {
    let causes = err
        .errors()
        .iter()
        .map(|e| StatusCause {
            field: Some(e.path.clone()),
            message: Some(e.body()),
            reason: Some(e.kind.reason().to_owned()),
        })
        .collect();
    failure(
        422,
        "Invalid",
        &err.to_string(),
        Some(StatusDetails {
            causes: Some(causes),
            group: (!res.group.is_empty()).then(|| res.group.to_owned()),
            kind: Some(err.kind.clone()),
            name: Some(err.name.clone()),
            ..Default::default()
        }),
    )
}

pub fn bad_request(message: &str) -> ApiError {
    failure(400, "BadRequest", message, None)
}

pub fn method_not_allowed(message: &str) -> ApiError {
    failure(
        405,
        "MethodNotAllowed",
        message,
        Some(StatusDetails::default()),
    )
}

/// The reply to a body type the endpoint does not take.
pub fn unsupported_media_type(content_type: &str, accepted: &[&str]) -> ApiError {
    failure(
        415,
        "UnsupportedMediaType",
        &format!(
            "the body of the request was in an unknown format - accepted media types include: {}",
            accepted.join(", ")
        ),
        Some(StatusDetails {
            causes: Some(vec![StatusCause {
                field: None,
                message: Some(format!("unsupported media type {content_type:?}")),
                reason: None,
            }]),
            ..Default::default()
        }),
    )
}

pub fn not_acceptable(message: &str) -> ApiError {
    failure(406, "NotAcceptable", message, None)
}

pub fn unauthorized() -> ApiError {
    failure(401, "Unauthorized", "Unauthorized", None)
}

pub fn forbidden(res: &ResourceInfo, name: &str, why: &str) -> ApiError {
    let subject = if name.is_empty() {
        res.qualified_resource()
    } else {
        format!("{} \"{name}\"", res.qualified_resource())
    };
    failure(
        403,
        "Forbidden",
        &format!("{subject} is forbidden: {why}"),
        Some(details(res, name)),
    )
}

/// 410 `Expired` (a watch or list from a compacted resourceVersion).
pub fn expired(message: &str) -> ApiError {
    failure(410, "Expired", message, None)
}

pub fn internal(message: &str) -> ApiError {
    failure(
        500,
        "InternalError",
        &format!("Internal error occurred: {message}"),
        Some(StatusDetails {
            causes: Some(vec![StatusCause {
                message: Some(message.to_owned()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    )
}

/// The `Success` status some deletes answer with.
pub fn success(res: &ResourceInfo, name: &str, uid: Option<&str>) -> Status {
    Status {
        details: Some(StatusDetails {
            uid: uid.map(str::to_owned),
            ..details(res, name)
        }),
        status: Some("Success".to_owned()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::lookup;

    #[test]
    fn not_found_matches_kubernetes_body() {
        let pods = lookup("", "v1", "pods").expect("pods");
        let v = not_found(pods, "nope").to_value();
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["message"], "pods \"nope\" not found");
        assert_eq!(v["reason"], "NotFound");
        assert_eq!(v["details"]["name"], "nope");
        assert_eq!(v["details"]["kind"], "pods");
        assert_eq!(v["code"], 404);
        let deploy = lookup("apps", "v1", "deployments").expect("deployments");
        let v = not_found(deploy, "web").to_value();
        assert_eq!(v["message"], "deployments.apps \"web\" not found");
        assert_eq!(v["details"]["group"], "apps");
    }
}
