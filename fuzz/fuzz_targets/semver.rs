//! Semver constraints and versions, as ImagePolicies and `semverCompare` read them:
//! `constraint \0 version`.
#![no_main]

use gitcanary::util::semver::{Constraint, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (constraint, version) = text.split_once('\0').unwrap_or((text, text));
    let c = Constraint::parse(constraint);
    if let (Ok(c), Some(v)) = (c, Version::parse(version)) {
        let _ = c.matches(&v);
    }
});
