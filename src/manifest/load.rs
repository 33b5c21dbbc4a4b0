//! Turns a repository revision into the list of desired objects, or the list of every
//! error in it. Walks `*.yaml`/`*.yml` recursively as Flux does: folders holding a
//! `Chart.yaml` are charts and skipped, `.sourceignore` files are honoured, and a folder
//! with a `kustomization.yaml` contributes only its `resources`.

use super::names;
use super::object::{is_cluster_scoped, ManifestError, Object, ObjectKey, Origin};
use super::snapshot::{join, parent, resolve, Entry, Snapshot};
use super::yaml::{parse_documents, Node, Pos, Value};
use super::{kustomize, schema};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Annotations that make gitcanary skip an object.
pub const IGNORE_ANNOTATIONS: [&str; 2] = ["fluxcd.io/ignore", "gitcanary.io/ignore"];

/// Flux's default exclusions (source-controller), relative to the repository root.
const DEFAULT_IGNORES: &[&str] = &[
    ".git/",
    ".gitignore",
    ".gitmodules",
    ".gitattributes",
    "*.jpg",
    "*.jpeg",
    "*.gif",
    "*.png",
    "*.wmv",
    "*.flv",
    "*.tar.gz",
    "*.zip",
    ".github/",
    ".circleci/",
    ".travis.yml",
    ".gitlab-ci.yml",
    "appveyor.yml",
    ".drone.yml",
    "cloudbuild.yaml",
    "codeship-services.yml",
    "codeship-steps.yml",
    "**/.goreleaser.yml",
    "**/.sops.yaml",
    "**/.flux.yaml",
];

const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// The result of loading a revision.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Desired objects, in the order found.
    pub objects: Vec<Object>,
    /// Every error found; a revision with any error must not be applied.
    pub errors: Vec<ManifestError>,
    /// Manifest files read (cache hits included).
    pub files: usize,
    /// Files whose parse came from the cache.
    pub cache_hits: usize,
}

#[derive(Default)]
struct FileResult {
    objects: Vec<Object>,
    errors: Vec<ManifestError>,
}

/// Parse results kept between syncs, keyed by file, content id and kustomize context,
/// so a resync re-parses only the files that changed.
#[derive(Default)]
pub struct Cache {
    map: HashMap<String, (Arc<FileResult>, u64)>,
    generation: u64,
}

#[derive(Clone, Debug, Default)]
struct Context {
    namespace: Option<String>,
    /// The namespace for objects that name none (a Helm release's); below `namespace`.
    default_namespace: Option<String>,
    images: Vec<kustomize::ImageOverride>,
    /// Patches of the enclosing kustomizations, innermost first.
    patches: Vec<Arc<CtxPatch>>,
    /// [`Context::fingerprint`], computed once for all the files of a context.
    fingerprint: std::cell::OnceCell<String>,
}

/// A kustomization's patch with where it was written, for errors.
#[derive(Debug)]
struct CtxPatch {
    patch: super::patch::Patch,
    file: String,
    field: String,
    pos: Pos,
}

impl Context {
    fn fingerprint(&self) -> &str {
        self.fingerprint
            .get_or_init(|| format!("{:?}|{:?}|{:?}", self.namespace, self.images, self.patches))
    }
}

struct Walker<'a> {
    snap: &'a dyn Snapshot,
    cache: Option<&'a mut Cache>,
    out: Loaded,
    visited_dirs: HashSet<String>,
    /// Folders of the kustomizations being built, outermost first (for cycles).
    kustomizing: Vec<String>,
    /// Nesting of folders and kustomizations being walked; the walk recurses.
    depth: usize,
}

/// How deep folders and kustomization resources may nest: walking recurses through
/// them, and a Git tree can nest far deeper than a thread's stack allows.
pub const MAX_NESTING: usize = 100;

