//! Manifests: parsing multi-document YAML with positions, validating objects, and
//! loading a repository revision into desired objects. Pure: reads only through the
//! [`snapshot::Snapshot`] trait, never Git or the target.

pub mod de;
pub mod kustomize;
pub mod load;
pub mod names;
pub mod object;
pub mod patch;
pub mod schema;
pub mod snapshot;
pub mod yaml;

pub use load::{load, Cache, Loaded};
pub use object::{ManifestError, Object, ObjectKey};
