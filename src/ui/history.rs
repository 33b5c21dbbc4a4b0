//! The rollout history the UI's history page shows: the notes under
//! `refs/notes/gitcanary` in the source's fetched repository, one per recorded
//! rollout, so the page works from Git alone. A note is a JSON object (outcome, canary,
//! from, to, start, end, samples); notes that are not JSON objects are skipped, so a
//! stray note cannot break the page. No notes (nothing recorded yet) is an empty list.

use serde_json::Value;
use std::path::Path;

/// The notes ref rollouts are recorded under.
pub const NOTES_REF: &str = "refs/notes/gitcanary";

/// What reading the notes can fail on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The repository or a note could not be read.
    #[error("{repo}: {NOTES_REF}: {message}")]
    Git {
        /// The repository.
        repo: String,
        /// What git said.
        message: String,
    },
}

/// Parses one note: the JSON object, with the commit it annotates as `commit`.
pub fn parse_note(commit: &str, text: &str) -> Option<Value> {
    let mut v: Value = serde_json::from_str(text).ok()?;
    let obj = v.as_object_mut()?;
    obj.insert("commit".into(), commit.into());
    if let (Some(s), Some(e)) = (
        obj.get("start").and_then(Value::as_f64),
        obj.get("end").and_then(Value::as_f64),
    ) {
        obj.entry("durationSeconds")
            .or_insert((e - s).max(0.0).into());
    }
    Some(v)
}

/// Every rollout note in `repo` (a bare repository), newest first by `end` time.
pub fn read(repo: &Path) -> Result<Vec<Value>, Error> {
    let err = |e: git2::Error| Error::Git {
        repo: repo.display().to_string(),
        message: e.message().to_string(),
    };
    let r = match git2::Repository::open_bare(repo) {
        Ok(r) => r,
        // Nothing fetched yet: no history yet.
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(e)),
    };
    let notes = match r.notes(Some(NOTES_REF)) {
        Ok(n) => n,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(e)),
    };
    let mut out = Vec::new();
    for pair in notes {
        let (_, annotated) = pair.map_err(err)?;
        let note = r.find_note(Some(NOTES_REF), annotated).map_err(err)?;
        if let Some(v) = note
            .message()
            .ok()
            .and_then(|m| parse_note(&annotated.to_string(), m))
        {
            out.push(v);
        }
    }
    let end = |v: &Value| v["end"].as_f64().unwrap_or(0.0);
    out.sort_by(|a, b| end(b).total_cmp(&end(a)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_repository_or_no_notes_is_an_empty_history() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(&dir.path().join("absent")).unwrap().is_empty());
        git2::Repository::init_bare(dir.path().join("repo")).unwrap();
        assert!(read(&dir.path().join("repo")).unwrap().is_empty());
    }

    #[test]
    fn json_notes_are_listed_newest_first_and_others_skipped() {
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
            r#"{"canary":"test/podinfo","outcome":"Succeeded","from":"1.0","to":"1.1","start":10,"end":70}"#,
            r#"{"canary":"test/podinfo","outcome":"Failed","from":"1.1","to":"1.2","start":100,"end":130}"#,
            "not json",
        ];
        for (c, n) in commits.iter().zip(notes) {
            repo.note(&sig, &sig, Some(NOTES_REF), *c, n, false)
                .unwrap();
        }
        let h = read(dir.path()).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0]["outcome"], "Failed");
        assert_eq!(h[0]["durationSeconds"], 30.0);
        assert_eq!(h[0]["commit"], commits[1].to_string());
        assert_eq!(h[1]["to"], "1.1");
    }
}
