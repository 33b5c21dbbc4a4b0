//! Which API resource serves a kind, found through API discovery rather than a list
//! of kinds: kube's `Discovery`, using the aggregated endpoint where the API server has
//! it (two requests) and the per-group one elsewhere (a request per group). The result is cached across
//! syncs and refreshed when a kind is missing (a CRD applied a moment ago).

use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{Discovery, Scope};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A resolved kind: its resource and whether its objects live in a namespace. Cheap
/// to clone: the objects of one kind share their resource.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The resource (group, version, plural).
    pub resource: Arc<ApiResource>,
    /// Namespaced, as opposed to cluster-scoped.
    pub namespaced: bool,
}

/// Cached discovery.
#[derive(Default)]
pub struct Resources {
    cache: Mutex<Option<Arc<Discovery>>>,
    no_aggregated: AtomicBool,
}

/// The group and version of an `apiVersion`.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.rsplit_once('/').unwrap_or(("", api_version))
}

impl Resources {
    /// Forgets what was discovered (after CRDs changed).
    pub fn invalidate(&self) {
        *self.cache.lock().unwrap() = None;
    }

    async fn discover(&self, client: &kube::Client) -> kube::Result<Arc<Discovery>> {
        if !self.no_aggregated.load(Ordering::Relaxed) {
            match Discovery::new(client.clone()).run_aggregated().await {
                // An API server without it may answer with the plain group list,
                // which reads as an empty aggregated one: the core group is missing.
                Ok(d) if d.has_group("") => {
                    let d = Arc::new(d);
                    *self.cache.lock().unwrap() = Some(d.clone());
                    return Ok(d);
                }
                // Before Kubernetes 1.26: remember, and ask group by group.
                other => {
                    let why = other.err().map(|e| e.to_string()).unwrap_or_default();
                    tracing::debug!("aggregated discovery unavailable {why}");
                    self.no_aggregated.store(true, Ordering::Relaxed);
                }
            }
        }
        let d = Arc::new(Discovery::new(client.clone()).run().await?);
        *self.cache.lock().unwrap() = Some(d.clone());
        Ok(d)
    }

    /// Resolves each `(apiVersion, kind)`; `None` for kinds the API server does not
    /// serve. Discovery runs again, once, when a kind is missing from the cache.
    pub async fn resolve(
        &self,
        client: &kube::Client,
        kinds: &[(&str, &str)],
    ) -> kube::Result<Vec<Option<Resolved>>> {
        let cached = self.cache.lock().unwrap().clone();
        if let Some(d) = cached {
            let got = lookup(&d, kinds);
            if got.iter().all(Option::is_some) {
                return Ok(got);
            }
        }
        let d = self.discover(client).await?;
        Ok(lookup(&d, kinds))
    }

    /// The preferred resource of `kind` in API group `group` (for `get` by key).
    pub async fn resolve_group_kind(
        &self,
        client: &kube::Client,
        group: &str,
        kind: &str,
    ) -> kube::Result<Option<Resolved>> {
        let cached = self.cache.lock().unwrap().clone();
        let d = match cached {
            Some(d) if d.has_group(group) => d,
            _ => self.discover(client).await?,
        };
        Ok(d.get(group)
            .and_then(|g| g.recommended_kind(kind))
            .map(|(ar, caps)| Resolved {
                resource: Arc::new(ar),
                namespaced: caps.scope == Scope::Namespaced,
            }))
    }
}

/// Each kind's resource; repeated kinds (10,000 objects have a handful) share one.
fn lookup(d: &Discovery, kinds: &[(&str, &str)]) -> Vec<Option<Resolved>> {
    let mut seen: HashMap<(&str, &str), Option<Resolved>> = HashMap::new();
    kinds
        .iter()
        .map(|&(av, kind)| {
            seen.entry((av, kind))
                .or_insert_with(|| {
                    let (group, version) = split_api_version(av);
                    d.resolve_gvk(&GroupVersionKind::gvk(group, version, kind))
                        .map(|(ar, caps)| Resolved {
                            resource: Arc::new(ar),
                            namespaced: caps.scope == Scope::Namespaced,
                        })
                })
                .clone()
        })
        .collect()
}
