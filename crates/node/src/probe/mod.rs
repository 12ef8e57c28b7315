//! Container probes as the kubelet runs them: one attempt ([`probe_once`]) and the
//! periodic worker per (container instance, probe kind) ([`spawn_prober`]).
//!
//! Texts (event messages, error strings) follow the kubelet's, including the Go error
//! formats users see in `kubectl describe` (`dial tcp 10.0.0.1:81: connect: connection
//! refused`, `HTTP probe failed with statuscode: 500`, ...).

pub(crate) mod http;
pub(crate) mod tls;
mod worker;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerPort, ExecAction, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::access::ContainerAccess;
pub(crate) use crate::gofmt::go_quote;
use crate::planner::ProbeResult;

pub use worker::{ProbeUpdate, ProberSpec, spawn_prober, spawn_prober_at};

/// Which of a container's three probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Startup,
    Readiness,
    Liveness,
}

impl ProbeKind {
    /// The name as the kubelet writes it at the start of event messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Liveness => "Liveness",
        }
    }

    /// The result a worker reports before its first attempt: not ready until proven,
    /// alive until proven otherwise, startup undecided.
    pub fn initial_result(self) -> ProbeResult {
        match self {
            ProbeKind::Startup => ProbeResult::Unknown,
            ProbeKind::Readiness => ProbeResult::Failure,
            ProbeKind::Liveness => ProbeResult::Success,
        }
    }

    /// The probe of this kind in a container spec, if any.
    pub fn of(self, container: &k8s_openapi::api::core::v1::Container) -> Option<&Probe> {
        match self {
            ProbeKind::Startup => container.startup_probe.as_ref(),
            ProbeKind::Readiness => container.readiness_probe.as_ref(),
            ProbeKind::Liveness => container.liveness_probe.as_ref(),
        }
    }
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one probe attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// `Success` or `Failure`; `Unknown` when the probe could not be run at all (the
    /// kubelet's "errored" case: reported in an event, not counted towards thresholds).
    pub result: ProbeResult,
    /// Output of the attempt: the command's output, the HTTP body, or the error text.
    pub message: String,
    /// A success the kubelet reports with a `ProbeWarning` event (an HTTP redirect it
    /// did not follow).
    pub warning: bool,
}

impl ProbeOutcome {
    pub(crate) fn success(message: impl Into<String>) -> Self {
        Self {
            result: ProbeResult::Success,
            message: message.into(),
            warning: false,
        }
    }

    pub(crate) fn failure(message: impl Into<String>) -> Self {
        Self {
            result: ProbeResult::Failure,
            message: message.into(),
            warning: false,
        }
    }

    pub(crate) fn errored(message: impl Into<String>) -> Self {
        Self {
            result: ProbeResult::Unknown,
            message: message.into(),
            warning: false,
        }
    }
}

