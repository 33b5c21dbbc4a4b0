//! Copies of requests sent to a mirror backend, whose responses are dropped (Flagger's
//! traffic mirroring). A mirror must never cost the client: copies run on their own
//! tasks, at most [`MAX_IN_FLIGHT`] at a time (more are not sent), each given
//! [`MIRROR_TIMEOUT`] in all, and a copy's bytes are freed once written.

use super::body::{self, Reader};
use super::http1::Fields;
use super::upstream::{self, Pool};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Copies in flight at once, over the process.
const MAX_IN_FLIGHT: usize = 64;
/// Time a copy may take, from connecting to the end of the response.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Counts one copy in flight while it lives.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        IN_FLIGHT
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_IN_FLIGHT).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sends `wire` (a whole request) to the replica on `port` and drops the response; a
/// request to HEAD has a response with no body. Nothing is sent when too many copies
/// are in flight.
pub(super) fn spawn(pool: Arc<Pool>, port: u16, wire: Vec<u8>, head: bool) {
    let Some(slot) = Slot::take() else {
        return;
    };
    tokio::spawn(async move {
        let _slot = slot;
        let _ = tokio::time::timeout(MIRROR_TIMEOUT, send(&pool, port, wire, head)).await;
    });
}

async fn send(pool: &Pool, port: u16, wire: Vec<u8>, head: bool) {
    let Ok(mut up) = upstream::get(pool, port).await else {
        return;
    };
    up.io.wbuf = wire;
    if up.flush().await.is_err() {
        return;
    }
    // The copy's bytes go with the write buffer's; the next request starts small.
    up.io.wbuf = Vec::new();
    let mut fields = Fields::default();
    let Ok(resp) = up.response(&mut fields, head).await else {
        return;
    };
    up.io.consume(resp.len);
    let mut reader = Reader::new(resp.framing);
    if body::drain(&mut reader, &mut up.io).await.is_ok()
        && resp.keep_alive
        && up.io.data().is_empty()
    {
        pool.put(up);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_run_out_and_come_back() {
        let held: Vec<Slot> = std::iter::from_fn(Slot::take)
            .take(MAX_IN_FLIGHT + 5)
            .collect();
        assert!(held.len() <= MAX_IN_FLIGHT);
        assert!(Slot::take().is_none());
        drop(held);
        assert!(Slot::take().is_some());
    }
}
