//! What a step observes before `decide()`: the canary's status, the target's revision
//! (template hash plus tracked configs), readiness from the target, a manual command
//! and a `maxConcurrentCanaries` slot. All of it may block (the local target reads
//! files), so it runs on the engine's I/O thread.

use super::*;
use crate::canary::router::Routes;

/// What a step read for one canary.
pub(super) struct Seen {
    /// The status before this step.
    pub status: CanaryStatus,
    /// The target Deployment.
    pub target: Value,
    /// The target's template hash.
    pub target_hash: String,
    /// Observations for `decide()`, without webhook and metric results.
    pub obs: Observations,
    /// Checksums of the configs the target references.
    pub tracked: std::collections::BTreeMap<String, String>,
    /// The primary Deployment, if created.
    pub primary: Option<Value>,
}

impl Core {
    /// Reads everything a step needs from the target.
    pub(super) fn observe(&self, c: &CanarySpec) -> Result<Seen, String> {
        let status = read_status(&self.state_dir, &c.namespace, &c.name);
        let Some(target) = self.workloads.get(&deployment(&c.namespace, &c.target))? else {
            return Err(format!(
                "target deployment {}.{} not found",
                c.target, c.namespace
            ));
        };
        let tracked = self.workloads.tracked_configs(&target, &c.namespace);
        let target_hash = self.workloads.template_hash(&target);
        let rev = crate::canary::workloads::revision(&target_hash, &tracked);
        let primary_name = format!("{}-primary", c.target);
        let primary = self
            .workloads
            .get(&deployment(&c.namespace, &primary_name))?;
        let manual = super::super::commands::pending(&self.state_dir, &c.namespace, &c.name);
        let replicas = |d: &Value| d["spec"]["replicas"].as_u64().unwrap_or(1) as u32;
        let (canary_not_ready, canary_unavailable_since) = match status.phase {
            Phase::Progressing | Phase::WaitingPromotion => {
                let st = self.workloads.rollout(&c.namespace, &c.target);
                let threshold = c.analysis.canary_ready_threshold;
                match readiness(&c.namespace, &c.target, &st, threshold) {
                    Err(e) => (Some(e), st.unavailable_since),
                    Ok(()) => (None, None),
                }
            }
            _ => (None, None),
        };
        let primary_ready = primary.is_some() && {
            let st = self.workloads.rollout(&c.namespace, &primary_name);
            readiness(
                &c.namespace,
                &primary_name,
                &st,
                c.analysis.primary_ready_threshold,
            )
            .is_ok()
        };
        let obs = Observations {
            primary_exists: primary.is_some(),
            primary_ready,
            canary_not_ready,
            canary_unavailable_since,
            target_replicas: replicas(&target),
            primary_replicas: primary.as_ref().map(replicas),
            // Waiting canaries start only while fewer than the cap are analysing.
            slot_available: !decide::may_start(&status, &rev, manual) || self.claim_slot(&c.id()),
            manual,
            revision: rev,
            ..Default::default()
        };
        Ok(Seen {
            status,
            target,
            target_hash,
            obs,
            tracked,
            primary,
        })
    }

    /// After a restart, puts back the routes the status says, before deciding
    /// anything, so a resumed analysis keeps its weight. A router that keeps its
    /// routes (a cluster's) still has them and is left alone.
    pub(super) async fn restore_route(&self, c: &CanarySpec, status: &CanaryStatus) {
        if status.phase == Phase::Initializing || !lock(&self.restored).insert(c.id()) {
            return;
        }
        match self.router.get_routes(c).await {
            Ok(Some(_)) => return,
            Ok(None) => {}
            Err(e) => tracing::warn!("{e}"),
        }
        let ab = c.analysis.iterations > 0
            && c.analysis
                .match_rules
                .as_array()
                .is_some_and(|m| !m.is_empty())
            && status.phase == Phase::Progressing;
        let routes = Routes::weighted(status.canary_weight, status.mirrored, ab);
        if let Err(e) = self.router.set_routes(c, routes).await {
            tracing::warn!("{e}");
            // Try again on the next step.
            lock(&self.restored).remove(&c.id());
        }
    }
}
