//! `gitcanary bench proxy`: the Service proxy against a real demo-app process on
//! loopback. Throughput proxied vs direct (closed loop, keep-alive), added p99 latency at
//! 1,000 rps (open loop), and memory per idle Service listener.

use crate::manifest::object::{Object, ObjectKey, Origin};
use crate::targets::local::proxy::Proxy;
use crate::targets::local::runtime::Endpoint;
use crate::targets::local::LocalStore;
use crate::targets::Target;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn rss_kb() -> u64 {
    super::bench::proc_kb("self", "VmRSS:").unwrap_or(0)
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn closed_loop(client: &HttpClient, url: &str, conns: usize, dur: Duration) -> f64 {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (client, url) = (client.clone(), url.to_string());
        set.spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < dur {
                let req = hyper::Request::get(&url)
                    .body(Full::new(Bytes::new()))
                    .expect("valid request");
                if let Ok(resp) = client.request(req).await {
                    let _ = resp.into_body().collect().await;
                    n += 1;
                }
            }
            n
        });
    }
    let mut total = 0;
    while let Some(Ok(n)) = set.join_next().await {
        total += n;
    }
    total as f64 / start.elapsed().as_secs_f64()
}

async fn open_loop_p99(client: &HttpClient, url: &str, rps: u32, dur: Duration) -> f64 {
    let workers = 10;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (client, url) = (client.clone(), url.to_string());
        set.spawn(async move {
            let mut lat = Vec::new();
            let mut tick =
                tokio::time::interval(Duration::from_secs_f64(workers as f64 / rps as f64));
            let start = Instant::now();
            while start.elapsed() < dur {
                tick.tick().await;
                let t = Instant::now();
                let req = hyper::Request::get(&url)
                    .body(Full::new(Bytes::new()))
                    .expect("valid request");
                if let Ok(resp) = client.request(req).await {
                    let _ = resp.into_body().collect().await;
                    lat.push(t.elapsed());
                }
            }
            lat
        });
    }
    let mut all = Vec::new();
    while let Some(Ok(l)) = set.join_next().await {
        all.extend(l);
    }
    all.sort();
    all.get(all.len() * 99 / 100)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(f64::NAN)
}

fn service(i: usize) -> Object {
    let v = serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
        "spec": {"selector": {"app": "demo"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}});
    Object::from_json(
        ObjectKey::new("v1", "Service", "bench", &format!("svc-{i}")),
        "v1".into(),
        &v,
        Origin {
            file: "bench".into(),
            line: 1,
        },
    )
}

/// Runs the proxy benchmarks.
pub fn run() -> anyhow::Result<ExitCode> {
    let work = std::env::temp_dir().join(format!("gitcanary-bench-proxy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut app = std::process::Command::new(std::env::current_exe()?)
        .args(["demo-app", "--port", &port.to_string()])
        .env("IMAGE_TAG", "bench")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    super::bench::wait_for_port(port, "demo-app")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let store = LocalStore::open(&work)?;
        let one = vec![service(0)];
        let inv = store.inventory()?;
        store.apply(&crate::sync::plan(&one, &inv), &one, &inv, "bench")?;
        let endpoints = Arc::new(Mutex::new(vec![Endpoint {
            namespace: "bench".into(),
            deployment: "demo".into(),
            pod: "demo-0".into(),
            labels: [("app".to_string(), "demo".to_string())].into(),
            ready: true,
            ports: vec![(Some("http".into()), 9898, port)],
        }]));
        let proxy = Proxy::new(&work, endpoints, Default::default())?;
        proxy.sync_services().await?;
        let proxied = proxy.addresses().await[0].3;
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        let direct_url = format!("http://127.0.0.1:{port}/version");
        let proxy_url = format!("http://{proxied}/version");
        // Warm up both paths.
        closed_loop(&client, &direct_url, 4, Duration::from_millis(500)).await;
        closed_loop(&client, &proxy_url, 4, Duration::from_millis(500)).await;
        let direct = closed_loop(&client, &direct_url, 16, Duration::from_secs(4)).await;
        let through = closed_loop(&client, &proxy_url, 16, Duration::from_secs(4)).await;
        let p99_direct = open_loop_p99(&client, &direct_url, 1000, Duration::from_secs(4)).await;
        let p99_proxy = open_loop_p99(&client, &proxy_url, 1000, Duration::from_secs(4)).await;
        // Memory per idle Service: 200 more listeners.
        let many: Vec<Object> = (0..201).map(service).collect();
        let inv = store.inventory()?;
        let before = rss_kb();
        store.apply(&crate::sync::plan(&many, &inv), &many, &inv, "bench2")?;
        proxy.sync_services().await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let per_service_kb = (rss_kb().saturating_sub(before)) as f64 / 200.0;
        anyhow::Ok((direct, through, p99_direct, p99_proxy, per_service_kb))
    });
    let _ = app.kill();
    let _ = app.wait();
    let _ = std::fs::remove_dir_all(&work);
    let (direct, through, p99_direct, p99_proxy, per_service_kb) = result?;
    let ratio = through / direct;
    let added = p99_proxy - p99_direct;
    println!(
        "gitcanary bench proxy (demo-app on loopback, 2 cores shared by client, proxy and app)"
    );
    println!("  throughput direct:        {direct:>9.0} req/s");
    println!(
        "  throughput proxied:       {through:>9.0} req/s   ratio {:.0}% (target >= 50%)",
        ratio * 100.0
    );
    println!("  p99 at 1,000 rps direct:  {p99_direct:>9.2} ms");
    println!(
        "  p99 at 1,000 rps proxied: {p99_proxy:>9.2} ms   added {added:.2} ms (target < 1 ms)"
    );
    println!("  memory per idle service:  {per_service_kb:>9.1} KB   (target < 200 KB)");
    let ok = ratio >= 0.5 && added < 1.0 && per_service_kb < 200.0;
    Ok(super::bench::verdict(ok))
}
