//! `gitcanary run`: serve HTTP and reconcile until SIGINT/SIGTERM.

use crate::config::Config;
use crate::server::{app, AppState, Readiness};
use crate::sync::reconcile;
use crate::targets::kube::leader;
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
        Some(var) => Some(Arc::new(secret_env("server.webhookSecretEnv", var)?)),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
        .await
        .with_context(|| format!("server.listen: cannot listen on {}", cfg.server.listen))?;
    let addr = listener.local_addr()?;
    let loadtester = crate::targets::local::loadtester::LoadTester::local(
        cfg.state_dir(),
        cfg.target
            .local
            .as_ref()
            .map(|l| l.images.clone())
            .unwrap_or_default(),
    );
    let lt_api = match &cfg.loadtester.listen {
        Some(listen) => Some(bind_loadtester(&cfg, listen, loadtester.clone()).await?),
        None => None,
    };
    let mut status = serde_json::json!({"address": addr.to_string(), "pid": std::process::id()});
    if let Some((lt_listener, _)) = &lt_api {
        status["loadtester"] = lt_listener.local_addr()?.to_string().into();
    }
    crate::util::atomic::write(
        &cfg.state_dir().join("status").join("server.json"),
        status.to_string().as_bytes(),
    )
    .context("writing status/server.json")?;
    info!(address = %addr, "serving /metrics, /healthz, /readyz, /hook, the daemon API and the web UI on http://{addr}/ui/");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let readiness = Arc::new(Readiness::default());
    let ui_auth = match &cfg.server.ui_token_env {
        Some(var) => Some(
            crate::ui::auth::Auth::new(&secret_env("server.uiTokenEnv", var)?)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        None => None,
    };
    if ui_auth.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(address = %addr, "the web UI is served without a token on a non-loopback address: anyone who reaches it can read it; set server.uiTokenEnv");
    }
    let ui = crate::ui::Ui::new(cfg.clone(), ui_auth.clone(), tx.clone());
    let control = Arc::new(crate::sync::control::Control::new(
        &cfg.source.name,
        cfg.state_dir(),
        tx.clone(),
    ));
    let state = AppState {
        trigger: tx.clone(),
        webhook_secret,
        receiver: cfg.receiver(),
        control: Some(control.clone()),
        api_token: ui_auth,
        readiness: readiness.clone(),
        ui: Some(ui.clone()),
    };
    let max = cfg.server.max_connections;
    let mut servers = vec![serve(
        Acceptor::new(listener, max, "server"),
        app(state),
        stop_rx.clone(),
    )];
    if let Some((lt_listener, router)) = lt_api {
        let lt_addr = lt_listener.local_addr()?;
        info!(address = %lt_addr, "serving the load tester API on http://{lt_addr}");
        let lt_listener = Acceptor::new(lt_listener, max, "loadtester");
        servers.push(serve(lt_listener, router, stop_rx));
    }
    let result = reconcile_until_shutdown(cfg, control, rx, loadtester, readiness).await;
    ui.shutdown();
    let _ = stop_tx.send(true);
    for s in servers {
        let _ = s.await;
    }
    result?;
    Ok(())
}

/// The engine's outcome sink, after rebuilding the rejected tags from the notes (a
/// lost state dir forgets none).
async fn outcome_sink(
    rec: &reconcile::Reconciler,
    writer: crate::history::Writer,
    notifier: crate::notify::Notifier,
) -> Arc<dyn crate::history::OutcomeSink> {
    let (source, state) = (rec.source().clone(), rec.config().state_dir());
    let rebuilt = tokio::task::spawn_blocking(move || {
        crate::rollback::sink::rebuild_rejected(&source, &state)
    })
    .await;
    match rebuilt {
        Ok(Ok(n)) => tracing::debug!(rejected = n, "rejected tags read from the notes"),
        Ok(Err(e)) => tracing::warn!("rejected tags not read from the notes: {e}"),
        Err(e) => tracing::warn!("rejected tags not read from the notes: {e}"),
    }
    let sink = crate::rollback::sink::Rollbacks::new(writer, rec.source().clone(), rec.config())
        .with_notifier(notifier);
    Arc::new(sink)
}

