//! The registry edge: OCI distribution tag listing over reqwest. It follows `Link`
//! pagination, answers `WWW-Authenticate` challenges (anonymous, basic, and the bearer
//! token flow Docker Hub, GHCR and Quay use), honours `Retry-After` on 429, and looks
//! up image creation times for Flux v1 glob/regex policies.
//!
//! Why not oci-client: it lists one page per call and has no `Retry-After` handling,
//! and its dependency tree is larger than this file. Credentials never reach a log or
//! an error message.

use super::reference::ImageRepo;
use base64::Engine;
use hyper::body::Bytes;
use regex::Regex;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, LINK, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Errors scanning one image.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The registry answered with an error status.
    #[error("{image}: registry answered {status}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Status {
        /// Image.
        image: String,
        /// HTTP status.
        status: u16,
        /// Registry's message.
        message: String,
    },
    /// The registry could not be reached.
    #[error("{image}: {message}")]
    Transport {
        /// Image.
        image: String,
        /// Why.
        message: String,
    },
    /// The registry answered something that is not a tag list.
    #[error("{image}: invalid response: {message}")]
    Invalid {
        /// Image.
        image: String,
        /// Why.
        message: String,
    },
    /// A response body could not be read whole, or was longer than its cap.
    #[error("{image}: {source}")]
    Body {
        /// Image.
        image: String,
        /// Which body and why.
        source: crate::util::http::CapError,
    },
}

/// Largest token response read.
const MAX_TOKEN_BYTES: usize = 1 << 20;
/// Largest manifest read: the size registries must accept (OCI distribution spec).
const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Largest tag-list page or image config read.
const MAX_JSON_BYTES: usize = 16 << 20;

/// Result with the registry error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Username and password for one registry host.
#[derive(Clone)]
pub struct Basic {
    /// Username.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Basic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Basic({}, ***)", self.username)
    }
}

/// Credentials by registry host.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    by_host: HashMap<String, Basic>,
}

impl Credentials {
    /// Adds credentials for a host.
    pub fn insert(&mut self, host: &str, basic: Basic) {
        self.by_host.insert(normalize_host(host), basic);
    }

    /// Reads `auths.<host>.auth` (or `username`/`password`) from a docker `config.json`.
    pub fn from_docker_config(text: &str) -> std::result::Result<Credentials, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let mut c = Credentials::default();
        for (host, entry) in v["auths"].as_object().into_iter().flatten() {
            let basic = if let Some(auth) = entry["auth"].as_str() {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth)
                    .map_err(|_| format!("auths.{host}.auth is not base64"))?;
                let text = String::from_utf8(decoded)
                    .map_err(|_| format!("auths.{host}.auth is not UTF-8"))?;
                let (u, p) = text
                    .split_once(':')
                    .ok_or_else(|| format!("auths.{host}.auth is not user:password"))?;
                Basic {
                    username: u.into(),
                    password: p.into(),
                }
            } else if let (Some(u), Some(p)) =
                (entry["username"].as_str(), entry["password"].as_str())
            {
                Basic {
                    username: u.into(),
                    password: p.into(),
                }
            } else {
                continue;
            };
            c.insert(host, basic);
        }
        Ok(c)
    }

    /// The credentials for a registry host.
    pub fn get(&self, registry: &str) -> Option<&Basic> {
        self.by_host.get(&normalize_host(registry))
    }
}

