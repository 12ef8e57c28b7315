//! The state every handler shares: the store, the log source, the admission
//! plugins and the server configuration.

use crate::ipalloc::Cidr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use api::validation::FeatureGates;
use jiff::Timestamp;
use store::Store;

use crate::admission::MutatingAdmission;
use crate::tokens::Signer;

/// Where container logs live; the node agent implements it.
pub trait LogSource: Send + Sync {
    /// The log file of `container` in the pod with `uid` (its previous instance with
    /// `previous`), if there is one.
    fn log_file(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
        container: &str,
        previous: bool,
    ) -> Option<PathBuf>;

    /// Whether the container writing `path` still runs (a follow keeps reading).
    fn is_live(&self, path: &Path) -> bool;
}

/// A log source with no logs (a server without a node agent).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLogs;

impl LogSource for NoLogs {
    fn log_file(&self, _: &str, _: &str, _: &str, _: &str, _: bool) -> Option<PathBuf> {
        None
    }

    fn is_live(&self, _: &Path) -> bool {
        false
    }
}

/// The wall clock, replaceable in tests.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Server settings that handlers read.
#[derive(Clone)]
pub struct ApiConfig {
    pub feature_gates: FeatureGates,
    /// `host:port` reported in `/api`'s `serverAddressByClientCIDRs`.
    pub server_address: String,
    /// How often an idle watch with `allowWatchBookmarks=true` gets a BOOKMARK.
    pub bookmark_interval: Duration,
    pub clock: Clock,
    /// Where Services get their ClusterIPs from.
    pub service_cidr: Cidr,
}

impl ApiConfig {
    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            feature_gates: FeatureGates::default(),
            server_address: "127.0.0.1:6443".to_owned(),
            // Kubernetes sends bookmarks about once a minute.
            bookmark_interval: Duration::from_secs(60),
            clock: Arc::new(Timestamp::now),
            service_cidr: Cidr {
                base: std::net::Ipv4Addr::new(10, 96, 0, 0),
                prefix: 16,
            },
        }
    }
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("feature_gates", &self.feature_gates)
            .field("server_address", &self.server_address)
            .field("bookmark_interval", &self.bookmark_interval)
            .field("service_cidr", &self.service_cidr)
            .finish_non_exhaustive()
    }
}

/// Shared by all handlers (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub logs: Arc<dyn LogSource>,
    /// Mutating plugins, run in order after defaulting and before validation.
    pub admission: Arc<Vec<Arc<dyn MutatingAdmission>>>,
    pub config: Arc<ApiConfig>,
    /// Held from choosing a ClusterIP until the Service is stored.
    pub service_ips: Arc<tokio::sync::Mutex<()>>,
    /// Signs service account tokens; `None` only if no key could be made.
    pub token_signer: Option<Arc<Signer>>,
    /// Runs `pods/exec` commands; `None` without a node agent.
    pub exec: Option<Arc<dyn crate::exec::ExecBackend>>,
}

impl AppState {
    /// A state with no log source, no mutating plugins, default settings and a
    /// token signing key of its own (see [`AppState::with_token_signer`]).
    pub fn new(store: Arc<dyn Store>) -> Self {
        AppState {
            store,
            logs: Arc::new(NoLogs),
            admission: Arc::new(Vec::new()),
            config: Arc::new(ApiConfig::default()),
            service_ips: Arc::new(tokio::sync::Mutex::new(())),
            token_signer: Signer::ephemeral().ok().map(Arc::new),
            exec: None,
        }
    }

    /// Signs service account tokens with `signer` (the cluster's persistent key,
    /// `Signer::from_pem(&pki.service_account_key_pem)`).
    pub fn with_token_signer(mut self, signer: Signer) -> Self {
        self.token_signer = Some(Arc::new(signer));
        self
    }

    pub fn with_logs(mut self, logs: Arc<dyn LogSource>) -> Self {
        self.logs = logs;
        self
    }

    pub fn with_exec(mut self, exec: Arc<dyn crate::exec::ExecBackend>) -> Self {
        self.exec = Some(exec);
        self
    }

    pub fn with_admission(mut self, plugins: Vec<Arc<dyn MutatingAdmission>>) -> Self {
        self.admission = Arc::new(plugins);
        self
    }

    pub fn with_config(mut self, config: ApiConfig) -> Self {
        self.config = Arc::new(config);
        self
    }
}
