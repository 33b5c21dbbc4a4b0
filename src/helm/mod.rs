//! Helm: a built-in renderer for charts (Go templates with Helm's and Sprig's
//! functions, Helm's built-in objects, values coalescing and schema validation), so
//! HelmRelease objects render without a `helm` binary. Chart sources (repo paths,
//! other Git repos, Helm HTTP repositories) and wiring into sync come next.

pub mod chart;
pub mod hooks;
pub mod objects;
pub mod release;
pub mod remote;
pub mod repo;
pub mod schema;
pub mod template;
