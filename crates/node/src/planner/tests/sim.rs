//! A tiny discrete-event stand-in for the pod worker: it executes the planner's actions on
//! an [`Observation`] the way the worker contract describes, lets simulated processes exit,
//! hooks finish and probes report at fake-clock times, and calls [`plan`] again after every
//! change and at `wake_at`.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use crate::planner::{
    Action, Backoff, BackoffConfig, Event, Exited, HookState, Instance, InstanceState, Observation,
    PlanInput, ProbeResult, SandboxState, StartError, StopIssued, Termination, plan,
};

/// How a simulated container behaves on one run.
#[derive(Debug, Clone)]
pub struct Program {
    /// Exits by itself after this long; `None` runs until stopped.
    pub run_for: Option<Duration>,
    pub exit_code: i32,
    pub on_term: OnTerm,
    /// postStart takes this long and succeeds (true) or fails.
    pub post_start: Option<(Duration, bool)>,
    /// preStop takes this long.
    pub pre_stop: Duration,
    /// The start fails without an instance (reason, message).
    pub start_error: Option<(&'static str, &'static str)>,
    /// Probe results reported this long after the start.
    pub startup: Vec<(Duration, ProbeResult)>,
    pub readiness: Vec<(Duration, ProbeResult)>,
    pub liveness: Vec<(Duration, ProbeResult)>,
}

/// Reaction to the stop signal.
#[derive(Debug, Clone, Copy)]
pub enum OnTerm {
    /// Exits this long after the signal with this code (a trap), unless SIGKILLed first.
    Exit { after: Duration, code: i32 },
    /// Killed by SIGTERM at once (143).
    Die,
    /// Ignores SIGTERM; SIGKILL after the grace (137).
    Ignore,
}

impl Default for Program {
    fn default() -> Self {
        Self {
            run_for: None,
            exit_code: 0,
            on_term: OnTerm::Die,
            post_start: None,
            pre_stop: Duration::ZERO,
            start_error: None,
            startup: Vec::new(),
            readiness: Vec::new(),
            liveness: Vec::new(),
        }
    }
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Runs forever.
pub fn forever() -> Program {
    Program::default()
}

/// Exits with `code` after `s` seconds.
pub fn exits(s: u64, code: i32) -> Program {
    Program {
        run_for: Some(secs(s)),
        exit_code: code,
        ..Program::default()
    }
}

/// Traps SIGTERM and exits with `code` after `s` seconds.
pub fn traps(s: u64, code: i32) -> Program {
    Program {
        on_term: OnTerm::Exit {
            after: secs(s),
            code,
        },
        ..Program::default()
    }
}

pub fn ignores_term() -> Program {
    Program {
        on_term: OnTerm::Ignore,
        ..Program::default()
    }
}

#[derive(Debug, Clone)]
enum Change {
    Exit {
        name: String,
        id: String,
        code: i32,
        signal: Option<i32>,
    },
    PostStartDone {
        name: String,
        id: String,
        ok: bool,
    },
    PreStopDone {
        name: String,
        id: String,
        ok: bool,
    },
    Probe {
        name: String,
        id: String,
        kind: ProbeKind,
        result: ProbeResult,
    },
}

#[derive(Debug, Clone, Copy)]
enum ProbeKind {
    Startup,
    Readiness,
    Liveness,
}

pub const T0: &str = "2030-01-01T00:00:00Z";

pub fn t0() -> Timestamp {
    T0.parse().expect("valid timestamp")
}

/// Builds a pod named `web` in `default` with uid `uid-1` from a spec.
pub fn pod(spec: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "uid": "uid-1"},
        "spec": spec,
    }))
    .expect("valid pod")
}

pub fn sidecar(name: &str) -> Value {
    json!({"name": name, "image": format!("img/{name}"), "restartPolicy": "Always"})
}

pub fn container(name: &str) -> Value {
    json!({"name": name, "image": format!("img/{name}")})
}

