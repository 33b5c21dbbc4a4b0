//! The OCI distribution client: image references and a registry client (tags,
//! manifests, blobs, token auth). Image automation and Helm's OCI charts both use it, so
//! it sits below both and knows neither.

pub mod reference;
pub mod registry;
