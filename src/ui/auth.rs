//! Who may read the UI and act through it. With no token configured the UI is
//! read-only and open to whoever reaches the listener (loopback by default). With
//! `server.uiTokenEnv`, a login form trades the token for a session cookie (HttpOnly,
//! SameSite=Strict) that names the user and expires; API clients may send the token as
//! a bearer instead. Actions need a session and a CSRF token derived from it. Cookies
//! and CSRF tokens are HMACs keyed by the UI token, so the server keeps no sessions and
//! the token itself never leaves the login request.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The session cookie's name.
pub const COOKIE: &str = "gitcanary_ui";
/// How long a session lasts (seconds).
pub const SESSION_SECS: f64 = 12.0 * 3600.0;
/// The header an action's CSRF token travels in.
pub const CSRF_HEADER: &str = "x-gitcanary-csrf";
/// Shortest token accepted: shorter ones fall to guessing through the login form.
pub const MIN_TOKEN_LEN: usize = 16;

/// A configuration error in the token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Too short to withstand guessing.
    #[error("server.uiTokenEnv: the token has {0} characters; use at least {MIN_TOKEN_LEN}")]
    TooShort(usize),
}

/// The UI's token; cookies and CSRF tokens are derived from it.
#[derive(Clone)]
pub struct Auth {
    key: Vec<u8>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth(..)")
    }
}

/// Who a request comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Who(pub String);

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A user name as the login form may give it: short, and safe in a cookie and a log.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
}

impl Auth {
    /// A token from the environment; too short a token is refused.
    pub fn new(token: &[u8]) -> Result<Auth, Error> {
        let token = token.trim_ascii();
        if token.len() < MIN_TOKEN_LEN {
            return Err(Error::TooShort(token.len()));
        }
        Ok(Auth {
            key: token.to_vec(),
        })
    }

    fn mac(&self, purpose: &str, msg: &str) -> String {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        m.update(purpose.as_bytes());
        m.update(b"\0");
        m.update(msg.as_bytes());
        crate::manifest::object::hex(&m.finalize().into_bytes())
    }

    /// Whether `given` is the token, in constant time.
    pub fn token_ok(&self, given: &str) -> bool {
        ct_eq(given.trim().as_bytes(), &self.key)
    }

    /// The cookie value of a session for `who` that began at `now`.
    pub fn session_value(&self, who: &str, now: f64) -> String {
        let issued = now as u64;
        format!(
            "{who}.{issued}.{}",
            self.mac("session", &format!("{who}.{issued}"))
        )
    }

