//! The Kubernetes target against a real kube-apiserver (envtest): each test takes its
//! own namespace, for its objects and its inventory, on the control plane this binary
//! shares. Writes are counted in the API server's audit log.

mod common;
#[path = "common/envtest.rs"]
mod envtest;
#[path = "common/kube_fixture.rs"]
mod fixture;

use fixture::*;
use gitcanary::manifest::ObjectKey;
use gitcanary::targets::DiffAction;
use serde_json::json;

#[tokio::test]
#[ignore = "needs KUBEBUILDER_ASSETS"]
async fn the_client_reaches_the_api_server_through_the_kubeconfig() {
    use k8s_openapi::api::core::v1::Namespace;
    let plane = envtest::shared();
    let client = plane.client().await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
    let ns = plane.namespace(&client, "smoke").await;
    let got = kube::Api::<Namespace>::all(client.clone())
        .get(&ns)
        .await
        .unwrap();
    assert_eq!(got.metadata.name.as_deref(), Some(ns.as_str()));
    // The create went through gitcanary's client, so the audit log names it.
    let writes = plane.gitcanary_writes(0);
    assert!(
        writes.contains(&format!("create namespaces//{ns}")),
        "{writes:?}"
    );
}

#[test]
#[ignore = "needs KUBEBUILDER_ASSETS"]
fn create_change_prune_and_a_noop_resync_with_zero_writes() {
    let fx = Fixture::new("lifecycle");
    fx.files(&[
        ("a.yaml", &cm("a", "  k: one\n")),
        ("b.yaml", &cm("b", "  k: two\n")),
        ("web.yaml", &deployment("web", "web", "")),
    ]);
    let r = fx.sync("c1").unwrap();
    assert_eq!((r.created, r.updated, r.pruned), (3, 0, 0));
    let a = fx.get("v1", "ConfigMap", "a").unwrap();
    assert_eq!(a["data"]["k"], "one");
    assert_eq!(
        a["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "gitcanary"
    );
    assert_eq!(
        a["metadata"]["annotations"]["gitcanary.io/revision"],
        "main@sha1:c1"
    );
    let managers: Vec<&str> = a["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, ["gitcanary"]);

    // A change: one object written, the others keep their revision.
    fx.files(&[
        ("a.yaml", &cm("a", "  k: changed\n")),
        ("b.yaml", &cm("b", "  k: two\n")),
        ("web.yaml", &deployment("web", "web", "")),
    ]);
    let mark = fx.mark();
    let r = fx.sync("c2").unwrap();
    assert_eq!((r.created, r.updated, r.unchanged), (0, 1, 2));
    let a = fx.get("v1", "ConfigMap", "a").unwrap();
    assert_eq!(a["data"]["k"], "changed");
    assert_eq!(
        a["metadata"]["annotations"]["gitcanary.io/revision"],
        "main@sha1:c2"
    );
    let b = fx.get("v1", "ConfigMap", "b").unwrap();
    assert_eq!(
        b["metadata"]["annotations"]["gitcanary.io/revision"],
        "main@sha1:c1"
    );
    let writes = fx.writes_since(mark);
    assert!(
        writes.contains(&format!("patch configmaps/{}/a", fx.ns)),
        "{writes:?}"
    );
    assert!(
        !writes
            .iter()
            .any(|w| w.ends_with("/b") || w.ends_with("/web")),
        "{writes:?}"
    );

    // A prune: the object leaves the cluster and the inventory.
    fx.files(&[
        ("a.yaml", &cm("a", "  k: changed\n")),
        ("web.yaml", &deployment("web", "web", "")),
    ]);
    let r = fx.sync("c3").unwrap();
    assert_eq!(r.pruned, 1);
    assert!(fx.get("v1", "ConfigMap", "b").is_none());
    assert!(!fx
        .target
        .read()
        .unwrap()
        .entries
        .keys()
        .any(|k| k.name == "b"));

    // The same revision again: nothing is written, not even the inventory.
    let mark = fx.mark();
    let r = fx.sync("c4").unwrap();
    assert_eq!((r.created, r.updated, r.pruned, r.writes), (0, 0, 0, 0));
    assert_eq!(fx.writes_since(mark), Vec::<String>::new());
    assert_eq!(
        fx.get("v1", "ConfigMap", "a").unwrap()["metadata"]["annotations"]["gitcanary.io/revision"],
        "main@sha1:c2"
    );
}

#[test]
#[ignore = "needs KUBEBUILDER_ASSETS"]
fn a_conflict_names_manager_and_field_applies_the_rest_and_force_takes_ownership() {
    let fx = Fixture::new("conflict");
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "shared", "namespace": fx.ns}, "data": {"k": "theirs"}});
    apply_as(&fx, "other-tool", body);
    fx.files(&[
        ("shared.yaml", &cm("shared", "  k: ours\n")),
        ("mine.yaml", &cm("mine", "  k: v\n")),
    ]);
    let e = fx.sync("c1").unwrap_err().to_string();
    assert!(e.contains("1 of 2 objects not applied"), "{e}");
    assert!(
        e.contains("shared.yaml: ConfigMap/")
            && e.contains(".data.k is owned by field manager \"other-tool\""),
        "{e}"
    );
    assert!(e.contains("gitcanary.io/force"), "{e}");
    // The rest of the revision is applied.
    assert_eq!(fx.get("v1", "ConfigMap", "mine").unwrap()["data"]["k"], "v");
    assert_eq!(
        fx.get("v1", "ConfigMap", "shared").unwrap()["data"]["k"],
        "theirs"
    );

    // The annotation takes ownership of this object.
    fx.files(&[
        (
            "shared.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\n  namespace: NS\n  annotations: {gitcanary.io/force: \"true\"}\ndata:\n  k: ours\n",
        ),
        ("mine.yaml", &cm("mine", "  k: v\n")),
    ]);
    fx.sync("c2").unwrap();
    let shared = fx.get("v1", "ConfigMap", "shared").unwrap();
    assert_eq!(shared["data"]["k"], "ours");

    // `force: true` in the config does it for every object.
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "mine", "namespace": fx.ns}, "data": {"k": "theirs"}});
    apply_as(&fx, "other-tool", body);
    fx.files(&[("mine.yaml", &cm("mine", "  k: again\n"))]);
    let forced = fx.reconnect(|c| c.force = true);
    sync_with(&forced, &fx.desired(), "c3").unwrap();
    assert_eq!(
        fx.get("v1", "ConfigMap", "mine").unwrap()["data"]["k"],
        "again"
    );
}

