//! One file of a revision folder: the positioned YAML loader, the object checks and
//! schemas, the typed Canary reader, and the typed config deserializer.
#![no_main]

use gitcanary::manifest::load::parse_generated;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (objects, _errors) = parse_generated("apps/fuzz.yaml", text, "default");
    for o in &objects {
        let v = o.value();
        if v["kind"] == "Canary" {
            let _ = gitcanary::canary::spec::parse(&v);
        }
    }
    let _ = gitcanary::config::Config::parse(text, std::path::Path::new("/nonexistent"));
});
