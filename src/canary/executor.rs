//! The canary executor for the local target: the thin edge around `decide()`. Each
//! tick it observes every Canary (target revision, readiness from the runtime, webhook
//! gates, and, when a step is due, webhooks and built-in metrics from the proxy's
//! window), calls `decide()`, and applies the plan: generated primary and Services in
//! the store, routes on the proxy, replica overrides in the runtime, events in the log
//! and the status.

use super::decide::{self, Action, Checks, Due, Observations};
use super::spec::{self, CanarySpec, HookType};
use super::state::{CanaryStatus, Phase, Severity};
use crate::manifest::ObjectKey;
use crate::target::local::loadtester::{self, LoadTester};
use crate::target::local::proxy::stats::Scope;
use crate::target::local::proxy::{global_stats, Proxy};
use crate::target::local::runtime::supervisor::{set_replica_override, Notifier};
use crate::target::local::{names, LocalStore};
use crate::target::Target;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod alerts;
mod finalize;

/// The canary engine on the local target.
pub struct Engine {
    state_dir: PathBuf,
    store: LocalStore,
    proxy: Arc<Proxy>,
    router: Arc<dyn super::router::TrafficRouter>,
    loadtester: Arc<LoadTester>,
    loadtester_names: Vec<String>,
    runtime: Option<Notifier>,
    http: reqwest::Client,
    max_concurrent: Option<u32>,
    /// Canaries whose route was restored from their status since start.
    restored: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The Canaries present when no removed one was left to finalize: while they stay
    /// the same, ticks skip the check.
    settled: std::sync::Mutex<Option<Vec<ObjectKey>>>,
}

/// Where a canary's status lives.
pub fn status_path(state_dir: &Path, ns: &str, name: &str) -> PathBuf {
    state_dir
        .join("status")
        .join("flagger.app")
        .join("Canary")
        .join(ns)
        .join(format!("{name}.json"))
}

