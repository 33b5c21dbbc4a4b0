//! The daemon API on gitcanary's server, which `gitcanary reconcile`, `suspend source`
//! and `resume source` call: `POST /daemon/v1/reconcile`, `/suspend` and `/resume`.
//! Who may call it: with `server.uiTokenEnv` set, whoever sends that token as a
//! bearer; without it, clients on the loopback interface only, addressing the server
//! by a loopback name (so a web page using DNS rebinding cannot). Every call needs the
//! `X-Gitcanary-Api: 1` header, which a browser does not send across origins.

use super::control::{Finished, WaitError};
use crate::server::AppState;
use crate::util::listen::Peer;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use std::time::Duration;

/// The header every call carries.
pub const HEADER: &str = "x-gitcanary-api";
/// The longest a call waits for a sync.
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// How long a call waits when it names no timeout (Flux's `--timeout` default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The routes, merged into the server's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/daemon/v1/reconcile", post(reconcile))
        .route("/daemon/v1/suspend", post(suspend))
        .route("/daemon/v1/resume", post(resume))
}

/// A call's options (JSON body, all optional).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Options {
    /// Fetch before syncing.
    #[serde(default)]
    with_source: bool,
    /// How long to wait, as a Go duration.
    timeout: Option<String>,
}

fn error(code: StatusCode, message: impl std::fmt::Display) -> Response {
    (code, Json(json!({"error": message.to_string()}))).into_response()
}

/// Why a call is refused: the status and the message.
type Refusal = (StatusCode, String);

fn refused((code, message): Refusal) -> Response {
    error(code, message)
}

/// Whether `host` (a Host header) names a loopback address.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Admits a call, or answers why not.
fn admit(state: &AppState, req: &Request) -> Result<(), Refusal> {
    let headers = req.headers();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header(HEADER) != Some("1") {
        return Err((
            StatusCode::FORBIDDEN,
            format!("daemon API calls need the {HEADER}: 1 header"),
        ));
    }
    match &state.api_token {
        Some(auth) => {
            let ok = header("authorization")
                .and_then(|a| a.strip_prefix("Bearer "))
                .is_some_and(|t| auth.token_ok(t));
            if !ok {
                return Err((
                    StatusCode::UNAUTHORIZED,
                    "send the server.uiTokenEnv token as a bearer".into(),
                ));
            }
        }
        None => {
            let peer_ok = req
                .extensions()
                .get::<ConnectInfo<Peer>>()
                .is_some_and(|c| c.0 .0.ip().is_loopback());
            // Every Host header: a second one must not smuggle a rebound name past.
            let mut hosts = headers.get_all("host").iter().peekable();
            let host_ok =
                hosts.peek().is_some() && hosts.all(|h| h.to_str().is_ok_and(loopback_host));
            if !peer_ok || !host_ok {
                return Err((
                    StatusCode::FORBIDDEN,
                    "the daemon API admits loopback clients only; set server.uiTokenEnv to call it from elsewhere".into(),
                ));
            }
        }
    }
    Ok(())
}

/// Admits a call and reads its options.
async fn open(state: &AppState, req: Request) -> Result<(Options, Duration), Refusal> {
    admit(state, &req)?;
    let body = axum::body::to_bytes(req.into_body(), 4096)
        .await
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    let opts: Options = if body.iter().all(u8::is_ascii_whitespace) {
        Options::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?
    };
    let timeout = match &opts.timeout {
        None => DEFAULT_TIMEOUT,
        Some(t) => crate::util::duration::parse(t)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("timeout: {e}")))?,
    };
    Ok((opts, timeout.min(MAX_WAIT)))
}

fn control(state: &AppState) -> Result<&super::control::Control, Refusal> {
    state.control.as_deref().ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            "no sync loop in this process".to_string(),
        )
    })
}

/// The answer to a wait: the fetched and applied revisions, or the error.
fn answer(waited: Result<Finished, WaitError>) -> Response {
    match waited {
        Ok(Finished {
            fetched,
            result: Ok(applied),
            ..
        }) => Json(json!({"fetched": fetched, "applied": applied})).into_response(),
        Ok(Finished {
            fetched,
            result: Err(e),
            ..
        }) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"fetched": fetched, "error": e})),
        )
            .into_response(),
        Err(e @ WaitError::Suspended(_)) => error(StatusCode::CONFLICT, e),
        Err(e @ WaitError::Timeout(_)) => error(StatusCode::GATEWAY_TIMEOUT, e),
        Err(e @ WaitError::Stopped) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn reconcile(State(state): State<AppState>, req: Request) -> Response {
    let (opts, timeout) = match open(&state, req).await {
        Ok(o) => o,
        Err(r) => return refused(r),
    };
    let c = match control(&state) {
        Ok(c) => c,
        Err(r) => return refused(r),
    };
    if c.is_suspended() {
        return answer(Err(WaitError::Suspended(c.name().to_string())));
    }
    tracing::info!(
        with_source = opts.with_source,
        "reconcile requested through the daemon API"
    );
    let after = c.request(opts.with_source);
    answer(c.wait(after, timeout).await)
}

async fn suspend(State(state): State<AppState>, req: Request) -> Response {
    if let Err(r) = open(&state, req).await {
        return refused(r);
    }
    let c = match control(&state) {
        Ok(c) => c,
        Err(r) => return refused(r),
    };
    match c.set_suspended(true) {
        Ok(()) => {
            tracing::info!("source suspended through the daemon API");
            Json(json!({"suspended": true})).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn resume(State(state): State<AppState>, req: Request) -> Response {
    let (_, timeout) = match open(&state, req).await {
        Ok(o) => o,
        Err(r) => return refused(r),
    };
    let c = match control(&state) {
        Ok(c) => c,
        Err(r) => return refused(r),
    };
    // Numbered before the loop can wake, so the sync the resume starts is awaited.
    let after = c.request(true);
    if let Err(e) = c.set_suspended(false) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, e);
    }
    tracing::info!("source resumed through the daemon API");
    answer(c.wait(after, timeout).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1:9797",
            "localhost:80",
            "[::1]:9797",
            "localhost",
            "127.0.0.2",
        ] {
            assert!(loopback_host(h), "{h}");
        }
        for h in [
            "evil.example:9797",
            "10.0.0.1:9797",
            "[fe80::1]:1",
            "localhost.evil.example",
        ] {
            assert!(!loopback_host(h), "{h}");
        }
    }
}
