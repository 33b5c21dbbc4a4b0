//! The source's status record (`status/source.json` in the state dir), written
//! atomically after every attempt so `gitcanary get sources` can read it at any time.

use crate::util::atomic;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What the last fetch and apply did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    /// Source name.
    pub name: String,
    /// URL, redacted.
    pub url: String,
    /// Branch.
    pub branch: String,
    /// Synced sub-folder.
    pub path: String,
    /// Last fetched commit.
    pub fetched_revision: Option<String>,
    /// When it was fetched (Unix seconds).
    pub fetched_at: Option<f64>,
    /// Last commit applied to the target.
    pub applied_revision: Option<String>,
    /// When it was applied.
    pub applied_at: Option<f64>,
    /// Last error, if the last attempt failed.
    pub last_error: Option<String>,
    /// When that error happened.
    pub last_error_at: Option<f64>,
    /// Last attempt.
    pub last_attempt_at: Option<f64>,
    /// How long the last attempt took, fetch to apply, in seconds (success or not).
    #[serde(default)]
    pub last_sync_duration: Option<f64>,
    /// Consecutive failed attempts.
    pub failures: u32,
    /// Whether the last attempt succeeded.
    pub ready: bool,
    /// A one-line summary, as `flux get` prints.
    pub message: String,
    /// Objects in the inventory after the last apply.
    pub objects: usize,
}

/// Where the status file lives.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("status").join("source.json")
}

/// Reads the status; a missing file is the default status.
pub fn read(state_dir: &Path) -> std::io::Result<Option<SourceStatus>> {
    match std::fs::read(path(state_dir)) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the status atomically.
pub fn write(state_dir: &Path, status: &SourceStatus) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    atomic::write(&path(state_dir), &bytes)
}

/// Flux's revision format: `main@sha1:<id>`.
pub fn revision_string(branch: &str, commit: &str) -> String {
    format!("{branch}@sha1:{commit}")
}
