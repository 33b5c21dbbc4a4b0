//! deploy/manifests against a real kube-apiserver (envtest): everything `install
//! --export` prints is accepted by server-side apply, the CRDs become Established with
//! both Canary versions served, and the RBAC grants the ServiceAccount what gitcanary
//! needs and nothing it should not have.

mod common;
#[path = "common/envtest.rs"]
mod envtest;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::Discovery;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const SA: &str = "system:serviceaccount:gitcanary:gitcanary";

/// Server-side applies one object, finding its resource through discovery.
async fn apply(client: &kube::Client, discovery: &Discovery, obj: &Value) {
    let (group, version) = match obj["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", obj["apiVersion"].as_str().unwrap()),
    };
    let gvk = kube::core::GroupVersionKind::gvk(group, version, obj["kind"].as_str().unwrap());
    let (ar, caps) = discovery
        .resolve_gvk(&gvk)
        .unwrap_or_else(|| panic!("{gvk:?} is not served"));
    let name = obj["metadata"]["name"].as_str().unwrap();
    let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
        Some(ns) if caps.scope == kube::discovery::Scope::Namespaced => {
            Api::namespaced_with(client.clone(), ns, &ar)
        }
        _ => Api::all_with(client.clone(), &ar),
    };
    api.patch(name, &PatchParams::apply("deploy-test"), &Patch::Apply(obj))
        .await
        .unwrap_or_else(|e| panic!("apply {} {name}: {e}", obj["kind"]));
}

/// Waits until a CRD is Established; panics with its conditions after 30 s.
async fn established(client: &kube::Client, name: &str) -> Value {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let start = Instant::now();
    loop {
        let crd = serde_json::to_value(api.get(name).await.unwrap()).unwrap();
        let conditions = crd["status"]["conditions"].clone();
        let ok = conditions
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Established" && c["status"] == "True");
        if ok {
            return conditions;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{name}: {conditions}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the API server's authorizer lets the ServiceAccount do `verb` on `resource`.
async fn allowed(client: &kube::Client, verb: &str, group: &str, resource: &str, ns: &str) -> bool {
    use k8s_openapi::api::authorization::v1::SubjectAccessReview;
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": SA,
            "groups": ["system:serviceaccounts", "system:serviceaccounts:gitcanary", "system:authenticated"],
            "resourceAttributes": {
                "verb": verb, "group": group, "resource": resource,
                "subresource": subresource, "namespace": ns,
            },
        }
    }))
    .unwrap();
    let out = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    out.status.is_some_and(|s| s.allowed)
}

#[tokio::test]
#[ignore = "needs KUBEBUILDER_ASSETS"]
async fn install_export_applies_and_its_rbac_is_what_gitcanary_needs() {
    let plane = envtest::shared();
    let client = plane.client().await;
    let text = gitcanary::install::export(&Default::default()).unwrap();
    let objs: Vec<Value> = gitcanary::manifest::yaml::parse_documents(&text)
        .unwrap()
        .into_iter()
        .map(|d| d.root.to_json())
        .filter(|v| !v.is_null())
        .collect();

    // The Namespace and CRDs first, as gitcanary orders an apply; then the rest, with
    // the new kinds discovered.
    let first = |o: &Value| o["kind"] == "Namespace" || o["kind"] == "CustomResourceDefinition";
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    for o in objs.iter().filter(|o| first(o)) {
        apply(&client, &discovery, o).await;
    }
    for o in objs
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
    {
        let name = o["metadata"]["name"].as_str().unwrap();
        let conditions = established(&client, name).await;
        // A non-structural schema is served but flagged, and its fields are not pruned.
        assert!(
            !conditions.to_string().contains("NonStructuralSchema"),
            "{name}: {conditions}"
        );
    }
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    for o in objs.iter().filter(|o| !first(o)) {
        apply(&client, &discovery, o).await;
    }
    for version in ["v1beta1", "v1alpha3"] {
        let gvk = kube::core::GroupVersionKind::gvk("flagger.app", version, "Canary");
        let (ar, _) = discovery.resolve_gvk(&gvk).expect("Canary served");
        assert_eq!(ar.plural, "canaries");
    }

    // What gitcanary does: its Lease and inventory in its namespace, applying an
    // application's objects anywhere, the canary engine's status, routes and scaling.
    for (verb, group, resource, ns) in [
        ("create", "coordination.k8s.io", "leases", "gitcanary"),
        ("update", "coordination.k8s.io", "leases", "gitcanary"),
        ("create", "", "configmaps", "gitcanary"),
        ("patch", "apps", "deployments", "test"),
        ("delete", "apps", "deployments", "test"),
        ("update", "apps", "deployments/scale", "test"),
        ("patch", "", "services", "test"),
        ("patch", "autoscaling", "horizontalpodautoscalers", "test"),
        ("patch", "flagger.app", "canaries", "test"),
        ("update", "flagger.app", "canaries/status", "test"),
        ("patch", "networking.k8s.io", "ingresses", "test"),
        ("patch", "gateway.networking.k8s.io", "httproutes", "test"),
        ("create", "batch", "jobs", "test"),
        ("create", "", "events", "test"),
        (
            "patch",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "",
        ),
        ("create", "", "namespaces", ""),
    ] {
        assert!(
            allowed(&client, verb, group, resource, ns).await,
            "{verb} {group}/{resource} in {ns:?} should be allowed"
        );
    }
    // What it must not do: Leases elsewhere (another controller's election), cluster
    // RBAC (it would grant itself more), nodes, or granting roles it does not hold.
    for (verb, group, resource, ns) in [
        ("create", "coordination.k8s.io", "leases", "kube-system"),
        ("create", "rbac.authorization.k8s.io", "clusterroles", ""),
        (
            "create",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            "",
        ),
        ("escalate", "rbac.authorization.k8s.io", "roles", "test"),
        ("bind", "rbac.authorization.k8s.io", "roles", "test"),
        ("delete", "", "nodes", ""),
        ("create", "", "pods/exec", "test"),
        ("deletecollection", "", "secrets", "test"),
    ] {
        assert!(
            !allowed(&client, verb, group, resource, ns).await,
            "{verb} {group}/{resource} in {ns:?} should be denied"
        );
    }
}
