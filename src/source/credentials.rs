//! Which credentials a Git repository gets, and their material for libgit2. The
//! followed repository uses `source.auth` from the config. A chart's Git repository
//! uses its GitRepository's `spec.secretRef` (a Secret in the cluster repository, as
//! Flux reads it), or the source's own credentials only when it is on the source's
//! host (same scheme, host and port): a HelmRelease naming `http://attacker/x.git`
//! must not receive the source's token or key.

use super::git::ssh_host_port;
use crate::config::{Auth, SourceConfig};
use git2::Cred;
use std::fmt;
use std::path::Path;

/// The keys of a Flux GitRepository's `spec.secretRef` Secret gitcanary understands:
/// `username`/`password` or `bearerToken` for HTTPS, `identity` (with `password` as
/// its passphrase) and `known_hosts` for SSH.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretAuth {
    /// `namespace/name` of the Secret, for messages.
    pub secret: String,
    /// `username`.
    pub username: Option<String>,
    /// `password` (the SSH key's passphrase for SSH).
    pub password: Option<String>,
    /// `bearerToken`, sent as `Authorization: Bearer`.
    pub bearer_token: Option<String>,
    /// `identity`: an SSH private key.
    pub identity: Option<String>,
    /// `known_hosts`: the SSH host keys to trust.
    pub known_hosts: Option<String>,
}

impl fmt::Debug for SecretAuth {
    /// Names the Secret and which keys it has, never their values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let has = |o: &Option<String>| o.is_some();
        f.debug_struct("SecretAuth")
            .field("secret", &self.secret)
            .field("username", &has(&self.username))
            .field("password", &has(&self.password))
            .field("bearer_token", &has(&self.bearer_token))
            .field("identity", &has(&self.identity))
            .field("known_hosts", &has(&self.known_hosts))
            .finish()
    }
}

/// Where a repository's credentials come from.
#[derive(Clone, Debug, Default)]
pub enum Credentials {
    /// The followed repository without `source.auth`.
    #[default]
    None,
    /// A repository on another host than the source's, with no `secretRef`.
    NotScoped,
    /// `source.auth`: key files and environment variables named in the config.
    Config(Auth),
    /// A GitRepository's `spec.secretRef`.
    Secret(SecretAuth),
}

/// Scheme, host and port a Git URL connects to; `None` for a path on this machine.
pub fn origin(url: &str) -> Option<(String, String, u16)> {
    if let Some((host, port)) = ssh_host_port(url) {
        return Some(("ssh".into(), host.to_ascii_lowercase(), port));
    }
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme == "file" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']')?;
            (h, after.strip_prefix(':'))
        }
        None => match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            "git" => 9418,
            _ => 0,
        },
    };
    Some((scheme, host.to_ascii_lowercase(), port))
}

/// Whether `url` is a repository on this machine (`file://`, or a path).
pub fn is_local(url: &str) -> bool {
    origin(url).is_none()
}

/// The credentials a chart's Git repository at `url` gets: its own `secretRef`, else
/// the source's when it is on the source's host, else none.
pub fn for_chart(url: &str, secret: Option<&SecretAuth>, source: &SourceConfig) -> Credentials {
    if let Some(s) = secret {
        return Credentials::Secret(s.clone());
    }
    match (&source.auth, origin(url)) {
        (Some(auth), Some(o)) if origin(&source.url).as_ref() == Some(&o) => {
            Credentials::Config(auth.clone())
        }
        _ => Credentials::NotScoped,
    }
}

fn resolve(base: &Path, p: &Path) -> std::path::PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

const NOT_SCOPED: &str = "the source's credentials go only to the source's own host; give the GitRepository a spec.secretRef";

impl Credentials {
    /// The text of the known_hosts SSH host keys are checked against, or why there is
    /// none (host keys are always checked).
    pub fn known_hosts(&self, base: &Path) -> Result<Result<String, String>, String> {
        Ok(match self {
            Credentials::Config(Auth { ssh: Some(s), .. }) => {
                let path = resolve(base, &s.known_hosts_file);
                Ok(std::fs::read_to_string(&path)
                    .map_err(|e| format!("known_hosts {}: {e}", path.display()))?)
            }
            Credentials::Secret(SecretAuth {
                known_hosts: Some(k),
                ..
            }) => Ok(k.clone()),
            Credentials::Secret(s) => Err(format!("Secret {} has no known_hosts", s.secret)),
            Credentials::NotScoped => Err(NOT_SCOPED.into()),
            Credentials::None | Credentials::Config(_) => {
                Err("set source.auth.ssh.knownHostsFile".into())
            }
        })
    }

