//! Connecting to a cluster: which kubeconfig (the configured file with `~` expanded,
//! the in-cluster service account, or `$KUBECONFIG`/`~/.kube/config`), which context,
//! and the kube `Client` built from it. Nothing here talks to the API beyond the
//! client's construction; the target's executors take the client.

use crate::config::KubeTarget;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::{Path, PathBuf};

/// Errors while building a client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig file could not be read or parsed.
    #[error("target.kubernetes.kubeconfig: {path}: {message}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The kubeconfig has no usable context or cluster.
    #[error("target.kubernetes{where_}: {message}")]
    Config {
        /// Which file or source, for the message.
        where_: String,
        /// Why.
        message: String,
    },
}

/// Result with the client error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The kubeconfig file the config names, with `~/` expanded and a relative path taken
/// from `base_dir` (the config file's folder), as other paths in the config are.
pub fn kubeconfig_path(cfg: &KubeTarget, base_dir: &Path) -> Option<PathBuf> {
    let p = cfg.kubeconfig.as_ref()?;
    let text = p.to_string_lossy();
    let expanded = match text.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(rest))
            .unwrap_or_else(|| p.clone()),
        None => p.clone(),
    };
    Some(if expanded.is_absolute() {
        expanded
    } else {
        base_dir.join(expanded)
    })
}

/// The `User-Agent` of gitcanary's requests to the API server.
pub const USER_AGENT: &str = concat!("gitcanary/", env!("CARGO_PKG_VERSION"));

/// Whether this process runs in a pod with a service account mounted.
fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

/// The client configuration for `cfg`: the named kubeconfig and context; without a
/// file, the pod's service account in a cluster, else the kubeconfig kubectl would use.
pub async fn config(cfg: &KubeTarget, base_dir: &Path) -> Result<kube::Config> {
    let options = KubeConfigOptions {
        context: cfg.context.clone(),
        ..Default::default()
    };
    if let Some(path) = kubeconfig_path(cfg, base_dir) {
        // Only the first line: a YAML error goes on to quote the file, and a
        // kubeconfig holds tokens.
        let kc = Kubeconfig::read_from(&path).map_err(|e| Error::Kubeconfig {
            path: path.clone(),
            message: crate::util::error_chain(&e)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
        })?;
        return kube::Config::from_custom_kubeconfig(kc, &options)
            .await
            .map_err(|e| Error::Config {
                where_: format!(" ({})", path.display()),
                message: crate::util::error_chain(&e),
            });
    }
    if in_cluster() && cfg.context.is_none() {
        return kube::Config::incluster().map_err(|e| Error::Config {
            where_: " (in-cluster service account)".into(),
            message: crate::util::error_chain(&e),
        });
    }
    kube::Config::from_kubeconfig(&options)
        .await
        .map_err(|e| Error::Config {
            where_: " ($KUBECONFIG or ~/.kube/config)".into(),
            message: crate::util::error_chain(&e),
        })
}

/// A client for `cfg`. Must run inside the tokio runtime that will drive its requests.
pub async fn connect(cfg: &KubeTarget, base_dir: &Path) -> Result<kube::Client> {
    let mut config = config(cfg, base_dir).await?;
    // Names gitcanary in the API server's audit log and in `managedFields` tooling.
    config.headers.push((
        hyper::header::USER_AGENT,
        hyper::header::HeaderValue::from_static(USER_AGENT),
    ));
    // Said once per client here; kube-client's own warning on every TLS handshake is
    // filtered out in `util::logging`, where it would repeat on each new connection.
    if config.accept_invalid_certs {
        tracing::warn!(
            "target.kubernetes: the kubeconfig sets insecure-skip-tls-verify: the API server's certificate at {} is not verified",
            config.cluster_url
        );
    }
    kube::Client::try_from(config).map_err(|e| Error::Config {
        where_: String::new(),
        message: crate::util::error_chain(&e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(kubeconfig: Option<&str>, context: Option<&str>) -> KubeTarget {
        KubeTarget {
            kubeconfig: kubeconfig.map(PathBuf::from),
            context: context.map(str::to_string),
            field_manager: "gitcanary".into(),
            namespace: "gitcanary".into(),
            force: false,
            state_dir: None,
        }
    }

    #[test]
    fn kubeconfig_paths_expand_home_and_follow_the_config_folder() {
        let base = Path::new("/etc/gitcanary");
        assert_eq!(kubeconfig_path(&target(None, None), base), None);
        assert_eq!(
            kubeconfig_path(&target(Some("kc.yaml"), None), base),
            Some(PathBuf::from("/etc/gitcanary/kc.yaml"))
        );
        assert_eq!(
            kubeconfig_path(&target(Some("/abs/kc"), None), base),
            Some(PathBuf::from("/abs/kc"))
        );
        let home = std::env::var("HOME").unwrap();
        assert_eq!(
            kubeconfig_path(&target(Some("~/.kube/config"), None), base),
            Some(PathBuf::from(home).join(".kube/config"))
        );
    }

    const KUBECONFIG: &str = "apiVersion: v1
kind: Config
clusters:
- name: one
  cluster: {server: 'https://127.0.0.1:6443', insecure-skip-tls-verify: true}
- name: two
  cluster: {server: 'https://10.0.0.2:6443'}
users:
- name: u
  user: {token: secret-token}
contexts:
- name: one
  context: {cluster: one, user: u}
- name: prod
  context: {cluster: two, user: u, namespace: apps}
current-context: one
";

    #[tokio::test]
    async fn the_named_context_picks_its_cluster_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kc"), KUBECONFIG).unwrap();
        let c = config(&target(Some("kc"), None), dir.path()).await.unwrap();
        assert_eq!(c.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert!(c.accept_invalid_certs);
        let c = config(&target(Some("kc"), Some("prod")), dir.path())
            .await
            .unwrap();
        assert_eq!(c.cluster_url.to_string(), "https://10.0.0.2:6443/");
        assert_eq!(c.default_namespace, "apps");
        let e = config(&target(Some("kc"), Some("staging")), dir.path())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("staging"), "{e}");
        assert!(!e.contains("secret-token"), "{e}");
        let e = config(&target(Some("missing"), None), dir.path())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("target.kubernetes.kubeconfig: "), "{e}");
        assert!(e.contains("missing"), "{e}");
        std::fs::write(
            dir.path().join("bad"),
            "a: b\nc: [\n  token: secret-token\n",
        )
        .unwrap();
        let e = config(&target(Some("bad"), None), dir.path())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("failed to parse kubeconfig"), "{e}");
        assert!(!e.contains("secret-token"), "{e}");
    }
}
