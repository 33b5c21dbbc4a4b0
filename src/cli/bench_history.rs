//! `gitcanary bench history`: Git as the rollout record, measured. Each section sets
//! up its own repositories in a temporary folder, measures, and adds its lines to the
//! report; a new measurement is one more section in [`run`]:
//! - `gitcanary history` (the real binary, process start included) over 1,000 notes;
//! - writing and pushing one note through the Git writer to a `file://` remote;
//! - push-to-applied latency through the push webhook and the local watch
//!   (`super::bench_latency`).

use crate::history::note::{
    CheckSummary, Entry, MetricSummary, NoteEvent, Outcome, Rollout, Sample, WebhookResult,
};
use crate::history::writer::{Retry, Writer};
use crate::history::NOTES_REF;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `gitcanary bench history` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Rollout notes `gitcanary history` lists.
    #[arg(long, default_value_t = 1_000)]
    pub notes: usize,
    /// Notes written and pushed one by one.
    #[arg(long, default_value_t = 30)]
    pub pushes: usize,
    /// Pushes timed from push to applied, per way (webhook, local watch); 0 skips them.
    #[arg(long, default_value_t = 50)]
    pub latency_pushes: usize,
}

/// The measurements of one run, against their targets.
#[derive(Default)]
pub struct Report {
    lines: Vec<(String, f64, f64)>,
}

impl Report {
    /// Adds a measurement in milliseconds against a target (`< target_ms`).
    pub fn add(&mut self, what: impl Into<String>, ms: f64, target_ms: f64) {
        self.lines.push((what.into(), ms, target_ms));
    }

