//! Leader election against the API server: the thin loop around [`super::lease::Elector`].
//! It reads and writes one `coordination.k8s.io/v1` Lease in `target.kubernetes.namespace`
//! every retry period and publishes the outcome through a [`Gate`]. Every writer checks
//! the gate right before it writes: the Kubernetes target before each object's apply or
//! deletion, each hook's creation and each inventory ConfigMap; image automation before
//! its push; the canary engine before each step. The gate is a deadline, not a flag the loop
//! must remember to clear: it closes by itself when the last renewal is older than the
//! renew deadline, even if the loop is stuck in a request to an API server that hangs.

use super::lease::{Action, Elector, LeaseSpec, Timing};
use crate::helm::hooks::{Event, Hook};
use crate::manifest::{Object, ObjectKey};
use crate::sync::{ApplyPlan, Inventory};
use crate::targets::{
    ApplyReport, HookResult, HookRunner, ObjectDiff, Result as TargetResult, Target,
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, warn};

/// The Lease's name, in `target.kubernetes.namespace`.
pub const LEASE_NAME: &str = "gitcanary-leader-election";

/// What this replica is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// It holds the lease and may write.
    Leader,
    /// Another replica holds the lease (named when known), or none could be taken yet.
    Standby {
        /// The holder's identity.
        holder: Option<String>,
    },
}

impl Role {
    /// The one-line status `get sources` shows for a standby.
    pub fn standby_message(&self, namespace: &str) -> Option<String> {
        match self {
            Role::Leader => None,
            Role::Standby { holder } => Some(format!(
                "standby: Lease {namespace}/{LEASE_NAME} is held by {}",
                holder.as_deref().unwrap_or("nobody yet")
            )),
        }
    }
}

/// Writes are refused: this replica does not hold the lease.
#[derive(Debug, thiserror::Error)]
#[error("not the leader: writes stopped (Lease {namespace}/{LEASE_NAME}{})", holder.as_deref().map(|h| format!(" is held by {h}")).unwrap_or_default())]
pub struct NotLeader {
    /// The Lease's namespace.
    pub namespace: String,
    /// The holder, when known.
    pub holder: Option<String>,
}

/// The write permit. Cloned into every writer; cheap to check.
#[derive(Clone, Debug)]
pub struct Gate(Option<Arc<Shared>>);

/// Where a gate reads the time: the monotonic clock, or a test's fake one.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

struct Shared {
    namespace: String,
    /// Writes are allowed before this instant.
    until: Mutex<Option<Instant>>,
    role: watch::Sender<Role>,
    clock: Clock,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("namespace", &self.namespace)
            .field("until", &self.until)
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// A gate that is always open: one replica and no election (the local target).
    pub fn open() -> Gate {
        Gate(None)
    }

    fn elected(namespace: &str) -> Gate {
        Gate::elected_with_clock(namespace, Arc::new(Instant::now))
    }

    /// A closed gate for the Lease in `namespace`, reading the time from `clock`; it
    /// opens when the election publishes a renewal. Tests pass a fake clock.
    pub fn elected_with_clock(namespace: &str, clock: Clock) -> Gate {
        let (role, _) = watch::channel(Role::Standby { holder: None });
        Gate(Some(Arc::new(Shared {
            namespace: namespace.to_string(),
            until: Mutex::new(None),
            role,
            clock,
        })))
    }

    /// `Ok` while this replica may write. Every writer checks right before each
    /// object's write, so a renewal failure stops a long batch on time.
    pub fn check(&self) -> Result<(), NotLeader> {
        let Some(s) = &self.0 else { return Ok(()) };
        let until = *s.until.lock().unwrap_or_else(|e| e.into_inner());
        if until.is_some_and(|u| (s.clock)() < u) {
            return Ok(());
        }
        let holder = match &*s.role.borrow() {
            Role::Standby { holder } => holder.clone(),
            Role::Leader => None,
        };
        Err(NotLeader {
            namespace: s.namespace.clone(),
            holder,
        })
    }

    /// Whether an election runs at all.
    pub fn is_elected(&self) -> bool {
        self.0.is_some()
    }

