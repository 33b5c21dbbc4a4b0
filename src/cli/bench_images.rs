//! `gitcanary bench images`: the image automation benchmarks. Semver selection over
//! 10,000 tags; a scan of 50 repositories of 1,000 tags from a real local registry plus
//! one of 10,000 tags paged by 100 from an in-process pager; rewrite and commit of 100
//! files.

use crate::image::discover::find_in_file;
use crate::image::policy::{select, Policy};
use crate::image::rewrite::{rewrite, Edit};
use crate::manifest::snapshot::Snapshot;
use crate::oci::reference::ImageRepo;
use crate::oci::registry::{Client, Credentials, Settings};
use crate::source::seed;
use anyhow::Context;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Creates `tags` tags for each of `repos` repositories straight in the registry's
/// filesystem storage (a tag is a directory with a link file), which is what the
/// registry lists; far faster to set up than 50,000 manifest PUTs.
fn populate(root: &Path, repos: usize, tags: usize) -> std::io::Result<()> {
    let digest = format!("sha256:{}", "0".repeat(64));
    for r in 0..repos {
        for t in 0..tags {
            let dir = root.join(format!(
                "docker/registry/v2/repositories/bench/app{r}/_manifests/tags/1.{}.{}/current",
                t / 100,
                t % 100
            ));
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("link"), &digest)?;
        }
    }
    Ok(())
}

