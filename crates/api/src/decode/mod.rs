//! Decoding manifests (YAML or JSON, several documents per file) into the
//! Kubernetes objects tandem runs, with `file:line:column` on every error.
//!
//! Like the API server with `fieldValidation=Strict`, unknown fields are errors:
//! a misspelt `restartPolicy` must not silently change behaviour.

mod de;
mod tree;

use k8s_openapi::Resource;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_saphyr::MessageFormatter;

use de::{Ctx, DeError};
use tree::{Node, Pos, Value};

/// An object decoded from a manifest.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Pod(Box<Pod>),
    ConfigMap(ConfigMap),
    Secret(Secret),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Pod(_) => Pod::KIND,
            Object::ConfigMap(_) => ConfigMap::KIND,
            Object::Secret(_) => Secret::KIND,
        }
    }

    pub fn api_version(&self) -> &'static str {
        match self {
            Object::Pod(_) => Pod::API_VERSION,
            Object::ConfigMap(_) => ConfigMap::API_VERSION,
            Object::Secret(_) => Secret::API_VERSION,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Pod(p) => &p.metadata,
            Object::ConfigMap(c) => &c.metadata,
            Object::Secret(s) => &s.metadata,
        }
    }

    pub fn name(&self) -> Option<&str> {
        self.metadata().name.as_deref()
    }
}

/// An object together with the position of its document (or `List` item).
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub object: Object,
    pub line: u32,
    pub column: u32,
}

/// Why a manifest could not be decoded. `Display` is one line:
/// `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The text is not valid YAML (or JSON).
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: u32,
        column: u32,
        message: String,
    },
    /// A value has the wrong type or cannot be parsed (`path` is empty at the document root).
    #[error("{file}:{line}:{column}: {}", join_path(path, message))]
    InvalidValue {
        file: String,
        line: u32,
        column: u32,
        path: String,
        message: String,
    },
    /// Keys that the object's schema does not have (first one's position).
    #[error(
        "{file}:{line}:{column}: strict decoding error: {}",
        unknown_list(fields)
    )]
    UnknownFields {
        file: String,
        line: u32,
        column: u32,
        fields: Vec<String>,
    },
    #[error("{file}:{line}:{column}: kind not set")]
    MissingKind {
        file: String,
        line: u32,
        column: u32,
    },
    #[error("{file}:{line}:{column}: apiVersion not set")]
    MissingApiVersion {
        file: String,
        line: u32,
        column: u32,
    },
    #[error("{file}:{line}:{column}: unknown kind {kind:?} (apiVersion {api_version:?})")]
    UnknownKind {
        file: String,
        line: u32,
        column: u32,
        kind: String,
        api_version: String,
    },
    /// A known kind under another apiVersion (kubectl's wording).
    #[error("{file}:{line}:{column}: no matches for kind {kind:?} in version {api_version:?}")]
    WrongApiVersion {
        file: String,
        line: u32,
        column: u32,
        kind: String,
        api_version: String,
    },
    /// A document (or `List` item) that is not a mapping.
    #[error("{file}:{line}:{column}: expected an object with apiVersion and kind, found {found}")]
    NotAnObject {
        file: String,
        line: u32,
        column: u32,
        found: String,
    },
}

fn join_path(path: &str, message: &str) -> String {
    if path.is_empty() {
        message.to_owned()
    } else {
        format!("{path}: {message}")
    }
}

