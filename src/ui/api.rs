//! The UI's routes: the pages, the JSON API under `/api/v1/`, the login form and the
//! actions. A gate in front of everything but the login page and the static assets
//! admits a request when no token is configured or when it carries a session or the
//! token; actions need a token configured, a session and its CSRF token, and are
//! logged with who asked.

use super::auth::{self, Who};
use super::{assets, shapes, Ui};
use crate::canary::commands;
use crate::canary::decide::Manual;
use crate::manifest::ObjectKey;
use crate::util::time::unix_now;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// The UI's router, to merge into the server's.
pub fn routes(ui: Ui) -> Router {
    let gated = Router::new()
        .route("/ui/", get(index))
        .route("/api/v1/session", get(session))
        .route("/api/v1/sources", get(sources))
        .route("/api/v1/sources/reconcile", post(reconcile))
        .route("/api/v1/objects", get(objects))
        .route(
            "/api/v1/objects/{group}/{kind}/{ns}/{name}",
            get(object_yaml),
        )
        .route("/api/v1/canaries", get(canaries))
        .route("/api/v1/canaries/{ns}/{name}", get(canary))
        .route("/api/v1/canaries/{ns}/{name}/{action}", post(canary_action))
        .route("/api/v1/images", get(images))
        .route("/api/v1/history", get(history))
        .route("/api/v1/events", get(events))
        .route_layer(middleware::from_fn_with_state(ui.clone(), gate));
    Router::new()
        .route("/ui", get(|| async { redirect("/ui/") }))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/assets/{file}", get(asset))
        .merge(gated)
        .layer(middleware::from_fn(security_headers))
        .with_state(ui)
}

/// Headers on every UI and API response: the strict CSP and friends.
async fn security_headers(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(assets::CSP),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if api {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

fn error(code: StatusCode, message: impl std::fmt::Display) -> Response {
    (code, Json(json!({"error": message.to_string()}))).into_response()
}

/// Admits a request: anyone when no token is set, else a session or the bearer
/// token. Pages without one go to the login form; the API answers 401.
async fn gate(State(ui): State<Ui>, mut req: Request, next: Next) -> Response {
    let who = match &ui.0.auth {
        None => Who("anonymous".into()),
        Some(a) => match a.who(req.headers(), unix_now()) {
            Some(w) => w,
            None if req.uri().path().starts_with("/ui/") => return redirect("/ui/login"),
            None => {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer realm=\"gitcanary\"")],
                    Json(json!({"error": "log in at /ui/login or send the token as a bearer"})),
                )
                    .into_response()
            }
        },
    };
    req.extensions_mut().insert(who);
    next.run(req).await
}

async fn index() -> Response {
    assets::page(assets::INDEX)
}

async fn asset(Path(file): Path<String>) -> Response {
    assets::file(&file)
}

async fn login_page(State(ui): State<Ui>) -> Response {
    match ui.0.auth {
        None => redirect("/ui/"),
        Some(_) => assets::page(&assets::login("")),
    }
}

