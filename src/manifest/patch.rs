//! Kustomize-style patches, pure: JSON 6902 operations, strategic-merge patches (maps
//! merge, `null` deletes, lists of named items merge by their key, `$patch: delete` and
//! `$patch: replace`), and the `target` selectors that pick objects. Used by
//! `kustomization.yaml` (`patches`, `patchesStrategicMerge`, `patchesJson6902`) and by
//! HelmRelease `spec.postRenderers[].kustomize`.

use serde_json::{Map, Value};

/// Which objects a patch applies to (kustomize's `target`). `name`, `namespace` and
/// `kind` are anchored regular expressions, as in kustomize, compiled once.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    /// API group (`apps`, empty for core).
    pub group: Option<String>,
    /// API version (`v1`).
    pub version: Option<String>,
    /// Kind.
    pub kind: Option<regex::Regex>,
    /// Name.
    pub name: Option<regex::Regex>,
    /// Namespace.
    pub namespace: Option<regex::Regex>,
    /// `k=v,k2!=v2,k3` label selector.
    pub label_selector: Option<String>,
    /// `k=v` annotation selector.
    pub annotation_selector: Option<String>,
}

/// A patch ready to apply.
#[derive(Clone, Debug)]
pub enum Patch {
    /// RFC 6902 operations, for the objects `Selector` picks.
    Json6902(Selector, Vec<Value>),
    /// A strategic-merge patch; with no explicit selector it picks the object its own
    /// `apiVersion`/`kind`/`metadata.name`/`metadata.namespace` name.
    Strategic(Option<Selector>, Value),
}

impl Selector {
    /// Reads a kustomize `target` mapping.
    pub fn from_value(v: &Value) -> Result<Selector, String> {
        let get = |k: &str| v[k].as_str().map(str::to_string);
        let re = |field: &str| -> Result<Option<regex::Regex>, String> {
            v[field]
                .as_str()
                .map(|r| {
                    regex::Regex::new(&format!("^(?:{r})$"))
                        .map_err(|e| format!("target.{field}: invalid regular expression: {e}"))
                })
                .transpose()
        };
        Ok(Selector {
            group: get("group"),
            version: get("version"),
            kind: re("kind")?,
            name: re("name")?,
            namespace: re("namespace")?,
            label_selector: get("labelSelector"),
            annotation_selector: get("annotationSelector"),
        })
    }

    /// Whether `obj` is picked.
    pub fn matches(&self, obj: &Value) -> bool {
        let api = obj["apiVersion"].as_str().unwrap_or_default();
        let (group, version) = api.rsplit_once('/').unwrap_or(("", api));
        let re = |pat: &Option<regex::Regex>, s: &str| pat.as_ref().is_none_or(|r| r.is_match(s));
        self.group.as_ref().is_none_or(|g| g == group)
            && self.version.as_ref().is_none_or(|v| v == version)
            && re(&self.kind, obj["kind"].as_str().unwrap_or_default())
            && re(
                &self.name,
                obj["metadata"]["name"].as_str().unwrap_or_default(),
            )
            && re(
                &self.namespace,
                obj["metadata"]["namespace"].as_str().unwrap_or_default(),
            )
            && self
                .label_selector
                .as_ref()
                .is_none_or(|s| selects(s, &obj["metadata"]["labels"]))
            && self
                .annotation_selector
                .as_ref()
                .is_none_or(|s| selects(s, &obj["metadata"]["annotations"]))
    }
}

/// Equality-based selector (`a=b`, `a==b`, `a!=b`, `a`, `!a`) against a string map.
fn selects(selector: &str, map: &Value) -> bool {
    selector
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .all(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                map[k.trim()].as_str() != Some(v.trim())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                map[k.trim()].as_str() == Some(v.trim())
            } else if let Some(k) = term.strip_prefix('!') {
                map.get(k.trim()).is_none()
            } else {
                map.get(term).is_some()
            }
        })
}

