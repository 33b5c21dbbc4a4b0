//! The thin edge of the Kubernetes target: server-side apply, dry run, delete and the
//! CRD wait, one object at a time, with a bounded number of requests in flight. What
//! to send and how to read refusals is decided in `apply`; what drifted in `drift`;
//! which objects a health check lists rather than gets in `reads`.

use super::apply::{self, Refusal};
use super::health::{self, Status};
use super::leader::{Gate, NotLeader};
use super::reads;
use super::resources::Resolved;
use crate::manifest::ObjectKey;
use futures_util::stream::{self, StreamExt};
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::Api;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Requests in flight at once: enough to hide loopback latency, few enough not to
/// crowd a busy API server (client-go's default QPS budget is of the same order).
pub const CONCURRENCY: usize = 16;
/// How long a CRD may take to become Established, and a recreated object to go.
pub const WAIT: Duration = Duration::from_secs(30);

/// Everything an object write needs besides the object.
#[derive(Clone)]
pub struct Cluster {
    /// The client.
    pub client: kube::Client,
    /// Server-side apply field manager.
    pub field_manager: String,
    /// `target.kubernetes.force`.
    pub force_all: bool,
    /// The leader lease's write permit, checked before each write.
    pub gate: Gate,
}

/// One object to send.
pub struct Item<'a> {
    /// Its identity.
    pub key: &'a ObjectKey,
    /// Its source file, for messages.
    pub file: &'a str,
    /// The body to apply (already labelled and annotated).
    pub body: Value,
    /// Its resource.
    pub resolved: Resolved,
}

/// What happened to an item.
#[derive(Debug)]
pub enum Outcome {
    /// Written (or, for a drift check, found in sync: `Ok(false)`).
    Done(bool),
    /// Refused, with the message to show.
    Failed(String),
    /// Not sent: this replica no longer holds the leader lease.
    NotLeader(NotLeader),
}

impl Cluster {
    fn api(&self, r: &Resolved, namespace: &str) -> Api<DynamicObject> {
        if r.namespaced {
            let ns = if namespace.is_empty() {
                "default"
            } else {
                namespace
            };
            Api::namespaced_with(self.client.clone(), ns, &*r.resource)
        } else {
            Api::all_with(self.client.clone(), &*r.resource)
        }
    }

    fn params(&self, force: bool, dry_run: bool) -> PatchParams {
        let mut pp = PatchParams::apply(&self.field_manager);
        pp.force = force;
        pp.dry_run = dry_run;
        pp
    }

    async fn patch(
        &self,
        item: &Item<'_>,
        force: bool,
        dry_run: bool,
    ) -> kube::Result<DynamicObject> {
        self.api(&item.resolved, &item.key.namespace)
            .patch(
                &item.key.name,
                &self.params(force, dry_run),
                &Patch::Apply(&item.body),
            )
            .await
    }

    /// Applies one object; with force (config or annotation) takes conflicting fields,
    /// and deletes and recreates it when an immutable field changed.
    pub async fn apply(&self, item: &Item<'_>) -> Outcome {
        if let Err(e) = self.gate.check() {
            return Outcome::NotLeader(e);
        }
        let force = self.force_all || apply::forced(&item.body);
        match self.patch(item, force, false).await {
            Ok(_) => Outcome::Done(true),
            Err(kube::Error::Api(s)) => {
                let refusal = apply::refusal(&s);
                if matches!(refusal, Refusal::Immutable(_)) && apply::forced(&item.body) {
                    return match self.recreate(item).await {
                        Ok(()) => Outcome::Done(true),
                        Err(Recreate::NotLeader(e)) => Outcome::NotLeader(e),
                        Err(Recreate::Failed(e)) => Outcome::Failed(apply::describe(
                            item.key,
                            item.file,
                            &Refusal::Immutable(e),
                            true,
                        )),
                    };
                }
                Outcome::Failed(apply::describe(item.key, item.file, &refusal, false))
            }
            Err(e) => Outcome::Failed(format!("{}: {}: {}", item.file, item.key, chain(&e))),
        }
    }

