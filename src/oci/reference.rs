//! Image names, normalised as Docker does: `podinfo` is `docker.io/library/podinfo`,
//! fetched from `registry-1.docker.io`; registries on loopback speak plain http.

/// A normalised image repository.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRepo {
    /// Registry host as written (`docker.io`, `ghcr.io`, `localhost:5000`).
    pub registry: String,
    /// Repository path within the registry (`library/podinfo`).
    pub path: String,
}

impl ImageRepo {
    /// Parses a repository name (no tag or digest).
    pub fn parse(name: &str) -> ImageRepo {
        let (first, rest) = match name.split_once('/') {
            Some((f, r)) => (f, Some(r)),
            None => (name, None),
        };
        let is_host = first.contains('.')
            || first.contains(':')
            || first == "localhost"
            || first.starts_with('[');
        match (is_host, rest) {
            (true, Some(rest)) => ImageRepo {
                registry: first.to_string(),
                path: rest.to_string(),
            },
            (_, Some(_)) => ImageRepo {
                registry: "docker.io".into(),
                path: name.to_string(),
            },
            (_, None) => ImageRepo {
                registry: "docker.io".into(),
                path: format!("library/{name}"),
            },
        }
    }

    /// The host the registry API is served from.
    pub fn api_host(&self) -> &str {
        if self.registry == "docker.io" || self.registry == "index.docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// `http` for loopback registries or listed insecure ones, else `https`.
    pub fn scheme(&self, insecure: &[String]) -> &'static str {
        let host = self
            .registry
            .rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map(|(h, _)| h)
            .unwrap_or(&self.registry);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost"
            || host == "::1"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback || insecure.iter().any(|i| i == &self.registry || i == host) {
            "http"
        } else {
            "https"
        }
    }

    /// The base URL of the registry API.
    pub fn base_url(&self, insecure: &[String]) -> String {
        format!("{}://{}", self.scheme(insecure), self.api_host())
    }
}

impl std::fmt::Display for ImageRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_normalisation() {
        let r = ImageRepo::parse("podinfo");
        assert_eq!(
            (r.registry.as_str(), r.path.as_str(), r.api_host()),
            ("docker.io", "library/podinfo", "registry-1.docker.io")
        );
        let r = ImageRepo::parse("stefanprodan/podinfo");
        assert_eq!(
            (r.path.as_str(), r.api_host()),
            ("stefanprodan/podinfo", "registry-1.docker.io")
        );
        let r = ImageRepo::parse("ghcr.io/stefanprodan/podinfo");
        assert_eq!(
            (r.registry.as_str(), r.path.as_str()),
            ("ghcr.io", "stefanprodan/podinfo")
        );
        assert_eq!(r.scheme(&[]), "https");
        for local in [
            "localhost:5000/a",
            "127.0.0.1:5000/a",
            "127.1.2.3/a",
            "[::1]:5000/a",
            "localhost/a",
        ] {
            assert_eq!(ImageRepo::parse(local).scheme(&[]), "http", "{local}");
        }
        assert_eq!(
            ImageRepo::parse("registry.lan:5000/a").scheme(&["registry.lan:5000".into()]),
            "http"
        );
    }
}
