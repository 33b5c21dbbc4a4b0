//! The reconcile executor: fetch, load, plan, apply, record status. A revision with any
//! manifest error applies nothing; the last good revision stays in the target, and the
//! errors go to the status and the logs. The loop retries a failing fetch with
//! exponential backoff and syncs at once on a local commit or a push webhook.

use crate::config::Config;
use crate::helm::hooks::{plan_hooks, HookStep, ReleaseRecord};
use crate::image::automation::Automation;
use crate::manifest::{self, ManifestError, Object};
use crate::metrics;
use crate::source::status::{self, revision_string, SourceStatus};
use crate::source::GitSource;
use crate::sync::health::{self, Verdict};
use crate::sync::{hooks, plan, ApplyPlan};
use crate::targets::kube::leader::{Election, Gate, Gated, Role};
use crate::targets::{self, ApplyReport, ObjectDiff, Target};
use crate::util::{duration, time::unix_now};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{error, info, info_span, warn};

/// Errors of one sync.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The source could not be fetched or read.
    #[error(transparent)]
    Source(#[from] crate::source::git::Error),
    /// The revision has manifest errors; nothing was applied.
    #[error("revision {revision} is invalid, nothing applied ({} errors):\n{}", errors.len(), errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The rejected revision.
        revision: String,
        /// Every error in it.
        errors: Vec<ManifestError>,
    },
    /// The target failed.
    #[error(transparent)]
    Target(#[from] targets::Error),
    /// The status record could not be written.
    #[error("status: {0}")]
    Status(std::io::Error),
    /// A `pre-install`, `pre-upgrade` or `pre-delete` Helm hook failed; nothing was
    /// applied.
    #[error("revision {revision}: nothing applied: {message}")]
    Hook {
        /// The revision held back.
        revision: String,
        /// Which hook failed and why.
        message: String,
    },
    /// Image automation could not start.
    #[error("{0}")]
    Automation(String),
    /// The sync panicked after loading; nothing more was applied.
    #[error("internal error: the sync panicked: {0}; please report it")]
    Panic(String),
}

/// What one successful sync did.
#[derive(Clone, Debug)]
pub struct SyncReport {
    /// Commit applied.
    pub revision: String,
    /// The plan that was applied.
    pub plan: ApplyPlan,
    /// What the target did.
    pub applied: ApplyReport,
    /// Manifest files read, and how many came from the parse cache.
    pub files: (usize, usize),
    /// Wall time.
    pub elapsed: Duration,
}

/// The result of planning without applying.
pub struct Preview {
    /// Commit planned.
    pub revision: String,
    /// What the target would change, in plan order.
    pub diffs: Vec<ObjectDiff>,
}

/// Owns the source, the target and the parse cache for one config.
pub struct Reconciler {
    cfg: Config,
    source: GitSource,
    target: Box<dyn Target>,
    cache: manifest::Cache,
    status: SourceStatus,
    automation: Option<Automation>,
    /// The single writer to the followed remote (image automation's commits, rollout
    /// notes); only a reconciler that writes has one.
    writer: Option<crate::history::Writer>,
    /// Scan registries on the next sync even if the scan cache is fresh.
    pub force_scan: bool,
    images_active: bool,
    /// Runs after an apply whose releases have `post-*` hooks, before those run: the
    /// run loop uses it to start the new workloads and Services at once.
    pub after_apply: Option<Box<dyn Fn() + Send>>,
    /// Wait for a release's Deployments to be ready before its `post-*` hooks (set when
    /// the local runtime runs in this process).
    pub wait_ready: bool,
    /// The leader lease's write permit (always open without an election).
    gate: Gate,
    /// The applied revision's health check, while it runs or as it last ended.
    health: Option<(health::Check, Verdict)>,
    /// Told of each sync's result and of image automation's pushes.
    notifier: crate::notify::Notifier,
    /// The next sync uses the last fetched head.
    skip_fetch: bool,
}

/// `status/images.json`: the last automation run.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImagesStatus {
    /// One row per automated value.
    pub rows: Vec<crate::image::automation::Row>,
    /// The last run's error, if it failed.
    pub error: Option<String>,
    /// When it ran.
    pub at: f64,
}

impl Reconciler {
    /// Opens the configured target (see [`targets::open`]); `write` is for a sync
    /// (the local target then takes its single-writer lock), not for `diff`.
    pub fn open(cfg: Config, write: bool) -> Result<Self, Error> {
        let target = targets::open(&cfg, write)?;
        Self::with_target(cfg, target, write)
    }

