//! The supervisor: one long-lived thread that makes the running processes match the
//! stored Deployments. It reloads them when told the store changed, starts and stops
//! pods as `rollout::decide` says, probes containers, restarts crashed or unhealthy ones
//! with exponential backoff (as CrashLoopBackOff does), and writes each Deployment's
//! status with the Kubernetes fields. Children die with gitcanary (`PR_SET_PDEATHSIG`),
//! and a restarted gitcanary reaps any group left over before starting them again.

use super::process::{self, PidRecords};
use super::rollout::{self, PodView, Step};
use super::spec::{self, ContainerPlan, DeploymentPlan, Probe, ProbeAction};
use crate::targets::local::LocalStore;
use crate::util::time::{rfc3339_secs, unix_now};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(100);
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Time between leaving the endpoints and SIGTERM.
const DRAIN: Duration = Duration::from_millis(1000);

/// A ready-or-not replica, as Services see it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Endpoint {
    /// Namespace.
    pub namespace: String,
    /// The Deployment the pod belongs to.
    pub deployment: String,
    /// Pod name.
    pub pod: String,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// Ready.
    pub ready: bool,
    /// (port name, containerPort, host port) of every container port.
    pub ports: Vec<(Option<String>, u16, u16)>,
}

/// Shared view of the pods for the proxy and the CLI.
pub type Endpoints = Arc<Mutex<Vec<Endpoint>>>;

/// Tells the supervisor to re-read the store.
#[derive(Clone)]
pub struct Notifier(Sender<Msg>);

impl Notifier {
    /// The store changed.
    pub fn notify(&self) {
        let _ = self.0.send(Msg::Changed);
    }
}

/// Messages to the supervisor thread.
pub enum Msg {
    Changed,
    Shutdown,
}

/// Handle to the supervisor thread.
pub struct Runtime {
    tx: Sender<Msg>,
    thread: Option<std::thread::JoinHandle<()>>,
    endpoints: Endpoints,
}

impl Runtime {
    /// Starts the supervisor for the store at `state_dir`.
    pub fn start(
        state_dir: &Path,
        images: BTreeMap<String, Vec<String>>,
    ) -> std::io::Result<Runtime> {
        let store = LocalStore::open(state_dir).map_err(std::io::Error::other)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let endpoints: Endpoints = Arc::default();
        let mut sup = Supervisor {
            store,
            state_dir: state_dir.to_path_buf(),
            images,
            self_exe: std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "gitcanary".into()),
            pids: PidRecords::new(state_dir),
            deployments: BTreeMap::new(),
            endpoints: endpoints.clone(),
            counter: 0,
        };
        let reaped = sup.pids.reap_all();
        if reaped > 0 {
            tracing::info!(reaped, "reaped processes left by a previous gitcanary");
        }
        let thread = std::thread::Builder::new()
            .name("runtime".into())
            .spawn(move || sup.run(rx))?;
        Ok(Runtime {
            tx,
            thread: Some(thread),
            endpoints,
        })
    }

    /// Tells the supervisor the store changed.
    pub fn notify(&self) {
        let _ = self.tx.send(Msg::Changed);
    }

    /// A handle other subsystems use to say the store changed.
    pub fn notifier(&self) -> Notifier {
        Notifier(self.tx.clone())
    }

    /// The current endpoints.
    pub fn endpoints(&self) -> Endpoints {
        self.endpoints.clone()
    }

    /// Stops every pod (SIGTERM, then SIGKILL after the grace period) and the thread.
    pub fn shutdown(mut self) {
        let _ = self.tx.send(Msg::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Default)]
struct ProbeState {
    next_at: Option<Instant>,
    fails: u32,
    successes: u32,
}

impl ProbeState {
    /// A fresh state for a container just started: first run after the initial delay.
    fn starting(probe: Option<&Probe>) -> ProbeState {
        ProbeState {
            next_at: probe.map(|p| Instant::now() + p.initial_delay),
            ..Default::default()
        }
    }
}

struct Container {
    plan: ContainerPlan,
    child: Option<Child>,
    restarts: u32,
    backoff: Duration,
    restart_at: Option<Instant>,
    started_at: Instant,
    ready: bool,
    readiness: ProbeState,
    liveness: ProbeState,
    last_exit: Option<String>,
}

