//! Kubernetes glue for tandem: decoding manifests with positions, defaulting,
//! validation with Kubernetes' field paths and messages, and the `kubectl get pods`
//! printer. No I/O.
#![forbid(unsafe_code)]

pub mod decode;
pub mod defaults;
pub mod patch;
pub mod printer;
pub mod selector;
pub mod table;
pub mod validation;
