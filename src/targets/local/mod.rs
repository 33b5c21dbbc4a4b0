//! The embedded local target: an on-disk object store under the state dir
//! ([`LocalTarget`] implements `targets::Target` over it), the runtime that runs its
//! workloads and hooks as host processes, the service proxy, and the demo app.

pub mod canary;
pub mod demo_app;
pub mod loadtester;
pub mod names;
pub mod proxy;
pub mod runtime;
pub mod services;
pub mod store;
pub mod target;

pub use store::LocalStore;
pub use target::LocalTarget;
