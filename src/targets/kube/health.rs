//! Health of a live Kubernetes object, computed the way kstatus (the library behind
//! Flux's health checks) computes it: from the object's JSON alone, with no client and
//! no clock. Built-in kinds have their own rules; any other kind is judged by the
//! `Ready`, `Reconciling` and `Stalled` conditions. This module decides only; the
//! Kubernetes target reads the objects and reports what is decided here.

use serde_json::Value;

/// The health of one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Health {
    /// Reconciled and ready.
    Current,
    /// Still converging; may become current.
    InProgress,
    /// Failed; will not become current without a change.
    Failed,
    /// Being deleted.
    Terminating,
}

/// Health with the reason, in the words kubectl and Flagger users know.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// The verdict.
    pub health: Health,
    /// Why, e.g. `Deployment is available. Replicas: 3`.
    pub message: String,
}

impl Status {
    fn new(health: Health, message: impl Into<String>) -> Status {
        Status {
            health,
            message: message.into(),
        }
    }
    fn current(message: impl Into<String>) -> Status {
        Status::new(Health::Current, message)
    }
    fn progress(message: impl Into<String>) -> Status {
        Status::new(Health::InProgress, message)
    }
    fn failed(message: impl Into<String>) -> Status {
        Status::new(Health::Failed, message)
    }
}

/// The health of `obj` (a full object as the API server returns it).
pub fn status(obj: &Value) -> Status {
    if !obj["metadata"]["deletionTimestamp"].is_null() {
        return Status::new(Health::Terminating, "Resource scheduled for deletion");
    }
    // A controller that has not seen the latest spec says nothing about it yet.
    if let (Some(generation), Some(observed)) = (
        obj["metadata"]["generation"].as_i64(),
        obj["status"]["observedGeneration"].as_i64(),
    ) {
        if observed < generation {
            return Status::progress(format!(
                "{} generation is {generation}, but latest observed generation is {observed}",
                kind(obj)
            ));
        }
    }
    let group = obj["apiVersion"]
        .as_str()
        .and_then(|v| v.rsplit_once('/').map(|(g, _)| g))
        .unwrap_or("");
    match (group, kind(obj)) {
        ("apps", "Deployment") => deployment(obj),
        ("apps", "StatefulSet") => stateful_set(obj),
        ("apps", "DaemonSet") => daemon_set(obj),
        ("apps", "ReplicaSet") => replica_set(obj),
        ("batch", "Job") => job(obj),
        ("", "PersistentVolumeClaim") => pvc(obj),
        ("", "Service") => service(obj),
        ("", "Pod") => pod(obj),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(obj),
        _ => generic(obj),
    }
}

fn kind(obj: &Value) -> &str {
    obj["kind"].as_str().unwrap_or("Resource")
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// The condition of `type_`, if the object reports it.
fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"].as_str() == Some(type_))
}

fn is_true(c: Option<&Value>) -> Option<bool> {
    c.and_then(|c| c["status"].as_str()).map(|s| s == "True")
}

fn reason_and_message(c: &Value) -> String {
    let reason = c["reason"].as_str().unwrap_or_default();
    let message = c["message"].as_str().unwrap_or_default();
    match (reason.is_empty(), message.is_empty()) {
        (false, false) => format!("{reason}: {message}"),
        (false, true) => reason.to_string(),
        _ => message.to_string(),
    }
}

/// Replicas asked for; Kubernetes defaults an absent `spec.replicas` to 1.
fn spec_replicas(obj: &Value) -> i64 {
    obj["spec"]["replicas"].as_i64().unwrap_or(1)
}

