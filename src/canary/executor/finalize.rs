//! What happens when a Canary is removed from Git: its generated objects go and the
//! target runs as Git says, with `revertOnDeletion` moving traffic back first.

use super::*;
use crate::canary::router::Finalize;

impl Core {
    /// Canaries removed from Git. Their generated objects go (as Kubernetes garbage
    /// collection does for Flagger's) and the target runs with the replicas Git gives
    /// it. With `revertOnDeletion`, the apex Service first waits for the target to be
    /// ready and then selects its pods, outliving the Canary, as Flagger's finalizer
    /// does. Without it, Flagger would leave the target at zero replicas; gitcanary
    /// restores it, so the cluster matches Git.
    pub(super) async fn finalize_removed(self: &Arc<Self>, keys: &[ObjectKey]) {
        if lock(&self.settled).as_deref() == Some(keys) {
            return;
        }
        let (core, keys) = (self.clone(), keys.to_vec());
        let handle = tokio::runtime::Handle::current();
        match self
            .blocking(move || core.finalize_removed_files(keys, &handle))
            .await
        {
            Ok(true) => self.store_changed().await,
            Ok(false) => {}
            Err(e) => tracing::warn!("{e}"),
        }
    }

    /// The target and status side of `finalize_removed`, on the I/O thread (`handle`
    /// runs the router's futures); whether anything changed.
    fn finalize_removed_files(
        &self,
        keys: Vec<ObjectKey>,
        handle: &tokio::runtime::Handle,
    ) -> bool {
        let _writing = lock(&self.writes);
        let generated = self.workloads.generated();
        let owners: std::collections::BTreeSet<&String> = generated.values().collect();
        let mut changed = false;
        let mut pending = false;
        for owner in owners {
            let Some(rest) = owner.strip_prefix("Canary/") else {
                continue;
            };
            let Some((ns, name)) = rest.split_once('/') else {
                continue;
            };
            if keys.iter().any(|k| k.namespace == ns && k.name == name) {
                continue;
            }
            if lock(&self.busy).contains(&format!("{name}.{ns}")) {
                pending = true; // its last step is still running
                continue;
            }
            let st = read_status(&self.state_dir, ns, name);
            let target = if st.target.is_empty() {
                generated
                    .iter()
                    .find(|(k, o)| *o == owner && k.kind == "Deployment")
                    .map(|(k, _)| k.name.trim_end_matches("-primary").to_string())
                    .unwrap_or_else(|| name.to_string())
            } else {
                st.target.clone()
            };
            let service = if st.service.is_empty() {
                target.clone()
            } else {
                st.service.clone()
            };
            let _ = self.workloads.scale(ns, &target, None);
            self.workloads.changed();
            let target_obj = self.workloads.get(&deployment(ns, &target)).ok().flatten();
            let revert_to = target_obj.filter(|_| st.revert_on_deletion);
            if revert_to.is_some() {
                let rollout = self.workloads.rollout(ns, &target);
                if let Err(e) = readiness(ns, &target, &rollout, 100) {
                    tracing::info!(canary = %format!("{name}.{ns}"), "Terminating canary: waiting for the target: {e}");
                    pending = true;
                    continue;
                }
            }
            let fin = Finalize {
                namespace: ns.to_string(),
                name: name.to_string(),
                service: service.clone(),
                revert_to,
            };
            if let Err(e) = handle.block_on(self.router.finalize(&fin)) {
                tracing::warn!("finalizing {service}.{ns}: {e}");
                pending = true;
                continue;
            }
            if let Err(e) = self.workloads.remove_generated(owner) {
                tracing::warn!("removing what {owner} generated: {e}");
                pending = true;
                continue;
            }
            let _ = std::fs::remove_file(status_path(&self.state_dir, ns, name));
            crate::canary::samples::forget(&self.state_dir, ns, name);
            self.forget_tracked(ns, name);
            lock(&self.restored).remove(&format!("{name}.{ns}"));
            self.hold_slot(&format!("{name}.{ns}"), false);
            tracing::info!(canary = %format!("{name}.{ns}"), reverted = st.revert_on_deletion, "Terminating canary {name}.{ns}: the Canary was removed; {target}.{ns} runs as Git says");
            changed = true;
        }
        if !pending {
            *lock(&self.settled) = Some(keys);
        }
        changed
    }
}
