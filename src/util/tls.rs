//! The process-wide rustls crypto provider. reqwest is built without a provider (its
//! default brings aws-lc-rs, and kube's rustls uses ring: two providers make rustls
//! refuse to pick one), so ring is installed once, at start-up.

/// Installs ring as the process's rustls provider; later calls do nothing.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
