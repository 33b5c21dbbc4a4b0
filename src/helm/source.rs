//! Where a HelmRelease's chart comes from, decided purely: a folder of the cluster
//! repository, another Git repository at a ref, a Helm HTTP repository or an OCI
//! registry, with HelmRepository/GitRepository/OCIRepository objects of the revision
//! resolved to URLs, refs and credentials (from Secrets in the repository).

use crate::manifest::object::find;
use crate::manifest::Object;

/// Flux's source API group (GitRepository, HelmRepository, OCIRepository).
const SOURCE_GROUP: &str = "source.toolkit.fluxcd.io";
use serde_json::Value;

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
        /// A GitRepository's `spec.secretRef` credentials.
        auth: Option<crate::source::credentials::SecretAuth>,
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
            // The Helm operator has no per-chart credentials: only those of the
            // source, and only on the source's own host.
            auth: None,
        }),
        _ => Ok(ChartSource::Path(path.trim_start_matches("./").to_string())),
    }
}

/// Whether two Git URLs name the same repository (ignoring a trailing `/` or `.git`).
pub(crate) fn same_repo(a: &str, b: &str) -> bool {
    let norm = |u: &str| u.trim_end_matches('/').trim_end_matches(".git").to_string();
    norm(a) == norm(b)
}

/// A remote chart source for messages, with credentials redacted.
pub(crate) fn describe(src: &ChartSource) -> String {
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
pub(crate) fn effective_source(
    hr: &Value,
    source_url: &str,
    objects: &[Object],
    hr_ns: &str,
) -> Result<ChartSource, String> {
    let src = chart_source(hr, source_url)?;
    if let ChartSource::OciRef(ns, name) = &src {
        let ns = ns.clone().unwrap_or_else(|| hr_ns.to_string());
        let repo = find(objects, SOURCE_GROUP, "OCIRepository", &ns, name)
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
        let access = repo_access(
            &repo,
            &format!("spec.chartRef: OCIRepository {ns}/{name}"),
            &ns,
            objects,
        )?;
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
        let found = find(objects, SOURCE_GROUP, "HelmRepository", &ns, &name).map(|o| o.value());
        let Some(url) = found
            .as_ref()
            .and_then(|o| o["spec"]["url"].as_str().map(String::from))
        else {
            return Err(format!(
                "spec.chart.spec.sourceRef: HelmRepository {ns}/{name} not found in the repository"
            ));
        };
        let repo = found.unwrap_or_default();
        let access = repo_access(
            &repo,
            &format!("spec.chart.spec.sourceRef: HelmRepository {ns}/{name}"),
            &ns,
            objects,
        )?;
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
    let repo = find(objects, SOURCE_GROUP, "GitRepository", ns, name).map(|o| o.value());
    let Some(repo) = repo else { return Ok(src) };
    let url = repo["spec"]["url"].as_str().unwrap_or_default();
    if url.is_empty() || same_repo(url, source_url) {
        return Ok(src);
    }
    let auth = git_repository_auth(
        &repo,
        &format!("spec.chart.spec.sourceRef: GitRepository {ns}/{name}"),
        ns,
        objects,
    )?;
    Ok(ChartSource::Git {
        url: url.to_string(),
        git_ref: git_repository_ref(&repo["spec"]["ref"]),
        path: path.clone(),
        auth,
    })
}

/// A GitRepository's `spec.secretRef`, read from a Secret in the repository with the
/// keys Flux reads: `identity` and `known_hosts` (and `password` as the key's
/// passphrase) for an SSH URL, `username`/`password` or `bearerToken` otherwise.
fn git_repository_auth(
    repo: &Value,
    prefix: &str,
    ns: &str,
    objects: &[Object],
) -> Result<Option<crate::source::credentials::SecretAuth>, String> {
    use crate::source::credentials::{is_header_safe, origin, SecretAuth};
    let Some(secret) = repo["spec"]["secretRef"]["name"].as_str() else {
        return Ok(None);
    };
    let field = format!("{prefix}: spec.secretRef");
    let get = secret_reader(objects, ns, secret, &field)?;
    let auth = SecretAuth {
        secret: format!("{ns}/{secret}"),
        username: get("username")?,
        password: get("password")?,
        bearer_token: get("bearerToken")?,
        identity: get("identity")?,
        known_hosts: get("known_hosts")?,
    };
    let missing = |what: &str| Err(format!("{field}: Secret {ns}/{secret} has no {what}"));
    let url = repo["spec"]["url"].as_str().unwrap_or_default();
    if origin(url).is_some_and(|(scheme, _, _)| scheme == "ssh") {
        if auth.identity.is_none() {
            return missing("identity (the SSH private key)");
        }
        if auth.known_hosts.is_none() {
            return missing("known_hosts (the SSH host keys to trust)");
        }
        return Ok(Some(auth));
    }
    if auth
        .bearer_token
        .as_deref()
        .is_some_and(|t| !is_header_safe(t))
    {
        return Err(format!(
            "{field}: Secret {ns}/{secret}: bearerToken must be printable ASCII without spaces"
        ));
    }
    match (&auth.username, &auth.password, &auth.bearer_token) {
        (Some(_), Some(_), _) | (None, None, Some(_)) => Ok(Some(auth)),
        (Some(_), None, _) | (None, Some(_), _) => missing("username and password pair"),
        (None, None, None) => missing("username and password, or bearerToken"),
    }
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

/// A HelmRepository's `spec.interval` (how long its index is reused), `passCredentials`,
/// `secretRef` (a Secret in the repository with `username` and `password`, or a
/// `.dockerconfigjson` for OCI, or the older `caFile`/`certFile`/`keyFile`) and
/// `certSecretRef` (`ca.crt`, `tls.crt`, `tls.key`).
/// `prefix` names the field and the repository object in errors; `ns` is the object's
/// namespace, where its Secrets are.
fn repo_access(
    repo: &Value,
    prefix: &str,
    ns: &str,
    objects: &[Object],
) -> Result<super::repo::Access, String> {
    let mut access = super::repo::Access::default();
    if let Some(i) = repo["spec"]["interval"].as_str() {
        access.index_ttl = Some(
            crate::util::duration::parse(i).map_err(|e| format!("{prefix}: spec.interval: {e}"))?,
        );
    }
    access.pass_credentials = repo["spec"]["passCredentials"].as_bool().unwrap_or(false);
    let mut tls = super::repo::TlsMaterial::default();
    if let Some(secret) = repo["spec"]["certSecretRef"]["name"].as_str() {
        let field_name = format!("{prefix}: spec.certSecretRef");
        let get = secret_reader(objects, ns, secret, &field_name)?;
        tls.ca = get("ca.crt")?;
        tls.cert = get("tls.crt")?;
        tls.key = get("tls.key")?;
    }
    if let Some(secret) = repo["spec"]["secretRef"]["name"].as_str() {
        let field_name = format!("{prefix}: spec.secretRef");
        let fail = |msg: String| format!("{field_name}: {msg}");
        let get = secret_reader(objects, ns, secret, &field_name)?;
        tls.ca = tls.ca.or(get("caFile")?);
        tls.cert = tls.cert.or(get("certFile")?);
        tls.key = tls.key.or(get("keyFile")?);
        match (get("username")?, get("password")?) {
            (Some(username), Some(password)) => {
                access.credentials = Some(super::repo::Credentials { username, password })
            }
            // An OCI repository may use a dockerconfigjson Secret, as Flux allows.
            (None, None) if get(".dockerconfigjson")?.is_some() => {
                let text = get(".dockerconfigjson")?.unwrap_or_default();
                let creds = crate::oci::registry::Credentials::from_docker_config(&text)
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
            (None, None) if tls.ca.is_some() || tls.cert.is_some() => {}
            (None, None) => {
                return Err(fail(format!(
                    "Secret {ns}/{secret} has none of username and password, .dockerconfigjson, or caFile/certFile/keyFile"
                )))
            }
            _ => {
                return Err(fail(format!(
                    "Secret {ns}/{secret} needs both username and password"
                )))
            }
        }
    }
    if tls.cert.is_some() != tls.key.is_some() {
        return Err(format!(
            "{prefix}: a client certificate needs both tls.crt and tls.key (certFile and keyFile)"
        ));
    }
    if tls.ca.is_some() || tls.cert.is_some() {
        access.tls = Some(tls);
    }
    Ok(access)
}

/// Reads string keys of a Secret defined in the repository (`stringData`, or base64
/// `data`); errors start with `field`.
fn secret_reader<'a>(
    objects: &'a [Object],
    ns: &'a str,
    secret: &'a str,
    field: &'a str,
) -> Result<impl Fn(&str) -> Result<Option<String>, String> + 'a, String> {
    let obj = find(objects, "", "Secret", ns, secret)
        .ok_or_else(|| format!("{field}: Secret {ns}/{secret} not found in the repository"))?
        .value();
    Ok(move |key: &str| {
        crate::manifest::object::data_value(&obj, "Secret", key)
            .map_err(|e| format!("{field}: Secret {ns}/{secret}: {e}"))
    })
}
