//! The embedded local target: an on-disk object store under the state dir.

pub mod store;

pub use store::LocalStore;
