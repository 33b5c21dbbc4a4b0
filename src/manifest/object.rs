//! Desired objects: identity, canonical JSON, content hash, and the errors a revision
//! can have. An object's hash is sha256 over its canonical JSON (sorted keys, no
//! whitespace), so formatting or key order changes in Git never cause a write.

use super::yaml::Pos;
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;

/// The identity of an object: group, kind, namespace and name. The version is not part
/// of it: `flagger.app/v1alpha3` and `v1beta1` name the same Canary, as in Kubernetes.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ObjectKey {
    /// API group; empty for the core group.
    pub group: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Namespace; empty for cluster-scoped kinds.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// Builds a key from an `apiVersion`, kind, namespace and name.
    pub fn new(api_version: &str, kind: &str, namespace: &str, name: &str) -> Self {
        ObjectKey {
            group: group_of(api_version).to_string(),
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// Whether this is a Namespace (applied first, pruned last).
    pub fn is_namespace(&self) -> bool {
        self.group.is_empty() && self.kind == "Namespace"
    }
}

impl fmt::Display for ObjectKey {
    /// `Kind/namespace/name`, or `Kind/name` when cluster-scoped, as Flux prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// The API group of an `apiVersion` (`apps/v1` gives `apps`, `v1` gives ``).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

/// Kinds that have no namespace. Everything else is namespaced, as CRDs usually are.
pub fn is_cluster_scoped(api_version: &str, kind: &str) -> bool {
    let group = group_of(api_version);
    matches!(
        (group, kind),
        ("", "Namespace" | "Node" | "PersistentVolume")
            | (
                "rbac.authorization.k8s.io",
                "ClusterRole" | "ClusterRoleBinding"
            )
            | ("apiextensions.k8s.io", "CustomResourceDefinition")
            | (
                "storage.k8s.io",
                "StorageClass" | "CSIDriver" | "VolumeAttachment"
            )
            | ("scheduling.k8s.io", "PriorityClass")
            | ("admissionregistration.k8s.io", _)
            | ("apiregistration.k8s.io", "APIService")
            | ("networking.k8s.io", "IngressClass")
            | ("node.k8s.io", "RuntimeClass")
            | ("cert-manager.io", "ClusterIssuer")
            | ("policy", "PodSecurityPolicy")
    )
}

/// Where an object was defined.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Origin {
    /// Repo-relative file path.
    pub file: String,
    /// Line of the document start.
    pub line: u32,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A validated desired object, held as canonical JSON to keep 10,000 of them small.
/// Cloning shares it: the parse cache and the desired list hold the same allocation.
#[derive(Clone, Debug)]
pub struct Object(Arc<ObjectData>);

impl std::ops::Deref for Object {
    type Target = ObjectData;
    fn deref(&self) -> &ObjectData {
        &self.0
    }
}

/// The fields of an [`Object`].
#[derive(Debug)]
pub struct ObjectData {
    /// Identity.
    pub key: ObjectKey,
    /// The `apiVersion` as written.
    pub api_version: String,
    /// Canonical JSON bytes.
    pub json: Arc<[u8]>,
    /// sha256 of `json`, hex.
    pub hash: String,
    /// Where it came from.
    pub origin: Origin,
    /// False when annotated `gitcanary.io/prune: disabled` or the Flux equivalent.
    pub prune: bool,
}

impl Object {
    /// Builds an object from its final JSON value.
    pub fn from_json(
        key: ObjectKey,
        api_version: String,
        value: &serde_json::Value,
        origin: Origin,
    ) -> Self {
        let prune = !prune_disabled(value);
        let json = canonical_json(value);
        let hash = sha256_hex(&json);
        Object(Arc::new(ObjectData {
            key,
            api_version,
            json: json.into(),
            hash,
            origin,
            prune,
        }))
    }

    /// Parses the canonical JSON back into a value.
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_slice(&self.json).expect("canonical JSON is valid")
    }
}

/// Annotations that keep an object in the target when it leaves Git.
pub const PRUNE_ANNOTATIONS: [&str; 2] =
    ["gitcanary.io/prune", "kustomize.toolkit.fluxcd.io/prune"];

fn prune_disabled(value: &serde_json::Value) -> bool {
    let ann = &value["metadata"]["annotations"];
    PRUNE_ANNOTATIONS
        .iter()
        .any(|a| ann[a].as_str() == Some("disabled"))
        // Helm keeps these when a release is uninstalled.
        || ann["helm.sh/resource-policy"].as_str() == Some("keep")
}

/// JSON with sorted keys and no whitespace (serde_json's map is a BTreeMap).
pub fn canonical_json(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON values serialize")
}

/// The object of `kind` (in API group `group`) named `namespace/name` among `objects`.
pub fn find<'a>(
    objects: &'a [Object],
    group: &str,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Option<&'a Object> {
    objects.iter().find(|o| {
        o.key.group == group
            && o.key.kind == kind
            && o.key.namespace == namespace
            && o.key.name == name
    })
}

