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
    crate::util::atomic::write(
        &dir(state_dir, ns, name).join("command"),
        word(cmd).as_bytes(),
    )
}

fn word(cmd: Manual) -> &'static str {
    match cmd {
        Manual::Promote => "promote",
        Manual::Abort => "abort",
        Manual::Retry => "retry",
    }
}

/// The pending one-shot command. It stays recorded until the engine has acted on it
/// (`done`), so a promote given between analysis steps waits for the next step.
pub fn pending(state_dir: &Path, ns: &str, name: &str) -> Option<Manual> {
    let text = std::fs::read_to_string(dir(state_dir, ns, name).join("command")).ok()?;
    [Manual::Promote, Manual::Abort, Manual::Retry]
        .into_iter()
        .find(|m| word(*m) == text.trim())
}

/// Removes a command the engine has acted on (or found nothing to act on), unless a
/// different one has replaced it meanwhile.
pub fn done(state_dir: &Path, ns: &str, name: &str, cmd: Manual) -> std::io::Result<()> {
    if pending(state_dir, ns, name) != Some(cmd) {
        return Ok(());
    }
    match std::fs::remove_file(dir(state_dir, ns, name).join("command")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
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
