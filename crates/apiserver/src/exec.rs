//! `/api/v1/namespaces/{ns}/pods/{name}/exec`: `kubectl exec` over WebSocket.
//!
//! kubectl (1.30+) opens a WebSocket with the subprotocol `v5.channel.k8s.io` (the only
//! one Kubernetes' API server serves for exec, and the only one this server serves; a
//! refused upgrade makes kubectl retry with SPDY, which gets the same error). Every
//! message is binary and starts with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 the
//! final `Status` (JSON), 4 terminal sizes (`{"Width":80,"Height":24}`), and 255 closes a
//! channel (`[255, 0]` is end of stdin). The server announces the session with an empty
//! message on its lowest output channel, streams the output, writes the `Status`
//! (`Success`, or `NonZeroExitCode` with the code as the `ExitCode` cause, which kubectl
//! exits with), sends a close frame and waits for the client to close, so no output is
//! lost to a reset.
//!
//! The request is checked before the upgrade as the API server does (the pod, the
//! container, a node), with its `Status` errors; what the node reports after it (no
//! running container, a command that cannot start) arrives as an `InternalError` on the
//! error channel, as from the API server's stream translator. The node runs the command
//! through the [`ExecBackend`] the server is given.
//!
//! The WebSocket framing (RFC 6455) is implemented here: a server needs only unmasked
//! frames out and masked frames in, without extensions.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::{Buf, BytesMut};
use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::query::parse_bool;
use crate::state::AppState;
use crate::status::{ApiResult, bad_request, internal, method_not_allowed};

/// The remote command subprotocol served.
pub const PROTOCOL_V5: &str = "v5.channel.k8s.io";
/// RFC 6455's key suffix for `Sec-WebSocket-Accept`.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Channel numbers of the remote command protocol.
pub mod channel {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const ERROR: u8 = 3;
    pub const RESIZE: u8 = 4;
    /// v5: `[CLOSE, n]` closes channel n.
    pub const CLOSE: u8 = 255;
}

/// The largest message accepted from a client (kubectl sends at most 32 KiB + 1).
const MAX_MESSAGE: usize = 1 << 20;
/// How much command output goes into one message.
const READ_CHUNK: usize = 32 * 1024;
/// After the command exited, output is read until its pipes end; a background process
/// that keeps them open ends the session once no output came for this long.
const DRAIN_IDLE: Duration = Duration::from_secs(1);
/// How long the server waits for the client to close after the final status (Kubernetes:
/// 15 minutes, for slow readers).
const FINISH_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Frames queued for the client.
const OUT_QUEUE: usize = 16;
/// With a terminal, how long the server waits for the client's first window size before
/// it starts the command, so that the command starts at that size (kubectl sends it
/// right after the upgrade; a client that sends none only waits this long).
const INITIAL_SIZE_WAIT: Duration = Duration::from_millis(250);

// ---------------------------------------------------------------------------------------
// What the node provides.

/// One exec, as the node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub container: String,
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    /// With `tty`: the terminal's size when the command starts, if the client sent one.
    pub size: Option<TerminalSize>,
}

/// The command's stdin.
pub type ExecInput = std::pin::Pin<Box<dyn AsyncWrite + Send>>;
/// The command's stdout or stderr.
pub type ExecOutput = std::pin::Pin<Box<dyn AsyncRead + Send>>;
/// Sets the terminal's size (width, height).
pub type Resize = Box<dyn Fn(u16, u16) + Send + Sync>;

/// A started command. Dropping `exit` before it completes kills the command.
pub struct ExecProcess {
    pub stdin: Option<ExecInput>,
    pub stdout: Option<ExecOutput>,
    pub stderr: Option<ExecOutput>,
    /// With a terminal.
    pub resize: Option<Resize>,
    /// The exit code (128 + n for signal n), or why it could not be learnt.
    pub exit: BoxFuture<'static, Result<i32, String>>,
}

/// Why the node runs nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// The container has no running instance (the kubelet's `container not found`).
    #[error("container not found ({0:?})")]
    ContainerNotFound(String),
    /// The command could not be started.
    #[error("{0}")]
    Start(String),
}

/// Runs commands in containers; the node agent implements it.
pub trait ExecBackend: Send + Sync {
    fn exec(&self, request: ExecRequest) -> BoxFuture<'static, Result<ExecProcess, ExecError>>;
}

