//! The local object store: one canonical JSON file per object under `objects/`, an
//! `inventory.json` beside it, all written atomically. Apply order makes a `kill -9` at
//! any instant safe: the inventory first grows to cover every object about to be
//! written (the pending inventory), then objects are written in one durable batch, then
//! the final inventory replaces it. So every object file on disk is always in the
//! inventory, and an interrupted apply is simply redone by the next sync.

use crate::manifest::{Object, ObjectKey};
use crate::sync::inventory::Entry;
use crate::sync::{ApplyPlan, Inventory, Op};
use crate::targets::{ApplyReport, Error, Result};
use crate::util::atomic;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// The on-disk store rooted at a state dir.
#[derive(Clone)]
pub struct LocalStore {
    root: PathBuf,
}

/// Holds the state dir's writer lock until dropped.
pub struct WriterLock {
    _file: File,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl LocalStore {
    /// Opens (creating if needed) a store at `state_dir`, which is made owner-only
    /// (0700); a state dir from an older version gets its files made 0600 as well.
    pub fn open(state_dir: &Path) -> Result<Self> {
        if atomic::private_dir(state_dir).map_err(io_err(state_dir))? {
            atomic::tighten_files(state_dir).map_err(io_err(state_dir))?;
        }
        fs::create_dir_all(state_dir.join("objects")).map_err(io_err(state_dir))?;
        Ok(LocalStore {
            root: state_dir.to_path_buf(),
        })
    }

    /// The state dir.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the single-writer lock and sweeps temp files a crashed writer left.
    pub fn lock_writer(&self) -> Result<WriterLock> {
        let path = self.root.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock only reads the descriptor, which `file` keeps open.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(Error::Locked(self.root.clone()));
        }
        atomic::sweep_temp_files(&self.root.join("objects")).map_err(io_err(&self.root))?;
        atomic::sweep_temp_files(&self.root.join("status")).map_err(io_err(&self.root))?;
        Ok(WriterLock { _file: file })
    }

    fn inventory_path(&self) -> PathBuf {
        self.root.join("inventory.json")
    }

    /// The file an object lives in. Each part of the identity must be one plain file
    /// name, so no object, however named, reads or writes outside `objects/` (load-time
    /// validation refuses such names first; this holds even for names that bypass it).
    pub fn object_path(&self, key: &ObjectKey) -> Result<PathBuf> {
        let group = if key.group.is_empty() {
            "core"
        } else {
            &key.group
        };
        let ns = if key.namespace.is_empty() {
            "_cluster"
        } else {
            &key.namespace
        };
        let file = format!("{}.json", key.name);
        let mut path = self.root.join("objects");
        for part in [group, &key.kind, ns, &file] {
            if !crate::manifest::names::is_plain_file_name(part) {
                return Err(Error::UnsafePath {
                    key: key.to_string(),
                    part: part.to_string(),
                });
            }
            path.push(part);
        }
        Ok(path)
    }

    /// The stored inventory without checking which objects are present.
    pub fn read_inventory(&self) -> Result<Inventory> {
        let path = self.inventory_path();
        match fs::read(&path) {
            Ok(bytes) => Inventory::from_json(&bytes).map_err(|e| Error::Corrupt {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Inventory::default()),
            Err(e) => Err(Error::Io { path, source: e }),
        }
    }

    fn write_inventory(&self, inv: &Inventory) -> Result<()> {
        let path = self.inventory_path();
        atomic::write(&path, &inv.to_json()).map_err(io_err(&path))
    }
}

impl LocalStore {
    fn generated_path(&self) -> PathBuf {
        self.root.join("generated.json")
    }

    /// Objects gitcanary generated itself (canary primaries, their Services and
    /// configs), keyed by object, with the owner that made them. They live in the store
    /// beside Git's objects but outside the inventory, so sync never prunes them.
    pub fn generated(&self) -> BTreeMap<ObjectKey, String> {
        let list: Vec<(ObjectKey, String)> = std::fs::read(self.generated_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        list.into_iter().collect()
    }

    fn write_generated(&self, g: &BTreeMap<ObjectKey, String>) -> Result<()> {
        let list: Vec<(&ObjectKey, &String)> = g.iter().collect();
        let path = self.generated_path();
        atomic::write(&path, &serde_json::to_vec(&list).unwrap_or_default()).map_err(io_err(&path))
    }

    /// Writes a generated object owned by `owner` (e.g. `Canary/test/podinfo`).
    pub fn put_generated(
        &self,
        key: &ObjectKey,
        value: &serde_json::Value,
        owner: &str,
    ) -> Result<()> {
        let path = self.object_path(key)?;
        let mut g = self.generated();
        if g.get(key).map(String::as_str) != Some(owner) {
            g.insert(key.clone(), owner.to_string());
            self.write_generated(&g)?;
        }
        atomic::write_private(&path, &crate::manifest::object::canonical_json(value))
            .map_err(io_err(&path))
    }

    /// Removes every generated object of `owner`.
    pub fn remove_generated(&self, owner: &str) -> Result<()> {
        let mut g = self.generated();
        let keys: Vec<ObjectKey> = g
            .iter()
            .filter(|(_, o)| *o == owner)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            if let Ok(path) = self.object_path(k) {
                let _ = std::fs::remove_file(path);
            }
            g.remove(k);
        }
        self.write_generated(&g)
    }

