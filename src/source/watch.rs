//! Watches a Git repository on this machine and signals when a ref moves, so a local
//! commit is synced at once instead of at the next interval.

use notify::{RecursiveMode, Watcher};
use std::path::Path;
use tokio::sync::mpsc::UnboundedSender;

/// Keeps the watch alive while held.
pub struct RepoWatch {
    _watcher: notify::RecommendedWatcher,
}

/// Starts watching `git_dir`; sends `()` on `tx` whenever a ref or `HEAD` changes.
pub fn watch(git_dir: &Path, tx: UnboundedSender<()>) -> notify::Result<RepoWatch> {
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        // Only writes count: our own fetch reads these refs, and inotify reports reads
        // (open/close) too, which would make every sync trigger the next.
        let writes = matches!(
            event.kind,
            notify::EventKind::Create(_)
                | notify::EventKind::Modify(_)
                | notify::EventKind::Remove(_)
        );
        let relevant = writes
            && event.paths.iter().any(|p| {
                let s = p.to_string_lossy();
                s.contains("/refs/") || s.ends_with("packed-refs") || s.ends_with("HEAD")
            });
        if relevant {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(git_dir, RecursiveMode::Recursive)?;
    Ok(RepoWatch { _watcher: watcher })
}
