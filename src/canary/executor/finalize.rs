//! What happens when a Canary is removed from Git: its generated objects go and the
//! target runs as Git says, with `revertOnDeletion` moving traffic back first.

use super::*;

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
        match self
            .blocking(move || core.finalize_removed_files(keys))
            .await
        {
            Ok(true) => self.store_changed().await,
            Ok(false) => {}
            Err(e) => tracing::warn!("{e}"),
        }
    }

    /// The store and status side of `finalize_removed`; whether anything changed.
    fn finalize_removed_files(&self, keys: Vec<ObjectKey>) -> bool {
        let _writing = lock(&self.writes);
        let generated = self.store.generated();
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
            let _ = crate::targets::local::runtime::supervisor::set_replica_override(
                &self.state_dir,
                ns,
                &target,
                None,
            );
            self.notify();
            let target_obj = self.store.get(&deployment(ns, &target)).ok().flatten();
            if st.revert_on_deletion {
                if let Some(t) = &target_obj {
                    let hash =
                        crate::targets::local::runtime::spec::template_hash(&t["spec"]["template"]);
                    if let Err(e) = self.ready(ns, &target, &hash, 100) {
                        tracing::info!(canary = %format!("{name}.{ns}"), "Terminating canary: waiting for the target: {e}");
                        pending = true;
                        continue;
                    }
                    let label = selector_label(t);
                    let apex_key = ObjectKey::new("v1", "Service", ns, &service);
                    let ports = self
                        .store
                        .get(&apex_key)
                        .ok()
                        .flatten()
                        .map(|s| s["spec"]["ports"].clone())
                        .unwrap_or(json!([]));
                    let apex = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": service, "namespace": ns},
                        "spec": {"selector": {label: target.clone()}, "ports": ports}});
                    if let Err(e) =
                        self.store
                            .put_generated(&apex_key, &apex, &format!("Reverted/{ns}/{name}"))
                    {
                        tracing::warn!("reverting {service}.{ns}: {e}");
                        pending = true;
                        continue;
                    }
                }
            }
            self.proxy.set_route(ns, &service, None);
            if let Err(e) = self.store.remove_generated(owner) {
                tracing::warn!("removing what {owner} generated: {e}");
                pending = true;
                continue;
            }
            let _ = std::fs::remove_file(status_path(&self.state_dir, ns, name));
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
