//! The single Git writer: one thread owns every write from this process to the
//! followed remote (image automation's commits, rollback commits, rollout notes), so
//! no two kinds of write race on refs or on the remote. Every push is fast-forward
//! only, never forced. A rejected commit is handed back with the remote's new head for
//! its submitter to plan again; a rejected notes push fetches the remote notes, merges
//! them as a union of entries (see [`super::plan`]) and pushes again, with backoff.
//! Planning (what to write) stays with the submitter and in [`super::plan`]; this file
//! only acts.

use super::note::Entry;
use super::{plan, Error, Result, NOTES_REF};
use crate::source::git::{GitSource, PushOutcome};
use git2::{Oid, Repository};
use std::sync::mpsc;
use std::time::Duration;

/// A commit to make on top of a head: the files to write, the message, the author.
#[derive(Clone, Debug, Default)]
pub struct CommitPlan {
    /// Files to write (path in the repository, full new content).
    pub files: Vec<(String, Vec<u8>)>,
    /// The commit message (trailers included).
    pub message: String,
    /// Author name and email.
    pub author: (String, String),
    /// The branch to push to; the followed branch when `None`.
    pub branch: Option<String>,
}

/// A commit that reached the remote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// The commit.
    pub commit: String,
    /// The branch it was pushed to.
    pub branch: String,
    /// Attempts it took.
    pub attempts: u32,
}

/// Why a commit was not pushed: its plan failed, or Git did.
#[derive(Debug)]
pub enum CommitError<E> {
    /// The submitter's planning failed.
    Plan(E),
    /// The writer failed (or the push kept being rejected).
    Writer(Error),
}

/// How one commit attempt ended.
enum Attempt {
    Pushed(String),
    /// The remote moved; the new head of the followed branch.
    Moved {
        head: String,
        message: String,
    },
}

enum Job {
    Commit {
        parent: String,
        plan: CommitPlan,
        reply: mpsc::Sender<Result<Attempt>>,
    },
    Note {
        /// Candidates: the note goes on the newest.
        commits: Vec<String>,
        entries: Vec<Entry>,
        reply: Option<mpsc::Sender<Result<()>>>,
    },
}

/// A handle to the writer thread; clones share it. The thread ends when the last
/// handle is dropped, after the jobs already submitted.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
    branch: String,
    retry: Retry,
}

/// Retry settings of the writer.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// Attempts at a commit before giving up.
    pub commit_attempts: u32,
    /// Attempts at a notes push before giving up.
    pub note_attempts: u32,
    /// The first wait after a rejection.
    pub base: Duration,
    /// The longest wait.
    pub cap: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            commit_attempts: 5,
            note_attempts: 12,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(5),
        }
    }
}

impl Writer {
    /// Starts the writer thread for `source`'s cache repository; notes are signed by
    /// `author` (name, email).
    pub fn start(source: GitSource, author: (String, String), retry: Retry) -> Result<Writer> {
        let (tx, rx) = mpsc::channel::<Job>();
        let branch = source.branch().to_string();
        let actor = Actor {
            source,
            author,
            retry,
        };
        std::thread::Builder::new()
            .name("git-writer".into())
            .spawn(move || actor.run(rx))
            .map_err(|e| Error::Git {
                repo: String::new(),
                message: format!("cannot start the Git writer thread: {e}"),
            })?;
        Ok(Writer { tx, branch, retry })
    }

    /// Commits what `plan` decides on top of `head` and pushes it. When the remote
    /// moved, the writer fetches and `plan` runs again on the new head, after a
    /// backoff, up to `attempts` times (the writer's `commit_attempts` when 0). `plan` answering `None` (nothing to change
    /// on this head, e.g. the remote already has the values) pushes nothing.
    /// Blocking; `plan` runs on the caller's thread.
    pub fn commit<E>(
        &self,
        head: &str,
        attempts: u32,
        mut plan: impl FnMut(&str) -> Result<Option<CommitPlan>, E>,
    ) -> Result<Option<Pushed>, CommitError<E>> {
        let mut head = head.to_string();
        let attempts = if attempts == 0 {
            self.retry.commit_attempts.max(1)
        } else {
            attempts
        };
        for attempt in 1.. {
            let Some(p) = plan(&head).map_err(CommitError::Plan)? else {
                return Ok(None);
            };
            let branch = p.branch.clone().unwrap_or_else(|| self.branch.clone());
            let (reply, rx) = mpsc::channel();
            self.send(Job::Commit {
                parent: head.clone(),
                plan: p,
                reply,
            })
            .map_err(CommitError::Writer)?;
            match rx.recv().map_err(|_| Error::Stopped) {
                Ok(Ok(Attempt::Pushed(commit))) => {
                    return Ok(Some(Pushed {
                        commit,
                        branch,
                        attempts: attempt,
                    }))
                }
                Ok(Ok(Attempt::Moved { message, .. })) if attempt >= attempts => {
                    return Err(CommitError::Writer(Error::Rejected {
                        target: branch,
                        attempts: attempt,
                        message,
                    }))
                }
                Ok(Ok(Attempt::Moved { head: new, message })) => {
                    tracing::info!(
                        attempt,
                        "push rejected ({message}); fetched, planning again on the new head"
                    );
                    let (base, cap) = (self.retry.base, self.retry.cap);
                    std::thread::sleep(plan::backoff(attempt, base, cap, jitter()));
                    head = new;
                }
                Ok(Err(e)) | Err(e) => return Err(CommitError::Writer(e)),
            }
        }
        unreachable!("the loop returns")
    }

