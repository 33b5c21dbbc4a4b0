//! Reading the rollout notes back from a repository (a clone or gitcanary's cache),
//! with nothing but Git: for `gitcanary history` and the web UI's history page.

use super::note::{Note, Rollout};
use super::{Error, Result, NOTES_REF};
use git2::{Oid, Repository};
use std::path::Path;

/// One recorded rollout and the commit it is recorded on.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    /// The commit the note is on.
    pub commit: String,
    /// The commit's subject line (empty when the commit is not in the repository).
    pub subject: String,
    /// The rollout.
    pub rollout: Rollout,
}

fn git_err(repo: &Path) -> impl Fn(git2::Error) -> Error + '_ {
    move |e| Error::Git {
        repo: repo.display().to_string(),
        message: format!("{NOTES_REF}: {}", e.message()),
    }
}

/// Opens the repository at `path` (bare, or a work tree or one of its folders);
/// `None` when there is none.
pub fn open(path: &Path) -> Result<Option<Repository>> {
    match Repository::open_bare(path).or_else(|_| Repository::discover(path)) {
        Ok(r) => Ok(Some(r)),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(git_err(path)(e)),
    }
}

/// Every note under `refs/notes/gitcanary`: the annotated commit and its entries.
pub fn notes(repo: &Repository) -> Result<Vec<(Oid, Note)>> {
    notes_at(repo, NOTES_REF)
}

/// Every note under `notes_ref` (e.g. the remote's notes, fetched to another ref).
pub fn notes_at(repo: &Repository, notes_ref: &str) -> Result<Vec<(Oid, Note)>> {
    let err = git_err(repo.path());
    let iter = match repo.notes(Some(notes_ref)) {
        Ok(n) => n,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(e)),
    };
    let mut out = Vec::new();
    for pair in iter {
        let (blob, annotated) = pair.map_err(&err)?;
        let blob = repo.find_blob(blob).map_err(&err)?;
        let text = String::from_utf8_lossy(blob.content());
        out.push((annotated, Note::parse(&text)));
    }
    Ok(out)
}

/// The note of one commit (a full id, a short one, or any revision Git resolves).
pub fn note_of(repo: &Repository, rev: &str) -> Result<Option<(Oid, String)>> {
    let err = git_err(repo.path());
    let oid = match repo.revparse_single(rev) {
        Ok(o) => o.peel_to_commit().map(|c| c.id()).unwrap_or(o.id()),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Oid::from_str(rev).map_err(&err)?,
        Err(e) => return Err(err(e)),
    };
    Ok(super::writer::note_text(repo, NOTES_REF, oid).map(|t| (oid, t)))
}

/// Every recorded rollout, newest first (by the end of the analysis).
pub fn rollouts(repo: &Repository) -> Result<Vec<Recorded>> {
    let mut out = Vec::new();
    for (oid, note) in notes(repo)? {
        let subject = repo
            .find_commit(oid)
            .ok()
            .map(|c| {
                let message = String::from_utf8_lossy(c.message_bytes()).into_owned();
                message.lines().next().unwrap_or_default().to_string()
            })
            .unwrap_or_default();
        for e in note.entries {
            if let super::note::Entry::Rollout(r) = e {
                out.push(Recorded {
                    commit: oid.to_string(),
                    subject: subject.clone(),
                    rollout: *r,
                });
            }
        }
    }
    out.sort_by(|a, b| b.rollout.end.total_cmp(&a.rollout.end));
    Ok(out)
}
