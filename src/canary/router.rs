//! The traffic-routing edge of the canary engine, in Flagger's shape: a router
//! reconciles the route objects of a canary, sets and reads its routes (primary,
//! canary, mirror), and finalizes them when the Canary goes. Each router states what
//! it can do; a Canary asking for more than its provider supports is refused when it
//! is loaded (`spec::parse`). The local target's proxy implements it
//! (`targets::local::canary`); Kubernetes meshes and ingresses will.

use super::spec::CanarySpec;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;

/// A boxed future, so the traits stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A router's failure.
#[derive(Debug, thiserror::Error)]
#[error("{router}: {message}")]
pub struct Error {
    /// Which router (`proxy`, `istio`...) and what it was doing.
    pub router: String,
    /// Why.
    pub message: String,
}

/// Result with the router error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a router can do with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Split traffic by weight (canary releases).
    pub weights: bool,
    /// Send requests matching header or cookie rules to the canary (A/B testing).
    pub matches: bool,
    /// Copy requests to the canary (Blue/Green mirroring).
    pub mirroring: bool,
    /// Keep a user on the canary once routed there (`sessionAffinity`).
    pub session_affinity: bool,
}

impl Capabilities {
    /// Everything.
    pub const ALL: Capabilities = Capabilities {
        weights: true,
        matches: true,
        mirroring: true,
        session_affinity: true,
    };
}

/// What Flagger's providers support, from Flagger's feature tables; `None` for a
/// provider gitcanary does not know. No provider, or `gitcanary`, is the local proxy.
pub fn provider_capabilities(provider: Option<&str>) -> Option<Capabilities> {
    let caps = |weights, matches, mirroring, session_affinity| Capabilities {
        weights,
        matches,
        mirroring,
        session_affinity,
    };
    // The provider may name a version or a class (`gatewayapi:v1`, `nginx`).
    let name = provider.map(|p| p.split(':').next().unwrap_or(p));
    Some(match name {
        None | Some("gitcanary") => Capabilities::ALL,
        Some("istio") | Some("gatewayapi") => Capabilities::ALL,
        Some("appmesh") | Some("contour") | Some("gloo") | Some("nginx") | Some("apisix") => {
            caps(true, true, false, false)
        }
        Some("linkerd") | Some("kuma") | Some("osm") | Some("skipper") | Some("traefik") => {
            caps(true, false, false, false)
        }
        // Kubernetes CNI: Blue/Green by switching the Service, no traffic split.
        Some("kubernetes") => caps(false, false, false, false),
        Some(_) => return None,
    })
}

/// What a Canary's analysis asks of its router: `(field, feature)` for each feature
/// `caps` lacks.
pub fn unsupported(
    caps: &Capabilities,
    weighted: bool,
    matches: bool,
    mirror: bool,
    session_affinity: bool,
) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    if weighted && !caps.weights {
        out.push(("spec.analysis.stepWeight", "weighted traffic"));
    }
    if matches && !caps.matches {
        out.push((
            "spec.analysis.match",
            "header and cookie matching (A/B testing)",
        ));
    }
    if mirror && !caps.mirroring {
        out.push(("spec.analysis.mirror", "traffic mirroring"));
    }
    if session_affinity && !caps.session_affinity {
        out.push(("spec.analysis.sessionAffinity", "session affinity"));
    }
    out
}

/// What Canary `c` asks of a router with `caps` that it lacks: `(field, feature)`
/// pairs. The engine refuses to analyse such a canary rather than route it wrongly.
pub fn unsupported_by(caps: &Capabilities, c: &CanarySpec) -> Vec<(&'static str, &'static str)> {
    let a = &c.analysis;
    unsupported(
        caps,
        a.step_weight > 0 || !a.step_weights.is_empty(),
        a.match_rules.as_array().is_some_and(|m| !m.is_empty()),
        a.mirror,
        a.session_affinity.is_some(),
    )
}