#[test]
#[ignore = "needs KUBEBUILDER_ASSETS"]
fn an_immutable_field_is_reported_and_recreated_only_with_force() {
    let fx = Fixture::new("immutable");
    fx.files(&[("web.yaml", &deployment("web", "one", ""))]);
    fx.sync("c1").unwrap();
    let uid = fx.get("apps/v1", "Deployment", "web").unwrap()["metadata"]["uid"].clone();

    fx.files(&[("web.yaml", &deployment("web", "two", ""))]);
    let e = fx.sync("c2").unwrap_err().to_string();
    assert!(e.contains("web.yaml: Deployment/"), "{e}");
    assert!(
        e.contains("immutable field changed") && e.contains("spec.selector"),
        "{e}"
    );
    assert!(
        e.contains("annotate gitcanary.io/force: \"true\" to delete and recreate it"),
        "{e}"
    );
    let live = fx.get("apps/v1", "Deployment", "web").unwrap();
    assert_eq!(live["spec"]["selector"]["matchLabels"]["app"], "one");
    // The failed update stays pending: the next sync tries it again.
    assert!(fx.sync("c2").is_err());

    fx.files(&[(
        "web.yaml",
        &deployment("web", "two", "gitcanary.io/force: \"true\""),
    )]);
    fx.sync("c3").unwrap();
    let live = fx.get("apps/v1", "Deployment", "web").unwrap();
    assert_eq!(live["spec"]["selector"]["matchLabels"]["app"], "two");
    assert_ne!(live["metadata"]["uid"], uid, "deleted and recreated");
}

