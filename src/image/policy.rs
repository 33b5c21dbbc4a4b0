//! Tag policies and the pure selection: `select(policy, tags)` picks the tag the policy
//! ranks highest, and `ranks_above` refuses any move that is not strictly up, so
//! automation never downgrades (image-automation-controller #231, #396).

use crate::util::semver::{Constraint, Version};
use regex::Regex;
use std::cmp::Ordering;
use std::collections::HashMap;

/// Sort order for alphabetical and numerical policies; `Asc` selects the highest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Highest wins.
    Asc,
    /// Lowest wins.
    Desc,
}

/// How tags are ranked.
#[derive(Clone, Debug)]
pub enum Rule {
    /// Highest version in the range.
    Semver(Constraint),
    /// Flux v1 `glob:`: newest image (by creation time) whose tag matches.
    Glob(String),
    /// Flux v1 `regex:`/`regexp:`: newest image whose tag matches.
    Regex(Regex),
    /// Flux v2 `alphabetical`.
    Alphabetical(Order),
    /// Flux v2 `numerical`.
    Numerical(Order),
}

/// A policy: a rule, and optionally Flux v2 `filterTags` (pattern and `extract`).
#[derive(Clone, Debug)]
pub struct Policy {
    /// Ranking rule.
    pub rule: Rule,
    /// Tags must match this; ranking uses the `extract` expansion.
    pub filter: Option<(Regex, String)>,
}

impl Policy {
    /// A policy with no tag filter.
    pub fn new(rule: Rule) -> Self {
        Policy { rule, filter: None }
    }

    /// Parses a Flux v1 tag annotation value: `semver:~2.0`, `glob:1.*`, `regex:^v`,
    /// `regexp:^v`; without a prefix the value is a glob.
    pub fn from_flux_v1(value: &str) -> Result<Policy, String> {
        let (prefix, body) = match value.split_once(':') {
            Some((p, b)) => (p, b),
            None => ("glob", value),
        };
        let rule = match prefix {
            "semver" => Rule::Semver(Constraint::parse(body)?),
            "glob" => Rule::Glob(body.to_string()),
            "regex" | "regexp" => Rule::Regex(
                Regex::new(body)
                    .map_err(|e| format!("invalid regex {body:?}: {}", regex_error(&e)))?,
            ),
            other => {
                return Err(format!(
                    "unknown policy prefix {other:?}: use semver:, glob:, regex: or regexp:"
                ))
            }
        };
        Ok(Policy::new(rule))
    }

    /// Whether the rule needs image creation times (Flux v1 glob and regex).
    pub fn needs_created(&self) -> bool {
        matches!(self.rule, Rule::Glob(_) | Rule::Regex(_))
    }

    /// The value ranked for `tag`, after `filterTags`; `None` if the tag is filtered out.
    fn extracted<'t>(&self, tag: &'t str) -> Option<std::borrow::Cow<'t, str>> {
        match &self.filter {
            None => Some(tag.into()),
            Some((re, extract)) => {
                let caps = re.captures(tag)?;
                if extract.is_empty() {
                    return Some(tag.into());
                }
                let mut out = String::new();
                caps.expand(extract, &mut out);
                Some(out.into())
            }
        }
    }

    /// Whether `tag` is a candidate at all.
    pub fn accepts(&self, tag: &str) -> bool {
        let Some(v) = self.extracted(tag) else {
            return false;
        };
        match &self.rule {
            Rule::Semver(c) => Version::parse(&v).is_some_and(|v| c.matches(&v)),
            Rule::Glob(g) => glob(g, &v),
            Rule::Regex(r) => r.is_match(&v),
            Rule::Alphabetical(_) => true,
            Rule::Numerical(_) => v.parse::<f64>().is_ok(),
        }
    }

    /// Compares two accepted tags; `Greater` means `a` is preferred.
    fn compare(&self, a: &str, b: &str, created: &HashMap<String, i64>) -> Ordering {
        let (Some(xa), Some(xb)) = (self.extracted(a), self.extracted(b)) else {
            return Ordering::Equal;
        };
        let ord = |o: &Order, c: Ordering| if *o == Order::Asc { c } else { c.reverse() };
        match &self.rule {
            Rule::Semver(_) => match (Version::parse(&xa), Version::parse(&xb)) {
                (Some(va), Some(vb)) => va.cmp(&vb),
                (Some(_), None) => Ordering::Greater,
                (None, Some(_)) => Ordering::Less,
                (None, None) => Ordering::Equal,
            },
            Rule::Glob(_) | Rule::Regex(_) => {
                created.get(a).cmp(&created.get(b)).then_with(|| a.cmp(b))
            }
            Rule::Alphabetical(o) => ord(o, xa.cmp(&xb)),
            Rule::Numerical(o) => {
                let (na, nb) = (
                    xa.parse::<f64>().unwrap_or(f64::NAN),
                    xb.parse::<f64>().unwrap_or(f64::NAN),
                );
                ord(o, na.partial_cmp(&nb).unwrap_or(Ordering::Equal))
            }
        }
    }
}

