//! The built-in load tester, answering the Flagger load tester's API so webhook URLs
//! in existing Canary specs work: `POST /` runs `metadata.cmd` (type `cmd`: async, 202,
//! de-duplicated per canary and command; type `bash`: `sh -c`, 200 or 500), and the
//! gates `/gate/{approve,halt,check,open,close}` and `/rollback/{check,open,close}`.
//! Types `helm`, `helmv2` and `helmv3` run a release's Helm test hooks (the Flagger helm
//! tester). `hey` lines run on gitcanary's own load generator.
//!
//! The canary engine calls [`LoadTester::handle`] in process; the HTTP API in [`api`]
//! exists only when configured, behind a bearer token. Commands never see gitcanary's
//! own environment, which holds its secrets.

pub mod api;
pub mod hey;

use axum::http::StatusCode;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a hey run did.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Report {
    /// Requests sent.
    pub total: u64,
    /// Responses by status code.
    pub by_status: BTreeMap<u16, u64>,
    /// Responses by status class (`2xx`, `4xx`, `5xx`, ...): an answer of 500 is a
    /// response, not a transport error, so hey reports the two apart.
    pub status_classes: BTreeMap<String, u64>,
    /// Requests that got no response (timeouts, refused or reset connections).
    pub transport_errors: u64,
    /// Wall time.
    pub elapsed_secs: f64,
    /// Achieved requests per second.
    pub rps: f64,
}

impl Report {
    fn add(&mut self, other: Report) {
        self.total += other.total;
        self.transport_errors += other.transport_errors;
        for (k, v) in other.by_status {
            *self.by_status.entry(k).or_default() += v;
        }
    }

    fn classify(&mut self) {
        self.status_classes.clear();
        for (code, n) in &self.by_status {
            *self
                .status_classes
                .entry(format!("{}xx", code / 100))
                .or_default() += n;
        }
    }

    /// `requests=N 2xx=N 3xx=N 4xx=N 5xx=N transport_errors=N rps=R`, the log line's tail.
    pub fn summary(&self) -> String {
        let class = |c: &str| self.status_classes.get(c).copied().unwrap_or(0);
        format!(
            "requests={} 2xx={} 3xx={} 4xx={} 5xx={} transport_errors={} rps={:.1}",
            self.total,
            class("2xx"),
            class("3xx"),
            class("4xx"),
            class("5xx"),
            self.transport_errors,
            self.rps
        )
    }
}

/// Runs a hey spec against `url` (the spec's URL mapped to a local listener).
pub async fn run_hey(spec: &hey::HeySpec, url: &str) -> Report {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let started = Instant::now();
    let deadline = spec.duration.map(|d| started + d);
    let per_worker = spec.requests / spec.concurrency as u64;
    let extra = spec.requests % spec.concurrency as u64;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..spec.concurrency as u64 {
        let (client, spec, url) = (client.clone(), spec.clone(), url.to_string());
        let budget = if deadline.is_some() {
            u64::MAX
        } else {
            per_worker + u64::from(w < extra)
        };
        tasks.spawn(async move {
            let mut r = Report::default();
            let mut tick = (spec.rate_per_worker > 0.0).then(|| {
                let mut i =
                    tokio::time::interval(Duration::from_secs_f64(1.0 / spec.rate_per_worker));
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            });
            while r.total < budget {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let mut b = hyper::Request::builder()
                    .method(spec.method.as_str())
                    .uri(&url);
                for (k, v) in &spec.headers {
                    b = b.header(k, v);
                }
                let Ok(req) = b.body(Full::new(Bytes::from(
                    spec.body.clone().unwrap_or_default(),
                ))) else {
                    break;
                };
                r.total += 1;
                let fut = async {
                    let resp = client.request(req).await?;
                    let status = resp.status().as_u16();
                    crate::util::http::drain(resp.into_body()).await;
                    Ok::<u16, hyper_util::client::legacy::Error>(status)
                };
                let outcome = match spec.timeout {
                    Some(t) => tokio::time::timeout(t, fut).await.ok(),
                    None => Some(fut.await),
                };
                match outcome {
                    Some(Ok(status)) => *r.by_status.entry(status).or_default() += 1,
                    _ => r.transport_errors += 1,
                }
            }
            r
        });
    }
    let mut total = Report::default();
    while let Some(Ok(r)) = tasks.join_next().await {
        total.add(r);
    }
    total.classify();
    total.elapsed_secs = started.elapsed().as_secs_f64();
    total.rps = total.total as f64 / total.elapsed_secs.max(1e-9);
    total
}

