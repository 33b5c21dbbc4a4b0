//! `gitcanary bench sync`: generates a repository of N objects in M files, then times
//! the first sync into the local target, a no-op resync (with its object-write count),
//! and a one-file change, and reports peak RSS.

use crate::config::Config;
use crate::source::seed;
use crate::sync::reconcile::Reconciler;
use clap::Subcommand;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum Which {
    /// Sync a generated repository into the local target.
    Sync {
        /// Objects to generate.
        #[arg(long, default_value_t = 10_000)]
        objects: usize,
        /// Files to spread them over.
        #[arg(long, default_value_t = 1_000)]
        files: usize,
    },
    /// The Service proxy side by side with direct, nginx and HAProxy: CPU per request,
    /// req/s, p50/p99, RSS, and memory per idle Service.
    Proxy(super::bench_proxy::Args),
    /// The canary engine: `decide()` for 1,000 canaries.
    Canary,
    /// Idle RSS of `gitcanary run` with canaries initialized, and memory per canary.
    CanaryIdle {
        /// Canaries to run.
        #[arg(long, default_value_t = 100)]
        canaries: usize,
    },
    /// The web UI: first-load size, `/api/v1/canaries` over 100 canaries, and the RSS
    /// added by a loaded UI with one open SSE stream.
    Ui,
    /// Helm: render the examples-repo podinfo chart once, and for 100 releases.
    Helm {
        /// The cluster repository holding releases/test/frontend.yaml and charts/podinfo
        /// (default: the checkout's examples-repo).
        #[arg(long)]
        repo: Option<std::path::PathBuf>,
    },
    /// The Kubernetes target against a cluster: plan, first sync vs kubectl, no-op
    /// resync, RSS of `run` with a 10,000-object inventory.
    Kube(super::bench_kube::Args),
    /// Git as the rollout record: `gitcanary history` over 1,000 notes, writing and
    /// pushing one note.
    History(super::bench_history::Args),
    /// Image automation: semver selection, registry scanning, rewrite and commit.
    Images {
        /// The registry binary to start for the scan benchmark.
        #[arg(long, default_value = "docker-registry")]
        registry_bin: String,
    },
}

/// Writes `files` manifest files holding `objects` objects (ConfigMaps, Services and
/// Deployments in turn) under `dir`; `variant` changes the ConfigMaps' data.
pub fn generate(dir: &Path, objects: usize, files: usize, variant: &str) -> std::io::Result<()> {
    let per_file = objects.div_ceil(files.max(1));
    let mut n = 0;
    for f in 0..files {
        let mut text = String::new();
        for _ in 0..per_file {
            if n == objects {
                break;
            }
            let ns = format!("team-{}", f % 20);
            let name = format!("app-{n}");
            let _ = match n % 3 {
                0 => write!(text, "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: {name}\ndata:\n  LOG_LEVEL: info\n  VARIANT: \"{variant}\"\n  GREETING: hello from {name}\n"),
                1 => write!(text, "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  selector:\n    app: {name}\n  ports:\n    - name: http\n      port: 80\n      targetPort: http\n"),
                _ => write!(text, "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: {name}\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      containers:\n        - name: app\n          image: ghcr.io/stefanprodan/podinfo:6.0.{n}\n          ports:\n            - name: http\n              containerPort: 9898\n          readinessProbe:\n            httpGet:\n              path: /readyz\n              port: http\n          resources:\n            requests:\n              cpu: 100m\n              memory: 64Mi\n"),
            };
            n += 1;
        }
        let sub = dir.join(format!("apps/group-{}", f / 100));
        std::fs::create_dir_all(&sub)?;
        std::fs::write(sub.join(format!("file-{f}.yaml")), text)?;
    }
    Ok(())
}

