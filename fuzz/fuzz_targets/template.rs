//! The template engine: `template \0 helpers \0 values.yaml`, rendered as a chart
//! template with `_helpers.tpl` beside it.
#![no_main]

use gitcanary::helm::template::Engine;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\0');
    let (tpl, helpers, values) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let values = gitcanary::manifest::yaml::parse_documents(values)
        .ok()
        .and_then(|d| d.into_iter().next())
        .map(|d| d.root.to_json())
        .unwrap_or(json!({}));
    let mut engine = Engine::new();
    if engine.add("c/templates/_helpers.tpl", helpers).is_err() {
        return;
    }
    if engine.add("c/templates/t.yaml", tpl).is_err() {
        return;
    }
    let dot = json!({
        "Values": values,
        "Release": {"Name": "r", "Namespace": "default", "Service": "Helm", "IsInstall": true},
        "Chart": {"Name": "c", "Version": "1.0.0"},
        "Capabilities": {"KubeVersion": {"Version": "v1.29.0"}},
        "Template": {"Name": "c/templates/t.yaml", "BasePath": "c/templates"},
    });
    let _ = engine.render("c/templates/t.yaml", &dot);
});