/// Load tester state: running commands, gates, last reports.
#[derive(Default)]
pub struct LoadTester {
    state_dir: Option<PathBuf>,
    images: BTreeMap<String, Vec<String>>,
    running: Mutex<HashSet<String>>,
    gates: Mutex<HashSet<String>>,
    rollbacks: Mutex<HashSet<String>>,
    reports: Mutex<Vec<(String, Report)>>,
}

#[derive(serde::Deserialize, Default)]
struct Payload {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

impl LoadTester {
    /// A load tester that resolves Service names through the local target at `state_dir`.
    pub fn new(state_dir: Option<PathBuf>) -> Arc<LoadTester> {
        Arc::new(LoadTester {
            state_dir,
            ..Default::default()
        })
    }

    /// A load tester on the local target at `state_dir` that can also run Helm tests,
    /// with containers resolved through `images` (`target.local.images`).
    pub fn local(state_dir: PathBuf, images: BTreeMap<String, Vec<String>>) -> Arc<LoadTester> {
        Arc::new(LoadTester {
            state_dir: Some(state_dir),
            images,
            ..Default::default()
        })
    }

    /// Runs `helm test` (the Flagger helm tester's `metadata.cmd`).
    async fn helm_test(&self, ns: &str, cmd: &str) -> Result<String, String> {
        let parsed = crate::helm::hooks::parse_test_command(cmd)?;
        let Some(state_dir) = self.state_dir.clone() else {
            return Err("helm tester: no local target".into());
        };
        let (images, ns) = (self.images.clone(), ns.to_string());
        tokio::task::spawn_blocking(move || {
            let target = super::LocalTarget::open(&state_dir, images, false)
                .map_err(|e| format!("helm tester: {e}"))?;
            crate::sync::hooks::helm_test(&target, &state_dir, &parsed, &ns)
        })
        .await
        .map_err(|e| format!("helm tester: {e}"))?
    }

