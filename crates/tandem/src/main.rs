//! `tandem`: Kubernetes pods with native sidecars on one machine.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod config;
mod injection;
mod logs;
mod network;
mod play;
mod up;

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "Kubernetes pods with native sidecars on one machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pods of some manifests on this machine and watch them like
    /// `kubectl get pods -w`; exits 0 when every pod Succeeded, 1 otherwise.
    Play(play::PlayArgs),
    /// Start a single-node cluster: API server (HTTPS), durable store and node agent.
    Up(up::UpArgs),
    /// Delete every pod gracefully, then stop the cluster started by `tandem up`.
    Down(up::DownArgs),
    /// The Istio-style mesh: install it into a cluster, serve its injector as a webhook,
    /// or program a pod's traffic capture.
    #[command(subcommand)]
    Mesh(MeshCommand),
    /// The sidecar proxy (image `tandem/proxy`, Istio's pilot-agent + Envoy): `proxy sidecar`
    /// in a pod, or a standalone forwarder with `--listen ADDR --upstream ADDR`.
    /// `tandem proxy istio-iptables ...` is the capture of `istio-init`.
    Proxy(proxy::Args),
    /// A small httpbin-compatible HTTP server (image `tandem/httpbin`) for examples and tests.
    Httpbin(httpbin::HttpbinArgs),
    /// Internal: the per-pod namespace holder.
    #[command(hide = true)]
    Sandbox {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Internal: the per-container supervisor.
    #[command(hide = true)]
    Shim {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum MeshCommand {
    /// Install the mesh (like `istioctl install`): its config and control-plane Service.
    Install(mesh::install::InstallArgs),
    /// Remove what `install` created.
    Uninstall(mesh::install::UninstallArgs),
    /// Serve the sidecar injector as a Kubernetes MutatingAdmissionWebhook.
    Webhook(mesh::webhook::WebhookArgs),
    /// Program the pod's traffic capture (istio-iptables' flags), as `istio-init` does.
    Capture {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    // Istio's istio-init runs the proxy image as `istio-iptables ...`: the capture's own
    // flag syntax (`-p15001`, `-x ""`) goes to it untouched.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("proxy")
        && argv.get(2).map(String::as_str) == Some("istio-iptables")
    {
        return capture::cli_main(&argv[3..]);
    }
    // Installed (or linked) as `istioctl`, tandem takes istioctl's mesh commands, so the
    // blog's `istioctl install --set ...` runs unchanged.
    let invoked_as = std::path::Path::new(argv.first().map_or("", String::as_str))
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if invoked_as == "istioctl" {
        return match Istioctl::parse().command {
            IstioctlCommand::Install(args) => run_async(mesh::install::run_install(args)),
            IstioctlCommand::Uninstall { args, purge: _ } => {
                run_async(mesh::install::run_uninstall(args))
            }
            IstioctlCommand::Version => {
                println!("client version: tandem {}", env!("CARGO_PKG_VERSION"));
                ExitCode::SUCCESS
            }
        };
    }
    let cli = Cli::parse();
    match cli.command {
        // The helpers fork and enter namespaces: they must stay single-threaded, so they
        // run before any async runtime exists.
        Command::Sandbox { args } => node::runtime::sandbox::main(&args),
        Command::Shim { args } => node::runtime::shim::main(&args),
        Command::Play(args) => run_async(play::run(args)),
        Command::Up(args) => run_async(up::run(args)),
        Command::Down(args) => run_async(up::down(args)),
        Command::Httpbin(args) => run_async(httpbin::run(args)),
        Command::Proxy(args) => run_async(proxy::run(args)),
        Command::Mesh(MeshCommand::Install(args)) => run_async(mesh::install::run_install(args)),
        Command::Mesh(MeshCommand::Uninstall(args)) => {
            run_async(mesh::install::run_uninstall(args))
        }
        Command::Mesh(MeshCommand::Webhook(args)) => run_async(mesh::webhook::run(args)),
        // Capture changes the calling thread's network namespace view: no runtime needed.
        Command::Mesh(MeshCommand::Capture { args }) => capture::cli_main(&args),
    }
}

/// `istioctl`'s commands that tandem provides (multi-call: the binary named `istioctl`).
#[derive(Parser)]
#[command(
    name = "istioctl",
    version,
    about = "tandem's mesh, with istioctl's command names"
)]
struct Istioctl {
    #[command(subcommand)]
    command: IstioctlCommand,
}

#[derive(Subcommand)]
enum IstioctlCommand {
    /// `tandem mesh install`.
    Install(mesh::install::InstallArgs),
    /// `tandem mesh uninstall`.
    Uninstall {
        #[command(flatten)]
        args: mesh::install::UninstallArgs,
        /// Remove everything (the only kind of uninstall there is).
        #[arg(long)]
        purge: bool,
    },
    /// Print the version.
    Version,
}

fn run_async(fut: impl Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Pods need namespaces and mounts: say so plainly instead of failing half-way.
pub(crate) fn require_root(what: &str) -> anyhow::Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        anyhow::bail!("{what} needs root: pods run in their own Linux namespaces (try sudo)")
    }
}

/// This machine's node name: its hostname, lower-cased as Kubernetes does.
pub(crate) fn node_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
        .to_lowercase()
}