    /// Adds `entries` to the note of `commit` and pushes the notes; blocking until
    /// they reached the remote.
    pub fn note(&self, commit: &str, entries: Vec<Entry>) -> Result<()> {
        let (reply, rx) = mpsc::channel();
        self.send(Job::Note {
            commits: vec![commit.to_string()],
            entries,
            reply: Some(reply),
        })?;
        rx.recv().map_err(|_| Error::Stopped)?
    }

    /// Like [`Writer::note`], on the newest of `commits` (one that descends from all
    /// the others), without waiting: a failure is logged.
    pub fn submit_note(&self, commits: &[String], entries: Vec<Entry>) {
        let job = Job::Note {
            commits: commits.to_vec(),
            entries,
            reply: None,
        };
        if self.send(job).is_err() {
            tracing::error!(?commits, "the Git writer stopped; a rollout note is lost");
        }
    }

    fn send(&self, job: Job) -> Result<()> {
        self.tx.send(job).map_err(|_| Error::Stopped)
    }
}

/// The commit of `commits` that descends from all the others (the first when none
/// does, or when they are not in `repo`): the one that introduced a revision made of
/// objects the others applied.
pub fn newest(repo: &Repository, commits: &[String]) -> String {
    let first = commits.first().cloned().unwrap_or_default();
    let oids: Vec<Oid> = commits
        .iter()
        .filter_map(|c| Oid::from_str(c).ok())
        .collect();
    oids.iter()
        .find(|a| {
            oids.iter()
                .all(|b| a == &b || repo.graph_descendant_of(**a, *b).unwrap_or(false))
        })
        .map(Oid::to_string)
        .unwrap_or(first)
}

/// A number that differs between processes and calls, to spread retries.
fn jitter() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// Where the remote's notes are fetched to before a merge.
const REMOTE_NOTES: &str = "refs/gitcanary/notes-remote";
/// Where a merge of notes is built.
const MERGE_NOTES: &str = "refs/gitcanary/notes-merge";

struct Actor {
    source: GitSource,
    author: (String, String),
    retry: Retry,
}

impl Actor {
    fn run(self, rx: mpsc::Receiver<Job>) {
        for job in rx {
            match job {
                Job::Commit {
                    parent,
                    plan,
                    reply,
                } => {
                    let _ = reply.send(self.commit(&parent, &plan));
                }
                Job::Note {
                    commits,
                    entries,
                    reply,
                } => {
                    let commit = self.newest(&commits);
                    let result = self.note(&commit, &entries);
                    match reply {
                        Some(reply) => {
                            let _ = reply.send(result);
                        }
                        None => {
                            if let Err(e) = result {
                                tracing::error!(commit = %commit, "rollout note not pushed: {e}");
                            }
                        }
                    }
                }
            }
        }
    }

    fn newest(&self, commits: &[String]) -> String {
        match self.repo() {
            Ok(repo) => newest(&repo, commits),
            Err(_) => commits.first().cloned().unwrap_or_default(),
        }
    }

    fn repo(&self) -> Result<Repository> {
        Repository::open_bare(self.source.cache_dir()).map_err(|e| self.git_err(e))
    }

    fn git_err(&self, e: git2::Error) -> Error {
        Error::Git {
            repo: self.source.display_url(),
            message: e.message().to_string(),
        }
    }

    fn commit(&self, parent: &str, plan: &CommitPlan) -> Result<Attempt> {
        let author = (plan.author.0.as_str(), plan.author.1.as_str());
        let commit = self
            .source
            .commit_files(parent, &plan.files, &plan.message, author)?;
        let branch = plan.branch.as_deref().unwrap_or(self.source.branch());
        match self.source.push(&commit, branch)? {
            PushOutcome::Pushed => Ok(Attempt::Pushed(commit)),
            PushOutcome::Rejected(message) => Ok(Attempt::Moved {
                head: self.fetch_head()?,
                message,
            }),
        }
    }

    /// Fetches the followed branch into the writer's own ref (the sync's fetch
    /// updates the tracking ref and may hold its lock right now); its head.
    fn fetch_head(&self) -> Result<String> {
        let b = self.source.branch();
        let own = format!("refs/gitcanary/writer/{b}");
        self.source
            .fetch_into(&[&format!("+refs/heads/{b}:{own}")])?;
        let repo = self.repo()?;
        let oid = repo.refname_to_id(&own).map_err(|e| self.git_err(e))?;
        Ok(oid.to_string())
    }

