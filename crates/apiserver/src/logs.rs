//! `GET /api/v1/namespaces/{ns}/pods/{name}/log`: a container's log as `text/plain`,
//! read from the CRI-format file the node agent writes, optionally followed as it grows.
//!
//! Behaves like the kubelet's log reader: partial (`P`) records are joined into one
//! line, `timestamps=true` prefixes each line with its RFC 3339 time, `sinceSeconds` /
//! `sinceTime` drop older lines, `tailLines` keeps the last lines, `limitBytes` cuts the
//! output, and `follow=true` streams new lines until the container stops.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};
use tokio::io::AsyncReadExt;

use crate::query::parse_bool;
use crate::resources;
use crate::state::{AppState, LogSource};
use crate::status::{ApiError, bad_request, failure, internal, not_found};

/// How often a follow looks for new lines in the file.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How much of the file is read at a time.
const READ_BLOCK: usize = 64 * 1024;

/// The query of a log request (`PodLogOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    pub container: Option<String>,
    pub follow: bool,
    pub previous: bool,
    pub tail_lines: Option<i64>,
    pub timestamps: bool,
    pub since_seconds: Option<i64>,
    pub since_time: Option<Timestamp>,
    pub limit_bytes: Option<i64>,
}

impl LogQuery {
    /// Parses a raw query string (without `?`). Unknown parameters are ignored.
    pub fn parse(query: Option<&str>) -> Result<LogQuery, ApiError> {
        let mut q = LogQuery::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match key.as_ref() {
                "container" => q.container = (!value.is_empty()).then(|| value.into_owned()),
                "follow" => q.follow = parse_bool("follow", &value)?,
                "previous" => q.previous = parse_bool("previous", &value)?,
                "timestamps" => q.timestamps = parse_bool("timestamps", &value)?,
                "tailLines" => q.tail_lines = parse_int("tailLines", &value)?,
                "sinceSeconds" => q.since_seconds = parse_int("sinceSeconds", &value)?,
                "limitBytes" => q.limit_bytes = parse_int("limitBytes", &value)?,
                "sinceTime" if !value.is_empty() => {
                    let ts = value.parse::<Timestamp>().map_err(|_| {
                        bad_request(&format!(
                            "sinceTime: invalid value {value:?}: expected an RFC 3339 time"
                        ))
                    })?;
                    q.since_time = Some(ts);
                }
                _ => {}
            }
        }
        Ok(q)
    }

    /// `ValidatePodLogOptions`: the field errors Kubernetes reports with 422.
    fn field_errors(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if let Some(n) = self.tail_lines.filter(|n| *n < 0) {
            errors.push((
                "tailLines".to_owned(),
                format!("Invalid value: {n}: must be greater than or equal to 0"),
            ));
        }
        if let Some(n) = self.limit_bytes.filter(|n| *n < 1) {
            errors.push((
                "limitBytes".to_owned(),
                format!("Invalid value: {n}: must be greater than 0"),
            ));
        }
        match (self.since_seconds, self.since_time) {
            (Some(_), Some(_)) => errors.push((
                String::new(),
                "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
                    .to_owned(),
            )),
            (Some(n), None) if n < 1 => errors.push((
                "sinceSeconds".to_owned(),
                format!("Invalid value: {n}: must be greater than 0"),
            )),
            _ => {}
        }
        errors
    }
}

fn parse_int(name: &str, value: &str) -> Result<Option<i64>, ApiError> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| bad_request(&format!("{name}: invalid value {value:?}")))
}

