//! Services on the local target: each Service port gets a real listener and an HTTP/1.1
//! reverse proxy (hyper, keep-alive on both sides) to the ready replicas its selector
//! picks. A [`routing::Route`] set by the canary engine splits traffic between backend
//! Services by weight or match rules, and can mirror. Bad or unreachable backends give
//! 502, no ready endpoint gives 503 at once; both count as failures.

pub mod body;
mod exchange;
pub mod http1;
mod mirror;
pub mod routing;
mod serve;
pub mod stats;
mod stream;
pub mod upstream;
pub mod workers;

use crate::manifest::ObjectKey;
use crate::targets::local::runtime::Endpoints;
use crate::targets::local::LocalStore;
use crate::util::listen::Acceptor;
use routing::Route;
use serve::serve_connection;
use stats::{Recorder, Stats};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

/// Proxy statistics for the process, rendered at `/metrics`.
pub fn global_stats() -> &'static Arc<Stats> {
    static STATS: OnceLock<Arc<Stats>> = OnceLock::new();
    STATS.get_or_init(|| Arc::new(Stats::default()))
}

/// A Service as the proxy needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceDef {
    /// `spec.selector`.
    pub selector: BTreeMap<String, String>,
    /// (name, port, targetPort as written)
    pub ports: Vec<(Option<String>, u16, serde_json::Value)>,
    /// The one Deployment whose pods the selector picks, with its `pod-template-hash`:
    /// a request that finds no ready pod is still counted against that workload.
    pub workload: Option<Served>,
}

/// The workload and pod-template revision a response is counted under.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Served {
    /// Deployment name.
    pub deployment: String,
    /// `pod-template-hash` of the pod (or, with none ready, of the Deployment's template).
    pub revision: String,
}

/// The Deployment in `ns` whose pod template `selector` picks, when exactly one does.
fn selected_workload(
    deployments: &[(ObjectKey, serde_json::Value)],
    ns: &str,
    selector: &BTreeMap<String, String>,
) -> Option<Served> {
    let mut picked = deployments.iter().filter(|(k, d)| {
        k.namespace == ns
            && routing::selects(
                selector,
                &crate::manifest::object::string_map(&d["spec"]["template"]["metadata"]["labels"]),
            )
    });
    let (key, d) = picked.next()?;
    if picked.next().is_some() {
        return None;
    }
    let hash = crate::targets::local::runtime::spec::template_hash(&d["spec"]["template"]);
    Some(Served {
        deployment: key.name.clone(),
        revision: crate::targets::local::runtime::spec::pod_template_hash(&hash).to_string(),
    })
}

type Key = (String, String);
/// namespace -> name -> value: looked up by `&str`, so a request builds no key.
type ByName<T> = HashMap<String, HashMap<String, T>>;

fn lookup<'a, T>(m: &'a ByName<T>, ns: &str, name: &str) -> Option<&'a T> {
    m.get(ns)?.get(name)
}

fn by_name<T>(entries: impl IntoIterator<Item = (Key, T)>) -> ByName<T> {
    let mut out: ByName<T> = HashMap::new();
    for ((ns, name), v) in entries {
        out.entry(ns).or_default().insert(name, v);
    }
    out
}
/// (namespace, Service name, port)
type ListenerKey = (String, String, u16);
/// A listener's address and its accept task.
type Listener = (SocketAddr, tokio::task::JoinHandle<()>);

struct Shared {
    services: RwLock<ByName<Arc<ServiceDef>>>,
    routes: RwLock<ByName<Arc<Route>>>,
    /// Moves after every change of `services` or `routes`: until it does, a connection
    /// reuses what it looked up for its Service (see [`Conn::current`]).
    generation: AtomicU64,
    endpoints: Endpoints,
    /// Round-robin position over endpoints.
    next: AtomicU64,
    /// Request sequence, seeding the weight and mirror rolls (kept apart from `next`,
    /// or every request would advance round-robin twice and skip half the endpoints).
    seq: AtomicU64,
    /// Mixed into the rolls, so that they differ between processes.
    seed: u64,
    stats: Arc<Stats>,
}

/// The Service proxy of the local target.
pub struct Proxy {
    shared: Arc<Shared>,
    store: LocalStore,
    configured: BTreeMap<String, String>,
    allocations_path: std::path::PathBuf,
    listeners: tokio::sync::Mutex<HashMap<ListenerKey, Listener>>,
    max_connections: usize,
    workers: workers::Workers,
}