#[test]
#[ignore = "needs KUBEBUILDER_ASSETS"]
fn drift_is_found_by_dry_run_and_corrected_on_the_next_sync() {
    let fx = Fixture::new("drift");
    fx.files(&[
        ("a.yaml", &cm("a", "  k: one\n  extra: x\n")),
        ("b.yaml", &cm("b", "  k: two\n")),
    ]);
    fx.sync("c1").unwrap();
    // Someone removes a field gitcanary applied.
    edit_as(&fx, "kubectl-edit", "a", json!({"data": {"extra": null}}));
    assert!(fx.get("v1", "ConfigMap", "a").unwrap()["data"]
        .get("extra")
        .is_none());
    let before = drift_count();
    let mark = fx.mark();
    let r = fx.sync("c1").unwrap();
    assert_eq!((r.created, r.updated, r.writes), (0, 0, 1));
    assert_eq!(
        fx.get("v1", "ConfigMap", "a").unwrap()["data"]["extra"],
        "x"
    );
    assert_eq!(
        fx.writes_since(mark),
        [format!("patch configmaps/{}/a", fx.ns)]
    );
    assert_eq!(drift_count(), before + 1.0);

    // A value another manager now owns is a conflict, taken back only with force.
    edit_as(&fx, "kubectl-edit", "b", json!({"data": {"k": "edited"}}));
    let e = fx.sync("c1").unwrap_err().to_string();
    assert!(
        e.contains(".data.k is owned by field manager \"kubectl-edit\""),
        "{e}"
    );
    let forced = fx.reconnect(|c| c.force = true);
    sync_with(&forced, &fx.desired(), "c1").unwrap();
    assert_eq!(fx.get("v1", "ConfigMap", "b").unwrap()["data"]["k"], "two");
}

