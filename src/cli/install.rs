//! `gitcanary install --export`: prints the install manifests for `kubectl apply -f -`.

use crate::install::{self, Options};
use std::process::ExitCode;

/// Prints the manifests; without `--export` explains how to apply them.
pub fn install(export: bool, opts: &Options) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        export,
        "install applies nothing itself: run `gitcanary install --export | kubectl apply -f -`"
    );
    print!("{}", install::export(opts)?);
    Ok(ExitCode::SUCCESS)
}