/// Opens the target, starts what it runs in this process, and reconciles until a
/// shutdown signal.
async fn reconcile_until_shutdown(
    cfg: Config,
    control: Arc<crate::sync::control::Control>,
    rx: tokio::sync::mpsc::UnboundedReceiver<()>,
    loadtester: Arc<crate::targets::local::loadtester::LoadTester>,
    readiness: Arc<Readiness>,
) -> anyhow::Result<()> {
    let notifier = crate::notify::Notifier::from_config(&cfg)?;
    let rec = reconcile::Reconciler::open(cfg, true)?.with_notifier(notifier.clone());
    let (in_process, election): (Option<Box<dyn reconcile::InProcess>>, _) =
        match &rec.config().target.kubernetes {
            None => {
                // Finished analyses become notes, written by the reconciler's Git writer;
                // failed ones also reject their tags and are rolled back when asked.
                let outcomes = match rec.writer() {
                    Some(w) => Some(outcome_sink(&rec, w.clone(), notifier.clone()).await),
                    None => None,
                };
                let services = crate::targets::local::services::LocalServices::start(
                    rec.config(),
                    loadtester,
                    readiness.clone(),
                    outcomes,
                )
                .await;
                (services.map(|s| Box::new(s) as _), None)
            }
            Some(kube) => {
                // The cluster runs the workloads; the canary engine for Kubernetes is
                // not in this process yet, so readiness does not wait for it.
                readiness.set_no_engine();
                let client = crate::targets::kube::client::connect(kube, &rec.config().base_dir)
                    .await
                    .context("leader election")?;
                let election = leader::Election::start(
                    client,
                    &kube.namespace,
                    leader::identity(),
                    crate::targets::kube::lease::Timing::default(),
                )
                .await;
                (None, Some(election))
            }
        };
    reconcile::run(
        rec,
        in_process,
        election,
        control,
        rx,
        readiness,
        shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// A secret from the env var `var`, named by config field `field`: unset or empty is
/// an error, since an empty secret would admit anyone.
fn secret_env(field: &str, var: &str) -> anyhow::Result<Vec<u8>> {
    let value = std::env::var(var)
        .with_context(|| format!("{field}: environment variable {var} is not set"))?;
    anyhow::ensure!(
        !value.trim().is_empty(),
        "{field}: environment variable {var} is empty; an empty secret would admit anyone"
    );
    Ok(value.into_bytes())
}

/// Reads the load tester API's token and binds its listener, before anything starts.
async fn bind_loadtester(
    cfg: &Config,
    listen: &str,
    lt: Arc<crate::targets::local::loadtester::LoadTester>,
) -> anyhow::Result<(tokio::net::TcpListener, axum::Router)> {
    use crate::targets::local::loadtester::api;
    let secret = match (&cfg.loadtester.token_env, &cfg.loadtester.token_file) {
        (Some(var), _) => secret_env("loadtester.tokenEnv", var)?,
        (None, Some(file)) => {
            let path = cfg.resolve(file);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("loadtester.tokenFile: cannot read {}", path.display()))?;
            text.trim().as_bytes().to_vec()
        }
        (None, None) => anyhow::bail!("loadtester.listen is set but no tokenEnv or tokenFile"),
    };
    let token = api::Token::new(secret).map_err(|e| anyhow::anyhow!("loadtester: {e}"))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("loadtester.listen: cannot listen on {listen}"))?;
    Ok((listener, api::app(lt, token)))
}

fn serve(
    listener: Acceptor<tokio::net::TcpListener>,
    router: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // The peer address lets the daemon API admit loopback clients only.
        let service = router.into_make_service_with_connect_info::<crate::util::listen::Peer>();
        let _ = axum::serve(listener, service)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
    })
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
