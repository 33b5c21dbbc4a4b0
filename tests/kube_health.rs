//! Revision health against real rollouts: the control plane with controllers
//! (kube-controller-manager turns Deployments into ReplicaSets and Pods) and
//! fake-kubelet.py (Pods are bound and become Ready, except those of `:bad` images), so
//! a Deployment rolls out, or gets stuck, as on a cluster. Also what a health poll
//! costs, counted in the API server's audit log. Each test takes its own namespace.

mod common;
#[path = "common/envtest.rs"]
mod envtest;
#[path = "common/kube_fixture.rs"]
mod fixture;

use envtest::block;
use gitcanary::manifest::ObjectKey;
use gitcanary::sync::health::Verdict;
use gitcanary::sync::reconcile::Reconciler;
use gitcanary::targets::kube::health::{Health, Status};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Api, ListParams};
use std::time::{Duration, Instant};

fn plane() -> &'static envtest::ControlPlane {
    envtest::shared_with_controllers()
}

/// podinfo with two replicas of `image`, stuck after 10 s without progress.
fn podinfo(ns: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\n  namespace: {ns}\nspec:\n  replicas: 2\n  progressDeadlineSeconds: 10\n  selector:\n    matchLabels:\n      app: podinfo\n  template:\n    metadata:\n      labels:\n        app: podinfo\n    spec:\n      containers:\n        - name: app\n          image: {image}\n"
    )
}

/// A reconciler following `remote` into the cluster, its inventory in `ns`; a health
/// check may take 3 minutes, so only a progress deadline ends a stuck one early.
fn reconciler(remote: &common::Remote, ns: &str) -> (common::Setup, Reconciler) {
    let setup = plane().setup(remote, ns, "  timeout: 3m\n", "");
    let cfg = gitcanary::config::Config::load(&setup.config).unwrap();
    (setup, Reconciler::open(cfg, true).unwrap())
}

