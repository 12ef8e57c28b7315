use super::*;
use serde_json::{Value, json};

const NOW: &str = "2025-06-01T12:00:00Z";

fn now() -> Timestamp {
    NOW.parse().expect("valid timestamp")
}

/// RFC 3339 time `secs` seconds before [`NOW`].
fn ago(secs: i64) -> String {
    (now() - SignedDuration::from_secs(secs)).to_string()
}

fn pod(value: Value) -> Pod {
    serde_json::from_value(value).expect("test pod is valid")
}

fn row(p: &Pod) -> (String, String, String) {
    let r = pod_row(p, now());
    (r.ready, r.status, r.restarts)
}

fn triple(ready: &str, status: &str, restarts: &str) -> (String, String, String) {
    (ready.to_owned(), status.to_owned(), restarts.to_owned())
}

fn sidecar(name: &str) -> Value {
    json!({"name": name, "image": "i", "restartPolicy": "Always"})
}

fn init(name: &str) -> Value {
    json!({"name": name, "image": "i"})
}

fn main_c(name: &str) -> Value {
    json!({"name": name, "image": "i"})
}

/// A container status; `last_finished` is seconds ago of the last termination.
fn status(
    name: &str,
    state: Value,
    restarts: i32,
    ready: bool,
    started: bool,
    last_finished: Option<i64>,
) -> Value {
    let mut s = json!({
        "name": name, "image": "i", "imageID": "", "state": state,
        "restartCount": restarts, "ready": ready, "started": started,
    });
    if let Some(secs) = last_finished {
        s["lastState"] =
            json!({"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(secs)}});
    }
    s
}

fn running() -> Value {
    json!({"running": {"startedAt": ago(100)}})
}

fn terminated(exit: i32, reason: Option<&str>) -> Value {
    match reason {
        Some(r) => json!({"terminated": {"exitCode": exit, "reason": r}}),
        None => json!({"terminated": {"exitCode": exit}}),
    }
}

fn waiting(reason: &str) -> Value {
    json!({"waiting": {"reason": reason}})
}

fn conditions(initialized: bool, ready: bool) -> Value {
    let s = |b: bool| if b { "True" } else { "False" };
    json!([
        {"type": "Initialized", "status": s(initialized)},
        {"type": "Ready", "status": s(ready)},
    ])
}

fn make(
    init_specs: Vec<Value>,
    mains: Vec<Value>,
    phase: &str,
    init_statuses: Vec<Value>,
    statuses: Vec<Value>,
    conds: Value,
) -> Pod {
    pod(json!({
        "metadata": {"name": "p", "creationTimestamp": ago(60)},
        "spec": {"initContainers": init_specs, "containers": mains},
        "status": {
            "phase": phase,
            "conditions": conds,
            "initContainerStatuses": init_statuses,
            "containerStatuses": statuses,
        },
    }))
}

// §10 case 38
#[test]
fn human_duration_table() {
    let cases: &[(i64, &str)] = &[
        (0, "0s"),
        (-1, "0s"),
        (-2, "<invalid>"),
        (51, "51s"),
        (119, "119s"),
        (120, "2m"),
        (302, "5m2s"),
        (600, "10m"),
        (10_799, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 5 * 60, "3h5m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (48 * 3600, "2d"),
        (51 * 3600, "2d3h"),
        (8 * 86400, "8d"),
        (729 * 86400, "729d"),
        (730 * 86400, "2y"),
        (745 * 86400, "2y15d"),
        (8 * 365 * 86400, "8y"),
    ];
    for &(secs, want) in cases {
        assert_eq!(
            human_duration(SignedDuration::from_secs(secs)),
            want,
            "{secs}s"
        );
    }
    // Fractions are truncated, as Go's int(d.Seconds()) does.
    assert_eq!(human_duration(SignedDuration::from_millis(-1500)), "0s");
    assert_eq!(human_duration(SignedDuration::from_millis(119_999)), "119s");
}

#[test]
fn age_and_unknown_age() {
    let p = pod(json!({"metadata": {"name": "p", "creationTimestamp": ago(302)}}));
    assert_eq!(pod_row(&p, now()).age, "5m2s");
    let p = pod(json!({"metadata": {"name": "p"}}));
    assert_eq!(pod_row(&p, now()).age, "<unknown>");
}

// Upstream TestPrintPodWithRestartableInitContainer, row 1.
#[test]
fn first_sidecar_not_started() {
    let p = make(
        vec![sidecar("s1"), sidecar("s2")],
        vec![main_c("app")],
        "Pending",
        vec![
            status("s1", running(), 3, false, false, Some(10)),
            status("s2", waiting("PodInitializing"), 0, false, false, None),
        ],
        vec![status(
            "app",
            waiting("PodInitializing"),
            0,
            false,
            false,
            None,
        )],
        conditions(false, false),
    );
    assert_eq!(row(&p), triple("0/3", "Init:0/2", "3 (10s ago)"));
}

// Row 2.
#[test]
fn first_sidecar_started_second_not() {
    let p = make(
        vec![sidecar("s1"), sidecar("s2")],
        vec![main_c("app")],
        "Pending",
        vec![
            status("s1", running(), 3, false, true, Some(10)),
            status("s2", running(), 0, false, false, None),
        ],
        vec![status(
            "app",
            waiting("PodInitializing"),
            0,
            false,
            false,
            None,
        )],
        conditions(false, false),
    );
    assert_eq!(row(&p), triple("0/3", "Init:1/2", "3 (10s ago)"));
}

// Row 3.
#[test]
fn both_sidecars_started_main_ready() {
    let p = make(
        vec![sidecar("s1"), sidecar("s2")],
        vec![main_c("app")],
        "Running",
        vec![
            status("s1", running(), 3, false, true, Some(10)),
            status("s2", running(), 0, false, true, None),
        ],
        vec![status("app", running(), 4, true, true, Some(20))],
        conditions(true, false),
    );
    assert_eq!(row(&p), triple("1/3", "Running", "7 (10s ago)"));
}

// Row 4.
#[test]
fn completed_pod_with_killed_sidecars() {
    let p = make(
        vec![sidecar("s1"), sidecar("s2")],
        vec![main_c("app")],
        "Succeeded",
        vec![
            status(
                "s1",
                terminated(137, Some("Error")),
                3,
                false,
                false,
                Some(10),
            ),
            status("s2", terminated(137, Some("Error")), 0, false, false, None),
        ],
        vec![status(
            "app",
            terminated(0, Some("Completed")),
            4,
            false,
            false,
            Some(20),
        )],
        conditions(true, false),
    );
    assert_eq!(row(&p), triple("0/3", "Completed", "7 (10s ago)"));
}

#[test]
fn a_started_ready_sidecar_counts_during_init() {
    // Sidecar ready, regular init container running: `1/3 Init:1/3`, not the KEP's `0/3`.
    let p = make(
        vec![sidecar("a"), init("b"), sidecar("c")],
        vec![main_c("main")],
        "Pending",
        vec![
            status("a", running(), 0, true, true, None),
            status("b", running(), 0, false, false, None),
            status("c", waiting("PodInitializing"), 0, false, false, None),
        ],
        vec![status(
            "main",
            waiting("PodInitializing"),
            0,
            false,
            false,
            None,
        )],
        conditions(false, false),
    );
    assert_eq!(row(&p), triple("1/3", "Init:1/3", "0"));
}

#[test]
fn init_failure_reasons() {
    let failing = |state: Value| {
        make(
            vec![init("setup")],
            vec![main_c("app")],
            "Pending",
            vec![status("setup", state, 0, false, false, None)],
            vec![],
            conditions(false, false),
        )
    };
    assert_eq!(row(&failing(terminated(3, Some("Error")))).1, "Init:Error");
    assert_eq!(row(&failing(terminated(3, None))).1, "Init:ExitCode:3");
    assert_eq!(
        row(&failing(
            json!({"terminated": {"exitCode": 137, "signal": 9}})
        ))
        .1,
        "Init:Signal:9"
    );
    assert_eq!(
        row(&failing(waiting("CrashLoopBackOff"))).1,
        "Init:CrashLoopBackOff"
    );
    assert_eq!(row(&failing(waiting("PodInitializing"))).1, "Init:0/1");
    assert_eq!(row(&failing(json!({"waiting": {}}))).1, "Init:0/1");
}

#[test]
fn main_container_reasons() {
    let with_main = |state: Value, ready: bool, phase: &str| {
        make(
            vec![],
            vec![main_c("app")],
            phase,
            vec![],
            vec![status("app", state, 0, ready, true, None)],
            conditions(true, ready),
        )
    };
    assert_eq!(
        row(&with_main(waiting("ImagePullBackOff"), false, "Pending")).1,
        "ImagePullBackOff"
    );
    assert_eq!(
        row(&with_main(terminated(2, None), false, "Failed")).1,
        "ExitCode:2"
    );
    assert_eq!(
        row(&with_main(
            json!({"terminated": {"exitCode": 143, "signal": 15}}),
            false,
            "Failed"
        ))
        .1,
        "Signal:15"
    );
    assert_eq!(
        row(&with_main(running(), true, "Running")),
        triple("1/1", "Running", "0")
    );
    assert_eq!(
        row(&with_main(running(), false, "Running")),
        triple("0/1", "Running", "0")
    );
}

#[test]
fn phase_reason_and_scheduling_gate() {
    let p = pod(json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [main_c("app")]},
        "status": {"phase": "Failed", "reason": "Evicted"},
    }));
    assert_eq!(row(&p), triple("0/1", "Evicted", "0"));
    let p = pod(json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [main_c("app")]},
        "status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}
        ]},
    }));
    assert_eq!(row(&p).1, "SchedulingGated");
}

