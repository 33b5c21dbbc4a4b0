//! Targets: where desired objects are applied. The embedded local target is the
//! default; the Kubernetes target comes later behind the same trait.

pub mod kube;
pub mod local;

use crate::manifest::{Object, ObjectKey};
use crate::sync::{ApplyPlan, Inventory};
use std::path::PathBuf;

/// Errors from a target.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A stored file is not what gitcanary wrote.
    #[error("{path}: corrupt: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Another gitcanary process holds the state dir.
    #[error("another gitcanary process is writing to {0}; stop it or use another stateDir")]
    Locked(PathBuf),
    /// The target is not available in this build.
    #[error("{0}")]
    Unsupported(String),
    /// An object's identity would name a file outside the store (`kind: ../x`).
    #[error("{key}: {part:?} cannot be a file name in the store")]
    UnsafePath {
        /// The object.
        key: String,
        /// The offending part of its identity.
        part: String,
    },
}

/// Result with the target error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What an apply did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApplyReport {
    /// Objects created.
    pub created: usize,
    /// Objects updated.
    pub updated: usize,
    /// Objects deleted.
    pub pruned: usize,
    /// Objects left alone.
    pub unchanged: usize,
    /// Files written or removed for objects.
    pub writes: usize,
}

/// A place objects are applied to.
pub trait Target: Send + Sync {
    /// The inventory of applied objects, with `live` set for those present.
    fn inventory(&self) -> Result<Inventory>;
    /// Applies a plan made against `inventory`; `desired` is what the plan indexes.
    fn apply(
        &self,
        plan: &ApplyPlan,
        desired: &[Object],
        inventory: &Inventory,
        revision: &str,
    ) -> Result<ApplyReport>;
    /// One object as stored, if present.
    fn get(&self, key: &ObjectKey) -> Result<Option<serde_json::Value>>;
}
