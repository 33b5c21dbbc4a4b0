//! The JSON shapes of sources, objects, canaries and images: one function each, used by
//! both `gitcanary get ... -o json` and the `/api/v1/` handlers, so the two always
//! agree. Objects are read through the [`Target`] trait, so the same shapes come from
//! the local store or a cluster; the source status, the canary engine's statuses and
//! samples and the last image automation run come from the state dir, which every
//! target keeps. None carries a secret: URLs are redacted and Secret data is masked.

use crate::canary::executor::{read_status, status_path};
use crate::canary::samples::{self, Samples};
use crate::canary::state::{CanaryStatus, Phase};
use crate::config::Config;
use crate::manifest::ObjectKey;
use crate::source::status::{self, SourceStatus};
use crate::targets::kube::health::Status;
use crate::targets::Target;
use crate::util::time::rfc3339_secs;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

/// What reading a shape can fail on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target.
    #[error("{0}")]
    Target(#[from] crate::targets::Error),
    /// A status file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the shapes of applied objects and canaries are read from.
#[derive(Clone, Copy)]
pub struct View<'a> {
    /// The target the objects were applied to.
    pub target: &'a dyn Target,
    /// The state dir: the canary engine's statuses, commands and samples.
    pub state_dir: &'a Path,
}

/// The source's status as `get sources` prints it.
pub fn source_status(cfg: &Config) -> Result<SourceStatus> {
    let state = cfg.state_dir();
    let st = status::read(&state).map_err(|source| Error::Io {
        path: status::path(&state).display().to_string(),
        source,
    })?;
    let mut st = st.unwrap_or_else(|| SourceStatus {
        name: cfg.source.name.clone(),
        branch: cfg.source.branch.clone(),
        message: "not synced yet".into(),
        ..Default::default()
    });
    // Written redacted already; redacting again costs nothing and guards old files.
    st.url = crate::source::git::redact_url(if st.url.is_empty() {
        &cfg.source.url
    } else {
        &st.url
    });
    Ok(st)
}

/// `get sources -o json` and `/api/v1/sources`: a list of one source.
pub fn sources(cfg: &Config) -> Result<Value> {
    let st = source_status(cfg)?;
    let mut v = serde_json::to_value(&st).unwrap_or_default();
    for k in ["fetchedAt", "appliedAt", "lastErrorAt", "lastAttemptAt"] {
        if let Some(t) = v[k].as_f64() {
            v[k] = rfc3339_secs(t).into();
        }
    }
    v["suspended"] = crate::source::suspend::is_suspended(&cfg.state_dir()).into();
    Ok(Value::Array(vec![v]))
}

/// One canary's row, with its latest success-rate samples for the sparkline.
pub fn canary(ns: &str, name: &str, st: &CanaryStatus, success_rate: Vec<f64>) -> Value {
    let transition = if st.last_transition_time > 0.0 {
        rfc3339_secs(st.last_transition_time)
    } else {
        String::new()
    };
    json!({"namespace": ns, "name": name, "status": format!("{:?}", st.phase),
        "weight": st.canary_weight, "failedChecks": st.failed_checks,
        "lastTransitionTime": transition, "message": st.message,
        "successRate": success_rate})
}

/// The canary key of `ns/name`.
fn canary_key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new("flagger.app/v1beta1", "Canary", ns, name)
}

/// A canary's status: the engine's record in the state dir once this gitcanary's
/// engine has stepped it, else what the Canary object's `status` says (`obj`, read
/// when needed: a cluster's canary controller writes it there, as Flagger does).
fn canary_status(view: View, key: &ObjectKey, obj: Option<&Value>) -> Result<CanaryStatus> {
    let (ns, name) = (&key.namespace, &key.name);
    if status_path(view.state_dir, ns, name).exists() {
        return Ok(read_status(view.state_dir, ns, name));
    }
    let fetched;
    let obj = match obj {
        Some(o) => o,
        None => {
            fetched = view.target.get(key)?.unwrap_or_default();
            &fetched
        }
    };
    Ok(status_of_object(&obj["status"]))
}

/// A Canary object's `status` (Flagger's fields) as the engine's status.
fn status_of_object(s: &Value) -> CanaryStatus {
    let message = s["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Promoted")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default();
    let count = |k: &str| s[k].as_u64().unwrap_or(0).min(u32::MAX as u64) as u32;
    CanaryStatus {
        phase: serde_json::from_value(s["phase"].clone()).unwrap_or_default(),
        canary_weight: count("canaryWeight"),
        failed_checks: count("failedChecks"),
        iterations: count("iterations"),
        last_transition_time: s["lastTransitionTime"]
            .as_str()
            .and_then(crate::util::time::parse_rfc3339)
            .unwrap_or(0.0),
        message: message.to_string(),
        ..Default::default()
    }
}

