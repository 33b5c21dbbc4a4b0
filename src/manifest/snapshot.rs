//! A read-only view of a repository revision: from a Git tree (see `source::git`) or a
//! folder on disk (`gitcanary validate`). Paths are repo-relative with `/`; symlinks are
//! resolved here and may never lead outside the repository.

use std::io;
use std::path::PathBuf;

/// What a path is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A regular file.
    File,
    /// A folder.
    Dir,
    /// A symlink with its target as written.
    Symlink(String),
}

/// A repository revision to read manifests from.
pub trait Snapshot {
    /// What `path` is, without following a final symlink.
    fn entry(&self, path: &str) -> Option<Entry>;
    /// The names in folder `dir`, sorted.
    fn children(&self, dir: &str) -> Vec<String>;
    /// The bytes of file `path`.
    fn read(&self, path: &str) -> io::Result<Vec<u8>>;
    /// A content id (a Git blob id) for caching parse results, if the source has one.
    fn content_id(&self, _path: &str) -> Option<String> {
        None
    }
}

/// Joins `rel` onto folder `base` and normalizes; `None` when it climbs above the root
/// or is absolute.
pub fn join(base: &str, rel: &str) -> Option<String> {
    if rel.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = base
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// The folder part of a path (`a/b.yaml` gives `a`).
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

/// Every regular `*.yaml`/`*.yml` file below folder `dir` (symlinks not followed).
pub fn yaml_files(snap: &dyn Snapshot, dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_string()];
    while let Some(d) = todo.pop() {
        for name in snap.children(&d) {
            if name == ".git" {
                continue;
            }
            let path = if d.is_empty() {
                name.clone()
            } else {
                format!("{d}/{name}")
            };
            match snap.entry(&path) {
                Some(Entry::Dir) => todo.push(path),
                Some(Entry::File) if name.ends_with(".yaml") || name.ends_with(".yml") => {
                    out.push(path)
                }
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Resolves every symlink along `path`. Errors when a link points outside the repo.
pub fn resolve(snap: &dyn Snapshot, path: &str) -> Result<String, String> {
    let mut todo: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    todo.reverse();
    let mut done = String::new();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        let candidate = if done.is_empty() {
            part.clone()
        } else {
            format!("{done}/{part}")
        };
        match snap.entry(&candidate) {
            Some(Entry::Symlink(target)) => {
                hops += 1;
                if hops > 40 {
                    return Err(format!("{candidate}: too many levels of symbolic links"));
                }
                let joined = join(&done, &target).ok_or_else(|| {
                    format!("{candidate}: symlink to {target:?} escapes the repository")
                })?;
                let mut rest: Vec<String> = joined
                    .split('/')
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect();
                rest.reverse();
                done.clear();
                todo.extend(rest);
            }
            _ => done = candidate,
        }
    }
    Ok(done)
}

/// A folder on disk as a snapshot (for offline validation).
pub struct DirSnapshot {
    root: PathBuf,
}

impl DirSnapshot {
    /// A snapshot rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirSnapshot { root: root.into() }
    }

    fn abs(&self, path: &str) -> PathBuf {
        if path.is_empty() {
            self.root.clone()
        } else {
            self.root.join(path)
        }
    }
}

impl Snapshot for DirSnapshot {
    fn entry(&self, path: &str) -> Option<Entry> {
        let abs = self.abs(path);
        let md = std::fs::symlink_metadata(&abs).ok()?;
        if md.file_type().is_symlink() {
            let target = std::fs::read_link(&abs).ok()?;
            Some(Entry::Symlink(target.to_string_lossy().into_owned()))
        } else if md.is_dir() {
            Some(Entry::Dir)
        } else {
            Some(Entry::File)
        }
    }

    fn children(&self, dir: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.abs(dir))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.abs(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_normalizes_and_refuses_escape() {
        assert_eq!(
            join("apps/podinfo", "../base/x.yaml").as_deref(),
            Some("apps/base/x.yaml")
        );
        assert_eq!(join("", "./a//b").as_deref(), Some("a/b"));
        assert_eq!(join("apps", "../../etc/passwd"), None);
        assert_eq!(join("apps", "/etc/passwd"), None);
    }

    #[test]
    fn resolves_symlinks_inside_and_refuses_outside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("real")).unwrap();
        std::fs::write(dir.path().join("real/a.yaml"), "x: 1").unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink("../../outside", dir.path().join("real/evil")).unwrap();
        let snap = DirSnapshot::new(dir.path());
        assert_eq!(resolve(&snap, "link/a.yaml").unwrap(), "real/a.yaml");
        let err = resolve(&snap, "real/evil").unwrap_err();
        assert!(err.contains("escapes the repository"), "{err}");
    }
}
