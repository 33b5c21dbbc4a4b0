//! `decide(spec, status, observations, now) -> Plan`: the whole canary state machine,
//! pure. It takes no client, does no I/O and never reads the clock; an executor gathers
//! the observations (readiness, revision, webhook and metric results), calls it, and
//! applies the plan: routes, scaling, promotion, hooks, events, status.

use super::spec::{CanarySpec, HookType};
use super::state::{CanaryStatus, Event, Phase, Severity, MAX_EVENTS};
use std::cell::Cell;

/// Outcome of the checks run for one analysis step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checks {
    /// Halt messages of failed checks (Flagger's wording); empty means all passed.
    pub failures: Vec<String>,
}

/// Manual commands (`gitcanary promote|abort|retry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manual {
    /// Open every confirm gate now.
    Promote,
    /// Roll back now.
    Abort,
    /// Analyse the current revision again, even after a failure.
    Retry,
}

/// What the executor saw this tick.
#[derive(Clone, Debug, Default)]
pub struct Observations {
    /// The target's revision: template hash plus tracked config checksums.
    pub revision: String,
    /// Whether the `-primary` workload exists.
    pub primary_exists: bool,
    /// Primary ready (per `primaryReadyThreshold`).
    pub primary_ready: bool,
    /// Why the canary (target) is not ready (per `canaryReadyThreshold`); `None` when ready.
    pub canary_not_ready: Option<String>,
    /// Since when the canary workload has lacked minimum availability (its `Available`
    /// condition is False with reason `MinimumReplicasUnavailable`); `None` otherwise.
    pub canary_unavailable_since: Option<f64>,
    /// The target's `spec.replicas` as Git sets it (1 when unset).
    pub target_replicas: u32,
    /// The primary's `spec.replicas`, when the primary exists.
    pub primary_replicas: Option<u32>,
    /// The executor asked the confirm-rollout and rollback gates in this step.
    pub gates_checked: bool,
    /// Pre-rollout results, when they were run for this tick.
    pub pre_rollout: Option<Checks>,
    /// Rollout webhook and metric results, when they were run for this tick.
    pub analysis: Option<Checks>,
    /// Gate results: `None` when the spec has no such gate.
    pub confirm_rollout: Option<bool>,
    /// `confirm-traffic-increase` result.
    pub confirm_traffic_increase: Option<bool>,
    /// `confirm-promotion` result.
    pub confirm_promotion: Option<bool>,
    /// A `rollback` webhook answered 2xx.
    pub rollback_requested: bool,
    /// Whether `maxConcurrentCanaries` leaves room for this one.
    pub slot_available: bool,
    /// A manual command.
    pub manual: Option<Manual>,
}

/// What the executor must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create `<target>-primary` (and its configs, HPA, Services) from the target.
    CreatePrimary,
    /// Route: weights in percent, optionally mirroring to the canary; `ab` applies the
    /// spec's match rules.
    Route {
        /// Primary weight.
        primary: u32,
        /// Canary weight.
        canary: u32,
        /// Mirror to the canary.
        mirror: bool,
        /// Apply `match` rules (A/B).
        ab: bool,
    },
    /// Scale the target (canary) up from zero.
    ScaleCanaryUp,
    /// Scale the target (canary) to zero.
    ScaleCanaryDown,
    /// Copy the target's template and configs to the primary.
    Promote,
    /// Call the webhooks of a type (fire and forget).
    RunHooks(HookType),
    /// Set the primary's replicas (Git changed the target's `spec.replicas`).
    ScalePrimary(u32),
}

/// What to do and the status to persist.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The new status.
    pub status: CanaryStatus,
    /// Actions, in order.
    pub actions: Vec<Action>,
    /// New events, also appended to the status.
    pub events: Vec<Event>,
    /// The manual command was not acted on yet and stays for a later step (a promote
    /// waiting for the next gate it opens, an abort during a restart).
    pub manual_pending: bool,
}

/// Which checks the executor should run before calling `decide` at `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Nothing to run.
    Nothing,
    /// The pre-rollout webhooks (first step of an analysis).
    PreRollout,
    /// Rollout webhooks and metrics.
    Analysis,
}

