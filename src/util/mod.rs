//! Small shared helpers: durations, timestamps, durable file writes, log setup, capped
//! HTTP body reads and accept loops. Nothing here knows about Git, manifests or targets.

pub mod atomic;
pub mod duration;
pub mod http;
pub mod listen;
pub mod logging;
pub mod panic;
pub mod semver;
pub mod supervise;
pub mod time;
pub mod tls;
pub mod yaml;

/// An error with its causes (`connect: TLS handshake: ...`), so a refused certificate
/// says so instead of "error sending request".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = c.source();
    }
    out
}
