//! Charts from Helm HTTP repositories. The plan half is pure. [`resolve`] reads
//! `index.yaml` and picks the highest version that matches a semver range. [`unpack`]
//! opens a `.tgz` safely: no absolute paths, no `..`, no links, and limits on size and
//! file count. [`fetch`] is the thin executor: it downloads the index and archive,
//! checks the archive's digest against the index, and caches it by digest.

use super::chart::Chart;
use crate::util::semver::{Constraint, Version};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// Largest archive accepted, compressed.
pub const MAX_ARCHIVE_BYTES: usize = 10 << 20;
/// Largest total of unpacked files.
pub const MAX_UNPACKED_BYTES: u64 = 32 << 20;
/// Most files in one chart archive.
pub const MAX_FILES: usize = 5_000;

/// One chart version picked from an index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pick {
    /// The version.
    pub version: String,
    /// Absolute download URL.
    pub url: String,
    /// sha256 hex from the index (empty when the index gives none).
    pub digest: String,
}

/// Picks the highest version of `chart` in `index` that matches `range` (an exact
/// version, a range like `^6.0`, or empty / `*` for the latest stable).
pub fn resolve(repo_url: &str, index: &str, chart: &str, range: &str) -> Result<Pick, String> {
    let index = super::chart::yaml_value("index.yaml", index)?;
    let entries = index["entries"][chart]
        .as_array()
        .ok_or_else(|| format!("chart {chart:?} not found in {repo_url}/index.yaml"))?;
    let range = if range.trim().is_empty() {
        "*"
    } else {
        range.trim()
    };
    let constraint = Constraint::parse(range).map_err(|e| format!("version {range:?}: {e}"))?;
    let best = entries
        .iter()
        .filter_map(|e| Some((Version::parse(e["version"].as_str()?)?, e)))
        .filter(|(v, _)| constraint.matches(v))
        .max_by(|a, b| a.0.cmp(&b.0))
        .ok_or_else(|| {
            format!("no version of chart {chart:?} matches {range:?} in {repo_url}/index.yaml")
        })?;
    let e = best.1;
    let url = e["urls"][0]
        .as_str()
        .ok_or_else(|| format!("chart {chart:?} {}: no urls in the index", e["version"]))?;
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!(
            "{}/{}",
            repo_url.trim_end_matches('/'),
            url.trim_start_matches('/')
        )
    };
    Ok(Pick {
        version: e["version"].as_str().unwrap_or_default().to_string(),
        url,
        digest: e["digest"].as_str().unwrap_or_default().to_lowercase(),
    })
}

