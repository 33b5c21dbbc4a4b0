//! The Git edge: fetch the followed branch into a bare cache repository with git2, and
//! expose a revision's tree as a [`Snapshot`]. Credentials come from files and env vars
//! named in the config; they and URL user-info never appear in errors or logs.

use super::credentials::Credentials;
use super::known_hosts::KnownHosts;
use crate::config::SourceConfig;
use crate::manifest::snapshot::{Entry, Snapshot};
use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, FetchOptions, Oid,
    RemoteCallbacks, Repository,
};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Once;

/// Errors from the Git source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Fetching failed.
    #[error("fetch {url}: {message}")]
    Fetch {
        /// Redacted URL.
        url: String,
        /// Why (redacted).
        message: String,
    },
    /// The branch does not exist on the remote.
    #[error("branch {branch:?} not found at {url}")]
    NoBranch {
        /// Redacted URL.
        url: String,
        /// Branch.
        branch: String,
    },
    /// A local Git operation failed.
    #[error("git: {0}")]
    Git(String),
    /// Credentials could not be loaded.
    #[error("credentials: {0}")]
    Credentials(String),
}

/// Result with the Git error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn git_err(e: git2::Error) -> Error {
    Error::Git(e.message().to_string())
}

/// Removes user-info (`user:password@`) from a URL for display.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest
                .split_once('/')
                .map(|(a, p)| (a, format!("/{p}")))
                .unwrap_or((rest, String::new()));
            match authority.rsplit_once('@') {
                Some((user, host)) if scheme.starts_with("http") || user.contains(':') => {
                    format!("{scheme}://***@{host}{path}")
                }
                _ => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// Where an SSH URL points: host and port, for the known_hosts lookup.
pub fn ssh_host_port(url: &str) -> Option<(String, u16)> {
    if let Some(rest) = url
        .strip_prefix("ssh://")
        .or_else(|| url.strip_prefix("git+ssh://"))
    {
        let authority = rest.split('/').next()?;
        let host_port = authority
            .rsplit_once('@')
            .map(|(_, h)| h)
            .unwrap_or(authority);
        if let Some(stripped) = host_port.strip_prefix('[') {
            let (h, after) = stripped.split_once(']')?;
            let port = after
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(22);
            return Some((h.to_string(), port));
        }
        return Some(match host_port.split_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()?),
            None => (host_port.to_string(), 22),
        });
    }
    // scp-like `git@host:path`
    if !url.contains("://") && !url.starts_with('/') && !url.starts_with('.') {
        let (left, _) = url.split_once(':')?;
        let host = left.rsplit_once('@').map(|(_, h)| h).unwrap_or(left);
        return Some((host.to_string(), 22));
    }
    None
}

/// A fetched commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// Full commit id.
    pub commit: String,
    /// First line of the commit message.
    pub summary: String,
}

/// How a push ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// The remote branch now points at the commit.
    Pushed,
    /// The remote moved; fetch, recompute and try again.
    Rejected(String),
}

/// The followed repository.
#[derive(Clone)]
pub struct GitSource {
    url: String,
    branch: String,
    creds: Credentials,
    base_dir: PathBuf,
    cache: PathBuf,
}

fn init_timeouts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: global libgit2 options, set once before any fetch runs.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(10_000);
            let _ = git2::opts::set_server_timeout_in_milliseconds(60_000);
        }
    });
}

impl GitSource {
    /// A source for the config's repository, caching under `state_dir/cache/git`.
    pub fn new(cfg: &SourceConfig, base_dir: &Path, state_dir: &Path) -> Self {
        let creds = cfg
            .auth
            .clone()
            .map_or(Credentials::None, Credentials::Config);
        Self::with_credentials(&cfg.url, &cfg.branch, creds, base_dir, state_dir)
    }

    /// A source for another repository (a chart's), with the credentials it may use.
    pub fn with_credentials(
        url: &str,
        branch: &str,
        creds: Credentials,
        base_dir: &Path,
        state_dir: &Path,
    ) -> Self {
        let url = normalize_url(url, base_dir);
        let id = crate::manifest::object::sha256_hex(url.as_bytes());
        GitSource {
            cache: state_dir.join("cache").join("git").join(&id[..16]),
            url,
            branch: branch.to_string(),
            creds,
            base_dir: base_dir.to_path_buf(),
        }
    }

