//! HelmRelease → objects. For each HelmRelease (`flux.weave.works/v1beta1`,
//! `helm.fluxcd.io/v1`, `helm.toolkit.fluxcd.io/v2`) whose chart lives in the cluster
//! repository, this plans the release (name, namespace, chart path, values from the
//! chart, `valuesFrom` and `spec.values`), renders the chart and parses the output with
//! the same checks as files in Git. Pure: it reads the snapshot and the loaded objects
//! and returns objects and errors; sync applies and prunes them like any other.

use super::chart::{merge_values, render, Capabilities, Chart, Release};
use super::hooks::{sort_hooks, Hook, ReleaseRecord};
use crate::manifest::load::parse_generated;
use crate::manifest::snapshot::{join, Entry, Snapshot};
use crate::manifest::{ManifestError, Object};
use base64::Engine as _;
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

/// Where a release's chart comes from.
#[derive(Debug, PartialEq, Eq)]
pub enum ChartSource {
    /// A folder in the cluster repository.
    Path(String),
    /// A Helm HTTP repository: its URL, or the HelmRepository object (namespace, name)
    /// naming it; the chart name; the version or semver range.
    HelmRepo {
        /// Repository URL, when given directly (Helm operator `chart.repository`).
        url: Option<String>,
        /// A HelmRepository object, `(namespace, name)` (v2 `sourceRef`).
        object: Option<(Option<String>, String)>,
        /// Chart name.
        chart: String,
        /// Version or range; empty means the latest stable.
        version: String,
        /// Credentials and index refresh interval (from a HelmRepository object).
        access: super::repo::Access,
    },
    /// A folder in another Git repository, at a branch, tag, semver tag or commit.
    Git {
        /// Repository URL.
        url: String,
        /// The reference (the Helm operator's `chart.ref`, default `master`; a
        /// GitRepository's `spec.ref`).
        git_ref: crate::source::git::GitRef,
        /// Chart folder in that repository.
        path: String,
    },
    /// A v2 `spec.chartRef` to an OCIRepository object, `(namespace, name)`.
    OciRef(Option<String>, String),
    /// Anything else, described.
    Other(String),
}