fn deployment(obj: &Value) -> Status {
    let st = &obj["status"];
    if let Some(p) = condition(obj, "Progressing") {
        if p["reason"].as_str() == Some("ProgressDeadlineExceeded") {
            return Status::failed(format!(
                "Progress deadline exceeded: {}",
                reason_and_message(p)
            ));
        }
    }
    let want = spec_replicas(obj);
    let (replicas, updated, ready, available) = (
        int(&st["replicas"]),
        int(&st["updatedReplicas"]),
        int(&st["readyReplicas"]),
        int(&st["availableReplicas"]),
    );
    if updated < want {
        return Status::progress(format!("Updated: {updated}/{want}"));
    }
    if replicas > updated {
        return Status::progress(format!("Pending termination: {}", replicas - updated));
    }
    if available < updated {
        return Status::progress(format!("Available: {available}/{updated}"));
    }
    if ready < want {
        return Status::progress(format!("Ready: {ready}/{want}"));
    }
    if is_true(condition(obj, "Available")) == Some(false) {
        return Status::progress("Deployment not Available");
    }
    Status::current(format!("Deployment is available. Replicas: {replicas}"))
}

fn stateful_set(obj: &Value) -> Status {
    let st = &obj["status"];
    if obj["spec"]["updateStrategy"]["type"].as_str() == Some("OnDelete") {
        return Status::current("StatefulSet is using the OnDelete update strategy");
    }
    let want = spec_replicas(obj);
    let (replicas, ready, current, updated) = (
        int(&st["replicas"]),
        int(&st["readyReplicas"]),
        int(&st["currentReplicas"]),
        int(&st["updatedReplicas"]),
    );
    if replicas < want {
        return Status::progress(format!("Replicas: {replicas}/{want}"));
    }
    if ready < want {
        return Status::progress(format!("Ready: {ready}/{want}"));
    }
    let partition = obj["spec"]["updateStrategy"]["rollingUpdate"]["partition"]
        .as_i64()
        .unwrap_or(0);
    if partition > 0 {
        let expected = want - partition;
        if updated < expected {
            return Status::progress(format!("updated: {updated}/{expected}"));
        }
        return Status::current(format!("Partitioned roll out complete. updated: {updated}"));
    }
    if current < want {
        return Status::progress(format!("current: {current}/{want}"));
    }
    if st["updateRevision"] != st["currentRevision"] {
        return Status::progress(format!(
            "Waiting for updated revision {} to match current {}",
            st["updateRevision"].as_str().unwrap_or("?"),
            st["currentRevision"].as_str().unwrap_or("?"),
        ));
    }
    Status::current(format!(
        "All replicas scheduled as expected. Replicas: {replicas}"
    ))
}

fn daemon_set(obj: &Value) -> Status {
    let st = &obj["status"];
    let (desired, scheduled, updated, available, ready) = (
        int(&st["desiredNumberScheduled"]),
        int(&st["currentNumberScheduled"]),
        int(&st["updatedNumberScheduled"]),
        int(&st["numberAvailable"]),
        int(&st["numberReady"]),
    );
    if st["desiredNumberScheduled"].is_null() {
        return Status::progress("Missing .status.desiredNumberScheduled");
    }
    if scheduled < desired {
        return Status::progress(format!("Current: {scheduled}/{desired}"));
    }
    if updated < desired {
        return Status::progress(format!("Updated: {updated}/{desired}"));
    }
    if available < desired {
        return Status::progress(format!("Available: {available}/{desired}"));
    }
    if ready < desired {
        return Status::progress(format!("Ready: {ready}/{desired}"));
    }
    Status::current(format!(
        "All replicas scheduled as expected. Replicas: {desired}"
    ))
}

fn replica_set(obj: &Value) -> Status {
    let st = &obj["status"];
    let want = spec_replicas(obj);
    let (ready, available) = (int(&st["readyReplicas"]), int(&st["availableReplicas"]));
    if is_true(condition(obj, "ReplicaFailure")) == Some(true) {
        return Status::progress("Replica Failure condition. Check Pods");
    }
    if ready < want {
        return Status::progress(format!("Ready: {ready}/{want}"));
    }
    if available < want {
        return Status::progress(format!("Available: {available}/{want}"));
    }
    Status::current(format!("ReplicaSet is available. Replicas: {want}"))
}

