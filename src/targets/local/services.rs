//! What the local target runs inside the gitcanary process beside the sync loop: the
//! runtime (its pods as host processes), the service proxy in front of them, and the
//! canary engine acting on both. The sync loop sees it only as
//! [`crate::sync::reconcile::InProcess`].

use super::canary::{LocalCanaryTarget, LocalWebhooks};
use super::loadtester::LoadTester;
use super::proxy::Proxy;
use super::runtime::supervisor::Notifier;
use super::runtime::Runtime;
use crate::canary::executor::{Engine, Parts};
use crate::config::Config;
use crate::history::OutcomeSink;
use crate::server::Readiness;
use std::sync::Arc;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, warn};

/// The local runtime, proxy and canary engine of a running `gitcanary run`.
pub struct LocalServices {
    runtime: Runtime,
    kick: Arc<Kick>,
    engine: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

/// Starts new workloads and Services after a change.
struct Kick {
    notifier: Notifier,
    proxy: Option<Arc<Proxy>>,
    handle: Handle,
}

impl Kick {
    fn run(&self) {
        self.notifier.notify();
        if let Some(p) = &self.proxy {
            if let Err(e) = self.handle.block_on(p.sync_services()) {
                warn!("services: {e}");
            }
        }
    }
}

impl LocalServices {
    /// Starts the runtime, then the proxy and the canary engine on it; `None` (logged)
    /// when the runtime cannot start. A proxy that cannot start leaves the engine off.
    /// The engine hands finished analyses to `outcomes` (the Git writer), if given.
    pub async fn start(
        cfg: &Config,
        loadtester: Arc<LoadTester>,
        readiness: Arc<Readiness>,
        outcomes: Option<Arc<dyn OutcomeSink>>,
    ) -> Option<LocalServices> {
        let local = cfg.target.local.clone().unwrap_or_default();
        let state_dir = cfg.state_dir();
        let runtime = Runtime::start(&state_dir, local.images.clone())
            .map_err(|e| error!("cannot start the local runtime: {e}"))
            .ok()?;
        let proxy = Proxy::new(&state_dir, runtime.endpoints(), local.services.clone())
            .map_err(|e| error!("cannot start the service proxy: {e}"))
            .ok()
            .map(|p| Arc::new(p.with_max_connections(local.max_connections)));
        // The canary engine ticks beside the sync, on the same store, proxy and runtime.
        let engine = match &proxy {
            Some(p) => match start_engine(
                cfg, &state_dir, p, loadtester, &runtime, readiness, outcomes,
            ) {
                Ok(engine) => Some(engine),
                Err(e) => {
                    error!("cannot start the canary engine: {e}");
                    None
                }
            },
            None => None,
        };
        if let Some(p) = &proxy {
            if let Err(e) = p.sync_services().await {
                warn!("services: {e}");
            }
        }
        let kick = Arc::new(Kick {
            notifier: runtime.notifier(),
            proxy,
            handle: Handle::current(),
        });
        Some(LocalServices {
            runtime,
            kick,
            engine,
        })
    }
}

/// Starts the canary engine on the local store, proxy, runtime and load tester,
/// supervised: a panic in a tick is logged and the engine restarted.
fn start_engine(
    cfg: &Config,
    state_dir: &std::path::Path,
    proxy: &Arc<Proxy>,
    loadtester: Arc<LoadTester>,
    runtime: &Runtime,
    readiness: Arc<Readiness>,
    outcomes: Option<Arc<dyn OutcomeSink>>,
) -> std::io::Result<(watch::Sender<bool>, JoinHandle<()>)> {
    let local = cfg.target.local.clone().unwrap_or_default();
    let target = Arc::new(
        LocalCanaryTarget::new(state_dir, proxy.clone(), Some(runtime.notifier()))
            .map_err(std::io::Error::other)?,
    );
    let parts = Parts {
        workloads: target.clone(),
        router: target.clone(),
        metrics: target,
        webhooks: Some(Arc::new(LocalWebhooks {
            loadtester,
            names: local.loadtester_names,
        })),
    };
    let mut engine = Engine::new(state_dir, parts, cfg.canary.max_concurrent_canaries)?
        .with_alert_address_env_prefix(cfg.canary.alert_address_env_prefix());
    if let Some(sink) = outcomes {
        engine = engine.with_outcomes(sink);
    }
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(crate::canary::supervise::supervise(
        Arc::new(engine),
        readiness,
        stopped,
    ));
    Ok((stop, task))
}

impl crate::sync::reconcile::InProcess for LocalServices {
    fn on_change(&self) -> Arc<dyn Fn() + Send + Sync> {
        let kick = self.kick.clone();
        Arc::new(move || kick.run())
    }

    fn shutdown(self: Box<Self>) {
        if let Some((stop, task)) = self.engine {
            let _ = stop.send(true);
            let _ = self.kick.handle.block_on(task);
        }
        self.runtime.shutdown();
    }
}