/// Adds fields to a container JSON.
pub fn with(mut c: Value, extra: Value) -> Value {
    if let (Some(obj), Some(more)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            obj.insert(k.clone(), v.clone());
        }
    }
    c
}

pub fn exec_probe() -> Value {
    json!({"exec": {"command": ["true"]}, "periodSeconds": 1})
}

pub struct Sim {
    pub pod: Pod,
    pub obs: Observation,
    pub backoff: Backoff,
    pub cfg: BackoffConfig,
    pub prev: Option<PodStatus>,
    pub now: Timestamp,
    programs: BTreeMap<String, Vec<Program>>,
    runs: BTreeMap<String, usize>,
    queue: Vec<(Timestamp, u64, Change)>,
    seq: u64,
    /// Every action with the time (seconds since T0) it was planned at.
    pub log: Vec<(f64, Action)>,
    /// Every distinct status reported, with its time.
    pub history: Vec<(f64, PodStatus)>,
    pub done: bool,
    pub plans: usize,
}

impl Sim {
    pub fn new(pod: Pod) -> Self {
        Self {
            pod,
            obs: Observation::default(),
            backoff: Backoff::new(),
            cfg: BackoffConfig::default(),
            prev: None,
            now: t0(),
            programs: BTreeMap::new(),
            runs: BTreeMap::new(),
            queue: Vec::new(),
            seq: 0,
            log: Vec::new(),
            history: Vec::new(),
            done: false,
            plans: 0,
        }
    }

    /// Sets the behaviour of successive runs of a container (the last one repeats).
    pub fn program(mut self, name: &str, runs: Vec<Program>) -> Self {
        self.programs.insert(name.to_string(), runs);
        self
    }

    pub fn secs_now(&self) -> f64 {
        self.now.duration_since(t0()).as_secs_f64()
    }

    fn schedule(&mut self, at: Timestamp, change: Change) {
        self.seq += 1;
        self.queue.push((at, self.seq, change));
    }

    /// Runs until `s` seconds after T0 (or until `Done`).
    pub fn run_until(&mut self, s: f64) {
        let until = at(s);
        let mut spins = 0;
        while !self.done {
            self.apply_due();
            let p = self.plan_once();
            let changed = self.apply_actions(&p.actions);
            if changed {
                spins += 1;
                assert!(
                    spins < 100,
                    "planner keeps changing things at {}",
                    self.secs_now()
                );
                continue;
            }
            spins = 0;
            let next_change = self.queue.iter().map(|(t, _, _)| *t).min();
            let next = [next_change, p.wake_at]
                .into_iter()
                .flatten()
                .filter(|t| *t <= until)
                .min();
            match next {
                Some(t) => {
                    assert!(t > self.now, "planner asked to wake at or before now");
                    self.now = t;
                }
                None if self.now >= until => break,
                None => self.now = until,
            }
        }
    }

    /// One planner call without applying anything.
    pub fn peek(&self) -> crate::planner::Plan {
        plan(PlanInput {
            pod: &self.pod,
            observation: &self.obs,
            backoff: &self.backoff,
            backoff_config: &self.cfg,
            previous_status: self.prev.as_ref(),
            now: self.now,
        })
    }

    fn plan_once(&mut self) -> crate::planner::Plan {
        let p = self.peek();
        self.plans += 1;
        self.backoff = p.backoff.clone();
        let t = self.secs_now();
        if self.prev.as_ref() != Some(&p.status) {
            self.history.push((t, p.status.clone()));
        }
        self.prev = Some(p.status.clone());
        for a in &p.actions {
            self.log.push((t, a.clone()));
        }
        p
    }

    fn apply_due(&mut self) {
        loop {
            let Some(idx) = self
                .queue
                .iter()
                .enumerate()
                .filter(|(_, (t, _, _))| *t <= self.now)
                .min_by_key(|(_, (t, s, _))| (*t, *s))
                .map(|(i, _)| i)
            else {
                return;
            };
            let (_, _, change) = self.queue.remove(idx);
            self.apply_change(change);
        }
    }

