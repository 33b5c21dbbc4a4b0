//! `gitcanary run`: serve HTTP and reconcile until SIGINT/SIGTERM.

use crate::config::Config;
use crate::server::{app, AppState};
use crate::sync::reconcile;
use crate::util::listen::Acceptor;
use anyhow::Context;
use std::process::ExitCode;
use std::sync::Arc;
use tracing::info;

/// Runs the reconciler and the HTTP server.
pub fn run(cfg: Config) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve_and_reconcile(cfg))?;
    Ok(ExitCode::SUCCESS)
}

/// Binds the server, then reconciles until a shutdown signal.
pub async fn serve_and_reconcile(cfg: Config) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let webhook_secret = match &cfg.server.webhook_secret_env {
        Some(var) => Some(Arc::new(
            std::env::var(var)
                .with_context(|| {
                    format!("server.webhookSecretEnv: environment variable {var} is not set")
                })?
                .into_bytes(),
        )),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
        .await
        .with_context(|| format!("server.listen: cannot listen on {}", cfg.server.listen))?;
    let addr = listener.local_addr()?;
    let max_connections = cfg.server.max_connections;
    crate::util::atomic::write(
        &cfg.state_dir().join("status").join("server.json"),
        serde_json::json!({"address": addr.to_string(), "pid": std::process::id()})
            .to_string()
            .as_bytes(),
    )
    .context("writing status/server.json")?;
    info!(address = %addr, "serving /metrics, /healthz and /hook on http://{addr}");
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let loadtester = crate::target::local::loadtester::LoadTester::local(
        cfg.state_dir(),
        cfg.target
            .local
            .as_ref()
            .map(|l| l.images.clone())
            .unwrap_or_default(),
    );
    let lt_for_engine = loadtester.clone();
    let state = AppState {
        trigger: tx.clone(),
        webhook_secret,
        loadtester,
    };
    let server = tokio::spawn(async move {
        let listener = Acceptor::new(listener, max_connections, "server");
        let _ = axum::serve(listener, app(state))
            .with_graceful_shutdown(async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .await;
    });
    let result = reconcile::run(cfg, tx, rx, lt_for_engine, shutdown_signal()).await;
    let _ = stop_tx.send(true);
    let _ = server.await;
    result?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("signal received, shutting down");
}
