//! `tandem-loadgen`: the client of `bench/proxy_bench.py`.
//!
//! Blocking keep-alive connections, one thread each, so the client adds no scheduler of its
//! own to what is measured:
//! - `--rate R`: open loop. Request `i` is due at `start + i/R`, spread round-robin over the
//!   connections; latency is measured from the moment the request is written (and, for
//!   coordinated omission, from the moment it was due: `corrected_*`).
//! - no `--rate`: closed loop, each connection sends its next request as soon as the
//!   previous response is in: maximum throughput.
//!
//! Prints one JSON object on stdout.

mod http;
mod stats;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "tandem-loadgen",
    about = "HTTP/1.1 load generator for the proxy benchmark"
)]
struct Args {
    /// Server address (`IP:PORT`).
    addr: SocketAddr,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Host header.
    #[arg(long, default_value = "origin")]
    host: String,
    /// Keep-alive connections.
    #[arg(long, short = 'c', default_value_t = 4)]
    connections: usize,
    /// Requests per second in total (open loop); without it, as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
    /// Measured duration in seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Unmeasured warm-up before it, in seconds.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
}

/// What one connection saw in the measured window.
#[derive(Default)]
struct Samples {
    service_ns: Vec<u64>,
    corrected_ns: Vec<u64>,
    errors: u64,
    non_2xx: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.connections == 0 || args.duration <= 0.0 || args.rate.is_some_and(|r| r <= 0.0) {
        eprintln!("error: --connections, --duration and --rate must be positive");
        return ExitCode::from(2);
    }
    // Sleeps end within a microsecond or so instead of the default 50 µs slack.
    let _ = nix::sys::prctl::set_timerslack(1_000);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tandem-loadgen\r\nAccept: */*\r\n\r\n",
        args.path, args.host
    )
    .into_bytes();
    let start = Instant::now() + Duration::from_millis(20);
    let warm_end = start + Duration::from_secs_f64(args.warmup);
    let end = warm_end + Duration::from_secs_f64(args.duration);
    let threads: Vec<_> = (0..args.connections)
        .map(|k| {
            let request = request.clone();
            let (addr, conns, rate) = (args.addr, args.connections, args.rate);
            std::thread::spawn(move || {
                run_connection(addr, &request, k, conns, rate, start, warm_end, end)
            })
        })
        .collect();
    let mut all = Samples::default();
    for t in threads {
        match t.join() {
            Ok(s) => {
                all.service_ns.extend(s.service_ns);
                all.corrected_ns.extend(s.corrected_ns);
                all.errors += s.errors;
                all.non_2xx += s.non_2xx;
            }
            Err(_) => all.errors += 1,
        }
    }
    all.service_ns.sort_unstable();
    all.corrected_ns.sort_unstable();
    let us = |v: u64| v as f64 / 1000.0;
    let p = |p: f64| us(stats::percentile(&all.service_ns, p));
    let c = |p: f64| us(stats::percentile(&all.corrected_ns, p));
    let n = all.service_ns.len();
    println!(
        "{{\"mode\":\"{}\",\"connections\":{},\"requests\":{},\"errors\":{},\"non_2xx\":{},\
         \"duration_s\":{},\"rps\":{:.1},\"p50_us\":{:.1},\"p90_us\":{:.1},\"p99_us\":{:.1},\
         \"p999_us\":{:.1},\"max_us\":{:.1},\"corrected_p50_us\":{:.1},\"corrected_p90_us\":{:.1},\
         \"corrected_p99_us\":{:.1}}}",
        if args.rate.is_some() { "rate" } else { "max" },
        args.connections,
        n,
        all.errors,
        all.non_2xx,
        args.duration,
        n as f64 / args.duration,
        p(0.5),
        p(0.9),
        p(0.99),
        p(0.999),
        p(1.0),
        c(0.5),
        c(0.9),
        c(0.99),
    );
    if n == 0 || all.errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[allow(clippy::too_many_arguments)]
fn run_connection(
    addr: SocketAddr,
    request: &[u8],
    k: usize,
    conns: usize,
    rate: Option<f64>,
    start: Instant,
    warm_end: Instant,
    end: Instant,
) -> Samples {
    let mut samples = Samples::default();
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut i = k as u64;
    loop {
        let due = match rate {
            Some(r) => start + Duration::from_secs_f64(i as f64 / r),
            None => Instant::now().max(start),
        };
        if due >= end {
            break;
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        i += conns as u64;
        let stream = match conn.take() {
            Some(s) => s,
            None => match TcpStream::connect(addr) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    s
                }
                Err(_) => {
                    samples.errors += u64::from(due >= warm_end);
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let sent = Instant::now();
        let outcome = exchange(&stream, request, &mut buf);
        let done = Instant::now();
        let measured = due >= warm_end;
        match outcome {
            Ok(resp) => {
                if measured {
                    samples.service_ns.push((done - sent).as_nanos() as u64);
                    samples.corrected_ns.push((done - due).as_nanos() as u64);
                    samples.non_2xx += u64::from(!(200..300).contains(&resp.status));
                }
                if !resp.close {
                    conn = Some(stream);
                }
            }
            Err(_) => samples.errors += u64::from(measured),
        }
    }
    samples
}

/// Writes the request and reads exactly one response.
fn exchange(
    mut stream: &TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<http::Response> {
    stream.write_all(request)?;
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        match http::parse(buf) {
            Ok(Some(resp)) if resp.len == buf.len() => return Ok(resp),
            Ok(Some(_)) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "bytes after the response",
                ));
            }
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
    }
}
