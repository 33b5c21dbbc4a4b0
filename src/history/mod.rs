//! Git as the record of rollouts: the note format (`note`), what to write (`plan`),
//! the single writer that owns every write to the followed remote (`writer`), and
//! reading the notes back (`read`) for `gitcanary history` and the web UI. The canary
//! engine hands outcomes over through [`OutcomeSink`] and never touches Git itself.

pub mod note;
pub mod plan;
pub mod read;
pub mod writer;

pub use note::{Entry, Note, Rollout};
pub use writer::{CommitPlan, Writer};

/// The notes ref rollouts are recorded under.
pub const NOTES_REF: &str = "refs/notes/gitcanary";

/// Errors of the Git writer and of reading notes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Fetching, committing or pushing failed.
    #[error(transparent)]
    Source(#[from] crate::source::git::Error),
    /// A local Git operation failed.
    #[error("{repo}: {message}")]
    Git {
        /// The repository (redacted URL or path).
        repo: String,
        /// What git said.
        message: String,
    },
    /// The push kept being rejected.
    #[error("push to {target} rejected {attempts} times, last: {message}")]
    Rejected {
        /// Branch or ref.
        target: String,
        /// Attempts made.
        attempts: u32,
        /// The remote's last answer.
        message: String,
    },
    /// The writer thread is gone (the process is stopping).
    #[error("the Git writer stopped")]
    Stopped,
}

/// Result with the history error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the canary engine hands finished analyses: to the Git writer in a running
/// daemon, to nothing in tests that do not care.
pub trait OutcomeSink: Send + Sync {
    /// Records `entries` (a rollout, rejected tags) on the commit that introduced
    /// the analysed revision: the newest of `revisions` (the commits that applied the
    /// target and its tracked configs). Must not block.
    fn record(&self, revisions: &[String], entries: Vec<Entry>);
}

impl OutcomeSink for Writer {
    fn record(&self, revisions: &[String], entries: Vec<Entry>) {
        self.submit_note(revisions, entries)
    }
}
