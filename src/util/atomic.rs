//! Crash-safe file writes: a temp file in the same folder, made durable, then renamed
//! over the target, then the folder made durable. A reader sees either the old or the
//! new file, never a torn one, and a `kill -9` at any point leaves one of the two.
//! Files that may hold secrets are created owner-only (0600) from the first byte, so
//! no other user can open them even for an instant; so is the state dir (0700).

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Temp files start with this, so readers skip them and start-up sweeps them away.
pub const TMP_PREFIX: &str = ".tmp-";

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_path_for(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!("{TMP_PREFIX}{}-{n}-{name}", std::process::id()))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes a folder's entries (creations, renames, removals) durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Mode of files that may hold secrets: Secret objects, rendered objects (their values
/// may come from Secrets), Helm release records and process logs.
pub const PRIVATE_FILE: u32 = 0o600;
/// Mode of the state dir.
pub const PRIVATE_DIR: u32 = 0o700;
/// Mode of other files (before the umask), as `File::create` gives.
const PUBLIC_FILE: u32 = 0o666;

/// Writes `bytes` to `path` atomically and durably (temp file, fsync, rename, fsync dir).
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_mode(path, bytes, PUBLIC_FILE)
}

/// [`write`] for a file that may hold secrets: readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_mode(path, bytes, PRIVATE_FILE)
}

fn create_temp(tmp: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
}

fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent_of(path);
    fs::create_dir_all(dir)?;
    let tmp = temp_path_for(path);
    let result = (|| {
        let mut f = create_temp(&tmp, mode)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Many writes and removals made durable together: every temp file is written, one
/// filesystem-wide sync makes them all durable, and only then are they renamed into
/// place. Same guarantee as per-file fsync, at a fraction of the cost for thousands
/// of small files (0.28 ms per fsync here would be 2.8 s for 10,000 objects).
#[derive(Default)]
pub struct Batch {
    staged: Vec<(PathBuf, PathBuf)>,
    removals: Vec<PathBuf>,
    dirs: BTreeSet<PathBuf>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `bytes` to a temp file beside `path`, readable by its owner only (the
    /// batch holds objects, whose values may come from Secrets); it takes effect at
    /// `commit`.
    pub fn stage(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let dir = parent_of(path).to_path_buf();
        if !self.dirs.contains(&dir) {
            fs::create_dir_all(&dir)?;
        }
        let tmp = temp_path_for(path);
        let mut f = create_temp(&tmp, PRIVATE_FILE)?;
        f.write_all(bytes)?;
        self.staged.push((tmp, path.to_path_buf()));
        self.dirs.insert(dir);
        Ok(())
    }

    /// Removes `path` at `commit`.
    pub fn remove(&mut self, path: &Path) {
        self.dirs.insert(parent_of(path).to_path_buf());
        self.removals.push(path.to_path_buf());
    }

    /// Number of files written by this batch.
    pub fn writes(&self) -> usize {
        self.staged.len()
    }

    /// Makes the staged files durable, renames them into place, applies removals.
    pub fn commit(mut self) -> io::Result<()> {
        if let Some((tmp, _)) = self.staged.first() {
            sync_filesystem_of(tmp, &self.staged)?;
        }
        for (tmp, path) in std::mem::take(&mut self.staged) {
            fs::rename(&tmp, &path)?;
        }
        for path in std::mem::take(&mut self.removals) {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        for dir in std::mem::take(&mut self.dirs) {
            if dir.exists() {
                fsync_dir(&dir)?;
            }
        }
        Ok(())
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        for (tmp, _) in &self.staged {
            let _ = fs::remove_file(tmp);
        }
    }
}

#[cfg(target_os = "linux")]
fn sync_filesystem_of(probe: &Path, _all: &[(PathBuf, PathBuf)]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = File::open(probe)?;
    // SAFETY: syncfs only reads the descriptor, which stays open for the call.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn sync_filesystem_of(_probe: &Path, all: &[(PathBuf, PathBuf)]) -> io::Result<()> {
    for (tmp, _) in all {
        File::open(tmp)?.sync_all()?;
    }
    Ok(())
}

/// Creates `dir` (and its parents) owner-only, and takes group and other access away
/// from an existing one. True when an existing folder had to be tightened (a state dir
/// made by an older version, whose files need the same).
pub fn private_dir(dir: &Path) -> io::Result<bool> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)?;
    let mode = fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 == 0 {
        return Ok(false);
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR))?;
    Ok(true)
}

/// Calls `visit` on every entry below `dir` that is not a folder; returns how many
/// visits acted (returned true). A missing `dir` has none.
fn for_each_file(
    dir: &Path,
    visit: &mut dyn FnMut(&fs::DirEntry) -> io::Result<bool>,
) -> io::Result<usize> {
    let mut acted = 0;
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(0);
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            acted += for_each_file(&entry.path(), visit)?;
        } else if visit(&entry)? {
            acted += 1;
        }
    }
    Ok(acted)
}

/// Takes group and other access away from every file below `dir` (files written
/// before files were created private). Returns how many were changed.
pub fn tighten_files(dir: &Path) -> io::Result<usize> {
    for_each_file(dir, &mut |entry| {
        let meta = entry.metadata()?;
        let mode = meta.permissions().mode();
        if !meta.is_file() || mode & 0o077 == 0 {
            return Ok(false);
        }
        fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode & 0o700))?;
        Ok(true)
    })
}

/// Removes temp files left by a process that died mid-write, below `dir`.
pub fn sweep_temp_files(dir: &Path) -> io::Result<usize> {
    for_each_file(dir, &mut |entry| {
        if !entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            return Ok(false);
        }
        fs::remove_file(entry.path())?;
        Ok(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b.json");
        write(&p, b"one").unwrap();
        write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn private_files_and_dirs_are_owner_only() {
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert!(
            !private_dir(&state).unwrap(),
            "a new folder needs no tightening"
        );
        assert_eq!(mode(&state), PRIVATE_DIR);
        write_private(&state.join("s/secret.json"), b"{}").unwrap();
        assert_eq!(mode(&state.join("s/secret.json")), PRIVATE_FILE);
        let mut b = Batch::new();
        b.stage(&state.join("o/obj.json"), b"{}").unwrap();
        b.commit().unwrap();
        assert_eq!(mode(&state.join("o/obj.json")), PRIVATE_FILE);

        // An older, open state dir: the folder and its files are tightened.
        let old = state.join("o/old.json");
        fs::write(&old, b"{}").unwrap();
        fs::set_permissions(&old, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(&state, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(private_dir(&state).unwrap());
        assert_eq!(mode(&state), PRIVATE_DIR);
        assert_eq!(tighten_files(&state).unwrap(), 1);
        assert_eq!(mode(&old), 0o600);
    }

    #[test]
    fn batch_commits_and_drop_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let keep = dir.path().join("x/keep");
        let gone = dir.path().join("x/gone");
        write(&gone, b"old").unwrap();
        let mut b = Batch::new();
        b.stage(&keep, b"new").unwrap();
        b.remove(&gone);
        b.commit().unwrap();
        assert_eq!(fs::read(&keep).unwrap(), b"new");
        assert!(!gone.exists());

        let mut b = Batch::new();
        b.stage(&dir.path().join("x/never"), b"z").unwrap();
        drop(b);
        let names: Vec<_> = fs::read_dir(dir.path().join("x"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("keep")]);
    }
}