/// Reads a canary's status (default when none yet).
pub fn read_status(state_dir: &Path, ns: &str, name: &str) -> CanaryStatus {
    std::fs::read(status_path(state_dir, ns, name))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn deployment(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new("apps/v1", "Deployment", ns, name)
}

/// The label a Deployment's selector uses for its name (Flagger: `app`, `name` or
/// `app.kubernetes.io/name`).
fn selector_label(dep: &Value) -> String {
    let sel = &dep["spec"]["selector"]["matchLabels"];
    ["app", "name", "app.kubernetes.io/name"]
        .iter()
        .find(|l| sel.get(**l).is_some())
        .unwrap_or(&"app")
        .to_string()
}

/// Go's short duration format for a latency in ms (`1.5s`, `250ms`).
fn go_duration(ms: f64) -> String {
    if ms >= 1000.0 {
        let s = format!("{:.3}", ms / 1000.0);
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    } else {
        let s = format!("{ms:.3}");
        format!("{}ms", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

impl Engine {
    /// An engine over the local target's store, proxy and load tester.
    pub fn new(
        state_dir: &Path,
        proxy: Arc<Proxy>,
        loadtester: Arc<LoadTester>,
        loadtester_names: Vec<String>,
        runtime: Option<Notifier>,
        max_concurrent: Option<u32>,
    ) -> std::io::Result<Engine> {
        crate::util::tls::install_crypto_provider();
        Ok(Engine {
            state_dir: state_dir.to_path_buf(),
            store: LocalStore::open(state_dir).map_err(std::io::Error::other)?,
            router: proxy.clone(),
            proxy,
            loadtester,
            loadtester_names,
            runtime,
            http: reqwest::Client::builder()
                .build()
                .map_err(std::io::Error::other)?,
            restored: Default::default(),
            settled: Default::default(),
            max_concurrent,
        })
    }

    fn notify(&self) {
        if let Some(n) = &self.runtime {
            n.notify();
        }
    }

    /// The target's revision: its template hash plus the checksums of the ConfigMaps and
    /// Secrets it references (Flagger's tracked configs), stable across versions.
    fn revision(&self, target: &Value, ns: &str) -> String {
        let mut parts = vec![crate::target::local::runtime::spec::template_hash(
            &target["spec"]["template"],
        )];
        parts.extend(
            self.tracked_configs(target, ns)
                .into_iter()
                .map(|(k, sum)| format!("{k}:{sum}")),
        );
        crate::manifest::object::sha256_hex(parts.join("\n").as_bytes())
    }

    /// Checksums of the ConfigMaps and Secrets the target references, by `Kind/name`.
    fn tracked_configs(
        &self,
        target: &Value,
        ns: &str,
    ) -> std::collections::BTreeMap<String, String> {
        config_refs(&target["spec"]["template"]["spec"])
            .into_iter()
            .map(|(kind, name)| {
                let obj = self
                    .store
                    .get(&ObjectKey::new("v1", &kind, ns, &name))
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let data = json!({"data": obj["data"], "stringData": obj["stringData"]});
                (
                    format!("{kind}/{name}"),
                    crate::manifest::object::sha256_hex(&crate::manifest::object::canonical_json(
                        &data,
                    )),
                )
            })
            .collect()
    }

    fn ready(
        &self,
        ns: &str,
        name: &str,
        template_hash: &str,
        threshold: u32,
    ) -> Result<(), String> {
        let replicas = self
            .store
            .get(&deployment(ns, name))
            .ok()
            .flatten()
            .map(|d| d["spec"]["replicas"].as_u64().unwrap_or(1) as u32);
        let st = crate::target::local::runtime::supervisor::rollout_state(
            &self.state_dir,
            ns,
            name,
            replicas.unwrap_or(1),
        );
        let desired = replicas.map(|_| st.wanted).unwrap_or(1).max(1);
        let need = (desired * threshold).div_ceil(100).max(1);
        let (available, updated) = (st.available, st.updated);
        if st.template_hash == template_hash && updated >= desired.min(need) && available >= need {
            Ok(())
        } else {
            Err(format!(
                "deployment {name}.{ns} not ready: {available} of {desired} replicas available"
            ))
        }
    }

    async fn call_hook(
        &self,
        c: &CanarySpec,
        w: &spec::WebhookSpec,
        phase: Phase,
        checksum: &str,
    ) -> Result<(), String> {
        let payload = json!({"name": c.name, "namespace": c.namespace, "phase": format!("{phase:?}"), "checksum": checksum, "metadata": w.metadata});
        let mut last = String::new();
        for _ in 0..=w.retries {
            let result = if loadtester::is_loadtester_url(&w.url, &self.loadtester_names) {
                // Served in-process by the built-in load tester.
                use tower::ServiceExt;
                let path = w
                    .url
                    .split("://")
                    .nth(1)
                    .and_then(|r| r.find('/').map(|i| r[i..].to_string()))
                    .unwrap_or_else(|| "/".into());
                let req = axum::http::Request::post(path)
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(payload.to_string()));
                match req {
                    Ok(req) => match tokio::time::timeout(
                        w.timeout,
                        loadtester::app(self.loadtester.clone()).oneshot(req),
                    )
                    .await
                    {
                        Ok(Ok(resp)) => {
                            let code = resp.status().as_u16();
                            let body = http_body_util::BodyExt::collect(resp.into_body())
                                .await
                                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                                .unwrap_or_default();
                            Ok((code, body))
                        }
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!("timed out after {:?}", w.timeout)),
                    },
                    Err(e) => Err(e.to_string()),
                }
            } else {
                let url =
                    names::rewrite_url(&names::allocations(&self.state_dir), &w.url, &c.namespace);
                match self
                    .http
                    .post(url)
                    .timeout(w.timeout)
                    .json(&payload)
                    .send()
                    .await
                {
                    Ok(r) => {
                        let code = r.status().as_u16();
                        Ok((code, r.text().await.unwrap_or_default()))
                    }
                    Err(e) => Err(e.without_url().to_string()),
                }
            };
            match result {
                // Flagger: a status above 202 is a failure, reported with the body.
                Ok((code, _)) if code <= 202 => return Ok(()),
                Ok((code, body)) => {
                    let body = body.trim();
                    last = if body.is_empty() {
                        format!("status code {code}")
                    } else {
                        body.chars().take(1000).collect()
                    };
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn gate(&self, c: &CanarySpec, kind: HookType, phase: Phase, rev: &str) -> Option<bool> {
        let hooks: Vec<_> = c
            .analysis
            .webhooks
            .iter()
            .filter(|w| w.kind == kind)
            .collect();
        if hooks.is_empty() {
            return None;
        }
        for w in hooks {
            if self.call_hook(c, w, phase, rev).await.is_err() {
                return Some(false);
            }
        }
        Some(true)
    }

    async fn checks(
        &self,
        c: &CanarySpec,
        kind: HookType,
        phase: Phase,
        rev: &str,
        now: f64,
    ) -> Checks {
        let mut failures = Vec::new();
        for w in c.analysis.webhooks.iter().filter(|w| w.kind == kind) {
            match (self.call_hook(c, w, phase, rev).await, kind) {
                (Err(e), HookType::PreRollout) => failures.push(format!(
                    "Halt {} advancement pre-rollout check {} failed {e}",
                    c.id(),
                    w.name
                )),
                (Err(e), _) => failures.push(format!(
                    "Halt {} advancement external check {} failed {e}",
                    c.id(),
                    w.name
                )),
                (Ok(()), _) => {}
            }
        }
        if kind != HookType::Rollout || !failures.is_empty() {
            return Checks { failures };
        }
        let provider = c.provider.clone().unwrap_or_else(|| "gitcanary".into());
        for m in &c.analysis.metrics {
            if let Some((tname, tns)) = &m.template {
                if let Some(f) = self.template_check(c, m, tname, tns).await {
                    failures.push(f);
                }
                continue;
            }
            let w = global_stats().window(
                &c.namespace,
                &c.target,
                &Scope::last(m.interval, now as u64 + 1),
            );
            let Some(w) = w else {
                // Flagger counts an empty metric result as a failed check.
                failures.push(format!("Halt advancement no values found for {provider} metric {} probably {} is not receiving traffic", m.name, c.target_id()));
                continue;
            };
            match m.name.as_str() {
                "request-success-rate" => {
                    if let Some(min) = m.min.filter(|min| w.success_rate < *min) {
                        failures.push(format!(
                            "Halt {} advancement success rate {:.2}% < {min}%",
                            c.id(),
                            w.success_rate
                        ));
                    }
                    if let Some(max) = m.max.filter(|max| w.success_rate > *max) {
                        failures.push(format!(
                            "Halt {} advancement success rate {:.2}% > {max}%",
                            c.id(),
                            w.success_rate
                        ));
                    }
                }
                "request-duration" => {
                    if let Some(max) = m.max.filter(|max| w.p99_ms > *max) {
                        failures.push(format!(
                            "Halt {} advancement request duration {} > {}",
                            c.id(),
                            go_duration(w.p99_ms),
                            go_duration(max)
                        ));
                    }
                    if let Some(min) = m.min.filter(|min| w.p99_ms < *min) {
                        failures.push(format!(
                            "Halt {} advancement request duration {} < {}",
                            c.id(),
                            go_duration(w.p99_ms),
                            go_duration(min)
                        ));
                    }
                }
                _ => {}
            }
        }
        Checks { failures }
    }

    /// The built-in metrics' current values, recorded when a step ran (for `describe`).
    fn last_metric_values(
        &self,
        c: &CanarySpec,
        obs: &Observations,
        now: f64,
    ) -> Option<Vec<super::state::MetricValue>> {
        obs.analysis.as_ref()?;
        Some(
            c.analysis
                .metrics
                .iter()
                .map(|m| {
                    let w = global_stats().window(
                        &c.namespace,
                        &c.target,
                        &Scope::last(m.interval, now as u64 + 1),
                    );
                    let value = match m.name.as_str() {
                        "request-success-rate" => w.map(|w| w.success_rate),
                        "request-duration" => w.map(|w| w.p99_ms),
                        _ => None,
                    };
                    super::state::MetricValue {
                        name: m.name.clone(),
                        value,
                        min: m.min,
                        max: m.max,
                    }
                })
                .collect(),
        )
    }

    /// Runs one MetricTemplate check; the halt message on failure.
    async fn template_check(
        &self,
        c: &CanarySpec,
        m: &spec::MetricSpec,
        tname: &str,
        tns: &str,
    ) -> Option<String> {
        let key = ObjectKey::new("flagger.app/v1beta1", "MetricTemplate", tns, tname);
        let Ok(Some(t)) = self.store.get(&key) else {
            return Some(format!("Metric template {tname}.{tns} error: not found"));
        };
        let provider = t["spec"]["provider"]["type"]
            .as_str()
            .unwrap_or("prometheus");
        if provider != "prometheus" {
            return Some(format!("Metric template {tname}.{tns} provider {provider} error: only prometheus is supported"));
        }
        let interval = crate::util::duration::format(m.interval);
        let model = super::metrics::Model {
            name: &c.name,
            namespace: &c.namespace,
            target: &c.target,
            service: &c.service,
            interval: &interval,
            variables: &m.variables,
        };
        let query =
            match super::metrics::render(t["spec"]["query"].as_str().unwrap_or_default(), &model) {
                Ok(q) => q,
                Err(e) => {
                    return Some(format!(
                        "Metric template {tname}.{tns} query render error: {e}"
                    ))
                }
            };
        let address = names::rewrite_url(
            &names::allocations(&self.state_dir),
            t["spec"]["provider"]["address"]
                .as_str()
                .unwrap_or_default(),
            &c.namespace,
        );
        match super::metrics::query(&self.http, &address, &query).await {
            // Flagger counts an empty metric result as a failed check.
            Ok(None) => Some(format!(
                "Halt advancement no values found for custom metric: {}",
                m.name
            )),
            Err(e) => Some(format!("Metric query failed for {}: {e}", m.name)),
            Ok(Some(v)) => {
                if let Some(min) = m.min.filter(|min| v < *min) {
                    Some(format!(
                        "Halt {} advancement {} {v:.2} < {min}",
                        c.id(),
                        m.name
                    ))
                } else {
                    m.max
                        .filter(|max| v > *max)
                        .map(|max| format!("Halt {} advancement {} {v:.2} > {max}", c.id(), m.name))
                }
            }
        }
    }

    fn owner(c: &CanarySpec) -> String {
        format!("Canary/{}/{}", c.namespace, c.name)
    }

    /// Writes `<target>-primary` (with `-primary` ConfigMap/Secret copies) from the target.
    fn write_primary(&self, c: &CanarySpec, target: &Value) -> Result<(), String> {
        let label = selector_label(target);
        let primary_name = format!("{}-primary", c.target);
        let mut p = target.clone();
        p["metadata"] = json!({"name": primary_name, "namespace": c.namespace, "labels": {label.clone(): primary_name}});
        p["spec"]["selector"]["matchLabels"][&label] = primary_name.clone().into();
        p["spec"]["template"]["metadata"]["labels"][&label] = primary_name.clone().into();
        let existing = self
            .store
            .get(&deployment(&c.namespace, &primary_name))
            .ok()
            .flatten();
        // Keep the primary's replica count once it exists (an HPA may have set it).
        if let Some(e) = &existing {
            p["spec"]["replicas"] = e["spec"]["replicas"].clone();
        }
        for (kind, name) in config_refs(&target["spec"]["template"]["spec"]) {
            let Ok(Some(mut cfg)) =
                self.store
                    .get(&ObjectKey::new("v1", &kind, &c.namespace, &name))
            else {
                continue;
            };
            let copy = format!("{name}-primary");
            cfg["metadata"] = json!({"name": copy, "namespace": c.namespace});
            self.store
                .put_generated(
                    &ObjectKey::new("v1", &kind, &c.namespace, &copy),
                    &cfg,
                    &Self::owner(c),
                )
                .map_err(|e| e.to_string())?;
        }
        rename_config_refs(&mut p["spec"]["template"]["spec"]);
        if let Some(hpa_name) = &c.autoscaler {
            let hpa_key = ObjectKey::new(
                "autoscaling/v2",
                "HorizontalPodAutoscaler",
                &c.namespace,
                hpa_name,
            );
            if let Ok(Some(mut hpa)) = self.store.get(&hpa_key) {
                let copy = format!("{hpa_name}-primary");
                hpa["metadata"] = json!({"name": copy, "namespace": c.namespace});
                hpa["spec"]["scaleTargetRef"]["name"] = primary_name.clone().into();
                self.store
                    .put_generated(
                        &ObjectKey::new(
                            "autoscaling/v2",
                            "HorizontalPodAutoscaler",
                            &c.namespace,
                            &copy,
                        ),
                        &hpa,
                        &Self::owner(c),
                    )
                    .map_err(|e| e.to_string())?;
            }
        }
        self.store
            .put_generated(
                &deployment(&c.namespace, &primary_name),
                &p,
                &Self::owner(c),
            )
            .map_err(|e| e.to_string())
    }

    fn write_services(&self, c: &CanarySpec, target: &Value) -> Result<(), String> {
        let label = selector_label(target);
        let svc = |name: String, app: String| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": c.namespace},
                "spec": {"selector": {label.clone(): app}, "ports": [{"name": "http", "port": c.port, "targetPort": c.target_port}]}})
        };
        let primary = format!("{}-primary", c.target);
        for (name, app) in [
            (c.service.clone(), primary.clone()),
            (format!("{}-primary", c.service), primary.clone()),
            (format!("{}-canary", c.service), c.target.clone()),
        ] {
            self.store
                .put_generated(
                    &ObjectKey::new("v1", "Service", &c.namespace, &name),
                    &svc(name.clone(), app),
                    &Self::owner(c),
                )
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// One pass over every Canary.
    pub async fn tick(&self, now: f64) {
        let keys = self.store.list("flagger.app", "Canary").unwrap_or_default();
        let mut progressing = 0;
        for key in &keys {
            let st = read_status(&self.state_dir, &key.namespace, &key.name);
            if matches!(
                st.phase,
                Phase::Progressing | Phase::WaitingPromotion | Phase::Promoting | Phase::Finalising
            ) {
                progressing += 1;
            }
        }
        for key in keys.iter().cloned() {
            let Ok(Some(obj)) = self.store.get(&key) else {
                continue;
            };
            let span =
                tracing::info_span!("canary", canary = %format!("{}.{}", key.name, key.namespace));
            let _g = span.enter();
            match spec::parse(&obj) {
                Ok(mut c) => {
                    c.suspend |= super::commands::suspended(&self.state_dir, &c.namespace, &c.name);
                    if let Err(e) = self.step(&c, now, progressing).await {
                        tracing::warn!("{e}");
                    }
                }
                Err(errs) => tracing::warn!("invalid Canary: {}", errs.join("; ")),
            }
        }
        self.finalize_removed(&keys).await;
    }

    fn set_route(&self, c: &CanarySpec, canary: u32, mirror: bool, ab: bool) {
        self.router.set_routes(c, canary, mirror, ab);
    }

    async fn step(&self, c: &CanarySpec, now: f64, progressing: usize) -> Result<(), String> {
        let status = read_status(&self.state_dir, &c.namespace, &c.name);
        // Routes live in the proxy's memory: after a restart, put back what the status
        // says before deciding anything, so a resumed analysis keeps its weight.
        if status.phase != Phase::Initializing
            && self
                .restored
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(c.id())
        {
            let ab = c.analysis.iterations > 0
                && c.analysis
                    .match_rules
                    .as_array()
                    .is_some_and(|m| !m.is_empty())
                && status.phase == Phase::Progressing;
            self.set_route(c, status.canary_weight, status.mirrored, ab);
        }
        let Some(target) = self
            .store
            .get(&deployment(&c.namespace, &c.target))
            .map_err(|e| e.to_string())?
        else {
            return Err(format!(
                "target deployment {}.{} not found",
                c.target, c.namespace
            ));
        };
        let rev = self.revision(&target, &c.namespace);
        let primary_name = format!("{}-primary", c.target);
        let primary = self
            .store
            .get(&deployment(&c.namespace, &primary_name))
            .map_err(|e| e.to_string())?;
        let primary_hash = primary
            .as_ref()
            .map(|p| crate::target::local::runtime::spec::template_hash(&p["spec"]["template"]))
            .unwrap_or_default();
        let target_hash =
            crate::target::local::runtime::spec::template_hash(&target["spec"]["template"]);
        let mut obs = Observations {
            revision: rev.clone(),
            primary_exists: primary.is_some(),
            primary_ready: primary.is_some()
                && self
                    .ready(
                        &c.namespace,
                        &primary_name,
                        &primary_hash,
                        c.analysis.primary_ready_threshold,
                    )
                    .is_ok(),
            canary_not_ready: match status.phase {
                Phase::Progressing | Phase::WaitingPromotion => self
                    .ready(
                        &c.namespace,
                        &c.target,
                        &target_hash,
                        c.analysis.canary_ready_threshold,
                    )
                    .err(),
                _ => None,
            },
            // Waiting canaries start only while fewer than the cap are analysing.
            slot_available: self
                .max_concurrent
                .is_none_or(|max| (progressing as u32) < max),
            manual: super::commands::take(&self.state_dir, &c.namespace, &c.name),
            ..Default::default()
        };
        let new_revision = rev != status.last_applied_spec && rev != status.last_promoted_spec;
        if matches!(
            status.phase,
            Phase::Initialized | Phase::Succeeded | Phase::Failed | Phase::Waiting
        ) && (new_revision || status.phase == Phase::Waiting)
        {
            obs.confirm_rollout = self
                .gate(c, HookType::ConfirmRollout, status.phase, &rev)
                .await;
        }
        if matches!(
            status.phase,
            Phase::Progressing | Phase::Waiting | Phase::WaitingPromotion
        ) {
            obs.rollback_requested =
                self.gate(c, HookType::Rollback, status.phase, &rev).await == Some(true);
        }
        match decide::due(c, &status, now) {
            Due::PreRollout => {
                obs.pre_rollout = Some(
                    self.checks(c, HookType::PreRollout, status.phase, &rev, now)
                        .await,
                )
            }
            Due::Analysis => {
                obs.analysis = Some(
                    self.checks(c, HookType::Rollout, status.phase, &rev, now)
                        .await,
                );
                obs.confirm_traffic_increase = self
                    .gate(c, HookType::ConfirmTrafficIncrease, status.phase, &rev)
                    .await;
                obs.confirm_promotion = self
                    .gate(c, HookType::ConfirmPromotion, status.phase, &rev)
                    .await;
            }
            Due::Nothing => {}
        }
        let mut plan = decide::decide(c, &status, &obs, now);
        plan.status.tracked_configs = self.tracked_configs(&target, &c.namespace);
        if let Some(values) = self.last_metric_values(c, &obs, now) {
            plan.status.last_metrics = values;
        }
        let mut changed_store = false;
        for action in &plan.actions {
            match action {
                Action::CreatePrimary | Action::Promote => {
                    self.write_primary(c, &target)?;
                    self.write_services(c, &target)?;
                    changed_store = true;
                }
                Action::Route {
                    primary: _,
                    canary,
                    mirror,
                    ab,
                } => self.set_route(c, *canary, *mirror, *ab),
                Action::ScaleCanaryUp => {
                    let replicas = target["spec"]["replicas"].as_u64().unwrap_or(1) as u32;
                    set_replica_override(&self.state_dir, &c.namespace, &c.target, Some(replicas))
                        .map_err(|e| e.to_string())?;
                    changed_store = true;
                }
                Action::ScaleCanaryDown => {
                    set_replica_override(&self.state_dir, &c.namespace, &c.target, Some(0))
                        .map_err(|e| e.to_string())?;
                    changed_store = true;
                }
                Action::RunHooks(kind) => {
                    for w in c.analysis.webhooks.iter().filter(|w| w.kind == *kind) {
                        let _ = self.call_hook(c, w, plan.status.phase, &rev).await;
                    }
                }
            }
        }
        if changed_store {
            self.notify();
            let _ = self.proxy.sync_services().await;
        }
        for e in &plan.events {
            match e.severity {
                Severity::Info => tracing::info!(revision = %rev, "{}", e.message),
                _ => tracing::warn!(revision = %rev, "{}", e.message),
            }
        }
        self.notify_events(c, &plan, &rev).await;
        let labels = [
            ("name", c.name.as_str()),
            ("namespace", c.namespace.as_str()),
        ];
        let reg = crate::metrics::global();
        reg.set(
            "gitcanary_canary_weight",
            "Canary traffic weight.",
            &labels,
            plan.status.canary_weight as f64,
        );
        // Flagger's encoding: 0 running, 1 successful, 2 failed.
        let code = match plan.status.phase {
            Phase::Succeeded | Phase::Initialized => 1.0,
            Phase::Failed => 2.0,
            _ => 0.0,
        };
        reg.set(
            "gitcanary_canary_status",
            "Canary status: 0 running, 1 successful, 2 failed.",
            &labels,
            code,
        );
        if plan.status.phase != status.phase {
            let outcome = match plan.status.phase {
                Phase::Succeeded if status.phase == Phase::Finalising || c.skip_analysis => Some((
                    "gitcanary_canary_successes_total",
                    "Canary analyses that ended in promotion.",
                )),
                Phase::Failed => Some((
                    "gitcanary_canary_failures_total",
                    "Canary analyses that ended in rollback.",
                )),
                _ => None,
            };
            if let Some((counter, help)) = outcome {
                reg.inc(counter, help, &labels, 1.0);
                reg.set(
                    "gitcanary_canary_duration_seconds",
                    "Duration of the last canary analysis.",
                    &labels,
                    now - status_start(&status),
                );
            }
        }
        plan.status.target = c.target.clone();
        plan.status.service = c.service.clone();
        plan.status.revert_on_deletion = c.revert_on_deletion;
        if plan.status != status {
            let path = status_path(&self.state_dir, &c.namespace, &c.name);
            crate::util::atomic::write(
                &path,
                &serde_json::to_vec_pretty(&plan.status).unwrap_or_default(),
            )
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// When the current analysis began: the last "New revision detected!" event.
fn status_start(st: &CanaryStatus) -> f64 {
    st.events
        .iter()
        .rev()
        .find(|e| e.message.starts_with("New revision detected!"))
        .map(|e| e.at)
        .unwrap_or(st.last_transition_time)
}

/// ConfigMaps and Secrets a pod spec references (env, envFrom, volumes), sorted.
pub fn config_refs(pod: &Value) -> Vec<(String, String)> {
    let mut out = std::collections::BTreeSet::new();
    for c in pod["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(pod["initContainers"].as_array().into_iter().flatten())
    {
        for f in c["envFrom"].as_array().into_iter().flatten() {
            if let Some(n) = f["configMapRef"]["name"].as_str() {
                out.insert(("ConfigMap".to_string(), n.to_string()));
            }
            if let Some(n) = f["secretRef"]["name"].as_str() {
                out.insert(("Secret".to_string(), n.to_string()));
            }
        }
        for e in c["env"].as_array().into_iter().flatten() {
            if let Some(n) = e["valueFrom"]["configMapKeyRef"]["name"].as_str() {
                out.insert(("ConfigMap".to_string(), n.to_string()));
            }
            if let Some(n) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
                out.insert(("Secret".to_string(), n.to_string()));
            }
        }
    }
    for v in pod["volumes"].as_array().into_iter().flatten() {
        if let Some(n) = v["configMap"]["name"].as_str() {
            out.insert(("ConfigMap".to_string(), n.to_string()));
        }
        if let Some(n) = v["secret"]["secretName"].as_str() {
            out.insert(("Secret".to_string(), n.to_string()));
        }
    }
    out.into_iter().collect()
}

fn rename_config_refs(pod: &mut Value) {
    let rename = |v: &mut Value| {
        if let Some(n) = v.as_str() {
            *v = format!("{n}-primary").into();
        }
    };
    for list in ["containers", "initContainers"] {
        for c in pod[list].as_array_mut().into_iter().flatten() {
            for f in c["envFrom"].as_array_mut().into_iter().flatten() {
                for r in ["configMapRef", "secretRef"] {
                    if f.get(r).is_some() {
                        rename(&mut f[r]["name"]);
                    }
                }
            }
            for e in c["env"].as_array_mut().into_iter().flatten() {
                for r in ["configMapKeyRef", "secretKeyRef"] {
                    if e["valueFrom"].get(r).is_some() {
                        rename(&mut e["valueFrom"][r]["name"]);
                    }
                }
            }
        }
    }
    for v in pod["volumes"].as_array_mut().into_iter().flatten() {
        if v.get("configMap").is_some() {
            rename(&mut v["configMap"]["name"]);
        }
        if v.get("secret").is_some() {
            rename(&mut v["secret"]["secretName"]);
        }
    }
}

/// The engine's tick period.
pub const TICK: Duration = Duration::from_millis(500);