/// Unpacks a chart archive into its files, relative to the chart folder (the archive's
/// single top-level folder).
pub fn unpack(tgz: &[u8]) -> Result<BTreeMap<String, String>, String> {
    if tgz.len() > MAX_ARCHIVE_BYTES {
        return Err(format!(
            "chart archive is larger than {} MiB",
            MAX_ARCHIVE_BYTES >> 20
        ));
    }
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    let mut out = BTreeMap::new();
    let mut total = 0u64;
    let mut top: Option<String> = None;
    for entry in archive
        .entries()
        .map_err(|e| format!("chart archive: {e}"))?
    {
        let mut entry = entry.map_err(|e| format!("chart archive: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("chart archive: {e}"))?
            .to_string_lossy()
            .replace('\\', "/");
        let kind = entry.header().entry_type();
        if path.starts_with('/') || path.split('/').any(|p| p == "..") {
            return Err(format!("chart archive: unsafe path {path:?}"));
        }
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(format!("chart archive: link {path:?} is not allowed"));
        }
        if kind.is_dir()
            || matches!(
                kind,
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
            )
        {
            continue;
        }
        if !kind.is_file() {
            return Err(format!("chart archive: {path:?} is not a regular file"));
        }
        let (first, rest) = path
            .trim_start_matches("./")
            .split_once('/')
            .ok_or_else(|| format!("chart archive: {path:?} is outside the chart folder"))?;
        match &top {
            None => top = Some(first.to_string()),
            Some(t) if t != first => {
                return Err(format!(
                    "chart archive: more than one top-level folder ({t}, {first})"
                ))
            }
            _ => {}
        }
        total += entry.size();
        if total > MAX_UNPACKED_BYTES {
            return Err(format!(
                "chart archive unpacks to more than {} MiB",
                MAX_UNPACKED_BYTES >> 20
            ));
        }
        if out.len() >= MAX_FILES {
            return Err(format!("chart archive has more than {MAX_FILES} files"));
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry
            .by_ref()
            .take(MAX_UNPACKED_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("chart archive: {path}: {e}"))?;
        out.insert(
            rest.to_string(),
            String::from_utf8_lossy(&bytes).into_owned(),
        );
    }
    if out.is_empty() {
        return Err("chart archive is empty".into());
    }
    Ok(out)
}

/// Largest `index.yaml` accepted (big public repositories publish indexes of tens of MiB).
pub const MAX_INDEX_BYTES: usize = 64 << 20;

/// Basic-auth credentials for a Helm repository. Never printed: `Debug` hides them.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

/// How to reach a Helm repository.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// Basic auth (a HelmRepository's `secretRef`, or `user:password@` in the URL).
    pub credentials: Option<Credentials>,
    /// Send the credentials to chart URLs on other hosts too (`passCredentials`).
    pub pass_credentials: bool,
    /// How long a downloaded index is reused (a HelmRepository's `spec.interval`);
    /// [`DEFAULT_INDEX_TTL`] when unset.
    pub index_ttl: Option<std::time::Duration>,
    /// A CA to trust instead of the system's, and a client certificate.
    pub tls: Option<TlsMaterial>,
}

pub use crate::util::tls::TlsMaterial;

/// How long an index is reused when the repository gives no interval.
pub const DEFAULT_INDEX_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// Splits `user:password@` out of a URL: (URL without it, credentials).
pub fn split_userinfo(url: &str) -> (String, Option<Credentials>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (url.to_string(), None);
    };
    let (user, pass) = rest[..at].split_once(':').unwrap_or((&rest[..at], ""));
    (
        format!("{scheme}://{}", &rest[at + 1..]),
        Some(Credentials {
            username: user.to_string(),
            password: pass.to_string(),
        }),
    )
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    &rest[..rest.find('/').unwrap_or(rest.len())]
}

/// One runtime and client for the downloads of one fetch.
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    fn new(tls: Option<&TlsMaterial>) -> Result<Http, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60));
        if let Some(t) = tls {
            builder = t.apply(builder)?;
        }
        let client = builder.build().map_err(|e| format!("TLS setup: {e}"))?;
        Ok(Http { rt, client })
    }

    fn get(&self, url: &str, limit: usize, auth: Option<&Credentials>) -> Result<Vec<u8>, String> {
        let shown = crate::source::git::redact_url(url);
        self.rt.block_on(async {
            let mut req = self.client.get(url);
            if let Some(c) = auth {
                req = req.basic_auth(&c.username, Some(&c.password));
            }
            let resp = req.send().await.map_err(|e| {
                format!(
                    "GET {shown}: {}",
                    crate::util::error_chain(&e.without_url())
                )
            })?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED
                || resp.status() == reqwest::StatusCode::FORBIDDEN
            {
                return Err(format!(
                    "GET {shown}: HTTP {} ({})",
                    resp.status().as_u16(),
                    if auth.is_some() {
                        "the credentials were refused"
                    } else {
                        "the repository needs credentials: set the HelmRepository's spec.secretRef"
                    }
                ));
            }
            if !resp.status().is_success() {
                return Err(format!("GET {shown}: HTTP {}", resp.status().as_u16()));
            }
            // Without a Content-Length only the capped read stops an endless index.
            let body = crate::util::http::read_response(resp, limit, &format!("GET {shown}"))
                .await
                .map_err(|e| e.to_string())?;
            Ok(body.to_vec())
        })
    }
}

