//! A Go `text/template` engine with Helm's and Sprig's functions, for rendering charts
//! without a `helm` binary. `parse` builds the tree, `exec` runs it, `funcs` holds the
//! function library.

pub mod exec;
pub mod funcs;
pub mod limits;
pub mod parse;

pub use exec::Engine;
pub use parse::TemplateError;

#[cfg(test)]
mod tests;