    /// The role as last published; always `Leader` without an election.
    pub fn role(&self) -> Role {
        match &self.0 {
            None => Role::Leader,
            Some(s) if self.check().is_err() => match &*s.role.borrow() {
                Role::Leader => Role::Standby { holder: None },
                standby => standby.clone(),
            },
            Some(_) => Role::Leader,
        }
    }

    /// Changes of role, for the run loop and the canary engine (`None` without an
    /// election: the role never changes).
    pub fn subscribe(&self) -> Option<watch::Receiver<Role>> {
        self.0.as_ref().map(|s| s.role.subscribe())
    }

    /// The namespace of the Lease, when elected.
    pub fn namespace(&self) -> Option<&str> {
        self.0.as_ref().map(|s| s.namespace.as_str())
    }

    /// Records the outcome of an election round: writes are allowed until `until`.
    pub fn publish(&self, until: Option<Instant>, role: Role) {
        let Some(s) = &self.0 else { return };
        *s.until.lock().unwrap_or_else(|e| e.into_inner()) = until;
        s.role.send_if_modified(|r| {
            let changed = *r != role;
            *r = role;
            changed
        });
    }
}

/// A target whose writes pass the gate: an apply (with its prunes) and a hook run are
/// refused unless this replica holds the lease at that moment. Reads pass through.
pub struct Gated {
    inner: Box<dyn Target>,
    gate: Gate,
}

impl Gated {
    /// Wraps `inner`, whose own writes wait for `gate` too.
    pub fn new(mut inner: Box<dyn Target>, gate: Gate) -> Gated {
        inner.set_gate(gate.clone());
        Gated { inner, gate }
    }
}

impl Target for Gated {
    fn inventory(&self) -> TargetResult<Inventory> {
        self.inner.inventory()
    }

    fn apply(
        &self,
        plan: &ApplyPlan,
        desired: &[Object],
        inventory: &Inventory,
        revision: &str,
    ) -> TargetResult<ApplyReport> {
        self.gate.check()?;
        self.inner.apply(plan, desired, inventory, revision)
    }

    fn get(&self, key: &ObjectKey) -> TargetResult<Option<serde_json::Value>> {
        self.inner.get(key)
    }

    fn diff(&self, desired: &[Object], inventory: &Inventory) -> TargetResult<Vec<ObjectDiff>> {
        self.inner.diff(desired, inventory)
    }

    fn hooks(&self) -> &dyn HookRunner {
        self
    }

    fn health(&self, key: &ObjectKey) -> TargetResult<Option<super::health::Status>> {
        self.inner.health(key)
    }

    fn health_of(&self, keys: &[ObjectKey]) -> Vec<TargetResult<Option<super::health::Status>>> {
        self.inner.health_of(keys)
    }

    fn set_gate(&mut self, gate: Gate) {
        self.inner.set_gate(gate.clone());
        self.gate = gate;
    }
}

impl HookRunner for Gated {
    fn run_hooks(
        &self,
        hooks: &[&Hook],
        event: Event,
        namespace: &str,
        timeout: Duration,
    ) -> Vec<HookResult> {
        match (self.gate.check(), hooks.first()) {
            (Err(e), Some(first)) => vec![HookResult {
                hook: first.id(),
                ok: false,
                message: e.to_string(),
            }],
            _ => self
                .inner
                .hooks()
                .run_hooks(hooks, event, namespace, timeout),
        }
    }

    fn wait_ready(&self, workloads: &[ObjectKey], timeout: Duration) -> TargetResult<()> {
        self.inner.hooks().wait_ready(workloads, timeout)
    }
}

/// This replica's identity: the pod name (`HOSTNAME` in a pod) plus a random suffix, as
/// controller-runtime does, so a restarted pod with the same name is a new candidate.
pub fn identity() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gitcanary".into());
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{host}_{:016x}", h.finish())
}

