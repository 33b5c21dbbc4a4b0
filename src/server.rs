//! gitcanary's HTTP server: `/metrics` (Prometheus text), `/healthz` (liveness),
//! `/readyz` (readiness), `POST /hook` and Flux's `POST /hook/<digest>`, the push webhook
//! that triggers an immediate fetch, the daemon API (`/daemon/v1/`, see
//! `crate::sync::api`) that `gitcanary reconcile|suspend|resume` call, plus the web UI and its API (`/ui/`, `/api/v1/`, see `crate::ui`). The load tester is not served here: the canary engine calls it in process,
//! and its HTTP API has its own listener (`loadtester.listen`).

use crate::source::webhook;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

/// What the handlers need.
#[derive(Clone)]
pub struct AppState {
    /// Asks the reconcile loop for an immediate sync.
    pub trigger: UnboundedSender<()>,
    /// Webhook secret; `None` disables `/hook`.
    pub webhook_secret: Option<Arc<Vec<u8>>>,
    /// `server.receiver`'s name and namespace, for Flux's `/hook/<digest>`.
    pub receiver: (String, String),
    /// The sync loop's controls, for the daemon API; `None` serves none.
    pub control: Option<Arc<crate::sync::control::Control>>,
    /// The token the daemon API requires (`server.uiTokenEnv`); without one it admits
    /// loopback clients only.
    pub api_token: Option<crate::ui::auth::Auth>,
    /// What `/readyz` answers from.
    pub readiness: Arc<Readiness>,
    /// The web UI; `None` serves none.
    pub ui: Option<crate::ui::Ui>,
}

/// Readiness: a revision is in place (applied by this process, or the last-known-good
/// one loaded at start), its workloads passed their health check (on targets that run
/// one), and the canary engine is running (on targets that run it in process). A
/// standby replica, waiting for the leader lease, is ready: it is ready to take over.
#[derive(Debug, Default)]
pub struct Readiness {
    applied: AtomicBool,
    engine: AtomicBool,
    /// The engine does not run in this process (the Kubernetes target).
    no_engine: AtomicBool,
    standby: AtomicBool,
    /// Why the applied revision is not healthy yet, or failed its health check.
    unhealthy: std::sync::Mutex<Option<String>>,
}

impl Readiness {
    /// Records that a revision is in place.
    pub fn set_applied(&self) {
        self.applied.store(true, Ordering::SeqCst);
    }

    /// Records whether the canary engine is running.
    pub fn set_engine(&self, running: bool) {
        self.engine.store(running, Ordering::SeqCst);
    }

    /// Records that no canary engine runs in this process, so none is waited for.
    pub fn set_no_engine(&self) {
        self.no_engine.store(true, Ordering::SeqCst);
    }

    /// Records whether this replica is a standby for the leader lease.
    pub fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::SeqCst);
    }

    /// Records the applied revision's health: `None` when healthy, else why not.
    pub fn set_unhealthy(&self, why: Option<String>) {
        *self.unhealthy.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }

    /// `Ok` when ready, else why not.
    pub fn check(&self) -> Result<(), String> {
        if self.standby.load(Ordering::SeqCst) {
            return Ok(());
        }
        if !self.applied.load(Ordering::SeqCst) {
            return Err("no revision applied yet".into());
        }
        if let Some(why) = &*self.unhealthy.lock().unwrap_or_else(|e| e.into_inner()) {
            return Err(why.clone());
        }
        if !self.engine.load(Ordering::SeqCst) && !self.no_engine.load(Ordering::SeqCst) {
            return Err("the canary engine is not running".into());
        }
        Ok(())
    }
}

/// The router; tests call it directly or serve it on port 0.
pub fn app(state: AppState) -> Router {
    let ui = state.ui.clone();
    let router = Router::new()
        .route(
            "/metrics",
            get(|| async {
                let mut text = crate::metrics::global().render();
                text.push_str(&crate::targets::local::proxy::global_stats().render());
                ([("content-type", "text/plain; version=0.0.4")], text)
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(state): State<AppState>| async move {
                match state.readiness.check() {
                    Ok(()) => (StatusCode::OK, "ok\n".to_string()),
                    Err(why) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: {why}\n"),
                    ),
                }
            }),
        )
        .route("/hook", post(hook))
        .route("/hook/{digest}", post(receiver_hook))
        .merge(crate::sync::api::routes())
        .with_state(state);
    match ui {
        Some(ui) => router.merge(crate::ui::api::routes(ui)),
        None => router,
    }
}
async fn hook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    accept_hook(&state, |secret| webhook::verify(secret, get, &body))
}

/// Flux's receiver path: `/hook/<sha256(token + name + namespace)>`.
async fn receiver_hook(
    State(state): State<AppState>,
    axum::extract::Path(given): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (name, namespace) = &state.receiver;
    accept_hook(&state, |secret| {
        let digest = webhook::receiver_digest(secret, name, namespace);
        webhook::verify_receiver(secret, &digest, &given, get, &body)
    })
}

/// Counts and answers a push webhook that `verified` judges with the secret, and
/// triggers a sync when it passes.
fn accept_hook(
    state: &AppState,
    verified: impl FnOnce(&[u8]) -> bool,
) -> (StatusCode, &'static str) {
    let Some(secret) = &state.webhook_secret else {
        return (
            StatusCode::NOT_FOUND,
            "webhook receiver disabled: set server.webhookSecretEnv\n",
        );
    };
    let ok = verified(secret);
    crate::metrics::global().inc(
        "gitcanary_webhook_requests_total",
        "Push webhooks by result.",
        &[("result", if ok { "accepted" } else { "unauthorized" })],
        1.0,
    );
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            "signature or token does not match\n",
        );
    }
    tracing::info!("push webhook received; fetching now");
    let _ = state.trigger.send(());
    (StatusCode::ACCEPTED, "sync requested\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_waits_for_health_and_a_standby_is_ready() {
        let r = Readiness::default();
        r.set_no_engine();
        assert_eq!(r.check().unwrap_err(), "no revision applied yet");
        r.set_applied();
        r.set_unhealthy(Some(
            "revision main@sha1:1: Health check in progress".into(),
        ));
        assert_eq!(
            r.check().unwrap_err(),
            "revision main@sha1:1: Health check in progress"
        );
        r.set_unhealthy(None);
        assert!(r.check().is_ok());
        let standby = Readiness::default();
        standby.set_standby(true);
        assert!(standby.check().is_ok(), "a standby is ready to take over");
        let local = Readiness::default();
        local.set_applied();
        assert_eq!(
            local.check().unwrap_err(),
            "the canary engine is not running"
        );
    }
}
