//! Finds the values image automation may change, in a file's text: containers of
//! workloads and images in HelmRelease `spec.values` marked with the Flux v1
//! annotations, and `# {"$imagepolicy": "ns:name[:tag|:name]"}` setter markers. Pure:
//! it sees text and returns positions; it never reads Git or a registry.

use super::policy::Policy;
use crate::manifest::kustomize::split_image;
use crate::manifest::yaml::{parse_documents, Node, Pos, Style, Value};
use crate::manifest::ManifestError;

/// Which part of an image reference a scalar holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// `repo:tag`
    Full,
    /// Only the tag.
    Tag,
    /// Only the repository.
    Name,
}

/// Where a setter's policy comes from.
#[derive(Clone, Debug)]
pub enum PolicySource {
    /// A Flux v1 annotation on the object, already parsed.
    Inline {
        /// The policy as written in the annotation (for status).
        key: String,
        /// The parsed policy.
        policy: Policy,
    },
    /// A Flux v2 ImagePolicy named by a marker.
    ImagePolicy {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
}

/// One value that automation may rewrite.
#[derive(Clone, Debug)]
pub struct Setter {
    /// Repo-relative file.
    pub file: String,
    /// `Kind/namespace/name` of the object holding it.
    pub object: String,
    /// Container name, alias, or marker reference.
    pub target: String,
    /// What the scalar holds.
    pub part: Part,
    /// Byte span and style of the scalar.
    pub start: usize,
    /// End of the span.
    pub end: usize,
    /// Style.
    pub style: Style,
    /// Line, for messages.
    pub line: u32,
    /// The scalar's value.
    pub current: String,
    /// The image repository, when the file names it (Flux v1); markers get it from the ImagePolicy.
    pub repo: Option<String>,
    /// The policy.
    pub policy: PolicySource,
}

impl Setter {
    /// The current tag, when the scalar holds one.
    pub fn current_tag(&self) -> Option<&str> {
        match self.part {
            Part::Full => split_image(&self.current).1,
            Part::Tag => Some(&self.current),
            Part::Name => None,
        }
    }
}

/// Setters found in a file, and the problems that stop some from being used.
#[derive(Debug, Default)]
pub struct Found {
    /// Usable setters.
    pub setters: Vec<Setter>,
    /// Bad policies or markers, each naming the object and annotation.
    pub errors: Vec<ManifestError>,
}

const PREFIXES: [&str; 2] = ["fluxcd.io/", "flux.weave.works/"];
const WORKLOAD_SPECS: [&[&str]; 3] = [
    &["spec", "template", "spec"],
    &["spec", "jobTemplate", "spec", "template", "spec"],
    &["spec"],
];

fn ann<'a>(annotations: Option<&'a Node>, key: &str) -> Option<&'a Node> {
    PREFIXES
        .iter()
        .find_map(|p| annotations?.get(&format!("{p}{key}")))
}

fn is_true(n: Option<&Node>) -> bool {
    n.and_then(Node::as_str) == Some("true")
}

struct Ctx<'a> {
    file: &'a str,
    object: String,
    annotations: Option<&'a Node>,
    found: &'a mut Found,
}

impl Ctx<'_> {
    /// The policy for `container`: its tag annotation (or `filter.fluxcd.io/<alias>`),
    /// defaulting to `glob:*` as Flux v1 does.
    fn policy(&mut self, container: &str, filter_key: Option<&str>) -> Option<PolicySource> {
        let keys: Vec<String> = PREFIXES
            .iter()
            .map(|p| format!("{p}tag.{container}"))
            .chain(filter_key.map(str::to_string))
            .collect();
        let found = keys.iter().find_map(|k| {
            self.annotations
                .and_then(|a| a.get(k))
                .map(|n| (k.clone(), n))
        });
        let (key, value, pos) = match found {
            Some((k, n)) => (k, n.scalar_text().unwrap_or_default(), n.pos),
            None => {
                return Some(PolicySource::Inline {
                    key: "default".into(),
                    policy: Policy::from_flux_v1("glob:*").expect("valid"),
                })
            }
        };
        match Policy::from_flux_v1(&value) {
            Ok(policy) => Some(PolicySource::Inline { key: value, policy }),
            Err(e) => {
                self.found.errors.push(ManifestError::at(
                    self.file,
                    pos,
                    Some(format!("metadata.annotations.{key}")),
                    format!("{}: {e}", self.object),
                ));
                None
            }
        }
    }

    fn push(
        &mut self,
        target: &str,
        part: Part,
        node: &Node,
        repo: Option<String>,
        policy: PolicySource,
    ) {
        let Some(current) = node
            .scalar_text()
            .filter(|_| !matches!(node.value, Value::Null))
        else {
            return;
        };
        self.found.setters.push(Setter {
            file: self.file.to_string(),
            object: self.object.clone(),
            target: target.to_string(),
            part,
            start: node.pos.offset,
            end: node.end,
            style: node.style,
            line: node.pos.line,
            current,
            repo,
            policy,
        });
    }

    /// An image in HelmRelease values, in any of the shapes Flux v1 recognises.
    fn values_image(&mut self, container: &str, holder: &Node, policy: PolicySource) {
        let Some(image) = holder.get("image") else {
            return;
        };
        match &image.value {
            Value::Str(s) => {
                let (repo, tag, _) = split_image(s);
                if tag.is_some() {
                    self.push(container, Part::Full, image, Some(repo.to_string()), policy);
                } else if let Some(tag) = holder.get("tag") {
                    let repo = match holder.get("registry").and_then(Node::as_str) {
                        Some(r) => format!("{r}/{s}"),
                        None => s.clone(),
                    };
                    self.push(container, Part::Tag, tag, Some(repo), policy);
                }
            }
            Value::Map(_) => {
                if let (Some(repo), Some(tag)) = (
                    image.get("repository").and_then(Node::as_str),
                    image.get("tag"),
                ) {
                    let repo = match image.get("registry").and_then(Node::as_str) {
                        Some(r) => format!("{r}/{repo}"),
                        None => repo.to_string(),
                    };
                    self.push(container, Part::Tag, tag, Some(repo), policy);
                }
            }
            _ => {}
        }
    }
}

