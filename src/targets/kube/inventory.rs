//! The inventory kept in the cluster, so that a new gitcanary pod with an empty disk
//! prunes what an earlier one applied. It is the sync inventory as gzipped JSON in the
//! `binaryData` of ConfigMaps in `target.kubernetes.namespace`: a head ConfigMap,
//! plus numbered parts when it outgrows one ConfigMap (the API server caps an object
//! near 1 MiB). The head names the part count and the sha256 of the whole, and is
//! written last, so a reader never mixes parts of two writes. Encoding is pure; the
//! executor reads and writes the ConfigMaps.

use crate::manifest::ObjectKey;
use crate::sync::inventory::EntryRef;
use crate::sync::Inventory;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::Api;
use sha2::{Digest, Sha256};

/// Bytes of gzipped inventory per ConfigMap: base64 makes them 4/3 larger, and the
/// rest of the object must fit under the API server's 1 MiB request limit too.
pub const PART_BYTES: usize = 700_000;
/// The `binaryData` key holding a part.
const KEY: &str = "inventory.json.gz";
/// Head annotation: how many ConfigMaps hold the inventory.
const PARTS: &str = "gitcanary.io/inventory-parts";
/// Head annotation: sha256 of the gzipped inventory, all parts joined.
const SHA: &str = "gitcanary.io/inventory-sha256";

/// Errors of the stored inventory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stored ConfigMaps do not hold a readable inventory.
    #[error("inventory ConfigMap {namespace}/{name}: {message}")]
    Corrupt {
        /// Its namespace.
        namespace: String,
        /// The head ConfigMap.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// This replica lost the leader lease: the inventory was not written.
    #[error(transparent)]
    NotLeader(#[from] super::leader::NotLeader),
    /// The API server refused a read or write.
    #[error("inventory ConfigMap {namespace}/{name}: {source}")]
    Api {
        /// Its namespace.
        namespace: String,
        /// The ConfigMap.
        name: String,
        /// Why.
        source: kube::Error,
    },
}

/// Result with the inventory error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An inventory as stored: gzipped JSON, cut into parts of at most `part` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    gz: Vec<u8>,
    part: usize,
    /// sha256 of the gzipped JSON, all parts joined.
    pub sha: String,
}

impl Encoded {
    /// The parts, head first.
    pub fn parts(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        self.gz.chunks(self.part)
    }
}

/// The stored form of the inventory whose records `records` yields (in key order,
/// without repeats). The JSON goes straight into gzip: it is four times the size of
/// its gzipped form, and was the largest allocation of a 10,000-object sync.
pub fn encode<'a, F, I>(records: F, part_bytes: usize) -> Encoded
where
    F: Fn() -> I,
    I: Iterator<Item = (&'a ObjectKey, EntryRef<'a>)>,
{
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    crate::sync::inventory::write_json(&mut gz, records).expect("writing to memory");
    let gz = gz.finish().expect("writing to memory");
    let sha = hex(&Sha256::digest(&gz));
    Encoded {
        gz,
        part: part_bytes.max(1),
        sha,
    }
}

