//! Routing and the endpoints. Method rules follow httpbin: HEAD is allowed wherever GET
//! is, OPTIONS answers a CORS preflight on every known path, other wrong methods get 405.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::echo::{self, MultiDict};
use crate::rng::SplitMix64;

pub type Body = Full<Bytes>;

/// Longest `/delay/{s}`, as in httpbin.
const MAX_DELAY: Duration = Duration::from_secs(10);
/// Largest `/bytes/{n}`, as in httpbin.
const MAX_BYTES: usize = 100 * 1024;
/// Request bodies are echoed back in memory; refuse anything bigger than this.
const MAX_REQUEST_BODY: usize = 4 * 1024 * 1024;

const INDEX: &str = "\
httpbin: HTTP request and response service (HTTP/1.1 and h2c)

  GET  /               this page
  GET  /get            the request's query args, headers, origin and URL
  GET  /headers        the request's headers
  GET  /ip             the client's IP (first X-Forwarded-For entry if any)
  GET  /user-agent     the request's User-Agent
  GET  /hostname       the server's host name (which replica answered)
  ANY  /anything[/..]  everything about the request, body included
  POST /post           the request with its body (likewise PUT /put, PATCH /patch, DELETE /delete)
  ANY  /status/{code}  an empty response with that status code
  ANY  /delay/{s}      like /get after s seconds (at most 10, fractions allowed)
  GET  /bytes/{n}      n random bytes (at most 102400; ?seed=N for repeatable ones)
";

const GET_ONLY: &[Method] = &[Method::GET];

/// Why a request could not be answered normally.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("Invalid status code")]
    InvalidStatus,
    #[error("invalid delay {0:?}: want a number of seconds, at least 0")]
    InvalidDelay(String),
    #[error("invalid byte count {0:?}: want a whole number, at least 0")]
    InvalidCount(String),
    #[error("invalid seed {0:?}: want a whole number")]
    InvalidSeed(String),
    #[error("request body larger than {MAX_REQUEST_BODY} bytes")]
    BodyTooLarge,
    #[error("cannot read the request body: {0}")]
    Body(String),
}

impl RequestError {
    fn into_response(self) -> Response<Body> {
        let status = match self {
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        text(status, format!("{self}\n"))
    }
}

enum Route {
    Index,
    Get,
    Headers,
    Ip,
    UserAgent,
    Hostname,
    Anything,
    /// `/post`, `/put`, `/patch`, `/delete`: the body echo, for that one method.
    BodyMethod(Method),
    Status(String),
    Delay(String),
    Bytes(String),
}

impl Route {
    fn parse(path: &str) -> Option<Self> {
        let route = match path {
            "/" => Self::Index,
            "/get" => Self::Get,
            "/headers" => Self::Headers,
            "/ip" => Self::Ip,
            "/user-agent" => Self::UserAgent,
            "/hostname" => Self::Hostname,
            "/anything" => Self::Anything,
            "/post" => Self::BodyMethod(Method::POST),
            "/put" => Self::BodyMethod(Method::PUT),
            "/patch" => Self::BodyMethod(Method::PATCH),
            "/delete" => Self::BodyMethod(Method::DELETE),
            _ => {
                if path.starts_with("/anything/") {
                    return Some(Self::Anything);
                }
                let (prefix, param) = path.strip_prefix('/')?.split_once('/')?;
                // One segment only: /status/200/x is not a route.
                if param.is_empty() || param.contains('/') {
                    return None;
                }
                let param = param.to_owned();
                match prefix {
                    "status" => Self::Status(param),
                    "delay" => Self::Delay(param),
                    "bytes" => Self::Bytes(param),
                    _ => return None,
                }
            }
        };
        Some(route)
    }