    /// The URL as fetched (a path made absolute), with user-info: never for display.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL as fetched, redacted for display.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The bare repository the source is fetched into.
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// For a repository on this machine, the folder to watch for new commits.
    pub fn local_watch_path(&self) -> Option<PathBuf> {
        let path = PathBuf::from(self.url.strip_prefix("file://").unwrap_or(&self.url));
        if !path.is_absolute() || !path.exists() {
            return None;
        }
        let dotgit = path.join(".git");
        Some(if dotgit.is_dir() { dotgit } else { path })
    }

    fn open_cache(&self) -> Result<Repository> {
        match Repository::open_bare(&self.cache) {
            Ok(r) => Ok(r),
            Err(_) => {
                std::fs::create_dir_all(&self.cache)
                    .map_err(|e| Error::Git(format!("{}: {e}", self.cache.display())))?;
                Repository::init_bare(&self.cache).map_err(git_err)
            }
        }
    }

    fn tracking_ref(&self) -> String {
        format!("refs/remotes/origin/{}", self.branch)
    }

    /// Fetches `refspecs` into the cache repository.
    fn fetch_refspecs(&self, refspecs: &[&str]) -> Result<Repository> {
        init_timeouts();
        let local = Path::new(self.url.strip_prefix("file://").unwrap_or(&self.url));
        if local.is_absolute() && !local.exists() {
            return Err(Error::Fetch {
                url: self.display_url(),
                message: "no repository at this path".into(),
            });
        }
        let repo = self.open_cache()?;
        let mut remote = repo.remote_anonymous(&self.url).map_err(git_err)?;
        let rejection: Rc<RefCell<Option<String>>> = Rc::default();
        let callbacks = self.callbacks(rejection.clone())?;
        let headers = self.creds.headers();
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let mut opts = FetchOptions::new();
        // No FETCH_HEAD: nothing reads it, and the sync and the Git writer fetch into
        // the same repository (different refs) without contending for its lock.
        opts.remote_callbacks(callbacks)
            .download_tags(AutotagOption::None)
            .update_fetchhead(false)
            .custom_headers(&headers);
        if let Err(e) = remote.fetch(refspecs, Some(&mut opts), None) {
            let message = rejection
                .borrow()
                .clone()
                .unwrap_or_else(|| redact_message(e.message(), &self.url));
            return Err(Error::Fetch {
                url: self.display_url(),
                message,
            });
        }
        drop(remote);
        Ok(repo)
    }

    /// Fetches the branch and returns its head commit. Blocking.
    pub fn fetch(&self) -> Result<Fetched> {
        let refspec = format!("+refs/heads/{b}:refs/remotes/origin/{b}", b = self.branch);
        let repo = self.fetch_refspecs(&[&refspec])?;
        let oid = repo
            .refname_to_id(&self.tracking_ref())
            .map_err(|_| Error::NoBranch {
                url: self.display_url(),
                branch: self.branch.clone(),
            })?;
        fetched(&repo, oid)
    }

    /// Fetches every branch and tag and resolves `r` (a branch, a tag, the highest tag
    /// in a semver range, or a commit) to a commit. Blocking.
    pub fn fetch_ref(&self, r: &GitRef) -> Result<Fetched> {
        if let GitRef::Branch(b) = r {
            let refspec = format!("+refs/heads/{b}:refs/remotes/origin/{b}");
            let repo = self.fetch_refspecs(&[&refspec])?;
            let oid = repo
                .refname_to_id(&format!("refs/remotes/origin/{b}"))
                .map_err(|_| Error::NoBranch {
                    url: self.display_url(),
                    branch: b.clone(),
                })?;
            return fetched(&repo, oid);
        }
        let repo = self.fetch_refspecs(&[
            "+refs/heads/*:refs/remotes/origin/*",
            "+refs/tags/*:refs/tags/*",
        ])?;
        let mut refs = Vec::new();
        for reference in repo.references().map_err(git_err)?.flatten() {
            let (Ok(name), Ok(commit)) = (reference.name(), reference.peel_to_commit()) else {
                continue;
            };
            let short = if let Some(b) = name.strip_prefix("refs/remotes/origin/") {
                format!("branch:{b}")
            } else if let Some(t) = name.strip_prefix("refs/tags/") {
                format!("tag:{t}")
            } else {
                continue;
            };
            refs.push((short, commit.id().to_string()));
        }
        let found = resolve_ref(&refs, r).map_err(|message| Error::Fetch {
            url: self.display_url(),
            message,
        })?;
        let oid = match found {
            Some(oid) => Oid::from_str(&oid).map_err(git_err)?,
            None => {
                // A commit: full or abbreviated, reachable from what was fetched.
                let (GitRef::Commit(sha) | GitRef::Name(sha)) = r else {
                    unreachable!("resolve_ref answers every other kind")
                };
                repo.revparse_single(sha)
                    .and_then(|o| o.peel_to_commit())
                    .map_err(|_| Error::Fetch {
                        url: self.display_url(),
                        message: format!("no branch, tag or commit {sha:?}"),
                    })?
                    .id()
            }
        };
        fetched(&repo, oid)
    }

