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

/// PEM material for a repository's TLS (a Helm repository's `certSecretRef`). `Debug`
/// hides it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsMaterial {
    /// CA certificate(s); when set, only these verify the server (as Go's `RootCAs`).
    pub ca: Option<String>,
    /// Client certificate chain.
    pub cert: Option<String>,
    /// Client private key.
    pub key: Option<String>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TlsMaterial(ca: {}, client certificate: {})",
            self.ca.is_some(),
            self.cert.is_some()
        )
    }
}

impl TlsMaterial {
    /// Sets the CA (only these roots, as Go's `RootCAs`) and the client certificate.
    pub fn apply(&self, mut b: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, String> {
        if let Some(ca) = &self.ca {
            let certs = reqwest::Certificate::from_pem_bundle(ca.as_bytes())
                .map_err(|_| "the CA (ca.crt / caFile) is not a PEM certificate".to_string())?;
            b = b.tls_certs_only(certs);
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let identity = reqwest::Identity::from_pem(format!("{cert}\n{key}").as_bytes())
                .map_err(|_| {
                    "the client certificate (tls.crt/tls.key, certFile/keyFile) is not a PEM certificate and key"
                        .to_string()
                })?;
            b = b.identity(identity);
        }
        Ok(b)
    }
}
