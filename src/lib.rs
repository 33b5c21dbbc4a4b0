//! gitcanary: a GitOps reconciler with an embedded canary analysis engine.
//!
//! Each subsystem lives in its own module; the pure deciding code (`sync::plan`,
//! `manifest` validation) is kept apart from the executors that touch Git and disk.

pub mod canary;
pub mod cli;
pub mod config;
pub mod helm;
pub mod history;
pub mod image;
pub mod install;
pub mod manifest;
pub mod metrics;
pub mod notify;
pub mod oci;
pub mod rollback;
pub mod server;
pub mod source;
pub mod sync;
pub mod targets;
pub mod ui;
pub mod util;
