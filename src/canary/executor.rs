//! The canary executor: the thin edge around `decide()`. Each tick starts one task per
//! Canary whose previous step has finished, so a slow webhook holds back only its own
//! canary. A step observes the Canary (target revision, readiness, webhook gates, and,
//! when a step is due, webhooks and metrics), calls `decide()`, and applies the plan:
//! the generated primary and route objects, routes, scaling, events in the log and
//! the status. It reaches the target only through [`Workloads`], [`TrafficRouter`]
//! and [`MetricsProvider`]. Their blocking calls, file reads and fsync'd writes run on
//! the engine's own I/O thread, never on the async workers the proxy shares.

use super::decide::{self, Checks, Due, Observations};
use super::metrics::MetricsProvider;
use super::primary::deployment;
use super::router::{BoxFuture, TrafficRouter};
use super::spec::{self, CanarySpec, HookType};
use super::state::{CanaryStatus, MetricValue, Phase, Severity};
use super::workloads::{readiness, Workloads};
use crate::manifest::ObjectKey;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tracing::Instrument;

mod alerts;
mod apply;
mod builtin;
mod finalize;
mod observe;
mod outcomes;

/// Webhook URLs served inside this process (the local target's load tester), called
/// without HTTP.
pub trait InProcessWebhooks: Send + Sync {
    /// Whether this URL is served in process.
    fn serves(&self, url: &str) -> bool;
    /// Calls it with `body`: the status code and the response body.
    fn call<'a>(&'a self, url: &'a str, body: &'a [u8]) -> BoxFuture<'a, (u16, String)>;
}

/// What the engine acts on: a target's side of canary releases.
#[derive(Clone)]
pub struct Parts {
    /// The Deployments and objects.
    pub workloads: Arc<dyn Workloads>,
    /// The traffic router.
    pub router: Arc<dyn TrafficRouter>,
    /// The built-in metrics (`request-success-rate`, `request-duration`).
    pub metrics: Arc<dyn MetricsProvider>,
    /// Webhooks served in process, if any.
    pub webhooks: Option<Arc<dyn InProcessWebhooks>>,
}

/// The canary engine.
pub struct Engine {
    core: Arc<Core>,
    /// The canaries' step tasks; dropping the engine aborts them.
    tasks: Mutex<tokio::task::JoinSet<()>>,
}

/// What every canary's step task shares.
struct Core {
    state_dir: PathBuf,
    workloads: Arc<dyn Workloads>,
    router: Arc<dyn TrafficRouter>,
    metrics: Arc<dyn MetricsProvider>,
    webhooks: Option<Arc<dyn InProcessWebhooks>>,
    http: reqwest::Client,
    max_concurrent: Option<u32>,
    /// What `AlertProvider.spec.addressEnv` may name must start with this.
    alert_env_prefix: String,
    /// Canaries whose route was restored from their status since start.
    restored: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The Canaries present when no removed one was left to finalize: while they stay
    /// the same, ticks skip the check.
    settled: std::sync::Mutex<Option<Vec<ObjectKey>>>,
    /// Canaries (`name.namespace`) whose step task is running.
    busy: Mutex<HashSet<String>>,
    /// Held while writing generated objects or scaling: the local target keeps shared
    /// index files (generated objects, replicas.json) that concurrent steps would
    /// otherwise read-modify-write over each other.
    writes: Mutex<()>,
    /// Canaries holding a `maxConcurrentCanaries` slot (analysing, or starting now);
    /// `None` until the first tick has read every status.
    slots: Mutex<Option<HashSet<String>>>,
    /// The engine's file I/O thread.
    io: std::sync::mpsc::Sender<IoJob>,
    /// Where finished analyses go (the Git writer); none records nothing.
    outcomes: outcomes::Sink,
    /// What each canary's note needs beyond its status, by canary.
    tracked: Mutex<std::collections::HashMap<String, outcomes::Kept>>,
}

type IoJob = Box<dyn FnOnce() + Send>;