fn normalize_host(h: &str) -> String {
    let h = h
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let h = h.split('/').next().unwrap_or(h);
    match h {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        other => other.to_string(),
    }
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Registries spoken to over plain http besides loopback ones.
    pub insecure: Vec<String>,
    /// Tags kept per image at most.
    pub max_tags: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries after a 429.
    pub max_retries: u32,
    /// Longest `Retry-After` honoured.
    pub max_retry_after: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            insecure: vec![],
            max_tags: 10_000,
            timeout: Duration::from_secs(30),
            max_retries: 3,
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// A tag-listing registry client.
pub struct Client {
    http: reqwest::Client,
    https_only: bool,
    settings: Settings,
    creds: std::sync::RwLock<Credentials>,
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=...`
    Basic,
    /// `Bearer realm=...,service=...,scope=...`
    Bearer {
        /// Token endpoint.
        realm: String,
        /// `service` parameter.
        service: Option<String>,
        /// `scope` parameter.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let re = Regex::new(r#"([A-Za-z]+)\s*=\s*(?:"([^"]*)"|([^,\s]*))"#).expect("valid regex");
    for c in re.captures_iter(rest) {
        let v = c
            .get(2)
            .or(c.get(3))
            .map(|m| m.as_str().to_string())
            .unwrap_or_default();
        params.insert(c[1].to_ascii_lowercase(), v);
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

/// Whether credentials may go to a token realm: over https, or over plain http only
/// when the registry itself is spoken to over plain http (loopback or listed in
/// `insecureRegistries`). A registry could otherwise send them in clear to any address.
pub fn check_realm(realm: &reqwest::Url, plain_http_registry: bool) -> Result<(), String> {
    match realm.scheme() {
        "https" => Ok(()),
        "http" if plain_http_registry => Ok(()),
        "http" => Err(format!(
            "token realm {realm}: plain http is refused for a registry spoken to over https (list it in images.insecureRegistries to allow it)"
        )),
        other => Err(format!("token realm {realm}: unsupported scheme {other:?}")),
    }
}

/// Parses `Retry-After` (seconds or an HTTP date, which counts as "soon").
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?;
    Some(
        v.trim()
            .parse::<u64>()
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(1)),
    )
}

/// The `rel="next"` target of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(LINK)?.to_str().ok()?;
    v.split(',')
        .find(|l| l.contains("rel=\"next\"") || l.contains("rel=next"))
        .and_then(|l| {
            let start = l.find('<')? + 1;
            let end = l.find('>')?;
            Some(l[start..end].to_string())
        })
}

/// Parses an RFC 3339 timestamp to Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    );
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut t = days * 86_400 + h * 3600 + mi * 60 + se;
    let tz = s[19..].trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    if let Some(off) = tz.strip_prefix(['+', '-']) {
        let sign = if tz.starts_with('-') { -1 } else { 1 };
        let oh: i64 = off.get(0..2)?.parse().ok()?;
        let om: i64 = off.get(3..5)?.parse().ok()?;
        t -= sign * (oh * 3600 + om * 60);
    }
    Some(t)
}

impl Client {
    /// A client with the given settings and credentials.
    pub fn new(settings: Settings, creds: Credentials) -> Client {
        Client::with_tls(settings, creds, None).expect("HTTP client builds")
    }

    /// A client that also trusts `tls`'s CA (only) and presents its client certificate.
    pub fn with_tls(
        settings: Settings,
        creds: Credentials,
        tls: Option<&crate::util::tls::TlsMaterial>,
    ) -> std::result::Result<Client, String> {
        crate::util::tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("gitcanary/", env!("CARGO_PKG_VERSION")));
        if let Some(t) = tls {
            builder = t.apply(builder)?;
        }
        let http = builder.build().map_err(|e| format!("TLS setup: {e}"))?;
        Ok(Client {
            http,
            https_only: tls.is_some(),
            settings,
            creds: std::sync::RwLock::new(creds),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The registry API's base URL: `http` for loopback or insecure registries unless a
    /// CA or client certificate was given, which means TLS.
    fn base_url(&self, image: &ImageRepo) -> String {
        if self.https_only {
            format!("https://{}", image.api_host())
        } else {
            image.base_url(&self.settings.insecure)
        }
    }

    /// The body of `resp` (`what`, e.g. `tag list`), at most `limit` bytes.
    async fn read(image: &ImageRepo, resp: Response, limit: usize, what: &str) -> Result<Bytes> {
        crate::util::http::read_response(resp, limit, what)
            .await
            .map_err(|source| Error::Body {
                image: image.to_string(),
                source,
            })
    }

    /// The body of `resp` as JSON, at most `limit` bytes.
    async fn read_json(
        image: &ImageRepo,
        resp: Response,
        limit: usize,
        what: &str,
    ) -> Result<serde_json::Value> {
        let body = Self::read(image, resp, limit, what).await?;
        serde_json::from_slice(&body).map_err(|e| Error::Invalid {
            image: image.to_string(),
            message: format!("{what} is not JSON: {e}"),
        })
    }

    fn transport(image: &ImageRepo, e: reqwest::Error) -> Error {
        let message = if e.is_timeout() {
            "timed out".to_string()
        } else {
            format!(
                "cannot reach registry: {}",
                crate::util::error_chain(&e.without_url())
            )
        };
        Error::Transport {
            image: image.to_string(),
            message,
        }
    }

    async fn bearer_token(
        &self,
        image: &ImageRepo,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
    ) -> Result<String> {
        let key = format!("{realm}|{}|{}", service.unwrap_or(""), scope.unwrap_or(""));
        if let Some((tok, until)) = self
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            if Instant::now() < *until {
                return Ok(tok.clone());
            }
        }
        let mut url = reqwest::Url::parse(realm).map_err(|e| Error::Invalid {
            image: image.to_string(),
            message: format!("token realm {realm:?}: {e}"),
        })?;
        let plain_http_registry =
            !self.https_only && image.scheme(&self.settings.insecure) == "http";
        check_realm(&url, plain_http_registry).map_err(|message| Error::Invalid {
            image: image.to_string(),
            message,
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            if let Some(s) = scope {
                q.append_pair("scope", s);
            }
        }
        let mut req = self.http.get(url);
        if let Some(b) = self
            .creds
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&image.registry)
            .cloned()
        {
            req = req.basic_auth(&b.username, Some(&b.password));
        }
        let resp = req.send().await.map_err(|e| Self::transport(image, e))?;
        if !resp.status().is_success() {
            return Err(Error::Status {
                image: image.to_string(),
                status: resp.status().as_u16(),
                message: "token request refused".into(),
            });
        }
        let v = Self::read_json(image, resp, MAX_TOKEN_BYTES, "token response").await?;
        let tok = v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .ok_or_else(|| Error::Invalid {
                image: image.to_string(),
                message: "token response has no token".into(),
            })?;
        let ttl = v["expires_in"].as_u64().unwrap_or(60).max(10);
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                key,
                (
                    tok.to_string(),
                    Instant::now() + Duration::from_secs(ttl - 5),
                ),
            );
        Ok(tok.to_string())
    }

    /// GET with auth challenges and 429 handling.
    async fn get(&self, image: &ImageRepo, url: &str, accept: Option<&str>) -> Result<Response> {
        let mut auth: Option<String> = None;
        let mut challenged = false;
        let mut retries = 0;
        loop {
            let mut req = self.http.request(Method::GET, url);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if let Some(a) = &auth {
                req = req.header(AUTHORIZATION, a);
            }
            let resp = req.send().await.map_err(|e| Self::transport(image, e))?;
            match resp.status() {
                StatusCode::UNAUTHORIZED if !challenged => {
                    challenged = true;
                    let header = resp
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    auth = match parse_challenge(header) {
                        Some(Challenge::Bearer {
                            realm,
                            service,
                            scope,
                        }) => {
                            let scope =
                                scope.unwrap_or_else(|| format!("repository:{}:pull", image.path));
                            Some(format!(
                                "Bearer {}",
                                self.bearer_token(image, &realm, service.as_deref(), Some(&scope))
                                    .await?
                            ))
                        }
                        _ => {
                            match self
                                .creds
                                .read()
                                .unwrap_or_else(|e| e.into_inner())
                                .get(&image.registry)
                                .cloned()
                            {
                                Some(b) => Some(format!(
                                    "Basic {}",
                                    base64::engine::general_purpose::STANDARD
                                        .encode(format!("{}:{}", b.username, b.password))
                                )),
                                None => return Err(Error::Status {
                                    image: image.to_string(),
                                    status: 401,
                                    message:
                                        "authentication required: add credentials for this registry"
                                            .into(),
                                }),
                            }
                        }
                    };
                }
                StatusCode::TOO_MANY_REQUESTS if retries < self.settings.max_retries => {
                    retries += 1;
                    let wait = retry_after(resp.headers())
                        .unwrap_or(Duration::from_secs(1 << retries))
                        .min(self.settings.max_retry_after);
                    tokio::time::sleep(wait).await;
                }
                s if s.is_success() => return Ok(resp),
                s => {
                    let body = crate::util::http::read_response(
                        resp,
                        crate::util::http::SMALL_BODY,
                        "error body",
                    )
                    .await
                    .unwrap_or_default();
                    let message = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    return Err(Error::Status {
                        image: image.to_string(),
                        status: s.as_u16(),
                        message,
                    });
                }
            }
        }
    }

    /// Adds credentials (e.g. from an ImageRepository's `secretRef`) for later requests.
    pub fn add_credentials(&self, more: &Credentials) {
        let mut c = self.creds.write().unwrap_or_else(|e| e.into_inner());
        for (host, b) in &more.by_host {
            c.by_host.insert(host.clone(), b.clone());
        }
    }

    /// Every tag of `image` (following pagination), minus excluded ones, capped.
    pub async fn list_tags(&self, image: &ImageRepo, exclusions: &[Regex]) -> Result<Vec<String>> {
        let base = self.base_url(image);
        let mut url = format!("{base}/v2/{}/tags/list", image.path);
        let mut tags = Vec::new();
        let mut pages = 0;
        loop {
            pages += 1;
            let resp = self.get(image, &url, None).await?;
            let next = next_link(resp.headers());
            let v = Self::read_json(image, resp, MAX_JSON_BYTES, "tag list").await?;
            let page = match &v["tags"] {
                serde_json::Value::Array(a) => a,
                serde_json::Value::Null => break,
                _ => {
                    return Err(Error::Invalid {
                        image: image.to_string(),
                        message: "tag list has no tags array".into(),
                    })
                }
            };
            for t in page {
                let Some(t) = t.as_str() else { continue };
                if !exclusions.iter().any(|r| r.is_match(t)) {
                    tags.push(t.to_string());
                }
            }
            if tags.len() > self.settings.max_tags
                || (tags.len() == self.settings.max_tags && next.is_some())
            {
                tags.truncate(self.settings.max_tags);
                tracing::warn!(image = %image, max = self.settings.max_tags, "tag list truncated at the configured cap (images.maxTags)");
                break;
            }
            match next {
                Some(n) if pages < 10_000 => {
                    url = if n.starts_with("http://") || n.starts_with("https://") {
                        n
                    } else {
                        format!("{base}{n}")
                    };
                }
                _ => break,
            }
        }
        Ok(tags)
    }

    /// The Helm chart layer of the OCI artifact `image:tag`: (digest `sha256:…`, size).
    pub async fn chart_layer(&self, image: &ImageRepo, tag: &str) -> Result<(String, u64)> {
        let base = self.base_url(image);
        let invalid = |m: String| Error::Invalid {
            image: image.to_string(),
            message: m,
        };
        let resp = self
            .get(
                image,
                &format!("{base}/v2/{}/manifests/{tag}", image.path),
                Some("application/vnd.oci.image.manifest.v1+json"),
            )
            .await?;
        let manifest = Self::read_json(image, resp, MAX_MANIFEST_BYTES, "manifest").await?;
        let layer = manifest["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| {
                matches!(
                    l["mediaType"].as_str(),
                    Some("application/vnd.cncf.helm.chart.content.v1.tar+gzip")
                        | Some("application/tar+gzip")
                )
            })
            .ok_or_else(|| invalid(format!("{tag} is not a Helm chart (no chart layer)")))?;
        let digest = layer["digest"]
            .as_str()
            .filter(|d| d.starts_with("sha256:"))
            .ok_or_else(|| invalid("chart layer without a sha256 digest".into()))?;
        Ok((digest.to_string(), layer["size"].as_u64().unwrap_or(0)))
    }

    /// Downloads blob `digest` of `image` (at most `limit` bytes) and checks its sha256.
    pub async fn blob(&self, image: &ImageRepo, digest: &str, limit: usize) -> Result<Vec<u8>> {
        let base = self.base_url(image);
        let invalid = |m: String| Error::Invalid {
            image: image.to_string(),
            message: m,
        };
        let resp = self
            .get(
                image,
                &format!("{base}/v2/{}/blobs/{digest}", image.path),
                None,
            )
            .await?;
        let body = Self::read(image, resp, limit, &format!("blob {digest}")).await?;
        let got = format!("sha256:{}", crate::manifest::object::sha256_hex(&body));
        if got != digest {
            return Err(invalid(format!(
                "digest mismatch: expected {digest}, downloaded {got}"
            )));
        }
        Ok(body.to_vec())
    }

    /// The creation time of `image:tag` (Unix seconds), from its config blob.
    pub async fn created(&self, image: &ImageRepo, tag: &str) -> Result<Option<i64>> {
        let base = self.base_url(image);
        const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json";
        let invalid = |m: String| Error::Invalid {
            image: image.to_string(),
            message: m,
        };
        let resp = self
            .get(
                image,
                &format!("{base}/v2/{}/manifests/{tag}", image.path),
                Some(ACCEPT_ALL),
            )
            .await?;
        let mut manifest = Self::read_json(image, resp, MAX_MANIFEST_BYTES, "manifest").await?;
        if let Some(list) = manifest["manifests"].as_array() {
            let pick = list
                .iter()
                .find(|m| {
                    m["platform"]["os"] == "linux" && m["platform"]["architecture"] == "amd64"
                })
                .or(list.first())
                .and_then(|m| m["digest"].as_str())
                .ok_or_else(|| invalid("empty image index".into()))?
                .to_string();
            let resp = self
                .get(
                    image,
                    &format!("{base}/v2/{}/manifests/{pick}", image.path),
                    Some(ACCEPT_ALL),
                )
                .await?;
            manifest = Self::read_json(image, resp, MAX_MANIFEST_BYTES, "manifest").await?;
        }
        let Some(config) = manifest["config"]["digest"].as_str() else {
            return Ok(None);
        };
        let resp = self
            .get(
                image,
                &format!("{base}/v2/{}/blobs/{config}", image.path),
                None,
            )
            .await?;
        let blob = Self::read_json(image, resp, MAX_JSON_BYTES, "image config").await?;
        Ok(blob["created"].as_str().and_then(parse_rfc3339))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_realm_must_be_https_unless_the_registry_is_plain_http() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        assert!(check_realm(&url("https://auth.docker.io/token"), false).is_ok());
        assert!(check_realm(&url("https://auth.docker.io/token"), true).is_ok());
        let e = check_realm(&url("http://evil.example/token"), false).unwrap_err();
        assert!(e.contains("plain http is refused"), "{e}");
        assert!(check_realm(&url("http://127.0.0.1:5000/token"), true).is_ok());
        assert!(check_realm(&url("ftp://evil.example/token"), true).is_err());
        // Which registries count as plain http: loopback ones and listed ones.
        let repo = |r: &str| crate::oci::reference::ImageRepo {
            registry: r.into(),
            path: "app".into(),
        };
        let insecure = vec!["registry.lan:5000".to_string()];
        assert_eq!(repo("127.0.0.1:5000").scheme(&[]), "http");
        assert_eq!(repo("registry.lan:5000").scheme(&insecure), "http");
        assert_eq!(repo("ghcr.io").scheme(&insecure), "https");
    }

    #[test]
    fn challenges_links_and_times() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/podinfo:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/podinfo:pull".into())
            })
        );
        assert_eq!(
            parse_challenge("Basic realm=\"Registry\""),
            Some(Challenge::Basic)
        );
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            "</v2/x/tags/list?n=100&last=b>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("/v2/x/tags/list?n=100&last=b")
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:10Z"), Some(10));
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123456789Z"),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_rfc3339("2023-11-15T00:13:20+02:00"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn docker_config_credentials() {
        let c = Credentials::from_docker_config(r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},"ghcr.io":{"username":"u","password":"p"}}}"#).unwrap();
        assert_eq!(c.get("docker.io").unwrap().username, "user");
        assert_eq!(c.get("ghcr.io").unwrap().password, "p");
        assert!(
            !format!("{:?}", c).contains("pass"),
            "debug output hides passwords"
        );
    }
}