/// Finds setters in one file. `markers` says whether `$imagepolicy` markers in this
/// file are in scope of an ImageUpdateAutomation's `update.path`.
pub fn find_in_file(file: &str, text: &str, markers: bool) -> Found {
    let mut found = Found::default();
    let Ok(docs) = parse_documents(text) else {
        return found;
    };
    for doc in &docs {
        let root = &doc.root;
        let kind = root.get("kind").and_then(Node::as_str).unwrap_or_default();
        let name = root
            .path(&["metadata", "name"])
            .and_then(Node::as_str)
            .unwrap_or_default();
        let ns = root
            .path(&["metadata", "namespace"])
            .and_then(Node::as_str)
            .unwrap_or("default");
        let annotations = root.path(&["metadata", "annotations"]);
        if !is_true(ann(annotations, "automated"))
            || is_true(ann(annotations, "locked"))
            || is_true(ann(annotations, "ignore"))
        {
            continue;
        }
        let mut ctx = Ctx {
            file,
            object: format!("{kind}/{ns}/{name}"),
            annotations,
            found: &mut found,
        };
        if kind == "HelmRelease" {
            let Some(values) = root.path(&["spec", "values"]) else {
                continue;
            };
            if values.get("image").is_some() {
                if let Some(p) = ctx.policy("chart-image", None) {
                    ctx.values_image("chart-image", values, p);
                }
            }
            for (k, v) in values.as_map().unwrap_or_default() {
                let Some(key) = k.as_str() else { continue };
                if v.get("image").is_some() {
                    if let Some(p) = ctx.policy(key, None) {
                        ctx.values_image(key, v, p);
                    }
                }
            }
            // Explicit mappings: repository.fluxcd.io/<alias> and tag.fluxcd.io/<alias>.
            for (k, v) in annotations.and_then(Node::as_map).unwrap_or_default() {
                let Some(alias) = k
                    .as_str()
                    .and_then(|k| k.strip_prefix("repository.fluxcd.io/"))
                else {
                    continue;
                };
                let path_of = |n: &Node| {
                    n.as_str()
                        .map(|s| s.split('.').map(str::to_string).collect::<Vec<_>>())
                };
                let repo_node = path_of(v)
                    .and_then(|p| values.path(&p.iter().map(String::as_str).collect::<Vec<_>>()));
                let tag_path = annotations
                    .and_then(|a| a.get(&format!("tag.fluxcd.io/{alias}")))
                    .and_then(path_of);
                let tag_node = tag_path
                    .and_then(|p| values.path(&p.iter().map(String::as_str).collect::<Vec<_>>()));
                let filter = format!("filter.fluxcd.io/{alias}");
                let Some(p) = ctx.policy(alias, Some(&filter)) else {
                    continue;
                };
                match (repo_node.and_then(Node::as_str), tag_node) {
                    (Some(repo), Some(tag)) => {
                        ctx.push(alias, Part::Tag, tag, Some(repo.to_string()), p)
                    }
                    (Some(_), None) => ctx.push(
                        alias,
                        Part::Full,
                        repo_node.expect("checked"),
                        repo_node
                            .and_then(Node::as_str)
                            .map(|s| split_image(s).0.to_string()),
                        p,
                    ),
                    _ => ctx.found.errors.push(ManifestError::at(
                        file,
                        k.pos,
                        Some(format!("metadata.annotations.repository.fluxcd.io/{alias}")),
                        format!(
                            "{}: path {:?} not found in spec.values",
                            ctx.object,
                            v.scalar_text().unwrap_or_default()
                        ),
                    )),
                }
            }
        } else {
            for spec_path in WORKLOAD_SPECS {
                let Some(spec) = root.path(spec_path) else {
                    continue;
                };
                let mut any = false;
                for list in ["initContainers", "containers"] {
                    for c in spec.get(list).and_then(Node::as_seq).unwrap_or_default() {
                        let (Some(cname), Some(image)) =
                            (c.get("name").and_then(Node::as_str), c.get("image"))
                        else {
                            continue;
                        };
                        any = true;
                        if let Some(p) = ctx.policy(cname, None) {
                            let repo = image.as_str().map(|s| split_image(s).0.to_string());
                            ctx.push(cname, Part::Full, image, repo, p);
                        }
                    }
                }
                if any {
                    break;
                }
            }
        }
    }
    if markers && text.contains("$imagepolicy") {
        find_markers(file, text, &docs, &mut found);
    }
    // Two mappings may name the same scalar; it is one setter. An explicit marker wins
    // over an annotation, otherwise the first found does.
    let marked: std::collections::HashSet<usize> = found
        .setters
        .iter()
        .filter(|s| matches!(s.policy, PolicySource::ImagePolicy { .. }))
        .map(|s| s.start)
        .collect();
    let mut seen = std::collections::HashSet::new();
    found.setters.retain(|s| {
        let is_marker = matches!(s.policy, PolicySource::ImagePolicy { .. });
        (is_marker || !marked.contains(&s.start)) && seen.insert(s.start)
    });
    found
}