    /// A core (`v1`) object such as a ConfigMap or Secret, if stored: the lookup
    /// containers resolve `env` and `envFrom` with.
    pub fn get_core(&self, kind: &str, ns: &str, name: &str) -> Option<serde_json::Value> {
        self.get(&ObjectKey::new("v1", kind, ns, name))
            .ok()
            .flatten()
    }

    /// Every object of a group and kind: from Git (the inventory) and generated.
    pub fn list(&self, group: &str, kind: &str) -> Result<Vec<ObjectKey>> {
        let mut keys: Vec<ObjectKey> = self
            .read_inventory()?
            .entries
            .into_keys()
            .filter(|k| k.group == group && k.kind == kind)
            .collect();
        keys.extend(
            self.generated()
                .into_keys()
                .filter(|k| k.group == group && k.kind == kind),
        );
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
}

/// The object operations the local target (`super::LocalTarget`) exposes as
/// [`crate::targets::Target`]; the canary engine and the CLI use them directly.
impl LocalStore {
    /// The inventory of applied objects, with `live` set for those present.
    pub fn inventory(&self) -> Result<Inventory> {
        let mut inv = self.read_inventory()?;
        for (key, entry) in inv.entries.iter_mut() {
            entry.live = self.object_path(key).is_ok_and(|p| p.exists());
        }
        Ok(inv)
    }

    /// Applies a plan made against `old`; `desired` is what the plan indexes.
    pub fn apply(
        &self,
        plan: &ApplyPlan,
        desired: &[Object],
        old: &Inventory,
        revision: &str,
    ) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        // Every path is checked before anything is written: a bad one applies nothing.
        let paths = plan
            .actions
            .iter()
            .map(|a| self.object_path(&a.key))
            .collect::<Result<Vec<_>>>()?;
        if !plan.has_changes() {
            report.unchanged = plan.actions.len();
            return Ok(report);
        }
        // 1. Pending inventory: everything old, plus every object about to be created.
        let new_keys: Vec<_> = plan
            .actions
            .iter()
            .filter(|a| a.op == Op::Create && !old.entries.contains_key(&a.key))
            .filter_map(|a| a.desired)
            .collect();
        if !new_keys.is_empty() {
            let mut pending = old.clone();
            for i in new_keys {
                let o = &desired[i];
                pending
                    .entries
                    .insert(o.key.clone(), entry_for(o, "", revision));
            }
            self.write_inventory(&pending)?;
        }
        // 2. Objects, in one durable batch.
        let mut batch = atomic::Batch::new();
        let mut final_inv = Inventory::default();
        for (a, path) in plan.actions.iter().zip(&paths) {
            match (a.op, a.desired) {
                (Op::Create | Op::Update, Some(i)) => {
                    let o = &desired[i];
                    batch.stage(path, &o.json).map_err(io_err(path))?;
                    final_inv
                        .entries
                        .insert(a.key.clone(), entry_for(o, &o.hash, revision));
                    if a.op == Op::Create {
                        report.created += 1
                    } else {
                        report.updated += 1
                    }
                }
                (Op::Unchanged, Some(i)) => {
                    let o = &desired[i];
                    let kept = old
                        .entries
                        .get(&a.key)
                        .map(|e| e.revision.as_str())
                        .unwrap_or(revision);
                    final_inv
                        .entries
                        .insert(a.key.clone(), entry_for(o, &o.hash, kept));
                    report.unchanged += 1;
                }
                (Op::Prune, _) => {
                    batch.remove(path);
                    report.pruned += 1;
                }
                _ => {}
            }
        }
        report.writes = batch.writes() + report.pruned;
        batch.commit().map_err(io_err(&self.root))?;
        // 3. Final inventory: exactly the desired objects.
        self.write_inventory(&final_inv)?;
        Ok(report)
    }

