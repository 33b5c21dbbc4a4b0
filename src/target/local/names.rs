//! Cluster DNS names for gitcanary's own HTTP clients: `<svc>`, `<svc>.<ns>`,
//! `<svc>.<ns>.svc` and `<svc>.<ns>.svc.cluster.local` resolve to the local listener of
//! that Service port (from `runtime/services.json`). Anything else resolves as usual.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

/// Parses `host` as a cluster Service name: (service, namespace).
pub fn service_of(host: &str, default_ns: &str) -> Option<(String, String)> {
    let host = host.trim_end_matches('.');
    if host.parse::<std::net::IpAddr>().is_ok() || host == "localhost" {
        return None;
    }
    let labels: Vec<&str> = host.split('.').collect();
    match labels.as_slice() {
        [svc] => Some((svc.to_string(), default_ns.to_string())),
        [svc, ns] | [svc, ns, "svc"] | [svc, ns, "svc", "cluster", "local"] => {
            Some((svc.to_string(), ns.to_string()))
        }
        _ => None,
    }
}

/// The Service listeners: `namespace/name/port` to address.
pub fn allocations(state_dir: &Path) -> BTreeMap<String, String> {
    std::fs::read(state_dir.join("runtime").join("services.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Resolves `host:port` to a local Service listener, if it names one.
pub fn resolve(
    allocs: &BTreeMap<String, String>,
    host: &str,
    port: u16,
    default_ns: &str,
) -> Option<SocketAddr> {
    let (svc, ns) = service_of(host, default_ns)?;
    allocs
        .get(&format!("{ns}/{svc}/{port}"))
        .and_then(|a| a.parse().ok())
}

/// Rewrites an `http://host[:port]/path` URL to its local listener when the host is a
/// Service name; other URLs come back unchanged.
pub fn rewrite_url(allocs: &BTreeMap<String, String>, url: &str, default_ns: &str) -> String {
    let Some(rest) = url.strip_prefix("http://") else {
        return url.to_string();
    };
    let (authority, path) = rest
        .find('/')
        .map(|i| (&rest[..i], &rest[i..]))
        .unwrap_or((rest, "/"));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, p.parse().unwrap_or(80)),
        _ => (authority, 80),
    };
    match resolve(allocs, host, port, default_ns) {
        Some(addr) => format!("http://{addr}{path}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names() {
        let allocs: BTreeMap<String, String> = [(
            "test/podinfo-canary/9898".to_string(),
            "127.0.0.1:41234".to_string(),
        )]
        .into();
        for host in [
            "podinfo-canary.test",
            "podinfo-canary.test.svc",
            "podinfo-canary.test.svc.cluster.local",
        ] {
            assert_eq!(
                rewrite_url(&allocs, &format!("http://{host}:9898/x?y=1"), "default"),
                "http://127.0.0.1:41234/x?y=1",
                "{host}"
            );
        }
        assert_eq!(
            rewrite_url(&allocs, "http://podinfo-canary:9898/", "test"),
            "http://127.0.0.1:41234/"
        );
        assert_eq!(
            rewrite_url(&allocs, "http://127.0.0.1:9898/", "test"),
            "http://127.0.0.1:9898/"
        );
        assert_eq!(
            rewrite_url(&allocs, "http://other.test:80/", "test"),
            "http://other.test:80/"
        );
    }
}