impl Patch {
    /// Builds a patch from its text: a YAML/JSON list is JSON 6902 (which needs a
    /// target), a mapping is a strategic-merge patch.
    pub fn parse(text: &str, target: Option<Selector>) -> Result<Patch, String> {
        let docs = super::yaml::parse_documents(text)
            .map_err(|e| format!("invalid YAML at {}: {}", e.pos, e.message))?;
        let value = docs
            .into_iter()
            .map(|d| d.root.to_json())
            .find(|v| !v.is_null())
            .ok_or("empty patch")?;
        match value {
            Value::Array(ops) => {
                let target = target.ok_or("a JSON 6902 patch needs a target")?;
                for (i, op) in ops.iter().enumerate() {
                    check_op(op).map_err(|e| format!("[{i}]: {e}"))?;
                }
                Ok(Patch::Json6902(target, ops))
            }
            v @ Value::Object(_) => {
                if target.is_none()
                    && (v["kind"].as_str().is_none() || v["metadata"]["name"].as_str().is_none())
                {
                    return Err(
                        "a strategic-merge patch without a target needs kind and metadata.name"
                            .into(),
                    );
                }
                Ok(Patch::Strategic(target, v))
            }
            _ => Err("a patch must be a mapping (strategic merge) or a list (JSON 6902)".into()),
        }
    }

    /// A JSON 6902 patch given as a list of operations (a HelmRelease post-renderer).
    pub fn from_ops(target: Selector, ops: Vec<Value>) -> Result<Patch, String> {
        for (i, op) in ops.iter().enumerate() {
            check_op(op).map_err(|e| format!("[{i}]: {e}"))?;
        }
        Ok(Patch::Json6902(target, ops))
    }

    /// Whether the patch applies to `obj`.
    pub fn matches(&self, obj: &Value) -> bool {
        match self {
            Patch::Json6902(s, _) | Patch::Strategic(Some(s), _) => s.matches(obj),
            Patch::Strategic(None, p) => {
                let api = |v: &Value| {
                    let a = v["apiVersion"].as_str().unwrap_or_default();
                    a.rsplit_once('/')
                        .map(|(g, _)| g.to_string())
                        .unwrap_or_default()
                };
                p["kind"] == obj["kind"]
                    && p["metadata"]["name"] == obj["metadata"]["name"]
                    && (p["apiVersion"].is_null() || api(p) == api(obj))
                    && (p["metadata"]["namespace"].is_null()
                        || p["metadata"]["namespace"] == obj["metadata"]["namespace"])
            }
        }
    }

    /// Applies the patch to `obj` (which it must match).
    pub fn apply(&self, obj: &mut Value) -> Result<(), String> {
        match self {
            Patch::Json6902(_, ops) => json6902(obj, ops),
            Patch::Strategic(_, p) => {
                let mut p = p.clone();
                // The patch's identity fields select; they never rename.
                if let Some(m) = p.as_object_mut() {
                    m.remove("apiVersion");
                    m.remove("kind");
                    if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.remove("name");
                        meta.remove("namespace");
                    }
                }
                strategic_merge(obj, &p);
                Ok(())
            }
        }
    }
}

fn check_op(op: &Value) -> Result<(), String> {
    let name = op["op"].as_str().ok_or("op: missing")?;
    op["path"].as_str().ok_or("path: missing")?;
    match name {
        "add" | "replace" | "test" if op.get("value").is_none() => {
            Err(format!("{name}: value is missing"))
        }
        "move" | "copy" if op["from"].as_str().is_none() => Err(format!("{name}: from is missing")),
        "add" | "remove" | "replace" | "move" | "copy" | "test" => Ok(()),
        other => Err(format!("op: unknown operation {other:?}")),
    }
}

fn pointer_parts(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("path {path:?} must start with /"))?;
    Ok(rest
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn parent_of<'a>(
    doc: &'a mut Value,
    parts: &[String],
    path: &str,
) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for p in parts {
        cur = match cur {
            Value::Object(m) => m.get_mut(p),
            Value::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("path {path:?}: {p:?} not found"))?;
    }
    Ok(cur)
}