/// Loads every object under `root` (a repo-relative folder) of a snapshot.
pub fn load(snap: &dyn Snapshot, root: &str, cache: Option<&mut Cache>) -> Loaded {
    let mut w = Walker {
        snap,
        cache,
        out: Loaded::default(),
        visited_dirs: HashSet::new(),
        kustomizing: Vec::new(),
        depth: 0,
    };
    if let Some(c) = w.cache.as_deref_mut() {
        c.generation += 1;
    }
    let root_norm = join("", root);
    match root_norm.map(|r| resolve(snap, &r)) {
        None => w.error_no_pos(root, "path escapes the repository".into()),
        Some(Err(e)) => w.error_no_pos(root, e),
        Some(Ok(root)) => match snap.entry(&root) {
            Some(Entry::Dir) => {
                let ignores = w.ancestor_ignores(&root);
                w.walk_dir(&root, &root, &ignores, &Context::default());
            }
            Some(_) => w.load_file(&root, &Context::default()),
            None => w.error_no_pos(&root, "path not found in the repository".into()),
        },
    }
    if let Some(c) = w.cache.as_deref_mut() {
        let gen = c.generation;
        c.map.retain(|_, (_, g)| *g == gen);
    }
    let mut out = w.out;
    find_duplicates(&mut out);
    out
}

/// Adds an error for every object whose key an earlier object already has.
pub fn find_duplicates(out: &mut Loaded) {
    let mut seen: HashMap<&ObjectKey, &Origin> = HashMap::with_capacity(out.objects.len());
    let mut dups = Vec::new();
    for o in &out.objects {
        if let Some(first) = seen.insert(&o.key, &o.origin) {
            dups.push(ManifestError::at_origin(
                &o.origin,
                None,
                format!(
                    "{} is defined twice: first at {first}, again at {}",
                    o.key, o.origin
                ),
            ));
            seen.insert(&o.key, first);
        }
    }
    out.errors.extend(dups);
}

