//! Traffic capture for mesh sidecars: what Istio's `istio-init` container does with
//! `istio-iptables`. It parses the same flags, builds the same nat (and, for TPROXY or
//! DNS capture, mangle and raw) rules in the same order, and applies them in the current
//! network namespace with `iptables-restore --noflush`.
//!
//! * [`CaptureArgs`]: the flags, for a clap subcommand; [`cli_main`] takes raw arguments.
//! * [`rules::build`]: pure rule generation; [`rules::RuleSet::restore_script`] renders it.
//! * [`run`]: resolve, build, apply (or print with `--dry-run`), optionally validate.
#![forbid(unsafe_code)]

pub mod apply;
pub mod flags;
pub mod netinfo;
pub mod rules;
pub mod state;
pub mod validate;

use std::fs::File;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

pub use flags::{CaptureArgs, FlagError, Settings};
pub use netinfo::original_destination;
pub use rules::{Family, Host, Rule, RuleSet, Table};

/// Exit code of a failed `--run-validation`, as istio-iptables uses.
pub const VALIDATION_ERROR_CODE: u8 = 126;

/// Errors from resolving flags and applying rules.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Flag(#[from] FlagError),
    #[error(
        "{binary} was not found in PATH; it is in the Debian package \"{package}\" (apt-get install {package})"
    )]
    MissingBinary {
        binary: String,
        package: &'static str,
    },
    #[error("running {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    CommandFailed { command: String, stderr: String },
    #[error(
        "iptables rules from an earlier run differ from the requested ones (existing chains: {chains}); run again with --reconcile to replace them"
    )]
    Conflict { chains: String },
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("entering network namespace {path}: {source}")]
    Netns {
        path: String,
        source: std::io::Error,
    },
    #[error("iptables validation failed; workload is not ready for Istio: {0}")]
    Validation(String),
}

/// The environment facts rules depend on, read in the calling thread's network namespace.
fn detect_host(s: &Settings) -> Result<Host, CaptureError> {
    let ipv6 = match netinfo::pod_addresses() {
        Ok(addrs) => netinfo::ipv6_enabled(&addrs, s.dual_stack).unwrap_or_else(|| {
            // istio-iptables stops here; a namespace with only lo can still be captured.
            tracing::warn!("no pod IP address found; writing IPv4 rules only");
            false
        }),
        Err(e) => {
            tracing::warn!("listing addresses: {e}; writing IPv4 rules only");
            false
        }
    };
    let (dns_servers_v4, dns_servers_v6) = if s.redirect_dns && !s.capture_all_dns {
        let path = "/etc/resolv.conf";
        let text = std::fs::read_to_string(path).map_err(|source| CaptureError::Read {
            path: path.into(),
            source,
        })?;
        netinfo::resolv_conf_servers(&text)
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(Host {
        ipv6,
        dns_servers_v4,
        dns_servers_v6,
    })
}

fn log_settings(s: &Settings, host: &Host) {
    tracing::info!(
        proxy_port = %s.proxy_port,
        inbound_capture_port = %s.inbound_capture_port,
        inbound_tunnel_port = %s.inbound_tunnel_port,
        proxy_uid = %s.proxy_uids.join(","),
        proxy_gid = %s.proxy_gids.join(","),
        mode = ?s.mode,
        inbound_ports = ?s.inbound_ports,
        inbound_ports_exclude = %s.inbound_exclude_ports.join(","),
        outbound_ip_ranges_include = ?s.outbound_include,
        outbound_ip_ranges_exclude = ?s.outbound_exclude,
        outbound_ports_include = %s.outbound_ports_include.join(","),
        outbound_ports_exclude = %s.outbound_ports_exclude.join(","),
        redirect_dns = s.redirect_dns,
        ipv6 = host.ipv6,
        "Istio iptables variables"
    );
}

/// What `--dry-run` prints: the `iptables-restore --noflush` input per family (or, with
/// `--cleanup-only`, the `iptables` commands for the expected rules).
pub fn dry_run_text(s: &Settings, set: &RuleSet) -> String {
    let mut out = String::new();
    for family in set.families() {
        if set.ipv6 {
            out.push_str(match family {
                Family::V4 => "# iptables-restore --noflush\n",
                Family::V6 => "# ip6tables-restore --noflush\n",
            });
        }
        if s.cleanup_only {
            for line in apply::cleanup_commands(set, family) {
                out.push_str(&line);
                out.push('\n');
            }
        } else {
            out.push_str(&set.restore_script(family));
        }
    }
    out
}

/// Everything after flag resolution, in the calling thread's network namespace.
fn run_settings(s: &Settings) -> Result<ExitCode, CaptureError> {
    if s.native_nftables {
        tracing::warn!("--native-nftables: writing the same rules through iptables instead");
    }
    let host = detect_host(s)?;
    log_settings(s, &host);
    let set = rules::build(s, &host);

    if s.dry_run {
        print!("{}", dry_run_text(s, &set));
        tracing::info!("skipping configuring routes due to dry run mode");
        return Ok(ExitCode::SUCCESS);
    }

    let mut backend = apply::SystemBackend;
    if !s.skip_rule_apply {
        let opts = apply::ApplyOptions {
            reconcile: s.reconcile,
            cleanup_only: s.cleanup_only,
            force_apply: s.force_apply,
        };
        let outcome = apply::apply(&set, opts, &mut backend)?;
        tracing::info!(?outcome, "iptables done");
        if !s.cleanup_only {
            apply::configure_routes(s, host.ipv6, &mut backend)?;
        }
        for family in set.families() {
            if let Ok(state) = apply::Backend::save(&mut backend, family) {
                tracing::info!("Final iptables state ({family:?}):\n{state}");
            }
        }
    }
    if s.run_validation
        && let Err(e) = validate::run(s, host.ipv6)
    {
        eprintln!("{e}");
        return Ok(ExitCode::from(VALIDATION_ERROR_CODE));
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the capture in the network namespace at `path` on a helper thread, so the
/// caller's own thread stays where it is (network namespaces are per thread).
fn run_in_netns(path: &Path, s: &Settings) -> Result<ExitCode, CaptureError> {
    let netns_err = |source: std::io::Error| CaptureError::Netns {
        path: path.display().to_string(),
        source,
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = File::open(path).map_err(netns_err)?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| netns_err(e.into()))?;
                run_settings(s)
            })
            .join()
            .unwrap_or_else(|_| {
                Err(netns_err(std::io::Error::other(
                    "the capture thread panicked",
                )))
            })
    })
}

