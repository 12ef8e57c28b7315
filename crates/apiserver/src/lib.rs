//! The Kubernetes API server of tandem: discovery, CRUD with Kubernetes'
//! semantics, watch, Table printing, logs, patch, the admission chain, bearer-token
//! authentication and TLS.
//!
//! [`router`] is the API without TLS or authentication (for tests and embedding);
//! [`serve`] adds both and runs until cancelled.
#![forbid(unsafe_code)]

pub mod admission;
pub mod body;
pub mod crud;
pub mod discovery;
pub mod exec;
pub mod ipalloc;
pub mod logs;
pub mod objects;
pub mod pki;
pub mod query;
pub mod render;
pub mod resources;
mod router;
pub mod server;
pub mod state;
pub mod status;
pub mod tokens;
pub mod watch;

pub use admission::{MutatingAdmission, Operation};
pub use exec::ExecBackend;
pub use router::router;
pub use server::{ServeError, ServerConfig, bind, serve};
pub use state::{ApiConfig, AppState, LogSource};

/// Prepares a store for serving: creates the namespaces every cluster has.
pub async fn bootstrap(state: &AppState) -> Result<(), store::StoreError> {
    crud::seed_namespaces(state).await
}
