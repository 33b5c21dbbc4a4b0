//! The revert planner: from a workload's manifests as promoted, as failed and as they
//! are now, the byte-exact edits that put back only the values the failed change
//! touched. Pure: the caller reads the files from Git and pushes the result.

use crate::image::rewrite::splice;
use crate::manifest::kustomize::split_image;
use crate::manifest::yaml::{parse_documents, Document, Node, Style, Value};
use std::collections::BTreeMap;
use std::fmt;

/// The canary's target Deployment, whose template and referenced ConfigMaps and
/// Secrets make up the revision.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Namespace.
    pub namespace: String,
    /// The target Deployment's name.
    pub deployment: String,
}

/// One manifest file in the three versions the planner compares; `None` where the
/// file does not exist.
#[derive(Clone, Debug, Default)]
pub struct FileVersions {
    /// Repo-relative path.
    pub path: String,
    /// At the promoted commit (the failed commit's parent).
    pub promoted: Option<String>,
    /// At the failed commit.
    pub failed: Option<String>,
    /// At the branch head now.
    pub head: Option<String>,
}

/// A step of a field path. List items with a `name` (containers, env entries) are
/// matched by it, so a reordered list is not a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// The list item with this `name`.
    Name(String),
    /// The list item at this index.
    Index(usize),
}

/// A field path, printed as `spec.template.spec.containers[podinfo].image`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Seg>);

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Name(n) => write!(f, "[{n}]")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// One value the failed change set. Secret values are never shown: they read `***`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The file holding it now (at the failed commit when superseded and removed).
    pub file: String,
    /// `Kind/namespace/name`.
    pub object: String,
    /// The field.
    pub field: FieldPath,
    /// The value as promoted.
    pub promoted: String,
    /// The value the failed commit set.
    pub failed: String,
    /// The value at the head now, when it differs from `failed` (superseded).
    pub head: Option<String>,
}

impl Change {
    /// The image tag the change moves back to, when the field is a container image.
    pub fn promoted_tag(&self) -> Option<String> {
        self.is_image()
            .then(|| split_image(&self.promoted).1.map(str::to_string))
            .flatten()
    }

    /// The image reference the failed commit set, when the field is a container image.
    pub fn failed_image(&self) -> Option<&str> {
        self.is_image().then_some(self.failed.as_str())
    }

    fn is_image(&self) -> bool {
        self.object.starts_with("Deployment/")
            && matches!(self.field.0.last(), Some(Seg::Key(k)) if k == "image")
    }
}

/// What to do about a failed revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Commit these files (path, new text): each changed value set back.
    Revert {
        /// The rewritten files.
        files: Vec<(String, String)>,
        /// The values set back.
        changes: Vec<Change>,
    },
    /// A value changed again after the failed commit: Git is left alone.
    Superseded {
        /// Every value of the failed change; those changed since have `head` set.
        changes: Vec<Change>,
    },
    /// The failed commit changed no field of the workload's manifests as written
    /// (e.g. it came through a HelmRelease or a kustomize overlay).
    NotFound,
    /// The change cannot be undone by rewriting values (a field or an object was
    /// added or removed); Git is left alone.
    Unrevertable(String),
}

/// Errors: a version of a file that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file version is not valid YAML.
    #[error("{file} ({version}): {message}")]
    Parse {
        /// The file.
        file: String,
        /// promoted, failed or head.
        version: &'static str,
        /// `line:col: what`.
        message: String,
    },
}

/// Result with the planner's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The parsed documents of one version of every file.
struct Version<'a> {
    files: Vec<(&'a str, &'a str, Vec<Document>)>,
}

