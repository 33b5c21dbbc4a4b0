//! Memory of a revision's health check on a large inventory. The check reads every
//! watched workload each poll; live Kubernetes objects are large (managedFields), and
//! holding all of them at once was most of `gitcanary run`'s peak memory with 10,000
//! objects. A counting allocator measures the peak of a sync and its first check against
//! a target whose objects are as large as real ones.

use gitcanary::config::Config;
use gitcanary::helm::hooks::{Event, Hook};
use gitcanary::manifest::{Object, ObjectKey};
use gitcanary::sync::reconcile::Reconciler;
use gitcanary::sync::{ApplyPlan, Inventory};
use gitcanary::targets::{self, ApplyReport, HookResult, HookRunner, ObjectDiff, Target};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The system allocator, counting the bytes in use and their peak.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const DEPLOYMENTS: usize = 1_000;

/// A cluster stand-in: applies nothing, and answers every read with a Deployment as an
/// API server returns it, managedFields and all (about 40 KB as a JSON value).
struct LargeObjects;

fn live(key: &ObjectKey) -> serde_json::Value {
    let fields: serde_json::Map<String, serde_json::Value> = (0..150)
        .map(|i| {
            (
                format!("f:field-{i}"),
                serde_json::json!({"f:name": {}, "f:value": {}}),
            )
        })
        .collect();
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": key.name, "namespace": key.namespace, "generation": 1,
            "managedFields": [{"manager": "gitcanary", "operation": "Apply",
                "fieldsV1": {"f:spec": fields}}]},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 1,
            "availableReplicas": 1}
    })
}

impl Target for LargeObjects {
    fn inventory(&self) -> targets::Result<Inventory> {
        Ok(Inventory::default())
    }
    fn apply(
        &self,
        plan: &ApplyPlan,
        _: &[Object],
        _: &Inventory,
        _: &str,
    ) -> targets::Result<ApplyReport> {
        Ok(ApplyReport {
            created: plan.actions.len(),
            ..Default::default()
        })
    }
    fn get(&self, key: &ObjectKey) -> targets::Result<Option<serde_json::Value>> {
        Ok(Some(live(key)))
    }
    fn diff(&self, _: &[Object], _: &Inventory) -> targets::Result<Vec<ObjectDiff>> {
        Ok(Vec::new())
    }
    fn hooks(&self) -> &dyn HookRunner {
        self
    }
}

impl HookRunner for LargeObjects {
    fn run_hooks(&self, _: &[&Hook], _: Event, _: &str, _: Duration) -> Vec<HookResult> {
        Vec::new()
    }
    fn wait_ready(&self, _: &[ObjectKey], _: Duration) -> targets::Result<()> {
        Ok(())
    }
}

#[test]
fn a_health_check_holds_statuses_not_live_objects() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let mut text = String::new();
    for i in 0..DEPLOYMENTS {
        text.push_str(&format!(
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app-{i}\n  namespace: apps\nspec:\n  selector:\n    matchLabels: {{app: app-{i}}}\n  template:\n    metadata:\n      labels: {{app: app-{i}}}\n    spec:\n      containers:\n        - name: app\n          image: ghcr.io/stefanprodan/podinfo:6.0.0\n"
        ));
    }
    std::fs::write(tree.join("apps.yaml"), text).unwrap();
    let remote = dir.path().join("remote.git");
    gitcanary::source::seed::commit_dir(&remote, &tree, "main", "init", ("t", "t@localhost"))
        .unwrap();
    let cfg = Config::parse(
        &format!(
            "source:\n  url: {}\n  timeout: 5m\ntarget:\n  kubernetes:\n    kubeconfig: ./none\n    stateDir: ./state\n",
            remote.display()
        ),
        dir.path(),
    )
    .unwrap();
    // What one live object costs in memory, as the health check receives it.
    let start = IN_USE.load(Ordering::Relaxed);
    let sample = live(&ObjectKey::new("apps/v1", "Deployment", "apps", "x"));
    let one = IN_USE.load(Ordering::Relaxed) - start;
    drop(sample);
    let mut rec = Reconciler::with_target(cfg, Box::new(LargeObjects), true).unwrap();
    let before = IN_USE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let report = rec.sync_once().unwrap();
    assert_eq!(report.applied.created, DEPLOYMENTS);
    let verdict = rec.health().expect("the sync started a health check");
    assert!(
        format!("{verdict:?}").contains("Updated: 1/2"),
        "{verdict:?}"
    );
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let all_live = DEPLOYMENTS * one;
    assert!(
        peak < all_live / 2,
        "peak {} KB during the sync and its health check; every live object at once is {} KB",
        peak / 1024,
        all_live / 1024
    );
}