    /// The last fetched head, without contacting the remote.
    pub fn cached_head(&self) -> Option<String> {
        let repo = Repository::open_bare(&self.cache).ok()?;
        repo.refname_to_id(&self.tracking_ref())
            .ok()
            .map(|o| o.to_string())
    }

    fn callbacks(
        &self,
        rejection: Rc<RefCell<Option<String>>>,
    ) -> Result<RemoteCallbacks<'static>> {
        let mut cb = RemoteCallbacks::new();
        let known_hosts = self
            .creds
            .known_hosts(&self.base_dir)
            .map_err(Error::Credentials)?
            .map(|text| KnownHosts::parse(&text));
        let host_port = ssh_host_port(&self.url);
        cb.certificate_check(move |cert, host| {
            let Some(hk) = cert.as_hostkey() else {
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            let reject = |msg: String| {
                *rejection.borrow_mut() = Some(msg.clone());
                Err(git2::Error::from_str(&msg))
            };
            let (kh, key) = match (&known_hosts, hk.hostkey()) {
                (Ok(kh), Some(key)) => (kh, key),
                (Ok(_), None) => {
                    return reject(format!(
                        "host key verification failed: {host} sent no host key"
                    ))
                }
                (Err(why), _) => {
                    return reject(format!(
                        "host key verification failed: no known_hosts for {host} ({why})"
                    ))
                }
            };
            let (h, port) = host_port.clone().unwrap_or((host.to_string(), 22));
            match kh.check(&h, port, key) {
                Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
                Err(e) => reject(e.to_string()),
            }
        });
        let creds = self.creds.clone();
        let base = self.base_dir.clone();
        let mut attempts = 0;
        cb.credentials(move |_url, user, allowed| {
            attempts += 1;
            if attempts > 1 {
                return Err(git2::Error::from_str(
                    "authentication failed: the server refused the configured credentials",
                ));
            }
            if allowed.contains(CredentialType::SSH_KEY) {
                return creds.ssh_key(user.unwrap_or("git"), &base);
            }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                return creds.user_pass(user);
            }
            if allowed.contains(CredentialType::USERNAME) {
                return Cred::username(user.unwrap_or("git"));
            }
            Err(git2::Error::from_str("no supported authentication method"))
        });
        Ok(cb)
    }

    /// Commits `files` (path, new content) on top of `parent` without a working copy,
    /// and returns the new commit id. Nothing is pushed. Blocking.
    pub fn commit_files(
        &self,
        parent: &str,
        files: &[(String, Vec<u8>)],
        message: &str,
        author: (&str, &str),
    ) -> Result<String> {
        let repo = Repository::open_bare(&self.cache).map_err(git_err)?;
        let parent = repo
            .find_commit(Oid::from_str(parent).map_err(git_err)?)
            .map_err(git_err)?;
        let base = parent.tree().map_err(git_err)?;
        let mut update = git2::build::TreeUpdateBuilder::new();
        for (path, content) in files {
            let blob = repo.blob(content).map_err(git_err)?;
            let mode = base
                .get_path(Path::new(path))
                .map(|e| e.filemode())
                .unwrap_or(0o100644);
            let mode = if mode == 0o100755 {
                git2::FileMode::BlobExecutable
            } else {
                git2::FileMode::Blob
            };
            update.upsert(path.as_str(), blob, mode);
        }
        let tree_id = update.create_updated(&repo, &base).map_err(git_err)?;
        let tree = repo.find_tree(tree_id).map_err(git_err)?;
        let sig = git2::Signature::now(author.0, author.1).map_err(git_err)?;
        let id = repo
            .commit(None, &sig, &sig, message, &tree, &[&parent])
            .map_err(git_err)?;
        Ok(id.to_string())
    }

    /// Pushes `commit` to `branch`, fast-forward only (never forced). On success the
    /// local tracking ref moves too, so the next sync applies it without a fetch.
    pub fn push(&self, commit: &str, branch: &str) -> Result<PushOutcome> {
        let outcome = self.push_ref(commit, &format!("refs/heads/{branch}"))?;
        if outcome == PushOutcome::Pushed && branch == self.branch {
            let repo = Repository::open_bare(&self.cache).map_err(git_err)?;
            let oid = Oid::from_str(commit).map_err(git_err)?;
            // Best effort: a sync fetching at this moment holds the ref's lock, and
            // its fetch brings the commit anyway.
            let updated = repo
                .reference(&self.tracking_ref(), oid, true, "gitcanary push")
                .map(drop);
            if let Err(e) = updated {
                tracing::debug!("{}: {}", self.tracking_ref(), e.message());
            }
        }
        Ok(outcome)
    }

    /// Fetches `refspecs` into the cache repository (for refs besides the branch, such
    /// as `refs/notes/gitcanary`). A ref the remote lacks is no error. Blocking.
    pub fn fetch_into(&self, refspecs: &[&str]) -> Result<()> {
        self.fetch_refspecs(refspecs).map(drop)
    }

    /// Pushes `commit` to `remote_ref` (any ref), fast-forward only: never forced.
    /// Blocking.
    pub fn push_ref(&self, commit: &str, remote_ref: &str) -> Result<PushOutcome> {
        match self.local_path() {
            Some(path) => self.push_local(&path, commit, remote_ref),
            None => self.push_transport(commit, remote_ref),
        }
    }

    /// The repository's folder when it is on this machine (a path or `file://`).
    fn local_path(&self) -> Option<PathBuf> {
        let path = PathBuf::from(self.url.strip_prefix("file://").unwrap_or(&self.url));
        path.is_absolute().then_some(path)
    }

    /// A push to a repository on this machine. libgit2's local transport checks that
    /// the update is a fast-forward before it writes, then writes the ref without
    /// checking again, so a push landing in between would be overwritten; and it lists
    /// the remote's refs afterwards, which fails when another pusher deletes one
    /// meanwhile. Here the objects are copied into the remote's object database, and
    /// the ref then moves only if it still points where the check saw it
    /// (compare-and-swap under the ref's lock), as `git receive-pack` does.
    fn push_local(&self, path: &Path, commit: &str, remote_ref: &str) -> Result<PushOutcome> {
        let local = Repository::open_bare(&self.cache).map_err(git_err)?;
        let remote = Repository::open(path).map_err(|e| Error::Fetch {
            url: self.display_url(),
            message: e.message().to_string(),
        })?;
        if !remote.is_bare() {
            // Its work tree would no longer match its branch (git refuses too).
            return Err(Error::Fetch {
                url: self.display_url(),
                message: "push: the repository has a work tree; push to a bare repository".into(),
            });
        }
        let new = Oid::from_str(commit).map_err(git_err)?;
        copy_objects(&local, &remote, new).map_err(git_err)?;
        match remote.refname_to_id(remote_ref) {
            Ok(current) if current == new => Ok(PushOutcome::Pushed),
            Ok(current) if !remote.graph_descendant_of(new, current).unwrap_or(false) => Ok(
                PushOutcome::Rejected(format!("{remote_ref}: non-fast-forward (fetch first)")),
            ),
            Ok(current) => remote
                .reference_matching(remote_ref, new, true, current, "gitcanary push")
                .map(|_| PushOutcome::Pushed)
                .or_else(|e| match e.code() {
                    git2::ErrorCode::Modified | git2::ErrorCode::Locked => {
                        Ok(PushOutcome::Rejected(format!(
                            "{remote_ref}: moved while pushing (fetch first)"
                        )))
                    }
                    _ => Err(git_err(e)),
                }),
            // A new ref: created only if nobody created it meanwhile.
            Err(_) => remote
                .reference(remote_ref, new, false, "gitcanary push")
                .map(|_| PushOutcome::Pushed)
                .or_else(|e| match e.code() {
                    git2::ErrorCode::Exists | git2::ErrorCode::Locked => Ok(PushOutcome::Rejected(
                        format!("{remote_ref}: created while pushing (fetch first)"),
                    )),
                    _ => Err(git_err(e)),
                }),
        }
    }

    /// A push through libgit2's transport for the URL.
    fn push_transport(&self, commit: &str, remote_ref: &str) -> Result<PushOutcome> {
        init_timeouts();
        let repo = Repository::open_bare(&self.cache).map_err(git_err)?;
        let oid = Oid::from_str(commit).map_err(git_err)?;
        let local_ref = "refs/gitcanary/push";
        repo.reference(local_ref, oid, true, "gitcanary push")
            .map_err(git_err)?;
        let mut remote = repo.remote_anonymous(&self.url).map_err(git_err)?;
        let rejection: Rc<RefCell<Option<String>>> = Rc::default();
        let refused: Rc<RefCell<Option<String>>> = Rc::default();
        let mut cb = self.callbacks(rejection.clone())?;
        let refused_cb = refused.clone();
        cb.push_update_reference(move |_refname, status| {
            if let Some(msg) = status {
                *refused_cb.borrow_mut() = Some(msg.to_string());
            }
            Ok(())
        });
        let headers = self.creds.headers();
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let mut opts = git2::PushOptions::new();
        opts.remote_callbacks(cb).custom_headers(&headers);
        let spec = format!("{local_ref}:{remote_ref}");
        let result = remote.push(&[spec.as_str()], Some(&mut opts));
        drop(remote);
        let _ = repo.find_reference(local_ref).and_then(|mut r| r.delete());
        if let Err(e) = result {
            if let Some(msg) = rejection.borrow().clone() {
                return Err(Error::Fetch {
                    url: self.display_url(),
                    message: msg,
                });
            }
            let msg = e.message().to_string();
            // libgit2 words a moved remote differently per transport.
            let moved = [
                "non-fastforward",
                "fast-forward",
                "fetch first",
                "not present locally",
                "rejected",
            ];
            if moved.iter().any(|m| msg.contains(m)) {
                return Ok(PushOutcome::Rejected(redact_message(&msg, &self.url)));
            }
            return Err(Error::Fetch {
                url: self.display_url(),
                message: format!("push: {}", redact_message(&msg, &self.url)),
            });
        }
        if let Some(msg) = refused.borrow().clone() {
            return Ok(PushOutcome::Rejected(msg));
        }
        Ok(PushOutcome::Pushed)
    }

    /// The followed branch.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// A snapshot of `commit`'s tree. Blocking.
    pub fn snapshot(&self, commit: &str) -> Result<GitSnapshot> {
        let repo = Repository::open_bare(&self.cache).map_err(git_err)?;
        GitSnapshot::new(repo, commit)
    }
}

