//! The local runtime: runs stored Deployments as supervised host processes. `spec` and
//! `rollout` decide (pure); `process` and `supervisor` act.

pub mod job;
pub mod process;
pub mod rollout;
pub mod spec;
pub mod supervisor;

pub use supervisor::{Endpoint, Endpoints, Runtime};
