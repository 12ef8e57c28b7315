//! Opaque TCP forwarding (Envoy's `tcp_proxy`): one connect attempt, a byte pump in each
//! direction with half-close, and one access-log line plus the `istio_tcp_*` metrics per
//! connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::accesslog::{Entry, ResponseFlags};
use crate::metrics::TcpLabels;
use crate::proxy::Shared;
use crate::registry::Cluster;
use crate::upstream;

/// Per-direction copy buffer.
const BUF: usize = 16 * 1024;

/// Counters of one connection; logged and counted once when dropped.
struct Record<'a> {
    shared: &'a Shared,
    cluster: Arc<Cluster>,
    start: Instant,
    wall: SystemTime,
    flags: ResponseFlags,
    upstream_host: Option<SocketAddr>,
    upstream_local: Option<SocketAddr>,
    dst: SocketAddr,
    remote: SocketAddr,
    /// To the client.
    sent: u64,
    /// From the client.
    received: u64,
}

impl Record<'_> {
    fn labels(&self, flags: ResponseFlags) -> TcpLabels {
        TcpLabels {
            peer: self.cluster.peer.clone(),
            flags,
        }
    }
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        let labels = self.labels(self.flags);
        self.shared
            .metrics
            .tcp_closed(&labels, self.sent, self.received);
        if let Some(log) = &self.shared.log {
            log.log(&Entry {
                start: Some(self.wall),
                response_flags: self.flags,
                bytes_received: self.received,
                bytes_sent: self.sent,
                duration_ms: Some(self.start.elapsed().as_millis() as u64),
                upstream_host: self.upstream_host,
                upstream_cluster: Some(&self.cluster.name),
                upstream_local_address: self.upstream_local,
                downstream_local_address: Some(self.dst),
                downstream_remote_address: Some(self.remote),
                ..Entry::default()
            });
        }
    }
}

/// Refuses a connection that has nowhere to go (`BlackHoleCluster`, a service without
/// endpoints, a loop): closed without data, logged with `UH`.
pub fn blackhole(
    shared: &Shared,
    cluster: Arc<Cluster>,
    dst: SocketAddr,
    remote: SocketAddr,
    start: Instant,
    wall: SystemTime,
) {
    let record = Record {
        shared,
        cluster,
        start,
        wall,
        flags: ResponseFlags::UH,
        upstream_host: None,
        upstream_local: None,
        dst,
        remote,
        sent: 0,
        received: 0,
    };
    shared
        .metrics
        .tcp_opened(&record.labels(ResponseFlags::NONE));
}

/// Forwards a connection to one endpoint of `cluster`. `prefix` holds bytes already read
/// from the client (protocol detection).
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    shared: &Shared,
    mut down: TcpStream,
    prefix: Bytes,
    cluster: Arc<Cluster>,
    dst: SocketAddr,
    remote: SocketAddr,
    start: Instant,
    wall: SystemTime,
) {
    let mut record = Record {
        shared,
        cluster: cluster.clone(),
        start,
        wall,
        flags: ResponseFlags::NONE,
        upstream_host: None,
        upstream_local: None,
        dst,
        remote,
        sent: 0,
        received: 0,
    };
    shared
        .metrics
        .tcp_opened(&record.labels(ResponseFlags::NONE));
    let Some(ep) = cluster.pick(dst, &[]) else {
        record.flags = ResponseFlags::UH;
        return;
    };
    record.upstream_host = Some(ep);
    let mut up = match upstream::connect(ep, cluster.bind, shared.connect_timeout).await {
        Ok(s) => s,
        Err(err) => {
            tracing::debug!(%err, upstream = %ep, "TCP upstream connect");
            shared.metrics.connect_failed(&cluster.name);
            // One attempt is the maximum: Envoy flags both the failure and the limit.
            record.flags = ResponseFlags::UF | ResponseFlags::URX;
            return;
        }
    };
    record.upstream_local = up.local_addr().ok();
    if !prefix.is_empty() {
        if up.write_all(&prefix).await.is_err() {
            return;
        }
        record.received = prefix.len() as u64;
    }
    let (mut received, mut sent) = (0u64, 0u64);
    {
        let (mut dr, mut dw) = down.split();
        let (mut ur, mut uw) = up.split();
        let _ = tokio::try_join!(
            pump(&mut dr, &mut uw, &mut received),
            pump(&mut ur, &mut dw, &mut sent),
        );
    }
    record.received += received;
    record.sent = sent;
}

/// Copies until EOF, then half-closes the writer.
async fn pump<R, W>(r: &mut R, w: &mut W, count: &mut u64) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            let _ = w.shutdown().await;
            return Ok(());
        }
        w.write_all(&buf[..n]).await?;
        *count += n as u64;
    }
}