/// Downloads (or takes from `cache_dir`) the chart picked from a Helm repository. The
/// index is reused for `access.index_ttl` (and fetched anew when the cached one has no
/// matching version); archives are cached by digest.
pub fn fetch(
    repo_url: &str,
    chart: &str,
    range: &str,
    cache_dir: &Path,
    access: &Access,
) -> Result<(Pick, Chart), String> {
    if let Some(rest) = repo_url.strip_prefix("oci://") {
        return fetch_oci(rest, chart, range, cache_dir, access);
    }
    let (repo_url, in_url) = split_userinfo(repo_url);
    let repo_url = repo_url.as_str();
    let auth = access.credentials.clone().or(in_url);
    let http = Http::new(access.tls.as_ref())?;
    let index_url = format!("{}/index.yaml", repo_url.trim_end_matches('/'));
    let index_file = cache_dir.join("index").join(format!(
        "{}.yaml",
        crate::manifest::object::sha256_hex(index_url.as_bytes())
    ));
    let ttl = access.index_ttl.unwrap_or(DEFAULT_INDEX_TTL);
    let fresh = std::fs::metadata(&index_file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < ttl);
    let cached_pick = fresh
        .then(|| std::fs::read(&index_file).ok())
        .flatten()
        .and_then(|b| resolve(repo_url, &String::from_utf8_lossy(&b), chart, range).ok());
    let pick = match cached_pick {
        Some(p) => p,
        None => {
            let index = http.get(&index_url, MAX_INDEX_BYTES, auth.as_ref())?;
            let pick = resolve(repo_url, &String::from_utf8_lossy(&index), chart, range)?;
            if let Err(e) = crate::util::atomic::write(&index_file, &index) {
                tracing::warn!("cannot cache {}: {e}", index_file.display());
            }
            pick
        }
    };
    // Like Helm, credentials go to chart URLs on the repository's host only, unless
    // passCredentials is set.
    let chart_auth = auth
        .as_ref()
        .filter(|_| access.pass_credentials || host_of(&pick.url) == host_of(repo_url));
    let bytes = match cached_archive(cache_dir, &pick.digest) {
        Some(b) => b,
        None => {
            let b = http.get(&pick.url, MAX_ARCHIVE_BYTES, chart_auth)?;
            let got = crate::manifest::object::sha256_hex(&b);
            if !pick.digest.is_empty() && got != pick.digest {
                return Err(format!("chart {chart} {}: digest mismatch: the index says sha256:{}, the download is sha256:{got}", pick.version, pick.digest));
            }
            cache_archive(cache_dir, &pick.digest, &b)?;
            b
        }
    };
    let chart_obj = Chart::from_files(&format!("{chart}-{}.tgz", pick.version), unpack(&bytes)?)?;
    Ok((pick, chart_obj))
}

/// A chart archive cached under its sha256 hex digest, if present and intact.
fn cached_archive(cache_dir: &Path, digest: &str) -> Option<Vec<u8>> {
    if digest.is_empty() {
        return None;
    }
    std::fs::read(cache_dir.join(format!("{digest}.tgz")))
        .ok()
        .filter(|b| crate::manifest::object::sha256_hex(b) == digest)
}

/// Caches a verified chart archive under its digest (nothing without one).
fn cache_archive(cache_dir: &Path, digest: &str, bytes: &[u8]) -> Result<(), String> {
    if digest.is_empty() {
        return Ok(());
    }
    let p = cache_dir.join(format!("{digest}.tgz"));
    crate::util::atomic::write(&p, bytes).map_err(|e| format!("{}: {e}", p.display()))
}