/// Polls the running check, as `gitcanary run` does, until it ends (at most `limit`);
/// returns its verdict and the messages it showed while waiting.
fn until_checked(rec: &mut Reconciler, limit: Duration) -> (Verdict, Vec<String>) {
    let start = Instant::now();
    let mut waiting = Vec::new();
    loop {
        let now = gitcanary::util::time::unix_now();
        match rec.check_health(now).unwrap().cloned() {
            Some(Verdict::Waiting(m)) => {
                assert!(
                    start.elapsed() < limit,
                    "still waiting after {limit:?}: {m}"
                );
                if waiting.last() != Some(&m) {
                    waiting.push(m);
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            Some(v) => return (v, waiting),
            None => panic!("no health check runs"),
        }
    }
}

/// The live podinfo Deployment and its ReplicaSet running `image`.
fn live(ns: &str, image: &str) -> (Deployment, ReplicaSet) {
    block(async {
        let client = plane().client().await;
        let d = Api::<Deployment>::namespaced(client.clone(), ns)
            .get("podinfo")
            .await
            .unwrap();
        let sets = Api::<ReplicaSet>::namespaced(client, ns)
            .list(&ListParams::default().labels("app=podinfo"))
            .await
            .unwrap();
        let rs = sets
            .items
            .into_iter()
            .find(|rs| {
                let template = rs.spec.as_ref().and_then(|s| s.template.as_ref());
                let spec = template.and_then(|t| t.spec.as_ref());
                spec.is_some_and(|s| s.containers[0].image.as_deref() == Some(image))
            })
            .unwrap_or_else(|| panic!("no ReplicaSet of {image}"));
        (d, rs)
    })
}

/// `(replicas, availableReplicas)` of a ReplicaSet, as its controller reports them.
fn replicas(rs: &ReplicaSet) -> (i32, i32) {
    let st = rs.status.as_ref().unwrap();
    (st.replicas, st.available_replicas.unwrap_or(0))
}

/// The revision `commit` is applied and its health check passed.
fn assert_ready_at(rec: &Reconciler, commit: &str) {
    assert!(rec.status().ready);
    assert_eq!(
        rec.status().message,
        format!("Applied revision: main@sha1:{commit}")
    );
}

/// Asserts that the Deployment is rolled out: the controller saw its spec, and the
/// ReplicaSet of `image` holds all of its replicas, available.
fn assert_rolled_out(ns: &str, image: &str) -> (Deployment, ReplicaSet) {
    let (d, rs) = live(ns, image);
    let st = d.status.clone().unwrap();
    assert_eq!(st.observed_generation, d.metadata.generation, "{st:?}");
    assert_eq!(
        (
            st.replicas,
            st.updated_replicas,
            st.available_replicas,
            st.ready_replicas
        ),
        (Some(2), Some(2), Some(2), Some(2)),
        "{st:?}"
    );
    assert_eq!(replicas(&rs), (2, 2), "{:?}", rs.status);
    (d, rs)
}

#[test]
#[ignore = "needs KUBEBUILDER_ASSETS"]
fn a_good_revision_is_ready_only_once_its_new_replicaset_is_available() {
    let ns = plane().namespace_blocking("rollout");
    let remote = common::Remote::new();
    let v1 = remote
        .write(&[("apps/podinfo.yaml", &podinfo(&ns, "podinfo:1.0.0"))])
        .push("v1");
    let (_setup, mut rec) = reconciler(&remote, &ns);
    rec.sync_once().unwrap();
    // A Pod is Ready half a second after it is bound at the earliest: the check that
    // ends the sync sees the rollout under way.
    assert!(
        matches!(rec.health(), Some(Verdict::Waiting(_))),
        "{:?}",
        rec.health()
    );
    assert!(!rec.status().ready);
    let (verdict, _) = until_checked(&mut rec, Duration::from_secs(120));
    assert_eq!(verdict, Verdict::Healthy);
    assert_rolled_out(&ns, "podinfo:1.0.0");
    assert_ready_at(&rec, &v1);

    // A new image rolls out through a new ReplicaSet; the revision is ready once the
    // new Pods are available and the old ones are gone.
    let v2 = remote
        .write(&[("apps/podinfo.yaml", &podinfo(&ns, "podinfo:1.0.1"))])
        .push("v2");
    rec.sync_once().unwrap();
    assert!(
        matches!(rec.health(), Some(Verdict::Waiting(_))),
        "{:?}",
        rec.health()
    );
    let (verdict, waiting) = until_checked(&mut rec, Duration::from_secs(120));
    eprintln!("rolling update, as the check saw it: {waiting:#?}");
    assert_eq!(verdict, Verdict::Healthy);
    assert_rolled_out(&ns, "podinfo:1.0.1");
    let (_, old) = live(&ns, "podinfo:1.0.0");
    assert_eq!(
        old.spec.as_ref().unwrap().replicas,
        Some(0),
        "the old ReplicaSet is scaled down"
    );
    assert_eq!(replicas(&old).0, 0, "{:?}", old.status);
    let progress =
        format!("Health check in progress: Deployment/{ns}/podinfo status: 'InProgress'");
    assert!(
        waiting.iter().all(|m| m.starts_with(&progress)),
        "{waiting:?}"
    );
    assert_ready_at(&rec, &v2);
}

#[test]
#[ignore = "needs KUBEBUILDER_ASSETS"]
fn a_bad_image_fails_the_check_at_its_progress_deadline_while_the_old_pods_serve() {
    let ns = plane().namespace_blocking("stuck");
    let remote = common::Remote::new();
    remote
        .write(&[("apps/podinfo.yaml", &podinfo(&ns, "podinfo:1.0.0"))])
        .push("good");
    let (setup, mut rec) = reconciler(&remote, &ns);
    rec.sync_once().unwrap();
    let (verdict, _) = until_checked(&mut rec, Duration::from_secs(120));
    assert_eq!(verdict, Verdict::Healthy);

    let image = format!("podinfo{}", envtest::FAILING_IMAGE);
    let bad = remote
        .write(&[("apps/podinfo.yaml", &podinfo(&ns, &image))])
        .push("bad");
    // The apply itself succeeds: only the check can tell the image is bad.
    rec.sync_once().unwrap();
    assert!(matches!(rec.health(), Some(Verdict::Waiting(_))));
    let (verdict, _) = until_checked(&mut rec, Duration::from_secs(150));
    let Verdict::Failed(message) = verdict else {
        panic!("{verdict:?}")
    };
    // The Deployment's own deadline ended it (not the 3-minute timeout), naming it.
    assert!(
        message.starts_with("health check failed after "),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "Deployment/{ns}/podinfo status: 'Failed': Progress deadline exceeded: ProgressDeadlineExceeded: ReplicaSet \"podinfo-"
        )) && message.ends_with("has timed out progressing."),
        "{message}"
    );
    assert!(!message.contains("timeout waiting for"), "{message}");
    common::assert_health_failure_reported(&rec, &setup, &message);
    assert_eq!(
        rec.status().applied_revision,
        Some(format!("main@sha1:{bad}")),
        "the revision was applied; its check failed"
    );
    // gitcanary does not roll back (Flux does not either): the cluster keeps Git's
    // spec, and Kubernetes keeps the last good Pods serving beside the stuck one.
    let (d, stuck) = live(&ns, &image);
    assert_eq!(d.status.as_ref().unwrap().available_replicas, Some(2));
    assert_eq!(replicas(&stuck).1, 0, "{:?}", stuck.status);
    let (_, good) = live(&ns, "podinfo:1.0.0");
    assert_eq!(replicas(&good), (2, 2), "{:?}", good.status);

    // The next sync of the failed revision checks again, and fails again at once.
    rec.sync_once().unwrap();
    assert!(
        matches!(rec.health(), Some(Verdict::Failed(m)) if m.contains("Progress deadline exceeded")),
        "{:?}",
        rec.health()
    );

    // A fix rolls out and the revision becomes ready.
    let fixed = remote
        .write(&[("apps/podinfo.yaml", &podinfo(&ns, "podinfo:1.0.2"))])
        .push("fix");
    rec.sync_once().unwrap();
    let (verdict, _) = until_checked(&mut rec, Duration::from_secs(120));
    assert_eq!(verdict, Verdict::Healthy);
    assert_rolled_out(&ns, "podinfo:1.0.2");
    assert_ready_at(&rec, &fixed);
}