    /// Reports of finished hey runs: (`namespace/name`, report).
    pub fn reports(&self) -> Vec<(String, Report)> {
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn local_url(&self, url: &str, ns: &str) -> String {
        match &self.state_dir {
            Some(d) => super::names::rewrite_url(
                &super::names::allocations(d),
                url,
                if ns.is_empty() { "default" } else { ns },
            ),
            None => url.to_string(),
        }
    }

    async fn run_command(
        self: &Arc<Self>,
        key: &str,
        ns: &str,
        cmd: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        if let Some(parsed) = hey::parse(cmd) {
            let spec = parsed?;
            let url = self.local_url(&spec.url, ns);
            let report = run_hey(&spec, &url).await;
            let class = |c: &str| report.status_classes.get(c).copied().unwrap_or(0);
            tracing::info!(
                canary = %key,
                requests = report.total,
                status_2xx = class("2xx"),
                status_4xx = class("4xx"),
                status_5xx = class("5xx"),
                transport_errors = report.transport_errors,
                "load test finished: {}: {}",
                hey::redact(cmd),
                report.summary()
            );
            let text = serde_json::to_string(&report).unwrap_or_default();
            self.reports
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((key.to_string(), report));
            return Ok(text);
        }
        let mut sh = tokio::process::Command::new("sh");
        // A command gets PATH and HOME, and what it sets itself; never gitcanary's own
        // environment (webhook secret, Git tokens, registry credentials).
        sh.arg("-c")
            .arg(cmd)
            .env_clear()
            .envs(crate::targets::local::runtime::process::base_env())
            .kill_on_drop(true);
        match tokio::time::timeout(timeout, sh.output()).await {
            Ok(Ok(out)) if out.status.success() => {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            }
            Ok(Ok(out)) => Err(format!(
                "command failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )),
            Ok(Err(e)) => Err(format!("cannot run sh: {e}")),
            Err(_) => Err(format!("command timed out after {timeout:?}")),
        }
    }

    /// Answers one load tester request: `path` as in the Flagger load tester's API
    /// (`/`, `/gate/check`, ...), `body` its JSON payload. The canary engine calls this
    /// in process; [`api`] calls it once an HTTP request is authenticated.
    pub async fn handle(self: &Arc<Self>, path: &str, body: &[u8]) -> (StatusCode, String) {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let path = match path.trim_end_matches('/') {
            "" => "/",
            p => p,
        };
        let gate = |set: &Mutex<HashSet<String>>, action: &str| {
            let key = key_of(body);
            let mut s = set.lock().unwrap_or_else(|e| e.into_inner());
            match action {
                "open" => {
                    s.insert(key);
                    (StatusCode::OK, "opened\n".to_string())
                }
                "close" => {
                    s.remove(&key);
                    (StatusCode::OK, "closed\n".to_string())
                }
                _ if s.contains(&key) => (StatusCode::OK, "open\n".to_string()),
                _ => (StatusCode::FORBIDDEN, "closed\n".to_string()),
            }
        };
        match path {
            "/" => self.command(body).await,
            "/gate/approve" => (StatusCode::OK, "approved\n".into()),
            "/gate/halt" => (StatusCode::FORBIDDEN, "halted\n".into()),
            "/gate/check" | "/gate/open" | "/gate/close" => gate(&self.gates, &path[6..]),
            "/rollback/check" | "/rollback/open" | "/rollback/close" => {
                gate(&self.rollbacks, &path[10..])
            }
            other => (
                StatusCode::NOT_FOUND,
                format!("load tester: no endpoint {other}\n"),
            ),
        }
    }

    async fn command(self: &Arc<Self>, body: &[u8]) -> (StatusCode, String) {
        let p: Payload = match serde_json::from_slice(body) {
            Ok(p) => p,
            Err(e) => return (StatusCode::BAD_REQUEST, format!("invalid payload: {e}\n")),
        };
        let Some(cmd) = p.metadata.get("cmd").cloned() else {
            return (StatusCode::BAD_REQUEST, "metadata.cmd is required\n".into());
        };
        let key = format!("{}/{}", p.namespace, p.name);
        let timeout = p
            .metadata
            .get("timeout")
            .and_then(|t| crate::util::duration::parse(t).ok())
            .unwrap_or(Duration::from_secs(60));
        match p.metadata.get("type").map(String::as_str).unwrap_or("cmd") {
            "bash" => match self.run_command(&key, &p.namespace, &cmd, timeout).await {
                Ok(out) => (StatusCode::OK, out),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            },
            "cmd" => self.start_command(key, p.namespace, cmd),
            // The Flagger helm tester: `helm`/`helmv2` (Helm 2) and `helmv3`.
            "helm" | "helmv2" | "helmv3" => match self.helm_test(&p.namespace, &cmd).await {
                Ok(out) => {
                    tracing::info!(canary = %key, "helm test passed: {cmd}");
                    (StatusCode::OK, format!("{out}\n"))
                }
                Err(e) => {
                    tracing::warn!(canary = %key, "helm test failed: {e}");
                    (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))
                }
            },
            other => (
                StatusCode::BAD_REQUEST,
                format!("unknown metadata.type {other:?}: use cmd, bash, helm, helmv2 or helmv3\n"),
            ),
        }
    }

    /// Type `cmd`: starts `cmd` in the background, once at a time per canary.
    fn start_command(
        self: &Arc<Self>,
        key: String,
        ns: String,
        cmd: String,
    ) -> (StatusCode, String) {
        if let Some(Err(e)) = hey::parse(&cmd) {
            return (StatusCode::BAD_REQUEST, format!("{e}\n"));
        }
        let dedupe = format!("{key}\0{cmd}");
        if !self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dedupe.clone())
        {
            return (StatusCode::ACCEPTED, "already running\n".into());
        }
        let lt = self.clone();
        tokio::spawn(async move {
            if let Err(e) = lt
                .run_command(&key, &ns, &cmd, Duration::from_secs(24 * 3600))
                .await
            {
                tracing::warn!(canary = %key, "load test command failed: {e}");
            }
            lt.running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&dedupe);
        });
        (StatusCode::ACCEPTED, "started\n".into())
    }
}

fn key_of(body: &[u8]) -> String {
    let p: Payload = serde_json::from_slice(body).unwrap_or_default();
    format!("{}/{}", p.namespace, p.name)
}

/// The path of a webhook URL (`/gate/check` of `http://flagger-loadtester.test/gate/check`).
pub fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map_or("/", |i| &rest[i..])
}

/// Whether a webhook URL's host names a load tester (`flagger-loadtester.test`,
/// `load-tester.prod`): its first label contains one of `names`.
pub fn is_loadtester_url(url: &str, names: &[String]) -> bool {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    let first = host.split('.').next().unwrap_or_default();
    names.iter().any(|n| first.contains(n.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_seed_guide_urls() {
        let names = vec!["loadtester".to_string(), "load-tester".to_string()];
        for u in [
            "http://flagger-loadtester.test/",
            "http://load-tester.prod/",
            "http://flagger-loadtest-loadtester.loadtest/gate/check",
        ] {
            assert!(is_loadtester_url(u, &names), "{u}");
        }
        assert!(!is_loadtester_url(
            "http://podinfo-canary.test:9898/",
            &names
        ));
    }
}
