//! `KubeTarget`: the `Target` that applies plans to a cluster. The reconciler calls it
//! from a blocking thread; it drives its requests on a small runtime of its own, so it
//! works the same from the CLI, from `spawn_blocking` and from an async caller. The
//! inventory lives in the cluster (`inventory`); every write is a server-side apply in
//! the order `order` decides; objects a revision leaves unchanged are checked for drift
//! with a dry run and sent nothing unless they drifted.

use super::apply;
use super::executor::{self, Cluster, Item, Outcome};
use super::health::{self, Status};
use super::inventory::Store;
use super::leader::Gate;
use super::order;
use super::reads;
use super::resources::{Resolved, Resources};
use crate::manifest::{Object, ObjectKey};
use crate::source::status::revision_string;
use crate::sync::inventory::{Entry, EntryRef};
use crate::sync::{Action, ApplyPlan, Inventory, Op};
use crate::targets::{ApplyReport, DiffAction, HookRunner, ObjectDiff};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::Mutex;

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
    /// This replica lost the leader lease mid-apply; the writes after that were not
    /// sent, and the inventory keeps what was pending.
    #[error(transparent)]
    NotLeader(#[from] super::leader::NotLeader),
    /// A live object could not be read.
    #[error("{0}")]
    Read(String),
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
                gate: Gate::open(),
            },
            branch: branch.to_string(),
            store,
            stored: Mutex::new(None),
            resources: Resources::default(),
            hooks: super::hooks::ClusterHooks::new(client, rt.handle().clone()),
            rt: Some(rt),
        })
    }

    /// Makes each object write (apply, deletion, hook, inventory) wait for `gate`.
    pub fn set_gate(&mut self, gate: Gate) {
        self.cluster.gate = gate.clone();
        self.store.set_gate(gate.clone());
        self.hooks.set_gate(gate);
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
        let live = self.present(&inv).await?;
        for (e, live) in inv.entries.values_mut().zip(live) {
            e.live = live;
        }
        Ok(inv)
    }

    /// Whether each entry of `inv` (in key order) is in the cluster: one paged metadata
    /// list per kind and namespace, of objects carrying gitcanary's label. Groups hold
    /// entry positions, not copies of 10,000 keys.
    async fn present(&self, inv: &Inventory) -> Result<Vec<bool>> {
        let mut groups: BTreeMap<(&str, &str, &str), Vec<usize>> = BTreeMap::new();
        for (i, (key, e)) in inv.entries.iter().enumerate() {
            if !order::consumed(key) {
                groups
                    .entry((&e.api_version, &key.kind, &key.namespace))
                    .or_default()
                    .push(i);
            }
        }
        let groups: Vec<_> = groups.into_iter().collect();
        let kinds: Vec<(&str, &str)> = groups.iter().map(|((av, k, _), _)| (*av, *k)).collect();
        let resolved = self.resolve(&kinds).await?;
        let work: Vec<_> = groups.iter().zip(resolved).collect();
        let lists = executor::each(&work, |(((_, _, ns), _), r)| async move {
            match r {
                None => Ok(HashSet::new()),
                Some(r) => self.cluster.names(r, ns).await,
            }
        })
        .await;
        // Consumed objects are never in the cluster, and count as present.
        let mut live = vec![true; inv.entries.len()];
        let names: Vec<&str> = inv.entries.keys().map(|k| k.name.as_str()).collect();
        for (((_, positions), _), found) in work.iter().zip(lists) {
            let found = found.map_err(Error::Discovery)?;
            for &i in positions {
                live[i] = found.contains(names[i]);
            }
        }
        Ok(live)
    }

    async fn write_inventory(&self, records: &[(&ObjectKey, EntryRef<'_>)]) -> Result<usize> {
        let stored = self.stored.lock().unwrap().clone();
        let (sha, writes) = self
            .store
            .write(|| records.iter().copied(), stored.as_deref())
            .await?;
        *self.stored.lock().unwrap() = Some(sha);
        Ok(writes)
    }

    /// The actions to send with their objects and resources; actions whose kind the
    /// API server does not serve become failures. Bodies are made as each request
    /// goes out (see [`Self::item`]), so only those in flight are in memory.
    async fn resolve_actions<'a>(
        &self,
        actions: &[&'a Action],
        desired: &'a [Object],
        failures: &mut Vec<String>,
    ) -> Result<Vec<(&'a Action, &'a Object, Resolved)>> {
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
        let mut out = Vec::with_capacity(actions.len());
        for (a, r) in actions.iter().zip(resolved) {
            let o = &desired[a.desired.unwrap_or_default()];
            match r {
                Some(resolved) => out.push((*a, o, resolved)),
                None => failures.push(format!(
                    "{}: {}: the API server serves no kind {} in {} (is its CustomResourceDefinition installed?)",
                    o.origin.file, a.key, a.key.kind, o.api_version
                )),
            }
        }
        Ok(out)
    }

    /// The request for `o`, labelled and annotated with `revision`.
    fn item<'a>(a: &'a Action, o: &'a Object, resolved: &Resolved, revision: &str) -> Item<'a> {
        Item {
            key: &a.key,
            file: &o.origin.file,
            body: apply::body(&o.value(), revision),
            resolved: resolved.clone(),
        }
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
            let mut pending: Vec<(&ObjectKey, EntryRef)> =
                old.entries.iter().map(|(k, e)| (k, e.as_ref())).collect();
            for a in &new {
                let o = &desired[a.desired.unwrap_or_default()];
                pending.push((&a.key, entry(o, "", &revision)));
            }
            self.write_inventory(&sorted(pending)).await?;
        }
        // 2. Writes and deletions, batch by batch, each stage's objects concurrently.
        for batch in order::batches(plan) {
            for stage in order::stages(&batch) {
                if stage[0].op == Op::Prune {
                    self.prune(stage, old, &mut report, &mut done, &mut failures)
                        .await?;
                    continue;
                }
                let work = self.resolve_actions(stage, desired, &mut failures).await?;
                let outcomes = executor::each(&work, |(a, o, r)| async {
                    self.cluster.apply(&Self::item(a, o, r, &revision)).await
                })
                .await;
                let mut lost = None;
                for ((a, _, _), outcome) in work.iter().zip(outcomes) {
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
                        Outcome::NotLeader(e) => lost = Some(e),
                    }
                }
                stop_if_lost(lost)?;
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
        report.writes += self
            .correct_drift(plan, desired, old, &revision, &mut failures)
            .await?;
        report.unchanged = plan.count(Op::Unchanged);
        // 4. The final inventory: what is applied now, old entries for what failed.
        let records = final_records(plan, desired, old, &done, &revision);
        self.write_inventory(&records).await?;
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

    /// Dry-runs every unchanged object and re-applies those that drifted; returns the
    /// writes. Each keeps the revision that last wrote it.
    async fn correct_drift(
        &self,
        plan: &ApplyPlan,
        desired: &[Object],
        old: &Inventory,
        revision: &str,
        failures: &mut Vec<String>,
    ) -> Result<usize> {
        let unchanged: Vec<&Action> = plan
            .actions
            .iter()
            .filter(|a| a.op == Op::Unchanged && !order::consumed(&a.key))
            .collect();
        let kept = |a: &Action| {
            old.entries
                .get(&a.key)
                .map(|e| e.revision.as_str())
                .unwrap_or(revision)
        };
        let work = self.resolve_actions(&unchanged, desired, failures).await?;
        let outcomes = executor::each(&work, |(a, o, r)| async {
            let item = Self::item(a, o, r, kept(a));
            let outcome = self.cluster.correct_drift(&item).await;
            if let Outcome::Done(true) = outcome {
                tracing::info!(object = %a.key, file = %item.file, "drift corrected");
            }
            outcome
        })
        .await;
        let mut writes = 0;
        let mut lost = None;
        for ((a, _, _), outcome) in work.iter().zip(outcomes) {
            match outcome {
                Outcome::Done(true) => {
                    writes += 1;
                    crate::metrics::global().inc(
                        "gitcanary_kube_drift_corrected_total",
                        "Objects re-applied because the live object drifted from Git.",
                        &[("kind", &a.key.kind)],
                        1.0,
                    );
                }
                Outcome::Done(false) => {}
                Outcome::Failed(m) => failures.push(m),
                Outcome::NotLeader(e) => lost = Some(e),
            }
        }
        stop_if_lost(lost)?;
        Ok(writes)
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
                None => Outcome::Done(false),
                Some(r) => self.cluster.delete(&a.key, r).await,
            }
        })
        .await;
        let mut lost = None;
        for ((a, _), result) in work.iter().zip(results) {
            match result {
                Outcome::Done(deleted) => {
                    done.insert(&a.key);
                    report.pruned += 1;
                    report.writes += usize::from(deleted);
                }
                Outcome::Failed(m) => failures.push(m),
                Outcome::NotLeader(e) => lost = Some(e),
            }
        }
        stop_if_lost(lost)
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
                .map(|e| e.revision.as_str())
                .unwrap_or(&pending)
        };
        let mut failures = Vec::new();
        let work = self
            .resolve_actions(&writes, desired, &mut failures)
            .await?;
        let runs = executor::each(&work, |(a, o, r)| async {
            self.cluster
                .dry_run(&Self::item(a, o, r, revision_of(a)))
                .await
        })
        .await;
        let mut changes: BTreeMap<&ObjectKey, ObjectDiff> = BTreeMap::new();
        for ((a, _, _), run) in work.iter().zip(runs) {
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

    /// The health of each of `keys` (`None` when absent), read as [`reads::plan`]
    /// decides: one paged LIST per kind and namespace with several objects, a GET
    /// otherwise, and a GET for a listed object the LIST did not return (its label was
    /// removed, or it is gone). A LIST refused (RBAC without `list`) falls back to GETs.
    async fn health_async(&self, keys: &[ObjectKey]) -> Vec<Result<Option<Status>>> {
        let groups = reads::plan(keys);
        let read = executor::each(&groups, |g| self.read_group(keys, g)).await;
        let mut out: Vec<Option<Result<Option<Status>>>> = keys.iter().map(|_| None).collect();
        for (g, results) in groups.iter().zip(read) {
            for (&i, r) in g.positions.iter().zip(results) {
                out[i] = Some(r);
            }
        }
        out.into_iter().map(|r| r.unwrap_or(Ok(None))).collect()
    }

    /// The statuses of one group, in the order of its positions.
    async fn read_group(
        &self,
        keys: &[ObjectKey],
        g: &reads::Group<'_>,
    ) -> Vec<Result<Option<Status>>> {
        let r = match self
            .resources
            .resolve_group_kind(&self.cluster.client, g.group, g.kind)
            .await
        {
            // A kind the API server does not serve has no objects.
            Ok(None) => return g.positions.iter().map(|_| Ok(None)).collect(),
            Ok(Some(r)) => r,
            Err(e) => return unread(keys, g, "discovery", &e),
        };
        let mut listed = HashMap::new();
        if g.list {
            let wanted: HashSet<&str> =
                g.positions.iter().map(|&i| keys[i].name.as_str()).collect();
            match self
                .cluster
                .list_statuses(&r, g.namespace, |n| wanted.contains(n))
                .await
            {
                Ok(found) => listed = found,
                // Not allowed to list (or not listable): read one by one.
                Err(kube::Error::Api(s)) if (403..=405).contains(&s.code) => {
                    tracing::debug!(
                        kind = g.kind,
                        namespace = g.namespace,
                        "health check: list refused ({}), reading objects one by one",
                        s.message
                    );
                }
                Err(e) => return unread(keys, g, "list", &e),
            }
        }
        let r = &r;
        executor::each(&g.positions, |&i| {
            let found = listed.get(&keys[i].name).cloned();
            async move {
                match found {
                    Some(status) => Ok(Some(status)),
                    None => self
                        .cluster
                        .get(&keys[i], r)
                        .await
                        .map(|o| o.map(|o| health::status(&o)))
                        .map_err(Error::Read),
                }
            }
        })
        .await
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

    /// The health of each of `keys`, `None` when absent; see [`Self::health_async`].
    pub fn health_of(&self, keys: &[ObjectKey]) -> Vec<Result<Option<Status>>> {
        self.block_on(self.health_async(keys))
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

/// The same read error for each object of a group.
fn unread(
    keys: &[ObjectKey],
    g: &reads::Group<'_>,
    what: &str,
    e: &kube::Error,
) -> Vec<Result<Option<Status>>> {
    let why = executor::chain(e);
    g.positions
        .iter()
        .map(|&i| Err(Error::Read(format!("{}: {what}: {why}", keys[i]))))
        .collect()
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

/// Ends an apply whose writes the gate stopped: nothing more may be written, not even
/// the final inventory (the pending one already tracks what was being created).
fn stop_if_lost(lost: Option<super::leader::NotLeader>) -> Result<()> {
    match lost {
        Some(e) => {
            tracing::warn!("{e}: the rest of this revision is left to the new leader");
            Err(Error::NotLeader(e))
        }
        None => Ok(()),
    }
}

fn entry<'a>(o: &'a Object, hash: &'a str, revision: &'a str) -> EntryRef<'a> {
    EntryRef {
        api_version: &o.api_version,
        hash,
        revision,
        file: &o.origin.file,
        prune: apply::prunable(o),
    }
}

/// Records in key order, the last of a repeated key winning, as a map would keep them.
fn sorted<'a>(
    mut records: Vec<(&'a ObjectKey, EntryRef<'a>)>,
) -> Vec<(&'a ObjectKey, EntryRef<'a>)> {
    records.reverse();
    // Stable: of equal keys, the last given comes first, and dedup keeps it.
    records.sort_by(|a, b| a.0.cmp(b.0));
    records.dedup_by(|later, first| later.0 == first.0);
    records
}

/// The inventory after applying `plan`, as records borrowed from its inputs: objects
/// written (`done`), unchanged or consumed get entries for `desired`; those that
/// failed keep their old entry, so the next sync tries again; pruned and orphaned
/// objects leave it.
pub fn final_records<'a>(
    plan: &'a ApplyPlan,
    desired: &'a [Object],
    old: &'a Inventory,
    done: &HashSet<&ObjectKey>,
    revision: &'a str,
) -> Vec<(&'a ObjectKey, EntryRef<'a>)> {
    let mut records = Vec::with_capacity(plan.actions.len());
    for a in &plan.actions {
        let keep_old = || old.entries.get(&a.key).map(Entry::as_ref);
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
            records.push((&a.key, e));
        }
    }
    sorted(records)
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

    fn health_of(&self, keys: &[ObjectKey]) -> Vec<crate::targets::Result<Option<Status>>> {
        KubeTarget::health_of(self, keys)
            .into_iter()
            .map(|r| r.map_err(Into::into))
            .collect()
    }

    fn set_gate(&mut self, gate: Gate) {
        KubeTarget::set_gate(self, gate)
    }
}
