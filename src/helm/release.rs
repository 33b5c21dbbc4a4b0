//! HelmRelease → objects. For each HelmRelease (`flux.weave.works/v1beta1`,
//! `helm.fluxcd.io/v1`, `helm.toolkit.fluxcd.io/v2`) this plans the release (name,
//! namespace, chart from `source`, values from the chart, `valuesFiles`,
//! `valueFileSecrets`, `valuesFrom` and `spec.values`), renders the chart as the release's
//! current revision, applies post-renderers, and parses the output with the same checks
//! as files in Git, setting hooks apart in a release record. Pure apart from the
//! injected chart fetcher: sync applies and prunes the objects like any other, and runs
//! the hooks.
use super::chart::{merge_values, render, Capabilities, Chart, Release};
use super::hooks::{sort_hooks, Hook, ReleaseRecord};
use super::post_render::post_renderers;
pub use super::source::{chart_source, git_repository_ref, ChartSource};
use super::source::{describe, effective_source};
use crate::manifest::load::parse_generated;
use crate::manifest::snapshot::{join, Entry, Snapshot};
use crate::manifest::{ManifestError, Object};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Chart files above this total size are refused.
pub const MAX_CHART_BYTES: usize = 16 << 20;

/// What expanding the HelmReleases of a revision gave.
#[derive(Debug, Default)]
pub struct Expansion {
    /// Rendered objects, in release then template order.
    pub objects: Vec<Object>,
    /// Errors; any error means the revision must not be applied.
    pub errors: Vec<ManifestError>,
    /// Releases left unrendered because their chart source is not in this repository,
    /// with the reason.
    pub skipped: Vec<(String, String)>,
    /// One record per rendered release, with its hooks (`helm.sh/hook` objects, left
    /// out of `objects`) in Helm's order.
    pub releases: Vec<ReleaseRecord>,
}

/// Helm's install order of kinds; other kinds go last, in template order.
pub const INSTALL_ORDER: &[&str] = &[
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
];

/// Sorts objects the way Helm installs them (stable within a kind).
pub fn sort_for_install(objects: &mut [Object]) {
    objects.sort_by_key(|o| {
        INSTALL_ORDER
            .iter()
            .position(|k| *k == o.key.kind)
            .unwrap_or(INSTALL_ORDER.len())
    });
}

