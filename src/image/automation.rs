//! The automation executor. Each run: find setters in the revision, scan the registries
//! they need (cached for `images.interval`), decide the changes (pure), rewrite exactly
//! those scalars, make one commit with all of them, and push fast-forward only. When
//! the remote moved, it fetches and recomputes on the new head; if the remote already
//! has the new values, it commits nothing.

use super::discover::{self, Part, PolicySource, Setter};
use super::policy::{self, Order, Policy, Rule};
use super::rejected::Rejected;
use super::rewrite::{rewrite, Edit};
use super::template::{self, TemplateChange};
use crate::config::Config;
use crate::history::writer::{CommitError, CommitPlan, Writer};
use crate::manifest::kustomize::split_image;
use crate::manifest::snapshot::{self, Snapshot};
use crate::manifest::{ManifestError, Object};
use crate::oci::reference::ImageRepo;
use crate::oci::registry::{self, Basic, Credentials};
use crate::source::git::GitSource;
use crate::util::time::unix_now;
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Errors of an automation run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad policies, markers or automation objects; nothing was committed.
    #[error("image automation: nothing committed ({} errors):\n{}", .0.len(), .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ManifestError>),
    /// The revision's manifests do not load; the sync reports why.
    #[error("the revision's manifests have errors")]
    Unloadable,
    /// Git failed.
    #[error(transparent)]
    Git(#[from] crate::source::git::Error),
    /// The push kept being rejected.
    #[error("image automation: push to {branch} rejected {attempts} times, last: {message}")]
    Rejected {
        /// Branch.
        branch: String,
        /// Attempts made.
        attempts: u32,
        /// Remote's message.
        message: String,
    },
    /// The Git writer failed.
    #[error("image automation: {0}")]
    Writer(crate::history::Error),
    /// Settings could not be loaded.
    #[error("images: {0}")]
    Config(String),
}

/// The result of one scan of one image.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// Tags, minus excluded ones.
    pub tags: Vec<String>,
    /// Creation times for tags of time-ranked policies.
    pub created: HashMap<String, i64>,
    /// When scanned (Unix seconds).
    pub at: f64,
    /// Why the last scan failed.
    pub error: Option<String>,
}

/// One row of `gitcanary get images`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// `Kind/ns/name` and container, or the ImagePolicy.
    pub policy: String,
    /// The image repository.
    pub image: String,
    /// The policy rule as written.
    pub rule: String,
    /// Current tag in Git.
    pub current: String,
    /// Highest tag the policy allows.
    pub latest: Option<String>,
    /// Last scan (Unix seconds).
    pub last_scan: Option<f64>,
    /// Status message.
    pub message: String,
    /// Where the setter is, `file:line`.
    pub source: String,
    /// Tags of the image rolled back by a failed canary, which automation skips.
    #[serde(default)]
    pub rejected: Vec<String>,
}