fn job(obj: &Value) -> Status {
    let st = &obj["status"];
    if let Some(c) = condition(obj, "Failed").filter(|c| c["status"] == "True") {
        let limit = obj["spec"]["backoffLimit"].as_i64().unwrap_or(6);
        return Status::failed(format!(
            "Job Failed. failed: {}/{limit}{}",
            int(&st["failed"]),
            suffix(&reason_and_message(c))
        ));
    }
    if is_true(condition(obj, "Complete")) == Some(true) {
        return Status::current(format!(
            "Job Completed. succeeded: {}/{}",
            int(&st["succeeded"]),
            obj["spec"]["completions"].as_i64().unwrap_or(1)
        ));
    }
    Status::progress(format!(
        "Job in progress. success:{}, active: {}, failed: {}",
        int(&st["succeeded"]),
        int(&st["active"]),
        int(&st["failed"])
    ))
}

fn suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

fn pvc(obj: &Value) -> Status {
    match obj["status"]["phase"].as_str() {
        Some("Bound") => Status::current("PVC is Bound"),
        Some("Lost") => Status::failed("PVC is Lost: its PersistentVolume is gone"),
        other => Status::progress(format!(
            "PVC is not Bound. phase: {}",
            other.unwrap_or("Pending")
        )),
    }
}

fn service(obj: &Value) -> Status {
    if obj["spec"]["type"].as_str() != Some("LoadBalancer") {
        return Status::current("Service is ready");
    }
    let ingress = obj["status"]["loadBalancer"]["ingress"].as_array();
    if ingress.is_some_and(|i| !i.is_empty()) {
        Status::current("Service is ready")
    } else {
        Status::progress("Pending external IP")
    }
}