/// Picks the highest tag of an OCI chart repository matching `range` (Helm stores
/// `+` in versions as `_` in tags).
pub fn resolve_oci_tag(tags: &[String], range: &str) -> Result<(String, String), String> {
    let range = if range.trim().is_empty() {
        "*"
    } else {
        range.trim()
    };
    let constraint = Constraint::parse(range).map_err(|e| format!("version {range:?}: {e}"))?;
    tags.iter()
        .filter_map(|t| {
            let v = t.replace('_', "+");
            Some((Version::parse(&v)?, v, t.clone()))
        })
        .filter(|(v, _, _)| constraint.matches(v))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, v, t)| (v, t))
        .ok_or_else(|| format!("no tag matches {range:?}"))
}

/// A chart from an OCI registry (`oci://host/path` + chart name): the tag picked by
/// `range`, its chart layer downloaded, checked against its digest and cached by it.
fn fetch_oci(
    repo: &str,
    chart: &str,
    range: &str,
    cache_dir: &Path,
    access: &Access,
) -> Result<(Pick, Chart), String> {
    use crate::oci::reference::ImageRepo;
    use crate::oci::registry::{Basic, Client, Credentials as RegistryCreds, Settings};
    let image = ImageRepo::parse(&format!("{}/{chart}", repo.trim_end_matches('/')));
    let mut creds = RegistryCreds::default();
    if let Some(c) = &access.credentials {
        creds.insert(
            &image.registry,
            Basic {
                username: c.username.clone(),
                password: c.password.clone(),
            },
        );
    }
    let client = Client::with_tls(Settings::default(), creds, access.tls.as_ref())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let shown = format!("oci://{image}");
    rt.block_on(async {
        let r = range.trim();
        // An exact version, or a tag that is no semver range (`latest`), names the tag.
        let exact =
            if !r.is_empty() && (Version::parse(r).is_some() || Constraint::parse(r).is_err()) {
                Some((r.to_string(), r.replace('+', "_")))
            } else {
                None
            };
        let (version, tag) = match exact {
            Some(vt) => vt,
            None => {
                let tags = client
                    .list_tags(&image, &[])
                    .await
                    .map_err(|e| e.to_string())?;
                resolve_oci_tag(&tags, range).map_err(|e| format!("{shown}: {e}"))?
            }
        };
        let (digest, size) = client
            .chart_layer(&image, &tag)
            .await
            .map_err(|e| e.to_string())?;
        if size as usize > MAX_ARCHIVE_BYTES {
            return Err(format!(
                "{shown}:{tag}: chart archive is larger than {} MiB",
                MAX_ARCHIVE_BYTES >> 20
            ));
        }
        let hex = digest.trim_start_matches("sha256:").to_string();
        let bytes = match cached_archive(cache_dir, &hex) {
            Some(b) => b,
            None => {
                // `blob` checks the digest.
                let b = client
                    .blob(&image, &digest, MAX_ARCHIVE_BYTES)
                    .await
                    .map_err(|e| e.to_string())?;
                cache_archive(cache_dir, &hex, &b)?;
                b
            }
        };
        let chart_obj = Chart::from_files(&format!("{chart}-{version}.tgz"), unpack(&bytes)?)?;
        Ok((
            Pick {
                version,
                url: format!("{shown}:{tag}"),
                digest: hex,
            },
            chart_obj,
        ))
    })
}