/// `get canaries -o json` and `/api/v1/canaries`: the Canaries in the inventory.
pub fn canaries(view: View) -> Result<Vec<Value>> {
    let inv = view.target.inventory()?;
    inv.entries
        .keys()
        .filter(|k| k.group == "flagger.app" && k.kind == "Canary")
        .map(|k| {
            let st = canary_status(view, k, None)?;
            let rate = samples::with(view.state_dir, &k.namespace, &k.name, Samples::success_rate);
            Ok(canary(&k.namespace, &k.name, &st, rate))
        })
        .collect()
}

/// The canary page: the row, the spec summary, events, webhooks and every sample.
pub fn canary_detail(view: View, ns: &str, name: &str) -> Result<Option<Value>> {
    let state_dir = view.state_dir;
    let key = canary_key(ns, name);
    let Some(obj) = view.target.get(&key)? else {
        return Ok(None);
    };
    let st = canary_status(view, &key, Some(&obj))?;
    let s = samples::load(state_dir, ns, name);
    let mut v = canary(ns, name, &st, s.success_rate());
    v["suspended"] = crate::canary::commands::suspended(state_dir, ns, name).into();
    v["spec"] = match crate::canary::spec::parse(&obj) {
        Ok(c) => {
            let a = &c.analysis;
            v["suspended"] = (c.suspend || v["suspended"] == true).into();
            json!({"target": c.target, "service": c.service, "port": c.port,
                "interval": crate::util::duration::format(a.interval), "threshold": a.threshold,
                "stepWeight": a.step_weight, "stepWeights": a.step_weights, "maxWeight": a.max_weight,
                "iterations": a.iterations,
                "metrics": a.metrics.iter().map(|m| json!({"name": m.name, "min": m.min, "max": m.max,
                    "unit": samples::unit(&m.name), "interval": crate::util::duration::format(m.interval),
                    "template": m.template.as_ref().map(|(n, ns)| format!("{n}.{ns}"))})).collect::<Vec<_>>(),
                "webhooks": a.webhooks.iter().map(|w| webhook(w, &st)).collect::<Vec<_>>()})
        }
        Err(errs) => json!({"error": errs.join("; ")}),
    };
    v["events"] = serde_json::to_value(&st.events).unwrap_or_default();
    v["lastMetrics"] = serde_json::to_value(&st.last_metrics).unwrap_or_default();
    v["samples"] = serde_json::to_value(&s).unwrap_or_default();
    Ok(Some(v))
}

/// A webhook and its last result: the last event naming it since the analysis
/// began (Flagger reports a failing hook only through its halt event).
fn webhook(w: &crate::canary::spec::WebhookSpec, st: &CanaryStatus) -> Value {
    let needle = format!(" {} failed", w.name);
    let failure = st
        .events
        .iter()
        .rev()
        .take_while(|e| e.at >= st.analysis_start)
        .find(|e| e.message.contains(&needle))
        .map(|e| e.message.clone());
    let ran = st.analysis_start > 0.0 && st.phase != Phase::Initialized;
    json!({"name": w.name, "type": format!("{:?}", w.kind),
        // A query can carry a token: show the address only.
        "url": crate::source::git::redact_url(w.url.split(['?', '#']).next().unwrap_or_default()),
        "result": match (&failure, ran) { (Some(_), _) => "failed", (None, true) => "ok", (None, false) => "not run" },
        "message": failure})
}

/// Whether the target judges an object's health from the live object: a Canary's
/// health is its phase, and plain data costs no read. A Service's type is in its live
/// object, so every Service is judged.
fn judged_by_target(key: &ObjectKey) -> bool {
    (key.group.as_str(), key.kind.as_str()) != ("flagger.app", "Canary")
        && crate::sync::health::watched_kind(key, || true)
}

/// An applied object's health in kstatus words (`Current`, `InProgress`, `Failed`,
/// `Terminating`, or `NotFound` when it is gone), as Flux reports it, and why.
/// `judged` is what the target said of it, for the kinds [`judged_by_target`].
fn health(
    view: View,
    key: &ObjectKey,
    live: bool,
    judged: Option<Option<Status>>,
) -> Result<(String, String)> {
    if !live {
        return Ok(("NotFound".into(), "not found in the target".into()));
    }
    if (key.group.as_str(), key.kind.as_str()) == ("flagger.app", "Canary") {
        let st = canary_status(view, key, None)?;
        let h = match st.phase {
            Phase::Initialized | Phase::Succeeded => "Current",
            Phase::Failed => "Failed",
            _ => "InProgress",
        };
        return Ok((h.into(), st.message));
    }
    Ok(match judged {
        None => ("Current".into(), String::new()),
        Some(Some(s)) => (format!("{:?}", s.health), s.message),
        Some(None) => ("NotFound".into(), "not found in the target".into()),
    })
}

