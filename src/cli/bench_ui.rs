//! `gitcanary bench ui`: the web UI's first-load size (the page and every asset it
//! names, uncompressed), the latency of `/api/v1/canaries` over 100 canaries with full
//! sample series, and the RSS a real `gitcanary run` adds once the UI is loaded and one
//! SSE stream stays open.

use crate::canary::samples::{self, Analysis, Samples, Series, MAX_POINTS};
use crate::canary::state::{CanaryStatus, Phase};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// One HTTP/1.1 GET; the body.
fn get(addr: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("GET {path}: no response head"))?;
    anyhow::ensure!(
        raw.starts_with(b"HTTP/1.1 200"),
        "GET {path}: {}",
        String::from_utf8_lossy(&raw[..split])
    );
    Ok(raw[split + 4..].to_vec())
}

/// The assets an HTML page names (`src=` and `href=` under `/ui/`).
fn assets(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for (i, _) in html.match_indices(attr) {
            let rest = &html[i + attr.len()..];
            if let Some(end) = rest.find('"') {
                if rest[..end].starts_with("/ui/") {
                    out.push(rest[..end].to_string());
                }
            }
        }
    }
    out
}

/// `/ui/` and every asset it names, in bytes (bodies, uncompressed: none is compressed).
fn first_load(addr: &str) -> anyhow::Result<(usize, usize)> {
    let page = get(addr, "/ui/")?;
    let names = assets(&String::from_utf8_lossy(&page));
    let mut total = page.len();
    for a in &names {
        total += get(addr, a)?.len();
    }
    Ok((total, names.len() + 1))
}

/// Writes `n` Canaries mid-analysis into a state dir, each with full series for its
/// current and last analysis (the most the engine keeps).
fn seed_canaries(state: &Path, n: usize) -> anyhow::Result<()> {
    let store = crate::targets::local::LocalStore::open(state)?;
    let series = |name: &str, base: f64| Series {
        name: name.into(),
        unit: samples::unit(name).into(),
        min: Some(99.0),
        max: None,
        points: (0..MAX_POINTS)
            .map(|i| (1000.0 + i as f64, Some(base + (i % 7) as f64 / 10.0)))
            .collect(),
        failed: Vec::new(),
        summary: Default::default(),
    };
    let analysis = |start: f64| Analysis {
        revision: "a".repeat(64),
        start,
        weights: (0..MAX_POINTS)
            .map(|i| (start + i as f64, (i % 5) as u32 * 10 + 10))
            .collect(),
        metrics: vec![
            series("request-success-rate", 99.3),
            series("request-duration", 40.0),
        ],
    };
    let full = Samples {
        current: Some(analysis(1000.0)),
        last: Some(analysis(100.0)),
    };
    let bytes = serde_json::to_vec(&full)?;
    let mut inventory = crate::sync::Inventory::default();
    for i in 0..n {
        let (ns, name) = ("bench", format!("app{i}"));
        let key = crate::manifest::ObjectKey::new("flagger.app/v1beta1", "Canary", ns, &name);
        let obj = serde_json::json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "service": {"port": 9898}, "analysis": {"interval": "1m", "threshold": 5, "maxWeight": 50, "stepWeight": 10}}});
        crate::util::atomic::write(&store.object_path(&key)?, &serde_json::to_vec(&obj)?)?;
        inventory.entries.insert(
            key,
            crate::sync::inventory::Entry {
                api_version: "flagger.app/v1beta1".into(),
                hash: String::new(),
                revision: "b".repeat(40),
                file: format!("apps/{name}.yaml"),
                prune: true,
                live: true,
            },
        );
        let st = CanaryStatus {
            phase: Phase::Progressing,
            canary_weight: 30,
            analysis_start: 1000.0,
            message: Phase::Progressing.message().into(),
            ..Default::default()
        };
        let status = crate::canary::executor::status_path(state, ns, &name);
        crate::util::atomic::write(&status, &serde_json::to_vec_pretty(&st)?)?;
        crate::util::atomic::write(&samples::path(state, ns, &name), &bytes)?;
    }
    crate::util::atomic::write(&state.join("inventory.json"), &inventory.to_json())?;
    Ok(())
}

