//! A small HTTP/1.1 GET client for httpGet probes and hooks, speaking over connections
//! opened by [`ContainerAccess::connect`] (plain, or TLS without verification as the
//! kubelet does), with the kubelet's request shape and Go's error texts.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::time::Instant;

use super::{ProbeOutcome, dial, go_quote, resolve_port, tls};
use crate::access::ContainerAccess;

/// Kubernetes minor version advertised in `User-Agent: kube-probe/1.33`.
const KUBE_VERSION: &str = "1.33";
/// The kubelet reads at most this much of a response body.
const MAX_BODY: usize = 10 * 1024;
/// Limit on the status line plus headers of a response.
const MAX_HEAD: usize = 1 << 20;
/// Go's http.Client gives up after this many redirects.
const MAX_REDIRECTS: usize = 10;

/// An absolute http(s) URL, kept in the pieces the client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    pub https: bool,
    /// Host name or IP, without IPv6 brackets.
    pub host: String,
    /// Port as written in the URL, if it was.
    pub port: Option<u16>,
    /// Path and query, starting with `/`.
    pub target: String,
}

impl Url {
    fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(if self.https { 443 } else { 80 })
    }

    /// `host[:port]` as it appears in the URL and in the `Host` header.
    fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }

    /// Parses an absolute `http://` or `https://` URL.
    fn parse_absolute(s: &str) -> Option<Url> {
        let (https, rest) = if let Some(rest) = strip_prefix_ci(s, "http://") {
            (false, rest)
        } else {
            (true, strip_prefix_ci(s, "https://")?)
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(end);
        let (host, port) = split_authority(authority)?;
        Some(Url {
            https,
            host,
            port,
            target: normalize_target(target),
        })
    }

    /// Resolves a `Location` header against this URL.
    fn join(&self, location: &str) -> Option<Url> {
        let location = location.trim();
        if let Some(url) = Url::parse_absolute(location) {
            return Some(url);
        }
        if location.contains("://") {
            // Some other scheme; Go refuses to follow it.
            return None;
        }
        if let Some(rest) = location.strip_prefix("//") {
            let scheme = if self.https { "https://" } else { "http://" };
            return Url::parse_absolute(&format!("{scheme}{rest}"));
        }
        let target = if location.starts_with('/') {
            location.to_string()
        } else if let Some(query) = location.strip_prefix('?') {
            let path = self.target.split('?').next().unwrap_or("/");
            format!("{path}?{query}")
        } else {
            let path = self.target.split('?').next().unwrap_or("/");
            let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{location}")
        };
        Some(Url {
            target: normalize_target(&target),
            ..self.clone()
        })
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.target)
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let close = rest.find(']')?;
        let port = rest[close + 1..].strip_prefix(':');
        (&rest[..close], port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    Some((host.to_string(), port))
}

/// Drops any fragment, makes the path absolute and escapes bytes that cannot appear in a
/// request line.
fn normalize_target(target: &str) -> String {
    let target = target.split('#').next().unwrap_or_default();
    let mut out = String::with_capacity(target.len() + 1);
    if !target.starts_with('/') {
        out.push('/');
    }
    for b in target.bytes() {
        if b <= b' ' || b >= 0x7f {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// A GET request as the kubelet builds it (`NewRequestForHTTPGetAction`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub url: Url,
    /// Headers to send besides `Host` and `Connection`, names in canonical form.
    pub headers: Vec<(String, String)>,
    /// A `Host` given in `httpHeaders`, sent instead of the URL's authority.
    pub host_header: Option<String>,
}

impl Request {
    /// `purpose` is `probe` or `lifecycle` (`User-Agent: kube-<purpose>/1.33`).
    pub fn for_action(
        action: &HTTPGetAction,
        ports: &[ContainerPort],
        pod_ip: IpAddr,
        purpose: &str,
    ) -> Result<Request, String> {
        let https = action
            .scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("https"));
        let host = match action.host.as_deref() {
            Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_string(),
            _ => pod_ip.to_string(),
        };
        let port = resolve_port(&action.port, ports)?;
        let target = normalize_target(action.path.as_deref().unwrap_or_default());

        let mut headers: Vec<(String, String)> = Vec::new();
        for h in action.http_headers.iter().flatten() {
            headers.push((canonical_header_name(&h.name), sanitize_value(&h.value)));
        }
        let has = |headers: &[(String, String)], name: &str| headers.iter().any(|(n, _)| n == name);
        if !has(&headers, "User-Agent") {
            headers.push((
                "User-Agent".into(),
                format!("kube-{purpose}/{KUBE_VERSION}"),
            ));
        }
        if !has(&headers, "Accept") {
            headers.push(("Accept".into(), "*/*".into()));
        } else if headers
            .iter()
            .find(|(n, _)| n == "Accept")
            .is_some_and(|(_, v)| v.is_empty())
        {
            // An explicitly empty Accept removes the header.
            headers.retain(|(n, _)| n != "Accept");
        }
        let host_header = headers
            .iter()
            .find(|(n, _)| n == "Host")
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty());
        headers.retain(|(n, v)| n != "Host" && !(n == "User-Agent" && v.is_empty()));

        Ok(Request {
            url: Url {
                https,
                host,
                port: Some(port),
                target,
            },
            headers,
            host_header,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let host = self
            .host_header
            .clone()
            .unwrap_or_else(|| self.url.authority());
        let mut out = format!("GET {} HTTP/1.1\r\nHost: {host}\r\n", self.url.target);
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        // The kubelet's probe transport disables keep-alive.
        out.push_str("Connection: close\r\n\r\n");
        out.into_bytes()
    }
}

/// Go's `CanonicalMIMEHeaderKey`: `x-custom-header` becomes `X-Custom-Header`; names with
/// characters outside the token set are left alone.
fn canonical_header_name(name: &str) -> String {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return name.to_string();
    }
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// Header values cannot carry line breaks (Go replaces them with spaces too).
fn sanitize_value(value: &str) -> String {
    value.replace(['\r', '\n'], " ")
}

/// A response, with at most [`MAX_BODY`] bytes of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A failed GET, with the text Go's client would give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GetError {
    pub message: String,
    pub timed_out: bool,
    /// The response head arrived; reading the body failed.
    pub in_body: bool,
}

impl GetError {
    fn transport(url: &Url, err: impl fmt::Display) -> Self {
        Self {
            message: format!("Get {}: {err}", go_quote(&url.to_string())),
            timed_out: false,
            in_body: false,
        }
    }

    fn awaiting_headers(url: &Url, cause: &str) -> Self {
        Self {
            message: format!(
                "Get {}: {cause} (Client.Timeout exceeded while awaiting headers)",
                go_quote(&url.to_string())
            ),
            timed_out: true,
            in_body: false,
        }
    }
}

/// GETs `req` within `timeout` (for the whole exchange, redirects included, as Go's
/// `Client.Timeout`). Like the kubelet's probe and hook clients, redirects are followed
/// only to the same host name; any other redirect is returned as the response.
pub(crate) async fn get(
    access: &dyn ContainerAccess,
    req: &Request,
    timeout: Duration,
) -> Result<Response, GetError> {
    let deadline = Instant::now() + timeout;
    let mut current = req.clone();
    // Requests made so far, as Go's `via` list.
    let mut made = 1;
    loop {
        let (response, location) = exchange(access, &current, deadline).await?;
        let Some(location) = location.filter(|_| is_followed_redirect(response.status)) else {
            return Ok(response);
        };
        let Some(next) = current.url.join(&location) else {
            return Err(GetError::transport(
                &current.url,
                format!("failed to parse Location header {}", go_quote(&location)),
            ));
        };
        if next.host != req.url.host {
            return Ok(response);
        }
        if made >= MAX_REDIRECTS {
            // Go reports the Location as written, not the resolved URL.
            return Err(GetError {
                message: format!(
                    "Get {}: stopped after {MAX_REDIRECTS} redirects",
                    go_quote(&location)
                ),
                timed_out: false,
                in_body: false,
            });
        }
        made += 1;
        // A custom Host header survives only relative redirects (Go's rule).
        let relative =
            Url::parse_absolute(location.trim()).is_none() && !location.trim().starts_with("//");
        current = Request {
            url: next,
            headers: current.headers.clone(),
            host_header: current.host_header.clone().filter(|_| relative),
        };
    }
}

fn is_followed_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// One request/response on a fresh connection; returns the `Location` header too.
async fn exchange(
    access: &dyn ContainerAccess,
    req: &Request,
    deadline: Instant,
) -> Result<(Response, Option<String>), GetError> {
    let url = &req.url;
    let stream = match dial(access, &url.host, url.port_or_default(), deadline).await {
        Ok(stream) => stream,
        Err(err) if err.timed_out => return Err(GetError::awaiting_headers(url, &err.message)),
        Err(err) => return Err(GetError::transport(url, err.message)),
    };
    if url.https {
        let connect = tls::connect(&url.host, stream);
        let tls_stream = match tokio::time::timeout_at(deadline, connect).await {
            Err(_) => {
                return Err(GetError::awaiting_headers(
                    url,
                    "net/http: TLS handshake timeout",
                ));
            }
            Ok(Err(err)) => return Err(GetError::transport(url, err)),
            Ok(Ok(s)) => s,
        };
        talk(tls_stream, req, deadline).await
    } else {
        talk(stream, req, deadline).await
    }
}

async fn talk<S>(
    stream: S,
    req: &Request,
    deadline: Instant,
) -> Result<(Response, Option<String>), GetError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let url = &req.url;
    let mut reader = BufReader::new(stream);
    let head = async {
        reader
            .get_mut()
            .write_all(&req.encode())
            .await
            .map_err(|e| GetError::transport(url, super::errno_text(&e)))?;
        reader
            .get_mut()
            .flush()
            .await
            .map_err(|e| GetError::transport(url, super::errno_text(&e)))?;
        loop {
            let head = read_head(&mut reader)
                .await
                .map_err(|e| GetError::transport(url, e))?;
            // Informational responses precede the real one.
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            return Ok(head);
        }
    };
    let head = match tokio::time::timeout_at(deadline, head).await {
        Err(_) => return Err(GetError::awaiting_headers(url, "context deadline exceeded")),
        Ok(result) => result?,
    };
    let body = match tokio::time::timeout_at(deadline, read_body(&mut reader, &head)).await {
        Err(_) => {
            return Err(GetError {
                message: "context deadline exceeded (Client.Timeout or context cancellation while reading body)"
                    .into(),
                timed_out: true,
                in_body: true,
            });
        }
        Ok(Err(message)) => {
            return Err(GetError {
                message,
                timed_out: false,
                in_body: true,
            });
        }
        Ok(Ok(body)) => body,
    };
    let location = head.header("location").map(str::to_string);
    Ok((
        Response {
            status: head.status,
            body,
        },
        location,
    ))
}

struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one line, without its line ending; `None` at a clean EOF.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    budget: &mut usize,
) -> Result<Option<String>, String> {
    let mut line = Vec::new();
    let n = (&mut *reader)
        .take(*budget as u64 + 1)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| super::errno_text(&e))?;
    if n == 0 {
        return Ok(None);
    }
    if n > *budget {
        return Err(format!(
            "net/http: server response headers exceeded {MAX_HEAD} bytes; aborted"
        ));
    }
    *budget -= n;
    if line.last() != Some(&b'\n') {
        return Err("unexpected EOF".into());
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

async fn read_head<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Head, String> {
    let mut budget = MAX_HEAD;
    let status_line = match read_line(reader, &mut budget).await? {
        Some(line) => line,
        None => return Err("EOF".into()),
    };
    let broken = |what: &str, value: &str| {
        format!(
            "net/http: HTTP/1.x transport connection broken: malformed HTTP {what} {}",
            go_quote(value)
        )
    };
    let Some((proto, rest)) = status_line.split_once(' ') else {
        return Err(broken("response", &status_line));
    };
    if !proto.starts_with("HTTP/1.") {
        return Err(broken("version", proto));
    }
    let code = rest.split(' ').next().unwrap_or_default();
    let status = match code.parse::<u16>() {
        Ok(s) if code.len() == 3 && (100..1000).contains(&s) => s,
        _ => return Err(broken("status code", code)),
    };
    let mut headers = Vec::new();
    loop {
        let Some(line) = read_line(reader, &mut budget).await? else {
            return Err("unexpected EOF".into());
        };
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    Ok(Head { status, headers })
}

/// Reads up to [`MAX_BODY`] bytes of the body; more is not needed.
async fn read_body<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    head: &Head,
) -> Result<Vec<u8>, String> {
    if head.status == 204 || head.status == 304 || head.status == 101 {
        return Ok(Vec::new());
    }
    let io = |e: std::io::Error| super::errno_text(&e);
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        let mut budget = MAX_HEAD;
        while body.len() < MAX_BODY {
            let line = read_line(reader, &mut budget)
                .await?
                .ok_or_else(|| "unexpected EOF".to_string())?;
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| "malformed chunked encoding".to_string())?;
            if size == 0 {
                break;
            }
            let want = size.min(MAX_BODY - body.len());
            let start = body.len();
            body.resize(start + want, 0);
            reader.read_exact(&mut body[start..]).await.map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    "unexpected EOF".to_string()
                } else {
                    io(e)
                }
            })?;
            if want < size {
                break;
            }
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf).await.map_err(io)?;
        }
    } else if let Some(length) = head.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| format!("bad Content-Length {}", go_quote(length)))?;
        body.resize(length.min(MAX_BODY), 0);
        reader.read_exact(&mut body).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "unexpected EOF".to_string()
            } else {
                io(e)
            }
        })?;
    } else {
        (&mut *reader)
            .take(MAX_BODY as u64)
            .read_to_end(&mut body)
            .await
            .map_err(io)?;
    }
    Ok(body)
}