/// `get objects -o json` and `/api/v1/objects`: the inventory, with health.
pub fn objects(view: View) -> Result<Vec<Value>> {
    let inv = view.target.inventory()?;
    // Read together: a LIST per kind and namespace on Kubernetes, not a GET each.
    let keys: Vec<ObjectKey> = inv
        .entries
        .iter()
        .filter(|(k, e)| e.live && judged_by_target(k))
        .map(|(k, _)| k.clone())
        .collect();
    let mut judged = HashMap::with_capacity(keys.len());
    for (k, status) in keys.iter().zip(view.target.health_of(&keys)) {
        judged.insert(k, status?);
    }
    inv.entries
        .iter()
        .map(|(k, e)| {
            let (h, why) = health(view, k, e.live, judged.remove(k))?;
            // The cluster's inventory records Flux's `main@sha1:<commit>`, the local
            // store the commit: both show the commit.
            let commit = e
                .revision
                .rsplit_once("@sha1:")
                .map_or(e.revision.as_str(), |r| r.1);
            Ok(
                json!({"apiVersion": e.api_version, "kind": k.kind, "namespace": k.namespace,
                "name": k.name, "revision": commit, "hash": e.hash, "source": e.file,
                "health": h, "healthMessage": why}),
            )
        })
        .collect()
}

/// What a Secret must never show: its values. Keys stay, so a reader sees what is set.
const MASK: &str = "*****";

/// A stored object for display, with Secret data masked: `data` and `stringData`
/// values, and the last-applied annotation that would repeat them.
pub fn masked(mut obj: Value) -> Value {
    if obj["kind"] == "Secret" {
        for field in ["data", "stringData"] {
            if let Some(m) = obj[field].as_object_mut() {
                for v in m.values_mut() {
                    *v = MASK.into();
                }
            }
        }
        if let Some(a) = obj["metadata"]["annotations"].as_object_mut() {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
    obj
}

/// One inventoried object as the target holds it, rendered as YAML (Secret data
/// masked, and without the field managers a cluster records); `None` when it is not
/// in the inventory, so the API shows only what gitcanary applied.
pub fn object_yaml(view: View, key: &ObjectKey) -> Result<Option<String>> {
    if !view.target.inventory()?.entries.contains_key(key) {
        return Ok(None);
    }
    Ok(view.target.get(key)?.map(|mut o| {
        if let Some(meta) = o["metadata"].as_object_mut() {
            meta.remove("managedFields");
        }
        crate::util::yaml::yaml(&masked(o))
    }))
}

/// `get images -o json` and `/api/v1/images`: the last automation run.
pub fn images(state_dir: &Path) -> Value {
    let mut st = crate::sync::reconcile::read_images_status(state_dir).unwrap_or_default();
    // Read afresh, as `get images` does: a canary may have rejected a tag, or
    // `images allow` cleared one, since automation last ran.
    let rejected = crate::image::rejected::read(state_dir);
    for row in &mut st.rows {
        row.rejected = rejected.of(&row.image);
    }
    serde_json::to_value(&st).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_masked_and_keys_kept() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"password\":\"aHVudGVyMg==\"}}", "team": "a"}},
            "data": {"password": "aHVudGVyMg=="}, "stringData": {"token": "hunter2"}});
        let text = crate::util::yaml::yaml(&masked(secret));
        assert!(
            !text.contains("aHVudGVyMg") && !text.contains("hunter2"),
            "{text}"
        );
        assert!(text.contains("password") && text.contains("token") && text.contains("team"));
        let cm = json!({"kind": "ConfigMap", "data": {"k": "v"}});
        assert_eq!(masked(cm.clone()), cm, "other kinds stay as they are");
    }

    #[test]
    fn a_canary_objects_status_reads_as_flaggers_fields() {
        let st = status_of_object(&json!({"phase": "Progressing", "canaryWeight": 30,
            "failedChecks": 1, "lastTransitionTime": "2026-12-01T20:30:00Z",
            "conditions": [{"type": "Promoted", "message": "New revision detected, progressing canary analysis."}]}));
        assert_eq!(st.phase, Phase::Progressing);
        assert_eq!((st.canary_weight, st.failed_checks), (30, 1));
        assert_eq!(
            rfc3339_secs(st.last_transition_time),
            "2026-12-01T20:30:00Z"
        );
        assert_eq!(st.message, Phase::Progressing.message());
        let none = status_of_object(&Value::Null);
        assert_eq!(none.phase, Phase::Initializing, "no status yet");
        let odd = status_of_object(&json!({"phase": "Exploded", "canaryWeight": -3}));
        assert_eq!((odd.phase, odd.canary_weight), (Phase::Initializing, 0));
    }

    #[test]
    fn a_canary_row_carries_its_success_rate_sparkline() {
        let st = CanaryStatus {
            phase: Phase::Progressing,
            canary_weight: 20,
            ..Default::default()
        };
        let mut s = Samples::default();
        let before = CanaryStatus::default();
        let mut after = st.clone();
        after.analysis_start = 5.0;
        after.last_step_time = 6.0;
        after.last_metrics = vec![crate::canary::state::MetricValue {
            name: "request-success-rate".into(),
            value: Some(99.9),
            min: Some(99.0),
            max: None,
            failed: false,
        }];
        samples::advance(&mut s, &before, &after, 6.0);
        let v = canary("test", "podinfo", &st, s.success_rate());
        assert_eq!(v["status"], "Progressing");
        assert_eq!(v["weight"], 20);
        assert_eq!(v["successRate"], json!([99.9]));
    }
}