fn xorshift(seed: u64) -> u64 {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

impl Proxy {
    /// A proxy for the store at `state_dir`; `configured` maps `namespace/name` to a fixed
    /// listen address (`target.local.services`).
    pub fn new(
        state_dir: &std::path::Path,
        endpoints: Endpoints,
        configured: BTreeMap<String, String>,
    ) -> std::io::Result<Proxy> {
        let store = LocalStore::open(state_dir).map_err(std::io::Error::other)?;
        Ok(Proxy {
            shared: Arc::new(Shared {
                services: RwLock::default(),
                routes: RwLock::default(),
                generation: AtomicU64::new(0),
                endpoints,
                next: AtomicU64::new(0),
                seq: AtomicU64::new(0),
                seed: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1),
                stats: global_stats().clone(),
            }),
            store,
            configured,
            allocations_path: state_dir.join("runtime").join("services.json"),
            listeners: tokio::sync::Mutex::new(HashMap::new()),
            max_connections: crate::util::listen::DEFAULT_MAX_CONNECTIONS,
            workers: workers::Workers::start()?,
        })
    }

    /// Caps the open connections of each Service listener (`target.local.maxConnections`).
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// The route on Service `namespace/name`, if the canary engine set one.
    pub fn route(&self, namespace: &str, name: &str) -> Option<Arc<Route>> {
        let routes = self.shared.routes.read().unwrap_or_else(|e| e.into_inner());
        routes.get(namespace)?.get(name).cloned()
    }

    /// Sets (or clears, with `None`) the traffic split of Service `namespace/name`.
    pub fn set_route(&self, namespace: &str, name: &str, route: Option<Route>) {
        let mut routes = self
            .shared
            .routes
            .write()
            .unwrap_or_else(|e| e.into_inner());
        match route {
            Some(mut r) => {
                // One affinity cookie value per analysis: kept while the canary has
                // traffic, fresh once it had none.
                if let Some(a) = r.affinity.as_mut() {
                    let old = lookup(&routes, namespace, name)
                        .filter(|o| o.canary_weight > 0)
                        .and_then(|o| o.affinity.as_ref());
                    a.value = match old {
                        Some(o) => o.value.clone(),
                        None => format!(
                            "{:016x}",
                            xorshift(
                                std::time::SystemTime::now()
                                    .duration_since(std::time::UNIX_EPOCH)
                                    .map(|d| d.as_nanos() as u64)
                                    .unwrap_or(1)
                                    ^ self.shared.seq.fetch_add(1, Ordering::Relaxed)
                            )
                        ),
                    };
                }
                routes
                    .entry(namespace.to_string())
                    .or_default()
                    .insert(name.to_string(), Arc::new(r))
            }
            None => routes.get_mut(namespace).and_then(|m| m.remove(name)),
        };
        self.shared.generation.fetch_add(1, Ordering::Release);
    }

    /// Every listener: (namespace, name, port, address).
    pub async fn addresses(&self) -> Vec<(String, String, u16, SocketAddr)> {
        let mut out: Vec<_> = self
            .listeners
            .lock()
            .await
            .iter()
            .map(|((ns, n, p), (a, _))| (ns.clone(), n.clone(), *p, *a))
            .collect();
        out.sort();
        out
    }

    fn allocations(&self) -> BTreeMap<String, String> {
        std::fs::read(&self.allocations_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Re-reads Services from the store and opens or closes listeners to match.
    pub async fn sync_services(&self) -> std::io::Result<()> {
        // Replicas come and go with the store: their idle connections go too.
        self.workers.spawner.sweep();
        let keys = self
            .store
            .list("", "Service")
            .map_err(std::io::Error::other)?;
        let deployments: Vec<(ObjectKey, serde_json::Value)> = self
            .store
            .list("apps", "Deployment")
            .map_err(std::io::Error::other)?
            .into_iter()
            .filter_map(|k| Some((k.clone(), self.store.get(&k).ok()??)))
            .collect();
        let mut defs = HashMap::new();
        for key in &keys {
            let Ok(Some(obj)) = self.store.get(key) else {
                continue;
            };
            let selector = crate::manifest::object::string_map(&obj["spec"]["selector"]);
            let ports = obj["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    Some((
                        p["name"].as_str().map(str::to_string),
                        p["port"].as_u64()? as u16,
                        p.get("targetPort").cloned().unwrap_or(p["port"].clone()),
                    ))
                })
                .collect();
            let workload = selected_workload(&deployments, &key.namespace, &selector);
            defs.insert(
                (key.namespace.clone(), key.name.clone()),
                ServiceDef {
                    selector,
                    ports,
                    workload,
                },
            );
        }
        let mut allocations = self.allocations();
        let mut listeners = self.listeners.lock().await;
        let wanted: Vec<(String, String, u16)> = defs
            .iter()
            .flat_map(|((ns, n), d)| {
                d.ports
                    .iter()
                    .map(move |(_, p, _)| (ns.clone(), n.clone(), *p))
            })
            .collect();
        listeners.retain(|k, (_, task)| {
            let keep = wanted.contains(k);
            if !keep {
                task.abort();
            }
            keep
        });
        *self
            .shared
            .services
            .write()
            .unwrap_or_else(|e| e.into_inner()) =
            by_name(defs.iter().map(|(k, d)| (k.clone(), Arc::new(d.clone()))));
        self.shared.generation.fetch_add(1, Ordering::Release);
        for (ns, name, port) in wanted {
            if listeners.contains_key(&(ns.clone(), name.clone(), port)) {
                continue;
            }
            let id = format!("{ns}/{name}");
            let alloc_key = format!("{id}/{port}");
            let first_port =
                defs[&(ns.clone(), name.clone())].ports.first().map(|p| p.1) == Some(port);
            let candidates: Vec<String> = [
                self.configured.get(&id).filter(|_| first_port).cloned(),
                allocations.get(&alloc_key).cloned(),
                Some("127.0.0.1:0".into()),
            ]
            .into_iter()
            .flatten()
            .collect();
            let mut bound = None;
            for c in &candidates {
                match tokio::net::TcpListener::bind(c).await {
                    Ok(l) => {
                        bound = Some(l);
                        break;
                    }
                    Err(e) => tracing::warn!(service = %id, address = %c, "cannot listen: {e}"),
                }
            }
            let Some(listener) = bound else { continue };
            let addr = listener.local_addr()?;
            allocations.insert(alloc_key, addr.to_string());
            let task = self.spawn_listener(listener.into_std()?, &ns, &name, port);
            tracing::info!(service = %id, port, address = %addr, "service listening");
            listeners.insert((ns, name, port), (addr, task));
        }
        crate::util::atomic::write(
            &self.allocations_path,
            serde_json::to_vec_pretty(&allocations)
                .unwrap_or_default()
                .as_slice(),
        )
    }
}

