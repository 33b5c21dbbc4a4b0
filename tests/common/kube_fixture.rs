//! A test's view of the Kubernetes target: its namespace on the shared control plane,
//! a folder standing for the Git revision, a target, and ways to act as another
//! client (another field manager) and to count gitcanary's writes.
#![allow(dead_code)]

use super::envtest;
use gitcanary::config::KubeTarget as KubeConfig;
use gitcanary::manifest::{self, snapshot::DirSnapshot, Object, ObjectKey};
use gitcanary::sync::plan;
use gitcanary::targets::kube::{Error, KubeTarget};
use gitcanary::targets::ApplyReport;
use serde_json::Value;
use std::path::Path;

/// A test's namespace, a folder standing for the Git revision, and a target.
pub struct Fixture {
    pub plane: &'static envtest::ControlPlane,
    pub ns: String,
    pub repo: tempfile::TempDir,
    pub target: KubeTarget,
}

impl Fixture {
    pub fn new(name: &str) -> Fixture {
        Fixture::with(name, |_| {})
    }

    pub fn with(name: &str, edit: impl FnOnce(&mut KubeConfig)) -> Fixture {
        Fixture::on(envtest::shared(), name, edit)
    }

    /// The same on `plane` (e.g. the one with controllers).
    pub fn on(
        plane: &'static envtest::ControlPlane,
        name: &str,
        edit: impl FnOnce(&mut KubeConfig),
    ) -> Fixture {
        let ns = plane.namespace_blocking(name);
        let mut cfg = plane.target(&ns);
        edit(&mut cfg);
        let target = KubeTarget::connect(&cfg, &plane.dir, "test", "main").unwrap();
        Fixture {
            plane,
            ns,
            repo: tempfile::tempdir().unwrap(),
            target,
        }
    }

    /// A second target on the same inventory, as a restarted process has.
    pub fn reconnect(&self, edit: impl FnOnce(&mut KubeConfig)) -> KubeTarget {
        let mut cfg = self.plane.target(&self.ns);
        edit(&mut cfg);
        KubeTarget::connect(&cfg, &self.plane.dir, "test", "main").unwrap()
    }

    /// Replaces the revision's files (`NS` in contents becomes the namespace).
    pub fn files(&self, files: &[(&str, &str)]) {
        for e in std::fs::read_dir(self.repo.path()).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        for (name, text) in files {
            std::fs::write(self.repo.path().join(name), text.replace("NS", &self.ns)).unwrap();
        }
    }

    pub fn desired(&self) -> Vec<Object> {
        load(self.repo.path())
    }

    pub fn sync(&self, commit: &str) -> Result<ApplyReport, Error> {
        sync_with(&self.target, &self.desired(), commit)
    }

    /// Audit events so far, to count what comes after.
    pub fn mark(&self) -> usize {
        self.plane.audit_events().len()
    }

    /// gitcanary's writes since `mark` that touch this test's namespace.
    pub fn writes_since(&self, mark: usize) -> Vec<String> {
        let ns = format!("/{}/", self.ns);
        self.plane
            .gitcanary_writes(mark)
            .into_iter()
            .filter(|w| w.contains(&ns) || w.ends_with(&format!("/{}", self.ns)))
            .collect()
    }

    pub fn get(&self, api_version: &str, kind: &str, name: &str) -> Option<Value> {
        self.target
            .get_object(&ObjectKey::new(api_version, kind, &self.ns, name))
            .unwrap()
    }

    /// Runs `kube` API calls as another client (another field manager).
    pub fn other<T>(&self, f: impl AsyncFnOnce(kube::Client) -> T) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let client = self.plane.client().await;
                f(client).await
            })
    }
}

pub fn load(dir: &Path) -> Vec<Object> {
    let loaded = manifest::load(&DirSnapshot::new(dir), ".", None);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    loaded.objects
}

pub fn sync_with(
    target: &KubeTarget,
    desired: &[Object],
    commit: &str,
) -> Result<ApplyReport, Error> {
    let inv = target.read()?;
    let p = plan(desired, &inv);
    target.apply_plan(&p, desired, &inv, commit)
}

pub fn cm(name: &str, data: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: NS\ndata:\n{data}")
}

pub fn deployment(name: &str, app: &str, annotations: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: NS
  annotations: {{{annotations}}}
spec:
  selector:
    matchLabels: {{app: {app}}}
  template:
    metadata:
      labels: {{app: {app}}}
    spec:
      containers:
      - name: app
        image: ghcr.io/stefanprodan/podinfo:6.0.0
"
    )
}

/// Server-side apply of `body` (a ConfigMap in the test's namespace) by `manager`.
pub fn apply_as(fx: &Fixture, manager: &str, body: Value) {
    use k8s_openapi::api::core::v1::ConfigMap;
    let name = body["metadata"]["name"].as_str().unwrap().to_string();
    let ns = fx.ns.clone();
    let manager = manager.to_string();
    fx.other(async move |c| {
        kube::Api::<ConfigMap>::namespaced(c, &ns)
            .patch(
                &name,
                &kube::api::PatchParams::apply(&manager).force(),
                &kube::api::Patch::Apply(&body),
            )
            .await
            .unwrap();
    });
}

/// A merge patch of a ConfigMap by `manager`: an update, as `kubectl edit` makes.
pub fn edit_as(fx: &Fixture, manager: &str, name: &str, patch: Value) {
    merge_patch_as::<k8s_openapi::api::core::v1::ConfigMap>(fx, manager, name, patch)
}

/// A merge patch of an object of kind `K` in the test's namespace by `manager`.
pub fn merge_patch_as<K>(fx: &Fixture, manager: &str, name: &str, patch: Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let (ns, name) = (fx.ns.clone(), name.to_string());
    let pp = kube::api::PatchParams {
        field_manager: Some(manager.to_string()),
        ..Default::default()
    };
    fx.other(async move |c| {
        kube::Api::<K>::namespaced(c, &ns)
            .patch(&name, &pp, &kube::api::Patch::Merge(&patch))
            .await
            .unwrap();
    });
}
