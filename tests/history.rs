//! The single Git writer against real bare remotes, read back with the git CLI: notes
//! from two independent writers (two processes' cache repositories) pushed at the same
//! time all land; an automation-style commit and another writer's commit racing on one
//! branch both land, with no force-push (the remote refuses non-fast-forwards) and no
//! lost commit; `gitcanary history` reads the notes from a clone with no state dir,
//! per-metric check summaries included.

mod common;
use common::*;
use gitcanary::history::note::{
    CheckSummary, Entry, MetricSummary, Note, Outcome, Rollout, Sample,
};
use gitcanary::history::writer::{CommitPlan, Retry, Writer};
use gitcanary::source::credentials::Credentials;
use gitcanary::source::GitSource;
use std::path::Path;
use std::time::Duration;

/// A remote with one commit on `main` that refuses any non-fast-forward update.
fn strict_remote() -> (Remote, String) {
    let remote = Remote::new();
    git(
        &remote.bare,
        &["config", "receive.denyNonFastForwards", "true"],
    );
    let head = remote
        .write(&[
            ("apps/app.yaml", "image: example.com/app:1.0.0\n"),
            ("apps/other.yaml", "n: 0\n"),
        ])
        .push("seed");
    (remote, head)
}

/// A writer with its own cache (as another gitcanary process would have), fetched.
fn writer(remote: &Remote, state: &Path) -> (GitSource, Writer) {
    let source = GitSource::with_credentials(
        &remote.bare.display().to_string(),
        "main",
        Credentials::None,
        state,
        state,
    );
    source.fetch().unwrap();
    let retry = Retry {
        base: Duration::from_millis(20),
        cap: Duration::from_millis(400),
        note_attempts: 40,
        commit_attempts: 40,
    };
    let w = Writer::start(
        source.clone(),
        ("gitcanary".into(), "gitcanary@localhost".into()),
        retry,
    )
    .unwrap();
    (source, w)
}

fn rollout(canary: &str, end: f64) -> Entry {
    Entry::Rollout(Box::new(Rollout {
        canary: canary.into(),
        outcome: Some(Outcome::Succeeded),
        reason: "Canary analysis completed successfully, promotion finished.".into(),
        from: "1.0.0".into(),
        to: "1.0.1".into(),
        max_weight: 50,
        start: end - 60.0,
        end,
        samples: vec![Sample::new(
            end - 30.0,
            "request-success-rate",
            Some(100.0),
            Some(99.0),
            None,
        )],
        metric_summary: vec![MetricSummary {
            metric: "request-success-rate".into(),
            checks: CheckSummary {
                count: 300,
                failures: 2,
                min: Some(97.5),
                max: Some(100.0),
                last: Some(100.0),
            },
        }],
        ..Default::default()
    }))
}

