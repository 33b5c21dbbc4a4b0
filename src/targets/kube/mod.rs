//! The Kubernetes target. Its pure parts: health as kstatus computes it (`health`),
//! leader election over a Lease (`lease`), and the order of an apply (`order`); its
//! client side starts with connecting to a cluster (`client`). Until the target is
//! wired into the reconciler, choosing `target.kubernetes` in the config is an
//! explicit error rather than a silent fallback to the local target.

pub mod client;
pub mod health;
pub mod hooks;
pub mod leader;
pub mod lease;
pub mod order;

/// The error shown when the config selects `target.kubernetes`.
pub fn unsupported(context: Option<&str>) -> super::Error {
    super::Error::Unsupported(format!(
        "target.kubernetes{} is not yet supported: remove it to use the embedded local target",
        context
            .map(|c| format!(" (context {c:?})"))
            .unwrap_or_default()
    ))
}
