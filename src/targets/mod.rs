//! Targets: where desired objects are applied. The sync loop and the Helm release
//! flow see a target only through [`Target`] (and the [`HookRunner`] it provides); the
//! embedded local target (`local`) is the default, the Kubernetes target (`kube`)
//! implements the same traits.

pub mod kube;
pub mod local;

use crate::helm::hooks::{Event, Hook};
use crate::manifest::{Object, ObjectKey};
use crate::sync::{ApplyPlan, Inventory};
use std::path::PathBuf;
use std::time::Duration;

/// Errors from a target.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A stored file is not what gitcanary wrote.
    #[error("{path}: corrupt: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Another gitcanary process holds the state dir.
    #[error("another gitcanary process is writing to {0}; stop it or use another stateDir")]
    Locked(PathBuf),
    /// The target is not available in this build.
    #[error("{0}")]
    Unsupported(String),
    /// The Kubernetes target failed.
    #[error(transparent)]
    Kube(#[from] self::kube::Error),
    /// An object's identity would name a file outside the store (`kind: ../x`).
    #[error("{key}: {part:?} cannot be a file name in the store")]
    UnsafePath {
        /// The object.
        key: String,
        /// The offending part of its identity.
        part: String,
    },
    /// A call to the target's API failed (used by targets with a remote API).
    #[error("{what}: {message}")]
    Api {
        /// What was being done, naming the object (`apply Deployment/test/podinfo`).
        what: String,
        /// Why it failed, as the API said.
        message: String,
    },
    /// Workloads did not become ready in time.
    #[error("timed out waiting for readiness: {0}")]
    NotReady(String),
    /// This replica does not hold the leader lease; nothing was written.
    #[error(transparent)]
    NotLeader(#[from] kube::leader::NotLeader),
}

/// Result with the target error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What an apply did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApplyReport {
    /// Objects created.
    pub created: usize,
    /// Objects updated.
    pub updated: usize,
    /// Objects deleted.
    pub pruned: usize,
    /// Objects left alone.
    pub unchanged: usize,
    /// Files written or removed for objects.
    pub writes: usize,
}

/// What the next apply would do to one object (`gitcanary diff`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ObjectDiff {
    /// The object.
    pub key: ObjectKey,
    /// What would happen to it.
    pub action: DiffAction,
    /// The object as the target holds it now (`None` when absent).
    pub before: Option<serde_json::Value>,
    /// The object as it would be after the apply (`None` when deleted or left alone).
    pub after: Option<serde_json::Value>,
}

/// The change an [`ObjectDiff`] shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiffAction {
    /// The object would be created.
    Create,
    /// The object drifted from (or differs from) the desired one and would be updated.
    Update,
    /// The object would be pruned.
    Delete,
    /// The object left the source but pruning is disabled for it: it stays, unmanaged.
    Orphan,
}

/// How one Helm hook ended.
#[derive(Clone, Debug, PartialEq)]
pub struct HookResult {
    /// `Kind/name`.
    pub hook: String,
    /// Succeeded, or was skipped (`ok` with a reason in `message`).
    pub ok: bool,
    /// What happened, with the tail of the output on failure.
    pub message: String,
}

/// Runs Helm hooks and waits for a release's workloads, the way the target runs
/// workloads: the local target as host processes, Kubernetes as cluster Jobs and Pods.
/// Deciding which hooks run when stays in `helm::hooks::plan_hooks`.
pub trait HookRunner: Send + Sync {
    /// Runs the `hooks` of `event` (already in Helm's weight order) for a release in
    /// `namespace`, within `timeout` in all, honouring each hook's delete policy. Stops
    /// at the first failure, as Helm does; the last result is then the failed one.
    fn run_hooks(
        &self,
        hooks: &[&Hook],
        event: Event,
        namespace: &str,
        timeout: Duration,
    ) -> Vec<HookResult>;
    /// Waits until every workload in `workloads` (Deployments) runs its current
    /// template with the replicas it wants; [`Error::NotReady`] names the first that
    /// does not within `timeout`.
    fn wait_ready(&self, workloads: &[ObjectKey], timeout: Duration) -> Result<()>;
}

/// Opens the target the config selects. `write` is for a sync (the local target takes
/// the state dir's single-writer lock), not for a read such as `gitcanary diff`.
pub fn open(cfg: &crate::config::Config, write: bool) -> Result<Box<dyn Target>> {
    if let Some(k) = &cfg.target.kubernetes {
        return Ok(Box::new(kube::KubeTarget::connect(
            k,
            &cfg.base_dir,
            &cfg.source.name,
            &cfg.source.branch,
        )?));
    }
    let images = cfg
        .target
        .local
        .as_ref()
        .map(|l| l.images.clone())
        .unwrap_or_default();
    Ok(Box::new(local::LocalTarget::open(
        &cfg.state_dir(),
        images,
        write,
    )?))
}

/// A place objects are applied to.
///
/// The trait is synchronous on purpose: the reconciler runs a sync on a blocking
/// thread (`spawn_blocking`), the local target is file I/O, and a target with an async
/// client (Kubernetes) blocks on its tokio runtime handle inside its methods. So the
/// planner, hooks and status code around it stay plain sequential code, and no
/// `async` leaks into `sync::plan`.
pub trait Target: Send + Sync {
    /// The inventory of applied objects, with `live` set for those present.
    fn inventory(&self) -> Result<Inventory>;
    /// Applies a plan made against `inventory`; `desired` is what the plan indexes.
    fn apply(
        &self,
        plan: &ApplyPlan,
        desired: &[Object],
        inventory: &Inventory,
        revision: &str,
    ) -> Result<ApplyReport>;
    /// One object as stored, if present.
    fn get(&self, key: &ObjectKey) -> Result<Option<serde_json::Value>>;
    /// What applying `desired` over `inventory` would change, without changing
    /// anything, in plan order; unchanged objects are left out.
    fn diff(&self, desired: &[Object], inventory: &Inventory) -> Result<Vec<ObjectDiff>>;
    /// How this target runs Helm hooks and waits for workloads.
    fn hooks(&self) -> &dyn HookRunner;
    /// The health of an object as this target runs it, in kstatus's words; `None`
    /// when it is absent. By default kstatus judges the object [`Target::get`]
    /// returns, as a cluster's controllers fill in its status.
    fn health(&self, key: &ObjectKey) -> Result<Option<kube::health::Status>> {
        Ok(self.get(key)?.map(|o| kube::health::status(&o)))
    }
    /// [`Target::health`] of each of `keys`, in order. A target that can read many
    /// objects in one request (Kubernetes: a LIST per kind and namespace) does so.
    fn health_of(&self, keys: &[ObjectKey]) -> Vec<Result<Option<kube::health::Status>>> {
        keys.iter().map(|k| self.health(k)).collect()
    }
    /// Makes each object write wait for `gate`, the leader lease (see
    /// [`kube::leader::Gated`] for the check before a whole apply). Only targets that
    /// several replicas share have one; the local target has a single writer already.
    fn set_gate(&mut self, _gate: kube::leader::Gate) {}
}
