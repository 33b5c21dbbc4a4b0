//! `KubeTarget`: the `Target` that applies plans to a cluster. The reconciler calls it
//! from a blocking thread; it drives its requests on a small runtime of its own, so it
//! works the same from the CLI, from `spawn_blocking` and from an async caller. The
//! inventory lives in the cluster (`inventory`); every write is a server-side apply in
//! the order `order` decides; objects a revision leaves unchanged are checked for drift
//! with a dry run and sent nothing unless they drifted.

use super::apply;
use super::executor::{self, Cluster, Item, Outcome};
use super::inventory::Store;
use super::order;
use super::resources::{Resolved, Resources};
use crate::manifest::{Object, ObjectKey};
use crate::source::status::revision_string;
use crate::sync::inventory::Entry;
use crate::sync::{Action, ApplyPlan, Inventory, Op};
use crate::targets::{ApplyReport, DiffAction, HookRunner, ObjectDiff};
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::Mutex;

/// Objects checked for drift per round of requests.
const DRIFT_CHUNK: usize = 256;

/// Errors of the Kubernetes target.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No client could be built.
    #[error(transparent)]
    Client(#[from] super::client::Error),
    /// The inventory ConfigMaps could not be read or written.
    #[error(transparent)]
    Inventory(#[from] super::inventory::Error),
    /// The runtime for requests could not start.
    #[error("target.kubernetes: cannot start a runtime: {0}")]
    Runtime(std::io::Error),
    /// API discovery failed.
    #[error("target.kubernetes: API discovery: {0}")]
    Discovery(String),
    /// Some objects were refused; the others were applied.
    #[error("{revision}: {} of {total} objects not applied:\n  {}", failures.len(), failures.join("\n  "))]
    Objects {
        /// The revision being applied.
        revision: String,
        /// How many objects the revision has.
        total: usize,
        /// One message per refused object.
        failures: Vec<String>,
    },
}

/// Result with the Kubernetes target error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A cluster as a target.
pub struct KubeTarget {
    rt: Option<tokio::runtime::Runtime>,
    cluster: Cluster,
    branch: String,
    store: Store,
    /// sha256 of the inventory as last read or written: an unchanged one is not written.
    stored: Mutex<Option<String>>,
    resources: Resources,
    hooks: super::hooks::ClusterHooks,
}

impl Drop for KubeTarget {
    fn drop(&mut self) {
        // Dropping a runtime inside an async context panics; this works anywhere.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl KubeTarget {
    /// Connects to the cluster `cfg` names. `source` names the inventory ConfigMap and
    /// `branch` goes into the revision annotation.
    pub fn connect(
        cfg: &crate::config::KubeTarget,
        base_dir: &Path,
        source: &str,
        branch: &str,
    ) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("gitcanary-kube")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let client = run_on(&rt, super::client::connect(cfg, base_dir))?;
        let store = Store::new(
            client.clone(),
            &cfg.namespace,
            &format!("gitcanary-inventory-{source}"),
            &cfg.field_manager,
        );
        Ok(KubeTarget {
            cluster: Cluster {
                client: client.clone(),
                field_manager: cfg.field_manager.clone(),
                force_all: cfg.force,
            },
            branch: branch.to_string(),
            store,
            stored: Mutex::new(None),
            resources: Resources::default(),
            hooks: super::hooks::ClusterHooks::new(client, rt.handle().clone()),
            rt: Some(rt),
        })
    }

    /// The client, for callers that share this target's connection.
    pub fn client(&self) -> &kube::Client {
        &self.cluster.client
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        run_on(self.rt.as_ref().expect("runtime lives until drop"), f)
    }

    async fn resolve(&self, kinds: &[(&str, &str)]) -> Result<Vec<Option<Resolved>>> {
        self.resources
            .resolve(&self.cluster.client, kinds)
            .await
            .map_err(|e| Error::Discovery(executor::chain(&e)))
    }

    async fn read_inventory(&self) -> Result<Inventory> {
        let (mut inv, sha) = self.store.read().await?;
        *self.stored.lock().unwrap() = sha;
        // Which applied objects still exist: one paged metadata list per kind and
        // namespace, of objects carrying gitcanary's label.
        let mut groups: BTreeMap<(String, String, String), Vec<ObjectKey>> = BTreeMap::new();
        for (key, e) in inv.entries.iter_mut() {
            if order::consumed(key) {
                e.live = true;
                continue;
            }
            groups
                .entry((
                    e.api_version.clone(),
                    key.kind.clone(),
                    key.namespace.clone(),
                ))
                .or_default()
                .push(key.clone());
        }
        let groups: Vec<_> = groups.into_iter().collect();
        let kinds: Vec<(&str, &str)> = groups
            .iter()
            .map(|((av, k, _), _)| (av.as_str(), k.as_str()))
            .collect();
        let resolved = self.resolve(&kinds).await?;
        let work: Vec<_> = groups.iter().zip(resolved).collect();
        let lists = executor::each(&work, |(((_, _, ns), _), r)| async move {
            match r {
                None => Ok(HashSet::new()),
                Some(r) => self.cluster.names(r, ns).await,
            }
        })
        .await;
        for (((_, keys), _), names) in work.iter().zip(lists) {
            let names = names.map_err(Error::Discovery)?;
            for k in keys {
                if let Some(e) = inv.entries.get_mut(k) {
                    e.live = names.contains(&k.name);
                }
            }
        }
        Ok(inv)
    }

    async fn write_inventory(&self, inv: &Inventory) -> Result<usize> {
        let stored = self.stored.lock().unwrap().clone();
        let (sha, writes) = self.store.write(inv, stored.as_deref()).await?;
        *self.stored.lock().unwrap() = Some(sha);
        Ok(writes)
    }

    /// The items of `actions` to send, with their resources; actions whose kind the
    /// API server does not serve become failures.
    async fn items<'a>(
        &self,
        actions: &[&'a Action],
        desired: &'a [Object],
        revision_of: impl Fn(&Action) -> String,
        failures: &mut Vec<String>,
    ) -> Result<Vec<(&'a Action, Item<'a>)>> {
        let kinds: Vec<(&str, &str)> = actions
            .iter()
            .map(|a| {
                (
                    desired[a.desired.unwrap_or_default()].api_version.as_str(),
                    a.key.kind.as_str(),
                )
            })
            .collect();
        let resolved = self.resolve(&kinds).await?;
        let mut out = Vec::new();
        for (a, r) in actions.iter().zip(resolved) {
            let o = &desired[a.desired.unwrap_or_default()];
            match r {
                Some(resolved) => out.push((
                    *a,
                    Item {
                        key: &a.key,
                        file: &o.origin.file,
                        body: apply::body(&o.value(), &revision_of(a)),
                        resolved,
                    },
                )),
                None => failures.push(format!(
                    "{}: {}: the API server serves no kind {} in {} (is its CustomResourceDefinition installed?)",
                    o.origin.file, a.key, a.key.kind, o.api_version
                )),
            }
        }
        Ok(out)
    }

    async fn apply_async(
        &self,
        plan: &ApplyPlan,
        desired: &[Object],
        old: &Inventory,
        commit: &str,
    ) -> Result<ApplyReport> {
        let revision = revision_string(&self.branch, commit);
        let mut report = ApplyReport::default();
        let mut failures = Vec::new();
        let mut done: HashSet<&ObjectKey> = HashSet::new();
        // 1. Pending inventory: objects about to be created are tracked before they
        // exist, so a crash mid-apply still prunes them later.
        let new: Vec<&Action> = plan
            .actions
            .iter()
            .filter(|a| a.op == Op::Create && !old.entries.contains_key(&a.key))
            .collect();
        if new.iter().any(|a| !order::consumed(&a.key)) {
            let mut pending = old.clone();
            for a in &new {
                let o = &desired[a.desired.unwrap_or_default()];
                pending
                    .entries
                    .insert(a.key.clone(), entry(o, "", &revision));
            }
            self.write_inventory(&pending).await?;
        }
        // 2. Writes and deletions, batch by batch, each stage's objects concurrently.
        for batch in order::batches(plan) {
            for stage in order::stages(&batch) {
                if stage[0].op == Op::Prune {
                    self.prune(stage, old, &mut report, &mut done, &mut failures)
                        .await?;
                    continue;
                }
                let items = self
                    .items(stage, desired, |_| revision.clone(), &mut failures)
                    .await?;
                let outcomes = executor::each(&items, |(_, item)| self.cluster.apply(item)).await;
                for ((a, _), outcome) in items.iter().zip(outcomes) {
                    match outcome {
                        Outcome::Done(_) => {
                            done.insert(&a.key);
                            report.writes += 1;
                            if a.op == Op::Create {
                                report.created += 1;
                            } else {
                                report.updated += 1;
                            }
                        }
                        Outcome::Failed(m) => failures.push(m),
                    }
                }
            }
            if batch.wait_for_crds {
                let crds: Vec<&str> = batch
                    .actions
                    .iter()
                    .filter(|a| apply::is_crd(&a.key) && done.contains(&a.key))
                    .map(|a| a.key.name.as_str())
                    .collect();
                if let Err(m) = self.cluster.wait_established(&crds).await {
                    failures.push(m);
                }
                self.resources.invalidate();
            }
        }
        // 3. Drift: unchanged objects are compared with a dry run, and re-applied only
        // when they differ.
        let unchanged: Vec<&Action> = plan
            .actions
            .iter()
            .filter(|a| a.op == Op::Unchanged && !order::consumed(&a.key))
            .collect();
        let kept = |a: &Action| {
            old.entries
                .get(&a.key)
                .map(|e| e.revision.clone())
                .unwrap_or_else(|| revision.clone())
        };
        // In chunks, so that the bodies and answers of 10,000 objects are never all
        // in memory at once.
        for chunk in unchanged.chunks(DRIFT_CHUNK) {
            let items = self.items(chunk, desired, kept, &mut failures).await?;
            let outcomes =
                executor::each(&items, |(_, item)| self.cluster.correct_drift(item)).await;
            for ((a, item), outcome) in items.iter().zip(outcomes) {
                match outcome {
                    Outcome::Done(true) => {
                        report.writes += 1;
                        tracing::info!(object = %a.key, file = %item.file, "drift corrected");
                        crate::metrics::global().inc(
                            "gitcanary_kube_drift_corrected_total",
                            "Objects re-applied because the live object drifted from Git.",
                            &[("kind", &a.key.kind)],
                            1.0,
                        );
                    }
                    Outcome::Done(false) => {}
                    Outcome::Failed(m) => failures.push(m),
                }
            }
        }
        report.unchanged = plan.count(Op::Unchanged);
        // 4. The final inventory: what is applied now, old entries for what failed.
        let inv = final_inventory(plan, desired, old, &done, &revision);
        self.write_inventory(&inv).await?;
        if failures.is_empty() {
            Ok(report)
        } else {
            Err(Error::Objects {
                revision,
                total: desired.len(),
                failures,
            })
        }
    }

    async fn prune<'a>(
        &self,
        stage: &[&'a Action],
        old: &Inventory,
        report: &mut ApplyReport,
        done: &mut HashSet<&'a ObjectKey>,
        failures: &mut Vec<String>,
    ) -> Result<()> {
        let kinds: Vec<(&str, &str)> = stage
            .iter()
            .map(|a| {
                let av = old
                    .entries
                    .get(&a.key)
                    .map(|e| e.api_version.as_str())
                    .unwrap_or("v1");
                (av, a.key.kind.as_str())
            })
            .collect();
        let resolved = self.resolve(&kinds).await?;
        let work: Vec<_> = stage.iter().zip(resolved).collect();
        let results = executor::each(&work, |(a, r)| async move {
            match r {
                // The kind is gone (its CRD was deleted), and so is the object.
                None => Ok(false),
                Some(r) => self.cluster.delete(&a.key, r).await,
            }
        })
        .await;
        for ((a, _), result) in work.iter().zip(results) {
            match result {
                Ok(deleted) => {
                    done.insert(&a.key);
                    report.pruned += 1;
                    report.writes += usize::from(deleted);
                }
                Err(m) => failures.push(m),
            }
        }
        Ok(())
    }

    /// What applying `desired` would change, from server-side dry runs, in plan order.
    /// Objects already applied keep their revision annotation in the dry run, so only
    /// real changes show; new objects carry `pending`.
    async fn diff_async(&self, desired: &[Object], old: &Inventory) -> Result<Vec<ObjectDiff>> {
        let plan = crate::sync::plan(desired, old);
        let pending = revision_string(&self.branch, "pending");
        let writes: Vec<&Action> = plan
            .actions
            .iter()
            .filter(|a| matches!(a.op, Op::Create | Op::Update | Op::Unchanged))
            .filter(|a| !order::consumed(&a.key))
            .collect();
        let revision_of = |a: &Action| {
            old.entries
                .get(&a.key)
                .map(|e| e.revision.clone())
                .unwrap_or_else(|| pending.clone())
        };
        let mut failures = Vec::new();
        let items = self
            .items(&writes, desired, revision_of, &mut failures)
            .await?;
        let runs = executor::each(&items, |(_, item)| self.cluster.dry_run(item)).await;
        let mut changes: BTreeMap<&ObjectKey, ObjectDiff> = BTreeMap::new();
        for ((a, _), run) in items.iter().zip(runs) {
            match run {
                Ok((None, merged)) => {
                    changes.insert(
                        &a.key,
                        object_diff(a, DiffAction::Create, None, Some(&merged)),
                    );
                }
                Ok((Some(live), merged)) => {
                    if !super::drift::drifted(&live, &merged, 1).is_empty() {
                        let d = object_diff(a, DiffAction::Update, Some(&live), Some(&merged));
                        changes.insert(&a.key, d);
                    }
                }
                Err(m) => failures.push(m),
            }
        }
        for a in &plan.actions {
            let action = match a.op {
                Op::Prune => DiffAction::Delete,
                Op::Orphan => DiffAction::Orphan,
                _ => continue,
            };
            let before = self.get_async(&a.key).await?;
            changes.insert(&a.key, object_diff(a, action, before.as_ref(), None));
        }
        if !failures.is_empty() {
            return Err(Error::Objects {
                revision: pending,
                total: desired.len(),
                failures,
            });
        }
        // In plan order, as the local target reports.
        Ok(plan
            .actions
            .iter()
            .filter_map(|a| changes.remove(&a.key))
            .collect())
    }

    async fn get_async(&self, key: &ObjectKey) -> Result<Option<serde_json::Value>> {
        let r = self
            .resources
            .resolve_group_kind(&self.cluster.client, &key.group, &key.kind)
            .await
            .map_err(|e| Error::Discovery(executor::chain(&e)))?;
        let Some(r) = r else { return Ok(None) };
        self.cluster.get(key, &r).await.map_err(Error::Discovery)
    }

    /// The inventory, with `live` set for objects present in the cluster.
    pub fn read(&self) -> Result<Inventory> {
        self.block_on(self.read_inventory())
    }

    /// Applies `plan`; see the module doc for the order and the checks.
    pub fn apply_plan(
        &self,
        plan: &ApplyPlan,
        desired: &[Object],
        inventory: &Inventory,
        commit: &str,
    ) -> Result<ApplyReport> {
        self.block_on(self.apply_async(plan, desired, inventory, commit))
    }

    /// One live object by key (its preferred version), if present.
    pub fn get_object(&self, key: &ObjectKey) -> Result<Option<serde_json::Value>> {
        self.block_on(self.get_async(key))
    }

    /// What applying `desired` over `inventory` would change (server-side dry runs).
    pub fn dry_run_diff(
        &self,
        desired: &[Object],
        inventory: &Inventory,
    ) -> Result<Vec<ObjectDiff>> {
        self.block_on(self.diff_async(desired, inventory))
    }
}

fn object_diff(
    a: &Action,
    action: DiffAction,
    before: Option<&serde_json::Value>,
    after: Option<&serde_json::Value>,
) -> ObjectDiff {
    ObjectDiff {
        key: a.key.clone(),
        action,
        before: before.map(super::drift::display),
        after: after.map(super::drift::display),
    }
}

/// Runs `f` on `rt`. Inside a multi-threaded runtime (the reconciler's `run` opens its
/// target there) the worker steps aside with `block_in_place`, as blocking it would
/// stall other tasks and tokio refuses to nest runtimes otherwise.
fn run_on<F: Future>(rt: &tokio::runtime::Runtime, f: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| rt.block_on(f))
        }
        _ => rt.block_on(f),
    }
}