    /// One object as stored, if present.
    pub fn get(&self, key: &ObjectKey) -> Result<Option<serde_json::Value>> {
        let path = self.object_path(key)?;
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Corrupt {
                    path,
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io { path, source: e }),
        }
    }
}

fn entry_for(o: &Object, hash: &str, revision: &str) -> Entry {
    Entry {
        api_version: o.api_version.clone(),
        hash: hash.to_string(),
        revision: revision.to_string(),
        file: o.origin.file.clone(),
        prune: o.prune,
        live: true,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::manifest::object::Origin;
    use crate::sync::plan;

    /// A ConfigMap `test/<name>` with `data.k: <data>`.
    pub(crate) fn cm(name: &str, data: &str, annotations: serde_json::Value) -> Object {
        let v = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "test", "annotations": annotations}, "data": {"k": data}});
        Object::from_json(
            ObjectKey::new("v1", "ConfigMap", "test", name),
            "v1".into(),
            &v,
            Origin {
                file: "c.yaml".into(),
                line: 1,
            },
        )
    }

    #[test]
    fn apply_then_noop_then_prune() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let _lock = store.lock_writer().unwrap();
        let desired = vec![
            cm("a", "1", serde_json::json!({})),
            cm(
                "b",
                "1",
                serde_json::json!({"gitcanary.io/prune": "disabled"}),
            ),
        ];
        let inv = store.inventory().unwrap();
        let r = store
            .apply(&plan(&desired, &inv), &desired, &inv, "r1")
            .unwrap();
        assert_eq!((r.created, r.writes), (2, 2));
        let inv = store.inventory().unwrap();
        let p = plan(&desired, &inv);
        assert!(!p.has_changes());
        assert_eq!(store.apply(&p, &desired, &inv, "r1").unwrap().writes, 0);

        let next = vec![cm("c", "2", serde_json::json!({}))];
        let inv = store.inventory().unwrap();
        let r = store.apply(&plan(&next, &inv), &next, &inv, "r2").unwrap();
        assert_eq!((r.created, r.pruned), (1, 1));
        assert!(store.get(&desired[0].key).unwrap().is_none(), "a pruned");
        assert!(
            store.get(&desired[1].key).unwrap().is_some(),
            "b kept by annotation"
        );
        let inv = store.read_inventory().unwrap();
        assert_eq!(
            inv.entries
                .keys()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>(),
            vec!["c"]
        );
    }

    #[test]
    fn paths_leaving_the_store_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let store = LocalStore::open(&state).unwrap();
        let _lock = store.lock_writer().unwrap();
        let bad = [
            ObjectKey::new("v1", "../../../../escaped", "test", "x"),
            ObjectKey::new("../../escaped/v1", "ConfigMap", "test", "x"),
            ObjectKey::new("v1", "ConfigMap", "..", "x"),
            ObjectKey::new("v1", "ConfigMap", "test", "../../../../escaped"),
            ObjectKey::new("v1", "ConfigMap", "test", "a/b"),
            ObjectKey::new("v1", "ConfigMap", "test", ".tmp-1-x"),
        ];
        let value = serde_json::json!({"data": {"k": "v"}});
        for key in &bad {
            assert!(
                matches!(store.object_path(key), Err(Error::UnsafePath { .. })),
                "{key}"
            );
            assert!(store.put_generated(key, &value, "Canary/test/x").is_err());
            assert!(store.get(key).is_err(), "{key}");
            // Through a plan too: nothing at all is applied.
            let mut o = cm("ok", "1", serde_json::json!({}));
            o = Object::from_json(key.clone(), "v1".into(), &o.value(), o.origin.clone());
            let desired = vec![cm("fine", "1", serde_json::json!({})), o];
            let inv = store.inventory().unwrap();
            assert!(store
                .apply(&plan(&desired, &inv), &desired, &inv, "r1")
                .is_err());
            assert!(store.get(&desired[0].key).unwrap().is_none());
        }
        let mut written = vec![];
        let mut stack = vec![dir.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    written.push(p);
                }
            }
        }
        assert!(written.iter().all(|p| p.starts_with(&state)), "{written:?}");
        assert!(
            !written.iter().any(|p| p.starts_with(state.join("objects"))),
            "{written:?}"
        );
    }

    #[test]
    fn second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let _lock = store.lock_writer().unwrap();
        let other = LocalStore::open(dir.path()).unwrap();
        assert!(matches!(other.lock_writer(), Err(Error::Locked(_))));
    }
}
