//! Lifecycle hooks (`postStart`, `preStop`) as the kubelet runs them
//! (`pkg/kubelet/lifecycle/handlers.go`).
//!
//! [`HookError`]'s text is the kubelet's error; [`failure_message`] wraps it into the
//! message of the `FailedPostStartHook` / `FailedPreStopHook` events.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerPort, LifecycleHandler, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::time::Instant;

use crate::access::ContainerAccess;
use crate::probe::go_quote;
use crate::probe::http::{self, Request};
use crate::probe::tls::HTTP_RESPONSE_TO_HTTPS;

/// Why a hook failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The command ran and exited non-zero (`output`: what it printed).
    #[error("command '{command}' exited with {code}: {output}")]
    ExitCode {
        command: String,
        code: i32,
        output: String,
    },
    /// The command was killed at the timeout.
    #[error("command {} timed out", go_quote(.command))]
    ExecTimeout { command: String },
    /// The command could not be run.
    #[error("{0}")]
    Exec(String),
    /// The request could not be made or got no response (Go's client error text).
    /// Any HTTP status counts as success, as in the kubelet.
    #[error("{message}")]
    Http { message: String, timed_out: bool },
    /// The sleep outlasted the time the hook was given.
    #[error("container terminated before sleep hook finished")]
    SleepInterrupted,
    /// No supported handler (`tcpSocket` is accepted by the API but fails at runtime).
    #[error("invalid handler: {0}")]
    InvalidHandler(String),
}

impl HookError {
    /// The hook ran out of time. The kubelet records no event for a preStop hook that
    /// outlives its grace period; it just goes on stopping the container.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            HookError::ExecTimeout { .. }
                | HookError::Http {
                    timed_out: true,
                    ..
                }
                | HookError::SleepInterrupted
        )
    }
}

/// Extra time granted to the runtime to kill a timed-out command and report back.
const EXEC_KILL_SLACK: Duration = Duration::from_millis(500);

/// Runs a lifecycle handler in (or against) a container, giving it at most `timeout`.
/// `ports` are the container's declared ports, used to resolve named ports.
pub async fn run_hook(
    handler: &LifecycleHandler,
    access: &dyn ContainerAccess,
    ports: &[ContainerPort],
    timeout: Duration,
) -> Result<(), HookError> {
    if let Some(exec) = &handler.exec {
        let command = exec.command.clone().unwrap_or_default();
        let joined = command.join(" ");
        if command.is_empty() {
            return Err(HookError::Exec("exec hook has no command".into()));
        }
        let run = access.exec(command, timeout);
        match tokio::time::timeout(timeout + EXEC_KILL_SLACK, run).await {
            Err(_) => Err(HookError::ExecTimeout { command: joined }),
            Ok(Err(err)) => Err(HookError::Exec(err.to_string())),
            Ok(Ok(out)) => match out.exit_code {
                Some(0) => Ok(()),
                Some(code) => Err(HookError::ExitCode {
                    command: joined,
                    code,
                    output: out.output,
                }),
                None => Err(HookError::ExecTimeout { command: joined }),
            },
        }
    } else if let Some(action) = &handler.http_get {
        let req = Request::for_action(action, ports, access.pod_ip(), "lifecycle").map_err(
            |message| HookError::Http {
                message,
                timed_out: false,
            },
        )?;
        let deadline = Instant::now() + timeout;
        let result = http::get(access, &req, timeout).await;
        if let Err(err) = &result
            && req.url.https
            && err.message.contains(HTTP_RESPONSE_TO_HTTPS)
        {
            // The kubelet retries a misconfigured HTTPS hook over plain HTTP (and records
            // a `LifecycleHTTPFallback` warning, which has no channel here); the first
            // error stands if the retry fails too.
            let mut plain = req.clone();
            plain.url.https = false;
            plain.headers.retain(|(name, _)| name != "Authorization");
            let remaining = deadline.saturating_duration_since(Instant::now());
            if http::get(access, &plain, remaining).await.is_ok() {
                return Ok(());
            }
        }
        match result {
            Ok(_) => Ok(()),
            // The kubelet drains the body without looking at errors.
            Err(err) if err.in_body => Ok(()),
            Err(err) => Err(HookError::Http {
                message: err.message,
                timed_out: err.timed_out,
            }),
        }
    } else if let Some(sleep) = &handler.sleep {
        let wanted = Duration::from_secs(sleep.seconds.max(0) as u64);
        if wanted <= timeout {
            tokio::time::sleep(wanted).await;
            Ok(())
        } else {
            tokio::time::sleep(timeout).await;
            Err(HookError::SleepInterrupted)
        }
    } else {
        Err(HookError::InvalidHandler(go_dump_handler(handler)))
    }
}