/// 422 `PodLogOptions "web" is invalid: …`.
fn invalid_options(pod: &str, errors: &[(String, String)]) -> ApiError {
    let text: Vec<String> = errors
        .iter()
        .map(|(field, msg)| {
            if field.is_empty() {
                msg.clone()
            } else {
                format!("{field}: {msg}")
            }
        })
        .collect();
    let joined = if text.len() == 1 {
        text[0].clone()
    } else {
        format!("[{}]", text.join(", "))
    };
    let causes = errors
        .iter()
        .map(|(field, msg)| StatusCause {
            field: Some(field.clone()),
            message: Some(msg.clone()),
            reason: Some(
                if msg.starts_with("Forbidden") {
                    "FieldValueForbidden"
                } else {
                    "FieldValueInvalid"
                }
                .to_owned(),
            ),
        })
        .collect();
    failure(
        422,
        "Invalid",
        &format!("PodLogOptions \"{pod}\" is invalid: {joined}"),
        Some(StatusDetails {
            kind: Some("PodLogOptions".to_owned()),
            name: Some(pod.to_owned()),
            causes: Some(causes),
            ..Default::default()
        }),
    )
}

/// Answers a log request: the log as `text/plain` (streamed), or a `Status` error.
pub async fn log_response(state: &AppState, namespace: &str, pod: &str, q: LogQuery) -> Response {
    match open_log(state, namespace, pod, q).await {
        Ok(stream) => {
            let body = Body::from_stream(futures::stream::unfold(stream, |mut s| async move {
                s.next_chunk()
                    .await
                    .map(|chunk| (Ok::<_, std::io::Error>(chunk), s))
            }));
            let mut response = (StatusCode::OK, body).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            response
        }
        Err(e) => e.into_response(),
    }
}

/// The pod as stored, or the API's 404 for it (pods/log and pods/exec).
pub(crate) async fn stored_pod(
    state: &AppState,
    namespace: &str,
    name: &str,
) -> Result<Pod, ApiError> {
    let pods = resources::lookup("", "v1", "pods")
        .ok_or_else(|| internal("the pods resource is not registered"))?;
    let kv = state
        .store
        .get(&pods.key(Some(namespace), name))
        .await?
        .ok_or_else(|| not_found(pods, name))?;
    let pod: Pod = serde_json::from_slice(&kv.value)
        .map_err(|e| internal(&format!("stored pod {namespace}/{name}: {e}")))?;
    Ok(pod)
}

async fn open_log(
    state: &AppState,
    namespace: &str,
    name: &str,
    q: LogQuery,
) -> Result<LogStream, ApiError> {
    let errors = q.field_errors();
    if !errors.is_empty() {
        return Err(invalid_options(name, &errors));
    }
    let pod = stored_pod(state, namespace, name).await?;
    let container = choose_container(&pod, name, q.container.as_deref())?;
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    let path = state
        .logs
        .log_file(namespace, name, uid, &container, q.previous)
        .ok_or_else(|| no_log_file(&pod, name, &container, q.previous))?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| internal(&format!("opening the log of container {container:?}: {e}")))?;
    let since = match (q.since_time, q.since_seconds) {
        (Some(t), _) => Some(t),
        (None, Some(secs)) => state
            .config
            .now()
            .checked_sub(SignedDuration::from_secs(secs))
            .ok(),
        (None, None) => None,
    };
    Ok(LogStream {
        file,
        path,
        logs: state.logs.clone(),
        parser: CriParser::default(),
        timestamps: q.timestamps,
        since,
        tail: q.tail_lines.map(|n| usize::try_from(n).unwrap_or(0)),
        tail_lines: VecDeque::new(),
        remaining: q.limit_bytes.map(|n| u64::try_from(n).unwrap_or(0)),
        follow: q.follow,
        phase: Phase::History,
        buf: vec![0; READ_BLOCK],
    })
}