/// Copies `tip` and everything it reaches that `dst` lacks from `src` into `dst`'s
/// object database. An object `dst` has is taken to come with all it reaches, as in
/// any complete repository.
fn copy_objects(src: &Repository, dst: &Repository, tip: Oid) -> Result<(), git2::Error> {
    let (src_odb, dst_odb) = (src.odb()?, dst.odb()?);
    let mut stack = vec![tip];
    while let Some(oid) = stack.pop() {
        if dst_odb.exists(oid) {
            continue;
        }
        let obj = src_odb.read(oid)?;
        match obj.kind() {
            git2::ObjectType::Commit => {
                let c = src.find_commit(oid)?;
                stack.push(c.tree_id());
                stack.extend(c.parent_ids());
            }
            git2::ObjectType::Tree => {
                let t = src.find_tree(oid)?;
                // Submodule entries name commits of another repository.
                stack.extend(
                    t.iter()
                        .filter(|e| e.kind() != Some(git2::ObjectType::Commit))
                        .map(|e| e.id()),
                );
            }
            _ => {}
        }
        dst_odb.write(obj.kind(), obj.data())?;
    }
    Ok(())
}

fn fetched(repo: &Repository, oid: Oid) -> Result<Fetched> {
    let commit = repo.find_commit(oid).map_err(git_err)?;
    Ok(Fetched {
        commit: oid.to_string(),
        summary: String::from_utf8_lossy(commit.message_bytes())
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
    })
}