/// Whether the confirm-rollout and rollback gates are due while a canary waits to
/// start: once per analysis interval, as Flagger's per-canary scheduler calls them on
/// each tick of its interval timer (pkg/controller/scheduler.go), not on every tick of
/// gitcanary's engine. In `Progressing`, the rollback gate runs with each analysis step.
pub fn gates_due(spec: &CanarySpec, status: &CanaryStatus, now: f64) -> bool {
    now >= status.last_gate_time + spec.analysis.interval.as_secs_f64()
}

/// The confirm gate the next analysis step consults, as Flagger's scheduler does:
/// `confirm-traffic-increase` before a weight increase, `confirm-promotion` once the
/// last weight or iteration has passed.
pub fn step_gate(spec: &CanarySpec, status: &CanaryStatus) -> Option<HookType> {
    let a = &spec.analysis;
    if a.iterations > 0 {
        (status.iterations >= a.iterations).then_some(HookType::ConfirmPromotion)
    } else if status.canary_weight < max_weight(spec) {
        Some(HookType::ConfirmTrafficIncrease)
    } else {
        Some(HookType::ConfirmPromotion)
    }
}

/// Whether the first metric check of an analysis may wait for the new revision's
/// traffic, rather than fail with "no values found": at most one more interval (and at
/// least 10s) after it fell due.
pub fn first_check_may_wait(spec: &CanarySpec, status: &CanaryStatus, now: f64) -> bool {
    let interval = spec.analysis.interval.as_secs_f64();
    status.analysis_start > 0.0
        && status.last_step_time <= status.analysis_start
        && now < status.analysis_start + interval + interval.max(10.0)
}

/// The first 12 hex digits of a revision, as messages print it.
fn short(revision: &str) -> &str {
    &revision[..revision.len().min(12)]
}

/// Whether an analysis step is due, and which checks it needs.
pub fn due(spec: &CanarySpec, status: &CanaryStatus, now: f64) -> Due {
    if spec.suspend
        || spec.skip_analysis
        || !matches!(status.phase, Phase::Progressing | Phase::WaitingPromotion)
    {
        return Due::Nothing;
    }
    if now < status.last_step_time + spec.analysis.interval.as_secs_f64() {
        return Due::Nothing;
    }
    if status.canary_weight == 0 && status.iterations == 0 && !status.mirrored {
        Due::PreRollout
    } else {
        Due::Analysis
    }
}

/// Whether a canary in a resting phase (`Initialized`, `Succeeded`, `Failed`, `Waiting`)
/// would start an analysis of `revision`: the executor claims a `maxConcurrentCanaries`
/// slot and asks the confirm-rollout gate only then.
pub fn may_start(status: &CanaryStatus, revision: &str, manual: Option<Manual>) -> bool {
    let retry = manual == Some(Manual::Retry) && status.phase == Phase::Failed;
    let changed = revision != status.last_applied_spec || retry || status.phase == Phase::Waiting;
    let resting = matches!(
        status.phase,
        Phase::Initialized | Phase::Succeeded | Phase::Failed | Phase::Waiting
    );
    resting && changed && (revision != status.last_promoted_spec || retry)
}

/// Whether a phase holds a `maxConcurrentCanaries` slot.
pub fn analysing(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::Progressing | Phase::WaitingPromotion | Phase::Promoting | Phase::Finalising
    )
}

struct Builder<'a> {
    spec: &'a CanarySpec,
    status: CanaryStatus,
    actions: Vec<Action>,
    events: Vec<Event>,
    now: f64,
    /// The manual command was acted on.
    manual_used: Cell<bool>,
}

