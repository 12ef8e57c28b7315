//! The istio-iptables command line: flag names and short letters, defaults, and the
//! environment variables that stand in for flags when they are not given.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tracing::level_filters::LevelFilter;

/// A bad flag or environment value. The message names the flag as istio-iptables does.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlagError {
    #[error("invalid value {value:?} for --{flag}: {reason}")]
    Invalid {
        flag: &'static str,
        value: String,
        reason: String,
    },
}

fn invalid(flag: &'static str, value: &str, reason: impl Into<String>) -> FlagError {
    FlagError::Invalid {
        flag,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Flags of `istio-iptables` (what Istio's `istio-init` container runs). Every flag
/// accepts `--flag value` and `--flag=value`, short forms `-p 15001` and `-p=15001`;
/// booleans are `--flag`, `--flag=true` or `--flag=false`. Unset flags fall back to
/// the environment variables istio-iptables reads, then to its defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
// pflag lets a later flag override an earlier one.
#[command(args_override_self = true)]
pub struct CaptureArgs {
    /// Port to which all outbound TCP traffic is redirected (default 15001).
    #[arg(short = 'p', long = "envoy-port", value_name = "PORT")]
    pub envoy_port: Option<String>,

    /// Port to which all inbound TCP traffic is redirected (env INBOUND_CAPTURE_PORT, default 15006).
    #[arg(short = 'z', long = "inbound-capture-port", value_name = "PORT")]
    pub inbound_capture_port: Option<String>,

    /// Inbound tunnel (HBONE) port that is never captured (env INBOUND_TUNNEL_PORT, default 15008).
    #[arg(short = 'e', long = "inbound-tunnel-port", value_name = "PORT")]
    pub inbound_tunnel_port: Option<String>,

    /// UIDs (comma separated) whose traffic is not redirected (env PROXY_UID; default the uid of
    /// $ENVOY_USER, else 1337).
    #[arg(short = 'u', long = "proxy-uid", value_name = "UIDS")]
    pub proxy_uid: Option<String>,

    /// GIDs (comma separated) whose traffic is not redirected (env PROXY_GID; default: the -u value).
    #[arg(short = 'g', long = "proxy-gid", value_name = "GIDS")]
    pub proxy_gid: Option<String>,

    /// Inbound interception mode: REDIRECT or TPROXY (env ISTIO_INBOUND_INTERCEPTION_MODE).
    #[arg(
        short = 'm',
        long = "istio-inbound-interception-mode",
        value_name = "MODE"
    )]
    pub inbound_interception_mode: Option<String>,

    /// Inbound ports to capture, comma separated; "*" for all, empty for none (env ISTIO_INBOUND_PORTS).
    #[arg(short = 'b', long = "istio-inbound-ports", value_name = "PORTS")]
    pub inbound_ports: Option<String>,

    /// Inbound ports excluded from capture; only with -b '*' (env ISTIO_LOCAL_EXCLUDE_PORTS).
    #[arg(short = 'd', long = "istio-local-exclude-ports", value_name = "PORTS")]
    pub local_exclude_ports: Option<String>,

    /// Interfaces whose traffic is never captured (env ISTIO_EXCLUDE_INTERFACES).
    #[arg(short = 'c', long = "istio-exclude-interfaces", value_name = "NICS")]
    pub exclude_interfaces: Option<String>,

    /// Outbound CIDRs to capture; "*" for all, empty for none (env ISTIO_SERVICE_CIDR).
    #[arg(short = 'i', long = "istio-service-cidr", value_name = "CIDRS")]
    pub service_cidr: Option<String>,

    /// Outbound CIDRs excluded from capture (env ISTIO_SERVICE_EXCLUDE_CIDR).
    #[arg(short = 'x', long = "istio-service-exclude-cidr", value_name = "CIDRS")]
    pub service_exclude_cidr: Option<String>,

    /// Outbound ports always captured (env ISTIO_OUTBOUND_PORTS).
    #[arg(short = 'q', long = "istio-outbound-ports", value_name = "PORTS")]
    pub outbound_ports: Option<String>,

    /// Outbound ports never captured, TCP and UDP (env ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE).
    #[arg(
        short = 'o',
        long = "istio-local-outbound-ports-exclude",
        value_name = "PORTS"
    )]
    pub local_outbound_ports_exclude: Option<String>,

    /// Virtual interfaces whose inbound traffic is treated as outbound (env KUBE_VIRT_INTERFACES).
    #[arg(short = 'k', long = "kube-virt-interfaces", value_name = "NICS")]
    pub kube_virt_interfaces: Option<String>,

    /// Packet mark used in TPROXY mode (env ISTIO_INBOUND_TPROXY_MARK, default 1337).
    #[arg(short = 't', long = "istio-inbound-tproxy-mark", value_name = "MARK")]
    pub inbound_tproxy_mark: Option<String>,

    /// Routing table used in TPROXY mode (env ISTIO_INBOUND_TPROXY_ROUTE_TABLE, default 133).
    #[arg(
        short = 'r',
        long = "istio-inbound-tproxy-route-table",
        value_name = "TABLE"
    )]
    pub inbound_tproxy_route_table: Option<String>,

    /// Print the iptables-restore input instead of applying it (env DRY_RUN).
    #[arg(short = 'n', long = "dry-run", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub dry_run: Option<bool>,

    /// Listen port for --run-validation (env IPTABLES_PROBE_PORT, default 15002).
    #[arg(long = "iptables-probe-port", value_name = "PORT")]
    pub iptables_probe_port: Option<String>,

    /// How long --run-validation waits, e.g. 5s (env PROBE_TIMEOUT, default 5s).
    #[arg(long = "probe-timeout", value_name = "DURATION")]
    pub probe_timeout: Option<String>,

    /// Do not touch iptables (env SKIP_RULE_APPLY).
    #[arg(long = "skip-rule-apply", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub skip_rule_apply: Option<bool>,

    /// Check that the redirect works once rules are in place (env RUN_VALIDATION).
    #[arg(long = "run-validation", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub run_validation: Option<bool>,

    /// Capture DNS to the agent on 15053 (env REDIRECT_DNS or ISTIO_META_DNS_CAPTURE).
    #[arg(long = "redirect-dns", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub redirect_dns: Option<bool>,

    /// Drop conntrack-INVALID packets instead of resetting them (env DROP_INVALID or INVALID_DROP).
    #[arg(long = "drop-invalid", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub drop_invalid: Option<bool>,

    /// Write IPv6 rules when the pod has any IPv6 address (env DUAL_STACK or ISTIO_DUAL_STACK).
    #[arg(long = "dual-stack", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub dual_stack: Option<bool>,

    /// With --redirect-dns, capture port 53 to any server, not only resolv.conf's (env CAPTURE_ALL_DNS).
    #[arg(long = "capture-all-dns", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub capture_all_dns: Option<bool>,

    /// Network namespace file to apply the rules in, e.g. /proc/PID/ns/net (env NETWORK_NAMESPACE).
    #[arg(long = "network-namespace", value_name = "PATH")]
    pub network_namespace: Option<String>,

    /// Run as the CNI plugin would (accepted; it only changes locking in Istio) (env CNI_MODE).
    #[arg(long = "cni-mode", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub cni_mode: Option<bool>,

    /// Replace different rules left by an earlier run instead of failing (env RECONCILE).
    #[arg(long = "reconcile", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub reconcile: Option<bool>,

    /// Only remove Istio chains and rules (env CLEANUP_ONLY).
    #[arg(long = "cleanup-only", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub cleanup_only: Option<bool>,

    /// Apply even when the rules already appear to be in place (env FORCE_APPLY).
    #[arg(long = "force-apply", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub force_apply: Option<bool>,

    /// Accepted for compatibility; rules are always written through iptables (env NATIVE_NFTABLES).
    #[arg(long = "native-nftables", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub native_nftables: Option<bool>,

    /// Istio log levels, e.g. default:info; the "default" scope sets the level.
    #[arg(long = "log_output_level", value_name = "LEVELS")]
    pub log_output_level: Option<String>,

    /// Accepted for compatibility with Istio's logging flags.
    #[arg(long = "log_as_json", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub log_as_json: Option<bool>,

    /// Accepted for compatibility with Istio's logging flags.
    #[arg(long = "log_caller", value_name = "SCOPES")]
    pub log_caller: Option<String>,

    /// Accepted for compatibility with Istio's logging flags.
    #[arg(long = "log_stacktrace_level", value_name = "LEVELS")]
    pub log_stacktrace_level: Option<String>,

    /// Accepted for compatibility with Istio's logging flags.
    #[arg(long = "log_target", value_name = "TARGET")]
    pub log_target: Vec<String>,
}

