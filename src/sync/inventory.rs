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

#[derive(Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    key: ObjectKey,
    #[serde(flatten)]
    entry: Entry,
}

#[derive(Serialize, Deserialize)]
struct File {
    objects: Vec<Record>,
}

impl Inventory {
    /// Serializes for storage (a JSON list, keys sorted).
    pub fn to_json(&self) -> Vec<u8> {
        let objects = self.entries.iter().map(|(k, e)| Record { key: k.clone(), entry: e.clone() }).collect();
        serde_json::to_vec_pretty(&File { objects }).expect("inventory serializes")
    }

    /// Reads a stored inventory.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let f: File = serde_json::from_slice(bytes)?;
        Ok(Inventory { entries: f.objects.into_iter().map(|r| (r.key, r.entry)).collect() })
    }
}
