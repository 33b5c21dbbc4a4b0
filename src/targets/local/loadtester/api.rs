//! The load tester's HTTP API, for callers outside gitcanary (a CI job opening a gate,
//! a Flagger running elsewhere). It is served only when `loadtester.listen` is set, on
//! its own listener, and every request but `GET /healthz` needs
//! `Authorization: Bearer <token>`. Requests must be `application/json`: a browser page
//! can send a `text/plain` POST to any address without a CORS preflight, never a JSON one.

use super::LoadTester;
use crate::source::webhook::ct_eq;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;

/// The bearer token HTTP callers must present; never printed.
#[derive(Clone)]
pub struct Token(Arc<Vec<u8>>);

impl Token {
    /// A token; an empty one is refused, since it would let anyone in.
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Token, String> {
        let secret = secret.into();
        if secret.iter().all(u8::is_ascii_whitespace) {
            return Err("the load tester token is empty".into());
        }
        Ok(Token(Arc::new(secret)))
    }

    fn admits(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| ct_eq(given.trim().as_bytes(), &self.0))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

/// The router: `GET /healthz` is open; everything else needs the token.
pub fn app(lt: Arc<LoadTester>, token: Token) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "OK" }))
        .fallback(serve)
        .with_state((lt, token))
}

/// Whether the request's media type is `application/json` (parameters allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

async fn serve(
    State((lt, token)): State<(Arc<LoadTester>, Token)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !token.admits(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "load tester: missing or wrong bearer token\n",
        )
            .into_response();
    }
    match method {
        Method::GET if uri.path() == "/reports" => Json(lt.reports()).into_response(),
        Method::POST if !is_json(&headers) => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "load tester: send Content-Type: application/json\n",
        )
            .into_response(),
        Method::POST => lt.handle(uri.path(), &body).await.into_response(),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "load tester: use POST (GET only for /healthz and /reports)\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_and_media_type_checks() {
        assert!(Token::new("").is_err());
        assert!(Token::new(" \n").is_err());
        let t = Token::new("s3cr3t").unwrap();
        assert_eq!(format!("{t:?}"), "Token(***)");
        let with = |k: header::HeaderName, v: &str| {
            let mut h = HeaderMap::new();
            h.insert(k, v.parse().unwrap());
            h
        };
        assert!(t.admits(&with(header::AUTHORIZATION, "Bearer s3cr3t")));
        assert!(!t.admits(&with(header::AUTHORIZATION, "Bearer s3cr3")));
        assert!(!t.admits(&with(header::AUTHORIZATION, "Basic s3cr3t")));
        assert!(!t.admits(&HeaderMap::new()));
        assert!(is_json(&with(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8"
        )));
        assert!(!is_json(&with(header::CONTENT_TYPE, "text/plain")));
        assert!(!is_json(&HeaderMap::new()));
    }
}
