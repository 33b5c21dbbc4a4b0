//! The Kubernetes target. It arrives in a later issue; until then choosing it in the
//! config is an explicit error rather than a silent fallback to the local target.

/// The error shown when the config selects `target.kubernetes`.
pub fn unsupported(context: Option<&str>) -> super::Error {
    super::Error::Unsupported(format!(
        "target.kubernetes{} is not yet supported: remove it to use the embedded local target",
        context
            .map(|c| format!(" (context {c:?})"))
            .unwrap_or_default()
    ))
}