/// The release name and namespace, with Flux's defaults: v2 uses
/// `[targetNamespace-]name`, the Helm operator `namespace-name`.
pub fn release_identity(hr: &Value) -> (String, String) {
    let name = hr["metadata"]["name"].as_str().unwrap_or_default();
    let ns = hr["metadata"]["namespace"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let target = hr["spec"]["targetNamespace"]
        .as_str()
        .filter(|s| !s.is_empty());
    let release = match hr["spec"]["releaseName"].as_str().filter(|s| !s.is_empty()) {
        Some(r) => r.to_string(),
        None if hr["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .starts_with("helm.toolkit.fluxcd.io/") =>
        {
            match target {
                Some(t) => format!("{t}-{name}"),
                None => name.to_string(),
            }
        }
        None => format!("{ns}-{name}"),
    };
    (release, target.unwrap_or(ns).to_string())
}

fn set_path(v: &mut Value, path: &str, leaf: Value) {
    let mut cur = v;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let m = cur.as_object_mut().expect("made an object");
        if i + 1 == parts.len() {
            m.insert(p.to_string(), leaf);
            return;
        }
        cur = m.entry(p.to_string()).or_insert_with(|| json!({}));
    }
}

/// Reads one `valuesFrom` entry (v2 `{kind,name,valuesKey,targetPath,optional}` or the
/// Helm operator's `{configMapKeyRef|secretKeyRef: {name,key,namespace,optional}}`).
fn values_from(entry: &Value, ns: &str, objects: &[Object]) -> Result<Option<Value>, String> {
    let (kind, r) = if let Some(r) = entry.get("configMapKeyRef") {
        ("ConfigMap", r)
    } else if let Some(r) = entry.get("secretKeyRef") {
        ("Secret", r)
    } else {
        (entry["kind"].as_str().unwrap_or_default(), entry)
    };
    if !matches!(kind, "ConfigMap" | "Secret") {
        return Err(format!(
            "kind: expected ConfigMap or Secret, found {kind:?}"
        ));
    }
    let name = r["name"].as_str().ok_or("name: missing required field")?;
    let ns = r["namespace"].as_str().unwrap_or(ns);
    let key = r["valuesKey"]
        .as_str()
        .or(r["key"].as_str())
        .unwrap_or("values.yaml");
    let optional = r["optional"].as_bool().unwrap_or(false);
    let found = crate::manifest::object::find(objects, "", kind, ns, name);
    let Some(obj) = found else {
        return if optional {
            Ok(None)
        } else {
            Err(format!("{kind} {ns}/{name} not found in the repository"))
        };
    };
    let v = obj.value();
    let text = match crate::manifest::object::data_value(&v, kind, key)
        .map_err(|e| format!("{kind} {ns}/{name}: {e}"))?
    {
        Some(t) => t,
        None if optional => return Ok(None),
        None => return Err(format!("{kind} {ns}/{name} has no key {key}")),
    };
    if let Some(target) = r["targetPath"].as_str().filter(|s| !s.is_empty()) {
        let mut out = json!({});
        set_path(&mut out, target, Value::from(text));
        return Ok(Some(out));
    }
    let docs = crate::manifest::yaml::parse_documents(&text)
        .map_err(|e| format!("{kind} {ns}/{name} key {key}: invalid YAML at {e}"))?;
    match docs.into_iter().next().map(|d| d.root.to_json()) {
        Some(v @ Value::Object(_)) => Ok(Some(v)),
        None | Some(Value::Null) => Ok(Some(json!({}))),
        Some(_) => Err(format!(
            "{kind} {ns}/{name} key {key}: values must be a mapping"
        )),
    }
}

/// Reads the chart folder `dir` from the snapshot; symlinks and oversized charts are
/// refused.
pub fn read_chart(snap: &dyn Snapshot, dir: &str) -> Result<Chart, String> {
    fn walk(
        snap: &dyn Snapshot,
        root: &str,
        dir: &str,
        out: &mut BTreeMap<String, String>,
        total: &mut usize,
    ) -> Result<(), String> {
        for name in snap.children(dir) {
            let path = format!("{dir}/{name}");
            match snap.entry(&path) {
                Some(Entry::Dir) => walk(snap, root, &path, out, total)?,
                Some(Entry::File) => {
                    let bytes = snap.read(&path).map_err(|e| format!("{path}: {e}"))?;
                    *total += bytes.len();
                    if *total > MAX_CHART_BYTES {
                        return Err(format!(
                            "{root}: chart is larger than {} MiB",
                            MAX_CHART_BYTES >> 20
                        ));
                    }
                    let rel = path[root.len() + 1..].to_string();
                    out.insert(rel, String::from_utf8_lossy(&bytes).into_owned());
                }
                Some(Entry::Symlink(_)) => {
                    return Err(format!("{path}: symlinks are not allowed in charts"))
                }
                None => {}
            }
        }
        Ok(())
    }
    match snap.entry(dir) {
        Some(Entry::Dir) => {}
        _ => return Err(format!("{dir}: chart folder not found in the repository")),
    }
    let mut files = BTreeMap::new();
    walk(snap, dir, dir, &mut files, &mut 0)?;
    Chart::from_files(dir, files)
}

/// Fetches a chart from outside the cluster repository: a [`ChartSource::HelmRepo`]
/// (with its URL resolved) or a [`ChartSource::Git`].
pub type Fetcher<'a> = &'a dyn Fn(&ChartSource) -> Result<Chart, String>;

/// Renders every in-repo HelmRelease among `objects`.
pub fn expand(
    snap: &dyn Snapshot,
    objects: &[Object],
    source_url: &str,
    caps: &Capabilities,
) -> Expansion {
    expand_with(snap, objects, source_url, caps, None, &[])
}

/// Why a HelmRelease has no chart to render.
enum NoChart {
    /// The chart's source is not one gitcanary renders here.
    Skipped(String),
    /// The field and the error.
    Error(String, String),
}

impl NoChart {
    fn chart(msg: String) -> NoChart {
        NoChart::Error("spec.chart".into(), msg)
    }
}

/// The chart a HelmRelease names, with the folder or label its errors name and
/// whether it is read from the followed repository.
fn chart_for(
    v: &Value,
    snap: &dyn Snapshot,
    source_url: &str,
    objects: &[Object],
    namespace: &str,
    fetch: Option<Fetcher>,
) -> Result<(String, Chart, bool), NoChart> {
    match effective_source(v, source_url, objects, namespace) {
        Err(e) => {
            let (field, msg) = e.split_once(": ").unwrap_or(("spec.chart", &e));
            Err(NoChart::Error(field.to_string(), msg.to_string()))
        }
        Ok(ChartSource::Other(why)) => Err(NoChart::Skipped(format!("{why} is not supported"))),
        Ok(ChartSource::Path(p)) => {
            let Some(dir) = join("", &p) else {
                return Err(NoChart::chart(format!(
                    "chart path {p:?} escapes the repository"
                )));
            };
            let chart = read_chart(snap, &dir).map_err(NoChart::chart)?;
            Ok((dir, chart, true))
        }
        Ok(remote) => {
            let Some(fetch) = fetch else {
                return Err(NoChart::Skipped(format!(
                    "{} is fetched only when syncing",
                    describe(&remote)
                )));
            };
            let c = fetch(&remote).map_err(NoChart::chart)?;
            let label = match &remote {
                ChartSource::Git { path, .. } => path.clone(),
                _ => format!("{}-{}", c.name(), c.version()),
            };
            Ok((label, c, false))
        }
    }
}

/// The values a HelmRelease supplies from other objects and files, in Flux's
/// order (`valueFileSecrets`, then `valuesFrom`), before its inline `values`; or
/// every (field, error) found.
fn supplied_values(
    v: &Value,
    chart: &Chart,
    dir: &str,
    namespace: &str,
    objects: &[Object],
) -> Result<Value, Vec<(String, String)>> {
    let mut supplied = json!({});
    let mut errors = Vec::new();
    // flux.weave.works/v1beta1 `valueFileSecrets`: Secrets whose `values.yaml` key
    // holds values, before `valuesFrom`.
    for (i, s) in v["spec"]["valueFileSecrets"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let entry = json!({"secretKeyRef": {"name": s["name"], "key": "values.yaml"}});
        match values_from(&entry, namespace, objects) {
            Ok(Some(vals)) => merge_values(&mut supplied, &vals),
            Ok(None) => {}
            Err(e) => {
                errors.push((format!("spec.valueFileSecrets[{i}]"), e));
            }
        }
    }
    for (i, entry) in v["spec"]["valuesFrom"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        // The Helm operator's `chartFileRef`: a values file inside the chart.
        if let Some(path) = entry["chartFileRef"]["path"].as_str() {
            let optional = entry["chartFileRef"]["optional"].as_bool().unwrap_or(false);
            let rel = path.trim_start_matches("./");
            match chart
                .files
                .get(rel)
                .map(|t| super::chart::yaml_value(path, t))
            {
                Some(Ok(vals @ Value::Object(_))) => merge_values(&mut supplied, &vals),
                Some(Ok(Value::Null)) => {}
                Some(Ok(_)) => {
                    errors.push((
                        format!("spec.valuesFrom[{i}].chartFileRef"),
                        format!("{path}: values must be a mapping"),
                    ));
                }
                Some(Err(e)) => {
                    errors.push((format!("spec.valuesFrom[{i}].chartFileRef"), e));
                }
                None if optional => {}
                None => {
                    errors.push((
                        format!("spec.valuesFrom[{i}].chartFileRef"),
                        format!("{path}: no such file in chart {dir}"),
                    ));
                }
            }
            continue;
        }
        if entry.get("externalSourceRef").is_some() {
            errors.push((format!("spec.valuesFrom[{i}].externalSourceRef"), "values from URLs are not supported: commit the file and use chartFileRef or a ConfigMap".into(),
            ));
            continue;
        }
        match values_from(entry, namespace, objects) {
            Ok(Some(vals)) => merge_values(&mut supplied, &vals),
            Ok(None) => {}
            Err(e) => {
                errors.push((format!("spec.valuesFrom[{i}]"), e));
            }
        }
    }
    if errors.is_empty() {
        Ok(supplied)
    } else {
        Err(errors)
    }
}

/// Renders every HelmRelease among `objects`; charts in Helm repositories come from
/// `fetch` (without one, those releases are skipped).
pub fn expand_with(
    snap: &dyn Snapshot,
    objects: &[Object],
    source_url: &str,
    caps: &Capabilities,
    fetch: Option<Fetcher>,
    prev: &[ReleaseRecord],
) -> Expansion {
    let mut out = Expansion::default();
    for hr in objects.iter().filter(|o| o.key.kind == "HelmRelease") {
        let v = hr.value();
        let id = format!("HelmRelease {}/{}", hr.key.namespace, hr.key.name);
        let fail = |field: &str, msg: String| {
            ManifestError::at_origin(&hr.origin, Some(field.to_string()), format!("{id}: {msg}"))
        };
        let (release, ns) = release_identity(&v);
        if let Err(e) = crate::manifest::names::check_release(&release, &ns) {
            let (field, msg) = e.split_once(": ").unwrap_or(("spec", &e));
            out.errors.push(fail(field, msg.to_string()));
            continue;
        }
        let (dir, chart, local) =
            match chart_for(&v, snap, source_url, objects, &hr.key.namespace, fetch) {
                Ok(c) => c,
                Err(NoChart::Skipped(why)) => {
                    out.skipped.push((id, why));
                    continue;
                }
                Err(NoChart::Error(field, msg)) => {
                    out.errors.push(fail(&field, msg));
                    continue;
                }
            };
        let mut chart = chart;
        if let Err((field, e)) = apply_values_files(&v, &mut chart, &dir, local.then_some(snap)) {
            out.errors.push(fail(&field, e));
            continue;
        }
        let mut supplied = match supplied_values(&v, &chart, &dir, &hr.key.namespace, objects) {
            Ok(vals) => vals,
            Err(errors) => {
                out.errors
                    .extend(errors.into_iter().map(|(field, e)| fail(&field, e)));
                continue;
            }
        };
        if v["spec"]["values"].is_object() {
            merge_values(&mut supplied, &v["spec"]["values"]);
        }
        let post = match post_renderers(&v) {
            Ok(p) => p,
            Err((field, e)) => {
                out.errors.push(fail(&field, e));
                continue;
            }
        };
        let render_full = |rel: &Release| {
            let (objects, hooks, errors) =
                render_release(&chart, rel, &supplied, caps, &dir, &ns, &id)
                    .map_err(|e| ("spec.values", e))?;
            post.apply(objects, hooks, errors)
                .map_err(|e| ("spec.postRenderers", e))
        };
        // Render as the last applied revision did (`.Release.Revision`, `IsInstall`);
        // if that gives something new, it is an upgrade: render as the next revision.
        let last = prev.iter().find(|p| p.namespace == ns && p.name == release);
        let mut rel = Release {
            name: release.clone(),
            namespace: ns.clone(),
            revision: last.map(|p| p.revision.max(1)).unwrap_or(1),
            is_install: last.is_none_or(|p| p.is_install),
        };
        let mut result = render_full(&rel);
        if let (Some(p), Ok((objs, hooks, _))) = (last, &result) {
            if release_record(&v, &rel, &chart, objs, hooks.clone()).digest != p.digest {
                rel.revision += 1;
                rel.is_install = false;
                result = render_full(&rel);
            }
        }
        match result {
            Ok((objects, hooks, errors)) => {
                out.errors.extend(errors);
                out.releases
                    .push(release_record(&v, &rel, &chart, &objects, hooks));
                out.objects.extend(objects);
            }
            Err((field, e)) => out.errors.push(fail(field, e)),
        }
    }
    out
}

/// Renders one release and parses the output: objects in install order, hooks in
/// hook order, and the errors of the parse; `Err` when the chart fails to render.
#[allow(clippy::type_complexity)]
fn render_release(
    chart: &Chart,
    rel: &Release,
    supplied: &Value,
    caps: &Capabilities,
    dir: &str,
    ns: &str,
    id: &str,
) -> Result<(Vec<Object>, Vec<Hook>, Vec<ManifestError>), String> {
    let rendered = render(chart, rel, supplied, caps).map_err(|e| {
        let prefix = format!("{}/", chart.name());
        let e = e
            .strip_prefix(&prefix)
            .map(|rest| format!("{dir}/{rest}"))
            .unwrap_or(e);
        format!("rendering chart {dir}: {e}")
    })?;
    let mut objects = Vec::new();
    let mut hooks = Vec::new();
    let mut errors = Vec::new();
    for r in rendered {
        let file = r
            .name
            .strip_prefix(&format!("{}/", chart.name()))
            .map(|rest| format!("{dir}/{rest}"))
            .unwrap_or(r.name);
        let (objs, errs) = parse_generated(&file, &r.text, ns);
        for o in objs {
            match Hook::from_object(&o.value(), &file) {
                Some(Ok(h)) => hooks.push(h),
                Some(Err(e)) => errors.push(ManifestError::at_origin(
                    &o.origin,
                    Some("metadata.annotations".into()),
                    format!("rendered for {id}: {e}"),
                )),
                None => objects.push(o),
            }
        }
        errors.extend(errs.into_iter().map(|mut e| {
            e.message = format!("rendered for {id}: {}", e.message);
            e
        }));
    }
    sort_for_install(&mut objects);
    sort_hooks(&mut hooks);
    Ok((objects, hooks, errors))
}

/// Expands the HelmReleases of a loaded revision in place: rendered objects join
/// `loaded.objects`, errors join `loaded.errors` (an object both in Git and in a
/// chart, or in two releases, is an error). Returns the releases left unrendered.
pub fn expand_into(
    snap: &dyn Snapshot,
    loaded: &mut crate::manifest::Loaded,
    source_url: &str,
) -> Expanded {
    expand_into_with(snap, loaded, source_url, None, &[])
}

/// [`expand_into`] with a fetcher for charts in Helm repositories.
pub fn expand_into_with(
    snap: &dyn Snapshot,
    loaded: &mut crate::manifest::Loaded,
    source_url: &str,
    fetch: Option<Fetcher>,
    prev: &[ReleaseRecord],
) -> Expanded {
    let x = expand_with(
        snap,
        &loaded.objects,
        source_url,
        &Capabilities::default(),
        fetch,
        prev,
    );
    loaded.objects.extend(x.objects);
    crate::manifest::load::find_duplicates(loaded);
    loaded.errors.extend(x.errors);
    Expanded {
        skipped: x.skipped,
        releases: x.releases,
    }
}

/// What [`expand_into_with`] leaves beside the objects.
#[derive(Debug, Default)]
pub struct Expanded {
    /// Releases left unrendered, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Records of the rendered releases, with their hooks.
    pub releases: Vec<ReleaseRecord>,
}

/// Flux v2's `spec.chart.spec.valuesFiles` (and the older `valuesFile`): the chart's
/// values become these files merged in order (`values.yaml` only if listed). Paths are
/// relative to the source's root (`./charts/x/values-prod.yaml`) or to the chart.
fn apply_values_files(
    hr: &Value,
    chart: &mut Chart,
    dir: &str,
    snap: Option<&dyn Snapshot>,
) -> Result<(), (String, String)> {
    let spec = &hr["spec"]["chart"]["spec"];
    let mut list: Vec<(String, String)> = spec["valuesFiles"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, f)| {
            Some((
                format!("spec.chart.spec.valuesFiles[{i}]"),
                f.as_str()?.to_string(),
            ))
        })
        .collect();
    if list.is_empty() {
        if let Some(f) = spec["valuesFile"].as_str().filter(|f| !f.is_empty()) {
            list.push(("spec.chart.spec.valuesFile".into(), f.to_string()));
        }
    }
    if list.is_empty() {
        return Ok(());
    }
    let mut merged = json!({});
    for (field, path) in list {
        let rel = path.trim_start_matches("./");
        let in_chart = rel.strip_prefix(&format!("{dir}/")).unwrap_or(rel);
        let text = if in_chart == "values.yaml" {
            None
        } else if let Some(t) = chart.files.get(in_chart) {
            Some(t.clone())
        } else {
            match snap.zip(join("", rel)).and_then(|(s, p)| s.read(&p).ok()) {
                Some(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                None => {
                    return Err((
                        field,
                        format!("{path}: no such values file in the chart or the repository"),
                    ))
                }
            }
        };
        let values = match text {
            None => chart.values.clone(),
            Some(t) => match super::chart::yaml_value(&path, &t) {
                Ok(v @ Value::Object(_)) => v,
                Ok(Value::Null) => json!({}),
                Ok(_) => return Err((field, format!("{path}: values must be a mapping"))),
                Err(e) => return Err((field, e)),
            },
        };
        merge_values(&mut merged, &values);
    }
    chart.values = merged;
    Ok(())
}

/// Helm's timeout for a release's hooks: v2 `spec.timeout` (a duration), the Helm
/// operator's `spec.timeout` (seconds); 5 minutes when unset.
pub fn release_timeout(hr: &Value) -> std::time::Duration {
    match &hr["spec"]["timeout"] {
        Value::Number(n) => std::time::Duration::from_secs(n.as_u64().unwrap_or(300)),
        Value::String(s) => crate::util::duration::parse(s)
            .or_else(|_| s.parse::<u64>().map(std::time::Duration::from_secs))
            .unwrap_or(std::time::Duration::from_secs(300)),
        _ => std::time::Duration::from_secs(300),
    }
}

fn release_record(
    hr: &Value,
    rel: &Release,
    chart: &Chart,
    objects: &[Object],
    hooks: Vec<Hook>,
) -> ReleaseRecord {
    use sha2::Digest as _;
    let mut d = sha2::Sha256::new();
    for o in objects {
        d.update(o.hash.as_bytes());
    }
    for h in &hooks {
        d.update(crate::manifest::object::canonical_json(&h.object));
    }
    ReleaseRecord {
        helm_release: format!(
            "{}/{}",
            hr["metadata"]["namespace"].as_str().unwrap_or("default"),
            hr["metadata"]["name"].as_str().unwrap_or_default()
        ),
        name: rel.name.clone(),
        namespace: rel.namespace.clone(),
        chart: format!("{}-{}", chart.name(), chart.version()),
        digest: crate::manifest::object::hex(&d.finalize()),
        revision: rel.revision,
        is_install: rel.is_install,
        objects: objects
            .iter()
            .map(|o| format!("{}/{}/{}", o.key.kind, o.key.namespace, o.key.name))
            .collect(),
        hooks,
        timeout_secs: release_timeout(hr).as_secs(),
        depends_on: hr["spec"]["dependsOn"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| {
                let name = d["name"].as_str()?;
                let ns = d["namespace"]
                    .as_str()
                    .or(hr["metadata"]["namespace"].as_str())
                    .unwrap_or("default");
                Some(format!("{ns}/{name}"))
            })
            .collect(),
        test_enable: hr["spec"]["test"]["enable"].as_bool().unwrap_or(false),
        test_ignore_failures: hr["spec"]["test"]["ignoreFailures"]
            .as_bool()
            .unwrap_or(false),
        last_hook_error: None,
    }
}
