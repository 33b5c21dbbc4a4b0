//! The engine's outcome sink in a running daemon. A failed rollout first rejects the
//! tags it moved to (at once, in `status/rejected-tags.json`, so the next automation
//! run skips them); then, off the engine's threads, the change is rolled back in Git
//! when asked, and the note (rollout, rollback, rejected tags) goes to the Git writer.
//! At start-up, [`rebuild_rejected`] reads the set back from the notes.

use super::run::{self, Done, Request};
use crate::history::note::{Entry, Outcome, Rollout, TagAction, TagRecord};
use crate::history::{OutcomeSink, Writer, NOTES_REF};
use crate::image::rejected::{self, Rejection};
use crate::notify::Event;
use crate::source::git::GitSource;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

/// Wraps the Git writer as the engine's outcome sink.
#[derive(Clone)]
pub struct Rollbacks {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    writer: Writer,
    source: GitSource,
    root: String,
    author: (String, String),
    global: bool,
    state_dir: PathBuf,
    notifier: crate::notify::Notifier,
}

impl Rollbacks {
    /// A sink writing through `writer` and reading `source`'s cache repository.
    pub fn new(writer: Writer, source: GitSource, cfg: &crate::config::Config) -> Rollbacks {
        Rollbacks {
            inner: Arc::new(Inner {
                writer,
                source,
                root: cfg.source.path.clone(),
                author: (cfg.git.author.name.clone(), cfg.git.author.email.clone()),
                global: cfg.history.revert_on_failure,
                state_dir: cfg.state_dir(),
                notifier: Default::default(),
            }),
        }
    }

    /// Reports rollbacks written and tags rejected to `notifier`.
    pub fn with_notifier(self, notifier: crate::notify::Notifier) -> Rollbacks {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|a| a.as_ref().clone());
        inner.notifier = notifier;
        Rollbacks {
            inner: Arc::new(inner),
        }
    }
}

/// The tags a failed rollout rejects: each container image it moved to.
pub fn rejections(r: &Rollout, commit: &str) -> Vec<Rejection> {
    let to: Vec<String> = r.images.iter().map(|i| i.to.clone()).collect();
    let from: Vec<String> = r.images.iter().map(|i| i.from.clone()).collect();
    rejected::from_failure(&r.canary, commit, &to, &from, r.end)
}

/// A rejection as a note entry.
fn tag_entry(r: &Rejection, reason: &str) -> Entry {
    Entry::Tag(TagRecord {
        action: TagAction::Rejected,
        image: r.image.clone(),
        tag: r.tag.clone(),
        time: r.at,
        canary: r.canary.clone(),
        reason: reason.to_string(),
        extra: Default::default(),
    })
}

/// `failed checks threshold reached 5`, from Flagger's `Rolling back podinfo.test
/// failed checks threshold reached 5`.
pub fn why(reason: &str, id: &str) -> String {
    let prefix = format!("Rolling back {id} ");
    reason.strip_prefix(&prefix).unwrap_or(reason).to_string()
}

impl OutcomeSink for Rollbacks {
    fn record(&self, revisions: &[String], entries: Vec<Entry>) {
        let failed = entries
            .iter()
            .any(|e| matches!(e, Entry::Rollout(r) if r.outcome == Some(Outcome::Failed)));
        if !failed {
            return self.inner.writer.record(revisions, entries);
        }
        let (inner, revisions) = (self.inner.clone(), revisions.to_vec());
        // Git work (finding the commit, the rollback) stays off the engine's threads.
        let spawned = std::thread::Builder::new()
            .name("rollback".into())
            .spawn(move || inner.failed(&revisions, entries));
        if let Err(e) = spawned {
            tracing::error!("cannot start the rollback: {e}");
        }
    }
}

