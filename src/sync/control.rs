//! The running daemon's controls, shared by the sync loop and the HTTP server:
//! triggers (webhook, local watch, `gitcanary reconcile`), the source's suspension, and
//! the result of each sync, which a `reconcile` request waits for. The loop numbers
//! each sync it begins; a request waits for the first sync begun after it arrived, so
//! it never reports a sync that started before its change could be seen.

use crate::util::time::unix_now;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How one sync ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    /// Its number; 0 before the first.
    pub seq: u64,
    /// The fetched revision (`main@sha1:…`), if any.
    pub fetched: Option<String>,
    /// The applied revision, or the error.
    pub result: Result<String, String>,
}

/// Why a wait ended without a result.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum WaitError {
    /// The source is suspended, so nothing syncs.
    #[error("source {0} is suspended; resume it with `gitcanary resume source`")]
    Suspended(String),
    /// No sync finished in time.
    #[error("timed out after {0} waiting for reconciliation")]
    Timeout(String),
    /// The loop stopped.
    #[error("the daemon is shutting down")]
    Stopped,
}

/// The controls of one daemon.
pub struct Control {
    name: String,
    state_dir: PathBuf,
    trigger: mpsc::UnboundedSender<()>,
    suspended: watch::Sender<bool>,
    /// Writes of the suspension file happen one at a time, in order.
    write: Mutex<()>,
    begun: AtomicU64,
    /// Requests for a sync without a fetch not yet served.
    fetchless: AtomicU64,
    finished: watch::Sender<Finished>,
}

impl Control {
    /// Controls for source `name` with state in `state_dir`; the suspension is read
    /// from there. `trigger` wakes the sync loop.
    pub fn new(name: &str, state_dir: PathBuf, trigger: mpsc::UnboundedSender<()>) -> Self {
        let suspended = crate::source::suspend::is_suspended(&state_dir);
        Control {
            name: name.to_string(),
            state_dir,
            trigger,
            suspended: watch::channel(suspended).0,
            write: Mutex::new(()),
            begun: AtomicU64::new(0),
            fetchless: AtomicU64::new(0),
            finished: watch::channel(Finished {
                seq: 0,
                fetched: None,
                result: Err("no sync yet".into()),
            })
            .0,
        }
    }

    /// The source name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A sender that wakes the sync loop (the webhook, the local watch).
    pub fn trigger(&self) -> mpsc::UnboundedSender<()> {
        self.trigger.clone()
    }

    /// Whether the source is suspended.
    pub fn is_suspended(&self) -> bool {
        *self.suspended.borrow()
    }

    /// Resolves once the suspension changes.
    pub async fn suspension_changed(&self) {
        let mut rx = self.suspended.subscribe();
        rx.borrow_and_update();
        let _ = rx.changed().await;
    }

    /// Suspends or resumes: recorded in the state dir first, so the loop never runs
    /// in a state a restart would not restore.
    pub fn set_suspended(&self, suspended: bool) -> std::io::Result<()> {
        let _one = self.write.lock().unwrap_or_else(|e| e.into_inner());
        crate::source::suspend::write(&self.state_dir, suspended, unix_now())?;
        self.suspended.send_replace(suspended);
        Ok(())
    }

    /// Asks for a sync now; `fetch: false` syncs the last fetched revision, unless
    /// another trigger asks for a fetch before it starts. Returns the number the sync
    /// serving it will exceed.
    pub fn request(&self, fetch: bool) -> u64 {
        let after = self.begun.load(Ordering::SeqCst);
        if !fetch {
            self.fetchless.fetch_add(1, Ordering::SeqCst);
        }
        let _ = self.trigger.send(());
        after
    }

    /// The sync loop begins a sync woken by `triggers` triggers (0: the interval);
    /// returns its number and whether it fetches.
    pub fn begin(&self, triggers: u64) -> (u64, bool) {
        let fetchless = self.fetchless.swap(0, Ordering::SeqCst);
        let seq = self.begun.fetch_add(1, Ordering::SeqCst) + 1;
        (seq, fetches(triggers, fetchless))
    }

    /// The sync loop publishes how sync `seq` ended.
    pub fn finish(&self, seq: u64, fetched: Option<String>, result: Result<String, String>) {
        self.finished.send_replace(Finished {
            seq,
            fetched,
            result,
        });
    }

    /// Waits up to `timeout` for the first sync numbered above `after` to end.
    pub async fn wait(&self, after: u64, timeout: Duration) -> Result<Finished, WaitError> {
        let mut rx = self.finished.subscribe();
        let mut suspended = self.suspended.subscribe();
        let done = async {
            loop {
                if rx.borrow_and_update().seq > after {
                    return Ok(rx.borrow().clone());
                }
                if *suspended.borrow_and_update() {
                    return Err(WaitError::Suspended(self.name.clone()));
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return Err(WaitError::Stopped) },
                    _ = suspended.changed() => {}
                }
            }
        };
        tokio::time::timeout(timeout, done)
            .await
            .unwrap_or_else(|_| Err(WaitError::Timeout(crate::util::duration::format(timeout))))
    }
}

/// Whether a sync woken by `triggers` triggers, `fetchless` of them asking not to
/// fetch, fetches: only when every trigger asked not to (an interval sync, a push
/// webhook or a local commit always fetches).
pub fn fetches(triggers: u64, fetchless: u64) -> bool {
    triggers == 0 || fetchless < triggers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_skips_the_fetch_only_when_every_trigger_asked() {
        assert!(fetches(0, 0), "the interval fetches");
        assert!(
            fetches(0, 1),
            "the interval fetches, serving the request too"
        );
        assert!(!fetches(1, 1));
        assert!(
            fetches(3, 1),
            "a webhook coalesced with the request fetches"
        );
        assert!(!fetches(2, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_for_a_sync_begun_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let c = std::sync::Arc::new(Control::new("flux-system", dir.path().into(), tx));
        // A sync is running when the request arrives: its result is not the answer.
        let (running, _) = c.begin(0);
        let after = c.request(false);
        assert!(rx.try_recv().is_ok(), "the request wakes the loop");
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move { c.wait(after, Duration::from_secs(60)).await })
        };
        tokio::task::yield_now().await;
        c.finish(running, None, Ok("main@sha1:old".into()));
        let (next, fetch) = c.begin(1);
        assert!(!fetch);
        c.finish(next, None, Ok("main@sha1:new".into()));
        let got = waiter.await.unwrap().unwrap();
        assert_eq!(got.result, Ok("main@sha1:new".into()));
        // Nothing syncs while suspended, so a wait ends at once; it survives a restart.
        c.set_suspended(true).unwrap();
        let after = c.request(true);
        assert_eq!(
            c.wait(after, Duration::from_secs(60)).await,
            Err(WaitError::Suspended("flux-system".into()))
        );
        let (tx, _rx) = mpsc::unbounded_channel();
        assert!(Control::new("flux-system", dir.path().into(), tx).is_suspended());
        c.set_suspended(false).unwrap();
        assert_eq!(
            c.wait(c.request(true), Duration::from_secs(5)).await,
            Err(WaitError::Timeout("5s".into()))
        );
    }
}
