//! The hook executor around an apply: release records on disk
//! (`<stateDir>/helm/releases/<ns>/<release>.json`, written atomically), `pre-*` hooks
//! before the objects change (a failure applies nothing, like an invalid revision), and
//! `post-*` hooks after, once the release's Deployments are ready when the runtime is
//! running (as Helm's `--wait`, Flux's default). What to run is decided by
//! [`crate::helm::hooks::plan_hooks`]; how a hook runs and how readiness is judged is
//! the target's ([`crate::targets::HookRunner`]).

use crate::helm::hooks::{Event, HookStep, ReleaseRecord};
use crate::manifest::ObjectKey;
use crate::targets::Target;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn records_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("helm").join("releases")
}

fn record_path(state_dir: &Path, r: &ReleaseRecord) -> std::io::Result<PathBuf> {
    let file = format!("{}.json", r.name);
    // Names are validated at load time; this keeps a record inside its folder anyway.
    if ![&r.namespace, &file]
        .iter()
        .all(|p| crate::manifest::names::is_plain_file_name(p))
    {
        return Err(std::io::Error::other(format!(
            "release {}/{}: not a valid file name",
            r.namespace, r.name
        )));
    }
    Ok(records_dir(state_dir).join(&r.namespace).join(file))
}

/// The records of the last applied revision.
pub fn read_records(state_dir: &Path) -> Vec<ReleaseRecord> {
    let mut out = Vec::new();
    for ns in std::fs::read_dir(records_dir(state_dir))
        .into_iter()
        .flatten()
        .flatten()
    {
        for f in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            let p = f.path();
            if p.extension().is_some_and(|e| e == "json") {
                match std::fs::read(&p).map(|b| serde_json::from_slice::<ReleaseRecord>(&b)) {
                    Ok(Ok(r)) => out.push(r),
                    _ => {
                        tracing::warn!(file = %p.display(), "unreadable Helm release record ignored")
                    }
                }
            }
        }
    }
    out.sort_by_key(|r| r.key());
    out
}

/// Replaces the records `old` (as read before the sync) with `records`: changed ones
/// are written atomically, gone ones removed.
pub fn write_records(
    state_dir: &Path,
    old: &[ReleaseRecord],
    records: &[ReleaseRecord],
) -> std::io::Result<()> {
    for r in records {
        if old.iter().any(|o| o == r) {
            continue;
        }
        let bytes = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
        // Records hold the release's values, which may come from Secrets.
        crate::util::atomic::write_private(&record_path(state_dir, r)?, &bytes)?;
    }
    for o in old {
        if records.iter().all(|r| r.key() != o.key()) {
            if let Ok(path) = record_path(state_dir, o) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    Ok(())
}

/// Runs the hook steps of a sync on a target.
pub struct ReleaseHooks<'a> {
    /// The target the release is applied to.
    pub target: &'a dyn Target,
}

impl ReleaseHooks<'_> {
    fn run(&self, record: &ReleaseRecord, event: Event) -> Result<Vec<String>, String> {
        let timeout = Duration::from_secs(record.timeout_secs);
        run_event(self.target, record, event, timeout)
    }

    /// The `pre-*` hooks of every step, in order; the first failure stops the sync.
    pub fn before_apply(&self, steps: &[HookStep]) -> Result<(), String> {
        for step in steps {
            self.run(&step.record, step.pre)?;
        }
        Ok(())
    }

    /// After the apply: per step, wait for the release's Deployments when `wait` (not
    /// for a delete), run its `post-*` hooks, then its tests with `spec.test.enable`.
    /// A failure is logged and kept in the step's record in `records`.
    pub fn after_apply(
        &self,
        steps: &[HookStep],
        desired: &[crate::manifest::Object],
        wait: bool,
        records: &mut [ReleaseRecord],
    ) {
        for step in steps.iter().filter(|s| s.runs_after_apply()) {
            if let Err(e) = self.after_step(step, desired, wait) {
                tracing::warn!(release = %step.release, "{e}");
                if let Some(r) = records.iter_mut().find(|r| r.key() == step.release) {
                    r.last_hook_error = Some(e);
                }
            }
        }
    }

    fn after_step(
        &self,
        step: &HookStep,
        desired: &[crate::manifest::Object],
        wait: bool,
    ) -> Result<(), String> {
        if wait && step.post != Event::PostDelete {
            let timeout = Duration::from_secs(step.record.timeout_secs);
            self.target
                .hooks()
                .wait_ready(&release_deployments(step, desired), timeout)
                .map_err(|e| {
                    format!(
                        "release {}: {e}; {} hooks not run",
                        step.release,
                        step.post.name()
                    )
                })?;
        }
        self.run(&step.record, step.post)?;
        if !step.tests_after_apply() {
            return Ok(());
        }
        match self
            .run(&step.record, Event::Test)
            .and_then(|_| self.run(&step.record, Event::TestFailure))
        {
            Err(e) if step.record.test_ignore_failures => {
                tracing::warn!(release = %step.release, "{e} (ignored: spec.test.ignoreFailures)");
                Ok(())
            }
            Err(e) => Err(e),
            Ok(_) => {
                tracing::info!(release = %step.release, "Helm tests passed");
                Ok(())
            }
        }
    }
}