/// Serves the UI over a state dir of 100 canaries in process; the median and the
/// slowest of 50 `/api/v1/canaries` calls (ms), and the response size.
fn canaries_latency(work: &Path) -> anyhow::Result<(f64, f64, usize)> {
    let state = work.join("state");
    seed_canaries(&state, 100)?;
    let cfg_path = work.join("gitcanary.yaml");
    std::fs::write(
        &cfg_path,
        "source:\n  url: /nonexistent\ntarget:\n  local:\n    stateDir: ./state\n",
    )?;
    let cfg = crate::config::Config::load(&cfg_path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?.to_string();
    let (trigger, _rx) = tokio::sync::mpsc::unbounded_channel();
    let ui = rt.block_on(async { crate::ui::Ui::new(cfg, None, trigger) });
    rt.spawn(async move {
        let _ = axum::serve(listener, crate::ui::api::routes(ui)).await;
    });
    let first: serde_json::Value = serde_json::from_slice(&get(&addr, "/api/v1/canaries")?)?;
    let listed = first.as_array().map_or(0, Vec::len);
    anyhow::ensure!(listed == 100, "the API listed {listed} of 100 canaries");
    let size = first.to_string().len();
    let mut times: Vec<f64> = (0..50)
        .map(|_| {
            let t = Instant::now();
            get(&addr, "/api/v1/canaries").map(|_| t.elapsed().as_secs_f64() * 1000.0)
        })
        .collect::<anyhow::Result<_>>()?;
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times[times.len() - 1], size))
}

/// The RSS (KB) `gitcanary run` adds once the UI is loaded and one SSE stream stays
/// open, over its idle RSS before; and the first-load size (bytes, requests).
fn added_rss() -> anyhow::Result<(u64, u64, (usize, usize))> {
    super::bench_idle::idle_run(1, |pid, state| {
        let before = super::bench_idle::idle_rss(pid);
        let server: serde_json::Value =
            serde_json::from_slice(&std::fs::read(state.join("status/server.json"))?)?;
        let addr = server["address"].as_str().unwrap_or_default().to_string();
        let load = first_load(&addr)?;
        for api in [
            "session", "sources", "objects", "canaries", "images", "history",
        ] {
            get(&addr, &format!("/api/v1/{api}"))?;
        }
        get(&addr, "/api/v1/canaries/bench/app0")?;
        let mut sse = TcpStream::connect(&addr)?;
        write!(
            sse,
            "GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        )?;
        let mut hello = [0u8; 256];
        sse.set_read_timeout(Some(Duration::from_secs(5)))?;
        let got = sse.read(&mut hello)?;
        anyhow::ensure!(
            String::from_utf8_lossy(&hello[..got]).contains("text/event-stream"),
            "the SSE stream did not open"
        );
        // Let the change watcher run a few rounds with the stream open.
        std::thread::sleep(Duration::from_secs(5));
        let after = super::bench_idle::idle_rss(pid);
        drop(sse);
        Ok((before, after, load))
    })
}

/// Runs the UI benchmarks.
pub fn run() -> anyhow::Result<ExitCode> {
    let work = std::env::temp_dir().join(format!("gitcanary-bench-ui-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let latency = canaries_latency(&work);
    let _ = std::fs::remove_dir_all(&work);
    let (median, slowest, size) = latency?;
    let (before, after, (bytes, requests)) = added_rss()?;
    let added = after.saturating_sub(before);
    println!("gitcanary bench ui");
    println!(
        "  /ui/ first load:              {:>8.1} KB   in {requests} requests, uncompressed (target < 100 KB)",
        bytes as f64 / 1024.0
    );
    println!(
        "  /api/v1/canaries, 100:        {median:>8.2} ms   median of 50 (slowest {slowest:.2} ms, {:.0} KB; target < 20 ms)",
        size as f64 / 1024.0
    );
    println!(
        "  added RSS, UI + SSE open:     {:>8.2} MB   ({:.1} MB idle before, {:.1} MB after; target < 2 MB)",
        added as f64 / 1024.0,
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
    Ok(super::bench::verdict(
        bytes < 100 * 1024 && median < 20.0 && added < 2 * 1024,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_load_counts_every_asset_the_page_names() {
        let names = assets(crate::ui::assets::INDEX);
        assert!(
            names.contains(&"/ui/assets/app.js".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"/ui/assets/app.css".to_string()),
            "{names:?}"
        );
        assert_eq!(names.len(), crate::ui::assets::FILES.len());
    }
}
