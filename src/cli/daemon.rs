//! `gitcanary reconcile`, `suspend source` and `resume source`: calls to the running
//! daemon's API (`crate::sync::api`), worded as `flux reconcile|suspend|resume` print.
//! The daemon's address is in `status/server.json`; with `server.uiTokenEnv` set, the
//! token is read from that variable and sent as a bearer.

use crate::config::Config;
use crate::sync::api;
use anyhow::Context;
use clap::Subcommand;
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::Duration;

/// What `suspend` and `resume` act on.
#[derive(Subcommand, Debug)]
pub enum SuspendRef {
    /// A Canary, as `namespace/name` (or `name` in `default`): the engine leaves it as it is.
    Canary {
        /// `namespace/name`.
        name: String,
    },
    /// The Git source: sync and image automation pause until `resume source`.
    Source {
        /// The source's name (`source.name`); optional, as there is one.
        name: Option<String>,
        /// How long `resume` waits for the sync it starts.
        #[arg(long, default_value = "5m", value_parser = crate::util::duration::parse)]
        timeout: Duration,
    },
}

/// How a call ended.
enum Reply {
    /// 2xx with its JSON.
    Ok(Value),
    /// The daemon refused or the sync failed: its message.
    Failed(String),
    /// No daemon answers for this config.
    NoDaemon(String),
}

/// The daemon's address from `status/server.json`, reachable from here.
fn address(cfg: &Config) -> Result<String, String> {
    let path = cfg.state_dir().join("status").join("server.json");
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let addr: std::net::SocketAddr = v["address"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("{}: no address", path.display()))?;
    // A server on every interface is reached on loopback, which the API admits.
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    Ok(format!("{ip}:{}", addr.port()))
}

/// POSTs `body` to the daemon API's `path`, waiting up to `wait` for the answer.
fn call(cfg: &Config, path: &str, body: Value, wait: Duration) -> anyhow::Result<Reply> {
    let addr = match address(cfg) {
        Ok(a) => a,
        Err(why) => return Ok(Reply::NoDaemon(why)),
    };
    let token = match &cfg.server.ui_token_env {
        None => None,
        Some(var) => Some(std::env::var(var).with_context(|| {
            format!("server.uiTokenEnv: the daemon API needs the token; set {var}")
        })?),
    };
    crate::util::tls::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let http = reqwest::Client::builder().build()?;
        let mut req = http
            .post(format!("http://{addr}{path}"))
            .header(api::HEADER, "1")
            .timeout(wait + Duration::from_secs(10))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t.trim());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                return Ok(Reply::NoDaemon(format!("nothing answers on {addr}")))
            }
            Err(e) => return Err(anyhow::anyhow!("daemon API at {addr}: {e}")),
        };
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or_default();
        Ok(if status.is_success() {
            Reply::Ok(v)
        } else {
            Reply::Failed(
                v["error"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("the daemon answered {status}")),
            )
        })
    })
}

/// Prints the revisions of a sync the daemon ran; exit 0, or 1 with the error.
fn report(reply: Reply, with_source: bool) -> ExitCode {
    match reply {
        Reply::Ok(v) => {
            if with_source {
                if let Some(f) = v["fetched"].as_str() {
                    println!("✔ fetched revision {f}");
                }
            }
            println!(
                "✔ applied revision {}",
                v["applied"].as_str().unwrap_or("-")
            );
            ExitCode::SUCCESS
        }
        Reply::Failed(e) => {
            eprintln!("✗ {e}");
            ExitCode::FAILURE
        }
        Reply::NoDaemon(why) => {
            eprintln!(
                "✗ no gitcanary daemon is running for this config ({why}); start `gitcanary run`"
            );
            ExitCode::FAILURE
        }
    }
}

/// `gitcanary reconcile [--with-source] [--timeout D]`.
pub fn reconcile(cfg: &Config, with_source: bool, timeout: Duration) -> anyhow::Result<ExitCode> {
    let name = &cfg.source.name;
    println!("► asking the daemon to reconcile source {name}");
    println!("◎ waiting for reconciliation");
    let body =
        json!({"withSource": with_source, "timeout": crate::util::duration::format(timeout)});
    let reply = call(cfg, "/daemon/v1/reconcile", body, timeout)?;
    Ok(report(reply, with_source))
}

/// `gitcanary suspend source` and `resume source`.
pub fn suspend_source(
    cfg: &Config,
    name: Option<&str>,
    suspend: bool,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let source = &cfg.source.name;
    if let Some(n) = name.filter(|n| *n != source) {
        anyhow::bail!("no source {n}: this config follows source {source}");
    }
    let (verb, done, path) = match suspend {
        true => ("suspending", "suspended", "/daemon/v1/suspend"),
        false => ("resuming", "resumed", "/daemon/v1/resume"),
    };
    println!("► {verb} source {source}");
    let body = json!({"timeout": crate::util::duration::format(timeout)});
    match call(cfg, path, body, timeout)? {
        Reply::NoDaemon(why) => {
            // Recorded for the next `run`, which starts as the record says.
            let state = cfg.state_dir();
            crate::source::suspend::write(&state, suspend, crate::util::time::unix_now())
                .with_context(|| {
                    format!("writing {}", crate::source::suspend::path(&state).display())
                })?;
            println!(
                "✔ source {done} (no daemon is running: {why}; `gitcanary run` starts {})",
                if suspend { "suspended" } else { "syncing" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Reply::Failed(e) => {
            eprintln!("✗ {e}");
            Ok(ExitCode::FAILURE)
        }
        Reply::Ok(v) if suspend => {
            let _ = v;
            println!("✔ source suspended");
            Ok(ExitCode::SUCCESS)
        }
        reply => {
            println!("✔ source resumed");
            println!("◎ waiting for reconciliation");
            Ok(report(reply, true))
        }
    }
}
