//! The canary engine: Flagger-compatible progressive delivery. `spec` reads Canary
//! objects, `state` holds the phases and status, and `decide` is the pure state machine;
//! executors (per target) act on its plans.

pub mod commands;
pub mod decide;
pub mod executor;
pub mod metrics;
pub mod router;
pub mod spec;
pub mod state;
pub mod supervise;

#[cfg(test)]
mod tests;
