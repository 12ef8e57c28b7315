//! Validation with Kubernetes' field paths and messages
//! (`k8s.io/apimachinery/pkg/util/validation/field` and
//! `pkg/apis/core/validation`), so a user sees what a real API server says.
//!
//! Validation expects a defaulted object (see [`crate::defaults`]), as the API
//! server validates after defaulting: on a raw pod it reports missing defaults
//! such as `imagePullPolicy: Required value`.

pub mod names;
mod pod;

use std::fmt;

pub use pod::{pod_warnings, validate_object_meta, validate_pod, validate_pod_spec};

use k8s_openapi::api::core::v1::PodSpec;

/// Feature gates that change validation. Defaults are those of Kubernetes 1.33.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureGates {
    /// `SidecarContainers` (GA in 1.33). When off, the API server drops an init
    /// container's `restartPolicy` before validation (see [`drop_disabled_fields`]).
    pub sidecar_containers: bool,
    /// `RelaxedEnvironmentVariableValidation` (beta, on): any printable ASCII but `=`.
    pub relaxed_environment_variable_validation: bool,
    /// `PodLifecycleSleepActionAllowZero` (beta, on): `sleep.seconds: 0` is valid.
    pub pod_lifecycle_sleep_action_allow_zero: bool,
    /// Whether init containers may carry a `resizePolicy` (off in 1.33).
    pub sidecar_resize_policy: bool,
}

impl Default for FeatureGates {
    fn default() -> Self {
        FeatureGates {
            sidecar_containers: true,
            relaxed_environment_variable_validation: true,
            pod_lifecycle_sleep_action_allow_zero: true,
            sidecar_resize_policy: false,
        }
    }
}

/// What the API server does to a new pod spec for disabled features
/// (`DropDisabledPodFields`): with `SidecarContainers` off, init containers lose
/// their `restartPolicy` and so run as regular init containers.
pub fn drop_disabled_fields(spec: &mut PodSpec, gates: &FeatureGates) {
    if !gates.sidecar_containers {
        for c in spec.init_containers.iter_mut().flatten() {
            c.restart_policy = None;
        }
    }
}

/// A field path as Kubernetes prints it: `spec.containers[0].ports[1].name`,
/// map keys as `metadata.labels[app]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath(String);

impl FieldPath {
    pub fn new(root: &str) -> Self {
        FieldPath(root.to_owned())
    }

    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            FieldPath(name.to_owned())
        } else {
            FieldPath(format!("{}.{name}", self.0))
        }
    }

    pub fn index(&self, i: usize) -> Self {
        FieldPath(format!("{}[{i}]", self.0))
    }

    pub fn key(&self, key: &str) -> Self {
        FieldPath(format!("{}[{key}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The offending value, printed the way Go's `field.Error` prints it.
#[derive(Debug, Clone, PartialEq)]
pub enum BadValue {
    /// Printed quoted (`%q`).
    Str(String),
    Int(i64),
    Bool(bool),
    /// Printed as `"null"`.
    Null,
    /// Already formatted (Go's `%#v` for structs and slices).
    Raw(String),
}

impl fmt::Display for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadValue::Str(s) => f.write_str(&go_quote(s)),
            BadValue::Int(i) => write!(f, "{i}"),
            BadValue::Bool(b) => write!(f, "{b}"),
            BadValue::Null => f.write_str("\"null\""),
            BadValue::Raw(s) => f.write_str(s),
        }
    }
}

impl From<&str> for BadValue {
    fn from(s: &str) -> Self {
        BadValue::Str(s.to_owned())
    }
}

impl From<String> for BadValue {
    fn from(s: String) -> Self {
        BadValue::Str(s)
    }
}

impl From<i64> for BadValue {
    fn from(i: i64) -> Self {
        BadValue::Int(i)
    }
}

impl From<i32> for BadValue {
    fn from(i: i32) -> Self {
        BadValue::Int(i64::from(i))
    }
}

