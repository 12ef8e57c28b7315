//! Root tests: run the capture in private network namespaces and check the rules the
//! kernel holds and where connections end up. They need root, `iptables` (nft or legacy),
//! iproute2 and python3 (the unprivileged clients); without them they are skipped, except
//! under `CI=true`, where they fail. `--run-validation` is tested through the binary, in
//! the tandem package's `tests/capture.rs`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use capture::CaptureArgs;
use clap::Parser;

type Job = Box<dyn FnOnce() + Send>;

/// A thread in its own network namespace. Closures sent to it run there, and processes
/// they spawn inherit the namespace.
struct Netns {
    tx: Option<mpsc::Sender<Job>>,
    handle: Option<JoinHandle<()>>,
    tid: i32,
}

impl Netns {
    fn new() -> Netns {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let handle = std::thread::spawn(move || {
            let result = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map(|()| nix::unistd::gettid().as_raw());
            let _ = ready_tx.send(result);
            for job in rx {
                job();
            }
        });
        let tid = ready_rx
            .recv()
            .expect("namespace thread started")
            .expect("unshare(CLONE_NEWNET)");
        let ns = Netns {
            tx: Some(tx),
            handle: Some(handle),
            tid,
        };
        ns.sh("ip link set lo up");
        ns
    }

    fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.tx
            .as_ref()
            .expect("namespace thread alive")
            .send(job)
            .expect("namespace thread alive");
        rx.recv().expect("job finished")
    }

    /// Runs a command line (split on spaces) in the namespace and returns its stdout.
    fn sh(&self, line: &str) -> String {
        let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let out = self.run(move || Command::new(&words[0]).args(&words[1..]).output());
        let out = out.unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `capture::run` with these flags, in the namespace.
    fn capture(&self, args: &[&str]) -> anyhow::Result<std::process::ExitCode> {
        let args = parse(args);
        self.run(move || capture::run(args))
    }

    /// `iptables-save -t TABLE` without the comment lines that carry timestamps.
    fn save(&self, table: &str) -> String {
        self.sh(&format!("iptables-save -t {table}"))
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: CaptureArgs,
}

fn parse(args: &[&str]) -> CaptureArgs {
    let argv = std::iter::once("istio-iptables").chain(args.iter().copied());
    Cli::try_parse_from(argv).expect("flags parse").args
}

fn on_path(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok()
}

/// Root, iptables and iproute2 present. Skips (returns false) unless CI=true, where a
/// missing prerequisite fails the test.
fn prerequisites() -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root".to_string());
    }
    for tool in ["iptables", "iptables-save", "iptables-restore", "ip"] {
        if !on_path(tool) {
            missing.push(tool.to_string());
        }
    }
    // The unprivileged clients are python3 processes: it must run as a plain user too
    // (an interpreter under root's home would not).
    if missing.is_empty()
        && !python_as(1000, 1000, "pass", &[])
            .status()
            .is_ok_and(|s| s.success())
    {
        missing.push("python3 runnable by uid 1000".to_string());
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("missing prerequisites: {}", missing.join(", "));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    false
}

/// The args Istio's injector gives istio-init.
const INJECTED: &[&str] = &[
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
    "--log_output_level=default:info",
];

fn injected_plus<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    INJECTED.iter().chain(extra).copied().collect()
}

/// mesh.md §2.2, verbatim.
const SPEC_2_2: &str = "* nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT";

/// Applies iptables-restore-style lines one `iptables` command at a time, as a reference
/// to compare the capture's result with.
fn apply_by_hand(ns: &Netns, text: &str) {
    let mut table = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim().to_string();
        } else if line.starts_with("-N ") || line.starts_with("-A ") {
            ns.sh(&format!("iptables -t {table} {line}"));
        }
    }
}

fn rule_count(save: &str) -> usize {
    save.lines().filter(|l| l.starts_with("-A ")).count()
}

#[test]
fn injected_args_write_exactly_the_spec_rules_once() {
    if !prerequisites() {
        return;
    }
    let pod = Netns::new();
    pod.capture(INJECTED).expect("capture");
    let got = pod.save("nat");

    let reference = Netns::new();
    apply_by_hand(&reference, SPEC_2_2);
    assert_eq!(got, reference.save("nat"));
    assert_eq!(rule_count(&got), 18);
    assert_eq!(got.lines().filter(|l| l.starts_with(":ISTIO_")).count(), 4);
    assert_eq!(rule_count(&pod.save("mangle")), 0);
    assert_eq!(rule_count(&pod.save("raw")), 0);

    // A second run (an init container restart) finds the rules in place and adds nothing.
    pod.capture(INJECTED).expect("second capture");
    assert_eq!(pod.save("nat"), got);
}

