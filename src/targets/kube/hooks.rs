//! Helm hooks in the cluster, as Helm runs them: each hook object of an event is created
//! in weight order (Jobs and Pods run as themselves, on the cluster's nodes), a Job is
//! waited for until `Complete` or `Failed` and a Pod until `Succeeded` or `Failed`, within
//! the release's timeout, and `helm.sh/hook-delete-policy` decides when the object is
//! deleted. Which hooks run when is decided in `helm::hooks`; how a created hook stands
//! is decided here by [`progress`] from the object's JSON; the executor only talks to
//! the API server.

use crate::helm::hooks::{judge, DeletePolicy, Event, Hook};
use crate::targets::kube::health::{self, Health};
use crate::targets::kube::leader::Gate;
use crate::targets::{HookResult, HookRunner};
use kube::api::{Api, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube::discovery::Scope;
use serde_json::Value;
use std::time::{Duration, Instant};

/// How often a running hook or a waited-for workload is read.
const POLL: Duration = Duration::from_millis(250);

/// How a created hook object stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Still running; why, for a timeout message.
    Running(String),
    /// Done.
    Succeeded(String),
    /// Done and failed, with the object's reason.
    Failed(String),
}

/// Whether a hook object of `kind` runs something Helm waits for.
pub fn runs(kind: &str) -> bool {
    matches!(kind, "Job" | "Pod")
}

