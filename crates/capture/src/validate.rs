//! `--run-validation`: proves the redirect works by connecting to a port nobody listens
//! on and seeing the connection arrive at the proxy ports with that original port.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, SockaddrLike, bind, connect, socket,
};

use crate::CaptureError;
use crate::flags::Settings;
use crate::netinfo::original_destination;

fn sockaddr(addr: SocketAddr) -> Box<dyn SockaddrLike> {
    match addr {
        SocketAddr::V4(a) => Box::new(SockaddrIn::from(a)),
        SocketAddr::V6(a) => Box::new(SockaddrIn6::from(a)),
    }
}

/// One client attempt: from loopback to the inbound passthrough address on the probe port.
fn probe(from: IpAddr, to: SocketAddr) -> nix::Result<()> {
    let family = if to.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    bind(fd.as_raw_fd(), sockaddr(SocketAddr::new(from, 0)).as_ref())?;
    connect(fd.as_raw_fd(), sockaddr(to).as_ref())
}

/// Runs the check in the calling thread's network namespace.
pub fn run(s: &Settings, ipv6: bool) -> Result<(), CaptureError> {
    // Connecting to 127.0.0.6 (::6) from loopback is redirected to a proxy port.
    let (listen_ip, server_ip) = if ipv6 {
        (
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6)),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6)),
        )
    };
    let mut listeners = Vec::new();
    for port in [&s.proxy_port, &s.inbound_capture_port] {
        let Ok(port) = port.parse::<u16>() else {
            continue;
        };
        match TcpListener::bind(SocketAddr::new(listen_ip, port)) {
            Ok(l) => {
                l.set_nonblocking(true)
                    .map_err(|e| CaptureError::Validation(e.to_string()))?;
                tracing::info!("Listening on {}", SocketAddr::new(listen_ip, port));
                listeners.push(l);
            }
            Err(e) => tracing::warn!("Error on listening: {e}"),
        }
    }
    if listeners.is_empty() {
        return Err(CaptureError::Validation(format!(
            "no listener available on {listen_ip} ports {},{}",
            s.proxy_port, s.inbound_capture_port
        )));
    }

    let target = SocketAddr::new(server_ip, s.probe_port);
    let deadline = Instant::now() + s.probe_timeout;
    while Instant::now() < deadline {
        if let Err(e) = probe(listen_ip, target) {
            tracing::debug!("Error connecting to {target}: {e}");
        }
        // Look for the connection for up to a second before trying again.
        let round = Instant::now() + Duration::from_secs(1);
        while Instant::now() < round.min(deadline) {
            for l in &listeners {
                if let Ok((conn, _)) = l.accept()
                    && accepted(conn, s.probe_port)
                {
                    tracing::info!("validation passed");
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Err(CaptureError::Validation("validation timeout".into()))
}

/// Whether this accepted connection was originally for the probe port.
fn accepted(mut conn: TcpStream, probe_port: u16) -> bool {
    match original_destination(&conn) {
        Ok(orig) => {
            // Echo the original port, which helps when debugging by hand.
            let _ = conn.write_all(orig.port().to_string().as_bytes());
            orig.port() == probe_port
        }
        Err(e) => {
            tracing::debug!("Error getting original dst: {e}");
            false
        }
    }
}
