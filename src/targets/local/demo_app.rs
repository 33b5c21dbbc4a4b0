//! `gitcanary demo-app`: a podinfo-compatible HTTP server for the local demo and tests.
//! Its version is `IMAGE_TAG`, so a Git image bump shows up at `/version`. Faults come
//! from the environment, so a ConfigMap change in Git can make a release bad:
//! `FAULT_ERROR_RATE` (fraction of `/` answered 500) and `FAULT_DELAY_MS`.

use crate::util::listen::{Acceptor, DEFAULT_MAX_CONNECTIONS};
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
    let host = hostname();
    let message = s
        .cfg
        .message
        .clone()
        .unwrap_or_else(|| format!("greetings from podinfo v{}", s.cfg.version));
    Json(serde_json::json!({
        "hostname": host,
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

/// The name podinfo reports: `HOSTNAME`, which the local target sets to the replica's
/// pod name as Kubernetes does, else the machine's name.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_default()
}

/// The demo app's command line: podinfo's flags, so the Flagger guides' `./podinfo
/// --port=9898 --port-metrics=9797 ...` runs unchanged. `--port` and `--port-metrics`
/// (either `--flag N` or `--flag=N`; the last one wins) are served; podinfo's other
/// flags (`--grpc-port`, `--level`, `--random-delay`, ...) are accepted and ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoArgs {
    /// HTTP port (default 9898).
    pub port: u16,
    /// Second port serving the same app, for `/metrics` scrapes.
    pub port_metrics: Option<u16>,
}

/// Parses [`DemoArgs`].
pub fn parse_args(args: &[String]) -> Result<DemoArgs, String> {
    let mut out = DemoArgs {
        port: 9898,
        port_metrics: None,
    };
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        let flag = flag.trim_start_matches('-');
        let takes_value = matches!(flag, "port" | "port-metrics");
        let value = if takes_value && inline.is_none() {
            i += 1;
            args.get(i).cloned()
        } else {
            inline
        };
        let port = |v: Option<String>| -> Result<u16, String> {
            v.as_deref()
                .unwrap_or_default()
                .parse::<u16>()
                .map_err(|_| format!("--{flag}: expected a port number, got {v:?}"))
        };
        match flag {
            "port" => out.port = port(value)?,
            "port-metrics" => {
                let p = port(value)?;
                out.port_metrics = (p != 0).then_some(p);
            }
            _ => {}
        }
        i += 1;
    }
    Ok(out)
}

/// Serves the demo app on every port in `ports` (loopback) until SIGTERM/SIGINT.
pub async fn serve_on(ports: &[u16], cfg: DemoConfig) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    for port in ports {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", *port)).await?;
        let mut stop = stop_rx.clone();
        let app = app(cfg.clone());
        let listener = Acceptor::new(listener, DEFAULT_MAX_CONNECTIONS, format!("port {port}"));
        servers.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        });
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let _ = stop_tx.send(true);
    while let Some(r) = servers.join_next().await {
        r.map_err(std::io::Error::other)??;
    }
    Ok(())
}

/// `gitcanary podcli check http URL` / `check tcp ADDR`: podinfo's probe CLI. Exits 0
/// when the URL answers 2xx (or the address accepts a connection).
pub fn podcli(args: &[String]) -> Result<(), String> {
    use std::io::{Read, Write};
    let words: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let timeout = Duration::from_secs(2);
    let connect = |addr: &str| -> Result<std::net::TcpStream, String> {
        use std::net::ToSocketAddrs;
        let sa = addr
            .to_socket_addrs()
            .map_err(|e| format!("{addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("{addr}: no address"))?;
        std::net::TcpStream::connect_timeout(&sa, timeout).map_err(|e| format!("{addr}: {e}"))
    };
    match words.as_slice() {
        ["check", "http", url, ..] => {
            let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
            let (authority, path) = rest
                .find('/')
                .map(|i| (&rest[..i], &rest[i..]))
                .unwrap_or((rest, "/"));
            let authority = if authority.contains(':') {
                authority.to_string()
            } else {
                format!("{authority}:80")
            };
            let mut s = connect(&authority)?;
            let _ = s.set_read_timeout(Some(timeout));
            write!(
                s,
                "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: podcli\r\n\r\n"
            )
            .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).map_err(|e| e.to_string())?;
            let line = String::from_utf8_lossy(&buf[..n]);
            match line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse::<u16>().ok())
            {
                Some(code) if (200..300).contains(&code) => Ok(()),
                Some(code) => Err(format!("check failed: {url} answered {code}")),
                None => Err(format!("check failed: {url}: no HTTP answer")),
            }
        }
        ["check", "tcp", addr, ..] => connect(addr).map(|_| ()),
        _ => Err("usage: podcli check http URL | podcli check tcp HOST:PORT".into()),
    }
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
