//! Controllers: small loops that watch the API and write back through it, like the
//! Kubernetes controller manager and scheduler.

#![forbid(unsafe_code)]

pub mod scheduler;