#[test]
fn other_rules_survive_and_changed_flags_need_reconcile() {
    if !prerequisites() {
        return;
    }
    let pod = Netns::new();
    // Someone else's rule: --noflush must keep it.
    pod.sh("iptables -t nat -A POSTROUTING -o lo -j ACCEPT");
    pod.capture(INJECTED).expect("capture");
    let before = pod.save("nat");
    assert!(before.contains("-A POSTROUTING -o lo -j ACCEPT\n"));

    // Different flags over existing rules: refused, nothing changed.
    let changed = injected_plus(&["-x", "10.0.0.0/8"]);
    let err = pod
        .capture(&changed)
        .expect_err("conflict without --reconcile");
    assert!(err.to_string().contains("--reconcile"), "{err}");
    assert_eq!(pod.save("nat"), before);

    // With --reconcile the old rules are replaced by exactly the new ones.
    pod.capture(&injected_plus(&["-x", "10.0.0.0/8", "--reconcile"]))
        .expect("reconcile");
    let fresh = Netns::new();
    fresh.sh("iptables -t nat -A POSTROUTING -o lo -j ACCEPT");
    fresh.capture(&changed).expect("fresh capture");
    assert_eq!(pod.save("nat"), fresh.save("nat"));
    // The reconcile guardrails are gone again.
    assert_eq!(rule_count(&pod.save("filter")), 0);

    // --cleanup-only removes every Istio chain and jump and nothing else.
    pod.capture(&["--cleanup-only"]).expect("cleanup");
    let nat = pod.save("nat");
    assert!(!nat.contains("ISTIO"), "{nat}");
    assert!(nat.contains("-A POSTROUTING -o lo -j ACCEPT\n"));
}

#[test]
fn dry_run_changes_nothing() {
    if !prerequisites() {
        return;
    }
    let pod = Netns::new();
    pod.capture(&injected_plus(&["--dry-run"]))
        .expect("dry run");
    assert!(!pod.save("nat").contains("ISTIO"));
}

#[test]
fn tproxy_mode_writes_mangle_rules_and_policy_routing_once() {
    if !prerequisites() {
        return;
    }
    let pod = Netns::new();
    let args = [
        "-p", "15001", "-z", "15006", "-u", "1337", "-m", "TPROXY", "-i", "*", "-b", "*",
    ];
    pod.capture(&args).expect("capture");
    pod.capture(&args).expect("second capture");
    let mangle = pod.save("mangle");
    assert!(mangle.contains(":ISTIO_TPROXY - [0:0]"), "{mangle}");
    assert!(mangle.contains(":ISTIO_DIVERT - [0:0]"), "{mangle}");
    assert_eq!(
        mangle
            .lines()
            .filter(|l| l.starts_with("-A PREROUTING -p tcp -j ISTIO_INBOUND"))
            .count(),
        1
    );
    let rules = pod.sh("ip -4 rule show");
    assert_eq!(
        rules.matches("fwmark 0x539 lookup 133").count(),
        1,
        "{rules}"
    );
    let routes = pod.sh("ip -4 route show table 133");
    assert!(routes.contains("local default dev lo"), "{routes}");
}

// --- End-to-end: where connections go -------------------------------------------------

const POD_IP: &str = "10.244.0.5";

/// A pod namespace and a "remote" namespace joined by a veth pair. The remote holds
/// 10.96.0.10 and 192.168.1.1, standing in for a Service IP and some outside host.
fn pod_and_remote() -> (Netns, Netns) {
    let pod = Netns::new();
    let remote = Netns::new();
    pod.sh("ip link add veth-pod type veth peer name veth-remote");
    pod.sh(&format!("ip link set veth-remote netns {}", remote.tid));
    pod.sh(&format!("ip addr add {POD_IP}/24 dev veth-pod"));
    pod.sh("ip link set veth-pod up");
    pod.sh("ip route add default via 10.244.0.1");
    remote.sh("ip addr add 10.244.0.1/24 dev veth-remote");
    remote.sh("ip link set veth-remote up");
    remote.sh("ip addr add 10.96.0.10/32 dev lo");
    remote.sh("ip addr add 192.168.1.1/32 dev lo");
    (pod, remote)
}

