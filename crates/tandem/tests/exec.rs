//! `kubectl exec` against `tandem up`, with the real kubectl (installed into `.venv` by
//! `scripts/test.sh`): streams, exit codes, the container's namespaces, environment,
//! volumes, user and working directory, terminals, Kubernetes' errors, and the docs'
//! `kubectl exec deploy/sleep -c sleep -- curl httpbin:8000/headers` with pod networking.
//! Needs root.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::host::HostCluster as Cluster;
use common::{ci, have, kubectl_binary};

/// Two containers with different environments, users and mounts: `main` (the first, so
/// kubectl's default) has a configMap volume at /data and works in /tmp; `side` runs as
/// uid 1000 and has no volume.
const TWO_CONTAINERS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data:
  greeting: hello-from-a-volume
---
apiVersion: v1
kind: Pod
metadata:
  name: two
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: debian:12
    command: ["sleep", "infinity"]
    workingDir: /tmp
    env:
    - name: WHO
      value: main-container
    volumeMounts:
    - name: cfg
      mountPath: /data
  - name: side
    image: debian:12
    command: ["sleep", "infinity"]
    env:
    - name: WHO
      value: side-container
    securityContext:
      runAsUser: 1000
      runAsGroup: 1000
  volumes:
  - name: cfg
    configMap:
      name: cfg
"#;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "{:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// `kubectl exec ARGS` with `input` on its stdin.
fn exec_with_input(c: &Cluster, args: &[&str], input: &[u8]) -> Output {
    let mut child = c
        .command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubectl");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("kubectl");
    writer.join().expect("writer");
    out
}

/// Runs `kubectl ARGS` on a terminal (util-linux `script`), so that `-t` gets one;
/// `before` runs first on that terminal (e.g. `stty cols 100 rows 30`).
fn on_terminal(c: &Cluster, before: &str, args: &str) -> Option<Output> {
    if !have("script") {
        assert!(!ci(), "util-linux `script` is missing");
        eprintln!("skipping the terminal checks: no `script`");
        return None;
    }
    let kubectl = kubectl_binary().expect("kubectl");
    let line = format!("{before} {} {args}", kubectl.display());
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("KUBECONFIG", c.kubeconfig())
        .env("KUBECACHEDIR", c.dir.path().join("cache"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script");
    // Held open until the end: at end of input `script` types an end-of-file character
    // into the terminal.
    let stdin = child.stdin.take();
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let status = child.wait().expect("script");
    drop(stdin);
    let mut stderr = Vec::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_end(&mut stderr);
    }
    Some(Output {
        status,
        stdout: reader.join().expect("reader"),
        stderr,
    })
}

/// Pids of processes whose command line is exactly `argv`.
fn processes(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let mut cmdline = Vec::new();
            std::fs::File::open(format!("/proc/{pid}/cmdline"))
                .and_then(|mut f| f.read_to_end(&mut cmdline))
                .is_ok()
                && cmdline == want
        })
        .collect()
}

