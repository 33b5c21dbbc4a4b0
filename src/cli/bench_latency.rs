//! `bench history`'s latency section. Push-to-applied latency of a real `gitcanary run`
//! on the local target: 50 pushes
//! announced by the push webhook (the remote served by `git daemon`, so no local
//! watch), and 50 noticed by the local watch of a repository on this machine (no
//! webhook). The clock starts when `git push` returns and stops when
//! `status/source.json` names the pushed commit as applied.

use super::bench_proxy::load::quantile_us;
use anyhow::Context;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How the daemon hears of a push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// `POST /hook` with the secret, the remote served over `git://`.
    Webhook,
    /// The local watch of the bare repository.
    Watch,
}

/// Latencies of one way, sorted.
pub struct Measured {
    /// Push-to-applied, sorted.
    pub latencies: Vec<Duration>,
}

impl Measured {
    /// The `q` quantile in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        quantile_us(&self.latencies, q) / 1000.0
    }
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost"])
        .args(args)
        .current_dir(dir)
        .output()
        .context("running git")?;
    anyhow::ensure!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn configmap(value: usize) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: latency\n  namespace: bench\ndata:\n  push: \"{value}\"\n")
}

/// Kills the children on drop, so an error leaves nothing running.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SAFETY: kill(2) on our own child's pid; SIGTERM lets `run` exit cleanly.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

/// The applied revision in `state`'s status, if any.
fn applied(state: &Path) -> Option<String> {
    let bytes = std::fs::read(state.join("status").join("source.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["appliedRevision"].as_str().map(str::to_string)
}

/// Waits until `state` says `commit` is applied; the time it took.
fn wait_applied(state: &Path, commit: &str, limit: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if applied(state).is_some_and(|r| r.ends_with(commit)) {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "commit {commit} not applied within {limit:?}"
        );
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// POSTs to `/hook` with the bearer secret; the status code.
fn post_hook(addr: &str, secret: &str) -> anyhow::Result<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "POST /hook HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {secret}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    )?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    Ok(String::from_utf8_lossy(&head[9..12]).parse()?)
}

/// Sets up a repository and a daemon hearing of pushes `via`, then times `pushes`.
fn measure(work: &Path, via: Via, pushes: usize) -> anyhow::Result<Measured> {
    let _ = std::fs::remove_dir_all(work);
    let (remote, clone) = (work.join("remote.git"), work.join("clone"));
    std::fs::create_dir_all(work)?;
    git(
        work,
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            remote.to_str().unwrap_or_default(),
        ],
    )?;
    git(
        work,
        &[
            "init",
            "-q",
            "-b",
            "main",
            clone.to_str().unwrap_or_default(),
        ],
    )?;
    git(
        &clone,
        &[
            "remote",
            "add",
            "origin",
            remote.to_str().unwrap_or_default(),
        ],
    )?;
    std::fs::write(
        clone.join("ns.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench\n",
    )?;
    let mut children = Children(Vec::new());
    let url = match via {
        Via::Watch => remote.display().to_string(),
        Via::Webhook => {
            let port = free_port()?;
            children.0.push(
                Command::new("git")
                    .args([
                        "daemon",
                        "--reuseaddr",
                        "--export-all",
                        "--listen=127.0.0.1",
                    ])
                    .arg(format!("--port={port}"))
                    .arg(format!("--base-path={}", work.display()))
                    .arg(work)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting git daemon")?,
            );
            format!("git://127.0.0.1:{port}/remote.git")
        }
    };
    let push = |i: usize| -> anyhow::Result<String> {
        std::fs::write(clone.join("cm.yaml"), configmap(i))?;
        git(&clone, &["add", "-A"])?;
        git(&clone, &["commit", "-qm", &format!("push {i}")])?;
        git(&clone, &["push", "-q", "origin", "HEAD:main"])?;
        git(&clone, &["rev-parse", "HEAD"])
    };
    let first = push(0)?;
    let cfg = work.join("gitcanary.yaml");
    std::fs::write(
        &cfg,
        format!("source:\n  url: {url}\n  interval: 1h\ntarget:\n  local:\n    stateDir: ./state\nserver:\n  listen: 127.0.0.1:0\n  webhookSecretEnv: BENCH_HOOK_SECRET\nimages:\n  enabled: false\n"),
    )?;
    let secret = format!("bench-{}", std::process::id());
    children.0.push(
        super::bench_idle::quiet_run(&cfg)?
            .env("BENCH_HOOK_SECRET", &secret)
            .spawn()?,
    );
    let state = work.join("state");
    wait_applied(&state, &first, Duration::from_secs(60))?;
    let addr = server_address(&state)?;
    let mut latencies = Vec::with_capacity(pushes);
    for i in 1..=pushes {
        let commit = push(i)?;
        let start = Instant::now();
        if via == Via::Webhook {
            let code = post_hook(&addr, &secret)?;
            anyhow::ensure!(code == 202, "/hook answered {code}");
        }
        wait_applied(&state, &commit, Duration::from_secs(30))?;
        latencies.push(start.elapsed());
        // Let the daemon settle, so each push is measured on its own.
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(children);
    latencies.sort_unstable();
    Ok(Measured { latencies })
}

fn server_address(state: &Path) -> anyhow::Result<String> {
    let path = state.join("status").join("server.json");
    let start = Instant::now();
    loop {
        if let Some(a) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["address"].as_str().map(str::to_string))
        {
            return Ok(a);
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "{} not written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `bench history` section: `pushes` pushes each way under `dir`, p50 and p99
/// against the targets (none when `pushes` is 0).
pub fn section(
    dir: &Path,
    pushes: usize,
    report: &mut super::bench_history::Report,
) -> anyhow::Result<()> {
    if pushes == 0 {
        return Ok(());
    }
    let hook = measure(&dir.join("webhook"), Via::Webhook, pushes)?;
    let watch = measure(&dir.join("watch"), Via::Watch, pushes)?;
    report.add(
        format!("push-to-applied via webhook, p50 of {pushes}"),
        hook.ms(0.5),
        150.0,
    );
    report.add(
        format!("push-to-applied via webhook, p99 of {pushes}"),
        hook.ms(0.99),
        500.0,
    );
    report.add(
        format!("push-to-applied via local watch, p50 of {pushes}"),
        watch.ms(0.5),
        150.0,
    );
    Ok(())
}
