//! Applying a plan: the generated primary and its configs, the route objects, scaling,
//! routes and hooks, in the plan's order; then events, Prometheus metrics and the
//! status. Target writes and status writes run on the engine's I/O thread.

use super::*;
use crate::canary::router::Routes;
use decide::{Action, Plan};
use observe::Seen;

impl Core {
    /// Applies a plan's actions, in order.
    pub(super) async fn apply(
        self: &Arc<Self>,
        c: &Arc<CanarySpec>,
        plan: &Plan,
        seen: &Seen,
    ) -> Result<(), String> {
        let mut changed_store = false;
        for action in &plan.actions {
            match action {
                Action::Route {
                    primary,
                    canary,
                    mirror,
                    ab,
                } => {
                    let routes = Routes {
                        primary: *primary,
                        canary: *canary,
                        mirror: *mirror,
                        ab: *ab,
                    };
                    self.router
                        .set_routes(c, routes)
                        .await
                        .map_err(|e| e.to_string())?
                }
                Action::RunHooks(kind) => {
                    for w in c.analysis.webhooks.iter().filter(|w| w.kind == *kind) {
                        let _ = self
                            .call_hook(c, w, plan.status.phase, &seen.obs.revision)
                            .await;
                    }
                }
                Action::CreatePrimary
                | Action::Promote
                | Action::ScaleCanaryUp
                | Action::ScaleCanaryDown
                | Action::ScalePrimary(_) => {
                    let (core, spec, target, action) =
                        (self.clone(), c.clone(), seen.target.clone(), action.clone());
                    let handle = tokio::runtime::Handle::current();
                    self.blocking(move || core.write_action(&spec, &target, &action, &handle))
                        .await??;
                    changed_store = true;
                }
            }
        }
        if changed_store {
            self.store_changed().await;
        }
        Ok(())
    }

    /// The target writes of one action. The route objects are written here too, on
    /// the I/O thread (`handle` runs the router's future): the local router's are
    /// files.
    fn write_action(
        &self,
        c: &CanarySpec,
        target: &Value,
        action: &Action,
        handle: &tokio::runtime::Handle,
    ) -> Result<(), String> {
        let _writing = lock(&self.writes);
        match action {
            Action::CreatePrimary | Action::Promote => {
                self.write_primary(c, target)?;
                handle
                    .block_on(self.router.reconcile(c, target))
                    .map_err(|e| e.to_string())
            }
            Action::ScaleCanaryUp => {
                let replicas = target["spec"]["replicas"].as_u64().unwrap_or(1) as u32;
                self.workloads
                    .scale(&c.namespace, &c.target, Some(replicas))
            }
            Action::ScaleCanaryDown => self.workloads.scale(&c.namespace, &c.target, Some(0)),
            Action::ScalePrimary(n) => {
                let key = deployment(&c.namespace, &format!("{}-primary", c.target));
                let Some(mut primary) = self.workloads.get(&key)? else {
                    return Ok(());
                };
                primary["spec"]["replicas"] = (*n).into();
                self.workloads.put_generated(&c.owner(), &[(key, primary)])
            }
            Action::Route { .. } | Action::RunHooks(_) => Ok(()),
        }
    }

    /// Logs the plan's events, sends them to event webhooks and alert providers, and
    /// sets the canary's Prometheus metrics.
    pub(super) async fn report(&self, c: &CanarySpec, plan: &Plan, seen: &Seen, now: f64) {
        let rev = &seen.obs.revision;
        for e in &plan.events {
            match e.severity {
                Severity::Info => tracing::info!(revision = %rev, "{}", e.message),
                _ => tracing::warn!(revision = %rev, "{}", e.message),
            }
        }
        self.notify_events(c, plan, rev).await;
        record_metrics(c, plan, &seen.status, now);
    }

    /// Writes the new status when it changed, then retires the manual command the
    /// step acted on (after the status, so a crash between them repeats the command
    /// rather than losing it).
    pub(super) fn persist(
        &self,
        c: &CanarySpec,
        mut plan: Plan,
        seen: &Seen,
    ) -> Result<(), String> {
        plan.status.target = c.target.clone();
        plan.status.service = c.service.clone();
        plan.status.revert_on_deletion = c.revert_on_deletion;
        if plan.status != seen.status {
            let path = status_path(&self.state_dir, &c.namespace, &c.name);
            crate::util::atomic::write(
                &path,
                &serde_json::to_vec_pretty(&plan.status).unwrap_or_default(),
            )
            .map_err(|e| e.to_string())?;
        }
        match seen.obs.manual {
            Some(cmd) if !plan.manual_pending => {
                super::super::commands::done(&self.state_dir, &c.namespace, &c.name, cmd)
                    .map_err(|e| e.to_string())
            }
            _ => Ok(()),
        }
    }

    /// Creates or updates `<target>-primary` and its `-primary` config copies from
    /// the target.
    fn write_primary(&self, c: &CanarySpec, target: &Value) -> Result<(), String> {
        let key = deployment(&c.namespace, &format!("{}-primary", c.target));
        let existing = self.workloads.get(&key).ok().flatten();
        let objects = crate::canary::primary::primary_objects(c, target, existing.as_ref(), |k| {
            self.workloads.get(k).ok().flatten()
        });
        self.workloads.put_generated(&c.owner(), &objects)
    }
}

/// The canary's weight, status and outcome metrics.
fn record_metrics(c: &CanarySpec, plan: &Plan, before: &CanaryStatus, now: f64) {
    let labels = [
        ("name", c.name.as_str()),
        ("namespace", c.namespace.as_str()),
    ];
    let reg = crate::metrics::global();
    reg.set(
        "gitcanary_canary_weight",
        "Canary traffic weight.",
        &labels,
        plan.status.canary_weight as f64,
    );
    // Flagger's encoding: 0 running, 1 successful, 2 failed.
    let code = match plan.status.phase {
        Phase::Succeeded | Phase::Initialized => 1.0,
        Phase::Failed => 2.0,
        _ => 0.0,
    };
    reg.set(
        "gitcanary_canary_status",
        "Canary status: 0 running, 1 successful, 2 failed.",
        &labels,
        code,
    );
    if plan.status.phase == before.phase {
        return;
    }
    let outcome = match plan.status.phase {
        Phase::Succeeded if before.phase == Phase::Finalising || c.skip_analysis => Some((
            "gitcanary_canary_successes_total",
            "Canary analyses that ended in promotion.",
        )),
        Phase::Failed => Some((
            "gitcanary_canary_failures_total",
            "Canary analyses that ended in rollback.",
        )),
        _ => None,
    };
    if let Some((counter, help)) = outcome {
        reg.inc(counter, help, &labels, 1.0);
        reg.set(
            "gitcanary_canary_duration_seconds",
            "Duration of the last canary analysis.",
            &labels,
            now - status_start(before),
        );
    }
}
