//! The command line: one file per command group. Commands load the config, call into
//! the library and print; exit codes follow Flux (`diff`: 0 none, 1 changes, 2 error).

mod bench;
mod bench_history;
mod bench_idle;
mod bench_images;
mod bench_kube;
mod bench_latency;
mod bench_proxy;
mod bench_ui;
mod canary;
mod daemon;
mod demo;
mod get;
mod helm;
mod history;
mod images;
mod install;
mod listing;
mod logs;
pub mod output;
mod run;
mod sync;
mod validate;

use crate::config::Config;
use crate::util::logging::{self, LogFormat};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// gitcanary: GitOps sync and progressive delivery in one small binary.
#[derive(Parser, Debug)]
#[command(name = "gitcanary", version, about)]
pub struct Cli {
    /// Config file.
    #[arg(
        long,
        global = true,
        env = "GITCANARY_CONFIG",
        default_value = "gitcanary.yaml"
    )]
    pub config: PathBuf,
    /// Log level or filter directive (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Reconcile until SIGINT or SIGTERM.
    Run,
    /// Fetch, plan and apply once, then exit (non-zero on failure).
    Sync {
        /// Run a single sync (the only mode; kept for Flux-style muscle memory).
        #[arg(long)]
        once: bool,
    },
    /// Check a repository folder offline and print every error.
    Validate {
        /// Repository folder (default: the current folder).
        dir: Option<PathBuf>,
        /// Sub-folder to load, as `source.path` would.
        #[arg(long, default_value = "")]
        path: String,
    },
    /// Show what the next sync would change (exit 0: nothing, 1: changes, 2: error).
    Diff,
    /// Show sources or objects.
    Get {
        /// What to show.
        #[command(subcommand)]
        what: get::What,
    },
    /// Open every confirm gate of a canary now.
    Promote {
        /// The canary.
        #[command(subcommand)]
        what: canary::CanaryRef,
    },
    /// Roll a canary back now.
    Abort {
        /// The canary.
        #[command(subcommand)]
        what: canary::CanaryRef,
    },
    /// Analyse a canary's current revision again (after a failure), without a Git change.
    Retry {
        /// The canary.
        #[command(subcommand)]
        what: canary::CanaryRef,
    },
    /// Suspend a canary (the engine leaves it as it is) or the source (sync and image
    /// automation pause, across restarts).
    Suspend {
        /// What to suspend.
        #[command(subcommand)]
        what: daemon::SuspendRef,
    },
    /// Resume a suspended canary or source.
    Resume {
        /// What to resume.
        #[command(subcommand)]
        what: daemon::SuspendRef,
    },
    /// Ask the running daemon to sync now and wait for the result, as `flux reconcile`.
    Reconcile {
        /// Fetch the source first; without it, the last fetched revision is synced.
        #[arg(long)]
        with_source: bool,
        /// How long to wait for the sync.
        #[arg(long, default_value = "5m", value_parser = crate::util::duration::parse)]
        timeout: std::time::Duration,
    },
    /// Show a canary's spec summary, phase, metrics against thresholds, and events.
    Describe {
        /// The canary.
        #[command(subcommand)]
        what: canary::CanaryRef,
    },
    /// Rollouts recorded in Git (`refs/notes/gitcanary`), newest first; reads Git
    /// alone, no state dir needed.
    History(history::Args),
    /// Image automation.
    Images {
        /// What to do.
        #[command(subcommand)]
        what: ImagesCmd,
    },
    /// Seed a local Git repository from examples-repo and reconcile it.
    Demo(demo::DemoArgs),
    /// Show the logs of a Deployment's replicas on the local target.
    Logs {
        /// `namespace/name`, or `name` in `default`.
        deployment: String,
        /// Keep printing as logs grow.
        #[arg(short, long)]
        follow: bool,
    },
    /// Run the podinfo-compatible demo app (what the local target runs for podinfo).
    DemoApp {
        /// podinfo's flags: `--port N` (default 9898) and `--port-metrics N` are served,
        /// the others accepted and ignored.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// podinfo's probe CLI: `podcli check http URL` or `podcli check tcp ADDR`.
    #[command(hide = true)]
    Podcli {
        /// `check http URL` or `check tcp ADDR`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Helm charts: render HelmReleases without a cluster; run release tests.
    Helm {
        /// What to do.
        #[command(subcommand)]
        what: helm::HelmCmd,
    },
    /// Print the manifests that run gitcanary in a cluster (Namespace, CRDs, RBAC,
    /// config, Deployment, Service), as `flux install --export` does.
    Install {
        /// Print the manifests instead of applying them (the only mode).
        #[arg(long)]
        export: bool,
        /// The Git repository to follow (https:// or ssh://).
        #[arg(long)]
        url: Option<String>,
        /// Its branch.
        #[arg(long)]
        branch: Option<String>,
        /// The folder inside it to sync, e.g. ./clusters/prod.
        #[arg(long)]
        path: Option<String>,
        /// The container image to run.
        #[arg(long)]
        image: Option<String>,
    },
    /// Benchmarks.
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        which: bench::Which,
    },
}