#[test]
fn terminating_until_the_phase_is_terminal() {
    let deleting = |phase: &str, reason: Option<&str>| {
        let mut v = json!({
            "metadata": {"name": "p", "deletionTimestamp": ago(1)},
            "spec": {"containers": [main_c("app")]},
            "status": {"phase": phase, "containerStatuses": [
                status("app", terminated(0, Some("Completed")), 0, false, false, None)
            ]},
        });
        if let Some(r) = reason {
            v["status"]["reason"] = json!(r);
        }
        pod(v)
    };
    assert_eq!(row(&deleting("Running", None)).1, "Terminating");
    assert_eq!(row(&deleting("Succeeded", None)).1, "Completed");
    assert_eq!(row(&deleting("Running", Some("NodeLost"))).1, "Unknown");
}

// §10 case 26
#[test]
fn init_restarts_are_dropped_after_initialization() {
    let specs = vec![init("flaky"), sidecar("proxy")];
    let during = make(
        specs.clone(),
        vec![main_c("app")],
        "Pending",
        vec![
            status("flaky", running(), 2, false, false, Some(15)),
            status("proxy", waiting("PodInitializing"), 0, false, false, None),
        ],
        vec![status(
            "app",
            waiting("PodInitializing"),
            0,
            false,
            false,
            None,
        )],
        conditions(false, false),
    );
    assert_eq!(row(&during), triple("0/2", "Init:0/2", "2 (15s ago)"));
    let after = make(
        specs,
        vec![main_c("app")],
        "Running",
        vec![
            status(
                "flaky",
                terminated(0, Some("Completed")),
                2,
                false,
                false,
                Some(15),
            ),
            status("proxy", running(), 0, true, true, None),
        ],
        vec![status("app", running(), 0, true, true, None)],
        conditions(true, true),
    );
    assert_eq!(row(&after), triple("2/2", "Running", "0"));
}

