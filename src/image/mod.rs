//! Image automation: scan registries for tags, pick one per policy, rewrite exactly
//! that value in Git, commit and push. `policy::select`, `rewrite::rewrite` and
//! `discover` are pure; the registry and Git stay at the edges (`registry`, `automation`).

pub mod automation;
pub mod discover;
pub mod policy;
pub mod rejected;
pub mod rewrite;
pub mod template;