#[test]
fn two_writers_pushing_notes_at_once_lose_none_over_20_rollouts() {
    let (remote, head) = strict_remote();
    let states = tempfile::tempdir().unwrap();
    let (_, a) = writer(&remote, &states.path().join("a"));
    let (_, b) = writer(&remote, &states.path().join("b"));
    let threads: Vec<_> = [("a", a), ("b", b)]
        .into_iter()
        .map(|(name, w)| {
            let head = head.clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    let end = 1_000.0 + i as f64;
                    w.note(&head, vec![rollout(&format!("test/{name}"), end)])
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Read back with plain git, from the remote itself.
    let text = git(&remote.bare, &["notes", "--ref=gitcanary", "show", &head]);
    let note = Note::parse(&text);
    for name in ["a", "b"] {
        let ends: Vec<f64> = note
            .rollouts()
            .filter(|r| r.canary == format!("test/{name}"))
            .map(|r| r.end)
            .collect();
        let want: Vec<f64> = (0..20).map(|i| 1_000.0 + i as f64).collect();
        assert_eq!(ends, want, "writer {name}'s rollouts");
    }
    assert_eq!(text.matches("```json").count(), 1, "one JSON block");
    assert_eq!(text.matches("gitcanary rollout test/").count(), 40);
    // `git log --notes=gitcanary` shows them in a clone that fetched the notes.
    remote.fetch_notes();
    let log = git(&remote.work, &["log", "--notes=gitcanary", "-1", &head]);
    assert!(
        log.contains("Notes (gitcanary):")
            && log.contains("request-success-rate  100  (threshold >= 99)  pass")
            && log.contains(
                "request-success-rate: 300 checks, 2 failed, min 97.50, max 100, last 100"
            ),
        "{log}"
    );
}

/// What image automation does on every attempt: set the tag on the current head.
fn set_tag(source: &GitSource, head: &str, tag: &str) -> Result<Option<CommitPlan>, String> {
    use gitcanary::manifest::snapshot::Snapshot;
    let snap = source.snapshot(head).map_err(|e| e.to_string())?;
    let text = String::from_utf8(snap.read("apps/app.yaml").unwrap()).unwrap();
    let new = format!("image: example.com/app:{tag}\n");
    if text == new {
        return Ok(None);
    }
    Ok(Some(CommitPlan {
        files: vec![("apps/app.yaml".into(), new.into_bytes())],
        message: format!("Update example.com/app to {tag}"),
        author: ("gitcanary".into(), "gitcanary@localhost".into()),
        branch: None,
    }))
}

#[test]
fn automation_and_another_commit_racing_on_one_branch_both_land() {
    let (remote, _) = strict_remote();
    let states = tempfile::tempdir().unwrap();
    let (sa, a) = writer(&remote, &states.path().join("a"));
    let (sb, b) = writer(&remote, &states.path().join("b"));
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let b1 = barrier.clone();
    let automation = std::thread::spawn(move || {
        let mut pushed = Vec::new();
        for i in 1..=5 {
            b1.wait();
            let tag = format!("1.0.{i}");
            let head = sa.fetch().unwrap().commit;
            let p = a
                .commit(&head, 0, |h| set_tag(&sa, h, &tag))
                .unwrap()
                .unwrap();
            pushed.push(p.commit);
        }
        pushed
    });
    let other = std::thread::spawn(move || {
        let mut pushed = Vec::new();
        for i in 1..=5 {
            barrier.wait();
            let head = sb.fetch().unwrap().commit;
            let plan = |_: &str| -> Result<_, String> {
                Ok(Some(CommitPlan {
                    files: vec![("apps/other.yaml".into(), format!("n: {i}\n").into_bytes())],
                    message: format!("Rollback other to {i}\n\nGitcanary-Failed-Commit: {head}"),
                    author: ("gitcanary".into(), "gitcanary@localhost".into()),
                    branch: None,
                }))
            };
            pushed.push(b.commit(&head, 0, plan).unwrap().unwrap().commit);
        }
        pushed
    });
    let mut all = automation.join().unwrap();
    all.extend(other.join().unwrap());
    // Every pushed commit is on the remote branch: nothing was lost or overwritten.
    let log = git(&remote.bare, &["log", "--format=%H %s", "main"]);
    for c in &all {
        assert!(log.contains(c.as_str()), "{c} lost from\n{log}");
    }
    assert_eq!(log.lines().count(), 11, "{log}");
    // Each side's last value is what the branch holds.
    git(&remote.work, &["pull", "-q", "origin", "main"]);
    assert_eq!(
        std::fs::read_to_string(remote.work.join("apps/app.yaml")).unwrap(),
        "image: example.com/app:1.0.5\n"
    );
    assert_eq!(
        std::fs::read_to_string(remote.work.join("apps/other.yaml")).unwrap(),
        "n: 5\n"
    );
    assert!(log.contains("Rollback other to 5"));
}

#[test]
fn history_lists_rollouts_from_a_fresh_clone_with_no_state_dir() {
    let (remote, head) = strict_remote();
    let states = tempfile::tempdir().unwrap();
    let (_, w) = writer(&remote, &states.path().join("a"));
    w.note(&head, vec![rollout("test/podinfo", 1_700_000_000.0)])
        .unwrap();
    w.note(&head, vec![rollout("test/other", 1_700_000_100.0)])
        .unwrap();
    drop(w);
    let clone = tempfile::tempdir().unwrap();
    git(
        clone.path(),
        &["clone", "-q", remote.bare.to_str().unwrap(), "c"],
    );
    let dir = clone.path().join("c");
    let run = |args: &[&str]| {
        stdout_of(
            std::process::Command::new(bin())
                .args(args)
                .arg("--config")
                .arg(dir.join("absent.yaml"))
                .current_dir(&dir)
                .output()
                .unwrap(),
        )
    };
    let table = run(&["history"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("TIME")
            && lines[0].contains("FROM → TO")
            && lines[0].contains("MAX WEIGHT"),
        "{table}"
    );
    assert!(
        lines[1].contains("test/other") && lines[2].contains("test/podinfo"),
        "newest first:\n{table}"
    );
    assert!(
        lines[2].contains("1.0.0 → 1.0.1")
            && lines[2].contains("Succeeded")
            && lines[2].contains("1m")
            && lines[2].contains("50%")
            && lines[2].contains(&head[..12])
            && lines[2].contains("seed"),
        "{table}"
    );
    let one: serde_json::Value =
        serde_json::from_str(&run(&["history", "test/podinfo", "-o", "json"])).unwrap();
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["commit"], head.as_str());
    assert_eq!(one[0]["samples"][0]["metric"], "request-success-rate");
    // Every check of the analysis, past the samples the note keeps.
    assert_eq!(
        one[0]["metricSummary"],
        serde_json::json!([{"metric": "request-success-rate", "count": 300, "failures": 2,
                            "min": 97.5, "max": 100.0, "last": 100.0}])
    );
    assert_eq!(run(&["history", "--limit", "1"]).lines().count(), 2);
    let full = run(&["history", "--commit", &head[..10]]);
    assert!(
        full.starts_with("gitcanary rollout test/podinfo: Succeeded") && full.contains("```json"),
        "{full}"
    );
    assert!(!dir.join("state").exists() && !dir.join(".gitcanary").exists());
}
