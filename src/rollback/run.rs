//! The rollback's edge: reads the workload's manifests at the promoted commit (the
//! failed commit's parent), at the failed commit and at the head from the cache
//! repository, lets [`super::plan`] decide, and commits through the single Git writer,
//! which plans again on a moved head.

use super::plan::{self, Change, FileVersions, Outcome, Workload};
use crate::history::writer::{CommitError, CommitPlan, Writer};
use crate::manifest::snapshot::Snapshot;
use crate::manifest::Object;
use crate::source::git::GitSource;
use std::collections::BTreeSet;

/// The annotation by which one Canary opts in.
pub const ANNOTATION: &str = "gitcanary.io/revert-on-failure";

/// Errors of a rollback.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the repository failed.
    #[error("rollback of {canary}: {message}")]
    Git {
        /// `name.namespace`.
        canary: String,
        /// What failed.
        message: String,
    },
    /// A manifest version does not parse.
    #[error("rollback of {canary}: {source}")]
    Plan {
        /// `name.namespace`.
        canary: String,
        /// The planner's error.
        source: plan::Error,
    },
    /// The writer failed to push.
    #[error("rollback of {canary}: {source}")]
    Writer {
        /// `name.namespace`.
        canary: String,
        /// The writer's error.
        source: crate::history::Error,
    },
}

/// A failed canary to roll back in Git.
#[derive(Clone, Debug)]
pub struct Request {
    /// Canary namespace.
    pub namespace: String,
    /// Canary name.
    pub name: String,
    /// The commit whose revision failed.
    pub failed_commit: String,
    /// Why, in Flagger's wording (`failed checks threshold reached 5`).
    pub reason: String,
}

impl Request {
    fn id(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }
}

/// What the rollback did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Done {
    /// Neither the Canary's annotation nor `history.revertOnFailure` asks for it.
    Disabled,
    /// The revert commit reached the remote.
    Pushed {
        /// The revert commit.
        commit: String,
        /// The values set back.
        changes: Vec<Change>,
        /// What it went back to (a tag, or the promoted commit's short sha).
        to: String,
    },
    /// Not reverted; see [`Outcome`].
    Skipped(Outcome),
}

impl Done {
    /// One line for the note and the log.
    pub fn summary(&self) -> String {
        match self {
            Done::Disabled => "revert off".into(),
            Done::Pushed { commit, changes, .. } => {
                format!("reverted in {commit} ({} values set back)", changes.len())
            }
            Done::Skipped(Outcome::Superseded { changes }) => {
                let again: Vec<String> = changes
                    .iter()
                    .filter_map(|c| Some(format!("{} {} is now {}", c.object, c.field, c.head.as_ref()?)))
                    .collect();
                format!("superseded: {}", again.join("; "))
            }
            Done::Skipped(Outcome::NotFound) => {
                "not reverted: the failed commit changed no value of the workload's manifests as written".into()
            }
            Done::Skipped(Outcome::Unrevertable(why)) => format!("not reverted: {why}"),
            Done::Skipped(Outcome::Revert { .. }) => "not reverted".into(),
        }
    }
}

/// The files that define the workload's objects (any Deployment, ConfigMap or Secret
/// in the namespace), and the Canary itself.
fn workload_files(objects: &[Object], ns: &str) -> BTreeSet<String> {
    objects
        .iter()
        .filter(|o| {
            o.key.namespace == ns
                && matches!(o.key.kind.as_str(), "Deployment" | "ConfigMap" | "Secret")
        })
        .map(|o| o.origin.file.clone())
        .collect()
}

fn read_text(snap: &dyn Snapshot, path: &str) -> Option<String> {
    snap.read(path).ok().and_then(|b| String::from_utf8(b).ok())
}

