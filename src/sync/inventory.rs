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

/// An entry by reference, to store an inventory without building it: the Kubernetes
/// target writes its final inventory straight from the plan, the desired objects and
/// the old entries, so 10,000 entries are never copied into a second map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryRef<'a> {
    /// See [`Entry::api_version`].
    pub api_version: &'a str,
    /// See [`Entry::hash`].
    pub hash: &'a str,
    /// See [`Entry::revision`].
    pub revision: &'a str,
    /// See [`Entry::file`].
    pub file: &'a str,
    /// See [`Entry::prune`].
    pub prune: bool,
}

impl Entry {
    /// This entry by reference.
    pub fn as_ref(&self) -> EntryRef<'_> {
        EntryRef {
            api_version: &self.api_version,
            hash: &self.hash,
            revision: &self.revision,
            file: &self.file,
            prune: self.prune,
        }
    }
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
    /// Read straight into the map: a list of 10,000 records first would double the
    /// memory of a read.
    #[serde(deserialize_with = "records_into_map")]
    objects: BTreeMap<ObjectKey, Entry>,
}

fn records_into_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<ObjectKey, Entry>, D::Error> {
    struct Visit;
    impl<'de> serde::de::Visitor<'de> for Visit {
        type Value = BTreeMap<ObjectKey, Entry>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of inventory records")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut map = BTreeMap::new();
            while let Some(r) = seq.next_element::<Record>()? {
                map.insert(r.key, r.entry);
            }
            Ok(map)
        }
    }
    d.deserialize_seq(Visit)
}

#[derive(Serialize)]
struct RecordRef<'a, E> {
    #[serde(flatten)]
    key: &'a ObjectKey,
    #[serde(flatten)]
    entry: E,
}

/// The records of a stored inventory, made on demand by `F` (serde serializes through
/// `&self`, so an iterator cannot be consumed in place).
struct Records<F>(F);

impl<'a, F, I, E> Serialize for Records<F>
where
    F: Fn() -> I,
    I: Iterator<Item = (&'a ObjectKey, E)>,
    E: Serialize,
{
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq((self.0)().map(|(key, entry)| RecordRef { key, entry }))
    }
}

/// Writes the stored form of the inventory whose records `records` yields, in key
/// order without repeats, to `w`: what [`Inventory::to_json`] writes for the same
/// entries, byte for byte.
pub fn write_json<'a, F, I>(w: impl std::io::Write, records: F) -> std::io::Result<()>
where
    F: Fn() -> I,
    I: Iterator<Item = (&'a ObjectKey, EntryRef<'a>)>,
{
    #[derive(Serialize)]
    struct Out<R> {
        objects: R,
    }
    serde_json::to_writer(
        w,
        &Out {
            objects: Records(records),
        },
    )
    .map_err(std::io::Error::from)
}

impl Inventory {
    /// Serializes for storage (a JSON list, keys sorted), without copying entries.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_json(&mut out).expect("writing to memory");
        out
    }

    /// Writes the stored form to `w`.
    pub fn write_json(&self, w: impl std::io::Write) -> std::io::Result<()> {
        write_json(w, || self.entries.iter().map(|(k, e)| (k, e.as_ref())))
    }

    /// Reads a stored inventory.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let f: File = serde_json::from_slice(bytes)?;
        Ok(Inventory { entries: f.objects })
    }

    /// Reads a stored inventory from a stream, without holding its text.
    pub fn from_reader(r: impl std::io::Read) -> Result<Self, serde_json::Error> {
        let f: File = serde_json::from_reader(std::io::BufReader::new(r))?;
        Ok(Inventory { entries: f.objects })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize) -> Entry {
        Entry {
            api_version: "apps/v1".into(),
            hash: format!("{i:064x}"),
            revision: "main@sha1:0123".into(),
            file: format!("apps/d-{i}.yaml"),
            prune: !i.is_multiple_of(3),
            live: true,
        }
    }

    #[test]
    fn inventories_read_back_from_text_and_from_a_stream() {
        let mut inv = Inventory::default();
        for i in 0..50 {
            inv.entries.insert(
                ObjectKey::new("apps/v1", "Deployment", "apps", &format!("d-{i}")),
                entry(i),
            );
        }
        let json = inv.to_json();
        assert_eq!(Inventory::from_json(&json).unwrap(), inv);
        assert_eq!(Inventory::from_reader(&json[..]).unwrap(), inv);
        let mut streamed = Vec::new();
        write_json(&mut streamed, || {
            inv.entries.iter().map(|(k, e)| (k, e.as_ref()))
        })
        .unwrap();
        assert_eq!(streamed, json);
        let e = Inventory::from_reader(&b"{\"objects\": 3}"[..]).unwrap_err();
        assert!(e.to_string().contains("a list of inventory records"), "{e}");
    }
}