impl Builder<'_> {
    /// Whether a confirm gate lets the canary go on. `gitcanary promote` opens it; a
    /// gate that was not asked in this step (not due) holds, as a closed one does.
    fn approved(&self, obs: &Observations, kind: HookType, result: Option<bool>) -> bool {
        if !self.spec.has_hook(kind) {
            return true;
        }
        if obs.manual == Some(Manual::Promote) {
            self.manual_used.set(true);
            return true;
        }
        result == Some(true)
    }

    fn event(&mut self, severity: Severity, message: String) {
        self.events.push(Event {
            severity,
            message,
            at: self.now,
        });
    }

    fn phase(&mut self, p: Phase) {
        if self.status.phase != p {
            self.status.phase = p;
            self.status.last_transition_time = self.now;
            self.status.message = p.message().into();
        }
    }

    /// Git is back at the revision the primary runs (a revert after a rollback): nothing
    /// is analysed, and the status says what serves the traffic.
    fn back_at_promoted(&mut self, revision: &str) {
        let (id, primary) = (
            self.spec.id(),
            format!("{}-primary.{}", self.spec.target, self.spec.namespace),
        );
        let rev = short(revision);
        self.event(
            Severity::Info,
            format!("{id} revision {rev} equals the promoted revision; {primary} serves it, nothing to analyse"),
        );
        let was = self.status.last_applied_spec.clone();
        self.status.last_applied_spec = revision.to_string();
        self.status.message = if self.status.phase == Phase::Failed {
            format!(
                "{primary} serves the promoted revision {rev}; Git no longer holds the rolled-back revision {}",
                short(&was)
            )
        } else {
            format!("{primary} serves the promoted revision {rev}")
        };
    }

    fn route(&mut self, primary: u32, canary: u32, mirror: bool, ab: bool) {
        self.actions.push(Action::Route {
            primary,
            canary,
            mirror,
            ab,
        });
        self.status.canary_weight = canary;
        self.status.mirrored = mirror;
    }

    fn rollback(&mut self) {
        if self.status.failed_checks >= self.spec.analysis.threshold {
            let msg = format!(
                "Rolling back {} failed checks threshold reached {}",
                self.spec.id(),
                self.status.failed_checks
            );
            self.event(Severity::Warn, msg);
        }
        self.route(100, 0, false, false);
        let msg = format!("Canary failed! Scaling down {}", self.spec.id());
        self.event(Severity::Warn, msg);
        self.actions.push(Action::ScaleCanaryDown);
        self.phase(Phase::Failed);
        self.status.iterations = 0;
        self.actions.push(Action::RunHooks(HookType::PostRollout));
    }

    fn promote(&mut self) {
        let msg = format!(
            "Copying {} template spec to {}-primary.{}",
            self.spec.target_id(),
            self.spec.target,
            self.spec.namespace
        );
        self.event(Severity::Info, msg);
        self.actions.push(Action::Promote);
        self.phase(Phase::Promoting);
    }

    /// Finishes the plan. A manual command that was not used stays pending only while
    /// a later step can still act on it; otherwise (nothing to promote, abort or retry)
    /// it is dropped.
    fn finish(mut self, manual: Option<Manual>) -> Plan {
        let s = self.spec;
        let manual_pending = !self.manual_used.get()
            && match (manual, self.status.phase) {
                (Some(Manual::Promote), Phase::Waiting) => s.has_hook(HookType::ConfirmRollout),
                (Some(Manual::Promote), Phase::Progressing | Phase::WaitingPromotion) => {
                    s.has_hook(HookType::ConfirmTrafficIncrease)
                        || s.has_hook(HookType::ConfirmPromotion)
                }
                (Some(Manual::Abort), Phase::Progressing | Phase::WaitingPromotion) => true,
                _ => false,
            };
        self.status.events.extend(self.events.iter().cloned());
        let n = self.status.events.len();
        if n > MAX_EVENTS {
            self.status.events.drain(..n - MAX_EVENTS);
        }
        Plan {
            status: self.status,
            actions: self.actions,
            events: self.events,
            manual_pending,
        }
    }
}

/// The next canary weight after `current`: the next of `stepWeights`, or `current +
/// stepWeight`, capped at `maxWeight`.
pub fn next_weight(spec: &CanarySpec, current: u32) -> u32 {
    let a = &spec.analysis;
    let max = if a.step_weights.is_empty() {
        a.max_weight
    } else {
        a.max_weight.max(*a.step_weights.last().unwrap_or(&0))
    };
    let next = if a.step_weights.is_empty() {
        current + a.step_weight
    } else {
        a.step_weights
            .iter()
            .copied()
            .find(|w| *w > current)
            .unwrap_or(max)
    };
    next.min(max)
}

