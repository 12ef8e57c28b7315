//! Label and field selectors as the API server reads them from `?labelSelector=` and
//! `?fieldSelector=`, with Kubernetes' syntax, semantics and error messages.

mod field;
mod label;
#[cfg(test)]
mod tests;

pub use field::{FieldRequirement, FieldSelector};
pub use label::{LabelSelector, Operator, Requirement};

/// A selector that does not parse, or names a field the kind cannot be selected by.
/// The API server answers both with 400 `BadRequest` and this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A malformed label selector, or an invalid key, value or operator in it.
    #[error("{0}")]
    Label(String),
    /// A malformed field selector.
    #[error("{0}")]
    Field(String),
    /// A field the kind does not support in field selectors.
    #[error("{0}")]
    UnsupportedField(String),
}
