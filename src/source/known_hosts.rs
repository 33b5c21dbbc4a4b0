//! OpenSSH `known_hosts` checking for the SSH transport: plain and hashed (`|1|`) host
//! names, `[host]:port` entries, wildcards and negation, and `@revoked` keys. An unknown
//! host or a changed key is refused; there is no "accept on first use".

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt;

/// Why a host key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostKeyError {
    /// No entry names the host.
    #[error("host key verification failed: {host} is not in known_hosts (the server offered {key_type} {fingerprint}); add its key, e.g. with ssh-keyscan")]
    Unknown {
        /// `host` or `[host]:port`.
        host: String,
        /// Offered key type.
        key_type: String,
        /// SHA256 fingerprint.
        fingerprint: String,
    },
    /// The host is known with other keys.
    #[error("host key verification failed: HOST KEY MISMATCH for {host}: the server offered {key_type} {fingerprint}, which known_hosts does not list for it; refusing to connect")]
    Mismatch {
        /// `host` or `[host]:port`.
        host: String,
        /// Offered key type.
        key_type: String,
        /// SHA256 fingerprint.
        fingerprint: String,
    },
    /// The key is marked `@revoked`.
    #[error("host key verification failed: the key offered by {host} is revoked in known_hosts")]
    Revoked {
        /// `host` or `[host]:port`.
        host: String,
    },
}

enum Hosts {
    Patterns(Vec<String>),
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
}

struct Line {
    revoked: bool,
    hosts: Hosts,
    key: Vec<u8>,
}

/// A parsed known_hosts file.
pub struct KnownHosts {
    lines: Vec<Line>,
}

impl fmt::Debug for KnownHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KnownHosts({} entries)", self.lines.len())
    }
}

/// The SHA256 fingerprint OpenSSH prints for a key blob.
pub fn fingerprint(key: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(key)))
}

/// The key type named inside an SSH wire-format key blob.
pub fn key_type(key: &[u8]) -> String {
    let len = key
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .unwrap_or(0);
    key.get(4..4 + len)
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

impl KnownHosts {
    /// Parses the file's text; malformed lines are skipped, as OpenSSH does.
    pub fn parse(text: &str) -> KnownHosts {
        let mut lines = Vec::new();
        for raw in text.lines() {
            let mut fields = raw.split_whitespace().peekable();
            let mut revoked = false;
            match fields.peek() {
                None => continue,
                Some(f) if f.starts_with('#') => continue,
                Some(&"@revoked") => {
                    revoked = true;
                    fields.next();
                }
                Some(&"@cert-authority") => continue,
                _ => {}
            }
            let (Some(hosts), Some(_ty), Some(key)) = (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let Ok(key) = STANDARD.decode(key) else {
                continue;
            };
            let hosts = match hosts.strip_prefix("|1|").and_then(|h| h.split_once('|')) {
                Some((salt, hash)) => match (STANDARD.decode(salt), STANDARD.decode(hash)) {
                    (Ok(salt), Ok(hash)) => Hosts::Hashed { salt, hash },
                    _ => continue,
                },
                None => Hosts::Patterns(hosts.split(',').map(str::to_string).collect()),
            };
            lines.push(Line {
                revoked,
                hosts,
                key,
            });
        }
        KnownHosts { lines }
    }

    fn names(line: &Line, name: &str) -> bool {
        match &line.hosts {
            Hosts::Hashed { salt, hash } => {
                let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                    return false;
                };
                mac.update(name.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
            Hosts::Patterns(pats) => {
                let mut hit = false;
                for p in pats {
                    if let Some(neg) = p.strip_prefix('!') {
                        if glob_match(neg, name) {
                            return false;
                        }
                    } else if glob_match(p, name) {
                        hit = true;
                    }
                }
                hit
            }
        }
    }

    /// Accepts `key` for `host:port` only if known_hosts lists exactly that key for it.
    pub fn check(&self, host: &str, port: u16, key: &[u8]) -> Result<(), HostKeyError> {
        let name = if port == 22 {
            host.to_string()
        } else {
            format!("[{host}]:{port}")
        };
        let mut known = false;
        let mut matched = false;
        for line in self.lines.iter().filter(|l| Self::names(l, &name)) {
            if line.key == key {
                if line.revoked {
                    return Err(HostKeyError::Revoked { host: name });
                }
                matched = true;
            } else if !line.revoked {
                known = true;
            }
        }
        let (key_type, fingerprint) = (key_type(key), fingerprint(key));
        match (matched, known) {
            (true, _) => Ok(()),
            (false, true) => Err(HostKeyError::Mismatch {
                host: name,
                key_type,
                fingerprint,
            }),
            (false, false) => Err(HostKeyError::Unknown {
                host: name,
                key_type,
                fingerprint,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(ty: &str, body: &[u8]) -> Vec<u8> {
        let mut v = (ty.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(ty.as_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn plain_hashed_port_and_mismatch() {
        let k1 = blob("ssh-ed25519", b"one");
        let k2 = blob("ssh-ed25519", b"two");
        let salt = b"0123456789abcdefghij";
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(salt).unwrap();
        mac.update(b"[127.0.0.1]:2222");
        let hashed = format!(
            "|1|{}|{}",
            STANDARD.encode(salt),
            STANDARD.encode(mac.finalize().into_bytes())
        );
        let text = format!(
            "# comment\ngithub.com,*.example.org ssh-ed25519 {k1}\n{hashed} ssh-ed25519 {k1}\n@revoked bad.host ssh-ed25519 {k2}\n",
            k1 = STANDARD.encode(&k1),
            k2 = STANDARD.encode(&k2)
        );
        let kh = KnownHosts::parse(&text);
        assert!(kh.check("github.com", 22, &k1).is_ok());
        assert!(kh.check("git.example.org", 22, &k1).is_ok());
        assert!(kh.check("127.0.0.1", 2222, &k1).is_ok());
        assert!(matches!(
            kh.check("127.0.0.1", 2222, &k2),
            Err(HostKeyError::Mismatch { .. })
        ));
        assert!(matches!(
            kh.check("127.0.0.1", 22, &k1),
            Err(HostKeyError::Unknown { .. })
        ));
        assert!(matches!(
            kh.check("bad.host", 22, &k2),
            Err(HostKeyError::Revoked { .. })
        ));
        let msg = kh.check("github.com", 22, &k2).unwrap_err().to_string();
        assert!(
            msg.contains("HOST KEY MISMATCH for github.com") && msg.contains("SHA256:"),
            "{msg}"
        );
    }
}
