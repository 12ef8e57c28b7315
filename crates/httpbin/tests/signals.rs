//! `run` itself: it exits 0 on SIGTERM and on SIGINT after finishing in-flight requests.
//! This file holds one test because the signals go to the whole test process.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use common::{http1, request, send};
use http_body_util::Full;
use httpbin::HttpbinArgs;
use hyper::{Method, StatusCode};

async fn free_port() -> u16 {
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    probe.local_addr().expect("local addr").port()
}

async fn wait_until_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "httpbin never listened on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn signal_self(signal: &str) {
    let status = tokio::process::Command::new("kill")
        .args([signal, &std::process::id().to_string()])
        .status()
        .await
        .expect("run kill");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exits_zero_on_sigterm_and_sigint_after_draining() {
    for signal in ["-TERM", "-INT"] {
        let port = free_port().await;
        let listen = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let server = tokio::spawn(httpbin::run(HttpbinArgs { port, listen }));
        let addr = SocketAddr::new(listen, port);
        wait_until_listening(addr).await;

        let in_flight = tokio::spawn(async move {
            let req = request(Method::GET, &format!("http://{addr}/delay/1"))
                .body(Full::default())
                .expect("request");
            send(&http1(), req).await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        signal_self(signal).await;

        let reply = in_flight.await.expect("request task");
        assert_eq!(reply.status, StatusCode::OK, "{signal}");
        assert_eq!(reply.json()["url"], format!("http://{addr}/delay/1"));
        let code = tokio::time::timeout(Duration::from_secs(3), server)
            .await
            .expect("run returns soon after the signal")
            .expect("server task")
            .expect("run succeeds");
        assert_eq!(code, ExitCode::SUCCESS, "{signal}");
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}

#[test]
fn args_default_to_port_8080_on_all_interfaces() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: HttpbinArgs,
    }
    let defaults = Cli::try_parse_from(["httpbin"]).expect("parse").args;
    assert_eq!(defaults.port, 8080);
    assert_eq!(defaults.listen, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let set = Cli::try_parse_from(["httpbin", "--port", "9000", "--listen", "::1"])
        .expect("parse")
        .args;
    assert_eq!(set.port, 9000);
    assert_eq!(set.listen.to_string(), "::1");
    assert!(Cli::try_parse_from(["httpbin", "--port", "http"]).is_err());
}
