//! Forwarding of names outside the cluster domain to the host's nameservers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout_at};

use crate::Error;

/// How long a forwarded question may take in total before the asker gets SERVFAIL.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

const DNS_PORT: u16 = 53;

/// The nameservers that answer names outside the cluster domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    servers: Vec<SocketAddr>,
    timeout: Duration,
}

/// Why a forwarded question got no usable answer.
#[derive(Debug)]
pub(crate) enum ForwardError {
    /// There is nobody to ask.
    NoUpstream,
    /// Every server failed or the time ran out.
    Failed,
}

impl Default for Upstream {
    fn default() -> Self {
        Self::none()
    }
}

impl Upstream {
    /// Forward to `servers`, tried in order within [`DEFAULT_TIMEOUT`].
    pub fn new(servers: Vec<SocketAddr>) -> Self {
        Self {
            servers,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// No upstream: names outside the cluster domain are answered NXDOMAIN.
    pub fn none() -> Self {
        Self::new(Vec::new())
    }

    /// Replaces the overall time limit of one forwarded question.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The servers, in the order they are tried.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The overall time limit of one forwarded question.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Reads the `nameserver` lines of a resolv.conf file (usually `/etc/resolv.conf`),
    /// leaving out any server in `exclude` (the addresses this DNS server listens on, so
    /// it never forwards to itself).
    pub fn from_resolv_conf(path: &Path, exclude: &[SocketAddr]) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadResolvConf {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::parse_resolv_conf(&text, exclude))
    }

    /// [`Upstream::from_resolv_conf`] on the file's text.
    pub fn parse_resolv_conf(text: &str, exclude: &[SocketAddr]) -> Self {
        let mut servers = Vec::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                continue;
            }
            let Some(addr) = words.next().and_then(parse_nameserver) else {
                continue;
            };
            if loops_back(addr, exclude) || servers.contains(&addr) {
                continue;
            }
            servers.push(addr);
        }
        Self::new(servers)
    }

    /// Sends the raw question `query` to the servers in turn and returns the first usable
    /// reply (its id is the one of `query`). Over UDP first; a truncated reply is fetched
    /// again over TCP when the asker came over TCP.
    pub(crate) async fn exchange(
        &self,
        query: &[u8],
        question: &Query,
        over_tcp: bool,
    ) -> Result<Message, ForwardError> {
        if self.servers.is_empty() {
            return Err(ForwardError::NoUpstream);
        }
        if query.len() < 12 {
            return Err(ForwardError::Failed);
        }
        let client_id = u16::from_be_bytes([query[0], query[1]]);
        let id: u16 = rand::random();
        let mut bytes = query.to_vec();
        bytes[..2].copy_from_slice(&id.to_be_bytes());

        let start = Instant::now();
        let deadline = start + self.timeout;
        let count = self.servers.len() as u32;
        let mut fallback = None;
        for (i, server) in self.servers.iter().enumerate() {
            // Each server gets an equal share of the time; a silent one must not starve the rest.
            let slot_end = start + self.timeout * (i as u32 + 1) / count;
            let reply =
                match timeout_at(slot_end, udp_exchange(*server, &bytes, id, question)).await {
                    Ok(Ok(reply)) => reply,
                    Ok(Err(error)) => {
                        tracing::debug!(%server, %error, "upstream failed");
                        continue;
                    }
                    Err(_) => {
                        tracing::debug!(%server, "upstream timed out");
                        continue;
                    }
                };
            let reply = if reply.metadata.truncation && over_tcp {
                match timeout_at(deadline, tcp_exchange(*server, &bytes, id, question)).await {
                    Ok(Ok(full)) => full,
                    _ => reply,
                }
            } else {
                reply
            };
            let retry = matches!(
                reply.metadata.response_code,
                ResponseCode::ServFail | ResponseCode::Refused
            );
            if retry && i + 1 < self.servers.len() {
                fallback = Some(reply);
                continue;
            }
            return Ok(with_id(reply, client_id));
        }
        fallback
            .map(|reply| with_id(reply, client_id))
            .ok_or(ForwardError::Failed)
    }
}

fn with_id(mut reply: Message, id: u16) -> Message {
    reply.metadata.id = id;
    reply
}

