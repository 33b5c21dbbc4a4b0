//! The Service proxy with real sockets: weighted splits, match rules, mirroring, the
//! in-process success-rate window, 502/503 for bad or missing backends, and HTTP/1.1
//! framing byte for byte.

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
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    raw_replica(|mut s| async move {
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
    })
    .await
}

/// A replica on loopback that hands each connection to `serve`; its port.
async fn raw_replica<F, Fut>(serve: F) -> u16
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(serve(s));
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

// HTTP/1.1 byte for byte: chunked bodies both ways, pipelining, `Expect: 100-continue`,
// HEAD, HTTP/1.0 clients, bodies that end with the connection, and requests whose framing
// peers could read differently (refused before any reaches a replica).

/// A replica: `/echo` answers the request body (streamed back, so chunked), `/sized`
/// answers it with a length, anything else answers "ok". Counts the requests it got.
async fn replica(hits: Arc<AtomicUsize>) -> u16 {
    raw_replica(move |s| {
        let hits = hits.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            hits.fetch_add(1, Ordering::SeqCst);
            answer_replica(req)
        });
        async move {
            let io = hyper_util::rt::TokioIo::new(s);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        }
    })
    .await
}

type ReplicaBody = http_body_util::Either<
    http_body_util::StreamBody<
        futures_util::stream::Iter<
            std::vec::IntoIter<Result<hyper::body::Frame<hyper::body::Bytes>, hyper::Error>>,
        >,
    >,
    http_body_util::Full<hyper::body::Bytes>,
>;

/// What [`replica`] answers.
async fn answer_replica(
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<ReplicaBody>, hyper::Error> {
    use http_body_util::{BodyExt, Either, Full, StreamBody};
    use hyper::body::{Bytes, Frame};
    let path = req.uri().path().to_string();
    let body = req.into_body().collect().await?.to_bytes();
    let resp = match path.as_str() {
        "/echo" => {
            let frames: Vec<_> = body
                .chunks(3)
                .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            Either::Left(StreamBody::new(futures_util::stream::iter(frames)))
        }
        "/sized" => Either::Right(Full::new(body)),
        _ => Either::Right(Full::new(Bytes::from_static(b"ok"))),
    };
    Ok(hyper::Response::new(resp))
}

/// A replica that answers every request with a body that ends when it closes.
async fn until_close_replica() -> u16 {
    raw_replica(|mut s| async move {
        let mut buf = vec![0u8; 4096];
        let _ = s.read(&mut buf).await;
        let answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end";
        let _ = s.write_all(answer).await;
    })
    .await
}

/// One response read off `s`: status line, lowercase head, body (de-chunked).
async fn response(
    s: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    head_request: bool,
) -> (String, String, Vec<u8>) {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        read_more(s, buf).await;
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    buf.drain(..head_end);
    let status = head.lines().next().unwrap().to_string();
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if head_request {
    } else if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|v| v.trim().parse::<usize>().unwrap())
    {
        while buf.len() < len {
            read_more(s, buf).await;
        }
        body = buf.drain(..len).collect();
    } else if lower.contains("transfer-encoding: chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                read_more(s, buf).await;
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16).unwrap();
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                read_more(s, buf).await;
            }
            body.extend(buf.drain(..size));
            assert_eq!(buf.drain(..2).collect::<Vec<_>>(), b"\r\n");
            if size == 0 {
                break;
            }
        }
    } else {
        s.read_to_end(buf).await.unwrap();
        body = std::mem::take(buf);
    }
    (status, lower, body)
}

async fn read_more(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) {
    let mut piece = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut piece))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    assert!(
        n > 0,
        "closed early; so far: {:?}",
        String::from_utf8_lossy(buf)
    );
    buf.extend_from_slice(&piece[..n]);
}

