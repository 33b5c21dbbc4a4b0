//! Helm: a built-in renderer for charts (Go templates with Helm's and Sprig's
//! functions). Chart sources, values and wiring into sync come next; for now the
//! template engine stands alone.

pub mod template;
