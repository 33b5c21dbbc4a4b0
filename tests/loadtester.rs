//! The built-in load tester: a `hey` line hits its rate, `cmd` runs are de-duplicated,
//! `bash` answers 200 or 500, and the gates open and close.

use gitcanary::target::local::loadtester::{self, hey, LoadTester};
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
    let addr = serve(loadtester::app(lt.clone())).await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        let req = client.post(format!("http://{addr}{path}")).json(&body);
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
