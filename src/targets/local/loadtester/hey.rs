//! The `hey` command line, parsed and run by gitcanary's own load generator (no `hey`
//! binary). hey's semantics are kept: `-c` workers, `-q` is the rate *per worker* (so
//! the total is `q × c`), `-z` a duration or `-n` a total, `-t` a per-request timeout.

use std::time::Duration;

/// A parsed `hey` invocation.
#[derive(Clone, Debug, PartialEq)]
pub struct HeySpec {
    /// Target URL.
    pub url: String,
    /// `-c` concurrent workers (default 50).
    pub concurrency: u32,
    /// `-q` requests per second per worker; 0 means unthrottled.
    pub rate_per_worker: f64,
    /// `-z` duration; when set, `-n` is ignored.
    pub duration: Option<Duration>,
    /// `-n` total requests (default 200).
    pub requests: u64,
    /// `-m` method.
    pub method: String,
    /// `-H` headers.
    pub headers: Vec<(String, String)>,
    /// `-d` body.
    pub body: Option<String>,
    /// `-t` timeout (default 20s; 0 means none).
    pub timeout: Option<Duration>,
}

/// Splits a command line like a shell does for simple quoting ('...', "...", \x).
pub fn shell_words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err("unclosed single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => cur.push(chars.next().ok_or("dangling backslash")?),
                        Some(x) => cur.push(x),
                        None => return Err("unclosed double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next().ok_or("dangling backslash")?);
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// Parses `hey ...`; `None` when the command is not a hey invocation.
pub fn parse(cmd: &str) -> Option<Result<HeySpec, String>> {
    let words = match shell_words(cmd) {
        Ok(w) => w,
        Err(e) => return Some(Err(e)),
    };
    let prog = words.first()?;
    if prog != "hey" && !prog.ends_with("/hey") {
        return None;
    }
    Some(parse_args(&words[1..]))
}

fn parse_args(args: &[String]) -> Result<HeySpec, String> {
    let mut spec = HeySpec {
        url: String::new(),
        concurrency: 50,
        rate_per_worker: 0.0,
        duration: None,
        requests: 200,
        method: "GET".into(),
        headers: vec![],
        body: None,
        timeout: Some(Duration::from_secs(20)),
    };
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let mut value = || -> Result<String, String> {
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| format!("hey: flag {a} needs a value"))
        };
        match a.as_str() {
            "-c" => spec.concurrency = value()?.parse().map_err(|_| "hey: -c expects a number")?,
            "-q" => {
                spec.rate_per_worker = value()?.parse().map_err(|_| "hey: -q expects a number")?
            }
            "-n" => spec.requests = value()?.parse().map_err(|_| "hey: -n expects a number")?,
            "-z" => {
                spec.duration = Some(
                    crate::util::duration::parse(&value()?).map_err(|e| format!("hey: -z: {e}"))?,
                )
            }
            "-t" => {
                let t: u64 = value()?.parse().map_err(|_| "hey: -t expects seconds")?;
                spec.timeout = (t > 0).then(|| Duration::from_secs(t));
            }
            "-m" => spec.method = value()?.to_ascii_uppercase(),
            "-H" => {
                let h = value()?;
                // The value may be a credential: the error names the flag, not it.
                let (k, v) = h.split_once(':').ok_or("hey: -H expects \"Name: value\"")?;
                spec.headers
                    .push((k.trim().to_string(), v.trim().to_string()));
            }
            "-d" => spec.body = Some(value()?),
            "-T" => {
                let v = value()?;
                spec.headers.push(("Content-Type".into(), v));
            }
            "-A" => {
                let v = value()?;
                spec.headers.push(("Accept".into(), v));
            }
            "-disable-keepalive" | "-disable-compression" | "-disable-redirects" | "-h2" => {}
            "-cpus" | "-o" | "-x" | "-a" | "-D" => {
                value()?;
            }
            url if !url.starts_with('-') && spec.url.is_empty() => spec.url = url.to_string(),
            other => return Err(format!("hey: unsupported flag {other:?}")),
        }
        i += 1;
    }
    if spec.url.is_empty() {
        return Err("hey: missing the URL".into());
    }
    if spec.concurrency == 0 {
        return Err("hey: -c must be at least 1".into());
    }
    Ok(spec)
}

/// The command line with what may be a credential masked, for logs: header values
/// (`-H 'Authorization: ***'`), basic auth (`-a ***`) and a URL's user-info.
pub fn redact(cmd: &str) -> String {
    let Ok(words) = shell_words(cmd) else {
        return "hey (unparsable command line)".into();
    };
    let mut out = Vec::with_capacity(words.len());
    let mut prev = "";
    for w in &words {
        let shown = match prev {
            "-H" => match w.split_once(':') {
                Some((name, _)) => format!("{name}: ***"),
                None => "***".into(),
            },
            "-a" => "***".into(),
            _ => redact_userinfo(w),
        };
        out.push(quote(&shown));
        prev = w;
    }
    out.join(" ")
}

fn redact_userinfo(word: &str) -> String {
    let Some((scheme, rest)) = word.split_once("://") else {
        return word.to_string();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{}", &rest[authority.len()..]),
        None => word.to_string(),
    }
}

/// Single-quotes a word when a shell would split or expand it.
fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flagger_guide_lines() {
        let s = parse("hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/")
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.concurrency, s.rate_per_worker, s.duration),
            (2, 10.0, Some(Duration::from_secs(60)))
        );
        assert_eq!(s.url, "http://podinfo-canary.test:9898/");
        let s = parse(r#"hey -z 2m -q 10 -c 2 -m POST -H "Content-Type: application/json" -d '{"test": true}' -t 5 http://x.y/echo"#).unwrap().unwrap();
        assert_eq!(s.method, "POST");
        assert_eq!(
            s.headers,
            vec![("Content-Type".to_string(), "application/json".to_string())]
        );
        assert_eq!(s.body.as_deref(), Some("{\"test\": true}"));
        assert_eq!(s.timeout, Some(Duration::from_secs(5)));
        assert!(parse("curl http://x").is_none());
        assert_eq!(
            parse("hey -Q 3 http://x").unwrap().unwrap_err(),
            "hey: unsupported flag \"-Q\""
        );
        assert_eq!(
            parse("hey -c 2").unwrap().unwrap_err(),
            "hey: missing the URL"
        );
    }

    #[test]
    fn redaction_hides_headers_basic_auth_and_user_info() {
        let cmd = r#"hey -z 1m -H "Authorization: Bearer s3cr3t" -H 'X-Canary: insider' -a user:pw -c 2 http://bob:pw2@podinfo.test:9898/?q=1"#;
        let shown = redact(cmd);
        assert_eq!(
            shown,
            "hey -z 1m -H 'Authorization: ***' -H 'X-Canary: ***' -a '***' -c 2 'http://***@podinfo.test:9898/?q=1'"
        );
        for secret in ["s3cr3t", "insider", "user:pw", "pw2"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(
            parse(&shown).unwrap().unwrap().url,
            "http://***@podinfo.test:9898/?q=1",
            "the shown line is still a valid command"
        );
        assert_eq!(
            parse("hey -H Authorization=s3cr3t http://x/")
                .unwrap()
                .unwrap_err(),
            "hey: -H expects \"Name: value\""
        );
    }
}