/// The kubelet's event message for a failed hook of `container` in `pod`, e.g.
/// `Exec lifecycle hook ([sh -c exit 1]) for Container "a" in Pod "p_default(uid)" failed
/// - error: command 'sh -c exit 1' exited with 1: , message: ""`.
pub fn failure_message(
    handler: &LifecycleHandler,
    container: &str,
    pod: &Pod,
    err: &HookError,
) -> String {
    let meta = &pod.metadata;
    let pod_ref = format!(
        "{}_{}({})",
        meta.name.as_deref().unwrap_or_default(),
        meta.namespace.as_deref().unwrap_or_default(),
        meta.uid.as_deref().unwrap_or_default()
    );
    let (container, pod_ref) = (go_quote(container), go_quote(&pod_ref));
    if let Some(exec) = &handler.exec {
        let output = match err {
            HookError::ExitCode { output, .. } => output.as_str(),
            _ => "",
        };
        format!(
            "Exec lifecycle hook ([{}]) for Container {container} in Pod {pod_ref} failed - error: {err}, message: {}",
            exec.command.as_deref().unwrap_or_default().join(" "),
            go_quote(output)
        )
    } else if let Some(action) = &handler.http_get {
        format!(
            "HTTP lifecycle hook ({}) for Container {container} in Pod {pod_ref} failed - error: {err}",
            action.path.as_deref().unwrap_or_default()
        )
    } else if let Some(sleep) = &handler.sleep {
        format!(
            "Sleep lifecycle hook ({}) for Container {container} in Pod {pod_ref} failed - error: {err}",
            sleep.seconds
        )
    } else {
        format!("Cannot run handler: {err}")
    }
}