/// Listens on `port` in the namespace and answers each connection with
/// `NAME local=ADDR orig=ADDR`, `orig` being the SO_ORIGINAL_DST of redirected ones.
fn serve(ns: &Netns, port: u16, name: &'static str) {
    let listener = ns
        .run(move || TcpListener::bind(("0.0.0.0", port)))
        .unwrap_or_else(|e| panic!("listen on {port}: {e}"));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let local = conn.local_addr().map(|a| a.to_string()).unwrap_or_default();
            let orig = capture::original_destination(&conn)
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "-".into());
            let _ = writeln!(conn, "{name} local={local} orig={orig}");
        }
    });
}

/// The client `connect_as` runs: connects to HOST PORT (from SOURCE when not empty) and
/// prints `REPLY <line>`. It gives up after 5 s so a lost SYN, which would otherwise be
/// retried for minutes, cannot hang the test.
const CONNECT_PY: &str = r#"
import os, signal, socket, sys

def give_up(*_):
    sys.stderr.write("client timed out\n")
    os._exit(3)

signal.signal(signal.SIGALRM, give_up)
signal.alarm(5)
host, port, source = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
if source:
    s.bind((source, 0))
s.connect((host, port))
reply = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    reply += chunk
print("REPLY " + reply.decode().strip())
"#;

/// `python3` running `script` with `args` as `uid`/`gid` (supplementary groups dropped).
fn python_as(uid: u32, gid: u32, script: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("python3");
    // -I: no user site or PYTHON* variables of the caller; "/" is readable by anyone.
    cmd.arg("-I")
        .arg("-c")
        .arg(script)
        .args(args)
        .current_dir("/")
        .uid(uid)
        .gid(gid);
    cmd
}

