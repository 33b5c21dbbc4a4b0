//! The Service proxy with real sockets: weighted splits, match rules, mirroring, the
//! in-process success-rate window, and 502/503 for bad or missing backends.

use gitcanary::manifest::object::{Object, ObjectKey, Origin};
use gitcanary::sync::plan;
use gitcanary::targets::local::proxy::routing::{parse_matches, Route};
use gitcanary::targets::local::proxy::stats::Scope;
use gitcanary::targets::local::proxy::{global_stats, Proxy};
use gitcanary::targets::local::runtime::Endpoint;
use gitcanary::targets::local::LocalStore;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The last minute's figures of one Deployment's requests, as a canary check reads them.
fn last_minute(
    ns: &str,
    deployment: &str,
) -> Option<gitcanary::targets::local::proxy::stats::WindowFigures> {
    let now = gitcanary::util::time::unix_now() as u64 + 1;
    global_stats().window(ns, deployment, &Scope::last(Duration::from_secs(60), now))
}

fn service(ns: &str, name: &str, app: &str) -> Object {
    let v = serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}});
    Object::from_json(
        ObjectKey::new("v1", "Service", ns, name),
        "v1".into(),
        &v,
        Origin {
            file: "svc.yaml".into(),
            line: 1,
        },
    )
}

fn deployment(ns: &str, name: &str, app: &str) -> Object {
    let v = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": app}}, "template": {"metadata": {"labels": {"app": app}},
            "spec": {"containers": [{"name": "app", "image": "example.com/app:1"}]}}}});
    Object::from_json(
        ObjectKey::new("apps/v1", "Deployment", ns, name),
        "apps/v1".into(),
        &v,
        Origin {
            file: "deploy.yaml".into(),
            line: 1,
        },
    )
}