/// One value to change.
#[derive(Clone, Debug)]
pub struct Change {
    /// File.
    pub file: String,
    /// Object holding it.
    pub object: String,
    /// Container or setter.
    pub target: String,
    /// The image repository.
    pub image: String,
    /// Scalar before.
    pub old: String,
    /// Scalar after.
    pub new: String,
    /// The new tag.
    pub new_tag: String,
    /// Setter label for commit messages.
    pub setter: String,
    /// The byte edit.
    pub edit: Edit,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
struct V2Spec {
    image: Option<String>,
    interval: Option<String>,
    secret_ref: Option<NamedRef>,
    #[serde(default)]
    exclusion_list: Option<Vec<String>>,
    image_repository_ref: Option<NamedRef>,
    filter_tags: Option<FilterTags>,
    policy: Option<V2Policy>,
    git: Option<V2Git>,
    update: Option<V2Update>,
}

#[derive(Deserialize, Default, Clone)]
struct NamedRef {
    name: String,
    namespace: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
struct FilterTags {
    pattern: Option<String>,
    extract: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
struct V2Policy {
    semver: Option<RangeSpec>,
    alphabetical: Option<OrderSpec>,
    numerical: Option<OrderSpec>,
}

#[derive(Deserialize, Default, Clone)]
struct RangeSpec {
    range: String,
}

#[derive(Deserialize, Default, Clone)]
struct OrderSpec {
    order: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
struct V2Git {
    checkout: Option<serde_json::Value>,
    commit: Option<V2Commit>,
    push: Option<V2Push>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
struct V2Commit {
    author: Option<V2Author>,
    message_template: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
struct V2Author {
    name: Option<String>,
    email: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
struct V2Push {
    branch: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
struct V2Update {
    path: Option<String>,
}

/// A resolved Flux v2 ImagePolicy.
#[derive(Clone)]
struct PolicyEntry {
    policy: Policy,
    /// The ImageRepository it follows (namespace, name).
    repo: (String, String),
    /// The policy as written, for status.
    label: String,
}

/// The Flux v2 objects of a revision, resolved.
#[derive(Default)]
struct V2 {
    repos: HashMap<(String, String), (String, Vec<Regex>)>,
    /// Per ImageRepository: its scan `interval` and `secretRef` name.
    repo_extras: HashMap<(String, String), (Option<Duration>, Option<String>)>,
    policies: HashMap<(String, String), Result<PolicyEntry, String>>,
    automation: Option<(String, V2Spec)>,
}

fn is_image_kind(o: &Object, kind: &str) -> bool {
    o.key.group == "image.toolkit.fluxcd.io" && o.key.kind == kind
}

fn parse_v2(objects: &[Object], branch: &str, errors: &mut Vec<ManifestError>) -> V2 {
    let mut v2 = V2::default();
    let err = |o: &Object, msg: String| {
        ManifestError::at_origin(&o.origin, None, format!("{}: {msg}", o.key))
    };
    for o in objects
        .iter()
        .filter(|o| o.key.group == "image.toolkit.fluxcd.io")
    {
        let spec: V2Spec = match serde_json::from_value(o.value()["spec"].clone()) {
            Ok(s) => s,
            Err(e) => {
                errors.push(err(o, format!("spec: {e}")));
                continue;
            }
        };
        let id = (o.key.namespace.clone(), o.key.name.clone());
        if is_image_kind(o, "ImageRepository") {
            let Some(image) = spec.image.clone() else {
                errors.push(err(o, "spec.image: missing required field".into()));
                continue;
            };
            let mut ex = Vec::new();
            for (i, r) in spec
                .exclusion_list
                .clone()
                .unwrap_or_else(|| vec![r"^.*\.sig$".into()])
                .iter()
                .enumerate()
            {
                match Regex::new(r) {
                    Ok(re) => ex.push(re),
                    Err(e) => errors.push(err(
                        o,
                        format!(
                            "spec.exclusionList[{i}]: invalid regex: {}",
                            policy::regex_error(&e)
                        ),
                    )),
                }
            }
            let interval = match spec.interval.as_deref().map(crate::util::duration::parse) {
                Some(Ok(d)) => Some(d),
                Some(Err(e)) => {
                    errors.push(err(o, format!("spec.interval: {e}")));
                    None
                }
                None => None,
            };
            v2.repo_extras.insert(
                id.clone(),
                (interval, spec.secret_ref.as_ref().map(|r| r.name.clone())),
            );
            v2.repos.insert(id, (image, ex));
        } else if is_image_kind(o, "ImagePolicy") {
            let resolved = (|| {
                let r = spec
                    .image_repository_ref
                    .clone()
                    .ok_or("spec.imageRepositoryRef: missing required field")?;
                let p = spec
                    .policy
                    .clone()
                    .ok_or("spec.policy: missing required field")?;
                let order =
                    |o: &Option<OrderSpec>| match o.as_ref().and_then(|o| o.order.as_deref()) {
                        None | Some("asc") => Ok(Order::Asc),
                        Some("desc") => Ok(Order::Desc),
                        Some(x) => Err(format!("order {x:?}: expected asc or desc")),
                    };
                let (rule, label) = match (&p.semver, &p.alphabetical, &p.numerical) {
                    (Some(s), None, None) => (
                        Rule::Semver(
                            crate::util::semver::Constraint::parse(&s.range)
                                .map_err(|e| format!("spec.policy.semver.range: {e}"))?,
                        ),
                        format!("semver:{}", s.range),
                    ),
                    (None, Some(a), None) => (
                        Rule::Alphabetical(
                            order(&Some(a.clone()))
                                .map_err(|e| format!("spec.policy.alphabetical.{e}"))?,
                        ),
                        "alphabetical".into(),
                    ),
                    (None, None, Some(n)) => (
                        Rule::Numerical(
                            order(&Some(n.clone()))
                                .map_err(|e| format!("spec.policy.numerical.{e}"))?,
                        ),
                        "numerical".into(),
                    ),
                    _ => {
                        return Err(
                            "spec.policy: set exactly one of semver, alphabetical or numerical"
                                .to_string(),
                        )
                    }
                };
                let mut policy = Policy::new(rule);
                if let Some(f) = &spec.filter_tags {
                    if let Some(pat) = &f.pattern {
                        let re = Regex::new(pat).map_err(|e| {
                            format!(
                                "spec.filterTags.pattern: invalid regex: {}",
                                policy::regex_error(&e)
                            )
                        })?;
                        policy.filter = Some((re, f.extract.clone().unwrap_or_default()));
                    }
                }
                let repo_ns = r
                    .namespace
                    .clone()
                    .unwrap_or_else(|| o.key.namespace.clone());
                Ok(PolicyEntry {
                    policy,
                    repo: (repo_ns, r.name.clone()),
                    label,
                })
            })();
            if let Err(e) = &resolved {
                errors.push(err(o, e.clone()));
            }
            v2.policies.insert(id, resolved);
        } else if is_image_kind(o, "ImageUpdateAutomation") {
            let checkout = spec
                .git
                .as_ref()
                .and_then(|g| g.checkout.as_ref())
                .and_then(|c| c["ref"]["branch"].as_str().map(str::to_string));
            if let Some(b) = checkout.filter(|b| b != branch) {
                errors.push(err(o, format!("spec.git.checkout.ref.branch: {b:?} is not the followed branch {branch:?}; gitcanary automates the branch it syncs")));
            }
            if let Some(t) = spec
                .git
                .as_ref()
                .and_then(|g| g.commit.as_ref())
                .and_then(|c| c.message_template.as_ref())
            {
                if let Err(e) = template::render(t, "x", &[]) {
                    errors.push(err(o, format!("spec.git.commit.messageTemplate: {e}")));
                }
            }
            v2.automation = Some((format!("{}/{}", o.key.namespace, o.key.name), spec));
        }
    }
    v2
}

/// What a setter follows: its policy and image.
pub struct Resolved {
    /// Scan interval of the ImageRepository, when it sets one.
    pub interval: Option<Duration>,
    /// The policy.
    pub policy: Policy,
    /// The image repository.
    pub image: String,
    /// Tags to ignore for this image.
    pub exclusions: Vec<Regex>,
    /// The policy as written, for status.
    pub rule: String,
}

/// A setter and what it follows, or why that could not be resolved.
pub type Resolution = (Setter, Result<Resolved, String>);

fn resolve(s: &Setter, v2: &V2) -> Result<Resolved, String> {
    match &s.policy {
        PolicySource::Inline { key, policy } => Ok(Resolved {
            policy: policy.clone(),
            image: s.repo.clone().ok_or("no image repository")?,
            exclusions: vec![],
            interval: None,
            rule: key.clone(),
        }),
        PolicySource::ImagePolicy { namespace, name } => {
            let PolicyEntry {
                policy,
                repo,
                label,
            } = v2
                .policies
                .get(&(namespace.clone(), name.clone()))
                .ok_or_else(|| format!("ImagePolicy {namespace}/{name} not found"))?
                .clone()?;
            let (image, ex) = v2
                .repos
                .get(&repo)
                .ok_or_else(|| format!("ImageRepository {}/{} not found", repo.0, repo.1))?;
            Ok(Resolved {
                policy,
                image: image.clone(),
                exclusions: ex.clone(),
                rule: label,
                interval: v2.repo_extras.get(&repo).and_then(|x| x.0),
            })
        }
    }
}

/// Decides the changes for `setters` from the scans, never selecting a `rejected`
/// tag. Pure.
pub fn decide(
    setters: &[Resolution],
    scans: &HashMap<String, Scan>,
    rejected: &Rejected,
) -> (Vec<Change>, Vec<Row>) {
    let mut changes = Vec::new();
    let mut rows = Vec::new();
    for (s, resolved) in setters {
        let mut row = Row {
            policy: format!("{} ({})", s.object, s.target),
            current: s.current_tag().unwrap_or("").to_string(),
            source: format!("{}:{}", s.file, s.line),
            ..Default::default()
        };
        let (policy, image) = match resolved {
            Ok(r) => {
                row.rule = r.rule.clone();
                (&r.policy, &r.image)
            }
            Err(e) => {
                row.message = e.clone();
                rows.push(row);
                continue;
            }
        };
        row.image = image.clone();
        row.rejected = rejected.of(image);
        let Some(scan) = scans.get(image) else {
            row.message = "not scanned yet".into();
            rows.push(row);
            continue;
        };
        row.last_scan = Some(scan.at);
        if let Some(e) = &scan.error {
            row.message = format!("scan failed: {e}");
            rows.push(row);
            continue;
        }
        let allowed = rejected.filter(image, &scan.tags);
        let latest = policy::select(policy, &allowed, &scan.created).cloned();
        row.latest = latest.clone();
        let Some(latest) = latest else {
            row.message = format!("no tag of {} tags matches the policy", scan.tags.len());
            rows.push(row);
            continue;
        };
        let current = s.current_tag().unwrap_or("");
        if s.part == Part::Name || !policy::ranks_above(policy, &latest, current, &scan.created) {
            row.message = if latest == current {
                "up to date".into()
            } else if !rejected.allows(image, current) {
                format!("{current} was rejected by a failed canary; waiting for a tag above it")
            } else {
                format!("{current} is not below {latest}: not changed")
            };
            rows.push(row);
            continue;
        }
        let new = match s.part {
            Part::Full => format!("{}:{latest}", split_image(&s.current).0),
            _ => latest.clone(),
        };
        row.message = format!("update {current} -> {latest}");
        rows.push(row);
        changes.push(Change {
            file: s.file.clone(),
            object: s.object.clone(),
            target: s.target.clone(),
            image: image.clone(),
            old: s.current.clone(),
            new: new.clone(),
            new_tag: latest,
            setter: s.target.clone(),
            edit: Edit {
                start: s.start,
                end: s.end,
                style: s.style,
                value: new,
            },
        });
    }
    (changes, rows)
}

/// The Flux v1 commit message: `Auto-release image:tag`, or `Auto-release multiple (N)
/// images`, with one body line per change.
pub fn default_message(changes: &[Change]) -> String {
    let mut images: Vec<String> = changes
        .iter()
        .map(|c| format!("{}:{}", c.image, c.new_tag))
        .collect();
    images.sort();
    images.dedup();
    let subject = if images.len() == 1 {
        format!("Auto-release {}", images[0])
    } else {
        format!("Auto-release multiple ({}) images", images.len())
    };
    let mut body = String::new();
    for c in changes {
        body.push_str(&format!(
            "\n - {}: {} ({}): {} -> {}",
            c.file, c.object, c.target, c.old, c.new
        ));
    }
    format!("{subject}\n{body}\n")
}

/// What one image needs from a scan.
#[derive(Default)]
struct Want {
    exclusions: Vec<Regex>,
    /// A Flux v1 glob/regex policy needs creation times.
    time_policy: Option<Policy>,
    interval: Option<Duration>,
}

/// Image automation state for one source.
pub struct Automation {
    cfg: crate::config::ImagesConfig,
    author: (String, String),
    client: registry::Client,
    rt: tokio::runtime::Runtime,
    scans: HashMap<String, Scan>,
    global_exclusions: Vec<Regex>,
    /// `source.path`: the folder whose manifests name images, policies and markers.
    path: String,
    /// Where the rejected tags are cached.
    state_dir: std::path::PathBuf,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The pushed commit, when it is on the followed branch.
    pub commit: Option<String>,
    /// Changes made.
    pub changes: usize,
    /// Status rows.
    pub rows: Vec<Row>,
    /// What was pushed, on whichever branch, and its message (for notifications).
    pub pushed: Option<(crate::history::writer::Pushed, String)>,
}

impl Automation {
    /// Builds the automation from the config (credentials, insecure registries).
    pub fn new(cfg: &Config) -> Result<Automation, Error> {
        let images = cfg.images.clone();
        let mut creds = match &images.docker_config {
            Some(p) => {
                let path = cfg.resolve(p);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| Error::Config(format!("dockerConfig {}: {e}", path.display())))?;
                Credentials::from_docker_config(&text)
                    .map_err(|e| Error::Config(format!("dockerConfig {}: {e}", path.display())))?
            }
            None => Credentials::default(),
        };
        for c in &images.credentials {
            let get = |v: &str| {
                std::env::var(v).map_err(|_| {
                    Error::Config(format!(
                        "credentials for {}: environment variable {v} is not set",
                        c.registry
                    ))
                })
            };
            creds.insert(
                &c.registry,
                Basic {
                    username: get(&c.username_env)?,
                    password: get(&c.password_env)?,
                },
            );
        }
        let settings = registry::Settings {
            insecure: images.insecure_registries.clone(),
            max_tags: images.max_tags,
            ..Default::default()
        };
        let global_exclusions = images
            .exclusion_list
            .iter()
            .filter_map(|r| Regex::new(r).ok())
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Automation {
            author: (cfg.git.author.name.clone(), cfg.git.author.email.clone()),
            client: registry::Client::new(settings, creds),
            cfg: images,
            rt,
            scans: HashMap::new(),
            global_exclusions,
            path: cfg.source.path.clone(),
            state_dir: cfg.state_dir(),
        })
    }