    /// A reconciler applying to `target`; `write` also starts image automation when
    /// the config enables it (it pushes to Git, so `diff` never runs it).
    pub fn with_target(cfg: Config, target: Box<dyn Target>, write: bool) -> Result<Self, Error> {
        let state_dir = cfg.state_dir();
        let source = GitSource::new(&cfg.source, &cfg.base_dir, &state_dir);
        let mut status = status::read(&state_dir).ok().flatten().unwrap_or_default();
        status.name = cfg.source.name.clone();
        status.url = source.display_url();
        status.branch = cfg.source.branch.clone();
        status.path = cfg.source.path.clone();
        let automation = if write && cfg.images.enabled {
            Some(Automation::new(&cfg).map_err(|e| Error::Automation(e.to_string()))?)
        } else {
            None
        };
        let writer = if write {
            let author = (cfg.git.author.name.clone(), cfg.git.author.email.clone());
            let retry = crate::history::writer::Retry {
                commit_attempts: cfg.images.push_retries.max(1),
                ..Default::default()
            };
            Some(
                crate::history::Writer::start(source.clone(), author, retry)
                    .map_err(|e| Error::Automation(e.to_string()))?,
            )
        } else {
            None
        };
        Ok(Reconciler {
            cfg,
            source,
            target,
            cache: manifest::Cache::default(),
            status,
            automation,
            writer,
            force_scan: false,
            images_active: false,
            after_apply: None,
            wait_ready: false,
            gate: Gate::open(),
            health: None,
            notifier: Default::default(),
            skip_fetch: false,
        })
    }