    /// The methods this route answers (HEAD comes with GET); `None` means any method.
    fn methods(&self) -> Option<&[Method]> {
        match self {
            Self::Index
            | Self::Get
            | Self::Headers
            | Self::Ip
            | Self::UserAgent
            | Self::Hostname => Some(GET_ONLY),
            Self::Bytes(_) => Some(GET_ONLY),
            Self::BodyMethod(m) => Some(std::slice::from_ref(m)),
            Self::Anything | Self::Status(_) | Self::Delay(_) => None,
        }
    }
}

#[derive(Serialize)]
struct GetEcho {
    args: MultiDict,
    headers: BTreeMap<String, String>,
    origin: String,
    url: String,
}

/// Fields in alphabetical order, which is the order httpbin prints them in.
#[derive(Serialize)]
struct FullEcho {
    args: MultiDict,
    data: String,
    files: MultiDict,
    form: MultiDict,
    headers: BTreeMap<String, String>,
    json: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    origin: String,
    url: String,
}

#[derive(Serialize)]
struct HeadersEcho {
    headers: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct IpEcho {
    origin: String,
}

#[derive(Serialize)]
struct HostnameEcho {
    hostname: String,
}

#[derive(Serialize)]
struct UserAgentEcho {
    #[serde(rename = "user-agent")]
    user_agent: Option<String>,
}

/// Answers one request and writes an access log line for it.
pub async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let version = req.version();
    let client = echo::origin(req.headers(), peer);
    let user_agent = header_text(req.headers(), header::USER_AGENT).unwrap_or_default();
    let cors_origin = req.headers().get(header::ORIGIN).cloned();

    let mut response = match dispatch(req, peer, local).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };

    // httpbin allows any origin, credentials included, so browsers can call it.
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        cors_origin.unwrap_or_else(|| HeaderValue::from_static("*")),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );

    let size = body_len(response.body());
    if method == Method::HEAD {
        // Same headers as GET, no body; HTTP/2 does not drop the body by itself.
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        *response.body_mut() = Body::default();
    }

    println!(
        "{client} \"{method} {target} {version:?}\" {} {size} {:.1}ms \"{user_agent}\"",
        response.status().as_u16(),
        started.elapsed().as_secs_f64() * 1000.0,
    );
    response
}

async fn dispatch(
    req: Request<Incoming>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) -> Result<Response<Body>, RequestError> {
    let Some(route) = Route::parse(req.uri().path()) else {
        return Ok(text(StatusCode::NOT_FOUND, "404 Not Found\n"));
    };
    let method = req.method();
    if method == Method::OPTIONS {
        return Ok(preflight(req.headers(), route.methods()));
    }
    if let Some(allowed) = route.methods() {
        let get_like = method == Method::HEAD && allowed.contains(&Method::GET);
        if !allowed.contains(method) && !get_like {
            return Ok(method_not_allowed(allowed));
        }
    }

    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    let uri = &parts.uri;
    let args = || echo::parse_multi(uri.query().unwrap_or_default().as_bytes());
    let get_echo = || GetEcho {
        args: args(),
        headers: echo::headers(headers, uri),
        origin: echo::origin(headers, peer),
        url: echo::url(headers, uri, local),
    };
    let full_echo = |bytes: &[u8], method: Option<&Method>| {
        let body = echo::body(headers, bytes);
        FullEcho {
            args: args(),
            data: body.data,
            files: MultiDict::new(),
            form: body.form,
            headers: echo::headers(headers, uri),
            json: body.json,
            method: method.map(|m| m.as_str().to_owned()),
            origin: echo::origin(headers, peer),
            url: echo::url(headers, uri, local),
        }
    };

    let response = match route {
        Route::Index => text(StatusCode::OK, INDEX),
        Route::Get => json(&get_echo()),
        Route::Headers => json(&HeadersEcho {
            headers: echo::headers(headers, uri),
        }),
        Route::Ip => json(&IpEcho {
            origin: echo::origin(headers, peer),
        }),
        Route::Hostname => json(&HostnameEcho {
            hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
        }),
        Route::UserAgent => json(&UserAgentEcho {
            user_agent: header_text(headers, header::USER_AGENT),
        }),
        Route::Anything => {
            let bytes = read_body(body).await?;
            json(&full_echo(&bytes, Some(&parts.method)))
        }
        Route::BodyMethod(_) => {
            let bytes = read_body(body).await?;
            json(&full_echo(&bytes, None))
        }
        Route::Status(code) => status(&code)?,
        Route::Delay(seconds) => {
            let delay = parse_delay(&seconds)?;
            let bytes = read_body(body).await?;
            tokio::time::sleep(delay).await;
            json(&full_echo(&bytes, None))
        }
        Route::Bytes(count) => random_bytes(&count, uri.query())?,
    };
    Ok(response)
}

