//! Rollback written back to Git: when a canary fails, the values its failed change
//! set (an image tag, an env entry, a ConfigMap or Secret value) are put back to what
//! was promoted, byte for byte, in one commit pushed through the single Git writer.
//! `plan` decides (pure); this module never touches the target or the engine's state.

pub mod plan;
pub mod run;
pub mod sink;

#[cfg(test)]
mod tests;
