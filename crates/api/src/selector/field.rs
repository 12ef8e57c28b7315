//! Field selectors (`status.phase=Running,spec.nodeName!=n1`): apimachinery's
//! `fields.ParseSelector` and the selectable fields of each served kind.

use std::fmt;

use serde_json::Value;

use super::SelectorError;
use crate::validation::go_quote;

/// One `field=value` (or `field!=value`) term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    field: String,
    value: String,
    negated: bool,
}

impl FieldRequirement {
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The unescaped value.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// True for `!=`.
    pub fn is_negated(&self) -> bool {
        self.negated
    }
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.negated { "!=" } else { "=" };
        write!(f, "{}{op}{}", self.field, escape(&self.value))
    }
}

/// A parsed field selector: all terms must hold. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses the `fieldSelector` query syntax: comma-separated `field=value`,
    /// `field==value` or `field!=value`, with `\,`, `\=` and `\\` escapes in values.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut terms = split_terms(s);
        // Upstream sorts the terms, which decides which bad field is reported first.
        terms.sort_unstable();
        let mut requirements = Vec::with_capacity(terms.len());
        for term in terms {
            if term.is_empty() {
                continue;
            }
            let Some((field, op, raw)) = split_term(term) else {
                return Err(SelectorError::Field(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                )));
            };
            requirements.push(FieldRequirement {
                field: field.to_owned(),
                value: unescape(raw)?,
                negated: op == "!=",
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether `object` (a `kind` object as JSON) satisfies every term. Fields the
    /// kind does not support never match; check them first with
    /// [`FieldSelector::check_supported`].
    pub fn matches(&self, kind: &str, object: &Value) -> bool {
        self.requirements
            .iter()
            .all(|r| match field_value(kind, &r.field, object) {
                Some(actual) => (actual == r.value) != r.negated,
                None => false,
            })
    }

    /// Fields supported for a kind, for 400 errors: `field label not supported: x`
    /// (the message varies by kind, as upstream's).
    pub fn check_supported(&self, kind: &str) -> Result<(), SelectorError> {
        for r in &self.requirements {
            if field_value(kind, &r.field, &Value::Null).is_none() {
                return Err(SelectorError::UnsupportedField(unsupported_message(
                    kind, &r.field,
                )));
            }
        }
        Ok(())
    }

    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// True for the selector that matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value a `field=value` term requires, e.g. `exact("metadata.name")` for
    /// the `?fieldSelector=metadata.name=web` that `kubectl wait` and `delete` send.
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && !r.negated)
            .map(|r| r.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Splits on commas that are not escaped with a backslash.
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// The first operator in the term splits it (`!=` before `==` before `=`).
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], op, value));
            }
        }
    }
    None
}

fn unescape(s: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(SelectorError::Field(format!(
                    "invalid field selector: invalid escape sequence: \\{c}"
                )));
            }
            out.push(c);
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => {
                return Err(SelectorError::Field(format!(
                    "invalid field selector: unescaped character in value: {c}"
                )));
            }
            c => out.push(c),
        }
    }
    if in_slash {
        return Err(SelectorError::Field(
            "invalid field selector: invalid escape sequence: \\".to_owned(),
        ));
    }
    Ok(out)
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace('=', "\\=")
}

fn text(object: &Value, path: &[&str]) -> String {
    let mut v = object;
    for p in path {
        v = &v[*p];
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

/// A bool field as `strconv.FormatBool` prints it; missing is `false`.
fn flag(object: &Value, path: &[&str]) -> String {
    let mut v = object;
    for p in path {
        v = &v[*p];
    }
    v.as_bool().unwrap_or(false).to_string()
}

/// A counter as `strconv.Itoa` prints it; missing is `0`.
fn count(object: &Value, path: &[&str]) -> String {
    let mut v = object;
    for p in path {
        v = &v[*p];
    }
    v.as_i64().unwrap_or(0).to_string()
}

/// The selectable value of `field` of a `kind` object, or `None` if the kind does
/// not support selecting by it (the `ToSelectableFields` of each registry).
fn field_value(kind: &str, field: &str, o: &Value) -> Option<String> {
    match field {
        "metadata.name" => return Some(text(o, &["metadata", "name"])),
        "metadata.namespace" => return Some(text(o, &["metadata", "namespace"])),
        _ => {}
    }
    Some(match (kind, field) {
        // `spec.host` is the old name v1 clients may still send.
        ("Pod", "spec.nodeName" | "spec.host") => text(o, &["spec", "nodeName"]),
        ("Pod", "spec.restartPolicy") => text(o, &["spec", "restartPolicy"]),
        ("Pod", "spec.schedulerName") => text(o, &["spec", "schedulerName"]),
        ("Pod", "spec.serviceAccountName") => text(o, &["spec", "serviceAccountName"]),
        ("Pod", "spec.hostNetwork") => flag(o, &["spec", "hostNetwork"]),
        ("Pod", "status.phase") => text(o, &["status", "phase"]),
        // Upstream reads the first of `podIPs`; `podIP` is the same address in v1.
        ("Pod", "status.podIP") => match o["status"]["podIPs"].get(0) {
            Some(ip) => text(ip, &["ip"]),
            None => text(o, &["status", "podIP"]),
        },
        ("Pod", "status.nominatedNodeName") => text(o, &["status", "nominatedNodeName"]),
        ("Event", "involvedObject.kind") => text(o, &["involvedObject", "kind"]),
        ("Event", "involvedObject.namespace") => text(o, &["involvedObject", "namespace"]),
        ("Event", "involvedObject.name") => text(o, &["involvedObject", "name"]),
        ("Event", "involvedObject.uid") => text(o, &["involvedObject", "uid"]),
        ("Event", "involvedObject.apiVersion") => text(o, &["involvedObject", "apiVersion"]),
        ("Event", "involvedObject.resourceVersion") => {
            text(o, &["involvedObject", "resourceVersion"])
        }
        ("Event", "involvedObject.fieldPath") => text(o, &["involvedObject", "fieldPath"]),
        ("Event", "reason") => text(o, &["reason"]),
        ("Event", "reportingComponent") => text(o, &["reportingComponent"]),
        ("Event", "source") => {
            let component = text(o, &["source", "component"]);
            if component.is_empty() {
                text(o, &["reportingComponent"])
            } else {
                component
            }
        }
        ("Event", "type") => text(o, &["type"]),
        ("Secret", "type") => text(o, &["type"]),
        ("Namespace", "status.phase") => text(o, &["status", "phase"]),
        ("Node", "spec.unschedulable") => flag(o, &["spec", "unschedulable"]),
        ("Job", "status.successful") => count(o, &["status", "succeeded"]),
        ("ReplicaSet", "status.replicas") => count(o, &["status", "replicas"]),
        _ => return None,
    })
}

/// The error text of each kind's field label conversion function.
fn unsupported_message(kind: &str, field: &str) -> String {
    match kind {
        "Pod" | "Event" | "Secret" | "Namespace" | "Node" => {
            format!("field label not supported: {field}")
        }
        "Service" | "ServiceAccount" | "ConfigMap" | "Endpoints" | "EndpointSlice" => format!(
            "field label {} not supported for {}",
            go_quote(field),
            go_quote(kind)
        ),
        "Job" => format!(
            "field label {} not supported for batchv1.Job",
            go_quote(field)
        ),
        "ReplicaSet" => format!("field label not supported for appsv1.ReplicaSet: {field}"),
        _ => format!(
            "{} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
            go_quote(field)
        ),
    }
}