/// Resolves the flags, builds the rules and applies them in the current network namespace
/// (or `--network-namespace`). With `--dry-run` the `iptables-restore` input is printed
/// instead. Returns exit code 126 when `--run-validation` fails, as istio-iptables does.
///
/// Network namespaces are per thread: call this on the thread whose namespace should be
/// captured (child processes inherit it).
pub fn run(args: CaptureArgs) -> anyhow::Result<ExitCode> {
    let settings = args.resolve(&flags::SystemLookup)?;
    let code = match &settings.network_namespace {
        Some(path) => run_in_netns(path, &settings)?,
        None => run_settings(&settings)?,
    };
    Ok(code)
}

#[derive(Debug, Parser)]
#[command(
    name = "istio-iptables",
    about = "Set up iptables rules for Istio Sidecar",
    long_about = "istio-iptables is responsible for setting up port forwarding for Istio Sidecar."
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) args: CaptureArgs,
}

/// Entry point taking the raw arguments after the subcommand name, for both
/// `tandem mesh capture ...` and `tandem proxy istio-iptables ...`. Sets up logging to
/// stderr at the `--log_output_level` level when no subscriber is installed yet.
pub fn cli_main(args: &[String]) -> ExitCode {
    let argv = std::iter::once("istio-iptables".to_string()).chain(args.iter().cloned());
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1));
        }
    };
    let level = cli
        .args
        .log_output_level
        .as_deref()
        .and_then(flags::parse_log_level)
        .unwrap_or(tracing::level_filters::LevelFilter::INFO);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .try_init();
    match run(cli.args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoEnv;
    impl flags::Lookup for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
        fn user_uid(&self, _: &str) -> Option<u32> {
            None
        }
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cli_usage_errors_and_help_exit_codes() {
        assert_eq!(cli_main(&args(&["--no-such-flag"])), ExitCode::from(2));
        assert_eq!(cli_main(&args(&["-m"])), ExitCode::from(2));
        assert_eq!(cli_main(&args(&["--help"])), ExitCode::SUCCESS);
    }

    #[test]
    fn bad_values_fail_before_touching_iptables() {
        assert_eq!(
            cli_main(&args(&["-p", "nope", "--dry-run"])),
            ExitCode::FAILURE
        );
        let err = run(Cli::try_parse_from(["x", "-m", "MAGIC"]).unwrap().args).unwrap_err();
        assert!(err.to_string().contains("REDIRECT or TPROXY"), "{err}");
    }

    #[test]
    fn dry_run_prints_the_restore_input() {
        let parsed = Cli::try_parse_from(["x", "-i", "*", "-b", "*", "--dry-run"]).unwrap();
        let s = parsed.args.resolve(&NoEnv).unwrap();
        let set = rules::build(&s, &Host::default());
        let text = dry_run_text(&s, &set);
        assert_eq!(text, set.restore_script(Family::V4));
        assert!(text.starts_with("*nat\n:ISTIO_INBOUND - [0:0]\n"));

        let both = rules::build(
            &s,
            &Host {
                ipv6: true,
                ..Host::default()
            },
        );
        let text = dry_run_text(&s, &both);
        assert!(text.starts_with("# iptables-restore --noflush\n*nat\n"));
        assert!(text.contains("# ip6tables-restore --noflush\n*nat\n"));
    }

    #[test]
    fn dry_run_cleanup_lists_iptables_commands() {
        let parsed =
            Cli::try_parse_from(["x", "-i", "*", "-b", "*", "--cleanup-only", "-n"]).unwrap();
        let s = parsed.args.resolve(&NoEnv).unwrap();
        let set = rules::build(&s, &Host::default());
        let text = dry_run_text(&s, &set);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "iptables -t nat -D OUTPUT -j ISTIO_OUTPUT");
        assert_eq!(
            lines[1],
            "iptables -t nat -D PREROUTING -p tcp -j ISTIO_INBOUND"
        );
        assert_eq!(
            lines.last().copied(),
            Some("iptables -t nat -X ISTIO_OUTPUT")
        );
    }
}