    fn apply_change(&mut self, change: Change) {
        let now = self.now;
        match change {
            Change::Exit {
                name,
                id,
                code,
                signal,
            } => {
                let c = self.obs.containers.entry(name).or_default();
                if let Some(inst) = c.current.as_mut()
                    && inst.id == id
                    && let InstanceState::Running { started_at } = inst.state
                {
                    inst.state = InstanceState::Exited(Exited {
                        exit_code: code,
                        signal,
                        reason: if code == 0 { "Completed" } else { "Error" }.to_string(),
                        message: None,
                        started_at: Some(started_at),
                        finished_at: now,
                    });
                    inst.probes = Default::default();
                }
            }
            Change::PostStartDone { name, id, ok } => {
                let c = self.obs.containers.entry(name).or_default();
                if let Some(inst) = c.current.as_mut().filter(|i| i.id == id) {
                    c.in_flight = false;
                    inst.post_start = if ok {
                        HookState::Succeeded { finished_at: now }
                    } else {
                        HookState::Failed {
                            finished_at: now,
                            message: "hook exited with 1".to_string(),
                        }
                    };
                }
            }
            Change::PreStopDone { name, id, ok } => {
                let c = self.obs.containers.entry(name).or_default();
                if c.current.as_ref().is_some_and(|i| i.id == id) {
                    c.pre_stop = if ok {
                        HookState::Succeeded { finished_at: now }
                    } else {
                        HookState::Failed {
                            finished_at: now,
                            message: "timeout".to_string(),
                        }
                    };
                }
            }
            Change::Probe {
                name,
                id,
                kind,
                result,
            } => {
                let c = self.obs.containers.entry(name).or_default();
                if let Some(inst) = c.current.as_mut()
                    && inst.id == id
                    && matches!(inst.state, InstanceState::Running { .. })
                {
                    match kind {
                        ProbeKind::Startup => inst.probes.startup = Some(result),
                        ProbeKind::Readiness => inst.probes.readiness = Some(result),
                        ProbeKind::Liveness => inst.probes.liveness = Some(result),
                    }
                }
            }
        }
    }

    fn current_program(&self, name: &str) -> Program {
        let run = self.runs.get(name).copied().unwrap_or(1).saturating_sub(1);
        self.programs
            .get(name)
            .and_then(|p| p.get(run.min(p.len().saturating_sub(1))))
            .cloned()
            .unwrap_or_default()
    }

    fn spec_image(&self, name: &str) -> String {
        let spec = self.pod.spec.as_ref().expect("spec");
        spec.init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .find(|c| c.name == name)
            .and_then(|c| c.image.clone())
            .unwrap_or_default()
    }

    fn has_post_start(&self, name: &str) -> bool {
        let spec = self.pod.spec.as_ref().expect("spec");
        spec.init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .find(|c| c.name == name)
            .and_then(|c| c.lifecycle.as_ref())
            .is_some_and(|l| l.post_start.is_some())
    }

    /// Makes `inst` the current instance, as the worker does after start + postStart.
    fn install(&mut self, name: &str, inst: Instance) {
        let program = self.current_program(name);
        let c = self.obs.containers.entry(name.to_string()).or_default();
        if let Some(old) = c.current.take() {
            c.restart_count += 1;
            if let InstanceState::Exited(e) = old.state {
                c.previous = Some(e);
            }
        }
        c.in_flight = false;
        c.stop = None;
        c.pre_stop = HookState::NotRun;
        c.last_start_error = None;
        let InstanceState::Running { started_at } = inst.state else {
            c.current = Some(inst);
            return;
        };
        let id = inst.id.clone();
        c.current = Some(inst);
        if let Some(run) = program.run_for {
            let finished = started_at.max(self.now) + run;
            self.schedule(
                finished,
                Change::Exit {
                    name: name.to_string(),
                    id: id.clone(),
                    code: program.exit_code,
                    signal: None,
                },
            );
        }
        for (list, kind) in [
            (&program.startup, ProbeKind::Startup),
            (&program.readiness, ProbeKind::Readiness),
            (&program.liveness, ProbeKind::Liveness),
        ] {
            for (after, result) in list {
                self.schedule(
                    started_at + *after,
                    Change::Probe {
                        name: name.to_string(),
                        id: id.clone(),
                        kind,
                        result: *result,
                    },
                );
            }
        }
    }

