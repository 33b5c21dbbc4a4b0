//! The canary engine's view of the local target: [`Workloads`] over the store, the
//! runtime's rollout state and replica overrides; [`TrafficRouter`] over the service
//! proxy; [`MetricsProvider`] over the proxy's request window (the built-in metrics);
//! and the in-process load tester for webhooks.

use super::loadtester::{self, LoadTester};
use super::proxy::routing::{parse_matches, Affinity, Route};
use super::proxy::stats::Scope;
use super::proxy::{global_stats, Proxy};
use super::runtime::spec::{pod_template_hash, template_hash};
use super::runtime::supervisor::{rollout_state, set_replica_override, Notifier};
use super::{names, LocalStore};
use crate::canary::executor::InProcessWebhooks;
use crate::canary::metrics::{MetricQuery, MetricsProvider};
use crate::canary::primary::{self, deployment};
use crate::canary::router::{self, BoxFuture, Capabilities, Finalize, Routes, TrafficRouter};
use crate::canary::spec::CanarySpec;
use crate::canary::workloads::{RolloutState, Workloads};
use crate::manifest::ObjectKey;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The local target's store, runtime and proxy, as the canary engine uses them.
pub struct LocalCanaryTarget {
    store: LocalStore,
    state_dir: PathBuf,
    runtime: Option<Notifier>,
    proxy: Arc<Proxy>,
    /// The runtime the proxy runs on: `changed` blocks on it from the engine's I/O
    /// thread.
    handle: tokio::runtime::Handle,
}

impl LocalCanaryTarget {
    /// Over the store at `state_dir`, the `proxy` and the runtime behind `runtime`;
    /// called inside the tokio runtime the proxy runs on.
    pub fn new(
        state_dir: &std::path::Path,
        proxy: Arc<Proxy>,
        runtime: Option<Notifier>,
    ) -> crate::targets::Result<LocalCanaryTarget> {
        Ok(LocalCanaryTarget {
            store: LocalStore::open(state_dir)?,
            state_dir: state_dir.to_path_buf(),
            runtime,
            proxy,
            handle: tokio::runtime::Handle::current(),
        })
    }

    fn err(what: &str, e: impl std::fmt::Display) -> router::Error {
        router::Error {
            router: format!("proxy: {what}"),
            message: e.to_string(),
        }
    }
}

impl Workloads for LocalCanaryTarget {
    fn get(&self, key: &ObjectKey) -> Result<Option<Value>, String> {
        self.store.get(key).map_err(|e| e.to_string())
    }

    fn list(&self, group: &str, kind: &str) -> Result<Vec<ObjectKey>, String> {
        self.store.list(group, kind).map_err(|e| e.to_string())
    }

    fn template_hash(&self, d: &Value) -> String {
        template_hash(&d["spec"]["template"])
    }

    fn rollout(&self, ns: &str, name: &str) -> RolloutState {
        let stored = self.store.get(&deployment(ns, name)).ok().flatten();
        let replicas = stored
            .as_ref()
            .map(|d| d["spec"]["replicas"].as_u64().unwrap_or(1) as u32);
        let st = rollout_state(&self.state_dir, ns, name, replicas.unwrap_or(1));
        RolloutState {
            desired: replicas.map(|_| st.wanted).unwrap_or(1),
            updated: st.updated,
            available: st.available,
            total: st.replicas,
            current: stored.is_some_and(|d| st.template_hash == self.template_hash(&d)),
            unavailable_since: st.unavailable_since.map(|t| t as f64),
        }
    }

    fn scale(&self, ns: &str, name: &str, replicas: Option<u32>) -> Result<(), String> {
        set_replica_override(&self.state_dir, ns, name, replicas).map_err(|e| e.to_string())
    }

