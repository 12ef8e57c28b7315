//! Envoy/Istio access logs: Istio's default TEXT format field for field, its JSON encoding,
//! Envoy's response flags, and a writer that batches lines and flushes them at least once a
//! second (Envoy runs with `--file-flush-interval-msec 1000`).
//!
//! The formatter is pure: an [`Entry`] of borrowed values in, one line of bytes out.

use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

/// Envoy's response flags, printed in `ResponseFlagUtils` order joined with `,`.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u32);

/// Short names, in the order Envoy prints them; bit `i` of [`ResponseFlags`] is entry `i`.
const FLAG_NAMES: [&str; 29] = [
    "UH", "UF", "UO", "NR", "URX", "NC", "DT", "DC", "LH", "UT", "LR", "UR", "UC", "DI", "FI",
    "RL", "UAEX", "RLSE", "IH", "SI", "DPE", "UPE", "UMSDR", "RFCF", "NFCF", "OM", "DF", "DO",
    "DR",
];

impl ResponseFlags {
    pub const NONE: Self = Self(0);
    /// No healthy upstream host.
    pub const UH: Self = Self(1 << 0);
    /// Upstream connection failure.
    pub const UF: Self = Self(1 << 1);
    /// No route (or no filter chain) found.
    pub const NR: Self = Self(1 << 3);
    /// Retry limit or maximum connect attempts reached.
    pub const URX: Self = Self(1 << 4);
    /// Downstream connection terminated.
    pub const DC: Self = Self(1 << 7);
    /// Upstream request timeout.
    pub const UT: Self = Self(1 << 9);
    /// Upstream remote reset.
    pub const UR: Self = Self(1 << 11);
    /// Upstream connection terminated.
    pub const UC: Self = Self(1 << 12);
    /// Downstream protocol error.
    pub const DPE: Self = Self(1 << 20);
    /// Upstream protocol error.
    pub const UPE: Self = Self(1 << 21);
    /// Downstream remote reset.
    pub const DR: Self = Self(1 << 28);

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }

    /// Writes the flags as Envoy prints them (`-` when there is none).
    pub fn write_to(self, out: &mut Vec<u8>) {
        if self.0 == 0 {
            out.push(b'-');
            return;
        }
        let mut first = true;
        for (i, name) in FLAG_NAMES.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(name.as_bytes());
            }
        }
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::with_capacity(8);
        self.write_to(&mut out);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

impl fmt::Debug for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One access-log record: an HTTP request or a TCP connection. Every `Option` that is `None`
/// prints as `-` (TEXT) or `null` (JSON), as Envoy does for unset values.
#[derive(Clone, Debug, Default)]
pub struct Entry<'a> {
    /// Start of the request or connection.
    pub start: Option<SystemTime>,
    pub method: Option<&'a str>,
    /// `X-ENVOY-ORIGINAL-PATH?:PATH`: the path with query.
    pub path: Option<&'a str>,
    /// `HTTP/1.1`, `HTTP/2`; `None` for TCP.
    pub protocol: Option<&'a str>,
    /// 0 when no response was started (and for TCP).
    pub response_code: u16,
    pub response_flags: ResponseFlags,
    pub response_code_details: Option<&'a str>,
    pub connection_termination_details: Option<&'a str>,
    pub upstream_transport_failure_reason: Option<&'a str>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Milliseconds; `None` prints `-` (e.g. a TCP connection closed before it was counted).
    pub duration_ms: Option<u64>,
    /// `RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)`.
    pub upstream_service_time: Option<u64>,
    pub x_forwarded_for: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub authority: Option<&'a str>,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<&'a str>,
    pub upstream_local_address: Option<SocketAddr>,
    pub downstream_local_address: Option<SocketAddr>,
    pub downstream_remote_address: Option<SocketAddr>,
    pub requested_server_name: Option<&'a str>,
    pub route_name: Option<&'a str>,
}

/// `accessLogEncoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Encoding {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for Encoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "TEXT" | "" => Ok(Self::Text),
            "JSON" => Ok(Self::Json),
            other => Err(format!(
                "unknown access log encoding {other:?} (expected TEXT or JSON)"
            )),
        }
    }
}