impl Walker<'_> {
    fn error_no_pos(&mut self, file: &str, message: String) {
        self.out.errors.push(ManifestError {
            file: file.to_string(),
            pos: None,
            field: None,
            message,
        });
    }

    fn sourceignore(&self, dir: &str) -> Option<Gitignore> {
        let path = join(dir, ".sourceignore")?;
        let text = self.snap.read(&path).ok()?;
        let mut b = GitignoreBuilder::new(format!("/repo/{dir}"));
        for line in String::from_utf8_lossy(&text).lines() {
            let _ = b.add_line(None, line);
        }
        b.build().ok()
    }

    /// The default exclusions plus `.sourceignore` of every folder above `root`.
    fn ancestor_ignores(&self, root: &str) -> Vec<Gitignore> {
        let mut b = GitignoreBuilder::new("/repo");
        for line in DEFAULT_IGNORES {
            let _ = b.add_line(None, line);
        }
        let mut stack: Vec<Gitignore> = b.build().into_iter().collect();
        let mut dir = String::new();
        for part in root.split('/').filter(|p| !p.is_empty()) {
            stack.extend(self.sourceignore(&dir));
            dir = if dir.is_empty() {
                part.to_string()
            } else {
                format!("{dir}/{part}")
            };
        }
        stack
    }

    fn ignored(stack: &[Gitignore], path: &str, is_dir: bool) -> bool {
        let abs = format!("/repo/{path}");
        for gi in stack.iter().rev() {
            match gi.matched_path_or_any_parents(&abs, is_dir) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
        }
        false
    }

    /// Runs `f` one level deeper, or reports `at` as nested too deep.
    fn deeper(&mut self, at: &str, f: impl FnOnce(&mut Self)) {
        if self.depth >= MAX_NESTING {
            return self.error_no_pos(
                at,
                format!(
                    "folders nest deeper than {MAX_NESTING} (counting kustomization resources)"
                ),
            );
        }
        self.depth += 1;
        f(self);
        self.depth -= 1;
    }

    fn walk_dir(&mut self, dir: &str, root: &str, parent_ignores: &[Gitignore], ctx: &Context) {
        self.deeper(dir, |w| w.walk_dir_unnested(dir, root, parent_ignores, ctx));
    }

    fn walk_dir_unnested(
        &mut self,
        dir: &str,
        root: &str,
        parent_ignores: &[Gitignore],
        ctx: &Context,
    ) {
        if !self.visited_dirs.insert(dir.to_string()) {
            return;
        }
        if let Some(k) = KUSTOMIZATION_FILES
            .iter()
            .filter_map(|f| join(dir, f))
            .find(|p| self.snap.entry(p).is_some())
        {
            self.kustomize(&k, ctx);
            return;
        }
        if dir != root && self.snap.entry(&format!("{dir}/Chart.yaml")).is_some() {
            return;
        }
        let mut ignores = parent_ignores.to_vec();
        ignores.extend(self.sourceignore(dir));
        for name in self.snap.children(dir) {
            let path = if dir.is_empty() {
                name.clone()
            } else {
                format!("{dir}/{name}")
            };
            let entry = self.snap.entry(&path);
            let target = match &entry {
                Some(Entry::Symlink(_)) => match resolve(self.snap, &path) {
                    Ok(t) => Some((t.clone(), self.snap.entry(&t))),
                    Err(e) => {
                        self.error_no_pos(&path, e);
                        continue;
                    }
                },
                _ => Some((path.clone(), entry.clone())),
            };
            let Some((real, kind)) = target else { continue };
            let is_dir = kind == Some(Entry::Dir);
            if Self::ignored(&ignores, &path, is_dir) {
                continue;
            }
            if is_dir {
                self.walk_dir(&real, root, &ignores, ctx);
            } else if kind == Some(Entry::File)
                && (name.ends_with(".yaml") || name.ends_with(".yml"))
            {
                self.load_file_as(&real, &path, ctx);
            }
        }
    }

    fn kustomize(&mut self, file: &str, outer: &Context) {
        let dir = parent(file).to_string();
        if let Some(i) = self.kustomizing.iter().position(|d| *d == dir) {
            let mut chain = self.kustomizing[i..].to_vec();
            chain.push(dir);
            return self.error_no_pos(file, format!("kustomization cycle: {}", chain.join(" -> ")));
        }
        self.kustomizing.push(dir);
        self.deeper(file, |w| w.kustomize_unnested(file, outer));
        self.kustomizing.pop();
    }

    fn kustomize_unnested(&mut self, file: &str, outer: &Context) {
        let dir = parent(file).to_string();
        let text = match self.snap.read(file) {
            Ok(t) => String::from_utf8_lossy(&t).into_owned(),
            Err(e) => return self.error_no_pos(file, format!("cannot read: {e}")),
        };
        let spec = match kustomize::parse(file, &text) {
            Ok(s) => s,
            Err(errs) => return self.out.errors.extend(errs),
        };
        let mut patches = Vec::new();
        for entry in &spec.patches {
            let text = match (&entry.text, &entry.path) {
                (Some(t), _) => t.clone(),
                (None, Some(p)) => match join(&dir, p).map(|full| self.snap.read(&full)) {
                    Some(Ok(b)) => String::from_utf8_lossy(&b).into_owned(),
                    Some(Err(e)) => {
                        self.out.errors.push(ManifestError::at(
                            file,
                            entry.pos,
                            Some(entry.field.clone()),
                            format!("{p}: cannot read: {e}"),
                        ));
                        continue;
                    }
                    None => {
                        self.out.errors.push(ManifestError::at(
                            file,
                            entry.pos,
                            Some(entry.field.clone()),
                            format!("{p:?} escapes the repository"),
                        ));
                        continue;
                    }
                },
                (None, None) => continue,
            };
            let target = match entry
                .target
                .as_ref()
                .map(super::patch::Selector::from_value)
            {
                None => None,
                Some(Ok(t)) => Some(t),
                Some(Err(e)) => {
                    self.out.errors.push(ManifestError::at(
                        file,
                        entry.pos,
                        Some(entry.field.clone()),
                        e,
                    ));
                    continue;
                }
            };
            match super::patch::Patch::parse(&text, target) {
                Ok(patch) => patches.push(Arc::new(CtxPatch {
                    patch,
                    file: file.to_string(),
                    field: entry.field.clone(),
                    pos: entry.pos,
                })),
                Err(e) => self.out.errors.push(ManifestError::at(
                    file,
                    entry.pos,
                    Some(entry.field.clone()),
                    format!(
                        "{}{e}",
                        entry
                            .path
                            .as_ref()
                            .map(|p| format!("{p}: "))
                            .unwrap_or_default()
                    ),
                )),
            }
        }
        let ctx = Context {
            namespace: outer.namespace.clone().or(spec.namespace.clone()),
            images: spec
                .images
                .iter()
                .chain(outer.images.iter())
                .cloned()
                .collect(),
            default_namespace: None,
            patches: patches
                .into_iter()
                .chain(outer.patches.iter().cloned())
                .collect(),
            fingerprint: Default::default(),
        };
        for (res, pos) in &spec.resources {
            if res.contains("://") || res.starts_with("github.com/") || res.starts_with("git@") {
                self.out.errors.push(ManifestError::at(
                    file,
                    *pos,
                    Some("resources".into()),
                    format!(
                        "remote resource {res:?} is not supported: vendor it into the repository"
                    ),
                ));
                continue;
            }
            let Some(path) = join(&dir, res) else {
                self.out.errors.push(ManifestError::at(
                    file,
                    *pos,
                    Some("resources".into()),
                    format!("{res:?} escapes the repository"),
                ));
                continue;
            };
            let real = match resolve(self.snap, &path) {
                Ok(r) => r,
                Err(e) => {
                    self.out.errors.push(ManifestError::at(
                        file,
                        *pos,
                        Some("resources".into()),
                        e,
                    ));
                    continue;
                }
            };
            match self.snap.entry(&real) {
                Some(Entry::Dir) => {
                    let ignores = self.ancestor_ignores(&real);
                    self.visited_dirs.remove(&real);
                    self.walk_dir(&real, &real, &ignores, &ctx)
                }
                Some(_) => self.load_file_as(&real, &path, &ctx),
                None => self.out.errors.push(ManifestError::at(
                    file,
                    *pos,
                    Some("resources".into()),
                    format!("{res:?} not found"),
                )),
            }
        }
    }

    fn load_file(&mut self, path: &str, ctx: &Context) {
        self.load_file_as(path, path, ctx)
    }

    /// Loads `real`, reporting it as `shown` (the path the user wrote or walked).
    fn load_file_as(&mut self, real: &str, shown: &str, ctx: &Context) {
        let _scope = crate::util::panic::scope(shown);
        self.out.files += 1;
        let key = self
            .snap
            .content_id(real)
            .map(|id| format!("{shown}\0{id}\0{}", ctx.fingerprint()));
        if let (Some(cache), Some(key)) = (self.cache.as_deref_mut(), &key) {
            let gen = cache.generation;
            if let Some((hit, g)) = cache.map.get_mut(key) {
                *g = gen;
                let hit = hit.clone();
                self.out.cache_hits += 1;
                self.out.objects.extend(hit.objects.iter().cloned());
                self.out.errors.extend(hit.errors.iter().cloned());
                return;
            }
        }
        let result = match self.snap.read(real) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => parse_file(shown, &text, ctx),
                Err(_) => FileResult {
                    objects: vec![],
                    errors: vec![ManifestError {
                        file: shown.into(),
                        pos: None,
                        field: None,
                        message: "not valid UTF-8".into(),
                    }],
                },
            },
            Err(e) => FileResult {
                objects: vec![],
                errors: vec![ManifestError {
                    file: shown.into(),
                    pos: None,
                    field: None,
                    message: format!("cannot read: {e}"),
                }],
            },
        };
        self.out.objects.extend(result.objects.iter().cloned());
        self.out.errors.extend(result.errors.iter().cloned());
        if let (Some(cache), Some(key)) = (self.cache.as_deref_mut(), key) {
            let gen = cache.generation;
            cache.map.insert(key, (Arc::new(result), gen));
        }
    }
}

