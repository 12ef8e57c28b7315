//! The accumulator the rule modules write into while one plan is computed.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::model::{Action, Backoff, ContainerKind, Event, StopReason};

/// A Waiting reason and message the kubelet would keep for a container after this sync
/// (its "reason cache": CrashLoopBackOff, the last start error, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingReason {
    pub reason: String,
    pub message: String,
}

/// Actions, reasons, backoff table and wake-up time being built.
pub struct Outcome {
    pub now: Timestamp,
    pub actions: Vec<Action>,
    pub waiting: BTreeMap<String, WaitingReason>,
    pub backoff: Backoff,
    pub wake_at: Option<Timestamp>,
}

impl Outcome {
    pub fn new(now: Timestamp, backoff: Backoff) -> Self {
        Self {
            now,
            actions: Vec::new(),
            waiting: BTreeMap::new(),
            backoff,
            wake_at: None,
        }
    }

    /// Asks to be called again at `at` (ignored unless it lies in the future).
    pub fn wake(&mut self, at: Timestamp) {
        if at > self.now && self.wake_at.is_none_or(|w| at < w) {
            self.wake_at = Some(at);
        }
    }

    pub fn event(&mut self, warning: bool, reason: &str, message: String, container: &str) {
        self.actions.push(Action::Event(Event {
            warning,
            reason: reason.to_string(),
            message,
            container: Some(container.to_string()),
        }));
    }

    pub fn start(&mut self, name: &str, kind: ContainerKind) {
        self.actions.push(Action::StartContainer {
            name: name.to_string(),
            kind,
        });
    }

    /// A container stop, preceded by its `Killing` event (the kubelet's `killContainer`
    /// records the event before it signals).
    pub fn stop(
        &mut self,
        name: &str,
        grace: std::time::Duration,
        reason: StopReason,
        message: String,
    ) {
        self.event(false, "Killing", message, name);
        self.actions.push(Action::StopContainer {
            name: name.to_string(),
            grace,
            reason,
        });
    }

    pub fn set_waiting(&mut self, name: &str, reason: &str, message: String) {
        self.waiting.insert(
            name.to_string(),
            WaitingReason {
                reason: reason.to_string(),
                message,
            },
        );
    }
}
