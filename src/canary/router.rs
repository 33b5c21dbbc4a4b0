//! The traffic-routing edge of the canary engine. The engine only ever says "this much
//! to the canary, mirrored or not, with or without match rules"; each target implements
//! that: the local target with its proxy's weights, Kubernetes with mesh or ingress
//! routers later.

use super::spec::CanarySpec;
use crate::targets::local::proxy::routing::{parse_matches, Affinity, Route};
use crate::targets::local::proxy::Proxy;

/// Sets a canary's traffic split.
pub trait TrafficRouter: Send + Sync {
    /// Routes `canary_weight` percent to the canary (the rest to the primary), mirrors
    /// when asked, and applies the spec's `match` rules when `ab`.
    fn set_routes(&self, canary: &CanarySpec, canary_weight: u32, mirror: bool, ab: bool);
}

impl TrafficRouter for Proxy {
    fn set_routes(&self, c: &CanarySpec, canary_weight: u32, mirror: bool, ab: bool) {
        // `spec::parse` rejected rules that do not compile, so none is dropped here.
        let matches = if ab {
            parse_matches(&c.analysis.match_rules).unwrap_or_default()
        } else {
            vec![]
        };
        self.set_route(
            &c.namespace,
            &c.service,
            Some(Route {
                primary: format!("{}-primary", c.service),
                canary: Some(format!("{}-canary", c.service)),
                canary_weight,
                matches,
                mirror,
                mirror_weight: c.analysis.mirror_weight.unwrap_or(100),
                // Weighted canaries only: A/B and mirroring pick users by rule.
                affinity: c
                    .analysis
                    .session_affinity
                    .as_ref()
                    .filter(|_| !ab && !mirror)
                    .map(|(cookie, max_age)| Affinity {
                        cookie: cookie.clone(),
                        value: String::new(),
                        max_age: *max_age,
                    }),
            }),
        );
    }
}