/// Rolls back `req` in Git when its Canary (as written at the failed commit) or
/// `global` asks for it. `root` is `source.path`; `head` the branch head as last
/// fetched. Blocking.
pub fn revert(
    source: &GitSource,
    writer: &Writer,
    root: &str,
    author: (String, String),
    global: bool,
    head: &str,
    req: &Request,
) -> Result<Done, Error> {
    let canary = req.id();
    let git = |message: String| Error::Git {
        canary: canary.clone(),
        message,
    };
    let failed_snap = source
        .snapshot(&req.failed_commit)
        .map_err(|e| git(e.to_string()))?;
    let failed_objects = crate::manifest::load(&failed_snap, root, None).objects;
    let Some(c) = crate::manifest::object::find(
        &failed_objects,
        "flagger.app",
        "Canary",
        &req.namespace,
        &req.name,
    ) else {
        return Ok(Done::Skipped(Outcome::NotFound));
    };
    let value = c.value();
    let opted_in = value["metadata"]["annotations"][ANNOTATION].as_str() == Some("true");
    if !opted_in && !global {
        return Ok(Done::Disabled);
    }
    let Some(target) = value["spec"]["targetRef"]["name"].as_str() else {
        return Ok(Done::Skipped(Outcome::NotFound));
    };
    let promoted_commit = parent(source, &req.failed_commit).map_err(git)?;
    let Some(promoted_commit) = promoted_commit else {
        return Ok(Done::Skipped(Outcome::NotFound));
    };
    let promoted_snap = source
        .snapshot(&promoted_commit)
        .map_err(|e| git(e.to_string()))?;
    let promoted_objects = crate::manifest::load(&promoted_snap, root, None).objects;
    let workload = Workload {
        namespace: req.namespace.clone(),
        deployment: target.to_string(),
    };
    let mut skipped = None;
    let mut changed = Vec::new();
    let pushed = writer.commit(head, 0, |head| -> Result<Option<CommitPlan>, Error> {
        let head_snap = source.snapshot(head).map_err(|e| git(e.to_string()))?;
        let head_objects = crate::manifest::load(&head_snap, root, None).objects;
        let mut paths = workload_files(&failed_objects, &req.namespace);
        paths.extend(workload_files(&promoted_objects, &req.namespace));
        paths.extend(workload_files(&head_objects, &req.namespace));
        let files: Vec<FileVersions> = paths
            .into_iter()
            .map(|path| FileVersions {
                promoted: read_text(&promoted_snap, &path),
                failed: read_text(&failed_snap, &path),
                head: read_text(&head_snap, &path),
                path,
            })
            .collect();
        let outcome = plan::plan(&workload, &files).map_err(|source| Error::Plan {
            canary: canary.clone(),
            source,
        })?;
        match outcome {
            Outcome::Revert { files, changes } => {
                let message = plan::commit_message(
                    &canary,
                    &req.reason,
                    &changes,
                    &promoted_commit,
                    &req.failed_commit,
                );
                changed = changes;
                Ok(Some(CommitPlan {
                    files: files
                        .into_iter()
                        .map(|(p, t)| (p, t.into_bytes()))
                        .collect(),
                    message,
                    author: author.clone(),
                    branch: None,
                }))
            }
            other => {
                skipped = Some(other);
                Ok(None)
            }
        }
    });
    match pushed {
        Ok(Some(p)) => Ok(Done::Pushed {
            commit: p.commit,
            to: plan::rolled_back_to(&changed, &promoted_commit),
            changes: changed,
        }),
        Ok(None) => Ok(Done::Skipped(skipped.unwrap_or(Outcome::NotFound))),
        Err(CommitError::Plan(e)) => Err(e),
        Err(CommitError::Writer(source)) => Err(Error::Writer {
            canary: canary.clone(),
            source,
        }),
    }
}

/// The first parent of `commit` in the cache repository.
fn parent(source: &GitSource, commit: &str) -> Result<Option<String>, String> {
    let msg = |e: git2::Error| e.message().to_string();
    let repo = git2::Repository::open_bare(source.cache_dir()).map_err(msg)?;
    let c = repo
        .find_commit(git2::Oid::from_str(commit).map_err(msg)?)
        .map_err(msg)?;
    Ok(c.parent_ids().next().map(|p| p.to_string()))
}