fn wait_until(what: &str, check: impl Fn() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn exec_runs_commands_inside_the_container() {
    let Some(c) = Cluster::start() else { return };
    c.apply_ok(TWO_CONTAINERS);
    c.ok(&["wait", "--for=condition=Ready", "pod/two", "--timeout=40s"]);

    // Output, errors and the exit code come back separately.
    let out = c.kubectl(&[
        "exec",
        "two",
        "-c",
        "main",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(
        text(&out.stderr),
        "err\ncommand terminated with exit code 3\n"
    );
    assert_eq!(c.ok(&["exec", "two", "-c", "main", "--", "true"]), "");

    // Without -c, kubectl picks the first container and says so.
    let out = c.kubectl(&["exec", "two", "--", "sh", "-c", "echo $WHO"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(text(&out.stdout), "main-container\n");
    assert!(
        text(&out.stderr).contains("Defaulted container \"main\" out of: main, side"),
        "{}",
        describe(&out)
    );

    // Stdin is streamed, and its end reaches the command.
    let out = exec_with_input(
        &c,
        &["exec", "-i", "two", "-c", "main", "--", "cat"],
        b"hi\n",
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(text(&out.stdout), "hi\n");
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = exec_with_input(
        &c,
        &["exec", "-i", "two", "-c", "main", "--", "sh", "-c", "wc -c"],
        &big,
    );
    assert_eq!(text(&out.stdout).trim(), "2000000", "{}", describe(&out));
    let out = c.kubectl(&[
        "exec",
        "two",
        "-c",
        "main",
        "--",
        "head",
        "-c",
        "3000000",
        "/dev/zero",
    ]);
    assert_eq!(out.stdout.len(), 3_000_000, "{}", text(&out.stderr));

    // Each container's environment, user, working directory and volumes.
    let probe = "echo $WHO $(id -u) $(pwd) $(hostname) $(cat /data/greeting || echo no-volume)";
    let out = c.ok(&["exec", "two", "-c", "main", "--", "sh", "-c", probe]);
    if out != "main-container 0 /tmp two hello-from-a-volume\n" {
        // What the container sees in the volume, for the failure message.
        let seen = c.kubectl(&["exec", "two", "-c", "main", "--", "ls", "-la", "/data/"]);
        panic!("main saw {out:?}; /data holds:\n{}", describe(&seen));
    }
    assert_eq!(
        c.ok(&["exec", "two", "-c", "side", "--", "sh", "-c", probe]),
        "side-container 1000 / two no-volume\n"
    );

    // The pod's network namespace (not the host's), each container's own mount namespace.
    let ns = |container: &str| {
        c.ok(&[
            "exec",
            "two",
            "-c",
            container,
            "--",
            "sh",
            "-c",
            "readlink /proc/self/ns/net /proc/self/ns/mnt /proc/self/ns/uts",
        ])
    };
    let (main, side) = (ns("main"), ns("side"));
    let main: Vec<&str> = main.lines().collect();
    let side: Vec<&str> = side.lines().collect();
    let host_net = std::fs::read_link("/proc/self/ns/net").expect("host netns");
    let host_mnt = std::fs::read_link("/proc/self/ns/mnt").expect("host mntns");
    assert_eq!(main[0], side[0], "one network namespace per pod");
    assert_ne!(
        main[0],
        host_net.to_string_lossy(),
        "not the host's network"
    );
    assert_eq!(main[2], side[2], "one UTS namespace per pod");
    assert_ne!(
        main[1], side[1],
        "each container has its own mount namespace"
    );
    assert_ne!(main[1], host_mnt.to_string_lossy());

    // A terminal: the command gets a pty as its controlling terminal, with the size of
    // kubectl's terminal, and the exit code still comes back.
    if let Some(out) = on_terminal(
        &c,
        "stty cols 100 rows 30;",
        "exec -it two -c main -- sh -c 'tty; stty size; ps -o tty= -p $$; exit 7'",
    ) {
        let shown = text(&out.stdout);
        assert_eq!(out.status.code(), Some(7), "{}", describe(&out));
        let lines: Vec<&str> = shown.lines().map(str::trim).collect();
        assert!(lines[0].starts_with("/dev/pts/"), "{shown:?}");
        assert_eq!(lines[1], "30 100", "{shown:?}");
        assert_eq!(
            lines[2],
            lines[0].trim_start_matches("/dev/"),
            "the controlling terminal: {shown:?}"
        );
    }
}

#[test]
fn exec_errors_read_like_kubernetes() {
    let Some(c) = Cluster::start() else { return };
    c.apply_ok(TWO_CONTAINERS);
    c.apply_ok(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: starting
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: init
    image: debian:12
    command: ["sleep", "infinity"]
  containers:
  - name: app
    image: debian:12
    command: ["sleep", "infinity"]
"#,
    );
    c.ok(&["wait", "--for=condition=Ready", "pod/two", "--timeout=40s"]);
    wait_until("the init container runs", || {
        !c.ok(&[
            "get",
            "pod",
            "starting",
            "-o",
            "jsonpath={.status.initContainerStatuses[0].state.running.startedAt}",
        ])
        .trim()
        .is_empty()
    });

    // A container that does not run yet: the kubelet's answer, through the API server.
    let out = c.kubectl(&["exec", "starting", "-c", "app", "--", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(
        text(&out.stderr),
        "error: Internal error occurred: unable to upgrade connection: container not found (\"app\")\n"
    );
    // The running init container takes commands.
    assert_eq!(
        c.ok(&["exec", "starting", "-c", "init", "--", "echo", "ok"]),
        "ok\n"
    );

    // A command that is not there.
    let out = c.kubectl(&["exec", "two", "-c", "main", "--", "no-such-command"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr)
            .starts_with("error: Internal error occurred: error executing command in container: ")
            && text(&out.stderr)
                .contains("exec: \"no-such-command\": executable file not found in $PATH"),
        "{}",
        describe(&out)
    );

    // A container the pod does not have: kubectl checks it itself, and so does the API.
    let out = c.kubectl(&["exec", "two", "-c", "nope", "--", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("container nope is not valid for pod two"),
        "{}",
        describe(&out)
    );
    let raw = |query: &str| {
        c.kubectl(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/default/pods/two/exec?{query}"),
        ])
    };
    let out = raw("command=true&stdout=true&container=nope");
    assert_eq!(
        text(&out.stderr).trim(),
        "Error from server (BadRequest): container nope is not valid for pod two",
        "{}",
        describe(&out)
    );
    // Without -c on a pod of two containers, the API asks for one.
    let out = raw("command=true&stdout=true");
    assert_eq!(
        text(&out.stderr).trim(),
        "Error from server (BadRequest): a container name must be specified for pod two, choose one of: [main side]",
        "{}",
        describe(&out)
    );
    // A plain GET is not a session.
    let out = raw("command=true&stdout=true&container=main");
    assert_eq!(
        text(&out.stderr).trim(),
        "Error from server (BadRequest): Upgrade request required",
        "{}",
        describe(&out)
    );

    // A client that goes away takes its command with it.
    let argv = ["sleep", "4242.5"];
    let mut kubectl = c
        .command(&["exec", "two", "-c", "main", "--", argv[0], argv[1]])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl");
    wait_until("the command starts", || !processes(&argv).is_empty());
    let _ = kubectl.kill();
    let _ = kubectl.wait();
    wait_until("the command is killed with the session", || {
        processes(&argv).is_empty()
    });
}

#[test]
fn the_docs_exec_into_the_sleep_sample_reaches_httpbin_by_name() {
    // Istio's and Kubernetes' docs: `kubectl exec deploy/sleep -c sleep -- curl ...`, from
    // inside the pod's network namespace (cluster DNS, ClusterIPs).
    let Some(c) = common::Cluster::start() else {
        return;
    };
    c.ok(&[
        "apply",
        "-f",
        &common::example("httpbin.yaml"),
        "-f",
        &common::example("sleep.yaml"),
    ]);
    for deployment in ["deploy/httpbin", "deploy/sleep"] {
        c.ok(&["rollout", "status", deployment, "--timeout=60s"]);
    }
    let out = c.wait_for(
        &[
            "exec",
            "deploy/sleep",
            "-c",
            "sleep",
            "--",
            "curl",
            "-sS",
            "-m",
            "5",
            "httpbin:8000/headers",
        ],
        "curl from the sleep pod",
        |out| out.contains("\"headers\""),
    );
    assert!(out.contains("httpbin:8000"), "{out}");
    let pod_ip = &c.pod_ips("app=sleep")[0].1;
    // The pod's own address: the command is not in the host's network namespace.
    let seen = c.ok(&[
        "exec",
        "deploy/sleep",
        "--",
        "curl",
        "-sS",
        "-m",
        "5",
        "httpbin:8000/ip",
    ]);
    assert!(seen.contains(pod_ip.as_str()), "not from {pod_ip}: {seen}");
}
