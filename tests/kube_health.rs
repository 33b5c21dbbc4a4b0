//! Revision health against real rollouts: the control plane with controllers
//! (kube-controller-manager turns Deployments into ReplicaSets and Pods) and
//! fake-kubelet.py (Pods are bound and become Ready, except those of `:bad` images), so
//! a Deployment rolls out, or gets stuck, as on a cluster. Each test takes its own
//! namespace.

mod common;
#[path = "common/envtest.rs"]
mod envtest;

use gitcanary::sync::health::Verdict;
use gitcanary::sync::reconcile::Reconciler;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Api, ListParams};
use std::time::{Duration, Instant};

fn plane() -> &'static envtest::ControlPlane {
    envtest::shared_with_controllers()
}

/// Runs `f` to completion on a throwaway runtime (the tests are synchronous).
fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
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
    let setup = common::Setup::new(&remote.bare.display().to_string(), "  timeout: 3m\n", "");
    setup.edit_config(
        "target:\n  local:\n    stateDir: ./state\n",
        &format!("{}    stateDir: ./state\n", plane().target_yaml(ns)),
    );
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
    assert!(rec.status().ready);
    assert_eq!(
        rec.status().message,
        format!("Applied revision: main@sha1:{v1}")
    );

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
    assert!(rec.status().ready);
    assert_eq!(
        rec.status().message,
        format!("Applied revision: main@sha1:{v2}")
    );
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
    assert!(rec.status().ready);
    assert_eq!(
        rec.status().message,
        format!("Applied revision: main@sha1:{fixed}")
    );
}