    fn put_generated(&self, owner: &str, objects: &[(ObjectKey, Value)]) -> Result<(), String> {
        for (key, value) in objects {
            self.store
                .put_generated(key, value, owner)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn generated(&self) -> BTreeMap<ObjectKey, String> {
        self.store.generated()
    }

    fn remove_generated(&self, owner: &str) -> Result<(), String> {
        self.store
            .remove_generated(owner)
            .map_err(|e| e.to_string())
    }

    /// Wakes the runtime, and has the proxy re-read its Services and Deployments.
    fn changed(&self) {
        if let Some(n) = &self.runtime {
            n.notify();
        }
        if let Err(e) = self.handle.block_on(self.proxy.sync_services()) {
            tracing::warn!("services: {e}");
        }
    }

    fn resolve_url(&self, url: &str, ns: &str) -> String {
        names::rewrite_url(&names::allocations(&self.state_dir), url, ns)
    }

    fn applied_revision(&self, key: &ObjectKey) -> Option<String> {
        let inventory = self.store.inventory().ok()?;
        let entry = inventory.entries.iter().find(|(k, _)| {
            k.kind == key.kind && k.namespace == key.namespace && k.name == key.name
        })?;
        Some(entry.1.revision.clone()).filter(|r| !r.is_empty())
    }
}

impl TrafficRouter for LocalCanaryTarget {
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    /// Writes the Services into the store; the proxy reads them on `changed`.
    fn reconcile<'a>(
        &'a self,
        c: &'a CanarySpec,
        target: &'a Value,
    ) -> BoxFuture<'a, router::Result<()>> {
        Box::pin(async move {
            Workloads::put_generated(self, &c.owner(), &primary::services(c, target))
                .map_err(|e| Self::err("writing Services", e))
        })
    }

    fn set_routes<'a>(&'a self, c: &'a CanarySpec, r: Routes) -> BoxFuture<'a, router::Result<()>> {
        // `spec::parse` rejected rules that do not compile, so none is dropped here.
        let matches = if r.ab {
            parse_matches(&c.analysis.match_rules).unwrap_or_default()
        } else {
            vec![]
        };
        self.proxy.set_route(
            &c.namespace,
            &c.service,
            Some(Route {
                primary: format!("{}-primary", c.service),
                canary: Some(format!("{}-canary", c.service)),
                canary_weight: r.canary,
                matches,
                mirror: r.mirror,
                mirror_weight: c.analysis.mirror_weight.unwrap_or(100),
                // Weighted canaries only: A/B and mirroring pick users by rule.
                affinity: c
                    .analysis
                    .session_affinity
                    .as_ref()
                    .filter(|_| !r.ab && !r.mirror)
                    .map(|(cookie, max_age)| Affinity {
                        cookie: cookie.clone(),
                        value: String::new(),
                        max_age: *max_age,
                    }),
            }),
        );
        Box::pin(async { Ok(()) })
    }

    fn get_routes<'a>(
        &'a self,
        c: &'a CanarySpec,
    ) -> BoxFuture<'a, router::Result<Option<Routes>>> {
        let routes = self.proxy.route(&c.namespace, &c.service).map(|r| {
            Routes::weighted(
                if r.canary.is_some() {
                    r.canary_weight
                } else {
                    0
                },
                r.mirror,
                !r.matches.is_empty(),
            )
        });
        Box::pin(async move { Ok(routes) })
    }

    fn finalize<'a>(&'a self, f: &'a Finalize) -> BoxFuture<'a, router::Result<()>> {
        Box::pin(async move {
            if let Some(t) = &f.revert_to {
                let apex_key = ObjectKey::new("v1", "Service", &f.namespace, &f.service);
                let ports = self
                    .store
                    .get(&apex_key)
                    .ok()
                    .flatten()
                    .map(|s| s["spec"]["ports"].clone())
                    .unwrap_or(json!([]));
                let target = t["metadata"]["name"].as_str().unwrap_or_default();
                let apex = json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": f.service, "namespace": f.namespace},
                    "spec": {"selector": {primary::selector_label(t): target}, "ports": ports}});
                let owner = format!("Reverted/{}/{}", f.namespace, f.name);
                self.store
                    .put_generated(&apex_key, &apex, &owner)
                    .map_err(|e| {
                        Self::err(&format!("reverting {}.{}", f.service, f.namespace), e)
                    })?;
            }
            self.proxy.set_route(&f.namespace, &f.service, None);
            Ok(())
        })
    }
}

impl MetricsProvider for LocalCanaryTarget {
    /// The built-in metrics from the proxy's window: the requests the pods of the
    /// queried revision served since the analysis started, over the metric interval.
    fn query<'a>(&'a self, q: &'a MetricQuery<'a>) -> BoxFuture<'a, Result<Option<f64>, String>> {
        let revision = pod_template_hash(q.revision).to_string();
        let scope = Scope {
            revision: Some(&revision),
            since: q.since,
            span: q.interval,
            now: q.now as u64 + 1,
        };
        let value = global_stats()
            .window(q.namespace, q.target, &scope)
            .and_then(|w| match q.metric {
                "request-success-rate" => Some(w.success_rate),
                "request-duration" => Some(w.p99_ms),
                _ => None,
            });
        Box::pin(async move { Ok(value) })
    }
}

