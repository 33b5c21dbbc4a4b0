//! Runs the canary engine as a supervised task: it ticks until stopped, is restarted
//! after a panic, and shows in `/readyz` while alive. Which target it acts on is the
//! caller's choice (see `targets::local::services`).

use crate::canary::executor::{Engine, TICK};
use crate::metrics;
use crate::server::Readiness;
use std::sync::Arc;

/// Marks the canary engine running in `/readyz` while alive, also when its task panics.
struct EngineRunning(Arc<Readiness>);

impl EngineRunning {
    fn new(readiness: Arc<Readiness>) -> Self {
        readiness.set_engine(true);
        EngineRunning(readiness)
    }
}

impl Drop for EngineRunning {
    fn drop(&mut self) {
        self.0.set_engine(false);
    }
}

/// Ticks the canary engine until `stopped`, restarting it after a panic.
pub async fn supervise(
    engine: Arc<Engine>,
    readiness: Arc<Readiness>,
    stopped: tokio::sync::watch::Receiver<bool>,
) {
    crate::util::supervise::supervise(
        "canary engine",
        stopped.clone(),
        || {
            let (engine, mut stopped) = (engine.clone(), stopped.clone());
            let readiness = readiness.clone();
            async move {
                let _running = EngineRunning::new(readiness);
                while !*stopped.borrow() {
                    engine.tick(crate::util::time::unix_now()).await;
                    // Each tick parses every canary afresh; hand the freed heap back
                    // so an idle engine holds only what it needs.
                    #[cfg(all(target_os = "linux", target_env = "gnu"))]
                    // SAFETY: malloc_trim only releases free memory at the top of the heap.
                    unsafe {
                        libc::malloc_trim(0);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(TICK) => {}
                        _ = stopped.changed() => break,
                    }
                }
            }
        },
        |_| {
            metrics::global().inc(
                "gitcanary_task_panics_total",
                "Panics of supervised tasks, which were restarted.",
                &[("task", "canary-engine")],
                1.0,
            )
        },
    )
    .await
}
