//! The JSON shapes of sources, objects, canaries and images: one function each, used by
//! both `gitcanary get ... -o json` and the `/api/v1/` handlers, so the two always
//! agree. Every shape is read from the state dir (and the in-process canary samples);
//! none carries a secret: URLs are redacted and Secret data is masked.

use crate::canary::executor::read_status;
use crate::canary::samples::{self, Samples};
use crate::canary::state::{CanaryStatus, Phase};
use crate::config::Config;
use crate::manifest::ObjectKey;
use crate::source::status::{self, SourceStatus};
use crate::targets::local::LocalStore;
use crate::util::time::rfc3339_secs;
use serde_json::{json, Value};
use std::path::Path;

/// What reading a shape can fail on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The local target's store.
    #[error("{0}")]
    Store(#[from] crate::targets::Error),
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

/// The source's status as `get sources` prints it (`SUSPENDED` is always false: the
/// source cannot be suspended yet).
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
    v["suspended"] = false.into();
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

/// `get canaries -o json` and `/api/v1/canaries`.
pub fn canaries(state_dir: &Path) -> Result<Vec<Value>> {
    let store = LocalStore::open(state_dir)?;
    Ok(store
        .list("flagger.app", "Canary")?
        .iter()
        .map(|k| {
            let st = read_status(state_dir, &k.namespace, &k.name);
            let rate = samples::with(state_dir, &k.namespace, &k.name, Samples::success_rate);
            canary(&k.namespace, &k.name, &st, rate)
        })
        .collect())
}

/// The canary page: the row, the spec summary, events, webhooks and every sample.
pub fn canary_detail(state_dir: &Path, ns: &str, name: &str) -> Result<Option<Value>> {
    let store = LocalStore::open(state_dir)?;
    let key = ObjectKey::new("flagger.app/v1beta1", "Canary", ns, name);
    let Some(obj) = store.get(&key)? else {
        return Ok(None);
    };
    let st = read_status(state_dir, ns, name);
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

/// A stored object's health in kstatus words (`Current`, `InProgress`, `Failed`), as
/// Flux reports it, and why.
fn health(state_dir: &Path, store: &LocalStore, key: &ObjectKey) -> (&'static str, String) {
    match (key.group.as_str(), key.kind.as_str()) {
        ("apps", "Deployment") => {
            let spec = store
                .get(key)
                .ok()
                .flatten()
                .and_then(|d| d["spec"]["replicas"].as_u64())
                .unwrap_or(1) as u32;
            let r = crate::targets::local::runtime::supervisor::rollout_state(
                state_dir,
                &key.namespace,
                &key.name,
                spec,
            );
            let msg = format!("{} of {} available", r.available, r.wanted);
            if r.unavailable_since.is_some() {
                ("Failed", msg)
            } else if r.available >= r.wanted && r.updated >= r.wanted {
                ("Current", msg)
            } else {
                ("InProgress", msg)
            }
        }
        ("flagger.app", "Canary") => {
            let st = read_status(state_dir, &key.namespace, &key.name);
            let h = match st.phase {
                Phase::Initialized | Phase::Succeeded => "Current",
                Phase::Failed => "Failed",
                _ => "InProgress",
            };
            (h, st.message)
        }
        _ => ("Current", String::new()),
    }
}

/// `get objects -o json` and `/api/v1/objects`: the inventory, with health.
pub fn objects(state_dir: &Path) -> Result<Vec<Value>> {
    let store = LocalStore::open(state_dir)?;
    let inv = store.read_inventory()?;
    Ok(inv
        .entries
        .iter()
        .map(|(k, e)| {
            let (h, why) = health(state_dir, &store, k);
            json!({"apiVersion": e.api_version, "kind": k.kind, "namespace": k.namespace,
                "name": k.name, "revision": e.revision, "hash": e.hash, "source": e.file,
                "health": h, "healthMessage": why})
        })
        .collect())
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

/// One inventoried object rendered as YAML (Secret data masked); `None` when it is
/// not in the inventory, so the API shows only what gitcanary applied.
pub fn object_yaml(state_dir: &Path, key: &ObjectKey) -> Result<Option<String>> {
    let store = LocalStore::open(state_dir)?;
    if !store.read_inventory()?.entries.contains_key(key) {
        return Ok(None);
    }
    Ok(store.get(key)?.map(|o| crate::util::yaml::yaml(&masked(o))))
}

/// `get images -o json` and `/api/v1/images`: the last automation run.
pub fn images(state_dir: &Path) -> Value {
    let st = crate::sync::reconcile::read_images_status(state_dir).unwrap_or_default();
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
        }];
        samples::advance(&mut s, &before, &after, 6.0);
        let v = canary("test", "podinfo", &st, s.success_rate());
        assert_eq!(v["status"], "Progressing");
        assert_eq!(v["weight"], 20);
        assert_eq!(v["successRate"], json!([99.9]));
    }
}
