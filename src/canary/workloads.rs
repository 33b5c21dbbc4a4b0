//! The workload edge of the canary engine: what it reads and writes of a target's
//! Deployments and objects. The local target implements it over its store and runtime
//! (`targets::local::canary`); Kubernetes implements it over the API server. Calls are
//! blocking and run on the engine's I/O thread. Readiness wording and the revision
//! are decided here, by pure functions over what the target reports.

use crate::manifest::ObjectKey;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// How far a Deployment's rollout got, as the target reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RolloutState {
    /// Replicas it should run (`spec.replicas`, or what the engine scaled it to); 1
    /// when the Deployment is absent.
    pub desired: u32,
    /// Replicas running its current template.
    pub updated: u32,
    /// Replicas available.
    pub available: u32,
    /// All replicas, old and new.
    pub total: u32,
    /// Whether the running replicas have the Deployment's current template.
    pub current: bool,
    /// Since when it has lacked minimum availability (unix seconds), if it does.
    pub unavailable_since: Option<f64>,
}

/// Whether Deployment `name.ns` is ready with `threshold` percent of its replicas, in
/// Flagger's wording when not (`IsPrimaryReady`/`IsCanaryReady`).
pub fn readiness(ns: &str, name: &str, st: &RolloutState, threshold: u32) -> Result<(), String> {
    let desired = st.desired.max(1);
    let need = (desired * threshold).div_ceil(100).max(1);
    if st.total > st.updated {
        // Old replicas still serve the previous version.
        Err(format!(
            "deployment {name}.{ns} waiting for rollout to finish: {} old replicas are pending termination",
            st.total - st.updated
        ))
    } else if st.current && st.updated >= desired.min(need) && st.available >= need {
        Ok(())
    } else {
        Err(format!(
            "deployment {name}.{ns} not ready: {} of {desired} replicas available",
            st.available
        ))
    }
}

/// The target's revision: its template hash plus the checksums of the ConfigMaps and
/// Secrets it references (Flagger's tracked configs), stable across versions.
pub fn revision(template_hash: &str, tracked: &BTreeMap<String, String>) -> String {
    let mut parts = vec![template_hash.to_string()];
    parts.extend(tracked.iter().map(|(k, sum)| format!("{k}:{sum}")));
    crate::manifest::object::sha256_hex(parts.join("\n").as_bytes())
}

/// The checksum tracked for a ConfigMap or Secret: its `data` and `stringData`.
pub fn config_checksum(obj: &Value) -> String {
    let data = json!({"data": obj["data"], "stringData": obj["stringData"]});
    crate::manifest::object::sha256_hex(&crate::manifest::object::canonical_json(&data))
}

/// A target's Deployments and objects, as the canary engine sees them.
pub trait Workloads: Send + Sync {
    /// One object, if present: a Canary, Deployment, ConfigMap, MetricTemplate...
    fn get(&self, key: &ObjectKey) -> Result<Option<Value>, String>;
    /// Every object of a group and kind (from Git and generated).
    fn list(&self, group: &str, kind: &str) -> Result<Vec<ObjectKey>, String>;
    /// The hash identifying a Deployment's pod template on this target.
    fn template_hash(&self, deployment: &Value) -> String;
    /// The rollout state of Deployment `ns/name`.
    fn rollout(&self, ns: &str, name: &str) -> RolloutState;
    /// Runs Deployment `ns/name` (one from Git) with `replicas`, or with what its
    /// spec says when `None`.
    fn scale(&self, ns: &str, name: &str, replicas: Option<u32>) -> Result<(), String>;
    /// Creates or updates objects the engine generated (the primary, its config
    /// copies), owned by `owner` (`Canary/ns/name`) so they go with it.
    fn put_generated(&self, owner: &str, objects: &[(ObjectKey, Value)]) -> Result<(), String>;
    /// Every generated object, with its owner.
    fn generated(&self) -> BTreeMap<ObjectKey, String>;
    /// Removes every object `owner` generated.
    fn remove_generated(&self, owner: &str) -> Result<(), String>;
    /// Tells the target that objects changed, so it acts on them now.
    fn changed(&self);
    /// A cluster URL (`http://svc.ns/`) as this process reaches it.
    fn resolve_url(&self, url: &str, ns: &str) -> String;

    /// The revision (commit) that last applied an object from Git, if the target
    /// keeps it: where a finished analysis is recorded.
    fn applied_revision(&self, _key: &ObjectKey) -> Option<String> {
        None
    }

    /// Checksums of the ConfigMaps and Secrets a Deployment references, by `Kind/name`.
    fn tracked_configs(&self, deployment: &Value, ns: &str) -> BTreeMap<String, String> {
        crate::canary::primary::config_refs(&deployment["spec"]["template"]["spec"])
            .into_iter()
            .map(|(kind, name)| {
                let obj = self
                    .get(&ObjectKey::new("v1", &kind, ns, &name))
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                (format!("{kind}/{name}"), config_checksum(&obj))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(desired: u32, updated: u32, available: u32, total: u32) -> RolloutState {
        RolloutState {
            desired,
            updated,
            available,
            total,
            current: true,
            unavailable_since: None,
        }
    }

    #[test]
    fn readiness_follows_flaggers_rules_and_words() {
        assert_eq!(readiness("test", "podinfo", &st(2, 2, 2, 2), 100), Ok(()));
        assert_eq!(
            readiness("test", "podinfo", &st(2, 2, 1, 2), 100).unwrap_err(),
            "deployment podinfo.test not ready: 1 of 2 replicas available"
        );
        // A threshold of 50% is met by one of two.
        assert_eq!(readiness("test", "podinfo", &st(2, 1, 1, 1), 50), Ok(()));
        assert_eq!(
            readiness("test", "podinfo", &st(2, 2, 2, 3), 100).unwrap_err(),
            "deployment podinfo.test waiting for rollout to finish: 1 old replicas are pending termination"
        );
        let old = RolloutState {
            current: false,
            ..st(1, 1, 1, 1)
        };
        assert!(readiness("test", "podinfo", &old, 100).is_err());
        // Scaled to zero: one replica is still needed.
        assert!(readiness("test", "podinfo", &st(0, 0, 0, 0), 100).is_err());
    }

    #[test]
    fn revision_changes_with_the_template_or_a_tracked_config_only() {
        let none = BTreeMap::new();
        let one: BTreeMap<String, String> = [("ConfigMap/cfg".into(), "a".into())].into();
        let other: BTreeMap<String, String> = [("ConfigMap/cfg".into(), "b".into())].into();
        assert_eq!(revision("h1", &none), revision("h1", &none));
        assert_ne!(revision("h1", &none), revision("h2", &none));
        assert_ne!(revision("h1", &one), revision("h1", &other));
        assert_eq!(
            config_checksum(&json!({"data": {"k": "v"}, "metadata": {"name": "x"}})),
            config_checksum(&json!({"data": {"k": "v"}, "metadata": {"name": "y"}}))
        );
    }
}
