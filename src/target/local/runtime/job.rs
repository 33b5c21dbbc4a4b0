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
use crate::target::local::names;
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

/// How one hook ended.
#[derive(Clone, Debug, PartialEq)]
pub struct HookResult {
    /// `Kind/name`.
    pub hook: String,
    /// Succeeded, or was skipped (`ok` with a reason in `message`).
    pub ok: bool,
    /// What happened, with the tail of the output on failure.
    pub message: String,
}

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
    let expect_failure = event == Event::TestFailure;
    let obj_ns = h.object["metadata"]["namespace"]
        .as_str()
        .unwrap_or(ns)
        .to_string();
    let result = match h.kind.as_str() {
        "Pod" => run_pod(ctx, &h.object["spec"], &obj_ns, &h.name, timeout, kept),
        "Job" => run_job(ctx, &h.object["spec"], &obj_ns, &h.name, timeout, kept),
        "ConfigMap" | "Secret" => {
            kept.push(h.object.clone());
            return HookResult {
                hook: h.id(),
                ok: true,
                message: format!("{} kept for the hooks after it", h.id()),
            };
        }
        other => {
            return HookResult {
                hook: h.id(),
                ok: true,
                message: format!(
                    "{} skipped: a {other} hook has nothing to run on the local target",
                    h.id()
                ),
            }
        }
    };
    match (result, expect_failure) {
        (Ok(msg), false) | (Err(msg), true) => HookResult {
            hook: h.id(),
            ok: true,
            message: msg,
        },
        (Ok(msg), true) => HookResult {
            hook: h.id(),
            ok: false,
            message: format!("expected to fail, but {msg}"),
        },
        (Err(msg), false) => HookResult {
            hook: h.id(),
            ok: false,
            message: msg,
        },
    }
}

fn run_job(
    ctx: &JobContext,
    spec: &Value,
    ns: &str,
    name: &str,
    timeout: Duration,
    kept: &[Value],
) -> Result<String, String> {
    let limit = spec["backoffLimit"].as_u64().unwrap_or(6).min(20) as u32;
    let timeout = match spec["activeDeadlineSeconds"].as_u64() {
        Some(s) => timeout.min(Duration::from_secs(s)),
        None => timeout,
    };
    let deadline = Instant::now() + timeout;
    let mut attempt = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match run_pod(ctx, &spec["template"]["spec"], ns, name, left, kept) {
            Ok(msg) => return Ok(msg),
            Err(e) if attempt >= limit || Instant::now() >= deadline => {
                return Err(format!("job failed after {} attempt(s): {e}", attempt + 1))
            }
            Err(e) => {
                tracing::info!(job = %format!("{ns}/{name}"), attempt = attempt + 1, "job attempt failed, retrying: {e}");
                // Kubernetes backs off 10s, 20s, 40s…; locally 1s, 2s, 4s… up to 10s.
                std::thread::sleep(Duration::from_secs(1 << attempt.min(3)).min(left));
                attempt += 1;
            }
        }
    }
}

fn run_pod(
    ctx: &JobContext,
    spec: &Value,
    ns: &str,
    name: &str,
    timeout: Duration,
    kept: &[Value],
) -> Result<String, String> {
    let lookup = |kind: &str, o_ns: &str, o_name: &str| -> Option<Value> {
        kept.iter()
            .find(|o| {
                o["kind"] == kind
                    && o["metadata"]["name"] == o_name
                    && o["metadata"]["namespace"].as_str().unwrap_or(ns) == o_ns
            })
            .cloned()
            .or_else(|| (ctx.lookup)(kind, o_ns, o_name))
    };
    let (init, containers) = spec::plan_pod_spec(spec, ns, &lookup, ctx.images)?;
    let allocs = names::allocations(ctx.state_dir);
    let deadline = Instant::now() + timeout;
    let log = ctx
        .state_dir
        .join("logs")
        .join("hooks")
        .join(ns)
        .join(format!("{name}.log"));
    let _ = std::fs::remove_file(&log);
    for c in &init {
        run_containers(
            ctx,
            std::slice::from_ref(c),
            ns,
            name,
            &allocs,
            &log,
            deadline,
        )?;
    }
    run_containers(ctx, &containers, ns, name, &allocs, &log, deadline)?;
    Ok(format!("pod {ns}/{name} succeeded"))
}

fn exec_for(c: &ContainerPlan, ns: &str, pod: &str, allocs: &BTreeMap<String, String>) -> Exec {
    let self_exe = std::env::current_exe()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "gitcanary".into());
    let mut e = spec::materialize(c, pod, &HashMap::new(), &self_exe);
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

fn run_containers(
    ctx: &JobContext,
    containers: &[ContainerPlan],
    ns: &str,
    pod: &str,
    allocs: &BTreeMap<String, String>,
    log: &Path,
    deadline: Instant,
) -> Result<(), String> {
    let pids = PidRecords::new(ctx.state_dir);
    let mut running = Vec::new();
    let mut failure = None;
    for c in containers {
        let exec = exec_for(c, ns, pod, allocs);
        match process::spawn(&exec, log, &ctx.work_dir) {
            Ok(child) => {
                let key = format!("hook-{ns}-{pod}-{}", c.name);
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
            match running[i].2.try_wait() {
                Ok(Some(status)) => {
                    let (cname, key, _) = running.remove(i);
                    pids.remove(&key);
                    if !status.success() && failure.is_none() {
                        failure = Some(format!("container {cname:?} exited with {status}"));
                    }
                }
                Ok(None) => i += 1,
                Err(e) => {
                    let (cname, key, _) = running.remove(i);
                    pids.remove(&key);
                    failure.get_or_insert(format!("container {cname:?}: {e}"));
                }
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
