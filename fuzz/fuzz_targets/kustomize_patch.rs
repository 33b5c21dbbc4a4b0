//! Kustomize: `patch \0 object.yaml` applies a strategic-merge or JSON 6902 patch to an
//! object; the whole input is also read as a kustomization.
#![no_main]

use gitcanary::manifest::{kustomize, patch::Patch, yaml};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = kustomize::parse("kustomization.yaml", text);
    let (patch, object) = text.split_once('\0').unwrap_or((text, ""));
    let Ok(p) = Patch::parse(patch, None) else {
        return;
    };
    let Some(mut obj) = yaml::parse_documents(object)
        .ok()
        .and_then(|d| d.into_iter().next())
        .map(|d| d.root.to_json())
    else {
        return;
    };
    if p.matches(&obj) {
        let _ = p.apply(&mut obj);
    }
});