/// Resolves the `container` parameter against the pod spec, as the API server does.
pub(crate) fn choose_container(
    pod: &Pod,
    name: &str,
    wanted: Option<&str>,
) -> Result<String, ApiError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let names = |cs: &[k8s_openapi::api::core::v1::Container]| -> Vec<String> {
        cs.iter().map(|c| c.name.clone()).collect()
    };
    let main = names(&spec.containers);
    let init = names(spec.init_containers.as_deref().unwrap_or_default());
    let ephemeral: Vec<String> = spec
        .ephemeral_containers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|c| c.name.clone())
        .collect();
    match wanted {
        Some(c) => {
            if main.iter().chain(&init).chain(&ephemeral).any(|n| n == c) {
                Ok(c.to_owned())
            } else {
                Err(bad_request(&format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
        }
        None if main.len() == 1 => Ok(main[0].clone()),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                main.join(" ")
            );
            if !init.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            if !ephemeral.is_empty() {
                message.push_str(&format!(
                    " or one of the ephemeral containers: [{}]",
                    ephemeral.join(" ")
                ));
            }
            Err(bad_request(&message))
        }
    }
}

/// Why a container has no log to show, from its status (the kubelet's wording).
fn no_log_file(pod: &Pod, name: &str, container: &str, previous: bool) -> ApiError {
    if previous {
        return bad_request(&format!(
            "previous terminated container \"{container}\" in pod \"{name}\" not found"
        ));
    }
    let status = pod.status.as_ref().and_then(|s| {
        [
            s.container_statuses.as_deref(),
            s.init_container_statuses.as_deref(),
            s.ephemeral_container_statuses.as_deref(),
        ]
        .into_iter()
        .flatten()
        .flatten()
        .find(|cs: &&ContainerStatus| cs.name == container)
    });
    let state = status.and_then(|s| s.state.as_ref());
    let prefix = format!("container \"{container}\" in pod \"{name}\"");
    let message = match state {
        // Nothing reported yet: the node is still setting the container up.
        None => format!("{prefix} is waiting to start: ContainerCreating"),
        Some(s) if s.terminated.is_some() => format!("{prefix} is terminated"),
        Some(s) => match s.waiting.as_ref().and_then(|w| w.reason.as_deref()) {
            Some("ErrImagePull") => format!("{prefix} is waiting to start: image can't be pulled"),
            Some("ImagePullBackOff") => {
                format!("{prefix} is waiting to start: trying and failing to pull image")
            }
            Some(reason) if !reason.is_empty() => {
                format!("{prefix} is waiting to start: {reason}")
            }
            _ => format!("{prefix} is waiting to start - no logs yet"),
        },
    };
    bad_request(&message)
}

/// One log line: the text of its records joined, stamped with its first record's time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    time: Timestamp,
    text: Vec<u8>,
    /// False for pieces whose closing `F` record has not been written.
    complete: bool,
}

/// Splits CRI records (`<time> <stream> <P|F>[:tags] <text>\n`) into lines.
#[derive(Debug, Default)]
struct CriParser {
    /// Bytes of a record whose newline has not arrived yet.
    carry: Vec<u8>,
    /// The pieces of a line seen so far (`P` records).
    pending: Option<Line>,
}

impl CriParser {
    fn feed(&mut self, data: &[u8], out: &mut Vec<Line>) {
        self.carry.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = self.carry[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            let record = self.carry[start..end].to_vec();
            start = end + 1;
            self.record(&record, out);
        }
        self.carry.drain(..start);
    }

    fn record(&mut self, record: &[u8], out: &mut Vec<Line>) {
        let mut fields = record.splitn(4, |&b| b == b' ');
        let (Some(time), Some(_stream), Some(tag)) = (fields.next(), fields.next(), fields.next())
        else {
            tracing::debug!("skipping a malformed log record");
            return;
        };
        let text = fields.next().unwrap_or_default();
        let Some(time) = std::str::from_utf8(time)
            .ok()
            .and_then(|t| t.parse::<Timestamp>().ok())
        else {
            tracing::debug!("skipping a log record without a valid time");
            return;
        };
        let partial = tag.split(|&b| b == b':').next() == Some(b"P");
        let line = self.pending.get_or_insert_with(|| Line {
            time,
            text: Vec::new(),
            complete: false,
        });
        line.text.extend_from_slice(text);
        if !partial && let Some(mut line) = self.pending.take() {
            line.complete = true;
            out.push(line);
        }
    }

