//! The canary engine: Flagger-compatible progressive delivery. `spec` reads Canary
//! objects, `state` holds the phases and status, and `decide` is the pure state machine;
//! the executor acts on its plans through the target's [`workloads::Workloads`],
//! [`router::TrafficRouter`] and [`metrics::MetricsProvider`].

pub mod checks;
pub mod commands;
pub mod decide;
pub mod executor;
pub mod matches;
pub mod metrics;
pub mod outcome;
pub mod primary;
pub mod router;
pub mod samples;
pub mod spec;
pub mod state;
pub mod supervise;
pub mod workloads;

#[cfg(test)]
mod tests;