/// Parses generated manifests (a rendered Helm template) shown as `file`, with the same
/// checks as files in the repository; objects naming no namespace get `namespace`.
pub fn parse_generated(
    file: &str,
    text: &str,
    namespace: &str,
) -> (Vec<Object>, Vec<ManifestError>) {
    let ctx = Context {
        default_namespace: Some(namespace.to_string()),
        ..Context::default()
    };
    let r = parse_file(file, text, &ctx);
    (r.objects, r.errors)
}

fn parse_file(file: &str, text: &str, ctx: &Context) -> FileResult {
    let mut out = FileResult::default();
    match parse_documents(text) {
        Err(e) => out.errors.push(ManifestError::at(
            file,
            e.pos,
            None,
            format!("invalid YAML: {}", e.message),
        )),
        Ok(docs) => {
            for doc in docs {
                object_from_node(file, &doc.root, ctx, &mut out);
            }
        }
    }
    out
}

fn object_from_node(file: &str, node: &Node, ctx: &Context, out: &mut FileResult) {
    if node.is_null() {
        return;
    }
    if node.as_map().is_none() {
        out.errors.push(ManifestError::at(
            file,
            node.pos,
            None,
            format!(
                "expected a Kubernetes object (a mapping), found {}",
                node.type_name()
            ),
        ));
        return;
    }
    let Some(id) = identity(file, node, ctx, out) else {
        return;
    };
    let annotations = node.path(&["metadata", "annotations"]);
    if IGNORE_ANNOTATIONS
        .iter()
        .any(|a| annotations.and_then(|m| m.get(a)).and_then(Node::as_str) == Some("true"))
    {
        return;
    }
    if let Err(msg) = names::check_name(&id.api_version, &id.kind, &id.name) {
        let pos = node
            .path(&["metadata", "name"])
            .map(|n| n.pos)
            .unwrap_or(node.pos);
        out.errors.push(ManifestError::at(
            file,
            pos,
            Some("metadata.name".into()),
            msg,
        ));
        return;
    }
    match transform(file, node, ctx, &id) {
        Ok((value, namespace)) => {
            let key = ObjectKey::new(&id.api_version, &id.kind, &namespace, &id.name);
            out.objects.push(Object::from_json(
                key,
                id.api_version,
                &value,
                Origin {
                    file: file.to_string(),
                    line: node.pos.line,
                },
            ));
        }
        Err(e) => out.errors.push(e),
    }
}

