//! Applying a plan: the generated primary, its configs and Services in the store,
//! replica overrides in the runtime, routes on the proxy and hooks, in the plan's
//! order; then events, Prometheus metrics and the status. Store and status writes run
//! on the engine's I/O thread.

use super::*;
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
                    primary: _,
                    canary,
                    mirror,
                    ab,
                } => self.router.set_routes(c, *canary, *mirror, *ab),
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
                    self.blocking(move || core.write_action(&spec, &target, &action))
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

    /// The store and runtime writes of one action.
    fn write_action(&self, c: &CanarySpec, target: &Value, action: &Action) -> Result<(), String> {
        let _writing = lock(&self.writes);
        match action {
            Action::CreatePrimary | Action::Promote => {
                self.write_primary(c, target)?;
                self.write_services(c, target)
            }
            Action::ScaleCanaryUp => {
                let replicas = target["spec"]["replicas"].as_u64().unwrap_or(1) as u32;
                set_replica_override(&self.state_dir, &c.namespace, &c.target, Some(replicas))
                    .map_err(|e| e.to_string())
            }
            Action::ScaleCanaryDown => {
                set_replica_override(&self.state_dir, &c.namespace, &c.target, Some(0))
                    .map_err(|e| e.to_string())
            }
            Action::ScalePrimary(n) => {
                let key = deployment(&c.namespace, &format!("{}-primary", c.target));
                let Some(mut primary) = self.store.get(&key).map_err(|e| e.to_string())? else {
                    return Ok(());
                };
                primary["spec"]["replicas"] = (*n).into();
                self.store
                    .put_generated(&key, &primary, &Self::owner(c))
                    .map_err(|e| e.to_string())
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

    fn owner(c: &CanarySpec) -> String {
        format!("Canary/{}/{}", c.namespace, c.name)
    }

    /// Writes `<target>-primary` (with `-primary` ConfigMap/Secret copies) from the target.
    fn write_primary(&self, c: &CanarySpec, target: &Value) -> Result<(), String> {
        let label = selector_label(target);
        let primary_name = format!("{}-primary", c.target);
        let mut p = target.clone();
        p["metadata"] = json!({"name": primary_name, "namespace": c.namespace, "labels": {label.clone(): primary_name}});
        p["spec"]["selector"]["matchLabels"][&label] = primary_name.clone().into();
        p["spec"]["template"]["metadata"]["labels"][&label] = primary_name.clone().into();
        let existing = self
            .store
            .get(&deployment(&c.namespace, &primary_name))
            .ok()
            .flatten();
        // Flagger's Promote copies the target's replicas unless an autoscaler owns them.
        if let Some(e) = existing.as_ref().filter(|_| c.autoscaler.is_some()) {
            p["spec"]["replicas"] = e["spec"]["replicas"].clone();
        }
        for (kind, name) in config_refs(&target["spec"]["template"]["spec"]) {
            let Ok(Some(mut cfg)) =
                self.store
                    .get(&ObjectKey::new("v1", &kind, &c.namespace, &name))
            else {
                continue;
            };
            let copy = format!("{name}-primary");
            cfg["metadata"] = json!({"name": copy, "namespace": c.namespace});
            self.store
                .put_generated(
                    &ObjectKey::new("v1", &kind, &c.namespace, &copy),
                    &cfg,
                    &Self::owner(c),
                )
                .map_err(|e| e.to_string())?;
        }
        rename_config_refs(&mut p["spec"]["template"]["spec"]);
        if let Some(hpa_name) = &c.autoscaler {
            let hpa_key = ObjectKey::new(
                "autoscaling/v2",
                "HorizontalPodAutoscaler",
                &c.namespace,
                hpa_name,
            );
            if let Ok(Some(mut hpa)) = self.store.get(&hpa_key) {
                let copy = format!("{hpa_name}-primary");
                hpa["metadata"] = json!({"name": copy, "namespace": c.namespace});
                hpa["spec"]["scaleTargetRef"]["name"] = primary_name.clone().into();
                self.store
                    .put_generated(
                        &ObjectKey::new(
                            "autoscaling/v2",
                            "HorizontalPodAutoscaler",
                            &c.namespace,
                            &copy,
                        ),
                        &hpa,
                        &Self::owner(c),
                    )
                    .map_err(|e| e.to_string())?;
            }
        }
        self.store
            .put_generated(
                &deployment(&c.namespace, &primary_name),
                &p,
                &Self::owner(c),
            )
            .map_err(|e| e.to_string())
    }

    fn write_services(&self, c: &CanarySpec, target: &Value) -> Result<(), String> {
        let label = selector_label(target);
        let svc = |name: String, app: String| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": c.namespace},
                "spec": {"selector": {label.clone(): app}, "ports": [{"name": "http", "port": c.port, "targetPort": c.target_port}]}})
        };
        let primary = format!("{}-primary", c.target);
        for (name, app) in [
            (c.service.clone(), primary.clone()),
            (format!("{}-primary", c.service), primary.clone()),
            (format!("{}-canary", c.service), c.target.clone()),
        ] {
            self.store
                .put_generated(
                    &ObjectKey::new("v1", "Service", &c.namespace, &name),
                    &svc(name.clone(), app),
                    &Self::owner(c),
                )
                .map_err(|e| e.to_string())?;
        }
        Ok(())
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

fn rename_config_refs(pod: &mut Value) {
    let rename = |v: &mut Value| {
        if let Some(n) = v.as_str() {
            *v = format!("{n}-primary").into();
        }
    };
    for list in ["containers", "initContainers"] {
        for c in pod[list].as_array_mut().into_iter().flatten() {
            for f in c["envFrom"].as_array_mut().into_iter().flatten() {
                for r in ["configMapRef", "secretRef"] {
                    if f.get(r).is_some() {
                        rename(&mut f[r]["name"]);
                    }
                }
            }
            for e in c["env"].as_array_mut().into_iter().flatten() {
                for r in ["configMapKeyRef", "secretKeyRef"] {
                    if e["valueFrom"].get(r).is_some() {
                        rename(&mut e["valueFrom"][r]["name"]);
                    }
                }
            }
        }
    }
    for v in pod["volumes"].as_array_mut().into_iter().flatten() {
        if v.get("configMap").is_some() {
            rename(&mut v["configMap"]["name"]);
        }
        if v.get("secret").is_some() {
            rename(&mut v["secret"]["secretName"]);
        }
    }
}
