//! The rollout history the UI's history page shows: the notes under
//! `refs/notes/gitcanary` in the source's fetched repository, one item per recorded
//! rollout, so the page works from Git alone. Notes are read with the note format's
//! own parser (`history::note`: the fenced JSON block); a note without a readable
//! block is skipped, so a stray note cannot break the page. No notes (nothing recorded
//! yet) is an empty list.

use crate::canary::samples::{self, Analysis, Series};
use crate::history::read::{self, Recorded};
use serde_json::Value;
use std::path::Path;

pub use crate::history::NOTES_REF;

/// What reading the notes can fail on.
pub type Error = crate::history::Error;

/// One rollout as the page shows it: the note's entry, with the commit it annotates
/// as `commit`, `durationSeconds`, and `samples` in the shape of the canary page's
/// charts.
pub fn item(r: &Recorded) -> Value {
    let mut v = serde_json::to_value(&r.rollout).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("commit".into(), r.commit.clone().into());
        obj.insert("subject".into(), r.subject.clone().into());
        obj.insert("durationSeconds".into(), r.rollout.duration().into());
        obj.insert(
            "samples".into(),
            serde_json::to_value(analysis(&r.rollout)).unwrap_or_default(),
        );
    }
    v
}

/// The rollout's samples and weights as one analysis of the charts.
fn analysis(r: &crate::history::Rollout) -> Analysis {
    let mut metrics: Vec<Series> = Vec::new();
    for s in &r.samples {
        let i = match metrics.iter().position(|m| m.name == s.metric) {
            Some(i) => i,
            None => {
                metrics.push(Series {
                    name: s.metric.clone(),
                    unit: samples::unit(&s.metric).into(),
                    ..Default::default()
                });
                metrics.len() - 1
            }
        };
        let series = &mut metrics[i];
        series.min = s.min;
        series.max = s.max;
        series.points.push((s.time, s.value));
        // The note's own verdict, so a check that failed on a query error shows red
        // even when its value is within the thresholds.
        if !s.pass {
            series.failed.push(s.time);
        }
    }
    for m in &r.metric_summary {
        if let Some(series) = metrics.iter_mut().find(|s| s.name == m.metric) {
            series.summary = m.checks.clone();
        }
    }
    Analysis {
        revision: r.to_revision.clone(),
        start: r.start,
        weights: r.weights.clone(),
        metrics,
    }
}

/// Every rollout note in `repo` (a bare repository), newest first by `end` time.
pub fn read(repo: &Path) -> Result<Vec<Value>, Error> {
    let Some(r) = read::open(repo)? else {
        // Nothing fetched yet: no history yet.
        return Ok(Vec::new());
    };
    Ok(read::rollouts(&r)?.iter().map(item).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::note::{Entry, Note, Outcome, Rollout, Sample};

    #[test]
    fn no_repository_or_no_notes_is_an_empty_history() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(&dir.path().join("absent")).unwrap().is_empty());
        git2::Repository::init_bare(dir.path().join("repo")).unwrap();
        assert!(read(&dir.path().join("repo")).unwrap().is_empty());
    }

    fn note(canary: &str, outcome: Outcome, from: &str, to: &str, start: f64, end: f64) -> String {
        let mut n = Note::default();
        n.merge([Entry::Rollout(Box::new(Rollout {
            canary: canary.into(),
            outcome: Some(outcome),
            from: from.into(),
            to: to.into(),
            start,
            end,
            samples: vec![Sample::new(
                start + 10.0,
                "request-success-rate",
                // A failed rollout's check had no data: it fails within any range.
                (outcome != Outcome::Failed).then_some(100.0),
                Some(99.0),
                None,
            )],
            ..Default::default()
        }))]);
        n.render()
    }

    #[test]
    fn notes_are_listed_newest_first_and_others_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let sig = git2::Signature::now("t", "t@localhost").unwrap();
        let tree = repo.treebuilder(None).unwrap().write().unwrap();
        let tree = repo.find_tree(tree).unwrap();
        let mut commits = Vec::new();
        for msg in ["one", "two", "three"] {
            let parents: Vec<git2::Commit> = commits
                .last()
                .map(|c| vec![repo.find_commit(*c).unwrap()])
                .unwrap_or_default();
            let refs: Vec<&git2::Commit> = parents.iter().collect();
            commits.push(repo.commit(None, &sig, &sig, msg, &tree, &refs).unwrap());
        }
        let notes = [
            note("test/podinfo", Outcome::Succeeded, "1.0", "1.1", 10.0, 70.0),
            note("test/podinfo", Outcome::Failed, "1.1", "1.2", 100.0, 130.0),
            "not a rollout note".to_string(),
        ];
        for (c, n) in commits.iter().zip(notes) {
            repo.note(&sig, &sig, Some(NOTES_REF), *c, &n, false)
                .unwrap();
        }
        let h = read(dir.path()).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0]["outcome"], "Failed");
        assert_eq!(h[0]["durationSeconds"], 30.0);
        assert_eq!(h[0]["commit"], commits[1].to_string());
        assert_eq!(h[0]["subject"], "two");
        assert_eq!(h[1]["to"], "1.1");
        let series = &h[1]["samples"]["metrics"][0];
        assert_eq!(series["name"], "request-success-rate");
        assert_eq!(series["points"][0], serde_json::json!([20.0, 100.0]));
        assert!(series.get("failed").is_none(), "{series}");
        let failed = &h[0]["samples"]["metrics"][0];
        assert_eq!(failed["failed"], serde_json::json!([110.0]), "{failed}");
    }
}
