//! The order in which the Kubernetes target carries out an `ApplyPlan`, decided purely
//! from object keys: Namespaces and CustomResourceDefinitions first (a custom resource
//! cannot be applied before its CRD is Established, nor any object before its
//! Namespace), then everything else in Helm's install order; deletions in the reverse
//! of that order with Namespaces last, so nothing outlives its Namespace and a
//! workload goes before the ConfigMaps it reads. Also which kinds are gitcanary's own
//! inputs, read from Git and never sent to the cluster.

use crate::helm::release::INSTALL_ORDER;
use crate::manifest::ObjectKey;
use crate::sync::{Action, ApplyPlan, Op};

/// Kinds that gitcanary consumes as configuration rather than applies, with their API
/// group: Flux's source, Helm and image-automation objects. Canary, MetricTemplate and
/// AlertProvider are applied, so `kubectl get canaries` works as in the Flagger guides.
pub const CONSUMED: &[(&str, &str)] = &[
    ("helm.toolkit.fluxcd.io", "HelmRelease"),
    ("helm.fluxcd.io", "HelmRelease"),
    ("flux.weave.works", "HelmRelease"),
    ("source.toolkit.fluxcd.io", "GitRepository"),
    ("source.toolkit.fluxcd.io", "HelmRepository"),
    ("source.toolkit.fluxcd.io", "OCIRepository"),
    ("image.toolkit.fluxcd.io", "ImageRepository"),
    ("image.toolkit.fluxcd.io", "ImagePolicy"),
    ("image.toolkit.fluxcd.io", "ImageUpdateAutomation"),
];

/// Whether gitcanary reads this object instead of applying it.
pub fn consumed(key: &ObjectKey) -> bool {
    CONSUMED
        .iter()
        .any(|(g, k)| *g == key.group && *k == key.kind)
}

/// One step of the apply: a batch of actions, and whether the CRDs among them must be
/// Established before the next batch starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch<'a> {
    /// The actions, in order.
    pub actions: Vec<&'a Action>,
    /// Wait for the CRDs this batch wrote to report `Established`.
    pub wait_for_crds: bool,
}

fn is_crd(key: &ObjectKey) -> bool {
    key.group == "apiextensions.k8s.io" && key.kind == "CustomResourceDefinition"
}

/// Rank in Helm's install order; kinds Helm does not list (custom resources) go last.
fn install_rank(key: &ObjectKey) -> usize {
    INSTALL_ORDER
        .iter()
        .position(|k| *k == key.kind)
        .unwrap_or(INSTALL_ORDER.len())
}

/// The batches that carry out `plan`: writes of Namespaces and CRDs, then the other
/// writes, then deletions. Unchanged objects and consumed kinds are left out; empty
/// batches are dropped.
pub fn batches(plan: &ApplyPlan) -> Vec<Batch<'_>> {
    let applied = |a: &&Action| !consumed(&a.key);
    // Namespaces and CRDs go first; everything else waits for them.
    let (mut first, mut rest): (Vec<&Action>, Vec<&Action>) = plan
        .actions
        .iter()
        .filter(|a| matches!(a.op, Op::Create | Op::Update))
        .filter(applied)
        .partition(|a| a.key.is_namespace() || is_crd(&a.key));
    first.sort_by_key(|a| !a.key.is_namespace());
    rest.sort_by_key(|a| install_rank(&a.key));
    let mut deletions: Vec<&Action> = plan
        .actions
        .iter()
        .filter(|a| a.op == Op::Prune)
        .filter(applied)
        .collect();
    deletions.sort_by_key(|a| {
        (
            a.key.is_namespace(),
            std::cmp::Reverse(install_rank(&a.key)),
        )
    });
    let wait_for_crds = first.iter().any(|a| is_crd(&a.key));
    [
        Batch {
            actions: first,
            wait_for_crds,
        },
        Batch {
            actions: rest,
            wait_for_crds: false,
        },
        Batch {
            actions: deletions,
            wait_for_crds: false,
        },
    ]
    .into_iter()
    .filter(|b| !b.actions.is_empty())
    .collect()
}