/// gitcanary's reads (GET and LIST) of objects in `ns` since audit event `mark`, as
/// `verb resource code`.
fn reads_since(mark: usize, ns: &str) -> Vec<String> {
    plane()
        .audit_events()
        .into_iter()
        .skip(mark)
        .filter(|e| {
            e["userAgent"]
                .as_str()
                .is_some_and(|a| a.starts_with("gitcanary/"))
                && matches!(e["verb"].as_str(), Some("get" | "list"))
                && e["objectRef"]["namespace"] == ns
        })
        .map(|e| {
            format!(
                "{} {} {}",
                e["verb"].as_str().unwrap_or(""),
                e["objectRef"]["resource"].as_str().unwrap_or(""),
                e["responseStatus"]["code"]
            )
        })
        .collect()
}

const DEPLOYMENTS: usize = 30;

/// 30 Deployments (scaled to zero: no Pods), two LoadBalancer Services and a PVC.
fn many_workloads() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = (0..DEPLOYMENTS)
        .map(|i| {
            let d = fixture::deployment(&format!("web-{i}"), &format!("web-{i}"), "")
                .replace("spec:\n  selector:", "spec:\n  replicas: 0\n  selector:");
            (format!("web-{i}.yaml"), d)
        })
        .collect();
    for name in ["lb-a", "lb-b"] {
        files.push((
            format!("{name}.yaml"),
            format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: NS\nspec:\n  type: LoadBalancer\n  selector: {{app: web-0}}\n  ports:\n  - port: 80\n    protocol: TCP\n"),
        ));
    }
    files.push((
        "data.yaml".into(),
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\n  namespace: NS\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 1Gi\n".into(),
    ));
    files
}

