//! Run-to-completion workloads on the local target: Helm hooks and `helm test` pods. A
//! Pod runs its init containers one by one, then its containers together, as host
//! processes (the same container rules as Deployments: `command`, or the
//! `target.local.images` entry); it succeeded when every container exited 0. A Job
//! runs its pod template, retried up to `backoffLimit` (default 6) within
//! `activeDeadlineSeconds`. Service names in arguments and environment (`podinfo.test:9898`)
//! are rewritten to the Services' local listeners, and Pods get Kubernetes'
//! `<SVC>_SERVICE_HOST`/`_PORT` variables. ConfigMap and Secret hooks are kept for the
//! hooks after them in the same run; other kinds are skipped with a message.

use super::process::{self, PidRecords};
use super::spec::{self, ContainerPlan, Exec};
use crate::helm::hooks::{Event, Hook};
use crate::targets::local::names;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What hook runs need from the local target.
pub struct JobContext<'a> {
    /// The state folder (logs, Service listeners, pid records).
    pub state_dir: &'a Path,
    /// `target.local.images`.
    pub images: &'a BTreeMap<String, Vec<String>>,
    /// ConfigMaps and Secrets of the target.
    pub lookup: spec::Lookup<'a>,
    /// Working folder for containers with no `workingDir`.
    pub work_dir: PathBuf,
}

pub use crate::targets::HookResult;

/// Runs the hooks of one event in order, stopping at the first failure (as Helm does).
/// `ns` is the release namespace.
pub fn run_hooks(
    ctx: &JobContext,
    hooks: &[&Hook],
    event: Event,
    ns: &str,
    timeout: Duration,
) -> Vec<HookResult> {
    let mut kept: Vec<Value> = Vec::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    for h in hooks {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = run_one(ctx, h, event, ns, left, &mut kept);
        let failed = !r.ok;
        out.push(r);
        if failed {
            break;
        }
    }
    out
}

fn run_one(
    ctx: &JobContext,
    h: &Hook,
    event: Event,
    ns: &str,
    timeout: Duration,
    kept: &mut Vec<Value>,
) -> HookResult {
    let pod = |kept: &[Value]| PodRun {
        ctx,
        ns: h.object["metadata"]["namespace"]
            .as_str()
            .unwrap_or(ns)
            .to_string(),
        name: h.name.clone(),
        kept: kept.to_vec(),
    };
    let result = match h.kind.as_str() {
        "Pod" => pod(kept).run(&h.object["spec"], timeout),
        "Job" => pod(kept).run_job(&h.object["spec"], timeout),
        "ConfigMap" | "Secret" => {
            kept.push(h.object.clone());
            Ok(format!("{} kept for the hooks after it", h.id()))
        }
        other => Ok(format!(
            "{} skipped: a {other} hook has nothing to run on the local target",
            h.id()
        )),
    };
    let runs = crate::targets::kube::hooks::runs(&h.kind);
    let (ok, message) = crate::helm::hooks::judge(event, runs, result);
    HookResult {
        hook: h.id(),
        ok,
        message,
    }
}

/// One hook pod: where it runs, and the hook ConfigMaps and Secrets before it.
struct PodRun<'a> {
    ctx: &'a JobContext<'a>,
    ns: String,
    name: String,
    kept: Vec<Value>,
}