    /// Executes actions; returns whether the observation changed.
    fn apply_actions(&mut self, actions: &[Action]) -> bool {
        let mut changed = false;
        let now = self.now;
        for a in actions {
            match a {
                Action::Event(_) => {}
                Action::CreateSandbox => {
                    self.obs.sandbox = SandboxState::Ready;
                    changed = true;
                }
                Action::StopSandbox => {
                    self.obs.sandbox = SandboxState::Stopped;
                    changed = true;
                }
                Action::Done => self.done = true,
                Action::BeginTermination { cause, grace } => {
                    self.obs.termination = Some(Termination {
                        cause: *cause,
                        started_at: now,
                        grace: *grace,
                    });
                    changed = true;
                }
                Action::StartContainer { name, .. } => {
                    changed = true;
                    *self.runs.entry(name.clone()).or_default() += 1;
                    let program = self.current_program(name);
                    let image = self.spec_image(name);
                    let run = self.runs[name];
                    if let Some((reason, message)) = program.start_error {
                        let c = self.obs.containers.entry(name.clone()).or_default();
                        c.last_start_error = Some(StartError {
                            reason: reason.to_string(),
                            message: message.to_string(),
                        });
                        continue;
                    }
                    // Like the worker: the instance is current as soon as it runs; a
                    // postStart hook keeps the start in flight until it returns.
                    let hook = self.has_post_start(name);
                    let id = format!("tandem://{name}-{run}");
                    let inst = Instance {
                        id: id.clone(),
                        image,
                        state: InstanceState::Running { started_at: now },
                        post_start: if hook {
                            HookState::Running { since: now }
                        } else {
                            HookState::NotRun
                        },
                        probes: Default::default(),
                    };
                    self.install(name, inst);
                    if hook {
                        let (d, ok) = program.post_start.unwrap_or((Duration::ZERO, true));
                        self.obs
                            .containers
                            .entry(name.clone())
                            .or_default()
                            .in_flight = true;
                        self.schedule(
                            now + d,
                            Change::PostStartDone {
                                name: name.clone(),
                                id,
                                ok,
                            },
                        );
                    }
                }
                Action::RunPreStop { name, timeout } => {
                    changed = true;
                    let program = self.current_program(name);
                    let c = self.obs.containers.entry(name.clone()).or_default();
                    c.pre_stop = HookState::Running { since: now };
                    let id = c.current.as_ref().map(|i| i.id.clone()).unwrap_or_default();
                    let ok = program.pre_stop <= *timeout;
                    self.schedule(
                        now + program.pre_stop.min(*timeout),
                        Change::PreStopDone {
                            name: name.clone(),
                            id,
                            ok,
                        },
                    );
                }
                Action::StopContainer { name, grace, .. } => {
                    changed = true;
                    let program = self.current_program(name);
                    let c = self.obs.containers.entry(name.clone()).or_default();
                    assert!(c.stop.is_none(), "second stop for {name}");
                    c.stop = Some(StopIssued {
                        at: now,
                        grace: *grace,
                    });
                    let id = c.current.as_ref().map(|i| i.id.clone()).unwrap_or_default();
                    let (after, code, signal) = match program.on_term {
                        OnTerm::Exit { after, code } if after < *grace => (after, code, None),
                        OnTerm::Die => (Duration::ZERO, 143, Some(15)),
                        _ => (*grace, 137, Some(9)),
                    };
                    self.schedule(
                        now + after,
                        Change::Exit {
                            name: name.clone(),
                            id,
                            code,
                            signal,
                        },
                    );
                }
            }
        }
        changed
    }

    // ---- test-side changes ----