fn max_weight(spec: &CanarySpec) -> u32 {
    let a = &spec.analysis;
    if a.step_weights.is_empty() {
        a.max_weight
    } else {
        *a.step_weights.last().unwrap_or(&a.max_weight)
    }
}

/// Decides one step of a canary.
pub fn decide(spec: &CanarySpec, status: &CanaryStatus, obs: &Observations, now: f64) -> Plan {
    let mut b = Builder {
        spec,
        status: status.clone(),
        actions: vec![],
        events: vec![],
        now,
        manual_used: Cell::new(false),
    };
    if !spec.suspend {
        if obs.gates_checked {
            b.status.last_gate_time = now;
        }
        scale_primary(&mut b, obs);
        match status.phase {
            Phase::Initializing => initialize(&mut b, obs),
            Phase::Initialized | Phase::Succeeded | Phase::Failed | Phase::Waiting => {
                start(&mut b, status, obs)
            }
            Phase::Progressing | Phase::WaitingPromotion => progress(&mut b, status, obs),
            Phase::Promoting => promote_traffic(&mut b, obs),
            Phase::Finalising => {
                b.actions.push(Action::ScaleCanaryDown);
                b.status.last_promoted_spec = status.last_applied_spec.clone();
                b.status.iterations = 0;
                b.phase(Phase::Succeeded);
                b.actions.push(Action::RunHooks(HookType::PostRollout));
                b.event(
                    Severity::Info,
                    format!("Promotion completed! Scaling down {}", spec.target_id()),
                );
            }
        }
    }
    b.finish(obs.manual)
}

/// A `spec.replicas` change in Git reaches the primary at once, without an analysis
/// (it is no new revision). With an autoscaler, the primary's HPA owns its replicas,
/// as in Flagger's `Promote`, which copies them only when `autoscalerRef` is unset.
fn scale_primary(b: &mut Builder, obs: &Observations) {
    if b.status.phase == Phase::Initializing || b.spec.autoscaler.is_some() {
        return;
    }
    if obs
        .primary_replicas
        .is_some_and(|p| p != obs.target_replicas)
    {
        b.actions.push(Action::ScalePrimary(obs.target_replicas));
    }
}

fn initialize(b: &mut Builder, obs: &Observations) {
    if !obs.primary_exists {
        b.actions.push(Action::CreatePrimary);
    } else if obs.primary_ready {
        b.route(100, 0, false, false);
        b.actions.push(Action::ScaleCanaryDown);
        b.status.last_applied_spec = obs.revision.clone();
        b.status.last_promoted_spec = obs.revision.clone();
        b.phase(Phase::Initialized);
        let msg = format!("Initialization done! {}", b.spec.id());
        b.event(Severity::Info, msg);
    }
}

/// A resting canary: starts the analysis of a new revision when a slot is free and
/// the confirm-rollout gate approves.
fn start(b: &mut Builder, status: &CanaryStatus, obs: &Observations) {
    let spec = b.spec;
    if obs.manual == Some(Manual::Retry) && status.phase == Phase::Failed {
        b.manual_used.set(true);
    }
    if !may_start(status, &obs.revision, obs.manual) {
        if obs.revision != status.last_applied_spec || status.phase == Phase::Waiting {
            // Back to what the primary already runs: nothing to analyse.
            if status.phase == Phase::Waiting {
                b.phase(Phase::Succeeded);
            }
            b.back_at_promoted(&obs.revision);
        }
        return;
    }
    if !obs.slot_available {
        if status.phase != Phase::Waiting {
            b.event(
                Severity::Info,
                format!(
                    "Halt {} advancement waiting for a free slot (maxConcurrentCanaries)",
                    spec.id()
                ),
            );
        }
        b.phase(Phase::Waiting);
        return;
    }
    if !b.approved(obs, HookType::ConfirmRollout, obs.confirm_rollout) {
        if status.phase != Phase::Waiting {
            b.event(
                Severity::Info,
                format!("Halt {} advancement waiting for approval", spec.id()),
            );
        }
        b.phase(Phase::Waiting);
        return;
    }
    b.event(
        Severity::Info,
        format!("New revision detected! Scaling up {}", spec.target_id()),
    );
    b.actions.push(Action::ScaleCanaryUp);
    b.status.last_applied_spec = obs.revision.clone();
    b.status.failed_checks = 0;
    b.status.iterations = 0;
    b.status.canary_weight = 0;
    b.status.mirrored = false;
    b.status.last_step_time = b.now;
    b.phase(Phase::Progressing);
}