    /// The scan cache (for status).
    pub fn scans(&self) -> &HashMap<String, Scan> {
        &self.scans
    }

    fn collect(
        &self,
        snap: &dyn Snapshot,
        objects: &[Object],
        branch: &str,
    ) -> Result<(Vec<Resolution>, V2), Error> {
        let mut errors = Vec::new();
        let v2 = parse_v2(objects, branch, &mut errors);
        for ((ns, repo), (_, secret)) in &v2.repo_extras {
            let Some(secret) = secret else { continue };
            let found = crate::manifest::object::find(objects, "", "Secret", ns, secret);
            let Some(obj) = found else {
                errors.push(ManifestError { file: String::new(), pos: None, field: None, message: format!("ImageRepository {ns}/{repo}: spec.secretRef: Secret {ns}/{secret} not found in the repository") });
                continue;
            };
            let v = obj.value();
            let json = crate::manifest::object::data_value(&v, "Secret", ".dockerconfigjson");
            match json
                .transpose()
                .map(|j| j.and_then(|j| registry::Credentials::from_docker_config(&j)))
            {
                Some(Ok(c)) => self.client.add_credentials(&c),
                Some(Err(e)) => errors.push(ManifestError {
                    file: obj.origin.file.clone(),
                    pos: None,
                    field: Some("data..dockerconfigjson".into()),
                    message: format!("Secret {ns}/{secret}: {e}"),
                }),
                None => errors.push(ManifestError {
                    file: obj.origin.file.clone(),
                    pos: None,
                    field: Some("data".into()),
                    message: format!("Secret {ns}/{secret}: no .dockerconfigjson"),
                }),
            }
        }
        let mut files: Vec<String> = objects
            .iter()
            .filter(|o| {
                let v = o.value();
                let a = &v["metadata"]["annotations"];
                a["fluxcd.io/automated"] == "true" || a["flux.weave.works/automated"] == "true"
            })
            .map(|o| o.origin.file.clone())
            .collect();
        let marker_root = v2.automation.as_ref().map(|(_, s)| {
            let p = s
                .update
                .as_ref()
                .and_then(|u| u.path.clone())
                .unwrap_or_else(|| "./".into());
            snapshot::join("", &p).unwrap_or_default()
        });
        if let Some(root) = &marker_root {
            files.extend(snapshot::yaml_files(snap, root));
        }
        files.sort();
        files.dedup();
        let mut setters = Vec::new();
        for file in files {
            let Ok(bytes) = snap.read(&file) else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes);
            let in_scope = marker_root
                .as_ref()
                .is_some_and(|r| r.is_empty() || file.starts_with(&format!("{r}/")) || &file == r);
            let found = discover::find_in_file(&file, &text, in_scope);
            errors.extend(found.errors);
            for s in found.setters {
                let r = resolve(&s, &v2);
                setters.push((s, r));
            }
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        Ok((setters, v2))
    }

