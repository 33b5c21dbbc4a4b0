//! HelmRelease `spec.postRenderers[].kustomize`: parsed from the release (pure) and
//! applied to what the chart rendered, hooks included, as Flux's post-renderer does.

use super::hooks::Hook;
use crate::manifest::{ManifestError, Object};
use serde_json::Value;

/// A v2 HelmRelease's `spec.postRenderers[].kustomize`: patches and image overrides
/// applied to everything the chart renders (hooks too), as Flux's post-renderer does.
#[derive(Default)]
pub(crate) struct PostRender {
    patches: Vec<crate::manifest::patch::Patch>,
    images: Vec<crate::manifest::kustomize::ImageOverride>,
}

impl PostRender {
    #[allow(clippy::type_complexity)]
    pub(crate) fn apply(
        &self,
        objects: Vec<Object>,
        mut hooks: Vec<Hook>,
        errors: Vec<ManifestError>,
    ) -> Result<(Vec<Object>, Vec<Hook>, Vec<ManifestError>), String> {
        if self.patches.is_empty() && self.images.is_empty() {
            return Ok((objects, hooks, errors));
        }
        let transform = |value: &mut Value| -> Result<(), String> {
            for p in &self.patches {
                if p.matches(value) {
                    p.apply(value).map_err(|e| {
                        format!(
                            "{} {}: {e}",
                            value["kind"].as_str().unwrap_or_default(),
                            value["metadata"]["name"].as_str().unwrap_or_default()
                        )
                    })?;
                }
            }
            if !self.images.is_empty() {
                crate::manifest::kustomize::apply_images(value, &self.images);
            }
            Ok(())
        };
        let mut out = Vec::with_capacity(objects.len());
        for o in objects {
            let mut value = o.value();
            transform(&mut value)?;
            out.push(Object::from_json(
                o.key.clone(),
                o.api_version.clone(),
                &value,
                o.origin.clone(),
            ));
        }
        for h in &mut hooks {
            transform(&mut h.object)?;
        }
        Ok((out, hooks, errors))
    }
}

pub(crate) fn post_renderers(hr: &Value) -> Result<PostRender, (String, String)> {
    use crate::manifest::kustomize::ImageOverride;
    use crate::manifest::patch::{Patch, Selector};
    let mut out = PostRender::default();
    for (i, pr) in hr["spec"]["postRenderers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let base = format!("spec.postRenderers[{i}].kustomize");
        let k = &pr["kustomize"];
        if !k.is_object() {
            return Err((
                format!("spec.postRenderers[{i}]"),
                "only kustomize post-renderers are supported".into(),
            ));
        }
        let target = |field: &str, t: &Value| -> Result<Option<Selector>, (String, String)> {
            if t.is_null() {
                return Ok(None);
            }
            Selector::from_value(t)
                .map(Some)
                .map_err(|e| (field.to_string(), e))
        };
        for (j, p) in entries(&k["patches"]) {
            let field = format!("{base}.patches[{j}]");
            let text = p["patch"].as_str().ok_or_else(|| {
                (
                    format!("{field}.patch"),
                    "missing required field".to_string(),
                )
            })?;
            let t = target(&field, &p["target"])?;
            out.patches
                .push(Patch::parse(text, t).map_err(|e| (field.clone(), e))?);
        }
        for (j, p) in entries(&k["patchesStrategicMerge"]) {
            let field = format!("{base}.patchesStrategicMerge[{j}]");
            if p["kind"].as_str().is_none() || p["metadata"]["name"].as_str().is_none() {
                return Err((field, "needs kind and metadata.name".into()));
            }
            out.patches.push(Patch::Strategic(None, p.clone()));
        }
        for (j, p) in entries(&k["patchesJson6902"]) {
            let field = format!("{base}.patchesJson6902[{j}]");
            let t = target(&field, &p["target"])?.ok_or_else(|| {
                (
                    format!("{field}.target"),
                    "missing required field".to_string(),
                )
            })?;
            let ops = p["patch"].as_array().cloned().ok_or_else(|| {
                (
                    format!("{field}.patch"),
                    "expected a list of operations".to_string(),
                )
            })?;
            out.patches
                .push(Patch::from_ops(t, ops).map_err(|e| (field.clone(), e))?);
        }
        for img in k["images"].as_array().into_iter().flatten() {
            let s = |f: &str| match &img[f] {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            out.images.push(ImageOverride {
                name: s("name").unwrap_or_default(),
                new_name: s("newName"),
                new_tag: s("newTag"),
                digest: s("digest"),
            });
        }
    }
    Ok(out)
}

/// The items of a list field with their index (none when absent).
fn entries(v: &Value) -> impl Iterator<Item = (usize, &Value)> {
    v.as_array().into_iter().flatten().enumerate()
}