/// Promotion: traffic moves back to the updated primary, in steps or at once.
fn promote_traffic(b: &mut Builder, obs: &Observations) {
    // Never route to a primary that is not ready (flagger #1898).
    if !obs.primary_ready {
        return;
    }
    let step = b.spec.analysis.step_weight_promotion;
    if step == 0 {
        b.event(Severity::Info, "Routing all traffic to primary".into());
        b.route(100, 0, false, false);
        b.phase(Phase::Finalising);
    } else {
        let primary = (100 - b.status.canary_weight + step).min(100);
        b.route(primary, 100 - primary, false, false);
        let msg = format!("Advance {} primary weight {primary}", b.spec.id());
        b.event(Severity::Info, msg);
        if primary == 100 {
            b.phase(Phase::Finalising);
        }
    }
}

/// Whether a canary that is not ready has run out of time, counted as Flagger counts
/// it (fluxcd/flagger pkg/canary/deployment_ready.go, `isDeploymentReady`, called by
/// `IsCanaryReady` from `advanceCanary` in pkg/controller/scheduler.go):
/// - a not-ready canary is "retriable" (wait, no rollback) unless its Deployment's
///   `Available` condition is False with reason `MinimumReplicasUnavailable` and that
///   condition's `lastUpdateTime` plus `progressDeadlineSeconds` lies in the past (or
///   Kubernetes itself marked `Progressing` as `ProgressDeadlineExceeded`, which the
///   local runtime never does);
/// - a non-retriable error rolls back at once ("Rolling back ... progress deadline
///   exceeded").
///
/// So the clock starts when the workload lost availability, not when the phase began:
/// a long healthy analysis survives a short hiccup. The local runtime refreshes
/// `lastUpdateTime` on every status write, so the executor passes the condition's
/// `lastTransitionTime`, which is what Kubernetes' `lastUpdateTime` holds for a
/// condition whose status and reason have not changed.
fn deadline_exceeded(spec: &CanarySpec, obs: &Observations, now: f64) -> bool {
    obs.canary_unavailable_since
        .is_some_and(|since| now - since > spec.progress_deadline.as_secs_f64())
}