fn unknown_list(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl DecodeError {
    pub fn file(&self) -> &str {
        self.location().0
    }

    pub fn line(&self) -> u32 {
        self.location().1
    }

    pub fn column(&self) -> u32 {
        self.location().2
    }

    /// The message without the `file:line:column: ` prefix.
    pub fn message(&self) -> String {
        let (file, line, column) = self.location();
        let full = self.to_string();
        let prefix = format!("{file}:{line}:{column}: ");
        full.strip_prefix(&prefix).unwrap_or(&full).to_owned()
    }

    fn location(&self) -> (&str, u32, u32) {
        match self {
            DecodeError::Syntax {
                file, line, column, ..
            }
            | DecodeError::InvalidValue {
                file, line, column, ..
            }
            | DecodeError::UnknownFields {
                file, line, column, ..
            }
            | DecodeError::MissingKind { file, line, column }
            | DecodeError::MissingApiVersion { file, line, column }
            | DecodeError::UnknownKind {
                file, line, column, ..
            }
            | DecodeError::WrongApiVersion {
                file, line, column, ..
            }
            | DecodeError::NotAnObject {
                file, line, column, ..
            } => (file, *line, *column),
        }
    }
}

/// Decodes every object in `text`. `file` is only used in error messages.
///
/// Empty documents are skipped; `kind: List` (`apiVersion: v1`) is flattened into
/// its items. Supported kinds: `Pod`, `ConfigMap`, `Secret` (all `v1`).
pub fn decode_manifests(file: &str, text: &str) -> Result<Vec<Object>, DecodeError> {
    Ok(decode_manifests_located(file, text)?
        .into_iter()
        .map(|m| m.object)
        .collect())
}

/// Like [`decode_manifests`], keeping the position of each object.
pub fn decode_manifests_located(file: &str, text: &str) -> Result<Vec<Manifest>, DecodeError> {
    let docs = parse_yaml(file, text)?;
    let mut out = Vec::new();
    for doc in &docs {
        decode_document(file, doc, &mut out)?;
    }
    Ok(out)
}

fn parse_yaml(file: &str, text: &str) -> Result<Vec<Node>, DecodeError> {
    // Kubernetes reads YAML like YAML 1.1 here: `0644` is octal (420), as in
    // `defaultMode: 0644`.
    let options = serde_saphyr::options! {
        legacy_octal_numbers: true,
        with_snippet: false,
    };
    serde_saphyr::from_str_multiple_with_options::<Node, Vec<Node>>(text, options).map_err(|e| {
        let pos = e
            .location()
            .map(|l| Pos::from_location(l, l))
            .unwrap_or(Pos::START);
        let message = serde_saphyr::UserMessageFormatter.format_message(&e);
        DecodeError::Syntax {
            file: file.to_owned(),
            line: pos.line,
            column: pos.column,
            message: one_line(&message),
        }
    })
}

/// Collapses control characters (newlines included) so a message stays on one line.
fn one_line(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut last_space = false;
    for c in message.trim().chars() {
        if c.is_control() || c.is_whitespace() {
            if !last_space {
                out.push(' ');
            }
            last_space = true;
        } else {
            out.push(c);
            last_space = false;
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Kind {
    Pod,
    ConfigMap,
    Secret,
    List,
}

/// The kinds we can decode, with their apiVersion.
const KINDS: &[(&str, &str, Kind)] = &[
    (Pod::KIND, Pod::API_VERSION, Kind::Pod),
    (ConfigMap::KIND, ConfigMap::API_VERSION, Kind::ConfigMap),
    (Secret::KIND, Secret::API_VERSION, Kind::Secret),
    ("List", "v1", Kind::List),
];

fn decode_document(file: &str, node: &Node, out: &mut Vec<Manifest>) -> Result<(), DecodeError> {
    let at = |pos: Pos| (file.to_owned(), pos.line, pos.column);
    let Value::Map(_) = node.value else {
        let (file, line, column) = at(node.pos);
        return Err(DecodeError::NotAnObject {
            file,
            line,
            column,
            found: node.type_name().to_owned(),
        });
    };
    let kind = string_field(file, node, "kind")?;
    let api_version = string_field(file, node, "apiVersion")?;
    let Some((kind, kind_pos)) = kind else {
        let (file, line, column) = at(node.pos);
        return Err(DecodeError::MissingKind { file, line, column });
    };
    let Some((api_version, version_pos)) = api_version else {
        let (file, line, column) = at(node.pos);
        return Err(DecodeError::MissingApiVersion { file, line, column });
    };
    let Some(&(_, served, known)) = KINDS.iter().find(|(k, _, _)| *k == kind) else {
        let (file, line, column) = at(kind_pos);
        return Err(DecodeError::UnknownKind {
            file,
            line,
            column,
            kind: kind.to_owned(),
            api_version: api_version.to_owned(),
        });
    };
    if api_version != served {
        let (file, line, column) = at(version_pos);
        return Err(DecodeError::WrongApiVersion {
            file,
            line,
            column,
            kind: kind.to_owned(),
            api_version: api_version.to_owned(),
        });
    }
    let object = match known {
        Kind::List => return decode_list(file, node, out),
        Kind::Pod => Object::Pod(Box::new(typed(file, node)?)),
        Kind::ConfigMap => Object::ConfigMap(typed(file, node)?),
        Kind::Secret => Object::Secret(typed(file, node)?),
    };
    out.push(Manifest {
        object,
        line: node.pos.line,
        column: node.pos.column,
    });
    Ok(())
}

/// A string-valued top-level key; `None` when missing, null or empty.
fn string_field<'a>(
    file: &str,
    node: &'a Node,
    key: &str,
) -> Result<Option<(&'a str, Pos)>, DecodeError> {
    let Some(entry) = node.get(key) else {
        return Ok(None);
    };
    match &entry.value.value {
        Value::Str(s) if s.is_empty() => Ok(None),
        // Document-level problems point at the key (`kind:`), like the start of a line.
        Value::Str(s) => Ok(Some((s.as_str(), entry.key_pos))),
        Value::Null => Ok(None),
        _ => Err(DecodeError::InvalidValue {
            file: file.to_owned(),
            line: entry.value.pos.line,
            column: entry.value.pos.column,
            path: key.to_owned(),
            message: format!(
                "invalid type: {}, expected a string",
                entry.value.type_name()
            ),
        }),
    }
}

fn decode_list(file: &str, node: &Node, out: &mut Vec<Manifest>) -> Result<(), DecodeError> {
    const LIST_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "items"];
    if let Value::Map(entries) = &node.value {
        let unknown: Vec<_> = entries
            .iter()
            .filter(|e| !LIST_FIELDS.contains(&e.key.as_str()))
            .collect();
        if let Some(first) = unknown.first() {
            return Err(DecodeError::UnknownFields {
                file: file.to_owned(),
                line: first.key_pos.line,
                column: first.key_pos.column,
                fields: unknown.iter().map(|e| e.key.clone()).collect(),
            });
        }
    }
    let Some(items) = node.get("items") else {
        return Ok(());
    };
    match &items.value.value {
        Value::Null => Ok(()),
        Value::Seq(items) => {
            for item in items {
                decode_document(file, item, out)?;
            }
            Ok(())
        }
        _ => Err(DecodeError::InvalidValue {
            file: file.to_owned(),
            line: items.value.pos.line,
            column: items.value.pos.column,
            path: "items".to_owned(),
            message: format!(
                "invalid type: {}, expected a sequence",
                items.value.type_name()
            ),
        }),
    }
}

fn typed<T: serde::de::DeserializeOwned>(file: &str, node: &Node) -> Result<T, DecodeError> {
    let ctx = Ctx::default();
    let value = de::from_node::<T>(node, "", &ctx).map_err(|e| invalid_value(file, node, e))?;
    let unknown = ctx.into_unknown();
    if let Some(first) = unknown.first() {
        return Err(DecodeError::UnknownFields {
            file: file.to_owned(),
            line: first.pos.line,
            column: first.pos.column,
            fields: unknown.iter().map(|u| u.path.clone()).collect(),
        });
    }
    Ok(value)
}

fn invalid_value(file: &str, node: &Node, e: DeError) -> DecodeError {
    let (pos, path) = e.at.unwrap_or((node.pos, String::new()));
    DecodeError::InvalidValue {
        file: file.to_owned(),
        line: pos.line,
        column: pos.column,
        path,
        // serde calls YAML/JSON null "unit value".
        message: one_line(&e.msg).replace("unit value", "null"),
    }
}

#[cfg(test)]
mod tests;