    /// Makes every write of this reconciler (apply, prune, hooks, image automation's
    /// push) wait for `gate`, the leader lease.
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.target = Box::new(Gated::new(self.target, gate.clone()));
        self.gate = gate;
        self
    }

    /// Reports sync results and image pushes to `notifier`.
    pub fn with_notifier(mut self, notifier: crate::notify::Notifier) -> Self {
        self.notifier = notifier;
        self
    }

    /// Records that this replica is a standby (`message` says who leads) in the status
    /// `get sources` reads.
    pub fn record_standby(&mut self, message: String) -> Result<(), Error> {
        if self.status.message == message {
            return Ok(());
        }
        self.status.message = message;
        self.save_status()
    }

    /// The verdict of the applied revision's health check, if one runs (Kubernetes).
    pub fn health(&self) -> Option<&Verdict> {
        self.health.as_ref().map(|(_, v)| v)
    }

    /// Reads the watched objects of the applied revision again and records the health
    /// verdict in the status (`Ready` only once every workload is healthy). A check that
    /// already ended is not repeated until the next sync.
    pub fn check_health(&mut self, now: f64) -> Result<Option<&Verdict>, Error> {
        let Some((check, verdict)) = &self.health else {
            return Ok(None);
        };
        if !matches!(verdict, Verdict::Waiting(_)) {
            return Ok(self.health());
        }
        // Each live object is reduced to its status as soon as it is read: a revision
        // may watch thousands of workloads, and their full JSON (managedFields and
        // all) held at once was most of the process's peak memory.
        // The target reads them in as few requests as it can (a LIST per kind and
        // namespace on Kubernetes).
        let statuses: Vec<Option<crate::targets::kube::health::Status>> = self
            .target
            .health_of(check.objects())
            .into_iter()
            .zip(check.objects())
            .map(|(r, k)| match r {
                Ok(status) => status,
                Err(e) => {
                    warn!(object = %k, "health check: {e}");
                    None
                }
            })
            .collect();
        let verdict = check.judge(&statuses, now);
        let applied = format!("Applied revision: {}", check.revision);
        match &verdict {
            Verdict::Healthy => {
                self.status.ready = true;
                self.status.message = applied;
            }
            Verdict::Waiting(m) => {
                self.status.ready = false;
                self.status.message = m.clone();
            }
            Verdict::Failed(m) => {
                error!(revision = %check.revision, "{m}");
                self.status.ready = false;
                self.status.message = m.clone();
                self.status.last_error = Some(m.clone());
                self.status.last_error_at = Some(now);
            }
        }
        if let Some(h) = &mut self.health {
            h.1 = verdict;
        }
        self.save_status()?;
        Ok(self.health())
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The target.
    pub fn target(&self) -> &dyn Target {
        self.target.as_ref()
    }

    /// The source.
    pub fn source(&self) -> &GitSource {
        &self.source
    }

    /// The Git writer, for the parts of the daemon that write to the followed remote
    /// (the canary engine's rollout notes); `None` unless opened to write.
    pub fn writer(&self) -> Option<&crate::history::Writer> {
        self.writer.as_ref()
    }

    /// Whether image automation found values to follow in the last sync.
    pub fn images_active(&self) -> bool {
        self.images_active
    }

    /// The status as last recorded.
    pub fn status(&self) -> &SourceStatus {
        &self.status
    }

    fn state_dir(&self) -> PathBuf {
        self.cfg.state_dir()
    }

    fn save_status(&self) -> Result<(), Error> {
        status::write(&self.state_dir(), &self.status).map_err(Error::Status)
    }

    #[allow(clippy::type_complexity)]
    /// Loads a revision; HelmReleases render as the releases in `prev` last did. A
    /// panic while loading or rendering (a bug that some input reaches) rejects the
    /// revision like any invalid one, naming the file being handled.
    fn load(
        &mut self,
        commit: &str,
        prev: &[ReleaseRecord],
    ) -> Result<(Vec<Object>, (usize, usize), Vec<ReleaseRecord>), Error> {
        crate::util::panic::catch(|| self.load_unguarded(commit, prev)).unwrap_or_else(|caught| {
            // The parse cache may be half-updated.
            self.cache = manifest::Cache::default();
            let file = caught.file.unwrap_or_else(|| self.cfg.source.path.clone());
            error!(file = %file, "panic while loading revision {commit}: {}", caught.message);
            Err(Error::Invalid {
                revision: revision_string(&self.cfg.source.branch, commit),
                errors: vec![ManifestError {
                    file,
                    pos: None,
                    field: None,
                    message: format!(
                        "internal error while loading (gitcanary panicked: {}); please report it",
                        caught.message
                    ),
                }],
            })
        })
    }

    #[allow(clippy::type_complexity)]
    fn load_unguarded(
        &mut self,
        commit: &str,
        prev: &[ReleaseRecord],
    ) -> Result<(Vec<Object>, (usize, usize), Vec<ReleaseRecord>), Error> {
        let snap = self.source.snapshot(commit)?;
        let mut loaded = manifest::load(&snap, &self.cfg.source.path, Some(&mut self.cache));
        let mut releases = Vec::new();
        if loaded.errors.is_empty() {
            let state_dir = self.state_dir();
            let source_cfg = self.cfg.source.clone();
            let base_dir = self.cfg.base_dir.clone();
            let fetch = move |src: &crate::helm::release::ChartSource| {
                crate::helm::remote::fetch(src, &source_cfg, &base_dir, &state_dir)
            };
            let x = crate::helm::release::expand_into_with(
                &snap,
                &mut loaded,
                &self.cfg.source.url,
                Some(&fetch),
                prev,
            );
            for (release, why) in x.skipped {
                tracing::warn!(release = %release, "not rendered: {why}; the HelmRelease object is stored as is");
            }
            releases = x.releases;
        }
        if !loaded.errors.is_empty() {
            return Err(Error::Invalid {
                revision: revision_string(&self.cfg.source.branch, commit),
                errors: loaded.errors,
            });
        }
        Ok((loaded.objects, (loaded.files, loaded.cache_hits), releases))
    }

    /// Fetches and plans without applying (for `gitcanary diff`).
    pub fn preview(&mut self) -> Result<Preview, Error> {
        let fetched = self.source.fetch()?;
        let prev = hooks::read_records(&self.state_dir());
        let (mut desired, _, mut releases) = self.load(&fetched.commit, &prev)?;
        hooks::hold_suspended(self.target.as_ref(), &mut desired, &mut releases, &prev)?;
        let diffs = self.target.diff(&desired, &self.target.inventory()?)?;
        Ok(Preview {
            revision: fetched.commit,
            diffs,
        })
    }

    /// One full sync: fetch, load, plan, apply. Blocking; records status either way.
    pub fn sync_once(&mut self) -> Result<SyncReport, Error> {
        self.sync(true)
    }

    /// A sync; without `fetch`, of the last fetched revision (as `flux reconcile
    /// kustomization` without `--with-source`), fetching only if none was yet.
    pub fn sync(&mut self, fetch: bool) -> Result<SyncReport, Error> {
        self.skip_fetch = !fetch;
        let started = Instant::now();
        let now = unix_now();
        self.status.last_attempt_at = Some(now);
        // A panic past loading (in planning or applying) fails this sync, not the process.
        let result = crate::util::panic::catch(|| self.sync_inner(started))
            .unwrap_or_else(|caught| Err(Error::Panic(caught.message)));
        self.status.last_sync_duration = Some(started.elapsed().as_secs_f64());
        let src = self.cfg.source.name.clone();
        match &result {
            Ok(r) => {
                self.status.failures = 0;
                self.status.ready = true;
                self.status.last_error = None;
                self.status.message = format!(
                    "Applied revision: {}",
                    revision_string(&self.cfg.source.branch, &r.revision)
                );
                metrics::global().inc(
                    "gitcanary_sync_total",
                    "Syncs by result.",
                    &[("source", &src), ("result", "success")],
                    1.0,
                );
                metrics::global().set(
                    "gitcanary_sync_duration_seconds",
                    "Duration of the last sync.",
                    &[("source", &src)],
                    r.elapsed.as_secs_f64(),
                );
                metrics::global().set(
                    "gitcanary_sync_last_success_timestamp_seconds",
                    "When the last sync succeeded.",
                    &[("source", &src)],
                    now,
                );
                metrics::global().inc(
                    "gitcanary_sync_object_writes_total",
                    "Object writes and deletions in the target.",
                    &[("source", &src)],
                    r.applied.writes as f64,
                );
                metrics::global().set(
                    "gitcanary_sync_objects",
                    "Objects managed from the source.",
                    &[("source", &src)],
                    self.status.objects as f64,
                );
            }
            Err(e) => {
                self.status.failures += 1;
                self.status.ready = false;
                self.status.last_error = Some(e.to_string());
                self.status.last_error_at = Some(now);
                self.status.message = e.to_string().lines().next().unwrap_or_default().to_string();
                metrics::global().inc(
                    "gitcanary_sync_total",
                    "Syncs by result.",
                    &[("source", &src), ("result", "failure")],
                    1.0,
                );
            }
        }
        metrics::global().set(
            "gitcanary_source_ready",
            "1 when the last sync succeeded.",
            &[("source", &src)],
            if result.is_ok() { 1.0 } else { 0.0 },
        );
        self.notifier.event(match &result {
            Ok(_) => crate::notify::Event::SyncSucceeded {
                revision: self.status.applied_revision.clone().unwrap_or_default(),
            },
            Err(e) => crate::notify::Event::SyncFailed {
                revision: self.status.fetched_revision.clone(),
                error: e.to_string(),
            },
        });
        self.save_status()?;
        if result.is_ok() {
            self.check_health(now)?;
        }
        result
    }

    fn sync_inner(&mut self, started: Instant) -> Result<SyncReport, Error> {
        let cached = std::mem::take(&mut self.skip_fetch)
            .then(|| self.source.cached_head())
            .flatten();
        let fetched = match cached {
            Some(commit) => crate::source::git::Fetched {
                commit,
                summary: String::new(),
            },
            None => {
                let fetched = self.source.fetch()?;
                self.status.fetched_revision =
                    Some(revision_string(&self.cfg.source.branch, &fetched.commit));
                self.status.fetched_at = Some(unix_now());
                fetched
            }
        };
        let state_dir = self.state_dir();
        let prev = hooks::read_records(&state_dir);
        // Automation edits Git, so it runs before (and without) rendering: a chart
        // source that is down fails the sync below, not the tag update. Only the
        // leader pushes or applies.
        self.gate.check().map_err(targets::Error::from)?;
        let mut head = fetched.commit;
        if let Some(pushed) = self.automate(&head) {
            // Apply what automation just pushed, without waiting for the next poll.
            head = pushed;
        }
        let (mut desired, files, mut releases) = self.load(&head, &prev)?;
        hooks::hold_suspended(self.target.as_ref(), &mut desired, &mut releases, &prev)?;
        let (steps, mut records) = plan_hooks(&prev, &releases);
        let runner = hooks::ReleaseHooks {
            target: self.target.as_ref(),
        };
        runner.before_apply(&steps).map_err(|e| Error::Hook {
            revision: revision_string(&self.cfg.source.branch, &head),
            message: e,
        })?;
        let inventory = self.target.inventory()?;
        let plan = plan(&desired, &inventory);
        let applied = self.target.apply(&plan, &desired, &inventory, &head)?;
        drop(inventory);
        if steps.iter().any(HookStep::runs_after_apply) {
            if let Some(after) = &self.after_apply {
                after();
            }
        }
        runner.after_apply(&steps, &desired, self.wait_ready, &mut records);
        hooks::write_records(&state_dir, &prev, &records).map_err(Error::Status)?;
        let revision = revision_string(&self.cfg.source.branch, &head);
        self.start_health_check(&revision, &desired);
        self.status.applied_revision = Some(revision);
        self.status.applied_at = Some(unix_now());
        self.status.objects = desired.len();
        Ok(SyncReport {
            revision: head,
            plan,
            applied,
            files,
            elapsed: started.elapsed(),
        })
    }

    /// Starts the health check of `revision` on the Kubernetes target. One still
    /// waiting for the same revision keeps its start, so resyncs do not extend its
    /// timeout; a new revision replaces it (Flux's `CancelHealthCheckOnNewRevision`).
    fn start_health_check(&mut self, revision: &str, desired: &[Object]) {
        if self.cfg.target.kubernetes.is_none() {
            return;
        }
        if let Some((check, Verdict::Waiting(_))) = &self.health {
            if check.revision == revision {
                return;
            }
            info!(revision = %check.revision, "health check canceled: new revision {revision}");
        }
        let timeout = self.cfg.source.timeout.unwrap_or(self.cfg.source.interval);
        let check = health::Check::new(
            revision.to_string(),
            desired,
            unix_now(),
            timeout.as_secs_f64(),
        );
        self.health = Some((check, Verdict::Waiting(String::new())));
    }

    /// Runs image automation on a revision; returns a pushed commit to apply. A
    /// failure is recorded and logged but never blocks the sync of the fetched head.
    fn automate(&mut self, head: &str) -> Option<String> {
        let auto = self.automation.as_mut()?;
        let writer = self.writer.as_ref()?;
        let force = std::mem::take(&mut self.force_scan);
        let mut status = ImagesStatus {
            at: unix_now(),
            ..Default::default()
        };
        // Automation loads the revision too: a panic there counts as an unloadable
        // revision, and the sync's own load reports it, naming the file.
        let (source, cache) = (&self.source, &mut self.cache);
        let run = crate::util::panic::catch(|| auto.run(source, writer, head, Some(cache), force))
            .unwrap_or_else(|caught| {
                self.cache = manifest::Cache::default();
                warn!("image automation panicked: {}", caught.message);
                Err(crate::image::automation::Error::Unloadable)
            });
        let pushed = match run {
            Ok(outcome) => {
                if let Some((p, message)) = outcome.pushed {
                    self.notifier.event(crate::notify::Event::ImageUpdated {
                        commit: p.commit,
                        branch: p.branch,
                        changes: message
                            .lines()
                            .map(|l| l.trim().trim_start_matches("- "))
                            .filter(|l| !l.is_empty())
                            .map(str::to_string)
                            .collect(),
                    });
                }
                self.images_active = !outcome.rows.is_empty();
                status.rows = outcome.rows;
                outcome.commit
            }
            Err(crate::image::automation::Error::Unloadable) => {
                // The sync reports the errors; automation waits for a loadable revision.
                self.force_scan = force;
                return None;
            }
            Err(e) => {
                error!("{e}");
                status.error = Some(e.to_string());
                None
            }
        };
        let path = self.state_dir().join("status").join("images.json");
        if let Err(e) = crate::util::atomic::write(
            &path,
            &serde_json::to_vec_pretty(&status).unwrap_or_default(),
        ) {
            warn!("cannot write {}: {e}", path.display());
        }
        pushed
    }
}

