//! What httpbin reports back about a request: its query arguments, headers, client
//! address, URL and body, in httpbin's JSON shapes.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use base64::Engine as _;
use hyper::header::{CONTENT_TYPE, COOKIE, HOST};
use hyper::{HeaderMap, Uri};
use serde::Serialize;

/// A value from a query string or form: one string, or a list when the key repeats.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn push(&mut self, value: String) {
        match self {
            Self::Many(list) => list.push(value),
            Self::One(first) => *self = Self::Many(vec![std::mem::take(first), value]),
        }
    }
}

/// Keys sorted like httpbin's output; repeated keys collect their values in order.
pub type MultiDict = BTreeMap<String, OneOrMany>;

/// Parses `a=1&a=2&b=` into `{"a": ["1", "2"], "b": ""}`.
pub fn parse_multi(encoded: &[u8]) -> MultiDict {
    let mut out = MultiDict::new();
    for (key, value) in form_urlencoded::parse(encoded) {
        let value = value.into_owned();
        match out.get_mut(key.as_ref()) {
            Some(existing) => existing.push(value),
            None => {
                out.insert(key.into_owned(), OneOrMany::One(value));
            }
        }
    }
    out
}

/// `x-b3-traceid` -> `X-B3-Traceid`: every letter that follows a non-letter is upper
/// case, the others lower case, the way httpbin (Python's `str.title`) prints names.
pub fn title_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut after_letter = false;
    for c in name.chars() {
        if after_letter {
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c.to_ascii_uppercase());
        }
        after_letter = c.is_ascii_alphabetic();
    }
    out
}

/// The request's headers by Title-Case name; a repeated header's values are joined the
/// way a proxy would fold them (cookies with `; `, everything else with `,`). HTTP/2
/// carries the host as `:authority`, which is reported as `Host` like HTTP/1.1's.
pub fn headers(headers: &HeaderMap, uri: &Uri) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        let separator = if name == COOKIE { "; " } else { "," };
        out.entry(title_case(name.as_str()))
            .and_modify(|v| {
                v.push_str(separator);
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    if !headers.contains_key(HOST)
        && let Some(authority) = uri.authority()
    {
        out.insert("Host".to_owned(), authority.as_str().to_owned());
    }
    out
}

/// The client's address: the first `X-Forwarded-For` entry when a proxy set one,
/// otherwise the peer of the TCP connection.
pub fn origin(headers: &HeaderMap, peer: SocketAddr) -> String {
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|v| !v.is_empty());
    match forwarded {
        Some(first) => first.to_owned(),
        // An IPv4 client of a dual-stack socket shows up as ::ffff:a.b.c.d.
        None => peer.ip().to_canonical().to_string(),
    }
}

/// The full URL the client asked for. The scheme comes from `X-Forwarded-Proto` (or
/// `X-Forwarded-Ssl: on`) when a TLS-terminating proxy is in front, like httpbin does.
pub fn url(headers: &HeaderMap, uri: &Uri, local: Option<SocketAddr>) -> String {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let scheme = header("x-forwarded-proto")
        .or_else(|| header("x-forwarded-protocol"))
        .or_else(|| (header("x-forwarded-ssl") == Some("on")).then_some("https"))
        .unwrap_or("http");
    let host = header(HOST.as_str())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
        .or_else(|| local.map(|a| a.to_string()))
        .unwrap_or_default();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{scheme}://{host}{path}")
}

/// The body as httpbin reports it: `data` (text, or a base64 data URL when it is not
/// UTF-8), `form` for URL-encoded forms, and `json` when the body parses as JSON.
pub struct BodyEcho {
    pub data: String,
    pub form: MultiDict,
    pub json: serde_json::Value,
}

pub fn body(headers: &HeaderMap, body: &[u8]) -> BodyEcho {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/x-www-form-urlencoded" {
        // A form is reported under `form`; `data` stays empty, as in httpbin.
        return BodyEcho {
            data: String::new(),
            form: parse_multi(body),
            json: serde_json::Value::Null,
        };
    }
    let data = match std::str::from_utf8(body) {
        Ok(text) => text.to_owned(),
        Err(_) => format!(
            "data:application/octet-stream;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(body)
        ),
    };
    let json = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    BodyEcho {
        data,
        form: MultiDict::new(),
        json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_case_follows_python_title() {
        assert_eq!(title_case("user-agent"), "User-Agent");
        assert_eq!(title_case("x-b3-traceid"), "X-B3-Traceid");
        assert_eq!(title_case("x-1abc"), "X-1Abc");
        assert_eq!(title_case("dnt"), "Dnt");
    }

    #[test]
    fn repeated_keys_become_lists_in_order() {
        let args = parse_multi(b"b=2&a=1&b=3&b=4&c&d=x+y%21");
        assert_eq!(
            args.get("b"),
            Some(&OneOrMany::Many(vec!["2".into(), "3".into(), "4".into()]))
        );
        assert_eq!(args.get("a"), Some(&OneOrMany::One("1".into())));
        assert_eq!(args.get("c"), Some(&OneOrMany::One(String::new())));
        assert_eq!(args.get("d"), Some(&OneOrMany::One("x y!".into())));
    }

    #[test]
    fn binary_bodies_are_data_urls() {
        let echo = body(&HeaderMap::new(), &[0xff, 0x00, 0x10]);
        assert_eq!(echo.data, "data:application/octet-stream;base64,/wAQ");
        assert_eq!(echo.json, serde_json::Value::Null);
    }
}