    /// Deletes the pod now (graceful; grace defaults to the spec's TGPS).
    pub fn delete(&mut self, grace: Option<i64>) {
        let tgps = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        self.pod.metadata.deletion_timestamp = Some(Time(self.now));
        self.pod.metadata.deletion_grace_period_seconds = Some(grace.unwrap_or(tgps));
    }

    pub fn set_image(&mut self, name: &str, image: &str) {
        let spec = self.pod.spec.as_mut().expect("spec");
        for c in spec
            .init_containers
            .iter_mut()
            .flatten()
            .chain(spec.containers.iter_mut())
        {
            if c.name == name {
                c.image = Some(image.to_string());
            }
        }
    }

    // ---- queries ----

    pub fn status(&self) -> &PodStatus {
        self.prev.as_ref().expect("planned at least once")
    }

    pub fn phase(&self) -> String {
        self.status().phase.clone().unwrap_or_default()
    }

    pub fn cs(&self, name: &str) -> ContainerStatus {
        cs_of(self.status(), name)
    }

    pub fn condition(&self, type_: &str) -> PodCondition {
        condition_of(self.status(), type_)
    }

    /// Times at which the container was started.
    pub fn starts(&self, name: &str) -> Vec<f64> {
        self.log
            .iter()
            .filter_map(|(t, a)| match a {
                Action::StartContainer { name: n, .. } if n == name => Some(*t),
                _ => None,
            })
            .collect()
    }

    /// (time, grace seconds, reason) of stops of the container.
    pub fn stops(&self, name: &str) -> Vec<(f64, u64, crate::planner::StopReason)> {
        self.log
            .iter()
            .filter_map(|(t, a)| match a {
                Action::StopContainer {
                    name: n,
                    grace,
                    reason,
                } if n == name => Some((*t, grace.as_secs(), reason.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn events(&self) -> Vec<(f64, Event)> {
        self.log
            .iter()
            .filter_map(|(t, a)| match a {
                Action::Event(e) => Some((*t, e.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn actions_named(&self, pred: impl Fn(&Action) -> bool) -> Vec<f64> {
        self.log
            .iter()
            .filter(|(_, a)| pred(a))
            .map(|(t, _)| *t)
            .collect()
    }

    /// Distinct phases in the order they were reported.
    pub fn phases(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (_, s) in &self.history {
            let p = s.phase.clone().unwrap_or_default();
            if out.last() != Some(&p) {
                out.push(p);
            }
        }
        out
    }

    pub fn finished_at(&self, name: &str) -> Timestamp {
        match self
            .obs
            .containers
            .get(name)
            .and_then(|c| c.current.as_ref())
            .map(|i| &i.state)
        {
            Some(InstanceState::Exited(e)) => e.finished_at,
            other => panic!("{name} has not exited: {other:?}"),
        }
    }

    pub fn restart_count(&self, name: &str) -> u32 {
        self.obs.containers.get(name).map_or(0, |c| c.restart_count)
    }
}

pub fn at(s: f64) -> Timestamp {
    t0() + Duration::from_secs_f64(s)
}

pub fn cs_of(status: &PodStatus, name: &str) -> ContainerStatus {
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .find(|s| s.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no status for {name}"))
}

pub fn condition_of(status: &PodStatus, type_: &str) -> PodCondition {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
        .cloned()
        .unwrap_or_else(|| panic!("no condition {type_}"))
}

/// `running`, `waiting:<reason>`, `terminated:<reason>:<code>` for compact assertions.
pub fn state_of(s: &ContainerStatus) -> String {
    let st = s.state.clone().unwrap_or_default();
    if st.running.is_some() {
        "running".to_string()
    } else if let Some(w) = st.waiting {
        format!("waiting:{}", w.reason.unwrap_or_default())
    } else if let Some(t) = st.terminated {
        format!(
            "terminated:{}:{}",
            t.reason.unwrap_or_default(),
            t.exit_code
        )
    } else {
        "none".to_string()
    }
}