// ---------------------------------------------------------------------------------------
// The query (`PodExecOptions`).

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecQuery {
    pub command: Vec<String>,
    pub container: Option<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecQuery {
    /// Parses a raw query string (without `?`); `command` repeats, one per argument.
    /// What it asks for is checked later ([`ExecQuery::check`]), after the pod.
    pub fn parse(query: Option<&str>) -> ApiResult<ExecQuery> {
        let mut q = ExecQuery::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match key.as_ref() {
                "command" => q.command.push(value.into_owned()),
                "container" => q.container = (!value.is_empty()).then(|| value.into_owned()),
                "stdin" => q.stdin = parse_bool("stdin", &value)?,
                "stdout" => q.stdout = parse_bool("stdout", &value)?,
                "stderr" => q.stderr = parse_bool("stderr", &value)?,
                "tty" => q.tty = parse_bool("tty", &value)?,
                _ => {}
            }
        }
        // A terminal carries stderr itself (the kubelet drops the separate stream).
        if q.tty {
            q.stderr = false;
        }
        Ok(q)
    }

    /// The node's checks: something to run, and a stream to run it with.
    pub fn check(&self) -> ApiResult<()> {
        if !(self.stdin || self.stdout || self.stderr) {
            return Err(bad_request(
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        if self.command.is_empty() {
            return Err(bad_request(
                "you must specify at least one command for the container",
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The WebSocket handshake.

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut input = key.trim().as_bytes().to_vec();
    input.extend_from_slice(WEBSOCKET_GUID.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// The subprotocols a client offers, in its order.
pub fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks the upgrade headers; the `Sec-WebSocket-Accept` value on success.
pub fn check_upgrade(headers: &HeaderMap) -> ApiResult<String> {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if upgrade.is_empty() || !header_has_token(headers, header::CONNECTION, "upgrade") {
        return Err(bad_request("Upgrade request required"));
    }
    if !upgrade
        .split(',')
        .any(|u| u.trim().eq_ignore_ascii_case("websocket"))
    {
        return Err(bad_request(&format!(
            "unsupported streaming protocol {upgrade:?}: exec is served over WebSocket \
             with subprotocol {PROTOCOL_V5}"
        )));
    }
    let version = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if version.trim() != "13" {
        return Err(bad_request(&format!(
            "unsupported WebSocket version {version:?} (13 is supported)"
        )));
    }
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.trim().is_empty())
    else {
        return Err(bad_request("missing Sec-WebSocket-Key"));
    };
    let offered = offered_protocols(headers);
    if !offered.iter().any(|p| p == PROTOCOL_V5) {
        return Err(bad_request(&format!(
            "requested protocol(s) are not supported: {offered:?}; supports [{PROTOCOL_V5}]"
        )));
    }
    Ok(accept_key(key))
}

// ---------------------------------------------------------------------------------------
// Frames.

/// RFC 6455 opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation = 0,
    Text = 1,
    Binary = 2,
    Close = 8,
    Ping = 9,
    Pong = 10,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0 => Opcode::Continuation,
            1 => Opcode::Text,
            2 => Opcode::Binary,
            8 => Opcode::Close,
            9 => Opcode::Ping,
            10 => Opcode::Pong,
            _ => return None,
        })
    }

    fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// A violation of the framing; the connection is closed with its code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("message too big")]
    TooBig,
}

impl FrameError {
    /// The close code: 1002 protocol error, 1009 message too big.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::Protocol(_) => 1002,
            FrameError::TooBig => 1009,
        }
    }
}

/// One frame from a client, unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: Opcode,
    pub payload: Vec<u8>,
}

/// A server frame (never masked) with the whole payload.
pub fn encode_frame(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(0x80 | opcode as u8);
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

/// A binary frame carrying `data` on `channel`.
pub fn channel_frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(data.len() + 1);
    payload.push(channel);
    payload.extend_from_slice(data);
    encode_frame(Opcode::Binary, &payload)
}

/// A close frame with a status code.
pub fn close_frame(code: u16) -> Vec<u8> {
    encode_frame(Opcode::Close, &code.to_be_bytes())
}

/// Splits the bytes a client sends into frames.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, if the buffer holds one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let b = &self.buf[..];
        if b.len() < 2 {
            return Ok(None);
        }
        if b[0] & 0x70 != 0 {
            return Err(FrameError::Protocol(
                "reserved bits set without an extension",
            ));
        }
        let fin = b[0] & 0x80 != 0;
        let opcode =
            Opcode::from_bits(b[0] & 0x0f).ok_or(FrameError::Protocol("unknown opcode"))?;
        if b[1] & 0x80 == 0 {
            return Err(FrameError::Protocol("client frames must be masked"));
        }
        let (len, mut at) = match b[1] & 0x7f {
            126 => {
                if b.len() < 4 {
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([b[2], b[3]])), 4)
            }
            127 => {
                if b.len() < 10 {
                    return Ok(None);
                }
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(n), 10)
            }
            n => (u64::from(n), 2),
        };
        if opcode.is_control() && (len > 125 || !fin) {
            return Err(FrameError::Protocol("fragmented or long control frame"));
        }
        let len = usize::try_from(len)
            .ok()
            .filter(|n| *n <= MAX_MESSAGE)
            .ok_or(FrameError::TooBig)?;
        if b.len() < at + 4 + len {
            return Ok(None);
        }
        let mask = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        at += 4;
        let payload = b[at..at + len]
            .iter()
            .enumerate()
            .map(|(i, byte)| byte ^ mask[i % 4])
            .collect();
        self.buf.advance(at + len);
        Ok(Some(Frame {
            fin,
            opcode,
            payload,
        }))
    }
}

/// A complete message from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Binary(Vec<u8>),
    Text(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    /// With the client's status code, if it gave one.
    Close(Option<u16>),
}

/// Joins fragmented data messages; control frames pass through between fragments.
#[derive(Debug, Default)]
pub struct MessageAssembler {
    partial: Option<(Opcode, Vec<u8>)>,
}