    /// The SSH key credential for `user`.
    pub fn ssh_key(&self, user: &str, base: &Path) -> Result<Cred, git2::Error> {
        match self {
            Credentials::Config(Auth { ssh: Some(s), .. }) => {
                let passphrase = s
                    .passphrase_env
                    .as_ref()
                    .and_then(|v| std::env::var(v).ok());
                Cred::ssh_key(
                    user,
                    None,
                    &resolve(base, &s.private_key_file),
                    passphrase.as_deref(),
                )
            }
            Credentials::Secret(SecretAuth {
                identity: Some(key),
                password,
                ..
            }) => Cred::ssh_key_from_memory(user, None, key, password.as_deref()),
            Credentials::Secret(s) => Err(git2::Error::from_str(&format!(
                "the server asks for an SSH key: Secret {} has no identity",
                s.secret
            ))),
            Credentials::NotScoped => Err(git2::Error::from_str(&format!(
                "the server asks for an SSH key: {NOT_SCOPED}"
            ))),
            Credentials::None | Credentials::Config(_) => Err(git2::Error::from_str(
                "the server asks for an SSH key: set source.auth.ssh",
            )),
        }
    }

    /// The username and password credential (`user` is the URL's user name).
    pub fn user_pass(&self, user: Option<&str>) -> Result<Cred, git2::Error> {
        let env = |name: &Option<String>| {
            name.as_ref().map(|n| {
                std::env::var(n).map_err(|_| {
                    git2::Error::from_str(&format!("environment variable {n} is not set"))
                })
            })
        };
        match self {
            Credentials::Config(Auth { https: Some(h), .. }) => match (
                env(&h.token_env),
                env(&h.username_env),
                env(&h.password_env),
            ) {
                (Some(token), _, _) => Cred::userpass_plaintext(user.unwrap_or("git"), &token?),
                (None, Some(u), Some(p)) => Cred::userpass_plaintext(&u?, &p?),
                _ => Err(git2::Error::from_str("source.auth.https is incomplete")),
            },
            Credentials::Secret(SecretAuth {
                username: Some(u),
                password: Some(p),
                ..
            }) => Cred::userpass_plaintext(u, p),
            Credentials::Secret(s) if s.bearer_token.is_some() => Err(git2::Error::from_str(
                "authentication failed: the server refused the bearer token",
            )),
            Credentials::Secret(s) => Err(git2::Error::from_str(&format!(
                "the server asks for a username and password: Secret {} has none",
                s.secret
            ))),
            Credentials::NotScoped => Err(git2::Error::from_str(&format!(
                "the server asks for a username and password: {NOT_SCOPED}"
            ))),
            Credentials::None | Credentials::Config(_) => Err(git2::Error::from_str(
                "the server asks for a username and password: set source.auth.https",
            )),
        }
    }

    /// Extra HTTP headers: `Authorization: Bearer` for a Secret's `bearerToken`.
    pub fn headers(&self) -> Vec<String> {
        match self {
            Credentials::Secret(SecretAuth {
                bearer_token: Some(t),
                ..
            }) if is_header_safe(t) => vec![format!("Authorization: Bearer {t}")],
            _ => Vec::new(),
        }
    }
}

/// Visible ASCII only: a token cannot end the header and inject another one.
pub fn is_header_safe(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(url: &str) -> SourceConfig {
        let text = format!("source:\n  url: {url}\n  auth:\n    https:\n      tokenEnv: T\n");
        crate::config::Config::parse(&text, Path::new("/cfg"))
            .unwrap()
            .source
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let o = |u: &str| origin(u);
        assert_eq!(
            o("https://GitHub.com/org/x.git"),
            o("https://github.com:443/y")
        );
        assert_eq!(o("https://tok@github.com/x"), o("https://github.com/y"));
        assert_ne!(o("https://github.com/x"), o("http://github.com/x"));
        assert_ne!(o("https://github.com/x"), o("https://github.com:8443/x"));
        assert_ne!(o("https://github.com/x"), o("https://github.com.evil/x"));
        assert_eq!(
            o("git@github.com:org/x.git"),
            o("ssh://git@github.com/org/y")
        );
        assert_eq!(
            o("ssh://[::1]:2222/x"),
            Some(("ssh".into(), "::1".into(), 2222))
        );
        for local in ["file:///srv/x.git", "/srv/x.git", "./x", "x"] {
            assert!(is_local(local), "{local}");
        }
    }

    #[test]
    fn source_credentials_go_only_to_the_source_host() {
        let src = source("https://git.example.com/org/fleet.git");
        let on_host = for_chart("https://git.example.com/org/charts.git", None, &src);
        assert!(matches!(on_host, Credentials::Config(_)));
        for other in [
            "http://attacker/x.git",
            "http://git.example.com/org/charts.git",
            "https://git.example.com:444/org/charts.git",
            "ssh://git@git.example.com/org/charts.git",
            "file:///tmp/x.git",
        ] {
            assert!(
                matches!(for_chart(other, None, &src), Credentials::NotScoped),
                "{other}"
            );
        }
        let secret = SecretAuth {
            secret: "test/charts".into(),
            bearer_token: Some("t0k".into()),
            ..Default::default()
        };
        let own = for_chart("http://attacker/x.git", Some(&secret), &src);
        assert!(matches!(own, Credentials::Secret(ref s) if s == &secret));
        assert_eq!(own.headers(), ["Authorization: Bearer t0k"]);
        assert!(!format!("{secret:?}").contains("t0k"));
        assert!(!is_header_safe("t\r\nX-Evil: 1"));
    }
}