/// Runs the hooks of `event` for one release; `Err` carries Helm-like wording.
pub fn run_event(
    target: &dyn Target,
    record: &ReleaseRecord,
    event: Event,
    timeout: Duration,
) -> Result<Vec<String>, String> {
    let hooks = record.hooks_for(event);
    if hooks.is_empty() {
        return Ok(Vec::new());
    }
    let started = Instant::now();
    let results = target
        .hooks()
        .run_hooks(&hooks, event, &record.namespace, timeout);
    let mut done = Vec::new();
    for r in &results {
        if r.ok {
            tracing::info!(release = %record.key(), hook = %r.hook, event = event.name(), "{}", r.message);
            done.push(r.message.clone());
        } else {
            let msg = format!(
                "release {}: {} hook {} failed: {}",
                record.key(),
                event.name(),
                r.hook,
                r.message
            );
            tracing::error!(release = %record.key(), hook = %r.hook, event = event.name(), "{msg}");
            crate::metrics::global().inc(
                "gitcanary_helm_hook_failures_total",
                "Helm hooks that failed.",
                &[("event", event.name())],
                1.0,
            );
            return Err(msg);
        }
    }
    crate::metrics::global().set(
        "gitcanary_helm_hook_duration_seconds",
        "Duration of the last run of a release's hooks for an event.",
        &[("release", &record.key()), ("event", event.name())],
        started.elapsed().as_secs_f64(),
    );
    Ok(done)
}

/// The Deployments among a release's rendered objects.
fn release_deployments(step: &HookStep, desired: &[crate::manifest::Object]) -> Vec<ObjectKey> {
    desired
        .iter()
        .filter(|o| {
            o.key.kind == "Deployment"
                && step
                    .record
                    .objects
                    .contains(&format!("Deployment/{}/{}", o.key.namespace, o.key.name))
        })
        .map(|o| o.key.clone())
        .collect()
}

/// `helm test`: runs the test hooks of a release recorded by the last sync, in Helm's
/// order. The release is found by name in `namespace`, or, with none given, in
/// `fallback_ns` or else wherever it is unique. `timeout` defaults to the release's.
/// Records are read from `state_dir`; the hooks run on `target`.
pub fn helm_test(
    target: &dyn Target,
    state_dir: &Path,
    cmd: &crate::helm::hooks::TestCommand,
    fallback_ns: &str,
) -> Result<String, String> {
    let records = read_records(state_dir);
    let named: Vec<&ReleaseRecord> = records.iter().filter(|r| r.name == cmd.release).collect();
    let record = match &cmd.namespace {
        Some(ns) => named.iter().find(|r| &r.namespace == ns).copied(),
        None => named
            .iter()
            .find(|r| r.namespace == fallback_ns)
            .copied()
            .or(if named.len() == 1 {
                Some(named[0])
            } else {
                None
            }),
    };
    let Some(record) = record else {
        return Err(match (&cmd.namespace, named.len()) {
            (_, 0) | (Some(_), _) => {
                format!(
                "release {}{} not found: no HelmRelease with that release name has been applied",
                cmd.namespace.as_deref().map(|n| format!("{n}/")).unwrap_or_default(),
                cmd.release
            )
            }
            _ => format!(
                "release {} is in several namespaces; give one with -n",
                cmd.release
            ),
        });
    };
    let timeout = cmd
        .timeout
        .unwrap_or(Duration::from_secs(record.timeout_secs));
    let mut lines = Vec::new();
    for event in [Event::Test, Event::TestFailure] {
        lines.extend(run_event(target, record, event, timeout)?);
    }
    if lines.is_empty() {
        return Ok(format!("release {}: no tests", record.key()));
    }
    Ok(format!(
        "release {} revision {}: {} test(s) passed\n{}",
        record.key(),
        record.revision,
        lines.len(),
        lines.join("\n")
    ))
}

/// Flux's `spec.suspend: true` on a HelmRelease: the release stays as last applied.
/// Its newly rendered objects are replaced by the stored ones (so nothing is updated or
/// pruned) and its record by the last one; a release suspended before its first
/// install renders nothing. Returns the releases held.
pub fn hold_suspended(
    target: &dyn Target,
    desired: &mut Vec<crate::manifest::Object>,
    releases: &mut Vec<ReleaseRecord>,
    prev: &[ReleaseRecord],
) -> Result<Vec<String>, crate::targets::Error> {
    use crate::manifest::object::Origin;
    use crate::manifest::Object;
    let suspended: Vec<String> = desired
        .iter()
        .filter(|o| o.key.kind == "HelmRelease" && o.value()["spec"]["suspend"] == true)
        .map(|o| format!("{}/{}", o.key.namespace, o.key.name))
        .collect();
    if suspended.is_empty() {
        return Ok(Vec::new());
    }
    let inventory = target.inventory()?;
    let id = |o: &Object| format!("{}/{}/{}", o.key.kind, o.key.namespace, o.key.name);
    for hr in &suspended {
        let now = releases.iter().position(|r| &r.helm_release == hr);
        if let Some(i) = now {
            let rendered = releases.remove(i);
            desired.retain(|o| !rendered.objects.contains(&id(o)));
        }
        let Some(last) = prev.iter().find(|r| &r.helm_release == hr) else {
            tracing::info!(helm_release = %hr, "suspended before its first install: nothing rendered");
            continue;
        };
        for (key, entry) in &inventory.entries {
            let k = format!("{}/{}/{}", key.kind, key.namespace, key.name);
            if !last.objects.contains(&k) {
                continue;
            }
            if let Some(value) = target.get(key)? {
                desired.push(Object::from_json(
                    key.clone(),
                    entry.api_version.clone(),
                    &value,
                    Origin {
                        file: entry.file.clone(),
                        line: 0,
                    },
                ));
            }
        }
        releases.push(last.clone());
        tracing::info!(helm_release = %hr, revision = last.revision, "suspended: kept as last applied");
    }
    Ok(suspended)
}