/// A Git reference to check out (Flux's GitRepository `spec.ref`, the Helm operator's
/// `chart.ref`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GitRef {
    /// A branch.
    Branch(String),
    /// A tag.
    Tag(String),
    /// The highest tag matching a semver range (Masterminds syntax, `v` prefix allowed).
    Semver(String),
    /// A commit SHA, full or abbreviated.
    Commit(String),
    /// A branch, else a tag, else a commit (the Helm operator's `chart.ref`).
    Name(String),
}

impl From<&str> for GitRef {
    fn from(s: &str) -> Self {
        GitRef::Name(s.to_string())
    }
}

impl std::fmt::Display for GitRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitRef::Branch(b) => write!(f, "branch {b}"),
            GitRef::Tag(t) => write!(f, "tag {t}"),
            GitRef::Semver(r) => write!(f, "semver {r}"),
            GitRef::Commit(c) => write!(f, "commit {c}"),
            GitRef::Name(n) => write!(f, "ref {n}"),
        }
    }
}

/// Resolves `r` among fetched refs (`branch:<name>` or `tag:<name>`, commit id).
/// `Ok(None)` means: look it up as a commit.
pub fn resolve_ref(refs: &[(String, String)], r: &GitRef) -> Result<Option<String>, String> {
    let find = |k: &str| refs.iter().find(|(n, _)| n == k).map(|(_, c)| c.clone());
    match r {
        GitRef::Branch(b) => find(&format!("branch:{b}"))
            .map(Some)
            .ok_or_else(|| format!("branch {b:?} not found")),
        GitRef::Tag(t) => find(&format!("tag:{t}"))
            .map(Some)
            .ok_or_else(|| format!("tag {t:?} not found")),
        GitRef::Semver(range) => {
            use crate::util::semver::{Constraint, Version};
            let c = Constraint::parse(range).map_err(|e| format!("semver {range:?}: {e}"))?;
            refs.iter()
                .filter_map(|(n, id)| {
                    let tag = n.strip_prefix("tag:")?;
                    Some((Version::parse(tag)?, id))
                })
                .filter(|(v, _)| c.matches(v))
                .max_by(|a, b| a.0.cmp(&b.0))
                .map(|(_, id)| Some(id.clone()))
                .ok_or_else(|| format!("no tag matches semver {range:?}"))
        }
        GitRef::Commit(_) => Ok(None),
        GitRef::Name(n) => Ok(find(&format!("branch:{n}")).or_else(|| find(&format!("tag:{n}")))),
    }
}

