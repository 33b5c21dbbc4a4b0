//! The executor for charts from outside the cluster repository: Helm HTTP repositories
//! (see [`super::repo`]) and folders of other Git repositories, fetched through the Git
//! layer with host-key checking and only the credentials that repository may have
//! (see [`crate::source::credentials`]). Repositories on this machine are read only
//! under `source.localChartRoot`.

use super::chart::Chart;
use super::release::{read_chart, ChartSource};
use crate::config::SourceConfig;
use crate::source::credentials;
use crate::source::git::redact_url;
use crate::source::GitSource;
use std::path::{Path, PathBuf};

/// Fetches the chart a [`ChartSource`] names.
pub fn fetch(
    src: &ChartSource,
    source: &SourceConfig,
    base_dir: &Path,
    state_dir: &Path,
) -> Result<Chart, String> {
    match src {
        ChartSource::HelmRepo {
            url: Some(url),
            chart,
            version,
            access,
            ..
        } => super::repo::fetch(url, chart, version, &state_dir.join("helm-charts"), access)
            .map(|(_, c)| c),
        ChartSource::Git {
            url,
            git_ref,
            path,
            auth,
        } => {
            if credentials::is_local(url) {
                check_local_root(url, source, base_dir)?;
            }
            let creds = credentials::for_chart(url, auth.as_ref(), source);
            let git = GitSource::with_credentials(
                url,
                &source.branch,
                creds,
                base_dir,
                &state_dir.join("helm-git"),
            );
            let fetched = git
                .fetch_ref(git_ref)
                .map_err(|e| format!("{e} ({git_ref})"))?;
            let snap = git.snapshot(&fetched.commit).map_err(|e| e.to_string())?;
            let dir = crate::manifest::snapshot::join("", path)
                .ok_or_else(|| format!("chart path {path:?} escapes the repository"))?;
            read_chart(&snap, &dir).map_err(|e| format!("{} ({git_ref}): {e}", git.display_url()))
        }
        ChartSource::HelmRepo { url: None, .. }
        | ChartSource::Path(_)
        | ChartSource::OciRef(..)
        | ChartSource::Other(_) => Err("not a remote chart source".into()),
    }
}

/// A chart repository on this machine must lie inside `source.localChartRoot`:
/// otherwise anyone who can push a HelmRelease could read any repository the
/// gitcanary user can. Symlinks and `..` are resolved before the check.
fn check_local_root(url: &str, source: &SourceConfig, base_dir: &Path) -> Result<(), String> {
    let shown = redact_url(url);
    let Some(root) = &source.local_chart_root else {
        return Err(format!(
            "{shown}: charts from repositories on this machine are refused; set source.localChartRoot to the folder that may hold them"
        ));
    };
    let from_base = |p: &Path| -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base_dir.join(p)
        }
    };
    let root = from_base(root);
    let root = std::fs::canonicalize(&root)
        .map_err(|e| format!("source.localChartRoot {}: {e}", root.display()))?;
    let path = from_base(Path::new(url.strip_prefix("file://").unwrap_or(url)));
    let path = std::fs::canonicalize(&path).map_err(|e| format!("{shown}: {e}"))?;
    if !path.starts_with(&root) {
        return Err(format!(
            "{shown}: outside source.localChartRoot {}",
            root.display()
        ));
    }
    Ok(())
}