async fn pager(total: usize, page: usize) -> std::io::Result<String> {
    use axum::http::{HeaderMap, Uri};
    let app = axum::Router::new().route(
        "/v2/{*rest}",
        axum::routing::get(move |uri: Uri| async move {
            let start = uri
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("last=t")))
                .and_then(|n| n.parse::<usize>().ok())
                .map(|n| n + 1)
                .unwrap_or(0);
            let end = (start + page).min(total);
            let tags: Vec<String> = (start..end).map(|i| format!("t{i:05}")).collect();
            let mut h = HeaderMap::new();
            if end < total {
                let link = format!(
                    "</v2/big/tags/list?n={page}&last=t{:05}>; rel=\"next\"",
                    end - 1
                );
                h.insert("link", link.parse().expect("valid header"));
            }
            (
                h,
                axum::Json(serde_json::json!({"name": "big", "tags": tags})),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

fn bench_scan(registry_bin: &str) -> anyhow::Result<Duration> {
    let work = std::env::temp_dir().join(format!("gitcanary-bench-images-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    populate(&work.join("data"), 50, 1000)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    std::fs::write(
        work.join("config.yml"),
        format!("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}/data\nhttp:\n  addr: 127.0.0.1:{port}\n", work.display()),
    )?;
    let mut child = Command::new(registry_bin)
        .arg("serve")
        .arg(work.join("config.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {registry_bin} (apt-get install docker-registry)"))?;
    super::bench::wait_for_port(port, "registry")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let pager_addr = pager(10_000, 100).await?;
        let client = Client::new(Settings::default(), Credentials::default());
        let mut repos: Vec<ImageRepo> = (0..50)
            .map(|r| ImageRepo::parse(&format!("127.0.0.1:{port}/bench/app{r}")))
            .collect();
        repos.push(ImageRepo::parse(&format!("{pager_addr}/big")));
        let t = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        let client = std::sync::Arc::new(client);
        for repo in repos {
            let client = client.clone();
            set.spawn(async move { client.list_tags(&repo, &[]).await.map(|t| t.len()) });
        }
        let mut total = 0;
        while let Some(r) = set.join_next().await {
            total += r??;
        }
        anyhow::ensure!(total == 60_000, "expected 60,000 tags, got {total}");
        Ok::<_, anyhow::Error>(t.elapsed())
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn bench_rewrite_commit() -> anyhow::Result<(Duration, usize)> {
    let work = std::env::temp_dir().join(format!("gitcanary-bench-rewrite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let tree = work.join("tree");
    std::fs::create_dir_all(tree.join("releases"))?;
    for i in 0..100 {
        std::fs::write(
            tree.join(format!("releases/app{i}.yaml")),
            format!("apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: app{i}\n  namespace: apps\n  annotations:\n    fluxcd.io/automated: \"true\"\n    fluxcd.io/tag.chart-image: semver:~1.0\nspec:\n  chart:\n    spec:\n      chart: ./charts/app\n  values:\n    # pinned by automation\n    image:\n      repository: registry.local/app{i}\n      tag: 1.0.0 # keep comments\n"),
        )?;
    }
    let bare = work.join("remote.git");
    let head =
        seed::commit_dir(&bare, &tree, "main", "seed", ("bench", "bench@localhost"))?.to_string();
    let cfg = crate::config::Config::parse(
        &format!(
            "source:\n  url: {}\ntarget:\n  local:\n    stateDir: {}\n",
            bare.display(),
            work.join("state").display()
        ),
        &work,
    )
    .map_err(anyhow::Error::msg)?;
    let source = crate::source::GitSource::new(&cfg.source, &cfg.base_dir, &cfg.state_dir());
    source.fetch()?;
    let t = Instant::now();
    let snap = source.snapshot(&head)?;
    let mut files = Vec::new();
    for path in crate::manifest::snapshot::yaml_files(&snap, "releases") {
        let text = String::from_utf8(snap.read(&path)?)?;
        let found = find_in_file(&path, &text, false);
        let edits: Vec<Edit> = found
            .setters
            .iter()
            .map(|s| Edit {
                start: s.start,
                end: s.end,
                style: s.style,
                value: "1.0.1".into(),
            })
            .collect();
        files.push((
            path,
            rewrite(&text, &edits)
                .map_err(anyhow::Error::msg)?
                .into_bytes(),
        ));
    }
    source.commit_files(
        &head,
        &files,
        "Auto-release multiple (100) images",
        ("bench", "bench@localhost"),
    )?;
    let elapsed = t.elapsed();
    let _ = std::fs::remove_dir_all(&work);
    Ok((elapsed, files.len()))
}

/// Runs the image benchmarks and prints the figures against the targets.
pub fn run(registry_bin: &str) -> anyhow::Result<ExitCode> {
    // 1. Semver selection over 10,000 tags.
    let mut tags: Vec<String> = (0..9_000)
        .map(|i| format!("{}.{}.{}", i / 1000, (i / 10) % 100, i % 10))
        .collect();
    tags.extend((0..500).map(|i| format!("v2.{i}.0-rc.{i}")));
    tags.extend((0..500).map(|i| format!("build-{i}")));
    let policy = Policy::from_flux_v1("semver:>=2.0.0 <8.0.0").map_err(anyhow::Error::msg)?;
    let none = HashMap::new();
    let rounds = 50;
    let t = Instant::now();
    let mut picked = None;
    for _ in 0..rounds {
        picked = select(&policy, &tags, &none).cloned();
    }
    let semver = t.elapsed() / rounds;
    anyhow::ensure!(
        picked.as_deref() == Some("7.99.9"),
        "unexpected pick {picked:?}"
    );

    // 2. Scanning.
    super::bench::flush_disk();
    let scan = bench_scan(registry_bin)?;

    // 3. Rewrite and commit of 100 files.
    let (commit, n) = bench_rewrite_commit()?;

    println!("gitcanary bench images");
    println!(
        "  semver selection, 10,000 tags:          {:>8.2} ms   (target < 5 ms)",
        ms(semver)
    );
    println!(
        "  scan 50 x 1,000 tags + 10,000 paged:     {:>8.1} ms   (target < 3000 ms)",
        ms(scan)
    );
    println!(
        "  rewrite and commit {n} files:            {:>8.1} ms   (target < 500 ms)",
        ms(commit)
    );
    let ok = ms(semver) < 5.0 && ms(scan) < 3000.0 && ms(commit) < 500.0;
    Ok(super::bench::verdict(ok))
}