fn value_scalars<'a>(node: &'a Node, out: &mut Vec<&'a Node>) {
    match &node.value {
        Value::Map(entries) => entries.iter().for_each(|(_, v)| value_scalars(v, out)),
        Value::Seq(items) => items.iter().for_each(|v| value_scalars(v, out)),
        _ => out.push(node),
    }
}

fn find_markers(
    file: &str,
    text: &str,
    docs: &[crate::manifest::yaml::Document],
    found: &mut Found,
) {
    let mut scalars = Vec::new();
    for d in docs {
        value_scalars(&d.root, &mut scalars);
    }
    for (i, line) in text.lines().enumerate() {
        let line_no = i as u32 + 1;
        let Some(hash) = line.find("# {") else {
            continue;
        };
        if !line[hash..].contains("$imagepolicy") {
            continue;
        }
        let pos = Pos {
            line: line_no,
            col: hash as u32 + 1,
            offset: 0,
        };
        let reference = match serde_json::from_str::<serde_json::Value>(line[hash + 2..].trim()) {
            Ok(v) => v["$imagepolicy"].as_str().map(str::to_string),
            Err(_) => None,
        };
        let Some(reference) = reference else {
            found.errors.push(ManifestError::at(
                file,
                pos,
                None,
                "malformed setter marker: expected # {\"$imagepolicy\": \"namespace:name\"}",
            ));
            continue;
        };
        let parts: Vec<&str> = reference.split(':').collect();
        let (ns, name, part) = match parts.as_slice() {
            [ns, name] => (*ns, *name, Part::Full),
            [ns, name, "tag"] => (*ns, *name, Part::Tag),
            [ns, name, "name"] => (*ns, *name, Part::Name),
            _ => {
                found.errors.push(ManifestError::at(file, pos, None, format!("setter marker {reference:?}: expected namespace:name, namespace:name:tag or namespace:name:name")));
                continue;
            }
        };
        let Some(node) = scalars
            .iter()
            .rfind(|n| n.pos.line == line_no && n.pos.offset < line_offset(text, i) + hash)
        else {
            found.errors.push(ManifestError::at(
                file,
                pos,
                None,
                format!("setter marker {reference:?} is not on the line of a value"),
            ));
            continue;
        };
        let object = docs
            .iter()
            .rev()
            .find(|d| d.root.pos.offset <= node.pos.offset)
            .map(|d| {
                let r = &d.root;
                let s = |p: &[&str]| {
                    r.path(p)
                        .and_then(Node::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                format!(
                    "{}/{}/{}",
                    s(&["kind"]),
                    r.path(&["metadata", "namespace"])
                        .and_then(Node::as_str)
                        .unwrap_or("default"),
                    s(&["metadata", "name"])
                )
            })
            .unwrap_or_default();
        found.setters.push(Setter {
            file: file.to_string(),
            object,
            target: reference.clone(),
            part,
            start: node.pos.offset,
            end: node.end,
            style: node.style,
            line: line_no,
            current: node.scalar_text().unwrap_or_default(),
            repo: None,
            policy: PolicySource::ImagePolicy {
                namespace: ns.to_string(),
                name: name.to_string(),
            },
        });
    }
}

fn line_offset(text: &str, line_index: usize) -> usize {
    text.split_inclusive('\n')
        .take(line_index)
        .map(str::len)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRONTEND: &str = "---\napiVersion: flux.weave.works/v1beta1\nkind: HelmRelease\nmetadata:\n  name: frontend\n  namespace: test\n  annotations:\n    fluxcd.io/automated: \"true\"\n    fluxcd.io/tag.chart-image: semver:~2.0\nspec:\n  values:\n    image:\n      repository: stefanprodan/podinfo\n      tag: 2.0.0\n    sidecar:\n      image: nginx:1.25.0\n";

    #[test]
    fn helm_release_shapes() {
        let f = find_in_file("releases/test/frontend.yaml", FRONTEND, false);
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        assert_eq!(f.setters.len(), 2);
        let s = &f.setters[0];
        assert_eq!(
            (
                s.target.as_str(),
                s.part,
                s.current.as_str(),
                s.repo.as_deref()
            ),
            (
                "chart-image",
                Part::Tag,
                "2.0.0",
                Some("stefanprodan/podinfo")
            )
        );
        assert_eq!(&FRONTEND[s.start..s.end], "2.0.0");
        let s = &f.setters[1];
        assert_eq!(
            (s.target.as_str(), s.part, s.current_tag()),
            ("sidecar", Part::Full, Some("1.25.0"))
        );
    }

    #[test]
    fn explicit_alias_mappings() {
        let text = "apiVersion: helm.fluxcd.io/v1\nkind: HelmRelease\nmetadata:\n  name: app\n  namespace: prod\n  annotations:\n    fluxcd.io/automated: \"true\"\n    repository.fluxcd.io/api: api.img.repo\n    tag.fluxcd.io/api: api.img.version\n    filter.fluxcd.io/api: semver:~1.2\nspec:\n  values:\n    api:\n      img:\n        repo: ghcr.io/org/api\n        version: 1.2.0\n";
        let f = find_in_file("r.yaml", text, false);
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        let s = f
            .setters
            .iter()
            .find(|s| s.target == "api")
            .expect("alias setter");
        assert_eq!(
            (s.part, s.current.as_str(), s.repo.as_deref()),
            (Part::Tag, "1.2.0", Some("ghcr.io/org/api"))
        );
        assert!(matches!(&s.policy, PolicySource::Inline { key, .. } if key == "semver:~1.2"));
    }

    #[test]
    fn bad_policy_names_object_and_annotation() {
        let text = FRONTEND.replace("semver:~2.0", "semver:~x.y");
        let f = find_in_file("f.yaml", &text, false);
        assert_eq!(f.errors.len(), 1);
        let e = f.errors[0].to_string();
        assert!(e.starts_with("f.yaml:9:32: metadata.annotations.fluxcd.io/tag.chart-image: HelmRelease/test/frontend: invalid semver range"), "{e}");
    }

    #[test]
    fn workload_containers_and_markers() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  annotations:\n    fluxcd.io/automated: 'true'\n    fluxcd.io/tag.app: glob:1.*\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: ghcr.io/x/app:1.0 # {\"$imagepolicy\": \"flux-system:app\"}\n        - name: side\n          image: ghcr.io/x/side:2.0\n";
        let f = find_in_file("d.yaml", text, true);
        assert_eq!(f.setters.len(), 2, "{:?}", f.errors);
        let side = &f.setters[0];
        assert_eq!(side.target, "side");
        assert!(matches!(side.policy, PolicySource::Inline { .. }));
        let m = &f.setters[1];
        assert!(
            matches!(&m.policy, PolicySource::ImagePolicy { namespace, name } if namespace == "flux-system" && name == "app"),
            "the marker wins over the annotation on the same value"
        );
        assert_eq!(
            (m.part, m.object.as_str()),
            (Part::Full, "Deployment/default/web")
        );
        let k = "images:\n  - name: app\n    newTag: 1.0.0 # {\"$imagepolicy\": \"flux-system:app:tag\"}\n";
        let f = find_in_file("k.yaml", k, true);
        assert_eq!(
            (f.setters[0].part, f.setters[0].current.as_str()),
            (Part::Tag, "1.0.0")
        );
        assert!(
            find_in_file("k.yaml", k, false).setters.is_empty(),
            "markers out of scope"
        );
    }
}
