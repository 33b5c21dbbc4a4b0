//! `gitcanary history`: the rollouts recorded in Git notes, read from a repository
//! alone (a clone, or gitcanary's cache of the source), with no state dir. In a clone,
//! the notes are fetched from `origin` first with the user's own `git`, so its
//! credentials and SSH setup apply.

use crate::cli::output::{self, Format};
use crate::history::note::format_duration;
use crate::history::read::{self, Recorded};
use crate::history::NOTES_REF;
use crate::util::time::rfc3339_secs;
use anyhow::Context;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `gitcanary history` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this canary (`NAMESPACE/NAME`).
    pub canary: Option<String>,
    /// Show at most this many rollouts (newest first).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Format,
    /// Print the full note of one commit.
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
    /// The repository to read (a clone or a bare repository). Default: the Git
    /// repository of the current folder, else the config's source as gitcanary
    /// fetched it.
    #[arg(long)]
    pub repo: Option<PathBuf>,
    /// Do not fetch the notes from `origin` first (in a clone).
    #[arg(long)]
    pub no_fetch: bool,
}

/// Which repository to read: `--repo`, the current folder's, or the config's cache.
fn repository(args: &Args, config: &Path) -> anyhow::Result<git2::Repository> {
    if let Some(p) = &args.repo {
        return read::open(p)?
            .with_context(|| format!("--repo {}: not a Git repository", p.display()));
    }
    if let Some(r) = read::open(Path::new("."))? {
        return Ok(r);
    }
    let cfg = crate::config::Config::load(config).with_context(|| {
        "no Git repository here: run in a clone of the followed repository, pass --repo, or give --config"
    })?;
    let source = crate::source::GitSource::new(&cfg.source, &cfg.base_dir, &cfg.state_dir());
    read::open(source.cache_dir())?.with_context(|| {
        format!(
            "{}: not fetched yet (run gitcanary sync first)",
            source.cache_dir().display()
        )
    })
}

/// Fetches the notes from `origin` into a clone, fast-forward only; a failure is a
/// warning (the local notes are still shown).
fn fetch_notes(repo: &git2::Repository) {
    let Some(dir) = repo.workdir().or_else(|| Some(repo.path())) else {
        return;
    };
    if repo.find_remote("origin").is_err() {
        return;
    }
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "fetch",
            "--quiet",
            "origin",
            &format!("{NOTES_REF}:{NOTES_REF}"),
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let why = String::from_utf8_lossy(&o.stderr);
            // A remote without notes yet is no failure.
            if !why.contains("couldn't find remote ref") {
                eprintln!("warning: fetching {NOTES_REF} from origin: {}", why.trim());
            }
        }
        Err(e) => eprintln!("warning: fetching {NOTES_REF} from origin: git: {e}"),
    }
}

/// Runs `gitcanary history`.
pub fn history(args: &Args, config: &Path) -> anyhow::Result<ExitCode> {
    let repo = repository(args, config)?;
    if !args.no_fetch && !repo.is_bare() {
        fetch_notes(&repo);
    }
    if let Some(sha) = &args.commit {
        return show(&repo, sha, args.output);
    }
    let mut rows = read::rollouts(&repo)?;
    if let Some(c) = &args.canary {
        rows.retain(|r| &r.rollout.canary == c);
    }
    rows.truncate(args.limit.unwrap_or(usize::MAX));
    match args.output {
        Format::Table => {
            if rows.is_empty() {
                eprintln!("no rollouts recorded in {NOTES_REF}");
            } else {
                print!("{}", table(&rows));
            }
        }
        f => output::print_value(f, &Value::Array(rows.iter().map(item).collect())),
    }
    Ok(ExitCode::SUCCESS)
}

/// The table: time, canary, from → to, outcome, duration, max weight, commit,
/// subject.
pub fn table(rows: &[Recorded]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let o = &r.rollout;
            vec![
                rfc3339_secs(o.end),
                o.canary.clone(),
                format!("{} → {}", o.from, o.to),
                o.outcome.map(|o| o.to_string()).unwrap_or_default(),
                format_duration(o.duration()),
                format!("{}%", o.max_weight),
                r.commit.get(..12).unwrap_or(&r.commit).to_string(),
                r.subject.clone(),
            ]
        })
        .collect();
    output::table(
        &[
            "TIME",
            "CANARY",
            "FROM → TO",
            "OUTCOME",
            "DURATION",
            "MAX WEIGHT",
            "COMMIT",
            "SUBJECT",
        ],
        &cells,
    )
}

/// One rollout for `-o json|yaml`: the note's entry with its commit and subject.
fn item(r: &Recorded) -> Value {
    let mut v = serde_json::to_value(&r.rollout).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("commit".into(), r.commit.clone().into());
        o.insert("subject".into(), r.subject.clone().into());
        o.insert("durationSeconds".into(), r.rollout.duration().into());
    }
    v
}

/// `--commit SHA`: the note as written, or its entries as JSON/YAML.
fn show(repo: &git2::Repository, sha: &str, format: Format) -> anyhow::Result<ExitCode> {
    let Some((oid, text)) = read::note_of(repo, sha)? else {
        anyhow::bail!("no {NOTES_REF} note on {sha}");
    };
    match format {
        Format::Table => print!("{text}"),
        f => {
            let note = crate::history::Note::parse(&text);
            let entries: Vec<Value> = note.entries.iter().map(|e| e.to_value()).collect();
            let v = serde_json::json!({"commit": oid.to_string(), "entries": entries});
            output::print_value(f, &v)
        }
    }
    Ok(ExitCode::SUCCESS)
}