/// Connects from the pod as `uid`/`gid` (a child process) and returns the reply line.
fn connect_as(pod: &Netns, uid: u32, gid: u32, target: &str, source: Option<&str>) -> String {
    let addr: std::net::SocketAddrV4 = target.parse().expect("IPv4 socket address");
    let source = source.unwrap_or_default().to_string();
    let out: std::io::Result<Output> = pod.run(move || {
        let host = addr.ip().to_string();
        let port = addr.port().to_string();
        python_as(uid, gid, CONNECT_PY, &[&host, &port, &source]).output()
    });
    let out = out.expect("spawn python3 client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("REPLY "))
        .map(str::to_string)
        .unwrap_or_else(|| {
            panic!(
                "no reply from {target} as {uid}:{gid} ({}); stdout: {stdout}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// Connects from inside a namespace as the test's own (root) user.
fn connect_from(ns: &Netns, target: &str) -> String {
    let addr: SocketAddr = target.parse().expect("socket address");
    ns.run(move || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok(reply.trim().to_string())
    })
    .unwrap_or_else(|e| panic!("connect to {target}: {e}"))
}

fn name_of(reply: &str) -> &str {
    reply.split(' ').next().unwrap_or_default()
}

fn orig_of(reply: &str) -> &str {
    reply
        .split(' ')
        .find_map(|w| w.strip_prefix("orig="))
        .unwrap_or_default()
}

/// Listeners of a sidecar pod and of the remote side.
fn listeners(pod: &Netns, remote: &Netns) {
    for (port, name) in [
        (15001, "outbound"),
        (15006, "inbound"),
        (15008, "tunnel"),
        (15020, "agent"),
        (15021, "health"),
        (15090, "prom"),
        (8080, "app"),
        (9090, "app9090"),
    ] {
        serve(pod, port, name);
    }
    serve(remote, 8000, "remote8000");
    serve(remote, 80, "remote80");
}

#[test]
fn outbound_and_loopback_traffic_end_to_end() {
    if !prerequisites() {
        return;
    }
    let (pod, remote) = pod_and_remote();
    listeners(&pod, &remote);
    pod.capture(INJECTED).expect("capture");

    // Test case 13: the app's connection lands on 15001 with the original destination.
    let r = connect_as(&pod, 1000, 1000, "10.96.0.10:8000", None);
    assert_eq!(name_of(&r), "outbound", "{r}");
    assert_eq!(orig_of(&r), "10.96.0.10:8000", "{r}");

    // Test case 14: uid 1337 or gid 1337 goes straight to the destination.
    let r = connect_as(&pod, 1337, 1337, "10.96.0.10:8000", None);
    assert_eq!(name_of(&r), "remote8000", "{r}");
    let r = connect_as(&pod, 1000, 1337, "10.96.0.10:8000", None);
    assert_eq!(name_of(&r), "remote8000", "{r}");

    // Test case 15: the app to localhost or to its own pod IP is not redirected.
    let r = connect_as(&pod, 1000, 1000, "127.0.0.1:8080", None);
    assert_eq!(name_of(&r), "app", "{r}");
    let r = connect_as(&pod, 1000, 1000, &format!("{POD_IP}:8080"), None);
    assert_eq!(name_of(&r), "app", "{r}");

    // Test case 16: the proxy to its own pod IP goes to inbound, except the tunnel port.
    let r = connect_as(&pod, 1337, 1337, &format!("{POD_IP}:8080"), None);
    assert_eq!(name_of(&r), "inbound", "{r}");
    assert_eq!(orig_of(&r), format!("{POD_IP}:8080"), "{r}");
    let r = connect_as(&pod, 1337, 1337, &format!("{POD_IP}:15008"), None);
    assert_eq!(name_of(&r), "tunnel", "{r}");

    // Test case 19: the inbound proxy calls the app from 127.0.0.6; that is left alone.
    let r = connect_as(
        &pod,
        1337,
        1337,
        &format!("{POD_IP}:8080"),
        Some("127.0.0.6"),
    );
    assert_eq!(name_of(&r), "app", "{r}");

    // Test case 18: UDP (here DNS to the Service IP) is not redirected.
    let dns = remote
        .run(|| UdpSocket::bind("10.96.0.10:53"))
        .expect("udp bind");
    dns.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    pod.run(|| {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.send_to(b"query", "10.96.0.10:53")
    })
    .expect("udp send");
    let mut buf = [0u8; 16];
    let (n, from) = dns
        .recv_from(&mut buf)
        .expect("datagram reaches 10.96.0.10:53");
    assert_eq!(&buf[..n], b"query");
    assert_eq!(from.ip().to_string(), POD_IP);
}

#[test]
fn inbound_traffic_end_to_end() {
    if !prerequisites() {
        return;
    }
    let (pod, remote) = pod_and_remote();
    listeners(&pod, &remote);
    pod.capture(INJECTED).expect("capture");

    // Test case 17.
    let r = connect_from(&remote, &format!("{POD_IP}:8080"));
    assert_eq!(name_of(&r), "inbound", "{r}");
    assert_eq!(orig_of(&r), format!("{POD_IP}:8080"), "{r}");
    for (port, name) in [
        (15021, "health"),
        (15020, "agent"),
        (15090, "prom"),
        (15008, "tunnel"),
    ] {
        let r = connect_from(&remote, &format!("{POD_IP}:{port}"));
        assert_eq!(name_of(&r), name, "{r}");
    }
}

#[test]
fn excluded_cidr_and_inbound_port_list_end_to_end() {
    if !prerequisites() {
        return;
    }
    let (pod, remote) = pod_and_remote();
    listeners(&pod, &remote);
    // Test case 20.
    pod.capture(&injected_plus(&["-x", "10.0.0.0/8", "-b", "8080"]))
        .expect("capture");

    let r = connect_as(&pod, 1000, 1000, "10.96.0.10:8000", None);
    assert_eq!(name_of(&r), "remote8000", "{r}");
    let r = connect_as(&pod, 1000, 1000, "192.168.1.1:80", None);
    assert_eq!(name_of(&r), "outbound", "{r}");
    assert_eq!(orig_of(&r), "192.168.1.1:80", "{r}");

    let r = connect_from(&remote, &format!("{POD_IP}:9090"));
    assert_eq!(name_of(&r), "app9090", "{r}");
    let r = connect_from(&remote, &format!("{POD_IP}:8080"));
    assert_eq!(name_of(&r), "inbound", "{r}");
}

#[test]
fn network_namespace_flag_applies_in_that_namespace_only() {
    if !prerequisites() {
        return;
    }
    // Both are private namespaces, so a mistake cannot touch the host's rules.
    let caller = Netns::new();
    let target = Netns::new();
    let path = format!("/proc/self/task/{}/ns/net", target.tid);
    let args = parse(&injected_plus(&["--network-namespace", &path]));
    caller
        .run(move || capture::run(args))
        .expect("capture into the other namespace");
    assert!(target.save("nat").contains(":ISTIO_OUTPUT - [0:0]"));
    assert!(!caller.save("nat").contains("ISTIO"));
}