    /// The pieces of an unfinished line, when no more records will come.
    fn finish(&mut self) -> Option<Line> {
        self.pending.take()
    }
}

/// `sinceSeconds` / `sinceTime`: lines stamped before `since` are left out.
fn wanted(since: Option<Timestamp>, line: &Line) -> bool {
    since.is_none_or(|since| line.time >= since)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading what the file held when the request came.
    History,
    /// Waiting for new records.
    Follow,
    Done,
}

struct LogStream {
    file: tokio::fs::File,
    path: PathBuf,
    logs: Arc<dyn LogSource>,
    parser: CriParser,
    timestamps: bool,
    since: Option<Timestamp>,
    /// `tailLines`: only this many of the history's last lines.
    tail: Option<usize>,
    tail_lines: VecDeque<Line>,
    /// `limitBytes` left to send.
    remaining: Option<u64>,
    follow: bool,
    phase: Phase,
    buf: Vec<u8>,
}

impl LogStream {
    /// The next piece of output, or None at the end of the log.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            match self.phase {
                Phase::Done => return None,
                Phase::History => {
                    let n = match self.file.read(&mut self.buf).await {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::warn!(path = %self.path.display(), "reading a log: {e}");
                            0
                        }
                    };
                    let mut lines = Vec::new();
                    if n == 0 {
                        if self.follow {
                            self.phase = Phase::Follow;
                        } else {
                            lines.extend(self.parser.finish());
                            self.phase = Phase::Done;
                        }
                    } else {
                        self.parser.feed(&self.buf[..n], &mut lines);
                    }
                    let mut out = Vec::new();
                    match self.tail {
                        Some(keep) => {
                            let since = self.since;
                            for line in lines.into_iter().filter(|l| wanted(since, l)) {
                                self.tail_lines.push_back(line);
                                if self.tail_lines.len() > keep {
                                    self.tail_lines.pop_front();
                                }
                            }
                            if n == 0 {
                                for line in std::mem::take(&mut self.tail_lines) {
                                    self.format(&line, &mut out);
                                }
                            }
                        }
                        None => {
                            for line in lines.iter().filter(|l| wanted(self.since, l)) {
                                self.format(line, &mut out);
                            }
                        }
                    }
                    if let Some(chunk) = self.limit(out) {
                        return Some(chunk);
                    }
                }
                Phase::Follow => {
                    // Sampled before reading, so whatever the container wrote before it
                    // stopped is read before the stream ends.
                    let live = self.logs.is_live(&self.path);
                    let n = match self.file.read(&mut self.buf).await {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::warn!(path = %self.path.display(), "reading a log: {e}");
                            self.phase = Phase::Done;
                            return None;
                        }
                    };
                    let mut lines = Vec::new();
                    if n > 0 {
                        self.parser.feed(&self.buf[..n], &mut lines);
                    } else if !live {
                        lines.extend(self.parser.finish());
                        self.phase = Phase::Done;
                    }
                    let mut out = Vec::new();
                    for line in lines.iter().filter(|l| wanted(self.since, l)) {
                        self.format(line, &mut out);
                    }
                    if let Some(chunk) = self.limit(out) {
                        return Some(chunk);
                    }
                    if n == 0 && self.phase == Phase::Follow {
                        tokio::time::sleep(POLL_INTERVAL).await;
                    }
                }
            }
        }
    }

    fn format(&self, line: &Line, out: &mut Vec<u8>) {
        if self.timestamps {
            // RFC 3339 with as many fractional digits as needed, like Go's RFC3339Nano.
            out.extend_from_slice(line.time.to_string().as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&line.text);
        if line.complete {
            out.push(b'\n');
        }
    }

    /// Applies `limitBytes`; None when there is nothing to send.
    fn limit(&mut self, mut out: Vec<u8>) -> Option<Bytes> {
        if let Some(remaining) = self.remaining.as_mut() {
            let room = usize::try_from(*remaining).unwrap_or(usize::MAX);
            if out.len() >= room {
                out.truncate(room);
                self.phase = Phase::Done;
            }
            *remaining -= out.len() as u64;
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &str) -> Vec<(String, String, bool)> {
        let mut parser = CriParser::default();
        let mut out = Vec::new();
        parser.feed(input.as_bytes(), &mut out);
        out.extend(parser.finish());
        out.into_iter()
            .map(|l| {
                (
                    l.time.to_string(),
                    String::from_utf8_lossy(&l.text).into_owned(),
                    l.complete,
                )
            })
            .collect()
    }

    #[test]
    fn partial_records_join_into_one_line_with_the_first_time() {
        let got = lines(
            "2026-11-25T15:51:26.100000000Z stdout P hel\n\
             2026-11-25T15:51:27.000000000Z stdout F lo\n\
             2026-11-25T15:51:28.123456789Z stderr F \n\
             2026-11-25T15:51:29.000000000Z stdout F:x tagged text\n\
             2026-11-25T15:51:30.000000000Z stdout P unfinished\n\
             2026-11-25T15:51:31.000000000Z stdout F half-writ",
        );
        assert_eq!(
            got,
            vec![
                ("2026-11-25T15:51:26.1Z".into(), "hello".into(), true),
                ("2026-11-25T15:51:28.123456789Z".into(), "".into(), true),
                ("2026-11-25T15:51:29Z".into(), "tagged text".into(), true),
                ("2026-11-25T15:51:30Z".into(), "unfinished".into(), false),
            ]
        );
    }

    #[test]
    fn records_split_across_reads_are_reassembled() {
        let text = "2026-11-25T15:51:26Z stdout F one\n2026-11-25T15:51:27Z stdout F two\n";
        let mut parser = CriParser::default();
        let mut out = Vec::new();
        for b in text.as_bytes().chunks(5) {
            parser.feed(b, &mut out);
        }
        let texts: Vec<&[u8]> = out.iter().map(|l| l.text.as_slice()).collect();
        assert_eq!(texts, [b"one".as_slice(), b"two".as_slice()]);
    }

    #[test]
    fn query_parses_kubectl_parameters_and_validates_like_kubernetes() {
        let q = LogQuery::parse(Some(
            "container=sidecar&follow=true&tailLines=10&timestamps=true&previous=1&limitBytes=100&sinceSeconds=3600",
        ))
        .expect("parses");
        assert_eq!(q.container.as_deref(), Some("sidecar"));
        assert!(q.follow && q.timestamps && q.previous);
        assert_eq!(q.tail_lines, Some(10));
        assert_eq!(q.limit_bytes, Some(100));
        assert_eq!(q.since_seconds, Some(3600));
        assert!(q.field_errors().is_empty());

        let q = LogQuery::parse(Some("sinceTime=2026-11-25T15%3A51%3A26Z")).expect("parses");
        assert_eq!(
            q.since_time,
            Some("2026-11-25T15:51:26Z".parse().expect("time"))
        );
        assert!(LogQuery::parse(Some("tailLines=ten")).is_err());
        assert!(LogQuery::parse(Some("follow=maybe")).is_err());
        assert!(LogQuery::parse(Some("sinceTime=yesterday")).is_err());

        let q = LogQuery::parse(Some("tailLines=-1&limitBytes=0")).expect("parses");
        let err = invalid_options("web", &q.field_errors());
        assert_eq!(err.code(), 422);
        assert_eq!(
            err.message(),
            "PodLogOptions \"web\" is invalid: [tailLines: Invalid value: -1: must be greater than or equal to 0, limitBytes: Invalid value: 0: must be greater than 0]"
        );
    }
}
