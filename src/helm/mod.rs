//! Helm: a built-in renderer for charts (Go templates with Helm's and Sprig's
//! functions, Helm's built-in objects, values coalescing and schema validation), so
//! HelmRelease objects render without a `helm` binary; chart sources (repo paths,
//! other Git repos, Helm HTTP repositories) and hooks (decided in `hooks`, run by
//! `sync::hooks` on the local target).

pub mod chart;
pub mod hooks;
pub mod objects;
pub mod post_render;
pub mod release;
pub mod remote;
pub mod repo;
pub mod schema;
pub mod source;
pub mod template;