// §10 case 27
#[test]
fn sidecar_and_main_restarts_are_summed() {
    let p = make(
        vec![sidecar("proxy")],
        vec![main_c("app")],
        "Running",
        vec![status("proxy", running(), 3, true, true, Some(40))],
        vec![status("app", running(), 1, true, true, Some(25))],
        conditions(true, true),
    );
    assert_eq!(row(&p), triple("2/2", "Running", "4 (25s ago)"));
}

// §10 case 28
#[test]
fn a_crashing_first_sidecar_hides_later_ones() {
    let p = make(
        vec![sidecar("a"), sidecar("b")],
        vec![main_c("app")],
        "Running",
        vec![
            status("a", waiting("CrashLoopBackOff"), 5, false, false, Some(30)),
            status("b", running(), 7, true, true, Some(5)),
        ],
        vec![status("app", running(), 1, true, true, Some(50))],
        conditions(true, false),
    );
    assert_eq!(
        row(&p),
        triple("1/3", "Init:CrashLoopBackOff", "6 (30s ago)")
    );
}

// §10 case 29
#[test]
fn not_ready_when_one_main_completed_and_another_runs() {
    let p = make(
        vec![sidecar("proxy")],
        vec![main_c("a"), main_c("b")],
        "Running",
        vec![status("proxy", running(), 0, true, true, None)],
        vec![
            status("a", terminated(0, Some("Completed")), 0, false, false, None),
            status("b", running(), 0, true, true, None),
        ],
        conditions(true, false),
    );
    assert_eq!(row(&p), triple("2/3", "NotReady", "0"));
    // With the Ready condition true the same pod shows Running.
    let mut ready = p.clone();
    if let Some(s) = ready.status.as_mut() {
        s.conditions = serde_json::from_value(conditions(true, true)).ok();
    }
    assert_eq!(row(&ready).1, "Running");
}