impl<'a> Version<'a> {
    fn parse(
        files: &'a [FileVersions],
        name: &'static str,
        pick: impl Fn(&'a FileVersions) -> Option<&'a String>,
    ) -> Result<Self> {
        let mut out = Vec::new();
        for f in files {
            let Some(text) = pick(f) else { continue };
            let docs = parse_documents(text).map_err(|e| Error::Parse {
                file: f.path.clone(),
                version: name,
                message: e.to_string(),
            })?;
            out.push((f.path.as_str(), text.as_str(), docs));
        }
        Ok(Version { files: out })
    }

    /// The document of `kind` `name` in `ns` (a document without a namespace counts as
    /// in it, as kustomize or the default namespace would put it), with its file.
    fn find(&self, kind: &str, ns: &str, name: &str) -> Option<(&'a str, &str, &Node)> {
        self.files.iter().find_map(|(path, text, docs)| {
            docs.iter()
                .map(|d| &d.root)
                .find(|r| {
                    r.get("kind").and_then(Node::as_str) == Some(kind)
                        && r.path(&["metadata", "name"]).and_then(Node::as_str) == Some(name)
                        && r.path(&["metadata", "namespace"])
                            .and_then(Node::as_str)
                            .is_none_or(|n| n == ns)
                })
                .map(|r| (*path, *text, r))
        })
    }
}

/// The subtrees of an object that make up the revision.
fn revision_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Deployment" => &["spec.template"],
        _ => &["data", "stringData", "binaryData"],
    }
}

fn walk<'n>(node: &'n Node, path: &FieldPath) -> Option<&'n Node> {
    path.0.iter().try_fold(node, |n, seg| match seg {
        Seg::Key(k) => n.get(k),
        Seg::Index(i) => n.as_seq()?.get(*i),
        Seg::Name(name) => n
            .as_seq()?
            .iter()
            .find(|item| item.get("name").and_then(Node::scalar_text).as_deref() == Some(name)),
    })
}

/// Names of a list's items, when every item is a mapping with a distinct `name`.
fn item_names(items: &[Node]) -> Option<Vec<String>> {
    let names: Vec<String> = items
        .iter()
        .map(|i| i.get("name").and_then(Node::scalar_text))
        .collect::<Option<_>>()?;
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    (sorted.len() == names.len()).then_some(names)
}

fn is_scalar(n: &Node) -> bool {
    !matches!(n.value, Value::Seq(_) | Value::Map(_))
}

/// Collects the scalars that differ between `p` (promoted) and `f` (failed), or says
/// which structural change makes a value revert impossible.
fn diff<'n>(
    path: &mut Vec<Seg>,
    p: &'n Node,
    f: &'n Node,
    out: &mut Vec<(FieldPath, &'n Node, &'n Node)>,
) -> Result<(), String> {
    let here = |path: &Vec<Seg>| FieldPath(path.clone()).to_string();
    match (&p.value, &f.value) {
        (Value::Map(pm), Value::Map(fm)) => {
            let key = |k: &Node| k.scalar_text().unwrap_or_default();
            for (k, pv) in pm {
                let k = key(k);
                let Some(fv) = f.get(&k) else {
                    return Err(format!("{}.{k} was removed", here(path)));
                };
                path.push(Seg::Key(k));
                diff(path, pv, fv, out)?;
                path.pop();
            }
            if let Some((k, _)) = fm.iter().find(|(k, _)| p.get(&key(k)).is_none()) {
                return Err(format!("{}.{} was added", here(path), key(k)));
            }
            Ok(())
        }
        (Value::Seq(ps), Value::Seq(fs)) => {
            if let (Some(pn), Some(fn_)) = (item_names(ps), item_names(fs)) {
                let (mut a, mut b) = (pn.clone(), fn_.clone());
                a.sort();
                b.sort();
                if a != b {
                    return Err(format!("{}: items were added or removed", here(path)));
                }
                for (name, pv) in pn.iter().zip(ps) {
                    let fv = &fs[fn_.iter().position(|n| n == name).expect("same names")];
                    path.push(Seg::Name(name.clone()));
                    diff(path, pv, fv, out)?;
                    path.pop();
                }
                return Ok(());
            }
            if ps.len() != fs.len() {
                return Err(format!("{}: items were added or removed", here(path)));
            }
            for (i, (pv, fv)) in ps.iter().zip(fs).enumerate() {
                path.push(Seg::Index(i));
                diff(path, pv, fv, out)?;
                path.pop();
            }
            Ok(())
        }
        _ if is_scalar(p) && is_scalar(f) => {
            if p.value != f.value {
                out.push((FieldPath(path.clone()), p, f));
            }
            Ok(())
        }
        _ => Err(format!(
            "{}: changed from {} to {}",
            here(path),
            p.type_name(),
            f.type_name()
        )),
    }
}

