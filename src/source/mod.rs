//! The Git source: fetching with git2, host-key checking, watching a local repository,
//! push-webhook authentication and the source status record.

pub mod credentials;
pub mod git;
pub mod known_hosts;
pub mod seed;
pub mod status;
pub mod suspend;
pub mod watch;
pub mod webhook;

pub use git::{GitSnapshot, GitSource};
pub use status::SourceStatus;
