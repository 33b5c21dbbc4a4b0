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

/// Rewrites every `host:port` (and `http://host/`, port 80) in `text` whose host names
/// a Service with a local listener to that listener's address, so a child process's
/// arguments and environment reach Services the way cluster DNS would.
pub fn rewrite_text(allocs: &BTreeMap<String, String>, text: &str, default_ns: &str) -> String {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r"(https?://)?([A-Za-z0-9][-A-Za-z0-9.]*)(?::([0-9]{1,5}))?")
            .expect("valid regex")
    });
    if allocs.is_empty() {
        return text.to_string();
    }
    re.replace_all(text, |c: &regex::Captures| {
        let whole = c[0].to_string();
        let port = match (c.get(1), c.get(3)) {
            (_, Some(p)) => p.as_str().parse::<u16>().ok(),
            (Some(scheme), None) if scheme.as_str() == "http://" => Some(80),
            _ => None,
        };
        let Some(port) = port else { return whole };
        match resolve(allocs, &c[2], port, default_ns) {
            Some(addr) => format!("{}{addr}", c.get(1).map(|m| m.as_str()).unwrap_or("")),
            None => whole,
        }
    })
    .into_owned()
}

/// The Kubernetes Service environment variables of `namespace` as a Pod there gets them
/// (`PODINFO_SERVICE_HOST`, `PODINFO_SERVICE_PORT`), pointing at the local listeners.
/// A Service with several ports gets its lowest as `_SERVICE_PORT`.
pub fn service_env(allocs: &BTreeMap<String, String>, namespace: &str) -> Vec<(String, String)> {
    let mut out: BTreeMap<String, (u16, SocketAddr)> = BTreeMap::new();
    for (key, addr) in allocs {
        let mut parts = key.splitn(3, '/');
        let (Some(ns), Some(svc), Some(port)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(port), Ok(addr)) = (port.parse::<u16>(), addr.parse::<SocketAddr>()) else {
            continue;
        };
        if ns != namespace {
            continue;
        }
        let e = out.entry(svc.to_string()).or_insert((port, addr));
        if port < e.0 {
            *e = (port, addr);
        }
    }
    let mut env = Vec::new();
    for (svc, (_, addr)) in out {
        let name = svc.to_ascii_uppercase().replace('-', "_");
        env.push((format!("{name}_SERVICE_HOST"), addr.ip().to_string()));
        env.push((format!("{name}_SERVICE_PORT"), addr.port().to_string()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_names_in_commands() {
        let allocs: BTreeMap<String, String> = [
            (
                "test/podinfo/9898".to_string(),
                "127.0.0.1:41234".to_string(),
            ),
            ("test/web/80".to_string(), "127.0.0.1:40000".to_string()),
        ]
        .into();
        assert_eq!(
            rewrite_text(
                &allocs,
                "curl -s podinfo.test:9898/api/info | grep version; wget -qO- http://web/ -T 2 podinfo:1",
                "test"
            ),
            "curl -s 127.0.0.1:41234/api/info | grep version; wget -qO- http://127.0.0.1:40000/ -T 2 podinfo:1"
        );
        assert_eq!(
            rewrite_text(&allocs, "podinfo.other:9898", "test"),
            "podinfo.other:9898"
        );
        assert_eq!(
            service_env(&allocs, "test"),
            vec![
                ("PODINFO_SERVICE_HOST".to_string(), "127.0.0.1".to_string()),
                ("PODINFO_SERVICE_PORT".to_string(), "41234".to_string()),
                ("WEB_SERVICE_HOST".to_string(), "127.0.0.1".to_string()),
                ("WEB_SERVICE_PORT".to_string(), "40000".to_string()),
            ]
        );
    }

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