    fn scan(&mut self, wanted: &BTreeMap<String, Want>, force: bool) {
        let now = unix_now();
        let due: Vec<(String, Vec<Regex>, Option<Policy>)> = wanted
            .iter()
            .filter(|(img, w)| {
                let interval = w.interval.unwrap_or(self.cfg.interval).as_secs_f64();
                force || self.scans.get(*img).is_none_or(|s| now - s.at >= interval)
            })
            .map(|(i, w)| (i.clone(), w.exclusions.clone(), w.time_policy.clone()))
            .collect();
        if due.is_empty() {
            return;
        }
        let client = &self.client;
        let global = &self.global_exclusions;
        let old = &self.scans;
        let results: Vec<(String, Scan)> = self.rt.block_on(async {
            let futs = due.iter().map(|(img, ex, time_policy)| async move {
                let repo = ImageRepo::parse(img);
                let exclusions: Vec<Regex> = global.iter().chain(ex.iter()).cloned().collect();
                let mut scan = Scan {
                    at: unix_now(),
                    ..Default::default()
                };
                match client.list_tags(&repo, &exclusions).await {
                    Ok(tags) => scan.tags = tags,
                    Err(e) => {
                        tracing::warn!(image = %img, "image scan failed: {e}");
                        scan.error = Some(e.to_string());
                        return (img.clone(), scan);
                    }
                }
                if let Some(p) = time_policy {
                    // Flux v1 glob/regex rank by creation time: look up the candidates.
                    let known = old.get(img).map(|s| s.created.clone()).unwrap_or_default();
                    for t in scan.tags.iter().filter(|t| p.accepts(t)).take(500) {
                        let at = match known.get(t) {
                            Some(at) => Some(*at),
                            None => client.created(&repo, t).await.ok().flatten(),
                        };
                        if let Some(at) = at {
                            scan.created.insert(t.clone(), at);
                        }
                    }
                }
                tracing::debug!(image = %img, tags = scan.tags.len(), "image scanned");
                (img.clone(), scan)
            });
            join_all(futs).await
        });
        for (img, scan) in results {
            crate::metrics::global().inc(
                "gitcanary_image_scans_total",
                "Image scans by result.",
                &[(
                    "result",
                    if scan.error.is_some() {
                        "failure"
                    } else {
                        "success"
                    },
                )],
                1.0,
            );
            self.scans.insert(img, scan);
        }
    }