/// Builds a gzipped tar from `(path, body)` pairs (for tests and benchmarks).
pub fn pack(files: &[(&str, &str)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (path, body) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // set_path refuses `..`; write the name bytes directly so tests can build hostile archives.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, body.as_bytes()).expect("in-memory tar");
    }
    b.into_inner()
        .and_then(|gz| gz.finish())
        .expect("in-memory gzip")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_tags_resolve_with_helms_underscore() {
        let tags: Vec<String> = ["1.0.0", "1.2.0_build.1", "1.3.0-rc.1", "2.0.0", "latest"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            resolve_oci_tag(&tags, "^1").unwrap(),
            ("1.2.0+build.1".to_string(), "1.2.0_build.1".to_string())
        );
        assert_eq!(resolve_oci_tag(&tags, "").unwrap().0, "2.0.0");
        assert!(resolve_oci_tag(&tags, ">=3").is_err());
    }

    #[test]
    fn credentials_in_urls_are_split_out_and_never_printed() {
        let (url, c) = split_userinfo("https://bot:p%40ss@charts.example.com/stable");
        assert_eq!(url, "https://charts.example.com/stable");
        let c = c.unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("bot", "p%40ss")
        );
        let shown = format!(
            "{:?}",
            Access {
                credentials: Some(c),
                ..Default::default()
            }
        );
        assert!(!shown.contains("p%40ss"), "{shown}");
        assert_eq!(split_userinfo("https://charts.example.com/a@b").1, None);
        assert_eq!(
            host_of("https://charts.example.com/x.tgz"),
            "charts.example.com"
        );
    }

    const INDEX: &str = "apiVersion: v1\nentries:\n  podinfo:\n    - version: 6.1.0\n      urls: [podinfo-6.1.0.tgz]\n      digest: AB12\n    - version: 6.0.3\n      urls: [https://cdn.example.com/podinfo-6.0.3.tgz]\n      digest: cd34\n    - version: 7.0.0-rc.1\n      urls: [podinfo-7.0.0-rc.1.tgz]\n    - version: 5.2.1\n      urls: [charts/podinfo-5.2.1.tgz]\n";

    #[test]
    fn resolves_ranges_against_the_index() {
        let r = "http://charts.local/repo/";
        assert_eq!(
            resolve(r, INDEX, "podinfo", "").unwrap(),
            Pick {
                version: "6.1.0".into(),
                url: "http://charts.local/repo/podinfo-6.1.0.tgz".into(),
                digest: "ab12".into()
            }
        );
        assert_eq!(
            resolve(r, INDEX, "podinfo", "~6.0").unwrap().url,
            "https://cdn.example.com/podinfo-6.0.3.tgz"
        );
        assert_eq!(
            resolve(r, INDEX, "podinfo", "5.2.1").unwrap().url,
            "http://charts.local/repo/charts/podinfo-5.2.1.tgz"
        );
        assert_eq!(
            resolve(r, INDEX, "podinfo", ">=7.0.0-0").unwrap().version,
            "7.0.0-rc.1"
        );
        assert_eq!(
            resolve(r, INDEX, "podinfo", "6.0.3").unwrap().version,
            "6.0.3"
        );
        assert!(resolve(r, INDEX, "podinfo", "^8")
            .unwrap_err()
            .contains("no version of chart \"podinfo\" matches \"^8\""));
        assert!(resolve(r, INDEX, "redis", "")
            .unwrap_err()
            .contains("chart \"redis\" not found"));
    }

    #[test]
    fn unpacks_the_chart_folder_and_refuses_unsafe_archives() {
        let ok = pack(&[
            ("podinfo/Chart.yaml", "name: podinfo\nversion: 1.0.0\n"),
            ("podinfo/templates/cm.yaml", "x: 1\n"),
        ]);
        let files = unpack(&ok).unwrap();
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            ["Chart.yaml", "templates/cm.yaml"]
        );
        let bad = pack(&[("podinfo/../../etc/passwd", "x")]);
        assert!(unpack(&bad).unwrap_err().contains("unsafe path"));
        let bad = pack(&[("/etc/passwd", "x")]);
        assert!(unpack(&bad).unwrap_err().contains("unsafe path"));
        let bad = pack(&[("a/Chart.yaml", "x"), ("b/Chart.yaml", "y")]);
        assert!(unpack(&bad)
            .unwrap_err()
            .contains("more than one top-level folder"));
        let mut link = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        link.append_link(&mut h, "podinfo/values.yaml", "/etc/shadow")
            .unwrap();
        let bytes = link.into_inner().unwrap().finish().unwrap();
        assert!(unpack(&bytes).unwrap_err().contains("link"));
        assert!(unpack(b"not a gzip").is_err());
        let huge = vec![0u8; MAX_ARCHIVE_BYTES + 1];
        assert!(unpack(&huge).unwrap_err().contains("larger than"));
    }
}
