//! Small shared helpers: durations, timestamps, durable file writes, log setup.
//! Nothing here knows about Git, manifests or targets.

pub mod atomic;
pub mod duration;
pub mod logging;
pub mod time;
pub mod tls;