    async fn recreate(&self, item: &Item<'_>) -> Result<(), Recreate> {
        let api = self.api(&item.resolved, &item.key.namespace);
        tracing::info!(object = %item.key, "immutable field changed: deleting and recreating (gitcanary.io/force)");
        self.gate.check().map_err(Recreate::NotLeader)?;
        match api
            .delete(&item.key.name, &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Recreate::Failed(format!("delete: {}", chain(&e)))),
        }
        let start = Instant::now();
        loop {
            match api.get_opt(&item.key.name).await {
                Ok(None) => break,
                Ok(Some(_)) if start.elapsed() < WAIT => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Ok(Some(_)) => {
                    return Err(Recreate::Failed(format!(
                        "still present {WAIT:?} after delete"
                    )))
                }
                Err(e) => return Err(Recreate::Failed(format!("get: {}", chain(&e)))),
            }
        }
        // The wait may have outlasted the lease.
        self.gate.check().map_err(Recreate::NotLeader)?;
        self.patch(item, true, false)
            .await
            .map(|_| ())
            .map_err(|e| Recreate::Failed(format!("recreate: {}", chain(&e))))
    }

    /// Compares a dry-run apply with the live object; re-applies when they differ.
    /// `Done(true)` when it corrected drift.
    pub async fn correct_drift(&self, item: &Item<'_>) -> Outcome {
        match self.drift(item).await {
            Ok(paths) if paths.is_empty() => Outcome::Done(false),
            Ok(paths) => {
                tracing::info!(object = %item.key, fields = %paths.join(","), "correcting drift");
                self.apply(item).await
            }
            Err(message) => Outcome::Failed(message),
        }
    }

    /// The fields where the live object differs from what applying `item` would
    /// make it (all of the object when it is missing).
    pub async fn drift(&self, item: &Item<'_>) -> Result<Vec<String>, String> {
        let (live, dry) = self.dry_run(item).await?;
        Ok(match live {
            None => vec![".".into()],
            Some(live) => super::drift::drifted(&live, &dry, 8),
        })
    }

    /// The live object, if any, and the server-side dry run of applying `item`.
    pub async fn dry_run(&self, item: &Item<'_>) -> Result<(Option<Value>, Value), String> {
        let api = self.api(&item.resolved, &item.key.namespace);
        let at = |e: &kube::Error| format!("{}: {}: {}", item.file, item.key, chain(e));
        let live = api.get_opt(&item.key.name).await.map_err(|e| at(&e))?;
        let force = self.force_all || apply::forced(&item.body);
        let dry = match self.patch(item, force, true).await {
            Ok(d) => d,
            Err(kube::Error::Api(s)) => {
                return Err(apply::describe(
                    item.key,
                    item.file,
                    &apply::refusal(&s),
                    false,
                ))
            }
            Err(e) => return Err(at(&e)),
        };
        let json = |o: DynamicObject| serde_json::to_value(o).unwrap_or_default();
        Ok((live.map(json), json(dry)))
    }

    /// Deletes an object: `Done(true)` when deleted, `Done(false)` when already gone.
    pub async fn delete(&self, key: &ObjectKey, resolved: &Resolved) -> Outcome {
        if let Err(e) = self.gate.check() {
            return Outcome::NotLeader(e);
        }
        match self
            .api(resolved, &key.namespace)
            .delete(&key.name, &DeleteParams::background())
            .await
        {
            Ok(_) => Outcome::Done(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Outcome::Done(false),
            Err(e) => Outcome::Failed(format!("{key}: delete: {}", chain(&e))),
        }
    }

    /// The names of the objects of resource `r` in `namespace` that carry gitcanary's
    /// label, listed as metadata only, a page at a time, to keep memory flat.
    pub async fn names(&self, r: &Resolved, namespace: &str) -> Result<HashSet<String>, String> {
        let api = self.api(r, namespace);
        let mut lp = ListParams::default()
            .labels(&format!("{}={}", apply::MANAGED_BY, apply::GITCANARY))
            .limit(500);
        let mut out = HashSet::new();
        loop {
            let page = api
                .list_metadata(&lp)
                .await
                .map_err(|e| format!("list {}: {}", r.resource.plural, chain(&e)))?;
            out.extend(page.items.into_iter().filter_map(|o| o.metadata.name));
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => lp = lp.continue_token(&c),
                None => return Ok(out),
            }
        }
    }

    /// The health of the objects of resource `r` in `namespace` that carry
    /// gitcanary's label and whose name is `wanted`, by name, from one LIST read a page
    /// at a time; each object is reduced to its status as its page is read.
    pub async fn list_statuses(
        &self,
        r: &Resolved,
        namespace: &str,
        wanted: impl Fn(&str) -> bool,
    ) -> kube::Result<HashMap<String, Status>> {
        let api = self.api(r, namespace);
        let mut lp = ListParams::default()
            .labels(&format!("{}={}", apply::MANAGED_BY, apply::GITCANARY))
            .limit(reads::PAGE);
        let mut out = HashMap::new();
        loop {
            let page = api.list(&lp).await?;
            for o in page.items {
                let Some(name) = o.metadata.name.clone().filter(|n| wanted(n)) else {
                    continue;
                };
                let obj = serde_json::to_value(o).unwrap_or_default();
                let obj = reads::with_type(obj, &r.resource.api_version, &r.resource.kind);
                out.insert(name, health::status(&obj));
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => lp = lp.continue_token(&c),
                None => return Ok(out),
            }
        }
    }

    /// One live object.
    pub async fn get(&self, key: &ObjectKey, r: &Resolved) -> Result<Option<Value>, String> {
        let o = self
            .api(r, &key.namespace)
            .get_opt(&key.name)
            .await
            .map_err(|e| format!("{key}: {}", chain(&e)))?;
        Ok(o.map(|o| serde_json::to_value(o).unwrap_or_default()))
    }

    /// Waits until each named CRD reports `Established`.
    pub async fn wait_established(&self, names: &[&str]) -> Result<(), String> {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let start = Instant::now();
        for name in names {
            loop {
                let crd = api
                    .get_opt(name)
                    .await
                    .map_err(|e| format!("CustomResourceDefinition/{name}: {}", chain(&e)))?;
                let conditions = crd
                    .as_ref()
                    .and_then(|c| c.status.as_ref())
                    .and_then(|s| s.conditions.clone())
                    .unwrap_or_default();
                if conditions
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                {
                    break;
                }
                if start.elapsed() > WAIT {
                    let why: Vec<String> = conditions
                        .iter()
                        .map(|c| {
                            format!(
                                "{}={} {}",
                                c.type_,
                                c.status,
                                c.message.clone().unwrap_or_default()
                            )
                        })
                        .collect();
                    return Err(format!(
                        "CustomResourceDefinition/{name}: not Established after {WAIT:?}, so its custom resources were not applied ({})",
                        if why.is_empty() { "no conditions".to_string() } else { why.join("; ") }
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

/// Why a forced recreation did not happen.
enum Recreate {
    NotLeader(NotLeader),
    Failed(String),
}

/// Runs `f` over `items` with at most [`CONCURRENCY`] in flight; results in order.
pub async fn each<'a, T, R, F, Fut>(items: &'a [T], f: F) -> Vec<R>
where
    F: Fn(&'a T) -> Fut,
    Fut: std::future::Future<Output = R> + 'a,
{
    stream::iter(items.iter().map(f))
        .buffered(CONCURRENCY)
        .collect()
        .await
}

/// An error with its causes, on one line.
pub fn chain(e: &kube::Error) -> String {
    crate::util::error_chain(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::kube::leader::{Clock, Role};
    use axum::extract::Path;
    use k8s_openapi::api::core::v1::ConfigMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    /// A fake monotonic clock: `start` plus the milliseconds in `offset`.
    fn fake_clock(start: Instant, offset: Arc<AtomicU64>) -> Clock {
        Arc::new(move || start + Duration::from_millis(offset.load(Ordering::SeqCst)))
    }

    /// An API server on loopback for ConfigMaps in which each write takes a second of
    /// the fake clock; it records the names written.
    async fn slow_api_server(offset: Arc<AtomicU64>, seen: Arc<Mutex<Vec<String>>>) -> String {
        let write = move |Path((ns, name)): Path<(String, String)>| {
            let (offset, seen) = (offset.clone(), seen.clone());
            async move {
                offset.fetch_add(1000, Ordering::SeqCst);
                seen.lock().unwrap().push(name.clone());
                axum::Json(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": ns}}))
            }
        };
        let app = axum::Router::new().route(
            "/api/v1/namespaces/{ns}/configmaps/{name}",
            axum::routing::patch(write.clone()).delete(write),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    async fn cluster(url: &str, gate: Gate) -> Cluster {
        let config = kube::Config::new(url.parse().unwrap());
        Cluster {
            client: kube::Client::try_from(config).unwrap(),
            field_manager: "gitcanary".into(),
            force_all: false,
            gate,
        }
    }

    fn configmaps() -> Resolved {
        Resolved {
            resource: std::sync::Arc::new(kube::core::ApiResource::erase::<ConfigMap>(&())),
            namespaced: true,
        }
    }

    #[tokio::test]
    async fn a_lease_that_lapses_mid_batch_stops_the_writes_after_it() {
        let start = Instant::now();
        let offset = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let url = slow_api_server(offset.clone(), seen.clone()).await;
        let gate = Gate::elected_with_clock("ops", fake_clock(start, offset.clone()));
        // Renewed at `start`; the renew deadline is 7 s later, and no renewal follows.
        gate.publish(Some(start + Duration::from_secs(7)), Role::Leader);
        let cluster = cluster(&url, gate.clone()).await;
        let keys: Vec<ObjectKey> = (0..40)
            .map(|i| ObjectKey::new("v1", "ConfigMap", "apps", &format!("cm-{i}")))
            .collect();
        let items: Vec<Item> = keys
            .iter()
            .map(|key| Item {
                key,
                file: "apps/cms.yaml",
                body: serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": key.name, "namespace": "apps"}}),
                resolved: configmaps(),
            })
            .collect();
        let outcomes = each(&items, |item| cluster.apply(item)).await;
        let written = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Done(true)))
            .count();
        let refused: Vec<String> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::NotLeader(e) => Some(e.to_string()),
                _ => None,
            })
            .collect();
        // Only writes checked before the deadline went out: the seven that fit in it,
        // plus those already in flight; the rest of the batch was never sent.
        assert_eq!(seen.lock().unwrap().len(), written);
        assert!(
            (7..=7 + CONCURRENCY).contains(&written),
            "{written} written"
        );
        assert_eq!(written + refused.len(), 40, "{outcomes:?}");
        assert!(refused[0].starts_with("not the leader"), "{refused:?}");
        // Nothing written is left out of order: the refused ones are the batch's tail.
        assert!(outcomes[..written]
            .iter()
            .all(|o| matches!(o, Outcome::Done(true))));
        // Deletions wait for the gate too.
        let before = seen.lock().unwrap().len();
        let deleted = cluster.delete(&keys[0], &configmaps()).await;
        assert!(matches!(deleted, Outcome::NotLeader(_)), "{deleted:?}");
        assert_eq!(seen.lock().unwrap().len(), before);
        // A renewal opens the gate again.
        let now = start + Duration::from_millis(offset.load(Ordering::SeqCst));
        gate.publish(Some(now + Duration::from_secs(7)), Role::Leader);
        let deleted = cluster.delete(&keys[0], &configmaps()).await;
        assert!(matches!(deleted, Outcome::Done(true)), "{deleted:?}");
    }
}