impl Proxy {
    /// Accepts on `listener` on one worker, the workers taking its connections in turn.
    fn spawn_listener(
        &self,
        listener: std::net::TcpListener,
        ns: &str,
        name: &str,
        port: u16,
    ) -> tokio::task::JoinHandle<()> {
        let (shared, spawner) = (self.shared.clone(), self.workers.spawner.clone());
        let key = Arc::new((ns.to_string(), name.to_string()));
        let (max, label) = (self.max_connections, format!("{ns}/{name}:{port}"));
        let home = spawner.next();
        self.workers.spawner.spawn(home, move |_| async move {
            // Registered with the reactor of the worker that accepts.
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => return tracing::warn!(listener = %label, "cannot listen: {e}"),
            };
            let mut acceptor = Acceptor::new(workers::MovableListener(listener), max, label);
            loop {
                let (conn, _) = acceptor.accept().await;
                let (shared, key) = (shared.clone(), key.clone());
                spawner.spawn(spawner.next(), move |pool| {
                    serve_connection(conn, shared, key, port, pool)
                });
            }
        })
    }
}

/// What every request on one client connection needs: one reference count per request.
struct Conn {
    shared: Arc<Shared>,
    key: Arc<Key>,
    port: u16,
    pool: Arc<upstream::Pool>,
    looked: std::sync::Mutex<Looked>,
}

/// A connection's route and definition of its own Service, as of `generation`.
struct Looked {
    generation: u64,
    route: Option<Arc<Route>>,
    def: Option<Arc<ServiceDef>>,
}

impl Conn {
    /// The route on this connection's Service and its definition: looked up again only
    /// after a change, so a request hashes no names.
    fn current(&self) -> (Option<Arc<Route>>, Option<Arc<ServiceDef>>) {
        let generation = self.shared.generation.load(Ordering::Acquire);
        let mut looked = self.looked.lock().unwrap_or_else(|e| e.into_inner());
        if looked.generation != generation {
            let (ns, name) = (self.key.0.as_str(), self.key.1.as_str());
            looked.route = lookup(
                &self.shared.routes.read().unwrap_or_else(|e| e.into_inner()),
                ns,
                name,
            )
            .cloned();
            looked.def = service_def(&self.shared, ns, name);
            looked.generation = generation;
        }
        (looked.route.clone(), looked.def.clone())
    }
}

/// Service `ns/name` as last synced.
fn service_def(shared: &Shared, ns: &str, name: &str) -> Option<Arc<ServiceDef>> {
    let services = shared.services.read().unwrap_or_else(|e| e.into_inner());
    lookup(&services, ns, name).cloned()
}

/// Whom a request to `backend` that reached no pod is counted against: the workload its
/// selector picks, else the Service itself.
fn unserved(
    shared: &Shared,
    ns: &str,
    (backend, def): (&str, Option<&ServiceDef>),
) -> Arc<Recorder> {
    match def.and_then(|d| d.workload.as_ref()) {
        Some(w) => shared.stats.recorder(ns, &w.deployment, &w.revision),
        None => shared.stats.recorder(ns, backend, ""),
    }
}