/// The handler as Go's `%v` prints the generated type, for "invalid handler" errors.
fn go_dump_handler(handler: &LifecycleHandler) -> String {
    let tcp = match &handler.tcp_socket {
        Some(tcp) => {
            let port = match &tcp.port {
                IntOrString::Int(n) => format!("{{0 {n} }}"),
                IntOrString::String(s) => format!("{{1 0 {s}}}"),
            };
            format!(
                "&TCPSocketAction{{Port:{port},Host:{},}}",
                tcp.host.as_deref().unwrap_or_default()
            )
        }
        None => "nil".into(),
    };
    format!("&LifecycleHandler{{Exec:nil,HTTPGet:nil,TCPSocket:{tcp},Sleep:nil,}}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::core::v1::{
        ExecAction, LifecycleHandler, Pod, SleepAction, TCPSocketAction,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;
    use crate::probe::testing::{HostAccess, TestServer, closed_port, http_action};

    fn exec(command: &[&str]) -> LifecycleHandler {
        LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(command.iter().map(|s| s.to_string()).collect()),
            }),
            ..LifecycleHandler::default()
        }
    }

    fn http(port: u16, path: &str) -> LifecycleHandler {
        LifecycleHandler {
            http_get: Some(http_action(IntOrString::Int(i32::from(port)), path)),
            ..LifecycleHandler::default()
        }
    }

    fn sleep(seconds: i64) -> LifecycleHandler {
        LifecycleHandler {
            sleep: Some(SleepAction { seconds }),
            ..LifecycleHandler::default()
        }
    }

    async fn run(handler: &LifecycleHandler, timeout: Duration) -> Result<(), HookError> {
        run_hook(handler, &HostAccess, &[], timeout).await
    }

    const LONG: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn exec_hook_succeeds_on_exit_zero() {
        assert_eq!(run(&exec(&["sh", "-c", "echo fine"]), LONG).await, Ok(()));
    }

    #[tokio::test]
    async fn exec_hook_failure_carries_kubelet_text() {
        let handler = exec(&["sh", "-c", "echo oops >&2; exit 1"]);
        let err = run(&handler, LONG).await.expect_err("hook fails");
        assert_eq!(
            err.to_string(),
            "command 'sh -c echo oops >&2; exit 1' exited with 1: oops\n"
        );
        assert!(!err.is_timeout());

        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("u-1".into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        assert_eq!(
            failure_message(&handler, "proxy", &pod, &err),
            "Exec lifecycle hook ([sh -c echo oops >&2; exit 1]) for Container \"proxy\" in Pod \
             \"web_default(u-1)\" failed - error: command 'sh -c echo oops >&2; exit 1' exited \
             with 1: oops\n, message: \"oops\\n\""
        );
    }

    #[tokio::test]
    async fn exec_hook_is_killed_at_the_timeout() {
        let start = std::time::Instant::now();
        let err = run(&exec(&["sleep", "10"]), Duration::from_millis(300))
            .await
            .expect_err("times out");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(err.to_string(), "command \"sleep 10\" timed out");
        assert!(err.is_timeout());
    }

    #[tokio::test]
    async fn http_hook_ignores_the_status_code_like_the_kubelet() {
        let server = TestServer::start().await;
        assert_eq!(run(&http(server.port, "/fail"), LONG).await, Ok(()));
        assert_eq!(run(&http(server.port, "/ok"), LONG).await, Ok(()));
        let requests = server.requests();
        assert_eq!(requests.len(), 2);
        assert!(
            requests[0].starts_with("GET /fail HTTP/1.1\r\n"),
            "{}",
            requests[0]
        );
        assert!(requests[0].contains("\r\nUser-Agent: kube-lifecycle/1.33\r\n"));
    }

    #[tokio::test]
    async fn http_hook_follows_redirects_on_the_same_host_only() {
        let server = TestServer::start().await;
        assert_eq!(run(&http(server.port, "/redirect"), LONG).await, Ok(()));
        // The redirect names `localhost`: not followed, and the 302 itself is success.
        assert_eq!(
            run(&http(server.port, "/redirect-away"), LONG).await,
            Ok(())
        );
        let paths: Vec<String> = server
            .requests()
            .iter()
            .map(|r| r.split(' ').nth(1).unwrap_or_default().to_string())
            .collect();
        assert_eq!(paths, ["/redirect", "/ok", "/redirect-away"]);
    }

    #[tokio::test]
    async fn https_hook_against_plain_server_falls_back_to_http() {
        let server = TestServer::start().await;
        let mut handler = http(server.port, "/ok");
        if let Some(get) = handler.http_get.as_mut() {
            get.scheme = Some("HTTPS".into());
        }
        assert_eq!(run(&handler, LONG).await, Ok(()));
        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        assert!(
            requests[0].starts_with("GET /ok HTTP/1.1\r\n"),
            "{}",
            requests[0]
        );
    }

    #[tokio::test]
    async fn https_hook_reaches_tls_server() {
        let server = TestServer::start_tls().await;
        let mut handler = http(server.port, "/ok");
        if let Some(get) = handler.http_get.as_mut() {
            get.scheme = Some("HTTPS".into());
        }
        assert_eq!(run(&handler, LONG).await, Ok(()));
        assert_eq!(server.requests().len(), 1);
    }

    #[tokio::test]
    async fn http_hook_to_closed_port_fails() {
        let port = closed_port().await;
        let handler = http(port, "/stop");
        let err = run(&handler, LONG).await.expect_err("refused");
        assert_eq!(
            err.to_string(),
            format!(
                "Get \"http://127.0.0.1:{port}/stop\": dial tcp 127.0.0.1:{port}: connect: connection refused"
            )
        );
        assert!(!err.is_timeout());
        let pod = Pod::default();
        assert!(failure_message(&handler, "app", &pod, &err).starts_with(
            "HTTP lifecycle hook (/stop) for Container \"app\" in Pod \"_()\" failed - error: Get "
        ),);
    }

    #[tokio::test]
    async fn http_hook_times_out() {
        let server = TestServer::start().await;
        let err = run(&http(server.port, "/slow"), Duration::from_millis(300))
            .await
            .expect_err("too slow");
        assert!(err.is_timeout());
        assert!(
            err.to_string().contains("context deadline exceeded"),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_hook_sleeps_its_seconds() {
        let start = tokio::time::Instant::now();
        assert_eq!(run(&sleep(5), LONG).await, Ok(()));
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_hook_is_cut_at_the_timeout() {
        let start = tokio::time::Instant::now();
        let err = run(&sleep(60), Duration::from_secs(10))
            .await
            .expect_err("cut");
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert_eq!(err, HookError::SleepInterrupted);
        assert!(err.is_timeout());
        assert_eq!(
            failure_message(&sleep(60), "a", &Pod::default(), &err),
            "Sleep lifecycle hook (60) for Container \"a\" in Pod \"_()\" failed - error: \
             container terminated before sleep hook finished"
        );
    }

    #[tokio::test]
    async fn tcp_socket_hook_fails_at_runtime_like_the_kubelet() {
        let handler = LifecycleHandler {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(8080),
                host: None,
            }),
            ..LifecycleHandler::default()
        };
        let err = run(&handler, LONG).await.expect_err("unsupported");
        assert_eq!(
            failure_message(&handler, "a", &Pod::default(), &err),
            "Cannot run handler: invalid handler: &LifecycleHandler{Exec:nil,HTTPGet:nil,\
             TCPSocket:&TCPSocketAction{Port:{0 8080 },Host:,},Sleep:nil,}"
        );
    }
}
