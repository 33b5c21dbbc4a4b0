//! A revision's health check, as Flux's Kustomization runs it after an apply: the
//! revision is Ready only once every workload it applied is healthy (kstatus `Current`),
//! and fails when one of them fails or `timeout` passes first. Which objects are watched,
//! and the verdict over their statuses, are decided here from object JSON and times
//! passed in; the run loop fetches the live objects and polls between syncs, so a new
//! revision replaces a check still waiting (Flux's `CancelHealthCheckOnNewRevision`).

use crate::manifest::{Object, ObjectKey};
use crate::targets::kube::health::{self, Health};

/// Whether a revision's health check waits for this object: workloads and other kinds
/// whose status says whether they work. Plain data (ConfigMaps, Secrets, RBAC, …) is
/// healthy once applied, so it costs no read.
pub fn watched(desired: &Object) -> bool {
    watched_kind(&desired.key, || {
        desired.value()["spec"]["type"] == "LoadBalancer"
    })
}

/// [`watched`] by identity; `load_balancer` says whether a Service is one, and is
/// asked only for Services (the one kind whose spec decides).
pub fn watched_kind(key: &ObjectKey, load_balancer: impl FnOnce() -> bool) -> bool {
    match (key.group.as_str(), key.kind.as_str()) {
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => true,
        ("batch", "Job") => true,
        ("", "PersistentVolumeClaim" | "Pod") => true,
        ("", "Service") => load_balancer(),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => true,
        // Built-in kinds without a meaningful status.
        ("", _)
        | (
            "rbac.authorization.k8s.io"
            | "networking.k8s.io"
            | "policy"
            | "scheduling.k8s.io"
            | "storage.k8s.io"
            | "coordination.k8s.io"
            | "admissionregistration.k8s.io"
            | "autoscaling"
            | "apps"
            | "batch",
            _,
        ) => false,
        // gitcanary's own inputs are consumed, not applied; Canaries have their engine.
        ("flagger.app", _) => false,
        // Custom resources report `Ready` when their controller implements it.
        _ => true,
    }
}

/// The outcome of one look at a revision's objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every watched object is current.
    Healthy,
    /// Some are still converging and time is left; the message names the first.
    Waiting(String),
    /// An object failed, or the timeout passed; the message names the objects.
    Failed(String),
}