/// Go's `strconv.ParseBool`, which pflag uses for `--flag=value`.
fn go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("invalid boolean value {s:?}")),
    }
}

/// What the flags read from the process: environment variables and the user database.
pub trait Lookup {
    fn var(&self, name: &str) -> Option<String>;
    /// The uid of a user name, if the user exists.
    fn user_uid(&self, name: &str) -> Option<u32>;
}

/// The real environment and `/etc/passwd`.
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    }

    fn user_uid(&self, name: &str) -> Option<u32> {
        nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
    }
}

/// How inbound connections reach the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterceptionMode {
    /// nat REDIRECT to the inbound capture port.
    Redirect,
    /// mangle TPROXY to the inbound capture port, keeping the original addresses.
    Tproxy,
}

/// Which inbound ports are captured (`-b`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundPorts {
    /// `-b ""`: no inbound capture.
    None,
    /// `-b '*'`: every port except the `-d` list.
    All,
    /// `-b 80,8080`: only these.
    Only(Vec<String>),
}

/// Which outbound destinations are captured (`-i`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundRanges {
    /// `-i '*'`.
    All,
    /// `-i 10.0.0.0/8,...`; empty means no outbound capture.
    Only(Vec<Cidr>),
}

/// An address prefix as written on the command line, e.g. `10.0.0.0/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("no '/' in prefix {s:?}"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("bad address in prefix {s:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("bad prefix length in {s:?}"))?;
        Ok(Cidr { addr, len })
    }

    pub fn is_v4(&self) -> bool {
        self.addr.is_ipv4()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Owner groups whose traffic is captured (`ISTIO_OUTBOUND_OWNER_GROUPS[_EXCLUDE]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerGroups {
    /// true: capture all groups except `groups`; false: capture only `groups`.
    pub except: bool,
    pub groups: Vec<String>,
}

/// Istio caps the include list because it becomes one rule with a match per group.
const MAX_OWNER_GROUPS_INCLUDE: usize = 64;

/// Resolved settings: flags, then environment, then istio-iptables defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub proxy_port: String,
    pub inbound_capture_port: String,
    pub inbound_tunnel_port: String,
    pub proxy_uids: Vec<String>,
    pub proxy_gids: Vec<String>,
    pub mode: InterceptionMode,
    pub inbound_ports: InboundPorts,
    pub inbound_exclude_ports: Vec<String>,
    pub exclude_interfaces: Vec<String>,
    pub outbound_include: OutboundRanges,
    pub outbound_exclude: Vec<Cidr>,
    pub outbound_ports_include: Vec<String>,
    pub outbound_ports_exclude: Vec<String>,
    pub virtual_interfaces: Vec<String>,
    pub tproxy_mark: u32,
    pub tproxy_route_table: u32,
    pub owner_groups: OwnerGroups,
    /// `ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`, default `127.0.0.1/32`.
    pub loopback_cidr: Cidr,
    pub dry_run: bool,
    pub skip_rule_apply: bool,
    pub run_validation: bool,
    pub redirect_dns: bool,
    pub drop_invalid: bool,
    pub dual_stack: bool,
    pub capture_all_dns: bool,
    pub cni_mode: bool,
    pub reconcile: bool,
    pub cleanup_only: bool,
    pub force_apply: bool,
    pub native_nftables: bool,
    pub probe_port: u16,
    pub probe_timeout: Duration,
    pub network_namespace: Option<PathBuf>,
    pub log_level: LevelFilter,
}

/// Istio splits lists on commas and drops empty items ("6000,7000," is two ports).
fn split(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_port(flag: &'static str, s: &str) -> Result<String, FlagError> {
    s.parse::<u16>()
        .map(|p| p.to_string())
        .map_err(|_| invalid(flag, s, "not a port number"))
}

/// A port list item: `N`, or an iptables range `N:M`.
fn parse_port_list(flag: &'static str, s: &str) -> Result<Vec<String>, FlagError> {
    split(s)
        .into_iter()
        .map(|item| match item.split_once(':') {
            Some((a, b)) => {
                let a = parse_port(flag, a)?;
                let b = parse_port(flag, b)?;
                Ok(format!("{a}:{b}"))
            }
            None => parse_port(flag, &item),
        })
        .collect()
}

fn parse_names(flag: &'static str, s: &str) -> Result<Vec<String>, FlagError> {
    split(s)
        .into_iter()
        .map(|n| {
            if n.chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '\'')
            {
                Err(invalid(flag, &n, "must not contain spaces or quotes"))
            } else {
                Ok(n)
            }
        })
        .collect()
}

fn parse_cidrs(flag: &'static str, s: &str) -> Result<Vec<Cidr>, FlagError> {
    split(s)
        .into_iter()
        .map(|c| Cidr::parse(&c).map_err(|e| invalid(flag, &c, e)))
        .collect()
}

/// Go's `time.ParseDuration` for the forms people write: "5s", "1m30s", "250ms", "0".
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += Duration::from_nanos((value * nanos_per_unit) as u64);
    }
    Some(total)
}

/// The level of Istio's "default" log scope from `--log_output_level`
/// (`default:info`, `info`, or `scope:level,default:debug`).
pub fn parse_log_level(s: &str) -> Option<LevelFilter> {
    let mut found = None;
    for item in s.split(',') {
        let (scope, level) = match item.split_once(':') {
            Some((scope, level)) => (scope.trim(), level.trim()),
            None => ("default", item.trim()),
        };
        if scope != "default" {
            continue;
        }
        found = Some(match level {
            "debug" => LevelFilter::DEBUG,
            "info" => LevelFilter::INFO,
            "warn" => LevelFilter::WARN,
            "error" | "fatal" => LevelFilter::ERROR,
            "none" => LevelFilter::OFF,
            _ => return None,
        });
    }
    found
}

impl CaptureArgs {
    /// Resolves flags against the environment the way istio-iptables does: a flag given on
    /// the command line wins, then its environment variable, then the default.
    pub fn resolve(&self, env: &dyn Lookup) -> Result<Settings, FlagError> {
        // A string flag with an environment fallback (pflag sets it from the env first).
        let string = |cli: &Option<String>, var: &str| -> Option<String> {
            cli.clone().or_else(|| env.var(var))
        };
        // Unparsable boolean env values are ignored, as pflag's Set error is.
        let boolean = |cli: Option<bool>, vars: &[&str]| -> bool {
            if let Some(v) = cli {
                return v;
            }
            // Later variables override earlier ones, like Istio's AdditionalEnv.
            let mut value = false;
            for var in vars {
                if let Some(v) = env.var(var).and_then(|v| go_bool(&v).ok()) {
                    value = v;
                }
            }
            value
        };

        let proxy_port = parse_port("envoy-port", self.envoy_port.as_deref().unwrap_or("15001"))?;
        let inbound_capture_port = parse_port(
            "inbound-capture-port",
            &string(&self.inbound_capture_port, "INBOUND_CAPTURE_PORT")
                .unwrap_or_else(|| "15006".into()),
        )?;
        let inbound_tunnel_port = parse_port(
            "inbound-tunnel-port",
            &string(&self.inbound_tunnel_port, "INBOUND_TUNNEL_PORT")
                .unwrap_or_else(|| "15008".into()),
        )?;

        // An empty uid means "the uid of $ENVOY_USER, else 1337"; an empty gid means "the uid".
        let uid_text = string(&self.proxy_uid, "PROXY_UID").unwrap_or_default();
        let uid_text = if uid_text.is_empty() {
            let user = env
                .var("ENVOY_USER")
                .unwrap_or_else(|| "istio-proxy".into());
            env.user_uid(&user)
                .map(|u| u.to_string())
                .unwrap_or_else(|| "1337".into())
        } else {
            uid_text
        };
        let gid_text = string(&self.proxy_gid, "PROXY_GID").unwrap_or_default();
        let gid_text = if gid_text.is_empty() {
            uid_text.clone()
        } else {
            gid_text
        };
        let proxy_uids = parse_names("proxy-uid", &uid_text)?;
        let proxy_gids = parse_names("proxy-gid", &gid_text)?;

        let mode_text = string(
            &self.inbound_interception_mode,
            "ISTIO_INBOUND_INTERCEPTION_MODE",
        )
        .unwrap_or_default();
        let mode = match mode_text.as_str() {
            "" | "REDIRECT" => InterceptionMode::Redirect,
            "TPROXY" => InterceptionMode::Tproxy,
            other => {
                return Err(invalid(
                    "istio-inbound-interception-mode",
                    other,
                    "expected REDIRECT or TPROXY",
                ));
            }
        };

        let inbound_text = string(&self.inbound_ports, "ISTIO_INBOUND_PORTS").unwrap_or_default();
        let inbound_ports = match inbound_text.trim() {
            "" => InboundPorts::None,
            "*" => InboundPorts::All,
            list => InboundPorts::Only(parse_port_list("istio-inbound-ports", list)?),
        };
        let inbound_exclude_ports = parse_port_list(
            "istio-local-exclude-ports",
            &string(&self.local_exclude_ports, "ISTIO_LOCAL_EXCLUDE_PORTS").unwrap_or_default(),
        )?;
        let exclude_interfaces = parse_names(
            "istio-exclude-interfaces",
            &string(&self.exclude_interfaces, "ISTIO_EXCLUDE_INTERFACES").unwrap_or_default(),
        )?;

        let include_text = string(&self.service_cidr, "ISTIO_SERVICE_CIDR").unwrap_or_default();
        let outbound_include = if include_text.trim() == "*" {
            OutboundRanges::All
        } else {
            OutboundRanges::Only(parse_cidrs("istio-service-cidr", &include_text)?)
        };
        let exclude_text =
            string(&self.service_exclude_cidr, "ISTIO_SERVICE_EXCLUDE_CIDR").unwrap_or_default();
        if exclude_text.trim() == "*" {
            return Err(invalid(
                "istio-service-exclude-cidr",
                &exclude_text,
                "a wildcard cannot be excluded",
            ));
        }
        let outbound_exclude = parse_cidrs("istio-service-exclude-cidr", &exclude_text)?;

        let outbound_ports_include = parse_port_list(
            "istio-outbound-ports",
            &string(&self.outbound_ports, "ISTIO_OUTBOUND_PORTS").unwrap_or_default(),
        )?;
        let outbound_ports_exclude = parse_port_list(
            "istio-local-outbound-ports-exclude",
            &string(
                &self.local_outbound_ports_exclude,
                "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE",
            )
            .unwrap_or_default(),
        )?;
        let virtual_interfaces = parse_names(
            "kube-virt-interfaces",
            &string(&self.kube_virt_interfaces, "KUBE_VIRT_INTERFACES").unwrap_or_default(),
        )?;

        let mark_text = string(&self.inbound_tproxy_mark, "ISTIO_INBOUND_TPROXY_MARK")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "1337".into());
        let tproxy_mark = mark_text.parse::<u32>().map_err(|_| {
            invalid(
                "istio-inbound-tproxy-mark",
                &mark_text,
                "not a decimal number",
            )
        })?;
        let table_text = string(
            &self.inbound_tproxy_route_table,
            "ISTIO_INBOUND_TPROXY_ROUTE_TABLE",
        )
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "133".into());
        let tproxy_route_table = table_text.parse::<u32>().map_err(|_| {
            invalid(
                "istio-inbound-tproxy-route-table",
                &table_text,
                "not a decimal number",
            )
        })?;

        // Env-only settings.
        let include_groups = env
            .var("ISTIO_OUTBOUND_OWNER_GROUPS")
            .unwrap_or_else(|| "*".into());
        let exclude_groups = env
            .var("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE")
            .unwrap_or_default();
        let owner_groups = if include_groups.trim() == "*" {
            OwnerGroups {
                except: true,
                groups: split(&exclude_groups),
            }
        } else {
            OwnerGroups {
                except: false,
                groups: split(&include_groups),
            }
        };
        if !owner_groups.except && owner_groups.groups.len() > MAX_OWNER_GROUPS_INCLUDE {
            return Err(invalid(
                "ISTIO_OUTBOUND_OWNER_GROUPS",
                &include_groups,
                format!("at most {MAX_OWNER_GROUPS_INCLUDE} groups can be captured"),
            ));
        }
        let loopback_text = env
            .var("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR")
            .unwrap_or_else(|| "127.0.0.1/32".into());
        let loopback_cidr = Cidr::parse(&loopback_text)
            .map_err(|e| invalid("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", &loopback_text, e))?;
        match loopback_cidr.addr {
            IpAddr::V4(a) if a.is_loopback() && (8..=32).contains(&loopback_cidr.len) => {}
            _ => {
                return Err(invalid(
                    "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR",
                    &loopback_text,
                    "expected an IPv4 loopback prefix with a mask of 8 to 32 bits",
                ));
            }
        }

        // pflag ignores unparsable env values for typed flags; so do we.
        let probe_port = match &self.iptables_probe_port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| invalid("iptables-probe-port", p, "not a port number"))?,
            None => env
                .var("IPTABLES_PROBE_PORT")
                .and_then(|p| p.parse().ok())
                .unwrap_or(15002),
        };
        let probe_timeout = match &self.probe_timeout {
            Some(t) => parse_go_duration(t)
                .ok_or_else(|| invalid("probe-timeout", t, "not a duration like 5s"))?,
            None => env
                .var("PROBE_TIMEOUT")
                .and_then(|t| parse_go_duration(&t))
                .unwrap_or(Duration::from_secs(5)),
        };
        let network_namespace = string(&self.network_namespace, "NETWORK_NAMESPACE")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        let log_level = match &self.log_output_level {
            Some(l) => parse_log_level(l)
                .ok_or_else(|| invalid("log_output_level", l, "expected e.g. default:info"))?,
            None => LevelFilter::INFO,
        };

        Ok(Settings {
            proxy_port,
            inbound_capture_port,
            inbound_tunnel_port,
            proxy_uids,
            proxy_gids,
            mode,
            inbound_ports,
            inbound_exclude_ports,
            exclude_interfaces,
            outbound_include,
            outbound_exclude,
            outbound_ports_include,
            outbound_ports_exclude,
            virtual_interfaces,
            tproxy_mark,
            tproxy_route_table,
            owner_groups,
            loopback_cidr,
            dry_run: boolean(self.dry_run, &["DRY_RUN"]),
            skip_rule_apply: boolean(self.skip_rule_apply, &["SKIP_RULE_APPLY"]),
            run_validation: boolean(self.run_validation, &["RUN_VALIDATION"]),
            redirect_dns: boolean(
                self.redirect_dns,
                &["REDIRECT_DNS", "ISTIO_META_DNS_CAPTURE"],
            ),
            drop_invalid: boolean(self.drop_invalid, &["DROP_INVALID", "INVALID_DROP"]),
            dual_stack: boolean(self.dual_stack, &["DUAL_STACK", "ISTIO_DUAL_STACK"]),
            capture_all_dns: boolean(self.capture_all_dns, &["CAPTURE_ALL_DNS"]),
            cni_mode: boolean(self.cni_mode, &["CNI_MODE"]),
            reconcile: boolean(self.reconcile, &["RECONCILE"]),
            cleanup_only: boolean(self.cleanup_only, &["CLEANUP_ONLY"]),
            force_apply: boolean(self.force_apply, &["FORCE_APPLY"]),
            native_nftables: boolean(self.native_nftables, &["NATIVE_NFTABLES"]),
            probe_port,
            probe_timeout,
            network_namespace,
            log_level,
        })
    }
}

#[cfg(test)]
#[path = "flags_tests.rs"]
mod tests;