/// What names an object: its apiVersion, kind and name as written.
struct Identity {
    api_version: String,
    kind: String,
    name: String,
}

/// Checks a document's identity and its schema, pushing every problem found into
/// `out`; the identity when there was none. A `List` is expanded into its items here.
fn identity(file: &str, node: &Node, ctx: &Context, out: &mut FileResult) -> Option<Identity> {
    let before = out.errors.len();
    let mut required_str = |field: &str, n: Option<&Node>| -> Option<String> {
        match n {
            None => {
                out.errors.push(ManifestError::at(
                    file,
                    node.pos,
                    Some(field.into()),
                    "missing required field",
                ));
                None
            }
            Some(v) => match &v.value {
                Value::Str(s) if !s.is_empty() => Some(s.clone()),
                _ => {
                    out.errors.push(ManifestError::at(
                        file,
                        v.pos,
                        Some(field.into()),
                        format!("expected a non-empty string, found {}", v.type_name()),
                    ));
                    None
                }
            },
        }
    };
    let api_version = required_str("apiVersion", node.get("apiVersion"));
    let kind = required_str("kind", node.get("kind"));
    if kind.as_deref() == Some("List") {
        if let Some(items) = node.get("items").and_then(Node::as_seq) {
            for item in items {
                object_from_node(file, item, ctx, out);
            }
        }
        return None;
    }
    let name = match node.get("metadata") {
        Some(m) if m.as_map().is_some() => required_str("metadata.name", m.get("name")),
        Some(m) => {
            out.errors.push(ManifestError::at(
                file,
                m.pos,
                Some("metadata".into()),
                format!("expected a mapping, found {}", m.type_name()),
            ));
            None
        }
        None => required_str("metadata.name", None),
    };
    // Kind and group become folders of the local store: refuse what Kubernetes would.
    let checks = [
        (
            "apiVersion",
            api_version.as_deref().map(names::check_api_version),
        ),
        ("kind", kind.as_deref().map(names::check_kind)),
    ];
    let mut bad_identity = false;
    for (field, checked) in checks {
        if let Some(Err(msg)) = checked {
            let pos = node.get(field).map(|n| n.pos).unwrap_or(node.pos);
            out.errors
                .push(ManifestError::at(file, pos, Some(field.into()), msg));
            bad_identity = true;
        }
    }
    if bad_identity {
        return None;
    }
    // Type-check whenever the kind is known, so a document with several problems
    // reports all of them at once.
    if let Some(kind) = &kind {
        check_kind(file, node, kind, api_version.as_deref(), before, out);
    }
    let (Some(api_version), Some(kind), Some(name)) = (api_version, kind, name) else {
        return None;
    };
    if out.errors.len() > before {
        return None;
    }
    Some(Identity {
        api_version,
        kind,
        name,
    })
}

