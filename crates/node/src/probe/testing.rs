//! Test helpers: a [`ContainerAccess`] that runs commands and opens connections on the
//! host, and a tiny HTTP(S) server on 127.0.0.1.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction, HTTPHeader, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::access::{BoxFuture, ContainerAccess, ExecOutput};

/// Runs probe and hook commands directly on the host; the "pod IP" is 127.0.0.1.
pub(crate) struct HostAccess;

impl ContainerAccess for HostAccess {
    fn exec(&self, argv: Vec<String>, timeout: Duration) -> BoxFuture<'_, io::Result<ExecOutput>> {
        Box::pin(async move {
            let Some((program, args)) = argv.split_first() else {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
            };
            let child = tokio::process::Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            match tokio::time::timeout(timeout, child.wait_with_output()).await {
                // Dropping the child kills it.
                Err(_) => Ok(ExecOutput {
                    exit_code: None,
                    output: String::new(),
                }),
                Ok(out) => {
                    let out = out?;
                    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
                    output.push_str(&String::from_utf8_lossy(&out.stderr));
                    let code = out.status.code().or_else(|| {
                        std::os::unix::process::ExitStatusExt::signal(&out.status).map(|s| 128 + s)
                    });
                    Ok(ExecOutput {
                        exit_code: code,
                        output,
                    })
                }
            }
        })
    }

    fn connect(&self, addr: SocketAddr, timeout: Duration) -> BoxFuture<'_, io::Result<TcpStream>> {
        Box::pin(async move {
            match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
                Ok(result) => result,
            }
        })
    }

    fn pod_ip(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub(crate) async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

/// An HTTP server on 127.0.0.1 with fixed routes:
/// `/ok` 200, `/fail` 500, `/status` (status from [`TestServer::status`]), `/redirect`
/// (302 to `/ok`), `/redirect-away` (302 to `/ok` on host `localhost`), `/loop` (302 to itself),
/// `/slow` (answers after 3 s), `/chunked` (200, chunked body), anything else 404.
pub(crate) struct TestServer {
    pub port: u16,
    /// Request heads received, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
    pub status: Arc<AtomicU16>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// The same server over TLS with a self-signed certificate.
    pub async fn start_tls() -> Self {
        Self::start_with(Some(tls_acceptor())).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let (reqs, st) = (requests.clone(), status.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (reqs, st, tls) = (reqs.clone(), st.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve(stream, port, reqs, st).await;
                            }
                        }
                        None => serve(stream, port, reqs, st).await,
                    }
                });
            }
        });
        Self {
            port,
            requests,
            status,
        }
    }

    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    status: Arc<AtomicU16>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if !head[0].is_ascii_uppercase() {
            // Not HTTP (say, a TLS ClientHello): answer as Go's server does.
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n400 Bad Request")
                .await;
            return;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    requests.lock().expect("lock").push(head.clone());
    let path = head.split(' ').nth(1).unwrap_or_default().to_string();
    let response = match path.as_str() {
        "/ok" => plain(200, "", "ok"),
        "/fail" => plain(500, "", "broken"),
        "/status" => plain(status.load(Ordering::SeqCst), "", "status"),
        "/redirect" => plain(302, "Location: /ok\r\n", "moved"),
        "/redirect-away" => plain(302, &format!("Location: http://localhost:{port}/ok\r\n"), "moved"),
        "/loop" => plain(302, "Location: /loop\r\n", ""),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            plain(200, "", "late")
        }
        "/chunked" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            .to_string(),
        _ => plain(404, "", "not found"),
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn plain(status: u16, extra_headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    )
}

/// Self-signed certificate for 127.0.0.1, generated for these tests only.
const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBoDCCAUagAwIBAgIUWH7QxtQ2Odzv6Mml6yEwy0s/VJQwCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRdGFuZGVtLXByb2JlLXRlc3QwIBcNMjYxMTI1MTYwMzIyWhgP
MjEyNjExMDExNjAzMjJaMBwxGjAYBgNVBAMMEXRhbmRlbS1wcm9iZS10ZXN0MFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEn9IwcTXV6Yr38OrEmDzH6vHSM0csfvSI
TrhMcZ/+IuE450l4exAmhvtINyDcVlALTw59yH+Gaf7zYDLgaRxqLqNkMGIwHQYD
VR0OBBYEFHooUk2MkmZyhQvWZFuAxocU/kgOMB8GA1UdIwQYMBaAFHooUk2MkmZy
hQvWZFuAxocU/kgOMA8GA1UdEwEB/wQFMAMBAf8wDwYDVR0RBAgwBocEfwAAATAK
BggqhkjOPQQDAgNIADBFAiEA8Ewq1LVH73fn+zoqWLQFk0b8KRSQCVn8GbvltyIU
r5gCIHLS04z89UcxkYpIuO7PQU/Ix1AejwsxAjvm1C7Z3cHr
-----END CERTIFICATE-----
";

const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgvenNBXAtAD8zlXX8
MKj8GSHdoomE4A2RC7p2Ij8rjeqhRANCAASf0jBxNdXpivfw6sSYPMfq8dIzRyx+
9IhOuExxn/4i4TjnSXh7ECaG+0g3INxWUAtPDn3If4Zp/vNgMuBpHGou
-----END PRIVATE KEY-----
";

fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = CertificateDer::from_pem_slice(TEST_CERT.as_bytes()).expect("test cert");
    let key = PrivateKeyDer::from_pem_slice(TEST_KEY.as_bytes()).expect("test key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Probe builders.
pub(crate) fn exec_probe(command: &[&str]) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(command.iter().map(|s| s.to_string()).collect()),
        }),
        ..Probe::default()
    }
}

pub(crate) fn http_action(port: IntOrString, path: &str) -> HTTPGetAction {
    HTTPGetAction {
        port,
        path: Some(path.to_string()),
        ..HTTPGetAction::default()
    }
}

pub(crate) fn http_probe(port: u16, path: &str) -> Probe {
    Probe {
        http_get: Some(http_action(IntOrString::Int(i32::from(port)), path)),
        ..Probe::default()
    }
}

pub(crate) fn header(name: &str, value: &str) -> HTTPHeader {
    HTTPHeader {
        name: name.to_string(),
        value: value.to_string(),
    }
}

pub(crate) fn tcp_probe(port: IntOrString) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction { port, host: None }),
        ..Probe::default()
    }
}
