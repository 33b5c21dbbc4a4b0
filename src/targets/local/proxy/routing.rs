//! Per-request routing decisions, pure: which backend group serves a request, by
//! Flagger's `match` rules (header exact, prefix or regex; cookies are the `cookie`
//! header) and by weight, and whether a copy goes to the mirror.

use std::collections::BTreeMap;

/// Whether a Service selector selects pods with these labels (`matchLabels`
/// semantics: every selector pair present). An empty selector selects nothing, as a
/// Service without a selector has no automatic endpoints.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub use crate::canary::matches::{parse_matches, MatchRule, StringMatch};

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
    /// Session affinity: a request the weight sends to the canary gets this cookie, and
    /// requests carrying it keep going to the canary.
    pub affinity: Option<Affinity>,
}

/// Flagger's `sessionAffinity` cookie for one analysis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Affinity {
    /// Cookie name.
    pub cookie: String,
    /// Value, fresh for each analysis so earlier canaries' users are not kept.
    pub value: String,
    /// `Max-Age` in seconds.
    pub max_age: u64,
}

impl Affinity {
    /// Whether a `Cookie` header carries this affinity.
    pub fn in_cookie_header(&self, header: &str) -> bool {
        header.split(';').any(|c| {
            c.trim()
                .split_once('=')
                .is_some_and(|(k, v)| k == self.cookie && v == self.value)
        })
    }

    /// The `Set-Cookie` value.
    pub fn set_cookie(&self) -> String {
        format!(
            "{}={}; Max-Age={}; Path=/",
            self.cookie, self.value, self.max_age
        )
    }
}

/// Where one request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision<'a> {
    /// The backend Service that answers.
    pub backend: &'a str,
    /// A backend that gets a copy.
    pub mirror: Option<&'a str>,
    /// A `Set-Cookie` value to add to the response (session affinity).
    pub set_cookie: Option<String>,
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
            set_cookie: None,
        };
    };
    let matched = route.matches.iter().any(|m| {
        m.headers
            .iter()
            .all(|(h, sm)| header(h).is_some_and(|v| sm.matches(&v)))
    });
    let sticky = route.affinity.as_ref().is_some_and(|a| {
        route.canary_weight > 0 && header("cookie").is_some_and(|c| a.in_cookie_header(&c))
    });
    let by_weight = !matched && !sticky && roll < route.canary_weight.min(100);
    let backend = if matched || sticky || by_weight {
        canary
    } else {
        route.primary.as_str()
    };
    let mirror = (route.mirror && backend != canary && mirror_roll < route.mirror_weight.min(100))
        .then_some(canary);
    let set_cookie = route
        .affinity
        .as_ref()
        .filter(|_| by_weight)
        .map(Affinity::set_cookie);
    Decision {
        backend,
        mirror,
        set_cookie,
    }
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
    fn session_affinity_keeps_canary_users_on_the_canary() {
        let mut r = route(10);
        r.affinity = Some(Affinity {
            cookie: "flagger-cookie".into(),
            value: "abc".into(),
            max_age: 60,
        });
        // The weight sends this request to the canary: it gets the cookie.
        let first = choose(&r, &|_| None, 5, 0);
        assert_eq!(first.backend, "app-canary");
        assert_eq!(
            first.set_cookie.as_deref(),
            Some("flagger-cookie=abc; Max-Age=60; Path=/")
        );
        // With the cookie, every roll goes to the canary; no cookie is set again.
        let cookie = |h: &str| (h == "cookie").then(|| "x=1; flagger-cookie=abc".to_string());
        for roll in [0, 50, 99] {
            let d = choose(&r, &cookie, roll, 0);
            assert_eq!((d.backend, d.set_cookie), ("app-canary", None));
        }
        // A stale value, or weight 0 (promoted or rolled back), goes by weight.
        let stale = |h: &str| (h == "cookie").then(|| "flagger-cookie=old".to_string());
        assert_eq!(choose(&r, &stale, 50, 0).backend, "app-primary");
        r.canary_weight = 0;
        assert_eq!(choose(&r, &cookie, 50, 0).backend, "app-primary");
    }

    #[test]
    fn mirroring_and_selectors() {
        let mut r = route(0);
        r.mirror = true;
        assert_eq!(
            choose(&r, &|_| None, 50, 0),
            Decision {
                backend: "app-primary",
                mirror: Some("app-canary"),
                set_cookie: None,
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