/// A canary's traffic split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    /// Percent to the primary.
    pub primary: u32,
    /// Percent to the canary.
    pub canary: u32,
    /// Whether requests are mirrored to the canary.
    pub mirror: bool,
    /// Whether the spec's `match` rules are in force (A/B testing).
    pub ab: bool,
}

impl Routes {
    /// `canary` percent to the canary, the rest to the primary.
    pub fn weighted(canary: u32, mirror: bool, ab: bool) -> Routes {
        Routes {
            primary: 100u32.saturating_sub(canary),
            canary,
            mirror,
            ab,
        }
    }
}

/// How a removed Canary's routes are finalized.
#[derive(Clone, Debug)]
pub struct Finalize {
    /// The Canary's namespace.
    pub namespace: String,
    /// The Canary's name.
    pub name: String,
    /// The apex Service.
    pub service: String,
    /// With `revertOnDeletion`: the target Deployment the apex goes back to.
    pub revert_to: Option<Value>,
}

/// Routes a canary's traffic.
pub trait TrafficRouter: Send + Sync {
    /// What this router can do.
    fn capabilities(&self) -> Capabilities;
    /// Creates or updates the canary's route objects (its apex, primary and canary
    /// Services) for target Deployment `target`.
    fn reconcile<'a>(&'a self, c: &'a CanarySpec, target: &'a Value) -> BoxFuture<'a, Result<()>>;
    /// Sets the split.
    fn set_routes<'a>(&'a self, c: &'a CanarySpec, routes: Routes) -> BoxFuture<'a, Result<()>>;
    /// The split in force, if the router has one for this canary.
    fn get_routes<'a>(&'a self, c: &'a CanarySpec) -> BoxFuture<'a, Result<Option<Routes>>>;
    /// Removes the canary's routes; with `revert_to`, the apex selects that
    /// Deployment's pods first, outliving the Canary (Flagger's finalizer).
    fn finalize<'a>(&'a self, f: &'a Finalize) -> BoxFuture<'a, Result<()>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_state_what_flagger_supports() {
        let linkerd = provider_capabilities(Some("linkerd")).unwrap();
        assert_eq!(
            unsupported(&linkerd, true, true, true, false),
            vec![
                (
                    "spec.analysis.match",
                    "header and cookie matching (A/B testing)"
                ),
                ("spec.analysis.mirror", "traffic mirroring")
            ]
        );
        let nginx = provider_capabilities(Some("nginx")).unwrap();
        assert!(unsupported(&nginx, true, true, false, false).is_empty());
        let k8s = provider_capabilities(Some("kubernetes")).unwrap();
        assert_eq!(
            unsupported(&k8s, true, false, false, false),
            vec![("spec.analysis.stepWeight", "weighted traffic")]
        );
        assert!(unsupported(&k8s, false, false, false, false).is_empty());
        for p in [
            None,
            Some("gitcanary"),
            Some("istio"),
            Some("gatewayapi:v1beta1"),
        ] {
            assert_eq!(provider_capabilities(p), Some(Capabilities::ALL), "{p:?}");
        }
        assert_eq!(provider_capabilities(Some("haproxy")), None);
    }

    #[test]
    fn a_router_lacking_what_a_canary_asks_is_named() {
        let c = crate::canary::spec::parse(
            &serde_json::json!({"metadata": {"name": "x", "namespace": "test"},
            "spec": {"targetRef": {"name": "x"}, "service": {"port": 80},
                "analysis": {"interval": "1m", "threshold": 5, "iterations": 10, "mirror": true}}}),
        )
        .unwrap();
        assert!(unsupported_by(&Capabilities::ALL, &c).is_empty());
        let weights_only = provider_capabilities(Some("linkerd")).unwrap();
        assert_eq!(
            unsupported_by(&weights_only, &c),
            vec![("spec.analysis.mirror", "traffic mirroring")]
        );
    }

    #[test]
    fn weighted_routes_add_up_to_a_hundred() {
        assert_eq!(
            Routes::weighted(30, false, false),
            Routes {
                primary: 70,
                canary: 30,
                mirror: false,
                ab: false
            }
        );
        assert_eq!(Routes::weighted(100, true, false).primary, 0);
    }
}
