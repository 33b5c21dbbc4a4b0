//! The inventory: what gitcanary applied to a target, with each object's content hash.
//! Pruning is driven by it alone, so gitcanary never deletes what it did not create.

use crate::manifest::ObjectKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One applied object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// `apiVersion` as last applied.
    pub api_version: String,
    /// sha256 of the canonical JSON last applied; empty while a write is in flight.
    pub hash: String,
    /// The revision that last wrote the object.
    pub revision: String,
    /// Source file that defined it.
    pub file: String,
    /// False when the last applied object carried a prune opt-out annotation.
    pub prune: bool,
    /// Whether the object is present in the target; filled in on read, never stored.
    #[serde(skip, default = "yes")]
    pub live: bool,
}

fn yes() -> bool {
    true
}

/// Everything gitcanary has applied, keyed by object identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Entries by key.
    pub entries: BTreeMap<ObjectKey, Entry>,
}

#[derive(Deserialize)]
struct Record {
    #[serde(flatten)]
    key: ObjectKey,
    #[serde(flatten)]
    entry: Entry,
}

#[derive(Deserialize)]
struct File {
    objects: Vec<Record>,
}

#[derive(Serialize)]
struct RecordRef<'a> {
    #[serde(flatten)]
    key: &'a ObjectKey,
    #[serde(flatten)]
    entry: &'a Entry,
}

struct Records<'a>(&'a BTreeMap<ObjectKey, Entry>);

impl Serialize for Records<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(key, entry)| RecordRef { key, entry }))
    }
}

impl Inventory {
    /// Serializes for storage (a JSON list, keys sorted), without copying entries.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Out<'a> {
            objects: Records<'a>,
        }
        serde_json::to_vec(&Out {
            objects: Records(&self.entries),
        })
        .expect("inventory serializes")
    }

    /// Reads a stored inventory.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let f: File = serde_json::from_slice(bytes)?;
        Ok(Inventory {
            entries: f.objects.into_iter().map(|r| (r.key, r.entry)).collect(),
        })
    }
}