/// The schema of a known kind, and for a Flagger Canary that passes it, Flagger's
/// semantic rules (interval, threshold, one of the strategies) at the line of the
/// field they are about. `before` is the error count before this document.
fn check_kind(
    file: &str,
    node: &Node,
    kind: &str,
    api_version: Option<&str>,
    before: usize,
    out: &mut FileResult,
) {
    out.errors.extend(schema::check(kind, node, file));
    let flagger = api_version.is_some_and(|a| a.starts_with("flagger.app/"));
    if kind != "Canary" || !flagger || out.errors.len() != before {
        return;
    }
    if let Err(errs) = crate::canary::spec::parse(&node.to_json()) {
        for e in errs {
            let (field, msg) = e.split_once(": ").unwrap_or(("spec", e.as_str()));
            out.errors.push(ManifestError::at(
                file,
                position_of(node, field),
                Some(field.to_string()),
                msg.to_string(),
            ));
        }
    }
}

/// The object as it is applied: kustomize's patches around its namespace
/// transformer, then its image overrides. Returns the JSON and the namespace
/// (empty for a cluster-scoped kind).
fn transform(
    file: &str,
    node: &Node,
    ctx: &Context,
    id: &Identity,
) -> Result<(serde_json::Value, String), ManifestError> {
    let (kind, name) = (&id.kind, &id.name);
    let mut value = node.to_json();
    // kustomize runs `patches` and `patchesStrategicMerge` before its namespace
    // transformer and `patchesJson6902` after it.
    let patch = |value: &mut serde_json::Value,
                 after_namespace: bool|
     -> Result<(), ManifestError> {
        for p in &ctx.patches {
            if p.field.starts_with("patchesJson6902") != after_namespace || !p.patch.matches(value)
            {
                continue;
            }
            p.patch.apply(value).map_err(|e| {
                ManifestError::at(
                    &p.file,
                    p.pos,
                    Some(p.field.clone()),
                    format!("patching {kind} {name} ({file}): {e}"),
                )
            })?;
        }
        Ok(())
    };
    patch(&mut value, false)?;
    let namespace = if is_cluster_scoped(&id.api_version, kind) {
        if let Some(meta) = value["metadata"].as_object_mut() {
            meta.remove("namespace");
        }
        String::new()
    } else {
        let ns = ctx
            .namespace
            .clone()
            .or_else(|| value["metadata"]["namespace"].as_str().map(str::to_string))
            .filter(|s| !s.is_empty())
            .or_else(|| ctx.default_namespace.clone())
            .unwrap_or_else(|| "default".to_string());
        if let Err(msg) = names::check_namespace(&ns) {
            let pos = node
                .path(&["metadata", "namespace"])
                .map(|n| n.pos)
                .unwrap_or(node.pos);
            return Err(ManifestError::at(
                file,
                pos,
                Some("metadata.namespace".into()),
                msg,
            ));
        }
        value["metadata"]["namespace"] = ns.clone().into();
        ns
    };
    patch(&mut value, true)?;
    if !ctx.images.is_empty() {
        kustomize::apply_images(&mut value, &ctx.images);
    }
    Ok((value, namespace))
}