/// The inventory from its parts, checked against the head's sha256.
pub fn decode(parts: &[Vec<u8>], sha: &str) -> Result<Inventory, String> {
    let joined = parts.concat();
    let got = hex(&Sha256::digest(&joined));
    if got != sha {
        return Err(format!(
            "parts do not match the head (sha256 {got}, expected {sha}); a write was interrupted"
        ));
    }
    Inventory::from_reader(flate2::read::GzDecoder::new(&joined[..])).map_err(|e| {
        if e.is_io() {
            format!("not gzip: {e}")
        } else {
            format!("not an inventory: {e}")
        }
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The name of part `i` (the head is part 0).
pub fn part_name(head: &str, i: usize) -> String {
    if i == 0 {
        head.to_string()
    } else {
        format!("{head}-part-{i}")
    }
}

/// The ConfigMaps holding one source's inventory.
pub struct Store {
    api: Api<ConfigMap>,
    gate: super::leader::Gate,
    namespace: String,
    name: String,
    field_manager: String,
}

impl Store {
    /// The inventory named `name` in `namespace`.
    pub fn new(client: kube::Client, namespace: &str, name: &str, field_manager: &str) -> Self {
        Store {
            api: Api::namespaced(client, namespace),
            gate: super::leader::Gate::open(),
            namespace: namespace.into(),
            name: name.into(),
            field_manager: field_manager.into(),
        }
    }

    /// Makes each ConfigMap write wait for `gate`.
    pub fn set_gate(&mut self, gate: super::leader::Gate) {
        self.gate = gate;
    }

    fn api_err(&self, name: &str) -> impl FnOnce(kube::Error) -> Error + '_ {
        let name = name.to_string();
        move |source| Error::Api {
            namespace: self.namespace.clone(),
            name,
            source,
        }
    }

    fn corrupt(&self, message: String) -> Error {
        Error::Corrupt {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            message,
        }
    }

    /// The stored inventory and its sha256; empty when none was written yet.
    pub async fn read(&self) -> Result<(Inventory, Option<String>)> {
        let Some(head) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(self.api_err(&self.name))?
        else {
            return Ok((Inventory::default(), None));
        };
        let ann = head.metadata.annotations.clone().unwrap_or_default();
        let count: usize = ann
            .get(PARTS)
            .and_then(|n| n.parse().ok())
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| self.corrupt(format!("annotation {PARTS} missing or invalid")))?;
        let sha = ann
            .get(SHA)
            .cloned()
            .ok_or_else(|| self.corrupt(format!("annotation {SHA} missing")))?;
        let mut parts = vec![part_bytes(head)];
        for i in 1..count {
            let name = part_name(&self.name, i);
            let cm = self
                .api
                .get_opt(&name)
                .await
                .map_err(self.api_err(&name))?
                .ok_or_else(|| self.corrupt(format!("part {name} is missing")))?;
            parts.push(part_bytes(cm));
        }
        let inv = decode(&parts, &sha).map_err(|m| self.corrupt(m))?;
        Ok((inv, Some(sha)))
    }

    /// Writes the inventory of `records` (see [`encode`]) unless its sha256 is
    /// `stored` already; returns the new sha256 and the number of writes. Parts go
    /// first and the head last; parts an earlier, larger inventory left behind are
    /// deleted after.
    pub async fn write<'a, F, I>(&self, records: F, stored: Option<&str>) -> Result<(String, usize)>
    where
        F: Fn() -> I,
        I: Iterator<Item = (&'a ObjectKey, EntryRef<'a>)>,
    {
        let encoded = encode(records, PART_BYTES);
        if stored == Some(encoded.sha.as_str()) {
            return Ok((encoded.sha, 0));
        }
        let count = encoded.parts().len();
        let mut writes = 0;
        let mut head = None;
        for (i, bytes) in encoded.parts().enumerate() {
            if i == 0 {
                head = Some(bytes);
                continue;
            }
            self.put(&part_name(&self.name, i), bytes, None).await?;
            writes += 1;
        }
        self.put(
            &self.name,
            head.unwrap_or_default(),
            Some((count, &encoded.sha)),
        )
        .await?;
        writes += 1;
        // Stale parts of a larger inventory: the head no longer points at them.
        for i in count.. {
            let name = part_name(&self.name, i);
            self.gate.check()?;
            match self.api.delete(&name, &Default::default()).await {
                Ok(_) => writes += 1,
                Err(kube::Error::Api(e)) if e.code == 404 => break,
                Err(e) => return Err(self.api_err(&name)(e)),
            }
        }
        Ok((encoded.sha, writes))
    }

    async fn put(&self, name: &str, bytes: &[u8], head: Option<(usize, &str)>) -> Result<()> {
        use base64::Engine;
        let mut meta = serde_json::json!({
            "name": name,
            "namespace": self.namespace,
            "labels": {super::apply::MANAGED_BY: super::apply::GITCANARY},
        });
        if let Some((count, sha)) = head {
            meta["annotations"] = serde_json::json!({PARTS: count.to_string(), SHA: sha});
        }
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta,
            "binaryData": {KEY: base64::engine::general_purpose::STANDARD.encode(bytes)},
        });
        let pp = PatchParams::apply(&self.field_manager).force();
        self.gate.check()?;
        match self.api.patch(name, &pp, &Patch::Apply(&body)).await {
            Ok(_) => return Ok(()),
            // The namespace does not exist yet (a first start): create it, once.
            Err(kube::Error::Api(s)) if s.code == 404 => self.create_namespace().await?,
            Err(e) => return Err(self.api_err(name)(e)),
        }
        self.api
            .patch(name, &pp, &Patch::Apply(&body))
            .await
            .map_err(self.api_err(name))?;
        Ok(())
    }

    async fn create_namespace(&self) -> Result<()> {
        use k8s_openapi::api::core::v1::Namespace;
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": self.namespace},
        });
        let pp = PatchParams::apply(&self.field_manager);
        Api::<Namespace>::all(self.api.clone().into_client())
            .patch(&self.namespace, &pp, &Patch::Apply(&body))
            .await
            .map_err(self.api_err(&self.namespace))?;
        Ok(())
    }
}

