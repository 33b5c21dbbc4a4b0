//! The part of kustomize gitcanary honours: `resources`, `namespace`, `images` and the
//! patches (`patches`, `patchesStrategicMerge`, `patchesJson6902`; see `patch`).
//! Every other kustomize feature is refused with an error naming the file and field,
//! rather than silently producing objects that differ from `kustomize build`.

use super::object::ManifestError;
use super::yaml::{parse_documents, Node, Pos};

/// A parsed `kustomization.yaml`.
#[derive(Debug, Default)]
pub struct Kustomization {
    /// Resource paths with the position of each entry.
    pub resources: Vec<(String, Pos)>,
    /// Namespace to set on every namespaced object.
    pub namespace: Option<String>,
    /// Image overrides.
    pub images: Vec<ImageOverride>,
    /// Patches, in file order.
    pub patches: Vec<PatchEntry>,
}

/// One patch entry of a kustomization, before its file is read.
#[derive(Clone, Debug)]
pub struct PatchEntry {
    /// `patches[0]`, for errors.
    pub field: String,
    /// Where the entry is.
    pub pos: Pos,
    /// Inline patch text.
    pub text: Option<String>,
    /// Patch file, relative to the kustomization.
    pub path: Option<String>,
    /// `target`, as JSON.
    pub target: Option<serde_json::Value>,
}

/// One `images:` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageOverride {
    /// Image name to match (without tag).
    pub name: String,
    /// Replacement repository.
    pub new_name: Option<String>,
    /// Replacement tag.
    pub new_tag: Option<String>,
    /// Replacement digest (wins over the tag).
    pub digest: Option<String>,
}

const SUPPORTED: &str = "gitcanary supports resources, bases, namespace, images, patches, patchesStrategicMerge and patchesJson6902";

/// Parses a kustomization file; every problem is returned.
pub fn parse(file: &str, text: &str) -> Result<Kustomization, Vec<ManifestError>> {
    let docs = parse_documents(text).map_err(|e| {
        vec![ManifestError::at(
            file,
            e.pos,
            None,
            format!("invalid YAML: {}", e.message),
        )]
    })?;
    let Some(root) = docs.into_iter().map(|d| d.root).find(|r| !r.is_null()) else {
        return Ok(Kustomization::default());
    };
    let Some(entries) = root.as_map() else {
        return Err(vec![ManifestError::at(
            file,
            root.pos,
            None,
            "expected a mapping",
        )]);
    };
    let mut k = Kustomization::default();
    let mut errors = Vec::new();
    let str_of = |n: &Node, field: &str, errors: &mut Vec<ManifestError>| -> Option<String> {
        match n.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                errors.push(ManifestError::at(
                    file,
                    n.pos,
                    Some(field.into()),
                    format!("expected a string, found {}", n.type_name()),
                ));
                None
            }
        }
    };
    for (key, value) in entries {
        let name = key.scalar_text().unwrap_or_default();
        match name.as_str() {
            "apiVersion" | "kind" | "metadata" => {}
            "namespace" => k.namespace = str_of(value, "namespace", &mut errors),
            "resources" | "bases" => match value.as_seq() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(s) = str_of(item, &format!("{name}[{i}]"), &mut errors) {
                            k.resources.push((s, item.pos));
                        }
                    }
                }
                None if value.is_null() => {}
                None => errors.push(ManifestError::at(
                    file,
                    value.pos,
                    Some(name.clone()),
                    "expected a list of paths",
                )),
            },
            "images" => {
                for (i, item) in value.as_seq().unwrap_or_default().iter().enumerate() {
                    let field = format!("images[{i}]");
                    let get = |f: &str, errors: &mut Vec<ManifestError>| {
                        item.get(f)
                            .and_then(|n| str_of(n, &format!("{field}.{f}"), errors))
                    };
                    let Some(img_name) = get("name", &mut errors) else {
                        errors.push(ManifestError::at(
                            file,
                            item.pos,
                            Some(format!("{field}.name")),
                            "missing required field",
                        ));
                        continue;
                    };
                    let new_tag = match item.get("newTag") {
                        // `newTag: 1.0` is common; read numbers as their text.
                        Some(n) if n.as_str().is_none() && !n.is_null() => n.scalar_text(),
                        Some(n) => n.as_str().map(str::to_string),
                        None => None,
                    };
                    k.images.push(ImageOverride {
                        name: img_name,
                        new_name: get("newName", &mut errors),
                        new_tag,
                        digest: get("digest", &mut errors),
                    });
                }
            }
            "patches" | "patchesJson6902" | "patchesStrategicMerge" => {
                let Some(items) = value.as_seq() else {
                    if !value.is_null() {
                        errors.push(ManifestError::at(
                            file,
                            value.pos,
                            Some(name.clone()),
                            "expected a list",
                        ));
                    }
                    continue;
                };
                for (i, item) in items.iter().enumerate() {
                    let field = format!("{name}[{i}]");
                    if let Some(s) = item.as_str() {
                        if name != "patchesStrategicMerge" {
                            errors.push(ManifestError::at(
                                file,
                                item.pos,
                                Some(field),
                                "expected a mapping with path or patch",
                            ));
                            continue;
                        }
                        let inline = s.contains('\n');
                        k.patches.push(PatchEntry {
                            field,
                            pos: item.pos,
                            text: inline.then(|| s.to_string()),
                            path: (!inline).then(|| s.to_string()),
                            target: None,
                        });
                        continue;
                    }
                    if item.as_map().is_none() {
                        errors.push(ManifestError::at(
                            file,
                            item.pos,
                            Some(field),
                            format!("expected a mapping, found {}", item.type_name()),
                        ));
                        continue;
                    }
                    let text = item
                        .get("patch")
                        .and_then(|n| str_of(n, &format!("{field}.patch"), &mut errors));
                    let path = item
                        .get("path")
                        .and_then(|n| str_of(n, &format!("{field}.path"), &mut errors));
                    if text.is_some() == path.is_some() {
                        errors.push(ManifestError::at(
                            file,
                            item.pos,
                            Some(field),
                            "needs exactly one of path and patch",
                        ));
                        continue;
                    }
                    let target = item.get("target").map(|t| t.to_json());
                    if name == "patchesJson6902" && target.is_none() {
                        errors.push(ManifestError::at(
                            file,
                            item.pos,
                            Some(format!("{field}.target")),
                            "missing required field",
                        ));
                        continue;
                    }
                    k.patches.push(PatchEntry {
                        field,
                        pos: item.pos,
                        text,
                        path,
                        target,
                    });
                }
            }
            other => errors.push(ManifestError::at(
                file,
                key.pos,
                Some(other.to_string()),
                format!("unsupported kustomize field: {SUPPORTED}"),
            )),
        }
    }
    if errors.is_empty() {
        Ok(k)
    } else {
        Err(errors)
    }
}

