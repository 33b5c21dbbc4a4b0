//! What gitcanary sends for one object and how it reads the answer, decided purely:
//! the applied body (the object from Git, labelled `app.kubernetes.io/managed-by:
//! gitcanary` and annotated with the revision that last changed it), whether the
//! object asks for force, whether it may be pruned, and what an API server refusal
//! means (a field another manager owns, an immutable field, anything else), in words
//! that name the field, the manager and the way out.

use crate::manifest::{Object, ObjectKey};
use serde_json::Value;

/// The label on everything gitcanary applies.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const GITCANARY: &str = "gitcanary";
/// The annotation naming the source revision that last changed the object.
pub const REVISION: &str = "gitcanary.io/revision";
/// The annotation that takes ownership of conflicting fields and recreates an object
/// whose immutable fields changed, like Flux's `kustomize.toolkit.fluxcd.io/force`.
pub const FORCE: &str = "gitcanary.io/force";
/// Annotations a CRD needs to be pruned: deleting a CRD deletes every custom resource
/// of its kind, so CRDs leaving Git are orphaned unless they opt in.
pub const CRD_PRUNE: &str = "gitcanary.io/prune";

/// Whether `key` names a CustomResourceDefinition.
pub fn is_crd(key: &ObjectKey) -> bool {
    key.group == "apiextensions.k8s.io" && key.kind == "CustomResourceDefinition"
}

/// The body of the server-side apply: the object as in Git plus gitcanary's label and
/// the revision annotation. `revision` is the one that last changed the object, so an
/// unchanged object keeps its annotation and a new commit sends it nothing.
pub fn body(object: &Value, revision: &str) -> Value {
    let mut v = object.clone();
    if !v["metadata"].is_object() {
        v["metadata"] = Value::Object(Default::default());
    }
    let meta = &mut v["metadata"];
    for (field, key, value) in [
        ("labels", MANAGED_BY, GITCANARY),
        ("annotations", REVISION, revision),
    ] {
        if !meta[field].is_object() {
            meta[field] = Value::Object(Default::default());
        }
        meta[field][key] = Value::String(value.to_string());
    }
    default_protocols(&mut v);
    v
}

/// Kinds whose ports lists the API server keys by (port, protocol).
const PORTED: &[&str] = &[
    "Service",
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
];

/// Fills in `protocol: TCP` on Service and container ports that omit it. Server-side
/// apply keys those lists by port and protocol and, before Kubernetes 1.21, refuses an
/// element without the key ("omits key field protocol"); Flux fills the same default.
pub fn default_protocols(v: &mut Value) {
    if !PORTED.contains(&v["kind"].as_str().unwrap_or_default()) {
        return;
    }
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    if k == "ports" {
                        for p in child.as_array_mut().into_iter().flatten() {
                            let is_port =
                                p.get("containerPort").is_some() || p.get("port").is_some();
                            if let Some(o) = p.as_object_mut().filter(|_| is_port) {
                                o.entry("protocol")
                                    .or_insert_with(|| Value::String("TCP".into()));
                            }
                        }
                    } else {
                        walk(child);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(v);
}

/// Whether the object carries `gitcanary.io/force: "true"`.
pub fn forced(object: &Value) -> bool {
    object["metadata"]["annotations"][FORCE].as_str() == Some("true")
}

/// Whether the object may be deleted when it leaves Git: the usual opt-out
/// annotations, and for CRDs an explicit `gitcanary.io/prune: enabled`.
pub fn prunable(o: &Object) -> bool {
    if !is_crd(&o.key) {
        return o.prune;
    }
    let v = o.value();
    v["metadata"]["annotations"][CRD_PRUNE].as_str() == Some("enabled")
}

/// Why the API server refused an apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Fields another field manager owns, as (manager, field path).
    Conflict(Vec<(String, String)>),
    /// A field that cannot change once set (Deployment selector, Job template).
    Immutable(String),
    /// Anything else, as the API server said it.
    Other(String),
}

