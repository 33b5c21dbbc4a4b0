//! `gitcanary validate [DIR]`: offline, prints every error, exit 1 if any.

use crate::manifest::{self, snapshot::DirSnapshot};
use std::path::PathBuf;
use std::process::ExitCode;

/// Validates a repository folder.
pub fn validate(dir: PathBuf, path: &str) -> anyhow::Result<ExitCode> {
    if !dir.is_dir() {
        anyhow::bail!("{}: not a folder", dir.display());
    }
    let snap = DirSnapshot::new(&dir);
    let mut loaded = manifest::load(&snap, path, None);
    if loaded.errors.is_empty() {
        for (release, why) in crate::helm::release::expand_into(&snap, &mut loaded, "").skipped {
            println!("! {release}: not rendered: {why}");
        }
    }
    let prefix = if dir == std::path::Path::new(".") {
        String::new()
    } else {
        format!("{}/", dir.display().to_string().trim_end_matches('/'))
    };
    for e in &loaded.errors {
        println!("{prefix}{e}");
    }
    if loaded.errors.is_empty() {
        println!(
            "✔ {}: {} objects in {} files are valid",
            dir.display(),
            loaded.objects.len(),
            loaded.files
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("✗ {}: {} errors", dir.display(), loaded.errors.len());
        Ok(ExitCode::FAILURE)
    }
}