    /// Runs automation on `head`: scan, decide, commit, push through the Git
    /// `writer` (which fetches when the remote moved, and this plans again on the new
    /// head). Like Flux's image-automation-controller it reads only the manifests
    /// under `source.path` as written in Git: no chart is fetched or rendered, so a
    /// release whose chart source is down still gets its tags updated. `cache` is the
    /// sync's parse cache. Blocking.
    pub fn run(
        &mut self,
        source: &GitSource,
        writer: &Writer,
        head: &str,
        mut cache: Option<&mut crate::manifest::Cache>,
        force_scan: bool,
    ) -> Result<Outcome, Error> {
        let mut last = Planned::default();
        let mut first = true;
        let pushed = writer.commit(head, self.cfg.push_retries, |head| {
            last = self.plan(source, head, cache.as_deref_mut(), force_scan && first)?;
            first = false;
            Ok(last.commit.clone())
        });
        let rows = std::mem::take(&mut last.rows);
        match pushed {
            Ok(None) => Ok(Outcome {
                rows,
                ..Default::default()
            }),
            Ok(Some(p)) => {
                let message = last.commit.map(|c| c.message).unwrap_or_default();
                tracing::info!(commit = %p.commit, branch = %p.branch, changes = last.changes, "{}", message.lines().next().unwrap_or_default());
                crate::metrics::global().inc(
                    "gitcanary_image_commits_total",
                    "Commits pushed by image automation.",
                    &[],
                    1.0,
                );
                let on_branch = p.branch == source.branch();
                Ok(Outcome {
                    commit: on_branch.then(|| p.commit.clone()),
                    changes: last.changes,
                    rows,
                    pushed: Some((p, message)),
                })
            }
            Err(CommitError::Plan(e)) => Err(e),
            Err(CommitError::Writer(crate::history::Error::Rejected {
                target,
                attempts,
                message,
            })) => Err(Error::Rejected {
                branch: target,
                attempts,
                message,
            }),
            Err(CommitError::Writer(e)) => Err(Error::Writer(e)),
        }
    }

