//! Whether the source is suspended (`gitcanary suspend source`): while it is, the sync
//! loop neither fetches, applies nor runs image automation. Kept in the state dir
//! (`commands/source/suspended`, written atomically) so it survives a restart.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Suspension {
    /// Whether sync and image automation are paused.
    pub suspended: bool,
    /// When it last changed (Unix seconds).
    pub at: f64,
}

/// Where the record lives.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("commands").join("source").join("suspended")
}

/// The record; missing or unreadable is "not suspended", as a fresh state dir is.
pub fn read(state_dir: &Path) -> Suspension {
    std::fs::read(path(state_dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Whether the source is suspended.
pub fn is_suspended(state_dir: &Path) -> bool {
    read(state_dir).suspended
}

/// Records `suspended` at `now`; a resume is written too (not a removal), so either
/// state survives a crash right after the command.
pub fn write(state_dir: &Path, suspended: bool, now: f64) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(&Suspension { suspended, at: now }).unwrap_or_default();
    crate::util::atomic::write(&path(state_dir), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspension_round_trips_and_defaults_to_running() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_suspended(dir.path()));
        write(dir.path(), true, 10.0).unwrap();
        assert_eq!(
            read(dir.path()),
            Suspension {
                suspended: true,
                at: 10.0
            }
        );
        write(dir.path(), false, 11.0).unwrap();
        assert!(!is_suspended(dir.path()));
        std::fs::write(path(dir.path()), "garbage").unwrap();
        assert!(!is_suspended(dir.path()));
    }
}
