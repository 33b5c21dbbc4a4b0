//! The local target as the sync loop sees it: the object store behind
//! [`Target`], with the state dir's single-writer lock taken on open, and Helm hooks
//! run as host processes by the local runtime ([`HookRunner`]).

use super::runtime::job::{self, JobContext};
use super::store::{LocalStore, WriterLock};
use crate::helm::hooks::{Event, Hook};
use crate::manifest::{Object, ObjectKey};
use crate::sync::{plan, ApplyPlan, Inventory, Op};
use crate::targets::kube::health::{Health, Status};
use crate::targets::{
    ApplyReport, DiffAction, Error, HookResult, HookRunner, ObjectDiff, Result, Target,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// The embedded local target.
pub struct LocalTarget {
    hooks: LocalHooks,
    _lock: Option<WriterLock>,
}

/// Runs hooks and readiness waits on the local runtime.
pub struct LocalHooks {
    store: LocalStore,
    /// `target.local.images`.
    images: BTreeMap<String, Vec<String>>,
}

impl LocalTarget {
    /// Opens the store at `state_dir`; `write` takes the single-writer lock (a sync
    /// needs it, `gitcanary diff` does not). `images` is `target.local.images`.
    pub fn open(
        state_dir: &Path,
        images: BTreeMap<String, Vec<String>>,
        write: bool,
    ) -> Result<Self> {
        let store = LocalStore::open(state_dir)?;
        let lock = if write {
            Some(store.lock_writer()?)
        } else {
            None
        };
        Ok(LocalTarget {
            hooks: LocalHooks { store, images },
            _lock: lock,
        })
    }

    /// The object store.
    pub fn store(&self) -> &LocalStore {
        &self.hooks.store
    }
}

impl Target for LocalTarget {
    fn inventory(&self) -> Result<Inventory> {
        self.store().inventory()
    }

    fn apply(
        &self,
        plan: &ApplyPlan,
        desired: &[Object],
        inventory: &Inventory,
        revision: &str,
    ) -> Result<ApplyReport> {
        self.store().apply(plan, desired, inventory, revision)
    }

    fn get(&self, key: &ObjectKey) -> Result<Option<serde_json::Value>> {
        self.store().get(key)
    }

    fn diff(&self, desired: &[Object], inventory: &Inventory) -> Result<Vec<ObjectDiff>> {
        let plan = plan(desired, inventory);
        let mut out = Vec::new();
        for a in &plan.actions {
            let action = match a.op {
                Op::Unchanged => continue,
                Op::Create => DiffAction::Create,
                Op::Update => DiffAction::Update,
                Op::Prune => DiffAction::Delete,
                Op::Orphan => DiffAction::Orphan,
            };
            // Only an update shows content; the others are listed by name.
            let (before, after) = if action == DiffAction::Update {
                (
                    self.store().get(&a.key)?,
                    a.desired.map(|i| desired[i].value()),
                )
            } else {
                (None, None)
            };
            out.push(ObjectDiff {
                key: a.key.clone(),
                action,
                before,
                after,
            });
        }
        Ok(out)
    }

    fn hooks(&self) -> &dyn HookRunner {
        &self.hooks
    }

    /// Stored objects carry no status: a Deployment's health is its replicas'
    /// rollout on the local runtime; any other stored object is current once applied.
    fn health(&self, key: &ObjectKey) -> Result<Option<Status>> {
        let Some(obj) = self.store().get(key)? else {
            return Ok(None);
        };
        if (key.group.as_str(), key.kind.as_str()) != ("apps", "Deployment") {
            return Ok(Some(Status {
                health: Health::Current,
                message: String::new(),
            }));
        }
        let wanted = obj["spec"]["replicas"].as_u64().unwrap_or(1) as u32;
        let r = super::runtime::supervisor::rollout_state(
            self.store().root(),
            &key.namespace,
            &key.name,
            wanted,
        );
        let health = if r.unavailable_since.is_some() {
            Health::Failed
        } else if r.available >= r.wanted && r.updated >= r.wanted {
            Health::Current
        } else {
            Health::InProgress
        };
        Ok(Some(Status {
            health,
            message: format!("{} of {} available", r.available, r.wanted),
        }))
    }
}

impl HookRunner for LocalHooks {
    fn run_hooks(
        &self,
        hooks: &[&Hook],
        event: Event,
        namespace: &str,
        timeout: Duration,
    ) -> Vec<HookResult> {
        let lookup = |kind: &str, ns: &str, name: &str| self.store.get_core(kind, ns, name);
        let ctx = JobContext {
            state_dir: self.store.root(),
            images: &self.images,
            lookup: &lookup,
            work_dir: self.store.root().to_path_buf(),
        };
        job::run_hooks(&ctx, hooks, event, namespace, timeout)
    }

    fn wait_ready(&self, workloads: &[ObjectKey], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let waiting = self.first_unready(workloads);
            match waiting {
                None => return Ok(()),
                Some(w) if Instant::now() >= deadline => return Err(Error::NotReady(w)),
                Some(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

impl LocalHooks {
    /// The first Deployment not yet running its current template with the replicas
    /// it wants, worded for the user; Deployments not stored are skipped.
    fn first_unready(&self, workloads: &[ObjectKey]) -> Option<String> {
        let state_dir = self.store.root();
        for key in workloads {
            let Some(d) = self.store.get(key).ok().flatten() else {
                continue;
            };
            let (ns, name) = (&key.namespace, &key.name);
            let st = super::runtime::supervisor::rollout_state(
                state_dir,
                ns,
                name,
                d["spec"]["replicas"].as_u64().unwrap_or(1) as u32,
            );
            let hash = super::runtime::spec::template_hash(&d["spec"]["template"]);
            if st.wanted > 0 && (st.template_hash != hash || st.available < st.wanted) {
                return Some(format!(
                    "{} {ns}/{name}: {} of {} replicas available",
                    key.kind, st.available, st.wanted
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::local::store::tests::cm;

    #[test]
    fn diff_lists_each_change_with_the_stored_and_desired_object_and_applies_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = LocalTarget::open(dir.path(), BTreeMap::new(), true).unwrap();
        let no = serde_json::json!({});
        let kept = serde_json::json!({"gitcanary.io/prune": "disabled"});
        let first = vec![
            cm("a", "1", no.clone()),
            cm("c", "1", no.clone()),
            cm("o", "1", kept),
        ];
        let inv = target.inventory().unwrap();
        target
            .apply(&plan(&first, &inv), &first, &inv, "r1")
            .unwrap();

        let next = vec![cm("a", "2", no.clone()), cm("b", "1", no)];
        let inv = target.inventory().unwrap();
        let mut diffs = target.diff(&next, &inv).unwrap();
        diffs.sort_by(|x, y| x.key.cmp(&y.key));
        let got: Vec<(&str, DiffAction)> = diffs
            .iter()
            .map(|d| (d.key.name.as_str(), d.action))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", DiffAction::Update),
                ("b", DiffAction::Create),
                ("c", DiffAction::Delete),
                ("o", DiffAction::Orphan)
            ]
        );
        let a = &diffs[0];
        assert_eq!(a.before.as_ref().unwrap()["data"]["k"], "1");
        assert_eq!(a.after.as_ref().unwrap()["data"]["k"], "2");
        assert_eq!((&diffs[1].before, &diffs[1].after), (&None, &None));
        // Nothing was applied.
        assert_eq!(target.inventory().unwrap(), inv);
        assert_eq!(target.get(&a.key).unwrap().unwrap()["data"]["k"], "1");
    }
}