impl From<bool> for BadValue {
    fn from(b: bool) -> Self {
        BadValue::Bool(b)
    }
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if c.is_control() => {
                let n = u32::from(c);
                if n < 0x80 {
                    out.push_str(&format!("\\x{n:02x}"));
                } else if n <= 0xffff {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The kind of a [`FieldError`] (Go's `field.ErrorType`).
#[derive(Debug, Clone, PartialEq)]
pub enum ErrorKind {
    NotFound(BadValue),
    Required,
    Duplicate(BadValue),
    Invalid(BadValue),
    /// The value and the supported values.
    NotSupported(BadValue, Vec<String>),
    Forbidden,
    TooLong,
    /// The actual number of items, if known.
    TooMany(Option<i64>),
    Internal,
}

impl ErrorKind {
    /// The text Kubernetes prints for the type.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::NotFound(_) => "Not found",
            ErrorKind::Required => "Required value",
            ErrorKind::Duplicate(_) => "Duplicate value",
            ErrorKind::Invalid(_) => "Invalid value",
            ErrorKind::NotSupported(..) => "Unsupported value",
            ErrorKind::Forbidden => "Forbidden",
            ErrorKind::TooLong => "Too long",
            ErrorKind::TooMany(_) => "Too many",
            ErrorKind::Internal => "Internal error",
        }
    }

    /// The machine-readable reason used in a `Status`'s `details.causes`.
    pub fn reason(&self) -> &'static str {
        match self {
            ErrorKind::NotFound(_) => "FieldValueNotFound",
            ErrorKind::Required => "FieldValueRequired",
            ErrorKind::Duplicate(_) => "FieldValueDuplicate",
            ErrorKind::Invalid(_) => "FieldValueInvalid",
            ErrorKind::NotSupported(..) => "FieldValueNotSupported",
            ErrorKind::Forbidden => "FieldValueForbidden",
            ErrorKind::TooLong => "FieldValueTooLong",
            ErrorKind::TooMany(_) => "FieldValueTooMany",
            ErrorKind::Internal => "InternalError",
        }
    }
}

/// One validation problem: `path: Type[: value][: detail]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub path: String,
    pub kind: ErrorKind,
    pub detail: String,
}

impl FieldError {
    pub fn required(path: &FieldPath, detail: &str) -> Self {
        Self::new(path, ErrorKind::Required, detail)
    }

    pub fn invalid(path: &FieldPath, value: impl Into<BadValue>, detail: &str) -> Self {
        Self::new(path, ErrorKind::Invalid(value.into()), detail)
    }

    pub fn not_supported(path: &FieldPath, value: impl Into<BadValue>, supported: &[&str]) -> Self {
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        FieldError {
            path: path.to_string(),
            kind: ErrorKind::NotSupported(
                value.into(),
                supported.iter().map(|s| (*s).to_owned()).collect(),
            ),
            detail,
        }
    }

    pub fn forbidden(path: &FieldPath, detail: &str) -> Self {
        Self::new(path, ErrorKind::Forbidden, detail)
    }

    pub fn duplicate(path: &FieldPath, value: impl Into<BadValue>) -> Self {
        Self::new(path, ErrorKind::Duplicate(value.into()), "")
    }

    pub fn not_found(path: &FieldPath, value: impl Into<BadValue>) -> Self {
        Self::new(path, ErrorKind::NotFound(value.into()), "")
    }

    pub fn too_long(path: &FieldPath, max_bytes: usize) -> Self {
        Self::new(
            path,
            ErrorKind::TooLong,
            &format!("must have at most {max_bytes} bytes"),
        )
    }

    pub fn too_many(path: &FieldPath, actual: Option<i64>, max: usize) -> Self {
        Self::new(
            path,
            ErrorKind::TooMany(actual),
            &format!("must have at most {max} items"),
        )
    }

    pub fn internal(path: &FieldPath, detail: &str) -> Self {
        Self::new(path, ErrorKind::Internal, detail)
    }

    fn new(path: &FieldPath, kind: ErrorKind, detail: &str) -> Self {
        FieldError {
            path: path.to_string(),
            kind,
            detail: detail.to_owned(),
        }
    }

    /// The message without the field path (Go's `ErrorBody`).
    pub fn body(&self) -> String {
        let mut s = match &self.kind {
            ErrorKind::Required
            | ErrorKind::Forbidden
            | ErrorKind::TooLong
            | ErrorKind::Internal => self.kind.as_str().to_owned(),
            ErrorKind::TooMany(None) => self.kind.as_str().to_owned(),
            ErrorKind::TooMany(Some(n)) => format!("{}: {n}", self.kind.as_str()),
            ErrorKind::NotFound(v)
            | ErrorKind::Duplicate(v)
            | ErrorKind::Invalid(v)
            | ErrorKind::NotSupported(v, _) => format!("{}: {v}", self.kind.as_str()),
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.body())
    }
}

/// The API server's `Invalid` error: `Pod "sleep" is invalid: [a, b]`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind} {} is invalid: {}", go_quote(name), aggregate(errors))]
pub struct ValidationError {
    /// The (group-qualified) kind, e.g. `Pod` or `Deployment.apps`.
    pub kind: String,
    pub name: String,
    pub errors: Vec<FieldError>,
}

impl ValidationError {
    pub fn new(kind: &str, name: &str, errors: Vec<FieldError>) -> Self {
        ValidationError {
            kind: kind.to_owned(),
            name: name.to_owned(),
            errors,
        }
    }

    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }
}

/// Messages joined like `utilerrors.Aggregate`: duplicates dropped, brackets for
/// more than one.
fn aggregate(errors: &[FieldError]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for e in errors {
        let msg = e.to_string();
        if !seen.contains(&msg) {
            seen.push(msg);
        }
    }
    match seen.len() {
        1 => seen.remove(0),
        _ => format!("[{}]", seen.join(", ")),
    }
}

#[cfg(test)]
mod tests;