    fn print(&self) -> ExitCode {
        println!("gitcanary bench history");
        for (what, ms, target) in &self.lines {
            println!("  {what:<52} {ms:>9.1} ms   (target < {target} ms)");
        }
        super::bench::verdict(self.lines.iter().all(|(_, ms, t)| ms < t))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// Runs every section and prints the figures against the targets.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("gitcanary-bench-history-{}", std::process::id()));
    let mut report = Report::default();
    let result = listing(&dir.join("listing"), args.notes, &mut report)
        .and_then(|()| note_push(&dir.join("push"), args.pushes, &mut report))
        .and_then(|()| {
            super::bench_latency::section(&dir.join("latency"), args.latency_pushes, &mut report)
        });
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    Ok(report.print())
}

/// A rollout as a 10-step analysis leaves it: two metrics checked at each step, the
/// load-test webhook, and its events.
pub fn sample_rollout(i: usize, end: f64) -> Rollout {
    let start = end - 600.0;
    let steps = 10;
    Rollout {
        canary: format!("apps/app-{}", i % 50),
        outcome: Some(if i.is_multiple_of(7) {
            Outcome::Failed
        } else {
            Outcome::Succeeded
        }),
        reason: "Canary analysis completed successfully, promotion finished.".into(),
        from: format!("1.0.{i}"),
        to: format!("1.0.{}", i + 1),
        images: Vec::new(),
        from_revision: "a".repeat(64),
        to_revision: "b".repeat(64),
        max_weight: 50,
        failed_checks: 0,
        start,
        end,
        samples: (0..steps)
            .flat_map(|s| {
                let t = start + 60.0 * s as f64;
                [
                    Sample::new(t, "request-success-rate", Some(99.5), Some(99.0), None),
                    Sample::new(t, "request-duration", Some(120.0), None, Some(500.0)),
                ]
            })
            .collect(),
        metric_summary: [("request-success-rate", 99.5), ("request-duration", 120.0)]
            .map(|(metric, v)| MetricSummary {
                metric: metric.into(),
                checks: CheckSummary {
                    count: steps as u64,
                    failures: 0,
                    min: Some(v),
                    max: Some(v),
                    last: Some(v),
                },
            })
            .into(),
        weights: (0..5)
            .map(|s| (start + 60.0 * s as f64, 10 * (s + 1)))
            .collect(),
        webhooks: vec![WebhookResult {
            name: "load-test".into(),
            kind: "rollout".into(),
            calls: steps,
            failures: 0,
            status: "ok".into(),
            message: String::new(),
        }],
        events: (0..12)
            .map(|e| NoteEvent {
                time: start + 50.0 * e as f64,
                severity: "info".into(),
                message: format!("Advance apps/app-{} canary weight {}", i % 50, 10 * e),
            })
            .collect(),
        extra: Default::default(),
    }
}

/// A bare repository with `commits` commits on `main`; their ids, oldest first.
fn repo_with_commits(
    path: &Path,
    commits: usize,
) -> anyhow::Result<(git2::Repository, Vec<git2::Oid>)> {
    let repo = git2::Repository::init_bare(path)?;
    let sig = git2::Signature::now("bench", "bench@localhost")?;
    let mut ids = Vec::with_capacity(commits);
    for i in 0..commits {
        let blob = repo.blob(format!("image: example.com/app:1.0.{i}\n").as_bytes())?;
        let mut tb = repo.treebuilder(None)?;
        tb.insert("app.yaml", blob, 0o100644)?;
        let tree = repo.find_tree(tb.write()?)?;
        let parents: Vec<git2::Commit> = ids
            .last()
            .map(|p| repo.find_commit(*p))
            .transpose()?
            .into_iter()
            .collect();
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        ids.push(repo.commit(None, &sig, &sig, &format!("app 1.0.{i}"), &tree, &parents)?);
    }
    if let Some(last) = ids.last() {
        repo.reference("refs/heads/main", *last, true, "bench")?;
    }
    Ok((repo, ids))
}

/// `gitcanary history` over `n` notes, one per commit: the median of 5 runs of the
/// binary, process start included.
fn listing(dir: &Path, n: usize, report: &mut Report) -> anyhow::Result<()> {
    let (repo, ids) = repo_with_commits(&dir.join("repo.git"), n)?;
    // One notes tree written at once: 1,000 `git notes add` would take minutes.
    let mut tb = repo.treebuilder(None)?;
    for (i, id) in ids.iter().enumerate() {
        let mut note = crate::history::Note::default();
        note.merge([Entry::Rollout(Box::new(sample_rollout(
            i,
            1.7e9 + i as f64 * 900.0,
        )))]);
        let blob = repo.blob(note.render().as_bytes())?;
        tb.insert(id.to_string(), blob, 0o100644)?;
    }
    let tree = repo.find_tree(tb.write()?)?;
    let sig = git2::Signature::now("bench", "bench@localhost")?;
    let notes = repo.commit(None, &sig, &sig, "Notes added by bench", &tree, &[])?;
    repo.reference(NOTES_REF, notes, true, "bench")?;
    let exe = std::env::current_exe()?;
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let out = std::process::Command::new(&exe)
            .args(["history", "--repo"])
            .arg(repo.path())
            .output()?;
        times.push(t.elapsed());
        anyhow::ensure!(
            out.status.success(),
            "gitcanary history: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows = out.stdout.iter().filter(|b| **b == b'\n').count();
        anyhow::ensure!(
            rows == n + 1,
            "gitcanary history listed {} of {n} rollouts",
            rows.saturating_sub(1)
        );
    }
    times.sort();
    report.add(
        format!("gitcanary history over {n} notes (median of 5)"),
        ms(times[2]),
        300.0,
    );
    Ok(())
}

/// Writing and pushing one note through the Git writer to a `file://` remote that
/// already holds notes: the median and p90 over `n` notes, each on its own commit.
fn note_push(dir: &Path, n: usize, report: &mut Report) -> anyhow::Result<()> {
    let bare = dir.join("remote.git");
    let (_, ids) = repo_with_commits(&bare, n.max(1))?;
    let url = format!("file://{}", bare.display());
    let state = dir.join("state");
    let source = crate::source::GitSource::with_credentials(
        &url,
        "main",
        crate::source::credentials::Credentials::None,
        dir,
        &state,
    );
    source.fetch()?;
    let writer = Writer::start(
        source,
        ("bench".into(), "bench@localhost".into()),
        Retry::default(),
    )?;
    let mut times = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let entry = Entry::Rollout(Box::new(sample_rollout(i, 1.7e9 + i as f64)));
        let t = Instant::now();
        writer.note(&id.to_string(), vec![entry])?;
        times.push(t.elapsed());
    }
    let remote = git2::Repository::open_bare(&bare)?;
    let pushed = remote.notes(Some(NOTES_REF))?.count();
    anyhow::ensure!(
        pushed == ids.len(),
        "the remote holds {pushed} of {} notes",
        ids.len()
    );
    times.sort();
    report.add(
        format!("write and push one note to file:// (median of {n})"),
        ms(percentile(&times, 0.5)),
        50.0,
    );
    report.add(
        format!("write and push one note to file:// (p90 of {n})"),
        ms(percentile(&times, 0.9)),
        50.0,
    );
    Ok(())
}