fn pod(obj: &Value) -> Status {
    match obj["status"]["phase"].as_str() {
        Some("Succeeded") => Status::current("Pod has completed successfully"),
        Some("Failed") => Status::failed("Pod has completed, but not successfully"),
        Some("Running") if is_true(condition(obj, "Ready")) == Some(true) => {
            Status::current("Pod is Ready")
        }
        Some("Running") => Status::progress("Pod is running but is not Ready"),
        other => {
            // An image that cannot be pulled or a crash loop does not fix itself.
            let waiting = obj["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["state"]["waiting"]["reason"].as_str())
                .find(|r| matches!(*r, "CrashLoopBackOff" | "ImagePullBackOff" | "ErrImagePull"));
            match waiting {
                Some(reason) => Status::failed(format!("Pod is not starting: {reason}")),
                None => Status::progress(format!("Pod phase: {}", other.unwrap_or("Pending"))),
            }
        }
    }
}

fn crd(obj: &Value) -> Status {
    if let Some(c) = condition(obj, "NamesAccepted") {
        if c["status"].as_str() == Some("False") {
            return Status::failed(format!("CRD names not accepted: {}", reason_and_message(c)));
        }
    }
    match is_true(condition(obj, "Established")) {
        Some(true) => Status::current("CRD is established"),
        _ => Status::progress("CRD is not established"),
    }
}

/// Any other kind: the standard conditions, or current when it reports none.
fn generic(obj: &Value) -> Status {
    if let Some(c) = condition(obj, "Stalled").filter(|c| c["status"] == "True") {
        return Status::failed(reason_and_message(c));
    }
    if let Some(c) = condition(obj, "Reconciling").filter(|c| c["status"] == "True") {
        return Status::progress(reason_and_message(c));
    }
    match condition(obj, "Ready") {
        Some(c) if c["status"] == "True" => Status::current(reason_and_message(c)),
        Some(c) => Status::progress(reason_and_message(c)),
        None => Status::current("Resource is current"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(spec_replicas: i64, status: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "podinfo", "generation": 2},
            "spec": {"replicas": spec_replicas},
            "status": status,
        })
    }

    #[test]
    fn deployment_rollout_stages() {
        // As kube-controller-manager reports a rollout from 2 old to 2 new replicas.
        let stale = deploy(2, json!({"observedGeneration": 1, "replicas": 2}));
        assert_eq!(status(&stale).health, Health::InProgress);
        assert!(status(&stale)
            .message
            .contains("latest observed generation is 1"));
        let surging = deploy(
            2,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1,
                   "readyReplicas": 2, "availableReplicas": 2}),
        );
        assert_eq!(status(&surging).message, "Updated: 1/2");
        let terminating = deploy(
            2,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2,
                   "readyReplicas": 3, "availableReplicas": 3}),
        );
        assert_eq!(status(&terminating).message, "Pending termination: 1");
        let unavailable = deploy(
            2,
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
                   "readyReplicas": 1, "availableReplicas": 1}),
        );
        assert_eq!(status(&unavailable).message, "Available: 1/2");
        let done = deploy(
            2,
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
                   "readyReplicas": 2, "availableReplicas": 2,
                   "conditions": [
                     {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                     {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}),
        );
        assert_eq!(
            status(&done),
            Status::current("Deployment is available. Replicas: 2")
        );
    }

    #[test]
    fn deployment_past_its_deadline_failed() {
        let d = deploy(
            1,
            json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1,
                   "unavailableReplicas": 1,
                   "conditions": [{"type": "Progressing", "status": "False",
                     "reason": "ProgressDeadlineExceeded",
                     "message": "ReplicaSet \"podinfo-5d8f\" has timed out progressing."}]}),
        );
        let s = status(&d);
        assert_eq!(s.health, Health::Failed);
        assert!(
            s.message.contains("has timed out progressing"),
            "{}",
            s.message
        );
    }

    #[test]
    fn absent_replicas_default_to_one_and_zero_is_current() {
        let mut d = deploy(0, json!({"observedGeneration": 2}));
        assert_eq!(status(&d).health, Health::Current);
        d["spec"] = json!({});
        assert_eq!(status(&d).message, "Updated: 0/1");
    }

    #[test]
    fn deletion_wins() {
        let mut d = deploy(1, json!({}));
        d["metadata"]["deletionTimestamp"] = json!("2026-12-01T00:00:00Z");
        assert_eq!(status(&d).health, Health::Terminating);
    }

    #[test]
    fn jobs() {
        let job = |st: Value| {
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {},
                                      "spec": {"backoffLimit": 2}, "status": st})
        };
        let running = job(json!({"active": 1}));
        assert_eq!(
            status(&running),
            Status::progress("Job in progress. success:0, active: 1, failed: 0")
        );
        let complete = job(json!({"succeeded": 1,
            "conditions": [{"type": "Complete", "status": "True"}]}));
        assert_eq!(status(&complete).health, Health::Current);
        let failed = job(
            json!({"failed": 3, "conditions": [{"type": "Failed", "status": "True",
            "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}),
        );
        let s = status(&failed);
        assert_eq!(s.health, Health::Failed);
        assert_eq!(
            s.message,
            "Job Failed. failed: 3/2: BackoffLimitExceeded: Job has reached the specified backoff limit"
        );
    }

    #[test]
    fn stateful_sets_and_daemon_sets() {
        let sts = |st: Value| {
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"generation": 1}, "spec": {"replicas": 3}, "status": st})
        };
        let rolling = sts(
            json!({"observedGeneration": 1, "replicas": 3, "readyReplicas": 3,
            "currentReplicas": 2, "updatedReplicas": 1,
            "currentRevision": "web-1", "updateRevision": "web-2"}),
        );
        assert_eq!(status(&rolling).message, "current: 2/3");
        let done = sts(
            json!({"observedGeneration": 1, "replicas": 3, "readyReplicas": 3,
            "currentReplicas": 3, "updatedReplicas": 3,
            "currentRevision": "web-2", "updateRevision": "web-2"}),
        );
        assert_eq!(status(&done).health, Health::Current);

        let ds = |st: Value| {
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"generation": 4}, "spec": {}, "status": st})
        };
        let partial = ds(json!({"observedGeneration": 4, "desiredNumberScheduled": 3,
            "currentNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 2,
            "numberReady": 2}));
        assert_eq!(status(&partial).message, "Available: 2/3");
        let done = ds(json!({"observedGeneration": 4, "desiredNumberScheduled": 3,
            "currentNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 3,
            "numberReady": 3}));
        assert_eq!(status(&done).health, Health::Current);
    }

    #[test]
    fn claims_services_and_crds() {
        let pvc = |phase: &str| {
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {}, "status": {"phase": phase}})
        };
        assert_eq!(status(&pvc("Pending")).health, Health::InProgress);
        assert_eq!(status(&pvc("Bound")).health, Health::Current);

        let mut lb = json!({"apiVersion": "v1", "kind": "Service", "metadata": {},
            "spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {}}});
        assert_eq!(status(&lb), Status::progress("Pending external IP"));
        lb["status"]["loadBalancer"]["ingress"] = json!([{"ip": "192.0.2.10"}]);
        assert_eq!(status(&lb).health, Health::Current);
        let cluster_ip = json!({"apiVersion": "v1", "kind": "Service", "metadata": {},
            "spec": {"type": "ClusterIP"}});
        assert_eq!(status(&cluster_ip).health, Health::Current);

        let crd = |conds: Value| {
            json!({"apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition", "metadata": {}, "status": {"conditions": conds}})
        };
        assert_eq!(
            status(&crd(json!([{"type": "NamesAccepted", "status": "True"}]))).health,
            Health::InProgress
        );
        assert_eq!(
            status(&crd(json!([{"type": "NamesAccepted", "status": "True"},
                               {"type": "Established", "status": "True"}])))
            .health,
            Health::Current
        );
        assert_eq!(
            status(&crd(json!([{"type": "NamesAccepted", "status": "False",
                "reason": "MultipleNamesNotAllowed"}])))
            .health,
            Health::Failed
        );
    }

    #[test]
    fn custom_resources_by_conditions() {
        let cr = |conds: Value| {
            json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": conds}})
        };
        assert_eq!(status(&cr(json!([]))).health, Health::Current);
        let not_ready = cr(
            json!([{"type": "Ready", "status": "False", "reason": "Progressing",
            "message": "New revision detected"}]),
        );
        assert_eq!(
            status(&not_ready),
            Status::progress("Progressing: New revision detected")
        );
        let stalled = cr(json!([{"type": "Ready", "status": "False"},
            {"type": "Stalled", "status": "True", "reason": "InvalidSpec", "message": "bad"}]));
        assert_eq!(status(&stalled), Status::failed("InvalidSpec: bad"));
        let ready = cr(
            json!([{"type": "Ready", "status": "True", "reason": "Succeeded",
            "message": "Canary analysis completed successfully"}]),
        );
        assert_eq!(status(&ready).health, Health::Current);
    }

    #[test]
    fn pods() {
        let pod =
            |st: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "status": st});
        assert_eq!(
            status(&pod(json!({"phase": "Pending"}))).health,
            Health::InProgress
        );
        let crash = pod(json!({"phase": "Pending", "containerStatuses": [
            {"name": "app", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}));
        assert_eq!(
            status(&crash),
            Status::failed("Pod is not starting: CrashLoopBackOff")
        );
        let ready = pod(json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}]}));
        assert_eq!(status(&ready).health, Health::Current);
        assert_eq!(
            status(&pod(json!({"phase": "Succeeded"}))).health,
            Health::Current
        );
    }
}
