//! Capped reads against a real server on loopback that answers with an endless chunked
//! body: Prometheus queries, registry tag lists and a Helm `index.yaml` each stop at their
//! cap with an error that says so, instead of reading until memory or the timeout runs out.

use gitcanary::image::reference::ImageRepo;
use gitcanary::image::registry::{Client, Credentials, Settings};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

/// Stop even a client that never gives up, so a failing test ends.
const SERVER_LIMIT: usize = 2 << 30;

/// Answers every request with `200` and a chunked body that never ends (up to 2 GiB).
fn endless_server() -> String {
    gitcanary::util::tls::install_crypto_provider();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                if conn.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let mut chunk = format!("{:x}\r\n", 64 << 10).into_bytes();
                chunk.extend(std::iter::repeat_n(b' ', 64 << 10));
                chunk.extend_from_slice(b"\r\n");
                let mut sent = 0;
                while sent < SERVER_LIMIT && conn.write_all(&chunk).is_ok() {
                    sent += 64 << 10;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn prometheus_answer_stops_at_its_cap() {
    let addr = endless_server();
    let err =
        gitcanary::canary::metrics::query(&reqwest::Client::new(), &format!("http://{addr}"), "up")
            .await
            .unwrap_err();
    assert_eq!(err, "prometheus: response body larger than 8 MiB");
}

#[tokio::test]
async fn registry_tag_list_stops_at_its_cap() {
    let addr = endless_server();
    let err = Client::new(Settings::default(), Credentials::default())
        .list_tags(&ImageRepo::parse(&format!("{addr}/app")), &[])
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!("{addr}/app: tag list: response body larger than 16 MiB")
    );
}

#[test]
fn helm_index_without_length_stops_at_its_cap() {
    let addr = endless_server();
    let cache = tempfile::tempdir().unwrap();
    let err = gitcanary::helm::repo::fetch(
        &format!("http://{addr}/charts"),
        "app",
        "*",
        cache.path(),
        &Default::default(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        format!("GET http://{addr}/charts/index.yaml: response body larger than 64 MiB")
    );
}
