//! Commits a folder's contents to a branch of a (bare) repository with git2, without a
//! working copy. Used by `gitcanary demo` and the benchmarks to make real remotes.

use git2::{Oid, Repository, Signature};
use std::path::Path;

fn tree_from_dir(repo: &Repository, dir: &Path) -> Result<Oid, git2::Error> {
    let mut builder = repo.treebuilder(None)?;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| git2::Error::from_str(&format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == ".git" {
            continue;
        }
        let path = entry.path();
        let md =
            std::fs::symlink_metadata(&path).map_err(|e| git2::Error::from_str(&e.to_string()))?;
        if md.file_type().is_symlink() {
            let target =
                std::fs::read_link(&path).map_err(|e| git2::Error::from_str(&e.to_string()))?;
            let oid = repo.blob(target.to_string_lossy().as_bytes())?;
            builder.insert(name, oid, 0o120000)?;
        } else if md.is_dir() {
            let oid = tree_from_dir(repo, &path)?;
            if !repo.find_tree(oid)?.is_empty() {
                builder.insert(name, oid, 0o040000)?;
            }
        } else {
            let oid = repo.blob_path(&path)?;
            builder.insert(name, oid, 0o100644)?;
        }
    }
    builder.write()
}

/// Commits `dir` as the whole tree of `branch` in the repository at `repo_path`
/// (created bare if missing), on top of the branch's current head.
pub fn commit_dir(
    repo_path: &Path,
    dir: &Path,
    branch: &str,
    message: &str,
    author: (&str, &str),
) -> Result<Oid, git2::Error> {
    let repo = match Repository::open(repo_path) {
        Ok(r) => r,
        Err(_) => {
            let r = Repository::init_bare(repo_path)?;
            r.set_head(&format!("refs/heads/{branch}"))?;
            r
        }
    };
    let tree = repo.find_tree(tree_from_dir(&repo, dir)?)?;
    let refname = format!("refs/heads/{branch}");
    let parent = repo
        .refname_to_id(&refname)
        .ok()
        .and_then(|id| repo.find_commit(id).ok());
    let sig = Signature::now(author.0, author.1)?;
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some(&refname), &sig, &sig, message, &tree, &parents)
}