/// The position of the deepest node along a dotted field path (`a.b[2].c`).
fn position_of(root: &Node, field: &str) -> Pos {
    let mut node = root;
    for part in field.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, i)) => (k, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some(next) = node.get(key) else { break };
        node = next;
        if let Some(i) = index {
            match node.as_seq().and_then(|s| s.get(i)) {
                Some(item) => node = item,
                None => break,
            }
        }
    }
    node.pos
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::snapshot::DirSnapshot;

    fn kustomization(resources: &[&str]) -> String {
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n{}",
            resources
                .iter()
                .map(|r| format!("  - {r}\n"))
                .collect::<String>()
        )
    }

    fn load_dir(files: &[(&str, String)]) -> Loaded {
        let dir = tempfile::tempdir().unwrap();
        for (p, text) in files {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let root = dir.path().to_path_buf();
        // On tokio's blocking-thread stack, where syncs load revisions.
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || load(&DirSnapshot::new(root), "", None))
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn kustomizations_including_each_other_are_a_cycle_error() {
        let out = load_dir(&[
            ("a/kustomization.yaml", kustomization(&["../b"])),
            ("b/kustomization.yaml", kustomization(&["../a", "cm.yaml"])),
            (
                "b/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n".into(),
            ),
        ]);
        let text: Vec<String> = out.errors.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter().any(|e| e.contains("kustomization cycle")),
            "{text:?}"
        );
        let selfref = load_dir(&[("a/kustomization.yaml", kustomization(&["."]))]);
        assert!(
            selfref
                .errors
                .iter()
                .any(|e| e.message.contains("kustomization cycle")),
            "{:?}",
            selfref.errors
        );
    }

    #[test]
    fn a_canary_asking_more_than_its_provider_routes_is_an_error_at_the_field() {
        let canary = "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: podinfo\n  namespace: test\nspec:\n  provider: linkerd\n  targetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: podinfo\n  service:\n    port: 9898\n  analysis:\n    interval: 1m\n    threshold: 5\n    iterations: 10\n    match:\n      - headers:\n          x-canary:\n            exact: insider\n";
        let out = load_dir(&[("apps/canary.yaml", canary.to_string())]);
        let text: Vec<String> = out.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            text,
            vec!["apps/canary.yaml:19:7: spec.analysis.match: provider linkerd does not support header and cookie matching (A/B testing)"]
        );
        assert!(out.objects.is_empty());
    }

    #[test]
    fn deep_folders_are_an_error_not_a_stack_overflow() {
        let deep = vec!["d"; 300].join("/") + "/cm.yaml";
        let out = load_dir(&[(&deep, "a: 1\n".into())]);
        assert!(
            out.errors
                .iter()
                .any(|e| e.message.contains("folders nest deeper than")),
            "{:?}",
            out.errors
        );
    }
}
