//! `decide(spec, status, observations, now) -> Plan`: the whole canary state machine,
//! pure. It takes no client, does no I/O and never reads the clock; an executor gathers
//! the observations (readiness, revision, webhook and metric results), calls it, and
//! applies the plan: routes, scaling, promotion, hooks, events, status.

use super::spec::{CanarySpec, HookType};
use super::state::{CanaryStatus, Event, Phase, Severity, MAX_EVENTS};

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
}

impl Builder<'_> {
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
        }
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

    fn finish(mut self) -> Plan {
        self.status.events.extend(self.events.iter().cloned());
        let n = self.status.events.len();
        if n > MAX_EVENTS {
            self.status.events.drain(..n - MAX_EVENTS);
        }
        Plan {
            status: self.status,
            actions: self.actions,
            events: self.events,
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
    };
    if spec.suspend {
        return b.finish();
    }
    let approved = |gate: Option<bool>| obs.manual == Some(Manual::Promote) || gate.unwrap_or(true);
    match status.phase {
        Phase::Initializing => {
            if !obs.primary_exists {
                b.actions.push(Action::CreatePrimary);
            } else if obs.primary_ready {
                b.route(100, 0, false, false);
                b.actions.push(Action::ScaleCanaryDown);
                b.status.last_applied_spec = obs.revision.clone();
                b.status.last_promoted_spec = obs.revision.clone();
                b.phase(Phase::Initialized);
                b.event(
                    Severity::Info,
                    format!("Initialization done! {}", spec.id()),
                );
            }
        }
        Phase::Initialized | Phase::Succeeded | Phase::Failed | Phase::Waiting => {
            let retry = obs.manual == Some(Manual::Retry) && status.phase == Phase::Failed;
            let changed =
                obs.revision != status.last_applied_spec || retry || status.phase == Phase::Waiting;
            if !changed {
                return b.finish();
            }
            if obs.revision == status.last_promoted_spec && !retry {
                // Back to what the primary already runs: nothing to analyse.
                b.status.last_applied_spec = obs.revision.clone();
                if status.phase == Phase::Waiting {
                    b.phase(Phase::Succeeded);
                }
                return b.finish();
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
                return b.finish();
            }
            if !approved(obs.confirm_rollout) {
                if status.phase != Phase::Waiting {
                    b.event(
                        Severity::Info,
                        format!("Halt {} advancement waiting for approval", spec.id()),
                    );
                }
                b.phase(Phase::Waiting);
                return b.finish();
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
            b.status.last_step_time = now;
            b.phase(Phase::Progressing);
        }
        Phase::Progressing | Phase::WaitingPromotion => progress(&mut b, obs, approved),
        Phase::Promoting => {
            // Never route to a primary that is not ready (flagger #1898).
            if !obs.primary_ready {
                return b.finish();
            }
            let step = spec.analysis.step_weight_promotion;
            if step == 0 {
                b.event(Severity::Info, "Routing all traffic to primary".into());
                b.route(100, 0, false, false);
                b.phase(Phase::Finalising);
            } else {
                let primary = (100 - status.canary_weight + step).min(100);
                b.route(primary, 100 - primary, false, false);
                b.event(
                    Severity::Info,
                    format!("Advance {} primary weight {primary}", spec.id()),
                );
                if primary == 100 {
                    b.phase(Phase::Finalising);
                }
            }
        }
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
    b.finish()
}

fn progress(b: &mut Builder, obs: &Observations, approved: impl Fn(Option<bool>) -> bool) {
    let spec = b.spec;
    let now = b.now;
    let status = b.status.clone();
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
            "aborted by gitcanary abort"
        } else {
            "manual webhook invoked"
        };
        b.event(Severity::Warn, format!("Rolling back {} {why}", spec.id()));
        b.rollback();
        return;
    }
    if let Some(reason) = &obs.canary_not_ready {
        if now - status.last_transition_time > spec.progress_deadline.as_secs_f64() {
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
        b.promote();
        return;
    }
    let checks = match (&obs.pre_rollout, &obs.analysis) {
        (Some(pre), _) => {
            b.event(
                Severity::Info,
                format!("Starting canary analysis for {}", spec.target_id()),
            );
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
    let a = &spec.analysis;
    let ab = a.iterations > 0 && a.match_rules.as_array().is_some_and(|m| !m.is_empty());
    if a.iterations > 0 {
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
        if !approved(obs.confirm_promotion) {
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
        return;
    }
    let max = max_weight(spec);
    if status.canary_weight < max {
        if !approved(obs.confirm_traffic_increase) {
            return;
        }
        let next = next_weight(spec, status.canary_weight);
        if a.mirror && status.canary_weight == 0 && !status.mirrored {
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
    if !approved(obs.confirm_promotion) {
        b.phase(Phase::WaitingPromotion);
        return;
    }
    b.promote();
}
