//! Capped reads against a real server on loopback that answers with an endless chunked
//! body: Prometheus queries, registry tag lists and a Helm `index.yaml` each stop at their
//! cap with an error that says so, instead of reading until memory or the timeout runs out.
//! (A canary webhook's endless body is in tests/canary.rs.)

use gitcanary::oci::reference::ImageRepo;
use gitcanary::oci::registry::{Client, Credentials, Settings};
mod common;

fn endless_server() -> String {
    gitcanary::util::tls::install_crypto_provider();
    common::endless_body_server(200)
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