/// `gitcanary images ...`
#[derive(Subcommand, Debug)]
pub enum ImagesCmd {
    /// Scan the registries now, update Git if a newer tag is allowed, sync, and exit.
    Scan {
        /// Run once and exit (the only mode).
        #[arg(long)]
        once: bool,
    },
    /// Let automation select a tag a failed canary rejected (recorded in Git too).
    Allow {
        /// `IMAGE:TAG`, as `get images` lists it.
        image: String,
    },
}

/// Parses arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::util::tls::install_crypto_provider();
    logging::init(&cli.log_level, cli.log_format);
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run => run::run(load_config(&cli.config)?),
        Command::Sync { .. } => sync::sync_once(load_config(&cli.config)?),
        Command::Diff => sync::diff(load_config(&cli.config)?),
        Command::Validate { dir, path } => {
            validate::validate(dir.unwrap_or_else(|| ".".into()), &path)
        }
        Command::Get { what } => get::get(&cli.config, what),
        Command::History(args) => history::history(&args, &cli.config),
        Command::Images {
            what: ImagesCmd::Scan { .. },
        } => sync::images_scan_once(load_config(&cli.config)?),
        Command::Images {
            what: ImagesCmd::Allow { image },
        } => images::allow(load_config(&cli.config)?, &image),
        Command::Demo(args) => demo::demo(args),
        Command::Bench { which } => bench::bench(which),
        Command::Install {
            export,
            url,
            branch,
            path,
            image,
        } => install::install(
            export,
            &crate::install::Options {
                url,
                branch,
                path,
                image,
            },
        ),
        Command::Helm {
            what: helm::HelmCmd::Template { release_file },
        } => helm::template(&release_file),
        Command::Helm {
            what:
                helm::HelmCmd::Test {
                    release,
                    namespace,
                    timeout,
                },
        } => helm::test(&load_config(&cli.config)?, release, namespace, timeout),
        Command::Promote { what } => canary::manual(&load_config(&cli.config)?, &what, "promote"),
        Command::Abort { what } => canary::manual(&load_config(&cli.config)?, &what, "abort"),
        Command::Retry { what } => canary::manual(&load_config(&cli.config)?, &what, "retry"),
        Command::Suspend { what } => suspend_or_resume(&load_config(&cli.config)?, what, true),
        Command::Resume { what } => suspend_or_resume(&load_config(&cli.config)?, what, false),
        Command::Reconcile {
            with_source,
            timeout,
        } => daemon::reconcile(&load_config(&cli.config)?, with_source, timeout),
        Command::Describe { what } => canary::describe(&load_config(&cli.config)?, &what),
        Command::Logs { deployment, follow } => {
            logs::logs(&load_config(&cli.config)?, &deployment, follow)
        }
        Command::DemoApp { args } => {
            use crate::targets::local::demo_app;
            let a = demo_app::parse_args(&args).map_err(|e| anyhow::anyhow!("demo-app: {e}"))?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            let ports: Vec<u16> = std::iter::once(a.port).chain(a.port_metrics).collect();
            rt.block_on(demo_app::serve_on(&ports, demo_app::DemoConfig::from_env()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Podcli { args } => match crate::targets::local::demo_app::podcli(&args) {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
    }
}

fn suspend_or_resume(
    cfg: &Config,
    what: daemon::SuspendRef,
    suspend: bool,
) -> anyhow::Result<ExitCode> {
    match what {
        daemon::SuspendRef::Canary { name } => canary::manual(
            cfg,
            &canary::CanaryRef::Canary { name },
            if suspend { "suspend" } else { "resume" },
        ),
        daemon::SuspendRef::Source { name, timeout } => {
            daemon::suspend_source(cfg, name.as_deref(), suspend, timeout)
        }
    }
}

/// `examples-repo/`: `explicit`, else the current folder's, else the checkout this
/// binary was built from; the error names the flag (`flag`) that sets it.
fn examples_repo(explicit: Option<PathBuf>, flag: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    [
        PathBuf::from("examples-repo"),
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples-repo"),
    ]
    .into_iter()
    .find(|p| p.is_dir())
    .ok_or_else(|| {
        anyhow::anyhow!(
            "examples-repo not found: run from the gitcanary checkout or pass {flag} DIR"
        )
    })
}

fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}