impl Inner {
    fn failed(&self, revisions: &[String], mut entries: Vec<Entry>) {
        let commit = match git2::Repository::open_bare(self.source.cache_dir()) {
            Ok(repo) => crate::history::writer::newest(&repo, revisions),
            Err(_) => revisions.first().cloned().unwrap_or_default(),
        };
        let mut tags = Vec::new();
        for e in &mut entries {
            let Entry::Rollout(r) = e else { continue };
            let (ns, name) = r.canary.split_once('/').unwrap_or(("", &r.canary));
            let id = format!("{name}.{ns}");
            let reason = why(&r.reason, &id);
            let rejected = rejections(r, &commit);
            if let Err(e) = rejected::record(
                &self.state_dir,
                rejected.iter().cloned().map(rejected::Entry::Rejected),
            ) {
                tracing::error!("cannot record rejected tags: {e}");
            }
            for t in &rejected {
                tracing::warn!(canary = %id, "image automation will not select {}:{} again", t.image, t.tag);
                tags.push(tag_entry(t, &reason));
                self.notifier.event(Event::TagRejected {
                    canary: id.clone(),
                    image: t.image.clone(),
                    tag: t.tag.clone(),
                });
            }
            let req = Request {
                namespace: ns.to_string(),
                name: name.to_string(),
                failed_commit: commit.clone(),
                reason,
            };
            self.roll_back(&req, r);
        }
        entries.extend(tags);
        if let Err(e) = self.writer.note(&commit, entries) {
            tracing::error!(commit = %commit, "rollout note not pushed: {e}");
        }
    }

    /// Rolls `req` back when asked, and says how in the rollout's note.
    fn roll_back(&self, req: &Request, r: &mut Rollout) {
        let head = self
            .source
            .cached_head()
            .unwrap_or_else(|| req.failed_commit.clone());
        let (root, author) = (&self.root, self.author.clone());
        let done = run::revert(
            &self.source,
            &self.writer,
            root,
            author,
            self.global,
            &head,
            req,
        );
        let summary = match done {
            Ok(Done::Disabled) => return,
            Ok(d) => {
                if let Done::Pushed { commit, to, .. } = &d {
                    tracing::warn!(commit = %commit, "Rollback {}.{} written to Git", req.name, req.namespace);
                    self.notifier.event(Event::RollbackWritten {
                        canary: format!("{}.{}", req.name, req.namespace),
                        to: to.clone(),
                        commit: commit.clone(),
                        reason: req.reason.clone(),
                    });
                    r.extra
                        .insert("rollbackCommit".into(), Value::String(commit.clone()));
                } else {
                    tracing::warn!(
                        "rollback of {}.{}: {}",
                        req.name,
                        req.namespace,
                        d.summary()
                    );
                }
                d.summary()
            }
            Err(e) => {
                tracing::error!("{e}");
                format!("failed: {e}")
            }
        };
        r.extra.insert("rollback".into(), Value::String(summary));
    }
}

/// Rebuilds `status/rejected-tags.json` from the notes, the remote's and this
/// repository's own, so a lost state dir forgets no rejection. Blocking.
pub fn rebuild_rejected(source: &GitSource, state_dir: &std::path::Path) -> Result<usize, String> {
    const FETCHED: &str = "refs/gitcanary/notes-start";
    source.fetch().map_err(|e| e.to_string())?;
    source
        .fetch_into(&[&format!("+{NOTES_REF}:{FETCHED}")])
        .map_err(|e| e.to_string())?;
    let repo =
        git2::Repository::open_bare(source.cache_dir()).map_err(|e| e.message().to_string())?;
    let mut entries = Vec::new();
    for notes_ref in [NOTES_REF, FETCHED] {
        let notes = crate::history::read::notes_at(&repo, notes_ref).map_err(|e| e.to_string())?;
        for (_, note) in notes {
            entries.extend(note.entries.into_iter().filter_map(|e| match e {
                Entry::Tag(t) => Some(match t.action {
                    TagAction::Rejected => rejected::Entry::Rejected(Rejection {
                        image: t.image,
                        tag: t.tag,
                        canary: t.canary,
                        commit: String::new(),
                        at: t.time,
                    }),
                    TagAction::Allowed => rejected::Entry::Allowed {
                        image: t.image,
                        tag: t.tag,
                        at: t.time,
                    },
                }),
                _ => None,
            }));
        }
    }
    let set = rejected::Rejected::fold(entries);
    rejected::write(state_dir, &set).map_err(|e| e.to_string())?;
    Ok(set.tags.len())
}