    /// Adds the entries to the local notes ref, then pushes it; on a rejection,
    /// fetches the remote's notes, merges them in and pushes again.
    fn note(&self, commit: &str, entries: &[Entry]) -> Result<()> {
        let repo = self.repo()?;
        let oid = Oid::from_str(commit).map_err(|e| self.git_err(e))?;
        self.add_entries(&repo, NOTES_REF, oid, entries)?;
        let mut last = String::new();
        for attempt in 1..=self.retry.note_attempts.max(1) {
            let tip = repo.refname_to_id(NOTES_REF).map_err(|e| self.git_err(e))?;
            match self.source.push_ref(&tip.to_string(), NOTES_REF)? {
                PushOutcome::Pushed => return Ok(()),
                PushOutcome::Rejected(message) => last = message,
            }
            if attempt > 1 {
                std::thread::sleep(plan::backoff(
                    attempt - 1,
                    self.retry.base / 4,
                    self.retry.cap,
                    jitter(),
                ));
            }
            self.source
                .fetch_into(&[&format!("+{NOTES_REF}:{REMOTE_NOTES}")])?;
            self.merge_remote(&repo)?;
        }
        Err(Error::Rejected {
            target: NOTES_REF.into(),
            attempts: self.retry.note_attempts.max(1),
            message: last,
        })
    }

    fn signature(&self) -> Result<git2::Signature<'static>> {
        git2::Signature::now(&self.author.0, &self.author.1).map_err(|e| self.git_err(e))
    }

    fn add_entries(
        &self,
        repo: &Repository,
        notes_ref: &str,
        oid: Oid,
        entries: &[Entry],
    ) -> Result<()> {
        let current = note_text(repo, notes_ref, oid);
        if let Some(text) = plan::add_entries(current.as_deref(), entries) {
            let sig = self.signature()?;
            repo.note(&sig, &sig, Some(notes_ref), oid, &text, true)
                .map_err(|e| self.git_err(e))?;
        }
        Ok(())
    }

    /// Makes the local notes a descendant of the remote's, holding the union of both:
    /// the remote's notes, with each of ours that differs merged into its note.
    fn merge_remote(&self, repo: &Repository) -> Result<()> {
        let Ok(theirs) = repo.refname_to_id(REMOTE_NOTES) else {
            return Ok(()); // the remote has no notes yet
        };
        let ours = repo.refname_to_id(NOTES_REF).map_err(|e| self.git_err(e))?;
        if ours == theirs || repo.graph_descendant_of(ours, theirs).unwrap_or(false) {
            return Ok(());
        }
        let remote: std::collections::HashMap<Oid, Oid> = notes_of(repo, REMOTE_NOTES)
            .map_err(|e| self.git_err(e))?
            .into_iter()
            .map(|(blob, annotated)| (annotated, blob))
            .collect();
        repo.reference(MERGE_NOTES, theirs, true, "gitcanary notes merge")
            .map_err(|e| self.git_err(e))?;
        let sig = self.signature()?;
        for (blob, annotated) in notes_of(repo, NOTES_REF).map_err(|e| self.git_err(e))? {
            let merged = match remote.get(&annotated) {
                Some(b) if *b == blob => continue,
                Some(b) => plan::union(&blob_text(repo, blob), &blob_text(repo, *b)),
                None => blob_text(repo, blob),
            };
            repo.note(&sig, &sig, Some(MERGE_NOTES), annotated, &merged, true)
                .map_err(|e| self.git_err(e))?;
        }
        let merged = repo
            .refname_to_id(MERGE_NOTES)
            .map_err(|e| self.git_err(e))?;
        repo.reference(NOTES_REF, merged, true, "gitcanary notes merge")
            .map_err(|e| self.git_err(e))?;
        let _ = repo
            .find_reference(MERGE_NOTES)
            .and_then(|mut r| r.delete());
        Ok(())
    }
}

/// `(note blob, annotated object)` of every note under `notes_ref`.
fn notes_of(
    repo: &Repository,
    notes_ref: &str,
) -> std::result::Result<Vec<(Oid, Oid)>, git2::Error> {
    match repo.notes(Some(notes_ref)) {
        Ok(iter) => iter.collect(),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn blob_text(repo: &Repository, blob: Oid) -> String {
    repo.find_blob(blob)
        .map(|b| String::from_utf8_lossy(b.content()).into_owned())
        .unwrap_or_default()
}

/// The note of `oid` under `notes_ref`, if any.
pub fn note_text(repo: &Repository, notes_ref: &str, oid: Oid) -> Option<String> {
    let note = repo.find_note(Some(notes_ref), oid).ok()?;
    Some(String::from_utf8_lossy(note.message_bytes()).into_owned())
}