/// Splits `repo:tag@digest` into repository, tag and digest.
pub fn split_image(image: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    // A colon after the last slash is a tag; before it, a registry port.
    match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..]), digest),
        _ => (rest, None, digest),
    }
}

/// Applies image overrides to every container of every pod template in `obj`.
pub fn apply_images(obj: &mut serde_json::Value, images: &[ImageOverride]) {
    let spec_paths: [&[&str]; 3] = [
        &["spec", "template", "spec"],
        &["spec"],
        &["spec", "jobTemplate", "spec", "template", "spec"],
    ];
    for path in spec_paths {
        let mut target = Some(&mut *obj);
        for p in path {
            target = target.and_then(|n| n.get_mut(*p));
        }
        let Some(node) = target else { continue };
        for list in ["containers", "initContainers"] {
            let Some(containers) = node.get_mut(list).and_then(|c| c.as_array_mut()) else {
                continue;
            };
            for c in containers {
                let Some(image) = c.get("image").and_then(|i| i.as_str()).map(str::to_string)
                else {
                    continue;
                };
                let (repo, tag, digest) = split_image(&image);
                for o in images.iter().filter(|o| o.name == repo) {
                    let repo = o.new_name.as_deref().unwrap_or(repo);
                    let new = match (&o.digest, &o.new_tag) {
                        (Some(d), _) => format!("{repo}@{d}"),
                        (None, Some(t)) => format!("{repo}:{t}"),
                        (None, None) => match (tag, digest) {
                            (_, Some(d)) => format!("{repo}@{d}"),
                            (Some(t), None) => format!("{repo}:{t}"),
                            (None, None) => repo.to_string(),
                        },
                    };
                    c["image"] = new.into();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_fields_are_named() {
        let errs = parse(
            "k/kustomization.yaml",
            "resources: [a.yaml]\nreplicas:\n  - name: x\n    count: 2\npatchesJson6902:\n  - path: p.yaml\n",
        )
        .unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(
            errs[0].to_string(),
            "k/kustomization.yaml:2:1: replicas: unsupported kustomize field: gitcanary supports resources, bases, namespace, images, patches, patchesStrategicMerge and patchesJson6902"
        );
        assert_eq!(
            errs[1].to_string(),
            "k/kustomization.yaml:6:5: patchesJson6902[0].target: missing required field"
        );
    }

    #[test]
    fn images_override() {
        let k = parse(
            "k.yaml",
            "images:\n  - name: ghcr.io/x/podinfo\n    newTag: 6.1.0\n",
        )
        .unwrap();
        let mut obj = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"image": "ghcr.io/x/podinfo:6.0.0"}]}}}});
        apply_images(&mut obj, &k.images);
        assert_eq!(
            obj["spec"]["template"]["spec"]["containers"][0]["image"],
            "ghcr.io/x/podinfo:6.1.0"
        );
        assert_eq!(
            split_image("localhost:5000/app"),
            ("localhost:5000/app", None, None)
        );
        assert_eq!(
            split_image("localhost:5000/app:1.2@sha256:ab"),
            ("localhost:5000/app", Some("1.2"), Some("sha256:ab"))
        );
    }
}