/// Appends `[%START_TIME%]`'s timestamp: UTC, ISO-8601 with milliseconds and `Z`.
pub fn write_timestamp(out: &mut Vec<u8>, t: SystemTime) {
    let ms = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    };
    let days = ms.div_euclid(86_400_000);
    let ms_of_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss, mmm) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000,
    );
    // write! into a Vec cannot fail.
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{mmm:03}Z"
    );
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn push_num(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn push_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    let _ = write!(out, "{addr}");
}

fn push_opt(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(s) if !s.is_empty() => out.extend_from_slice(s.as_bytes()),
        _ => out.push(b'-'),
    }
}

fn push_opt_addr(out: &mut Vec<u8>, v: Option<SocketAddr>) {
    match v {
        Some(a) => push_addr(out, a),
        None => out.push(b'-'),
    }
}

fn push_opt_num(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(n) => push_num(out, n),
        None => out.push(b'-'),
    }
}

/// Appends one line in Istio's default TEXT format (`EnvoyTextLogFormat`), newline included.
pub fn format_text(e: &Entry<'_>, out: &mut Vec<u8>) {
    out.push(b'[');
    match e.start {
        Some(t) => write_timestamp(out, t),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b"] \"");
    push_opt(out, e.method);
    out.push(b' ');
    push_opt(out, e.path);
    out.push(b' ');
    push_opt(out, e.protocol);
    out.extend_from_slice(b"\" ");
    push_num(out, u64::from(e.response_code));
    out.push(b' ');
    e.response_flags.write_to(out);
    out.push(b' ');
    push_opt(out, e.response_code_details);
    out.push(b' ');
    push_opt(out, e.connection_termination_details);
    out.extend_from_slice(b" \"");
    push_opt(out, e.upstream_transport_failure_reason);
    out.extend_from_slice(b"\" ");
    push_num(out, e.bytes_received);
    out.push(b' ');
    push_num(out, e.bytes_sent);
    out.push(b' ');
    push_opt_num(out, e.duration_ms);
    out.push(b' ');
    push_opt_num(out, e.upstream_service_time);
    for v in [e.x_forwarded_for, e.user_agent, e.request_id, e.authority] {
        out.extend_from_slice(b" \"");
        push_opt(out, v);
        out.push(b'"');
    }
    out.extend_from_slice(b" \"");
    push_opt_addr(out, e.upstream_host);
    out.extend_from_slice(b"\" ");
    push_opt(out, e.upstream_cluster);
    out.push(b' ');
    push_opt_addr(out, e.upstream_local_address);
    out.push(b' ');
    push_opt_addr(out, e.downstream_local_address);
    out.push(b' ');
    push_opt_addr(out, e.downstream_remote_address);
    out.push(b' ');
    push_opt(out, e.requested_server_name);
    out.push(b' ');
    push_opt(out, e.route_name);
    out.push(b'\n');
}