#[test]
#[ignore = "needs KUBEBUILDER_ASSETS"]
fn a_health_poll_reads_each_kind_of_a_namespace_with_one_list() {
    let fx = fixture::Fixture::on(plane(), "reads", |_| {});
    let files = many_workloads();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    fx.files(&refs);
    fx.sync("c1").unwrap();
    let desired = fx.desired();
    let mut keys: Vec<ObjectKey> = desired
        .iter()
        .filter(|o| gitcanary::sync::health::watched(o))
        .map(|o| o.key.clone())
        .collect();
    assert_eq!(keys.len(), DEPLOYMENTS + 3);
    keys.push(ObjectKey::new("apps/v1", "Deployment", &fx.ns, "absent"));
    let health = |target: &gitcanary::targets::kube::KubeTarget| -> Vec<Option<Status>> {
        target
            .health_of(&keys)
            .into_iter()
            .map(|r| r.unwrap())
            .collect()
    };

    let mark = fx.mark();
    let statuses = health(&fx.target);
    let reads = reads_since(mark, &fx.ns);
    eprintln!(
        "one health poll of {} objects: {} requests: {reads:?}",
        keys.len(),
        reads.len()
    );
    // A LIST per kind with several objects, a GET for the lone PVC and for the object
    // the LIST did not return.
    let mut sorted = reads.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "get deployments 404",
            "get persistentvolumeclaims 200",
            "list deployments 200",
            "list services 200"
        ],
        "{reads:?}"
    );
    // Listed objects are judged by their kind's rules (items of a LIST carry no kind).
    let web = keys.iter().position(|k| k.name == "web-7").unwrap();
    let lb = keys.iter().position(|k| k.name == "lb-b").unwrap();
    let pvc = keys.iter().position(|k| k.name == "data").unwrap();
    assert_eq!(
        statuses[web].as_ref().unwrap().message,
        "Deployment is available. Replicas: 0"
    );
    assert_eq!(
        statuses[lb].as_ref().unwrap().message,
        "Pending external IP"
    );
    assert_eq!(
        statuses[pvc].as_ref().unwrap().message,
        "PVC is not Bound. phase: Pending"
    );
    assert_eq!(statuses.last().unwrap(), &None, "the absent Deployment");
    assert_eq!(
        statuses
            .iter()
            .filter(|s| s.as_ref().is_some_and(|s| s.health == Health::Current))
            .count(),
        DEPLOYMENTS
    );

    // `get objects` and the web UI judge the inventory's objects the same way.
    let state = tempfile::tempdir().unwrap();
    let view = gitcanary::ui::shapes::View {
        target: &fx.target,
        state_dir: state.path(),
    };
    let mark = fx.mark();
    let rows = gitcanary::ui::shapes::objects(view).unwrap();
    let reads = reads_since(mark, &fx.ns);
    let row = |name: &str| rows.iter().find(|r| r["name"] == name).unwrap().clone();
    assert_eq!(row("web-7")["health"], "Current");
    assert_eq!(row("lb-b")["healthMessage"], "Pending external IP");
    assert_eq!(row("data")["health"], "InProgress");
    assert!(
        !reads.contains(&"get deployments 200".to_string()) && reads.len() < 10,
        "the inventory and a LIST per kind, not a GET per object: {reads:?}"
    );

    // An object whose label someone removed is not listed, and is read by itself.
    fixture::merge_patch_as::<Deployment>(
        &fx,
        "kubectl-edit",
        "web-3",
        serde_json::json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}}),
    );
    let mark = fx.mark();
    assert_eq!(health(&fx.target), statuses);
    assert_eq!(reads_since(mark, &fx.ns).len(), 5, "one more GET");

    // Without `list` (RBAC), each object is read with a GET, with the same result.
    let limited = limited_reader(&fx);
    let mark = fx.mark();
    assert_eq!(health(&limited), statuses);
    let reads = reads_since(mark, &fx.ns);
    let refused = reads.iter().filter(|r| r.ends_with(" 403")).count();
    assert_eq!((refused, reads.len()), (2, 2 + keys.len()), "{reads:?}");
}

/// A target on `fx`'s inventory whose user (impersonated) may get, not list, the kinds
/// of [`many_workloads`] in its namespace.
fn limited_reader(fx: &fixture::Fixture) -> gitcanary::targets::kube::KubeTarget {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let (ns, user) = (fx.ns.clone(), "health-reader");
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": user},
        "rules": [
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["services", "persistentvolumeclaims"], "verbs": ["get"]}
        ]
    }))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    }))
    .unwrap();
    fx.other(async |c| {
        Api::<Role>::namespaced(c.clone(), &ns)
            .create(&Default::default(), &role)
            .await
            .unwrap();
        Api::<RoleBinding>::namespaced(c, &ns)
            .create(&Default::default(), &binding)
            .await
            .unwrap();
    });
    let admin = std::fs::read_to_string(&fx.plane.kubeconfig).unwrap();
    let kubeconfig = fx.plane.dir.join(format!("{ns}.kubeconfig"));
    std::fs::write(
        &kubeconfig,
        admin.replace("  user:\n", &format!("  user:\n    as: {user}\n")),
    )
    .unwrap();
    fx.reconnect(|cfg| cfg.kubeconfig = Some(kubeconfig))
}