fn progress(b: &mut Builder, status: &CanaryStatus, obs: &Observations) {
    let spec = b.spec;
    let now = b.now;
    if obs.revision != status.last_applied_spec {
        b.route(100, 0, false, false);
        b.status.failed_checks = 0;
        b.status.iterations = 0;
        b.status.last_applied_spec = obs.revision.clone();
        b.status.last_step_time = now;
        b.phase(Phase::Progressing);
        b.event(
            Severity::Info,
            format!(
                "New revision detected! Restarting analysis for {}",
                spec.target_id()
            ),
        );
        return;
    }
    if obs.rollback_requested || obs.manual == Some(Manual::Abort) {
        let why = if obs.manual == Some(Manual::Abort) {
            b.manual_used.set(true);
            "aborted by gitcanary abort"
        } else {
            "manual webhook invoked"
        };
        b.event(Severity::Warn, format!("Rolling back {} {why}", spec.id()));
        b.rollback();
        return;
    }
    if let Some(reason) = &obs.canary_not_ready {
        if deadline_exceeded(spec, obs, now) {
            b.event(
                Severity::Error,
                format!(
                    "Rolling back {} progress deadline exceeded {reason}",
                    spec.id()
                ),
            );
            b.rollback();
        }
        return;
    }
    if spec.skip_analysis {
        b.route(100, 0, false, false);
        b.promote();
        b.actions.push(Action::ScaleCanaryDown);
        b.status.last_promoted_spec = status.last_applied_spec.clone();
        b.phase(Phase::Succeeded);
        b.event(
            Severity::Info,
            format!(
                "Promotion completed! Canary analysis was skipped for {}",
                spec.target_id()
            ),
        );
        return;
    }
    if status.failed_checks >= spec.analysis.threshold {
        b.rollback();
        return;
    }
    // A manual promote opens the gate at once: the analysis already passed.
    if status.phase == Phase::WaitingPromotion && obs.manual == Some(Manual::Promote) {
        b.manual_used.set(true);
        b.promote();
        return;
    }
    let checks = match (&obs.pre_rollout, &obs.analysis) {
        (Some(pre), _) => {
            b.event(
                Severity::Info,
                format!("Starting canary analysis for {}", spec.target_id()),
            );
            b.status.analysis_start = now;
            pre
        }
        (None, Some(a)) => a,
        (None, None) => return, // not due yet
    };
    b.status.last_step_time = now;
    if !checks.failures.is_empty() {
        for f in &checks.failures {
            b.event(Severity::Warn, f.clone());
        }
        b.status.failed_checks += 1;
        if b.status.failed_checks >= spec.analysis.threshold {
            b.rollback();
        }
        return;
    }
    if obs.pre_rollout.is_some() && spec.has_hook(HookType::Rollout) {
        // Start the load with the analysis, not at its first check: by then the window
        // holds an interval of the new revision's traffic (Flagger's first check finds
        // none when its load tester starts late).
        b.actions.push(Action::RunHooks(HookType::Rollout));
    }
    if spec.analysis.iterations > 0 {
        iterate(b, status, obs);
    } else {
        shift_weight(b, status, obs);
    }
}

/// A passed step of a blue/green, A/B or mirroring analysis.
fn iterate(b: &mut Builder, status: &CanaryStatus, obs: &Observations) {
    let spec = b.spec;
    let a = &spec.analysis;
    let ab = a.match_rules.as_array().is_some_and(|m| !m.is_empty());
    if status.iterations < a.iterations {
        if ab {
            b.route(100, 0, false, true);
        } else if a.mirror && !status.mirrored {
            b.route(100, 0, true, false);
        }
        b.status.iterations += 1;
        b.event(
            Severity::Info,
            format!(
                "Advance {} canary iteration {}/{}",
                spec.id(),
                status.iterations + 1,
                a.iterations
            ),
        );
        return;
    }
    if !b.approved(obs, HookType::ConfirmPromotion, obs.confirm_promotion) {
        b.phase(Phase::WaitingPromotion);
        return;
    }
    if !ab && status.iterations == a.iterations {
        let msg = if a.mirror {
            "Stop traffic mirroring and route all traffic to canary"
        } else {
            "Routing all traffic to canary"
        };
        b.event(Severity::Info, msg.into());
        b.route(0, 100, false, false);
        b.status.iterations += 1;
        return;
    }
    b.promote();
}

/// A passed step of a progressive traffic shift.
fn shift_weight(b: &mut Builder, status: &CanaryStatus, obs: &Observations) {
    let spec = b.spec;
    if status.canary_weight < max_weight(spec) {
        if !b.approved(
            obs,
            HookType::ConfirmTrafficIncrease,
            obs.confirm_traffic_increase,
        ) {
            return;
        }
        let next = next_weight(spec, status.canary_weight);
        if spec.analysis.mirror && status.canary_weight == 0 && !status.mirrored {
            b.route(100, 0, true, false);
            return;
        }
        b.route(100u32.saturating_sub(next), next, false, false);
        b.event(
            Severity::Info,
            format!("Advance {} canary weight {next}", spec.id()),
        );
        return;
    }
    if !b.approved(obs, HookType::ConfirmPromotion, obs.confirm_promotion) {
        b.phase(Phase::WaitingPromotion);
        return;
    }
    b.promote();
}
