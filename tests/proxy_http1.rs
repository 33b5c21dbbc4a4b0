//! HTTP/1.1 through the Service proxy on real sockets, byte for byte: chunked bodies both
//! ways, pipelining, `Expect: 100-continue`, HEAD, HTTP/1.0 clients, bodies that end with
//! the connection, and requests whose framing peers could read differently (refused
//! before any reaches a replica).

use gitcanary::manifest::object::{Object, ObjectKey, Origin};
use gitcanary::sync::plan;
use gitcanary::targets::local::proxy::Proxy;
use gitcanary::targets::local::runtime::Endpoint;
use gitcanary::targets::local::LocalStore;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A replica: `/echo` answers the request body (streamed back, so chunked), `/sized`
/// answers it with a length, `/close` answers with no length and closes, anything else
/// answers "ok". Counts the requests it got.
async fn replica(hits: Arc<AtomicUsize>) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let hits = hits.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let hits = hits.clone();
                        async move {
                            use http_body_util::BodyExt;
                            hits.fetch_add(1, Ordering::SeqCst);
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await?.to_bytes();
                            let resp = match path.as_str() {
                                "/echo" => {
                                    let frames = futures_util::stream::iter(
                                        body.chunks(3)
                                            .map(|c| {
                                                Ok::<_, hyper::Error>(hyper::body::Frame::data(
                                                    hyper::body::Bytes::copy_from_slice(c),
                                                ))
                                            })
                                            .collect::<Vec<_>>(),
                                    );
                                    http_body_util::Either::Left(http_body_util::StreamBody::new(
                                        frames,
                                    ))
                                }
                                "/sized" => {
                                    http_body_util::Either::Right(http_body_util::Full::new(body))
                                }
                                _ => http_body_util::Either::Right(http_body_util::Full::new(
                                    hyper::body::Bytes::from_static(b"ok"),
                                )),
                            };
                            Ok::<_, hyper::Error>(hyper::Response::new(resp))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    port
}

/// A replica that answers every request with a body that ends when it closes.
async fn until_close_replica() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")
                    .await;
            });
        }
    });
    port
}

fn service(ns: &str, name: &str) -> Object {
    let v = serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}});
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

/// A proxy for Service `ns/web` over the replica on `port`; its address.
async fn proxy_over(ns: &str, port: u16) -> (tempfile::TempDir, Proxy, String) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let objs = vec![service(ns, "web")];
    let inv = store.inventory().unwrap();
    store.apply(&plan(&objs, &inv), &objs, &inv, "r1").unwrap();
    let endpoints = Arc::new(Mutex::new(vec![Endpoint {
        namespace: ns.into(),
        deployment: "web".into(),
        pod: "web-pod".into(),
        labels: [("app".to_string(), "web".to_string())].into(),
        ready: true,
        ports: vec![(Some("http".into()), 8080, port)],
    }]));
    let proxy = Proxy::new(dir.path(), endpoints, BTreeMap::new()).unwrap();
    proxy.sync_services().await.unwrap();
    let addr = proxy.addresses().await[0].3.to_string();
    (dir, proxy, addr)
}

/// One response read off `s`: status line, lowercase head, body (de-chunked).
async fn response(
    s: &mut TcpStream,
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

async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) {
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
async fn closed(s: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await,
        Ok(Ok(0))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_pipelining_continue_and_head_go_through_on_one_connection() {
    let hits = Arc::new(AtomicUsize::new(0));
    let (_dir, _proxy, addr) = proxy_over("h1-keepalive", replica(hits.clone()).await).await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
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
    let (_dir, _proxy, addr) = proxy_over("h1-ten", replica(hits.clone()).await).await;

    // HTTP/1.0 knows no chunked coding: the body comes as it is, then the end.
    let mut s = TcpStream::connect(&addr).await.unwrap();
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
    let mut s = TcpStream::connect(&addr).await.unwrap();
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
    let (_dir2, _proxy2, addr2) = proxy_over("h1-close", until_close_replica().await).await;
    let mut s = TcpStream::connect(&addr2).await.unwrap();
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
    let (_dir, _proxy, addr) = proxy_over("h1-smuggle", replica(hits.clone()).await).await;
    for (attempt, status) in [
        (&b"POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: web\r\n\r\n"[..], "400"),
        (b"POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd", "400"),
        (b"POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n4\nabcd\r\n0\r\n\r\n", "400"),
        (b"POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: xchunked\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nHost: web\r\nX: a\rb\r\n\r\n", "400"),
    ] {
        let mut s = TcpStream::connect(&addr).await.unwrap();
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
