//! Volumes follow their sources while the pod runs, as with a kubelet: a ConfigMap update,
//! a new pod label and a renewed service account token show in the files a running
//! container reads, while env and `subPath` mounts keep what they had. Against `tandem up`
//! with the real kubectl (installed into `.venv` by `scripts/test.sh`). Needs root.

use std::process::Output;
use std::time::{Duration, Instant};

mod common;

use common::host::HostCluster as Cluster;

/// How long an update may take to show in the container. The agent writes on the watch
/// event, so it is about a second; the bound is generous for a loaded machine.
const UPDATE_BOUND: Duration = Duration::from_secs(20);

/// The last `tail` lines of the container's log.
fn log_lines(logs: impl Fn() -> Output, tail: usize) -> Vec<String> {
    let out = logs();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[lines.len().saturating_sub(tail)..].to_vec()
}

/// Waits until the newest log line satisfies `want`; returns it and how long it took.
fn wait_line(
    logs: impl Fn() -> Output,
    bound: Duration,
    what: &str,
    want: impl Fn(&str) -> bool,
) -> (String, Duration) {
    let start = Instant::now();
    loop {
        let last = log_lines(&logs, 1).pop().unwrap_or_default();
        if want(&last) {
            return (last, start.elapsed());
        }
        assert!(
            start.elapsed() < bound,
            "{what}: not within {bound:?}; last line: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `key=value` fields of a log line such as `cfg=a proj=b`.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn config_map_and_downward_volumes_follow_their_sources_while_the_pod_runs() {
    let Some(c) = Cluster::start() else { return };
    let mnt = c.dir.path().join("mnt");
    let mnt = mnt.display();
    c.apply_ok(&format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  greeting: hello-1
---
apiVersion: v1
kind: Pod
metadata:
  name: reader
  labels: {{app: reader}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: debian:12
    command: [sh, -c]
    args:
    - |
      while true; do
        cfg=$(cat {mnt}/cfg/greeting); proj=$(cat {mnt}/proj/greeting)
        sub=$(cat {mnt}/sub/greeting); extra=$(cat {mnt}/cfg/extra 2>/dev/null)
        labels=$(tr '\n' ',' < {mnt}/proj/labels)
        echo "cfg=$cfg proj=$proj sub=$sub env=$GREETING extra=$extra labels=$labels"
        sleep 0.2
      done
    env:
    - name: GREETING
      valueFrom: {{configMapKeyRef: {{name: settings, key: greeting}}}}
    volumeMounts:
    - {{name: cfg, mountPath: {mnt}/cfg}}
    - {{name: proj, mountPath: {mnt}/proj}}
    - {{name: cfg, mountPath: {mnt}/sub/greeting, subPath: greeting}}
  volumes:
  - name: cfg
    configMap: {{name: settings}}
  - name: proj
    projected:
      sources:
      - configMap:
          name: settings
          items: [{{key: greeting, path: greeting}}]
      - downwardAPI:
          items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}]
"#
    ));
    c.wait_for("reader", "{.status.phase}", "Running");
    let logs = || c.kubectl(&["logs", "reader", "--tail=1"]);
    let (first, _) = wait_line(logs, UPDATE_BOUND, "the first line", |l| {
        l.starts_with("cfg=")
    });
    assert_eq!(
        first,
        "cfg=hello-1 proj=hello-1 sub=hello-1 env=hello-1 extra= labels=app=\"reader\""
    );

    // A patched ConfigMap: both volumes show the new value; the subPath mount and the
    // env var keep the old one, as in Kubernetes.
    c.ok(&[
        "patch",
        "configmap",
        "settings",
        "--type=merge",
        "-p",
        r#"{"data":{"greeting":"hello-2"}}"#,
    ]);
    let (line, took) = wait_line(logs, UPDATE_BOUND, "the patched ConfigMap", |l| {
        field(l, "cfg") == Some("hello-2") && field(l, "proj") == Some("hello-2")
    });
    eprintln!("ConfigMap patch visible in the container after {took:?}");
    assert_eq!(field(&line, "sub"), Some("hello-1"), "{line}");
    assert_eq!(field(&line, "env"), Some("hello-1"), "{line}");
    // Never a mix of old and new within the volume once updated.
    std::thread::sleep(Duration::from_secs(1));
    for l in log_lines(|| c.kubectl(&["logs", "reader", "--tail=4"]), 4) {
        assert_eq!(field(&l, "cfg"), Some("hello-2"), "{l}");
        assert_eq!(field(&l, "sub"), Some("hello-1"), "{l}");
    }

    // `kubectl apply` of a new version, with a key more: the new file appears too.
    let manifest = c.dir.path().join("settings-v3.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n\
         data:\n  greeting: hello-3\n  extra: more\n",
    )
    .expect("write manifest");
    c.ok(&["apply", "-f", manifest.to_str().expect("path")]);
    let (line, took) = wait_line(logs, UPDATE_BOUND, "the applied ConfigMap", |l| {
        field(l, "cfg") == Some("hello-3") && field(l, "proj") == Some("hello-3")
    });
    eprintln!("ConfigMap apply visible in the container after {took:?}");
    assert_eq!(field(&line, "extra"), Some("more"), "{line}");

    // A new label shows in the projected downward API file.
    c.ok(&["label", "pod", "reader", "color=blue"]);
    let (line, took) = wait_line(logs, UPDATE_BOUND, "the new label", |l| {
        field(l, "labels").is_some_and(|v| v.contains("color=\"blue\""))
    });
    eprintln!("pod label visible in the container after {took:?}");
    assert_eq!(
        field(&line, "labels"),
        Some("app=\"reader\",color=\"blue\"")
    );
    assert_eq!(field(&line, "env"), Some("hello-1"), "{line}");
}