/// Whether the proxy closed the connection (reads the end of the stream).
async fn closed(s: &mut tokio::net::TcpStream) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await,
        Ok(Ok(0))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_pipelining_continue_and_head_go_through_on_one_connection() {
    let hits = Arc::new(AtomicUsize::new(0));
    let (_dir, _proxy, addr) =
        single_service("h1-keepalive", "web", replica(hits.clone()).await, 16).await;
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = Vec::new();

    // A chunked POST streams on; the replica's streamed answer comes back chunked.
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
        .await
        .unwrap();
    let (status, head, body) = response(&mut s, &mut buf, false).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert_eq!(body, b"hello world");

    // A chunked GET body is buffered (it may be retried) and sent with its length.
    s.write_all(b"GET /sized HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        .await
        .unwrap();
    let (_, head, body) = response(&mut s, &mut buf, false).await;
    assert!(head.contains("content-length: 3"), "{head}");
    assert_eq!(body, b"abc");

    // Two pipelined requests in one write: two answers, in order.
    s.write_all(b"POST /sized HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\n\r\nfirstPOST /sized HTTP/1.1\r\nHost: web\r\nContent-Length: 6\r\n\r\nsecond")
        .await
        .unwrap();
    assert_eq!(response(&mut s, &mut buf, false).await.2, b"first");
    assert_eq!(response(&mut s, &mut buf, false).await.2, b"second");

    // Expect: 100-continue: the body is asked for before it is sent.
    s.write_all(
        b"PUT /sized HTTP/1.1\r\nHost: web\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let (status, _, _) = response(&mut s, &mut buf, true).await;
    assert_eq!(status, "HTTP/1.1 100 Continue");
    s.write_all(b"data").await.unwrap();
    let (status, _, body) = response(&mut s, &mut buf, false).await;
    assert_eq!(
        (status.as_str(), body.as_slice()),
        ("HTTP/1.1 200 OK", &b"data"[..])
    );

    // HEAD: the length of what GET would send, and no body; the connection goes on.
    s.write_all(b"HEAD /other HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .unwrap();
    let (status, head, _) = response(&mut s, &mut buf, true).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(head.contains("content-length: 2"), "{head}");
    s.write_all(b"GET /other HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (_, head, body) = response(&mut s, &mut buf, false).await;
    assert_eq!(body, b"ok");
    assert!(head.contains("connection: close"), "{head}");
    assert!(buf.is_empty() && closed(&mut s).await);
    assert_eq!(hits.load(Ordering::SeqCst), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_clients_and_bodies_that_end_with_the_connection() {
    let hits = Arc::new(AtomicUsize::new(0));
    let (_dir, _proxy, addr) =
        single_service("h1-ten", "web", replica(hits.clone()).await, 16).await;

    // HTTP/1.0 knows no chunked coding: the body comes as it is, then the end.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.0\r\nContent-Length: 9\r\nConnection: keep-alive\r\n\r\nstreaming",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let (status, head, body) = response(&mut s, &mut buf, false).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert_eq!(body, b"streaming");

    // HTTP/1.0 with keep-alive and a sized answer: kept.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /other HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let (_, head, body) = response(&mut s, &mut buf, false).await;
    assert!(head.contains("connection: keep-alive"), "{head}");
    assert_eq!(body, b"ok");
    s.write_all(b"GET /other HTTP/1.0\r\n\r\n").await.unwrap();
    let (_, _, body) = response(&mut s, &mut buf, false).await;
    assert_eq!(body, b"ok");
    assert!(closed(&mut s).await);

    // A replica's body that ends with its connection reaches an HTTP/1.1 client chunked,
    // and the client's connection stays open.
    let (_dir2, _proxy2, addr2) =
        single_service("h1-close", "web", until_close_replica().await, 16).await;
    let mut s = tokio::net::TcpStream::connect(&addr2).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
            .await
            .unwrap();
        let (status, head, body) = response(&mut s, &mut buf, false).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert_eq!(body, b"until the end");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_refused_and_reaches_no_replica() {
    let hits = Arc::new(AtomicUsize::new(0));
    let (_dir, _proxy, addr) =
        single_service("h1-smuggle", "web", replica(hits.clone()).await, 16).await;
    for (attempt, status) in [
        (&b"POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: web\r\n\r\n"[..], "400"),
        (b"POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd", "400"),
        (b"POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n4\nabcd\r\n0\r\n\r\n", "400"),
        (b"POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: xchunked\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nHost: web\r\nX: a\rb\r\n\r\n", "400"),
    ] {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(attempt).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{:?}: {answer}",
            String::from_utf8_lossy(attempt)
        );
    }
    // A broken chunk line is found only once the body streams: that request's head has
    // reached the replica by then, with a body that never ends well. Nothing else has.
    assert!(
        hits.load(Ordering::SeqCst) <= 1,
        "the smuggled request never reached a replica"
    );
}

/// A replica that refuses every request at once with 413, reading nothing of the body,
/// and keeps the connection open.
async fn refuses_bodies() -> u16 {
    raw_replica(|mut s| async move {
        let mut buf = vec![0u8; 1024];
        if s.read(&mut buf).await.unwrap_or(0) == 0 {
            return;
        }
        let refusal = b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 9\r\n\r\ntoo large";
        let _ = s.write_all(refusal).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_answers_before_reading_the_body_is_heard() {
    let (_dir, _proxy, addr) = single_service("h1-early", "web", refuses_bodies().await, 16).await;
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // 64 MiB: far more than the socket buffers hold, so the proxy's writes to the
    // replica stall; the client keeps sending while it can.
    let total = 64usize << 20;
    let head = format!("POST /upload HTTP/1.1\r\nHost: web\r\nContent-Length: {total}\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let sender = tokio::spawn(async move {
        let piece = vec![b'x'; 1 << 20];
        for _ in 0..64 {
            if wr.write_all(&piece).await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), rd.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 413 Content Too Large\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with("\r\n\r\ntoo large"), "{answer}");
    // The rest of the body was never read: the connection ends after the answer.
    assert!(answer.contains("connection: close"), "{answer}");
    sender.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxys_own_answers_to_head_have_no_body() {
    let eps = Arc::new(Mutex::new(Vec::new()));
    let (_dir, _proxy, addr) = single_service_over("h1-headerr", "web", eps, 16).await;
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..2 {
        s.write_all(b"HEAD / HTTP/1.1\r\nHost: web\r\n\r\n")
            .await
            .unwrap();
        let (status, head, _) = response(&mut s, &mut buf, true).await;
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert!(head.contains("content-length: "), "{head}");
    }
    // Nothing was left between the answers: the next GET's answer comes whole.
    s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .unwrap();
    let (status, _, body) = response(&mut s, &mut buf, false).await;
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    assert!(
        String::from_utf8_lossy(&body).starts_with("no ready endpoints"),
        "{body:?}"
    );
    assert!(buf.is_empty());
}

/// A replica that sends `100 Continue` unasked, then reads the body and answers its
/// length.
async fn continues_unasked() -> u16 {
    raw_replica(|mut s| async move {
        let Some((len, have)) = read_head(&mut s).await else {
            return;
        };
        // In two pieces: a head that is not whole yet is no answer either.
        let _ = s.write_all(b"HTTP/1.1 100 Cont").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = s.write_all(b"inue\r\n\r\n").await;
        let Some(body) = read_body(&mut s, have, len).await else {
            return;
        };
        let text = body.to_string();
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        let _ = s.write_all(answer.as_bytes()).await;
    })
    .await
}

/// Reads a request head off `s`: its `Content-Length` and the body bytes read with it.
async fn read_head(s: &mut tokio::net::TcpStream) -> Option<(usize, usize)> {
    let mut got = Vec::new();
    let mut piece = vec![0u8; 1 << 16];
    let head_end = loop {
        let n = s.read(&mut piece).await.ok().filter(|n| *n > 0)?;
        got.extend_from_slice(&piece[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Some((len, got.len() - head_end))
}

/// Reads the rest of a body of `len` bytes, `have` of them read already; how many came.
async fn read_body(s: &mut tokio::net::TcpStream, mut have: usize, len: usize) -> Option<usize> {
    let mut piece = vec![0u8; 1 << 16];
    while have < len {
        have += s.read(&mut piece).await.ok().filter(|n| *n > 0)?;
    }
    Some(have)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unasked_100_continue_is_no_answer_and_the_body_goes_on() {
    let (_dir, _proxy, addr) =
        single_service("h1-unasked", "web", continues_unasked().await, 16).await;
    let total = UPLOAD.to_string();
    let answer = upload(&addr, |a| String::from_utf8_lossy(a).ends_with(&total)).await;
    // The replica's 100 is its own business: the client gets the final answer only.
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with(&format!("\r\n\r\n{total}")), "{answer}");
}

/// Bytes [`upload`] sends.
const UPLOAD: usize = 4 << 20;

/// POSTs [`UPLOAD`] bytes to `addr` in 1 MiB pieces while reading the answer, until
/// `whole` says it has all come; the answer.
async fn upload(addr: &std::net::SocketAddr, whole: impl Fn(&[u8]) -> bool) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("POST /upload HTTP/1.1\r\nHost: web\r\nContent-Length: {UPLOAD}\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let sender = tokio::spawn(async move {
        let piece = vec![b'x'; 1 << 20];
        for _ in 0..UPLOAD >> 20 {
            wr.write_all(&piece).await.unwrap();
        }
        wr
    });
    let mut answer = Vec::new();
    let mut piece = [0u8; 4096];
    while !whole(&answer) {
        let n = tokio::time::timeout(Duration::from_secs(20), rd.read(&mut piece))
            .await
            .expect("the whole answer")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&piece[..n]);
    }
    drop(sender.await.unwrap());
    String::from_utf8_lossy(&answer).to_string()
}

/// A replica that answers 200 at once with a chunked body, then reads the request body
/// to its end and sends its length as the last chunk (a streaming reply).
async fn answers_first_then_reads() -> u16 {
    raw_replica(|mut s| async move {
        let Some((len, have)) = read_head(&mut s).await else {
            return;
        };
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await;
        let Some(body) = read_body(&mut s, have, len).await else {
            return;
        };
        let text = body.to_string();
        let last = format!("{:x}\r\n{text}\r\n0\r\n\r\n", text.len());
        let _ = s.write_all(last.as_bytes()).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_answers_200_before_the_body_gets_all_of_it() {
    let replica = answers_first_then_reads().await;
    let (_dir, _proxy, addr) = single_service("h1-streaming-reply", "web", replica, 16).await;
    let answer = upload(&addr, |a| a.ends_with(b"0\r\n\r\n")).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.contains(&format!("\r\n{UPLOAD}\r\n")),
        "the replica got it all: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_chunk_of_a_streamed_reply_goes_on_as_it_comes() {
    let (next_tx, next_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let next_rx = Arc::new(tokio::sync::Mutex::new(next_rx));
    let port = raw_replica(move |mut s| {
        let next_rx = next_rx.clone();
        async move {
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\nevent1\r\n")
                .await;
            // The next event only once the client has seen this one.
            next_rx.lock().await.recv().await;
            let _ = s.write_all(b"6\r\nevent2\r\n0\r\n\r\n").await;
        }
    })
    .await;
    let (_dir, _proxy, addr) = single_service("h1-events", "web", port, 16).await;
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Empty lines before a request line are ignored.
    s.write_all(b"\r\n\r\nGET /events HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut piece = [0u8; 4096];
    for event in ["event1", "event2"] {
        while !String::from_utf8_lossy(&seen).contains(event) {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut piece))
                .await
                .unwrap_or_else(|_| panic!("{event} held back: {}", String::from_utf8_lossy(&seen)))
                .unwrap();
            assert!(n > 0);
            seen.extend_from_slice(&piece[..n]);
        }
        let _ = next_tx.send(());
    }
}