fn remove_at(doc: &mut Value, path: &str) -> Result<Value, String> {
    let parts = pointer_parts(path)?;
    let (last, up) = parts.split_last().ok_or("cannot remove the whole object")?;
    match parent_of(doc, up, path)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| format!("path {path:?} not found")),
        Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => Ok(a.remove(i)),
            _ => Err(format!("path {path:?}: index out of range")),
        },
        _ => Err(format!("path {path:?}: parent is not a container")),
    }
}

fn add_at(doc: &mut Value, path: &str, value: Value, replace: bool) -> Result<(), String> {
    let parts = pointer_parts(path)?;
    let Some((last, up)) = parts.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_of(doc, up, path)? {
        Value::Object(m) => {
            if replace && !m.contains_key(last) {
                return Err(format!("path {path:?} not found"));
            }
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .map_err(|_| format!("path {path:?}: {last:?} is not an index"))?
            };
            if replace {
                let slot = a
                    .get_mut(i)
                    .ok_or_else(|| format!("path {path:?}: index out of range"))?;
                *slot = value;
            } else if i <= a.len() {
                a.insert(i, value);
            } else {
                return Err(format!("path {path:?}: index out of range"));
            }
            Ok(())
        }
        _ => Err(format!("path {path:?}: parent is not a container")),
    }
}

/// Applies RFC 6902 operations in order; the first failure stops with its index.
pub fn json6902(doc: &mut Value, ops: &[Value]) -> Result<(), String> {
    for (i, op) in ops.iter().enumerate() {
        let path = op["path"].as_str().unwrap_or_default();
        let r = match op["op"].as_str().unwrap_or_default() {
            "add" => add_at(doc, path, op["value"].clone(), false),
            "replace" => add_at(doc, path, op["value"].clone(), true),
            "remove" => remove_at(doc, path).map(|_| ()),
            "move" => remove_at(doc, op["from"].as_str().unwrap_or_default())
                .and_then(|v| add_at(doc, path, v, false)),
            "copy" => doc
                .pointer(op["from"].as_str().unwrap_or_default())
                .cloned()
                .ok_or_else(|| format!("from {:?} not found", op["from"]))
                .and_then(|v| add_at(doc, path, v, false)),
            "test" => match doc.pointer(path) {
                Some(v) if *v == op["value"] => Ok(()),
                _ => Err(format!("test failed at {path:?}")),
            },
            other => Err(format!("unknown operation {other:?}")),
        };
        r.map_err(|e| format!("operation {i}: {e}"))?;
    }
    Ok(())
}

/// The merge key of a list field in Kubernetes' strategic merge (by field name), if
/// its items are maps that carry it.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let key = match field {
        "volumeMounts" | "volumeDevices" => "mountPath",
        "ports" if items.iter().any(|i| i.get("containerPort").is_some()) => "containerPort",
        "ports" => "port",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "conditions" => "name",
        _ => return None,
    };
    let key = if field == "conditions" { "type" } else { key };
    items.iter().all(|i| i.get(key).is_some()).then_some(key)
}

