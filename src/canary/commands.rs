//! Manual commands for canaries (`gitcanary promote|abort|retry|suspend|resume canary`):
//! the CLI records them in the state dir and the engine takes them on its next tick.

use super::decide::Manual;
use std::path::{Path, PathBuf};

fn dir(state_dir: &Path, ns: &str, name: &str) -> PathBuf {
    state_dir
        .join("commands")
        .join("canary")
        .join(ns)
        .join(name)
}

/// Records a one-shot command (promote, abort, retry).
pub fn request(state_dir: &Path, ns: &str, name: &str, cmd: Manual) -> std::io::Result<()> {
    let word = match cmd {
        Manual::Promote => "promote",
        Manual::Abort => "abort",
        Manual::Retry => "retry",
    };
    crate::util::atomic::write(&dir(state_dir, ns, name).join("command"), word.as_bytes())
}

/// Takes (and removes) a pending one-shot command.
pub fn take(state_dir: &Path, ns: &str, name: &str) -> Option<Manual> {
    let path = dir(state_dir, ns, name).join("command");
    let word = std::fs::read_to_string(&path).ok()?;
    let _ = std::fs::remove_file(&path);
    match word.trim() {
        "promote" => Some(Manual::Promote),
        "abort" => Some(Manual::Abort),
        "retry" => Some(Manual::Retry),
        _ => None,
    }
}

/// Suspends or resumes a canary (kept until changed, like `spec.suspend`).
pub fn set_suspended(
    state_dir: &Path,
    ns: &str,
    name: &str,
    suspended: bool,
) -> std::io::Result<()> {
    let path = dir(state_dir, ns, name).join("suspended");
    if suspended {
        crate::util::atomic::write(&path, b"true")
    } else {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Whether a canary is suspended from the CLI.
pub fn suspended(state_dir: &Path, ns: &str, name: &str) -> bool {
    dir(state_dir, ns, name).join("suspended").exists()
}