/// One httpGet probe attempt (`pkg/probe/http`): success for 2xx and for a redirect it
/// does not follow (with a warning), failure with `HTTP probe failed with statuscode: N`
/// otherwise, or with the transport error.
pub(crate) async fn probe(
    action: &HTTPGetAction,
    ports: &[ContainerPort],
    access: &dyn ContainerAccess,
    timeout: Duration,
) -> ProbeOutcome {
    let req = match Request::for_action(action, ports, access.pod_ip(), "probe") {
        Ok(req) => req,
        Err(err) => return ProbeOutcome::errored(err),
    };
    match get(access, &req, timeout).await {
        // A body that cannot be read makes the kubelet's attempt error out, not fail.
        Err(err) if err.in_body => ProbeOutcome::errored(err.message),
        Err(err) => ProbeOutcome::failure(err.message),
        Ok(resp) => {
            let body = String::from_utf8_lossy(&resp.body).into_owned();
            match resp.status {
                200..=299 => ProbeOutcome::success(body),
                300..=399 => ProbeOutcome {
                    warning: true,
                    ..ProbeOutcome::success(format!(
                        "Probe terminated redirects, Response body: {body}"
                    ))
                },
                status => {
                    ProbeOutcome::failure(format!("HTTP probe failed with statuscode: {status}"))
                }
            }
        }
    }
}
