//! gitcanary's HTTP server: `/metrics` (Prometheus text), `/healthz`, `/readyz`, and
//! `POST /hook`, the push webhook that triggers an immediate fetch.

use crate::source::webhook;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

/// What the handlers need.
#[derive(Clone)]
pub struct AppState {
    /// Asks the reconcile loop for an immediate sync.
    pub trigger: UnboundedSender<()>,
    /// Webhook secret; `None` disables `/hook`.
    pub webhook_secret: Option<Arc<Vec<u8>>>,
    /// The built-in load tester, served under `/loadtester`.
    pub loadtester: Arc<crate::target::local::loadtester::LoadTester>,
}

/// The router; tests call it directly or serve it on port 0.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|| async {
                let mut text = crate::metrics::global().render();
                text.push_str(&crate::target::local::proxy::global_stats().render());
                ([("content-type", "text/plain; version=0.0.4")], text)
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/hook", post(hook))
        .with_state(state.clone())
        .nest(
            "/loadtester",
            crate::target::local::loadtester::app(state.loadtester),
        )
}

async fn hook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let Some(secret) = &state.webhook_secret else {
        return (
            StatusCode::NOT_FOUND,
            "webhook receiver disabled: set server.webhookSecretEnv\n",
        );
    };
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if !webhook::verify(secret, get, &body) {
        crate::metrics::global().inc(
            "gitcanary_webhook_requests_total",
            "Push webhooks by result.",
            &[("result", "unauthorized")],
            1.0,
        );
        return (
            StatusCode::UNAUTHORIZED,
            "signature or token does not match\n",
        );
    }
    crate::metrics::global().inc(
        "gitcanary_webhook_requests_total",
        "Push webhooks by result.",
        &[("result", "accepted")],
        1.0,
    );
    tracing::info!("push webhook received; fetching now");
    let _ = state.trigger.send(());
    (StatusCode::ACCEPTED, "sync requested\n")
}
