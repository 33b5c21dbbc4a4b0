//! `gitcanary demo-app`: a podinfo-compatible HTTP server for the local demo and tests.
//! Its version is `IMAGE_TAG`, so a Git image bump shows up at `/version`. Faults come
//! from the environment, so a ConfigMap change in Git can make a release bad:
//! `FAULT_ERROR_RATE` (fraction of `/` answered 500) and `FAULT_DELAY_MS`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Settings read from the environment at start.
#[derive(Clone, Debug, Default)]
pub struct DemoConfig {
    /// Served version (`IMAGE_TAG`).
    pub version: String,
    /// `PODINFO_UI_MESSAGE`.
    pub message: Option<String>,
    /// Fraction of `/` requests answered 500.
    pub error_rate: f64,
    /// Added latency on `/`.
    pub delay: Duration,
}

impl DemoConfig {
    /// Reads `IMAGE_TAG`, `PODINFO_UI_MESSAGE`, `FAULT_ERROR_RATE` and `FAULT_DELAY_MS`.
    pub fn from_env() -> DemoConfig {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        DemoConfig {
            version: var("IMAGE_TAG").unwrap_or_else(|| "dev".into()),
            message: var("PODINFO_UI_MESSAGE"),
            error_rate: var("FAULT_ERROR_RATE")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0f64)
                .clamp(0.0, 1.0),
            delay: Duration::from_millis(
                var("FAULT_DELAY_MS")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            ),
        }
    }
}

struct AppState {
    cfg: DemoConfig,
    served: AtomicU64,
    by_code: [AtomicU64; 6],
}

impl AppState {
    fn count(&self, code: u16) {
        self.by_code[(code / 100).min(5) as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether request number `n` (0-based) fails at `rate`: exactly `rate` of any run of
/// requests fail, spread evenly, so tests can rely on the fraction.
pub fn faulty(n: u64, rate: f64) -> bool {
    rate > 0.0 && ((n + 1) as f64 * rate).floor() > (n as f64 * rate).floor()
}

/// The demo app's router.
pub fn app(cfg: DemoConfig) -> Router {
    let state = Arc::new(AppState {
        cfg,
        served: AtomicU64::new(0),
        by_code: Default::default(),
    });
    Router::new()
        .route("/", get(index))
        .route("/version", get(|State(s): State<Arc<AppState>>| async move {
            s.count(200);
            Json(serde_json::json!({"version": s.cfg.version, "commit": ""}))
        }))
        .route("/healthz", get(|| async { Json(serde_json::json!({"status": "OK"})) }))
        .route("/readyz", get(|| async { Json(serde_json::json!({"status": "OK"})) }))
        .route("/status/{code}", any(|State(s): State<Arc<AppState>>, Path(code): Path<u16>| async move {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
            s.count(status.as_u16());
            (status, Json(serde_json::json!({"status": status.as_u16()})))
        }))
        .route("/delay/{seconds}", any(|State(s): State<Arc<AppState>>, Path(secs): Path<f64>| async move {
            tokio::time::sleep(Duration::from_secs_f64(secs.clamp(0.0, 300.0))).await;
            s.count(200);
            Json(serde_json::json!({"delay": secs}))
        }))
        .route("/echo", any(|State(s): State<Arc<AppState>>, body: Bytes| async move {
            s.count(202);
            (StatusCode::ACCEPTED, body)
        }))
        .route("/env", get(|| async {
            let mut vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
            vars.sort();
            Json(vars)
        }))
        .route("/metrics", get(|State(s): State<Arc<AppState>>| async move {
            let mut out = String::from("# HELP http_requests_total Requests served by status class.\n# TYPE http_requests_total counter\n");
            for (i, c) in s.by_code.iter().enumerate().skip(1) {
                out.push_str(&format!("http_requests_total{{status=\"{i}xx\"}} {}\n", c.load(Ordering::Relaxed)));
            }
            out
        }))
        .with_state(state)
}

async fn index(State(s): State<Arc<AppState>>) -> Response {
    if !s.cfg.delay.is_zero() {
        tokio::time::sleep(s.cfg.delay).await;
    }
    let n = s.served.fetch_add(1, Ordering::Relaxed);
    if faulty(n, s.cfg.error_rate) {
        s.count(500);
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({"error": "fault injected by FAULT_ERROR_RATE"})),
        )
            .into_response();
    }
    s.count(200);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string();
    let message = s
        .cfg
        .message
        .clone()
        .unwrap_or_else(|| format!("greetings from podinfo v{}", s.cfg.version));
    Json(serde_json::json!({
        "hostname": format!("{host}-{}", std::process::id()),
        "version": s.cfg.version,
        "revision": "",
        "color": "#34577c",
        "message": message,
        "goos": std::env::consts::OS,
        "goarch": std::env::consts::ARCH,
        "runtime": "gitcanary",
        "num_cpu": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).to_string(),
    }))
    .into_response()
}

/// Serves the demo app on `port` (loopback) until SIGTERM/SIGINT.
pub async fn serve(port: u16, cfg: DemoConfig) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app(cfg))
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::faulty;

    #[test]
    fn fault_rate_is_exact() {
        let failed = (0..1000).filter(|n| faulty(*n, 0.5)).count();
        assert_eq!(failed, 500);
        assert_eq!((0..1000).filter(|n| faulty(*n, 0.1)).count(), 100);
        assert_eq!((0..1000).filter(|n| faulty(*n, 0.0)).count(), 0);
        assert_eq!((0..10).filter(|n| faulty(*n, 1.0)).count(), 10);
    }
}