impl MessageAssembler {
    pub fn push(&mut self, frame: Frame) -> Result<Option<Message>, FrameError> {
        let complete = |opcode: Opcode, data: Vec<u8>| {
            if opcode == Opcode::Text {
                Message::Text(data)
            } else {
                Message::Binary(data)
            }
        };
        match frame.opcode {
            Opcode::Ping => Ok(Some(Message::Ping(frame.payload))),
            Opcode::Pong => Ok(Some(Message::Pong)),
            Opcode::Close => {
                let code = (frame.payload.len() >= 2)
                    .then(|| u16::from_be_bytes([frame.payload[0], frame.payload[1]]));
                Ok(Some(Message::Close(code)))
            }
            Opcode::Text | Opcode::Binary => {
                if self.partial.is_some() {
                    return Err(FrameError::Protocol(
                        "a new message inside a fragmented one",
                    ));
                }
                if frame.fin {
                    Ok(Some(complete(frame.opcode, frame.payload)))
                } else {
                    self.partial = Some((frame.opcode, frame.payload));
                    Ok(None)
                }
            }
            Opcode::Continuation => {
                let Some((opcode, mut data)) = self.partial.take() else {
                    return Err(FrameError::Protocol("a continuation without a message"));
                };
                data.extend_from_slice(&frame.payload);
                if data.len() > MAX_MESSAGE {
                    return Err(FrameError::TooBig);
                }
                if frame.fin {
                    Ok(Some(complete(opcode, data)))
                } else {
                    self.partial = Some((opcode, data));
                    Ok(None)
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The channel protocol.

/// What a client's binary message means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Stdin(Vec<u8>),
    /// v5: the client has no more stdin.
    CloseStdin,
    /// Bytes of the resize stream (JSON terminal sizes).
    Resize(Vec<u8>),
    /// Empty, for a channel the client does not write, or the close of one.
    Ignored,
}

/// Reads the channel byte of a client message.
pub fn parse_inbound(message: &[u8]) -> Inbound {
    match message {
        [channel::STDIN, data @ ..] if !data.is_empty() => Inbound::Stdin(data.to_vec()),
        [channel::RESIZE, data @ ..] if !data.is_empty() => Inbound::Resize(data.to_vec()),
        [channel::CLOSE, channel::STDIN, ..] => Inbound::CloseStdin,
        _ => Inbound::Ignored,
    }
}

/// A terminal size as client-go encodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Decodes the resize stream: JSON values one after another, split anywhere.
#[derive(Debug, Default)]
pub struct ResizeDecoder {
    buf: Vec<u8>,
}

impl ResizeDecoder {
    pub fn push(&mut self, data: &[u8]) -> Vec<TerminalSize> {
        self.buf.extend_from_slice(data);
        let mut sizes = Vec::new();
        let mut stream = serde_json::Deserializer::from_slice(&self.buf).into_iter();
        let mut consumed = 0;
        loop {
            match stream.next() {
                Some(Ok(size)) => {
                    sizes.push(size);
                    consumed = stream.byte_offset();
                }
                // The rest of a value is still to come.
                Some(Err(e)) if e.is_eof() => break,
                // Garbage: drop what is buffered (kubectl never sends any).
                Some(Err(_)) => {
                    consumed = self.buf.len();
                    break;
                }
                None => {
                    consumed = self.buf.len();
                    break;
                }
            }
        }
        self.buf.drain(..consumed);
        sizes
    }
}

/// The status that ends a session whose command exited with `code`.
pub fn exit_status(code: i32) -> Status {
    if code == 0 {
        return Status {
            status: Some("Success".to_owned()),
            ..Default::default()
        };
    }
    // client-go reads the code as 0..=255.
    let code = code.clamp(0, 255);
    Status {
        status: Some("Failure".to_owned()),
        reason: Some("NonZeroExitCode".to_owned()),
        message: Some(format!(
            "command terminated with non-zero exit code: command terminated with exit code {code}"
        )),
        details: Some(StatusDetails {
            causes: Some(vec![StatusCause {
                reason: Some("ExitCode".to_owned()),
                message: Some(code.to_string()),
                field: None,
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The status for a node that runs nothing: an internal error, as the API server's stream
/// translator reports the kubelet's refusals.
pub fn start_failure(err: &ExecError) -> Status {
    let message = match err {
        ExecError::ContainerNotFound(_) => format!("unable to upgrade connection: {err}"),
        ExecError::Start(why) => format!("error executing command in container: {why}"),
    };
    *internal(&message).0
}

// ---------------------------------------------------------------------------------------
// The handler.

/// `GET|POST /api/v1/namespaces/{namespace}/pods/{name}/exec`.
pub async fn handle(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    req: Request,
) -> Response {
    match accept(&state, &namespace, &name, req).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn accept(
    state: &AppState,
    namespace: &str,
    name: &str,
    mut req: Request,
) -> ApiResult<Response> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return Err(method_not_allowed(&format!(
            "the server does not allow this method on the requested resource ({})",
            req.method()
        )));
    }
    let query = ExecQuery::parse(req.uri().query())?;
    let pod = crate::logs::stored_pod(state, namespace, name).await?;
    let container = crate::logs::choose_container(&pod, name, query.container.as_deref())?;
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    if !scheduled {
        return Err(bad_request(&format!(
            "pod {name} does not have a host assigned"
        )));
    }
    query.check()?;
    let accept_value = check_upgrade(req.headers())?;
    let on_upgrade = req
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| bad_request("Upgrade request required"))?;
    let request = ExecRequest {
        namespace: namespace.to_owned(),
        pod: name.to_owned(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        container,
        command: query.command,
        stdin: query.stdin,
        stdout: query.stdout,
        stderr: query.stderr,
        tty: query.tty,
        size: None,
    };
    let backend = state.exec.clone();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                run_session(hyper_util::rt::TokioIo::new(upgraded), backend, request).await;
            }
            Err(e) => tracing::debug!(error = %e, "exec upgrade failed"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(PROTOCOL_V5),
    );
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept_value).map_err(|e| internal(&e.to_string()))?,
    );
    Ok(response)
}

/// What the client did, as the session sees it.
#[derive(Debug)]
enum Event {
    Message(Inbound),
    /// A close frame, end of stream or a broken connection.
    Closed,
}

/// How a command's run ended.
enum Outcome {
    Status(Box<Status>),
    /// The client went away; the command was killed.
    ClientGone,
}

/// Serves one upgraded connection until the command's status is delivered.
pub async fn run_session<S>(io: S, backend: Option<Arc<dyn ExecBackend>>, request: ExecRequest)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, writer) = tokio::io::split(io);
    let (out, out_rx) = mpsc::channel::<Vec<u8>>(OUT_QUEUE);
    let writer = tokio::spawn(write_frames(writer, out_rx));
    let (events_tx, mut events_rx) = mpsc::channel::<Event>(OUT_QUEUE);
    let reader = tokio::spawn(read_messages(reader, out.clone(), events_tx));

    // The session is open: an empty message on the lowest channel the server writes.
    let first = if request.stdout {
        channel::STDOUT
    } else if request.stderr {
        channel::STDERR
    } else {
        channel::ERROR
    };
    let _ = out.send(channel_frame(first, &[])).await;

    let mut request = request;
    let mut sizes = ResizeDecoder::default();
    let mut held = VecDeque::new();
    if request.tty {
        request.size = initial_size(&mut events_rx, &mut sizes, &mut held).await;
    }
    let mut events = Events::new(held, events_rx);
    let started = match backend {
        Some(backend) => backend.exec(request).await,
        None => Err(ExecError::Start(
            "no node agent runs this server's pods".to_owned(),
        )),
    };
    let outcome = match started {
        Ok(process) => drive(process, &out, &mut events, sizes).await,
        Err(e) => Outcome::Status(Box::new(start_failure(&e))),
    };
    match outcome {
        Outcome::Status(status) => {
            let json = serde_json::to_vec(&*status).unwrap_or_default();
            let _ = out.send(channel_frame(channel::ERROR, &json)).await;
            let _ = out.send(close_frame(1000)).await;
            // The client closes once it has read everything; what it still sends is dropped.
            let _ = tokio::time::timeout(FINISH_TIMEOUT, async {
                while let Some(event) = events.next().await {
                    if matches!(event, Event::Closed) {
                        break;
                    }
                }
            })
            .await;
        }
        Outcome::ClientGone => {
            let _ = out.send(close_frame(1000)).await;
        }
    }
    reader.abort();
    drop(out);
    let _ = writer.await;
}

/// Waits up to [`INITIAL_SIZE_WAIT`] for the client's first terminal size. What else the
/// client sends meanwhile is held for the command, and stops the wait.
async fn initial_size(
    events: &mut mpsc::Receiver<Event>,
    sizes: &mut ResizeDecoder,
    held: &mut VecDeque<Event>,
) -> Option<TerminalSize> {
    let deadline = tokio::time::Instant::now() + INITIAL_SIZE_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::Message(Inbound::Resize(data)))) => {
                if let Some(last) = sizes.push(&data).pop() {
                    return Some(last);
                }
            }
            Ok(Some(Event::Message(Inbound::Ignored))) => {}
            Ok(Some(event)) => {
                held.push_back(event);
                return None;
            }
            Ok(None) => {
                held.push_back(Event::Closed);
                return None;
            }
            Err(_) => return None,
        }
    }
}

/// The client's events: those held back while waiting for the terminal size, then the rest.
struct Events {
    held: VecDeque<Event>,
    rx: mpsc::Receiver<Event>,
}

impl Events {
    fn new(held: VecDeque<Event>, rx: mpsc::Receiver<Event>) -> Self {
        Self { held, rx }
    }