struct Pod {
    name: String,
    hash: String,
    ports: HashMap<u16, u16>,
    containers: Vec<Container>,
    ready_since: Option<Instant>,
    terminate_deadline: Option<Instant>,
    sigterm_at: Option<Instant>,
    /// `preStop` handlers still running; SIGTERM follows when none is left.
    pre_stop_pending: Option<Arc<std::sync::atomic::AtomicUsize>>,
    labels: BTreeMap<String, String>,
    grace: Duration,
}

impl Pod {
    fn ready(&self) -> bool {
        self.terminate_deadline.is_none()
            && self.containers.iter().all(|c| c.ready && c.child.is_some())
    }
}

struct DeployState {
    plan: DeploymentPlan,
    spec_hash: String,
    generation: u64,
    pods: Vec<Pod>,
    last_status: String,
}

struct Supervisor {
    store: LocalStore,
    state_dir: PathBuf,
    images: BTreeMap<String, Vec<String>>,
    self_exe: String,
    pids: PidRecords,
    deployments: BTreeMap<(String, String), DeployState>,
    endpoints: Endpoints,
    counter: u64,
}

/// `runtime/replicas.json`: replica counts set by the canary engine, `namespace/name`.
pub fn replica_overrides(state_dir: &Path) -> BTreeMap<String, u32> {
    std::fs::read(state_dir.join("runtime").join("replicas.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Where the runtime writes a Deployment's status (Kubernetes' `status` fields plus
/// `templateHash`).
pub fn deployment_status_path(state_dir: &Path, ns: &str, name: &str) -> PathBuf {
    state_dir
        .join("status")
        .join("apps")
        .join("Deployment")
        .join(ns)
        .join(format!("{name}.json"))
}

/// A Deployment's rollout as the runtime last reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RolloutState {
    /// Replicas wanted: the canary engine's override, else `spec_replicas`.
    pub wanted: u32,
    /// Replicas available.
    pub available: u32,
    /// Replicas running the current template.
    pub updated: u32,
    /// Replicas running, of any template, not counting those shutting down.
    pub replicas: u32,
    /// The template hash the runtime runs.
    pub template_hash: String,
    /// Since when (Unix seconds) the `Available` condition has been False with reason
    /// `MinimumReplicasUnavailable`.
    pub unavailable_since: Option<u64>,
}

/// Reads a Deployment's rollout state; `spec_replicas` is its stored `spec.replicas`.
pub fn rollout_state(state_dir: &Path, ns: &str, name: &str, spec_replicas: u32) -> RolloutState {
    let st: serde_json::Value = std::fs::read(deployment_status_path(state_dir, ns, name))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    RolloutState {
        wanted: replica_overrides(state_dir)
            .get(&format!("{ns}/{name}"))
            .copied()
            .unwrap_or(spec_replicas),
        available: st["availableReplicas"].as_u64().unwrap_or(0) as u32,
        updated: st["updatedReplicas"].as_u64().unwrap_or(0) as u32,
        replicas: st["replicas"].as_u64().unwrap_or(0) as u32,
        template_hash: st["templateHash"].as_str().unwrap_or_default().to_string(),
        unavailable_since: st["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| {
                c["type"] == "Available"
                    && c["status"] == "False"
                    && c["reason"] == "MinimumReplicasUnavailable"
            })
            .and_then(|c| crate::util::time::parse_rfc3339(c["lastTransitionTime"].as_str()?))
            .map(|t| t as u64),
    }
}

/// Sets (or clears) the replica override of one Deployment.
pub fn set_replica_override(
    state_dir: &Path,
    ns: &str,
    name: &str,
    replicas: Option<u32>,
) -> std::io::Result<()> {
    let mut all = replica_overrides(state_dir);
    let key = format!("{ns}/{name}");
    if all.get(&key).copied() == replicas {
        return Ok(());
    }
    match replicas {
        Some(n) => all.insert(key, n),
        None => all.remove(&key),
    };
    crate::util::atomic::write(
        &state_dir.join("runtime").join("replicas.json"),
        &serde_json::to_vec_pretty(&all).unwrap_or_default(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn run_probe(
    p: &Probe,
    c: &ContainerPlan,
    ports: &HashMap<u16, u16>,
    env: &[(String, String)],
) -> bool {
    match &p.action {
        ProbeAction::Http { path, port } => {
            let Some(port) = spec::resolve_port(port, c, ports) else {
                return false;
            };
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let Ok(mut s) = TcpStream::connect_timeout(&addr, p.timeout) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(p.timeout));
            let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: gitcanary-probe\r\n\r\n");
            if s.write_all(req.as_bytes()).is_err() {
                return false;
            }
            let mut buf = [0u8; 32];
            let n = s.read(&mut buf).unwrap_or(0);
            let line = String::from_utf8_lossy(&buf[..n]);
            line.split_whitespace()
                .nth(1)
                .and_then(|c| c.parse::<u16>().ok())
                .is_some_and(|c| (200..400).contains(&c))
        }
        ProbeAction::Sleep { duration } => {
            std::thread::sleep(*duration);
            true
        }
        ProbeAction::Tcp { port } => spec::resolve_port(port, c, ports).is_some_and(|port| {
            TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), p.timeout).is_ok()
        }),
        ProbeAction::Exec { command } => {
            let command: Vec<String> = command
                .iter()
                .map(|a| spec::rewrite_ports(a, ports))
                .collect();
            let Some((prog, args)) = command.split_first() else {
                return false;
            };
            let prog = if prog == "gitcanary" {
                std::env::current_exe()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| prog.clone())
            } else {
                prog.clone()
            };
            let Ok(mut child) = std::process::Command::new(prog)
                .args(args)
                .env_clear()
                .envs(process::base_env())
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
            else {
                return false;
            };
            let deadline = Instant::now() + p.timeout;
            loop {
                match child.try_wait() {
                    Ok(Some(st)) => return st.success(),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return false;
                    }
                }
            }
        }
    }
}