/// A backend that answers its name, optionally failing every other request, and counts hits.
async fn backend(name: &'static str, fail_every_other: bool, hits: Arc<AtomicUsize>) -> u16 {
    let app = axum::Router::new().fallback(move || {
        let hits = hits.clone();
        async move {
            let n = hits.fetch_add(1, Ordering::SeqCst);
            if fail_every_other && n % 2 == 1 {
                (axum::http::StatusCode::INTERNAL_SERVER_ERROR, name)
            } else {
                (axum::http::StatusCode::OK, name)
            }
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    port
}

fn endpoint(ns: &str, deployment: &str, app: &str, port: u16, ready: bool) -> Endpoint {
    Endpoint {
        namespace: ns.into(),
        deployment: deployment.into(),
        pod: format!("{deployment}-pod"),
        labels: [("app".to_string(), app.to_string())].into(),
        ready,
        ports: vec![(Some("http".into()), 9898, port)],
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    proxy: Proxy,
    apex: String,
    primary_hits: Arc<AtomicUsize>,
    canary_hits: Arc<AtomicUsize>,
    endpoints: Arc<Mutex<Vec<Endpoint>>>,
    ns: String,
}

/// Each test uses its own namespace: the proxy's statistics are process-wide.
async fn fixture(ns: &str, canary_fails: bool) -> Fixture {
    gitcanary::util::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let objs = vec![
        service(ns, "podinfo", "podinfo-primary"),
        service(ns, "podinfo-primary", "podinfo-primary"),
        service(ns, "podinfo-canary", "podinfo"),
        deployment(ns, "podinfo", "podinfo"),
        deployment(ns, "podinfo-primary", "podinfo-primary"),
    ];
    let inv = store.inventory().unwrap();
    store.apply(&plan(&objs, &inv), &objs, &inv, "r1").unwrap();
    let (primary_hits, canary_hits) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let p = backend("primary", false, primary_hits.clone()).await;
    let c = backend("canary", canary_fails, canary_hits.clone()).await;
    let endpoints = Arc::new(Mutex::new(vec![
        endpoint(ns, "podinfo-primary", "podinfo-primary", p, true),
        endpoint(ns, "podinfo", "podinfo", c, true),
    ]));
    let proxy = Proxy::new(dir.path(), endpoints.clone(), BTreeMap::new()).unwrap();
    proxy.sync_services().await.unwrap();
    let apex = proxy
        .addresses()
        .await
        .into_iter()
        .find(|a| a.1 == "podinfo")
        .unwrap()
        .3
        .to_string();
    Fixture {
        _dir: dir,
        proxy,
        apex,
        primary_hits,
        canary_hits,
        endpoints,
        ns: ns.to_string(),
    }
}

fn split(weight: u32) -> Route {
    Route {
        primary: "podinfo-primary".into(),
        canary: Some("podinfo-canary".into()),
        canary_weight: weight,
        mirror_weight: 100,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_within_three_points() {
    let f = fixture("weights", false).await;
    let client = reqwest::Client::new();
    for weight in [0u32, 10, 50, 100] {
        f.proxy.set_route(&f.ns, "podinfo", Some(split(weight)));
        let mut canary = 0;
        for _ in 0..2000 {
            let body = client
                .get(format!("http://{}/", f.apex))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if body == "canary" {
                canary += 1;
            }
        }
        let observed = canary as f64 / 20.0;
        assert!(
            (observed - weight as f64).abs() <= 3.0,
            "weight {weight}: observed {observed}%"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_match_routes_to_canary_and_mirroring_copies() {
    let f = fixture("match", false).await;
    let mut r = split(0);
    r.matches =
        parse_matches(&serde_json::json!([{"headers": {"x-canary": {"exact": "insider"}}}]))
            .unwrap();
    f.proxy.set_route(&f.ns, "podinfo", Some(r));
    let client = reqwest::Client::new();
    let get = |h: Option<&'static str>| {
        let mut req = client.get(format!("http://{}/", f.apex));
        if let Some(v) = h {
            req = req.header("x-canary", v);
        }
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    assert_eq!(get(Some("insider")).await, "canary");
    assert_eq!(get(Some("outsider")).await, "primary");
    assert_eq!(get(None).await, "primary");

    let mut r = split(0);
    r.mirror = true;
    f.proxy.set_route(&f.ns, "podinfo", Some(r));
    let before = (
        f.primary_hits.load(Ordering::SeqCst),
        f.canary_hits.load(Ordering::SeqCst),
    );
    for _ in 0..20 {
        assert_eq!(get(None).await, "primary", "the primary answers");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.primary_hits.load(Ordering::SeqCst) - before.0, 20);
    assert_eq!(
        f.canary_hits.load(Ordering::SeqCst) - before.1,
        20,
        "every request is mirrored to the canary"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_figures_match_what_the_client_saw_and_bad_backends_fail() {
    let f = fixture("window", true).await;
    f.proxy.set_route(&f.ns, "podinfo", Some(split(100)));
    let client = reqwest::Client::new();
    let mut ok = 0;
    let mut latencies = Vec::new();
    for _ in 0..400 {
        let t = std::time::Instant::now();
        let status = client
            .get(format!("http://{}/", f.apex))
            .send()
            .await
            .unwrap()
            .status();
        latencies.push(t.elapsed());
        if status.is_success() {
            ok += 1;
        }
    }
    let w = last_minute("window", "podinfo").expect("figures");
    assert_eq!(w.requests, 400);
    assert_eq!(w.success_rate, ok as f64 * 100.0 / 400.0);
    assert_eq!(w.success_rate, 50.0);
    latencies.sort();
    let client_p99 = latencies[395].as_secs_f64() * 1000.0;
    assert!(
        w.p99_ms <= client_p99 + 0.5,
        "proxy p99 {} ms vs client p99 {client_p99} ms",
        w.p99_ms
    );

    // No ready endpoint: 503 at once. A dead backend: 502.
    f.endpoints
        .lock()
        .unwrap()
        .iter_mut()
        .for_each(|e| e.ready = false);
    let t = std::time::Instant::now();
    assert_eq!(
        client
            .get(format!("http://{}/", f.apex))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert!(t.elapsed() < Duration::from_millis(500));
    {
        let mut eps = f.endpoints.lock().unwrap();
        eps.iter_mut().for_each(|e| e.ready = true);
        eps[1].ports[0].2 = 1; // nothing listens on port 1
    }
    assert_eq!(
        client
            .get(format!("http://{}/", f.apex))
            .send()
            .await
            .unwrap()
            .status(),
        502
    );
    let text = global_stats().render();
    assert!(text.contains("response_total{direction=\"inbound\",namespace=\"window\",deployment=\"podinfo\",classification=\"failure\",status_code=\"502\"} 1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_find_no_ready_canary_pod_count_against_the_canary() {
    let f = fixture("unserved", false).await;
    f.proxy.set_route(&f.ns, "podinfo", Some(split(100)));
    f.endpoints.lock().unwrap()[1].ready = false;
    let client = reqwest::Client::new();
    for _ in 0..10 {
        let status = client
            .get(format!("http://{}/", f.apex))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 503);
    }
    // The canary's success rate (its Deployment's window) sees every 503.
    let w = last_minute("unserved", "podinfo").expect("the 503s are the canary's");
    assert_eq!((w.requests, w.success_rate), (10, 0.0));
    let text = global_stats().render();
    assert!(text.contains("response_total{direction=\"inbound\",namespace=\"unserved\",deployment=\"podinfo\",classification=\"failure\",status_code=\"503\"} 10"), "{text}");
    assert!(!text.contains("deployment=\"podinfo-canary\""), "{text}");
}

/// A backend that reports when the first bytes of a request body arrive, then reads
/// the body to its end and answers its length.
async fn body_counter(first_bytes: tokio::sync::mpsc::UnboundedSender<()>) -> u16 {
    use http_body_util::BodyExt;
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let first_bytes = first_bytes.clone();
        async move {
            let mut body = req.into_body();
            let mut n = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    if n == 0 && !data.is_empty() {
                        let _ = first_bytes.send(());
                    }
                    n += data.len();
                }
            }
            n.to_string()
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    port
}

/// Sends a 64 MiB POST in 1 MiB pieces to `addr`; after the first 2 MiB (past the
/// mirror/retry buffer) it waits until the backend has seen body bytes. A proxy that
/// buffers whole bodies never lets them through before the end, so this fails.
async fn stream_64_mib(addr: &str, first_bytes: &mut tokio::sync::mpsc::UnboundedReceiver<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const PIECE: usize = 1 << 20;
    const PIECES: usize = 64;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: big\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        PIECE * PIECES
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let piece = vec![b'x'; PIECE];
    for _ in 0..2 {
        s.write_all(&piece).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(30), first_bytes.recv())
        .await
        .expect("the backend sees the body's first bytes before the client has sent it all");
    for _ in 2..PIECES {
        s.write_all(&piece).await.unwrap();
    }
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.ends_with(&format!("\r\n\r\n{}", PIECE * PIECES)),
        "the backend got the whole body: {answer}"
    );
}

/// A proxy for one Service `ns/name` (selecting `app: name`) with one ready endpoint
/// on `port`, with at most `max_connections` per listener; its listen address.
async fn single_service(
    ns: &str,
    name: &str,
    port: u16,
    max_connections: usize,
) -> (tempfile::TempDir, Proxy, std::net::SocketAddr) {
    let endpoints = Arc::new(Mutex::new(vec![endpoint(ns, name, name, port, true)]));
    single_service_over(ns, name, endpoints, max_connections).await
}

/// As [`single_service`], over endpoints the test may change.
async fn single_service_over(
    ns: &str,
    name: &str,
    endpoints: Arc<Mutex<Vec<Endpoint>>>,
    max_connections: usize,
) -> (tempfile::TempDir, Proxy, std::net::SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let objs = vec![service(ns, name, name)];
    let inv = store.inventory().unwrap();
    store.apply(&plan(&objs, &inv), &objs, &inv, "r1").unwrap();
    let proxy = Proxy::new(dir.path(), endpoints, BTreeMap::new())
        .unwrap()
        .with_max_connections(max_connections);
    proxy.sync_services().await.unwrap();
    let addr = proxy.addresses().await[0].3;
    (dir, proxy, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_request_bodies_stream_through_plain_and_mirrored_routes() {
    let ns = "streaming";
    let (tx, mut first_bytes) = tokio::sync::mpsc::unbounded_channel();
    let port = body_counter(tx).await;
    let (_dir, proxy, addr) = single_service(ns, "big", port, 16).await;
    let addr = addr.to_string();

    stream_64_mib(&addr, &mut first_bytes).await;

    // A mirrored request is buffered for the copy only up to its cap, then streams on.
    let route = Route {
        primary: "big".into(),
        canary: Some("big".into()),
        mirror: true,
        mirror_weight: 100,
        ..Default::default()
    };
    proxy.set_route(ns, "big", Some(route));
    stream_64_mib(&addr, &mut first_bytes).await;
}

/// One keep-alive GET on `s`; the answer's status line.
async fn get_on(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET / HTTP/1.1\r\nhost: capped\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_past_its_connection_cap_makes_the_next_client_wait() {
    let port = backend("web", false, Arc::new(AtomicUsize::new(0))).await;
    let (_dir, _proxy, addr) = single_service("capped", "web", port, 1).await;

    let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert_eq!(get_on(&mut first).await, "HTTP/1.1 200 OK");
    let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
    let waiting = tokio::spawn(async move { get_on(&mut second).await });
    // With a cap of one the second client is not served while the first stays open; a
    // missing cap would answer it at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "served past the connection cap");
    drop(first);
    let status = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served once the first connection closed")
        .unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
}

/// A backend that answers the first request on each connection, keeps the connection,
/// and closes it unanswered when the next request comes: a replica whose keep-alive
/// timeout ends an idle connection just as the proxy reuses it.
async fn closes_reused_connections() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                if s.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst";
                if s.write_all(ok).await.is_err() {
                    return;
                }
                let _ = s.read(&mut buf).await;
                // Dropped unanswered.
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_a_replica_never_answered_go_to_the_next_one() {
    let ns = "retry";
    let hits = Arc::new(AtomicUsize::new(0));
    let live = backend("live", false, hits.clone()).await;
    let eps = Arc::new(Mutex::new(vec![endpoint(ns, "web", "web", live, true)]));
    let (_dir, _proxy, addr) = single_service_over(ns, "web", eps.clone(), 16).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let flaky = closes_reused_connections().await;
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/");

    // Refused connections: no request left the proxy, so any method may go on to the
    // next replica.
    eps.lock()
        .unwrap()
        .push(endpoint(ns, "web", "web", dead, true));
    for i in 0..6 {
        let resp = if i % 2 == 0 {
            client.get(&url).send().await.unwrap()
        } else {
            client.post(&url).body("x").send().await.unwrap()
        };
        assert_eq!(resp.status(), 200, "request {i}");
    }

    // A reused connection closed under a GET: the GET is sent again elsewhere.
    {
        let mut eps = eps.lock().unwrap();
        eps.pop();
        eps.push(endpoint(ns, "web", "web", flaky, true));
    }
    for i in 0..4 {
        let resp = client.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        // Longer than a pooled connection may idle before a retry needs a copy.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let w = last_minute(ns, "web").expect("figures");
    assert_eq!(w.success_rate, 100.0);
    assert!(hits.load(Ordering::SeqCst) >= 6);
}