fn part_bytes(cm: ConfigMap) -> Vec<u8> {
    cm.binary_data
        .and_then(|mut d| d.remove(KEY))
        .map(|b| b.0)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::inventory::Entry;

    fn inventory(n: usize) -> Inventory {
        let mut inv = Inventory::default();
        for i in 0..n {
            inv.entries.insert(
                ObjectKey::new("v1", "ConfigMap", "apps", &format!("cm-{i}")),
                Entry {
                    api_version: "v1".into(),
                    // Distinct hashes, as real ones are: gzip cannot fold them away.
                    hash: hex(&Sha256::digest(i.to_string().as_bytes())),
                    revision: "main@sha1:0123".into(),
                    file: format!("apps/cm-{i}.yaml"),
                    prune: i % 7 != 0,
                    live: true,
                },
            );
        }
        inv
    }

    fn encode_inv(inv: &Inventory, part_bytes: usize) -> (Vec<Vec<u8>>, String) {
        let e = encode(
            || inv.entries.iter().map(|(k, e)| (k, e.as_ref())),
            part_bytes,
        );
        (e.parts().map(<[u8]>::to_vec).collect(), e.sha)
    }

    #[test]
    fn a_large_inventory_splits_into_parts_and_joins_back() {
        let inv = inventory(10_000);
        let (parts, sha) = encode_inv(&inv, 100_000);
        assert!(parts.len() > 1, "{} parts", parts.len());
        assert!(parts.iter().all(|p| p.len() <= 100_000));
        assert_eq!(decode(&parts, &sha).unwrap(), inv);
        // 10,000 objects fit in one ConfigMap at the real part size.
        let (one, _) = encode_inv(&inv, PART_BYTES);
        assert_eq!(one.len(), 1, "{} bytes", one[0].len());
    }

    #[test]
    fn encoding_is_stable_so_an_unchanged_inventory_is_not_rewritten() {
        let inv = inventory(50);
        assert_eq!(
            encode_inv(&inv, PART_BYTES),
            encode_inv(&inv.clone(), PART_BYTES)
        );
    }

    #[test]
    fn parts_from_two_writes_are_refused() {
        let (a, sha_a) = encode_inv(&inventory(3000), 20_000);
        let (b, _) = encode_inv(&inventory(3001), 20_000);
        let mixed = vec![b[0].clone(), a[1].clone()];
        let e = decode(&mixed, &sha_a).unwrap_err();
        assert!(e.contains("interrupted"), "{e}");
        assert!(decode(&[b"junk".to_vec()], &hex(&Sha256::digest(b"junk")))
            .unwrap_err()
            .contains("not gzip"));
    }
}
