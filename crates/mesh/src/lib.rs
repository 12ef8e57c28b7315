//! The mesh's control side: the mesh config users set at install time, the sidecar
//! injector (a pure function the API server's admission chain calls), the same injector
//! served as a Kubernetes mutating admission webhook, and `tandem mesh install|uninstall`.

#![forbid(unsafe_code)]

pub mod config;
pub mod inject;
pub mod install;
pub mod webhook;