/// A `/proc/<pid>/status` memory field (`VmRSS`, `VmHWM`) in KB.
pub(crate) fn proc_kb(pid: &str, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Peak resident set size of this process in bytes (Linux `VmHWM`).
pub fn peak_rss() -> Option<u64> {
    proc_kb("self", "VmHWM:").map(|kb| kb * 1024)
}

/// Prints whether every target was met and turns it into the exit code.
pub(crate) fn verdict(ok: bool) -> ExitCode {
    println!(
        "  result: {}",
        if ok {
            "all targets met"
        } else {
            "TARGET MISSED"
        }
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Waits up to 10 s for something to listen on a loopback port.
pub(crate) fn wait_for_port(port: u16, what: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{what} did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

pub(crate) fn flush_disk() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Runs a benchmark.
pub fn bench(which: Which) -> anyhow::Result<ExitCode> {
    match which {
        Which::Sync { objects, files } => bench_sync(objects, files),
        Which::Images { registry_bin } => super::bench_images::run(&registry_bin),
        Which::Proxy(args) => super::bench_proxy::run(args),
        Which::Canary => bench_canary(),
        Which::Kube(args) => super::bench_kube::run(args),
        Which::Helm { repo } => bench_helm(&super::examples_repo(repo, "--repo")?),
        Which::CanaryIdle { canaries } => super::bench_idle::run(canaries),
        Which::Ui => super::bench_ui::run(),
        Which::History(args) => super::bench_history::run(args),
    }
}

/// `decide()` for 1,000 canaries mid-analysis, each with a due step to take.
fn bench_canary() -> anyhow::Result<ExitCode> {
    use crate::canary::decide::{decide, Checks, Observations};
    use crate::canary::state::{CanaryStatus, Phase};
    let specs: Vec<_> = (0..1000)
        .map(|i| {
            let obj = serde_json::json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
                "metadata": {"name": format!("app-{i}"), "namespace": "bench"},
                "spec": {"targetRef": {"kind": "Deployment", "name": format!("app-{i}")}, "service": {"port": 80},
                    "analysis": {"interval": "10s", "threshold": 5, "maxWeight": 50, "stepWeight": 10,
                        "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99}}]}}});
            crate::canary::spec::parse(&obj).map_err(|e| anyhow::anyhow!("{e:?}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let status = CanaryStatus {
        phase: Phase::Progressing,
        canary_weight: 10,
        last_applied_spec: "r2".into(),
        last_promoted_spec: "r1".into(),
        ..Default::default()
    };
    let obs = Observations {
        revision: "r2".into(),
        primary_exists: true,
        primary_ready: true,
        slot_available: true,
        analysis: Some(Checks::default()),
        ..Default::default()
    };
    let rounds = 20;
    let t = Instant::now();
    let mut advanced = 0;
    for _ in 0..rounds {
        for spec in &specs {
            let plan = decide(spec, &status, &obs, 1_000.0);
            advanced += usize::from(plan.status.canary_weight == 20);
        }
    }
    let per_round = t.elapsed() / rounds;
    anyhow::ensure!(
        advanced == 1000 * rounds as usize,
        "every canary should advance"
    );
    println!("gitcanary bench canary");
    println!(
        "  decide() for 1,000 canaries: {:>8.3} ms   (target < 5 ms)",
        per_round.as_secs_f64() * 1e3
    );
    Ok(verdict(per_round.as_secs_f64() * 1e3 < 5.0))
}

fn bench_sync(objects: usize, files: usize) -> anyhow::Result<ExitCode> {
    let work = std::env::temp_dir().join(format!("gitcanary-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let tree = work.join("tree");
    let remote = work.join("remote.git");
    generate(&tree, objects, files, "a")?;
    seed::commit_dir(
        &remote,
        &tree,
        "main",
        "bench: initial",
        ("bench", "bench@localhost"),
    )?;
    let cfg = Config::parse(
        &format!(
            "source:\n  url: {}\ntarget:\n  local:\n    stateDir: {}\n",
            remote.display(),
            work.join("state").display()
        ),
        &work,
    )
    .map_err(anyhow::Error::msg)?;
    // Flush the set-up's own writes so its writeback does not slow the measured sync.
    flush_disk();
    let rss_before = peak_rss().unwrap_or(0);
    let mut rec = Reconciler::open(cfg, true)?;

    let t = Instant::now();
    let first = rec.sync_once()?;
    let first_time = t.elapsed();

    let t = Instant::now();
    let noop = rec.sync_once()?;
    let noop_time = t.elapsed();

    // Change one file (the ConfigMaps in it) and resync.
    std::fs::write(
        tree.join("apps/group-0/file-0.yaml"),
        std::fs::read_to_string(tree.join("apps/group-0/file-0.yaml"))?
            .replace("VARIANT: \"a\"", "VARIANT: \"b\""),
    )?;
    seed::commit_dir(
        &remote,
        &tree,
        "main",
        "bench: change one file",
        ("bench", "bench@localhost"),
    )?;
    flush_disk();
    let t = Instant::now();
    let one = rec.sync_once()?;
    let one_time = t.elapsed();
    let rss = peak_rss().unwrap_or(0);
    let _ = std::fs::remove_dir_all(&work);

    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!("gitcanary bench sync: {objects} objects in {files} files");
    println!(
        "  first sync:        {:>8.1} ms  ({} created, {} object writes)",
        first_time.as_secs_f64() * 1e3,
        first.applied.created,
        first.applied.writes
    );
    println!(
        "  no-op resync:      {:>8.1} ms  ({} object writes, {} of {} files from the parse cache)",
        noop_time.as_secs_f64() * 1e3,
        noop.applied.writes,
        noop.files.1,
        noop.files.0
    );
    println!(
        "  one-file change:   {:>8.1} ms  ({} configured, {} object writes)",
        one_time.as_secs_f64() * 1e3,
        one.applied.updated,
        one.applied.writes
    );
    println!(
        "  peak RSS:          {:>8.1} MB  (before the reconciler: {:.1} MB)",
        mb(rss),
        mb(rss_before)
    );
    println!(
        "  targets:           first < 3000 ms, no-op < 300 ms with 0 writes, peak RSS < 60 MB"
    );
    let ok = first_time.as_millis() < 3000
        && noop_time.as_millis() < 300
        && noop.applied.writes == 0
        && mb(rss) < 60.0;
    Ok(verdict(ok))
}

/// Reads the chart and renders the frontend release `rounds` times (median), then
/// expands 100 HelmReleases of the chart in one revision, as a sync does.
fn bench_helm(repo: &Path) -> anyhow::Result<ExitCode> {
    use crate::helm::chart::Capabilities;
    use crate::helm::release::expand;
    use crate::manifest::snapshot::DirSnapshot;
    let snap = DirSnapshot::new(repo);
    let loaded = crate::manifest::load(&snap, "releases/test/frontend.yaml", None);
    anyhow::ensure!(
        loaded.errors.is_empty() && !loaded.objects.is_empty(),
        "{}: no HelmRelease in releases/test/frontend.yaml: pass --repo with a gitcanary checkout's examples-repo",
        repo.display()
    );
    let caps = Capabilities::default();
    let mut times = Vec::new();
    let mut rendered = 0;
    for _ in 0..51 {
        let t = Instant::now();
        let x = expand(&snap, &loaded.objects, "", &caps);
        times.push(t.elapsed());
        anyhow::ensure!(x.errors.is_empty(), "{:?}", x.errors);
        rendered = x.objects.len();
    }
    times.sort();
    let one = times[times.len() / 2];
    let hr = loaded
        .objects
        .iter()
        .find(|o| o.key.kind == "HelmRelease")
        .expect("checked")
        .value();
    let many: Vec<_> = (0..100)
        .map(|i| {
            let mut v = hr.clone();
            v["metadata"]["name"] = format!("frontend-{i}").into();
            v["spec"]["releaseName"] = format!("frontend-{i}").into();
            v["spec"]["values"]["replicaCount"] = (i % 5 + 1).into();
            let key = crate::manifest::ObjectKey::new(
                "flux.weave.works/v1beta1",
                "HelmRelease",
                "test",
                &format!("frontend-{i}"),
            );
            crate::manifest::Object::from_json(
                key,
                "flux.weave.works/v1beta1".into(),
                &v,
                Default::default(),
            )
        })
        .collect();
    let t = Instant::now();
    let x = expand(&snap, &many, "", &caps);
    let hundred = t.elapsed();
    anyhow::ensure!(x.errors.is_empty(), "{:?}", x.errors);
    println!("helm: one release of charts/podinfo (read chart + render + parse, {rendered} objects): {:.2} ms median of 51", one.as_secs_f64() * 1e3);
    println!(
        "helm: 100 releases in one revision ({} objects): {:.1} ms",
        x.objects.len(),
        hundred.as_secs_f64() * 1e3
    );
    // What running a hook costs gitcanary: a Pod hook whose container does nothing
    // (`true`), planned, started, waited for and logged.
    let state_dir =
        std::env::temp_dir().join(format!("gitcanary-bench-hook-{}", std::process::id()));
    std::fs::create_dir_all(&state_dir)?;
    let hook = crate::helm::hooks::Hook::from_object(
        &serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "noop", "annotations": {"helm.sh/hook": "pre-install"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}}),
        "bench",
    )
    .expect("a hook")
    .map_err(anyhow::Error::msg)?;
    let lookup = |_: &str, _: &str, _: &str| None;
    let images = Default::default();
    let ctx = crate::targets::local::runtime::job::JobContext {
        state_dir: &state_dir,
        images: &images,
        lookup: &lookup,
        work_dir: state_dir.clone(),
    };
    let mut times = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        let r = crate::targets::local::runtime::job::run_hooks(
            &ctx,
            &[&hook],
            crate::helm::hooks::Event::PreInstall,
            "default",
            std::time::Duration::from_secs(10),
        );
        times.push(t.elapsed());
        anyhow::ensure!(r.iter().all(|r| r.ok), "{r:?}");
    }
    times.sort();
    let _ = std::fs::remove_dir_all(&state_dir);
    println!(
        "helm: one Pod hook running `true`, start to finish: {:.1} ms median of 21",
        times[times.len() / 2].as_secs_f64() * 1e3
    );
    Ok(ExitCode::SUCCESS)
}
