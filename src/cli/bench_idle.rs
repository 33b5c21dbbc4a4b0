//! `gitcanary bench canary-idle`: the RSS of a real `gitcanary run` with N canaries
//! initialized and idle on the local target, against a baseline with none.

use crate::source::seed;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn rss_kb(pid: u32) -> u64 {
    super::bench::proc_kb(&pid.to_string(), "VmRSS:").unwrap_or(0)
}

/// `gitcanary run` of this binary on `cfg`, logging warnings only, its output dropped.
pub(super) fn quiet_run(cfg: &std::path::Path) -> std::io::Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([
        "--config",
        &cfg.display().to_string(),
        "--log-level",
        "warn",
        "run",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    Ok(cmd)
}

/// Runs gitcanary over `n` canaries until all are Initialized; returns its idle RSS (KB).
fn measure(n: usize) -> anyhow::Result<u64> {
    idle_run(n, |pid, _| Ok(idle_rss(pid)))
}

/// The highest of five RSS samples (KB) over two seconds.
pub(super) fn idle_rss(pid: u32) -> u64 {
    (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(400));
            rss_kb(pid)
        })
        .max()
        .unwrap_or(0)
}

/// Starts `gitcanary run` over `n` canaries, waits until they are Initialized and idle,
/// then calls `then` with its pid and state dir; stops it and cleans up after.
pub(super) fn idle_run<T>(
    n: usize,
    then: impl FnOnce(u32, &std::path::Path) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let work =
        std::env::temp_dir().join(format!("gitcanary-bench-idle-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let tree = work.join("tree");
    std::fs::create_dir_all(tree.join("apps"))?;
    std::fs::write(
        tree.join("ns.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench\n",
    )?;
    for i in 0..n {
        std::fs::write(
            tree.join(format!("apps/app{i}.yaml")),
            format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app{i}\n  namespace: bench\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: app{i}\n  template:\n    metadata:\n      labels:\n        app: app{i}\n    spec:\n      containers:\n        - name: app\n          image: bench/demo:1.0.0\n          ports:\n            - containerPort: 9898\n---\napiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: app{i}\n  namespace: bench\nspec:\n  targetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: app{i}\n  service:\n    port: 9898\n  analysis:\n    interval: 10s\n    threshold: 5\n    maxWeight: 50\n    stepWeight: 10\n"),
        )?;
    }
    let remote = work.join("remote.git");
    seed::commit_dir(
        &remote,
        &tree,
        "main",
        "bench",
        ("bench", "bench@localhost"),
    )?;
    let cfg = work.join("gitcanary.yaml");
    std::fs::write(
        &cfg,
        format!("source:\n  url: {}\n  interval: 1h\ntarget:\n  local:\n    stateDir: ./state\n    images:\n      bench/demo: [\"gitcanary\", \"demo-app\", \"--port\", \"$(PORT)\"]\nserver:\n  listen: 127.0.0.1:0\nimages:\n  enabled: false\n", remote.display()),
    )?;
    let mut child = quiet_run(&cfg)?.spawn()?;
    let started = Instant::now();
    let state = work.join("state");
    let result = (|| {
        loop {
            let ready = (0..n)
                .filter(|i| {
                    crate::canary::executor::read_status(&state, "bench", &format!("app{i}")).phase
                        == crate::canary::state::Phase::Initialized
                })
                .count();
            if ready == n && started.elapsed() > Duration::from_secs(3) {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(300),
                "only {ready} of {n} canaries initialized"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        // Idle: let a few engine ticks and a runtime reload pass.
        std::thread::sleep(Duration::from_secs(8));
        then(child.id(), &state)
    })();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// Runs the idle-memory benchmark.
pub fn run(canaries: usize) -> anyhow::Result<ExitCode> {
    let base = measure(0)?;
    let with = measure(canaries)?;
    let per = with.saturating_sub(base) as f64 / canaries.max(1) as f64;
    println!("gitcanary bench canary-idle ({canaries} canaries initialized, primaries running)");
    println!(
        "  idle RSS, no canaries:       {:>8.1} MB",
        base as f64 / 1024.0
    );
    println!(
        "  idle RSS, {canaries} canaries:     {:>8.1} MB   (target < 40 MB)",
        with as f64 / 1024.0
    );
    println!("  memory per idle canary:      {per:>8.1} KB   (target < 50 KB)");
    Ok(super::bench::verdict(
        (with as f64 / 1024.0) < 40.0 && per < 50.0,
    ))
}