/// How the hook object `obj` stands. Helm waits only for Jobs and Pods; any other
/// hook (a ConfigMap, a ServiceAccount) is done once created.
pub fn progress(obj: &Value) -> Progress {
    let kind = obj["kind"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let status = &obj["status"];
    match kind {
        "Job" => {
            let condition = |t: &str| {
                status["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["type"] == t && c["status"] == "True")
            };
            if let Some(c) = condition("Failed") {
                let why = [&c["reason"], &c["message"]]
                    .iter()
                    .filter_map(|v| v.as_str())
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(": ");
                return Progress::Failed(format!("job {name} failed: {why}"));
            }
            if condition("Complete").is_some() {
                return Progress::Succeeded(format!("Job {name} completed"));
            }
            Progress::Running(format!(
                "Job {name}: active: {}, succeeded: {}, failed: {}",
                status["active"].as_i64().unwrap_or(0),
                status["succeeded"].as_i64().unwrap_or(0),
                status["failed"].as_i64().unwrap_or(0)
            ))
        }
        "Pod" => match status["phase"].as_str().unwrap_or("Pending") {
            "Succeeded" => Progress::Succeeded(format!("Pod {name} succeeded")),
            "Failed" => Progress::Failed(format!(
                "pod {name} failed{}",
                status["message"]
                    .as_str()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            )),
            phase => Progress::Running(format!("Pod {name} is {phase}")),
        },
        _ => Progress::Succeeded(format!("{kind} {name} created")),
    }
}

/// Runs hooks and waits for workloads in one cluster. Its methods block on the
/// process's tokio runtime: the reconciler calls them from a blocking thread.
pub struct ClusterHooks {
    client: kube::Client,
    handle: tokio::runtime::Handle,
    gate: Gate,
}

impl ClusterHooks {
    /// A runner over `client`, blocking on `handle`.
    pub fn new(client: kube::Client, handle: tokio::runtime::Handle) -> ClusterHooks {
        ClusterHooks {
            client,
            handle,
            gate: Gate::open(),
        }
    }

    /// Makes each hook's creation and deletion wait for `gate`.
    pub fn set_gate(&mut self, gate: Gate) {
        self.gate = gate;
    }

    /// Runs `hooks` (in Helm's order) of `event` in `namespace` within `timeout` in all;
    /// stops at the first failure.
    pub async fn run(
        &self,
        hooks: &[&Hook],
        event: Event,
        namespace: &str,
        timeout: Duration,
    ) -> Vec<HookResult> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        for h in hooks {
            let result = self.run_one(h, namespace, deadline).await;
            let (ok, message) = judge(event, runs(&h.kind), result);
            out.push(HookResult {
                hook: h.id(),
                ok,
                message,
            });
            if !ok {
                break;
            }
        }
        out
    }

    async fn run_one(
        &self,
        h: &Hook,
        namespace: &str,
        deadline: Instant,
    ) -> Result<String, String> {
        let (api, mut object) = self.api_for(h, namespace).await?;
        let policy = DeletePolicy::of(h);
        if policy.before_creation {
            delete_and_wait(&api, &h.name, deadline, &self.gate).await?;
        }
        object["metadata"]["namespace"] = namespace_of(&h.object, namespace).into();
        let dynamic: DynamicObject = serde_json::from_value(object)
            .map_err(|e| format!("{}: not a Kubernetes object: {e}", h.id()))?;
        // Created, not applied, as Helm does: a leftover hook without
        // before-hook-creation is an error, not silently reused.
        self.gate
            .check()
            .map_err(|e| format!("{}: not created: {e}", h.id()))?;
        api.create(&PostParams::default(), &dynamic)
            .await
            .map_err(|e| format!("creating {}: {}", h.id(), api_message(&e)))?;
        tracing::info!(hook = %h.id(), "hook created");
        let outcome = wait_done(&api, &h.name, deadline).await;
        if policy.deletes_after(outcome.is_ok()) {
            if let Err(e) = delete_and_wait(&api, &h.name, deadline + POLL * 20, &self.gate).await {
                tracing::warn!(hook = %h.id(), "hook-delete-policy: {e}");
            }
        }
        outcome
    }

    /// The API for the hook's kind, found through discovery, and the object to create.
    async fn api_for(
        &self,
        h: &Hook,
        namespace: &str,
    ) -> Result<(Api<DynamicObject>, Value), String> {
        let api_version = h.object["apiVersion"].as_str().unwrap_or("v1");
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, &h.kind);
        let (resource, caps) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|e| format!("{}: {api_version} {}: {}", h.id(), h.kind, api_message(&e)))?;
        let api = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(
                self.client.clone(),
                &namespace_of(&h.object, namespace),
                &resource,
            ),
            Scope::Cluster => Api::all_with(self.client.clone(), &resource),
        };
        Ok((api, h.object.clone()))
    }

    /// Waits until every Deployment in `workloads` is healthy (kstatus `Current`);
    /// the error names the first that is not when `timeout` passes.
    pub async fn wait_healthy(
        &self,
        workloads: &[crate::manifest::ObjectKey],
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let gvk = GroupVersionKind::gvk("apps", "v1", "Deployment");
        let (resource, _) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|e| api_message(&e))?;
        loop {
            let mut waiting = None;
            for key in workloads {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(self.client.clone(), &key.namespace, &resource);
                let status = match api.get_opt(&key.name).await {
                    Ok(Some(d)) => health::status(&serde_json::to_value(d).unwrap_or_default()),
                    Ok(None) => continue,
                    Err(e) => {
                        waiting = Some(format!(
                            "Deployment {}/{}: {}",
                            key.namespace,
                            key.name,
                            api_message(&e)
                        ));
                        break;
                    }
                };
                if status.health != Health::Current {
                    waiting = Some(format!(
                        "Deployment {}/{}: {}",
                        key.namespace, key.name, status.message
                    ));
                    break;
                }
            }
            match waiting {
                None => return Ok(()),
                Some(w) if Instant::now() >= deadline => return Err(w),
                Some(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        // On a worker of a multi-thread runtime, block_in_place lets the runtime move
        // its other tasks away; elsewhere (a blocking thread) a plain block_on is fine.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.handle.block_on(f))
            }
            _ => self.handle.block_on(f),
        }
    }
}

impl HookRunner for ClusterHooks {
    fn run_hooks(
        &self,
        hooks: &[&Hook],
        event: Event,
        namespace: &str,
        timeout: Duration,
    ) -> Vec<HookResult> {
        self.block_on(self.run(hooks, event, namespace, timeout))
    }

    fn wait_ready(
        &self,
        workloads: &[crate::manifest::ObjectKey],
        timeout: Duration,
    ) -> crate::targets::Result<()> {
        self.block_on(self.wait_healthy(workloads, timeout))
            .map_err(crate::targets::Error::NotReady)
    }
}