fn normalize_url(url: &str, base: &Path) -> String {
    let is_remote = url.contains("://") || ssh_host_port(url).is_some();
    if is_remote {
        return url.to_string();
    }
    let p = Path::new(url);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    std::fs::canonicalize(&abs)
        .unwrap_or(abs)
        .to_string_lossy()
        .into_owned()
}

/// Strips anything that looks like the URL's user-info from a libgit2 message.
fn redact_message(message: &str, url: &str) -> String {
    let redacted = redact_url(url);
    if redacted == url {
        message.to_string()
    } else {
        message.replace(url, &redacted)
    }
}

/// A commit's tree, readable without a working copy.
pub struct GitSnapshot {
    repo: Repository,
    entries: HashMap<String, (Oid, i32)>,
    children: BTreeMap<String, Vec<String>>,
}

impl GitSnapshot {
    fn new(repo: Repository, commit: &str) -> Result<Self> {
        let oid = Oid::from_str(commit).map_err(git_err)?;
        let tree = repo
            .find_commit(oid)
            .and_then(|c| c.tree())
            .map_err(git_err)?;
        let mut entries = HashMap::new();
        let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
        children.insert(String::new(), Vec::new());
        tree.walk(git2::TreeWalkMode::PreOrder, |root, e| {
            let Ok(name) = e.name() else {
                return git2::TreeWalkResult::Skip;
            };
            let dir = root.trim_end_matches('/');
            let path = if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            };
            children
                .entry(dir.to_string())
                .or_default()
                .push(name.to_string());
            if e.filemode() == 0o040000 {
                children.entry(path.clone()).or_default();
            }
            entries.insert(path, (e.id(), e.filemode()));
            git2::TreeWalkResult::Ok
        })
        .map_err(git_err)?;
        for names in children.values_mut() {
            names.sort();
        }
        drop(tree);
        Ok(GitSnapshot {
            repo,
            entries,
            children,
        })
    }
}