async fn read_body(body: Incoming) -> Result<Bytes, RequestError> {
    match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(RequestError::BodyTooLarge),
        Err(e) => Err(RequestError::Body(e.to_string())),
    }
}

fn status(code: &str) -> Result<Response<Body>, RequestError> {
    let code: u16 = code.parse().map_err(|_| RequestError::InvalidStatus)?;
    // 1xx are interim responses and cannot end an exchange; above 599 is not HTTP.
    if !(200..=599).contains(&code) {
        return Err(RequestError::InvalidStatus);
    }
    let status = StatusCode::from_u16(code).map_err(|_| RequestError::InvalidStatus)?;
    let mut response = Response::new(Body::default());
    *response.status_mut() = status;
    Ok(response)
}

fn parse_delay(seconds: &str) -> Result<Duration, RequestError> {
    let invalid = || RequestError::InvalidDelay(seconds.to_owned());
    let value: f64 = seconds.parse().map_err(|_| invalid())?;
    if value.is_nan() || value < 0.0 {
        return Err(invalid());
    }
    // Capping before converting also keeps `inf` and huge values from overflowing.
    Ok(Duration::from_secs_f64(value.min(MAX_DELAY.as_secs_f64())))
}

fn random_bytes(count: &str, query: Option<&str>) -> Result<Response<Body>, RequestError> {
    let n: usize = count
        .parse()
        .map_err(|_| RequestError::InvalidCount(count.to_owned()))?;
    let n = n.min(MAX_BYTES);
    let seed = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "seed")
        .map(|(_, v)| {
            v.parse::<u64>()
                .map_err(|_| RequestError::InvalidSeed(v.into_owned()))
        })
        .transpose()?;
    let mut rng = seed.map_or_else(SplitMix64::from_entropy, SplitMix64::new);
    let mut buf = vec![0u8; n];
    rng.fill(&mut buf);
    let mut response = Response::new(Body::new(Bytes::from(buf)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

fn preflight(request: &HeaderMap, methods: Option<&[Method]>) -> Response<Body> {
    let mut response = Response::new(Body::default());
    let headers = response.headers_mut();
    headers.insert(header::ALLOW, allow_value(methods));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, DELETE, PATCH, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("3600"),
    );
    if let Some(asked) = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    response
}

fn method_not_allowed(allowed: &[Method]) -> Response<Body> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, allow_value(Some(allowed)));
    response
}

fn allow_value(methods: Option<&[Method]>) -> HeaderValue {
    let Some(methods) = methods else {
        return HeaderValue::from_static(
            "CONNECT, DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, TRACE",
        );
    };
    let mut names: Vec<&str> = methods.iter().map(Method::as_str).collect();
    if methods.contains(&Method::GET) {
        names.push("HEAD");
    }
    names.push("OPTIONS");
    HeaderValue::from_str(&names.join(", ")).unwrap_or_else(|_| HeaderValue::from_static("GET"))
}

/// Pretty JSON with two-space indents and a trailing newline, like httpbin.
fn json<T: Serialize>(value: &T) -> Response<Body> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            let mut response = Response::new(Body::new(Bytes::from(bytes)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the response: {e}\n"),
        ),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Body::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Every response body here is one in-memory buffer, so the size hint is exact.
fn body_len(body: &Body) -> u64 {
    hyper::body::Body::size_hint(body).lower()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_take_one_parameter_segment() {
        assert!(matches!(Route::parse("/status/418"), Some(Route::Status(c)) if c == "418"));
        assert!(Route::parse("/status/").is_none());
        assert!(Route::parse("/status/200/x").is_none());
        assert!(Route::parse("/get/").is_none());
        assert!(matches!(
            Route::parse("/anything/a/b"),
            Some(Route::Anything)
        ));
    }

    #[test]
    fn delays_are_capped_and_validated() {
        assert_eq!(parse_delay("0.25").ok(), Some(Duration::from_millis(250)));
        assert_eq!(parse_delay("99").ok(), Some(MAX_DELAY));
        assert_eq!(parse_delay("inf").ok(), Some(MAX_DELAY));
        assert!(parse_delay("-1").is_err());
        assert!(parse_delay("NaN").is_err());
        assert!(parse_delay("soon").is_err());
    }
}