/// A probe's numbers with the API defaults applied (for probes that were not defaulted
/// by an API server) and nonsensical values raised to the smallest valid one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl ProbeTiming {
    pub fn of(probe: &Probe) -> Self {
        let secs = |v: Option<i32>, default: i32, min: i32| {
            Duration::from_secs(v.unwrap_or(default).max(min) as u64)
        };
        let count = |v: Option<i32>, default: i32| v.unwrap_or(default).max(1) as u32;
        Self {
            initial_delay: secs(probe.initial_delay_seconds, 0, 0),
            period: secs(probe.period_seconds, 10, 1),
            timeout: secs(probe.timeout_seconds, 1, 1),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// Runs one probe attempt against a container; `timeoutSeconds` bounds the attempt.
/// `ports` are the container's declared ports, used to resolve named ports.
pub async fn probe_once(
    probe: &Probe,
    ports: &[ContainerPort],
    access: &dyn ContainerAccess,
) -> ProbeOutcome {
    let timeout = ProbeTiming::of(probe).timeout;
    if let Some(exec) = &probe.exec {
        exec_probe(exec, access, timeout).await
    } else if let Some(action) = &probe.http_get {
        http::probe(action, ports, access, timeout).await
    } else if let Some(action) = &probe.tcp_socket {
        tcp_probe(action, ports, access, timeout).await
    } else if let Some(grpc) = &probe.grpc {
        ProbeOutcome::failure(format!(
            "gRPC probes are not supported by tandem (port {})",
            grpc.port
        ))
    } else {
        ProbeOutcome::errored("missing probe handler")
    }
}

/// Extra time granted to the runtime to kill a timed-out command and report back.
const EXEC_KILL_SLACK: Duration = Duration::from_millis(500);

async fn exec_probe(
    exec: &ExecAction,
    access: &dyn ContainerAccess,
    timeout: Duration,
) -> ProbeOutcome {
    let command = exec.command.clone().unwrap_or_default();
    if command.is_empty() {
        return ProbeOutcome::errored("exec probe has no command");
    }
    let timed_out = || {
        // The kubelet's text when the runtime reports the deadline (remote_runtime.go).
        ProbeOutcome::failure(format!(
            "command {} timed out",
            go_quote(&command.join(" "))
        ))
    };
    match tokio::time::timeout(
        timeout + EXEC_KILL_SLACK,
        access.exec(command.clone(), timeout),
    )
    .await
    {
        Err(_) => timed_out(),
        Ok(Err(err)) => ProbeOutcome::errored(err.to_string()),
        Ok(Ok(out)) => match out.exit_code {
            Some(0) => ProbeOutcome::success(out.output),
            Some(_) => ProbeOutcome::failure(out.output),
            None => timed_out(),
        },
    }
}

async fn tcp_probe(
    action: &TCPSocketAction,
    ports: &[ContainerPort],
    access: &dyn ContainerAccess,
    timeout: Duration,
) -> ProbeOutcome {
    let port = match resolve_port(&action.port, ports) {
        Ok(port) => port,
        Err(err) => return ProbeOutcome::errored(err),
    };
    let host = match action.host.as_deref() {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => access.pod_ip().to_string(),
    };
    match dial(access, &host, port, Instant::now() + timeout).await {
        // The connection is closed at once; only reachability counts.
        Ok(_stream) => ProbeOutcome::success(""),
        Err(err) => ProbeOutcome::failure(err.message),
    }
}

/// Resolves a probe or handler port: a number, or the name of one of the container's
/// ports, or a number written as a string (`probe.ResolveContainerPort`).
pub(crate) fn resolve_port(port: &IntOrString, ports: &[ContainerPort]) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(name) => {
            match ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
            {
                Some(p) => i64::from(p.container_port),
                None => parse_go_int(name)?,
            }
        }
    };
    match u16::try_from(number) {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("invalid port number: {number}")),
    }
}

/// `strconv.Atoi` with its error texts.
fn parse_go_int(s: &str) -> Result<i64, String> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "strconv.Atoi: parsing {}: invalid syntax",
            go_quote(s)
        ));
    }
    s.parse::<i64>()
        .map_err(|_| format!("strconv.Atoi: parsing {}: value out of range", go_quote(s)))
}

/// A failed dial, described as Go's `net.Dial` describes it.
#[derive(Debug, Clone)]
pub(crate) struct DialError {
    pub message: String,
    pub timed_out: bool,
}

/// Resolves `host` (an IP, or a name looked up on the node) and connects from inside
/// the pod's network namespace before `deadline`, trying each address in turn as Go's
/// dialer does; the first failure is reported.
pub(crate) async fn dial(
    access: &dyn ContainerAccess,
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<TcpStream, DialError> {
    let mut first_error = None;
    for addr in resolve_host(host, port, deadline).await? {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timed_out = || DialError {
            message: format!("dial tcp {addr}: i/o timeout"),
            timed_out: true,
        };
        if remaining.is_zero() {
            return Err(first_error.unwrap_or_else(timed_out));
        }
        let error = match tokio::time::timeout_at(deadline, access.connect(addr, remaining)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Err(_) => timed_out(),
            Ok(Err(err)) if err.kind() == std::io::ErrorKind::TimedOut => timed_out(),
            Ok(Err(err)) => DialError {
                message: format!("dial tcp {addr}: connect: {}", errno_text(&err)),
                timed_out: false,
            },
        };
        first_error.get_or_insert(error);
    }
    Err(first_error.unwrap_or_else(|| DialError {
        message: format!("dial tcp: lookup {host}: no such host"),
        timed_out: false,
    }))
}

async fn resolve_host(
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<Vec<SocketAddr>, DialError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    match tokio::time::timeout_at(deadline, tokio::net::lookup_host((bare, port))).await {
        Err(_) => Err(DialError {
            message: format!("dial tcp: lookup {host}: i/o timeout"),
            timed_out: true,
        }),
        Ok(Err(_)) => Err(DialError {
            message: format!("dial tcp: lookup {host}: no such host"),
            timed_out: false,
        }),
        Ok(Ok(addrs)) => Ok(addrs.collect()),
    }
}

/// An OS error as Go prints it (`connection refused`): the C library's text with a
/// lower-case first letter, without Rust's ` (os error N)` suffix.
pub(crate) fn errno_text(err: &std::io::Error) -> String {
    let text = match err.raw_os_error() {
        Some(code) => {
            let full = std::io::Error::from_raw_os_error(code).to_string();
            match full.rfind(" (os error") {
                Some(i) => full[..i].to_string(),
                None => full,
            }
        }
        None => err.to_string(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}
