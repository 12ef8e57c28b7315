//! `kubectl get pods` output: the pod row of the server-side printer
//! (`printPod` in k8s.io/kubernetes `pkg/printers/internalversion`), the
//! `HumanDuration` used for AGE and "(X ago)", and kubectl's borderless table
//! layout (Go `text/tabwriter` with padding 3 and minimum width 6).

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod};

/// Column names of `kubectl get pods`.
pub const POD_COLUMNS: [&str; 5] = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"];
/// Extra columns of `kubectl get pods -o wide`.
pub const POD_WIDE_COLUMNS: [&str; 4] = ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"];

/// A duration the way kubectl prints ages (`HumanDuration`, apimachinery
/// `util/duration`): `0s`, `119s`, `5m2s`, `179m`, `3h5m`, `47h`, `2d3h`, `729d`, `2y15d`, `8y`.
pub fn human_duration(d: SignedDuration) -> String {
    // Allow up to 2s of clock skew before calling a time "in the future".
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// `HumanDuration(now - t)`, or `<unknown>` when there is no timestamp.
pub fn age(t: Option<Timestamp>, now: Timestamp) -> String {
    match t {
        Some(t) => human_duration(now.duration_since(t)),
        None => "<unknown>".to_owned(),
    }
}

/// One row of `kubectl get pods`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRow {
    pub name: String,
    pub ready: String,
    pub status: String,
    pub restarts: String,
    pub age: String,
}

impl PodRow {
    /// The cells in column order ([`POD_COLUMNS`]).
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.ready.clone(),
            self.status.clone(),
            self.restarts.clone(),
            self.age.clone(),
        ]
    }
}

/// The `-o wide` columns of a pod row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodWideColumns {
    pub ip: String,
    pub node: String,
    pub nominated_node: String,
    pub readiness_gates: String,
}

impl PodWideColumns {
    /// The cells in column order ([`POD_WIDE_COLUMNS`]).
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.ip.clone(),
            self.node.clone(),
            self.nominated_node.clone(),
            self.readiness_gates.clone(),
        ]
    }
}

fn is_sidecar(c: Option<&&Container>) -> bool {
    c.and_then(|c| c.restart_policy.as_deref()) == Some("Always")
}

fn condition_true(pod: &Pod, kind: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"))
}

fn last_termination(cs: &ContainerStatus) -> Option<Timestamp> {
    cs.last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.finished_at.as_ref())
        .map(|t| t.0)
}