/// Reads `status/images.json`.
pub fn read_images_status(state_dir: &std::path::Path) -> Option<ImagesStatus> {
    let bytes = std::fs::read(state_dir.join("status").join("images.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The delay before retry `failures` (1-based): 1s, 2s, 4s … capped at the interval.
pub fn backoff(failures: u32, interval: Duration) -> Duration {
    let exp = Duration::from_secs(1u64 << failures.saturating_sub(1).min(16));
    exp.min(interval).max(Duration::from_secs(1))
}

/// Logs a sync result the way Flux words it.
pub fn log_result(result: &Result<SyncReport, Error>, next: Duration) {
    match result {
        Ok(r) => {
            // Each change at info, up to a point: a 10,000-object first sync should not
            // bury the summary. The rest are at debug.
            const SHOWN: usize = 20;
            let changed = r
                .plan
                .actions
                .iter()
                .filter(|a| a.op != crate::sync::Op::Unchanged);
            for (i, a) in changed.enumerate() {
                if i < SHOWN {
                    info!(object = %a.key, action = %a.op, reason = %a.reason, "{} {}", a.key, a.op);
                } else {
                    tracing::debug!(object = %a.key, action = %a.op, reason = %a.reason, "{} {}", a.key, a.op);
                }
            }
            let more = r.applied.created + r.applied.updated + r.applied.pruned;
            if more > SHOWN {
                info!(
                    "... and {} more changes (--log-level debug lists them)",
                    more - SHOWN
                );
            }
            info!(
                revision = %r.revision,
                created = r.applied.created,
                updated = r.applied.updated,
                pruned = r.applied.pruned,
                unchanged = r.applied.unchanged,
                "Reconciliation finished in {}, next run in {}",
                duration::format(r.elapsed),
                duration::format(next)
            );
        }
        Err(Error::Invalid { revision, errors }) => {
            for e in errors {
                error!(revision = %revision, file = %e.file, "{e}");
            }
            error!(revision = %revision, errors = errors.len(), "revision is invalid; nothing applied, the last good revision stays");
        }
        Err(e) => warn!("sync failed: {e}; retrying in {}", duration::format(next)),
    }
}

/// What a target runs inside this process beside the sync loop: the local target's
/// pods, service proxy and canary engine. A target with its own controllers
/// (Kubernetes) runs nothing here.
pub trait InProcess: Send {
    /// What the sync thread calls (blocking) once objects changed: it starts new
    /// workloads and Services at once, before `post-*` hooks wait for them.
    fn on_change(&self) -> std::sync::Arc<dyn Fn() + Send + Sync>;
    /// Stops everything; blocking (stopping pods waits for their grace periods).
    fn shutdown(self: Box<Self>);
}

/// Coalesces a burst of triggers into one sync (a push moves a ref through a lock
/// file, and the watch reports each write): waits until none came for `QUIET`, at most
/// `BURST`. Returns how many there were, with the one that woke the loop. A fixed pause
/// (it was 100 ms) delayed every webhook by that much.
async fn coalesce(rx: &mut mpsc::UnboundedReceiver<()>) -> u64 {
    const QUIET: Duration = Duration::from_millis(10);
    const BURST: Duration = Duration::from_millis(100);
    let end = tokio::time::Instant::now() + BURST;
    let mut n = 1;
    loop {
        let until = end.min(tokio::time::Instant::now() + QUIET);
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(())) => n += 1,
            _ => return n,
        }
    }
}

/// How often a running health check reads the revision's workloads again.
const HEALTH_POLL: Duration = Duration::from_secs(1);

/// Runs `f` on `rec` on a blocking thread (targets and Git block), handing `rec` back.
async fn blocking<T: Send + 'static>(
    mut rec: Reconciler,
    f: impl FnOnce(&mut Reconciler) -> T + Send + 'static,
) -> (Reconciler, T) {
    let span = info_span!("reconcile", source = %rec.config().source.name);
    tokio::task::spawn_blocking(move || {
        let _g = span.enter();
        let r = f(&mut rec);
        (rec, r)
    })
    .await
    .expect("sync task panicked")
}