/// Starts the thread that runs the engine's file reads and fsync'd writes, off the
/// async workers. One thread keeps up (each step's I/O takes milliseconds) and keeps
/// memory flat: on tokio's blocking pool, a tick over 100 canaries spread the work
/// over new threads, each with its own stack and malloc arena (`bench canary-idle`
/// doubled). A panicking job fails only its own step.
fn io_thread() -> std::io::Result<std::sync::mpsc::Sender<IoJob>> {
    let (tx, rx) = std::sync::mpsc::channel::<IoJob>();
    std::thread::Builder::new()
        .name("canary-io".into())
        .spawn(move || {
            for job in rx {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
        })?;
    Ok(tx)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a tick waits for its steps before leaving slow ones to run on.
const STEP_WAIT: Duration = Duration::from_millis(250);

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

impl Engine {
    /// An engine acting on `parts`; canary statuses and commands live in `state_dir`.
    pub fn new(
        state_dir: &Path,
        parts: Parts,
        max_concurrent: Option<u32>,
    ) -> std::io::Result<Engine> {
        crate::util::tls::install_crypto_provider();
        let core = Core {
            state_dir: state_dir.to_path_buf(),
            workloads: parts.workloads,
            router: parts.router,
            metrics: parts.metrics,
            webhooks: parts.webhooks,
            http: reqwest::Client::builder()
                .build()
                .map_err(std::io::Error::other)?,
            restored: Default::default(),
            settled: Default::default(),
            max_concurrent,
            alert_env_prefix: crate::config::CanaryConfig::default()
                .alert_address_env_prefix()
                .to_string(),
            busy: Default::default(),
            writes: Default::default(),
            slots: Default::default(),
            io: io_thread()?,
            outcomes: None,
            tracked: Default::default(),
        };
        Ok(Engine {
            core: Arc::new(core),
            tasks: Default::default(),
        })
    }

    /// Sets `canary.alertAddressEnvPrefix`; before the first tick, while nothing else
    /// holds the engine's core.
    pub fn with_alert_address_env_prefix(mut self, prefix: &str) -> Engine {
        if let Some(core) = Arc::get_mut(&mut self.core) {
            core.alert_env_prefix = prefix.to_string();
        }
        self
    }

    /// Hands every finished analysis to `sink` (the Git writer); before the first
    /// tick, while nothing else holds the engine's core.
    pub fn with_outcomes(mut self, sink: Arc<dyn crate::history::OutcomeSink>) -> Engine {
        if let Some(core) = Arc::get_mut(&mut self.core) {
            core.outcomes = Some(sink);
        }
        self
    }

    /// One pass over every Canary: starts a step task for each canary whose last step
    /// has finished, then finalizes removed ones. It waits for the steps at most
    /// `STEP_WAIT`: quick steps end within the tick (so the caller's heap trim sees
    /// their garbage, as when steps ran in turn), and a slow one (a webhook) keeps
    /// running on its own while later ticks skip its canary.
    pub async fn tick(&self, now: f64) {
        let core = self.core.clone();
        let keys = match self.core.blocking(move || core.list_canaries()).await {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!("{e}");
                return;
            }
        };
        // Closes when every step task of this tick has dropped its sender.
        let (running, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
        {
            let mut tasks = lock(&self.tasks);
            while let Some(done) = tasks.try_join_next() {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::error!("a canary step panicked: {e}");
                    }
                }
            }
            for key in &keys {
                let Some(busy) = Busy::claim(&self.core, key) else {
                    continue; // its last step is still running
                };
                let (core, key, running) = (self.core.clone(), key.clone(), running.clone());
                let span = tracing::info_span!("canary", canary = %busy.0);
                tasks.spawn(
                    async move {
                        let _busy = busy;
                        let _running = running;
                        core.run(key, now).await;
                    }
                    .instrument(span),
                );
            }
        }
        drop(running);
        let _ = tokio::time::timeout(STEP_WAIT, all_done.recv()).await;
        self.core.finalize_removed(&keys).await;
    }
}

/// A canary's claim on running a step; released when its task ends, even by a panic
/// or an abort.
struct Busy(String, Arc<Core>);