impl Snapshot for GitSnapshot {
    fn entry(&self, path: &str) -> Option<Entry> {
        if path.is_empty() {
            return Some(Entry::Dir);
        }
        let (oid, mode) = self.entries.get(path)?;
        match *mode {
            0o040000 => Some(Entry::Dir),
            0o120000 => {
                let blob = self.repo.find_blob(*oid).ok()?;
                Some(Entry::Symlink(
                    String::from_utf8_lossy(blob.content()).into_owned(),
                ))
            }
            0o160000 => None,
            _ => Some(Entry::File),
        }
    }

    fn children(&self, dir: &str) -> Vec<String> {
        self.children.get(dir).cloned().unwrap_or_default()
    }

    fn read(&self, path: &str) -> std::io::Result<Vec<u8>> {
        let not_found = || {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{path}: not in revision"),
            )
        };
        let (oid, _) = self.entries.get(path).ok_or_else(not_found)?;
        let blob = self
            .repo
            .find_blob(*oid)
            .map_err(|e| std::io::Error::other(e.message().to_string()))?;
        Ok(blob.content().to_vec())
    }

    fn content_id(&self, path: &str) -> Option<String> {
        self.entries.get(path).map(|(oid, _)| oid.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_branches_tags_semver_and_names() {
        let refs: Vec<(String, String)> = [
            ("branch:main", "m"),
            ("tag:v1.0.0", "a"),
            ("tag:v1.2.0", "b"),
            ("tag:2.0.0", "c"),
            ("tag:2.1.0-rc.1", "d"),
            ("tag:latest", "e"),
        ]
        .iter()
        .map(|(n, c)| (n.to_string(), c.to_string()))
        .collect();
        let r = |g: GitRef| resolve_ref(&refs, &g);
        assert_eq!(r(GitRef::Branch("main".into())), Ok(Some("m".into())));
        assert!(r(GitRef::Branch("dev".into())).is_err());
        assert_eq!(r(GitRef::Tag("latest".into())), Ok(Some("e".into())));
        assert_eq!(r(GitRef::Semver("^1".into())), Ok(Some("b".into())));
        assert_eq!(r(GitRef::Semver(">=1.0.0".into())), Ok(Some("c".into())));
        assert!(r(GitRef::Semver("^3".into())).is_err());
        assert_eq!(r(GitRef::Name("main".into())), Ok(Some("m".into())));
        assert_eq!(r(GitRef::Name("v1.0.0".into())), Ok(Some("a".into())));
        assert_eq!(r(GitRef::Name("0123abc".into())), Ok(None));
        assert_eq!(r(GitRef::Commit("0123abc".into())), Ok(None));
    }

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            redact_url("https://user:tok@github.com/o/r.git"),
            "https://***@github.com/o/r.git"
        );
        assert_eq!(
            redact_url("https://tok@github.com/o/r"),
            "https://***@github.com/o/r"
        );
        assert_eq!(
            redact_url("ssh://git@host:2222/r.git"),
            "ssh://git@host:2222/r.git"
        );
    }

    #[test]
    fn ssh_hosts_and_ports() {
        assert_eq!(
            ssh_host_port("ssh://git@127.0.0.1:2222/srv/r.git"),
            Some(("127.0.0.1".into(), 2222))
        );
        assert_eq!(
            ssh_host_port("git@github.com:org/repo.git"),
            Some(("github.com".into(), 22))
        );
        assert_eq!(
            ssh_host_port("ssh://[::1]:2200/r"),
            Some(("::1".into(), 2200))
        );
        assert_eq!(ssh_host_port("/srv/repo.git"), None);
        assert_eq!(ssh_host_port("https://h/r"), None);
    }
}