impl PodRun<'_> {
    /// A Job's pod template, retried up to `backoffLimit` within `activeDeadlineSeconds`.
    fn run_job(&self, spec: &Value, timeout: Duration) -> Result<String, String> {
        let limit = spec["backoffLimit"].as_u64().unwrap_or(6).min(20) as u32;
        let timeout = match spec["activeDeadlineSeconds"].as_u64() {
            Some(s) => timeout.min(Duration::from_secs(s)),
            None => timeout,
        };
        let deadline = Instant::now() + timeout;
        let mut attempt = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.run(&spec["template"]["spec"], left) {
                Ok(msg) => return Ok(msg),
                Err(e) if attempt >= limit || Instant::now() >= deadline => {
                    return Err(format!("job failed after {} attempt(s): {e}", attempt + 1))
                }
                Err(e) => {
                    tracing::info!(job = %format!("{}/{}", self.ns, self.name), attempt = attempt + 1, "job attempt failed, retrying: {e}");
                    // Kubernetes backs off 10s, 20s, 40s…; locally 1s, 2s, 4s… up to 10s.
                    std::thread::sleep(Duration::from_secs(1 << attempt.min(3)).min(left));
                    attempt += 1;
                }
            }
        }
    }

    /// A pod spec: init containers one by one, then the containers together.
    fn run(&self, spec: &Value, timeout: Duration) -> Result<String, String> {
        let (ns, name) = (self.ns.as_str(), self.name.as_str());
        let lookup = |kind: &str, o_ns: &str, o_name: &str| -> Option<Value> {
            self.kept
                .iter()
                .find(|o| {
                    o["kind"] == kind
                        && o["metadata"]["name"] == o_name
                        && o["metadata"]["namespace"].as_str().unwrap_or(ns) == o_ns
                })
                .cloned()
                .or_else(|| (self.ctx.lookup)(kind, o_ns, o_name))
        };
        let (init, containers) = spec::plan_pod_spec(spec, ns, &lookup, self.ctx.images)?;
        let deadline = Instant::now() + timeout;
        let log = self
            .ctx
            .state_dir
            .join("logs")
            .join("hooks")
            .join(ns)
            .join(format!("{name}.log"));
        let _ = std::fs::remove_file(&log);
        let allocs = names::allocations(self.ctx.state_dir);
        for c in &init {
            self.run_containers(std::slice::from_ref(c), &allocs, &log, deadline)?;
        }
        self.run_containers(&containers, &allocs, &log, deadline)?;
        Ok(format!("pod {ns}/{name} succeeded"))
    }

    /// The process of one container: Service names rewritten to local listeners, and
    /// Kubernetes' Service variables.
    fn exec_for(&self, c: &ContainerPlan, allocs: &BTreeMap<String, String>) -> Exec {
        let ns = self.ns.as_str();
        let self_exe = std::env::current_exe()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "gitcanary".into());
        let mut e = spec::materialize(c, &self.name, &HashMap::new(), &self_exe);
        for a in &mut e.argv {
            *a = names::rewrite_text(allocs, a, ns);
        }
        let mut env = names::service_env(allocs, ns);
        for (k, v) in e.env {
            env.retain(|(x, _)| x != &k);
            env.push((k, names::rewrite_text(allocs, &v, ns)));
        }
        e.env = env;
        e
    }

    /// Runs `containers` together until all exit (success when all exit 0), one fails,
    /// or `deadline` passes.
    fn run_containers(
        &self,
        containers: &[ContainerPlan],
        allocs: &BTreeMap<String, String>,
        log: &Path,
        deadline: Instant,
    ) -> Result<(), String> {
        let pids = PidRecords::new(self.ctx.state_dir);
        let mut running = Vec::new();
        let mut failure = None;
        for c in containers {
            let exec = self.exec_for(c, allocs);
            match process::spawn(&exec, log, &self.ctx.work_dir) {
                Ok(child) => {
                    let key = format!("hook-{}-{}-{}", self.ns, self.name, c.name);
                    pids.add(&key, child.id());
                    running.push((c.name.clone(), key, child));
                }
                Err(e) => {
                    failure = Some(format!(
                        "container {:?}: cannot start {:?}: {e}",
                        c.name,
                        exec.argv.first().cloned().unwrap_or_default()
                    ));
                    break;
                }
            }
        }
        // Poll fast at first (most hooks are short), then every 20 ms.
        let mut poll = Duration::from_millis(1);
        while !running.is_empty() {
            let mut i = 0;
            while i < running.len() {
                let why = match running[i].2.try_wait() {
                    Ok(None) => {
                        i += 1;
                        continue;
                    }
                    Ok(Some(status)) => {
                        (!status.success()).then(|| format!(" exited with {status}"))
                    }
                    Err(e) => Some(format!(": {e}")),
                };
                let (cname, key, _) = running.remove(i);
                pids.remove(&key);
                if let Some(why) = why {
                    failure.get_or_insert(format!("container {cname:?}{why}"));
                }
            }
            if failure.is_some() || Instant::now() >= deadline {
                let timed_out = failure.is_none();
                for (cname, key, child) in &mut running {
                    process::signal_group(child.id(), libc::SIGKILL);
                    let _ = child.wait();
                    pids.remove(key);
                    if timed_out {
                        failure.get_or_insert(format!("container {cname:?} timed out"));
                    }
                }
                running.clear();
            }
            if !running.is_empty() {
                std::thread::sleep(poll);
                poll = (poll * 2).min(Duration::from_millis(20));
            }
        }
        let secrets: Vec<&str> = containers
            .iter()
            .flat_map(|c| c.secret_values.iter().map(String::as_str))
            .collect();
        match failure {
            None => Ok(()),
            Some(f) => Err(format!("{f}{}", output_tail(log, &secrets))),
        }
    }
}

/// The last lines of a hook's output, for its failure message, with values that came
/// from Secrets redacted.
fn output_tail(log: &Path, secrets: &[&str]) -> String {
    let mut text = std::fs::read_to_string(log).unwrap_or_default();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        text = text.replace(s, "<redacted>");
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(10)..].join("\n");
    let tail = if tail.len() > 2000 {
        let cut = tail.len() - 2000;
        let cut = (cut..tail.len())
            .find(|i| tail.is_char_boundary(*i))
            .unwrap_or(0);
        &tail[cut..]
    } else {
        &tail[..]
    };
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("; output:\n{tail}")
    }
}
