//! Protocol detection on a captured connection (Envoy's `http_inspector`): HTTP/1.x, h2c (the
//! HTTP/2 connection preface) or opaque TCP, decided from the client's first bytes. The bytes
//! read are replayed to whoever handles the connection next ([`Rewind`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    H2c,
    Tcp,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The longest method token Envoy's parser accepts is short; anything longer is not HTTP.
const MAX_METHOD: usize = 24;
/// A request line longer than this is treated as opaque rather than buffered further.
pub const MAX_DETECT: usize = 16 * 1024;

/// The verdict on the bytes seen so far, or `None` when more bytes are needed.
pub fn classify(buf: &[u8]) -> Option<Protocol> {
    if buf.is_empty() {
        return None;
    }
    // h2c with prior knowledge starts with the fixed preface.
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Some(Protocol::H2c)
        } else {
            None
        };
    }
    // HTTP/1: `METHOD SP target SP HTTP/1.x CRLF`, method being an upper-case token.
    let method_len = buf
        .iter()
        .take(MAX_METHOD + 1)
        .position(|&b| !(b.is_ascii_uppercase() || b == b'-' || b == b'_'));
    match method_len {
        None if buf.len() <= MAX_METHOD => return None,
        None => return Some(Protocol::Tcp),
        Some(0) => return Some(Protocol::Tcp),
        Some(i) if buf[i] != b' ' => return Some(Protocol::Tcp),
        Some(_) => {}
    }
    let Some(eol) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_DETECT {
            Some(Protocol::Tcp)
        } else {
            None
        };
    };
    let line = buf[..eol].strip_suffix(b"\r").unwrap_or(&buf[..eol]);
    if line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0") {
        Some(Protocol::Http1)
    } else {
        Some(Protocol::Tcp)
    }
}

/// Reads until the protocol is known. With a timeout, a client that stays silent (a
/// server-first protocol) is treated as TCP once it expires; `None` waits forever, as Istio's
/// default `protocolDetectionTimeout: 0s` does.
pub async fn detect<R: AsyncRead + Unpin>(
    io: &mut R,
    timeout: Option<Duration>,
) -> io::Result<(Protocol, Bytes)> {
    let mut buf = BytesMut::with_capacity(1024);
    let read_all = async {
        loop {
            if buf.len() == buf.capacity() {
                buf.reserve(buf.len());
            }
            let n = io.read_buf(&mut buf).await?;
            if n == 0 {
                // The client closed before saying anything recognisable: opaque.
                return Ok::<_, io::Error>(Protocol::Tcp);
            }
            if let Some(p) = classify(&buf) {
                return Ok(p);
            }
        }
    };
    let protocol = match timeout {
        Some(t) => match tokio::time::timeout(t, read_all).await {
            Ok(r) => r?,
            Err(_) => Protocol::Tcp,
        },
        None => read_all.await?,
    };
    Ok((protocol, buf.freeze()))
}

/// An IO that first yields bytes already read from it.
#[derive(Debug)]
pub struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }

    pub fn into_parts(self) -> (Bytes, T) {
        (self.prefix, self.inner)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classifies_http1_requests() {
        assert_eq!(
            classify(b"GET /get HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Protocol::Http1)
        );
        assert_eq!(classify(b"POST / HTTP/1.0\n"), Some(Protocol::Http1));
        // Not enough bytes yet to decide.
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"GET /very/long"), None);
    }

    #[test]
    fn classifies_h2_preface() {
        assert_eq!(classify(H2_PREFACE), Some(Protocol::H2c));
        assert_eq!(classify(&H2_PREFACE[..10]), None);
        // "PRI" alone could still be either; a different continuation is not h2.
        assert_eq!(classify(b"PRI * HTTP/1.1\r\n"), Some(Protocol::Http1));
    }

    #[test]
    fn classifies_opaque_bytes() {
        assert_eq!(classify(b"\x16\x03\x01\x02\x00"), Some(Protocol::Tcp));
        assert_eq!(classify(b"hello world\n"), Some(Protocol::Tcp));
        assert_eq!(classify(b"GET / SMTP\r\n"), Some(Protocol::Tcp));
        assert_eq!(classify(b"HELO example.com\r\n"), Some(Protocol::Tcp));
        assert_eq!(classify(&[b'A'; 40]), Some(Protocol::Tcp));
    }

    #[tokio::test]
    async fn detect_reads_across_segments_and_rewinds() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            client.write_all(b"GET /a").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            client.write_all(b" HTTP/1.1\r\n\r\n").await.unwrap();
            client
        });
        let (p, prefix) = detect(&mut server, None).await.unwrap();
        assert_eq!(p, Protocol::Http1);
        let _client = writer.await.unwrap();
        let mut rewound = Rewind::new(prefix, server);
        let mut got = vec![0; 19];
        rewound.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"GET /a HTTP/1.1\r\n\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn silent_client_is_tcp_after_the_timeout() {
        let (_client, mut server) = tokio::io::duplex(64);
        let (p, prefix) = detect(&mut server, Some(Duration::from_millis(100)))
            .await
            .unwrap();
        assert_eq!(p, Protocol::Tcp);
        assert!(prefix.is_empty());
    }

    #[tokio::test]
    async fn closed_client_is_tcp() {
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        let (p, _) = detect(&mut server, None).await.unwrap();
        assert_eq!(p, Protocol::Tcp);
    }
}