/// Reads an API server error: 409 conflicts of server-side apply, 422 immutable-field
/// errors, or the message as given.
pub fn refusal(status: &kube::core::Status) -> Refusal {
    if status.code == 409 && status.reason == "Conflict" {
        let from_causes: Vec<(String, String)> = status
            .details
            .iter()
            .flat_map(|d| &d.causes)
            .filter(|c| c.reason == "FieldManagerConflict")
            .map(|c| (manager_of(&c.message), c.field.clone()))
            .collect();
        let conflicts = if from_causes.is_empty() {
            conflicts_in(&status.message)
        } else {
            from_causes
        };
        if !conflicts.is_empty() {
            return Refusal::Conflict(conflicts);
        }
    }
    if status.code == 422 && status.message.contains("field is immutable") {
        return Refusal::Immutable(status.message.clone());
    }
    Refusal::Other(status.message.clone())
}

/// `conflict with "kubectl-edit" using v1` gives `kubectl-edit`.
fn manager_of(message: &str) -> String {
    message
        .split('"')
        .nth(1)
        .unwrap_or(message)
        .trim()
        .to_string()
}

/// Parses the message of a 409 apply conflict when the status has no causes:
/// `Apply failed with 1 conflict: conflict with "m" using v1: .data.k` or, for
/// several, `conflicts with "m" using v1:\n- .a\n- .b`.
pub fn conflicts_in(message: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut manager: Option<String> = None;
    for line in message.split('\n') {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("- ") {
            if let Some(m) = &manager {
                out.push((m.clone(), rest.trim().to_string()));
            }
            continue;
        }
        let Some(at) = line.find("conflict") else {
            continue;
        };
        let tail = &line[at..];
        let Some(start) = tail.find(" with \"") else {
            continue;
        };
        let after = &tail[start + 7..];
        let Some(end) = after.find('"') else { continue };
        let m = after[..end].to_string();
        // The field follows the last ": " on the same line, when there is one.
        if let Some((_, field)) = after[end..].rsplit_once(": ") {
            if !field.trim().is_empty() {
                out.push((m.clone(), field.trim().to_string()));
            }
        }
        manager = Some(m);
    }
    out
}