/// The chart source a HelmRelease names; `source_url` is the cluster repo's URL.
pub fn chart_source(hr: &Value, source_url: &str) -> Result<ChartSource, String> {
    let chart = &hr["spec"]["chart"];
    if hr["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .starts_with("helm.toolkit.fluxcd.io/")
    {
        let chart_ref = &hr["spec"]["chartRef"];
        if chart_ref.is_object() {
            let name = chart_ref["name"]
                .as_str()
                .ok_or("spec.chartRef.name: missing required field")?
                .to_string();
            let ns = chart_ref["namespace"].as_str().map(String::from);
            return Ok(match chart_ref["kind"].as_str() {
                Some("OCIRepository") => ChartSource::OciRef(ns, name),
                kind => ChartSource::Other(format!(
                    "spec.chartRef to {} {name}",
                    kind.unwrap_or("an object")
                )),
            });
        }
        let spec = &chart["spec"];
        let name = spec["chart"]
            .as_str()
            .ok_or("spec.chart.spec.chart: missing required field")?;
        return Ok(match spec["sourceRef"]["kind"].as_str() {
            None | Some("GitRepository") => {
                ChartSource::Path(name.trim_start_matches("./").to_string())
            }
            Some("HelmRepository") => ChartSource::HelmRepo {
                url: None,
                object: Some((
                    spec["sourceRef"]["namespace"].as_str().map(String::from),
                    spec["sourceRef"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )),
                chart: name.to_string(),
                version: spec["version"].as_str().unwrap_or_default().to_string(),
                access: Default::default(),
            },
            Some(kind) => ChartSource::Other(format!(
                "chart {name} from {kind} {}",
                spec["sourceRef"]["name"].as_str().unwrap_or_default()
            )),
        });
    }
    if let Some(repo) = chart["repository"].as_str() {
        return Ok(ChartSource::HelmRepo {
            url: Some(repo.to_string()),
            object: None,
            chart: chart["name"]
                .as_str()
                .ok_or("spec.chart.name: missing required field")?
                .to_string(),
            version: chart["version"].as_str().unwrap_or_default().to_string(),
            access: Default::default(),
        });
    }
    let path = chart["path"]
        .as_str()
        .ok_or("spec.chart.path: missing required field")?;
    match chart["git"].as_str() {
        Some(git) if !same_repo(git, source_url) => Ok(ChartSource::Git {
            url: git.to_string(),
            git_ref: chart["ref"]
                .as_str()
                .filter(|r| !r.is_empty())
                .unwrap_or("master")
                .into(),
            path: path.trim_start_matches("./").to_string(),
        }),
        _ => Ok(ChartSource::Path(path.trim_start_matches("./").to_string())),
    }
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
    let found = objects.iter().find(|o| {
        o.key.group.is_empty() && o.key.kind == kind && o.key.namespace == ns && o.key.name == name
    });
    let Some(obj) = found else {
        return if optional {
            Ok(None)
        } else {
            Err(format!("{kind} {ns}/{name} not found in the repository"))
        };
    };
    let v = obj.value();
    let text = match (kind, v["data"].get(key), v["stringData"].get(key)) {
        ("Secret", Some(Value::String(b)), _) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|_| format!("{kind} {ns}/{name}: key {key} is not valid base64"))?;
            String::from_utf8(bytes)
                .map_err(|_| format!("{kind} {ns}/{name}: key {key} is not UTF-8"))?
        }
        (_, Some(Value::String(s)), _) | (_, _, Some(Value::String(s))) => s.clone(),
        _ if optional => return Ok(None),
        _ => return Err(format!("{kind} {ns}/{name} has no key {key}")),
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

/// Whether two Git URLs name the same repository (ignoring a trailing `/` or `.git`).
fn same_repo(a: &str, b: &str) -> bool {
    let norm = |u: &str| u.trim_end_matches('/').trim_end_matches(".git").to_string();
    norm(a) == norm(b)
}

/// A remote chart source for messages, with credentials redacted.
fn describe(src: &ChartSource) -> String {
    use crate::source::git::redact_url;
    match src {
        ChartSource::HelmRepo { url, chart, .. } => {
            format!(
                "chart {chart} from Helm repository {}",
                redact_url(url.as_deref().unwrap_or_default())
            )
        }
        ChartSource::Git { url, path, .. } => {
            format!("chart {path} from Git repository {}", redact_url(url))
        }
        ChartSource::Path(p) => format!("chart {p}"),
        ChartSource::OciRef(_, name) => format!("chart from OCIRepository {name}"),
        ChartSource::Other(why) => why.clone(),
    }
}

/// [`chart_source`], with a HelmRepository `sourceRef` resolved to its URL and a v2 `sourceRef` to a GitRepository object of this revision
/// whose URL is not the cluster repository's read as that other repository (its
/// `spec.ref.branch`, default `master`).
fn effective_source(
    hr: &Value,
    source_url: &str,
    objects: &[Object],
    hr_ns: &str,
) -> Result<ChartSource, String> {
    let src = chart_source(hr, source_url)?;
    if let ChartSource::OciRef(ns, name) = &src {
        let ns = ns.clone().unwrap_or_else(|| hr_ns.to_string());
        let repo = objects
            .iter()
            .find(|o| o.key.kind == "OCIRepository" && o.key.namespace == ns && &o.key.name == name)
            .map(|o| o.value())
            .ok_or_else(|| {
                format!("spec.chartRef: OCIRepository {ns}/{name} not found in the repository")
            })?;
        let url = repo["spec"]["url"]
            .as_str()
            .filter(|u| u.starts_with("oci://"))
            .ok_or_else(|| {
                format!("spec.chartRef: OCIRepository {ns}/{name}: spec.url must be an oci:// URL")
            })?;
        let (parent, chart) = url
            .trim_end_matches('/')
            .rsplit_once('/')
            .filter(|(p, _)| p.len() > "oci:/".len())
            .ok_or_else(|| {
                format!("spec.chartRef: OCIRepository {ns}/{name}: spec.url names no artifact")
            })?;
        let r = &repo["spec"]["ref"];
        if r["digest"].as_str().is_some() {
            return Err(format!("spec.chartRef: OCIRepository {ns}/{name}: spec.ref.digest is not supported; use tag or semver"));
        }
        let version = r["semver"]
            .as_str()
            .or(r["tag"].as_str())
            .unwrap_or("latest")
            .to_string();
        let access = repo_access(&repo, &ns, name, objects).map_err(|e| {
            e.replace(
                "spec.chart.spec.sourceRef: HelmRepository",
                "spec.chartRef: OCIRepository",
            )
        })?;
        return Ok(ChartSource::HelmRepo {
            url: Some(parent.to_string()),
            object: None,
            chart: chart.to_string(),
            version,
            access,
        });
    }
    if let ChartSource::HelmRepo {
        url: None,
        object: Some((ns, name)),
        chart,
        version,
        ..
    } = src
    {
        let ns = ns.unwrap_or_else(|| hr_ns.to_string());
        let found = objects
            .iter()
            .find(|o| o.key.kind == "HelmRepository" && o.key.namespace == ns && o.key.name == name)
            .map(|o| o.value());
        let Some(url) = found
            .as_ref()
            .and_then(|o| o["spec"]["url"].as_str().map(String::from))
        else {
            return Err(format!(
                "spec.chart.spec.sourceRef: HelmRepository {ns}/{name} not found in the repository"
            ));
        };
        let repo = found.unwrap_or_default();
        let access = repo_access(&repo, &ns, &name, objects)?;
        return Ok(ChartSource::HelmRepo {
            url: Some(url),
            object: None,
            chart,
            version,
            access,
        });
    }
    let ChartSource::Path(path) = &src else {
        return Ok(src);
    };
    let r = &hr["spec"]["chart"]["spec"]["sourceRef"];
    if r["kind"].as_str() != Some("GitRepository") {
        return Ok(src);
    }
    let name = r["name"].as_str().unwrap_or_default();
    let ns = r["namespace"].as_str().unwrap_or(hr_ns);
    let repo = objects
        .iter()
        .find(|o| o.key.kind == "GitRepository" && o.key.namespace == ns && o.key.name == name)
        .map(|o| o.value());
    let Some(repo) = repo else { return Ok(src) };
    let url = repo["spec"]["url"].as_str().unwrap_or_default();
    if url.is_empty() || same_repo(url, source_url) {
        return Ok(src);
    }
    Ok(ChartSource::Git {
        url: url.to_string(),
        git_ref: git_repository_ref(&repo["spec"]["ref"]),
        path: path.clone(),
    })
}

/// A GitRepository's `spec.ref`, with Flux's precedence: commit, name, semver, tag,
/// branch (default `master`).
pub fn git_repository_ref(r: &Value) -> crate::source::git::GitRef {
    use crate::source::git::GitRef;
    let get = |k: &str| r[k].as_str().filter(|s| !s.is_empty()).map(String::from);
    if let Some(c) = get("commit") {
        GitRef::Commit(c)
    } else if let Some(n) = get("name") {
        if let Some(b) = n.strip_prefix("refs/heads/") {
            GitRef::Branch(b.to_string())
        } else if let Some(t) = n.strip_prefix("refs/tags/") {
            GitRef::Tag(t.to_string())
        } else {
            GitRef::Name(n)
        }
    } else if let Some(v) = get("semver") {
        GitRef::Semver(v)
    } else if let Some(t) = get("tag") {
        GitRef::Tag(t)
    } else {
        GitRef::Branch(get("branch").unwrap_or_else(|| "master".into()))
    }
}

/// A HelmRepository's `spec.interval` (how long its index is reused), `secretRef`
/// (a Secret in the repository with `username` and `password`) and `passCredentials`.
fn repo_access(
    repo: &Value,
    ns: &str,
    name: &str,
    objects: &[Object],
) -> Result<super::repo::Access, String> {
    let mut access = super::repo::Access::default();
    if let Some(i) = repo["spec"]["interval"].as_str() {
        access.index_ttl = Some(crate::util::duration::parse(i).map_err(|e| {
            format!("spec.chart.spec.sourceRef: HelmRepository {ns}/{name}: spec.interval: {e}")
        })?);
    }
    access.pass_credentials = repo["spec"]["passCredentials"].as_bool().unwrap_or(false);
    let Some(secret) = repo["spec"]["secretRef"]["name"].as_str() else {
        return Ok(access);
    };
    let fail = |msg: String| {
        format!("spec.chart.spec.sourceRef: HelmRepository {ns}/{name}: spec.secretRef: {msg}")
    };
    let obj = objects
        .iter()
        .find(|o| {
            o.key.group.is_empty()
                && o.key.kind == "Secret"
                && o.key.namespace == ns
                && o.key.name == secret
        })
        .ok_or_else(|| fail(format!("Secret {ns}/{secret} not found in the repository")))?
        .value();
    let field = |key: &str| -> Result<Option<String>, String> {
        if let Some(s) = obj["stringData"][key].as_str() {
            return Ok(Some(s.to_string()));
        }
        match obj["data"][key].as_str() {
            None => Ok(None),
            Some(b) => base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .map(Some)
                .ok_or_else(|| {
                    fail(format!(
                        "Secret {ns}/{secret}: key {key} is not valid base64 UTF-8"
                    ))
                }),
        }
    };
    match (field("username")?, field("password")?) {
        (Some(username), Some(password)) => {
            access.credentials = Some(super::repo::Credentials { username, password })
        }
        // An OCI repository may use a dockerconfigjson Secret, as Flux allows.
        (None, None) if field(".dockerconfigjson")?.is_some() => {
            let text = field(".dockerconfigjson")?.unwrap_or_default();
            let creds = crate::image::registry::Credentials::from_docker_config(&text)
                .map_err(|e| fail(format!("Secret {ns}/{secret}: .dockerconfigjson: {e}")))?;
            let url = repo["spec"]["url"].as_str().unwrap_or_default();
            let host = url
                .split_once("://")
                .map(|(_, r)| r)
                .unwrap_or(url)
                .split('/')
                .next()
                .unwrap_or_default();
            let basic = creds.get(host).ok_or_else(|| {
                fail(format!(
                    "Secret {ns}/{secret}: .dockerconfigjson has no entry for {host}"
                ))
            })?;
            access.credentials = Some(super::repo::Credentials {
                username: basic.username.clone(),
                password: basic.password.clone(),
            });
        }
        (None, None) => {
            return Err(fail(format!(
                "Secret {ns}/{secret} has no username and password, nor .dockerconfigjson (TLS client certificates are not supported)"
            )))
        }
        _ => {
            return Err(fail(format!(
                "Secret {ns}/{secret} needs both username and password"
            )))
        }
    }
    Ok(access)
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
        let (dir, chart, local) = match effective_source(&v, source_url, objects, &hr.key.namespace)
        {
            Err(e) => {
                let (field, msg) = e.split_once(": ").unwrap_or(("spec.chart", &e));
                out.errors.push(fail(field, msg.to_string()));
                continue;
            }
            Ok(ChartSource::Other(why)) => {
                out.skipped.push((id, format!("{why} is not supported")));
                continue;
            }
            Ok(ChartSource::Path(p)) => {
                let Some(dir) = join("", &p) else {
                    out.errors.push(fail(
                        "spec.chart",
                        format!("chart path {p:?} escapes the repository"),
                    ));
                    continue;
                };
                match read_chart(snap, &dir) {
                    Ok(c) => (dir, c, true),
                    Err(e) => {
                        out.errors.push(fail("spec.chart", e));
                        continue;
                    }
                }
            }
            Ok(remote) => {
                let Some(fetch) = fetch else {
                    out.skipped.push((
                        id,
                        format!("{} is fetched only when syncing", describe(&remote)),
                    ));
                    continue;
                };
                match fetch(&remote) {
                    Ok(c) => {
                        let label = match &remote {
                            ChartSource::Git { path, .. } => path.clone(),
                            _ => format!("{}-{}", c.name(), c.version()),
                        };
                        (label, c, false)
                    }
                    Err(e) => {
                        out.errors.push(fail("spec.chart", e));
                        continue;
                    }
                }
            }
        };
        let mut chart = chart;
        if let Err((field, e)) = apply_values_files(&v, &mut chart, &dir, local.then_some(snap)) {
            out.errors.push(fail(&field, e));
            continue;
        }
        let (release, ns) = release_identity(&v);
        let mut supplied = json!({});
        let mut ok = true;
        // flux.weave.works/v1beta1 `valueFileSecrets`: Secrets whose `values.yaml` key
        // holds values, before `valuesFrom`.
        for (i, s) in v["spec"]["valueFileSecrets"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let entry = json!({"secretKeyRef": {"name": s["name"], "key": "values.yaml"}});
            match values_from(&entry, &hr.key.namespace, objects) {
                Ok(Some(vals)) => merge_values(&mut supplied, &vals),
                Ok(None) => {}
                Err(e) => {
                    out.errors
                        .push(fail(&format!("spec.valueFileSecrets[{i}]"), e));
                    ok = false;
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
                        out.errors.push(fail(
                            &format!("spec.valuesFrom[{i}].chartFileRef"),
                            format!("{path}: values must be a mapping"),
                        ));
                        ok = false;
                    }
                    Some(Err(e)) => {
                        out.errors
                            .push(fail(&format!("spec.valuesFrom[{i}].chartFileRef"), e));
                        ok = false;
                    }
                    None if optional => {}
                    None => {
                        out.errors.push(fail(
                            &format!("spec.valuesFrom[{i}].chartFileRef"),
                            format!("{path}: no such file in chart {dir}"),
                        ));
                        ok = false;
                    }
                }
                continue;
            }
            if entry.get("externalSourceRef").is_some() {
                out.errors.push(fail(
                    &format!("spec.valuesFrom[{i}].externalSourceRef"),
                    "values from URLs are not supported: commit the file and use chartFileRef or a ConfigMap".into(),
                ));
                ok = false;
                continue;
            }
            match values_from(entry, &hr.key.namespace, objects) {
                Ok(Some(vals)) => merge_values(&mut supplied, &vals),
                Ok(None) => {}
                Err(e) => {
                    out.errors.push(fail(&format!("spec.valuesFrom[{i}]"), e));
                    ok = false;
                }
            }
        }
        if !ok {
            continue;
        }
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

/// A v2 HelmRelease's `spec.postRenderers[].kustomize`: patches and image overrides
/// applied to everything the chart renders (hooks too), as Flux's post-renderer does.
#[derive(Default)]
struct PostRender {
    patches: Vec<crate::manifest::patch::Patch>,
    images: Vec<crate::manifest::kustomize::ImageOverride>,
}

impl PostRender {
    #[allow(clippy::type_complexity)]
    fn apply(
        &self,
        objects: Vec<Object>,
        mut hooks: Vec<Hook>,
        errors: Vec<ManifestError>,
    ) -> Result<(Vec<Object>, Vec<Hook>, Vec<ManifestError>), String> {
        if self.patches.is_empty() && self.images.is_empty() {
            return Ok((objects, hooks, errors));
        }
        let transform = |value: &mut Value| -> Result<(), String> {
            for p in &self.patches {
                if p.matches(value) {
                    p.apply(value).map_err(|e| {
                        format!(
                            "{} {}: {e}",
                            value["kind"].as_str().unwrap_or_default(),
                            value["metadata"]["name"].as_str().unwrap_or_default()
                        )
                    })?;
                }
            }
            if !self.images.is_empty() {
                crate::manifest::kustomize::apply_images(value, &self.images);
            }
            Ok(())
        };
        let mut out = Vec::with_capacity(objects.len());
        for o in objects {
            let mut value = o.value();
            transform(&mut value)?;
            out.push(Object::from_json(
                o.key.clone(),
                o.api_version.clone(),
                &value,
                o.origin.clone(),
            ));
        }
        for h in &mut hooks {
            transform(&mut h.object)?;
        }
        Ok((out, hooks, errors))
    }
}

fn post_renderers(hr: &Value) -> Result<PostRender, (String, String)> {
    use crate::manifest::kustomize::ImageOverride;
    use crate::manifest::patch::{Patch, Selector};
    let mut out = PostRender::default();
    for (i, pr) in hr["spec"]["postRenderers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let base = format!("spec.postRenderers[{i}].kustomize");
        let k = &pr["kustomize"];
        if !k.is_object() {
            return Err((
                format!("spec.postRenderers[{i}]"),
                "only kustomize post-renderers are supported".into(),
            ));
        }
        let target = |field: &str, t: &Value| -> Result<Option<Selector>, (String, String)> {
            if t.is_null() {
                return Ok(None);
            }
            Selector::from_value(t)
                .map(Some)
                .map_err(|e| (field.to_string(), e))
        };
        for (j, p) in k["patches"].as_array().into_iter().flatten().enumerate() {
            let field = format!("{base}.patches[{j}]");
            let text = p["patch"].as_str().ok_or_else(|| {
                (
                    format!("{field}.patch"),
                    "missing required field".to_string(),
                )
            })?;
            let t = target(&field, &p["target"])?;
            out.patches
                .push(Patch::parse(text, t).map_err(|e| (field.clone(), e))?);
        }
        for (j, p) in k["patchesStrategicMerge"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let field = format!("{base}.patchesStrategicMerge[{j}]");
            if p["kind"].as_str().is_none() || p["metadata"]["name"].as_str().is_none() {
                return Err((field, "needs kind and metadata.name".into()));
            }
            out.patches.push(Patch::Strategic(None, p.clone()));
        }
        for (j, p) in k["patchesJson6902"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let field = format!("{base}.patchesJson6902[{j}]");
            let t = target(&field, &p["target"])?.ok_or_else(|| {
                (
                    format!("{field}.target"),
                    "missing required field".to_string(),
                )
            })?;
            let ops = p["patch"].as_array().cloned().ok_or_else(|| {
                (
                    format!("{field}.patch"),
                    "expected a list of operations".to_string(),
                )
            })?;
            out.patches
                .push(Patch::from_ops(t, ops).map_err(|e| (field.clone(), e))?);
        }
        for img in k["images"].as_array().into_iter().flatten() {
            let s = |f: &str| match &img[f] {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            out.images.push(ImageOverride {
                name: s("name").unwrap_or_default(),
                new_name: s("newName"),
                new_tag: s("newTag"),
                digest: s("digest"),
            });
        }
    }
    Ok(out)
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
        test_enable: hr["spec"]["test"]["enable"].as_bool().unwrap_or(false),
        test_ignore_failures: hr["spec"]["test"]["ignoreFailures"]
            .as_bool()
            .unwrap_or(false),
        last_hook_error: None,
    }
}