/// The load tester, called in process for webhook URLs naming it.
pub struct LocalWebhooks {
    /// The load tester.
    pub loadtester: Arc<LoadTester>,
    /// Host names that mean the load tester (`target.local.loadtesterNames`).
    pub names: Vec<String>,
}

impl InProcessWebhooks for LocalWebhooks {
    fn serves(&self, url: &str) -> bool {
        loadtester::is_loadtester_url(url, &self.names)
    }

    fn call<'a>(&'a self, url: &'a str, body: &'a [u8]) -> BoxFuture<'a, (u16, String)> {
        Box::pin(async move {
            let (code, body) = self
                .loadtester
                .handle(loadtester::url_path(url), body)
                .await;
            (code.as_u16(), body)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(analysis: Value) -> CanarySpec {
        crate::canary::spec::parse(&json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"targetRef": {"name": "podinfo"}, "service": {"port": 9898}, "analysis": analysis}}))
        .unwrap()
    }

    #[tokio::test]
    async fn routes_read_back_as_set_and_finalize_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let proxy = Arc::new(Proxy::new(dir.path(), Default::default(), BTreeMap::new()).unwrap());
        let t = LocalCanaryTarget::new(dir.path(), proxy, None).unwrap();
        let c = canary(json!({"interval": "1m", "threshold": 5, "iterations": 10,
            "match": [{"headers": {"x-canary": {"exact": "insider"}}}]}));
        assert_eq!(t.get_routes(&c).await.unwrap(), None);
        let ab = Routes::weighted(0, false, true);
        t.set_routes(&c, ab).await.unwrap();
        assert_eq!(t.get_routes(&c).await.unwrap(), Some(ab));
        let mirrored = Routes::weighted(0, true, false);
        t.set_routes(&c, mirrored).await.unwrap();
        assert_eq!(t.get_routes(&c).await.unwrap(), Some(mirrored));
        let fin = Finalize {
            namespace: "test".into(),
            name: "podinfo".into(),
            service: "podinfo".into(),
            revert_to: None,
        };
        t.finalize(&fin).await.unwrap();
        assert_eq!(t.get_routes(&c).await.unwrap(), None);
    }

    #[tokio::test]
    async fn generated_objects_and_rollouts_come_from_the_store_and_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let proxy = Arc::new(Proxy::new(dir.path(), Default::default(), BTreeMap::new()).unwrap());
        let t = LocalCanaryTarget::new(dir.path(), proxy, None).unwrap();
        // An absent Deployment wants one replica and runs no current template.
        let absent = t.rollout("test", "podinfo");
        assert_eq!((absent.desired, absent.current), (1, false));

        let c = canary(json!({"interval": "1m", "threshold": 5, "stepWeight": 10}));
        let target = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "podinfo"}},
                "template": {"metadata": {"labels": {"app": "podinfo"}}, "spec": {"containers": [{"name": "c"}]}}}});
        let objects = primary::primary_objects(&c, &target, None, |_| None);
        Workloads::put_generated(&t, &c.owner(), &objects).unwrap();
        t.reconcile(&c, &target).await.unwrap();
        let keys: Vec<String> = Workloads::generated(&t)
            .keys()
            .map(|k| format!("{}/{}", k.kind, k.name))
            .collect();
        assert_eq!(
            keys,
            vec![
                "Service/podinfo",
                "Service/podinfo-canary",
                "Service/podinfo-primary",
                "Deployment/podinfo-primary"
            ]
        );
        let primary = t.rollout("test", "podinfo-primary");
        assert_eq!((primary.desired, primary.available), (2, 0));
        t.scale("test", "podinfo-primary", Some(0)).unwrap();
        assert_eq!(t.rollout("test", "podinfo-primary").desired, 0);
        Workloads::remove_generated(&t, &c.owner()).unwrap();
        assert!(Workloads::generated(&t).is_empty());
        assert_eq!(
            Workloads::get(&t, &deployment("test", "podinfo-primary")).unwrap(),
            None
        );
    }
}
