//! The built-in load tester: a `hey` line hits its rate and reports status classes apart
//! from transport errors, `cmd` runs are de-duplicated, `bash` answers 200 or 500 and
//! never sees gitcanary's environment, the gates open and close, and the HTTP API is
//! off unless configured, then needs a bearer token and JSON.

mod common;
use common::*;
use gitcanary::targets::local::loadtester::{self, api, hey, LoadTester};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

async fn counting_backend(hits: Arc<AtomicUsize>) -> String {
    let app = axum::Router::new().fallback(move || {
        let hits = hits.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            "ok"
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

async fn serve(app: axum::Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hey_hits_its_rate_within_ten_percent() {
    let hits = Arc::new(AtomicUsize::new(0));
    let backend = counting_backend(hits.clone()).await;
    // -q is per worker: 20 rps x 2 workers x 3 s = 120 requests.
    let spec = hey::parse(&format!("hey -z 3s -q 20 -c 2 http://{backend}/"))
        .unwrap()
        .unwrap();
    let report = loadtester::run_hey(&spec, &spec.url).await;
    let got = hits.load(Ordering::SeqCst) as f64;
    assert!(
        (got - 120.0).abs() <= 12.0,
        "expected 120 +/- 10%, got {got} ({report:?})"
    );
    assert_eq!(report.total as f64, got);
    assert_eq!(report.by_status.get(&200).copied().unwrap_or(0) as f64, got);
    assert!((report.rps - 40.0).abs() <= 4.0, "rps {}", report.rps);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_commands_dedupe_bash_and_gates() {
    gitcanary::util::tls::install_crypto_provider();
    let hits = Arc::new(AtomicUsize::new(0));
    let backend = counting_backend(hits.clone()).await;
    let lt = LoadTester::new(None);
    let addr = serve(api::app(lt.clone(), api::Token::new("t0k3n").unwrap())).await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        let req = client
            .post(format!("http://{addr}{path}"))
            .bearer_auth("t0k3n")
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let cmd = format!("hey -z 1s -q 5 -c 1 http://{backend}/");
    let payload =
        serde_json::json!({"name": "podinfo", "namespace": "test", "metadata": {"cmd": cmd}});
    assert_eq!(post("/", payload.clone()).await, (202, "started\n".into()));
    assert_eq!(
        post("/", payload.clone()).await,
        (202, "already running\n".into()),
        "one run per canary and command"
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(lt.reports().len(), 1);
    assert_eq!(lt.reports()[0].0, "test/podinfo");

    let bash = |c: &str| serde_json::json!({"name": "podinfo", "namespace": "test", "metadata": {"type": "bash", "cmd": c}});
    assert_eq!(post("/", bash("echo hello")).await, (200, "hello\n".into()));
    let (code, body) = post("/", bash("echo nope; exit 3")).await;
    assert_eq!(code, 500);
    assert!(body.contains("nope"), "{body}");
    assert_eq!(post("/", serde_json::json!({"metadata": {}})).await.0, 400);

    let canary = serde_json::json!({"name": "podinfo", "namespace": "test"});
    assert_eq!(post("/gate/approve", canary.clone()).await.0, 200);
    assert_eq!(post("/gate/halt", canary.clone()).await.0, 403);
    assert_eq!(post("/gate/check", canary.clone()).await.0, 403);
    assert_eq!(post("/gate/open", canary.clone()).await.0, 200);
    assert_eq!(post("/gate/check", canary.clone()).await.0, 200);
    assert_eq!(
        post(
            "/gate/check",
            serde_json::json!({"name": "other", "namespace": "test"})
        )
        .await
        .0,
        403,
        "gates are per canary"
    );
    assert_eq!(post("/gate/close", canary.clone()).await.0, 200);
    assert_eq!(post("/gate/check", canary.clone()).await.0, 403);
    assert_eq!(post("/rollback/check", canary.clone()).await.0, 403);
    assert_eq!(post("/rollback/open", canary.clone()).await.0, 200);
    assert_eq!(post("/rollback/check", canary.clone()).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_needs_the_bearer_token_and_json() {
    gitcanary::util::tls::install_crypto_provider();
    let lt = LoadTester::new(None);
    let addr = serve(api::app(lt.clone(), api::Token::new("t0k3n").unwrap())).await;
    let client = reqwest::Client::new();
    let send = |path: &str, token: Option<&str>, content_type: &str, body: &str| {
        let mut req = client
            .post(format!("http://{addr}{path}"))
            .header("content-type", content_type)
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let bash =
        r#"{"name":"podinfo","namespace":"test","metadata":{"type":"bash","cmd":"echo hi"}}"#;
    let gate = r#"{"name":"podinfo","namespace":"test"}"#;
    assert_eq!(send("/", None, "application/json", bash).await, 401);
    assert_eq!(
        send("/", Some("wrong"), "application/json", bash).await,
        401
    );
    assert_eq!(
        send("/gate/open", None, "application/json", gate).await,
        401
    );
    assert_eq!(
        send("/rollback/open", None, "application/json", gate).await,
        401
    );
    // What a web page can send without a CORS preflight.
    assert_eq!(send("/", Some("t0k3n"), "text/plain", bash).await, 415);
    assert_eq!(
        send("/gate/open", Some("t0k3n"), "text/plain", gate).await,
        415
    );
    assert_eq!(
        send("/gate/check", Some("t0k3n"), "application/json", gate).await,
        403,
        "the refused requests opened nothing"
    );
    assert_eq!(
        send("/", Some("t0k3n"), "application/json", bash).await,
        200
    );
    assert_eq!(
        send("/nope", Some("t0k3n"), "application/json", gate).await,
        404
    );
    let get = |path: &str, token: Option<&str>| {
        let mut req = client.get(format!("http://{addr}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get("/healthz", None).await, 200);
    assert_eq!(get("/reports", None).await, 401);
    assert_eq!(get("/reports", Some("t0k3n")).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bash_commands_get_path_and_home_but_not_gitcanarys_environment() {
    // A secret in gitcanary's own environment, as a webhook secret or Git token would be.
    std::env::set_var("GITCANARY_TEST_LOADTESTER_SECRET", "s3cr3t");
    let lt = LoadTester::new(None);
    let body = serde_json::json!({"name": "podinfo", "namespace": "test", "metadata": {
        "type": "bash",
        "cmd": "echo \"secret=${GITCANARY_TEST_LOADTESTER_SECRET:-unset}\"; echo \"home=$HOME\"; command -v sh >/dev/null && echo path-ok; FOO=set sh -c 'echo foo=$FOO'"
    }});
    let (code, out) = lt.handle("/", body.to_string().as_bytes()).await;
    assert_eq!(code.as_u16(), 200, "{out}");
    assert!(out.contains("secret=unset\n"), "{out}");
    assert!(!out.contains("s3cr3t"), "{out}");
    assert!(
        out.contains(&format!("home={}\n", std::env::var("HOME").unwrap())),
        "{out}"
    );
    assert!(
        out.contains("path-ok\n") && out.contains("foo=set\n"),
        "{out}"
    );
}

/// A backend whose every second answer is a 500, as a half-broken canary's.
async fn half_failing_backend() -> String {
    let n = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().fallback(move || {
        let n = n.clone();
        async move {
            if n.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                (axum::http::StatusCode::OK, "ok")
            } else {
                (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom")
            }
        }
    });
    serve(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_test_reports_status_classes_apart_from_transport_errors() {
    let backend = half_failing_backend().await;
    let spec = hey::parse(&format!("hey -n 40 -c 2 http://{backend}/"))
        .unwrap()
        .unwrap();
    let report = loadtester::run_hey(&spec, &spec.url).await;
    assert_eq!(report.total, 40);
    assert_eq!(report.status_classes.get("2xx"), Some(&20), "{report:?}");
    assert_eq!(report.status_classes.get("5xx"), Some(&20), "{report:?}");
    assert_eq!(report.transport_errors, 0);
    let summary = report.summary();
    assert!(
        summary.starts_with("requests=40 2xx=20 3xx=0 4xx=0 5xx=20 transport_errors=0 rps="),
        "{summary}"
    );

    // Nothing listens: every request is a transport error, not a status.
    let closed = format!("127.0.0.1:{}", free_port());
    let spec = hey::parse(&format!("hey -n 6 -c 2 -t 2 http://{closed}/"))
        .unwrap()
        .unwrap();
    let report = loadtester::run_hey(&spec, &spec.url).await;
    assert_eq!((report.total, report.transport_errors), (6, 6));
    assert!(report.status_classes.is_empty(), "{report:?}");

    // A `bash` run of a hey line answers with the report.
    let lt = LoadTester::new(None);
    let body = serde_json::json!({"name": "podinfo", "namespace": "test", "metadata": {
        "type": "bash", "cmd": format!("hey -n 10 -c 1 -H 'Authorization: Bearer s3cr3t' http://{backend}/")
    }});
    let (code, out) = lt.handle("/", body.to_string().as_bytes()).await;
    assert_eq!(code.as_u16(), 200, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status_classes"]["5xx"], 5, "{v}");
    assert_eq!(v["transport_errors"], 0, "{v}");
}

#[tokio::test]
async fn webhook_paths_dispatch_in_process() {
    let lt = LoadTester::new(None);
    let canary = br#"{"name":"podinfo","namespace":"test"}"#;
    let path = |url| loadtester::url_path(url);
    assert_eq!(path("http://flagger-loadtester.test/"), "/");
    assert_eq!(path("http://flagger-loadtester.test"), "/");
    assert_eq!(
        path("http://flagger-loadtester.test/gate/check"),
        "/gate/check"
    );
    let code = |r: (axum::http::StatusCode, String)| r.0.as_u16();
    assert_eq!(
        code(lt.handle(path("http://lt.test/gate/check"), canary).await),
        403
    );
    assert_eq!(code(lt.handle("/gate/open/", canary).await), 200);
    assert_eq!(code(lt.handle("/gate/check?x=1", canary).await), 200);
    assert_eq!(code(lt.handle("/gate/approve", canary).await), 200);
    assert_eq!(code(lt.handle("/gate/halt", canary).await), 403);
    assert_eq!(code(lt.handle("/rollback/check", canary).await), 403);
    assert_eq!(code(lt.handle("/gate/nope", canary).await), 404);
}

/// The load tester's address from `status/server.json`, if it serves one.
fn loadtester_address(setup: &Setup) -> Option<String> {
    let b = std::fs::read(setup.state().join("status/server.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&b).ok()?;
    v["loadtester"].as_str().map(str::to_string)
}

fn post(addr: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let (code, _, body) = http_request(addr, "POST", path, headers, body.as_bytes());
    (code, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn run_serves_the_api_only_when_configured_and_only_with_a_token() {
    let (_remote, setup) = seeded(&[("cfg.yaml", &configmap("cfg", "one"))], "one", "");
    let bash = r#"{"name":"podinfo","namespace":"test","metadata":{"type":"bash","cmd":"echo ${GITCANARY_TEST_SECRET:-unset}"}}"#;
    let json = ("Content-Type", "application/json");

    // Not configured: nothing on the main listener, no listener of its own.
    let running = setup.spawn_run(&[]);
    let addr = setup.server_address();
    assert_eq!(post(&addr, "/loadtester/", &[json], bash).0, 404);
    assert_eq!(post(&addr, "/loadtester/gate/open", &[json], "{}").0, 404);
    assert_eq!(loadtester_address(&setup), None);
    running.stop();

    // Configured without its token: refused at start.
    setup.edit_config(
        "server:\n",
        "loadtester:\n  listen: 127.0.0.1:0\n  tokenEnv: LT_TOKEN\nserver:\n",
    );
    std::fs::remove_file(setup.state().join("status/server.json")).unwrap();
    for env in [&[][..], &[("LT_TOKEN", "")][..]] {
        let stderr = setup.run_refused(env);
        assert!(
            stderr.contains("loadtester.tokenEnv: environment variable LT_TOKEN is"),
            "{stderr}"
        );
    }

    let running = setup.spawn_run(&[("LT_TOKEN", "t0k3n"), ("GITCANARY_TEST_SECRET", "s3cr3t")]);
    let lt = wait_for(Duration::from_secs(20), || loadtester_address(&setup))
        .expect("run writes the load tester's address");
    assert_eq!(post(&lt, "/", &[json], bash).0, 401);
    let auth = ("Authorization", "Bearer t0k3n");
    assert_eq!(
        post(&lt, "/", &[auth, ("Content-Type", "text/plain")], bash).0,
        415
    );
    assert_eq!(post(&lt, "/", &[auth, json], bash), (200, "unset\n".into()));
    running.stop();

    // The token from a file: an empty one is refused as well.
    setup.edit_config("tokenEnv: LT_TOKEN", "tokenFile: lt-token");
    std::fs::write(setup.dir.path().join("lt-token"), "\n").unwrap();
    let stderr = setup.run_refused(&[]);
    assert!(
        stderr.contains("loadtester: the load tester token is empty"),
        "{stderr}"
    );
    std::fs::write(setup.dir.path().join("lt-token"), "f1le-t0k3n\n").unwrap();
    std::fs::remove_file(setup.state().join("status/server.json")).unwrap();
    let running = setup.spawn_run(&[]);
    let lt = wait_for(Duration::from_secs(20), || loadtester_address(&setup))
        .expect("run writes the load tester's address");
    let auth = ("Authorization", "Bearer f1le-t0k3n");
    assert_eq!(post(&lt, "/gate/open", &[auth, json], "{}").0, 200);
    running.stop();
}
