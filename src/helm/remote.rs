//! The executor for charts from outside the cluster repository: Helm HTTP repositories
//! (see [`super::repo`]) and folders of other Git repositories, fetched through the Git
//! layer with the source's credentials and host-key checking.

use super::chart::Chart;
use super::release::{read_chart, ChartSource};
use crate::config::SourceConfig;
use crate::source::GitSource;
use std::path::Path;

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
        ChartSource::Git { url, git_ref, path } => {
            let mut cfg = source.clone();
            cfg.url = url.clone();
            let git = GitSource::new(&cfg, base_dir, &state_dir.join("helm-git"));
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