/// Endpoints `pick` remembers in its one pass: more than a local target runs for one
/// Service; past that a second pass finds the chosen one.
const PICK_AHEAD: usize = 16;

/// The host port of a ready endpoint selected by `backend`'s selector, round-robin, and
/// where its responses are counted.
fn pick(
    shared: &Shared,
    ns: &str,
    (backend, def): (&str, Option<&ServiceDef>),
    port: u16,
) -> Result<(u16, Arc<Recorder>), String> {
    let Some(def) = def else {
        return Err(format!("service {ns}/{backend} not found"));
    };
    let target = def
        .ports
        .iter()
        .find(|p| p.1 == port)
        .or(def.ports.first())
        .map(|p| &p.2);
    let eps = shared.endpoints.lock().unwrap_or_else(|e| e.into_inner());
    // This runs on every request: no allocation, cheap tests first.
    let eligible = |e: &crate::targets::local::runtime::Endpoint| {
        if !e.ready || e.namespace != ns || !routing::selects(&def.selector, &e.labels) {
            return None;
        }
        match target? {
            serde_json::Value::String(n) => e
                .ports
                .iter()
                .find(|p| p.0.as_deref() == Some(n.as_str()))
                .map(|p| p.2),
            v => {
                let n = v.as_u64()?;
                e.ports.iter().find(|p| p.1 as u64 == n).map(|p| p.2)
            }
        }
    };
    let mut ahead = [(0u16, 0usize); PICK_AHEAD];
    let mut count = 0;
    for (i, e) in eps.iter().enumerate() {
        if let Some(hp) = eligible(e) {
            if let Some(slot) = ahead.get_mut(count) {
                *slot = (hp, i);
            }
            count += 1;
        }
    }
    if count == 0 {
        return Err(format!("no ready endpoints for service {ns}/{backend}"));
    }
    let k = shared.next.fetch_add(1, Ordering::Relaxed) as usize % count;
    let (host_port, i) = match ahead.get(k) {
        Some(hit) => *hit,
        None => eps
            .iter()
            .enumerate()
            .filter_map(|(i, e)| Some((eligible(e)?, i)))
            .nth(k)
            .expect("counted above"),
    };
    let e = &eps[i];
    let revision = e
        .labels
        .get(crate::targets::local::runtime::spec::POD_TEMPLATE_HASH)
        .map_or("", String::as_str);
    Ok((
        host_port,
        shared.stats.recorder(ns, &e.deployment, revision),
    ))
}

/// Request sequence numbers mixed into uniform rolls (splitmix64's finalizer).
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Reads `spec.selector` etc. for one Service key (used by `get services`).
pub fn service_key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new("v1", "Service", ns, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::local::runtime::Endpoint;

    #[test]
    fn pick_goes_round_robin_over_more_endpoints_than_it_remembers() {
        let n = PICK_AHEAD + 4;
        let endpoints: Vec<Endpoint> = (0..n)
            .map(|i| Endpoint {
                namespace: "ns".into(),
                deployment: "web".into(),
                pod: format!("web-{i}"),
                labels: [("app".to_string(), "web".to_string())].into(),
                // One not ready and one of another app in between: never picked.
                ready: i != 3,
                ports: vec![(Some("http".into()), 80, 10_000 + i as u16)],
            })
            .chain(std::iter::once(Endpoint {
                namespace: "ns".into(),
                deployment: "db".into(),
                pod: "db-0".into(),
                labels: [("app".to_string(), "db".to_string())].into(),
                ready: true,
                ports: vec![(Some("http".into()), 80, 9_999)],
            }))
            .collect();
        let def = ServiceDef {
            selector: [("app".to_string(), "web".to_string())].into(),
            ports: vec![(None, 80, serde_json::json!("http"))],
            workload: None,
        };
        let shared = Shared {
            services: RwLock::default(),
            routes: RwLock::default(),
            generation: AtomicU64::new(0),
            endpoints: Arc::new(std::sync::Mutex::new(endpoints)),
            next: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            seed: 0,
            stats: Arc::new(Stats::default()),
        };
        let mut hits = BTreeMap::new();
        for _ in 0..2 * (n - 1) {
            let (port, recorder) = pick(&shared, "ns", ("web", Some(&def)), 80).unwrap();
            assert_eq!(recorder.deployment(), "web");
            *hits.entry(port).or_insert(0) += 1;
        }
        assert_eq!(hits.len(), n - 1, "{hits:?}");
        assert!(hits.values().all(|h| *h == 2), "{hits:?}");
        assert!(!hits.contains_key(&10_003));
        assert!(pick(&shared, "ns", ("nope", None), 80).is_err());
    }
}
