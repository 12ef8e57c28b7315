//! PATCH bodies as the API server applies them: RFC 6902 JSON patch, RFC 7386 JSON
//! merge patch, and Kubernetes' strategic merge patch (what `kubectl apply`, `kubectl
//! patch` and `kubectl edit` send for built-in kinds).
//!
//! Everything works on `serde_json::Value`, so fields this crate does not know about
//! survive a patch unchanged.

mod schema;
mod strategic;
#[cfg(test)]
mod tests;

use serde_json::Value;

/// The PATCH flavours, named after their request `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// The patch type of a request `Content-Type`, ignoring parameters such as
    /// `; charset=utf-8`; `None` for anything else (the server answers 415).
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let media = ct.split(';').next().unwrap_or_default().trim();
        let types = [
            PatchType::Json,
            PatchType::Merge,
            PatchType::Strategic,
            PatchType::Apply,
        ];
        types
            .into_iter()
            .find(|t| t.content_type().eq_ignore_ascii_case(media))
    }

    /// The media type of this patch type.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::Strategic => "application/strategic-merge-patch+json",
            PatchType::Apply => "application/apply-patch+yaml",
        }
    }
}

/// Why a patch could not be applied. The messages are the API server's; see
/// [`PatchError::http_status`] and [`PatchError::reason`] for the `Status` to answer with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatchError {
    /// The body is not a patch of the declared type (not JSON, wrong shape).
    #[error("{0}")]
    InvalidPatch(String),
    /// A JSON patch operation failed (missing path, failed `test`, ...).
    #[error("{0}")]
    JsonPatchFailed(String),
    /// The object being patched is not a JSON object.
    #[error("invalid JSON document")]
    BadJsonDoc,
    #[error("lists of lists are not supported")]
    ListOfLists,
    #[error("invalid patch format of primitive list")]
    PrimitiveListFormat,
    #[error("invalid patch format of retainKeys")]
    RetainKeysFormat,
    #[error("invalid patch format of setElementOrder list")]
    SetElementOrderFormat,
    /// An item of a list merged by key lacks the key (`map` is Go's `%v` of the item).
    #[error("map: {map} does not contain declared merge key: {key}")]
    MissingMergeKey { map: String, key: String },
    /// `$patch` with a value other than `replace`, `delete` or `merge`.
    #[error("unknown patch type: {directive} in map: {map}")]
    UnknownDirective { directive: String, map: String },
    /// Other malformed strategic merge patches (mixed list element types,
    /// `$setElementOrder` contradicting the patch list, ...).
    #[error("{0}")]
    Strategic(String),
    /// The patch type is recognised but not implemented (server-side apply).
    #[error(
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json"
    )]
    Unsupported(PatchType),
}

impl PatchError {
    /// The HTTP status the Kubernetes API server answers with for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            PatchError::InvalidPatch(_)
            | PatchError::BadJsonDoc
            | PatchError::PrimitiveListFormat
            | PatchError::RetainKeysFormat
            | PatchError::SetElementOrderFormat => 400,
            PatchError::JsonPatchFailed(_) | PatchError::ListOfLists => 422,
            PatchError::Unsupported(_) => 415,
            // The API server passes these through unwrapped: a 500 with no reason,
            // which kubectl prints as `Error from server: <message>`.
            PatchError::MissingMergeKey { .. }
            | PatchError::UnknownDirective { .. }
            | PatchError::Strategic(_) => 500,
        }
    }

    /// The `Status.reason` to send with [`PatchError::http_status`] (empty: unknown).
    pub fn reason(&self) -> &'static str {
        match self.http_status() {
            400 => "BadRequest",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            _ => "",
        }
    }
}

/// Applies `patch` (the raw request body) to `original`, a stored object of `kind`
/// (`"Pod"`, `"Deployment"`, ...), and returns the patched object. The caller checks
/// the result (name, kind, validation) as for an update.
pub fn apply_patch(
    kind: &str,
    original: &Value,
    patch_type: PatchType,
    patch: &[u8],
) -> Result<Value, PatchError> {
    match patch_type {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_slice(patch)
                .map_err(|e| PatchError::InvalidPatch(format!("invalid JSON patch: {e}")))?;
            let mut doc = original.clone();
            json_patch::patch(&mut doc, &ops)
                .map_err(|e| PatchError::JsonPatchFailed(e.to_string()))?;
            Ok(doc)
        }
        PatchType::Merge => {
            let patch = parse_object(patch)?;
            if !original.is_object() {
                return Err(PatchError::BadJsonDoc);
            }
            let mut doc = original.clone();
            json_patch::merge(&mut doc, &patch);
            Ok(doc)
        }
        PatchType::Strategic => strategic::apply(kind, original, parse_object(patch)?),
        PatchType::Apply => Err(PatchError::Unsupported(PatchType::Apply)),
    }
}

/// A merge or strategic patch must be a JSON object: the whole object is patched.
fn parse_object(body: &[u8]) -> Result<Value, PatchError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| PatchError::InvalidPatch(format!("invalid JSON in patch: {e}")))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(PatchError::InvalidPatch(format!(
            "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            go_json_type(&value)
        )))
    }
}

/// How Go's `encoding/json` names a JSON value's type in unmarshal errors.
fn go_json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
