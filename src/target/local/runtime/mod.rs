//! The local runtime: runs stored Deployments as supervised host processes. `spec` and
//! `rollout` decide (pure); the supervisor acts.

pub mod rollout;
pub mod spec;