/// The running election.
pub struct Election {
    /// The gate it keeps.
    pub gate: Gate,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Election {
    /// Starts campaigning for the Lease in `namespace` as `identity`. Returns after the
    /// first round, so the caller's first look at the gate sees the lease as it is.
    pub async fn start(
        client: kube::Client,
        namespace: &str,
        identity: String,
        timing: Timing,
    ) -> Self {
        let gate = Gate::elected(namespace);
        let (stop, stopped) = watch::channel(false);
        info!(identity = %identity, lease = %format!("{namespace}/{LEASE_NAME}"), "leader election: campaigning");
        let mut campaign = Campaign {
            api: Api::namespaced(client, namespace),
            elector: Elector::new(identity, timing),
            timing,
            gate: gate.clone(),
            epoch: Instant::now(),
        };
        campaign.round().await;
        let task = tokio::spawn(campaign.run(stopped));
        Election { gate, stop, task }
    }

    /// Stops campaigning and, when leading, releases the Lease so a standby takes over
    /// at once.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// A one-shot command (`sync --once`, `images scan --once`, `helm test`) would write
/// while another replica holds the Lease.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// Another replica leads; this command wrote nothing.
    #[error("Lease {namespace}/{LEASE_NAME} is held by {}: that gitcanary is the leader and does the writes; this command wrote nothing (stop it, or wait for its lease to lapse)", holder.as_deref().unwrap_or("another replica"))]
    Held {
        /// The Lease's namespace.
        namespace: String,
        /// The holder, when known.
        holder: Option<String>,
    },
    /// No client could be built.
    #[error(transparent)]
    Client(#[from] super::client::Error),
    /// The runtime for the election could not start.
    #[error("leader election: cannot start a runtime: {0}")]
    Runtime(std::io::Error),
}

/// The Lease, held for the duration of a one-shot command: campaigned for once, kept
/// renewed on a runtime of its own while the command runs, released when dropped. A
/// command that writes to the cluster holds it, so that it never writes beside a
/// running leader.
pub struct Hold {
    rt: Option<tokio::runtime::Runtime>,
    election: Option<Election>,
}

impl Hold {
    /// Takes the Lease in `cfg.namespace`, or says who holds it.
    pub fn take(
        cfg: &crate::config::KubeTarget,
        base_dir: &std::path::Path,
    ) -> Result<Hold, HoldError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("gitcanary-lease")
            .enable_all()
            .build()
            .map_err(HoldError::Runtime)?;
        let election = rt.block_on(async {
            let client = super::client::connect(cfg, base_dir).await?;
            let e = Election::start(client, &cfg.namespace, identity(), Timing::default()).await;
            if e.gate.check().is_ok() {
                return Ok(e);
            }
            let holder = match e.gate.role() {
                Role::Standby { holder } => holder,
                Role::Leader => None,
            };
            e.stop().await;
            Err(HoldError::Held {
                namespace: cfg.namespace.clone(),
                holder,
            })
        })?;
        Ok(Hold {
            rt: Some(rt),
            election: Some(election),
        })
    }

    /// The write permit the held Lease keeps.
    pub fn gate(&self) -> Gate {
        self.election
            .as_ref()
            .map(|e| e.gate.clone())
            .unwrap_or_else(Gate::open)
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let (Some(rt), Some(e)) = (self.rt.take(), self.election.take()) {
            // Released at once, so a replica waiting for the Lease takes over now.
            rt.block_on(e.stop());
            rt.shutdown_background();
        }
    }
}

struct Campaign {
    api: Api<Lease>,
    elector: Elector,
    timing: Timing,
    gate: Gate,
    /// Zero of the elector's clock.
    epoch: Instant,
}

impl Campaign {
    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    fn request_timeout(&self) -> Duration {
        // A request may not outlast the retry period, so a hung API server cannot keep
        // the loop from noticing the renew deadline.
        Duration::from_secs_f64(self.timing.retry_period)
    }

    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        let mut was_leader = false;
        while !*stopped.borrow() {
            let leader = self.elector.is_leader(self.now());
            if leader != was_leader {
                if leader {
                    info!(identity = %self.elector.identity(), "leader election: acquired the lease; this replica writes");
                } else {
                    warn!(identity = %self.elector.identity(), holder = ?self.elector.holder(), "leader election: not the leader; writes stopped");
                }
                was_leader = leader;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs_f64(self.timing.retry_period)) => {}
                _ = stopped.changed() => break,
            }
            self.round().await;
        }
        self.release().await;
    }

    /// One read, decide, maybe write; then publishes the outcome.
    async fn round(&mut self) {
        let started = self.now();
        let wall = crate::util::time::rfc3339(crate::util::time::unix_now());
        match tokio::time::timeout(self.request_timeout(), self.api.get_opt(LEASE_NAME)).await {
            Ok(Ok(live)) => {
                let spec = live.as_ref().map(spec_of);
                if let Action::Write(next) = self.elector.decide(spec.as_ref(), started, &wall) {
                    let ok = self.write(live, &next).await;
                    // The renewal counts from before the request, never from its answer.
                    self.elector.written(&next, ok, started);
                }
            }
            Ok(Err(e)) => warn!("leader election: reading Lease {LEASE_NAME}: {e}"),
            Err(_) => warn!("leader election: reading Lease {LEASE_NAME}: timed out"),
        }
        self.publish();
    }

    fn publish(&self) {
        let until = self
            .elector
            .leader_until()
            .map(|t| self.epoch + Duration::from_secs_f64(t.max(0.0)));
        let role = if self.elector.is_leader(self.now()) {
            Role::Leader
        } else {
            Role::Standby {
                holder: self.elector.holder().map(str::to_string),
            }
        };
        self.gate.publish(until, role);
    }

    /// Creates the Lease, or replaces it at the resourceVersion read, so that of two
    /// candidates writing at once only one succeeds.
    async fn write(&self, live: Option<Lease>, spec: &LeaseSpec) -> bool {
        let Some(typed) = typed_spec(spec) else {
            return false;
        };
        let pp = PostParams::default();
        let request = async {
            match live {
                Some(mut lease) => {
                    lease.spec = Some(typed);
                    self.api.replace(LEASE_NAME, &pp, &lease).await.map(drop)
                }
                None => {
                    let lease = Lease {
                        metadata: kube::api::ObjectMeta {
                            name: Some(LEASE_NAME.into()),
                            ..Default::default()
                        },
                        spec: Some(typed),
                    };
                    self.api.create(&pp, &lease).await.map(drop)
                }
            }
        };
        match tokio::time::timeout(self.request_timeout(), request).await {
            Ok(Ok(())) => true,
            // Another candidate wrote first: not an error worth a warning.
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => false,
            Ok(Err(e)) => {
                warn!("leader election: writing Lease {LEASE_NAME}: {e}");
                false
            }
            Err(_) => {
                warn!("leader election: writing Lease {LEASE_NAME}: timed out");
                false
            }
        }
    }

    async fn release(&mut self) {
        // Close the gate before the Lease says so: nothing may write after this.
        let wall = crate::util::time::rfc3339(crate::util::time::unix_now());
        let released = self.elector.release(&wall);
        self.publish();
        let Some(spec) = released else { return };
        let live = match tokio::time::timeout(self.request_timeout(), self.api.get_opt(LEASE_NAME))
            .await
        {
            Ok(Ok(Some(l))) => l,
            _ => return,
        };
        if spec_of(&live).holder_identity.as_deref() != Some(self.elector.identity()) {
            return;
        }
        if self.write(Some(live), &spec).await {
            info!("leader election: released the lease");
        }
    }
}