/// The login form's POST: the token (and a name) for a session cookie.
async fn login(State(ui): State<Ui>, body: Bytes) -> Response {
    let Some(a) = &ui.0.auth else {
        return redirect("/ui/");
    };
    let fields = auth::form(&body);
    let field = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let who = field("who")
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .unwrap_or("ui");
    if !auth::valid_name(who) {
        let page = assets::login("Names are letters, digits and . _ @ - (64 at most).");
        return (StatusCode::BAD_REQUEST, assets::page(&page)).into_response();
    }
    if !field("token").is_some_and(|t| a.token_ok(t)) {
        tracing::warn!(who, "UI login refused: wrong token");
        // A pause makes guessing slower for one client; the token length does the rest.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let page = assets::login("That token is not the one configured.");
        return (StatusCode::UNAUTHORIZED, assets::page(&page)).into_response();
    }
    tracing::info!(who, "UI login");
    let mut res = redirect("/ui/");
    if let Ok(v) = HeaderValue::from_str(&a.set_cookie(who, unix_now())) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

async fn logout() -> Response {
    let mut res = redirect("/ui/login");
    let clear = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        auth::COOKIE
    );
    if let Ok(v) = HeaderValue::from_str(&clear) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// What the page needs to know about its user: whether actions are on, and the
/// CSRF token to send with them.
async fn session(State(ui): State<Ui>, req: Request) -> Response {
    let who = req.extensions().get::<Who>().cloned();
    let body = match (&ui.0.auth, who) {
        (Some(a), Some(w)) => {
            json!({"who": w.0, "actions": true, "csrf": a.csrf(&w), "login": true})
        }
        _ => json!({"who": null, "actions": false, "csrf": null, "login": false}),
    };
    Json(body).into_response()
}

/// Runs a state read off the async workers and answers its JSON.
async fn read<T: serde::Serialize + Send + 'static>(
    f: impl FnOnce() -> Result<T, shapes::Error> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn sources(State(ui): State<Ui>) -> Response {
    read(move || shapes::sources(&ui.0.cfg)).await
}

async fn objects(State(ui): State<Ui>) -> Response {
    read(move || ui.view(shapes::objects)).await
}

/// One object's YAML; `group` is `core` for the core group and `ns` is `_` for
/// cluster-scoped objects.
async fn object_yaml(
    State(ui): State<Ui>,
    Path((group, kind, ns, name)): Path<(String, String, String, String)>,
) -> Response {
    let key = ObjectKey {
        group: if group == "core" {
            String::new()
        } else {
            group
        },
        kind,
        namespace: if ns == "_" { String::new() } else { ns },
        name,
    };
    match tokio::task::spawn_blocking(move || ui.view(|v| shapes::object_yaml(v, &key))).await {
        Ok(Ok(Some(text))) => {
            ([(header::CONTENT_TYPE, "text/yaml; charset=utf-8")], text).into_response()
        }
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "no such object in the inventory"),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn canaries(State(ui): State<Ui>) -> Response {
    read(move || ui.view(shapes::canaries)).await
}

async fn canary(State(ui): State<Ui>, Path((ns, name)): Path<(String, String)>) -> Response {
    let detail = move || ui.view(|v| shapes::canary_detail(v, &ns, &name));
    match tokio::task::spawn_blocking(detail).await {
        Ok(Ok(Some(v))) => Json(v).into_response(),
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "no such canary"),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn images(State(ui): State<Ui>) -> Response {
    read(move || Ok(shapes::images(&ui.0.state_dir))).await
}

async fn history(State(ui): State<Ui>) -> Response {
    let repo = ui.0.repo.clone();
    match tokio::task::spawn_blocking(move || super::history::read(&repo)).await {
        Ok(Ok(v)) => Json(Value::Array(v)).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn events(State(ui): State<Ui>) -> Response {
    let body = Body::new(ui.0.changes.subscribe());
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// Who may act: with a token configured, a session whose CSRF check passes; else
/// the refusal.
fn actor(
    ui: &Ui,
    req_who: Option<&Who>,
    headers: &HeaderMap,
) -> Result<Who, (StatusCode, &'static str)> {
    let Some(a) = &ui.0.auth else {
        return Err((
            StatusCode::FORBIDDEN,
            "actions are off: set server.uiTokenEnv to enable them",
        ));
    };
    let who = req_who
        .cloned()
        .ok_or((StatusCode::UNAUTHORIZED, "log in first"))?;
    if !a.csrf_ok(&who, headers) {
        tracing::warn!(who = %who.0, "UI action refused: CSRF check failed");
        return Err((StatusCode::FORBIDDEN, "CSRF check failed"));
    }
    Ok(who)
}

async fn canary_action(
    State(ui): State<Ui>,
    Path((ns, name, action)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let who = match actor(&ui, req.extensions().get::<Who>(), req.headers()) {
        Ok(w) => w,
        Err((code, why)) => return error(code, why),
    };
    let dir = ui.0.state_dir.clone();
    let id = format!("{name}.{ns}");
    let (n, a) = (name.clone(), action.clone());
    let done = tokio::task::spawn_blocking(move || -> Result<bool, String> {
        let key = ObjectKey::new("flagger.app/v1beta1", "Canary", &ns, &n);
        let target = ui.target().map_err(|e| e.to_string())?;
        if target.get(&key).map_err(|e| e.to_string())?.is_none() {
            return Ok(false);
        }
        match a.as_str() {
            "promote" => commands::request(&dir, &ns, &n, Manual::Promote),
            "abort" => commands::request(&dir, &ns, &n, Manual::Abort),
            "retry" => commands::request(&dir, &ns, &n, Manual::Retry),
            "suspend" => commands::set_suspended(&dir, &ns, &n, true),
            "resume" => commands::set_suspended(&dir, &ns, &n, false),
            other => return Err(format!("unknown action {other}")),
        }
        .map(|()| true)
        .map_err(|e| e.to_string())
    })
    .await;
    match done {
        Ok(Ok(true)) => {
            tracing::info!(who = %who.0, canary = %id, action = %action, "UI action: {action} canary {id} by {}", who.0);
            (StatusCode::ACCEPTED, Json(json!({"requested": action}))).into_response()
        }
        Ok(Ok(false)) => error(StatusCode::NOT_FOUND, "no such canary"),
        Ok(Err(e)) if e.starts_with("unknown action") => error(StatusCode::BAD_REQUEST, e),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn reconcile(State(ui): State<Ui>, req: Request) -> Response {
    let who = match actor(&ui, req.extensions().get::<Who>(), req.headers()) {
        Ok(w) => w,
        Err((code, why)) => return error(code, why),
    };
    tracing::info!(who = %who.0, "UI action: reconcile source by {}", who.0);
    let _ = ui.0.trigger.send(());
    (
        StatusCode::ACCEPTED,
        Json(json!({"requested": "reconcile"})),
    )
        .into_response()
}