fn entry(o: &Object, hash: &str, revision: &str) -> Entry {
    Entry {
        api_version: o.api_version.clone(),
        hash: hash.to_string(),
        revision: revision.to_string(),
        file: o.origin.file.clone(),
        prune: apply::prunable(o),
        live: true,
    }
}

/// The inventory after applying `plan`: objects written (`done`), unchanged or
/// consumed get entries for `desired`; those that failed keep their old entry, so the
/// next sync tries again; pruned and orphaned objects leave it.
pub fn final_inventory(
    plan: &ApplyPlan,
    desired: &[Object],
    old: &Inventory,
    done: &HashSet<&ObjectKey>,
    revision: &str,
) -> Inventory {
    let mut inv = Inventory::default();
    for a in &plan.actions {
        let keep_old = || old.entries.get(&a.key).cloned();
        let e = match (a.op, a.desired) {
            (Op::Create | Op::Update, Some(i))
                if done.contains(&a.key) || order::consumed(&a.key) =>
            {
                Some(entry(&desired[i], &desired[i].hash, revision))
            }
            (Op::Unchanged, Some(i)) => {
                let kept = old
                    .entries
                    .get(&a.key)
                    .map(|e| e.revision.as_str())
                    .unwrap_or(revision);
                Some(entry(&desired[i], &desired[i].hash, kept))
            }
            (Op::Prune, _) if done.contains(&a.key) || order::consumed(&a.key) => None,
            (Op::Orphan, _) => None,
            _ => keep_old(),
        };
        if let Some(e) = e {
            inv.entries.insert(a.key.clone(), e);
        }
    }
    inv
}

impl crate::targets::Target for KubeTarget {
    fn inventory(&self) -> crate::targets::Result<Inventory> {
        Ok(self.read()?)
    }

    fn apply(
        &self,
        plan: &ApplyPlan,
        desired: &[Object],
        inventory: &Inventory,
        revision: &str,
    ) -> crate::targets::Result<ApplyReport> {
        Ok(self.apply_plan(plan, desired, inventory, revision)?)
    }

    fn get(&self, key: &ObjectKey) -> crate::targets::Result<Option<serde_json::Value>> {
        Ok(self.get_object(key)?)
    }

    fn diff(
        &self,
        desired: &[Object],
        inventory: &Inventory,
    ) -> crate::targets::Result<Vec<ObjectDiff>> {
        Ok(self.dry_run_diff(desired, inventory)?)
    }

    fn hooks(&self) -> &dyn HookRunner {
        &self.hooks
    }
}
