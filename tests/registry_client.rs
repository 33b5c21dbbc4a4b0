//! The registry client against test servers on loopback: `Link` pagination (Debian's
//! registry 2.8 never pages), the bearer-token challenge flow, 429 with `Retry-After`,
//! and per-image failures (5xx, garbage JSON) that leave other images unaffected.

use axum::extract::State;
use axum::http::Uri;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use gitcanary::oci::reference::ImageRepo;
use gitcanary::oci::registry::{Client, Credentials, Settings};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn query(uri: &Uri) -> HashMap<String, String> {
    let decode = |s: &str| {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() + 1 {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(if b[i] == b'+' { b' ' } else { b[i] });
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    };
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

#[derive(Default)]
struct Hits {
    tags: AtomicUsize,
    token: AtomicUsize,
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Serves `total` tags `t00000…` in pages of `page`, with `Link` to the next page.
fn pager(total: usize, page: usize) -> Router {
    Router::new().route(
        "/v2/{*rest}",
        get(move |uri: Uri| async move {
            let q = query(&uri);
            let start = q
                .get("last")
                .map(|l| l[1..].parse::<usize>().unwrap() + 1)
                .unwrap_or(0);
            let end = (start + page).min(total);
            let tags: Vec<String> = (start..end).map(|i| format!("t{i:05}")).collect();
            let mut headers = HeaderMap::new();
            if end < total {
                let link = format!(
                    "</v2/big/tags/list?n={page}&last={}>; rel=\"next\"",
                    tags.last().unwrap()
                );
                headers.insert("link", link.parse().unwrap());
            }
            (
                headers,
                axum::Json(serde_json::json!({"name": "big", "tags": tags})),
            )
        }),
    )
}

#[tokio::test]
async fn follows_link_pagination() {
    let addr = serve(pager(2_500, 100)).await;
    let client = Client::new(Settings::default(), Credentials::default());
    let tags = client
        .list_tags(&ImageRepo::parse(&format!("{addr}/big")), &[])
        .await
        .unwrap();
    assert_eq!(tags.len(), 2_500);
    assert_eq!(tags.first().unwrap(), "t00000");
    assert_eq!(tags.last().unwrap(), "t02499");

    let capped = Client::new(
        Settings {
            max_tags: 250,
            ..Default::default()
        },
        Credentials::default(),
    );
    assert_eq!(
        capped
            .list_tags(&ImageRepo::parse(&format!("{addr}/big")), &[])
            .await
            .unwrap()
            .len(),
        250
    );
}

#[tokio::test]
async fn bearer_challenge_flow_and_retry_after() {
    let hits = Arc::new(Hits::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let realm = format!("http://{addr}/token");
    let app = Router::new()
        .route(
            "/v2/private/app/tags/list",
            get(move |State(h): State<Arc<Hits>>, headers: HeaderMap| {
                let realm = realm.clone();
                async move {
                    let n = h.tags.fetch_add(1, Ordering::SeqCst);
                    if n == 0 {
                        // First: too many requests, come back in 1s.
                        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response();
                    }
                    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer tok-123") {
                        let challenge = format!("Bearer realm=\"{realm}\",service=\"test-registry\",scope=\"repository:private/app:pull\"");
                        return (StatusCode::UNAUTHORIZED, [("www-authenticate", challenge)]).into_response();
                    }
                    axum::Json(serde_json::json!({"name": "private/app", "tags": ["1.0.0", "1.1.0", "1.1.0.sig"]})).into_response()
                }
            }),
        )
        .route(
            "/token",
            get(|State(h): State<Arc<Hits>>, uri: Uri, headers: HeaderMap| async move {
                let q = query(&uri);
                h.token.fetch_add(1, Ordering::SeqCst);
                assert_eq!(q.get("service").map(String::as_str), Some("test-registry"));
                assert_eq!(q.get("scope").map(String::as_str), Some("repository:private/app:pull"));
                // The token endpoint gets the configured credentials as basic auth.
                use base64::Engine;
                let want = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("robot:pw"));
                if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                axum::Json(serde_json::json!({"token": "tok-123", "expires_in": 300})).into_response()
            }),
        )
        .with_state(hits.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut creds = Credentials::default();
    creds.insert(
        &addr,
        gitcanary::oci::registry::Basic {
            username: "robot".into(),
            password: "pw".into(),
        },
    );
    let client = Client::new(Settings::default(), creds);
    let started = std::time::Instant::now();
    let sig = regex::Regex::new(r"^.*\.sig$").unwrap();
    let tags = client
        .list_tags(&ImageRepo::parse(&format!("{addr}/private/app")), &[sig])
        .await
        .unwrap();
    assert_eq!(tags, vec!["1.0.0", "1.1.0"], "signature tags excluded");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "Retry-After was honoured"
    );
    assert_eq!(hits.token.load(Ordering::SeqCst), 1);
    // The token is cached: a second listing asks the token endpoint nothing.
    client
        .list_tags(&ImageRepo::parse(&format!("{addr}/private/app")), &[])
        .await
        .unwrap();
    assert_eq!(hits.token.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn server_errors_and_garbage_fail_only_that_image() {
    let app = Router::new()
        .route(
            "/v2/broken/tags/list",
            get(|| async { (StatusCode::BAD_GATEWAY, "upstream down").into_response() }),
        )
        .route(
            "/v2/garbage/tags/list",
            get(|| async { Response::new(axum::body::Body::from("<html>not json")) }),
        )
        .route(
            "/v2/good/tags/list",
            get(|| async { axum::Json(serde_json::json!({"name": "good", "tags": ["1.0.0"]})) }),
        );
    let addr = serve(app).await;
    let client = Client::new(Settings::default(), Credentials::default());
    let e = client
        .list_tags(&ImageRepo::parse(&format!("{addr}/broken")), &[])
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(e, format!("{addr}/broken: registry answered 502"));
    let e = client
        .list_tags(&ImageRepo::parse(&format!("{addr}/garbage")), &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "{addr}/garbage: invalid response: tag list is not JSON"
        )),
        "{e}"
    );
    assert_eq!(
        client
            .list_tags(&ImageRepo::parse(&format!("{addr}/good")), &[])
            .await
            .unwrap(),
        vec!["1.0.0"]
    );
    let unreachable = ImageRepo::parse("127.0.0.1:1/nothing");
    let e = client
        .list_tags(&unreachable, &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot reach registry"), "{e}");
}
