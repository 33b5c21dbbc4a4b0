//! Charts: loading a chart's files (from a directory or an unpacked archive), Helm's
//! values coalescing (chart defaults, parent values for subcharts, `global`), and
//! rendering every template with Helm's built-in objects. The result is a list of
//! rendered manifests by template name, ready for the manifest loader.

use super::objects;
use super::template::Engine;
use crate::manifest::yaml::parse_documents;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// A chart: metadata, default values, templates, other files and subcharts.
#[derive(Clone, Debug, Default)]
pub struct Chart {
    /// Chart.yaml as JSON.
    pub meta: Value,
    /// values.yaml as JSON (an object).
    pub values: Value,
    /// values.schema.json, when present.
    pub schema: Option<Value>,
    /// `templates/...` files by path relative to the chart root.
    pub templates: BTreeMap<String, String>,
    /// Every other file (for `.Files`), minus Chart.yaml, values and `charts/`.
    pub files: BTreeMap<String, String>,
    /// Subcharts from `charts/<name>/`, in name order.
    pub subcharts: Vec<Chart>,
}

/// The release a chart is rendered for.
#[derive(Clone, Debug)]
pub struct Release {
    /// Release name.
    pub name: String,
    /// Target namespace.
    pub namespace: String,
    /// Release revision (1 on install).
    pub revision: u64,
    /// Whether this is the first install.
    pub is_install: bool,
}

/// What `.Capabilities` reports.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// e.g. `v1.29.0`.
    pub kube_version: String,
    /// `group/version` and `group/version/Kind` entries.
    pub api_versions: Vec<String>,
}

