//! The embedded local target: an on-disk object store under the state dir, and the
//! demo app its workloads run.

pub mod demo_app;
pub mod loadtester;
pub mod names;
pub mod proxy;
pub mod runtime;
pub mod store;

pub use store::LocalStore;
