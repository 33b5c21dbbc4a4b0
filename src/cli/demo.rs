//! `gitcanary demo`: seeds a bare Git repository from `examples-repo/`, writes a config
//! pointing at it, prints how to clone, change and push, and reconciles it locally.

use crate::config::Config;
use crate::source::seed;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Options of `gitcanary demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Work folder for the demo's repository, config and state.
    #[arg(long, default_value = "gitcanary-demo")]
    pub dir: PathBuf,
    /// Cluster repository to seed from (default: examples-repo).
    #[arg(long)]
    pub seed: Option<PathBuf>,
    /// HTTP listen address for /metrics and /hook.
    #[arg(long, default_value = "127.0.0.1:9797")]
    pub listen: String,
    /// Set up and sync once, then exit.
    #[arg(long)]
    pub once: bool,
}

fn find_seed(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let candidates = [
        PathBuf::from("examples-repo"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples-repo"),
    ];
    candidates
        .into_iter()
        .find(|p| p.is_dir())
        .context("examples-repo not found: run from the gitcanary checkout or pass --seed DIR")
}

/// Runs the demo.
pub fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let remote = dir.join("remote.git");
    if !remote.exists() {
        let seed_dir = find_seed(args.seed)?;
        seed::commit_dir(
            &remote,
            &seed_dir,
            "main",
            "Seed cluster repository from examples-repo",
            ("gitcanary demo", "demo@gitcanary.local"),
        )
        .with_context(|| format!("seeding {} from {}", remote.display(), seed_dir.display()))?;
    }
    let config_path = dir.join("gitcanary.yaml");
    let config_text = format!(
        "# Written by `gitcanary demo`.\nsource:\n  url: ./remote.git\n  branch: main\n  interval: 30s\ntarget:\n  local:\n    stateDir: ./state\n    images:\n      # Images run as local processes: podinfo is gitcanary's podinfo-compatible demo app.\n      ghcr.io/stefanprodan/podinfo: [\"gitcanary\", \"demo-app\", \"--port\", \"$(PORT)\"]\n      stefanprodan/podinfo: [\"gitcanary\", \"demo-app\", \"--port\", \"$(PORT)\"]\ngit:\n  author:\n    name: gitcanary\n    email: gitcanary@localhost\nimages:\n  # The examples follow public Docker Hub images; turn this on when this machine can reach them.\n  enabled: false\nserver:\n  listen: {:?}\n",
        args.listen
    );
    crate::util::atomic::write(&config_path, config_text.as_bytes())?;
    let cfg = Config::load(&config_path)?;
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "gitcanary".into());
    println!(
        "gitcanary demo\n\
         ==============\n\
         Cluster repository: {remote}\n\
         Config:             {config}\n\
         State:              {state}\n\n\
         In another terminal, change the cluster and push:\n\
         \x20 git clone {remote} {dir}/work && cd {dir}/work\n\
         \x20 sed -i 's/replicas: 2/replicas: 3/' apps/podinfo/deployment.yaml\n\
         \x20 git commit -am 'Scale podinfo' && git push\n\n\
         gitcanary sees the push within a second. Watch it with:\n\
         \x20 {exe} --config {config} get sources\n\
         \x20 {exe} --config {config} get objects\n",
        remote = remote.display(),
        config = config_path.display(),
        state = cfg.state_dir().display(),
        dir = dir.display(),
    );
    if args.once {
        return super::sync::sync_once(cfg);
    }
    // Once replicas are up, show where they answer.
    let state = cfg.state_dir();
    std::thread::spawn(move || print_addresses(&state));
    super::run::run(cfg)
}

/// Waits for ready replicas (up to a minute) and prints their addresses and the Services'.
fn print_addresses(state: &Path) {
    let read = |p: &str| -> serde_json::Value {
        std::fs::read(state.join(p))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    };
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(60) {
        let eps = read("status/endpoints.json");
        let ready: Vec<&serde_json::Value> = eps
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["ready"] == true)
            .collect();
        if !ready.is_empty() {
            println!("\nRunning on the local target:");
            for e in ready {
                let port = e["ports"][0][2].as_u64().unwrap_or(0);
                println!(
                    "  {}/{} replica {}: curl http://127.0.0.1:{port}/",
                    e["namespace"].as_str().unwrap_or(""),
                    e["deployment"].as_str().unwrap_or(""),
                    e["pod"].as_str().unwrap_or("")
                );
            }
            for (k, addr) in read("runtime/services.json")
                .as_object()
                .into_iter()
                .flatten()
            {
                println!(
                    "  service {k}: curl http://{}/",
                    addr.as_str().unwrap_or("")
                );
            }
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}
