//! CrashLoopBackOff (§2.2 B1–B3) and the pacing of retries after failed starts.

use std::time::Duration;

use super::backoff_key;
use super::model::{BackoffConfig, BackoffEntry, ContainerObservation, Exited, InstanceState};
use super::outcome::Outcome;
use super::view::{Entry, PodView, add, elapsed, go_duration, since};

/// Suffix of the backoff keys that pace retries after a start error (no instance was made).
pub const START_ERROR_SUFFIX: &str = "#start-error";

/// The newest exited instance of a container, whose `finishedAt` the backoff is measured
/// from (`doBackOff`).
fn newest_exited(obs: &ContainerObservation) -> Option<&Exited> {
    match obs.current.as_ref().map(|i| &i.state) {
        Some(InstanceState::Exited(e)) => Some(e),
        Some(InstanceState::Created) => obs.previous.as_ref(),
        _ => None,
    }
}

/// The entry is stale: the container ran more than 2 × max since the entry was last
/// advanced, so backoff starts over (`hasExpired`).
fn expired(entry: &BackoffEntry, finished_at: jiff::Timestamp, cfg: &BackoffConfig) -> bool {
    since(finished_at, entry.last_update)
        > jiff::SignedDuration::try_from(cfg.max * 2).unwrap_or(jiff::SignedDuration::MAX)
}

fn next_delay(prev: Option<Duration>, cfg: &BackoffConfig) -> Duration {
    match prev {
        Some(d) => d.saturating_mul(2).min(cfg.max),
        None => cfg.initial.min(cfg.max),
    }
}

/// Starts `entry` now, or records why it has to wait: CrashLoopBackOff after an exit, or
/// the last start error while a retry is pending.
pub fn start_or_wait(
    view: &PodView<'_>,
    entry: &Entry<'_>,
    cfg: &BackoffConfig,
    out: &mut Outcome,
) {
    let obs = view.observed(entry.name());
    if obs.last_start_error.is_some() {
        retry_start_error(view, entry, obs, cfg, out);
        return;
    }
    let Some(exited) = newest_exited(obs) else {
        // First start, or the runtime lost the container: no backoff applies.
        out.start(entry.name(), entry.kind);
        return;
    };
    let key = backoff_key(view.pod, entry.name(), entry.image());
    let t = exited.finished_at;
    let current = out.backoff.get(&key).copied();
    let live = current.filter(|e| !expired(e, t, cfg));
    if let Some(mut e) = live
        && since(view.now, t)
            < jiff::SignedDuration::try_from(e.delay).unwrap_or(jiff::SignedDuration::MAX)
    {
        let pod = view.pod_ref();
        out.set_waiting(
            entry.name(),
            "CrashLoopBackOff",
            format!(
                "back-off {} restarting failed container={} pod={pod}",
                go_duration(e.delay),
                entry.name()
            ),
        );
        if e.reported != Some(t) {
            out.event(
                true,
                "BackOff",
                format!(
                    "Back-off restarting failed container {} in pod {pod}",
                    entry.name()
                ),
                entry.name(),
            );
            e.reported = Some(t);
            out.backoff.insert(key, e);
        }
        out.wake(add(t, e.delay));
        return;
    }
    out.backoff.insert(
        key,
        BackoffEntry {
            delay: next_delay(live.map(|e| e.delay), cfg),
            last_update: view.now,
            reported: None,
        },
    );
    out.start(entry.name(), entry.kind);
}

/// A start failed without producing an instance (`CreateContainerConfigError`, ...): show
/// the error and retry with the same doubling delays, measured from the last attempt.
fn retry_start_error(
    view: &PodView<'_>,
    entry: &Entry<'_>,
    obs: &ContainerObservation,
    cfg: &BackoffConfig,
    out: &mut Outcome,
) {
    let Some(err) = obs.last_start_error.as_ref() else {
        return;
    };
    let key = format!(
        "{}{START_ERROR_SUFFIX}",
        backoff_key(view.pod, entry.name(), entry.image())
    );
    let existing = out.backoff.get(&key).copied();
    // Once a pull failed and is being retried, the kubelet reports ImagePullBackOff.
    if err.reason == "ErrImagePull" && existing.is_some() {
        out.set_waiting(
            entry.name(),
            "ImagePullBackOff",
            format!("Back-off pulling image \"{}\"", entry.image()),
        );
    } else {
        out.set_waiting(entry.name(), &err.reason, err.message.clone());
    }
    match existing {
        None => {
            let delay = next_delay(None, cfg);
            out.backoff.insert(
                key,
                BackoffEntry {
                    delay,
                    last_update: view.now,
                    reported: None,
                },
            );
            out.wake(add(view.now, delay));
        }
        Some(e) if elapsed(view.now, e.last_update) < e.delay => {
            out.wake(add(e.last_update, e.delay));
        }
        Some(e) => {
            out.backoff.insert(
                key,
                BackoffEntry {
                    delay: next_delay(Some(e.delay), cfg),
                    last_update: view.now,
                    reported: None,
                },
            );
            out.start(entry.name(), entry.kind);
        }
    }
}

/// Drops entries nobody needs any more: retry pacing of containers that now started, and
/// crash records that can no longer hold back a start (an entry blocks only exits within
/// 2 × max of its update, and only for at most max after such an exit).
pub fn prune(view: &PodView<'_>, cfg: &BackoffConfig, out: &mut Outcome) {
    let wanted: Vec<String> = view
        .all()
        .filter(|e| view.observed(e.name()).last_start_error.is_some())
        .map(|e| {
            format!(
                "{}{START_ERROR_SUFFIX}",
                backoff_key(view.pod, e.name(), e.image())
            )
        })
        .collect();
    let now = view.now;
    out.backoff.retain(|key, entry| {
        if key.ends_with(START_ERROR_SUFFIX) {
            wanted.contains(key)
        } else {
            elapsed(now, entry.last_update) <= cfg.max * 3
        }
    });
}