/// The claims of a JWT (base64url without padding).
fn claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has three parts");
    let mut bits = 0u32;
    let mut count = 0;
    let mut bytes = Vec::new();
    for c in payload.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("not base64url: {payload}"),
        };
        bits = (bits << 6) | u32::from(v);
        count += 6;
        if count >= 8 {
            count -= 8;
            bytes.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    serde_json::from_slice(&bytes).expect("JSON claims")
}

#[test]
fn projected_tokens_are_renewed_before_they_expire() {
    // The API's shortest token lives ten minutes, renewed after eight by default; the
    // agent's test knob renews at 0.5% of the lifetime instead: after three seconds.
    let Some(c) = Cluster::start_with_env(&[("TANDEM_TOKEN_RENEWAL_FRACTION", "0.005")]) else {
        return;
    };
    c.wait_output(
        &[
            "get",
            "serviceaccount",
            "default",
            "-o",
            "jsonpath={.metadata.name}",
        ],
        "default",
    );
    let mnt = c.dir.path().join("mnt");
    let manifest = c.dir.path().join("pod.yaml");
    std::fs::write(
        &manifest,
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: holder
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: debian:12
    command: [sh, -c, 'while true; do echo "tok=$(cat {mnt}/token/token)"; sleep 0.2; done']
    volumeMounts: [{{name: token, mountPath: {mnt}/token}}]
  volumes:
  - name: token
    projected:
      sources:
      - serviceAccountToken: {{audience: vault, expirationSeconds: 600, path: token}}
"#,
            mnt = mnt.display()
        ),
    )
    .expect("write manifest");
    c.ok(&["apply", "-f", manifest.to_str().expect("path")]);
    c.wait_output(
        &["get", "pod", "holder", "-o", "jsonpath={.status.phase}"],
        "Running",
    );
    let logs = || c.kubectl(&["logs", "holder", "--tail=1"]);
    let token = |line: &str| field(line, "tok").unwrap_or_default().to_owned();
    let (line, _) = wait_line(logs, UPDATE_BOUND, "the first token", |l| {
        token(l).split('.').count() == 3
    });
    let first = claims(&token(&line));
    assert_eq!(first["aud"], serde_json::json!(["vault"]));
    assert_eq!(
        first["exp"]
            .as_i64()
            .zip(first["iat"].as_i64())
            .map(|(e, i)| e - i),
        Some(600)
    );

    // Renewed after three seconds: a new token for the same pod, issued later.
    let mut previous = first;
    for round in 1..=2 {
        let (line, took) = wait_line(logs, UPDATE_BOUND, "a renewed token", |l| {
            let t = token(l);
            t.split('.').count() == 3 && claims(&t)["iat"] != previous["iat"]
        });
        eprintln!("token renewal {round} visible after {took:?}");
        let renewed = claims(&token(&line));
        assert!(
            renewed["iat"].as_i64() > previous["iat"].as_i64(),
            "{renewed} after {previous}"
        );
        assert_eq!(renewed["aud"], serde_json::json!(["vault"]));
        assert_eq!(
            renewed["kubernetes.io"]["pod"]["name"],
            serde_json::json!("holder")
        );
        previous = renewed;
    }
}