/// The election fields of a Lease as the API server returned them.
fn spec_of(lease: &Lease) -> LeaseSpec {
    lease
        .spec
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

fn typed_spec(spec: &LeaseSpec) -> Option<k8s_openapi::api::coordination::v1::LeaseSpec> {
    serde_json::to_value(spec)
        .and_then(serde_json::from_value)
        .map_err(|e| warn!("leader election: cannot encode the Lease: {e}"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_gate_always_admits() {
        let g = Gate::open();
        assert!(g.check().is_ok());
        assert_eq!(g.role(), Role::Leader);
        assert!(g.subscribe().is_none());
    }

    #[test]
    fn the_gate_closes_by_itself_at_the_deadline() {
        let g = Gate::elected("gitcanary");
        let err = g.check().unwrap_err().to_string();
        assert!(err.contains("gitcanary/gitcanary-leader-election"), "{err}");
        g.publish(
            Some(Instant::now() + Duration::from_millis(200)),
            Role::Leader,
        );
        assert!(g.check().is_ok());
        assert_eq!(g.role(), Role::Leader);
        std::thread::sleep(Duration::from_millis(250));
        // No new publication: the deadline alone stops the writes.
        assert!(g.check().is_err());
        assert_eq!(g.role(), Role::Standby { holder: None });
    }

    #[test]
    fn a_standby_names_the_holder() {
        let g = Gate::elected("ops");
        let rx = g.subscribe().unwrap();
        g.publish(
            None,
            Role::Standby {
                holder: Some("pod-a_1".into()),
            },
        );
        assert!(rx.has_changed().unwrap());
        let err = g.check().unwrap_err().to_string();
        assert!(err.ends_with("is held by pod-a_1)"), "{err}");
        assert_eq!(
            g.role().standby_message("ops").unwrap(),
            "standby: Lease ops/gitcanary-leader-election is held by pod-a_1"
        );
    }

    /// A target that counts the writes that reach it.
    #[derive(Default)]
    struct Counting(std::sync::atomic::AtomicUsize);

    impl Target for Counting {
        fn inventory(&self) -> TargetResult<Inventory> {
            Ok(Inventory::default())
        }
        fn apply(
            &self,
            _: &ApplyPlan,
            _: &[Object],
            _: &Inventory,
            _: &str,
        ) -> TargetResult<ApplyReport> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(ApplyReport::default())
        }
        fn get(&self, _: &ObjectKey) -> TargetResult<Option<serde_json::Value>> {
            Ok(None)
        }
        fn diff(&self, _: &[Object], _: &Inventory) -> TargetResult<Vec<ObjectDiff>> {
            Ok(Vec::new())
        }
        fn hooks(&self) -> &dyn HookRunner {
            self
        }
    }

    impl HookRunner for Counting {
        fn run_hooks(&self, hooks: &[&Hook], _: Event, _: &str, _: Duration) -> Vec<HookResult> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            hooks
                .iter()
                .map(|h| HookResult {
                    hook: h.id(),
                    ok: true,
                    message: "ran".into(),
                })
                .collect()
        }
        fn wait_ready(&self, _: &[ObjectKey], _: Duration) -> TargetResult<()> {
            Ok(())
        }
    }

    #[test]
    fn a_gated_target_writes_only_while_the_gate_is_open() {
        let gate = Gate::elected("ops");
        let target = Gated::new(Box::new(Counting::default()), gate.clone());
        let plan = ApplyPlan::default();
        let inv = Inventory::default();
        let err = target.apply(&plan, &[], &inv, "r").unwrap_err();
        assert!(matches!(err, crate::targets::Error::NotLeader(_)), "{err}");
        let hook = Hook::from_object(
            &serde_json::json!({"kind": "Job", "metadata": {"name": "migrate",
                "annotations": {"helm.sh/hook": "pre-install"}}}),
            "t.yaml",
        )
        .unwrap()
        .unwrap();
        let refused =
            target
                .hooks()
                .run_hooks(&[&hook], Event::PreInstall, "ns", Duration::from_secs(1));
        assert!(
            !refused[0].ok && refused[0].message.starts_with("not the leader"),
            "{refused:?}"
        );
        gate.publish(Some(Instant::now() + Duration::from_secs(60)), Role::Leader);
        target.apply(&plan, &[], &inv, "r").unwrap();
        assert!(
            target
                .hooks()
                .run_hooks(&[&hook], Event::PreInstall, "ns", Duration::from_secs(1))[0]
                .ok
        );
        assert!(target.inventory().is_ok());
    }

    #[test]
    fn lease_specs_round_trip_through_the_typed_lease() {
        let spec = LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(10),
            acquire_time: Some("2026-12-01T23:00:00.123Z".into()),
            renew_time: Some("2026-12-01T23:00:05.000Z".into()),
            lease_transitions: Some(2),
        };
        let lease = Lease {
            metadata: Default::default(),
            spec: typed_spec(&spec),
        };
        let back = spec_of(&lease);
        assert_eq!(back.holder_identity.as_deref(), Some("a"));
        assert_eq!(back.lease_duration_seconds, Some(10));
        assert_eq!(back.lease_transitions, Some(2));
        assert_eq!(
            back.acquire_time.as_deref(),
            Some("2026-12-01T23:00:00.123000Z")
        );
    }

    #[test]
    fn identities_differ_between_processes_on_one_host() {
        assert_ne!(identity(), identity());
    }
}