    /// The `Set-Cookie` header of a new session.
    pub fn set_cookie(&self, who: &str, now: f64) -> String {
        format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
            self.session_value(who, now),
            SESSION_SECS as u64
        )
    }

    /// Checks a cookie value at `now`: the user it names, if genuine and not expired.
    pub fn check_session(&self, value: &str, now: f64) -> Option<Who> {
        let (body, mac) = value.rsplit_once('.')?;
        let (who, issued) = body.rsplit_once('.')?;
        let issued: f64 = issued.parse::<u64>().ok()? as f64;
        let fresh = issued <= now + 60.0 && now - issued < SESSION_SECS;
        (fresh && valid_name(who) && ct_eq(mac.as_bytes(), self.mac("session", body).as_bytes()))
            .then(|| Who(who.to_string()))
    }

    /// Who sent a request: a valid session cookie, or the token as a bearer.
    pub fn who(&self, headers: &HeaderMap, now: f64) -> Option<Who> {
        if let Some(bearer) =
            header(headers, "authorization").and_then(|h| h.strip_prefix("Bearer "))
        {
            return self.token_ok(bearer).then(|| Who("token".into()));
        }
        cookie(headers, COOKIE).and_then(|v| self.check_session(v, now))
    }

    /// The CSRF token the UI sends with `who`'s actions.
    pub fn csrf(&self, who: &Who) -> String {
        self.mac("csrf", &who.0)
    }

    /// An action's CSRF check: the header matches `who`'s token, and a browser says
    /// the request is same-origin (Origin, when sent, names this host).
    pub fn csrf_ok(&self, who: &Who, headers: &HeaderMap) -> bool {
        let token_ok = header(headers, CSRF_HEADER)
            .is_some_and(|t| ct_eq(t.as_bytes(), self.csrf(who).as_bytes()));
        let same_origin = match (header(headers, "origin"), header(headers, "host")) {
            (Some(origin), Some(host)) => {
                origin
                    .strip_prefix("http://")
                    .or_else(|| origin.strip_prefix("https://"))
                    == Some(host)
            }
            (Some(_), None) => false,
            (None, _) => true,
        };
        let site_ok = header(headers, "sec-fetch-site").is_none_or(|s| s == "same-origin");
        token_ok && same_origin && site_ok
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A cookie's value from the `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Decodes an `application/x-www-form-urlencoded` body into its fields.
pub fn form(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| -> String {
        let s = s.replace('+', " ");
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let hex = (b[i] == b'%' && i + 2 < b.len())
                .then(|| std::str::from_utf8(&b[i + 1..i + 3]).ok())
                .flatten()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                }
                None => {
                    out.push(b[i]);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn auth() -> Auth {
        Auth::new(b"0123456789abcdef-secret\n").unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn short_tokens_are_refused() {
        assert!(matches!(Auth::new(b"  short  "), Err(Error::TooShort(5))));
    }

    #[test]
    fn a_session_cookie_names_its_user_and_expires() {
        let a = auth();
        let set = a.set_cookie("alice", 1000.0);
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        assert!(
            !set.contains("secret"),
            "the token never goes into the cookie"
        );
        let value = set.split(';').next().unwrap().split_once('=').unwrap().1;
        let h = headers(&[("cookie", &format!("other=1; {COOKIE}={value}"))]);
        assert_eq!(a.who(&h, 2000.0), Some(Who("alice".into())));
        assert_eq!(a.who(&h, 1000.0 + SESSION_SECS + 1.0), None, "expired");
        let forged = value.replacen("alice", "admin", 1);
        let h = headers(&[("cookie", &format!("{COOKIE}={forged}"))]);
        assert_eq!(a.who(&h, 2000.0), None, "a renamed session is refused");
        let other = Auth::new(b"another-token-of-16+").unwrap();
        let h = headers(&[("cookie", &format!("{COOKIE}={value}"))]);
        assert_eq!(
            other.who(&h, 2000.0),
            None,
            "a cookie of another token is refused"
        );
    }

    #[test]
    fn the_token_works_as_a_bearer() {
        let a = auth();
        let h = headers(&[("authorization", "Bearer 0123456789abcdef-secret")]);
        assert_eq!(a.who(&h, 0.0), Some(Who("token".into())));
        let h = headers(&[("authorization", "Bearer 0123456789abcdef-secreT")]);
        assert_eq!(a.who(&h, 0.0), None);
        assert_eq!(a.who(&HeaderMap::new(), 0.0), None);
    }

    #[test]
    fn actions_need_the_users_csrf_token_from_the_same_origin() {
        let a = auth();
        let alice = Who("alice".into());
        let csrf = a.csrf(&alice);
        let ok = headers(&[
            (CSRF_HEADER, &csrf),
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080"),
        ]);
        assert!(a.csrf_ok(&alice, &ok));
        assert!(!a.csrf_ok(&Who("bob".into()), &ok), "another user's token");
        let cross = headers(&[
            (CSRF_HEADER, &csrf),
            ("origin", "http://evil.example"),
            ("host", "127.0.0.1:8080"),
        ]);
        assert!(!a.csrf_ok(&alice, &cross));
        let site = headers(&[(CSRF_HEADER, &csrf), ("sec-fetch-site", "cross-site")]);
        assert!(!a.csrf_ok(&alice, &site));
        assert!(!a.csrf_ok(&alice, &headers(&[])), "no token");
    }

    #[test]
    fn form_fields_are_decoded() {
        let f = form(b"token=a%2Bb+c&who=al%C3%AFce&bad=%zz&end=%4");
        assert_eq!(
            f,
            vec![
                ("token".into(), "a+b c".into()),
                ("who".into(), "alïce".into()),
                ("bad".into(), "%zz".into()),
                ("end".into(), "%4".into()),
            ]
        );
        assert!(valid_name("alice@example.com") && !valid_name("a b") && !valid_name(""));
    }
}