/// `1.2.3.4`, `fd00::1` or `fe80::1%2` on port 53.
fn parse_nameserver(text: &str) -> Option<SocketAddr> {
    let (ip, scope) = match text.split_once('%') {
        Some((ip, scope)) => (ip, scope.parse::<u32>().ok()),
        None => (text, None),
    };
    match ip.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => Some(SocketAddr::new(IpAddr::V4(v4), DNS_PORT)),
        IpAddr::V6(v6) => Some(SocketAddr::V6(SocketAddrV6::new(
            v6,
            DNS_PORT,
            0,
            scope.unwrap_or(0),
        ))),
    }
}

/// Whether forwarding to `server` would reach one of our own listeners.
fn loops_back(server: SocketAddr, ours: &[SocketAddr]) -> bool {
    ours.iter().any(|own| {
        own.port() == server.port()
            && (own.ip() == server.ip()
                || (own.ip().is_unspecified()
                    && server.ip().is_loopback()
                    && own.is_ipv4() == server.is_ipv4()))
    })
}

/// Whether `reply` answers the question we sent with `id`.
fn answers(reply: &Message, id: u16, question: &Query) -> bool {
    reply.metadata.id == id
        && reply.metadata.message_type == MessageType::Response
        && reply.queries.first().is_none_or(|q| {
            q.query_type() == question.query_type()
                && q.query_class() == question.query_class()
                && q.name().eq_ignore_root_case(question.name())
        })
}

async fn udp_exchange(
    server: SocketAddr,
    bytes: &[u8],
    id: u16,
    question: &Query,
) -> std::io::Result<Message> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    // Connected: the kernel drops datagrams from anyone but the server.
    socket.connect(server).await?;
    socket.send(bytes).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let len = socket.recv(&mut buf).await?;
        match Message::from_vec(&buf[..len]) {
            Ok(reply) if answers(&reply, id, question) => return Ok(reply),
            // Stray or spoofed datagrams are ignored; the deadline bounds the wait.
            _ => continue,
        }
    }
}

async fn tcp_exchange(
    server: SocketAddr,
    bytes: &[u8],
    id: u16,
    question: &Query,
) -> std::io::Result<Message> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let len = u16::try_from(bytes.len()).map_err(|_| invalid("question too long"))?;
    let mut stream = TcpStream::connect(server).await?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await?;
    let reply_len = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(reply_len)];
    stream.read_exact(&mut buf).await?;
    let reply = Message::from_vec(&buf).map_err(|e| invalid(&e.to_string()))?;
    if answers(&reply, id, question) {
        Ok(reply)
    } else {
        Err(invalid("reply does not match the question"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_in_order_without_our_own() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.2\n\
                    nameserver 10.0.0.1 # gateway\n;nameserver 9.9.9.9\nnameserver fd00::53\n\
                    nameserver fe80::1%2\nnameserver not-an-ip\nnameserver 10.0.0.2\n\
                    options ndots:2\n";
        let ours: SocketAddr = "10.0.0.1:53".parse().unwrap();
        let upstream = Upstream::parse_resolv_conf(text, &[ours]);
        let expected: Vec<SocketAddr> = vec![
            "10.0.0.2:53".parse().unwrap(),
            "[fd00::53]:53".parse().unwrap(),
            SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 53, 0, 2)),
        ];
        assert_eq!(upstream.servers(), &expected[..]);
        assert_eq!(upstream.timeout(), DEFAULT_TIMEOUT);
    }

    #[test]
    fn wildcard_listener_excludes_loopback_servers_on_the_same_port() {
        let text = "nameserver 127.0.0.1\nnameserver 127.0.0.53\nnameserver 10.0.0.2\n";
        let any: SocketAddr = "0.0.0.0:53".parse().unwrap();
        let upstream = Upstream::parse_resolv_conf(text, &[any]);
        assert_eq!(
            upstream.servers(),
            &["10.0.0.2:53".parse::<SocketAddr>().unwrap()][..]
        );
        // A listener on another port does not loop.
        let other: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        assert_eq!(
            Upstream::parse_resolv_conf(text, &[other]).servers().len(),
            3
        );
    }

    #[test]
    fn missing_resolv_conf_is_an_error_naming_the_path() {
        let err = Upstream::from_resolv_conf(Path::new("/nonexistent/resolv.conf"), &[])
            .expect_err("missing file");
        assert!(
            err.to_string().contains("/nonexistent/resolv.conf"),
            "{err}"
        );
    }
}