    /// Cancel-safe: taking a held event does not wait.
    async fn next(&mut self) -> Option<Event> {
        match self.held.pop_front() {
            Some(event) => Some(event),
            None => self.rx.recv().await,
        }
    }
}

/// Runs the streams until the command exits (and its output is delivered) or the client
/// goes away.
async fn drive(
    process: ExecProcess,
    out: &mpsc::Sender<Vec<u8>>,
    events: &mut Events,
    mut sizes: ResizeDecoder,
) -> Outcome {
    let ExecProcess {
        stdin,
        stdout,
        stderr,
        resize,
        mut exit,
    } = process;
    let mut stdin_tx = stdin.map(|input| {
        let (tx, rx) = mpsc::channel::<Vec<u8>>(8);
        tokio::spawn(pump_stdin(input, rx));
        tx
    });
    let progress = Arc::new(AtomicU64::new(0));
    let mut pumps = JoinSet::new();
    for (ch, stream) in [(channel::STDOUT, stdout), (channel::STDERR, stderr)] {
        if let Some(stream) = stream {
            pumps.spawn(pump_output(stream, ch, out.clone(), progress.clone()));
        }
    }
    let exited = loop {
        tokio::select! {
            code = &mut exit => break code,
            event = events.next() => match event {
                Some(Event::Message(Inbound::Stdin(data))) => {
                    if let Some(tx) = &stdin_tx
                        && tx.send(data).await.is_err()
                    {
                        stdin_tx = None;
                    }
                }
                Some(Event::Message(Inbound::CloseStdin)) => stdin_tx = None,
                Some(Event::Message(Inbound::Resize(data))) => {
                    for size in sizes.push(&data) {
                        if let Some(resize) = &resize {
                            resize(size.width, size.height);
                        }
                    }
                }
                Some(Event::Message(Inbound::Ignored)) => {}
                Some(Event::Closed) | None => {
                    pumps.abort_all();
                    return Outcome::ClientGone;
                }
            },
        }
    };
    drop(stdin_tx);
    // Deliver what the command wrote before it exited.
    loop {
        let before = progress.load(Ordering::Relaxed);
        match tokio::time::timeout(DRAIN_IDLE, pumps.join_next()).await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) if progress.load(Ordering::Relaxed) == before => {
                pumps.abort_all();
                break;
            }
            Err(_) => {}
        }
    }
    Outcome::Status(Box::new(match exited {
        Ok(code) => exit_status(code),
        Err(why) => *internal(&format!("error executing command in container: {why}")).0,
    }))
}