#[test]
fn a_sidecar_that_exited_zero_is_treated_as_done() {
    // §10 case 16: between restarts the sidecar shows Terminated/Completed.
    let p = make(
        vec![sidecar("proxy")],
        vec![main_c("app")],
        "Running",
        vec![status(
            "proxy",
            terminated(0, Some("Completed")),
            2,
            false,
            false,
            Some(3),
        )],
        vec![status("app", running(), 0, true, true, None)],
        conditions(true, false),
    );
    assert_eq!(row(&p), triple("1/2", "Running", "2 (3s ago)"));
}

#[test]
fn crashed_sidecar_after_init_keeps_init_status() {
    // §10 case 15 (rp=Never): a terminated sidecar shows Init:Error while Running.
    let p = make(
        vec![sidecar("proxy")],
        vec![main_c("app")],
        "Running",
        vec![status(
            "proxy",
            terminated(1, Some("Error")),
            1,
            false,
            false,
            Some(2),
        )],
        vec![status("app", running(), 0, true, true, None)],
        conditions(true, false),
    );
    assert_eq!(row(&p), triple("1/2", "Init:Error", "1 (2s ago)"));
}

#[test]
fn wide_columns() {
    let p = pod(json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [main_c("app")], "nodeName": "node-1",
                 "readinessGates": [{"conditionType": "example.com/a"}, {"conditionType": "example.com/b"}]},
        "status": {"podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}], "conditions": [
            {"type": "example.com/a", "status": "True"},
            {"type": "example.com/b", "status": "False"},
        ]},
    }));
    assert_eq!(
        pod_wide_columns(&p).cells(),
        vec!["10.0.0.5", "node-1", "<none>", "1/2"]
    );
    let bare = pod(json!({"metadata": {"name": "p"}}));
    assert_eq!(
        pod_wide_columns(&bare).cells(),
        vec!["<none>", "<none>", "<none>", "<none>"]
    );
}

fn cells(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn table_layout_matches_kubectl() {
    let rows = vec![
        cells(&["sleep", "2/2", "Running", "0", "10s"]),
        cells(&[
            "sleep-7656cf8794-8fhdk",
            "0/2",
            "Init:CrashLoopBackOff",
            "3 (5s ago)",
            "2m",
        ]),
    ];
    let out = format_rows(&POD_COLUMNS, &rows);
    assert_eq!(
        out,
        "NAME                     READY   STATUS                  RESTARTS     AGE\n\
         sleep                    2/2     Running                 0            10s\n\
         sleep-7656cf8794-8fhdk   0/2     Init:CrashLoopBackOff   3 (5s ago)   2m\n"
    );
    // Narrow columns still take 6 characters; headers are upper-cased.
    assert_eq!(
        format_rows(&["a", "b"], &[cells(&["x", "y"])]),
        "A     B\nx     y\n"
    );
}

#[test]
fn watch_rows_keep_their_columns() {
    let first = pod_row(
        &make(
            vec![sidecar("proxy")],
            vec![main_c("app")],
            "Pending",
            vec![],
            vec![],
            conditions(false, false),
        ),
        now(),
    );
    let mut table = WatchTable::new(&POD_COLUMNS, &[first.cells()]);
    assert_eq!(
        table.header_line(),
        "NAME   READY   STATUS    RESTARTS   AGE"
    );
    assert_eq!(
        table.row_line(&first.cells()),
        "p      0/2     Pending   0          60s"
    );
    // A narrower status keeps the column; a wider one widens it from then on.
    assert_eq!(
        table.row_line(&cells(&["p", "2/2", "Running", "0", "61s"])),
        "p      2/2     Running   0          61s"
    );
    assert_eq!(
        table.row_line(&cells(&["p", "1/2", "PodInitializing", "0", "62s"])),
        "p      1/2     PodInitializing   0          62s"
    );
    assert_eq!(
        table.row_line(&cells(&["p", "2/2", "Running", "0", "63s"])),
        "p      2/2     Running           0          63s"
    );
}