/// Tells `/readyz` how the applied revision's health check stands.
fn publish_health(rec: &Reconciler, readiness: &crate::server::Readiness) {
    let why = match rec.health() {
        None | Some(Verdict::Healthy) => None,
        Some(Verdict::Waiting(m) | Verdict::Failed(m)) => Some(format!(
            "revision {}: {m}",
            rec.status().applied_revision.as_deref().unwrap_or("-")
        )),
    };
    readiness.set_unhealthy(why);
}

/// Resolves when the role published by the election changes (never without one).
async fn role_changed(roles: &mut Option<tokio::sync::watch::Receiver<Role>>) {
    if let Some(rx) = roles {
        if rx.changed().await.is_ok() {
            return;
        }
    }
    std::future::pending().await
}

/// Reconciles with `rec` until `shutdown` resolves. `control` wakes the loop for an
/// immediate sync (its trigger feeds `trigger_rx`), suspends it, and is told how each
/// sync ended; `in_process` is what the target runs beside the loop, told of each change.
/// With an `election`, only the holder of the leader lease syncs; a standby records
/// that it is one and waits, ready, for the lease.
pub async fn run(
    mut rec: Reconciler,
    in_process: Option<Box<dyn InProcess>>,
    election: Option<Election>,
    control: std::sync::Arc<crate::sync::control::Control>,
    mut trigger_rx: mpsc::UnboundedReceiver<()>,
    readiness: std::sync::Arc<crate::server::Readiness>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let interval = rec.config().source.interval;
    if rec.status().applied_revision.is_some() {
        // The target holds the last-known-good revision; the runtime starts from it.
        readiness.set_applied();
    }
    let _watch = rec.source().local_watch_path().and_then(|p| {
        match crate::source::watch::watch(&p, control.trigger()) {
            Ok(w) => {
                info!(path = %p.display(), "watching local repository for commits");
                Some(w)
            }
            Err(e) => {
                warn!(
                    "cannot watch {}: {e}; falling back to the interval",
                    p.display()
                );
                None
            }
        }
    });
    let on_change = in_process.as_ref().map(|p| p.on_change());
    if let Some(changed) = &on_change {
        let changed = changed.clone();
        rec.wait_ready = true;
        rec.after_apply = Some(Box::new(move || changed()));
    }
    let gate = election.as_ref().map(|e| e.gate.clone());
    if let Some(g) = &gate {
        rec = rec.with_gate(g.clone());
    }
    let mut roles = gate.as_ref().and_then(Gate::subscribe);
    // Triggers that woke the coming sync (0: the interval did).
    let mut triggers = 0u64;
    tokio::pin!(shutdown);
    'sync: loop {
        if let Some(g) = gate.as_ref().filter(|g| g.check().is_err()) {
            // A standby is ready (to take over) and writes nothing but its status.
            readiness.set_standby(true);
            let message = g
                .role()
                .standby_message(g.namespace().unwrap_or_default())
                .unwrap_or_default();
            let (back, r) = blocking(rec, move |rec| rec.record_standby(message)).await;
            rec = back;
            if let Err(e) = r {
                warn!("{e}");
            }
            tokio::select! {
                _ = role_changed(&mut roles) => continue,
                _ = &mut shutdown => break,
            }
        }
        readiness.set_standby(false);
        if control.is_suspended() {
            info!("source suspended: no fetch, apply or image automation until `gitcanary resume source`");
            while control.is_suspended() {
                tokio::select! {
                    _ = control.suspension_changed() => {}
                    // Pushes while suspended are picked up by the sync on resume.
                    Some(()) = trigger_rx.recv() => while trigger_rx.try_recv().is_ok() {},
                    _ = &mut shutdown => break 'sync,
                }
            }
            info!("source resumed");
            triggers = 0;
        }
        let (seq, fetch) = control.begin(std::mem::take(&mut triggers));
        let (back, result) = blocking(rec, move |rec| rec.sync(fetch)).await;
        rec = back;
        control.finish(
            seq,
            rec.status().fetched_revision.clone(),
            match &result {
                Ok(r) => Ok(revision_string(&rec.config().source.branch, &r.revision)),
                Err(e) => Err(e.to_string()),
            },
        );
        let images_interval = rec.config().images.interval;
        let next = match &result {
            Err(Error::Source(_)) => backoff(rec.status().failures, interval),
            _ if rec.images_active() => interval.min(images_interval),
            _ => interval,
        };
        {
            let _g = info_span!("reconcile", source = %rec.config().source.name).entered();
            log_result(&result, next);
        }
        if result.is_ok() {
            readiness.set_applied();
        }
        publish_health(&rec, &readiness);
        if let (Ok(r), Some(changed)) = (&result, &on_change) {
            if r.plan.has_changes() {
                let changed = changed.clone();
                let _ = tokio::task::spawn_blocking(move || changed()).await;
            }
        }
        let wake = tokio::time::Instant::now() + next;
        loop {
            let health_waiting = matches!(rec.health(), Some(Verdict::Waiting(_)));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => break,
                Some(()) = trigger_rx.recv() => {
                    triggers = coalesce(&mut trigger_rx).await;
                    break;
                }
                _ = control.suspension_changed() => break,
                _ = tokio::time::sleep(HEALTH_POLL), if health_waiting => {
                    let (back, r) = blocking(rec, |rec| rec.check_health(unix_now()).map(drop)).await;
                    rec = back;
                    if let Err(e) = r {
                        warn!("{e}");
                    }
                    publish_health(&rec, &readiness);
                }
                _ = role_changed(&mut roles) => {
                    if gate.as_ref().is_some_and(|g| g.check().is_err()) {
                        break;
                    }
                }
                _ = &mut shutdown => break 'sync,
            }
        }
    }
    info!("shutting down");
    if let Some(e) = election {
        // Released before anything else stops, so a standby takes over at once.
        e.stop().await;
    }
    // The reconciler owns image automation's own runtime, which may only be dropped
    // outside async context; stopping pods waits for their grace periods.
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(p) = in_process {
            p.shutdown();
        }
        drop(rec)
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &std::path::Path, args: &[&str]) {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn commit(work: &std::path::Path, files: &[(&str, &str)]) {
        for (p, text) in files {
            std::fs::create_dir_all(work.join(p).parent().unwrap()).unwrap();
            std::fs::write(work.join(p), text).unwrap();
        }
        git(work, &["add", "-A"]);
        git(work, &["commit", "-qm", "change"]);
        git(work, &["push", "-q", "origin", "HEAD:main"]);
    }

    fn configmap(name: &str) -> String {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\ndata:\n  k: v\n")
    }

    /// A bare repo with `apps/good.yaml` committed through a work tree, and a config
    /// syncing it with state in `dir/state`. Returns the work tree and the config.
    fn repo_with_config(dir: &std::path::Path) -> (std::path::PathBuf, Config) {
        let (bare, work) = (dir.join("remote.git"), dir.join("work"));
        git(
            dir,
            &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
        );
        git(dir, &["init", "-q", "-b", "main", work.to_str().unwrap()]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        commit(&work, &[("apps/good.yaml", &configmap("good"))]);
        let cfg_path = dir.join("gitcanary.yaml");
        std::fs::write(
            &cfg_path,
            format!(
                "source:\n  url: {}\ntarget:\n  local:\n    stateDir: ./state\n",
                bare.display()
            ),
        )
        .unwrap();
        (work, Config::load(&cfg_path).unwrap())
    }

    #[test]
    fn a_panic_while_loading_is_a_revision_error_and_the_last_good_state_stays() {
        let dir = tempfile::tempdir().unwrap();
        let (work, cfg) = repo_with_config(dir.path());
        let mut rec = Reconciler::open(cfg, true).unwrap();
        let good = rec.sync_once().unwrap().revision;

        crate::util::panic::inject::panic_on("apps/zz-panics.yaml");
        commit(
            &work,
            &[
                ("apps/zz-panics.yaml", &configmap("bad")),
                ("apps/other.yaml", &configmap("other")),
            ],
        );
        let result = rec.sync_once();
        let Err(Error::Invalid { errors, .. }) = result else {
            panic!("the panicking revision must be rejected: {result:?}");
        };
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].file, "apps/zz-panics.yaml");
        assert!(
            errors[0]
                .message
                .contains("injected panic for apps/zz-panics.yaml"),
            "{}",
            errors[0].message
        );
        // Nothing of the bad revision was applied; the good one stays.
        let names: Vec<String> = rec
            .target
            .inventory()
            .unwrap()
            .entries
            .keys()
            .map(|k| k.name.clone())
            .collect();
        assert_eq!(names, vec!["good".to_string()]);
        assert!(rec
            .status()
            .applied_revision
            .as_deref()
            .unwrap()
            .ends_with(&good));
        assert!(!rec.status().ready);

        // The reconciler is still usable: a fixed revision applies.
        git(&work, &["rm", "-q", "apps/zz-panics.yaml"]);
        commit(&work, &[]);
        rec.sync_once().unwrap();
        assert_eq!(rec.target.inventory().unwrap().entries.len(), 2);
    }

    /// A target kept in memory: what a non-local target sees of a sync.
    #[derive(Clone, Default)]
    struct MemoryTarget(std::sync::Arc<std::sync::Mutex<MemoryState>>);

    #[derive(Default)]
    struct MemoryState {
        objects: std::collections::BTreeMap<crate::manifest::ObjectKey, serde_json::Value>,
        inventory: crate::sync::Inventory,
        revisions: Vec<String>,
    }

    impl Target for MemoryTarget {
        fn inventory(&self) -> targets::Result<crate::sync::Inventory> {
            Ok(self.0.lock().unwrap().inventory.clone())
        }

        fn apply(
            &self,
            plan: &ApplyPlan,
            desired: &[Object],
            _: &crate::sync::Inventory,
            revision: &str,
        ) -> targets::Result<ApplyReport> {
            let mut st = self.0.lock().unwrap();
            let mut report = ApplyReport::default();
            st.inventory = Default::default();
            for a in &plan.actions {
                match (a.op, a.desired) {
                    (crate::sync::Op::Prune, _) => {
                        st.objects.remove(&a.key);
                        report.pruned += 1;
                    }
                    (_, Some(i)) => {
                        let o = &desired[i];
                        st.objects.insert(a.key.clone(), o.value());
                        let entry = crate::sync::inventory::Entry {
                            api_version: o.api_version.clone(),
                            hash: o.hash.clone(),
                            revision: revision.to_string(),
                            file: o.origin.file.clone(),
                            prune: o.prune,
                            live: true,
                        };
                        st.inventory.entries.insert(a.key.clone(), entry);
                        report.created += 1;
                    }
                    _ => {}
                }
            }
            st.revisions.push(revision.to_string());
            Ok(report)
        }

        fn get(
            &self,
            key: &crate::manifest::ObjectKey,
        ) -> targets::Result<Option<serde_json::Value>> {
            Ok(self.0.lock().unwrap().objects.get(key).cloned())
        }

        fn diff(
            &self,
            _: &[Object],
            _: &crate::sync::Inventory,
        ) -> targets::Result<Vec<ObjectDiff>> {
            Ok(Vec::new())
        }

        fn hooks(&self) -> &dyn targets::HookRunner {
            self
        }
    }

    impl targets::HookRunner for MemoryTarget {
        fn run_hooks(
            &self,
            _: &[&crate::helm::hooks::Hook],
            _: crate::helm::hooks::Event,
            _: &str,
            _: Duration,
        ) -> Vec<targets::HookResult> {
            Vec::new()
        }

        fn wait_ready(&self, _: &[crate::manifest::ObjectKey], _: Duration) -> targets::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_reconciler_applies_and_prunes_through_any_target_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let (work, cfg) = repo_with_config(dir.path());
        let state_dir = cfg.state_dir();
        let memory = MemoryTarget::default();
        let mut rec = Reconciler::with_target(cfg, Box::new(memory.clone()), true).unwrap();
        let first = rec.sync_once().unwrap().revision;
        git(&work, &["rm", "-q", "apps/good.yaml"]);
        commit(&work, &[("apps/other.yaml", &configmap("other"))]);
        let second = rec.sync_once().unwrap();
        assert_eq!(second.applied.pruned, 1);

        assert_eq!(rec.target().inventory().unwrap().entries.len(), 1);
        let st = memory.0.lock().unwrap();
        let names: Vec<&str> = st.objects.keys().map(|k| k.name.as_str()).collect();
        assert_eq!(names, vec!["other"]);
        assert_eq!(st.revisions, vec![first, second.revision]);
        // The local store was never opened: no object files, no writer lock.
        assert!(!state_dir.join("objects").exists());
        assert!(!state_dir.join("lock").exists());
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_triggers_is_one_sync_and_a_lone_trigger_waits_little() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let start = tokio::time::Instant::now();
        assert_eq!(coalesce(&mut rx).await, 1);
        assert_eq!(start.elapsed(), Duration::from_millis(10));
        let burst = tokio::spawn(async move {
            for _ in 0..4 {
                tx.send(()).unwrap();
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            tx
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        rx.recv().await.unwrap();
        assert_eq!(coalesce(&mut rx).await, 4);
        let tx = burst.await.unwrap();
        // A steady stream is cut at the burst limit.
        let start = tokio::time::Instant::now();
        let stream = tokio::spawn(async move {
            loop {
                if tx.send(()).is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        coalesce(&mut rx).await;
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        drop(rx);
        stream.abort();
    }

    #[test]
    fn backoff_doubles_up_to_interval() {
        let i = Duration::from_secs(60);
        let got: Vec<u64> = (1..=8).map(|n| backoff(n, i).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(3, Duration::from_secs(2)), Duration::from_secs(2));
    }
}