/// The message shown for a refusal of `key` (from `file`), naming the way out.
pub fn describe(key: &ObjectKey, file: &str, refusal: &Refusal, force_tried: bool) -> String {
    let at = if file.is_empty() {
        key.to_string()
    } else {
        format!("{file}: {key}")
    };
    match refusal {
        Refusal::Conflict(fields) => {
            let list: Vec<String> = fields
                .iter()
                .map(|(m, f)| format!("{f} is owned by field manager {m:?}"))
                .collect();
            format!(
                "{at}: conflict: {}; set target.kubernetes.force or annotate {FORCE}: \"true\" to take ownership",
                list.join(", ")
            )
        }
        Refusal::Immutable(message) if force_tried => {
            format!("{at}: immutable field changed and recreating failed: {message}")
        }
        Refusal::Immutable(message) => format!(
            "{at}: immutable field changed: {message}; annotate {FORCE}: \"true\" to delete and recreate it"
        ),
        Refusal::Other(message) => format!("{at}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::response::{StatusCause, StatusDetails};

    fn status(
        code: u16,
        reason: &str,
        message: &str,
        causes: Vec<StatusCause>,
    ) -> kube::core::Status {
        let mut s = kube::core::Status::failure(message, reason).with_code(code);
        if !causes.is_empty() {
            s = s.with_details(StatusDetails {
                name: String::new(),
                group: String::new(),
                kind: String::new(),
                uid: String::new(),
                causes,
                retry_after_seconds: 0,
            });
        }
        s
    }

    #[test]
    fn the_body_carries_the_label_and_revision_and_keeps_the_rest() {
        let o = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "labels": {"app": "x"}}, "data": {"k": "v"}});
        let b = body(&o, "main@sha1:abc");
        assert_eq!(b["metadata"]["labels"]["app"], "x");
        assert_eq!(b["metadata"]["labels"][MANAGED_BY], "gitcanary");
        assert_eq!(b["metadata"]["annotations"][REVISION], "main@sha1:abc");
        assert_eq!(b["data"], o["data"]);
    }

    #[test]
    fn ports_get_the_default_protocol_and_other_kinds_are_left_alone() {
        let mut svc = serde_json::json!({"kind": "Service", "spec": {"ports": [
            {"port": 80}, {"port": 53, "protocol": "UDP"}]}});
        default_protocols(&mut svc);
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(svc["spec"]["ports"][1]["protocol"], "UDP");
        let mut dep = serde_json::json!({"kind": "Deployment", "spec": {"template": {"spec": {
            "containers": [{"name": "a", "ports": [{"containerPort": 8080}]}]}}}});
        default_protocols(&mut dep);
        assert_eq!(
            dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"],
            "TCP"
        );
        let mut cr = serde_json::json!({"kind": "Widget", "spec": {"ports": [{"port": 1}]}});
        default_protocols(&mut cr);
        assert!(cr["spec"]["ports"][0].get("protocol").is_none());
    }

    #[test]
    fn conflicts_name_manager_and_field_from_causes_or_message() {
        let cause = StatusCause {
            reason: "FieldManagerConflict".into(),
            message: "conflict with \"kubectl-edit\" using v1".into(),
            field: ".data.k".into(),
        };
        let s = status(409, "Conflict", "Apply failed with 1 conflict", vec![cause]);
        assert_eq!(
            refusal(&s),
            Refusal::Conflict(vec![("kubectl-edit".into(), ".data.k".into())])
        );
        let s = status(
            409,
            "Conflict",
            "Apply failed with 1 conflict: conflict with \"helm\" using apps/v1: .spec.replicas",
            vec![],
        );
        assert_eq!(
            refusal(&s),
            Refusal::Conflict(vec![("helm".into(), ".spec.replicas".into())])
        );
        let many = "Apply failed with 2 conflicts: conflicts with \"hpa\" using apps/v1:\n- .spec.replicas\n- .spec.paused";
        assert_eq!(
            conflicts_in(many),
            vec![
                ("hpa".into(), ".spec.replicas".into()),
                ("hpa".into(), ".spec.paused".into())
            ]
        );
        let key = ObjectKey::new("apps/v1", "Deployment", "t", "web");
        let text = describe(&key, "apps/web.yaml", &refusal(&s), false);
        assert_eq!(
            text,
            "apps/web.yaml: Deployment/t/web: conflict: .spec.replicas is owned by field manager \"helm\"; set target.kubernetes.force or annotate gitcanary.io/force: \"true\" to take ownership"
        );
    }

    #[test]
    fn immutable_fields_are_told_apart_from_other_refusals() {
        let msg = "Deployment.apps \"web\" is invalid: spec.selector: Invalid value: v1.LabelSelector{}: field is immutable";
        let s = status(422, "Invalid", msg, vec![]);
        assert_eq!(refusal(&s), Refusal::Immutable(msg.into()));
        let key = ObjectKey::new("apps/v1", "Deployment", "t", "web");
        assert!(describe(&key, "", &refusal(&s), false).ends_with("to delete and recreate it"));
        let s = status(422, "Invalid", "spec.replicas: Invalid value: -1", vec![]);
        assert_eq!(
            refusal(&s),
            Refusal::Other("spec.replicas: Invalid value: -1".into())
        );
    }

    #[test]
    fn crds_are_pruned_only_when_they_opt_in_and_force_is_read() {
        let crd = |ann: Value| {
            let v = serde_json::json!({"metadata": {"name": "x.example.com", "annotations": ann}});
            Object::from_json(
                ObjectKey::new(
                    "apiextensions.k8s.io/v1",
                    "CustomResourceDefinition",
                    "",
                    "x.example.com",
                ),
                "apiextensions.k8s.io/v1".into(),
                &v,
                Default::default(),
            )
        };
        assert!(!prunable(&crd(serde_json::json!({}))));
        assert!(prunable(&crd(serde_json::json!({CRD_PRUNE: "enabled"}))));
        let cm = Object::from_json(
            ObjectKey::new("v1", "ConfigMap", "t", "c"),
            "v1".into(),
            &serde_json::json!({"metadata": {"name": "c"}}),
            Default::default(),
        );
        assert!(prunable(&cm));
        assert!(forced(
            &serde_json::json!({"metadata": {"annotations": {FORCE: "true"}}})
        ));
        assert!(!forced(&serde_json::json!({"metadata": {}})));
    }
}