fn later(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Computes the row `kubectl get pods` shows for `pod` at time `now`.
pub fn pod_row(pod: &Pod, now: Timestamp) -> PodRow {
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let init_specs: &[Container] = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[]);
    let by_name: HashMap<&str, &Container> =
        init_specs.iter().map(|c| (c.name.as_str(), c)).collect();
    let sidecars = init_specs
        .iter()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .count();
    let total = spec.map_or(0, |s| s.containers.len()) + sidecars;
    let mut ready = 0;

    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");
    let mut reason = status
        .and_then(|s| s.reason.as_deref())
        .filter(|r| !r.is_empty())
        .unwrap_or(phase)
        .to_owned();
    let gated = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "PodScheduled" && c.reason.as_deref() == Some("SchedulingGated")
            })
        });
    if gated {
        reason = "SchedulingGated".to_owned();
    }

    let mut restarts: i64 = 0;
    let mut last: Option<Timestamp> = None;
    let mut sidecar_restarts: i64 = 0;
    let mut sidecar_last: Option<Timestamp> = None;
    let mut initializing = false;
    let init_statuses = status
        .and_then(|s| s.init_container_statuses.as_deref())
        .unwrap_or(&[]);
    for (i, cs) in init_statuses.iter().enumerate() {
        restarts += i64::from(cs.restart_count);
        last = later(last, last_termination(cs));
        let sidecar = is_sidecar(by_name.get(cs.name.as_str()));
        if sidecar {
            sidecar_restarts += i64::from(cs.restart_count);
            sidecar_last = later(sidecar_last, last_termination(cs));
        }
        let state = cs.state.as_ref();
        let terminated = state.and_then(|s| s.terminated.as_ref());
        let waiting = state.and_then(|s| s.waiting.as_ref());
        if terminated.is_some_and(|t| t.exit_code == 0) {
            continue;
        }
        if sidecar && cs.started == Some(true) {
            if cs.ready {
                ready += 1;
            }
            continue;
        }
        let waiting_reason = waiting.and_then(|w| w.reason.as_deref()).unwrap_or("");
        reason = if let Some(t) = terminated {
            match t.reason.as_deref().filter(|r| !r.is_empty()) {
                Some(r) => format!("Init:{r}"),
                None => match t.signal.filter(|s| *s != 0) {
                    Some(signal) => format!("Init:Signal:{signal}"),
                    None => format!("Init:ExitCode:{}", t.exit_code),
                },
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    if !initializing || condition_true(pod, "Initialized") {
        // Restarts of regular init containers no longer count once initialized.
        restarts = sidecar_restarts;
        last = sidecar_last;
        let mut has_running = false;
        let statuses = status
            .and_then(|s| s.container_statuses.as_deref())
            .unwrap_or(&[]);
        for cs in statuses.iter().rev() {
            restarts += i64::from(cs.restart_count);
            last = later(last, last_termination(cs));
            let state = cs.state.as_ref();
            let waiting_reason = state
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref())
                .unwrap_or("");
            let terminated = state.and_then(|s| s.terminated.as_ref());
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_owned();
            } else if let Some(t) = terminated {
                reason = match t.reason.as_deref().filter(|r| !r.is_empty()) {
                    Some(r) => r.to_owned(),
                    None => match t.signal.filter(|s| *s != 0) {
                        Some(signal) => format!("Signal:{signal}"),
                        None => format!("ExitCode:{}", t.exit_code),
                    },
                };
            } else if cs.ready && state.is_some_and(|s| s.running.is_some()) {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(pod, "Ready") {
                "Running".to_owned()
            } else {
                "NotReady".to_owned()
            };
        }
    }

    if pod.metadata.deletion_timestamp.is_some() {
        if status.and_then(|s| s.reason.as_deref()) == Some("NodeLost") {
            reason = "Unknown".to_owned();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".to_owned();
        }
    }

    let restarts = match last {
        Some(t) if restarts != 0 => {
            format!("{restarts} ({} ago)", human_duration(now.duration_since(t)))
        }
        _ => restarts.to_string(),
    };
    PodRow {
        name: pod.metadata.name.clone().unwrap_or_default(),
        ready: format!("{ready}/{total}"),
        status: reason,
        restarts,
        age: age(pod.metadata.creation_timestamp.as_ref().map(|t| t.0), now),
    }
}

/// The `-o wide` columns: first pod IP, node, nominated node and how many
/// readiness gates are true (`<none>` when empty).
pub fn pod_wide_columns(pod: &Pod) -> PodWideColumns {
    let status = pod.status.as_ref();
    let spec = pod.spec.as_ref();
    let none = |v: Option<&str>| match v {
        Some(v) if !v.is_empty() => v.to_owned(),
        _ => "<none>".to_owned(),
    };
    let ip = status
        .and_then(|s| s.pod_ips.as_ref())
        .and_then(|ips| ips.first())
        .map(|ip| ip.ip.as_str());
    let gates = spec
        .and_then(|s| s.readiness_gates.as_deref())
        .unwrap_or(&[]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_owned()
    } else {
        let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
        let true_count = gates
            .iter()
            .filter(|g| {
                conditions
                    .iter()
                    .find(|c| c.type_ == g.condition_type)
                    .is_some_and(|c| c.status == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };
    PodWideColumns {
        ip: none(ip),
        node: none(spec.and_then(|s| s.node_name.as_deref())),
        nominated_node: none(status.and_then(|s| s.nominated_node_name.as_deref())),
        readiness_gates,
    }
}

const PADDING: usize = 3;
const MIN_WIDTH: usize = 6;

fn width(s: &str) -> usize {
    s.chars().count()
}

/// Column widths as kubectl's tabwriter computes them: the widest cell plus 3,
/// at least 6. The last column is never padded.
pub fn column_widths(header: &[&str], rows: &[Vec<String>]) -> Vec<usize> {
    let columns = rows
        .iter()
        .map(Vec::len)
        .chain([header.len()])
        .max()
        .unwrap_or(0);
    (0..columns)
        .map(|i| {
            let header_width = header.get(i).map_or(0, |h| width(h));
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| width(c))
                .chain([header_width])
                .max()
                .unwrap_or(0)
                .saturating_add(PADDING)
                .max(MIN_WIDTH)
        })
        .collect()
}

/// One line (without newline) with each cell but the last padded to its
/// column width; a cell wider than its column still gets 3 spaces.
pub fn format_row(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        line.push_str(cell);
        if i + 1 < cells.len() {
            let target = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .max(width(cell) + PADDING);
            line.extend(std::iter::repeat_n(' ', target - width(cell)));
        }
    }
    line
}

/// kubectl's borderless table: upper-case header, left-aligned cells, columns
/// separated by at least 3 spaces. Each line ends with `\n`.
pub fn format_rows(header: &[&str], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = header.iter().map(|h| h.to_uppercase()).collect();
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let widths = column_widths(&header_refs, rows);
    let mut out = String::new();
    for line in std::iter::once(&header).chain(rows) {
        out.push_str(&format_row(line, &widths));
        out.push('\n');
    }
    out
}

/// Prints a table one row at a time (`kubectl get -w`): the header once, then
/// rows with stable column widths. A column only grows when a cell does not fit,
/// and stays wider from then on.
#[derive(Debug, Clone)]
pub struct WatchTable {
    widths: Vec<usize>,
    header: Vec<String>,
}

impl WatchTable {
    /// Sizes the columns for `header` and the rows known at the start.
    pub fn new(header: &[&str], initial_rows: &[Vec<String>]) -> Self {
        let header: Vec<String> = header.iter().map(|h| h.to_uppercase()).collect();
        let refs: Vec<&str> = header.iter().map(String::as_str).collect();
        WatchTable {
            widths: column_widths(&refs, initial_rows),
            header,
        }
    }

    /// The header line (without newline).
    pub fn header_line(&self) -> String {
        format_row(&self.header, &self.widths)
    }

    /// A row line (without newline).
    pub fn row_line(&mut self, cells: &[String]) -> String {
        for (i, cell) in cells.iter().enumerate() {
            let needed = (width(cell) + PADDING).max(MIN_WIDTH);
            match self.widths.get_mut(i) {
                Some(w) => *w = (*w).max(needed),
                None => self.widths.push(needed),
            }
        }
        format_row(cells, &self.widths)
    }
}

#[cfg(test)]
mod tests;