/// A batch cut into stages: runs of actions of the same rank (writes of one kind of
/// Helm's install order, deletions likewise, Namespaces alone), which may go to the
/// API server concurrently; stages go one after another.
pub fn stages<'b, 'a>(batch: &'b Batch<'a>) -> Vec<&'b [&'a Action]> {
    let rank = |a: &Action| {
        (
            a.op == Op::Prune,
            a.key.is_namespace(),
            is_crd(&a.key),
            install_rank(&a.key),
        )
    };
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=batch.actions.len() {
        if i == batch.actions.len() || rank(batch.actions[i]) != rank(batch.actions[i - 1]) {
            out.push(&batch.actions[start..i]);
            start = i;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn act(api: &str, kind: &str, ns: &str, name: &str, op: Op) -> Action {
        Action {
            key: ObjectKey::new(api, kind, ns, name),
            op,
            reason: String::new(),
            desired: None,
        }
    }

    fn names(b: &Batch) -> Vec<String> {
        b.actions.iter().map(|a| a.key.to_string()).collect()
    }

    #[test]
    fn namespaces_and_crds_first_then_helm_order_then_reverse_deletions() {
        let plan = ApplyPlan {
            actions: vec![
                act(
                    "flagger.app/v1beta1",
                    "Canary",
                    "test",
                    "podinfo",
                    Op::Create,
                ),
                act("apps/v1", "Deployment", "test", "podinfo", Op::Create),
                act("v1", "ConfigMap", "test", "cfg", Op::Update),
                act("v1", "Service", "test", "podinfo", Op::Unchanged),
                act(
                    "apiextensions.k8s.io/v1",
                    "CustomResourceDefinition",
                    "",
                    "canaries.flagger.app",
                    Op::Create,
                ),
                act("v1", "Namespace", "", "test", Op::Create),
                act(
                    "helm.toolkit.fluxcd.io/v2",
                    "HelmRelease",
                    "test",
                    "frontend",
                    Op::Create,
                ),
                act("v1", "Namespace", "", "old", Op::Prune),
                act("v1", "ConfigMap", "old", "cfg", Op::Prune),
                act("apps/v1", "Deployment", "old", "web", Op::Prune),
                act("apps/v1", "Deployment", "old", "kept", Op::Orphan),
            ],
        };
        let b = batches(&plan);
        assert_eq!(b.len(), 3);
        assert_eq!(
            names(&b[0]),
            [
                "Namespace/test",
                "CustomResourceDefinition/canaries.flagger.app"
            ]
        );
        assert!(b[0].wait_for_crds);
        assert_eq!(
            names(&b[1]),
            [
                "ConfigMap/test/cfg",
                "Deployment/test/podinfo",
                "Canary/test/podinfo"
            ]
        );
        assert_eq!(
            names(&b[2]),
            ["Deployment/old/web", "ConfigMap/old/cfg", "Namespace/old"]
        );
    }

    #[test]
    fn stages_group_one_rank_and_keep_the_order() {
        let plan = ApplyPlan {
            actions: vec![
                act("apps/v1", "Deployment", "t", "a", Op::Create),
                act("v1", "ConfigMap", "t", "c1", Op::Create),
                act("apps/v1", "Deployment", "t", "b", Op::Update),
                act("v1", "ConfigMap", "t", "c2", Op::Update),
                act("v1", "Namespace", "", "t", Op::Create),
                act("v1", "Namespace", "", "old", Op::Prune),
                act("v1", "ConfigMap", "old", "x", Op::Prune),
            ],
        };
        let b = batches(&plan);
        let got: Vec<Vec<Vec<String>>> = b
            .iter()
            .map(|b| {
                stages(b)
                    .iter()
                    .map(|s| s.iter().map(|a| a.key.to_string()).collect())
                    .collect()
            })
            .collect();
        assert_eq!(
            got,
            vec![
                vec![vec!["Namespace/t".to_string()]],
                vec![
                    vec!["ConfigMap/t/c1".to_string(), "ConfigMap/t/c2".to_string()],
                    vec!["Deployment/t/a".to_string(), "Deployment/t/b".to_string()]
                ],
                vec![
                    vec!["ConfigMap/old/x".to_string()],
                    vec!["Namespace/old".to_string()]
                ],
            ]
        );
    }

    #[test]
    fn a_noop_plan_has_no_batches() {
        let plan = ApplyPlan {
            actions: vec![act("v1", "ConfigMap", "t", "c", Op::Unchanged)],
        };
        assert!(batches(&plan).is_empty());
    }

    #[test]
    fn flux_inputs_are_consumed_but_flagger_objects_applied() {
        let hr = ObjectKey::new("helm.toolkit.fluxcd.io/v2", "HelmRelease", "t", "x");
        let canary = ObjectKey::new("flagger.app/v1beta1", "Canary", "t", "x");
        let policy = ObjectKey::new("image.toolkit.fluxcd.io/v1beta2", "ImagePolicy", "t", "x");
        assert!(consumed(&hr) && consumed(&policy));
        assert!(!consumed(&canary));
    }
}