fn namespace_of(object: &Value, release_namespace: &str) -> String {
    object["metadata"]["namespace"]
        .as_str()
        .filter(|n| !n.is_empty())
        .unwrap_or(release_namespace)
        .to_string()
}

/// The API server's own words for a failed call.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        e => crate::util::error_chain(e),
    }
}

/// Deletes `name` if present (background propagation, as Helm does for hooks) and waits
/// until it is gone, so a new hook of the same name can be created.
async fn delete_and_wait(
    api: &Api<DynamicObject>,
    name: &str,
    deadline: Instant,
    gate: &Gate,
) -> Result<(), String> {
    gate.check()
        .map_err(|e| format!("{name}: not deleted: {e}"))?;
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(format!("deleting {name}: {}", api_message(&e))),
    }
    loop {
        match api.get_opt(name).await {
            Ok(None) => return Ok(()),
            Ok(Some(_)) if Instant::now() >= deadline => {
                return Err(format!("timed out waiting for {name} to be deleted"))
            }
            Ok(Some(_)) => tokio::time::sleep(POLL).await,
            Err(e) => return Err(format!("reading {name}: {}", api_message(&e))),
        }
    }
}

/// Waits for the created hook to finish, or for `deadline`.
async fn wait_done(
    api: &Api<DynamicObject>,
    name: &str,
    deadline: Instant,
) -> Result<String, String> {
    loop {
        let live = api
            .get_opt(name)
            .await
            .map_err(|e| format!("reading {name}: {}", api_message(&e)))?
            .ok_or_else(|| format!("{name} was deleted while it ran"))?;
        let value = serde_json::to_value(&live).unwrap_or_default();
        match progress(&value) {
            Progress::Succeeded(m) => return Ok(m),
            Progress::Failed(m) => return Err(m),
            Progress::Running(m) if Instant::now() >= deadline => {
                return Err(format!("timed out waiting for the hook to finish: {m}"))
            }
            Progress::Running(_) => tokio::time::sleep(POLL).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_job_runs_until_complete_or_failed() {
        let job = |status: Value| json!({"kind": "Job", "metadata": {"name": "migrate"}, "status": status});
        assert_eq!(
            progress(&job(json!({"active": 1}))),
            Progress::Running("Job migrate: active: 1, succeeded: 0, failed: 0".into())
        );
        assert_eq!(
            progress(&job(json!({"succeeded": 1, "conditions": [
                {"type": "Complete", "status": "True"}]}))),
            Progress::Succeeded("Job migrate completed".into())
        );
        assert_eq!(
            progress(&job(json!({"failed": 7, "conditions": [{"type": "Failed", "status": "True",
                "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}))),
            Progress::Failed("job migrate failed: BackoffLimitExceeded: Job has reached the specified backoff limit".into())
        );
        // A condition that is not True says nothing yet.
        assert!(matches!(
            progress(&job(
                json!({"conditions": [{"type": "Complete", "status": "False"}]})
            )),
            Progress::Running(_)
        ));
    }

    #[test]
    fn a_pod_runs_until_it_succeeds_or_fails_other_kinds_are_done_when_created() {
        let pod = |phase: &str| json!({"kind": "Pod", "metadata": {"name": "t"}, "status": {"phase": phase}});
        assert_eq!(
            progress(&pod("Running")),
            Progress::Running("Pod t is Running".into())
        );
        assert_eq!(
            progress(&json!({"kind": "Pod", "metadata": {"name": "t"}})),
            Progress::Running("Pod t is Pending".into())
        );
        assert_eq!(
            progress(&pod("Succeeded")),
            Progress::Succeeded("Pod t succeeded".into())
        );
        assert_eq!(
            progress(&pod("Failed")),
            Progress::Failed("pod t failed".into())
        );
        assert_eq!(
            progress(&json!({"kind": "ConfigMap", "metadata": {"name": "c"}})),
            Progress::Succeeded("ConfigMap c created".into())
        );
        assert!(runs("Job") && runs("Pod") && !runs("ConfigMap"));
    }
}