    /// Decides the commit for `head`: scan, decide, rewrite; `None` when nothing
    /// changes.
    fn plan(
        &mut self,
        source: &GitSource,
        head: &str,
        cache: Option<&mut crate::manifest::Cache>,
        force_scan: bool,
    ) -> Result<Planned, Error> {
        let snap = source.snapshot(head)?;
        let loaded = crate::manifest::load(&snap, &self.path, cache);
        if !loaded.errors.is_empty() {
            return Err(Error::Unloadable);
        }
        let (setters, v2) = self.collect(&snap, &loaded.objects, source.branch())?;
        let mut wanted: BTreeMap<String, Want> = BTreeMap::new();
        for (_, r) in &setters {
            if let Ok(r) = r {
                let w = wanted.entry(r.image.clone()).or_insert_with(|| Want {
                    exclusions: r.exclusions.clone(),
                    ..Default::default()
                });
                if r.policy.needs_created() {
                    w.time_policy = Some(r.policy.clone());
                }
                // The shortest interval of the ImageRepositories that name the image.
                w.interval = match (w.interval, r.interval) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        self.scan(&wanted, force_scan);
        let rejected = super::rejected::read(&self.state_dir);
        let (changes, rows) = decide(&setters, &self.scans, &rejected);
        if changes.is_empty() {
            return Ok(Planned {
                commit: None,
                changes: 0,
                rows,
            });
        }
        let mut by_file: BTreeMap<&str, Vec<Edit>> = BTreeMap::new();
        for c in &changes {
            by_file
                .entry(c.file.as_str())
                .or_default()
                .push(c.edit.clone());
        }
        let mut files = Vec::new();
        for (file, edits) in by_file {
            let text = String::from_utf8(
                snap.read(file)
                    .map_err(|e| Error::Config(format!("{file}: {e}")))?,
            )
            .map_err(|_| Error::Config(format!("{file}: not UTF-8")))?;
            let new = rewrite(&text, &edits).map_err(|e| {
                Error::Invalid(vec![ManifestError {
                    file: file.into(),
                    pos: None,
                    field: None,
                    message: e,
                }])
            })?;
            files.push((file.to_string(), new.into_bytes()));
        }
        let (auto_name, spec) = v2
            .automation
            .clone()
            .map(|(n, s)| (n, Some(s)))
            .unwrap_or_default();
        let commit_spec = spec
            .as_ref()
            .and_then(|s| s.git.as_ref())
            .and_then(|g| g.commit.clone())
            .unwrap_or_default();
        let message = match &commit_spec.message_template {
            Some(t) => {
                let tc: Vec<TemplateChange> = changes
                    .iter()
                    .map(|c| TemplateChange {
                        old_value: c.old.clone(),
                        new_value: c.new.clone(),
                        setter: c.setter.clone(),
                    })
                    .collect();
                template::render(t, &auto_name, &tc).map_err(Error::Config)?
            }
            None => default_message(&changes),
        };
        let author = commit_spec.author.unwrap_or_default();
        let author = (
            author.name.unwrap_or_else(|| self.author.0.clone()),
            author.email.unwrap_or_else(|| self.author.1.clone()),
        );
        let push_branch = spec
            .as_ref()
            .and_then(|s| s.git.as_ref())
            .and_then(|g| g.push.as_ref())
            .and_then(|p| p.branch.clone())
            .unwrap_or_else(|| source.branch().to_string());
        Ok(Planned {
            commit: Some(CommitPlan {
                files,
                message,
                author,
                branch: Some(push_branch),
            }),
            changes: changes.len(),
            rows,
        })
    }
}

/// What one planning pass decided.
#[derive(Default)]
struct Planned {
    commit: Option<CommitPlan>,
    changes: usize,
    rows: Vec<Row>,
}

async fn join_all<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    let mut pending: Vec<(usize, std::pin::Pin<Box<F>>)> = futs.into_iter().enumerate().collect();
    std::future::poll_fn(|cx| {
        pending.retain_mut(|(i, f)| match f.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => {
                out[*i] = Some(v);
                false
            }
            std::task::Poll::Pending => true,
        });
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future completed"))
        .collect()
}
