//! Keeping a long-running task alive: a task that panics is logged with its message
//! and started again after a backoff, instead of staying dead until shutdown notices.
//! A task that returns has finished (it saw the stop signal) and is not restarted.

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// The first restart delay; it doubles per consecutive panic up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest restart delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A task that ran this long before panicking starts over at [`FIRST_BACKOFF`].
pub const HEALTHY_AFTER: Duration = Duration::from_secs(300);

/// The delay before restart number `panics` (1-based) in a row.
pub fn backoff(panics: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << panics.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// Runs `make()` as a task until it returns; restarts it after each panic unless
/// `stop` turned true. `name` names the task in logs; `on_panic` is told each panic's
/// message (for metrics).
pub async fn supervise<F, Fut>(
    name: &str,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut make: F,
    mut on_panic: impl FnMut(&str),
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut panics = 0u32;
    loop {
        let started = Instant::now();
        match tokio::spawn(make()).await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                let message = super::panic::message(e.into_panic().as_ref());
                if started.elapsed() >= HEALTHY_AFTER {
                    panics = 0;
                }
                panics += 1;
                let delay = backoff(panics);
                tracing::error!(
                    task = name,
                    panics,
                    "{name} panicked: {message}; restarting in {}",
                    super::duration::format(delay)
                );
                on_panic(&message);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
            // Cancelled: the runtime is shutting down.
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_logged_and_restarted_with_backoff() {
        let runs = Arc::new(AtomicU32::new(0));
        let starts = Arc::new(Mutex::new(Vec::new()));
        let t0 = Instant::now();
        let mut seen = Vec::new();
        let (r, s) = (runs.clone(), starts.clone());
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        supervise(
            "canary engine",
            stopped,
            move || {
                let (r, s) = (r.clone(), s.clone());
                async move {
                    s.lock().unwrap().push(t0.elapsed().as_secs());
                    // Panics on its first three runs, as a tick on bad input would.
                    if r.fetch_add(1, Ordering::SeqCst) < 3 {
                        panic!("tick failed on canary test/podinfo");
                    }
                }
            },
            |m| seen.push(m.to_string()),
        )
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        assert_eq!(*starts.lock().unwrap(), vec![0, 1, 3, 7]);
        assert_eq!(seen, vec!["tick failed on canary test/podinfo"; 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_ends_the_backoff_wait() {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let t0 = Instant::now();
        let run = supervise("t", stopped, || async { panic!("always") }, |_| {});
        tokio::join!(run, async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            stop.send(true).unwrap();
        });
        assert_eq!(t0.elapsed(), Duration::from_millis(500));
    }

    #[test]
    fn backoff_doubles_to_a_minute() {
        let got: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
