//! Bounds on what one chart's templates may make gitcanary do. A chart is input from
//! whoever publishes it, so no template may overflow the stack (which `catch_unwind`
//! cannot catch), loop without end or allocate without bound; each bound is an error
//! naming `file:line:col`. They sit far above what real charts use.

/// Nesting while executing: each `include`, `template` or `tpl` call, each block
/// (`if`, `range`, `with`) and each parenthesized pipeline counts one level, also
/// across templates. Helm allows 1000 includes of one name; each level costs several
/// stack frames, so the bound is lower, with the render stack below sized to hold it
/// in debug builds too (the `deepest_render_fits_its_stack` test checks it).
pub const MAX_DEPTH: usize = 200;

/// The stack of the thread each render runs on. Tokio's blocking threads have 2 MiB,
/// too little for [`MAX_DEPTH`] in a debug build; only the pages used are committed.
pub const RENDER_STACK: usize = 64 << 20;

/// Nested blocks (`if`, `range`, `with`, `define`) within one file.
pub const MAX_BLOCKS: usize = 100;

/// Nested parentheses within one action.
pub const MAX_PARENS: usize = 100;

/// Nodes executed plus functions called in one chart render; stops `range` loops
/// nested to run for hours.
pub const MAX_STEPS: u64 = 10_000_000;

/// Bytes of any rendered template, included text or string value.
pub const MAX_TEXT: usize = 32 << 20;

/// Items of any list or map a template makes (`until`, `untilStep`, `range` over
/// an integer, `append` …).
pub const MAX_ITEMS: usize = 1_000_000;

/// Nesting of a value a template builds (`list`, `dict` …); printing and dropping a
/// value recurse through it. Twice the YAML loader's bound, so values read from YAML
/// can still be wrapped.
pub const MAX_VALUE_DEPTH: usize = 256;