fn drift_count() -> f64 {
    gitcanary::metrics::global()
        .render()
        .lines()
        .filter(|l| l.starts_with("gitcanary_kube_drift_corrected_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
#[ignore = "needs KUBEBUILDER_ASSETS"]
fn a_new_process_reads_the_inventory_from_the_cluster_and_prunes() {
    let fx = Fixture::new("restart");
    let many: Vec<(String, String)> = (0..40)
        .map(|i| (format!("cm{i}.yaml"), cm(&format!("cm{i}"), "  k: v\n")))
        .collect();
    let refs: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    fx.files(&refs);
    fx.sync("c1").unwrap();
    // A new target with nothing on disk: the inventory comes from the ConfigMap.
    let fresh = fx.reconnect(|_| {});
    let inv = fresh.read().unwrap();
    assert_eq!(inv.entries.len(), 40);
    assert!(inv
        .entries
        .values()
        .all(|e| e.live && e.revision == "main@sha1:c1"));
    fx.files(&refs[..30]);
    let r = sync_with(&fresh, &fx.desired(), "c2").unwrap();
    assert_eq!((r.pruned, r.unchanged), (10, 30));
    assert!(fresh
        .get_object(&ObjectKey::new("v1", "ConfigMap", &fx.ns, "cm35"))
        .unwrap()
        .is_none());
    // An object deleted behind gitcanary's back is created again.
    let ns = fx.ns.clone();
    fx.other(async move |c| {
        kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(c, &ns)
            .delete("cm3", &Default::default())
            .await
            .unwrap();
    });
    let r = sync_with(&fresh, &fx.desired(), "c2").unwrap();
    assert_eq!(r.created, 1);
}

#[test]
#[ignore = "needs KUBEBUILDER_ASSETS"]
fn a_dry_run_preview_shows_changes_and_writes_nothing() {
    let fx = Fixture::new("preview");
    fx.files(&[
        ("a.yaml", &cm("a", "  k: one\n")),
        ("b.yaml", &cm("b", "  k: two\n")),
    ]);
    fx.sync("c1").unwrap();
    fx.files(&[
        ("a.yaml", &cm("a", "  k: changed\n")),
        ("c.yaml", &cm("c", "  k: new\n")),
    ]);
    let mark = fx.mark();
    let desired = fx.desired();
    let inv = fx.target.read().unwrap();
    let changes = fx.target.dry_run_diff(&desired, &inv).unwrap();
    let got: Vec<(&str, DiffAction)> = changes
        .iter()
        .map(|c| (c.key.name.as_str(), c.action))
        .collect();
    assert_eq!(
        got,
        [
            ("a", DiffAction::Update),
            ("c", DiffAction::Create),
            ("b", DiffAction::Delete)
        ]
    );
    assert_eq!(changes[0].before.as_ref().unwrap()["data"]["k"], "one");
    let after = changes[0].after.as_ref().unwrap();
    assert_eq!(after["data"]["k"], "changed");
    assert!(after["metadata"].get("managedFields").is_none());
    assert!(changes[1].before.is_none());
    assert_eq!(fx.writes_since(mark), Vec::<String>::new());
    assert!(fx.get("v1", "ConfigMap", "c").is_none());
    assert!(fx.get("v1", "ConfigMap", "b").is_some());
}

#[test]
#[ignore = "needs KUBEBUILDER_ASSETS"]
fn flux_inputs_are_consumed_not_applied() {
    let fx = Fixture::new("consumed");
    fx.files(&[
        ("a.yaml", &cm("a", "  k: one\n")),
        (
            "repo.yaml",
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: repo\n  namespace: NS\nspec:\n  url: https://example.com/repo.git\n  interval: 1m\n",
        ),
    ]);
    let r = fx.sync("c1").unwrap();
    assert_eq!(r.created, 1);
    let inv = fx.target.read().unwrap();
    assert!(inv.entries.keys().any(|k| k.kind == "GitRepository"));
    let mark = fx.mark();
    let r = fx.sync("c1").unwrap();
    assert_eq!((r.created, r.writes), (0, 0));
    assert_eq!(fx.writes_since(mark), Vec::<String>::new());
}

/// A config for the binary: `url` synced to the cluster, inventory in `ns`.
fn kube_setup(plane: &envtest::ControlPlane, url: &str, ns: &str) -> common::Setup {
    let setup = common::Setup::new(url, "", "");
    std::fs::write(
        &setup.config,
        format!(
            "source:\n  url: {url}\n{}server:\n  listen: 127.0.0.1:0\n",
            plane.target_yaml(ns)
        ),
    )
    .unwrap();
    setup
}

#[test]
#[ignore = "needs KUBEBUILDER_ASSETS"]
fn the_cli_syncs_a_cluster_diffs_by_dry_run_and_a_fresh_process_prunes() {
    let plane = envtest::shared();
    let ns = plane.namespace_blocking("cli");
    let remote = common::Remote::new();
    let cm = |name: &str, v: &str| cm(name, &format!("  k: {v}\n")).replace("NS", &ns);
    remote.write(&[("a.yaml", &cm("a", "one")), ("b.yaml", &cm("b", "two"))]);
    let first = remote.push("first");
    let url = format!("file://{}", remote.bare.display());
    let setup = kube_setup(plane, &url, &ns);
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    assert!(out.contains("2 created"), "{out}");

    // `diff`: 0 when in sync, 1 with the dry run's changes, nothing written.
    let diff = |s: &common::Setup| {
        let o = s.cmd(&["diff"]);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    assert_eq!(diff(&setup), (Some(0), String::new()));
    remote
        .write(&[("a.yaml", &cm("a", "changed"))])
        .remove("b.yaml");
    remote.push("second");
    let mark = plane.audit_events().len();
    let (code, out) = diff(&setup);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("► ConfigMap/{ns}/a drifted")),
        "{out}"
    );
    assert!(
        out.contains("-   k: one") && out.contains("+   k: changed"),
        "{out}"
    );
    assert!(
        out.contains(&format!("► ConfigMap/{ns}/b deleted")),
        "{out}"
    );
    assert_eq!(plane.gitcanary_writes(mark), Vec::<String>::new());

    // A new process with an empty state dir reads the inventory from the cluster.
    let fresh = kube_setup(plane, &url, &ns);
    let (ok, out) = fresh.sync();
    assert!(ok, "{out}");
    assert!(out.contains("1 configured, 1 pruned"), "{out}");
    let target =
        gitcanary::targets::kube::KubeTarget::connect(&plane.target(&ns), &plane.dir, "x", "main")
            .unwrap();
    let gone = target
        .get_object(&ObjectKey::new("v1", "ConfigMap", &ns, "b"))
        .unwrap();
    assert!(gone.is_none());
    let a = target
        .get_object(&ObjectKey::new("v1", "ConfigMap", &ns, "a"))
        .unwrap()
        .unwrap();
    assert_ne!(
        a["metadata"]["annotations"]["gitcanary.io/revision"],
        format!("main@sha1:{first}")
    );
}

#[test]
#[ignore = "needs KUBEBUILDER_ASSETS"]
fn ports_without_a_protocol_apply_and_resync_without_writes() {
    // Before Kubernetes 1.21 server-side apply refuses such ports unless the protocol
    // is filled in ("omits key field protocol"); a no-op resync must still see no drift.
    let fx = Fixture::new("ports");
    fx.files(&[(
        "svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: NS\nspec:\n  selector: {app: web}\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n",
    )]);
    fx.sync("c1").unwrap();
    let svc = fx.get("v1", "Service", "web").unwrap();
    assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
    let mark = fx.mark();
    let r = fx.sync("c1").unwrap();
    assert_eq!(r.writes, 0);
    assert_eq!(fx.writes_since(mark), Vec::<String>::new());
}
