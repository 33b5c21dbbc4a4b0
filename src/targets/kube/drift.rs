//! Drift, decided purely: the live object against what a server-side dry-run apply of
//! the desired object returns. The dry run merges gitcanary's fields into the live
//! object the way a real apply would, so any difference is a field gitcanary owns that
//! someone changed or removed; bookkeeping that every write moves (resourceVersion,
//! generation, managedFields timestamps) is left out of the comparison.

use serde_json::Value;

/// Metadata fields a write moves without changing what the object says.
const VOLATILE: &[&str] = &["managedFields", "resourceVersion", "generation"];

/// `v` without the volatile metadata.
fn normalized(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in VOLATILE {
            meta.remove(*f);
        }
    }
    v
}

/// An object as `gitcanary diff` shows it: without the metadata every write or the
/// API server sets.
pub fn display(v: &Value) -> Value {
    let mut v = normalized(v);
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in ["uid", "creationTimestamp", "selfLink"] {
            meta.remove(f);
        }
    }
    v
}

/// The paths (`.data.k`, `.metadata.labels.app`) where the dry-run result differs from
/// the live object, at most `limit` of them; empty when nothing drifted.
pub fn drifted(live: &Value, dry_run: &Value, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    walk(
        &normalized(live),
        &normalized(dry_run),
        String::new(),
        limit,
        &mut out,
    );
    out
}

fn walk(a: &Value, b: &Value, path: String, limit: usize, out: &mut Vec<String>) {
    if out.len() >= limit || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let (va, vb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                walk(va, vb, format!("{path}.{k}"), limit, out);
            }
        }
        _ => out.push(if path.is_empty() { ".".into() } else { path }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bookkeeping_is_not_drift_but_an_edited_field_is() {
        let live = json!({"metadata": {"name": "a", "resourceVersion": "7", "generation": 2,
            "managedFields": [{"manager": "gitcanary", "time": "2024-01-01T00:00:00Z"}]},
            "data": {"k": "edited", "other": "x"}});
        let same = json!({"metadata": {"name": "a", "resourceVersion": "8", "generation": 3,
            "managedFields": [{"manager": "gitcanary", "time": "2024-01-02T00:00:00Z"}]},
            "data": {"k": "edited", "other": "x"}});
        assert!(drifted(&live, &same, 10).is_empty());
        let fixed = json!({"metadata": {"name": "a", "labels": {"app.kubernetes.io/managed-by": "gitcanary"}},
            "data": {"k": "v", "other": "x"}});
        assert_eq!(
            drifted(&live, &fixed, 10),
            vec![".data.k", ".metadata.labels"]
        );
        assert_eq!(drifted(&live, &fixed, 1).len(), 1);
    }
}
