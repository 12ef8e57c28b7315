//! Upstream connections: connect (optionally from a fixed source address), and keep HTTP/1.1
//! connections idle for reuse and one multiplexed HTTP/2 connection per endpoint and thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpSocket, TcpStream};

use crate::body::ReqBody;

/// Istio's default `connectTimeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE_PER_KEY: usize = 128;

/// Opens a TCP connection to `addr`, from `bind` when given.
pub async fn connect(
    addr: SocketAddr,
    bind: Option<IpAddr>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = bind.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = match tokio::time::timeout(timeout, socket.connect(addr)).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "upstream connect timeout",
            ));
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Identifies interchangeable upstream connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub addr: SocketAddr,
    pub bind: Option<IpAddr>,
}

/// An HTTP/1.1 connection checked out of the pool.
pub struct H1 {
    pub tx: http1::SendRequest<ReqBody>,
    pub local: SocketAddr,
    pub key: Key,
}

/// A shared HTTP/2 connection.
#[derive(Clone)]
pub struct H2 {
    pub tx: http2::SendRequest<ReqBody>,
    pub local: SocketAddr,
}

// Pools are per thread: a data-plane worker thread runs its own single-threaded runtime, so
// a connection is only ever driven and reused on the thread that opened it.
thread_local! {
    static H1_IDLE: RefCell<HashMap<Key, Vec<H1>>> = RefCell::new(HashMap::new());
    static H2_SHARED: RefCell<HashMap<Key, H2>> = RefCell::new(HashMap::new());
}

/// How getting a connection failed.
#[derive(Debug)]
pub enum CheckoutError {
    /// TCP connect failed (Envoy's "connection failure").
    Connect(io::Error),
    /// The HTTP handshake failed on a fresh connection.
    Handshake(hyper::Error),
}

/// An idle HTTP/1.1 connection of this thread, if one is still open.
pub fn take_h1(key: Key) -> Option<H1> {
    H1_IDLE.with(|pool| {
        let mut map = pool.borrow_mut();
        let idle = map.get_mut(&key)?;
        while let Some(conn) = idle.pop() {
            if !conn.tx.is_closed() {
                return Some(conn);
            }
        }
        None
    })
}

/// Returns a connection whose last response was read to the end.
pub fn put_h1(conn: H1) {
    if conn.tx.is_closed() {
        return;
    }
    H1_IDLE.with(|pool| {
        let mut map = pool.borrow_mut();
        let idle = map.entry(conn.key).or_default();
        if idle.len() < MAX_IDLE_PER_KEY {
            idle.push(conn);
        }
    });
}

/// Opens a new HTTP/1.1 connection.
pub async fn connect_h1(key: Key, timeout: Duration) -> Result<H1, CheckoutError> {
    let stream = connect(key.addr, key.bind, timeout)
        .await
        .map_err(CheckoutError::Connect)?;
    let local = stream.local_addr().map_err(CheckoutError::Connect)?;
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(CheckoutError::Handshake)?;
    tokio::spawn(async move {
        if let Err(err) = conn.with_upgrades().await {
            tracing::debug!(%err, "upstream HTTP/1.1 connection");
        }
    });
    Ok(H1 { tx, local, key })
}

/// This thread's shared HTTP/2 connection to `key`, if it is still open.
pub fn get_h2(key: Key) -> Option<H2> {
    H2_SHARED.with(|pool| {
        let mut map = pool.borrow_mut();
        match map.get(&key) {
            Some(c) if !c.tx.is_closed() => Some(c.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    })
}

/// Forgets a broken HTTP/2 connection.
pub fn drop_h2(key: Key) {
    H2_SHARED.with(|pool| {
        let mut map = pool.borrow_mut();
        if map.get(&key).is_some_and(|c| c.tx.is_closed()) {
            map.remove(&key);
        }
    });
}

/// Opens a new HTTP/2 (prior knowledge) connection and shares it on this thread.
pub async fn connect_h2(key: Key, timeout: Duration) -> Result<H2, CheckoutError> {
    let stream = connect(key.addr, key.bind, timeout)
        .await
        .map_err(CheckoutError::Connect)?;
    let local = stream.local_addr().map_err(CheckoutError::Connect)?;
    let (tx, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(stream))
        .await
        .map_err(CheckoutError::Handshake)?;
    tokio::spawn(async move {
        if let Err(err) = conn.await {
            tracing::debug!(%err, "upstream HTTP/2 connection");
        }
    });
    let h2 = H2 { tx, local };
    H2_SHARED.with(|pool| pool.borrow_mut().insert(key, h2.clone()));
    Ok(h2)
}
