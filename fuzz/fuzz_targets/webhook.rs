//! Push webhook signature checks: `secret \0 header \0 value \0 body`.
#![no_main]

use gitcanary::source::webhook::verify;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |b| *b == 0);
    let secret = parts.next().unwrap_or_default();
    let header = String::from_utf8_lossy(parts.next().unwrap_or_default()).to_lowercase();
    let value = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let body = parts.next().unwrap_or_default();
    let _ = verify(secret, |h| (h == header).then_some(value.as_str()), body);
});