fn shown(n: &Node, secret: bool) -> String {
    if secret {
        "***".into()
    } else {
        n.scalar_text().unwrap_or_default()
    }
}

/// The objects of the revision: the Deployment and the ConfigMaps and Secrets its
/// template references in either version.
fn objects(w: &Workload, promoted: Option<&Node>, failed: &Node) -> Vec<(String, String)> {
    let mut out = vec![("Deployment".to_string(), w.deployment.clone())];
    let mut refs = std::collections::BTreeSet::new();
    for d in promoted.into_iter().chain([failed]) {
        let pod = d.to_json()["spec"]["template"]["spec"].clone();
        refs.extend(crate::canary::primary::config_refs(&pod));
    }
    out.extend(refs);
    out
}

/// One changed value, located in the head version.
struct Located<'n> {
    kind: String,
    name: String,
    change: Change,
    head: Option<(&'n str, &'n Node)>,
    promoted: &'n Node,
    promoted_text: &'n str,
}

/// Plans the revert of the failed change to `w`. `files` must hold every manifest file
/// that defines the workload in any of the three versions.
pub fn plan(w: &Workload, files: &[FileVersions]) -> Result<Outcome> {
    let promoted = Version::parse(files, "promoted", |f| f.promoted.as_ref())?;
    let failed = Version::parse(files, "failed", |f| f.failed.as_ref())?;
    let head = Version::parse(files, "head", |f| f.head.as_ref())?;
    let ns = w.namespace.as_str();
    let Some((_, _, failed_deploy)) = failed.find("Deployment", ns, &w.deployment) else {
        return Ok(Outcome::NotFound);
    };
    let promoted_deploy = promoted.find("Deployment", ns, &w.deployment).map(|x| x.2);
    let mut located: Vec<Located> = Vec::new();
    for (kind, name) in objects(w, promoted_deploy, failed_deploy) {
        let object = format!("{kind}/{ns}/{name}");
        let (p, f) = match (
            promoted.find(&kind, ns, &name),
            failed.find(&kind, ns, &name),
        ) {
            (Some(p), Some(f)) => (p, f),
            (None, None) => continue,
            (Some(_), None) => return Ok(Outcome::Unrevertable(format!("{object} was removed"))),
            (None, Some(_)) => return Ok(Outcome::Unrevertable(format!("{object} was added"))),
        };
        let mut diffs = Vec::new();
        for root in revision_fields(&kind) {
            let root: Vec<Seg> = root.split('.').map(|k| Seg::Key(k.into())).collect();
            let at = FieldPath(root.clone());
            match (walk(p.2, &at), walk(f.2, &at)) {
                (Some(pn), Some(fnode)) => {
                    if let Err(e) = diff(&mut root.clone(), pn, fnode, &mut diffs) {
                        return Ok(Outcome::Unrevertable(format!("{object}: {e}")));
                    }
                }
                (None, None) => {}
                _ => {
                    return Ok(Outcome::Unrevertable(format!(
                        "{object}: {at} was added or removed"
                    )))
                }
            }
        }
        let secret = kind == "Secret";
        let now = head.find(&kind, ns, &name);
        for (field, pn, fnode) in diffs {
            let head_node = now.and_then(|(file, _, root)| walk(root, &field).map(|n| (file, n)));
            let superseded = match head_node {
                Some((_, n)) if n.value == fnode.value => None,
                Some((_, n)) => Some(shown(n, secret)),
                None => Some("(removed)".into()),
            };
            located.push(Located {
                kind: kind.clone(),
                name: name.clone(),
                change: Change {
                    file: head_node.map_or(f.0, |h| h.0).to_string(),
                    object: object.clone(),
                    field,
                    promoted: shown(pn, secret),
                    failed: shown(fnode, secret),
                    head: superseded,
                },
                head: head_node,
                promoted: pn,
                promoted_text: p.1,
            });
        }
    }
    if located.is_empty() {
        return Ok(Outcome::NotFound);
    }
    if located.iter().any(|l| l.change.head.is_some()) {
        return Ok(Outcome::Superseded {
            changes: located.into_iter().map(|l| l.change).collect(),
        });
    }
    rewrite_head(w, &head, located)
}

