//! Flagger's `match` rules of an A/B analysis (header exact, prefix or regex; cookies
//! are the `cookie` header), parsed once at load so a rule that does not compile is a
//! load-time error. Routers apply them.

use regex::Regex;

/// How a header value is matched.
#[derive(Clone, Debug)]
pub enum StringMatch {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Regex (unanchored, as Envoy's `safe_regex` full-match is approximated by `^...$` in specs).
    Regex(Regex),
}

impl StringMatch {
    /// Whether `v` matches.
    pub fn matches(&self, v: &str) -> bool {
        match self {
            StringMatch::Exact(e) => v == e,
            StringMatch::Prefix(p) => v.starts_with(p.as_str()),
            StringMatch::Regex(r) => r.is_match(v),
        }
    }
}

/// One `match` entry: every header condition must hold.
#[derive(Clone, Debug, Default)]
pub struct MatchRule {
    /// (lower-case header name, condition)
    pub headers: Vec<(String, StringMatch)>,
}

/// Parses Flagger `match` entries (`[{headers: {x-canary: {exact: insider}}}]`).
pub fn parse_matches(v: &serde_json::Value) -> Result<Vec<MatchRule>, String> {
    let mut out = Vec::new();
    for (i, m) in v.as_array().into_iter().flatten().enumerate() {
        let mut rule = MatchRule::default();
        for (name, cond) in m["headers"].as_object().into_iter().flatten() {
            let sm = if let Some(e) = cond["exact"].as_str() {
                StringMatch::Exact(e.to_string())
            } else if let Some(p) = cond["prefix"].as_str() {
                StringMatch::Prefix(p.to_string())
            } else if let Some(r) = cond["regex"].as_str() {
                StringMatch::Regex(Regex::new(r).map_err(|e| {
                    format!(
                        "match[{i}].headers.{name}.regex: {}",
                        crate::image::policy::regex_error(&e)
                    )
                })?)
            } else {
                return Err(format!(
                    "match[{i}].headers.{name}: expected exact, prefix or regex"
                ));
            };
            rule.headers.push((name.to_ascii_lowercase(), sm));
        }
        out.push(rule);
    }
    Ok(out)
}