impl Supervisor {
    fn run(&mut self, rx: Receiver<Msg>) {
        self.reload();
        let mut last_reload = Instant::now();
        loop {
            match rx.recv_timeout(TICK) {
                Ok(Msg::Changed) => {
                    self.reload();
                    last_reload = Instant::now();
                }
                Ok(Msg::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    if last_reload.elapsed() > Duration::from_secs(5) {
                        self.reload();
                        last_reload = Instant::now();
                    }
                }
            }
            self.tick();
        }
        self.stop_all();
    }

    fn lookup(&self) -> impl Fn(&str, &str, &str) -> Option<serde_json::Value> + '_ {
        move |kind, ns, name| self.store.get_core(kind, ns, name)
    }

    /// Re-reads every stored Deployment and re-plans it.
    fn reload(&mut self) {
        let keys = match self.store.list("apps", "Deployment") {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!("runtime: cannot read the store: {e}");
                return;
            }
        };
        let overrides = replica_overrides(&self.state_dir);
        let mut seen = Vec::new();
        for key in &keys {
            let Ok(Some(mut obj)) = self.store.get(key) else {
                continue;
            };
            // The canary engine scales its targets here, not in Git: no fight over
            // `replicas` with the sync (flagger #1121, #1575).
            if let Some(n) = overrides.get(&format!("{}/{}", key.namespace, key.name)) {
                obj["spec"]["replicas"] = (*n).into();
            }
            let plan = {
                let lookup = self.lookup();
                spec::plan_deployment(&obj, &lookup, &self.images)
            };
            let spec_hash = crate::manifest::object::sha256_hex(
                &crate::manifest::object::canonical_json(&obj["spec"]),
            );
            let id = (key.namespace.clone(), key.name.clone());
            seen.push(id.clone());
            match self.deployments.get_mut(&id) {
                Some(d) => {
                    if d.spec_hash != spec_hash {
                        d.generation += 1;
                        d.spec_hash = spec_hash;
                    }
                    d.plan = plan;
                }
                None => {
                    let generation = self.read_status(&id)["observedGeneration"]
                        .as_u64()
                        .unwrap_or(0)
                        + 1;
                    self.deployments.insert(
                        id,
                        DeployState {
                            plan,
                            spec_hash,
                            generation,
                            pods: vec![],
                            last_status: String::new(),
                        },
                    );
                }
            }
        }
        // Deployments gone from the store: scale to zero, then forget.
        for (id, d) in self.deployments.iter_mut() {
            if !seen.contains(id) {
                d.plan.replicas = 0;
                d.generation = u64::MAX;
            }
        }
    }

    fn status_path(&self, id: &(String, String)) -> PathBuf {
        deployment_status_path(&self.state_dir, &id.0, &id.1)
    }

    fn read_status(&self, id: &(String, String)) -> serde_json::Value {
        std::fs::read(self.status_path(id))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn start_pod(&mut self, id: &(String, String), plan: &spec::PodPlan) -> Pod {
        self.counter += 1;
        let hash = spec::pod_template_hash(&plan.template_hash);
        let name = format!(
            "{}-{}-{:05x}",
            id.1,
            hash,
            (self.counter * 7919 + std::process::id() as u64) % 0xfffff
        );
        let mut ports = HashMap::new();
        for c in &plan.containers {
            for p in &c.ports {
                ports.entry(p.container_port).or_insert_with(free_port);
            }
        }
        let mut pod = Pod {
            name,
            hash: plan.template_hash.clone(),
            ports,
            containers: plan
                .containers
                .iter()
                .map(|c| Container {
                    plan: c.clone(),
                    child: None,
                    restarts: 0,
                    backoff: BACKOFF_START,
                    restart_at: Some(Instant::now()),
                    started_at: Instant::now(),
                    ready: c.readiness.is_none(),
                    readiness: ProbeState::default(),
                    liveness: ProbeState::default(),
                    last_exit: None,
                })
                .collect(),
            ready_since: None,
            terminate_deadline: None,
            sigterm_at: None,
            pre_stop_pending: None,
            labels: {
                let mut labels = plan.labels.clone();
                labels.insert(spec::POD_TEMPLATE_HASH.into(), hash.to_string());
                labels
            },
            grace: plan.grace,
        };
        for i in 0..pod.containers.len() {
            self.start_container(&id.0, &mut pod, i);
        }
        tracing::info!(deployment = %format!("{}/{}", id.0, id.1), pod = %pod.name, "pod started");
        pod
    }

    fn start_container(&self, ns: &str, pod: &mut Pod, i: usize) {
        let exec = spec::materialize(
            &pod.containers[i].plan,
            &pod.name,
            &pod.ports,
            &self.self_exe,
        );
        let cname = pod.containers[i].plan.name.clone();
        let log = self
            .state_dir
            .join("logs")
            .join(ns)
            .join(&pod.name)
            .join(format!("{cname}.log"));
        let workdir = self.state_dir.join("pods").join(ns).join(&pod.name);
        let _ = std::fs::create_dir_all(&workdir);
        let c = &mut pod.containers[i];
        c.restart_at = None;
        c.started_at = Instant::now();
        c.ready = c.plan.readiness.is_none();
        c.readiness = ProbeState::starting(c.plan.readiness.as_ref());
        c.liveness = ProbeState::starting(c.plan.liveness.as_ref());
        match process::spawn(&exec, &log, &workdir) {
            Ok(child) => {
                self.pids
                    .add(&format!("{}-{}", pod.name, cname), child.id());
                c.child = Some(child);
            }
            Err(e) => {
                c.last_exit = Some(format!(
                    "cannot start {:?}: {e}",
                    exec.argv.first().cloned().unwrap_or_default()
                ));
                c.restart_at = Some(Instant::now() + c.backoff);
                c.backoff = (c.backoff * 2).min(BACKOFF_MAX);
                c.restarts += 1;
            }
        }
    }

    fn tick(&mut self) {
        let ids: Vec<(String, String)> = self.deployments.keys().cloned().collect();
        for id in ids {
            let mut d = self.deployments.remove(&id).expect("listed");
            self.tick_deployment(&id, &mut d);
            let gone = d.generation == u64::MAX && d.pods.is_empty();
            if gone {
                let _ = std::fs::remove_file(self.status_path(&id));
            } else {
                self.write_status(&id, &mut d);
                self.deployments.insert(id, d);
            }
        }
        let mut eps = Vec::new();
        for ((ns, dep), d) in &self.deployments {
            for p in &d.pods {
                let ports = p
                    .containers
                    .iter()
                    .flat_map(|c| {
                        c.plan.ports.iter().map(|pd| {
                            (
                                pd.name.clone(),
                                pd.container_port,
                                p.ports.get(&pd.container_port).copied().unwrap_or(0),
                            )
                        })
                    })
                    .collect();
                eps.push(Endpoint {
                    namespace: ns.clone(),
                    deployment: dep.clone(),
                    pod: p.name.clone(),
                    labels: p.labels.clone(),
                    ready: p.ready(),
                    ports,
                });
            }
        }
        let mut shared = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        if *shared != eps {
            // Also on disk, for `gitcanary get` and tests, replaced atomically.
            let path = self.state_dir.join("status").join("endpoints.json");
            let _ = crate::util::atomic::write(
                &path,
                serde_json::to_string_pretty(&eps)
                    .unwrap_or_default()
                    .as_bytes(),
            );
            *shared = eps;
        }
    }

    fn tick_deployment(&mut self, id: &(String, String), d: &mut DeployState) {
        let now = Instant::now();
        self.tick_containers(id, d, now);
        Self::reap_terminating(d, now);
        self.roll(id, d, now);
    }

    /// Exits, restarts with backoff, and probes of every running pod's containers.
    fn tick_containers(&mut self, id: &(String, String), d: &mut DeployState, now: Instant) {
        for pod in d.pods.iter_mut() {
            let pod_name = pod.name.clone();
            for i in 0..pod.containers.len() {
                let key = format!("{}-{}", pod_name, pod.containers[i].plan.name);
                // Exits.
                let exited = pod.containers[i]
                    .child
                    .as_mut()
                    .and_then(|ch| ch.try_wait().ok().flatten());
                if let Some(status) = exited {
                    let c = &mut pod.containers[i];
                    c.child = None;
                    c.ready = false;
                    self.pids.remove(&key);
                    if pod.terminate_deadline.is_none() {
                        // Reset the backoff after a run long enough to count as healthy.
                        if c.started_at.elapsed() > Duration::from_secs(600) {
                            c.backoff = BACKOFF_START;
                        }
                        c.last_exit = Some(format!("exited with {status}"));
                        c.restarts += 1;
                        c.restart_at = Some(now + c.backoff);
                        tracing::warn!(pod = %pod_name, container = %c.plan.name, restarts = c.restarts, backoff = ?c.backoff, "container exited ({status}); restarting with backoff");
                        c.backoff = (c.backoff * 2).min(BACKOFF_MAX);
                    }
                }
                if pod.terminate_deadline.is_some() {
                    continue;
                }
                if pod.containers[i].child.is_none()
                    && pod.containers[i].restart_at.is_some_and(|t| t <= now)
                {
                    self.start_container(&id.0, pod, i);
                    continue;
                }
                if pod.containers[i].child.is_none() {
                    continue;
                }
                // Probes.
                let exec_env = spec::materialize(
                    &pod.containers[i].plan,
                    &pod_name,
                    &pod.ports,
                    &self.self_exe,
                )
                .env;
                let c = &mut pod.containers[i];
                if let Some(p) = c.plan.readiness.clone() {
                    if c.readiness.next_at.is_some_and(|t| t <= now) {
                        c.readiness.next_at = Some(now + p.period);
                        if run_probe(&p, &c.plan, &pod.ports, &exec_env) {
                            c.readiness.fails = 0;
                            c.readiness.successes += 1;
                            if c.readiness.successes >= p.success_threshold {
                                c.ready = true;
                            }
                        } else {
                            c.readiness.successes = 0;
                            c.readiness.fails += 1;
                            if c.readiness.fails >= p.failure_threshold || !c.ready {
                                c.ready = false;
                            }
                        }
                    }
                }
                if let Some(p) = c.plan.liveness.clone() {
                    if c.liveness.next_at.is_some_and(|t| t <= now) {
                        c.liveness.next_at = Some(now + p.period);
                        if run_probe(&p, &c.plan, &pod.ports, &exec_env) {
                            c.liveness.fails = 0;
                        } else {
                            c.liveness.fails += 1;
                            if c.liveness.fails >= p.failure_threshold {
                                tracing::warn!(pod = %pod_name, container = %c.plan.name, "liveness probe failed {} times; restarting", c.liveness.fails);
                                if let Some(ch) = &c.child {
                                    process::signal_group(ch.id(), libc::SIGKILL);
                                }
                                c.liveness.fails = 0;
                            }
                        }
                    }
                }
            }
            if pod.ready() {
                pod.ready_since.get_or_insert(now);
            } else {
                pod.ready_since = None;
            }
        }
    }

    /// Terminating pods: SIGTERM after the drain, SIGKILL past the grace period;
    /// forgets them once all their containers exited.
    fn reap_terminating(d: &mut DeployState, now: Instant) {
        d.pods.retain_mut(|p| {
            let Some(deadline) = p.terminate_deadline else {
                return true;
            };
            if p.pre_stop_pending
                .as_ref()
                .is_some_and(|n| n.load(std::sync::atomic::Ordering::SeqCst) == 0)
            {
                p.pre_stop_pending = None;
                p.sigterm_at = Some(now);
            }
            if p.sigterm_at.is_some_and(|t| now >= t) {
                p.sigterm_at = None;
                for c in &p.containers {
                    if let Some(ch) = &c.child {
                        process::signal_group(ch.id(), libc::SIGTERM);
                    }
                }
            }
            if now >= deadline {
                for c in &p.containers {
                    if let Some(ch) = &c.child {
                        process::signal_group(ch.id(), libc::SIGKILL);
                    }
                }
            }
            p.containers.iter().any(|c| c.child.is_some())
        });
    }

    /// Starts and stops pods toward the plan's replicas and template.
    fn roll(&mut self, id: &(String, String), d: &mut DeployState, now: Instant) {
        let Ok(pod_plan) = d.plan.pod.clone() else {
            return;
        };
        let views: Vec<PodView> = d
            .pods
            .iter()
            .filter(|p| p.terminate_deadline.is_none())
            .map(|p| PodView {
                name: p.name.clone(),
                hash: p.hash.clone(),
                available: p
                    .ready_since
                    .is_some_and(|t| t.elapsed() >= d.plan.min_ready),
            })
            .collect();
        for step in rollout::decide(
            d.plan.replicas,
            &pod_plan.template_hash,
            d.plan.strategy,
            &views,
        ) {
            match step {
                Step::Start => {
                    let pod = self.start_pod(id, &pod_plan);
                    d.pods.push(pod);
                }
                Step::Stop(name) => {
                    if let Some(p) = d.pods.iter_mut().find(|p| p.name == name) {
                        self.stop_pod(p, now);
                    }
                }
            }
        }
    }

    /// Starts stopping a pod: out of the endpoints at once, then its preStop
    /// handlers or a short drain, SIGTERM, and SIGKILL past the grace period.
    fn stop_pod(&self, p: &mut Pod, now: Instant) {
        tracing::info!(pod = %p.name, "stopping pod");
        for c in &mut p.containers {
            c.ready = false;
        }
        let handlers: Vec<_> = p
            .containers
            .iter()
            .filter(|c| c.child.is_some())
            .filter_map(|c| {
                let action = c.plan.pre_stop.clone()?;
                let env = spec::materialize(&c.plan, &p.name, &p.ports, &self.self_exe).env;
                Some((action, c.plan.clone(), env))
            })
            .collect();
        if handlers.is_empty() {
            // Leave the endpoints first, signal after a short drain: the
            // proxy stops routing new requests before the process stops
            // accepting them (what a preStop sleep does on Kubernetes).
            p.terminate_deadline = Some(now + DRAIN + p.grace);
            p.sigterm_at = Some(now + DRAIN);
        } else {
            // Kubernetes: preStop handlers run first, SIGTERM follows,
            // and the grace period counts from now.
            let pending = Arc::new(std::sync::atomic::AtomicUsize::new(handlers.len()));
            for (action, plan, env) in handlers {
                let (pending, ports, grace) = (pending.clone(), p.ports.clone(), p.grace);
                std::thread::spawn(move || {
                    let probe = spec::Probe {
                        action,
                        initial_delay: Duration::ZERO,
                        period: grace,
                        timeout: grace,
                        failure_threshold: 1,
                        success_threshold: 1,
                    };
                    if !run_probe(&probe, &plan, &ports, &env) {
                        tracing::warn!(container = %plan.name, "preStop handler failed");
                    }
                    pending.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
            p.pre_stop_pending = Some(pending);
            p.terminate_deadline = Some(now + p.grace);
            p.sigterm_at = None;
        }
    }

    fn write_status(&self, id: &(String, String), d: &mut DeployState) {
        let live: Vec<&Pod> = d
            .pods
            .iter()
            .filter(|p| p.terminate_deadline.is_none())
            .collect();
        let hash = d
            .plan
            .pod
            .as_ref()
            .map(|p| p.template_hash.clone())
            .unwrap_or_default();
        let updated = live.iter().filter(|p| p.hash == hash).count();
        let ready = live.iter().filter(|p| p.ready()).count();
        let available = live
            .iter()
            .filter(|p| {
                p.ready_since
                    .is_some_and(|t| t.elapsed() >= d.plan.min_ready)
            })
            .count();
        let replicas = d.plan.replicas as usize;
        let crash: Vec<String> = live
            .iter()
            .flat_map(|p| {
                p.containers
                    .iter()
                    .filter(|c| c.restart_at.is_some() && c.restarts > 0)
                    .map(move |c| (p, c))
            })
            .map(|(p, c)| {
                format!(
                    "pod {} container {}: CrashLoopBackOff ({}), restarts {}",
                    p.name,
                    c.plan.name,
                    c.last_exit.clone().unwrap_or_default(),
                    c.restarts
                )
            })
            .collect();
        let restarts: u32 = live
            .iter()
            .flat_map(|p| p.containers.iter().map(|c| c.restarts))
            .sum();
        let (avail_status, avail_reason, avail_msg) = if available
            >= replicas.saturating_sub(match d.plan.strategy {
                spec::Strategy::Rolling {
                    max_unavailable, ..
                } => max_unavailable as usize,
                spec::Strategy::Recreate => 0,
            })
            && (replicas == 0 || available > 0)
        {
            (
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".to_string(),
            )
        } else {
            (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".to_string(),
            )
        };
        let (prog_status, prog_reason, prog_msg) = match &d.plan.pod {
            Err(e) => ("False", "InvalidPodTemplate", e.clone()),
            Ok(_) if updated == replicas && available >= replicas && live.len() == replicas => (
                "True",
                "NewReplicaSetAvailable",
                format!("{}/{} has successfully progressed.", id.0, id.1),
            ),
            Ok(_) => (
                "True",
                "ReplicaSetUpdated",
                format!(
                    "{}/{} is progressing: {updated} of {replicas} updated, {available} available.",
                    id.0, id.1
                ),
            ),
        };
        let now = rfc3339_secs(unix_now());
        let old = self.read_status(id);
        let cond = |ty: &str, status: &str, reason: &str, message: String| {
            let prev = old["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == ty))
                .cloned()
                .unwrap_or_default();
            let since = if prev["status"] == status {
                prev["lastTransitionTime"]
                    .as_str()
                    .unwrap_or(&now)
                    .to_string()
            } else {
                now.clone()
            };
            serde_json::json!({"type": ty, "status": status, "reason": reason, "message": message, "lastTransitionTime": since, "lastUpdateTime": now})
        };
        let mut conditions = vec![
            cond("Available", avail_status, avail_reason, avail_msg),
            cond("Progressing", prog_status, prog_reason, prog_msg),
        ];
        if !crash.is_empty() {
            conditions.push(cond(
                "ReplicaFailure",
                "True",
                "CrashLoopBackOff",
                crash.join("; "),
            ));
        }
        let generation = if d.generation == u64::MAX {
            old["observedGeneration"].as_u64().unwrap_or(0)
        } else {
            d.generation
        };
        let status = serde_json::json!({
            "observedGeneration": generation,
            "replicas": live.len(),
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "unavailableReplicas": replicas.saturating_sub(available),
            "restarts": restarts,
            "templateHash": hash,
            "conditions": conditions,
        });
        // Write only when something other than the update time changed.
        let mut fingerprint = status.clone();
        for c in fingerprint["conditions"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            c["lastUpdateTime"] = serde_json::Value::Null;
        }
        let fp = fingerprint.to_string();
        if fp != d.last_status {
            d.last_status = fp;
            let _ = crate::util::atomic::write(
                &self.status_path(id),
                serde_json::to_string_pretty(&status)
                    .unwrap_or_default()
                    .as_bytes(),
            );
        }
    }

    fn stop_all(&mut self) {
        let mut deadline = Instant::now();
        for d in self.deployments.values_mut() {
            for p in &mut d.pods {
                deadline = deadline.max(Instant::now() + p.grace.min(Duration::from_secs(30)));
                for c in &p.containers {
                    if let Some(ch) = &c.child {
                        process::signal_group(ch.id(), libc::SIGTERM);
                    }
                }
            }
        }
        loop {
            let mut alive = false;
            for d in self.deployments.values_mut() {
                for p in &mut d.pods {
                    for c in &mut p.containers {
                        if let Some(ch) = &mut c.child {
                            if ch.try_wait().ok().flatten().is_some() {
                                c.child = None;
                                self.pids.remove(&format!("{}-{}", p.name, c.plan.name));
                            } else if Instant::now() >= deadline {
                                process::signal_group(ch.id(), libc::SIGKILL);
                                let _ = ch.wait();
                                c.child = None;
                                self.pids.remove(&format!("{}-{}", p.name, c.plan.name));
                            } else {
                                alive = true;
                            }
                        }
                    }
                }
            }
            if !alive {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