/// Puts each promoted scalar back into the head files exactly as it was written, then
/// reads the result back to check every value is the promoted one.
fn rewrite_head(w: &Workload, head: &Version, located: Vec<Located>) -> Result<Outcome> {
    let mut by_file: BTreeMap<&str, Vec<(usize, usize, String)>> = BTreeMap::new();
    for l in &located {
        let (file, node) = l.head.expect("located in head");
        let block = node.style == Style::Block || l.promoted.style == Style::Block;
        if block && node.pos.col != l.promoted.pos.col {
            return Ok(Outcome::Unrevertable(format!(
                "{} {}: a block scalar moved; it cannot be put back byte for byte",
                l.change.object, l.change.field
            )));
        }
        let raw = l.promoted_text[l.promoted.pos.offset..l.promoted.end].to_string();
        by_file
            .entry(file)
            .or_default()
            .push((node.pos.offset, node.end, raw));
    }
    let mut files = Vec::new();
    for (file, edits) in by_file {
        let (_, text, _) = head
            .files
            .iter()
            .find(|(p, _, _)| *p == file)
            .expect("head file parsed");
        match splice(text, &edits) {
            Ok(new) => files.push((file.to_string(), new)),
            Err(e) => return Ok(Outcome::Unrevertable(format!("{file}: {e}"))),
        }
    }
    let written: Vec<FileVersions> = files
        .iter()
        .map(|(path, text)| FileVersions {
            path: path.clone(),
            head: Some(text.clone()),
            ..Default::default()
        })
        .collect();
    let check = Version::parse(&written, "rewritten", |f| f.head.as_ref())?;
    for l in &located {
        let back = check
            .find(&l.kind, &w.namespace, &l.name)
            .and_then(|(_, _, root)| walk(root, &l.change.field));
        if back.map(|n| &n.value) != Some(&l.promoted.value) {
            return Ok(Outcome::Unrevertable(format!(
                "{} {}: the rewritten file does not read back as the promoted value",
                l.change.object, l.change.field
            )));
        }
    }
    Ok(Outcome::Revert {
        files,
        changes: located.into_iter().map(|l| l.change).collect(),
    })
}

/// What a rollback goes back to: the promoted image tag, or the promoted commit's
/// short sha when no image changed.
pub fn rolled_back_to(changes: &[Change], promoted_commit: &str) -> String {
    changes
        .iter()
        .find_map(Change::promoted_tag)
        .unwrap_or_else(|| promoted_commit[..promoted_commit.len().min(12)].to_string())
}

/// The revert commit's message: `Rollback podinfo.test to 6.0.0: failed checks
/// threshold reached 5`, one line per value set back, and the
/// `Gitcanary-Failed-Commit` trailer. Without an image change, the canary goes back to
/// the promoted commit, named by its short sha.
pub fn commit_message(
    canary: &str,
    reason: &str,
    changes: &[Change],
    promoted_commit: &str,
    failed_commit: &str,
) -> String {
    let to = rolled_back_to(changes, promoted_commit);
    let mut msg = format!("Rollback {canary} to {to}: {reason}\n\n");
    for c in changes {
        msg.push_str(&format!(
            "- {}: {} {}: {} -> {}\n",
            c.file, c.object, c.field, c.failed, c.promoted
        ));
    }
    msg.push_str(&format!("\nGitcanary-Failed-Commit: {failed_commit}\n"));
    msg
}