/// Merges a strategic-merge `patch` into `target`: maps recursively, `null` deletes,
/// known lists of named items merge by key (`$patch: delete` removes an item), other
/// lists are replaced; `$patch: replace` on a map replaces it.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut m = p.clone();
        m.remove("$patch");
        *target = Value::Object(m);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object");
    for (k, v) in p {
        if k == "$patch" {
            continue;
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(_) => strategic_merge(t.entry(k.clone()).or_insert(Value::Null), v),
            Value::Array(items) => {
                let existing = t
                    .get(k)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let all: Vec<Value> = existing.iter().chain(items.iter()).cloned().collect();
                match merge_key(k, &all) {
                    Some(key) if items.iter().all(Value::is_object) => {
                        let mut merged = existing;
                        for item in items {
                            let id = &item[key];
                            let pos = merged.iter().position(|m| &m[key] == id);
                            let delete =
                                item.get("$patch").and_then(Value::as_str) == Some("delete");
                            match (pos, delete) {
                                (Some(i), true) => {
                                    merged.remove(i);
                                }
                                (None, true) => {}
                                (Some(i), false) => strategic_merge(&mut merged[i], item),
                                (None, false) => {
                                    let mut fresh = Value::Null;
                                    strategic_merge(&mut fresh, item);
                                    merged.push(fresh);
                                }
                            }
                        }
                        t.insert(k.clone(), Value::Array(merged));
                    }
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "podinfo", "namespace": "test", "labels": {"app": "podinfo"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "podinfod", "image": "podinfo:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}], "ports": [{"containerPort": 9898}]},
                {"name": "sidecar", "image": "side:1"}]}}}})
    }

    #[test]
    fn strategic_merge_by_name_with_deletes() {
        let mut d = deploy();
        let p = Patch::parse("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\nspec:\n  replicas: 3\n  template:\n    spec:\n      containers:\n        - name: podinfod\n          env:\n            - name: B\n              value: two\n            - name: C\n              value: \"3\"\n        - name: sidecar\n          $patch: delete\n", None).unwrap();
        assert!(p.matches(&d));
        p.apply(&mut d).unwrap();
        assert_eq!(d["spec"]["replicas"], 3);
        let c = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(c.as_array().unwrap().len(), 1);
        assert_eq!(c[0]["image"], "podinfo:1", "untouched fields stay");
        assert_eq!(
            c[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "two"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(d["metadata"]["name"], "podinfo");
        let other = Patch::parse("kind: Deployment\nmetadata:\n  name: other\n", None).unwrap();
        assert!(!other.matches(&d));
        // null deletes a key; $patch: replace replaces a map.
        strategic_merge(
            &mut d,
            &json!({"metadata": {"labels": {"$patch": "replace", "tier": "web"}}, "spec": {"replicas": null}}),
        );
        assert_eq!(d["metadata"]["labels"], json!({"tier": "web"}));
        assert!(d["spec"].get("replicas").is_none());
    }

    #[test]
    fn json6902_operations() {
        let mut d = deploy();
        let target = Selector::from_value(&json!({"kind": "Deploy.*", "name": "podinfo"})).unwrap();
        let p = Patch::parse("- op: replace\n  path: /spec/replicas\n  value: 5\n- op: add\n  path: /spec/template/spec/containers/0/env/-\n  value: {name: Z, value: z}\n- op: add\n  path: /metadata/annotations\n  value: {a~1b: d}\n- op: remove\n  path: /spec/template/spec/containers/1\n- op: copy\n  from: /metadata/labels/app\n  path: /metadata/labels/copied\n- op: test\n  path: /spec/replicas\n  value: 5\n", Some(target)).unwrap();
        assert!(p.matches(&d));
        p.apply(&mut d).unwrap();
        assert_eq!(d["spec"]["replicas"], 5);
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["env"][2]["name"],
            "Z"
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(d["metadata"]["labels"]["copied"], "podinfo");
        let bad = Patch::parse(
            "- op: replace\n  path: /spec/nope\n  value: 1\n",
            Some(Selector::default()),
        )
        .unwrap();
        assert!(bad
            .apply(&mut d)
            .unwrap_err()
            .contains("operation 0: path \"/spec/nope\" not found"));
        assert!(Patch::parse("- op: jump\n  path: /a\n", Some(Selector::default())).is_err());
        assert!(Patch::parse("- op: add\n  path: /a\n  value: 1\n", None)
            .unwrap_err()
            .contains("needs a target"));
    }

    #[test]
    fn selectors() {
        let d = deploy();
        let s = |v: Value| Selector::from_value(&v).unwrap().matches(&d);
        assert!(s(
            json!({"group": "apps", "version": "v1", "kind": "Deployment"})
        ));
        assert!(!s(json!({"group": ""})));
        assert!(s(json!({"labelSelector": "app=podinfo"})));
        assert!(!s(json!({"labelSelector": "app!=podinfo"})));
        assert!(s(json!({"labelSelector": "app,!tier"})));
        assert!(s(json!({"name": "pod.*", "namespace": "test"})));
        assert!(!s(json!({"name": "pod"})), "anchored");
        assert!(Selector::from_value(&json!({"name": "("})).is_err());
    }
}
