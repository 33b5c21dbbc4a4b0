//! Push-webhook authentication. Accepts GitHub (`X-Hub-Signature-256`, or the older
//! sha1 `X-Hub-Signature`), Gitea (`X-Gitea-Signature`), GitLab (`X-Gitlab-Token`) and a
//! plain `Authorization: Bearer` secret on `/hook`, and Flux's receiver path
//! `/hook/<sha256(token + name + namespace)>`. Every comparison runs in constant time.

use hmac::{Hmac, Mac};

/// Constant-time equality (the length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn hmac_ok<M: Mac + hmac::digest::KeyInit>(secret: &[u8], body: &[u8], hex_sig: &str) -> bool {
    let Some(sig) = unhex(hex_sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = <M as hmac::digest::KeyInit>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// Flux's Receiver webhook path digest: hex SHA-256 of the token, the receiver's name
/// and its namespace, concatenated (notification-controller's `status.webhookPath`).
pub fn receiver_digest(token: &[u8], name: &str, namespace: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(token);
    h.update(name.as_bytes());
    h.update(namespace.as_bytes());
    crate::manifest::object::hex(&h.finalize())
}

/// Whether a request to `/hook/<given>` may trigger a sync: the digest matches, and a
/// signature or token it carries (GitHub, Gitea, GitLab) is right too. Without one
/// the path alone admits it, as Flux's `generic` receiver does.
pub fn verify_receiver<'a>(
    secret: &[u8],
    digest: &str,
    given: &str,
    get: impl Fn(&str) -> Option<&'a str>,
    body: &[u8],
) -> bool {
    if !ct_eq(given.as_bytes(), digest.as_bytes()) {
        return false;
    }
    let signed = [
        "x-hub-signature-256",
        "x-gitea-signature",
        "x-hub-signature",
        "x-gitlab-token",
    ]
    .iter()
    .any(|h| get(h).is_some());
    !signed || verify(secret, get, body)
}

/// Whether a request with these headers (`get` looks one up) and body carries the secret.
pub fn verify<'a>(secret: &[u8], get: impl Fn(&str) -> Option<&'a str>, body: &[u8]) -> bool {
    if let Some(sig) = get("x-hub-signature-256") {
        return sig
            .strip_prefix("sha256=")
            .is_some_and(|h| hmac_ok::<Hmac<sha2::Sha256>>(secret, body, h));
    }
    if let Some(sig) = get("x-gitea-signature") {
        return hmac_ok::<Hmac<sha2::Sha256>>(secret, body, sig);
    }
    if let Some(sig) = get("x-hub-signature") {
        return sig
            .strip_prefix("sha1=")
            .is_some_and(|h| hmac_ok::<Hmac<sha1::Sha1>>(secret, body, h));
    }
    if let Some(token) = get("x-gitlab-token") {
        return ct_eq(token.as_bytes(), secret);
    }
    if let Some(token) = get("authorization").and_then(|a| a.strip_prefix("Bearer ")) {
        return ct_eq(token.as_bytes(), secret);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).unwrap();
        mac.update(body);
        crate::manifest::object::hex(&mac.finalize().into_bytes())
    }

    #[test]
    fn github_signature() {
        let sig = format!("sha256={}", sign(b"s3cret", b"{}"));
        assert!(verify(
            b"s3cret",
            |h| (h == "x-hub-signature-256").then_some(sig.as_str()),
            b"{}"
        ));
        assert!(!verify(
            b"other",
            |h| (h == "x-hub-signature-256").then_some(sig.as_str()),
            b"{}"
        ));
        assert!(!verify(
            b"s3cret",
            |h| (h == "x-hub-signature-256").then_some(sig.as_str()),
            b"{ }"
        ));
    }

    #[test]
    fn flux_receiver_path() {
        // `echo -n "s3cretgithub-receiverflux-system" | sha256sum`
        let digest = receiver_digest(b"s3cret", "github-receiver", "flux-system");
        assert_eq!(
            digest,
            "2dad4f6926b39968e4364e30dabbffc4e42333291f9d23341b90a18101145360"
        );
        let none = |_: &str| None;
        assert!(verify_receiver(b"s3cret", &digest, &digest, none, b"{}"));
        assert!(!verify_receiver(
            b"s3cret",
            &digest,
            &digest[1..],
            none,
            b"{}"
        ));
        assert!(!verify_receiver(b"s3cret", &digest, "", none, b"{}"));
        // A signature that is there must be right.
        let good = format!("sha256={}", sign(b"s3cret", b"{}"));
        let bad = format!("sha256={}", sign(b"other", b"{}"));
        let get_good = |h: &str| (h == "x-hub-signature-256").then_some(good.as_str());
        let get_bad = |h: &str| (h == "x-hub-signature-256").then_some(bad.as_str());
        assert!(verify_receiver(
            b"s3cret", &digest, &digest, get_good, b"{}"
        ));
        assert!(!verify_receiver(
            b"s3cret", &digest, &digest, get_bad, b"{}"
        ));
    }

    #[test]
    fn tokens_and_nothing() {
        assert!(verify(
            b"tok",
            |h| (h == "x-gitlab-token").then_some("tok"),
            b""
        ));
        assert!(!verify(
            b"tok",
            |h| (h == "x-gitlab-token").then_some("tok2"),
            b""
        ));
        assert!(verify(
            b"tok",
            |h| (h == "authorization").then_some("Bearer tok"),
            b""
        ));
        assert!(!verify(b"tok", |_| None, b""));
    }
}