impl Default for Capabilities {
    fn default() -> Capabilities {
        let apis = [
            "v1",
            "apps/v1",
            "batch/v1",
            "networking.k8s.io/v1",
            "policy/v1",
            "autoscaling/v2",
            "rbac.authorization.k8s.io/v1",
            "flagger.app/v1beta1",
        ];
        Capabilities {
            kube_version: "v1.29.0".into(),
            api_versions: apis.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// The first YAML document of `text` as JSON (`null` when empty); errors name `file`.
pub(crate) fn yaml_value(file: &str, text: &str) -> Result<Value, String> {
    let docs = parse_documents(text).map_err(|e| format!("{file}:{e}"))?;
    Ok(docs
        .into_iter()
        .next()
        .map(|d| d.root.to_json())
        .unwrap_or(Value::Null))
}

impl Chart {
    /// Reads a chart directory.
    pub fn load_dir(root: &Path) -> Result<Chart, String> {
        let mut files = BTreeMap::new();
        walk(root, root, &mut files)?;
        Chart::from_files(&root.display().to_string(), files)
    }

    /// Builds a chart from its files (paths relative to the chart root, `/`-separated).
    /// `origin` names the chart in errors.
    pub fn from_files(origin: &str, all: BTreeMap<String, String>) -> Result<Chart, String> {
        let meta_text = all
            .get("Chart.yaml")
            .ok_or_else(|| format!("{origin}: no Chart.yaml"))?;
        let meta = yaml_value(&format!("{origin}/Chart.yaml"), meta_text)?;
        for field in ["name", "version"] {
            if meta
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(format!("{origin}/Chart.yaml: field {field} is required"));
            }
        }
        let values = match all.get("values.yaml") {
            Some(t) => match yaml_value(&format!("{origin}/values.yaml"), t)? {
                Value::Null => json!({}),
                v @ Value::Object(_) => v,
                _ => return Err(format!("{origin}/values.yaml: must be a mapping")),
            },
            None => json!({}),
        };
        let schema = match all.get("values.schema.json") {
            Some(t) => Some(
                serde_json::from_str(t)
                    .map_err(|e| format!("{origin}/values.schema.json:{}: {e}", e.line()))?,
            ),
            None => None,
        };
        let mut chart = Chart {
            meta,
            values,
            schema,
            ..Chart::default()
        };
        let mut subs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (path, text) in all {
            if let Some(rest) = path.strip_prefix("charts/") {
                if let Some((name, inner)) = rest.split_once('/') {
                    subs.entry(name.to_string())
                        .or_default()
                        .insert(inner.to_string(), text);
                }
            } else if path.starts_with("templates/") {
                chart.templates.insert(path, text);
            } else if !matches!(
                path.as_str(),
                "Chart.yaml" | "values.yaml" | "values.schema.json"
            ) {
                chart.files.insert(path, text);
            }
        }
        for (name, files) in subs {
            chart.subcharts.push(Chart::from_files(
                &format!("{origin}/charts/{name}"),
                files,
            )?);
        }
        Ok(chart)
    }

    /// The chart's name from Chart.yaml.
    pub fn name(&self) -> &str {
        self.meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The chart's version from Chart.yaml.
    pub fn version(&self) -> &str {
        self.meta
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if kind.is_symlink() {
            return Err(format!(
                "{}: symlinks are not allowed in charts",
                path.display()
            ));
        }
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else {
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .replace('\\', "/");
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            out.insert(rel, text);
        }
    }
    Ok(())
}

/// Deep-merges `over` onto `base`: maps merge key by key, anything else replaces;
/// a `null` in `over` deletes the key, as Helm does.
pub fn merge_values(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(k);
                    continue;
                }
                match b.get_mut(k) {
                    Some(slot @ Value::Object(_)) if v.is_object() => merge_values(slot, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// The values a chart sees: its defaults under the supplied values, with each enabled
/// subchart's section coalesced the same way and `global` passed down.
pub fn coalesce(chart: &Chart, supplied: &Value) -> Value {
    let mut values = chart.values.clone();
    merge_values(&mut values, supplied);
    let global = values.get("global").cloned().unwrap_or_else(|| json!({}));
    for sub in &chart.subcharts {
        let name = sub.name().to_string();
        let mut section = values.get(&name).cloned().unwrap_or_else(|| json!({}));
        let mut sub_global = sub
            .values
            .get("global")
            .cloned()
            .unwrap_or_else(|| json!({}));
        merge_values(&mut sub_global, &global);
        if let Value::Object(m) = &mut section {
            let mut g = sub_global;
            if let Some(own) = m.get("global") {
                merge_values(&mut g, own);
            }
            m.insert("global".into(), g);
        }
        let merged = coalesce(sub, &section);
        if let Value::Object(m) = &mut values {
            m.insert(name, merged);
        }
    }
    if let Value::Object(m) = &mut values {
        m.entry("global").or_insert_with(|| json!({}));
    }
    values
}

/// Whether a subchart is enabled by its `dependencies[].condition` in the parent.
fn enabled(parent: &Chart, values: &Value, sub: &str) -> bool {
    let deps = parent.meta.get("dependencies").and_then(Value::as_array);
    let Some(dep) = deps.and_then(|d| {
        d.iter()
            .find(|d| d.get("name").and_then(Value::as_str) == Some(sub))
    }) else {
        return true;
    };
    let Some(cond) = dep.get("condition").and_then(Value::as_str) else {
        return true;
    };
    for path in cond.split(',') {
        let mut v = values;
        let mut found = true;
        for key in path.trim().split('.') {
            match v.get(key) {
                Some(x) => v = x,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if found {
            if let Value::Bool(b) = v {
                return *b;
            }
        }
    }
    true
}

fn chart_object(meta: &Value) -> Value {
    // Helm exposes Chart.yaml fields capitalised: .Chart.Name, .Chart.Version, ...
    let mut out = Map::new();
    if let Value::Object(m) = meta {
        for (k, v) in m {
            let mut c = k.chars();
            let cap = c
                .next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default();
            out.insert(cap, v.clone());
        }
    }
    Value::Object(out)
}

/// One rendered template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// `chart/templates/x.yaml` (subcharts: `chart/charts/sub/templates/x.yaml`).
    pub name: String,
    /// The rendered text.
    pub text: String,
}

/// Renders a chart and its enabled subcharts for a release. Partials (`_*.tpl`) and
/// `NOTES.txt` are not output; templates rendering to only whitespace are dropped.
pub fn render(
    chart: &Chart,
    release: &Release,
    supplied: &Value,
    caps: &Capabilities,
) -> Result<Vec<Rendered>, String> {
    let values = coalesce(chart, supplied);
    if let Some(schema) = &chart.schema {
        super::schema::validate(schema, &values).map_err(|e| {
            format!(
                "{}: values don't meet the specifications of the schema: {e}",
                chart.name()
            )
        })?;
    }
    let mut engine = Engine::new();
    let mut jobs = Vec::new();
    collect(
        chart,
        chart.name().to_string(),
        &values,
        &mut engine,
        &mut jobs,
    )?;
    let release_obj = json!({
        "Name": release.name, "Namespace": release.namespace, "Service": "Helm",
        "Revision": release.revision, "IsInstall": release.is_install, "IsUpgrade": !release.is_install,
    });
    let kv = caps.kube_version.trim_start_matches('v');
    let mut parts = kv.split('.');
    let caps_obj = json!({
        "KubeVersion": {"Version": caps.kube_version, "GitVersion": caps.kube_version,
            "Major": parts.next().unwrap_or_default(), "Minor": parts.next().unwrap_or_default()},
        "APIVersions": objects::api_versions(&caps.api_versions),
        "HelmVersion": {"Version": "v3.14.0"},
    });
    let mut out = Vec::new();
    for job in jobs {
        let base = job
            .name
            .rsplit_once("/templates/")
            .map(|(b, _)| format!("{b}/templates"))
            .unwrap_or_default();
        let file = job.name.rsplit('/').next().unwrap_or_default();
        if file.starts_with('_') || file == "NOTES.txt" {
            continue;
        }
        let dot = json!({
            "Values": job.values, "Release": release_obj, "Chart": chart_object(&job.meta),
            "Capabilities": caps_obj, "Template": {"Name": job.name, "BasePath": base},
            "Files": objects::files(&job.files),
        });
        let _scope = crate::util::panic::scope(&job.name);
        let text = engine.render(&job.name, &dot).map_err(|e| e.to_string())?;
        if !text.trim().is_empty() {
            out.push(Rendered {
                name: job.name,
                text,
            });
        }
    }
    Ok(out)
}

struct Job {
    name: String,
    values: Value,
    meta: Value,
    files: BTreeMap<String, String>,
}

fn collect(
    chart: &Chart,
    prefix: String,
    values: &Value,
    engine: &mut Engine,
    jobs: &mut Vec<Job>,
) -> Result<(), String> {
    for (path, text) in &chart.templates {
        let name = format!("{prefix}/{path}");
        engine.add(&name, text).map_err(|e| e.to_string())?;
        jobs.push(Job {
            name,
            values: values.clone(),
            meta: chart.meta.clone(),
            files: chart.files.clone(),
        });
    }
    for sub in &chart.subcharts {
        if !enabled(chart, values, sub.name()) {
            continue;
        }
        let sub_values = values.get(sub.name()).cloned().unwrap_or_else(|| json!({}));
        collect(
            sub,
            format!("{prefix}/charts/{}", sub.name()),
            &sub_values,
            engine,
            jobs,
        )?;
    }
    Ok(())
}
