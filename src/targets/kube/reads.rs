//! How a health check reads its objects: [`plan`] (pure) groups the keys by kind and
//! namespace and decides, per group, between one paged LIST of the objects carrying
//! gitcanary's label and one GET per object; `Cluster::list_statuses` in `executor` acts
//! on it. A poll of 1,000 Deployments in one namespace costs a few LISTs, not 1,000
//! GETs. Each object is reduced to its kstatus [`Status`](super::health::Status) as
//! soon as it is read, so a poll never holds more than a page of live objects.

use crate::manifest::ObjectKey;
use std::collections::BTreeMap;

/// A group of this size or more is listed; a smaller one is read with GETs, as a LIST
/// answers with every labelled object of the kind in the namespace, wanted or not.
pub const LIST_FROM: usize = 2;
/// Objects per LIST page: live objects are large (managedFields), and a page is held
/// whole while its objects are judged.
pub const PAGE: u32 = 100;

/// The objects of one kind in one namespace, and how to read them.
#[derive(Debug, PartialEq, Eq)]
pub struct Group<'a> {
    /// API group of the kind (empty for the core group).
    pub group: &'a str,
    /// The kind.
    pub kind: &'a str,
    /// The namespace (empty for cluster-scoped kinds).
    pub namespace: &'a str,
    /// Positions in the keys given to [`plan`].
    pub positions: Vec<usize>,
    /// One LIST rather than a GET per object.
    pub list: bool,
}

/// Groups `keys` by (group, kind, namespace), in that order, and decides how to read
/// each group.
pub fn plan(keys: &[ObjectKey]) -> Vec<Group<'_>> {
    let mut groups: BTreeMap<(&str, &str, &str), Vec<usize>> = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        groups
            .entry((&k.group, &k.kind, &k.namespace))
            .or_default()
            .push(i);
    }
    groups
        .into_iter()
        .map(|((group, kind, namespace), positions)| Group {
            group,
            kind,
            namespace,
            list: positions.len() >= LIST_FROM,
            positions,
        })
        .collect()
}

/// `obj` as the health rules read it: items of a LIST come without `apiVersion` and
/// `kind` (the list carries them), and kstatus decides by kind.
pub fn with_type(mut obj: serde_json::Value, api_version: &str, kind: &str) -> serde_json::Value {
    if let Some(map) = obj.as_object_mut() {
        map.entry("apiVersion")
            .or_insert_with(|| api_version.into());
        map.entry("kind").or_insert_with(|| kind.into());
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_group_by_kind_and_namespace_and_only_groups_are_listed() {
        let keys = [
            ObjectKey::new("apps/v1", "Deployment", "a", "web"),
            ObjectKey::new("batch/v1", "Job", "a", "migrate"),
            ObjectKey::new("apps/v1", "Deployment", "b", "web"),
            ObjectKey::new("apps/v1", "Deployment", "a", "api"),
            ObjectKey::new("apps/v1", "StatefulSet", "a", "db"),
        ];
        let groups = plan(&keys);
        let summary: Vec<(&str, &str, &[usize], bool)> = groups
            .iter()
            .map(|g| (g.kind, g.namespace, g.positions.as_slice(), g.list))
            .collect();
        assert_eq!(
            summary,
            [
                ("Deployment", "a", &[0, 3][..], true),
                ("Deployment", "b", &[2][..], false),
                ("StatefulSet", "a", &[4][..], false),
                ("Job", "a", &[1][..], false),
            ]
        );
        assert!(plan(&[]).is_empty());
    }

    #[test]
    fn list_items_get_their_type_back_and_keep_one_they_have() {
        let item = with_type(
            json!({"metadata": {"name": "web"}}),
            "apps/v1",
            "Deployment",
        );
        assert_eq!(item["kind"], "Deployment");
        assert_eq!(item["apiVersion"], "apps/v1");
        let typed = with_type(
            json!({"kind": "Job", "apiVersion": "batch/v1"}),
            "x/v1",
            "Y",
        );
        assert_eq!(
            (typed["kind"].as_str(), typed["apiVersion"].as_str()),
            (Some("Job"), Some("batch/v1"))
        );
    }
}
