//! Custom resources on a real kube-apiserver: a CRD and its custom resource in one
//! revision. A test binary of its own, with its own control plane: the envtest
//! kube-apiserver v1.20.2 in ../shared/envtest crashes on any custom resource
//! (json-iterator's reflect2 map iteration under the Go it was built with), and
//! would take the other tests' control plane down with it.

mod common;
#[path = "common/envtest.rs"]
mod envtest;
#[path = "common/kube_fixture.rs"]
mod fixture;

use fixture::*;
use gitcanary::manifest::ObjectKey;
use std::path::Path;

const WIDGET_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.NS.example.com
spec:
  group: NS.example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
";

#[test]
#[ignore = "needs KUBEBUILDER_ASSETS"]
fn a_crd_and_its_custom_resource_in_one_revision_apply_in_order() {
    let fx = Fixture::new("crd");
    fx.files(&[
        // The custom resource sorts first by file name; the order still puts the CRD first.
        (
            "a-widget.yaml",
            "apiVersion: NS.example.com/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: NS\nspec:\n  size: 3\n",
        ),
        ("crd.yaml", WIDGET_CRD),
    ]);
    let r = match fx.sync("c1") {
        Err(e) if fx.plane.crashed().is_some() => {
            eprintln!(
                "SKIPPED: this kube-apiserver crashes on custom resources, not a gitcanary failure ({e}):\n{}",
                fx.plane.crashed().unwrap()
            );
            return;
        }
        r => r.unwrap(),
    };
    assert_eq!(r.created, 2);
    let w = fx
        .get(&format!("{}.example.com/v1", fx.ns), "Widget", "w")
        .unwrap();
    assert_eq!(w["spec"]["size"], 3);

    // Leaving Git, the custom resource is pruned but the CRD is not (not annotated).
    fx.files(&[]);
    let r = fx.sync("c2").unwrap();
    assert_eq!(r.pruned, 1);
    let crd = fx
        .target
        .get_object(&ObjectKey::new(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "",
            &format!("widgets.{}.example.com", fx.ns),
        ))
        .unwrap();
    assert!(crd.is_some(), "CRDs are kept unless annotated");
}

#[test]
#[ignore = "needs KUBEBUILDER_ASSETS"]
fn a_first_sync_of_the_examples_repo_installs_the_canary_crd_first() {
    let plane = envtest::shared();
    let ns = plane.namespace_blocking("examples");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let remote = common::Remote::new();
    remote.copy_from(&root.join("examples-repo"));
    let crd = std::fs::read_to_string(root.join("deploy/manifests/01-crd-canaries.yaml")).unwrap();
    // Kubernetes v1.20 serves autoscaling/v2beta2, not v2.
    let hpa = std::fs::read_to_string(root.join("examples-repo/apps/podinfo/hpa.yaml"))
        .unwrap()
        .replace("autoscaling/v2\n", "autoscaling/v2beta2\n");
    remote.write(&[
        ("crds/canaries.yaml", &crd),
        ("apps/podinfo/hpa.yaml", &hpa),
    ]);
    remote.push("examples");
    let url = format!("file://{}", remote.bare.display());
    let setup = common::Setup::new(&url, "", "");
    std::fs::write(
        &setup.config,
        format!(
            "source:\n  url: {url}\n{}server:\n  listen: 127.0.0.1:0\n",
            plane.target_yaml(&ns)
        ),
    )
    .unwrap();
    let (ok, out) = setup.sync();
    if !ok && plane.crashed().is_some() {
        eprintln!(
            "SKIPPED: this kube-apiserver crashes on custom resources, not a gitcanary failure ({out}):\n{}",
            plane.crashed().unwrap()
        );
        return;
    }
    assert!(ok, "{out}");
    let target =
        gitcanary::targets::kube::KubeTarget::connect(&plane.target(&ns), &plane.dir, "x", "main")
            .unwrap();
    for (av, kind, ns, name) in [
        (
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "",
            "canaries.flagger.app",
        ),
        ("v1", "Namespace", "", "test"),
        ("apps/v1", "Deployment", "test", "podinfo"),
        ("flagger.app/v1beta1", "Canary", "test", "podinfo"),
    ] {
        let key = ObjectKey::new(av, kind, ns, name);
        assert!(
            target.get_object(&key).unwrap().is_some(),
            "{key} missing: {out}"
        );
    }
    // HelmReleases are consumed: rendered, never sent.
    let hr = ObjectKey::new(
        "helm.toolkit.fluxcd.io/v2",
        "HelmRelease",
        "test",
        "frontend",
    );
    assert!(target.get_object(&hr).unwrap().is_none());
}
