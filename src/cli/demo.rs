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
    #[arg(long, env = "GITCANARY_DEMO_LISTEN", default_value = "127.0.0.1:9797")]
    pub listen: String,
    /// Set up and sync once, then exit.
    #[arg(long)]
    pub once: bool,
}

/// The commands of the README's Quick start after `cd <dir>`: release podinfo 6.0.1
/// and watch its canary. The README shows the same lines; a test keeps them equal.
const RELEASE: [&str; 4] = [
    "git clone -q -c user.name=demo -c user.email=demo@gitcanary.local remote.git work && cd work",
    "sed -i 's/podinfo:6.0.0/podinfo:6.0.1/' apps/podinfo/deployment.yaml",
    "git commit -qam 'podinfo 6.0.1' && git push -q",
    "gitcanary get canaries --watch",
];

/// What the demo prints before it starts reconciling. `cloned`: the clone exists
/// from an earlier run, so the clone line becomes a `cd`.
fn banner(dir: &Path, state: &Path, cloned: bool) -> String {
    let d = dir.display();
    let mut out = format!(
        "gitcanary demo\n\
         ==============\n\
         Cluster repository: {d}/remote.git\n\
         Config:             {d}/gitcanary.yaml\n\
         State:              {state}\n\n\
         In a second terminal, release podinfo 6.0.1 and watch its canary (Ctrl-C stops the watch):\n\
         \x20 cd {d}\n\
         \x20 export GITCANARY_CONFIG=\"{d}/gitcanary.yaml\" PATH=\"{d}/bin:$PATH\"\n",
        state = state.display(),
    );
    for (i, line) in RELEASE.iter().enumerate() {
        let line = if i == 0 && cloned { "cd work" } else { line };
        out.push_str(&format!("  {line}\n"));
    }
    out.push_str(
        "\nThe README's Quick start goes on from there: a faulty release, and its rollback.\n",
    );
    out
}

/// Links this binary as `<dir>/bin/gitcanary`, so the printed commands run the
/// build that started the demo, from any folder.
fn link_binary(dir: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding this program's path")?;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    let link = bin.join("gitcanary");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&exe, &link)
        .with_context(|| format!("linking {} to {}", link.display(), exe.display()))
}

/// Runs the demo.
pub fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let remote = dir.join("remote.git");
    if !remote.exists() {
        let seed_dir = super::examples_repo(args.seed, "--seed")?;
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
    link_binary(&dir)?;
    print!(
        "{}",
        banner(&dir, &cfg.state_dir(), dir.join("work").exists())
    );
    if args.once {
        return super::sync::sync_once(cfg);
    }
    let state = cfg.state_dir();
    let started = crate::util::time::unix_now();
    std::thread::spawn(move || print_services_when_up(&state, started));
    super::run::run(cfg)
}

/// How long the demo waits for the Services before it points to `get services`.
const SERVICES_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The Service rows once this run has them all: it has synced, every Canary is past
/// initialization (which creates its Services), and every listener accepts. Rows
/// from an earlier run fail the last test, so stale addresses never print.
fn services_up(state: &Path, started: f64) -> Option<Vec<super::listing::Row>> {
    let synced = crate::source::status::read(state)
        .ok()
        .flatten()
        .and_then(|s| s.last_attempt_at)
        .is_some_and(|t| t >= started);
    if !synced {
        return None;
    }
    let store = crate::targets::local::LocalStore::open(state).ok()?;
    let initializing = store.list("flagger.app", "Canary").ok()?.iter().any(|k| {
        crate::canary::executor::read_status(state, &k.namespace, &k.name).phase
            == crate::canary::state::Phase::Initializing
    });
    if initializing {
        return None;
    }
    let rows = super::get::service_rows(state, None).ok()?.rows;
    let listening = |r: &super::listing::Row| {
        r.value["address"]
            .as_str()
            .and_then(|a| a.strip_prefix("http://"))
            .and_then(|a| a.parse().ok())
            .is_some_and(|a| {
                std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(1)).is_ok()
            })
    };
    (!rows.is_empty() && rows.iter().all(listening)).then_some(rows)
}

/// Prints each Service's address once they are up (see [`services_up`]).
fn print_services_when_up(state: &Path, started: f64) {
    let t = std::time::Instant::now();
    while t.elapsed() < SERVICES_WAIT {
        if let Some(rows) = services_up(state, started) {
            let mut out = String::from(
                "\nServices (their addresses stay the same across restarts; `gitcanary get services` shows their endpoints):\n",
            );
            for r in rows {
                let v = &r.value;
                out.push_str(&format!(
                    "  {}/{}:{}  curl {}/\n",
                    v["namespace"].as_str().unwrap_or_default(),
                    v["name"].as_str().unwrap_or_default(),
                    v["port"],
                    v["address"].as_str().unwrap_or_default()
                ));
            }
            print!("{out}");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    println!(
        "\nThe Services are not all up yet: `gitcanary get services` lists them as they come."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_prints_absolute_paths_and_the_release_commands() {
        let b = banner(
            Path::new("/srv/gitcanary-demo"),
            Path::new("/srv/gitcanary-demo/state"),
            false,
        );
        assert!(
            b.contains("State:              /srv/gitcanary-demo/state\n"),
            "{b}"
        );
        assert!(b.contains("  cd /srv/gitcanary-demo\n"), "{b}");
        assert!(b.contains(
            "  export GITCANARY_CONFIG=\"/srv/gitcanary-demo/gitcanary.yaml\" PATH=\"/srv/gitcanary-demo/bin:$PATH\"\n"
        ));
        for line in RELEASE {
            assert!(b.contains(&format!("  {line}\n")), "{line}: {b}");
        }
        // A second run does not clone again.
        let again = banner(Path::new("/d"), Path::new("/d/state"), true);
        assert!(
            again.contains("  cd work\n") && !again.contains("git clone"),
            "{again}"
        );
    }
}
