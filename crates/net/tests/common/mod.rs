//! Root-test scaffolding: every test runs in a private network namespace standing in for
//! the host, and its "pods" are further namespaces. The machine's own network is never
//! touched.

#![allow(dead_code)]

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use net::netns::Netns;

/// How long a connection attempt may take before the test calls it a hang.
pub const PATIENCE: Duration = Duration::from_secs(3);

/// Whether root tests can run. Under `CI=true` a missing prerequisite fails the test.
pub fn prerequisites() -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root".to_owned());
    }
    for tool in ["/usr/sbin/nft", "/usr/sbin/ip"] {
        if !Path::new(tool).exists() && !Path::new(&tool.replace("/usr", "")).exists() {
            missing.push(tool.to_owned());
        }
    }
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("root test prerequisites missing: {}", missing.join(", "));
    }
    eprintln!("skipping: needs {}", missing.join(", "));
    false
}

/// Runs `body` in a fresh network namespace (with `lo` up) that plays the host.
pub fn in_private_host<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    if !prerequisites() {
        return;
    }
    let host = Netns::new_private().expect("create a private network namespace");
    host.block_on(|| async move {
        sh("ip link set lo up");
        body().await;
    })
    .expect("enter the private network namespace");
}

/// Runs a shell command in the calling thread's namespace; panics on failure.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Like [`sh`] but returns whether it succeeded.
pub fn sh_ok(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A config for a test: defaults, with state in `dir`.
pub fn config(dir: &Path) -> net::NetConfig {
    net::NetConfig::new(dir)
}

/// A stand-in pod: its own network namespace.
pub struct Pod {
    pub uid: String,
    pub ns: Netns,
}

impl Pod {
    pub fn new(uid: &str) -> Pod {
        Pod {
            uid: uid.to_owned(),
            ns: Netns::new_private().expect("pod namespace"),
        }
    }

    /// Serves TCP on `port` from inside the pod: each connection gets `"<name> <peer ip>"`.
    pub async fn serve(&self, port: u16, name: &str) -> tokio::task::JoinHandle<()> {
        let listener = self
            .ns
            .run(move || -> io::Result<TcpListener> {
                let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))?;
                l.set_nonblocking(true)?;
                Ok(l)
            })
            .await
            .expect("pod thread")
            .expect("bind in pod");
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let name = name.to_owned();
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, peer)) = listener.accept().await else {
                    return;
                };
                let reply = format!("{name} {}", peer.ip());
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let _ = conn.write_all(reply.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        })
    }

    /// Connects from inside the pod and reads the whole reply.
    pub async fn fetch(&self, addr: SocketAddrV4) -> io::Result<String> {
        self.ns
            .run(move || fetch_blocking(addr))
            .await
            .expect("pod thread")
    }

    /// Sends one UDP datagram from inside the pod.
    pub async fn send_udp(&self, to: SocketAddrV4, payload: &'static [u8]) {
        self.ns
            .run(move || -> io::Result<()> {
                let s = UdpSocket::bind("0.0.0.0:0")?;
                s.send_to(payload, to)?;
                Ok(())
            })
            .await
            .expect("pod thread")
            .expect("send udp");
    }

    /// Runs a shell command inside the pod.
    pub async fn sh(&self, cmd: &str) -> String {
        let cmd = cmd.to_owned();
        self.ns.run(move || sh(&cmd)).await.expect("pod thread")
    }
}

/// Connects (from the calling thread's namespace) and reads the whole reply.
pub fn fetch_blocking(addr: SocketAddrV4) -> io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr.into(), PATIENCE)?;
    s.set_read_timeout(Some(PATIENCE))?;
    s.write_all(b"hi")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Connects from the host (the calling thread's namespace), off the async thread.
pub async fn host_fetch(addr: SocketAddrV4) -> io::Result<String> {
    let res = tokio::time::timeout(PATIENCE * 2, async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"hi").await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    })
    .await;
    res.unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")))
}

/// `ifindex` of a link in the calling thread's namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "dev", name])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Polls `check` until it returns true or `limit` passes.
pub async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