async fn pump_stdin(mut input: ExecInput, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(data) = rx.recv().await {
        if input.write_all(&data).await.is_err() || input.flush().await.is_err() {
            return;
        }
    }
    // Dropping `input` closes the command's stdin.
}

async fn pump_output(
    mut stream: ExecOutput,
    channel: u8,
    out: mpsc::Sender<Vec<u8>>,
    progress: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out.send(channel_frame(channel, &buf[..n])).await.is_err() {
                    return;
                }
                progress.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
}

/// Writes queued frames in order, flushing whenever the queue is empty.
async fn write_frames<W: AsyncWrite + Unpin>(mut writer: W, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(frame) = rx.recv().await {
        if writer.write_all(&frame).await.is_err() {
            return;
        }
        if rx.is_empty() && writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// Reads the client's frames: answers pings, reports data messages and the end.
async fn read_messages<R: AsyncRead + Unpin>(
    mut reader: R,
    out: mpsc::Sender<Vec<u8>>,
    events: mpsc::Sender<Event>,
) {
    let mut decoder = FrameDecoder::default();
    let mut assembler = MessageAssembler::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        loop {
            let message = match decoder.next_frame() {
                Ok(Some(frame)) => assembler.push(frame),
                Ok(None) => break,
                Err(e) => Err(e),
            };
            match message {
                Ok(Some(Message::Ping(payload))) => {
                    let _ = out.send(encode_frame(Opcode::Pong, &payload)).await;
                }
                Ok(Some(Message::Binary(data))) => {
                    if events
                        .send(Event::Message(parse_inbound(&data)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                // The protocol uses binary messages only.
                Ok(Some(Message::Text(_) | Message::Pong) | None) => {}
                Ok(Some(Message::Close(_))) => {
                    let _ = events.send(Event::Closed).await;
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "exec: bad frame from the client");
                    let _ = out.send(close_frame(e.close_code())).await;
                    let _ = events.send(Event::Closed).await;
                    return;
                }
            }
        }
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = events.send(Event::Closed).await;
                return;
            }
            Ok(n) => decoder.push(&buf[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as a client sends it (masked).
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    /// Decodes server frames (unmasked) into (opcode, payload).
    fn server_frames(mut data: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while data.len() >= 2 {
            assert_eq!(data[0] & 0x80, 0x80, "server frames are final");
            assert_eq!(data[1] & 0x80, 0, "server frames are not masked");
            let (len, at) = match data[1] & 0x7f {
                126 => (u16::from_be_bytes([data[2], data[3]]) as usize, 4),
                127 => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&data[2..10]);
                    (u64::from_be_bytes(n) as usize, 10)
                }
                n => (n as usize, 2),
            };
            frames.push((data[0] & 0x0f, data[at..at + len].to_vec()));
            data = &data[at + len..];
        }
        assert!(data.is_empty(), "a partial frame is left: {data:?}");
        frames
    }

    #[test]
    fn the_query_is_pod_exec_options() {
        let q = ExecQuery::parse(Some(
            "command=sh&command=-c&command=echo+%22a+b%22&container=sleep&stdin=true&stdout=true&stderr=true&tty=false",
        ))
        .expect("query");
        q.check().expect("a command with streams");
        assert_eq!(q.command, ["sh", "-c", "echo \"a b\""]);
        assert_eq!(q.container.as_deref(), Some("sleep"));
        assert!(q.stdin && q.stdout && q.stderr && !q.tty);

        // A terminal has no separate stderr.
        let q = ExecQuery::parse(Some("command=sh&stdin=1&stdout=1&stderr=1&tty=1")).expect("tty");
        assert!(q.tty && !q.stderr && q.container.is_none());

        let err = ExecQuery::parse(Some("command=ls"))
            .and_then(|q| q.check())
            .expect_err("no streams");
        assert_eq!(
            err.message(),
            "you must specify at least 1 of stdin, stdout, stderr"
        );
        assert_eq!(err.code(), 400);
        let err = ExecQuery::parse(Some("stdout=true"))
            .and_then(|q| q.check())
            .expect_err("no command");
        assert_eq!(err.code(), 400);
        let err = ExecQuery::parse(Some("command=ls&stdout=maybe")).expect_err("bad bool");
        assert_eq!(err.message(), "stdout: invalid boolean value \"maybe\"");
    }

    #[test]
    fn the_handshake_follows_rfc_6455() {
        // The example of RFC 6455 section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v4.channel.k8s.io, v5.channel.k8s.io"),
        );
        assert_eq!(
            check_upgrade(&h).expect("upgrade"),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            offered_protocols(&h),
            ["v4.channel.k8s.io", "v5.channel.k8s.io"]
        );

        let mut v4 = h.clone();
        v4.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        let err = check_upgrade(&v4).expect_err("v4 only");
        assert!(err.message().contains("not supported"), "{}", err.message());

        let mut spdy = h.clone();
        spdy.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert_eq!(check_upgrade(&spdy).expect_err("spdy").code(), 400);

        let mut plain = h.clone();
        plain.remove(header::UPGRADE);
        assert_eq!(
            check_upgrade(&plain).expect_err("no upgrade").message(),
            "Upgrade request required"
        );
    }

    #[test]
    fn frames_are_unmasked_and_length_coded() {
        let mut d = FrameDecoder::default();
        let small = client_frame(true, 2, &[0, b'h', b'i']);
        let medium = client_frame(true, 2, &vec![7u8; 300]);
        let large = client_frame(true, 2, &vec![9u8; 70_000]);
        let mut all = [small, medium, large].concat();
        // Byte by byte for the first frames: a frame is only returned when complete.
        for b in all.drain(..10) {
            d.push(&[b]);
        }
        let f = d.next_frame().expect("ok").expect("first frame");
        assert_eq!(
            (f.fin, f.opcode, f.payload),
            (true, Opcode::Binary, b"\0hi".to_vec())
        );
        assert_eq!(d.next_frame().expect("ok"), None);
        d.push(&all);
        assert_eq!(
            d.next_frame().expect("ok").expect("300").payload,
            vec![7u8; 300]
        );
        assert_eq!(
            d.next_frame().expect("ok").expect("70000").payload,
            vec![9u8; 70_000]
        );
        assert_eq!(d.next_frame().expect("ok"), None);

        assert_eq!(encode_frame(Opcode::Binary, b"\x01ok"), b"\x82\x03\x01ok");
        let f = encode_frame(Opcode::Binary, &[0u8; 200]);
        assert_eq!(&f[..4], &[0x82, 126, 0, 200]);
        let f = encode_frame(Opcode::Binary, &vec![0u8; 70_000]);
        assert_eq!(&f[..2], &[0x82, 127]);
        assert_eq!(f.len(), 70_010);
        assert_eq!(close_frame(1000), [0x88, 2, 0x03, 0xe8]);
        assert_eq!(channel_frame(3, b"{}"), [0x82, 3, 3, b'{', b'}']);
    }

    #[test]
    fn bad_frames_close_the_connection() {
        let mut unmasked = FrameDecoder::default();
        unmasked.push(&[0x82, 0x01, 0x00]);
        assert_eq!(
            unmasked.next_frame().expect_err("unmasked").close_code(),
            1002
        );
        let mut reserved = FrameDecoder::default();
        reserved.push(&client_frame(true, 0x40 | 2, b"x"));
        assert!(reserved.next_frame().is_err());
        let mut long_ping = FrameDecoder::default();
        long_ping.push(&client_frame(true, 9, &[0u8; 126]));
        assert!(long_ping.next_frame().is_err());
        let mut huge = FrameDecoder::default();
        huge.push(&[0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(huge.next_frame().expect_err("too big").close_code(), 1009);
    }

    #[test]
    fn fragments_join_and_control_frames_pass_between_them() {
        let mut d = FrameDecoder::default();
        d.push(&client_frame(false, 2, &[0, b'a']));
        d.push(&client_frame(true, 9, b"beat"));
        d.push(&client_frame(false, 0, b"b"));
        d.push(&client_frame(true, 0, b"c"));
        d.push(&client_frame(true, 8, &1000u16.to_be_bytes()));
        let mut a = MessageAssembler::default();
        let mut messages = Vec::new();
        while let Some(frame) = d.next_frame().expect("frame") {
            if let Some(m) = a.push(frame).expect("message") {
                messages.push(m);
            }
        }
        assert_eq!(
            messages,
            [
                Message::Ping(b"beat".to_vec()),
                Message::Binary(b"\0abc".to_vec()),
                Message::Close(Some(1000)),
            ]
        );
        let mut a = MessageAssembler::default();
        let stray = Frame {
            fin: true,
            opcode: Opcode::Continuation,
            payload: vec![],
        };
        assert!(a.push(stray).is_err());
    }

    #[test]
    fn channels_are_read_from_the_first_byte() {
        assert_eq!(parse_inbound(b"\0hello"), Inbound::Stdin(b"hello".to_vec()));
        assert_eq!(parse_inbound(&[255, 0]), Inbound::CloseStdin);
        assert_eq!(parse_inbound(&[255, 4]), Inbound::Ignored);
        assert_eq!(parse_inbound(&[0]), Inbound::Ignored);
        assert_eq!(parse_inbound(&[]), Inbound::Ignored);
        assert_eq!(parse_inbound(b"\x04{}"), Inbound::Resize(b"{}".to_vec()));
        assert_eq!(parse_inbound(b"\x01out"), Inbound::Ignored);
    }

    #[test]
    fn terminal_sizes_may_arrive_in_pieces() {
        let mut d = ResizeDecoder::default();
        assert_eq!(d.push(b"{\"Width\":80,"), []);
        assert_eq!(
            d.push(b"\"Height\":24}\n{\"Width\":100,\"Height\":40}\n{\"Wid"),
            [
                TerminalSize {
                    width: 80,
                    height: 24
                },
                TerminalSize {
                    width: 100,
                    height: 40
                }
            ]
        );
        assert_eq!(
            d.push(b"th\":1,\"Height\":2}\n"),
            [TerminalSize {
                width: 1,
                height: 2
            }]
        );
        assert_eq!(d.push(b"not json\n"), []);
        assert_eq!(
            d.push(b"{\"Width\":5,\"Height\":6}"),
            [TerminalSize {
                width: 5,
                height: 6
            }]
        );
    }

    #[test]
    fn statuses_carry_the_exit_code_the_way_client_go_reads_it() {
        let ok = serde_json::to_value(exit_status(0)).expect("json");
        assert_eq!(ok["status"], "Success");
        assert!(ok.get("reason").is_none());

        let failed = serde_json::to_value(exit_status(3)).expect("json");
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(
            failed["details"]["causes"],
            serde_json::json!([{"reason": "ExitCode", "message": "3"}])
        );
        assert_eq!(
            failed["message"],
            "command terminated with non-zero exit code: command terminated with exit code 3"
        );

        let gone = serde_json::to_value(start_failure(&ExecError::ContainerNotFound("app".into())))
            .expect("json");
        assert_eq!(gone["reason"], "InternalError");
        assert_eq!(gone["code"], 500);
        assert_eq!(
            gone["message"],
            "Internal error occurred: unable to upgrade connection: container not found (\"app\")"
        );
    }

    /// A backend whose command copies stdin to stdout, writes `err` to stderr (with a
    /// terminal: the size it started at), and exits with 3 once stdin ends.
    struct Cat;

    impl ExecBackend for Cat {
        fn exec(&self, request: ExecRequest) -> BoxFuture<'static, Result<ExecProcess, ExecError>> {
            Box::pin(async move {
                if request.container != "app" {
                    return Err(ExecError::ContainerNotFound(request.container));
                }
                let (stdin_w, mut stdin_r) = tokio::io::duplex(64);
                let (mut stdout_w, stdout_r) = tokio::io::duplex(64);
                let (mut stderr_w, stderr_r) = tokio::io::duplex(64);
                let err = match request.tty {
                    true => format!("{:?}", request.size.map(|s| (s.width, s.height))),
                    false => "err".to_owned(),
                };
                let exit = tokio::spawn(async move {
                    stderr_w
                        .write_all(err.as_bytes())
                        .await
                        .map_err(|e| e.to_string())?;
                    drop(stderr_w);
                    tokio::io::copy(&mut stdin_r, &mut stdout_w)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<i32, String>(3)
                });
                Ok(ExecProcess {
                    stdin: Some(Box::pin(stdin_w)),
                    stdout: Some(Box::pin(stdout_r)),
                    stderr: Some(Box::pin(stderr_r)),
                    resize: None,
                    exit: Box::pin(async move { exit.await.map_err(|e| e.to_string())? }),
                })
            })
        }
    }

    fn request(container: &str) -> ExecRequest {
        ExecRequest {
            container: container.into(),
            command: vec!["cat".into()],
            stdin: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        }
    }

    /// Runs a session against `client_bytes` and returns the server's frames.
    async fn session(container: &str, client_bytes: Vec<u8>) -> Vec<(u8, Vec<u8>)> {
        session_of(request(container), client_bytes).await
    }

    async fn session_of(request: ExecRequest, client_bytes: Vec<u8>) -> Vec<(u8, Vec<u8>)> {
        let (server, mut client) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(run_session(
            server,
            Some(Arc::new(Cat) as Arc<dyn ExecBackend>),
            request,
        ));
        client.write_all(&client_bytes).await.expect("write");
        let mut received = Vec::new();
        // The server ends the session after its close frame once the client closes.
        let mut buf = vec![0u8; 4096];
        loop {
            let n = client.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
            let frames = server_frames_prefix(&received);
            if frames.last().is_some_and(|(op, _)| *op == 8) {
                client
                    .write_all(&client_frame(true, 8, &1000u16.to_be_bytes()))
                    .await
                    .expect("close");
            }
        }
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("session ends")
            .expect("session");
        server_frames(&received)
    }

    /// The complete frames at the start of `data`.
    fn server_frames_prefix(data: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut end = 0;
        let mut rest = data;
        while rest.len() >= 2 {
            let (len, at) = match rest[1] & 0x7f {
                126 if rest.len() >= 4 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
                127 | 126 => break,
                n => (n as usize, 2),
            };
            if rest.len() < at + len {
                break;
            }
            end += at + len;
            rest = &rest[at + len..];
        }
        server_frames(&data[..end])
    }

    /// The bytes the session's command wrote on `ch`.
    fn stream_of(frames: &[(u8, Vec<u8>)], ch: u8) -> Vec<u8> {
        frames
            .iter()
            .filter(|(op, p)| *op == 2 && p.first() == Some(&ch))
            .flat_map(|(_, p)| p[1..].to_vec())
            .collect()
    }

    #[tokio::test]
    async fn a_terminal_starts_at_the_clients_first_size() {
        let tty = ExecRequest {
            tty: true,
            stderr: false,
            ..request("app")
        };
        // kubectl sends the size right after the upgrade, and may split it.
        let sized = [
            client_frame(true, 2, b"\x04{\"Width\":100,"),
            client_frame(true, 2, b"\x04\"Height\":30}{\"Width\":80,\"Height\":24}"),
            client_frame(true, 2, b"\0typed"),
            client_frame(true, 2, &[255, 0]),
        ]
        .concat();
        let frames = session_of(tty.clone(), sized).await;
        assert_eq!(stream_of(&frames, 2), b"Some((80, 24))", "the latest size");
        assert_eq!(stream_of(&frames, 1), b"typed");

        // A client that types before (or without) sending a size: nothing is lost.
        let typed_first = [
            client_frame(true, 2, b"\0early"),
            client_frame(true, 2, &[255, 0]),
        ]
        .concat();
        let frames = session_of(tty, typed_first).await;
        assert_eq!(stream_of(&frames, 2), b"None");
        assert_eq!(stream_of(&frames, 1), b"early");
    }

    #[tokio::test]
    async fn a_session_streams_stdin_and_reports_the_exit_code() {
        let client = [
            client_frame(true, 9, b"hb"),
            client_frame(true, 2, b"\0hello "),
            client_frame(false, 2, b"\0wor"),
            client_frame(true, 0, b"ld"),
            client_frame(true, 2, &[255, 0]),
        ]
        .concat();
        let frames = session("app", client).await;
        assert_eq!(frames.first(), Some(&(2, vec![1])), "announced on stdout");
        assert!(frames.contains(&(10, b"hb".to_vec())), "pong: {frames:?}");
        let stream = |ch: u8| -> Vec<u8> {
            frames
                .iter()
                .filter(|(op, p)| *op == 2 && p.first() == Some(&ch))
                .flat_map(|(_, p)| p[1..].to_vec())
                .collect()
        };
        assert_eq!(stream(1), b"hello world");
        assert_eq!(stream(2), b"err");
        let status: serde_json::Value = serde_json::from_slice(&stream(3)).expect("status");
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        // The status comes after all output, and the close frame last.
        let status_at = frames
            .iter()
            .position(|(op, p)| *op == 2 && p.first() == Some(&3))
            .expect("status frame");
        assert!(
            frames[status_at + 1..]
                .iter()
                .all(|(op, _)| *op == 8 || *op == 10)
        );
        assert_eq!(frames.last(), Some(&(8, vec![0x03, 0xe8])));
    }

    #[tokio::test]
    async fn a_missing_container_is_an_internal_error_on_the_error_channel() {
        let frames = session("gone", Vec::new()).await;
        let status = frames
            .iter()
            .find(|(op, p)| *op == 2 && p.first() == Some(&3))
            .expect("status");
        let status: serde_json::Value = serde_json::from_slice(&status.1[1..]).expect("json");
        assert_eq!(
            status["message"],
            "Internal error occurred: unable to upgrade connection: container not found (\"gone\")"
        );
    }

    #[tokio::test]
    async fn a_client_that_goes_away_ends_the_command() {
        struct Forever(Arc<tokio::sync::Notify>);
        impl ExecBackend for Forever {
            fn exec(&self, _: ExecRequest) -> BoxFuture<'static, Result<ExecProcess, ExecError>> {
                let dropped = self.0.clone();
                Box::pin(async move {
                    struct Guard(Arc<tokio::sync::Notify>);
                    impl Drop for Guard {
                        fn drop(&mut self) {
                            self.0.notify_one();
                        }
                    }
                    let guard = Guard(dropped);
                    Ok(ExecProcess {
                        stdin: None,
                        stdout: None,
                        stderr: None,
                        resize: None,
                        exit: Box::pin(async move {
                            let _guard = guard;
                            std::future::pending::<Result<i32, String>>().await
                        }),
                    })
                })
            }
        }
        let dropped = Arc::new(tokio::sync::Notify::new());
        let (server, client) = tokio::io::duplex(4096);
        let task = tokio::spawn(run_session(
            server,
            Some(Arc::new(Forever(dropped.clone())) as Arc<dyn ExecBackend>),
            request("app"),
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(client);
        tokio::time::timeout(Duration::from_secs(5), dropped.notified())
            .await
            .expect("the command is dropped (killed)");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("session ends")
            .expect("session");
    }
}