/// The regex crate's error on one line (its Display spans several).
pub fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().last().unwrap_or_default().trim();
    last.strip_prefix("error: ").unwrap_or(last).to_string()
}

/// `*` matches any run, `?` one character; the Flux v1 glob.
pub fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// The tag the policy ranks highest. `created` holds image creation times (Unix
/// seconds) for the time-ranked Flux v1 rules; tags without one are skipped there.
pub fn select<'a>(
    policy: &Policy,
    tags: &'a [String],
    created: &HashMap<String, i64>,
) -> Option<&'a String> {
    tags.iter()
        .filter(|t| policy.accepts(t))
        .filter(|t| !policy.needs_created() || created.contains_key(*t))
        .max_by(|a, b| policy.compare(a, b, created))
}

/// Whether moving from `current` to `candidate` is an upgrade under the policy. A
/// current tag the policy cannot rank (e.g. `latest` under semver) may be replaced.
pub fn ranks_above(
    policy: &Policy,
    candidate: &str,
    current: &str,
    created: &HashMap<String, i64>,
) -> bool {
    if candidate == current {
        return false;
    }
    let comparable = policy.extracted(current).is_some()
        && match &policy.rule {
            Rule::Semver(_) => policy
                .extracted(current)
                .and_then(|v| Version::parse(&v))
                .is_some(),
            Rule::Glob(_) | Rule::Regex(_) => created.contains_key(current),
            Rule::Numerical(_) => policy
                .extracted(current)
                .is_some_and(|v| v.parse::<f64>().is_ok()),
            Rule::Alphabetical(_) => true,
        };
    !comparable || policy.compare(candidate, current, created) == Ordering::Greater
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn semver_selection_never_downgrades() {
        let p = Policy::from_flux_v1("semver:~2.0").unwrap();
        let t = tags(&["2.0.0", "2.0.1", "2.1.0", "3.0.0", "2.0.2-rc.1", "latest"]);
        let none = HashMap::new();
        assert_eq!(select(&p, &t, &none).map(String::as_str), Some("2.0.1"));
        assert!(ranks_above(&p, "2.0.1", "2.0.0", &none));
        assert!(!ranks_above(&p, "2.0.1", "2.0.5", &none), "never downgrade");
        assert!(ranks_above(&p, "2.0.1", "latest", &none));
    }

    #[test]
    fn v1_prefixes_and_errors() {
        assert!(matches!(
            Policy::from_flux_v1("1.*").unwrap().rule,
            Rule::Glob(_)
        ));
        assert!(matches!(
            Policy::from_flux_v1("regexp:^v").unwrap().rule,
            Rule::Regex(_)
        ));
        assert_eq!(
            Policy::from_flux_v1("latest:x").unwrap_err(),
            "unknown policy prefix \"latest\": use semver:, glob:, regex: or regexp:"
        );
        assert!(Policy::from_flux_v1("regex:([")
            .unwrap_err()
            .starts_with("invalid regex"));
        assert!(Policy::from_flux_v1("semver:~x.1")
            .unwrap_err()
            .starts_with("invalid semver range"));
    }

    #[test]
    fn glob_ranks_by_creation_time() {
        let p = Policy::from_flux_v1("glob:master-*").unwrap();
        let t = tags(&["master-a", "master-b", "dev-c"]);
        let created: HashMap<String, i64> = [
            ("master-a".into(), 20),
            ("master-b".into(), 10),
            ("dev-c".into(), 30),
        ]
        .into();
        assert_eq!(
            select(&p, &t, &created).map(String::as_str),
            Some("master-a")
        );
        assert!(!ranks_above(&p, "master-b", "master-a", &created));
    }

    #[test]
    fn v2_filter_extract_and_orders() {
        let mut p = Policy::new(Rule::Numerical(Order::Asc));
        p.filter = Some((
            Regex::new(r"^main-[a-f0-9]+-(?P<ts>[0-9]+)").unwrap(),
            "$ts".into(),
        ));
        let t = tags(&["main-abc1-100", "main-def2-200", "feature-x-300"]);
        assert_eq!(
            select(&p, &t, &HashMap::new()).map(String::as_str),
            Some("main-def2-200")
        );
        let p = Policy::new(Rule::Alphabetical(Order::Desc));
        assert_eq!(
            select(&p, &tags(&["b", "a", "c"]), &HashMap::new()).map(String::as_str),
            Some("a")
        );
    }
}
