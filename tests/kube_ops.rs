//! The Kubernetes target's runtime side against a real kube-apiserver (envtest): leader
//! election over a Lease, Helm hooks as cluster Jobs, and revision health. There is no
//! kubelet or Job controller here; the tests play them by writing status through the
//! status subresource. Each test takes its own namespace.

mod common;
#[path = "common/envtest.rs"]
mod envtest;

use envtest::block;
use gitcanary::helm::hooks::{Event, Hook};
use gitcanary::targets::kube::hooks::ClusterHooks;
use gitcanary::targets::kube::leader::{Election, Role};
use gitcanary::targets::kube::lease::Timing;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use std::time::{Duration, Instant};

/// A Job hook as a chart renders it.
fn job_hook(name: &str, event: &str, weight: i64, delete_policy: Option<&str>) -> Hook {
    let mut ann = json!({"helm.sh/hook": event, "helm.sh/hook-weight": weight.to_string()});
    if let Some(p) = delete_policy {
        ann["helm.sh/hook-delete-policy"] = p.into();
    }
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "annotations": ann},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox:1.36", "command": ["true"]}]}}}
    });
    Hook::from_object(&job, "templates/hooks.yaml")
        .unwrap()
        .unwrap()
}

/// Waits for `name` to exist and returns its uid.
async fn wait_for_job(jobs: &Api<Job>, name: &str) -> String {
    let start = Instant::now();
    loop {
        if let Some(j) = jobs.get_opt(name).await.unwrap() {
            return j.metadata.uid.unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "Job {name} never created"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Plays the Job controller: sets a finished condition through the status subresource.
async fn finish_job(jobs: &Api<Job>, name: &str, condition: &str) {
    let status = json!({"status": {
        "conditions": [{"type": condition, "status": "True", "reason": if condition == "Failed" { "BackoffLimitExceeded" } else { "Completed" },
            "message": if condition == "Failed" { "Job has reached the specified backoff limit" } else { "" },
            "lastProbeTime": "2026-12-01T00:00:00Z", "lastTransitionTime": "2026-12-01T00:00:00Z"}],
        "startTime": "2026-12-01T00:00:00Z",
    }});
    let status = if condition == "Complete" {
        let mut s = status;
        s["status"]["succeeded"] = 1.into();
        s["status"]["completionTime"] = "2026-12-01T00:00:01Z".into();
        s
    } else {
        status
    };
    jobs.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("status of Job {name}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KUBEBUILDER_ASSETS"]
async fn helm_hook_jobs_run_in_weight_order_and_honour_delete_policies() {
    let plane = envtest::shared();
    let client = plane.client().await;
    let ns = plane.namespace(&client, "hooks-order").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    // Given out of order: the runner takes them as sorted by the release record.
    let mut hooks = vec![
        job_hook("migrate", "pre-install", 5, None),
        job_hook("schema", "pre-install", -5, Some("hook-succeeded")),
    ];
    gitcanary::helm::hooks::sort_hooks(&mut hooks);
    let runner = ClusterHooks::new(client.clone(), tokio::runtime::Handle::current());
    let run = {
        let (hooks, ns) = (hooks.clone(), ns.clone());
        tokio::spawn(async move {
            let refs: Vec<&Hook> = hooks.iter().collect();
            runner
                .run(&refs, Event::PreInstall, &ns, Duration::from_secs(60))
                .await
        })
    };
    wait_for_job(&jobs, "schema").await;
    // The heavier hook waits for the lighter one to complete.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        jobs.get_opt("migrate").await.unwrap().is_none(),
        "migrate ran before schema completed"
    );
    finish_job(&jobs, "schema", "Complete").await;
    let first_uid = wait_for_job(&jobs, "migrate").await;
    finish_job(&jobs, "migrate", "Complete").await;
    let results = run.await.unwrap();
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results.iter().all(|r| r.ok), "{results:?}");
    assert_eq!(results[0].hook, "Job/schema");
    assert_eq!(results[1].message, "Job migrate completed");
    // hook-succeeded deleted schema; migrate (no policy: before-hook-creation) stays.
    assert!(jobs.get_opt("schema").await.unwrap().is_none());
    assert!(jobs.get_opt("migrate").await.unwrap().is_some());

    // The next upgrade replaces the leftover migrate Job before creating it again.
    let again = [job_hook("migrate", "pre-upgrade", 5, None)];
    let runner = ClusterHooks::new(client.clone(), tokio::runtime::Handle::current());
    let run = {
        let ns = ns.clone();
        tokio::spawn(async move {
            let refs: Vec<&Hook> = again.iter().collect();
            runner
                .run(&refs, Event::PreUpgrade, &ns, Duration::from_secs(60))
                .await
        })
    };
    let start = Instant::now();
    let second_uid = loop {
        let uid = wait_for_job(&jobs, "migrate").await;
        if uid != first_uid {
            break uid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "migrate never recreated"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(second_uid, first_uid);
    finish_job(&jobs, "migrate", "Complete").await;
    assert!(run.await.unwrap()[0].ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KUBEBUILDER_ASSETS"]
async fn a_failed_hook_job_stops_the_hooks_after_it_and_hook_failed_deletes_it() {
    let plane = envtest::shared();
    let client = plane.client().await;
    let ns = plane.namespace(&client, "hooks-fail").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let hooks = [
        job_hook("check", "pre-upgrade", 0, Some("hook-failed")),
        job_hook("after", "pre-upgrade", 1, None),
    ];
    let runner = ClusterHooks::new(client.clone(), tokio::runtime::Handle::current());
    let run = {
        let ns = ns.clone();
        tokio::spawn(async move {
            let refs: Vec<&Hook> = hooks.iter().collect();
            runner
                .run(&refs, Event::PreUpgrade, &ns, Duration::from_secs(60))
                .await
        })
    };
    wait_for_job(&jobs, "check").await;
    finish_job(&jobs, "check", "Failed").await;
    let results = run.await.unwrap();
    assert_eq!(
        results.len(),
        1,
        "the hook after a failure must not run: {results:?}"
    );
    assert!(!results[0].ok);
    assert_eq!(
        results[0].message,
        "job check failed: BackoffLimitExceeded: Job has reached the specified backoff limit"
    );
    assert!(
        jobs.get_opt("check").await.unwrap().is_none(),
        "hook-failed deletes it"
    );
    assert!(jobs.get_opt("after").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KUBEBUILDER_ASSETS"]
async fn a_hook_job_that_never_finishes_times_out_with_its_progress() {
    let plane = envtest::shared();
    let client = plane.client().await;
    let ns = plane.namespace(&client, "hooks-timeout").await;
    let hooks = [job_hook("slow", "post-install", 0, None)];
    let refs: Vec<&Hook> = hooks.iter().collect();
    let runner = ClusterHooks::new(client.clone(), tokio::runtime::Handle::current());
    let results = runner
        .run(&refs, Event::PostInstall, &ns, Duration::from_secs(1))
        .await;
    assert!(!results[0].ok);
    assert_eq!(
        results[0].message,
        "timed out waiting for the hook to finish: Job slow: active: 0, succeeded: 0, failed: 0"
    );
}

fn holder(lease: &Option<Lease>) -> Option<String> {
    lease
        .as_ref()
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.holder_identity.clone())
}

async fn wait_role(e: &Election, role: impl Fn(&Role) -> bool, limit: Duration) -> Duration {
    let start = Instant::now();
    while !role(&e.gate.role()) {
        assert!(start.elapsed() < limit, "role is still {:?}", e.gate.role());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KUBEBUILDER_ASSETS"]
async fn one_of_two_candidates_leads_and_a_released_lease_changes_hands_at_once() {
    let plane = envtest::shared();
    let client = plane.client().await;
    let ns = plane.namespace(&client, "election").await;
    let timing = Timing::default();
    let a = Election::start(client.clone(), &ns, "a".into(), timing).await;
    wait_role(&a, |r| *r == Role::Leader, Duration::from_secs(10)).await;
    let b = Election::start(client.clone(), &ns, "b".into(), timing).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(a.gate.role(), Role::Leader);
    assert_eq!(
        b.gate.role(),
        Role::Standby {
            holder: Some("a".into())
        }
    );
    assert!(b.gate.check().is_err() && a.gate.check().is_ok());
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let lease = leases.get_opt("gitcanary-leader-election").await.unwrap();
    assert_eq!(holder(&lease).as_deref(), Some("a"));
    assert_eq!(
        lease.unwrap().spec.unwrap().lease_duration_seconds,
        Some(10)
    );

    // A graceful stop releases the lease: b takes it at its next retry, not after 10 s.
    let gate_a = a.gate.clone();
    a.stop().await;
    assert!(
        gate_a.check().is_err(),
        "writes stop when the election stops"
    );
    let took = wait_role(&b, |r| *r == Role::Leader, Duration::from_secs(10)).await;
    assert!(
        took <= Duration::from_secs_f64(timing.retry_period + 1.0),
        "{took:?}"
    );
    let lease = leases.get_opt("gitcanary-leader-election").await.unwrap();
    assert_eq!(holder(&lease).as_deref(), Some("b"));
    assert_eq!(lease.unwrap().spec.unwrap().lease_transitions, Some(1));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KUBEBUILDER_ASSETS"]
async fn a_holder_that_sees_another_holder_stops_at_once() {
    let plane = envtest::shared();
    let client = plane.client().await;
    let ns = plane.namespace(&client, "election-renew").await;
    let timing = Timing::default();
    let a = Election::start(client.clone(), &ns, "a".into(), timing).await;
    wait_role(&a, |r| *r == Role::Leader, Duration::from_secs(10)).await;
    // Someone else rewrites the lease as if a took it over (a's renewals now fail
    // with a conflict or see another holder): a stops at once.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let patch = json!({"spec": {"holderIdentity": "intruder", "leaseDurationSeconds": 3600}});
    leases
        .patch(
            "gitcanary-leader-election",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let stopped = wait_role(&a, |r| *r != Role::Leader, Duration::from_secs(10)).await;
    assert!(
        stopped <= Duration::from_secs_f64(timing.retry_period + 1.0),
        "{stopped:?}"
    );
    assert!(a
        .gate
        .check()
        .unwrap_err()
        .to_string()
        .contains("held by intruder"));
    a.stop().await;
    let lease: Option<Lease> = leases.get_opt("gitcanary-leader-election").await.unwrap();
    assert_eq!(
        holder(&lease).as_deref(),
        Some("intruder"),
        "a standby releases nothing"
    );
}

/// A TCP forwarder to the API server that the test can cut, as a network partition.
struct Partition {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Partition {
    async fn start(upstream: String) -> Partition {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    return;
                };
                let mut cut_rx = cut_rx.clone();
                if *cut_rx.borrow() {
                    continue;
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = cut_rx.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Partition { addr, cut }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KUBEBUILDER_ASSETS"]
async fn a_holder_cut_off_from_the_api_server_stops_writing_before_its_lease_expires() {
    let plane = envtest::shared();
    let client = plane.client().await;
    let ns = plane.namespace(&client, "election-partition").await;
    let upstream = plane.url.trim_start_matches("https://").to_string();
    let partition = Partition::start(upstream).await;
    let mut config = gitcanary::targets::kube::client::config(&plane.target(&ns), &plane.dir)
        .await
        .unwrap();
    config.cluster_url = format!("https://{}", partition.addr).parse().unwrap();
    let cut_off = kube::Client::try_from(config).unwrap();
    let timing = Timing::default();
    let a = Election::start(cut_off, &ns, "a".into(), timing).await;
    wait_role(&a, |r| *r == Role::Leader, Duration::from_secs(10)).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    // Cut right after a renewal, so the deadlines below count from it.
    let renewed = leases
        .get("gitcanary-leader-election")
        .await
        .unwrap()
        .spec
        .unwrap()
        .renew_time;
    while leases
        .get("gitcanary-leader-election")
        .await
        .unwrap()
        .spec
        .unwrap()
        .renew_time
        == renewed
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last_renewal = Instant::now();
    partition.cut.send(true).unwrap();
    let b = Election::start(client.clone(), &ns, "b".into(), timing).await;
    let mut a_stopped = None;
    while b.gate.role() != Role::Leader {
        if a_stopped.is_none() && a.gate.check().is_err() {
            a_stopped = Some(last_renewal.elapsed());
        }
        assert!(
            last_renewal.elapsed() < Duration::from_secs(20),
            "b never took over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b_took = last_renewal.elapsed();
    let a_stopped = a_stopped.expect("a stopped writing before b took over");
    eprintln!(
        "a stopped writing {a_stopped:?} after its last renewal; b took over after {b_took:?}"
    );
    // a stops at its renew deadline, counted from before its last renewal request
    // (plus this loop's polling lag), well before b may take over.
    assert!(
        a_stopped <= Duration::from_secs_f64(timing.renew_deadline + 0.25),
        "{a_stopped:?}"
    );
    assert!(
        b_took - a_stopped >= Duration::from_secs(2),
        "{a_stopped:?} {b_took:?}"
    );
    assert!(
        a_stopped >= Duration::from_secs_f64(timing.renew_deadline - timing.retry_period - 0.5),
        "{a_stopped:?}"
    );
    assert!(
        b_took >= Duration::from_secs_f64(timing.lease_duration),
        "{b_took:?}"
    );
    assert!(b_took < Duration::from_secs(15), "{b_took:?}");
    assert!(a.gate.check().is_err());
    b.stop().await;
    // a cannot release a lease it lost: stopping it must not hang past its timeouts.
    tokio::time::timeout(Duration::from_secs(10), a.stop())
        .await
        .unwrap();
}

/// A gitcanary config that follows `remote` into the shared control plane, keeping its
/// inventory and lease in `ns`.
fn kube_setup(remote: &common::Remote, ns: &str, source_extra: &str, rest: &str) -> common::Setup {
    envtest::shared().setup(remote, ns, source_extra, rest)
}

fn configmap_value(ns: &str, name: &str) -> Option<String> {
    use k8s_openapi::api::core::v1::ConfigMap;
    block(async {
        let client = envtest::shared().client().await;
        Api::<ConfigMap>::namespaced(client, ns)
            .get_opt(name)
            .await
            .unwrap()
            .and_then(|cm| cm.data?.get("key").cloned())
    })
}

fn lease_holder(ns: &str) -> Option<String> {
    block(async {
        let client = envtest::shared().client().await;
        holder(
            &Api::<Lease>::namespaced(client, ns)
                .get_opt("gitcanary-leader-election")
                .await
                .unwrap(),
        )
    })
}

#[test]
#[ignore = "needs KUBEBUILDER_ASSETS"]
fn leader_failover_between_two_gitcanary_processes() {
    use common::{wait_for, Remote};
    let plane = envtest::shared();
    let ns = plane.namespace_blocking("failover");
    let cm = |v: &str| {
        common::configmap("app-config", v).replace("namespace: test", &format!("namespace: {ns}"))
    };
    let remote = Remote::new();
    remote.write(&[("apps/cm.yaml", &cm("v1"))]).push("v1");
    let a = kube_setup(&remote, &ns, "  interval: 1s\n", "");
    let b = kube_setup(&remote, &ns, "  interval: 1s\n", "");
    let run_a = a.spawn_run(&[("HOSTNAME", "gitcanary-a")]);
    wait_for(Duration::from_secs(30), || {
        (configmap_value(&ns, "app-config")? == "v1").then_some(())
    })
    .expect("the first replica applies the first revision");
    assert!(lease_holder(&ns).unwrap().starts_with("gitcanary-a_"));

    let run_b = b.spawn_run(&[("HOSTNAME", "gitcanary-b")]);
    let b_addr = b.server_address();
    let message = wait_for(Duration::from_secs(20), || {
        let m = b.status()["message"].as_str()?.to_string();
        m.contains("is held by gitcanary-a_").then_some(m)
    })
    .expect("the second replica records that it is a standby");
    assert!(
        message.starts_with(&format!(
            "standby: Lease {ns}/gitcanary-leader-election is held by gitcanary-a_"
        )),
        "{message}"
    );
    let (code, _, body) = common::http_request(&b_addr, "GET", "/readyz", &[], b"");
    assert_eq!(
        (code, String::from_utf8_lossy(&body).as_ref()),
        (200, "ok\n"),
        "a standby is ready"
    );
    let out = b.cmd(&["get", "sources"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("standby: Lease"),
        "{out:?}"
    );

    // While a leads, only a applies: b has never synced.
    remote.write(&[("apps/cm.yaml", &cm("v2"))]).push("v2");
    wait_for(Duration::from_secs(30), || {
        (configmap_value(&ns, "app-config")? == "v2").then_some(())
    })
    .expect("the leader applies a change");
    assert!(b.status()["appliedRevision"].is_null(), "{}", b.status());

    // The leader dies (SIGKILL: no release). b takes the lease and applies the next change.
    drop(run_a);
    let killed = Instant::now();
    let v3 = remote.write(&[("apps/cm.yaml", &cm("v3"))]).push("v3");
    wait_for(Duration::from_secs(30), || {
        lease_holder(&ns)?.starts_with("gitcanary-b_").then_some(())
    })
    .expect("the standby takes the lease");
    let took_over = killed.elapsed();
    wait_for(Duration::from_secs(30), || {
        (configmap_value(&ns, "app-config")? == "v3").then_some(())
    })
    .expect("the new leader applies the change");
    let applied = killed.elapsed();
    eprintln!("failover: lease taken {took_over:?} and v3 applied {applied:?} after the leader was killed");
    assert!(took_over < Duration::from_secs(15), "{took_over:?}");
    wait_for(Duration::from_secs(10), || {
        (b.status()["message"] == format!("Applied revision: main@sha1:{v3}")).then_some(())
    })
    .unwrap_or_else(|| panic!("{}", b.status()));
    // A graceful stop releases the lease for the next replica.
    let (status, stderr) = run_b.stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(lease_holder(&ns).as_deref(), Some(""));
}

#[test]
#[ignore = "needs KUBEBUILDER_ASSETS"]
fn one_shot_commands_refuse_to_write_beside_a_leader_and_hold_the_lease_otherwise() {
    use common::{wait_for, Remote};
    let ns = envtest::shared().namespace_blocking("oneshot");
    let cm = |v: &str| {
        common::configmap("app-config", v).replace("namespace: test", &format!("namespace: {ns}"))
    };
    let remote = Remote::new();
    remote.write(&[("apps/cm.yaml", &cm("v1"))]).push("v1");
    let a = kube_setup(&remote, &ns, "", "");
    let run_a = a.spawn_run(&[("HOSTNAME", "gitcanary-a")]);
    wait_for(Duration::from_secs(30), || {
        (configmap_value(&ns, "app-config")? == "v1").then_some(())
    })
    .expect("the leader applies the first revision");
    let leader = lease_holder(&ns).unwrap();
    assert!(leader.starts_with("gitcanary-a_"), "{leader}");

    let b = kube_setup(&remote, &ns, "", "");
    for args in [&["sync", "--once"][..], &["helm", "test", "podinfo"]] {
        let out = b.cmd(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "Lease {ns}/gitcanary-leader-election is held by {leader}: that gitcanary is the leader"
            )),
            "{args:?}: {stderr}"
        );
    }
    // b wrote nothing: it never got as far as fetching.
    assert!(b.status()["appliedRevision"].is_null(), "{}", b.status());
    assert_eq!(lease_holder(&ns).as_deref(), Some(leader.as_str()));

    // Without a leader, the one-shot sync takes the lease, applies, and hands it back.
    let (status, stderr) = run_a.stop();
    assert!(status.success(), "{stderr}");
    remote.write(&[("apps/cm.yaml", &cm("v2"))]).push("v2");
    let out = b.cmd(&["sync", "--once"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(configmap_value(&ns, "app-config").as_deref(), Some("v2"));
    assert_eq!(lease_holder(&ns).as_deref(), Some(""));
}

fn podinfo(ns: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\n  namespace: {ns}\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: podinfo\n  template:\n    metadata:\n      labels:\n        app: podinfo\n    spec:\n      containers:\n        - name: app\n          image: {image}\n"
    )
}

fn live_deployment(ns: &str, name: &str) -> Option<k8s_openapi::api::apps::v1::Deployment> {
    block(async {
        let client = envtest::shared().client().await;
        Api::namespaced(client, ns).get_opt(name).await.unwrap()
    })
}

/// Plays the Deployment controller: reports the current generation rolled out and
/// available, through the status subresource.
fn mark_available(ns: &str, name: &str) {
    use k8s_openapi::api::apps::v1::Deployment;
    let generation = live_deployment(ns, name)
        .unwrap()
        .metadata
        .generation
        .unwrap();
    let status = json!({"status": {"observedGeneration": generation, "replicas": 1,
        "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
        "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
            "message": "Deployment has minimum availability.",
            "lastUpdateTime": "2026-12-01T00:00:00Z", "lastTransitionTime": "2026-12-01T00:00:00Z"}]}});
    block(async {
        let client = envtest::shared().client().await;
        Api::<Deployment>::namespaced(client, ns)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    });
}

fn image_of(ns: &str, name: &str) -> Option<String> {
    live_deployment(ns, name)?.spec?.template.spec?.containers[0]
        .image
        .clone()
}

#[test]
#[ignore = "needs KUBEBUILDER_ASSETS"]
fn a_revision_is_ready_once_its_deployment_is_available() {
    use gitcanary::sync::health::Verdict;
    use gitcanary::sync::reconcile::Reconciler;
    let ns = envtest::shared().namespace_blocking("health");
    let remote = common::Remote::new();
    let rev = remote
        .write(&[("apps/podinfo.yaml", &podinfo(&ns, "podinfo:1.0.0"))])
        .push("seed");
    let setup = kube_setup(&remote, &ns, "  timeout: 2m\n", "");
    let cfg = gitcanary::config::Config::load(&setup.config).unwrap();
    let mut rec = Reconciler::open(cfg, true).unwrap();
    rec.sync_once().unwrap();
    assert_eq!(
        rec.health(),
        Some(&Verdict::Waiting(format!(
            "Health check in progress: Deployment/{ns}/podinfo status: 'InProgress': Updated: 0/1"
        )))
    );
    assert!(!rec.status().ready);
    let out = setup.cmd(&["get", "sources"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("False") && table.contains("Health check in progress"),
        "{table}"
    );

    mark_available(&ns, "podinfo");
    let now = gitcanary::util::time::unix_now();
    assert_eq!(rec.check_health(now).unwrap(), Some(&Verdict::Healthy));
    assert!(rec.status().ready);
    assert_eq!(
        rec.status().message,
        format!("Applied revision: main@sha1:{rev}")
    );
    let out = setup.cmd(&["get", "sources", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["ready"], true, "{json}");
}

#[test]
#[ignore = "needs KUBEBUILDER_ASSETS"]
fn an_unhealthy_revision_is_reported_and_does_not_block_the_next_one() {
    use gitcanary::sync::health::Verdict;
    use gitcanary::sync::reconcile::Reconciler;
    let ns = envtest::shared().namespace_blocking("health-cancel");
    let remote = common::Remote::new();
    remote
        .write(&[("apps/podinfo.yaml", &podinfo(&ns, "podinfo:bad"))])
        .push("bad");
    let setup = kube_setup(&remote, &ns, "  timeout: 3s\n", "");
    let cfg = gitcanary::config::Config::load(&setup.config).unwrap();
    let mut rec = Reconciler::open(cfg, true).unwrap();
    rec.sync_once().unwrap();
    assert!(matches!(rec.health(), Some(Verdict::Waiting(_))));

    // A fix arrives while the check still waits: it is applied at once, and the check
    // now follows the new revision (CancelHealthCheckOnNewRevision).
    let fixed = remote
        .write(&[("apps/podinfo.yaml", &podinfo(&ns, "podinfo:1.0.1"))])
        .push("fix");
    let started = Instant::now();
    rec.sync_once().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the sync waited for the old check"
    );
    assert_eq!(image_of(&ns, "podinfo").as_deref(), Some("podinfo:1.0.1"));
    assert_eq!(
        rec.status().applied_revision,
        Some(format!("main@sha1:{fixed}"))
    );
    assert!(matches!(rec.health(), Some(Verdict::Waiting(_))));

    // Nothing marks it available: after the timeout it fails, naming the object.
    std::thread::sleep(Duration::from_millis(3100));
    let verdict = rec
        .check_health(gitcanary::util::time::unix_now())
        .unwrap()
        .cloned();
    let Some(Verdict::Failed(message)) = verdict else {
        panic!("{verdict:?}")
    };
    assert!(
        message.starts_with("health check failed after 3."),
        "{message}"
    );
    assert!(
        message.ends_with(&format!(
            "timeout waiting for: [Deployment/{ns}/podinfo status: 'InProgress': Updated: 0/1]"
        )),
        "{message}"
    );
    common::assert_health_failure_reported(&rec, &setup, &message);

    // Once it becomes available, the next sync of the same revision checks again.
    mark_available(&ns, "podinfo");
    rec.sync_once().unwrap();
    assert_eq!(rec.health(), Some(&Verdict::Healthy));
    assert!(rec.status().ready);
}

#[test]
#[ignore = "needs KUBEBUILDER_ASSETS"]
fn image_automation_bumps_a_tag_that_lands_in_the_clusters_deployment() {
    use common::{wait_for, Registry, Remote};
    let ns = envtest::shared().namespace_blocking("images");
    let reg = Registry::start(None);
    reg.push_tag("team/live", "1.0.0", "2024-01-01T00:00:00Z");
    let image = |tag: &str| format!("{}/team/live:{tag}", reg.addr);
    let deploy = podinfo(
        &ns,
        &format!("{} # {{\"$imagepolicy\": \"{ns}:live\"}}", image("1.0.0")),
    );
    let policy = format!(
        "apiVersion: image.toolkit.fluxcd.io/v1beta2\nkind: ImageRepository\nmetadata:\n  name: live\n  namespace: {ns}\nspec:\n  image: {}/team/live\n  interval: 1s\n---\napiVersion: image.toolkit.fluxcd.io/v1beta2\nkind: ImagePolicy\nmetadata:\n  name: live\n  namespace: {ns}\nspec:\n  imageRepositoryRef:\n    name: live\n  policy:\n    semver:\n      range: \"^1.0\"\n---\napiVersion: image.toolkit.fluxcd.io/v1beta2\nkind: ImageUpdateAutomation\nmetadata:\n  name: auto\n  namespace: {ns}\nspec:\n  interval: 1m\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n  git:\n    checkout:\n      ref:\n        branch: main\n    push:\n      branch: main\n  update:\n    path: ./apps\n    strategy: Setters\n",
        reg.addr
    );
    let remote = Remote::new();
    remote
        .write(&[
            ("apps/podinfo.yaml", &deploy),
            ("images/live.yaml", &policy),
        ])
        .push("seed");
    let setup = kube_setup(
        &remote,
        &ns,
        "  interval: 1h\n",
        "images:\n  interval: 1s\n",
    );
    let running = setup.spawn_run(&[]);
    wait_for(Duration::from_secs(30), || image_of(&ns, "podinfo"))
        .expect("the first sync creates the Deployment in the cluster");
    assert_eq!(image_of(&ns, "podinfo"), Some(image("1.0.0")));

    reg.push_tag("team/live", "1.1.0", "2024-01-02T00:00:00Z");
    let bumped = wait_for(Duration::from_secs(30), || {
        (image_of(&ns, "podinfo")? == image("1.1.0")).then_some(())
    });
    if bumped.is_none() {
        let (_, stderr) = running.stop();
        panic!("the new tag is not in the cluster's Deployment:\n{stderr}");
    }
    let subject = common::git(&remote.bare, &["log", "-1", "--format=%s", "main"]);
    assert!(subject.contains(&image("1.1.0")), "{subject}");
    // The ImageRepository and ImagePolicy are inputs, not cluster objects.
    let (status, stderr) = running.stop();
    assert!(status.success(), "{stderr}");
}

fn pod_hook(name: &str, event: &str) -> Hook {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": {"helm.sh/hook": event}},
        "spec": {"restartPolicy": "Never",
            "containers": [{"name": "test", "image": "busybox:1.36", "command": ["wget", "podinfo:9898"]}]}
    });
    Hook::from_object(&pod, "templates/tests/test.yaml")
        .unwrap()
        .unwrap()
}

/// Plays the kubelet: the Pod ends in `phase`.
async fn finish_pod(client: &kube::Client, ns: &str, name: &str, phase: &str) {
    use k8s_openapi::api::core::v1::Pod;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    while pods.get_opt(name).await.unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "Pod {name} never created"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": phase}})),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KUBEBUILDER_ASSETS"]
async fn helm_test_pods_run_in_the_cluster_and_a_test_failure_hook_passes_when_its_pod_fails() {
    let plane = envtest::shared();
    let client = plane.client().await;
    let ns = plane.namespace(&client, "helm-test").await;
    let run = |hooks: Vec<Hook>, event: Event| {
        let runner = ClusterHooks::new(client.clone(), tokio::runtime::Handle::current());
        let ns = ns.clone();
        tokio::spawn(async move {
            let refs: Vec<&Hook> = hooks.iter().collect();
            runner.run(&refs, event, &ns, Duration::from_secs(60)).await
        })
    };
    let test = run(vec![pod_hook("podinfo-test", "test")], Event::Test);
    finish_pod(&client, &ns, "podinfo-test", "Succeeded").await;
    let results = test.await.unwrap();
    assert!(results[0].ok, "{results:?}");
    assert_eq!(results[0].message, "Pod podinfo-test succeeded");

    let expected_to_fail = run(
        vec![pod_hook("must-fail", "test-failure")],
        Event::TestFailure,
    );
    finish_pod(&client, &ns, "must-fail", "Failed").await;
    let results = expected_to_fail.await.unwrap();
    assert!(
        results[0].ok,
        "a test-failure hook passes when its Pod fails: {results:?}"
    );

    let failing = run(vec![pod_hook("broken", "test")], Event::Test);
    finish_pod(&client, &ns, "broken", "Failed").await;
    let results = failing.await.unwrap();
    assert!(!results[0].ok);
    assert_eq!(results[0].message, "pod broken failed");
}