/// The verdict over `statuses` (`Kind/namespace/name` with the live object's health,
/// `None` when it is missing), `elapsed` seconds into a check of `timeout` seconds.
/// Wording follows Flux's health check messages.
pub fn assess(
    statuses: &[(String, Option<health::Status>)],
    elapsed: f64,
    timeout: f64,
) -> Verdict {
    let after = format!("health check failed after {elapsed:.1}s");
    let failed: Vec<String> = statuses
        .iter()
        .filter_map(|(id, s)| match s {
            Some(s) if s.health == Health::Failed => {
                Some(format!("{id} status: 'Failed': {}", s.message))
            }
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        return Verdict::Failed(format!("{after}: {}", failed.join("; ")));
    }
    let waiting: Vec<String> = statuses
        .iter()
        .filter_map(|(id, s)| match s {
            None => Some(format!("{id} status: 'NotFound'")),
            Some(s) if s.health == Health::Current => None,
            Some(s) => Some(format!("{id} status: '{:?}': {}", s.health, s.message)),
        })
        .collect();
    match waiting.first() {
        None => Verdict::Healthy,
        Some(_) if elapsed >= timeout => Verdict::Failed(format!(
            "{after}: timeout waiting for: [{}]",
            waiting.join(", ")
        )),
        Some(first) => Verdict::Waiting(format!("Health check in progress: {first}")),
    }
}

/// A check under way for one applied revision.
#[derive(Clone, Debug)]
pub struct Check {
    /// The revision checked (`main@sha1:…`).
    pub revision: String,
    objects: Vec<ObjectKey>,
    started: f64,
    timeout: f64,
}

impl Check {
    /// Starts checking the watched objects among `desired`, applied at `now`.
    pub fn new(revision: String, desired: &[Object], now: f64, timeout: f64) -> Check {
        Check {
            revision,
            objects: desired
                .iter()
                .filter(|o| watched(o))
                .map(|o| o.key.clone())
                .collect(),
            started: now,
            timeout,
        }
    }

    /// The objects it reads.
    pub fn objects(&self) -> &[ObjectKey] {
        &self.objects
    }

    /// Judges the live objects' statuses (`statuses[i]` for `objects()[i]`, `None` when
    /// missing) at `now`.
    pub fn judge(&self, statuses: &[Option<health::Status>], now: f64) -> Verdict {
        let statuses: Vec<(String, Option<health::Status>)> = self
            .objects
            .iter()
            .zip(statuses)
            .map(|(k, s)| (format!("{}/{}/{}", k.kind, k.namespace, k.name), s.clone()))
            .collect();
        assess(&statuses, now - self.started, self.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn object(api: &str, kind: &str, value: Value) -> Object {
        Object::from_json(
            ObjectKey::new(api, kind, "apps", "x"),
            api.into(),
            &value,
            Default::default(),
        )
    }

    fn key(api: &str, kind: &str) -> Object {
        object(api, kind, json!({}))
    }

    fn deployment(status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "podinfo", "namespace": "apps", "generation": 2},
            "spec": {"replicas": 2}, "status": status})
    }

    #[test]
    fn workloads_and_custom_resources_are_watched_plain_data_is_not() {
        assert!(watched(&key("apps/v1", "Deployment")));
        assert!(watched(&key("batch/v1", "Job")));
        assert!(watched(&key("v1", "PersistentVolumeClaim")));
        assert!(watched(&key("example.com/v1", "Database")));
        assert!(!watched(&key("v1", "ConfigMap")));
        assert!(!watched(&key("v1", "Service")));
        assert!(watched(&object(
            "v1",
            "Service",
            json!({"spec": {"type": "LoadBalancer"}})
        )));
        assert!(!watched(&key("rbac.authorization.k8s.io/v1", "Role")));
        assert!(!watched(&key("batch/v1", "CronJob")));
        assert!(!watched(&key("flagger.app/v1beta1", "Canary")));
    }

    #[test]
    fn a_check_waits_then_passes_when_the_deployment_becomes_available() {
        let obj = |v: Value| {
            Object::from_json(
                ObjectKey::new("apps/v1", "Deployment", "apps", "podinfo"),
                "apps/v1".into(),
                &v,
                Default::default(),
            )
        };
        let cm = Object::from_json(
            ObjectKey::new("v1", "ConfigMap", "apps", "cfg"),
            "v1".into(),
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}}),
            Default::default(),
        );
        let check = Check::new(
            "main@sha1:1".into(),
            &[obj(deployment(json!({}))), cm],
            100.0,
            30.0,
        );
        assert_eq!(check.objects().len(), 1, "the ConfigMap costs no read");
        let rolling = deployment(json!({"observedGeneration": 2, "replicas": 2,
            "updatedReplicas": 2, "readyReplicas": 1, "availableReplicas": 1}));
        match check.judge(&[Some(health::status(&rolling))], 110.0) {
            Verdict::Waiting(m) => assert_eq!(
                m,
                "Health check in progress: Deployment/apps/podinfo status: 'InProgress': Available: 1/2"
            ),
            v => panic!("{v:?}"),
        }
        let ready = deployment(json!({"observedGeneration": 2, "replicas": 2,
            "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2,
            "conditions": [{"type": "Available", "status": "True"}]}));
        assert_eq!(
            check.judge(&[Some(health::status(&ready))], 111.0),
            Verdict::Healthy
        );
        match check.judge(&[Some(health::status(&rolling))], 130.0) {
            Verdict::Failed(m) => assert_eq!(
                m,
                "health check failed after 30.0s: timeout waiting for: [Deployment/apps/podinfo status: 'InProgress': Available: 1/2]"
            ),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_failed_object_fails_the_check_before_the_timeout() {
        let stuck = deployment(
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet \"podinfo-7d\" has timed out progressing."}]}),
        );
        let v = assess(
            &[
                (
                    "Deployment/apps/podinfo".into(),
                    Some(health::status(&stuck)),
                ),
                ("Job/apps/migrate".into(), None),
            ],
            4.0,
            300.0,
        );
        let Verdict::Failed(m) = v else {
            panic!("{v:?}")
        };
        assert!(m.starts_with("health check failed after 4.0s: Deployment/apps/podinfo status: 'Failed': Progress deadline exceeded"), "{m}");
    }

    #[test]
    fn a_missing_object_is_waited_for() {
        let v = assess(&[("Job/apps/migrate".into(), None)], 1.0, 60.0);
        assert_eq!(
            v,
            Verdict::Waiting(
                "Health check in progress: Job/apps/migrate status: 'NotFound'".into()
            )
        );
        assert!(matches!(assess(&[], 0.0, 0.0), Verdict::Healthy));
    }
}