fn json_str(out: &mut Vec<u8>, v: Option<&str>) {
    let Some(s) = v.filter(|s| !s.is_empty()) else {
        out.extend_from_slice(b"null");
        return;
    };
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                let _ = write!(out, "\\u{b:04x}");
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

fn json_addr(out: &mut Vec<u8>, v: Option<SocketAddr>) {
    match v {
        Some(a) => {
            out.push(b'"');
            push_addr(out, a);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends one line in Istio's JSON encoding (`EnvoyJSONLogFormatIstio`) with the same
/// fields as the TEXT format; unset values are `null`, counts are numbers.
pub fn format_json(e: &Entry<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"start_time\":");
    match e.start {
        Some(t) => {
            out.push(b'"');
            write_timestamp(out, t);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    let strs: [(&str, Option<&str>); 3] = [
        ("method", e.method),
        ("path", e.path),
        ("protocol", e.protocol),
    ];
    for (k, v) in strs {
        let _ = write!(out, ",\"{k}\":");
        json_str(out, v);
    }
    out.extend_from_slice(b",\"response_code\":");
    push_num(out, u64::from(e.response_code));
    out.extend_from_slice(b",\"response_flags\":\"");
    e.response_flags.write_to(out);
    out.push(b'"');
    let strs: [(&str, Option<&str>); 3] = [
        ("response_code_details", e.response_code_details),
        (
            "connection_termination_details",
            e.connection_termination_details,
        ),
        (
            "upstream_transport_failure_reason",
            e.upstream_transport_failure_reason,
        ),
    ];
    for (k, v) in strs {
        let _ = write!(out, ",\"{k}\":");
        json_str(out, v);
    }
    out.extend_from_slice(b",\"bytes_received\":");
    push_num(out, e.bytes_received);
    out.extend_from_slice(b",\"bytes_sent\":");
    push_num(out, e.bytes_sent);
    out.extend_from_slice(b",\"duration\":");
    match e.duration_ms {
        Some(d) => push_num(out, d),
        None => out.extend_from_slice(b"null"),
    }
    // A response header value, so a string like every `%RESP(...)%`.
    out.extend_from_slice(b",\"upstream_service_time\":");
    match e.upstream_service_time {
        Some(t) => {
            out.push(b'"');
            push_num(out, t);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    let strs: [(&str, Option<&str>); 4] = [
        ("x_forwarded_for", e.x_forwarded_for),
        ("user_agent", e.user_agent),
        ("request_id", e.request_id),
        ("authority", e.authority),
    ];
    for (k, v) in strs {
        let _ = write!(out, ",\"{k}\":");
        json_str(out, v);
    }
    out.extend_from_slice(b",\"upstream_host\":");
    json_addr(out, e.upstream_host);
    out.extend_from_slice(b",\"upstream_cluster\":");
    json_str(out, e.upstream_cluster);
    out.extend_from_slice(b",\"upstream_local_address\":");
    json_addr(out, e.upstream_local_address);
    out.extend_from_slice(b",\"downstream_local_address\":");
    json_addr(out, e.downstream_local_address);
    out.extend_from_slice(b",\"downstream_remote_address\":");
    json_addr(out, e.downstream_remote_address);
    out.extend_from_slice(b",\"requested_server_name\":");
    json_str(out, e.requested_server_name);
    out.extend_from_slice(b",\"route_name\":");
    json_str(out, e.route_name);
    out.extend_from_slice(b"}\n");
}

/// Where access-log lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sink {
    Stdout,
    Stderr,
    File(PathBuf),
}

impl Sink {
    /// `accessLogFile`: `/dev/stdout` and `/dev/stderr` write to the inherited descriptors
    /// (reopening them could truncate a redirected file).
    pub fn from_path(path: &str) -> Self {
        match path {
            "/dev/stdout" | "-" => Self::Stdout,
            "/dev/stderr" => Self::Stderr,
            p => Self::File(PathBuf::from(p)),
        }
    }
}

/// Bytes buffered before a flush is requested ahead of the 1 s timer.
const FLUSH_THRESHOLD: usize = 64 * 1024;
/// Envoy's `--file-flush-interval-msec 1000`.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

struct Inner {
    encoding: Encoding,
    buf: Mutex<Vec<u8>>,
    wake: Notify,
    out: Mutex<Box<dyn std::io::Write + Send>>,
}

/// A cheap handle on the access log; lines are appended to a shared buffer and written by
/// [`AccessLog::run_flusher`] so the data path never blocks on the sink.
#[derive(Clone)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

impl fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessLog")
            .field("encoding", &self.inner.encoding)
            .finish()
    }
}

impl AccessLog {
    /// Opens the sink (files are created and appended to).
    pub fn open(sink: &Sink, encoding: Encoding) -> std::io::Result<Self> {
        let out: Box<dyn std::io::Write + Send> = match sink {
            Sink::Stdout => Box::new(std::io::stdout()),
            Sink::Stderr => Box::new(std::io::stderr()),
            Sink::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        Ok(Self::with_writer(out, encoding))
    }

    /// A log writing to any writer (tests use an in-memory one).
    pub fn with_writer(out: Box<dyn std::io::Write + Send>, encoding: Encoding) -> Self {
        Self {
            inner: Arc::new(Inner {
                encoding,
                buf: Mutex::new(Vec::with_capacity(4096)),
                wake: Notify::new(),
                out: Mutex::new(out),
            }),
        }
    }

    pub fn encoding(&self) -> Encoding {
        self.inner.encoding
    }

    /// Formats the entry into the shared buffer.
    pub fn log(&self, entry: &Entry<'_>) {
        let len = {
            let mut buf = match self.inner.buf.lock() {
                Ok(b) => b,
                Err(poisoned) => poisoned.into_inner(),
            };
            match self.inner.encoding {
                Encoding::Text => format_text(entry, &mut buf),
                Encoding::Json => format_json(entry, &mut buf),
            }
            buf.len()
        };
        if len >= FLUSH_THRESHOLD {
            self.inner.wake.notify_one();
        }
    }

    /// Writes out everything buffered so far (blocking; call off the data path).
    pub fn flush_blocking(&self) {
        let pending = {
            let mut buf = match self.inner.buf.lock() {
                Ok(b) => b,
                Err(poisoned) => poisoned.into_inner(),
            };
            if buf.is_empty() {
                return;
            }
            std::mem::replace(&mut *buf, Vec::with_capacity(4096))
        };
        let mut out = match self.inner.out.lock() {
            Ok(o) => o,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Err(err) = out.write_all(&pending).and_then(|()| out.flush()) {
            tracing::warn!(%err, "writing the access log");
        }
    }

    /// Flushes from a blocking thread.
    pub async fn flush(&self) {
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || this.flush_blocking()).await;
    }

    /// Flushes at least every second until the future is dropped.
    pub async fn run_flusher(self) {
        loop {
            let _ = tokio::time::timeout(FLUSH_INTERVAL, self.inner.wake.notified()).await;
            self.flush().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(iso_ms: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(iso_ms as u64)
    }

    fn text(e: &Entry<'_>) -> String {
        let mut out = Vec::new();
        format_text(e, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn json(e: &Entry<'_>) -> serde_json::Value {
        let mut out = Vec::new();
        format_json(e, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        serde_json::from_slice(&out).unwrap()
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    /// 2020-11-25T21:26:18.409Z
    const T_2020: i64 = 1_606_339_578_409;

    fn istio_doc_outbound() -> Entry<'static> {
        Entry {
            start: Some(at(T_2020)),
            method: Some("GET"),
            path: Some("/status/418"),
            protocol: Some("HTTP/1.1"),
            response_code: 418,
            response_code_details: Some("via_upstream"),
            bytes_received: 0,
            bytes_sent: 135,
            duration_ms: Some(4),
            upstream_service_time: Some(4),
            user_agent: Some("curl/7.73.0-DEV"),
            request_id: Some("84961386-6d84-929d-98bd-c5aee93b5c88"),
            authority: Some("httpbin:8000"),
            upstream_host: addr("10.44.1.27:80"),
            upstream_cluster: Some("outbound|8000||httpbin.foo.svc.cluster.local"),
            upstream_local_address: addr("10.44.1.23:37652"),
            downstream_local_address: addr("10.0.45.184:8000"),
            downstream_remote_address: addr("10.44.1.23:46520"),
            route_name: Some("default"),
            ..Entry::default()
        }
    }

    #[test]
    fn timestamps_use_envoy_format() {
        let mut out = Vec::new();
        write_timestamp(&mut out, at(T_2020));
        assert_eq!(out, b"2020-11-25T21:26:18.409Z");
        out.clear();
        write_timestamp(&mut out, UNIX_EPOCH);
        assert_eq!(out, b"1970-01-01T00:00:00.000Z");
        out.clear();
        // A leap day, to exercise the calendar conversion.
        write_timestamp(&mut out, at(1_709_208_000_007));
        assert_eq!(out, b"2024-02-29T12:00:00.007Z");
    }

    #[test]
    fn text_matches_the_istio_doc_outbound_line() {
        assert_eq!(
            text(&istio_doc_outbound()),
            "[2020-11-25T21:26:18.409Z] \"GET /status/418 HTTP/1.1\" 418 - via_upstream - \"-\" 0 135 4 4 \"-\" \"curl/7.73.0-DEV\" \"84961386-6d84-929d-98bd-c5aee93b5c88\" \"httpbin:8000\" \"10.44.1.27:80\" outbound|8000||httpbin.foo.svc.cluster.local 10.44.1.23:37652 10.0.45.184:8000 10.44.1.23:46520 - default\n"
        );
    }

    #[test]
    fn text_matches_the_inbound_line_with_sni() {
        let e = Entry {
            start: Some(at(1_723_509_107_696)),
            method: Some("GET"),
            path: Some("/status/418"),
            protocol: Some("HTTP/1.1"),
            response_code: 418,
            response_code_details: Some("via_upstream"),
            bytes_sent: 135,
            duration_ms: Some(2),
            upstream_service_time: Some(1),
            user_agent: Some("curl/8.9.1"),
            request_id: Some("cdecaca5-5964-48f3-b42d-f474dfa623d5"),
            authority: Some("httpbin:8000"),
            upstream_host: addr("10.244.0.13:8080"),
            upstream_cluster: Some("inbound|8080||"),
            upstream_local_address: addr("127.0.0.6:55401"),
            downstream_local_address: addr("10.244.0.13:8080"),
            downstream_remote_address: addr("10.244.0.12:53336"),
            requested_server_name: Some("outbound_.8000_._.httpbin.default.svc.cluster.local"),
            route_name: Some("default"),
            ..Entry::default()
        };
        assert_eq!(
            text(&e),
            "[2024-08-13T00:31:47.696Z] \"GET /status/418 HTTP/1.1\" 418 - via_upstream - \"-\" 0 135 2 1 \"-\" \"curl/8.9.1\" \"cdecaca5-5964-48f3-b42d-f474dfa623d5\" \"httpbin:8000\" \"10.244.0.13:8080\" inbound|8080|| 127.0.0.6:55401 10.244.0.13:8080 10.244.0.12:53336 outbound_.8000_._.httpbin.default.svc.cluster.local default\n"
        );
    }

    #[test]
    fn text_tcp_passthrough_line() {
        let e = Entry {
            start: Some(at(1_706_343_384_096)),
            bytes_received: 789,
            bytes_sent: 6074,
            duration_ms: Some(53),
            upstream_host: addr("151.101.131.5:443"),
            upstream_cluster: Some("PassthroughCluster"),
            upstream_local_address: addr("10.42.0.7:48158"),
            downstream_local_address: addr("151.101.131.5:443"),
            downstream_remote_address: addr("10.42.0.7:48150"),
            ..Entry::default()
        };
        assert_eq!(
            text(&e),
            "[2024-01-27T08:16:24.096Z] \"- - -\" 0 - - - \"-\" 789 6074 53 - \"-\" \"-\" \"-\" \"-\" \"151.101.131.5:443\" PassthroughCluster 10.42.0.7:48158 151.101.131.5:443 10.42.0.7:48150 - -\n"
        );
    }

    #[test]
    fn text_upstream_refused_and_no_endpoints() {
        let refused = Entry {
            start: Some(at(T_2020)),
            method: Some("GET"),
            path: Some("/"),
            protocol: Some("HTTP/1.1"),
            response_code: 503,
            response_flags: ResponseFlags::UF | ResponseFlags::URX,
            response_code_details: Some(
                "upstream_reset_before_response_started{connection_failure}",
            ),
            bytes_sent: 91,
            duration_ms: Some(24255),
            user_agent: Some("curl/7.68.0"),
            request_id: Some("x"),
            authority: Some("customer.default.svc.cluster.local:8080"),
            upstream_host: addr("172.16.0.15:8080"),
            upstream_cluster: Some("outbound|8080||customer.default.svc.cluster.local"),
            downstream_local_address: addr("172.18.2.58:8080"),
            downstream_remote_address: addr("192.168.205.6:34832"),
            route_name: Some("default"),
            ..Entry::default()
        };
        let line = text(&refused);
        assert!(
            line.ends_with("\"GET / HTTP/1.1\" 503 UF,URX upstream_reset_before_response_started{connection_failure} - \"-\" 0 91 24255 - \"-\" \"curl/7.68.0\" \"x\" \"customer.default.svc.cluster.local:8080\" \"172.16.0.15:8080\" outbound|8080||customer.default.svc.cluster.local - 172.18.2.58:8080 192.168.205.6:34832 - default\n"),
            "{line}"
        );
        let none = Entry {
            response_code: 503,
            response_flags: ResponseFlags::UH,
            response_code_details: Some("no_healthy_upstream"),
            bytes_sent: 19,
            duration_ms: Some(0),
            upstream_host: None,
            ..refused
        };
        let line = text(&none);
        assert!(
            line.contains(" 503 UH no_healthy_upstream - \"-\" 0 19 0 - "),
            "{line}"
        );
        assert!(line.contains(" \"-\" outbound|8080||"), "{line}");
    }

    #[test]
    fn flags_print_in_envoy_order() {
        let mut out = Vec::new();
        (ResponseFlags::URX | ResponseFlags::UF).write_to(&mut out);
        assert_eq!(out, b"UF,URX");
        out.clear();
        (ResponseFlags::DC | ResponseFlags::UH | ResponseFlags::DR).write_to(&mut out);
        assert_eq!(out, b"UH,DC,DR");
        out.clear();
        ResponseFlags::NONE.write_to(&mut out);
        assert_eq!(out, b"-");
        assert_eq!(ResponseFlags::NR.to_string(), "NR");
        assert!((ResponseFlags::UF | ResponseFlags::URX).contains(ResponseFlags::URX));
    }

    #[test]
    fn json_has_every_field_with_nulls_for_unset() {
        let v = json(&istio_doc_outbound());
        let obj = v.as_object().unwrap();
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        let mut expected = vec![
            "start_time",
            "method",
            "path",
            "protocol",
            "response_code",
            "response_flags",
            "response_code_details",
            "connection_termination_details",
            "upstream_transport_failure_reason",
            "bytes_received",
            "bytes_sent",
            "duration",
            "upstream_service_time",
            "x_forwarded_for",
            "user_agent",
            "request_id",
            "authority",
            "upstream_host",
            "upstream_cluster",
            "upstream_local_address",
            "downstream_local_address",
            "downstream_remote_address",
            "requested_server_name",
            "route_name",
        ];
        let mut got = keys.clone();
        got.sort_unstable();
        expected.sort_unstable();
        assert_eq!(got, expected);
        assert_eq!(v["start_time"], "2020-11-25T21:26:18.409Z");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["response_code"], 418);
        assert_eq!(v["response_flags"], "-");
        assert_eq!(v["bytes_sent"], 135);
        assert_eq!(v["duration"], 4);
        assert_eq!(v["upstream_service_time"], "4");
        assert!(v["x_forwarded_for"].is_null());
        assert!(v["connection_termination_details"].is_null());
        assert_eq!(
            v["upstream_cluster"],
            "outbound|8000||httpbin.foo.svc.cluster.local"
        );
        assert_eq!(v["downstream_local_address"], "10.0.45.184:8000");
        assert!(v["requested_server_name"].is_null());
        assert_eq!(v["route_name"], "default");
    }

    #[test]
    fn json_escapes_strings() {
        let e = Entry {
            user_agent: Some("a \"quoted\" \\ agent\t"),
            response_flags: ResponseFlags::UF | ResponseFlags::URX,
            ..Entry::default()
        };
        let v = json(&e);
        assert_eq!(v["user_agent"], "a \"quoted\" \\ agent\t");
        assert_eq!(v["response_flags"], "UF,URX");
        assert!(v["start_time"].is_null());
        assert!(v["method"].is_null());
        assert_eq!(v["response_code"], 0);
    }

    #[test]
    fn writer_buffers_until_flushed() {
        #[derive(Clone, Default)]
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Shared::default();
        let log = AccessLog::with_writer(Box::new(sink.clone()), Encoding::Text);
        log.log(&istio_doc_outbound());
        log.log(&istio_doc_outbound());
        assert!(sink.0.lock().unwrap().is_empty());
        log.flush_blocking();
        let written = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(written.lines().count(), 2);
        assert_eq!(written, text(&istio_doc_outbound()).repeat(2));
    }

    #[test]
    fn encoding_parses_case_insensitively() {
        assert_eq!("json".parse::<Encoding>(), Ok(Encoding::Json));
        assert_eq!("TEXT".parse::<Encoding>(), Ok(Encoding::Text));
        assert!("yaml".parse::<Encoding>().is_err());
    }
}
