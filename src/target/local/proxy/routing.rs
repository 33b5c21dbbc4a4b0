//! Per-request routing decisions, pure: which backend group serves a request, by
//! Flagger's `match` rules (header exact, prefix or regex; cookies are the `cookie`
//! header) and by weight, and whether a copy goes to the mirror.

use regex::Regex;
use std::collections::BTreeMap;

/// Whether a Service selector selects pods with these labels (`matchLabels`
/// semantics: every selector pair present). An empty selector selects nothing, as a
/// Service without a selector has no automatic endpoints.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

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
    fn matches(&self, v: &str) -> bool {
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

/// A traffic split on a Service, as the canary engine sets it.
#[derive(Clone, Debug, Default)]
pub struct Route {
    /// The primary backend Service (same namespace).
    pub primary: String,
    /// The canary backend Service.
    pub canary: Option<String>,
    /// Percent of (non-matching) requests sent to the canary.
    pub canary_weight: u32,
    /// Requests matching any rule go to the canary (A/B).
    pub matches: Vec<MatchRule>,
    /// Mirror requests to the canary (responses dropped).
    pub mirror: bool,
    /// Percent of requests mirrored (default 100).
    pub mirror_weight: u32,
}

/// Where one request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision<'a> {
    /// The backend Service that answers.
    pub backend: &'a str,
    /// A backend that gets a copy.
    pub mirror: Option<&'a str>,
}

/// Decides for one request. `roll` and `mirror_roll` are uniform in 0..100.
pub fn choose<'a>(
    route: &'a Route,
    header: &dyn Fn(&str) -> Option<String>,
    roll: u32,
    mirror_roll: u32,
) -> Decision<'a> {
    let Some(canary) = route.canary.as_deref() else {
        return Decision {
            backend: &route.primary,
            mirror: None,
        };
    };
    let matched = route.matches.iter().any(|m| {
        m.headers
            .iter()
            .all(|(h, sm)| header(h).is_some_and(|v| sm.matches(&v)))
    });
    let backend = if matched || roll < route.canary_weight.min(100) {
        canary
    } else {
        route.primary.as_str()
    };
    let mirror = (route.mirror && backend != canary && mirror_roll < route.mirror_weight.min(100))
        .then_some(canary);
    Decision { backend, mirror }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(weight: u32) -> Route {
        Route {
            primary: "app-primary".into(),
            canary: Some("app-canary".into()),
            canary_weight: weight,
            mirror_weight: 100,
            ..Default::default()
        }
    }

    #[test]
    fn weights_split_exactly_over_all_rolls() {
        for w in [0, 10, 50, 100] {
            let r = route(w);
            let canary = (0..100)
                .filter(|roll| choose(&r, &|_| None, *roll, 0).backend == "app-canary")
                .count();
            assert_eq!(canary as u32, w);
        }
    }

    #[test]
    fn header_and_cookie_matches_route_to_canary() {
        let mut r = route(0);
        r.matches = parse_matches(&serde_json::json!([
            {"headers": {"x-canary": {"exact": "insider"}}},
            {"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}}
        ]))
        .unwrap();
        assert_eq!(
            choose(&r, &|h| (h == "x-canary").then(|| "insider".into()), 99, 0).backend,
            "app-canary"
        );
        assert_eq!(
            choose(
                &r,
                &|h| (h == "cookie").then(|| "a=b;canary=always".into()),
                99,
                0
            )
            .backend,
            "app-canary"
        );
        assert_eq!(
            choose(&r, &|h| (h == "x-canary").then(|| "other".into()), 99, 0).backend,
            "app-primary"
        );
    }

    #[test]
    fn mirroring_and_selectors() {
        let mut r = route(0);
        r.mirror = true;
        assert_eq!(
            choose(&r, &|_| None, 50, 0),
            Decision {
                backend: "app-primary",
                mirror: Some("app-canary")
            }
        );
        let sel: BTreeMap<String, String> = [("app".into(), "web".into())].into();
        let labels: BTreeMap<String, String> =
            [("app".into(), "web".into()), ("v".into(), "2".into())].into();
        assert!(selects(&sel, &labels));
        assert!(!selects(&BTreeMap::new(), &labels));
        assert!(!selects(&[("app".into(), "db".into())].into(), &labels));
    }
}
