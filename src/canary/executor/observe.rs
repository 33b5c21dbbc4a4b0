//! What a step observes before `decide()`: the canary's status, the target's revision
//! (template hash plus tracked configs), readiness from the runtime, a manual command and
//! a `maxConcurrentCanaries` slot. All of it reads files, so it runs on the engine's
//! I/O thread.

use super::*;

/// What a step read for one canary.
pub(super) struct Seen {
    /// The status before this step.
    pub status: CanaryStatus,
    /// The target Deployment.
    pub target: Value,
    /// Observations for `decide()`, without webhook and metric results.
    pub obs: Observations,
    /// Checksums of the configs the target references.
    pub tracked: std::collections::BTreeMap<String, String>,
}

impl Core {
    /// Reads everything a step needs from the store and the runtime.
    pub(super) fn observe(&self, c: &CanarySpec) -> Result<Seen, String> {
        let status = read_status(&self.state_dir, &c.namespace, &c.name);
        self.restore_route(c, &status);
        let Some(target) = self
            .store
            .get(&deployment(&c.namespace, &c.target))
            .map_err(|e| e.to_string())?
        else {
            return Err(format!(
                "target deployment {}.{} not found",
                c.target, c.namespace
            ));
        };
        let tracked = self.tracked_configs(&target, &c.namespace);
        let rev = revision(&target, &tracked);
        let primary_name = format!("{}-primary", c.target);
        let primary = self
            .store
            .get(&deployment(&c.namespace, &primary_name))
            .map_err(|e| e.to_string())?;
        let primary_hash = primary
            .as_ref()
            .map(|p| crate::targets::local::runtime::spec::template_hash(&p["spec"]["template"]))
            .unwrap_or_default();
        let target_hash =
            crate::targets::local::runtime::spec::template_hash(&target["spec"]["template"]);
        let manual = super::super::commands::pending(&self.state_dir, &c.namespace, &c.name);
        let replicas = |d: &Value| d["spec"]["replicas"].as_u64().unwrap_or(1) as u32;
        let canary_not_ready = match status.phase {
            Phase::Progressing | Phase::WaitingPromotion => self
                .ready(
                    &c.namespace,
                    &c.target,
                    &target_hash,
                    c.analysis.canary_ready_threshold,
                )
                .err(),
            _ => None,
        };
        let canary_unavailable_since = canary_not_ready.as_ref().and_then(|_| {
            crate::targets::local::runtime::supervisor::rollout_state(
                &self.state_dir,
                &c.namespace,
                &c.target,
                0,
            )
            .unavailable_since
            .map(|t| t as f64)
        });
        let obs = Observations {
            primary_exists: primary.is_some(),
            primary_ready: primary.is_some()
                && self
                    .ready(
                        &c.namespace,
                        &primary_name,
                        &primary_hash,
                        c.analysis.primary_ready_threshold,
                    )
                    .is_ok(),
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
            obs,
            tracked,
        })
    }

    /// Routes live in the proxy's memory: after a restart, put back what the status
    /// says before deciding anything, so a resumed analysis keeps its weight.
    fn restore_route(&self, c: &CanarySpec, status: &CanaryStatus) {
        if status.phase != Phase::Initializing && lock(&self.restored).insert(c.id()) {
            let ab = c.analysis.iterations > 0
                && c.analysis
                    .match_rules
                    .as_array()
                    .is_some_and(|m| !m.is_empty())
                && status.phase == Phase::Progressing;
            self.router
                .set_routes(c, status.canary_weight, status.mirrored, ab);
        }
    }

    /// Checksums of the ConfigMaps and Secrets the target references, by `Kind/name`.
    fn tracked_configs(
        &self,
        target: &Value,
        ns: &str,
    ) -> std::collections::BTreeMap<String, String> {
        config_refs(&target["spec"]["template"]["spec"])
            .into_iter()
            .map(|(kind, name)| {
                let obj = self
                    .store
                    .get(&ObjectKey::new("v1", &kind, ns, &name))
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let data = json!({"data": obj["data"], "stringData": obj["stringData"]});
                (
                    format!("{kind}/{name}"),
                    crate::manifest::object::sha256_hex(&crate::manifest::object::canonical_json(
                        &data,
                    )),
                )
            })
            .collect()
    }

    pub(super) fn ready(
        &self,
        ns: &str,
        name: &str,
        template_hash: &str,
        threshold: u32,
    ) -> Result<(), String> {
        let replicas = self
            .store
            .get(&deployment(ns, name))
            .ok()
            .flatten()
            .map(|d| d["spec"]["replicas"].as_u64().unwrap_or(1) as u32);
        let st = crate::targets::local::runtime::supervisor::rollout_state(
            &self.state_dir,
            ns,
            name,
            replicas.unwrap_or(1),
        );
        let desired = replicas.map(|_| st.wanted).unwrap_or(1).max(1);
        let need = (desired * threshold).div_ceil(100).max(1);
        let (available, updated) = (st.available, st.updated);
        if st.replicas > updated {
            // Old replicas still serve the previous version (Flagger's IsPrimaryReady).
            Err(format!(
                "deployment {name}.{ns} waiting for rollout to finish: {} old replicas are pending termination",
                st.replicas - updated
            ))
        } else if st.template_hash == template_hash
            && updated >= desired.min(need)
            && available >= need
        {
            Ok(())
        } else {
            Err(format!(
                "deployment {name}.{ns} not ready: {available} of {desired} replicas available"
            ))
        }
    }
}

/// The target's revision: its template hash plus the checksums of the ConfigMaps and
/// Secrets it references (Flagger's tracked configs), stable across versions.
fn revision(target: &Value, tracked: &std::collections::BTreeMap<String, String>) -> String {
    let mut parts = vec![crate::targets::local::runtime::spec::template_hash(
        &target["spec"]["template"],
    )];
    parts.extend(tracked.iter().map(|(k, sum)| format!("{k}:{sum}")));
    crate::manifest::object::sha256_hex(parts.join("\n").as_bytes())
}
