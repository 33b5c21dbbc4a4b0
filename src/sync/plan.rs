//! `plan(desired, inventory)`: the pure decision of what to create, update, leave alone
//! or prune, and why. Namespaces are written first and pruned last, so objects never
//! land in a namespace that does not exist yet, nor outlive theirs.

use super::inventory::Inventory;
use crate::manifest::{Object, ObjectKey};
use std::collections::HashSet;
use std::fmt;

/// What happens to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Not in the target yet.
    Create,
    /// In the target with different content.
    Update,
    /// Same hash as last applied; not written.
    Unchanged,
    /// Removed from Git: delete from the target.
    Prune,
    /// Removed from Git but pruning is disabled: left in the target, dropped from the inventory.
    Orphan,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Create => "created",
            Op::Update => "configured",
            Op::Unchanged => "unchanged",
            Op::Prune => "pruned",
            Op::Orphan => "orphaned",
        })
    }
}

/// One decision.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Action {
    /// Which object.
    pub key: ObjectKey,
    /// What to do.
    pub op: Op,
    /// Why, in words.
    pub reason: String,
    /// Index into the desired list, for creates, updates and unchanged objects.
    #[serde(skip)]
    pub desired: Option<usize>,
}

/// The full decision for one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApplyPlan {
    /// Writes first (namespaces leading), then deletions (namespaces last).
    pub actions: Vec<Action>,
}

impl ApplyPlan {
    /// Number of actions with the given op.
    pub fn count(&self, op: Op) -> usize {
        self.actions.iter().filter(|a| a.op == op).count()
    }

    /// Whether applying would change the target.
    pub fn has_changes(&self) -> bool {
        self.actions.iter().any(|a| a.op != Op::Unchanged)
    }
}

/// Decides what applying `desired` on top of `inventory` takes.
pub fn plan(desired: &[Object], inventory: &Inventory) -> ApplyPlan {
    let mut writes = Vec::with_capacity(desired.len());
    let mut wanted: HashSet<&ObjectKey> = HashSet::with_capacity(desired.len());
    for (i, obj) in desired.iter().enumerate() {
        wanted.insert(&obj.key);
        let (op, reason) = match inventory.entries.get(&obj.key) {
            None => (Op::Create, "not in inventory".to_string()),
            Some(e) if !e.live => (
                Op::Create,
                "in inventory but missing from target".to_string(),
            ),
            Some(e) if e.hash.is_empty() => {
                (Op::Update, "previous apply was interrupted".to_string())
            }
            Some(e) if e.hash != obj.hash => (
                Op::Update,
                format!(
                    "content changed ({} -> {})",
                    short(&e.hash),
                    short(&obj.hash)
                ),
            ),
            Some(_) => (Op::Unchanged, "hash matches last applied".to_string()),
        };
        writes.push(Action {
            key: obj.key.clone(),
            op,
            reason,
            desired: Some(i),
        });
    }
    // Stable sort: namespaces first, otherwise the order found in Git.
    writes.sort_by_key(|a| !a.key.is_namespace());
    let mut removals: Vec<Action> = inventory
        .entries
        .iter()
        .filter(|(k, _)| !wanted.contains(k))
        .map(|(k, e)| {
            let (op, reason) = if e.prune {
                (Op::Prune, "removed from source".to_string())
            } else {
                (
                    Op::Orphan,
                    "removed from source; pruning disabled by annotation".to_string(),
                )
            };
            Action {
                key: k.clone(),
                op,
                reason,
                desired: None,
            }
        })
        .collect();
    removals.sort_by_key(|a| a.key.is_namespace());
    writes.extend(removals);
    ApplyPlan { actions: writes }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::object::Origin;
    use crate::sync::inventory::Entry;

    fn obj(kind: &str, ns: &str, name: &str, body: serde_json::Value) -> Object {
        let api = if kind == "Namespace" || kind == "ConfigMap" {
            "v1"
        } else {
            "apps/v1"
        };
        Object::from_json(
            ObjectKey::new(api, kind, ns, name),
            api.into(),
            &body,
            Origin {
                file: "f.yaml".into(),
                line: 1,
            },
        )
    }

    fn entry(o: &Object, prune: bool) -> Entry {
        Entry {
            api_version: o.api_version.clone(),
            hash: o.hash.clone(),
            revision: "r1".into(),
            file: "f.yaml".into(),
            prune,
            live: true,
        }
    }

    #[test]
    fn creates_updates_prunes_with_reasons_and_order() {
        let ns = obj("Namespace", "", "test", serde_json::json!({"a": 1}));
        let cm = obj("ConfigMap", "test", "cfg", serde_json::json!({"data": 1}));
        let cm2 = obj("ConfigMap", "test", "cfg", serde_json::json!({"data": 2}));
        let same = obj("Deployment", "test", "web", serde_json::json!({"x": 1}));
        let gone = obj("Deployment", "test", "old", serde_json::json!({}));
        let old_ns = obj("Namespace", "", "old", serde_json::json!({}));
        let kept = obj("Deployment", "test", "keep", serde_json::json!({}));
        let mut inv = Inventory::default();
        for (o, prune) in [
            (&cm, true),
            (&same, true),
            (&old_ns, true),
            (&gone, true),
            (&kept, false),
        ] {
            inv.entries.insert(o.key.clone(), entry(o, prune));
        }
        let p = plan(&[cm2, same, ns], &inv);
        let got: Vec<(String, Op)> = p
            .actions
            .iter()
            .map(|a| (a.key.to_string(), a.op))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Namespace/test".into(), Op::Create),
                ("ConfigMap/test/cfg".into(), Op::Update),
                ("Deployment/test/web".into(), Op::Unchanged),
                ("Deployment/test/keep".into(), Op::Orphan),
                ("Deployment/test/old".into(), Op::Prune),
                ("Namespace/old".into(), Op::Prune),
            ]
        );
        assert!(p.actions[1].reason.starts_with("content changed"));
        assert!(p.has_changes());
    }

    #[test]
    fn missing_from_target_is_recreated_and_identical_is_noop() {
        let cm = obj("ConfigMap", "test", "cfg", serde_json::json!({}));
        let mut inv = Inventory::default();
        inv.entries.insert(cm.key.clone(), entry(&cm, true));
        assert!(!plan(std::slice::from_ref(&cm), &inv).has_changes());
        inv.entries.get_mut(&cm.key).unwrap().live = false;
        assert_eq!(plan(&[cm], &inv).actions[0].op, Op::Create);
    }
}