/// The text of `key` in a ConfigMap's `data`, or a Secret's `stringData` or base64
/// `data` (`stringData` wins, as Kubernetes merges it over `data`). `Ok(None)` when the
/// key is absent; an error when a Secret value is not base64 of UTF-8 text.
pub fn data_value(
    obj: &serde_json::Value,
    kind: &str,
    key: &str,
) -> Result<Option<String>, String> {
    if kind == "Secret" {
        if let Some(s) = obj["stringData"][key].as_str() {
            return Ok(Some(s.to_string()));
        }
        return match obj["data"][key].as_str() {
            None => Ok(None),
            Some(b) => decode_base64(b)
                .and_then(|v| String::from_utf8(v).ok())
                .map(Some)
                .ok_or_else(|| format!("key {key} is not valid base64 of UTF-8 text")),
        };
    }
    Ok(obj["data"][key].as_str().map(str::to_string))
}

/// Every key of a ConfigMap or Secret (`stringData` winning); Secret values that are
/// not base64 are left out, and non-UTF-8 bytes are replaced.
pub fn data_map(obj: &serde_json::Value, kind: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in obj["data"].as_object().into_iter().flatten() {
        let text = match (kind, v.as_str()) {
            ("Secret", Some(b)) => {
                decode_base64(b).map(|v| String::from_utf8_lossy(&v).into_owned())
            }
            (_, s) => Some(s.unwrap_or_default().to_string()),
        };
        if let Some(t) = text {
            out.insert(k.clone(), t);
        }
    }
    if kind == "Secret" {
        for (k, v) in obj["stringData"].as_object().into_iter().flatten() {
            out.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
        }
    }
    out
}

fn decode_base64(b: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(b.trim())
        .ok()
}

/// A JSON object of strings as a map (labels, selectors); non-strings read as empty.
pub fn string_map(v: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Lower-case hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// A problem in a revision's manifests, pinned to file, line, column and field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    /// Repo-relative file path.
    pub file: String,
    /// Position in the file, when known.
    pub pos: Option<Pos>,
    /// Dotted field path, when the error is about a field.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ManifestError {
    /// An error at a place in a file.
    pub fn at(file: &str, pos: Pos, field: Option<String>, message: impl Into<String>) -> Self {
        ManifestError {
            file: file.to_string(),
            pos: Some(pos),
            field,
            message: message.into(),
        }
    }

    /// An error at the start of the document an object came from.
    pub fn at_origin(origin: &Origin, field: Option<String>, message: impl Into<String>) -> Self {
        let pos = Pos {
            line: origin.line,
            col: 1,
            offset: 0,
        };
        ManifestError::at(&origin.file, pos, field, message)
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(p) = self.pos {
            write!(f, ":{}:{}", p.line, p.col)?;
        }
        f.write_str(": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ManifestError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ignores_key_order() {
        let a: serde_json::Value = serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":1}}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"a":{"x":1,"y":2},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&a), br#"{"a":{"x":1,"y":2},"b":1}"#);
    }

    #[test]
    fn keys_ignore_version() {
        assert_eq!(
            ObjectKey::new("flagger.app/v1alpha3", "Canary", "test", "podinfo"),
            ObjectKey::new("flagger.app/v1beta1", "Canary", "test", "podinfo")
        );
        assert_eq!(
            ObjectKey::new("v1", "Namespace", "", "test").to_string(),
            "Namespace/test"
        );
        assert!(is_cluster_scoped("v1", "Namespace"));
        assert!(!is_cluster_scoped("apps/v1", "Deployment"));
    }
}
