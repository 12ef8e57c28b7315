//! The original destination of a redirected connection. iptables `REDIRECT` rewrites the
//! destination to the proxy's port; `SO_ORIGINAL_DST` (read with socket2) gives back the
//! address the client dialled. Tests swap in a fixed lookup so no iptables is needed.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpStream;

/// Looks up where an accepted connection was originally going.
pub trait OrigDstLookup: Send + Sync + 'static {
    fn original_dst(&self, stream: &TcpStream) -> io::Result<SocketAddr>;
}

/// The kernel's answer (`SO_ORIGINAL_DST`, or `IP6T_SO_ORIGINAL_DST` for IPv6 sockets).
/// A connection that was not NATed (a client dialling the listener itself) yields the
/// listener's own address, so callers can recognise and refuse loops.
#[derive(Clone, Copy, Debug, Default)]
pub struct SoOriginalDst;

impl OrigDstLookup for SoOriginalDst {
    fn original_dst(&self, stream: &TcpStream) -> io::Result<SocketAddr> {
        let sock = socket2::SockRef::from(stream);
        let local = stream.local_addr()?;
        let found = if local.is_ipv4() {
            sock.original_dst_v4()
        } else {
            sock.original_dst_v6()
        };
        match found {
            Ok(addr) => addr.as_socket().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "original destination is not an IP address",
                )
            }),
            // No conntrack entry: the connection was not redirected.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(local),
            Err(e) => Err(e),
        }
    }
}

/// The connection's own local address: what a plain (non-transparent) listener sees.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalAddr;

impl OrigDstLookup for LocalAddr {
    fn original_dst(&self, stream: &TcpStream) -> io::Result<SocketAddr> {
        stream.local_addr()
    }
}

/// A settable answer for tests (linkerd's `MockOrigDst`): every connection accepted after
/// [`MockOrigDst::set`] reports that address.
#[derive(Clone, Default)]
pub struct MockOrigDst {
    addr: Arc<Mutex<Option<SocketAddr>>>,
}

impl fmt::Debug for MockOrigDst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MockOrigDst").field(&self.get()).finish()
    }
}

impl MockOrigDst {
    pub fn new(addr: SocketAddr) -> Self {
        let m = Self::default();
        m.set(addr);
        m
    }

    pub fn set(&self, addr: SocketAddr) {
        *self.addr.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr);
    }

    pub fn get(&self) -> Option<SocketAddr> {
        *self.addr.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl OrigDstLookup for MockOrigDst {
    fn original_dst(&self, stream: &TcpStream) -> io::Result<SocketAddr> {
        match self.get() {
            Some(a) => Ok(a),
            None => stream.local_addr(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unredirected_connection_reports_the_listener_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        // Either conntrack knows the (un-NATed) tuple or there is no entry: both mean "the
        // client dialled the listener itself".
        assert_eq!(SoOriginalDst.original_dst(&accepted).unwrap(), addr);
        assert_eq!(LocalAddr.original_dst(&accepted).unwrap(), addr);
        let mock = MockOrigDst::new("10.96.0.10:8000".parse().unwrap());
        assert_eq!(
            mock.original_dst(&accepted).unwrap(),
            "10.96.0.10:8000".parse::<SocketAddr>().unwrap()
        );
    }
}
