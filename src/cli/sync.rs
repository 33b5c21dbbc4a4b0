//! `gitcanary sync --once` and `gitcanary diff`.

use crate::cli::output;
use crate::config::Config;
use crate::sync::reconcile::{self, Reconciler};
use crate::targets::kube::leader::Hold;
use crate::targets::DiffAction;
use std::process::ExitCode;

/// How long a one-shot command waits for its notifications to be sent.
const NOTIFY_FLUSH: std::time::Duration = std::time::Duration::from_secs(15);

/// One sync; exit 0 on success, 1 on failure.
pub fn sync_once(cfg: Config) -> anyhow::Result<ExitCode> {
    let interval = cfg.source.interval;
    let _span = tracing::info_span!("reconcile", source = %cfg.source.name).entered();
    let notifier = crate::notify::Notifier::from_config(&cfg)?;
    let (hold, rec) = open_holding_lease(cfg)?;
    let mut rec = rec.with_notifier(notifier.clone());
    let result = rec.sync_once();
    drop(rec);
    drop(hold);
    reconcile::log_result(&result, interval);
    notifier.flush(NOTIFY_FLUSH);
    Ok(match result {
        Ok(r) => {
            println!(
                "applied {}: {} created, {} configured, {} pruned, {} unchanged",
                r.revision,
                r.applied.created,
                r.applied.updated,
                r.applied.pruned,
                r.applied.unchanged
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sync failed: {e}");
            ExitCode::FAILURE
        }
    })
}

/// `images scan --once`: a forced registry scan, the Git update it implies, a sync.
pub fn images_scan_once(cfg: Config) -> anyhow::Result<ExitCode> {
    let state = cfg.state_dir();
    let _span = tracing::info_span!("images", source = %cfg.source.name).entered();
    let notifier = crate::notify::Notifier::from_config(&cfg)?;
    let (hold, rec) = open_holding_lease(cfg)?;
    let mut rec = rec.with_notifier(notifier.clone());
    rec.force_scan = true;
    let result = rec.sync_once();
    drop(hold);
    notifier.flush(NOTIFY_FLUSH);
    reconcile::log_result(&result, rec.config().images.interval);
    super::get::print_images(&state, output::Format::Table)?;
    let images_ok = reconcile::read_images_status(&state).is_some_and(|s| s.error.is_none());
    Ok(if result.is_ok() && images_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A reconciler for a one-shot sync. On Kubernetes it holds the leader Lease first
/// and writes only while it does, so it never writes beside a running leader; when
/// another replica holds the Lease it refuses, naming the holder.
fn open_holding_lease(cfg: Config) -> anyhow::Result<(Option<Hold>, Reconciler)> {
    let hold = match &cfg.target.kubernetes {
        Some(kube) => Some(Hold::take(kube, &cfg.base_dir)?),
        None => None,
    };
    let rec = Reconciler::open(cfg, true)?;
    Ok(match hold {
        Some(h) => {
            let gate = h.gate();
            (Some(h), rec.with_gate(gate))
        }
        None => (None, rec),
    })
}

/// Prints what the next sync would change; exit 0 nothing, 1 changes, 2 error.
pub fn diff(cfg: Config) -> anyhow::Result<ExitCode> {
    let mut rec = Reconciler::open(cfg, false)?;
    let preview = match rec.preview() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    for d in &preview.diffs {
        match d.action {
            DiffAction::Create => println!("► {} created", d.key),
            DiffAction::Delete => println!("► {} deleted", d.key),
            DiffAction::Orphan => println!("► {} no longer managed (pruning disabled)", d.key),
            DiffAction::Update => {
                println!("► {} drifted", d.key);
                let old = d.before.clone().unwrap_or_default();
                let new = d.after.clone().unwrap_or_default();
                print!("{}", line_diff(&output::yaml(&old), &output::yaml(&new)));
            }
        }
    }
    Ok(if !preview.diffs.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// A minimal line diff (LCS) showing removed and added lines.
pub fn line_diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("  - {}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("  + {}\n", b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn diff_shows_changed_lines() {
        assert_eq!(
            super::line_diff("a: 1\nb: 2\n", "a: 1\nb: 3\n"),
            "  - b: 2\n  + b: 3\n"
        );
    }
}