impl Busy {
    fn claim(core: &Arc<Core>, key: &ObjectKey) -> Option<Busy> {
        let id = format!("{}.{}", key.name, key.namespace);
        lock(&core.busy)
            .insert(id.clone())
            .then(|| Busy(id, core.clone()))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        lock(&self.1.busy).remove(&self.0);
    }
}

impl Core {
    /// Runs file I/O on the engine's I/O thread.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.io
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| "canary engine I/O thread stopped".to_string())?;
        rx.await
            .map_err(|_| "canary engine I/O task panicked".to_string())
    }

    /// The Canaries in the store. The first call also counts the canaries already
    /// analysing (after a restart), so the slots start from what the statuses say.
    fn list_canaries(&self) -> Vec<ObjectKey> {
        let keys = self
            .workloads
            .list("flagger.app", "Canary")
            .unwrap_or_default();
        let mut slots = lock(&self.slots);
        if slots.is_none() {
            *slots = Some(
                keys.iter()
                    .filter(|k| {
                        decide::analysing(read_status(&self.state_dir, &k.namespace, &k.name).phase)
                    })
                    .map(|k| format!("{}.{}", k.name, k.namespace))
                    .collect(),
            );
        }
        keys
    }

    /// Takes a `maxConcurrentCanaries` slot for a canary about to start. The slot
    /// counts at once, so canaries starting in the same tick cannot overshoot the cap.
    fn claim_slot(&self, id: &str) -> bool {
        let mut slots = lock(&self.slots);
        let slots = slots.get_or_insert_with(HashSet::new);
        if slots.contains(id) {
            return true;
        }
        if self
            .max_concurrent
            .is_some_and(|max| slots.len() >= max as usize)
        {
            return false;
        }
        slots.insert(id.to_string());
        true
    }

    /// Keeps a canary's slot (while it analyses) or frees it.
    fn hold_slot(&self, id: &str, hold: bool) {
        let mut slots = lock(&self.slots);
        let slots = slots.get_or_insert_with(HashSet::new);
        if hold {
            slots.insert(id.to_string());
        } else {
            slots.remove(id);
        }
    }

    /// Tells the target that objects changed (the local target re-reads its store),
    /// on the I/O thread.
    async fn store_changed(&self) {
        let workloads = self.workloads.clone();
        if let Err(e) = self.blocking(move || workloads.changed()).await {
            tracing::warn!("{e}");
        }
    }

    /// Reads an object of the target on the I/O thread.
    async fn get_object(&self, key: ObjectKey) -> Result<Option<Value>, String> {
        let workloads = self.workloads.clone();
        self.blocking(move || workloads.get(&key)).await?
    }

    /// A cluster URL (`http://svc.ns/`) as this process reaches that Service.
    async fn local_url(&self, url: &str, ns: &str) -> String {
        let (workloads, u, n) = (self.workloads.clone(), url.to_string(), ns.to_string());
        self.blocking(move || workloads.resolve_url(&u, &n))
            .await
            .unwrap_or_else(|_| url.to_string())
    }

    /// Reads, parses and steps one Canary.
    async fn run(self: Arc<Self>, key: ObjectKey, now: f64) {
        let core = self.clone();
        let loaded = self
            .blocking(move || {
                let obj = core.workloads.get(&key).ok().flatten()?;
                Some(spec::parse(&obj).map(|mut c| {
                    c.suspend |= super::commands::suspended(&core.state_dir, &c.namespace, &c.name);
                    c
                }))
            })
            .await;
        match loaded {
            Ok(Some(Ok(c))) => {
                let lacking = super::router::unsupported_by(&self.router.capabilities(), &c);
                if !lacking.is_empty() {
                    let why: Vec<String> = lacking
                        .iter()
                        .map(|(field, feature)| {
                            format!("{field}: the target's router does not support {feature}")
                        })
                        .collect();
                    tracing::warn!("invalid Canary: {}", why.join("; "));
                    return;
                }
                if let Err(e) = self.step(Arc::new(c), now).await {
                    tracing::warn!("{e}");
                }
            }
            Ok(Some(Err(errs))) => tracing::warn!("invalid Canary: {}", errs.join("; ")),
            Ok(None) => {}
            Err(e) => tracing::warn!("{e}"),
        }
    }

    /// One step of a canary: observe, run the checks that are due, decide, apply.
    async fn step(self: &Arc<Self>, c: Arc<CanarySpec>, now: f64) -> Result<(), String> {
        let (core, spec) = (self.clone(), c.clone());
        let seen = self
            .blocking(move || {
                let seen = core.observe(&spec)?;
                core.track(&spec, &seen);
                Ok::<_, String>(seen)
            })
            .await??;
        self.restore_route(&c, &seen.status).await;
        let counted = builtin::Counted::new(&seen.status, &seen.target_hash);
        let (obs, measured) = self
            .gather(&c, &seen.status, seen.obs.clone(), &counted, now)
            .await;
        let mut plan = decide::decide(&c, &seen.status, &obs, now);
        self.hold_slot(&c.id(), decide::analysing(plan.status.phase));
        plan.status.tracked_configs = seen.tracked.clone();
        if obs.analysis.is_some() {
            // What the checks measured, templates included; empty when a webhook
            // failed first and no metric ran.
            plan.status.last_metrics = measured;
        }
        self.apply(&c, &plan, &seen).await?;
        self.report(&c, &plan, &seen, now).await;
        let core = self.clone();
        self.blocking(move || {
            super::samples::record(
                &core.state_dir,
                &c.namespace,
                &c.name,
                &seen.status,
                &plan.status,
                now,
            );
            let after = plan.status.clone();
            core.persist(&c, plan, &seen)?;
            core.save_tracked(&c);
            core.hand_over(&c, &seen, &after, now);
            Ok(())
        })
        .await?
    }

    /// Calls the gates and runs the checks that are due for this step; with the
    /// observations, each metric an analysis check measured.
    async fn gather(
        &self,
        c: &CanarySpec,
        status: &CanaryStatus,
        mut obs: Observations,
        counted: &builtin::Counted,
        now: f64,
    ) -> (Observations, Vec<MetricValue>) {
        let rev = obs.revision.clone();
        let phase = status.phase;
        let mut step = decide::due(c, status, now);
        if step == Due::Analysis
            && decide::first_check_may_wait(c, status, now)
            && !counted.has_traffic(&*self.metrics, c, now).await
        {
            // The load started with the analysis; its first requests are on the way.
            tracing::debug!("first check waits for traffic to the new revision");
            step = Due::Nothing;
        }
        let gates =
            decide::may_start(status, &rev, obs.manual) && decide::gates_due(c, status, now);
        if gates {
            obs.confirm_rollout = self.gate(c, HookType::ConfirmRollout, phase, &rev).await;
            obs.gates_checked = true;
        }
        let rollback = match phase {
            Phase::Waiting => gates,
            Phase::Progressing | Phase::WaitingPromotion => step != Due::Nothing,
            _ => false,
        };
        if rollback {
            obs.rollback_requested =
                self.gate(c, HookType::Rollback, phase, &rev).await == Some(true);
        }
        let mut measured = Vec::new();
        match step {
            Due::PreRollout => {
                let checks = self.checks(c, HookType::PreRollout, phase, &rev, counted, now);
                obs.pre_rollout = Some(checks.await.0)
            }
            Due::Analysis => {
                let checks = self.checks(c, HookType::Rollout, phase, &rev, counted, now);
                let (checks, values) = checks.await;
                obs.analysis = Some(checks);
                measured = values;
            }
            Due::Nothing => return (obs, measured),
        }
        match decide::step_gate(c, status) {
            Some(HookType::ConfirmTrafficIncrease) => {
                obs.confirm_traffic_increase = self
                    .gate(c, HookType::ConfirmTrafficIncrease, phase, &rev)
                    .await
            }
            Some(kind) => obs.confirm_promotion = self.gate(c, kind, phase, &rev).await,
            None => {}
        }
        (obs, measured)
    }

    async fn call_hook(
        &self,
        c: &CanarySpec,
        w: &spec::WebhookSpec,
        phase: Phase,
        checksum: &str,
    ) -> Result<(), String> {
        let result = self.call_hook_untracked(c, w, phase, checksum).await;
        self.track_webhook(c, w, checksum, &result);
        result
    }

    async fn call_hook_untracked(
        &self,
        c: &CanarySpec,
        w: &spec::WebhookSpec,
        phase: Phase,
        checksum: &str,
    ) -> Result<(), String> {
        let payload = json!({"name": c.name, "namespace": c.namespace, "phase": format!("{phase:?}"), "checksum": checksum, "metadata": w.metadata});
        let body = payload.to_string();
        let mut last = String::new();
        for _ in 0..=w.retries {
            let in_process = self.webhooks.as_ref().filter(|h| h.serves(&w.url));
            let result = if let Some(hooks) = in_process {
                // Served in process (the built-in load tester): no HTTP, no listener.
                match tokio::time::timeout(w.timeout, hooks.call(&w.url, body.as_bytes())).await {
                    Ok((code, body)) => Ok((code, body)),
                    Err(_) => Err(format!("timed out after {:?}", w.timeout)),
                }
            } else {
                let url = self.local_url(&w.url, &c.namespace).await;
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
                        // A body past the cap shows as the cap error in the failure message.
                        let limit = crate::util::http::SMALL_BODY;
                        let body = crate::util::http::read_response(r, limit, "webhook response")
                            .await
                            .map(|b| String::from_utf8_lossy(&b).into_owned())
                            .unwrap_or_else(|e| e.to_string());
                        Ok((code, body))
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
        counted: &builtin::Counted,
        now: f64,
    ) -> (Checks, Vec<MetricValue>) {
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
            return (Checks { failures }, Vec::new());
        }
        let provider = c.provider.clone().unwrap_or_else(|| "gitcanary".into());
        let mut values = Vec::with_capacity(c.analysis.metrics.len());
        for m in &c.analysis.metrics {
            let (value, failed) = match &m.template {
                Some((tname, tns)) => {
                    let (value, failure) = self.template_check(c, m, tname, tns).await;
                    (value, Vec::from_iter(failure))
                }
                None => {
                    let value = counted.value(&*self.metrics, c, m, now).await;
                    (value, super::checks::builtin(c, m, &provider, value))
                }
            };
            values.push(MetricValue {
                name: m.name.clone(),
                value,
                min: m.min,
                max: m.max,
                failed: !failed.is_empty(),
            });
            failures.extend(failed);
        }
        (Checks { failures }, values)
    }

    /// Runs one MetricTemplate check: the value the query returned, if any, and the
    /// halt message on failure.
    async fn template_check(
        &self,
        c: &CanarySpec,
        m: &spec::MetricSpec,
        tname: &str,
        tns: &str,
    ) -> (Option<f64>, Option<String>) {
        let key = ObjectKey::new("flagger.app/v1beta1", "MetricTemplate", tns, tname);
        let Ok(Some(t)) = self.get_object(key).await else {
            return (
                None,
                Some(format!("Metric template {tname}.{tns} error: not found")),
            );
        };
        let provider = t["spec"]["provider"]["type"]
            .as_str()
            .unwrap_or("prometheus");
        if provider != "prometheus" {
            return (None, Some(format!("Metric template {tname}.{tns} provider {provider} error: only prometheus is supported")));
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
                    return (
                        None,
                        Some(format!(
                            "Metric template {tname}.{tns} query render error: {e}"
                        )),
                    )
                }
            };
        let address = self
            .local_url(
                t["spec"]["provider"]["address"]
                    .as_str()
                    .unwrap_or_default(),
                &c.namespace,
            )
            .await;
        let prometheus = super::metrics::Prometheus {
            http: self.http.clone(),
            address,
        };
        let q = super::metrics::MetricQuery {
            namespace: &c.namespace,
            target: &c.target,
            metric: &m.name,
            revision: "",
            since: 0,
            interval: m.interval,
            now: 0.0,
            query: &query,
        };
        let answer = prometheus.query(&q).await;
        let value = answer.as_ref().ok().copied().flatten();
        (value, super::checks::template(c, m, answer))
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

/// The engine's tick period.
pub const TICK: Duration = Duration::from_millis(500);
