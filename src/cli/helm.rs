//! `gitcanary helm template RELEASE_FILE`: renders the HelmReleases of one file and
//! prints the objects as `helm template` does. The repository root is the Git top level
//! of the file's folder (the working tree, so uncommitted edits show); no config needed.

use crate::helm::chart::Capabilities;
use crate::helm::release::expand;
use crate::manifest::{self, snapshot::DirSnapshot};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `gitcanary helm ...`
#[derive(Subcommand, Debug)]
pub enum HelmCmd {
    /// Render the HelmReleases in a file and print the YAML.
    Template {
        /// A file in a cluster repository holding HelmRelease objects.
        release_file: PathBuf,
    },
    /// Run the test hooks of a release applied to the local target, as `helm test`.
    Test {
        /// Release name.
        release: String,
        /// Release namespace (default: the one namespace that has the release).
        #[arg(short, long)]
        namespace: Option<String>,
        /// Timeout for all tests (default: the HelmRelease's `spec.timeout`, or 5m).
        #[arg(long)]
        timeout: Option<String>,
    },
}

/// `gitcanary helm test`: runs the release's test hooks; non-zero exit on failure.
pub fn test(
    cfg: &crate::config::Config,
    release: String,
    namespace: Option<String>,
    timeout: Option<String>,
) -> anyhow::Result<ExitCode> {
    let timeout = timeout
        .map(|t| crate::util::duration::parse(&t))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    let cmd = crate::helm::hooks::TestCommand {
        release,
        namespace,
        timeout,
    };
    let mut target = crate::targets::open(cfg, false)?;
    // Test Pods are writes: on Kubernetes they are created only while this command
    // holds the leader Lease, never beside a running leader.
    let hold = match &cfg.target.kubernetes {
        Some(kube) => Some(crate::targets::kube::leader::Hold::take(
            kube,
            &cfg.base_dir,
        )?),
        None => None,
    };
    if let Some(h) = &hold {
        target = Box::new(crate::targets::kube::leader::Gated::new(target, h.gate()));
    }
    let result = crate::sync::hooks::helm_test(target.as_ref(), &cfg.state_dir(), &cmd, "default");
    drop(target);
    drop(hold);
    match result {
        Ok(out) => {
            println!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `gitcanary helm template RELEASE_FILE`.
pub fn template(release_file: &Path) -> anyhow::Result<ExitCode> {
    let (top, rel) = repo_root(release_file)?;
    let file = manifest::load(&DirSnapshot::new(&top), &rel, None);
    if !file.errors.is_empty() {
        for e in &file.errors {
            eprintln!("{e}");
        }
        return Ok(ExitCode::FAILURE);
    }
    if !file.objects.iter().any(|o| o.key.kind == "HelmRelease") {
        anyhow::bail!("{rel}: no HelmRelease in this file");
    }
    // A cluster repo kept in a folder of a bigger repository (like examples-repo here):
    // the root is the highest folder above the file that holds the chart paths.
    let root = chart_root(&top, &rel, &file.objects);
    let rel = Path::new(&top)
        .join(&rel)
        .strip_prefix(&root)
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .unwrap_or(rel);
    let snap = DirSnapshot::new(&root);
    let file = manifest::load(&snap, &rel, None);
    // valuesFrom reads ConfigMaps and Secrets from anywhere in the repository.
    let mut objects = file.objects.clone();
    let repo = manifest::load(&snap, "", None);
    objects.extend(repo.objects.into_iter().filter(|o| {
        matches!(o.key.kind.as_str(), "ConfigMap" | "Secret")
            && !file.objects.iter().any(|f| f.key == o.key)
    }));
    let x = expand(&snap, &objects, "", &Capabilities::default());
    if !x.errors.is_empty() {
        for e in &x.errors {
            eprintln!("{e}");
        }
        return Ok(ExitCode::FAILURE);
    }
    for (release, why) in &x.skipped {
        eprintln!("{release}: not rendered: {why}");
    }
    let mut out = String::new();
    for o in &x.objects {
        out.push_str(&format!("---\n# Source: {}\n", o.origin.file));
        out.push_str(&super::output::yaml(&o.value()));
    }
    // Hooks follow the manifests, as in `helm template`.
    for h in x.releases.iter().flat_map(|r| &r.hooks) {
        out.push_str(&format!("---\n# Source: {}\n", h.file));
        out.push_str(&super::output::yaml(&h.object));
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// The Git top level above `file`'s folder, and `file` relative to it.
fn repo_root(file: &Path) -> anyhow::Result<(PathBuf, String)> {
    let abs =
        std::fs::canonicalize(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let dir = abs.parent().unwrap_or(Path::new("/"));
    let repo = git2::Repository::discover(dir)
        .map_err(|_| anyhow::anyhow!("{}: not inside a Git repository", file.display()))?;
    let top = repo
        .workdir()
        .ok_or_else(|| anyhow::anyhow!("{}: the repository is bare", file.display()))?;
    let top = std::fs::canonicalize(top)?;
    let rel = abs
        .strip_prefix(&top)
        .map_err(|_| anyhow::anyhow!("{}: outside {}", abs.display(), top.display()))?;
    Ok((top, rel.to_string_lossy().replace('\\', "/")))
}

fn chart_root(top: &Path, rel: &str, objects: &[crate::manifest::Object]) -> PathBuf {
    let charts: Vec<String> = objects
        .iter()
        .filter(|o| o.key.kind == "HelmRelease")
        .filter_map(
            |o| match crate::helm::release::chart_source(&o.value(), "") {
                Ok(crate::helm::release::ChartSource::Path(p)) => Some(p),
                _ => None,
            },
        )
        .collect();
    let mut dir = top.to_path_buf();
    let mut candidates = vec![dir.clone()];
    for part in Path::new(rel)
        .parent()
        .into_iter()
        .flat_map(|p| p.components())
    {
        dir = dir.join(part);
        candidates.push(dir.clone());
    }
    candidates
        .into_iter()
        .find(|c| !charts.is_empty() && charts.iter().all(|ch| c.join(ch).is_dir()))
        .unwrap_or_else(|| top.to_path_buf())
}
